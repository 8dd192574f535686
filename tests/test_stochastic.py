"""Tests of gmbook.stochastic, the claims of Appendix B (book/appendix/stochastic_calculus.md).

Closed forms are checked exactly where they are exact (a pathwise identity, a transition
density against a Fokker-Planck solve); Monte Carlo claims with tolerances of a few standard
errors, far below the error a wrong constant would make (the Ito-Stratonovich gap is t/2,
not t; the OU variance has 1/(2 theta); strong order 1/2 is not 1).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from gmbook.mcmc import langevin_step
from gmbook.samplers import Prediction, euler_maruyama
from gmbook.stochastic import (
    OUPath,
    brownian_motion,
    em_step,
    fokker_planck_1d,
    gbm_exact,
    girsanov_kl,
    integrate_sde,
    ito_sum,
    milstein_step,
    ou_transition,
    quadratic_variation,
    random_walk,
    stratonovich_sum,
)

F64 = torch.float64


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _slope(hs: list[float], errs: list[float]) -> float:
    """Least-squares slope of log(err) against log(h)."""
    lx, ly = torch.tensor(hs, dtype=F64).log(), torch.tensor(errs, dtype=F64).log()
    lx = lx - lx.mean()
    return float((lx * (ly - ly.mean())).sum() / (lx * lx).sum())


def _coarsen(dw: Tensor, factor: int) -> Tensor:
    """Sum consecutive blocks of ``factor`` fine increments ``(K, B, *D)``."""
    return dw.reshape(dw.shape[0] // factor, factor, *dw.shape[1:]).sum(1)


# --------------------------------------------------------------------------- Brownian motion


def test_brownian_increments_are_independent_gaussians():
    """[eq-sc-bm-increments] W_0 = 0, increments of variance h, uncorrelated over disjoint
    steps, and Var W_t = t."""
    t, w = brownian_motion(20_000, 8, t_max=2.0, generator=_gen())
    assert torch.equal(w[:, 0], torch.zeros(20_000, dtype=F64))
    dw = w.diff(dim=1)
    se = math.sqrt(2 / 20_000) * 0.25  # sd of a sample variance, h = 0.25
    torch.testing.assert_close(dw.var(0), torch.full((8,), 0.25, dtype=F64), atol=4 * se,
                               rtol=0)
    corr = torch.corrcoef(dw.T)
    off = corr - torch.eye(8, dtype=F64)
    assert off.abs().max() < 4 / math.sqrt(20_000)
    assert abs(w[:, -1].var().item() - 2.0) < 4 * 2.0 * math.sqrt(2 / 20_000)
    torch.testing.assert_close(t, torch.linspace(0, 2, 9, dtype=F64))


def test_random_walk_tends_to_brownian_motion():
    """[eq-sc-random-walk] The scaled walk has steps +-sqrt(h) and Var S_t = t; at K = 400
    steps its kurtosis is close to the Gaussian 3 (a single step has kurtosis 1)."""
    t, s = random_walk(20_000, 400, t_max=1.0, generator=_gen(1))
    steps = s.diff(dim=1).abs()
    torch.testing.assert_close(steps, torch.full_like(steps, math.sqrt(1 / 400)))
    end = s[:, -1]
    assert abs(end.var().item() - 1.0) < 4 * math.sqrt(2 / 20_000)
    kurt = (end**4).mean() / end.var() ** 2
    assert abs(kurt.item() - 3.0) < 0.15


def test_quadratic_variation_tends_to_t():
    """[eq-sc-qv] The sum of squared increments has mean t and variance 2 t^2 / K: it tends
    to t in mean square (thm-sc-qv), while the sum of |increments| grows like sqrt(K)."""
    for k in (10, 100, 1000):
        _, w = brownian_motion(4000, k, t_max=1.5, generator=_gen(k))
        qv = quadratic_variation(w)
        assert abs(qv.mean().item() - 1.5) < 4 * math.sqrt(2 * 1.5**2 / k / 4000)
        ratio = qv.var().item() / (2 * 1.5**2 / k)
        assert 0.85 < ratio < 1.15, ratio
        total = w.diff(dim=1).abs().sum(1).mean().item()
        assert abs(total / math.sqrt(k * 1.5 * 2 / math.pi) - 1) < 0.02


# --------------------------------------------------------------------------- Ito integrals


def test_ito_and_stratonovich_differ_by_half_t():
    """[eq-sc-ito-strat-gap] For int W dW the left-point sums tend to (W_T^2 - T) / 2 and
    the endpoint-average sums to W_T^2 / 2: the gap is T / 2 (half the quadratic
    variation), not 0 and not T."""
    t_max = 2.0
    _, w = brownian_motion(4000, 2000, t_max=t_max, generator=_gen(2))
    ito, strat = ito_sum(w, w), stratonovich_sum(w, w)
    end = w[:, -1]
    torch.testing.assert_close(strat, end**2 / 2)  # exact: the sum telescopes
    assert (ito - (end**2 - t_max) / 2).abs().max() < 0.2  # (QV - T)/2, sd 0.032
    gap = strat - ito
    assert abs(gap.mean().item() - t_max / 2) < 0.01
    assert abs(ito.mean().item()) < 4 * ito.std().item() / math.sqrt(4000)


def test_ito_isometry():
    """[eq-sc-ito-isometry] E[(int_0^T W dW)^2] = int_0^T E[W_t^2] dt = T^2 / 2; the
    Stratonovich sum has second moment T^2 / 2 + T^2 / 4 (its mean is T / 2)."""
    t_max = 1.0
    _, w = brownian_motion(20_000, 500, t_max=t_max, generator=_gen(3))
    sq = ito_sum(w, w) ** 2
    se = sq.std().item() / math.sqrt(20_000)
    assert abs(sq.mean().item() - t_max**2 / 2) < 4 * se + 2e-3
    sq_s = stratonovich_sum(w, w) ** 2
    assert abs(sq_s.mean().item() - 0.75 * t_max**2) < 4 * sq_s.std().item() / 141 + 2e-3


# --------------------------------------------------------------------------- exact solutions


def test_ou_transition_matches_simulation():
    """[eq-sc-ou-transition] Fine Euler-Maruyama paths of dx = theta (mu - x) dt + sigma dW
    have the mean mu + (x0 - mu) e^{-theta t} and the variance sigma^2 (1 - e^{-2 theta t}) /
    (2 theta); a variance without the 1/(2 theta) or with e^{-theta t} is far off."""
    theta, sigma, mu, x0 = 2.0, 0.8, 0.5, 2.0
    grid = torch.linspace(0, 0.7, 701, dtype=F64)
    out = integrate_sde(lambda x, t: theta * (mu - x), lambda x, t: sigma + 0 * x,
                        torch.full((40_000, 1), x0, dtype=F64), grid, generator=_gen(4))
    mean, var = ou_transition(torch.tensor(x0, dtype=F64), 0.7, theta, sigma, mu)
    se_var = var.item() * math.sqrt(2 / 40_000)
    assert abs(out.samples.mean().item() - mean.item()) < 4 * math.sqrt(var.item() / 40_000)
    assert abs(out.samples.var().item() - var.item()) < 4 * se_var + 2e-3
    wrong = sigma**2 / (2 * theta) * (1 - math.exp(-theta * 0.7))
    assert abs(wrong - var.item()) > 20 * se_var
    # t -> infinity: the stationary N(mu, sigma^2 / (2 theta)); t = 0: the point mass
    m_inf, v_inf = ou_transition(torch.tensor([x0], dtype=F64), 50.0, theta, sigma, mu)
    torch.testing.assert_close(m_inf, torch.tensor([mu], dtype=F64))
    torch.testing.assert_close(v_inf, torch.tensor([sigma**2 / (2 * theta)], dtype=F64))
    assert ou_transition(torch.tensor([x0], dtype=F64), 0.0, theta, sigma)[1].item() == 0


def test_oupath_is_the_ou_transition():
    """[eq-sc-ou-transition] OUPath's alpha_t, sigma_t are the OU transition with mu = 0,
    sigma^2 = 2 theta; its forward SDE (diffusion2) has g^2 = 2 theta at every t; its
    derivatives agree with finite differences."""
    path = OUPath(theta=1.5, t_max=4.0)
    t = torch.tensor([0.05, 0.3, 1.0, 3.0], dtype=F64)
    mean, var = ou_transition(torch.ones(4, dtype=F64), t, 1.5, math.sqrt(3.0))
    torch.testing.assert_close(path.alpha(t), mean)
    torch.testing.assert_close(path.sigma(t) ** 2, var)
    torch.testing.assert_close(path.diffusion2(t), torch.full_like(t, 3.0))
    eps = 1e-6
    torch.testing.assert_close(path.d_sigma(t), (path.sigma(t + eps) - path.sigma(t - eps))
                               / (2 * eps), rtol=1e-6, atol=1e-8)


def test_gbm_exact_solves_the_sde():
    """[eq-sc-gbm-solution] Milstein paths on a fine grid converge pathwise to
    x0 exp((mu - sigma^2/2) t + sigma W_t), driven by the same Brownian path, and
    E x_T = x0 e^{mu T} (the -sigma^2/2 is the Ito correction)."""
    mu, sigma, x0 = 0.3, 0.6, 1.2
    times, w = brownian_motion(5000, 2000, generator=_gen(5))
    exact = gbm_exact(x0, w, times, mu, sigma)
    dw = w.diff(dim=1).T[..., None]  # (K, B, 1)
    out = integrate_sde(lambda x, t: mu * x, lambda x, t: sigma * x,
                        torch.full((5000, 1), x0, dtype=F64), times, scheme="milstein",
                        dg=lambda x, t: sigma + 0 * x, increments=dw)
    assert (out.samples[:, 0] - exact[:, -1]).abs().mean() < 2e-3
    end = exact[:, -1]
    assert abs(end.mean().item() - x0 * math.exp(mu)) < 4 * end.std().item() / math.sqrt(5000)


# --------------------------------------------------------------------------- orders


def _gbm_strong_errors(scheme: str) -> tuple[list[float], list[float]]:
    mu, sigma = 0.5, 1.0
    times, w = brownian_motion(4000, 1024, generator=_gen(6))
    exact = gbm_exact(1.0, w, times, mu, sigma)[:, -1]
    dw = w.diff(dim=1).T[..., None]
    hs, errs = [], []
    for m in (64, 32, 16, 8):  # coarse steps of 1/16 ... 1/128
        grid = times[::m]
        out = integrate_sde(lambda x, t: mu * x, lambda x, t: sigma * x,
                            torch.ones(4000, 1, dtype=F64), grid, scheme=scheme,
                            dg=lambda x, t: sigma + 0 * x, increments=_coarsen(dw, m))
        hs.append(m / 1024)
        errs.append((out.samples[:, 0] - exact).abs().mean().item())
    return hs, errs


def test_em_strong_order_half_on_gbm():
    """[thm-sc-em-orders] With multiplicative noise (GBM), the strong error E|x_T^h - x_T|
    of Euler-Maruyama falls like h^{1/2}: the measured slope is within 0.15 of 1/2."""
    slope = _slope(*_gbm_strong_errors("em"))
    assert abs(slope - 0.5) < 0.15, slope


def test_milstein_strong_order_one_on_gbm():
    """[eq-sc-milstein] The Milstein correction raises the strong order on GBM to 1: the
    measured slope is within 0.15 of 1."""
    slope = _slope(*_gbm_strong_errors("milstein"))
    assert abs(slope - 1.0) < 0.15, slope


def test_additive_noise_em_is_milstein_with_strong_order_one():
    """[eq-sc-milstein] With additive noise (OU) the Milstein term vanishes: both schemes
    give identical paths, and the strong error against a 1024-step reference falls like h."""
    theta, sigma = 1.0, 1.0
    f, g = (lambda x, t: -theta * x), (lambda x, t: sigma + 0 * x)
    x = torch.full((3, 1), 0.7, dtype=F64)
    dw = 0.1 * torch.randn(3, 1, dtype=F64)
    torch.testing.assert_close(em_step(f, g, x, 0.0, 0.01, dw),
                               milstein_step(f, g, lambda x, t: 0 * x, x, 0.0, 0.01, dw))
    times, w = brownian_motion(2000, 1024, generator=_gen(7))
    dw = w.diff(dim=1).T[..., None]
    x0 = torch.full((2000, 1), 1.0, dtype=F64)
    ref = integrate_sde(f, g, x0, times, increments=dw).samples
    hs, errs = [], []
    for m in (128, 64, 32, 16):
        out = integrate_sde(f, g, x0, times[::m], increments=_coarsen(dw, m))
        hs.append(m / 1024)
        errs.append((out.samples - ref).abs().mean().item())
    assert abs(_slope(hs, errs) - 1.0) < 0.15


def test_em_weak_order_one_on_ou():
    """[thm-sc-em-orders] The weak error |E x_T^h - E x_T| of Euler-Maruyama on OU falls like
    h: the slope is within 0.15 of 1 (standard errors are far below the errors)."""
    theta, sigma, x0, n = 1.0, 1.0, 3.0, 200_000
    exact, _ = ou_transition(torch.tensor(x0, dtype=F64), 1.0, theta, sigma)
    hs, errs = [], []
    for k in (4, 8, 16, 32):
        grid = torch.linspace(0, 1, k + 1, dtype=F64)
        out = integrate_sde(lambda x, t: -theta * x, lambda x, t: sigma + 0 * x,
                            torch.full((n, 1), x0, dtype=F64), grid, generator=_gen(k))
        err = abs(out.samples.mean().item() - exact.item())
        assert err > 5 * out.samples.std().item() / math.sqrt(n)  # a bias, not noise
        hs.append(1 / k)
        errs.append(err)
    assert abs(_slope(hs, errs) - 1.0) < 0.15


# --------------------------------------------------------------------------- Fokker-Planck


def test_fokker_planck_solves_ou_exactly():
    """[eq-sc-fp] The Fokker-Planck solver started from a narrow Gaussian matches the exact
    OU density (the transition of eq-sc-ou-transition convolved with the start) to 1e-3, and
    conserves mass to rounding; a wrong diffusion constant misses by far more."""
    theta, sigma = 1.0, 1.2
    x = torch.linspace(-6, 6, 481, dtype=F64)
    s0 = 0.1
    p0 = torch.exp(-0.5 * (x - 2) ** 2 / s0**2)
    ts = torch.tensor([0.2, 1.0, 4.0], dtype=F64)
    ps = fokker_planck_1d(lambda y: -theta * y, sigma**2, p0, x, ts)
    dx = (x[1] - x[0]).item()
    for p, t in zip(ps, ts.tolist()):
        m, v = ou_transition(torch.tensor(2.0, dtype=F64), t, theta, sigma)
        v = v + s0**2 * math.exp(-2 * theta * t)
        exact = torch.exp(-0.5 * (x - m) ** 2 / v) / torch.sqrt(2 * math.pi * v)
        assert (p - exact).abs().max() < 1e-3
        assert abs(p.sum().item() * dx - 1) < 1e-10
        assert p.min() > -1e-12
    wrong = fokker_planck_1d(lambda y: -theta * y, 2 * sigma**2, p0, x, ts[1:2])[0]
    m, v = ou_transition(torch.tensor(2.0, dtype=F64), 1.0, theta, sigma)
    v = v + s0**2 * math.exp(-2.0)
    exact = torch.exp(-0.5 * (x - m) ** 2 / v) / torch.sqrt(2 * math.pi * v)
    assert (wrong - exact).abs().max() > 0.05


def test_fokker_planck_stationary_is_boltzmann():
    """[eq-sc-stationary] For Langevin dynamics dx = -U'(x) dt + sqrt(2) dW in the double
    well U = (x^2 - 1)^2, the solution at a long time is the Boltzmann density e^{-U} / Z,
    with an error that falls like dx^2."""
    errs = []
    for n in (121, 241):
        x = torch.linspace(-3, 3, n, dtype=F64)
        dx = (x[1] - x[0]).item()
        p = fokker_planck_1d(lambda y: -4 * y * (y**2 - 1), 2.0,
                             torch.exp(-0.5 * (x + 1) ** 2 / 0.1), x,
                             torch.tensor([200.0], dtype=F64))[0]
        boltz = torch.exp(-((x**2 - 1) ** 2))
        boltz = boltz / (boltz.sum() * dx)
        errs.append((p - boltz).abs().max().item())
    assert errs[0] < 5e-3
    assert 3.0 < errs[0] / errs[1] < 5.0, errs


def test_euler_maruyama_on_langevin_is_langevin_step():
    """[eq-sc-langevin] One Euler-Maruyama step of dx = grad log p dt + sqrt(2) dW with
    dW = sqrt(h) xi is the sampling chapter's Langevin step x + h grad + sqrt(2h) xi."""
    x = torch.randn(5, 2, dtype=F64)
    h = 0.03
    xi = torch.randn(5, 2, dtype=F64, generator=_gen(9))
    ours = em_step(lambda y, t: -y**3, lambda y, t: math.sqrt(2) + 0 * y, x, 0.0, h,
                   math.sqrt(h) * xi)
    theirs = langevin_step(x, -x**3, h, generator=_gen(9))
    torch.testing.assert_close(ours, theirs)


