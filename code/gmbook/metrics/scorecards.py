r"""The scorecard: sample metrics next to their noise floor and a ceiling.

A submodule of :mod:`gmbook.metrics`, which re-exports and documents its public names
(:data:`~gmbook.metrics.SCORECARD_METRICS`, :class:`~gmbook.metrics.ScorecardRow`,
:class:`~gmbook.metrics.Scorecard`, :func:`~gmbook.metrics.scorecard`); import them from
there. The floors and ceilings come from :mod:`gmbook.metrics.floors` (memory, the shipped
file, or computed); the model's comparisons run their exact W2 solves in a thread pool.
"""

from __future__ import annotations

import dataclasses
import html
import math
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gmbook._checks import check_generator as _check_generator
from gmbook._checks import check_int as _check_int
from gmbook._checks import describe as _describe
from gmbook.metrics._common import _check_bandwidths
from gmbook.metrics._pairs import _compare, _resolve, _set_stats, _true_samples
from gmbook.metrics.distances import DEFAULT_BANDWIDTHS, W2_MAX_N, _pot
from gmbook.metrics.floors import (
    CEILING_REPEATS,
    FLOOR_REPEATS,
    FloorPrecisionWarning,
    _reference,
)

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
            (``repeats`` for the model, ``floor_repeats`` for the floor; the model and floor
            samples are independent): it includes the floor's own uncertainty. With a
            handful of repeats this standard error is itself uncertain (by about
            :math:`1/\sqrt{2(k-1)}`, 35% for 5). Two models scored on the same floor share
            its error; compare them by :func:`~gmbook.metrics.paired_difference`.
        model_values: the metric of each repeat (model against its fresh data sample).
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
    model_values: tuple[float, ...] = ()


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
        floor_repeats: number of pairs behind each floor.
        ceiling_repeats: number of pairs behind each ceiling (the first of the floor's).
    """

    rows: list[ScorecardRow]
    dataset: str
    n: int
    repeats: int
    floor_repeats: int
    ceiling_repeats: int | None = None

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
            "ceiling_repeats": self.ceiling_repeats,
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
        ceil = self.ceiling_repeats if self.ceiling_repeats is not None else self.floor_repeats
        return (
            f"{self.dataset}, n = {self.n}: {self.repeats} repeats, floor of "
            f"{self.floor_repeats} pairs, ceiling of {ceil} (mean +- std; model/floor: ratio "
            "of means +- standard error, including the floor's)"
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


def _score(
    fakes: list[Tensor],
    dataset: Any,
    reals: list[Tensor | None],
    generator: torch.Generator | None,
    names: tuple[str, ...],
    scales: tuple[float, ...],
    theta: Tensor,
) -> list[dict[str, float]]:
    """Each model sample set against its data set (a fresh draw where ``reals`` has None),
    the exact W2 solves in worker threads (POT releases the GIL) beside the torch metrics."""
    like = fakes[0]
    n, dim = like.shape
    if "w2" in names:
        _pot()  # imported here, in the calling thread, not concurrently by the workers
    workers = max(1, min(torch.get_num_threads(), os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) if "w2" in names else nullcontext() as pool:
        out = []
        for fake, real in zip(fakes, reals):
            if real is None:
                real = _true_samples(dataset, n, dim, generator, like)
            fake_stats = _set_stats(fake, names, scales, theta)
            real_stats = _set_stats(real, names, scales, theta)
            out.append(_compare(fake_stats, real_stats, names, scales, pool))
        return _resolve(out)


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

    The **floor** of a metric is its mean between two independent data samples of size
    ``n`` (the distance a perfect model would get), over ``floor_repeats`` (default
    :data:`FLOOR_REPEATS`, 30) independent pairs; the **ceiling** its mean between
    :math:`\mathcal N(0, I)` samples and data (a model that learned only the
    standardization), over the first :data:`CEILING_REPEATS` (10) of those pairs: the
    ceiling is a scale, never divided by.

    The ratio model/floor of repeat ``r`` is ``model_r / floor_mean``; the row reports the
    mean of these (the ratio of the means), their standard deviation, and the standard error
    of the mean ratio by the delta method, which includes the floor's own uncertainty (see
    :class:`ScorecardRow`); the printed table shows mean +- standard error. A ratio near 1
    means the metric cannot tell the model from the data at this ``n``; W2 and SW2 grow
    linearly with a small error of the model, energy and MMD² quadratically, so their ratios
    rise later but faster.

    Floors and ceilings are drawn with a private generator seeded ``floor_seed``, so they
    are the same numbers in every chapter and do not consume the caller's random stream.
    They are computed once: the configurations of the book and the benchmark (toys of
    :mod:`gmbook.data`, the default ``floor_seed``, ``n_projections`` and bandwidths) are
    shipped precomputed with the package (:mod:`gmbook.metrics.floors`), and any other is
    computed on first use and kept in memory (per dataset, ``n``, ``floor_repeats``,
    metrics, bandwidths, ``n_projections``, ``floor_seed``, device and dtype; an unhashable
    dataset is not cached). The projection directions of SW2 come from the same private
    generator and are shared by model, floor and ceiling (common random numbers).

    The exact W2 solves (0.35 to 0.5 s each at ``n = 2000``) run in worker threads (as many
    as ``torch.get_num_threads()``; POT releases the GIL) beside the torch metrics (about
    0.07 s per comparison). Measured on the book's 2-core CPU at ``n = 2000``,
    ``repeats = 5``, all metrics: 1.3 s with the floors cached or shipped; computing 30
    floor pairs and 10 ceiling pairs adds about 40 W2 solves (10 s).

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
        floor_repeats: number of pairs behind each floor (default and recommended minimum
            :data:`FLOOR_REPEATS`; a smaller value is honoured but warns with
            :class:`FloorPrecisionWarning`). The W2 floor of two moons at ``n = 2000``
            varies by about 28% (one standard deviation) from pair to pair, largely because
            W2 must carry any chance excess of points from one moon to the other; a 5-pair
            floor is then uncertain by about 12%, a common factor of every ratio.

    Returns:
        The :class:`Scorecard`.

    Example:
        >>> from gmbook.data import EightGaussians
        >>> data = EightGaussians()
        >>> g = torch.Generator().manual_seed(0)
        >>> card = scorecard(data, data, n=200, repeats=2, generator=g)
        >>> card.floor_repeats, card.ceiling_repeats
        (30, 10)
        >>> [row.metric for row in card.rows][:4]
        ['w2', 'energy', 'sw2', 'mmd']
        >>> card["mmd"].ceiling_mean > 3 * card["mmd"].floor_mean
        True
    """
    n = _check_int("n", n, 2)
    repeats = _check_int("repeats", repeats, 1)
    if floor_repeats is None:
        floor_repeats = FLOOR_REPEATS
    floor_repeats = _check_int("floor_repeats", floor_repeats, 1)
    if floor_repeats < FLOOR_REPEATS:
        warnings.warn(
            f"a floor from floor_repeats={floor_repeats} pairs is imprecise: every ratio "
            f"model/floor shares its error; the default ({FLOOR_REPEATS} pairs) is shipped "
            "precomputed for the book's configurations and cached otherwise",
            FloorPrecisionWarning,
            stacklevel=2,
        )
    ceiling_repeats = min(floor_repeats, CEILING_REPEATS)
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
    ref = _reference(
        dataset, dim, n, floor_repeats, ceiling_repeats, names, scales, n_projections,
        floor_seed, like,
    )
    model = _score(fakes, dataset, [None] * repeats, generator, names, scales, ref.theta)
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
                ratio_se, tuple(mv),
            )
        )
    return Scorecard(
        rows=rows, dataset=repr(dataset), n=n, repeats=repeats, floor_repeats=floor_repeats,
        ceiling_repeats=ceiling_repeats,
    )


