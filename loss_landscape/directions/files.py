"""Direction files: save, load, and check that a file fits a model.
"""

from __future__ import annotations

import dataclasses
import json

import h5py
import numpy as np
import torch

from loss_landscape._util import atomic_write
from loss_landscape.params import ParamVector
from loss_landscape.version import code_version
from loss_landscape.directions.spec import DIRECTION_FORMAT, DIRECTION_FORMAT_VERSION, DirectionSpec, Directions
from loss_landscape.errors import DirectionError


# ----------------------------------------------------------------------------------------------------------
# Direction files
# ----------------------------------------------------------------------------------------------------------

def save_directions(path: str, directions: Directions) -> None:
    """Writes a direction file in the original's layout plus what it never recorded.

    Layout: groups ``xdirection`` (and ``ydirection``) with datasets ``"0"`` ... ``"N-1"`` in
    parameter order, readable by the original tool; attributes on the root hold the spec, the
    tensor names and shapes, and a checksum of the values. Written to a temporary name first and
    renamed, so a crash never leaves half a file.
    """
    def write(tmp: str) -> None:
        with h5py.File(tmp, "w") as f:
            for group, vec in (("xdirection", directions.x), ("ydirection", directions.y)):
                if vec is None:
                    continue
                g = f.create_group(group)
                for i, t in enumerate(vec):
                    g.create_dataset(str(i), data=t.detach().cpu().numpy())
            f.attrs["format"] = DIRECTION_FORMAT
            f.attrs["format_version"] = DIRECTION_FORMAT_VERSION
            f.attrs["code_version"] = code_version()
            f.attrs["names"] = json.dumps(directions.x.names)
            f.attrs["shapes"] = json.dumps(directions.x.shapes)
            f.attrs["spec"] = json.dumps(dataclasses.asdict(directions.spec))
            f.attrs["directions_sha256"] = directions.sha256()

    atomic_write(path, write)


def load_directions(path: str) -> Directions:
    """Reads a direction file written by this tool or by the original one.

    Files of the original carry no names or spec: names are filled in later by `check_fits`
    from the model, and the spec says ``kind="file"``.
    """
    try:
        with h5py.File(path, "r") as f:
            if "xdirection" not in f:
                raise DirectionError(f"{path} is not a direction file: it has no 'xdirection' group")
            xs = _read_group(f["xdirection"], path)
            ys = _read_group(f["ydirection"], path) if "ydirection" in f else None
            names = json.loads(f.attrs["names"]) if "names" in f.attrs else [f"#{i}" for i in range(len(xs))]
            if "spec" in f.attrs:
                known = {fld.name for fld in dataclasses.fields(DirectionSpec)}  # a later version may add fields
                spec = DirectionSpec(**{k: v for k, v in json.loads(f.attrs["spec"]).items() if k in known})
            else:
                spec = DirectionSpec(kind="file", xnorm="", xignore="", two_d=ys is not None)
    except OSError as e:
        raise DirectionError(f"cannot read direction file {path}: {e}") from None
    if ys is not None and len(ys) != len(xs):
        raise DirectionError(f"{path}: xdirection has {len(xs)} tensors but ydirection has {len(ys)}")
    return Directions(ParamVector(names, xs), None if ys is None else ParamVector(names, ys), spec)


def _read_group(group: h5py.Group, path: str) -> list[torch.Tensor]:
    n = len(group)
    missing = [str(i) for i in range(n) if str(i) not in group]
    if missing:
        raise DirectionError(f"{path}: group {group.name} lacks dataset {missing[0]!r} (expected '0'..'{n - 1}')")
    return [torch.from_numpy(np.asarray(group[str(i)][()])) for i in range(n)]


def check_fits(directions: Directions, weights: ParamVector, *, where: str = "direction file") -> None:
    """Refuses directions that do not fit the model, naming the first mismatching tensor.

    Also replaces placeholder names (files of the original tool) by the model's names.
    """
    n_dir, n_model = len(directions.x), len(weights)
    for vec in (directions.x, directions.y):
        if vec is None:
            continue
        for i, (name, t) in enumerate(zip(weights.names, weights)):
            if i >= len(vec):
                break
            if tuple(vec[i].shape) != tuple(t.shape):
                raise DirectionError(
                    f"{where} does not fit the model: tensor {i} ({name!r}) has shape {tuple(vec[i].shape)} "
                    f"in the file but {tuple(t.shape)} in the model")
    if n_dir != n_model:
        name = weights.names[n_dir] if n_dir < n_model else f"#{n_model}"
        raise DirectionError(
            f"{where} does not fit the model: it has {n_dir} tensors, the model has {n_model} "
            f"(first unmatched: {name!r}); was it made with the other --dir_type?")
    for vec in (directions.x, directions.y):
        if vec is not None and any(n.startswith("#") for n in vec.names):
            vec.names = list(weights.names)
