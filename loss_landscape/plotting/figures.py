"""What every plotting command shares: the headless backend, output options, and writing a figure."""

from __future__ import annotations

import argparse
import sys

import matplotlib

# Commands run on clusters without a display: the headless backend, unless pyplot is already in use or this runs
# in a notebook (Jupyter's kernel), whose inline backend is kept; --show opens a window explicitly.
if "matplotlib.pyplot" not in sys.modules and "ipykernel" not in sys.modules:
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

FORMATS = ("pdf", "png", "svg")


def output_args_parser(*, surf_file: bool = True) -> argparse.ArgumentParser:
    """Parent parser (``parents=[...]``) with the options every plotting command takes.

    Args:
        surf_file: include the usual single, required ``--surf_file`` (a command that takes several
            files declares its own).
    """
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("output")
    if surf_file:
        g.add_argument("--surf_file", required=True, help="the surface file (HDF5)")
    g.add_argument("--format", default="pdf", choices=FORMATS, help="file format (default: pdf)")
    g.add_argument("--prefix", default=None, help="output path prefix (default: the surface file without .h5)")
    g.add_argument("--dpi", type=int, default=300, help="resolution of PNG files (default: 300)")
    g.add_argument("--show", action="store_true", help="also open a window")
    return p


def save_figure(fig, path: str, *, show: bool = False, dpi: int = 300) -> str:
    """Writes `fig` to `path` (at `dpi` for PNG), optionally shows it, and closes it. Returns `path`."""
    fig.savefig(path, dpi=dpi if path.endswith(".png") else None, bbox_inches="tight")
    if show:
        plt.show()
    plt.close(fig)
    return path
