"""CIFAR-10 read straight from its python-pickle batches into tensors, as the original's pipeline gives them.

The original builds ``torchvision.datasets.CIFAR10`` with ``Compose([ToTensor(), Normalize(mean, std)])``
and applies it per PIL image. `load_cifar10` does the same float32 operations on the whole array at once, so
the values are bit-identical and nothing is converted per grid point; with ``as_uint8=True`` it keeps the
images as uint8 (a quarter of the memory) and `DeviceNormalize` does those operations on the evaluation
device, batch by batch, with the same bit-identical result (what `data.load_dataset` uses).

Example:
    >>> train_x, train_y, test_x, test_y = load_cifar10("cifar10/data")  # doctest: +SKIP
    >>> train_x.shape, train_x.dtype, train_y.dtype  # doctest: +SKIP
    (torch.Size([50000, 3, 32, 32]), torch.float32, torch.int64)
    >>> images = load_cifar10("cifar10/data", as_uint8=True)[0]  # doctest: +SKIP
    >>> torch.equal(DeviceNormalize.cifar10()(images), train_x)  # doctest: +SKIP
    True
"""

from __future__ import annotations

import os
import pickle
import socket
from typing import Any, Optional, Sequence

import numpy as np
import torch

from loss_landscape.errors import DataError

# The original's normalization (x / 255.0 of these), not the usual 0.4914/0.2470 constants.
CIFAR10_MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)
CIFAR10_STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)

FOLDER = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
META_FILE = "batches.meta"
LABEL_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"

# Pickled ndarrays are rebuilt by this function (numpy._core.multiarray._reconstruct in numpy 2).
_RECONSTRUCT = np.zeros(0).__reduce__()[0]

# torchvision's urllib calls have no timeout: behind a firewall that drops packets they would hang.
DOWNLOAD_SOCKET_TIMEOUT_S = 60.0


