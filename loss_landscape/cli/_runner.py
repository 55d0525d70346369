"""The shared runner of the computing commands: MPI set-up, signals, failures, exit codes and the lines printed.

`run_job` calls a command's body on every rank and turns whatever it raises, on any rank and in any phase,
into one line on rank 0 and the end of the job:

- a user error: ``error: <what was wrong and what is expected>``, exit 1;
- any other error: ``error: rank 2 failed: RuntimeError: CUDA out of memory ...``, where the file is, and that
  the same command resumes; ``--debug`` adds the failing rank's traceback;
- SIGINT/SIGTERM: ``interrupted by SIGTERM: what was computed is saved in ...``, exit 128 + the signal; when a
  worker died first (the launcher's SIGTERM that follows is no user's interrupt) it says so, exit 1.

Rank 0 ends a parallel job itself (MPI_Abort) after writing what it received; a worker that fails reports to
rank 0 and waits to be ended, and leaves by itself only when rank 0 is silent or does not end the job.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from loss_landscape._util import rank_and_size
from loss_landscape.parallel.ranks import TAG_NOTE, PeerFailed, RootGone, RunInterrupted, Team, describe
from loss_landscape.cli._process import (end_job, exit_quietly_on_signals, install_interrupt_handlers, leave,
                                         setup_mpi)
from loss_landscape.errors import USER_ERRORS
from loss_landscape.parallel.scheduler import report_failure, report_signal

WORKER_GRACE = 10.0  # seconds a failed worker waits for rank 0 to end the job


@dataclass
class JobContext:
    """What the runner's messages need to know of a job as it goes: the file being written, if any."""

    surf_file: Optional[str] = None
    interrupt_code: Optional[int] = None  # set when rank 0 has announced a signal


def run_job(body: Callable[[Any, Callable[..., None], JobContext], int], *, use_mpi: bool, cuda: bool = False,
            rank_timeout: float = 60.0, debug: bool = False) -> int:
    """Runs ``body(comm, log, context)`` on every rank and returns the exit code (rank 0's on every rank).

    Args:
        body: the command's work; `log` prints on rank 0 only; it sets ``context.surf_file`` once known.
        use_mpi: run across the ranks of mpirun/srun.
        cuda: the ranks use GPUs (else each CPU rank gets its share of the cores).
        rank_timeout: seconds of silence after which a rank is lost (see `ranks`).
        debug: print the failing rank's traceback.
    """
    comm = setup_mpi(use_mpi)
    rank = rank_and_size(comm)[0]
    team = Team.start(comm, rank_timeout) if comm is not None and comm.Get_size() > 1 else None
    context = JobContext()
    install_interrupt_handlers((lambda signum: _announce(signum, team, context)) if rank == 0 else None)
    if comm is not None and not cuda:
        import torch
        from loss_landscape.evaluation import cpu_threads_per_rank
        torch.set_num_threads(cpu_threads_per_rank())
    log = print if rank == 0 else (lambda *a, **k: None)
    try:
        code = body(comm, log, context)
    except BaseException as e:
        if rank == 0:
            return _fail_root(e, comm, team, context, debug)
        _fail_worker(e, comm, team)
    exit_quietly_on_signals()
    if team is not None:
        if rank == 0 and team.lost:
            # Lost ranks cannot take part in MPI_Finalize: end the job here, with the command's code.
            log(f"the surface is complete; {len(team.lost)} rank(s) were lost: "
                + "; ".join(f"rank {r} {why}" for r, why in sorted(team.lost.items())))
            end_job(comm, code)
        team.stop()
    return code


def _saved(context: JobContext) -> str:
    if context.surf_file is None or not os.path.exists(context.surf_file):
        return "nothing was computed yet"
    return f"what was computed is saved in {context.surf_file}; rerun the same command to resume"


def _fail_root(error: BaseException, comm: Any, team: Optional[Team], context: JobContext, debug: bool) -> int:
    if isinstance(error, SystemExit):
        raise error
    if isinstance(error, RunInterrupted):
        if context.interrupt_code is None:  # raised without the handler (a test calling the body directly)
            _announce(error.signum, team, context)
        return _end(comm, context.interrupt_code)
    parallel = team is not None
    if isinstance(error, USER_ERRORS) and not isinstance(error, PeerFailed):
        line = f"error: {error}"
        tb = ""
    elif isinstance(error, PeerFailed):
        line = f"error: {error}"
        tb = error.traceback_text
    else:
        line = f"error: {'rank 0 failed: ' if parallel else ''}{describe(error)}"
        import traceback
        tb = "".join(traceback.format_exception(error))
    if tb:  # a failure of the computation (a refused input changed nothing: no resume note)
        line += f"; {_saved(context)}"
    if tb and not debug:
        line += " (--debug shows the traceback)"
    print(line, file=sys.stderr)
    if debug and tb:
        print(tb.rstrip(), file=sys.stderr)
    return _end(comm, 1)


def _end(comm: Any, code: int) -> int:
    """Ends a parallel job (every rank, now); a serial run returns the code."""
    if comm is not None and comm.Get_size() > 1:
        end_job(comm, code)
    return code


def _announce(signum: int, team: Optional[Team], context: JobContext) -> None:
    """Rank 0's line on SIGINT/SIGTERM, printed at once (the file is written right after): an interrupt, or
    the launcher ending the job because a worker died first (gone from this host without a note)."""
    what = signal.Signals(signum).name
    died = []
    if team is not None:
        team.take_notes(TAG_NOTE)
        died = team.gone_without_word()
        # A worker that got the same signal sends its note and exits at once: give a note in flight 0.1 s to
        # arrive before calling its rank dead (mpirun's SIGKILL follows its SIGTERM about 0.2 s later).
        end = time.monotonic() + 0.1
        while died and time.monotonic() < end:
            time.sleep(0.005)
            team.take_notes(TAG_NOTE)
            died = team.gone_without_word()
    saving = ("saving what was computed in " + context.surf_file + "; rerun the same command to resume"
              if context.surf_file and os.path.exists(context.surf_file) else "nothing was computed yet")
    if died:
        who = ", ".join(f"rank {r}" for r in died)
        print(f"\nerror: {who} died first (its process ended without a word: killed by a signal such as the "
              f"kernel's OOM killer, or crashed); the launcher then stopped the job with {what}: {saving}",
              file=sys.stderr, flush=True)
        context.interrupt_code = 1
    else:
        print(f"\ninterrupted by {what}: {saving}", file=sys.stderr, flush=True)
        context.interrupt_code = 128 + signum


def _fail_worker(error: BaseException, comm: Any, team: Optional[Team]) -> None:
    if isinstance(error, RunInterrupted):
        report_signal(comm, error.signum)
        if team is not None:
            team.flush_posts()
        leave(128 + error.signum)
    if isinstance(error, RootGone):
        print(f"error: {error}", file=sys.stderr)
        leave(1)
    if not isinstance(error, PeerFailed):
        report_failure(comm, error)
    # Rank 0 writes what it has, prints the reason and ends the job; wait for that, not longer.
    end = time.monotonic() + WORKER_GRACE
    try:
        while time.monotonic() < end:
            if team is not None:
                team.check_root()
            time.sleep(0.05)
    except RootGone as gone:
        print(f"error: {gone} (it failed: {describe(error)})", file=sys.stderr)
        leave(1)
    except RunInterrupted as e:
        leave(128 + e.signum)
    print(f"error: rank {comm.Get_rank()} failed ({describe(error)}) and rank 0 did not end the job within "
          f"{WORKER_GRACE:.0f} s", file=sys.stderr)
    leave(1)


__all__ = ["JobContext", "run_job"]
