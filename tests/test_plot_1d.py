"""plot_1D.py: one file (loss/accuracy and loss/error figures), overlays of files on different grids,
random-direction sets (band statistics and the spread JSON), gaps, and one-line errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import h5py
import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pytest

from conftest import run_command, write_original_surface
from loss_landscape.surface.spread import band_statistics, basin_width, direction_spread
from loss_landscape.plotting.one_d_files import default_labels, plot_1d_directions, plot_1d_loss_err
from loss_landscape.plotting.one_d import directions_figure, loss_err_figure, overlay_figure, quantity
from loss_landscape.surface.grid import Axis, Grid, Provenance, SurfaceJob
from loss_landscape.surface.file import SurfaceFile
from loss_landscape.surface.reader import read_surface


def make_surface(path, grid, loss, acc=lambda *c: 90.0, *, groups=("train", "test"), skip=(), model="s"):
    """A surface of this tool: loss(*c) and acc(*c) at each point c (test: loss + 0.1, acc - 10); points in
    `skip` are left uncomputed."""
    job = SurfaceJob(grid=grid, directions_sha256=str(path), dir_type="weights", model="m", model_sha256=model,
                     dataset="digits")
    with SurfaceFile.open(str(path), job, groups, Provenance()) as f:
        for flat in range(grid.size):
            if flat in skip:
                continue
            c = grid.coords(flat)
            values = {"train": (loss(*c), acc(*c)), "test": (loss(*c) + 0.1, acc(*c) - 10)}
            f.write(flat, {g: values[g] for g in groups})
    return str(path)


def not_blank(png) -> bool:
    return mpimg.imread(png).std() > 0.05


def one_line_error(proc, *words):
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr, proc.stderr
    for w in words:
        assert w in proc.stderr, proc.stderr


# -- one file -------------------------------------------------------------------------------------------------


def test_one_file_writes_loss_acc_and_loss_err(tmp_path):
    path = make_surface(tmp_path / "s1.h5", Grid(Axis(-1, 1, 21)), lambda a: a * a, lambda a: 100 - 50 * a * a)
    out = run_command("plot_1D.py", "--surf_file", path, "--format", "png", "--dpi", "80", cwd=tmp_path)
    for name in ("s1_1d_loss_acc.png", "s1_1d_loss_err.png"):
        assert f"wrote {tmp_path / name}" in out.stdout
        assert not_blank(tmp_path / name)


def test_plot_surface_call_still_works_and_returns_both_files(tmp_path):
    s = read_surface(make_surface(tmp_path / "s.h5", Grid(Axis(-1, 1, 11)), abs))
    files = plot_1d_loss_err(s, loss_max=5, log=True, show=False, fmt="png")  # as plot_surface.py --plot calls it
    assert files == [str(tmp_path / "s_1d_loss_acc_log.png"), str(tmp_path / "s_1d_loss_err_log.png")]
    assert all(not_blank(f) for f in files)


def test_error_curve_is_100_minus_accuracy(tmp_path):
    s = read_surface(make_surface(tmp_path / "e.h5", Grid(Axis(-1, 1, 11)), abs, lambda a: 97 - 40 * abs(a)))
    fig = loss_err_figure(s)
    train_err, test_err = fig.axes[1].get_lines()
    np.testing.assert_allclose(train_err.get_ydata(), 100 - s.values["train_acc"])
    np.testing.assert_allclose(test_err.get_ydata(), 100 - s.values["test_acc"])
    np.testing.assert_allclose(fig.axes[0].get_lines()[0].get_ydata(), s.values["train_loss"])
    plt.close(fig)


def test_original_layout_file(tmp_path):
    """The original's layout written with plain h5py; its -1 (not computed) is a gap, not a value."""
    orig = tmp_path / "orig.h5"
    x = np.linspace(-1, 1, 11)
    loss, acc = x ** 2 + 0.1, 100 - 30 * x ** 2
    loss[3] = acc[3] = -1
    write_original_surface(orig, x, train_loss=loss, train_acc=acc)
    s = read_surface(str(orig))
    assert np.isnan(quantity(s, "train_loss")[3]) and np.isnan(quantity(s, "train_acc")[3])
    run_command("plot_1D.py", "--surf_file", str(orig), "--format", "png", "--dpi", "80", cwd=tmp_path)
    assert not_blank(tmp_path / "orig_1d_loss_acc.png") and not_blank(tmp_path / "orig_1d_loss_err.png")


