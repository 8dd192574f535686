"""Tests of ``gmbook.densities`` and the checkers of ``gmbook.exercises.densities``: the
claims of the chapter "Modeling continuous random variables" (book/foundations/densities.md).

Each test of a claim names its label in square brackets in its docstring. The tolerances
are chosen so that the usual slips fail: a density that forgets a Jacobian term or a factor
of the normalizer does not integrate to 1, an unbiased covariance is off by ``n / (n - 1)``
(far above the 1e-10 asked of the maximum-likelihood tests), a swapped index moves a Monte
Carlo probability by many standard errors. Every random draw uses a seeded
``torch.Generator`` (conftest also seeds the global RNG, which initializes the networks),
so the tests are deterministic. Work that needs precision is in float64.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import Tensor
from torch.distributions import LogNormal, MultivariateNormal

from gmbook import densities
from gmbook.data import TwoMoons
from gmbook.densities import (
    Autoregressive,
    CouplingMap,
    EMResult,
    GaussianKDE,
    GaussianMixture,
    MixtureDensityNetwork,
    MixtureParams,
    dequantize,
    fit_em,
    kmeans_plusplus,
    log_abs_det_autograd,
    log_sum_exp,
    mixture_log_prob,
    mixture_sample,
    pushforward_log_prob,
    select_bandwidth,
)
from gmbook.exercises import CheckResult, available, check
from gmbook.exercises import densities as ex
from gmbook.metrics import bits_per_dim, nll
from gmbook.train import fit

F64 = torch.float64
LOG_2PI = math.log(2 * math.pi)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def std_normal_log_prob(z: Tensor) -> Tensor:
    """log N(z; 0, I) of each row of ``z`` ``(B, D)``."""
    return -0.5 * z.square().sum(1) - 0.5 * z.shape[1] * LOG_2PI


def midpoints(lo: float, hi: float, h: float) -> Tensor:
    """Cell centres of a 1-D grid of spacing ``h`` on ``[lo, hi]`` (float64)."""
    n = round((hi - lo) / h)
    return lo + h * (torch.arange(n, dtype=F64) + 0.5)


def grid_integral(
    log_prob: Callable[[Tensor], Tensor], box: tuple[float, float, float, float], h: float
) -> float:
    """Midpoint rule for the integral of ``exp(log_prob)`` over ``[x0, x1] x [y0, y1]``.

    For the smooth, fast-decaying densities below the rule is accurate far beyond the
    tolerances used (its error decays like ``exp(-2 pi^2 s^2 / h^2)`` for a Gaussian bump of
    width ``s``)."""
    x0, x1, y0, y1 = box
    hx, hy = (x1 - x0) / round((x1 - x0) / h), (y1 - y0) / round((y1 - y0) / h)
    pts = torch.cartesian_prod(midpoints(x0, x1, hx), midpoints(y0, y1, hy))
    with torch.no_grad():
        return float(log_prob(pts).double().exp().sum()) * hx * hy


def mc_box(samples: Tensor, box: tuple[float, float, float, float]) -> tuple[float, float]:
    """Monte Carlo probability of a box and its standard error."""
    x0, x1, y0, y1 = box
    inside = ((samples[:, 0] >= x0) & (samples[:, 0] < x1)
              & (samples[:, 1] >= y0) & (samples[:, 1] < y1))
    p = float(inside.double().mean())
    return p, math.sqrt(max(p * (1 - p), 1e-12) / samples.shape[0])


def biased_cov(x: Tensor) -> Tensor:
    xc = x - x.mean(0)
    return xc.T @ xc / x.shape[0]


def assert_moments(x: Tensor, mean: Tensor, cov: Tensor, k: float = 5.0) -> None:
    """Sample mean and covariance of ``x`` equal ``mean`` and ``cov`` within ``k``
    standard errors (of each entry, estimated from the sample)."""
    n = x.shape[0]
    m = x.mean(0)
    se_m = x.std(0) / math.sqrt(n)
    assert ((m - mean).abs() < k * se_m).all(), (m, mean, se_m)
    xc = x - m
    prod = xc[:, :, None] * xc[:, None, :]  # (n, D, D)
    c = prod.mean(0)
    se_c = prod.std(0) / math.sqrt(n)
    assert ((c - cov).abs() < k * se_c).all(), (c, cov, se_c)


def three_gaussians(dtype: torch.dtype = F64) -> GaussianMixture:
    """A fixed 2-D mixture with correlated, unequal components."""
    w = torch.tensor([0.5, 0.3, 0.2], dtype=dtype)
    mu = torch.tensor([[-2.0, 0.0], [2.0, 1.0], [0.0, 3.0]], dtype=dtype)
    cov = torch.tensor([[[1.0, 0.8], [0.8, 1.0]],
                        [[0.5, -0.2], [-0.2, 0.8]],
                        [[1.5, 0.0], [0.0, 0.3]]], dtype=dtype)
    return GaussianMixture(w, mu, cov)


def moons(n: int, seed: int = 0) -> Tensor:
    return TwoMoons().sample(n, generator=gen(seed), dtype=F64)


# --------------------------------------------------------------------------- log-sum-exp


def test_log_sum_exp_matches_torch_on_random_inputs_along_every_dim():
    """[eq-logsumexp] log_sum_exp equals torch.logsumexp on random inputs, along each dim
    of a 3-D tensor (positive and negative indices), in float64 and float32."""
    a = 4 * torch.randn(3, 5, 7, generator=gen(1), dtype=F64)
    for dim in (0, 1, 2, -1, -2):
        got = log_sum_exp(a, dim=dim)
        want = torch.logsumexp(a, dim=dim)
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=1e-14, atol=1e-14)
    # the default is the last dimension; float32 stays float32
    torch.testing.assert_close(log_sum_exp(a.float()), torch.logsumexp(a.float(), -1))
    assert log_sum_exp(a.float()).dtype == torch.float32
    # and it is what it says: log of the sum of exponentials (small values, no overflow)
    torch.testing.assert_close(log_sum_exp(a, 1), a.exp().sum(1).log(), rtol=1e-13, atol=0)


def test_log_sum_exp_is_stable_for_large_values_and_minus_inf_rows():
    """[eq-logsumexp] No overflow at values of size 1000 (where the naive formula gives inf or
    -inf), -inf for a row of -inf (not NaN), +inf for a row containing +inf."""
    a = torch.tensor([[1000.0, 1000.0], [1000.0, 999.0], [-1000.0, -1001.0],
                      [-math.inf, -math.inf], [-math.inf, 3.0]], dtype=F64)
    got = log_sum_exp(a)
    want = torch.tensor([1000 + math.log(2), 1000 + math.log1p(math.exp(-1)),
                         -1000 + math.log1p(math.exp(-1)), -math.inf, 3.0], dtype=F64)
    torch.testing.assert_close(got, want, rtol=1e-15, atol=0)
    torch.testing.assert_close(got, torch.logsumexp(a, 1), rtol=1e-15, atol=0)
    assert not got.isnan().any()
    naive = a.exp().sum(1).log()  # what the test guards against
    assert naive[0].isinf() and naive[2].isinf()
    # float32 overflows at exp(89) already
    b = torch.tensor([[100.0, 90.0, 80.0]])
    torch.testing.assert_close(log_sum_exp(b), torch.logsumexp(b, 1))
    assert torch.isfinite(log_sum_exp(b)).all()
    # all -inf along dim 0 of a 2-D tensor, and a +inf entry
    c = torch.tensor([[-math.inf, 0.0], [-math.inf, math.inf]], dtype=F64)
    assert log_sum_exp(c, 0).tolist() == [-math.inf, math.inf]


# --------------------------------------------------------------------------- mixtures


def hand_mixture_log_prob(x: Tensor, w: Tensor, mu: Tensor, cov: Tensor) -> Tensor:
    """log sum_k w_k N(x; mu_k, cov_k), written out (densities, not log-densities: only for
    points where nothing underflows)."""
    d = x.shape[1]
    total = torch.zeros(x.shape[0], dtype=x.dtype)
    for k in range(w.shape[0]):
        diff = x - mu[k]
        maha = (diff * torch.linalg.solve(cov[k], diff.T).T).sum(1)
        log_n = -0.5 * (d * LOG_2PI + torch.logdet(cov[k]) + maha)
        total = total + w[k] * log_n.exp()
    return total.log()


def test_gaussian_log_density_formula():
    """[eq-gaussian-logpdf] -(1/2)(x - mu)^T S^-1 (x - mu) - (1/2) log det S - (D/2) log 2 pi
    is torch's MultivariateNormal log_prob and a one-component GaussianMixture's, and its
    exponential integrates to 1 on a 2-D grid."""
    mu = torch.tensor([0.5, -1.0], dtype=F64)
    cov = torch.tensor([[1.0, 0.6], [0.6, 0.5]], dtype=F64)

    def formula(x: Tensor) -> Tensor:
        diff = x - mu
        maha = (diff * torch.linalg.solve(cov, diff.T).T).sum(1)
        return -0.5 * maha - 0.5 * torch.logdet(cov) - LOG_2PI

    x = 2 * torch.randn(30, 2, generator=gen(46), dtype=F64)
    torch.testing.assert_close(formula(x), MultivariateNormal(mu, cov).log_prob(x), rtol=1e-13,
                               atol=1e-13)
    one = GaussianMixture(torch.ones(1, dtype=F64), mu[None], cov[None])
    torch.testing.assert_close(one.log_prob(x), formula(x), rtol=1e-13, atol=1e-13)
    assert grid_integral(formula, (-7.5, 8.5, -8.0, 6.0), 0.05) == pytest.approx(1.0, abs=1e-9)


def test_gmm_log_prob_matches_mixture_same_family_and_hand_formula():
    """[eq-gmm] log_prob equals MixtureSameFamily's and the written-out sum of weighted
    Gaussian densities; the parameters round-trip (weights normalized)."""
    w = torch.tensor([2.0, 1.2, 0.8], dtype=F64)  # not normalized on purpose
    mu = torch.tensor([[-2.0, 0.0], [2.0, 1.0], [0.0, 3.0]], dtype=F64)
    cov = three_gaussians().covariances.detach()
    gm = GaussianMixture(w, mu, cov)
    torch.testing.assert_close(gm.weights, w / w.sum(), rtol=1e-14, atol=0)
    torch.testing.assert_close(gm.means, mu, rtol=0, atol=0)
    torch.testing.assert_close(gm.covariances, cov, rtol=1e-14, atol=1e-15)
    x = 2 * torch.randn(50, 2, generator=gen(2), dtype=F64)
    lp = gm.log_prob(x)
    assert lp.shape == (50,) and lp.dtype == F64
    torch.testing.assert_close(lp, gm.distribution().log_prob(x), rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(lp, hand_mixture_log_prob(x, w / w.sum(), mu, cov),
                               rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gm.loss(x), -lp.mean())
    # far from every component the densities underflow but the log-density does not
    far = torch.tensor([[300.0, -400.0]], dtype=F64)
    assert torch.isfinite(gm.log_prob(far)).all()
    assert hand_mixture_log_prob(far, w / w.sum(), mu, cov).isinf().all()
    torch.testing.assert_close(gm.log_prob(far), gm.distribution().log_prob(far))


def test_gmm_responsibilities_are_posterior_component_probabilities():
    """[eq-gmm] [eq-em-e-step] responsibilities r_ik = pi_k N(x_i; mu_k, S_k) / p(x_i): rows
    sum to 1 and match Bayes' rule computed by hand."""
    gm = three_gaussians()
    x = 2 * torch.randn(40, 2, generator=gen(3), dtype=F64)
    r = gm.responsibilities(x)
    assert r.shape == (40, 3)
    torch.testing.assert_close(r.sum(1), torch.ones(40, dtype=F64), rtol=0, atol=1e-14)
    w, mu, cov = gm.weights.detach(), gm.means.detach(), gm.covariances.detach()
    joint = torch.stack([w[k] * MultivariateNormal(mu[k], cov[k]).log_prob(x).exp()
                         for k in range(3)], dim=1)
    torch.testing.assert_close(r, joint / joint.sum(1, keepdim=True), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(gm.joint_log_prob(x), joint.log(), rtol=1e-12, atol=1e-12)


def test_gmm_sample_has_the_mixture_mean_and_covariance():
    """[eq-gmm] 200k draws of sample() have the mixture's mean sum_k pi_k mu_k and covariance
    sum_k pi_k (S_k + mu_k mu_k^T) - m m^T within 5 standard errors (a sampler using L^T
    instead of the Cholesky factor L, or Sigma for L, fails)."""
    gm = three_gaussians()
    x = gm.sample(200_000, generator=gen(4))
    assert x.shape == (200_000, 2) and x.dtype == F64
    w, mu, cov = gm.weights.detach(), gm.means.detach(), gm.covariances.detach()
    mean = (w[:, None] * mu).sum(0)
    second = (w[:, None, None] * (cov + mu[:, :, None] * mu[:, None, :])).sum(0)
    assert_moments(x, mean, second - torch.outer(mean, mean))
    # reproducible with the generator
    assert torch.equal(gm.sample(5, generator=gen(9)), gm.sample(5, generator=gen(9)))


def test_gmm_gradient_descent_decreases_the_loss():
    """[eq-gmm] The unconstrained parameters train by gradient descent (gmbook.train.fit):
    the mean NLL on two moons falls and every parameter receives a finite gradient."""
    x = moons(2000)
    gm = GaussianMixture.initialize(x, 6, generator=gen(5))
    gm.loss(x).backward()
    for name, p in gm.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    gm.zero_grad()
    before = gm.loss(x).item()
    hist = fit(gm, x, steps=150, lr=0.05, batch_size=500, seed=0, progress=False)
    after = gm.loss(x).item()
    assert len(hist.losses) == 150
    assert after < before - 0.3, (before, after)
    # still a valid mixture: weights on the simplex, covariances symmetric positive definite
    torch.testing.assert_close(gm.weights.sum(), torch.tensor(1.0, dtype=F64))
    assert (torch.linalg.eigvalsh(gm.covariances) > 0).all()


def test_initialize_seeds_with_kmeans_plusplus():
    """GaussianMixture.initialize: K distinct data points as means (k-means++), equal
    weights, every covariance the biased data covariance (+1e-6 I) over K^(2/D)."""
    x = moons(300)
    k = 5
    seeds = kmeans_plusplus(x, k, generator=gen(6))
    assert seeds.shape == (k, 2)
    assert all(bool((x == s).all(1).any()) for s in seeds)
    assert torch.unique(seeds, dim=0).shape[0] == k
    gm = GaussianMixture.initialize(x, k, generator=gen(6))
    torch.testing.assert_close(gm.means.detach(), seeds, rtol=0, atol=0)
    torch.testing.assert_close(gm.weights, torch.full((k,), 1 / k, dtype=F64))
    want = (biased_cov(x) + 1e-6 * torch.eye(2, dtype=F64)) / k ** (2 / 2)
    torch.testing.assert_close(gm.covariances, want.expand(k, 2, 2), rtol=1e-12, atol=1e-14)
    # in D = 3 the divisor is K^(2/3), not K
    x3 = _mixture_3d(200, 1)
    gm3 = GaussianMixture.initialize(x3, 8, generator=gen(6))
    want3 = (biased_cov(x3) + 1e-6 * torch.eye(3, dtype=F64)) / 4.0
    torch.testing.assert_close(gm3.covariances, want3.expand(8, 3, 3), rtol=1e-12, atol=1e-14)
    # fewer distinct points than seeds: still k seeds, all data points
    few = torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=F64).repeat(4, 1)
    s = kmeans_plusplus(few, 6, generator=gen(0))
    assert s.shape == (6, 2) and all(bool((few == r).all(1).any()) for r in s)


