"""The examples' training command: ``python -m loss_landscape.examples.<name> --out FILE [--steps N] [--seed S]``."""

from __future__ import annotations

import argparse
from typing import Optional, Sequence


def get_args_parser(*, prog: str, description: str, steps: int, steps_help: Optional[str] = None,
                    add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, add_help=add_help, description=description)
    p.add_argument("--out", required=True, help="where to save the trained state dict (torch.save)")
    p.add_argument("--steps", type=int, default=steps, help=steps_help or f"Adam steps (default: {steps})")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial weights and the batches (default: 0)")
    return p


def parse_args(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """`parser`'s arguments, refusing a negative step count."""
    args = parser.parse_args(argv)
    if args.steps < 0:
        raise SystemExit(f"--steps must be >= 0, found {args.steps}")
    return args
