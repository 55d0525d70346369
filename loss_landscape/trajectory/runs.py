"""Several training paths in one plane: a shared basis, each path projected onto it, and each checkpoint's own
loss and accuracy, saved together in one projection file.

A run is a folder of checkpoints (`trajectory.list_checkpoints`). One run, the *centre* run, gives the origin:
every difference is taken to its final model w_c, so that run ends at (0, 0) and a surface computed by
``plot_surface.py --model_file <centre final> --dir_file <dir_file>`` lies under all the paths. Bases:

- ``pca``: PCA of the checkpoints of all runs together, rows w_k - w_c (one run: the original's PCA);
- ``pca_run``: PCA of the centre run alone (the other runs are projected onto its plane);
- ``random``: two filter-normalized Gaussian directions around w_c, exactly as ``plot_surface.py`` draws them
  (`net_plotter.make_directions` with the same seed);
- ``file``: the directions of an existing direction file (made by this tool, plot_surface.py or the original).

Loss and accuracy along a path are each checkpoint's own evaluation (`evaluation.evaluate_values` of the
checkpoint's model, BatchNorm statistics as saved) on one split, the quantity a surface of that split shows at the
point; any model, data and loss of the surfaces apply (token ids, tuple or dict inputs, ``token_crossentropy``,
``model_loss``, ``pkg.module:fn``), the accuracy being NaN for a loss without one.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import h5py
import numpy as np
import torch

from loss_landscape._util import atomic_write
from loss_landscape.models import loading as models
from loss_landscape.errors import DirectionError
from loss_landscape.directions.spec import Directions, DirectionSpec
from loss_landscape.directions.files import check_fits, load_directions, save_directions
from loss_landscape.directions.make import make_directions
from loss_landscape.params import ParamVector
from loss_landscape.trajectory.pca import (MIN_CHECKPOINTS, Checkpoint, PCAResult, Projection, pca_directions,
                                           save_pca_directions, write_projection)
from loss_landscape.errors import TrajectoryError

BASES = ("pca", "pca_run", "random", "file")
MIN_PATH = 2  # a path to draw or animate has a start and an end


@dataclass
class Run:
    """One training path: a label for the legend, its folder, and its checkpoints in epoch order."""

    label: str
    checkpoints: list[Checkpoint]
    model_folder: str = ""


@dataclass
class PathMetrics:
    """Each checkpoint's own loss and accuracy (percent; NaN where the loss has none) on `split`."""

    loss: np.ndarray
    acc: np.ndarray
    split: str


@dataclass
class RunPath:
    """A run's projection and, when evaluated, its loss and accuracy per checkpoint."""

    label: str
    projection: Projection
    metrics: Optional[PathMetrics] = None
    model_folder: str = ""

    @property
    def epochs(self) -> list[int]:
        return self.projection.epochs


def check_runs(runs: Sequence[Run], center: int, *, basis: str) -> None:
    """Refuses a centre run that does not exist, repeated labels and paths too short for `basis`."""
    if basis not in BASES:
        raise TrajectoryError(f"unknown basis {basis!r}: expected one of {', '.join(BASES)}")
    if not runs:
        raise TrajectoryError("no runs given: expected at least one --model_folder")
    if not 0 <= center < len(runs):
        raise TrajectoryError(f"--center_run {center} does not exist: {len(runs)} run(s), expected 0..{len(runs) - 1}")
    labels = [r.label for r in runs]
    if len(set(labels)) != len(labels):
        raise TrajectoryError(f"run labels must differ, got {', '.join(labels)}")
    for r in runs:
        if len(r.checkpoints) < MIN_PATH:
            raise TrajectoryError(f"run {r.label}: a path needs at least {MIN_PATH} checkpoints, found "
                                  f"{len(r.checkpoints)}")
    pca_rows = runs[center].checkpoints if basis == "pca_run" else [c for r in runs for c in r.checkpoints]
    if basis.startswith("pca") and len(pca_rows) < MIN_CHECKPOINTS:
        raise TrajectoryError(f"PCA needs at least {MIN_CHECKPOINTS} checkpoints (two components of the path), "
                              f"found {len(pca_rows)}")


