"""Command: plot a 2D surface file as contour lines, filled contours, a heatmap and a 3D surface, with its
critical points and sharpness summaries.

    python plot_2D.py --surf_file model.t7.dirs-...-2d.surf-...h5 [--surf_name train_loss] [--kind all]
        [--critical] [--proj_file proj.h5] [--format png]

Each kind is its own file, ``<prefix>_<surf_name>_{2dcontour,2dcontourf,2dheat,3dsurface}.<format>``; the
sharpness summary goes to ``<prefix>_<surf_name>_sharpness.json`` and, with --critical, the critical points
to ``<prefix>_<surf_name>_critical.json``. doc/plot_2d.md defines every number.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from loss_landscape.errors import USER_ERRORS
from loss_landscape.cli import _common as argtypes
from loss_landscape.plotting.figures import output_args_parser  # picks the headless backend before pyplot loads
from loss_landscape.surface.reader import read_surface
from loss_landscape.errors import SurfaceError
from loss_landscape.surface.stats import (DEFAULT_RADII, critical_lines, critical_points, sharpness_2d,
                                          sharpness_lines)
from loss_landscape.plotting.two_d import KINDS, check_levels, plot_2d, read_axis_labels, read_projection, read_projection_epochs, surface_values, write_json


# ----------------------------------------------------------------------------------------------------------
# Command
# ----------------------------------------------------------------------------------------------------------

def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argtypes.ArgumentParser(description="Plot a 2D loss surface file: contours, filled contours, heatmap, 3D "
                                            "surface; critical points and sharpness.", add_help=add_help,
                                parents=[output_args_parser()])
    g = p.add_argument_group("plot")
    g.add_argument("--surf_name", default="train_loss", help="the quantity to draw (default: train_loss)")
    g.add_argument("--kind", nargs="+", default=["all"], choices=(*KINDS, "all"), metavar="KIND",
                   help="figures to write, one or more of contour, filled, heatmap, 3d, or all (default: all)")
    g.add_argument("--vmin", type=float, default=0.1, help="lowest contour level (default: 0.1)")
    g.add_argument("--vmax", type=float, default=10.0, help="contour levels stay below this (default: 10)")
    g.add_argument("--vlevel", type=float, default=0.5, help="spacing of contour levels (default: 0.5)")
    g.add_argument("--zlim", type=float, default=10.0, help="3D: values above this are clipped to it (default: 10)")
    g.add_argument("--log", action="store_true", help="draw the natural log of the values (default: off)")
    g.add_argument("--proj_file", default=None, help="trajectory projection file to draw on top (default: none)")
    g.add_argument("--dir_file", default=None,
                   help="direction file; PCA directions label the axes with their explained variance (default: none)")
    g = p.add_argument_group("statistics (of the values, never their log)")
    g.add_argument("--critical", action="store_true",
                   help="find the grid's minima, maxima and saddles, mark them and write <prefix>_<surf_name>_"
                        "critical.json (default: off)")
    g.add_argument("--basin_delta", type=float, default=1.0,
                   help="sharpness: the basin is where the value is below centre + this (default: 1.0)")
    g.add_argument("--radii", type=float, nargs="+", default=list(DEFAULT_RADII),
                   help="sharpness: radii of the rise around the centre, clipped to the grid (default: "
                        f"{' '.join(map(str, DEFAULT_RADII))})")
    return p


def main(args: argparse.Namespace) -> int:
    try:
        check_levels(args.vmin, args.vmax, args.vlevel)
        if not args.basin_delta > 0:
            raise SurfaceError(f"--basin_delta must be > 0, got {args.basin_delta}")
        if any(not r >= 0 for r in args.radii):
            raise SurfaceError(f"--radii must be >= 0, got {' '.join(map(str, args.radii))}")
        surface = read_surface(args.surf_file)
        z = surface_values(surface, args.surf_name)
        traj = (*read_projection(args.proj_file), read_projection_epochs(args.proj_file)) if args.proj_file else None
        labels = read_axis_labels(args.dir_file) if args.dir_file else ("x", "y")
        prefix = args.prefix or os.path.splitext(surface.path)[0]
        base = f"{prefix}_{args.surf_name}"
        points = None
        if args.critical:
            points = critical_points(surface.x, surface.y, z)
            for line in critical_lines(points):
                print(line)
            print(f"wrote {write_json(f'{base}_critical.json', points)}")
        sharp = sharpness_2d(surface.x, surface.y, z, radii=args.radii, delta=args.basin_delta)
        for line in sharpness_lines(sharp):
            print(line)
        record = {"surf_file": surface.path, "surf_name": args.surf_name, **sharp}
        print(f"wrote {write_json(f'{base}_sharpness.json', record)}")
        kinds = KINDS if "all" in args.kind else tuple(dict.fromkeys(args.kind))
        for path in plot_2d(surface, surf_name=args.surf_name, kinds=kinds, vmin=args.vmin, vmax=args.vmax,
                            vlevel=args.vlevel, zlim=args.zlim, log=args.log, show=args.show, fmt=args.format,
                            dpi=args.dpi, prefix=prefix, trajectory=traj, labels=labels, critical=points):
            print(f"wrote {path}")
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def run(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    """Parses `argv` (the command line when None) and runs the command; returns the exit code."""
    return argtypes.run_command(get_args_parser, main, argv, prog=prog)


if __name__ == "__main__":
    sys.exit(run())
