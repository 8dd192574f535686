r"""The benchmark runner: train every entry on every data set, measure, write JSON and Markdown.

For each (entry, data set) pair it records

* the wall-clock training time (the entry's ``train``, which draws its own training set);
* the sampling time per 1000 samples (median of :data:`SAMPLE_RUNS` timed runs, after one
  warm-up run) and the network evaluations per sample (NFE);
* the scorecard of :func:`gmbook.metrics.scorecard`: each sample-quality metric (exact
  W2, energy distance, sliced W2, MMD²) between model and data samples divided by the same
  metric between two independent data samples of the same size (the noise floor, the
  mean of :data:`gmbook.metrics.FLOOR_REPEATS` pairs, shipped precomputed for two moons
  and eight Gaussians at ``n = 2000``), with the standard error of the ratio, which
  includes the floor's own; 1 is as good as ``n`` points can tell. The table shows W2,
  energy and MMD²; the JSON keeps the whole scorecard;
* where the model has an exact ``log_prob``: the held-out negative log-likelihood on
  :data:`N_TEST` fresh test points with its standard error, and the paired estimate of
  :math:`\mathrm{KL}(p \,\|\, q) = \mathbb{E}_p[\log p - \log q]` on the same points, next
  to the data set's entropy :math:`H(p)`, the floor of the NLL (NLL = entropy + KL).

Every random number comes from ``--seed`` through explicit generators derived from
``(seed, entry, data set, purpose)``, so one pair's numbers do not depend on which other
pairs run; the test points depend only on ``(seed, data set)``, so every entry is scored
on the same ones. An entry's own use of the global RNG (e.g. network initialization)
happens inside ``torch.random.fork_rng`` seeded the same way: the caller's global random
state is left untouched.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from benchmarks.registry import TRACKS, Entry, TrainedModel, entries_of, load_entries
from gmbook import metrics
from gmbook.data import TOYS, Toy2D, toy

__all__ = ["DEFAULT_DATASETS", "N_TEST", "SAMPLE_RUNS", "benchmark", "main", "to_markdown"]

DEFAULT_DATASETS = ("two_moons", "eight_gaussians")
N_TEST = 20_000
"""Held-out test points per data set for the NLL, the entropy and the KL."""
SAMPLE_RUNS = 5
"""Timed runs of ``sample(1000)``; the median is reported."""
SAMPLE_SIZE = 1000
DEFAULT_OUT = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent
# The scorecard metrics reported in the table: (metric name in the scorecard, column title).
COLUMNS = (("w2", "W2"), ("energy", "energy"), ("mmd", "MMD²"))


# --------------------------------------------------------------------------- seeding


def derive_seed(seed: int, *parts: str) -> int:
    r"""A 63-bit seed determined by ``seed`` and the labels ``parts`` (stable across runs)."""
    key = "/".join([str(seed), *parts]).encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") >> 1


def make_generator(seed: int, *parts: str) -> torch.Generator:
    r"""A CPU generator seeded with :func:`derive_seed`."""
    return torch.Generator().manual_seed(derive_seed(seed, *parts))


# --------------------------------------------------------------------------- measuring


def _estimate(e: metrics.Estimate | None) -> dict[str, float] | None:
    if e is None:
        return None
    return {"mean": float(e.mean), "se": float(e.se), "n": int(e.n)}


def _log_prob_of(model: TrainedModel) -> Callable[[Tensor], Tensor] | None:
    log_prob = getattr(model, "log_prob", None)
    return log_prob if callable(log_prob) else None


def _has_log_prob(dataset: Toy2D, x: Tensor) -> bool:
    try:
        dataset.log_prob(x[:2])
    except NotImplementedError:
        return False
    return True


@dataclasses.dataclass
class Floor:
    r"""What a data set contributes to every entry's row: test points and the entropy."""

    x_test: Tensor
    entropy: metrics.Estimate | None


def dataset_floor(dataset: Toy2D, name: str, seed: int) -> Floor:
    r"""Draw the :data:`N_TEST` test points of a data set and estimate its entropy on them.

    The entropy :math:`H(p)` is the NLL of the true density itself, here
    :func:`gmbook.metrics.nll` of ``dataset`` on the very test points every entry's NLL
    uses: then NLL minus entropy is exactly the paired KL estimate. ``None`` for a toy
    without an exact ``log_prob`` (the spirals).
    """
    x_test = dataset.sample(N_TEST, generator=make_generator(seed, name, "test"))
    entropy = metrics.nll(dataset, x_test) if _has_log_prob(dataset, x_test) else None
    return Floor(x_test=x_test, entropy=entropy)