def shared_directions(model_name: str, runs: Sequence[Run], *, center: int = 0, basis: str = "pca",
                      dir_type: str = "weights", ignore: str = "biasbn", seed: int = 123,
                      dir_file: Optional[str] = None, max_block_bytes: int = 1 << 30,
                      log: Callable[..., None] = print) -> tuple[Directions, Optional[PCAResult]]:
    """The two directions all runs are projected onto (see the module docstring for the bases).

    Args:
        model_name: the architecture every run's checkpoints must fit.
        runs: the paths; runs[center] ends at the origin.
        basis: one of BASES. dir_type, ignore: as `trajectory.pca_directions` (and the random directions'
            ``xignore``/``yignore``); seed: of the random directions; dir_file: read for ``file``.

    Returns:
        (directions, the PCA result for the PCA bases, else None).

    Example:
        >>> runs = [Run("sgd", list_checkpoints("a", max_epoch=20)),
        ...         Run("adam", list_checkpoints("b", max_epoch=20))]  # doctest: +SKIP
        >>> dirs, pca = shared_directions("digits_cnn", runs, basis="pca")  # doctest: +SKIP
    """
    check_runs(runs, center, basis=basis)
    final = runs[center].checkpoints[-1]
    if basis in ("pca", "pca_run"):
        rows = runs[center].checkpoints if basis == "pca_run" else [c for r in runs for c in r.checkpoints]
        pca = pca_directions(model_name, rows, dir_type=dir_type, ignore=ignore, max_block_bytes=max_block_bytes,
                             final=final, log=log)
        return pca.directions, pca
    model = _load(model_name, final.path)
    if basis == "random":
        spec = DirectionSpec(dir_type=dir_type, kind="random", xnorm="filter", xignore=ignore, ynorm="filter",
                             yignore=ignore, seed=seed, two_d=True, model_file=final.path,
                             model_sha256=models.file_sha256(final.path))
        return make_directions(model, spec), None
    if not dir_file:
        raise TrajectoryError("--basis file needs --dir_file, an existing direction file")
    if not os.path.isfile(dir_file):
        raise TrajectoryError(f"direction file {dir_file} does not exist (--basis file reads it)")
    try:
        dirs = load_directions(dir_file)
        if dirs.y is None:
            raise TrajectoryError(f"{dir_file} holds one direction; a trajectory plane needs two")
        check_fits(dirs, ParamVector.from_model(model, dirs.spec.dir_type), where=f"direction file {dir_file}")
    except DirectionError as e:
        raise TrajectoryError(str(e)) from None
    return dirs, None


