"""Tests of gmbook.exercises: the checkers of the coding exercises.

Every checker must pass its own reference, fail each plausible wrong answer with a report
that names the failing case and gives the matching hint, report exceptions, wrong types,
tuple lengths and shapes without crashing, and draw reproducible cases from a local
generator. The references themselves are checked against closed forms and torch's own
implementations (not against a retyped formula).
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import Tensor
from torch.distributions import Normal, kl_divergence

from gmbook import exercises
from gmbook.exercises import _framework
from gmbook.exercises import (
    Case,
    Checker,
    CheckResult,
    Hint,
    available,
    check,
    get_checker,
    register,
)

CHAPTER_1 = ["gaussian_mle", "kl_gaussians", "linear_path", "standardize"]
EVALUATION = ["bits_per_dim", "frechet_gaussians", "mmd2_unbiased"]
NAMES = CHAPTER_1 + EVALUATION


def _bt(t: Tensor, x: Tensor) -> Tensor:
    return t.view(-1, *[1] * (x.ndim - 1))  # (B,) -> (B, 1, ..., 1)


def _failing_case(result: CheckResult) -> Case:
    """The case named in the header of a FAILED report."""
    match = re.match(rf"FAILED {result.name} on case (\d+)/(\d+) \(", result.message)
    assert match, result.message
    index, total = int(match.group(1)), int(match.group(2))
    cases = get_checker(result.name).cases()
    assert total == len(cases) == result.n_cases
    return cases[index - 1]


def _assert_failed(result: CheckResult, *fragments: str) -> None:
    assert not result.passed and not result, result.message
    assert result.failures, result.message
    case = _failing_case(result)
    header = " ".join(result.message.splitlines()[:2])
    assert case.description.split(",")[0] in header, result.message
    flat = " ".join(result.message.split())  # undo the wrapping of long lines
    for fragment in fragments:
        assert " ".join(fragment.split()) in flat, f"{fragment!r} not in:\n{result.message}"
    assert result.message.isascii()
    assert all(len(line) <= 80 for line in result.message.splitlines()), result.message


# --------------------------------------------------------------------------------------
# The references are right (closed forms, torch's implementations)
# --------------------------------------------------------------------------------------


def test_gaussian_mle_reference_matches_torch_cov_and_maximises_likelihood() -> None:
    x = torch.randn(50, 3, dtype=torch.float64) @ torch.randn(3, 3, dtype=torch.float64)
    mean, cov = exercises.problem._gaussian_mle(x)
    torch.testing.assert_close(cov, torch.cov(x.T, correction=0))
    torch.testing.assert_close(mean, x.mean(0))
    # The MLE is a stationary point of the log-likelihood in (mean, cov).
    m, c = mean.clone().requires_grad_(), cov.clone().requires_grad_()
    loglik = torch.distributions.MultivariateNormal(m, covariance_matrix=c).log_prob(x).sum()
    grad_m, grad_c = torch.autograd.grad(loglik, (m, c))
    assert grad_m.abs().max() < 1e-8 and grad_c.abs().max() < 1e-8


def test_linear_path_reference_velocity_is_time_derivative() -> None:
    x0, x1 = torch.randn(2, 4, 3, 2, dtype=torch.float64)
    t = torch.rand(4, dtype=torch.float64)
    x_t = lambda s: exercises.problem._linear_path(x0, x1, s)[0]  # noqa: E731
    dxdt = torch.autograd.functional.jvp(x_t, t, torch.ones_like(t))[1]
    torch.testing.assert_close(dxdt, exercises.problem._linear_path(x0, x1, t)[1])
    torch.testing.assert_close(x_t(torch.zeros(4, dtype=torch.float64)), x0)
    torch.testing.assert_close(x_t(torch.ones(4, dtype=torch.float64)), x1)


def test_kl_reference_matches_torch_distributions() -> None:
    mu_p, mu_q = torch.randn(2, 5, 3, dtype=torch.float64)
    var_p, var_q = torch.rand(2, 5, 3, dtype=torch.float64) + 0.1
    want = kl_divergence(Normal(mu_p, var_p.sqrt()), Normal(mu_q, var_q.sqrt())).sum(-1)
    torch.testing.assert_close(exercises.problem._kl_gaussians(mu_p, var_p, mu_q, var_q), want)


def test_standardize_reference_has_zero_mean_unit_population_std() -> None:
    x = 3 + 5 * torch.randn(40, 3, dtype=torch.float64)
    z, mean, std = exercises.problem._standardize(x)
    torch.testing.assert_close(z.mean(0), torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close((z**2).mean(0), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(z * std + mean, x)


def test_mmd2_reference_matches_a_double_loop() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 2, generator=g, dtype=torch.float64)
    y = 1 + torch.randn(4, 2, generator=g, dtype=torch.float64)
    h = 0.7

    def k(a: Tensor, b: Tensor) -> float:
        return math.exp(-sum((float(u) - float(v)) ** 2 for u, v in zip(a, b)) / (2 * h * h))

    n, m = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    got = exercises.evaluation._mmd2_unbiased(x, y, h)
    assert got.shape == () and got.dtype == torch.float64
    assert got.item() == pytest.approx(xx + yy - 2 * xy, rel=1e-12)


def test_mmd2_reference_is_unbiased_and_negative_on_identical_sets() -> None:
    g = torch.Generator().manual_seed(2)
    # y = x: with S the sum of k(x_i, x_j) over i != j, the estimate is
    # 2 S / (n^2 (n - 1)) - 2 / n <= 0 (zero only if all the points coincide)
    x = torch.randn(6, 2, generator=g, dtype=torch.float64)
    kxx = torch.exp(-torch.cdist(x, x) ** 2 / (2 * 1.5**2))
    s, n = (kxx.sum() - kxx.trace()).item(), 6
    same = exercises.evaluation._mmd2_unbiased(x, x.clone(), 1.5).item()
    assert same == pytest.approx(2 * s / (n * n * (n - 1)) - 2 / n, rel=1e-12) and same < 0
    # P = Q: the estimate averages to 0 (the biased one stays positive)
    draws = torch.stack(
        [
            exercises.evaluation._mmd2_unbiased(
                torch.randn(4, 2, generator=g, dtype=torch.float64),
                torch.randn(5, 2, generator=g, dtype=torch.float64),
                1.0,
            )
            for _ in range(400)
        ]
    )
    assert abs(draws.mean().item()) < 4 * draws.std().item() / 20


def test_bits_per_dim_reference_uniform_over_bins_gives_log2_levels() -> None:
    # A uniform density on [0, K w]^D with bins of width w puts probability 1/K^D on
    # every bin: log2(K) bits per dim. Its nll is D ln(K w) nats.
    for levels, width, dim in ((256, 1 / 256, 784), (16, 2 / 16, 3), (2, 0.5, 1), (255, 1.0, 2)):
        nll = dim * math.log(levels * width)
        bpd = exercises.evaluation._bits_per_dim(nll, dim, width)
        assert isinstance(bpd, float)
        assert bpd == pytest.approx(math.log2(levels), rel=1e-12)
    # continuous: a standard normal in D dims, bits = -log2 density / D
    z = torch.randn(10, dtype=torch.float64)
    nll = -Normal(0.0, 1.0).log_prob(z).sum().item()
    want = -sum(math.log2(math.exp(-v * v / 2) / math.sqrt(2 * math.pi)) for v in z.tolist()) / 10
    assert exercises.evaluation._bits_per_dim(nll, 10, None) == pytest.approx(want, rel=1e-12)
    assert exercises.evaluation._bits_per_dim(nll, 10, 1.0) == exercises.evaluation._bits_per_dim(nll, 10, None)


def _spd(d: int, g: torch.Generator) -> Tensor:
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    return a @ a.T + 0.1 * torch.eye(d, dtype=torch.float64)


def test_frechet_reference_matches_1d_closed_form_and_scipy_sqrtm() -> None:
    g = torch.Generator().manual_seed(3)
    m1, m2, v1, v2 = 0.3, -1.2, 2.5, 0.4
    got = exercises.evaluation._frechet_gaussians(
        torch.tensor([m1], dtype=torch.float64), torch.tensor([[v1]], dtype=torch.float64),
        torch.tensor([m2], dtype=torch.float64), torch.tensor([[v2]], dtype=torch.float64),
    )
    assert got.shape == ()
    assert got.item() == pytest.approx((m1 - m2) ** 2 + (v1**0.5 - v2**0.5) ** 2, rel=1e-12)
    for d in (2, 3, 5):
        mu1, mu2 = torch.randn(2, d, generator=g, dtype=torch.float64)
        c1, c2 = _spd(d, g), _spd(d, g)
        r1 = scipy.linalg.sqrtm(c1.numpy())
        cross = np.trace(scipy.linalg.sqrtm(r1 @ c2.numpy() @ r1)).real
        want = ((mu1 - mu2) ** 2).sum().item() + np.trace(c1.numpy() + c2.numpy()) - 2 * cross
        got = exercises.evaluation._frechet_gaussians(mu1, c1, mu2, c2)
        assert got.item() == pytest.approx(want, rel=1e-10)
        assert got.item() == pytest.approx(exercises.evaluation._frechet_gaussians(mu2, c2, mu1, c1).item())
        assert exercises.evaluation._frechet_gaussians(mu1, c1, mu1, c1).abs().item() < 1e-10


# --------------------------------------------------------------------------------------
# Every checker: reference passes, cases reproducible, edge cases present
# --------------------------------------------------------------------------------------


def test_available_lists_the_chapter_1_and_evaluation_checkers() -> None:
    assert set(CHAPTER_1) <= set(available())
    assert set(EVALUATION) <= set(available())
    assert available() == sorted(available())


@pytest.mark.parametrize("name", NAMES)
def test_reference_passes(name: str) -> None:
    checker = get_checker(name)
    result = check(name, checker.reference)
    assert result.passed and bool(result)
    assert result.failures == []
    n_edge = sum(c.edge for c in checker.cases())
    assert result.n_cases == len(checker.cases())
    assert result.message == (
        f"PASSED {name}: {result.n_cases}/{result.n_cases} cases "
        f"({result.n_cases - n_edge} random, {n_edge} edge)."
    )


@pytest.mark.parametrize("name", available())
def test_cases_reproducible_with_edge_cases_and_global_rng_untouched(name: str) -> None:
    checker = get_checker(name)
    state = torch.get_rng_state()
    first, second = checker.cases(), checker.cases()
    check(name, checker.reference)
    assert torch.equal(torch.get_rng_state(), state)
    assert any(c.edge for c in first) and any(not c.edge for c in first)
    assert len(first) == len(second)
    for a, b in zip(first, second):
        assert a.description == b.description and a.edge == b.edge
        assert len(a.args) == len(b.args)
        for u, v in zip(a.args, b.args):
            assert torch.equal(u, v) if isinstance(u, Tensor) else u == v


# --------------------------------------------------------------------------------------
# Plausible wrong answers fail, name the case and give the hint
# --------------------------------------------------------------------------------------


def _mle_unbiased(x: Tensor) -> tuple[Tensor, Tensor]:
    return x.mean(0), torch.cov(x.T)


def _mle_uncentred(x: Tensor) -> tuple[Tensor, Tensor]:
    return x.mean(0), x.T @ x / x.shape[0]


def _mle_naive(x: Tensor) -> tuple[Tensor, Tensor]:
    m = x.mean(0)
    return m, x.T @ x / x.shape[0] - torch.outer(m, m)


def _mle_variances(x: Tensor) -> tuple[Tensor, Tensor]:
    return x.mean(0), x.var(0, unbiased=False)


def _mle_diagonal(x: Tensor) -> tuple[Tensor, Tensor]:
    return x.mean(0), torch.diag(x.var(0, unbiased=False))


def _mle_std(x: Tensor) -> tuple[Tensor, Tensor]:
    return x.mean(0), x.std(0, unbiased=False)


def _mle_n_by_n(x: Tensor) -> tuple[Tensor, Tensor]:
    xc = x - x.mean(0)
    return x.mean(0), xc @ xc.T / x.shape[0]


def _mle_wrong_axis(x: Tensor) -> tuple[Tensor, Tensor]:
    xc = x - x.mean(0)
    return x.mean(1), xc.T @ xc / x.shape[0]


def _mle_torch_cov(x: Tensor) -> tuple[Tensor, Tensor]:
    return x.mean(0), torch.cov(x.T, correction=0)  # 0-dim when d = 1


def _path_swapped(x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    t = _bt(t, x0)
    return (1 - t) * x1 + t * x0, x0 - x1


def _path_sign(x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    t = _bt(t, x0)
    return (1 - t) * x0 + t * x1, x0 - x1


def _path_no_broadcast(x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    return (1 - t) * x0 + t * x1, x1 - x0


def _path_one_none(x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    return (1 - t[:, None]) * x0 + t[:, None] * x1, x1 - x0


def _kl(mu_p: Tensor, var_p: Tensor, mu_q: Tensor, var_q: Tensor) -> Tensor:
    # KL(p || q) written with standard deviations, as a reader might.
    s_p, s_q = var_p.sqrt(), var_q.sqrt()
    return (torch.log(s_q / s_p) + (s_p**2 + (mu_p - mu_q) ** 2) / (2 * s_q**2) - 0.5).sum(-1)


def _kl_swapped(mu_p: Tensor, var_p: Tensor, mu_q: Tensor, var_q: Tensor) -> Tensor:
    return _kl(mu_q, var_q, mu_p, var_p)


def _kl_no_half(mu_p: Tensor, var_p: Tensor, mu_q: Tensor, var_q: Tensor) -> Tensor:
    return (torch.log(var_q / var_p) + (var_p + (mu_p - mu_q) ** 2) / var_q - 1).sum(-1)


def _kl_std_as_var(mu_p: Tensor, var_p: Tensor, mu_q: Tensor, var_q: Tensor) -> Tensor:
    s_p, s_q = var_p.sqrt(), var_q.sqrt()  # then used where variances belong
    return 0.5 * (torch.log(s_q / s_p) + (s_p + (mu_p - mu_q) ** 2) / s_q - 1).sum(-1)


def _kl_var_as_std(mu_p: Tensor, var_p: Tensor, mu_q: Tensor, var_q: Tensor) -> Tensor:
    # var_p, var_q taken for standard deviations
    terms = torch.log(var_q / var_p) + (var_p**2 + (mu_p - mu_q) ** 2) / (2 * var_q**2) - 0.5
    return terms.sum(-1)


def _kl_not_summed(mu_p: Tensor, var_p: Tensor, mu_q: Tensor, var_q: Tensor) -> Tensor:
    return 0.5 * (torch.log(var_q / var_p) + (var_p + (mu_p - mu_q) ** 2) / var_q - 1)


def _std_unbiased(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    mean, std = x.mean(0), x.std(0)
    return (x - mean) / std, mean, std


def _std_global(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    mean, std = x.mean(), x.std(unbiased=False)
    return (x - mean) / std, mean, std


def _std_global_expanded(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    mean, std = x.mean(), x.std()
    d = x.shape[1]
    return (x - mean) / std, mean.expand(d), std.expand(d)


def _std_wrong_axis(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    mean, std = x.mean(1, keepdim=True), x.std(1, unbiased=False, keepdim=True)
    return (x - mean) / std, mean[:, 0], std[:, 0]


def _gram(a: Tensor, b: Tensor, h: float) -> Tensor:
    return torch.exp(-torch.cdist(a, b) ** 2 / (2 * h**2))  # (n, m), as a reader might


def _off_diagonal_mean(k: Tensor) -> Tensor:
    n = k.shape[0]
    return (k.sum() - k.trace()) / (n * (n - 1))


def _mmd_biased(x: Tensor, y: Tensor, h: float) -> Tensor:
    return _gram(x, x, h).mean() + _gram(y, y, h).mean() - 2 * _gram(x, y, h).mean()


def _mmd_zero_diagonal_mean(x: Tensor, y: Tensor, h: float) -> Tensor:
    kxx, kyy = _gram(x, x, h).fill_diagonal_(0), _gram(y, y, h).fill_diagonal_(0)
    return kxx.mean() + kyy.mean() - 2 * _gram(x, y, h).mean()


def _mmd_with(kernel: Callable[[Tensor, Tensor], Tensor], x: Tensor, y: Tensor) -> Tensor:
    return (
        _off_diagonal_mean(kernel(x, x))
        + _off_diagonal_mean(kernel(y, y))
        - 2 * kernel(x, y).mean()
    )


def _mmd_h_as_variance(x: Tensor, y: Tensor, h: float) -> Tensor:
    return _mmd_with(lambda a, b: torch.exp(-torch.cdist(a, b) ** 2 / (2 * h)), x, y)


def _mmd_no_two(x: Tensor, y: Tensor, h: float) -> Tensor:
    return _mmd_with(lambda a, b: torch.exp(-torch.cdist(a, b) ** 2 / h**2), x, y)


def _mmd_unsquared(x: Tensor, y: Tensor, h: float) -> Tensor:
    return _mmd_with(lambda a, b: torch.exp(-torch.cdist(a, b) / (2 * h**2)), x, y)


def _mmd_cross_once(x: Tensor, y: Tensor, h: float) -> Tensor:
    return (
        _off_diagonal_mean(_gram(x, x, h))
        + _off_diagonal_mean(_gram(y, y, h))
        - _gram(x, y, h).mean()
    )


def _mmd_equal_sizes(x: Tensor, y: Tensor, h: float) -> Tensor:
    # Gretton's h-statistic for n == m; fails on n != m with a shape error
    kxy = _gram(x, y, h)
    return _off_diagonal_mean(_gram(x, x, h) + _gram(y, y, h) - kxy - kxy.T)


def _bpd_nats(nll: float, dim: int, width: float | None) -> float:
    return (nll - (dim * math.log(width) if width is not None else 0.0)) / dim


def _bpd_nats_tensor(nll: float, dim: int, width: float | None) -> Tensor:
    return torch.tensor(_bpd_nats(nll, dim, width))  # float32: compared at its precision


def _bpd_per_point(nll: float, dim: int, width: float | None) -> float:
    return (nll - (dim * math.log(width) if width is not None else 0.0)) / math.log(2)


def _bpd_sign(nll: float, dim: int, width: float | None) -> float:
    return (nll + (dim * math.log(width) if width is not None else 0.0)) / (dim * math.log(2))


def _bpd_log2_width(nll: float, dim: int, width: float | None) -> float:
    return (nll - (dim * math.log2(width) if width is not None else 0.0)) / (dim * math.log(2))


def _bpd_continuous_only(nll: float, dim: int, width: float | None) -> float:
    return nll / dim / math.log(2)


def _bpd_one_bin(nll: float, dim: int, width: float | None) -> float:
    return (nll - (math.log(width) if width is not None else 0.0)) / (dim * math.log(2))


def _bpd_none(nll: float, dim: int, width: float | None) -> float:
    return (nll - dim * math.log(width)) / (dim * math.log(2))  # type: ignore[arg-type]


def _bpd_torch_log(nll: float, dim: int, width: float | None) -> Tensor:
    correction = dim * torch.log(width) if width is not None else 0.0  # type: ignore[arg-type]
    return (nll - correction) / (dim * math.log(2))


def _fd(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor, trace_sqrt: Any) -> Tensor:
    return ((mu1 - mu2) ** 2).sum() + cov1.trace() + cov2.trace() - 2 * trace_sqrt


def _sqrtm(a: Tensor) -> Tensor:
    return torch.from_numpy(scipy.linalg.sqrtm(a.numpy()).real)


def _fd_no_sqrt(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> Tensor:
    return _fd(mu1, cov1, mu2, cov2, (cov1 @ cov2).trace())


def _fd_eigh_product(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> Tensor:
    evals, evecs = torch.linalg.eigh(cov1 @ cov2)
    root = evecs @ torch.diag(evals.sqrt()) @ evecs.T
    return _fd(mu1, cov1, mu2, cov2, root.trace())


def _fd_elementwise(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> Tensor:
    return _fd(mu1, cov1, mu2, cov2, torch.sqrt(cov1 @ cov2).trace())


def _fd_split_roots(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> Tensor:
    return _fd(mu1, cov1, mu2, cov2, (_sqrtm(cov1) @ _sqrtm(cov2)).trace())


def _fd_no_mean(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> Tensor:
    return (cov1 + cov2 - 2 * _sqrtm(cov1 @ cov2)).trace()


def _fd_mean_norm(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> Tensor:
    return torch.linalg.vector_norm(mu1 - mu2) + _fd_no_mean(mu1, cov1, mu2, cov2)


def _fd_w2(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> Tensor:
    return _fd(mu1, cov1, mu2, cov2, _sqrtm(cov1 @ cov2).trace()).sqrt()


def _fd_complex(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> Tensor:
    return _fd(mu1, cov1, mu2, cov2, torch.linalg.eigvals(cov1 @ cov2).sqrt().sum())


WRONG: list[tuple[str, Callable[..., Any], str, str]] = [
    # (checker, wrong answer, fragment of the failing case's header, fragment of hint)
    ("gaussian_mle", _mle_unbiased, "case 1/", "divided by n - 1"),
    ("gaussian_mle", _mle_uncentred, "case 1/", "forgot to centre"),
    ("gaussian_mle", _mle_naive, "large offset", "Centre first"),
    ("gaussian_mle", _mle_variances, "case 1/", "not the vector of per-axis variances"),
    ("gaussian_mle", _mle_diagonal, "case 1/", "off-diagonal entries"),
    ("gaussian_mle", _mle_std, "case 1/", "standard deviations"),
    ("gaussian_mle", _mle_n_by_n, "case 1/", "you computed xc @ xc.T"),
    ("gaussian_mle", _mle_wrong_axis, "case 1/", "not over dim=1"),
    ("gaussian_mle", _mle_torch_cov, "d=1", "torch.cov returns a 0-dim tensor"),
    ("linear_path", _path_swapped, "case 1/", "x_t goes the wrong way"),
    ("linear_path", _path_sign, "case 1/", "u_t has the wrong sign"),
    ("linear_path", _path_no_broadcast, "case 1/", "reshape it to (B, 1, ..., 1)"),
    ("linear_path", _path_one_none, "D=(3, 4, 4)", "reshape it to (B, 1, ..., 1)"),
    ("kl_gaussians", _kl_swapped, "case 1/", "You computed KL(q || p)"),
    ("kl_gaussians", _kl_no_half, "case 1/", "missing the overall factor 1/2"),
    ("kl_gaussians", _kl_std_as_var, "case 1/", "standard deviations where"),
    ("kl_gaussians", _kl_var_as_std, "case 1/", "you squared them"),
    ("kl_gaussians", _kl_not_summed, "case 1/", "Sum over the last dim d"),
    ("standardize", _std_unbiased, "case 1/", "unbiased std"),
    ("standardize", _std_global, "case 1/", "one mean and std for all entries"),
    ("standardize", _std_global_expanded, "case 1/", "one mean and std for all entries"),
    ("standardize", _std_wrong_axis, "case 1/", "not over dim=1"),
    ("mmd2_unbiased", _mmd_biased, "case 1/", "the biased estimate (a V-statistic"),
    ("mmd2_unbiased", _mmd_zero_diagonal_mean, "case 1/", "divide by n(n - 1)"),
    ("mmd2_unbiased", _mmd_h_as_variance, "case 1/", "not by 2 * bandwidth."),
    ("mmd2_unbiased", _mmd_no_two, "case 1/", "you dropped the factor 2"),
    ("mmd2_unbiased", _mmd_unsquared, "case 1/", "torch.cdist returns distances"),
    ("mmd2_unbiased", _mmd_cross_once, "case 1/", "subtract 2 * mean"),
    ("mmd2_unbiased", _mmd_equal_sizes, "(from case 3)", "The cross average keeps every"),
    ("bits_per_dim", _bpd_nats, "case 1/", "divide by ln 2"),
    ("bits_per_dim", _bpd_nats_tensor, "case 1/", "divide by ln 2"),
    ("bits_per_dim", _bpd_per_point, "case 1/", "That is bits per data point"),
    ("bits_per_dim", _bpd_sign, "case 1/", "the wrong sign"),
    ("bits_per_dim", _bpd_log2_width, "case 1/", "Mixed units"),
    ("bits_per_dim", _bpd_continuous_only, "case 1/", "subtract dim * ln(bin_width)"),
    ("bits_per_dim", _bpd_one_bin, "case 1/", "one bin per dimension"),
    ("bits_per_dim", _bpd_none, "bin_width=None", "bin_width=None means continuous"),
    ("bits_per_dim", _bpd_torch_log, "case 1/", "use math.log"),
    ("frechet_gaussians", _fd_no_sqrt, "case 1/", "You used tr(cov1 @ cov2)"),
    ("frechet_gaussians", _fd_eigh_product, "case 1/", "reads only its lower triangle"),
    ("frechet_gaussians", _fd_elementwise, "case 1/", "torch.sqrt is element-wise"),
    ("frechet_gaussians", _fd_split_roots, "case 1/", "unless the covariances commute"),
    ("frechet_gaussians", _fd_no_mean, "case 1/", "The mean term |mu1 - mu2|^2 is missing"),
    ("frechet_gaussians", _fd_mean_norm, "case 1/", "not the norm"),
    ("frechet_gaussians", _fd_w2, "case 1/", "You returned the 2-Wasserstein distance"),
    ("frechet_gaussians", _fd_complex, "case 1/", "keep the real part"),
]


@pytest.mark.parametrize(
    ("name", "fn", "where", "hint"), WRONG, ids=[w[1].__name__ for w in WRONG]
)
def test_wrong_answer_fails_with_case_and_hint(
    name: str, fn: Callable[..., Any], where: str, hint: str
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the checker must not leak the reader's warnings
        result = check(name, fn)
    _assert_failed(result, where, "hint:", hint)


def test_kl_correct_alternative_forms_pass() -> None:
    assert check("kl_gaussians", _kl)
    assert check(
        "kl_gaussians",
        lambda mp, vp, mq, vq: kl_divergence(Normal(mp, vp.sqrt()), Normal(mq, vq.sqrt())).sum(-1),
    )


def test_naive_covariance_fails_only_the_large_offset_case() -> None:
    result = check("gaussian_mle", _mle_naive)
    assert len(result.failures) == 1 and "large offset" in result.failures[0]
    assert "The other 8 cases passed." in result.message


def test_correct_alternatives_pass() -> None:
    def mle(x: Tensor) -> tuple[Tensor, Tensor]:
        d = x.shape[1]
        return x.mean(0), torch.cov(x.T, correction=0).reshape(d, d)

    assert check("gaussian_mle", mle)
    assert check("linear_path", lambda x0, x1, t: (torch.lerp(x0, x1, _bt(t, x0)), x1 - x0))
    assert check("linear_path", lambda x0, x1, t: (x0 + _bt(t, x0) * (x1 - x0), x1 - x0))


def test_mmd2_correct_alternatives_pass() -> None:
    assert check("mmd2_unbiased", lambda x, y, h: _mmd_with(lambda a, b: _gram(a, b, h), x, y))

    def expanded(x: Tensor, y: Tensor, h: float) -> Tensor:  # |a|^2 + |b|^2 - 2 a.b
        def k(a: Tensor, b: Tensor) -> Tensor:
            d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
            return torch.exp(-d2 / (2 * h * h))

        n, m = len(x), len(y)
        kxx, kyy = k(x, x).fill_diagonal_(0), k(y, y).fill_diagonal_(0)
        return kxx.sum() / (n * (n - 1)) + kyy.sum() / (m * (m - 1)) - 2 * k(x, y).mean()

    assert check("mmd2_unbiased", expanded)


def test_bits_per_dim_accepts_a_float_or_a_0_dim_tensor() -> None:
    def bpd(nll: float, dim: int, width: float | None) -> float:
        if width is not None:
            nll -= dim * math.log(width)
        return nll / (dim * math.log(2))

    assert check("bits_per_dim", bpd)
    assert check("bits_per_dim", lambda n, d, w: torch.tensor(bpd(n, d, w), dtype=torch.float64))
    assert check("bits_per_dim", lambda n, d, w: torch.tensor(bpd(n, d, w)))  # float32
    assert check("bits_per_dim", lambda n, d, w: np.float64(bpd(n, d, w)))
    assert check("bits_per_dim", lambda n, d, w: np.float32(bpd(n, d, w)))
    # the same thing in bits from the start: -log2 of the bin probability, per dim
    assert check(
        "bits_per_dim",
        lambda n, d, w: (n / math.log(2) - (d * math.log2(w) if w else 0.0)) / d,
    )


def test_frechet_correct_alternatives_pass() -> None:
    assert check(
        "frechet_gaussians",
        lambda m1, c1, m2, c2: _fd(m1, c1, m2, c2, _sqrtm(c1 @ c2).trace()),  # FID code
    )
    assert check(
        "frechet_gaussians",
        lambda m1, c1, m2, c2: _fd(
            m1, c1, m2, c2, torch.linalg.eigvals(c1 @ c2).real.sqrt().sum()
        ),
    )


# --------------------------------------------------------------------------------------
# Exceptions, wrong types, tuple lengths, shapes, dtypes, NaN, in-place changes
# --------------------------------------------------------------------------------------


def test_exception_is_reported_not_raised() -> None:
    def boom(x: Tensor) -> tuple[Tensor, Tensor]:
        raise ValueError("something went wrong")

    result = check("gaussian_mle", boom)
    _assert_failed(result, "case 1/9", "raised ValueError: something went wrong", "in boom, line")
    assert len(result.failures) == result.n_cases


def test_exception_on_an_edge_case_names_that_case() -> None:
    def only_many(x: Tensor) -> tuple[Tensor, Tensor]:
        if x.shape[0] == 1:
            raise ZeroDivisionError("need two samples")
        xc = x - x.mean(0)
        return x.mean(0), xc.T @ xc / x.shape[0]

    result = check("gaussian_mle", only_many)
    _assert_failed(result, "edge: a single sample, n=1", "ZeroDivisionError: need two samples")
    assert "The other 8 cases passed." in result.message


def test_exceptions_of_the_evaluation_checkers_are_reported() -> None:
    def no_sqrtm(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> Tensor:
        return torch.linalg.sqrtm(cov1)  # type: ignore[attr-defined]  # no such function

    result = check("frechet_gaussians", no_sqrtm)
    _assert_failed(result, "case 1/9", "raised AttributeError", "in no_sqrtm, line")
    assert len(result.failures) == result.n_cases

    def small_only(x: Tensor, y: Tensor, h: float) -> Tensor:
        if len(x) == 2:
            raise ZeroDivisionError("need three points")
        return exercises.evaluation._mmd2_unbiased(x, y, h)

    result = check("mmd2_unbiased", small_only)
    _assert_failed(result, "edge: two points per set", "ZeroDivisionError: need three points")
    assert "The other 8 cases passed." in result.message


def test_broadcast_error_in_linear_path_is_caught() -> None:
    result = check("linear_path", _path_no_broadcast)
    _assert_failed(result, "raised RuntimeError", "must match the size")


@pytest.mark.parametrize(
    ("name", "fn", "fragment"),
    [
        ("gaussian_mle", lambda x: x.mean(0),
         "returned a Tensor of shape (2,); expected a tuple (mean, cov)"),
        ("gaussian_mle", lambda x: None, "returned None; expected a tuple (mean, cov)"),
        ("gaussian_mle", lambda x: (x.mean(0), x.T @ x, 0),
         "returned a tuple of length 3; expected 2"),
        ("standardize", lambda x: (x, x.mean(0)), "returned a tuple of length 2; expected 3"),
        ("kl_gaussians", lambda mp, vp, mq, vq: (mp.sum(-1),), "drop the trailing comma"),
        ("kl_gaussians", lambda mp, vp, mq, vq: 0.5,
         "kl is a float (0.5); expected a torch.Tensor"),
        ("gaussian_mle", lambda x: (x.mean(0).numpy(), x.T @ x), "mean is a numpy.ndarray"),
        ("gaussian_mle", lambda x: (x.mean(0, keepdim=True), torch.cov(x.T, correction=0)),
         "mean has shape (1, 2), expected (2,) (the values are right"),
        ("kl_gaussians", lambda mp, vp, mq, vq: _kl(mp, vp, mq, vq)[:, None],
         "kl has shape (6, 1), expected (6,) (the values are right"),
        ("linear_path", lambda x0, x1, t: (torch.lerp(x0, x1, _bt(t, x0)), (x1 - x0).float()),
         "u_t has dtype float32, expected float64"),
        ("linear_path", lambda x0, x1, t: (x0 * 0 + float("nan"), x1 - x0), "x_t contains NaN"),
        ("gaussian_mle", lambda x: (torch.cov(x.T, correction=0), x.mean(0)),
         "the outputs are in the wrong order: you returned (cov, mean); return (mean, cov)"),
        ("mmd2_unbiased", lambda x, y, h: exercises.evaluation._mmd2_unbiased(x, y, h).item(),
         "mmd2 is a float (0.09302); expected a torch.Tensor of shape () (do not call"),
        ("mmd2_unbiased", lambda x, y, h: exercises.evaluation._mmd2_unbiased(x, y, h).reshape(1),
         "mmd2 has shape (1,), expected () (the values are right"),
        ("mmd2_unbiased", lambda x, y, h: exercises.evaluation._mmd2_unbiased(x.double(), y.double(), h),
         "mmd2 has dtype float64, expected float32"),
        ("bits_per_dim", lambda n, d, w: torch.tensor([1.0]),
         "bpd is a Tensor of shape (1,); expected a number (a Python float, or a 0-dim"),
        ("bits_per_dim", lambda n, d, w: None, "bpd is None; expected a number"),
        ("bits_per_dim", lambda n, d, w: "8 bits", "bpd is a str; expected a number"),
        ("bits_per_dim", lambda n, d, w: (n / d, d), "expected a single number bpd"),
        ("bits_per_dim", lambda n, d, w: float("nan"), "bpd contains NaN"),
        ("frechet_gaussians", lambda m1, c1, m2, c2: exercises.evaluation._frechet_gaussians(
            m1, c1, m2, c2).reshape(1, 1), "frechet has shape (1, 1), expected ()"),
    ],
)
def test_wrong_structure_is_reported(name: str, fn: Callable[..., Any], fragment: str) -> None:
    _assert_failed(check(name, fn), fragment)


def test_wrong_values_report_error_index_and_small_values() -> None:
    result = check("kl_gaussians", _kl_no_half)
    assert "kl is wrong: max abs error" in result.message
    assert "at index [" in result.message
    assert "expected: kl = [" in result.message and "got:      kl = [" in result.message
    assert "got / expected = 2 in every entry" in " ".join(result.message.split())


def test_in_place_modification_of_an_input_is_reported() -> None:
    def sneaky(x: Tensor) -> tuple[Tensor, Tensor]:
        mean = x.mean(0)
        x -= mean
        return mean, x.T @ x / x.shape[0]

    _assert_failed(check("gaussian_mle", sneaky), "modified its input x in place")


def test_reader_warning_is_shown_for_the_failing_case_and_not_leaked() -> None:
    def noisy(x: Tensor) -> tuple[Tensor, Tensor]:
        warnings.warn("careful with n", UserWarning, stacklevel=1)
        return x.mean(0), x.T @ x

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = check("gaussian_mle", noisy)
    _assert_failed(result, "warning:  your function warned: UserWarning: careful with n")


def test_hint_found_on_a_later_case_says_which() -> None:
    def raises_on_d4(x: Tensor) -> tuple[Tensor, Tensor]:
        if x.shape[1] == 4:
            raise RuntimeError("d = 4 unsupported")
        return _mle_naive(x)

    result = check("gaussian_mle", raises_on_d4)
    _assert_failed(result, "RuntimeError: d = 4 unsupported", "(from case 9)", "Centre first")


# --------------------------------------------------------------------------------------
# API: names, callables, result object, registry
# --------------------------------------------------------------------------------------


def test_unknown_name_lists_available_names() -> None:
    with pytest.raises(ValueError, match="unknown exercise 'gausian_mle'") as info:
        check("gausian_mle", exercises.problem._gaussian_mle)
    assert "Did you mean 'gaussian_mle'?" in str(info.value)
    for name in NAMES:
        assert name in str(info.value)


def test_non_callable_and_non_str_raise_type_error() -> None:
    with pytest.raises(TypeError, match="fn must be a function"):
        check("gaussian_mle", torch.zeros(3))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be a str"):
        check(3, exercises.problem._gaussian_mle)  # type: ignore[arg-type]


def test_check_result_displays_once_as_its_message(capsys: pytest.CaptureFixture[str]) -> None:
    result = check("standardize", exercises.problem._standardize)
    assert capsys.readouterr().out == ""  # check itself prints nothing
    assert repr(result) == str(result) == result.message

    class Printer:
        def __init__(self) -> None:
            self.parts: list[str] = []

        def text(self, s: str) -> None:
            self.parts.append(s)

    printer = Printer()
    result._repr_pretty_(printer, False)
    assert printer.parts == [result.message]
    IPython = pytest.importorskip("IPython.lib.pretty")
    assert IPython.pretty(result) == result.message


def test_register_custom_checker_and_refuse_duplicates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_framework, "_REGISTRY", dict(_framework._REGISTRY))

    def square(x: Tensor) -> Tensor:
        return x**2

    def cases(generator: torch.Generator) -> list[Case]:
        return [
            Case("random", (torch.randn(3, generator=generator),)),
            Case("zeros", (torch.zeros(2),), edge=True),
        ]

    checker = register(
        Checker(
            "square",
            square,
            cases,
            outputs=("y",),
            hints=[Hint("Square, do not double.", wrong=lambda x: 2 * x)],
        )
    )
    assert "square" in available()
    assert check("square", square).message == "PASSED square: 2/2 cases (1 random, 1 edge)."
    _assert_failed(check("square", lambda x: 2 * x), "Square, do not double.")
    with pytest.raises(ValueError, match="already registered"):
        register(checker)
    assert register(checker, replace=True) is checker
    with pytest.raises(TypeError):
        register("square")  # type: ignore[arg-type]


def test_invalid_hint_and_checker_definitions_raise() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        Hint("text")
    with pytest.raises(ValueError, match="exactly one"):
        Hint("text", wrong=abs, when=lambda c, g, e: True)
    with pytest.raises(ValueError, match="only together"):
        Hint("text", when=lambda c, g, e: True, output="y")
    with pytest.raises(TypeError, match="outputs"):
        Checker("x", abs, lambda g: [], outputs=())
    with pytest.raises(ValueError, match="not one of"):
        Checker("x", abs, lambda g: [], outputs=("y",), hints=[Hint("t", wrong=abs, output="z")])
    with pytest.raises(TypeError, match="args must be a tuple"):
        Case("bad", [torch.zeros(1)])  # type: ignore[arg-type]
