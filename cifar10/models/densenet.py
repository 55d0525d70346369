"""The zoo's densenet models, as the original tool's ``cifar10/models/densenet.py`` named them; the code lives in
`loss_landscape.models.cifar10.densenet`.
"""

from loss_landscape.models.cifar10.densenet import (DenseLayer, Transition, DenseNet, densenet121)

__all__ = ["DenseLayer", "Transition", "DenseNet", "densenet121"]
