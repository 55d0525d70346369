"""Data larger than memory: a Dataset read item by item (`DatasetSplit`), streamed to the device in a fixed order
at every grid point (`StreamSplit`), and the choice between that and holding the data on the device (`place`).

Streaming gives the same values as the in-memory path, to the bit: the batches hold the same samples in the same
order (`collate_items`, torch's ``default_collate``, stacks the items as the in-memory path does), so each forward
pass sees the same tensors. Its cost is reading the data again at each point; DataLoader workers, pinned memory
and a one-batch prefetch to the device hide part of it.

``auto`` streams when the split would take more than the budget (`default_budget`: half the GPU's free memory, or
on a CPU half of the memory available, shared among the ranks of the node). Tensors already held on the host (a
`data.Split`) are never streamed to a CPU: they are in memory already.

Example:
    >>> ds = torch.utils.data.TensorDataset(torch.randn(10, 3), torch.arange(10))
    >>> split = DatasetSplit.of(ds, "example")
    >>> s = place(split, torch.device("cpu"), mode="stream", batch_size=4)
    >>> [len(y) for _, y in s.batches(4)]
    [4, 4, 2]
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, Subset, default_collate

from loss_landscape import batches as bt
from loss_landscape.errors import DataError

DATA_MODES = ("auto", "memory", "stream")
ITEM_FORMS = ("an (input, target) pair, an (input, None) pair, or bare inputs (a tensor, or a dict of tensors "
              "for model(**x))")

Batch = tuple[Any, Optional[torch.Tensor]]


def collate_items(items: list) -> Any:
    """torch's `default_collate`, except that ``(x, None)`` items batch to ``(X, None)``."""
    if items and isinstance(items[0], tuple) and len(items[0]) == 2 and items[0][1] is None:
        return default_collate([x for x, _ in items]), None
    return default_collate(items)


def _tensor_like(v: Any) -> bool:
    """A tensor, an array, or a number (python or numpy) that `default_collate` turns into a tensor."""
    if isinstance(v, (bool, np.bool_)):
        return False
    if isinstance(v, np.generic):
        return np.issubdtype(v.dtype, np.number)
    return isinstance(v, (torch.Tensor, np.ndarray, int, float))


def _structure_ok(x: Any) -> bool:
    if isinstance(x, dict):
        return bool(x) and all(_tensor_like(v) for v in x.values())
    if isinstance(x, (tuple, list)):
        return bool(x) and all(_tensor_like(v) or (isinstance(v, dict) and _structure_ok(v)) for v in x)
    return _tensor_like(x)


def _kind(item: Any) -> str:
    """What item 0 is, for an error line: ``a str``, ``a tuple of str, str, str``, ``a dict of ...``."""
    if isinstance(item, (tuple, list)):
        return f"a {len(item)}-{type(item).__name__} of " + ", ".join(_kind(v).removeprefix("a ") for v in item)
    if isinstance(item, torch.Tensor):
        return f"a tensor {bt.describe(item)}"
    if isinstance(item, dict):
        return "a dict of " + ", ".join(f"{k}: {_kind(v).removeprefix('a ')}" for k, v in item.items())
    return f"a {type(item).__name__}"


def _split_batch(batch: Any) -> Batch:
    """A collated batch as (inputs, targets): pairs give both, bare inputs give targets None."""
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        x, y = batch
        return (tuple(x) if isinstance(x, list) else x), y
    return (tuple(batch) if isinstance(batch, list) else batch), None


def _targets(y: torch.Tensor) -> torch.Tensor:
    """Targets of a Dataset as the losses take them: class ids int64, ``(N, 1)`` labels ``(N,)``."""
    if not y.is_floating_point():
        y = y.to(torch.int64)
        if y.dim() == 2 and y.shape[1] == 1:
            y = y.reshape(-1)
    return y


