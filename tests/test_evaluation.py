"""Loss and accuracy against independent computations: a per-sample float64 loop and the original
tool's batch-mean accumulation."""

from __future__ import annotations

import os
import contextlib
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from loss_landscape.evaluation import (DeviceSplit, evaluate, local_rank_from_env, pick_device,
                                       precision_context, recalibrate_bn)
from loss_landscape.errors import EvaluationError


def data(n=103, classes=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 6, 6, generator=g), torch.randint(0, classes, (n,), generator=g)


def net(classes=7):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, classes)).eval()


def reference(model, x, y, loss_name):
    """One sample at a time, in float64 (model converted), the textbook definitions."""
    m = nn.Sequential(*[mod for mod in model]).double().eval()
    total, correct = 0.0, 0
    with torch.no_grad():
        for xi, yi in zip(x, y):
            out = m(xi[None].double())[0]
            if loss_name == "crossentropy":
                total += float(-torch.log_softmax(out, 0)[yi])
            else:
                p = torch.softmax(out, 0)
                onehot = torch.zeros_like(p)
                onehot[yi] = 1
                total += float(((p - onehot) ** 2).mean())
            correct += int(out.argmax() == yi)
    return total / len(y), 100.0 * correct / len(y)


@pytest.mark.parametrize("loss_name", ["crossentropy", "mse"])
@pytest.mark.parametrize("batch_size", [1, 16, 128])
def test_matches_float64_per_sample_loop(loss_name, batch_size):
    model = net()
    x, y = data()
    loss, acc = evaluate(model, DeviceSplit(x, y), loss_name=loss_name, batch_size=batch_size)
    ref_loss, ref_acc = reference(model, x, y, loss_name)
    assert loss == pytest.approx(ref_loss, rel=2e-6)
    assert acc == ref_acc


def test_mse_is_the_original_definition():
    """The original: nn.MSELoss() (mean over batch x classes) on softmax outputs vs one-hot, x batch size."""
    model = net(classes=10)
    x, y = data(n=64, classes=10)
    total = 0.0
    with torch.no_grad():
        for s in range(0, 64, 20):
            xb, yb = x[s:s + 20], y[s:s + 20]
            one_hot = torch.zeros(len(yb), 10).scatter_(1, yb.view(-1, 1), 1.0)
            total += nn.MSELoss()(F.softmax(model(xb), dim=1), one_hot).item() * len(yb)
    loss, _ = evaluate(model, DeviceSplit(x, y), loss_name="mse", batch_size=64)
    assert loss == pytest.approx(total / 64, rel=1e-6)


def test_batch_size_changes_only_rounding():
    model = net()
    x, y = data(n=500)
    results = [evaluate(model, DeviceSplit(x, y), batch_size=b) for b in (7, 64, 500)]
    for loss, acc in results[1:]:
        assert loss == pytest.approx(results[0][0], rel=1e-6) and acc == results[0][1]


def test_bad_settings_are_named():
    x, y = data()
    with pytest.raises(EvaluationError, match="unknown loss 'hinge'"):
        evaluate(net(), DeviceSplit(x, y), loss_name="hinge")
    with pytest.raises(EvaluationError, match="unknown precision"):
        evaluate(net(), DeviceSplit(x, y), precision="fp8")


def test_bn_recalibration_equals_plain_batch_statistics():
    model = net()
    x, _ = data(n=96)
    recalibrate_bn(model, x, batches=3, batch_size=32)
    bn = model[1]
    with torch.no_grad():
        feats = [model[0](x[k * 32:(k + 1) * 32]) for k in range(3)]
    means = torch.stack([f.mean(dim=(0, 2, 3)) for f in feats]).mean(0)
    vars_ = torch.stack([f.var(dim=(0, 2, 3), unbiased=True) for f in feats]).mean(0)
    torch.testing.assert_close(bn.running_mean, means, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bn.running_var, vars_, rtol=1e-5, atol=1e-6)
    assert bn.momentum == 0.1 and not bn.training


def test_bf16_is_close_to_fp32():
    model = net()
    x, y = data(n=200)
    l32, _ = evaluate(model, DeviceSplit(x, y), precision="fp32")
    l16, _ = evaluate(model, DeviceSplit(x, y), precision="bf16")
    assert math.isclose(l32, l16, rel_tol=5e-2)


