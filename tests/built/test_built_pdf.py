"""Checks of the built PDF (``<built>/latex``): content, no litter, no broken references.

Run after ``make pdf``: ``pytest tests/built --built-book=_build``.
"""

from __future__ import annotations

import base64
import hashlib
import re
import shutil
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest

# The source readers (what a chapter is, the repository URL) are shared with tests/book.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "book"))
from bookutils import ROOT, chapter, chapter_ids  # noqa: E402
from test_built_html import player_outputs  # noqa: E402

# Every test needs --built-book (fixture in tests/conftest.py), else it is skipped.
pytestmark = pytest.mark.usefixtures("built")

CHAPTERS = chapter_ids()
NAME = "gmbook"
LITTER = ["IPython.core.display", "interactive(children", "Output()", "<Figure size"]
MUST_CONTAIN = ["Bibliography", "Theorem", "Proof", "Exercise"]


def _latex(built: Path) -> Path:
    return built / "latex"


def _pdf(built: Path) -> Path:
    path = _latex(built) / f"{NAME}.pdf"
    assert path.is_file(), f"{path} was not built (make pdf)"
    return path


@lru_cache(maxsize=None)
def _pdf_text(pdf: Path) -> str:
    out = subprocess.run(["pdftotext", "-enc", "UTF-8", str(pdf), "-"], capture_output=True,
                         text=True, check=True, timeout=120).stdout
    return re.sub(r"\s+", " ", out)


def _text_or_skip(built: Path) -> str:
    pdf = _pdf(built)
    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext (poppler-utils) is not installed")
    return _pdf_text(pdf)


def _plain(title: str) -> str:
    """A Markdown heading as it reads in the PDF: no markup, single spaces."""
    return re.sub(r"\s+", " ", re.sub(r"[`*_$]", "", title)).strip()


def test_pdf_exists(built):
    assert _pdf(built).stat().st_size > 10_000, "the PDF is suspiciously small"


def test_pdf_has_chapters_and_apparatus(built):
    """Every chapter title, the bibliography, theorems, proofs and exercises are in it."""
    text = _text_or_skip(built)
    missing = [f"chapter {doc!r} ({_plain(chapter(doc).title)!r})" for doc in CHAPTERS
               if _plain(chapter(doc).title).lower() not in text.lower()]
    missing += [word for word in MUST_CONTAIN if word not in text]
    assert not missing, f"missing from the PDF text: {missing}"


def _squash(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


@lru_cache(maxsize=None)
def _package_sources() -> str:
    """All of ``code/gmbook``, squashed: its docstrings are printed in the API reference."""
    return _squash("".join(p.read_text() for p in sorted((ROOT / "code").rglob("*.py"))))


def test_pdf_has_no_litter(built):
    """Widgets and display objects never print as their text repr in the PDF.

    A mention quoted from the package's docstrings (the API reference explains what is
    avoided) is not an output and is allowed.
    """
    text = _text_or_skip(built)
    found = []
    for needle in LITTER:
        for m in re.finditer(re.escape(needle), text):
            context = text[max(0, m.start() - 40):m.end() + 10]
            if _squash(context) not in _package_sources():
                found.append(context)
    assert not found, f"text reprs in the PDF (give the output a PNG): {found}"


# --------------------------------------------------------------------------- references


def _strip_code(tex: str) -> str:
    """Remove inline code and verbatim blocks, where ``??`` may be legitimate."""
    tex = re.sub(r"\\begin\{sphinxVerbatim\}.*?\\end\{sphinxVerbatim\}", "", tex, flags=re.S)
    return re.sub(r"\\sphinx(code|upquote|texttt)\{(?:[^{}]|\{[^{}]*\})*\}", "", tex)


def test_tex_has_no_unresolved_references(built):
    """No ``??`` in the LaTeX source outside code (an unresolved reference)."""
    tex_path = _latex(built) / f"{NAME}.tex"
    assert tex_path.is_file(), f"{tex_path} was not written"
    tex = tex_path.read_text(encoding="utf-8")
    assert r"\sphinxupquote{??}" not in tex, "unresolved references (??) in the .tex"
    body = _strip_code(tex)
    hits = [body[max(0, m.start() - 60):m.end() + 20] for m in re.finditer(r"\?\?", body)]
    assert not hits, f"'??' outside code in {tex_path.name}: {hits[:5]}"


def test_latex_log_has_no_undefined_references(built):
    """The last LaTeX run resolved every reference and citation."""
    log_path = _latex(built) / f"{NAME}.log"
    assert log_path.is_file(), f"{log_path} is missing"
    log = log_path.read_text(encoding="utf-8", errors="replace")
    patterns = [r"There were undefined references", r"Reference `[^']*' on page \d+ undefined",
                r"Citation `[^']*'.* undefined", r"There were multiply-defined labels"]
    found = [m.group(0) for p in patterns for m in re.finditer(p, log)]
    assert not found, f"{log_path.name}: {sorted(set(found))[:10]}"


# --------------------------------------------------------------------------- interactive figures


@pytest.mark.parametrize("doc", CHAPTERS)
def test_interactive_figures_are_stills(built, doc):
    """Every interactive figure (an output with the player mime bundle) is in the PDF as its
    still PNG: myst-nb names an image output by the SHA-256 of its bytes."""
    tex_path = _latex(built) / f"{NAME}.tex"
    assert tex_path.is_file(), f"{tex_path} was not written"
    tex = tex_path.read_text(encoding="utf-8")
    missing = []
    for out in player_outputs(built, doc):
        png = base64.b64decode("".join(out["data"]["image/png"]))
        digest = hashlib.sha256(png).hexdigest()
        if digest not in tex or not (_latex(built) / f"{digest}.png").is_file():
            missing.append(f"{digest}.png")
    assert not missing, f"{doc}: interactive figures without their still in the PDF: {missing}"
