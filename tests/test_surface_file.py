"""The surface file: grid parsing and orientation, exact resume checks (grid, BN samples), durable and
crash-consistent writes (fsync order, kills at every line of the file code, half-made groups, leftovers),
one-line errors for files that are not ours, and reading files in the original tool's layout."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
import traceback
from pathlib import Path

import h5py
import numpy as np
import pytest

from loss_landscape.surface import file as surface_file, grid as surface_grid, reader as surface_reader
from loss_landscape.surface import storage as surface_storage
from conftest import run_command
from loss_landscape import _util
from loss_landscape._util import host_tag
from loss_landscape.surface.grid import GROUP_DATASETS, Axis, Grid, Provenance, SurfaceJob
from loss_landscape.errors import SurfaceError
from loss_landscape.surface.file import SurfaceFile
from loss_landscape.surface.reader import read_surface


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


def test_the_point_that_is_zero_is_exactly_zero_and_the_others_are_linspace():
    cases = [Axis(-d, d, n) for d in (1.0, 0.1, 0.37) for n in range(3, 202, 2)]
    cases += [Axis(-1, 2, 4), Axis(-0.3, 0.6, 4), Axis(-0.2, 1.0, 7), Axis(-2, 0, 5), Axis(0, 1, 3)]
    for a in cases:
        c, plain = a.coordinates(), np.linspace(a.min, a.max, a.num)
        k = int(np.argmin(np.abs(plain)))
        assert c[k] == 0.0, a
        assert np.array_equal(np.delete(c, k), np.delete(plain, k)), a
        assert abs(plain[k]) < 1e-15
    assert np.linspace(-1, 1, 99)[49] != 0  # what the exact zero corrects
    np.testing.assert_array_equal(Axis(-1, 1.5, 4).coordinates(), np.linspace(-1, 1.5, 4))  # no zero: plain


def test_a_file_made_with_plain_linspace_coordinates_still_resumes(tmp_path):
    path = str(tmp_path / "s.h5")
    j = job(grid=Grid(Axis(-1, 1, 99)))
    with SurfaceFile.open(path, j, ["train"], Provenance()) as f:
        f.write(0, {"train": (1.0, 50.0)})
    with h5py.File(path, "r+") as h:  # as files made before the centre was exactly 0
        h["xcoordinates"][...] = np.linspace(-1, 1, 99)
    with SurfaceFile.open(path, j, ["train"], Provenance()) as f:
        assert len(f.pending(["train"])) == 98
    with h5py.File(path, "r+") as h:
        h["xcoordinates"][3] += 1e-9
    with pytest.raises(SurfaceError, match="x is"):
        SurfaceFile.open(path, j, ["train"], Provenance())


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


# -- exact grids ---------------------------------------------------------------------------------------------

def test_axis_text_is_exact_where_g_would_round():
    assert str(Axis(-1, 1, 51)) == "-1:1:51" and str(Axis(-0.5, 0.25, 3)) == "-0.5:0.25:3"
    near = Axis.parse("-1:1.0000004:5")
    assert str(near) == "-1:1.0000004:5" and Axis.parse(str(near)) == near
    assert Axis.parse(str(Axis(0.1 + 0.2, 2.0, 4))) == Axis(0.1 + 0.2, 2.0, 4)


def test_grids_compare_as_exact_coordinates(tmp_path):
    path = str(tmp_path / "s.h5")
    SurfaceFile.open(path, job(Grid(Axis(-1, 1, 5))), ["train"], Provenance()).close()
    with pytest.raises(SurfaceError, match=r"x is '-1:1:5' in the file but '-1:1\.0000004:5' now"):
        SurfaceFile.open(path, job(Grid(Axis.parse("-1:1.0000004:5"))), ["train"], Provenance())
    with pytest.raises(SurfaceError, match="y is none in the file but '-1:1:3' now"):
        SurfaceFile.open(path, job(Grid(Axis(-1, 1, 5), Axis(-1, 1, 3))), ["train"], Provenance())
    SurfaceFile.open(path, job(Grid(Axis(-1.0, 1.0, 5))), ["train"], Provenance()).close()  # same floats


def test_grid_attributes_are_recorded_in_full(tmp_path):
    path = str(tmp_path / "s.h5")
    grid = Grid(Axis.parse("-1:1.0000004:5"), Axis(0.1 + 0.2, 1, 3))
    SurfaceFile.open(path, job(grid), ["train"], Provenance()).close()
    with h5py.File(path) as h:
        assert Axis.parse(h.attrs["x"]) == grid.x and Axis.parse(h.attrs["y"]) == grid.y
        np.testing.assert_array_equal(h["ycoordinates"][()], grid.y.coordinates())


# -- BN recalibration samples ---------------------------------------------------------------------------------

def test_bn_fields():
    assert SurfaceJob.bn_fields(2, 128, 1397) == {"bn_recalibrate": 2, "bn_batch_size": 128, "bn_samples": 256}
    assert SurfaceJob.bn_fields(20, 128, 1397)["bn_samples"] == 1397  # the last batch is short
    assert SurfaceJob.bn_fields(0, 1024, 1397) == {"bn_recalibrate": 0, "bn_batch_size": 0, "bn_samples": 0}


def test_resume_with_another_bn_sample_count_is_refused(tmp_path):
    path = str(tmp_path / "s.h5")
    SurfaceFile.open(path, job(**SurfaceJob.bn_fields(2, 128, 1397)), ["train"], Provenance(batch_size=128)).close()
    with pytest.raises(SurfaceError) as e:  # started on a CPU (batch 128), resumed on a GPU (1024)
        SurfaceFile.open(path, job(**SurfaceJob.bn_fields(2, 1024, 1397)), ["train"], Provenance(batch_size=1024))
    msg = str(e.value)
    assert "bn_batch_size is 128 in the file but 1024 now" in msg
    assert "bn_samples is 256 in the file but 1397 now" in msg
    assert "give --batch_size 128 to resume" in msg and "\n" not in msg
    # The same count in batches of another size gives other statistics: refused too.
    with pytest.raises(SurfaceError, match="bn_batch_size is 128 in the file but 64 now"):
        SurfaceFile.open(path, job(**SurfaceJob.bn_fields(4, 64, 1397)), ["train"], Provenance())


def test_without_bn_recalibration_the_batch_size_is_no_part_of_the_job(tmp_path):
    path = str(tmp_path / "s.h5")
    SurfaceFile.open(path, job(**SurfaceJob.bn_fields(0, 128, 1397)), ["train"], Provenance(batch_size=128)).close()
    SurfaceFile.open(path, job(**SurfaceJob.bn_fields(0, 1024, 1397)), ["train"], Provenance(batch_size=1024)).close()
    with h5py.File(path) as h:
        assert h.attrs["bn_batch_size"] == 0 and h.attrs["bn_samples"] == 0
        assert [r["batch_size"] for r in json.loads(h.attrs["runs"])] == [128, 1024]  # recorded per run


def _as_before_bn_samples(path, x_text=None):
    """Makes `path` look as format_version 1 files written before the BN batch size and sample count
    (and exact grid text) were recorded."""
    with h5py.File(path, "r+") as h:
        del h.attrs["bn_batch_size"], h.attrs["bn_samples"]
        if x_text is not None:
            h.attrs["x"] = x_text


def test_files_of_earlier_versions_still_resume(tmp_path):
    path = str(tmp_path / "old.h5")
    with SurfaceFile.open(path, job(), ["train"], Provenance(batch_size=1024)) as f:
        f.write(2, {"train": (0.5, 90.0)})
    _as_before_bn_samples(path, x_text="-1:1:4")
    with SurfaceFile.open(path, job(**SurfaceJob.bn_fields(0, 128, 1397)), ["train"], Provenance()) as f:
        assert f.done_count("train") == 1
    with h5py.File(path) as h:  # brought up to date
        assert h.attrs["bn_samples"] == 0 and h.attrs["format_version"] == 1

    bn = str(tmp_path / "old_bn.h5")
    SurfaceFile.open(bn, job(**SurfaceJob.bn_fields(3, 128, 1397)), ["train"], Provenance(batch_size=128)).close()
    _as_before_bn_samples(bn)
    with pytest.raises(SurfaceError, match="bn_batch_size is 128 in the file but 1024 now.*give --batch_size 128"):
        SurfaceFile.open(bn, job(**SurfaceJob.bn_fields(3, 1024, 1397)), ["train"], Provenance(batch_size=1024))
    SurfaceFile.open(bn, job(**SurfaceJob.bn_fields(3, 128, 1397)), ["train"], Provenance(batch_size=128)).close()
    with h5py.File(bn) as h:
        assert h.attrs["bn_batch_size"] == 128 and h.attrs["bn_samples"] == 384


# -- durable writes -------------------------------------------------------------------------------------------

def test_values_are_fsynced_before_the_done_flags_are_written(tmp_path, monkeypatch):
    path = str(tmp_path / "s.h5")
    f = SurfaceFile.open(path, job(), ["train", "test"], Provenance())
    events = []
    real_setitem, real_flush, real_fsync = h5py.Dataset.__setitem__, h5py.File.flush, os.fsync

    def setitem(self, key, value):
        events.append(("done" if self.name.endswith("_done") else "values", self.name))
        real_setitem(self, key, value)

    def flush(self):
        events.append(("flush", self.filename))
        real_flush(self)

    def fsync(fd):
        events.append(("fsync", os.path.realpath(f"/proc/self/fd/{fd}") if os.path.exists("/proc/self/fd") else path))
        real_fsync(fd)

    monkeypatch.setattr(h5py.Dataset, "__setitem__", setitem)
    monkeypatch.setattr(h5py.File, "flush", flush)
    monkeypatch.setattr(os, "fsync", fsync)
    for flat in (1, 7, 8):
        f.write(flat, {"train": (1.0, 2.0), "test": (3.0, 4.0)})
    assert f.flush() == 3
    monkeypatch.undo()
    f.close()
    kinds = [k for k, _ in events]
    first_done = kinds.index("done")
    assert set(kinds[:first_done - 2]) == {"values"} and kinds[first_done - 2:first_done] == ["flush", "fsync"]
    assert set(kinds[first_done:-2]) == {"done"} and kinds[-2:] == ["flush", "fsync"]
    assert {n for k, n in events if k == "values"} == {"/train_loss", "/train_acc", "/test_loss", "/test_acc"}
    assert {n for k, n in events if k == "fsync"} == {os.path.realpath(path)}  # the surface file itself


def _raw_ranges(path):
    with h5py.File(path, "r") as h:
        return [(h[n].id.get_offset(), h[n].id.get_offset() + h[n].id.get_storage_size()) for n in h
                if n.endswith(("_loss", "_acc", "_done"))]


def test_flushes_overwrite_only_allocated_raw_data(tmp_path):
    """Flushes change no HDF5 metadata, which a kill could leave half written: only bytes inside the value
    and mask datasets' pre-allocated storage change, and the file does not grow."""
    path = str(tmp_path / "s.h5")
    SurfaceFile.open(path, job(), ["train", "test"], Provenance()).close()
    ranges = _raw_ranges(path)
    assert all(lo is not None for lo, _ in ranges)
    before = open(path, "rb").read()
    with SurfaceFile.open(path, job(), ["train", "test"], Provenance()) as f:
        ranges = _raw_ranges(path)
        before = open(path, "rb").read()  # after the open's own (atomic) rewrite
        for flat in (0, 5, 11):
            f.write(flat, {"train": (0.25 * flat, 50.0), "test": (1.0, 75.0)})
        f.flush()
        after = open(path, "rb").read()
    assert len(after) == len(before)
    changed = np.flatnonzero(np.frombuffer(before, np.uint8) != np.frombuffer(after, np.uint8))
    assert changed.size > 0
    assert all(any(lo <= c < hi for lo, hi in ranges) for c in changed)


