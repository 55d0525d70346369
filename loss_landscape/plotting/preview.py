"""A preview of a surface still being computed: each quantity drawn from its complete coarse sub-grid.

Points are computed coarse to fine (`surface.order`), so a partial file holds every 8th, 4th or 2nd point in each
direction. `preview_surface` replaces each incomplete quantity by the (bi)linear interpolation of its finest
complete sub-grid; at the sub-grid's points the values are the computed ones, exactly. A quantity without even
the stride-8 sub-grid is left as it is (its missing points are gaps).

Example:
    >>> import numpy as np
    >>> from loss_landscape.surface.reader import Surface
    >>> x = np.linspace(-1, 1, 5); z = x ** 2; done = np.array([1, 0, 1, 0, 1], bool)
    >>> s = Surface("s.h5", x, None, {"train_loss": np.where(done, z, np.nan)}, {}, computed={"train_loss": done})
    >>> p, note = preview_surface(s)
    >>> p.values["train_loss"].tolist(), note
    ([1.0, 0.5, 0.0, 0.5, 1.0], 'preview: 3 of 5 points computed; every 2nd point drawn, interpolated')
"""

from __future__ import annotations

import dataclasses

import numpy as np

from loss_landscape.surface.order import axis_indices, complete_stride
from loss_landscape.surface.reader import Surface

__all__ = ["interpolate_subgrid", "preview_surface"]


def interpolate_subgrid(coords: list[np.ndarray], values: np.ndarray, stride: int) -> np.ndarray:
    """`values` on the whole grid, linearly interpolated (separably: bilinear in 2D) from its stride-`stride`
    sub-grid. `coords` are the axes in the array's order: [x] in 1D, [y, x] in 2D."""
    idx = [axis_indices(len(c), stride) for c in coords]
    out = np.asarray(values, dtype=float)[np.ix_(*idx)]
    for axis, (c, i) in enumerate(zip(coords, idx)):
        out = np.apply_along_axis(lambda v: np.interp(c, c[i], v), axis, out)
    return out


def _ordinal(n: int) -> str:
    return {1: "1st", 2: "2nd", 3: "3rd"}.get(n, f"{n}th")


def preview_surface(surface: Surface) -> tuple[Surface, str]:
    """(`surface` with its incomplete quantities interpolated from their complete sub-grids, a one-line note for
    the title); the note is empty and the surface unchanged when nothing is missing or no sub-grid is complete."""
    coords = [surface.x] if surface.y is None else [surface.y, surface.x]
    values, shown = dict(surface.values), []
    for name, done in surface.computed.items():
        done = np.asarray(done, dtype=bool)
        if name not in values or done.all():
            continue
        stride = complete_stride(done)
        if stride is None:
            continue
        values[name] = interpolate_subgrid(coords, values[name], stride)
        shown.append((int(done.sum()), done.size, stride))
    if not shown:
        return surface, ""
    if "eig_ratio" in values and "max_eig" in surface.computed and "min_eig" in surface.computed:
        with np.errstate(divide="ignore", invalid="ignore"):
            values["eig_ratio"] = np.abs(values["min_eig"] / values["max_eig"])
    count, total, stride = min(shown)
    note = f"preview: {count} of {total} points computed; every {_ordinal(stride)} point drawn, interpolated"
    return dataclasses.replace(surface, values=values), note

