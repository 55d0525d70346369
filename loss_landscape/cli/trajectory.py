#!/usr/bin/env python
"""Command: the two directions of the plane of one or several training paths (PCA of the checkpoints, random, or
a given direction file), the paths projected onto them, each checkpoint's own loss and accuracy, and a plot.

    python plot_trajectory.py --model resnet56 --model_folder trained_nets/resnet56 --max_epoch 300 --save_epoch 10
    python plot_trajectory.py --model digits_cnn --model_folder runs/sgd runs/adam --labels sgd adam \
        --max_epoch 20 --basis pca --center_run 0 --eval_on train

Writes the direction file (``--dir_file``, default ``<folder>/PCA_<dir_type>_ignore=biasbn_save_epoch=<n>/
directions.h5`` of the centre run), which ``plot_surface.py --dir_file`` accepts, the projection
``<dir_file>_proj_<method>.h5`` (``--proj_file``), which ``plot_2D.py --proj_file`` and ``animate_trajectory.py``
draw, ``<proj_file>.json`` (explained variance, each checkpoint's distance from the plane, loss and accuracy)
and ``<proj_file>.png``. doc/trajectory.md has the formulas.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

from loss_landscape.errors import USER_ERRORS
from loss_landscape.cli import _common as argtypes

# As loss_landscape.losses.LOSSES (the help's list; pkg.module:fn names are accepted too), without importing torch.
LOSSES = ("crossentropy", "mse", "regression_mse", "regression_l1", "token_crossentropy", "model_loss")


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argtypes.ArgumentParser(description="Directions of the plane of one or several training paths, the paths "
                                            "projected onto them, and their plot.", add_help=add_help)
    g = p.add_argument_group("model and checkpoints")
    g.add_argument("--model", default="digits_cnn", help="registry name or pkg.module:factory (default: digits_cnn)")
    g.add_argument("--model_folder", required=True, nargs="+",
                   help="folder of the checkpoints; several folders (runs) share one plane")
    g.add_argument("--labels", nargs="+", default=None, help="legend label of each run (default: folder names)")
    g.add_argument("--center_run", type=int, default=0,
                   help="index of the run whose final model is the origin (default: 0, the first folder)")
    g.add_argument("--prefix", default="model_", help="checkpoint name prefix (default: model_)")
    g.add_argument("--suffix", default=".t7", help="checkpoint name suffix (default: .t7)")
    g.add_argument("--start_epoch", type=int, default=0, help="first epoch (default: 0)")
    g.add_argument("--max_epoch", type=int, default=300, help="last epoch, the final model (default: 300)")
    g.add_argument("--save_epoch", type=int, default=1, help="epochs between checkpoints (default: 1)")
    g = p.add_argument_group("directions")
    g.add_argument("--basis", default="pca", choices=("pca", "pca_run", "random", "file"),
                   help="pca: PCA of all runs' checkpoints; pca_run: of the centre run only; random: filter-"
                        "normalized random (as plot_surface.py, --seed); file: read --dir_file (default: pca)")
    g.add_argument("--seed", type=int, default=123, help="seed of --basis random (default: 123)")
    g.add_argument("--dir_type", default="weights", choices=("weights", "states"),
                   help="weights: parameters; states: the full state dict (default: weights)")
    g.add_argument("--ignore", default="biasbn", choices=("biasbn", "none", ""),
                   help="biasbn: zero tensors with dim <= 1; none: keep them (default: biasbn)")
    g.add_argument("--dir_file", default=None, help="direction file to write, or to read with --basis file "
                                                    "(default: <centre folder>/PCA_.../directions.h5)")
    g.add_argument("--max_block_mb", type=float, default=1024,
                   help="float32 differences held at once, in MiB (default: 1024)")
    g = p.add_argument_group("loss and accuracy along the paths")
    g.add_argument("--eval_on", default="none", choices=("none", "train", "test"),
                   help="evaluate every checkpoint on this split, shown beside the plot (default: none)")
    g.add_argument("--dataset", default=None, help="dataset of --eval_on (default: the model's own, cifar10 otherwise)")
    g.add_argument("--datapath", default="cifar10/data", help="folder holding cifar-10-batches-py")
    g.add_argument("--loss_name", default="crossentropy", type=argtypes.loss_name, metavar="LOSS",
                   help=f"loss of --eval_on: {', '.join(LOSSES)} or pkg.module:fn (default: crossentropy)")
    g.add_argument("--batch_size", type=int, default=256, help="evaluation batch size (default: 256)")
    g.add_argument("--cuda", action="store_true", help="evaluate on the GPU (default: CPU)")
    g = p.add_argument_group("projection and plot")
    g.add_argument("--method", default="cos", choices=("cos", "lstsq"),
                   help="cos: <d, u>/||u|| per direction (the original); lstsq: least squares in the plane "
                        "(default: cos)")
    g.add_argument("--proj_file", default=None, help="projection file (default: <dir_file>_proj_<method>.h5)")
    g.add_argument("--surf_file", default=None,
                   help="2D surface on these directions to draw under the paths in the plot (default: none)")
    g.add_argument("--surf_name", default="train_loss", help="quantity of --surf_file (default: train_loss)")
    g.add_argument("--no_plot", action="store_true", help="do not write <proj_file>.png (default: write it)")
    return p


def _dir_file(args, ignore: str, runs) -> str:
    from loss_landscape.trajectory.pca import default_dir_file
    folder = runs[args.center_run].model_folder
    if args.basis == "random":
        name = f"random_{args.dir_type}" + (f"_ignore={ignore}" if ignore else "") + f"_seed={args.seed}"
        return os.path.join(folder, name, "directions.h5")
    path = default_dir_file(folder, dir_type=args.dir_type, ignore=ignore, save_epoch=args.save_epoch)
    if args.basis == "pca" and len(runs) > 1:
        path = os.path.join(os.path.dirname(path) + f"_runs={len(runs)}", "directions.h5")
    return path


def main(args: argparse.Namespace) -> int:
    from loss_landscape.data import load_dataset
    from loss_landscape.evaluation import pick_device
    from loss_landscape.models.loading import file_sha256, native_dataset
    from loss_landscape.surface.reader import read_surface
    from loss_landscape.errors import TrajectoryError
    from loss_landscape.trajectory.pca import (default_proj_file, faithfulness, faithfulness_lines,
                                               list_checkpoints, project_trajectory)
    from loss_landscape.trajectory.runs import (Run, RunPath, evaluate_path, runs_report, save_basis, save_runs,
                                                shared_directions)

    ignore = "" if args.ignore in ("none", "") else args.ignore
    try:
        folders = args.model_folder
        labels = args.labels or [os.path.basename(os.path.normpath(f)) or f for f in folders]
        if len(labels) != len(folders):
            raise TrajectoryError(f"--labels gives {len(labels)} label(s) for {len(folders)} --model_folder(s)")
        runs = [Run(lab, list_checkpoints(f, prefix=args.prefix, suffix=args.suffix, start_epoch=args.start_epoch,
                                          max_epoch=args.max_epoch, save_epoch=args.save_epoch), f)
                for lab, f in zip(labels, folders)]
        dir_file = args.dir_file
        dirs, pca = shared_directions(args.model, runs, center=args.center_run, basis=args.basis,
                                      dir_type=args.dir_type, ignore=ignore, seed=args.seed, dir_file=args.dir_file,
                                      max_block_bytes=int(args.max_block_mb * 2**20))
        if args.basis != "file":
            dir_file = args.dir_file or _dir_file(args, ignore, runs)
            save_basis(dir_file, dirs, pca, extra={"model": args.model, "model_folder": folders[args.center_run],
                                                   "runs": folders, "center_run": args.center_run})
            print(f"wrote directions to {dir_file}")
        final = runs[args.center_run].checkpoints[-1]
        split = None
        if args.eval_on != "none":
            data = load_dataset(args.dataset or native_dataset(args.model) or "cifar10", datapath=args.datapath)
            split = getattr(data, args.eval_on)
            device = pick_device(args.cuda, local_rank=0)
        paths = []
        for r in runs:
            proj = project_trajectory(args.model, r.checkpoints, dirs, final=final, method=args.method,
                                      ignore=None if args.basis == "file" else ignore)
            metrics = None if split is None else evaluate_path(
                args.model, r.checkpoints, split, split=args.eval_on,
                loss_name=args.loss_name, batch_size=args.batch_size, device=device)
            paths.append(RunPath(r.label, proj, metrics, r.model_folder))
        proj_file = args.proj_file or default_proj_file(dir_file, args.method)
        save_runs(proj_file, paths, center=args.center_run, dir_file=dir_file, basis=args.basis,
                  directions_sha256=dirs.sha256(), model_sha256=file_sha256(final.path))
        print(f"wrote projection to {proj_file}")
        c = args.center_run
        report = {"dir_file": dir_file, "proj_file": proj_file, "basis": args.basis, "center_run": c,
                  **faithfulness(paths[c].projection, pca), **runs_report(paths, faithfulness)}
        for i, rp in enumerate(paths):
            if len(paths) > 1:
                print(f"run {i} {rp.label} ({rp.model_folder}){' (centre)' if i == c else ''}:")
            for line in faithfulness_lines(faithfulness(rp.projection, pca if i == c else None)):
                print(line)
        with open(f"{proj_file}.json", "w") as f:
            json.dump(report, f, indent=2, allow_nan=False)
            f.write("\n")
        print(f"wrote {proj_file}.json")
        if not args.no_plot:
            from loss_landscape.plotting.figures import save_figure
            from loss_landscape.plotting.paths import figure_paths
            from loss_landscape.trajectory.runs import axis_labels, check_surface
            surface = read_surface(args.surf_file) if args.surf_file else None
            if surface is not None:
                check_surface(surface, directions_sha256=dirs.sha256(), model_sha256=file_sha256(final.path))
            fig = figure_paths(paths, surface=surface, surf_name=args.surf_name, labels=axis_labels(dir_file, pca))
            print(f"wrote {save_figure(fig, f'{proj_file}.png', dpi=150)}")
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def run(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    """Parses `argv` (the command line when None) and runs the command; returns the exit code."""
    return argtypes.run_command(get_args_parser, main, argv, prog=prog)


if __name__ == "__main__":
    sys.exit(run())
