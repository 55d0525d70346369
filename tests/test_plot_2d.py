"""plot_2D.py: every kind of figure is written and shows the surface where it is (non-square grids, gaps),
the 3D surface renders, critical points and sharpness files, and one-line errors."""

from __future__ import annotations

import json

import matplotlib.image as mpimg
import numpy as np
import pytest
from mpl_toolkits.mplot3d.art3d import Poly3DCollection

from conftest import run_command, write_original_surface
from loss_landscape.plotting.two_d import KINDS, figure_2d, plot_2d
from loss_landscape.surface.grid import Axis, Grid
from loss_landscape.surface.reader import Surface, read_surface
from test_plots import make_surface

LEVELS = np.arange(0.0, 2.0, 0.1)


def bowl(a, b):
    return (a - 0.5) ** 2 + (b + 0.25) ** 2


def nonsquare():
    """A bowl with its minimum at the grid point (0.5, -0.25) of a 9 x 8 grid (steps 0.25), at [3, 6]: neither
    flipping nor transposing the values would leave it there."""
    x, y = np.linspace(-1, 1, 9), np.linspace(-1, 0.75, 8)
    X, Y = np.meshgrid(x, y)
    return x, y, bowl(X, Y)


def rendered(fig):
    """The RGB pixels of `fig` and a function from data coordinates of its first axes to (row, column)."""
    fig.canvas.draw()
    img = np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(float) / 255
    ax = fig.axes[0]

    def pixel(x, y):
        px, py = ax.transData.transform((x, y))
        return int(round(img.shape[0] - py)), int(round(px))

    return img, ax, pixel


def plot_area(img, ax, inset=4):
    """The pixels inside the axes, `inset` pixels in from the spines (which are black)."""
    b = ax.get_window_extent()
    h = img.shape[0]
    rows = slice(int(h - b.y1) + inset, int(h - b.y0) - inset)
    cols = slice(int(b.x0) + inset, int(b.x1) - inset)
    return img[rows, cols], rows.start, cols.start


def darkest_point(fig):
    """Data coordinates of the centroid of the darkest pixels in the plot area (viridis: darkest = lowest)."""
    img, ax, _ = rendered(fig)
    area, r0, c0 = plot_area(img, ax)
    lum = area.sum(axis=2)
    rows, cols = np.nonzero(lum <= lum.min() + 0.02)
    x, y = ax.transData.inverted().transform((c0 + cols.mean(), img.shape[0] - (r0 + rows.mean())))
    return x, y


# -- figures ------------------------------------------------------------------------------------------------

def test_all_kinds_are_written_and_not_blank(tmp_path):
    path = tmp_path / "s.h5"
    make_surface(path, Grid(Axis(-1, 1, 13), Axis(-1, 1, 11)), lambda a, b: a * a + b * b)
    files = plot_2d(read_surface(str(path)), fmt="png", vmin=0.05, vmax=2, vlevel=0.1, dpi=60)
    assert files == [str(tmp_path / f"s_train_loss_{s}.png") for s in ("2dcontour", "2dcontourf", "2dheat",
                                                                       "3dsurface")]
    for f in files:
        img = mpimg.imread(f)
        assert img.std() > 0.05, f


def test_3d_figure_holds_a_rendered_surface():
    x, y, z = nonsquare()
    fig = figure_2d("3d", x, y, z, levels=LEVELS)
    ax = fig.axes[0]
    assert ax.name == "3d"
    (poly,) = [c for c in ax.collections if isinstance(c, Poly3DCollection)]
    assert len(poly.get_paths()) == (len(x) - 1) * (len(y) - 1)
    img, ax, _ = rendered(fig)
    area, _, _ = plot_area(img, ax)
    # An empty 3D axes (what Axes3D(fig) gives on matplotlib >= 3.6) is all greys; the surface is coloured.
    colourful = (area.max(axis=2) - area.min(axis=2)) > 0.15
    assert colourful.mean() > 0.2


def test_3d_zlim_clips_and_gaps_leave_cells_out():
    x, y, z = nonsquare()
    z[3, 4] = np.nan  # its 4 cells go
    z[0, 0] = np.inf  # its one corner cell goes
    fig = figure_2d("3d", x, y, z, levels=LEVELS, zlim=1.0)
    ax = fig.axes[0]
    (poly,) = [c for c in ax.collections if isinstance(c, Poly3DCollection)]
    assert len(poly.get_paths()) == (len(x) - 1) * (len(y) - 1) - 5
    assert poly.get_array().max() <= 1.0 and ax.get_zlim()[1] == pytest.approx(1.0)
    assert "clipped at 1" in ax.get_title()


