"""Coarse-to-fine order of grid points: after 1/64, 1/16 and 1/4 of the work a regular sub-grid is complete.

Along an axis of n points the sub-grid of stride s holds every s-th index and the last one (so it spans the
whole range): for 51 points and s = 8, indices 0, 8, ..., 48 and 50. A point of a 2D grid is in the sub-grid of
stride s when both its indices are. Points are handed out stride 8 first, then the points stride 4 adds, then
stride 2, then the rest, each level in raster order; a run stopped at any moment holds the finest complete
sub-grid its share of the work allows, and a resumed run goes on in the same order. Pure numpy.

Example:
    >>> axis_indices(11, 4).tolist()
    [0, 4, 8, 10]
    >>> coarse_to_fine((3,)).tolist()       # stride 8 of 3 points is {0, 2}; then 1
    [0, 2, 1]
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

STRIDES = (8, 4, 2, 1)
__all__ = ["STRIDES", "axis_indices", "point_levels", "coarse_to_fine", "complete_stride"]


def axis_indices(n: int, stride: int) -> np.ndarray:
    """The indices of the stride-`stride` sub-grid of an axis of `n` points: 0, s, 2s, ... and n - 1."""
    if n < 1 or stride < 1:
        raise ValueError(f"an axis needs n >= 1 and stride >= 1, got n={n} stride={stride}")
    idx = np.arange(0, n, stride)
    return idx if idx[-1] == n - 1 else np.append(idx, n - 1)


def _axis_levels(n: int) -> np.ndarray:
    """For each index, the position in STRIDES of the coarsest sub-grid holding it (0: stride 8, ... 3: all)."""
    level = np.full(n, len(STRIDES) - 1, dtype=np.int64)
    for k in range(len(STRIDES) - 1, -1, -1):
        level[axis_indices(n, STRIDES[k])] = k
    return level


def point_levels(shape: Sequence[int]) -> np.ndarray:
    """The level (index into STRIDES) of every point, flattened in the grid's flat order.

    `shape` is (nx,) in 1D or (ny, nx) in 2D, the order of the surface file's values (flat = j * nx + i).
    """
    if len(shape) == 1:
        return _axis_levels(int(shape[0]))
    if len(shape) == 2:
        ly, lx = _axis_levels(int(shape[0])), _axis_levels(int(shape[1]))
        return np.maximum.outer(ly, lx).ravel()
    raise ValueError(f"a grid has 1 or 2 axes, got shape {tuple(shape)}")


def coarse_to_fine(shape: Sequence[int]) -> np.ndarray:
    """All flat indices of a grid of `shape`, coarse sub-grids first (each level in raster order)."""
    return np.argsort(point_levels(shape), kind="stable")


def complete_stride(done: np.ndarray) -> Optional[int]:
    """The smallest stride of STRIDES whose sub-grid is wholly done in the boolean mask `done` ((nx,) or
    (ny, nx)); 1 when every point is done, None when not even the stride-8 sub-grid is."""
    done = np.asarray(done, dtype=bool)
    for s in reversed(STRIDES):
        if done[np.ix_(*[axis_indices(n, s) for n in done.shape])].all():
            return s
    return None