def save_basis(path: str, directions: Directions, pca: Optional[PCAResult], *, extra: Optional[dict] = None) -> None:
    """Writes the direction file (`save_pca_directions` for PCA, else `net_plotter.save_directions`)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if pca is not None:
        save_pca_directions(path, pca, extra=extra)
    else:
        save_directions(path, directions)


def _load(model_name: str, path: str) -> torch.nn.Module:
    try:
        models.check_name(model_name)
        model = models.build_model(model_name)
        models.load_weights(model, models.read_state_dict(path), source=f"checkpoint {path}", model_name=model_name)
    except models.ModelError as e:
        raise TrajectoryError(str(e)) from None
    return model


def evaluate_path(model_name: str, checkpoints: Sequence[Checkpoint], inputs: Any,
                  targets: Optional[torch.Tensor] = None, *, split: str = "train", loss_name: str = "crossentropy",
                  batch_size: int = 256, device: Optional[torch.device] = None,
                  data_mode: str = "auto") -> PathMetrics:
    """Each checkpoint's own loss and accuracy on a split, in eval mode with its saved BN statistics.

    Args:
        inputs: a `data.Split` or a factory's `streaming.DatasetSplit` (then `targets` is not given), or the
            inputs themselves: a tensor of any dtype (token ids), a tuple or a dict of tensors.
        targets: with bare inputs, their targets (classes, tokens, regression values), or None for a model that
            computes its own loss (``model_loss``).
        loss_name: any loss of `loss_landscape.losses` (built-in or ``pkg.module:fn``); the accuracy is NaN for
            a loss without one.
        data_mode: ``auto`` (a set larger than half the free memory is streamed from its Dataset), ``memory`` or
            ``stream``; the values are the same.

    Example:
        >>> from data import load_dataset
        >>> d = load_dataset("digits")  # doctest: +SKIP
        >>> m = evaluate_path("digits_cnn", ckpts, d.train)  # doctest: +SKIP
    """
    from loss_landscape.data import Split
    from loss_landscape.errors import DataError, EvaluationError
    from loss_landscape.evaluation import Criterion, evaluate_values
    from loss_landscape.streaming import DatasetSplit, place
    device = device or torch.device("cpu")
    try:
        criterion = Criterion.of(loss_name)
        if isinstance(inputs, (Split, DatasetSplit)):
            if targets is not None:
                raise TrajectoryError("evaluate_path takes a split, or inputs and targets, not a split and targets")
            data_split = inputs
        else:
            data_split = Split(inputs, targets)
        data = place(data_split, device, mode=data_mode, batch_size=batch_size)
    except (DataError, EvaluationError) as e:
        raise TrajectoryError(f"the {split} set of the paths: {e}") from None
    loss, acc = [], []
    for c in checkpoints:
        model = _load(model_name, c.path).to(device)
        try:
            values = evaluate_values(model, data, criterion, batch_size=batch_size)
        except EvaluationError as e:
            raise TrajectoryError(f"evaluating {c.path}: {e}") from None
        loss.append(values["loss"])
        acc.append(values.get("acc", math.nan))
    return PathMetrics(np.array(loss), np.array(acc), split)


# ----------------------------------------------------------------------------------------------------------
# The projection file of several runs
# ----------------------------------------------------------------------------------------------------------

def save_runs(path: str, paths: Sequence[RunPath], *, center: int = 0, dir_file: str = "", basis: str = "pca",
              directions_sha256: str = "", model_sha256: str = "") -> str:
    """One projection file for all runs. The root keeps the original's layout for the centre run
    (``proj_xcoord``, ``proj_ycoord``; attributes epochs, method, dir_file), so ``plot_2D.py --proj_file`` and
    the original's scripts read it; group ``runs/<i>`` holds run i: ``proj_xcoord``, ``proj_ycoord``,
    ``epochs``, ``distance``, ``norm`` and, when evaluated, ``loss`` and ``acc`` (attribute ``split``); its
    attributes ``label`` and ``model_folder``. Returns `path`."""
    main = paths[center].projection
    def write(tmp: str) -> None:
        with h5py.File(tmp, "w") as f:
            write_projection(f, main, dir_file=dir_file)
            f.attrs["basis"] = basis
            f.attrs["center_run"] = center
            f.attrs["directions_sha256"] = directions_sha256
            f.attrs["model_sha256"] = model_sha256  # of the centre run's final model, the origin
            for i, rp in enumerate(paths):
                g = f.create_group(f"runs/{i}")
                p = rp.projection
                g["proj_xcoord"], g["proj_ycoord"] = p.x, p.y
                g["epochs"] = np.asarray(p.epochs, dtype=np.int64)
                g["distance"], g["norm"] = p.distance, p.norm
                g.attrs["label"], g.attrs["model_folder"] = rp.label, rp.model_folder
                if rp.metrics is not None:
                    g["loss"], g["acc"] = rp.metrics.loss, rp.metrics.acc
                    g.attrs["split"] = rp.metrics.split

    atomic_write(path, write)
    return path


def read_runs(path: str) -> tuple[list[RunPath], int, dict]:
    """The runs of a projection file: (paths, centre index, root attributes). A file with no ``runs`` group
    (one run, as the original or an older version wrote it) gives one path without loss and accuracy, its
    epochs from the ``epochs`` attribute or 0, 1, ... ."""
    try:
        with h5py.File(path, "r") as f:
            attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
            method = str(attrs.get("method", "cos"))
            if "runs" not in f:
                x, y = np.asarray(f["proj_xcoord"][()], float), np.asarray(f["proj_ycoord"][()], float)
                epochs = [int(e) for e in attrs.get("epochs", range(len(x)))]
                nan = np.full(len(x), np.nan)
                return [RunPath("trajectory", Projection(epochs, x, y, method, nan, nan))], 0, attrs
            out = []
            for i in range(len(f["runs"])):
                g = f[f"runs/{i}"]
                proj = Projection([int(e) for e in g["epochs"][()]], np.asarray(g["proj_xcoord"][()], float),
                                  np.asarray(g["proj_ycoord"][()], float), method, np.asarray(g["distance"][()]),
                                  np.asarray(g["norm"][()]))
                metrics = (PathMetrics(np.asarray(g["loss"][()], float), np.asarray(g["acc"][()], float),
                                       str(g.attrs.get("split", ""))) if "loss" in g else None)
                out.append(RunPath(str(g.attrs["label"]), proj, metrics, str(g.attrs.get("model_folder", ""))))
            return out, int(attrs.get("center_run", 0)), attrs
    except (OSError, KeyError) as e:
        raise TrajectoryError(f"cannot read projection file {path} (expected proj_xcoord and proj_ycoord): "
                              f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def check_surface(surface, *, directions_sha256: str = "", model_sha256: str = "") -> None:
    """Refuses a surface computed on other directions, or around another model, than the paths' plane (checked
    where both the surface and the projection recorded them; the original's files record neither)."""
    for key, want in (("directions_sha256", directions_sha256), ("model_sha256", model_sha256)):
        found = str(surface.attrs.get(key, "") or "")
        if found and want and found != want:
            what = "directions" if key.startswith("dir") else "centre model"
            raise TrajectoryError(f"surface {surface.path} was computed with other {what} than the paths: "
                                  f"{key} {found[:12]}... in the surface, {want[:12]}... for the paths")


