"""Tests of ``gmbook.metrics``: the claims the chapter "Evaluating generative models" cites.

Each test's docstring names the claim. Every random draw uses an explicit, seeded
``torch.Generator`` (conftest also seeds the global RNG), so the tests are deterministic.
"""

from __future__ import annotations

import functools
import math
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import linalg as sla
from scipy.stats import norm
from torch.distributions import MultivariateNormal

from gmbook.metrics import _common, floors
from gmbook.data import DIGIT_LEVELS, Banana, EightGaussians, TwoMoons, digits
from gmbook.metrics import (
    CEILING_REPEATS,
    DEFAULT_BANDWIDTHS,
    FLOOR_REPEATS,
    FloorPrecisionWarning,
    Estimate,
    Scorecard,
    bits_per_dim,
    density_coverage,
    energy_distance,
    entropy,
    entropy_quadrature,
    floor_values,
    frechet_distance,
    frechet_gaussians,
    inception_score,
    kid,
    mmd2,
    nll,
    nll_report,
    paired_difference,
    paired_rows,
    paired_kl,
    precision_recall,
    scorecard,
    sliced_wasserstein2,
    two_sample_test,
    wasserstein2,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class StandardNormal:
    """N(0, I) in D dimensions with the book's sample/log_prob verbs (the ceiling model)."""

    def __init__(self, dim: int = 2):
        self.dim = dim

    def sample(self, n, *, generator=None):
        return torch.randn(n, self.dim, generator=generator)

    def log_prob(self, x):
        return -0.5 * x.square().sum(-1) - 0.5 * self.dim * math.log(2 * math.pi)


# --------------------------------------------------------------------------- Estimate, NLL


def test_estimate_format_and_interval():
    """An Estimate prints as "mean ± se" and its 95% interval is mean ± 1.96 se."""
    e = Estimate(1.23449, 0.0051, 100)
    assert f"{e:.3f}" == "1.234 ± 0.005"
    assert str(e) == "1.234 ± 0.0051"
    lo, hi = e.ci95()
    assert hi - e.mean == pytest.approx(1.959964 * 0.0051, rel=1e-6)
    assert e.mean - lo == pytest.approx(hi - e.mean)
    with pytest.raises(ValueError):
        Estimate(1.0, -0.1, 10)
    with pytest.raises(ValueError):
        Estimate(1.0, 0.1, 0)


def test_nll_of_true_density_is_entropy():
    """[eq-heldout-nll] The NLL of the true density on its own samples estimates the entropy:
    for N(0, I_2), H = log(2 pi e) nats, within 3 standard errors."""
    model = StandardNormal(2)
    x = model.sample(20_000, generator=gen(1))
    e = nll(model, x, batch_size=3000)  # several batches
    assert e.n == 20_000
    assert abs(e.mean - math.log(2 * math.pi * math.e)) < 3 * e.se
    # a plain callable works too and gives the same numbers
    assert nll(model.log_prob, x).mean == pytest.approx(e.mean, rel=1e-12)


def test_nll_is_infinite_where_the_model_has_no_mass():
    """A model with zero density at a held-out point has infinite NLL (reported, not hidden)."""
    x = torch.tensor([[0.0, 0.0], [5.0, 5.0]])
    box = lambda z: torch.where(z.abs().max(1).values < 1, 0.0, -math.inf)  # noqa: E731
    assert nll(box, x).mean == math.inf
    with pytest.raises(ValueError, match="nan"):
        nll(lambda z: torch.full((z.shape[0],), math.nan), x)
    with pytest.raises(ValueError, match="shape"):
        nll(lambda z: z, x)


def test_bits_per_dim_uniform_over_levels_is_log2_levels():
    """[eq-bpd] Bits/dim with the dequantization bound: a model uniform over the 17 bins of the digits
    (width 2/16 on [-1, 1]) has bpd = log2(17), computed here from dequantized digits."""
    width = 2 / (DIGIT_LEVELS - 1)
    x = digits().reshape(-1, 64)[:300]
    u = x + width * (torch.rand(x.shape, generator=gen(2)) - 0.5)  # uniform dequantization
    lo, hi = -1 - width / 2, 1 + width / 2
    assert bool(((u >= lo) & (u <= hi)).all())
    log_volume = 64 * math.log(hi - lo)

    def uniform(z):  # the density 1 / volume on the box of the 17 bins, in float64
        return torch.full((z.shape[0],), -log_volume, dtype=torch.float64)

    e = nll(uniform, u)
    assert bits_per_dim(e.mean, 64, bin_width=width) == pytest.approx(math.log2(17), rel=1e-12)
    # continuous data: NLL / (D ln 2), and an Estimate is converted with its se
    assert bits_per_dim(2 * math.log(2), 2) == pytest.approx(1.0)
    b = bits_per_dim(Estimate(2 * math.log(2), 0.2, 10), 2)
    assert isinstance(b, Estimate) and b.mean == pytest.approx(1.0)
    assert b.se == pytest.approx(0.2 / (2 * math.log(2)))


def test_bits_per_dim_of_dequantized_exact_model_is_discrete_entropy():
    """[prop-dequantization, eq-dequantization] The dequantization bound is tight for the model that spreads each level's probability
    uniformly over its bin: its bpd is the discrete entropy in bits per (discrete) dimension."""
    levels = torch.tensor([-1.0, -1 / 3, 1 / 3, 1.0])  # 4 levels on [-1, 1], width 2/3
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    width = 2 / 3
    k = torch.multinomial(probs, 40_000, replacement=True, generator=gen(3))
    u = (levels[k] + width * (torch.rand(40_000, generator=gen(4)) - 0.5))[:, None]  # (N, 1)

    def log_q(z):  # piecewise constant: P(level) / width on each bin
        idx = ((z[:, 0] + 1 + width / 2) / width).floor().long().clamp(0, 3)
        return (probs[idx] / width).log()

    bpd = bits_per_dim(nll(log_q, u), 1, bin_width=width)
    h_bits = float(-(probs * probs.log2()).sum())
    assert abs(bpd.mean - h_bits) < 3 * bpd.se


def _gaussian_kl(m0, s0, m1, s1):
    """KL(N(m0, s0) || N(m1, s1)), closed form."""
    d = m0.shape[0]
    s1_inv = torch.linalg.inv(s1)
    diff = m1 - m0
    return 0.5 * float(
        torch.trace(s1_inv @ s0) + diff @ s1_inv @ diff - d + torch.logdet(s1) - torch.logdet(s0)
    )


def test_paired_kl_matches_gaussian_closed_form_with_small_error():
    """[eq-paired-kl] The paired estimate of KL(p || q) matches the Gaussian closed form within 3 se, and its
    error bar is several times smaller than that of NLL(q) - H(p) from independent samples."""
    dt = torch.float64
    p = MultivariateNormal(torch.zeros(2, dtype=dt), torch.eye(2, dtype=dt))
    q_cov = torch.tensor([[1.1, 0.1], [0.1, 0.9]], dtype=dt)  # a good model: KL about 0.015
    q = MultivariateNormal(torch.tensor([0.1, -0.05], dtype=dt), q_cov)
    x = torch.randn(20_000, 2, generator=gen(5), dtype=dt)
    kl = paired_kl(q, p, x)
    truth = _gaussian_kl(p.mean, p.covariance_matrix, q.mean, q.covariance_matrix)
    assert abs(kl.mean - truth) < 3 * kl.se
    unpaired = nll_report(nll(q, x), nll(p, torch.randn(20_000, 2, generator=gen(6), dtype=dt)))
    assert unpaired.gap.se > 5 * kl.se
    assert abs(unpaired.gap.mean - truth) < 4 * unpaired.gap.se
    line = str(unpaired)
    assert line.isascii() and "\n" not in line and line.startswith("NLL ")


def test_nll_and_paired_kl_take_log_densities_evaluated_once():
    """[eq-paired-kl] Log-densities already evaluated at the points give exactly the numbers of
    the model evaluated in batches (so a chapter evaluates an expensive model once for both);
    a tensor of the wrong shape or dtype is refused."""
    dt = torch.float64
    p = MultivariateNormal(torch.zeros(2, dtype=dt), torch.eye(2, dtype=dt))
    q = MultivariateNormal(torch.tensor([0.1, -0.05], dtype=dt), 1.2 * torch.eye(2, dtype=dt))
    x = torch.randn(5000, 2, generator=gen(7), dtype=dt)
    lq, lp = q.log_prob(x), p.log_prob(x)
    assert nll(lq, x, batch_size=1500) == nll(q, x, batch_size=1500)
    assert paired_kl(lq, lp, x) == paired_kl(q, p, x)
    assert paired_kl(q, lp, x) == paired_kl(q, p, x)
    with pytest.raises(ValueError, match="shape"):
        nll(lq[:-1], x)
    with pytest.raises(ValueError, match="floating point"):
        paired_kl(lq, torch.zeros(5000, dtype=torch.long), x)
    with pytest.raises(ValueError, match="not finite"):
        paired_kl(lq, torch.full((5000,), -math.inf, dtype=dt), x)


def test_sorted_columns_match_torch_sort_with_and_without_gradients():
    """The numpy sort of the sliced-W2 projections gives exactly torch.sort's values; with
    a gradient needed, torch sorts and sliced W2 stays differentiable."""
    from gmbook.metrics._common import _sort_columns

    for dt in (torch.float32, torch.float64):
        p = torch.randn(700, 33, generator=gen(8), dtype=dt)
        p[::50, 3] = 0.0  # ties
        assert torch.equal(_sort_columns(p), p.sort(dim=0).values)
    x = torch.randn(50, 2, generator=gen(9), requires_grad=True)
    y = torch.randn(60, 2, generator=gen(10))
    sliced_wasserstein2(x, y, generator=gen(11)).backward()
    assert x.grad is not None and bool(torch.isfinite(x.grad).all())


def test_paired_kl_rejects_points_outside_p():
    """paired_kl needs points of p: log p = -inf means they are not."""
    x = torch.tensor([[0.0, 0.0], [3.0, 3.0]])
    inside = lambda z: torch.where(z.abs().max(1).values < 1, 0.0, -math.inf)  # noqa: E731
    with pytest.raises(ValueError, match="samples of p"):
        paired_kl(StandardNormal(), inside, x)


# --------------------------------------------------------------------------- entropy


@pytest.mark.parametrize(
    "dist, lims, n_mc",
    [
        (TwoMoons(), (-3.0, 3.0), 20_000),
        (EightGaussians(), (-2.0, 2.0), 50_000),
        (Banana(), ((-7.0, 7.0), (-3.0, 30.0)), 50_000),
    ],
    ids=["two_moons", "eight_gaussians", "banana"],
)
def test_entropy_monte_carlo_agrees_with_quadrature(dist, lims, n_mc):
    """H(p) by Monte Carlo, -mean log p(x), agrees with the grid quadrature within 3 se."""
    h_quad = entropy_quadrature(dist, lims=lims, n=128)
    h_mc = entropy(dist, n=n_mc, generator=gen(7))
    assert abs(h_mc.mean - h_quad) < 3 * h_mc.se


def test_entropy_closed_forms():
    """Closed forms of the standardized toys' entropies, H(z) = H(x) - sum_d log sigma_d:
    eight Gaussians (components 15 std apart, overlap < 1e-40): log 8 + log(2 pi e std^2);
    banana (a Gaussian and a conditionally Gaussian factor): log(2 pi e) + log(std)."""
    eight = EightGaussians()
    h8 = math.log(8) + math.log(2 * math.pi * math.e * eight.std**2)
    h8 -= float(torch.log(eight.standardizer.std).sum())
    assert entropy_quadrature(eight, lims=(-2, 2), n=128) == pytest.approx(h8, abs=1e-10)
    banana = Banana()
    hb = math.log(2 * math.pi * math.e) + math.log(banana.std)
    hb -= float(torch.log(banana.standardizer.std).sum())
    h_quad = entropy_quadrature(banana, lims=((-7, 7), (-3, 30)), n=256)
    assert h_quad == pytest.approx(hb, abs=1e-8)


def test_entropy_quadrature_converges_for_two_moons():
    """The grid entropy of the peaked two moons has converged at n = 128 (to 1e-8 of n = 160),
    and a coarse grid or a box that cuts off mass is flagged by a warning."""
    h128 = entropy_quadrature(TwoMoons(), lims=(-3, 3), n=128)
    h160 = entropy_quadrature(TwoMoons(), lims=(-3, 3), n=160)
    assert h128 == pytest.approx(h160, abs=1e-8)
    with pytest.warns(RuntimeWarning, match="not 1"):
        entropy_quadrature(TwoMoons(), lims=(-3, 3), n=40)
    with pytest.warns(RuntimeWarning, match="widen lims"):
        entropy_quadrature(EightGaussians(), lims=(-1, 1), n=64)


# --------------------------------------------------------------------------- MMD and friends


def test_unbiased_mmd2_has_mean_zero_under_the_null():
    """[eq-mmd] For two samples of the same distribution the unbiased MMD^2 (U-statistic) has mean 0:
    over 300 independent pairs the mean is within 3 se of 0 and many values are negative;
    the biased V-statistic is always positive."""
    data = EightGaussians()
    g = gen(8)
    u, v = [], []
    for _ in range(300):
        x, y = data.sample(40, generator=g), data.sample(40, generator=g)
        u.append(float(mmd2(x, y)))
        v.append(float(mmd2(x, y, unbiased=False)))
    u = np.array(u)
    assert abs(u.mean()) < 3 * u.std(ddof=1) / math.sqrt(len(u))
    assert 0.2 < (u < 0).mean() < 0.8
    assert min(v) > 0


def test_unbiased_mmd2_null_is_right_skewed():
    """[thm-mmd-null] Under the null the unbiased MMD^2 is a degenerate U-statistic whose limit
    is a weighted sum of centred chi-squares: right-skewed, so it is negative in more than half
    of the draws (not about half, as a symmetric law would be) and its mean is still 0.
    One wide Gaussian kernel (bandwidth 2 for unit-variance data) has one dominant eigenvalue."""
    g = gen(40)
    n, draws = 30, 1500
    x = torch.randn(draws, 2 * n, 1, generator=g, dtype=torch.float64)
    u = np.array([float(mmd2(z[:n], z[n:], bandwidths=(2.0,))) for z in x])
    se = u.std(ddof=1) / math.sqrt(draws)
    assert abs(u.mean()) < 3 * se  # unbiased
    frac_negative = (u < 0).mean()
    assert frac_negative > 0.5 + 3 * math.sqrt(0.25 / draws), frac_negative
    skew = (((u - u.mean()) / u.std()) ** 3).mean()
    assert skew > 5 * math.sqrt(6 / draws), skew


def test_biased_mmd2_bias_is_the_diagonal_term_and_can_favour_a_narrow_model():
    """[eq-mmd-v-bias] E MMD^2_b = MMD^2 + (E_p[k(X,X) - k(X,X')])/n + (E_q[k(Y,Y) - k(Y,Y')])/m.
    For N(0, 1) against N(0, c^2) with one Gaussian kernel of bandwidth s, every term has a
    closed form, E k(X, X') = s / sqrt(s^2 + var_X + var_X'); the Monte Carlo mean of mmd2
    (unbiased=False) matches it, and for c slightly below 1 the model's expectation is below
    the floor's (c = 1): under-dispersed models beat the floor in expectation."""
    s, n, draws = 1.0, 4, 3000

    def pair_mean(v1, v2):  # E exp(-(X - X')^2 / 2 s^2) for independent centred Gaussians
        return s / math.sqrt(s**2 + v1 + v2)

    def expected(c):
        pop = pair_mean(1, 1) + pair_mean(c * c, c * c) - 2 * pair_mean(1, c * c)
        return pop + (1 - pair_mean(1, 1)) / n + (1 - pair_mean(c * c, c * c)) / n

    g = gen(41)
    for c in (1.0, 0.5):
        x = torch.randn(draws, n, 1, generator=g, dtype=torch.float64)
        y = c * torch.randn(draws, n, 1, generator=g, dtype=torch.float64)
        v = np.array([float(mmd2(a, b, bandwidths=(s,), unbiased=False)) for a, b in zip(x, y)])
        se = v.std(ddof=1) / math.sqrt(draws)
        assert abs(v.mean() - expected(c)) < 4 * se, (c, v.mean(), expected(c), se)
    # the formula: a mildly under-dispersed model is below the floor in expectation
    assert expected(0.97) < expected(1.0)


def test_mmd2_per_bandwidth_sums_to_total_and_follows_dtype():
    """mmd2 per bandwidth is a (S,) tensor summing to the mixture value; float64 in, float64
    out; gradients flow and the autograd path gives the same value as the in-place one."""
    g = gen(9)
    x, y = torch.randn(200, 2, generator=g, dtype=torch.float64), torch.randn(150, 2, generator=g)
    per = mmd2(x, y, per_bandwidth=True)
    assert per.shape == (len(DEFAULT_BANDWIDTHS),) and per.dtype == torch.float64
    assert float(per.sum()) == pytest.approx(float(mmd2(x, y)), rel=1e-12)
    xg = x.clone().requires_grad_(True)
    value = mmd2(xg, y.double(), unbiased=False)
    value.backward()
    assert xg.grad is not None and bool(torch.isfinite(xg.grad).all())
    plain = float(mmd2(x, y.double(), unbiased=False))  # no autograd: the in-place path
    assert float(value.detach()) == pytest.approx(plain, rel=1e-10)
    s = sliced_wasserstein2(xg, y.double(), generator=gen(1))
    s.backward()
    assert s.dtype == torch.float64


def test_mmd2_blocks_give_the_same_value(monkeypatch):
    """The blocked pairwise sums (bounded memory) give the same MMD^2 as one block."""
    g = gen(10)
    x = torch.randn(300, 3, generator=g, dtype=torch.float64)
    y = torch.randn(200, 3, generator=g, dtype=torch.float64)
    whole = float(mmd2(x, y))
    monkeypatch.setattr(_common, "_BLOCK", 1000)  # read by _pair_sums: blocks of 3 to 5 rows
    assert float(mmd2(x, y)) == pytest.approx(whole, rel=1e-12)
    assert float(energy_distance(x, y)) > 0


def test_metrics_vanish_on_identical_sets():
    """MMD^2 (biased), energy distance (V), SW2 and exact W2 are 0 for identical sets;
    the unbiased MMD^2 is then at its floor, slightly negative."""
    x = TwoMoons().sample(500, generator=gen(11), dtype=torch.float64)
    assert float(mmd2(x, x, unbiased=False)) == pytest.approx(0.0, abs=1e-12)
    assert float(mmd2(x, x)) < 0
    assert float(energy_distance(x, x)) == pytest.approx(0.0, abs=1e-9)  # sqrt of rounding
    assert float(sliced_wasserstein2(x, x, generator=gen(1))) == 0.0
    assert wasserstein2(x, x) == pytest.approx(0.0, abs=1e-7)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-12)


