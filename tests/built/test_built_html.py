"""Checks of the built HTML book (``<built>/html``) and of its execution report.

Run after ``make book``: ``pytest tests/built --built-book=_build``.
"""

from __future__ import annotations

import html as htmllib
import json
import re
import sys
from functools import lru_cache
from pathlib import Path

import pytest
from bs4 import BeautifulSoup

# The source readers (what a chapter is, the repository URL) are shared with tests/book.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "book"))
from bookutils import ROOT, chapter_ids, path_to_book, repository  # noqa: E402

# Every test needs --built-book (fixture in tests/conftest.py), else it is skipped.
pytestmark = pytest.mark.usefixtures("built")

CHAPTERS = chapter_ids()
chapters = pytest.mark.parametrize("doc", CHAPTERS)
BUDGET_SECONDS = 90

# Text that must never appear in a cell output of the static book.
LITTER = {
    "<IPython.core.display": "the text repr of a display object (give it an HTML/PNG bundle)",
    "interactive(children=": "the text repr of an ipywidgets.interactive",
    "VBox(children=": "the text repr of a widget box",
    "HBox(children=": "the text repr of a widget box",
    "Output()": "the text repr of an ipywidgets.Output",
    "<Figure size": "the repr of a matplotlib figure (end the cell with plt.show())",
    "matplotlib.figure.Figure at": "the repr of a matplotlib figure",
    "it/s]": "a tqdm progress bar (GMBOOK_STATIC should silence it)",
    "Traceback": "a traceback",
    "FAILED ": "a failed gmbook.exercises check (a solution that does not pass)",
}


@lru_cache(maxsize=None)
def _soup(path: Path) -> BeautifulSoup:
    return BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")


def _html_pages(built: Path) -> list[Path]:
    html = built / "html"
    return sorted(p for p in html.rglob("*.html")
                  if not {"_static", "_sources", "_images"} & set(p.relative_to(html).parts))


def _chapter_page(built: Path, doc: str) -> Path:
    path = built / "html" / f"{doc}.html"
    assert path.is_file(), f"{doc}: {path} was not built"
    return path


# --------------------------------------------------------------------------- launch buttons


def _links(path: Path) -> list[str]:
    return [htmllib.unescape(a["href"]) for a in _soup(path).find_all("a", href=True)]


@chapters
def test_launch_buttons_open_the_paired_notebook(built, doc):
    """Colab and Binder open ``<doc>.ipynb`` of the canonical repository on its branch."""
    url, branch = repository()
    slug = re.sub(r"^https://github\.com/", "", url)
    nb = f"{path_to_book()}{doc}.ipynb"
    colab = f"https://colab.research.google.com/github/{slug}/blob/{branch}/{nb}"
    binder = f"https://mybinder.org/v2/gh/{slug}/{branch}?urlpath=lab/tree/{nb}"
    links = _links(_chapter_page(built, doc))
    colab_links = sorted({h for h in links if h.startswith("https://colab.research.google.com")})
    binder_links = sorted({h for h in links if h.startswith("https://mybinder.org")})
    assert colab_links == [colab], f"{doc}: Colab launch links {colab_links}, expected {colab}"
    assert binder_links == [binder], f"{doc}: Binder launch links {binder_links}, expected {binder}"
    assert (ROOT / f"{doc}.ipynb").is_file(), (
        f"{doc}: the launch buttons open {doc}.ipynb, which is not in the repository "
        "(run make notebooks and commit it)")


# --------------------------------------------------------------------------- outputs


def test_cell_outputs_are_clean(built):
    """No text reprs of widgets, display objects or figures; no progress bars, tracebacks
    or failed exercise checks, on any page."""
    problems = []
    for page in _html_pages(built):
        soup = _soup(page)
        rel = page.relative_to(built / "html").as_posix()
        for output in soup.select("div.cell_output"):
            text = output.get_text()
            for needle, what in LITTER.items():
                if needle in text:
                    line = next(l for l in text.splitlines() if needle in l).strip()[:120]
                    problems.append(f"{rel}: {what}: {line!r}")
        for div in soup.select("div.output.traceback, div.output.error"):
            problems.append(f"{rel}: an error output: {div.get_text().strip()[:120]!r}")
    assert not problems, "littered outputs in the built HTML:\n  " + "\n  ".join(problems)


