"""Several grid points per pass (`speed.multipoint`) against the point-by-point path: `Perturber.set_point_`
and `evaluate_values` on a copy of the model, point by point, and a float64 loss written out by hand."""

from __future__ import annotations

import copy
import doctest
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from loss_landscape.directions import (Directions, DirectionSpec, Perturber, create_random_direction,
                                       direction_generator)
from loss_landscape.errors import EvaluationError
from loss_landscape.evaluation import Criterion, DeviceSplit, evaluate_values
from loss_landscape.models.digits import DigitsCNN, DigitsMLP
from loss_landscape.params import ParamVector
from loss_landscape.speed import multipoint
from loss_landscape.speed.multipoint import MultiPoint

N = 300
COORDS_1D = [(-0.4,), (-0.1,), (0.0,), (0.25,), (0.4,)]
COORDS_2D = [(-0.4, 0.3), (-0.1, -0.2), (0.0, 0.0), (0.25, 0.1), (0.4, -0.35)]


def digits_like(n: int = N, seed: int = 0) -> DeviceSplit:
    g = torch.Generator().manual_seed(seed)
    return DeviceSplit(torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g))


def make_model(kind: str) -> nn.Module:
    torch.manual_seed(1)
    net = DigitsMLP() if kind == "mlp" else DigitsCNN()
    for m in net.modules():  # BN statistics away from (0, 1), so moving or sharing them shows
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0.0, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0.0, 0.2)
    return net.eval()


def make_directions(net: nn.Module, dir_type: str, ndim: int) -> Directions:
    vec = ParamVector.from_model(net, dir_type)
    g = direction_generator(7, 0)
    dx = create_random_direction(vec, ignore="", generator=g)
    dy = create_random_direction(vec, ignore="", generator=g) if ndim == 2 else None
    return Directions(dx, dy, DirectionSpec(dir_type=dir_type, two_d=ndim == 2))


def plain_values(net, dirs, dir_type, coords_list, split, criterion, batch_size):
    ref = copy.deepcopy(net)
    p = Perturber(ref, dirs, dir_type)
    out = []
    for c in coords_list:
        p.set_point_(c)
        out.append(evaluate_values(ref, split, criterion, batch_size=batch_size))
    return out


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-30)


CASES = [("mlp", "weights"), ("cnn", "weights"), ("cnn", "states")]


@pytest.mark.parametrize("kind,dir_type", CASES)
@pytest.mark.parametrize("ndim", [1, 2])
@pytest.mark.parametrize("P", [1, 3, 4])
def test_matches_the_point_by_point_path(kind, dir_type, ndim, P):
    net = make_model(kind)
    dirs = make_directions(net, dir_type, ndim)
    split = digits_like()
    criterion = Criterion.of("crossentropy", ["top5"])
    coords = COORDS_1D if ndim == 1 else COORDS_2D  # 5 points: P = 3 and 4 end on a partial chunk
    want = plain_values(net, dirs, dir_type, coords, split, criterion, batch_size=64)
    mp = MultiPoint.from_perturber(net, Perturber(net, dirs, dir_type), dir_type, points_per_pass=P)
    got = mp.evaluate(coords, split, criterion, batch_size=64)
    assert len(got) == len(coords)
    for c, g, w in zip(coords, got, want):
        assert set(g) == {"loss", "acc", "top5"}
        for q in w:
            assert rel(g[q], w[q]) <= 1e-5, (c, q, g[q], w[q])
    # The points differ from each other (a slice mix-up would not pass the comparison above by chance).
    assert len({round(v["loss"], 9) for v in want}) == len(coords)


def test_weights_are_the_perturbers_to_the_bit():
    net = make_model("cnn")
    dirs = make_directions(net, "states", 2)
    p = Perturber(net, dirs, "states")
    mp = MultiPoint.from_perturber(net, p, "states", points_per_pass=4)
    stacked = {k: v.clone() for k, v in mp.weights_at(COORDS_2D[:3]).items()}
    assert set(stacked) == {k for k, v in net.state_dict().items() if v.is_floating_point()}
    for i, c in enumerate(COORDS_2D[:3]):
        p.set_point_(c)
        for name, t in net.state_dict().items():
            if t.is_floating_point():
                assert torch.equal(stacked[name][i], t), (c, name)
    p.restore_()


