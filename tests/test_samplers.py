"""gmbook.samplers: paths, the one place of conversions, and samplers on exact Gaussian scores.

For data N(m, s^2 I) every quantity is known in closed form: the marginal of the path at t is
N(alpha m, (alpha^2 s^2 + sigma^2) I), the exact denoiser is
E[x0 | x] = m + alpha s^2 / (alpha^2 s^2 + sigma^2) (x - alpha m), and the probability-flow
ODE maps x_t = alpha_t m + sqrt(alpha_t^2 s^2 + sigma_t^2) z along straight rays in z.
"""

from __future__ import annotations

import math

import pytest
import torch

from gmbook.samplers import (
    DiscreteVPPath,
    LinearPath,
    Prediction,
    SamplePath,
    VEPath,
    VPPath,
    ddim,
    euler,
    euler_maruyama,
    heun,
)

M, S = 1.5, 0.5
F64 = torch.float64
PATHS = {"vp": VPPath(), "linear": LinearPath(), "ve": VEPath(10.0),
         "discrete": DiscreteVPPath(torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000,
                                                                     dtype=F64), 0))}


def exact_x0(path):
    def fn(x, t):
        a = path.alpha(t).reshape(-1, 1).to(x.dtype)
        s = path.sigma(t).reshape(-1, 1).to(x.dtype)
        return M + a * S**2 / (a**2 * S**2 + s**2) * (x - a * M)
    return fn


def ray(path, t, z):
    """The probability-flow ODE's solution through z: alpha_t m + sqrt(alpha^2 s^2 + sigma^2) z."""
    t = torch.as_tensor(t, dtype=F64)
    a, s = path.alpha(t), path.sigma(t)
    return a * M + (a**2 * S**2 + s**2).sqrt() * z


@pytest.mark.parametrize("name", PATHS)
def test_path_derivatives_are_the_time_derivatives(name):
    """alpha', sigma' of every path against autograd (the discrete path off its grid)."""
    path = PATHS[name]
    t = torch.tensor([0.1234, 0.4567, 0.789], dtype=F64) * path.t_max
    for f, df in ((path.alpha, path.d_alpha), (path.sigma, path.d_sigma)):
        tt = t.clone().requires_grad_(True)
        value = f(tt).sum()
        grad = torch.autograd.grad(value, tt)[0] if value.requires_grad else \
            torch.zeros_like(t)  # a constant coefficient
        torch.testing.assert_close(df(t), grad, rtol=1e-6, atol=1e-9)


def test_vp_paths_preserve_variance_and_discrete_path_hits_alpha_bar():
    t = torch.linspace(0.01, 1, 50, dtype=F64)
    for path in (PATHS["vp"], PATHS["discrete"]):
        torch.testing.assert_close(path.alpha(t) ** 2 + path.sigma(t) ** 2, torch.ones_like(t))
    d = PATHS["discrete"]
    ab = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=F64), 0)
    k = torch.tensor([1, 10, 500, 1000])
    torch.testing.assert_close(d.alpha(k.double() / 1000) ** 2, ab[k - 1])


def test_forward_sde_has_the_path_marginals():
    """Euler-Maruyama on dx = (alpha'/alpha) x dt + g dW (g^2 = diffusion2) from a point mass
    gives mean alpha_t x0 and variance sigma_t^2 (VP path, t = 0.02 .. 0.8)."""
    path = PATHS["vp"]
    gen = torch.Generator().manual_seed(0)
    x = torch.full((40_000, 1), 2.0, dtype=F64)
    ts = torch.linspace(0.02, 0.8, 801, dtype=F64)
    x = path.alpha(ts[0]) * x + path.sigma(ts[0]) * torch.randn(x.shape, generator=gen,
                                                                dtype=F64)
    for t, t_next in zip(ts[:-1], ts[1:]):
        h = float(t_next - t)
        x = x + h * float(path.d_alpha(t) / path.alpha(t)) * x + math.sqrt(
            float(path.diffusion2(t)) * h) * torch.randn(x.shape, generator=gen, dtype=F64)
    a, s = float(path.alpha(ts[-1])), float(path.sigma(ts[-1]))
    assert abs(x.mean().item() - 2 * a) < 0.02
    assert abs(x.var().item() / s**2 - 1) < 0.03


