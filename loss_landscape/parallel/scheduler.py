"""Which grid points remain, how they are split across ranks, and who writes.

Rank 0 is the scheduler and the only writer: it hands the points still missing to the ranks in
chunks on request (a fast rank simply asks more often), receives each chunk's results (never the
whole grid), writes them, and computes chunks itself in the main thread while a helper thread
serves the other ranks. Without a communicator, or with one rank, everything runs serially and
mpi4py is never imported.

Nothing waits without a deadline (`ranks`): a worker that sends nothing for ``--rank_timeout`` seconds, or
computes one chunk for longer than 10 times the slowest chunk so far (and at least the timeout), is declared
lost and its chunk goes back to the queue, so the run finishes on the others. A worker that fails reports to
rank 0, which writes every result it has received before the job ends.
"""

from __future__ import annotations

import math
import queue
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol, Sequence

from loss_landscape._util import rank_and_size
from loss_landscape.parallel import faults
from loss_landscape.parallel.ranks import (POLL, TAG_NOTE, PeerFailed, RankLost, RootGone, RunInterrupted, Team,
                                           failure_message, note_failure, team_of)
from loss_landscape.parallel.steps import everywhere, root_first

__all__ = ["block_split", "default_chunk_size", "make_chunks", "run_tasks", "RunStats", "report_failure",
           "report_signal", "root_first", "everywhere", "PeerFailed", "RankLost", "RootGone", "RunInterrupted"]

Task = tuple  # (flat point index, groups still missing there)
Result = tuple  # (flat point index, {group: (loss, acc)})

TAG_RESULT = 11  # worker -> rank 0: a chunk's results, and the request for the next
TAG_WORK = 12  # rank 0 -> worker: the next chunk, or None when there is no more


class Sink(Protocol):
    def write(self, flat: int, values: dict) -> None: ...

    def flush(self) -> int: ...


# ----------------------------------------------------------------------------------------------------------
# Pure splitting
# ----------------------------------------------------------------------------------------------------------

def block_split(n: int, parts: int, index: int) -> range:
    """The `index`-th of `parts` contiguous blocks of range(n); sizes differ by at most one.

    Example:
        >>> [list(block_split(5, 3, r)) for r in range(3)]
        [[0, 1], [2, 3], [4]]
    """
    if parts < 1 or not 0 <= index < parts:
        raise ValueError(f"block {index} of {parts} does not exist")
    base, extra = divmod(n, parts)
    start = index * base + min(index, extra)
    return range(start, start + base + (1 if index < extra else 0))


def default_chunk_size(n_tasks: int, n_ranks: int) -> int:
    """Small enough that every rank gets about eight chunks (balance, progress, little lost on a
    crash), never more than 16 points."""
    if n_tasks <= 0:
        return 1
    return max(1, min(16, math.ceil(n_tasks / (8 * max(1, n_ranks)))))


def make_chunks(tasks: Sequence[Task], chunk_size: int) -> list[list[Task]]:
    """Consecutive chunks of `chunk_size` tasks (the last may be shorter)."""
    if chunk_size < 1:
        raise ValueError(f"chunk size must be >= 1, got {chunk_size}")
    return [list(tasks[i:i + chunk_size]) for i in range(0, len(tasks), chunk_size)]


# ----------------------------------------------------------------------------------------------------------
# Running
# ----------------------------------------------------------------------------------------------------------

def run_tasks(tasks: Optional[Sequence[Task]], compute: Callable[[list[Task]], list[Result]],
              sink: Optional[Sink], *, comm: Any = None, chunk_size: Optional[int] = None,
              flush_every: float = 5.0, progress: Optional[Callable[[int], None]] = None,
              log: Callable[[str], None] = print) -> RunStats:
    """Computes every task and writes each result through `sink` on rank 0.

    Args:
        tasks: the points to compute (only rank 0's value is used).
        compute: turns a chunk of tasks into results; runs on every rank.
        sink: the writer (rank 0 only; None elsewhere).
        comm: an mpi4py communicator, or None for a serial run.
        chunk_size: tasks per message; `default_chunk_size` when None.
        flush_every: seconds between `sink.flush` calls.
        progress: called on rank 0 with the number of points just written.
        log: where rank 0 says that a rank was lost and its chunk given to another.

    Returns:
        What this rank did: points computed and, on rank 0, points written, lost ranks and rank 0's own cost
        of scheduling and writing.

    Raises:
        PeerFailed (rank 0: a worker failed; on a worker it is never raised here), RootGone (a worker whose
        rank 0 went silent), RankLost (no rank left to compute), RunInterrupted, or the error of `compute`.
        Rank 0 writes every result it has received before it raises.
    """
    rank, size = rank_and_size(comm)
    if rank != 0:
        return _work(comm, compute)
    chunks = make_chunks(list(tasks or []), chunk_size or default_chunk_size(len(tasks or []), size))
    if size == 1:
        return _run_serial(chunks, compute, sink, flush_every, progress)
    return _run_root(chunks, compute, sink, comm, flush_every, progress, log)


