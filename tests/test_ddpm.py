"""Tests of ``gmbook.ddpm`` and the checkers of ``gmbook.exercises.ddpm``: the claims of
the chapter "Denoising diffusion probabilistic models" (book/diffusion/ddpm.md).

Each test of a claim names its label in square brackets in its docstring. Closed forms are
checked in float64 against independent computations (simulation of the chain, Bayes' rule
by quadrature, autograd, the exact Gaussian model), with tolerances that a wrong
coefficient (a missing square root, ``alpha`` for ``alpha_bar``) fails by a wide margin.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from gmbook.ddpm import (
    DDPM,
    alpha_bars,
    cosine_betas,
    ddim_step,
    eps_from_score,
    eps_from_v,
    eps_from_x0,
    linear_betas,
    posterior_mean_var,
    q_sample,
    score_from_eps,
    snr,
    v_from_eps,
    x0_from_eps,
    x0_from_v,
)
from gmbook.exercises import check
from gmbook.exercises import ddpm as ex
from gmbook.nets import MLP
from gmbook.samplers import DiscreteVPPath, Prediction, SamplePath

F64 = torch.float64


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class GaussianEps(nn.Module):
    r"""The exact noise predictor :math:`\mathbb E[\epsilon \mid x_t]` for data
    :math:`\mathcal N(m, s^2 I)`: :math:`\sqrt{1-\bar\alpha}(x_t - \sqrt{\bar\alpha} m) /
    (\bar\alpha s^2 + 1 - \bar\alpha)`. It reads :math:`\bar\alpha_t` from the schedule."""

    def __init__(self, alpha_bar: Tensor, m: Tensor, s: float) -> None:
        super().__init__()
        self.alpha_bar, self.m, self.s = alpha_bar, m, s
        self.dummy = nn.Parameter(torch.zeros((), dtype=F64))  # sets the sampling dtype
        self.T = alpha_bar.shape[0] - 1

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        idx = (t * self.T).round().long()
        ab = self.alpha_bar[idx].to(x.dtype)[:, None]
        return (1 - ab).sqrt() * (x - ab.sqrt() * self.m) / (ab * self.s**2 + 1 - ab)


def gaussian_model(T: int = 1000, schedule: str = "linear", m=(1.5, -0.5), s: float = 0.7):
    m = torch.tensor(m, dtype=F64)
    model = DDPM(nn.Identity(), (m.numel(),), T=T, schedule=schedule)
    model.net = GaussianEps(model.alpha_bar, m, s)
    return model, m, s


# ------------------------------------------------------------------ schedules


def test_schedules_float64_and_endpoints():
    """[eq-ddpm-cosine] The cosine schedule's alpha_bar is cos^2((t/T+s)/(1+s) pi/2)/f(0);
    the linear schedule ends near pure noise; both in float64, SNR decreasing."""
    T = 1000
    ab = alpha_bars(cosine_betas(T))
    t = torch.arange(T + 1, dtype=F64) / T
    f = torch.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
    torch.testing.assert_close(ab[:-1], (f / f[0])[:-1], rtol=1e-10, atol=1e-12)
    lin = alpha_bars(linear_betas(T))
    assert lin.dtype == F64 and ab.dtype == F64
    assert 1e-5 < lin[-1] < 1e-4  # about exp(-10)
    for a in (lin, ab):
        r = snr(a[1:])
        assert bool((r[1:] < r[:-1]).all())
    # the linear schedule rescaled to T = 100 ends at a similar noise level
    assert abs(math.log(alpha_bars(linear_betas(100))[-1]) - math.log(lin[-1])) < 1.0


def test_marginal_matches_simulated_chain():
    """[eq-ddpm-marginal] Running the chain x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) z
    step by step gives mean sqrt(alpha_bar_t) x_0 and variance 1 - alpha_bar_t."""
    T, n = 200, 200_000
    betas = linear_betas(T)
    ab = alpha_bars(betas)
    g = gen(1)
    x0 = torch.tensor([2.0, -1.0], dtype=F64)
    x = x0.expand(n, 2).clone()
    checkpoints = {10, 50, 200}
    for t in range(1, T + 1):
        x = (1 - betas[t - 1]).sqrt() * x + betas[t - 1].sqrt() * torch.randn(
            n, 2, generator=g, dtype=F64
        )
        if t in checkpoints:
            mean, var = x.mean(0), x.var(0)
            se = (var / n).sqrt()
            assert ((mean - ab[t].sqrt() * x0).abs() < 5 * se).all(), t
            torch.testing.assert_close(var, (1 - ab[t]).expand(2), rtol=0.02, atol=1e-4)
    # q_sample draws from the same law
    eps = torch.randn(n, 2, generator=g, dtype=F64)
    xt = q_sample(x0.expand(n, 2), ab[T], eps)
    torch.testing.assert_close(xt.var(0), x.var(0), rtol=0.02, atol=1e-4)


@pytest.mark.parametrize("t", [2, 30, 400])
def test_posterior_matches_bayes_rule(t):
    """[eq-ddpm-posterior] Mean and variance of q(x_{t-1} | x_t, x_0) equal those of
    q(x_t | x_{t-1}) q(x_{t-1} | x_0), normalized, computed by quadrature in 1-D."""
    betas = linear_betas(1000)
    ab = alpha_bars(betas)
    x0, xt = torch.tensor([[0.8]], dtype=F64), torch.tensor([[-0.3]], dtype=F64)
    mean, var = posterior_mean_var(x0, xt, ab[t], ab[t - 1])
    # Bayes' rule on a grid around the prior mean
    m1, v1 = ab[t - 1].sqrt() * 0.8, 1 - ab[t - 1]
    y = torch.linspace(-8, 8, 400_001, dtype=F64)
    b = betas[t - 1]
    logp = -0.5 * (y - m1) ** 2 / v1 - 0.5 * (xt.item() - (1 - b).sqrt() * y) ** 2 / b
    w = torch.exp(logp - logp.max())
    w = w / w.sum()
    m_num = (w * y).sum()
    v_num = (w * (y - m_num) ** 2).sum()
    torch.testing.assert_close(mean.squeeze(), m_num, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(var.squeeze(), v_num, rtol=1e-4, atol=1e-12)


def test_posterior_strided_equals_composition():
    """[eq-ddpm-posterior] With s < t - 1 the same formula is Bayes' rule for the two-step
    transition: the posterior mean is linear, so check against a (x0, xt) regression by MC."""
    ab = alpha_bars(linear_betas(100))
    s, t, n = 20, 60, 400_000
    g = gen(2)
    x0 = torch.randn(n, 1, generator=g, dtype=F64)
    xs = q_sample(x0, ab[s], torch.randn(n, 1, generator=g, dtype=F64))
    a = (ab[t] / ab[s]).sqrt()
    xt = a * xs + (1 - ab[t] / ab[s]).sqrt() * torch.randn(n, 1, generator=g, dtype=F64)
    feats = torch.cat([x0, xt], 1)
    coef = torch.linalg.lstsq(feats, xs).solution.squeeze()
    one, zero = torch.ones(1, 1, dtype=F64), torch.zeros(1, 1, dtype=F64)
    mean, var = posterior_mean_var(one, zero, ab[t], ab[s])  # coefficient of x0
    mean2, _ = posterior_mean_var(zero, one, ab[t], ab[s])  # coefficient of x_t
    expected = torch.stack([mean.squeeze(), mean2.squeeze()])
    torch.testing.assert_close(coef, expected, atol=5e-3, rtol=0)
    resid = xs - feats @ coef[:, None]
    torch.testing.assert_close(resid.var(), var.squeeze(), rtol=0.02, atol=0)


# ------------------------------------------------------------------ conversions


def test_conversions_round_trip():
    """[eq-ddpm-conversions] eps, x0, v and score predictions convert into each other and
    back exactly (float64), for alpha_bar of shape (B,) and broadcastable tensors."""
    g = gen(3)
    x0 = torch.randn(6, 3, 4, generator=g, dtype=F64)
    eps = torch.randn(6, 3, 4, generator=g, dtype=F64)
    ab = torch.rand(6, generator=g, dtype=F64) * 0.98 + 0.01
    xt = q_sample(x0, ab, eps)
    torch.testing.assert_close(x0_from_eps(xt, eps, ab), x0)
    torch.testing.assert_close(eps_from_x0(xt, x0, ab), eps)
    v = v_from_eps(x0, eps, ab)
    torch.testing.assert_close(eps_from_v(xt, v, ab), eps)
    torch.testing.assert_close(x0_from_v(xt, v, ab), x0)
    torch.testing.assert_close(eps_from_score(score_from_eps(eps, ab), ab), eps)
    ab4 = ab[:, None, None]  # a broadcastable tensor works the same
    torch.testing.assert_close(x0_from_eps(xt, eps, ab4), x0)
    with pytest.raises(ValueError):
        x0_from_eps(xt, eps, torch.rand(5))
    with pytest.raises(ValueError):
        x0_from_eps(xt, eps, torch.zeros(6))
    for bad in (1.5, float("nan")):  # the range check: above 1, and NaN, fail it too
        with pytest.raises(ValueError, match=r"\(0, 1\]"):
            x0_from_eps(xt, eps, torch.full((6,), bad, dtype=F64))
    with pytest.raises(ValueError, match="does not broadcast"):
        x0_from_eps(xt, eps, torch.full((6, 2, 1), 0.5, dtype=F64))  # 2 against 3
    torch.testing.assert_close(x0_from_eps(xt, eps, 0.25), x0_from_eps(xt, eps, ab4 * 0 + 0.25))


def test_v_is_derivative_along_the_circle():
    """[eq-ddpm-conversions] With alpha_bar = cos^2 phi, v = d x_t / d phi (autograd)."""
    g = gen(4)
    x0, eps = torch.randn(2, 5, 3, generator=g, dtype=F64)
    phi = torch.rand(5, dtype=F64, generator=g) * 1.4 + 0.05
    xt = lambda p: torch.cos(p)[:, None] * x0 + torch.sin(p)[:, None] * eps
    dx = torch.autograd.functional.jvp(xt, phi, torch.ones_like(phi))[1]
    torch.testing.assert_close(v_from_eps(x0, eps, torch.cos(phi) ** 2), dx)


def test_score_from_eps_is_tweedie():
    """[eq-ddpm-conversions] For Gaussian data the exact E[eps | x_t], converted by
    score_from_eps, is the gradient of log q(x_t) computed by autograd."""
    model, m, s = gaussian_model(T=100)
    t = 37
    ab = model.alpha_bar[t]
    x = torch.randn(7, 2, dtype=F64, requires_grad=True)
    var = ab * s**2 + 1 - ab
    logq = (-0.5 * (x - ab.sqrt() * m) ** 2 / var).sum()
    (grad,) = torch.autograd.grad(logq, x)
    eps = model.net(x.detach(), torch.full((7,), t / 100, dtype=F64))
    torch.testing.assert_close(score_from_eps(eps, ab), grad)


# ------------------------------------------------------------------ sampling


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_exact_predictor_samples_the_gaussian(schedule):
    """[eq-ddpm-ancestral] With the exact optimal noise predictor for N(m, s^2 I) data,
    ancestral sampling with T = 1000 returns N(m, s^2 I) (mean and std to MC accuracy)."""
    model, m, s = gaussian_model(schedule=schedule)
    x = model.sample(20_000, generator=gen(5))
    assert x.dtype == F64
    se = s / math.sqrt(20_000)
    assert ((x.mean(0) - m).abs() < 5 * se).all()
    torch.testing.assert_close(x.std(0), torch.full((2,), s, dtype=F64), rtol=0.025, atol=0)


def test_exact_predictor_deterministic_ddim():
    """[eq-ddpm-ddim] The deterministic DDIM sampler with the exact predictor maps N(0, I)
    to N(m, s^2 I) up to a discretization error that shrinks with the number of steps
    (below 1% in the standard deviation with 500 steps)."""
    model, m, s = gaussian_model()
    errs = []
    for steps in (20, 100, 500):
        x = model.sample(20_000, generator=gen(6), steps=steps, deterministic=True)
        errs.append((x.std(0) / s - 1).abs().max().item())
        torch.testing.assert_close(x.mean(0), m, atol=0.03, rtol=0)
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 0.01


def test_ddim_eta_one_is_posterior_sample():
    """[eq-ddpm-ddim] ddim_step with eta = 1 draws from q(x_s | x_t, x0_hat)."""
    g = gen(7)
    ab_t, ab_s = torch.tensor(0.3, dtype=F64), torch.tensor(0.6, dtype=F64)
    xt = torch.randn(4, 3, generator=g, dtype=F64)
    eps = torch.randn(4, 3, generator=g, dtype=F64)
    z = torch.randn(4, 3, generator=g, dtype=F64)
    x0 = x0_from_eps(xt, eps, ab_t)
    mean, var = posterior_mean_var(x0, xt, ab_t, ab_s)
    step = ddim_step(xt, eps, ab_t, ab_s, eta=1.0, noise=z)
    torch.testing.assert_close(step, mean + var.sqrt() * z)


class _Counting(nn.Module):
    """Wraps a network and counts its forward calls (not an MLP: no fast path)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net, self.calls = net, 0

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        self.calls += 1
        return self.net(x, t)


