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
  is no sentinel: a loss of 0 or NaN is a real value; unwritten points hold NaN. Each mask's ``datasets``
  attribute lists the values it covers (``train_loss`` alone for a loss without accuracy).
- ``<set>_<metric>`` with ``<set>_<metric>_done`` (``train_top5``, ``test_perplexity``): one per ``--metric``;
  the mask's ``metric`` attribute records what computed it (``top5``, ``pkg.module:fn``).
- ``dir_file``: the direction file's path (scalar string, as in the original).
- root attributes: ``format``, ``format_version``, the job (grid, direction checksum, model and
  its checksum, dataset and split, loss, precision, BN recalibration: batches, batch size and sample
  count) and provenance (code version, files, and ``runs``: one entry per run that opened the file).

Crash consistency. HDF5 does not survive a kill in the middle of a change to its structure, so the
structure of a surface file is never changed in place: creating it, adding a value group and appending
to ``runs`` write a complete new version beside it and rename it over the old one (`surface.storage`), so
the file on disk is always the old version or the new one. Every dataset is contiguous and allocated when it is made; after that, `SurfaceFile.flush`
only overwrites raw data in place (values, fsync, then done flags, fsync).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import MISSING, fields
from typing import Iterable, Optional

import h5py
import numpy as np

from loss_landscape.errors import SurfaceError
from loss_landscape.surface.order import coarse_to_fine
from loss_landscape.surface.reader import Surface, file_groups
from loss_landscape.surface.storage import h5_reason, open_hdf5, remove_stale_temp_files, replace_with
from loss_landscape.version import code_version
from loss_landscape.surface.grid import (FORMAT, FORMAT_VERSION, GROUP_DATASETS, GROUPS, MAX_RUNS, Grid, Provenance,
                                         SurfaceJob, ValueGroup, _BN_FIELDS, _num)


def _show(v) -> str:
    if isinstance(v, bytes):
        v = v.decode()
    if isinstance(v, np.generic):
        v = v.item()
    return repr(v) if isinstance(v, str) else str(v)


def _differences(found: dict, wanted: dict) -> list[str]:
    diffs = []
    for key, want in wanted.items():
        have = found.get(key)
        if isinstance(want, float) or isinstance(have, float):
            same = have is not None and float(have) == float(want)
        else:
            same = _show(have) == _show(want)
        if not same:
            diffs.append(f"{key} is {_show(have)} in the file but {_show(want)} now")
    return diffs


def _axis_text(coords: Optional[np.ndarray]) -> str:
    if coords is None:
        return "none"
    if coords.size == 0:
        return "empty"
    return f"'{_num(coords[0])}:{_num(coords[-1])}:{coords.size}'"


def _grid_differences(f: h5py.File, grid: Grid) -> list[str]:
    """Stored coordinates against the grid's linspace, compared exactly (a :g string would hide 1e-7)."""
    diffs = []
    for key, name, axis in (("x", "xcoordinates", grid.x), ("y", "ycoordinates", grid.y)):
        have = np.asarray(f[name][()], dtype=float).ravel() if name in f else None
        want = None if axis is None else axis.coordinates()
        if have is None and want is None:
            continue
        if have is not None and want is not None and np.array_equal(have, axis.linspace()):
            continue  # a file made before the centre point was exactly 0 (it differs there by < 1e-15)
        if have is None or want is None or not np.array_equal(have, want):
            diffs.append(f"{key} is {_axis_text(have)} in the file but {_axis_text(want)} now")
    return diffs


def _runs(f: Optional[h5py.File]) -> list:
    if f is None or "runs" not in f.attrs:
        return []
    try:
        runs = json.loads(f.attrs["runs"])
    except (TypeError, ValueError):
        return []
    return runs if isinstance(runs, list) else []


def _legacy_bn(found: dict, wanted: dict, f: h5py.File) -> None:
    """Files made before the BN batch size and sample count were recorded: the batch size is read from the
    run history (every run records its own), and the sample count follows from it and the data."""
    if int(found.get("bn_recalibrate") or 0) <= 0:
        return
    sizes = sorted({int(r["batch_size"]) for r in _runs(f) if isinstance(r, dict) and "batch_size" in r})
    found["bn_batch_size"] = sizes[0] if len(sizes) == 1 else ("/".join(map(str, sizes)) or "unknown")
    found["bn_samples"] = wanted["bn_samples"]  # not recorded; equal whenever batches and batch size are


