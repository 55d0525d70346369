"""Estimates from part of the data (`loss_landscape.speed.estimate`), checked against independent computations:
`evaluate_values` of the whole set, float64 numpy standard errors of known per-sample losses, numpy's
permutation, and the coverage of 3-standard-error intervals over a 2D grid of a trained digits model."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
import torch
from torch import nn

from loss_landscape.data import Split
from loss_landscape.directions import (DirectionSpec, Directions, Perturber, create_random_direction,
                                       direction_generator)
from loss_landscape.errors import DataError, EvaluationError
from loss_landscape.evaluation import Criterion, DeviceSplit, evaluate_values
from loss_landscape.models import digits as embedded
from loss_landscape.params import ParamVector
from loss_landscape.speed import estimate
from loss_landscape.speed.estimate import Estimate, estimate_values, shuffled
from loss_landscape.streaming import DatasetSplit, StreamSplit


@pytest.fixture(scope="module")
def digits_xy():
    from sklearn.datasets import load_digits
    b = load_digits()
    return torch.from_numpy(b.images).float().unsqueeze(1) / 16, torch.from_numpy(b.target.astype(np.int64))


def identity(x):
    return x


# ---------------------------------------------------------------------------------------------------------------
# (a) exact: tolerance 0, or a tolerance never reached
# ---------------------------------------------------------------------------------------------------------------

def test_tolerance_zero_is_evaluate_values(digits_xy):
    x, y = digits_xy
    torch.manual_seed(0)
    net = embedded.create_model("digits_cnn").eval()
    split = DeviceSplit(x[:300], y[:300])
    crit = Criterion.of("crossentropy", ["top5"])
    plain = evaluate_values(net, split, crit, batch_size=32)
    for tol in (0.0, -1.0):
        got = estimate_values(net, split, crit, batch_size=32, tolerance=tol)
        assert isinstance(got, Estimate)
        assert got.values == plain and got.loss_stderr == 0.0 and got.samples == 300


def test_tolerance_never_reached_uses_all_data_and_gives_the_exact_values(digits_xy):
    x, y = digits_xy
    torch.manual_seed(0)
    net = embedded.create_model("digits_cnn").eval()
    split = DeviceSplit(x[:300], y[:300])  # 300 = 9 * 32 + 12: an uneven last batch
    crit = Criterion.of("crossentropy", ["top5", "perplexity"])
    s = shuffled(split, seed=4)
    got = estimate_values(net, s, crit, batch_size=32, tolerance=1e-12, min_samples=2)
    assert got.samples == 300 and got.loss_stderr == 0.0
    assert got.values == evaluate_values(net, s, crit, batch_size=32)  # the same batches: to the bit
    unshuffled = evaluate_values(net, split, crit, batch_size=32)
    assert got.values.keys() == unshuffled.keys()
    for k, v in unshuffled.items():
        assert got.values[k] == pytest.approx(v, rel=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# (c) the standard error and the stopping rule against float64 numpy
# ---------------------------------------------------------------------------------------------------------------

def numpy_se(y: np.ndarray, w: np.ndarray, population: int) -> tuple[float, float]:
    """Ratio estimator of sum(y)/sum(w) and its standard error with the finite-population correction, written
    as the issue states it: sum(w_i^2 (v_i - mean)^2) / (n (n-1) wbar^2) * (1 - n/N), v_i = y_i / w_i."""
    n = len(y)
    mean = y.sum() / w.sum()
    keep = w > 0  # a row of weight 0 adds nothing to the sum
    v = y[keep] / w[keep]
    se2 = np.sum(w[keep] ** 2 * (v - mean) ** 2) / (n * (n - 1) * w.mean() ** 2) * (1 - n / population)
    return mean, math.sqrt(se2)


def numpy_crossentropy(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    m = z.max(axis=-1, keepdims=True)
    lse = np.log(np.exp(z - m).sum(axis=-1)) + m[..., 0]
    return lse - np.take_along_axis(z, y[..., None], axis=-1)[..., 0]


def test_standard_error_and_stopping_point_match_numpy():
    g = torch.Generator().manual_seed(0)
    n, bs = 1000, 25
    logits = 3 * torch.randn(n, 5, generator=g)
    y = torch.randint(0, 5, (n,), generator=g)
    per = numpy_crossentropy(logits.numpy(), y.numpy())
    ones = np.ones(n)
    # numpy's relative standard error after each batch; tolerance between two values so the rule picks one batch
    rel = {k: numpy_se(per[:k], ones[:k], n) for k in range(bs, n, bs)}
    rel = {k: se / abs(m) for k, (m, se) in rel.items()}
    tol = 0.5 * (rel[400] + rel[425])
    expected = next(k for k in sorted(rel) if k >= 100 and rel[k] <= tol)
    assert 100 < expected < n
    got = estimate_values(identity, DeviceSplit(logits, y), Criterion.of("crossentropy"), batch_size=bs,
                          tolerance=tol, min_samples=100)
    assert got.samples == expected
    mean, se = numpy_se(per[:expected], ones[:expected], n)
    assert got.values["loss"] == pytest.approx(mean, rel=1e-6)
    assert got.loss_stderr == pytest.approx(se, rel=1e-5)
    acc = 100 * np.mean(logits.numpy()[:expected].argmax(1) == y.numpy()[:expected])
    assert got.values["acc"] == pytest.approx(acc, abs=1e-9)


def test_min_samples_holds_the_stop_back():
    g = torch.Generator().manual_seed(1)
    logits, y = torch.randn(400, 4, generator=g), torch.randint(0, 4, (400,), generator=g)
    split, crit = DeviceSplit(logits, y), Criterion.of("crossentropy")
    # a huge tolerance stops at the first batch allowed to
    assert estimate_values(identity, split, crit, batch_size=10, tolerance=1e9, min_samples=2).samples == 10
    assert estimate_values(identity, split, crit, batch_size=10, tolerance=1e9, min_samples=95).samples == 100
    assert estimate_values(identity, split, crit, batch_size=10, tolerance=1e9, min_samples=10).samples == 10
    assert estimate_values(identity, split, crit, batch_size=10, tolerance=1e9, min_samples=11).samples == 20
    assert estimate_values(identity, split, crit, batch_size=10, tolerance=1e9).samples == 20  # 2 * batch_size


# ---------------------------------------------------------------------------------------------------------------
# (e) token losses with ignored targets
# ---------------------------------------------------------------------------------------------------------------

def test_token_losses_with_ignored_targets_give_numpy_standard_error():
    g = torch.Generator().manual_seed(2)
    n, t, v, bs = 300, 7, 11, 16
    logits = torch.randn(n, t, v, generator=g)
    y = torch.randint(0, v, (n, t), generator=g)
    y[torch.rand(n, t, generator=g) < 0.4] = -100
    y[::9] = -100  # some rows have no target at all
    crit = Criterion.of("token_crossentropy")
    got = estimate_values(identity, DeviceSplit(logits, y), crit, batch_size=bs, tolerance=1e9, min_samples=64)
    assert got.samples == 64 and math.isfinite(got.loss_stderr) and got.loss_stderr > 0
    yn = y.numpy()[:64]
    w = (yn != -100).astype(np.float64)
    tok = numpy_crossentropy(logits.numpy()[:64], np.where(yn == -100, 0, yn)) * w
    mean, se = numpy_se(tok.sum(1), w.sum(1), n)  # rows (sequences) are the units, not tokens
    assert got.values["loss"] == pytest.approx(mean, rel=1e-6)
    assert got.loss_stderr == pytest.approx(se, rel=1e-5)
    full = estimate_values(identity, DeviceSplit(logits, y), crit, batch_size=bs, tolerance=1e-12)
    assert full.samples == n and full.loss_stderr == 0.0
    assert full.values == evaluate_values(identity, DeviceSplit(logits, y), crit, batch_size=bs)


def test_batch_mean_loss_counts_batches_as_units():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(200, 3, generator=g)

    def model(x):  # a model that returns its batch's mean loss
        return {"loss": (x ** 2).sum(1).mean()}

    got = estimate_values(model, DeviceSplit(x, None), Criterion.of("model_loss"), batch_size=20, tolerance=1e9,
                          min_samples=60)
    per_batch = (x.double() ** 2).sum(1).reshape(10, 20).mean(1).numpy()
    mean, se = numpy_se(20 * per_batch[:3], np.full(3, 20.0), 10)
    assert got.samples == 60
    assert got.values["loss"] == pytest.approx(mean, rel=1e-6)
    assert got.loss_stderr == pytest.approx(se, rel=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# (d) the order: seeded, numpy's permutation, for every kind of split
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["tensor", "tuple", "dict"])
def test_shuffled_device_split_is_numpys_permutation(kind):
    a, b = torch.arange(40.0).reshape(20, 2), torch.arange(20) * 10
    inputs = {"tensor": a, "tuple": (a, b), "dict": {"a": a, "b": b}}[kind]
    split = DeviceSplit(inputs, torch.arange(20), transform=None)
    perm = torch.from_numpy(np.random.default_rng(7).permutation(20))
    s1, s2, s3 = shuffled(split, 7), shuffled(split, 7), shuffled(split, 8)
    assert torch.equal(s1.targets, perm)
    assert torch.equal(s1.targets, s2.targets) and not torch.equal(s1.targets, s3.targets)
    first = {"tensor": lambda x: x, "tuple": lambda x: x[0], "dict": lambda x: x["a"]}[kind]
    assert torch.equal(first(s1.inputs), a[perm]) and torch.equal(first(s2.inputs), a[perm])
    if kind != "tensor":
        second = s1.inputs[1] if kind == "tuple" else s1.inputs["b"]
        assert torch.equal(second, b[perm])
    assert torch.equal(split.targets, torch.arange(20))  # the original is left as it was


def _all_batches(split, bs=6):
    xs, ys = zip(*split.batches(bs))
    return torch.cat(xs), torch.cat(ys)


def test_shuffled_streaming_splits_read_the_same_order():
    x, y = torch.randn(23, 3), torch.arange(23)
    perm = torch.from_numpy(np.random.default_rng(5).permutation(23))
    dataset = torch.utils.data.TensorDataset(x, y)
    cpu = torch.device("cpu")
    for split in (StreamSplit(DatasetSplit.of(dataset, "ds"), cpu), StreamSplit(Split(x, y), cpu)):
        s = shuffled(split, 5)
        assert isinstance(s, StreamSplit)
        xs, ys = _all_batches(s)
        assert torch.equal(ys, perm) and torch.equal(xs, x[perm])
    ds = shuffled(DatasetSplit.of(dataset, "ds"), 5)
    assert [int(ds.dataset[i][1]) for i in range(23)] == perm.tolist()
    assert torch.equal(shuffled(Split(x, y), 5).targets, perm)


def test_streamed_estimate_equals_the_in_memory_one(digits_xy):
    x, y = digits_xy
    torch.manual_seed(0)
    net = embedded.create_model("digits_mlp").eval()
    crit = Criterion.of("crossentropy")
    mem = shuffled(DeviceSplit(x[:500], y[:500]), 3)
    stream = shuffled(StreamSplit(DatasetSplit.of(torch.utils.data.TensorDataset(x[:500], y[:500]), "ds"),
                                  torch.device("cpu"), workers=1), 3)
    a = estimate_values(net, mem, crit, batch_size=20, tolerance=0.1)
    assert a.samples < 500
    for _ in range(2):  # a stopped pass leaves the persistent reader ready for the next point
        b = estimate_values(net, stream, crit, batch_size=20, tolerance=0.1)
        assert (b.values, b.loss_stderr, b.samples) == (a.values, a.loss_stderr, a.samples)


def test_bad_arguments_are_named():
    split = DeviceSplit(torch.randn(10, 3), torch.randint(0, 3, (10,)))
    crit = Criterion.of("crossentropy")
    with pytest.raises(EvaluationError, match="tolerance must be a number"):
        estimate_values(identity, split, crit, batch_size=4, tolerance=float("nan"))
    with pytest.raises(EvaluationError, match="min_samples must be an integer >= 2"):
        estimate_values(identity, split, crit, batch_size=4, tolerance=0.1, min_samples=1)
    with pytest.raises(DataError, match="cannot shuffle a list"):
        shuffled([1, 2, 3], 0)
    with pytest.raises(DataError, match="seed must be an integer"):
        shuffled(split, 0.5)


# ---------------------------------------------------------------------------------------------------------------
# (b) coverage over a 2D grid
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def grid_case(digits_xy):
    """A digits MLP trained briefly, 7x7 points of a random plane, a set of 17,970 rows (the 1,797 digits ten
    times with pixel noise), and the exact losses from the plain `evaluate_values` of the moved model."""
    x, y = digits_xy
    g = torch.Generator().manual_seed(1)
    big = torch.cat([x + 0.15 * torch.randn(x.shape, generator=g) for _ in range(10)])
    split = DeviceSplit(big, y.repeat(10))
    torch.manual_seed(0)
    net = embedded.create_model("digits_mlp")
    embedded.train(net, x, y, epochs=3, seed=0)
    w = ParamVector.from_model(net, "weights")
    dirs = Directions(create_random_direction(w, generator=direction_generator(0, 0)),
                      create_random_direction(w, generator=direction_generator(0, 1)), DirectionSpec())
    mover = Perturber(net, dirs, "weights")
    coords = [(a, b) for a in np.linspace(-1, 1, 7) for b in np.linspace(-1, 1, 7)]
    crit = Criterion.of("crossentropy")
    exact = []
    for c in coords:
        mover.set_point_(c)
        exact.append(evaluate_values(net, split, crit, batch_size=64)["loss"])
    yield net, mover, split, crit, coords, np.array(exact)
    mover.restore_()


@pytest.mark.parametrize("tol", [0.05, 0.01])
@pytest.mark.parametrize("seed", [0, 1])
def test_three_standard_errors_cover_the_exact_loss(grid_case, tol, seed):
    net, mover, split, crit, coords, exact = grid_case
    assert exact.max() > 3 * exact.min()  # a plane with real variation
    s = shuffled(split, seed)
    est, se, used = [], [], []
    for c in coords:
        mover.set_point_(c)
        e = estimate_values(net, s, crit, batch_size=64, tolerance=tol)
        est.append(e.values["loss"])
        se.append(e.loss_stderr)
        used.append(e.samples)
    est, se, used = np.array(est), np.array(se), np.array(used)
    inside = np.abs(est - exact) <= 3 * se + 1e-9 * exact  # se 0 (all data): the exact value to rounding
    assert inside.mean() >= 0.95, (inside.mean(), np.abs(est - exact) / np.maximum(se, 1e-30))
    early = used < len(split)
    assert early.mean() >= 0.5  # most points did stop early: the check is not of the exact path
    assert np.all(se[early] <= tol * np.abs(est[early]) + 1e-15)
    assert np.all(se[~early] == 0)


def test_docstring_examples_run():
    globs = dict(nn=nn, torch=torch, DeviceSplit=DeviceSplit, Criterion=Criterion)
    result = doctest.testmod(estimate, extraglobs=globs)
    assert result.attempted > 0 and result.failed == 0