def test_kmeans_plusplus_draws_seeds_with_probability_proportional_to_squared_distance():
    """k-means++ on three collinear points a = 0, b = 1, c = 3 with k = 2: the first seed is
    uniform, the second has probability d^2 / sum d^2, so P({a, c}) = (1/3)(9/10) +
    (1/3)(9/13) = 0.531 (proportional to d instead of d^2 would give 0.45); 2000 runs,
    4.5 standard errors."""
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]], dtype=F64)
    g = gen(45)
    runs = 2000
    firsts, pairs_ac = torch.zeros(3), 0
    for _ in range(runs):
        s = kmeans_plusplus(x, 2, generator=g)[:, 0].tolist()
        firsts[[0.0, 1.0, 3.0].index(s[0])] += 1
        pairs_ac += sorted(s) == [0.0, 3.0]
    p = 0.9 / 3 + (9 / 13) / 3
    assert abs(pairs_ac / runs - p) < 4.5 * math.sqrt(p * (1 - p) / runs)
    assert ((firsts / runs - 1 / 3).abs() < 4.5 * math.sqrt(2 / 9 / runs)).all()


# --------------------------------------------------------------------------- EM


def _mixture_3d(n: int, seed: int) -> Tensor:
    g = gen(seed)
    centres = torch.tensor([[0.0, 0.0, 0.0], [2.5, 0.0, 1.0], [0.0, 3.0, -1.0]], dtype=F64)
    k = torch.randint(3, (n,), generator=g)
    a = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.7, 0.0], [-0.3, 0.2, 0.6]], dtype=F64)
    return centres[k] + torch.randn(n, 3, generator=g, dtype=F64) @ a.T


def _two_blobs(n: int, seed: int) -> Tensor:
    g = gen(seed)
    k = torch.randint(2, (n,), generator=g)
    return torch.tensor([[-2.0, 0.0], [2.0, 0.5]], dtype=F64)[k] + torch.randn(
        n, 2, generator=g, dtype=F64)


EM_DATA = {
    "two-moons-K6": (lambda: moons(1000, 7), 6),
    "3d-mixture-K3": (lambda: _mixture_3d(1500, 8), 3),
    "two-blobs-K8": (lambda: _two_blobs(800, 9), 8),  # more components than needed
}


@pytest.mark.parametrize("case", list(EM_DATA))
def test_em_never_decreases_the_log_likelihood(case):
    """[thm-em-monotone] Without a covariance floor (reg=0), the mean log-likelihood after
    each EM iteration is at least the one before (up to 1e-9 relative rounding), and it
    improves overall, on two moons, a 3-D mixture and with more components than needed."""
    make, k = EM_DATA[case]
    x = make()
    res = fit_em(x, k, reg=0.0, tol=0, iterations=60, generator=gen(10))
    assert isinstance(res, EMResult)
    ll = torch.tensor(res.log_likelihood, dtype=F64)
    assert res.iterations == len(ll) - 1 >= 20
    assert torch.isfinite(ll).all()
    steps = ll[1:] - ll[:-1]
    scale = max(1.0, float(ll.abs().max()))
    assert float(steps.min()) >= -1e-9 * scale, (case, steps.min())
    assert float(ll[-1] - ll[0]) > 0.05, (case, ll[0], ll[-1])


