"""Per-pair comparisons shared by the scorecard and its floors (private).

One comparison scores two sample sets of the same size ``n`` by every requested scorecard
metric at once: the within-set sums of a set (:func:`_set_stats`) are computed once and
reused in every comparison the set is in, and the exact W2 solve runs in a worker thread
(POT releases the GIL) beside the torch metrics. :mod:`gmbook.metrics.floors` uses these to
compute the floors and ceilings, :mod:`gmbook.metrics.scorecards` for the model's repeats.
"""

from __future__ import annotations

import dataclasses
import math
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch
from torch import Tensor

from gmbook.metrics._common import _centred, _pair_sums, _sort_columns, _sq_dists64
from gmbook.metrics.distances import _emd_cost


@dataclasses.dataclass
class _SetStats:
    """What one sample set contributes to every comparison it is in."""

    x: Tensor  # (n, D)
    dist_sum: Tensor | None  # sum over all pairs of |x_i - x_j|
    kernel_sums: Tensor | None  # (S,) sum over all pairs of each RBF kernel
    proj: Tensor | None  # (n, L) sorted projections


def _set_stats(
    x: Tensor, names: tuple[str, ...], scales: tuple[float, ...], theta: Tensor
) -> _SetStats:
    dsum = ksum = None
    if "energy" in names or "mmd" in names:  # the within-set sums: skipped for W2 and SW2
        (xc,) = _centred(x)
        dsum, ksum = _pair_sums(
            xc, xc, scales if "mmd" in names else None, dist="energy" in names, same=True
        )
    proj = _sort_columns(x @ theta.T) if "sw2" in names else None
    return _SetStats(x, dsum, ksum, proj)


def _w2_exact(x: Tensor, y: Tensor) -> float:
    return math.sqrt(max(_emd_cost(_sq_dists64(x, y)), 0.0))


def _compare(
    a: _SetStats,
    b: _SetStats,
    names: tuple[str, ...],
    scales: tuple[float, ...],
    pool: ThreadPoolExecutor | None,
) -> dict[str, Any]:
    """All requested metrics between two sets of the same size n (V-statistics). Exact W2
    is submitted to ``pool`` first (POT releases the GIL, so it runs beside the torch work)
    and left as a Future in the result, for :func:`_resolve`. MMD² gives one entry per
    bandwidth, ``"mmd@<s>"``, and their sum ``"mmd"`` (summed in the order of ``scales``)."""
    n = a.x.shape[0]
    out: dict[str, Any] = {}
    if "w2" in names:
        out["w2"] = pool.submit(_w2_exact, a.x, b.x)
    if "energy" in names or "mmd" in names:
        ac, bc = _centred(a.x, b.x)
        dsum, ksum = _pair_sums(
            ac, bc, scales if "mmd" in names else None, dist="energy" in names, same=False
        )
        if "energy" in names:
            out["energy"] = float((2 * dsum - a.dist_sum - b.dist_sum) / n**2)
        if "mmd" in names:
            per = ((a.kernel_sums + b.kernel_sums - 2 * ksum) / n**2).tolist()
            out["mmd"] = float(sum(per))
            for s, v in zip(scales, per):
                out[f"mmd@{s:g}"] = v
    if "sw2" in names:
        out["sw2"] = float((a.proj - b.proj).square().mean(0).mean().sqrt())
    return out


def _resolve(results: list[dict[str, Any]]) -> list[dict[str, float]]:
    """Replace the Futures of :func:`_compare` by their values (re-raising any error)."""
    return [{k: v.result() if isinstance(v, Future) else v for k, v in r.items()} for r in results]


def _true_samples(
    dataset: Any, n: int, dim: int, generator: torch.Generator | None, like: Tensor
) -> Tensor:
    """``n`` data points ``(n, dim)`` on ``like``'s device and dtype."""
    x = dataset.sample(n, generator=generator)
    if not isinstance(x, Tensor) or x.shape[0] != n or not x.is_floating_point():
        raise ValueError(f"dataset.sample({n}) must return a floating-point tensor of {n} points")
    x = x.detach().reshape(n, -1).to(device=like.device, dtype=like.dtype)
    if x.shape[1] != dim:
        raise ValueError(f"the data have dimension {x.shape[1]}, the model samples {dim}")
    return x