# -- files that always reopen ---------------------------------------------------------------------------------

def _value(flat, g):
    return (0.5 * flat + (g == "test"), 10.0 * flat)


def _fill(f, flats, groups):
    for flat in flats:
        f.write(flat, {g: _value(flat, g) for g in groups})


def _check_and_complete(path, j):
    """The next run's view: the file opens, every point marked done holds its value, and it completes."""
    with SurfaceFile.open(path, j, ["train", "test"], Provenance()) as f:
        for g in ("train", "test"):
            done = f._done[g].ravel()
            for flat in np.flatnonzero(done):
                got = (f._values[GROUP_DATASETS[g][0]].ravel()[flat], f._values[GROUP_DATASETS[g][1]].ravel()[flat])
                assert got == _value(flat, g), (g, flat)
        for flat, need in f.pending(["train", "test"]):
            f.write(flat, {g: _value(flat, g) for g in need})
    s = read_surface(path)
    for g in ("train", "test"):
        want = np.array([_value(flat, g)[0] for flat in range(j.grid.size)]).reshape(j.grid.shape)
        np.testing.assert_array_equal(s.values[f"{g}_loss"], want)
    assert not list(Path(path).parent.glob("*.tmp*"))


def _killed_at_line(n, scenario):
    """Runs `scenario` in a forked child that SIGKILLs itself just before the n-th line it executes in
    the surface file modules or `_util` (atomic_write) (0: never); returns (killed, the (function, line) of
    every line executed)."""
    traced = (surface_file, surface_grid, surface_reader, surface_storage, _util)
    sources = {os.path.realpath(m.__file__) for m in traced}
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(r)
        seen = []
        code = 0

        def local(frame, event, arg):
            if event == "line":
                seen.append((os.path.basename(frame.f_code.co_filename), frame.f_code.co_name, frame.f_lineno))
                if len(seen) == n:
                    os.kill(os.getpid(), signal.SIGKILL)
            return local

        try:
            sys.settrace(lambda frame, event, arg: local if frame.f_code.co_filename in sources else None)
            scenario()
            sys.settrace(None)
            os.write(w, json.dumps(seen).encode())
        except BaseException:
            sys.settrace(None)
            traceback.print_exc()
            code = 3
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r) as out:
        seen = out.read()
    _, status = os.waitpid(pid, 0)
    assert not os.WIFEXITED(status) or os.WEXITSTATUS(status) == 0, "the scenario failed in the child"
    return os.WIFSIGNALED(status), [tuple(x) for x in json.loads(seen or "[]")]


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("start", ["none", "half_made_group"])
def test_a_kill_at_any_line_of_the_file_code_leaves_a_file_that_reopens_and_completes(tmp_path, start):
    """Creation, adding the test group (``--eval_on both`` on a train-only file), the run history, the repair
    of a group half made by an older version, and flushes: killed before each distinct line of the surface
    file modules and `_util.atomic_write` they execute (its first execution), each time followed by the next
    run's reopen."""
    j = job()
    base, path = tmp_path / "base.h5", tmp_path / "s.h5"
    if start == "half_made_group":
        with SurfaceFile.open(str(base), j, ["train"], Provenance()) as f:
            _fill(f, range(5), ["train"])
        with h5py.File(base, "r+") as h:  # an older version killed between the values and their mask
            h["test_loss"] = np.full(j.grid.shape, np.nan)

    def scenario():
        first = ["train"] if start == "none" else ["train", "test"]
        with SurfaceFile.open(str(path), j, first, Provenance()) as f:
            _fill(f, range(3, 8), first)
            f.flush()
            _fill(f, range(8, 10), first)
        with SurfaceFile.open(str(path), j, ["train", "test"], Provenance()) as f:
            _fill(f, range(0, 6), ["train", "test"])

    def reset():
        for p in tmp_path.glob("s.h5*"):
            p.unlink()
        if base.exists():
            shutil.copy(base, path)

    reset()
    killed, lines = _killed_at_line(0, scenario)
    assert not killed
    firsts = sorted({line: n for n, line in reversed(list(enumerate(lines, 1)))}.values())
    assert len(firsts) > 100
    assert {"atomic_write", "replace_with", "flush"} <= {function for _, function, _ in lines}
    for n in firsts:
        reset()
        killed, _ = _killed_at_line(n, scenario)
        assert killed
        _check_and_complete(str(path), j)