@pytest.mark.parametrize("deterministic", [False, True])
def test_sampler_makes_steps_network_calls_and_path(deterministic):
    """[eq-ddpm-ddim] The strided sampler evaluates the network exactly ``steps`` times, on
    the evenly spaced sub-sequence from T to 0; the path has steps + 1 states."""
    counted = _Counting(MLP(2, hidden=8, time_dim=8))
    model = DDPM(counted, T=100)
    model.sample(3, steps=7, generator=gen(0), deterministic=deterministic)
    assert counted.calls == 7
    counted.calls = 0
    path = model.sample(3, steps=7, generator=gen(0), return_path=True,
                        deterministic=deterministic)
    assert counted.calls == 7
    assert isinstance(path, SamplePath) and path.nfe == 7
    assert path.states.shape == (8, 3, 2) and path.x0_preds.shape == (7, 3, 2)
    assert (path.times * 100).round().tolist() == [100, 86, 71, 57, 43, 29, 14, 0]
    torch.testing.assert_close(path.states[-1], path.samples)
    counted.calls = 0
    model.sample(2, generator=gen(0))
    assert counted.calls == 100  # the full ancestral sampler: T calls


def _hand_rolled(model: DDPM, n: int, steps: int, eta: float, seed: int,
                 clip: float | None = None) -> Tensor:
    """The chapter's loop of eq-ddpm-ancestral / eq-ddpm-ddim written out with ddim_step:
    x_T from the generator, then one draw of z per step that ends above t = 0."""
    g = gen(seed)
    x = torch.randn(n, 2, generator=g)
    T = model.T
    grid = torch.linspace(T, 0, steps + 1, dtype=F64).round().long().unique_consecutive()
    for t, s in zip(grid[:-1].tolist(), grid[1:].tolist()):
        ab_t, ab_s = model.alpha_bar[t].float(), model.alpha_bar[s].float()
        eps = model.net(x, torch.full((n,), t / T))
        if clip is not None:
            eps = eps_from_x0(x, x0_from_eps(x, eps, ab_t).clamp(-clip, clip), ab_t)
        if s == 0:
            x = x0_from_eps(x, eps, ab_t)
        else:
            z = torch.randn(x.shape, generator=g) if eta > 0 else None
            x = ddim_step(x, eps, ab_t, ab_s, eta=eta, noise=z)
    return x


