#!/usr/bin/env python
"""Command: plot 1D surface files: one file, an overlay of several, or a set of random directions.

    python plot_1D.py --surf_file S.h5                          # S_1d_loss_acc.pdf and S_1d_loss_err.pdf
    python plot_1D.py --surf_file sb.h5 lb.h5 --labels "batch 128" "batch 8192"          # sb_1d_overlay.pdf
    python plot_1D.py --dirs_prefix model_30.t7.dirs-weights-filter-biasbn-seed123 --band std
        # every model_30.t7.dirs-weights-filter-biasbn-seed123*.h5 that is a 1D surface file: mean and band,
        # ..._1d_directions.pdf and the spread across directions in ..._1d_directions.json

The plotting functions take `Surface` objects or arrays and keyword arguments; `main` alone reads the
command line. See doc/plot_1d.md.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import sys

import h5py
import numpy as np

import argtypes
from figures import output_args_parser, save_figure  # picks the headless backend before pyplot loads
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from direction_spread import band_statistics, direction_spread, jsonable, spread_lines  # noqa: E402
from surface_file import Surface, SurfaceError, read_surface  # noqa: E402

LOSS_NAMES = ("train_loss", "test_loss")
LOSS_COLOR, ACC_COLOR = "tab:blue", "tab:red"
BANDS = ("minmax", "std")

# ----------------------------------------------------------------------------------------------------------
# Curves of a surface
# ----------------------------------------------------------------------------------------------------------


def quantity(surface: Surface, name: str) -> np.ndarray:
    """`surface.values[name]` as float64 with every point not computed as NaN (a gap in plots).

    NaN and +-inf become NaN (`read_surface` already turns the original tool's -1, "not computed",
    into NaN).

    Example:
        >>> quantity(read_surface("surf.h5"), "train_loss").shape  # doctest: +SKIP
        (51,)
    """
    if name not in surface.values:
        have = ", ".join(sorted(surface.values)) or "no values"
        raise SurfaceError(f"{surface.path} has no {name!r}; it has {have}")
    v = np.array(surface.values[name], dtype=float)
    v[~np.isfinite(v)] = np.nan
    return v


def accuracy_name(surf_name: str) -> str | None:
    """The accuracy drawn with a loss: ``train_loss`` -> ``train_acc``; None for other quantities."""
    return surf_name[: -len("_loss")] + "_acc" if surf_name.endswith("_loss") else None


def check_1d(surface: Surface, surf_name: str | None = None) -> None:
    """Raises SurfaceError unless `surface` is 1D (and holds `surf_name`)."""
    if surface.ndim != 1:
        raise SurfaceError(f"{surface.path} is a 2D surface; use plot_2D.py")
    if surf_name is not None:
        quantity(surface, surf_name)


def _label(name: str) -> str:
    return name.replace("_acc", " accuracy").replace("_", " ")


def _xlim(xs: list[np.ndarray], xmin: float | None, xmax: float | None) -> tuple[float, float]:
    lo = min(float(np.min(x)) for x in xs) if xmin is None else float(xmin)
    hi = max(float(np.max(x)) for x in xs) if xmax is None else float(xmax)
    if not lo < hi:
        raise SurfaceError(f"the x range must have xmin < xmax, got xmin={lo:g} xmax={hi:g}")
    return lo, hi


def _value_axis(ax, *, surf_name: str, loss_max: float, log: bool, xlim: tuple[float, float]) -> None:
    ax.set_xlim(*xlim)
    if log:
        ax.set_yscale("log")
        _fit_log_ylim(ax)
    elif surf_name.endswith("_loss"):
        ax.set_ylim(0, loss_max)
    ax.set_xlabel("step along the direction")
    ax.set_ylabel(("loss" if surf_name.endswith("_loss") else surf_name) + (" (log scale)" if log else ""))


def _fit_log_ylim(ax) -> None:
    """A log axis scaled to the curves inside the x range (matplotlib scales to all the data)."""
    lo, hi = ax.get_xlim()
    ys = [np.asarray(ln.get_ydata(), dtype=float)[(np.asarray(ln.get_xdata(), dtype=float) >= lo)
                                                  & (np.asarray(ln.get_xdata(), dtype=float) <= hi)]
          for ln in ax.get_lines()]
    y = np.concatenate(ys) if ys else np.array([])
    y = y[np.isfinite(y) & (y > 0)]
    if y.size:
        ax.set_ylim(y.min() / 1.3, y.max() * 1.3)


def _acc_axis(ax, *, label: str = "accuracy (%)", color: str = "black") -> None:
    ax.set_ylim(0, 100)
    ax.set_ylabel(label, color=color)
    ax.tick_params("y", colors=color)


def _legend_below(ax, handles, labels, *, ncol: int) -> None:
    # Below the axes: the curves of a landscape fill the plot area, any corner may hide one. Long labels
    # (file names) get fewer columns, so that the legend is never wider than the figure.
    if sum(len(t) + 6 for t in labels) > 100:
        ncol = max(1, min(ncol, 90 // (max(len(t) for t in labels) + 6)))
    ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=ncol, fontsize=8,
              frameon=False)


# ----------------------------------------------------------------------------------------------------------
# Figures (each returns the Figure; the plot_1d_* functions below write them)
# ----------------------------------------------------------------------------------------------------------


def _single_names(surface: Surface, surf_name: str) -> list[str]:
    """What one file's figures draw: train and test loss when `surf_name` is one of them."""
    check_1d(surface)
    if surf_name in LOSS_NAMES:
        names = [n for n in LOSS_NAMES if n in surface.values]
        if not names:
            quantity(surface, surf_name)  # raises, listing what the file has
        return names
    quantity(surface, surf_name)
    return [surf_name]