def test_a_failure_while_the_structure_changes_leaves_the_old_file(tmp_path, monkeypatch):
    path = str(tmp_path / "s.h5")
    with SurfaceFile.open(path, job(), ["train"], Provenance()) as f:
        _fill(f, range(4), ["train"])
    before = open(path, "rb").read()

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(SurfaceError, match="cannot write surface file .*No space left on device.*unchanged"):
        SurfaceFile.open(path, job(), ["train", "test"], Provenance())
    monkeypatch.undo()
    assert open(path, "rb").read() == before and not list(tmp_path.glob("*.tmp*"))
    with SurfaceFile.open(path, job(), ["train", "test"], Provenance()) as f:
        assert f.done_count("train") == 4 and f.done_count("test") == 0


def test_a_group_half_made_by_an_older_version_is_made_again(tmp_path):
    path = str(tmp_path / "s.h5")
    with SurfaceFile.open(path, job(), ["train"], Provenance()) as f:
        _fill(f, range(6), ["train"])
    with h5py.File(path, "r+") as h:  # test_loss and test_acc written, test_done never
        h["test_loss"] = np.full((3, 4), np.nan)
        h["test_acc"] = np.full((3, 4), np.nan)
    assert "test_loss" not in read_surface(path).values  # not shown as values
    with SurfaceFile.open(path, job(), ["train", "test"], Provenance()) as f:
        assert f.repaired == ("test",) and f.done_count("train") == 6 and f.done_count("test") == 0
        assert len(f.pending(["train", "test"])) == 12
    with h5py.File(path) as h:
        assert h["test_done"].shape == (3, 4) and json.loads(h.attrs["runs"])[-1]["repaired"] == ["test"]
    _check_and_complete(path, job())