@dataclass
class RunStats:
    """What one rank did in `run_tasks`."""

    computed: int = 0
    written: int = 0
    duplicates: int = 0  # results of a point that had been written already (a lost rank's late answer)
    lost: dict = field(default_factory=dict)  # rank -> why
    root_seconds: float = 0.0  # rank 0's time receiving, scheduling, writing and flushing (not computing)


def _flush(sink: Sink) -> None:
    faults.fire("flush", 0)
    sink.flush()


def _run_serial(chunks, compute, sink, flush_every, progress) -> RunStats:
    stats = RunStats()
    last = time.monotonic()
    try:
        for chunk in chunks:
            faults.fire("midrun", 0)
            results = compute(chunk)
            t0 = time.perf_counter()
            for flat, values in results:
                faults.fire("write", 0)
                sink.write(flat, values)
            stats.computed += len(chunk)
            stats.written += len(results)
            if progress:
                progress(len(chunk))
            if time.monotonic() - last >= flush_every:
                _flush(sink)
                last = time.monotonic()
            stats.root_seconds += time.perf_counter() - t0
    finally:
        t0 = time.perf_counter()
        sink.flush()
        stats.root_seconds += time.perf_counter() - t0
    return stats


class _Server:
    """Rank 0's helper thread: answers requests, writes results, flushes on a clock, and watches for
    silent ranks (whose chunks go back to the queue)."""

    def __init__(self, chunks, sink, team: Team, flush_every, progress, log, compute_here: bool):
        self.MPI = team.MPI
        self.team, self.comm = team, team.comm
        self.chunks = deque(chunks)
        self.lock = threading.Lock()
        self.sink, self.flush_every, self.progress, self.log = sink, flush_every, progress, log
        self.compute_here = compute_here
        self.assigned: dict[int, tuple[list, float]] = {}  # worker -> (its chunk, since when)
        self.finished: set[int] = set()  # workers told there is no more work
        self.local = queue.Queue()  # results of rank 0's own chunks
        self.local_open = 0  # chunks rank 0's main thread has taken and not yet handed back
        self.slowest = 0.0  # seconds of the slowest chunk so far, on any rank
        self.main_done = threading.Event()
        self.stop = threading.Event()
        self.error: Optional[BaseException] = None
        self.stats = RunStats()
        self.seen: set[int] = set()

    # -- the queue ----------------------------------------------------------------------------------------

    def take_local(self):
        with self.lock:
            if not self.chunks:
                return None
            self.local_open += 1
            return self.chunks.popleft()

    def put_local(self, results, seconds: float) -> None:
        self.local.put(results)
        with self.lock:
            self.local_open -= 1
            self.slowest = max(self.slowest, seconds)

    def outstanding(self) -> bool:
        """Whether any chunk is still queued or being computed somewhere."""
        with self.lock:
            return bool(self.chunks or self.assigned or self.local_open)

    def _complete(self) -> bool:
        return (not self.outstanding() and self.main_done.is_set() and self.local.empty()
                and all(r in self.finished for r in self.team.alive_workers()))

    # -- writing ------------------------------------------------------------------------------------------

    def _write(self, results) -> None:
        for flat, values in results:
            if flat in self.seen:
                self.stats.duplicates += 1
                continue
            self.seen.add(flat)
            faults.fire("write", 0)
            self.sink.write(flat, values)
            self.stats.written += 1
        if self.progress and results:
            self.progress(len(results))

    def _drain_local(self) -> bool:
        got = False
        while True:
            try:
                results = self.local.get_nowait()
            except queue.Empty:
                return got
            self._write(results)
            got = True

    # -- messages -----------------------------------------------------------------------------------------

    def _on_result(self, src: int, msg: dict) -> None:
        if src in self.team.lost:
            return  # declared lost; its chunk went to another rank
        self._write(msg["results"] or [])
        with self.lock:
            self.assigned.pop(src, None)
            self.slowest = max(self.slowest, msg.get("seconds", 0.0))
            chunk = None if self.error is not None else (self.chunks.popleft() if self.chunks else None)
            if chunk is not None:
                self.assigned[src] = (chunk, time.monotonic())
        if self.error is not None:
            return  # the job is ending: no more work, and no "done" that would let the worker finalize
        self.team.post(chunk, src, TAG_WORK)
        if chunk is None:
            self.finished.add(src)

    def _on_note(self, src: int, msg: dict) -> None:
        failed = note_failure(src, msg)
        if failed is not None:
            self.error = self.error or failed
        else:
            self._lose(src, f"was ended by {msg['signal']}")

    def _receive(self, *, final: bool = False) -> bool:
        status = self.MPI.Status()
        got = False
        while self.comm.Iprobe(source=self.MPI.ANY_SOURCE, tag=TAG_RESULT, status=status):
            src = status.Get_source()
            msg = self.comm.recv(source=src, tag=TAG_RESULT)
            self.team.heard(src)
            if not final:
                self._on_result(src, msg)
            elif src not in self.team.lost:
                self._write(msg["results"] or [])
            got = True
        for src, msg in self.team.take_notes(TAG_NOTE):
            self._on_note(src, msg)
            got = True
        return got

    def _lose(self, rank: int, why: str) -> None:
        with self.lock:
            chunk = self.assigned.pop(rank, None)
            if chunk is not None:
                self.chunks.appendleft(chunk[0])
        self.team.lose(rank, why)
        self.stats.lost[rank] = why
        moved = f"; its {len(chunk[0])} point(s) go to the other ranks" if chunk else ""
        self.log(f"warning: rank {rank} {why}: declared lost{moved}")
        if not self.compute_here and not self.team.alive_workers() and self.error is None:
            self.error = RankLost(f"no rank is left to compute: every worker is lost ({why}) and rank 0 cannot "
                                  f"compute (MPI without thread support)")

    def _check_silent(self) -> None:
        now = time.monotonic()
        limit = max(self.team.timeout, 10 * self.slowest)
        for r in self.team.alive_workers():
            if r in self.finished:
                continue
            silent = self.team.silent_for(r)
            since = self.assigned.get(r, (None, None))[1]
            if silent > self.team.timeout:
                self._lose(r, f"sent nothing for {silent:.0f} s (stopped, hung or dead)")
            elif since is not None and now - since > limit:
                self._lose(r, f"has been computing one chunk for {now - since:.0f} s, over its limit of "
                              f"{limit:.0f} s (10 x the slowest chunk, at least --rank_timeout)")

    # -- the loop -----------------------------------------------------------------------------------------

    def serve(self) -> None:
        last_flush = last_check = time.monotonic()
        try:
            while not self.stop.is_set() and self.error is None:
                t0 = time.perf_counter()
                busy = self._receive()
                busy |= self._drain_local()
                now = time.monotonic()
                if now - last_check >= 0.05:
                    self._check_silent()
                    last_check = now
                if now - last_flush >= self.flush_every:
                    _flush(self.sink)
                    last_flush = time.monotonic()
                if busy:
                    self.stats.root_seconds += time.perf_counter() - t0
                if self._complete():
                    break
                if not busy:
                    time.sleep(POLL)
        except BaseException as e:  # handed to the main thread, which raises it
            self.error = self.error or e
        finally:
            t0 = time.perf_counter()
            try:  # whatever has arrived is written before anything is raised
                self._receive(final=True)
                self._drain_local()
                self.sink.flush()
            except BaseException as e:
                self.error = self.error or e
            self.stats.root_seconds += time.perf_counter() - t0


