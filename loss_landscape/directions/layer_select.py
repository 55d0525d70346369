"""``--layers GLOB...``: directions restricted to the tensors of some layers (a block, the classifier head).

A glob matches a state-dict name by `fnmatch`, or a prefix of it at a ``.`` boundary, so ``layer3``, ``layer3.*``
and ``layer3.0.conv1.weight`` all work. The restricted direction is the full one with every other tensor zeroed:
filter normalization is per tensor, so this is the same as normalizing only the selected tensors.

Example:
    >>> match_layers(["conv1.weight", "layer3.0.conv1.weight", "linear.weight"], ["layer3", "linear.*"])
    [False, True, True]
"""

from __future__ import annotations

import fnmatch
from typing import Sequence

import torch

from loss_landscape.params import ParamVector

__all__ = ["match_layers", "restrict"]


def _matches(name: str, glob: str) -> bool:
    if fnmatch.fnmatchcase(name, glob):
        return True
    parts = name.split(".")
    return any(fnmatch.fnmatchcase(".".join(parts[:k]), glob) for k in range(1, len(parts)))


def match_layers(names: Sequence[str], globs: Sequence[str]) -> list[bool]:
    """For each name, whether any glob selects it; a glob that selects nothing raises ValueError naming it and the
    model's top-level modules."""
    if not globs:
        raise ValueError("no layer globs given")
    keep = [False] * len(names)
    for glob in globs:
        hit = [_matches(n, glob) for n in names]
        if not any(hit):
            tops = sorted({n.split(".")[0] for n in names})
            shown = ", ".join(tops[:12]) + (", ..." if len(tops) > 12 else "")
            raise ValueError(f"{glob!r} matches no tensor of the model; its modules are {shown} (names as in "
                             f"state_dict(), e.g. {names[0] if names else '?'})")
        keep = [k or h for k, h in zip(keep, hit)]
    return keep


def restrict(vec: ParamVector, keep: Sequence[bool]) -> ParamVector:
    """A copy of the direction `vec` with the tensors not kept set to zero."""
    if len(keep) != len(vec.names):
        raise ValueError(f"{len(keep)} flags for {len(vec.names)} tensors")
    return ParamVector(vec.names, [t.detach().clone() if k else torch.zeros_like(t) for t, k in zip(vec, keep)])