@pytest.mark.parametrize(("steps", "deterministic", "clip"),
                         [(1000, False, None), (50, True, None), (20, False, None),
                          (50, True, 1.0)])
def test_sampler_follows_the_chapters_update_and_random_stream(steps, deterministic, clip):
    """[eq-ddpm-ancestral, eq-ddpm-ddim] DDPM.sample (gmbook.samplers.ddim on the model's
    Prediction over t = k / T) gives, for the same generator, the samples of a hand-rolled
    loop of ddim_step (eta = 1 ancestral, eta = 0 DDIM, optionally clipping x0_hat) to
    float32 rounding: the same formulas and the same random stream."""
    torch.manual_seed(0)
    net = MLP(2, hidden=32, time_dim=16)
    with torch.no_grad():  # a network whose samples are of order 1, like a trained one
        net.out.weight.mul_(0.05)
    model = DDPM(net, (2,), T=1000)
    with torch.no_grad():
        ref = _hand_rolled(model, 300, steps, 0.0 if deterministic else 1.0, 3, clip)
    out = model.sample(300, steps=steps, deterministic=deterministic, clip=clip,
                       generator=gen(3))
    assert ref.abs().max() > 0.5
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    if not deterministic:  # a different stream gives different samples
        other = model.sample(300, steps=steps, clip=clip, generator=gen(4))
        assert (other - ref).abs().max() > 0.1


