"""The examples of any model, loss and data (`loss_landscape.examples`): their factories, their training, and the
engine's values for them checked against float64 loops written out here, at the trained weights and moved ones;
then the surface command run on each as a user would."""

from __future__ import annotations

import copy
import doctest
import math

import numpy as np
import pytest
import torch

from conftest import run_command
from loss_landscape import data as ll_data
from loss_landscape.errors import DataError, EvaluationError, ModelError
from loss_landscape.evaluation import Criterion, DeviceSplit, evaluate_values
from loss_landscape.examples import charlm, gpt2_tiny, regression
from loss_landscape.models.loading import build_model, load_model
from loss_landscape.params import ParamVector

transformers = pytest.importorskip("transformers")  # the test extra installs it

RTOL = 1e-6
REG_LOSS = "loss_landscape.examples.regression:log_cosh"
REG_MAE = "mae=loss_landscape.examples.regression:abs_error"


def states_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def moved(net: torch.nn.Module, seed: int = 1, scale: float = 0.1) -> torch.nn.Module:
    """A float64 copy of `net` with scale * N(0, 1) added to every parameter (a tied matrix once)."""
    out = copy.deepcopy(net).double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in out.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=torch.float64))
    return out.eval()


def log_softmax64(logits: torch.Tensor) -> torch.Tensor:
    """Row-wise log-softmax by hand, float64."""
    z = logits.double()
    top = z.max(dim=-1, keepdim=True).values
    return z - top - (z - top).exp().sum(dim=-1, keepdim=True).log()


# ----------------------------------------------------------------------------------------------------------
# Hand-written float64 references: one sample at a time
# ----------------------------------------------------------------------------------------------------------

def charlm_reference(net64, x, y) -> dict[str, float]:
    nll, correct, tokens = 0.0, 0, 0
    with torch.no_grad():
        for i in range(len(x)):
            logits = net64(x[i:i + 1])[0]  # (T, V)
            lp = log_softmax64(logits)
            for t in range(y.shape[1]):
                nll -= float(lp[t, y[i, t]])
                correct += int(int(logits[t].argmax()) == int(y[i, t]))
                tokens += 1
    return {"loss": nll / tokens, "acc": 100.0 * correct / tokens, "perplexity": math.exp(nll / tokens)}


def gpt2_reference(net64, batch) -> dict[str, float]:
    """The mean over samples of each sample's mean next-token loss (all samples have the same length)."""
    ids = batch["input_ids"]
    per_sample = []
    with torch.no_grad():
        for i in range(len(ids)):
            lp = log_softmax64(net64(input_ids=ids[i:i + 1]).logits[0])  # (T + 1, V)
            per_sample.append(-sum(float(lp[t, ids[i, t + 1]]) for t in range(ids.shape[1] - 1)) / (ids.shape[1] - 1))
    loss = sum(per_sample) / len(per_sample)
    return {"loss": loss, "perplexity": math.exp(loss)}


def regression_reference(net64, x, y) -> dict[str, float]:
    lc, ae = 0.0, 0.0
    with torch.no_grad():
        for i in range(len(x)):
            d = float(net64(x[i:i + 1].double())[0, 0]) - float(y[i, 0])
            lc += math.log(math.cosh(d))
            ae += abs(d)
    return {"loss": lc / len(x), "mae": ae / len(x)}


def assert_close(got: dict, want: dict, rtol: float = RTOL) -> None:
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=rtol), (k, got[k], v)


# ----------------------------------------------------------------------------------------------------------
# Trained checkpoints, made once
# ----------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("examples")
    out = {}
    for name, module, steps in (("charlm", charlm, 30), ("gpt2", gpt2_tiny, 30), ("regression", regression, 200)):
        path = str(folder / f"{name}.pt")
        out[name] = (path, module.train(path, steps=steps, seed=0), module.train(None, steps=0, seed=0))
    return out


# ----------------------------------------------------------------------------------------------------------
# The factories
# ----------------------------------------------------------------------------------------------------------