def _run_root(chunks, compute, sink, comm, flush_every, progress, log) -> RunStats:
    from mpi4py import MPI
    team = team_of(comm) or Team(comm, timeout=float("inf"))  # a plain communicator: no heartbeats
    # Rank 0 computes too when the MPI library lets a second thread make the MPI calls.
    compute_here = MPI.Query_thread() >= MPI.THREAD_SERIALIZED
    server = _Server(chunks, sink, team, flush_every, progress, log, compute_here)
    if not compute_here:
        server.main_done.set()
        server.serve()
        if server.error:
            raise server.error
        return server.stats
    thread = threading.Thread(target=server.serve, name="surface-scheduler", daemon=True)
    thread.start()
    try:
        while server.error is None:
            chunk = server.take_local()
            if chunk is None:
                if not server.outstanding():
                    break
                time.sleep(0.01)  # a lost rank's chunk may come back
                continue
            faults.fire("midrun", 0)
            t0 = time.monotonic()
            results = compute(chunk)
            server.put_local(results, time.monotonic() - t0)
            server.stats.computed += len(chunk)
        server.main_done.set()
        while thread.is_alive():
            thread.join(timeout=0.1)
    except BaseException:
        server.stop.set()
        while thread.is_alive():
            thread.join(timeout=0.1)
        raise
    if server.error:
        raise server.error
    return server.stats


def _work(comm, compute) -> RunStats:
    team = team_of(comm) or Team(comm, timeout=float("inf"))
    stats = RunStats()
    msg = {"results": None, "seconds": 0.0}
    while True:
        if msg["results"]:
            faults.fire("flush", team.rank)
        team.post(msg, 0, TAG_RESULT)
        chunk = team.receive(0, TAG_WORK, on_wait=team.check_root)
        if chunk is None:
            return stats
        faults.fire("midrun", team.rank)
        t0 = time.monotonic()
        try:
            results = compute(chunk)
        except Exception as e:
            report_failure(comm, e)
            raise
        stats.computed += len(chunk)
        msg = {"results": results, "seconds": time.monotonic() - t0}


def report_failure(comm: Any, error: BaseException) -> None:
    """On a worker: tells rank 0 that this rank failed (once), with its traceback."""
    team = team_of(comm)
    if team is None or team.rank == 0 or getattr(error, "_reported", False):
        return
    line, tb = failure_message(error)
    team.post({"error": line, "traceback": tb}, 0, TAG_NOTE)
    try:
        error._reported = True
    except AttributeError:
        pass


def report_signal(comm: Any, signum: int) -> None:
    """On a worker: tells rank 0 that this rank was interrupted (so rank 0 can tell a cancelled job from a
    dead rank)."""
    team = team_of(comm)
    if team is not None and team.rank != 0:
        team.post({"signal": signal.Signals(signum).name}, 0, TAG_NOTE)
