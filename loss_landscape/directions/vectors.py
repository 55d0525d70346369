"""Random and target directions and their normalization (filter, layer, weight), operation for operation
as in the original tool, in float32.
"""

from __future__ import annotations


import numpy as np
import torch

from loss_landscape.params import ParamVector
from loss_landscape.directions.spec import IGNORES, NORMS
from loss_landscape.errors import DirectionError


# ----------------------------------------------------------------------------------------------------------
# Normalization
# ----------------------------------------------------------------------------------------------------------

def normalize_tensor_(d: torch.Tensor, w: torch.Tensor, norm: str) -> None:
    """Rescales one direction tensor `d` (dim > 1) against the weights `w`, in place.

    ``filter``: each slice d[i] along dim 0 (an output filter or neuron) gets the norm of w[i];
    ``layer``: the tensor gets the norm of w; ``weight``: d * w elementwise; ``dfilter``: each
    filter of d gets unit norm; ``dlayer``: d gets unit norm; ``""``: unchanged. The 1e-10 guards
    and the float32 scalar arithmetic are the original tool's.
    """
    if norm == "filter":
        for di, wi in zip(d, w):
            di.mul_(wi.norm() / (di.norm() + 1e-10))
    elif norm == "layer":
        d.mul_(w.norm() / d.norm())
    elif norm == "weight":
        d.mul_(w)
    elif norm == "dfilter":
        for di in d:
            di.div_(di.norm() + 1e-10)
    elif norm == "dlayer":
        d.div_(d.norm())
    elif norm != "":
        raise DirectionError(f"unknown norm {norm!r}: expected one of {', '.join(n or repr(n) for n in NORMS)}")


def normalize_direction_(direction: ParamVector, weights: ParamVector, *, norm: str, ignore: str) -> None:
    """Normalizes a whole direction in place against `weights`.

    Tensors with dim <= 1 (biases, BN weights and running statistics) are zeroed when
    ``ignore == "biasbn"``; otherwise they become a copy of the weights, as in the original tool,
    so that a step a scales them by (1 + a). Tensors with dim > 1 go through `normalize_tensor_`.

    Example:
        >>> w = ParamVector.from_model(torch.nn.Linear(4, 3), "weights")
        >>> d = ParamVector(w.names, [torch.randn(t.shape) for t in w])
        >>> normalize_direction_(d, w, norm="filter", ignore="biasbn")
        >>> float(d[1].abs().sum())
        0.0
    """
    if ignore not in IGNORES:
        raise DirectionError(f"unknown ignore {ignore!r}: expected 'biasbn' or ''")
    for d, w in zip(direction, weights):
        if d.dim() <= 1:
            if ignore == "biasbn":
                d.fill_(0)
            else:
                d.copy_(w)
        else:
            normalize_tensor_(d, w, norm)


def direction_generator(seed: int, idx: int) -> torch.Generator:
    """The CPU generator for random directions number `idx` of a run seeded with `seed`.

    Different `idx` values give independent streams (unlike the original, where --idx only
    changed a file name); idx 0 is plain ``torch.manual_seed(seed)``.
    """
    g = torch.Generator(device="cpu")
    if idx == 0:
        g.manual_seed(seed)
    else:
        g.manual_seed(int(np.random.SeedSequence([seed, idx]).generate_state(1, dtype=np.uint64)[0]))
    return g


def create_random_direction(weights: ParamVector, *, norm: str = "filter", ignore: str = "biasbn",
                            generator: torch.Generator) -> ParamVector:
    """A Gaussian direction shaped like `weights`, normalized against them.

    Drawn on the CPU in float32 so the same seed gives the same direction on any device.

    Example:
        >>> w = ParamVector.from_model(torch.nn.Linear(4, 3), "weights")
        >>> d = create_random_direction(w, generator=direction_generator(123, 0))
        >>> d.shapes == w.shapes
        True
    """
    cpu_w = weights.to("cpu")
    d = ParamVector(cpu_w.names, [torch.randn(w.shape, generator=generator) for w in cpu_w])
    normalize_direction_(d, cpu_w, norm=norm, ignore=ignore)
    return d


def create_target_direction(base: ParamVector, target: ParamVector) -> ParamVector:
    """target - base, not normalized (so a step of 1 lands exactly on the target model)."""
    if base.names != target.names:
        for a, b in zip(base.names, target.names):
            if a != b:
                raise DirectionError(f"the two models differ: parameter {a!r} versus {b!r}")
        raise DirectionError(f"the two models differ: {len(base)} versus {len(target)} tensors")
    return target.to("cpu").sub(base.to("cpu"))
