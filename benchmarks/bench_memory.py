#!/usr/bin/env python
"""Peak memory per rank of the model, the directions and the data, held or streamed, and the time per grid point.

ResNet-56 on CIFAR-sized synthetic images (uint8, 3 x 32 x 32, random labels). Each configuration runs in a fresh
subprocess, so its peak is its own; each adds to the one before it, as a rank of the surface engine holds them:

- baseline: python, torch and the package imported, nothing built;
- model: the model on the device;
- directions: two random direction vectors the size of the weights, and the `Perturber` that moves the model
  (its copy of the centre weights and a scratch buffer), as the surface engine holds them;
- memory float32: all images held as normalized float32 (what the tool held before);
- memory uint8: all images held as uint8, normalized on the device batch by batch (`cifar10_data.DeviceNormalize`,
  what ``load_dataset("cifar10")`` gives now);
- stream: the images read at every pass from a Dataset over a file of uint8 images on disk (one ``pread`` per
  image, so the file is not mapped into the process), ``--workers`` loader processes, batch ``--batch_size``.

The last three time one full evaluation pass at perturbed weights (a grid point), after one untimed pass, and
print its loss: all three must be equal, to the bit. Peak memory is the process's resident-set high-water mark
(``getrusage``) and with ``--cuda`` also ``torch.cuda.max_memory_allocated``. Loader workers (``--workers``) are
forked from the rank and not counted: their pages are mostly shared with it, and each holds at most two batches.

    python benchmarks/bench_memory.py --samples 2000 --points 1      # a few minutes on two CPU cores
    python benchmarks/bench_memory.py --full --cuda                   # the CIFAR-10 training set on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CONFIGS = ("baseline", "model", "directions", "memory-float32", "memory-uint8", "stream")
CHUNK = 1000  # images generated (and written) at a time, so no configuration holds a second copy


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Peak memory per rank (model, directions, data held or streamed) and "
                                            "time per grid point.", add_help=add_help)
    p.add_argument("--samples", type=int, default=10_000,
                   help="synthetic CIFAR-sized images (default: 10000; 50000 is the CIFAR-10 training set)")
    p.add_argument("--full", action="store_true", help="50000 images, the size of the CIFAR-10 training set")
    p.add_argument("--model", default="resnet56", help="CIFAR-10 registry model (default: resnet56)")
    p.add_argument("--batch_size", type=int, default=128, help="evaluation batch size (default: 128)")
    p.add_argument("--points", type=int, default=2, help="grid points timed per configuration (default: 2)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers of the streaming path (default: 0)")
    p.add_argument("--no_channels_last", action="store_true",
                   help="keep the default memory format (the engine uses channels_last for images)")
    p.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS),
                   help=f"configurations to measure (default: all: {' '.join(CONFIGS)})")
    p.add_argument("--cuda", action="store_true", help="run on the GPU (adds its peak allocated memory)")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # inner: one configuration
    p.add_argument("--file", default=None, help=argparse.SUPPRESS)  # inner: the image file of `stream`
    return p


def images(start: int, stop: int) -> np.ndarray:
    """Images start..stop of the synthetic set, uint8 (n, 3, 32, 32), the same in every process."""
    out = np.empty((stop - start, 3, 32, 32), dtype=np.uint8)
    for c in range(start // CHUNK, (stop - 1) // CHUNK + 1):
        lo, hi = max(start, c * CHUNK), min(stop, (c + 1) * CHUNK)
        block = np.random.default_rng([0, c]).integers(0, 256, (CHUNK, 3, 32, 32), dtype=np.uint8)
        out[lo - start:hi - start] = block[lo - c * CHUNK:hi - c * CHUNK]
    return out


def labels(n: int) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 10, n)


class ImageFile:
    """A Dataset of the uint8 images of a raw file (n x 3072 bytes), read with one pread per item."""

    def __init__(self, path: str, targets: np.ndarray):
        self.path, self.targets, self._fd, self._pid = path, targets, None, None

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        import torch

        if self._pid != os.getpid():  # a worker opens its own
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        raw = bytearray(os.pread(self._fd, 3072, int(i) * 3072))
        return torch.frombuffer(raw, dtype=torch.uint8).view(3, 32, 32), int(self.targets[i])


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_one(args: argparse.Namespace) -> dict:
    """Builds what configuration `args.one` holds, evaluates, and returns its figures."""
    import torch

    from loss_landscape import cifar10_data
    from loss_landscape.data import Split
    from loss_landscape.directions.make import make_directions
    from loss_landscape.directions.perturb import Perturber
    from loss_landscape.directions.spec import DirectionSpec
    from loss_landscape.evaluation import Criterion, evaluate_values
    from loss_landscape.models.cifar10 import create_model
    from loss_landscape.streaming import DatasetSplit, place, placement_info

    device = torch.device("cuda" if args.cuda else "cpu")
    channels_last = not args.no_channels_last
    level = CONFIGS.index(args.one)
    out: dict = {"config": args.one}
    if level >= 1:
        torch.manual_seed(0)
        model = create_model(args.model).to(device).eval()
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        out["params"] = sum(p.numel() for p in model.parameters())
    if level >= 2:
        dirs = make_directions(model, DirectionSpec(two_d=True))
        perturber = Perturber(model, dirs, "weights")
    if level >= 3:
        transform = cifar10_data.DeviceNormalize.cifar10()
        y = torch.from_numpy(labels(args.samples))
        if args.one == "memory-float32":  # normalized chunk by chunk: no uint8 copy of the whole set
            x = torch.empty(args.samples, 3, 32, 32)
            for s in range(0, args.samples, CHUNK):
                x[s:s + CHUNK] = transform(torch.from_numpy(images(s, min(s + CHUNK, args.samples))))
            split = Split(x, y)
        elif args.one == "memory-uint8":
            split = Split(torch.from_numpy(images(0, args.samples)), y, transform)
        else:
            split = DatasetSplit.of(ImageFile(args.file, labels(args.samples)), "images", transform=transform)
        mode = "stream" if args.one == "stream" else "memory"
        data = place(split, device, mode=mode, channels_last=channels_last, batch_size=args.batch_size,
                     workers=args.workers)
        if device.type == "cuda":  # the host copy is not the rank's to keep (its peak is counted, though)
            del split
            x = None
        out.update(placement_info(data))
        criterion = Criterion.of("crossentropy")
        times, losses = [], []
        for k in range(args.points + 1):  # the first pass warms up, untimed
            perturber.set_point_((0.1 * k, -0.05 * k))
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            got = evaluate_values(model, data, criterion, batch_size=args.batch_size)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if k:
                times.append(time.perf_counter() - t)
                losses.append(got["loss"])
        out["s_per_point"] = sum(times) / len(times) if times else float("nan")
        out["loss"] = losses[0] if losses else float("nan")
    out["rss_mib"] = peak_rss_mib()
    if device.type == "cuda":
        out["cuda_mib"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
    out["threads"] = torch.get_num_threads()
    return out


def measure(args: argparse.Namespace, config: str, path: str) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--one", config, "--file", path, "--samples",
           str(args.samples), "--model", args.model, "--batch_size", str(args.batch_size), "--points",
           str(args.points), "--workers", str(args.workers)]
    cmd += ["--cuda"] * args.cuda + ["--no_channels_last"] * args.no_channels_last
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{config} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(args: argparse.Namespace) -> int:
    if args.full:
        args.samples = 50_000
    if args.one:
        print(json.dumps(run_one(args)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "images.u8")
        if "stream" in args.configs:
            with open(path, "wb") as f:
                for s in range(0, args.samples, CHUNK):
                    f.write(images(s, min(s + CHUNK, args.samples)).tobytes())
        rows = [measure(args, c, path) for c in args.configs]
    device = "cuda" if args.cuda else "cpu"
    print(f"{args.model}, {args.samples} images 3x32x32, batch {args.batch_size}, device {device}, "
          f"channels_last {not args.no_channels_last}, stream workers {args.workers}, torch threads "
          f"{rows[-1]['threads']}, {args.points} timed point(s)")
    base = rows[0]["rss_mib"] if rows[0]["config"] == "baseline" else None
    head = f"{'configuration':<16} {'peak RSS MiB':>12} {'+ baseline':>10} {'data held MiB':>13}"
    head += f" {'CUDA peak MiB':>13}" * args.cuda + f" {'s/point':>8} {'x memory':>8}  loss at the first point"
    print(head)
    ref = next((r["s_per_point"] for r in rows if r["config"] == "memory-float32"), None)
    for r in rows:
        held = r.get("data_bytes", 0) / 2 ** 20 if r.get("data_mode") == "memory" else 0.0
        if r.get("data_mode") == "stream":
            held_txt = f"{'batches':>13}"
        else:
            held_txt = f"{held:13.1f}"
        line = f"{r['config']:<16} {r['rss_mib']:12.1f} "
        line += f"{r['rss_mib'] - base:10.1f}" if base is not None else f"{'':>10}"
        line += f" {held_txt}"
        if args.cuda:
            line += f" {r.get('cuda_mib', 0.0):13.1f}"
        if "s_per_point" in r:
            ratio = f"{r['s_per_point'] / ref:8.2f}" if ref else f"{'':>8}"
            line += f" {r['s_per_point']:8.2f} {ratio}  {r['loss']!r}"
        print(line)
    losses = {r["loss"] for r in rows if "loss" in r}
    if len(losses) > 1:
        print("the losses differ: the data paths do not give the same values")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
