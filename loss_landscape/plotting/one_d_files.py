"""1D pictures written to files, and finding the surface files of a set of directions.
"""

from __future__ import annotations

import glob
import json
import os
import re

import h5py
import numpy as np

from loss_landscape.plotting.figures import save_figure  # picks the headless backend before pyplot loads
from loss_landscape.surface.spread import direction_spread, jsonable
from loss_landscape.surface.reader import Surface
from loss_landscape.errors import SurfaceError
from loss_landscape.plotting.one_d import BANDS, LOSS_NAMES, _single_names, accuracy_name, check_1d, directions_figure, loss_acc_figure, loss_err_figure, overlay_figure, quantity


# ----------------------------------------------------------------------------------------------------------
# Writing figures
# ----------------------------------------------------------------------------------------------------------


def _tag(surf_name: str) -> str:
    return "" if surf_name == "train_loss" else f"_{surf_name}"


def plot_1d_loss_err(surface: Surface, *, xmin: float | None = None, xmax: float | None = None,
                     loss_max: float = 5.0, log: bool = False, show: bool = False, fmt: str = "pdf",
                     prefix: str | None = None, surf_name: str = "train_loss", dpi: int = 300,
                     title: str | None = None) -> list[str]:
    """Writes one file's figures and returns their paths.

    ``<prefix>_1d_loss_acc.<fmt>``: loss and accuracy on twin axes, train and test together; and,
    when the file has accuracies, ``<prefix>_1d_loss_err.<fmt>``: loss and error (100 - accuracy)
    in two panels. ``_log`` is appended to both names with `log`. For a quantity other than a loss
    (`surf_name`, e.g. ``max_eig``) only ``<prefix>_1d_<surf_name>.<fmt>`` is written.

    Args:
        surface: a 1D surface.
        xmin, xmax, loss_max, log, surf_name, title: as in `loss_acc_figure`.
        show: also open each figure in a window.
        fmt: ``pdf``, ``png`` or ``svg``.
        prefix: output path prefix (default: the surface file without ``.h5``).
        dpi: resolution of PNG files.

    Returns:
        The files written.

    Example:
        >>> plot_1d_loss_err(read_surface("surf.h5"), fmt="png")  # doctest: +SKIP
        ['surf_1d_loss_acc.png', 'surf_1d_loss_err.png']
    """
    prefix = prefix or os.path.splitext(surface.path)[0]
    ltag = "_log" if log else ""
    names = _single_names(surface, surf_name)
    kw = dict(xmin=xmin, xmax=xmax, loss_max=loss_max, log=log, title=title)
    if names[0] not in LOSS_NAMES:
        fig = loss_acc_figure(surface, surf_name=surf_name, **kw)
        return [save_figure(fig, f"{prefix}_1d_{surf_name}{ltag}.{fmt}", show=show, dpi=dpi)]
    files = [save_figure(loss_acc_figure(surface, surf_name=surf_name, **kw), f"{prefix}_1d_loss_acc{ltag}.{fmt}",
                         show=show, dpi=dpi)]
    if any(accuracy_name(n) in surface.values for n in names):
        files.append(save_figure(loss_err_figure(surface, **kw), f"{prefix}_1d_loss_err{ltag}.{fmt}", show=show,
                                 dpi=dpi))
    return files


def plot_1d_overlay(surfaces: list[Surface], *, labels: list[str], surf_name: str = "train_loss",
                    xmin: float | None = None, xmax: float | None = None, loss_max: float = 5.0, log: bool = False,
                    show: bool = False, fmt: str = "pdf", prefix: str | None = None, dpi: int = 300,
                    title: str | None = None) -> list[str]:
    """Writes ``<prefix>_1d_overlay.<fmt>`` (see `overlay_figure`) and returns ``[path]``.

    ``_<surf_name>`` is added to the name for a quantity other than ``train_loss``, ``_log`` with
    `log`; `prefix` defaults to the first surface file without ``.h5``.

    Example:
        >>> plot_1d_overlay([read_surface("sb.h5"), read_surface("lb.h5")], labels=["128", "8192"],
        ...                 fmt="png")  # doctest: +SKIP
        ['sb_1d_overlay.png']
    """
    fig = overlay_figure(surfaces, labels=labels, surf_name=surf_name, xmin=xmin, xmax=xmax, loss_max=loss_max,
                         log=log, title=title)
    prefix = prefix or os.path.splitext(surfaces[0].path)[0]
    path = f"{prefix}_1d_overlay{_tag(surf_name)}{'_log' if log else ''}.{fmt}"
    return [save_figure(fig, path, show=show, dpi=dpi)]


def check_direction_set(surfaces: list[Surface], surf_name: str) -> None:
    """Refuses surfaces that cannot be random directions of one model: fewer than 2, different x
    grids, or (files of this tool) anything recorded other than the directions that differs."""
    if len(surfaces) < 2:
        raise SurfaceError(f"a direction set needs at least 2 surface files, got {len(surfaces)}")
    first = surfaces[0]
    for s in surfaces:
        check_1d(s, surf_name)
    for s in surfaces[1:]:
        if s.x.shape != first.x.shape or not np.allclose(s.x, first.x, rtol=1e-9, atol=1e-12):
            raise SurfaceError(f"direction files must share one x grid: {first.path} has {first.x.size} points "
                               f"from {first.x.min():g} to {first.x.max():g}, {s.path} has {s.x.size} from "
                               f"{s.x.min():g} to {s.x.max():g}")
        for key in ("model_sha256", "dataset", "dir_type", "loss_name", "data_split", "split_idx", "raw_data",
                    "precision", "bn_recalibrate"):
            a, b = first.attrs.get(key), s.attrs.get(key)
            if a is not None and b is not None and str(a) != str(b):
                raise SurfaceError(f"direction files must differ only in their directions: {key} is {a!r} in "
                                   f"{first.path} but {b!r} in {s.path}")


