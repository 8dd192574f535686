"""Tests of gmbook.probability, the claims of Appendix A (book/appendix/probability.md), and
the checkers of its coding exercises (gmbook.exercises.probability).

The Gaussian identities are checked exactly against densities (a conditional is a joint
over a marginal, a product of densities is evaluated pointwise) or against torch's own
implementations; the Monte Carlo claims with tolerances of a few standard errors that are
far smaller than the error a wrong formula would make.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import Tensor
from torch.distributions import LogNormal, MultivariateNormal, Normal, kl_divergence

from gmbook.exercises import check, get_checker
from gmbook.exercises import probability as ex
from gmbook.metrics import Estimate
from gmbook.probability import (
    GaussianProduct,
    effective_sample_size,
    gaussian_conditional,
    gaussian_kl,
    gaussian_marginal,
    gaussian_product,
    importance_estimate,
    mc_estimate,
    reparam_gradient,
    score_function_gradient,
)

F64 = torch.float64


def _spd(d: int, g: torch.Generator, *batch: int) -> Tensor:
    a = torch.randn(*batch, d, d, generator=g, dtype=F64)
    return a @ a.mT / d + 0.3 * torch.eye(d, dtype=F64)


def _ndtr(z: float) -> float:
    return float(torch.special.ndtr(torch.tensor(z, dtype=F64)))


# --------------------------------------------------------------------------- Gaussians


def test_kl_between_gaussians_matches_its_monte_carlo_estimate():
    """[eq-app-prob-kl-gaussians, prop-app-prob-kl-gaussians] The closed-form KL agrees with
    the Monte Carlo estimate E_p[log p - log q] within 4 standard errors, and the error bar
    is tight enough to reject the reverse KL and a formula without its 1/2 or its -D."""
    g = torch.Generator().manual_seed(1)
    mean_p, mean_q = torch.randn(2, 3, generator=g, dtype=F64)
    cov_p, cov_q = _spd(3, g), _spd(3, g)
    p, q = MultivariateNormal(mean_p, cov_p), MultivariateNormal(mean_q, cov_q)
    x = p.sample((400_000,))
    est = mc_estimate(p.log_prob(x) - q.log_prob(x))
    kl = gaussian_kl(mean_p, cov_p, mean_q, cov_q).item()
    assert abs(est.mean - kl) < 4 * est.se
    wrong = [gaussian_kl(mean_q, cov_q, mean_p, cov_p).item(), 2 * kl, kl + 1.5]
    assert all(abs(est.mean - w) > 10 * est.se for w in wrong)


def test_gaussian_kl_matches_torch_batches_and_is_zero_on_itself():
    """[eq-app-prob-kl-gaussians] Against torch.distributions.kl_divergence, with batch
    dimensions that broadcast; 0 for identical Gaussians; the diagonal case is the sum over
    coordinates of Chapter 1 (eq-kl-gaussians)."""
    g = torch.Generator().manual_seed(2)
    mean_p, mean_q = torch.randn(2, 5, 4, generator=g, dtype=F64)
    cov_p, cov_q = _spd(4, g, 5), _spd(4, g, 5)
    want = kl_divergence(MultivariateNormal(mean_p, cov_p), MultivariateNormal(mean_q, cov_q))
    torch.testing.assert_close(gaussian_kl(mean_p, cov_p, mean_q, cov_q), want)
    want = kl_divergence(MultivariateNormal(mean_p, cov_p),
                         MultivariateNormal(mean_q[0], cov_q[0]))
    torch.testing.assert_close(gaussian_kl(mean_p, cov_p, mean_q[0], cov_q[0]), want)
    assert gaussian_kl(mean_p, cov_p, mean_p, cov_p).abs().max() < 1e-12
    var_p, var_q = torch.rand(2, 3, generator=g, dtype=F64) + 0.2
    diag = gaussian_kl(mean_p[0, :3], torch.diag(var_p), mean_q[0, :3], torch.diag(var_q))
    per_axis = 0.5 * (var_p / var_q + (mean_p[0, :3] - mean_q[0, :3]) ** 2 / var_q - 1
                      + torch.log(var_q / var_p))
    torch.testing.assert_close(diag, per_axis.sum())
    assert gaussian_kl(mean_p[0], cov_p[0], mean_q[0], cov_q[0]).shape == ()


def test_conditional_density_is_joint_over_marginal():
    """[thm-app-prob-gaussian-conditional, eq-app-prob-gaussian-conditional,
    eq-app-prob-conditional] p(x_a | x_b) = p(x_a, x_b) / p(x_b) exactly, for observed
    coordinates given in any order, and for a batch of observations."""
    g = torch.Generator().manual_seed(3)
    d = 5
    mean, cov = torch.randn(d, generator=g, dtype=F64), _spd(d, g)
    observed, free = [4, 1], [0, 2, 3]
    x = MultivariateNormal(mean, cov).sample((7,))
    cond_mean, cond_cov = gaussian_conditional(mean, cov, observed, x[:, observed])
    assert cond_mean.shape == (7, 3) and cond_cov.shape == (3, 3)
    m_b, c_b = gaussian_marginal(mean, cov, observed)
    joint = MultivariateNormal(mean, cov).log_prob(x)
    marginal = MultivariateNormal(m_b, c_b).log_prob(x[:, observed])
    conditional = MultivariateNormal(cond_mean, cond_cov).log_prob(x[:, free])
    torch.testing.assert_close(conditional, joint - marginal)
    one_mean, one_cov = gaussian_conditional(mean, cov, observed, x[0, observed])
    torch.testing.assert_close(one_mean, cond_mean[0])
    torch.testing.assert_close(one_cov, cond_cov)
    # conditioning never increases the variance (Schur complement)
    _, c_a = gaussian_marginal(mean, cov, free)
    assert torch.linalg.eigvalsh(c_a - cond_cov).min() > -1e-12


def test_conditional_matches_draws_in_a_thin_slab():
    """[thm-app-prob-gaussian-conditional] The book's demonstration: draws of a Gaussian
    with correlation 0.8 whose second coordinate is within 0.02 of 1 have the conditional
    mean 0.8 and standard deviation 0.6 (within a few standard errors)."""
    cov = torch.tensor([[1.0, 0.8], [0.8, 1.0]], dtype=F64)
    m, c = gaussian_conditional(torch.zeros(2, dtype=F64), cov, [1],
                                torch.tensor([1.0], dtype=F64))
    torch.testing.assert_close(m, torch.tensor([0.8], dtype=F64))
    torch.testing.assert_close(c, torch.tensor([[0.36]], dtype=F64))
    x = MultivariateNormal(torch.zeros(2, dtype=F64), cov).sample((2_000_000,))
    slab = x[(x[:, 1] - 1).abs() < 0.02, 0]
    n = len(slab)
    assert abs(slab.mean() - 0.8) < 4 * 0.6 / math.sqrt(n)
    assert abs(slab.std() - 0.6) < 4 * 0.6 / math.sqrt(2 * n) + 1e-3  # + slab width


def test_marginal_keeps_the_requested_order():
    """[thm-app-prob-gaussian-conditional] The marginal is N(mu_a, Sigma_aa)."""
    mean = torch.arange(3.0, dtype=F64)
    cov = torch.tensor([[1.0, 0.5, 0.1], [0.5, 2.0, 0.3], [0.1, 0.3, 3.0]], dtype=F64)
    m, c = gaussian_marginal(mean, cov, [2, 0])
    torch.testing.assert_close(m, torch.tensor([2.0, 0.0], dtype=F64))
    torch.testing.assert_close(c, torch.tensor([[3.0, 0.1], [0.1, 1.0]], dtype=F64))


def test_affine_map_of_a_gaussian():
    """[prop-app-prob-gaussian-affine, eq-app-prob-gaussian-affine] AX + b has mean
    A mu + b and covariance A Sigma A^T, here with A of shape (2, 3)."""
    g = torch.Generator().manual_seed(4)
    mean, cov = torch.randn(3, generator=g, dtype=F64), _spd(3, g)
    a, b = torch.randn(2, 3, generator=g, dtype=F64), torch.randn(2, generator=g, dtype=F64)
    y = MultivariateNormal(mean, cov).sample((400_000,)) @ a.T + b
    torch.testing.assert_close(y.mean(0), a @ mean + b, atol=0.01, rtol=0)
    torch.testing.assert_close(torch.cov(y.T), a @ cov @ a.T, atol=0.02, rtol=0)


def test_product_of_gaussian_densities_pointwise():
    """[prop-app-prob-gaussian-product, eq-app-prob-gaussian-product] N(x; m1, S1) N(x; m2, S2)
    = N(m1; m2, S1 + S2) N(x; m, S) at random points, and both forms of m and S agree."""
    g = torch.Generator().manual_seed(5)
    d = 3
    m1, m2 = torch.randn(2, d, generator=g, dtype=F64)
    s1, s2 = _spd(d, g), _spd(d, g)
    prod = gaussian_product(m1, s1, m2, s2)
    assert isinstance(prod, GaussianProduct) and prod.log_scale.shape == ()
    x = torch.randn(10, d, generator=g, dtype=F64) * 2
    lhs = MultivariateNormal(m1, s1).log_prob(x) + MultivariateNormal(m2, s2).log_prob(x)
    torch.testing.assert_close(lhs, prod.log_scale + prod.distribution().log_prob(x))
    precision = torch.linalg.inv(s1) + torch.linalg.inv(s2)
    cov = torch.linalg.inv(precision)
    torch.testing.assert_close(prod.cov, cov)
    torch.testing.assert_close(prod.mean, cov @ (torch.linalg.solve(s1, m1)
                                                  + torch.linalg.solve(s2, m2)))


def test_conjugate_gaussian_posterior():
    """[app-prob-ex-bayes, eq-app-prob-bayes] The posterior of a Gaussian mean from
    gaussian_product equals the textbook update 1/v_N = 1/v_0 + N/s^2."""
    ys = torch.tensor([1.2, 0.7, 2.1, 1.5, 0.9], dtype=F64)
    m0, v0, s2, n = -1.0, 2.0, 0.5, len(ys)
    post = gaussian_product(torch.tensor([m0], dtype=F64), torch.tensor([[v0]], dtype=F64),
                            ys.mean().reshape(1), torch.tensor([[s2 / n]], dtype=F64))
    v_n = 1 / (1 / v0 + n / s2)
    assert post.cov.item() == pytest.approx(v_n, rel=1e-12)
    assert post.mean.item() == pytest.approx(v_n * (m0 / v0 + n * ys.mean().item() / s2),
                                             rel=1e-12)


# --------------------------------------------------------------------------- foundations


def test_lotus_three_ways():
    """[thm-app-prob-lotus, eq-app-prob-lotus] E[e^X] for X ~ N(0, 1): the LOTUS integral
    by quadrature is e^(1/2), and a Monte Carlo average agrees within 4 standard errors."""
    x = torch.linspace(-12, 12, 200_001, dtype=F64)
    integral = torch.trapezoid(x.exp() * Normal(0.0, 1.0).log_prob(x).exp(), x).item()
    assert integral == pytest.approx(math.exp(0.5), rel=1e-9)
    est = mc_estimate(torch.randn(400_000, dtype=F64).exp())
    assert abs(est.mean - math.exp(0.5)) < 4 * est.se


def test_conditional_mean_is_the_least_squares_predictor():
    """[prop-app-prob-regression, eq-app-prob-regression, eq-app-prob-tower] For jointly
    Gaussian (X, Y) the conditional mean m(X) beats another predictor h(X) by exactly
    E|m(X) - h(X)|^2: the cross term of the decomposition has mean zero."""
    cov = torch.tensor([[1.0, 0.6], [0.6, 2.0]], dtype=F64)
    mean = torch.tensor([0.5, -1.0], dtype=F64)
    xy = MultivariateNormal(mean, cov).sample((400_000,))
    x, y = xy[:, :1], xy[:, 1]
    m = gaussian_conditional(mean, cov, [0], x)[0][:, 0]  # E[Y | X]
    h = 0.2 * x[:, 0] + 1.0
    cross = 2 * (y - m) * (m - h)
    gap = (y - h) ** 2 - (y - m) ** 2 - (m - h) ** 2
    torch.testing.assert_close(gap, cross)
    est = mc_estimate(cross)
    assert abs(est.mean) < 4 * est.se
    assert ((y - m) ** 2).mean() < ((y - h) ** 2).mean()
    tower = mc_estimate(m)  # E[E[Y | X]] = E[Y]
    assert abs(tower.mean - mean[1].item()) < 4 * tower.se


def test_elbo_gap_is_the_kl_to_the_posterior():
    """[thm-app-prob-jensen, eq-app-prob-jensen, eq-app-prob-elbo, app-prob-ex-elbo] In the
    model z ~ N(0, 1), x | z ~ N(z, 1), the ELBO of q = N(m, s^2) is below log p(x) =
    log N(x; 0, 2) by KL(q || p(z | x)) with p(z | x) = N(x / 2, 1 / 2)."""
    x_obs, m, s = 1.3, 0.2, 0.9
    z = m + s * torch.randn(400_000, dtype=F64)
    log_joint = Normal(0.0, 1.0).log_prob(z) + Normal(z, 1.0).log_prob(torch.tensor(x_obs))
    elbo = mc_estimate(log_joint - Normal(m, s).log_prob(z))
    log_px = Normal(0.0, math.sqrt(2.0)).log_prob(torch.tensor(x_obs, dtype=F64)).item()
    gap = gaussian_kl(torch.tensor([m], dtype=F64), torch.tensor([[s * s]], dtype=F64),
                      torch.tensor([x_obs / 2], dtype=F64), torch.tensor([[0.5]], dtype=F64))
    assert elbo.mean < log_px
    assert abs(log_px - elbo.mean - gap.item()) < 4 * elbo.se
    # Jensen for the concave log, E[log X] <= log E[X], strictly for X ~ Exp(1)
    draws = torch.empty(400_000, dtype=F64).exponential_()
    jensen = mc_estimate(draws.log())
    assert abs(jensen.mean + 0.5772156649) < 4 * jensen.se


def test_change_of_variables_gives_the_log_normal_and_affine_densities():
    """[thm-app-prob-change-of-variables, eq-app-prob-change-of-variables] The density of
    e^X is N(log y; 0, 1) / y (torch's LogNormal), which integrates to 1 while the version
    without the Jacobian integrates to e^(1/2); for an invertible affine map in 2-D the
    formula gives the Gaussian density of prop-app-prob-gaussian-affine."""
    y = torch.logspace(-8, 4, 200_001, dtype=F64)
    naive = Normal(0.0, 1.0).log_prob(y.log()).exp()
    torch.testing.assert_close((naive / y).log(), LogNormal(0.0, 1.0).log_prob(y))
    assert torch.trapezoid(naive / y, y).item() == pytest.approx(1.0, abs=1e-6)
    assert torch.trapezoid(naive, y).item() == pytest.approx(math.exp(0.5), rel=1e-6)
    g = torch.Generator().manual_seed(6)
    a = torch.randn(2, 2, generator=g, dtype=F64) + 2 * torch.eye(2, dtype=F64)
    b = torch.randn(2, generator=g, dtype=F64)
    pts = torch.randn(9, 2, generator=g, dtype=F64)  # points y
    x = torch.linalg.solve(a, (pts - b).T).T  # T^-1(y)
    formula = Normal(0.0, 1.0).log_prob(x).sum(1) - torch.linalg.slogdet(a)[1]
    torch.testing.assert_close(formula, MultivariateNormal(b, a @ a.T).log_prob(pts))


def test_law_of_large_numbers_obeys_chebyshev():
    """[thm-app-prob-lln, eq-app-prob-lln] For Exp(1) draws the frequency of
    |mean_n - 1| > eps stays below sigma^2 / (n eps^2) and falls with n."""
    eps, freqs = 0.2, []
    for n in (10, 40, 160):
        means = torch.empty(20_000, n, dtype=F64).exponential_().mean(dim=1)
        freq = ((means - 1).abs() > eps).double().mean().item()
        assert freq <= 1 / (n * eps**2)
        freqs.append(freq)
    assert freqs[0] > freqs[1] > freqs[2]


def test_central_limit_theorem_for_skewed_draws():
    """[thm-app-prob-clt, eq-app-prob-clt] Standardized means of Exp(1) draws approach
    N(0, 1): the Kolmogorov distance to Phi is small for n = 200 and large for n = 2."""
    def ks(n: int) -> float:
        z = (math.sqrt(n) * (torch.empty(20_000, n, dtype=F64).exponential_().mean(1) - 1))
        z, _ = torch.sort(z)
        ecdf = torch.arange(1, len(z) + 1, dtype=F64) / len(z)
        return (ecdf - torch.special.ndtr(z)).abs().max().item()

    assert ks(200) < 0.03 < 0.08 < ks(2)


def test_monte_carlo_standard_error_has_nominal_coverage():
    """[prop-app-prob-mc, eq-app-prob-mc, eq-app-prob-mc-se] mc_estimate is the mean and
    s / sqrt(n); intervals mean +- 1.96 se cover the truth about 95% of the time (here for
    E[X^2] = 1, X ~ N(0, 1), n = 400, over 2000 repetitions)."""
    v = torch.tensor([1.0, 2.0, 4.0, 7.0])
    est = mc_estimate(v)
    assert isinstance(est, Estimate) and est.n == 4
    assert est.mean == pytest.approx(3.5)
    assert est.se == pytest.approx(v.std().item() / 2)
    assert math.isnan(mc_estimate(torch.ones(1)).se)
    fx = torch.randn(2000, 400, dtype=F64) ** 2
    se = fx.std(dim=1) / math.sqrt(400)
    cover = ((fx.mean(dim=1) - 1).abs() < 1.96 * se).double().mean().item()
    assert 0.93 < cover < 0.97


def test_importance_sampling_is_unbiased_with_the_predicted_variance():
    """[prop-app-prob-is, eq-app-prob-is, eq-app-prob-is-variance] P(X > 3), X ~ N(0, 1),
    with the proposal N(3, 1): the estimate is within 4 se of 1 - Phi(3), and the variance of
    w f matches int f^2 p^2 / q - I^2 = e^9 (1 - Phi(6)) - I^2, about 200 times smaller than
    plain Monte Carlo's I (1 - I)."""
    exact = 1 - _ndtr(3.0)
    q = Normal(torch.tensor(3.0, dtype=F64), 1.0)
    x = q.sample((1_000_000,))
    log_w = Normal(0.0, 1.0).log_prob(x) - q.log_prob(x)
    fx = (x > 3).to(F64)
    est = importance_estimate(fx, log_w)
    assert abs(est.mean - exact) < 4 * est.se
    predicted = math.exp(9) * (1 - _ndtr(6.0)) - exact**2
    assert (log_w.exp() * fx).var().item() == pytest.approx(predicted, rel=0.03)
    assert exact * (1 - exact) / predicted > 150


def test_self_normalized_importance_sampling_needs_no_constant():
    """[eq-app-prob-snis] E[X^2] = 1 under the unnormalised target exp(-x^2 / 2): the
    self-normalized estimate is within 4 of its standard errors; plain importance sampling
    with the same unnormalised weights is off by the missing constant sqrt(2 pi)."""
    q = Normal(torch.tensor(0.0, dtype=F64), 1.5)
    x = q.sample((400_000,))
    log_w = -(x**2) / 2 - q.log_prob(x)
    est = importance_estimate(x**2, log_w, self_normalized=True)
    assert abs(est.mean - 1) < 4 * est.se and est.se < 0.01
    plain = importance_estimate(x**2, log_w)
    assert plain.mean == pytest.approx(math.sqrt(2 * math.pi), rel=0.02)
    assert importance_estimate(x**2, log_w + 1000.0, self_normalized=True).mean == \
        pytest.approx(est.mean, rel=1e-9)


def test_effective_sample_size():
    """[eq-app-prob-ess, app-prob-ex-is-variance] n for equal weights, 1 for one weight,
    invariant to an additive constant in the log-weights; for p = N(0, 1) and q = N(0, s^2)
    it approaches n sqrt(2 - 1/s^2) / s."""
    assert effective_sample_size(torch.zeros(50)) == pytest.approx(50)
    lw = torch.full((6,), -math.inf, dtype=F64)
    lw[2] = 3.0
    assert effective_sample_size(lw) == pytest.approx(1.0)
    r = torch.randn(100, dtype=F64)
    assert effective_sample_size(r + 700.0) == pytest.approx(effective_sample_size(r))
    for s in (1.5, 0.9):
        q = Normal(torch.tensor(0.0, dtype=F64), s)
        x = q.sample((400_000,))
        ess = effective_sample_size(Normal(0.0, 1.0).log_prob(x) - q.log_prob(x))
        assert ess / 400_000 == pytest.approx(math.sqrt(2 - 1 / s**2) / s, rel=0.02)


# --------------------------------------------------------------------------- gradients


def _quadratic_case(d: int = 8) -> tuple[Any, Tensor, Tensor, Tensor]:
    a = torch.linspace(-1.0, 1.5, d, dtype=F64)
    mean = torch.linspace(0.5, -0.5, d, dtype=F64)
    std = torch.linspace(0.5, 1.5, d, dtype=F64)
    return (lambda x: ((x - a) ** 2).sum(dim=1)), mean, std, a


@pytest.mark.parametrize("estimator", [reparam_gradient, score_function_gradient])
def test_gradient_estimators_are_unbiased(estimator):
    """[prop-app-prob-gradient-estimators, eq-app-prob-reparam,
    eq-app-prob-score-function] For f = |x - a|^2 and q = N(mu, diag sigma^2),
    L = |mu - a|^2 + |sigma|^2: the average per-draw gradients in mu and in sigma agree with
    2 (mu - a) and 2 sigma within 4.5 standard errors in every coordinate; likewise for
    f = sin(omega x), where L = sin(omega mu) exp(-omega^2 sigma^2 / 2)."""
    f, mean, std, a = _quadratic_case()
    eps = torch.randn(200_000, 8, dtype=F64)
    g_mean, g_std = estimator(f, mean, std, eps)
    assert g_mean.shape == g_std.shape == (200_000, 8)
    for g, exact in ((g_mean, 2 * (mean - a)), (g_std, 2 * std)):
        se = g.std(dim=0) / math.sqrt(len(g))
        assert ((g.mean(dim=0) - exact).abs() < 4.5 * se).all()
    omega, mu, sigma = 2.0, torch.tensor([0.3], dtype=F64), torch.tensor([0.7], dtype=F64)
    damp = math.exp(-(omega * sigma.item()) ** 2 / 2)
    exact_mu = omega * math.cos(omega * mu.item()) * damp
    exact_sigma = -(omega**2) * sigma.item() * math.sin(omega * mu.item()) * damp
    g_mu, g_sigma = estimator(lambda x: torch.sin(omega * x[:, 0]), mu, sigma,
                              torch.randn(400_000, 1, dtype=F64))
    for g, exact in ((g_mu, exact_mu), (g_sigma, exact_sigma)):
        est = mc_estimate(g[:, 0])
        assert abs(est.mean - exact) < 4.5 * est.se


def test_reparameterization_has_lower_variance_in_the_demonstrated_case():
    """[prop-app-prob-gradient-estimators, eq-app-prob-reparam, eq-app-prob-score-function]
    The book's case, f = |x - a|^2 in D = 8 with a = 1, mu = 0, sigma = 1: one draw of the
    reparameterized d/d mu_1 has variance 4 sigma^2 = 4, the score-function one about 95
    times more, and a baseline reduces but does not close the gap. For sin(omega x) with
    omega = 8 the order is reversed."""
    d = 8
    f = lambda x: ((x - 1) ** 2).sum(dim=1)  # noqa: E731
    mean, std = torch.zeros(d, dtype=F64), torch.ones(d, dtype=F64)
    eps = torch.randn(200_000, d, dtype=F64)
    var_r = reparam_gradient(f, mean, std, eps)[0][:, 0].var().item()
    var_s = score_function_gradient(f, mean, std, eps)[0][:, 0].var().item()
    var_b = score_function_gradient(f, mean, std, eps, baseline=2.0 * d)[0][:, 0].var().item()
    assert var_r == pytest.approx(4.0, rel=0.02)
    assert var_s / var_r > 50
    assert var_r < var_b < var_s
    wave = lambda x: torch.sin(8.0 * x[:, 0])  # noqa: E731
    one, zero, eps1 = torch.ones(1, dtype=F64), torch.zeros(1, dtype=F64), eps[:, :1]
    assert (score_function_gradient(wave, zero, one, eps1)[0].var()
            < reparam_gradient(wave, zero, one, eps1)[0].var() / 10)


def test_score_has_mean_zero_so_a_baseline_keeps_the_estimator_unbiased():
    """[eq-app-prob-score-function, app-prob-ex-baseline] E_q[grad log q] = 0, so
    (f - b) grad log q has the same mean for every constant b."""
    f, mean, std, a = _quadratic_case(4)
    eps = torch.randn(400_000, 4, dtype=F64)
    zero = lambda x: torch.zeros(x.shape[0], dtype=x.dtype)  # noqa: E731
    base, _ = score_function_gradient(zero, mean, std, eps, baseline=-1.0)  # = grad log q
    se = base.std(dim=0) / math.sqrt(len(base))
    assert (base.mean(dim=0).abs() < 4.5 * se).all()
    with_b = score_function_gradient(f, mean, std, eps, baseline=7.0)[0]
    without = score_function_gradient(f, mean, std, eps)[0]
    torch.testing.assert_close(without - with_b, 7.0 * base)


def test_gradient_estimators_match_closed_forms_per_draw():
    """[eq-app-prob-reparam, eq-app-prob-score-function] Per draw, the reparameterization
    gives grad f(x) and grad f(x) * eps; the score function gives f(x) eps / sigma and
    f(x) (eps^2 - 1) / sigma."""
    f, mean, std, a = _quadratic_case(3)
    eps = torch.randn(5, 3, dtype=F64)
    x = mean + std * eps
    g_mean, g_std = reparam_gradient(f, mean, std, eps)
    torch.testing.assert_close(g_mean, 2 * (x - a))
    torch.testing.assert_close(g_std, 2 * (x - a) * eps)
    s_mean, s_std = score_function_gradient(f, mean, std, eps)
    torch.testing.assert_close(s_mean, f(x)[:, None] * eps / std)
    torch.testing.assert_close(s_std, f(x)[:, None] * (eps**2 - 1) / std)
    assert not mean.requires_grad and not std.requires_grad


def test_gradient_estimators_work_under_no_grad():
    """The estimators build their own graph: they work inside torch.no_grad()."""
    f, mean, std, _ = _quadratic_case(2)
    eps = torch.randn(4, 2, dtype=F64)
    with torch.no_grad():
        inside = reparam_gradient(f, mean, std, eps), score_function_gradient(f, mean, std, eps)
    outside = reparam_gradient(f, mean, std, eps), score_function_gradient(f, mean, std, eps)
    for a, b in zip(inside, outside):
        torch.testing.assert_close(a, b)


# --------------------------------------------------------------------------- argument errors


def test_gaussian_functions_reject_bad_arguments():
    eye, zero = torch.eye(2, dtype=F64), torch.zeros(2, dtype=F64)
    with pytest.raises(TypeError, match="floating-point torch.Tensor"):
        gaussian_kl([0.0, 0.0], eye, zero, eye)
    with pytest.raises(ValueError, match=r"cov_p must have shape \(\*B, 2, 2\)"):
        gaussian_kl(zero, torch.eye(3, dtype=F64), zero, eye)
    with pytest.raises(ValueError, match="same dimension"):
        gaussian_kl(zero, eye, torch.zeros(3, dtype=F64), torch.eye(3, dtype=F64))
    with pytest.raises(ValueError, match="positive definite"):
        gaussian_kl(zero, -eye, zero, eye)
    with pytest.raises(ValueError, match="symmetric"):
        gaussian_kl(zero, torch.tensor([[1.0, 0.5], [0.0, 1.0]], dtype=F64), zero, eye)
    with pytest.raises(ValueError, match="at least one coordinate free"):
        gaussian_conditional(zero, eye, [0, 1], zero)
    with pytest.raises(ValueError, match="out of range"):
        gaussian_conditional(zero, eye, [2], torch.zeros(1, dtype=F64))
    with pytest.raises(ValueError, match="repeated"):
        gaussian_marginal(torch.zeros(3, dtype=F64), torch.eye(3, dtype=F64), [0, 0])
    with pytest.raises(TypeError, match="sequence of ints"):
        gaussian_marginal(zero, eye, 1)
    with pytest.raises(TypeError, match="contain ints"):
        gaussian_marginal(zero, eye, [0.0])
    with pytest.raises(ValueError, match=r"value must have shape \(1,\) or \(B, 1\)"):
        gaussian_conditional(zero, eye, [1], torch.zeros(2, dtype=F64))
    with pytest.raises(ValueError, match="mean must have shape"):
        gaussian_marginal(torch.zeros(1, 2, dtype=F64), eye, [0])
    with pytest.raises(ValueError, match="same dimension"):
        gaussian_product(zero, eye, torch.zeros(3, dtype=F64), torch.eye(3, dtype=F64))
    with pytest.raises(ValueError, match="positive definite"):
        gaussian_product(zero, eye, zero, torch.zeros(2, 2, dtype=F64))


def test_monte_carlo_functions_reject_bad_arguments():
    with pytest.raises(TypeError, match="floating-point"):
        mc_estimate(torch.arange(3))
    with pytest.raises(ValueError, match=r"shape \(n,\)"):
        mc_estimate(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="finite"):
        mc_estimate(torch.tensor([1.0, math.nan]))
    with pytest.raises(ValueError, match="every weight is zero"):
        effective_sample_size(torch.full((3,), -math.inf))
    with pytest.raises(ValueError, match="nan or"):
        effective_sample_size(torch.tensor([0.0, math.nan]))
    with pytest.raises(ValueError, match="same shape"):
        importance_estimate(torch.zeros(3), torch.zeros(4))
    with pytest.raises(TypeError, match="self_normalized must be a bool"):
        importance_estimate(torch.zeros(3), torch.zeros(3), self_normalized=1)
    with pytest.raises(ValueError, match="every weight is zero"):
        importance_estimate(torch.zeros(2), torch.full((2,), -math.inf), self_normalized=True)


def test_gradient_estimators_reject_bad_arguments():
    f = lambda x: x.sum(dim=1)  # noqa: E731
    mean, std, eps = torch.zeros(2), torch.ones(2), torch.randn(5, 2)
    with pytest.raises(TypeError, match="f must be callable"):
        reparam_gradient(None, mean, std, eps)
    with pytest.raises(ValueError, match="std must be > 0"):
        score_function_gradient(f, mean, -std, eps)
    with pytest.raises(ValueError, match=r"eps must have shape \(n, 2\)"):
        reparam_gradient(f, mean, std, torch.randn(5, 3))
    with pytest.raises(ValueError, match=r"both have shape \(D,\)"):
        reparam_gradient(f, mean, torch.ones(3), eps)
    with pytest.raises(ValueError, match=r"f must map points \(n, D\) to values \(n,\)"):
        reparam_gradient(lambda x: x, mean, std, eps)
    with pytest.raises(TypeError, match="baseline must be a real number"):
        score_function_gradient(f, mean, std, eps, baseline="1")


# --------------------------------------------------------------------------- checkers

NAMES = ["gaussian_conditional", "kl_mvn", "self_normalized_is"]


@pytest.mark.parametrize("name", NAMES)
def test_checker_reference_passes(name):
    checker = get_checker(name)
    result = check(name, checker.reference)
    assert result.passed, result.message
    assert any(c.edge for c in checker.cases()) and any(not c.edge for c in checker.cases())


WRONG = [
    ("gaussian_conditional", ex._cond_first, "LAST m"),
    ("gaussian_conditional", ex._cond_marginal, "returned the marginal"),
    ("gaussian_conditional", ex._cond_not_centred, "Centre the observation"),
    ("gaussian_conditional", ex._cond_plus, "MINUS"),
    ("gaussian_conditional", ex._cond_no_inverse, "INVERSE of Sigma_bb"),
    ("kl_mvn", ex._kl_swapped, "You computed KL(q || p)"),
    ("kl_mvn", ex._kl_from(no_half="1"), "factor 1/2"),
    ("kl_mvn", ex._kl_from(trace="trace_swapped"), "invert the covariance of q"),
    ("kl_mvn", ex._kl_from(maha="maha_p"), "Mahalanobis term uses Sigma_q^-1"),
    ("kl_mvn", ex._kl_from(logdet_sign="1"), "wrong sign"),
    ("kl_mvn", ex._kl_from(no_d="1"), "forgot the -D"),
    ("kl_mvn", ex._kl_diagonal, "only the diagonals"),
    ("self_normalized_is", ex._snis_plain, "not by n"),
    ("self_normalized_is", ex._snis_unweighted, "Weight the values"),
    ("self_normalized_is", ex._snis_log_as_weights, "LOG-weights"),
    ("self_normalized_is", ex._ess_inverse_sum, "SQUARED normalised weights"),
    ("self_normalized_is", ex._ess_unnormalised, "Normalise the weights"),
    ("self_normalized_is", ex._ess_no_square, "Square the sum"),
]


@pytest.mark.parametrize("name, wrong, fragment", WRONG)
def test_checker_recognises_known_mistakes(name, wrong, fragment):
    result = check(name, wrong)
    assert not result.passed
    flat = " ".join(result.message.split())
    assert fragment in flat, result.message
    assert result.message.isascii()
    assert all(len(line) <= 80 for line in result.message.splitlines()), result.message


def test_snis_checker_flags_overflow():
    def naive(log_w, fx):
        w = log_w.exp()
        return (w * fx).sum() / w.sum(), w.sum() ** 2 / (w**2).sum()

    result = check("self_normalized_is", naive)
    assert not result.passed
    assert "overflowed or underflowed" in " ".join(result.message.split())
    assert len(result.failures) == 2  # only the two cases around +-1000


def test_checkers_accept_correct_alternatives():
    def by_precision(mean, cov, x_b):  # conditional through the precision matrix
        k = mean.shape[0] - x_b.shape[0]
        lam = torch.linalg.inv(cov)
        cov_a = torch.linalg.inv(lam[:k, :k])
        return mean[:k] - cov_a @ lam[:k, k:] @ (x_b - mean[k:]), cov_a

    def by_torch(mean_p, cov_p, mean_q, cov_q):
        return kl_divergence(MultivariateNormal(mean_p, cov_p), MultivariateNormal(mean_q, cov_q))

    def by_logsumexp(log_w, fx):
        shifted = (log_w - log_w.max()).exp()
        return (shifted * fx).sum() / shifted.sum(), shifted.sum() ** 2 / (shifted**2).sum()

    for name, fn in (("gaussian_conditional", by_precision), ("kl_mvn", by_torch),
                     ("self_normalized_is", by_logsumexp)):
        result = check(name, fn)
        assert result.passed, result.message


def test_checker_reports_wrong_shapes_and_exceptions():
    result = check("kl_mvn", lambda mp, cp, mq, cq: ex._kl_mvn(mp, cp, mq, cq).reshape(1))
    assert not result.passed and "shape" in result.message
    result = check("gaussian_conditional", lambda m, c, x: 1 / 0)
    assert not result.passed and "ZeroDivisionError" in result.message


# --------------------------------------------------------------------------- delta method


def test_delta_method_matches_the_spread_of_a_ratio_of_means():
    """thm-app-prob-delta, eq-app-prob-delta: over 4000 repetitions, the ratio of two
    independent means (Exp(1), n = 200, over Uniform(1, 3), n = 100) spreads as the delta
    method predicts (the spread of a sample sd is about 1.1% here; a wrong factor fails), and
    the plug-in intervals g +- 1.96 se cover the true ratio about 95% of the time."""
    from gmbook.probability import delta_method

    g = torch.Generator().manual_seed(11)
    reps, n_x, n_y = 4000, 200, 100
    x = torch.empty(reps, n_x, dtype=torch.float64).exponential_(generator=g)
    y = 1 + 2 * torch.rand(reps, n_y, dtype=torch.float64, generator=g)
    ratio = lambda v: v[0] / v[1]
    truth = delta_method(ratio, torch.tensor([1.0, 2.0], dtype=torch.float64),
                         torch.diag(torch.tensor([1 / n_x, (1 / 3) / n_y],
                                                 dtype=torch.float64)))
    assert truth.mean == pytest.approx(0.5)
    spread = (x.mean(1) / y.mean(1)).std().item()
    assert spread / truth.se == pytest.approx(1.0, abs=0.05)
    covered = 0
    for i in range(500):
        theta = torch.stack([x[i].mean(), y[i].mean()])
        cov = torch.diag(torch.stack([x[i].var() / n_x, y[i].var() / n_y]))
        est = delta_method(ratio, theta, cov, n=n_x + n_y)
        covered += abs(est.mean - 0.5) < 1.96 * est.se
    assert 0.92 < covered / 500 < 0.98


def test_delta_method_gives_the_variance_of_the_sample_variance():
    """thm-app-prob-delta with correlated components: for X ~ N(1, 1), the plug-in variance
    m2 - m1^2 of the raw moments (m1, m2) has asymptotic variance 2 sigma^4 / n = 2 / n
    (per-draw covariance of (X, X^2): [[1, 2], [2, 6]])."""
    from gmbook.probability import delta_method

    n = 50
    cov = torch.tensor([[1.0, 2.0], [2.0, 6.0]], dtype=torch.float64) / n
    est = delta_method(lambda m: m[1] - m[0] ** 2,
                       torch.tensor([1.0, 2.0], dtype=torch.float64), cov)
    assert est.mean == pytest.approx(1.0)
    assert est.se == pytest.approx(math.sqrt(2 / n), rel=1e-12)
    flat = delta_method(lambda m: (m**2).sum(), torch.zeros(2, dtype=torch.float64), cov)
    assert flat.se == 0.0  # a zero gradient: the first-order limit is degenerate


def test_delta_method_rejects_bad_arguments():
    from gmbook.probability import delta_method

    theta = torch.zeros(2, dtype=torch.float64)
    with pytest.raises(TypeError, match="callable"):
        delta_method(1.0, theta, torch.eye(2, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"shape \(2, 2\)"):
        delta_method(lambda v: v.sum(), theta, torch.eye(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="symmetric"):
        delta_method(lambda v: v.sum(), theta,
                     torch.tensor([[1.0, 0.5], [0.0, 1.0]], dtype=torch.float64))
    with pytest.raises(ValueError, match="scalar"):
        delta_method(lambda v: v, theta, torch.eye(2, dtype=torch.float64))