def load_cifar10(datapath: str, *, raw_data: bool = False, download: bool = True,
                 as_uint8: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Loads CIFAR-10 from ``<datapath>/cifar-10-batches-py``.

    Args:
        datapath: folder holding ``cifar-10-batches-py`` (torchvision's ``root``).
        raw_data: return ToTensor values in [0, 1], without the mean/std normalization (float images only).
        download: when the folder is missing, try torchvision's download into `datapath`.
        as_uint8: return the images as stored, uint8 (N, 3, 32, 32), for `DeviceNormalize` to convert on the
            device (`raw_data` is then the transform's business).

    Returns:
        (train_x, train_y, test_x, test_y): float32 (or uint8) (N, 3, 32, 32) images and int64 labels, train in
        file order (the original's train loader is not shuffled).

    Raises:
        DataError: the folder is missing and cannot be downloaded, or a batch file is missing or corrupt.
    """
    folder = os.path.abspath(os.path.join(datapath, FOLDER))
    if not os.path.isdir(folder):
        _download(datapath, folder, download)
    train_x, train_y = _read_batches([os.path.join(folder, f) for f in TRAIN_FILES])
    test_x, test_y = _read_batches([os.path.join(folder, TEST_FILE)])
    if as_uint8:
        return _images(train_x), train_y, _images(test_x), test_y
    return _to_float(train_x, raw_data), train_y, _to_float(test_x, raw_data), test_y


class DeviceNormalize:
    """uint8 images (N, C, H, W) to float32 on their own device, bit-identical to torchvision's ``ToTensor()``
    (then ``Normalize(mean, std)`` where given) applied per image on the CPU.

    The operations are those of torchvision, in its order and dtype: float32 conversion, division by 255, then
    ``sub_(mean).div_(std)`` with float32 (C, 1, 1) tensors. The 255 is a float32 tensor on the batch's device,
    not a Python number: on a GPU, torch divides by a Python number as a multiplication by its reciprocal, which
    can differ in the last bit. Picklable (the cached device constants are not pickled).

    Example:
        >>> t = DeviceNormalize.cifar10()
        >>> t(torch.zeros(1, 3, 2, 2, dtype=torch.uint8))[0, :, 0, 0]
        tensor([-1.9889, -1.9807, -1.7076])
    """

    def __init__(self, mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None):
        if (mean is None) != (std is None) or (mean is not None and len(mean) != len(std)):
            raise ValueError(f"mean and std must both be given, of the same length, or both None: found {mean!r}, "
                             f"{std!r}")
        self.mean = None if mean is None else tuple(float(v) for v in mean)
        self.std = None if std is None else tuple(float(v) for v in std)
        self._constants: dict[torch.device, tuple[torch.Tensor, ...]] = {}

    @classmethod
    def cifar10(cls, raw_data: bool = False) -> "DeviceNormalize":
        """The original's CIFAR-10 normalization; with `raw_data`, only the division by 255."""
        return cls() if raw_data else cls(CIFAR10_MEAN, CIFAR10_STD)

    def _on(self, device: torch.device) -> tuple[torch.Tensor, ...]:
        if device not in self._constants:
            consts = [torch.tensor(255.0, dtype=torch.float32, device=device)]
            if self.mean is not None:
                consts += [torch.as_tensor(v, dtype=torch.float32, device=device).view(-1, 1, 1)
                           for v in (self.mean, self.std)]
            self._constants[device] = tuple(consts)
        return self._constants[device]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8 or x.dim() < 3:
            found = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise DataError(f"{self!r} takes uint8 images (N, C, H, W): found {found}")
        consts = self._on(x.device)
        y = x.to(torch.float32).div(consts[0])  # a new tensor: the held images are never written
        if self.mean is not None:
            y.sub_(consts[1]).div_(consts[2])
        return y

    def __getstate__(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["mean"], state["std"])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DeviceNormalize) and (self.mean, self.std) == (other.mean, other.std)

    def __hash__(self) -> int:
        return hash((self.mean, self.std))

    def __repr__(self) -> str:
        if self.mean is None:
            return "DeviceNormalize(x / 255)"
        return f"DeviceNormalize(mean={list(self.mean)}, std={list(self.std)})"


def _download(datapath: str, folder: str, download: bool) -> None:
    hint = f"put the python-version batches there ({URL} unpacked)"
    if not download:
        raise DataError(f"CIFAR-10 not found at {folder} and download is off: {hint}")
    try:
        import torchvision

        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(DOWNLOAD_SOCKET_TIMEOUT_S)
        try:
            for train in (True, False):
                torchvision.datasets.CIFAR10(root=datapath, train=train, download=True)
        finally:
            socket.setdefaulttimeout(previous)
    except Exception as e:  # any failure here (network, checksum, archive, import) means the same to the user
        reason = " ".join(f"{type(e).__name__}: {e}".split())
        raise DataError(f"CIFAR-10 not found at {folder} and download failed (no network? {reason}): "
                        f"{hint}") from e
    if not os.path.isdir(folder):
        raise DataError(f"CIFAR-10 download into {os.path.abspath(datapath)} did not create {folder}: {hint}")


def _read_batches(paths: Sequence[str]) -> tuple[np.ndarray, torch.Tensor]:
    images, labels = [], []
    for path in paths:
        x, y = _read_batch(path)
        images.append(x)
        labels.extend(y)
    return np.concatenate(images), torch.tensor(labels, dtype=torch.int64)


def _read_batch(path: str) -> tuple[np.ndarray, list[int]]:
    """One batch file: (uint8 (N, 3072), labels), checked."""
    if not os.path.isfile(path):
        raise DataError(f"CIFAR-10 batch file {path} is missing: expected data_batch_1..5 and test_batch "
                        f"in {os.path.dirname(path)}")
    try:
        with open(path, "rb") as f:
            # The files are Python 2 pickles; "bytes" keeps their str keys as bytes (b"data").
            entry = pickle.load(f, encoding="bytes")
    except Exception as e:  # unpickling a damaged file can raise nearly any exception type
        reason = " ".join(f"{type(e).__name__}: {e}".split())[:200]
        raise DataError(f"cannot read CIFAR-10 batch file {path} ({reason}): it is truncated or corrupt; "
                        f"replace it with the original") from e
    if not isinstance(entry, dict):
        raise DataError(f"CIFAR-10 batch file {path} holds a {type(entry).__name__}: expected a dict")
    entry = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}
    x, y = entry.get("data"), entry.get("labels")
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3 * 32 * 32:
        found = f"{x.dtype} {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
        raise DataError(f"CIFAR-10 batch file {path}: 'data' is {found}, expected uint8 (N, 3072)")
    if y is None or len(y) != len(x):
        found = "missing" if y is None else f"{len(y)} long"
        raise DataError(f"CIFAR-10 batch file {path}: 'labels' is {found}, expected {len(x)} labels")
    y = [int(v) for v in y]
    if y and not 0 <= min(y) <= max(y) <= 9:
        raise DataError(f"CIFAR-10 batch file {path}: labels span [{min(y)}, {max(y)}], expected [0, 9]")
    return x, y


def _images(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).view(-1, 3, 32, 32)


def _to_float(images: np.ndarray, raw_data: bool) -> torch.Tensor:
    # The same ops, in the same order and dtype, as torchvision's to_tensor then normalize:
    # uint8 -> float32, / 255, then (x - mean) / std with float32 mean and std of shape (3, 1, 1).
    x = _images(images).to(torch.float32).div_(255)
    if not raw_data:
        x.sub_(torch.as_tensor(CIFAR10_MEAN, dtype=torch.float32).view(-1, 1, 1))
        x.div_(torch.as_tensor(CIFAR10_STD, dtype=torch.float32).view(-1, 1, 1))
    return x


class _Py2Pickler(pickle._Pickler):  # the pure-Python pickler: its dispatch table can be extended
    """Pickles as Python 2's cPickle did for the real files: protocol 2, str as byte strings.

    Loads like the real batches: keys are b"data" with ``encoding="bytes"`` and "data" with
    ``encoding="latin1"`` (torchvision's choice), and numpy 1.x and 2.x both read the arrays.
    """

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj: bytes | str) -> None:
        raw = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + len(raw).to_bytes(4, "little") + raw)
        self.memoize(obj)

    def save_text(self, obj: str) -> None:
        if obj.isascii():
            self.save_py2_str(obj)
        else:
            pickle._Pickler.save_str(self, obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_text

    def save_global(self, obj: Any, name: str | None = None) -> None:
        # numpy 2 names its module numpy._core; the real files (and numpy 1.x) use numpy.core.
        if obj is _RECONSTRUCT:
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
            return
        super().save_global(obj, name)


def _dump_py2(obj: Any, path: str) -> None:
    with open(path, "wb") as f:
        _Py2Pickler(f, protocol=2).dump(obj)


def write_cifar10_folder(root: str, train_images: Any, train_labels: Sequence[int], test_images: Any,
                         test_labels: Sequence[int]) -> str:
    """Writes a small CIFAR-10 folder in the real on-disk format, for tests and benchmarks.

    The train images are split over data_batch_1..5 as evenly as possible; test_batch and batches.meta
    are written too, each a dict with the real keys, pickled as the real files are.

    Args:
        root: the `datapath`; the files go to ``<root>/cifar-10-batches-py`` (created).
        train_images: uint8 (N, 3, 32, 32) or (N, 3072), numpy array or tensor.
        train_labels: N labels in [0, 9].
        test_images: uint8 (M, 3, 32, 32) or (M, 3072).
        test_labels: M labels in [0, 9].

    Returns:
        The folder written.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> folder = write_cifar10_folder("/tmp/c", rng.integers(0, 256, (50, 3072), dtype=np.uint8),
        ...                               rng.integers(0, 10, 50), rng.integers(0, 256, (20, 3072),
        ...                               dtype=np.uint8), rng.integers(0, 10, 20))  # doctest: +SKIP
    """
    folder = os.path.join(root, FOLDER)
    os.makedirs(folder, exist_ok=True)
    train_x, train_y = _check_images(train_images, train_labels, "train")
    test_x, test_y = _check_images(test_images, test_labels, "test")
    parts = np.array_split(np.arange(len(train_x)), len(TRAIN_FILES))
    batches = [(name, f"training batch {i + 1} of {len(TRAIN_FILES)}", train_x[idx], train_y[idx])
               for i, (name, idx) in enumerate(zip(TRAIN_FILES, parts))]
    batches.append((TEST_FILE, "testing batch 1 of 1", test_x, test_y))
    serial = 0
    for name, batch_label, x, y in batches:
        filenames = []
        for label in y:
            filenames.append(f"{LABEL_NAMES[label]}_s_{serial:06d}.png")
            serial += 1
        _dump_py2({"batch_label": batch_label, "labels": [int(v) for v in y], "data": x,
                   "filenames": filenames}, os.path.join(folder, name))
    _dump_py2({"num_cases_per_batch": len(parts[0]), "label_names": list(LABEL_NAMES), "num_vis": 3072},
              os.path.join(folder, META_FILE))
    return folder


def _check_images(images: Any, labels: Sequence[int], which: str) -> tuple[np.ndarray, np.ndarray]:
    x = images.numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if x.dtype != np.uint8 or x.shape[1:] not in ((3, 32, 32), (3072,)):
        raise ValueError(f"{which} images must be uint8 (N, 3, 32, 32) or (N, 3072), found {x.dtype} {x.shape}")
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(y) != len(x) or (len(y) and not 0 <= y.min() <= y.max() <= 9):
        raise ValueError(f"{which} labels must be {len(x)} values in [0, 9], found {len(y)} in "
                         f"[{y.min() if len(y) else '-'}, {y.max() if len(y) else '-'}]")
    return np.ascontiguousarray(x.reshape(len(x), 3072)), y
