"""Options of plot_surface.py checked against independent computations: disjoint data parts, same_dir
symmetry, the plane through three models, BN recalibration, user factories for model and data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from loss_landscape.models import digits as embedded
from conftest import run_command
from loss_landscape.evaluation import DeviceSplit, evaluate, recalibrate_bn
from loss_landscape.models.loading import load_model
from loss_landscape.surface.reader import read_surface


def test_data_parts_are_disjoint_and_cover_the_set(tmp_path, trained_ckpt):
    common = ["--model_file", str(trained_ckpt), "--x=-0.5:0.5:3", "--dir_file", str(tmp_path / "d.h5"), "--quiet"]
    run_command("plot_surface.py", *common, "--surf_file", str(tmp_path / "full.h5"), cwd=tmp_path)
    parts = []
    for i in range(3):
        out = tmp_path / f"part{i}.h5"
        run_command("plot_surface.py", *common, "--data_split", "3", "--split_idx", str(i), "--surf_file", str(out),
                    cwd=tmp_path)
        parts.append(read_surface(str(out)))
    full = read_surface(str(tmp_path / "full.h5"))
    sizes = np.array([len(x) for x in np.array_split(np.arange(1397), 3)])
    for key in ("train_loss", "train_acc"):
        combined = sum(n * p.values[key] for n, p in zip(sizes, parts)) / sizes.sum()
        np.testing.assert_allclose(combined, full.values[key], rtol=1e-6)
    assert parts[0].attrs["split_idx"] == 0 and parts[2].attrs["data_split"] == 3


def test_same_dir_gives_a_symmetric_surface(tmp_path, trained_ckpt):
    out = tmp_path / "s.h5"
    run_command("plot_surface.py", "--model_file", str(trained_ckpt), "--x=-1:1:5", "--y=-1:1:5", "--same_dir",
                "--surf_file", str(out), "--quiet", cwd=tmp_path)
    z = read_surface(str(out)).values["train_loss"]
    np.testing.assert_array_equal(z, z.T)
    assert not np.allclose(z, z[0, 0])


def test_plane_through_three_models(tmp_path, trained_ckpt, trained_ckpt2, digits):
    third = tmp_path / "model_c.t7"
    embedded.ensure_checkpoint(str(third), "digits_cnn", digits.train.inputs, digits.train.targets, seed=2, epochs=1,
                               log=lambda *a: None)
    out = tmp_path / "plane.h5"
    run_command("plot_surface.py", "--model_file", str(trained_ckpt), "--model_file2", str(trained_ckpt2),
                "--model_file3", str(third), "--dir_type", "states", "--x=0:1:2", "--y=0:1:2", "--surf_file",
                str(out), "--quiet", cwd=tmp_path)
    z = read_surface(str(out)).values["train_loss"]

    def plain(path):
        return evaluate(load_model("digits_cnn", str(path)), DeviceSplit(digits.train.inputs, digits.train.targets))[0]

    assert z[0, 0] == pytest.approx(plain(trained_ckpt), rel=1e-6)
    assert z[0, 1] == pytest.approx(plain(trained_ckpt2), rel=1e-5)  # (x=1, y=0): model 2
    assert z[1, 0] == pytest.approx(plain(third), rel=1e-5)  # (x=0, y=1): model 3


def test_bn_recalibration_at_the_centre(tmp_path, trained_ckpt, digits):
    out = tmp_path / "bn.h5"
    run_command("plot_surface.py", "--model_file", str(trained_ckpt), "--x=-1:1:3", "--bn_recalibrate", "2",
                "--batch_size", "64", "--surf_file", str(out), "--quiet", cwd=tmp_path)
    got = read_surface(str(out)).values["train_loss"][1]
    model = load_model("digits_cnn", str(trained_ckpt))
    plain = evaluate(model, DeviceSplit(digits.train.inputs, digits.train.targets))[0]
    recalibrate_bn(model, digits.train.inputs, batches=2, batch_size=64)
    want = evaluate(model, DeviceSplit(digits.train.inputs, digits.train.targets))[0]
    assert got == pytest.approx(want, rel=1e-6) and got != pytest.approx(plain, rel=1e-6)


FACTORY = '''
import torch
from torch import nn

def make_net():
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 3))

def make_data():
    g = torch.Generator().manual_seed(0)
    train = (torch.randn(90, 12, generator=g), torch.randint(0, 3, (90,), generator=g))
    test = (torch.randn(30, 12, generator=g), torch.randint(0, 3, (30,), generator=g))
    return train, test
'''


def test_user_factories_for_model_and_data(tmp_path):
    (tmp_path / "mystuff.py").write_text(FACTORY)
    import importlib.util
    spec = importlib.util.spec_from_file_location("mystuff_test_copy", tmp_path / "mystuff.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.manual_seed(3)
    net = mod.make_net()
    # A DataParallel-style checkpoint: keys prefixed with "module.".
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, tmp_path / "net.pt")
    out = tmp_path / "f.h5"
    run_command("plot_surface.py", "--model", "mystuff:make_net", "--dataset", "mystuff:make_data", "--model_file",
                str(tmp_path / "net.pt"), "--x=-1:1:3", "--eval_on", "both", "--surf_file", str(out), "--quiet",
                cwd=tmp_path)
    s = read_surface(str(out))
    (trx, try_), (tex, tey) = mod.make_data()
    with torch.no_grad():
        ref = torch.nn.functional.cross_entropy(net.double()(trx.double()), try_).item()
        ref_test = torch.nn.functional.cross_entropy(net(tex.double()), tey).item()
    assert s.values["train_loss"][1] == pytest.approx(ref, rel=1e-6)
    assert s.values["test_loss"][1] == pytest.approx(ref_test, rel=1e-6)
    proc = run_command("plot_surface.py", "--model", "mystuff:make_net", "--model_file", str(tmp_path / "net.pt"),
                       cwd=tmp_path, check=False)
    assert proc.returncode == 1 and "name its data with --dataset" in proc.stderr
