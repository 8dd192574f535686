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
            # a quoted docstring matches the package on at least one side of the needle
            # (the other side may run into a page's header or a line of another block)
            before = text[max(0, m.start() - 30):m.end()]
            after = text[m.start():m.end() + 30]
            if not any(_squash(c) in _package_sources() for c in (before, after)):
                found.append(text[max(0, m.start() - 40):m.end() + 10])
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


# TeX that the bibliography printed as text: pybtex (sphinxcontrib-bibtex) reads braces and
# accents but no math, so a title with ``$\widehat{R}$`` reached the PDF as "$\widehat R$",
# escaped by the LaTeX writer. Titles write such symbols in Unicode (``{R\u0302}``).
_LITERAL_TEX = re.compile(r"\\\$|\\textbackslash|\\textasciicircum|\\\{|\\\}")


def test_bibliography_prints_no_raw_tex(built):
    """No bibliography entry prints TeX markup literally (a ``$``, a backslash or a brace
    escaped by the LaTeX writer): what a BibTeX field says is typeset, not shown."""
    tex = _latex(built) / f"{NAME}.tex"
    assert tex.is_file(), f"{tex} was not written"
    bibliographies = re.findall(r"\\begin\{sphinxthebibliography\}.*?"
                                r"\\end\{sphinxthebibliography\}",
                                tex.read_text(encoding="utf-8"), flags=re.S)
    assert bibliographies, f"no bibliography in {tex.name}"
    found = [b[max(0, m.start() - 80):m.end() + 30] for b in bibliographies
             for m in _LITERAL_TEX.finditer(b)]
    assert not found, f"TeX printed literally in the bibliography: {found[:5]}"


def test_html_bibliography_prints_no_raw_tex(built):
    """The same on the web page: no ``$`` or backslash in the text of any entry."""
    from bs4 import BeautifulSoup

    page = built / "html" / "book" / "bibliography.html"
    if not page.is_file():
        pytest.skip("the HTML book is not built (make book)")
    soup = BeautifulSoup(page.read_text(encoding="utf-8"), "html.parser")
    entries = [" ".join(e.get_text(" ").split()) for e in soup.select("div.citation")]
    assert len(entries) >= 10, f"too few bibliography entries on {page.name}: {len(entries)}"
    found = [e[:160] for e in entries if re.search(r"[\\$]", e)]
    assert not found, f"TeX printed literally in the web bibliography: {found[:5]}"


# --------------------------------------------------------------------------- numbering

# Kinds whose numbers sphinx-proof and sphinx-exercise print as text (not LaTeX counters).
NUMBERED = ("Theorem", "Proposition", "Lemma", "Corollary", "Definition", "Example", "Remark",
            "Conjecture", "Criterion", "Algorithm", "Assumption", "Axiom", "Observation",
            "Property", "Exercise")
_NUMBER = re.compile(rf"\b({'|'.join(NUMBERED)}) (\d+(?:\.\d+)*)\b")


def test_pdf_numbers_theorems_and_exercises_per_chapter(built):
    """Theorems and exercises are numbered "chapter.k" in the PDF, as on the web pages
    (not "chapter.section.k", which sphinx-jupyterbook-latex's numfig depth gives)."""
    text = _text_or_skip(built)
    numbers = [(m.group(1), m.group(2)) for m in _NUMBER.finditer(text)]
    assert sum(n.count(".") == 1 for _, n in numbers) >= 10, (
        f"too few numbered theorems or exercises in the PDF text: {numbers[:20]}")
    deep = sorted({f"{k} {n}" for k, n in numbers if n.count(".") >= 2})
    assert not deep, f"numbered per section in the PDF (per chapter on the web): {deep[:10]}"


def _signature(text: str) -> str:
    """Text as compared between the HTML and the PDF: lower-case letters, digits and dots
    (the PDF breaks lines, hyphenates, and typesets quotes differently)."""
    return re.sub(r"[^a-z0-9.]", "", text.lower())


def _html_numbered(built: Path) -> list[tuple[str, str, str, str]]:
    """``(page, "Kind N.k", title signature, first words signature)`` of every labelled
    theorem and exercise on the chapter pages whose title and first words are plain text
    (no math)."""
    from bs4 import BeautifulSoup

    found = []
    for doc in CHAPTERS:
        page = built / "html" / f"{doc}.html"
        assert page.is_file(), f"{page} was not built (make book)"
        soup = BeautifulSoup(page.read_text(encoding="utf-8"), "html.parser")
        for box in soup.select("div.admonition[id]"):
            title = box.find(class_="admonition-title")
            if title is None:
                continue
            head = " ".join(title.get_text(" ").split())
            match = re.match(rf"({'|'.join(NUMBERED)}) (\d+(?:\.\d+)+)\b", head)
            if not match:
                continue
            body = " ".join(box.get_text(" ").split())[len(" ".join(
                title.get_text(" ").split())):]
            words = " ".join(body.split()[:5])
            if "\\(" in head + words or "$" in head + words:
                continue
            found.append((doc, match.group(0), _signature(head), _signature(words)))
    return found


