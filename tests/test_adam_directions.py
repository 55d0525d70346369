"""Adam directions: moments read from a real saved Adam state in parameter order, LLA's adameq point against
a float64 formula written out by hand, the Perturber landing on it, and one-line errors for bad inputs."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from loss_landscape.directions.adam import (ADAM_MODES, adam_directions, adam_record, adameq_multiplier,
                                            adameq_point, read_adam_moments, read_adam_state)
from loss_landscape.errors import AdamDirectionError
from loss_landscape.directions.perturb import Perturber
from loss_landscape.directions.vectors import normalize_direction_
from loss_landscape.params import ParamVector


def tiny_net(hidden: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4, hidden),
                         nn.ReLU(), nn.Linear(hidden, 2))


def train_steps(net: nn.Module, opt: torch.optim.Optimizer, steps: int = 3) -> None:
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, 2, 4, 4, generator=g), torch.randint(0, 2, (8,), generator=g)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()


@pytest.fixture
def adam_run(tmp_path):
    """A tiny model after 3 real Adam steps (non-default eps), its optimizer and the saved opt_state file."""
    net = tiny_net()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2, eps=1e-4)
    train_steps(net, opt)
    path = tmp_path / "opt_state_3.t7"
    torch.save({"optimizer": opt.state_dict()}, path)
    return net, opt, str(path)


def test_moments_equal_optimizer_tensors_in_parameter_order(adam_run):
    net, opt, path = adam_run
    m, v = read_adam_moments(path, net)
    assert m.names == v.names == ParamVector.from_model(net, "weights").names
    for k, p in enumerate(net.parameters()):
        st = opt.state[p]
        assert m[k].dtype == torch.float32 and m[k].device.type == "cpu"
        assert torch.equal(m[k], st["exp_avg"]) and torch.equal(v[k], st["exp_avg_sq"])
    state = read_adam_state(path, net)
    assert state.step == 3 and state.eps == [1e-4] * len(m) and all(state.has_state)


def test_bare_state_dict_and_named_parameters_are_accepted(tmp_path):
    net = tiny_net()
    opt = torch.optim.Adam(net.named_parameters(), lr=1e-2)  # state records param_names
    train_steps(net, opt, steps=1)
    path = tmp_path / "bare.t7"
    torch.save(opt.state_dict(), path)
    m, _ = read_adam_moments(str(path), net)
    assert all(torch.equal(a, opt.state[p]["exp_avg"]) for a, p in zip(m, net.parameters()))


def hand_adameq(w0, m, v, a, b, eps):
    """w0 + a / sqrt(b) * m / (sqrt(v) + eps), elementwise in float64 (LLA's update with b_sqrt)."""
    k = a / math.sqrt(b)
    return [w.double() + k * mt.double() / (vt.double().sqrt() + eps) for w, mt, vt in zip(w0, m, v)]


@pytest.mark.parametrize("a,b", [(-0.5, 1.0), (0.75, 0.1), (-1.0, 2.05)])
def test_adameq_point_and_perturber_match_hand_formula(adam_run, a, b):
    net, opt, path = adam_run
    m, v = read_adam_moments(path, net)
    w0 = ParamVector.from_model(net, "weights").clone()
    want = hand_adameq(w0, m, v, a, b, 1e-4)  # eps stored in the param group
    got = adameq_point(w0, m, v, a, b, 1e-4)
    d = adam_directions(net, path, mode="adameq")  # eps=None: the stored 1e-4
    assert d.spec.kind == "adam-adameq" and d.spec.two_d and d.ndim == 2
    p = Perturber(net, d, "weights")
    p.set_point_((a, b))  # the Perturber maps grid (a, b) of an adameq file to (a / sqrt(b), 0) itself
    live = ParamVector.from_model(net, "weights")
    for name, wt, gt, lt in zip(w0.names, want, got, live):
        assert torch.allclose(gt.double(), wt, rtol=1e-5, atol=1e-6), name
        assert torch.allclose(lt.double(), wt, rtol=1e-5, atol=1e-6), name
    p.restore_()
    assert all(torch.equal(x, y) for x, y in zip(ParamVector.from_model(net, "weights"), w0))


def test_eps_default_is_the_stored_one_and_can_be_overridden(adam_run):
    net, _, path = adam_run
    m, v = read_adam_moments(path, net)
    stored = adam_directions(net, path, mode="adameq")
    explicit = adam_directions(net, path, mode="adameq", eps=1e-4)
    lla = adam_directions(net, path, mode="adameq", eps=1e-6)
    assert all(torch.equal(a, b) for a, b in zip(stored.x, explicit.x))
    assert not all(torch.equal(a, b) for a, b in zip(stored.x, lla.x))
    assert adam_record(read_adam_state(path, net), mode="adameq")["adam_eps"] == 1e-4
    assert all(torch.count_nonzero(t) == 0 for t in stored.y)
    assert torch.allclose(lla.x[0].double(), m[0].double() / (v[0].double().sqrt() + 1e-6), rtol=1e-5)


def test_add_mode_is_m_and_v_with_optional_normalization(adam_run):
    net, _, path = adam_run
    m, v = read_adam_moments(path, net)
    raw = adam_directions(net, path)
    assert raw.spec.kind == "adam" and all(torch.equal(a, b) for a, b in zip(raw.x, m))
    assert all(torch.equal(a, b) for a, b in zip(raw.y, v))
    normed = adam_directions(net, path, norm="filter", ignore="biasbn")
    want = v.clone()
    normalize_direction_(want, ParamVector.from_model(net, "weights"), norm="filter", ignore="biasbn")
    assert all(torch.equal(a, b) for a, b in zip(normed.y, want))
    assert normed.spec.xnorm == "filter" and normed.spec.xignore == "biasbn"


def test_multiplier_follows_lla_and_refuses_bad_coordinates():
    assert adameq_multiplier(0.5, 0.25) == 1.0 and adameq_multiplier(0.5, 0.25, b_sqrt=False) == 2.0
    with pytest.raises(AdamDirectionError, match="y coordinates > 0"):
        adameq_multiplier(0.5, 0.0)
    assert ADAM_MODES == ("add", "adameq")


def one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


def test_bad_inputs_give_one_line_errors(adam_run, tmp_path):
    net, _, path = adam_run
    sgd_net = tiny_net()
    sgd = torch.optim.SGD(sgd_net.parameters(), lr=0.1, momentum=0.9)
    train_steps(sgd_net, sgd, steps=1)
    torch.save({"optimizer": sgd.state_dict()}, tmp_path / "sgd.t7")
    with pytest.raises(AdamDirectionError) as e:
        read_adam_moments(str(tmp_path / "sgd.t7"), net)
    assert "not an Adam state" in one_line(e) and "SGD with momentum" in one_line(e)

    with pytest.raises(AdamDirectionError) as e:  # same tensor count, one layer wider
        read_adam_moments(path, tiny_net(hidden=5))
    assert "'4.weight'" in one_line(e) and "(4, 12)" in one_line(e) and "(5, 12)" in one_line(e)
    with pytest.raises(AdamDirectionError) as e:  # fewer tensors
        read_adam_moments(path, nn.Linear(3, 2))
    assert "holds 8 parameter tensors, the model has 2" in one_line(e)
    assert "(first unmatched: optimizer tensor 2 of shape (3,))" in one_line(e)

    with pytest.raises(AdamDirectionError) as e:
        read_adam_moments(str(tmp_path / "opt_state_9.t7"), net)
    assert "does not exist" in one_line(e)

    torch.save({"state_dict": net.state_dict(), "epoch": 3, "acc": 50.0}, tmp_path / "model_3.t7")
    with pytest.raises(AdamDirectionError) as e:
        read_adam_moments(str(tmp_path / "model_3.t7"), net)
    assert "model checkpoint, not an optimizer state" in one_line(e)

    (tmp_path / "junk.t7").write_bytes(b"not a torch file")
    with pytest.raises(AdamDirectionError) as e:
        read_adam_moments(str(tmp_path / "junk.t7"), net)
    assert "cannot read optimizer state file" in one_line(e)

    fresh = torch.optim.Adam(net.parameters())
    torch.save({"optimizer": fresh.state_dict()}, tmp_path / "fresh.t7")
    with pytest.raises(AdamDirectionError) as e:
        read_adam_moments(str(tmp_path / "fresh.t7"), net)
    assert "never took a step" in one_line(e)

    with pytest.raises(AdamDirectionError) as e:
        adam_directions(net, path, mode="moment")
    assert "unknown adam mode 'moment'" in one_line(e)
