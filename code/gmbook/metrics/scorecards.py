r"""The scorecard: sample metrics next to their noise floor and a ceiling.

A submodule of :mod:`gmbook.metrics`, which re-exports and documents its public names
(:data:`~gmbook.metrics.SCORECARD_METRICS`, :class:`~gmbook.metrics.ScorecardRow`,
:class:`~gmbook.metrics.Scorecard`, :func:`~gmbook.metrics.scorecard`); import them from
there. Besides the table, it holds the cache of floors and ceilings
(``_REFERENCE_CACHE``) and runs the exact W2 solves in a thread pool.
"""

from __future__ import annotations

import collections
import dataclasses
import html
import math
import os
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gmbook._checks import check_generator as _check_generator
from gmbook._checks import check_int as _check_int
from gmbook._checks import describe as _describe
from gmbook.metrics._common import (
    _centred,
    _check_bandwidths,
    _pair_sums,
    _random_directions,
    _sq_dists64,
)
from gmbook.metrics.distances import DEFAULT_BANDWIDTHS, W2_MAX_N, _emd_cost, _pot

# Every public name here is re-exported, and documented once, by gmbook.metrics (whose
# __all__ lists it): import it from there. The empty __all__ keeps the API docs from
# describing it twice.
__all__: list[str] = []

SCORECARD_METRICS: tuple[str, ...] = ("w2", "energy", "sw2", "mmd")
"""The metrics :func:`scorecard` computes by default: exact W2, energy distance, sliced W2
and MMD^2 (to which the scorecard adds one row per bandwidth)."""


# --------------------------------------------------------------------------- scorecard


_LABELS = {"w2": "W2 (exact)", "energy": "energy (V)", "sw2": "SW2", "mmd": "MMD^2 (V)"}


@dataclasses.dataclass(frozen=True)
class ScorecardRow:
    r"""One metric of a :class:`Scorecard`: mean and standard deviation over the repeats.

    Attributes:
        metric: key: ``"w2"``, ``"energy"``, ``"sw2"``, ``"mmd"``, or ``"mmd@<s>"`` for the
            MMD² of the single bandwidth ``s``.
        label: what the number is, in ASCII (e.g. ``"MMD^2 (V) s=0.05"``).
        model_mean, model_std: the metric between model and fresh data samples.
        floor_mean, floor_std: between two independent data samples (the noise floor).
        ceiling_mean, ceiling_std: between :math:`\mathcal N(0, I)` samples and data.
        ratio_mean: the mean over repeats of the per-repeat ratio ``model_r / floor_mean``,
            which is the ratio of the means ``model_mean / floor_mean`` (dividing by the
            floor's mean, not by one noisy floor pair, avoids the upward bias of a mean of
            ratios).
        ratio_std: the standard deviation over repeats of ``model_r / floor_mean``: the
            spread of a single repeat, like the other ``_std`` columns.
        ratio_se: the standard error of ``ratio_mean`` by the delta method,
            :math:`\text{ratio}\,\sqrt{(\mathrm{se}_m/\bar m)^2 + (\mathrm{se}_f/\bar f)^2}`
            with :math:`\mathrm{se} = \text{std}/\sqrt{k}` for a mean over :math:`k` repeats
            (the model and floor samples are independent). With a handful of repeats this
            standard error is itself uncertain (by about :math:`1/\sqrt{2(k-1)}`, 35% for 5).
    """

    metric: str
    label: str
    model_mean: float
    model_std: float
    floor_mean: float
    floor_std: float
    ceiling_mean: float
    ceiling_std: float
    ratio_mean: float
    ratio_std: float
    ratio_se: float


def _g(v: float) -> str:
    return f"{v:.3g}"


