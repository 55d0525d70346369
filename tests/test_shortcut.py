"""Exact shortcuts (`speed.shortcut`) and ``--layers`` (`directions.layers`): the first-layer precompute and the
unmoved prefix give the plain path's loss and accuracy (an unmodified copy of the model moved by its own Perturber,
evaluated by `evaluate_values`) to 1e-6 relative, for an MLP, CNNs whose first conv moves, ResNet-20 restricted to a
later block and to the head, bias-only moves, BN statistics, 1-D, adameq, structured and transformed inputs; the
skipped layers really do not run; and they refuse what they cannot do exactly."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from loss_landscape.directions.adam import adameq_coords
from loss_landscape.directions.layers import match_layers, restrict, restrict_directions
from loss_landscape.directions.make import make_directions
from loss_landscape.directions.perturb import Perturber
from loss_landscape.directions.spec import ADAMEQ, DirectionSpec, Directions
from loss_landscape.evaluation import Criterion, DeviceSplit, evaluate_values
from loss_landscape.models.digits import DigitsCNN, DigitsMLP
from loss_landscape.models.loading import build_model
from loss_landscape.params import ParamVector
from loss_landscape.speed.shortcut import Shortcut

POINTS_2D = [(0.0, 0.0), (0.4, -0.3), (-0.7, 0.5), (1.0, 1.0)]
POINTS_1D = [(0.0,), (0.6,), (-1.0,)]
CRIT = Criterion.of("crossentropy", ["top5"])
BIG = 2**30


def _digits_split(n: int = 200, seed: int = 0) -> DeviceSplit:
    g = torch.Generator().manual_seed(seed)
    return DeviceSplit(torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g))


def _check(model: nn.Module, dirs: Directions, split, *, batch_size: int = 32, dir_type: str = "weights",
           points=None, kind: str | None = None) -> Shortcut:
    """The shortcut against the plain path at each point; returns the shortcut."""
    points = points or (POINTS_2D if dirs.y is not None else POINTS_1D)
    model = model.eval()
    plain = copy.deepcopy(model).eval()
    p_plain = Perturber(plain, dirs, dir_type)
    p = Perturber(model, dirs, dir_type)
    made = Shortcut.attempt(model, p.moved_by_name(), split, batch_size=batch_size, budget_bytes=BIG,
                            adameq=p.adameq)
    assert isinstance(made, Shortcut), made
    if kind is not None:
        assert made.kind == kind
    for pt in points:
        p_plain.set_point_(pt)
        want = evaluate_values(plain, split, CRIT, batch_size=batch_size)
        p.set_point_(pt)
        made.set_point_(pt)
        got = evaluate_values(made.forward, made.split, CRIT, batch_size=made.batch_size)
        assert set(got) == set(want)
        for q in want:
            assert abs(got[q] - want[q]) <= 1e-6 * abs(want[q]) + 1e-12, (pt, q, got[q], want[q])
    p.restore_()
    return made


def _calls(modules) -> list[int]:
    """A counter of forward calls of each module (hooks stay for the test's life)."""
    count = [0]
    for m in modules:
        m.register_forward_hook(lambda *_: count.__setitem__(0, count[0] + 1))
    return count


# ----------------------------------------------------------------------------------------------------------
# Equal to the plain path
# ----------------------------------------------------------------------------------------------------------

def test_mlp_first_linear_with_biases_moving():
    torch.manual_seed(0)
    net = DigitsMLP()
    dirs = make_directions(net, DirectionSpec(two_d=True, xignore="", yignore=""))  # biases move too
    split = _digits_split(200)
    cut = _check(net, dirs, split, batch_size=48, kind="first-layer")  # 200 = 4 x 48 + 8: a short last batch
    assert cut.cached_bytes == 200 * 32 * 4 * 3  # h0, hx, hy of fc1
    fc1 = _calls([net.fc1])
    cut.set_point_((0.3, 0.2))
    evaluate_values(cut.forward, cut.split, CRIT, batch_size=48)
    assert fc1[0] == 0  # the first layer is combined, never run


def test_mlp_one_direction():
    torch.manual_seed(1)
    net = DigitsMLP()
    _check(net, make_directions(net, DirectionSpec()), _digits_split(100), kind="first-layer")


def test_cnn_first_conv_moved_bn_after_it():
    torch.manual_seed(2)
    net = DigitsCNN()
    for bn in (net.bn1, net.bn2):
        bn.running_mean.normal_(0, 0.3)
        bn.running_var.uniform_(0.5, 2.0)
    _check(net, make_directions(net, DirectionSpec(two_d=True)), _digits_split(120), kind="first-layer")


def test_cnn_with_conv_biases_and_a_transform():
    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2), nn.ReLU(),
                        nn.Flatten(), nn.Linear(8 * 7 * 7, 10))
    raw = (torch.rand(90, 3, 16, 16) * 255).to(torch.uint8)
    split = DeviceSplit(raw, torch.randint(0, 10, (90,)), transform=lambda x: x.float() / 255 - 0.5)
    dirs = make_directions(net, DirectionSpec(two_d=True, xignore="", yignore=""))
    cut = _check(net, dirs, split, batch_size=25, kind="first-layer")
    assert cut.split.transform is None