def test_prediction_is_the_networks_kind_on_the_discrete_path():
    """[eq-ddpm-conversions] DDPM.prediction() is a samplers.Prediction of the model's kind
    on DiscreteVPPath(alpha_bar): at t = k / T its (x0_hat, eps_hat) are those of
    DDPM.predict at step k, for the three kinds; with clip it is a clamped x0 prediction."""
    g = gen(14)
    x = 3 * torch.randn(6, 2, generator=g, dtype=F64)
    k = torch.tensor([1, 7, 100, 400, 999, 1000])
    for kind in ("eps", "x0", "v"):
        model = DDPM(MLP(2, hidden=8, time_dim=8).double(), (2,), T=1000, prediction=kind)
        pred = model.prediction()
        assert isinstance(pred, Prediction) and pred.kind == kind
        assert isinstance(pred.path, DiscreteVPPath)
        x0, eps = pred.x0_eps(x, k.double() / 1000)
        eps_ref, x0_ref = model.predict(x, k)
        torch.testing.assert_close(x0, x0_ref)
        torch.testing.assert_close(eps, eps_ref)
        clipped = model.prediction(clip=1.0)
        assert clipped.kind == "x0"
        x0c, epsc = clipped.x0_eps(x, k.double() / 1000)
        torch.testing.assert_close(x0c, x0_ref.clamp(-1, 1))
        ab = model.alpha_bar[k][:, None]
        torch.testing.assert_close(epsc, eps_from_x0(x, x0_ref.clamp(-1, 1), ab))


