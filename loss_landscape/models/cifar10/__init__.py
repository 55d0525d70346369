"""The 29 CIFAR-10 models the original tool accepts, by name, with its parameter names and order.

Example:
    >>> from loss_landscape.models.cifar10 import create_model, list_models
    >>> net = create_model("resnet56")
    >>> "resnet56_noshort" in list_models()
    True
"""

from .registry import UnknownModelError, create_model, list_models, register_model

# Imported for their registrations.
from . import densenet, resnet, vgg  # noqa: F401  isort: skip

__all__ = ["UnknownModelError", "create_model", "list_models", "register_model"]
