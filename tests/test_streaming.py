"""Streaming (loss_landscape.streaming): the same values, to the bit, as holding the data in memory, for every kind
of data (tensors, images through a CNN, dicts for a model that returns its own loss, tokens), with workers,
channels_last and a device transform; the choice of mode; one-line errors for data of the wrong kind; and the
uint8 CIFAR-10 images normalized on the device to the same bits as the float32 path."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from loss_landscape import batches as bt
from loss_landscape import cifar10_data
from loss_landscape.data import Split, in_memory, load_dataset
from loss_landscape.errors import DataError
from loss_landscape.evaluation import Criterion, DeviceSplit, evaluate_values, recalibrate_bn
from loss_landscape.models.digits import create_model
from loss_landscape.streaming import (DatasetSplit, StreamSplit, choose_mode, default_budget, place,
                                      placement_info, transformed)

CPU = torch.device("cpu")


def both(split, **kw):
    """The split held in memory and streamed, on the CPU."""
    return place(split, CPU, mode="memory", **kw), place(split, CPU, mode="stream", **kw)


def values(model, data, loss="crossentropy", metrics=(), batch_size=16):
    return evaluate_values(model, data, Criterion.of(loss, metrics), batch_size=batch_size)


# ---------------------------------------------------------------------------------------------------------------
# Datasets of each kind
# ---------------------------------------------------------------------------------------------------------------

class Digits(Dataset):
    """Digits-like (1, 8, 8) images with labels, made per item (a numpy label, as many Datasets give)."""

    def __init__(self, n=90, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 1, 8, 8, generator=g)
        self.y = np.random.default_rng(seed).integers(0, 10, n)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i].clone(), self.y[i]


class DictItems(Dataset):
    """Items {"x": ..., "labels": ...} for a model that computes its own loss (targets None)."""

    def __init__(self, n=45):
        g = torch.Generator().manual_seed(1)
        self.x, self.labels = torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"x": self.x[i], "labels": self.labels[i]}


class OwnLoss(nn.Module):
    """forward(**x) returns a dict with the batch-mean loss, as a transformers model given labels does."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(6, 3)

    def forward(self, x, labels):
        logits = self.fc(x)
        return {"loss": nn.functional.cross_entropy(logits, labels), "logits": logits}


class Tokens(Dataset):
    """(ids (T,), next ids (T,)) int64 items, some targets ignored (-100)."""

    def __init__(self, n=37, t=9, vocab=11):
        g = torch.Generator().manual_seed(2)
        self.ids = torch.randint(0, vocab, (n, t + 1), generator=g)
        self.targets = self.ids[:, 1:].clone()
        self.targets[::5, -2:] = -100

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return self.ids[i, :-1], self.targets[i]


class TinyLM(nn.Module):
    def __init__(self, vocab=11):
        super().__init__()
        torch.manual_seed(0)
        self.emb, self.out = nn.Embedding(vocab, 8), nn.Linear(8, vocab)

    def forward(self, ids):
        return self.out(torch.tanh(self.emb(ids)))


def digits_cnn():
    torch.manual_seed(0)
    return create_model("digits_cnn").eval()


# ---------------------------------------------------------------------------------------------------------------
# Streaming equals memory, to the bit
# ---------------------------------------------------------------------------------------------------------------

def test_tensor_dataset():
    g = torch.Generator().manual_seed(3)
    ds = TensorDataset(torch.randn(70, 5, generator=g), torch.randint(0, 4, (70,), generator=g))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 4))
    mem, stream = both(DatasetSplit.of(ds, "tensors"))
    assert isinstance(mem, DeviceSplit) and isinstance(stream, StreamSplit)
    for batch_size in (1, 16, 70, 128):
        assert values(model, stream, metrics=["top5"], batch_size=batch_size) == \
            values(model, mem, metrics=["top5"], batch_size=batch_size)