def test_loss_takes_a_generator():
    """The loss draws t and eps from its generator: the same generator state gives the same
    loss, another one a different loss, and the global RNG is not touched."""
    model = DDPM(MLP(2, hidden=8, time_dim=8), (2,), T=100)
    x = torch.randn(64, 2, generator=gen(1))
    state = torch.random.get_rng_state()
    a, b = model.loss(x, generator=gen(2)), model.loss(x, generator=gen(2))
    c = model.loss(x, generator=gen(3))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert a.item() == b.item() and a.item() != c.item()


def test_clip_changes_standardized_samples():
    """Clipping x0_hat to [-1, 1] keeps every sample inside [-1, 1]."""
    model, m, s = gaussian_model(T=100, m=(1.5, -0.5))
    x = model.sample(2000, generator=gen(8), clip=1.0)
    assert x.abs().max() <= 1.0 + 1e-12
    assert (x.mean(0) - m).abs().max() > 0.3


# ------------------------------------------------------------------ the bound


def test_elbo_bounds_the_gaussian_nll():
    """[eq-ddpm-elbo] For N(m, s^2 I) data and the exact predictor, the Monte Carlo
    negative ELBO matches its expectation computed in closed form (each KL term is
    c_t^2 Var[x_0 | x_t] / (2 tilde beta_t) per dimension) and lies above the exact NLL."""
    T, D = 200, 2
    model, m, s = gaussian_model(T=T)
    x = m + s * torch.randn(400, D, generator=gen(9), dtype=F64)
    bound = model.nll_bound(x, generator=gen(10))
    nll = (0.5 * (x - m) ** 2 / s**2 + math.log(s) + 0.5 * math.log(2 * math.pi)).sum(1)
    ab, beta = model.alpha_bar, model.betas
    post_var = s**2 * (1 - ab) / (ab * s**2 + 1 - ab)  # Var[x_0 | x_t], (T + 1,)
    t = torch.arange(2, T + 1)
    c = ab[t - 1].sqrt() * beta[t] / (1 - ab[t])
    tilde = (1 - ab[t - 1]) / (1 - ab[t]) * beta[t]
    expected = (
        model.prior_kl(x).mean()
        + D * (c**2 * post_var[t] / (2 * tilde)).sum()
        + D / 2 * (math.log(2 * math.pi * beta[1]) + post_var[1] / beta[1])
    )
    se = bound.std() / math.sqrt(400)
    assert abs(bound.mean() - expected) < 4 * se + 1e-3
    assert bound.mean() > nll.mean() + 0.1  # the fixed reverse variances leave a gap


