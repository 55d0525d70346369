"""The file-backed side of the Python API: models by name and checkpoint, and `compute_surface`, which is
``plot_surface.py`` as a function (a `surface.request.SurfaceRequest`, `surface.job.prepare` and `surface.job.run`):
direction and surface files named and checked as the command names and checks them, resumable, and across MPI
ranks when given a communicator.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Union

from torch import nn

from loss_landscape.errors import UserError
from loss_landscape.models.loading import build_model, load_model as _load_checkpoint
from loss_landscape.surface.grid import Axis
from loss_landscape.surface.request import SurfaceRequest, check_request
from loss_landscape.surface.job import prepare, run
from loss_landscape.surface.reader import Surface

AxisLike = Union[Axis, str, Sequence[float]]


def load_model(name: str, model_file: Optional[str] = None, *, num_classes: int = 10) -> nn.Module:
    """A model by name with the weights of `model_file`, or freshly initialized without one; in eval mode.

    Args:
        name: a registry name (resnet56, vgg9, ...; see `models.loading.known_models`), an embedded model
            (digits_cnn, digits_mlp) or ``pkg.module:factory``.
        model_file: a checkpoint (``{'state_dict': ...}`` of the original tool, or a bare state dict), read with
            ``torch.load(weights_only=True)``; it must fit the model exactly.
        num_classes: outputs of the registry's models.

    Example:
        >>> import loss_landscape as ll
        >>> type(ll.load_model("digits_mlp")).__name__
        'DigitsMLP'
    """
    if model_file is None:
        return build_model(name, num_classes=num_classes).eval()
    return _load_checkpoint(name, str(model_file), num_classes=num_classes)


def _axis(value: Optional[AxisLike], what: str) -> Optional[Axis]:
    """An `Axis` from an Axis, ``"MIN:MAX:NUM"`` or (min, max, num)."""
    if value is None or isinstance(value, Axis):
        return value
    text = value if isinstance(value, str) else (":".join(str(v) for v in value)
                                                 if isinstance(value, (tuple, list)) and len(value) == 3 else None)
    if text is None:
        raise UserError(f"{what} must be 'MIN:MAX:NUM', (min, max, num) or an Axis, got {value!r}")
    try:
        return Axis.parse(text)
    except ValueError as e:
        raise UserError(f"{what}: {e}") from None


def compute_surface(*, model: str = "digits_cnn", model_file: Optional[str] = None, x: AxisLike = "-1:1:51",
                    y: Optional[AxisLike] = None, dataset: Optional[str] = None, datapath: str = "cifar10/data",
                    raw_data: bool = False, data_split: int = 1, split_idx: int = 0,
                    eval_on: Union[str, Sequence[str]] = "train", dir_file: Optional[str] = None,
                    dir_type: Optional[str] = None, xnorm: Optional[str] = None, xignore: Optional[str] = None,
                    ynorm: Optional[str] = None, yignore: Optional[str] = None, same_dir: bool = False,
                    seed: Optional[int] = None, idx: Optional[int] = None, model_file2: Optional[str] = None,
                    model_file3: Optional[str] = None, axes: Optional[str] = None,
                    hessian_params: Optional[str] = None, hessian_tol: Optional[float] = None,
                    hessian_seed: Optional[int] = None, opt_file: Optional[str] = None,
                    adam_mode: Optional[str] = None, adam_eps: Optional[float] = None,
                    surf_file: Optional[str] = None, cuda: bool = False, batch_size: Optional[int] = None,
                    loss_name: str = "crossentropy", metrics: Sequence[str] = (), precision: str = "fp32",
                    bn_recalibrate: int = 0, channels_last: Optional[bool] = None, compile: Optional[bool] = None,
                    fold_bn: bool = True, shortcut: bool = True, points_per_pass: int = 1, tolerance: float = 0.0,
                    tolerance_seed: int = 0, layers: Sequence[str] = (), eval_samples: int = 0, eval_seed: int = 0, data_mode: str = "auto",
                    memory_budget: Optional[float] = None, data_workers: int = 0, flush_every: float = 5.0,
                    chunk_size: Optional[int] = None, rank_timeout: float = 60.0, comm: Any = None,
                    progress: bool = False, log: Optional[Callable[..., None]] = print) -> Optional[Surface]:
    """``plot_surface.py`` as a function: computes (or resumes) a surface file and returns it read back.

    Every argument is the flag of the same name (``python plot_surface.py --help`` gives each meaning and
    default); the files it reads and writes, their names, the checks on reopening them and the numbers are the
    command's. A direction setting left None is "not asked", as a flag not given: it takes the command's
    default, and an existing `dir_file` is then used with what it holds.

    Args:
        model, model_file, ...: the flags (x and y as ``"MIN:MAX:NUM"``, (min, max, num) or an `Axis`;
            eval_on as ``"train"``, ``"test"``, ``"both"`` or a tuple; xnorm and friends take ``"none"`` for
            the command's ``none``; metrics a sequence of --metric values; compile None is ``auto``; layers a
            sequence of --layers globs).
        rank_timeout: with `comm`, seconds of silence after which a rank counts as lost.
        comm: an mpi4py communicator, to compute across its ranks: every rank calls this function with the
            same arguments (``mpirun -n 4 python script.py``); rank 0 alone writes the file. None: serial, and
            mpi4py is never imported.
        progress: a progress bar on rank 0.
        log: where rank 0 says what it does (the command's lines); None for silence.

    Returns:
        The `Surface` read back on rank 0; None on the other ranks.

    Example:
        >>> import torch, loss_landscape as ll
        >>> torch.save({"state_dict": ll.load_model("digits_mlp").state_dict()}, "mlp.t7")
        >>> s = ll.compute_surface(model="digits_mlp", model_file="mlp.t7", x="-1:1:3", y="-1:1:3", log=None)
        >>> s.values["train_loss"].shape, s.path
        ((3, 3), 'mlp.t7.dirs-weights-filter-biasbn-seed123-2d.surf-digits-x-1_1_3-y-1_1_3.h5')
    """
    if isinstance(eval_on, str):
        if eval_on not in ("train", "test", "both"):
            raise UserError(f"eval_on must be train, test or both, got {eval_on!r}")
        eval_on = ("train", "test") if eval_on == "both" else (eval_on,)
    none = {"none": ""}  # the command's spelling of the empty norm and ignore
    req = SurfaceRequest(
        model=model, model_file=model_file, model_file2=model_file2, model_file3=model_file3, dataset=dataset,
        datapath=datapath, raw_data=raw_data, data_split=data_split, split_idx=split_idx, eval_on=tuple(eval_on),
        dir_file=dir_file, dir_type=dir_type, xnorm=none.get(xnorm, xnorm), xignore=none.get(xignore, xignore),
        ynorm=none.get(ynorm, ynorm), yignore=none.get(yignore, yignore), same_dir=same_dir, seed=seed, idx=idx,
        x=_axis(x, "x"), y=_axis(y, "y"), surf_file=surf_file, cuda=cuda, batch_size=batch_size,
        loss_name=loss_name, metrics=tuple(metrics), precision=precision, bn_recalibrate=bn_recalibrate,
        channels_last=channels_last, compile=compile, fold_bn=fold_bn, shortcut=shortcut,
        points_per_pass=points_per_pass, tolerance=tolerance, tolerance_seed=tolerance_seed,
        layers=(layers,) if isinstance(layers, str) else tuple(layers), eval_samples=eval_samples, eval_seed=eval_seed,
        data_mode=data_mode, memory_budget=memory_budget, data_workers=data_workers, flush_every=flush_every, chunk_size=chunk_size, axes=axes, hessian_params=hessian_params,
        hessian_tol=hessian_tol, hessian_seed=hessian_seed, opt_file=opt_file, adam_mode=adam_mode,
        adam_eps=adam_eps)
    check_request(req)
    if comm is None or comm.Get_size() == 1:
        say = log or (lambda *a, **k: None)
        job = prepare(req, comm=None, log=say)
        return run(job, comm=None, progress=progress, log=say)
    return _parallel(req, comm, rank_timeout=rank_timeout, progress=progress, log=log)


def _parallel(req: SurfaceRequest, comm: Any, *, rank_timeout: float, progress: bool,
              log: Optional[Callable[..., None]]) -> Optional[Surface]:
    """The job across the ranks of `comm`, as ``plot_surface.py --mpi`` runs it: on a communicator of its own
    (a duplicate: the caller's messages and ours never meet) with heartbeats, so that a rank that fails or goes
    silent is reported to rank 0 instead of being waited for; CPU ranks share the node's cores."""
    import torch

    from loss_landscape.evaluation import cpu_threads_per_rank
    from loss_landscape.parallel.ranks import Team

    work = comm.Dup()
    team = Team.start(work, rank_timeout)
    rank = work.Get_rank()
    say = log if (log is not None and rank == 0) else (lambda *a, **k: None)
    threads = torch.get_num_threads()
    if not req.cuda:
        torch.set_num_threads(cpu_threads_per_rank())
    try:
        job = prepare(req, comm=work, log=say)
        return run(job, comm=work, progress=progress and rank == 0, log=say)
    finally:
        torch.set_num_threads(threads)
        team.stop()
        work.Free()


__all__ = ["load_model", "compute_surface"]
