"""Surfaces of any model, loss and data: token, dict and float targets, the user's losses and metrics, metric groups
in the file, --eval_samples, streaming, and factory weights. Every value is checked against a plain float64
per-sample loop over the moved weights, written here."""

import copy
import math
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch import nn
import torch.nn.functional as F

from loss_landscape.data import EvalData, Split, sample_indices
from loss_landscape.directions.make import make_directions
from loss_landscape.directions.spec import DirectionSpec
from loss_landscape.errors import EvaluationError, SurfaceError
from loss_landscape.evaluation import Criterion, DeviceSplit, evaluate_values
from loss_landscape.streaming import DatasetSplit
from loss_landscape.surface.compute import EvalSettings, compute_surface
from loss_landscape.surface.grid import Axis, Grid
from loss_landscape.surface.reader import read_surface

ROOT = Path(__file__).resolve().parents[1]
V, T = 11, 6


class TinyLM(nn.Module):
    """Causal by a running mean of the embeddings: logits (B, T, V) from int64 tokens (B, T)."""

    def __init__(self):
        super().__init__()
        self.emb, self.mix, self.head = nn.Embedding(V, 8), nn.Linear(8, 8), nn.Linear(8, V)

    def forward(self, ids):
        h = self.emb(ids).cumsum(1) / torch.arange(1, ids.shape[1] + 1, device=ids.device).view(1, -1, 1)
        return self.head(torch.tanh(self.mix(h)))


class OwnLoss(nn.Module):
    """A model called with a dict that returns its own loss (the mean over its tokens), as transformers does."""

    def __init__(self):
        super().__init__()
        self.lm = TinyLM()

    def forward(self, input_ids, labels):
        logits = self.lm(input_ids)
        return {"loss": F.cross_entropy(logits.reshape(-1, V), labels.reshape(-1)), "logits": logits}


def _tokens(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, V, (n, T), generator=g)
    y = torch.randint(0, V, (n, T), generator=g)
    return x, y


def _grid():
    return Grid(Axis(-1.0, 1.0, 3), Axis(-0.5, 0.5, 3))


def _moved64(model, directions, a, b):
    """A float64 copy of `model` at w0 + a dx + b dy, the sums done in float64."""
    m = copy.deepcopy(model).double()
    with torch.no_grad():
        for p, p0, dx, dy in zip(m.parameters(), model.parameters(), directions.x, directions.y):
            p.copy_(p0.double() + a * dx.double() + b * dy.double())
    return m.eval()


def _check_against_loop(surface, model, directions, per_sample, name, rel=2e-6):
    """Every grid point of `name` equals per_sample(model64) (a float) to `rel`."""
    for j, b in enumerate(surface.y):
        for i, a in enumerate(surface.x):
            want = per_sample(_moved64(model, directions, float(a), float(b)))
            assert surface.values[name][j, i] == pytest.approx(want, rel=rel, abs=1e-9), (name, a, b)


def _surface(tmp_path, model, data, settings, name="s.h5", **kw):
    torch.manual_seed(0)
    directions = make_directions(model, DirectionSpec(two_d=True, xignore="", xnorm="filter"))
    surf = compute_surface(copy.deepcopy(model), data, directions, _grid(), str(tmp_path / name), model_name="t",
                           settings=settings, **kw)
    return surf, directions


def _token_loss64(m, x, y):
    total, count = 0.0, 0
    with torch.no_grad():
        for k in range(len(x)):  # one sample at a time
            logp = torch.log_softmax(m(x[k:k + 1]), dim=-1)[0]
            for t in range(T):
                if int(y[k, t]) != -100:
                    total -= float(logp[t, y[k, t]])
                    count += 1
    return total / count


def test_token_lm_loss_accuracy_and_perplexity_match_a_float64_loop(tmp_path):
    torch.manual_seed(1)
    model = TinyLM()
    x, y = _tokens(37)
    y[::5, 2] = -100  # ignored tokens are left out of the mean and of the accuracy
    data = EvalData("tok", Split(x, y), Split(x[:0], y[:0]), 0)
    settings = EvalSettings(loss_name="token_crossentropy", metrics=("perplexity", "top5"), batch_size=8)
    surf, d = _surface(tmp_path, model, data, settings)
    _check_against_loop(surf, model, d, lambda m: _token_loss64(m, x, y), "train_loss")
    _check_against_loop(surf, model, d, lambda m: math.exp(_token_loss64(m, x, y)), "train_perplexity")

    def acc(m, k=1):
        with torch.no_grad():
            top = m(x).topk(k, dim=-1).indices
        keep = y != -100
        hit = (top == y.unsqueeze(-1)).any(-1)
        return 100.0 * float(hit[keep].double().sum()) / int(keep.sum())
    _check_against_loop(surf, model, d, acc, "train_acc", rel=1e-12)
    _check_against_loop(surf, model, d, lambda m: acc(m, 5), "train_top5", rel=1e-12)
    with h5py.File(tmp_path / "s.h5") as f:
        assert f["train_perplexity_done"].attrs["metric"] == "perplexity"
        assert f.attrs["loss_name"] == "token_crossentropy"


