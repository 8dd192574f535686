r"""Figure helpers with one house style for the whole book.

Every chapter calls :func:`use_style` once in its first code cell, then draws with the
helpers below. Each helper takes a Matplotlib ``ax``, draws into it and returns it, so that
calls compose::

    fig, ax = figure()
    density2d(ax, model.log_prob, lims=3)
    scatter2d(ax, two_moons(500), color=COLORS.data, label="data")

Tensors are accepted wherever arrays are (they are converted with
``.detach().cpu().numpy()``), and 2-D points always have shape ``(n, 2)``.

The colours of :data:`COLORS` are the Okabe--Ito palette (Okabe and Ito, 2008), which stays
distinguishable under the common forms of colour blindness; images use ``viridis``, which
is perceptually uniform.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Union

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import torch
from cycler import cycler
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.colors import to_hex, to_rgb
from matplotlib.figure import Figure
from torch import Tensor

__all__ = [
    "COLORS",
    "Palette",
    "RC_PARAMS",
    "TEXT_WIDTH",
    "density2d",
    "figure",
    "grid2d",
    "loss_curve",
    "path_slices_3d",
    "scatter2d",
    "square_lims",
    "trajectories",
    "use_style",
]

ArrayLike = Union[Tensor, np.ndarray, Sequence[Any]]
#: Axis limits: ``L`` (both axes ``(-L, L)``), ``(lo, hi)`` (both axes) or
#: ``((xmin, xmax), (ymin, ymax))``.
Lims = Union[float, tuple[float, float], tuple[tuple[float, float], tuple[float, float]]]

#: Width in inches of the book's text column that figures are sized for.
TEXT_WIDTH: float = 6.4
_DEFAULT_HEIGHT: float = 3.6


@dataclass(frozen=True)
class Palette:
    r"""The book's named colours: the same role always has the same colour.

    Attributes:
        data: samples of the data distribution :math:`p_\text{data}`.
        model: samples of (or curves of) the learned model :math:`p_\theta`.
        prior: the noise or prior distribution, e.g. :math:`\mathcal N(0, I)`.
        accent: anything to single out (a highlighted point, a mode, a target).
        forward: the forward (noising) process.
        reverse: the reverse (generative) process.
        cycle: the default colour cycle for several curves.

    Colours are hex strings, so they work with Matplotlib and in HTML. Index by name
    (``COLORS["data"]``) or by attribute (``COLORS.data``).
    """

    data: str
    model: str
    prior: str
    accent: str
    forward: str
    reverse: str
    cycle: tuple[str, ...]

    def __getitem__(self, name: str) -> str:
        r"""Colour of a role by name, e.g. ``COLORS["model"]``."""
        if name == "cycle" or name not in self.__dataclass_fields__:
            roles = [f for f in self.__dataclass_fields__ if f != "cycle"]
            raise KeyError(f"unknown colour role {name!r}; expected one of {roles}")
        return getattr(self, name)


# Okabe-Ito: blue, vermillion, bluish green, orange, reddish purple, sky blue, yellow, black.
_OKABE_ITO = (
    "#0072B2", "#D55E00", "#009E73", "#E69F00", "#CC79A7", "#56B4E9", "#F0E442", "#000000",
)

#: The named palette used everywhere in the book (see :class:`Palette`).
COLORS = Palette(
    data="#0072B2",  # blue
    model="#D55E00",  # vermillion
    prior="#7F7F7F",  # neutral grey: noise
    accent="#CC79A7",  # reddish purple
    forward="#009E73",  # bluish green
    reverse="#E69F00",  # orange
    cycle=_OKABE_ITO,
)

#: The rcParams that :func:`use_style` sets.
RC_PARAMS: dict[str, Any] = {
    "figure.figsize": (TEXT_WIDTH, _DEFAULT_HEIGHT),
    "figure.dpi": 100,
    "figure.facecolor": "white",
    "figure.constrained_layout.use": True,
    "savefig.dpi": 200,
    "savefig.bbox": "tight",
    "savefig.pad_inches": 0.05,
    "savefig.facecolor": "white",
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "legend.frameon": False,
    "figure.titlesize": 11,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": False,
    "grid.color": "#b0b0b0",
    "grid.alpha": 0.35,
    "grid.linewidth": 0.6,
    "axes.prop_cycle": cycler(color=list(_OKABE_ITO)),
    "axes.linewidth": 0.8,
    "lines.linewidth": 1.5,
    "lines.markersize": 4,
    "scatter.edgecolors": "none",
    "image.cmap": "viridis",
    "image.origin": "lower",
    "animation.html": "jshtml",
}


def use_style() -> None:
    r"""Apply the book's Matplotlib style (idempotent; call it once per chapter).

    Sets :data:`RC_PARAMS`: figures sized for a text column (6.4 x 3.6 in by default),
    10 pt fonts, no top or right spines, grid off (its style is light when turned on),
    the colour-blind-safe :data:`COLORS` cycle, ``viridis`` images, constrained layout,
    and ``figure.dpi`` 100 with ``savefig.dpi`` 200 so that saved PNGs stay crisp in HTML
    and in the PDF.

    Under IPython with the inline backend (Jupyter, Colab, the book build) it also
    selects the ``'retina'`` PNG figure format. PNG rather than SVG because the PDF build
    needs a bitmap. Outside IPython only the rcParams are set.

    Example:
        >>> import matplotlib
        >>> with matplotlib.rc_context():  # restores the rcParams afterwards
        ...     use_style()
        ...     matplotlib.rcParams["axes.spines.top"]
        False
    """
    _use_retina_inline()  # first: activating the inline backend may touch rcParams
    mpl.rcParams.update(RC_PARAMS)


def _use_retina_inline() -> bool:
    """Select retina PNG output of the inline backend; ``False`` if not applicable."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    if get_ipython() is None:
        return False
    try:
        backend = str(mpl.get_backend(auto_select=False))  # type: ignore[call-arg]
    except TypeError:  # Matplotlib < 3.10
        backend = str(mpl.rcParams._get("backend"))
    if "inline" not in backend.lower():
        return False
    # Setting the formats must never break a chapter: any failure leaves the default PNG.
    try:
        from matplotlib_inline import backend_inline  # importing it activates the backend
        from matplotlib_inline.config import InlineBackend

        InlineBackend.instance().figure_formats = {"retina"}  # survives later activation
        backend_inline.set_matplotlib_formats("retina")
    except Exception:  # noqa: BLE001
        return False
    return True


