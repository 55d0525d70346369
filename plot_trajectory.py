#!/usr/bin/env python
"""Command: PCA directions of a training run's checkpoints and the projected optimization path
(doc/trajectory.md).

The command lives in `loss_landscape.cli.trajectory`; ``loss-landscape trajectory`` is the same command.
"""

import sys

from loss_landscape.cli.trajectory import get_args_parser, main, run  # noqa: F401  (the command's face)

if __name__ == "__main__":
    sys.exit(run())