def _group_state(f: h5py.File, group: str, datasets: tuple[str, ...], grid: Grid) -> str:
    """``complete`` (values and mask of the grid's shape), ``absent``, or ``broken`` (half made by an older
    version killed while adding it, or otherwise unusable: dropped and made again)."""
    names = (*datasets, f"{group}_done")
    present = [n for n in names if n in f]
    if not present:
        return "absent"
    ok = bool(datasets) and len(present) == len(names) and all(isinstance(f[n], h5py.Dataset)
                                                              and f[n].shape == grid.shape for n in names)
    return "complete" if ok else "broken"


def _values_dataset(f: h5py.File, name: str, data: np.ndarray, dtype: str) -> h5py.Dataset:
    # Contiguous and written now, so its storage is allocated: later writes touch only its raw data.
    return f.create_dataset(name, data=np.ascontiguousarray(data, dtype=dtype), dtype=dtype, track_times=False)


def _mask(f: h5py.File, group: str, datasets: tuple[str, ...], done: np.ndarray, metric: str = "") -> None:
    d = _values_dataset(f, f"{group}_done", done, "u1")
    d.attrs["datasets"] = json.dumps(list(datasets))
    if metric:
        d.attrs["metric"] = metric


def _add_group(f: h5py.File, group: ValueGroup, grid: Grid) -> None:
    for name in group.datasets:
        _values_dataset(f, name, np.full(grid.shape, np.nan), "f8")
    _mask(f, group.name, group.datasets, np.zeros(grid.shape), group.metric)