def loss_acc_figure(surface: Surface, *, surf_name: str = "train_loss", xmin: float | None = None,
                    xmax: float | None = None, loss_max: float = 5.0, log: bool = False,
                    title: str | None = None):
    """Loss (left axis, blue) and accuracy (right axis, red) along x; train solid, test dashed.

    Args:
        surface: a 1D surface.
        surf_name: ``train_loss`` or ``test_loss`` draw every loss the file has with its accuracy;
            any other 1D quantity (e.g. ``max_eig``) is drawn alone.
        xmin, xmax: x range (default: the grid's).
        loss_max: top of a linear loss axis.
        log: logarithmic value axis.
        title: figure title (default: the file name).

    Returns:
        The matplotlib Figure; its first axes hold the loss lines.

    Example:
        >>> fig = loss_acc_figure(read_surface("surf.h5"), log=True)  # doctest: +SKIP
    """
    names = _single_names(surface, surf_name)
    x = surface.x
    fig, ax = plt.subplots(figsize=(6, 4.2))
    ax_acc = None
    handles = []
    for name, style in zip(names, ("-", "--")):
        color = LOSS_COLOR if name.endswith("_loss") else "black"
        handles += ax.plot(x, quantity(surface, name), color=color, ls=style, lw=1.5, label=_label(name))
        acc = accuracy_name(name)
        if acc in surface.values:
            ax_acc = ax_acc or ax.twinx()
            handles += ax_acc.plot(x, quantity(surface, acc), color=ACC_COLOR, ls=style, lw=1.5, label=_label(acc))
    _value_axis(ax, surf_name=names[0], loss_max=loss_max, log=log, xlim=_xlim([x], xmin, xmax))
    if ax_acc is not None:
        ax.yaxis.label.set_color(LOSS_COLOR)
        ax.tick_params("y", colors=LOSS_COLOR)
        _acc_axis(ax_acc, color=ACC_COLOR)
    _legend_below(ax, handles, [h.get_label() for h in handles], ncol=len(handles))
    ax.set_title(title or os.path.basename(surface.path), fontsize=7)
    fig.tight_layout()
    return fig


