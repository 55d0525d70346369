"""A real Slurm: a one-node cluster on this machine (tests/slurm_cluster.py). `srun --mpi=pmix` ranks give the
serial surface, SLURM_LOCALID picks the GPU, and doc/slurm.sbatch, cancelled with scancel as at a preemption,
leaves a flushed file, exits 143, leaves no rank behind, and completes to the serial values when submitted
again."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pytest

from conftest import ROOT, _env, run_command
from slurm_cluster import SlurmCluster, processes_mentioning, require_slurm
from loss_landscape.surface.reader import Surface, read_surface

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

SBATCH = ROOT / "doc" / "slurm.sbatch"
# Slurm sends SIGKILL this long after scancel's SIGTERM. It is longer than GONE_WITHIN, so that the check on
# leftover processes sees the ranks end by themselves, not Slurm's SIGKILL end them.
KILL_WAIT = 20
GONE_WITHIN = 10.0
STATUS = re.compile(r"slurm\.sbatch: srun exited with status (\d+)")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    require_slurm()
    with SlurmCluster(tmp_path_factory.mktemp("slurm"), kill_wait=KILL_WAIT) as c:
        yield c


def job_env() -> dict:
    """What a user exports before srun or sbatch: where the tool is, which python, and the PMIx setting of
    doc/slurm.sbatch (for a bare srun)."""
    env = _env()
    env.update(LOSS_LANDSCAPE=str(ROOT), PYTHON=sys.executable, PMIX_MCA_psec="native")
    return env


def srun_command(*args: str) -> list[str]:
    return ["srun", "-n", "3", "--mpi=pmix", sys.executable, str(ROOT / "plot_surface.py"), "--mpi", *args]


def assert_same_values(got: Surface, want: Surface, keys) -> None:
    for key in keys:
        np.testing.assert_array_equal(got.values[key], want.values[key], err_msg=key)


def test_srun_ranks_reproduce_the_serial_surface(cluster, tmp_path, trained_ckpt):
    common = ["--model_file", str(trained_ckpt), "--x=-1:1:7", "--y=-0.5:1:4", "--dir_file", str(tmp_path / "d.h5"),
              "--eval_on", "both", "--dir_type", "states", "--quiet"]
    run_command("plot_surface.py", *common, "--surf_file", str(tmp_path / "serial.h5"), cwd=tmp_path)
    proc = cluster.run(*srun_command(*common, "--surf_file", str(tmp_path / "srun.h5"), "--chunk_size", "1"),
                       env=job_env(), cwd=tmp_path, timeout=300)
    assert "on 3 ranks" in proc.stdout, proc.stdout
    assert_same_values(read_surface(str(tmp_path / "srun.h5")), read_surface(str(tmp_path / "serial.h5")),
                       ("train_loss", "train_acc", "test_loss", "test_acc"))


PICK_DEVICE = """
import json, os
from mpi4py import MPI  # initialized before the device is picked, as in plot_surface.py
import torch
from loss_landscape import evaluation
# No GPU is needed to check which one would be picked: pretend there are some.
torch.cuda.is_available = lambda: True
torch.cuda.set_device = lambda device: None
picked = {}
for gpus in (8, 2):
    torch.cuda.device_count = lambda: gpus
    picked[gpus] = str(evaluation.pick_device(True))
print(json.dumps({"rank": MPI.COMM_WORLD.Get_rank(), "localid": int(os.environ["SLURM_LOCALID"]),
                  "local_rank": evaluation.local_rank_from_env(), "picked": picked}))
