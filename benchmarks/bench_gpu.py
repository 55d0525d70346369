#!/usr/bin/env python
"""Seconds per grid point on one GPU: ResNet-56 on 50,000 synthetic CIFAR-sized images, nothing downloaded.

Every configuration evaluates the same points of the same plane with `surface.compute.PointEvaluator` (the code a
surface job runs): fp32, tf32 and bf16, each with and without channels_last; then fp32 and bf16 with the BatchNorm
fold off (the ratio the fold gives), with ``--compile on``, and with several points per pass. The original tool's
loop (a DataLoader over PIL images, new weight tensors per point, ``.item()`` per batch) runs in the same process for
the ratio. For each: seconds per point, the projected time of a 51x51 surface on this one GPU, the achieved GFLOP/s
of forward passes against a matrix-multiply probe at the same precision, and the loss (fp32 rows must agree).

    python benchmarks/bench_gpu.py                 # ~3 minutes on an H100/H200-class GPU
    python benchmarks/bench_gpu.py --images 5000   # a quick look

Without a GPU it says so and exits 0.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench_surface import forward_flops, original_style  # noqa: E402
from loss_landscape.data import EvalData, Split  # noqa: E402
from loss_landscape.cifar10_data import CIFAR10_MEAN, CIFAR10_STD  # noqa: E402
from loss_landscape.directions.make import make_directions  # noqa: E402
from loss_landscape.directions.spec import DirectionSpec  # noqa: E402
from loss_landscape.models.loading import build_model  # noqa: E402
from loss_landscape.surface.compute import EvalSettings, PointEvaluator  # noqa: E402
from loss_landscape.surface.grid import Axis, Grid  # noqa: E402


def probe(device: torch.device, dtype: torch.dtype, tf32: bool, n: int = 8192, reps: int = 10) -> float:
    """GFLOP/s of an n x n matmul at `dtype` (tf32 allowed or not)."""
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        a @ b
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        torch.cuda.synchronize()
        return 2 * n ** 3 * reps / (time.perf_counter() - t) / 1e9
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved


def timed(model, data, dirs, grid, settings, device, points: int) -> tuple[float, float, float]:
    """(seconds per point, loss at the first point, seconds to build and warm up) of one configuration."""
    t0 = time.perf_counter()
    ev = PointEvaluator(model, data, dirs, "weights", grid, settings, device)
    try:
        ev([(0, ("train",))])  # warm-up (and the compile, with --compile)
        torch.cuda.synchronize()
        warm = time.perf_counter() - t0
        flats = list(range(1, 1 + points))
        t = time.perf_counter()
        out = ev([(f, ("train",)) for f in flats])
        torch.cuda.synchronize()
        return (time.perf_counter() - t) / points, out[0][1]["train"][0], warm
    finally:
        ev.restore()
        del ev
        torch.cuda.empty_cache()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="resnet56")
    p.add_argument("--images", type=int, default=50000)
    p.add_argument("--points", type=int, default=3, help="timed points per configuration (default: 3)")
    p.add_argument("--batch_size", type=int, default=1024)
    p.add_argument("--workers", type=int, default=8, help="loader workers of the original-style loop")
    p.add_argument("--skip_original", action="store_true")
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("bench_gpu: no CUDA GPU here (torch.cuda.is_available() is False); nothing to time")
        return 0
    device = torch.device("cuda", 0)
    print(f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, {args.model}, {args.images} images, "
          f"batch {args.batch_size}, {args.points} timed points each")

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.images, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, args.images)
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - mean) / std
    y = torch.from_numpy(labels)
    data = EvalData("synthetic", Split(x, y), Split(x[:10], y[:10]), 10, {})
    torch.manual_seed(0)
    model = build_model(args.model).eval()
    dirs = make_directions(model, DirectionSpec(two_d=True))
    grid = Grid(Axis(-1, 1, 51), Axis(-1, 1, 51))
    flops = forward_flops(model, x[:8]) / 8 * args.images

    probes = {"fp32": probe(device, torch.float32, False), "tf32": probe(device, torch.float32, True),
              "bf16": probe(device, torch.bfloat16, False)}
    rows = []

    def run(label, **kw):
        s = EvalSettings(batch_size=args.batch_size, **kw)
        try:
            sec, loss, warm = timed(model, data, dirs, grid, s, device, args.points)
        except Exception as e:  # one failing configuration does not cost the others
            print(f"{label:<34} failed: {type(e).__name__}: {str(e).splitlines()[0][:120]}")
            return
        rows.append((label, sec))
        gf = flops / sec / 1e9
        print(f"{label:<34} {sec:8.4f} s/pt  51x51: {sec * 2601 / 60:6.1f} min  {gf:8.0f} GFLOP/s "
              f"({100 * gf / probes[kw.get('precision', 'fp32')]:4.1f}% of matmul)  loss {loss:.6f}  "
              f"(build+warm {warm:.1f} s)", flush=True)

    for prec in ("fp32", "tf32", "bf16"):
        for cl in (False, True):
            run(f"{prec} {'channels_last' if cl else 'NCHW'}", precision=prec, channels_last=cl, compile=False)
    run("fp32 channels_last, no BN fold", precision="fp32", channels_last=True, compile=False, fold_bn=False)
    run("bf16 channels_last, no BN fold", precision="bf16", channels_last=True, compile=False, fold_bn=False)
    run("bf16 channels_last --compile", precision="bf16", channels_last=True, compile=True)
    run("fp32 channels_last --compile", precision="fp32", channels_last=True, compile=True)
    for ppp in (2, 4):
        run(f"bf16 channels_last {ppp} points/pass", precision="bf16", channels_last=True, compile=False,
            points_per_pass=ppp)
    print(f"matmul probe: fp32 {probes['fp32']:.0f}, tf32 {probes['tf32']:.0f}, bf16 {probes['bf16']:.0f} GFLOP/s")

    if not args.skip_original:
        base = build_model(args.model).eval()
        base.load_state_dict(model.state_dict())
        base.to(device)
        coords = [grid.coords(f) for f in range(1, 2)]
        t = time.perf_counter()
        loss = original_style(base, dirs, coords, images, labels, args.batch_size, args.workers, device)[0]
        sec = (time.perf_counter() - t) / len(coords)
        print(f"{'original-style loop (fp32)':<34} {sec:8.4f} s/pt  51x51: {sec * 2601 / 60:6.1f} min  "
              f"loss {loss:.6f}")
        for label, s in rows:
            print(f"  {label:<32} {sec / s:6.1f}x faster than the original-style loop")
    return 0


if __name__ == "__main__":
    sys.exit(main())