def test_metrics_grow_monotonically_with_a_mean_shift():
    """MMD^2, energy distance, SW2 and W2 between x and y + delta grow with |delta|."""
    data = EightGaussians()
    x, y = data.sample(400, generator=gen(12)), data.sample(400, generator=gen(13))
    direction = torch.tensor([0.6, 0.8])
    shifts = [0.0, 0.1, 0.3, 1.0, 2.0]
    for name, f in [
        ("mmd2", lambda a, b: float(mmd2(a, b))),
        ("mmd2_biased", lambda a, b: float(mmd2(a, b, unbiased=False))),
        ("energy", lambda a, b: float(energy_distance(a, b))),
        ("sw2", lambda a, b: float(sliced_wasserstein2(a, b, generator=gen(0)))),
        ("w2", wasserstein2),
    ]:
        values = [f(x, y + s * direction) for s in shifts]
        assert all(b > a for a, b in zip(values, values[1:])), (name, values)


def test_energy_distance_matches_closed_form_for_gaussians():
    """Energy distance of N(0, 1) and N(1, 2^2) in 1-D against its closed form
    2 E|X - Y| - 2 s1/sqrt(pi) - 2 s2/sqrt(pi), E|Z| of Z ~ N(d, s^2) = s sqrt(2/pi)
    exp(-d^2 / 2 s^2) + d (1 - 2 Phi(-d / s)); the U-statistic over 4 pairs within 3 se."""
    s1, s2, d = 1.0, 2.0, 1.0
    s = math.hypot(s1, s2)
    e_abs = s * math.sqrt(2 / math.pi) * math.exp(-(d**2) / (2 * s**2))
    e_abs += d * (1 - 2 * norm.cdf(-d / s))
    truth = 2 * e_abs - 2 * s1 / math.sqrt(math.pi) - 2 * s2 / math.sqrt(math.pi)
    g = gen(14)
    values = np.array([
        float(energy_distance(
            s1 * torch.randn(2000, 1, generator=g, dtype=torch.float64),
            d + s2 * torch.randn(2000, 1, generator=g, dtype=torch.float64),
            unbiased=True,
        ))
        for _ in range(4)
    ])
    assert abs(values.mean() - truth) < 3 * values.std(ddof=1) / 2 + 1e-3
    assert abs(values.mean() - truth) < 0.05 * truth


