"""Hessian eigenvalue maps: the largest and smallest Hessian eigenvalue at every grid point.

The paper (Li et al. 2018, section 6) measures how convex a landscape is by |lambda_min / lambda_max|
of the Hessian at each point of the plane. The original tool's ``plot_hessian_eigen.py`` summed the
mean loss of every batch, so its eigenvalues came out multiplied by the number of batches; here each
point gets the eigenvalues of the Hessian of the *mean* loss over the evaluation set
(`curvature.hessian.HessianOperator`), so they do not depend on the batch size.

The map uses the same grid, directions, scheduler, MPI ranks, crash-safe writes and resume as a loss
surface (`surface.compute.fill_surface`); the file holds ``max_eig`` and ``min_eig`` with the ``eig_done``
mask, and `surface.reader.read_surface` derives ``eig_ratio`` = |min_eig / max_eig|.

Models, data and losses are those of the loss surfaces: inputs of any structure (token ids, tuples, dicts), a
factory's Dataset (held on the device, or streamed with ``data_mode``), and any loss of `loss_landscape.losses`,
whose weighted mean (by sample or by token) is the function differentiated.

Example:
    >>> settings = EigenSettings(eig_on="train", params="all", tol=1e-4)
    >>> surf = compute_eigen_surface(model, data, directions, Grid(Axis(-1, 1, 5)), "eig.h5",
    ...                              model_name="digits_cnn", settings=settings)   # doctest: +SKIP
    >>> surf.values["eig_ratio"].shape                                              # doctest: +SKIP
    (5,)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional, Sequence

import torch
from torch import nn

from loss_landscape._util import rank_and_size
from loss_landscape.curvature.hessian import PARAM_FILTERS, HessianOperator
from loss_landscape.errors import CurvatureError, EvaluationError
from loss_landscape.curvature.solvers import extreme_eigenvalues
from loss_landscape.data import EvalData
from loss_landscape.evaluation import default_batch_size, recalibrate_bn
from loss_landscape.losses import check_loss_name
from loss_landscape.streaming import DATA_MODES, StreamSplit, place
from loss_landscape.surface.compute import GridEvaluator, build_evaluator, fill_surface
from loss_landscape.directions.spec import Directions
from loss_landscape.surface.grid import Grid, Provenance, SurfaceJob
from loss_landscape.surface.reader import Surface

__all__ = ["EigenSettings", "EigenEvaluator", "compute_eigen_surface"]


@dataclass(frozen=True)
class EigenSettings:
    """How the eigenvalues of each grid point are computed (recorded in the file's ``hessian`` attribute).

    Attributes:
        eig_on: the set whose mean loss is differentiated, ``train`` or ``test``.
        params: ``all`` parameters, or ``dim>1`` (weights of convolutions and linear layers only, as the
            original's Hessian script).
        tol: relative tolerance of the eigensolver.
        maxiter: most Lanczos iterations per eigenvalue (None: the solver's default).
        seed: seed of the starting vectors (the same at every point, so runs are reproducible).
        loss_name: a loss of `loss_landscape.losses` (``crossentropy``, ``mse``, ``token_crossentropy``,
            ``model_loss``, ...) or ``pkg.module:fn``.
        batch_size: samples per Hessian-vector product batch; None picks one for the device.
        bn_recalibrate: re-estimate BN statistics at each point from this many training batches first.
        data_mode: ``memory`` (the set is held on the device: the default, as every product passes over it),
            ``stream`` (read from its Dataset at every pass) or ``auto`` (streams a set larger than
            `memory_budget` bytes; None: half of what is free); `data_workers` read a streamed set. None of
            these three changes the values.
    """

    eig_on: str = "train"
    params: str = "all"
    tol: float = 1e-4
    maxiter: Optional[int] = None
    seed: int = 0
    loss_name: str = "crossentropy"
    batch_size: Optional[int] = None
    bn_recalibrate: int = 0
    data_mode: str = "memory"
    memory_budget: Optional[int] = None
    data_workers: int = 0

    def check(self) -> None:
        try:
            check_loss_name(self.loss_name)
        except EvaluationError as e:
            raise CurvatureError(str(e)) from None
        if self.data_mode not in DATA_MODES:
            raise CurvatureError(f"unknown data mode {self.data_mode!r}: expected one of {', '.join(DATA_MODES)}")
        if self.eig_on not in ("train", "test"):
            raise CurvatureError(f"the Hessian is taken on one set, train or test; got {self.eig_on!r}")
        if self.params not in PARAM_FILTERS:
            raise CurvatureError(f"unknown parameter filter {self.params!r}: expected one of "
                                 f"{', '.join(PARAM_FILTERS)}")
        if not self.tol > 0:
            raise CurvatureError(f"the eigensolver tolerance must be > 0, got {self.tol}")
        if self.maxiter is not None and self.maxiter < 1:
            raise CurvatureError(f"the eigensolver needs maxiter >= 1, got {self.maxiter}")

    def describe(self) -> str:
        """The settings that change the values, as the file records them (part of the job)."""
        d = asdict(self)
        # Batch size and data mode do not change the values; the loss and BN recalibration are job fields.
        for k in ("batch_size", "loss_name", "bn_recalibrate", "data_mode", "memory_budget", "data_workers"):
            d.pop(k)
        return json.dumps(d, sort_keys=True)


class EigenEvaluator(GridEvaluator):
    """Computes (max_eig, min_eig) for chunks of grid points on one device; one instance per rank."""

    def __init__(self, model: nn.Module, data: EvalData, directions: Directions, grid: Grid,
                 settings: EigenSettings, device: torch.device):
        settings.check()
        split = data.train if settings.eig_on == "train" else data.test
        if len(split) == 0:
            raise CurvatureError(f"the {settings.eig_on} set is empty: nothing to take the Hessian of")
        super().__init__(model, directions, directions.spec.dir_type, grid, device, batch_size=settings.batch_size)
        self.settings = settings

        def put(s):
            return place(s, device, mode=settings.data_mode, budget=settings.memory_budget,
                         batch_size=self.batch_size, workers=settings.data_workers)

        self.split = put(split)
        self.data_modes = {settings.eig_on: "stream" if isinstance(self.split, StreamSplit) else "memory"}
        self.bn_split = None
        if settings.bn_recalibrate > 0:
            self.bn_split = self.split if settings.eig_on == "train" else put(data.train)
        self.total_weight: Optional[float] = None  # the loss's weights do not move with the parameters

    def __call__(self, chunk: Sequence[tuple[int, Sequence[str]]]) -> list[tuple[int, dict]]:
        out = []
        s = self.settings
        for flat, _groups in chunk:
            self.perturber.set_point_(self.grid.coords(flat))
            # Strict fp32 for both, whatever the global TF32 flags are (plot_hessian_eigen.py refuses others).
            if s.bn_recalibrate > 0:
                recalibrate_bn(self.model, self.bn_split, batches=s.bn_recalibrate, batch_size=self.batch_size,
                               precision="fp32")
            op = HessianOperator(self.model, self.split, loss_name=s.loss_name, batch_size=self.batch_size,
                                 params=s.params, precision="fp32", total_weight=self.total_weight)
            self.total_weight = op.total_weight
            lmax, lmin = extreme_eigenvalues(op, tol=s.tol, maxiter=s.maxiter, seed=s.seed)
            out.append((flat, {"eig": (float(lmax), float(lmin))}))
        return out


def compute_eigen_surface(model: nn.Module, data: EvalData, directions: Directions, grid: Grid, surf_file: str, *,
                          model_name: str, model_sha256: str = "", model_file: str = "", dir_file: str = "",
                          settings: EigenSettings = EigenSettings(), data_split: int = 1, split_idx: int = 0,
                          eval_samples: int = 0, eval_seed: int = 0, layers: Sequence[str] = (),
                          device: torch.device | str = "cpu", comm: Any = None, flush_every: float = 5.0,
                          chunk_size: Optional[int] = None,
                          progress: Optional[Callable[[int, int], Callable[[int], None]]] = None,
                          on_flush: Optional[Callable[[Any], None]] = None,
                          log: Callable[[str], None] = lambda line: None) -> Optional[Surface]:
    """Fills `surf_file` with max_eig and min_eig at every grid point, resuming what is missing.

    Every rank calls this with its own model copy and data; rank 0 alone opens the file. Arguments are
    those of `surface.compute.compute_surface` (`eval_samples`, `eval_seed`: `data` is that seeded subset of each
    set, recorded in the job), with `settings` describing the eigensolver.

    Returns:
        The surface read back (rank 0; ``values`` holds max_eig, min_eig and eig_ratio), or None on
        the other ranks.
    """
    if grid.ndim != directions.ndim:
        raise ValueError(f"a {grid.ndim}D grid needs {grid.ndim} direction(s), got {directions.ndim}")
    settings.check()
    device = torch.device(device)
    world = rank_and_size(comm)[1]
    job = SurfaceJob(grid=grid, directions_sha256=directions.sha256(), dir_type=directions.spec.dir_type,
                     model=model_name, model_sha256=model_sha256, dataset=data.name, data_split=data_split,
                     split_idx=split_idx, raw_data=bool(data.info.get("raw_data", False)),
                     loss_name=settings.loss_name, hessian=settings.describe(),
                     layers=json.dumps(list(layers)) if layers else "",
                     eval_samples=eval_samples, eval_seed=eval_seed if eval_samples else 0,
                     **SurfaceJob.bn_fields(settings.bn_recalibrate, settings.batch_size or default_batch_size(device),
                                            len(data.train)))
    evaluator = build_evaluator(comm, lambda: EigenEvaluator(model, data, directions, grid, settings, device), log=log)
    extra = {f"data.{k}": v for k, v in data.info.items()}
    extra.update({f"data.mode_{k}": v for k, v in evaluator.data_modes.items()})
    prov = Provenance(dir_file=dir_file, model_file=model_file, world_size=world, batch_size=evaluator.batch_size,
                      device=str(device), extra=extra)
    return fill_surface(evaluator, job, ("eig",), surf_file, provenance=prov, comm=comm, flush_every=flush_every,
                        chunk_size=chunk_size, progress=progress, on_flush=on_flush, log=log)
