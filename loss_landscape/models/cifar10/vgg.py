"""VGG-9 of the original tool: conv-BN-ReLU stacks with max pooling, one hidden fully connected layer.

Module indices inside `features` and `fc` follow the original's `cifar10/models/vgg.py` (each convolution
takes three slots, conv/BN/ReLU, each pooling one), so its checkpoints load with
`load_state_dict(strict=True)`.
"""

from __future__ import annotations

import math
from typing import Sequence, Union

import torch
from torch import nn

from .registry import register_model
from .weight_init import init_weights_

# Output channels of a 3x3 convolution, or "M" for a 2x2 max pooling.
VGG9_LAYERS: tuple[Union[int, str], ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M")


class VGG(nn.Module):
    """`features` (convolutions), `fc` (Linear-BN-ReLU to as many units as the last convolution has
    channels) and `classifier` (Linear).

    Args:
        layers: Channels per convolution, "M" for max pooling.
        num_classes: Outputs of `classifier`.
        input_size: Side of the square input; sets the input size of `fc`.
    """

    def __init__(self, layers: Sequence[Union[int, str]], num_classes: int = 10, input_size: int = 32) -> None:
        super().__init__()
        modules: list[nn.Module] = []
        in_channels, side = 3, input_size
        for v in layers:
            if v == "M":
                # ceil_mode as in the original; it matters only for odd sides.
                modules.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True))
                side = math.ceil(side / 2)
            else:
                modules += [
                    nn.Conv2d(in_channels, v, kernel_size=3, padding=1),
                    nn.BatchNorm2d(v),
                    nn.ReLU(inplace=True),
                ]
                in_channels = v
        self.features = nn.Sequential(*modules)
        self.fc = nn.Sequential(
            nn.Linear(in_channels * side * side, in_channels),
            nn.BatchNorm1d(in_channels),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(in_channels, num_classes)
        init_weights_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.flatten(self.features(x), 1)
        return self.classifier(self.fc(out))


@register_model("vgg9")
def vgg9(num_classes: int = 10) -> VGG:
    """VGG-9: seven convolutions (64, 64, 128, 128, 256, 256, 256) in three pooled stages.

    Example:
        >>> net = vgg9()
    """
    return VGG(VGG9_LAYERS, num_classes=num_classes)
