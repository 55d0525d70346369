#!/usr/bin/env python
"""Cost of a surface-file flush with and without fsync, on a disk and on /dev/shm.

`surface_file.SurfaceFile.flush` writes the values, flushes and fsyncs, then the done flags, flushes and
fsyncs (so values reach the disk before the flags that vouch for them). This times flushes of a file with
train and test groups for each grid and number of points per flush, once as the code runs and once with
the two fsyncs skipped, and prints the medians side by side with their ratio and the share of one
``--flush_every`` interval they take.

Points per flush: the embedded digits CNN computes about 100 points a second on two CPU cores (some 500
per 5 s flush); a ResNet-56 on CIFAR-10 about one a second per GPU (5 to 40 per flush on 1 to 8 GPUs).

    python benchmarks/bench_flush.py                      # here (this disk) and /dev/shm
    python benchmarks/bench_flush.py --dirs /scratch/me --grids 51 201 1001 --points 10 500 5000
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from loss_landscape.surface.grid import Axis, Grid, Provenance, SurfaceJob
from loss_landscape.surface.file import SurfaceFile  # noqa: E402


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Time surface-file flushes with and without fsync.", add_help=add_help)
    p.add_argument("--dirs", nargs="+", default=[".", "/dev/shm"],
                   help="folders to write the test files in (default: the current folder and /dev/shm)")
    p.add_argument("--grids", nargs="+", type=int, default=[51, 201], help="N for N x N grids (default: 51 201)")
    p.add_argument("--points", nargs="+", type=int, default=[10, 500],
                   help="points written per flush (default: 10 500)")
    p.add_argument("--flushes", type=int, default=30, help="flushes timed per case (default: 30)")
    p.add_argument("--flush_every", type=float, default=5.0, help="interval the share is computed for (default: 5 s)")
    return p


def time_flushes(folder: str, n: int, points: int, flushes: int, fsync: bool) -> float:
    """Median seconds of a flush of `points` consecutive points (train and test) on an n x n grid."""
    grid = Grid(Axis(-1, 1, n), Axis(-1, 1, n))
    job = SurfaceJob(grid=grid, directions_sha256="bench", dir_type="weights", model="bench", model_sha256="bench",
                     dataset="bench")
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        path = os.path.join(tmp, "bench.h5")
        f = SurfaceFile.open(path, job, ["train", "test"], Provenance())
        if not fsync:
            f._fsync = lambda: None
        times, flat = [], 0
        try:
            for _ in range(flushes):
                for _ in range(points):
                    f.write(flat % grid.size, {"train": (0.5, 90.0), "test": (0.6, 88.0)})
                    flat += 1
                start = time.perf_counter()
                f.flush()
                times.append(time.perf_counter() - start)
        finally:
            f.close()
    return statistics.median(times)


def main(args: argparse.Namespace) -> int:
    print(f"median ms per flush ({args.flushes} flushes each); share of a {args.flush_every:g} s interval")
    header = f"{'grid':>9} {'points':>6}"
    for d in args.dirs:
        header += f" | {d[:18]:>18}: fsync  no-fsync  ratio  share"
    print(header)
    for n in args.grids:
        for points in args.points:
            line = f"{n:>4}x{n:<4} {points:>6}"
            for d in args.dirs:
                with_sync = time_flushes(d, n, points, args.flushes, fsync=True)
                without = time_flushes(d, n, points, args.flushes, fsync=False)
                line += (f" | {'':>18}  {1e3 * with_sync:6.2f} {1e3 * without:8.2f} {with_sync / without:6.1f}"
                         f" {100 * with_sync / args.flush_every:5.2f}%")
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