def test_em_history_is_the_log_likelihood_after_t_iterations():
    """[thm-em-monotone] log_likelihood[t] is the mean log-likelihood of the parameters after
    t iterations: a run stopped after t iterations starts with the same history and its
    model's log_prob has that mean."""
    x = moons(600, 11)
    full = fit_em(x, 4, reg=0.0, tol=0, iterations=12, generator=gen(12))
    assert full.iterations == 12 and not full.converged
    for t in (0, 1, 5, 12):
        part = fit_em(x, 4, reg=0.0, tol=0, iterations=t, generator=gen(12))
        assert part.log_likelihood == pytest.approx(full.log_likelihood[: t + 1], rel=1e-14)
        got = part.model.log_prob(x).mean().item()
        assert got == pytest.approx(full.log_likelihood[t], rel=1e-12)


def _phi(t: Tensor) -> Tensor:
    """log(1 + t) - t / (1 + t) >= 0: the loss of one eigen-direction's Q-term when the
    covariance S is replaced by S + reg I, with t = reg / eigenvalue."""
    return torch.log1p(t) - t / (1 + t)


def test_em_with_a_covariance_floor_can_decrease_the_likelihood_by_a_bounded_amount():
    """[thm-em-monotone] With reg > 0 the monotonicity does NOT hold exactly. Observed and
    proved here: (a) one component started at the MLE (mean, S): one step moves to
    (mean, S + reg I) and the mean log-likelihood drops by exactly
    (1/2) sum_i phi(reg / lambda_i), phi(t) = log(1 + t) - t / (1 + t), over the eigenvalues
    lambda_i of S, then stays constant; (b) on two moons, each step may lose at most the
    amount by which the floor lowers the M-step's objective,
    (1/n) sum_k N_k / 2 sum_i phi(reg / lambda_ki) with lambda_ki the eigenvalues of the
    M-step covariance before the floor (the EM inequality: l(new) - l(old) >= Q(new) -
    Q(M-step optimum)). Small reg (1e-6, the default) changes nothing visible."""
    reg = 0.2
    # (a) one Gaussian, started at its MLE
    x = _mixture_3d(500, 13)
    mean, s = x.mean(0), biased_cov(x)
    mle = GaussianMixture(torch.ones(1, dtype=F64), mean[None], s[None])
    res = fit_em(x, mle, reg=reg, tol=0, iterations=3)
    ll = res.log_likelihood
    drop = 0.5 * float(_phi(reg / torch.linalg.eigvalsh(s)).sum())
    assert ll[0] - ll[1] == pytest.approx(drop, rel=1e-9) and drop > 1e-3
    assert len(ll) >= 3 and all(v == pytest.approx(ll[1], rel=1e-12) for v in ll[2:])
    torch.testing.assert_close(res.model.covariances[0], s + reg * torch.eye(3, dtype=F64))
    # (b) one EM step at a time on two moons; check the bound at every step
    x = moons(1000, 14)
    n = x.shape[0]
    model = GaussianMixture.initialize(x, 3, generator=gen(15))
    worst = math.inf
    for _ in range(25):
        step = fit_em(x, model, reg=reg, tol=0, iterations=1)
        model = step.model
        before, after = step.log_likelihood
        s_k = model.covariances.detach() - reg * torch.eye(2, dtype=F64)  # before the floor
        nk = model.weights.detach() * n
        bound = float((nk / 2 * _phi(reg / torch.linalg.eigvalsh(s_k)).sum(1)).sum()) / n
        assert after - before >= -bound - 1e-12
        worst = min(worst, after - before)
    assert worst > -0.1  # bounded: the floor costs little on this data
    # (c) the default floor: monotone to rounding
    res = fit_em(moons(1000, 14), 6, tol=0, iterations=40, generator=gen(16))
    steps = torch.diff(torch.tensor(res.log_likelihood, dtype=F64))
    assert float(steps.min()) > -1e-9


