"""Every page of the built HTML book, in a real browser (headless Chromium).

Run after ``make book``: ``pytest tests/built --built-book=_build``; ``.ci/run`` runs it
with ``CI=true``, which makes a missing Chromium a failure instead of a skip. What each
check means is defined in ``pagecheck.py``; ``test_browser_checker.py`` shows that each one
fails on a page broken on purpose.

* Chapter pages and the other pages of the table of contents are checked fully: math
  typeset without errors, nothing clipped or overflowing at 1280 and 400 px, no display
  equation that scrolls at 1280 px, images
  loaded, animation players stepping, no console error, nothing fetched from the network,
  and (on chapters) the Colab and Binder launch links.
* The other pages (API reference, index, search) get a lighter check at 1280 px only:
  math, images, console and network.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from pagecheck import DESKTOP, check_page

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "book"))
from bookutils import chapter_ids, path_to_book, repository, toc_docnames  # noqa: E402

# Every test needs --built-book (fixture in tests/conftest.py), else it is skipped.
pytestmark = pytest.mark.usefixtures("built")

CHAPTERS = chapter_ids()
FULL = [doc for doc in toc_docnames() if not doc.startswith("book/api/")]
_REFRESH = re.compile(r'http-equiv="refresh"[^>]*url=([^"\'>]+)', re.I)
_SKIP_DIRS = {"_static", "_sources", "_images", "_sphinx_design_static"}


def launch_links(doc: str) -> dict[str, str]:
    """The Colab and Binder URLs that open ``<doc>.ipynb`` of the canonical repository."""
    url, branch = repository()
    slug = re.sub(r"^https://github\.com/", "", url)
    nb = f"{path_to_book()}{doc}.ipynb"
    return {"Colab": f"https://colab.research.google.com/github/{slug}/blob/{branch}/{nb}",
            "Binder": f"https://mybinder.org/v2/gh/{slug}/{branch}?urlpath=lab/tree/{nb}"}


def _report(problems: list, what: str) -> str:
    return f"{len(problems)} problem(s) {what}:\n  " + "\n  ".join(map(str, problems))


@pytest.mark.parametrize("doc", FULL)
def test_page_in_browser(built, browser, doc):
    """Math, overflow at 1280 and 400 px, images, players, launch links, console, network."""
    path = built / "html" / f"{doc}.html"
    assert path.is_file(), f"{doc}: {path} was not built"
    launch = launch_links(doc) if doc in CHAPTERS else None
    problems, facts = check_page(browser, path, doc, launch=launch)
    assert not problems, _report(problems, f"on {doc} (checked in {facts['seconds']} s)")
    # An equation wider than its box scrolls (gmbook.css), so nothing is lost, but a reader
    # at a desktop should not have to scroll one: break it over lines in the chapter
    # (\begin{aligned} ... \\), which also keeps it inside the PDF's margins. At 400 px
    # (a phone) scrolling is the expected fallback and is not checked.
    wide = facts.get("scrolling", {}).get(DESKTOP)
    assert not wide, (f"{doc}: {len(wide)} display equation(s) wider than their box at "
                      f"{DESKTOP} px, which the reader has to scroll: break them over lines: "
                      + "; ".join(wide))
    if doc in CHAPTERS:
        assert facts["mathjax"].startswith("3."), (
            f"{doc}: MathJax {facts['mathjax']!r} on a chapter page, expected MathJax 3")


def test_other_pages_in_browser(built, browser):
    """The API reference and Sphinx's own pages: math, images, console, network (1280 px)."""
    html = built / "html"
    full = {f"{doc}.html" for doc in FULL}
    pages = sorted(p for p in html.rglob("*.html")
                   if not _SKIP_DIRS & set(p.relative_to(html).parts)
                   and p.relative_to(html).as_posix() not in full)
    assert pages, f"no other pages under {html}"
    problems = []
    for path in pages:
        name = path.relative_to(html).as_posix()
        redirect = _REFRESH.search(path.read_text(encoding="utf-8", errors="replace"))
        if redirect:  # index.html: a meta refresh to the first page
            target = (path.parent / redirect.group(1)).resolve()
            assert target.is_file(), f"{name} redirects to {redirect.group(1)}, not built"
            continue
        found, _ = check_page(browser, path, name, widths=(DESKTOP,), players=False)
        problems += found
    assert not problems, _report(problems, f"on {len(pages)} API and index pages")


def test_mathjax_is_served_by_the_book(built):
    """The pages load MathJax 3 from the book's own ``_static/mathjax``, not from a CDN."""
    html = built / "html"
    component = html / "_static" / "mathjax" / "tex-chtml.js"
    assert component.is_file(), f"{component} is missing: MathJax was not copied"
    fonts = list((html / "_static" / "mathjax" / "output" / "chtml" / "fonts" /
                  "woff-v2").glob("*.woff"))
    assert fonts, "MathJax's web fonts were not copied"
    for doc in CHAPTERS:
        text = (html / f"{doc}.html").read_text(encoding="utf-8")
        scripts = re.findall(r'<script[^>]+src="([^"]*mathjax[^"]*)"', text, re.I)
        assert scripts and all(not s.startswith(("http:", "https:", "//")) for s in scripts), (
            f"{doc}: MathJax scripts {scripts}, expected the local _static/mathjax copy")
