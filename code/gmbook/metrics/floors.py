r"""Noise floors of the scorecard: many pairs, computed once, shipped with the package.

A submodule of :mod:`gmbook.metrics`, which re-exports its public names
(:data:`~gmbook.metrics.FLOOR_REPEATS`, :data:`~gmbook.metrics.CEILING_REPEATS`,
:class:`~gmbook.metrics.FloorPrecisionWarning`, :func:`~gmbook.metrics.floor_values`,
:func:`~gmbook.metrics.reference_draws`).

The **floor** of a sample metric at sample size ``n`` is its mean between two independent
data samples of size ``n``; the scorecard divides a model's value by it. A floor is itself
a Monte Carlo estimate: the W2 floor of two moons at ``n = 2000`` varies by about 28% from
pair to pair (over the 100 shipped pairs), so a floor from 5 pairs is uncertain by about
12% and every ratio divided by it inherits that error. :func:`~gmbook.metrics.scorecard`
therefore takes each floor from :data:`~gmbook.metrics.FLOOR_REPEATS` (30) independent pairs. Thirty exact W2
solves at ``n = 2000`` cost
about 10 s, which ten chapters must not pay again and again, so the per-pair values of
the configurations the book and the benchmark use are computed once and shipped in
``floors.json`` next to this module (about 80 KB). Each entry is keyed by the data set's
``repr``, ``n``, the dimension, the dtype, ``n_projections`` (the sliced-W2 directions are
drawn first from the same generator) and ``floor_seed``; it holds, per metric (``"w2"``,
``"energy"``, ``"sw2"`` and one ``"mmd@<s>"`` per bandwidth, the MMD² of a mixture being
their sum), the value of every pair, in the order the private generator draws them, so
the first ``k`` values are exactly the floor a ``k``-pair run would compute: means,
spreads and subsets are all available (:func:`~gmbook.metrics.floor_values`).

A scorecard looks its floors up in memory first, then in the file, and computes them on a
miss (then keeps them in memory). The file holds only the toys of :mod:`gmbook.data` (frozen
dataclasses whose ``repr`` lists every parameter); another data set is always computed.
The shipped values were computed on the CPU; they serve any device (a GPU computes the same
draws, equal up to float32 rounding).

Regenerate the file after a change to the data sets or the metrics, or to add a
configuration to ``CONFIGURATIONS`` (about 2 minutes on the book's 2-core CPU)::

    PYTHONPATH=code python -m gmbook.metrics --write

and check it against a fresh computation of the first pairs of every entry (``--check``).
The tests do both for a part of the file, and check that every chapter calling
``scorecard`` is covered.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import functools
import json
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gmbook._checks import check_int as _check_int
from gmbook._checks import describe as _describe
from gmbook.metrics._common import _check_bandwidths, _random_directions
from gmbook.metrics._pairs import _compare, _resolve, _set_stats, _true_samples
from gmbook.metrics.distances import DEFAULT_BANDWIDTHS, W2_MAX_N, _pot

# Re-exported, and documented once, by gmbook.metrics.
__all__: list[str] = []

FLOOR_REPEATS = 30
r"""Default number of independent data-vs-data pairs behind each floor of
:func:`~gmbook.metrics.scorecard` (at least this many are recommended; fewer warn with
:class:`FloorPrecisionWarning`). With 30 pairs the W2 floor of two moons at ``n = 2000``
is known to about 5% (its pair-to-pair spread, about 28%, over :math:`\sqrt{30}`)."""

CEILING_REPEATS = 10
r"""Number of pairs behind each ceiling (:math:`\mathcal N(0, I)` against the data), or
fewer if the floor has fewer. The ceiling is a scale ("how bad is learning only the
standardization"), read to two digits and never divided by; its pair-to-pair spread is a
few per cent, so 10 pairs suffice."""

FLOORS_FILE = Path(__file__).with_name("floors.json")
"""The shipped per-pair floors and ceilings (regenerate with ``--write``)."""

_ALL_METRICS = ("w2", "energy", "sw2", "mmd")  # = scorecards.SCORECARD_METRICS


class FloorPrecisionWarning(UserWarning):
    """A scorecard floor from fewer than :data:`FLOOR_REPEATS` pairs: its ratios are
    imprecise (the floor's own error is a common factor of every ratio divided by it)."""


@dataclasses.dataclass(frozen=True)
class FloorConfig:
    """One configuration whose floors are shipped in :data:`FLOORS_FILE`.

    Attributes:
        dataset: a toy of :mod:`gmbook.data`.
        n: sample size.
        dtype: dtype of the model samples the scorecard sees (the floors are computed in it).
        pairs: pairs stored (at least :data:`FLOOR_REPEATS`).
        users: the chapters (``book/...md``) and scripts that score at this configuration.
        n_projections: directions of sliced W2 (256, the scorecard's default, unless a
            chapter scores with fewer).
    """

    dataset: Any
    n: int
    dtype: torch.dtype = torch.float32
    pairs: int = FLOOR_REPEATS
    users: tuple[str, ...] = ()
    n_projections: int = 256


def _configurations() -> tuple[FloorConfig, ...]:
    from gmbook.data import (Banana, Checkerboard, ClassConditional, EightGaussians,
                             GaussianGrid, TwoMoons)

    moons = TwoMoons()
    return (
        # 100 pairs: the evaluation chapter studies the spread of floors of few pairs.
        FloorConfig(moons, 2000, pairs=100, users=(
            "book/foundations/evaluation.md", "book/diffusion/ddpm.md",
            "book/diffusion/flow_matching.md", "book/diffusion/score_matching.md",
            "book/diffusion/sde.md", "book/diffusion/few_step.md", "book/latent/flows.md",
            "benchmarks/run.py")),
        FloorConfig(moons, 1000, users=("book/latent/vae.md",)),
        FloorConfig(moons, 500, users=("book/foundations/ebm.md",)),
        FloorConfig(moons, 500, torch.float64, users=("book/foundations/sampling.md",)),
        FloorConfig(Banana(), 500, torch.float64, users=("book/foundations/sampling.md",)),
        FloorConfig(EightGaussians(), 2000, users=("benchmarks/run.py",)),
        FloorConfig(EightGaussians(), 1000, users=("book/latent/flows.md",)),
        FloorConfig(Checkerboard(), 1000, users=("book/latent/flows.md",)),
        # the two moons split by moon: the class-conditional models of the guidance chapter
        FloorConfig(ClassConditional(moons, 0), 2000, users=("book/diffusion/guidance.md",)),
        FloorConfig(ClassConditional(moons, 1), 2000, users=("book/diffusion/guidance.md",)),
        # the 5x5 grid of Gaussians: the GAN chapter's three seeds and the benchmark
        FloorConfig(GaussianGrid(), 2000, users=("book/beyond/gans.md",)),
        # sliced W2 on 64 directions: the SDE chapter's exact-score curves and sampler table
        FloorConfig(moons, 2000, n_projections=64, users=("book/diffusion/sde.md",)),
        FloorConfig(EightGaussians(), 2000, n_projections=64,
                    users=("book/diffusion/sde.md",)),
    )


CONFIGURATIONS: tuple[FloorConfig, ...] = _configurations()
"""The configurations whose floors ``--write`` computes and ships: every data set and ``n``
at which a chapter or the benchmark calls :func:`~gmbook.metrics.scorecard` (with the
default ``floor_seed = 0`` and bandwidths, ``n_projections = 256`` unless the configuration
says otherwise; all metrics)."""


# --------------------------------------------------------------------------- computing


@dataclasses.dataclass
class _Reference:
    theta: Tensor  # (L, D) projection directions, shared by every comparison
    floor: list[dict[str, Any]]  # per pair: metric key -> value (or a Future for W2)
    ceiling: list[dict[str, Any]]


def _generator_and_directions(
    n_projections: int, dim: int, floor_seed: int, like: Tensor
) -> tuple[torch.Generator, Tensor]:
    """The private generator, after it drew the ``(L, D)`` directions of SW2 (first)."""
    g = torch.Generator(device="cpu").manual_seed(floor_seed)
    theta = _random_directions(n_projections, dim, g, torch.empty(0, dtype=like.dtype))
    return g, theta.to(like.device)


def _draws(dataset: Any, dim: int, n: int, pairs: int, n_projections: int, floor_seed: int,
           like: Tensor):
    """Yield ``(x1, x2, gauss)`` of every pair, in the order of the private generator."""
    g, _ = _generator_and_directions(n_projections, dim, floor_seed, like)
    for _ in range(pairs):
        t1 = _true_samples(dataset, n, dim, g, like)
        t2 = _true_samples(dataset, n, dim, g, like)
        gauss = torch.randn(n, dim, generator=g, dtype=like.dtype).to(like.device)
        yield t1, t2, gauss


def _compute(
    dataset: Any,
    dim: int,
    n: int,
    pairs: int,
    ceiling_pairs: int,
    names: tuple[str, ...],
    scales: tuple[float, ...],
    n_projections: int,
    floor_seed: int,
    like: Tensor,
    pool: ThreadPoolExecutor | None,
) -> _Reference:
    """Floors (``pairs``) and ceilings (the first ``ceiling_pairs``), drawn with a private
    generator seeded ``floor_seed``; W2 values are still Futures (see :func:`_resolved`).
    Every pair draws its Gaussian sample, used or not, so the stream does not depend on
    ``ceiling_pairs``."""
    _, theta = _generator_and_directions(n_projections, dim, floor_seed, like)
    floor, ceiling = [], []
    for r, (t1, t2, gauss) in enumerate(
        _draws(dataset, dim, n, pairs, n_projections, floor_seed, like)
    ):
        s1 = _set_stats(t1, names, scales, theta)
        floor.append(_compare(s1, _set_stats(t2, names, scales, theta), names, scales, pool))
        if r < ceiling_pairs:
            ceiling.append(
                _compare(_set_stats(gauss, names, scales, theta), s1, names, scales, pool)
            )
    return _Reference(theta, floor, ceiling)


def _resolved(ref: _Reference) -> _Reference:
    return _Reference(ref.theta, _resolve(ref.floor), _resolve(ref.ceiling))


# --------------------------------------------------------------------------- the caches


_MEMORY: collections.OrderedDict[tuple, _Reference] = collections.OrderedDict()
_MEMORY_SIZE = 16


def _memory_key(dataset: Any, *params: object) -> tuple | None:
    key = (dataset, *params)
    try:
        hash(key)
    except TypeError:  # an unhashable data set: no caching
        return None
    return key


def _file_key(
    dataset: Any, dim: int, n: int, n_projections: int, floor_seed: int, dtype: torch.dtype
) -> str | None:
    """The key of a configuration in :data:`FLOORS_FILE`, or None if it cannot be shipped
    (only the frozen-dataclass toys of :mod:`gmbook.data` are)."""
    cls = type(dataset)
    if not (cls.__module__ == "gmbook.data" and dataclasses.is_dataclass(dataset)):
        return None
    dt = str(dtype).removeprefix("torch.")
    return f"{dataset!r} n={n} dim={dim} {dt} L={n_projections} seed={floor_seed}"


@functools.cache
def _shipped() -> dict[str, Any]:
    """The entries of :data:`FLOORS_FILE` (read once; empty if the file is missing)."""
    try:
        with open(FLOORS_FILE, encoding="utf-8") as f:
            return json.load(f)["entries"]
    except FileNotFoundError:
        return {}


def _metric_keys(names: tuple[str, ...], scales: tuple[float, ...]) -> list[str]:
    keys = [m for m in names if m != "mmd"]
    if "mmd" in names:
        keys += [f"mmd@{s:g}" for s in scales]
    return keys


def _from_entry(
    entry: dict[str, Any],
    pairs: int,
    ceiling_pairs: int,
    names: tuple[str, ...],
    scales: tuple[float, ...],
) -> tuple[list[dict[str, float]], list[dict[str, float]]] | None:
    """Per-pair floor and ceiling dicts from a file entry, or None if it lacks something."""
    if entry["pairs"] < pairs or entry["ceiling_pairs"] < ceiling_pairs:
        return None
    stored = [float(s) for s in entry["bandwidths"]]
    if "mmd" in names and any(s not in stored for s in scales):
        return None
    out = []
    for part, count in (("floor", pairs), ("ceiling", ceiling_pairs)):
        values = entry[part]
        cols = {}
        for m in names:
            if m == "mmd":
                for s in scales:
                    cols[f"mmd@{s:g}"] = values[f"mmd@{stored[stored.index(s)]:g}"]
            elif m in values:
                cols[m] = values[m]
            else:
                return None
        rows = [{k: float(v[r]) for k, v in cols.items()} for r in range(count)]
        if "mmd" in names:
            for row in rows:  # the same sum, in the same order, as _compare's
                row["mmd"] = float(sum(row[f"mmd@{s:g}"] for s in scales))
        out.append(rows)
    return out[0], out[1]


def _lookup(
    dataset: Any,
    dim: int,
    n: int,
    pairs: int,
    ceiling_pairs: int,
    names: tuple[str, ...],
    scales: tuple[float, ...],
    n_projections: int,
    floor_seed: int,
    like: Tensor,
) -> tuple[_Reference | None, tuple | None]:
    """The reference from memory or from the shipped file (kept in memory), else None;
    and the memory key under which to store a computed one."""
    mkey = _memory_key(
        dataset, dim, n, pairs, ceiling_pairs, names, scales, n_projections, floor_seed,
        str(like.device), like.dtype,
    )
    if mkey is not None and mkey in _MEMORY:
        _MEMORY.move_to_end(mkey)
        return _MEMORY[mkey], mkey
    fkey = _file_key(dataset, dim, n, n_projections, floor_seed, like.dtype)
    entry = _shipped().get(fkey) if fkey is not None else None
    got = _from_entry(entry, pairs, ceiling_pairs, names, scales) if entry else None
    if got is None:
        return None, mkey
    _, theta = _generator_and_directions(n_projections, dim, floor_seed, like)
    ref = _Reference(theta, *got)
    _remember(mkey, ref)
    return ref, mkey


def _remember(mkey: tuple | None, ref: _Reference) -> None:
    if mkey is None:
        return
    _MEMORY[mkey] = ref
    while len(_MEMORY) > _MEMORY_SIZE:
        _MEMORY.popitem(last=False)


def _reference(
    dataset: Any,
    dim: int,
    n: int,
    pairs: int,
    ceiling_pairs: int,
    names: tuple[str, ...],
    scales: tuple[float, ...],
    n_projections: int,
    floor_seed: int,
    like: Tensor,
) -> _Reference:
    """Resolved floors and ceilings: from memory, the file, or computed (and remembered)."""
    ref, mkey = _lookup(
        dataset, dim, n, pairs, ceiling_pairs, names, scales, n_projections, floor_seed, like
    )
    if ref is None:
        if "w2" in names:
            _pot()  # imported here, in the calling thread, not by the workers
        workers = max(1, torch.get_num_threads())
        with ThreadPoolExecutor(max_workers=workers) as pool:
            ref = _resolved(_compute(
                dataset, dim, n, pairs, ceiling_pairs, names, scales, n_projections,
                floor_seed, like, pool,
            ))
        _remember(mkey, ref)
    return ref


# --------------------------------------------------------------------------- public helpers


def _dim_of(dataset: Any) -> int:
    if not callable(getattr(dataset, "sample", None)):
        raise TypeError(f"dataset must have .sample(n, generator=...), got {_describe(dataset)}")
    x = dataset.sample(2, generator=torch.Generator().manual_seed(0))
    return int(x.reshape(2, -1).shape[1])


def floor_values(
    dataset: Any,
    n: int,
    metric: str = "w2",
    *,
    pairs: int = FLOOR_REPEATS,
    ceiling: bool = False,
    n_projections: int = 256,
    floor_seed: int = 0,
    bandwidths: Sequence[float] = DEFAULT_BANDWIDTHS,
    dtype: torch.dtype = torch.float32,
) -> np.ndarray:
    r"""The per-pair values behind a scorecard floor (or ceiling), first pair first.

    The same numbers :func:`~gmbook.metrics.scorecard` averages for its floor with
    ``floor_repeats=pairs`` (from the shipped file when it has them, else computed and kept
    in memory); the mean of the first ``k`` is the floor of a ``k``-pair scorecard.

    Args:
        dataset: the data distribution (``.sample(n, generator=...)``).
        n: sample size of each side of a pair.
        metric: a scorecard metric key: ``"w2"``, ``"energy"``, ``"sw2"``, ``"mmd"`` or
            ``"mmd@<s>"``.
        pairs: number of pairs (for ``ceiling=True``, of ceiling pairs).
        ceiling: the ceiling's values (:math:`\mathcal N(0, I)` against data) instead.
        n_projections, floor_seed, bandwidths: as in :func:`~gmbook.metrics.scorecard`.
        dtype: the dtype of the samples (float32 unless the model samples float64).

    Returns:
        float64 array ``(pairs,)``.

    Example:
        >>> from gmbook.data import TwoMoons
        >>> w2 = floor_values(TwoMoons(), 2000, "w2")  # shipped: no W2 solve
        >>> w2.shape, bool(0.08 < w2.mean() < 0.14)
        ((30,), True)
    """
    n = _check_int("n", n, 2)
    pairs = _check_int("pairs", pairs, 1)
    scales = _check_bandwidths(bandwidths)
    base = "mmd" if metric.startswith("mmd") else metric
    if base not in _ALL_METRICS or (metric.startswith("mmd@")
                                    and metric not in _metric_keys(("mmd",), scales)):
        raise ValueError(f"unknown metric {metric!r}; choose from {_ALL_METRICS} or 'mmd@<s>'")
    if base == "w2" and n > W2_MAX_N:
        raise ValueError(f"exact W2 is limited to n <= {W2_MAX_N}")
    like = torch.empty(0, dtype=dtype)
    dim = _dim_of(dataset)
    ref = _reference(dataset, dim, n, pairs, pairs if ceiling else 0, (base,), scales,
                     _check_int("n_projections", n_projections, 1),
                     _check_int("floor_seed", floor_seed, 0), like)
    rows = ref.ceiling if ceiling else ref.floor
    return np.array([r[metric] for r in rows], dtype=np.float64)


def reference_draws(
    dataset: Any,
    n: int,
    *,
    pairs: int = FLOOR_REPEATS,
    n_projections: int = 256,
    floor_seed: int = 0,
    dtype: torch.dtype = torch.float32,
    labels: bool = False,
) -> list[tuple[Tensor, ...]]:
    r"""The data pairs ``(x1, x2)`` behind the floors, each ``(n, D)``, first pair first.

    Redrawn from the private generator (cheap: no metric is computed), e.g. to relate a
    floor's pair-to-pair spread to a property of the draws, such as how many points fall
    on each moon. With ``labels=True`` each pair is ``(x1, y1, x2, y2)`` with the component
    labels ``(n,)`` of ``dataset.sample_with_labels``, which draws the same points as
    ``dataset.sample`` (as the toys of :mod:`gmbook.data` do).

    Example:
        >>> from gmbook.data import TwoMoons
        >>> (x1, x2), = reference_draws(TwoMoons(), 50, pairs=1)
        >>> x1.shape, bool((x1 != x2).any())
        (torch.Size([50, 2]), True)
        >>> (z1, y1, z2, y2), = reference_draws(TwoMoons(), 50, pairs=1, labels=True)
        >>> bool((z1 == x1).all() and (z2 == x2).all()), y1.shape
        (True, torch.Size([50]))
    """
    n = _check_int("n", n, 2)
    pairs = _check_int("pairs", pairs, 1)
    n_projections = _check_int("n_projections", n_projections, 1)
    floor_seed = _check_int("floor_seed", floor_seed, 0)
    like = torch.empty(0, dtype=dtype)
    dim = _dim_of(dataset)
    if not labels:
        return [(t1, t2) for t1, t2, _ in _draws(
            dataset, dim, n, pairs, n_projections, floor_seed, like)]
    if not callable(getattr(dataset, "sample_with_labels", None)):
        raise TypeError(f"labels=True needs dataset.sample_with_labels, got {_describe(dataset)}")
    g, _ = _generator_and_directions(n_projections, dim, floor_seed, like)
    out = []
    for _ in range(pairs):
        x1, y1 = dataset.sample_with_labels(n, generator=g)
        x2, y2 = dataset.sample_with_labels(n, generator=g)
        torch.randn(n, dim, generator=g, dtype=dtype)  # the ceiling's draw, as in _draws
        out.append((x1.reshape(n, -1).to(dtype), y1, x2.reshape(n, -1).to(dtype), y2))
    return out


# --------------------------------------------------------------------------- the file


def compute_entry(
    config: FloorConfig,
    *,
    pairs: int | None = None,
    ceiling_pairs: int | None = None,
    n_projections: int | None = None,
    floor_seed: int = 0,
    bandwidths: Sequence[float] = DEFAULT_BANDWIDTHS,
) -> tuple[str, dict[str, Any]]:
    """Compute the file entry ``(key, entry)`` of one configuration, all metrics (``pairs``,
    ``ceiling_pairs`` and ``n_projections`` default to the configuration's and
    :data:`CEILING_REPEATS`)."""
    pairs = config.pairs if pairs is None else pairs
    n_projections = config.n_projections if n_projections is None else n_projections
    ceiling_pairs = min(pairs, CEILING_REPEATS if ceiling_pairs is None else ceiling_pairs)
    scales = _check_bandwidths(bandwidths)
    names = _ALL_METRICS if config.n <= W2_MAX_N else tuple(m for m in _ALL_METRICS if m != "w2")
    like = torch.empty(0, dtype=config.dtype)
    dim = _dim_of(config.dataset)
    key = _file_key(config.dataset, dim, config.n, n_projections, floor_seed, config.dtype)
    if key is None:
        raise ValueError(f"only the toys of gmbook.data can be shipped, got {config.dataset!r}")
    if "w2" in names:
        _pot()
    with ThreadPoolExecutor(max_workers=max(1, torch.get_num_threads())) as pool:
        ref = _resolved(_compute(config.dataset, dim, config.n, pairs, ceiling_pairs, names,
                                 scales, n_projections, floor_seed, like, pool))
    keys = _metric_keys(names, scales)
    entry = {
        "dataset": repr(config.dataset),
        "n": config.n,
        "dim": dim,
        "dtype": str(config.dtype).removeprefix("torch."),
        "n_projections": n_projections,
        "floor_seed": floor_seed,
        "bandwidths": list(scales),
        "pairs": pairs,
        "ceiling_pairs": ceiling_pairs,
        "floor": {k: [r[k] for r in ref.floor] for k in keys},
        "ceiling": {k: [r[k] for r in ref.ceiling] for k in keys},
        "users": list(config.users),
    }
    return key, entry


def _dumps(entries: dict[str, Any]) -> str:
    """JSON with one line per list of values (compact, and diffs stay readable)."""
    lines = ["{", '"about": "Per-pair noise floors and ceilings of gmbook.metrics.scorecard; '
             'regenerate with: python -m gmbook.metrics --write",', '"entries": {']
    items = sorted(entries.items())
    for i, (key, e) in enumerate(items):
        lines.append(f"{json.dumps(key)}: {{")
        meta = [k for k in e if k not in ("floor", "ceiling")]
        for k in meta:
            lines.append(f"  {json.dumps(k)}: {json.dumps(e[k])},")
        for part in ("floor", "ceiling"):
            lines.append(f'  "{part}": {{')
            cols = list(e[part].items())
            for j, (k, v) in enumerate(cols):
                comma = "," if j < len(cols) - 1 else ""
                lines.append(f"    {json.dumps(k)}: {json.dumps(v)}{comma}")
            lines.append("  }," if part == "floor" else "  }")
        lines.append("}," if i < len(items) - 1 else "}")
    lines += ["}", "}"]
    return "\n".join(lines) + "\n"


def write(configs: Sequence[FloorConfig] = CONFIGURATIONS, path: Path = FLOORS_FILE) -> None:
    """Compute every configuration and write the file (replacing its entries)."""
    entries = {}
    for config in configs:
        start = time.perf_counter()
        key, entry = compute_entry(config)
        entries[key] = entry
        print(f"{key}: {entry['pairs']} pairs, {time.perf_counter() - start:.1f} s", flush=True)
    path.write_text(_dumps(entries), encoding="utf-8")
    _shipped.cache_clear()


def check(pairs: int = 3, path: Path = FLOORS_FILE) -> list[str]:
    """Recompute the first ``pairs`` pairs of every shipped entry; return the mismatches."""
    with open(path, encoding="utf-8") as f:
        entries = json.load(f)["entries"]
    import gmbook.data as data

    bad = []
    for key, e in entries.items():
        dataset = eval(e["dataset"], vars(data))  # a repr of a gmbook.data toy
        config = FloorConfig(dataset, e["n"], getattr(torch, e["dtype"]), pairs=pairs)
        _, fresh = compute_entry(config, ceiling_pairs=min(pairs, e["ceiling_pairs"]),
                                 n_projections=e["n_projections"],
                                 floor_seed=e["floor_seed"], bandwidths=e["bandwidths"])
        for part in ("floor", "ceiling"):
            for k, v in fresh[part].items():
                if not np.allclose(v, e[part][k][: len(v)], rtol=1e-6, atol=0):
                    bad.append(f"{key} {part} {k}: shipped {e[part][k][:len(v)]}, now {v}")
    return bad


def main(argv: Sequence[str] | None = None) -> int:
    from gmbook.runtime import threads

    p = argparse.ArgumentParser(prog="python -m gmbook.metrics", description=__doc__
                                .split("\n\n")[0])
    p.add_argument("--write", action="store_true", help="compute and write floors.json")
    p.add_argument("--check", action="store_true",
                   help="recompute the first pairs of every entry and compare")
    p.add_argument("--pairs", type=int, default=3, help="pairs per entry for --check")
    args = p.parse_args(argv)
    if not (args.write or args.check):
        p.error("choose --write or --check")
    with threads():
        if args.write:
            write()
        if args.check:
            bad = check(args.pairs)
            print("\n".join(bad) or f"all entries agree on their first {args.pairs} pairs")
            return 1 if bad else 0
    return 0