def test_charlm_text_vocabulary_and_sequences():
    text = charlm.text()
    assert len(text) == charlm.TEXT_CHARS and len(charlm.text_sha256()) == 64
    vocab = charlm.vocabulary()
    assert list(vocab) == sorted(set(text)) and charlm.decode(charlm.encode(text[:500])) == text[:500]
    (tx, ty), (vx, vy) = charlm.dataset()
    assert tx.dtype == ty.dtype == vx.dtype == torch.int64
    assert tx.shape == ty.shape == (charlm.TRAIN_SEQUENCES, charlm.CONTEXT)
    assert vx.shape == vy.shape == (charlm.TEST_SEQUENCES, charlm.CONTEXT)
    assert torch.equal(tx[:, 1:], ty[:, :-1]) and int(tx.max()) < len(vocab) and int(tx.min()) >= 0
    train, test = charlm.split_indices()
    assert sorted(torch.cat([train, test]).tolist()) == list(range(charlm.N_SEQUENCES))
    i = int(train[0])  # window i is text[i * T : i * T + T + 1]
    assert charlm.decode(tx[0]) + charlm.decode(ty[0, -1:]) == text[i * charlm.CONTEXT:(i + 1) * charlm.CONTEXT + 1]
    (tx2, ty2), _ = charlm.dataset()
    assert torch.equal(tx, tx2) and torch.equal(ty, ty2)


def test_gpt2_dataset_is_charlm_windows_as_a_dict():
    (train, t1), (test, t2) = gpt2_tiny.dataset()
    assert t1 is None and t2 is None
    assert sorted(train) == ["attention_mask", "input_ids", "labels"]
    (cx, cy), _ = charlm.dataset()
    for v in train.values():
        assert v.dtype == torch.int64 and v.shape == (charlm.TRAIN_SEQUENCES, charlm.CONTEXT + 1)
    assert torch.equal(train["input_ids"][:, :-1], cx) and torch.equal(train["labels"][:, 1:], cy)
    assert bool((train["attention_mask"] == 1).all()) and len(test["input_ids"]) == charlm.TEST_SEQUENCES


def test_regression_dataset():
    (x, y), (vx, vy) = regression.dataset()
    assert x.dtype == y.dtype == torch.float32 and x.shape == (regression.N_TRAIN, 2) and y.shape == (regression.N_TRAIN, 1)
    assert vx.shape == (regression.N_TEST, 2) and float(x.abs().max()) <= 1.0
    noise = (y - regression.target_function(x)) / regression.NOISE
    assert abs(float(noise.mean())) < 0.1 and float(noise.std()) == pytest.approx(1.0, abs=0.1)
    assert torch.equal(regression.dataset()[1][1], vy)


@pytest.mark.parametrize("module", [charlm, gpt2_tiny, regression], ids=lambda m: m.__name__.rpartition(".")[2])
def test_model_factories_are_deterministic_and_leave_the_callers_rng(module):
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a, b = module.model(), module.model()
    assert torch.equal(torch.get_rng_state(), before)
    assert states_equal(a, b) and not states_equal(a, module.model(seed=1))
    spec = f"{module.__name__}:model"
    assert states_equal(build_model(spec), a)


def test_model_outputs():
    (x, _), _ = charlm.dataset()
    assert charlm.model()(x[:3]).shape == (3, charlm.CONTEXT, len(charlm.vocabulary()))
    (train, _), _ = gpt2_tiny.dataset()
    out = gpt2_tiny.model()(**{k: v[:3] for k, v in train.items()})
    assert out.logits.shape == (3, charlm.CONTEXT + 1, len(charlm.vocabulary())) and out.loss.dim() == 0
    assert regression.model()(torch.zeros(5, 2)).shape == (5, 1)


def test_gpt2_tied_embeddings_move_once():
    net = gpt2_tiny.model()
    assert net.lm_head.weight is net.transformer.wte.weight
    v = ParamVector.from_model(net, "weights")
    assert "lm_head.weight" not in v.names and len(v) == len(net.state_dict()) - 1
    with torch.no_grad():
        v.tensors[v.names.index("transformer.wte.weight")].add_(1.0)
    assert torch.equal(net.lm_head.weight, net.transformer.wte.weight)