def test_test_set_only_and_another_quantity(tmp_path):
    path = make_surface(tmp_path / "t.h5", Grid(Axis(-1, 1, 9)), abs, groups=("test",))
    files = plot_1d_loss_err(read_surface(path), fmt="png", dpi=60)
    assert [f.rsplit("_1d_", 1)[1] for f in files] == ["loss_acc.png", "loss_err.png"]
    files = plot_1d_loss_err(read_surface(path), surf_name="test_acc", fmt="png", dpi=60)
    assert files == [str(tmp_path / "t_1d_test_acc.png")]


# -- overlays -------------------------------------------------------------------------------------------------


def test_overlay_of_two_grids_has_one_line_per_file(tmp_path):
    a = make_surface(tmp_path / "sb.h5", Grid(Axis(-1, 1, 21)), lambda t: 0.5 * t * t, lambda t: 95 - 20 * t * t)
    b = make_surface(tmp_path / "lb.h5", Grid(Axis(-0.5, 1.5, 9)), lambda t: 4 * t * t, lambda t: 95 - 60 * t * t)
    sa, sb = read_surface(a), read_surface(b)
    fig = overlay_figure([sa, sb], labels=["batch 128", "batch 8192"])
    lines = fig.axes[0].get_lines()
    assert len(lines) == 2
    np.testing.assert_allclose(lines[0].get_xdata(), sa.x)
    np.testing.assert_allclose(lines[1].get_xdata(), sb.x)
    assert lines[0].get_color() != lines[1].get_color()
    assert len(fig.axes[1].get_lines()) == 2  # accuracies, one per file
    texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert texts == ["batch 128", "batch 8192"]
    assert fig.axes[0].get_xlim() == (-1, 1.5)  # the union of the grids
    plt.close(fig)
    out = run_command("plot_1D.py", "--surf_file", a, b, "--labels", "batch 128", "batch 8192", "--format", "png",
                      "--dpi", "80", cwd=tmp_path)
    assert f"wrote {tmp_path / 'sb_1d_overlay.png'}" in out.stdout
    assert not_blank(tmp_path / "sb_1d_overlay.png")


def test_default_labels_keep_the_part_that_differs():
    base = "m.t7.dirs-weights-filter-biasbn-seed123"
    names = [f"d/{base}-1d.surf-digits-x-1_1_41.h5", f"{base}-idx1-1d.surf-digits-x-1_1_41.h5",
             f"{base}-idx12-1d.surf-digits-x-1_1_41.h5"]
    assert default_labels(names) == ["idx0", "idx1", "idx12"]
    assert default_labels(["sb_model.h5", "lb_model.h5"]) == ["sb", "lb"]
    assert default_labels(["P_1.h5", "P_10.h5"]) == ["1", "10"]
    assert default_labels(["a/same.h5", "b/same.h5"]) == ["a/same", "b/same"]


# -- direction sets -------------------------------------------------------------------------------------------


