"""The zoo's resnet models, as the original tool's ``cifar10/models/resnet.py`` named them; the code lives in
`loss_landscape.models.cifar10.resnet`.
"""

from loss_landscape.models.cifar10.resnet import (BasicBlock, Bottleneck, ResNet, resnet_imagenet_style,
                                                  resnet_cifar)

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "resnet_imagenet_style", "resnet_cifar"]
