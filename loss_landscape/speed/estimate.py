"""Estimates with error bars from part of the data: a grid point stops evaluating once its mean loss is known
to a relative tolerance (``--tolerance REL``).

The split is put in a seeded random order once (`shuffled`); every point then evaluates its batches in that
order, the same at every point, so neighbouring points share their sampling noise and the surface stays smooth.
After each batch the standard error of the mean loss so far is checked, and the point stops after the first
batch where ``se <= tolerance * |mean|`` with at least `min_samples` rows seen, or when all data are used.

The mean loss is a ratio estimator over samples (rows): row i contributes ``y_i = sum(values * weights)`` and
``w_i = sum(weights)`` over its elements (one value and weight 1 for a classification loss; its tokens for
``token_crossentropy``, ignored tokens weighing 0), and ``mean = sum(y) / sum(w)``. Its standard error, with the
finite-population correction for drawing n of the N rows without replacement, is

    se^2 = sum_i (y_i - mean * w_i)^2 / (n (n - 1) wbar^2) * (1 - n / N),     wbar = sum(w) / n,

which is ``sum w_i^2 (v_i - mean)^2 / (n (n-1) wbar^2) (1 - n/N)`` with ``v_i = y_i / w_i``, and stays defined
for rows whose targets are all ignored. A loss given as a batch mean (``model_loss``) has one value per batch:
there the units are batches (n of the N batches). Tokens of one sequence are not treated as independent.

The sums are float64 on the device; the check costs one synchronization per batch once `min_samples` rows have
been seen (the exact path syncs once per point). The loss is computed once per batch and read by both the
criterion's sums and the per-row sums. Batches are the exact path's batches of the shuffled split, so a point that
uses all the data gives `evaluate_values` of the shuffled split to the bit, and that of the split in its own order
to float rounding.

Example:
    >>> net = nn.Linear(4, 3)
    >>> split = shuffled(DeviceSplit(torch.randn(200, 4), torch.randint(0, 3, (200,))), seed=0)
    >>> est = estimate_values(net, split, Criterion.of("crossentropy"), batch_size=20, tolerance=0.05)
    >>> sorted(est.values), est.samples <= 200, est.loss_stderr >= 0
    (['acc', 'loss'], True, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import nn

from loss_landscape import batches as bt
from loss_landscape.errors import DataError, EvaluationError
from loss_landscape.evaluation import Criterion, DeviceSplit, evaluate_values, precision_context
from loss_landscape.streaming import DatasetSplit, StreamSplit

__all__ = ["Estimate", "estimate_values", "shuffled", "permutation"]


@dataclass(frozen=True)
class Estimate:
    """The quantities of one point from the first `samples` rows of a shuffled split.

    Attributes:
        values: {quantity: value} as `evaluate_values` returns them, over the rows used.
        loss_stderr: the standard error of ``values["loss"]`` (0.0 when all data were used).
        samples: the rows used (forward passes of one sample).
    """

    values: dict[str, float]
    loss_stderr: float
    samples: int


def permutation(n: int, seed: int) -> torch.Tensor:
    """The row order of `shuffled`: ``numpy.random.default_rng(seed).permutation(n)`` as int64.

    Example:
        >>> permutation(5, 0).tolist()
        [2, 4, 3, 0, 1]
    """
    return torch.from_numpy(np.random.default_rng(seed).permutation(n).astype(np.int64))


def shuffled(split: Any, seed: int) -> Any:
    """`split` with its rows in a seeded random order (`permutation`), the permutation applied once.

    A `DeviceSplit` (inputs a tensor, a tuple or a dict of tensors) gives a `DeviceSplit` of the permuted rows (a
    copy on the device); a `StreamSplit` gives a `StreamSplit` of the same source read in the permuted order
    (a Dataset is then read by random access; tensors held on the host are copied once, in the new order); a
    `DatasetSplit` or a `data.Split` gives its ``rows(order)``.

    Example:
        >>> s = shuffled(DeviceSplit(torch.arange(5.0).reshape(5, 1), torch.arange(5)), seed=0)
        >>> s.targets.tolist()
        [2, 4, 3, 0, 1]
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise DataError(f"the shuffle seed must be an integer, found {seed!r}")
    order = permutation(len(split), int(seed))
    if isinstance(split, DeviceSplit):
        index = order.to(split.device)
        targets = None if split.targets is None else split.targets[index.to(split.targets.device)]
        return DeviceSplit(bt.take_rows(split.inputs, index), targets, split.transform)
    if isinstance(split, StreamSplit):
        return StreamSplit(split.split.rows(order), split.device, workers=split.workers,
                           channels_last=split.channels_last)
    if isinstance(split, DatasetSplit) or callable(getattr(split, "rows", None)):
        return split.rows(order)
    raise DataError(f"cannot shuffle a {type(split).__name__}: expected a DeviceSplit, a StreamSplit, a "
                    f"DatasetSplit or a data.Split")


