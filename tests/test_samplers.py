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

from gmbook.data import TwoMoons
from gmbook.densities import GaussianMixture
from gmbook.samplers import (
    CosinePath,
    DiscreteVPPath,
    LinearPath,
    Prediction,
    SamplePath,
    SubVPPath,
    VEPath,
    VPPath,
    ddim,
    dopri5,
    dpm_solver_2,
    dpm_solver_pp_2m,
    euler,
    euler_maruyama,
    fit_order,
    heun,
    heun_churn,
    karras_grid,
    log_snr_grid,
    mixture_prediction,
)
from gmbook.score import mixture_posterior_mean, mixture_score

M, S = 1.5, 0.5
F64 = torch.float64
PATHS = {"vp": VPPath(), "linear": LinearPath(), "ve": VEPath(10.0),
         "discrete": DiscreteVPPath(torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000,
                                                                     dtype=F64), 0)),
         "subvp": SubVPPath()}


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
    if kind == "v" and name in ("linear", "ve", "subvp"):
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


# ----------------------------------------------------------------- the SDE chapter's samplers
# The two moons' exact denoiser (mixture_prediction on TwoMoons().mixture(), 1024 axis-aligned
# Gaussians) is "the exact noised score": with it, every error below is the solver's own.

MOONS = TwoMoons().mixture()


def test_sub_vp_path_is_song_et_al_sub_vp_sde():
    """Sub-VP (Song et al., 2021, Sec. 3.4): alpha_t is the VP path's, sigma_t = 1 - alpha_t^2,
    and the forward SDE with its marginals has g^2 = beta(t) (1 - exp(-2 int_0^t beta))."""
    sub, vp = SubVPPath(), VPPath()
    t = torch.linspace(0.0, 1.0, 41, dtype=F64)
    torch.testing.assert_close(sub.alpha(t), vp.alpha(t), rtol=0, atol=0)
    torch.testing.assert_close(sub.sigma(t), 1 - vp.alpha(t) ** 2, rtol=1e-12, atol=1e-15)
    beta = 0.1 + t * (20.0 - 0.1)
    integral = 0.1 * t + 0.5 * (20.0 - 0.1) * t**2
    tt = t[1:]
    torch.testing.assert_close(sub.diffusion2(tt), (beta * -torch.expm1(-2 * integral))[1:],
                               rtol=1e-10, atol=1e-12)
    assert bool((sub.sigma(tt) < vp.sigma(tt)).all())   # below the VP path's noise


@pytest.mark.parametrize("rho", [7.0, 3.0, 1.0])
def test_karras_grid_on_the_ve_path(rho):
    """eq-sde-karras-grid (Karras et al., 2022, eq. 5) on VE, where t = sigma: the grid starts
    at sigma_max, the rho-th roots of its levels are evenly spaced down to sigma_min, then
    t = 0; rho = 1 is a linspace."""
    grid = karras_grid(VEPath(80.0), 9, sigma_min=0.002, sigma_max=80.0, rho=rho)
    assert grid.dtype == F64 and grid.shape == (10,) and float(grid[-1]) == 0.0
    levels = grid[:-1]
    assert float(levels[0]) == 80.0 and abs(float(levels[-1]) - 0.002) < 1e-15
    roots = levels ** (1 / rho)
    gaps = roots[1:] - roots[:-1]
    torch.testing.assert_close(gaps, gaps.mean().expand(8), rtol=1e-10, atol=0)
    if rho == 1.0:
        torch.testing.assert_close(levels, torch.linspace(80.0, 0.002, 9, dtype=F64))
    assert bool((grid[1:] < grid[:-1]).all())


@pytest.mark.parametrize("name", ["vp", "subvp", "discrete", "linear"])
def test_karras_grid_hits_the_noise_to_signal_ratios(name):
    """eq-sde-karras-grid on other paths: sigma_t / alpha_t at the returned times equals the
    VE grid's levels to 1e-10 (relative), found by bisection."""
    path = PATHS[name]
    target = karras_grid(VEPath(80.0), 12, sigma_min=0.002, sigma_max=5.0, rho=3.0)[:-1]
    grid = karras_grid(path, 12, sigma_min=0.002, sigma_max=5.0, rho=3.0)
    assert float(grid[-1]) == 0.0 and bool((grid[1:] < grid[:-1]).all())
    ratio = path.sigma(grid[:-1]) / path.alpha(grid[:-1])
    torch.testing.assert_close(ratio, target, rtol=1e-10, atol=0)


