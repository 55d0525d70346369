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
from typing import Any

import numpy as np
import torch
from loss_landscape._util import import_object
from loss_landscape.errors import DataError

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
    """Inputs and class targets of one split, on the CPU.

    Attributes:
        inputs: float32 tensor (N, ...).
        targets: int64 tensor (N,).
    """

    inputs: torch.Tensor
    targets: torch.Tensor

    def __post_init__(self) -> None:
        if self.inputs.dtype != torch.float32 or self.targets.dtype != torch.int64:
            raise DataError(f"Split expects float32 inputs and int64 targets, "
                            f"found {self.inputs.dtype} and {self.targets.dtype}")
        if self.targets.dim() != 1 or self.inputs.dim() < 1 or len(self.inputs) != len(self.targets):
            raise DataError(f"Split expects inputs (N, ...) and targets (N,), "
                            f"found shapes {tuple(self.inputs.shape)} and {tuple(self.targets.shape)}")

    def __len__(self) -> int:
        return len(self.targets)


@dataclass(frozen=True, eq=False)  # tensors have no truth value: compare by identity
class EvalData:
    """A named evaluation dataset.

    Attributes:
        name: the name given to `load_dataset`.
        train: the training split (in file order for cifar10).
        test: the test split.
        num_classes: number of classes (targets lie in [0, num_classes)).
        info: flat provenance record (str -> str/int/float/bool) for HDF5 attributes.
    """

    name: str
    train: Split
    test: Split
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


def take_part(split: Split, parts: int, index: int) -> Split:
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
    return Split(split.inputs[start:stop], split.targets[start:stop])


def _normalize_(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
    # Same float32 operations as torchvision's Normalize, so values are bit-identical to the original's.
    x.sub_(torch.as_tensor(mean, dtype=x.dtype).view(-1, 1, 1))
    x.div_(torch.as_tensor(std, dtype=x.dtype).view(-1, 1, 1))


def _floats(values: tuple[float, ...]) -> str:
    return ",".join(repr(float(v)) for v in values)


def _split_info(train: Split, test: Split, num_classes: int) -> dict[str, Any]:
    return {
        "input_shape": "x".join(str(d) for d in train.inputs.shape[1:]),
        "train_size": len(train),
        "test_size": len(test),
        "num_classes": num_classes,
    }


def _load_cifar10(datapath: str, *, raw_data: bool, download: bool) -> EvalData:
    from loss_landscape import cifar10_data  # lazy: only CIFAR-10 needs its reader (and torchvision)

    train_x, train_y, test_x, test_y = cifar10_data.load_cifar10(datapath, raw_data=raw_data,
                                                                 download=download)
    train, test = Split(train_x, train_y), Split(test_x, test_y)
    info = {"dataset": "cifar10", "datapath": os.path.abspath(datapath), "raw_data": bool(raw_data),
            "split": "official train (file order) / test"}
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

    The factory returns ``(train, test)`` or ``(train, test, num_classes)``; each split is a Dataset
    of ``(x, y)`` items or an ``(inputs, targets)`` pair of tensors or numpy arrays.
    """
    expected = "expected 'pkg.module:function' importable from the current directory"
    factory = import_object(spec, what="dataset factory", expected=expected, error=DataError)

    result = factory()
    shape = "expected (train, test) or (train, test, num_classes)"
    if not isinstance(result, (tuple, list)) or len(result) not in (2, 3):
        found = f"a {len(result)}-tuple" if isinstance(result, (tuple, list)) else f"a {type(result).__name__}"
        raise DataError(f"dataset factory {spec!r} returned {found}: {shape}")
    train, test = _to_split(result[0], spec, "train"), _to_split(result[1], spec, "test")

    labels = torch.cat([train.targets, test.targets])
    if len(labels) and int(labels.min()) < 0:
        raise DataError(f"dataset factory {spec!r} gave a negative label {int(labels.min())}: "
                        f"expected class indices >= 0")
    top = int(labels.max()) + 1 if len(labels) else 0
    if len(result) == 3:
        num_classes = result[2]
        if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < top:
            raise DataError(f"dataset factory {spec!r} returned num_classes={num_classes!r}: expected an "
                            f"integer >= {max(top, 1)} (largest label + 1)")
        num_classes = int(num_classes)
    else:
        num_classes = top
    if num_classes < 1:
        raise DataError(f"dataset factory {spec!r} returned no samples and no num_classes: {shape}")
    info = {"dataset": spec, "factory": spec, "raw_data": False, "split": "as returned by the factory"}
    info.update(_split_info(train, test, num_classes))
    return EvalData(spec, train, test, num_classes, info)


def _as_tensor(value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    return torch.as_tensor(value)


def _to_split(obj: Any, spec: str, which: str) -> Split:
    """Converts an (inputs, targets) pair or a Dataset of (x, y) items into a Split, once."""
    where = f"{which} split of dataset factory {spec!r}"
    pair_types = (torch.Tensor, np.ndarray)
    if isinstance(obj, (tuple, list)) and len(obj) == 2 and all(isinstance(v, pair_types) for v in obj):
        inputs, targets = _as_tensor(obj[0]), _as_tensor(obj[1])
    elif hasattr(obj, "__len__") and hasattr(obj, "__getitem__"):
        xs, ys = [], []
        try:
            for i in range(len(obj)):
                x, y = obj[i]
                xs.append(_as_tensor(x))
                ys.append(_as_tensor(y))
        except (TypeError, ValueError, RuntimeError) as e:
            raise DataError(f"{where}: item {len(xs)} is not an (input, label) pair of tensors or arrays "
                            f"({type(e).__name__}: {e})") from e
        if not xs:
            return Split(torch.zeros(0, dtype=torch.float32), torch.zeros(0, dtype=torch.int64))
        try:
            inputs, targets = torch.stack(xs), torch.stack(ys)
        except RuntimeError as e:
            raise DataError(f"{where}: items cannot be stacked ({e}); expected inputs of one shape "
                            f"and scalar labels") from e
    else:
        raise DataError(f"{where} is a {type(obj).__name__}: expected a Dataset of (x, y) items "
                        f"or an (inputs, targets) pair of tensors or arrays")

    targets = targets.reshape(-1) if targets.dim() == 2 and targets.shape[1:] == (1,) else targets
    if targets.dim() != 1 or inputs.dim() < 1 or len(inputs) != len(targets):
        raise DataError(f"{where}: inputs {tuple(inputs.shape)} and targets {tuple(targets.shape)} do not "
                        f"match: expected inputs (N, ...) and class labels (N,)")
    if inputs.dtype == torch.bool or inputs.is_complex():
        raise DataError(f"{where}: inputs have dtype {inputs.dtype}: expected real numbers")
    if targets.is_floating_point():
        if not torch.equal(targets, targets.round()):
            raise DataError(f"{where}: targets are not whole numbers: expected class labels")
    elif targets.dtype == torch.bool or targets.is_complex():
        raise DataError(f"{where}: targets have dtype {targets.dtype}: expected integer class labels")
    return Split(inputs.to(torch.float32), targets.to(torch.int64))
