#!/usr/bin/env python
"""Command: export a surface file to ParaView (.vtp), a self-contained HTML page, OBJ, PLY or CSV
(doc/export.md).

The command lives in `loss_landscape.cli.export`; ``loss-landscape export`` is the same command.
"""

import sys

from loss_landscape.cli.export import get_args_parser, main, run  # noqa: F401  (the command's face)

if __name__ == "__main__":
    sys.exit(run())