def test_cnn_dataset_and_float64_reference():
    model = digits_cnn()
    ds = Digits()
    mem, stream = both(DatasetSplit.of(ds, "digits"))
    got = values(model, stream)
    assert got == values(model, mem)
    # Independently: one sample at a time, in float64.
    ref = model.double()
    losses, correct = [], 0
    with torch.no_grad():
        for i in range(len(ds)):
            x, y = ds[i]
            out = ref(x[None].double())[0]
            losses.append(float(-torch.log_softmax(out, 0)[int(y)]))
            correct += int(out.argmax() == int(y))
    assert got["loss"] == pytest.approx(sum(losses) / len(ds), rel=1e-5)
    assert got["acc"] == 100.0 * correct / len(ds)


def test_dict_items_without_targets_and_the_models_loss():
    split = DatasetSplit.of(DictItems(), "dicts")
    assert split.targets is None
    mem, stream = both(split)
    assert mem.targets is None and stream.targets is None
    model = OwnLoss()
    for batch_size in (7, 45):
        got = values(model, stream, loss="model_loss", batch_size=batch_size)
        assert got == values(model, mem, loss="model_loss", batch_size=batch_size)
    with torch.no_grad():
        whole = model(x=DictItems().x, labels=DictItems().labels)["loss"]
    assert got["loss"] == pytest.approx(float(whole), rel=1e-6)


def test_tokens():
    split = DatasetSplit.of(Tokens(), "tokens")
    mem, stream = both(split)
    assert mem.inputs.dtype == torch.int64 and mem.inputs.shape == (37, 9) and mem.targets.shape == (37, 9)
    model = TinyLM()
    got = values(model, stream, loss="token_crossentropy", batch_size=8)
    assert got == values(model, mem, loss="token_crossentropy", batch_size=8)
    # Held tensors streamed (sliced, not read item by item) give the same too.
    held = Split(Tokens().ids[:, :-1], Tokens().targets)
    assert values(model, place(held, CPU, mode="stream"), loss="token_crossentropy", batch_size=8) == got


@pytest.mark.parametrize("workers", [2])
def test_workers_keep_the_order(workers):
    model = digits_cnn()
    split = DatasetSplit.of(Digits(n=150), "digits")
    mem = place(split, CPU, mode="memory")
    stream = place(split, CPU, mode="stream", workers=workers)
    assert stream.workers == workers
    want = values(model, mem, batch_size=16)
    for _ in range(2):  # the persistent workers serve a second pass in the same order
        assert values(model, stream, batch_size=16) == want
    # Recalibration stops after a few batches; the next pass still starts at the beginning.
    recalibrate_bn(model, stream, batches=2, batch_size=16)
    ys = torch.cat([y for _, y in stream.batches(16)])
    assert torch.equal(ys, mem.targets)


def test_recalibrate_bn_on_a_stream():
    split = DatasetSplit.of(Digits(), "digits")
    mem, stream = both(split)
    a, b = digits_cnn(), digits_cnn()
    assert recalibrate_bn(a, mem, batches=3, batch_size=16) == 2
    assert recalibrate_bn(b, stream, batches=3, batch_size=16) == 2
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    assert not torch.equal(a.bn1.running_mean, digits_cnn().bn1.running_mean)  # it did recalibrate


class Plus(nn.Module):
    """A device transform (a picklable callable): uint8 to float, scaled."""

    def forward(self, x):
        return x.to(torch.float32).div(torch.tensor(127.5)).sub(1)