@dataclasses.dataclass(frozen=True)
class Scorecard:
    r"""The table of :func:`scorecard`: one :class:`ScorecardRow` per metric.

    ``str()`` gives the compact plain-ASCII table the chapters print (the PDF is built by
    xelatex); in a notebook it renders as an HTML table. Index it by metric key:
    ``card["w2"].ratio_mean``.

    Attributes:
        rows: the rows, the requested metrics first, then the MMD² of each bandwidth.
        dataset: ``repr`` of the data distribution.
        n: sample size of every comparison.
        repeats: number of independent repeats of the model's comparisons.
        floor_repeats: number of pairs behind each floor and ceiling.
    """

    rows: list[ScorecardRow]
    dataset: str
    n: int
    repeats: int
    floor_repeats: int

    def __getitem__(self, metric: str) -> ScorecardRow:
        for row in self.rows:
            if row.metric == metric:
                return row
        raise KeyError(f"no metric {metric!r}; have {[r.metric for r in self.rows]}")

    def to_dict(self) -> dict[str, Any]:
        """Plain data (for JSON or a DataFrame): the metadata and a list of row dicts."""
        return {
            "dataset": self.dataset,
            "n": self.n,
            "repeats": self.repeats,
            "floor_repeats": self.floor_repeats,
            "rows": [dataclasses.asdict(row) for row in self.rows],
        }

    def _cells(self, pm: str) -> tuple[list[str], list[list[str]]]:
        head = ["metric", "model", "floor (data vs data)", "ceiling (N(0,I))", "model/floor"]
        body = [
            [
                row.label,
                f"{_g(row.model_mean)} {pm} {_g(row.model_std)}",
                f"{_g(row.floor_mean)} {pm} {_g(row.floor_std)}",
                f"{_g(row.ceiling_mean)} {pm} {_g(row.ceiling_std)}",
                f"{row.ratio_mean:.2f} {pm} {row.ratio_se:.2f}",
            ]
            for row in self.rows
        ]
        return head, body

    def _title(self) -> str:
        floors = f" ({self.floor_repeats} for floors)"
        if self.floor_repeats == self.repeats:
            floors = ""
        return (
            f"{self.dataset}, n = {self.n}, {self.repeats} repeats{floors} "
            "(mean +- std over repeats; model/floor: ratio of means +- standard error)"
        )

    def __str__(self) -> str:
        head, body = self._cells("+-")
        widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *body]]
        return "\n".join([self._title(), *lines])

    def _repr_markdown_(self) -> str:
        head, body = self._cells("±")
        rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        rows += ["| " + " | ".join(r) + " |" for r in body]
        return f"**Scorecard**: {self._title().replace('+-', '±')}\n\n" + "\n".join(rows)

    def _repr_html_(self) -> str:
        head, body = self._cells("&plusmn;")
        th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
        trs = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in body)
        caption = html.escape(self._title()).replace("+-", "&plusmn;")
        return f"<table><caption>Scorecard: {caption}</caption><tr>{th}</tr>{trs}</table>"


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
    (xc,) = _centred(x)
    dsum, ksum = _pair_sums(
        xc, xc, scales if "mmd" in names else None, dist="energy" in names, same=True
    )
    proj = (x @ theta.T).sort(dim=0).values if "sw2" in names else None
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
    and left as a Future in the result, for :func:`_resolve`."""
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


@dataclasses.dataclass
class _Reference:
    theta: Tensor  # (L, D) projection directions, shared by every comparison
    floor: list[dict[str, float]]
    ceiling: list[dict[str, float]]


_REFERENCE_CACHE: collections.OrderedDict[tuple, _Reference] = collections.OrderedDict()
_REFERENCE_CACHE_SIZE = 16


def _reference_key(dataset: Any, *params: object) -> tuple | None:
    key = (dataset, *params)
    try:
        hash(key)
    except TypeError:  # an unhashable dataset: no caching
        return None
    return key


def _reference(
    dataset: Any,
    dim: int,
    n: int,
    repeats: int,
    names: tuple[str, ...],
    scales: tuple[float, ...],
    n_projections: int,
    floor_seed: int,
    like: Tensor,
    pool: ThreadPoolExecutor | None,
) -> _Reference:
    """Floors and ceilings, drawn with a private generator seeded ``floor_seed``; their W2
    values may still be Futures (resolve, then cache, in :func:`scorecard`)."""
    g = torch.Generator(device="cpu").manual_seed(floor_seed)
    theta = _random_directions(n_projections, dim, g, torch.empty(0, dtype=like.dtype))
    theta = theta.to(like.device)  # (L, D)
    floor, ceiling = [], []
    for _ in range(repeats):
        t1 = _true_samples(dataset, n, dim, g, like)
        t2 = _true_samples(dataset, n, dim, g, like)
        gauss = torch.randn(n, dim, generator=g, dtype=like.dtype).to(like.device)
        s1 = _set_stats(t1, names, scales, theta)
        floor.append(_compare(s1, _set_stats(t2, names, scales, theta), names, scales, pool))
        ceiling.append(_compare(_set_stats(gauss, names, scales, theta), s1, names, scales, pool))
    return _Reference(theta, floor, ceiling)


def _true_samples(
    dataset: Any, n: int, dim: int, generator: torch.Generator | None, like: Tensor
) -> Tensor:
    x = dataset.sample(n, generator=generator)
    if not isinstance(x, Tensor) or x.shape[0] != n or not x.is_floating_point():
        raise ValueError(f"dataset.sample({n}) must return a floating-point tensor of {n} points")
    x = x.detach().reshape(n, -1).to(device=like.device, dtype=like.dtype)
    if x.shape[1] != dim:
        raise ValueError(f"the data have dimension {x.shape[1]}, the model samples {dim}")
    return x


def _model_samples(
    samples_or_model: Any, n: int, repeats: int, generator: torch.Generator | None
) -> list[Tensor]:
    if isinstance(samples_or_model, Tensor):
        x = samples_or_model
        if x.ndim < 2 or x.shape[0] < n * repeats:
            raise ValueError(
                f"a tensor of samples must have at least repeats * n = {repeats * n} rows "
                f"(shape (N, *D)), got shape {tuple(x.shape)}; pass more samples, or a model"
            )
        chunks = list(x.detach()[: n * repeats].reshape(n * repeats, -1).split(n))
    else:
        sample = getattr(samples_or_model, "sample", None)
        if not callable(sample):
            if not callable(samples_or_model):
                raise TypeError(
                    "samples_or_model must be a tensor of samples, a model with "
                    ".sample(n, generator=...), or a callable (n, generator=...), got "
                    f"{_describe(samples_or_model)}"
                )
            sample = samples_or_model
        chunks = []
        with torch.no_grad():
            for _ in range(repeats):
                x = sample(n, generator=generator)
                if not isinstance(x, Tensor) or x.ndim < 2 or x.shape[0] != n:
                    got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
                    raise ValueError(
                        f"the model's sample({n}) must return a tensor (n, *D), got {got}"
                    )
                chunks.append(x.detach().reshape(n, -1))
    for x in chunks:
        if not x.is_floating_point():
            raise TypeError(f"model samples must be floating point, got {x.dtype}")
        bad = int((~torch.isfinite(x)).any(dim=1).sum())
        if bad:
            raise ValueError(
                f"{bad} of {n} model samples are not finite (nan/inf): the model diverged?"
            )
    dtype = torch.promote_types(chunks[0].dtype, torch.float32)
    return [x.to(dtype) for x in chunks]


def _mean_std(values: list[float]) -> tuple[float, float]:
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else math.nan


def scorecard(
    samples_or_model: Tensor | Any,
    dataset: Any,
    *,
    n: int = 2000,
    repeats: int = 5,
    metrics: Sequence[str] = SCORECARD_METRICS,
    generator: torch.Generator | None = None,
    bandwidths: Sequence[float] = DEFAULT_BANDWIDTHS,
    n_projections: int = 256,
    floor_seed: int = 0,
    floor_repeats: int | None = None,
) -> Scorecard:
    r"""Score a model's samples against the data, next to the noise floor and a ceiling.

    For each of ``repeats`` repeats, ``n`` model samples are compared with ``n`` *fresh*
    data samples (``dataset.sample(n, generator=generator)``) by each metric:

    - ``"w2"``: exact :func:`wasserstein2` (POT), a distance;
    - ``"energy"``: :func:`energy_distance`, V-statistic (squared-type);
    - ``"sw2"``: :func:`sliced_wasserstein2`, a distance;
    - ``"mmd"``: :func:`mmd2` with ``unbiased=False`` (the V-statistic, so that its floor is
      positive), and one more row per bandwidth, because the mixture is dominated by its
      wide kernels and blind to the fine errors of good models. At bandwidths below the
      typical spacing of ``n`` points the V-statistic is dominated by its diagonal terms
      (about :math:`2/n`), so the ratios of the smallest bandwidths stay modest even for a
      bad model (about 2 for :math:`\mathcal N(0, I)` against two moons at ``n = 500``).

    The **floor** of a metric is its value between two independent data samples of size
    ``n`` (the distance a perfect model would get), the **ceiling** its value between
    :math:`\mathcal N(0, I)` samples and data (a model that learned only the
    standardization), each over ``floor_repeats`` (default ``repeats``) fresh pairs.

    The ratio model/floor of repeat ``r`` is ``model_r / floor_mean``; the row reports the
    mean of these (the ratio of the means), their standard deviation, and the standard error
    of the mean ratio by the delta method, which includes the floor's own uncertainty (see
    :class:`ScorecardRow`); the printed table shows mean +- standard error. A ratio near 1
    means the metric cannot tell the model from the data at this ``n``; W2 and SW2 grow
    linearly with a small error of the model, energy and MMD² quadratically, so their ratios
    rise later but faster.

    Floors and ceilings are drawn with a private generator seeded ``floor_seed``, so they
    are the same numbers in every chapter, do not consume the caller's random stream, and are
    cached (per dataset, ``n``, ``floor_repeats``, metrics, bandwidths, ``n_projections``,
    ``floor_seed``, device and dtype; the toys of :mod:`gmbook.data` are frozen dataclasses,
    equal when their parameters are, and an unhashable dataset is not cached): the second
    scorecard on the same data costs only the model's comparisons. The projection directions of SW2 come from the same private
    generator and are shared by model, floor and ceiling (common random numbers).

    The exact W2 solves (0.35 to 0.5 s each at ``n = 2000``) run in worker threads (as many
    as ``torch.get_num_threads()``; POT releases the GIL) beside the torch metrics (about
    0.07 s per comparison). Measured on the book's 2-core CPU at ``n = 2000``,
    ``repeats = 5``, all metrics: 1.3 s with the floors cached, 3.8 s without (15 W2 solves);
    without ``"w2"``, 0.38 s (cached) and 1 s; at ``n = 1000`` with ``"w2"``, 0.3 s and
    0.8 s.

    Args:
        samples_or_model: a model with ``.sample(n, generator=...)`` (or such a callable),
            called once per repeat under ``torch.no_grad()``; or a tensor of at least
            ``repeats * n`` samples ``(N, *D)``, split into ``repeats`` consecutive chunks of
            ``n`` (rows beyond ``repeats * n`` are ignored). Samples are flattened to
            ``(n, D)``; their device and dtype (at least float32) are used throughout.
        dataset: the data distribution, with ``.sample(n, generator=...)`` (a toy of
            :mod:`gmbook.data`).
        n: sample size of every comparison (at most :data:`W2_MAX_N` with ``"w2"``).
        repeats: number of repeats.
        metrics: a subset of :data:`SCORECARD_METRICS`.
        generator: randomness of the model samples and the fresh data samples; ``None`` uses
            the global RNG.
        bandwidths: of the MMD kernel.
        n_projections: directions of SW2.
        floor_seed: seed of the private generator of floors, ceilings and directions.
        floor_repeats: number of pairs behind each floor and ceiling (default: ``repeats``).
            Floors are cached, so a larger value costs only once; it makes the ratios more
            precise. The W2 floor of two moons at ``n = 2000``, for one, varies by about 20%
            (one standard deviation) from pair to pair: W2 must carry any chance excess of
            points across the set, for instance from one moon to the other.

    Returns:
        The :class:`Scorecard`.

    Example:
        >>> from gmbook.data import EightGaussians
        >>> data = EightGaussians()
        >>> g = torch.Generator().manual_seed(0)
        >>> card = scorecard(data, data, n=200, repeats=2, generator=g)
        >>> [row.metric for row in card.rows][:4]
        ['w2', 'energy', 'sw2', 'mmd']
        >>> card["mmd"].ceiling_mean > 3 * card["mmd"].floor_mean
        True
    """
    n = _check_int("n", n, 2)
    repeats = _check_int("repeats", repeats, 1)
    if floor_repeats is None:
        floor_repeats = repeats
    floor_repeats = _check_int("floor_repeats", floor_repeats, 1)
    n_projections = _check_int("n_projections", n_projections, 1)
    floor_seed = _check_int("floor_seed", floor_seed, 0)
    generator = _check_generator(generator)
    scales = _check_bandwidths(bandwidths)
    if isinstance(metrics, str) or not isinstance(metrics, Sequence) or not metrics:
        raise TypeError(f"metrics must be a non-empty sequence of names from {SCORECARD_METRICS}")
    unknown = [m for m in metrics if m not in SCORECARD_METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; choose from {SCORECARD_METRICS}")
    names = tuple(m for m in SCORECARD_METRICS if m in metrics)  # canonical order, no repeats
    if "w2" in names and n > W2_MAX_N:
        raise ValueError(
            f"exact W2 is limited to n <= {W2_MAX_N}; leave 'w2' out of metrics for n = {n}"
        )
    if not callable(getattr(dataset, "sample", None)):
        raise TypeError(f"dataset must have .sample(n, generator=...), got {_describe(dataset)}")

    fakes = _model_samples(samples_or_model, n, repeats, generator)
    like = fakes[0]
    dim = like.shape[1]
    key = _reference_key(
        dataset, dim, n, floor_repeats, names, scales, n_projections, floor_seed,
        str(like.device), like.dtype,
    )
    ref = _REFERENCE_CACHE.get(key) if key is not None else None
    # Exact W2 solves run in worker threads (POT releases the GIL) beside the torch metrics;
    # POT is imported here, in the calling thread, not concurrently by the workers.
    if "w2" in names:
        _pot()
    workers = max(1, min(torch.get_num_threads(), os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) if "w2" in names else nullcontext() as pool:
        new_ref = ref is None
        if new_ref:
            ref = _reference(
                dataset, dim, n, floor_repeats, names, scales, n_projections, floor_seed, like,
                pool,
            )
        model = []
        for fake in fakes:
            real = _true_samples(dataset, n, dim, generator, like)
            fake_stats = _set_stats(fake, names, scales, ref.theta)
            real_stats = _set_stats(real, names, scales, ref.theta)
            model.append(_compare(fake_stats, real_stats, names, scales, pool))
        model = _resolve(model)
        if new_ref:
            ref = _Reference(ref.theta, _resolve(ref.floor), _resolve(ref.ceiling))
            if key is not None:
                _REFERENCE_CACHE[key] = ref
                while len(_REFERENCE_CACHE) > _REFERENCE_CACHE_SIZE:
                    _REFERENCE_CACHE.popitem(last=False)
        else:
            _REFERENCE_CACHE.move_to_end(key)
    keys = [*names]
    if "mmd" in names:
        keys += [f"mmd@{s:g}" for s in scales]
    rows = []
    for key in keys:
        label = _LABELS[key] if key in _LABELS else f"  {_LABELS['mmd']} s={key[4:]}"
        mv = [r[key] for r in model]
        fv = [r[key] for r in ref.floor]
        cv = [r[key] for r in ref.ceiling]
        (m_mean, m_std), (f_mean, f_std) = _mean_std(mv), _mean_std(fv)
        ratio = m_mean / f_mean if f_mean > 0 else math.inf
        ratio_std = m_std / f_mean if f_mean > 0 else math.inf
        rel = math.hypot(
            m_std / m_mean / math.sqrt(repeats) if m_mean else 0.0,
            f_std / f_mean / math.sqrt(floor_repeats) if f_mean else 0.0,
        )
        ratio_se = abs(ratio) * rel if min(repeats, floor_repeats) > 1 else math.nan
        rows.append(
            ScorecardRow(
                key, label, m_mean, m_std, f_mean, f_std, *_mean_std(cv), ratio, ratio_std,
                ratio_se,
            )
        )
    return Scorecard(
        rows=rows, dataset=repr(dataset), n=n, repeats=repeats, floor_repeats=floor_repeats
    )
