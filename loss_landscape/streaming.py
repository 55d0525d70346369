"""Data larger than memory: a Dataset read item by item (`DatasetSplit`), streamed to the device in a fixed order
at every grid point (`StreamSplit`), and the choice between that and holding the data on the device (`place`).

Streaming gives the same values as the in-memory path: the batches hold the same samples in the same order
(`torch.utils.data.default_collate` stacks the items as the in-memory path does), so each forward pass sees
the same tensors. Its cost is reading the data again at each point; workers, pinned memory and a one-batch
prefetch to the device hide part of it.

Example:
    >>> ds = torch.utils.data.TensorDataset(torch.randn(10, 3), torch.arange(10))
    >>> split = DatasetSplit.of(ds, "example")
    >>> s = place(split, torch.device("cpu"), mode="stream", batch_size=4)
    >>> [len(y) for _, y in s.batches(4)]
    [4, 4, 2]
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset, default_collate

from loss_landscape import batches as bt
from loss_landscape.errors import DataError

DATA_MODES = ("auto", "memory", "stream")
ITEM_FORMS = ("an (input, target) pair, an (input, None) pair, or bare inputs (a tensor, or a dict of tensors "
              "for model(**x))")


def collate_items(items: list) -> Any:
    """torch's `default_collate`, except that ``(x, None)`` items batch to ``(X, None)``."""
    if items and isinstance(items[0], tuple) and len(items[0]) == 2 and items[0][1] is None:
        return default_collate([x for x, _ in items]), None
    return default_collate(items)


def _tensor_like(v: Any) -> bool:
    import numpy as np
    return isinstance(v, (torch.Tensor, np.ndarray, int, float)) and not isinstance(v, bool)


def _structure_ok(x: Any) -> bool:
    if isinstance(x, dict):
        return bool(x) and all(_tensor_like(v) for v in x.values())
    if isinstance(x, (tuple, list)):
        return bool(x) and all(_tensor_like(v) for v in x)
    return _tensor_like(x)


def _split_batch(batch: Any) -> tuple[Any, Optional[torch.Tensor]]:
    """A collated batch as (inputs, targets): pairs give both, bare inputs give targets None."""
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        x, y = batch
        return (tuple(x) if isinstance(x, list) else x), y
    return batch, None