def plot_1d_directions(surfaces: list[Surface], *, band: str = "minmax", delta: float = 1.0,
                       names: list[str] | None = None, surf_name: str = "train_loss", xmin: float | None = None,
                       xmax: float | None = None, loss_max: float = 5.0, log: bool = False, show: bool = False,
                       fmt: str = "pdf", prefix: str | None = None, dpi: int = 300,
                       title: str | None = None) -> tuple[list[str], dict]:
    """Draws random directions of one model as a mean and a band and saves the spread.

    Writes ``<prefix>_1d_directions.<fmt>`` (see `directions_figure`) and
    ``<prefix>_1d_directions.json`` (`surface.spread` plus the files, `surf_name` and `band`);
    ``_<surf_name>`` is added to both names for a quantity other than ``train_loss``.

    Args:
        surfaces: 1D surfaces on one x grid (see `check_direction_set`).
        band: ``minmax`` or ``std``.
        delta: loss rise that defines the basin width (see `basin_width`).
        names: one name per direction (default: the file names).
        surf_name, xmin, xmax, loss_max, log, title: as in `loss_acc_figure`.
        show, fmt, dpi: as in `plot_1d_loss_err`.
        prefix: output path prefix (default: the first surface file without ``.h5``).

    Returns:
        (files written, the spread dict also saved as JSON).

    Example:
        >>> files, spread = plot_1d_directions([read_surface(f) for f in paths], band="std")  # doctest: +SKIP
        >>> spread["summary"]["basin_width"]["std"]  # doctest: +SKIP
    """
    if band not in BANDS:
        raise SurfaceError(f"unknown band {band!r}: expected one of {', '.join(BANDS)}")
    check_direction_set(surfaces, surf_name)
    if names is not None and len(names) != len(surfaces):
        raise SurfaceError(f"{len(names)} names for {len(surfaces)} direction files; give one per file")
    names = names or [os.path.basename(s.path) for s in surfaces]
    x = surfaces[0].x
    values = np.stack([quantity(s, surf_name) for s in surfaces])
    acc = accuracy_name(surf_name)
    accs = np.stack([quantity(s, acc) for s in surfaces]) if acc and all(acc in s.values for s in surfaces) else None
    spread = direction_spread(x, values, accs=accs, delta=delta, names=names)
    spread = {"surf_name": surf_name, "band": band, "files": [s.path for s in surfaces], **spread}
    prefix = prefix or os.path.splitext(surfaces[0].path)[0]
    stem = f"{prefix}_1d_directions{_tag(surf_name)}"
    if title is None:
        common = os.path.commonprefix([os.path.basename(s.path) for s in surfaces]).rstrip("-_.")
        title = f"{common}: {len(surfaces)} directions" if common else None
    fig = directions_figure(x, values, accs=accs, band=band, surf_name=surf_name, xmin=xmin, xmax=xmax,
                            loss_max=loss_max, log=log, title=title)
    files = [save_figure(fig, f"{stem}{'_log' if log else ''}.{fmt}", show=show, dpi=dpi)]
    with open(f"{stem}.json", "w") as f:
        json.dump(jsonable(spread), f, indent=1)
    files.append(f"{stem}.json")
    return files, spread


# ----------------------------------------------------------------------------------------------------------
# Command
# ----------------------------------------------------------------------------------------------------------


def _natural_key(path: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path)]


def find_direction_files(prefix: str) -> tuple[str, list[str]]:
    """The 1D surface files of `--dirs_prefix`: ``PREFIX*.h5``, or PREFIX itself when it holds a
    wildcard (``*?[``), in natural order (idx2 before idx10). Files of the pattern that are not 1D
    surface files (direction files, 2D surfaces) are skipped. Returns (pattern, files)."""
    pattern = prefix if glob.has_magic(prefix) else prefix + "*.h5"
    files = []
    for path in sorted(glob.glob(pattern), key=_natural_key):
        try:
            with h5py.File(path, "r") as f:
                if "xcoordinates" in f and "ycoordinates" not in f:
                    files.append(path)
        except OSError:
            continue  # not HDF5
    return pattern, files


def default_labels(paths: list[str]) -> list[str]:
    """Short legend labels: the part of the file names that differs (whole tokens between - _ .)."""
    names = [os.path.basename(p) for p in paths]
    if len(names) < 2:
        return [os.path.splitext(n)[0] for n in names]
    seps = "-_."

    def boundary(n: str, q: int) -> bool:  # position q of n lies between two tokens
        return q <= 0 or q >= len(n) or n[q - 1] in seps or n[q] in seps

    p = len(os.path.commonprefix(names))
    while p > 0 and not all(boundary(n, p) for n in names):
        p -= 1
    s = min(len(os.path.commonprefix([n[::-1] for n in names])), min(len(n) for n in names) - p)
    while s > 0 and not all(boundary(n, len(n) - s) for n in names):
        s -= 1
    labels = [n[p:len(n) - s].strip(seps) for n in names]
    if sum(1 for lab in labels if not lab) == 1 and all(re.fullmatch(r"idx\d+", lab) for lab in labels if lab):
        labels = [lab or "idx0" for lab in labels]  # this tool's names leave idx 0 out
    if len(set(labels)) < len(labels) or not all(labels):
        stems = [os.path.splitext(n)[0] for n in names]
        return stems if len(set(stems)) == len(stems) else [os.path.splitext(p)[0] for p in paths]
    return labels
