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

The last three evaluate the model once at perturbed weights (a grid point) for their peak. The time per point is
measured apart, in one more process holding all three data paths: point after point, each path evaluates the
whole set in turn (so that other work on the machine slows them alike), after one untimed pass; the best of
``--points`` points is shown, with the loss at the first point: all three must be equal, to the bit.

Peak memory is the process's resident-set high-water mark (``getrusage``) and with ``--cuda`` also
``torch.cuda.max_memory_allocated``. Loader workers (``--workers``) are forked from the rank and not counted: their
pages are mostly shared with it, and each holds at most two batches.

    python benchmarks/bench_memory.py --samples 2000                 # some minutes on two CPU cores
    python benchmarks/bench_memory.py --full --points 0               # 50,000 images held, no evaluation
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
    p.add_argument("--points", type=int, default=2,
                   help="grid points timed per configuration, the best shown (default: 2); 0: hold the data only, "
                        "no evaluation")
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


DATA = ("memory-float32", "memory-uint8", "stream")


def place_data(kind: str, args: argparse.Namespace, device, channels_last: bool):
    """The images of configuration `kind`, placed on `device` as the surface engine would."""
    import torch

    from loss_landscape import cifar10_data
    from loss_landscape.data import Split
    from loss_landscape.streaming import DatasetSplit, place

    transform = cifar10_data.DeviceNormalize.cifar10()
    y = torch.from_numpy(labels(args.samples))
    if kind == "memory-float32":  # normalized chunk by chunk: no uint8 copy of the whole set
        x = torch.empty(args.samples, 3, 32, 32)
        for s in range(0, args.samples, CHUNK):
            x[s:s + CHUNK] = transform(torch.from_numpy(images(s, min(s + CHUNK, args.samples))))
        split = Split(x, y)
    elif kind == "memory-uint8":
        split = Split(torch.from_numpy(images(0, args.samples)), y, transform)
    else:
        split = DatasetSplit.of(ImageFile(args.file, labels(args.samples)), "images", transform=transform)
    # On a GPU the rank keeps only the device copy (the host one is dropped here; the peak counts it).
    return place(split, device, mode="stream" if kind == "stream" else "memory", channels_last=channels_last,
                 batch_size=args.batch_size, workers=args.workers)


def build(args: argparse.Namespace, level: int):
    """The model (level >= 1) and the directions with the engine's `Perturber` (level >= 2)."""
    import torch

    from loss_landscape.directions.make import make_directions
    from loss_landscape.directions.perturb import Perturber
    from loss_landscape.directions.spec import DirectionSpec
    from loss_landscape.models.cifar10 import create_model

    device = torch.device("cuda" if args.cuda else "cpu")
    model = perturber = None
    if level >= 1:
        torch.manual_seed(0)
        model = create_model(args.model).to(device).eval()
        if not args.no_channels_last:
            model = model.to(memory_format=torch.channels_last)
    if level >= 2:
        perturber = Perturber(model, make_directions(model, DirectionSpec(two_d=True)), "weights")
    return device, model, perturber


def one_point(model, perturber, data, k: int, args: argparse.Namespace) -> tuple[float, float]:
    """(seconds, loss) of an evaluation pass at the k-th point of a diagonal of the grid."""
    import torch

    from loss_landscape.evaluation import Criterion, evaluate_values

    perturber.set_point_((0.1 * k, -0.05 * k))
    cuda = next(model.parameters()).is_cuda
    if cuda:
        torch.cuda.synchronize()
    t = time.perf_counter()
    loss = evaluate_values(model, data, Criterion.of("crossentropy"), batch_size=args.batch_size)["loss"]
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t, loss


def run_one(args: argparse.Namespace) -> dict:
    """Peak memory of configuration `args.one`: what it holds, and one evaluation pass (unless --points 0)."""
    import torch

    from loss_landscape.streaming import placement_info

    level = CONFIGS.index(args.one)
    device, model, perturber = build(args, level)
    out: dict = {"config": args.one}
    if level >= 3:
        data = place_data(args.one, args, device, not args.no_channels_last)
        out.update(placement_info(data))
        if args.points:
            out["loss"] = one_point(model, perturber, data, 1, args)[1]
    out["rss_mib"] = peak_rss_mib()
    if device.type == "cuda":
        out["cuda_mib"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
    out["threads"] = torch.get_num_threads()
    return out


def run_timing(args: argparse.Namespace) -> dict:
    """Seconds per point of the three data paths, interleaved point by point in one process (so that other work
    on the machine slows them alike), the best of `args.points` after one untimed pass each."""
    device, model, perturber = build(args, 2)
    datas = {kind: place_data(kind, args, device, not args.no_channels_last) for kind in DATA}
    times: dict = {kind: [] for kind in DATA}
    losses: dict = {}
    for k in range(args.points + 1):
        for kind in DATA[k % 3:] + DATA[:k % 3]:  # each path first in turn
            seconds, loss = one_point(model, perturber, datas[kind], k, args)
            if k:
                times[kind].append(seconds)
            if k == 1:
                losses[kind] = loss
    return {"s_per_point": {kind: min(t) for kind, t in times.items()}, "loss": losses}


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
        print(json.dumps(run_timing(args) if args.one == "timing" else run_one(args)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "images.u8")
        with open(path, "wb") as f:
            for s in range(0, args.samples, CHUNK):
                f.write(images(s, min(s + CHUNK, args.samples)).tobytes())
        rows = [measure(args, c, path) for c in args.configs]
        timing = measure(args, "timing", path) if args.points else {"s_per_point": {}, "loss": {}}
    device = "cuda" if args.cuda else "cpu"
    print(f"{args.model}, {args.samples} images 3x32x32, batch {args.batch_size}, device {device}, "
          f"channels_last {not args.no_channels_last}, stream workers {args.workers}, torch threads "
          f"{rows[-1]['threads']}; time: best of {args.points} point(s), the three paths interleaved")
    base = rows[0]["rss_mib"] if rows[0]["config"] == "baseline" else None
    head = f"{'configuration':<16} {'peak RSS MiB':>12} {'+ baseline':>10} {'data held MiB':>13}"
    head += f" {'CUDA peak MiB':>13}" * args.cuda + f" {'s/point':>8} {'x memory':>8}  loss at the first point"
    print(head)
    ref = timing["s_per_point"].get("memory-float32")
    for r in rows:
        if r.get("data_mode") == "stream":
            held_txt = f"{'batches':>13}"
        else:
            held_txt = f"{r.get('data_bytes', 0) / 2 ** 20:13.1f}"
        line = f"{r['config']:<16} {r['rss_mib']:12.1f} "
        line += f"{r['rss_mib'] - base:10.1f}" if base is not None else f"{'':>10}"
        line += f" {held_txt}"
        if args.cuda:
            line += f" {r.get('cuda_mib', 0.0):13.1f}"
        t = timing["s_per_point"].get(r["config"])
        if t is not None:
            ratio = f"{t / ref:8.2f}" if ref else f"{'':>8}"
            line += f" {t:8.2f} {ratio}  {timing['loss'][r['config']]!r}"
        print(line)
    losses = set(timing["loss"].values()) | {r["loss"] for r in rows if "loss" in r}
    if len(losses) > 1:
        print(f"the losses differ ({sorted(losses)}): the data paths do not give the same values")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
