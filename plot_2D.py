#!/usr/bin/env python
"""Command: plot a 2D surface file: contour, filled contour, heat map and 3D surface (doc/plot_2d.md).

The command lives in `loss_landscape.cli.plot2d`; ``loss-landscape plot2d`` is the same command.
"""

import sys

from loss_landscape.cli.plot2d import get_args_parser, main, run  # noqa: F401  (the command's face)

if __name__ == "__main__":
    sys.exit(run())