# --------------------------------------------------------------------------- Wasserstein


def test_w2_in_one_dimension_is_the_sorted_sample_formula():
    """In 1-D, with n == m, the optimal coupling matches sorted samples:
    W2^2 = mean (x_(i) - y_(i))^2; for n != m the exact quantile formula of
    sliced_wasserstein2 (every 1-D direction is +-1) agrees with the OT solver."""
    g = gen(15)
    x = torch.randn(300, 1, generator=g, dtype=torch.float64)
    y = 0.5 + 2 * torch.rand(300, 1, generator=g, dtype=torch.float64)
    sorted_formula = math.sqrt(float((x.sort(0).values - y.sort(0).values).square().mean()))
    assert wasserstein2(x, y) == pytest.approx(sorted_formula, rel=1e-10)
    sliced = float(sliced_wasserstein2(x, y, n_projections=3, generator=g))
    assert sliced == pytest.approx(sorted_formula, rel=1e-10)
    y_odd = y[:217]
    assert float(sliced_wasserstein2(x, y_odd, n_projections=2, generator=g)) == pytest.approx(
        wasserstein2(x, y_odd), rel=1e-9
    )


def test_w2_solvers_agree():
    """The network simplex (POT) and the assignment solver give the same exact W2."""
    data = TwoMoons()
    x, y = data.sample(400, generator=gen(16)), data.sample(400, generator=gen(17)) * 1.1
    pot, assignment = wasserstein2(x, y, solver="pot"), wasserstein2(x, y, solver="assignment")
    assert pot == pytest.approx(assignment, rel=1e-10)
    # unequal sizes: only the OT solver; W2 of a set against its own duplicate is 0
    assert wasserstein2(x, torch.cat([x, x]), solver="pot") == pytest.approx(0.0, abs=1e-7)


