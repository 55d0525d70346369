"""Models by name and checkpoints: the CIFAR-10 registry, the embedded digits models, and
``pkg.module:factory`` for any other network."""

from __future__ import annotations

import hashlib
import os
import pickle
import zipfile
from typing import Any

import torch
from torch import nn

from loss_landscape._util import import_object
from loss_landscape.models import digits as embedded
from loss_landscape.errors import UnknownModelError
from loss_landscape.models.cifar10.registry import create_model, list_models
from loss_landscape.errors import ModelError


def known_models() -> list[str]:
    return sorted(list_models() + embedded.list_models())


def native_dataset(name: str) -> str | None:
    """The dataset a named model is built for (None for ``pkg.module:factory`` models)."""
    if name in embedded.list_models():
        return "digits"
    if ":" in name:
        return None
    return "cifar10"


def check_name(name: str) -> None:
    """Refuses an unknown model name before anything slow happens (factories are checked when built)."""
    if ":" not in name and name not in known_models():
        raise ModelError(f"unknown model {name!r}: expected one of {', '.join(known_models())}, "
                         f"or pkg.module:factory")


def build_model(name: str, num_classes: int = 10) -> nn.Module:
    """A freshly initialized model by registry name, embedded name, or ``pkg.module:factory``.

    Example:
        >>> build_model("resnet20").__class__.__name__  # doctest: +SKIP
        'ResNet_cifar'
    """
    if ":" in name:
        return _from_factory(name)
    if name in embedded.list_models():
        return embedded.create_model(name, num_classes=num_classes)
    try:
        return create_model(name, num_classes=num_classes)
    except UnknownModelError:
        raise ModelError(f"unknown model {name!r}: expected one of {', '.join(known_models())}, "
                         f"or pkg.module:factory") from None


def _from_factory(spec: str) -> nn.Module:
    factory = import_object(spec, what="model factory", expected="expected 'pkg.module:factory' importable from "
                            "the current directory, returning an nn.Module", error=ModelError)
    model = factory()
    if not isinstance(model, nn.Module):
        raise ModelError(f"model {spec!r}: the factory returned {type(model).__name__}, expected an nn.Module")
    return model


def file_sha256(path: str) -> str:
    """SHA-256 of a file's bytes (recorded so a surface is tied to the exact checkpoint)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def state_sha256(model: nn.Module) -> str:
    """A checksum of a model's state dict (names, dtypes, shapes, values): what a surface file records in place of a
    checkpoint's checksum for weights that come from memory or a factory, so that it resumes only for the same
    weights."""
    import numpy as np

    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().cpu()
        if t.dtype == torch.bfloat16:  # no numpy dtype: its bytes, tagged by torch's name
            h.update(f"{name}bfloat16{tuple(t.shape)}".encode())
            h.update(t.contiguous().view(torch.int16).numpy().tobytes())
            continue
        a = np.ascontiguousarray(t.numpy())
        h.update(f"{name}{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """The state dict inside a checkpoint: ``{'state_dict': ...}`` (the original's ``.t7`` files),
    ``{'model': ...}``, or a bare state dict; ``module.`` prefixes of DataParallel are dropped.

    Loads with ``weights_only=True`` (no code from the file runs); numpy scalars, which some old
    checkpoints store as ``acc``, are allowed.
    """
    if not os.path.isfile(path):
        raise ModelError(f"model file {path} does not exist")
    try:
        import numpy as np
        core = getattr(np, "_core", None) or np.core
        safe = [core.multiarray.scalar, np.dtype, type(np.dtype("float64")), type(np.dtype("float32"))]
        with torch.serialization.safe_globals(safe):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"cannot read model file {path}: {first[:200]}") from None
    state = obj
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                state = obj[key]
                break
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"model file {path} holds no state dict (expected {{'state_dict': ...}} or a bare "
                         f"state dict of tensors)")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], *, source: str, model_name: str) -> None:
    """Loads `state` strictly, refusing a checkpoint that does not fit with the first difference named."""
    own = model.state_dict()
    for key, value in own.items():
        if key not in state:
            raise ModelError(f"{source} does not fit model {model_name}: it lacks {key!r}")
        if tuple(state[key].shape) != tuple(value.shape):
            raise ModelError(f"{source} does not fit model {model_name}: {key!r} has shape "
                             f"{tuple(state[key].shape)}, the model expects {tuple(value.shape)}")
    extra = [k for k in state if k not in own]
    if extra:
        raise ModelError(f"{source} does not fit model {model_name}: unexpected key {extra[0]!r}")
    model.load_state_dict(state, strict=True)


def load_model(name: str, path: str, num_classes: int = 10) -> nn.Module:
    """`build_model` then the weights of checkpoint `path`, on the CPU, in eval mode."""
    model = build_model(name, num_classes=num_classes)
    load_weights(model, read_state_dict(path), source=f"model file {path}", model_name=name)
    return model.eval()


def describe(model: nn.Module) -> dict[str, Any]:
    return {"parameters": sum(p.numel() for p in model.parameters()),
            "tensors": len(list(model.parameters()))}
