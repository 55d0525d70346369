"""Training (loss_landscape.training, cifar10/main.py) on the embedded digits models: schedule, label corruption,
checkpoints, determinism, resume, saved accuracy, augmentation and the command's errors."""

import json

import pytest
import torch

from loss_landscape.training import (Augmentation, augment_batch, corrupt_labels, default_augmentation,
                                     init_model, lr_at, lr_milestones, save_folder_name, train)
from loss_landscape.evaluation import DeviceSplit, evaluate
from loss_landscape.models.loading import load_model
from conftest import run_command


def _run(digits, folder, *, model="digits_mlp", epochs=2, save_epoch=10, aug=False, seed=0, **kw):
    net = init_model(model, seed=seed)
    return train(net, digits, save_folder=str(folder), model_name=model, epochs=epochs, save_epoch=save_epoch,
                 lr=0.05, seed=seed, augmentation=default_augmentation(digits) if aug else None,
                 log=lambda *a: None, **kw)


def _state(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def _assert_same_state(a, b):
    assert list(a) == list(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_schedule_300_epochs_is_the_originals():
    assert lr_milestones(300) == (150, 225, 275)
    lrs = {e: lr_at(e, lr=0.1, lr_decay=0.1, epochs=300) for e in (1, 150, 151, 225, 226, 275, 276, 300)}
    assert lrs[1] == lrs[150] == 0.1
    assert lrs[151] == lrs[225] == pytest.approx(0.01)
    assert lrs[226] == lrs[275] == pytest.approx(0.001)
    assert lrs[276] == lrs[300] == pytest.approx(0.0001)


def test_schedule_scales_to_8_epochs():
    assert lr_milestones(8) == (4, 6, 7)  # 8 x (1/2, 3/4, 11/12) = 4, 6, 7.33, rounded half up
    assert [lr_at(e, lr=1.0, lr_decay=0.5, epochs=8) for e in range(1, 9)] == [1, 1, 1, 1, .5, .5, .25, .125]
    assert lr_milestones(1) == (1, 1, 1)  # never reached: a 1-epoch run trains at lr


def test_schedule_in_log(digits, tmp_path):
    _run(digits, tmp_path, epochs=3)
    lines = (tmp_path / "log.txt").read_text().splitlines()
    assert [ln.split()[1] for ln in lines] == ["lr=0.05", "lr=0.05", "lr=0.0005"]  # milestones (2, 2, 3)


def test_label_corruption_exact_reproducible(digits):
    y = digits.train.targets
    for p in (0.0, 0.1, 0.25, 1.0):
        new, idx = corrupt_labels(y, p, num_classes=10, seed=7)
        expected = int(p * len(y) + 0.5)
        assert len(idx) == expected and int((new != y).sum()) == expected
        assert torch.equal(torch.nonzero(new != y).flatten(), idx)
        assert new.min() >= 0 and new.max() < 10
        again, _ = corrupt_labels(y, p, num_classes=10, seed=7)
        assert torch.equal(new, again)
    other, _ = corrupt_labels(y, 0.25, num_classes=10, seed=8)
    assert not torch.equal(other, corrupt_labels(y, 0.25, num_classes=10, seed=7)[0])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        corrupt_labels(y, 1.5, num_classes=10, seed=0)


def test_label_corruption_leaves_test_set_alone(digits, tmp_path):
    test_before = digits.test.targets.clone()
    train_before = digits.train.targets.clone()
    _run(digits, tmp_path, epochs=1, label_corrupt_prob=0.5)
    assert torch.equal(digits.test.targets, test_before) and torch.equal(digits.train.targets, train_before)
    info = json.loads((tmp_path / "args.json").read_text())
    assert info["labels_corrupted"] == int(0.5 * len(train_before) + 0.5)
    # the saved accuracy is measured against the true test labels
    ckpt = _state(tmp_path / "model_1.t7")
    net = load_model("digits_mlp", str(tmp_path / "model_1.t7"))
    _, acc = evaluate(net, DeviceSplit(digits.test.inputs, test_before), batch_size=128)
    assert ckpt["acc"] == acc


def test_checkpoints_epochs_keys_and_loadable(digits, tmp_path):
    _run(digits, tmp_path, epochs=5, save_epoch=2)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(["args.json", "log.txt"] + [f"model_{e}.t7" for e in (0, 1, 2, 4, 5)]
                           + [f"opt_state_{e}.t7" for e in (0, 1, 2, 4, 5)])
    for e in (0, 1, 2, 4, 5):
        ckpt = _state(tmp_path / f"model_{e}.t7")
        assert set(ckpt) == {"state_dict", "epoch", "acc"} and ckpt["epoch"] == e
        assert 0.0 <= ckpt["acc"] <= 100.0
        assert set(_state(tmp_path / f"opt_state_{e}.t7")) == {"optimizer"}
        load_model("digits_mlp", str(tmp_path / f"model_{e}.t7"))
    assert len((tmp_path / "log.txt").read_text().splitlines()) == 5


def test_saved_acc_equals_independent_evaluation(digits, tmp_path):
    _run(digits, tmp_path, model="digits_cnn", epochs=2, aug=True)
    for e in (0, 1, 2):
        net = load_model("digits_cnn", str(tmp_path / f"model_{e}.t7"))
        _, acc = evaluate(net, DeviceSplit(digits.test.inputs, digits.test.targets), batch_size=400)
        assert _state(tmp_path / f"model_{e}.t7")["acc"] == pytest.approx(acc, abs=1e-9)
    assert _state(tmp_path / "model_2.t7")["acc"] > 10.0  # it learned something


def test_same_seed_same_checkpoints(digits, tmp_path):
    _run(digits, tmp_path / "a", model="digits_cnn", epochs=2, aug=True, seed=3)
    _run(digits, tmp_path / "b", model="digits_cnn", epochs=2, aug=True, seed=3)
    for e in (0, 1, 2):
        _assert_same_state(_state(tmp_path / "a" / f"model_{e}.t7")["state_dict"],
                           _state(tmp_path / "b" / f"model_{e}.t7")["state_dict"])
    _run(digits, tmp_path / "c", model="digits_cnn", epochs=2, aug=True, seed=4)
    a, c = _state(tmp_path / "a" / "model_2.t7")["state_dict"], _state(tmp_path / "c" / "model_2.t7")["state_dict"]
    assert not torch.equal(a["conv1.weight"], c["conv1.weight"])


@pytest.mark.parametrize("optimizer", ["sgd", pytest.param("adam", marks=pytest.mark.slow)])
def test_resume_is_bit_identical(digits, tmp_path, optimizer):
    kw = dict(model="digits_cnn", epochs=3, save_epoch=1, aug=True, seed=1, optimizer=optimizer,
              label_corrupt_prob=0.2)
    _run(digits, tmp_path / "full", **kw)
    _run(digits, tmp_path / "resumed", resume_model=str(tmp_path / "full" / "model_1.t7"),
         resume_opt=str(tmp_path / "full" / "opt_state_1.t7"), **kw)
    assert not (tmp_path / "resumed" / "model_0.t7").exists()
    for e in (2, 3):
        full, res = _state(tmp_path / "full" / f"model_{e}.t7"), _state(tmp_path / "resumed" / f"model_{e}.t7")
        _assert_same_state(full["state_dict"], res["state_dict"])
        assert full["acc"] == res["acc"] and full["epoch"] == res["epoch"] == e
    full_log = (tmp_path / "full" / "log.txt").read_text().splitlines()
    res_log = (tmp_path / "resumed" / "log.txt").read_text().splitlines()
    assert [ln.rsplit(" ", 1)[0] for ln in full_log[1:]] == [ln.rsplit(" ", 1)[0] for ln in res_log]


def test_augmentation_crops_and_flips():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4) + 1
    g = torch.Generator().manual_seed(0)
    outs = [augment_batch(x, Augmentation(padding=1, flip=True, fill=(-5.0,)), g) for _ in range(20)]
    for out in outs:
        assert out.shape == x.shape
        for b in range(2):
            values = set(out[b].flatten().tolist())
            assert values <= set(x[b].flatten().tolist()) | {-5.0}  # own pixels or the fill, nothing else
    assert any(not torch.equal(o, x) for o in outs)
    flipped = augment_batch(x, Augmentation(padding=0, flip=True), torch.Generator().manual_seed(1))
    for b in range(2):
        assert torch.equal(flipped[b], x[b]) or torch.equal(flipped[b], x[b].flip(2))


def test_digits_augmentation_rule(digits):
    aug = default_augmentation(digits)
    assert aug.padding == 1 and not aug.flip
    assert aug.fill == pytest.approx((-0.3053 / 0.3760,))


def test_folder_name_follows_the_original():
    assert save_folder_name(model="resnet56") == "resnet56_sgd_lr=0.1_bs=128_wd=0.0005_mom=0.9_save_epoch=10"
    assert save_folder_name(model="vgg9", optimizer="adam", lr=0.001, lr_decay=0.5, noaug=True, raw_data=True,
                            label_corrupt_prob=0.2, loss_name="mse", seed=2, epochs=8) == (
        "vgg9_adam_lr=0.001_lr_decay=0.5_bs=128_wd=0.0005_mom=0.9_save_epoch=10_loss=mse_noaug_rawdata"
        "_randlabel=0.2_epochs=8_seed=2")


def test_command_trains_and_records_args(tmp_path):
    run_command("cifar10/main.py", "--model", "digits_mlp", "--epochs", "2", "--noaug", "--quiet",
                "--save", str(tmp_path), "--lr", "0.05", cwd=tmp_path, timeout=120)
    folder = tmp_path / "digits_mlp_sgd_lr=0.05_bs=128_wd=0.0005_mom=0.9_save_epoch=10_noaug_epochs=2"
    info = json.loads((folder / "args.json").read_text())
    assert info["dataset"] == "digits" and info["epochs"] == 2 and info["lr_milestones"] == [1, 2, 2]
    assert (folder / "model_2.t7").exists() and len((folder / "log.txt").read_text().splitlines()) == 2


@pytest.fixture(scope="module")
def mlp_ckpt(tmp_path_factory, digits):
    folder = tmp_path_factory.mktemp("mlp")
    _run(digits, folder, epochs=1)
    return folder / "model_1.t7"


ARGUMENT_ERRORS = ("bad_prob", "bad_optimizer", "zero_epochs", "negative_seed")


@pytest.mark.parametrize("case", ["missing_resume", "other_arch", *ARGUMENT_ERRORS])
def test_command_bad_input_gets_one_line(tmp_path, mlp_ckpt, case):
    base = ["--model", "digits_cnn", "--epochs", "2", "--quiet", "--save", str(tmp_path)]
    extra = {"missing_resume": ["--resume_model", str(tmp_path / "nope.t7")],
             "other_arch": ["--resume_model", str(mlp_ckpt)],
             "bad_prob": ["--label_corrupt_prob", "1.5"],
             "bad_optimizer": ["--optimizer", "lbfgs"],
             "zero_epochs": ["--epochs", "0"],
             "negative_seed": ["--rand_seed", "-1"]}[case]
    proc = run_command("cifar10/main.py", *base, *extra, cwd=tmp_path, check=False, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr, proc.stderr
    if case in ARGUMENT_ERRORS:  # argparse's exit 2: a short usage line, the error, where --help is
        assert proc.returncode == 2, proc.stderr
        assert len(lines) == 3 and lines[0].startswith("usage:") and "error" in lines[1], proc.stderr
        assert "--help" in lines[2], proc.stderr
    else:
        assert proc.returncode == 1, proc.stderr
        assert len(lines) == 1 and "error" in lines[0], proc.stderr


@pytest.mark.slow
def test_command_resume_is_bit_identical(tmp_path):
    args = ["--model", "digits_cnn", "--epochs", "3", "--save_epoch", "1", "--lr", "0.05", "--quiet"]
    run_command("cifar10/main.py", *args, "--save", str(tmp_path / "a"), cwd=tmp_path, timeout=120)
    (full,) = (tmp_path / "a").iterdir()
    run_command("cifar10/main.py", *args, "--save", str(tmp_path / "b"), "--resume_model", str(full / "model_1.t7"),
                "--resume_opt", str(full / "opt_state_1.t7"), cwd=tmp_path, timeout=120)
    resumed = tmp_path / "b" / full.name
    assert sorted(p.name for p in resumed.glob("model_*.t7")) == ["model_2.t7", "model_3.t7"]
    _assert_same_state(_state(full / "model_3.t7")["state_dict"], _state(resumed / "model_3.t7")["state_dict"])
    assert json.loads((resumed / "args.json").read_text())["resumed_from"] == str(full / "model_1.t7")


# ----------------------------------------------------------------------------------------------------------
# Any model, data and loss: a tiny causal LM on token ids, a model that computes its own loss, a regression
# ----------------------------------------------------------------------------------------------------------

LM_CONTEXT = 8


def tiny_lm():
    """The factory ``test_train:tiny_lm``: a 1-block char transformer over the example LM's vocabulary."""
    from loss_landscape.examples.charlm import CharTransformer, vocabulary
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return CharTransformer(len(vocabulary()), context=LM_CONTEXT, d_model=16, n_head=2, n_layer=1)


def tiny_lm_data():
    """The factory ``test_train:tiny_lm_data``: the first 8 characters of 256 training and 64 test windows of the
    example LM's text, with their next-character targets."""
    from loss_landscape.examples import charlm
    (x, y), (tx, ty) = charlm.dataset()
    return (x[:256, :LM_CONTEXT], y[:256, :LM_CONTEXT]), (tx[:64, :LM_CONTEXT], ty[:64, :LM_CONTEXT])


class OwnLoss(torch.nn.Module):
    """``model(input_ids=..., labels=...)`` returns {"loss": the batch's mean token loss, "logits": ...}."""

    def __init__(self):
        super().__init__()
        self.lm = tiny_lm()

    def forward(self, input_ids, labels):
        logits = self.lm(input_ids)
        return {"loss": torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels), "logits": logits}


def _token_loss_and_acc(net, x, y):
    """Mean cross-entropy and accuracy (%) over every token, written out independently of the package."""
    with torch.no_grad():
        logits = net.eval()(x)
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1)).item()
    return loss, 100.0 * (logits.argmax(-1) == y).double().mean().item()