def test_torch_func_runs_through_the_language_models():
    from torch.func import functional_call, grad, jvp
    (x, y), _ = charlm.dataset()
    (train, _), _ = gpt2_tiny.dataset()
    batch = {k: v[:3] for k, v in train.items()}
    for net, f in ((charlm.model(), lambda n, p: torch.nn.functional.cross_entropy(
                        functional_call(n, p, (x[:3],)).transpose(1, 2), y[:3])),
                   (gpt2_tiny.model(), lambda n, p: functional_call(n, p, (), batch).loss)):
        params = {k: p.detach() for k, p in net.named_parameters()}
        tangent = {k: torch.ones_like(p) for k, p in params.items()}
        _, hvp = jvp(grad(lambda p: f(net, p)), (params,), (tangent,))  # a Hessian-vector product
        assert hvp.keys() == params.keys() and all(torch.isfinite(h).all() for h in hvp.values())


def test_docstring_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from loss_landscape import examples
    for module in (examples, charlm, gpt2_tiny, regression):
        result = doctest.testmod(module, verbose=False, report=True)
        assert result.attempted > 0 and result.failed == 0, (module.__name__, result)


# ----------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------

def test_training_lowers_the_loss_and_saves_a_bare_state_dict(trained):
    for name, spec in (("charlm", "loss_landscape.examples.charlm:model"),
                       ("gpt2", "loss_landscape.examples.gpt2_tiny:model"),
                       ("regression", "loss_landscape.examples.regression:model")):
        path, after, before = trained[name]
        assert after["train_loss"] < before["train_loss"] - 0.1, (name, after, before)
        assert after["test_loss"] < before["test_loss"], (name, after, before)
        state = torch.load(path, weights_only=True)
        assert all(isinstance(v, torch.Tensor) for v in state.values())
        load_model(spec, path)  # strict
    assert trained["charlm"][2]["train_loss"] == pytest.approx(math.log(len(charlm.vocabulary())), rel=0.05)


def test_training_is_deterministic():
    a, b = charlm.model(), charlm.model()
    (x, y), _ = charlm.dataset()
    charlm.fit(a, x, y, steps=3, seed=5)
    charlm.fit(b, x, y, steps=3, seed=5)
    assert states_equal(a, b) and not states_equal(a, charlm.model())


def test_main_prints_the_losses(tmp_path, capsys):
    regression.main(["--out", str(tmp_path / "r.pt"), "--steps", "5"])
    assert "test MAE" in capsys.readouterr().out and (tmp_path / "r.pt").is_file()
    charlm.main(["--out", str(tmp_path / "c.pt"), "--steps", "2"])
    assert "test loss" in capsys.readouterr().out
    gpt2_tiny.main(["--out", str(tmp_path / "g.pt")])
    assert states_equal(load_model("loss_landscape.examples.gpt2_tiny:model", str(tmp_path / "g.pt")),
                        gpt2_tiny.model())


# ----------------------------------------------------------------------------------------------------------
# The engine's values against the float64 loops
# ----------------------------------------------------------------------------------------------------------

def _charlm_case(path, n=40):
    net = load_model("loss_landscape.examples.charlm:model", path)
    (x, y), _ = charlm.dataset()
    return net, x[:n], y[:n]


@pytest.mark.parametrize("where", ["trained", "moved"])
def test_charlm_values_match_the_float64_loop(trained, where):
    net, x, y = _charlm_case(trained["charlm"][0])
    net64 = copy.deepcopy(net).double() if where == "trained" else moved(net)
    criterion = Criterion.of("token_crossentropy", ["perplexity"])
    got = evaluate_values(net64, DeviceSplit(x, y), criterion, batch_size=7)
    assert sorted(got) == ["acc", "loss", "perplexity"]
    want = charlm_reference(net64, x, y)
    assert_close(got, want)
    assert got["perplexity"] == pytest.approx(math.exp(got["loss"]), rel=1e-12)
    if where == "trained":  # the float32 model, the way the surface evaluates it: batch size changes only rounding
        one = evaluate_values(net, DeviceSplit(x, y), criterion, batch_size=1)
        full = evaluate_values(net, DeviceSplit(x, y), criterion, batch_size=len(x))
        assert_close(one, full, rtol=1e-5)
        assert_close(full, want, rtol=1e-5)


