#!/usr/bin/env python
"""Seconds per exact grid point of ResNet-20: plain eval model, BN folded, compiled, compiled + folded, side by side.

Every variant evaluates the same points of the same model on the same synthetic CIFAR-sized images (channels_last,
no_grad) through `evaluation.evaluate_values` (the engine's loss sums in float64), after a `Perturber` move:

- plain: the model itself;
- fold: `speed.fold.FoldedForward` without in-place ops (BN folded into the convolutions, refreshed per point);
- fold+inplace: the same with ReLU and residual additions written into their fresh inputs (the default);
- compiled, compiled+fold: the above through ``torch.compile`` (inductor), compile seconds measured on a cold cache.

Rounds are interleaved (plain, fold, ..., plain, fold, ...) and the best kept, so a neighbour on the machine skews
no ratio. It prints seconds per point, the ratio to plain, the loss of each (they must agree), GFLOP/s of forward
passes against a matrix-multiply probe on the same cores, and what `decide_compile` makes of the figures.
``--profile`` adds torch.profiler's top operators for one point of plain and fold+inplace.

    python benchmarks/bench_fold.py                                  # about 2 minutes on 2 cores
    python benchmarks/bench_fold.py --batch_sizes 64,128,256 --no_compile
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

if "--warm_cache" not in sys.argv:  # a cold inductor cache, so the compile time is what a first run pays
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="bench_fold_inductor_"))

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_surface import forward_flops, matmul_probe, set_bn_stats  # noqa: E402
from loss_landscape.directions.make import make_directions  # noqa: E402
from loss_landscape.directions.perturb import Perturber  # noqa: E402
from loss_landscape.directions.spec import DirectionSpec  # noqa: E402
from loss_landscape.evaluation import Criterion, DeviceSplit, evaluate_values  # noqa: E402
from loss_landscape.models.loading import build_model  # noqa: E402
from loss_landscape.speed.compiling import compile_forward, decide_compile  # noqa: E402
from loss_landscape.speed.fold import FoldedForward  # noqa: E402

POINTS = [(0.1, -0.05), (-0.08, 0.12), (0.15, 0.1), (-0.1, -0.1), (0.05, 0.02), (0.0, 0.0)]


def _point(fn, folded, perturber, coords, split, criterion, batch_size) -> float:
    perturber.set_point_(coords)
    if folded is not None:
        folded.refresh_()
    return evaluate_values(fn, split, criterion, batch_size=batch_size)["loss"]


def run(args, batch_size: int) -> None:
    torch.manual_seed(0)
    model = build_model(args.model).eval()
    set_bn_stats(model)
    model = model.to(memory_format=torch.channels_last)
    dirs = make_directions(model, DirectionSpec(two_d=True))
    perturber = Perturber(model, dirs, "weights")
    g = torch.Generator().manual_seed(1)
    x = torch.randn(args.images, 3, 32, 32, generator=g)
    split = DeviceSplit.put(x, torch.randint(0, 10, (args.images,), generator=g), torch.device("cpu"),
                            channels_last=True)
    criterion = Criterion.of("crossentropy")
    points = POINTS[:args.points]
    example = split.inputs[:batch_size]

    variants = {"plain": (model, None)}
    fold_plain = FoldedForward.build(model, inplace=False)
    variants["fold"] = (fold_plain, fold_plain)
    folded = FoldedForward.build(model)
    variants["fold+inplace"] = (folded, folded)
    compile_s = {}
    if not args.no_compile:
        for label, (fn, f) in (("compiled", (model, None)), ("compiled+fold", (folded, folded))):
            compiled, seconds, failure = compile_forward(fn, lambda c: c(example))
            if failure:
                print(f"{label}: compiling failed ({failure}), left out")
                continue
            variants[label], compile_s[label] = (compiled, f), seconds
    first = {}
    with torch.no_grad():  # warm-up: one point each (a compiled one may recompile here for the last, short batch)
        for label, (fn, f) in variants.items():
            t = time.perf_counter()
            _point(fn, f, perturber, points[0], split, criterion, batch_size)
            first[label] = time.perf_counter() - t
    best = {k: float("inf") for k in variants}
    losses = {k: [] for k in variants}
    probe = 0.0
    for r in range(args.rounds):
        for label, (fn, f) in variants.items():
            t = time.perf_counter()
            got = [_point(fn, f, perturber, c, split, criterion, batch_size) for c in points]
            best[label] = min(best[label], (time.perf_counter() - t) / len(points))
            losses[label] = got
        probe = max(probe, matmul_probe(torch.device("cpu")))
    perturber.restore_()

    flops = forward_flops(model, example) / len(example) * args.images
    print(f"\n{args.model}, {args.images} images, batch {batch_size}, {len(points)} points x {args.rounds} rounds, "
          f"channels_last, torch threads {torch.get_num_threads()}; matmul probe {probe:.0f} GFLOP/s; "
          f"{flops / 1e9:.1f} GFLOP per point")
    ref = losses["plain"]
    print(f"  {'variant':<15} {'s/point':>8} {'vs plain':>9} {'GFLOP/s':>8} {'of probe':>9} {'compile s':>10} "
          f"{'1st pt s':>8}  loss at first point (max rel. diff to plain)")
    for label in variants:
        worst = max(abs(a - b) / abs(b) for a, b in zip(losses[label], ref))
        cs = f"{compile_s[label]:.1f}" if label in compile_s else "-"
        print(f"  {label:<15} {best[label]:8.3f} {best['plain'] / best[label]:8.2f}x "
              f"{flops / best[label] / 1e9:8.1f} {flops / best[label] / 1e9 / probe:8.0%} {cs:>10} "
              f"{first[label]:8.2f}  "
              f"{losses[label][0]:.7f} ({worst:.1e})")
    for label in compile_s:
        eager = "fold+inplace" if "fold" in label else "plain"
        speedup = best[eager] / best[label]
        for n in (441, 2601):
            _, why = decide_compile("auto", point_seconds=best[eager], points=n,
                                    compile_seconds=compile_s[label] + first[label] - best[label], speedup=speedup)
            print(f"  decide_compile for {label}, {n} points at the measured figures: {why}")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile
        for label in ("plain", "fold+inplace"):
            fn, f = variants[label]
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                _point(fn, f, perturber, points[0], split, criterion, batch_size)
            perturber.restore_()
            print(f"\n  profile of one point, {label}:")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.profile_rows))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="resnet20", help="registry model (default: resnet20)")
    p.add_argument("--images", type=int, default=1000, help="evaluation images (default: 1000)")
    p.add_argument("--points", type=int, default=3, help=f"grid points per round, at most {len(POINTS)} (default: 3)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds, the best kept (default: 3)")
    p.add_argument("--batch_sizes", default="128", help="comma-separated batch sizes, each a table (default: 128)")
    p.add_argument("--no_compile", action="store_true", help="leave out the compiled variants")
    p.add_argument("--warm_cache", action="store_true", help="keep inductor's usual cache (default: a cold one)")
    p.add_argument("--profile", action="store_true", help="torch.profiler's top operators for plain and folded")
    p.add_argument("--profile_rows", type=int, default=12, help="operators shown by --profile (default: 12)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, one per core)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for bs in (int(b) for b in args.batch_sizes.split(",")):
        run(args, bs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
