"""The picture `plot_surface.py --preview SECONDS` refreshes while it computes (see `plotting.preview`)."""

from __future__ import annotations

import os
from typing import Optional

import numpy as np

from loss_landscape.plotting.figures import save_figure
from loss_landscape.plotting.one_d import loss_acc_figure
from loss_landscape.plotting.preview import preview_surface
from loss_landscape.plotting.two_d import figure_2d
from loss_landscape.surface.reader import Surface

__all__ = ["preview_file", "write_preview"]


def preview_file(surf_file: str) -> str:
    """Where `plot_surface.py --preview` draws: ``<surface file without .h5>_preview.png``."""
    return os.path.splitext(surf_file)[0] + "_preview.png"


def write_preview(surface: Surface, path: str, *, surf_name: Optional[str] = None, dpi: int = 100) -> str:
    """Draws one picture of a surface being computed (1D: the loss curves; 2D: filled contours of `surf_name`,
    default the first loss) from its complete sub-grid, and replaces `path` atomically; returns `path`."""
    names = sorted(surface.values)
    name = surf_name or next((n for n in names if n.endswith("_loss")), names[0] if names else None)
    if name is None:
        raise ValueError(f"{surface.path} has no values to preview")
    if surface.ndim == 1:
        fig = loss_acc_figure(surface, surf_name=name)
    else:
        shown, note = preview_surface(surface)
        z = np.asarray(shown.values[name], dtype=float)
        finite = z[np.isfinite(z)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        levels = np.linspace(lo, hi if hi > lo else lo + 1.0, 21)
        fig = figure_2d("filled", shown.x, shown.y, z, levels=levels, name=name, subtitle=note)
    tmp = f"{path}.tmp.png"
    save_figure(fig, tmp, dpi=dpi)
    os.replace(tmp, path)
    return path
