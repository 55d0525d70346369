#!/usr/bin/env python
"""Rank 0's cost per point: receiving, scheduling and writing results, with the computation taken away.

Each rank's `compute` returns fixed values at once, so what is timed is the scheduler and the surface file
alone. Side by side in one run:

- baseline: one process writing the same points straight into a `SurfaceFile` (write + flush on the clock);
- the scheduler serially (`run_tasks` without a communicator);
- the scheduler under mpiexec with 2, 4 and 8 ranks (oversubscribed on a small machine): points per second,
  and rank 0's busy time per point as `RunStats.root_seconds` measures it.

    python benchmarks/bench_scheduler.py                 # 201 x 201 = 40,401 points
    python benchmarks/bench_scheduler.py --n 101 --ranks 2 4
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loss_landscape.surface.grid import Axis, Grid, Provenance, SurfaceJob
from loss_landscape.surface.file import SurfaceFile  # noqa: E402


def _job(n: int) -> SurfaceJob:
    return SurfaceJob(grid=Grid(Axis(-1, 1, n), Axis(-1, 1, n)), directions_sha256="bench", dir_type="weights",
                      model="bench", model_sha256="", dataset="none")


def _compute(chunk):
    return [(flat, {"train": (0.5, 90.0)}) for flat, _ in chunk]


def inner(n: int, path: str, chunk_size: int | None, flush_every: float) -> None:
    """One measured run (under mpiexec when started with --inner --mpi)."""
    from loss_landscape.parallel.ranks import Team
    from loss_landscape.cli._process import setup_mpi
    from loss_landscape.parallel.scheduler import run_tasks
    use_mpi = "--mpi" in sys.argv
    comm = setup_mpi(use_mpi)
    team = Team.start(comm, 60.0) if comm is not None and comm.Get_size() > 1 else None
    rank = 0 if comm is None else comm.Get_rank()
    surf = SurfaceFile.open(path, _job(n), ["train"], Provenance()) if rank == 0 else None
    tasks = surf.pending(["train"]) if rank == 0 else None
    if comm is not None:
        comm.Barrier()
    t0 = time.perf_counter()
    stats = run_tasks(tasks, _compute, surf, comm=comm, chunk_size=chunk_size, flush_every=flush_every,
                      log=lambda line: None)
    wall = time.perf_counter() - t0
    if rank == 0:
        surf.close()
        print(json.dumps({"wall": wall, "written": stats.written, "root_seconds": stats.root_seconds,
                          "duplicates": stats.duplicates}))
    if team is not None:
        team.stop()


def baseline(n: int, path: str, flush_every: float) -> dict:
    surf = SurfaceFile.open(path, _job(n), ["train"], Provenance())
    tasks = surf.pending(["train"])
    t0 = time.perf_counter()
    last = time.monotonic()
    for flat, _ in tasks:
        surf.write(flat, {"train": (0.5, 90.0)})
        if time.monotonic() - last >= flush_every:
            surf.flush()
            last = time.monotonic()
    surf.close()
    wall = time.perf_counter() - t0
    return {"wall": wall, "written": len(tasks), "root_seconds": wall}


def _mpiexec() -> str:
    local = Path(sys.executable).parent / "mpiexec"
    return str(local) if local.exists() else (shutil.which("mpiexec") or "mpiexec")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=201, help="grid of n x n points (default: 201)")
    p.add_argument("--ranks", type=int, nargs="+", default=[2, 4, 8], help="MPI world sizes (default: 2 4 8)")
    p.add_argument("--chunk_size", type=int, default=None, help="points per message (default: the scheduler's)")
    p.add_argument("--flush_every", type=float, default=5.0, help="seconds between flushes (default: 5)")
    p.add_argument("--inner", default=None, help=argparse.SUPPRESS)
    p.add_argument("--mpi", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.inner:
        inner(args.n, args.inner, args.chunk_size, args.flush_every)
        return
    tmp = tempfile.mkdtemp(prefix="bench_sched_")
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    common = [sys.executable, __file__, "--n", str(args.n), "--flush_every", str(args.flush_every)]
    if args.chunk_size:
        common += ["--chunk_size", str(args.chunk_size)]
    baseline(args.n, os.path.join(tmp, "warm.h5"), args.flush_every)  # h5py's first-use costs out of the way
    rows = [("baseline: plain writes", baseline(args.n, os.path.join(tmp, "base.h5"), args.flush_every))]
    out = subprocess.run([*common, "--inner", os.path.join(tmp, "serial.h5")], env=env, capture_output=True,
                         text=True, check=True).stdout
    rows.append(("run_tasks, serial", json.loads(out.strip().splitlines()[-1])))
    for k in args.ranks:
        out = subprocess.run([_mpiexec(), "--oversubscribe", "-n", str(k), *common, "--inner",
                              os.path.join(tmp, f"mpi{k}.h5"), "--mpi"], env=env, capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"mpiexec -n {k} failed:\n{out.stderr}")
        rows.append((f"run_tasks, {k} ranks", json.loads(out.stdout.strip().splitlines()[-1])))
    shutil.rmtree(tmp)
    base = rows[0][1]["root_seconds"] / rows[0][1]["written"]
    print(f"{args.n} x {args.n} = {args.n * args.n} points, compute taken away, flush every {args.flush_every} s, "
          f"{os.cpu_count()} cores")
    print(f"{'run':<24}{'wall s':>9}{'points/s':>11}{'rank 0 us/pt':>14}{'vs baseline':>13}{'dupes':>7}")
    for name, r in rows:
        per = r["root_seconds"] / r["written"]
        print(f"{name:<24}{r['wall']:>9.2f}{r['written'] / r['wall']:>11.0f}{1e6 * per:>14.1f}{per / base:>12.1f}x"
              f"{r.get('duplicates', 0):>7}")


if __name__ == "__main__":
    main()
