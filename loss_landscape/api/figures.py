"""Figures to look at in a notebook: the plotting commands' pictures of a surface, returned as matplotlib
Figures instead of written to files. Loads no torch, like all plotting code.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from loss_landscape.errors import SurfaceError
from loss_landscape.plotting import one_d, two_d
from loss_landscape.surface.reader import Surface


def _surface(surface: Any) -> Surface:
    """A `Surface`, or what an in-memory `Landscape` gives as one."""
    if isinstance(surface, Surface):
        return surface
    if hasattr(surface, "to_surface"):
        return surface.to_surface()
    raise SurfaceError(f"expected a Surface (ll.read_surface) or a Landscape (ll.random_plane, ...), got a "
                       f"{type(surface).__name__}")


def figure_1d(surface: Any, **kwargs: Any):
    """Loss and accuracy along x (`plotting.one_d.loss_acc_figure`, what ``plot_1D.py`` draws first).

    Args:
        surface: a 1D `Surface` or `Landscape`.
        **kwargs: surf_name, xmin, xmax, loss_max, log, title, as `loss_acc_figure` takes them.

    Returns:
        The matplotlib Figure (not saved, not closed).

    Example:
        >>> import numpy as np, loss_landscape as ll
        >>> x = np.linspace(-1, 1, 5)
        >>> s = ll.Surface("bowl", x, None, {"train_loss": x**2, "train_acc": 100 - 10 * x**2}, {})
        >>> len(ll.figure_1d(s).axes)  # loss and accuracy axes
        2
    """
    return one_d.loss_acc_figure(_surface(surface), **kwargs)


def figure_2d(surface: Any, *, kind: str = "contour", surf_name: str = "train_loss", vmin: float = 0.1,
              vmax: float = 10.0, vlevel: float = 0.5, zlim: float = 10.0, log: bool = False,
              labels: tuple[str, str] = ("x", "y")):
    """One of ``plot_2D.py``'s pictures of a 2D surface, with its levels and log scale.

    Args:
        surface: a 2D `Surface` or `Landscape`.
        kind: contour, filled, heatmap or 3d.
        surf_name: the quantity (train_loss, test_acc, ...).
        vmin, vmax, vlevel: contour levels vmin, vmin + vlevel, ... < vmax (also the colour scale).
        zlim: top of the 3D surface (higher values are clipped).
        log: draw the natural log of the values (levels and zlim then apply to the log).
        labels: axis labels.

    Returns:
        The matplotlib Figure (not saved, not closed).

    Example:
        >>> import numpy as np, loss_landscape as ll
        >>> g = np.linspace(-1, 1, 11)
        >>> s = ll.Surface("bowl", g, g, {"train_loss": np.add.outer(g**2, g**2)}, {})
        >>> fig = ll.figure_2d(s, kind="filled", vmin=0, vmax=2, vlevel=0.25)
        >>> fig.axes[0].get_title()
        'train_loss'
    """
    s = _surface(surface)
    z = two_d.surface_values(s, surf_name)
    two_d.check_levels(vmin, vmax, vlevel)
    if kind not in two_d.KINDS:
        raise SurfaceError(f"unknown figure kind {kind!r}; expected {', '.join(two_d.KINDS)}")
    if log:
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.log(z)  # values <= 0 become gaps, as in plot_2d
    shown = two_d.DISPLAY_NAMES.get(surf_name, surf_name)
    return two_d.figure_2d(kind, s.x, s.y, z, levels=np.arange(vmin, vmax, vlevel), zlim=zlim,
                           name=f"{shown} (log)" if log else shown, labels=labels)


__all__ = ["figure_1d", "figure_2d"]
