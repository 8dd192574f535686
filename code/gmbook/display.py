r"""Interactive figures that degrade well, and quiet progress bars.

One call, :func:`interactive_figure`, gives the reader three things depending on where
the chapter runs:

1. in a Jupyter kernel (JupyterLab, Colab, Binder): live ``ipywidgets`` sliders that
   redraw the figure;
2. in the static HTML book (no kernel): a self-contained JavaScript animation player
   that sweeps one parameter (Matplotlib's ``to_jshtml``, frames embedded, no CDN);
3. in the PDF: a still image of small multiples, several values side by side.

It never prints a text repr such as ``interactive(children=...)``: the returned
:class:`Interactive` has a mime bundle with a PNG (for the PDF and notebook viewers), a
one-line ``text/plain``, and either the widget view (live) or the HTML player (static).

**Static mode.** The book build sets the environment variable ``GMBOOK_STATIC=1`` (a
Sphinx extension sets it before any kernel starts, so the executed notebooks inherit
it). In static mode no widget is created and :func:`progress` bars are disabled, so the
built pages contain neither widget state nor progress-bar litter. See :func:`is_static`.

Example, in a chapter cell::

    def draw(ax, t, noise):
        scatter2d(ax, path_sample(x0, x1, t, noise), lims=3)

    interactive_figure(draw, {"t": np.linspace(0, 1, 21), "noise": [0.02, 0.05, 0.1]})
"""

from __future__ import annotations

import base64
import io
import math
import numbers
import os
import re
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from html import escape
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any, TypeVar, Union

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.animation import HTMLWriter
from matplotlib.axes import Axes
from matplotlib.figure import Figure

__all__ = [
    "DrawError",
    "Interactive",
    "animation_html",
    "interactive_figure",
    "is_static",
    "progress",
]

T = TypeVar("T")
Value = Union[float, int, str]

#: Name of the environment variable that switches on static mode.
STATIC_ENV = "GMBOOK_STATIC"
_TEXT_WIDTH = 6.4  # inches, the book's text column
_FRAME_DPI = 90  # animation frames: keep the HTML small
_LIVE_DPI = 100  # live view, rendered at twice this for retina screens
_STILL_DPI = 200  # small multiples for the PDF, like savefig.dpi of the house style
_WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def is_static() -> bool:
    r"""Whether we run in the static book build (``GMBOOK_STATIC`` is ``"1"``).

    The build sets ``GMBOOK_STATIC=1`` before kernels start; ``"true"`` and ``"yes"``
    (any case) count too. Anything else, or unset, means a live session.

    Example:
        >>> import os
        >>> is_static() == (os.environ.get("GMBOOK_STATIC", "").lower() in {"1", "true", "yes"})
        True
    """
    return os.environ.get(STATIC_ENV, "").strip().lower() in {"1", "true", "yes"}


def progress(
    iterable: Iterable[T],
    *,
    total: int | None = None,
    desc: str | None = None,
    disable: bool | None = None,
) -> Iterator[T]:
    r"""A progress bar over ``iterable`` that stays out of the built book.

    Uses :mod:`tqdm.auto` (a widget bar in Jupyter, text in a terminal). The bar is
    disabled in static mode (:func:`is_static`, set by the book build), so executed pages
    never contain progress-bar output, and whenever ``disable=True``.

    Args:
        iterable: what to iterate over.
        total: number of items, if ``len(iterable)`` does not exist.
        desc: label in front of the bar.
        disable: ``True`` hides the bar; ``None`` or ``False`` show it except in static
            mode.

    Returns:
        A tqdm iterator yielding the items of ``iterable``.

    Example:
        >>> sum(progress(range(4), disable=True))
        6
    """
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, disable=bool(disable) or is_static())


class DrawError(RuntimeError):
    r"""The ``draw`` function of an interactive figure raised an exception."""


# ----------------------------------------------------------------------------- helpers

