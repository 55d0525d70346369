"""The zoo's vgg models, as the original tool's ``cifar10/models/vgg.py`` named them; the code lives in
`loss_landscape.models.cifar10.vgg`.
"""

from loss_landscape.models.cifar10.vgg import (VGG, vgg9)

__all__ = ["VGG", "vgg9"]
