"""plot_1D.py and plot_2D.py on files of ours and of the original's layout: figures are written and not
blank, orientation of non-square grids, one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys

import matplotlib.image as mpimg
import numpy as np
import pytest

from conftest import run_command, write_original_surface
from loss_landscape.plotting.two_d import plot_2d_contour
from loss_landscape.surface.grid import Axis, Grid, Provenance, SurfaceJob
from loss_landscape.surface.file import SurfaceFile
from loss_landscape.surface.reader import read_surface


def make_surface(path, grid, fn):
    job = SurfaceJob(grid=grid, directions_sha256="d", dir_type="weights", model="m", model_sha256="s",
                     dataset="digits")
    with SurfaceFile.open(str(path), job, ["train", "test"], Provenance()) as f:
        for flat in range(grid.size):
            c = grid.coords(flat)
            f.write(flat, {"train": (fn(*c), 90.0), "test": (fn(*c) + 0.1, 80.0)})


def test_plot_1d_writes_a_figure(tmp_path):
    path = tmp_path / "s1.h5"
    make_surface(path, Grid(Axis(-1, 1, 21)), lambda a: a * a)
    out = run_command("plot_1D.py", "--surf_file", str(path), "--format", "png", cwd=tmp_path)
    png = tmp_path / "s1_1d_loss_acc.png"
    assert f"wrote {png}" in out.stdout
    assert mpimg.imread(png).std() > 0.05


def test_plot_2d_non_square_orientation(tmp_path):
    """A bowl centred at (0.5, -0.25) on a 9 x 5 grid: the contour's innermost level must sit there."""
    path = tmp_path / "s2.h5"
    make_surface(path, Grid(Axis(-1, 1, 9), Axis(-1, 0.5, 5)), lambda a, b: (a - 0.5) ** 2 + (b + 0.25) ** 2)
    s = read_surface(str(path))
    j, i = np.unravel_index(np.argmin(s.values["train_loss"]), s.values["train_loss"].shape)
    assert (s.x[i], s.y[j]) == (0.5, -0.25)
    (png,) = plot_2d_contour(s, fmt="png", vmin=0.05, vmax=2, vlevel=0.1)
    assert mpimg.imread(png).std() > 0.05


def test_plot_2d_reads_the_original_layout_and_refuses_1d(tmp_path):
    orig = tmp_path / "orig.h5"
    x = np.linspace(-1, 1, 11)
    X, Y = np.meshgrid(x, x)
    write_original_surface(orig, x, x, train_loss=X ** 2 + Y ** 2 + 0.2, train_acc=np.full((11, 11), 50.0))
    run_command("plot_2D.py", "--surf_file", str(orig), "--format", "png", cwd=tmp_path)
    assert (tmp_path / "orig_train_loss_2dcontour.png").exists()
    one = tmp_path / "one.h5"
    make_surface(one, Grid(Axis(-1, 1, 5)), lambda a: a)
    proc = run_command("plot_2D.py", "--surf_file", str(one), cwd=tmp_path, check=False)
    assert proc.returncode == 1 and proc.stderr.strip().count("\n") == 0 and "use plot_1D.py" in proc.stderr
    proc = run_command("plot_2D.py", "--surf_file", str(orig), "--surf_name", "nope", cwd=tmp_path, check=False)
    assert proc.returncode == 1 and "has no 'nope'" in proc.stderr
    proc = run_command("plot_1D.py", "--surf_file", str(tmp_path / "missing.h5"), cwd=tmp_path, check=False)
    assert proc.returncode == 1 and "cannot read surface file" in proc.stderr


@pytest.mark.parametrize("vmin, vmax, vlevel", [(0.1, 10, 0.5), (1, 3, 0.25)])
def test_contour_levels_follow_the_options(tmp_path, vmin, vmax, vlevel, monkeypatch):
    path = tmp_path / "s.h5"
    make_surface(path, Grid(Axis(-2, 2, 15), Axis(-2, 2, 15)), lambda a, b: a * a + b * b)
    import matplotlib.axes
    seen = {}
    real = matplotlib.axes.Axes.contour

    def spy(self, *args, **kw):
        seen["levels"] = kw.get("levels")
        return real(self, *args, **kw)

    monkeypatch.setattr(matplotlib.axes.Axes, "contour", spy)
    plot_2d_contour(read_surface(str(path)), fmt="png", vmin=vmin, vmax=vmax, vlevel=vlevel)
    np.testing.assert_allclose(seen["levels"], np.arange(vmin, vmax, vlevel))


@pytest.mark.parametrize("setup,backend", [
    ("pass", "agg"),  # a command: the headless backend, whatever the machine has
    ("import types; sys.modules['ipykernel'] = types.ModuleType('ipykernel'); matplotlib.use('svg')", "svg"),
    ("matplotlib.use('svg'); import matplotlib.pyplot", "svg"),  # pyplot already in use: left alone
])
def test_figures_choose_the_headless_backend_only_where_nobody_chose_one(setup, backend):
    code = f"import sys, matplotlib; {setup}; import loss_landscape.plotting.figures; print(matplotlib.get_backend())"
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.stdout.strip().lower() == backend