GAP = 150  # characters of page furniture allowed between a title and its first words


def test_pdf_numbers_agree_with_html(built):
    """Each labelled theorem and exercise has the same number in the PDF as on its web page:
    its HTML title, number included, stands in the PDF's text, followed by its first
    words."""
    if not (built / "html").is_dir():
        pytest.skip("the HTML book is not built (make book)")
    pdf = _signature(_text_or_skip(built))
    items = _html_numbered(built)
    assert len(items) >= 10, f"too few numbered theorems and exercises in the HTML: {items}"
    # A page break may put the running head and foot between a title and its first words.
    missing = [(doc, number) for doc, number, head, words in items
               if not any(words in pdf[m.end():m.end() + len(words) + GAP]
                          for m in re.finditer(re.escape(head), pdf))]
    assert not missing, (f"{len(missing)} of {len(items)} numbered items are not in the PDF "
                         f"with their HTML number: {missing[:10]}")


# --------------------------------------------------------------------------- typesetting


def _tex(built: Path) -> str:
    path = _latex(built) / f"{NAME}.tex"
    assert path.is_file(), f"{path} was not written"
    return path.read_text(encoding="utf-8")


def _log(built: Path) -> str:
    path = _latex(built) / f"{NAME}.log"
    assert path.is_file(), f"{path} is missing"
    return path.read_text(encoding="utf-8", errors="replace")


def test_proofs_have_no_empty_title_bar(built):
    """No admonition without a title: LaTeX takes its first token as the title and prints
    an empty coloured bar (sphinx-proof's proofs did). Proofs start with "Proof." in the
    PDF."""
    tex = _tex(built)
    untitled = [tex[m.start():m.end() + 60] for m in
                re.finditer(r"\\begin\{sphinxadmonition\}\{\w+\}(?!\{)", tex)]
    assert not untitled, f"admonitions without a title in the .tex: {untitled[:3]}"
    assert r"\begin{sphinxuseclass}{gmbookproof}" in tex, "no proof typeset as gmbookproof"
    assert "Proof." in _text_or_skip(built)


def test_latex_log_has_no_missing_characters(built):
    """Every character has a glyph in its font (xelatex only logs the ones that do not)."""
    missing = re.findall(r"Missing character: There is no (.*?) in font ([^\s!/]+)",
                         _log(built))
    assert not missing, f"characters without a glyph: {sorted(set(missing))}"


# An overfull line sticks out into the margin by this much at most (a few points is
# invisible: less than the width of a letter).
OVERFULL_TOLERANCE_PT = 3.0
# Lines over the tolerance that LaTeX cannot fix: a display equation too wide for the page
# needs a line break (\\) in the chapter's source. None is left.
OVERFULL_ALLOWED = 0
# Lines of text over the tolerance: none. There were 10 at commit f2f2c38, nine of them in
# the checker tables of the API reference, whose column of identifiers tabulary squeezed
# to about 40pt (gmbookpdf.sty now gives such a column at least 10em); a line that cannot
# break is fixed in gmbookpdf.sty or in its source, never by raising this number.
OVERFULL_TEXT_ALLOWED = 0


def test_latex_log_has_no_overfull_lines(built):
    """No line sticks out into the margin by more than a few points: text, tables and code
    break (gmbookpdf.sty); only display equations too wide for the page remain, at most
    ``OVERFULL_ALLOWED`` of them."""
    log = _log(built)
    boxes = re.findall(r"Overfull \\hbox \((\d+(?:\.\d+)?)pt too wide\) "
                       r"(in paragraph|in alignment|detected) at lines? (\d+)", log)
    wide = [(float(pt), kind, line) for pt, kind, line in boxes
            if float(pt) > OVERFULL_TOLERANCE_PT]
    listing = [f"{pt:.1f}pt ({kind}) at .tex line {line}" for pt, kind, line in wide]
    text = [row for row, (_, kind, _) in zip(listing, wide) if kind != "detected"]
    assert len(text) <= OVERFULL_TEXT_ALLOWED, (
        f"{len(text)} overfull lines of text over {OVERFULL_TOLERANCE_PT} pt (at most "
        f"{OVERFULL_TEXT_ALLOWED}): {text[:12]}")
    equations = [row for row, (_, kind, _) in zip(listing, wide) if kind == "detected"]
    assert len(equations) <= OVERFULL_ALLOWED, (
        f"{len(equations)} overfull display equations over {OVERFULL_TOLERANCE_PT} pt in "
        f"{NAME}.log (at most {OVERFULL_ALLOWED}): {equations[:10]}")


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
