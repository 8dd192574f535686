"""Tests of gmbook.display: one call gives live sliders, an HTML animation and a still."""

from __future__ import annotations

import base64
import io
import re

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from gmbook import display  # noqa: E402
from gmbook.display import (  # noqa: E402
    DrawError,
    animation_html,
    interactive_figure,
    is_static,
    progress,
)

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _no_leaks():
    """Every test must leave the set of pyplot figures as it found it."""
    plt.close("all")
    yield
    assert plt.get_fignums() == [], "a test leaked matplotlib figures"


@pytest.fixture
def static(monkeypatch):
    monkeypatch.setenv("GMBOOK_STATIC", "1")


@pytest.fixture
def live(monkeypatch):
    monkeypatch.delenv("GMBOOK_STATIC", raising=False)


class Spy:
    """A draw function that records its calls."""

    def __init__(self):
        self.calls: list[dict] = []

    def __call__(self, ax, **values):
        self.calls.append(values)
        t = values.get("t", 0.5)
        ax.plot([0, 1], [0, t], color="C0")
        ax.scatter([t], [float(values.get("noise", 0.1))], s=10)


PARAMS = {"t": np.linspace(0, 1, 11), "noise": [0.02, 0.05, 0.1, 0.2]}


def _png(b64: str) -> tuple[int, int]:
    raw = base64.b64decode(b64)
    assert raw[:8] == PNG_MAGIC
    return int.from_bytes(raw[16:20], "big"), int.from_bytes(raw[20:24], "big")


# ----------------------------------------------------------------------------- modes


@pytest.mark.parametrize(
    ("value", "expected"), [("1", True), ("true", True), ("0", False), ("", False)]
)
def test_is_static(monkeypatch, value, expected):
    monkeypatch.setenv("GMBOOK_STATIC", value)
    assert is_static() is expected


def test_is_static_unset(live):
    assert is_static() is False


def test_progress_disabled_in_static_mode(static):
    bar = progress(range(5), desc="train")
    assert bar.disable
    assert list(bar) == [0, 1, 2, 3, 4]


def test_progress_live(live):
    bar = progress(iter(range(3)), total=3, desc="train")
    assert not bar.disable and bar.total == 3
    assert list(bar) == [0, 1, 2]
    assert progress(range(3), disable=True).disable


# ----------------------------------------------------------------------------- static


def test_static_bundle_has_player_and_png_but_no_widget(static, monkeypatch):
    import ipywidgets

    def no_widgets(*args, **kwargs):
        raise AssertionError("a widget was created in static mode")

    monkeypatch.setattr(ipywidgets.Widget, "__init__", no_widgets)
    spy = Spy()
    fig = interactive_figure(spy, PARAMS, title="Path")
    data, metadata = fig._repr_mimebundle_()
    assert set(data) == {"text/plain", "image/png", "text/html"}
    assert WIDGET_MIME not in data
    html = data["text/html"]
    assert "<script" in html and "Animation" in html
    assert len(re.findall(r"data:image/png;base64,", html)) == len(fig.frames()) == 11
    assert "https://" not in html and "http://" not in html and "font-awesome" not in html
    assert "<svg" in html  # icons are inline
    assert f'<img alt="{fig.describe()}"' in html  # the animated image has alt text
    assert len(html) < 1_500_000
    w, h = _png(data["image/png"])
    assert 800 <= w <= 1400 and 100 <= h <= 700  # four panels across the text width
    assert metadata["image/png"] == {"width": w // 2, "height": h // 2}
    text = data["text/plain"]
    assert "\n" not in text and "t in [0, 1]" in text and "noise in {0.02, 0.05, 0.1, 0.2}" in text
    assert "interactive(" not in text and "object>" not in text


def test_static_animation_sweeps_one_parameter(static):
    spy = Spy()
    fig = interactive_figure(spy, PARAMS, animate="noise", defaults={"t": 0.5}, stills=[0.05, 0.2])
    assert fig.frames() == [{"t": 0.5, "noise": v} for v in [0.02, 0.05, 0.1, 0.2]]
    assert {"t": 0.5, "noise": 0.05} in spy.calls and {"t": 0.5, "noise": 0.2} in spy.calls
    assert all(c["t"] == 0.5 for c in spy.calls)
    assert fig.stills == [0.05, 0.2]


def test_frames_are_subsampled(static):
    fig = interactive_figure(Spy(), {"t": np.linspace(0, 1, 100)}, stills=[0.0, 1.0])
    ts = [f["t"] for f in fig.frames()]
    assert len(ts) == 30 and ts[0] == 0.0 and ts[-1] == 1.0 and ts == sorted(ts)
    assert fig._repr_mimebundle_()[0]["text/html"].count("data:image/png;base64,") == 30


def test_default_stills():
    fig = interactive_figure(Spy(), {"t": np.linspace(0, 1, 13)})
    assert fig.stills == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0])  # 4 evenly spaced
    fig = interactive_figure(Spy(), {"t": np.linspace(0, 1, 10)})
    assert len(fig.stills) == 4 and fig.stills[0] == 0.0 and fig.stills[-1] == 1.0
    fig = interactive_figure(Spy(), {"t": np.linspace(0, 1, 21)})
    assert fig.stills == pytest.approx([0.0, 0.35, 0.65, 1.0])  # nearest values
    assert interactive_figure(Spy(), {"k": ["a", "b"]}).stills == ["a", "b"]
    assert fig.defaults == {"t": 0.0}  # the first value


