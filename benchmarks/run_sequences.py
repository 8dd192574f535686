r"""The benchmark's sequence track: the sequence models of ``book/beyond/sequences.md`` on the
regime-switching process :class:`gmbook.sequences.RegimeSwitching` (defaults), against its
exact likelihood.

The data set ``regimes``: sequences of :data:`LENGTH` steps of the process. Its test set,
:data:`N_TEST` sequences drawn once from a generator derived from ``(seed, "regimes",
"test")``, is shared by every entry. Its **floor** is the exact NLL per step of those very
sequences by the forward algorithm (:meth:`~gmbook.sequences.RegimeSwitching.nll_per_step`,
eqs. ``eq-seq-forward`` and ``eq-seq-floor``), mean ± standard error over the sequences.

For each entry (``track="sequences"`` in :mod:`benchmarks.registry`) it records

* the wall-clock and CPU seconds of the entry's ``train`` (which draws its own training
  sequences);
* the seconds to draw :data:`N_GENERATED` sequences, one timed run after a warm-up of
  :data:`WARMUP_SEQUENCES`, per 1000 sequences;
* where the model has a ``log_prob``: its NLL per step on the test set ± standard error,
  and the **paired gap** to the floor, the mean over test sequences of (model NLL minus
  exact NLL) per step ± its standard error, an estimate of
  :math:`\mathrm{KL}(p \,\|\, p_\theta) / T`;
* the exact NLL per step of the generated sequences under the true process (on the test
  set it is the floor; a model whose samples are atypical of the process scores higher:
  :math:`\mathbb E_{q}[-\log p] / T = (H(q) + \mathrm{KL}(q \,\|\, p)) / T`);
* the share of generated steps in each regime by the exact posterior
  (:meth:`~gmbook.sequences.RegimeSwitching.decode_regimes`: the most probable regime of
  every step), mean over sequences ± standard error, next to the test set's shares by the
  same rule (and, in the JSON, the test set's true regime shares).

Seeding follows :mod:`benchmarks.run`: every generator derives from ``(seed, entry,
"regimes", purpose)`` and the entry's use of the global RNG is forked and seeded. The
runner asserts nothing: an entry that fails is reported and the others run.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from benchmarks.registry import Entry, TrainedModel, entries_of
from benchmarks.run import (_pm, _seconds, derive_seed, json_safe, make_generator, metadata,
                            run_entry)
from gmbook.sequences import REGIMES, RegimeSwitching

__all__ = ["DATASET", "LENGTH", "N_GENERATED", "N_TEST", "benchmark_sequences",
           "regimes_floor", "run_track", "to_markdown"]

DATASET = "regimes"
"""The sequence track's data set: :class:`gmbook.sequences.RegimeSwitching` with defaults."""
LENGTH = 64
"""Steps per sequence."""
N_TEST = 2000
"""Test sequences: the floor, every entry's NLL and the test set's regime shares."""
N_GENERATED = 1000
"""Generated sequences per entry: timed, and decoded for the regime shares."""
WARMUP_SEQUENCES = 8
"""Sequences drawn once before the timed run (lazy initialisation, caches)."""
CHUNK = 500
"""Sequences per batch when evaluating a ``log_prob`` (bounds the attention's memory)."""
OUT_NAME = "sequences"
"""The track writes ``sequences.json`` and ``sequences.md`` into ``--out``."""


def _mean_se(v: Tensor) -> dict[str, float]:
    v = v.double()
    n = v.numel()
    se = float(v.std()) / math.sqrt(n) if n > 1 else math.nan
    return {"mean": float(v.mean()), "se": se, "n": n}


def regime_shares(process: RegimeSwitching, regimes: Tensor) -> dict[str, dict[str, float]]:
    r"""The share of steps in each regime, per sequence of ``regimes`` ``(B, T)``, as mean
    ± standard error over the sequences, by regime name (:data:`~gmbook.sequences.REGIMES`)."""
    onehot = torch.nn.functional.one_hot(regimes, process.regimes).double()  # (B, T, K)
    per_seq = onehot.mean(1)  # (B, K)
    names = REGIMES if process.regimes == len(REGIMES) else [str(k) for k in
                                                             range(process.regimes)]
    return {name: _mean_se(per_seq[:, k]) for k, name in enumerate(names)}