# ----------------------------------------------------------------------------- inputs


def _to_numpy(x: ArrayLike, name: str) -> np.ndarray:
    """Tensor, array or nested sequence -> float ndarray (tensors are detached)."""
    if isinstance(x, Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, (list, tuple)) and x and isinstance(x[0], Tensor):
        x = [float(v) for v in x] if x[0].ndim == 0 else torch.stack(list(x)).detach().cpu()
        return np.asarray(x)
    try:
        return np.asarray(x, dtype=float)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"{name} must be a Tensor or an array of numbers, got {type(x).__name__}"
        ) from err


def _as_points(x: ArrayLike, name: str = "x") -> np.ndarray:
    """Check and convert 2-D points, shape ``(n, 2)``."""
    arr = _to_numpy(x, name)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{name} must have shape (n, 2), got {tuple(arr.shape)}")
    return arr


def _parse_lims(lims: Lims) -> tuple[tuple[float, float], tuple[float, float]]:
    """Normalize limits to ``((xmin, xmax), (ymin, ymax))``."""
    try:
        if np.ndim(lims) == 0:
            half = float(lims)  # type: ignore[arg-type]
            pair = ((-half, half), (-half, half))
        elif np.shape(lims) == (2,):
            lo, hi = (float(v) for v in lims)  # type: ignore[union-attr]
            pair = ((lo, hi), (lo, hi))
        elif np.shape(lims) == (2, 2):
            (a, b), (c, d) = lims  # type: ignore[misc]
            pair = ((float(a), float(b)), (float(c), float(d)))
        else:
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(
            f"lims must be L, (lo, hi) or ((xmin, xmax), (ymin, ymax)), got {lims!r}"
        ) from None
    for lo, hi in pair:
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"lims must be finite with lo < hi, got {lims!r}")
    return pair


