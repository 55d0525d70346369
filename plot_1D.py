#!/usr/bin/env python
"""Command: plot a 1D surface file (loss and accuracy against the step along the direction).

    python plot_1D.py --surf_file model.t7.dirs-...-1d.surf-...h5 [--log] [--loss_max 5]
"""

from __future__ import annotations

import argparse
import os
import sys

from figures import output_args_parser, save_figure  # picks the headless backend before pyplot loads
import matplotlib.pyplot as plt  # noqa: E402
from surface_file import Surface, SurfaceError, read_surface  # noqa: E402


def plot_1d_loss_err(surface: Surface, *, xmin: float | None = None, xmax: float | None = None,
                     loss_max: float = 5.0, log: bool = False, show: bool = False, fmt: str = "pdf",
                     prefix: str | None = None) -> list[str]:
    """Draws train (and test) loss with accuracy on a twin axis; returns the files written.

    Example:
        >>> plot_1d_loss_err(read_surface("surf.h5"), fmt="png")  # doctest: +SKIP
        ['surf_1d_loss_acc.png']
    """
    if surface.ndim != 1:
        raise SurfaceError(f"{surface.path} is a 2D surface; use plot_2D.py")
    x = surface.x
    lo = x.min() if xmin is None else xmin
    hi = x.max() if xmax is None else xmax
    prefix = prefix or os.path.splitext(surface.path)[0]
    fig, ax_loss = plt.subplots(figsize=(6, 4.2))
    ax_acc = ax_loss.twinx()
    lines = []
    for group, style in (("train", "-"), ("test", "--")):
        loss, acc = surface.values.get(f"{group}_loss"), surface.values.get(f"{group}_acc")
        if loss is None:
            continue
        plot = ax_loss.semilogy if log else ax_loss.plot
        lines += plot(x, loss, "b" + style, lw=1.5, label=f"{group} loss")
        if acc is not None:
            lines += ax_acc.plot(x, acc, "r" + style, lw=1.5, label=f"{group} accuracy")
    if not lines:
        raise SurfaceError(f"{surface.path} holds no loss values")
    ax_loss.set_xlim(lo, hi)
    if not log:
        ax_loss.set_ylim(0, loss_max)
    ax_loss.set_xlabel("step along the direction")
    ax_loss.set_ylabel("loss", color="b")
    ax_acc.set_ylabel("accuracy (%)", color="r")
    ax_acc.set_ylim(0, 100)
    ax_loss.legend(lines, [ln.get_label() for ln in lines], loc="upper center", bbox_to_anchor=(0.5, -0.14),
                   ncol=len(lines), fontsize=8, frameon=False)
    ax_loss.set_title(os.path.basename(surface.path), fontsize=7)
    fig.tight_layout()
    out = f"{prefix}_1d_loss_acc{'_log' if log else ''}.{fmt}"
    return [save_figure(fig, out, show=show)]


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Plot a 1D loss surface file.", add_help=add_help,
                                parents=[output_args_parser()])
    p.add_argument("--xmin", type=float, default=None, help="left end of the x axis (default: first coordinate)")
    p.add_argument("--xmax", type=float, default=None, help="right end of the x axis (default: last coordinate)")
    p.add_argument("--loss_max", type=float, default=5.0, help="top of the loss axis (default: 5)")
    p.add_argument("--log", action="store_true", help="logarithmic loss axis")
    return p


def main(args: argparse.Namespace) -> int:
    try:
        for path in plot_1d_loss_err(read_surface(args.surf_file), xmin=args.xmin, xmax=args.xmax,
                                     loss_max=args.loss_max, log=args.log, show=args.show, fmt=args.format,
                                     prefix=args.prefix):
            print(f"wrote {path}")
    except SurfaceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