def _new_version(new: h5py.File, old: Optional[h5py.File], job: SurfaceJob, groups: list[ValueGroup],
                 provenance: Provenance) -> list[str]:
    """Fills `new` with `old`'s contents (or a fresh file's), the job's attributes, the groups asked for and
    one more run in the history. Returns the groups that were broken and are dropped or made again."""
    broken = []
    if old is None:
        new.attrs["format"] = FORMAT
        new.attrs["format_version"] = FORMAT_VERSION
        new.attrs["code_version"] = code_version()
        new.attrs["created"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        new.attrs["ndim"] = job.grid.ndim
        new.attrs["orientation"] = ("1D: value[i] at x[i]" if job.grid.ndim == 1 else
                                    "2D: value[j, i] at (x[i], y[j]), rows are y (np.meshgrid order)")
        new.attrs["model_file"] = provenance.model_file
        for key, value in provenance.extra.items():
            new.attrs[key] = value
        new["dir_file"] = provenance.dir_file
        new.create_dataset("xcoordinates", data=job.grid.x.coordinates(), track_times=False)
        if job.grid.y is not None:
            new.create_dataset("ycoordinates", data=job.grid.y.coordinates(), track_times=False)
    else:
        for key, value in old.attrs.items():
            new.attrs[key] = value
        had = file_groups(old)
        for g in GROUPS:  # half-made fixed groups of older versions, without their mask
            if g not in had and any(n in old for n in GROUP_DATASETS[g]):
                had[g] = GROUP_DATASETS[g]
        in_groups = {n for g, names in had.items() for n in (*names, f"{g}_done")}
        for name in old:
            if name not in in_groups:
                old.copy(old[name], new, name=name)
        for g, names in had.items():
            state = _group_state(old, g, names, job.grid)
            if state == "broken":
                broken.append(g)
            elif state == "complete":
                for name in names:
                    _values_dataset(new, name, old[name][()], "f8")
                _mask(new, g, names, old[f"{g}_done"][()], str(old[f"{g}_done"].attrs.get("metric", "")))
    for key, value in job.attrs().items():  # exact grid text; fields recorded since the file was made
        new.attrs[key] = value
    for g in groups:
        if f"{g.name}_done" not in new:
            _add_group(new, g, job.grid)
    run = {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "world_size": provenance.world_size,
           "batch_size": provenance.batch_size, "device": provenance.device, "code_version": code_version(),
           **provenance.run}
    if broken:
        run["repaired"] = broken
    runs = _runs(old) + [run]
    if len(runs) > MAX_RUNS:  # keep the first run and the latest ones
        new.attrs["runs_omitted"] = int(new.attrs.get("runs_omitted", 0)) + len(runs) - MAX_RUNS
        runs = runs[:1] + runs[len(runs) - MAX_RUNS + 1:]
    new.attrs["runs"] = json.dumps(runs)
    return broken


class SurfaceFile:
    """A surface file opened for writing by one process (rank 0).

    Values are buffered and written by `flush`: first the values, an HDF5 flush and an fsync, then the
    done flags, a flush and an fsync, so a kill, a crash or a power failure at any moment leaves only
    points whose values are on disk marked done. The structure (datasets, attributes) is settled when
    the file is opened (see the module notes); flushes only overwrite allocated raw data.
    """

    def __init__(self, path: str, handle: h5py.File, job: SurfaceJob, repaired: Iterable[str] = ()):
        self.path = path
        self._f = handle
        self.job = job
        self.repaired = tuple(repaired)  # groups found half made (older versions) and made again
        self._buffer: dict[int, dict[str, tuple[float, ...]]] = {}
        self._datasets = file_groups(handle)
        # In-memory copies of what is on disk (one writer), so a flush writes whole blocks of rows.
        self._done = {g: np.asarray(handle[f"{g}_done"][()]).astype(bool) for g in self._datasets}
        self._values = {n: np.array(handle[n][()], dtype=float) for names in self._datasets.values() for n in names}

    # -- opening ------------------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str, job: SurfaceJob, groups: Iterable[str | ValueGroup],
             provenance: Provenance) -> "SurfaceFile":
        """Creates the file, or reopens it to resume the same job (refusing a different one).

        Each open writes a new version of the file atomically (adding groups, recording the run);
        a file of another program, a damaged one or one of another job is refused with one line and
        left unchanged. `groups` are `ValueGroup`s or the names of the fixed ones (`GROUP_DATASETS`).
        """
        bad = [g for g in groups if isinstance(g, str) and g not in GROUPS]
        if bad:
            raise SurfaceError(f"unknown value group {bad[0]!r}: expected one of {', '.join(GROUPS)}")
        groups = [ValueGroup.named(g) if isinstance(g, str) else g for g in groups]
        target = os.path.realpath(path)  # through a link, replace the file it points at
        folder = os.path.dirname(target)
        if not os.path.isdir(folder):
            raise SurfaceError(f"cannot write surface file {path}: folder {folder} does not exist")
        if not os.access(folder, os.W_OK):
            raise SurfaceError(f"cannot write surface file {path}: folder {folder} is not writable")
        remove_stale_temp_files(target)
        if not os.path.lexists(target):
            broken = replace_with(target, lambda new: _new_version(new, None, job, groups, provenance), shown=path)
        else:
            with open_hdf5(path, writing=True) as old:
                try:
                    cls._check_job(path, old, job)
                    cls._check_groups(path, old, groups)
                except (OSError, KeyError, RuntimeError) as e:
                    raise SurfaceError(f"{path} is a damaged surface file ({h5_reason(e)}): delete it or move "
                                       f"it away to start over (it was left unchanged)") from None
                broken = replace_with(target, lambda new: _new_version(new, old, job, groups, provenance),
                                       shown=path)
        try:
            handle = h5py.File(target, "r+")
        except OSError as e:
            raise SurfaceError(f"cannot open surface file {path} for writing: {h5_reason(e)}") from None
        try:
            return cls(path, handle, job, broken)
        except BaseException:
            handle.close()
            raise

    @staticmethod
    def _check_job(path: str, f: h5py.File, job: SurfaceJob) -> None:
        if f.attrs.get("format") != FORMAT:
            if "xcoordinates" in f:
                raise SurfaceError(f"{path} exists but is not a surface file of this tool (written by the original "
                                   f"tool?); choose another --surf_file or move it away (it was left unchanged)")
            raise SurfaceError(f"{path} is an HDF5 file of another program, not a surface file; choose another "
                               f"--surf_file or move it away (it was left unchanged)")
        version = int(f.attrs.get("format_version", -1))
        if version != FORMAT_VERSION:
            raise SurfaceError(f"{path} has format_version {version}; this code writes {FORMAT_VERSION}: use the "
                               f"version that made it, or another --surf_file")
        if "xcoordinates" not in f:
            raise SurfaceError(f"{path} is a damaged surface file (it has no xcoordinates): delete it or move it "
                               f"away to start over")
        diffs = _grid_differences(f, job.grid)
        # An attribute added to the job after a file was made reads as its default (files stay resumable).
        defaults = {fl.name: fl.default for fl in fields(SurfaceJob) if fl.default is not MISSING}
        wanted = {k: v for k, v in job.attrs().items() if k not in ("x", "y")}
        found = {k: f.attrs.get(k, defaults.get(k)) for k in wanted}
        if "bn_samples" not in f.attrs:
            _legacy_bn(found, wanted, f)
        bn_diffs = _differences({k: found[k] for k in _BN_FIELDS}, {k: wanted[k] for k in _BN_FIELDS})
        diffs += _differences(found, wanted)
        had = found["bn_batch_size"]
        if bn_diffs and job.bn_recalibrate > 0 and isinstance(had, (int, np.integer)) and had > 0 \
                and _show(found["bn_recalibrate"]) == _show(job.bn_recalibrate):
            diffs.append(f"BN statistics are estimated from --bn_recalibrate batches of --batch_size: give "
                         f"--batch_size {_show(had)} to resume")
        if diffs:
            raise SurfaceError(f"{path} holds a different job ({'; '.join(diffs)}): use another --surf_file "
                               f"or delete it to start over")

    @staticmethod
    def _check_groups(path: str, f: h5py.File, groups: list[ValueGroup]) -> None:
        """A group already in the file must hold the same datasets, and a metric the same spec."""
        had = file_groups(f)
        for g in groups:
            if g.name not in had:
                continue
            if had[g.name] != g.datasets:
                raise SurfaceError(f"{path} holds {g.name} as {', '.join(had[g.name])}, not {', '.join(g.datasets)}: "
                                   f"use another --surf_file")
            spec = f[f"{g.name}_done"].attrs.get("metric", "")
            spec = spec.decode() if isinstance(spec, bytes) else str(spec)
            if g.metric and spec != g.metric:
                raise SurfaceError(f"{path} holds {g.datasets[0]} of metric {spec!r}, not {g.metric!r}: name this one "
                                   f"otherwise (NAME=pkg.module:fn) or use another --surf_file")

    # -- progress -----------------------------------------------------------------------------------------

    def pending(self, groups: Iterable[str]) -> list[tuple[int, tuple[str, ...]]]:
        """Points still missing for any of `groups`, each with the groups it lacks, coarse sub-grids first
        (`surface.order.coarse_to_fine`), so a stopped run holds a complete sub-grid and a resumed one keeps the order."""
        groups = list(groups)
        out = []
        flat_done = {g: self._done[g].ravel() for g in groups}
        for flat in coarse_to_fine(self.job.grid.shape).tolist():
            need = tuple(g for g in groups if not flat_done[g][flat])
            if need:
                out.append((flat, need))
        return out

    def done_count(self, group: str) -> int:
        return int(self._done[group].sum())

    def complete(self) -> bool:
        """Whether every point of every group is on disk."""
        return all(done.all() for done in self._done.values())

    def snapshot(self) -> Surface:
        """What is on disk now, as `read_surface` would give it (values not done are NaN), from the in-memory
        copies: a preview while the file is open for writing."""
        values, computed = {}, {}
        for group, names in self._datasets.items():
            for name in names:
                arr = self._values[name].copy()
                arr[~self._done[group]] = np.nan
                values[name], computed[name] = arr, self._done[group].copy()
        grid = self.job.grid
        y = None if grid.y is None else grid.y.coordinates()
        return Surface(self.path, grid.x.coordinates(), y, values, dict(self._f.attrs), computed=computed)

    # -- writing ------------------------------------------------------------------------------------------

    def write(self, flat: int, values: dict[str, tuple[float, ...]]) -> None:
        """Buffers the values of each group for point `flat` (``{"train": (loss, acc)}``,
        ``{"eig": (max_eig, min_eig)}``, in the group's dataset order); on disk after the next `flush`."""
        self._buffer.setdefault(int(flat), {}).update(values)

    def flush(self) -> int:
        """Writes buffered points durably: values, flush, fsync; then done flags, flush, fsync. Returns how many."""
        if not self._buffer:
            return 0
        items = sorted(self._buffer.items())
        rows: dict[str, list[int]] = {}
        for flat, values in items:
            idx = self.job.grid.index(flat)
            for g, vals in values.items():
                for name, v in zip(self._datasets[g], vals, strict=True):
                    self._values[name][idx] = v
                rows.setdefault(g, []).append(idx[0])
        for g, touched in rows.items():
            for name in self._datasets[g]:
                self._write_rows(name, self._values[name], touched)
        self._f.flush()
        self._fsync()
        for flat, values in items:
            idx = self.job.grid.index(flat)
            for g in values:
                self._done[g][idx] = True
        for g, touched in rows.items():
            self._write_rows(f"{g}_done", self._done[g], touched, dtype=np.uint8)
        self._f.flush()
        self._fsync()
        self._buffer.clear()
        return len(items)

    def _write_rows(self, name: str, array: np.ndarray, first: list[int], dtype=None) -> None:
        """One write of the block of rows (2D) or elements (1D) from the lowest to the highest touched;
        the untouched ones in between are rewritten with what they already hold."""
        lo, hi = min(first), max(first) + 1
        block = array[lo:hi]
        self._f[name][lo:hi] = block if dtype is None else block.astype(dtype)

    def _fsync(self) -> None:
        os.fsync(self._f.id.get_vfd_handle())  # the sec2 driver's file descriptor

    def close(self) -> None:
        if self._f.id.valid:
            self.flush()
            self._f.close()

    def __enter__(self) -> "SurfaceFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