@dataclass(frozen=True, eq=False)
class DatasetSplit:
    """A map-style Dataset (``len`` and ``[i]``) evaluated in index order, with the collate function that batches it.

    Items are ``(x, y)`` pairs, ``(x, None)`` or bare inputs ``x`` (a tensor, or a dict for ``model(**x)``); a
    2-tuple is always (input, target): give several inputs as a dict or as ``((a, b), y)``. Items are used as the
    Dataset gives them (float64 stays float64); class targets become int64 and ``(N, 1)`` labels ``(N,)``.
    """

    dataset: Any
    collate: Callable[[list], Any] = collate_items
    where: str = "dataset"
    transform: Optional[Callable[[Any], Any]] = None

    @classmethod
    def of(cls, obj: Any, where: str, transform: Optional[Callable[[Any], Any]] = None) -> "DatasetSplit":
        """Wraps a Dataset, or the dataset and collate function of a DataLoader. Of a DataLoader only those two
        are used: its sampler (shuffle), batch size and workers are not, since every point is evaluated in
        index order with the job's batch size and workers. Checks the first item (one `DataError` line)."""
        collate = collate_items
        if isinstance(obj, DataLoader):
            obj, collate = obj.dataset, obj.collate_fn
            if collate is None or collate is default_collate:
                collate = collate_items  # also batches (x, None) items
        if isinstance(obj, IterableDataset) or not (hasattr(obj, "__len__") and hasattr(obj, "__getitem__")):
            raise DataError(f"{where} is a {type(obj).__name__}: expected a map-style Dataset (with len and [i]) "
                            f"or a DataLoader of one, so that every point sees the same samples in the same order")
        split = cls(obj, collate, where, transform)
        try:
            n = len(obj)
        except TypeError as e:
            raise DataError(f"{where} is a {type(obj).__name__} without a length ({e}): expected a map-style "
                            f"Dataset (with len and [i])") from None
        if n:
            try:
                item = obj[0]
            except Exception as e:  # noqa: BLE001 - the user's __getitem__: any failure is theirs to see
                reason = " ".join(f"{type(e).__name__}: {e}".split())[:200]
                raise DataError(f"{where}: reading item 0 failed ({reason})") from None
            x, y = _split_batch(item) if isinstance(item, (tuple, list)) else (item, None)
            if not _structure_ok(x) or not (y is None or _tensor_like(y)):
                raise DataError(f"{where}: item 0 is {_kind(item)}: expected {ITEM_FORMS}")
            split.first_batch()  # collates
        return split

    def __len__(self) -> int:
        return len(self.dataset)

    def first_batch(self) -> Batch:
        """Item 0 collated into a batch of one, as (inputs, targets)."""
        try:
            return _split_batch(self.collate([self.dataset[0]]))
        except (TypeError, RuntimeError, ValueError) as e:
            reason = " ".join(f"{type(e).__name__}: {e}".split())[:200]
            raise DataError(f"{self.where}: item 0 cannot be batched ({reason}); expected {ITEM_FORMS}") from None

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
        """The items at `index`, in that order (a view of the Dataset)."""
        return DatasetSplit(Subset(self.dataset, [int(i) for i in index]), self.collate, self.where, self.transform)

    def part(self, start: int, stop: int) -> "DatasetSplit":
        """Items start..stop (a view of the Dataset)."""
        return DatasetSplit(Subset(self.dataset, range(start, stop)), self.collate, self.where, self.transform)

    @property
    def targets(self) -> Optional[torch.Tensor]:
        """Whether items have targets, as item 0's (a batch of one); for checks that only look at the kind."""
        return self.first_batch()[1] if len(self) else None

    def loader(self, batch_size: int, *, workers: int = 0, pin_memory: bool = False) -> DataLoader:
        """Batches in index order; with workers, they are kept between passes (persistent) and still come back in
        order."""
        return DataLoader(self.dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                          collate_fn=self.collate, pin_memory=pin_memory, persistent_workers=workers > 0,
                          prefetch_factor=2 if workers > 0 else None)

    def tensors(self, batch_size: int = 1024) -> Batch:
        """The whole split read once into CPU tensors, (inputs, targets): what the in-memory path holds."""
        xs, ys = [], []
        for batch in self.loader(batch_size):
            x, y = _split_batch(batch)
            xs.append(x)
            ys.append(y)
        if not xs:
            raise DataError(f"{self.where} is empty")
        x = _cat(xs)
        y = None if ys[0] is None else _targets(torch.cat(ys))
        return bt.map_tensors(lambda t: t.cpu(), x), None if y is None else y.cpu()