"""


def test_slurm_localid_picks_the_gpu(cluster, tmp_path):
    proc = cluster.run("srun", "-n", "3", "--mpi=pmix", sys.executable, "-c", PICK_DEVICE, env=job_env(),
                       cwd=tmp_path)
    ranks = sorted((json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")),
                   key=lambda r: r["localid"])
    assert [r["localid"] for r in ranks] == [0, 1, 2], proc.stdout
    for r in ranks:
        assert r["local_rank"] == r["localid"], r
        assert r["picked"] == {"8": f"cuda:{r['localid']}", "2": f"cuda:{r['localid'] % 2}"}, r


def test_pmix_setting_silences_the_help_file_noise(cluster, tmp_path):
    hello = "from mpi4py import MPI; MPI.COMM_WORLD.Barrier()"
    quiet = cluster.run("srun", "-n", "2", "--mpi=pmix", sys.executable, "-c", hello, env=job_env(), cwd=tmp_path)
    assert "Sorry!" not in quiet.stderr and "find-available" not in quiet.stderr, quiet.stderr
    if not cluster.munge_at_default_socket:
        return  # slurmstepd's PMIx finds no munged, offers no munge security: there is no noise to silence
    env = job_env()
    del env["PMIX_MCA_psec"]
    noisy = cluster.run("srun", "-n", "2", "--mpi=pmix", sys.executable, "-c", hello, env=env, cwd=tmp_path)
    assert "find-available:not-valid" in noisy.stderr, noisy.stderr


# ----------------------------------------------------------------------------------------------------------
# doc/slurm.sbatch, cancelled mid-run and submitted again
# ----------------------------------------------------------------------------------------------------------

@dataclass
class Cancelled:
    work: Path
    args: list
    serial: Surface
    output: str  # the first job's output file
    done: np.ndarray  # its train_done mask once it had ended
    values: np.ndarray  # its train_loss
    gone_after: Optional[float]  # seconds from scancel until no process of the job was left; None: never
    left: list  # (pid, command line) of those still there GONE_WITHIN s after scancel


def submit(cluster: SlurmCluster, work: Path, args: list, output: str) -> int:
    # Plain -n 3: each rank takes its share of the cores from SLURM_STEP_TASKS_PER_NODE.
    return cluster.sbatch("-n", "3", "-o", str(work / output), str(SBATCH), *args,
                          env=job_env(), cwd=work)


def done_points(path: Path) -> int:
    """Points marked done in a surface file another process is writing (0 while it cannot be read)."""
    import h5py
    try:
        with h5py.File(path, "r", locking=False) as f:
            return int(np.count_nonzero(f["train_done"][()]))
    except (OSError, KeyError, ValueError, RuntimeError):
        return 0


@pytest.fixture(scope="module")
def cancelled(cluster, tmp_path_factory, trained_ckpt) -> Cancelled:
    work = tmp_path_factory.mktemp("sbatch")  # every process of the job has this path on its command line
    common = ["--model_file", str(trained_ckpt), "--x=-1:1:40", "--y=-1:1:40", "--dir_file", str(work / "dirs.h5"),
              "--dir_type", "states", "--quiet", "--flush_every", "0.2"]
    # The uninterrupted serial run; it also writes the direction file that the jobs then reuse. One thread,
    # like each rank of the jobs: on a busy machine two OpenMP threads spin against each other and take many
    # times longer (the values are the same).
    serial_cmd = [sys.executable, str(ROOT / "plot_surface.py"), *common, "--surf_file", str(work / "serial.h5")]
    proc = subprocess.run(serial_cmd, cwd=work, env={**_env(), "OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, f"serial run exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    serial = read_surface(str(work / "serial.h5"))
    surf = work / "surface.h5"
    args = [*common, "--surf_file", str(surf)]

    job = submit(cluster, work, args, "first.out")
    deadline = time.monotonic() + 300
    while done_points(surf) == 0:
        if cluster.job_state(job) is None or time.monotonic() > deadline:
            out = (work / "first.out").read_text() if (work / "first.out").exists() else ""
            pytest.fail(f"job {job} wrote no point before it ended or in 300 s:\n{out}\n{cluster.logs()}")
        time.sleep(0.1)
    cluster.run("scancel", str(job))

    start, left, gone_after = time.monotonic(), [], None
    while time.monotonic() - start < KILL_WAIT + 30:
        procs = processes_mentioning(str(work))
        if not procs:
            gone_after = time.monotonic() - start
            break
        if time.monotonic() - start >= GONE_WITHIN and not left:
            left = procs
        time.sleep(0.2)
    cluster.wait_job(job, timeout=KILL_WAIT + 60)
    import h5py
    with h5py.File(surf, "r", locking=False) as f:
        done, values = f["train_done"][()].astype(bool), f["train_loss"][()]
    return Cancelled(work, args, serial, (work / "first.out").read_text(), done, values, gone_after, left)


def test_scancel_leaves_a_flushed_file(cancelled):
    done = cancelled.done
    assert 0 < done.sum() < done.size, f"{done.sum()} of {done.size} points done:\n{cancelled.output}"
    assert np.isfinite(cancelled.values[done]).all()
    np.testing.assert_array_equal(cancelled.values[done], cancelled.serial.values["train_loss"][done])


def test_resubmitted_job_completes_to_the_serial_values(cluster, cancelled):
    job = submit(cluster, cancelled.work, cancelled.args, "second.out")
    cluster.wait_job(job, timeout=900)
    out = (cancelled.work / "second.out").read_text()
    assert [int(s) for s in STATUS.findall(out)] == [0], out
    missing = int(cancelled.done.size - cancelled.done.sum())
    assert re.search(rf"\b{missing} to compute\b", out), f"expected {missing} points left to compute:\n{out}"
    assert_same_values(read_surface(str(cancelled.work / "surface.h5")), cancelled.serial,
                       ("train_loss", "train_acc"))
    assert "Sorry!" not in out and "find-available" not in out, out


def test_scancel_ends_the_step_with_143(cancelled):
    statuses = [int(s) for s in STATUS.findall(cancelled.output)]
    recorded = statuses or "never (Slurm killed the batch shell before srun returned)"
    assert statuses == [143], f"doc/slurm.sbatch recorded srun's status {recorded}, expected [143]:\n{cancelled.output}"


def test_scancel_leaves_no_process_running(cancelled):
    left = "\n".join(f"  {pid}: {cmd[:160]}" for pid, cmd in cancelled.left)
    gone = "never" if cancelled.gone_after is None else f"after {cancelled.gone_after:.1f} s"
    assert cancelled.gone_after is not None and cancelled.gone_after <= GONE_WITHIN, (
        f"the job's processes were gone {gone} (Slurm's SIGKILL comes {KILL_WAIT} s after scancel), expected "
        f"within {GONE_WITHIN:.0f} s; still running {GONE_WITHIN:.0f} s after scancel:\n{left}\n"
        f"job output:\n{cancelled.output}")