def test_band_statistics_equal_numpy(tmp_path):
    rng = np.random.default_rng(0)
    x = np.linspace(-1, 1, 15)
    values = rng.gamma(2.0, size=(5, x.size)) + x ** 2
    stats = band_statistics(values)
    np.testing.assert_allclose(stats["mean"], values.mean(axis=0))
    np.testing.assert_allclose(stats["std"], values.std(axis=0, ddof=1))
    np.testing.assert_allclose(stats["min"], values.min(axis=0))
    np.testing.assert_allclose(stats["max"], values.max(axis=0))
    # with gaps: each column over its finite values only
    gappy = values.copy()
    gappy[1, 3] = np.nan
    gappy[:, 7] = np.nan
    gappy[2, 9] = np.inf
    stats = band_statistics(gappy)
    col3 = np.delete(values[:, 3], 1)
    assert stats["mean"][3] == pytest.approx(col3.mean()) and stats["std"][3] == pytest.approx(col3.std(ddof=1))
    assert stats["count"][3] == 4 and stats["count"][7] == 0 and np.isnan(stats["mean"][7])
    assert stats["max"][9] == pytest.approx(np.delete(values[:, 9], 2).max())
    # the figure draws exactly these: the mean line and a band from min to max (or mean -+ std)
    for band, (lo, hi) in (("minmax", (values.min(0), values.max(0))),
                           ("std", (values.mean(0) - values.std(0, ddof=1), values.mean(0) + values.std(0, ddof=1)))):
        fig = directions_figure(x, values, band=band)
        ax = fig.axes[0]
        means = [ln for ln in ax.get_lines() if ln.get_label().startswith("mean")]
        np.testing.assert_allclose(means[0].get_ydata(), values.mean(axis=0))
        verts = ax.collections[0].get_paths()[0].vertices
        lower = {round(px, 9): py for px, py in verts[1:x.size + 1]}  # fill_between: y1 edge, then y2 back
        np.testing.assert_allclose([lower[round(v, 9)] for v in x], lo, atol=1e-12)
        assert len(ax.get_lines()) == values.shape[0] + 1  # one thin line per direction and the mean
        plt.close(fig)


def test_basin_width():
    x = np.linspace(-1, 1, 21)
    w = basin_width(x, 2 * np.abs(x), delta=0.1)
    assert (w["left"], w["right"], w["width"]) == pytest.approx((-0.05, 0.05, 0.1))
    assert not w["open_left"] and not w["open_right"]
    w = basin_width(x, 0.01 * np.abs(x), delta=0.1)  # never rises by delta: open at both grid ends
    assert w["width"] == pytest.approx(2) and w["open_left"] and w["open_right"]
    y = np.abs(x)
    y[14] = np.nan  # a gap at x = 0.4 stops the walk at 0.3
    w = basin_width(x, y, delta=0.5)
    assert w["right"] == pytest.approx(0.3) and w["open_right"] and w["left"] == pytest.approx(-0.5)
    assert math.isnan(basin_width(x, np.full(21, np.nan), delta=0.1)["width"])


def test_spread_json_of_a_direction_set(tmp_path):
    """Loss a_k |x| along direction k: ends a_k, basin width 2 delta / a_k (exact under linear
    interpolation); 0.01 |x| never rises by delta and is reported open."""
    grid = Grid(Axis(-1, 1, 21))
    slopes = [1.0, 2.0, 4.0, 0.01]
    paths = [make_surface(tmp_path / f"m.dirs-seed1-idx{k}-1d.surf.h5", grid, lambda t, a=a: a * abs(t),
                          lambda t, a=a: 100 - a * abs(t)) for k, a in enumerate(slopes)]
    out = run_command("plot_1D.py", "--surf_file", *paths, "--band", "std", "--basin_delta", "0.1", "--format",
                      "png", "--dpi", "80", cwd=tmp_path)
    stem = tmp_path / "m.dirs-seed1-idx0-1d.surf_1d_directions"
    assert f"wrote {stem}.png" in out.stdout and f"wrote {stem}.json" in out.stdout
    assert "basin width" in out.stdout and "1 of 4 stop at the grid's edge" in out.stdout
    assert not_blank(f"{stem}.png")
    spread = json.loads((tmp_path / f"{stem}.json").read_text())
    s = spread["summary"]
    assert spread["n_directions"] == 4 and spread["band"] == "std" and spread["directions"] == [
        "idx0", "idx1", "idx2", "idx3"]
    for end in ("left_end", "right_end"):
        assert s[end]["values"] == pytest.approx(slopes)
        assert s[end]["mean"] == pytest.approx(np.mean(slopes))
        assert s[end]["std"] == pytest.approx(np.std(slopes, ddof=1))
        assert (s[end]["min"], s[end]["max"]) == pytest.approx((0.01, 4))
    assert s["centre"]["values"] == [0, 0, 0, 0] and s["centre"]["std"] == 0
    widths = [0.2, 0.1, 0.05, 2.0]
    assert s["basin_width"]["values"] == pytest.approx(widths)
    assert s["basin_width"]["open"] == [False, False, False, True]
    assert s["basin_width"]["std"] == pytest.approx(np.std(widths, ddof=1))
    values = np.array([[a * abs(t) for t in grid.x.coordinates()] for a in slopes])
    for key, fn in (("mean", np.mean), ("min", np.min), ("max", np.max)):
        np.testing.assert_allclose(spread["per_x"][key], fn(values, axis=0), atol=1e-12)
    np.testing.assert_allclose(spread["per_x"]["std"], values.std(axis=0, ddof=1), atol=1e-12)
    np.testing.assert_allclose(spread["accuracy_per_x"]["mean"], 100 - values.mean(axis=0), atol=1e-12)
    assert s["largest_std"]["x"] in (-1, 1)


