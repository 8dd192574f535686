"""The browser check catches what it claims to catch: each check fails on a small page
broken on purpose, and passes on the same page mended.

These tests need no built book (they run in ``make test``), only Chromium: without it they
are skipped, or fail when ``CI=true`` (see ``tests/conftest.py``). The math pages load the MathJax
the book serves (``django-static-mathjax``, see ``book/_ext/gmbook_sphinx.py``) with the
book's own MathJax configuration from ``_config.yml``, and the mended pages load the book's
stylesheet ``book/_static/gmbook.css``: what is tested here is what the book ships.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from pagecheck import DESKTOP, NARROW, check_page

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "book" / "_ext"))
import gmbook_sphinx  # noqa: E402

BOOK_CSS = ROOT / "book" / "_static" / "gmbook.css"
COLAB = "https://colab.research.google.com/github/gmbook/gmbook/blob/main/book/x/ch.ipynb"
BINDER = "https://mybinder.org/v2/gh/gmbook/gmbook/main?urlpath=lab/tree/book/x/ch.ipynb"
LONG_TEX = " + ".join(rf"\frac{{\alpha_{{{k}}}}}{{\sqrt{{1-\bar\alpha_{{{k}}}}}}} x_{{{k}}}"
                      for k in range(40))

# The parts of the theme's layout that matter here: a text column of fixed width, and
# boxes that hide what overflows them (pydata-sphinx-theme's admonitions, which
# sphinx-proof's theorem and proof boxes are, do).
THEME_CSS = """
body { margin: 0; font: 16px sans-serif; }
article.bd-article { width: 700px; max-width: 100%; margin: 0 auto; padding: 0 10px;
                     box-sizing: border-box; }
