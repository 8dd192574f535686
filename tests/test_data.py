"""Tests of gmbook.data: the 2-D toys, their exact densities, the Standardizer, the digits."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.datasets import make_moons

from gmbook.data import (
    DIGIT_LEVELS,
    TOYS,
    Banana,
    Checkerboard,
    EightGaussians,
    GaussianGrid,
    Spirals,
    Standardizer,
    TwoMoons,
    digits,
    digits_split,
    toy,
    two_moons,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
DENSITY_TOYS = ["two_moons", "eight_gaussians", "checkerboard", "banana", "gaussian_grid"]
LABELLED_TOYS = {"two_moons": 2, "eight_gaussians": 8, "checkerboard": 8, "spirals": 2,
                 "gaussian_grid": 25}

# A box holding all but a negligible mass of each default toy in raw coordinates, and a
# grid step: well under the Gaussian widths (0.05, 0.1, 0.5), and aligned with the unit
# cells of the checkerboard, so that the midpoint rule is exact to ~1e-6 or better.
RAW_BOX = {
    "two_moons": ((-1.5, 2.5), (-1.0, 1.5), 0.025),
    "eight_gaussians": ((-2.8, 2.8), (-2.8, 2.8), 0.04),
    "checkerboard": ((-2.0, 2.0), (-2.0, 2.0), 0.05),
    "banana": ((-6.0, 6.0), (-3.5, 37.5), 0.05),
    "gaussian_grid": ((-2.5, 2.5), (-2.5, 2.5), 0.0125),
}


def gen(seed: int, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def midpoint_grid(name: str, standardize: bool) -> tuple[torch.Tensor, float]:
    """Midpoints (N, 2) of a rectangular grid covering the toy, and the area of one cell.

    In standardized space the grid is the raw one with each axis mapped by the toy's
    (affine, per-axis) standardizer: still a rectangular grid, with the cell sides read off
    the mapped grid lines.
    """
    (a1, b1), (a2, b2), h = RAW_BOX[name]
    lines = [
        torch.arange(round((b - a) / h), dtype=torch.float64) * h + a + h / 2
        for a, b in ((a1, b1), (a2, b2))
    ]
    if standardize:
        s = toy(name).standardizer
        lines = [(line - s.mean[i]) / s.std[i] for i, line in enumerate(lines)]
    area = float((lines[0][1] - lines[0][0]) * (lines[1][1] - lines[1][0]))
    points = torch.cartesian_prod(*lines)  # (N1 * N2, 2)
    return points, area


# --------------------------------------------------------------------------- sampling


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("name", sorted(TOYS))
def test_sample_shape_dtype_device(name, dtype, device):
    x = toy(name).sample(7, generator=gen(0, device), device=device, dtype=dtype)
    assert x.shape == (7, 2)
    assert x.dtype == dtype
    assert x.device.type == device
    assert torch.isfinite(x).all()


@pytest.mark.parametrize("name", sorted(TOYS))
def test_sample_is_deterministic_given_generator_and_ignores_global_rng(name):
    dist = toy(name)
    a = dist.sample(100, generator=gen(3))
    torch.manual_seed(12345)  # a different global state must not matter
    state = torch.get_rng_state()
    b = dist.sample(100, generator=gen(3))
    assert torch.equal(torch.get_rng_state(), state)  # and it is left untouched
    assert torch.equal(a, b)
    assert not torch.equal(a, dist.sample(100, generator=gen(4)))


def test_sample_without_generator_uses_global_rng():
    torch.manual_seed(7)
    a = two_moons(50)
    torch.manual_seed(7)
    b = two_moons(50)
    assert torch.equal(a, b)
    assert not torch.equal(a, two_moons(50))


def test_two_moons_function_is_the_class_sampler():
    a = two_moons(64, noise=0.1, standardize=False, generator=gen(1), dtype=torch.float64)
    b = TwoMoons(0.1, standardize=False).sample(64, generator=gen(1), dtype=torch.float64)
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", sorted(TOYS))
def test_standardized_samples_have_zero_mean_unit_std(name):
    n = 2**16
    x = toy(name).sample(n, generator=gen(99), dtype=torch.float64)
    # the reference sample (2^17 points) and this one both fluctuate: ~1/sqrt(n) each
    zeros, ones = torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64)
    torch.testing.assert_close(x.mean(0), zeros, atol=0.02, rtol=0)
    torch.testing.assert_close(x.std(0), ones, atol=0.02, rtol=0)


@pytest.mark.parametrize("name", sorted(TOYS))
def test_standardization_is_one_fixed_known_map(name):
    raw = toy(name, standardize=False)
    dist = toy(name)
    assert dist.standardizer is toy(name).standardizer is raw.standardizer  # cached, shared
    for seed in (0, 1):  # every fresh batch goes through the same map
        z = dist.sample(500, generator=gen(seed), dtype=torch.float64)
        x = raw.sample(500, generator=gen(seed), dtype=torch.float64)
        torch.testing.assert_close(z, dist.standardizer.transform(x))


# raw mean and std of each toy, derived by hand (s ~ U(0, pi): E cos s = 0, E sin s = 2/pi,
# E cos^2 s = E sin^2 s = 1/2; the checkerboard's marginals are U(-2, 2); the banana's x2
# has variance b^2 Var(x1^2) + sigma^2 = 2 b^2 + sigma^2).
ANALYTIC_MOMENTS = {
    "two_moons": (
        (0.5, 0.25),
        (math.sqrt(3 / 4 + 0.05**2), math.sqrt(9 / 16 - 1 / math.pi + 0.05**2)),
    ),
    "eight_gaussians": ((0.0, 0.0), (math.sqrt(2.0 + 0.01),) * 2),
    "checkerboard": ((0.0, 0.0), (math.sqrt(4 / 3),) * 2),
    "banana": ((0.0, 0.0), (1.0, math.sqrt(2.0 + 0.25))),
    # the 5 grid lines -2..2 have variance (4 + 1 + 0 + 1 + 4) / 5 = 2, plus std^2
    "gaussian_grid": ((0.0, 0.0), (math.sqrt(2.0 + 0.05**2),) * 2),
}


@pytest.mark.parametrize("name", sorted(ANALYTIC_MOMENTS))
def test_reference_standardizer_matches_analytic_moments(name):
    mean, std = ANALYTIC_MOMENTS[name]
    s = toy(name).standardizer
    assert s.mean.dtype == torch.float64 and s.mean.shape == (2,)
    # 2^17 reference points: standard errors ~ std / 362 ~ 0.004 at most
    mean, std = torch.tensor(mean, dtype=torch.float64), torch.tensor(std, dtype=torch.float64)
    torch.testing.assert_close(s.mean, mean, atol=0.02, rtol=0)
    torch.testing.assert_close(s.std, std, atol=0, rtol=0.01)


@pytest.mark.parametrize("name", sorted(LABELLED_TOYS))
def test_component_labels_are_balanced(name):
    k, n = LABELLED_TOYS[name], 40_000
    x, labels = toy(name).sample_with_labels(n, generator=gen(5))
    assert labels.dtype == torch.long and labels.shape == (n,)
    counts = torch.bincount(labels, minlength=k)
    assert counts.numel() == k
    p = 1 / k
    sd = math.sqrt(n * p * (1 - p))
    assert (counts - n * p).abs().max() < 5 * sd, counts


# --------------------------------------------------------------------------- Standardizer


def test_standardizer_round_trip_and_moments():
    x = torch.randn(1000, 3, dtype=torch.float64) * torch.tensor([0.1, 2.0, 30.0]) + 5
    s = Standardizer.fit(x)
    z = s.transform(x)
    torch.testing.assert_close(z.mean(0), torch.zeros_like(z[0]), atol=1e-12, rtol=0)
    torch.testing.assert_close(z.std(0, unbiased=False), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(s.inverse(z), x)
    torch.testing.assert_close(s.transform(s.inverse(x)), x)


def test_standardizer_log_det_matches_autograd_jacobian():
    scales = torch.tensor([0.5, 1.0, 4.0], dtype=torch.float64)
    s = Standardizer.fit(torch.randn(100, 3, dtype=torch.float64) * scales)
    x0 = torch.randn(3, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(s.transform, x0)  # (3, 3)
    sign, logabsdet = torch.linalg.slogdet(jac)
    assert sign > 0
    torch.testing.assert_close(s.log_abs_det_jacobian, logabsdet)


def test_standardizer_follows_input_dtype_and_device():
    s = Standardizer.fit(torch.randn(50, 2, dtype=torch.float64))
    for dtype in (torch.float32, torch.float64):
        for device in DEVICES:
            x = torch.randn(4, 2, dtype=dtype, device=device)
            z = s.transform(x)
            assert z.dtype == dtype and z.device.type == device
            assert s.inverse(z).dtype == dtype
    z = s.transform(torch.randn(5, 6, 2))  # any leading batch shape
    assert z.shape == (5, 6, 2)


# --------------------------------------------------------------------------- two moons


def _arc_positions(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Recover s in [0, pi] from noise-free two-moons points with labels y (0 upper, 1 lower)."""
    upper = torch.atan2(x[:, 1], x[:, 0])
    lower = torch.atan2(0.5 - x[:, 1], 1 - x[:, 0])
    return torch.where(y == 1, lower, upper)