def test_frechet_gaussians_closed_forms():
    """[eq-frechet] The Frechet distance between Gaussians: |mu1 - mu2|^2 + sum (sqrt a_i - sqrt b_i)^2 for
    commuting (diagonal) covariances, i.e. W2^2; and for non-commuting ones it equals the
    standard FID computation with scipy's sqrtm of S1 S2 (an independent route)."""
    dt = torch.float64
    mu1, mu2 = torch.tensor([0.0, 1.0, -1.0], dtype=dt), torch.tensor([1.0, 1.0, 0.5], dtype=dt)
    a, b = torch.tensor([1.0, 4.0, 0.25], dtype=dt), torch.tensor([9.0, 1.0, 0.25], dtype=dt)
    closed = float((mu1 - mu2).square().sum() + (a.sqrt() - b.sqrt()).square().sum())
    frechet = frechet_gaussians(mu1, torch.diag(a), mu2, torch.diag(b))
    assert frechet == pytest.approx(closed, rel=1e-12)
    g = gen(18)
    for _ in range(3):
        m1, m2 = torch.randn(4, 4, generator=g, dtype=dt), torch.randn(4, 4, generator=g, dtype=dt)
        s1, s2 = m1 @ m1.T + 0.1 * torch.eye(4, dtype=dt), m2 @ m2.T
        c1, c2 = torch.randn(4, generator=g, dtype=dt), torch.randn(4, generator=g, dtype=dt)
        cross = sla.sqrtm(s1.numpy() @ s2.numpy()).real  # the usual FID code path
        fid = float((c1 - c2).square().sum())
        fid += float(np.trace(s1.numpy() + s2.numpy() - 2 * cross))
        assert frechet_gaussians(c1, s1, c2, s2) == pytest.approx(fid, rel=1e-8)


def test_empirical_w2_between_gaussian_samples_approaches_frechet():
    """[eq-frechet] The Frechet distance of two Gaussians is their W2^2; the exact W2^2 between n = 1000
    samples of each (mean of 4 pairs) is within 7% of it."""
    dt = torch.float64
    mu, sd = torch.tensor([1.0, 0.0], dtype=dt), torch.tensor([2.0, 0.5], dtype=dt)
    zero, eye = torch.zeros(2, dtype=dt), torch.eye(2, dtype=dt)
    truth = frechet_gaussians(zero, eye, mu, torch.diag(sd**2))
    assert truth == pytest.approx(1.0 + 1.0 + 0.25)
    g = gen(19)

    def pair(n):
        return (torch.randn(n, 2, generator=g, dtype=dt),
                mu + sd * torch.randn(n, 2, generator=g, dtype=dt))

    w2sq = [wasserstein2(*pair(1000)) ** 2 for _ in range(4)]
    assert np.mean(w2sq) == pytest.approx(truth, rel=0.07)
    # the Frechet distance of the samples' Gaussian fits is closer still
    assert frechet_distance(*pair(5000)) == pytest.approx(truth, rel=0.05)


def test_w2_floor_is_at_least_the_nearest_neighbour_bound():
    """[prop-w2-floor] Between two samples of a density bounded by M in D dimensions, W2 is at
    least the mean distance from each y to its nearest x, and its mean is at least
    (2 M v_D n)^(-1/D) / 2; for the uniform cube in D = 3 (M = 1) at n = 100 and 400, and the
    floor shrinks by at most the factor 4^(-1/3) ... 4^(-1/2) the rates allow."""
    g = gen(47)
    v3 = 4 * math.pi / 3
    means = {}
    for n in (100, 400):
        values = []
        for _ in range(4):
            x = torch.rand(n, 3, generator=g, dtype=torch.float64)
            y = torch.rand(n, 3, generator=g, dtype=torch.float64)
            w2 = wasserstein2(x, y)
            assert w2 >= float(torch.cdist(y, x).min(1).values.mean()) - 1e-12
            values.append(w2)
        means[n] = np.mean(values)
        assert means[n] >= 0.5 * (2 * v3 * n) ** (-1 / 3)
    assert 4 ** (-1 / 2) < means[400] / means[100] < 4 ** (-1 / 3) * 1.1, means


def test_w2_refuses_large_sets_unless_asked():
    """Exact W2 is limited to n <= 2000 unless max_n is raised."""
    x = torch.zeros(2001, 2)
    with pytest.raises(ValueError, match="max_n"):
        wasserstein2(x, x[:10])
    assert wasserstein2(x[:5], x[:3], max_n=5) == 0.0
    with pytest.raises(ValueError, match="n == m"):
        wasserstein2(x[:5], x[:3], solver="assignment")


def test_frechet_of_identical_gaussians_is_zero_and_its_estimate_is_biased_upwards():
    """[eq-frechet] The Frechet distance of a Gaussian to itself is 0 (non-diagonal covariance);
    the plug-in estimate between two samples of that same Gaussian is positive on average, by
    many standard errors, and its bias shrinks about like 1/n (n = 50 vs 200: ratio near 4)."""
    dt = torch.float64
    m = torch.tensor([[2.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.5, -0.3, 0.7]], dtype=dt)
    cov, mu = m @ m.T, torch.tensor([1.0, -2.0, 0.5], dtype=dt)
    assert frechet_gaussians(mu, cov, mu, cov) == pytest.approx(0.0, abs=1e-10)
    g = gen(42)
    means = {}
    for n in (50, 200):
        v = np.array([frechet_distance(mu + torch.randn(n, 3, generator=g, dtype=dt) @ m.T,
                                       mu + torch.randn(n, 3, generator=g, dtype=dt) @ m.T)
                      for _ in range(300)])
        se = v.std(ddof=1) / math.sqrt(len(v))
        assert v.mean() > 10 * se
        means[n] = v.mean()
    assert 3.0 < means[50] / means[200] < 5.0, means


def _poly_moment_mmd2(mu: float) -> float:
    """Population MMD^2 of the kernel (a b + 1)^3 between N(0, 1) and N(mu, 1) in 1-D, from the
    Gaussian moments: E (1 + X X')^3 = sum_j C(3, j) (E X^j)(E X'^j) for independent X, X'."""
    def moments(m):  # E X^j, j = 0..3, for X ~ N(m, 1)
        return [1.0, m, 1.0 + m * m, m**3 + 3 * m]

    def pair(a, b):
        ma, mb = moments(a), moments(b)
        return sum(math.comb(3, j) * ma[j] * mb[j] for j in range(4))

    return pair(0.0, 0.0) + pair(mu, mu) - 2 * pair(0.0, mu)


