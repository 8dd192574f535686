"""The execution budget is the authors' gate, not the reader's (book/_ext/gmbook_sphinx.py).

A chapter over ``gmbook_time_budget`` fails a strict build (``GMBOOK_STRICT_BUDGET=1``, set by
``.ci/run`` and ``make book STRICT=1``) and is only reported in a reader's ``make book``.
"""

from __future__ import annotations

import importlib.util
import json
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import pytest

EXT = Path(__file__).resolve().parents[2] / "book" / "_ext" / "gmbook_sphinx.py"


@pytest.fixture(scope="module")
def ext():
    spec = importlib.util.spec_from_file_location("gmbook_sphinx_budget", EXT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _app(tmp_path: Path, seconds: dict[str, float]):
    env = SimpleNamespace(found_docs=set(seconds), nb_metadata=defaultdict(dict))
    for doc, s in seconds.items():
        env.nb_metadata[doc]["exec_data"] = {"runtime": s, "method": "cache", "succeeded": True}
    outdir = tmp_path / "html"
    outdir.mkdir()
    return SimpleNamespace(env=env, outdir=str(outdir),
                           config=SimpleNamespace(gmbook_time_budget=90.0))


def _run(ext, app, monkeypatch, strict: str | None):
    if strict is None:
        monkeypatch.delenv("GMBOOK_STRICT_BUDGET", raising=False)
    else:
        monkeypatch.setenv("GMBOOK_STRICT_BUDGET", strict)
    calls = {"warning": [], "info": []}
    fake = SimpleNamespace(warning=lambda m, *a, **k: calls["warning"].append(m % a if a else m),
                           info=lambda m, *a, **k: calls["info"].append(m % a if a else m))
    monkeypatch.setattr(ext, "logger", fake)
    ext._report_execution(app, None)
    return calls


@pytest.mark.parametrize("strict", [None, "0", "false"])
def test_reader_build_reports_a_slow_chapter_without_failing(ext, tmp_path, monkeypatch, strict):
    app = _app(tmp_path, {"book/fast": 10.0, "book/slow": 120.0})
    calls = _run(ext, app, monkeypatch, strict)
    assert calls["warning"] == [], "a reader's build must not fail on a slow chapter"
    notes = [m for m in calls["info"] if "book/slow" in m and "over the 90 s budget" in m]
    assert notes and "GMBOOK_STRICT_BUDGET=1" in notes[0]
    assert not any("book/fast" in m and "over" in m for m in calls["info"])
    times = json.loads((tmp_path / "execution-times.json").read_text())
    assert times["book/slow"]["seconds"] == 120.0


@pytest.mark.parametrize("strict", ["1", "true"])
def test_strict_build_warns_on_a_slow_chapter(ext, tmp_path, monkeypatch, strict):
    app = _app(tmp_path, {"book/fast": 10.0, "book/slow": 120.0})
    calls = _run(ext, app, monkeypatch, strict)
    assert len(calls["warning"]) == 1 and "book/slow" in calls["warning"][0]


def test_strict_budget_rejects_a_typo(ext, monkeypatch):
    monkeypatch.setenv("GMBOOK_STRICT_BUDGET", "yes please")
    with pytest.raises(ValueError, match="GMBOOK_STRICT_BUDGET"):
        ext.strict_budget()


def test_ci_and_makefile_build_strictly():
    root = EXT.parents[2]
    assert "make book STRICT=1" in (root / ".ci" / "run").read_text()
    assert "GMBOOK_STRICT_BUDGET=$(STRICT)" in (root / "Makefile").read_text()