def test_states_stack_the_bn_statistics_and_weights_share_them():
    """Under dir_type states the running statistics move with the point; under weights they stay the centre's.
    Checked against the plain model with its statistics written by hand, not through the Perturber."""
    net = make_model("cnn")
    split = digits_like(120)
    criterion = Criterion.of("crossentropy")
    for dir_type in ("weights", "states"):
        dirs = make_directions(net, dir_type, 1)
        mp = MultiPoint.from_perturber(net, Perturber(net, dirs, dir_type), dir_type, points_per_pass=2)
        got = mp.evaluate([(0.3,), (-0.3,)], split, criterion, batch_size=50)
        for (a,), g in zip([(0.3,), (-0.3,)], got):
            ref = copy.deepcopy(net)
            live = ParamVector.from_model(ref, dir_type)
            assert live.names == dirs.x.names
            with torch.no_grad():
                for t, d in zip(live, dirs.x):
                    if t.is_floating_point():
                        t.copy_(t + a * d)
            x, y = split.inputs, split.targets
            want = F.cross_entropy(ref(x).double(), y).item()
            assert rel(g["loss"], want) <= 1e-5, (dir_type, a)


def test_float64_mlp_against_a_loss_written_out():
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 4)).double().eval()
    x = torch.randn(90, 6, dtype=torch.float64)
    y = torch.randint(0, 4, (90,))
    w0 = {n: t.detach().clone() for n, t in net.named_parameters()}
    g = torch.Generator().manual_seed(0)
    dx = {n: torch.randn(t.shape, generator=g, dtype=torch.float64) for n, t in w0.items()}
    dy = {n: torch.randn(t.shape, generator=g, dtype=torch.float64) for n, t in w0.items()}
    mp = MultiPoint(net, w0, {n: [dx[n], dy[n]] for n in w0}, points_per_pass=3)
    coords = [(0.1, -0.2), (0.5, 0.5), (-1.0, 0.25), (0.0, 0.0)]
    got = mp.evaluate(coords, DeviceSplit(x, y), Criterion.of("crossentropy"), batch_size=32)
    for (a, b), v in zip(coords, got):
        W = {n: w0[n] + a * dx[n] + b * dy[n] for n in w0}
        h = torch.tanh(x @ W["0.weight"].T + W["0.bias"])
        logits = h @ W["2.weight"].T + W["2.bias"]
        want = -(logits.log_softmax(1).gather(1, y[:, None])).mean().item()
        acc = 100.0 * (logits.argmax(1) == y).double().mean().item()
        assert math.isclose(v["loss"], want, rel_tol=1e-6), (a, b)  # the losses are float32 per sample
        assert v["acc"] == acc


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(5, 8)
        self.b = nn.Linear(3, 8)
        self.out = nn.Linear(8, 3)

    def forward(self, u, v):
        return self.out(torch.relu(self.a(u) + self.b(v)))


class DictInputs(TwoInputs):
    def forward(self, u, v):  # called as model(**{"u": ..., "v": ...})
        return super().forward(u=u, v=v)


@pytest.mark.parametrize("as_dict", [False, True])
def test_structured_inputs_and_a_transform(as_dict):
    torch.manual_seed(0)
    net = (DictInputs() if as_dict else TwoInputs()).eval()
    u, v = torch.randint(0, 255, (70, 5), dtype=torch.uint8), torch.randn(70, 3)
    inputs = {"u": u, "v": v} if as_dict else (u, v)
    scale = ((lambda x: {"u": x["u"].float() / 255, "v": x["v"]}) if as_dict
             else (lambda x: (x[0].float() / 255, x[1])))
    split = DeviceSplit(inputs, torch.randint(0, 3, (70,)), scale)
    dirs = make_directions(net, "weights", 2)
    criterion = Criterion.of("crossentropy", ["top5"])
    want = plain_values(net, dirs, "weights", COORDS_2D, split, criterion, batch_size=16)
    mp = MultiPoint.from_perturber(net, Perturber(net, dirs, "weights"), "weights", points_per_pass=2)
    for g, w in zip(mp.evaluate(COORDS_2D, split, criterion, batch_size=16), want):
        for q in w:
            assert rel(g[q], w[q]) <= 1e-5


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, 6)
        self.b = nn.Linear(6, 6)
        self.b.weight = self.a.weight  # one tensor, two names in the state dict
        self.out = nn.Linear(6, 3)

    def forward(self, x):
        return self.out(torch.tanh(self.b(torch.tanh(self.a(x)))))


