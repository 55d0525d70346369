"""Exact shortcuts (`speed.precompute`) and ``--layers`` (`directions.layer_select`): the first-layer precompute and
the unmoved prefix give the plain path's loss and accuracy to 1e-6 relative, for an MLP, a CNN whose first layer is
moved, and ResNet-20 with directions restricted to a later block and to the head; and they refuse what they cannot
do exactly."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from loss_landscape.directions.layer_select import match_layers, restrict
from loss_landscape.directions.make import make_directions
from loss_landscape.directions.perturb import Perturber
from loss_landscape.directions.spec import DirectionSpec, Directions
from loss_landscape.evaluation import Criterion, DeviceSplit, evaluate_values
from loss_landscape.models.loading import build_model
from loss_landscape.speed.precompute import Shortcut

POINTS = [(0.0, 0.0), (0.4, -0.3), (-0.7, 0.5)]


def _restricted(dirs: Directions, globs) -> Directions:
    keep = match_layers(dirs.x.names, globs)
    return Directions(restrict(dirs.x, keep), restrict(dirs.y, keep), dirs.spec)


def _check(model, dirs, split, *, batch_size=32, dir_type="weights", kind=None, min_fan_in=0):
    """Shortcut against the plain path (a separate copy moved by its own Perturber) at POINTS; small layers are
    precomputed too (min_fan_in 0), to test the path on small models."""
    crit = Criterion.of("crossentropy", ["top5"])
    plain = copy.deepcopy(model).eval()
    p_plain = Perturber(plain, dirs, dir_type)
    model = model.eval()
    p = Perturber(model, dirs, dir_type)
    cut = Shortcut.build(model, p.moved_by_name(), split, batch_size=batch_size, budget_bytes=2**30,
                         min_fan_in=min_fan_in)
    assert cut is not None, Shortcut.why_not(model, p.moved_by_name(), split, batch_size=batch_size,
                                             budget_bytes=2**30, min_fan_in=min_fan_in)
    if kind:
        assert cut.kind == kind
    for pt in POINTS:
        p_plain.set_point_(pt)
        want = evaluate_values(plain, split, crit, batch_size=batch_size)
        p.set_point_(pt)
        cut.set_point_(pt)
        got = evaluate_values(cut.forward, cut.split, crit, batch_size=batch_size)
        for q in want:
            assert abs(got[q] - want[q]) <= 1e-6 * abs(want[q]) + 1e-12, (pt, q, got[q], want[q])
    return cut


def test_mlp_first_layer():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    split = DeviceSplit(torch.randn(200, 1, 8, 8), torch.randint(0, 10, (200,)))
    dirs = make_directions(net, DirectionSpec(two_d=True, xignore="", yignore=""))  # biases move too
    cut = _check(net, dirs, split, kind="first-layer")
    assert cut.cached_bytes == 200 * 32 * 4 * 3  # h0, hx, hy
    wide = nn.Sequential(nn.Flatten(), nn.Linear(256, 16), nn.ReLU(), nn.Linear(16, 10))  # the default fan-in
    split = DeviceSplit(torch.randn(100, 256), torch.randint(0, 10, (100,)))
    _check(wide, make_directions(wide, DirectionSpec(two_d=True)), split, kind="first-layer", min_fan_in=256)
    moved = {n: [torch.ones_like(t)] for n, t in net.named_parameters()}
    assert "fan-in of 256" in Shortcut.why_not(net, moved, DeviceSplit(torch.randn(9, 1, 8, 8), None), batch_size=4,
                                               budget_bytes=2**20)


def test_cnn_first_conv_moved_with_bn():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2),
                        nn.ReLU(), nn.Flatten(), nn.Linear(8 * 7 * 7, 10))
    net[1].running_var.uniform_(0.5, 2)
    split = DeviceSplit(torch.randn(90, 3, 16, 16), torch.randint(0, 10, (90,)))
    _check(net, make_directions(net, DirectionSpec(two_d=True)), split, kind="first-layer")


@pytest.mark.parametrize("globs,kind", [(["layer3"], "prefix+first-layer"), (["linear"], "prefix+first-layer"),
                                        (["layer2.1.*", "layer3"], "prefix+first-layer")])
def test_resnet_restricted_to_a_later_block(globs, kind):
    torch.manual_seed(2)
    model = build_model("resnet20")
    split = DeviceSplit(torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,)))
    dirs = _restricted(make_directions(model, DirectionSpec(two_d=True)), globs)
    _check(model, dirs, split, kind=kind)


def test_states_with_bn_moved_first_is_prefix_only_or_refused():
    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
    split = DeviceSplit(torch.randn(40, 3, 8, 8), torch.randint(0, 10, (40,)))
    spec = DirectionSpec(dir_type="states", two_d=True, xignore="", yignore="")  # BN statistics move too
    dirs = _restricted(make_directions(net, spec), ["1.running_var", "4"])
    cut = _check(net, dirs, split, dir_type="states")
    assert cut.kind == "prefix"  # the conv runs once; the BN (moved statistics) is not linear-precomputed
    p = Perturber(net, make_directions(net, DirectionSpec(two_d=True)), "weights")
    moved = p.moved_by_name()
    assert Shortcut.build(net, moved, split, batch_size=16, budget_bytes=100) is None
    assert "memory budget" in Shortcut.why_not(net, moved, split, batch_size=16, budget_bytes=100)


def test_refusals():
    class Untraceable(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            return self.fc(x) if x.sum() > 0 else -self.fc(x)

    net = Untraceable()
    split = DeviceSplit(torch.randn(10, 4), torch.randint(0, 3, (10,)))
    moved = {n: [torch.ones_like(t)] for n, t in net.named_parameters()}
    assert "traced" in Shortcut.why_not(net, moved, split, batch_size=4, budget_bytes=2**20)
    bn_first = nn.Sequential(nn.BatchNorm1d(4), nn.Linear(4, 3)).eval()
    moved = {n: [torch.ones_like(t)] for n, t in bn_first.named_parameters()}
    assert "nothing to skip" in Shortcut.why_not(bn_first, moved, split, batch_size=4, budget_bytes=2**20)
    tuple_split = DeviceSplit((torch.randn(10, 4),), torch.randint(0, 3, (10,)))
    assert Shortcut.build(nn.Linear(4, 3), {"weight": [torch.ones(3, 4)]}, tuple_split, batch_size=4,
                          budget_bytes=2**20) is None


def test_match_layers():
    names = ["conv1.weight", "layer1.0.conv1.weight", "layer3.0.bn1.weight", "linear.weight", "linear.bias"]
    assert match_layers(names, ["layer3"]) == [False, False, True, False, False]
    assert match_layers(names, ["linear.*", "conv1"]) == [True, False, False, True, True]
    assert match_layers(names, ["*.bias"]) == [False, False, False, False, True]
    with pytest.raises(ValueError, match="'layer9' matches no tensor.*conv1, layer1, layer3, linear"):
        match_layers(names, ["layer3", "layer9"])
