"""Computing a loss surface: evaluate a model at every point of a grid in a direction plane.

`compute_surface` is the library entry point behind ``plot_surface.py``; it takes explicit
arguments (no argparse Namespace) and an optional MPI communicator.

Example:
    >>> from data import load_dataset
    >>> from net_plotter import Directions, DirectionSpec, create_random_direction, direction_generator
    >>> from param_vector import ParamVector
    >>> data = load_dataset("digits")                                # doctest: +SKIP
    >>> model = models.load_model("digits_cnn", "model.t7")           # doctest: +SKIP
    >>> w = ParamVector.from_model(model, "weights")                  # doctest: +SKIP
    >>> g = direction_generator(123, 0)                               # doctest: +SKIP
    >>> dirs = Directions(create_random_direction(w, generator=g),
    ...                   create_random_direction(w, generator=g), DirectionSpec(two_d=True))  # doctest: +SKIP
    >>> surf = compute_surface(model, data, dirs, Grid(Axis(-1, 1, 11), Axis(-1, 1, 11)),
    ...                        "surf.h5", model_name="digits_cnn")      # doctest: +SKIP
    >>> surf.values["train_loss"].shape                               # doctest: +SKIP
    (11, 11)
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch
from torch import nn

from loss_landscape._util import rank_and_size
from loss_landscape.data import EvalData
from loss_landscape import batches as bt
from loss_landscape.evaluation import (Criterion, default_batch_size, evaluate_values, local_size_from_env,
                                       precision_context, recalibrate_bn)
from loss_landscape.streaming import StreamSplit, default_budget, place
from loss_landscape.directions.spec import Directions
from loss_landscape.directions.perturb import Perturber
from loss_landscape.parallel import faults
from loss_landscape.parallel.steps import everywhere, root_first
from loss_landscape.parallel.scheduler import run_tasks
from loss_landscape.surface.grid import Axis, Grid, Provenance, SurfaceJob, ValueGroup, value_groups
from loss_landscape.surface.reader import Surface, read_surface
from loss_landscape.surface.file import SurfaceFile

__all__ = ["EvalSettings", "GridEvaluator", "PointEvaluator", "compute_surface", "fill_surface", "Axis", "Grid"]


@dataclass(frozen=True)
class EvalSettings:
    """How each grid point is evaluated (mirrors what the surface file records).

    Attributes:
        eval_on: the sets to evaluate, ``("train",)``, ``("test",)`` or both.
        loss_name: a loss of `loss_landscape.losses` (``crossentropy``, ``mse``: the original's softmax against
            one-hot, ``regression_mse``, ``token_crossentropy``, ``model_loss``, ...) or ``pkg.module:fn``.
        metrics: more values per point (`loss_landscape.metrics`: ``top5``, ``perplexity``, ``pkg.module:fn``), each
            stored as ``<set>_<name>``.
        batch_size: images per forward pass; None picks one for the device.
        precision: ``fp32``, ``tf32`` or ``bf16``.
        bn_recalibrate: re-estimate BN statistics from this many training batches at each point (0: off).
        channels_last: NHWC images and weights (faster convolutions on CPUs and GPUs); None: on for 4-D data.
        compile: run the model through ``torch.compile``: True, False, or None (auto: when the grid repays the
            compile time, `speed.compiling.decide_compile`).
        fold_bn: fold eval-mode BatchNorm into the convolution or linear layer before it (`speed.fold`).
        shortcut: compute the unmoved prefix and the first moved layer's terms once (`speed.shortcut`).
        points_per_pass: grid points evaluated in one batched pass (`speed.multipoint`).
        tolerance: 0 (exact) or the standard error allowed relative to the loss (`speed.estimate`); each set's
            rows are shuffled by `tolerance_seed` once.
        data_mode: ``memory`` (the sets are held on the device), ``stream`` (read from their Dataset at every
            point) or ``auto`` (streams a set larger than `memory_budget`); the values are the same.
        memory_budget: bytes of data a rank may hold on its device; None: half of what is free there.
        data_workers: DataLoader workers of the streaming path (0: the rank reads).
    """

    eval_on: tuple[str, ...] = ("train",)
    loss_name: str = "crossentropy"
    metrics: tuple[str, ...] = ()
    batch_size: Optional[int] = None
    precision: str = "fp32"
    bn_recalibrate: int = 0
    channels_last: Optional[bool] = None
    compile: Optional[bool] = None
    fold_bn: bool = True
    shortcut: bool = True
    points_per_pass: int = 1
    tolerance: float = 0.0
    tolerance_seed: int = 0
    data_mode: str = "auto"
    memory_budget: Optional[int] = None
    data_workers: int = 0

    def criterion(self) -> Criterion:
        return Criterion.of(self.loss_name, self.metrics)

    def groups(self, criterion: Optional[Criterion] = None) -> tuple[ValueGroup, ...]:
        """The value groups these settings fill (`surface.grid.value_groups`)."""
        c = criterion or self.criterion()
        return value_groups(self.eval_on, accuracy=c.loss.accuracy is not None,
                            metrics=tuple((m.name, m.spec) for m in c.metrics), estimates=self.tolerance > 0)


class GridEvaluator:
    """What every per-rank evaluator of grid points holds: the centre model on the device, a `Perturber`
    over it, the batch size, and the saved state `restore` puts back. Subclasses define ``__call__``
    (chunk in, results out).

    The model is placed on the device (and in its memory format) first and the `Perturber` made after, so
    its in-place writes reach the tensors the forward pass reads. This changes the caller's model: it is moved
    to the device, put in eval mode and (with `channels_last`) converted, and `restore` puts back only its
    weights and buffers; `loss_landscape.api` works on a copy for that reason.
    """

    def __init__(self, model: nn.Module, directions: Directions, dir_type: str, grid: Grid, device: torch.device,
                 *, batch_size: Optional[int] = None, channels_last: bool = False):
        self.grid, self.device = grid, device
        self.model = model.to(device).eval()
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self._saved_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.perturber = Perturber(self.model, directions, dir_type)
        self.batch_size = batch_size or default_batch_size(device)

    def restore(self) -> None:
        """Puts the unperturbed model (weights and BN statistics) back."""
        self.model.load_state_dict(self._saved_state)


class PointEvaluator(GridEvaluator):
    """Evaluates chunks of grid points on one device; one instance per rank.

    A chunk is a list of (flat index, group names) and the result a list of (flat index, {group: values}), each
    set evaluated once per point for all its groups. `data_modes` says how each set is held (``memory`` or
    ``stream``); `paths` what makes each point cheaper (recorded in the file as ``speed.*``):

    - ``points_per_pass`` > 1: P points of a chunk in one batched pass (`speed.multipoint`);
    - ``shortcut``: the layers the directions leave unmoved, and the first moved Linear/Conv layer's three terms,
      computed once per batch and kept (`speed.shortcut`), where they fit the memory budget;
    - else ``fold_bn``: eval-mode BatchNorm folded into the layer before it at each point (`speed.fold`);
    - ``compile``: the forward through ``torch.compile``, when asked or when the grid repays it (auto);
    - ``tolerance``: each set's rows shuffled once (seeded) and each point stopped once its loss's standard error is
      below tolerance x the loss (`speed.estimate`).

    Every path gives the plain path's values to float rounding; the tests hold each to it.
    """

    def __init__(self, model: nn.Module, data: EvalData, directions: Directions, dir_type: str, grid: Grid,
                 settings: EvalSettings, device: torch.device, *, expected_points: Optional[int] = None):
        self.channels_last = settings.channels_last if settings.channels_last is not None else _is_images(data)
        super().__init__(model, directions, dir_type, grid, device, batch_size=settings.batch_size,
                         channels_last=self.channels_last)
        self.settings = settings
        self.criterion = settings.criterion()
        self.groups = {g.name: g for g in settings.groups(self.criterion)}
        need_train = "train" in settings.eval_on or settings.bn_recalibrate > 0
        self.splits, self.data_modes = {}, {}
        for name, split in (("train", data.train), ("test", data.test)):
            if name == "train" and need_train or name == "test" and "test" in settings.eval_on:
                self.splits[name] = place(split, device, mode=settings.data_mode, budget=settings.memory_budget,
                                          channels_last=self.channels_last, batch_size=self.batch_size,
                                          workers=settings.data_workers)
                self.data_modes[name] = "stream" if isinstance(self.splits[name], StreamSplit) else "memory"
        self.paths: dict[str, Any] = {}
        if settings.tolerance > 0:
            from loss_landscape.speed.estimate import shuffled
            for name in settings.eval_on:
                self.splits[name] = shuffled(self.splits[name], settings.tolerance_seed)
            self.paths["tolerance"] = settings.tolerance
        self.multi = None
        if settings.points_per_pass > 1:
            self._build_multipoint(dir_type)
        self.folded = None
        if self.multi is None and settings.fold_bn:
            from loss_landscape.speed.fold import FoldedForward
            self.folded = FoldedForward.build(self.model)
        self.shortcuts: dict[str, Any] = {}
        if self.multi is None and settings.shortcut:
            self._build_shortcuts()
        if self.folded is not None:
            self.paths["fold_bn"] = self.folded.pairs
        self.forward: Callable = self.folded if self.folded is not None else self.model
        self.forwards: dict[str, Callable] = {name: self.shortcuts[name].forward if name in self.shortcuts
                                              else self.forward for name in settings.eval_on}
        if self.multi is None:
            self._choose_compile(expected_points if expected_points is not None else grid.size)

    # -- building the paths ---------------------------------------------------------------------------------

    def _build_multipoint(self, dir_type: str) -> None:
        from loss_landscape.errors import EvaluationError
        from loss_landscape.speed.multipoint import MultiPoint
        split = self.splits[self.settings.eval_on[0]]
        example = next(iter(split.batches(min(8, len(split)))))[0]
        ok, why = MultiPoint.supports(self.model, example, dir_type=dir_type)
        if not ok:
            raise EvaluationError(why)
        self.multi = MultiPoint.from_perturber(self.model, self.perturber, dir_type,
                                               points_per_pass=self.settings.points_per_pass)
        self.paths["points_per_pass"] = self.settings.points_per_pass

    def _build_shortcuts(self) -> None:
        """The shortcut of each set held in memory (`speed.shortcut`), where it skips layers with weights, or
        where it is a first-layer precompute and no BN fold applies (the two do not combine); else the reason."""
        if self.settings.bn_recalibrate > 0:
            self.paths["shortcut"] = "off: BN recalibration"
            return
        from loss_landscape.speed.shortcut import Shortcut
        moved = self.perturber.moved_by_name()
        budget = self.settings.memory_budget if self.settings.memory_budget is not None \
            else default_cache_budget(self.device)
        reasons = []
        for name in self.settings.eval_on:
            if self.data_modes[name] != "memory":
                reasons.append(f"{name}: streamed")
                continue
            made = Shortcut.make(self.model, moved, self.splits[name], batch_size=self.batch_size,
                                 budget_bytes=budget - sum(c.cached_bytes for c in self.shortcuts.values()),
                                 precision=self.settings.precision, adameq=self.perturber.adameq)
            if isinstance(made, str):
                reasons.append(f"{name}: {made}")
            elif made.kind == "first-layer" and self.folded is not None:
                reasons.append(f"{name}: first layer only; the BN fold is used instead")
            else:
                self.shortcuts[name] = made
        if self.shortcuts:
            self.folded = None
            self.paths["shortcut"] = ",".join(sorted({c.kind for c in self.shortcuts.values()}))
            self.paths["shortcut_bytes"] = int(sum(c.cached_bytes for c in self.shortcuts.values()))
        else:
            self.paths["shortcut"] = "off: " + "; ".join(reasons)

    def _choose_compile(self, points: int) -> None:
        """Compiles the forward when asked, or (auto) when `points` points at the measured eager speed repay the
        compile time (`speed.compiling`); the choice and its reason go to `paths`."""
        mode = {True: "on", False: "off", None: "auto"}[self.settings.compile]
        if mode == "off":
            return
        from loss_landscape.speed.compiling import FOLDED_SPEEDUP, SPEEDUP, compile_forward, decide_compile
        name = self.settings.eval_on[0]
        point_seconds = self._time_point(name) if mode == "auto" else 0.0
        want, reason = decide_compile(mode, point_seconds=point_seconds, points=points,
                                      speedup=FOLDED_SPEEDUP if self.folded is not None and not self.shortcuts
                                      else SPEEDUP)
        self.paths["compile_reason"] = reason
        if not want:
            return
        done: dict[int, Callable] = {}
        total = 0.0
        for name, fn in self.forwards.items():
            if id(fn) not in done:
                shapes = _first_and_last_batch(self._eval_split(name), self.batch_size)
                compiled, seconds, failure = compile_forward(fn, lambda f: [bt.call_model(f, x) for x in shapes])
                total += seconds
                if failure:
                    self.paths["compile_reason"] = f"compile failed, eager: {failure}"
                    self.paths["compile_seconds"] = round(total, 3)
                    return
                done[id(fn)] = compiled
        self.forwards = {name: done[id(fn)] for name, fn in self.forwards.items()}
        self.paths["compile_seconds"] = round(total, 3)
        self.paths["compile"] = True

    def _time_point(self, name: str) -> float:
        """Seconds of one evaluation of set `name` at the centre, from its first two batches scaled to the set."""
        split = self._eval_split(name)
        n, seen, t0 = len(split), 0, time.perf_counter()
        with torch.no_grad(), precision_context(self.settings.precision, self.device):
            for k, (x, _) in enumerate(split.batches(self.batch_size)):
                if k == 2:
                    break
                if self.folded is not None:
                    self.folded.refresh_()
                bt.call_model(self.forwards[name], x)
                seen += bt.rows(x)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return (time.perf_counter() - t0) * n / max(seen, 1)

    def _eval_split(self, name: str) -> Any:
        return self.shortcuts[name].split if name in self.shortcuts else self.splits[name]

    # -- evaluating -----------------------------------------------------------------------------------------

    def __call__(self, chunk: Sequence[tuple[int, Sequence[str]]]) -> list[tuple[int, dict]]:
        if self.multi is not None:
            return self._call_multi(chunk)
        out = []
        for flat, groups in chunk:
            coords = self.grid.coords(flat)
            self.perturber.set_point_(coords)
            if self.settings.bn_recalibrate > 0:
                recalibrate_bn(self.model, self.splits["train"], batches=self.settings.bn_recalibrate,
                               batch_size=self.batch_size, precision=self.settings.precision)
            if self.folded is not None:
                self.folded.refresh_()
            for cut in self.shortcuts.values():
                cut.set_point_(coords)
            by_split: dict[str, dict[str, float]] = {}
            values = {}
            for name in groups:
                g = self.groups[name]
                if g.split not in by_split:
                    by_split[g.split] = self._evaluate(g.split)
                values[name] = tuple(by_split[g.split][q] for q in g.quantities)
            out.append((flat, values))
        return out

    def _evaluate(self, name: str) -> dict[str, float]:
        forward = self.forwards[name]
        split = self._eval_split(name)
        if self.settings.tolerance > 0:
            from loss_landscape.speed.estimate import estimate_values
            est = estimate_values(forward, split, self.criterion, batch_size=self.batch_size,
                                  precision=self.settings.precision, tolerance=self.settings.tolerance)
            return {**est.values, "loss_stderr": est.loss_stderr, "samples": float(est.samples)}
        return evaluate_values(forward, split, self.criterion, batch_size=self.batch_size,
                               precision=self.settings.precision)

    def _call_multi(self, chunk: Sequence[tuple[int, Sequence[str]]]) -> list[tuple[int, dict]]:
        """The chunk's points P at a time, each set once for the points that need it."""
        values: dict[int, dict] = {flat: {} for flat, _ in chunk}
        for split in self.splits:
            names = {flat: [n for n in groups if self.groups[n].split == split] for flat, groups in chunk}
            flats = [flat for flat, _ in chunk if names[flat]]
            if not flats:
                continue
            got = self.multi.evaluate([self.grid.coords(f) for f in flats], self.splits[split], self.criterion,
                                      batch_size=self.batch_size, precision=self.settings.precision)
            for flat, v in zip(flats, got):
                for n in names[flat]:
                    values[flat][n] = tuple(v[q] for q in self.groups[n].quantities)
        return [(flat, values[flat]) for flat, _ in chunk]