def test_kid_is_unbiased_for_the_cubic_kernel():
    """[eq-kid] KID is the unbiased MMD^2 of the kernel (a.b/D + 1)^3: for N(0, 1) against
    N(0.5, 1) in 1-D its population value follows from the Gaussian moments (3.578125); the
    mean of KID over 4000 pairs of sets of 8 points matches it within 3 standard errors, while
    the biased (V-statistic) version would be off by (E k(X,X) - E k(X,X'))/n + ... > 2."""
    mu, n, draws = 0.5, 8, 4000
    truth = _poly_moment_mmd2(mu)
    assert truth == pytest.approx(3.578125)
    g = gen(43)
    x = torch.randn(draws, n, 1, generator=g, dtype=torch.float64)
    y = mu + torch.randn(draws, n, 1, generator=g, dtype=torch.float64)
    v = np.array([kid(a, b) for a, b in zip(x, y)])
    se = v.std(ddof=1) / math.sqrt(draws)
    assert abs(v.mean() - truth) < 3 * se, (v.mean(), truth, se)
    assert 3 * se < 1.0  # tight enough to reject the V-statistic's bias (E(1 + X^2)^3 = 28)
    # identical distributions: mean 0, and values of both signs
    same = np.array([kid(a, b) for a, b in zip(x[:1000], x[1000:2000])])
    assert abs(same.mean()) < 3 * same.std(ddof=1) / math.sqrt(len(same))
    assert (same < 0).any() and (same > 0).any()


def test_kid_options_and_shift():
    """KID: gamma defaults to 1/D (scaling features by a and gamma by 1/a^2 changes nothing);
    degree 1 with coef0 0 is the squared distance of the means minus its bias (unbiased)."""
    g = gen(44)
    x = torch.randn(300, 5, generator=g, dtype=torch.float64)
    y = torch.randn(200, 5, generator=g, dtype=torch.float64) + 0.3
    assert kid(3 * x, 3 * y, gamma=1 / (5 * 9)) == pytest.approx(kid(x, y), rel=1e-9)
    assert kid(x, y) > 0.05
    lin = kid(x, y, degree=1, coef0=0.0, gamma=1.0)
    x64, y64 = x.double(), y.double()
    sx, sy = x64.sum(0), y64.sum(0)
    n, m = len(x), len(y)
    within_x = (sx @ sx - x64.square().sum()) / (n * (n - 1))
    within_y = (sy @ sy - y64.square().sum()) / (m * (m - 1))
    assert lin == pytest.approx(float(within_x + within_y - 2 * (sx @ sy) / (n * m)), rel=1e-9)


def test_inception_score_closed_forms():
    """[eq-inception-score] IS = exp(I(index; label)): K for certain, balanced predictions; 1
    for identical predictions; exp(H(pi)) for certain predictions with class frequencies pi;
    and always within [1, K]."""
    k = 10
    one_hot = torch.nn.functional.one_hot(torch.arange(1000) % k, k).double()
    assert inception_score(one_hot) == pytest.approx(k, rel=1e-12)
    row = torch.softmax(torch.randn(k, generator=gen(45)), 0)
    assert inception_score(row.expand(50, k).clone()) == pytest.approx(1.0, abs=1e-12)
    labels = torch.tensor([0] * 6 + [1] * 3 + [2] * 1)
    pi = torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64)
    certain = torch.nn.functional.one_hot(labels, 4).double()  # class 3 never used
    assert inception_score(certain) == pytest.approx(math.exp(-(pi * pi.log()).sum()), rel=1e-12)
    probs = torch.softmax(3 * torch.randn(500, k, generator=gen(46)), 1)
    assert 1.0 < inception_score(probs) < k
    assert inception_score(probs.float()) == pytest.approx(inception_score(probs), rel=1e-5)


# --------------------------------------------------------------------------- two-sample test


def test_permutation_pvalues_are_uniform_under_the_null():
    """Under H0 the permutation p-value (1 + #{T_b >= T}) / (B + 1) is uniform: over 100
    tests the fraction below 0.1 lies in [0.02, 0.2], for MMD^2 and the energy distance."""
    data = EightGaussians()
    g = gen(20)
    for statistic in (mmd2, energy_distance):
        p = np.array([
            two_sample_test(data.sample(30, generator=g), data.sample(30, generator=g),
                            statistic=statistic, n_permutations=99, generator=g).p_value
            for _ in range(100)
        ])
        assert 0.02 <= (p <= 0.1).mean() <= 0.2, statistic.__name__
        assert p.min() >= 1 / 100


def test_permutation_test_detects_a_shift():
    """Under a mean shift of 0.5 (standardized units) the p-value is the smallest possible."""
    data = TwoMoons()
    x, y = data.sample(200, generator=gen(21)), data.sample(200, generator=gen(22)) + 0.5
    result = two_sample_test(x, y, n_permutations=199, generator=gen(23))
    assert result.p_value == pytest.approx(1 / 200)
    assert result.null.shape == (199,) and result.statistic > float(result.null.max())


def test_fast_permutation_path_equals_the_generic_one():
    """The pooled-matrix permutation path gives the statistics that calling mmd2 and
    energy_distance on each permuted split gives."""
    g = gen(24)
    x = torch.randn(25, 2, generator=g, dtype=torch.float64)
    y = torch.randn(35, 2, generator=g, dtype=torch.float64)
    for statistic in (mmd2, energy_distance):
        fast = two_sample_test(x, y, statistic=statistic, n_permutations=50, generator=gen(5))
        wrapped = lambda a, b, f=statistic: f(a, b)  # noqa: E731 - not the function itself
        slow = two_sample_test(x, y, statistic=wrapped, n_permutations=50, generator=gen(5))
        assert fast.statistic == pytest.approx(float(statistic(x, y)), rel=1e-9)
        torch.testing.assert_close(fast.null, slow.null, rtol=1e-9, atol=1e-12)
        assert fast.p_value == slow.p_value
    biased = functools.partial(mmd2, unbiased=False)
    result = two_sample_test(x, y, statistic=biased, n_permutations=20, generator=g)
    assert result.null.shape == (20,)
    one_bandwidth = functools.partial(mmd2, bandwidths=(0.1,))
    fast = two_sample_test(x, y, bandwidths=(0.1,), n_permutations=50, generator=gen(6))
    slow = two_sample_test(x, y, statistic=one_bandwidth, n_permutations=50, generator=gen(6))
    torch.testing.assert_close(fast.null, slow.null, rtol=1e-9, atol=1e-12)
    assert fast.statistic == pytest.approx(float(one_bandwidth(x, y)), rel=1e-9)


# --------------------------------------------------------------------------- precision/recall


def _eight_gaussians_modes(n: int, keep: int, seed: int) -> torch.Tensor:
    x, labels = EightGaussians().sample_with_labels(4 * n, generator=gen(seed))
    return x[labels < keep][:n]