# --------------------------------------------------------------------------- time reversal


def test_reverse_ou_recovers_a_gaussian():
    """[eq-sc-reverse] Anderson's reverse SDE of OU, run by samplers.euler_maruyama with the
    exact score of the noised N(m, v), maps N(0, 1) at t = 5 back to N(m, v): mean and
    variance within a few standard errors plus the O(h) bias of 1000 steps."""
    path = OUPath(theta=1.0, t_max=5.0)
    m, v, n = 1.5, 0.25, 20_000

    def score(x, t):
        a, s = path.alpha(t[0]).item(), path.sigma(t[0]).item()
        return -(x - a * m) / (a * a * v + s * s)

    x = torch.randn(n, 1, dtype=F64, generator=_gen(10))
    # uniform in log-time near 0, where the score changes fastest
    grid = torch.cat([torch.logspace(math.log10(5.0), -3, 1000, dtype=F64),
                      torch.zeros(1, dtype=F64)])
    out = euler_maruyama(Prediction(score, "score", path), x, grid, generator=_gen(11))
    assert abs(out.samples.mean().item() - m) < 4 * math.sqrt(v / n) + 0.01
    assert abs(out.samples.var().item() / v - 1) < 4 * math.sqrt(2 / n) + 0.03
    # without the score term the reversal is wrong: the forward drift run backwards
    # (eta = 0 keeps the marginals; here we drop the correction instead)
    no_score = Prediction(lambda x, t: 0 * x, "score", path)
    bad = euler_maruyama(no_score, x, grid, generator=_gen(11)).samples
    assert abs(bad.var().item() / v - 1) > 1