@pytest.mark.parametrize("kind", ["heatmap", "filled"])
def test_orientation_on_a_non_square_grid(kind):
    """The darkest (lowest) colour sits at (0.5, -0.25); a transposed or flipped plot would put it elsewhere."""
    x, y, z = nonsquare()
    fx, fy = darkest_point(figure_2d(kind, x, y, z, levels=LEVELS))
    assert fx == pytest.approx(0.5, abs=0.08) and fy == pytest.approx(-0.25, abs=0.08)


def test_heatmap_cells_are_centred_on_grid_points_and_nan_is_a_gap():
    x, y, z = nonsquare()
    z[5, 1] = np.nan  # (x, y) = (-0.75, 0.25)
    fig = figure_2d("heatmap", x, y, z, levels=LEVELS)
    img, ax, pixel = rendered(fig)
    assert ax.get_xlim() == pytest.approx((-1.125, 1.125)) and ax.get_ylim() == pytest.approx((-1.125, 0.875))
    assert img[pixel(-0.75, 0.25)] == pytest.approx([1, 1, 1])  # the axes' white background
    assert img[pixel(-0.75, 0.0)] != pytest.approx([1, 1, 1])


def test_nan_points_are_gaps_in_every_kind(tmp_path):
    x, y, z = nonsquare()
    z[2:4, 2:4] = np.nan
    z[6, 8] = -np.inf
    files = plot_2d(Surface(str(tmp_path / "gaps.h5"), x, y, {"train_loss": z}, {}), fmt="png", dpi=50,
                    vmin=0.0, vmax=2.0, vlevel=0.1)
    assert len(files) == 4 and all(mpimg.imread(f).std() > 0.05 for f in files)
    img, ax, pixel = rendered(figure_2d("filled", x, y, z, levels=LEVELS))
    assert img[pixel(-0.4, -0.4)] == pytest.approx([1, 1, 1])


@pytest.mark.parametrize("value, note", [(np.nan, "no finite values of train_loss"),
                                         (0.7, "constant surface: train_loss = 0.7 everywhere")])
def test_all_nan_or_constant_surface_gives_figures_with_a_note(tmp_path, value, note):
    x, y = np.linspace(-1, 1, 5), np.linspace(-1, 1, 4)
    z = np.full((4, 5), value)
    for kind in KINDS:
        fig = figure_2d(kind, x, y, z, levels=LEVELS)
        assert note in [t.get_text() for t in fig.axes[0].texts], kind
    files = plot_2d(Surface(str(tmp_path / "flat.h5"), x, y, {"train_loss": z}, {}), fmt="png", dpi=40)
    assert all(mpimg.imread(f).std() > 0.01 for f in files)


def test_trajectory_and_critical_markers():
    x, y, z = nonsquare()
    traj = (np.array([-0.75, 0.0, 0.5]), np.array([0.25, 0.0, -0.25]))
    crit = [{"kind": "minimum", "i": 6, "j": 3, "x": 0.5, "y": -0.25, "value": 0.0}]
    for kind in ("contour", "filled", "heatmap"):
        ax = figure_2d(kind, x, y, z, levels=LEVELS, trajectory=traj, critical=crit).axes[0]
        (line,) = [ln for ln in ax.get_lines() if ln.get_label() == "trajectory"]
        assert line.get_xdata() == pytest.approx(traj[0])
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert ("minimum (1)" in labels) == (kind == "contour")
    ax = figure_2d("3d", x, y, z, levels=LEVELS, critical=crit).axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["minimum (1)"]


def test_contour_levels_follow_the_options_in_every_kind(tmp_path, monkeypatch):
    import matplotlib.axes
    seen = {}
    real = matplotlib.axes.Axes.contourf

    def spy(self, *args, **kw):
        seen["levels"] = kw.get("levels")
        return real(self, *args, **kw)

    monkeypatch.setattr(matplotlib.axes.Axes, "contourf", spy)
    x, y, z = nonsquare()  # values from 0 to 3.25
    plot_2d(Surface(str(tmp_path / "l.h5"), x, y, {"train_loss": z}, {}), kinds=("filled",), fmt="png", dpi=30,
            vmin=0.5, vmax=10, vlevel=0.5)
    # the filled bands stop at the first level above the largest value, so colours are not wasted
    np.testing.assert_allclose(seen["levels"], [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5])