def test_command_trains_a_language_model_on_tokens(tmp_path):
    from loss_landscape.cli.train import run
    code = run(["--model", "test_train:tiny_lm", "--dataset", "test_train:tiny_lm_data", "--loss_name",
                "token_crossentropy", "--optimizer", "adam", "--lr", "0.01", "--weight_decay", "0", "--epochs", "2",
                "--batch_size", "32", "--save_epoch", "1", "--quiet", "--save", str(tmp_path)])
    assert code == 0
    (folder,) = tmp_path.iterdir()
    assert "loss=token_crossentropy" in folder.name and "data=test_train-tiny_lm_data" in folder.name
    assert sorted(p.name for p in folder.glob("model_*.t7")) == ["model_0.t7", "model_1.t7", "model_2.t7"]
    assert (folder / "opt_state_2.t7").exists()
    info = json.loads((folder / "args.json").read_text())
    assert info["augmentation"] is None and info["loss_name"] == "token_crossentropy"
    _, (tx, ty) = tiny_lm_data()
    losses = []
    for e in (0, 1, 2):
        net = load_model("test_train:tiny_lm", str(folder / f"model_{e}.t7"))
        loss, acc = _token_loss_and_acc(net, tx, ty)
        assert _state(folder / f"model_{e}.t7")["acc"] == pytest.approx(acc, abs=1e-9)
        losses.append(loss)
    assert losses[2] < losses[1] < losses[0]
    lines = (folder / "log.txt").read_text().splitlines()
    assert len(lines) == 2 and all("train_acc=" in ln for ln in lines)
    logged = [float(ln.split("test_loss=")[1].split()[0]) for ln in lines]
    assert logged == pytest.approx(losses[1:], abs=2e-6)


