#!/usr/bin/env python
"""Command: export a 2D surface file as a 3D mesh: VTP (ParaView), binary PLY (Blender, MeshLab, 3D printing)
or a self-contained interactive HTML page.

    python h52vtp.py --surf_file surf.h5 [--surf_name train_loss] [--zmax 10] [--log] [--interp 200] \
        [--format vtp ply html]
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from loss_landscape.errors import USER_ERRORS
from loss_landscape.cli import _common as argtypes
from loss_landscape.surface.export import FORMATS, INTERP_METHODS, export_surface
from loss_landscape.surface.reader import read_surface


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argtypes.ArgumentParser(description="Export a 2D loss surface file as VTP, PLY or HTML.", add_help=add_help)
    g = p.add_argument_group("input")
    g.add_argument("--surf_file", "--file", "-f", required=True,
                   help="the 2D surface file (HDF5), of this tool or of the original one")
    g.add_argument("--surf_name", default="train_loss",
                   help="the quantity: train_loss, train_acc, test_loss, test_acc, ... (default: train_loss)")
    g = p.add_argument_group("height")
    g.add_argument("--zmax", type=float, default=-1, metavar="Z",
                   help="clip values above this; <= 0 keeps them (default: -1, no clipping)")
    g.add_argument("--log", action="store_true",
                   help="height log(value + 0.1), after clipping (default: the value itself)")
    g.add_argument("--interp", type=int, default=-1, metavar="N",
                   help="resample on an N x N grid over the same x and y range, N >= 2 (default: -1, the file's grid)")
    g.add_argument("--interp_method", default="cubic", choices=INTERP_METHODS,
                   help="for --interp: cubic is the original's bicubic spline and needs every value finite, "
                        "linear tolerates missing points (default: cubic)")
    g = p.add_argument_group("output")
    g.add_argument("--format", nargs="+", default=["vtp"], choices=FORMATS,
                   help="one or more of vtp, ply, html (default: vtp)")
    g.add_argument("--output", "--prefix", default=None, metavar="PREFIX",
                   help="output path prefix; files are PREFIX_<surf_name>[_log][_zmaxZ][_interpN].<format> "
                        "(default: the surface file without .h5)")
    return p


def main(args: argparse.Namespace) -> int:
    try:
        paths = export_surface(read_surface(args.surf_file), surf_name=args.surf_name, formats=args.format,
                               zmax=args.zmax, log=args.log, interp=args.interp, interp_method=args.interp_method,
                               prefix=args.output)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for path in paths:
        print(f"wrote {path}")
    return 0


def run(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    """Parses `argv` (the command line when None) and runs the command; returns the exit code."""
    return argtypes.run_command(get_args_parser, main, argv, prog=prog)


if __name__ == "__main__":
    sys.exit(run())