def test_elbo_with_beta_variance_is_tight_for_standard_normal_data():
    """[eq-ddpm-elbo] (exercise ddpm_ex1) For N(0, I) data the forward chain is stationary
    and reversible, so with the exact predictor and sigma_t^2 = beta_t every reverse
    transition, the decoder and the prior are exact: the expected bound equals the exact
    NLL. With sigma_t^2 = tilde beta_t the bound stays strictly above it."""
    T, D, n = 100, 2, 2000
    model, m, s = gaussian_model(T=T, m=(0.0, 0.0), s=1.0)
    x = torch.randn(n, D, generator=gen(12), dtype=F64)
    nll = (0.5 * x**2 + 0.5 * math.log(2 * math.pi)).sum(1)
    gap = {}
    for variance in ("beta", "posterior"):
        bound = model.nll_bound(x, generator=gen(13), variance=variance)
        d = bound - nll
        gap[variance] = (float(d.mean()), float(d.std()) / math.sqrt(n))
    mean, se = gap["beta"]
    assert abs(mean) < 4 * se + 1e-3, gap
    mean_post, se_post = gap["posterior"]
    assert mean_post > 0.5 and mean_post > 10 * se_post, gap


def test_bound_of_several_variances_shares_the_draws():
    """[eq-ddpm-elbo] A tuple of variances gives, bitwise, the bound of each choice from the
    same generator state (one set of draws and network calls for all); bad choices raise."""
    torch.manual_seed(0)
    model = DDPM(MLP(4, hidden=16, depth=1, time_dim=8), (4,), T=50)
    x = torch.randn(30, 4, generator=gen(21))
    both = model.nll_bound(x, variance=("posterior", "beta"), generator=gen(22),
                           batch_size=256)
    assert isinstance(both, tuple) and len(both) == 2
    for variance, bound in zip(("posterior", "beta"), both):
        alone = model.nll_bound(x, variance=variance, generator=gen(22), batch_size=256)
        assert torch.equal(bound, alone), variance
    assert not torch.equal(both[0], both[1])  # the two choices differ
    for bad in ((), ("posterior", "learned"), ["beta"]):
        with pytest.raises(ValueError, match="variance"):
            model.nll_bound(x, variance=bad)


@pytest.mark.parametrize("variance", ["posterior", "beta"])
def test_bound_terms_are_gaussian_kls(variance):
    """[eq-ddpm-elbo, eq-ddpm-kl-term] Each term L_{t-1} (t >= 2) of the bound is the KL
    divergence between q(x_{t-1} | x_t, x_0) and the model's Gaussian N(mu_theta, sigma_t^2 I),
    computed here by torch.distributions from the posterior of ``posterior_mean_var``;
    sigma_t^2 is tilde beta_t ("posterior") or beta_t ("beta")."""
    model = DDPM(MLP(3, hidden=8, time_dim=8).double(), (3,), T=100)
    g = gen(11)
    x0 = torch.randn(5, 3, generator=g, dtype=F64)
    eps = torch.randn(5, 3, generator=g, dtype=F64)
    t = torch.tensor([2, 5, 30, 77, 100])
    ab, ab_prev = model.alpha_bar[t][:, None], model.alpha_bar[t - 1][:, None]
    xt = q_sample(x0, ab, eps)
    _, x0_hat = model.predict(xt, t)
    terms = model._kl_terms(x0, x0_hat, xt, t, None, variance)
    mean, var = posterior_mean_var(x0, xt, ab, ab_prev)
    mean_model, _ = posterior_mean_var(x0_hat, xt, ab, ab_prev)
    sigma2 = var if variance == "posterior" else model.betas[t][:, None]
    q = torch.distributions.Normal(mean, var.sqrt().expand_as(mean))
    p = torch.distributions.Normal(mean_model, sigma2.sqrt().expand_as(mean))
    torch.testing.assert_close(terms, torch.distributions.kl_divergence(q, p).sum(1))


def test_kl_term_is_weighted_eps_error():
    """[eq-ddpm-kl-term] With sigma_t^2 = tilde beta_t, L_{t-1} is proportional to the
    squared noise error, with the same weight for every draw at a given t: the ratio of the
    term to ||eps - eps_hat||^2 does not depend on x_0 or eps, and it equals the weight
    computed from the posterior coefficient of x_0 (exercise ddpm_ex2)."""
    model = DDPM(MLP(3, hidden=8, time_dim=8).double(), (3,), T=100)
    g = gen(11)
    t = torch.tensor([2, 5, 30, 77, 100]).repeat(2)
    x0 = torch.randn(10, 3, generator=g, dtype=F64)
    eps = torch.randn(10, 3, generator=g, dtype=F64)
    ab = model.alpha_bar[t][:, None]
    xt = q_sample(x0, ab, eps)
    eps_hat, x0_hat = model.predict(xt, t)
    ratio = model._kl_terms(x0, x0_hat, xt, t, None) / (eps - eps_hat).pow(2).sum(1)
    torch.testing.assert_close(ratio[:5], ratio[5:])
    # weight from the posterior: coefficient of x0 in tilde mu, times d x0 / d eps
    ones = torch.ones(5, 1, dtype=F64)
    coef = posterior_mean_var(ones, 0 * ones, ab[:5], model.alpha_bar[t[:5] - 1][:, None])
    c, var = coef[0][:, 0], coef[1][:, 0]
    w = c**2 * (1 - ab[:5, 0]) / ab[:5, 0] / (2 * var)
    torch.testing.assert_close(ratio[:5], w)