def _spacing_cv(s: np.ndarray) -> float:
    gaps = np.diff(np.sort(s))
    return float(gaps.std() / gaps.mean())


def test_two_moons_arc_positions_are_iid_uniform():
    n = 6000
    x, y = TwoMoons(noise=1e-12, standardize=False).sample_with_labels(
        n, generator=gen(11), dtype=torch.float64
    )
    s = _arc_positions(x, y)
    assert s.min() >= -1e-9 and s.max() <= math.pi + 1e-9  # the points lie on the two arcs
    for moon in (0, 1):
        u = (s[y == moon] / math.pi).numpy()
        assert stats.kstest(u, "uniform").pvalue > 0.01
        # iid uniform: the normalized spacings are ~exponential, coefficient of variation ~1
        assert 0.85 < _spacing_cv(u) < 1.15
    # contrast: sklearn's make_moons places the points evenly, spacings all equal
    xs, ys = make_moons(n_samples=n, noise=0.0, shuffle=False)
    s_sk = _arc_positions(torch.as_tensor(xs), torch.as_tensor(ys)).numpy()
    for moon in (0, 1):
        assert _spacing_cv(s_sk[ys == moon]) < 1e-6


def test_two_moons_log_prob_matches_brute_force_kernel_average():
    noise, m = 0.05, 200_000
    dist = TwoMoons(noise=noise, standardize=False)
    # iid points of the noise-free arcs, then p(x) ~ mean of N(x; arc point, noise^2 I)
    arcs = TwoMoons(noise=1e-12, standardize=False)
    arcs = arcs.sample(m, generator=gen(2), dtype=torch.float64)
    queries = torch.tensor(
        [[0.0, 1.03], [1.0, -0.47], [-0.98, 0.05], [0.02, 0.48], [2.0, 0.52], [0.7, 0.68]],
        dtype=torch.float64,
    )
    d2 = ((queries[:, None, :] - arcs[None]) ** 2).sum(-1)  # (Q, m)
    kernel = torch.exp(-0.5 * d2 / noise**2) / (2 * math.pi * noise**2)
    estimate, se = kernel.mean(1), kernel.std(1) / math.sqrt(m)
    exact = dist.log_prob(queries).exp()
    assert (se < 0.05 * estimate).all()  # the queries are near the arcs: estimate is sharp
    assert ((exact - estimate).abs() < 5 * se).all(), (exact, estimate, se)


