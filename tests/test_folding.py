"""BatchNorm folding (`speed.folding`): the folded forward equals the plain eval-mode model, in float32 and against
float64, at the centre and at moved points (weights, and BN statistics under dir_type states), for the zoo's
networks, and a pair that must not fold is left alone."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from loss_landscape.directions.make import make_directions
from loss_landscape.directions.perturb import Perturber
from loss_landscape.directions.spec import DirectionSpec
from loss_landscape.models.loading import build_model
from loss_landscape.speed.folding import FoldedForward


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def _randomize_bn(model: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            if m.weight is not None:
                m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


class LinearBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.bn1 = nn.Linear(12, 16), nn.BatchNorm1d(16)
        self.fc2, self.bn2 = nn.Linear(16, 5, bias=False), nn.BatchNorm1d(5, affine=False)

    def forward(self, x):
        return self.bn2(self.fc2(torch.relu(self.bn1(self.fc1(x)))))


class SharedOutput(nn.Module):
    """The conv output feeds the BN and a skip: folding it would change the skip."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)
        self.conv2, self.bn2 = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

    def forward(self, x):
        h = self.conv(x)
        return self.bn2(self.conv2(self.bn(h) + h))


@pytest.mark.parametrize("name", ["resnet20", "vgg9", "densenet121", "resnet20_noshort"])
@pytest.mark.parametrize("dir_type", ["weights", "states"])
def test_folded_zoo_equals_the_plain_model_at_moved_points(name, dir_type):
    torch.manual_seed(0)
    model = build_model(name).eval()
    _randomize_bn(model)
    folded = FoldedForward.build(model)
    assert folded is not None and folded.pairs > 0
    dirs = make_directions(model, DirectionSpec(dir_type=dir_type, two_d=True))
    p = Perturber(model, dirs, dir_type)
    x = torch.randn(6, 3, 32, 32)
    ref64 = copy.deepcopy(model).double()
    with torch.no_grad():
        for coords in [(0.0, 0.0), (0.3, -0.2), (-0.5, 0.4)]:
            p.set_point_(coords)
            folded.refresh_()
            plain, got = model(x), folded(x)
            assert _rel(got, plain) <= 1e-5
            ref64.load_state_dict(model.state_dict())
            want = ref64(x.double())
            assert _rel(got, want) <= 1e-5 and _rel(plain, want) <= 1e-5
    p.restore_()


def test_channels_last_and_linear_bn1d():
    torch.manual_seed(1)
    model = build_model("resnet20").eval().to(memory_format=torch.channels_last)
    _randomize_bn(model)
    folded = FoldedForward.build(model)
    x = torch.randn(4, 3, 32, 32).to(memory_format=torch.channels_last)
    with torch.no_grad():
        assert _rel(folded(x), model(x)) <= 1e-5
    assert folded.folded[0].weight.is_contiguous(memory_format=torch.channels_last)

    net = LinearBN().eval()
    _randomize_bn(net)
    folded = FoldedForward.build(net)
    assert folded.pairs == 2
    x = torch.randn(9, 12)
    with torch.no_grad():
        net.fc1.weight.add_(0.1)  # moved in place after the build: refresh_ follows the live tensors
        net.bn1.running_var.mul_(2)
        folded.refresh_()
        assert _rel(folded(x), net(x)) <= 1e-6


def test_what_must_not_fold():
    net = SharedOutput().eval()
    _randomize_bn(net)
    folded = FoldedForward.build(net)
    assert folded.pairs == 1  # only conv2 -> bn2
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert _rel(folded(x), net(x)) <= 1e-6

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