.admonition { overflow: hidden; border: 1px solid #888; padding: 0 8px; }
span.eqno { float: right; }
div.highlight pre { overflow: hidden; }
"""


def page(tmp_path: Path, body: str, *, math: bool = False, book_css: bool = False,
         name: str = "page.html") -> Path:
    """Write a page in the book's layout; with MathJax as the book configures it."""
    head = [f"<style>{THEME_CSS}</style>"]
    if book_css:
        head.append(f'<link rel="stylesheet" href="{BOOK_CSS.as_uri()}">')
    if math:
        try:
            es5, _ = gmbook_sphinx.mathjax_source()
        except Exception as err:  # noqa: BLE001 - the message says what to install
            pytest.skip(str(err))
        config = yaml.safe_load((ROOT / "_config.yml").read_text())
        mj = config["sphinx"]["config"]["mathjax3_config"]
        head.append(f"<script>window.MathJax = {json.dumps(mj)}</script>")
        head.append(f'<script defer src="{(es5 / "tex-chtml.js").as_uri()}"></script>')
    path = tmp_path / name
    path.write_text(f"<!DOCTYPE html><html><head><meta charset='utf-8'>{''.join(head)}"
                    f"</head><body><article class='bd-article'>{body}</article></body></html>")
    return path


def problems(browser, path: Path, **kwargs) -> list:
    found, _ = check_page(browser, path, path.stem, **kwargs)
    return found


def kinds(found: list) -> set[str]:
    return {p.check for p in found}


def assert_clean(found: list) -> None:
    assert not found, "unexpected problems:\n  " + "\n  ".join(map(str, found))


# --------------------------------------------------------------------------- math


def test_book_macros_typeset_cleanly(browser, tmp_path):
    """Every macro of ``mathjax3_config`` typesets, inline and displayed: no error."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    macros = config["sphinx"]["config"]["mathjax3_config"]["tex"]["macros"]
    uses = " ".join(f"\\{name}{{x}}" if isinstance(spec, list) else f"\\{name}"
                    for name, spec in macros.items())
    body = (f'<p>Inline <span class="math notranslate nohighlight">\\({uses}\\)</span>.</p>'
            f'<div class="math notranslate nohighlight">\\[{uses}\\]</div>')
    assert_clean(problems(browser, page(tmp_path, body, math=True)))


def test_unknown_macro_is_reported(browser, tmp_path):
    r"""An undefined control sequence (``\nosuchmacro``) is a MathJax error, named."""
    body = ('<div class="math notranslate nohighlight" id="equation-bad">'
            r'\[ \nosuchmacro{x} + \E[x] \]</div>')
    found = problems(browser, page(tmp_path, body, math=True))
    assert kinds(found) == {"math"}, found
    assert "nosuchmacro" in found[0].message and "equation-bad" in found[0].element


def test_untypeset_math_is_reported(browser, tmp_path):
    """Math left as raw TeX (MathJax absent or broken) is reported."""
    body = r'<div class="math notranslate nohighlight">\[ x^2 \]</div>'
    found = problems(browser, page(tmp_path, body))
    assert kinds(found) == {"math"} and "not typeset" in found[0].message, found


# --------------------------------------------------------------------------- overflow


def _proposition(tex: str) -> str:
    """A sphinx-proof proposition box holding one numbered display equation."""
    return ('<div class="proof proposition admonition" id="prop-wide">'
            '<p class="admonition-title">Proposition 9.1</p><section>'
            '<div class="math notranslate nohighlight" id="equation-wide">'
            f'<span class="eqno">(9.1)</span>\\[{tex}\\]</div></section></div>')


def test_wide_equation_in_a_box_is_reported(browser, tmp_path):
    """A display equation wider than its proposition box is clipped (the box hides
    overflow): reported at 1280 px, naming the equation and its box."""
    found = problems(browser, page(tmp_path, _proposition(LONG_TEX), math=True))
    assert found and kinds(found) == {"overflow"}, found
    assert any(p.width == DESKTOP and "clipped" in p.message and "equation-wide" in p.element
               for p in found), found
    assert all("equation-wide" in p.element or "prop-wide" in p.element for p in found)


def test_book_css_makes_wide_equations_scroll(browser, tmp_path):
    """With the book's stylesheet the same equation scrolls inside the box: no problem,
    at either width, and it is reported as an equation that scrolls."""
    path = page(tmp_path, _proposition(LONG_TEX), math=True, book_css=True)
    found, facts = check_page(browser, path, "page")
    assert_clean(found)
    assert any("equation-wide" in e for e in facts["scrolling"][DESKTOP]), facts


def test_equation_number_over_the_equation_is_reported(browser, tmp_path):
    """An equation number drawn over its equation (here placed absolutely) is reported."""
    body = ('<div class="math notranslate nohighlight" id="equation-num" '
            'style="position: relative"><span class="eqno" style="float: none; '
            'position: absolute; left: 50%; top: 0">(1.1)</span>'
            r'\[ a + b + c + d + e + f + g + h \]</div>')
    found = problems(browser, page(tmp_path, body, math=True), widths=(DESKTOP,))
    assert [p.check for p in found] == ["overflow"], found
    assert "equation number (1.1) overlaps" in found[0].message


def test_long_inline_code_is_reported_and_wraps_with_book_css(browser, tmp_path):
    """A long identifier in inline code pushes a 400-pixel page sideways (Sphinx's
    ``.pre`` does not wrap); the book's stylesheet lets it wrap."""
    name = "test_cfm_and_fm_losses_have_equal_gradients_on_every_path_and_time"
    body = ('<style>.pre { white-space: nowrap; }</style><p>See <code class="docutils '
            f'literal notranslate"><span class="pre">{name}</span></code>.</p>')
    found = problems(browser, page(tmp_path, body, name="bare.html"))
    assert found and {p.width for p in found} == {NARROW}, found
    assert any("sideways" in p.message and "code" in p.element for p in found), found
    assert_clean(problems(browser, page(tmp_path, body, book_css=True, name="book.html")))


def test_wide_table_and_code_are_reported(browser, tmp_path):
    """A table wider than the text column, and a code line cut off by its box."""
    row = "".join(f"<td>column{k}</td>" for k in range(40))
    body = (f"<table id='wide'><tr>{row}</tr></table>"
            f"<div class='highlight'><pre id='code'>{'x = 1; ' * 60}</pre></div>")
    found = problems(browser, page(tmp_path, body), widths=(DESKTOP,))
    elements = " ".join(p.element for p in found)
    assert kinds(found) == {"overflow"} and "table#wide" in elements \
        and "pre#code" in elements, found


def test_scrolling_wrapper_is_fine(browser, tmp_path):
    """The same table inside a box that scrolls sideways is reachable: not a problem."""
    row = "".join(f"<td>column{k}</td>" for k in range(40))
    body = f"<div style='overflow-x: auto'><table><tr>{row}</tr></table></div>"
    assert_clean(problems(browser, page(tmp_path, body), widths=(DESKTOP,)))


def test_narrow_window_overflow_is_reported_at_its_width(browser, tmp_path):
    """A 600-pixel figure fits at 1280 px and overflows at 400 px: reported at 400 only."""
    body = ("<figure id='fig-wide'><div style='width: 600px; height: 20px; "
            "background: #ccc'></div><figcaption>A wide figure</figcaption></figure>")
    found = problems(browser, page(tmp_path, body))
    assert found and {p.width for p in found} == {NARROW}, found
    assert any("figure#fig-wide" in p.element for p in found), found


# --------------------------------------------------------------------------- images


def test_broken_image_is_reported(browser, tmp_path):
    """An image that does not load is named (and its failed load is a console error)."""
    body = '<img id="gone" alt="a figure" src="missing.png">'
    found = problems(browser, page(tmp_path, body))
    assert {"images", "console"} <= kinds(found), found
    assert any(p.check == "images" and "img#gone" in p.element for p in found)


# --------------------------------------------------------------------------- players


def _player_html() -> str:
    """A real player from the package: three frames of a moving line."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from gmbook.display import animation_html

    fig = Figure(figsize=(2, 1.5))
    ax = fig.add_subplot()

    def update(i):
        ax.clear()
        ax.plot([0, 1], [0, i])

    return animation_html(fig, update, 3, dpi=30, alt="A moving line")


@pytest.fixture(scope="module")
def player_html():
    return _player_html()


def test_player_steps(browser, tmp_path, player_html):
    """A player from ``gmbook.display.animation_html`` loads and steps through frames."""
    found, facts = check_page(browser, page(tmp_path, player_html), "player")
    assert_clean(found)
    assert facts["players"] == 1


def test_player_without_script_is_reported(browser, tmp_path, player_html):
    """A player whose JavaScript was removed shows one frame and cannot step."""
    import re
    broken = re.sub(r"<script.*?</script>", "", player_html, flags=re.S)
    found = problems(browser, page(tmp_path, broken))
    assert "players" in kinds(found), found


def test_player_without_controls_is_reported(browser, tmp_path, player_html):
    """A player whose next-frame button and frame image were removed is incomplete."""
    import re
    broken = re.sub(r'<button title="Next frame".*?</button>', "", player_html, flags=re.S)
    broken = re.sub(r'<img [^>]*id="_anim_img[^>]*>', "", broken)
    found = problems(browser, page(tmp_path, broken))
    players = [p for p in found if p.check == "players"]
    assert players and "no frame image" in players[0].message \
        and "Next frame" in players[0].message, found


def test_player_that_does_not_step_is_reported(browser, tmp_path, player_html):
    """A player whose frames do not advance (set_frame broken) is reported."""
    broken = player_html.replace("<script", "<script>Animation = undefined;</script><script",
                                 1)
    broken += ("<script>setTimeout(() => { for (const k in window) if (k.startsWith('anim')"
               " && window[k] && window[k].set_frame) window[k].set_frame = () => {}; }, 50)"
               "</script>")
    found = problems(browser, page(tmp_path, broken))
    assert "players" in kinds(found), found


# --------------------------------------------------------------------------- launch buttons


def _launch_menu(colab: str, binder: str) -> str:
    return ('<div class="dropdown dropdown-launch-buttons"><button>Launch</button><ul>'
            f'<li><a href="{binder}">Binder</a></li><li><a href="{colab}">Colab</a></li>'
            '</ul></div>')


def test_launch_buttons_pass_when_right(browser, tmp_path):
    body = _launch_menu(COLAB, BINDER)
    assert_clean(problems(browser, page(tmp_path, body),
                          launch={"Colab": COLAB, "Binder": BINDER}))


def test_wrong_or_missing_launch_buttons_are_reported(browser, tmp_path):
    """A Colab link to the .md instead of the .ipynb, and a page without the menu."""
    wrong = _launch_menu(COLAB.replace(".ipynb", ".md"), BINDER)
    found = problems(browser, page(tmp_path, wrong, name="wrong.html"),
                     launch={"Colab": COLAB, "Binder": BINDER})
    assert [p.element for p in found] == ["Colab launch link"], found
    found = problems(browser, page(tmp_path, "<p>no menu</p>", name="none.html"),
                     launch={"Colab": COLAB, "Binder": BINDER})
    assert kinds(found) == {"launch"}, found


# --------------------------------------------------------------------------- console, network


def test_javascript_errors_are_reported(browser, tmp_path):
    """An uncaught exception and a console.error are both reported."""
    body = "<script>console.error('bad thing'); null.attribute;</script>"
    found = problems(browser, page(tmp_path, body))
    messages = " ".join(p.message for p in found)
    assert kinds(found) == {"console"} and "bad thing" in messages \
        and "TypeError" in messages, found


def test_network_requests_are_reported_and_blocked(browser, tmp_path):
    """MathJax from a CDN is a dependency on the network: the request is reported (and
    never sent), and the math it should have typeset is reported as raw TeX."""
    body = ('<script defer src="https://cdn.example.invalid/mathjax@3/es5/tex-chtml.js">'
            r'</script><div class="math notranslate nohighlight">\[ x^2 \]</div>')
    found = problems(browser, page(tmp_path, body))
    assert kinds(found) == {"offline", "math"}, found
    assert any(p.check == "offline" and "cdn.example.invalid" in p.message for p in found)


def test_clean_page_has_no_problems(browser, tmp_path, player_html):
    """All together, mended: math, a proposition box, a table, an image, a player."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1, 1))
    fig.add_subplot().plot([0, 1], [1, 0])
    fig.savefig(tmp_path / "figure.png", dpi=40)
    img = '<img alt="a figure" src="figure.png">'
    body = (_proposition(r"\E_{q}\left[\KL(q \| p)\right] \ge 0") + img +
            "<table><tr><td>a</td><td>b</td></tr></table>" + player_html)
    assert_clean(problems(browser, page(tmp_path, body, math=True, book_css=True)))