# --------------------------------------------------------------------------- densities


@pytest.mark.parametrize("standardize", [False, True])
@pytest.mark.parametrize("name", DENSITY_TOYS)
def test_log_prob_integrates_to_one(name, standardize):
    points, area = midpoint_grid(name, standardize)
    mass = toy(name, standardize=standardize).log_prob(points).exp().sum() * area
    assert abs(float(mass) - 1) < 1e-5  # the grids resolve every feature: ~1e-7 or better


@pytest.mark.parametrize("name", DENSITY_TOYS)
def test_mean_log_prob_on_samples_matches_grid_integral(name):
    # two independent estimates of E_p[log p]: Monte Carlo over fresh samples, and the
    # grid integral of p log p. They agree only if `sample` and `log_prob` describe the
    # same distribution.
    dist = toy(name)
    lp_samples = dist.log_prob(dist.sample(20_000, generator=gen(21), dtype=torch.float64))
    mc, se = lp_samples.mean(), lp_samples.std() / math.sqrt(lp_samples.numel())
    points, area = midpoint_grid(name, standardize=True)
    lp = dist.log_prob(points)
    p = lp.exp()
    grid = (torch.where(p > 0, p * lp, torch.zeros_like(p))).sum() * area
    assert abs(float(mc - grid)) < 5 * float(se) + 2e-3, (mc, grid, se)


