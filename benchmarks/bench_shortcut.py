#!/usr/bin/env python
"""Seconds per grid point, plain against the exact shortcut (`speed.shortcut`), side by side in one process.

A point is ``Perturber.set_point_`` and ``evaluate_values`` over the set: on the model (plain), or on the
shortcut's forward and kept batches after ``Shortcut.set_point_`` (shortcut). Cases:

- an MLP on 2,000 digits-sized samples (1x8x8), every layer moved: the first layer is precomputed (the digits MLP,
  64-32-10; 64-512-10, whose first layer is most of the work; 64-512-512-10, whose first layer is not), and for
  contrast an MLP 3072-512-10 on the CIFAR-sized images (wide inputs: the combination replaces a K=3072 product);
- ResNet-20 (random weights, non-trivial BN statistics) on 1,000 CIFAR-sized synthetic images, directions
  restricted to ``layer3`` and to ``linear`` (the head): the unmoved prefix runs once.

Points are interleaved (plain, shortcut, plain, ...) after one warm-up each, and the fastest of each path kept, so a
neighbour on the machine skews neither (a loaded machine's medians vary several-fold). Printed: seconds per point,
the ratio plain/shortcut, the one-off build seconds, the kept MiB, the losses at the last point and the largest
relative loss difference over the points. ``--threads 1`` steadies the figures on a shared machine.

    python benchmarks/bench_shortcut.py                # about 1 minute on 2 idle cores
    python benchmarks/bench_shortcut.py --points 3 --images 500
    python benchmarks/bench_shortcut.py --cases mlp --batch_size 2000
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench_surface import set_bn_stats  # noqa: E402
from loss_landscape.directions.layers import restrict_directions  # noqa: E402
from loss_landscape.directions.make import make_directions  # noqa: E402
from loss_landscape.directions.perturb import Perturber  # noqa: E402
from loss_landscape.directions.spec import DirectionSpec  # noqa: E402
from loss_landscape.evaluation import Criterion, DeviceSplit, evaluate_values  # noqa: E402
from loss_landscape.models.digits import DigitsMLP  # noqa: E402
from loss_landscape.models.loading import build_model  # noqa: E402
from loss_landscape.speed.shortcut import Shortcut  # noqa: E402


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help)
    p.add_argument("--samples", type=int, default=2000, help="digits-sized samples for the MLPs (default 2000)")
    p.add_argument("--images", type=int, default=1000, help="CIFAR-sized images for ResNet-20 (default 1000)")
    p.add_argument("--points", type=int, default=5, help="timed points per case and path (default 5)")
    p.add_argument("--batch_size", type=int, default=128, help="evaluation batch size (default 128, the CPU one)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default 0: torch's own choice)")
    p.add_argument("--cases", nargs="+", default=["mlp", "resnet"], choices=("mlp", "resnet"),
                   help="which cases to run (default both)")
    return p


def _case(name: str, model: nn.Module, dirs, split: DeviceSplit, *, points: int, batch_size: int) -> None:
    crit = Criterion.of("crossentropy")
    plain = copy.deepcopy(model).eval()
    p_plain = Perturber(plain, dirs, "weights")
    model = model.eval()
    p_cut = Perturber(model, dirs, "weights")
    t = time.perf_counter()
    cut = Shortcut.attempt(model, p_cut.moved_by_name(), split, batch_size=batch_size, budget_bytes=2**33)
    build = time.perf_counter() - t
    if isinstance(cut, str):
        print(f"{name:34s} no shortcut: {cut}")
        return
    coords = [(0.1 + 0.8 * k / max(points, 1), -0.5 + 0.6 * k / max(points, 1)) for k in range(points + 1)]

    def plain_point(pt):
        p_plain.set_point_(pt)
        return evaluate_values(plain, split, crit, batch_size=batch_size)["loss"]

    def cut_point(pt):
        p_cut.set_point_(pt)
        cut.set_point_(pt)
        return evaluate_values(cut.forward, cut.split, crit, batch_size=batch_size)["loss"]

    times = {"plain": [], "shortcut": []}
    worst, last = 0.0, (0.0, 0.0)
    for k, pt in enumerate(coords):  # the first point is the warm-up
        t0 = time.perf_counter()
        a = plain_point(pt)
        t1 = time.perf_counter()
        b = cut_point(pt)
        t2 = time.perf_counter()
        if k:
            times["plain"].append(t1 - t0)
            times["shortcut"].append(t2 - t1)
        worst, last = max(worst, abs(b - a) / abs(a)), (a, b)
    sp, sc = min(times["plain"]), min(times["shortcut"])
    print(f"{name:34s} {sp:8.4f} {sc:8.4f} {sp / sc:7.2f}x {build:7.2f} {cut.cached_bytes / 2**20:8.1f}  "
          f"{cut.kind:18s} {last[0]:.7f} {last[1]:.7f} {worst:.1e}")


def main(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch size {args.batch_size}, "
          f"best of {args.points} points")
    print(f"{'case':34s} {'plain s':>8s} {'short s':>8s} {'ratio':>8s} {'build s':>7s} {'kept MiB':>8s}  "
          f"{'kind':18s} {'loss plain':>9s} {'loss short':>9s} {'max rel':>7s}")
    g = torch.Generator().manual_seed(1)
    digits = DeviceSplit(torch.randn(args.samples, 1, 8, 8, generator=g),
                         torch.randint(0, 10, (args.samples,), generator=g))
    mlps = {"digits MLP 64-32-10": DigitsMLP(),
            "MLP 64-512-10": nn.Sequential(nn.Flatten(), nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 10)),
            "MLP 64-512-512-10": nn.Sequential(nn.Flatten(), nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 512),
                                               nn.ReLU(), nn.Linear(512, 10))}
    for name, net in mlps.items() if "mlp" in args.cases else ():
        dirs = make_directions(net, DirectionSpec(two_d=True))
        _case(f"{name}, all moved ({args.samples})", net, dirs, digits, points=args.points,
              batch_size=args.batch_size)
    images = DeviceSplit(torch.randn(args.images, 3, 32, 32, generator=g),
                         torch.randint(0, 10, (args.images,), generator=g))
    if "mlp" in args.cases:  # where the first layer's inputs are wide, the combination saves most of its work
        wide = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 512), nn.ReLU(), nn.Linear(512, 10))
        _case(f"MLP 3072-512-10, all moved ({args.images})", wide, make_directions(wide, DirectionSpec(two_d=True)),
              images, points=args.points, batch_size=args.batch_size)
    if "resnet" not in args.cases:
        return
    model = build_model("resnet20")
    set_bn_stats(model)
    full = make_directions(model, DirectionSpec(two_d=True))
    for globs in (["layer3"], ["linear"]):
        _case(f"ResNet-20 --layers {' '.join(globs)} ({args.images})", model, restrict_directions(full, globs),
              images, points=args.points, batch_size=args.batch_size)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
