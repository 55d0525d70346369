"""2D figures of a surface: contour, filled contour, heat map and 3D, with trajectories and critical points.
"""

from __future__ import annotations

import json
import os
from typing import Optional, Sequence

import h5py
import numpy as np

from loss_landscape.plotting.figures import save_figure  # picks the headless backend before pyplot loads
import matplotlib.pyplot as plt
from matplotlib.colors import Normalize
from mpl_toolkits.mplot3d.art3d import Poly3DCollection
from loss_landscape.plotting.preview import preview_surface
from loss_landscape.surface.reader import Surface
from loss_landscape.errors import SurfaceError


KINDS = ("contour", "filled", "heatmap", "3d")
SUFFIXES = {"contour": "2dcontour", "filled": "2dcontourf", "heatmap": "2dheat", "3d": "3dsurface"}
MARKERS = {"minimum": {"marker": "o", "color": "tab:blue"},
           "maximum": {"marker": "^", "color": "tab:red"},
           "saddle": {"marker": "X", "color": "darkorange"}}
MAX_3D_CELLS = 100  # per axis; larger grids are drawn at every k-th point (the files stay small and quick)


def read_projection(path: str) -> tuple[np.ndarray, np.ndarray]:
    """The (proj_xcoord, proj_ycoord) of a trajectory projection file (the original's layout)."""
    try:
        with h5py.File(path, "r") as f:
            return np.asarray(f["proj_xcoord"][()]), np.asarray(f["proj_ycoord"][()])
    except (OSError, KeyError) as e:
        raise SurfaceError(f"cannot read projection file {path} (expected proj_xcoord and proj_ycoord): {e}") \
            from None


def read_axis_labels(dir_file: str) -> tuple[str, str]:
    """Axis labels for PCA directions (their explained variance ratios), else plain x and y."""
    try:
        with h5py.File(dir_file, "r") as f:
            ratio = np.asarray(f["explained_variance_ratio_"][()]) if "explained_variance_ratio_" in f else None
    except OSError as e:
        raise SurfaceError(f"cannot read direction file {dir_file}: {e}") from None
    if ratio is None or len(ratio) < 2:
        return "x", "y"
    return f"1st PC: {100 * ratio[0]:.2f} %", f"2nd PC: {100 * ratio[1]:.2f} %"


def surface_values(surface: Surface, surf_name: str) -> np.ndarray:
    """A copy of the (ny, nx) values of `surf_name`, refusing 1D files and unknown names in one line."""
    if surface.ndim != 2:
        raise SurfaceError(f"{surface.path} is a 1D surface; use plot_1D.py")
    if surf_name not in surface.values:
        raise SurfaceError(f"{surface.path} has no {surf_name!r}; it has {', '.join(sorted(surface.values))}")
    return np.array(surface.values[surf_name], dtype=float)


MAX_LEVELS = 1000
DISPLAY_NAMES = {"eig_ratio": "|min_eig / max_eig|"}  # titles of derived quantities


def check_levels(vmin: float, vmax: float, vlevel: float) -> None:
    """Refuses contour levels vmin, vmin + vlevel, ... < vmax that are empty or too many to draw."""
    if not vlevel > 0 or not vmax > vmin:
        raise SurfaceError(f"contour levels need vlevel > 0 and vmax > vmin, got vmin={vmin} vmax={vmax} "
                           f"vlevel={vlevel}")
    if (vmax - vmin) / vlevel > MAX_LEVELS:
        raise SurfaceError(f"(vmax - vmin) / vlevel = {(vmax - vmin) / vlevel:.4g} contour levels; at most "
                           f"{MAX_LEVELS}: raise --vlevel")


# ----------------------------------------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------------------------------------

def _note(z: np.ma.MaskedArray, name: str) -> Optional[str]:
    """Why a figure has nothing (or nothing but one colour) to show, else None."""
    if z.count() == 0:
        return f"no finite values of {name}"
    if np.ptp(z.compressed()) == 0:
        return f"constant surface: {name} = {z.compressed()[0]:.4g} everywhere"
    return None