@pytest.mark.parametrize("name", PATHS)
@pytest.mark.parametrize("kind", ["eps", "score", "v", "velocity"])
def test_conversions_round_trip(name, kind):
    """Every kind, made from the x0 prediction, converts back to the same (x0, eps)."""
    path = PATHS[name]
    if kind == "v" and name in ("linear", "ve"):
        pytest.skip("v-prediction is defined for variance-preserving paths")
    ref = Prediction(exact_x0(path), "x0", path)
    x = torch.randn(7, 1, dtype=F64)
    t = torch.rand(7, dtype=F64) * 0.9 * path.t_max + 0.05 * path.t_max

    def as_kind(xx, tt):
        x0, eps = ref.x0_eps(xx, tt)
        a = path.alpha(tt).reshape(-1, 1)
        s = path.sigma(tt).reshape(-1, 1)
        if kind == "eps":
            return eps
        if kind == "score":
            return ref.score(xx, tt)
        if kind == "v":
            return a * eps - s * x0
        return ref.velocity(xx, tt)

    back = Prediction(as_kind, kind, path).x0_eps(x, t)
    for u, v in zip(back, ref.x0_eps(x, t)):
        torch.testing.assert_close(u, v, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", ["vp", "linear", "ve"])
def test_score_and_velocity_of_the_exact_denoiser(name):
    """Tweedie: -eps/sigma is the Gaussian marginal's score; the PF-ODE velocity is the time
    derivative of the ray through z (jvp of the closed form)."""
    path = PATHS[name]
    pred = Prediction(exact_x0(path), "x0", path)
    x = torch.randn(5, 1, dtype=F64)
    t = torch.full((5,), 0.37 * path.t_max, dtype=F64)
    a, s = path.alpha(t[:1]), path.sigma(t[:1])
    var = a**2 * S**2 + s**2
    torch.testing.assert_close(pred.score(x, t), -(x - a * M) / var)
    z = (x - a * M) / var.sqrt()
    _, dxdt = torch.autograd.functional.jvp(lambda tt: ray(path, tt, z), t[:1],
                                            torch.ones(1, dtype=F64))
    torch.testing.assert_close(pred.velocity(x, t), dxdt)


def _endpoint_error(sampler, path, steps, t_hi, t_lo):
    pred = Prediction(exact_x0(path), "x0", path)
    z = torch.linspace(-2, 2, 9, dtype=F64)[:, None]
    grid = torch.linspace(t_hi, t_lo, steps + 1, dtype=F64)
    out = sampler(pred, ray(path, t_hi, z), grid)
    assert isinstance(out, SamplePath) and out.states is None
    return (out.samples - ray(path, t_lo, z)).abs().max().item(), out.nfe


@pytest.mark.parametrize(("sampler", "order"), [(euler, 1), (ddim, 1), (heun, 2)])
@pytest.mark.parametrize("name", ["vp", "linear"])
def test_convergence_orders_on_exact_gaussian_scores(sampler, order, name):
    """Measured order of the endpoint error (steps 32 -> 64 -> 128) within 0.3 of theory."""
    path = PATHS[name]
    t_hi, t_lo = (1.0, 0.01)
    errs = [_endpoint_error(sampler, path, n, t_hi, t_lo)[0] for n in (32, 64, 128)]
    orders = [math.log2(errs[k] / errs[k + 1]) for k in range(2)]
    assert all(abs(o - order) < 0.3 for o in orders), (errs, orders)


def test_nfe_counts():
    path = PATHS["linear"]
    assert _endpoint_error(euler, path, 10, 1.0, 0.01)[1] == 10
    assert _endpoint_error(heun, path, 10, 1.0, 0.01)[1] == 20
    assert _endpoint_error(heun, path, 10, 1.0, 0.0)[1] == 19   # last step to t = 0: Euler
    assert _endpoint_error(ddim, path, 10, 1.0, 0.01)[1] == 10


@pytest.mark.parametrize("sampler", [ddim, euler_maruyama])
def test_stochastic_samplers_reach_the_data_distribution(sampler):
    """eta = 1 (ancestral DDIM; Anderson's reverse SDE) from the exact marginal at t = 1 to
    t = 0.005 on the VP path: mean m and variance about s^2 (+ sigma^2 of the last level)."""
    path = PATHS["vp"]
    pred = Prediction(exact_x0(path), "x0", path)
    gen = torch.Generator().manual_seed(1)
    n = 40_000
    x = ray(path, 1.0, torch.randn(n, 1, generator=gen, dtype=F64))
    grid = torch.linspace(1.0, 0.005, 201, dtype=F64)
    out = sampler(pred, x, grid, eta=1.0, generator=gen).samples
    target = ray(path, 0.005, torch.tensor(1.0, dtype=F64)) - ray(path, 0.005,
                                                                   torch.tensor(0.0, dtype=F64))
    assert abs(out.mean().item() - float(path.alpha(torch.tensor(0.005))) * M) < 0.01
    assert abs(out.std().item() / target.item() - 1) < 0.03
    # and it is random: another generator gives other points
    again = sampler(pred, x, grid, eta=1.0, generator=torch.Generator().manual_seed(2)).samples
    assert not torch.equal(out, again)


def test_eta_zero_em_is_euler_and_return_path_shapes():
    path = PATHS["vp"]
    pred = Prediction(exact_x0(path), "x0", path)
    x = torch.randn(6, 2, dtype=F64)
    grid = torch.linspace(1.0, 0.01, 11, dtype=F64)
    a = euler(pred, x, grid, return_path=True)
    b = euler_maruyama(pred, x, grid, eta=0.0)
    torch.testing.assert_close(a.samples, b.samples)
    assert a.states.shape == (11, 6, 2) and a.x0_preds.shape == (10, 6, 2)
    torch.testing.assert_close(a.states[0], x)
    torch.testing.assert_close(a.states[-1], a.samples)


def test_bad_input_is_refused_with_a_clear_message():
    path = PATHS["vp"]
    pred = Prediction(exact_x0(path), "x0", path)
    x = torch.randn(3, 1)
    with pytest.raises(ValueError, match="decreasing"):
        euler(pred, x, torch.tensor([0.1, 0.5]))
    with pytest.raises(TypeError, match="Prediction"):
        euler(lambda x, t: x, x, torch.tensor([1.0, 0.5]))
    with pytest.raises(ValueError, match="kind"):
        Prediction(exact_x0(path), "noise", path)
    with pytest.raises(TypeError, match="GaussianPath"):
        Prediction(exact_x0(path), "x0", "vp")
    with pytest.raises(ValueError):
        ddim(pred, x, torch.tensor([1.0, 0.5]), eta=-1.0)
    with pytest.raises(ValueError, match="alpha_bar"):
        DiscreteVPPath(torch.tensor([0.5, 0.9]))
