"""The surface commands' shared parts: the parser of the 40 surface options, their checks, the request
they make, and running it under the runner.
"""

from __future__ import annotations

import argparse
import os
import time

from loss_landscape.cli import _common as argtypes
from loss_landscape.evaluation import LOSSES, PRECISIONS
from loss_landscape.metrics import METRICS
from loss_landscape.streaming import DATA_MODES
from loss_landscape.directions.spec import IGNORES, NORMS
from loss_landscape.surface.grid import Axis


def _norm_type(text: str) -> str:
    value = "" if text.lower() == "none" else text
    if value not in NORMS:
        raise argparse.ArgumentTypeError(f"unknown norm {text!r}: expected filter, layer, weight, dfilter, dlayer "
                                         f"or none")
    return value


def _ignore_type(text: str) -> str:
    value = "" if text.lower() == "none" else text
    if value not in IGNORES:
        raise argparse.ArgumentTypeError(f"unknown ignore {text!r}: expected biasbn or none")
    return value


class DefaultsFormatter(argparse.HelpFormatter):
    """States the default after each help line that does not already say it (and has a value to state)."""

    def _get_help_string(self, action):
        text = action.help or ""
        unset = action.default is None or action.default is False or action.default in ("", argparse.SUPPRESS)
        if "default" in text or unset or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


EXPLICIT = "explicit_flags"  # Namespace attribute: the dests of the direction flags given (see _Explicit)


