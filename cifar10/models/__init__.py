"""The CIFAR-10 model zoo of the original tool (29 models by name, with its parameter names and order), where
its users look for it. The code lives in `loss_landscape.models.cifar10`; this package re-exports it.

    >>> from cifar10.models import create_model
    >>> create_model("resnet56").__class__.__name__
    'ResNet'
"""

from loss_landscape.models.cifar10 import UnknownModelError, create_model, list_models, register_model

__all__ = ["UnknownModelError", "create_model", "list_models", "register_model"]