def test_leftover_temporary_files_of_killed_runs_are_removed(tmp_path):
    path = tmp_path / "s.h5"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = host_tag()
    gone = [f"s.h5.tmp-{host}-{dead.pid}", f"s.h5.tmp{dead.pid}", "s.h5.tmp-otherhost-1"]
    kept = [f"s.h5.tmp-{host}-{os.getppid()}", "s.h5.tmp-otherhost-2", "s.h5.tmp-notes"]
    for name in gone + kept:
        (tmp_path / name).write_bytes(b"partial")
    old = time.time() - 2 * surface_storage.STALE_TEMP_SECONDS
    os.utime(tmp_path / "s.h5.tmp-otherhost-1", (old, old))  # another host's, long dead
    SurfaceFile.open(str(path), job(), ["train"], Provenance()).close()
    assert sorted(p.name for p in tmp_path.glob("s.h5.tmp*")) == sorted(kept)


def test_run_history_is_capped_and_permissions_are_kept(tmp_path, monkeypatch):
    path = str(tmp_path / "s.h5")
    monkeypatch.setattr(surface_file, "MAX_RUNS", 3)
    for world in range(1, 6):
        SurfaceFile.open(path, job(), ["train"], Provenance(world_size=world)).close()
        os.chmod(path, 0o640)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    with h5py.File(path) as h:
        assert [r["world_size"] for r in json.loads(h.attrs["runs"])] == [1, 4, 5] and h.attrs["runs_omitted"] == 2