_ICONS = {  # inline SVG for the player buttons (Matplotlib's template uses a CDN font)
    "fa-minus": '<path d="M2 7h12v2H2z"/>',
    "fa-plus": '<path d="M7 2h2v5h5v2H9v5H7V9H2V7h5z"/>',
    "fa-fast-backward": '<path d="M2 2h2v12H2zM4 8l5-6v12zM9 8l5-6v12z"/>',
    "fa-step-backward": '<path d="M3 2h2v12H3zM5 8l8-6v12z"/>',
    "fa-play fa-flip-horizontal": '<path d="M13 2v12L3 8z"/>',
    "fa-pause": '<path d="M3 2h4v12H3zM9 2h4v12H9z"/>',
    "fa-play": '<path d="M3 2v12l10-6z"/>',
    "fa-step-forward": '<path d="M11 2h2v12h-2zM11 8L3 2v12z"/>',
    "fa-fast-forward": '<path d="M12 2h2v12h-2zM12 8L7 2v12zM7 8L2 2v12z"/>',
}


def _offline_player(html: str, alt: str) -> str:
    """Make Matplotlib's JS player self-contained (no CDN stylesheet, inline SVG icons)
    and accessible (``alt`` text on the frame image)."""
    html = re.sub(r"<link[^>]*font-awesome[^>]*>", "", html, flags=re.DOTALL)
    html = html.replace('<img id="', f'<img alt="{escape(alt, quote=True)}" id="', 1)

    def icon(match: re.Match[str]) -> str:
        path = _ICONS.get(match.group(1).strip(), '<circle cx="8" cy="8" r="3"/>')
        return (
            '<svg width="12" height="12" viewBox="0 0 16 16" fill="currentColor" '
            f'aria-hidden="true" style="vertical-align:middle">{path}</svg>'
        )

    return re.sub(r'<i class="fa (fa-[^"]*)"></i>', icon, html)


def animation_html(
    fig: Figure,
    update: Callable[[Any], Any],
    frames: int | Sequence[Any],
    fps: float = 6,
    *,
    default_mode: str = "loop",
    dpi: float = _FRAME_DPI,
    close: bool = True,
    alt: str = "Animation",
) -> str:
    r"""A self-contained JavaScript animation player (HTML) of ``update`` over ``frames``.

    The player is Matplotlib's ``to_jshtml`` one (:class:`matplotlib.animation.HTMLWriter`,
    frames embedded as base64 PNGs), driven frame by frame as
    :class:`~matplotlib.animation.FuncAnimation` would, but drawing each frame once
    instead of twice. The CDN icon font of Matplotlib's template is replaced by inline
    SVG, so the player works offline and in the static book.

    Args:
        fig: the figure that ``update`` redraws.
        update: called as ``update(frame)`` for each frame; redraws ``fig``.
        frames: number of frames, or the sequence of values passed to ``update``.
        fps: frames per second of playback.
        default_mode: ``"loop"``, ``"once"`` or ``"reflect"``.
        dpi: resolution of the frames (modest, to keep the page small).
        close: if ``fig`` is managed by pyplot, close it afterwards so that the inline
            backend does not show it a second time.
        alt: text alternative of the animated image, for screen readers.

    Returns:
        The HTML of the player (a ``<div>``, a ``<style>`` and a ``<script>``).

    Example:
        >>> fig = Figure(figsize=(2, 2))
        >>> ax = fig.add_subplot()
        >>> html = animation_html(fig, lambda i: ax.plot([0, 1], [0, i]), 3, dpi=30)
        >>> "<script" in html and "https://" not in html
        True
    """
    if default_mode not in {"loop", "once", "reflect"}:
        raise ValueError(f"default_mode must be 'loop', 'once' or 'reflect', got {default_mode!r}")
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps!r}")
    seq = range(frames) if isinstance(frames, int) else frames
    if len(seq) < 1:
        raise ValueError("need at least one frame")
    try:
        # 'tight' bboxes would let the frame size vary (Animation.save turns them off too)
        with TemporaryDirectory() as tmp, mpl.rc_context({"savefig.bbox": "standard"}):
            path = Path(tmp, "animation.html")
            writer = HTMLWriter(fps=fps, embed_frames=True, default_mode=default_mode,
                                embed_limit=100.0)
            with writer.saving(fig, str(path), dpi):
                for frame in seq:
                    update(frame)
                    writer.grab_frame()
            html = path.read_text()
    finally:
        if close and plt.fignum_exists(getattr(fig, "number", -1)):
            plt.close(fig)
    return _offline_player(html, alt)


