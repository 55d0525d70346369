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
from loss_landscape.data import load_dataset
from loss_landscape.evaluation import DeviceSplit, evaluate
from loss_landscape.models.loading import load_model
from loss_landscape.surface.reader import read_surface


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


GATED_NET = """
\"\"\"conftest's tiny net (same weights, same values). With GATE_POINTS=K and GATE_DIR=folder in the
environment: the first forward pass at the (K+1)-th set of weights (a new grid point: surfaces and maps move
the weights in place) creates folder/blocked and waits until folder/release exists; and every forward pass
sleeps 1 ms, so that with --flush_every 0.001 every chunk is flushed before the next one starts.\"\"\"
import hashlib
import os
import time

from torch import nn

_weights_seen = []


class Gated(nn.Sequential):
    def forward(self, x):
        if "GATE_POINTS" in os.environ:
            time.sleep(0.001)
            key = hashlib.sha256(self[1].weight.detach().cpu().numpy().tobytes()).hexdigest()
            if not _weights_seen or _weights_seen[-1] != key:
                _weights_seen.append(key)
                if len(_weights_seen) == int(os.environ["GATE_POINTS"]) + 1:
                    gate = os.environ["GATE_DIR"]
                    open(os.path.join(gate, "blocked"), "w").close()
                    while not os.path.exists(os.path.join(gate, "release")):
                        time.sleep(0.01)
        return super().forward(x)


def net():
    return Gated(nn.Flatten(), nn.Linear(64, 6), nn.Tanh(), nn.Linear(6, 10))
"""


def gated_model(tiny, cwd: Path) -> list[str]:
    """Writes ``gatenet.py`` into `cwd` and returns the flags that select it with the tiny net's weights."""
    root, _ = tiny
    (cwd / "gatenet.py").write_text(GATED_NET)
    return ["--model", "gatenet:net", "--model_file", str(root / "tiny.t7"), "--dataset", "digits"]


def interrupt_at_point(script: str, args: list[str], cwd: Path, *, points: int, sig: int) -> tuple[int, str]:
    """Runs `script` with the gated model (`gated_model`) held at the start of grid point ``points + 1``, and
    sends `sig` there: the run cannot finish first. Then releases the gate. Returns (exit status, stderr).
    `args` should hold ``--flush_every 0.001`` (only this run: a flush per chunk costs fsyncs)."""
    gate = cwd / f"gate-{sig}"
    gate.mkdir()
    env = {**_env(), "GATE_POINTS": str(points), "GATE_DIR": str(gate)}
    proc = subprocess.Popen([sys.executable, str(ROOT / script), *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 180
        while not (gate / "blocked").exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        assert (gate / "blocked").exists(), f"the run never reached point {points + 1}: {proc.poll()=}"
        proc.send_signal(sig)
    finally:
        (gate / "release").touch()
        _, err = proc.communicate(timeout=60)
    return proc.returncode, err


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_interrupted_run_resumes_to_the_same_values(tmp_path, tiny, sig):
    grid = ["--x=-1:1:40", "--y=-1:1:40", "--eval_on", "both"]
    # --shortcut off: torch.fx cannot trace the gate's hash of the weights, so the gated run takes the plain path
    # while an ungated one would keep the first layer's terms (equal to float rounding, not to the bit).
    common = [*gated_model(tiny, tmp_path), "--dir_file", str(tmp_path / "d.h5"), *grid, "--quiet",
              "--chunk_size", "2", "--shortcut", "off"]
    code, err = interrupt_at_point("plot_surface.py", [*common, "--surf_file", str(tmp_path / "cut.h5"),
                                                       "--flush_every", "0.001"], tmp_path, points=20, sig=sig)
    partial = _done(tmp_path / "cut.h5")
    assert code == (-9 if sig == signal.SIGKILL else 128 + signal.SIGTERM), err
    if sig == signal.SIGTERM:
        assert "interrupted by SIGTERM" in err and "rerun the same command to resume" in err
        assert "Traceback" not in err
    # Every chunk before the held point was flushed; the held one (and, with SIGTERM, nothing more) was not.
    assert 10 <= partial <= 20, partial
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
    usage, error = 2, 1  # exit status of an argument error, of any other bad input
    return [
        (["--x=-1:1"], "expected MIN:MAX:NUM", usage, {}),
        (["--x=a:b:c"], "must be numbers", usage, {}),
        (["--x=-1:1:1"], "NUM must be at least 2", usage, {}),
        (["--model_file", str(tmp / "missing.t7")], "does not exist", error, {}),
        (["--model_file", str(corrupt)], "cannot read model file", error, {}),
        (["--model", "digits_mlp", *m], "does not fit model digits_mlp", error, {}),
        (["--model", "resnet57", *m], "unknown model 'resnet57'", error, {}),
        ([*m, "--xnorm", "fliter"], "unknown norm 'fliter'", usage, {}),
        ([*m, "--dir_type", "both"], "invalid choice: 'both'", usage, {}),
        ([*m, "--loss_name", "hinge"], "unknown loss 'hinge': expected one of crossentropy, mse", usage, {}),
        ([*m, "--cuda"], "no CUDA GPU", error, {}),
        ([*m, "--mpi"], "--mpi needs mpi4py", error, {"PYTHONPATH": str(fake_mpi)}),
        ([*m, "--surf_file", str(tmp / "no" / "such" / "s.h5")], "does not exist", error, {}),
        ([*m, "--dir_file", str(wrong_dirs)], "does not fit the model: tensor 0 ('conv1.weight')", error, {}),
        ([*m, "--data_split", "2", "--split_idx", "2"], "--split_idx must be below --data_split", usage, {}),
        ([*m, "--dataset", "cifar10", "--datapath", str(tmp / "nodata")], "cifar-10-batches-py", error, {}),
    ]


def test_bad_inputs_get_one_line(tmp_path, trained_ckpt):
    """One line for a bad input; an argument error has the short usage above it and the pointer to --help
    below (argtypes.ArgumentParser). With a GPU here, --cuda is no error: only that case is left out."""
    for args, message, code, extra_env in _bad_inputs(tmp_path, trained_ckpt):
        if "--cuda" in args and torch.cuda.is_available():
            continue
        env = _env()
        if extra_env:
            env["PYTHONPATH"] = extra_env["PYTHONPATH"] + os.pathsep + env["PYTHONPATH"]
        proc = subprocess.run([sys.executable, str(ROOT / "plot_surface.py"), "--quiet", *args], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=120)
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert proc.returncode == code, (args, proc.returncode, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr, (args, proc.stderr)
        if code == 2:
            assert len(lines) == 3 and lines[0] == "usage: plot_surface.py [options]", (args, proc.stderr)
            assert lines[1].startswith("plot_surface.py: error: ") and message in lines[1], (args, proc.stderr)
            assert lines[2] == "  see plot_surface.py --help for every option", (args, proc.stderr)
        else:
            assert len(lines) == 1 and message in lines[0], (args, proc.stderr)
