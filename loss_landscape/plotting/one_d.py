"""1D figures: loss and accuracy, loss and error, overlays, and the mean and band over random directions.
"""

from __future__ import annotations

import os

import numpy as np

from loss_landscape.plotting.figures import plt  # the headless backend is chosen there
from matplotlib.lines import Line2D
from loss_landscape.surface.spread import band_statistics
from loss_landscape.plotting.preview import preview_surface
from loss_landscape.surface.reader import Surface
from loss_landscape.errors import SurfaceError


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
    surface, note = preview_surface(surface)  # a file still being computed: its complete sub-grid, interpolated
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
    title = title or os.path.basename(surface.path)
    ax.set_title(f"{title}\n{note}" if note else title, fontsize=7)
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
    surface, note = preview_surface(surface)
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
    title = title or os.path.basename(surface.path)
    fig.suptitle(f"{title}\n{note}" if note else title, fontsize=7)
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
