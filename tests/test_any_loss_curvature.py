"""The Hessian of any loss on any model and data: a tiny causal transformer LM (token ids in, -100 targets ignored,
a model that computes its own loss from dict inputs, a user's weighted loss of tuple inputs) and a regression,
each against a dense float64 Hessian of the weighted mean loss computed independently (torch.autograd.functional
.hessian over torch.func.functional_call, the loss written out with torch.nn.functional); and plot_hessian_spectrum.py
run on the example character-level LM."""

from __future__ import annotations

import copy
import json

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import run_command
from loss_landscape.curvature import HessianOperator, hessian_data, top_eigenpairs
from loss_landscape.data import Split
from loss_landscape.errors import CurvatureError
from loss_landscape.evaluation import DeviceSplit
from loss_landscape.examples.charlm import CharTransformer

VOCAB, T, N = 6, 5, 13  # 13 sequences in batches of 5: batches of unequal token counts


def tiny_lm(seed: int = 0) -> CharTransformer:
    """326 parameters: embeddings, one attention block, LayerNorms and the head."""
    torch.manual_seed(seed)
    return CharTransformer(vocab_size=VOCAB, context=T, d_model=4, n_head=2, n_layer=1)


def tokens(seed: int = 0, ignore: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, VOCAB, (N, T), generator=g)
    y = torch.randint(0, VOCAB, (N, T), generator=g)
    if ignore:  # a different number of ignored targets per sequence; row 0 keeps none
        y[torch.rand(N, T, generator=g) < 0.3] = -100
        y[0] = -100
    return x, y


class OwnLoss(nn.Module):
    """A Hugging Face style wrapper: ``model(input_ids=..., labels=...)`` returns a dict with the batch's mean token
    loss and the logits."""

    def __init__(self, lm: nn.Module):
        super().__init__()
        self.lm = lm

    def forward(self, input_ids, labels):
        logits = self.lm(input_ids)
        return {"loss": F.cross_entropy(logits.transpose(1, 2), labels), "logits": logits}


class Scaled(nn.Module):
    """Two inputs, ``model(ids, scale)``: logits times a per-sequence float (cast to float64 with the model)."""

    def __init__(self, lm: nn.Module):
        super().__init__()
        self.lm = lm

    def forward(self, ids, scale):
        return self.lm(ids) * scale[:, None, None]


def position_weighted(outputs, targets):
    """A user's loss (``test_any_loss_curvature:position_weighted``): per-token cross-entropy weighted by position
    1, 2, ..., T."""
    values = F.cross_entropy(outputs.transpose(1, 2), targets, reduction="none")
    weights = torch.arange(1, targets.shape[1] + 1, dtype=values.dtype).expand_as(values)
    return values, weights


def dense_hessian(model: nn.Module, loss_of) -> np.ndarray:
    """Float64 Hessian of ``loss_of(functional model)`` with respect to every parameter, model in eval mode."""
    m = copy.deepcopy(model).double().eval()
    named = dict(m.named_parameters())
    names = list(named)

    def loss(flat):
        state, start = {}, 0
        for k in names:
            state[k] = flat[start:start + named[k].numel()].view_as(named[k])
            start += named[k].numel()
        return loss_of(lambda *args, **kw: torch.func.functional_call(m, state, args, kw))

    flat0 = torch.cat([named[k].detach().reshape(-1) for k in names])
    return torch.autograd.functional.hessian(loss, flat0, vectorize=True).numpy()