@dataclass(frozen=True, eq=False)
class DatasetSplit:
    """A map-style Dataset (``len`` and ``[i]``) evaluated in index order, with the collate function that batches it.

    Items are ``(x, y)`` pairs, ``(x, None)`` or bare inputs ``x`` (a tensor, or a dict for ``model(**x)``); a
    2-tuple is always (input, target): give several inputs as a dict or as ``((a, b), y)``.
    """

    dataset: Any
    collate: Callable[[list], Any] = collate_items
    where: str = "dataset"
    transform: Optional[Callable[[Any], Any]] = None

    @classmethod
    def of(cls, obj: Any, where: str) -> "DatasetSplit":
        """Wraps a Dataset, or the dataset and collate function of a DataLoader (its order and batch size are not
        used: points are evaluated in index order with the job's batch size). Checks the first item."""
        collate = collate_items
        if isinstance(obj, DataLoader):
            obj, collate = obj.dataset, obj.collate_fn or collate_items
        if isinstance(obj, IterableDataset) or not (hasattr(obj, "__len__") and hasattr(obj, "__getitem__")):
            raise DataError(f"{where} is a {type(obj).__name__}: expected a map-style Dataset (with len and [i]), so "
                            f"that every point sees the same samples in the same order")
        split = cls(obj, collate, where)
        if len(obj):
            try:
                item = obj[0]
            except Exception as e:  # noqa: BLE001 - the user's __getitem__: any failure is theirs to see
                raise DataError(f"{where}: reading item 0 failed ({type(e).__name__}: {e})") from None
            x, y = _split_batch(item) if isinstance(item, (tuple, list)) else (item, None)
            if not _structure_ok(x) or not (y is None or _tensor_like(y)):
                raise DataError(f"{where}: item 0 is {bt.describe(item) if not isinstance(item, (tuple, list)) else 'a tuple of ' + ', '.join(type(v).__name__ for v in item)}: "
                                f"expected {ITEM_FORMS}")
            split.first_batch()  # collates
        return split

    def __len__(self) -> int:
        return len(self.dataset)

    def first_batch(self) -> tuple[Any, Optional[torch.Tensor]]:
        """Item 0 collated into a batch of one, as (inputs, targets)."""
        try:
            return _split_batch(self.collate([self.dataset[0]]))
        except (TypeError, RuntimeError, ValueError) as e:
            raise DataError(f"{self.where}: item 0 cannot be batched ({type(e).__name__}: {e}); expected "
                            f"{ITEM_FORMS}") from None

    def estimate_nbytes(self) -> int:
        """Bytes of the whole split held as tensors, from item 0."""
        if not len(self):
            return 0
        x, y = self.first_batch()
        return len(self) * (bt.nbytes(x) + (0 if y is None else bt.nbytes(y)))

    def describe(self) -> str:
        if not len(self):
            return f"{type(self.dataset).__name__} (empty)"
        x, _ = self.first_batch()
        return f"{type(self.dataset).__name__} of {bt.describe(x).replace('(1, ', '(N, ').replace('(1,)', '(N,)')}"

    def rows(self, index: torch.Tensor) -> "DatasetSplit":
        return DatasetSplit(Subset(self.dataset, [int(i) for i in index]), self.collate, self.where, self.transform)

    def part(self, start: int, stop: int) -> "DatasetSplit":
        return DatasetSplit(Subset(self.dataset, range(start, stop)), self.collate, self.where, self.transform)

    @property
    def targets(self) -> Optional[torch.Tensor]:
        """Whether items have targets, as item 0's (a batch of one); for checks that only look at the kind."""
        return self.first_batch()[1] if len(self) else None

    def loader(self, batch_size: int, *, workers: int = 0, pin_memory: bool = False) -> DataLoader:
        return DataLoader(self.dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                          collate_fn=self.collate, pin_memory=pin_memory, persistent_workers=workers > 0,
                          prefetch_factor=2 if workers > 0 else None)

    def load(self, batch_size: int = 1024) -> Any:
        """The whole split in memory, as a `data.Split` of the collated items (the in-memory path)."""
        from loss_landscape.data import Split  # data imports this module

        xs, ys = [], []
        for batch in self.loader(batch_size):
            x, y = _split_batch(batch)
            xs.append(x)
            ys.append(y)
        if not xs:
            raise DataError(f"{self.where} is empty")
        x = bt.map_tensors(lambda t: t, xs[0]) if len(xs) == 1 else _cat(xs)
        y = None if ys[0] is None else torch.cat(ys)
        return Split(_as_cpu(x), None if y is None else _targets(y), self.transform)