@pytest.mark.parametrize("where", ["trained", "moved"])
def test_gpt2_model_loss_matches_its_own_loss_and_the_float64_loop(trained, where):
    net = load_model("loss_landscape.examples.gpt2_tiny:model", trained["gpt2"][0])
    (train, _), _ = gpt2_tiny.dataset()
    batch = {k: v[:30] for k, v in train.items()}
    net64 = copy.deepcopy(net).double() if where == "trained" else moved(net)
    criterion = Criterion.of("model_loss", ["perplexity"])
    got = evaluate_values(net64, DeviceSplit(batch, None), criterion, batch_size=7)
    assert sorted(got) == ["loss", "perplexity"]
    assert_close(got, gpt2_reference(net64, batch))
    with torch.no_grad():  # transformers computes its loss from float32 logits (logits.float()), even here
        assert got["loss"] == pytest.approx(float(net64(**batch).loss), rel=RTOL)
    if where == "trained":  # at the centre, in float32: our value is the model's own full-batch loss
        ours = evaluate_values(net, DeviceSplit(batch, None), criterion, batch_size=7)
        with torch.no_grad():
            assert ours["loss"] == pytest.approx(float(net(**batch).loss), rel=RTOL)
        one = evaluate_values(net, DeviceSplit(batch, None), criterion, batch_size=1)
        assert_close(one, ours, rtol=1e-5)


@pytest.mark.parametrize("where", ["trained", "moved"])
def test_regression_user_loss_and_metric_match_the_float64_loop(trained, where):
    net = load_model("loss_landscape.examples.regression:model", trained["regression"][0])
    (x, y), _ = regression.dataset()
    x, y = x[:200], y[:200]
    net64 = copy.deepcopy(net).double() if where == "trained" else moved(net, scale=0.3)
    criterion = Criterion.of(REG_LOSS, [REG_MAE])
    got = evaluate_values(net64, DeviceSplit(x.double(), y.double()), criterion, batch_size=7)
    assert sorted(got) == ["loss", "mae"]  # a user loss has no accuracy
    assert_close(got, regression_reference(net64, x, y))
    if where == "trained":
        one = evaluate_values(net, DeviceSplit(x, y), criterion, batch_size=1)
        full = evaluate_values(net, DeviceSplit(x, y), criterion, batch_size=len(x))
        assert_close(one, full, rtol=1e-5)


def test_log_cosh_is_stable_and_checks_shapes():
    big = regression.log_cosh(torch.tensor([[1000.0], [-1000.0]]), torch.zeros(2, 1))
    assert torch.allclose(big, torch.full((2,), 1000.0 - math.log(2.0)))
    with pytest.raises(ValueError, match="expected the same number of values per sample"):
        regression.log_cosh(torch.zeros(4, 1), torch.zeros(3, 1))


# ----------------------------------------------------------------------------------------------------------
# Factories and user functions that return the wrong kinds: one line naming what was expected
# ----------------------------------------------------------------------------------------------------------

BAD = '''
import torch

def scalar_loss(outputs, targets):
    return ((outputs - targets) ** 2).mean()

def badint(outputs, targets):
    return (outputs > 0).long().sum(dim=1)

def no_module():
    return "not a model"

def short_targets():
    return (torch.zeros(10, 2), torch.zeros(9, 1)), (torch.zeros(4, 2), torch.zeros(4, 1))
'''


def one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text and "expected" in text, text
    return text


def test_wrong_kinds_give_one_line_errors(tmp_path, monkeypatch):
    (tmp_path / "badparts.py").write_text(BAD)
    monkeypatch.syspath_prepend(str(tmp_path))
    net = regression.model()
    (x, y), _ = regression.dataset()
    data = DeviceSplit(x[:20], y[:20])
    with pytest.raises(EvaluationError) as err:
        evaluate_values(net, data, Criterion.of("badparts:scalar_loss"), batch_size=7)
    assert "per-sample" in one_line(err) and "()" in str(err.value)
    with pytest.raises(EvaluationError) as err:
        evaluate_values(net, data, Criterion.of(REG_LOSS, ["badparts:badint"]), batch_size=7)
    assert "floating" in one_line(err)
    with pytest.raises(ModelError) as err:
        build_model("badparts:no_module")
    assert "nn.Module" in one_line(err)
    with pytest.raises(DataError) as err:
        ll_data.load_dataset("badparts:short_targets")
    one_line(err)
    with pytest.raises(EvaluationError) as err:  # token loss on the regression data
        evaluate_values(net, data, Criterion.of("token_crossentropy"), batch_size=7)
    assert "(B, T, V)" in one_line(err)


