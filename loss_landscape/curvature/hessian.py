"""Hessian-vector products of the mean loss of a model over a whole evaluation set, in float64 sums and
strict float32 products (the operator every curvature solver takes).

The loss is any of `loss_landscape.losses` (built-in or ``pkg.module:fn``): per batch it gives values and
weights (one per sample, or one per token for a language model), and the function differentiated is the
weighted mean over the whole set, L(w) = sum_i weight_i * value_i(w) / W with W = sum_i weight_i, the quantity
`evaluation.evaluate_values` reports as the loss. The weights are constants (masks, counts), and W is counted
once when the operator is made.
"""

from __future__ import annotations

import copy
from typing import Any, Iterator, Optional, Union

import numpy as np
import scipy.sparse.linalg as spla
import torch
from torch import nn

from loss_landscape import batches as bt
from loss_landscape.evaluation import default_batch_size, precision_context
from loss_landscape.errors import CurvatureError, EvaluationError
from loss_landscape.losses import IGNORE_INDEX, resolve_loss


PARAM_FILTERS = ("all", "dim>1")
HESSIAN_PRECISIONS = ("fp32", "tf32")
_ONE_PER_SAMPLE = ("crossentropy", "mse")  # weight 1 per sample: W is the sample count


def hessian_data(split: Any, device: torch.device | str = "cpu", *, channels_last: bool = False) -> Any:
    """An evaluation split held on `device` for the many passes of Hessian-vector products: a `data.Split` (or a
    ``streaming.DatasetSplit``, read once) becomes an `evaluation.DeviceSplit` with its transform; a split already
    on a device (a DeviceSplit, a StreamSplit) is returned as it is."""
    from loss_landscape import streaming  # imports the data layer

    if hasattr(split, "batches"):
        return split
    return streaming.place(split, torch.device(device), mode="memory", channels_last=channels_last)