@pytest.mark.parametrize("globs,stays", [(["layer3"], "layer2"), (["linear"], "layer3"),
                                         (["layer2.1.*", "layer3"], "layer1")])
def test_resnet20_restricted_to_a_later_block(globs, stays):
    torch.manual_seed(4)
    model = build_model("resnet20")
    split = DeviceSplit(torch.randn(48, 3, 32, 32), torch.randint(0, 10, (48,)))
    dirs = restrict_directions(make_directions(model, DirectionSpec(two_d=True)), globs)
    cut = _check(model, dirs, split, batch_size=16, points=POINTS_2D[:3], kind="prefix+first-layer")
    skipped = _calls([m for n, m in model.named_modules() if n.startswith(stays) and not list(m.children())])
    cut.set_point_((0.5, -0.5))
    evaluate_values(cut.forward, cut.split, CRIT, batch_size=16)
    assert skipped[0] == 0  # the unmoved prefix ran at build time only


@pytest.mark.parametrize("layer", ["linear", "conv"])
def test_bias_only_moves(layer):
    """The weight's direction is zero and the bias's is not: the term is the bias direction broadcast."""
    torch.manual_seed(5)
    if layer == "linear":
        net, globs = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 10)), ["1.bias"]
    else:
        net, globs = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10)), ["0.bias"]
    dirs = restrict_directions(make_directions(net, DirectionSpec(two_d=True, xignore="", yignore="")), globs)
    _check(net, dirs, _digits_split(60), batch_size=16, kind="first-layer", points=[(0.0, 0.0), (3.0, -2.0)])


def test_states_with_bn_statistics_moved_first_is_prefix_only():
    torch.manual_seed(6)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
    net[1].running_var.uniform_(0.5, 2.0)
    spec = DirectionSpec(dir_type="states", two_d=True, xignore="", yignore="")  # BN statistics move too
    dirs = restrict_directions(make_directions(net, spec), ["1.running_var", "4"])
    cut = _check(net, dirs, _digits_split(40), batch_size=16, dir_type="states")
    assert cut.kind == "prefix"  # the conv runs once; the BN (moved statistics) is no Linear/Conv


def test_adameq_coordinates_follow_the_perturber():
    torch.manual_seed(7)
    net = DigitsMLP()
    d = make_directions(net, DirectionSpec(two_d=True))
    dirs = Directions(d.x, d.y, DirectionSpec(kind=ADAMEQ, two_d=True))
    assert Perturber(net, dirs, "weights").adameq
    points = [(0.5, 0.25), (-0.4, 1.0), (1.0, 4.0)]
    assert len({adameq_coords(*p) for p in points}) == 3
    _check(net, dirs, _digits_split(80), points=points, kind="first-layer")


def test_tuple_and_dict_inputs():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.e, self.c = nn.Linear(64, 16), nn.Linear(3, 16), nn.Linear(16, 10)

        def forward(self, x, z):
            return self.c(torch.relu(self.a(x.flatten(1)) + self.e(z)))

    torch.manual_seed(8)
    net = Two()
    x, z, y = torch.randn(50, 1, 8, 8), torch.randn(50, 3), torch.randint(0, 10, (50,))
    dirs = make_directions(net, DirectionSpec(two_d=True))
    _check(net, dirs, DeviceSplit((x, z), y), batch_size=16, kind="first-layer")
    _check(net, dirs, DeviceSplit({"x": x, "z": z}, y), batch_size=16, kind="first-layer")


