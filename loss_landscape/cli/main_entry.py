"""The ``loss-landscape`` command: one subcommand per command script, with the same flags and ``--help``.

    loss-landscape surface --x=-0.5:0.5:11 --y=-0.5:0.5:11 --plot      # as python plot_surface.py ...
    loss-landscape plot2d --surf_file S.h5                             # as python plot_2D.py ...
    mpirun -n 4 loss-landscape surface --mpi ...

A subcommand's module is imported only when it runs, so ``--help`` answers at once.
"""

from __future__ import annotations

import importlib
import sys
from typing import Sequence

from loss_landscape.version import __version__

# subcommand -> (module under loss_landscape.cli, the script it equals, what it does)
COMMANDS = {
    "surface": ("surface", "plot_surface.py", "compute a 1D or 2D loss surface into a resumable HDF5 file"),
    "plot1d": ("plot1d", "plot_1D.py", "plot 1D surface files: one, an overlay, or a set of directions"),
    "plot2d": ("plot2d", "plot_2D.py", "plot a 2D surface file: contours, heat map, 3D"),
    "export": ("export", "h52vtp.py", "export a surface to ParaView (.vtp), an HTML page, OBJ, PLY or CSV"),
    "trajectory": ("trajectory", "plot_trajectory.py", "PCA directions of checkpoints and the projected path"),
    "animate": ("animate", "animate_trajectory.py", "animate trajectories over a surface (GIF, MP4)"),
    "hessian-eigen": ("hessian_eigen", "plot_hessian_eigen.py", "the Hessian eigenvalue map of a 1D or 2D grid"),
    "hessian-spectrum": ("hessian_spectrum", "plot_hessian_spectrum.py",
                         "the Hessian spectrum at one model: extreme eigenvalues, trace, density"),
    "train": ("train", "cifar10/main.py", "train a classifier and save the checkpoints the commands read"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    rows = [f"  {name:<{width}}  {what} ({script})" for name, (_, script, what) in COMMANDS.items()]
    return ("usage: loss-landscape COMMAND [flags]   (loss-landscape COMMAND --help for its flags)\n\n"
            "Loss landscapes of neural networks (Li et al. 2018), on one process or across MPI ranks.\n\n"
            "commands:\n" + "\n".join(rows))


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``loss-landscape COMMAND ...``; returns the exit code (2 for an unknown command)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"loss-landscape {__version__}")
        return 0
    name = argv[0]
    if name not in COMMANDS:
        print(f"loss-landscape: error: unknown command {name!r}: expected one of {', '.join(COMMANDS)}",
              file=sys.stderr)
        return 2
    module = importlib.import_module(f"loss_landscape.cli.{COMMANDS[name][0]}")
    return module.run(argv[1:], prog=f"loss-landscape {name}")


if __name__ == "__main__":
    sys.exit(main())