def test_no_stderr_outputs(built):
    """No stderr block (warnings, UserWarning, logging) in any executed page."""
    problems = []
    for page in _html_pages(built):
        rel = page.relative_to(built / "html").as_posix()
        for div in _soup(page).select("div.output.stderr"):
            problems.append(f"{rel}: {div.get_text().strip()[:160]!r}")
    assert not problems, ("stderr outputs in the built HTML (fix the warning, do not hide "
                          "it):\n  " + "\n  ".join(problems))


# --------------------------------------------------------------------------- figures


@chapters
def test_chapter_has_figures_with_alt_text(built, doc):
    """At least one ``<figure>``, and every ``<img>`` has a non-empty alt text."""
    soup = _soup(_chapter_page(built, doc))
    assert soup.find("figure"), f"{doc}: no <figure> on the page"
    missing = [img.get("src") or f"<img id={img.get('id')!r}> (a JavaScript animation frame?)"
               for img in soup.find_all("img") if not (img.get("alt") or "").strip()]
    assert not missing, f"{doc}: images without alt text: {missing}"


@chapters
def test_alt_texts_describe_the_image(built, doc):
    """Alt text is a description, not the fallback file name docutils puts in."""
    soup = _soup(_chapter_page(built, doc))
    generic = []
    for img in soup.find_all("img"):
        alt, src = (img.get("alt") or "").strip(), img.get("src", "")
        if alt and (alt == src or re.search(r"\.(png|jpe?g|svg|gif)$", alt, re.I)):
            generic.append(src)
    assert not generic, (f"{doc}: images whose alt text is their file name (add "
                         f"mystnb: image: alt: to the cell): {generic}")


# --------------------------------------------------------------------------- interactive figures

PLAYER_ID = re.compile(r'id="(_anim_img[0-9a-f]+)"')


def player_outputs(built: Path, doc: str) -> list[dict]:
    """Outputs of the executed notebook ``<built>/jupyter_execute/<doc>.ipynb`` that carry the
    mime bundle of ``gmbook.display.interactive_figure`` in static mode: a JavaScript player
    (``text/html``) and a still (``image/png``)."""
    path = built / "jupyter_execute" / f"{doc}.ipynb"
    assert path.is_file(), f"{doc}: the executed notebook {path} is missing"
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    outputs = [o for c in cells for o in c.get("outputs", [])]
    html = lambda o: "".join(o.get("data", {}).get("text/html", ""))
    return [o for o in outputs if "image/png" in o.get("data", {})
            and '<div class="animation">' in html(o) and PLAYER_ID.search(html(o))]


@chapters
def test_interactive_figures_are_players(built, doc):
    """Every interactive figure of the executed chapter is on its page as the JavaScript
    player (its frame image, by id, with the player's controls), not as the still PNG."""
    soup = _soup(_chapter_page(built, doc))
    missing = []
    for out in player_outputs(built, doc):
        anim_id = PLAYER_ID.search("".join(out["data"]["text/html"])).group(1)
        img = soup.find("img", id=anim_id)
        if img is None or img.find_parent("div", class_="animation") is None:
            missing.append(anim_id)
    assert not missing, (f"{doc}: interactive figures that are not shown as a player on the "
                         f"page (static build without GMBOOK_STATIC=1?): {missing}")


# --------------------------------------------------------------------------- execution time


def test_execution_times(built):
    """Every chapter executed successfully within the budget (``execution-times.json``)."""
    path = built / "execution-times.json"
    assert path.is_file(), f"{path} is missing: was the book built with gmbook_sphinx?"
    times = json.loads(path.read_text())
    missing = [doc for doc in CHAPTERS if doc not in times]
    assert not missing, f"chapters missing from {path.name}: {missing}"
    slow = {doc: times[doc]["seconds"] for doc in CHAPTERS
            if times[doc]["seconds"] > BUDGET_SECONDS}
    assert not slow, f"chapters over the {BUDGET_SECONDS} s budget: {slow}"
    failed = [doc for doc in CHAPTERS if times[doc].get("succeeded") is False]
    assert not failed, f"chapters whose execution failed: {failed}"
