#!/usr/bin/env python
"""Command: the two PCA directions of a training path, the path projected onto them, and its plot.

    python plot_trajectory.py --model resnet56 --model_folder trained_nets/resnet56 --max_epoch 300 --save_epoch 10

Writes the direction file (``--dir_file``, default ``<folder>/PCA_<dir_type>_ignore=biasbn_save_epoch=<n>/
directions.h5``), which ``plot_surface.py --dir_file`` accepts, the projection ``<dir_file>_proj_<method>.h5``
(``--proj_file``), which ``plot_2D.py --proj_file`` draws over a surface, ``<proj_file>.json`` (explained
variance and each checkpoint's distance from the plane) and ``<proj_file>.png``. doc/trajectory.md has the
formulas.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="PCA directions of a training path and its projection onto them.",
                                add_help=add_help)
    g = p.add_argument_group("model and checkpoints")
    g.add_argument("--model", default="digits_cnn", help="registry name or pkg.module:factory (default: digits_cnn)")
    g.add_argument("--dataset", default=None, help="accepted for compatibility with the original; not used")
    g.add_argument("--model_folder", required=True, help="folder of the checkpoints")
    g.add_argument("--prefix", default="model_", help="checkpoint name prefix (default: model_)")
    g.add_argument("--suffix", default=".t7", help="checkpoint name suffix (default: .t7)")
    g.add_argument("--start_epoch", type=int, default=0, help="first epoch (default: 0)")
    g.add_argument("--max_epoch", type=int, default=300, help="last epoch, the final model (default: 300)")
    g.add_argument("--save_epoch", type=int, default=1, help="epochs between checkpoints (default: 1)")
    g = p.add_argument_group("directions")
    g.add_argument("--dir_type", default="weights", choices=("weights", "states"),
                   help="weights: parameters; states: the full state dict (default: weights)")
    g.add_argument("--ignore", default="biasbn", choices=("biasbn", "none", ""),
                   help="biasbn: zero tensors with dim <= 1; none: keep them (default: biasbn)")
    g.add_argument("--dir_file", default=None, help="direction file to write (default: <model_folder>/PCA_.../"
                                                    "directions.h5)")
    g.add_argument("--max_block_mb", type=float, default=1024,
                   help="float32 differences held at once, in MiB (default: 1024)")
    g = p.add_argument_group("projection and plot")
    g.add_argument("--method", default="cos", choices=("cos", "lstsq"),
                   help="cos: <d, u>/||u|| per direction (the original); lstsq: least squares in the plane "
                        "(default: cos)")
    g.add_argument("--proj_file", default=None, help="projection file (default: <dir_file>_proj_<method>.h5)")
    g.add_argument("--no_plot", action="store_true", help="do not write <proj_file>.png (default: write it)")
    return p


def main(args: argparse.Namespace) -> int:
    from trajectory import (TrajectoryError, default_dir_file, default_proj_file, faithfulness, faithfulness_lines,
                            figure_trajectory, list_checkpoints, pca_directions, project_trajectory,
                            save_pca_directions, save_projection)

    ignore = "" if args.ignore in ("none", "") else args.ignore
    try:
        ckpts = list_checkpoints(args.model_folder, prefix=args.prefix, suffix=args.suffix,
                                 start_epoch=args.start_epoch, max_epoch=args.max_epoch, save_epoch=args.save_epoch)
        pca = pca_directions(args.model, ckpts, dir_type=args.dir_type, ignore=ignore,
                             max_block_bytes=int(args.max_block_mb * 2**20))
        dir_file = args.dir_file or default_dir_file(args.model_folder, dir_type=args.dir_type, ignore=ignore,
                                                     save_epoch=args.save_epoch)
        os.makedirs(os.path.dirname(os.path.abspath(dir_file)), exist_ok=True)
        save_pca_directions(dir_file, pca, extra={"model": args.model, "model_folder": args.model_folder})
        print(f"wrote directions to {dir_file}")
        proj = project_trajectory(args.model, ckpts, pca.directions, final=ckpts[-1], method=args.method,
                                  ignore=ignore)
        proj_file = args.proj_file or default_proj_file(dir_file, args.method)
        save_projection(proj_file, proj, dir_file=dir_file)
        print(f"wrote projection to {proj_file}")
        report = {"dir_file": dir_file, "proj_file": proj_file, **faithfulness(proj, pca)}
        for line in faithfulness_lines(report):
            print(line)
        with open(f"{proj_file}.json", "w") as f:
            json.dump(report, f, indent=2, allow_nan=False)
            f.write("\n")
        print(f"wrote {proj_file}.json")
        if not args.no_plot:
            from figures import save_figure
            r = pca.explained_variance_ratio_
            fig = figure_trajectory(proj, (f"1st PC: {100 * r[0]:.2f} %", f"2nd PC: {100 * r[1]:.2f} %"))
            print(f"wrote {save_figure(fig, f'{proj_file}.png', dpi=150)}")
    except (TrajectoryError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