def test_precision_recall_separate_mode_dropping_from_overdispersion():
    """k-NN precision/recall: a model that drops half the modes has recall < precision
    (recall about 0.5); an over-dispersed model has precision < recall."""
    real = EightGaussians().sample(1000, generator=gen(25))
    dropped = _eight_gaussians_modes(1000, keep=4, seed=26)
    pr = precision_recall(real, dropped)
    assert pr["recall"] < pr["precision"] and pr["precision"] > 0.9 and 0.35 < pr["recall"] < 0.65
    blurred = EightGaussians().sample(1000, generator=gen(27))
    blurred = blurred + 0.3 * torch.randn(blurred.shape, generator=gen(28))
    pr = precision_recall(real, blurred)
    assert pr["precision"] < pr["recall"] and pr["precision"] < 0.6
    same = precision_recall(real, EightGaussians().sample(1000, generator=gen(29)))
    assert same["precision"] > 0.9 and same["recall"] > 0.9


def test_density_and_coverage_of_a_perfect_model_have_known_means():
    """For a model equal to the data, density has mean 1 and coverage has mean
    1 - prod_{i=1..k} (N - i) / (N + M - i) (exchangeability): within 3 se over 100 pairs."""
    g = gen(39)
    n, k = 300, 5
    values = []
    for _ in range(100):
        real, fake = torch.randn(n, 2, generator=g), torch.randn(n, 2, generator=g)
        values.append(list(density_coverage(real, fake, k=k).values()))
    values = np.array(values)
    mean, se = values.mean(0), values.std(0, ddof=1) / math.sqrt(len(values))
    expected = [1.0, 1 - math.prod((n - i) / (2 * n - i) for i in range(1, k + 1))]
    assert np.all(np.abs(mean - expected) < 3 * se), (mean, expected, se)


def test_density_coverage_behave_as_in_naeem_et_al():
    """Density is about 1 and coverage near 1 for a perfect model; dropping half the modes
    halves the coverage; density is robust to an outlier among the model samples."""
    real = EightGaussians().sample(1000, generator=gen(30))
    same = density_coverage(real, EightGaussians().sample(1000, generator=gen(31)))
    assert 0.85 < same["density"] < 1.15 and same["coverage"] > 0.9
    dropped = density_coverage(real, _eight_gaussians_modes(1000, keep=4, seed=32))
    assert 0.35 < dropped["coverage"] < 0.65
    fake = EightGaussians().sample(1000, generator=gen(31))
    fake[0] = 50.0  # one far outlier
    assert density_coverage(real, fake)["density"] == pytest.approx(same["density"], abs=0.01)


# --------------------------------------------------------------------------- scorecard


def test_scorecard_ratio_is_near_one_for_the_truth_and_large_for_a_gaussian():
    """The scorecard's model/floor ratio is about 1 for samples of the data distribution
    itself, and much larger than 1 for N(0, I) (the ceiling)."""
    data = TwoMoons()
    truth = scorecard(data, data, n=500, repeats=4, generator=gen(33))
    gauss = scorecard(StandardNormal(), data, n=500, repeats=4, generator=gen(34))
    assert isinstance(truth, Scorecard)
    keys = [row.metric for row in truth.rows]
    assert keys[:4] == ["w2", "energy", "sw2", "mmd"]
    assert keys[4:] == [f"mmd@{s:g}" for s in DEFAULT_BANDWIDTHS]
    for row in truth.rows:
        assert 0.5 < row.ratio_mean < 2.0, row
        assert abs(row.ratio_mean - 1) < 4 * row.ratio_se + 0.15, row
        assert row.ratio_std == pytest.approx(row.model_std / row.floor_mean)
    minimum = {"w2": 2.0, "sw2": 2.0, "energy": 4.0, "mmd": 4.0, "mmd@0.2": 5.0}
    for row in gauss.rows:
        assert row.ratio_mean > minimum.get(row.metric, 1.5), row
        assert row.model_mean == pytest.approx(row.ceiling_mean, rel=0.35), row
        assert len(row.model_values) == 4 and np.mean(row.model_values) == pytest.approx(
            row.model_mean)
    # floors and ceilings do not depend on the model (same private generator)
    assert truth["w2"].floor_mean == gauss["w2"].floor_mean


def test_scorecard_inputs_output_and_cache():
    """A scorecard takes a model, a callable or a tensor of samples; it is reproducible with a
    seeded generator (cached floors give identical numbers); its str() is an ASCII table."""
    data = EightGaussians()
    floors._MEMORY.clear()
    kw = dict(n=200, repeats=3, metrics=("sw2", "w2", "mmd"))
    a = scorecard(data, data, generator=gen(35), **kw)
    assert len(floors._MEMORY) == 1
    b = scorecard(data, data, generator=gen(35), **kw)
    assert a == b
    floors._MEMORY.clear()
    assert scorecard(data, data, generator=gen(35), **kw) == a  # recomputed, same values
    samples = data.sample(600, generator=gen(36))
    c = scorecard(samples, data, generator=gen(37), **kw)
    sampler = lambda n, generator=None: data.sample(n, generator=generator)  # noqa: E731
    d = scorecard(sampler, data, generator=gen(35), **kw)
    per_bandwidth = [f"mmd@{s:g}" for s in DEFAULT_BANDWIDTHS]
    assert [r.metric for r in c.rows] == ["w2", "sw2", "mmd", *per_bandwidth]
    assert d.rows == a.rows  # the same draws as the model with .sample
    text = str(c)
    assert text.isascii() and "model/floor" in text and len(text.splitlines()) == 2 + len(c.rows)
    assert "floor of 30 pairs, ceiling of 10" in text and "including the floor's" in text
    assert "<table>" in c._repr_html_() and c._repr_markdown_().count("\n|") >= len(c.rows)
    as_dict = c.to_dict()
    assert as_dict["n"] == 200 and as_dict["rows"][0]["metric"] == "w2"
    with pytest.raises(KeyError):
        c["energy"]


def test_scorecard_numbers_are_the_public_metrics():
    """Each scorecard entry is the public function on the same samples: exact W2, the
    V-statistic energy distance and MMD^2, and SW2 on the directions of the floor seed."""
    data = TwoMoons()
    fake = data.sample(300, generator=gen(40))
    card = scorecard(fake, data, n=300, repeats=1, generator=gen(41), floor_seed=7)
    real = data.sample(300, generator=gen(41))  # the fresh data sample of repeat 1
    assert card["w2"].model_mean == pytest.approx(wasserstein2(fake, real), rel=1e-9)
    assert card["energy"].model_mean == pytest.approx(float(energy_distance(fake, real)), rel=1e-5)
    assert card["mmd"].model_mean == pytest.approx(
        float(mmd2(fake, real, unbiased=False)), rel=1e-4)
    per_bandwidth = mmd2(fake, real, unbiased=False, per_bandwidth=True)
    for s, value in zip(DEFAULT_BANDWIDTHS, per_bandwidth.tolist()):
        assert card[f"mmd@{s:g}"].model_mean == pytest.approx(value, rel=1e-4)
    sw2 = float(sliced_wasserstein2(fake, real, generator=gen(7)))
    assert card["sw2"].model_mean == pytest.approx(sw2, rel=1e-5)
    assert math.isnan(card["w2"].model_std)  # one repeat: no spread


