"""Landscapes of a model in memory, for notebooks: along one or two filter-normalized random directions, or
between two or three models, as numpy arrays (and, with ``surf_file``, a surface file of the tool).

Every grid point is computed by the engine behind ``plot_surface.py`` (`surface.compute.PointEvaluator`:
`directions.perturb.Perturber` moves the weights, `evaluation.evaluate` runs the data as `DeviceSplit` tensors),
with the tool's directions (`directions.make.make_directions`: the same seed gives the same directions as
``plot_surface.py --seed S``) and its grid coordinates (`surface.grid.Axis`), so the numbers are those of the
command line to the last bit. The engine works on a copy of the model: the caller's model is never touched.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import numpy as np
from torch import nn

from loss_landscape.api import inputs
from loss_landscape.data import EvalData
from loss_landscape.directions.make import make_directions
from loss_landscape.directions.spec import DirectionSpec, Directions
from loss_landscape.errors import UserError
from loss_landscape.surface.compute import EvalSettings, PointEvaluator, compute_surface
from loss_landscape.surface.grid import Grid
from loss_landscape.surface.reader import Surface

PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True, eq=False)  # numpy arrays have no truth value: compare by identity
class Landscape:
    """Loss and accuracy over a line or a plane of weight space.

    Attributes:
        x: (nx,) coordinates along the x direction (float64, the tool's `surface.grid.Axis` coordinates).
        y: (ny,) coordinates along y, or None for a line.
        loss: mean loss at every point: (nx,) for a line; (ny, nx) for a plane, ``loss[j, i]`` at
            ``(x[i], y[j])`` (rows are y, as in surface files and ``np.meshgrid(x, y)``).
        acc: accuracy in percent, shaped as `loss` (NaN for a loss without accuracy).
        directions: what was walked along: the point (a, b) is ``w0 + a * directions.x + b * directions.y``,
            each a `ParamVector` of tensors in ``model.parameters()`` order (dir_type ``weights``) or
            ``state_dict()`` order (``states``).
        split: the name the values have in a surface file (``train_loss``, ...): ``train`` or ``test``.
        surf_file: the surface file written, or None.
    """

    x: np.ndarray
    y: Optional[np.ndarray]
    loss: np.ndarray
    acc: np.ndarray
    directions: Directions
    split: str = "train"
    surf_file: Optional[str] = None

    @property
    def ndim(self) -> int:
        return 1 if self.y is None else 2

    def to_surface(self) -> Surface:
        """The values as a `surface.reader.Surface`, what the plotting functions take (`plot_1d`, `plot_2d`);
        its path, which names their output files, is `surf_file` or ``landscape``."""
        values = {f"{self.split}_loss": self.loss}
        if not np.isnan(self.acc).all():
            values[f"{self.split}_acc"] = self.acc
        return Surface(self.surf_file or "landscape", self.x, self.y, values, {})


def _landscape(model: nn.Module, data: EvalData, directions: Directions, grid: Grid, *, split: str, loss_name: str,
               batch_size: Optional[int], device: Any, surf_file: Optional[PathLike]) -> Landscape:
    """Evaluates every point of `grid` with the command line's engine; writes `surf_file` when given."""
    settings = EvalSettings(eval_on=(split,), loss_name=loss_name, batch_size=batch_size)
    # The engine puts the model it is given on the device, in eval mode and (image data) in channels_last
    # memory format, and writes each grid point into its tensors: a copy keeps the caller's model as it was.
    work = copy.deepcopy(model)
    if surf_file is None:
        evaluator = PointEvaluator(work, data, directions, directions.spec.dir_type, grid, settings, device)
        try:
            results = evaluator([(flat, (split,)) for flat in range(grid.size)])
        finally:
            evaluator.restore()
        loss, acc = np.full(grid.shape, np.nan), np.full(grid.shape, np.nan)
        for flat, values in results:
            loss[grid.index(flat)] = values[split][0]
            if len(values[split]) > 1:  # losses without an accuracy (regression, a model's own) leave it NaN
                acc[grid.index(flat)] = values[split][1]
    else:
        surf_file = os.fspath(surf_file)
        surface = compute_surface(work, data, directions, grid, surf_file, model_name=type(model).__name__,
                                  model_sha256=inputs.state_sha256(model), settings=settings, device=device)
        loss = surface.values[f"{split}_loss"]
        acc = surface.values.get(f"{split}_acc", np.full(grid.shape, np.nan))
    y = None if grid.y is None else grid.y.coordinates()
    return Landscape(grid.x.coordinates(), y, loss, acc, directions, split, surf_file)


def _common(model: Any, data: Any, *, split: str, loss_name: str, batch_size: Any, device: Any,
            surf_file: Optional[PathLike]) -> tuple[EvalData, dict]:
    inputs.check_model(model)
    ev = inputs.as_eval_data(data, split, name_by_values=surf_file is not None)
    kw = dict(split=split, loss_name=inputs.check_loss(loss_name), batch_size=inputs.check_batch_size(batch_size),
              device=inputs.resolve_device(device), surf_file=surf_file)
    return ev, kw


def random_line(model: nn.Module, data: Any, *, steps: int = 21, distance: Optional[float] = None,
                xlim: Optional[Sequence[float]] = None, norm: str = "filter", ignore: str = "biasbn", seed: int = 123,
                idx: int = 0, dir_type: str = "weights", loss_name: str = "crossentropy",
                batch_size: Optional[int] = None, device: Any = "cpu", split: str = "train",
                surf_file: Optional[PathLike] = None) -> Landscape:
    """Loss and accuracy along one random direction through `model`: ``w0 + a * d`` for `steps` values of a.

    Args:
        model: the centre (a torch.nn.Module); it is evaluated in eval mode and left untouched.
        data: (inputs, targets) tensors or arrays, a `data.EvalData` (its `split` part) or `data.Split`, or a
            DataLoader yielding (inputs, targets), read once in its order. Inputs are used as float32.
        steps: points on the line, ends included; odd counts have the model itself (a = 0) in the middle.
        distance: the line runs over a in [-distance, distance] (default 1: one filter norm each way).
        xlim: (min, max) of a instead of distance.
        norm: how d is scaled against the weights: filter (each filter to the norm of the model's filter, as in
            the paper), layer, weight, dfilter, dlayer, or none (raw N(0, 1)).
        ignore: biasbn: biases and BN parameters do not move; none: they move as the weights do.
        seed, idx: the random direction (``plot_surface.py --seed S --idx I`` draws the same one).
        dir_type: weights (parameters) or states (the state dict, BN running statistics included).
        loss_name: crossentropy, mse (softmax against one-hot targets, the original tool's), or any loss of
            `loss_landscape.losses` (regression_mse, token_crossentropy, model_loss, ...) or ``pkg.module:fn``; a
            loss without an accuracy leaves acc NaN.
        batch_size: samples per forward pass (default 128 on a CPU, 1024 on a GPU); changes only float rounding.
        device: where to evaluate ('cpu', 'cuda', 'cuda:1', a torch.device).
        split: which part of an `EvalData` to evaluate, and the name of the values in a surface file.
        surf_file: also write the values to this surface file (resumed when it holds this very job: same
            weights, directions, data and grid; refused when it holds another).

    Returns:
        A `Landscape` with x, loss and acc of shape (steps,) and the direction used.

    Example:
        >>> import loss_landscape as ll
        >>> data = ll.load_dataset("digits")
        >>> model = ll.load_model("digits_mlp")
        >>> line = ll.random_line(model, data, steps=5, distance=0.5)
        >>> line.x.tolist()
        [-0.5, -0.25, 0.0, 0.25, 0.5]
        >>> other = ll.random_line(model, data, steps=5, distance=0.5, seed=1)
        >>> bool(line.loss[2] == other.loss[2])  # the middle is the model itself, whatever the direction
        True
    """
    ev, kw = _common(model, data, split=split, loss_name=loss_name, batch_size=batch_size, device=device,
                     surf_file=surf_file)
    grid = Grid(inputs.axis(inputs.limits(distance, xlim, "xlim"), inputs.check_steps(steps), "xlim"))
    spec = DirectionSpec(dir_type=inputs.check_dir_type(dir_type), kind="random", xnorm=inputs.check_norm(norm),
                         xignore=inputs.check_ignore(ignore), seed=inputs.check_seed(seed),
                         idx=inputs.check_seed(idx, "idx"), two_d=False)
    return _landscape(model, ev, make_directions(model, spec), grid, **kw)


def random_plane(model: nn.Module, data: Any, *, steps: Union[int, Sequence[int]] = 21,
                 distance: Optional[float] = None, xlim: Optional[Sequence[float]] = None,
                 ylim: Optional[Sequence[float]] = None, norm: str = "filter", ignore: str = "biasbn",
                 seed: int = 123, idx: int = 0, dir_type: str = "weights", loss_name: str = "crossentropy",
                 batch_size: Optional[int] = None, device: Any = "cpu", split: str = "train",
                 surf_file: Optional[PathLike] = None) -> Landscape:
    """Loss and accuracy over the plane of two random directions through `model`: ``w0 + a * dx + b * dy``.

    The paper's figure: ``plot_surface.py --x=-1:1:N --y=-1:1:N --seed S`` with the same model gives the same
    numbers, bit for bit (y is drawn after x from the same generator, and normalized alike).

    Args:
        model, data, norm, ignore, seed, idx, dir_type, loss_name, batch_size, device, split, surf_file: as in
            `random_line`.
        steps: points along each axis, or a pair (nx, ny).
        distance: a and b run over [-distance, distance] (default 1).
        xlim, ylim: (min, max) of a and of b instead of distance (one given: the other is (-1, 1)).

    Returns:
        A `Landscape` with loss and acc of shape (ny, nx), ``loss[j, i]`` at ``(x[i], y[j])``.

    Example:
        >>> import loss_landscape as ll
        >>> data = ll.load_dataset("digits")
        >>> model = ll.load_model("digits_mlp")
        >>> plane = ll.random_plane(model, data, steps=5, distance=0.5)
        >>> plane.loss.shape, float(plane.x[2]), float(plane.y[2])
        ((5, 5), 0.0, 0.0)
        >>> bool(plane.loss[2, 2] == ll.random_line(model, data, steps=3).loss[1])  # the model itself
        True
    """
    ev, kw = _common(model, data, split=split, loss_name=loss_name, batch_size=batch_size, device=device,
                     surf_file=surf_file)
    nx, ny = inputs.plane_steps(steps)
    if distance is not None and (xlim is not None or ylim is not None):
        raise UserError("give distance or xlim/ylim, not both")
    grid = Grid(inputs.axis(inputs.limits(distance, xlim, "xlim"), nx, "xlim"),
                inputs.axis(inputs.limits(distance, ylim, "ylim"), ny, "ylim"))
    spec = DirectionSpec(dir_type=inputs.check_dir_type(dir_type), kind="random", xnorm=inputs.check_norm(norm),
                         xignore=inputs.check_ignore(ignore), seed=inputs.check_seed(seed),
                         idx=inputs.check_seed(idx, "idx"), two_d=True)
    return _landscape(model, ev, make_directions(model, spec), grid, **kw)


def linear_interpolation(model_start: nn.Module, model_end: nn.Module, data: Any, *, steps: int = 21,
                         xlim: Sequence[float] = (0.0, 1.0), dir_type: str = "states",
                         loss_name: str = "crossentropy", batch_size: Optional[int] = None, device: Any = "cpu",
                         split: str = "train", surf_file: Optional[PathLike] = None) -> Landscape:
    """Loss and accuracy on the line through two models: ``w_start + a * (w_end - w_start)``.

    a = 0 is `model_start` exactly; a = 1 is `model_end` up to the float32 rounding of
    ``w_start + (w_end - w_start)`` (what ``plot_surface.py --model_file2`` computes too).

    Args:
        model_start, model_end: two models of one architecture (same tensor names and shapes).
        data, loss_name, batch_size, device, split, surf_file: as in `random_line`.
        steps: points on the line, ends included.
        xlim: (min, max) of a; (-0.5, 1.5) also shows the line beyond both models.
        dir_type: states (default: BN running statistics move too, so a = 1 has model_end's statistics) or
            weights (parameters only; the statistics stay model_start's).

    Returns:
        A `Landscape` whose x is a and whose direction x is ``w_end - w_start`` (not normalized).

    Example:
        >>> import loss_landscape as ll
        >>> data = ll.load_dataset("digits")
        >>> a, b = ll.load_model("digits_mlp"), ll.load_model("digits_mlp")  # two initializations
        >>> path = ll.linear_interpolation(a, b, data, steps=3)
        >>> path.x.tolist()
        [0.0, 0.5, 1.0]
        >>> bool(path.loss[0] == ll.random_line(a, data, steps=3).loss[1])  # a = 0 is model_start itself
        True
    """
    ev, kw = _common(model_start, data, split=split, loss_name=loss_name, batch_size=batch_size, device=device,
                     surf_file=surf_file)
    inputs.check_model(model_end, "model_end")
    dir_type = inputs.check_dir_type(dir_type)
    inputs.check_same_layout(model_start, model_end, dir_type, ("model_start", "model_end"))
    grid = Grid(inputs.axis(xlim, inputs.check_steps(steps), "xlim"))
    spec = DirectionSpec(dir_type=dir_type, kind="target", xnorm="", xignore="", two_d=False)
    return _landscape(model_start, ev, make_directions(model_start, spec, model2=model_end), grid, **kw)


def planar_interpolation(model_start: nn.Module, model_end_one: nn.Module, model_end_two: nn.Module, data: Any, *,
                         steps: Union[int, Sequence[int]] = 21, xlim: Sequence[float] = (0.0, 1.0),
                         ylim: Sequence[float] = (0.0, 1.0), dir_type: str = "states",
                         loss_name: str = "crossentropy", batch_size: Optional[int] = None, device: Any = "cpu",
                         split: str = "train", surf_file: Optional[PathLike] = None) -> Landscape:
    """Loss and accuracy over the plane through three models:
    ``w_start + a * (w_end_one - w_start) + b * (w_end_two - w_start)``.

    The corners (0, 0), (1, 0) and (0, 1) are the three models (the last two up to float32 rounding, as in
    `linear_interpolation`); ``plot_surface.py --model_file2 --model_file3`` computes the same plane.

    Args:
        model_start, model_end_one, model_end_two: three models of one architecture.
        data, dir_type, loss_name, batch_size, device, split, surf_file: as in `linear_interpolation`.
        steps: points along each axis, or a pair (nx, ny).
        xlim, ylim: (min, max) of a and of b.

    Returns:
        A `Landscape` with loss and acc of shape (ny, nx), ``loss[j, i]`` at ``(x[i], y[j])``.

    Example:
        >>> import loss_landscape as ll
        >>> data = ll.load_dataset("digits")
        >>> a, b, c = (ll.load_model("digits_mlp") for _ in range(3))
        >>> plane = ll.planar_interpolation(a, b, c, data, steps=3)
        >>> plane.loss.shape
        (3, 3)
        >>> path = ll.linear_interpolation(a, b, data, steps=3)
        >>> bool((plane.loss[0] == path.loss).all())  # the row b = 0 is the line from a to b
        True
    """
    ev, kw = _common(model_start, data, split=split, loss_name=loss_name, batch_size=batch_size, device=device,
                     surf_file=surf_file)
    dir_type = inputs.check_dir_type(dir_type)
    for name, other in (("model_end_one", model_end_one), ("model_end_two", model_end_two)):
        inputs.check_model(other, name)
        inputs.check_same_layout(model_start, other, dir_type, ("model_start", name))
    nx, ny = inputs.plane_steps(steps)
    grid = Grid(inputs.axis(xlim, nx, "xlim"), inputs.axis(ylim, ny, "ylim"))
    spec = DirectionSpec(dir_type=dir_type, kind="target", xnorm="", xignore="", ynorm="", yignore="", two_d=True)
    directions = make_directions(model_start, spec, model2=model_end_one, model3=model_end_two)
    return _landscape(model_start, ev, directions, grid, **kw)


__all__ = ["Landscape", "random_line", "random_plane", "linear_interpolation", "planar_interpolation"]