def _cat(parts: list) -> Any:
    first = parts[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(parts)
    if isinstance(first, dict):
        return {k: torch.cat([p[k] for p in parts]) for k in first}
    return tuple(torch.cat([p[i] for p in parts]) for i in range(len(first)))


def _as_cpu(x: Any) -> Any:
    return bt.map_tensors(lambda t: t.cpu(), x)


def _targets(y: torch.Tensor) -> torch.Tensor:
    if not y.is_floating_point() and y.dtype != torch.bool:
        y = y.to(torch.int64)
        if y.dim() == 2 and y.shape[1] == 1:
            y = y.reshape(-1)
    return y


class StreamSplit:
    """A split read from its Dataset at every pass, in index order, onto the device: the streaming path.

    `batches` prefetches one batch ahead (pinned memory and a non-blocking copy on a GPU), so reading the next
    batch overlaps the forward pass of this one.
    """

    def __init__(self, split: DatasetSplit, device: torch.device, *, workers: int = 0, channels_last: bool = False):
        self.split, self._device, self.workers, self.channels_last = split, device, workers, channels_last
        self.transform = split.transform
        self._loaders: dict[int, DataLoader] = {}

    def __len__(self) -> int:
        return len(self.split)

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def targets(self) -> Optional[torch.Tensor]:
        return self.split.targets

    def _to_device(self, batch: Any) -> tuple[Any, Optional[torch.Tensor]]:
        x, y = _split_batch(batch)
        cuda = self._device.type == "cuda"
        x = bt.to_device(x, self._device, non_blocking=cuda, channels_last=self.channels_last)
        if y is not None:
            y = _targets(y).to(self._device, non_blocking=cuda)
        return x, y

    def batches(self, batch_size: int) -> Iterator[tuple[Any, Optional[torch.Tensor]]]:
        """(inputs, targets) of each batch in index order, transformed, on the device."""
        if batch_size not in self._loaders:  # kept: persistent workers are not restarted at each point
            self._loaders[batch_size] = self.split.loader(batch_size, workers=self.workers,
                                                          pin_memory=self._device.type == "cuda")
        pending = None
        for batch in self._loaders[batch_size]:
            nxt = self._to_device(batch)
            if pending is not None:
                yield self._ready(pending)
            pending = nxt
        if pending is not None:
            yield self._ready(pending)

    def _ready(self, pair: tuple[Any, Optional[torch.Tensor]]) -> tuple[Any, Optional[torch.Tensor]]:
        x, y = pair
        return (x if self.transform is None else self.transform(x)), y


def default_budget(device: torch.device, local_ranks: int = 1) -> int:
    """Bytes of data a rank may hold on `device`: half the GPU's free memory, or on a CPU half the memory
    available (Linux's MemAvailable), shared among the ranks of the node."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free // 2)
    try:
        with open("/proc/meminfo") as f:
            avail = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        avail = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return int(avail // 2 // max(1, local_ranks))


def split_nbytes(split: Any) -> int:
    """Bytes the split takes held as tensors (estimated from item 0 for a Dataset)."""
    if isinstance(split, DatasetSplit):
        return split.estimate_nbytes()
    return bt.nbytes(split.inputs) + (0 if split.targets is None else bt.nbytes(split.targets))


def choose_mode(split: Any, mode: str, budget: Optional[int], device: torch.device) -> str:
    """``memory`` or ``stream`` for `split`: `mode` itself unless ``auto``, which streams when the data would take
    more than `budget` bytes (None: `default_budget`)."""
    if mode not in DATA_MODES:
        raise DataError(f"unknown data mode {mode!r}: expected one of {', '.join(DATA_MODES)}")
    if mode != "auto":
        return mode
    budget = default_budget(device) if budget is None else budget
    return "stream" if split_nbytes(split) > budget else "memory"


def place(split: Any, device: torch.device, *, mode: str = "auto", budget: Optional[int] = None,
          channels_last: bool = False, batch_size: int = 1024, workers: int = 0) -> Any:
    """The split ready for evaluation on `device`: a `evaluation.DeviceSplit` held there, or a `StreamSplit`.

    Args:
        split: a `data.Split` (tensors on the CPU) or a `DatasetSplit`.
        mode: ``memory``, ``stream``, or ``auto`` (streams when the data exceed `budget`).
        budget: bytes of data allowed on the device; None: `default_budget`.
        channels_last: 4-D inputs go channels_last on the device.
        batch_size: items per read when a Dataset is loaded into memory.
        workers: DataLoader worker processes of the streaming path (0: the rank itself reads).
    """
    from loss_landscape.evaluation import DeviceSplit  # evaluation imports the data layer's modules

    chosen = choose_mode(split, mode, budget, device)
    if chosen == "memory":
        if isinstance(split, DatasetSplit):
            split = split.load(batch_size)
        return DeviceSplit.put(split.inputs, split.targets, device, channels_last, transform=split.transform)
    if not isinstance(split, DatasetSplit):
        split = DatasetSplit(_TensorItems(split.inputs, split.targets), collate_items, "data", split.transform)
    return StreamSplit(split, device, workers=workers, channels_last=channels_last)


class _TensorItems(Dataset):
    """Tensors in memory served item by item (the streaming path over data already on the host)."""

    def __init__(self, inputs: Any, targets: Optional[torch.Tensor]):
        self.inputs, self.targets = inputs, targets

    def __len__(self) -> int:
        return bt.rows(self.inputs)

    def __getitem__(self, i: int) -> Any:
        x = bt.map_tensors(lambda t: t[i], self.inputs)
        return (x, None) if self.targets is None else (x, self.targets[i])