def _check_ax(ax: Any, *, three_d: bool = False) -> None:
    if not isinstance(ax, Axes):
        raise TypeError(f"ax must be a matplotlib Axes, got {type(ax).__name__}")
    if three_d and getattr(ax, "name", "") != "3d":
        raise TypeError("ax must be a 3-D Axes, e.g. fig.add_subplot(projection='3d')")


# ----------------------------------------------------------------------------- helpers


def figure(
    nrows: int = 1,
    ncols: int = 1,
    *,
    width: float | None = None,
    height: float | None = None,
    **kw: Any,
) -> tuple[Figure, Any]:
    r"""A new figure with consistently sized panels, like :func:`matplotlib.pyplot.subplots`.

    The default width is the text column (:data:`TEXT_WIDTH` = 6.4 in); the default height
    gives each row ``min(3.6, width / ncols)`` inches, so one panel is 6.4 x 3.6 in and a
    row of small multiples has square panels.

    Args:
        nrows: number of rows of panels.
        ncols: number of columns of panels.
        width: figure width in inches (default :data:`TEXT_WIDTH`).
        height: figure height in inches (default: see above).
        **kw: passed to :func:`matplotlib.pyplot.subplots` (``sharex``,
            ``subplot_kw={"projection": "3d"}``, ``squeeze``, ...).

    Returns:
        ``(fig, axes)``: ``axes`` is one Axes for a single panel, else an array of shape
        ``(nrows, ncols)`` squeezed as by :func:`~matplotlib.pyplot.subplots`.

    Example:
        >>> fig, axes = figure(1, 3)
        >>> fig.get_size_inches().round(2).tolist(), axes.shape
        ([6.4, 2.13], (3,))
        >>> plt.close(fig)
    """
    for name, v in (("nrows", nrows), ("ncols", ncols)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if "figsize" in kw:
        raise TypeError("figure() takes width= and height=, not figsize=")
    w = TEXT_WIDTH if width is None else float(width)
    h = nrows * min(_DEFAULT_HEIGHT, w / ncols) if height is None else float(height)
    if not (w > 0 and h > 0):
        raise ValueError(f"width and height must be positive, got {w} and {h}")
    return plt.subplots(nrows, ncols, figsize=(w, h), **kw)


def square_lims(ax: Axes, lims: Lims) -> Axes:
    r"""Set the limits of a 2-D panel and an equal aspect ratio.

    Args:
        ax: the Axes.
        lims: ``L`` for ``[-L, L]^2``, ``(lo, hi)`` for ``[lo, hi]^2``, or
            ``((xmin, xmax), (ymin, ymax))``.

    Returns:
        ``ax``.

    Example:
        >>> fig, ax = plt.subplots()
        >>> [float(v) for v in square_lims(ax, 2).get_xlim() + ax.get_ylim()]
        [-2.0, 2.0, -2.0, 2.0]
        >>> plt.close(fig)
    """
    _check_ax(ax)
    (x0, x1), (y0, y1) = _parse_lims(lims)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_aspect("equal", adjustable="box")
    return ax


def scatter2d(
    ax: Axes,
    x: ArrayLike,
    *,
    color: str | None = None,
    label: str | None = None,
    s: float = 4.0,
    alpha: float = 0.6,
    lims: Lims | None = None,
    **kwargs: Any,
) -> Axes:
    r"""Scatter plot of 2-D samples with an equal aspect ratio.

    Args:
        ax: the Axes.
        x: samples, shape ``(n, 2)`` (Tensor or array).
        color: marker colour (default :data:`COLORS`\ ``.data``).
        label: legend label.
        s: marker area in points squared.
        alpha: marker opacity.
        lims: optional limits, as for :func:`square_lims`.
        **kwargs: passed to :meth:`~matplotlib.axes.Axes.scatter`.

    Returns:
        ``ax`` (one new collection in ``ax.collections``).

    Example:
        >>> fig, ax = plt.subplots()
        >>> ax = scatter2d(ax, torch.randn(100, 2), lims=3)
        >>> len(ax.collections), ax.get_aspect()
        (1, 1.0)
        >>> plt.close(fig)
    """
    _check_ax(ax)
    pts = _as_points(x)
    ax.scatter(
        pts[:, 0], pts[:, 1], s=s, c=COLORS.data if color is None else color,
        alpha=alpha, label=label, linewidths=0, **kwargs,
    )
    ax.set_aspect("equal", adjustable="box")
    if lims is not None:
        square_lims(ax, lims)
    return ax


def grid2d(
    lims: Lims = (-3.0, 3.0),
    n: int = 200,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    r"""A regular ``n x n`` grid over a rectangle, as coordinates and as a batch of points.

    Ordering: ``xx[i, j] = xs[j]`` and ``yy[i, j] = ys[i]`` (``indexing="xy"``): rows run
    along :math:`y`, columns along :math:`x`. ``points`` is ``(xx, yy)`` flattened row by
    row, so values computed on ``points`` reshape with ``.reshape(n, n)`` to match ``xx``
    and ``yy``, ready for ``contourf(xx, yy, z)`` or ``imshow(z, origin="lower")``.

    Args:
        lims: limits, as for :func:`square_lims`.
        n: points per axis (at least 2).
        device: device of the returned tensors.
        dtype: floating dtype (default ``torch.get_default_dtype()``).

    Returns:
        ``(xx, yy, points)`` with shapes ``(n, n)``, ``(n, n)`` and ``(n * n, 2)``.

    Example:
        >>> xx, yy, points = grid2d((-1, 1), n=3)
        >>> xx.shape, points.shape
        (torch.Size([3, 3]), torch.Size([9, 2]))
        >>> points[:4].tolist()
        [[-1.0, -1.0], [0.0, -1.0], [1.0, -1.0], [-1.0, 0.0]]
    """
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 2:
        raise ValueError(f"n must be an int >= 2, got {n!r}")
    (x0, x1), (y0, y1) = _parse_lims(lims)
    xs = torch.linspace(x0, x1, int(n), device=device, dtype=dtype)
    ys = torch.linspace(y0, y1, int(n), device=device, dtype=dtype)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")  # (n, n): rows are y, columns are x
    points = torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=-1)  # (n * n, 2)
    return xx, yy, points


def density2d(
    ax: Axes,
    log_prob: Callable[[Tensor], Tensor],
    *,
    lims: Lims = (-3.0, 3.0),
    n: int = 200,
    cmap: str | None = None,
    levels: int | Sequence[float] | None = None,
    log: bool = False,
    device: torch.device | str | None = None,
    alpha: float = 1.0,
) -> Axes:
    r"""Image (or filled contours) of a 2-D density given by its log-density.

    Evaluates ``log_prob`` once on the points of :func:`grid2d` under
    :func:`torch.no_grad` and draws :math:`p(x) = \exp \log p(x)` (or :math:`\log p(x)`
    with ``log=True``). A ``log_prob`` that needs gradients itself (e.g. the divergence of
    a continuous normalizing flow) must enable them internally with
    :func:`torch.enable_grad`.

    Args:
        ax: the Axes.
        log_prob: maps points, shape ``(B, 2)``, to log-densities, shape ``(B,)``
            (unnormalized is fine).
        lims: limits, as for :func:`square_lims`.
        n: grid points per axis.
        cmap: colour map (default ``image.cmap``, i.e. ``viridis`` in the house style).
        levels: ``None`` draws an image (``imshow``); an int or a sequence draws filled
            contours (``contourf``) with these levels.
        log: draw :math:`\log p` instead of :math:`p`.
        device: where to evaluate ``log_prob`` (default CPU).
        alpha: opacity.

    Returns:
        ``ax`` (one image in ``ax.images``, or the contour set in ``ax.collections``).

    Raises:
        ValueError: if ``log_prob`` does not return ``n * n`` values.

    Example:
        >>> fig, ax = plt.subplots()
        >>> gauss = lambda x: -0.5 * (x**2).sum(-1)          # (B, 2) -> (B,)
        >>> ax = density2d(ax, gauss, lims=3, n=50)
        >>> ax.images[0].get_array().shape
        (50, 50)
        >>> plt.close(fig)
    """
    _check_ax(ax)
    if not callable(log_prob):
        raise TypeError(f"log_prob must be callable, got {type(log_prob).__name__}")
    (x0, x1), (y0, y1) = _parse_lims(lims)
    xx, yy, points = grid2d(lims, n, device=device)
    with torch.no_grad():
        out = log_prob(points)
    values = _to_numpy(out, "log_prob(points)")
    if values.shape != (points.shape[0],):
        raise ValueError(
            f"log_prob must map points of shape {tuple(points.shape)} to shape "
            f"({points.shape[0]},), got {tuple(values.shape)}"
        )
    z = values.reshape(n, n) if log else np.exp(values.reshape(n, n))  # (n, n), rows are y
    z = np.ma.masked_invalid(z)
    if levels is None:
        ax.imshow(
            z, origin="lower", extent=(x0, x1, y0, y1), cmap=cmap, alpha=alpha,
            interpolation="bilinear", aspect="equal",
        )
    else:
        ax.contourf(xx.cpu().numpy(), yy.cpu().numpy(), z, levels=levels, cmap=cmap, alpha=alpha)
    return square_lims(ax, ((x0, x1), (y0, y1)))


def trajectories(
    ax: Axes,
    paths: ArrayLike,
    *,
    color: str | None = None,
    n_max: int = 100,
    alpha: float = 0.4,
    lw: float = 0.8,
    markers: bool = True,
    start_color: str | None = None,
    end_color: str | None = None,
    s: float = 6.0,
    label: str | None = None,
) -> Axes:
    r"""Draw sample paths :math:`x_{t_0}, \dots, x_{t_{T-1}}` in the plane.

    All paths go into one :class:`~matplotlib.collections.LineCollection`. With
    ``markers`` the start points are dots in the prior colour and the end points in the
    model colour.

    Args:
        ax: the Axes.
        paths: positions over time, shape ``(T, B, 2)`` with ``T >= 2``.
        color: line colour (default :data:`COLORS`\ ``.accent``).
        n_max: draw at most this many paths (evenly chosen, deterministic).
        alpha: line opacity.
        lw: line width.
        markers: mark start and end points.
        start_color: colour of the start markers (default ``COLORS.prior``).
        end_color: colour of the end markers (default ``COLORS.model``).
        s: marker area in points squared.
        label: legend label of the lines.

    Returns:
        ``ax``: one LineCollection, plus two PathCollections with ``markers``.

    Example:
        >>> fig, ax = plt.subplots()
        >>> paths = torch.randn(10, 500, 2).cumsum(0) * 0.1     # (T, B, 2)
        >>> ax = trajectories(ax, paths, n_max=50)
        >>> len(ax.collections), len(ax.collections[0].get_segments())
        (3, 50)
        >>> plt.close(fig)
    """
    _check_ax(ax)
    arr = _to_numpy(paths, "paths")
    if arr.ndim != 3 or arr.shape[-1] != 2 or arr.shape[0] < 2:
        raise ValueError(f"paths must have shape (T, B, 2) with T >= 2, got {tuple(arr.shape)}")
    if not isinstance(n_max, (int, np.integer)) or n_max < 1:
        raise ValueError(f"n_max must be a positive int, got {n_max!r}")
    b = arr.shape[1]
    idx = np.unique(np.linspace(0, b - 1, min(int(n_max), b)).round().astype(int))
    lines = arr[:, idx].transpose(1, 0, 2)  # (b, T, 2)
    ax.add_collection(
        LineCollection(
            list(lines), colors=COLORS.accent if color is None else color,
            linewidths=lw, alpha=alpha, label=label,
        )
    )
    if markers:
        starts = (lines[:, 0], start_color or COLORS.prior)
        for pts, c in (starts, (lines[:, -1], end_color or COLORS.model)):
            ax.scatter(pts[:, 0], pts[:, 1], s=s, c=c, linewidths=0, zorder=3)
    ax.autoscale_view()
    ax.set_aspect("equal", adjustable="datalim")
    return ax


def _blend(c0: str, c1: str, w: float) -> str:
    a, b = np.array(to_rgb(c0)), np.array(to_rgb(c1))
    return to_hex((1 - w) * a + w * b)


def path_slices_3d(
    ax3d: Axes,
    slices: Sequence[ArrayLike],
    times: Sequence[float],
    *,
    colors: str | Sequence[str] | None = None,
    s: float = 2.5,
    alpha: float = 0.8,
    lims: Lims | None = None,
    panes: bool = True,
    t_label: str = "$t$",
    elev: float = 20.0,
    azim: float = -55.0,
    depth: float | None = None,
    zoom: float | None = None,
    ties: int | None = None,
) -> Axes:
    r"""Time slices of a path of distributions :math:`(p_t)_t` in an oblique 3-D view.

    Slice :math:`k` is a scatter of samples of :math:`p_{t_k}` drawn in the plane
    :math:`\{t = t_k\}`, on a light pane; :math:`t` runs along the depth axis, which is
    stretched (``depth``) and seen from the side (``elev``, ``azim``) so that neighbouring
    slices overlap little. Points outside ``lims`` are not drawn.

    When the slices hold the same particles in the same order (row ``i`` of every slice is
    one particle at the successive times, as in a sampled path), thin *ties* join each of
    a few particles from one slice to the next. A particle moving on a straight line at
    constant speed (the linear path) gives ties that line up into one straight line across
    the stack; a curved trajectory (a learned flow) gives a bent polyline.

    A 3-D Axes is always square in Matplotlib, so in a wide panel the stack is enlarged
    (``zoom``) to use the width; give the figure a wide shape, e.g.
    ``plt.figure(figsize=(6.4, 2.6))``.

    Args:
        ax3d: a 3-D Axes (``fig.add_subplot(projection="3d")``).
        slices: samples at each time, each of shape ``(n_k, 2)``.
        times: the times :math:`t_k`, same length as ``slices``.
        colors: one colour, or one per slice (default: a blend from ``COLORS.prior`` at
            the first slice to ``COLORS.data`` at the last).
        s: marker area in points squared.
        alpha: marker opacity.
        lims: extent of the panes, as for :func:`square_lims` (default: symmetric, from
            the largest absolute coordinate).
        panes: draw a light pane behind each slice.
        t_label: name of the time variable in the tick labels (``"$t$ = 0.5"``).
        elev: elevation of the view in degrees.
        azim: azimuth of the view in degrees.
        depth: length of the time axis relative to a pane's side (default
            ``0.9 * len(slices)``).
        zoom: scale of the drawing inside the Axes (default: from the width / height
            ratio of the panel, between 1 and 2.2).
        ties: how many particles to tie across consecutive slices (evenly spaced rows;
            ``0`` for none). Default: 40 when all slices have the same number of rows,
            else none. A positive number needs slices of equal length.

    Returns:
        ``ax3d``: one scatter collection per slice, one pane per slice and one
        ``Line3DCollection`` of ties (if any).

    Example:
        >>> fig = plt.figure(figsize=(6.4, 2.6))
        >>> ax = fig.add_subplot(projection="3d")
        >>> xs = [torch.randn(200, 2) * (1 - t) + t for t in (0.0, 0.5, 1.0)]
        >>> ax = path_slices_3d(ax, xs, [0.0, 0.5, 1.0], lims=3)
        >>> ax.get_xticks().tolist()
        [0.0, 0.5, 1.0]
        >>> plt.close(fig)
    """
    _check_ax(ax3d, three_d=True)
    from mpl_toolkits.mplot3d.art3d import Line3DCollection, Poly3DCollection

    pts = [_as_points(x, f"slices[{k}]") for k, x in enumerate(slices)]
    ts = [float(t) for t in _to_numpy(times, "times").reshape(-1)]
    if len(pts) == 0 or len(pts) != len(ts):
        raise ValueError(
            f"need one time per slice and at least one slice, got {len(pts)} slices "
            f"and {len(ts)} times"
        )
    k = len(pts)
    if colors is None:
        cols = [_blend(COLORS.prior, COLORS.data, i / max(k - 1, 1)) for i in range(k)]
    elif isinstance(colors, str):
        cols = [colors] * k
    else:
        cols = list(colors)
        if len(cols) != k:
            raise ValueError(f"colors must be one colour or {k} colours, got {len(cols)}")
    if lims is None:
        big = max(float(np.abs(p).max()) if p.size else 1.0 for p in pts)
        lims = math.ceil(big * 10) / 10 or 1.0
    (x0, x1), (y0, y1) = _parse_lims(lims)
    same_rows = len({len(p) for p in pts}) == 1
    if ties is None:
        ties = 40 if same_rows and k > 1 else 0
    if isinstance(ties, bool) or not isinstance(ties, int) or ties < 0:
        raise ValueError(f"ties must be an int >= 0, got {ties!r}")
    if ties > 0 and not same_rows:
        raise ValueError("ties join row i of consecutive slices: the slices must have the "
                         f"same number of rows, got {[len(p) for p in pts]}")
    if ties > 0 and k > 1 and len(pts[0]) > 0:
        rows = np.unique(np.linspace(0, len(pts[0]) - 1, min(ties, len(pts[0]))).astype(int))
        segments = []
        for a in range(k - 1):
            pa, pb = pts[a][rows], pts[a + 1][rows]
            for u, v in zip(pa, pb):
                if x0 <= min(u[0], v[0]) and max(u[0], v[0]) <= x1 \
                        and y0 <= min(u[1], v[1]) and max(u[1], v[1]) <= y1:
                    segments.append([(ts[a], u[0], u[1]), (ts[a + 1], v[0], v[1])])
        if segments:
            ax3d.add_collection3d(Line3DCollection(segments, colors=[(0.35, 0.35, 0.35, 0.45)],
                                                   linewidths=0.5))
    for p, t, c in zip(pts, ts, cols):
        inside = (p[:, 0] >= x0) & (p[:, 0] <= x1) & (p[:, 1] >= y0) & (p[:, 1] <= y1)
        p = p[inside]
        if panes:
            corners = [(t, x0, y0), (t, x1, y0), (t, x1, y1), (t, x0, y1)]
            ax3d.add_collection3d(
                Poly3DCollection([corners], facecolors=(0.93, 0.93, 0.93, 0.55),
                                 edgecolors=(0.6, 0.6, 0.6, 0.8), linewidths=0.5)
            )
        ax3d.scatter(np.full(len(p), t), p[:, 0], p[:, 1], s=s, c=c, alpha=alpha,
                     linewidths=0, depthshade=False)
    t_min, t_max = min(ts), max(ts)
    pad = 0.04 * (t_max - t_min) if t_max > t_min else 0.5
    ax3d.set_xlim(t_min - pad, t_max + pad)
    ax3d.set_ylim(x0, x1)
    ax3d.set_zlim(y0, y1)
    if zoom is None:  # the Axes is drawn as a square: enlarge to use a wide panel
        fig = ax3d.get_figure()
        bbox = ax3d.get_position(original=True)
        w_in, h_in = fig.get_size_inches() if fig is not None else (1.0, 1.0)
        ratio = (bbox.width * w_in) / max(bbox.height * h_in, 1e-9)
        zoom = float(np.clip(0.8 * ratio, 1.0, 2.2))
    ax3d.set_box_aspect((0.9 * k if depth is None else float(depth), 1.0, 1.0), zoom=zoom)
    if zoom > 1:  # let the enlarged drawing spill out of the square Axes box
        for child in ax3d.get_children():
            child.set_clip_on(False)
    ax3d.view_init(elev=elev, azim=azim)
    ax3d.set_xticks(ts)
    ax3d.set_xticklabels([f"{t_label} = {t:g}" for t in ts])
    ax3d.tick_params(axis="x", pad=-2)
    ax3d.set_yticks([])
    ax3d.set_zticks([])
    ax3d.grid(False)
    for axis in (ax3d.xaxis, ax3d.yaxis, ax3d.zaxis):
        axis.set_pane_color((1.0, 1.0, 1.0, 0.0))
    for axis in (ax3d.yaxis, ax3d.zaxis):
        axis.line.set_color((1.0, 1.0, 1.0, 0.0))
    return ax3d


def loss_curve(
    ax: Axes,
    losses: ArrayLike,
    *,
    smooth: int | None = None,
    label: str | None = None,
    logy: bool = False,
    color: str | None = None,
) -> Axes:
    r"""Training loss against step: the raw values faintly, a moving average on top.

    Args:
        ax: the Axes.
        losses: loss per step, shape ``(T,)`` (Tensor, array or list of floats or
            0-d tensors).
        smooth: window of the trailing moving average (``1`` draws the raw curve only;
            default ``max(1, T // 50)``).
        label: legend label of the (smoothed) curve.
        logy: logarithmic y axis (all losses must then be positive).
        color: line colour (default: next in the cycle).

    Returns:
        ``ax``: one line, or two (smoothed, then the raw values) when the window exceeds 1.

    Example:
        >>> fig, ax = plt.subplots()
        >>> ax = loss_curve(ax, torch.rand(500) + torch.linspace(2, 0.1, 500), smooth=20)
        >>> len(ax.lines)
        2
        >>> plt.close(fig)
    """
    _check_ax(ax)
    y = _to_numpy(losses, "losses")
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"losses must have shape (T,) with T >= 1, got {tuple(y.shape)}")
    if smooth is None:
        smooth = max(1, y.size // 50)
    if not isinstance(smooth, (int, np.integer)) or isinstance(smooth, bool) or smooth < 1:
        raise ValueError(f"smooth must be a positive int, got {smooth!r}")
    if logy and not np.all(y[np.isfinite(y)] > 0):
        raise ValueError("logy=True needs positive losses; plot on a linear axis or shift them")
    steps = np.arange(y.size)
    raw = y
    if smooth > 1:
        c = np.concatenate([[0.0], np.cumsum(y)])
        lo = np.maximum(steps + 1 - smooth, 0)
        y = (c[steps + 1] - c[lo]) / (steps + 1 - lo)  # trailing mean over the window
    (line,) = ax.plot(steps, y, color=color, label=label)
    if smooth > 1:
        ax.plot(steps, raw, color=line.get_color(), alpha=0.25, lw=0.8,
                zorder=line.get_zorder() - 0.1)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if logy:
        ax.set_yscale("log")
    return ax