def _text(path):
    path.write_text("x,y,loss\n0,0,1.5\n")


def _truncated(path):
    with SurfaceFile.open(str(path), job(), ["train"], Provenance()) as f:
        _fill(f, range(3), ["train"])
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def _foreign(path):
    with h5py.File(path, "w") as h:
        h["weights"] = np.arange(10.0)


def _empty(path):
    path.write_bytes(b"")


@pytest.mark.parametrize("make, msg, read_msg", [
    (_text, "is not an HDF5 file, so not a surface file: choose another --surf_file or move it away "
            r"\(it was left unchanged\)$", "is not an HDF5 file"),
    (_truncated, "is a damaged or truncated HDF5 file .*: delete it or move it away to start over", "truncated"),
    (_foreign, "is an HDF5 file of another program, not a surface file; choose another --surf_file",
     "is not a surface file: it has no 'xcoordinates'"),
    (_empty, "is empty", "is empty"),
    (lambda p: p.mkdir(), "is a folder", "is a folder")])
def test_bad_files_get_one_line_and_are_left_unchanged(tmp_path, make, msg, read_msg):
    path = tmp_path / "s.h5"
    make(path)
    before = None if path.is_dir() else path.read_bytes()
    with pytest.raises(SurfaceError, match=msg) as e:
        SurfaceFile.open(str(path), job(), ["train"], Provenance())
    assert "\n" not in str(e.value)
    assert before is None or path.read_bytes() == before
    with pytest.raises(SurfaceError, match=read_msg):  # plots and exports say the same
        read_surface(str(path))


@pytest.mark.slow
@pytest.mark.parametrize("make, msg", [(_text, "is not an HDF5 file"), (_truncated, "damaged or truncated"),
                                       (_foreign, "HDF5 file of another program")])
def test_plot_surface_names_a_bad_surface_file_in_one_line(tmp_path, trained_ckpt, make, msg):
    surf = tmp_path / "s.h5"
    make(surf)
    before = surf.read_bytes()
    proc = run_command("plot_surface.py", "--model_file", str(trained_ckpt), "--x=-1:1:3", "--quiet",
                       "--dir_file", str(tmp_path / "d.h5"), "--surf_file", str(surf), cwd=tmp_path, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and msg in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and surf.read_bytes() == before


@pytest.mark.slow
def test_plot_surface_refuses_to_mix_bn_estimates_of_another_batch_size(tmp_path, trained_ckpt):
    common = ["--model_file", str(trained_ckpt), "--x=-1:1:3", "--quiet", "--dir_file", str(tmp_path / "d.h5")]
    bn = [*common, "--bn_recalibrate", "2", "--surf_file", str(tmp_path / "bn.h5")]
    run_command("plot_surface.py", *bn, "--batch_size", "64", cwd=tmp_path)
    proc = run_command("plot_surface.py", *bn, "--batch_size", "128", cwd=tmp_path, check=False)
    assert proc.returncode == 1 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "bn_batch_size is 64 in the file but 128 now" in proc.stderr
    assert "bn_samples is 128 in the file but 256 now" in proc.stderr and "give --batch_size 64" in proc.stderr
    plain = [*common, "--surf_file", str(tmp_path / "plain.h5")]  # no recalibration: any batch size resumes
    run_command("plot_surface.py", *plain, "--batch_size", "64", cwd=tmp_path)
    assert "0 to compute" in run_command("plot_surface.py", *plain, "--batch_size", "128", cwd=tmp_path).stdout
