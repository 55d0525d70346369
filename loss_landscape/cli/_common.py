"""What the commands' parsers share: `ArgumentParser`, whose argument errors are three short lines, and
the ``type=`` functions, each of which parses one value or raises `argparse.ArgumentTypeError` saying what
it expected."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Callable, NoReturn, Optional, Sequence

if TYPE_CHECKING:
    from loss_landscape.surface.grid import Axis


def run_command(get_args_parser: Callable[[], argparse.ArgumentParser],
                main: Callable[[argparse.Namespace], int], argv: Optional[Sequence[str]] = None, *,
                prog: Optional[str] = None,
                check: Optional[Callable[[argparse.Namespace, argparse.ArgumentParser], None]] = None) -> int:
    """What every command's ``run`` does: parses `argv` (the command line when None) with the command's parser
    (named `prog` under ``loss-landscape``), makes its cross-argument `check`, and returns ``main(args)``."""
    parser = get_args_parser()
    if prog:
        parser.prog = prog
    args = parser.parse_args(argv)
    if check is not None:
        check(args, parser)
    return main(args)


class ArgumentParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are a one-line usage, the error and a pointer to ``--help``
    (exit status 2), instead of argparse's usage of every flag above the one line that matters::

        usage: plot_surface.py [options]
        plot_surface.py: error: argument --x: expected MIN:MAX:NUM, got '-1:1'
          see plot_surface.py --help for every option

    ``--help`` is argparse's own, complete. Errors of cross-argument checks (``parser.error(...)``) take
    the same form. Parent parsers (``parents=[...]``) may be plain ``ArgumentParser`` objects.

    Example:
        >>> p = ArgumentParser(prog="cmd")
        >>> _ = p.add_argument("--n", type=pos_int)
        >>> p.parse_args(["--n", "0"])  # doctest: +SKIP
    """

    def error(self, message: str) -> NoReturn:
        lines = [f"usage: {self.prog} [options]", f"{self.prog}: error: {message}"]
        if "--help" in self._option_string_actions:
            lines.append(f"  see {self.prog} --help for every option")
        self.exit(2, "\n".join(lines) + "\n")


def axis(text: str) -> Axis:
    """A grid axis ``MIN:MAX:NUM`` such as ``-1:1:51``."""
    from loss_landscape.surface.grid import Axis  # here: the commands that take no grid need not load h5py to parse flags

    try:
        return Axis.parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _number(text: str, kind, what: str):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None


def nonneg_int(text: str) -> int:
    value = _number(text, int, "a whole number")
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return value


def pos_int(text: str) -> int:
    value = _number(text, int, "a whole number")
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def nonneg_float(text: str) -> float:
    value = _number(text, float, "a number")
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return value


def pos_float(text: str) -> float:
    value = _number(text, float, "a number")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {value}")
    return value


def probability(text: str) -> float:
    value = _number(text, float, "a number in [0, 1]")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a probability in [0, 1], got {value}")
    return value


def loss_name(text: str) -> str:
    """A built-in loss (`loss_landscape.losses.LOSSES`) or ``pkg.module:fn`` (imported when the job starts)."""
    from loss_landscape.losses import check_loss_name
    try:
        return check_loss_name(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def metric(text: str) -> str:
    """A built-in metric (`loss_landscape.metrics.METRICS`), ``pkg.module:fn`` or ``NAME=pkg.module:fn``."""
    from loss_landscape.metrics import check_metric_spec
    try:
        return check_metric_spec(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