@pytest.mark.parametrize("standardize", [False, True])
def test_eight_gaussians_matches_mixture_same_family(standardize):
    dist = EightGaussians(radius=2.0, std=0.1, standardize=standardize)
    angles = torch.arange(8, dtype=torch.float64) * math.pi / 4
    means = 2.0 * torch.stack([angles.cos(), angles.sin()], -1)  # (8, 2)
    scale = torch.full((8, 2), 0.1, dtype=torch.float64)
    if standardize:  # the image of the mixture under the per-axis affine map
        s = dist.standardizer
        means, scale = (means - s.mean) / s.std, scale / s.std
    w, mu, var = dist.mixture()
    torch.testing.assert_close(w, torch.full((8,), 1 / 8, dtype=torch.float64))
    torch.testing.assert_close(mu, means)
    torch.testing.assert_close(var, scale**2)
    reference = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(torch.ones(8, dtype=torch.float64)),
        torch.distributions.Independent(torch.distributions.Normal(means, scale), 1),
    )
    x = torch.cat(
        [
            dist.sample(200, generator=gen(4), dtype=torch.float64),
            3 * torch.randn(50, 2, dtype=torch.float64),  # and points off the components
        ]
    )
    torch.testing.assert_close(dist.log_prob(x), reference.log_prob(x))


@pytest.mark.parametrize("standardize", [False, True])
def test_gaussian_grid_log_prob_and_mixture_match_mixture_same_family(standardize):
    """The grid's log_prob and its mixture() are the 25-component mixture, raw or
    standardized; the labels name the component that drew each point."""
    dist = GaussianGrid(standardize=standardize)
    line = torch.arange(-2.0, 3.0, dtype=torch.float64)
    means = torch.cartesian_prod(line, line)  # (25, 2), label i * 5 + j
    scale = torch.full((25, 2), 0.05, dtype=torch.float64)
    if standardize:
        s = dist.standardizer
        means, scale = (means - s.mean) / s.std, scale / s.std
    reference = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(torch.ones(25, dtype=torch.float64)),
        torch.distributions.Independent(torch.distributions.Normal(means, scale), 1),
    )
    x, labels = dist.sample_with_labels(500, generator=gen(4), dtype=torch.float64)
    x = torch.cat([x, 2 * torch.randn(50, 2, dtype=torch.float64)])
    torch.testing.assert_close(dist.log_prob(x), reference.log_prob(x))
    w, mu, var = dist.mixture()
    torch.testing.assert_close(w, torch.full((25,), 1 / 25, dtype=torch.float64))
    torch.testing.assert_close(mu, means)
    torch.testing.assert_close(var, scale**2)
    nearest = torch.cdist(x[:500], mu).argmin(-1)
    assert torch.equal(nearest, labels)  # the modes are 20 std apart: no point is ambiguous