def test_dict_inputs_and_the_models_own_loss(tmp_path):
    torch.manual_seed(2)
    model = OwnLoss()
    x, y = _tokens(30, seed=3)
    data = EvalData("dict", Split({"input_ids": x, "labels": y}, None), Split({"input_ids": x[:0], "labels": y[:0]},
                                                                                None), 0)
    settings = EvalSettings(loss_name="model_loss", metrics=("perplexity",), batch_size=6)  # equal batches
    surf, d = _surface(tmp_path, model, data, settings)
    assert "train_acc" not in surf.values  # the model's own loss has no accuracy
    with h5py.File(tmp_path / "s.h5") as f:
        assert "train_acc" not in f and list(map(str, eval(f["train_done"].attrs["datasets"]))) == ["train_loss"]
    # At the centre, the value is the model's own loss on the whole set in one batch.
    with torch.no_grad():
        own = model(input_ids=x, labels=y)["loss"].item()
    assert surf.values["train_loss"][1, 1] == pytest.approx(own, rel=1e-6)
    _check_against_loop(surf, model, d, lambda m: _token_loss64(m.lm, x, y), "train_loss")


USER_MODULE = '''
import torch


def log_cosh(outputs, targets):
    return torch.log(torch.cosh(outputs - targets)).mean(dim=1)


def abs_error(outputs, targets):
    return (outputs - targets).abs()


def scalar_loss(outputs, targets):
    return ((outputs - targets) ** 2).mean()
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "my_losses.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return "my_losses"


def _regression_data(n=41):
    g = torch.Generator().manual_seed(4)
    x = torch.randn(n, 3, generator=g)
    y = (torch.sin(3 * x[:, :1]) + x[:, 1:2] ** 2).to(torch.float64)  # float64 targets, float32 inputs
    return x, y


def test_regression_with_the_users_loss_and_metric(tmp_path, user_module):
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 1))
    x, y = _regression_data()
    data = EvalData("reg", Split(x, y), Split(x[:0], y[:0]), 0)
    settings = EvalSettings(loss_name=f"{user_module}:log_cosh", metrics=(f"mae={user_module}:abs_error",),
                            batch_size=5)
    surf, d = _surface(tmp_path, model, data, settings)

    def loop(m, f):
        with torch.no_grad():
            return sum(f(float(m(x[k:k + 1].double())[0, 0]) - float(y[k, 0])) for k in range(len(x))) / len(x)
    _check_against_loop(surf, model, d, lambda m: loop(m, lambda e: math.log(math.cosh(e))), "train_loss")
    _check_against_loop(surf, model, d, lambda m: loop(m, abs), "train_mae")
    assert set(surf.values) == {"train_loss", "train_mae"}


def test_a_loss_returning_a_scalar_is_refused_in_one_line(user_module):
    x, y = _regression_data(8)
    with pytest.raises(EvaluationError) as err:
        evaluate_values(nn.Linear(3, 1), DeviceSplit(x, y), Criterion.of(f"{user_module}:scalar_loss"))
    assert "expected floating per-sample losses" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(EvaluationError, match="expected logits \\(B, C\\) and class indices"):
        evaluate_values(nn.Linear(3, 1), DeviceSplit(x, y), Criterion.of("crossentropy"))
    with pytest.raises(EvaluationError, match="needs targets"):
        evaluate_values(nn.Linear(3, 2), DeviceSplit(x, None), Criterion.of("crossentropy"))
    with pytest.raises(EvaluationError, match="unknown metric 'f1'"):
        Criterion.of("crossentropy", ["f1"])


def _classes(n=50, seed=6):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=g), torch.randint(0, 7, (n,), generator=g)


def test_adding_a_metric_on_resume_computes_only_it(tmp_path):
    torch.manual_seed(7)
    model = nn.Sequential(nn.Linear(4, 12), nn.ReLU(), nn.Linear(12, 7))
    x, y = _classes()
    data = EvalData("c", Split(x, y), Split(x, y), 7)
    first, d = _surface(tmp_path, model, data, EvalSettings(batch_size=16))
    with h5py.File(tmp_path / "s.h5", "r+") as f:  # a loss the second run would overwrite if it recomputed it
        f["train_loss"][0, 0] = 123.0
    again, _ = _surface(tmp_path, model, data, EvalSettings(batch_size=16, metrics=("top5",)))
    assert again.values["train_loss"][0, 0] == 123.0  # kept: only the new group was pending
    np.testing.assert_array_equal(again.values["train_acc"], first.values["train_acc"])

    def top5(m):
        with torch.no_grad():
            return 100.0 * float((m(x.double()).topk(5, dim=1).indices == y[:, None]).any(1).double().mean())
    _check_against_loop(again, model, d, top5, "train_top5", rel=1e-12)
    # The same name for another metric is refused with the difference named.
    (tmp_path / "other_metric.py").write_text("def top5(o, t):\n    return (o.argmax(1) == t).double()\n")
    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(SurfaceError, match="train_top5 of metric 'top5', not 'other_metric:top5'"):
            _surface(tmp_path, model, data, EvalSettings(batch_size=16, metrics=("other_metric:top5",)))
    finally:
        sys.path.remove(str(tmp_path))


def test_streaming_equals_memory_bitwise_and_is_recorded(tmp_path):
    torch.manual_seed(8)
    model = TinyLM()
    x, y = _tokens(29, seed=9)
    data = EvalData("tok", Split(x, y), Split(x, y), 0)
    base = dict(loss_name="token_crossentropy", metrics=("accuracy",), batch_size=8, eval_on=("train", "test"))
    mem, _ = _surface(tmp_path, model, data, EvalSettings(**base, data_mode="memory"), "m.h5")
    stream, _ = _surface(tmp_path, model, data, EvalSettings(**base, data_mode="stream"), "s.h5")
    # A Dataset of (x, y) items, streamed because it exceeds a 1-byte budget.
    items = DatasetSplit.of(torch.utils.data.TensorDataset(x, y), "items")
    lazy = EvalData("tok", items, items, 0)
    auto, _ = _surface(tmp_path, model, lazy, EvalSettings(**base, memory_budget=1), "a.h5")
    for s in (stream, auto):
        assert set(s.values) == set(mem.values)
        for k in mem.values:
            np.testing.assert_array_equal(s.values[k], mem.values[k])
    assert mem.attrs["data.mode_train"] == "memory" and stream.attrs["data.mode_test"] == "stream"
    assert auto.attrs["data.mode_train"] == "stream" and auto.attrs["data.memory_budget"] == 1


def _run(*args, cwd):
    return subprocess.run([sys.executable, str(ROOT / "plot_surface.py"), "--quiet", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


FACTORY = '''
import torch
from torch import nn


