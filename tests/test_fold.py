"""`speed.fold` (eval-mode BN folded into the layer before it, in-place ReLU/add) and `speed.compiling`.

The folded forward is compared with the plain, unmodified eval-mode model (float32) and with a float64 copy of it,
at the centre and at points a `Perturber` moved to (dir_type weights, and states: BN statistics moved too)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from loss_landscape.directions.make import make_directions
from loss_landscape.directions.perturb import Perturber
from loss_landscape.directions.spec import DirectionSpec
from loss_landscape.models.loading import build_model
from loss_landscape.speed.compiling import compile_forward, decide_compile
from loss_landscape.speed.fold import FoldedForward

POINTS = [(0.0, 0.0), (0.4, -0.3), (-0.7, 0.5)]


@pytest.fixture(autouse=True)
def _one_thread():
    """Two images per forward: one thread is as fast, and stays fast on a machine busy with other work."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def _randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics and affine parameters (fresh models have mean 0, var 1, gamma 1, beta 0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                if m.weight is not None:
                    m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                    m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.2)
    return model


class LinearBN(nn.Module):
    """BN after Linear layers (with and without bias and affine), and a ReLU on the input itself."""

    def __init__(self):
        super().__init__()
        self.fc1, self.bn1 = nn.Linear(12, 16), nn.BatchNorm1d(16)
        self.fc2, self.bn2 = nn.Linear(16, 5, bias=False), nn.BatchNorm1d(5, affine=False)

    def forward(self, x):
        return self.bn2(self.fc2(torch.relu(self.bn1(self.fc1(torch.relu(x))))))


class SharedOutput(nn.Module):
    """conv's output feeds bn and an addition: folding that pair would change the addition's operand."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)
        self.conv2, self.bn2 = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

    def forward(self, x):
        h = self.conv(x)
        return self.bn2(self.conv2(self.bn(h) + h))


class Aliases(nn.Module):
    """Additions and ReLUs whose operand is the input, an Identity's or Dropout's output (the input itself), or a
    tensor read twice: those may not be written in place."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 3, padding=1, bias=False), nn.BatchNorm2d(3)
        self.skip, self.drop = nn.Identity(), nn.Dropout(0.5)

    def forward(self, x):
        h = self.bn(self.conv(x))
        a = torch.relu(self.drop(x))  # the input: must not be written
        b = h + self.skip(x)          # h has one user: in place; skip(x) is x
        d = self.skip(x) + b          # x, and b (read again below): out of place
        c = torch.relu(b) + b         # b read twice: neither op may write into it
        return c + torch.relu(a) + d


def _check_points(model, dir_type, x, tol=1e-5):
    """Folded vs plain (float32) and vs a float64 copy of the moved model, at each of POINTS."""
    folded = FoldedForward.build(model)
    assert folded is not None and folded.pairs > 0
    dirs = make_directions(model, DirectionSpec(dir_type=dir_type, two_d=True))
    perturber = Perturber(model, dirs, dir_type)
    ref64 = copy.deepcopy(model).to(dtype=torch.float64)
    try:
        with torch.no_grad():
            for coords in POINTS:
                perturber.set_point_(coords)
                folded.refresh_()
                got, plain = folded(x), model(x)
                assert _rel(got, plain) <= tol, coords
                ref64.load_state_dict(model.state_dict())
                want = ref64(x.double())
                assert _rel(got, want) <= tol and _rel(plain, want) <= tol, coords
    finally:
        perturber.restore_()
    return folded


@pytest.mark.parametrize("name,pairs,dir_type", [
    ("resnet20", 21, "weights"), ("resnet20", 21, "states"), ("resnet56", 57, "weights"), ("resnet56", 57, "states"),
    ("resnet20_noshort", 19, "states"), ("vgg9", 8, "weights"), ("vgg9", 8, "states"),
    ("densenet121", 58, "states"),  # its bn1 of each bottleneck follows a concatenation: only bn2 folds
])
def test_zoo_folded_equals_the_plain_model_at_moved_points(name, pairs, dir_type):
    torch.manual_seed(0)
    model = _randomize_bn(build_model(name).eval())
    folded = _check_points(model, dir_type, torch.randn(2, 3, 32, 32))
    assert folded.pairs == pairs


@pytest.mark.parametrize("dir_type", ["weights", "states"])
def test_bn_after_linear(dir_type):
    torch.manual_seed(1)
    net = _randomize_bn(LinearBN().eval())
    folded = _check_points(net, dir_type, torch.randn(9, 12))
    assert folded.pairs == 2
    assert folded.inplace_ops == 1  # relu(bn1(fc1(...))); relu(x) reads the input and stays out of place


def test_linear_bn1d_on_sequences_is_not_folded_wrongly():
    """BatchNorm1d on (N, L, C) normalizes L: the unit must fall back to the unfolded computation."""
    torch.manual_seed(2)
    net = _randomize_bn(nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5)).eval())
    folded = FoldedForward.build(net)
    with torch.no_grad():
        x = torch.randn(3, 5, 4)
        assert _rel(folded(x), net(x)) <= 1e-6
        x2 = torch.randn(7, 4)
        assert _rel(folded(x2), net(x2)) <= 1e-6