def test_banana_entropy_is_that_of_its_gaussian_factors():
    # x2 | x1 is a shifted Gaussian: the shift does not change the entropy, so
    # E[-log p] = H(N(0, 1)) + H(N(0, sigma^2)) = log(2 pi e) + log(sigma), whatever b.
    sigma = 0.3
    for b in (0.0, 2.0):
        dist = Banana(curvature=b, std=sigma, standardize=False)
        lp = dist.log_prob(dist.sample(50_000, generator=gen(6), dtype=torch.float64))
        expected = -(math.log(2 * math.pi * math.e) + math.log(sigma))
        assert abs(float(lp.mean()) - expected) < 5 * float(lp.std()) / math.sqrt(lp.numel())


def test_checkerboard_is_uniform_on_dark_squares():
    dist = Checkerboard(standardize=False)
    x = dist.sample(16_000, generator=gen(9), dtype=torch.float64)
    expected = torch.full((16_000,), -math.log(8), dtype=torch.float64)
    torch.testing.assert_close(dist.log_prob(x), expected)
    cells = torch.floor(x + 2).long()  # (n, 2) column, row in 0..3
    counts = torch.bincount(cells[:, 0] * 4 + cells[:, 1], minlength=16).reshape(4, 4)
    dark = (torch.arange(4)[:, None] + torch.arange(4)[None, :]) % 2 == 0
    assert (counts[~dark] == 0).all()
    assert ((counts[dark] - 2000).abs() < 5 * math.sqrt(2000 * 7 / 8)).all()
    light_or_outside = torch.tensor(
        [[0.5, -0.5], [-1.5, -0.5], [2.5, 0.5], [0.0, -3.0]], dtype=torch.float64
    )
    assert torch.isneginf(dist.log_prob(light_or_outside)).all()


def test_spirals_noise_free_points_lie_on_the_spiral():
    dist = Spirals(turns=1.5, noise=0.0, standardize=False)
    x, arm = dist.sample_with_labels(2000, generator=gen(3), dtype=torch.float64)
    theta = math.pi * x.norm(dim=-1)  # r = theta / pi
    assert theta.max() <= 2 * math.pi * 1.5 + 1e-9
    angle = torch.atan2(x[:, 1], x[:, 0]) + math.pi * arm.double()  # arm 1: arm 0 turned by pi
    wrapped = torch.remainder(angle - theta + math.pi, 2 * math.pi) - math.pi
    torch.testing.assert_close(wrapped, torch.zeros_like(wrapped), atol=1e-9, rtol=0)


def test_spirals_log_prob_is_not_implemented():
    with pytest.raises(NotImplementedError, match="no closed form"):
        Spirals().log_prob(torch.zeros(3, 2))


@pytest.mark.parametrize("name", DENSITY_TOYS)
def test_log_prob_keeps_input_dtype_device_and_batch_shape(name):
    dist = toy(name)
    for device in DEVICES:
        for dtype in (torch.float32, torch.float64):
            x = dist.sample(12, generator=gen(0, device), dtype=dtype).reshape(3, 4, 2)
            lp = dist.log_prob(x)
            assert lp.shape == (3, 4) and lp.dtype == dtype and lp.device.type == device
            assert torch.isfinite(lp).all()


# --------------------------------------------------------------------------- registry, errors


def test_toy_registry_builds_each_class():
    for name, cls in TOYS.items():
        dist = toy(name, standardize=False)
        assert type(dist) is cls and dist.standardize is False
    assert toy("two_moons", noise=0.1) == TwoMoons(noise=0.1)