@pytest.mark.parametrize("dir_type", ["weights", "states"])
def test_tied_weights_move_as_the_perturber_leaves_them(dir_type):
    torch.manual_seed(0)
    net = Tied().eval()
    split = DeviceSplit(torch.randn(40, 6), torch.randint(0, 3, (40,)))
    dirs = make_directions(net, dir_type, 2)
    criterion = Criterion.of("crossentropy")
    want = plain_values(net, dirs, dir_type, COORDS_2D, split, criterion, batch_size=16)
    mp = MultiPoint.from_perturber(net, Perturber(net, dirs, dir_type), dir_type, points_per_pass=3)
    for g, w in zip(mp.evaluate(COORDS_2D, split, criterion, batch_size=16), want):
        assert rel(g["loss"], w["loss"]) <= 1e-5


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        out = self.fc(x.flatten(1))
        return out if out.sum() > 0 else -out  # data-dependent control flow: vmap cannot batch it


class CachedWeights(nn.Module):
    """Reads its weight through a list made at construction: the Perturber's in-place writes reach it,
    functional_call's swap of the module attribute does not."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)
        self._refs = [self.fc.weight]

    def forward(self, x):
        return F.linear(x.flatten(1), self._refs[0], self.fc.bias)


def test_supports_probes_the_model():
    x = digits_like(8).inputs
    assert MultiPoint.supports(make_model("mlp"), x) == (True, "")
    assert MultiPoint.supports(make_model("cnn"), x, dir_type="states") == (True, "")
    ok, why = MultiPoint.supports(DataDependent(), x)
    assert not ok and "DataDependent" in why and "--points_per_pass 1" in why
    ok, why = MultiPoint.supports(CachedWeights(), x)
    assert not ok and "CachedWeights" in why
    net = make_model("cnn")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    MultiPoint.supports(net, x, dir_type="states")
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # put back bit for bit


def test_a_model_vmap_cannot_run_names_it_and_the_way_out():
    net = DataDependent().eval()
    dirs = make_directions(net, "weights", 1)
    mp = MultiPoint.from_perturber(net, Perturber(net, dirs, "weights"), "weights", points_per_pass=2)
    with pytest.raises(EvaluationError, match=r"DataDependent.*--points_per_pass 1"):
        mp.evaluate(COORDS_1D, digits_like(20), Criterion.of("crossentropy"), batch_size=10)


def test_a_model_failing_by_itself_keeps_its_own_error():
    net = DigitsMLP().eval()  # 64 inputs, given 7
    dirs = make_directions(net, "weights", 1)
    mp = MultiPoint.from_perturber(net, Perturber(net, dirs, "weights"), "weights", points_per_pass=2)
    split = DeviceSplit(torch.randn(10, 7), torch.randint(0, 10, (10,)))
    with pytest.raises(RuntimeError) as info:
        mp.evaluate(COORDS_1D, split, Criterion.of("crossentropy"), batch_size=10)
    assert not isinstance(info.value, EvaluationError)


def test_bad_arguments_are_named():
    net = make_model("mlp")
    dirs = make_directions(net, "weights", 1)
    p = Perturber(net, dirs, "weights")
    with pytest.raises(EvaluationError, match="points_per_pass"):
        MultiPoint.from_perturber(net, p, "weights", points_per_pass=0)
    with pytest.raises(EvaluationError, match="not made over this"):
        MultiPoint.from_perturber(make_model("mlp"), p, "weights", points_per_pass=2)
    mp = MultiPoint.from_perturber(net, p, "weights", points_per_pass=2)
    with pytest.raises(EvaluationError, match="2 coordinates for 1"):
        mp.evaluate([(0.1, 0.2)], digits_like(10), Criterion.of("crossentropy"), batch_size=5)
    assert mp.evaluate([], digits_like(10), Criterion.of("crossentropy"), batch_size=5) == []
    assert mp.weight_bytes == 2 * 4 * sum(t.numel() for t in net.parameters())


def test_docstring_examples_run():
    globs = dict(nn=nn, torch=torch, ParamVector=ParamVector, create_random_direction=create_random_direction,
                 direction_generator=direction_generator, Directions=Directions, DirectionSpec=DirectionSpec,
                 Perturber=Perturber, DeviceSplit=DeviceSplit, Criterion=Criterion)
    result = doctest.testmod(multipoint, extraglobs=globs)
    assert result.attempted > 0 and result.failed == 0
