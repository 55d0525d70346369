#!/usr/bin/env python
"""Command: compute the loss surface of a network around a trained model, in 1D or 2D, on one
process or across MPI ranks, into a resumable HDF5 surface file; optionally plot it.

    python plot_surface.py --x=-1:1:21 --y=-1:1:21 --plot                     # embedded default
    mpirun -n 4 python plot_surface.py --mpi --cuda --model resnet56 \\
        --model_file model_300.t7 --x=-1:1:51 --y=-1:1:51 --plot             # the paper's figure

The command lives in `loss_landscape.cli.surface`; ``loss-landscape surface`` is the same command.
"""

import sys

from loss_landscape.cli.surface import get_args_parser, main, run  # noqa: F401  (the command's face)

if __name__ == "__main__":
    sys.exit(run())