def test_channels_last_follows_live_tensors():
    torch.manual_seed(3)
    model = _randomize_bn(build_model("resnet20").eval()).to(memory_format=torch.channels_last)
    folded = FoldedForward.build(model)
    x = torch.randn(4, 3, 32, 32).to(memory_format=torch.channels_last)
    assert all(u.weight.is_contiguous(memory_format=torch.channels_last) for u in folded.folded if u.weight.dim() == 4)
    with torch.no_grad():
        assert _rel(folded(x), model(x)) <= 1e-5
        buffers = [u.weight.data_ptr() for u in folded.folded]
        model.conv1.weight.mul_(1.5)  # moved in place after the build, as the Perturber does
        model.bn1.running_var.mul_(3.0)
        model.layer1[0].bn2.running_mean.add_(0.5)
        folded.refresh_()
        assert _rel(folded(x), model(x)) <= 1e-5
        assert [u.weight.data_ptr() for u in folded.folded] == buffers  # refreshed in place


def test_the_model_is_not_changed():
    torch.manual_seed(4)
    model = _randomize_bn(build_model("resnet20")).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    folded = FoldedForward.build(model)
    assert folded is not None
    assert [m.training for m in model.modules()] == modes
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_shared_output_and_aliases_are_left_alone():
    torch.manual_seed(5)
    net = _randomize_bn(SharedOutput().eval())
    folded = FoldedForward.build(net)
    assert folded.pairs == 1  # conv2 -> bn2 only
    assert "conv" in {n.target for n in folded.module.graph.nodes if n.op == "call_module"}
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert _rel(folded(x), net(x)) <= 1e-6

    net = _randomize_bn(Aliases().eval())
    folded = FoldedForward.build(net)
    # in place: h + skip(x) into h; relu(b) + b into relu(b)'s new tensor; relu(a), a being relu's new tensor;
    # c + relu(a) into c, and that + d. Out of place: relu(drop(x)) (x itself), skip(x) + b, relu(b) (b is read
    # again)
    assert folded.pairs == 1 and folded.inplace_ops == 5
    x = torch.randn(2, 3, 8, 8)
    keep = x.clone()
    with torch.no_grad():
        want = net(x)
        got = folded(x)
    assert torch.equal(x, keep)
    assert _rel(got, want) <= 1e-6


def test_inplace_ops_are_bit_for_bit():
    torch.manual_seed(6)
    model = _randomize_bn(build_model("resnet20").eval())
    x = torch.randn(4, 3, 32, 32)
    inplace, outofplace = FoldedForward.build(model), FoldedForward.build(model, inplace=False)
    assert inplace.inplace_ops == 28 and outofplace.inplace_ops == 0  # 19 ReLUs, 9 residual additions
    targets = [n.target.__name__ for n in inplace.module.graph.nodes if n.op == "call_function"]
    assert targets.count("_add_relu_into") == 9 and targets.count("relu_") == 10  # relu(a + b) in one pass
    with torch.no_grad():
        assert torch.equal(inplace(x), outofplace(x))


def test_what_gives_none():
    class Untraceable(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)

        def forward(self, x):
            return self.bn(self.conv(x)) if x.sum() > 0 else x

    assert FoldedForward.build(Untraceable().eval()) is None
    assert FoldedForward.build(nn.Sequential(nn.Linear(3, 4), nn.ReLU())) is None  # nothing to fold
    no_stats = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4, track_running_stats=False)).eval()
    assert FoldedForward.build(no_stats) is None  # batch statistics even in eval mode
    bn_first = nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 1)).eval()
    assert FoldedForward.build(bn_first) is None  # BN before the conv: not this fold


# -- speed.compiling ---------------------------------------------------------------------------------------------

def test_decide_compile_rule():
    assert decide_compile("on", point_seconds=0.0, points=1)[0] is True
    assert decide_compile("off", point_seconds=100.0, points=10 ** 6)[0] is False
    # saved = points * point_seconds * (1 - 1/speedup) against compile_seconds * margin
    kw = dict(compile_seconds=10.0, speedup=2.0, margin=2.0)
    assert decide_compile("auto", point_seconds=1.0, points=41, **kw)[0] is True   # 20.5 s > 20 s
    assert decide_compile("auto", point_seconds=1.0, points=40, **kw)[0] is False  # 20 s is not more
    assert decide_compile("auto", point_seconds=1.0, points=10 ** 6, compile_seconds=1.0, speedup=1.0)[0] is False
    want, why = decide_compile("auto", point_seconds=0.01, points=441)
    assert want is False and why.startswith("auto: eager") and "\n" not in why
    with pytest.raises(ValueError, match="auto, on or off"):
        decide_compile("yes", point_seconds=1.0, points=1)


@pytest.mark.slow
def test_compile_forward_matches_eager():
    torch.manual_seed(7)
    net = _randomize_bn(nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)).eval())
    folded = FoldedForward.build(net)
    x = torch.randn(5, 6)
    compiled, seconds, failure = compile_forward(folded, lambda f: f(x))
    if failure is not None:
        assert compiled is folded and seconds >= 0
        pytest.skip(f"torch.compile does not work here: {failure}")
    with torch.no_grad():
        assert _rel(compiled(x), net(x)) <= 1e-5
        net[0].weight.mul_(-2.0)  # compiled code reads the live buffers: a move is followed, not baked in
        folded.refresh_()
        assert _rel(compiled(x), net(x)) <= 1e-5


def test_compile_forward_falls_back_to_eager():
    def broken(f):
        raise RuntimeError("no compiler\nsecond line")

    fn = nn.Linear(2, 2)
    got, seconds, failure = compile_forward(fn, broken)
    assert got is fn and failure == "RuntimeError: no compiler" and seconds >= 0
