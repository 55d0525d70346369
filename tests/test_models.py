"""The model registry: names, checkpoint compatibility with the original tool, forward passes, shortcuts.

`data/original_models.json` lists, for each of the original's 29 models, its parameter count and its
state_dict as (key, shape, dtype) in order, recorded from the original tool.
"""

import json
import math
import pathlib

import pytest
import torch
from torch import nn

from loss_landscape.models import loading as models
from loss_landscape.errors import UnknownModelError
from loss_landscape.models.cifar10.registry import create_model, list_models
from loss_landscape.models.cifar10.registry import register_model
from loss_landscape.models.cifar10.resnet import BasicBlock, Bottleneck

REFERENCE = json.loads((pathlib.Path(__file__).parent / "data" / "original_models.json").read_text())

# Forward passes and checkpoint copies of models this big take a second or more each on a small CPU:
# resnet101, resnet152, wrn56_8 (with and without shortcuts) and wrn110_4_noshort.
LARGE = {name for name, ref in REFERENCE.items() if ref["num_parameters"] > 25_000_000}
BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


def _names(slow_large: bool):
    return [pytest.param(n, marks=pytest.mark.slow) if slow_large and n in LARGE else n for n in list_models()]


def _layout(state_dict):
    return [[k, list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in state_dict.items()]


def _random_state_dict(layout, generator):
    """A checkpoint as the original would hold one, made from the reference layout alone."""
    sd = {}
    for key, shape, dtype in layout:
        if dtype == "int64":
            sd[key] = torch.tensor(391, dtype=torch.int64)
        elif key.endswith("running_var") or (key.endswith("weight") and len(shape) == 1):
            sd[key] = torch.rand(shape, generator=generator) + 0.5
        elif len(shape) <= 1:
            sd[key] = 0.1 * torch.randn(shape, generator=generator)
        else:
            fan_in = math.prod(shape[1:])
            sd[key] = torch.randn(shape, generator=generator) * math.sqrt(1.0 / fan_in)
    return sd


def test_registry_lists_exactly_the_original_models():
    assert list_models() == sorted(REFERENCE)
    assert len(list_models()) == 29


@pytest.mark.parametrize("name", _names(slow_large=False))
def test_state_dict_layout_matches_original(name):
    got = _layout(create_model(name).state_dict())
    expected = REFERENCE[name]["state_dict"]
    assert [k for k, _, _ in got] == [k for k, _, _ in expected], "keys or their order differ"
    assert got == expected, "shapes or dtypes differ"


@pytest.mark.parametrize("name", _names(slow_large=False))
def test_parameters_count_and_order_match_original(name):
    model = create_model(name)
    assert sum(p.numel() for p in model.parameters()) == REFERENCE[name]["num_parameters"]
    # Direction files of type `weights` hold one entry per parameter, in this order.
    expected = [k for k, _, _ in REFERENCE[name]["state_dict"] if not k.endswith(BUFFER_SUFFIXES)]
    assert [k for k, _ in model.named_parameters()] == expected


@pytest.mark.parametrize("name", _names(slow_large=True))
def test_forward_gives_one_logit_per_class(name):
    model = create_model(name).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["vgg9", "densenet121", "resnet18", "resnet50_noshort", "wrn56_2"])
def test_num_classes_sets_the_output_size(name):
    model = create_model(name, num_classes=100).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 100)


@pytest.mark.parametrize("name", _names(slow_large=True))
def test_original_checkpoint_round_trips(name, tmp_path):
    generator = torch.Generator().manual_seed(0)
    saved = create_model(name).eval()
    saved.load_state_dict(_random_state_dict(REFERENCE[name]["state_dict"], generator), strict=True)
    path = tmp_path / "model_1.t7"
    # As the original's main.py saves: {'acc', 'epoch', 'state_dict'}, read back by the project's own reader.
    torch.save({"acc": 9.5, "epoch": 1, "state_dict": saved.state_dict()}, path)

    loaded = models.load_model(name, str(path))
    assert not loaded.training

    x = torch.randn(2, 3, 32, 32, generator=generator)
    with torch.no_grad():
        assert torch.equal(loaded(x), saved(x))
    for key, value in saved.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_unknown_name_raises_with_the_known_names():
    with pytest.raises(UnknownModelError) as excinfo:
        create_model("nope")
    message = str(excinfo.value)
    assert isinstance(excinfo.value, ValueError)
    assert "\n" not in message
    assert "'nope'" in message
    for name in list_models():
        assert name in message