class Floor:
    r"""What the data set gives every entry's row: the test sequences, their exact NLL per
    step (``exact``, float64 ``(N_TEST,)``), its mean ± standard error (``floor``) and the
    regime shares of the test set."""

    def __init__(self, process: RegimeSwitching, x_test: Tensor, s_test: Tensor) -> None:
        self.x_test, self.s_test = x_test, s_test
        self.exact = process.nll_per_step(x_test)
        self.floor = _mean_se(self.exact)
        self.shares = regime_shares(process, process.decode_regimes(x_test))
        self.true_shares = regime_shares(process, s_test)


def regimes_floor(seed: int) -> Floor:
    r"""The test set of the ``regimes`` data set for ``seed`` and its exact floor."""
    process = RegimeSwitching()
    x, s = process.sample(N_TEST, LENGTH, generator=make_generator(seed, DATASET, "test"))
    return Floor(process, x, s)


@torch.no_grad()
def _nll_per_step(log_prob: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    out = [log_prob(x[i:i + CHUNK]).double() for i in range(0, len(x), CHUNK)]
    lp = torch.cat(out)
    if lp.shape != (len(x),):
        raise ValueError(f"log_prob of {len(x)} sequences must have shape ({len(x)},), "
                         f"got {tuple(lp.shape)}")
    return -lp / x.shape[1]


@torch.no_grad()
def _generate(model: TrainedModel, generator: torch.Generator) -> tuple[Tensor, float]:
    model.sample(WARMUP_SEQUENCES, LENGTH, generator=generator)
    start = time.perf_counter()
    x = model.sample(N_GENERATED, LENGTH, generator=generator)
    seconds = time.perf_counter() - start
    if not isinstance(x, Tensor) or tuple(x.shape) != (N_GENERATED, LENGTH):
        raise ValueError(
            f"sample({N_GENERATED}, {LENGTH}) must return a tensor of shape "
            f"({N_GENERATED}, {LENGTH}), got {type(x).__name__} "
            f"{tuple(getattr(x, 'shape', ()))}")
    return x, seconds


def benchmark_sequences(entry: Entry, *, seed: int, floor: Floor) -> dict[str, Any]:
    r"""Train, time and score one sequence entry; return its JSON record."""
    process = RegimeSwitching()
    record: dict[str, Any] = {
        "entry": entry.name, "family": entry.family, "chapter": entry.chapter,
        "description": entry.description, "dataset": DATASET,
    }
    with torch.random.fork_rng():
        torch.manual_seed(derive_seed(seed, entry.name, DATASET, "global"))
        start, cpu = time.perf_counter(), time.process_time()
        model = entry.train(process, LENGTH, make_generator(seed, entry.name, DATASET, "train"))
        record["train_seconds"] = time.perf_counter() - start
        record["train_cpu_seconds"] = time.process_time() - cpu
        record["nfe"] = getattr(model, "nfe", None)
        record["n_train"] = getattr(model, "n_train", None)

        cpu = time.process_time()
        x, seconds = _generate(model, make_generator(seed, entry.name, DATASET, "sample"))
        record["sample_cpu_seconds_per_1000"] = (time.process_time() - cpu) * 1000 / N_GENERATED
        record["sample_seconds_per_1000"] = seconds * 1000 / N_GENERATED
        finite = torch.isfinite(x).all(1)
        record["n_generated"] = N_GENERATED
        record["n_nonfinite"] = int((~finite).sum())
        x = x[finite]
        if len(x):
            record["samples_exact_nll"] = _mean_se(process.nll_per_step(x))
            record["shares"] = regime_shares(process, process.decode_regimes(x))
        else:
            record["samples_exact_nll"] = record["shares"] = None

        log_q = getattr(model, "log_prob", None)
        record["floor"] = floor.floor
        record["nll"] = record["gap"] = None
        if callable(log_q):
            nll = _nll_per_step(log_q, floor.x_test)
            record["nll"] = _mean_se(nll)
            record["gap"] = _mean_se(nll - floor.exact)  # paired: same test sequences
    return record


# --------------------------------------------------------------------------- reporting


def _shares_cells(shares: dict[str, dict[str, float]] | None) -> list[str]:
    if shares is None:
        return ["n/a"] * len(REGIMES)
    return [_pm(shares[name]["mean"], shares[name]["se"]) for name in REGIMES]


def to_markdown(report: dict[str, Any]) -> str:
    r"""The Markdown table of a sequence-track report, with a header and a legend."""
    meta, settings = report["metadata"], report["settings"]
    commit = meta.get("commit")
    commit = "unknown" if commit is None else commit[:10] + (" (dirty)" if meta["dirty"] else "")
    data = report["dataset"]
    lines = [
        "# gmbook benchmark: sequences",
        "",
        f"{meta['date']}, commit {commit}, torch {meta['torch']}, {meta['cpu_count']} CPUs "
        f"({meta['torch_threads']} torch threads), {meta['platform']}. Data set "
        f"`{settings['dataset']}`: gmbook.sequences.RegimeSwitching() (defaults), "
        f"{settings['length']} steps per sequence; {settings['n_test']} test sequences; "
        f"{settings['n_generated']} generated sequences per entry; seed {settings['seed']}.",
        "",
        "NLL in nats per step on the test sequences ± standard error over sequences. The "
        "floor is the exact NLL of the same sequences by the forward algorithm; the gap is "
        "paired (model minus exact, sequence by sequence): an estimate of KL(p || model) / T. "
        "\"Samples' exact NLL\" is the true process's NLL per step of the generated sequences "
        "(of the test set in the first row). Regime shares: the share of steps whose most "
        "probable regime under the exact posterior is that regime, mean over sequences ± "
        "standard error. Timings depend on the machine and its load; CPU seconds less so.",
    ]
    columns = ["entry", "train s", "train CPU s", "sample s/1000", "NLL/step", "gap to floor",
               "samples' exact NLL", *(f"{name} share" for name in REGIMES)]
    lines += ["", f"## {settings['dataset']}", "", "| " + " | ".join(columns) + " |",
              "|" + "|".join(["---"] + ["---:"] * (len(columns) - 1)) + "|"]
    floor = data["floor"]
    cells = ["exact process (test set)", "", "", "", _pm(floor["mean"], floor["se"]), "0",
             _pm(floor["mean"], floor["se"]), *_shares_cells(data["shares"])]
    lines.append("| " + " | ".join(cells) + " |")
    for rec in report["results"]:
        if "error" in rec:
            cells = [rec["entry"], f"failed: {rec['error']['type']}"]
            cells += [""] * (len(columns) - len(cells))
        else:
            cells = [rec["entry"], _seconds(rec["train_seconds"]),
                     _seconds(rec["train_cpu_seconds"]),
                     _seconds(rec["sample_seconds_per_1000"])]
            for key in ("nll", "gap", "samples_exact_nll"):
                e = rec[key]
                cells.append("n/a" if e is None else _pm(e["mean"], e["se"]))
            cells += _shares_cells(rec["shares"])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run_track(entry_names: Sequence[str], *, seed: int, out: Path) -> int:
    r"""Run the sequence track for ``entry_names`` (registered with ``track="sequences"``),
    write ``sequences.json`` and ``sequences.md`` into ``out``, print the table; return the
    exit status (0, or 1 if an entry failed: its traceback is printed, the others run)."""
    registry = entries_of("sequences")
    start = time.perf_counter()
    meta = metadata()
    floor = regimes_floor(seed)
    results, failed = [], False
    for name in entry_names:
        entry = registry[name]
        rec, broke = run_entry(entry, DATASET, lambda: benchmark_sequences(
            entry, seed=seed, floor=floor))
        failed |= broke
        results.append(rec)
    meta["wall_seconds"] = time.perf_counter() - start
    report = json_safe({
        "metadata": meta,
        "settings": {"track": "sequences", "dataset": DATASET, "entries": list(entry_names),
                     "seed": seed, "length": LENGTH, "n_test": N_TEST,
                     "n_generated": N_GENERATED},
        "dataset": {"floor": floor.floor, "shares": floor.shares,
                    "true_shares": floor.true_shares},
        "results": results,
    })
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / f"{OUT_NAME}.json", out / f"{OUT_NAME}.md"
    json_path.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    markdown = to_markdown(report)
    md_path.write_text(markdown)
    print(markdown)
    print(f"[bench] {meta['wall_seconds']:.1f} s; wrote {json_path} and {md_path}",
          file=sys.stderr)
    return 1 if failed else 0