# --------------------------------------------------------------------------- Girsanov


def test_girsanov_kl_between_two_ou_processes():
    """[eq-sc-girsanov-kl] For two OU drifts -a x and -b x with the same sigma and start,
    KL(P || Q) = (a - b)^2 / (2 sigma^2) int_0^T E_P[x_t^2] dt; the Monte Carlo mean of
    girsanov_kl on Euler-Maruyama paths of P agrees within 3 standard errors plus the
    O(h) discretisation (a wrong factor 2 would be off by ~ 40 standard errors)."""
    a, b, sigma, x0, t_max = 1.0, 2.0, 0.7, 1.5, 1.0
    grid = torch.linspace(0, t_max, 1001, dtype=F64)
    fp, fq = (lambda x, t: -a * x), (lambda x, t: -b * x)
    g = lambda x, t: sigma + 0 * x  # noqa: E731
    out = integrate_sde(fp, g, torch.full((20_000, 1), x0, dtype=F64), grid,
                        generator=_gen(12), return_path=True)
    kl = girsanov_kl(fp, fq, g, out.states, grid)
    est, se = kl.mean().item(), kl.std().item() / math.sqrt(20_000)
    ts = torch.linspace(0, t_max, 20_001, dtype=F64)
    m, v = ou_transition(torch.tensor(x0, dtype=F64), ts, a, sigma)
    exact = (a - b) ** 2 / (2 * sigma**2) * torch.trapezoid(m**2 + v, ts).item()
    assert abs(est - exact) < 3 * se + 2e-3 * exact, (est, exact, se)
    assert se < 0.03 * exact


