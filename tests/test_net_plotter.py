"""Directions: normalization against plain per-filter computations, ignore rules, weights vs states,
direction files (ours and the original's layout), and moving the model to grid points."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from loss_landscape.errors import DirectionError
from loss_landscape.directions.spec import Directions, DirectionSpec
from loss_landscape.directions.perturb import Perturber
from loss_landscape.directions.vectors import (create_random_direction, create_target_direction,
                                               direction_generator, normalize_direction_)
from loss_landscape.directions.files import load_directions, save_directions
from loss_landscape.directions.make import make_directions, setup_directions
from loss_landscape.params import ParamVector


def small_net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))
    with torch.no_grad():  # non-trivial BN state
        net[1].running_mean.uniform_(-1, 1)
        net[1].running_var.uniform_(0.5, 2)
        net[1].weight.uniform_(0.5, 1.5)
        net[1].bias.uniform_(-0.5, 0.5)
    return net.eval()


def plain_filter_norm(d: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Reference in float64: each output filter of d scaled to the norm of w's filter."""
    out = d.astype(np.float64).copy()
    for i in range(d.shape[0]):
        out[i] *= np.linalg.norm(w[i].astype(np.float64)) / (np.linalg.norm(d[i].astype(np.float64)) + 1e-10)
    return out


@pytest.mark.parametrize("norm", ["filter", "layer", "weight", "dfilter", "dlayer", ""])
def test_normalizations_match_plain_computation(norm):
    net = small_net()
    w = ParamVector.from_model(net, "weights")
    raw = ParamVector(w.names, [torch.randn(t.shape, generator=torch.Generator().manual_seed(i)) for i, t in
                                enumerate(w)])
    d = raw.clone()
    normalize_direction_(d, w, norm=norm, ignore="biasbn")
    for name, dt, rt, wt in zip(w.names, d, raw, w):
        rn, wn = rt.numpy().astype(np.float64), wt.detach().numpy().astype(np.float64)
        if rt.dim() <= 1:
            assert torch.count_nonzero(dt) == 0, name
            continue
        if norm == "filter":
            want = plain_filter_norm(rn, wn)
            for i in range(rn.shape[0]):  # the defining property, independently of the formula
                assert np.linalg.norm(dt[i].numpy()) == pytest.approx(np.linalg.norm(wn[i]), rel=1e-5)
        elif norm == "layer":
            want = rn * np.linalg.norm(wn) / np.linalg.norm(rn)
        elif norm == "weight":
            want = rn * wn
        elif norm == "dfilter":
            want = np.stack([f / (np.linalg.norm(f) + 1e-10) for f in rn])
        elif norm == "dlayer":
            want = rn / np.linalg.norm(rn)
        else:
            want = rn
        np.testing.assert_allclose(dt.numpy(), want, rtol=2e-6, atol=1e-7, err_msg=name)


def test_ignore_none_copies_one_dim_tensors():
    net = small_net()
    w = ParamVector.from_model(net, "weights")
    d = create_random_direction(w, norm="filter", ignore="", generator=direction_generator(1, 0))
    for name, dt, wt in zip(w.names, d, w):
        if wt.dim() <= 1:
            assert torch.equal(dt, wt), name  # a step a scales them by (1 + a), as in the original
        else:
            assert torch.count_nonzero(dt) == dt.numel()


def test_weights_and_states_cover_different_tensors():
    net = small_net()
    w = ParamVector.from_model(net, "weights")
    s = ParamVector.from_model(net, "states")
    assert w.names == [n for n, _ in net.named_parameters()]
    assert s.names == list(net.state_dict().keys())
    assert "1.running_mean" in s.names and "1.num_batches_tracked" in s.names
    assert "1.running_mean" not in w.names


@pytest.mark.parametrize("dir_type", ["weights", "states"])
def test_perturber_moves_exactly_the_chosen_tensors(dir_type):
    net = small_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    vec = ParamVector.from_model(net, dir_type)
    d = create_random_direction(vec, norm="filter", ignore="", generator=direction_generator(5, 0))
    p = Perturber(net, Directions(d, None, DirectionSpec(dir_type=dir_type)), dir_type)
    p.set_point_((0.5,))
    after = net.state_dict()
    params = {n for n, _ in net.named_parameters()}
    for k in before:
        moved = not torch.equal(before[k], after[k])
        if k.endswith("num_batches_tracked"):
            assert not moved
        elif dir_type == "weights":
            assert moved == (k in params), k
        else:
            assert moved, k
    p.restore_()
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_centre_is_exact_and_arithmetic_matches_the_original():
    net = small_net()
    w = ParamVector.from_model(net, "weights")
    g = direction_generator(123, 0)
    dx = create_random_direction(w, generator=g)
    dy = create_random_direction(w, generator=g)
    w0 = [t.detach().clone() for t in w]
    p = Perturber(net, Directions(dx, dy, DirectionSpec(two_d=True)), "weights")
    p.set_point_((0.0, 0.0))
    for a, b in zip(w, w0):
        assert torch.equal(a, b)
    # The original: numpy float32 directions, change = d0*step[0] + d1*step[1] (float32), then w + change.
    for a, b in [(0.3, -0.7), (-1.0, 1.0), (0.04, 0.96)]:
        p.set_point_((a, b))
        for t, base, x, y in zip(w, w0, dx, dy):
            change = x.numpy() * np.float32(a) + y.numpy() * np.float32(b)
            want = base.numpy() + change
            assert np.array_equal(t.detach().numpy(), want)