@torch.no_grad()  # as in the scorecard
def _time_sampling(model: TrainedModel, generator: torch.Generator) -> list[float]:
    model.sample(SAMPLE_SIZE, generator=generator)  # warm-up (lazy init, caches, JIT)
    runs = []
    for _ in range(SAMPLE_RUNS):
        start = time.perf_counter()
        x = model.sample(SAMPLE_SIZE, generator=generator)
        runs.append(time.perf_counter() - start)
    if not isinstance(x, Tensor) or tuple(x.shape) != (SAMPLE_SIZE, 2):
        raise ValueError(
            f"sample({SAMPLE_SIZE}) must return a tensor of shape ({SAMPLE_SIZE}, 2), "
            f"got {type(x).__name__} {tuple(getattr(x, 'shape', ()))}"
        )
    return runs


def ratios(card: metrics.Scorecard) -> dict[str, dict[str, float] | None]:
    r"""Ratio model/floor of each metric of :data:`COLUMNS` in a scorecard, or ``None``.

    ``ratio`` is the mean over repeats of the per-repeat ratio, ``se`` its standard error
    (delta method, including the floor's uncertainty), ``spread`` the standard deviation of
    the per-repeat ratio (:class:`gmbook.metrics.ScorecardRow`).
    """
    out: dict[str, dict[str, float] | None] = {}
    rows = {row.metric: row for row in card.rows}
    for key, _ in COLUMNS:
        row = rows.get(key)
        out[key] = (None if row is None
                    else {"ratio": float(row.ratio_mean), "se": float(row.ratio_se),
                          "spread": float(row.ratio_std)})
    return out


def benchmark(
    entry: Entry, name: str, *, n: int, repeats: int, seed: int, floor: Floor
) -> dict[str, Any]:
    r"""Train, time and score one entry on one data set; return its JSON record."""
    dataset = toy(name)
    record: dict[str, Any] = {
        "entry": entry.name,
        "family": entry.family,
        "chapter": entry.chapter,
        "description": entry.description,
        "dataset": name,
    }
    with torch.random.fork_rng():
        torch.manual_seed(derive_seed(seed, entry.name, name, "global"))
        start = time.perf_counter()
        model = entry.train(dataset, make_generator(seed, entry.name, name, "train"))
        record["train_seconds"] = time.perf_counter() - start
        nfe = getattr(model, "nfe", None)
        if isinstance(nfe, bool) or not isinstance(nfe, int) or nfe < 0:
            raise TypeError(f"the trained model must have an int nfe >= 0, got {nfe!r}")
        record["nfe"] = nfe
        record["n_train"] = getattr(model, "n_train", None)

        runs = _time_sampling(model, make_generator(seed, entry.name, name, "timing"))
        record["sample_seconds_per_1000"] = statistics.median(runs)
        record["sample_seconds_runs"] = runs

        # Every entry is compared with the same floors (the scorecard's private generator,
        # default floor_seed; shipped for the default data sets at n = 2000, computed once
        # and cached otherwise); they do not depend on --seed, so every run shares them.
        card = metrics.scorecard(
            model, dataset, n=n, repeats=repeats,
            generator=make_generator(seed, entry.name, name, "scorecard"),
        )
        record["scorecard"] = card.to_dict()
        record["ratios"] = ratios(card)

        log_q = _log_prob_of(model)
        record["nll"] = None if log_q is None else _estimate(metrics.nll(log_q, floor.x_test))
        record["entropy"] = _estimate(floor.entropy)
        record["kl"] = None
        if log_q is not None and floor.entropy is not None:
            record["kl"] = _estimate(metrics.paired_kl(log_q, dataset.log_prob, floor.x_test))
    return record


# --------------------------------------------------------------------------- reporting


def _git_commit() -> dict[str, Any]:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO, capture_output=True, text=True, timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    if head.returncode != 0:
        return {"commit": None, "dirty": None}
    return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


def metadata() -> dict[str, Any]:
    r"""Where and when the benchmark ran: date, versions, CPUs, git commit."""
    import numpy
    import sklearn

    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "sklearn": sklearn.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        **_git_commit(),
    }