class _RowSums:
    """Running float64 sums on the device for the ratio estimator's standard error.

    Rows are shifted by a constant c (the first batch's mean) before squaring, ``u_i = y_i - c w_i``, so the
    residual ``sum (y_i - mean w_i)^2 = sum u^2 - 2 d sum(w u) + d^2 sum(w^2)`` (d = mean - c) does not cancel
    catastrophically. The sums are the Gram matrix of the rows (1, w, u), one matrix product per batch.
    """

    def __init__(self) -> None:
        self.n = 0
        self.c: Optional[torch.Tensor] = None
        self._c: Optional[float] = None  # c on the host, read once
        self.gram: Optional[torch.Tensor] = None  # of (1, w, u): [[n, Sw, Su], [., Sww, Swu], [., ., Suu]]

    def add(self, y: torch.Tensor, w: torch.Tensor) -> None:
        if self.c is None:
            self.c = torch.nan_to_num(y.sum() / w.sum(), nan=0.0, posinf=0.0, neginf=0.0)
        m = torch.stack([torch.ones_like(w), w, torch.addcmul(y, w, self.c, value=-1.0)])
        part = m @ m.T
        self.gram = part if self.gram is None else self.gram.add_(part)
        self.n += len(y)

    def mean_and_se(self, population: int) -> tuple[float, float]:
        """(mean, standard error) on the host (one synchronization); se is NaN below 2 units or with no weight."""
        (_, sw, su), (_, sww, swu), (_, _, suu) = self.gram.tolist()
        if self._c is None:
            self._c = float(self.c)
        c, n = self._c, self.n
        if n < 2 or sw == 0:
            return math.nan, math.nan
        d = su / sw
        residual = max(0.0, suu - 2 * d * swu + d * d * sww)
        wbar = sw / n
        fpc = max(0.0, 1.0 - n / population)
        return c + d, math.sqrt(residual / (n * (n - 1) * wbar * wbar) * fpc)


def _row_totals(values: torch.Tensor, weights: torch.Tensor, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(y_i, w_i) per unit, float64: per row when the loss gives one value (or more) per row, else the batch's
    single (value, weight) of a batch-mean loss."""
    v, w = values.double(), weights.double()
    units = rows if v.shape[0] == rows else v.shape[0]
    return (v * w).reshape(units, -1).sum(1), w.reshape(units, -1).sum(1)


@torch.no_grad()
def estimate_values(model: Callable[..., Any] | nn.Module, split: Any, criterion: Criterion, *, batch_size: int,
                    precision: str = "fp32", tolerance: float, min_samples: Optional[int] = None) -> Estimate:
    """The quantities of `model` in eval mode from the first batches of `split`, stopping once the standard error of
    the mean loss is at most `tolerance` times the mean (see the module's docstring).

    Args:
        model: the model (a Module, put in eval mode) or a callable of the inputs.
        split: the evaluation data in the order to use them, normally `shuffled` once and reused at every point.
        criterion: the loss and metrics.
        batch_size: rows per forward pass (the batches are `evaluate_values`'s).
        precision: ``fp32``, ``tf32`` or ``bf16`` (`precision_context`).
        tolerance: the relative standard error to reach; <= 0: exact (all data, `evaluate_values` itself).
        min_samples: the fewest rows before stopping; None: 2 * batch_size. At least 2.

    Returns:
        An `Estimate`; ``loss_stderr`` is 0.0 when every row was used.

    Example:
        >>> d = DeviceSplit(torch.randn(50, 2), torch.randint(0, 3, (50,)))
        >>> e = estimate_values(nn.Linear(2, 3), d, Criterion.of("crossentropy"), batch_size=8, tolerance=0.0)
        >>> e.samples, e.loss_stderr
        (50, 0.0)
    """
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or math.isnan(tolerance):
        raise EvaluationError(f"tolerance must be a number (relative standard error; <= 0 for exact), found "
                              f"{tolerance!r}")
    if batch_size < 1:
        raise EvaluationError(f"batch size must be >= 1, got {batch_size}")
    min_samples = 2 * batch_size if min_samples is None else min_samples
    if isinstance(min_samples, bool) or not isinstance(min_samples, (int, np.integer)) or min_samples < 2:
        raise EvaluationError(f"min_samples must be an integer >= 2 (a standard error needs two samples), found "
                              f"{min_samples!r}")
    total = len(split)
    if tolerance <= 0:
        return Estimate(evaluate_values(model, split, criterion, batch_size=batch_size, precision=precision), 0.0,
                        total)
    if total == 0:
        raise EvaluationError("the evaluation set is empty")
    if isinstance(model, nn.Module):
        model.eval()
    totals: dict[str, list[torch.Tensor]] = {}
    rows_seen, units = 0, _RowSums()
    population = total
    se = None
    # The loss is computed once per batch: the per-row sums and the criterion's batch sums both read it.
    raw: list[Any] = [None]
    once = Criterion(replace(criterion.loss, fn=lambda _outputs, _targets: raw[0]), criterion.metrics)
    with precision_context(precision, split.device):
        batches = split.batches(batch_size)
        try:
            for x, y in batches:
                rows = bt.rows(x)
                out = bt.call_model(model, x)
                raw[0] = criterion.loss.fn(out, y)
                values, weights = once.loss.per_sample(out, y, torch.float32, batch=rows)
                # The same sums, in the same order, as evaluate_values: all data give its values to the bit.
                for q, (s, w) in once.batch_sums(out, y, rows).items():
                    if q in totals:
                        totals[q][0] += s
                        totals[q][1] += w
                    else:
                        totals[q] = [s.clone(), w.clone()]
                if values.shape[0] != rows:  # one (value, weight) per batch: the units are batches
                    population = math.ceil(total / batch_size)
                units.add(*_row_totals(values, weights, rows))
                rows_seen += rows
                if rows_seen >= min_samples and rows_seen < total:
                    mean, se = units.mean_and_se(population)  # one synchronization per batch
                    if se <= tolerance * abs(mean):
                        break
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()  # a stream's prefetched batch and its reader are let go now
    flat = torch.stack([t for pair in totals.values() for t in pair]).tolist()
    sums = {q: (flat[2 * i], flat[2 * i + 1]) for i, q in enumerate(totals)}
    stderr = 0.0 if rows_seen >= total else float(se)
    return Estimate(criterion.finish(sums), stderr, rows_seen)
