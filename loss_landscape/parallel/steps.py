"""Set-up steps every rank takes together (`root_first`, `everywhere`): each rank's outcome goes to rank 0
and rank 0's verdict back, point to point and with deadlines, so a failure anywhere stops every rank with the
failing rank named and a lost rank is left out instead of waited for.
"""

from __future__ import annotations

from typing import Any, Callable


from loss_landscape.parallel.ranks import PeerFailed, TAG_NOTE, TAG_SETUP, describe, failure_message, note_failure, team_of


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
