#!/usr/bin/env python
"""Time per grid point: this engine versus a per-point loop in the original tool's style.

Both sides evaluate the same model at the same grid points on the same images, in one process:

- baseline (the original's way): directions as numpy arrays, ``p.data = w + torch.Tensor(d*a + d*b)``
  (new tensors every point), a DataLoader over PIL images with per-sample ToTensor/Normalize,
  batch 128, ``--threads`` loader workers, ``loss.item()`` per batch;
- engine: `landscape.PointEvaluator` (in-place moves, data transformed once and kept as tensors,
  channels_last, per-sample losses summed in float64, one sync per evaluation).

It prints seconds per point for each, their ratio, the losses of both (they must agree), the
achieved GFLOP/s of the engine and of a plain matrix-multiply probe on the same device.

    python benchmarks/bench_surface.py --model resnet20 --images 2000 --points 4
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from loss_landscape.cifar10_data import CIFAR10_MEAN, CIFAR10_STD, load_cifar10, write_cifar10_folder  # noqa: E402
from loss_landscape.data import EvalData, Split  # noqa: E402
from loss_landscape.surface.compute import EvalSettings, PointEvaluator  # noqa: E402
from loss_landscape.models.loading import build_model  # noqa: E402
from loss_landscape.directions.spec import DirectionSpec
from loss_landscape.directions.make import make_directions  # noqa: E402
from loss_landscape.surface.grid import Axis, Grid  # noqa: E402


class PILImages(torch.utils.data.Dataset):
    """What torchvision's CIFAR10 dataset does per item: uint8 array -> PIL image -> transform."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        from PIL import Image
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def original_style(model, dirs, coords, images, labels, batch_size, workers, device):
    """The original's crunch loop for one rank: set weights, DataLoader, per-batch .item()."""
    import torchvision.transforms as T
    transform = T.Compose([T.ToTensor(), T.Normalize(CIFAR10_MEAN, CIFAR10_STD)])
    loader = torch.utils.data.DataLoader(PILImages(images, labels, transform), batch_size=batch_size,
                                         shuffle=False, num_workers=workers)
    weights = [p.data.clone() for p in model.parameters()]
    dx = [d.numpy() for d in dirs.x]
    dy = [d.numpy() for d in dirs.y]
    losses = []
    for a, b in coords:
        changes = [d0 * np.float32(a) + d1 * np.float32(b) for d0, d1 in zip(dx, dy)]
        for p, w, d in zip(model.parameters(), weights, changes):
            p.data = w + torch.Tensor(d).type(type(w)).to(device)
        model.eval()
        total_loss, total = 0.0, 0
        with torch.no_grad():
            for x, y in loader:
                x, y = x.to(device), y.to(device)
                out = model(x)
                total_loss += F.cross_entropy(out, y).item() * x.size(0)
                total += x.size(0)
        losses.append(total_loss / total)
    for p, w in zip(model.parameters(), weights):
        p.data = w
    return losses


def set_bn_stats(model, seed: int = 0) -> None:
    """Non-trivial BN running statistics (a fresh model's are mean 0, var 1), for benchmarks of random models."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


def forward_flops(model, x) -> float:
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return float(counter.get_total_flops())


def matmul_probe(device, n=1024, reps=20) -> float:
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * n ** 3 * reps / (time.perf_counter() - t) / 1e9


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="resnet20", help="registry model (default: resnet20)")
    p.add_argument("--images", type=int, default=2000, help="evaluation images (default: 2000)")
    p.add_argument("--points", type=int, default=4, help="grid points timed on each side (default: 4)")
    p.add_argument("--batch_size", type=int, default=128, help="batch size of both sides (default: 128)")
    p.add_argument("--threads", type=int, default=2, help="baseline loader workers, as --threads (default: 2)")
    p.add_argument("--cuda", action="store_true", help="run on the GPU")
    args = p.parse_args()
    device = torch.device("cuda" if args.cuda else "cpu")

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.images, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, args.images)
    with tempfile.TemporaryDirectory() as tmp:  # the engine reads the real on-disk format
        planes = images.transpose(0, 3, 1, 2)  # the files hold 3 colour planes per image
        write_cifar10_folder(tmp, planes, labels.tolist(), planes[:10], labels[:10].tolist())
        tx, ty, _, _ = load_cifar10(tmp, download=False)
    data = EvalData("cifar10", Split(tx, ty), Split(tx[:10], ty[:10]), 10, {})

    torch.manual_seed(0)
    model = build_model(args.model).eval()
    dirs = make_directions(model, DirectionSpec(two_d=True))
    side = int(np.ceil(np.sqrt(args.points)))
    grid = Grid(Axis(-1, 1, max(side, 2)), Axis(-1, 1, max(side, 2)))
    flats = list(range(args.points))
    coords = [grid.coords(f) for f in flats]

    base_model = build_model(args.model).eval()
    base_model.load_state_dict(model.state_dict())
    base_model.to(device)
    original_style(base_model, dirs, coords[:1], images, labels, args.batch_size, args.threads, device)  # warm-up
    t = time.perf_counter()
    base_losses = original_style(base_model, dirs, coords, images, labels, args.batch_size, args.threads, device)
    t_base = (time.perf_counter() - t) / len(coords)

    ev = PointEvaluator(model, data, dirs, "weights", grid,
                        EvalSettings(batch_size=args.batch_size), device)
    ev([(flats[0], ("train",))])  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    results = ev([(f, ("train",)) for f in flats])
    t_engine = (time.perf_counter() - t) / len(coords)
    engine_losses = [r[1]["train"][0] for r in results]

    flops = forward_flops(ev.model, ev.splits["train"].inputs[:args.batch_size]) / args.batch_size * args.images
    print(f"model {args.model}, {args.images} images, {len(coords)} points, batch {args.batch_size}, "
          f"device {device}, torch threads {torch.get_num_threads()}")
    print(f"baseline (original style): {t_base:.3f} s/point")
    print(f"engine:                    {t_engine:.3f} s/point")
    print(f"speed-up: {t_base / t_engine:.2f}x")
    worst = max(abs(a - b) / abs(b) for a, b in zip(engine_losses, base_losses))
    print(f"losses agree to {worst:.1e} relative (engine {engine_losses[0]:.6f}, baseline {base_losses[0]:.6f} "
          f"at the first point)")
    print(f"engine: {flops / t_engine / 1e9:.1f} GFLOP/s of forward passes; matmul probe: "
          f"{matmul_probe(device):.1f} GFLOP/s")
    return 0 if worst < 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