def loss_err_figure(surface: Surface, *, xmin: float | None = None, xmax: float | None = None,
                    loss_max: float = 5.0, log: bool = False, title: str | None = None):
    """Loss and error (100 - accuracy, in percent) as two panels, as the original's plot_1D drew them.

    Train solid, test dashed, for each set the file holds with both loss and accuracy.

    Args:
        surface: a 1D surface with ``train_loss``/``train_acc`` and/or ``test_loss``/``test_acc``.
        xmin, xmax, loss_max, log, title: as in `loss_acc_figure`.

    Returns:
        The Figure; axes 0 hold the loss lines, axes 1 the error lines.

    Example:
        >>> fig = loss_err_figure(read_surface("surf.h5"))  # doctest: +SKIP
        >>> fig.axes[1].get_lines()[0].get_ydata()  # 100 - train_acc  # doctest: +SKIP
    """
    check_1d(surface)
    sets = [n[: -len("_loss")] for n in LOSS_NAMES if n in surface.values and accuracy_name(n) in surface.values]
    if not sets:
        raise SurfaceError(f"{surface.path} has no loss with its accuracy; it has {', '.join(sorted(surface.values))}")
    x = surface.x
    xlim = _xlim([x], xmin, xmax)
    fig, (ax_loss, ax_err) = plt.subplots(1, 2, figsize=(9.5, 3.8))
    keys = []
    for group, style in zip(sets, ("-", "--")):
        ax_loss.plot(x, quantity(surface, f"{group}_loss"), color=LOSS_COLOR, ls=style, lw=1.5, label=f"{group} loss")
        ax_err.plot(x, 100.0 - quantity(surface, f"{group}_acc"), color=ACC_COLOR, ls=style, lw=1.5,
                    label=f"{group} error")
        keys.append(Line2D([], [], color="0.3", ls=style, lw=1.5, label=group))
    _value_axis(ax_loss, surf_name="train_loss", loss_max=loss_max, log=log, xlim=xlim)
    ax_err.set_xlim(*xlim)
    ax_err.set_ylim(0, 100)
    ax_err.set_xlabel("step along the direction")
    ax_err.set_ylabel("error (%)")
    fig.suptitle(title or os.path.basename(surface.path), fontsize=7)
    fig.tight_layout()
    if len(keys) > 1:
        fig.legend(handles=keys, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=len(keys), fontsize=8,
                   frameon=False)
    return fig


def _colors(n: int) -> list:
    cmap = plt.get_cmap("tab10" if n <= 10 else "viridis")
    return [cmap(i) for i in range(n)] if n <= 10 else [cmap(i / (n - 1)) for i in range(n)]


def overlay_figure(surfaces: list[Surface], *, labels: list[str], surf_name: str = "train_loss",
                   xmin: float | None = None, xmax: float | None = None, loss_max: float = 5.0,
                   log: bool = False, title: str | None = None):
    """Several 1D surfaces in one figure: each file's `surf_name` (solid, left axis) and, for a loss,
    its accuracy (dashed, right axis) in the file's own colour. The x grids may differ.

    Args:
        surfaces: 1D surfaces, each holding `surf_name`.
        labels: one legend label per surface.
        surf_name: the quantity drawn, e.g. ``train_loss`` or ``test_loss``.
        xmin, xmax: x range (default: the union of the grids).
        loss_max, log, title: as in `loss_acc_figure`.

    Returns:
        The Figure; axes 0 hold exactly one line per surface, labelled as `labels`.

    Example:
        >>> fig = overlay_figure([read_surface("sb.h5"), read_surface("lb.h5")],
        ...                      labels=["batch 128", "batch 8192"])  # doctest: +SKIP
    """
    if len(labels) != len(surfaces):
        raise SurfaceError(f"{len(labels)} labels for {len(surfaces)} surface files; give one label per file")
    for s in surfaces:
        check_1d(s, surf_name)
    acc = accuracy_name(surf_name)
    with_acc = acc is not None and any(acc in s.values for s in surfaces)
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    ax_acc = ax.twinx() if with_acc else None
    handles = []
    for s, label, color in zip(surfaces, labels, _colors(len(surfaces))):
        handles += ax.plot(s.x, quantity(s, surf_name), color=color, ls="-", lw=1.6, label=label)
        if with_acc and acc in s.values:
            ax_acc.plot(s.x, quantity(s, acc), color=color, ls="--", lw=1.2, alpha=0.85)
    _value_axis(ax, surf_name=surf_name, loss_max=loss_max, log=log, xlim=_xlim([s.x for s in surfaces], xmin, xmax))
    if with_acc:  # the line styles are told by the axis labels, so that the legend names only files
        ax.set_ylabel(f"{_label(surf_name)}{' (log scale)' if log else ''}, solid")
        _acc_axis(ax_acc, label=f"{_label(acc)} (%), dashed")
    _legend_below(ax, handles, [h.get_label() for h in handles], ncol=len(handles))
    if title:
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return fig


