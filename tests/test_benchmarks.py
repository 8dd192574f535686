"""The benchmark runner (``benchmarks/``, run by ``make bench``): registry, baselines, CLI.

The benchmark itself asserts nothing about speed; these tests check that the runner writes
what it promises, that the baselines are the maximum-likelihood fits they claim to be, and
one honest comparison of their held-out likelihoods.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `benchmarks` is a top-level folder, not an installed package
    sys.path.insert(0, str(REPO))

from benchmarks import baselines  # noqa: E402
from benchmarks.registry import (ENTRIES, Entry, Trained, entries_of, load_entries,  # noqa: E402
                                 register)
from benchmarks.run import main, make_generator, to_markdown  # noqa: E402
from gmbook.data import toy  # noqa: E402
from gmbook.metrics import FLOOR_REPEATS  # noqa: E402
from gmbook.sequences import REGIMES, RegimeSwitching  # noqa: E402

BASELINES = ("gaussian", "gaussian_mixture")
RECORD_KEYS = {
    "entry", "family", "chapter", "description", "dataset", "n_train", "train_seconds",
    "nfe", "sample_seconds_per_1000", "sample_seconds_runs", "scorecard", "ratios", "nll",
    "entropy", "kl",
}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One run of the CLI with tiny settings on two moons: (exit status, report, markdown)."""
    out = tmp_path_factory.mktemp("bench")
    state = torch.get_rng_state()
    # Only the baselines: the chapters' entries train for longer than a unit test may.
    status = main(["--datasets", "two_moons", "--entries", *BASELINES, "--n", "200",
                   "--repeats", "2", "--out", str(out)])
    assert torch.equal(torch.get_rng_state(), state), "the runner changed the global RNG"
    report = json.loads((out / "results.json").read_text())
    return status, report, (out / "results.md").read_text()


def _record(report, entry, dataset="two_moons"):
    (rec,) = [r for r in report["results"] if r["entry"] == entry and r["dataset"] == dataset]
    return rec


def test_registry_has_both_baselines_with_unique_names():
    entries = load_entries()
    assert set(BASELINES) <= set(entries)
    assert len(set(entries)) == len(entries)
    for entry in entries.values():
        assert isinstance(entry, Entry)
        assert entry.chapter.startswith("book/") and entry.chapter.endswith(".md")
    with pytest.raises(ValueError, match="already registered"):
        register(Entry(name="gaussian", family="x", chapter="book/x.md",
                       train=lambda ds, g: None))
    with pytest.raises(ValueError, match="track"):
        Entry(name="x", family="x", chapter="book/x.md", train=lambda ds, g: None, track="3d")
    # every entry is on exactly one track; the default track is the 2-D toys
    assert set(entries_of("toys")) | set(entries_of("sequences")) == set(entries)
    assert set(BASELINES) <= set(entries_of("toys"))


def test_register_decorator_returns_the_function():
    def train(dataset, generator):
        return Trained(sample=lambda n, *, generator=None: torch.zeros(n, 2), nfe=0)

    try:
        assert register(name="dummy_for_test", family="x", chapter="book/x.md")(train) is train
        assert ENTRIES["dummy_for_test"].train is train
    finally:
        ENTRIES.pop("dummy_for_test", None)