def test_device_choice(monkeypatch):
    assert pick_device(False).type == "cpu"
    monkeypatch.setenv("OMPI_COMM_WORLD_LOCAL_RANK", "3")
    assert local_rank_from_env() == 3
    monkeypatch.delenv("OMPI_COMM_WORLD_LOCAL_RANK")
    monkeypatch.setenv("SLURM_LOCALID", "2")
    assert local_rank_from_env() == 2
    if not torch.cuda.is_available():
        with pytest.raises(EvaluationError, match="no CUDA GPU"):
            pick_device(True)


def float32_flags() -> tuple:
    """The settings that decide whether float32 convolutions and matmuls may use TF32."""
    return (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32,
            torch.get_float32_matmul_precision())


STRICT = (False, False, "highest")
TF32 = (True, True, "high")


@contextlib.contextmanager
def tf32_globals():
    """TF32 allowed globally for the block (as torch leaves cuDNN by default, and as a user may set matmuls);
    afterwards checks that the code under test put these values back, then restores the test's own."""
    saved = float32_flags()
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        yield
        assert float32_flags() == TF32, "the previous flags were not restored"
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved[:2]
        torch.set_float32_matmul_precision(saved[2])


class FlagRecorder(nn.Module):
    """A small conv net (inputs (N, 1, 6, 6)) whose forward records `float32_flags()` each time it runs:
    the flags are readable without a GPU, so a CPU test sees what a GPU run would compute with."""

    def __init__(self, classes: int = 7):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 3, 3)
        self.bn = nn.BatchNorm2d(3)
        self.fc = nn.Linear(48, classes)
        self.seen: list[tuple] = []

    def forward(self, x):
        self.seen.append(float32_flags())
        return self.fc(torch.tanh(self.bn(self.conv(x))).flatten(1))

    def take(self) -> set:
        """The distinct flag settings seen since the last call (at least one forward is required)."""
        seen, self.seen = set(self.seen), []
        assert seen, "the model never ran"
        return seen


@pytest.mark.parametrize("precision, inside", [("fp32", STRICT), ("tf32", TF32), ("bf16", STRICT)])
def test_evaluate_sets_the_precision_flags_and_restores_them(precision, inside):
    model = FlagRecorder()
    x, y = data()
    with tf32_globals():
        evaluate(model, DeviceSplit(x, y), batch_size=40, precision=precision)
    assert model.take() == {inside}
    with tf32_globals():
        recalibrate_bn(model, x, batches=2, batch_size=40, precision=precision)
    assert model.take() == {inside}
    with tf32_globals(), pytest.raises(RuntimeError, match="boom"), precision_context("fp32", torch.device("cpu")):
        raise RuntimeError("boom")  # restored on the way out of an exception too


def test_precision_context_restores_per_operator_settings():
    """torch >= 2.9 has per-operator settings as well; a program that uses them gets them back unchanged."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is None or not hasattr(conv, "fp32_precision"):
        pytest.skip(f"torch {torch.__version__} has no per-operator float32 precision settings")
    rnn = torch.backends.cudnn.rnn
    saved = torch.backends.cudnn.allow_tf32
    try:
        conv.fp32_precision, rnn.fp32_precision = "tf32", "ieee"
        with precision_context("fp32", torch.device("cpu")):
            assert (conv.fp32_precision, rnn.fp32_precision) == ("ieee", "ieee")
            assert torch.backends.cuda.matmul.fp32_precision == "ieee"
        assert (conv.fp32_precision, rnn.fp32_precision) == ("tf32", "ieee")
    finally:  # through the legacy setter, which makes the legacy getters readable again
        torch.backends.cudnn.allow_tf32 = saved
    assert float32_flags()[0] == saved


def test_ranks_per_node_under_plain_srun(monkeypatch):
    from loss_landscape import evaluation
    for var in ("OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS_PER_NODE", "LOCAL_WORLD_SIZE",
                "SLURM_CPUS_PER_TASK"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SLURM_STEP_TASKS_PER_NODE", "4(x2),3")
    for node, want in (("0", 4), ("1", 4), ("2", 3)):
        monkeypatch.setenv("SLURM_NODEID", node)
        assert evaluation.local_size_from_env() == want
    monkeypatch.setenv("SLURM_STEP_TASKS_PER_NODE", "garbage")
    assert evaluation.local_size_from_env() == 1
    monkeypatch.setenv("SLURM_STEP_TASKS_PER_NODE", "3")
    monkeypatch.setenv("SLURM_NODEID", "0")
    cores = len(os.sched_getaffinity(0))
    assert evaluation.cpu_threads_per_rank() == max(1, cores // 3)
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")  # pinned by Slurm: the affinity set is this rank's own
    assert evaluation.cpu_threads_per_rank() == cores
