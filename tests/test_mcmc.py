"""Tests of ``gmbook.mcmc`` and the checkers of ``gmbook.exercises.sampling``: the claims of
the chapter "Sampling and Markov chain Monte Carlo" (book/foundations/sampling.md).

Each test of a claim names its label in square brackets in its docstring. The checks are
against closed forms, exact computations or independent direct implementations, with
tolerances that the usual slips fail: detailed balance to 1e-12 on an exact transition
matrix (the Metropolis ratio without the Hastings correction breaks it), a unit Jacobian
determinant and an energy error that falls by 4 when the step halves (a full kick instead
of a half kick gives 2), Monte Carlo moments within 4.5 standard errors computed from the
measured effective sample size, where a sampler without its Metropolis-Hastings correction
misses by dozens. Every random draw uses a seeded ``torch.Generator`` or NumPy generator,
so the tests are deterministic; the work is in float64 with many chains run at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import scipy.signal
import scipy.stats
import torch
from torch import Tensor

from gmbook import mcmc
from gmbook.data import Banana
from gmbook.exercises import CheckResult, available, check, get_checker
from gmbook.exercises import sampling as ex
from gmbook.mcmc import (
    Chains,
    RejectionResult,
    TemperingResult,
    autocorrelation,
    ess,
    gibbs_gaussian,
    gibbs_sweep_gaussian,
    hamiltonian,
    hmc,
    inverse_cdf_sample,
    leapfrog,
    log_prob_and_grad,
    mala,
    mh_transition_matrix,
    parallel_tempering,
    random_walk_mh,
    rejection_sample,
    rhat,
    ula,
)

F64 = torch.float64
LOG_2PI = math.log(2 * math.pi)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- targets

# A correlated 2-D Gaussian with unequal scales (sd 1 and 2, correlation 0.9): the
# covariance has eigenvalues 4.84 and 0.157, a condition number of 31.
MEAN = torch.tensor([1.0, -2.0], dtype=F64)
COV = torch.tensor([[1.0, 1.8], [1.8, 4.0]], dtype=F64)
PREC = torch.linalg.inv(COV)
CHOL = torch.linalg.cholesky(COV)


def gauss_log_prob(x: Tensor) -> Tensor:
    """Unnormalized log N(x; MEAN, COV), ``(C, 2) -> (C,)``."""
    d = x - MEAN.to(x.dtype)
    return -0.5 * ((d @ PREC.to(x.dtype)) * d).sum(-1)


def gauss_draws(n: int, generator: torch.Generator) -> Tensor:
    return MEAN + torch.randn(n, 2, generator=generator, dtype=F64) @ CHOL.T


BANANA = Banana(standardize=False)  # curvature b = 1, std sigma = 0.5


def banana_grad(x: Tensor) -> Tensor:
    """Closed-form gradient of the banana's log-density (differentiable, unlike autograd's
    detached one): log p = -x1^2 / 2 - r^2 / 2 with r = (x2 - b (x1^2 - 1)) / sigma."""
    b, s = BANANA.curvature, BANANA.std
    x1, x2 = x[..., 0], x[..., 1]
    r = (x2 - b * (x1**2 - 1)) / s
    return torch.stack([-x1 + r * 2 * b * x1 / s, -r / s], dim=-1)


def quartic_log_prob(x: Tensor) -> Tensor:
    return -0.25 * (x**4).sum(-1) - 0.5 * x[..., 0] * x[..., -1]


def quartic_grad(x: Tensor) -> Tensor:
    g = -(x**3)
    g[..., 0] = g[..., 0] - 0.5 * x[..., -1]
    g[..., -1] = g[..., -1] - 0.5 * x[..., 0]
    return g


def autograd_grad(log_prob: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    return lambda x: log_prob_and_grad(log_prob, x)[1]


def mc_z(values: Tensor, truth: Tensor) -> Tensor:
    """(mean - truth) / standard error for draws ``(T, C, K)`` of ``K`` statistics, the
    standard error sd / sqrt(ESS) from the measured effective sample size."""
    se = values.std(dim=(0, 1)) / ess(values).sqrt()
    return (values.mean(dim=(0, 1)) - truth) / se


def gaussian_moment_z(samples: Tensor) -> Tensor:
    """z-scores of the two means and the three covariance entries of ``(T, C, 2)`` draws
    against MEAN and COV (the centred products have the covariance as mean)."""
    d = samples - MEAN
    prods = torch.stack([d[..., 0] ** 2, d[..., 1] ** 2, d[..., 0] * d[..., 1]], dim=-1)
    return torch.cat([mc_z(samples, MEAN),
                      mc_z(prods, torch.stack([COV[0, 0], COV[1, 1], COV[0, 1]]))])


# --------------------------------------------------------------------------- exact methods


def test_inverse_cdf_sampling_gives_the_exponential_law():
    """[eq-samp-inverse-cdf] X = F^-1(U) with F^-1(u) = -log(1 - u) is Exp(1): mean 1 and
    variance 1 within 5 standard errors and a Kolmogorov-Smirnov test, on 200k draws. The
    draws are F^-1 of the generator's uniforms, which lie in (0, 1) (never 0: F^-1(0) may be
    -inf), and the dtype is respected."""
    n = 200_000
    x = inverse_cdf_sample(lambda u: -torch.log1p(-u), n, generator=gen(1))
    assert x.shape == (n,) and x.dtype == F64
    assert abs(float(x.mean()) - 1) < 5 / math.sqrt(n)
    assert abs(float(x.var()) - 1) < 5 * math.sqrt(8 / n)  # Var of (X - 1)^2 is 9 - 1 = 8
    assert scipy.stats.kstest(x.numpy(), "expon").pvalue > 1e-3
    # F^-1(U) of the generator's uniforms; a wrong inverse (the CDF itself) is rejected
    u = torch.rand(n, generator=gen(1), dtype=F64)
    torch.testing.assert_close(x, -torch.log1p(-u), rtol=1e-15, atol=0)
    wrong = inverse_cdf_sample(lambda u: 1 - torch.exp(-u), n, generator=gen(1))
    assert scipy.stats.kstest(wrong.numpy(), "expon").pvalue < 1e-10
    # the uniforms avoid 0, so log(U) is finite; float32 stays float32
    v = inverse_cdf_sample(torch.log, 100_000, generator=gen(2), dtype=torch.float32)
    assert v.dtype == torch.float32 and torch.isfinite(v).all()
    u32 = inverse_cdf_sample(lambda u: u, 100_000, generator=gen(2), dtype=torch.float32)
    assert float(u32.min()) > 0 and float(u32.max()) < 1


def std_normal_unnormalized(x: Tensor) -> Tensor:
    return -0.5 * (x**2).sum(-1)  # Z_p = (2 pi)^(D/2)


def test_rejection_sampling_accepts_at_rate_zp_over_m_zq_and_is_exact():
    """[thm-samp-rejection] [eq-samp-rejection] Target exp(-|x|^2 / 2) (unnormalized,
    Z_p = 2 pi) in D = 2 under q = N(0, s^2 I), s = 1.5: the tightest envelope is
    M = 2 pi s^2, with acceptance rate Z_p / (M Z_q) = s^-2, and a twice looser one halves
    the rate; both within 4.5 standard errors. The accepted points are N(0, I): mean,
    covariance within 5 standard errors, Kolmogorov-Smirnov tests of each coordinate and of
    |x|^2 ~ chi^2_2."""
    d, s, n = 2, 1.5, 30_000

    def sample_q(m: int, g: torch.Generator | None) -> Tensor:
        return s * torch.randn(m, d, generator=g, dtype=F64)

    def log_q(x: Tensor) -> Tensor:
        return -0.5 * (x**2).sum(-1) / s**2 - d * math.log(s) - 0.5 * d * LOG_2PI

    for extra, rate in ((0.0, s**-d), (math.log(2), s**-d / 2)):
        log_m = LOG_2PI + d * math.log(s) + extra
        res = rejection_sample(std_normal_unnormalized, sample_q, log_q, log_m, n,
                               generator=gen(3), batch_size=10_000)
        assert isinstance(res, RejectionResult)
        assert res.samples.shape == (n, d) and res.samples.dtype == F64
        assert res.acceptance_rate == pytest.approx(n / res.proposals, rel=1e-15)
        se = math.sqrt(rate * (1 - rate) / res.proposals)
        assert abs(res.acceptance_rate - rate) < 4.5 * se, (res.acceptance_rate, rate, se)
    x = res.samples
    assert (x.mean(0).abs() < 5 / math.sqrt(n)).all()
    cov = x.T @ x / n
    torch.testing.assert_close(cov, torch.eye(d, dtype=F64), rtol=0,
                               atol=5 * math.sqrt(2 / n))
    for k in range(d):
        assert scipy.stats.kstest(x[:, k].numpy(), "norm").pvalue > 1e-3
    assert scipy.stats.kstest((x**2).sum(1).numpy(), "chi2", args=(d,)).pvalue > 1e-3
    # the proposals alone are not the target: the test can fail
    assert scipy.stats.kstest(sample_q(n, gen(4))[:, 0].numpy(), "norm").pvalue < 1e-10


def test_rejection_sampling_of_a_beta_law_with_a_uniform_envelope():
    """[thm-samp-rejection] Unnormalized Beta(2, 5), p~(x) = x (1 - x)^4 on (0, 1), with
    Z_p = B(2, 5) = 1/30, under q = U(0, 1) with the tight envelope M = p~(1/5) = 0.08192:
    the rate is Z_p / M = 0.4069 (4.5 standard errors) and the draws pass a KS test against
    Beta(2, 5)."""
    def log_p(x: Tensor) -> Tensor:
        return torch.log(x[:, 0]) + 4 * torch.log1p(-x[:, 0])

    def sample_q(m: int, g: torch.Generator | None) -> Tensor:
        return torch.rand(m, 1, generator=g, dtype=F64)

    n, m_env = 20_000, 0.2 * 0.8**4
    res = rejection_sample(log_p, sample_q, lambda x: torch.zeros(x.shape[0], dtype=F64),
                           math.log(m_env), n, generator=gen(5))
    rate = (1 / 30) / m_env
    assert abs(res.acceptance_rate - rate) < 4.5 * math.sqrt(rate * (1 - rate) / res.proposals)
    assert scipy.stats.kstest(res.samples[:, 0].numpy(), "beta", args=(2, 5)).pvalue > 1e-3
    # an envelope below p~ somewhere is refused
    with pytest.raises(ValueError, match="the envelope fails"):
        rejection_sample(log_p, sample_q, lambda x: torch.zeros(x.shape[0], dtype=F64),
                         math.log(m_env) - 0.1, n, generator=gen(5))
    # an envelope far too loose gives up after max_proposals
    with pytest.raises(RuntimeError, match="too loose"):
        rejection_sample(log_p, sample_q, lambda x: torch.zeros(x.shape[0], dtype=F64),
                         30.0, 10, generator=gen(5), batch_size=1000, max_proposals=5000)


# --------------------------------------------------------------------------- exact MH kernel


def random_proposal(s: int, generator: torch.Generator, one_way: bool = False) -> Tensor:
    """A random non-symmetric row-stochastic ``(S, S)`` matrix whose zeros come in symmetric
    pairs (Q_ij = 0 iff Q_ji = 0), irreducible thanks to a ring of positive entries; with
    ``one_way``, also some pairs with Q_ij > 0 but Q_ji = 0."""
    q = torch.rand(s, s, generator=generator, dtype=F64) + 0.05
    mask = torch.rand(s, s, generator=generator) < 0.4
    mask = mask | mask.T  # symmetric pattern of zeros
    ring = torch.zeros(s, s, dtype=torch.bool)
    idx = torch.arange(s)
    ring[idx, (idx + 1) % s] = ring[(idx + 1) % s, idx] = True
    q = torch.where(mask & ~ring, torch.zeros_like(q), q)
    if one_way:
        q[0, 2], q[2, 0] = 0.3, 0.0
    return q / q.sum(1, keepdim=True)


def test_mh_transition_matrix_satisfies_detailed_balance():
    """[eq-samp-detailed-balance] [thm-samp-mh] [eq-samp-mh-accept] The exact MH matrix of a
    random positive target and a random non-symmetric proposal with zeros: entries in
    [0, 1], rows summing to 1, pi_i P_ij = pi_j P_ji and pi P = pi to 1e-12, pi its unique
    stationary law (the eigenvector of eigenvalue 1), P_ij <= Q_ij off the diagonal (a
    proposal is only ever thinned). The Metropolis ratio without the Hastings factor
    Q_ji / Q_ij breaks detailed balance and invariance by far more."""
    g = gen(6)
    s = 7
    pi = torch.exp(torch.randn(s, generator=g, dtype=F64))  # unnormalized on purpose
    q = random_proposal(s, g)
    assert (q == 0).any() and not torch.allclose(q, q.T)
    p = mh_transition_matrix(pi, q)
    assert p.shape == (s, s) and p.dtype == F64
    assert float(p.min()) >= 0 and float(p.max()) <= 1
    torch.testing.assert_close(p.sum(1), torch.ones(s, dtype=F64), rtol=0, atol=1e-12)
    w = pi / pi.sum()
    flow = w[:, None] * p
    torch.testing.assert_close(flow, flow.T, rtol=0, atol=1e-12)
    torch.testing.assert_close(w @ p, w, rtol=0, atol=1e-12)
    off = ~torch.eye(s, dtype=torch.bool)
    assert (p[off] <= q[off] + 1e-15).all()
    assert (p[off][q[off] == 0] == 0).all()
    evals, evecs = torch.linalg.eig(p.T)
    one = (evals - 1).abs() < 1e-9
    assert int(one.sum()) == 1  # irreducible: pi is the only stationary law
    v = evecs[:, one].real[:, 0]
    torch.testing.assert_close(v / v.sum(), w, rtol=0, atol=1e-12)
    # Metropolis without the Hastings ratio (written here): not reversible, not invariant
    metro = q * torch.clamp(pi[None, :] / pi[:, None], max=1.0)
    metro.fill_diagonal_(0.0)
    metro = metro + torch.diag(1 - metro.sum(1))
    bad_flow = w[:, None] * metro
    assert float((bad_flow - bad_flow.T).abs().max()) > 1e-3
    assert float((w @ metro - w).abs().max()) > 1e-3


def test_mh_transition_matrix_special_proposals():
    """[eq-samp-mh-accept] Closed forms: the independence proposal Q_ij = pi_j (already
    pi-reversible) is accepted always, P = Q; a one-way proposal (Q_ij > 0, Q_ji = 0) is
    never accepted, P_ij = 0, and detailed balance still holds; the docstring's two-state
    example; float32 in, float32 out."""
    g = gen(7)
    s = 5
    pi = torch.exp(torch.randn(s, generator=g, dtype=F64))
    w = pi / pi.sum()
    q_ind = w.expand(s, s).clone()
    torch.testing.assert_close(mh_transition_matrix(pi, q_ind), q_ind, rtol=0, atol=1e-15)
    q = random_proposal(s, g, one_way=True)
    assert q[0, 2] > 0 and q[2, 0] == 0
    p = mh_transition_matrix(pi, q)
    assert p[0, 2] == 0
    flow = w[:, None] * p
    torch.testing.assert_close(flow, flow.T, rtol=0, atol=1e-12)
    p2 = mh_transition_matrix(torch.tensor([1.0, 3.0]), torch.full((2, 2), 0.5))
    assert p2.dtype == torch.float32
    torch.testing.assert_close(p2, torch.tensor([[0.5, 0.5], [1 / 6, 5 / 6]]))


# --------------------------------------------------------------------------- MCMC on a Gaussian

SAMPLERS = {
    # name: (run from exact draws x0 with a generator, least acceptance rate expected)
    "random_walk_mh": (lambda x0, g: random_walk_mh(gauss_log_prob, x0, 300, 0.6,
                                                    generator=g), 0.4),
    "mala": (lambda x0, g: mala(gauss_log_prob, x0, 300, 0.15, generator=g), 0.6),
    "hmc": (lambda x0, g: hmc(gauss_log_prob, x0, 100, 0.7, 3, jitter=0.1, generator=g), 0.6),
}


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_samplers_leave_a_correlated_gaussian_invariant(name):
    """[thm-samp-mh] [eq-samp-mh-accept] [eq-samp-mala] [eq-samp-hmc-accept] Random-walk
    Metropolis, MALA and HMC started from 1000 exact draws of a correlated Gaussian
    (correlation 0.9, sd 1 and 2) keep its mean and covariance: every z-score, with the
    standard error from the measured ESS, is below 4.5. The chains do move (acceptance
    rates bounded below and the states change), so the test is not passed by standing
    still."""
    run, least = SAMPLERS[name]
    g = gen(8)
    x0 = gauss_draws(1000, g)
    out = run(x0, g)
    assert isinstance(out, Chains) and out.samples.shape[1:] == (1000, 2)
    assert float(out.acceptance.mean()) > least
    assert float((out.samples[-1] - x0).norm(dim=1).median()) > 0.3
    z = gaussian_moment_z(out.samples)
    assert float(z.abs().max()) < 4.5, z


def mala_without_correction(log_prob, x0, steps, h, generator):
    """The Langevin proposal accepted with min(1, p(x') / p(x)): the Metropolis ratio of a
    symmetric proposal, wrong for this one."""
    x = x0.clone()
    lp, grad = log_prob_and_grad(log_prob, x)
    kept = []
    for _ in range(steps):
        prop = x + h * grad + math.sqrt(2 * h) * torch.randn(x.shape, generator=generator,
                                                             dtype=x.dtype)
        lp2, grad2 = log_prob_and_grad(log_prob, prop)
        ok = torch.log(torch.rand(x.shape[0], generator=generator, dtype=x.dtype)) < lp2 - lp
        x = torch.where(ok[:, None], prop, x)
        lp, grad = torch.where(ok, lp2, lp), torch.where(ok[:, None], grad2, grad)
        kept.append(x)
    return torch.stack(kept)


def test_the_gaussian_tolerance_detects_a_missing_proposal_correction():
    """[eq-samp-mala] [eq-samp-mh-accept] The same check as above rejects a MALA without
    the proposal ratio q(x | x') / q(x' | x) (z-scores above 20) and ULA at a large step
    (its stationary covariance is inflated, [prop-samp-ula-bias]), so 4.5 standard errors
    is a meaningful tolerance."""
    g = gen(8)
    wrong = mala_without_correction(gauss_log_prob, gauss_draws(1000, g), 300, 0.15, g)
    assert float(gaussian_moment_z(wrong).abs().max()) > 20
    g = gen(8)
    biased = ula(gauss_log_prob, gauss_draws(1000, g), 400, 0.2, burn_in=100, generator=g)
    assert float(gaussian_moment_z(biased.samples).abs().max()) > 10


# --------------------------------------------------------------------------- ULA


@pytest.mark.parametrize("s,h", [(1.0, 0.2), (1.0, 0.5), (1.0, 1.0), (2.0, 1.0)])
def test_ula_stationary_variance_is_inflated_by_the_step(s, h):
    """[eq-samp-ula] [prop-samp-ula-bias] [eq-samp-ula-var] On N(0, s^2), ULA is the AR(1)
    chain x' = (1 - h / s^2) x + sqrt(2h) xi, whose stationary variance is
    s^2 / (1 - h / (2 s^2)). Measured on 20k chains after burn-in: the mean is 0 and the
    variance the formula's within 4.5 standard errors, and s^2 (the target's) is more than
    8 standard errors away. One step from a fixed x has mean x + h grad log p(x) and
    variance 2h. Every move is accepted."""
    def log_p(x: Tensor) -> Tensor:
        return -0.5 * (x**2).sum(-1) / s**2

    c = 20_000
    g = gen(9)
    x0 = s * torch.randn(c, 1, generator=g, dtype=F64)
    out = ula(log_p, x0, 100, h, burn_in=60, generator=g)
    assert out.samples.shape == (40, c, 1)
    assert torch.equal(out.acceptance, torch.ones(c, dtype=F64))
    var = s**2 / (1 - h / (2 * s**2))
    x = out.samples
    assert abs(float(mc_z(x, torch.zeros(1, dtype=F64)))) < 4.5
    sq = x**2
    se = float(sq.std() / ess(sq).sqrt())
    assert abs(float(sq.mean()) - var) < 4.5 * se, (float(sq.mean()), var, se)
    assert abs(float(sq.mean()) - s**2) > 8 * se
    # one step from x = 1.5: N(x + h grad log p(x), 2h)
    one = ula(log_p, torch.full((c, 1), 1.5, dtype=F64), 1, h, generator=gen(10)).samples[0]
    m1 = 1.5 * (1 - h / s**2)
    assert abs(float(one.mean()) - m1) < 5 * math.sqrt(2 * h / c)
    assert abs(float(one.var()) - 2 * h) < 5 * 2 * h * math.sqrt(2 / c)


# --------------------------------------------------------------------------- leapfrog


def test_leapfrog_on_a_gaussian_is_the_closed_form_linear_map():
    """[eq-samp-leapfrog] [eq-samp-hamiltonian] For log p = -|x|^2 / 2 one leapfrog step is
    the linear map (x, p) -> ((1 - h^2/2) x + h p, (1 - h^2/2) p - h (1 - h^2/4) x), of
    determinant 1; L steps are its L-th power (1e-12). A negative step integrates backwards:
    it undoes a positive one."""
    g = gen(11)
    x, p = torch.randn(2, 6, 3, generator=g, dtype=F64)
    h, n = 0.3, 17
    a = torch.tensor([[1 - h**2 / 2, h], [-h * (1 - h**2 / 4), 1 - h**2 / 2]], dtype=F64)
    assert float(torch.linalg.det(a)) == pytest.approx(1.0, abs=1e-15)
    an = torch.linalg.matrix_power(a, n)
    x1, p1 = leapfrog(lambda z: -z, x, p, h, n)
    torch.testing.assert_close(x1, an[0, 0] * x + an[0, 1] * p, rtol=0, atol=1e-12)
    torch.testing.assert_close(p1, an[1, 0] * x + an[1, 1] * p, rtol=0, atol=1e-12)
    xb, pb = leapfrog(lambda z: -z, x1, p1, -h, n)
    torch.testing.assert_close(xb, x, rtol=0, atol=1e-12)
    torch.testing.assert_close(pb, p, rtol=0, atol=1e-12)


@pytest.mark.parametrize("target", ["banana", "quartic"])
def test_leapfrog_is_reversible(target):
    """[prop-samp-leapfrog] On a non-quadratic target (the banana, a coupled quartic in
    D = 3): L steps forward, negate the momentum, L steps, negate again: back at the start
    to 1e-10 in float64 (5 chains, L = 60)."""
    g = gen(12)
    if target == "banana":
        grad, x = banana_grad, BANANA.sample(5, generator=g, dtype=F64)
    else:
        grad, x = quartic_grad, torch.randn(5, 3, generator=g, dtype=F64)
    p = torch.randn(x.shape, generator=g, dtype=F64)
    x1, p1 = leapfrog(grad, x, p, 0.05, 60)
    assert float((x1 - x).abs().max()) > 0.1  # it went somewhere
    x2, p2 = leapfrog(grad, x1, -p1, 0.05, 60)
    torch.testing.assert_close(x2, x, rtol=0, atol=1e-10)
    torch.testing.assert_close(-p2, p, rtol=0, atol=1e-10)


def test_banana_gradient_is_the_autograd_gradient():
    """The closed-form banana gradient used above equals autograd's (1e-12)."""
    x = 1.5 * torch.randn(20, 2, generator=gen(13), dtype=F64)
    torch.testing.assert_close(banana_grad(x), autograd_grad(BANANA.log_prob)(x), rtol=0,
                               atol=1e-12)
    torch.testing.assert_close(quartic_grad(x), autograd_grad(quartic_log_prob)(x), rtol=0,
                               atol=1e-12)


def test_leapfrog_preserves_volume():
    """[prop-samp-leapfrog] The determinant of the Jacobian of (x, p) -> (x', p') after
    L = 25 leapfrog steps, by autograd, is 1 to 1e-10 on the banana and on the quartic, at
    several points, although the map is far from the identity. Explicit Euler (written
    here) is not volume-preserving: on log p = -|x|^2 / 2 in 2-D its determinant is
    (1 + h^2)^(2L) = 1.64, which the same autograd computation finds."""
    g = gen(14)

    def flow(grad: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
        def f(z: Tensor) -> Tensor:
            x, p = leapfrog(grad, z[None, :2], z[None, 2:], 0.1, 25)
            return torch.cat([x[0], p[0]])
        return f

    def euler(z: Tensor) -> Tensor:  # on log p = -|x|^2 / 2
        x, p = z[None, :2], z[None, 2:]
        for _ in range(25):
            x, p = x + 0.1 * p, p - 0.1 * x
        return torch.cat([x[0], p[0]])

    for grad in (banana_grad, quartic_grad):
        for _ in range(3):
            z = torch.randn(4, generator=g, dtype=F64)
            jac = torch.autograd.functional.jacobian(flow(grad), z)
            assert float((jac - torch.eye(4, dtype=F64)).abs().max()) > 0.1
            assert float(torch.linalg.det(jac)) == pytest.approx(1.0, abs=1e-10)
    z = torch.randn(4, generator=g, dtype=F64)
    det_euler = float(torch.linalg.det(torch.autograd.functional.jacobian(euler, z)))
    assert det_euler == pytest.approx((1 + 0.1**2) ** 50, rel=1e-12)  # 1.64


def test_leapfrog_energy_error_is_second_order():
    """[prop-samp-leapfrog] [eq-samp-hamiltonian] Over a trajectory of fixed length 3 on the
    banana (8 chains), the largest |H(x_t, p_t) - H(x_0, p_0)| falls by a factor in
    [3.5, 4.5] each time the step halves (h = 0.04, 0.02, 0.01): an O(h^2) error. (A full
    kick in place of a half kick gives an O(h) error, a factor of 2.)"""
    g = gen(15)
    x = BANANA.sample(8, generator=g, dtype=F64)
    p = torch.randn(x.shape, generator=g, dtype=F64)
    h0 = hamiltonian(BANANA.log_prob, x, p)
    errors = []
    for h in (0.04, 0.02, 0.01):
        xs, ps = leapfrog(banana_grad, x, p, h, round(3 / h), return_path=True)
        energy = torch.stack([hamiltonian(BANANA.log_prob, a, b) for a, b in zip(xs, ps)])
        errors.append(float((energy - h0).abs().max()))
    ratios = [errors[0] / errors[1], errors[1] / errors[2]]
    assert all(3.5 < r < 4.5 for r in ratios), (errors, ratios)
    assert errors[-1] < 1e-2


def test_leapfrog_path_has_the_momenta_at_integer_times():
    """[eq-samp-leapfrog] With return_path, the paths have shape (L + 1, C, D), start at
    (x, p), end at the result without the path (bit for bit), and hold the momenta at
    integer times: those of an unmerged half kick, drift, half kick loop (1e-12)."""
    g = gen(16)
    x = BANANA.sample(4, generator=g, dtype=F64)
    p = torch.randn(x.shape, generator=g, dtype=F64)
    h, n = 0.07, 9
    xs, ps = leapfrog(banana_grad, x, p, h, n, return_path=True)
    assert xs.shape == ps.shape == (n + 1, 4, 2)
    assert torch.equal(xs[0], x) and torch.equal(ps[0], p)
    x_end, p_end = leapfrog(banana_grad, x, p, h, n)
    assert torch.equal(xs[-1], x_end) and torch.equal(ps[-1], p_end)
    xk, pk = x, p
    for k in range(1, n + 1):
        pk = pk + 0.5 * h * banana_grad(xk)
        xk = xk + h * pk
        pk = pk + 0.5 * h * banana_grad(xk)
        torch.testing.assert_close(xs[k], xk, rtol=0, atol=1e-12)
        torch.testing.assert_close(ps[k], pk, rtol=0, atol=1e-12)


def test_hamiltonian_is_potential_plus_kinetic_energy():
    """[eq-samp-hamiltonian] H(x, p) = -log p~(x) + |p|^2 / 2: for the normalized Gaussian
    the closed form (x - m)^T S^-1 (x - m) / 2 + log det(2 pi S) / 2 + |p|^2 / 2."""
    g = gen(17)
    x, p = torch.randn(2, 6, 2, generator=g, dtype=F64)
    mvn = torch.distributions.MultivariateNormal(MEAN, COV)
    d = x - MEAN
    want = (0.5 * ((d @ PREC) * d).sum(1) + 0.5 * torch.logdet(2 * math.pi * COV)
            + 0.5 * (p**2).sum(1))
    torch.testing.assert_close(hamiltonian(mvn.log_prob, x, p), want, rtol=1e-13, atol=1e-13)


# --------------------------------------------------------------------------- diagnostics


def ar1(phi: float, t: int, c: int, seed: int) -> Tensor:
    """``c`` stationary AR(1) chains x_t = phi x_{t-1} + e_t, shape ``(t, c)``."""
    e = np.random.default_rng(seed).standard_normal((c, t))
    e[:, 0] /= math.sqrt(1 - phi**2)  # x_0 from the stationary law N(0, 1 / (1 - phi^2))
    return torch.from_numpy(scipy.signal.lfilter([1.0], [1.0, -phi], e, axis=1).T.copy())


def acf_direct(x: np.ndarray) -> np.ndarray:
    """Biased sample autocorrelation of one chain by the double sum."""
    t = len(x)
    xc = x - x.mean()
    gamma = np.array([np.sum(xc[: t - k] * xc[k:]) / t for k in range(t)])
    return gamma / gamma[0]


def test_autocorrelation_is_the_biased_sample_acf():
    """[eq-samp-acf] autocorrelation equals the direct double sum
    gamma_k / gamma_0, gamma_k = (1/T) sum_t (x_t - xbar)(x_{t+k} - xbar), per chain and
    coordinate, to 1e-12, for inputs (T,), (T, C), (T, C, D) (odd and even T), in the
    input's shape and in float64."""
    g = gen(18)
    for shape in [(50,), (37, 3), (64, 2, 3)]:
        x = 2 + torch.randn(shape, generator=g, dtype=F64).cumsum(0)  # correlated, offset
        rho = autocorrelation(x)
        assert rho.shape == x.shape and rho.dtype == F64
        flat = x.reshape(shape[0], -1).numpy()
        want = np.stack([acf_direct(flat[:, j]) for j in range(flat.shape[1])], 1)
        np.testing.assert_allclose(rho.reshape(shape[0], -1).numpy(), want, rtol=0, atol=1e-12)
    assert autocorrelation(x.float()).dtype == F64


def test_autocorrelation_of_ar1_is_geometric():
    """[eq-samp-acf] For AR(1) chains the autocorrelation at lag k is phi^k: the average
    over 4 chains of 50k steps agrees to 0.02 (about 5 standard errors) for k <= 6, for
    phi = 0.8 and phi = -0.6."""
    for phi in (0.8, -0.6):
        rho = autocorrelation(ar1(phi, 50_000, 4, seed=19)).mean(1)
        want = phi ** torch.arange(7, dtype=F64)
        torch.testing.assert_close(rho[:7], want, rtol=0, atol=0.02)


@pytest.mark.parametrize("phi", [0.9, 0.5, 0.0, -0.5])
def test_ess_of_ar1_chains(phi):
    """[eq-samp-ess] For AR(1) chains the integrated autocorrelation time is
    (1 + phi) / (1 - phi), so ESS = CT (1 - phi) / (1 + phi): within 10% on 8 chains of
    50k steps (iid draws, phi = 0, give about CT; a negative phi gives more than CT)."""
    c, t = 8, 50_000
    got = float(ess(ar1(phi, t, c, seed=20)))
    want = c * t * (1 - phi) / (1 + phi)
    assert got == pytest.approx(want, rel=0.1), (got, want)


def ess_direct(x: np.ndarray) -> float:
    """The multi-chain ESS of eq-samp-ess for draws ``(T, C)``, written with loops: the
    chains' mean biased autocovariance, rho_k = 1 - (W - gamma_k) / var+, rho_0 = 1, Geyer's
    initial monotone sequence of pair sums, tau = -1 + 2 sum, floored at 1 / log10(CT)."""
    t, c = x.shape
    gamma = np.mean([acf_direct(x[:, j]) * x[:, j].var() for j in range(c)], axis=0)
    w = x.var(0, ddof=1).mean()
    var_plus = (t - 1) / t * w + (x.mean(0).var(ddof=1) if c > 1 else 0.0)
    rho = 1 - (w - gamma) / var_plus
    rho[0] = 1.0
    tau, prev = -1.0, math.inf
    for m in range(t // 2):
        pair = rho[2 * m] + rho[2 * m + 1]
        if pair <= 0:
            break
        prev = min(prev, pair)
        tau += 2 * prev
    return c * t / max(tau, 1 / math.log10(max(c * t, 10)))


def test_ess_matches_its_definition_on_short_chains():
    """[eq-samp-ess] On short chains (where rho_0 = 1 and the pair sums matter) the ESS
    equals the definition written with loops (1e-10 relative), for 1 and 3 chains, odd and
    even T, random walks and anticorrelated chains; shapes: (T,) and (T, C) give a 0-dim
    tensor, (T, C, D) gives (D,)."""
    g = gen(21)
    chains = [torch.randn(9, 3, generator=g, dtype=F64).cumsum(0),
              torch.randn(12, 1, generator=g, dtype=F64),
              torch.randn(31, 3, generator=g, dtype=F64) + torch.tensor([0.0, 0.5, -0.3],
                                                                         dtype=F64),
              torch.randn(40, 2, generator=g, dtype=F64) * (-1.0) ** torch.arange(40)[:, None]
              + 0.3 * torch.randn(40, 2, generator=g, dtype=F64)]
    for x in chains:
        got = ess(x)
        assert got.shape == () and got.dtype == F64
        assert float(got) == pytest.approx(ess_direct(x.numpy()), rel=1e-10)
    x = chains[0]
    assert float(ess(x[:, 0])) == pytest.approx(ess_direct(x[:, :1].numpy()), rel=1e-10)
    xd = torch.stack([x, 2 * x + 1, torch.randn(x.shape, generator=g, dtype=F64)], dim=-1)
    got = ess(xd)
    assert got.shape == (3,)
    torch.testing.assert_close(got[0], got[1], rtol=1e-12, atol=0)  # affine invariance
    assert float(got[2]) == pytest.approx(ess_direct(xd[..., 2].numpy()), rel=1e-10)


def test_ess_drops_when_chains_disagree():
    """[eq-samp-ess] [eq-samp-rhat] iid chains have an ESS near CT; shifting the chains
    apart (by 1 sd) makes the between-chain variance count and the ESS falls below CT / 10."""
    x = torch.randn(2000, 4, generator=gen(22), dtype=F64)
    assert float(ess(x)) == pytest.approx(8000, rel=0.1)
    shifted = x + torch.tensor([-1.5, -0.5, 0.5, 1.5], dtype=F64)
    assert float(ess(shifted)) < 800


def rhat_direct(x: np.ndarray, split: bool = True) -> float:
    """R-hat of draws ``(T, C)``, sqrt(((n - 1)/n W + B/n) / W) with n draws per chain; with
    ``split``, the first and last floor(T/2) draws of each chain count as separate chains."""
    t = x.shape[0]
    n = t // 2 if split else t
    parts = np.concatenate([x[:n], x[t - n:]], axis=1) if split else x
    w = parts.var(0, ddof=1).mean()
    b_over_n = parts.mean(0).var(ddof=1) if parts.shape[1] > 1 else 0.0
    return math.sqrt(((n - 1) / n * w + b_over_n) / w)


def test_rhat_matches_the_split_definition():
    """[eq-samp-rhat] rhat equals the split-R-hat formula evaluated directly (1e-12), for 1
    and 4 chains, odd and even T; (T, C, D) gives one value per coordinate."""
    g = gen(23)
    for shape in [(10, 4), (11, 4), (9, 1), (100, 3)]:
        x = torch.randn(shape, generator=g, dtype=F64).cumsum(0)
        assert float(rhat(x)) == pytest.approx(rhat_direct(x.numpy()), rel=1e-12)
    x = torch.randn(50, 3, 2, generator=g, dtype=F64)
    got = rhat(x)
    assert got.shape == (2,) and got.dtype == F64
    for k in range(2):
        assert float(got[k]) == pytest.approx(rhat_direct(x[..., k].numpy()), rel=1e-12)
    assert float(rhat(x[:, 0, 0])) == pytest.approx(rhat_direct(x[:, :1, 0].numpy()),
                                                    rel=1e-12)


def test_rhat_flags_disagreeing_and_drifting_chains():
    """[eq-samp-rhat] iid chains: R-hat < 1.01; chains with different means: > 1.5; four
    chains drifting together from 0 to 8: > 1.5 thanks to the split, while R-hat without
    the split misses it (< 1.01: the chains agree with each other)."""
    g = gen(24)
    iid = torch.randn(2000, 4, generator=g, dtype=F64)
    assert 0.99 < float(rhat(iid)) < 1.01
    apart = iid + torch.tensor([0.0, 0.0, 3.0, 3.0], dtype=F64)
    assert float(rhat(apart)) > 1.5
    drift = 8 * torch.arange(2000, dtype=F64)[:, None] / 2000 + iid
    assert float(rhat(drift)) > 1.5
    assert float(rhat(drift[:, 0])) > 1.5  # a single chain too
    assert rhat_direct(drift.numpy(), split=False) < 1.01


# --------------------------------------------------------------------------- tempering

WEIGHTS, CENTRES, SD = (0.3, 0.7), (-4.0, 4.0), 0.5  # modes 16 sd apart


def mixture_log_prob(x: Tensor) -> Tensor:
    """log of 0.3 N(-4, 0.5^2) + 0.7 N(4, 0.5^2), ``(N, 1) -> (N,)``."""
    comps = torch.stack([math.log(w) - 0.5 * ((x[:, 0] - c) / SD) ** 2
                         for w, c in zip(WEIGHTS, CENTRES)])
    return torch.logsumexp(comps, 0) - math.log(SD) - 0.5 * LOG_2PI


def tempered_moments(beta: float) -> Tensor:
    """P(x > 0), E[x], E[x^2] under p^beta / Z(beta), by quadrature (step 1e-3)."""
    x = torch.arange(-40.0, 40.0, 1e-3, dtype=F64)[:, None]
    w = torch.exp(beta * mixture_log_prob(x))
    w = w / w.sum()
    x = x[:, 0]
    return torch.stack([(w * (x > 0)).sum(), (w * x).sum(), (w * x**2).sum()])


def test_parallel_tempering_crosses_between_modes_with_the_right_weights():
    """[eq-samp-swap] Parallel tempering on 0.3 N(-4, 0.5^2) + 0.7 N(4, 0.5^2), every chain
    started in the small left mode: the beta = 1 chains spend 0.7 of their time in the right
    mode and have the mixture's mean and second moment, and every tempered chain k has those
    of p^beta_k (by quadrature), all within 4.5 standard errors from the measured ESS. The
    swap rates are in (0, 1)."""
    betas = [1.0, 0.55, 0.3, 0.16, 0.09, 0.05]
    x0 = torch.full((400, 1), -4.0, dtype=F64)
    res = parallel_tempering(mixture_log_prob, x0, betas, 1500, 0.6, burn_in=300,
                             generator=gen(25))
    assert isinstance(res, TemperingResult)
    assert res.samples.shape == (1200, 400, 1) and res.hot.shape == (1200, 6, 400, 1)
    assert torch.equal(res.samples, res.hot[:, 0])
    assert res.acceptance.shape == (6,) and res.swap_acceptance.shape == (5,)
    assert ((res.swap_acceptance > 0.1) & (res.swap_acceptance < 1)).all()
    for k, beta in enumerate(betas):
        x = res.hot[:, k, :, 0]
        stats = torch.stack([(x > 0).to(F64), x, x**2], dim=-1)
        z = mc_z(stats, tempered_moments(beta))
        assert float(z.abs().max()) < 4.5, (beta, z)
    assert float(tempered_moments(1.0)[0]) == pytest.approx(0.7, abs=1e-9)


def test_random_walk_mh_stays_in_the_mode_it_starts_in():
    """[eq-samp-swap] Without tempering, random-walk Metropolis started in the left mode
    never reaches the right one (the density between the modes falls to e^-32 of the
    peaks), though it mixes within its mode; same step size and run length as above."""
    out = random_walk_mh(mixture_log_prob, torch.full((400, 1), -4.0, dtype=F64), 1500,
                         0.6, generator=gen(26))
    assert float(out.samples.max()) < 0
    assert float(out.acceptance.mean()) > 0.3
    assert float(out.samples.std()) == pytest.approx(SD, rel=0.1)


# --------------------------------------------------------------------------- contracts

RUNS = {
    "random_walk_mh": lambda lp, x0, g, **kw: random_walk_mh(lp, x0, 12, 0.5, generator=g,
                                                             **kw),
    "ula": lambda lp, x0, g, **kw: ula(lp, x0, 12, 0.1, generator=g, **kw),
    "mala": lambda lp, x0, g, **kw: mala(lp, x0, 12, 0.1, generator=g, **kw),
    "hmc": lambda lp, x0, g, **kw: hmc(lp, x0, 12, 0.1, 3, jitter=0.3, generator=g, **kw),
    "parallel_tempering": lambda lp, x0, g, **kw: parallel_tempering(
        lp, x0, [1.0, 0.5, 0.2], 12, 0.5, generator=g, **kw),
}
# log-density evaluations (each a batch of all chains) and gradient evaluations per chain
EVALS = {"random_walk_mh": (13, 0), "ula": (12, 12), "mala": (13, 13), "hmc": (37, 37),
         "parallel_tempering": (13, None)}


@pytest.mark.parametrize("name", list(RUNS))
def test_samplers_are_reproducible_count_evaluations_and_keep_the_global_rng(name):
    """The same seed gives the same chains, another seed other chains; the global RNG is
    untouched; burn_in and thin keep samples[burn_in::thin] of the full run; the reported
    evaluation counts are the calls actually made; the shapes are as documented; x0 is not
    modified."""
    calls = []

    def counted(x: Tensor) -> Tensor:
        calls.append(x.shape[0])
        return gauss_log_prob(x)

    x0 = gauss_draws(5, gen(27))
    x0_copy = x0.clone()
    run = RUNS[name]
    state = torch.random.get_rng_state()
    a = run(counted, x0, gen(1))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(x0, x0_copy)
    b = run(gauss_log_prob, x0, gen(1))
    c = run(gauss_log_prob, x0, gen(2))
    assert torch.equal(a.samples, b.samples) and not torch.equal(a.samples, c.samples)
    assert torch.equal(a.acceptance, b.acceptance)
    assert a.samples.shape == (12, 5, 2) and a.samples.dtype == F64
    lp_evals, grad_evals = EVALS[name]
    if name == "parallel_tempering":
        assert a.hot.shape == (12, 3, 5, 2) and a.acceptance.shape == (3,)
        assert calls == [15] * lp_evals  # K * C points per call
    else:
        assert a.acceptance.shape == (5,) and a.acceptance.dtype == F64
        assert ((a.acceptance >= 0) & (a.acceptance <= 1)).all()
        assert (a.log_prob_evals, a.grad_evals) == (lp_evals, grad_evals)
        assert calls == [5] * lp_evals
    part = run(gauss_log_prob, x0, gen(1), burn_in=3, thin=4)
    assert torch.equal(part.samples, a.samples[3::4])


def test_samplers_accept_float32_and_stay_float32():
    """float32 chains stay float32 (the samplers use the dtype of x0)."""
    x0 = torch.zeros(4, 2)
    for name, run in RUNS.items():
        out = run(gauss_log_prob, x0, gen(3))
        assert out.samples.dtype == torch.float32, name
        assert torch.isfinite(out.samples).all(), name


def test_hmc_rejects_diverging_trajectories():
    """[eq-samp-hmc-accept] A step far beyond the stability limit makes the energy blow up
    (inf or nan): every such proposal is rejected and the chains stay where they were."""
    x0 = gauss_draws(20, gen(28))
    out = hmc(gauss_log_prob, x0, 3, 50.0, 40, generator=gen(29))
    assert torch.equal(out.samples[-1], x0)
    assert torch.equal(out.acceptance, torch.zeros(20, dtype=F64))


def _lp(x: Tensor) -> Tensor:
    return -0.5 * (x**2).sum(-1)


X0 = torch.zeros(3, 2, dtype=F64)
LONG = torch.randn(10, 2, dtype=F64)
Q2 = torch.full((2, 2), 0.5, dtype=F64)

# --------------------------------------------------------------------------- Gibbs


def test_gibbs_sweep_leaves_a_gaussian_invariant():
    """[thm-samp-gibbs, eq-samp-gibbs-gaussian] One systematic-scan sweep from exact draws of
    N(mu, Sigma) in D = 3 (strong correlations) gives draws of N(mu, Sigma) again: sample mean
    and covariance within 5 standard errors. Updating every coordinate from the old state (a
    Jacobi sweep) would fail (its covariance is off by far more)."""
    g = gen(40)
    a = torch.randn(3, 3, generator=g, dtype=F64)
    cov = a @ a.T + 0.1 * torch.eye(3, dtype=F64)
    mu = torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    n = 200_000
    x = mu + torch.randn(n, 3, generator=g, dtype=F64) @ torch.linalg.cholesky(cov).T
    y = gibbs_sweep_gaussian(x, torch.linalg.inv(cov), torch.randn(n, 3, generator=g,
                                                                  dtype=F64), mu)
    sd = cov.diagonal().sqrt()
    assert ((y.mean(0) - mu).abs() < 5 * sd / math.sqrt(n)).all()
    emp = torch.cov(y.T)
    # se of a covariance entry: sqrt((S_ii S_jj + S_ij^2) / n)
    se = ((cov.diagonal()[:, None] * cov.diagonal()[None, :] + cov**2) / n).sqrt()
    assert ((emp - cov).abs() < 5 * se).all()


def test_gibbs_on_a_bivariate_gaussian_is_an_ar1_chain_with_coefficient_rho_squared():
    """[eq-samp-gibbs-tau] For unit variances and correlation rho, x1 after each sweep is an
    AR(1) chain with coefficient rho^2: lag-1 autocorrelation rho^2 (not rho) within 5 s.e.,
    and the ESS per sweep is (1 - rho^2) / (1 + rho^2) within 10 %."""
    rho = 0.8
    cov = torch.tensor([[1.0, rho], [rho, 1.0]], dtype=F64)
    x0 = torch.randn(2000, 2, generator=gen(41), dtype=F64) @ torch.linalg.cholesky(cov).T
    out = gibbs_gaussian(torch.linalg.inv(cov), x0, 200, generator=gen(42))
    assert out.samples.shape == (200, 2000, 2) and bool((out.acceptance == 1).all())
    assert out.grad_evals == 0 and out.log_prob_evals == 0
    x1 = out.samples[:, :, 0]
    lag1 = float((x1[1:] * x1[:-1]).mean() / x1.square().mean())
    assert abs(lag1 - rho**2) < 5 * (1 - rho**4) / math.sqrt(x1.numel())
    per_sweep = float(ess(x1)) / x1.numel()
    assert per_sweep == pytest.approx((1 - rho**2) / (1 + rho**2), rel=0.1)


BAD = [
    # Gibbs: shapes of the precision and the noise, number of sweeps
    (lambda: gibbs_sweep_gaussian(torch.zeros(3, 2), torch.eye(3), torch.zeros(3, 2)),
     ValueError, "precision must be a"),
    (lambda: gibbs_sweep_gaussian(torch.zeros(3, 2), torch.eye(2), torch.zeros(2, 2)),
     ValueError, "noise must be a tensor"),
    (lambda: gibbs_gaussian(torch.eye(2), torch.zeros(3, 2), 0), ValueError,
     "steps must be a positive int"),
    # samplers: states, callables, chain arguments
    (lambda: random_walk_mh(_lp, [[0.0, 0.0]], 5, 0.5), TypeError, "x0 must be a Tensor"),
    (lambda: random_walk_mh(_lp, torch.zeros(3), 5, 0.5), ValueError, r"shape \(C, D\)"),
    (lambda: random_walk_mh(_lp, torch.zeros(3, 2, dtype=torch.long), 5, 0.5), TypeError,
     "floating-point"),
    (lambda: random_walk_mh("lp", X0, 5, 0.5), TypeError, "log_prob must be a callable"),
    (lambda: random_walk_mh(lambda x: x, X0, 5, 0.5), ValueError,
     r"log_prob must map \(C, D\) to \(C,\)"),
    (lambda: random_walk_mh(_lp, X0, 0, 0.5), ValueError, "steps must be a positive int"),
    (lambda: random_walk_mh(_lp, X0, 5.0, 0.5), TypeError, "steps must be a positive int"),
    (lambda: random_walk_mh(_lp, X0, 5, 0.0), ValueError, "step_size must be > 0"),
    (lambda: random_walk_mh(_lp, X0, 5, math.nan), ValueError, "step_size must be finite"),
    (lambda: random_walk_mh(_lp, X0, 5, 0.5, burn_in=5), ValueError,
     "burn_in must be smaller than steps"),
    (lambda: random_walk_mh(_lp, X0, 5, 0.5, burn_in=-1), ValueError, "burn_in must be"),
    (lambda: random_walk_mh(_lp, X0, 5, 0.5, thin=0), ValueError, "thin must be"),
    (lambda: random_walk_mh(_lp, X0, 5, 0.5, generator=0), TypeError,
     "generator must be a torch.Generator"),
    (lambda: ula(_lp, X0, 5, -0.1), ValueError, "step_size must be > 0"),
    (lambda: ula(None, X0, 5, 0.1), TypeError, "log_prob must be a callable"),
    (lambda: mala(_lp, X0, 5, 0.1, burn_in=7), ValueError, "burn_in must be smaller"),
    (lambda: mala(_lp, torch.zeros(0, 2, dtype=F64), 5, 0.1), ValueError, "C, D >= 1"),
    (lambda: hmc(_lp, X0, 5, 0.1, 0), ValueError, "n_leapfrog must be a positive int"),
    (lambda: hmc(_lp, X0, 5, 0.1, 3, jitter=1.0), ValueError, r"jitter must be in \[0, 1\)"),
    (lambda: hmc(_lp, X0, 5, 0.1, 3, jitter=-0.1), ValueError, "jitter must be >= 0"),
    (lambda: parallel_tempering(_lp, X0, [0.5, 0.25], 5, 0.5), ValueError,
     "betas must decrease strictly from 1"),
    (lambda: parallel_tempering(_lp, X0, [1.0, 0.5, 0.7], 5, 0.5), ValueError,
     "betas must decrease strictly from 1"),
    (lambda: parallel_tempering(_lp, X0, [1.0, 0.5, 0.0], 5, 0.5), ValueError,
     "stay > 0"),
    (lambda: parallel_tempering(_lp, X0, [1.0], 5, 0.5), ValueError, "at least 2"),
    (lambda: parallel_tempering(_lp, X0, 1.0, 5, 0.5), ValueError, "betas must be a sequence"),
    (lambda: parallel_tempering(_lp, X0, [1.0, 0.5], 5, 0.5, burn_in=5), ValueError,
     "burn_in must be smaller"),
    # gradients, leapfrog, energy
    (lambda: log_prob_and_grad(3, X0), TypeError, "log_prob must be a callable"),
    (lambda: log_prob_and_grad(_lp, [0.0]), TypeError, "x must be a Tensor"),
    (lambda: leapfrog("grad", X0, X0, 0.1, 3), TypeError, "grad_log_prob must be a callable"),
    (lambda: leapfrog(lambda x: -x, X0, X0[:, :1], 0.1, 3), ValueError,
     "p must have the shape of x"),
    (lambda: leapfrog(lambda x: -x, X0, X0, 0.0, 3), ValueError,
     "step_size must be finite and non-zero"),
    (lambda: leapfrog(lambda x: -x, X0, X0, math.inf, 3), ValueError,
     "step_size must be finite and non-zero"),
    (lambda: leapfrog(lambda x: -x, X0, X0, 0.1, 0), ValueError, "n_steps must be a positive"),
    (lambda: leapfrog(_lp, X0, X0, 0.1, 3), ValueError,
     r"grad_log_prob must map \(C, D\) to \(C, D\)"),
    (lambda: hamiltonian(_lp, X0, None), TypeError, "p must be a Tensor of the shape of x"),
    (lambda: mh_transition_matrix(torch.tensor([1.0, math.inf]), torch.full((2, 2), 0.5)),
     ValueError, "target must be positive and finite"),
    (lambda: rejection_sample(_lp, lambda m, g: torch.zeros(m + 1, 2), _lp, 0.0, 5),
     ValueError, r"sample_q\(m, generator\) must return"),
    (lambda: hamiltonian("lp", X0, X0), TypeError, "log_prob must be a callable"),
    # exact methods
    (lambda: inverse_cdf_sample("icdf", 5), TypeError, "icdf must be a callable"),
    (lambda: inverse_cdf_sample(lambda u: u, 0), ValueError, "n must be a positive int"),
    (lambda: inverse_cdf_sample(lambda u: u[:2], 5), ValueError,
     r"icdf must map \(n,\) to \(n,\)"),
    (lambda: rejection_sample(_lp, "q", _lp, 0.0, 5), TypeError,
     "sample_q must be a callable"),
    (lambda: rejection_sample(_lp, lambda m, g: torch.zeros(m, 2, dtype=F64), _lp,
                              math.nan, 5), ValueError, "log_m must be finite"),
    (lambda: rejection_sample(_lp, lambda m, g: torch.zeros(m, 2, dtype=F64), _lp, 0.0,
                              0), ValueError, "n must be a positive int"),
    (lambda: rejection_sample(_lp, lambda m, g: torch.zeros(m, 2, dtype=F64),
                              lambda x: x, 0.0, 5), ValueError, r"log_prob must map"),
    (lambda: mh_transition_matrix([1.0, 2.0], Q2), TypeError, "must be Tensors"),
    (lambda: mh_transition_matrix(torch.ones(3, dtype=F64), Q2), ValueError,
     r"target must have shape \(S,\) and proposal \(S, S\)"),
    (lambda: mh_transition_matrix(torch.ones(2, 1, dtype=F64), Q2), ValueError,
     r"target must have shape \(S,\)"),
    (lambda: mh_transition_matrix(torch.tensor([1.0, 0.0], dtype=F64), Q2), ValueError,
     "target must be positive"),
    (lambda: mh_transition_matrix(torch.ones(2, dtype=F64),
                                  torch.tensor([[0.5, 0.6], [0.5, 0.5]], dtype=F64)),
     ValueError, "rows summing to 1"),
    (lambda: mh_transition_matrix(torch.ones(2, dtype=F64),
                                  torch.tensor([[1.5, -0.5], [0.5, 0.5]], dtype=F64)),
     ValueError, "non-negative"),
    # diagnostics
    (lambda: autocorrelation([1.0, 2.0]), TypeError, "x must be a Tensor"),
    (lambda: autocorrelation(torch.zeros(3, 2, 2, 2)), ValueError, r"shape \(T,\), \(T, C\)"),
    (lambda: autocorrelation(torch.arange(5)), TypeError, "floating-point"),
    (lambda: ess(torch.tensor([1.0, math.nan, 2.0, 3.0, 4.0])), ValueError,
     "must be finite"),
    (lambda: ess(LONG[:3]), ValueError, "at least 4 draws"),
    (lambda: rhat(LONG[:3]), ValueError, "at least 4 draws"),
    (lambda: rhat(np.zeros((10, 2))), TypeError, "x must be a Tensor"),
]


def test_parallel_tempering_takes_the_ladder_as_a_list_tuple_tensor_or_array():
    """betas may be a list, a tuple, a Tensor or a NumPy array (np.geomspace): same chains."""
    ladders = [[1.0, 0.5, 0.25], (1.0, 0.5, 0.25), torch.tensor([1.0, 0.5, 0.25]),
               np.geomspace(1.0, 0.25, 3)]
    runs = [parallel_tempering(gauss_log_prob, X0, b, 6, 0.5, generator=gen(31)).hot
            for b in ladders]
    assert all(torch.equal(r, runs[0]) for r in runs[1:])


@pytest.mark.parametrize("call,exc,match", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_arguments_raise_clear_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# --------------------------------------------------------------------------- checkers


def reader_mh_transition_matrix(target, proposal):
    s = target.shape[0]
    pi = target.to(proposal.dtype)
    p = torch.zeros_like(proposal)
    for i in range(s):
        for j in range(s):
            if i != j and proposal[i, j] > 0 and proposal[j, i] > 0:
                a = pi[j] * proposal[j, i] / (pi[i] * proposal[i, j])
                p[i, j] = proposal[i, j] * torch.clamp(a, max=1.0)
        p[i, i] = 1 - p[i].sum()
    return p


def reader_leapfrog(grad_log_prob, x, p, step_size, n_steps):
    h = step_size
    for _ in range(n_steps):
        p = p + 0.5 * h * grad_log_prob(x)
        x = x + h * p
        p = p + 0.5 * h * grad_log_prob(x)
    return x, p


def reader_autocorrelation(x):
    t = x.shape[0]
    xc = x - x.mean()
    gamma = torch.stack([(xc[: t - k] * xc[k:]).sum() / t for k in range(t)])
    return gamma / gamma[0]


def reader_gibbs_sweep_2d(x, rho, noise):
    s = math.sqrt(1 - rho**2)
    x1 = rho * x[:, 1] + s * noise[:, 0]
    x2 = rho * x1 + s * noise[:, 1]
    return torch.stack([x1, x2], dim=1)


CHECKERS = ["mh_transition_matrix", "leapfrog", "autocorrelation", "gibbs_sweep_2d"]
READERS = {"mh_transition_matrix": reader_mh_transition_matrix,
           "leapfrog": reader_leapfrog, "autocorrelation": reader_autocorrelation,
           "gibbs_sweep_2d": reader_gibbs_sweep_2d}


def test_sampling_checkers_are_registered():
    assert set(CHECKERS) <= set(available())


@pytest.mark.parametrize("name", CHECKERS)
def test_sampling_checkers_pass_reference_and_reader_solutions(name):
    """[eq-samp-mh-accept] [eq-samp-leapfrog] [eq-samp-acf] Each checker passes its own
    reference and a straightforward correct solution written independently (loops; an
    unmerged leapfrog), on random float32 and float64 cases and edge cases."""
    checker = get_checker(name)
    cases = checker.cases()
    assert sum(c.edge for c in cases) >= 3 and sum(not c.edge for c in cases) >= 6
    dtypes = {a.dtype for c in cases for a in c.args if isinstance(a, Tensor)}
    assert {torch.float32, torch.float64} <= dtypes
    for fn in (checker.reference, READERS[name]):
        result = check(name, fn)
        assert isinstance(result, CheckResult)
        assert result.passed and not result.failures, result.message
        assert result.message.startswith(f"PASSED {name}: ")


def test_sampling_checker_references_are_the_package_functions():
    """The references are gmbook.mcmc's functions (autocorrelation in the input's dtype)."""
    g = gen(30)
    pi = torch.rand(4, generator=g, dtype=F64) + 0.1
    q = random_proposal(4, g)
    torch.testing.assert_close(ex._mh_transition_matrix(pi, q), mh_transition_matrix(pi, q),
                               rtol=0, atol=0)
    x, p = torch.randn(2, 3, 2, generator=g, dtype=F64)
    for a, b in zip(ex._leapfrog(banana_grad, x, p, 0.1, 4), leapfrog(banana_grad, x, p, 0.1, 4)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    y = torch.randn(20, generator=g)
    assert ex._autocorrelation(y).dtype == torch.float32
    torch.testing.assert_close(ex._autocorrelation(y), autocorrelation(y).float())
    x, z = torch.randn(2, 5, 2, generator=g, dtype=F64)
    prec = torch.linalg.inv(torch.tensor([[1.0, 0.3], [0.3, 1.0]], dtype=F64))
    torch.testing.assert_close(ex._gibbs_sweep_2d(x, 0.3, z), gibbs_sweep_gaussian(x, prec, z))


def _mh_metropolis(target, proposal):
    pi = target.to(proposal.dtype)
    p = proposal * torch.clamp(pi[None, :] / pi[:, None], max=1.0)
    p = p - torch.diag(torch.diagonal(p))
    return p + torch.diag(1 - p.sum(1))


def _mh_no_diagonal(target, proposal):
    s = target.shape[0]
    p = reader_mh_transition_matrix(target, proposal)
    return torch.where(torch.eye(s, dtype=torch.bool), proposal, p)


def _mh_inverted(target, proposal):
    return reader_mh_transition_matrix(1 / target, proposal)


def _mh_columns(target, proposal):
    p = reader_mh_transition_matrix(target, proposal)
    p = p - torch.diag(torch.diagonal(p))
    return p + torch.diag(1 - p.sum(0))


def _mh_nan_on_zeros(target, proposal):
    pi = target.to(proposal.dtype)
    flow = pi[:, None] * proposal
    p = proposal * torch.clamp(flow.T / flow, max=1.0)
    p = p - torch.diag(torch.diagonal(p))
    return p + torch.diag(1 - p.sum(1))


def _lf_symplectic_euler(grad_log_prob, x, p, step_size, n_steps):
    for _ in range(n_steps):
        p = p + step_size * grad_log_prob(x)
        x = x + step_size * p
    return x, p


def _lf_drift_first(grad_log_prob, x, p, step_size, n_steps):
    for _ in range(n_steps):
        x = x + step_size * p
        p = p + step_size * grad_log_prob(x)
    return x, p


def _lf_position_verlet(grad_log_prob, x, p, step_size, n_steps):
    for _ in range(n_steps):
        x = x + 0.5 * step_size * p
        p = p + step_size * grad_log_prob(x)
        x = x + 0.5 * step_size * p
    return x, p


def _lf_wrong_sign(grad_log_prob, x, p, step_size, n_steps):
    return reader_leapfrog(lambda z: -grad_log_prob(z), x, p, step_size, n_steps)


def _acf_unbiased(x):
    t = x.shape[0]
    xc = x - x.mean()
    gamma = torch.stack([(xc[: t - k] * xc[k:]).sum() / (t - k) for k in range(t)])
    return gamma / gamma[0]


def _acf_uncentred(x):
    t = x.shape[0]
    gamma = torch.stack([(x[: t - k] * x[k:]).sum() / t for k in range(t)])
    return gamma / gamma[0]


def _acf_autocovariance(x):
    t = x.shape[0]
    xc = x - x.mean()
    return torch.stack([(xc[: t - k] * xc[k:]).sum() / t for k in range(t)])


def _acf_torch_var(x):
    t = x.shape[0]
    xc = x - x.mean()
    return torch.stack([(xc[: t - k] * xc[k:]).sum() / t for k in range(t)]) / x.var()


def _acf_full(x):
    xc = (x - x.mean()).numpy()
    full = np.correlate(xc, xc, mode="full")
    return torch.from_numpy(full / full[len(x) - 1]).to(x.dtype)


WRONG = [
    # (checker, wrong answer, fragment of the report, fragment of the hint)
    ("mh_transition_matrix", _mh_metropolis, "P is wrong", "left out the Hastings factor"),
    ("mh_transition_matrix", _mh_no_diagonal, "P is wrong", "rejected proposals stay put"),
    ("mh_transition_matrix", _mh_inverted, "P is wrong", "target at the proposed state on top"),
    ("mh_transition_matrix", _mh_columns, "P is wrong", "not the column sums"),
    ("mh_transition_matrix", _mh_nan_on_zeros, "contains NaN", "Q_ij = 0"),
    ("leapfrog", _lf_symplectic_euler, "is wrong", "You used full kicks"),
    ("leapfrog", _lf_drift_first, "is wrong", "You drifted before kicking"),
    ("leapfrog", _lf_position_verlet, "is wrong", "position Verlet"),
    ("leapfrog", _lf_wrong_sign, "is wrong", "Sign error in the kick"),
    ("autocorrelation", _acf_unbiased, "rho is wrong", "not by T - k"),
    ("autocorrelation", _acf_uncentred, "rho is wrong", "Subtract the mean"),
    ("autocorrelation", _acf_autocovariance, "rho is wrong", "You returned the autocovariances"),
    ("autocorrelation", _acf_torch_var, "rho is wrong", "not by x.var()"),
    ("autocorrelation", _acf_full, "rho has shape", "mode='full'"),
    ("gibbs_sweep_2d", ex._gibbs_jacobi, "x is wrong", "given the NEW first one"),
    ("gibbs_sweep_2d", ex._gibbs_var_one_minus_rho, "x is wrong", "not 1 - rho."),
    ("gibbs_sweep_2d", ex._gibbs_variance_as_std, "x is wrong", "not by the variance"),
    ("gibbs_sweep_2d", ex._gibbs_no_shrink, "x is wrong", "not 1: multiply it"),
]


@pytest.mark.parametrize("name,fn,where,hint", WRONG, ids=[w[1].__name__ for w in WRONG])
def test_sampling_checkers_reject_wrong_answers_with_the_hint(name, fn, where, hint):
    """[eq-samp-mh-accept] [eq-samp-leapfrog] [eq-samp-acf] A plausible wrong answer fails,
    the report names the problem and gives the matching hint (ASCII, lines of at most 80
    characters)."""
    result = check(name, fn)
    assert not result.passed and not result and result.failures, result.message
    assert result.message.startswith(f"FAILED {name} on case ")
    flat = " ".join(result.message.split())
    for fragment in (where, "hint:", hint):
        assert " ".join(fragment.split()) in flat, f"{fragment!r} not in:\n{result.message}"
    assert result.message.isascii()
    assert all(len(line) <= 80 for line in result.message.splitlines()), result.message