def test_scorecard_floors_use_thirty_pairs_and_warn_below():
    """A scorecard's floor is the mean of FLOOR_REPEATS >= 30 independent pairs by default,
    its ceiling of the first CEILING_REPEATS; a smaller floor_repeats is honoured but warns."""
    assert FLOOR_REPEATS >= 30 and 1 <= CEILING_REPEATS <= FLOOR_REPEATS
    data = TwoMoons()
    card = scorecard(data, data, n=500, repeats=2, metrics=("w2",), generator=gen(50))
    assert (card.floor_repeats, card.ceiling_repeats) == (FLOOR_REPEATS, CEILING_REPEATS)
    values = floor_values(data, 500, "w2")
    assert values.shape == (FLOOR_REPEATS,)
    assert card["w2"].floor_mean == pytest.approx(values.mean(), rel=1e-12)
    assert card["w2"].floor_std == pytest.approx(values.std(ddof=1), rel=1e-12)
    with pytest.warns(FloorPrecisionWarning, match="floor_repeats=5"):
        few = scorecard(data, data, n=500, repeats=2, metrics=("w2",), generator=gen(50),
                        floor_repeats=5)
    # the first 5 of the same pairs: a 5-pair floor is a subset of the 30-pair one
    assert few["w2"].floor_mean == pytest.approx(values[:5].mean(), rel=1e-12)
    assert few.ceiling_repeats == 5
    assert few["w2"].model_values == card["w2"].model_values  # same model draws


def test_shipped_floors_equal_a_fresh_computation(monkeypatch):
    """The floors shipped in floors.json are the values a fresh computation gives: all 30
    pairs of every metric at n = 500, and the first 2 pairs of the n = 2000 entry (each pair
    is drawn in order from the private generator, so the first k are a k-pair run)."""
    data = TwoMoons()
    kw = dict(n=500, repeats=2, generator=gen(51))
    floors._MEMORY.clear()
    shipped = scorecard(data, data, **kw)
    floors._MEMORY.clear()
    monkeypatch.setattr(floors, "_shipped", lambda: {})  # no file: computed
    fresh = scorecard(data, data, **kw)
    floors._MEMORY.clear()
    for a, b in zip(shipped.rows, fresh.rows):
        assert a.floor_mean == pytest.approx(b.floor_mean, rel=1e-6), a.metric
        assert a.floor_std == pytest.approx(b.floor_std, rel=1e-5), a.metric
        assert a.ceiling_mean == pytest.approx(b.ceiling_mean, rel=1e-6), a.metric
    monkeypatch.undo()
    entries = floors._shipped()
    config = floors.FloorConfig(data, 2000, pairs=2)
    key, entry = floors.compute_entry(config, ceiling_pairs=1)
    for part in ("floor", "ceiling"):
        for metric, values in entry[part].items():
            np.testing.assert_allclose(values, entries[key][part][metric][: len(values)],
                                       rtol=1e-6, err_msg=f"{part} {metric}")


def _scorecard_calls(text: str) -> list[str]:
    """The argument text of every ``scorecard(...)`` call in a source text."""
    calls = []
    for m in re.finditer(r"\bscorecard\(", text):
        depth, i = 1, m.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        calls.append(text[m.end(): i - 1])
    return calls


def test_every_chapter_scorecard_configuration_is_shipped():
    """Every chapter and benchmark script that calls scorecard is a user of a shipped
    configuration at each sample size it uses (so no chapter pays for its floors or scores
    against floors that drift), and every configuration is in floors.json with at least
    FLOOR_REPEATS pairs of every metric."""
    root = Path(__file__).resolve().parents[1]
    entries = floors._shipped()
    users: dict[str, set[int]] = {}
    for config in floors.CONFIGURATIONS:
        dim = 2
        key = floors._file_key(config.dataset, dim, config.n, config.n_projections, 0,
                               config.dtype)
        assert key in entries, f"{key} missing: run python -m gmbook.metrics --write"
        entry = entries[key]
        assert entry["pairs"] >= config.pairs >= FLOOR_REPEATS, key
        assert entry["ceiling_pairs"] >= CEILING_REPEATS, key
        assert set(entry["floor"]) == {"w2", "energy", "sw2"} | {
            f"mmd@{s:g}" for s in DEFAULT_BANDWIDTHS}, key
        assert all(len(v) == entry["pairs"] for v in entry["floor"].values()), key
        for user in config.users:
            users.setdefault(user, set()).add(config.n)
    sources = sorted((root / "book").rglob("*.md")) + sorted((root / "benchmarks").glob("*.py"))
    seen = set()
    for path in sources:
        calls = [c for c in _scorecard_calls(path.read_text()) if "=" in c]
        if not calls:
            continue
        rel = path.relative_to(root).as_posix()
        seen.add(rel)
        assert rel in users, f"{rel} calls scorecard but no CONFIGURATIONS entry lists it"
        for call in calls:
            assert not re.search(r"\b(floor_seed|n_projections|bandwidths)\s*=", call), (
                f"{rel}: scorecard({call}) changes what the shipped floors assume")
            m = re.search(r"\bn\s*=\s*([0-9_]+)\s*[,)]?", call)
            if m:
                assert int(m.group(1)) in users[rel], f"{rel}: n = {m.group(1)} not shipped"
    assert seen, "no scorecard call found: the scan is broken"
    assert seen <= set(users)


def test_ratio_standard_error_by_monte_carlo():
    """[eq-ratio-se] The delta-method standard error of the ratio model/floor includes the
    floor's own: over many independent scorecards (fresh floors, fresh model draws) the
    spread of the ratio matches the mean reported standard error, both when the model's
    repeats dominate it and when the floor's pairs do (leaving out the floor's term
    reports about 0.3 of the spread in the second case, leaving out the model's about 0.4
    in the first)."""
    data = EightGaussians()
    shifted = lambda n, generator=None: data.sample(n, generator=generator) * 1.15  # noqa
    for repeats, pairs in ((4, 30), (30, 4)):
        ratios, ses = [], []
        g = gen(60 + repeats)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FloorPrecisionWarning)
            for seed in range(80):
                card = scorecard(shifted, data, n=100, repeats=repeats, metrics=("sw2",),
                                 generator=g, floor_seed=1000 + seed, floor_repeats=pairs,
                                 n_projections=16)
                ratios.append(card["sw2"].ratio_mean)
                ses.append(card["sw2"].ratio_se)
        floors._MEMORY.clear()
        spread, reported = np.std(ratios, ddof=1), math.sqrt(np.mean(np.square(ses)))
        assert 0.75 < reported / spread < 1.33, (repeats, pairs, reported, spread)


def test_paired_difference_cancels_the_shared_data_noise_and_detects_a_small_shift():
    """[eq-ratio-se] paired_difference scores two models against the same data sets. When
    the data sets' noise dominates (two "models" that return the same 300 points in every
    repeat, one shifted by 0.08 standardized units, scored by sliced W2), its standard
    error is far below the unpaired one, it matches the spread of the difference over
    independent runs (fresh data sets, the same models), and it resolves the shift, which
    two separate scorecards would not."""
    data = TwoMoons()
    n, repeats = 300, 20
    fixed = data.sample(n, generator=gen(300)).repeat(repeats, 1)  # (k n, 2)
    means, ses, unpaired = [], [], []
    for seed in range(30):
        d = paired_difference(fixed + torch.tensor([0.08, 0.0]), fixed, data, metric="sw2",
                              n=n, repeats=repeats, generator=gen(200 + seed),
                              n_projections=32)
        means.append(d.mean)
        ses.append(d.se)
        unpaired.append(d.unpaired_se)
        assert len(d.values_a) == len(d.values_b) == repeats
    floors._MEMORY.clear()
    rms = lambda v: math.sqrt(np.mean(np.square(v)))  # noqa: E731
    assert rms(ses) < 0.6 * rms(unpaired), (rms(ses), rms(unpaired))
    assert 0.7 < rms(ses) / np.std(means, ddof=1) < 1.4, (rms(ses), np.std(means, ddof=1))
    assert np.mean(means) > 2.5 * rms(ses), (np.mean(means), rms(ses))  # resolves the shift
    assert np.mean(means) < 2 * rms(unpaired), (np.mean(means), rms(unpaired))  # unpaired not
    assert d.floor_mean > 0 and d.ratio_mean == pytest.approx(d.mean / d.floor_mean)
    assert "paired" in str(d)


