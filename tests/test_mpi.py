"""Real MPI runs (2 and 3 ranks, so splits are uneven) give exactly the serial values."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import run_command
from loss_landscape.surface.reader import read_surface

pytestmark = [pytest.mark.mpi, pytest.mark.slow]


@pytest.fixture(scope="module")
def serial(tmp_path_factory, trained_ckpt):
    tmp = tmp_path_factory.mktemp("serial")
    common = ["--model_file", str(trained_ckpt), "--x=-1:1:7", "--y=-0.5:1:4", "--dir_file", str(tmp / "d.h5"),
              "--eval_on", "both", "--dir_type", "states", "--metric", "top5", "--eval_samples", "700", "--quiet"]
    run_command("plot_surface.py", *common, "--surf_file", str(tmp / "serial.h5"), cwd=tmp)
    return tmp, common, read_surface(str(tmp / "serial.h5"))


@pytest.mark.parametrize("ranks", [2, 3])
def test_ranks_reproduce_the_serial_surface(serial, ranks):
    tmp, common, want = serial
    out = tmp / f"mpi{ranks}.h5"
    proc = run_command("plot_surface.py", *common, "--surf_file", str(out), "--chunk_size", "1", cwd=tmp,
                       ranks=ranks)
    assert f"on {ranks} ranks" in proc.stdout
    got = read_surface(str(out))
    for key in ("train_loss", "train_acc", "test_loss", "test_acc", "train_top5", "test_top5"):
        np.testing.assert_array_equal(got.values[key], want.values[key], err_msg=key)
    import json
    import h5py
    with h5py.File(out) as f:
        assert json.loads(f.attrs["runs"])[-1]["world_size"] == ranks


def test_bad_input_under_mpi_stops_every_rank_with_one_message(tmp_path):
    proc = run_command("plot_surface.py", "--model_file", str(tmp_path / "missing.t7"), "--quiet", cwd=tmp_path,
                       ranks=3, check=False, timeout=120)
    assert proc.returncode != 0
    assert proc.stderr.count("does not exist") == 1, proc.stderr
    assert "Traceback" not in proc.stderr
