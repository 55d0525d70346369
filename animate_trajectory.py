#!/usr/bin/env python
"""Command: animate optimization paths over a 2D surface as GIF or MP4 (doc/trajectory.md).

The command lives in `loss_landscape.cli.animate`; ``loss-landscape animate`` is the same command.
"""

import sys

from loss_landscape.cli.animate import get_args_parser, main, run  # noqa: F401  (the command's face)

if __name__ == "__main__":
    sys.exit(run())