def _cat(parts: list) -> Any:
    first = parts[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(parts) if len(parts) > 1 else first
    if isinstance(first, dict):
        return {k: _cat([p[k] for p in parts]) for k in first}
    return tuple(_cat([p[i] for p in parts]) for i in range(len(first)))


class StreamSplit:
    """A split read at every pass, in index order, onto the device: the streaming path.

    The source is a `DatasetSplit` (read by a DataLoader, with `workers` processes kept between passes) or
    tensors held on the host (sliced into batches: a `data.Split` too large for the GPU). `batches` prefetches
    one batch ahead (from pinned memory, non-blocking, on a GPU), so copying the next batch is queued while the
    device still runs the forward pass of this one.

    Attributes:
        split: the source.
        workers: DataLoader worker processes (0: this process reads; not used for host tensors).
        transform: applied on the device to each batch of inputs (from the source).
    """

    def __init__(self, split: Any, device: torch.device, *, workers: int = 0, channels_last: bool = False):
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
            raise DataError(f"data workers must be an integer >= 0, found {workers!r}")
        self.split, self._device, self.channels_last = split, torch.device(device), channels_last
        self.workers = workers if isinstance(split, DatasetSplit) else 0
        self.transform = split.transform
        self._loaders: dict[int, DataLoader] = {}

    def __len__(self) -> int:
        return len(self.split)

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def targets(self) -> Optional[torch.Tensor]:
        """The source's targets (for a Dataset, item 0's: see `DatasetSplit.targets`)."""
        return self.split.targets

    def nbytes(self) -> int:
        """Bytes the whole split would take held as tensors."""
        return split_nbytes(self.split)

    def _host_batches(self, batch_size: int) -> Iterator[Any]:
        if isinstance(self.split, DatasetSplit):
            if batch_size not in self._loaders:  # kept: persistent workers are not restarted at each point
                self._loaders[batch_size] = self.split.loader(batch_size, workers=self.workers,
                                                              pin_memory=self._device.type == "cuda")
            yield from self._loaders[batch_size]
            return
        pin = self._device.type == "cuda"
        x, y = self.split.inputs, self.split.targets
        for start in range(0, len(self.split), batch_size):
            xb = bt.slice_rows(x, start, start + batch_size)
            yb = None if y is None else y[start:start + batch_size]
            if pin:
                xb = bt.map_tensors(lambda t: t.pin_memory(), xb)
                yb = None if yb is None else yb.pin_memory()
            yield xb, yb

    def _to_device(self, batch: Any) -> Batch:
        x, y = _split_batch(batch)
        cuda = self._device.type == "cuda"
        x = bt.to_device(x, self._device, non_blocking=cuda, channels_last=self.channels_last)
        if y is not None:
            y = (_targets(y) if isinstance(self.split, DatasetSplit) else _held_targets(y))
            y = y.to(self._device, non_blocking=cuda)
        return x, y

    def batches(self, batch_size: int) -> Iterator[Batch]:
        """(inputs, targets) of each batch in index order, transformed, on the device."""
        pending = None
        for batch in self._host_batches(batch_size):
            nxt = self._to_device(batch)
            if pending is not None:
                yield self._ready(pending)
            pending = nxt
        if pending is not None:
            yield self._ready(pending)

    def _ready(self, pair: Batch) -> Batch:
        x, y = pair
        return (x if self.transform is None else self.transform(x)), y


def _held_targets(y: torch.Tensor) -> torch.Tensor:
    # As `evaluation.DeviceSplit.put`: non-float targets become int64, shapes stay.
    return y if y.is_floating_point() else y.to(torch.int64)


def default_budget(device: torch.device, local_ranks: int = 1) -> int:
    """Bytes of data a rank may hold on `device`: half the GPU's free memory, shared by the ranks that use that
    GPU (of `local_ranks` on the node), or on a CPU half the memory available (Linux's MemAvailable), shared
    among the ranks of the node."""
    ranks = max(1, int(local_ranks))
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free // 2 // max(1, math.ceil(ranks / max(1, torch.cuda.device_count()))))
    return int(_available_bytes() // 2 // ranks)


def _available_bytes() -> int:
    """The node's available memory: Linux's MemAvailable, else all of it."""
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def split_nbytes(split: Any) -> int:
    """Bytes the split takes held as tensors (estimated from item 0 for a Dataset)."""
    if isinstance(split, DatasetSplit):
        return split.estimate_nbytes()
    return bt.nbytes(split.inputs) + (0 if split.targets is None else bt.nbytes(split.targets))


def choose_mode(split: Any, mode: str, budget: Optional[int], device: torch.device, *,
                local_ranks: int = 1) -> str:
    """``memory`` or ``stream`` for `split`: `mode` itself unless ``auto``.

    ``auto`` streams when the data would take more than `budget` bytes (None: `default_budget` of `device` for
    `local_ranks` ranks on the node), except that tensors already held on the host (a `data.Split`) stay in
    memory on a CPU device: streaming them would save nothing there.
    """
    if mode not in DATA_MODES:
        raise DataError(f"unknown data mode {mode!r}: expected one of {', '.join(DATA_MODES)}")
    if mode != "auto":
        return mode
    if not isinstance(split, DatasetSplit) and torch.device(device).type == "cpu":
        return "memory"
    budget = default_budget(device, local_ranks) if budget is None else budget
    return "stream" if split_nbytes(split) > budget else "memory"


def place(split: Any, device: torch.device, *, mode: str = "auto", budget: Optional[int] = None,
          channels_last: bool = False, batch_size: int = 1024, workers: int = 0,
          local_ranks: Optional[int] = None) -> Any:
    """The split ready for evaluation on `device`: a `evaluation.DeviceSplit` held there, or a `StreamSplit`.

    Both give the same batches (`batches(batch_size)`), so `evaluation.evaluate_values` gives the same values,
    to the bit, from either.

    Args:
        split: a `data.Split` (tensors on the CPU) or a `DatasetSplit`.
        mode: ``memory``, ``stream``, or ``auto`` (see `choose_mode`).
        budget: bytes of data allowed on the device; None: `default_budget`.
        channels_last: 4-D inputs go channels_last on the device.
        batch_size: items per read when a Dataset is loaded into memory.
        workers: DataLoader worker processes of the streaming path from a Dataset (0: the rank itself reads).
        local_ranks: ranks on this node, sharing the default budget; None: from the launcher's environment.
    """
    from loss_landscape.evaluation import DeviceSplit, local_size_from_env  # evaluation: a sibling module

    device = torch.device(device)
    ranks = local_size_from_env() if local_ranks is None else local_ranks
    chosen = choose_mode(split, mode, budget, device, local_ranks=ranks)
    if chosen == "memory":
        inputs, targets = split.tensors(batch_size) if isinstance(split, DatasetSplit) \
            else (split.inputs, split.targets)
        if channels_last and device.type == "cpu":  # the set itself stays: a channels_last copy would be a second
            return DeviceSplit.put(inputs, targets, device, transform=BatchChannelsLast(split.transform))
        return DeviceSplit.put(inputs, targets, device, channels_last, transform=split.transform)
    return StreamSplit(split, device, workers=workers, channels_last=channels_last)


class BatchChannelsLast:
    """Each batch's 4-D inputs made channels_last, then `transform`: for data held on a CPU, where converting the
    whole set would hold a second copy of it beside the caller's (the values are the same: only the layout
    changes, before an element-wise transform)."""

    def __init__(self, transform: Optional[Callable[[Any], Any]] = None):
        self.transform = transform

    def __call__(self, x: Any) -> Any:
        x = bt.map_tensors(lambda t: t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t, x)
        return x if self.transform is None else self.transform(x)

    def __repr__(self) -> str:
        return f"channels_last, then {self.transform!r}" if self.transform is not None else "channels_last"


def placement_info(placed: Any) -> dict[str, Any]:
    """How a placed split is held, for provenance: ``data_mode`` (memory/stream), ``data_bytes`` (of the whole
    split held as tensors; estimated from item 0 for a Dataset) and ``data_workers``."""
    if isinstance(placed, StreamSplit):
        return {"data_mode": "stream", "data_bytes": int(placed.nbytes()), "data_workers": placed.workers}
    return {"data_mode": "memory", "data_bytes": int(split_nbytes(placed)), "data_workers": 0}


def transformed(split: Any, batch_size: int = 4096) -> Any:
    """`split` (a `data.Split`) with its transform applied on the CPU: inputs as the model takes them (normalized
    float32 for the uint8 CIFAR-10 images, bit-identical to the device's), transform None; `split` itself when it
    has none. For the commands that hold their data and feed the model directly (training, the Hessian spectrum).

    Example:
        >>> from loss_landscape.data import Split
        >>> s = transformed(Split(torch.ones(4, 2), None, transform=lambda x: 2 * x))
        >>> s.inputs.tolist(), s.transform
        ([[2.0, 2.0], [2.0, 2.0], [2.0, 2.0], [2.0, 2.0]], None)
    """
    if split.transform is None:
        return split
    n, x = len(split), split.inputs
    if not isinstance(x, torch.Tensor) or n <= batch_size:
        parts = [split.transform(bt.slice_rows(x, s, s + batch_size)) for s in range(0, n, batch_size)]
        return type(split)(_cat(parts) if parts else split.transform(x), split.targets, None)
    first = split.transform(x[:batch_size])
    out = torch.empty((n, *first.shape[1:]), dtype=first.dtype)  # filled in place: no second copy of the set
    out[:batch_size] = first
    for s in range(batch_size, n, batch_size):
        out[s:s + batch_size] = split.transform(x[s:s + batch_size])
    return type(split)(out, split.targets, None)