def band_limits(stats: dict, band: str) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper edge of the band drawn around the mean: (min, max) or mean -+ std."""
    if band == "minmax":
        return stats["min"], stats["max"]
    if band == "std":
        return stats["mean"] - stats["std"], stats["mean"] + stats["std"]
    raise SurfaceError(f"unknown band {band!r}: expected one of {', '.join(BANDS)}")


def directions_figure(x: np.ndarray, values: np.ndarray, *, accs: np.ndarray | None = None, band: str = "minmax",
                      surf_name: str = "train_loss", xmin: float | None = None, xmax: float | None = None,
                      loss_max: float = 5.0, log: bool = False, title: str | None = None):
    """Curves of several directions on one grid: each thin and faint, their mean, and a band.

    Args:
        x: the shared grid, shape (nx,).
        values: `surf_name` along each direction, shape (n_directions, nx); NaN are gaps, in that
            direction's curve and in the mean and band (drawn only where every direction has a value).
        accs: the accuracies, same shape, drawn on a right axis (optional).
        band: ``minmax`` (the envelope) or ``std`` (mean -+ one sample standard deviation).
        surf_name, xmin, xmax, loss_max, log, title: as in `loss_acc_figure`.

    Returns:
        The Figure; axes 0 hold the value curves, their mean (labelled ``mean ...``) and the band.

    Example:
        >>> fig = directions_figure(np.linspace(-1, 1, 5), np.array([[2, 1, 0, 1, 2], [3, 1, 0, 2, 4.]]))
    """
    x = np.asarray(x, dtype=float)
    values = np.atleast_2d(np.asarray(values, dtype=float))
    n = values.shape[0]
    band_text = "min-max" if band == "minmax" else "mean \u00b1 std"
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    handles = []
    value_color = LOSS_COLOR if surf_name.endswith("_loss") else "black"
    series = [(values, value_color, ax, _label(surf_name))]
    if accs is not None:
        ax_acc = ax.twinx()
        acc_label = _label(accuracy_name(surf_name) or "accuracy")
        series.append((np.atleast_2d(np.asarray(accs, dtype=float)), ACC_COLOR, ax_acc, acc_label))
    for arr, color, axis, name in series:
        stats = band_statistics(arr)
        lo, hi = band_limits(stats, band)
        # A statistic of fewer directions is another statistic: where one lacks a point, leave a gap.
        partial = stats["count"] < n
        lo, hi, mean_line = (np.where(partial, np.nan, v) for v in (lo, hi, stats["mean"]))
        for row in arr:
            axis.plot(x, row, color=color, lw=0.6, alpha=0.35)
        fill = axis.fill_between(x, lo, hi, color=color, alpha=0.18, lw=0, label=f"{name}: {band_text} of {n}")
        (mean,) = axis.plot(x, mean_line, color=color, lw=1.8, label=f"mean {name}")
        handles += [mean, fill]
    _value_axis(ax, surf_name=surf_name, loss_max=loss_max, log=log, xlim=_xlim([x], xmin, xmax))
    if accs is not None:
        ax.yaxis.label.set_color(value_color)
        ax.tick_params("y", colors=value_color)
        _acc_axis(ax_acc, color=ACC_COLOR)
    _legend_below(ax, handles, [h.get_label() for h in handles], ncol=2)
    ax.set_title(title or f"{n} directions", fontsize=8)
    fig.tight_layout()
    return fig


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
    ``<prefix>_1d_directions.json`` (`direction_spread` plus the files, `surf_name` and `band`);
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


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argtypes.ArgumentParser(description="Plot 1D loss surface files: one, an overlay of several, or a set of "
                                "random directions as a mean and a band.", add_help=add_help,
                                parents=[output_args_parser(surf_file=False)])
    g = p.add_argument_group("input")
    g.add_argument("--surf_file", nargs="+", default=None, metavar="FILE",
                   help="one 1D surface file; several are overlaid, or with --band drawn as one model's directions")
    g.add_argument("--dirs_prefix", default=None, metavar="PREFIX",
                   help="a direction set: every 1D surface file PREFIX*.h5 (PREFIX itself if it holds * ? or [), "
                        "e.g. model_30.t7.dirs-weights-filter-biasbn-seed123 (default: none)")
    g.add_argument("--surf_name", default=None,
                   help="quantity to plot, with its accuracy for a loss (default: train_loss, or test_loss in files "
                        "without it)")
    g.add_argument("--labels", nargs="+", default=None, metavar="LABEL",
                   help="one legend label per file (default: the part of the file names that differs)")
    g = p.add_argument_group("plot")
    g.add_argument("--xmin", type=float, default=None, help="left end of the x axis (default: first coordinate)")
    g.add_argument("--xmax", type=float, default=None, help="right end of the x axis (default: last coordinate)")
    g.add_argument("--loss_max", type=float, default=5.0, help="top of the linear loss axis (default: 5)")
    g.add_argument("--log", action="store_true", help="logarithmic loss axis")
    g.add_argument("--band", choices=BANDS, default=None,
                   help="draw the files as directions of one model: mean and min-max or mean -+ std band "
                        "(default: minmax with --dirs_prefix, else an overlay)")
    g.add_argument("--basin_delta", type=float, default=1.0,
                   help="directions: the basin width is the x interval around 0 where loss < loss(0) + "
                        "BASIN_DELTA, as in plot_2D.py (default: 1.0)")
    return p


def _resolve_surf_name(surfaces: list[Surface], surf_name: str | None) -> str:
    if surf_name is not None:
        return surf_name
    for name in LOSS_NAMES:
        if all(name in s.values for s in surfaces):
            return name
    return "train_loss"  # missing somewhere: the checks name the file and what it has


def _check_options(args: argparse.Namespace) -> None:
    if args.surf_file and args.dirs_prefix:
        raise SurfaceError("give direction files either as --surf_file ... --band or as --dirs_prefix, not both")
    if not args.surf_file and not args.dirs_prefix:
        raise SurfaceError("nothing to plot: give --surf_file FILE [FILE ...] or --dirs_prefix PREFIX")
    if not args.loss_max > 0:
        raise SurfaceError(f"--loss_max must be > 0, got {args.loss_max}")
    if not args.basin_delta > 0:
        raise SurfaceError(f"--basin_delta must be > 0, got {args.basin_delta}")
    if args.xmin is not None and args.xmax is not None and not args.xmin < args.xmax:
        raise SurfaceError(f"--xmin must be less than --xmax, got {args.xmin:g} and {args.xmax:g}")


def main(args: argparse.Namespace) -> int:
    try:
        _check_options(args)
        if args.dirs_prefix:
            pattern, paths = find_direction_files(args.dirs_prefix)
            if not paths:
                raise SurfaceError(f"no 1D surface file matches {pattern}")
            print(f"{len(paths)} direction files match {pattern}")
        else:
            paths = args.surf_file
        for path in paths:
            if not os.path.isfile(path):
                raise SurfaceError(f"cannot read surface file {path}: no such file")
        if args.labels is not None and len(args.labels) != len(paths):
            raise SurfaceError(f"--labels gives {len(args.labels)} labels for {len(paths)} surface files; "
                               f"give one per file")
        surfaces = [read_surface(p) for p in paths]
        for s in surfaces:
            check_1d(s)
        surf_name = _resolve_surf_name(surfaces, args.surf_name)
        labels = args.labels or default_labels(paths)
        common = dict(surf_name=surf_name, xmin=args.xmin, xmax=args.xmax, loss_max=args.loss_max, log=args.log,
                      show=args.show, fmt=args.format, dpi=args.dpi)
        if args.dirs_prefix or args.band:
            prefix = args.prefix
            if prefix is None and args.dirs_prefix and not glob.has_magic(args.dirs_prefix):
                prefix = args.dirs_prefix.rstrip("-_.") or None
            files, spread = plot_1d_directions(surfaces, band=args.band or "minmax", delta=args.basin_delta,
                                               names=labels, prefix=prefix, **common)
            for line in spread_lines(spread, surf_name=surf_name):
                print(line)
        elif len(surfaces) > 1:
            files = plot_1d_overlay(surfaces, labels=labels, prefix=args.prefix, **common)
        else:
            files = plot_1d_loss_err(surfaces[0], prefix=args.prefix, title=args.labels[0] if args.labels else None,
                                     **common)
    except (SurfaceError, OSError) as e:  # OSError: an output folder that is missing or read-only
        print(f"error: {e}", file=sys.stderr)
        return 1
    for path in files:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