# --------------------------------------------------------------------------- paired comparison


@dataclasses.dataclass(frozen=True)
class PairedDifference:
    r"""Two models compared on the same reference sets: :func:`paired_difference`.

    Attributes:
        metric: the scorecard metric key (``"w2"``, ``"energy"``, ``"sw2"``, ``"mmd"`` or
            ``"mmd@<s>"``).
        n: sample size of every comparison.
        repeats: number of repeats :math:`k`, each with one fresh data set shared by both.
        values_a, values_b: the metric of each repeat, model ``a`` (``b``) against the
            repeat's data set.
        mean: :math:`\bar d`, the mean over repeats of :math:`d_r = a_r - b_r`.
        se: its standard error :math:`s_d / \sqrt k`.
        unpaired_se: :math:`\sqrt{(s_a^2 + s_b^2)/k}`, the standard error of the same
            difference from two independent scorecards (what pairing saves).
        correlation: the correlation of :math:`a_r` and :math:`b_r` over repeats.
        floor_mean, floor_se: the scorecard's floor (the same as :func:`scorecard`'s) and
            its standard error.
        ratio_mean, ratio_se: the difference in units of the floor, :math:`\bar d / \bar f`
            (the difference of the two models' ratios model/floor), and its standard error
            by the delta method, :math:`\sqrt{(s_{\bar d}/\bar f)^2 +
            (\bar d\, s_{\bar f}/\bar f^2)^2}` (the floor's error scales the difference; it
            does not add to it).
    """

    metric: str
    n: int
    repeats: int
    values_a: tuple[float, ...]
    values_b: tuple[float, ...]
    mean: float
    se: float
    unpaired_se: float
    correlation: float
    floor_mean: float
    floor_se: float
    ratio_mean: float
    ratio_se: float

    def __str__(self) -> str:
        return (
            f"{self.metric}: a - b = {_g(self.mean)} +- {_g(self.se)} (paired, "
            f"{self.repeats} shared data sets of n = {self.n}; unpaired +- "
            f"{_g(self.unpaired_se)}); in units of the floor {self.ratio_mean:.3f} +- "
            f"{self.ratio_se:.3f}"
        )


