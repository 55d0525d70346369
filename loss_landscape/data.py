"""Evaluation datasets by name, loaded once into CPU tensors.

The surface engine evaluates a model at thousands of weight-space points, so the data are read and
transformed here once (no DataLoader, no PIL work per point); the engine moves them to the device.

Accepted names: ``cifar10`` (the original's data and normalization), ``digits`` (scikit-learn's 8x8
handwritten digits, no download) and ``"pkg.module:factory"`` (a function of the user's).

Example:
    >>> ev = load_dataset("digits")
    >>> len(ev.train), len(ev.test), ev.num_classes
    (1397, 400, 10)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

import numpy as np
import torch
from loss_landscape import batches as bt
from loss_landscape._util import import_object
from loss_landscape.errors import DataError
from loss_landscape.streaming import DatasetSplit

AnySplit = Union["Split", DatasetSplit]

BUILTIN_DATASETS = ("cifar10", "digits")

# Mean and std of scikit-learn's digits pixels / 16 over all 1797 images, rounded to 4 decimals.
# Fixed constants (not recomputed per split) so every run and every part normalizes alike.
DIGITS_MEAN = (0.3053,)
DIGITS_STD = (0.3760,)
DIGITS_TRAIN_SIZE = 1397
DIGITS_TEST_SIZE = 400
DIGITS_SPLIT_SEED = 0


@dataclass(frozen=True, eq=False)  # tensors have no truth value: compare by identity
class Split:
    """Inputs and targets of one split, on the CPU.

    Attributes:
        inputs: a tensor (N, ...) of any real dtype (token ids stay integers, images may stay uint8), or a tuple
            or dict of such tensors, called as ``model(*x)`` or ``model(**x)`` (see `loss_landscape.batches`).
        targets: class indices (N,), float regression targets (N, ...), per-token ids (N, T) (-100 ignored), or
            None for a model that computes its own loss.
        transform: what the evaluation device applies to each batch of inputs before the model (the uint8 CIFAR-10
            images are normalized there); None: the inputs go in as they are.
    """

    inputs: Any
    targets: Optional[torch.Tensor]
    transform: Optional[Callable[[Any], Any]] = None

    def __post_init__(self) -> None:
        n = bt.check_structure(self.inputs, "Split inputs")
        for t in bt.tensors(self.inputs):
            if t.dtype == torch.bool or t.is_complex():
                raise DataError(f"Split inputs have dtype {t.dtype}: expected real numbers or integer ids")
        if self.targets is not None:
            if not isinstance(self.targets, torch.Tensor) or self.targets.dim() < 1 or len(self.targets) != n:
                found = tuple(self.targets.shape) if isinstance(self.targets, torch.Tensor) else type(self.targets).__name__
                raise DataError(f"inputs and targets do not match: {n} samples of inputs and targets {found}; "
                                f"expected inputs (N, ...) and targets (N, ...), or None")
            if self.targets.dtype == torch.bool or self.targets.is_complex():
                raise DataError(f"Split targets have dtype {self.targets.dtype}: expected integer class or token "
                                f"ids, or real regression targets")

    def __len__(self) -> int:
        return bt.rows(self.inputs)

    def rows(self, index: torch.Tensor) -> "Split":
        """The samples at `index` (a copy), in that order."""
        return Split(bt.take_rows(self.inputs, index),
                     None if self.targets is None else self.targets[index], self.transform)

    def part(self, start: int, stop: int) -> "Split":
        """Samples start..stop (views)."""
        return Split(bt.slice_rows(self.inputs, start, stop),
                     None if self.targets is None else self.targets[start:stop], self.transform)


@dataclass(frozen=True, eq=False)  # tensors have no truth value: compare by identity
class EvalData:
    """A named evaluation dataset.

    Attributes:
        name: the name given to `load_dataset`.
        train: the training split (in file order for cifar10): a `Split` in memory, or a `DatasetSplit` read
            item by item (a factory's Dataset, kept for streaming).
        test: the test split.
        num_classes: number of classes (targets lie in [0, num_classes)); 0 where the targets are no classes
            (regression, tokens, none).
        info: flat provenance record (str -> str/int/float/bool) for HDF5 attributes.
    """

    name: str
    train: AnySplit
    test: AnySplit
    num_classes: int
    info: dict[str, Any] = field(default_factory=dict)


def load_dataset(name: str, *, datapath: str = "cifar10/data", raw_data: bool = False,
                 download: bool = True) -> EvalData:
    """Loads an evaluation dataset by name.

    Args:
        name: "cifar10", "digits", or "pkg.module:factory" (see `_load_factory`).
        datapath: folder holding ``cifar-10-batches-py`` (cifar10 only), relative to the current directory.
        raw_data: skip the mean/std normalization (pixels stay in [0, 1]); built-in datasets only.
        download: for cifar10, try torchvision's download when the folder is missing.

    Returns:
        The dataset with CPU tensors and a provenance dict.

    Raises:
        DataError: unknown name, missing or corrupt files, or a factory that returns the wrong thing.

    Example:
        >>> ev = load_dataset("cifar10", datapath="cifar10/data")  # doctest: +SKIP
        >>> ev.train.inputs.shape  # doctest: +SKIP
        torch.Size([50000, 3, 32, 32])
    """
    if name == "cifar10":
        return _load_cifar10(datapath, raw_data=raw_data, download=download)
    if name == "digits":
        return _load_digits(raw_data=raw_data)
    if ":" in name:
        if raw_data:
            raise DataError(f"raw_data applies only to the built-in datasets {', '.join(BUILTIN_DATASETS)}; "
                            f"data from factory {name!r} are used as returned")
        return _load_factory(name)
    raise DataError(f"unknown dataset {name!r}: expected one of {', '.join(BUILTIN_DATASETS)} "
                    f"or 'pkg.module:factory'")


def in_memory(split: AnySplit) -> Split:
    """`split` as tensors on the CPU: a `DatasetSplit` is read once, item by item (for the commands that hold their
    data, such as training and the Hessian spectrum)."""
    return Split(*split.tensors(), split.transform) if isinstance(split, DatasetSplit) else split


def take_part(split: AnySplit, parts: int, index: int) -> AnySplit:
    """Returns the `index`-th of `parts` contiguous parts of a split.

    The parts are disjoint, cover the split and differ in size by at most one, the first ones being
    the larger (as `numpy.array_split`). The tensors are views, not copies.

    Args:
        split: the split to cut.
        parts: number of parts, >= 1.
        index: which part, 0 <= index < parts.

    Example:
        >>> s = Split(torch.zeros(10, 2), torch.zeros(10, dtype=torch.int64))
        >>> [len(take_part(s, 3, i)) for i in range(3)]
        [4, 3, 3]
    """
    if isinstance(parts, bool) or not isinstance(parts, int) or parts < 1:
        raise DataError(f"number of data parts must be an integer >= 1, found {parts!r}")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < parts:
        raise DataError(f"data part index must be an integer in [0, {parts - 1}] for {parts} parts, "
                        f"found {index!r}")
    size, extra = divmod(len(split), parts)
    start = index * size + min(index, extra)
    stop = start + size + (1 if index < extra else 0)
    return split.part(start, stop)


def sample_indices(n: int, samples: int, seed: int) -> torch.Tensor:
    """`samples` of `n` indices chosen by `seed` (numpy's default_rng(seed).choice without replacement), sorted, so
    the subset keeps the file order; all of them when `samples` is 0 or at least `n`.

    Example:
        >>> sample_indices(10, 4, 0).tolist()
        [2, 4, 5, 7]
    """
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 0:
        raise DataError(f"--eval_samples must be a whole number >= 0 (0: all), found {samples!r}")
    if samples == 0 or samples >= n:
        return torch.arange(n)
    chosen = np.random.default_rng(seed).choice(n, size=samples, replace=False)
    return torch.from_numpy(np.sort(chosen).astype(np.int64))


def take_samples(split: AnySplit, samples: int, seed: int) -> AnySplit:
    """The fixed, seeded subset of `samples` samples of `split` (`sample_indices`); `split` itself for 0."""
    if samples == 0 or samples >= len(split):
        sample_indices(len(split), samples, seed)  # checks the count
        return split
    return split.rows(sample_indices(len(split), samples, seed))


def _normalize_(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
    # Same float32 operations as torchvision's Normalize, so values are bit-identical to the original's.
    x.sub_(torch.as_tensor(mean, dtype=x.dtype).view(-1, 1, 1))
    x.div_(torch.as_tensor(std, dtype=x.dtype).view(-1, 1, 1))


def _floats(values: tuple[float, ...]) -> str:
    return ",".join(repr(float(v)) for v in values)


def _split_info(train: AnySplit, test: AnySplit, num_classes: int) -> dict[str, Any]:
    kind = train.describe() if isinstance(train, DatasetSplit) else bt.describe(train.inputs)
    info = {"inputs": kind, "train_size": len(train), "test_size": len(test), "num_classes": num_classes}
    if isinstance(train, Split) and isinstance(train.inputs, torch.Tensor):
        info["input_shape"] = "x".join(str(d) for d in train.inputs.shape[1:])
    return info


def _load_cifar10(datapath: str, *, raw_data: bool, download: bool) -> EvalData:
    from loss_landscape import cifar10_data  # lazy: only CIFAR-10 needs its reader (and torchvision)

    # uint8 images (a quarter of float32's memory), normalized on the evaluation device batch by batch, to the
    # same bits as the original's per-image ToTensor and Normalize (see cifar10_data.DeviceNormalize).
    train_x, train_y, test_x, test_y = cifar10_data.load_cifar10(datapath, download=download, as_uint8=True)
    transform = cifar10_data.DeviceNormalize.cifar10(raw_data)
    train, test = Split(train_x, train_y, transform), Split(test_x, test_y, transform)
    info = {"dataset": "cifar10", "datapath": os.path.abspath(datapath), "raw_data": bool(raw_data),
            "split": "official train (file order) / test", "transform": repr(transform)}
    if not raw_data:
        info["normalize_mean"] = _floats(cifar10_data.CIFAR10_MEAN)
        info["normalize_std"] = _floats(cifar10_data.CIFAR10_STD)
    info.update(_split_info(train, test, 10))
    return EvalData("cifar10", train, test, 10, info)


def _load_digits(*, raw_data: bool) -> EvalData:
    """scikit-learn's digits: 1797 images (1, 8, 8), pixels / 16; split by a seed-0 permutation."""
    from sklearn.datasets import load_digits  # ships its data, no download

    bunch = load_digits()
    x = torch.from_numpy(bunch.images).to(torch.float32).unsqueeze(1).div_(16)
    if not raw_data:
        _normalize_(x, DIGITS_MEAN, DIGITS_STD)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    perm = torch.from_numpy(np.random.default_rng(DIGITS_SPLIT_SEED).permutation(len(y)))
    train_idx, test_idx = perm[:DIGITS_TRAIN_SIZE], perm[DIGITS_TRAIN_SIZE:]
    train, test = Split(x[train_idx], y[train_idx]), Split(x[test_idx], y[test_idx])
    info = {"dataset": "digits", "raw_data": bool(raw_data),
            "split": f"numpy default_rng({DIGITS_SPLIT_SEED}).permutation: first {DIGITS_TRAIN_SIZE} train, "
                     f"last {DIGITS_TEST_SIZE} test"}
    if not raw_data:
        info["normalize_mean"] = _floats(DIGITS_MEAN)
        info["normalize_std"] = _floats(DIGITS_STD)
    info.update(_split_info(train, test, 10))
    return EvalData("digits", train, test, 10, info)


def _load_factory(spec: str) -> EvalData:
    """Calls ``factory()`` from ``pkg.module:factory``.

    The factory returns ``(train, test)`` or ``(train, test, num_classes)``. Each split is an ``(inputs, targets)``
    pair (inputs: a tensor or array, a tuple of them or a dict of them, float64 made float32, integer ids kept;
    targets: a tensor or array, or None), a `Split`, or a ``torch.utils.data.Dataset`` (or a DataLoader, whose
    dataset and collate function are used) of ``(x, y)`` items or of bare inputs (a dict for ``model(**x)``). A
    Dataset is read item by item when evaluated, so it may be larger than memory (see `loss_landscape.streaming`);
    its classes are not counted (that would read it all): give num_classes where a command needs it.
    """
    expected = "expected 'pkg.module:function' importable from the current directory"
    factory = import_object(spec, what="dataset factory", expected=expected, error=DataError)

    result = factory()
    shape = "expected (train, test) or (train, test, num_classes)"
    if not isinstance(result, (tuple, list)) or len(result) not in (2, 3):
        found = f"a {len(result)}-tuple" if isinstance(result, (tuple, list)) else f"a {type(result).__name__}"
        raise DataError(f"dataset factory {spec!r} returned {found}: {shape}")
    train, test = _to_split(result[0], spec, "train"), _to_split(result[1], spec, "test")

    labels = [s.targets for s in (train, test) if isinstance(s, Split) and s.targets is not None
              and s.targets.dim() == 1 and not s.targets.is_floating_point()]
    labels = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.int64)
    top = int(labels.max()) + 1 if len(labels) else 0
    if len(result) == 3:
        num_classes = result[2]
        if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < top:
            raise DataError(f"dataset factory {spec!r} returned num_classes={num_classes!r}: expected an "
                            f"integer >= {max(top, 1)} (largest label + 1)")
        num_classes = int(num_classes)
    else:
        num_classes = top
    info = {"dataset": spec, "factory": spec, "raw_data": False, "split": "as returned by the factory"}
    info.update(_split_info(train, test, num_classes))
    return EvalData(spec, train, test, num_classes, info)


def _as_tensor(value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    return torch.as_tensor(value)


def _as_input(value: Any) -> torch.Tensor:
    t = _as_tensor(value)
    return t.to(torch.float32) if t.dtype == torch.float64 else t  # as the models' weights; ids stay integers


def _as_structure(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _as_input(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return tuple(_as_input(v) for v in value)
    return _as_input(value)


_ARRAYS = (torch.Tensor, np.ndarray)


def _is_pair(obj: Any) -> bool:
    if not (isinstance(obj, (tuple, list)) and len(obj) == 2):
        return False
    x, y = obj
    x_ok = isinstance(x, _ARRAYS) or (isinstance(x, dict) and x and all(isinstance(v, _ARRAYS) for v in x.values())) \
        or (isinstance(x, (tuple, list)) and x and all(isinstance(v, _ARRAYS) for v in x))
    return x_ok and (y is None or isinstance(y, _ARRAYS))


def _to_split(obj: Any, spec: str, which: str) -> AnySplit:
    """An (inputs, targets) pair becomes a `Split`; a Dataset (or a DataLoader's) a `DatasetSplit`."""
    where = f"{which} split of dataset factory {spec!r}"
    if isinstance(obj, Split):
        return obj
    if _is_pair(obj):
        inputs, targets = _as_structure(obj[0]), None if obj[1] is None else _as_tensor(obj[1])
        if targets is not None and targets.dim() == 2 and targets.shape[1] == 1 and not targets.is_floating_point():
            targets = targets.reshape(-1)  # (N, 1) class labels
        if targets is not None and not targets.is_floating_point() and targets.dtype != torch.bool:
            targets = targets.to(torch.int64)
        try:
            return Split(inputs, targets)
        except DataError as e:
            raise DataError(f"{where}: {e}") from None
    if hasattr(obj, "__len__") and hasattr(obj, "__getitem__") or hasattr(obj, "dataset"):
        return DatasetSplit.of(obj, where)
    raise DataError(f"{where} is a {type(obj).__name__}: expected a Dataset of (x, y) items or of inputs, a "
                    f"DataLoader, or an (inputs, targets) pair of tensors or arrays (targets may be None)")