def axis_labels(dir_file: str, pca: Optional[PCAResult] = None) -> tuple[str, str]:
    """Axis labels: PCA directions with their explained variance ratios (from `pca` or the direction file's
    ``explained_variance_ratio_``), random ones as such, others plain x and y."""
    ratio, kind = None, ""
    if pca is not None:
        ratio = pca.explained_variance_ratio_
    elif dir_file and os.path.isfile(dir_file):
        try:
            with h5py.File(dir_file, "r") as f:
                if "explained_variance_ratio_" in f:
                    ratio = np.asarray(f["explained_variance_ratio_"][()])
                kind = json.loads(f.attrs["spec"]).get("kind", "") if "spec" in f.attrs else ""
        except (OSError, ValueError):
            pass
    if ratio is not None and len(ratio) >= 2:
        return f"1st PC: {100 * ratio[0]:.2f} %", f"2nd PC: {100 * ratio[1]:.2f} %"
    if kind == "random":
        return "random direction x (filter-normalized)", "random direction y (filter-normalized)"
    return "x", "y"


def runs_report(paths: Sequence[RunPath], faith: Callable[[Projection], dict]) -> dict:
    """The JSON record of every run: its faithfulness (`trajectory.faithfulness`) plus loss and accuracy."""
    out = []
    for rp in paths:
        rec = {"label": rp.label, "model_folder": rp.model_folder, **faith(rp.projection)}
        if rp.metrics is not None:
            rec["split"] = rp.metrics.split
            for c, lo, ac in zip(rec["checkpoints"], rp.metrics.loss, rp.metrics.acc):
                c["loss"] = float(lo) if np.isfinite(lo) else None  # a diverged checkpoint
                c["acc"] = float(ac) if np.isfinite(ac) else None  # a loss without accuracy
        out.append(rec)
    return {"runs": out}


__all__ = ["BASES", "Run", "RunPath", "PathMetrics", "check_runs", "shared_directions", "save_basis",
           "evaluate_path", "save_runs", "read_runs", "check_surface", "axis_labels", "runs_report"]
