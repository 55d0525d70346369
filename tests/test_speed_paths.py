"""The speed paths through plot_surface.py: each gives the plain path's surface (``--fold_bn off --shortcut off
--compile off``) to float rounding; ``--layers`` and ``--tolerance`` make different jobs, recorded in the file; the
file stores the standard error and the samples of each estimated point, and at least 95 % of points lie within 3
standard errors of the exact surface."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest

from conftest import run_command
from loss_landscape.surface.reader import read_surface

TINY = ["--model", "tinynet:net", "--model_file", "tiny.t7", "--dataset", "digits", "--quiet"]
GRID = ["--x=-1:1:9", "--y=-1:1:7"]
PLAIN = ["--fold_bn", "off", "--shortcut", "off", "--compile", "off"]


@pytest.fixture()
def folder(tmp_path, tiny):
    root, _ = tiny
    for f in ("tinynet.py", "tiny.t7"):
        shutil.copy(root / f, tmp_path / f)
    return tmp_path


def _surface(folder, name, *args, ranks=0):
    run_command("plot_surface.py", *TINY, *GRID, "--surf_file", name, *args, cwd=folder, ranks=ranks)
    return read_surface(str(folder / name))


def _close(a: np.ndarray, b: np.ndarray, rel: float = 1e-6) -> bool:
    return bool(np.all(np.abs(a - b) <= rel * np.abs(b)))


def test_shortcut_and_layers_equal_the_plain_path(folder):
    plain = _surface(folder, "plain.h5", *PLAIN)
    fast = _surface(folder, "fast.h5")  # defaults: the first Linear precomputed (tinynet has no BN)
    with h5py.File(folder / "fast.h5", "r") as f:
        speed = json.loads(f.attrs["runs"])[-1]["speed"]  # what each path did is in the run's record
    assert speed["shortcut"] == "first-layer" and speed["compile_reason"].startswith("auto: eager"), speed
    for name in ("train_loss", "train_acc"):
        assert _close(fast.values[name], plain.values[name]), name

    head_plain = _surface(folder, "head_plain.h5", "--layers", "3", *PLAIN)
    head = _surface(folder, "head.h5", "--layers", "3.*")  # the last Linear: the prefix runs once
    with h5py.File(folder / "head.h5", "r") as f:
        assert json.loads(f.attrs["runs"])[-1]["speed"]["shortcut"] == "prefix+first-layer"
    assert _close(head.values["train_loss"], head_plain.values["train_loss"])
    assert not _close(head.values["train_loss"], plain.values["train_loss"], 1e-3)  # another plane
    with h5py.File(folder / "head.h5", "r") as f:
        assert json.loads(f.attrs["layers"]) == ["3.*"]
    proc = run_command("plot_surface.py", *TINY, *GRID, "--surf_file", "head.h5", cwd=folder, check=False)
    assert proc.returncode != 0 and "different job" in proc.stderr  # all layers is another job
    proc = run_command("plot_surface.py", *TINY, *GRID, "--layers", "nosuch", cwd=folder, check=False)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode != 0 and len(lines) == 1 and "'nosuch' matches no tensor" in lines[0], proc.stderr


def test_tolerance_stores_error_bars_that_cover_the_exact_surface(folder):
    exact = _surface(folder, "exact.h5")
    est = _surface(folder, "est.h5", "--tolerance", "0.05", "--batch_size", "64")
    se, n = est.values["train_loss_stderr"], est.values["train_samples"]
    assert np.all(n >= 128) and np.all(n <= 1397) and np.all(n[se > 0] < 1397)
    assert np.mean(n) < 0.7 * 1397  # most points stop early at 5 %
    assert np.all(se <= 0.05 * est.values["train_loss"] + 1e-12)
    within = np.abs(est.values["train_loss"] - exact.values["train_loss"]) <= 3 * se + 1e-9
    assert within.mean() >= 0.95, within.mean()
    with h5py.File(folder / "est.h5", "r") as f:
        assert f.attrs["tolerance"] == 0.05 and f.attrs["tolerance_batch_size"] == 64
    proc = run_command("plot_surface.py", *TINY, *GRID, "--surf_file", "est.h5", "--tolerance", "0.01",
                       "--batch_size", "64", cwd=folder, check=False)
    assert proc.returncode != 0 and "tolerance" in proc.stderr
    run_command("plot_2D.py", "--surf_file", "est.h5", "--surf_name", "train_loss_stderr", "--format", "png",
                cwd=folder)
    assert (folder / "est_train_loss_stderr_2dcontour.png").exists()


def test_points_per_pass_under_mpi_equals_serial(folder):
    serial = _surface(folder, "serial.h5", *PLAIN)
    multi = _surface(folder, "multi.h5", "--points_per_pass", "3", "--chunk_size", "6", ranks=2)
    for name in ("train_loss", "train_acc"):
        assert _close(multi.values[name], serial.values[name], 1e-5), name
