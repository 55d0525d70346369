"""Name -> factory registry for the CIFAR-10 models (timm's `register_model` / `create_model` pattern)."""

from __future__ import annotations

from typing import Callable

from torch import nn
from loss_landscape.errors import UnknownModelError

ModelFactory = Callable[..., nn.Module]

_REGISTRY: dict[str, ModelFactory] = {}


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Registers a factory under `name`; the factory takes `num_classes` as a keyword.

    Args:
        name: The model name as the original tool's `--model` flag spells it.

    Returns:
        A decorator that records the factory and returns it unchanged.

    Example:
        >>> @register_model("tiny")  # doctest: +SKIP
        ... def tiny(num_classes=10):
        ...     return nn.Linear(3, num_classes)
    """

    def decorator(factory: ModelFactory) -> ModelFactory:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered (by {_REGISTRY[name]!r})")
        _REGISTRY[name] = factory
        return factory

    return decorator


def create_model(name: str, num_classes: int = 10) -> nn.Module:
    """Builds a freshly initialised model by name.

    Args:
        name: A name from `list_models()`, e.g. "resnet56".
        num_classes: Size of the output layer.

    Returns:
        The model, in training mode.

    Raises:
        UnknownModelError: `name` is not registered.

    Example:
        >>> net = create_model("resnet56")
        >>> net.load_state_dict(torch.load("model_300.t7", weights_only=True)["state_dict"])  # doctest: +SKIP
    """
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(name, list_models()) from None
    return factory(num_classes=num_classes)


def list_models() -> list[str]:
    """Returns the registered model names, sorted."""
    return sorted(_REGISTRY)
