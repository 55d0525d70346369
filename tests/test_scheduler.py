"""The pure splitting logic and the serial runner (MPI runs are in test_mpi.py)."""

from __future__ import annotations

import pytest

from loss_landscape.parallel.ranks import PeerFailed
from loss_landscape.parallel.steps import everywhere, root_first
from loss_landscape.parallel.scheduler import block_split, default_chunk_size, make_chunks, run_tasks


@pytest.mark.parametrize("n", [0, 1, 2, 7, 51 * 51, 100])
@pytest.mark.parametrize("parts", [1, 2, 3, 4, 7])
def test_block_split_covers_disjoint_balanced(n, parts):
    blocks = [block_split(n, parts, r) for r in range(parts)]
    flat = [i for b in blocks for i in b]
    assert flat == list(range(n))  # cover, disjoint, in order
    sizes = [len(b) for b in blocks]
    assert max(sizes) - min(sizes) <= 1


def test_block_split_rejects_bad_index():
    with pytest.raises(ValueError):
        block_split(10, 3, 3)


def test_chunks_cover_in_order():
    tasks = [(i, ("train",)) for i in range(23)]
    for size in (1, 4, 23, 50):
        chunks = make_chunks(tasks, size)
        assert [t for c in chunks for t in c] == tasks
        assert all(1 <= len(c) <= size for c in chunks)
    assert 1 <= default_chunk_size(2601, 4) <= 16
    assert default_chunk_size(3, 8) == 1


class ListSink:
    def __init__(self):
        self.written, self.flushed, self.buffer = {}, 0, {}

    def write(self, flat, values):
        self.buffer[flat] = values

    def flush(self):
        self.written.update(self.buffer)
        n = len(self.buffer)
        self.buffer.clear()
        self.flushed += 1
        return n


def test_serial_run_writes_every_task_and_flushes_at_the_end():
    tasks = [(i, ("train",)) for i in range(10)]
    sink = ListSink()
    seen = []
    stats = run_tasks(tasks, lambda chunk: [(f, {"train": (f * 1.0, 0.0)}) for f, _ in chunk], sink,
                      chunk_size=3, flush_every=1e9, progress=seen.append)
    assert stats.computed == stats.written == 10 and sorted(sink.written) == list(range(10))
    assert stats.duplicates == 0 and not stats.lost
    assert sum(seen) == 10 and sink.flushed >= 1


def test_serial_run_flushes_what_it_has_when_interrupted():
    sink = ListSink()

    def compute(chunk):
        if chunk[0][0] >= 4:
            raise KeyboardInterrupt
        return [(f, {"train": (0.0, 0.0)}) for f, _ in chunk]

    with pytest.raises(KeyboardInterrupt):
        run_tasks([(i, ("train",)) for i in range(10)], compute, sink, chunk_size=2, flush_every=1e9)
    assert sorted(sink.written) == [0, 1, 2, 3]


def test_collectives_without_mpi_just_call():
    assert root_first(None, lambda: 3) == 3
    assert everywhere(None, lambda: 4) == 4
    with pytest.raises(ZeroDivisionError):
        everywhere(None, lambda: 1 / 0)
    assert issubclass(PeerFailed, RuntimeError)


def test_fault_specs_are_checked():
    from loss_landscape.parallel import faults
    assert faults._parse("") is None
    assert faults._parse("2:midrun:exception") == (2, "midrun", "exception", 2)
    assert faults._parse("0:flush:sigstop:3") == (0, "flush", "sigstop", 3)
    for bad in ("2:middle:exception", "2:midrun:explode", "2:midrun"):
        with pytest.raises(ValueError, match="RANK:PHASE:ACTION"):
            faults._parse(bad)


def test_an_interrupt_is_not_an_exception_of_the_computation():
    # `except Exception` on the way (a set-up step, a worker's compute) must not swallow a signal.
    from loss_landscape.parallel.ranks import RunInterrupted
    assert not issubclass(RunInterrupted, Exception)
    with pytest.raises(RunInterrupted):
        everywhere(None, lambda: (_ for _ in ()).throw(RunInterrupted(15)))
