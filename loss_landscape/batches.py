"""Inputs of any structure, rows first: a tensor (``model(x)``), a tuple of tensors (``model(*x)``) or a dict of
tensors (``model(**x)``). Every tensor of one structure has the same number of rows (samples); token ids and
other integer inputs keep their dtype.

Example:
    >>> x = {"input_ids": torch.zeros(5, 8, dtype=torch.int64), "attention_mask": torch.ones(5, 8)}
    >>> rows(x), rows(slice_rows(x, 1, 3))
    (5, 2)
    >>> describe(x)
    'dict(input_ids: int64 (5, 8), attention_mask: float32 (5, 8))'
"""

from __future__ import annotations

from typing import Any, Callable, Union

import torch
from torch import nn

from loss_landscape.errors import DataError

Structure = Union[torch.Tensor, tuple, list, dict]


def map_tensors(fn: Callable[[torch.Tensor], torch.Tensor], x: Structure) -> Structure:
    """`fn` applied to every tensor of `x`, keeping the structure (tuples stay tuples, dicts keep their keys)."""
    if isinstance(x, torch.Tensor):
        return fn(x)
    if isinstance(x, dict):
        return {k: map_tensors(fn, v) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return tuple(map_tensors(fn, v) for v in x)
    raise DataError(f"inputs hold a {type(x).__name__}: expected a tensor, a tuple of tensors or a dict of tensors")


def tensors(x: Structure) -> list[torch.Tensor]:
    """The tensors of `x` in order."""
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, dict):
        return [t for v in x.values() for t in tensors(v)]
    if isinstance(x, (tuple, list)):
        return [t for v in x for t in tensors(v)]
    raise DataError(f"inputs hold a {type(x).__name__}: expected a tensor, a tuple of tensors or a dict of tensors")


def check_structure(x: Structure, what: str) -> int:
    """The number of rows of `x`; raises `DataError` naming `what` unless every tensor has that many rows."""
    ts = tensors(x)
    if not ts:
        raise DataError(f"{what} hold no tensor: expected a tensor, a tuple of tensors or a dict of tensors")
    if any(t.dim() == 0 for t in ts):
        raise DataError(f"{what}: {describe(x)} has a scalar: expected every tensor to have a first (sample) dimension")
    n = int(ts[0].shape[0])
    if any(int(t.shape[0]) != n for t in ts):
        raise DataError(f"{what}: {describe(x)} has tensors with different numbers of samples: expected the same "
                        f"first dimension for all")
    return n


def rows(x: Structure) -> int:
    return int(tensors(x)[0].shape[0])


def slice_rows(x: Structure, start: int, stop: int) -> Structure:
    return map_tensors(lambda t: t[start:stop], x)


def take_rows(x: Structure, index: torch.Tensor) -> Structure:
    return map_tensors(lambda t: t[index.to(t.device)], x)


def nbytes(x: Structure) -> int:
    return sum(t.element_size() * t.numel() for t in tensors(x))


def to_device(x: Structure, device: torch.device, *, non_blocking: bool = False,
              channels_last: bool = False) -> Structure:
    """`x` on `device`; 4-D floating image tensors may go channels_last."""
    def move(t: torch.Tensor) -> torch.Tensor:
        t = t.to(device, non_blocking=non_blocking)
        if channels_last and t.dim() == 4:
            t = t.contiguous(memory_format=torch.channels_last)
        return t
    return map_tensors(move, x)


def call_model(model: Callable[..., Any] | nn.Module, x: Structure) -> Any:
    """``model(x)``, ``model(*x)`` or ``model(**x)`` by the structure of `x`."""
    if isinstance(x, dict):
        return model(**x)
    if isinstance(x, (tuple, list)):
        return model(*x)
    return model(x)


def describe(x: Any) -> str:
    """``float32 (N, 3, 32, 32)``, ``tuple(int64 (N, 8), ...)``, ``dict(input_ids: int64 (N, 8))``."""
    if isinstance(x, torch.Tensor):
        return f"{str(x.dtype).replace('torch.', '')} {tuple(x.shape)}"
    if isinstance(x, dict):
        return "dict(" + ", ".join(f"{k}: {describe(v)}" for k, v in x.items()) + ")"
    if isinstance(x, (tuple, list)):
        return "tuple(" + ", ".join(describe(v) for v in x) + ")"
    return type(x).__name__