# --------------------------------------------------------------------------- arguments


@pytest.mark.parametrize("call, error", [
    (lambda: brownian_motion(0, 10), ValueError),
    (lambda: brownian_motion(2, 10, t_max=-1.0), ValueError),
    (lambda: brownian_motion(2, 10, generator=3), TypeError),
    (lambda: quadratic_variation(torch.zeros(3, 1, dtype=F64)), ValueError),
    (lambda: ito_sum(torch.zeros(2, 3), torch.zeros(2, 4)), ValueError),
    (lambda: ou_transition(torch.zeros(2), 1.0, -1.0, 1.0), ValueError),
    (lambda: ou_transition(torch.zeros(2), -1.0, 1.0, 1.0), ValueError),
    (lambda: integrate_sde(lambda x, t: x, lambda x, t: x, torch.zeros(2, 1),
                           torch.tensor([1.0, 0.0])), ValueError),
    (lambda: integrate_sde(lambda x, t: x, lambda x, t: x, torch.zeros(2, 1),
                           torch.tensor([0.0, 1.0]), scheme="milstein"), ValueError),
    (lambda: em_step(1.0, lambda x, t: x, torch.zeros(2), 0.0, 0.1, torch.zeros(2)),
     TypeError),
    (lambda: em_step(lambda x, t: x, lambda x, t: x, torch.zeros(2), 0.0, 0.1,
                     torch.zeros(3)), ValueError),
    (lambda: fokker_planck_1d(lambda y: y, 1.0, torch.ones(5), torch.rand(5),
                              torch.ones(1)), ValueError),
    (lambda: fokker_planck_1d(lambda y: y, -1.0, torch.ones(5), torch.linspace(0, 1, 5),
                              torch.ones(1)), ValueError),
    (lambda: OUPath(theta=0.0), ValueError),
])
def test_arguments_are_checked(call, error):
    """Public functions reject bad arguments with a clear error."""
    with pytest.raises(error):
        call()