def test_em_one_iteration_is_the_e_step_and_m_step():
    """[eq-em-e-step] [eq-em-m-step] One iteration from a given mixture: weights N_k / n,
    means sum_i r_ik x_i / N_k and covariances sum_i r_ik (x_i - mu_k)(x_i - mu_k)^T / N_k
    around the NEW means (divided by N_k, not N_k - 1), with r the responsibilities of the
    starting mixture. The starting mixture is not modified."""
    x = moons(500, 17)
    start = three_gaussians()
    before = [p.detach().clone() for p in start.parameters()]
    res = fit_em(x, start, iterations=1, tol=0, reg=0.0)
    r = start.responsibilities(x).detach()
    nk = r.sum(0)
    mu = (r.T @ x) / nk[:, None]
    cov = torch.stack([(r[:, k, None] * (x - mu[k])).T @ (x - mu[k]) / nk[k] for k in range(3)])
    m = res.model
    torch.testing.assert_close(m.weights, nk / 500, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(m.means.detach(), mu, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(m.covariances.detach(), cov, rtol=1e-11, atol=1e-13)
    assert res.log_likelihood[0] == pytest.approx(start.log_prob(x).mean().item(), rel=1e-13)
    assert res.log_likelihood[1] == pytest.approx(m.log_prob(x).mean().item(), rel=1e-12)
    assert all(torch.equal(a, b) for a, b in zip(before, start.parameters()))
    # the exercise's 1-D reference is the same iteration
    x1 = x[:, :1]
    w0, mu0, var0 = (torch.tensor([0.3, 0.7], dtype=F64), torch.tensor([-1.0, 1.0], dtype=F64),
                     torch.tensor([0.5, 2.0], dtype=F64))
    one = fit_em(x1, GaussianMixture(w0, mu0[:, None], var0[:, None, None]), iterations=1,
                 tol=0, reg=0.0).model
    w1, mu1, var1 = ex._em_step_1d(x1[:, 0], w0, mu0, var0)
    torch.testing.assert_close(one.weights, w1, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(one.means.detach()[:, 0], mu1, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(one.covariances.detach()[:, 0, 0], var1, rtol=1e-12, atol=1e-14)


def test_em_with_one_component_is_the_gaussian_mle():
    """[prop-gaussian-mle] fit_em(x, 1, reg=0) gives the sample mean and the BIASED
    covariance (divide by n) to 1e-10 in float64, which differs from the unbiased one."""
    x = _mixture_3d(400, 18)
    res = fit_em(x, 1, reg=0.0, tol=0, iterations=3)
    m = res.model
    torch.testing.assert_close(m.weights, torch.ones(1, dtype=F64))
    torch.testing.assert_close(m.means.detach()[0], x.mean(0), rtol=0, atol=1e-10)
    torch.testing.assert_close(m.covariances.detach()[0], torch.cov(x.T, correction=0),
                               rtol=0, atol=1e-10)
    unbiased = torch.cov(x.T)
    assert float((m.covariances.detach()[0] - unbiased).abs().max()) > 1e-3
    # converged after one iteration: the log-likelihood is then constant
    assert res.log_likelihood[1] == pytest.approx(res.log_likelihood[3], rel=1e-14)


def test_gaussian_mle_is_a_stationary_point_of_the_likelihood():
    """[prop-gaussian-mle] The gradient of the mean log-likelihood of a Gaussian w.r.t. mean
    and covariance vanishes at (sample mean, biased covariance), not at the unbiased
    covariance nor at a shifted mean."""
    x = _mixture_3d(50, 19)  # small n: n / (n - 1) = 1.02

    def grads(mean: Tensor, cov: Tensor) -> tuple[Tensor, Tensor]:
        m, c = mean.clone().requires_grad_(), cov.clone().requires_grad_()
        ll = MultivariateNormal(m, covariance_matrix=c).log_prob(x).mean()
        return torch.autograd.grad(ll, (m, c))

    g_m, g_c = grads(x.mean(0), torch.cov(x.T, correction=0))
    assert float(g_m.abs().max()) < 1e-10 and float(g_c.abs().max()) < 1e-10
    g_m, g_c = grads(x.mean(0), torch.cov(x.T))
    assert float(g_m.abs().max()) < 1e-10 and float(g_c.abs().max()) > 1e-3
    g_m, _ = grads(x.mean(0) + 0.1, torch.cov(x.T, correction=0))
    assert float(g_m.abs().max()) > 1e-2


def test_em_recovers_a_well_separated_mixture():
    """[eq-em-m-step] From 20k draws of a known, well-separated 2-D mixture, EM (reg=0)
    returns the per-component sample weights, means and biased covariances of the true
    labels (to 1e-6: the responsibilities are 0 or 1 up to ~1e-8), and so the true
    parameters within Monte Carlo error (5 standard errors)."""
    w = torch.tensor([0.5, 0.3, 0.2], dtype=F64)
    mu = torch.tensor([[-6.0, 0.0], [6.0, 0.0], [0.0, 8.0]], dtype=F64)
    cov = torch.tensor([[[1.0, 0.5], [0.5, 1.0]], [[0.5, -0.2], [-0.2, 0.8]],
                        [[1.5, 0.0], [0.0, 0.3]]], dtype=F64)
    n = 20_000
    g = gen(20)
    lab = torch.multinomial(w, n, replacement=True, generator=g)
    eps = torch.randn(n, 2, generator=g, dtype=F64)
    x = mu[lab] + (torch.linalg.cholesky(cov)[lab] @ eps[:, :, None])[:, :, 0]
    res = fit_em(x, 3, reg=0.0, tol=1e-13, iterations=300, generator=gen(21))
    m = res.model
    order = torch.cdist(mu, m.means.detach()).argmin(1)  # fitted component of each true one
    assert sorted(order.tolist()) == [0, 1, 2]
    fw, fmu = m.weights.detach()[order], m.means.detach()[order]
    fcov = m.covariances.detach()[order]
    # the oracle: statistics of the true labels
    for k in range(3):
        xk = x[lab == k]
        nk = xk.shape[0]
        assert float(fw[k]) == pytest.approx(nk / n, abs=1e-6)
        torch.testing.assert_close(fmu[k], xk.mean(0), rtol=0, atol=1e-6)
        torch.testing.assert_close(fcov[k], biased_cov(xk), rtol=0, atol=1e-6)
        assert float((fcov[k] - torch.cov(xk.T)).abs().max()) > 5e-5  # unbiased is off
        # the truth, within Monte Carlo error
        assert abs(float(fw[k] - w[k])) < 5 * math.sqrt(float(w[k] * (1 - w[k])) / n)
        assert ((fmu[k] - mu[k]).abs() < 5 * (cov[k].diagonal() / nk).sqrt()).all()
        se_cov = ((cov[k].diagonal()[:, None] * cov[k].diagonal()[None] + cov[k] ** 2) / nk).sqrt()
        assert ((fcov[k] - cov[k]).abs() < 5 * se_cov).all()


def test_em_keeps_a_dead_component_with_weight_zero():
    """A component that no point belongs to keeps its mean and covariance and gets weight
    (numerically) 0; the others are fitted and the likelihood stays monotone."""
    x = moons(400, 22)
    w = torch.tensor([0.4, 0.3, 0.3], dtype=F64)
    mu = torch.tensor([[-0.5, 0.5], [0.5, -0.5], [100.0, 100.0]], dtype=F64)
    cov = torch.eye(2, dtype=F64).expand(3, 2, 2).clone()
    res = fit_em(x, GaussianMixture(w, mu, cov), reg=0.0, tol=0, iterations=10)
    m = res.model
    assert m.weights[2].item() < 1e-250
    torch.testing.assert_close(m.weights[:2].sum(), torch.tensor(1.0, dtype=F64))
    torch.testing.assert_close(m.means.detach()[2], mu[2], rtol=0, atol=0)
    torch.testing.assert_close(m.covariances.detach()[2], cov[2], rtol=1e-14, atol=1e-14)
    assert torch.isfinite(m.log_prob(x)).all()
    assert min(torch.diff(torch.tensor(res.log_likelihood, dtype=F64)).tolist()) >= -1e-12


# --------------------------------------------------------------------------- KDE


def test_kde_integrates_to_one_and_matches_the_formula():
    """[eq-kde] The KDE (1/n) sum_i N(x; x_i, h^2 I) integrates to 1 on a 2-D grid and
    equals the formula through MultivariateNormal; the 1-D normalizer in 2-D would integrate
    to (2 pi h^2)^(1/2) = 0.88 here."""
    data = torch.randn(40, 2, generator=gen(23), dtype=F64) * torch.tensor([1.0, 0.6], dtype=F64)
    h = 0.35
    kde = GaussianKDE(data, h)
    lo, hi = data.min(0).values - 8 * h, data.max(0).values + 8 * h
    box = (float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1]))
    assert grid_integral(kde.log_prob, box, 0.05) == pytest.approx(1.0, abs=1e-6)
    x = 1.5 * torch.randn(30, 2, generator=gen(24), dtype=F64)
    comp = MultivariateNormal(data, h**2 * torch.eye(2, dtype=F64))
    want = torch.logsumexp(comp.log_prob(x[:, None, :]), 1) - math.log(40)
    torch.testing.assert_close(kde.log_prob(x), want, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(kde.loss(x), -want.mean())
    torch.testing.assert_close(kde.log_prob(x), ex._kde_log_prob(x, data, h), rtol=1e-13,
                               atol=1e-13)
    # float32 in, float32 out; far points do not underflow to -inf
    assert kde.log_prob(x.float()).dtype == torch.float32
    assert torch.isfinite(kde.log_prob(torch.tensor([[50.0, -50.0]], dtype=F64))).all()
    # the data are copied: changing them afterwards changes nothing
    data += 1
    torch.testing.assert_close(kde.log_prob(x), want, rtol=1e-13, atol=1e-13)


def test_kde_samples_have_the_kde_mean_and_covariance():
    """[eq-kde] Draws from the KDE (a data point plus h eps) have the data mean and the
    biased data covariance + h^2 I (5 standard errors, 200k draws)."""
    data = torch.randn(50, 2, generator=gen(25), dtype=F64) @ torch.tensor(
        [[1.0, 0.0], [0.7, 0.5]], dtype=F64)
    h = 0.4
    x = GaussianKDE(data, h).sample(200_000, generator=gen(26))
    assert x.shape == (200_000, 2) and x.dtype == F64
    assert_moments(x, data.mean(0), biased_cov(data) + h**2 * torch.eye(2, dtype=F64))


def test_select_bandwidth_by_held_out_likelihood():
    """[eq-kde] select_bandwidth returns the candidate of lowest held-out NLL (each equal to
    GaussianKDE(train, h).loss(valid)); it lies inside the grid and within 0.02 nats of the
    best candidate on a large independent test set. The leave-one-out train NLL equals the
    KDE of the other n - 1 points, is finite, and exceeds the in-sample NLL at every h."""
    train = torch.randn(300, 2, generator=gen(27), dtype=F64)
    valid = torch.randn(300, 2, generator=gen(28), dtype=F64)
    test = torch.randn(4000, 2, generator=gen(29), dtype=F64)
    hs = torch.logspace(-1.3, 0.3, 17, dtype=F64)
    sel = select_bandwidth(train, valid, hs)
    assert sel.bandwidths.tolist() == pytest.approx(hs.tolist())
    assert sel.nll.shape == sel.train_nll.shape == (17,)
    j = int(sel.nll.argmin())
    assert sel.bandwidth == pytest.approx(float(hs[j])) and 0 < j < 16
    want = torch.stack([GaussianKDE(train, float(h)).loss(valid) for h in hs])
    torch.testing.assert_close(sel.nll, want, rtol=1e-12, atol=1e-12)
    test_nll = torch.stack([GaussianKDE(train, float(h)).loss(test) for h in hs])
    assert float(test_nll[j] - test_nll.min()) < 0.02
    # leave-one-out by hand
    d2 = torch.cdist(train, train).square()
    loo = []
    for h in hs.tolist():
        logk = -d2 / (2 * h * h) - LOG_2PI - 2 * math.log(h)
        logk.fill_diagonal_(-math.inf)
        loo.append(-(torch.logsumexp(logk, 1) - math.log(299)).mean())
    torch.testing.assert_close(sel.train_nll, torch.stack(loo), rtol=1e-12, atol=1e-12)
    in_sample = torch.stack([GaussianKDE(train, float(h)).loss(train) for h in hs])
    assert torch.isfinite(sel.train_nll).all()
    assert (sel.train_nll > in_sample).all()
    # the in-sample NLL keeps falling as h -> 0: it cannot choose a bandwidth
    assert (torch.diff(in_sample[:6]) > 0).all()
    # a list of floats works the same
    assert select_bandwidth(train, valid, hs.tolist()).bandwidth == sel.bandwidth


def test_kde_blocks_do_not_change_the_result(monkeypatch):
    """[eq-kde] The blocked computation (several blocks, a partial last one, the excluded
    diagonal offset by the block start) gives the same numbers as a single block."""
    train = torch.randn(60, 2, generator=gen(30), dtype=F64)
    valid = torch.randn(25, 2, generator=gen(31), dtype=F64)
    hs = [0.2, 0.5, 1.0]
    one = select_bandwidth(train, valid, hs)
    lp = GaussianKDE(train, 0.5).log_prob(valid)
    monkeypatch.setattr(densities, "_BLOCK", 7 * 60)  # 7 rows per block: 60 = 8 * 7 + 4
    many = select_bandwidth(train, valid, hs)
    torch.testing.assert_close(many.nll, one.nll, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(many.train_nll, one.train_nll, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(GaussianKDE(train, 0.5).log_prob(valid), lp, rtol=1e-14,
                               atol=1e-14)


# --------------------------------------------------------------------------- autoregressive


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_autoregressive_integrates_to_one(order):
    """[eq-autoregressive] A product of normalized 1-D conditionals is normalized: the
    log_prob of an (untrained) Autoregressive integrates to 1 on a 2-D grid, in both
    orders; log_prob is the sum of the conditionals in the given order."""
    model = Autoregressive(2, order=order, components=4, hidden=16).double()
    assert grid_integral(model.log_prob, (-8.0, 8.0, -8.0, 8.0), 0.05) == pytest.approx(
        1.0, abs=1e-3)
    x = torch.randn(20, 2, generator=gen(32), dtype=F64)
    first, second = model.conditionals
    i, j = order
    with torch.no_grad():
        want = (first.log_prob(x[:, i], x[:, :0]) + second.log_prob(x[:, j], x[:, i : i + 1]))
        torch.testing.assert_close(model.log_prob(x), want, rtol=1e-14, atol=1e-14)
        torch.testing.assert_close(model.loss(x), -want.mean())


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_trained_autoregressive_is_normalized_and_samples_match_log_prob(order):
    """[eq-autoregressive] After brief training on two moons (the loss falls), the model
    still integrates to 1 in both orders, and its ancestral samples put on boxes the
    probability that the grid integral of exp(log_prob) gives (4.5 standard errors, 100k
    draws); samples with their columns swapped are rejected on the asymmetric boxes."""
    x = moons(2000, 33)
    model = Autoregressive(2, order=order, components=4, hidden=16).double()
    before = model.loss(x).item()
    fit(model, x, steps=80, lr=1e-2, batch_size=256, seed=0, progress=False)
    after = model.loss(x).item()
    assert after < before - 0.5, (before, after)
    assert grid_integral(model.log_prob, (-8.0, 8.0, -8.0, 8.0), 0.04) == pytest.approx(
        1.0, abs=1e-3)
    s = model.sample(100_000, generator=gen(34))
    assert s.shape == (100_000, 2) and s.dtype == F64
    rejected = 0
    for box in [(-1.5, 0.0, 0.0, 1.5), (0.0, 1.5, -1.5, 0.0), (-0.5, 0.5, -2.0, 0.5),
                (0.5, 2.0, 0.5, 1.5)]:
        p_mc, se = mc_box(s, box)
        p_grid = grid_integral(model.log_prob, box, 0.01)
        assert abs(p_mc - p_grid) < 4.5 * se + 1e-4, (box, p_mc, p_grid, se)
        p_swapped, se_swapped = mc_box(s.flip(1), box)
        rejected += abs(p_swapped - p_grid) > 6 * se_swapped
    assert rejected >= 2
    assert torch.equal(model.sample(7, generator=gen(1)), model.sample(7, generator=gen(1)))


def test_mixture_log_prob_is_a_normalized_density():
    """[eq-gmm] [eq-logsumexp] Each of a (3, 2) batch of 1-D 4-component mixtures with very
    unequal weights integrates to 1 (trapezoid rule on [-30, 30]), and a one-component
    mixture at its mean has the log-density -log s - log(2 pi) / 2 of a Gaussian's mode."""
    logits = 3 * torch.randn(3, 2, 4, generator=gen(40), dtype=F64)
    loc = torch.randn(3, 2, 4, generator=gen(41), dtype=F64)
    scale = torch.rand(3, 2, 4, generator=gen(42), dtype=F64) + 0.05
    grid = torch.linspace(-30, 30, 200_001, dtype=F64)
    p = MixtureParams(*(t[..., None, :].expand(3, 2, len(grid), 4)
                        for t in (logits, loc, scale)))
    dens = mixture_log_prob(p, grid.expand(3, 2, len(grid))).exp()
    torch.testing.assert_close(torch.trapezoid(dens, grid), torch.ones(3, 2, dtype=F64),
                               atol=1e-8, rtol=0)
    one = MixtureParams(torch.zeros(1, 1, dtype=F64), torch.tensor([[0.7]], dtype=F64),
                        torch.tensor([[0.3]], dtype=F64))
    torch.testing.assert_close(mixture_log_prob(one, torch.tensor([0.7], dtype=F64)),
                               torch.tensor([-math.log(0.3) - 0.5 * LOG_2PI], dtype=F64))


def test_mixture_log_prob_is_the_one_dimensional_gaussian_mixture():
    """[eq-gmm] For D = 1 the batched mixture log-density (weights softmax of the logits,
    standard deviations s) is that of a GaussianMixture with weights pi, means m and
    variances s^2, for every mixture of a batch of 5 and far in the tails (|y| up to 40),
    where the naive sum underflows."""
    logits = 3 * torch.randn(5, 4, generator=gen(43), dtype=F64)
    loc = torch.randn(5, 4, generator=gen(44), dtype=F64)
    scale = torch.rand(5, 4, generator=gen(45), dtype=F64) + 0.05
    y = torch.tensor([-40.0, -1.0, 0.3, 2.0, 40.0], dtype=F64)
    got = mixture_log_prob(MixtureParams(logits, loc, scale), y)
    for i in range(5):
        gm = GaussianMixture(logits[i].softmax(0), loc[i, :, None],
                             scale[i, :, None, None].square())
        torch.testing.assert_close(got[i], gm.log_prob(y[i].reshape(1, 1))[0], rtol=1e-12,
                                   atol=1e-12)
    assert torch.isfinite(got).all()


def test_mixture_sample_has_the_mixture_moments():
    """[eq-gmm] 100 000 draws (component, then Gaussian) of the mixture
    0.2 N(-2, 0.5^2) + 0.8 N(1, 1) have mean 0.4 and variance
    0.2 (0.25 + 4) + 0.8 (1 + 1) - 0.16 = 2.29 within 4 standard errors, a batch shape
    (*B,) is kept, and the same generator state gives the same draws."""
    n = 100_000
    p = MixtureParams(torch.tensor([0.2, 0.8], dtype=F64).log().expand(n, 2),
                      torch.tensor([-2.0, 1.0], dtype=F64).expand(n, 2),
                      torch.tensor([0.5, 1.0], dtype=F64).expand(n, 2))
    y = mixture_sample(p, generator=gen(8))
    assert y.shape == (n,) and y.dtype == F64
    assert abs(float(y.mean()) - 0.4) < 4 * math.sqrt(2.29 / n)
    assert abs(float(y.var()) - 2.29) < 4 * float(((y - y.mean()) ** 2).std()) / math.sqrt(n)
    torch.testing.assert_close(mixture_sample(p, generator=gen(8)), y)
    q = MixtureParams(*(t.reshape(250, 400, 2) for t in (p.logits, p.loc, p.scale)))
    assert mixture_sample(q, generator=gen(8)).shape == (250, 400)


def test_mixture_density_network_is_a_normalized_conditional():
    """[eq-autoregressive] Each factor p(y | c) integrates to 1 in y for every context, and
    its samples have the mixture's mean."""
    mdn = MixtureDensityNetwork(2, components=3, hidden=8).double()
    c = torch.randn(5, 2, generator=gen(35), dtype=F64)
    y = midpoints(-15.0, 15.0, 0.01)
    with torch.no_grad():
        lp = mdn.log_prob(y.repeat(5), c.repeat_interleave(y.shape[0], 0)).view(5, -1)
    torch.testing.assert_close(lp.exp().sum(1) * 0.01, torch.ones(5, dtype=F64), rtol=0,
                               atol=1e-6)
    cc = c[:1].expand(100_000, 2)
    s = mdn.sample(cc, generator=gen(36))
    mean = mdn.distribution(c[:1]).mean.item()
    assert abs(float(s.mean()) - mean) < 4.5 * float(s.std()) / math.sqrt(100_000)


# --------------------------------------------------------------------------- change of variables


COUPLINGS = [(0.5, 0.8), (-0.3, 0.0), (0.7, -1.0), (0.0, 0.5)]


@pytest.mark.parametrize("a,b", COUPLINGS)
def test_coupling_pushforward_integrates_to_one(a, b):
    """[thm-change-of-variables] [eq-change-of-variables] log p_Y(y) = log p_Z(f^-1(y)) -
    log|det J_f(f^-1(y))|
    integrates to 1 on a fine grid; WITHOUT the Jacobian term the integral is
    E[exp(a z_1)] = exp(a^2 / 2), not 1 (the test has teeth), and with the wrong sign
    exp(2 a^2)."""
    f = CouplingMap(a, b)
    box, h = (-6.0, 6.0, -40.0, 60.0), 0.05
    total = grid_integral(lambda y: pushforward_log_prob(std_normal_log_prob, f, y), box, h)
    assert total == pytest.approx(1.0, abs=1e-4)
    no_jac = grid_integral(lambda y: std_normal_log_prob(f.inverse(y)), box, h)
    assert no_jac == pytest.approx(math.exp(a * a / 2), abs=1e-3)  # its tails reach farther
    wrong_sign = grid_integral(
        lambda y: std_normal_log_prob(f.inverse(y)) + f.log_abs_det_jacobian(f.inverse(y)),
        box, h)
    if a != 0:
        assert abs(no_jac - 1) > 0.04 and abs(wrong_sign - 1) > 0.15


@pytest.mark.parametrize("a,b", COUPLINGS)
def test_coupling_map_inverse_and_jacobian(a, b):
    """[eq-coupling] [eq-change-of-variables] f(z) = (z_1, z_2 e^(a z_1) + b (z_1^2 - 1)),
    inverse(forward(z)) = z, forward(inverse(y)) = y, and log_abs_det_jacobian(z) = a z_1
    agrees with the autograd Jacobian determinant."""
    f = CouplingMap(a, b)
    z = 1.5 * torch.randn(200, 2, generator=gen(37), dtype=F64)
    y = f(z)
    assert y.shape == (200, 2) and y.dtype == F64
    z1, z2 = z.unbind(1)
    torch.testing.assert_close(y[:, 1], z2 * torch.exp(a * z1) + b * (z1**2 - 1), rtol=1e-15,
                               atol=1e-15)
    torch.testing.assert_close(f.inverse(y), z, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(f(f.inverse(z)), z, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(y[:, 0], z[:, 0], rtol=0, atol=0)
    lad = f.log_abs_det_jacobian(z)
    torch.testing.assert_close(lad, log_abs_det_autograd(f, z), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(lad, a * z[:, 0], rtol=0, atol=0)
    # the inverse map's log-det is minus the forward one at the image point
    inv_lad = log_abs_det_autograd(f.inverse, y)
    torch.testing.assert_close(inv_lad, -lad, rtol=1e-12, atol=1e-12)


def test_coupling_samples_follow_the_pushforward_density():
    """[thm-change-of-variables] Samples f(z), z ~ N(0, I), fall in boxes with the
    probability that the change-of-variables density gives (grid integral), within 4.5
    standard errors (200k draws); the density without the Jacobian term is rejected."""
    f = CouplingMap(0.5, 0.8)
    y = f(torch.randn(200_000, 2, generator=gen(38), dtype=F64))

    def density(v: Tensor) -> Tensor:
        return pushforward_log_prob(std_normal_log_prob, f, v)

    rejected = 0
    for box in [(0.0, 1.0, -1.0, 0.5), (-1.5, -0.5, 0.0, 2.0), (0.5, 2.0, 0.5, 3.0),
                (-2.5, -1.0, 0.0, 3.0)]:
        p_mc, se = mc_box(y, box)
        assert abs(p_mc - grid_integral(density, box, 0.01)) < 4.5 * se, box
        p_wrong = grid_integral(lambda v: std_normal_log_prob(f.inverse(v)), box, 0.01)
        rejected += abs(p_mc - p_wrong) > 6 * se
    assert rejected >= 3


def test_log_abs_det_autograd_on_maps_with_known_determinants():
    """[eq-change-of-variables] The autograd log|det J| of a linear map z A^T is log|det A|
    at every point, and of the elementwise map z + z^3 / 3 it is sum_d log(1 + z_d^2)."""
    g = gen(39)
    a = torch.randn(3, 3, generator=g, dtype=F64)
    z = torch.randn(10, 3, generator=g, dtype=F64)
    got = log_abs_det_autograd(lambda v: v @ a.T, z)
    torch.testing.assert_close(got, torch.linalg.slogdet(a).logabsdet.expand(10), rtol=1e-12,
                               atol=1e-12)
    got = log_abs_det_autograd(lambda v: v + v**3 / 3, z)
    torch.testing.assert_close(got, torch.log1p(z**2).sum(1), rtol=1e-12, atol=1e-12)


class _Exp:
    """x = exp(m + s z) in one dimension, with the two methods pushforward_log_prob needs."""

    def __init__(self, m: float, s: float) -> None:
        self.m, self.s = m, s

    def inverse(self, y: Tensor) -> Tensor:
        return (y.log() - self.m) / self.s

    def log_abs_det_jacobian(self, z: Tensor) -> Tensor:  # dx/dz = s exp(m + s z)
        return (math.log(self.s) + self.m + self.s * z).sum(1)


def test_one_dimensional_change_of_variables_gives_the_lognormal():
    """[eq-cov-1d] p_X(x) = p_Z(f^-1(x)) |d f^-1 / dx| for x = exp(m + s z), z ~ N(0, 1),
    is torch's LogNormal(m, s) density; dropping the Jacobian term is off by the factor
    s x."""
    y = torch.exp(torch.randn(500, 1, generator=gen(40), dtype=F64) * 1.5)
    for m, s in [(0.0, 1.0), (0.5, 0.3), (-1.0, 2.0)]:
        t = _Exp(m, s)
        got = pushforward_log_prob(std_normal_log_prob, t, y)
        want = LogNormal(torch.tensor(m, dtype=F64), torch.tensor(s, dtype=F64)).log_prob(y[:, 0])
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        no_jac = std_normal_log_prob(t.inverse(y))
        torch.testing.assert_close(no_jac - got, (s * y[:, 0]).log(), rtol=1e-10, atol=1e-10)
    # and it integrates to 1 (in log x, where the integrand is smooth)
    u = midpoints(-12.0, 12.0, 0.01)
    xs = u.exp()[:, None]
    total = float((pushforward_log_prob(std_normal_log_prob, _Exp(0.0, 1.0), xs).exp()
                   * xs[:, 0]).sum() * 0.01)
    assert total == pytest.approx(1.0, abs=1e-8)


# --------------------------------------------------------------------------- dequantization


def test_dequantize_spreads_each_level_uniformly_over_its_bin():
    """[eq-dequantize] x + Delta v, v ~ U[-1/2, 1/2): every point stays in its bin
    [x - Delta/2, x + Delta/2) (float64), the noise has mean 0 and variance Delta^2 / 12
    (4 standard errors), and is uniform over the bin (10 sub-bins, 4.5 s.e. each)."""
    delta = 2 / 16
    levels = torch.linspace(-1, 1, 17, dtype=F64)
    x = levels.repeat(30_000, 1)  # (30000, 17)
    u = dequantize(x, delta, generator=gen(41))
    assert u.shape == x.shape and u.dtype == F64
    assert bool(((u >= x - delta / 2) & (u < x + delta / 2)).all())
    v = (u - x).flatten()
    n = v.numel()
    assert abs(float(v.mean())) < 4 * delta / math.sqrt(12 * n)
    assert abs(float(v.square().mean()) - delta**2 / 12) < 4 * delta**2 / math.sqrt(180 * n)
    counts = torch.histc(v / delta + 0.5, bins=10, min=0.0, max=1.0)
    assert ((counts / n - 0.1).abs() < 4.5 * math.sqrt(0.09 / n)).all()
    # reproducible, float32 kept, any shape
    assert torch.equal(dequantize(x, delta, generator=gen(41)), u)
    assert dequantize(levels.float(), delta, generator=gen(0)).dtype == torch.float32
    assert dequantize(torch.zeros(2, 3, 4), 1.0).shape == (2, 3, 4)


def test_dequantize_float32_stays_in_the_half_open_bin():
    """[eq-dequantize] In float32 too, no dequantized point reaches the upper edge
    x + Delta/2 of its bin (the lower edge of the next one), although x + Delta v rounds
    to it for v within about 2^-21 of 1/2: 10M draws at x = 1, Delta = 1/8 hit that case
    several times."""
    delta = 2 / 16
    x = torch.ones(10_000_000)
    u = dequantize(x, delta, generator=gen(0))
    assert int((u >= x + delta / 2).sum()) == 0
    assert int((u < x - delta / 2).sum()) == 0
    v = torch.rand(x.shape, generator=gen(0)) - 0.5  # the same noise, added without care
    assert int((x + delta * v >= x + delta / 2).sum()) > 0


def test_dequantization_bound_is_strict_for_a_smooth_model():
    """[prop-dequantization, eq-dequantization, eq-dequantize, eq-bpd] For a model that is not
    constant on the bins, the dequantized bpd is a *strict* upper bound on the exact discrete
    bpd. Model N(0, sigma^2 I), sigma = 0.4, on 2-D data uniform over the levels
    {-1, -1/2, 0, 1/2, 1} (bin width 1/2): the exact discrete NLL uses the normal CDF over each
    bin; the exact dequantized one uses E[(x + Delta v)^2] = x^2 + Delta^2 / 12. The Monte
    Carlo bpd of dequantize + nll + bits_per_dim matches the latter within 4 s.e. (a wrong sign
    or factor of D ln Delta moves it by a bit or more) and exceeds the discrete bpd by more
    than 20 s.e. (the inequality's direction; the gap is about a quarter of a bit)."""
    sigma, delta, d = 0.4, 0.5, 2
    levels = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0], dtype=F64)
    x = levels[torch.randint(0, 5, (200_000, d), generator=gen(7))]  # (N, 2)
    model = MultivariateNormal(torch.zeros(d, dtype=F64), sigma**2 * torch.eye(d, dtype=F64))
    bpd = bits_per_dim(nll(model.log_prob, dequantize(x, delta, generator=gen(8))), d,
                       bin_width=delta)
    normal = torch.distributions.Normal(torch.tensor(0.0, dtype=F64), sigma)
    bin_mass = normal.cdf(levels + delta / 2) - normal.cdf(levels - delta / 2)  # (5,)
    discrete_bits = float(-bin_mass.log2().mean())  # per dimension, uniform levels
    cont_nll = float(((levels**2 + delta**2 / 12) / (2 * sigma**2)).mean()
                     + 0.5 * math.log(2 * math.pi * sigma**2))  # per dimension
    bound_bits = (cont_nll - math.log(delta)) / math.log(2)
    assert abs(bpd.mean - bound_bits) < 4 * bpd.se
    assert bpd.mean - discrete_bits > 20 * bpd.se
    assert bound_bits - discrete_bits > 0.05


# --------------------------------------------------------------------------- argument errors


def _gm() -> GaussianMixture:
    return three_gaussians()


X = torch.zeros(10, 2, dtype=F64)
W = torch.tensor([0.5, 0.5], dtype=F64)
MU = torch.zeros(2, 2, dtype=F64)
COV = torch.eye(2, dtype=F64).expand(2, 2, 2).clone()

BAD_CALLS = [
    # (id, call, exception, match)
    ("lse-list", lambda: log_sum_exp([1.0, 2.0]), TypeError, "at least one dimension"),
    ("lse-0d", lambda: log_sum_exp(torch.tensor(1.0)), TypeError, "at least one dimension"),
    ("gm-int-weights", lambda: GaussianMixture(torch.tensor([1, 1]), MU, COV), TypeError,
     "weights must be a floating-point tensor"),
    ("gm-means-1d", lambda: GaussianMixture(W, MU[0], COV), ValueError,
     r"means must have shape \(K, D\)"),
    ("gm-weights-shape", lambda: GaussianMixture(W[:1], MU, COV), ValueError,
     r"weights must be \(K,\)"),
    ("gm-cov-shape", lambda: GaussianMixture(W, MU, COV[:, :1]), ValueError,
     r"covariances \(K, D, D\)"),
    ("gm-weights-sign", lambda: GaussianMixture(torch.tensor([0.5, -0.5], dtype=F64), MU, COV),
     ValueError, "weights must be positive"),
    ("gm-cov-not-pd", lambda: GaussianMixture(W, MU, -COV), (ValueError, RuntimeError),
     "positive.definite"),
    ("gm-cov-not-symmetric", lambda: GaussianMixture(
        torch.ones(1, dtype=F64), torch.zeros(1, 2, dtype=F64),
        torch.tensor([[[2.0, 5.0], [0.5, 1.0]]], dtype=F64)), ValueError, "symmetric"),
    ("gm-log-prob-dim", lambda: _gm().log_prob(torch.zeros(3, 3, dtype=F64)), ValueError,
     r"x must have shape \(n, 2\)"),
    ("gm-log-prob-1d", lambda: _gm().log_prob(torch.zeros(2, dtype=F64)), ValueError,
     r"x must have shape \(n, 2\)"),
    ("gm-log-prob-list", lambda: _gm().log_prob([[0.0, 0.0]]), TypeError, "torch.Tensor"),
    ("gm-log-prob-int", lambda: _gm().log_prob(torch.zeros(3, 2, dtype=torch.long)),
     TypeError, "floating-point"),
    ("gm-resp-dim", lambda: _gm().responsibilities(torch.zeros(3, 1, dtype=F64)), ValueError,
     r"shape \(n, 2\)"),
    ("gm-sample-0", lambda: _gm().sample(0), ValueError, "n must be a positive int"),
    ("gm-sample-float", lambda: _gm().sample(2.5), TypeError, "n must be a positive int"),
    ("gm-sample-gen", lambda: _gm().sample(3, generator=0), TypeError, "generator"),
    ("gm-init-k>n", lambda: GaussianMixture.initialize(X, 11), ValueError,
     "need at least components = 11 points"),
    ("kmeans-k>n", lambda: kmeans_plusplus(X, 11), ValueError, "cannot choose k = 11"),
    ("em-k-0", lambda: fit_em(X, 0), ValueError, "components must be a positive int"),
    ("em-k-float", lambda: fit_em(X, 1.5), TypeError, "components must be a positive int"),
    ("em-k>n", lambda: fit_em(X, 11), ValueError, "need at least components"),
    ("em-reg", lambda: fit_em(X, 2, reg=-1.0), ValueError, "reg must be >= 0"),
    ("em-tol", lambda: fit_em(X, 2, tol=-1.0), ValueError, "tol must be >= 0"),
    ("em-iterations", lambda: fit_em(X, 2, iterations=-1), ValueError, "iterations"),
    ("em-x-1d", lambda: fit_em(X[:, 0], 2), ValueError, r"x must have shape \(n, D\)"),
    ("em-x-int", lambda: fit_em(X.long(), 2), TypeError, "floating-point"),
    ("em-mixture-dim", lambda: fit_em(torch.zeros(10, 3, dtype=F64), _gm()), ValueError,
     "the mixture has dimension 2, the data 3"),
    ("kde-h-0", lambda: GaussianKDE(X, 0.0), ValueError, "bandwidth must be > 0"),
    ("kde-h-neg", lambda: GaussianKDE(X, -1.0), ValueError, "bandwidth must be > 0"),
    ("kde-h-nan", lambda: GaussianKDE(X, math.nan), ValueError, "bandwidth must be finite"),
    ("kde-h-str", lambda: GaussianKDE(X, "0.3"), TypeError, "bandwidth must be a real"),
    ("kde-data-1d", lambda: GaussianKDE(X[:, 0], 0.3), ValueError, "data must have shape"),
    ("kde-data-empty", lambda: GaussianKDE(X[:0], 0.3), ValueError, "n >= 1"),
    ("kde-data-int", lambda: GaussianKDE(X.long(), 0.3), TypeError, "data must be a floating-point"),
    ("kde-log-prob-dim", lambda: GaussianKDE(X, 0.3).log_prob(torch.zeros(2, 3, dtype=F64)),
     ValueError, r"x must have shape \(n, 2\)"),
    ("bw-empty", lambda: select_bandwidth(X, X, []), ValueError, "non-empty sequence"),
    ("bw-negative", lambda: select_bandwidth(X, X, [0.1, -1.0]), ValueError, "positive"),
    ("bw-zero", lambda: select_bandwidth(X, X, [0.0]), ValueError, "positive"),
    ("bw-train-1", lambda: select_bandwidth(X[:1], X, [0.1]), ValueError, "at least 2 points"),
    ("bw-valid-dim", lambda: select_bandwidth(X, torch.zeros(3, 3, dtype=F64), [0.1]),
     ValueError, r"valid must have shape \(n, 2\)"),
    ("mdn-context-shape", lambda: MixtureDensityNetwork(1, 2).distribution(torch.zeros(3, 2)),
     ValueError, r"context must have shape \(B, 1\)"),
    ("mdn-y-shape", lambda: MixtureDensityNetwork(1, 2).log_prob(torch.zeros(3, 1),
                                                                  torch.zeros(3, 1)),
     ValueError, r"y must have shape \(B,\) with B = 3"),
    ("mdn-context-list", lambda: MixtureDensityNetwork(1, 2).distribution([[0.0]]), TypeError,
     "context must be a floating-point tensor"),
    ("mdn-context-int", lambda: MixtureDensityNetwork(1, 2).log_prob(
        torch.zeros(2), torch.zeros(2, 1, dtype=torch.long)), TypeError,
     "context must be a floating-point tensor"),
    ("mdn-y-list", lambda: MixtureDensityNetwork(1, 2).log_prob([0.0], torch.zeros(1, 1)),
     TypeError, "y must be a floating-point tensor"),
    ("mdn-context-dim", lambda: MixtureDensityNetwork(-1), ValueError, "context_dim"),
    ("mdn-components", lambda: MixtureDensityNetwork(1, 0), ValueError, "components"),
    ("mdn-min-scale", lambda: MixtureDensityNetwork(1, min_scale=0.0), ValueError,
     "min_scale must be > 0"),
    ("mixture-params-tuple", lambda: mixture_log_prob(
        (torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2, 3)), torch.zeros(2)), TypeError,
     "params must be MixtureParams"),
    ("mixture-y-shape", lambda: mixture_log_prob(
        MixtureParams(torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2, 3)),
        torch.zeros(3)), ValueError, r"y must have shape \(2,\), got \(3,\)"),
    ("mixture-y-int", lambda: mixture_log_prob(
        MixtureParams(torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2, 3)),
        torch.zeros(2, dtype=torch.long)), TypeError, "y must be"),
    ("mixture-sample-tuple", lambda: mixture_sample(
        (torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2, 3))), TypeError,
     "params must be MixtureParams"),
    ("mixture-sample-gen", lambda: mixture_sample(
        MixtureParams(torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2, 3)), generator=3),
     TypeError, "generator"),
    ("ar-order-repeat", lambda: Autoregressive(2, order=(0, 0)), ValueError,
     r"order must be a permutation of range\(2\)"),
    ("ar-order-length", lambda: Autoregressive(2, order=(0, 1, 2)), ValueError,
     "permutation"),
    ("ar-order-short", lambda: Autoregressive(3, order=(1, 0)), ValueError, "permutation"),
    ("ar-order-floats", lambda: Autoregressive(2, order=(0.7, 1.2)), TypeError, "order"),
    ("ar-order-bools", lambda: Autoregressive(2, order=(True, False)), TypeError, "order"),
    ("ar-order-not-sequence", lambda: Autoregressive(2, order=5), TypeError, "order"),
    ("ar-dim-0", lambda: Autoregressive(0), ValueError, "dim must be a positive int"),
    ("ar-log-prob-dim", lambda: Autoregressive(2).log_prob(torch.zeros(3, 3)), ValueError,
     r"x must have shape \(n, 2\)"),
    ("ar-sample-0", lambda: Autoregressive(2).sample(0), ValueError, "n must be"),
    ("ar-sample-gen", lambda: Autoregressive(2).sample(2, generator=3), TypeError,
     "generator"),
    ("coupling-a-inf", lambda: CouplingMap(math.inf, 0.0), ValueError, "finite"),
    ("coupling-a-str", lambda: CouplingMap("0.5", 0.0), TypeError, "a must be a real number"),
    ("coupling-b-none", lambda: CouplingMap(0.5, None), TypeError, "b must be a real number"),
    ("coupling-b-nan", lambda: CouplingMap(0.0, math.nan), ValueError, "finite"),
    ("coupling-forward-dim", lambda: CouplingMap()(torch.zeros(3, 3)), ValueError,
     r"z must have shape \(n, 2\)"),
    ("coupling-inverse-list", lambda: CouplingMap().inverse([[0.0, 0.0]]), TypeError,
     "y must be a floating-point torch.Tensor"),
    ("coupling-logdet-1d", lambda: CouplingMap().log_abs_det_jacobian(torch.zeros(3)),
     ValueError, "z must have shape"),
    ("pushforward-no-inverse", lambda: pushforward_log_prob(std_normal_log_prob, object(), X),
     TypeError, r"transform must have a \.inverse\(\) method"),
    ("pushforward-no-logdet", lambda: pushforward_log_prob(
        std_normal_log_prob, type("T", (), {"inverse": lambda self, y: y})(), X),
     TypeError, r"\.log_abs_det_jacobian\(\) method"),
    ("pushforward-y-1d", lambda: pushforward_log_prob(std_normal_log_prob, CouplingMap(),
                                                      X[:, 0]), ValueError, "y must have shape"),
    ("autograd-z-1d", lambda: log_abs_det_autograd(lambda v: v, X[:, 0]), ValueError,
     "z must have shape"),
    ("dequantize-int", lambda: dequantize(torch.tensor([1, 2]), 0.1), TypeError,
     "x must be a floating-point tensor"),
    ("dequantize-list", lambda: dequantize([1.0, 2.0], 0.1), TypeError, "floating-point"),
    ("dequantize-width-0", lambda: dequantize(X, 0.0), ValueError, "bin_width must be > 0"),
    ("dequantize-gen", lambda: dequantize(X, 0.1, generator=1), TypeError, "generator"),
]


@pytest.mark.parametrize("call,exc,match", [c[1:] for c in BAD_CALLS],
                         ids=[c[0] for c in BAD_CALLS])
def test_bad_arguments_raise_clear_errors(call, exc, match):
    """Every public function and class rejects a wrong type (TypeError) or shape / value
    (ValueError) with a message naming the argument and what was expected."""
    with pytest.raises(exc, match=match):
        call()


# --------------------------------------------------------------------------- checkers


def reader_log_sum_exp(a: Tensor) -> Tensor:
    m = a.max(dim=-1, keepdim=True).values
    m = torch.where(m == -math.inf, torch.zeros_like(m), m)
    return m.squeeze(-1) + torch.log(torch.exp(a - m).sum(dim=-1))


def reader_em_step_1d(x, weights, means, variances):
    log_joint = (weights.log() - 0.5 * torch.log(2 * math.pi * variances)
                 - (x[:, None] - means) ** 2 / (2 * variances))  # (n, K)
    r = torch.softmax(log_joint, dim=1)
    nk = r.sum(0)
    new_means = (r * x[:, None]).sum(0) / nk
    new_vars = (r * (x[:, None] - new_means) ** 2).sum(0) / nk
    return nk / x.shape[0], new_means, new_vars


def reader_kde_log_prob(x, data, bandwidth):
    n, d = data.shape
    sq = torch.cdist(x, data) ** 2
    return (torch.logsumexp(-sq / (2 * bandwidth**2), dim=1) - math.log(n)
            - 0.5 * d * math.log(2 * math.pi * bandwidth**2))


CHECKERS = ["log_sum_exp", "em_step_1d", "kde_log_prob"]
READERS = {"log_sum_exp": reader_log_sum_exp, "em_step_1d": reader_em_step_1d,
           "kde_log_prob": reader_kde_log_prob}


def test_density_checkers_are_registered():
    assert set(CHECKERS) <= set(available())


@pytest.mark.parametrize("name", CHECKERS)
def test_density_checkers_pass_reference_and_reader_solutions(name):
    """[eq-logsumexp] [eq-em-m-step] [eq-kde] Each checker passes its own reference and a
    straightforward correct solution written independently."""
    for fn in (getattr(ex, "_" + name), READERS[name]):
        result = check(name, fn)
        assert isinstance(result, CheckResult)
        assert result.passed and not result.failures, result.message
        assert result.message.startswith(f"PASSED {name}: ")


def test_density_checker_references_agree_with_torch_and_the_package():
    """[eq-logsumexp] [eq-kde] The references equal torch.logsumexp and GaussianKDE."""
    a = 5 * torch.randn(4, 6, generator=gen(42), dtype=F64)
    torch.testing.assert_close(ex._log_sum_exp(a), torch.logsumexp(a, -1), rtol=1e-14, atol=0)
    data = torch.randn(12, 3, generator=gen(43), dtype=F64)
    x = torch.randn(5, 3, generator=gen(44), dtype=F64)
    torch.testing.assert_close(ex._kde_log_prob(x, data, 0.6),
                               GaussianKDE(data, 0.6).log_prob(x), rtol=1e-13, atol=1e-13)


def _lse_naive(a):
    return torch.log(torch.exp(a).sum(-1))


def _lse_dim0(a):
    return torch.logsumexp(a, dim=0)


def _lse_forgot_max(a):
    m = a.max(-1, keepdim=True).values
    return torch.log(torch.exp(a - m).sum(-1))


def _lse_nan_row(a):
    m = a.max(-1, keepdim=True).values
    return m.squeeze(-1) + torch.log(torch.exp(a - m).sum(-1))


def _em_naive_densities(x, weights, means, variances):
    p = weights * torch.exp(-(x[:, None] - means) ** 2 / (2 * variances)) / torch.sqrt(
        2 * math.pi * variances)
    r = p / p.sum(1, keepdim=True)
    nk = r.sum(0)
    m = (r * x[:, None]).sum(0) / nk
    return nk / x.shape[0], m, (r * (x[:, None] - m) ** 2).sum(0) / nk


def _em_unbiased(x, weights, means, variances):
    w, m, v = reader_em_step_1d(x, weights, means, variances)
    nk = w * x.shape[0]
    return w, m, v * nk / (nk - 1)


def _em_old_means(x, weights, means, variances):
    r = torch.softmax(weights.log() - 0.5 * torch.log(2 * math.pi * variances)
                      - (x[:, None] - means) ** 2 / (2 * variances), dim=1)
    nk = r.sum(0)
    return (nk / x.shape[0], (r * x[:, None]).sum(0) / nk,
            (r * (x[:, None] - means) ** 2).sum(0) / nk)


def _em_no_weights(x, weights, means, variances):
    return reader_em_step_1d(x, torch.full_like(weights, 1 / weights.shape[0]), means, variances)


def _em_softmax_over_points(x, weights, means, variances):
    r = torch.softmax(weights.log() - 0.5 * torch.log(2 * math.pi * variances)
                      - (x[:, None] - means) ** 2 / (2 * variances), dim=0)
    nk = r.sum(0)
    m = (r * x[:, None]).sum(0) / nk
    return nk / x.shape[0], m, (r * (x[:, None] - m) ** 2).sum(0) / nk


def _kde_no_mean(x, data, bandwidth):
    return reader_kde_log_prob(x, data, bandwidth) + math.log(data.shape[0])


def _kde_1d_normalizer(x, data, bandwidth):
    sq = torch.cdist(x, data) ** 2
    return (torch.logsumexp(-sq / (2 * bandwidth**2), dim=1) - math.log(data.shape[0])
            - 0.5 * math.log(2 * math.pi * bandwidth**2))


def _kde_h_as_variance(x, data, bandwidth):
    return reader_kde_log_prob(x, data, math.sqrt(bandwidth))


def _kde_mean_of_logs(x, data, bandwidth):
    sq = torch.cdist(x, data) ** 2
    return (-sq / (2 * bandwidth**2)).mean(1) - 0.5 * data.shape[1] * math.log(
        2 * math.pi * bandwidth**2)


def _kde_underflow(x, data, bandwidth):
    d = data.shape[1]
    sq = ((x[:, None] - data[None]) ** 2).sum(-1)
    return torch.log(torch.exp(-sq / (2 * bandwidth**2)).mean(1)
                     / (2 * math.pi * bandwidth**2) ** (d / 2))


WRONG = [
    # (checker, wrong answer, fragment of the report, fragment of the hint)
    ("log_sum_exp", _lse_naive, "edge: large and very negative values", "exp() overflows"),
    ("log_sum_exp", _lse_dim0, "lse has shape", "Reduce over the last dimension"),
    ("log_sum_exp", _lse_forgot_max, "lse is wrong", "did not add it back"),
    ("log_sum_exp", _lse_nan_row, "a row of -inf", "Replace an infinite maximum by 0"),
    ("em_step_1d", _em_naive_densities, "points far from every mean",
     "work with log-densities and a log-sum-exp"),
    ("em_step_1d", _em_unbiased, "variances is wrong", "not N_k - 1"),
    ("em_step_1d", _em_old_means, "variances is wrong", "around the NEW means"),
    ("em_step_1d", _em_no_weights, "weights is wrong",
     "multiplies each component's density by its weight"),
    ("em_step_1d", _em_softmax_over_points, "weights is wrong",
     "Normalize the responsibilities over the components"),
    ("kde_log_prob", _kde_no_mean, "log_prob is wrong", "subtract log(n)"),
    ("kde_log_prob", _kde_1d_normalizer, "log_prob is wrong", "(2 pi h^2)^(D/2)"),
    ("kde_log_prob", _kde_h_as_variance, "log_prob is wrong", "the kernel variance is h**2"),
    ("kde_log_prob", _kde_mean_of_logs, "log_prob is wrong",
     "The log of an average is not the average of the logs"),
    ("kde_log_prob", _kde_underflow, "query points far from the data",
     "use torch.logsumexp over the log-kernels"),
]


@pytest.mark.parametrize("name,fn,where,hint", WRONG, ids=[w[1].__name__ for w in WRONG])
def test_density_checkers_reject_wrong_answers_with_the_hint(name, fn, where, hint):
    """[eq-logsumexp] [eq-em-m-step] [eq-kde] A plausible wrong answer fails, the report
    names the problem and gives the matching hint (ASCII, lines of at most 80 characters)."""
    result = check(name, fn)
    assert not result.passed and not result and result.failures, result.message
    assert result.message.startswith(f"FAILED {name} on case ")
    flat = " ".join(result.message.split())
    for fragment in (where, "hint:", hint):
        assert " ".join(fragment.split()) in flat, f"{fragment!r} not in:\n{result.message}"
    assert result.message.isascii()
    assert all(len(line) <= 80 for line in result.message.splitlines()), result.message