@pytest.mark.parametrize("name", ["vp", "subvp", "ve", "linear"])
def test_log_snr_grid_is_uniform_in_lambda(name):
    """DPM-Solver's grid: lambda_t = log(alpha^2 / sigma^2) evenly spaced, ends exact."""
    path = PATHS[name]
    t_max = 0.9 * path.t_max if name == "linear" else None
    grid = log_snr_grid(path, 10, t_max=t_max, t_min=1e-3 * path.t_max)
    assert grid.shape == (11,) and grid.dtype == F64
    assert float(grid[0]) == (t_max or path.t_max) and float(grid[-1]) == 1e-3 * path.t_max
    lam = path.log_snr(grid)
    steps = lam[1:] - lam[:-1]
    assert bool((steps > 0).all())
    torch.testing.assert_close(steps, steps.mean().expand(10), rtol=1e-10, atol=0)


def _moons_mixture():
    w, mu, var = MOONS
    return GaussianMixture(w, mu, torch.diag_embed(var))


def test_mixture_prediction_is_the_posterior_mean_on_ve():
    """On VE (x = x0 + sigma eps) the exact denoiser equals gmbook.score's posterior mean of
    the full-covariance mixture (Bayes per component), to 1e-8 in float64."""
    path = VEPath(80.0)
    pred = mixture_prediction(*MOONS, path)
    gen = torch.Generator().manual_seed(3)
    gmm = _moons_mixture()
    for sigma in (0.01, 0.1, 0.7, 5.0):
        x = gmm.sample(50, generator=gen)
        x = x + sigma * torch.randn(x.shape, generator=gen, dtype=F64)
        got = pred.x0_eps(x, torch.full((50,), sigma, dtype=F64))[0]
        want = mixture_posterior_mean(gmm, x, sigma)
        torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("name", ["vp", "subvp"])
def test_mixture_prediction_satisfies_tweedie(name):
    """On VP and sub-VP: E[x0 | x] = (x + sigma^2 grad log p_t(x)) / alpha with p_t the
    mixture of N(alpha mu_k, alpha^2 V_k + sigma^2 I) (Tweedie), to 1e-8; the prediction's
    score is that gradient; float32 in, float32 out; a batch of several times is handled."""
    path = PATHS[name]
    w, mu, var = MOONS
    pred = mixture_prediction(w, mu, var, path)
    gen = torch.Generator().manual_seed(4)
    xs, ts, wants = [], [], []
    for t in (0.02, 0.2, 0.5, 0.9):
        tt = torch.tensor(t, dtype=F64)
        a, s = float(path.alpha(tt)), float(path.sigma(tt))
        noisy = GaussianMixture(w, a * mu, torch.diag_embed(a * a * var + s * s))
        x = noisy.sample(40, generator=gen)
        score = mixture_score(noisy, x)
        want = (x + s * s * score) / a
        got = pred.x0_eps(x, tt.expand(40))[0]
        torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-8)
        torch.testing.assert_close(pred.score(x, tt.expand(40)), score, rtol=1e-7, atol=1e-7)
        xs.append(x), ts.append(tt.expand(40)), wants.append(want)
    mixed = pred.fn(torch.cat(xs), torch.cat(ts))
    torch.testing.assert_close(mixed, torch.cat(wants), rtol=1e-8, atol=1e-8)
    x32 = torch.cat(xs).float()
    out32 = pred.fn(x32, torch.cat(ts).float())
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32, torch.cat(wants).float(), rtol=1e-4, atol=1e-4)


def test_fit_order_recovers_a_power_law():
    nfe = [4, 8, 16, 32, 64]
    assert abs(fit_order(nfe, [3.0 * n**-1.7 for n in nfe]) - 1.7) < 1e-12
    assert abs(fit_order(torch.tensor(nfe), torch.tensor([0.5 / n for n in nfe])) - 1) < 1e-12