def test_likelihood_bound_holds_and_is_strict_for_a_non_score():
    """[eq-sc-likelihood-bound] With OU forward (theta = 1, T = 5), data N(1.5, 0.25) and a
    model score s = true score + c (not the score of any diffused law), the model's end law
    q_0 (Gaussian: the reverse SDE is linear) satisfies KL(p_0 || q_0) <= KL(p_T || pi) +
    (1/2) int g^2 c^2 dt = KL(p_T || pi) + theta c^2 T, and strictly (by more than half):
    the path KL also counts what the paths carry beyond their end points."""
    from gmbook.probability import gaussian_kl

    path = OUPath(theta=1.0, t_max=5.0)
    m, v, c, n = 1.5, 0.25, 0.3, 40_000

    def score(x, t):
        a, s = path.alpha(t[0]).item(), path.sigma(t[0]).item()
        return -(x - a * m) / (a * a * v + s * s) + c

    x = torch.randn(n, 1, dtype=F64, generator=_gen(20))
    grid = torch.cat([torch.logspace(math.log10(5.0), -3, 800, dtype=F64),
                      torch.zeros(1, dtype=F64)])
    out = euler_maruyama(Prediction(score, "score", path), x, grid, generator=_gen(21))
    q_mean, q_var = out.samples.mean(), out.samples.var()
    one = torch.ones(1, dtype=F64)
    kl = gaussian_kl(m * one, v * one[:, None], q_mean * one, q_var * one[:, None]).item()
    a_t, s2_t = path.alpha(torch.tensor(5.0, dtype=F64)), path.sigma(torch.tensor(5.0)) ** 2
    prior = gaussian_kl(a_t * m * one, (a_t**2 * v + s2_t) * one[:, None], 0 * one,
                        one[:, None]).item()
    bound = prior + 1.0 * c**2 * 5.0
    assert 1e-3 < kl < 0.5 * bound, (kl, bound)
    assert q_mean.item() > m + 0.02  # the constant c pushes the end law up
