"""Evaluation data: CIFAR-10 bit-identical to the original's torchvision pipeline, digits, factories, parts."""

import os
import pickle
import socket
import time

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from loss_landscape import data
from loss_landscape import cifar10_data
from loss_landscape.errors import DataError
from loss_landscape.data import Split, load_dataset, take_part

N_TRAIN, N_TEST = 50, 20


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    """A small CIFAR-10 folder in the real format, with the arrays it was written from."""
    rng = np.random.default_rng(1)
    arrays = {
        "train_x": rng.integers(0, 256, (N_TRAIN, 3, 32, 32), dtype=np.uint8),
        "train_y": rng.integers(0, 10, N_TRAIN),
        "test_x": rng.integers(0, 256, (N_TEST, 3072), dtype=np.uint8),
        "test_y": rng.integers(0, 10, N_TEST),
    }
    root = tmp_path_factory.mktemp("cifar")
    cifar10_data.write_cifar10_folder(str(root), arrays["train_x"], arrays["train_y"], arrays["test_x"],
                                      arrays["test_y"])
    return str(root), arrays


def _torchvision_image(flat_row, transform):
    # As torchvision's CIFAR10 dataset: reshape to CHW, transpose to HWC, PIL image, then the transform.
    return transform(Image.fromarray(flat_row.reshape(3, 32, 32).transpose(1, 2, 0)))


NORMALIZED = transforms.Compose([transforms.ToTensor(),
                                 transforms.Normalize(cifar10_data.CIFAR10_MEAN, cifar10_data.CIFAR10_STD)])


@pytest.mark.parametrize("raw_data", [False, True])
def test_cifar10_bit_identical_to_torchvision(cifar, raw_data):
    root, arrays = cifar
    transform = transforms.ToTensor() if raw_data else NORMALIZED
    train_x, train_y, test_x, test_y = cifar10_data.load_cifar10(root, raw_data=raw_data, download=False)
    assert train_x.shape == (N_TRAIN, 3, 32, 32) and test_x.shape == (N_TEST, 3, 32, 32)
    assert train_x.dtype == test_x.dtype == torch.float32
    assert train_y.dtype == test_y.dtype == torch.int64
    for i in range(N_TRAIN):
        assert torch.equal(train_x[i], _torchvision_image(arrays["train_x"][i].reshape(-1), transform)), i
    for i in range(N_TEST):
        assert torch.equal(test_x[i], _torchvision_image(arrays["test_x"][i], transform)), i
    assert train_y.tolist() == arrays["train_y"].tolist()
    assert test_y.tolist() == arrays["test_y"].tolist()


def test_cifar10_readable_by_torchvision_dataset(cifar, monkeypatch):
    # torchvision's own reader on our files (checksums skipped: they are not the real data) agrees.
    import torchvision.datasets.cifar as tv_cifar

    root, _ = cifar
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *args, **kwargs: True)
    train_x, train_y, test_x, test_y = cifar10_data.load_cifar10(root, download=False)
    for train, x, y in ((True, train_x, train_y), (False, test_x, test_y)):
        ds = tv_cifar.CIFAR10(root, train=train, transform=NORMALIZED)
        assert len(ds) == len(y)
        for i in range(len(ds)):
            image, label = ds[i]
            assert torch.equal(x[i], image) and label == y[i]
        assert ds.classes[0] == "airplane"


