"""The design card's `scheduler`: rank 0 splits the grid's points across MPI ranks, hands them out in chunks
and writes every result. The code lives in `loss_landscape.parallel.scheduler`; this file re-exports it.
"""

from loss_landscape.parallel.scheduler import (block_split, default_chunk_size, make_chunks, run_tasks,
                                               RunStats, report_failure, report_signal, root_first,
                                               everywhere, PeerFailed, RankLost, RootGone, RunInterrupted)

__all__ = ["block_split", "default_chunk_size", "make_chunks", "run_tasks", "RunStats", "report_failure",
           "report_signal", "root_first", "everywhere", "PeerFailed", "RankLost", "RootGone",
           "RunInterrupted"]