def _band_levels(levels: np.ndarray, z: np.ma.MaskedArray) -> np.ndarray:
    """The contour levels up to the first one at or above the largest value: the colour scale of the
    filled contours and the heatmap, so that colours are not spent on levels the data never reach."""
    zmax = z.max() if z.count() else levels[-1]
    n = int(np.sum(levels < zmax)) + 1
    out = levels[:max(n, 2)]
    return out if len(out) >= 2 else np.array([levels[0], levels[0] + 1.0])


def read_projection_epochs(path: str) -> Optional[list[int]]:
    """The epochs of a projection file's checkpoints (its ``epochs`` attribute), or None (the original's files)."""
    try:
        with h5py.File(path, "r") as f:
            return [int(e) for e in f.attrs["epochs"]] if "epochs" in f.attrs else None
    except OSError as e:
        raise SurfaceError(f"cannot read projection file {path}: {e}") from None


def _draw_trajectory(ax, trajectory) -> None:
    """The path with a marker per checkpoint, start (square) and end (star) marked, and, when the epochs are
    known (a third element), epoch labels on points at least trajectory_plot.MIN_LABEL_SPACING apart."""
    if trajectory is not None:
        from loss_landscape.plotting.paths import draw_path
        draw_path(ax, np.asarray(trajectory[0]), np.asarray(trajectory[1]),
                  trajectory[2] if len(trajectory) > 2 else None, color="tab:red", label="trajectory")


def _draw_critical(ax, critical: Sequence[dict], z_of=None) -> None:
    """Marks critical points, one legend entry per kind present; z_of maps a point to its height in 3D."""
    for kind, style in MARKERS.items():
        pts = [p for p in critical if p["kind"] == kind]
        if not pts:
            continue
        xs, ys = [p["x"] for p in pts], [p["y"] for p in pts]
        common = dict(marker=style["marker"], c=style["color"], s=40, edgecolors="black", linewidths=0.6,
                      label=f"{kind} ({len(pts)})", zorder=5)
        if z_of is None:
            ax.scatter(xs, ys, **common)
        else:
            ax.scatter(xs, ys, [z_of(p) for p in pts], depthshade=False, **common)


def _legend(ax) -> None:
    if ax.get_legend_handles_labels()[0]:
        if ax.name == "3d":
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
        else:
            ax.legend(fontsize=7, loc="best", framealpha=0.85)


