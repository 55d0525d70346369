"""A one-node Slurm cluster for the tests: munged, slurmctld and slurmd started on this machine, every file
(key, sockets, state, spool, logs, configuration) in one folder, and stopped again by their pids.

Debian's packages are enough: `apt-get install slurm-wlm munge libpmix2 libpmix-dev` (Slurm's mpi/pmix plugin
opens the unversioned libpmix.so, which only libpmix-dev ships). No system configuration is read or written.
The node claims more CPUs than the machine has (`SlurmdParameters=config_overrides`), so a 3-rank step fits
on a 2-core machine, and processes are tracked without cgroups (`proctrack/linuxproc`, `task/none`), which
works in containers. Without accounting (no slurmdbd), exit codes are read from a job's output.

Where root may make a mount namespace, slurmd runs in one of its own in which /run is a folder of the
cluster's with munged's socket at the default place, /run/munge/munge.socket.2, as on a real cluster. Slurm
finds munged through `AuthInfo` either way; the PMIx server in slurmstepd only looks there, and offers munge
security to the ranks only when it finds it, which is what makes the pip Open MPI print its noise.

    with SlurmCluster(tmp_path / "slurm") as cluster:
        cluster.run("srun", "-n", "3", "hostname")
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Optional, Sequence

from conftest import skip_or_fail

BINARIES = ("munged", "slurmctld", "slurmd", "srun", "sbatch", "scancel", "squeue", "sinfo", "scontrol")


def missing_binaries() -> list[str]:
    """The Slurm and munge programs this helper needs that are not on PATH (or in /usr/sbin)."""
    return [b for b in BINARIES if _which(b) is None]


def require_slurm() -> None:
    """Skips the calling test when Slurm is not installed; with CI=true, fails it instead, so that a CI
    machine without Slurm cannot pass the Slurm tests by skipping them."""
    missing = missing_binaries()
    if missing:
        skip_or_fail(f"Slurm is not installed here (missing: {', '.join(missing)}; "
                     f"apt-get install slurm-wlm munge libpmix2 libpmix-dev)")


def _which(name: str) -> Optional[str]:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/local/sbin")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SlurmError(RuntimeError):
    """A daemon did not start, or the node did not become idle, in time; the message holds its log."""


class SlurmCluster:
    """munged + slurmctld + slurmd under `root`, with one node of `cpus` CPUs in one partition.

    Args:
        root: an empty folder of its own (a `tmp_path`); everything is created in it, nothing outside it.
        cpus: the CPUs the node announces (more than the machine has is fine).
        kill_wait: seconds between Slurm's SIGTERM and SIGKILL when a job is cancelled or preempted.
        mpi_default: `MpiDefault` of slurm.conf.
    """

    def __init__(self, root: Path, *, cpus: int = 8, kill_wait: int = 5, mpi_default: str = "pmix"):
        self.root = Path(root).resolve()
        self.cpus, self.kill_wait, self.mpi_default = cpus, kill_wait, mpi_default
        self.node = socket.gethostname().split(".")[0]
        self.conf = self.root / "etc" / "slurm.conf"
        self.munge_socket = self.root / "munge" / "munge.socket"
        self.daemons: dict[str, subprocess.Popen] = {}
        self.munge_at_default_socket = False

    # ------------------------------------------------------------------------------------------------------
    @property
    def env(self) -> dict:
        """Environment additions under which srun, sbatch, squeue, scancel... talk to this cluster."""
        return {"SLURM_CONF": str(self.conf)}

    def environ(self, base: Optional[dict] = None) -> dict:
        env = dict(os.environ if base is None else base)
        env.update(self.env)
        # A test run inside an allocation would otherwise hand its job's variables to srun and sbatch.
        for key in [k for k in env if k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_"))]:
            if key != "SLURM_CONF":
                del env[key]
        return env

    def run(self, *cmd: str, env: Optional[dict] = None, cwd: Optional[Path] = None, timeout: float = 120,
            check: bool = True) -> subprocess.CompletedProcess:
        """Runs a client command (srun, sbatch, ...) against this cluster."""
        proc = subprocess.run(list(cmd), env=self.environ(env), cwd=cwd, capture_output=True, text=True,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\nstdout:\n{proc.stdout}\n"
                                 f"stderr:\n{proc.stderr}\n{self.logs()}")
        return proc

    def sbatch(self, *args: str, env: Optional[dict] = None, cwd: Optional[Path] = None) -> int:
        """Submits a batch job; returns its id."""
        out = self.run("sbatch", "--parsable", *args, env=env, cwd=cwd).stdout.strip()
        return int(out.split(";")[0])

    def job_state(self, job_id: int) -> Optional[str]:
        """PENDING, RUNNING, COMPLETING...; None once the job has left the queue."""
        out = self.run("squeue", "-h", "-j", str(job_id), "-o", "%T", check=False).stdout.strip()
        return out or None

    def wait_job(self, job_id: int, timeout: float = 300) -> None:
        """Waits until the job has left the queue (finished, cancelled or failed)."""
        deadline = time.monotonic() + timeout
        while self.job_state(job_id) is not None:
            if time.monotonic() > deadline:
                raise SlurmError(f"job {job_id} still {self.job_state(job_id)} after {timeout:.0f} s\n"
                                 f"{self.logs()}")
            time.sleep(0.5)

    # ------------------------------------------------------------------------------------------------------
    def __enter__(self) -> "SlurmCluster":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self, timeout: float = 60) -> None:
        for sub in ("etc", "munge", "state", "spool", "log", "run", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "munge").chmod(0o700)
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        self._write_conf()
        # --force: munged wants every folder above its socket open to all, and pytest's are not (only root
        # talks to this munged).
        self._start("munged", [_which("munged"), "--foreground", "--force", f"--socket={self.munge_socket}",
                               f"--key-file={key}", f"--pid-file={self.root / 'munge' / 'munged.pid'}",
                               f"--log-file={self.root / 'log' / 'munged.log'}",
                               f"--seed-file={self.root / 'munge' / 'munged.seed'}"])
        self._wait(lambda: self.munge_socket.exists(), timeout, "munged did not create its socket")
        self._start("slurmctld", [_which("slurmctld"), "-D", "-i", "-f", str(self.conf)])
        self._wait(lambda: self.run("scontrol", "ping", check=False, timeout=10).stdout.count("UP") > 0,
                   timeout, "slurmctld does not answer `scontrol ping`")
        slurmd = [_which("slurmd"), "-D", "-N", self.node, "-f", str(self.conf)]
        self.munge_at_default_socket = self._can_fake_run()
        if self.munge_at_default_socket:
            # As on a real cluster, slurmd (and the PMIx server in its slurmstepd) finds munged at the default
            # socket: in a mount namespace of its own, /run is a folder of ours linking to our munged.
            link = self.root / "run" / "munge" / "munge.socket.2"
            link.parent.mkdir(exist_ok=True)
            link.symlink_to(self.munge_socket)
            slurmd = [_which("unshare"), "--mount", "--propagation", "private", "sh", "-c",
                      f'mount --bind "{self.root / "run"}" /run && exec "$0" "$@"', *slurmd]
        self._start("slurmd", slurmd)
        self._wait(self._node_idle, timeout, f"node {self.node} did not become idle")
        if self.mpi_default == "pmix":
            probe = self.run("srun", "-n", "1", "--mpi=pmix", "true", check=False, timeout=60)
            if probe.returncode != 0:
                raise SlurmError(f"`srun --mpi=pmix true` exited {probe.returncode}: {probe.stderr.strip()}\n"
                                 f"(Debian: Slurm's mpi/pmix plugin needs libpmix-dev)\n{self.logs()}")

    def stop(self) -> None:
        """Cancels the cluster's jobs, then ends the daemons this object started (slurmd, slurmctld, munged),
        by pid: SIGTERM, and SIGKILL for one still there after 10 s."""
        if "slurmctld" in self.daemons and self.daemons["slurmctld"].poll() is None:
            try:
                self.run("scancel", "--full", "--user", str(os.getuid()), check=False, timeout=10)
                self._wait(lambda: not self.run("squeue", "-h", check=False, timeout=10).stdout.strip(),
                           self.kill_wait + 15, "jobs still queued")
            except (SlurmError, subprocess.TimeoutExpired):
                pass
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.daemons.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def logs(self) -> str:
        """The tails of the daemons' logs (for failure messages)."""
        parts = []
        for log in sorted((self.root / "log").glob("*.log")):
            lines = log.read_text(errors="replace").splitlines()[-15:]
            parts.append(f"--- {log.name} ---\n" + "\n".join(lines))
        return "\n".join(parts)

    # ------------------------------------------------------------------------------------------------------
    def _write_conf(self) -> None:
        r = self.root
        (r / "etc" / "plugstack.conf").write_text("")  # not the system's /etc/slurm/plugstack.conf
        lines = {
            "ClusterName": "lltest",
            "MailProg": "/bin/true",
            "SlurmctldHost": f"{self.node}(127.0.0.1)",
            "SlurmUser": "root",
            "SlurmdUser": "root",
            "SlurmctldPort": _free_port(),
            "SlurmdPort": _free_port(),
            "AuthType": "auth/munge",
            "CredType": "cred/munge",
            "AuthInfo": f"socket={self.munge_socket}",
            "StateSaveLocation": r / "state",
            "SlurmdSpoolDir": r / "spool",
            "TmpFS": r / "tmp",
            "SlurmctldPidFile": r / "run" / "slurmctld.pid",
            "SlurmdPidFile": r / "run" / "slurmd.pid",
            "SlurmctldLogFile": r / "log" / "slurmctld.log",
            "SlurmdLogFile": r / "log" / "slurmd.log",
            "SlurmctldDebug": "info",
            "SlurmdDebug": "info",
            "PlugStackConfig": r / "etc" / "plugstack.conf",
            "ProctrackType": "proctrack/linuxproc",
            "TaskPlugin": "task/none",
            "SelectType": "select/cons_tres",
            "SelectTypeParameters": "CR_Core",
            "MpiDefault": self.mpi_default,
            "SwitchType": "switch/none",
            "JobAcctGatherType": "jobacct_gather/none",
            "AccountingStorageType": "accounting_storage/none",
            "JobCompType": "jobcomp/none",
            "SchedulerType": "sched/backfill",
            "SlurmdParameters": "config_overrides",
            "ReturnToService": 2,
            "KillWait": self.kill_wait,
            "MinJobAge": 5,
            "InactiveLimit": 0,
            "SlurmctldTimeout": 30,
            "SlurmdTimeout": 60,
        }
        text = "".join(f"{k}={v}\n" for k, v in lines.items())
        text += (f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory=1000 State=UNKNOWN\n"
                 f"PartitionName=test Nodes={self.node} Default=YES MaxTime=INFINITE State=UP\n")
        self.conf.write_text(text)

    def _start(self, name: str, cmd: Sequence[str]) -> None:
        log = open(self.root / "log" / f"{name}.out", "wb")
        # Its own session: a Ctrl-C in the terminal that runs pytest does not reach the daemons.
        self.daemons[name] = subprocess.Popen(list(cmd), stdout=log, stderr=subprocess.STDOUT,
                                              stdin=subprocess.DEVNULL, start_new_session=True,
                                              env=self.environ(), cwd=self.root)
        log.close()

    def _can_fake_run(self) -> bool:
        if os.getuid() != 0 or _which("unshare") is None:
            return False
        probe = subprocess.run([_which("unshare"), "--mount", "--propagation", "private", "sh", "-c",
                                f'mount --bind "{self.root / "run"}" /run'], capture_output=True, timeout=10)
        return probe.returncode == 0

    def _node_idle(self) -> bool:
        out = self.run("sinfo", "-h", "-N", "-o", "%T", check=False, timeout=10).stdout.split()
        return out == ["idle"]

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while True:
            dead = [n for n, p in self.daemons.items() if p.poll() is not None]
            if dead:
                out = (self.root / "log" / f"{dead[0]}.out").read_text(errors="replace")[-3000:]
                raise SlurmError(f"{dead[0]} exited {self.daemons[dead[0]].returncode}:\n{out}\n{self.logs()}")
            try:
                if ready():
                    return
            except subprocess.TimeoutExpired:
                pass
            if time.monotonic() > deadline:
                raise SlurmError(f"{what} within {timeout:.0f} s\n{self.logs()}")
            time.sleep(0.3)


def processes_mentioning(text: str) -> list[tuple[int, str]]:
    """(pid, command line) of every process on this machine whose command line contains `text`, this
    process excepted; for checking that a job left nothing behind."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if text in cmdline:
            found.append((int(entry.name), cmdline))
    return found