def test_dirs_prefix_takes_the_1d_surface_files_of_the_prefix(tmp_path):
    grid = Grid(Axis(-1, 1, 11))
    base = tmp_path / "model.t7.dirs-weights-filter-biasbn-seed123"
    for k, name in enumerate(["-1d", "-idx1-1d", "-idx2-1d", "-idx10-1d"]):
        make_surface(f"{base}{name}.surf-digits-x-1_1_11.h5", grid, lambda t, k=k: (1 + k) * t * t)
    with h5py.File(f"{base}-idx1-1d.h5", "w") as f:  # a direction file: not a surface, skipped
        f.create_group("xdirection")
    make_surface(f"{base}-2d.surf-digits.h5", Grid(Axis(-1, 1, 3), Axis(-1, 1, 3)), lambda a, b: a)  # 2D: skipped
    out = run_command("plot_1D.py", "--dirs_prefix", str(base), "--format", "png", "--dpi", "60", cwd=tmp_path)
    assert "4 direction files match" in out.stdout
    spread = json.loads((tmp_path / "model.t7.dirs-weights-filter-biasbn-seed123_1d_directions.json").read_text())
    assert spread["directions"] == ["idx0", "idx1", "idx2", "idx10"]  # natural order
    assert spread["band"] == "minmax"
    assert spread["summary"]["right_end"]["values"] == pytest.approx([1, 2, 3, 4])
    # a wildcard narrows the set
    out = run_command("plot_1D.py", "--dirs_prefix", f"{base}-idx?-1d.surf-*.h5", "--format", "png", "--dpi", "60",
                      cwd=tmp_path)
    assert "2 direction files match" in out.stdout


def test_original_repeat_files_as_a_direction_set(tmp_path):
    """The original's plot_1d_loss_err_repeat read prefix_1.h5 ... prefix_N.h5; here --dirs_prefix prefix_."""
    x = np.linspace(-1, 1, 9)
    for k in (1, 2, 10):
        loss = k * x ** 2 + 0.2
        loss[0] = -1  # not computed: a gap, not a value
        with h5py.File(tmp_path / f"run_{k}.h5", "w") as f:
            f["xcoordinates"], f["train_loss"], f["train_acc"] = x, loss, 100 - 10 * k * x ** 2
    out = run_command("plot_1D.py", "--dirs_prefix", "run_", "--format", "png", "--dpi", "60", cwd=tmp_path)
    assert "wrote run_1d_directions.png" in out.stdout and "note:" not in out.stdout
    spread = json.loads((tmp_path / "run_1d_directions.json").read_text())
    assert spread["directions"] == ["1", "2", "10"]
    assert spread["summary"]["left_end"]["values"] == [None, None, None]
    assert spread["per_x"]["count"][0] == 0
    assert spread["summary"]["right_end"]["values"] == pytest.approx([1.2, 2.2, 10.2])
    for k in (1, 2):  # different values at x = 0: not one model (these files record no checksum to refuse on)
        with h5py.File(tmp_path / f"other_{k}.h5", "w") as f:
            f["xcoordinates"], f["train_loss"], f["train_acc"] = x, x ** 2 + k, 100 - x ** 2
    out = run_command("plot_1D.py", "--dirs_prefix", "other_", "--format", "png", "--dpi", "60", cwd=tmp_path)
    assert "note: the values at x=0 differ" in out.stdout