def test_channels_last_and_a_device_transform():
    g = torch.Generator().manual_seed(4)
    images = torch.randint(0, 256, (40, 1, 8, 8), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (40,), generator=g)
    model = digits_cnn().to(memory_format=torch.channels_last)
    split = DatasetSplit.of(TensorDataset(images, labels), "uint8 images", transform=Plus())
    mem, stream = both(split, channels_last=True)
    assert mem.inputs.dtype == torch.uint8  # held as it is on a CPU: each batch goes channels_last
    for data in (mem, stream):
        x, _ = next(data.batches(16))
        assert x.dtype == torch.float32 and x.is_contiguous(memory_format=torch.channels_last)
        assert x.shape == (16, 1, 8, 8)
    assert values(model, stream) == values(model, mem)
    # The held path with the same transform and channels_last agrees as well.
    held = Split(images, labels, Plus())
    assert values(model, place(held, CPU, mode="stream", channels_last=True)) == values(model, mem)
    placed = place(held, CPU, mode="memory", channels_last=True)
    assert placed.inputs is images  # no second copy of the set
    assert values(model, placed) == values(model, mem)
    # A copy converted whole, as on a GPU, gives the same batches.
    whole = DeviceSplit.put(images, labels, CPU, channels_last=True, transform=Plus())
    assert whole.inputs.is_contiguous(memory_format=torch.channels_last)
    assert values(model, whole) == values(model, mem)


def test_subsets_and_parts_stream_the_same_items():
    split = DatasetSplit.of(Digits(), "digits")
    model = digits_cnn()
    part, rows = split.part(10, 50), split.rows(torch.tensor([3, 5, 80]))
    assert len(part) == 40 and len(rows) == 3
    for s in (part, rows):
        assert values(model, place(s, CPU, mode="stream")) == values(model, place(s, CPU, mode="memory"))
    assert torch.equal(in_memory(rows).inputs, Digits().x[[3, 5, 80]])


def test_in_memory_keeps_the_transform_and_transformed_applies_it():
    split = DatasetSplit.of(TensorDataset(torch.arange(6, dtype=torch.uint8).view(6, 1), torch.arange(6)),
                            "small", transform=Plus())
    held = in_memory(split)
    assert isinstance(held, Split) and held.inputs.dtype == torch.uint8 and isinstance(held.transform, Plus)
    for batch_size in (4, 6):  # filled batch by batch, or at once
        floats = transformed(held, batch_size=batch_size)
        assert floats.transform is None and torch.equal(floats.inputs, Plus()(held.inputs))
        assert isinstance(floats, Split) and floats.targets is held.targets
    assert transformed(floats) is floats


# ---------------------------------------------------------------------------------------------------------------
# Choosing the mode; placing
# ---------------------------------------------------------------------------------------------------------------

def test_choose_mode_by_budget():
    split = DatasetSplit.of(Digits(n=10), "digits")
    size = 10 * (64 * 4 + 8)  # float32 (1, 8, 8) images and int64 labels
    assert split.estimate_nbytes() == size
    assert choose_mode(split, "auto", size - 1, CPU) == "stream"
    assert choose_mode(split, "auto", size, CPU) == "memory"
    assert isinstance(place(split, CPU, budget=size - 1), StreamSplit)
    assert isinstance(place(split, CPU, budget=size), DeviceSplit)
    for mode in ("memory", "stream"):
        assert choose_mode(split, mode, 0, CPU) == mode
    # Tensors already held on the host stay there on a CPU device: streaming would save nothing.
    held = in_memory(split)
    assert choose_mode(held, "auto", 0, CPU) == "memory"
    assert isinstance(place(held, CPU, mode="stream"), StreamSplit)
    with pytest.raises(DataError, match="unknown data mode 'disk'"):
        choose_mode(split, "disk", None, CPU)


class Many(Dataset):
    def __len__(self):
        return 2 ** 20

    def __getitem__(self, i):
        return torch.zeros(1024, dtype=torch.uint8)


def test_default_budget_is_shared_among_ranks(monkeypatch):
    from loss_landscape import streaming

    assert streaming._available_bytes() > 0
    monkeypatch.setattr(streaming, "_available_bytes", lambda: 8 * 2 ** 30)
    assert default_budget(CPU) == 4 * 2 ** 30 and default_budget(CPU, local_ranks=4) == 2 ** 30
    big = DatasetSplit.of(Many(), "big")  # 1 GiB, by its first item
    assert big.estimate_nbytes() == 2 ** 30
    assert choose_mode(big, "auto", None, CPU) == "memory"
    assert choose_mode(big, "auto", None, CPU, local_ranks=8) == "stream"
    assert isinstance(place(big, CPU, local_ranks=8), StreamSplit)


