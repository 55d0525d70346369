#!/usr/bin/env python
"""Command: the Hessian spectrum at one model: extreme eigenvalues, trace and spectral density
(doc/curvature.md).

The command lives in `loss_landscape.cli.hessian_spectrum`; ``loss-landscape hessian-spectrum`` is the same command.
"""

import sys

from loss_landscape.cli.hessian_spectrum import get_args_parser, main, run  # noqa: F401  (the command's face)

if __name__ == "__main__":
    sys.exit(run())