class _Explicit(argparse.Action):
    """Stores the value (the const with nargs=0) and notes that the flag was given: an existing --dir_file is
    checked against the direction flags given, the others are taken from it (`request_from_args`)."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)
        setattr(namespace, EXPLICIT, getattr(namespace, EXPLICIT, frozenset()) | {self.dest})


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argtypes.ArgumentParser(
        description="Compute a 1D or 2D loss surface around a model (Li et al., NeurIPS 2018).",
        add_help=add_help, formatter_class=DefaultsFormatter)
    g = p.add_argument_group("model and data")
    g.add_argument("--model", default="digits_cnn",
                   help="registry name (resnet56, vgg9, ...) or pkg.module:factory (default: digits_cnn, the "
                        "embedded model)")
    g.add_argument("--model_file", default=None,
                   help="checkpoint ({'state_dict': ...} or a bare state dict); default: train the embedded model")
    g.add_argument("--model_folder", default="", help="folder prefixed to relative --model_file* paths (default: none)")
    g.add_argument("--model_file2", default=None, help="second model: x = model2 - model, for 1D interpolation (default: none)")
    g.add_argument("--model_file3", default=None, help="third model: y = model3 - model, the plane of three models (default: none)")
    g.add_argument("--dataset", default=None,
                   help="cifar10, digits or pkg.module:factory; default: the model's own dataset")
    g.add_argument("--datapath", default="cifar10/data", help="folder holding cifar-10-batches-py")
    g.add_argument("--raw_data", action="store_true", help="do not normalize the images (default: normalize)")
    g.add_argument("--data_split", type=argtypes.pos_int, default=1, help="split each evaluation set into K parts")
    g.add_argument("--split_idx", type=argtypes.nonneg_int, default=0, help="evaluate part i of --data_split")
    g.add_argument("--eval_on", default="train", choices=("train", "test", "both"),
                   help="which set(s) to evaluate at every point")
    g.add_argument("--eval_samples", type=argtypes.nonneg_int, default=0,
                   help="evaluate a fixed, seeded subset of N samples of each set (default: 0, all)")
    g.add_argument("--eval_seed", type=argtypes.nonneg_int, default=0, help="seed of the --eval_samples subset")
    g.add_argument("--data_mode", default="auto", choices=DATA_MODES,
                   help="memory: hold the sets on the device; stream: read them from their Dataset at every point; "
                        "auto: stream a set larger than --memory_budget (the values are the same)")
    g.add_argument("--memory_budget", type=argtypes.pos_float, default=None, metavar="GB",
                   help="GiB of data a rank may hold on its device (default: half of what is free there)")
    g.add_argument("--data_workers", type=argtypes.nonneg_int, default=0,
                   help="DataLoader worker processes per rank when streaming (default: 0, the rank reads)")
    g.add_argument("--trainloader", default=None, help=argparse.SUPPRESS)
    g.add_argument("--testloader", default=None, help=argparse.SUPPRESS)

    g = p.add_argument_group("directions")
    p.set_defaults(**{EXPLICIT: frozenset()})
    g.add_argument("--dir_file", default=None,
                   help="direction file to reuse or create; an existing one must hold what the direction flags "
                        "given ask (the others are taken from it; with none given it is used as it is). Default: "
                        "named after the model file and settings, and must match them all")
    g.add_argument("--dir_type", action=_Explicit, default="weights", choices=("weights", "states"),
                   help="weights: parameters only; states: the full state dict incl. BN running statistics")
    g.add_argument("--xnorm", action=_Explicit, type=_norm_type, default="filter",
                   help="normalization of x: filter, layer, weight, dfilter, dlayer or none (default: filter; none "
                        "for --axes hessian unless --xnorm or --xignore is given)")
    g.add_argument("--ynorm", type=_norm_type, default=None, help="normalization of y; default: as --xnorm")
    g.add_argument("--xignore", action=_Explicit, type=_ignore_type, default="biasbn",
                   help="biasbn: zero the biases and BN parameters of x; none: move them too (default: biasbn; "
                        "none for --axes hessian unless --xnorm or --xignore is given)")
    g.add_argument("--yignore", type=_ignore_type, default=None, help="as --xignore for y; default: as --xignore")
    g.add_argument("--same_dir", action="store_true", help="y is the same direction as x (default: off)")
    g.add_argument("--layers", nargs="+", default=[], metavar="GLOB",
                   help="move only the tensors whose state-dict names match (layer3, layer3.*, linear.weight): the "
                        "landscape of one block or of the head; the layers before are computed once (default: all)")
    g.add_argument("--seed", action=_Explicit, type=argtypes.nonneg_int, default=123,
                   help="seed of the random directions")
    g.add_argument("--idx", action=_Explicit, type=argtypes.nonneg_int, default=0,
                   help="index of the random direction pair (different idx, different directions)")

    g = p.add_argument_group("Hessian and Adam axes (doc/curvature.md)")
    g.add_argument("--axes", action=_Explicit, default="random", choices=("random", "hessian", "adam"),
                   help="random: Gaussian directions; hessian: the top two Hessian eigenvectors of the model "
                        "(train set), unit vectors unless --xnorm/--xignore is given; adam: Adam's moments m and v "
                        "from --opt_file, normalized by --xnorm/--xignore")
    g.add_argument("--hessian_params", action=_Explicit, default="all", choices=("all", "dim>1"),
                   help="parameters of the Hessian (axes and eigenvalue maps): all, or dim>1 (conv and linear "
                        "weights only, as the original)")
    g.add_argument("--hessian_tol", action=_Explicit, type=float, default=1e-4,
                   help="relative tolerance of the eigensolver")
    g.add_argument("--hessian_seed", action=_Explicit, type=argtypes.nonneg_int, default=0,
                   help="seed of the eigensolver's start vector")
    g.add_argument("--opt_file", default=None, help="Adam state for --axes adam (default: opt_state_E.t7 beside "
                                                    "model_E.t7)")
    g.add_argument("--adam_mode", action=_Explicit, default="add", choices=("add", "adameq"),
                   help="add: w0 + x*m + y*v; adameq: w0 + (x / sqrt(y)) * m / (sqrt(v) + eps), Adam's update "
                        "direction (LLA's), needs --y > 0")
    g.add_argument("--adam_eps", type=float, default=None,
                   help="eps of adameq (default: the optimizer's own; LLA uses 1e-6)")

    g = p.add_argument_group("grid")
    g.add_argument("--x", type=argtypes.axis, default=Axis(-1.0, 1.0, 51), help="x coordinates MIN:MAX:NUM")
    g.add_argument("--y", type=argtypes.axis, default=None, help="y coordinates MIN:MAX:NUM (default: none, a 1D surface)")
    g.add_argument("--surf_file", default=None, help="surface file to create or resume; default: named after "
                                                     "the direction file and grid")

    g = p.add_argument_group("compute")
    g.add_argument("--mpi", action="store_true", help="run across the ranks of mpirun/srun (needs mpi4py; default: serial)")
    g.add_argument("--cuda", action="store_true", help="evaluate on the GPU of this rank's local rank (default: CPU)")
    g.add_argument("--batch_size", type=argtypes.pos_int, default=None,
                   help="images per forward pass; default: 128 on CPU, 1024 on GPU")
    g.add_argument("--loss_name", default="crossentropy", type=argtypes.loss_name,
                   help=f"{', '.join(LOSSES)} (doc/models.md), or pkg.module:fn returning per-sample losses")
    g.add_argument("--metric", dest="metrics", action="append", type=argtypes.metric, default=[],
                   metavar="NAME", help=f"another value per point, stored as <set>_<name> (repeatable): "
                   f"{', '.join(METRICS)}, pkg.module:fn or NAME=pkg.module:fn (default: none)")
    g.add_argument("--precision", default="fp32", choices=PRECISIONS, help="fp32 (strict), tf32 or bf16")
    g.add_argument("--bn_recalibrate", type=argtypes.nonneg_int, default=0,
                   help="re-estimate BN statistics at each point from N training batches (0: off)")
    g.add_argument("--channels_last", default="auto", choices=("auto", "on", "off"),
                   help="NHWC memory format for image models (auto: on)")
    g.add_argument("--compile", nargs="?", const="on", default="auto", choices=("auto", "on", "off"),
                   help="torch.compile the model: auto compiles when the grid repays the measured compile time "
                        "(default: auto; --compile alone: on)")
    g.add_argument("--fold_bn", default="on", choices=("on", "off"),
                   help="fold eval-mode BatchNorm into the convolution before it at each point: the same values to "
                        "float rounding, fewer passes over memory (default: on)")
    g.add_argument("--shortcut", default="on", choices=("on", "off"),
                   help="compute the layers the directions leave unmoved, and the first moved Linear/Conv layer's "
                        "three terms, once instead of at every point, within --memory_budget (default: on)")
    g.add_argument("--points_per_pass", type=argtypes.pos_int, default=1, metavar="P",
                   help="evaluate P grid points in one batched pass (torch.func.vmap); for small models on GPUs "
                        "(default: 1)")
    g.add_argument("--tolerance", type=float, default=0.0, metavar="REL",
                   help="estimate each point from shuffled batches, stopping when the loss's standard error is below "
                        "REL x the loss; stores <set>_loss_stderr and <set>_samples (default: 0, exact)")
    g.add_argument("--tolerance_seed", type=argtypes.nonneg_int, default=0, help="seed of the --tolerance order")
    g.add_argument("--flush_every", type=float, default=5.0, help="seconds between crash-safe writes")
    g.add_argument("--chunk_size", type=argtypes.pos_int, default=None, help="points per scheduling message; default: "
                                                                     "about 8 chunks per rank, at most 16")
    g.add_argument("--threads", type=int, default=None, help="accepted for compatibility and ignored: data are "
                                                             "tensors, no loader workers")
    g.add_argument("--ngpu", type=int, default=1, help="accepted for compatibility and ignored: one GPU per "
                                                          "rank, start more ranks for more GPUs")
    g.add_argument("--rank_timeout", type=argtypes.pos_float, default=60.0,
                   help="MPI: seconds of silence after which a rank counts as lost (its chunk goes to another "
                        "rank); a chunk may also take 10 x the slowest chunk so far")
    g.add_argument("--debug", action="store_true", help="on a failure, print the failing rank's traceback "
                                                        "(default: one line)")
    g.add_argument("--quiet", action="store_true", help="no progress bar (default: show one on rank 0)")

    g = p.add_argument_group("plot")
    g.add_argument("--plot", action="store_true",
                   help="draw the standard figures when done: 1D loss and accuracy; 2D contour, filled contour, "
                        "heatmap and 3D surface (default: off)")
    g.add_argument("--proj_file", default=None, help="trajectory projection to draw on the 2D figures (default: none)")
    g.add_argument("--loss_max", type=float, default=5.0, help="1D: top of the loss axis")
    g.add_argument("--vmax", type=float, default=10.0, help="2D: highest contour level")
    g.add_argument("--vmin", type=float, default=0.1, help="2D: lowest contour level")
    g.add_argument("--vlevel", type=float, default=0.5, help="2D: spacing of contour levels")
    g.add_argument("--preview", type=argtypes.pos_float, default=None, metavar="SECONDS",
                   help="while computing, redraw <surf_file>_preview.png from the complete coarse sub-grid every "
                        "SECONDS (default: off)")
    g.add_argument("--log", action="store_true", help="logarithmic loss in the plots (default: off)")
    g.add_argument("--show", action="store_true", help="open the figures in a window (default: off)")
    return p


def check_surface_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Cross-argument checks that argparse cannot express; each a one-line usage error."""
    if args.trainloader or args.testloader:
        parser.error("--trainloader/--testloader (pickled loaders) cannot be loaded by torch >= 2.6; "
                     "use --dataset pkg.module:factory")
    from loss_landscape.errors import UserError
    from loss_landscape.surface.request import check_request
    try:
        check_request(request_from_args(args))
    except UserError as e:
        parser.error(str(e))