def test_register_model_refuses_a_taken_name():
    with pytest.raises(ValueError, match="resnet56"):
        register_model("resnet56")(lambda num_classes=10: nn.Linear(1, num_classes))
    assert list_models() == sorted(REFERENCE)


def _block_with_silenced_branch(block_class, residual, bias):
    # Same channels in and out, stride 1: the residual path, when present, is the identity.
    planes = 8
    block = block_class(planes * block_class.expansion, planes, stride=1, residual=residual).eval()
    last_bn = block.bn3 if block_class is Bottleneck else block.bn2
    with torch.no_grad():
        last_bn.weight.zero_()
        last_bn.bias.fill_(bias)
    return block


@pytest.mark.parametrize("block_class", [BasicBlock, Bottleneck])
def test_residual_block_adds_its_input(block_class):
    block = _block_with_silenced_branch(block_class, residual=True, bias=0.0)
    x = torch.rand(2, 8 * block_class.expansion, 6, 6)
    with torch.no_grad():
        assert torch.equal(block(x), x)


@pytest.mark.parametrize("block_class", [BasicBlock, Bottleneck])
def test_noshort_block_has_no_residual_path(block_class):
    block = _block_with_silenced_branch(block_class, residual=False, bias=0.0)
    assert not any("shortcut" in k for k in block.state_dict())
    x = torch.rand(2, 8 * block_class.expansion, 6, 6)
    with torch.no_grad():
        assert torch.equal(block(x), torch.zeros_like(x))


def test_noshort_bottleneck_ends_without_relu_like_the_original():
    # The original's Bottleneck_noshortcut returns bn3(conv3(...)) with no final ReLU.
    block = _block_with_silenced_branch(Bottleneck, residual=False, bias=-1.0)
    with torch.no_grad():
        out = block(torch.rand(2, 32, 6, 6))
    assert torch.equal(out, torch.full_like(out, -1.0))


@pytest.mark.parametrize("name", ["resnet20", "resnet50", "wrn56_2"])
def test_noshort_model_differs_from_residual_model_with_the_same_weights(name):
    generator = torch.Generator().manual_seed(0)
    residual = create_model(name).eval()
    residual.load_state_dict(_random_state_dict(REFERENCE[name]["state_dict"], generator))
    plain = create_model(f"{name}_noshort").eval()
    shared = {k: v for k, v in residual.state_dict().items() if "shortcut" not in k}
    plain.load_state_dict(shared, strict=True)
    x = torch.randn(2, 3, 32, 32, generator=generator)
    with torch.no_grad():
        assert not torch.allclose(plain(x), residual(x))


def test_init_is_kaiming_normal_for_convs_as_the_original():
    torch.manual_seed(0)
    model = create_model("resnet18")
    conv = model.layer4[1].conv2.weight  # 512 x 512 x 3 x 3: a tight estimate of the std
    assert conv.std().item() == pytest.approx(math.sqrt(2.0 / (512 * 9)), rel=0.01)
    assert model.linear.weight.std().item() == pytest.approx(1e-3, rel=0.05)
    assert torch.equal(model.linear.bias, torch.zeros(10))
    assert torch.equal(model.bn1.weight, torch.ones(64)) and torch.equal(model.bn1.bias, torch.zeros(64))
    vgg = create_model("vgg9")
    assert torch.equal(vgg.features[0].bias, torch.zeros(64))
