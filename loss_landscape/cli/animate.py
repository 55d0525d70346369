#!/usr/bin/env python
"""Command: draw the paths of a projection file (from plot_trajectory.py) over the filled contours of a 2D
surface computed on the same directions, as a picture (PNG) and animated epoch by epoch (GIF, MP4), with each
checkpoint's epoch, loss and accuracy in every frame and the loss and accuracy curves beside.

    python animate_trajectory.py --proj_file D_proj_cos.h5 --surf_file surface.h5 [--format png gif mp4]
        [--fps 4] [--hold 4] [--prefix out/path]

Frames (doc/trajectory.md): one per distinct checkpoint epoch of the runs, so for one run the number of its
checkpoints; the GIF shows the last one 1 + --hold frame durations, the MP4 repeats it --hold times (its frame
count is the GIF's plus --hold).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from loss_landscape.errors import USER_ERRORS
from loss_landscape.cli import _common as argtypes


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argtypes.ArgumentParser(description="Training paths over a loss surface: picture and animation.",
                                add_help=add_help)
    g = p.add_argument_group("input")
    g.add_argument("--proj_file", required=True, help="projection file written by plot_trajectory.py")
    g.add_argument("--surf_file", default=None,
                   help="2D surface computed by plot_surface.py on the projection's direction file and centre "
                        "model (default: none, the paths alone)")
    g.add_argument("--surf_name", default="train_loss", help="quantity drawn as filled contours (default: train_loss)")
    g.add_argument("--dir_file", default=None,
                   help="direction file for the axis labels (default: the one the projection file names)")
    g = p.add_argument_group("plot")
    g.add_argument("--log", action="store_true", help="draw the natural log of the surface (default: off)")
    g.add_argument("--vmin", type=float, default=None, help="lowest contour level (default: the surface minimum)")
    g.add_argument("--vmax", type=float, default=None, help="levels stay below this (default: the surface maximum)")
    g.add_argument("--vlevel", type=float, default=None, help="spacing of the levels (default: 24 levels)")
    g = p.add_argument_group("output")
    g.add_argument("--format", nargs="+", default=["png", "gif", "mp4"], choices=("png", "gif", "mp4"),
                   help="files to write (default: png gif mp4)")
    g.add_argument("--prefix", default=None, help="output path without extension (default: the projection file)")
    g.add_argument("--fps", type=float, default=4.0, help="frames per second (default: 4)")
    g.add_argument("--hold", type=int, default=4,
                   help="the last frame lasts 1 + hold frame durations (MP4: hold repeated frames; default: 4)")
    g.add_argument("--dpi", type=int, default=80, help="resolution of the animation (default: 80; PNG: 150)")
    return p


def main(args: argparse.Namespace) -> int:
    from loss_landscape.plotting.figures import save_figure
    from loss_landscape.surface.reader import read_surface
    from loss_landscape.errors import TrajectoryError
    from loss_landscape.plotting.paths import animate_paths, figure_paths, surface_array, surface_levels
    from loss_landscape.trajectory.runs import axis_labels, check_surface, read_runs

    try:
        if not os.path.isfile(args.proj_file):
            raise TrajectoryError(f"projection file {args.proj_file} does not exist")
        paths, center, attrs = read_runs(args.proj_file)
        surface, levels = None, None
        if args.surf_file:
            surface = read_surface(args.surf_file)
            check_surface(surface, directions_sha256=str(attrs.get("directions_sha256", "")),
                          model_sha256=str(attrs.get("model_sha256", "")))
            z = surface_array(surface, args.surf_name, args.log)
            levels = surface_levels(z, args.vmin, args.vmax, args.vlevel)
        labels = axis_labels(args.dir_file or str(attrs.get("dir_file", "")))
        kw = dict(surface=surface, surf_name=args.surf_name, levels=levels, log=args.log, labels=labels)
        prefix = args.prefix or args.proj_file
        if "png" in args.format:
            print(f"wrote {save_figure(figure_paths(paths, **kw), f'{prefix}.png', dpi=150)}")
        anim = [f for f in ("gif", "mp4") if f in args.format]
        if anim:
            animate_paths(paths, prefix, formats=anim, fps=args.fps, hold=args.hold, dpi=args.dpi, **kw)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def run(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    """Parses `argv` (the command line when None) and runs the command; returns the exit code."""
    return argtypes.run_command(get_args_parser, main, argv, prog=prog)


if __name__ == "__main__":
    sys.exit(run())