def _join(folder: str, path: str | None) -> str | None:
    if path is None or not folder or os.path.isabs(path):
        return path
    return os.path.join(folder, path)


def request_from_args(args: argparse.Namespace, **overrides):
    """The `surface.request.SurfaceRequest` this command's arguments ask for (shared with plot_hessian_eigen.py).

    A direction flag not given on the command line becomes None (not asked; `surface.job` resolves it to the
    default that --help states), so that an existing --dir_file is checked against the flags given only. A
    Namespace built by hand (no record of what was given) asks for every value it holds.
    """
    from dataclasses import fields as dataclass_fields

    from loss_landscape.surface.request import DIRECTION_DEFAULTS, SurfaceRequest
    given = getattr(args, EXPLICIT, None)
    values = {}
    for f in dataclass_fields(SurfaceRequest):  # the flags carry the request's field names
        if hasattr(args, f.name):
            not_asked = f.name in DIRECTION_DEFAULTS and given is not None and f.name not in given
            values[f.name] = None if not_asked else getattr(args, f.name)
    for name in ("model_file", "model_file2", "model_file3", "opt_file"):
        values[name] = _join(args.model_folder, args.model_file if name == "model_file" else getattr(args, name))
    values["eval_on"] = ("train", "test") if args.eval_on == "both" else (args.eval_on,)
    if hasattr(args, "metrics"):
        values["metrics"] = tuple(args.metrics or ())
    values["channels_last"] = None if args.channels_last == "auto" else args.channels_last == "on"
    if hasattr(args, "compile"):
        values["compile"] = None if args.compile == "auto" else args.compile == "on"
    for name in ("fold_bn", "shortcut"):
        if hasattr(args, name):
            values[name] = getattr(args, name) == "on"
    if hasattr(args, "layers"):
        values["layers"] = tuple(args.layers or ())
    values.update(overrides)
    return SurfaceRequest(**values)