def json_safe(obj: Any) -> Any:
    r"""``obj`` with every non-finite float spelled ``"inf"``, ``"-inf"`` or ``"nan"``.

    An infinite NLL (a test point outside the model's support) is a result worth keeping;
    strict JSON has no literal for it.
    """
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def _pm(value: float | str, spread: float | str) -> str:
    r"""``value ± spread``, with as many decimals as two significant digits of the spread."""
    value, spread = float(value), float(spread)  # also reads json_safe's "inf" and "nan"
    if not (math.isfinite(value) and math.isfinite(spread)):
        return f"{value:.3g} ± {spread:.3g}"
    decimals = 3 if spread <= 0 else min(4, max(0, 1 - math.floor(math.log10(spread))))
    return f"{value:.{decimals}f} ± {spread:.{decimals}f}"


def _seconds(s: float) -> str:
    return f"{s:.3g}"


def to_markdown(report: dict[str, Any]) -> str:
    r"""The Markdown tables of a report (one per data set), with a header and a legend."""
    meta, settings = report["metadata"], report["settings"]
    commit = meta.get("commit")
    commit = "unknown" if commit is None else commit[:10] + (" (dirty)" if meta["dirty"] else "")
    lines = [
        "# gmbook benchmark",
        "",
        f"{meta['date']}, commit {commit}, torch {meta['torch']}, {meta['cpu_count']} CPUs "
        f"({meta['torch_threads']} torch threads), {meta['platform']}. "
        f"Scorecard on n = {settings['n']} points, {settings['repeats']} repeats; "
        f"NLL on {settings['n_test']} held-out points; seed {settings['seed']}.",
        "",
        "Ratios are a metric between model and data samples over the same metric between two "
        "independent data samples of the same size (1 = at the noise floor; the floor is the "
        f"mean of {report['settings'].get('floor_repeats', '?')} pairs), mean over repeats ± "
        "standard error, which includes the floor's own; W2 is exact, energy and MMD² "
        "(kernel mixture) are "
        "V-statistics. NLL and entropy are in nats per point ± standard error; the KL gap is "
        "the paired estimate of KL(p || q) = NLL - entropy. Timings depend on the machine.",
    ]
    columns = ["entry", "train s", "sample s/1000", "NFE"]
    columns += [f"{title} ratio" for _, title in COLUMNS]
    columns += ["NLL", "entropy floor", "KL gap"]
    for name in settings["datasets"]:
        lines += ["", f"## {name}", "", "| " + " | ".join(columns) + " |",
                  "|" + "|".join(["---"] + ["---:"] * (len(columns) - 1)) + "|"]
        for rec in report["results"]:
            if rec["dataset"] != name:
                continue
            if "error" in rec:
                cells = [rec["entry"], f"failed: {rec['error']['type']}"]
                cells += [""] * (len(columns) - len(cells))
            else:
                cells = [rec["entry"], _seconds(rec["train_seconds"]),
                         _seconds(rec["sample_seconds_per_1000"]), str(rec["nfe"])]
                for key, _ in COLUMNS:
                    r = rec["ratios"][key]
                    cells.append("n/a" if r is None else _pm(r["ratio"], r["se"]))
                for key in ("nll", "entropy", "kl"):
                    e = rec[key]
                    cells.append("n/a" if e is None else _pm(e["mean"], e["se"]))
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- CLI


def _parser(entries: Sequence[str], sequence_entries: Sequence[str]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Train every registered model family on 2-D toys and record training "
        "time, sampling time, NFE, scorecard ratios and held-out NLL "
        "(JSON and Markdown). A benchmark, not a test: timings vary by machine. "
        "With --track sequences: the sequence models on the regime-switching process, "
        "NLL per step against its exact floor (see benchmarks/README.md).",
    )
    p.add_argument("--track", choices=TRACKS, default="toys",
                   help="toys: the 2-D toys (default); sequences: the data set 'regimes' "
                   "(gmbook.sequences.RegimeSwitching, 64 steps per sequence), whose floor is "
                   "the exact NLL by the forward algorithm, written to sequences.json and "
                   f"sequences.md (entries: {' '.join(sequence_entries)}; --datasets, --n and "
                   "--repeats belong to the toys)")
    p.add_argument("--datasets", nargs="+", default=None, metavar="NAME",
                   help=f"2-D toys (default: {' '.join(DEFAULT_DATASETS)}; "
                   f"choices: {' '.join(TOYS)})")
    p.add_argument("--entries", nargs="+", default=None, metavar="NAME",
                   help="entries to run (default: all of the track; choices on the toys: "
                   f"{' '.join(entries)})")
    p.add_argument("--n", type=int, default=None,
                   help="scorecard sample size (default 2000)")
    p.add_argument("--repeats", type=int, default=None,
                   help="scorecard repeats, for the spreads (default 5)")
    p.add_argument("--seed", type=int, default=0, help="the one seed of everything (default 0)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help="output folder for results.json and results.md, or sequences.json "
                   "and sequences.md (default: benchmarks/results)")
    return p


