#!/usr/bin/env python
"""Command: the largest and smallest Hessian eigenvalue at every point of a 1D or 2D grid, and
the map of |min_eig / max_eig| (doc/curvature.md).

The command lives in `loss_landscape.cli.hessian_eigen`; ``loss-landscape hessian-eigen`` is the same command.
"""

import sys

from loss_landscape.cli.hessian_eigen import get_args_parser, main, run  # noqa: F401  (the command's face)

if __name__ == "__main__":
    sys.exit(run())