def test_cifar10_files_are_python2_pickles(cifar):
    root, _ = cifar
    folder = os.path.join(root, "cifar-10-batches-py")
    assert sorted(os.listdir(folder)) == sorted([f"data_batch_{i}" for i in range(1, 6)]
                                                + ["test_batch", "batches.meta"])
    with open(os.path.join(folder, "data_batch_1"), "rb") as f:
        raw = f.read()
    assert raw.startswith(b"\x80\x02}")
    batch = pickle.loads(raw, encoding="bytes")
    assert set(batch) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert batch[b"data"].shape == (N_TRAIN // 5, 3072)
    assert set(pickle.loads(raw, encoding="latin1")) == {"batch_label", "labels", "data", "filenames"}
    with open(os.path.join(folder, "batches.meta"), "rb") as f:
        assert len(pickle.load(f, encoding="bytes")[b"label_names"]) == 10


def test_load_dataset_cifar10(cifar):
    root, arrays = cifar
    ev = load_dataset("cifar10", datapath=root, download=False)
    assert ev.num_classes == 10 and len(ev.train) == N_TRAIN and len(ev.test) == N_TEST
    assert ev.info["datapath"] == os.path.abspath(root)
    assert ev.info["train_size"] == N_TRAIN and ev.info["raw_data"] is False
    assert all(isinstance(v, (str, int, float, bool)) for v in ev.info.values())
    raw = load_dataset("cifar10", datapath=root, raw_data=True, download=False)
    assert raw.info["raw_data"] is True and "normalize_mean" not in raw.info
    pixels = raw.train.transform(raw.train.inputs)  # uint8 held, /255 on the device (see the block at the end)
    assert 0 <= pixels.min() and pixels.max() <= 1


def test_cifar10_missing_folder(tmp_path):
    with pytest.raises(DataError) as err:
        cifar10_data.load_cifar10(str(tmp_path / "nowhere"), download=False)
    message = str(err.value)
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py") in message and "\n" not in message


def _offline():
    try:
        socket.getaddrinfo("www.cs.toronto.edu", 443)
    except OSError:
        return True
    return False


@pytest.mark.skipif(not _offline(), reason="online: would download the real 170 MB archive")
def test_cifar10_download_fails_offline(tmp_path):
    # Offline, torchvision's download must end in one DataError line (on the dev machine DNS fails at once).
    start = time.monotonic()
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", datapath=str(tmp_path), download=True)
    assert time.monotonic() - start < cifar10_data.DOWNLOAD_SOCKET_TIMEOUT_S
    message = str(err.value)
    assert "download failed" in message and str(tmp_path / "cifar-10-batches-py") in message
    assert "\n" not in message


def test_cifar10_download_that_hangs_times_out(tmp_path, monkeypatch):
    # A server that accepts connections and never answers (a firewall can look like this) must not hang us.
    import torchvision

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)  # the kernel completes the handshake; nobody ever reads or replies
        port = server.getsockname()[1]
        monkeypatch.setattr(torchvision.datasets.CIFAR10, "url", f"http://127.0.0.1:{port}/cifar.tar.gz")
        monkeypatch.setattr(cifar10_data, "DOWNLOAD_SOCKET_TIMEOUT_S", 0.5)
        start = time.monotonic()
        with pytest.raises(DataError, match="download failed"):
            cifar10_data.load_cifar10(str(tmp_path), download=True)
    assert time.monotonic() - start < 10
    assert socket.getdefaulttimeout() is None  # restored


