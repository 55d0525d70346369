"""Who is alive in a parallel job and how failures travel (the set-up steps that use this are in `steps`).

Every message between ranks is point to point and every wait has a deadline, so no rank waits forever for one
that died, stopped or hung:

- `Team.start` runs a heartbeat thread on each rank: a few bytes every second (workers to rank 0, rank 0 to
  every worker), recording when each peer was last heard. A peer silent for ``timeout`` seconds is *lost*.
- Set-up steps (`steps.root_first`, `steps.everywhere`) send each rank's outcome to rank 0 and rank 0's verdict back, so a
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