def test_save_png(tmp_path):
    fig = interactive_figure(Spy(), PARAMS)
    path = tmp_path / "still.png"
    fig.save_png(path)
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert path.read_bytes() == fig.still_png()


def test_resample_uses_seed_zero_for_stills_and_animation(static):
    spy = Spy()
    interactive_figure(spy, {"t": [0.0, 1.0]}, resample=True)
    assert spy.calls and all(c["seed"] == 0 for c in spy.calls)


def test_projection_3d(static):
    def draw(ax, angle):
        assert ax.name == "3d"
        ax.plot([0, 1], [0, 1], [0, 1])
        ax.view_init(azim=angle)

    data, _ = interactive_figure(draw, {"angle": [0, 45, 90]}, projection="3d")._repr_mimebundle_()
    assert "text/html" in data


# ----------------------------------------------------------------------------- live


def test_live_bundle_has_widget_and_png(live):
    fig = interactive_figure(Spy(), PARAMS)
    data, metadata = fig._repr_mimebundle_()
    assert WIDGET_MIME in data and data[WIDGET_MIME]["model_id"]
    assert "text/html" not in data  # no animation computed in live mode
    assert fig._html is None
    _png(data["image/png"])
    assert "VBox" not in data["text/plain"] and "Interactive figure" in data["text/plain"]
    data, _ = fig._repr_mimebundle_(include=["image/png"])
    assert set(data) == {"image/png"}
    data, _ = fig._repr_mimebundle_(exclude=[WIDGET_MIME])
    assert WIDGET_MIME not in data


def test_live_sliders_redraw_with_new_values(live):
    import ipywidgets

    spy = Spy()
    fig = interactive_figure(spy, PARAMS)
    box = fig.widget()
    assert fig.widget() is box  # cached
    t_slider, noise_slider, out = box.children
    assert isinstance(t_slider, ipywidgets.FloatSlider)  # evenly spaced numbers
    assert isinstance(noise_slider, ipywidgets.SelectionSlider)
    assert isinstance(out, ipywidgets.Output)
    assert (t_slider.min, t_slider.max, t_slider.step) == pytest.approx((0, 1, 0.1))
    assert spy.calls[-1] == {"t": 0.0, "noise": 0.02}  # initial view at the defaults
    t_slider.value = 0.7
    assert spy.calls[-1] == {"t": PARAMS["t"][7], "noise": 0.02}  # snapped to the values
    noise_slider.value = 0.1
    assert spy.calls[-1] == {"t": PARAMS["t"][7], "noise": 0.1}
    (output,) = out.outputs
    assert output["output_type"] == "display_data"
    _png(output["data"]["image/png"])


def test_live_integer_and_string_controls(live):
    import ipywidgets

    spy = Spy()
    fig = interactive_figure(spy, {"k": range(1, 6), "kind": ["moons", "spirals"]})
    k, kind, _ = fig.widget().children
    assert isinstance(k, ipywidgets.IntSlider) and isinstance(kind, ipywidgets.SelectionSlider)
    kind.value = "spirals"
    assert spy.calls[-1] == {"k": 1, "kind": "spirals"}


def test_resample_button_increments_seed(live):
    spy = Spy()
    fig = interactive_figure(spy, {"t": [0.0, 0.5, 1.0]}, resample=True)
    *_, button, _out = fig.widget().children
    assert button.description == "Resample"
    assert spy.calls[-1]["seed"] == 0
    button.click()
    button.click()
    assert spy.calls[-1]["seed"] == 2 and fig.seed == 2


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("mode", ["static", "live"])
def test_draw_errors_are_raised_clearly(monkeypatch, mode):
    if mode == "static":
        monkeypatch.setenv("GMBOOK_STATIC", "1")
    else:
        monkeypatch.delenv("GMBOOK_STATIC", raising=False)

    def broken(ax, t):
        raise KeyError("no such sample")

    match = r"broken\(ax, t=0\.0\) raised KeyError: 'no such sample'"
    with pytest.raises(DrawError, match=match) as info:
        interactive_figure(broken, {"t": [0.0, 1.0]})
    assert isinstance(info.value.__cause__, KeyError)


