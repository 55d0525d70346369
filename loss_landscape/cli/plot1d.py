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
import os
import sys
from typing import Sequence

from loss_landscape.errors import USER_ERRORS
from loss_landscape.cli import _common as argtypes
from loss_landscape.plotting.figures import output_args_parser  # picks the headless backend before pyplot loads
from loss_landscape.surface.spread import spread_lines
from loss_landscape.surface.reader import Surface, read_surface
from loss_landscape.errors import SurfaceError
from loss_landscape.plotting.one_d import BANDS, LOSS_NAMES, check_1d
from loss_landscape.plotting.one_d_files import default_labels, find_direction_files, plot_1d_directions, plot_1d_loss_err, plot_1d_overlay


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
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for path in files:
        print(f"wrote {path}")
    return 0


def run(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    """Parses `argv` (the command line when None) and runs the command; returns the exit code."""
    return argtypes.run_command(get_args_parser, main, argv, prog=prog)


if __name__ == "__main__":
    sys.exit(run())