# -- gaps -----------------------------------------------------------------------------------------------------


def test_nan_and_inf_points_are_gaps(tmp_path):
    grid = Grid(Axis(-1, 1, 21))
    a = make_surface(tmp_path / "a.h5", grid, lambda t: math.inf if t > 0.85 else t * t, skip={3, 4, 10})
    b = make_surface(tmp_path / "b.h5", grid, lambda t: math.nan if abs(t) < 0.2 else 2 * t * t)
    sa, sb = read_surface(a), read_surface(b)
    assert np.isnan(quantity(sa, "train_loss")[[3, 4, 10, 20]]).all()
    for log in (False, True):
        files = plot_1d_loss_err(sa, fmt="png", dpi=60, log=log)
        assert all(not_blank(f) for f in files)
    run_command("plot_1D.py", "--surf_file", a, b, "--format", "png", "--dpi", "60", cwd=tmp_path)
    files, spread = plot_1d_directions([sa, sb], fmt="png", dpi=60, band="std")
    assert not_blank(files[0])
    assert spread["per_x"]["count"][10] == 0 and spread["per_x"]["mean"][10] is not None  # NaN in memory
    assert json.loads(Path(files[1]).read_text())["per_x"]["mean"][10] is None  # null in the file
    assert math.isnan(spread["summary"]["basin_width"]["values"][1])  # b has no value at x = 0
    # all points missing
    empty = make_surface(tmp_path / "empty.h5", grid, abs, skip=set(range(21)))
    assert all(not_blank(f) for f in plot_1d_loss_err(read_surface(empty), fmt="png", dpi=60))
    spread = direction_spread(grid.x.coordinates(), np.full((2, 21), np.nan))
    assert math.isnan(spread["summary"]["basin_width"]["mean"])


# -- bad input ------------------------------------------------------------------------------------------------


def test_bad_inputs_give_one_line_and_status_1(tmp_path):
    one = make_surface(tmp_path / "one.h5", Grid(Axis(-1, 1, 11)), abs)
    other = make_surface(tmp_path / "other.h5", Grid(Axis(-1, 1, 21)), abs)
    two_d = make_surface(tmp_path / "two.h5", Grid(Axis(-1, 1, 3), Axis(-1, 1, 3)), lambda a, b: a)
    cases = [
        (["--surf_file", str(tmp_path / "missing.h5")], ["cannot read surface file", "missing.h5"]),
        (["--surf_file", one, "--surf_name", "nope"], ["has no 'nope'", "train_loss", "test_acc"]),
        (["--surf_file", two_d], ["2D surface", "use plot_2D.py"]),
        (["--surf_file", one, other, "--labels", "a"], ["--labels gives 1 labels for 2 surface files"]),
        (["--surf_file", one, other, "--band", "std"], ["must share one x grid", "11 points", "21"]),
        (["--surf_file", one, "--band", "minmax"], ["at least 2"]),
        (["--dirs_prefix", str(tmp_path / "nothing")], ["no 1D surface file matches"]),
        (["--surf_file", one, "--dirs_prefix", one], ["not both"]),
        ([], ["nothing to plot"]),
        (["--surf_file", one, "--xmin", "1", "--xmax", "0"], ["--xmin must be less than --xmax"]),
        (["--surf_file", one, "--prefix", str(tmp_path / "no" / "such" / "dir")], ["No such file or directory"]),
    ]
    for args, words in cases:
        one_line_error(run_command("plot_1D.py", *args, cwd=tmp_path, check=False), *words)


def test_direction_files_of_different_models_are_refused(tmp_path):
    grid = Grid(Axis(-1, 1, 11))
    a = make_surface(tmp_path / "a.h5", grid, abs, model="sha-a")
    b = make_surface(tmp_path / "b.h5", grid, abs, model="sha-b")
    proc = run_command("plot_1D.py", "--surf_file", a, b, "--band", "minmax", cwd=tmp_path, check=False)
    one_line_error(proc, "differ only in their directions", "model_sha256")