def test_discretized_decoder_is_a_distribution():
    """[eq-ddpm-elbo] The discretized Gaussian decoder puts total mass 1 on the 17 levels."""
    levels = torch.arange(17, dtype=F64) / 8 - 1
    mean = torch.full((17, 1), 0.37, dtype=F64)
    for var in (1e-4, 0.01, 0.5):
        nll = DDPM._decoder_nll(levels[:, None], mean, torch.tensor(var, dtype=F64), 0.125)
        torch.testing.assert_close(torch.exp(-nll).sum(), torch.tensor(1.0, dtype=F64))


def test_prior_kl_closed_form():
    """L_T equals the KL divergence between N(sqrt(ab) x0, 1 - ab) and N(0, 1) by MC."""
    model = DDPM(nn.Identity(), (2,), T=10)
    x0 = torch.tensor([[1.0, -2.0]], dtype=F64)
    ab = model.alpha_bar[10]
    z = torch.randn(400_000, 2, generator=gen(12), dtype=F64)
    xT = ab.sqrt() * x0 + (1 - ab).sqrt() * z
    logq = (-0.5 * z**2 - 0.5 * torch.log(1 - ab)).sum(1)
    logp = (-0.5 * xT**2).sum(1)
    kl_mc = (logq - logp).mean()
    torch.testing.assert_close(model.prior_kl(x0).squeeze(), kl_mc, atol=0.01, rtol=0)


# ------------------------------------------------------------------ API


def test_loss_and_arguments():
    model = DDPM(MLP(64, hidden=16, time_dim=8), (1, 8, 8), T=20, prediction="v")
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    loss = model.loss(x)
    assert loss.ndim == 0 and loss.requires_grad
    with pytest.raises(ValueError):
        model.loss(torch.randn(4, 64))
    with pytest.raises(ValueError):
        model.sample(2, steps=21)
    with pytest.raises(ValueError):
        DDPM(MLP(2, hidden=8, time_dim=8), schedule="quadratic")
    with pytest.raises(ValueError):
        DDPM(MLP(2, hidden=8, time_dim=8), prediction="score")
    with pytest.raises(TypeError):
        DDPM("net")
    with pytest.raises(ValueError):
        alpha_bars(torch.tensor([0.5, 1.5]))
    assert model.sample(3, generator=gen(0)).shape == (3, 1, 8, 8)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_predictions_agree_for_exact_targets(prediction):
    """[eq-ddpm-conversions] A network that outputs the exact target for each
    parameterization yields the same (eps_hat, x0_hat) through predict()."""
    g = gen(13)
    x0 = torch.randn(6, 2, generator=g, dtype=F64)
    eps = torch.randn(6, 2, generator=g, dtype=F64)
    model = DDPM(nn.Identity(), (2,), T=50, prediction=prediction)
    t = torch.randint(1, 51, (6,), generator=g)
    ab = model.alpha_bar[t][:, None]
    target = {"eps": eps, "x0": x0, "v": v_from_eps(x0, eps, ab)}[prediction]

    class Oracle(nn.Module):
        def forward(self, x, tt):
            return target

    model.net = Oracle()
    e, x = model.predict(q_sample(x0, ab, eps), t)
    torch.testing.assert_close(e, eps)
    torch.testing.assert_close(x, x0)


# ------------------------------------------------------------------ exercises


@pytest.mark.parametrize("name", ["ddpm_posterior", "ddpm_v_conversions"])
def test_checkers_accept_reference_and_reject_wrong(name):
    ref, wrong = ex.REFERENCES[name], ex.WRONG[name]
    assert check(name, ref).passed
    assert not check(name, wrong).passed
