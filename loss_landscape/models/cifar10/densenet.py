"""DenseNet-121 for 32x32 inputs, as the original tool had it (kuangliu/pytorch-cifar style).

Module names and creation order follow the original's `cifar10/models/densenet.py`, so its checkpoints
load with `load_state_dict(strict=True)`.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .registry import register_model
from .weight_init import init_weights_


class DenseLayer(nn.Module):
    """Pre-activation 1x1 (to `4 * growth_rate`) then 3x3 (to `growth_rate`); the new maps are put in
    front of the input (the original's `Bottleneck`).

    Args:
        in_planes: Input channels.
        growth_rate: Channels added by this layer.
    """

    def __init__(self, in_planes: int, growth_rate: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, 4 * growth_rate, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth_rate)
        self.conv2 = nn.Conv2d(4 * growth_rate, growth_rate, kernel_size=3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return torch.cat([out, x], 1)


class Transition(nn.Module):
    """Pre-activation 1x1 convolution then 2x2 average pooling, between dense blocks.

    Args:
        in_planes: Input channels.
        out_planes: Output channels.
    """

    def __init__(self, in_planes: int, out_planes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(in_planes)
        self.conv = nn.Conv2d(in_planes, out_planes, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.conv(F.relu(self.bn(x))), 2)


class DenseNet(nn.Module):
    """3x3 stem of `2 * growth_rate` channels, dense blocks `dense1..denseN` with transitions
    `trans1..trans{N-1}` between them, then batch norm, ReLU, 4x4 average pooling and `linear`.

    Args:
        num_layers: Dense layers per block.
        growth_rate: Channels each dense layer adds.
        reduction: Fraction of channels a transition keeps (rounded down).
        num_classes: Outputs of `linear`.
    """

    def __init__(
        self,
        num_layers: Sequence[int] = (6, 12, 24, 16),
        growth_rate: int = 32,
        reduction: float = 0.5,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        self.num_blocks = len(num_layers)
        planes = 2 * growth_rate
        self.conv1 = nn.Conv2d(3, planes, kernel_size=3, padding=1, bias=False)
        # Creation order dense1, trans1, dense2, ... is the checkpoint's key order.
        for i, n in enumerate(num_layers, start=1):
            layers = [DenseLayer(planes + k * growth_rate, growth_rate) for k in range(n)]
            self.add_module(f"dense{i}", nn.Sequential(*layers))
            planes += n * growth_rate
            if i < self.num_blocks:
                out_planes = int(math.floor(planes * reduction))
                self.add_module(f"trans{i}", Transition(planes, out_planes))
                planes = out_planes
        self.bn = nn.BatchNorm2d(planes)
        self.linear = nn.Linear(planes, num_classes)
        init_weights_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        for i in range(1, self.num_blocks + 1):
            out = getattr(self, f"dense{i}")(out)
            if i < self.num_blocks:
                out = getattr(self, f"trans{i}")(out)
        out = F.avg_pool2d(F.relu(self.bn(out)), 4)
        return self.linear(torch.flatten(out, 1))


@register_model("densenet121")
def densenet121(num_classes: int = 10) -> DenseNet:
    """DenseNet-121: blocks of 6, 12, 24 and 16 layers, growth rate 32.

    Example:
        >>> net = densenet121()
    """
    return DenseNet((6, 12, 24, 16), growth_rate=32, num_classes=num_classes)