def test_draw_with_wrong_signature():
    with pytest.raises(DrawError, match="unexpected keyword argument 'noise'"):
        interactive_figure(lambda ax, t: None, PARAMS)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"params": {}}, ValueError, "non-empty"),
        ({"params": {"t": []}}, ValueError, "empty"),
        ({"params": {"t": "abc"}}, TypeError, "sequence of values"),
        ({"params": {"t": [None]}}, TypeError, "numbers or strings"),
        ({"params": {"t": [float("nan")]}}, ValueError, "finite"),
        ({"params": {"t": [0.0]}, "animate": "s"}, ValueError, "animate='s' is not a parameter"),
        ({"params": {"t": [0.0, 1.0]}, "stills": [0.5]}, ValueError, "0.5 is not among"),
        ({"params": {"t": [0.0, 1.0]}, "defaults": {"s": 1}}, ValueError, "unknown parameter 's'"),
        ({"params": {"t": [0.0]}, "ncols_still": 0}, ValueError, "ncols_still"),
        ({"params": {"seed": [0, 1]}, "resample": True}, ValueError, "reserved"),
        ({"params": {"not valid": [0]}}, ValueError, "identifiers"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        interactive_figure(Spy(), **kwargs)


def test_draw_must_be_callable():
    with pytest.raises(TypeError, match="draw must be callable"):
        interactive_figure("draw", {"t": [0.0]})


# ----------------------------------------------------------------------------- figures


@pytest.mark.parametrize("mode", ["static", "live"])
def test_no_figure_leaks_even_with_pyplot_in_draw(monkeypatch, mode):
    if mode == "static":
        monkeypatch.setenv("GMBOOK_STATIC", "1")
    else:
        monkeypatch.delenv("GMBOOK_STATIC", raising=False)
    plt.figure()  # the user's own figure stays open
    before = plt.get_fignums()

    def sloppy(ax, t):
        plt.figure()  # a stray pyplot figure: closed by interactive_figure
        ax.plot([0, t])

    fig = interactive_figure(sloppy, {"t": [0.0, 0.5, 1.0]})
    fig._repr_mimebundle_()
    assert plt.get_fignums() == before
    plt.close("all")


def test_animation_html_helper_closes_pyplot_figure():
    fig, ax = plt.subplots(figsize=(2, 2))
    seen = []
    html = animation_html(fig, lambda i: seen.append(i) or ax.plot([0, i]), [1, 2, 3], 4, dpi=40)
    assert seen == [1, 2, 3]
    assert html.count("data:image/png;base64,") == 3
    assert "https://" not in html and 'Animation(frames' in html
    assert plt.get_fignums() == []
    with pytest.raises(ValueError, match="default_mode"):
        animation_html(fig, lambda i: None, 2, default_mode="bounce")


def test_offline_player_replaces_every_icon():
    from matplotlib import _animation_data

    html = display._offline_player(_animation_data.JS_INCLUDE + _animation_data.DISPLAY_TEMPLATE,
                                    "an animation")
    assert "font-awesome" not in html and 'class="fa' not in html
    assert html.count("<svg") == 9


def test_still_image_is_a_readable_png(live):
    from PIL import Image

    fig = interactive_figure(Spy(), PARAMS, stills=[0.0, 0.5, 1.0], ncols_still=2, figsize=(4, 3))
    img = Image.open(io.BytesIO(fig.still_png()))
    w, h = img.size
    assert h > w / 2  # two rows of two panels


# ----------------------------------------------------------------------------- notebook


def test_notebook_renders_player_and_png_in_static_mode(tmp_path, monkeypatch):
    """Execute a tiny notebook as the book build does (GMBOOK_STATIC=1, inline backend)."""
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("GMBOOK_STATIC", "1")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # let ipykernel pick the inline backend
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "import matplotlib.pyplot as plt\n"
            "from gmbook.plot import use_style\n"
            "use_style()\n"
            "plt.plot([0, 1], [0, 1]);"
        ),
        nbformat.v4.new_code_cell(
            "import numpy as np\n"
            "from gmbook.display import interactive_figure, progress\n"
            "for _ in progress(range(3)):\n"
            "    pass\n"
            "def draw(ax, t):\n"
            "    ax.plot([0, 1], [0, t])\n"
            "interactive_figure(draw, {'t': np.linspace(0, 1, 5)})"
        ),
    ]
    NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    # use_style under IPython: inline figures are retina PNGs (size metadata), not SVG
    (plain_fig,) = nb.cells[0].outputs
    assert plain_fig["output_type"] == "display_data"
    assert "image/png" in plain_fig["data"] and "image/svg+xml" not in plain_fig["data"]
    assert "width" in plain_fig["metadata"].get("image/png", {})
    # the interactive figure: one rich output, no stray figure, no progress bar, no widget
    outputs = nb.cells[1].outputs
    assert len(outputs) == 1, outputs
    (out,) = outputs
    assert out["output_type"] in {"display_data", "execute_result"}
    assert {"text/html", "image/png", "text/plain"} <= set(out["data"])
    assert WIDGET_MIME not in out["data"]
    assert "<script" in out["data"]["text/html"]
    _png(out["data"]["image/png"])
    assert "widgets" not in nb.metadata