def _png_size(png: bytes) -> tuple[int, int]:
    """(width, height) in pixels from a PNG header."""
    return struct.unpack(">II", png[16:24])


def _fmt(v: Value) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, numbers.Integral):
        return str(int(v))
    return f"{float(v):.3g}"


def _as_values(name: str, seq: Any) -> list[Value]:
    """Check one entry of ``params``: a non-empty sequence of numbers or strings."""
    if isinstance(seq, (str, bytes)) or not isinstance(seq, Iterable):
        raise TypeError(
            f"params[{name!r}] must be a sequence of values (list, array, range), "
            f"got {type(seq).__name__}"
        )
    if hasattr(seq, "tolist"):  # numpy arrays and torch tensors: plain Python numbers
        seq = seq.tolist()
    values: list[Value] = []
    for v in seq:
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, bool) or not isinstance(v, (numbers.Real, str)):
            raise TypeError(f"params[{name!r}] must hold numbers or strings, got {v!r}")
        if isinstance(v, numbers.Real) and not isinstance(v, numbers.Integral):
            v = float(v)
            if not math.isfinite(v):
                raise ValueError(f"params[{name!r}] must be finite, got {v!r}")
        values.append(v)
    if not values:
        raise ValueError(f"params[{name!r}] is empty: give at least one value")
    if any(isinstance(v, float) for v in values):  # [0, 0.5, 1] -> floats throughout
        values = [float(v) if isinstance(v, numbers.Real) else v for v in values]
    return values


def _match(name: str, values: list[Value], v: Any) -> Value:
    """The element of ``values`` equal to ``v`` (numbers up to rounding)."""
    if isinstance(v, np.generic):
        v = v.item()
    for u in values:
        if isinstance(u, str) or isinstance(v, str):
            if u == v:
                return u
        elif isinstance(v, numbers.Real) and math.isclose(u, v, rel_tol=1e-9, abs_tol=1e-12):
            return u
    raise ValueError(f"{v!r} is not among the values of {name!r}: {[_fmt(u) for u in values]}")


def _evenly_spaced(values: list[Value]) -> bool:
    if len(values) < 2 or not all(isinstance(v, numbers.Real) for v in values):
        return False
    d = np.diff(np.asarray(values, dtype=float))
    return bool(d[0] > 0 and np.allclose(d, d[0], rtol=1e-6, atol=0))


def _decimals(step: float) -> int:
    for d in range(7):
        if abs(round(step * 10**d) - step * 10**d) < 1e-6 * max(1.0, step * 10**d):
            return d
    return 6


@contextmanager
def _no_new_pyplot_figures() -> Iterator[None]:
    """Close any pyplot figure created inside (e.g. by a stray ``plt.gca()`` in draw)."""
    before = set(plt.get_fignums())
    try:
        yield
    finally:
        for num in set(plt.get_fignums()) - before:
            plt.close(num)


_FONT_KEYS = ("font.size", "axes.titlesize", "axes.labelsize", "xtick.labelsize",
              "ytick.labelsize", "legend.fontsize", "figure.titlesize")


def _small_fonts(panel_width: float) -> dict[str, float]:
    """rcParams that shrink fonts for narrow panels (small multiples), at least 6 pt."""
    scale = min(1.0, max(0.7, panel_width / 2.6))
    base = mpl.rcParams["font.size"]
    out = {}
    for key in _FONT_KEYS:
        size = mpl.rcParams[key]
        if isinstance(size, str):  # "large", "medium", ...: relative to font.size
            size = base * {"xx-small": 0.579, "x-small": 0.694, "small": 0.833, "medium": 1.0,
                           "large": 1.2, "x-large": 1.44, "xx-large": 1.728}.get(size, 1.0)
        out[key] = max(6.0, float(size) * scale)
    return out


def _savefig_png(fig: Figure, dpi: float) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", pad_inches=0.05,
                facecolor="white")
    return buf.getvalue()


# ----------------------------------------------------------------------------- Interactive


