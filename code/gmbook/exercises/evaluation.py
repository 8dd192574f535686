r"""Checkers of the chapter *Evaluating generative models*."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from gmbook.exercises._framework import (
    DTYPES,
    Case,
    Checker,
    Hint,
    close,
    fmt_dtype,
    randint,
    register,
)

# -- mmd2_unbiased ---------------------------------------------------------------------


def _sq_dists(a: Tensor, b: Tensor) -> Tensor:
    r"""Squared distances ``|a_i - b_j|^2``, ``(n, m)``, from the differences themselves.

    Exact up to rounding of each entry, unlike ``|a|^2 + |b|^2 - 2 a.b``, which cancels
    when the points are far from the origin.
    """
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(dim=-1)  # (n, m)


def _mmd2_from_grams(kxx: Tensor, kyy: Tensor, kxy: Tensor) -> Tensor:
    r"""Unbiased MMD^2 from the Gram matrices ``(n, n)``, ``(m, m)`` and ``(n, m)``."""
    n, m = kxx.shape[0], kyy.shape[0]
    within_x = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))  # mean over i != j
    within_y = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return within_x + within_y - 2 * kxy.mean()


def _mmd2_with_kernel(x: Tensor, y: Tensor, kernel: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    return _mmd2_from_grams(kernel(x, x), kernel(y, y), kernel(x, y))


def _mmd2_unbiased(x: Tensor, y: Tensor, bandwidth: float) -> Tensor:
    r"""Reference: unbiased MMD^2 with a Gaussian kernel (Gretton et al., 2012), 0-dim.

    ``k(a, b) = exp(-|a - b|^2 / (2 bandwidth^2))``; the within-set averages skip the
    diagonal ``i = j``, the cross average keeps every pair.
    """
    return _mmd2_with_kernel(
        x, y, lambda a, b: torch.exp(-_sq_dists(a, b) / (2 * bandwidth**2))
    )


def _mmd_cases(generator: torch.Generator) -> list[Case]:
    def sample(n: int, d: int, dtype: torch.dtype, offset: float, scale: float) -> Tensor:
        z = torch.randn(n, d, generator=generator, dtype=torch.float64)
        return (offset + scale * z).to(dtype)  # (n, d)

    def bandwidth() -> float:  # log-uniform in [0.1, 3]
        u = float(torch.rand((), generator=generator, dtype=torch.float64))
        return round(0.1 * 30**u, 3)

    cases = []
    for k in range(6):
        dtype = DTYPES[k % 2]
        d = 1 + k % 3
        n = randint(generator, 4, 30)
        m = n if k == 2 else randint(generator, 4, 30)  # one case with n == m
        h = bandwidth()
        x = sample(n, d, dtype, 0.0, 1.0)
        y = sample(m, d, dtype, 1.0, 1.5)  # shifted and wider: MMD^2 > 0
        cases.append(Case(f"n={n}, m={m}, D={d}, bandwidth={h}, {fmt_dtype(dtype)}", (x, y, h)))
    f64 = torch.float64
    x = sample(6, 2, f64, 0.0, 1.0)
    cases += [
        Case(
            "two points per set, n=m=2, D=2, bandwidth=1.0, float64",
            (sample(2, 2, f64, 0.0, 1.0), sample(2, 2, f64, 0.5, 1.0), 1.0),
            edge=True,
        ),
        Case(
            "identical sets, y = x (the estimate is < 0), n=m=6, D=2, bandwidth=1.5, "
            "float64",
            (x, x.clone(), 1.5),
            edge=True,
        ),
        Case(
            "far-apart sets (cross kernel values underflow to 0), n=5, m=7, D=3, "
            "bandwidth=1.0, float64",
            (sample(5, 3, f64, 0.0, 1.0), sample(7, 3, f64, 100.0, 1.0), 1.0),
            edge=True,
        ),
    ]
    return cases


def _mmd2_biased(x: Tensor, y: Tensor, bandwidth: float) -> Tensor:
    def k(a: Tensor, b: Tensor) -> Tensor:
        return torch.exp(-_sq_dists(a, b) / (2 * bandwidth**2))

    return k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean()


def _mmd2_no_diagonal_over_n2(x: Tensor, y: Tensor, bandwidth: float) -> Tensor:
    def k(a: Tensor, b: Tensor) -> Tensor:
        return torch.exp(-_sq_dists(a, b) / (2 * bandwidth**2))

    kxx, kyy = k(x, x), k(y, y)
    within_x = (kxx.sum() - kxx.trace()) / x.shape[0] ** 2  # i != j, but over n^2
    within_y = (kyy.sum() - kyy.trace()) / y.shape[0] ** 2
    return within_x + within_y - 2 * k(x, y).mean()


def _mmd2_diagonal_over_pairs(x: Tensor, y: Tensor, bandwidth: float) -> Tensor:
    def k(a: Tensor, b: Tensor) -> Tensor:
        return torch.exp(-_sq_dists(a, b) / (2 * bandwidth**2))

    n, m = x.shape[0], y.shape[0]
    return k(x, x).sum() / (n * (n - 1)) + k(y, y).sum() / (m * (m - 1)) - 2 * k(x, y).mean()


def _mmd2_h_as_variance(x: Tensor, y: Tensor, bandwidth: float) -> Tensor:
    return _mmd2_with_kernel(x, y, lambda a, b: torch.exp(-_sq_dists(a, b) / (2 * bandwidth)))


def _mmd2_no_two(x: Tensor, y: Tensor, bandwidth: float) -> Tensor:
    return _mmd2_with_kernel(x, y, lambda a, b: torch.exp(-_sq_dists(a, b) / bandwidth**2))


def _mmd2_h_as_variance_no_two(x: Tensor, y: Tensor, bandwidth: float) -> Tensor:
    return _mmd2_with_kernel(x, y, lambda a, b: torch.exp(-_sq_dists(a, b) / bandwidth))


def _mmd2_unsquared(x: Tensor, y: Tensor, bandwidth: float) -> Tensor:
    return _mmd2_with_kernel(
        x, y, lambda a, b: torch.exp(-_sq_dists(a, b).sqrt() / (2 * bandwidth**2))
    )


def _mmd2_cross_once(x: Tensor, y: Tensor, bandwidth: float) -> Tensor:
    kxy = torch.exp(-_sq_dists(x, y) / (2 * bandwidth**2))
    return _mmd2_unbiased(x, y, bandwidth) + kxy.mean()  # - 1 * mean instead of - 2 * mean


def _mmd2_cross_no_diagonal(x: Tensor, y: Tensor, bandwidth: float) -> Tensor:
    # Gretton's equal-size statistic: also drops i = j from the cross sum
    n = x.shape[0]
    if y.shape[0] != n:  # the mistake needs n == m
        return _mmd2_unbiased(x, y, bandwidth)
    kxy = torch.exp(-_sq_dists(x, y) / (2 * bandwidth**2))
    cross = (kxy.sum() - kxy.trace()) / (n * (n - 1))
    return _mmd2_unbiased(x, y, bandwidth) + 2 * kxy.mean() - 2 * cross


_HINT_MMD_COUNT = (
    "Count the pairs: the within-set averages run over the n(n - 1) pairs i != j "
    "(and m(m - 1) for y): drop the diagonal k(x_i, x_i) = 1 and divide by n(n - 1)."
)

register(
    Checker(
        name="mmd2_unbiased",
        reference=_mmd2_unbiased,
        generate=_mmd_cases,
        outputs=("mmd2",),
        hints=[
            Hint(
                "You kept the diagonal terms k(x_i, x_i) = 1 and divided by n^2: that is "
                "the biased estimate (a V-statistic, exactly 0 when y = x). The unbiased "
                "one averages over i != j: (sum - trace) / (n(n - 1)), same for y.",
                wrong=_mmd2_biased,
            ),
            Hint(_HINT_MMD_COUNT, wrong=_mmd2_no_diagonal_over_n2),
            Hint(_HINT_MMD_COUNT, wrong=_mmd2_diagonal_over_pairs),
            Hint(
                "The bandwidth is a standard deviation: divide the squared distance by "
                "2 * bandwidth**2, not by 2 * bandwidth.",
                wrong=_mmd2_h_as_variance,
            ),
            Hint(
                "The kernel is exp(-|a - b|^2 / (2 * bandwidth**2)): you dropped the "
                "factor 2.",
                wrong=_mmd2_no_two,
            ),
            Hint(
                "The kernel is exp(-|a - b|^2 / (2 * bandwidth**2)): square the bandwidth "
                "and keep the factor 2.",
                wrong=_mmd2_h_as_variance_no_two,
            ),
            Hint(
                "The kernel uses squared distances |a - b|^2: torch.cdist returns "
                "distances, square them.",
                wrong=_mmd2_unsquared,
            ),
            Hint(
                "The cross term enters twice (k(x_i, y_j) and k(y_j, x_i)): subtract "
                "2 * mean of k(x_i, y_j), not 1 *.",
                wrong=_mmd2_cross_once,
            ),
            Hint(
                "The cross average keeps every pair (i, j), i = j included: only the "
                "within-set averages skip the diagonal. (Dropping i = j across the sets "
                "is a different estimator, for n = m only.)",
                wrong=_mmd2_cross_no_diagonal,
            ),
        ],
    )
)


# -- bits_per_dim ----------------------------------------------------------------------


def _bits_per_dim(nll_nats: float, dim: int, bin_width: float | None) -> float:
    r"""Reference: negative log-likelihood in nats per data point -> bits per dimension.

    ``nll / (dim ln 2)`` for continuous data (``bin_width=None``); for discrete data
    dequantized with uniform noise over bins of width ``bin_width``, the probability of
    a bin is about the density times ``bin_width**dim``, so
    ``(nll - dim ln(bin_width)) / (dim ln 2)``. Returns a Python float.
    """
    if bin_width is not None:
        nll_nats = nll_nats - dim * math.log(bin_width)  # -log(density * bin volume)
    return nll_nats / (dim * math.log(2))


_BIN_WIDTHS = (2 / 16, 1 / 255, 1.0, None)
_BIN_NAMES = {2 / 16: "2/16", 1 / 255: "1/255", 1 / 256: "1/256", 1.0: "1.0", None: "None"}


def _bits_cases(generator: torch.Generator) -> list[Case]:
    def case(nll: float, dim: int, width: float | None, text: str = "", edge: bool = False) -> Case:
        head = f"{text}, " if text else ""
        return Case(
            f"{head}nll={nll:g} nats, dim={dim}, bin_width={_BIN_NAMES[width]}",
            (nll, dim, width),
            edge=edge,
        )

    dims = (1, 2, 64, 784)
    cases = []
    for k in range(8):
        width = _BIN_WIDTHS[k % 4]
        dim = dims[randint(generator, 1 if k == 0 else 0, 3)]
        # nll in [-200, 500]; for discrete data a bin has probability <= 1, so
        # nll >= dim * ln(bin_width) (bits per dim >= 0)
        low = -200.0 if width is None else max(-200.0, dim * math.log(width))
        u = float(torch.rand((), generator=generator, dtype=torch.float64))
        cases.append(case(round(low + (500 - low) * u, 3), dim, width))
    cases += [
        case(345.6, 64, 1.0, "bin_width=1 gives the continuous formula", edge=True),
        case(1.5, 1, None, "one dimension", edge=True),
        case(-2500.0, 784, None, "negative NLL (a density above 1)", edge=True),
        case(-2500.0, 784, 1 / 255, "negative NLL, 8-bit data in [0, 1]", edge=True),
        case(0.0, 784, 1 / 256, "uniform on [0, 1]^784, 256 bins (8 bits/dim)", edge=True),
    ]
    return cases


def _bits_nats(nll_nats: float, dim: int, bin_width: float | None) -> float:
    return _bits_per_dim(nll_nats, dim, bin_width) * math.log(2)


def _bits_per_point(nll_nats: float, dim: int, bin_width: float | None) -> float:
    return _bits_per_dim(nll_nats, dim, bin_width) * dim


def _bits_sign(nll_nats: float, dim: int, bin_width: float | None) -> float:
    if bin_width is not None:
        nll_nats = nll_nats + dim * math.log(bin_width)
    return nll_nats / (dim * math.log(2))


def _bits_log2_width(nll_nats: float, dim: int, bin_width: float | None) -> float:
    if bin_width is not None:
        nll_nats = nll_nats - dim * math.log2(bin_width)  # bits subtracted from nats
    return nll_nats / (dim * math.log(2))


def _bits_no_correction(nll_nats: float, dim: int, bin_width: float | None) -> float:
    return nll_nats / (dim * math.log(2))


def _bits_correction_once(nll_nats: float, dim: int, bin_width: float | None) -> float:
    if bin_width is not None:
        nll_nats = nll_nats - math.log(bin_width)  # one bin, not one per dimension
    return nll_nats / (dim * math.log(2))


def _bits_none_error(case: Case, got: Any, expected: Any) -> bool:
    return case.args[2] is None and isinstance(got, TypeError) and "None" in str(got)


def _bits_torch_on_number(case: Case, got: Any, expected: Any) -> bool:
    return isinstance(got, TypeError) and "must be Tensor" in str(got)


register(
    Checker(
        name="bits_per_dim",
        reference=_bits_per_dim,
        generate=_bits_cases,
        outputs=("bpd",),
        hints=[
            Hint(
                "That is nats per dimension: divide by ln 2 to get bits "
                "(log2(p) = ln(p) / ln 2), i.e. nll / (dim * math.log(2)).",
                wrong=_bits_nats,
            ),
            Hint(
                "That is bits per data point: divide by the number of dimensions dim "
                "as well.",
                wrong=_bits_per_point,
            ),
            Hint(
                "The bin correction has the wrong sign: the probability of a bin is "
                "about density * bin_width**dim, so -log P = nll - dim * ln(bin_width) "
                "(a positive correction, since bin_width < 1).",
                wrong=_bits_sign,
            ),
            Hint(
                "Mixed units: nll is in nats, so the correction is dim * ln(bin_width) "
                "(math.log), not log2; convert the total to bits at the end.",
                wrong=_bits_log2_width,
            ),
            Hint(
                "With a bin_width, the data are discrete: subtract dim * ln(bin_width) "
                "from the nll (the log-volume of a bin) before converting to bits.",
                wrong=_bits_no_correction,
            ),
            Hint(
                "The bin correction is dim * ln(bin_width): one bin per dimension, the "
                "volume of a cell is bin_width**dim.",
                wrong=_bits_correction_once,
            ),
            Hint(
                "bin_width=None means continuous data: skip the correction "
                "(test `if bin_width is not None:`).",
                when=_bits_none_error,
            ),
            Hint(
                "The inputs are Python numbers: use math.log (torch.log needs a tensor). "
                "Return a float; a 0-dim tensor is accepted too.",
                when=_bits_torch_on_number,
            ),
        ],
    )
)


# -- frechet_gaussians -----------------------------------------------------------------


def _sqrtm_psd(a: Tensor) -> Tensor:
    r"""The symmetric square root of a symmetric positive semi-definite ``(d, d)`` matrix."""
    evals, evecs = torch.linalg.eigh(a)
    return (evecs * evals.clamp(min=0).sqrt()) @ evecs.T  # V diag(sqrt(lambda)) V^T


def _trace_sqrt_product(cov1: Tensor, cov2: Tensor) -> Tensor:
    r"""``tr((cov1^{1/2} cov2 cov1^{1/2})^{1/2})``, from a symmetric eigenproblem."""
    root1 = _sqrtm_psd(cov1)
    middle = root1 @ cov2 @ root1
    middle = (middle + middle.T) / 2  # symmetric up to rounding
    return torch.linalg.eigvalsh(middle).clamp(min=0).sqrt().sum()


def _frechet_gaussians(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> Tensor:
    r"""Reference: squared 2-Wasserstein (Frechet) distance between Gaussians, 0-dim.

    ``|mu1 - mu2|^2 + tr(cov1 + cov2 - 2 (cov1^{1/2} cov2 cov1^{1/2})^{1/2})``, the
    formula of the FID (Heusel et al., 2017).
    """
    mean_term = ((mu1 - mu2) ** 2).sum()
    return mean_term + cov1.trace() + cov2.trace() - 2 * _trace_sqrt_product(cov1, cov2)


def _frechet_cases(generator: torch.Generator) -> list[Case]:
    f64 = torch.float64

    def spd(d: int) -> Tensor:  # a random SPD covariance with eigenvalues of order 1
        a = torch.randn(d, d, generator=generator, dtype=f64)
        scale = torch.exp(torch.randn((), generator=generator, dtype=f64))
        return scale * (a @ a.T / d + 0.1 * torch.eye(d, dtype=f64))

    def mean(d: int) -> Tensor:
        return torch.randn(d, generator=generator, dtype=f64)

    cases = []
    for d in (3, 2, 5, 1, 4, 3):
        cases.append(Case(f"d={d}, float64", (mean(d), spd(d), mean(d), spd(d))))
    mu, cov = mean(3), spd(3)
    var1, var2 = torch.exp(torch.randn(2, 3, generator=generator, dtype=f64))
    cases += [
        Case(
            "identical Gaussians (distance 0), d=3, float64",
            (mu, cov, mu.clone(), cov.clone()),
            edge=True,
            atol=1e-6,
        ),
        Case(
            "diagonal (commuting) covariances, d=3, float64",
            (mean(3), torch.diag(var1), mean(3), torch.diag(var2)),
            edge=True,
        ),
        Case("one dimension, d=1, float64", (mean(1), spd(1), mean(1), spd(1)), edge=True),
    ]
    return cases


def _frechet_no_sqrt(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> Tensor:
    return ((mu1 - mu2) ** 2).sum() + (cov1 + cov2 - 2 * cov1 @ cov2).trace()


def _frechet_eigh_product(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> Tensor:
    # eigh reads only the lower triangle of the non-symmetric cov1 @ cov2
    trace_sqrt = torch.linalg.eigvalsh(cov1 @ cov2).sqrt().sum()
    return ((mu1 - mu2) ** 2).sum() + cov1.trace() + cov2.trace() - 2 * trace_sqrt


def _frechet_elementwise(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> Tensor:
    # torch.sqrt(cov1 @ cov2).trace(): element-wise, only the diagonal matters
    trace_sqrt = (cov1 @ cov2).diagonal().sqrt().sum()
    return ((mu1 - mu2) ** 2).sum() + cov1.trace() + cov2.trace() - 2 * trace_sqrt


def _frechet_split_roots(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> Tensor:
    # (cov1 cov2)^{1/2} taken as cov1^{1/2} cov2^{1/2}: true only when they commute
    trace_sqrt = (_sqrtm_psd(cov1) @ _sqrtm_psd(cov2)).trace()
    return ((mu1 - mu2) ** 2).sum() + cov1.trace() + cov2.trace() - 2 * trace_sqrt


def _frechet_no_mean(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> Tensor:
    return cov1.trace() + cov2.trace() - 2 * _trace_sqrt_product(cov1, cov2)


def _frechet_mean_norm(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> Tensor:
    return _frechet_no_mean(mu1, cov1, mu2, cov2) + (mu1 - mu2).norm()


def _frechet_w2(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> Tensor:
    return _frechet_gaussians(mu1, cov1, mu2, cov2).sqrt()


def _frechet_complex(case: Case, got: Any, expected: Any) -> bool:
    return (
        isinstance(got, Tensor)
        and got.is_complex()
        and close(got.real.double().cpu(), expected.double(), 1e-6, 1e-8)
    )


register(
    Checker(
        name="frechet_gaussians",
        reference=_frechet_gaussians,
        generate=_frechet_cases,
        outputs=("frechet",),
        hints=[
            Hint(
                "You used tr(cov1 @ cov2): the formula needs the trace of the matrix "
                "square root of the product, tr((cov1^1/2 cov2 cov1^1/2)^1/2).",
                wrong=_frechet_no_sqrt,
            ),
            Hint(
                "cov1 @ cov2 is not symmetric, and torch.linalg.eigh reads only its lower "
                "triangle. Take the eigenvalues of the symmetric cov1^1/2 cov2 cov1^1/2 "
                "(or torch.linalg.eigvals(cov1 @ cov2).real), then the sum of their "
                "square roots.",
                wrong=_frechet_eigh_product,
            ),
            Hint(
                "torch.sqrt is element-wise; the formula needs the matrix square root "
                "(S with S @ S = M). Use the eigenvalues: tr(M^1/2) = sum of sqrt(eig).",
                wrong=_frechet_elementwise,
            ),
            Hint(
                "(cov1 cov2)^1/2 is not cov1^1/2 cov2^1/2 unless the covariances commute; "
                "use (cov1^1/2 cov2 cov1^1/2)^1/2.",
                wrong=_frechet_split_roots,
            ),
            Hint(
                "The mean term |mu1 - mu2|^2 is missing.",
                wrong=_frechet_no_mean,
            ),
            Hint(
                "The mean term is the squared distance |mu1 - mu2|^2, not the norm: "
                "((mu1 - mu2) ** 2).sum().",
                wrong=_frechet_mean_norm,
            ),
            Hint(
                "You returned the 2-Wasserstein distance; the Frechet distance of the FID "
                "is its square: do not take the square root of the total.",
                wrong=_frechet_w2,
            ),
            Hint(
                "Your result is complex (from torch.linalg.eigvals or a complex sqrtm); "
                "the eigenvalues of cov1 @ cov2 are real and >= 0: keep the real part, "
                "e.g. .real, before summing.",
                when=_frechet_complex,
            ),
        ],
    )
)
