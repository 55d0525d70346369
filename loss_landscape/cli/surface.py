"""Command: compute the loss surface of a network around a trained model, in 1D or 2D, on one
process or across MPI ranks, into a resumable HDF5 surface file; optionally plot it.

    python plot_surface.py --x=-1:1:21 --y=-1:1:21 --plot                     # embedded default
    mpirun -n 4 python plot_surface.py --mpi --cuda --model resnet56 \\
        --model_file model_300.t7 --x=-1:1:51 --y=-1:1:51 --plot             # the paper's figure
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from loss_landscape.cli import _common as argtypes
from loss_landscape.cli._surface import check_surface_args, execute, get_args_parser, request_from_args


def _plot(args: argparse.Namespace, surface) -> list[str]:
    if surface.ndim == 1:
        from loss_landscape.plotting.one_d_files import plot_1d_loss_err
        return plot_1d_loss_err(surface, loss_max=args.loss_max, log=args.log, show=args.show, fmt="png")
    from loss_landscape.plotting.two_d import plot_2d, read_projection
    traj = read_projection(args.proj_file) if args.proj_file else None
    files = []
    for name in sorted(k for k in surface.values if k.endswith("_loss")):
        files += plot_2d(surface, surf_name=name, vmin=args.vmin, vmax=args.vmax, vlevel=args.vlevel,
                         log=args.log, show=args.show, fmt="png", trajectory=traj)
    return files


def main(args: argparse.Namespace) -> int:
    return execute(args, request_from_args(args), plot=(lambda s: _plot(args, s)) if args.plot else None)


def run(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    """Parses `argv` (the command line when None) and runs the command; returns the exit code."""
    return argtypes.run_command(get_args_parser, main, argv, prog=prog, check=check_surface_args)


if __name__ == "__main__":
    sys.exit(run())