def execute(args: argparse.Namespace, request, *, eigen=None, plot=None) -> int:
    """Prepares and runs a surface job on every rank through `cli._runner.run_job` (one line per failure, on any
    rank and in any phase; resumable interrupts).

    Args:
        args: this command's arguments (for --mpi, --cuda, --quiet, --rank_timeout, --debug).
        request: the `SurfaceRequest`.
        eigen: `surface.eigen.EigenSettings` for an eigenvalue map; None for losses.
        plot: called on rank 0 with the surface when done; returns the files written.
    """
    from loss_landscape.cli._runner import run_job  # here, so that --help and argument errors answer at once

    def body(comm, log, context) -> int:
        from loss_landscape.surface.job import prepare, run
        job = prepare(request, comm=comm, log=log)
        context.surf_file = job.surf_file
        start = time.time()
        surface = run(job, comm=comm, progress=not args.quiet, log=log, eigen=eigen,
                      preview=getattr(args, "preview", None) or 0.0)
        if comm is not None and comm.Get_rank() != 0:
            return 0
        log(f"done in {time.time() - start:.1f} s: {job.surf_file}")
        for line in job.summary(surface):
            log(line)
        if plot is not None:
            for f in plot(surface):
                log(f"wrote {f}")
        return 0

    return run_job(body, use_mpi=args.mpi, cuda=args.cuda, rank_timeout=args.rank_timeout, debug=args.debug)
