"""Tests of ``gmbook.sde``: the claims of the chapter "Diffusion as stochastic differential
equations" (book/diffusion/sde.md).

Each test of a claim names its label in square brackets in its docstring. The forward SDE is
simulated by the package's Euler-Maruyama integrator (:func:`gmbook.stochastic.integrate_sde`)
and compared with DDPM's closed form; the probability-flow ODE and the likelihood are checked
on Gaussian data, whose denoiser is exact: EDM's preconditioned denoiser with a network that
outputs 0 is :math:`c_{\\mathrm{skip}}(\\sigma) x = \\sigma_d^2 / (\\sigma^2 + \\sigma_d^2)\\, x`,
the posterior mean :math:`\\mathbb E[x_0 \\mid x_\\sigma]` of :math:`\\mathcal N(0,
\\sigma_d^2 I)` data. Tolerances are a few Monte Carlo standard errors, far below what a wrong
coefficient (a missing square root, a factor 2 in the drift) produces.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from gmbook import samplers
from gmbook._random import randn
from gmbook.data import TwoMoons
from gmbook.ddpm import alpha_bars, linear_betas
from gmbook.nets import MLP
from gmbook.sde import EDM, edm_coefficients, forward_sde
from gmbook.stochastic import integrate_sde

F64 = torch.float64


class _Probe(nn.Module):
    """A network that outputs 0 and records its input (exact denoiser of Gaussian data)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros((), dtype=F64))  # a parameter, for .prior
        self.seen: Tensor | None = None

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        self.seen = x.detach()
        return torch.zeros_like(x) + 0 * self.weight


def _geometric_grid(sigma_max: float, sigma_min: float, steps: int) -> Tensor:
    levels = torch.logspace(math.log10(sigma_max), math.log10(sigma_min), steps, dtype=F64)
    return torch.cat([levels, levels.new_zeros(1)])


# --------------------------------------------------------------------------- forward SDE


def test_vp_sde_marginals_match_ddpm_closed_form():
    """[eq-sde-forward] The variance-preserving SDE dx = -beta/2 x dt + sqrt(beta) dW,
    simulated by Euler-Maruyama from fixed x0, has at t = k/T the mean sqrt(alpha_bar_k) x0
    and variance 1 - alpha_bar_k of DDPM's linear schedule (T = 1000), the closed form
    [eq-ddpm-marginal]; and the SDE of the discrete schedule's own path (DiscreteVPPath)
    matches it as well."""
    T, times = 1000, (0.1, 0.3, 0.5)
    ab = alpha_bars(linear_betas(T))  # (T + 1,), float64, ab[k] at step k
    x0 = torch.tensor([2.0, -1.0], dtype=F64).expand(20_000, 2)
    g = torch.Generator().manual_seed(1)
    grid = torch.linspace(0.0, max(times), 251, dtype=F64)  # step 0.002
    for path, extra in ((samplers.VPPath(), 0.004), (samplers.DiscreteVPPath(ab[1:]), 0.0)):
        drift, diffusion = forward_sde(path)
        x, start = x0, 0.0
        for t in times:  # one Euler-Maruyama chain, integrated segment by segment
            segment = grid[(grid >= start - 1e-12) & (grid <= t + 1e-12)]
            x = integrate_sde(drift, diffusion, x, segment, generator=g).samples  # (B, 2)
            start, k = t, round(t * T)
            mean, var = ab[k].sqrt() * x0[0], 1 - ab[k]
            se_mean = math.sqrt(var / len(x))
            se_var = float(var) * math.sqrt(2 / len(x))
            # Euler-Maruyama's weak error at 250 steps is a few 1e-3; the continuous VP
            # path differs from the discrete product by about 0.3% at t = 0.5 (extra).
            torch.testing.assert_close(x.mean(0), mean, rtol=0,
                                       atol=5 * se_mean + 0.004 + extra)
            torch.testing.assert_close(x.var(0), var.expand(2), rtol=0,
                                       atol=5 * se_var + 0.004 + extra)