def paired_difference(
    model_a: Tensor | Any,
    model_b: Tensor | Any,
    dataset: Any,
    *,
    metric: str = "w2",
    n: int = 2000,
    repeats: int = 10,
    generator: torch.Generator | None = None,
    bandwidths: Sequence[float] = DEFAULT_BANDWIDTHS,
    n_projections: int = 256,
    floor_seed: int = 0,
    floor_repeats: int | None = None,
) -> PairedDifference:
    r"""Compare two models by a scorecard metric on shared data sets (common random numbers).

    In repeat :math:`r` both models' samples (``n`` each, drawn independently) are scored
    against the *same* fresh data sample :math:`y_r`: :math:`a_r = M(x^a_r, y_r)`,
    :math:`b_r = M(x^b_r, y_r)`. The paired difference :math:`\bar d = \frac1k \sum_r
    (a_r - b_r)` estimates :math:`\E M(x^a, y) - \E M(x^b, y)` (the difference of the two
    models' scorecard values) with standard error :math:`s_d/\sqrt k`, where
    :math:`s_d^2 = s_a^2 + s_b^2 - 2\rho\, s_a s_b`: the noise the data sample puts into
    both scores (for :math:`W_2` on two moons, chiefly its chance imbalance between the
    moons) cancels to the extent that :math:`\rho > 0`. Two separate scorecards would give
    the difference :math:`\bar a - \bar b` with :math:`\rho = 0`, and their two ratios share
    one floor, whose error does not cancel from a difference of ratios but scales it. Use
    this function whenever the question is which of two models is closer to the data.

    Args:
        model_a, model_b: models (``.sample(n, generator=...)``), callables or tensors of at
            least ``repeats * n`` samples, as in :func:`scorecard`.
        dataset: the data distribution (``.sample(n, generator=...)``).
        metric: one scorecard metric key.
        n, bandwidths, n_projections, floor_seed, floor_repeats: as in :func:`scorecard`
            (the floor is the same).
        repeats: number of shared data sets (at least 2).
        generator: randomness of both models' samples (``a``'s drawn first) and of the data
            sets; ``None`` uses the global RNG.

    Returns:
        The :class:`PairedDifference`.

    Example:
        >>> from gmbook.data import TwoMoons
        >>> data = TwoMoons()
        >>> wide = lambda n, generator=None: 1.1 * data.sample(n, generator=generator)
        >>> g = torch.Generator().manual_seed(0)
        >>> d = paired_difference(wide, data, data, metric="sw2", n=500, repeats=10,
        ...                       generator=g)
        >>> d.mean > 3 * d.se, d.se < d.unpaired_se
        (True, True)
    """
    n = _check_int("n", n, 2)
    repeats = _check_int("repeats", repeats, 2)
    if floor_repeats is None:
        floor_repeats = FLOOR_REPEATS
    floor_repeats = _check_int("floor_repeats", floor_repeats, 2)
    n_projections = _check_int("n_projections", n_projections, 1)
    floor_seed = _check_int("floor_seed", floor_seed, 0)
    generator = _check_generator(generator)
    scales = _check_bandwidths(bandwidths)
    if not isinstance(metric, str):
        raise TypeError(f"metric must be a string, got {_describe(metric)}")
    base = "mmd" if metric.startswith("mmd") else metric
    known = [*SCORECARD_METRICS, *(f"mmd@{s:g}" for s in scales)]
    if metric not in known:
        raise ValueError(f"unknown metric {metric!r}; choose from {known}")
    if base == "w2" and n > W2_MAX_N:
        raise ValueError(f"exact W2 is limited to n <= {W2_MAX_N}, got n = {n}")
    if not callable(getattr(dataset, "sample", None)):
        raise TypeError(f"dataset must have .sample(n, generator=...), got {_describe(dataset)}")
    names = (base,)
    fakes_a = _model_samples(model_a, n, repeats, generator)
    fakes_b = _model_samples(model_b, n, repeats, generator)
    if fakes_a[0].shape[1] != fakes_b[0].shape[1]:
        raise ValueError(
            f"the models sample dimensions {fakes_a[0].shape[1]} and {fakes_b[0].shape[1]}"
        )
    dtype = torch.promote_types(fakes_a[0].dtype, fakes_b[0].dtype)
    fakes_a, fakes_b = [x.to(dtype) for x in fakes_a], [x.to(dtype) for x in fakes_b]
    like = fakes_a[0]
    dim = like.shape[1]
    ref = _reference(
        dataset, dim, n, floor_repeats, min(floor_repeats, CEILING_REPEATS), names, scales,
        n_projections, floor_seed, like,
    )
    reals = [_true_samples(dataset, n, dim, generator, like) for _ in range(repeats)]
    a = np.array([r[metric] for r in _score(fakes_a, dataset, reals, None, names, scales,
                                            ref.theta)])
    b = np.array([r[metric] for r in _score(fakes_b, dataset, reals, None, names, scales,
                                            ref.theta)])
    f_mean, f_std = _mean_std([r[metric] for r in ref.floor])
    return _paired(metric, n, a, b, f_mean, f_std, floor_repeats)


