#!/usr/bin/env python
"""Command: the largest and smallest Hessian eigenvalue at every point of a 1D or 2D grid, on one process
or across MPI ranks, into a resumable HDF5 file; and the map of |min_eig / max_eig| (the paper's
measure of non-convexity).

    python plot_hessian_eigen.py --x=-1:1:11 --y=-1:1:11 --plot                  # embedded default
    mpirun -n 4 python plot_hessian_eigen.py --mpi --cuda --model resnet56 --model_file model_300.t7 \\
        --x=-1:1:51 --y=-1:1:51 --data_split 10 --plot

Every flag of plot_surface.py applies (model, data, directions, grid, MPI, resume). The eigenvalues are
those of the Hessian of the mean loss over --eval_on (train by default), so unlike the original tool's
they do not grow with the number of batches. Any model, data and loss of plot_surface.py apply (token ids,
tuple or dict inputs, --loss_name token_crossentropy, model_loss or pkg.module:fn: the mean is weighted by sample
or token); --metric does not (a map holds eigenvalues). doc/curvature.md has the details.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from loss_landscape.cli import _common as argtypes
from loss_landscape.cli._surface import (DefaultsFormatter, check_surface_args, execute, get_args_parser as
                                         surface_parser, request_from_args)

def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argtypes.ArgumentParser(
        description="Hessian eigenvalue map: max_eig, min_eig and |min/max| at every grid point.",
        add_help=add_help, formatter_class=DefaultsFormatter, parents=[surface_parser(add_help=False)])
    g = p.add_argument_group("eigenvalue map (also --hessian_params, --hessian_tol, --hessian_seed)")
    g.add_argument("--hessian_maxiter", type=argtypes.pos_int, default=None,
                   help="most Lanczos steps per grid point (default: min(parameters, 500))")
    g.add_argument("--ratio_max", type=float, default=None,
                   help="2D plot: top of the |min/max| colour scale (default: the largest value)")
    return p


def check_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    check_surface_args(args, parser)
    if args.eval_on == "both":
        parser.error("--eval_on: the Hessian is taken on one set, train or test, not both")
    if args.precision != "fp32":
        parser.error(f"--precision {args.precision}: Hessian-vector products are computed in fp32 only")
    if args.compile == "on":
        parser.error("--compile does not apply to Hessian-vector products (double backward)")
    if args.tolerance:
        parser.error("--tolerance estimates losses: an eigenvalue map's Hessian uses its whole set")
    if args.points_per_pass > 1:
        parser.error("--points_per_pass applies to losses, not to Hessian-vector products")
    if getattr(args, "metrics", None):
        parser.error("--metric does not apply to an eigenvalue map (it holds max_eig and min_eig): compute the "
                     "metric's surface with plot_surface.py")
    if args.ratio_max is not None and not args.ratio_max > 0:
        parser.error(f"--ratio_max must be > 0, got {args.ratio_max}")


def plot_eigen(surface, *, ratio_max: float | None = None, show: bool = False, fmt: str = "png") -> list[str]:
    """Writes the |min/max| figure(s) of an eigenvalue map; returns the files written."""
    import numpy as np

    if surface.ndim == 1:
        from loss_landscape.plotting.one_d_files import plot_1d_loss_err
        files = []
        for name in ("eig_ratio", "max_eig", "min_eig"):
            files += plot_1d_loss_err(surface, surf_name=name, show=show, fmt=fmt)
        return files
    from loss_landscape.plotting.two_d import plot_2d
    z = surface.values["eig_ratio"]
    top = ratio_max or (float(np.nanmax(z)) if np.isfinite(z).any() else 1.0)
    top = top if top > 0 else 1.0
    return plot_2d(surface, surf_name="eig_ratio", kinds=("heatmap", "filled"), vmin=0.0, vmax=top * 1.0001,
                   vlevel=top / 20, show=show, fmt=fmt)


def main(args: argparse.Namespace) -> int:
    from loss_landscape.surface.eigen import EigenSettings

    eigen = EigenSettings(eig_on=args.eval_on, params=args.hessian_params, tol=args.hessian_tol,
                          maxiter=args.hessian_maxiter, seed=args.hessian_seed, loss_name=args.loss_name,
                          batch_size=args.batch_size, bn_recalibrate=args.bn_recalibrate,
                          # The set is held on the device unless --data_mode says otherwise (each point passes over
                          # it many times); auto streams only a set larger than --memory_budget.
                          data_mode=getattr(args, "data_mode", "memory"),
                          memory_budget=None if getattr(args, "memory_budget", None) is None
                          else int(args.memory_budget * 2**30),
                          data_workers=getattr(args, "data_workers", 0))
    tag = f"eig-{args.eval_on}-{'all' if args.hessian_params == 'all' else 'dim2plus'}"
    plot = (lambda s: plot_eigen(s, ratio_max=args.ratio_max, show=args.show)) if args.plot else None
    return execute(args, request_from_args(args, surf_tag=tag), eigen=eigen, plot=plot)


def run(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    """Parses `argv` (the command line when None) and runs the command; returns the exit code."""
    return argtypes.run_command(get_args_parser, main, argv, prog=prog, check=check_args)


if __name__ == "__main__":
    sys.exit(run())
