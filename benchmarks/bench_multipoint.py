#!/usr/bin/env python
"""Seconds per grid point: the point-by-point loop versus P points per pass (`speed.multipoint`).

Both sides evaluate the same model at the same grid points on the same data, in one process, at the same batch
size and precision:

- plain: `Perturber.set_point_` then `evaluate_values` at each point (what `PointEvaluator` does);
- P = 2, 4, 8: `MultiPoint.evaluate` over the same points, P weight sets per forward pass (torch.func.vmap).

Models: the digits MLP and CNN on scikit-learn's 1797 digits (8x8), ResNet-20 on CIFAR-sized synthetic images.
It prints seconds per point, the speed-up over the plain loop, and how the values compare (largest relative
difference over loss, accuracy and top5; how many are bit-equal). Each side is warmed up by one pass first.

    python benchmarks/bench_multipoint.py                      # CPU: digits_mlp, digits_cnn, resnet20 (500 images)
    python benchmarks/bench_multipoint.py --cuda --images 5000 --ppp 2 4 8 16
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from loss_landscape.directions import Directions, DirectionSpec, Perturber  # noqa: E402
from loss_landscape.directions import create_random_direction, direction_generator  # noqa: E402
from loss_landscape.evaluation import Criterion, DeviceSplit, default_batch_size, evaluate_values  # noqa: E402
from loss_landscape.models.loading import build_model  # noqa: E402
from loss_landscape.params import ParamVector  # noqa: E402
from loss_landscape.speed.multipoint import MultiPoint  # noqa: E402


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help)
    p.add_argument("--models", nargs="+", default=["digits_mlp", "digits_cnn", "resnet20"],
                   help="models to time (default: digits_mlp digits_cnn resnet20)")
    p.add_argument("--images", type=int, default=500, help="synthetic CIFAR-sized images for resnet-type models "
                   "(default: 500); the digits models use scikit-learn's 1797 digits")
    p.add_argument("--points", type=int, default=8, help="grid points timed per side (default: 8)")
    p.add_argument("--ppp", type=int, nargs="+", default=[2, 4, 8], help="points per pass (default: 2 4 8)")
    p.add_argument("--batch_size", type=int, default=None, help="default: 128 on CPU, 1024 on a GPU")
    p.add_argument("--dir_type", choices=["weights", "states"], default="weights", help="default: weights")
    p.add_argument("--precision", choices=["fp32", "tf32", "bf16"], default="fp32", help="default: fp32")
    p.add_argument("--channels_last", action="store_true", help="NHWC images and weights on both sides")
    p.add_argument("--cuda", action="store_true", help="run on the GPU")
    return p


def digits(device: torch.device) -> DeviceSplit:
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = (x - x.mean()) / x.std()
    return DeviceSplit.put(x, torch.tensor(d.target), device)


def synthetic_cifar(n: int, device: torch.device, channels_last: bool) -> DeviceSplit:
    g = torch.Generator().manual_seed(0)
    return DeviceSplit.put(torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g), device,
                           channels_last=channels_last)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_model(name: str, args, device: torch.device) -> None:
    torch.manual_seed(0)
    model = build_model(name).to(device).eval()
    split = digits(device) if name.startswith("digits") else synthetic_cifar(args.images, device, args.channels_last)
    if args.channels_last and not name.startswith("digits"):
        model = model.to(memory_format=torch.channels_last)
    w = ParamVector.from_model(model, args.dir_type)
    g = direction_generator(123, 0)
    dirs = Directions(create_random_direction(w, generator=g), create_random_direction(w, generator=g),
                      DirectionSpec(dir_type=args.dir_type, two_d=True))
    coords = [(-1.0 + 2.0 * i / max(args.points - 1, 1), 0.5 - 0.1 * i) for i in range(args.points)]
    criterion = Criterion.of("crossentropy", ["top5"])
    bs = args.batch_size or default_batch_size(device)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"\n{name}: {n_params:,} parameters, {len(split)} samples, batch {bs}, {args.points} points, "
          f"{args.dir_type}, {args.precision}, {device}", flush=True)

    perturber = Perturber(model, dirs, args.dir_type)
    ok, why = MultiPoint.supports(model, next(split.batches(8))[0], dir_type=args.dir_type)
    if not ok:
        print(f"  MultiPoint.supports: {why}")
        return

    def plain(points):
        out = []
        for c in points:
            perturber.set_point_(c)
            out.append(evaluate_values(model, split, criterion, batch_size=bs, precision=args.precision))
        perturber.restore_()
        return out

    plain(coords[:1])  # warm-up
    sync(device)
    t = time.perf_counter()
    want = plain(coords)
    sync(device)
    base = (time.perf_counter() - t) / len(coords)
    print(f"  {'plain point loop':<22} {base:9.4f} s/pt   1.00x   loss at point 0 {want[0]['loss']:.6f}", flush=True)

    for P in args.ppp:
        mp = MultiPoint.from_perturber(model, perturber, args.dir_type, points_per_pass=P)
        try:
            mp.evaluate(coords[:P], split, criterion, batch_size=bs, precision=args.precision)  # warm-up
            sync(device)
            t = time.perf_counter()
            got = mp.evaluate(coords, split, criterion, batch_size=bs, precision=args.precision)
            sync(device)
        except Exception as e:  # one failing configuration (out of memory, say) does not cost the others
            print(f"  {f'P = {P}':<22} failed: {type(e).__name__}: {str(e).splitlines()[0][:160]}")
            continue
        sec = (time.perf_counter() - t) / len(coords)
        diffs = [abs(g[q] - w_[q]) / max(abs(w_[q]), 1e-30) for g, w_ in zip(got, want) for q in w_]
        equal = sum(g[q] == w_[q] for g, w_ in zip(got, want) for q in w_)
        print(f"  {f'P = {P}':<22} {sec:9.4f} s/pt  {base / sec:5.2f}x   values: max rel diff {max(diffs):.1e}, "
              f"bit-equal {equal}/{len(diffs)}   stacked weights {mp.weight_bytes / 2**20:.1f} MiB", flush=True)


def main(args) -> int:
    device = torch.device("cuda") if args.cuda else torch.device("cpu")
    if args.cuda and not torch.cuda.is_available():
        print("--cuda given but no CUDA GPU is available", file=sys.stderr)
        return 1
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
          + (f", {torch.cuda.get_device_name(device)}" if args.cuda else ""))
    for name in args.models:
        bench_model(name, args, device)
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