def test_placement_info():
    split = DatasetSplit.of(Digits(n=10), "digits")
    mem = place(split, CPU, mode="memory")
    stream = place(split, CPU, mode="stream", workers=1)
    assert placement_info(mem) == {"data_mode": "memory", "data_bytes": 10 * (64 * 4 + 8), "data_workers": 0}
    assert placement_info(stream) == {"data_mode": "stream", "data_bytes": 10 * (64 * 4 + 8), "data_workers": 1}


def test_dataloader_gives_its_dataset_and_collate():
    ds = Digits(n=30)
    calls = []

    def collate(items):
        calls.append(len(items))
        return torch.stack([x for x, _ in items]), torch.tensor([int(y) for _, y in items])

    # Its batch size, shuffling and workers are not used: points go in index order with the job's batch size.
    split = DatasetSplit.of(DataLoader(ds, batch_size=7, shuffle=True, collate_fn=collate), "loader")
    assert split.dataset is ds and split.collate is collate
    model = digits_cnn()
    calls.clear()
    assert values(model, place(split, CPU, mode="stream"), batch_size=16) == \
        values(model, place(DatasetSplit.of(ds, "digits"), CPU, mode="memory"), batch_size=16)
    assert calls == [16, 14]
    # A DataLoader with torch's default collate also batches (x, None) items.
    no_targets = DatasetSplit.of(DataLoader(TensorDataset(torch.randn(4, 2)), batch_size=3), "bare")
    assert no_targets.targets is None


# ---------------------------------------------------------------------------------------------------------------
# Data of the wrong kind: one line saying what was expected
# ---------------------------------------------------------------------------------------------------------------

class Stream(IterableDataset):
    def __iter__(self):
        yield torch.zeros(2), 0


class Items(Dataset):
    def __init__(self, item):
        self.item = item

    def __len__(self):
        return 3

    def __getitem__(self, i):
        return self.item


class Broken(Items):
    def __getitem__(self, i):
        raise KeyError(i)


@pytest.mark.parametrize("obj, words", [
    (Stream(), ["is a Stream", "map-style Dataset (with len and [i])"]),
    (iter([1, 2]), ["is a list_iterator", "map-style Dataset"]),
    (object(), ["is a object", "map-style Dataset"]),
])
def test_not_a_map_style_dataset(obj, words):
    with pytest.raises(DataError) as err:
        DatasetSplit.of(obj, "train split")
    message = str(err.value)
    assert message.startswith("train split") and "\n" not in message
    for w in words:
        assert w in message


@pytest.mark.parametrize("item, found", [
    ("a cat", "item 0 is a str"),
    (("a", "b", "c"), "item 0 is a 3-tuple of str, str, str"),
    ((torch.zeros(2), "cat"), "item 0 is a 2-tuple of tensor float32 (2,), str"),
    ({"ids": "text"}, "item 0 is a dict of ids: str"),
    (True, "item 0 is a bool"),
])
def test_item_of_a_wrong_kind(item, found):
    with pytest.raises(DataError) as err:
        DatasetSplit.of(Items(item), "test split")
    message = str(err.value)
    assert found in message and "expected an (input, target) pair" in message and "dict of tensors" in message
    assert "\n" not in message


def test_item_that_cannot_be_read_or_batched():
    with pytest.raises(DataError, match=r"reading item 0 failed \(KeyError: 0\)"):
        DatasetSplit.of(Broken(None), "train split")
    with pytest.raises(DataError, match="item 0 cannot be batched"):
        DatasetSplit.of(Items((torch.zeros(2), np.array(["a"]))), "train split")