def test_paired_difference_of_a_model_with_itself_is_zero():
    """Both sides the same samples: every difference is exactly 0, and so is its error."""
    x = TwoMoons().sample(2000, generator=gen(70))
    d = paired_difference(x, x, TwoMoons(), metric="w2", n=500, repeats=4, generator=gen(71))
    assert d.mean == 0 and d.se == 0 and d.values_a == d.values_b
    assert d.correlation == pytest.approx(1.0)


def test_paired_rows_equals_paired_difference_on_the_same_data_sets():
    """[eq-ratio-se] Two scorecards of tensors with one generator seed score against the same
    data sets; paired_rows on their rows gives paired_difference's numbers without scoring
    again, and refuses rows of different metrics, floors or repeat counts."""
    data = TwoMoons()
    xa = 1.1 * data.sample(4 * 500, generator=gen(80))
    xb = data.sample(4 * 500, generator=gen(81))
    kw = dict(n=500, repeats=4, metrics=("sw2",), n_projections=32)
    ra = scorecard(xa, data, generator=gen(82), **kw)["sw2"]
    rb = scorecard(xb, data, generator=gen(82), **kw)["sw2"]
    got = paired_rows(ra, rb, n=500)
    want = paired_difference(xa, xb, data, metric="sw2", n=500, repeats=4, generator=gen(82),
                             n_projections=32)
    assert got.values_a == pytest.approx(want.values_a)
    assert got.values_b == pytest.approx(want.values_b)
    assert got.ratio_mean == pytest.approx(want.ratio_mean)
    assert got.ratio_se == pytest.approx(want.ratio_se)
    assert got.ratio_se > got.se / got.floor_mean  # the floor's error is in it
    other = scorecard(xa, data, generator=gen(82), n=500, repeats=4, metrics=("energy",))
    with pytest.raises(ValueError):
        paired_rows(ra, other["energy"], n=500)
    with pytest.raises(ValueError):
        paired_rows(ra, scorecard(xb, data, generator=gen(82), n=500, repeats=3,
                                  metrics=("sw2",), n_projections=32)["sw2"], n=500)
    with pytest.raises(TypeError):
        paired_rows(ra, 1.0, n=500)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "call, error",
    [
        (lambda x: mmd2(x, x[:, :1]), ValueError),
        (lambda x: mmd2(x.numpy(), x), TypeError),
        (lambda x: mmd2(x.long(), x), TypeError),
        (lambda x: mmd2(x[0], x), ValueError),
        (lambda x: mmd2(x[:1], x), ValueError),  # the U-statistic needs 2 points
        (lambda x: mmd2(x, x, bandwidths=()), ValueError),
        (lambda x: mmd2(x, x, bandwidths=(0.1, -1.0)), ValueError),
        (lambda x: mmd2(x, x, bandwidths=0.1), TypeError),
        (lambda x: mmd2(x, x, unbiased=1), TypeError),
        (lambda x: mmd2(torch.cat([x, x.new_full((1, 2), math.nan)]), x), ValueError),
        (lambda x: energy_distance(x, x[:, :1]), ValueError),
        (lambda x: sliced_wasserstein2(x, x, n_projections=0), ValueError),
        (lambda x: sliced_wasserstein2(x, x, generator=0), TypeError),
        (lambda x: wasserstein2(x, x, solver="sinkhorn"), ValueError),
        (lambda x: precision_recall(x, x, k=len(x)), ValueError),
        (lambda x: density_coverage(x, x, k=0), ValueError),
        (lambda x: frechet_gaussians(x[0], torch.eye(2), x[0], -torch.eye(2)), ValueError),
        (lambda x: frechet_gaussians(x[0], torch.ones(2, 2).tril(), x[0], x.new_ones(2).diag()),
         ValueError),
        (lambda x: frechet_gaussians(x[0], torch.eye(3), x[0], torch.eye(2)), ValueError),
        (lambda x: kid(x, x[:1]), ValueError),
        (lambda x: kid(x, x, degree=0), ValueError),
        (lambda x: kid(x, x, degree=2.5), TypeError),
        (lambda x: kid(x, x, gamma=0.0), ValueError),
        (lambda x: kid(x, x, coef0=-1.0), ValueError),
        (lambda x: kid(x, x[:, :1]), ValueError),
        (lambda x: inception_score(x.softmax(1).numpy()), TypeError),
        (lambda x: inception_score(x), ValueError),  # logits, not probabilities
        (lambda x: inception_score(x.abs()), ValueError),  # rows do not sum to 1
        (lambda x: inception_score(x.softmax(1)[:, :1]), ValueError),  # K = 1
        (lambda x: inception_score(x.softmax(1)[None]), ValueError),
        (lambda x: inception_score(torch.ones(3, 2, dtype=torch.long)), TypeError),
        (lambda x: two_sample_test(x, x, n_permutations=0), ValueError),
        (lambda x: two_sample_test(x, x, statistic="mmd"), TypeError),
        (lambda x: nll(42, x), TypeError),
        (lambda x: bits_per_dim(1.0, 0), ValueError),
        (lambda x: bits_per_dim(1.0, 2, bin_width=0.0), ValueError),
        (lambda x: bits_per_dim("1", 2), TypeError),
        (lambda x: entropy_quadrature(EightGaussians(), lims=(1, -1)), ValueError),
        (lambda x: entropy_quadrature(EightGaussians(), lims="wide"), TypeError),
        (lambda x: entropy(x), TypeError),
        (lambda x: nll_report(1.0, 1.0), TypeError),
        (lambda x: scorecard(x, EightGaussians(), n=10, repeats=3), ValueError),  # too few rows
        (lambda x: scorecard(x, EightGaussians(), n=5, metrics=("fid",)), ValueError),
        (lambda x: scorecard(x, EightGaussians(), n=5, metrics="w2"), TypeError),
        (lambda x: scorecard(x, EightGaussians(), n=2001, repeats=1), ValueError),
        (lambda x: scorecard(42, EightGaussians(), n=5), TypeError),
        (lambda x: scorecard(x, x, n=5), TypeError),
        (lambda x: scorecard(x.new_full((20, 2), math.inf), EightGaussians(), n=4), ValueError),
        (lambda x: paired_difference(x, x, EightGaussians(), n=5, repeats=1), ValueError),
        (lambda x: paired_difference(x, x, EightGaussians(), n=5, repeats=2, metric="fid"),
         ValueError),
        (lambda x: paired_difference(x, x, EightGaussians(), n=5, repeats=2, metric=2),
         TypeError),
        (lambda x: paired_difference(x, x[:, :1], EightGaussians(), n=5, repeats=2),
         ValueError),
        (lambda x: floor_values(EightGaussians(), 10, "fid"), ValueError),
    ],
)
def test_bad_input_raises(call, error):
    """Bad input raises a clear TypeError or ValueError instead of a wrong number."""
    x = torch.randn(20, 2, generator=gen(38))
    with pytest.raises(error):
        call(x)
