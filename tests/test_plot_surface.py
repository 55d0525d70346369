"""plot_surface.py end to end, run as a user runs it: the embedded default, numbers against plain
evaluations, direction files of the original's layout, resume after kill -9 and SIGTERM, bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from conftest import ROOT, _env, run_command
from data import load_dataset
from evaluation import DeviceSplit, evaluate
from models import load_model
from surface_file import read_surface


def plain_loss(name, ckpt, split="train"):
    data = load_dataset("digits")
    part = data.train if split == "train" else data.test
    model = load_model(name, str(ckpt))
    return evaluate(model, DeviceSplit(part.inputs, part.targets), batch_size=len(part))


def test_embedded_default_end_to_end(tmp_path):
    proc = run_command("plot_surface.py", "--x=-1:1:5", "--y=-1:1:3", "--plot", "--quiet", cwd=tmp_path)
    ckpt = tmp_path / "trained_nets" / "digits_cnn" / "model_30.t7"
    assert ckpt.exists() and "trained the embedded digits_cnn" in proc.stdout
    surf_files = list((tmp_path / "trained_nets" / "digits_cnn").glob("*.surf-*.h5"))
    assert len(surf_files) == 1
    s = read_surface(str(surf_files[0]))
    assert s.values["train_loss"].shape == (3, 5) and np.isfinite(s.values["train_loss"]).all()
    loss, acc = plain_loss("digits_cnn", ckpt)
    assert s.values["train_loss"][1, 2] == pytest.approx(loss, rel=1e-6)  # the centre
    assert s.values["train_acc"][1, 2] == acc and acc > 90
    assert s.values["train_loss"][1, 2] < s.values["train_loss"][0, 0]  # a minimum, not a plateau
    png = list((tmp_path / "trained_nets" / "digits_cnn").glob("*_train_loss_2dcontour.png"))
    assert len(png) == 1
    import matplotlib.image as mpimg
    img = mpimg.imread(png[0])
    assert img.std() > 0.05  # not blank
    with h5py.File(surf_files[0]) as f:  # self-describing
        for key in ("format_version", "model_sha256", "directions_sha256", "x", "y", "dataset", "loss_name",
                    "code_version", "runs", "precision"):
            assert key in f.attrs, key


def test_centre_and_test_set_equal_plain_evaluation(tmp_path, trained_ckpt):
    surf = tmp_path / "s.h5"
    run_command("plot_surface.py", "--model_file", str(trained_ckpt), "--x=-0.5:0.5:3", "--eval_on", "both",
                "--surf_file", str(surf), "--quiet", "--batch_size", "50", cwd=tmp_path)
    s = read_surface(str(surf))
    for split in ("train", "test"):
        loss, acc = plain_loss("digits_cnn", trained_ckpt, split)
        assert s.values[f"{split}_loss"][1] == pytest.approx(loss, rel=1e-6)
        assert s.values[f"{split}_acc"][1] == acc


def test_interpolation_ends_are_the_two_models(tmp_path, trained_ckpt, trained_ckpt2):
    surf = tmp_path / "interp.h5"
    run_command("plot_surface.py", "--model_file", str(trained_ckpt), "--model_file2", str(trained_ckpt2),
                "--dir_type", "states", "--x=-0.5:1.5:5", "--surf_file", str(surf), "--quiet", cwd=tmp_path)
    s = read_surface(str(surf))
    np.testing.assert_allclose(s.x, [-0.5, 0, 0.5, 1, 1.5])
    assert s.values["train_loss"][1] == pytest.approx(plain_loss("digits_cnn", trained_ckpt)[0], rel=1e-6)
    assert s.values["train_loss"][3] == pytest.approx(plain_loss("digits_cnn", trained_ckpt2)[0], rel=1e-5)


def test_original_direction_file_gives_the_same_surface(tmp_path, trained_ckpt):
    ours = tmp_path / "ours_dirs.h5"
    run_command("plot_surface.py", "--model_file", str(trained_ckpt), "--x=-1:1:3", "--y=-1:1:3",
                "--dir_file", str(ours), "--surf_file", str(tmp_path / "a.h5"), "--quiet", cwd=tmp_path)
    orig = tmp_path / "orig_dirs.h5"
    with h5py.File(ours) as src, h5py.File(orig, "w") as dst:  # the original's layout: datasets only
        for g in ("xdirection", "ydirection"):
            grp = dst.create_group(g)
            for k in src[g]:
                grp.create_dataset(k, data=src[g][k][()])
    run_command("plot_surface.py", "--model_file", str(trained_ckpt), "--x=-1:1:3", "--y=-1:1:3",
                "--dir_file", str(orig), "--surf_file", str(tmp_path / "b.h5"), "--quiet", cwd=tmp_path)
    a, b = read_surface(str(tmp_path / "a.h5")), read_surface(str(tmp_path / "b.h5"))
    np.testing.assert_array_equal(a.values["train_loss"], b.values["train_loss"])


def test_reopening_with_another_grid_is_refused(tmp_path, trained_ckpt):
    args = ["--model_file", str(trained_ckpt), "--surf_file", str(tmp_path / "s.h5"), "--quiet"]
    run_command("plot_surface.py", *args, "--x=-1:1:3", cwd=tmp_path)
    proc = run_command("plot_surface.py", *args, "--x=-1:1:5", cwd=tmp_path, check=False)
    assert proc.returncode == 1
    assert "x is '-1:1:3' in the file but '-1:1:5' now" in proc.stderr
    again = run_command("plot_surface.py", *args, "--x=-1:1:3", cwd=tmp_path)
    assert "0 to compute" in again.stdout


def _done(path: Path) -> int:
    """Points whose every evaluated set is marked done (read without taking the writer's lock)."""
    try:
        with h5py.File(path, "r", locking=False) as f:
            masks = [f[k][()] for k in ("train_done", "test_done") if k in f]
            return int(np.logical_and.reduce(masks).sum()) if masks else 0
    except (OSError, KeyError):
        return 0


def _start_and_stop(tmp_path, args, sig, at_least=10):
    cmd = [sys.executable, str(ROOT / "plot_surface.py"), *args]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    surf = Path(args[args.index("--surf_file") + 1])
    deadline = time.time() + 120
    while _done(surf) < at_least and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_interrupted_run_resumes_to_the_same_values(tmp_path, trained_ckpt, sig):
    grid = ["--x=-1:1:40", "--y=-1:1:40", "--eval_on", "both"]
    common = ["--model_file", str(trained_ckpt), "--dir_file", str(tmp_path / "d.h5"), *grid, "--quiet",
              "--flush_every", "0.05", "--chunk_size", "2"]
    code, out, err = _start_and_stop(tmp_path, [*common, "--surf_file", str(tmp_path / "cut.h5")], sig)
    partial = _done(tmp_path / "cut.h5")
    if code == 0:
        pytest.skip("the run finished before the signal arrived")
    assert code == (-9 if sig == signal.SIGKILL else 128 + signal.SIGTERM), err
    if sig == signal.SIGTERM:
        assert "interrupted by SIGTERM" in err and "rerun the same command to resume" in err
        assert "Traceback" not in err
    assert 0 < partial < 1600
    resumed = run_command("plot_surface.py", *common, "--surf_file", str(tmp_path / "cut.h5"), cwd=tmp_path)
    assert f"{1600 - partial} to compute" in resumed.stdout
    run_command("plot_surface.py", *common, "--surf_file", str(tmp_path / "whole.h5"), cwd=tmp_path)
    a, b = read_surface(str(tmp_path / "cut.h5")), read_surface(str(tmp_path / "whole.h5"))
    for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
        np.testing.assert_array_equal(a.values[key], b.values[key], err_msg=key)


def _bad_inputs(tmp: Path, ckpt: Path):
    corrupt = tmp / "corrupt.t7"
    corrupt.write_bytes(b"not a checkpoint at all")
    wrong_dirs = tmp / "wrong_dirs.h5"
    with h5py.File(wrong_dirs, "w") as f:
        g = f.create_group("xdirection")
        g.create_dataset("0", data=np.zeros((3, 3), np.float32))
    fake_mpi = tmp / "nompi"
    (fake_mpi / "mpi4py").mkdir(parents=True)
    (fake_mpi / "mpi4py" / "__init__.py").write_text("raise ImportError('mpi4py is not installed')\n")
    m = ["--model_file", str(ckpt)]
    return [
        (["--x=-1:1"], "expected MIN:MAX:NUM", {}),
        (["--x=a:b:c"], "must be numbers", {}),
        (["--x=-1:1:1"], "NUM must be at least 2", {}),
        (["--model_file", str(tmp / "missing.t7")], "does not exist", {}),
        (["--model_file", str(corrupt)], "cannot read model file", {}),
        (["--model", "digits_mlp", *m], "does not fit model digits_mlp", {}),
        (["--model", "resnet57", *m], "unknown model 'resnet57'", {}),
        ([*m, "--xnorm", "fliter"], "unknown norm 'fliter'", {}),
        ([*m, "--dir_type", "both"], "invalid choice: 'both'", {}),
        ([*m, "--loss_name", "hinge"], "invalid choice: 'hinge'", {}),
        ([*m, "--cuda"], "no CUDA GPU", {}),
        ([*m, "--mpi"], "--mpi needs mpi4py", {"PYTHONPATH": str(fake_mpi)}),
        ([*m, "--surf_file", str(tmp / "no" / "such" / "s.h5")], "does not exist", {}),
        ([*m, "--dir_file", str(wrong_dirs)], "does not fit the model: tensor 0 ('conv1.weight')", {}),
        ([*m, "--data_split", "2", "--split_idx", "2"], "--split_idx must be below --data_split", {}),
        ([*m, "--dataset", "cifar10", "--datapath", str(tmp / "nodata")], "cifar-10-batches-py", {}),
    ]


def test_bad_inputs_get_one_line(tmp_path, trained_ckpt):
    if torch.cuda.is_available():
        pytest.skip("the --cuda case needs a machine without a GPU")
    for args, message, extra_env in _bad_inputs(tmp_path, trained_ckpt):
        env = _env()
        if extra_env:
            env["PYTHONPATH"] = extra_env["PYTHONPATH"] + os.pathsep + env["PYTHONPATH"]
        proc = subprocess.run([sys.executable, str(ROOT / "plot_surface.py"), "--quiet", *args], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=120)
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert proc.returncode != 0, (args, proc.stdout)
        assert "Traceback" not in proc.stderr, (args, proc.stderr)
        assert message in proc.stderr, (args, proc.stderr)
        # argparse prints its usage line first; ours is one line.
        assert len([ln for ln in lines if not ln.startswith(("usage:", "  ", "                "))]) == 1, \
            (args, proc.stderr)