@pytest.fixture(scope="module")
def moons_orders():
    """Endpoint errors of each sampler against dopri5 on the two moons' exact denoiser."""
    path = VPPath()
    pred = mixture_prediction(*MOONS, path)
    # EDM's grid with sigma_max = 5, rho = 3, stopped at sigma_min = 0.002 (no step to 0):
    # on it the local orders settle from 16 NFE on (measured for NFE 4..128: between 4 and 16
    # NFE the steps in log-SNR are wider than the moons' width and the second-order methods
    # show pre-asymptotic local orders of 2.5 to 3); so the fit uses NFE 16, 32, 64.
    def grid(steps):
        return karras_grid(path, steps + 1, sigma_min=0.002, sigma_max=5.0, rho=3.0)[:-1]

    z = torch.randn(200, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    x = float(path.sigma(grid(1)[0])) * z
    ref = dopri5(pred, x, grid(1), rtol=1e-9, atol=1e-9).samples
    out = {}
    for sampler, per_step in ((euler, 1), (ddim, 1), (heun, 2), (dpm_solver_2, 2),
                              (dpm_solver_pp_2m, 1)):
        nfe, err = [], []
        for n in (16, 32, 64):
            run = sampler(pred, x, grid(n // per_step))
            # the median over points of |x - x_ref|: the few trajectories that start near
            # the boundary between the moons converge late and dominate a mean at 64 NFE
            err.append(float((run.samples - ref).norm(dim=1).median()))
            nfe.append(run.nfe)
        assert nfe == [16, 32, 64]
        out[sampler.__name__] = (nfe, err)
    return out


@pytest.mark.parametrize(("name", "order"), [("euler", 1), ("ddim", 1), ("heun", 2),
                                             ("dpm_solver_2", 2), ("dpm_solver_pp_2m", 2)])
def test_convergence_orders_on_the_two_moons_exact_denoiser(moons_orders, name, order):
    """The measured order (fit_order, NFE 16..64) of the endpoint error against a dopri5
    reference from the same noise, with the exact denoiser of the two moons (VP path), is
    within 0.3 of theory: 1 for Euler and DDIM (eq-sde-ddim-exp), 2 for Heun, DPM-Solver-2
    (eq-sde-dpm2) and DPM-Solver++(2M)."""
    nfe, err = moons_orders[name]
    assert abs(fit_order(nfe, err) - order) < 0.3, (name, nfe, err)


@pytest.fixture(scope="module")
def chapter_orders():
    """The configuration of the SDE chapter's first experiment: VE path, EDM's grid with
    sigma_max = 3, sigma_min = 0.02, rho = 7 and a final step to 0, 256 points from the prior
    N(0, (sigma_max^2 + 1) I), the mean endpoint distance to a dopri5 reference (tolerance
    1e-8), budgets 4..128 calls, the fit from the second budget on."""
    path = VEPath(3.0)
    pred = mixture_prediction(*MOONS, path)

    def grid(steps):
        return karras_grid(path, steps, sigma_min=0.02, sigma_max=3.0, rho=7.0)

    x = math.sqrt(10.0) * torch.randn(256, 2, generator=torch.Generator().manual_seed(1),
                                      dtype=F64)
    ref = dopri5(pred, x, grid(2), rtol=1e-8, atol=1e-8).samples
    out = {}
    for sampler, per_step in ((ddim, 1), (heun, 2), (dpm_solver_2, 2), (dpm_solver_pp_2m, 1)):
        nfe, err = [], []
        for budget in (4, 8, 16, 32, 64, 128):
            run = sampler(pred, x, grid(budget // per_step))
            nfe.append(run.nfe)
            err.append(float((run.samples - ref).norm(dim=1).mean()))
        out[sampler.__name__] = (nfe[1:], err[1:])
    return out


@pytest.mark.parametrize(("name", "order"), [("ddim", 1), ("heun", 2), ("dpm_solver_2", 2),
                                             ("dpm_solver_pp_2m", 2)])
def test_convergence_orders_in_the_sde_chapters_configuration(chapter_orders, name, order):
    """The orders the SDE chapter reports (fit_order of the mean endpoint error, VE path,
    EDM's grid sigma in [0.02, 3], rho = 7, budgets 8..128) are within 0.3 of theory: 1 for
    DDIM (= Euler on this path, eq-sde-ddim-exp), 2 for Heun, DPM-Solver-2 (eq-sde-dpm2) and
    DPM-Solver++(2M) (eq-sde-dpmpp2m)."""
    nfe, err = chapter_orders[name]
    assert abs(fit_order(nfe, err) - order) < 0.3, (name, nfe, err)


def _constant_x0(path, c=(0.7, -1.3)):
    value = torch.tensor(c, dtype=F64)
    return Prediction(lambda x, t: value.to(x.dtype).expand(x.shape[0], 2), "x0", path)


@pytest.mark.parametrize("name", ["vp", "ve", "subvp", "linear"])
def test_exponential_integrators_are_exact_for_a_constant_x0(name):
    """eq-sde-ddim-exp: with x0_hat constant, eps_hat is constant along the probability-flow
    ODE's solution, so DDIM (eta = 0, the first-order exponential integrator in log-SNR),
    DPM-Solver-2 and DPM-Solver++(2M) solve it exactly on any grid: 3 uneven steps agree with
    a dopri5 solve at tolerance 1e-11 to 1e-8. Euler and Heun are exact too where the
    solutions are straight lines in t (VE, linear), not on the VP paths (error > 1e-4)."""
    path = PATHS[name]
    pred = _constant_x0(path)
    grid = torch.tensor([0.9, 0.5, 0.3, 0.02], dtype=F64) * path.t_max
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(5), dtype=F64)
    ref = dopri5(pred, x, grid, rtol=1e-11, atol=1e-11).samples
    for sampler in (ddim, dpm_solver_2, dpm_solver_pp_2m):
        torch.testing.assert_close(sampler(pred, x, grid).samples, ref, rtol=0, atol=1e-8)
    for sampler in (euler, heun):
        err = float((sampler(pred, x, grid).samples - ref).abs().max())
        assert err > 1e-4 if name in ("vp", "subvp") else err < 1e-8


def test_dpm_solver_2_local_error_for_eps_linear_in_lambda():
    """eq-sde-dpm2 is exact for eps_hat constant along the solution, not for eps_hat linear in
    lambda = log(alpha / sigma): its weight (e^h - 1) / 2 on the slope term replaces the exact
    (e^h - 1 - h) / h, an O(h^3) local error, which is what makes it second order. With
    eps_hat = e0 + e1 lambda_t (a network that ignores x): one step with e1 = 0 is exact to
    1e-10, and with e1 != 0 its error shrinks by 2^3 (local order 3 +- 0.2) when h halves."""
    path = VPPath()

    def eps_net(e1):
        def fn(x, t):
            lam = 0.5 * path.log_snr(t.to(F64)).to(x.dtype)[:, None]
            return torch.tensor([0.4, -0.2], dtype=x.dtype) + e1 * lam
        return Prediction(fn, "eps", path)

    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(6), dtype=F64)
    # steps from t = 0.5 of widths H / 8, H / 4, H / 2 in lambda (H = 1.02; a uniform grid)
    ends = log_snr_grid(path, 8, t_max=0.5, t_min=0.3)[[1, 2, 4]]

    def one_step_error(pred, t_end):
        step = torch.stack([torch.tensor(0.5, dtype=F64), t_end])
        ref = dopri5(pred, x, step, rtol=1e-12, atol=1e-12).samples
        return float((dpm_solver_2(pred, x, step).samples - ref).abs().max())

    assert one_step_error(eps_net(0.0), torch.tensor(0.3, dtype=F64)) < 1e-10
    errs = [one_step_error(eps_net(0.3), t) for t in ends.flip(0)]
    local = [math.log2(errs[k] / errs[k + 1]) for k in range(2)]
    assert errs[-1] > 1e-7 and all(abs(p - 3) < 0.2 for p in local), (errs, local)


def test_dpm_solver_pp_2m_starts_with_ddim_and_counts_calls():
    """DPM-Solver++(2M)'s first step is DDIM's (eq-sde-ddim-exp); 1 call per step; DPM-Solver-2
    2 per step and 1 for a last step to sigma = 0 (a karras_grid ends at t = 0)."""
    path = VEPath(80.0)
    pred = mixture_prediction(*MOONS, path)
    x = 5.0 * torch.randn(30, 2, generator=torch.Generator().manual_seed(7), dtype=F64)
    one = torch.tensor([5.0, 1.0], dtype=F64)
    torch.testing.assert_close(dpm_solver_pp_2m(pred, x, one).samples,
                               ddim(pred, x, one).samples, rtol=1e-12, atol=1e-12)
    grid = karras_grid(path, 6, sigma_max=5.0, rho=3.0)
    assert dpm_solver_pp_2m(pred, x, grid).nfe == 6
    out = dpm_solver_2(pred, x, grid, return_path=True)
    assert out.nfe == 11 and out.states.shape == (7, 30, 2) and out.x0_preds.shape == (6, 30, 2)
    assert bool(torch.isfinite(out.samples).all())


def test_heun_churn_without_churn_is_heun_bit_for_bit():
    """Karras et al. (2022), Algorithm 2 with S_churn = 0 is Algorithm 1 (heun), bit for bit;
    with churn > 0 it is random, driven by the generator: the same seed gives the same
    samples, another seed others; churn outside [s_tmin, s_tmax] adds nothing."""
    for path in (VEPath(80.0), VPPath()):
        pred = mixture_prediction(*MOONS, path)
        grid = karras_grid(path, 8, sigma_max=5.0, rho=3.0)
        x = torch.randn(64, 2, generator=torch.Generator().manual_seed(8), dtype=F64)
        base = heun(pred, x, grid)
        same = heun_churn(pred, x, grid, churn=0.0)
        assert torch.equal(same.samples, base.samples) and same.nfe == base.nfe == 15
        off = heun_churn(pred, x, grid, churn=5.0, s_tmin=100.0, s_tmax=200.0,
                         generator=torch.Generator().manual_seed(0))
        assert torch.equal(off.samples, base.samples)
        runs = [heun_churn(pred, x, grid, churn=5.0, generator=torch.Generator().manual_seed(s))
                .samples for s in (1, 1, 2)]
        assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])
        assert not torch.allclose(runs[0], base.samples)


def test_dopri5_follows_the_exact_gaussian_ray():
    """The reference solver on exact Gaussian scores: the endpoint is the closed-form ray to
    1e-7, nfe counts the calls, and a grid ending at t = 0 ends with the denoising step."""
    path = PATHS["vp"]
    pred = Prediction(exact_x0(path), "x0", path)
    z = torch.linspace(-2, 2, 9, dtype=F64)[:, None]
    out = dopri5(pred, ray(path, 1.0, z), torch.tensor([1.0, 0.5, 0.01], dtype=F64),
                 return_path=True)
    torch.testing.assert_close(out.samples, ray(path, 0.01, z), rtol=0, atol=1e-7)
    assert out.states.shape == (3, 9, 1) and out.nfe > 6
    torch.testing.assert_close(out.states[1], ray(path, 0.5, z), rtol=0, atol=1e-7)
    to_zero = dopri5(pred, ray(path, 1.0, z), torch.tensor([1.0, 0.01, 0.0], dtype=F64))
    torch.testing.assert_close(to_zero.samples, pred.x0_eps(out.samples, torch.tensor(0.01))[0])


def test_sde_samplers_refuse_bad_input():
    ve, vp = VEPath(80.0), VPPath()
    pred = mixture_prediction(*MOONS, ve)
    x = torch.randn(3, 2, dtype=F64)
    grid = torch.tensor([5.0, 1.0, 0.1], dtype=F64)
    with pytest.raises(TypeError, match="steps"):
        karras_grid(ve, 2.5)
    with pytest.raises(ValueError, match="steps"):
        karras_grid(ve, 0)
    with pytest.raises(ValueError, match="sigma_max must exceed"):
        karras_grid(ve, 5, sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ValueError, match="rho"):
        karras_grid(ve, 5, rho=0.0)
    with pytest.raises(ValueError, match="beyond the path"):
        karras_grid(vp, 5, sigma_max=1e4)
    with pytest.raises(TypeError, match="GaussianPath"):
        karras_grid("ve", 5)
    with pytest.raises(ValueError, match="not finite"):
        log_snr_grid(LinearPath(), 5)
    with pytest.raises(ValueError, match="t_min < t_max"):
        log_snr_grid(vp, 5, t_min=0.5, t_max=0.2)
    with pytest.raises(ValueError, match="r must be"):
        dpm_solver_2(pred, x, grid, r=1.5)
    with pytest.raises(ValueError, match="decreasing"):
        dpm_solver_pp_2m(pred, x, grid.flip(0))
    with pytest.raises(ValueError, match="alpha_t > 0"):
        dpm_solver_pp_2m(mixture_prediction(*MOONS, LinearPath()), x,
                         torch.tensor([1.0, 0.5], dtype=F64))
    with pytest.raises(ValueError, match="churn"):
        heun_churn(pred, x, grid, churn=-1.0)
    with pytest.raises(ValueError, match="s_noise"):
        heun_churn(pred, x, grid, churn=1.0, s_noise=0.0)
    with pytest.raises(ValueError, match="s_tmax"):
        heun_churn(pred, x, grid, s_tmin=2.0, s_tmax=1.0)
    with pytest.raises(TypeError, match="generator"):
        heun_churn(pred, x, grid, churn=1.0, generator=0)
    with pytest.raises(ValueError, match="rtol"):
        dopri5(pred, x, grid, rtol=0.0)
    w, mu, var = MOONS
    with pytest.raises(ValueError, match="variances"):
        mixture_prediction(w, mu, var[:, :1], ve)
    with pytest.raises(ValueError, match="nonnegative"):
        mixture_prediction(-w, mu, var, ve)
    with pytest.raises(TypeError, match="floating"):
        mixture_prediction(w, mu.long(), var, ve)
    with pytest.raises(ValueError, match=r"shape \(B, 2\)"):
        pred.fn(torch.zeros(3, 3, dtype=F64), torch.ones(3, dtype=F64))
    with pytest.raises(ValueError, match="same length"):
        fit_order([1, 2, 3], [1.0, 0.5])
    with pytest.raises(ValueError, match="positive"):
        fit_order([1, 2], [1.0, 0.0])
    with pytest.raises(ValueError, match="distinct"):
        fit_order([4, 4], [1.0, 0.5])