@pytest.mark.parametrize("damage", ["truncate", "delete", "garbage"])
def test_cifar10_damaged_batch(cifar, tmp_path, damage):
    root, arrays = cifar
    cifar10_data.write_cifar10_folder(str(tmp_path), arrays["train_x"], arrays["train_y"], arrays["test_x"],
                                      arrays["test_y"])
    path = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:1000])
    elif damage == "delete":
        path.unlink()
    else:
        with open(path, "wb") as f:
            pickle.dump({"data": [1, 2, 3]}, f)
    with pytest.raises(DataError) as err:
        cifar10_data.load_cifar10(str(tmp_path), download=True)  # an existing folder is never re-downloaded
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_write_rejects_bad_images(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        cifar10_data.write_cifar10_folder(str(tmp_path), np.zeros((5, 3, 32, 32)), [0] * 5,
                                          np.zeros((1, 3072), np.uint8), [0])


def test_digits():
    ev = load_dataset("digits")
    assert ev.num_classes == 10
    assert ev.train.inputs.shape == (1397, 1, 8, 8) and ev.test.inputs.shape == (400, 1, 8, 8)
    assert ev.train.inputs.dtype == torch.float32 and ev.train.targets.dtype == torch.int64
    again = load_dataset("digits")
    assert torch.equal(ev.train.inputs, again.train.inputs) and torch.equal(ev.test.targets, again.test.targets)
    raw = load_dataset("digits", raw_data=True)
    assert raw.train.inputs.min() == 0 and raw.train.inputs.max() == 1
    # Train and test are disjoint and together are the whole set (compare the images as rows).
    rows = torch.cat([raw.train.inputs, raw.test.inputs]).flatten(1)
    from sklearn.datasets import load_digits

    ref = torch.from_numpy(load_digits().images / 16).to(torch.float32).flatten(1)
    as_set = lambda t: sorted(map(tuple, t.tolist()))  # noqa: E731
    assert as_set(rows) == as_set(ref)
    assert torch.equal((raw.train.inputs - data.DIGITS_MEAN[0]) / data.DIGITS_STD[0], ev.train.inputs)


def test_digits_constants_are_rounded_statistics():
    from sklearn.datasets import load_digits

    pixels = load_digits().images / 16
    assert data.DIGITS_MEAN == (round(float(pixels.mean()), 4),)
    assert data.DIGITS_STD == (round(float(pixels.std()), 4),)


FACTORY_MODULE = '''
import numpy as np
import torch


class Squares(torch.utils.data.Dataset):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return torch.full((2, 3), float(i)), i % 3


def as_datasets():
    return Squares(7), Squares(4)


def as_pairs():
    return (np.arange(12, dtype=np.float64).reshape(6, 2), np.array([0, 1, 2, 0, 1, 4])), \\
        (torch.ones(3, 2), torch.tensor([1, 1, 0]))


def with_classes():
    return (torch.ones(2, 5), torch.tensor([0, 1])), (torch.ones(1, 5), torch.tensor([1])), 10


def wrong_shape():
    return torch.ones(3)


def mismatched():
    return (torch.ones(3, 2), torch.tensor([0, 1])), (torch.ones(1, 2), torch.tensor([0]))


NOT_CALLABLE = 3
'''


@pytest.fixture
def factory_dir(tmp_path, monkeypatch):
    (tmp_path / "my_factory_data.py").write_text(FACTORY_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_factory_datasets(factory_dir):
    ev = load_dataset("my_factory_data:as_datasets")
    assert isinstance(ev.train, data.DatasetSplit) and len(ev.train) == 7 and len(ev.test) == 4
    train, test = data.in_memory(ev.train), data.in_memory(ev.test)
    assert train.inputs.shape == (7, 2, 3) and test.inputs.shape == (4, 2, 3)
    assert train.targets.tolist() == [0, 1, 2, 0, 1, 2, 0] and train.targets.dtype == torch.int64
    assert torch.equal(train.inputs[5], torch.full((2, 3), 5.0))
    # A Dataset's classes are not counted (that reads it all); the factory's third value gives them.
    assert ev.num_classes == 0 and ev.info["factory"] == "my_factory_data:as_datasets"
    assert ev.info["inputs"] == "Squares of float32 (N, 2, 3)"


def test_factory_pairs_and_num_classes(factory_dir):
    ev = load_dataset("my_factory_data:as_pairs")
    assert ev.train.inputs.dtype == torch.float32 and ev.train.targets.dtype == torch.int64
    assert ev.num_classes == 5 and len(ev.train) == 6 and len(ev.test) == 3
    assert load_dataset("my_factory_data:with_classes").num_classes == 10


def test_factory_found_from_cwd_without_syspath(tmp_path, monkeypatch):
    (tmp_path / "cwd_only_factory.py").write_text(FACTORY_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.path", [p for p in __import__("sys").path if p not in ("", str(tmp_path))])
    assert len(load_dataset("cwd_only_factory:as_pairs").train) == 6


@pytest.mark.parametrize("spec, words", [
    ("no_such_module_xyz:f", "cannot import module 'no_such_module_xyz'"),
    ("my_factory_data:missing", "has no attribute 'missing'"),
    ("my_factory_data:NOT_CALLABLE", "not a function"),
    ("my_factory_data:wrong_shape", "expected (train, test) or (train, test, num_classes)"),
    ("my_factory_data:mismatched", "do not match"),
    ("my_factory_data:", "expected 'pkg.module:function'"),
])
def test_factory_errors(factory_dir, spec, words):
    with pytest.raises(DataError) as err:
        load_dataset(spec)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_factory_rejects_raw_data(factory_dir):
    with pytest.raises(DataError, match="raw_data"):
        load_dataset("my_factory_data:as_pairs", raw_data=True)


def test_unknown_name_lists_accepted():
    with pytest.raises(DataError) as err:
        load_dataset("imagenet")
    assert "cifar10" in str(err.value) and "digits" in str(err.value) and "module:factory" in str(err.value)


def test_split_checks_types():
    with pytest.raises(DataError, match="dtype torch.bool"):
        Split(torch.zeros(3, 2, dtype=torch.bool), torch.zeros(3))
    with pytest.raises(DataError, match="3 samples of inputs and targets"):
        Split(torch.zeros(3, 2), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(DataError, match="different numbers of samples"):
        Split({"a": torch.zeros(3, 2), "b": torch.zeros(2)}, None)
    # Any real dtype, structured inputs, float or per-token targets, or none.
    assert len(Split(torch.zeros(3, 8, dtype=torch.int64), torch.zeros(3, 8, dtype=torch.int64))) == 3
    assert len(Split((torch.zeros(3, 2), torch.zeros(3, dtype=torch.uint8)), torch.zeros(3, 1))) == 3
    assert len(Split({"input_ids": torch.zeros(4, 5, dtype=torch.int64)}, None)) == 4


@pytest.mark.parametrize("n, parts", [(10, 1), (10, 3), (11, 4), (3, 5), (0, 2), (1397, 7)])
def test_take_part_covers_disjointly(n, parts):
    split = Split(torch.arange(n, dtype=torch.float32).view(n, 1), torch.arange(n))
    pieces = [take_part(split, parts, i) for i in range(parts)]
    assert torch.cat([p.targets for p in pieces]).tolist() == list(range(n))  # cover, disjoint, in order
    sizes = [len(p) for p in pieces]
    assert max(sizes) - min(sizes) <= 1
    assert sizes == [len(a) for a in np.array_split(np.arange(n), parts)]


@pytest.mark.parametrize("parts, index, words", [
    (0, 0, "found 0"), (3, 3, "[0, 2]"), (3, -1, "found -1"), (2.0, 0, "found 2.0"),
])
def test_take_part_bad_arguments(parts, index, words):
    split = Split(torch.zeros(4, 1), torch.zeros(4, dtype=torch.int64))
    with pytest.raises(DataError) as err:
        take_part(split, parts, index)
    assert words in str(err.value)
