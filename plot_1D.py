#!/usr/bin/env python
"""Command: plot 1D surface files: one file, an overlay of several, or a set of random directions
(doc/plot_1d.md).

The command lives in `loss_landscape.cli.plot1d`; ``loss-landscape plot1d`` is the same command.
"""

import sys

from loss_landscape.cli.plot1d import get_args_parser, main, run  # noqa: F401  (the command's face)

if __name__ == "__main__":
    sys.exit(run())