def _surface_3d(ax, x: np.ndarray, y: np.ndarray, z: np.ndarray, norm: Normalize) -> Poly3DCollection:
    """One quadrilateral per grid cell whose 4 corners are finite, coloured by their mean: cells next to a
    missing point are left out, so gaps show as holes (matplotlib's plot_surface draws them as stray
    triangles)."""
    sj = max(1, -(-(len(y) - 1) // MAX_3D_CELLS))
    si = max(1, -(-(len(x) - 1) // MAX_3D_CELLS))
    rows = np.unique(np.r_[np.arange(0, len(y), sj), len(y) - 1])
    cols = np.unique(np.r_[np.arange(0, len(x), si), len(x) - 1])
    X, Y = np.meshgrid(x[cols], y[rows])
    Z = z[np.ix_(rows, cols)]
    P = np.stack([X, Y, Z], axis=-1)
    quads = np.stack([P[:-1, :-1], P[:-1, 1:], P[1:, 1:], P[1:, :-1]], axis=2)
    keep = np.isfinite(quads[..., 2]).all(axis=2)
    quads = quads[keep]
    poly = Poly3DCollection(quads, cmap="coolwarm", norm=norm, linewidths=0.15, zorder=1)
    poly.set_array(quads[..., 2].mean(axis=1))
    ax.add_collection3d(poly)
    poly.set_edgecolor("face")  # hides the hairline seams between cells; needs the axes, so after adding
    return poly


def figure_2d(kind: str, x: np.ndarray, y: np.ndarray, z: np.ndarray, *, levels: np.ndarray,
              zlim: float = 10.0, name: str = "train_loss", labels: tuple[str, str] = ("x", "y"),
              trajectory: tuple[np.ndarray, np.ndarray] | None = None,
              critical: Sequence[dict] | None = None, subtitle: str = "") -> plt.Figure:
    """Builds one figure of a 2D surface and returns it (not saved, not closed).

    Args:
        kind: one of KINDS: "contour" (labelled lines at `levels`), "filled" (filled contours at `levels`,
            with a colour bar), "heatmap" (one cell per grid point, centred on it), "3d" (the surface, values
            above `zlim` clipped to it).
        x, y, z: coordinates and the values to draw, z[j, i] at (x[i], y[j]); NaN and inf are gaps.
        levels: increasing contour levels; they also set the colour scale of "filled" and "heatmap".
        name: what z is, for the title and colour bar. labels: axis labels.
        trajectory: (xs, ys) or (xs, ys, epochs) drawn on the 2D kinds, epochs labelling some points;
            critical: points from surface_stats.critical_points, marked on "contour" and "3d".
        subtitle: a second title line (a preview's note).

    Example:
        >>> g = np.linspace(-1, 1, 11)
        >>> fig = figure_2d("3d", g, g, np.add.outer(g**2, g**2), levels=np.arange(0.1, 2, 0.2))
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    zm = np.ma.masked_invalid(np.asarray(z, dtype=float))
    note = _note(zm, name)
    varies = note is None or note.startswith("constant")  # something finite to draw
    if kind == "3d":
        return _figure_3d(x, y, zm, zlim=zlim, name=name, labels=labels, critical=critical, note=note,
                          subtitle=subtitle)
    fig, ax = plt.subplots(figsize=(6.4, 5))
    if kind == "contour":
        if note is None:
            cs = ax.contour(x, y, zm, cmap="summer", levels=levels)
            ax.clabel(cs, inline=True, fontsize=7, fmt=lambda v: f"{v:g}")
        ax.set_xlim(x.min(), x.max())
        ax.set_ylim(y.min(), y.max())
        if critical:
            _draw_critical(ax, critical)
    else:
        bands = _band_levels(np.asarray(levels, dtype=float), zm)
        norm = Normalize(bands[0], bands[-1])
        if kind == "filled":
            if varies:
                mappable = ax.contourf(x, y, zm, levels=bands, cmap="viridis", norm=norm, extend="both")
            else:
                mappable = plt.cm.ScalarMappable(norm=norm, cmap="viridis")
            ax.set_xlim(x.min(), x.max())
            ax.set_ylim(y.min(), y.max())
        else:
            mappable = ax.pcolormesh(x, y, zm, shading="nearest", cmap="viridis", norm=norm)
        fig.colorbar(mappable, ax=ax, label=name, extend="both")
    _draw_trajectory(ax, trajectory)
    _legend(ax)
    if note:
        ax.text(0.5, 0.5, note, transform=ax.transAxes, ha="center", va="center", fontsize=9,
                bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "grey"})
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    ax.set_title(f"{name}\n{subtitle}" if subtitle else name, fontsize=9)
    return fig


def _figure_3d(x, y, zm: np.ma.MaskedArray, *, zlim: float, name: str, labels: tuple[str, str],
               critical: Sequence[dict] | None, note: Optional[str], subtitle: str = "") -> plt.Figure:
    fig = plt.figure(figsize=(7.2, 5.4))
    # computed_zorder=False: markers stay on top of the surface instead of being depth-sorted behind it
    ax = fig.add_subplot(projection="3d", computed_zorder=False)
    z = np.minimum(zm.filled(np.nan), zlim)
    finite = z[np.isfinite(z)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    norm = Normalize(lo, hi)
    if finite.size:
        poly = _surface_3d(ax, np.asarray(x, dtype=float), np.asarray(y, dtype=float), z, norm)
        fig.colorbar(poly, ax=ax, shrink=0.55, aspect=12, pad=0.12, label=name)
    if critical:
        _draw_critical(ax, critical, z_of=lambda p: min(p["value"], zlim))
    ax.set_xlim(x.min(), x.max())
    ax.set_ylim(y.min(), y.max())
    ax.set_zlim(lo, hi)
    ax.view_init(elev=45, azim=-60)  # matplotlib's azimuth, from higher up: the basin's floor stays in view
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    ax.set_zlabel(name)
    ax.tick_params(labelsize=7)
    clipped = bool(np.nanmax(zm.filled(np.nan)) > zlim) if finite.size else False
    title = f"{name}{f' (clipped at {zlim:g})' if clipped else ''}"
    ax.set_title(f"{title}\n{subtitle}" if subtitle else title, fontsize=9)
    _legend(ax)
    if note:
        ax.text2D(0.5, 0.5, note, transform=ax.transAxes, ha="center", va="center", fontsize=9,
                  bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "grey"})
    return fig


def plot_2d(surface: Surface, *, surf_name: str = "train_loss", kinds: Sequence[str] = KINDS, vmin: float = 0.1,
            vmax: float = 10.0, vlevel: float = 0.5, zlim: float = 10.0, log: bool = False, show: bool = False,
            fmt: str = "pdf", dpi: int = 300, prefix: str | None = None,
            trajectory: tuple[np.ndarray, np.ndarray] | None = None, labels: tuple[str, str] = ("x", "y"),
            critical: Sequence[dict] | None = None) -> list[str]:
    """Writes one figure per kind of `surf_name`; returns the files written.

    Contour levels are vmin, vmin + vlevel, ... < vmax, drawn on the natural log of the values with `log`
    (zlim then caps the log too). Values are indexed [j, i] at (x[i], y[j]) (see surface_file), so
    non-square grids come out right; NaN and inf points are gaps; an all-NaN or constant surface gives
    figures with a note.

    Example:
        >>> plot_2d(read_surface("surf.h5"), fmt="png")  # doctest: +SKIP
        ['surf_train_loss_2dcontour.png', 'surf_train_loss_2dcontourf.png', 'surf_train_loss_2dheat.png',
         'surf_train_loss_3dsurface.png']
    """
    surface, note = preview_surface(surface)  # a file still being computed: its complete sub-grid, interpolated
    z = surface_values(surface, surf_name)
    check_levels(vmin, vmax, vlevel)
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise SurfaceError(f"unknown figure kind {bad[0]!r}; expected {', '.join(KINDS)}")
    if log:
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.log(z)  # values <= 0 become gaps
    if critical and log:
        critical = [dict(p, value=float(np.log(p["value"])) if p["value"] > 0 else np.nan) for p in critical]
    shown = DISPLAY_NAMES.get(surf_name, surf_name)
    name = f"{shown} (log)" if log else shown
    prefix = prefix or os.path.splitext(surface.path)[0]
    levels = np.arange(vmin, vmax, vlevel)
    files = []
    for kind in kinds:
        fig = figure_2d(kind, surface.x, surface.y, z, levels=levels, zlim=zlim, name=name, labels=labels,
                        trajectory=trajectory, critical=critical, subtitle=note)
        files.append(save_figure(fig, f"{prefix}_{surf_name}_{SUFFIXES[kind]}.{fmt}", show=show, dpi=dpi))
    return files


def plot_2d_contour(surface: Surface, **kwargs) -> list[str]:
    """Only the labelled contour lines (``<prefix>_<surf_name>_2dcontour.<fmt>``); arguments as `plot_2d`."""
    return plot_2d(surface, kinds=("contour",), **kwargs)


def write_json(path: str, obj) -> str:
    """Writes `obj` as indented JSON (NaN refused: the stats give None for undefined numbers)."""
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, allow_nan=False)
        f.write("\n")
    return path