class HessianOperator:
    """Products with the Hessian of the (weighted) mean loss of `model` (eval mode) over `data`.

    Args:
        model: the network; it is put in eval mode and moved to the data's device. With a `dtype`
            other than its own, a converted copy is differentiated and `model` is left as it is. Its
            inputs may be a tensor of any dtype (token ids), a tuple (``model(*x)``) or a dict (``model(**x)``).
        data: the evaluation set on its device: an `evaluation.DeviceSplit` (see `hessian_data`), or anything
            with ``len``, ``device`` and ``batches(batch_size)`` yielding (inputs, targets) in a fixed order.
        loss_name: a loss of `loss_landscape.losses` (``crossentropy``, ``token_crossentropy``, ``model_loss``,
            ..., or ``pkg.module:fn``).
        batch_size: samples per forward pass (memory only: the result does not depend on it);
            default `evaluation.default_batch_size`.
        params: ``"all"`` or ``"dim>1"`` (only weights with more than one dimension).
        dtype: the dtype of the forward and backward passes (float32, or float64 for reference values); floating
            inputs are converted to it, integer inputs (token ids) are not.
        precision: ``fp32`` (default: strict IEEE float32, TF32 off for cuDNN convolutions and matmuls while
            a product runs, whatever the global flags say) or ``tf32`` (allowed on the GPU: faster, about 3
            significant digits per operation). bf16 is refused: Lanczos needs products that are linear and
            symmetric to many more digits than bfloat16 keeps. See `evaluation.precision_context`.
        total_weight: W, the sum of the loss's weights over `data`, when the caller knows it (it does not depend
            on the parameters); None counts it: the sample count for crossentropy and mse, the tokens not
            ignored for token_crossentropy, otherwise one forward pass without gradients.

    Attributes:
        params: the selected ``nn.Parameter`` objects, in ``model.parameters()`` order.
        param_names: their names.
        dim: total number of entries of the selected parameters (the size of H).
        device: where products are computed.
        loss: the resolved `losses.Loss`.
        n: samples in `data`; total_weight: W (samples or tokens).
        matvecs: Hessian-vector products computed so far (a counter callers may read or reset).

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3))
        >>> from loss_landscape.evaluation import DeviceSplit
        >>> op = HessianOperator(net, DeviceSplit(torch.randn(20, 4), torch.randint(0, 3, (20,))))
        >>> op.matvec(torch.ones(op.dim)).shape == (op.dim,)
        True
    """

    def __init__(self, model: nn.Module, data: Any, *, loss_name: str = "crossentropy",
                 batch_size: Optional[int] = None, params: str = "all", dtype: torch.dtype = torch.float32,
                 precision: str = "fp32", total_weight: Optional[float] = None):
        try:
            self.loss = resolve_loss(loss_name)
        except EvaluationError as e:
            raise CurvatureError(str(e)) from None
        if params not in PARAM_FILTERS:
            raise CurvatureError(f"unknown parameter filter {params!r}: expected one of {', '.join(PARAM_FILTERS)}")
        if dtype not in (torch.float32, torch.float64):
            raise CurvatureError(f"unsupported dtype {dtype}: expected torch.float32 or torch.float64")
        if precision not in HESSIAN_PRECISIONS:
            raise CurvatureError(f"unsupported precision {precision!r} for Hessian-vector products: expected "
                                 f"{' or '.join(HESSIAN_PRECISIONS)}")
        if not hasattr(data, "batches"):
            raise CurvatureError(f"the Hessian's data is a {type(data).__name__}: expected a split on its device "
                                 f"(evaluation.DeviceSplit; curvature.hessian.hessian_data(split, device) makes one)")
        self.n = len(data)
        if self.n == 0:
            raise CurvatureError("the evaluation set is empty: expected at least one sample")
        self.device = data.device
        self.batch_size = default_batch_size(self.device) if batch_size is None else int(batch_size)
        if self.batch_size < 1:
            raise CurvatureError(f"batch size must be >= 1, got {batch_size}")
        self.loss_name = self.loss.name
        self.params_filter = params
        self.dtype = dtype
        self.precision = precision
        own = next(model.parameters(), None)
        if own is None:
            raise CurvatureError("the model has no parameters: expected at least one")
        if own.dtype != dtype:
            model = copy.deepcopy(model).to(dtype)
        self.model = model.to(self.device).eval()
        named = [(n, p) for n, p in self.model.named_parameters() if params == "all" or p.dim() > 1]
        if not named:
            raise CurvatureError(f"parameter filter {params!r} selects no parameter: expected at least one")
        self.param_names = [n for n, _ in named]
        self.params = [p for _, p in named]
        for p in self.params:
            p.requires_grad_(True)
        self.dim = int(sum(p.numel() for p in self.params))
        self._data = data
        self.matvecs = 0
        self.total_weight = float(total_weight) if total_weight is not None else self._count_weight()
        if not self.total_weight > 0:
            raise CurvatureError(f"loss {self.loss_name} weighs no sample or token of the evaluation set (total "
                                 f"weight {self.total_weight:g}; all targets ignored?)")

    def _batches(self) -> Iterator[tuple[Any, Optional[torch.Tensor]]]:
        dtype = self.dtype

        def cast(t: torch.Tensor) -> torch.Tensor:
            return t.to(dtype) if t.is_floating_point() and t.dtype != dtype else t

        for x, y in self._data.batches(self.batch_size):
            yield bt.map_tensors(cast, x), y

    def _values(self, x: Any, y: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.loss.per_sample(bt.call_model(self.model, x), y, self.dtype, batch=bt.rows(x))

    def _batch_loss(self, x: Any, y: Optional[torch.Tensor]) -> torch.Tensor:
        """This batch's share of L: sum of weight * value over the batch, divided by the whole set's W."""
        values, weights = self._values(x, y)
        return (values * weights.detach()).sum() / self.total_weight

    def _count_weight(self) -> float:
        if self.loss_name in _ONE_PER_SAMPLE:
            return float(self.n)
        targets = getattr(self._data, "targets", None)
        if self.loss_name == "token_crossentropy" and isinstance(targets, torch.Tensor) and len(targets) == self.n:
            return float((targets != IGNORE_INDEX).sum())
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        with torch.no_grad(), precision_context(self.precision, self.device):
            for x, y in self._batches():
                total += self._values(x, y)[1].double().sum()
        return float(total)

    def unflatten(self, v: torch.Tensor) -> list[torch.Tensor]:
        """Views of a flat vector of length `dim`, shaped like `params` (same dtype and device as `v`)."""
        if v.dim() != 1 or v.numel() != self.dim:
            raise CurvatureError(f"expected a flat vector of length {self.dim}, found shape {tuple(v.shape)}")
        out, start = [], 0
        for p in self.params:
            out.append(v[start:start + p.numel()].view_as(p))
            start += p.numel()
        return out

    def _flat64(self, parts: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([t.reshape(-1) for t in parts])

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """H v for a flat vector `v` of length `dim`; returned in `v`'s dtype and on `v`'s device.

        Example:
            >>> hv = op.matvec(torch.randn(op.dim))  # doctest: +SKIP
        """
        vs = self.unflatten(v.detach().to(device=self.device, dtype=self.dtype))
        acc = [torch.zeros(p.shape, dtype=torch.float64, device=self.device) for p in self.params]
        with torch.enable_grad(), precision_context(self.precision, self.device):
            for x, y in self._batches():
                loss = self._batch_loss(x, y)
                grads = torch.autograd.grad(loss, self.params, create_graph=True)
                dot = sum((g * u).sum() for g, u in zip(grads, vs))
                for a, h in zip(acc, torch.autograd.grad(dot, self.params)):
                    a += h
        self.matvecs += 1
        return self._flat64(acc).to(device=v.device, dtype=v.dtype)

    def value_and_gradient(self) -> tuple[float, torch.Tensor]:
        """The (weighted) mean loss and its flat gradient (float64, on `device`)."""
        acc = [torch.zeros(p.shape, dtype=torch.float64, device=self.device) for p in self.params]
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        with torch.enable_grad(), precision_context(self.precision, self.device):
            for x, y in self._batches():
                loss = self._batch_loss(x, y)
                for a, g in zip(acc, torch.autograd.grad(loss, self.params)):
                    a += g
                total += loss.detach()
        return float(total), self._flat64(acc)

    def gradient(self) -> torch.Tensor:
        """The flat gradient of the mean loss (float64, on `device`)."""
        return self.value_and_gradient()[1]

    def as_linear_operator(self) -> spla.LinearOperator:
        """A scipy ``LinearOperator`` of shape (dim, dim) taking and returning float64 numpy vectors."""
        def mv(x):
            v = torch.from_numpy(np.ascontiguousarray(np.asarray(x, dtype=np.float64).reshape(-1)))
            return self.matvec(v).numpy()
        return spla.LinearOperator((self.dim, self.dim), matvec=mv, rmatvec=mv, dtype=np.float64)


Operator = Union[HessianOperator, spla.LinearOperator, np.ndarray]
