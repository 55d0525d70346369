"""ResNets of the original tool: ImageNet-style ones adapted to 32x32, CIFAR ones, wide CIFAR ones.

Every module and attribute name, and the order they are created in, follows the original
(`cifar10/models/resnet.py` of tomgoldstein/loss-landscape), so its checkpoints load with
`load_state_dict(strict=True)` and direction files (one entry per tensor, in order) line up.
The `_noshort` models use the same blocks without the residual path and without its parameters.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .registry import register_model
from .weight_init import init_weights_


def _projection(in_planes: int, out_planes: int, stride: int) -> nn.Sequential:
    # Keys `shortcut.0` (conv) and `shortcut.1` (BN), as in the original checkpoints.
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False),
        nn.BatchNorm2d(out_planes),
    )


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm; the residual path is optional.

    Args:
        in_planes: Input channels.
        planes: Output channels.
        stride: Stride of the first convolution (and of the projection).
        residual: False gives the original's `BasicBlock_noshortcut`: no `shortcut` module, no addition.
    """

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, residual: bool = True) -> None:
        super().__init__()
        self.residual = residual
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        if residual:
            out_planes = self.expansion * planes
            needs_projection = stride != 1 or in_planes != out_planes
            self.shortcut = _projection(in_planes, out_planes, stride) if needs_projection else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.residual:
            out = out + self.shortcut(x)
        return F.relu(out)


class Bottleneck(nn.Module):
    """1x1 - 3x3 (strided) - 1x1 convolutions with batch norm and expansion 4; residual path optional.

    Args:
        in_planes: Input channels.
        planes: Channels of the inner convolutions; the output has `4 * planes`.
        stride: Stride of the 3x3 convolution (and of the projection).
        residual: False gives the original's `Bottleneck_noshortcut`: no `shortcut` module, no addition,
            and no final ReLU either, because that class returns `bn3(conv3(...))` directly and its
            checkpoints were trained that way.
    """

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1, residual: bool = True) -> None:
        super().__init__()
        self.residual = residual
        out_planes = self.expansion * planes
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        if residual:
            needs_projection = stride != 1 or in_planes != out_planes
            self.shortcut = _projection(in_planes, out_planes, stride) if needs_projection else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if not self.residual:
            return out
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """A 3x3 stem, stages `layer1..layerN` (the first at stride 1, the others at stride 2), average pooling
    and a linear classifier.

    The original's `ResNet`, `ResNet_cifar` and `WResNet_cifar` differ only in `widths` and `pool_size`,
    so one class serves all three.

    Args:
        block: `BasicBlock` or `Bottleneck`.
        num_blocks: Blocks per stage.
        widths: Planes per stage; the stem has `widths[0]` channels.
        pool_size: Kernel of the final average pooling. Fixed like the original's, so it covers the whole
            last feature map only for 32x32 inputs.
        residual: False for the `_noshort` models.
        num_classes: Outputs of `linear`.
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        num_blocks: Sequence[int],
        widths: Sequence[int],
        pool_size: int,
        residual: bool = True,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        if len(num_blocks) != len(widths):
            raise ValueError(f"found {len(num_blocks)} block counts but {len(widths)} widths")
        self.pool_size = pool_size
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        in_planes = widths[0]
        self.num_stages = len(widths)
        for i, (n, planes) in enumerate(zip(num_blocks, widths)):
            blocks = []
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(block(in_planes, planes, stride, residual))
                in_planes = planes * block.expansion
            # Attributes `layer1`, `layer2`, ... in creation order: these names are the checkpoint keys.
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.linear = nn.Linear(in_planes, num_classes)
        init_weights_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        for i in range(1, self.num_stages + 1):
            out = getattr(self, f"layer{i}")(out)
        out = F.avg_pool2d(out, self.pool_size)
        return self.linear(torch.flatten(out, 1))


def resnet_imagenet_style(
    block: type[BasicBlock] | type[Bottleneck],
    num_blocks: Sequence[int],
    residual: bool = True,
    num_classes: int = 10,
) -> ResNet:
    """The original's `ResNet`: four stages of 64/128/256/512 planes, 4x4 average pooling.

    Example:
        >>> net = resnet_imagenet_style(BasicBlock, [2, 2, 2, 2])  # resnet18
    """
    return ResNet(block, num_blocks, (64, 128, 256, 512), pool_size=4, residual=residual, num_classes=num_classes)


def resnet_cifar(depth: int, width: int = 1, residual: bool = True, num_classes: int = 10) -> ResNet:
    """The original's `ResNet_cifar` (width 1) and `WResNet_cifar`: three stages of `(depth - 2) // 6`
    basic blocks with 16, 32 and 64 planes times `width`, 8x8 average pooling.

    Example:
        >>> net = resnet_cifar(56, width=2)  # wrn56_2
    """
    n = (depth - 2) // 6
    widths = (16 * width, 32 * width, 64 * width)
    return ResNet(BasicBlock, (n, n, n), widths, pool_size=8, residual=residual, num_classes=num_classes)


def _register_imagenet_style(name: str, block, num_blocks: Sequence[int], residual: bool) -> None:
    @register_model(name)
    def factory(num_classes: int = 10) -> ResNet:
        return resnet_imagenet_style(block, num_blocks, residual=residual, num_classes=num_classes)


def _register_cifar(name: str, depth: int, width: int, residual: bool) -> None:
    @register_model(name)
    def factory(num_classes: int = 10) -> ResNet:
        return resnet_cifar(depth, width=width, residual=residual, num_classes=num_classes)


# (name, block, blocks per stage, residual): the original's `ResNet*` functions.
_IMAGENET_STYLE = [
    ("resnet18", BasicBlock, (2, 2, 2, 2), True),
    ("resnet18_noshort", BasicBlock, (2, 2, 2, 2), False),
    ("resnet34", BasicBlock, (3, 4, 6, 3), True),
    ("resnet34_noshort", BasicBlock, (3, 4, 6, 3), False),
    ("resnet50", Bottleneck, (3, 4, 6, 3), True),
    ("resnet50_noshort", Bottleneck, (3, 4, 6, 3), False),
    ("resnet101", Bottleneck, (3, 4, 23, 3), True),
    ("resnet101_noshort", Bottleneck, (3, 4, 23, 3), False),
    ("resnet152", Bottleneck, (3, 8, 36, 3), True),
    ("resnet152_noshort", Bottleneck, (3, 8, 36, 3), False),
]

# (name, depth, width, residual): the original's `ResNet*` CIFAR functions and `WRN*` functions.
_CIFAR = [
    ("resnet20", 20, 1, True),
    ("resnet20_noshort", 20, 1, False),
    ("resnet32_noshort", 32, 1, False),
    ("resnet44_noshort", 44, 1, False),
    ("resnet50_16_noshort", 50, 1, False),
    ("resnet56", 56, 1, True),
    ("resnet56_noshort", 56, 1, False),
    ("resnet110", 110, 1, True),
    ("resnet110_noshort", 110, 1, False),
    ("wrn56_2", 56, 2, True),
    ("wrn56_2_noshort", 56, 2, False),
    ("wrn56_4", 56, 4, True),
    ("wrn56_4_noshort", 56, 4, False),
    ("wrn56_8", 56, 8, True),
    ("wrn56_8_noshort", 56, 8, False),
    ("wrn110_2_noshort", 110, 2, False),
    ("wrn110_4_noshort", 110, 4, False),
]

for _spec in _IMAGENET_STYLE:
    _register_imagenet_style(*_spec)
for _spec in _CIFAR:
    _register_cifar(*_spec)
del _spec
