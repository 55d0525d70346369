"""Fault injection for the failure tests: named points where a test makes one rank fail on purpose.

Off unless the environment of the processes a test starts holds ``LOSS_LANDSCAPE_FAULT=RANK:PHASE:ACTION[:N]``,
for example ``2:midrun:exception`` (rank 2 raises at its second chunk) or ``0:flush:sigstop:3``:

- PHASE: ``setup`` (loading the model, a step every rank takes), ``evaluator`` (building the per-rank
  evaluator), ``midrun`` (before computing a chunk), ``flush`` (rank 0: before writing to the surface file;
  a worker: before handing its results to rank 0), ``write`` (rank 0: before buffering each point's result, so
  N counts points).
- ACTION: ``exception`` (a RuntimeError worded like a CUDA out-of-memory error), ``sigkill``, ``sigstop``,
  ``sigterm`` (sent by the process to itself).
- N: the N-th time the rank reaches the phase (default 1; ``midrun`` defaults to 2, so some results exist).

The check is one dictionary lookup, so the points stay in the real code paths.
"""

from __future__ import annotations

import os
import signal
import sys
import time

ENV = "LOSS_LANDSCAPE_FAULT"
PHASES = ("setup", "evaluator", "midrun", "flush", "write")
ACTIONS = ("exception", "sigkill", "sigstop", "sigterm")


def _parse(text: str):
    if not text:
        return None
    parts = text.split(":")
    if len(parts) not in (3, 4) or parts[1] not in PHASES or parts[2] not in ACTIONS:
        raise ValueError(f"{ENV}={text!r}: expected RANK:PHASE:ACTION[:N] with PHASE in {', '.join(PHASES)} "
                         f"and ACTION in {', '.join(ACTIONS)}")
    n = int(parts[3]) if len(parts) == 4 else (2 if parts[1] == "midrun" else 1)
    return int(parts[0]), parts[1], parts[2], n


_SPEC = _parse(os.environ.get(ENV, ""))
_COUNTS: dict[str, int] = {}


def fire(phase: str, rank: int) -> None:
    """Fails here if the fault names this rank and phase and this is its N-th visit."""
    if _SPEC is None or _SPEC[0] != rank or _SPEC[1] != phase:
        return
    _COUNTS[phase] = _COUNTS.get(phase, 0) + 1
    if _COUNTS[phase] != _SPEC[3]:
        return
    action = _SPEC[2]
    # The tests measure from this line how long the job takes to end.
    print(f"injected fault: {action} on rank {rank} in {phase} at {time.time():.3f}", file=sys.stderr, flush=True)
    if action == "exception":
        raise RuntimeError(f"CUDA out of memory. Tried to allocate 2.00 GiB (injected fault: rank {rank}, {phase})")
    sig = {"sigkill": signal.SIGKILL, "sigstop": signal.SIGSTOP, "sigterm": signal.SIGTERM}[action]
    os.kill(os.getpid(), sig)