def token_mean(logits, y):
    """The mean cross-entropy over every target that is not -100, in one call over the whole set."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=-100)


@pytest.fixture(scope="module")
def token_case():
    net, (x, y) = tiny_lm(), tokens()
    return net, DeviceSplit(x, y), dense_hessian(net, lambda f: token_mean(f(x), y))


@pytest.fixture(scope="module")
def own_loss_case():
    net, (x, y) = OwnLoss(tiny_lm(1)), tokens(1, ignore=False)
    data = DeviceSplit({"input_ids": x, "labels": y}, None)  # no targets: the model computes its loss
    return net, data, dense_hessian(net, lambda f: token_mean(f(input_ids=x, labels=y)["logits"], y))


@pytest.fixture(scope="module")
def user_loss_case():
    net, (x, y) = Scaled(tiny_lm(2)), tokens(2, ignore=False)
    scale = torch.linspace(0.5, 1.5, N)

    def loss(f):
        ce = F.cross_entropy(f(x, scale.double()).transpose(1, 2), y, reduction="none")
        w = torch.arange(1, T + 1, dtype=torch.float64)
        return (ce * w).sum() / (w.sum() * N)

    return net, DeviceSplit((x, scale), y), dense_hessian(net, loss)


CASES = {"token_case": "token_crossentropy", "own_loss_case": "model_loss",
         "user_loss_case": "test_any_loss_curvature:position_weighted"}


@pytest.mark.parametrize("case", list(CASES))
def test_products_match_the_dense_hessian_of_the_weighted_mean(case, request):
    net, data, H = request.getfixturevalue(case)
    v = np.random.default_rng(0).standard_normal(H.shape[0])
    op64 = HessianOperator(net, data, loss_name=CASES[case], batch_size=5, dtype=torch.float64)
    assert op64.dim == H.shape[0] == sum(p.numel() for p in net.parameters())
    hv = op64.matvec(torch.from_numpy(v))
    np.testing.assert_allclose(hv.numpy(), H @ v, rtol=0, atol=1e-10 * np.abs(H @ v).max())
    op32 = HessianOperator(net, data, loss_name=CASES[case], batch_size=4)
    hv32 = op32.matvec(torch.from_numpy(v).float()).double().numpy()
    assert np.linalg.norm(hv32 - H @ v) <= 1e-4 * np.linalg.norm(H @ v)
    assert op32.total_weight == op64.total_weight
    exact = np.linalg.eigvalsh(H)
    assert top_eigenpairs(op64, k=1, tol=1e-8).values[0] == pytest.approx(exact[-1], rel=1e-6)


def test_total_weight_counts_the_tokens_not_ignored(token_case, user_loss_case):
    net, data, _ = token_case
    op = HessianOperator(net, data, loss_name="token_crossentropy")
    assert op.total_weight == int((data.targets != -100).sum()) < N * T and op.n == N
    # The same count from a forward pass when the targets are not at hand (a user's loss, streamed data).
    net, data, _ = user_loss_case
    op = HessianOperator(net, data, loss_name="test_any_loss_curvature:position_weighted", batch_size=3)
    assert op.total_weight == N * T * (T + 1) / 2


def test_value_and_gradient_of_the_token_loss(token_case):
    net, data, _ = token_case
    op = HessianOperator(net, data, loss_name="token_crossentropy", batch_size=5, dtype=torch.float64)
    value, grad = op.value_and_gradient()
    m = copy.deepcopy(net).double().eval()
    loss = token_mean(m(data.inputs), data.targets)
    ref = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(m.parameters()))])
    assert value == pytest.approx(loss.item(), rel=1e-12)
    np.testing.assert_allclose(grad.numpy(), ref.numpy(), atol=1e-12)


def test_batch_size_changes_nothing_for_tokens(token_case):
    net, data, _ = token_case
    v = torch.from_numpy(np.random.default_rng(1).standard_normal(sum(p.numel() for p in net.parameters())))
    out = [HessianOperator(net, data, loss_name="token_crossentropy", batch_size=b, dtype=torch.float64).matvec(v)
           for b in (1, 4, N)]
    for hv in out[1:]:
        np.testing.assert_allclose(hv.numpy(), out[0].numpy(), rtol=1e-11, atol=1e-13)


def test_regression_of_tuple_inputs():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(3)
            self.a, self.b = nn.Linear(4, 6), nn.Linear(2, 6)
            self.out = nn.Linear(6, 3)

        def forward(self, u, w):
            return self.out(torch.tanh(self.a(u) + self.b(w)))

    g = torch.Generator().manual_seed(4)
    u, w, y = torch.randn(17, 4, generator=g), torch.randn(17, 2, generator=g), torch.randn(17, 3, generator=g)
    net = Two()
    H = dense_hessian(net, lambda f: ((f(u.double(), w.double()) - y.double()) ** 2).mean())
    op = HessianOperator(net, DeviceSplit((u, w), y), loss_name="regression_mse", batch_size=5, dtype=torch.float64)
    v = np.random.default_rng(2).standard_normal(op.dim)
    np.testing.assert_allclose(op.matvec(torch.from_numpy(v)).numpy(), H @ v, atol=1e-10 * np.abs(H @ v).max())


def test_hessian_data_holds_any_split_on_the_device():
    x, y = tokens()
    held = hessian_data(Split(x, y), "cpu")
    assert isinstance(held, DeviceSplit) and torch.equal(held.inputs, x) and torch.equal(held.targets, y)
    assert hessian_data(held) is held
    ds = torch.utils.data.TensorDataset(x, y)
    from loss_landscape.streaming import DatasetSplit
    from_dataset = hessian_data(DatasetSplit.of(ds, "test"), "cpu")
    assert isinstance(from_dataset, DeviceSplit) and torch.equal(from_dataset.targets, y)


def test_one_line_errors_for_what_cannot_be_differentiated(token_case):
    net, data, _ = token_case
    everything_ignored = DeviceSplit(data.inputs, torch.full_like(data.targets, -100))
    with pytest.raises(CurvatureError, match="weighs no sample or token"):
        HessianOperator(net, everything_ignored, loss_name="token_crossentropy")
    with pytest.raises(CurvatureError, match="unknown loss 'hinge'"):
        HessianOperator(net, data, loss_name="hinge")
    with pytest.raises(CurvatureError, match="hessian_data"):
        HessianOperator(net, Split(data.inputs, data.targets), loss_name="token_crossentropy")
    with pytest.raises(CurvatureError, match="cannot import|no module|not found|No module"):
        HessianOperator(net, data, loss_name="no_such_module_xyz:fn")


@pytest.mark.slow
def test_spectrum_command_on_the_char_lm(tmp_path):
    """plot_hessian_spectrum.py on the example char LM, as the README runs it, on a seeded subset of 6 sequences:
    the loss against an independent float64 computation, the top eigenvector against an independent float64
    Hessian-vector product (torch.func), the files."""
    from loss_landscape.data import take_samples
    from loss_landscape.examples import charlm

    net = charlm.model()
    torch.save(net.state_dict(), tmp_path / "charlm.pt")
    out = tmp_path / "res" / "lm"
    proc = run_command("plot_hessian_spectrum.py", "--model", "loss_landscape.examples.charlm:model",
                       "--model_file", "charlm.pt", "--dataset", "loss_landscape.examples.charlm:dataset",
                       "--loss_name", "token_crossentropy", "--eval_samples", "6", "--top_k", "1", "--tol", "1e-3",
                       "--trace_samples", "2", "--slq_runs", "1", "--slq_steps", "4", "--out", str(out), cwd=tmp_path)
    assert "lambda_max" in proc.stdout
    rec = json.loads((tmp_path / "res" / "lm.json").read_text())
    assert rec["samples"] == 6 and rec["total_weight"] == 6 * charlm.CONTEXT and rec["eval_samples"] == 6
    assert rec["loss_name"] == "token_crossentropy" and rec["dim"] == sum(p.numel() for p in net.parameters())
    assert (tmp_path / "res" / "lm.h5").exists() and (tmp_path / "res" / "lm_density.png").exists()

    (train_x, train_y), _ = charlm.dataset()
    part = take_samples(Split(train_x, train_y), 6, 0)
    m = copy.deepcopy(net).double().eval()
    params = {k: p.detach() for k, p in m.named_parameters()}

    def loss(p):
        return token_mean(torch.func.functional_call(m, p, (part.inputs,)), part.targets)

    assert rec["loss"] == pytest.approx(float(loss(params)), rel=1e-5)
    with h5py.File(tmp_path / "res" / "lm.h5") as f:
        u = torch.from_numpy(f["top_eigenvectors"][0].astype(np.float64))
    start, tangent = 0, {}
    for k, p in params.items():
        tangent[k] = u[start:start + p.numel()].view_as(p)
        start += p.numel()
    _, hu = torch.func.jvp(torch.func.grad(loss), (params,), (tangent,))
    hu = torch.cat([hu[k].reshape(-1) for k in params])
    lam = rec["lambda_max"]
    assert float(u @ hu) == pytest.approx(lam, rel=1e-3)
    assert float((hu - lam * u).norm()) <= 2e-2 * abs(lam)