def test_main_writes_json_and_markdown(tiny_run, capsys):
    status, report, markdown = tiny_run
    assert status == 0
    assert {"metadata", "settings", "results"} <= set(report)
    assert {"date", "torch", "cpu_count", "commit"} <= set(report["metadata"])
    assert report["settings"]["n"] == 200 and report["settings"]["repeats"] == 2
    assert [r["entry"] for r in report["results"]] == list(BASELINES)
    for rec in report["results"]:
        assert RECORD_KEYS <= set(rec), RECORD_KEYS - set(rec)
        assert rec["train_seconds"] > 0 and rec["sample_seconds_per_1000"] > 0
        assert rec["nfe"] == 0
        for value in rec["ratios"].values():
            assert value is not None and math.isfinite(value["ratio"])
            assert math.isfinite(value["se"]) and value["se"] > 0
        # the precise floors: FLOOR_REPEATS pairs, with the scorecard's ratio +- se
        card = rec["scorecard"]
        assert card["floor_repeats"] == report["settings"]["floor_repeats"] == FLOOR_REPEATS
        w2 = next(row for row in card["rows"] if row["metric"] == "w2")
        assert rec["ratios"]["w2"]["se"] == w2["ratio_se"]
        for key in ("nll", "entropy", "kl"):
            assert math.isfinite(rec[key]["mean"]) and rec[key]["se"] > 0
    assert "## two_moons" in markdown
    header = [line for line in markdown.splitlines() if line.startswith("| entry |")]
    assert len(header) == 1 and "W2 ratio" in header[0] and "KL gap" in header[0]
    assert "| gaussian_mixture |" in markdown
    assert f"the floor is the mean of {FLOOR_REPEATS} pairs" in markdown
    # The Markdown is rendered from the JSON alone.
    assert to_markdown(report) == markdown


