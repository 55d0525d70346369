#!/usr/bin/env python
"""Seconds per exact grid point, side by side in one process: the plain engine against each exact speed path.

ResNet-20 (random weights, BN statistics set to non-trivial values) on CIFAR-sized synthetic images, evaluated by
`surface.compute.PointEvaluator` at the same points:

- plain: this engine before issue 12 (no fold, no shortcut, eager);
- BN fold (`speed.folding`), torch.compile, and both;
- ``--layers layer3`` and ``--layers linear`` with the shortcut (`speed.shortcut`: the unmoved prefix is computed
  once), against the same restricted directions without it;
- an MLP on digits-sized inputs whose first layer is moved: the first-layer precompute against plain.

Rounds are interleaved (plain, fold, ... , plain, fold, ...) and the best of them kept, so the ratios are not skewed
by a neighbour on the machine. It prints seconds per point, the ratio to plain, GFLOP/s of forward passes against a
matmul probe on the same cores, and the largest relative difference of the losses from plain's.

    python benchmarks/bench_speed.py                  # about 3 minutes on 2 cores
    python benchmarks/bench_speed.py --images 500 --rounds 2 --no_compile
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

from bench_surface import forward_flops, matmul_probe  # noqa: E402
from loss_landscape.data import EvalData, Split  # noqa: E402
from loss_landscape.directions.make import make_directions  # noqa: E402
from loss_landscape.directions.spec import DirectionSpec  # noqa: E402
from loss_landscape.models.loading import build_model  # noqa: E402
from loss_landscape.surface.compute import EvalSettings, PointEvaluator  # noqa: E402
from loss_landscape.surface.grid import Axis, Grid  # noqa: E402
from loss_landscape.surface.job import restrict_to_layers  # noqa: E402


def _bn_stats(model: nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


def _evaluator(model, data, dirs, grid, **kw):
    s = EvalSettings(batch_size=kw.pop("batch_size", 128), compile=kw.pop("compile", False), **kw)
    ev = PointEvaluator(copy.deepcopy(model), data, dirs, "weights", grid, s, torch.device("cpu"))
    ev([(0, ("train",))])  # warm-up
    return ev


def _time(ev, flats) -> tuple[float, list[float]]:
    t = time.perf_counter()
    out = ev([(f, ("train",)) for f in flats])
    return (time.perf_counter() - t) / len(flats), [v["train"][0] for _, v in out]


def compare(title, model, data, dirs, grid, configs, flats, rounds, flops):
    evs = {}
    for label, kw in configs.items():
        t = time.perf_counter()
        evs[label] = _evaluator(model, data, dirs, grid, **kw)
        print(f"  built {label:<28} in {time.perf_counter() - t:5.1f} s  {evs[label].paths}", flush=True)
    best = {k: float("inf") for k in evs}
    losses = {}
    for _ in range(rounds):
        for label, ev in evs.items():
            sec, losses[label] = _time(ev, flats)
            best[label] = min(best[label], sec)
    base = next(iter(evs))
    probe = matmul_probe(torch.device("cpu"))
    print(f"{title}  (matmul probe {probe:.0f} GFLOP/s)")
    for label in evs:
        worst = max(abs(a - b) / abs(b) for a, b in zip(losses[label], losses[base]))
        gf = flops / best[label] / 1e9 if flops else float("nan")
        print(f"  {label:<28} {best[label]:8.4f} s/pt  {best[base] / best[label]:5.2f}x  "
              f"{gf:6.1f} GFLOP/s ({100 * gf / probe:4.1f}% of matmul)  losses within {worst:.1e} of {base}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--points", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--no_compile", action="store_true", help="leave out the torch.compile rows")
    args = p.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    torch.manual_seed(0)
    x = torch.randn(args.images, 3, 32, 32)
    y = torch.randint(0, 10, (args.images,))
    data = EvalData("synthetic", Split(x, y), Split(x[:10], y[:10]), 10, {})
    model = build_model("resnet20").eval()
    _bn_stats(model)
    dirs = make_directions(model, DirectionSpec(two_d=True))
    grid = Grid(Axis(-1, 1, 5), Axis(-1, 1, 5))
    flats = list(range(1, 1 + args.points))
    flops = forward_flops(model, x[:8]) / 8 * args.images

    configs = {"plain": dict(fold_bn=False, shortcut=False), "BN fold": dict(fold_bn=True, shortcut=False)}
    if not args.no_compile:
        configs["compile"] = dict(fold_bn=False, shortcut=False, compile=True)
        configs["BN fold + compile"] = dict(fold_bn=True, shortcut=False, compile=True)
    compare(f"ResNet-20, {args.images} images, all layers moved", model, data, dirs, grid, configs, flats,
            args.rounds, flops)

    for layers in (("layer3",), ("linear",)):
        restricted = restrict_to_layers(dirs, layers, log=lambda line: None)
        compare(f"ResNet-20, --layers {' '.join(layers)}", model, data, restricted, grid,
                {"plain": dict(fold_bn=False, shortcut=False), "BN fold": dict(fold_bn=True, shortcut=False),
                 "shortcut": dict(fold_bn=False, shortcut=True)}, flats, args.rounds, flops)

    mlp = nn.Sequential(nn.Flatten(), nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 10)).eval()
    xm = torch.randn(2000, 1, 8, 8)
    ym = torch.randint(0, 10, (2000,))
    mdata = EvalData("synthetic", Split(xm, ym), Split(xm[:10], ym[:10]), 10, {})
    mdirs = make_directions(mlp, DirectionSpec(two_d=True))
    compare("MLP 64-512-10, 2000 samples, first layer moved", mlp, mdata, mdirs, grid,
            {"plain": dict(shortcut=False, batch_size=2000), "first-layer shortcut": dict(shortcut=True, batch_size=2000)},
            flats, args.rounds, forward_flops(mlp, xm[:8]) / 8 * 2000)
    return 0


if __name__ == "__main__":
    sys.exit(main())
