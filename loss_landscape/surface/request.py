"""What a surface job is asked, as plain values: `SurfaceRequest` (one field per flag of ``plot_surface.py``),
the direction defaults a field left None takes, and the checks across fields.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional


from loss_landscape.models import digits as embedded
from loss_landscape.errors import UserError
from loss_landscape.surface.grid import Axis


@dataclass(frozen=True)
class SurfaceRequest:
    """Everything `plot_surface.py` is asked, as plain values (see its --help for each)."""

    model: str = embedded.DEFAULT_MODEL
    model_file: Optional[str] = None
    model_file2: Optional[str] = None
    model_file3: Optional[str] = None
    dataset: Optional[str] = None
    datapath: str = "cifar10/data"
    raw_data: bool = False
    data_split: int = 1
    split_idx: int = 0
    eval_on: tuple[str, ...] = ("train",)
    eval_samples: int = 0
    eval_seed: int = 0
    data_mode: str = "auto"
    memory_budget: Optional[float] = None  # GiB
    data_workers: int = 0
    # Direction settings: None is "not asked", which `with_direction_defaults` resolves (DIRECTION_DEFAULTS),
    # except that an explicit `dir_file` that exists is then taken as it is for that setting.
    dir_file: Optional[str] = None
    dir_type: Optional[str] = None
    xnorm: Optional[str] = None  # default filter; none for axes hessian unless xignore is given
    xignore: Optional[str] = None  # default biasbn; none for axes hessian unless xnorm is given
    ynorm: Optional[str] = None  # default: as xnorm
    yignore: Optional[str] = None  # default: as xignore
    same_dir: bool = False
    seed: Optional[int] = None
    idx: Optional[int] = None
    x: Axis = Axis(-1.0, 1.0, 51)
    y: Optional[Axis] = None
    surf_file: Optional[str] = None
    cuda: bool = False
    batch_size: Optional[int] = None
    loss_name: str = "crossentropy"
    metrics: tuple[str, ...] = ()
    precision: str = "fp32"
    bn_recalibrate: int = 0
    channels_last: Optional[bool] = None
    compile: Optional[bool] = None  # None: when the grid repays the compile time (speed.compiling)
    fold_bn: bool = True  # fold eval-mode BatchNorm into the layer before it at each point (exact)
    shortcut: bool = True  # the unmoved prefix and the first moved layer computed once (exact)
    points_per_pass: int = 1
    tolerance: float = 0.0
    tolerance_seed: int = 0
    layers: tuple[str, ...] = ()
    flush_every: float = 5.0
    chunk_size: Optional[int] = None
    surf_tag: str = ""  # appended to the default surface file name (e.g. eigenvalue maps)
    axes: Optional[str] = None  # random, hessian or adam (target axes come from model_file2)
    hessian_params: Optional[str] = None
    hessian_tol: Optional[float] = None
    hessian_seed: Optional[int] = None
    opt_file: Optional[str] = None  # default: opt_state_E.t7 beside model_E.t7
    adam_mode: Optional[str] = None
    adam_eps: Optional[float] = None  # default: the optimizer's own


DIRECTION_DEFAULTS = dict(dir_type="weights", xnorm="filter", xignore="biasbn", seed=123, idx=0, axes="random",
                          hessian_params="all", hessian_tol=1e-4, hessian_seed=0, adam_mode="add")

# SurfaceRequest field -> the `net_plotter.direction_identity` key it asks for (kind: see `_asked`).
_ASKED_LABELS = (("dir_type", "--dir_type"), ("xnorm", "--xnorm"), ("xignore", "--xignore"), ("ynorm", "--ynorm"),
                 ("yignore", "--yignore"), ("seed", "--seed"), ("idx", "--idx"),
                 ("hessian_params", "--hessian_params"), ("hessian_tol", "--hessian_tol"),
                 ("hessian_seed", "--hessian_seed"), ("adam_mode", "--adam_mode"), ("adam_eps", "--adam_eps"))


def check_request(req: SurfaceRequest) -> None:
    """The checks across settings that no single flag can make (the command and `ll.compute_surface` both
    call this); a `UserError` names the flags (``--name``, the request field of the same name) and what is
    expected."""
    if req.data_split < 1 or not 0 <= req.split_idx < req.data_split:
        raise UserError(f"--split_idx must be below --data_split ({req.data_split}), got {req.split_idx}")
    if req.model_file3 and not req.model_file2:
        raise UserError("--model_file3 needs --model_file2 (the plane through three models)")
    if req.model_file3 and req.y is None:
        raise UserError("--model_file3 gives a y direction: add --y MIN:MAX:NUM")
    if req.same_dir and req.y is None:
        raise UserError("--same_dir needs a 2D grid: add --y MIN:MAX:NUM")
    axes = req.axes or "random"
    if axes != "random" and req.model_file2:
        raise UserError(f"--axes {axes} and --model_file2 both choose the directions: give one")
    if axes != "random" and req.dir_type not in (None, "weights"):
        raise UserError(f"--axes {axes} gives parameter directions: use --dir_type weights")
    if axes == "adam" and req.adam_mode == "adameq":
        if req.y is None:
            raise UserError("--adam_mode adameq needs a 2D grid: x is the step, y the second-moment scale (--y > 0)")
        if not req.y.min > 0:
            raise UserError(f"--adam_mode adameq steps by x / sqrt(y): --y must be > 0, got {req.y}")
    if req.hessian_tol is not None and not req.hessian_tol > 0:
        raise UserError(f"--hessian_tol must be > 0, got {req.hessian_tol}")
    if req.adam_eps is not None and not req.adam_eps >= 0:
        raise UserError(f"--adam_eps must be >= 0, got {req.adam_eps}")
    if req.eval_samples < 0:
        raise UserError(f"--eval_samples must be >= 0 (0: all samples), got {req.eval_samples}")
    if req.memory_budget is not None and not req.memory_budget > 0:
        raise UserError(f"--memory_budget must be > 0 GiB, got {req.memory_budget}")
    if len(set(req.metrics)) != len(req.metrics):
        raise UserError(f"--metric given twice: {', '.join(req.metrics)}")
    if not req.tolerance >= 0 or req.tolerance >= 1:
        raise UserError(f"--tolerance is the standard error allowed relative to the loss, 0 < REL < 1 (0: exact), "
                        f"got {req.tolerance}")
    if req.points_per_pass < 1:
        raise UserError(f"--points_per_pass must be >= 1, got {req.points_per_pass}")
    if req.points_per_pass > 1 and (req.tolerance or req.bn_recalibrate):
        raise UserError("--points_per_pass > 1 evaluates whole sets at fixed BN statistics: it does not combine "
                        "with --tolerance or --bn_recalibrate")
    if not req.flush_every > 0:
        raise UserError(f"--flush_every must be > 0 seconds, got {req.flush_every}")


def with_direction_defaults(req: SurfaceRequest) -> SurfaceRequest:
    """`req` with every direction setting it does not ask (None) set to its default (`DIRECTION_DEFAULTS`).

    Hessian axes are the unit eigenvectors unless a normalization is asked: with axes hessian and neither
    xnorm nor xignore given, both are none; when one is given, the other takes its usual default.

    Example:
        >>> with_direction_defaults(SurfaceRequest(axes="hessian")).xnorm
        ''
    """
    fill = {k: v for k, v in DIRECTION_DEFAULTS.items() if getattr(req, k) is None}
    if (req.axes or DIRECTION_DEFAULTS["axes"]) == "hessian" and req.xnorm is None and req.xignore is None:
        fill.update(xnorm="", xignore="")
    return replace(req, **fill)
