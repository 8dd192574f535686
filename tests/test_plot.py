"""Tests of gmbook.plot: the house style and the figure helpers."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.collections import LineCollection, PathCollection  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402

from gmbook import plot  # noqa: E402
from gmbook.plot import (  # noqa: E402
    COLORS,
    RC_PARAMS,
    density2d,
    figure,
    grid2d,
    loss_curve,
    path_slices_3d,
    scatter2d,
    square_lims,
    trajectories,
    use_style,
)


@pytest.fixture(autouse=True)
def _clean_matplotlib():
    """Restore rcParams and close every figure after each test."""
    with matplotlib.rc_context():
        yield
    plt.close("all")


@pytest.fixture
def ax():
    fig, ax = plt.subplots()
    return ax


# ----------------------------------------------------------------------------- style


def test_use_style_sets_rcparams_and_is_idempotent():
    use_style()
    first = {k: matplotlib.rcParams[k] for k in RC_PARAMS}
    use_style()
    second = {k: matplotlib.rcParams[k] for k in RC_PARAMS}
    assert first == second
    rc = matplotlib.rcParams
    assert tuple(rc["figure.figsize"]) == (6.4, 3.6)
    assert rc["savefig.dpi"] >= 2 * rc["figure.dpi"] >= 150
    assert not rc["axes.spines.top"] and not rc["axes.spines.right"]
    assert not rc["axes.grid"]
    assert rc["figure.constrained_layout.use"]
    assert rc["image.cmap"] == "viridis"
    assert 9 <= rc["font.size"] <= 11
    cycle = [c.upper() for c in rc["axes.prop_cycle"].by_key()["color"]]
    assert cycle == [c.upper() for c in COLORS.cycle]


def test_use_style_outside_ipython_sets_no_inline_format():
    assert plot._use_retina_inline() is False  # no IPython shell here: nothing to do


def test_new_figures_follow_the_style():
    use_style()
    fig, ax = plt.subplots()
    assert tuple(fig.get_size_inches()) == pytest.approx((6.4, 3.6))
    assert not ax.spines["top"].get_visible()
    line = ax.plot([0, 1])[0]
    assert to_rgba(line.get_color()) == to_rgba(COLORS.cycle[0])


def test_palette_roles():
    roles = ["data", "model", "prior", "accent", "forward", "reverse"]
    colors = [COLORS[r] for r in roles]
    assert colors == [getattr(COLORS, r) for r in roles]
    assert len({c.lower() for c in colors}) == len(roles), "roles must be distinguishable"
    for c in colors + list(COLORS.cycle):
        to_rgba(c)  # valid colour
    assert len(COLORS.cycle) >= 6
    with pytest.raises(KeyError, match="unknown colour role"):
        COLORS["noise"]


# ----------------------------------------------------------------------------- figure


def test_figure_sizes():
    fig, ax = figure()
    assert tuple(fig.get_size_inches()) == pytest.approx((6.4, 3.6))
    fig, axes = figure(1, 4)
    assert axes.shape == (4,)
    assert tuple(fig.get_size_inches()) == pytest.approx((6.4, 1.6))
    fig, axes = figure(2, 2, width=5, height=4, sharex=True)
    assert axes.shape == (2, 2)
    assert tuple(fig.get_size_inches()) == pytest.approx((5, 4))


def test_figure_bad_input():
    with pytest.raises(ValueError, match="ncols"):
        figure(1, 0)
    with pytest.raises(TypeError, match="width= and height="):
        figure(figsize=(3, 3))


# ----------------------------------------------------------------------------- scatter


@pytest.mark.parametrize("kind", ["tensor", "array"])
def test_scatter2d(ax, kind):
    x = torch.randn(50, 2, requires_grad=True) if kind == "tensor" else np.random.randn(50, 2)
    out = scatter2d(ax, x, label="data", lims=2)
    assert out is ax
    assert len(ax.collections) == 1
    expected = x.detach().numpy() if kind == "tensor" else x
    np.testing.assert_allclose(ax.collections[0].get_offsets(), expected, rtol=1e-6)
    assert to_rgba(ax.collections[0].get_facecolor()[0], alpha=1) == to_rgba(COLORS.data)
    assert ax.get_aspect() == 1.0
    assert ax.get_xlim() == (-2, 2) and ax.get_ylim() == (-2, 2)
    assert ax.get_legend_handles_labels()[1] == ["data"]


@pytest.mark.parametrize("shape", [(10,), (10, 3), (2, 10, 2)])
def test_scatter2d_bad_shape(ax, shape):
    with pytest.raises(ValueError, match=r"shape \(n, 2\)"):
        scatter2d(ax, torch.zeros(shape))


def test_square_lims_forms(ax):
    square_lims(ax, 3)
    assert ax.get_xlim() == (-3, 3) and ax.get_ylim() == (-3, 3)
    square_lims(ax, (0, 1))
    assert ax.get_xlim() == (0, 1) and ax.get_ylim() == (0, 1)
    square_lims(ax, ((0, 2), (-1, 1)))
    assert ax.get_xlim() == (0, 2) and ax.get_ylim() == (-1, 1)
    for bad in [(1, 0), (1, 2, 3), "x", ((0, 1),), float("nan")]:
        with pytest.raises(ValueError, match="lims"):
            square_lims(ax, bad)


def test_helpers_reject_non_axes():
    with pytest.raises(TypeError, match="Axes"):
        scatter2d("not an ax", torch.zeros(3, 2))


# ----------------------------------------------------------------------------- grids


def test_grid2d_shapes_and_ordering():
    xx, yy, points = grid2d(((0, 2), (-1, 1)), n=5)
    assert xx.shape == yy.shape == (5, 5) and points.shape == (25, 2)
    xs, ys = torch.linspace(0, 2, 5), torch.linspace(-1, 1, 5)
    torch.testing.assert_close(xx[3], xs)  # along a row, x varies
    torch.testing.assert_close(yy[:, 1], ys)  # along a column, y varies
    # points are (xx, yy) flattened row by row: values reshape back onto the grid
    torch.testing.assert_close(points[:, 0].reshape(5, 5), xx)
    torch.testing.assert_close(points[:, 1].reshape(5, 5), yy)
    assert points[1].tolist() == [0.5, -1.0]


def test_grid2d_dtype_and_bad_n():
    assert grid2d(1, 3, dtype=torch.float64)[2].dtype == torch.float64
    for bad in [1, 2.5, True]:
        with pytest.raises(ValueError, match="n must be"):
            grid2d(1, bad)


def test_density2d_evaluates_once_without_autograd(ax):
    net = torch.nn.Linear(2, 1)
    calls = []

    def log_prob(x):
        calls.append((tuple(x.shape), torch.is_grad_enabled()))
        return net(x).squeeze(-1) - 0.5 * (x**2).sum(-1)  # (B,)

    assert density2d(ax, log_prob, lims=2, n=30) is ax
    assert calls == [((900, 2), False)]
    assert len(ax.images) == 1
    img = ax.images[0].get_array()
    assert img.shape == (30, 30)
    xx, yy, points = grid2d(2, 30)
    with torch.no_grad():
        expected = log_prob(points).exp().reshape(30, 30).numpy()
    np.testing.assert_allclose(img, expected, rtol=1e-5)
    assert ax.get_xlim() == (-2, 2)


def test_density2d_orientation(ax):
    """Image row i is y_i, column j is x_j: a density increasing in x grows along rows."""
    density2d(ax, lambda x: x[:, 0], lims=1, n=10, log=True)
    img = np.asarray(ax.images[0].get_array())
    assert np.all(np.diff(img, axis=1) > 0) and np.allclose(np.diff(img, axis=0), 0)
    assert ax.images[0].origin == "lower"


def test_density2d_contours(ax):
    density2d(ax, lambda x: -(x**2).sum(-1), n=20, levels=6, lims=((-1, 2), (-3, 3)))
    assert len(ax.images) == 0 and len(ax.collections) >= 1
    assert ax.get_xlim() == (-1, 2) and ax.get_ylim() == (-3, 3)


def test_density2d_bad_output_shape(ax):
    with pytest.raises(ValueError, match=r"shape \(400,\), got \(400, 1\)"):
        density2d(ax, lambda x: x[:, :1], n=20)
    with pytest.raises(TypeError, match="callable"):
        density2d(ax, torch.zeros(3))


# ----------------------------------------------------------------------------- paths


def test_trajectories(ax):
    paths = torch.randn(8, 300, 2, requires_grad=True).cumsum(0)  # (T, B, 2)
    assert trajectories(ax, paths, n_max=40) is ax
    lines, starts, ends = ax.collections
    assert isinstance(lines, LineCollection) and isinstance(starts, PathCollection)
    segs = lines.get_segments()
    assert len(segs) == 40 and segs[0].shape == (8, 2)
    np.testing.assert_allclose(segs[0], paths[:, 0].detach().numpy(), rtol=1e-6)
    np.testing.assert_allclose(ends.get_offsets()[-1], paths[-1, -1].detach().numpy(), rtol=1e-6)


def test_trajectories_array_without_markers(ax):
    trajectories(ax, np.zeros((5, 3, 2)), markers=False, n_max=10)
    assert len(ax.collections) == 1 and len(ax.collections[0].get_segments()) == 3


@pytest.mark.parametrize("shape", [(5, 2), (1, 4, 2), (5, 4, 3)])
def test_trajectories_bad_shape(ax, shape):
    with pytest.raises(ValueError, match=r"\(T, B, 2\)"):
        trajectories(ax, torch.zeros(shape))


def test_path_slices_3d():
    fig = plt.figure(figsize=(6.4, 2.6))
    ax3d = fig.add_subplot(projection="3d")
    times = [0.0, 0.5, 1.0]
    slices = [torch.rand(100, 2), np.random.rand(80, 2), torch.randn(60, 2) * 10]
    assert path_slices_3d(ax3d, slices, times, lims=3) is ax3d
    scatters = [c for c in ax3d.collections if isinstance(c, PathCollection)]
    assert len(scatters) == 3
    assert len(ax3d.collections) == 6  # one pane per slice; unequal slices: no ties
    assert len(scatters[0].get_offsets()) == 100  # all inside the panes
    assert len(scatters[2].get_offsets()) < 60  # points outside lims are dropped
    assert ax3d.get_xticks().tolist() == times
    fig.savefig(__import__("io").BytesIO(), format="png", dpi=30)  # renders


def test_path_slices_3d_ties_join_the_same_particle():
    """Ties join row i of consecutive slices: on the linear path eq-linear-path the ties of
    one particle are collinear in (t, x, y); none for slices of unequal length."""
    from mpl_toolkits.mplot3d.art3d import Line3DCollection

    x0, x1 = torch.randn(50, 2), torch.rand(50, 2)
    times = [0.0, 0.5, 1.0]
    fig = plt.figure(figsize=(6.4, 2.6))
    ax3d = fig.add_subplot(projection="3d")
    path_slices_3d(ax3d, [(1 - t) * x0 + t * x1 for t in times], times, lims=10, ties=5)
    (lines,) = [c for c in ax3d.collections if isinstance(c, Line3DCollection)]
    segs = np.asarray(lines._segments3d)  # (2 * 5, 2, 3)
    assert segs.shape == (10, 2, 3)
    first, second = segs[0], segs[5]  # particle 0 from t = 0 to 0.5, then 0.5 to 1
    np.testing.assert_allclose(first[1], second[0], atol=1e-6)
    np.testing.assert_allclose(first[1] - first[0], second[1] - second[0], atol=1e-5)
    ax3d.cla()
    path_slices_3d(ax3d, [torch.zeros(3, 2), torch.zeros(4, 2)], [0.0, 1.0])  # no ties
    assert not [c for c in ax3d.collections if isinstance(c, Line3DCollection)]
    with pytest.raises(ValueError, match="same number of rows"):
        path_slices_3d(ax3d, [torch.zeros(3, 2), torch.zeros(4, 2)], [0.0, 1.0], ties=2)
    plt.close(fig)


def test_path_slices_3d_bad_input(ax):
    with pytest.raises(TypeError, match="3-D"):
        path_slices_3d(ax, [torch.zeros(3, 2)], [0.0])
    fig = plt.figure()
    ax3d = fig.add_subplot(projection="3d")
    with pytest.raises(ValueError, match="one time per slice"):
        path_slices_3d(ax3d, [torch.zeros(3, 2)] * 2, [0.0])
    with pytest.raises(ValueError, match=r"slices\[1\] must have shape \(n, 2\)"):
        path_slices_3d(ax3d, [torch.zeros(3, 2), torch.zeros(3)], [0.0, 1.0])


# ----------------------------------------------------------------------------- losses


def test_loss_curve_smoothing(ax):
    losses = torch.linspace(1.0, 2.0, 101)
    assert loss_curve(ax, losses, smooth=10, label="train") is ax
    smooth, raw = ax.lines
    np.testing.assert_allclose(raw.get_ydata(), losses.numpy(), rtol=1e-6)
    y = smooth.get_ydata()
    assert y[0] == pytest.approx(1.0)  # the window shrinks at the start
    assert y[-1] == pytest.approx(losses[-10:].mean().item())  # trailing mean of 10
    assert smooth.get_label() == "train" and ax.get_xlabel() == "step"


def test_loss_curve_list_of_scalars_logy(ax):
    loss_curve(ax, [torch.tensor(v) for v in (3.0, 2.0, 1.0)], smooth=1, logy=True)
    assert len(ax.lines) == 1 and ax.get_yscale() == "log"


def test_loss_curve_bad_input(ax):
    with pytest.raises(ValueError, match="positive losses"):
        loss_curve(ax, [1.0, -1.0], logy=True)
    with pytest.raises(ValueError, match=r"shape \(T,\)"):
        loss_curve(ax, torch.zeros(3, 2))
    with pytest.raises(ValueError, match="smooth"):
        loss_curve(ax, [1.0, 2.0], smooth=0)