def test_seed_and_idx_select_directions():
    w = ParamVector.from_model(small_net(), "weights")
    a = create_random_direction(w, generator=direction_generator(123, 0))
    b = create_random_direction(w, generator=direction_generator(123, 0))
    c = create_random_direction(w, generator=direction_generator(123, 1))
    d = create_random_direction(w, generator=direction_generator(124, 0))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0]) and not torch.equal(a[0], d[0]) and not torch.equal(c[0], d[0])
    # idx 0 is plain torch.manual_seed(seed), documented so users can reproduce it by hand.
    torch.manual_seed(123)
    raw0 = torch.randn(w[0].shape)
    assert torch.allclose(a[0], _filter_normalize(raw0, w[0]), rtol=1e-6)


def _filter_normalize(d, w):
    return torch.stack([di * wi.norm() / (di.norm() + 1e-10) for di, wi in zip(d, w)])


def test_direction_file_roundtrip_and_spec(tmp_path):
    net = small_net()
    spec = DirectionSpec(two_d=True, seed=7, model_sha256="abc")
    d = make_directions(net, spec)
    path = tmp_path / "d.h5"
    save_directions(str(path), d)
    back = load_directions(str(path))
    assert back.spec == spec
    assert back.x.names == d.x.names
    assert back.sha256() == d.sha256()
    with h5py.File(path, "r") as f:  # the original's layout
        assert sorted(f["xdirection"].keys(), key=int) == [str(i) for i in range(len(d.x))]
        assert f["ydirection"]["0"].dtype == np.float32


def write_original_direction_file(path, xs, ys=None):
    """What the original tool's h5_util.write_list produced: groups of datasets '0'..'N-1', nothing else."""
    with h5py.File(path, "w") as f:
        for name, vec in (("xdirection", xs), ("ydirection", ys)):
            if vec is None:
                continue
            grp = f.create_group(name)
            for i, t in enumerate(vec):
                grp.create_dataset(str(i), data=np.asarray(t))


def test_original_direction_file_is_read_and_checked(tmp_path):
    net = small_net()
    w = ParamVector.from_model(net, "weights")
    xs = [np.random.default_rng(i).standard_normal(s).astype(np.float32) for i, s in enumerate(w.shapes)]
    path = tmp_path / "orig.h5"
    write_original_direction_file(path, xs, xs)
    d = setup_directions(str(path), net, DirectionSpec(two_d=True), log=lambda *a: None)
    assert d.spec.kind == "file" and d.x.names == w.names
    assert all(np.array_equal(a.numpy(), b) for a, b in zip(d.x, xs))

    bad = list(xs)
    bad[2] = np.zeros((7,), np.float32)
    write_original_direction_file(tmp_path / "bad.h5", bad)
    with pytest.raises(DirectionError, match=r"tensor 2 \('1.weight'\) has shape \(7,\) in the file but \(4,\)"):
        setup_directions(str(tmp_path / "bad.h5"), net, DirectionSpec(), log=lambda *a: None)
    write_original_direction_file(tmp_path / "short.h5", xs[:-1])
    with pytest.raises(DirectionError, match=r"has 5 tensors, the model has 6 \(first unmatched: '4.bias'\)"):
        setup_directions(str(tmp_path / "short.h5"), net, DirectionSpec(), log=lambda *a: None)
    with pytest.raises(DirectionError, match="only an x direction"):
        write_original_direction_file(tmp_path / "x.h5", xs)
        setup_directions(str(tmp_path / "x.h5"), net, DirectionSpec(two_d=True), log=lambda *a: None)


def test_existing_file_for_another_checkpoint_is_refused(tmp_path):
    net = small_net()
    path = str(tmp_path / "d.h5")
    setup_directions(path, net, DirectionSpec(model_sha256="aaa"), log=lambda *a: None)
    with pytest.raises(DirectionError, match="different checkpoint"):
        setup_directions(path, net, DirectionSpec(model_sha256="bbb"), log=lambda *a: None)
    notes = []
    setup_directions(path, net, DirectionSpec(model_sha256="bbb"), strict_model=False, log=notes.append)
    assert any("warning" in n for n in notes)


def test_target_direction_reaches_the_second_model():
    net1, net2 = small_net(), small_net()
    with torch.no_grad():
        for p in net2.parameters():
            p.add_(torch.randn_like(p))
        net2[1].running_mean.add_(1.0)
    for dir_type in ("weights", "states"):
        v1, v2 = ParamVector.from_model(net1, dir_type), ParamVector.from_model(net2, dir_type)
        d = create_target_direction(v1, v2)
        m = small_net()
        p = Perturber(m, Directions(d, None, DirectionSpec(kind="target", dir_type=dir_type)), dir_type)
        p.set_point_((1.0,))
        live = ParamVector.from_model(m, dir_type)
        for name, a, b in zip(live.names, live, v2):
            if a.is_floating_point():
                torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)
