#!/usr/bin/env python
"""Command: plot a 2D surface file as contour lines, with an optional projected trajectory.

    python plot_2D.py --surf_file model.t7.dirs-...-2d.surf-...h5 [--surf_name train_loss]
"""

from __future__ import annotations

import argparse
import os
import sys

import h5py
import numpy as np

from figures import output_args_parser, save_figure  # picks the headless backend before pyplot loads
import matplotlib.pyplot as plt  # noqa: E402
from surface_file import Surface, SurfaceError, read_surface  # noqa: E402


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


def plot_2d_contour(surface: Surface, *, surf_name: str = "train_loss", vmin: float = 0.1, vmax: float = 10.0,
                    vlevel: float = 0.5, log: bool = False, show: bool = False, fmt: str = "pdf",
                    prefix: str | None = None, trajectory: tuple[np.ndarray, np.ndarray] | None = None,
                    labels: tuple[str, str] = ("x", "y")) -> list[str]:
    """Draws labelled contour lines at levels vmin, vmin+vlevel, ... < vmax; returns the files written.

    Values are indexed [j, i] at (x[i], y[j]) (see surface_file), so non-square grids come out
    right. NaN points are left blank.

    Example:
        >>> plot_2d_contour(read_surface("surf.h5"), fmt="png")  # doctest: +SKIP
        ['surf_train_loss_2dcontour.png']
    """
    if surface.ndim != 2:
        raise SurfaceError(f"{surface.path} is a 1D surface; use plot_1D.py")
    if surf_name not in surface.values:
        raise SurfaceError(f"{surface.path} has no {surf_name!r}; it has {', '.join(sorted(surface.values))}")
    if not vlevel > 0 or not vmax > vmin:
        raise SurfaceError(f"contour levels need vlevel > 0 and vmax > vmin, got vmin={vmin} vmax={vmax} "
                           f"vlevel={vlevel}")
    z = np.array(surface.values[surf_name], dtype=float)
    if log:
        z = np.log(z)
    z = np.ma.masked_invalid(z)
    X, Y = np.meshgrid(surface.x, surface.y)
    prefix = prefix or os.path.splitext(surface.path)[0]
    fig, ax = plt.subplots(figsize=(6, 5))
    levels = np.arange(vmin, vmax, vlevel)
    if z.count() and np.ptp(z.compressed()) > 0:
        cs = ax.contour(X, Y, z, cmap="summer", levels=levels)
        ax.clabel(cs, inline=True, fontsize=8)
    if trajectory is not None:
        ax.plot(trajectory[0], trajectory[1], "r-o", ms=3, lw=1, label="trajectory")
        ax.legend(fontsize=8)
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    ax.set_title(f"{surf_name}{' (log)' if log else ''}", fontsize=9)
    fig.tight_layout()
    out = f"{prefix}_{surf_name}_2dcontour.{fmt}"
    return [save_figure(fig, out, show=show)]


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Plot a 2D loss surface file as contours.", add_help=add_help,
                                parents=[output_args_parser()])
    p.add_argument("--surf_name", default="train_loss", help="the quantity to draw (default: train_loss)")
    p.add_argument("--vmin", type=float, default=0.1, help="lowest contour level (default: 0.1)")
    p.add_argument("--vmax", type=float, default=10.0, help="contour levels stay below this (default: 10)")
    p.add_argument("--vlevel", type=float, default=0.5, help="spacing of contour levels (default: 0.5)")
    p.add_argument("--log", action="store_true", help="draw the log of the values")
    p.add_argument("--proj_file", default=None, help="trajectory projection file to draw on top (default: none)")
    p.add_argument("--dir_file", default=None,
                   help="direction file; PCA directions label the axes with their explained variance (default: none)")
    return p


def main(args: argparse.Namespace) -> int:
    try:
        traj = read_projection(args.proj_file) if args.proj_file else None
        labels = read_axis_labels(args.dir_file) if args.dir_file else ("x", "y")
        for path in plot_2d_contour(read_surface(args.surf_file), surf_name=args.surf_name, vmin=args.vmin,
                                    vmax=args.vmax, vlevel=args.vlevel, log=args.log, show=args.show,
                                    fmt=args.format, prefix=args.prefix, trajectory=traj, labels=labels):
            print(f"wrote {path}")
    except SurfaceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