def test_gaussian_is_fitted_to_the_sample_moments():
    dataset = toy("two_moons")
    model = ENTRIES["gaussian"].train(dataset, torch.Generator().manual_seed(3))
    x = dataset.sample(baselines.N_TRAIN, generator=torch.Generator().manual_seed(3))
    x = x.double().numpy()
    np.testing.assert_allclose(model.means[0].numpy(), x.mean(0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(model.covariances[0].numpy(), np.cov(x.T, bias=True),
                               rtol=1e-12, atol=1e-12)
    assert model.weights.tolist() == [1.0] and model.nfe == 0


def test_mixture_log_prob_and_sampler_are_exact():
    """The torch wrapper's density equals torch.distributions', and its samples' moments."""
    gen = torch.Generator().manual_seed(1)
    model = baselines.GaussianMixtureModel.fit_em(
        toy("eight_gaussians").sample(4000, generator=gen), 3, random_state=0)
    d = torch.distributions
    reference = d.MixtureSameFamily(
        d.Categorical(model.weights), d.MultivariateNormal(model.means, model.covariances))
    x = torch.randn(500, 2, generator=gen, dtype=torch.float64) * 2
    torch.testing.assert_close(model.log_prob(x), reference.log_prob(x), rtol=0, atol=1e-10)
    s = model.sample(200_000, generator=gen).double()
    mean = (model.weights[:, None] * model.means).sum(0)
    torch.testing.assert_close(s.mean(0), mean, rtol=0, atol=0.02)


def test_mixture_beats_gaussian_and_respects_the_entropy_floor(tiny_run):
    """Held-out NLL on two moons: EM mixture < single Gaussian, and NLL >= H(p) - 3 se."""
    _, report, _ = tiny_run
    gaussian, mixture = _record(report, "gaussian"), _record(report, "gaussian_mixture")
    diff_se = math.hypot(gaussian["nll"]["se"], mixture["nll"]["se"])
    assert mixture["nll"]["mean"] < gaussian["nll"]["mean"] - 3 * diff_se
    # NLL - entropy = KL(p || q) >= 0: the paired estimate may not be significantly negative.
    kl = mixture["kl"]
    assert kl["mean"] > -3 * kl["se"]
    entropy = mixture["entropy"]
    assert mixture["nll"]["mean"] > entropy["mean"] - 3 * math.hypot(
        mixture["nll"]["se"], entropy["se"])
    # The entropy is estimated on the same test points, so NLL - entropy is the paired KL.
    for rec in (gaussian, mixture):
        assert rec["nll"]["mean"] - rec["entropy"]["mean"] == pytest.approx(rec["kl"]["mean"])


def test_mixture_samples_look_more_like_the_data(tiny_run):
    """Two moons, n = 200: the Gaussian's W2 ratio exceeds the mixture's by many spreads."""
    _, report, _ = tiny_run
    gaussian, mixture = (
        _record(report, e)["ratios"]["w2"] for e in ("gaussian", "gaussian_mixture"))
    assert gaussian["ratio"] - mixture["ratio"] > 2 * (gaussian["spread"] + mixture["spread"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--entries", "no_such_model"], "unknown entry 'no_such_model'"),
     (["--datasets", "two_moons", "swiss_roll"], "unknown dataset 'swiss_roll'")],
)
def test_unknown_names_exit_with_a_clear_message(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as info:
        main([*argv, "--out", str(tmp_path)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "choose from" in err
    assert not (tmp_path / "results.json").exists()


def test_sampling_only_and_broken_entries(tmp_path, capsys):
    """A model without log_prob gets no NLL; a failing entry is reported, the rest still run."""

    @register(name="data_itself_for_test", family="x", chapter="book/x.md")
    def train_sampler(dataset, generator):
        return Trained(sample=dataset.sample, nfe=3)

    @register(name="broken_for_test", family="x", chapter="book/x.md")
    def train_broken(dataset, generator):
        raise RuntimeError("this entry is broken on purpose")

    try:
        status = main(["--datasets", "eight_gaussians", "--entries", "broken_for_test",
                       "data_itself_for_test", "--n", "100", "--repeats", "2",
                       "--out", str(tmp_path)])
    finally:
        ENTRIES.pop("data_itself_for_test", None)
        ENTRIES.pop("broken_for_test", None)
    assert status == 1
    assert "this entry is broken on purpose" in capsys.readouterr().err
    report = json.loads((tmp_path / "results.json").read_text())
    broken = _record(report, "broken_for_test", "eight_gaussians")
    assert broken["error"] == {"type": "RuntimeError", "message": "this entry is broken on purpose"}
    sampler = _record(report, "data_itself_for_test", "eight_gaussians")
    assert sampler["nfe"] == 3 and sampler["nll"] is None and sampler["kl"] is None
    assert sampler["entropy"] is not None
    markdown = (tmp_path / "results.md").read_text()
    assert "| broken_for_test | failed: RuntimeError |" in markdown
    assert "| data_itself_for_test |" in markdown and "n/a" in markdown


def test_every_entry_runs_end_to_end_on_a_tiny_budget(tmp_path, monkeypatch):
    """Smoke test of every registered entry of the 2-D toys (``make bench`` would otherwise
    break silently on an API change): training capped at 3 optimization steps (3 EM
    iterations, 3 GAN updates), small training sets, 64 scored points, one repeat."""
    from benchmarks import run as run_module

    load_entries()
    _cap_training(monkeypatch)
    entries = entries_of("toys")
    monkeypatch.setattr(run_module, "N_TEST", 256)
    monkeypatch.setattr(run_module, "SAMPLE_SIZE", 64)
    monkeypatch.setattr(run_module, "SAMPLE_RUNS", 1)
    status = main(["--datasets", "two_moons", "--entries", *sorted(entries), "--n", "64",
                   "--repeats", "1", "--out", str(tmp_path)])
    report = json.loads((tmp_path / "results.json").read_text())
    errors = {r["entry"]: r.get("error") for r in report["results"] if r.get("error")}
    assert status == 0 and not errors, f"entries that fail to run: {errors}"
    assert {r["entry"] for r in report["results"]} == set(entries)
    assert "ncsn" in entries, "the score chapter's NCSN is registered"
    assert "gan_r1" in entries, "the GAN chapter's recipe is registered"


def _cap_training(monkeypatch):
    """Cap every registered entry's training: ``fit`` and ``train_gan`` at 3 steps,
    ``fit_em`` at 3 iterations, and small training sets (see ``benchmarks/README.md``)."""
    from gmbook import train as train_module

    real_fit = train_module.fit

    def capped_fit(*args, **kwargs):
        kwargs["steps"] = min(int(kwargs.get("steps", 3)), 3)
        kwargs.pop("warmup", None)
        return real_fit(*args, **kwargs)

    from gmbook import densities as densities_module

    real_em = densities_module.fit_em

    def capped_em(*args, **kwargs):
        return real_em(*args, **{**kwargs, "iterations": 3})

    from gmbook import gans as gans_module

    real_train_gan = gans_module.train_gan

    def capped_train_gan(*args, **kwargs):
        kwargs["steps"] = min(int(kwargs.get("steps", 3)), 3)
        return real_train_gan(*args, **kwargs)

    small = {"N_TRAIN": 512, "N_KDE": 256, "N_VALID": 64, "N_INIT": 1, "GRID": 32}
    entries = load_entries()
    for name in {e.train.__module__ for e in entries.values()}:
        module = sys.modules[name]
        if getattr(module, "fit", None) is real_fit:
            monkeypatch.setattr(module, "fit", capped_fit)
        if getattr(module, "fit_em", None) is real_em:
            monkeypatch.setattr(module, "fit_em", capped_em)
        if getattr(module, "train_gan", None) is real_train_gan:
            monkeypatch.setattr(module, "train_gan", capped_train_gan)
        for constant, value in small.items():
            if isinstance(getattr(module, constant, None), int):
                monkeypatch.setattr(module, constant, value)


# --------------------------------------------------------------------------- sequence track


def _tiny_sequence_track(monkeypatch, *, length=16, n_test=64, n_generated=32):
    from benchmarks import run_sequences

    monkeypatch.setattr(run_sequences, "LENGTH", length)
    monkeypatch.setattr(run_sequences, "N_TEST", n_test)
    monkeypatch.setattr(run_sequences, "N_GENERATED", n_generated)
    monkeypatch.setattr(run_sequences, "WARMUP_SEQUENCES", 2)


def test_every_sequence_entry_runs_end_to_end_on_a_tiny_budget(tmp_path, monkeypatch):
    """Smoke test of every entry of the sequence track: 3 training steps on 512 sequences of
    16 steps, 64 test sequences, 32 generated; the records and the table are complete."""
    load_entries()
    _cap_training(monkeypatch)
    _tiny_sequence_track(monkeypatch)
    entries = entries_of("sequences")
    assert {"continuous_ar", "binned_ar"} <= set(entries)
    for entry in entries.values():
        assert entry.chapter == "book/beyond/sequences.md"
    status = main(["--track", "sequences", "--out", str(tmp_path)])
    report = json.loads((tmp_path / "sequences.json").read_text())
    errors = {r["entry"]: r.get("error") for r in report["results"] if r.get("error")}
    assert status == 0 and not errors, f"entries that fail to run: {errors}"
    assert [r["entry"] for r in report["results"]] == list(entries)
    assert report["settings"]["length"] == 16 and report["settings"]["n_test"] == 64
    for rec in report["results"]:
        assert rec["train_seconds"] > 0 and rec["sample_seconds_per_1000"] > 0
        assert rec["n_generated"] == 32 and rec["n_nonfinite"] == 0
        for key in ("nll", "gap", "samples_exact_nll"):
            assert math.isfinite(rec[key]["mean"]) and rec[key]["se"] > 0
        assert sum(rec["shares"][name]["mean"] for name in REGIMES) == pytest.approx(1)
    markdown = (tmp_path / "sequences.md").read_text()
    assert "## regimes" in markdown and "| exact process (test set) |" in markdown
    assert "| continuous_ar |" in markdown and "| binned_ar |" in markdown
    assert not (tmp_path / "results.json").exists()  # the 2-D track's files are not touched
    from benchmarks.run_sequences import to_markdown as sequences_markdown

    assert sequences_markdown(report) == markdown  # rendered from the JSON alone


def test_sequence_floor_is_the_exact_nll_and_the_gap_is_paired(tmp_path, monkeypatch):
    """The floor is the forward algorithm's NLL per step of the test set ([eq-seq-forward],
    [eq-seq-floor]); the gap is paired. An entry that *is* the process has NLL = floor and
    gap exactly 0; one whose log-density is the exact one minus 0.1 nats per step has gap
    exactly 0.1 with a zero standard error (unpaired, the difference of two means would
    carry the NLL's spread); the process's own samples have the test set's regime shares
    and exact NLL within noise. A broken entry is reported and the others run."""
    process = RegimeSwitching()
    shift = 0.1

    def sampler(n, length, *, generator=None):
        return process.sample(n, length, generator=generator, return_regimes=False)

    @register(name="process_for_test", family="x", chapter="book/x.md", track="sequences")
    def train_exact(proc, length, generator):
        return Trained(sample=sampler, nfe=0, log_prob=proc.log_prob)

    @register(name="shifted_for_test", family="x", chapter="book/x.md", track="sequences")
    def train_shifted(proc, length, generator):
        return Trained(sample=sampler, nfe=0,
                       log_prob=lambda x: proc.log_prob(x) - shift * x.shape[1])

    @register(name="broken_seq_for_test", family="x", chapter="book/x.md", track="sequences")
    def train_broken(proc, length, generator):
        raise RuntimeError("this sequence entry is broken on purpose")

    n_test, length = 400, 24
    _tiny_sequence_track(monkeypatch, length=length, n_test=n_test, n_generated=400)
    try:
        status = main(["--track", "sequences", "--entries", "process_for_test",
                       "broken_seq_for_test", "shifted_for_test", "--seed", "3",
                       "--out", str(tmp_path)])
    finally:
        for name in ("process_for_test", "shifted_for_test", "broken_seq_for_test"):
            ENTRIES.pop(name, None)
    assert status == 1
    report = json.loads((tmp_path / "sequences.json").read_text())
    assert _record(report, "broken_seq_for_test", "regimes")["error"]["type"] == "RuntimeError"

    # the floor: the exact NLL of the test set drawn from the derived generator
    x_test = process.sample(n_test, length, generator=make_generator(3, "regimes", "test"),
                            return_regimes=False)
    exact = process.nll_per_step(x_test)
    floor = report["dataset"]["floor"]
    assert floor["n"] == n_test
    assert floor["mean"] == pytest.approx(float(exact.mean()), rel=1e-12)
    assert floor["se"] == pytest.approx(float(exact.std()) / math.sqrt(n_test), rel=1e-9)

    same, shifted = (_record(report, e, "regimes") for e in ("process_for_test",
                                                               "shifted_for_test"))
    assert same["nll"]["mean"] == pytest.approx(floor["mean"], rel=1e-12)
    assert abs(same["gap"]["mean"]) < 1e-12 and same["gap"]["se"] < 1e-12
    assert shifted["gap"]["mean"] == pytest.approx(shift, abs=1e-9)
    assert shifted["gap"]["se"] < 1e-9 < 0.01 < shifted["nll"]["se"]

    # the process's own samples: regime shares and exact NLL within 4 standard errors
    for name in REGIMES:
        a, b = same["shares"][name], report["dataset"]["shares"][name]
        assert abs(a["mean"] - b["mean"]) < 4 * math.hypot(a["se"], b["se"]), name
    a = same["samples_exact_nll"]
    assert abs(a["mean"] - floor["mean"]) < 4 * math.hypot(a["se"], floor["se"])
    markdown = (tmp_path / "sequences.md").read_text()
    assert "| broken_seq_for_test | failed: RuntimeError |" in markdown


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--track", "sequences", "--datasets", "two_moons"], "--datasets: options of the toys"),
     (["--track", "sequences", "--n", "100"], "--n: options of the toys"),
     (["--track", "sequences", "--entries", "gaussian"], "unknown sequence entry 'gaussian'"),
     (["--entries", "continuous_ar"], "unknown entry 'continuous_ar'")],
)
def test_tracks_keep_their_options_and_entries(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as info:
        main([*argv, "--out", str(tmp_path)])
    assert info.value.code == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