def test_ve_sde_has_variance_sigma_squared():
    """[eq-sde-forward] The variance-exploding SDE dx = sqrt(2t) dW (VEPath, sigma_t = t)
    adds variance t^2 by time t: simulated from x0 = 0 to t = 2, the variance is 4 (the
    coefficient sqrt(d sigma^2/dt), not d sigma/dt = 1, which would give 2)."""
    drift, diffusion = forward_sde(samplers.VEPath())
    x0 = torch.zeros(40_000, 2, dtype=F64)
    grid = torch.linspace(0.0, 2.0, 201, dtype=F64)
    x = integrate_sde(drift, diffusion, x0, grid,
                      generator=torch.Generator().manual_seed(2)).samples
    torch.testing.assert_close(x.var(0), torch.full((2,), 4.0, dtype=F64), rtol=0,
                               atol=5 * 4 * math.sqrt(2 / len(x)))


# --------------------------------------------------------------------------- PF-ODE


def test_probability_flow_ode_transports_gaussian_to_exact_marginals():
    """[eq-sde-pf-ode] For N(0, s0^2 I) data, with the exact denoiser, the probability-flow
    ODE dx/dsigma = (x - D(x; sigma)) / sigma maps x at sigma_max to
    x sqrt(s0^2 + sigma^2) / sqrt(s0^2 + sigma_max^2) at every sigma: it carries the
    marginal N(0, (s0^2 + sigma_max^2) I) through the marginals N(0, (s0^2 + sigma^2) I) to
    the data. Heun's method on 200 levels, float64, pointwise."""
    s0, sigma_max = 0.6, 5.0
    model = EDM(_Probe(), shape=(2,), sigma_data=s0, sigma_max=sigma_max)
    grid = _geometric_grid(sigma_max, 1e-3, 200)
    g = torch.Generator().manual_seed(3)
    path = model.sample(4000, grid=grid, sampler=samplers.heun, generator=g,
                        return_path=True)
    start = path.states[0]
    torch.testing.assert_close(start.std(), torch.tensor(math.hypot(s0, sigma_max), dtype=F64),
                               rtol=0.03, atol=0)
    scale = torch.sqrt((s0**2 + grid**2) / (s0**2 + sigma_max**2))  # (K + 1,)
    expected = scale[:, None, None] * start  # (K + 1, B, 2)
    torch.testing.assert_close(path.states[:-1], expected[:-1], rtol=1e-3, atol=0)
    # Heun's global error on this grid is about 2e-4; the last step (sigma_min -> 0) is
    # D(x; sigma_min), within 1e-6 of the exact flow.
    torch.testing.assert_close(path.samples, expected[-1], rtol=1e-3, atol=0)
    torch.testing.assert_close(path.samples.std(), torch.tensor(s0, dtype=F64), rtol=0.03,
                               atol=0)


def test_log_prob_of_exact_gaussian_model_is_closed_form():
    """[eq-sde-change-of-variables] With the exact denoiser of N(0, s0^2 I) data, the
    probability-flow ODE's log-density equals log N(x; 0, (s0^2 + sigma_min^2) I), the
    density of the data at sigma_min (the Gaussian prior at sigma_max is then exact)."""
    s0, sigma_min = 0.7, 0.01
    model = EDM(_Probe(), shape=(2,), sigma_data=s0, sigma_max=5.0)
    x = torch.randn(64, 2, dtype=F64, generator=torch.Generator().manual_seed(4))
    x[0] = torch.tensor([3.0, -2.5], dtype=F64)  # far in the tail
    var = s0**2 + sigma_min**2
    expected = -0.5 * (x**2).sum(1) / var - math.log(2 * math.pi * var)
    torch.testing.assert_close(model.log_prob(x, sigma_min=sigma_min, rtol=1e-8, atol=1e-8),
                               expected, rtol=0, atol=1e-5)


# --------------------------------------------------------------------------- EDM


@pytest.mark.parametrize("sigma_data", [1.0, 3.0])
@pytest.mark.parametrize("sigma", [0.002, 0.1, 0.5, 1.0, 3.0, 20.0, 80.0])
def test_edm_preconditioning_gives_unit_variance_inputs_and_targets(sigma_data, sigma):
    """[eq-sde-edm-precond] On standardized two moons (scaled by sigma_data), the network's
    input c_in (x0 + sigma eps) and the training target (x0 - c_skip x) / c_out of EDM's
    loss [eq-sde-edm-loss] have unit variance per coordinate at every sigma: the probe
    network records the first, and with its zero output the loss at a fixed sigma is the
    mean square of the second."""
    g = torch.Generator().manual_seed(5)
    x0 = sigma_data * TwoMoons().sample(40_000, generator=g).double()
    probe = _Probe()
    model = EDM(probe, shape=(2,), sigma_data=sigma_data, p_mean=math.log(sigma), p_std=1e-9)
    x = x0 + sigma * torch.randn(x0.shape, dtype=F64, generator=g)
    model.denoise(x, torch.tensor(sigma, dtype=F64))
    tol = 0.04  # the sample variance's error is about 1%
    torch.testing.assert_close(probe.seen.var(0), torch.ones(2, dtype=F64), rtol=0, atol=tol)
    loss = model.loss(x0, generator=g)
    torch.testing.assert_close(loss, torch.tensor(1.0, dtype=F64), rtol=0, atol=tol)