def test_sizes_of_kept_values_read_after_the_cut():
    """x.size(0), an int computed in the prefix, is read by a moved view after the cut."""
    class Sizes(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(64, 16), nn.Linear(16, 10)

        def forward(self, x):
            return self.b(torch.tanh(self.a(x.view(x.size(0), -1)))).view(x.size(0), -1)

    torch.manual_seed(9)
    net = Sizes()
    dirs = restrict_directions(make_directions(net, DirectionSpec(two_d=True)), ["b"])
    _check(net, dirs, _digits_split(50), batch_size=16, kind="prefix+first-layer")


# ----------------------------------------------------------------------------------------------------------
# Refusals
# ----------------------------------------------------------------------------------------------------------

def _moved(net, globs=None, **spec):
    dirs = make_directions(net, DirectionSpec(two_d=True, **spec))
    if globs:
        dirs = restrict_directions(dirs, globs)
    return Perturber(net, dirs, "weights").moved_by_name()


def test_budget_too_small_gives_none_and_says_so():
    torch.manual_seed(10)
    net, split = DigitsMLP(), _digits_split(100)
    moved = _moved(net)
    exact = 100 * 32 * 4 * 3
    assert Shortcut.build(net, moved, split, batch_size=32, budget_bytes=exact).cached_bytes == exact
    assert Shortcut.build(net, moved, split, batch_size=32, budget_bytes=exact - 1) is None
    assert "memory budget" in Shortcut.why_not(net, moved, split, batch_size=32, budget_bytes=100)


def test_untraceable_model_gives_none():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            x = x.flatten(1)
            return self.fc(x) if x.sum() > 0 else -self.fc(x)

    net = Branchy()
    moved = {n: [torch.ones_like(t)] for n, t in net.named_parameters()}
    assert Shortcut.build(net, moved, _digits_split(20), batch_size=8, budget_bytes=BIG) is None
    assert "traced" in Shortcut.why_not(net, moved, _digits_split(20), batch_size=8, budget_bytes=BIG)


def test_first_moved_op_not_linear_gives_none():
    net = nn.Sequential(nn.Flatten(), nn.BatchNorm1d(64), nn.Linear(64, 10)).eval()
    moved = {n: [torch.ones_like(t)] for n, t in net.named_parameters()}
    why = Shortcut.why_not(net, moved, _digits_split(20), batch_size=8, budget_bytes=BIG)
    assert "nothing to skip" in why


def test_in_place_writes_into_kept_values_are_refused():
    class Writes(nn.Module):
        def __init__(self, after: bool):
            super().__init__()
            self.after = after
            self.a, self.b, self.c = nn.Linear(64, 16), nn.Linear(16, 16), nn.Linear(16, 10)

        def forward(self, x):
            h = torch.relu(self.a(x.flatten(1)))
            g = self.b(h)
            if self.after:
                h.mul_(2.0)  # unmoved, but after the moved b read h
            else:
                h.add_(g)  # moved, into the kept h
            return self.c(h + g)

    split = _digits_split(30)
    for after, words in ((False, "writes in place"), (True, "changes")):
        net = Writes(after)
        why = Shortcut.why_not(net, _moved(net, ["b"]), split, batch_size=8, budget_bytes=BIG)
        assert words in why, why


def test_wrong_arguments():
    net, split = DigitsMLP(), _digits_split(20)
    cut = Shortcut.build(net, _moved(net), split, batch_size=8, budget_bytes=BIG)
    with pytest.raises(ValueError, match="batches of 8"):
        next(cut.split.batches(16))
    with pytest.raises(ValueError, match="1 coordinates"):
        cut.set_point_((0.1,))
    assert "not a parameter" in Shortcut.why_not(net, {"nope.weight": [torch.ones(1)]}, split, batch_size=8,
                                                 budget_bytes=BIG)
    assert Shortcut.why_not(net, {"fc1.weight": [torch.zeros(32, 64)]}, split, batch_size=8,
                            budget_bytes=BIG) == "no tensor moves"


# ----------------------------------------------------------------------------------------------------------
# --layers
# ----------------------------------------------------------------------------------------------------------

NAMES = ["conv1.weight", "layer1.0.conv1.weight", "layer3.0.bn1.weight", "layer3.1.conv1.weight",
         "layer30.conv.weight", "linear.weight", "linear.bias"]


def test_match_layers_globs():
    assert match_layers(NAMES, ["layer3"]) == [False, False, True, True, False, False, False]  # not layer30
    assert match_layers(NAMES, ["layer3.*"]) == match_layers(NAMES, ["layer3"])
    assert match_layers(NAMES, ["linear", "conv1"]) == [True, False, False, False, False, True, True]
    assert match_layers(NAMES, ["*.bias"]) == [False] * 6 + [True]
    assert match_layers(NAMES, ["layer3.?.conv1.weight"]) == [False, False, False, True, False, False, False]
    assert match_layers(NAMES, ["layer*"]) == [False, True, True, True, True, False, False]


def test_match_layers_errors():
    with pytest.raises(ValueError, match=r"'layer9' matches no tensor.*conv1, layer1, layer3, layer30, linear"):
        match_layers(NAMES, ["layer3", "layer9"])
    with pytest.raises(ValueError, match=r"'layer3.7'.*layer3.0, layer3.1$"):
        match_layers(NAMES, ["layer3.7"])
    with pytest.raises(ValueError, match="no layer glob"):
        match_layers(NAMES, [])


def test_restrict_zeroes_the_others_and_copies():
    vec = ParamVector(["a.weight", "b.weight", "b.bias"], [torch.ones(2, 2), torch.full((3, 2), 2.0), torch.ones(3)])
    out = restrict(vec, [False, True, True])
    assert out.names == vec.names and out.shapes == vec.shapes
    assert float(out[0].abs().sum()) == 0.0 and torch.equal(out[1], vec[1]) and torch.equal(out[2], vec[2])
    out[1].add_(1)
    assert float(vec[1][0, 0]) == 2.0  # a copy, not a view
    with pytest.raises(ValueError, match="2 flags for a direction of 3"):
        restrict(vec, [True, False])


def test_restrict_directions():
    torch.manual_seed(11)
    model = build_model("resnet20")
    dirs = make_directions(model, DirectionSpec(two_d=True))
    small = restrict_directions(dirs, ["linear"])
    for full, part in ((dirs.x, small.x), (dirs.y, small.y)):
        for name, a, b in zip(full.names, full, part):
            assert torch.equal(b, a) if name.startswith("linear.") else not b.any()
    assert small.spec == dirs.spec
    with pytest.raises(ValueError, match="all zero in the x direction"):
        restrict_directions(dirs, ["*.bias"])  # biasbn: the biases do not move
    head = [t for n, t in zip(dirs.x.names, dirs.x) if n.startswith("linear.")]
    assert math.isclose(small.x.norm(), math.sqrt(sum(float((t.double() ** 2).sum()) for t in head)))


def test_tied_weights_move_every_layer_that_reads_them():
    """b shares a's weight: the direction names it once (a.weight), and b moves with it."""
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(64, 64, bias=False), nn.Linear(64, 64, bias=False), nn.Linear(64, 10)
            self.b.weight = self.a.weight

        def forward(self, x):
            return self.c(torch.tanh(self.b(torch.tanh(self.a(x.flatten(1))))))

    torch.manual_seed(12)
    net = Tied()
    assert [n for n, _ in net.named_parameters()] == ["a.weight", "c.weight", "c.bias"]
    dirs = restrict_directions(make_directions(net, DirectionSpec(two_d=True)), ["a"])
    _check(net, dirs, _digits_split(40), batch_size=16, kind="first-layer")


def test_outputs_that_do_not_move_come_from_the_prefix():
    """A model returning (logits, features) with the features unmoved: the rest returns the kept features."""
    class Both(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(64, 16), nn.Linear(16, 10)

        def forward(self, x):
            feat = torch.tanh(self.a(x.flatten(1)))
            return self.b(feat), feat

    torch.manual_seed(13)
    net = Both().eval()
    split = _digits_split(30)
    dirs = restrict_directions(make_directions(net, DirectionSpec(two_d=True)), ["b"])
    plain = copy.deepcopy(net)
    Perturber(plain, dirs, "weights").set_point_((0.5, -0.25))
    p = Perturber(net, dirs, "weights")
    cut = Shortcut.build(net, p.moved_by_name(), split, batch_size=30, budget_bytes=BIG)
    p.set_point_((0.5, -0.25))
    cut.set_point_((0.5, -0.25))
    (kept, _), = list(cut.split.batches(30))
    logits, feat = cut.forward(*kept)
    want_logits, want_feat = plain(split.inputs)
    torch.testing.assert_close(feat, want_feat, rtol=0, atol=0)
    torch.testing.assert_close(logits, want_logits, rtol=1e-6, atol=1e-6)


def test_docstring_examples_run():
    import doctest

    from loss_landscape.directions import layers
    from loss_landscape.speed import shortcut

    globs = dict(nn=nn, torch=torch, DeviceSplit=DeviceSplit, Criterion=Criterion, evaluate_values=evaluate_values,
                 ParamVector=ParamVector, make_directions=make_directions, DirectionSpec=DirectionSpec)
    for module in (shortcut, layers):
        result = doctest.testmod(module, extraglobs=globs)
        assert result.attempted > 0 and result.failed == 0, module.__name__


def test_functional_layers_read_live_attributes():
    """Attribute tensors (get_attr) are read live by the rest: F.linear with a moved parameter after a kept prefix,
    and an unmoved buffer added after the cut."""
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(64, 16)
            self.w = nn.Parameter(torch.randn(10, 16) * 0.3)
            self.register_buffer("shift", torch.randn(10))

        def forward(self, x):
            return torch.nn.functional.linear(torch.tanh(self.a(x.flatten(1))), self.w) + self.shift

    torch.manual_seed(14)
    net = Functional()
    dirs = restrict_directions(make_directions(net, DirectionSpec(two_d=True)), ["w"])
    _check(net, dirs, _digits_split(40), batch_size=16, kind="prefix")