def _paired(metric: str, n: int, a: np.ndarray, b: np.ndarray, f_mean: float, f_std: float,
            floor_repeats: int) -> PairedDifference:
    repeats = len(a)
    d = a - b
    mean, se = float(d.mean()), float(d.std(ddof=1) / math.sqrt(repeats))
    unpaired = math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / repeats)
    sa, sb = a.std(ddof=1), b.std(ddof=1)
    rho = float(np.corrcoef(a, b)[0, 1]) if sa > 0 and sb > 0 else math.nan
    f_se = f_std / math.sqrt(floor_repeats)
    ratio = mean / f_mean if f_mean > 0 else math.inf
    ratio_se = math.hypot(se / f_mean, mean * f_se / f_mean**2) if f_mean > 0 else math.inf
    return PairedDifference(
        metric, n, repeats, tuple(a.tolist()), tuple(b.tolist()), mean, se, unpaired, rho,
        f_mean, f_se, ratio, ratio_se,
    )


def paired_rows(
    row_a: ScorecardRow, row_b: ScorecardRow, *, n: int, floor_repeats: int | None = None
) -> PairedDifference:
    r""":func:`paired_difference` from two rows already scored, without scoring again.

    For two :func:`scorecard` calls that scored their samples (given as tensors) against
    the *same* data sets: the same ``dataset``, ``n``, ``repeats`` and a generator in the
    same state, so that repeat :math:`r` of both used one data sample. Nothing in a row can
    show that; the caller vouches for it. The rows' per-repeat values give the paired
    difference and its standard errors exactly as :func:`paired_difference` computes them.

    Args:
        row_a, row_b: rows of the same metric and floor, with the same number of repeats.
        n: the sample size of the scorecards (recorded in the result).
        floor_repeats: the pairs behind the floor (default: the shipped floors'
            :data:`FLOOR_REPEATS`).

    Returns:
        The :class:`PairedDifference` of ``row_a`` minus ``row_b``.
    """
    for name, row in (("row_a", row_a), ("row_b", row_b)):
        if not isinstance(row, ScorecardRow):
            raise TypeError(f"{name} must be a ScorecardRow, got {_describe(row)}")
    if row_a.metric != row_b.metric:
        raise ValueError(f"the rows score different metrics: {row_a.metric!r} and "
                         f"{row_b.metric!r}")
    if row_a.floor_mean != row_b.floor_mean or row_a.floor_std != row_b.floor_std:
        raise ValueError("the rows have different floors: they were not scored on the same "
                         "data distribution and settings")
    k = len(row_a.model_values)
    if k < 2 or len(row_b.model_values) != k:
        raise ValueError(f"the rows need the same number (>= 2) of per-repeat values, got "
                         f"{k} and {len(row_b.model_values)}")
    n = _check_int("n", n, 2)
    floor_repeats = _check_int("floor_repeats",
                               FLOOR_REPEATS if floor_repeats is None else floor_repeats, 2)
    return _paired(row_a.metric, n, np.array(row_a.model_values),
                   np.array(row_b.model_values), row_a.floor_mean, row_a.floor_std,
                   floor_repeats)