STANDARDIZER = Standardizer(torch.zeros(2), torch.ones(2))
BAD_ARGUMENTS = [
    (lambda: TwoMoons(noise=0.0), ValueError, "noise must be > 0"),
    (lambda: TwoMoons(noise=-0.1), ValueError, "noise must be > 0"),
    (lambda: TwoMoons(noise=float("nan")), ValueError, "noise must be finite"),
    (lambda: TwoMoons(noise="0.1"), TypeError, "noise must be a real number"),
    (lambda: TwoMoons(standardize=1), TypeError, "standardize must be a bool"),
    (lambda: TwoMoons(noise=1e-5).log_prob(torch.zeros(2, 2)), ValueError, "noise >= 0.0001"),
    (lambda: EightGaussians(radius=0.0), ValueError, "radius must be > 0"),
    (lambda: EightGaussians(std=-1.0), ValueError, "std must be > 0"),
    (lambda: Checkerboard(squares=1), ValueError, "squares must be an int >= 2"),
    (lambda: Checkerboard(squares=2.5), TypeError, "squares must be an int >= 2"),
    (lambda: Checkerboard(half_width=0.0), ValueError, "half_width must be > 0"),
    (lambda: Banana(std=0.0), ValueError, "std must be > 0"),
    (lambda: GaussianGrid(side=1), ValueError, "side must be an int >= 2"),
    (lambda: GaussianGrid(side=2.0), TypeError, "side must be an int >= 2"),
    (lambda: GaussianGrid(spacing=0.0), ValueError, "spacing must be > 0"),
    (lambda: GaussianGrid(std=-0.1), ValueError, "std must be > 0"),
    (lambda: Banana(curvature=math.inf), ValueError, "curvature must be finite"),
    (lambda: Spirals(turns=0.0), ValueError, "turns must be > 0"),
    (lambda: Spirals(noise=-1.0), ValueError, r"noise must be >= 0"),
    (lambda: TwoMoons().sample(0), ValueError, "n must be a positive int"),
    (lambda: TwoMoons().sample(-3), ValueError, "n must be a positive int"),
    (lambda: TwoMoons().sample(2.0), TypeError, "n must be a positive int"),
    (lambda: TwoMoons().sample(True), TypeError, "n must be a positive int"),
    (lambda: two_moons(4, dtype=torch.int64), TypeError, "floating-point torch.dtype"),
    (lambda: TwoMoons().sample(4, generator=0), TypeError, "torch.Generator"),
    (lambda: TwoMoons().log_prob(torch.zeros(5, 3)), ValueError, r"shape \(\*B, 2\)"),
    (lambda: TwoMoons().log_prob(np.zeros((5, 2))), TypeError, "torch.Tensor"),
    (lambda: Banana().log_prob(torch.zeros(5, 2, dtype=torch.long)), TypeError, "floating-point"),
    (lambda: toy("moons"), ValueError, r"expected one of \['banana', 'checkerboard'"),
    (lambda: Standardizer.fit(torch.zeros(1, 2)), ValueError, "n >= 2"),
    (lambda: Standardizer.fit(torch.tensor([[1.0, 2.0], [3.0, 2.0]])), ValueError, "zero std"),
    (lambda: Standardizer.fit(torch.zeros(4)), ValueError, r"shape \(n, D\)"),
    (lambda: Standardizer(torch.zeros(2), torch.zeros(2)), ValueError, "std must be finite and"),
    (lambda: Standardizer(torch.zeros(2), torch.ones(3)), ValueError, "same shape"),
    (lambda: STANDARDIZER.transform(torch.zeros(4, 3)), ValueError, r"shape \(\*B, 2\)"),
    (lambda: digits(dtype=torch.int32), TypeError, "floating-point torch.dtype"),
    (lambda: digits_split(0.0), ValueError, r"test_fraction must be in \(0, 1\)"),
    (lambda: digits_split(1.0), ValueError, r"test_fraction must be in \(0, 1\)"),
    (lambda: digits_split(0.99999), ValueError, "empty train or test set"),
    (lambda: digits_split(seed=1.5), TypeError, "seed must be an int"),
]


@pytest.mark.parametrize("call, error, message", BAD_ARGUMENTS)
def test_bad_arguments_raise_helpful_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()


# --------------------------------------------------------------------------- digits


def test_digits_shape_range_and_levels():
    x, y = digits(return_labels=True)
    assert x.shape == (1797, 1, 8, 8) and x.dtype == torch.float32
    assert y.shape == (1797,) and y.dtype == torch.long
    assert set(y.tolist()) == set(range(10))
    assert x.min() == -1 and x.max() == 1
    levels = torch.unique(x)
    assert levels.numel() == DIGIT_LEVELS
    torch.testing.assert_close(levels, torch.linspace(-1, 1, DIGIT_LEVELS))  # a step of 1/8
    assert digits(dtype=torch.float64).dtype == torch.float64
    x[0] = 0.0  # the caller owns a fresh copy
    assert digits()[0].min() == -1


