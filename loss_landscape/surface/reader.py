"""Reading a surface file (ours or the original tool's) into plain arrays, for plots and exports.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Optional

import h5py
import numpy as np

from loss_landscape.errors import SurfaceError
from loss_landscape.surface.storage import h5_reason, open_hdf5
from loss_landscape.surface.grid import FORMAT, GROUP_DATASETS


# ----------------------------------------------------------------------------------------------------------
# Reading (for plots and exports; no plotting code touches h5py)
# ----------------------------------------------------------------------------------------------------------

@dataclass
class Surface:
    """Plain arrays read from a surface file of this tool or of the original one.

    ``values[name]`` has shape (nx,) in 1D and (ny, nx) in 2D with [j, i] at (x[i], y[j]);
    points not computed are NaN. ``computed[name]`` is the boolean mask of the points computed (from the file's done
    flags; absent for the original's files), which tells a diverged NaN from a point not reached yet.
    """

    path: str
    x: np.ndarray
    y: Optional[np.ndarray]
    values: dict
    attrs: dict
    original_layout: bool = False
    computed: dict = field(default_factory=dict)

    @property
    def ndim(self) -> int:
        return 1 if self.y is None else 2


def file_groups(f: h5py.File) -> dict[str, tuple[str, ...]]:
    """{group: its value datasets} of every done mask in `f`: from the mask's ``datasets`` attribute, or the fixed
    groups of files made before it (`GROUP_DATASETS`)."""
    out = {}
    for name in f:
        if not name.endswith("_done") or not isinstance(f[name], h5py.Dataset):
            continue
        group = name[: -len("_done")]
        listed = f[name].attrs.get("datasets")
        if listed is not None:
            try:
                out[group] = tuple(json.loads(listed))
            except (TypeError, ValueError):
                out[group] = ()
        elif group in GROUP_DATASETS:
            out[group] = GROUP_DATASETS[group]
    return out


def read_surface(path: str) -> Surface:
    """Reads every surface quantity of `path` into memory.

    Files of the original tool have no done masks and use -1 for points never computed: those
    loss and accuracy values are read as NaN (a square grid's orientation is the same as ours).
    """
    with open_hdf5(path) as f:
        try:
            if "xcoordinates" not in f:
                raise SurfaceError(f"{path} is not a surface file: it has no 'xcoordinates'")
            x = np.asarray(f["xcoordinates"][()], dtype=float)
            y = np.asarray(f["ycoordinates"][()], dtype=float) if "ycoordinates" in f else None
            ours = f.attrs.get("format") == FORMAT
            values, computed = {}, {}
            if ours:
                # Every group's values, masked by its done flags (a group half made by an older version killed
                # while adding it has no mask: nothing of it was computed).
                for group, names in file_groups(f).items():
                    done = np.asarray(f[f"{group}_done"][()]) == 0
                    for name in names:
                        if name in f and isinstance(f[name], h5py.Dataset) and f[name].shape == done.shape:
                            arr = np.array(f[name][()], dtype=float)
                            arr[done] = np.nan
                            values[name], computed[name] = arr, ~done
            else:
                for name in f:
                    if name.endswith(("_loss", "_acc", "_eig")) and isinstance(f[name], h5py.Dataset):
                        arr = np.array(f[name][()], dtype=float)
                        if name.endswith(("_loss", "_acc")):
                            arr[arr == -1] = np.nan  # the original's "not computed" (no loss or accuracy is -1)
                        values[name] = arr
            if not ours and "max_eig" in values and "min_eig" in values:
                unset = values["max_eig"] == -1  # the original's Hessian script starts max_eig at -1
                values["max_eig"][unset] = np.nan
                values["min_eig"][unset] = np.nan
            if "max_eig" in values and "min_eig" in values:
                # Derived, not stored: the paper's measure of non-convexity, |lambda_min / lambda_max|.
                with np.errstate(divide="ignore", invalid="ignore"):
                    values["eig_ratio"] = np.abs(values["min_eig"] / values["max_eig"])
            attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
            if "dir_file" in f:
                d = f["dir_file"][()]
                attrs["dir_file"] = d.decode() if isinstance(d, bytes) else str(d)
        except (OSError, KeyError, RuntimeError) as e:
            raise SurfaceError(f"cannot read surface file {path}: {h5_reason(e)}") from None
    return Surface(path, x, y, values, attrs, original_layout=not ours, computed=computed)