def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 7))


def data():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(60, 4, generator=g), torch.randint(0, 7, (60,), generator=g)
    return (x, y), (x[:10], y[:10])
'''


@pytest.mark.slow
def test_cli_eval_samples_and_factory_weights(tmp_path):
    """--eval_samples evaluates the seeded subset and is part of the job; a factory model without --model_file is
    evaluated with its own weights, recorded by their checksum."""
    (tmp_path / "fac.py").write_text(FACTORY)
    common = ["--model", "fac:model", "--dataset", "fac:data", "--x=-1:1:3", "--surf_file", "s.h5"]
    proc = _run(*common, "--eval_samples", "25", "--metric", "top5", "--loss_name", "mse", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    s = read_surface(str(tmp_path / "s.h5"))
    assert s.attrs["eval_samples"] == 25 and s.attrs["model_file"] == "" and len(s.attrs["model_sha256"]) == 64
    sys.path.insert(0, str(tmp_path))
    try:
        import fac
        net, ((x, y), _) = fac.model().double(), fac.data()
    finally:
        sys.path.remove(str(tmp_path))
    idx = sample_indices(60, 25, 0)
    with torch.no_grad():
        p = torch.softmax(net(x[idx].double()), dim=1)
        want = float(((p - F.one_hot(y[idx], 7).double()) ** 2).mean(dim=1).mean())
    assert s.values["train_loss"][1] == pytest.approx(want, rel=1e-6)
    assert "train_top5" in s.values
    # Another subset is another job.
    proc = _run(*common, "--eval_samples", "30", "--metric", "top5", "--loss_name", "mse", cwd=tmp_path)
    assert proc.returncode == 1 and "eval_samples is 25 in the file but 30 now" in proc.stderr, proc.stderr
    proc = _run(*common, "--metric", "f1", cwd=tmp_path)
    assert proc.returncode == 2 and "unknown metric 'f1'" in proc.stderr
