#!/usr/bin/env python
"""Command: train a CIFAR-10 (or digits, or your own) classifier and save the checkpoints that the
landscape commands read, with the original's flags and folder layout (doc/training.md).

    python cifar10/main.py --model resnet56                      # trained_nets/resnet56_sgd_lr=0.1_...

The command lives in `loss_landscape.cli.train`; ``loss-landscape train`` is the same command.
"""

import sys

from loss_landscape.cli.train import get_args_parser, main, run  # noqa: F401  (the command's face)

if __name__ == "__main__":
    sys.exit(run())