def test_numpy_scalars_and_pairs_with_no_target():
    split = DatasetSplit.of(Items((np.zeros(3, np.float32), np.int64(2))), "numpy")
    assert split.targets.tolist() == [2]
    bare = DatasetSplit.of(Items((torch.zeros(3), None)), "no targets")
    x, y = next(place(bare, CPU, mode="stream").batches(2))
    assert y is None and x.shape == (2, 3)


def test_bad_workers():
    with pytest.raises(DataError, match="workers must be an integer >= 0"):
        place(DatasetSplit.of(Digits(n=4), "digits"), CPU, mode="stream", workers=-1)


# ---------------------------------------------------------------------------------------------------------------
# CIFAR-10 as uint8, normalized on the device (the float32 path's tests are in test_data.py)
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    """A small CIFAR-10 folder in the real on-disk pickle format, with every pixel value present."""
    rng = np.random.default_rng(5)
    train = rng.integers(0, 256, (40, 3, 32, 32), dtype=np.uint8)
    train.reshape(-1)[:256] = np.arange(256, dtype=np.uint8)
    test = rng.integers(0, 256, (12, 3072), dtype=np.uint8)
    root = tmp_path_factory.mktemp("cifar")
    cifar10_data.write_cifar10_folder(str(root), train, rng.integers(0, 10, 40), test, rng.integers(0, 10, 12))
    return str(root)


@pytest.mark.parametrize("raw_data", [False, True])
def test_cifar10_uint8_normalized_on_the_device_equals_the_float_path(cifar, raw_data):
    floats = cifar10_data.load_cifar10(cifar, raw_data=raw_data, download=False)
    ev = load_dataset("cifar10", datapath=cifar, raw_data=raw_data, download=False)
    for split, want_x, want_y in ((ev.train, floats[0], floats[1]), (ev.test, floats[2], floats[3])):
        assert split.inputs.dtype == torch.uint8 and split.inputs.shape == want_x.shape
        assert bt.nbytes(split.inputs) * 4 == bt.nbytes(want_x)  # a quarter of the memory
        assert torch.equal(split.transform(split.inputs), want_x)
        assert torch.equal(split.targets, want_y)
        # Batch by batch, as the evaluation device sees them, channels_last or not.
        for channels_last in (False, True):
            placed = place(split, CPU, mode="memory", channels_last=channels_last)
            got = torch.cat([x for x, _ in placed.batches(16)])
            assert got.dtype == torch.float32 and torch.equal(got, want_x)
    assert ev.info["transform"] == repr(cifar10_data.DeviceNormalize.cifar10(raw_data))


def test_cifar10_uint8_evaluates_as_the_float_path(cifar):
    from loss_landscape.models.cifar10 import create_model as cifar_model

    torch.manual_seed(0)
    model = cifar_model("resnet20").eval()
    x, y, _, _ = cifar10_data.load_cifar10(cifar, download=False)
    want = values(model, DeviceSplit(x, y), batch_size=16)
    ev = load_dataset("cifar10", datapath=cifar, download=False)
    assert values(model, place(ev.train, CPU, mode="memory"), batch_size=16) == want
    assert values(model, place(ev.train, CPU, mode="stream"), batch_size=16) == want


def test_device_normalize_pickles_and_refuses_floats():
    t = cifar10_data.DeviceNormalize.cifar10()
    t(torch.zeros(1, 3, 2, 2, dtype=torch.uint8))  # caches its constants
    again = pickle.loads(pickle.dumps(t))
    assert again == t and again._constants == {} and "mean=" in repr(again)
    assert repr(cifar10_data.DeviceNormalize()) == "DeviceNormalize(x / 255)"
    with pytest.raises(DataError, match="takes uint8 images"):
        t(torch.zeros(1, 3, 2, 2))
    with pytest.raises(ValueError, match="both"):
        cifar10_data.DeviceNormalize(mean=(0.5,))


def test_docstring_examples_run():
    import doctest

    from loss_landscape import streaming

    for module in (streaming, cifar10_data):
        result = doctest.testmod(module, verbose=False, report=True)
        assert result.attempted > 0 and result.failed == 0, (module.__name__, result)