def _unknown(parser: argparse.ArgumentParser, kind: str, given: Sequence[str],
             known: Sequence[str]) -> None:
    bad = [g for g in given if g not in known]
    if bad:
        parser.error(f"unknown {kind} {', '.join(map(repr, bad))}; choose from {', '.join(known)}")


def run_entry(entry: Entry, dataset: str,
              run: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], bool]:
    """``(record, failed)`` of one entry on one data set: ``run()``'s record, or, if it
    raises, the traceback printed and an error record (one broken entry must not hide the
    others' numbers). Both tracks use it."""
    print(f"[bench] {dataset} / {entry.name} ...", file=sys.stderr, flush=True)
    try:
        return run(), False
    except Exception as exc:
        traceback.print_exc()
        return {"entry": entry.name, "family": entry.family, "chapter": entry.chapter,
                "description": entry.description, "dataset": dataset,
                "error": {"type": type(exc).__name__, "message": str(exc)}}, True


def main(argv: Sequence[str] | None = None) -> int:
    r"""Run the benchmark from the command line; return the exit status.

    Exit status 0 when every (entry, data set) pair ran, 1 when one failed (its error is
    printed and recorded; the others still run), 2 for a bad argument. ``--track
    sequences`` runs :func:`benchmarks.run_sequences.run_track` instead.
    """
    load_entries()
    registry, sequences = entries_of("toys"), entries_of("sequences")
    parser = _parser(list(registry), list(sequences))
    args = parser.parse_args(argv)
    if args.track == "sequences":
        given = [f"--{k}" for k in ("datasets", "n", "repeats") if getattr(args, k) is not None]
        if given:
            parser.error(f"{', '.join(given)}: options of the toys track, not of --track "
                         "sequences (its data set is 'regimes')")
        entry_names = list(sequences) if args.entries is None else args.entries
        _unknown(parser, "sequence entry", entry_names, list(sequences))
        from benchmarks.run_sequences import run_track

        return run_track(list(dict.fromkeys(entry_names)), seed=args.seed, out=args.out)
    args.datasets = list(DEFAULT_DATASETS) if args.datasets is None else args.datasets
    args.n = 2000 if args.n is None else args.n
    args.repeats = 5 if args.repeats is None else args.repeats
    entry_names = list(registry) if args.entries is None else args.entries
    _unknown(parser, "entry", entry_names, list(registry))
    _unknown(parser, "dataset", args.datasets, list(TOYS))
    if args.n < 2:
        parser.error(f"--n must be >= 2, got {args.n}")
    if args.n > metrics.W2_MAX_N:
        parser.error(f"--n must be <= {metrics.W2_MAX_N} (the exact W2 of the scorecard)")
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    entry_names = list(dict.fromkeys(entry_names))
    datasets = list(dict.fromkeys(args.datasets))

    start = time.perf_counter()
    meta = metadata()
    results, failed = [], False
    for name in datasets:
        floor = dataset_floor(toy(name), name, args.seed)
        for entry_name in entry_names:
            entry = registry[entry_name]
            rec, broke = run_entry(entry, name, lambda: benchmark(
                entry, name, n=args.n, repeats=args.repeats, seed=args.seed, floor=floor))
            failed |= broke
            results.append(rec)
    meta["wall_seconds"] = time.perf_counter() - start
    report = json_safe({
        "metadata": meta,
        "settings": {"datasets": datasets, "entries": entry_names, "n": args.n,
                     "repeats": args.repeats, "floor_repeats": metrics.FLOOR_REPEATS,
                     "seed": args.seed, "n_test": N_TEST,
                     "sample_size": SAMPLE_SIZE, "sample_runs": SAMPLE_RUNS},
        "results": results,
    })
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    markdown = to_markdown(report)
    (args.out / "results.md").write_text(markdown)
    print(markdown)
    print(f"[bench] {meta['wall_seconds']:.1f} s; wrote {args.out / 'results.json'} and "
          f"{args.out / 'results.md'}", file=sys.stderr)
    return 1 if failed else 0
