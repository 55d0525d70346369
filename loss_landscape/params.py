"""One parameter-vector abstraction: a named list of tensors shaped like a model's weights or state.

Directions, model snapshots and the live weights of a model are all `ParamVector`s, so the
arithmetic the paper needs (dot products, norms, axpy, filter normalization) has one home.
In-place operations carry PyTorch's trailing underscore and return nothing.
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import torch
from torch import nn

DIR_TYPES = ("weights", "states")


class ParamVector:
    """An ordered list of named tensors.

    Args:
        names: one name per tensor (``model.named_parameters()`` or ``state_dict()`` keys).
        tensors: the tensors; they are held, not copied, so a vector built from a model's
            live parameters writes straight into the model.

    Example:
        >>> v = ParamVector.from_model(nn.Linear(3, 2), "weights")
        >>> v.names
        ['weight', 'bias']
    """

    def __init__(self, names: Sequence[str], tensors: Sequence[torch.Tensor]):
        if len(names) != len(tensors):
            raise ValueError(f"{len(names)} names for {len(tensors)} tensors")
        self.names = list(names)
        self.tensors = list(tensors)

    @classmethod
    def from_model(cls, model: nn.Module, dir_type: str) -> "ParamVector":
        """Views of a model's live tensors: parameters (``weights``) or the full state dict (``states``).

        The order is the one the original tool used: ``model.parameters()`` for weights,
        ``state_dict()`` for states (BN running statistics and ``num_batches_tracked`` included).
        """
        if dir_type == "weights":
            named = [(n, p.data) for n, p in model.named_parameters()]
        elif dir_type == "states":
            named = list(model.state_dict(keep_vars=False).items())
        else:
            raise ValueError(f"unknown dir_type {dir_type!r}: expected one of {', '.join(DIR_TYPES)}")
        return cls([n for n, _ in named], [t for _, t in named])

    def __len__(self) -> int:
        return len(self.tensors)

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter(self.tensors)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.tensors[i]

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        return [tuple(t.shape) for t in self.tensors]

    def numel(self) -> int:
        return sum(t.numel() for t in self.tensors)

    def clone(self) -> "ParamVector":
        return ParamVector(self.names, [t.detach().clone() for t in self.tensors])

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "ParamVector":
        """A copy on `device`; floating tensors are cast to `dtype` when given, integer ones kept."""
        out = []
        for t in self.tensors:
            cast = dtype if (dtype is not None and t.is_floating_point()) else t.dtype
            out.append(t.detach().to(device=device, dtype=cast, copy=True))
        return ParamVector(self.names, out)

    def floating(self) -> list[int]:
        """Indices of the floating-point tensors (integer buffers such as num_batches_tracked never move)."""
        return [i for i, t in enumerate(self.tensors) if t.is_floating_point()]

    def dot(self, other: "ParamVector") -> float:
        """Inner product, accumulated in float64."""
        self._check_compatible(other)
        return float(sum((a.detach().double() * b.detach().double()).sum() for a, b in zip(self, other)))

    def norm(self) -> float:
        """Euclidean norm over all entries, in float64."""
        return math.sqrt(self.dot(self))

    def cosine(self, other: "ParamVector") -> float:
        """Cosine similarity; NaN when either vector is zero."""
        denom = self.norm() * other.norm()
        return self.dot(other) / denom if denom > 0 else float("nan")

    def add_(self, other: "ParamVector", alpha: float = 1.0) -> None:
        """self += alpha * other, tensor by tensor."""
        self._check_compatible(other)
        for a, b in zip(self, other):
            a.add_(b.to(a.dtype), alpha=alpha)

    def mul_(self, scalar: float) -> None:
        for a in self:
            a.mul_(scalar)

    def copy_(self, other: "ParamVector") -> None:
        self._check_compatible(other)
        for a, b in zip(self, other):
            a.copy_(b)

    def sub(self, other: "ParamVector") -> "ParamVector":
        """self - other, in each tensor's own dtype (as the original's model differences)."""
        self._check_compatible(other)
        return ParamVector(self.names, [a.detach() - b.detach().to(a.device) for a, b in zip(self, other)])

    def _check_compatible(self, other: "ParamVector") -> None:
        if len(self) != len(other):
            raise ValueError(f"vectors differ in length: {len(self)} versus {len(other)} tensors")
        for i, (a, b) in enumerate(zip(self, other)):
            if a.shape != b.shape:
                raise ValueError(f"tensor {i} ({self.names[i]}) has shape {tuple(a.shape)} "
                                 f"versus {tuple(b.shape)}")
