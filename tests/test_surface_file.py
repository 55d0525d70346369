"""The surface file: grid parsing and orientation, resume checks, crash-safe writes, and reading
files in the original tool's layout."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from surface_file import Axis, Grid, Provenance, SurfaceError, SurfaceFile, SurfaceJob, read_surface


@pytest.mark.parametrize("text, msg", [("-1:1", "MIN:MAX:NUM"), ("a:b:c", "numbers"), ("-1:1:1", "at least 2"),
                                       ("-1:1:2.5", "whole number"), ("1:-1:5", "greater than MIN"),
                                       ("nan:1:3", "finite")])
def test_axis_rejects_malformed(text, msg):
    with pytest.raises(ValueError, match=msg):
        Axis.parse(text)


def test_axis_parse_and_coordinates():
    a = Axis.parse("-1:1:51")
    assert a == Axis(-1.0, 1.0, 51) and str(a) == "-1:1:51"
    np.testing.assert_array_equal(a.coordinates(), np.linspace(-1, 1, 51))


def test_non_square_grid_orientation():
    g = Grid(Axis(-1, 1, 5), Axis(0, 2, 3))
    assert g.shape == (3, 5)
    for flat in range(g.size):
        j, i = g.index(flat)
        a, b = g.coords(flat)
        assert a == g.x.coordinates()[i] and b == g.y.coordinates()[j]


def job(grid=None, **kw) -> SurfaceJob:
    base = dict(grid=grid or Grid(Axis(-1, 1, 4), Axis(-1, 1, 3)), directions_sha256="d" * 8, dir_type="weights",
                model="m", model_sha256="s" * 8, dataset="digits")
    base.update(kw)
    return SurfaceJob(**base)


def test_values_land_at_the_right_coordinates(tmp_path):
    path = str(tmp_path / "s.h5")
    j = job()
    with SurfaceFile.open(path, j, ["train"], Provenance(dir_file="dirs.h5")) as f:
        for flat in range(j.grid.size):
            a, b = j.grid.coords(flat)
            f.write(flat, {"train": (a + 10 * b, 50.0)})
    s = read_surface(path)
    X, Y = np.meshgrid(s.x, s.y)
    np.testing.assert_array_equal(s.values["train_loss"], X + 10 * Y)
    with h5py.File(path) as h:  # what the original's scripts read
        assert h["train_loss"].shape == (3, 4)
        assert h["dir_file"][()] in (b"dirs.h5", "dirs.h5")
        np.testing.assert_array_equal(h["xcoordinates"][()], np.linspace(-1, 1, 4))


def test_resume_lists_only_missing_points_and_nan_is_a_value(tmp_path):
    path = str(tmp_path / "s.h5")
    j = job()
    with SurfaceFile.open(path, j, ["train"], Provenance()) as f:
        assert len(f.pending(["train"])) == 12
        f.write(0, {"train": (float("nan"), 0.0)})
        f.write(5, {"train": (0.0, 100.0)})
    with SurfaceFile.open(path, j, ["train", "test"], Provenance()) as f:
        pend = dict(f.pending(["train", "test"]))
        assert pend[0] == ("test",) and pend[5] == ("test",) and pend[1] == ("train", "test")
        assert f.done_count("train") == 2
    s = read_surface(path)
    assert np.isnan(s.values["train_loss"][0, 0]) and s.values["train_loss"][1, 1] == 0.0
    with h5py.File(path) as h:
        assert h["train_done"][0, 0] == 1 and h["train_done"][0, 1] == 0


@pytest.mark.parametrize("change, field", [({"grid": Grid(Axis(-1, 1, 5), Axis(-1, 1, 3))}, "x is"),
                                           ({"directions_sha256": "e" * 8}, "directions_sha256"),
                                           ({"model_sha256": "t" * 8}, "model_sha256"),
                                           ({"dataset": "cifar10"}, "dataset"),
                                           ({"loss_name": "mse"}, "loss_name"),
                                           ({"split_idx": 1, "data_split": 2}, "data_split")])
def test_reopen_with_a_different_job_is_refused(tmp_path, change, field):
    path = str(tmp_path / "s.h5")
    SurfaceFile.open(path, job(), ["train"], Provenance()).close()
    with pytest.raises(SurfaceError, match=field):
        SurfaceFile.open(path, job(**change), ["train"], Provenance())


def test_done_flags_follow_values(tmp_path):
    path = str(tmp_path / "s.h5")
    with SurfaceFile.open(path, job(), ["train"], Provenance()) as f:
        f.write(3, {"train": (1.5, 20.0)})
        with h5py.File(path, "r") as h:  # buffered, not yet on disk
            assert h["train_done"][0, 3] == 0
        assert f.flush() == 1
        with h5py.File(path, "r") as h:
            assert h["train_done"][0, 3] == 1 and h["train_loss"][0, 3] == 1.5


def test_unwritable_folder_and_foreign_file(tmp_path):
    with pytest.raises(SurfaceError, match="does not exist"):
        SurfaceFile.open(str(tmp_path / "nope" / "s.h5"), job(), ["train"], Provenance())
    foreign = tmp_path / "orig.h5"
    with h5py.File(foreign, "w") as h:
        h["xcoordinates"] = np.linspace(-1, 1, 3)
    with pytest.raises(SurfaceError, match="not a surface file of this tool"):
        SurfaceFile.open(str(foreign), job(), ["train"], Provenance())


def test_reads_a_file_in_the_original_layout(tmp_path):
    path = tmp_path / "orig_surface.h5"
    x = np.linspace(-1, 1, 5)
    X, Y = np.meshgrid(x, x)
    with h5py.File(path, "w") as f:  # as the original wrote it
        f["dir_file"] = "model.t7_weights.h5"
        f["xcoordinates"] = x
        f["ycoordinates"] = x
        f["train_loss"] = X ** 2 + Y ** 2
        f["train_acc"] = np.full((5, 5), 90.0)
    s = read_surface(str(path))
    assert s.original_layout and s.ndim == 2 and s.attrs["dir_file"] == "model.t7_weights.h5"
    np.testing.assert_array_equal(s.values["train_loss"], X ** 2 + Y ** 2)


def test_original_minus_one_reads_as_not_computed(tmp_path):
    path = tmp_path / "orig_partial.h5"
    with h5py.File(path, "w") as f:
        f["xcoordinates"] = np.linspace(-1, 1, 4)
        f["train_loss"] = np.array([0.5, -1, 0.2, -1])
        f["train_acc"] = np.array([90.0, -1, 95, -1])
    s = read_surface(str(path))
    np.testing.assert_array_equal(np.isnan(s.values["train_loss"]), [False, True, False, True])
    assert s.values["train_acc"][2] == 95
