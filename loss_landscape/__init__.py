"""Loss landscapes of neural networks (Li, Xu, Taylor, Studer & Goldstein, NeurIPS 2018), from Python.

    >>> import loss_landscape as ll
    >>> data = ll.load_dataset("digits")
    >>> plane = ll.random_plane(ll.load_model("digits_mlp"), data, steps=3)  # in memory: numpy arrays
    >>> plane.loss.shape
    (3, 3)

In memory (`random_line`, `random_plane`, `linear_interpolation`, `planar_interpolation`) or file-backed
(`compute_surface`, ``plot_surface.py`` as a function: resumable, across MPI ranks with ``comm``); both compute
every point with the same engine, so they agree to the last bit. doc/python.md has the guide and the table of
names. Names load on first use (PEP 562), so ``import loss_landscape`` and the plotting commands load no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from loss_landscape.version import __version__

# public name -> (module, attribute), imported when the name is first used
_EXPORTS = {
    # models and data
    "load_model": ("loss_landscape.api.files", "load_model"),
    "load_dataset": ("loss_landscape.data", "load_dataset"),
    "EvalData": ("loss_landscape.data", "EvalData"),
    "Split": ("loss_landscape.data", "Split"),
    # directions
    "make_directions": ("loss_landscape.directions.make", "make_directions"),
    "save_directions": ("loss_landscape.directions.files", "save_directions"),
    "load_directions": ("loss_landscape.directions.files", "load_directions"),
    "DirectionSpec": ("loss_landscape.directions.spec", "DirectionSpec"),
    "Directions": ("loss_landscape.directions.spec", "Directions"),
    # landscapes in memory
    "random_line": ("loss_landscape.api.inmemory", "random_line"),
    "random_plane": ("loss_landscape.api.inmemory", "random_plane"),
    "linear_interpolation": ("loss_landscape.api.inmemory", "linear_interpolation"),
    "planar_interpolation": ("loss_landscape.api.inmemory", "planar_interpolation"),
    "Landscape": ("loss_landscape.api.inmemory", "Landscape"),
    # surface files
    "compute_surface": ("loss_landscape.api.files", "compute_surface"),
    "read_surface": ("loss_landscape.surface.reader", "read_surface"),
    "Surface": ("loss_landscape.surface.reader", "Surface"),
    "Axis": ("loss_landscape.surface.grid", "Axis"),
    # pictures
    "plot_1d": ("loss_landscape.plotting.one_d_files", "plot_1d_loss_err"),
    "plot_2d": ("loss_landscape.plotting.two_d", "plot_2d"),
    "figure_1d": ("loss_landscape.api.figures", "figure_1d"),
    "figure_2d": ("loss_landscape.api.figures", "figure_2d"),
    # errors: every wrong input is a UserError with a one-line message
    "UserError": ("loss_landscape.errors", "UserError"),
    "DataError": ("loss_landscape.errors", "DataError"),
    "ModelError": ("loss_landscape.errors", "ModelError"),
    "DirectionError": ("loss_landscape.errors", "DirectionError"),
    "EvaluationError": ("loss_landscape.errors", "EvaluationError"),
    "SurfaceError": ("loss_landscape.errors", "SurfaceError"),
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    try:
        module, attr = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'loss_landscape' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # later uses are plain attribute lookups
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