def test_edm_coefficients_limits():
    """[eq-sde-edm-precond] c_skip -> 1 and c_out -> 0 as sigma -> 0 (the denoiser of almost
    clean data is almost the identity), c_skip -> 0 and c_out -> sigma_data as
    sigma -> infinity (it predicts the data from the network alone), c_noise = log(sigma)/4."""
    c_skip, c_out, c_in, c_noise = edm_coefficients(torch.tensor([1e-6, 1e6], dtype=F64), 2.0)
    torch.testing.assert_close(c_skip, torch.tensor([1.0, 0.0], dtype=F64), atol=1e-9, rtol=0)
    torch.testing.assert_close(c_out, torch.tensor([0.0, 2.0], dtype=F64), atol=1e-6, rtol=0)
    torch.testing.assert_close(c_in, torch.tensor([0.5, 1e-6], dtype=F64), atol=1e-9, rtol=1e-6)
    torch.testing.assert_close(c_noise, torch.tensor([1e-6, 1e6], dtype=F64).log() / 4)


def test_edm_prediction_and_sample_shapes():
    """The model exposes an x0 prediction on the VE path and samples with any sampler."""
    model = EDM(MLP(2, hidden=16, time_dim=8))
    pred = model.prediction()
    assert pred.kind == "x0" and isinstance(pred.path, samplers.VEPath)
    grid = _geometric_grid(model.sigma_max, model.sigma_min, 4)
    g = torch.Generator().manual_seed(6)
    for sampler in (samplers.heun, samplers.euler, samplers.euler_maruyama):
        x = model.sample(7, grid=grid, sampler=sampler, generator=g)
        assert x.shape == (7, 2) and bool(torch.isfinite(x).all())
    assert model.loss(torch.randn(5, 2)).requires_grad