def test_model_that_computes_its_own_loss_from_dict_inputs(tmp_path):
    from loss_landscape.data import EvalData, Split
    (x, y), (tx, ty) = tiny_lm_data()
    data = EvalData("own", Split({"input_ids": x, "labels": y}, None), Split({"input_ids": tx, "labels": ty}, None), 0)
    net = OwnLoss()
    before, _ = _token_loss_and_acc(net.lm, tx, ty)
    result = train(net, data, save_folder=str(tmp_path), epochs=2, batch_size=32, lr=0.5, momentum=0.9,
                   weight_decay=0.0, loss_name="model_loss", log=lambda *a: None)
    after, _ = _token_loss_and_acc(net.lm, tx, ty)
    assert after < before and result.test_loss == pytest.approx(after, rel=1e-5)  # every batch of 32 x 8 tokens
    assert result.test_acc != result.test_acc  # NaN: the model's own loss has no accuracy
    lines = (tmp_path / "log.txt").read_text().splitlines()
    assert len(lines) == 2 and not any("acc" in ln for ln in lines)
    assert _state(tmp_path / "model_2.t7")["acc"] != _state(tmp_path / "model_2.t7")["acc"]


def test_regression_on_float_targets(tmp_path):
    from loss_landscape.data import EvalData, Split
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 3, generator=g)
    y = torch.stack([x[:, 0] - 2 * x[:, 1], x[:, 2] ** 2], dim=1)
    data = EvalData("reg", Split(x[:150], y[:150]), Split(x[150:], y[150:]), 0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    before = torch.nn.functional.mse_loss(net(x[150:]), y[150:]).item()
    result = train(net, data, save_folder=str(tmp_path), epochs=3, batch_size=16, lr=0.05, weight_decay=0.0,
                   loss_name="regression_mse", log=lambda *a: None)
    with torch.no_grad():
        after = torch.nn.functional.mse_loss(net.eval()(x[150:]), y[150:]).item()
    assert after < before and result.test_loss == pytest.approx(after, rel=1e-5)


def test_what_does_not_apply_to_the_data_is_refused(tmp_path):
    from loss_landscape.data import EvalData, Split
    from loss_landscape.errors import TrainError
    (x, y), (tx, ty) = tiny_lm_data()
    tokens = EvalData("tokens", Split(x, y), Split(tx, ty), 0)
    cases = [(dict(label_corrupt_prob=0.1), "class labels"),
             (dict(augmentation=Augmentation()), "image inputs"),
             (dict(loss_name="hinge"), "unknown loss"),
             (dict(loss_name="crossentropy"), r"expected logits \(B, C\)")]
    for kw, message in cases:
        with pytest.raises(ValueError, match=message) as e:
            train(tiny_lm(), tokens, save_folder=str(tmp_path / "x"), epochs=1, log=lambda *a: None,
                  **{"loss_name": "token_crossentropy", **kw})
        assert "\n" not in str(e.value)
    no_targets = EvalData("none", Split(x, None), Split(tx, None), 0)
    with pytest.raises(TrainError, match="needs targets"):
        train(tiny_lm(), no_targets, save_folder=str(tmp_path / "y"), epochs=1, loss_name="token_crossentropy",
              log=lambda *a: None)
    assert init_model("digits_mlp", seed=0, num_classes=0)(torch.zeros(1, 1, 8, 8)).shape == (1, 10)


def test_command_loss_names_are_the_packages():
    """cifar10/main.py and plot_trajectory.py name the losses in their help without importing torch."""
    from loss_landscape.cli import train, trajectory
    from loss_landscape.losses import LOSSES
    assert train.LOSSES == trajectory.LOSSES == LOSSES
