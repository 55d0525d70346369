"""``--layers GLOB...``: directions restricted to the tensors of some layers (a block, the classifier head).

A glob selects a state-dict name when `fnmatch` matches the whole name or one of its prefixes that ends at a
``.`` boundary, so ``layer3``, ``layer3.*`` and ``layer3.0.conv1.weight`` all select layer3's tensors, and
``linear`` the head's weight and bias. The restricted direction is the full one with every other tensor zeroed:
normalization is per tensor (filter, layer or weight), so this is the direction the selected tensors would get
if they were normalized alone. A tensor that is zero in every direction does not move, so the rest of the model
stays at the centre (and `speed.shortcut` computes the unmoved layers before the selection once).

Example:
    >>> names = ["conv1.weight", "layer3.0.conv1.weight", "linear.weight", "linear.bias"]
    >>> match_layers(names, ["layer3", "linear.w*"])
    [False, True, True, False]
"""

from __future__ import annotations

import fnmatch
from typing import Sequence

import torch

from loss_landscape.directions.spec import Directions
from loss_landscape.params import ParamVector

__all__ = ["match_layers", "restrict", "restrict_directions"]

_SHOWN = 12  # module prefixes listed in an error


def _selects(glob: str, name: str) -> bool:
    """Whether `glob` matches `name` or a prefix of it that ends before a '.'."""
    if fnmatch.fnmatchcase(name, glob):
        return True
    parts = name.split(".")
    return any(fnmatch.fnmatchcase(".".join(parts[:k]), glob) for k in range(1, len(parts)))


def _nearest_prefixes(glob: str, names: Sequence[str]) -> list[str]:
    """The module prefixes one level below the longest leading part of `glob` that still selects some name (the
    top-level modules when none does): ``layer3.7`` on ResNet-20 gives layer3.0, layer3.1, layer3.2."""
    parts = glob.split(".")
    for k in range(len(parts) - 1, -1, -1):
        head = ".".join(parts[:k])
        found = sorted({".".join(n.split(".")[:k + 1]) for n in names
                        if len(n.split(".")) > k and (k == 0 or fnmatch.fnmatchcase(".".join(n.split(".")[:k]), head))})
        # A prefix equal to a whole name is a tensor, not a module; list it only when nothing else is there.
        modules = [p for p in found if p not in set(names)] or found
        if modules:
            return modules
    return []


def match_layers(names: Sequence[str], globs: Sequence[str]) -> list[bool]:
    """For each name, whether some glob selects it (see the module's docstring).

    Args:
        names: state-dict names of the direction's tensors (``ParamVector.names``).
        globs: one or more patterns (``layer3``, ``layer3.*``, ``*.conv1.weight``, ``linear``).

    Returns:
        One flag per name.

    Raises:
        ValueError: no glob given, or a glob that selects no name (the message names it and lists module prefixes
            near it).

    Example:
        >>> match_layers(["layer1.0.conv1.weight", "layer3.0.conv1.weight"], ["layer3.*"])
        [False, True]
    """
    globs = list(globs)
    if not globs:
        raise ValueError("no layer glob given: expected one or more patterns such as layer3 or linear")
    keep = [False] * len(names)
    for glob in globs:
        hits = [_selects(glob, n) for n in names]
        if not any(hits):
            near = _nearest_prefixes(glob, names)
            shown = ", ".join(near[:_SHOWN]) + (f", ... ({len(near)} in all)" if len(near) > _SHOWN else "")
            raise ValueError(f"layer glob {glob!r} matches no tensor of the model: expected a state-dict name or a "
                             f"module prefix, such as {shown or '(the model has no tensors)'}")
        keep = [k or h for k, h in zip(keep, hits)]
    return keep


def restrict(vec: ParamVector, keep: Sequence[bool]) -> ParamVector:
    """A copy of the direction `vec` in which the tensors not kept are zero (the kept ones are copied).

    Example:
        >>> v = ParamVector(["a.weight", "b.weight"], [torch.ones(2), torch.ones(3)])
        >>> [float(t.sum()) for t in restrict(v, [False, True])]
        [0.0, 3.0]
    """
    if len(keep) != len(vec):
        raise ValueError(f"{len(keep)} flags for a direction of {len(vec)} tensors: expected one flag per tensor")
    return ParamVector(vec.names, [t.detach().clone() if k else torch.zeros_like(t) for t, k in zip(vec, keep)])


def restrict_directions(directions: Directions, globs: Sequence[str]) -> Directions:
    """`directions` with x (and y) restricted to the tensors `globs` select; the spec is kept as it is.

    Raises:
        ValueError: a glob selects nothing (`match_layers`), or the selected tensors are zero in x (the biases and
            BN tensors under ``ignore=biasbn``, say), which would give a flat surface.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
        >>> dirs = make_directions(net, DirectionSpec(two_d=True))
        >>> small = restrict_directions(dirs, ["1"])
        >>> float(small.x[0].abs().sum()), float(small.x[2].abs().sum()) > 0
        (0.0, True)
    """
    keep = match_layers(directions.x.names, globs)
    x = restrict(directions.x, keep)
    if not any(bool(t.any()) for t in x):
        chosen = [n for n, k in zip(x.names, keep) if k]
        raise ValueError(f"the layers {', '.join(globs)} select {', '.join(chosen[:_SHOWN])}"
                         f"{', ...' if len(chosen) > _SHOWN else ''}, all zero in the x direction (biases and BN "
                         f"tensors are zero under ignore=biasbn): expected a selection that moves")
    y = None if directions.y is None else restrict(directions.y, keep)
    return Directions(x, y, directions.spec)
