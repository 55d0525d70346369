"""The HDF5 surface file: its schema, creation, resume checks, crash-safe writes, and reading.

Schema (format_version 1), readable by the original tool's scripts:

- ``xcoordinates`` (nx,) and, for 2D, ``ycoordinates`` (ny,): float64 ``np.linspace``.
- ``train_loss``, ``train_acc`` (and ``test_loss``, ``test_acc``): float64, accuracy in percent.
  1D: shape (nx,). 2D: shape (ny, nx), **row j, column i holds the value at (x[i], y[j])**, the
  ``np.meshgrid(x, y)`` order, so ``contour(*np.meshgrid(x, y), Z)`` is right for any grid (the
  original declared (nx, ny) and filled in meshgrid order, which scrambled non-square grids).
- ``max_eig``, ``min_eig`` (written by ``plot_hessian_eigen.py`` instead of the losses): the largest and
  smallest eigenvalue of the Hessian of the mean loss at each point; same shapes, float64.
- ``train_done``, ``test_done``, ``eig_done``: uint8 masks, 1 where the point's values are written. There
  is no sentinel: a loss of 0 or NaN is a real value; unwritten points hold NaN.
- ``dir_file``: the direction file's path (scalar string, as in the original).
- root attributes: ``format``, ``format_version``, the job (grid, direction checksum, model and
  its checksum, dataset and split, loss, precision, BN recalibration) and provenance (code
  version, files, world sizes of the runs).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Iterable, Optional

import h5py
import numpy as np

from version import code_version

FORMAT = "loss-landscape surface"
FORMAT_VERSION = 1
# Each group of values is written together and has one done mask, ``<group>_done``.
GROUP_DATASETS = {"train": ("train_loss", "train_acc"), "test": ("test_loss", "test_acc"),
                  "eig": ("max_eig", "min_eig")}
GROUPS = tuple(GROUP_DATASETS)


class SurfaceError(ValueError):
    """A surface file that cannot be used as asked; the message is one line."""


@dataclass(frozen=True)
class Axis:
    """One grid axis: `num` evenly spaced points from `min` to `max`, ends included."""

    min: float
    max: float
    num: int

    @classmethod
    def parse(cls, text: str) -> "Axis":
        """Parses ``MIN:MAX:NUM`` such as ``-1:1:51``; raises ValueError saying what was expected."""
        parts = str(text).split(":")
        if len(parts) != 3:
            raise ValueError(f"expected MIN:MAX:NUM such as -1:1:51, got {text!r}")
        try:
            lo, hi = float(parts[0]), float(parts[1])
        except ValueError:
            raise ValueError(f"MIN and MAX must be numbers in MIN:MAX:NUM, got {text!r}") from None
        try:
            num = int(parts[2])
        except ValueError:
            raise ValueError(f"NUM must be a whole number in MIN:MAX:NUM, got {text!r}") from None
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError(f"MIN and MAX must be finite, got {text!r}")
        if num < 2:
            raise ValueError(f"NUM must be at least 2 in MIN:MAX:NUM, got {num} in {text!r}")
        if hi <= lo:
            raise ValueError(f"MAX must be greater than MIN in MIN:MAX:NUM, got {text!r}")
        return cls(lo, hi, num)

    def coordinates(self) -> np.ndarray:
        return np.linspace(self.min, self.max, self.num)

    def __str__(self) -> str:
        return f"{self.min:g}:{self.max:g}:{self.num}"


@dataclass(frozen=True)
class Grid:
    """A 1D (y is None) or 2D grid of coordinates; points are numbered row-major over `shape`."""

    x: Axis
    y: Optional[Axis] = None

    @property
    def ndim(self) -> int:
        return 1 if self.y is None else 2

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.x.num,) if self.y is None else (self.y.num, self.x.num)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def index(self, flat: int) -> tuple[int, ...]:
        """Array index of point `flat`: (i,) in 1D, (j, i) in 2D (row j is y[j])."""
        return tuple(int(k) for k in np.unravel_index(flat, self.shape))

    def coords(self, flat: int) -> tuple[float, ...]:
        """Coordinates (a,) or (a, b) of point `flat`, as float64 from the linspace."""
        idx = self.index(flat)
        if self.y is None:
            return (float(self.x.coordinates()[idx[0]]),)
        return (float(self.x.coordinates()[idx[1]]), float(self.y.coordinates()[idx[0]]))


@dataclass(frozen=True)
class SurfaceJob:
    """What a surface file holds values of. Reopening it for a different job is refused."""

    grid: Grid
    directions_sha256: str
    dir_type: str
    model: str
    model_sha256: str
    dataset: str
    data_split: int = 1
    split_idx: int = 0
    raw_data: bool = False
    loss_name: str = "crossentropy"
    precision: str = "fp32"
    bn_recalibrate: int = 0
    hessian: str = ""  # eigenvalue maps: how the eigenvalues are computed (set, parameters, tolerance)

    def attrs(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k != "grid"}
        out["x"] = str(self.grid.x)
        out["y"] = "" if self.grid.y is None else str(self.grid.y)
        return out


@dataclass
class Provenance:
    """Facts about how the file was made that do not change its values."""

    dir_file: str = ""
    model_file: str = ""
    world_size: int = 1
    batch_size: int = 0
    device: str = "cpu"
    extra: dict = field(default_factory=dict)


def _differences(found: dict, wanted: dict) -> list[str]:
    diffs = []
    for key, want in wanted.items():
        have = found.get(key)
        if isinstance(want, float) or isinstance(have, float):
            same = have is not None and float(have) == float(want)
        else:
            same = str(have) == str(want)
        if not same:
            diffs.append(f"{key} is {have!r} in the file but {want!r} now")
    return diffs


class SurfaceFile:
    """A surface file opened for writing by one process (rank 0).

    Values are buffered and written by `flush`: first the values, an HDF5 flush, then the done
    flags and another flush, so a crash at any moment leaves only points whose values are on disk
    marked done. Datasets are contiguous and allocated at creation, so later writes never change the
    file's structure.
    """

    def __init__(self, path: str, handle: h5py.File, job: SurfaceJob):
        self.path = path
        self._f = handle
        self.job = job
        self._buffer: dict[int, dict[str, tuple[float, ...]]] = {}
        self._done = {g: np.asarray(handle[f"{g}_done"][()]).astype(bool) for g in GROUPS if f"{g}_done" in handle}

    # -- opening ------------------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str, job: SurfaceJob, groups: Iterable[str], provenance: Provenance) -> "SurfaceFile":
        """Creates the file, or reopens it to resume the same job (refusing a different one)."""
        groups = list(groups)
        bad = [g for g in groups if g not in GROUPS]
        if bad:
            raise SurfaceError(f"unknown value group {bad[0]!r}: expected one of {', '.join(GROUPS)}")
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise SurfaceError(f"cannot write surface file {path}: folder {folder} does not exist")
        if not os.access(folder, os.W_OK):
            raise SurfaceError(f"cannot write surface file {path}: folder {folder} is not writable")
        if not os.path.exists(path):
            cls._create(path, job, provenance)
        try:
            handle = h5py.File(path, "r+")
        except OSError as e:
            raise SurfaceError(f"cannot open surface file {path} for writing: {e}") from None
        try:
            cls._check_job(path, handle, job)
            for g in groups:
                if f"{g}_done" not in handle:
                    cls._add_group(handle, g, job.grid)
            runs = json.loads(handle.attrs.get("runs", "[]"))
            runs.append({"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "world_size": provenance.world_size,
                         "batch_size": provenance.batch_size, "device": provenance.device,
                         "code_version": code_version()})
            handle.attrs["runs"] = json.dumps(runs)
            handle.flush()
        except BaseException:
            handle.close()
            raise
        return cls(path, handle, job)

    @staticmethod
    def _create(path: str, job: SurfaceJob, provenance: Provenance) -> None:
        tmp = f"{path}.tmp{os.getpid()}"
        try:
            with h5py.File(tmp, "w") as f:
                f.attrs["format"] = FORMAT
                f.attrs["format_version"] = FORMAT_VERSION
                f.attrs["code_version"] = code_version()
                f.attrs["created"] = time.strftime("%Y-%m-%dT%H:%M:%S")
                f.attrs["ndim"] = job.grid.ndim
                f.attrs["orientation"] = ("1D: value[i] at x[i]" if job.grid.ndim == 1 else
                                          "2D: value[j, i] at (x[i], y[j]), rows are y (np.meshgrid order)")
                for key, value in job.attrs().items():
                    f.attrs[key] = value
                f.attrs["model_file"] = provenance.model_file
                for key, value in provenance.extra.items():
                    f.attrs[key] = value
                f["dir_file"] = provenance.dir_file
                f.create_dataset("xcoordinates", data=job.grid.x.coordinates())
                if job.grid.y is not None:
                    f.create_dataset("ycoordinates", data=job.grid.y.coordinates())
        except OSError as e:
            raise SurfaceError(f"cannot create surface file {path}: {e}") from None
        os.replace(tmp, path)

    @staticmethod
    def _add_group(f: h5py.File, group: str, grid: Grid) -> None:
        for name in GROUP_DATASETS[group]:
            f.create_dataset(name, data=np.full(grid.shape, np.nan), dtype="f8")
        f.create_dataset(f"{group}_done", data=np.zeros(grid.shape, dtype=np.uint8))

    @staticmethod
    def _check_job(path: str, f: h5py.File, job: SurfaceJob) -> None:
        if f.attrs.get("format") != FORMAT:
            raise SurfaceError(f"{path} exists but is not a surface file of this tool (written by the original "
                               f"tool?); choose another --surf_file or move it away")
        version = int(f.attrs.get("format_version", -1))
        if version != FORMAT_VERSION:
            raise SurfaceError(f"{path} has format_version {version}; this code writes {FORMAT_VERSION}")
        # An attribute added to the job after a file was made reads as its default (files stay resumable).
        defaults = {f.name: f.default for f in fields(SurfaceJob) if f.default is not MISSING}
        found = {k: f.attrs.get(k, defaults.get(k)) for k in job.attrs()}
        diffs = _differences(found, job.attrs())
        if diffs:
            raise SurfaceError(f"{path} holds a different job ({'; '.join(diffs)}): use another --surf_file "
                               f"or delete it to start over")

    # -- progress -----------------------------------------------------------------------------------------

    def pending(self, groups: Iterable[str]) -> list[tuple[int, tuple[str, ...]]]:
        """Points still missing for any of `groups`, each with the groups it lacks, in order."""
        groups = list(groups)
        out = []
        flat_done = {g: self._done[g].ravel() for g in groups}
        for flat in range(self.job.grid.size):
            need = tuple(g for g in groups if not flat_done[g][flat])
            if need:
                out.append((flat, need))
        return out

    def done_count(self, group: str) -> int:
        return int(self._done[group].sum())

    # -- writing ------------------------------------------------------------------------------------------

    def write(self, flat: int, values: dict[str, tuple[float, ...]]) -> None:
        """Buffers the values of each group for point `flat` (``{"train": (loss, acc)}``,
        ``{"eig": (max_eig, min_eig)}``, in `GROUP_DATASETS` order); on disk after the next `flush`."""
        self._buffer.setdefault(int(flat), {}).update(values)

    def flush(self) -> int:
        """Writes buffered points crash-safely (values, flush, done flags, flush); returns how many."""
        if not self._buffer:
            return 0
        items = sorted(self._buffer.items())
        for flat, values in items:
            idx = self.job.grid.index(flat)
            for g, vals in values.items():
                for name, v in zip(GROUP_DATASETS[g], vals, strict=True):
                    self._f[name][idx] = v
        self._f.flush()
        for flat, values in items:
            idx = self.job.grid.index(flat)
            for g in values:
                self._f[f"{g}_done"][idx] = 1
                self._done[g][idx] = True
        self._f.flush()
        self._buffer.clear()
        return len(items)

    def close(self) -> None:
        if self._f.id.valid:
            self.flush()
            self._f.close()

    def __enter__(self) -> "SurfaceFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ----------------------------------------------------------------------------------------------------------
# Reading (for plots and exports; no plotting code touches h5py)
# ----------------------------------------------------------------------------------------------------------

@dataclass
class Surface:
    """Plain arrays read from a surface file of this tool or of the original one.

    ``values[name]`` has shape (nx,) in 1D and (ny, nx) in 2D with [j, i] at (x[i], y[j]);
    points not computed are NaN.
    """

    path: str
    x: np.ndarray
    y: Optional[np.ndarray]
    values: dict
    attrs: dict
    original_layout: bool = False

    @property
    def ndim(self) -> int:
        return 1 if self.y is None else 2


def read_surface(path: str) -> Surface:
    """Reads every surface quantity of `path` into memory.

    Files of the original tool have no done masks and use -1 for points never computed: those
    loss and accuracy values are read as NaN (a square grid's orientation is the same as ours).
    """
    try:
        with h5py.File(path, "r") as f:
            if "xcoordinates" not in f:
                raise SurfaceError(f"{path} is not a surface file: it has no 'xcoordinates'")
            x = np.asarray(f["xcoordinates"][()], dtype=float)
            y = np.asarray(f["ycoordinates"][()], dtype=float) if "ycoordinates" in f else None
            ours = f.attrs.get("format") == FORMAT
            values = {}
            group_of = {name: g for g, names in GROUP_DATASETS.items() for name in names}
            for name in f:
                if name.endswith(("_loss", "_acc", "_eig")) and isinstance(f[name], h5py.Dataset):
                    arr = np.array(f[name][()], dtype=float)
                    done = f"{group_of.get(name, name.split('_')[0])}_done"
                    if ours and done in f:
                        arr[np.asarray(f[done][()]) == 0] = np.nan
                    elif not ours and name.endswith(("_loss", "_acc")):
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
    except OSError as e:
        raise SurfaceError(f"cannot read surface file {path}: {e}") from None
    return Surface(path, x, y, values, attrs, original_layout=not ours)


def job_field_names() -> list[str]:
    return [f.name for f in fields(SurfaceJob)]