class Interactive:
    r"""A figure with parameters: live sliders, an HTML animation or a still image.

    Made by :func:`interactive_figure` (see there for the arguments). Displaying it (as
    the last expression of a cell) calls :meth:`_repr_mimebundle_`.

    Attributes:
        params: parameter name -> list of values, in order.
        defaults: parameter name -> default value.
        animate: name of the parameter that the animation and the stills sweep.
        stills: values of ``animate`` shown side by side in the still image.
    """

    def __init__(
        self,
        draw: Callable[..., Any],
        params: Mapping[str, Sequence[Value]],
        *,
        defaults: Mapping[str, Value] | None = None,
        animate: str | None = None,
        stills: Sequence[Value] | None = None,
        ncols_still: int | None = None,
        figsize: tuple[float, float] | None = None,
        projection: str | None = None,
        fps: float = 6,
        title: str | None = None,
        resample: bool = False,
        max_frames: int = 30,
        loop: bool = True,
    ) -> None:
        if not callable(draw):
            raise TypeError(
                f"draw must be callable as draw(ax, **values), got {type(draw).__name__}"
            )
        if not isinstance(params, Mapping) or not params:
            raise ValueError("params must be a non-empty dict: name -> sequence of values")
        self._draw = draw
        self.params: dict[str, list[Value]] = {}
        for name, seq in params.items():
            if not isinstance(name, str) or not name.isidentifier():
                raise ValueError(f"parameter names must be identifiers, got {name!r}")
            if name in {"ax", "seed"} and (name == "ax" or resample):
                raise ValueError(f"{name!r} is reserved and cannot be a parameter name")
            self.params[name] = _as_values(name, seq)
        self.defaults: dict[str, Value] = {n: v[0] for n, v in self.params.items()}
        for name, v in (defaults or {}).items():
            if name not in self.params:
                raise ValueError(
                    f"defaults names unknown parameter {name!r}; params are {list(self.params)}"
                )
            self.defaults[name] = _match(name, self.params[name], v)
        self.animate = next(iter(self.params)) if animate is None else animate
        if self.animate not in self.params:
            raise ValueError(
                f"animate={self.animate!r} is not a parameter; params are {list(self.params)}"
            )
        values = self.params[self.animate]
        if stills is None:
            m = len(values)
            idx = np.unique(np.linspace(0, m - 1, min(4, m)).round().astype(int))
            self.stills: list[Value] = [values[i] for i in idx]
        else:
            self.stills = [_match(self.animate, values, v) for v in stills]
            if not self.stills:
                raise ValueError("stills must name at least one value")
        self._ncols = len(self.stills) if ncols_still is None else ncols_still
        if not isinstance(self._ncols, int) or self._ncols < 1:
            raise ValueError(f"ncols_still must be a positive int, got {ncols_still!r}")
        self._figsize = (4.8, 3.6) if figsize is None else (float(figsize[0]), float(figsize[1]))
        if not (self._figsize[0] > 0 and self._figsize[1] > 0):
            raise ValueError(f"figsize must be positive, got {figsize!r}")
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps!r}")
        if not isinstance(max_frames, int) or max_frames < 1:
            raise ValueError(f"max_frames must be a positive int, got {max_frames!r}")
        self._projection = projection
        self._fps = fps
        self._title = title
        self._resample = bool(resample)
        self._max_frames = max_frames
        self._mode = "loop" if loop else "once"
        self._seed = 0
        self._widget: Any = None
        self._controls: dict[str, Any] = {}
        self._output: Any = None
        self._html: str | None = None
        # Render now, so that an error in draw surfaces in the calling cell (an exception
        # inside _repr_mimebundle_ would only be printed by IPython, not stop the build).
        self._png = self._render_stills()
        if is_static():
            self._html = self._render_animation()

    # --------------------------------------------------------------------- drawing

    def _call_draw(self, ax: Axes, values: Mapping[str, Value], seed: int) -> None:
        kwargs = dict(values)
        if self._resample:
            kwargs["seed"] = seed
        try:
            with _no_new_pyplot_figures():
                self._draw(ax, **kwargs)
        except Exception as err:
            args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
            name = getattr(self._draw, "__name__", "draw")
            raise DrawError(
                f"interactive_figure: {name}(ax, {args}) raised {type(err).__name__}: {err}"
            ) from err
        if not ax.get_title():
            ax.set_title(f"{self.animate} = {_fmt(values[self.animate])}")

    def _new_axes(self, fig: Figure, *args: int) -> Axes:
        return fig.add_subplot(*args, projection=self._projection)

    def _render_stills(self) -> bytes:
        n = len(self.stills)
        ncols = min(self._ncols, n)
        nrows = math.ceil(n / ncols)
        w = min(self._figsize[0], _TEXT_WIDTH / ncols)
        h = w * self._figsize[1] / self._figsize[0]
        with mpl.rc_context(_small_fonts(w)):
            fig = Figure(figsize=(w * ncols, h * nrows + (0.3 if self._title else 0.0)))
            for i, v in enumerate(self.stills):
                ax = self._new_axes(fig, nrows, ncols, i + 1)
                self._call_draw(ax, {**self.defaults, self.animate: v}, seed=0)
            if self._title:
                fig.suptitle(self._title)
            return _savefig_png(fig, _STILL_DPI)

    def _render_one(self, values: Mapping[str, Value], seed: int, dpi: float) -> bytes:
        fig = Figure(figsize=self._figsize)
        ax = self._new_axes(fig)
        self._call_draw(ax, values, seed)
        if self._title:
            fig.suptitle(self._title)
        return _savefig_png(fig, dpi)

    def _render_animation(self) -> str:
        frames = self.frames()
        fig = Figure(figsize=self._figsize, dpi=_FRAME_DPI)
        state: dict[str, Any] = {}

        def update(i: int) -> None:
            if "ax" not in state:  # first frame: lay out once, then freeze the layout
                fig.clear()
                ax = self._new_axes(fig)
                self._call_draw(ax, frames[i], seed=0)
                if self._title:
                    fig.suptitle(self._title)
                engine = fig.get_layout_engine()
                if engine is not None:
                    engine.execute(fig)
                    fig.set_layout_engine("none")
                state["ax"], state["pos"] = ax, ax.get_position(original=True)
                return
            # later frames reuse the Axes: faster, and the panel does not jitter
            ax = state["ax"]
            for other in list(fig.axes):
                if other is not ax:  # e.g. a colorbar made by draw
                    other.remove()
            ax.clear()
            ax.set_position(state["pos"])
            self._call_draw(ax, frames[i], seed=0)

        return animation_html(fig, update, range(len(frames)), fps=self._fps,
                              default_mode=self._mode, dpi=_FRAME_DPI,
                              alt=self.describe())

    # --------------------------------------------------------------------- public API

    def frames(self) -> list[dict[str, Value]]:
        r"""Parameter values of the animation frames, in order.

        The animated parameter sweeps its values (at most ``max_frames`` of them, evenly
        subsampled, first and last kept); the others stay at their defaults. The ``seed``
        of ``resample=True`` is not included (it is 0 in every frame).

        Returns:
            One dict ``name -> value`` per frame.
        """
        values = self.params[self.animate]
        m = len(values)
        idx = np.unique(np.linspace(0, m - 1, min(m, self._max_frames)).round().astype(int))
        return [{**self.defaults, self.animate: values[i]} for i in idx]

    def still_png(self) -> bytes:
        r"""The still image (small multiples over :attr:`stills`) as PNG bytes."""
        return self._png

    def save_png(self, path: str | os.PathLike[str]) -> None:
        r"""Write the still image (small multiples over :attr:`stills`) to a PNG file."""
        with open(path, "wb") as f:
            f.write(self._png)

    def to_jshtml(self) -> str:
        r"""The HTML animation player over :meth:`frames` (computed once, then cached)."""
        if self._html is None:
            self._html = self._render_animation()
        return self._html

    def describe(self) -> str:
        r"""One line on what the figure shows, used as its ``text/plain`` repr."""
        parts = []
        for name, values in self.params.items():
            if _evenly_spaced(values):
                parts.append(f"{name} in [{_fmt(values[0])}, {_fmt(values[-1])}]")
            else:
                parts.append(f"{name} in {{{', '.join(_fmt(v) for v in values)}}}")
        head = f"{self._title}. " if self._title else ""
        return f"{head}Interactive figure: {'; '.join(parts)}; run the notebook for live sliders."

    def __repr__(self) -> str:
        return self.describe()

    def widget(self) -> Any:
        r"""The live view: sliders, an optional Resample button, and the figure.

        Built once, then cached. Evenly spaced numbers get a ``FloatSlider`` (or
        ``IntSlider``), other values a ``SelectionSlider``; moving a slider redraws.

        Returns:
            An ``ipywidgets.VBox``.
        """
        if self._widget is not None:
            return self._widget
        import ipywidgets as widgets

        style = {"description_width": "initial"}
        layout = widgets.Layout(width="420px")
        for name, values in self.params.items():
            default = self.defaults[name]
            if _evenly_spaced(values) and all(isinstance(v, numbers.Integral) for v in values):
                ctl = widgets.IntSlider(value=default, min=values[0], max=values[-1],
                                        step=values[1] - values[0], description=name,
                                        style=style, layout=layout)
            elif _evenly_spaced(values):
                step = float(values[1]) - float(values[0])
                ctl = widgets.FloatSlider(value=default, min=values[0], max=values[-1], step=step,
                                          readout_format=f".{_decimals(step)}f",
                                          description=name, style=style, layout=layout)
            else:
                labels = [_fmt(v) for v in values]
                if len(set(labels)) < len(labels):
                    labels = [repr(v) for v in values]
                ctl = widgets.SelectionSlider(options=list(zip(labels, values)), value=default,
                                              description=name, style=style, layout=layout)
            ctl.observe(self._on_change, names="value")
            self._controls[name] = ctl
        children: list[Any] = list(self._controls.values())
        if self._resample:
            button = widgets.Button(description="Resample", icon="refresh",
                                    tooltip="Draw new random samples (seed + 1)")
            button.on_click(self._on_resample)
            children.append(button)
        self._output = widgets.Output()
        children.append(self._output)
        self._widget = widgets.VBox(children)
        self._redraw()
        return self._widget

    def values(self) -> dict[str, Value]:
        r"""Current values of the live sliders (the defaults before :meth:`widget`)."""
        out = dict(self.defaults)
        for name, ctl in self._controls.items():
            out[name] = self._snap(name, ctl.value)
        return out

    @property
    def seed(self) -> int:
        r"""Current seed of the live view (``resample=True``; incremented by Resample)."""
        return self._seed

    # --------------------------------------------------------------------- live view

    def _snap(self, name: str, v: Any) -> Value:
        values = self.params[name]
        if isinstance(v, str) or not all(isinstance(u, numbers.Real) for u in values):
            return _match(name, values, v)
        return values[int(np.argmin(np.abs(np.asarray(values, dtype=float) - float(v))))]

    def _on_change(self, change: Any) -> None:
        self._redraw()

    def _on_resample(self, button: Any) -> None:
        self._seed += 1
        self._redraw()

    def _redraw(self) -> None:
        out = self._output
        try:
            from IPython import get_ipython

            ip = get_ipython()
        except ImportError:
            ip = None
        if ip is not None and getattr(ip, "kernel", None) is not None:
            from IPython.display import Image, clear_output, display

            with out:  # in a kernel: errors show as a traceback inside the output area
                png = self._render_one(self.values(), self._seed, 2 * _LIVE_DPI)
                clear_output(wait=True)
                display(Image(data=png, format="png", retina=True))
        else:  # no kernel (tests, scripts): set the output state directly
            png = self._render_one(self.values(), self._seed, 2 * _LIVE_DPI)
            w, h = _png_size(png)
            out.outputs = (
                {
                    "output_type": "display_data",
                    "data": {"image/png": base64.b64encode(png).decode("ascii"),
                             "text/plain": "<figure>"},
                    "metadata": {"image/png": {"width": w // 2, "height": h // 2}},
                },
            )

    # --------------------------------------------------------------------- display

    def _repr_mimebundle_(
        self, include: Iterable[str] | None = None, exclude: Iterable[str] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        r"""The mime bundle that Jupyter displays.

        Always ``image/png`` (the stills, base64) and ``text/plain`` (:meth:`describe`);
        in static mode also ``text/html`` (the animation player); otherwise the widget
        view ``application/vnd.jupyter.widget-view+json``.

        Returns:
            ``(data, metadata)``; the PNG metadata halves its pixel size (retina).
        """
        w, h = _png_size(self._png)
        data: dict[str, Any] = {
            "text/plain": self.describe(),
            "image/png": base64.b64encode(self._png).decode("ascii"),
        }
        metadata: dict[str, Any] = {"image/png": {"width": w // 2, "height": h // 2}}
        if is_static():
            data["text/html"] = self.to_jshtml()
        else:
            view = self.widget()._repr_mimebundle_()
            data.update({k: v for k, v in view.items() if k != "text/plain"})
        if include is not None:
            data = {k: v for k, v in data.items() if k in set(include)}
        if exclude is not None:
            data = {k: v for k, v in data.items() if k not in set(exclude)}
        return data, {k: v for k, v in metadata.items() if k in data}


def interactive_figure(
    draw: Callable[..., Any],
    params: Mapping[str, Sequence[Value]],
    *,
    animate: str | None = None,
    stills: Sequence[Value] | None = None,
    ncols_still: int | None = None,
    figsize: tuple[float, float] | None = None,
    projection: str | None = None,
    fps: float = 6,
    title: str | None = None,
    resample: bool = False,
    defaults: Mapping[str, Value] | None = None,
    max_frames: int = 30,
    loop: bool = True,
) -> Interactive:
    r"""A figure with sliders that also works in the static HTML book and in the PDF.

    Live (a Jupyter kernel): sliders for every parameter redraw the figure. Static
    (``GMBOOK_STATIC=1``, the book build): an HTML animation sweeps ``animate`` with the
    other parameters at their defaults. Everywhere: a still image of small multiples over
    ``stills``, which the PDF shows. ``draw`` is called at once for the stills, so an
    error in it is raised here, as :class:`DrawError`.

    Args:
        draw: draws one state, called as ``draw(ax, **values)`` (plus ``seed=`` with
            ``resample``) on a fresh Axes; it must not create figures of its own.
        params: ordered dict name -> values (numbers or strings), e.g.
            ``{"t": np.linspace(0, 1, 21), "noise": [0.02, 0.05, 0.1, 0.2]}``.
        animate: parameter swept by the animation and the stills (default: the first).
        stills: values of ``animate`` shown side by side in the still image (default:
            4 evenly spaced values, first and last included).
        ncols_still: panels per row of the still image (default: all in one row).
        figsize: size in inches of one view (default ``(4.8, 3.6)``); still panels keep
            its aspect ratio and share the 6.4-inch text width.
        projection: e.g. ``"3d"``, passed to ``add_subplot``.
        fps: frames per second of the animation.
        title: figure title, shown above every view.
        resample: also pass ``seed: int`` to ``draw``; the live view gets a "Resample"
            button that increments it, and the animation and stills use seed 0.
        defaults: name -> default value, overriding the default of each parameter,
            which is its **first** value (so list the value to show first).
        max_frames: at most this many animation frames (values evenly subsampled).
        loop: the animation loops (else plays once).

    Returns:
        An :class:`Interactive`; display it as the last expression of a cell.

    Raises:
        DrawError: if ``draw`` fails on one of the stills (or frames, in static mode).
        ValueError: for empty or unknown parameters, values not among a parameter's.
        TypeError: if ``draw`` is not callable or values are not numbers or strings.

    Example:
        >>> def draw(ax, a):
        ...     ax.plot([0, 1], [0, a])
        >>> fig = interactive_figure(draw, {"a": [1.0, 2.0, 3.0]})
        >>> fig
        Interactive figure: a in [1, 3]; run the notebook for live sliders.
        >>> [f["a"] for f in fig.frames()], fig.stills
        ([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    """
    return Interactive(
        draw, params, defaults=defaults, animate=animate, stills=stills,
        ncols_still=ncols_still, figsize=figsize, projection=projection, fps=fps,
        title=title, resample=resample, max_frames=max_frames, loop=loop,
    )
