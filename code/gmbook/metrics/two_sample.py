r"""The permutation two-sample test.

A submodule of :mod:`gmbook.metrics`, which re-exports and documents its public names
(:class:`~gmbook.metrics.TestResult`, :func:`~gmbook.metrics.two_sample_test`); import
them from there.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from gmbook._checks import check_generator as _check_generator
from gmbook._checks import check_int as _check_int
from gmbook._checks import describe as _describe
from gmbook.metrics._common import (
    _BLOCK,
    _EXP_FLOOR,
    _centred,
    _check_bandwidths,
    _check_pair,
)
from gmbook.metrics.distances import DEFAULT_BANDWIDTHS, energy_distance, mmd2

# Every public name here is re-exported, and documented once, by gmbook.metrics (whose
# __all__ lists it): import it from there. The empty __all__ keeps the API docs from
# describing it twice.
__all__: list[str] = []


# --------------------------------------------------------------------------- two-sample test


@dataclasses.dataclass(frozen=True)
class TestResult:
    r"""Result of :func:`two_sample_test`.

    Attributes:
        statistic: the observed statistic.
        p_value: :math:`(1 + \#\{b: T_b \ge T\}) / (B + 1)`.
        null: the statistics of the ``B`` permutations, float64 on the CPU, shape ``(B,)``.
    """

    __test__ = False  # not a pytest test class, despite its name

    statistic: float
    p_value: float
    null: Tensor

    def __str__(self) -> str:
        b = self.null.shape[0]
        return f"statistic {self.statistic:.4g}, p = {self.p_value:.4g} ({b} permutations)"


def _pooled_null(
    z: Tensor, n: int, statistic: Callable, perms: Tensor,
    bandwidths: Sequence[float] = DEFAULT_BANDWIDTHS,
) -> tuple[float, Tensor]:
    """Observed and permuted values of mmd2 / energy_distance (default settings) from one
    pooled matrix, in float64: each statistic is a quadratic form of the labelling vector."""
    big_n = z.shape[0]
    m = big_n - n
    (zc,) = _centred(z.to(torch.float64))
    rows = []
    for i0 in range(0, big_n, max(1, _BLOCK // big_n)):  # the pooled matrix A, (N, N)
        zb = zc[i0 : i0 + max(1, _BLOCK // big_n)]
        d2 = torch.addmm(zb.square().sum(1, keepdim=True) + zc.square().sum(1), zb, zc.T, alpha=-2)
        d2 = d2.clamp_min_(0)
        r = torch.arange(zb.shape[0], device=z.device)
        d2[r, r + i0] = 0
        if statistic is mmd2:
            coeffs = [-0.5 / s**2 for s in bandwidths]
            rows.append(sum((d2 * c).clamp_min(_EXP_FLOOR).exp() for c in coeffs))
        else:
            rows.append(d2.sqrt_())
    a = torch.cat(rows)  # (N, N)
    row_sums = a.sum(1)  # (N,)
    total = row_sums.sum()
    labels = torch.cat([perms.new_tensor(range(big_n))[None], perms])  # identity first
    values = []
    chunk = max(1, _BLOCK // big_n)
    for p in labels.split(chunk):
        s = torch.zeros(p.shape[0], big_n, dtype=a.dtype, device=a.device)
        s.scatter_(1, p[:, :n].to(a.device), 1.0)  # indicator of the x-labelled points
        s_xx = ((s @ a) * s).sum(1)
        s_x_all = s @ row_sums
        s_xy = s_x_all - s_xx
        s_yy = total - 2 * s_x_all + s_xx
        if statistic is mmd2:  # unbiased, the k = 1 per bandwidth of the diagonal removed
            k0 = len(bandwidths)
            v = (s_xx - n * k0) / (n * (n - 1)) + (s_yy - m * k0) / (m * (m - 1))
            v = v - 2 * s_xy / (n * m)
        else:  # energy distance, V-statistics
            v = 2 * s_xy / (n * m) - s_xx / n**2 - s_yy / m**2
        values.append(v.to(torch.float64).cpu())
    values = torch.cat(values)
    return float(values[0]), values[1:]


def two_sample_test(
    x: Tensor,
    y: Tensor,
    *,
    statistic: Callable[[Tensor, Tensor], Tensor | float] = mmd2,
    n_permutations: int = 500,
    generator: torch.Generator | None = None,
    bandwidths: Sequence[float] = DEFAULT_BANDWIDTHS,
) -> TestResult:
    r"""Permutation two-sample test of :math:`H_0: p_x = p_y`.

    Pools the ``n + m`` points, recomputes the statistic on ``B = n_permutations`` random
    relabellings (``n`` points labelled ``x``), and returns the p-value

    .. math::

        \hat p = \frac{1 + \#\{b : T_b \ge T_{\text{obs}}\}}{B + 1},

    which is exactly valid (:math:`P(\hat p \le \alpha) \le \alpha` under :math:`H_0`)
    because the observed labelling is one more exchangeable draw; it is never 0, and the
    smallest reportable value is :math:`1/(B+1)`. Large values of the statistic must mean
    "different".

    With ``statistic=mmd2`` or ``statistic=energy_distance`` (the functions themselves, at
    their default settings) the kernel or distance matrix of the pooled sample is computed
    once, in float64, and each permutation costs one vector-matrix product (the statistic
    is a quadratic form of the labelling); ``bandwidths`` selects the kernels of ``mmd2``
    on that fast path (a single narrow bandwidth is more powerful against fine errors than
    the default mixture, see the evaluation chapter). Any other callable is called
    ``B + 1`` times.

    Args:
        x: samples, shape ``(n, D)``, ``n >= 2``.
        y: samples, shape ``(m, D)``, ``m >= 2``.
        statistic: callable ``(x, y) -> scalar``.
        n_permutations: number of permutations ``B``.
        generator: source of the permutations; ``None`` uses the global RNG.
        bandwidths: the kernel bandwidths when ``statistic`` is :func:`mmd2`.

    Returns:
        The :class:`TestResult`.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x, y = torch.randn(100, 2, generator=g), torch.randn(100, 2, generator=g)
        >>> two_sample_test(x, y + 1.0, n_permutations=99, generator=g).p_value
        0.01
    """
    if not callable(statistic):
        raise TypeError(f"statistic must be a callable (x, y) -> scalar, got {_describe(statistic)}")
    n_permutations = _check_int("n_permutations", n_permutations, 1)
    generator = _check_generator(generator)
    x, y = _check_pair(x, y, min_n=2)
    n = x.shape[0]
    z = torch.cat([x, y]).detach()  # (N, D)
    big_n = z.shape[0]
    device = generator.device if generator is not None else z.device
    perms = torch.rand(n_permutations, big_n, generator=generator, device=device).argsort(dim=1)
    perms = perms.to(z.device)  # (B, N)
    bandwidths = _check_bandwidths(bandwidths)
    if statistic is mmd2 or statistic is energy_distance:
        observed, null = _pooled_null(z, n, statistic, perms, bandwidths)
    else:
        with torch.no_grad():
            observed = float(statistic(x.detach(), y.detach()))
            null = torch.tensor(
                [float(statistic(z[p[:n]], z[p[n:]])) for p in perms], dtype=torch.float64
            )
    if not math.isfinite(observed) or not bool(torch.isfinite(null).all()):
        raise ValueError("the statistic returned a non-finite value")
    p_value = (1 + int((null >= observed).sum())) / (n_permutations + 1)
    return TestResult(statistic=observed, p_value=p_value, null=null)