def _first_and_last_batch(split: Any, batch_size: int) -> list[Any]:
    """The inputs of the first batch and, when it is shorter, of the last one: the shapes a compiled forward sees."""
    first = last = None
    for x, _ in split.batches(batch_size):
        if first is None:
            first = x
        last = x
    return [first] if bt.rows(last) == bt.rows(first) else [first, last]


def default_cache_budget(device: torch.device) -> int:
    """Bytes the shortcut may keep when no --memory_budget is given: half the data budget (`streaming.default_budget`),
    i.e. a quarter of the free device memory (GPU) or of the available host memory (CPU), shared by the node's ranks."""
    return default_budget(device, local_size_from_env()) // 2


def _is_images(data: EvalData) -> bool:
    """Whether the sets hold 4-D image tensors (channels_last pays off for them)."""
    split = data.train if len(data.train) else data.test
    inputs = getattr(split, "inputs", None)
    return isinstance(inputs, torch.Tensor) and inputs.dim() == 4


def compute_surface(model: nn.Module, data: EvalData, directions: Directions, grid: Grid, surf_file: str, *,
                    model_name: str, model_sha256: str = "", model_file: str = "", dir_file: str = "",
                    settings: EvalSettings = EvalSettings(), data_split: int = 1, split_idx: int = 0,
                    eval_samples: int = 0, eval_seed: int = 0, layers: Sequence[str] = (),
                    device: torch.device | str = "cpu", comm: Any = None, flush_every: float = 5.0,
                    chunk_size: Optional[int] = None,
                    progress: Optional[Callable[[int, int], Callable[[int], None]]] = None,
                    on_flush: Optional[Callable[[SurfaceFile], None]] = None,
                    log: Callable[[str], None] = lambda line: None) -> Optional[Surface]:
    """Fills `surf_file` with the loss and accuracy at every grid point, resuming what is missing.

    Every rank calls this with its own model copy and data; rank 0 alone opens the file.

    Args:
        model: the centre model (its weights are restored afterwards).
        data: the evaluation sets (already split with `data.take_part` when a subset is wanted).
        directions: x (and y for a 2D grid).
        grid: the coordinates; its dimension must match the directions'.
        surf_file: the HDF5 surface file, created or resumed.
        model_name, model_sha256, model_file, dir_file: recorded in the file; name and checksum
            are part of the job a reopened file must match.
        settings: evaluation settings.
        data_split, split_idx: which part of the data `data` is (recorded, part of the job).
        eval_samples, eval_seed: `data` is the seeded subset of that many samples of each set (`data.take_samples`;
            0: all; recorded, part of the job).
        layers: the globs `directions` were restricted to (`directions.layers.restrict`; recorded, part of the job).
        device: where this rank evaluates.
        comm: mpi4py communicator or None.
        flush_every: seconds between crash-safe flushes.
        progress: factory (done_before, total) -> callback(n) for a progress display, rank 0 only.
        on_flush: called on rank 0 with the open `SurfaceFile` after each durable write (a preview picture:
            `SurfaceFile.snapshot`); points go coarse to fine (`surface.order`).
        log: where rank 0 reports lost ranks and what it wrote.

    Returns:
        The surface read back (rank 0), or None on the other ranks.
    """
    if grid.ndim != directions.ndim:
        raise ValueError(f"a {grid.ndim}D grid needs {grid.ndim} direction(s), got {directions.ndim}")
    device = torch.device(device)
    world = rank_and_size(comm)[1]
    bad = [g for g in settings.eval_on if g not in ("train", "test")]
    if bad or not settings.eval_on:
        raise ValueError(f"eval_on must name train and/or test, got {settings.eval_on}")
    job = SurfaceJob(grid=grid, directions_sha256=directions.sha256(), dir_type=directions.spec.dir_type,
                     model=model_name, model_sha256=model_sha256, dataset=data.name, data_split=data_split,
                     split_idx=split_idx, raw_data=bool(data.info.get("raw_data", False)),
                     loss_name=settings.loss_name, precision=settings.precision,
                     eval_samples=eval_samples, eval_seed=eval_seed if eval_samples else 0,
                     tolerance=float(settings.tolerance),
                     tolerance_seed=settings.tolerance_seed if settings.tolerance else 0,
                     tolerance_batch_size=(settings.batch_size or default_batch_size(device)) if settings.tolerance else 0,
                     layers=json.dumps(list(layers)) if layers else "",
                     **SurfaceJob.bn_fields(settings.bn_recalibrate, settings.batch_size or default_batch_size(device),
                                            len(data.train)))
    evaluator = build_evaluator(comm, lambda: PointEvaluator(model, data, directions, directions.spec.dir_type, grid,
                                                             settings, device,
                                                             expected_points=-(-grid.size // world)), log=log)
    extra = {f"data.{k}": v for k, v in data.info.items()}
    extra.update({f"data.mode_{k}": v for k, v in evaluator.data_modes.items()})
    if settings.memory_budget is not None:
        extra["data.memory_budget"] = int(settings.memory_budget)
    prov = Provenance(dir_file=dir_file, model_file=model_file, world_size=world, batch_size=evaluator.batch_size,
                      device=str(device), extra=extra,
                      run={"speed": evaluator.paths})  # rank 0's paths (each rank chooses its own)
    return fill_surface(evaluator, job, list(evaluator.groups.values()), surf_file, provenance=prov, comm=comm,
                        flush_every=flush_every, chunk_size=chunk_size, progress=progress, on_flush=on_flush, log=log)


def build_evaluator(comm: Any, make: Callable[[], Any], *, log: Callable[[str], None] = print) -> Any:
    """Builds each rank's evaluator as a shared set-up step: a failure on one rank (out of memory while the
    data go to the device, say) stops every rank with that rank named, instead of leaving the others waiting."""
    rank = rank_and_size(comm)[0]

    def _make():
        faults.fire("evaluator", rank)
        return make()

    return everywhere(comm, _make, log=log)


def fill_surface(evaluator: Any, job: SurfaceJob, groups: Sequence[str | ValueGroup], surf_file: str, *, provenance: Provenance,
                 comm: Any = None, flush_every: float = 5.0, chunk_size: Optional[int] = None,
                 progress: Optional[Callable[[int, int], Callable[[int], None]]] = None,
                 on_flush: Optional[Callable[[SurfaceFile], None]] = None,
                 log: Callable[[str], None] = lambda line: None) -> Optional[Surface]:
    """Opens (or resumes) `surf_file` for `job` on rank 0 and has all ranks evaluate its missing points.

    Args:
        evaluator: a callable chunk -> results, as `PointEvaluator`, with a ``restore()`` method that puts
            the centre model back.
        job: what the file holds (a reopened file must match it).
        groups: the value groups to fill: `ValueGroup`s, or names of the fixed ones (``train``, ``test``, ``eig``;
            see `surface.grid.GROUP_DATASETS`).
        surf_file, comm, flush_every, chunk_size, progress, on_flush, log: as in `compute_surface`.
        provenance: recorded in the file.

    Returns:
        The surface read back (rank 0), or None on the other ranks.
    """
    rank = rank_and_size(comm)[0]
    names = [g if isinstance(g, str) else g.name for g in groups]
    surf = root_first(comm, lambda: SurfaceFile.open(surf_file, job, groups, provenance))
    try:
        tasks = surf.pending(names) if rank == 0 else None
        callback = None
        if rank == 0 and progress is not None:
            callback = progress(job.grid.size - len(tasks), job.grid.size)
        sink = surf if surf is None or on_flush is None else _Watched(surf, on_flush)
        stats = run_tasks(tasks, evaluator, sink, comm=comm, chunk_size=chunk_size, flush_every=flush_every,
                          progress=callback, log=log)
        if rank == 0 and stats.written:
            log(f"points written: {stats.written}"
                + (f" ({stats.duplicates} late duplicate results of lost ranks ignored)" if stats.duplicates else "")
                + f"; rank 0 spent {1e3 * stats.root_seconds / stats.written:.3f} ms a point receiving and writing")
    finally:
        evaluator.restore()
        if surf is not None:
            surf.close()
    return read_surface(surf_file) if rank == 0 else None


class _Watched:
    """A `SurfaceFile` as the scheduler's sink that calls `on_flush(surf)` after each flush that wrote points."""

    def __init__(self, surf: SurfaceFile, on_flush: Callable[[SurfaceFile], None]):
        self.surf, self.on_flush = surf, on_flush

    def write(self, flat: int, values: dict) -> None:
        self.surf.write(flat, values)

    def flush(self) -> int:
        n = self.surf.flush()
        if n:
            self.on_flush(self.surf)
        return n