# -- the command ----------------------------------------------------------------------------------------------

def test_command_writes_critical_points_and_sharpness(tmp_path):
    path = tmp_path / "sin.h5"
    make_surface(path, Grid(Axis(-2 * np.pi, 2 * np.pi, 33), Axis(-2 * np.pi, 2 * np.pi, 33)),
                 lambda a, b: np.sin(a) * np.sin(b) + 1.5)
    out = run_command("plot_2D.py", "--surf_file", str(path), "--format", "png", "--dpi", "40", "--critical",
                      "--vmin", "0.5", "--vmax", "2.5", "--vlevel", "0.25", "--basin_delta", "0.5", cwd=tmp_path)
    assert "critical points: 8 minima, 8 maxima, 9 saddles" in out.stdout
    points = json.loads((tmp_path / "sin_train_loss_critical.json").read_text())
    assert len(points) == 25 and all(set(p) == {"kind", "i", "j", "x", "y", "value"} for p in points)
    saddle = [p for p in points if p["i"] == 16 and p["j"] == 16]
    assert saddle == [{"kind": "saddle", "i": 16, "j": 16, "x": 0.0, "y": 0.0, "value": 1.5}]
    for p in points:
        assert p["value"] == pytest.approx(np.sin(p["x"]) * np.sin(p["y"]) + 1.5)
        if p["kind"] == "minimum":
            assert p["value"] == pytest.approx(0.5)
    sharp = json.loads((tmp_path / "sin_train_loss_sharpness.json").read_text())
    assert sharp["surf_name"] == "train_loss" and sharp["centre"]["value"] == 1.5 and sharp["delta"] == 0.5
    assert sharp["threshold"] == 2.0
    for suffix in ("2dcontour", "2dcontourf", "2dheat", "3dsurface"):
        assert f"wrote {tmp_path / f'sin_train_loss_{suffix}.png'}" in out.stdout


def test_command_kind_prefix_and_original_layout(tmp_path):
    orig = tmp_path / "orig.h5"
    x, y = np.linspace(-1, 1, 11), np.linspace(-1, 1, 7)
    X, Y = np.meshgrid(x, y)
    write_original_surface(orig, x, y, train_loss=X ** 2 + Y ** 2 + 0.2, train_acc=np.full(X.shape, 50.0))
    out = run_command("plot_2D.py", "--surf_file", str(orig), "--format", "svg", "--kind", "heatmap", "3d",
                      "--prefix", str(tmp_path / "p"), cwd=tmp_path)
    written = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("p_"))
    assert written == ["p_train_loss_2dheat.svg", "p_train_loss_3dsurface.svg", "p_train_loss_sharpness.json"]
    assert "centre (0, 0): 0.2" in out.stdout and "critical" not in out.stdout


@pytest.mark.parametrize("extra, message", [
    (["--surf_name", "nope"], "has no 'nope'; it has test_acc, test_loss, train_acc, train_loss"),
    (["--vmin", "2", "--vmax", "1"], "need vlevel > 0 and vmax > vmin"),
    (["--vmax", "1", "--vmin", "1"], "need vlevel > 0 and vmax > vmin"),
    (["--vlevel", "0"], "need vlevel > 0 and vmax > vmin"),
    (["--vlevel", "-0.5"], "need vlevel > 0 and vmax > vmin"),
    (["--basin_delta", "0"], "--basin_delta must be > 0"),
])
def test_bad_options_give_one_line(tmp_path, extra, message):
    path = tmp_path / "s.h5"
    make_surface(path, Grid(Axis(-1, 1, 5), Axis(-1, 1, 5)), lambda a, b: a * a + b * b)
    proc = run_command("plot_2D.py", "--surf_file", str(path), *extra, cwd=tmp_path, check=False)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr
    assert not list(tmp_path.glob("s_*"))


def test_bad_files_give_one_line(tmp_path):
    proc = run_command("plot_2D.py", "--surf_file", str(tmp_path / "missing.h5"), cwd=tmp_path, check=False)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "cannot read surface file" in proc.stderr
    one = tmp_path / "one.h5"
    make_surface(one, Grid(Axis(-1, 1, 5)), lambda a: a)
    proc = run_command("plot_2D.py", "--surf_file", str(one), cwd=tmp_path, check=False)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "1D surface; use plot_1D.py" in proc.stderr
