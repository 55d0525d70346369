"""Loss and accuracy against independent computations: a per-sample float64 loop and the original
tool's batch-mean accumulation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from evaluation import DeviceSplit, EvaluationError, evaluate, local_rank_from_env, pick_device, recalibrate_bn


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