# ----------------------------------------------------------------------------------------------------------
# The surface command, end to end
# ----------------------------------------------------------------------------------------------------------

def surface(tmp_path, module: str, ckpt: str, loss: str, *metrics: str):
    from loss_landscape.surface.reader import read_surface
    surf = tmp_path / "s.h5"
    args = ["--model", f"loss_landscape.examples.{module}:model", "--model_file", ckpt,
            "--dataset", f"loss_landscape.examples.{module}:dataset", "--loss_name", loss,
            "--x=-1:1:3", "--y=-1:1:3", "--eval_samples", "200", "--surf_file", str(surf), "--quiet"]
    for m in metrics:
        args += ["--metric", m]
    run_command("plot_surface.py", *args, cwd=tmp_path, timeout=300)
    return read_surface(str(surf))


def centre(s, name: str) -> float:
    ix, iy = int(np.argmin(np.abs(s.x))), int(np.argmin(np.abs(s.y)))
    return float(s.values[name][iy, ix])


@pytest.mark.slow
def test_surface_command_charlm(trained, tmp_path):
    s = surface(tmp_path, "charlm", trained["charlm"][0], "token_crossentropy", "perplexity")
    for name in ("train_loss", "train_acc", "train_perplexity"):
        assert name in s.values and np.isfinite(s.values[name]).all(), name
    np.testing.assert_allclose(s.values["train_perplexity"], np.exp(s.values["train_loss"]), rtol=1e-9)
    net = load_model("loss_landscape.examples.charlm:model", trained["charlm"][0]).double()
    (x, y), _ = charlm.dataset()
    idx = ll_data.sample_indices(len(x), 200, 0)
    want = evaluate_values(net, DeviceSplit(x[idx], y[idx]), Criterion.of("token_crossentropy"), batch_size=64)
    assert centre(s, "train_loss") == pytest.approx(want["loss"], rel=1e-5)
    assert centre(s, "train_acc") == pytest.approx(want["acc"], abs=1e-6)


@pytest.mark.slow
def test_surface_command_gpt2(trained, tmp_path):
    s = surface(tmp_path, "gpt2_tiny", trained["gpt2"][0], "model_loss", "perplexity")
    assert "train_acc" not in s.values and np.isfinite(s.values["train_loss"]).all()
    np.testing.assert_allclose(s.values["train_perplexity"], np.exp(s.values["train_loss"]), rtol=1e-9)
    net = load_model("loss_landscape.examples.gpt2_tiny:model", trained["gpt2"][0]).double()
    (train, _), _ = gpt2_tiny.dataset()
    idx = ll_data.sample_indices(len(train["input_ids"]), 200, 0)
    with torch.no_grad():
        want = float(net(**{k: v[idx] for k, v in train.items()}).loss)
    assert centre(s, "train_loss") == pytest.approx(want, rel=1e-5)


@pytest.mark.slow
def test_surface_command_regression(trained, tmp_path):
    s = surface(tmp_path, "regression", trained["regression"][0], REG_LOSS, REG_MAE)
    assert "train_mae" in s.values and "train_acc" not in s.values
    net = load_model("loss_landscape.examples.regression:model", trained["regression"][0]).double()
    (x, y), _ = regression.dataset()
    idx = ll_data.sample_indices(len(x), 200, 0)
    want = regression_reference(net, x[idx], y[idx])
    assert centre(s, "train_loss") == pytest.approx(want["loss"], rel=1e-5)
    assert centre(s, "train_mae") == pytest.approx(want["mae"], rel=1e-5)
