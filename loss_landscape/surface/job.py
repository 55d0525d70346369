"""Setting up a surface job from explicit options: device, data, model, directions, file names.

Each step runs on every rank with failures shared (`parallel.steps.root_first` and `everywhere`), so
a bad input stops all ranks with one message instead of leaving some waiting.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from tqdm import tqdm

from loss_landscape._util import rank_and_size
from loss_landscape.models import digits as embedded
from loss_landscape.parallel import faults
from loss_landscape.models import loading as models
from loss_landscape.errors import DataError
from loss_landscape.data import EvalData, in_memory, load_dataset, take_part, take_samples
from loss_landscape.evaluation import DeviceSplit, pick_device
from loss_landscape.surface.compute import EvalSettings, compute_surface
from loss_landscape.directions.spec import ADAMEQ, DirectionSpec, Directions
from loss_landscape.errors import DirectionError
from loss_landscape.directions.make import default_dir_file, open_directions, setup_directions
from loss_landscape.directions.identity import describe_axes
from loss_landscape.parallel.steps import everywhere, root_first
from loss_landscape.surface.grid import Grid
from loss_landscape.surface.reader import Surface
from loss_landscape.surface.request import (_ASKED_LABELS, SurfaceRequest, with_direction_defaults)

DEFAULT_TRAINED = os.path.join("trained_nets", "{model}", "model_{epochs}.t7")
EMBEDDED_EPOCHS = 30


@dataclass
class PreparedJob:
    """A request resolved into objects, ready for `run`."""

    request: SurfaceRequest
    device: torch.device
    data: EvalData
    model: torch.nn.Module
    model_file: str
    model_sha256: str
    directions: Directions
    dir_file: str
    grid: Grid
    surf_file: str

    @property
    def settings(self) -> EvalSettings:
        r = self.request
        return EvalSettings(eval_on=r.eval_on, loss_name=r.loss_name, metrics=tuple(r.metrics),
                            batch_size=r.batch_size, precision=r.precision, bn_recalibrate=r.bn_recalibrate,
                            channels_last=r.channels_last, compile=r.compile, fold_bn=r.fold_bn,
                            shortcut=r.shortcut, points_per_pass=r.points_per_pass, tolerance=r.tolerance,
                            tolerance_seed=r.tolerance_seed, data_mode=r.data_mode,
                            memory_budget=None if r.memory_budget is None else int(r.memory_budget * 2**30),
                            data_workers=r.data_workers)

    def summary(self, surface: Surface) -> list[str]:
        """Human-readable lines: the centre value and the extremes of each computed loss and metric."""
        lines = []
        eig = ("max_eig", "min_eig", "eig_ratio")
        names = sorted(k for k in surface.values if k.endswith("_loss"))
        names += sorted(k for k in surface.values if not k.endswith(("_loss", "_acc")) and k not in eig)
        names += [k for k in eig if k in surface.values]
        for name in names:
            z = surface.values[name]
            acc = surface.values.get(name[:-len("_loss")] + "_acc") if name.endswith("_loss") else None
            centre = _centre_index(surface)
            parts = []
            if centre is not None:
                parts.append(f"centre {z[centre]:.6g}" + (f" (accuracy {acc[centre]:.2f}%)" if acc is not None else ""))
            finite = np.isfinite(z)
            if finite.any():
                parts.append(f"min {z[finite].min():.6g}, max {z[finite].max():.6g}")
            if (~finite).any():
                parts.append(f"{int((~finite).sum())} non-finite points")
            lines.append(f"{name}: {', '.join(parts)}")
        return lines


def _centre_index(surface: Surface):
    ix = np.flatnonzero(surface.x == 0.0)
    if ix.size == 0:
        return None
    if surface.y is None:
        return (int(ix[0]),)
    iy = np.flatnonzero(surface.y == 0.0)
    return None if iy.size == 0 else (int(iy[0]), int(ix[0]))


def _sanitize(text: str) -> str:
    return "".join(c if c.isalnum() or c in "._+-" else "_" for c in text)


def default_surf_file(dir_file: str, dataset: str, grid: Grid, req: SurfaceRequest) -> str:
    """E.g. ``model_300.t7.dirs-weights-filter-biasbn-seed123-2d.surf-cifar10-x-1_1_51-y-1_1_51.h5``."""
    base = dir_file[:-3] if dir_file.endswith(".h5") else dir_file
    parts = [_sanitize(dataset), "x" + str(grid.x).replace(":", "_")]
    if grid.y is not None:
        parts.append("y" + str(grid.y).replace(":", "_"))
    if req.loss_name != "crossentropy":
        parts.append(_sanitize(req.loss_name.rpartition(":")[2]))
    if req.eval_samples:
        parts.append(f"n{req.eval_samples}" + (f"s{req.eval_seed}" if req.eval_seed else ""))
    if req.data_split > 1:
        parts.append(f"part{req.split_idx}of{req.data_split}")
    if req.raw_data:
        parts.append("raw")
    if req.bn_recalibrate:
        parts.append(f"bn{req.bn_recalibrate}")
    if req.precision != "fp32":
        parts.append(req.precision)
    if req.layers:
        parts.append("layers_" + _sanitize("+".join(req.layers)))
    if req.tolerance:
        parts.append(f"tol{req.tolerance:g}" + (f"s{req.tolerance_seed}" if req.tolerance_seed else ""))
    if req.surf_tag:
        parts.append(_sanitize(req.surf_tag))
    return f"{base}.surf-{'-'.join(parts)}.h5"


def default_opt_file(model_file: str) -> Optional[str]:
    """``.../opt_state_E.t7`` beside ``.../model_E.t7`` (training writes both), or None for other names."""
    folder, name = os.path.split(model_file)
    return os.path.join(folder, "opt_state_" + name[len("model_"):]) if name.startswith("model_") else None


def _axes_kind(req: SurfaceRequest, model_file: str, comm: Any, *, details: bool = True) -> tuple[str, str]:
    """The DirectionSpec kind and details (JSON) the request's axes ask for (`req` with its defaults filled
    in); `details` False skips them (nothing will be made), and the optimizer state with them."""
    if req.model_file2:
        return "target", ""
    if req.axes == "random":
        return "random", ""
    if req.axes == "hessian":
        return "hessian", json.dumps({"params": req.hessian_params, "tol": req.hessian_tol, "seed": req.hessian_seed,
                                      "eig_on": "train", "loss_name": req.loss_name}, sort_keys=True) if details else ""
    if req.axes == "adam":
        kind = ADAMEQ if req.adam_mode == "adameq" else "adam"
        if not details:
            return kind, ""
        opt_file = req.opt_file or default_opt_file(model_file)
        if opt_file is None:
            raise DirectionError(f"--axes adam: cannot derive the optimizer state from {model_file} (not model_E.t7); "
                                 f"give --opt_file")
        if not os.path.isfile(opt_file):
            raise DirectionError(f"--axes adam: optimizer state {opt_file} not found (training with --optimizer "
                                 f"adam writes opt_state_E.t7 beside model_E.t7); give --opt_file")
        sha = root_first(comm, lambda: models.file_sha256(opt_file), share=True)
        return kind, json.dumps({"opt_file": opt_file, "opt_sha256": sha, "eps": req.adam_eps}, sort_keys=True)
    raise DirectionError(f"unknown --axes {req.axes!r}: expected random, hessian or adam")


def _checksum(flag: str, path: Optional[str], comm: Any) -> str:
    """SHA-256 of the file a direction flag names ("" for none), computed on rank 0 and shared."""
    if not path:
        return ""

    def _sha() -> str:
        if not os.path.isfile(path):
            raise DirectionError(f"{flag} {path} does not exist")
        return models.file_sha256(path)
    return root_first(comm, _sha, share=True)


def _asked(req: SurfaceRequest, kind: str, checksums: dict[str, str]) -> dict[str, Any]:
    """What the request asks of an existing direction file it names: only the settings given (not None),
    keyed as `net_plotter.direction_identity` keys them; the kind when --axes or --model_file2 is given."""
    out: dict[str, Any] = {}
    if req.axes is not None or req.model_file2:
        out["kind"] = "adam" if kind == ADAMEQ else kind
    out.update((label, getattr(req, name)) for name, label in _ASKED_LABELS if getattr(req, name) is not None)
    if req.same_dir:
        out["--same_dir"] = True
    out.update((flag, sha) for flag, sha in checksums.items() if sha)
    return out


@dataclass
class LoadedModel:
    """A model and its evaluation data, resolved on every rank (see `load_model_and_data`)."""

    device: torch.device
    dataset: str  # as asked (or the model's own), which names default files
    data: EvalData
    model: torch.nn.Module
    model_file: str
    model_sha256: str


def load_model_and_data(*, model: str, model_file: Optional[str], dataset: Optional[str], datapath: str,
                        raw_data: bool = False, data_split: int = 1, split_idx: int = 0, eval_samples: int = 0,
                        eval_seed: int = 0, cuda: bool = False, comm: Any = None,
                        log: Callable[..., None] = print) -> LoadedModel:
    """The device, the data (the seeded subset of `eval_samples` samples of each set, then part `split_idx` of
    `data_split`), and the model loaded from `model_file`.

    With no `model_file` an embedded model is trained first (on the whole training set, so every command
    and every data part shares one checkpoint, ``trained_nets/<model>/model_30.t7``), and a
    ``pkg.module:factory`` model keeps the weights its factory gives (recorded by their SHA-256; every rank must
    get the same). Rank 0 alone downloads and trains; failures stop all ranks with one message.
    """
    models.check_name(model)
    device = everywhere(comm, lambda: pick_device(cuda))
    dataset = dataset or models.native_dataset(model)
    if dataset is None:
        raise DataError(f"--model {model} is a factory: name its data with --dataset (cifar10, digits or "
                        f"pkg.module:factory)")

    def _load(download: bool) -> tuple[EvalData, EvalData]:
        full = load_dataset(dataset, datapath=datapath, raw_data=raw_data, download=download)
        if data_split == 1 and not eval_samples:
            return full, full
        train = take_part(take_samples(full.train, eval_samples, eval_seed), data_split, split_idx)
        test = take_part(take_samples(full.test, eval_samples, eval_seed), data_split, split_idx)
        info = dict(full.info)
        if eval_samples:
            info.update(eval_samples=eval_samples, eval_seed=eval_seed)
        return full, EvalData(full.name, train, test, full.num_classes, info)

    rank = rank_and_size(comm)[0]
    root_data = root_first(comm, lambda: _load(download=True))  # rank 0 alone may download
    full, data = everywhere(comm, lambda: root_data if rank == 0 else _load(download=False))
    log(f"data: {dataset}, {len(data.train)} train and {len(data.test)} test examples"
        + (f" (a seeded subset of {eval_samples} of each set, seed {eval_seed})" if eval_samples else "")
        + (f" (part {split_idx} of {data_split})" if data_split > 1 else ""))

    if model_file is None and ":" in model:
        return _factory_weights(model, device, dataset, data, comm, log)
    if model_file is None:
        if model not in embedded.list_models():
            raise models.ModelError(f"--model_file is required for --model {model} (only the embedded "
                                    f"models {', '.join(embedded.list_models())} train themselves)")
        model_file = DEFAULT_TRAINED.format(model=model, epochs=EMBEDDED_EPOCHS)
        root_first(comm, lambda: embedded.ensure_checkpoint(model_file, model, full.train.inputs,
                                                            full.train.targets, epochs=EMBEDDED_EPOCHS, log=log))
    def _load_model():
        faults.fire("setup", rank)
        return models.load_model(model, model_file, num_classes=data.num_classes)

    net = everywhere(comm, _load_model, log=log)
    sha = root_first(comm, lambda: models.file_sha256(model_file), share=True)
    log(f"model: {model} from {model_file} ({models.describe(net)['parameters']:,} parameters)")
    return LoadedModel(device, dataset, data, net, model_file, sha)


def _factory_weights(model: str, device: torch.device, dataset: str, data: EvalData, comm: Any,
                     log: Callable[..., None]) -> LoadedModel:
    net = everywhere(comm, lambda: models.build_model(model, num_classes=data.num_classes).eval(), log=log)
    sha = models.state_sha256(net)
    shas = [sha] if comm is None else comm.allgather(sha)
    if len(set(shas)) > 1:
        raise models.ModelError(f"--model {model} gives different weights on different ranks: seed the factory "
                                f"(torch.manual_seed) or save its weights and pass them with --model_file")
    log(f"model: {model}, the factory's own weights (no --model_file; state SHA-256 {sha[:12]}), "
        f"{models.describe(net)['parameters']:,} parameters")
    return LoadedModel(device, dataset, data, net, "", sha)


def prepare(req: SurfaceRequest, *, comm: Any = None, log: Callable[..., None] = print) -> PreparedJob:
    """Resolves a request on every rank: device, data, model, directions and file names."""
    loaded = load_model_and_data(model=req.model, model_file=req.model_file, dataset=req.dataset,
                                 datapath=req.datapath, raw_data=req.raw_data, data_split=req.data_split,
                                 split_idx=req.split_idx, eval_samples=req.eval_samples, eval_seed=req.eval_seed,
                                 cuda=req.cuda, comm=comm, log=log)
    device, data, model = loaded.device, loaded.data, loaded.model
    model_file, model_sha = loaded.model_file, loaded.model_sha256
    dataset = loaded.dataset
    rank = rank_and_size(comm)[0]

    given = req
    req = with_direction_defaults(req)
    if given.axes in ("hessian", "adam") and (given.ynorm is not None or given.yignore is not None):
        raise DirectionError(f"--ynorm/--yignore do not apply to --axes {given.axes}: --xnorm/--xignore "
                             f"normalize both axes")
    two_d = req.y is not None
    # An explicit --dir_file that exists is checked against the direction flags given, not made: rank 0 looks.
    reuse_named = req.dir_file is not None and root_first(comm, lambda: os.path.exists(req.dir_file), share=True)
    kind, details = _axes_kind(req, model_file, comm, details=not reuse_named)
    checksums = {flag: _checksum(flag, path, comm) for flag, path in
                 (("--model_file2", req.model_file2), ("--model_file3", req.model_file3))}
    spec = DirectionSpec(dir_type=req.dir_type, kind=kind, xnorm=req.xnorm, xignore=req.xignore, ynorm=req.ynorm,
                         yignore=req.yignore, seed=req.seed, idx=req.idx, two_d=two_d, same_dir=req.same_dir,
                         model_file=model_file, model_sha256=model_sha, model_file2=req.model_file2 or "",
                         model_file3=req.model_file3 or "", details=details,
                         model2_sha256=checksums["--model_file2"], model3_sha256=checksums["--model_file3"])
    if spec.kind == "target":
        spec = replace(spec, xnorm="", xignore="", ynorm="" if req.model_file3 else req.ynorm,
                       yignore="" if req.model_file3 else req.yignore)
    # A factory's own weights have no file to name the directions after: the factory names them.
    dir_file = req.dir_file or default_dir_file(spec if model_file else replace(spec, model_file=_sanitize(req.model)))
    # A default-named file must hold exactly `spec`'s directions; a named one, what the flags given ask.
    asked = None
    if req.dir_file is not None:
        asked = _asked(given, kind, {**checksums, "--opt_file": _checksum("--opt_file", given.opt_file, comm)})

    def _make_dirs() -> Directions:
        m2 = models.load_model(req.model, req.model_file2, data.num_classes) if req.model_file2 else None
        m3 = models.load_model(req.model, req.model_file3, data.num_classes) if req.model_file3 else None
        hdata = None
        if spec.kind == "hessian" and not os.path.exists(dir_file):
            train = in_memory(data.train)
            hdata = DeviceSplit.put(train.inputs, train.targets, device, transform=train.transform)
            log(f"computing the top Hessian eigenvectors on {len(data.train)} train examples")
        d = setup_directions(dir_file, model, spec, model2=m2, model3=m3, hessian_data=hdata, asked=asked,
                             strict_model=req.dir_file is None, log=log)
        line = describe_axes(d.spec)
        if line:
            log(line)
        if d.y is not None:
            log(f"cosine similarity of x and y: {d.cosine():.6f}")
        return d

    root_dirs = root_first(comm, _make_dirs)  # rank 0 writes the file, then the others read it
    directions = everywhere(comm, lambda: root_dirs if rank == 0 else open_directions(
        dir_file, model, spec, asked=asked, strict_model=req.dir_file is None, log=log))

    if req.layers:
        directions = restrict_to_layers(directions, req.layers, log=log if rank == 0 else lambda line: None)
    grid = Grid(req.x, req.y)
    surf_file = req.surf_file or default_surf_file(dir_file, dataset, grid, req)
    return PreparedJob(req, device, data, model, model_file, model_sha, directions, dir_file, grid, surf_file)


def restrict_to_layers(directions: Directions, layers: Sequence[str], *, log: Callable[..., None] = print) -> Directions:
    """`directions` moving only the tensors whose names `layers` match (`directions.layers`); the direction file
    keeps the whole directions, and the surface job records the globs (its directions checksum differs)."""
    from loss_landscape.directions.layers import restrict_directions
    try:
        out = restrict_directions(directions, layers)
    except ValueError as e:
        raise DirectionError(f"--layers: {e}") from None
    moving = sum(bool(t.any()) for t in out.x)
    log(f"--layers {' '.join(layers)}: {moving} of {len(out.x)} direction tensors move")
    return out


def preview_hook(surf_file: str, seconds: float, log: Callable[..., None] = print) -> Callable[[Any], None]:
    """An `on_flush` callback that redraws ``<surf_file>_preview.png`` (`plotting.live`) from the file's complete
    sub-grid at most every `seconds` (and at most a tenth of rank 0's time: never sooner than ten times the last
    drawing took), and once more when the surface is complete. A failure to draw is reported once and the
    computation goes on without previews."""
    from loss_landscape.plotting.live import preview_file, write_preview
    path = preview_file(surf_file)
    state = {"last": time.monotonic(), "off": False, "said": False, "gap": seconds}

    def hook(surf) -> None:
        if state["off"]:
            return
        now = time.monotonic()
        if now - state["last"] < state["gap"] and not surf.complete():
            return
        try:
            write_preview(surf.snapshot(), path)
        except Exception as e:  # a picture must never cost the surface
            state["off"] = True
            log(f"warning: preview {path} not drawn ({type(e).__name__}: {e}); computing goes on without previews")
            return
        state["last"] = time.monotonic()
        state["gap"] = max(seconds, 10 * (state["last"] - now))
        if not state["said"]:
            state["said"] = True
            log(f"preview: {path} (redrawn every {seconds:g} s)")

    return hook


def run(job: PreparedJob, *, comm: Any = None, progress: bool = True, log: Callable[..., None] = print,
        eigen: Any = None, preview: float = 0.0) -> Optional[Surface]:
    """Computes the job's surface (resuming), with a progress bar on rank 0.

    With `eigen` (a `surface.eigen.EigenSettings`) the file gets the Hessian's max_eig and min_eig at each
    point instead of losses. With `preview` > 0, rank 0 redraws a preview picture every `preview` seconds
    (`preview_hook`).
    """
    world = rank_and_size(comm)[1]
    bar_holder = {}

    def _progress(done_before: int, total: int):
        log(f"surface: {job.surf_file} ({total} points, {total - done_before} to compute on {world} "
            f"rank{'s' if world > 1 else ''}, {job.device.type})")
        bar = tqdm(total=total, initial=done_before, unit="pt", disable=not progress, dynamic_ncols=True,
                   smoothing=0.1, desc="points")
        bar_holder["bar"] = bar
        return bar.update

    common = dict(model_name=job.request.model, model_sha256=job.model_sha256, model_file=job.model_file,
                  dir_file=job.dir_file, data_split=job.request.data_split, split_idx=job.request.split_idx,
                  layers=job.request.layers, device=job.device, comm=comm, flush_every=job.request.flush_every,
                  chunk_size=job.request.chunk_size, progress=_progress, log=log,
                  on_flush=preview_hook(job.surf_file, preview, log) if preview > 0 and rank_and_size(comm)[0] == 0
                  else None)
    try:
        if eigen is not None:
            from loss_landscape.surface.eigen import compute_eigen_surface
            return compute_eigen_surface(job.model, job.data, job.directions, job.grid, job.surf_file,
                                         settings=eigen, eval_samples=job.request.eval_samples,
                                         eval_seed=job.request.eval_seed, **common)
        return compute_surface(job.model, job.data, job.directions, job.grid, job.surf_file, settings=job.settings,
                               eval_samples=job.request.eval_samples, eval_seed=job.request.eval_seed, **common)
    finally:
        if "bar" in bar_holder:
            bar_holder["bar"].close()