def test_bad_input_refused():
    """Public functions refuse bad arguments with a clear error."""
    net = MLP(2, hidden=8, time_dim=8)
    with pytest.raises(ValueError, match="sigma"):
        edm_coefficients(0.0)
    with pytest.raises(ValueError, match="sigma_data"):
        edm_coefficients(1.0, sigma_data=-1.0)
    with pytest.raises(TypeError, match="sigma"):
        edm_coefficients("1.0")
    with pytest.raises(TypeError, match="GaussianPath"):
        forward_sde("vp")
    with pytest.raises(TypeError, match="nn.Module"):
        EDM(lambda x, t: x)
    with pytest.raises(ValueError, match="sigma_max"):
        EDM(net, sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ValueError, match="shape"):
        EDM(net, shape=(0,))
    model = EDM(net)
    with pytest.raises(ValueError, match="shape"):
        model.loss(torch.randn(4, 3))
    with pytest.raises(TypeError, match="floating"):
        model.loss(torch.ones(4, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="sigma"):
        model.denoise(torch.randn(4, 2), torch.ones(3))
    with pytest.raises(ValueError, match="grid"):
        model.sample(3, grid=torch.zeros(1, dtype=F64))
    with pytest.raises(ValueError, match="rows"):
        model.sample(3, grid=_geometric_grid(1.0, 0.01, 3), x=torch.randn(4, 2))


@pytest.mark.parametrize("precondition", [True, False])
@pytest.mark.parametrize("weighting", ["edm", "unit"])
def test_edm_loss_is_the_weighted_denoising_error(precondition, weighting):
    """eq-sde-edm-loss: EDM.loss is the mean of lambda(sigma) ||D(x0 + sigma eps; sigma) -
    x0||^2 with lambda = c_out(sigma)^-2 (EDM's c_out) or 1, for the preconditioned and the
    raw denoiser alike (prop-sde-edm-unit: with preconditioning and EDM's weight this is
    ||F - target||^2); the levels and the noise are drawn again from the same seed."""
    torch.manual_seed(0)
    model = EDM(MLP(2, hidden=16, depth=2, time_dim=8), precondition=precondition,
                weighting=weighting).double()
    x0 = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    loss = model.loss(x0, generator=torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(2)
    z = randn((64,), like=x0, generator=g)
    sigma = (model.p_mean + model.p_std * z).exp()
    eps = randn(x0.shape, like=x0, generator=g)
    with torch.no_grad():
        d = model.denoise(x0 + sigma[:, None] * eps, sigma)
    lam = edm_coefficients(sigma, 1.0)[1] ** -2 if weighting == "edm" else torch.ones(64)
    expected = (lam[:, None] * (d - x0) ** 2).mean()
    torch.testing.assert_close(loss.detach(), expected.to(loss.dtype), rtol=1e-10, atol=0)
    # the weights differ by orders of magnitude across the levels: a wrong lambda fails
    assert lam.max() / lam.min() > 10 or weighting == "unit"


def test_edm_loguniform_levels_cover_the_grid_evenly_in_log_sigma():
    """eq-sde-edm-loss with ``levels="loguniform"``: the training levels are uniform in
    log sigma on [sigma_min, sigma_max] (the probe sees c_noise = log(sigma) / 4 through the
    time input), unlike the log-normal default whose levels leave that interval."""
    probe = _Probe()
    model = EDM(probe, sigma_min=0.02, sigma_max=3.0, levels="loguniform")
    calls = []
    probe.forward = lambda x, t: (calls.append(t.detach()), torch.zeros_like(x))[1]
    model.loss(torch.randn(20_000, 2, dtype=F64), generator=torch.Generator().manual_seed(5))
    log_sigma = 4 * calls[0]
    lo, hi = math.log(0.02), math.log(3.0)
    assert log_sigma.min() >= lo and log_sigma.max() <= hi
    u = (log_sigma - lo) / (hi - lo)  # uniform on [0, 1]: mean 1/2, variance 1/12
    assert abs(u.mean().item() - 0.5) < 0.01 and abs(u.var().item() - 1 / 12) < 0.003
    default = EDM(_Probe(), sigma_min=0.02, sigma_max=3.0)
    calls.clear()
    default.net.forward = probe.forward
    default.loss(torch.randn(20_000, 2, dtype=F64), generator=torch.Generator().manual_seed(5))
    assert ((4 * calls[0] < lo) | (4 * calls[0] > hi)).float().mean() > 0.02  # 4%
    with pytest.raises(ValueError, match="levels"):
        EDM(_Probe(), levels="uniform")


@pytest.mark.parametrize("s0", [1.0, 0.5])
def test_nll_bound_of_exact_gaussian_model_is_the_entropy(s0):
    """[eq-sde-elbo] With the exact denoiser of N(0, s0^2 I) data and a prior that is the
    exact marginal at sigma_max, the continuous-time bound is tight up to the decoder's
    blur: its mean over data points is the cross-entropy log(2 pi e s0^2) (D = 2) within a
    few Monte Carlo standard errors (a factor 2 or a missing 1/2 in any of the three terms
    moves it by a nat or more). It bounds the cross-entropy from above in expectation."""
    model = EDM(_Probe(), sigma_data=s0, sigma_max=20.0)
    g = torch.Generator().manual_seed(6)
    x = s0 * torch.randn(20_000, 2, dtype=F64, generator=g)
    bound = model.nll_bound(x, sigma_min=0.005, levels=16, generator=g)
    se = bound.std().item() / len(bound) ** 0.5
    entropy = math.log(2 * math.pi * math.e * s0**2)
    assert se < 0.03
    assert abs(bound.mean().item() - entropy) < 3 * se
    # a network that is not the exact denoiser pays for its error: the bound rises
    worse = EDM(_Probe(), sigma_data=1.5 * s0, sigma_max=20.0).nll_bound(
        x, sigma_min=0.005, levels=16, generator=torch.Generator().manual_seed(7))
    assert worse.mean().item() > entropy + 10 * se
    with pytest.raises(ValueError, match="sigma_min"):
        model.nll_bound(x, sigma_min=30.0)
