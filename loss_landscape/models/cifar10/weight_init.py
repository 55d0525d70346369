"""The original tool's weight initialisation, applied by every model here when it is built."""

from __future__ import annotations

from torch import nn


def init_weights_(model: nn.Module) -> None:
    """Initialises `model` in place as the original's `cifar10/main.py:init_params` does.

    Convolutions get Kaiming-normal weights (fan_in, ReLU gain) and zero biases, 2D batch norms weight 1
    and bias 0, linear layers N(0, 1e-3) weights and zero biases. Other modules keep PyTorch's defaults
    (the original left `BatchNorm1d` alone too; its defaults are already 1 and 0).

    Args:
        model: The network to initialise.

    Example:
        >>> init_weights_(nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)))
    """
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            # Small logits at the start, as the original trained from.
            nn.init.normal_(m.weight, std=1e-3)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