def test_digits_split_sizes_partition_and_determinism():
    (x_tr, y_tr), (x_te, y_te) = digits_split(0.2, seed=0, return_labels=True)
    assert (len(x_tr), len(x_te)) == (1437, 360) and (len(y_tr), len(y_te)) == (1437, 360)

    def rows(x, y):
        return Counter(tuple(xi.flatten().tolist()) + (int(yi),) for xi, yi in zip(x, y))

    x_all, y_all = digits(return_labels=True)
    assert rows(x_tr, y_tr) + rows(x_te, y_te) == rows(x_all, y_all)  # a partition
    state = torch.get_rng_state()
    train, test = digits_split(0.2, seed=0)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(train, x_tr) and torch.equal(test, x_te)
    assert not torch.equal(digits_split(0.2, seed=1)[1], test)
    assert len(digits_split(0.5)[1]) == 899


def test_nearest_moon_recovers_the_sampled_labels():
    """``TwoMoons.nearest_moon`` returns the moon each point was drawn from (noise 0.05 is
    far narrower than the gap between the arcs), for any batch shape."""
    moons = TwoMoons()
    x, y = moons.sample_with_labels(4000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(moons.nearest_moon(x), y)
    assert moons.nearest_moon(x.reshape(40, 100, 2)).shape == (40, 100)
    raw = TwoMoons(standardize=False)
    xr, yr = raw.sample_with_labels(1000, generator=torch.Generator().manual_seed(1))
    assert torch.equal(raw.nearest_moon(xr), yr)


def test_two_moons_log_prob_gradient_matches_finite_differences():
    """The closed-form gradient of the quadrature log-density of ``TwoMoons.log_prob``
    (of the Gaussian mixture over its nodes: :math:`-(x - \\sum_k \\pi_k c_k)/\\sigma^2`) agrees
    with finite differences in float64, near the arcs and far from them; the values do not depend on
    whether a gradient is asked for; a second derivative raises instead of being wrong."""
    moons = TwoMoons()
    g = torch.Generator().manual_seed(3)
    x = torch.cat([moons.sample(12, generator=g, dtype=torch.float64),
                   3 * torch.randn(8, 2, generator=g, dtype=torch.float64)])
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(moons.log_prob, (x,), eps=1e-6, atol=1e-5, rtol=1e-4)
    with torch.no_grad():
        plain = moons.log_prob(x)
    assert torch.equal(moons.log_prob(x).detach(), plain)
    (grad,) = torch.autograd.grad(moons.log_prob(x).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError):
        torch.autograd.grad(grad.sum(), x)


def test_class_conditional_is_one_class_of_the_toy():
    """ClassConditional draws the points of one label: its mean and variances match those
    of the toy's own labelled samples of that class (within 4 standard errors), and it is
    standardized by the whole toy's standardizer."""
    from gmbook.data import ClassConditional, EightGaussians, TwoMoons

    for toy, label in ((TwoMoons(), 0), (TwoMoons(), 1), (EightGaussians(), 3)):
        cls = ClassConditional(toy, label)
        assert cls.standardizer is toy.standardizer
        x = cls.sample(20000, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        xs, ys = toy.sample_with_labels(40000, generator=torch.Generator().manual_seed(2),
                                        dtype=torch.float64)
        ref = xs[ys == label]
        se = (ref.var(0) / len(ref) + x.var(0) / len(x)).sqrt()
        assert bool(((x.mean(0) - ref.mean(0)).abs() < 4 * se).all())
        v, v_ref = x.var(0), ref.var(0)
        se_v = v_ref * math.sqrt(2 / len(ref) + 2 / len(x))   # Gaussian-like spread
        assert bool(((v - v_ref).abs() < 4 * se_v).all())
    with pytest.raises(ValueError):
        ClassConditional(TwoMoons(), 2)
    with pytest.raises(TypeError):
        ClassConditional("moons", 0)
