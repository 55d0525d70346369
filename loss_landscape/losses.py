"""Losses by name: per-sample (or per-token) values and their weights, from a model's outputs and the targets.

A loss is evaluated batch by batch; the engine sums ``values * weights`` and ``weights`` in float64 over the
whole set, so the mean is weighted by samples or tokens and the batch size changes nothing but float rounding.

Built-in losses (`LOSSES`):

- ``crossentropy``: softmax cross-entropy of logits (B, C) against class indices (B,).
- ``mse``: the original tool's: softmax outputs against one-hot targets, mean over classes.
- ``regression_mse``, ``regression_l1``: squared or absolute error of outputs against float targets of the same
  number of values per sample, mean over a sample's values.
- ``token_crossentropy``: language models: logits (B, T, V) against token ids (B, T); targets equal to
  `IGNORE_INDEX` (-100, as in PyTorch and Hugging Face) are left out, and the mean is over the other tokens.
- ``model_loss``: the model computes its own loss (``outputs.loss`` of a ``transformers`` model, ``outputs["loss"]``,
  or the first item of a tuple); no targets are needed. A batch-mean loss counts once per sample of the batch.

``pkg.module:fn`` names a function of the user's: ``fn(outputs, targets)`` returns per-sample losses (B,) or
per-element losses (B, ...), each weighing 1, or a pair ``(values, weights)`` of the same shape.

Example:
    >>> loss = resolve_loss("crossentropy")
    >>> values, weights = loss.per_sample(torch.zeros(4, 3), torch.tensor([0, 1, 2, 0]))
    >>> round(float((values * weights).sum() / weights.sum()), 6)  # log(3)
    1.098612
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F

from loss_landscape._util import import_object, is_object_spec
from loss_landscape.errors import EvaluationError

IGNORE_INDEX = -100
CLASSIFICATION = ("crossentropy", "mse")
LOSSES = ("crossentropy", "mse", "regression_mse", "regression_l1", "token_crossentropy", "model_loss")

Pair = tuple[torch.Tensor, torch.Tensor]


def logits_of(outputs: Any, what: str = "the model") -> torch.Tensor:
    """The logits in a model's outputs: the tensor itself, ``outputs.logits``, ``outputs["logits"]`` or the first
    item of a tuple."""
    if isinstance(outputs, torch.Tensor):
        return outputs
    if isinstance(outputs, dict) and isinstance(outputs.get("logits"), torch.Tensor):
        return outputs["logits"]
    if isinstance(getattr(outputs, "logits", None), torch.Tensor):
        return outputs.logits
    if isinstance(outputs, (tuple, list)) and outputs and isinstance(outputs[0], torch.Tensor):
        return outputs[0]
    raise EvaluationError(f"{what} returned a {type(outputs).__name__}: expected a tensor of outputs, an object or "
                          f"dict with 'logits', or a tuple whose first item is a tensor")


def _need(targets: Optional[torch.Tensor], name: str) -> torch.Tensor:
    if targets is None:
        raise EvaluationError(f"loss {name} needs targets, but the data have none: use a dataset of (input, target) "
                              f"pairs, or --loss_name model_loss for a model that computes its own loss")
    return targets


def _classes(outputs: Any, targets: Optional[torch.Tensor], name: str) -> Pair:
    logits, y = logits_of(outputs), _need(targets, name)
    if logits.dim() != 2 or y.dim() != 1 or len(y) != len(logits) or y.is_floating_point():
        raise EvaluationError(f"loss {name}: expected logits (B, C) and class indices (B,), found outputs "
                              f"{tuple(logits.shape)} and targets {str(y.dtype).replace('torch.', '')} "
                              f"{tuple(y.shape)}: for tokens use token_crossentropy, for float targets "
                              f"regression_mse")
    return logits, y


def crossentropy(outputs: Any, targets: Optional[torch.Tensor]) -> torch.Tensor:
    logits, y = _classes(outputs, targets, "crossentropy")
    return F.cross_entropy(logits, y, reduction="none")


def original_mse(outputs: Any, targets: Optional[torch.Tensor]) -> torch.Tensor:
    logits, y = _classes(outputs, targets, "mse")
    probs = F.softmax(logits, dim=1)
    one_hot = F.one_hot(y, num_classes=logits.shape[1]).to(probs.dtype)
    return ((probs - one_hot) ** 2).mean(dim=1)


def _regression(outputs: Any, targets: Optional[torch.Tensor], name: str) -> tuple[torch.Tensor, torch.Tensor]:
    out, y = logits_of(outputs), _need(targets, name)
    if out.dim() == 0 or y.dim() == 0 or out.shape[0] != y.shape[0] or out[0].numel() != y[0].numel():
        raise EvaluationError(f"loss {name}: expected outputs and float targets with the same number of values per "
                              f"sample, found outputs {tuple(out.shape)} and targets {tuple(y.shape)}")
    return out.reshape(len(out), -1), y.reshape(len(y), -1).to(out.dtype)


def regression_mse(outputs: Any, targets: Optional[torch.Tensor]) -> torch.Tensor:
    out, y = _regression(outputs, targets, "regression_mse")
    return ((out - y) ** 2).mean(dim=1)


def regression_l1(outputs: Any, targets: Optional[torch.Tensor]) -> torch.Tensor:
    out, y = _regression(outputs, targets, "regression_l1")
    return (out - y).abs().mean(dim=1)


def _tokens(outputs: Any, targets: Optional[torch.Tensor], name: str) -> Pair:
    logits, y = logits_of(outputs), _need(targets, name)
    if logits.dim() != 3 or y.shape != logits.shape[:2] or y.is_floating_point():
        raise EvaluationError(f"loss {name}: expected logits (B, T, V) and token ids (B, T), found outputs "
                              f"{tuple(logits.shape)} and targets {str(y.dtype).replace('torch.', '')} "
                              f"{tuple(y.shape)}")
    return logits, y


def token_crossentropy(outputs: Any, targets: Optional[torch.Tensor]) -> Pair:
    logits, y = _tokens(outputs, targets, "token_crossentropy")
    values = F.cross_entropy(logits.transpose(1, 2), y, reduction="none", ignore_index=IGNORE_INDEX)
    return values, (y != IGNORE_INDEX).to(values.dtype)


def model_loss(outputs: Any, targets: Optional[torch.Tensor]) -> Pair:
    loss = None
    if isinstance(outputs, dict):
        loss = outputs.get("loss")
    elif isinstance(getattr(outputs, "loss", None), torch.Tensor):
        loss = outputs.loss
    elif isinstance(outputs, (tuple, list)) and outputs:
        loss = outputs[0]
    if not isinstance(loss, torch.Tensor) or not loss.is_floating_point():
        raise EvaluationError(f"loss model_loss: the model returned a {type(outputs).__name__} without a loss: "
                              f"expected outputs.loss (a transformers model given labels), a dict with 'loss', or a "
                              f"tuple whose first item is the loss")
    return BatchMean(loss)


@dataclass(frozen=True)
class BatchMean:
    """A loss given as the batch's mean (model_loss): `Loss.per_sample` weighs it by the batch's sample count."""

    loss: torch.Tensor


def hits(outputs: Any, targets: Optional[torch.Tensor], k: int = 1, what: str = "accuracy") -> Pair:
    """(1 where the target is among the `k` largest logits, weights) of classes (B, C) against (B,) or tokens
    (B, T, V) against (B, T), tokens equal to `IGNORE_INDEX` weighing 0; float64. `k` = 1 is the argmax."""
    logits, y = logits_of(outputs), targets
    if y is None:
        raise EvaluationError(f"{what} needs targets, but the data have none")
    if logits.dim() == 3 and y.shape == logits.shape[:2]:
        weights = (y != IGNORE_INDEX).to(torch.float64)
    elif logits.dim() == 2 and y.shape == logits.shape[:1]:
        weights = torch.ones(y.shape, dtype=torch.float64, device=y.device)
    else:
        raise EvaluationError(f"{what} expects logits (B, C) and class indices (B,), or (B, T, V) and (B, T), "
                              f"found {tuple(logits.shape)} and {tuple(y.shape)}")
    if k == 1:
        return (logits.argmax(dim=-1) == y).to(torch.float64), weights
    top = logits.topk(min(k, logits.shape[-1]), dim=-1).indices
    return (top == y.unsqueeze(-1)).any(dim=-1).to(torch.float64), weights


def _accuracy(outputs: Any, targets: Optional[torch.Tensor]) -> Pair:
    return hits(outputs, targets)


@dataclass(frozen=True)
class Loss:
    """A loss by the name it was asked by (built-in or ``pkg.module:fn``).

    Attributes:
        name: as asked; recorded in surface files and part of their job.
        fn: (outputs, targets) -> per-sample values, or (values, weights).
        accuracy: (outputs, targets) -> (correct 0/1, weights), stored as ``<split>_acc`` in percent; None where
            the loss has no accuracy (regression, the model's own loss, the user's losses).
        needs_targets: False for ``model_loss``.
    """

    name: str
    fn: Callable[[Any, Optional[torch.Tensor]], Any]
    accuracy: Optional[Callable[[Any, Optional[torch.Tensor]], Pair]] = None
    needs_targets: bool = True

    def per_sample(self, outputs: Any, targets: Optional[torch.Tensor], dtype: torch.dtype = torch.float32,
                   batch: int = 0) -> Pair:
        """(values, weights) of one batch, both of `dtype`, same shape; `batch` (its sample count) weighs a
        batch-mean loss."""
        got = self.fn(outputs, targets)
        if isinstance(got, BatchMean):
            value = got.loss.to(dtype)
            if value.dim() == 1 and batch and len(value) == batch:
                return value, torch.ones_like(value)
            if value.numel() != 1:
                raise EvaluationError(f"loss {self.name}: the model's loss has shape {tuple(value.shape)}: expected "
                                      f"a scalar (the batch mean) or one loss per sample ({batch},)")
            return value.reshape(1), torch.full((1,), float(batch), dtype=dtype, device=value.device)
        values, weights = got if isinstance(got, tuple) and len(got) == 2 else (got, None)
        if not isinstance(values, torch.Tensor) or not values.is_floating_point() or values.dim() == 0 \
                or (batch and values.shape[0] != batch):
            found = (f"{str(values.dtype).replace('torch.', '')} {tuple(values.shape)}"
                     if isinstance(values, torch.Tensor) else type(values).__name__)
            raise EvaluationError(f"loss {self.name} returned {found}: expected floating per-sample losses "
                                  f"({batch or 'B'},) or (B, ...), or a pair (values, weights) of one shape")
        values = values.to(dtype)
        if weights is None:
            return values, torch.ones_like(values)
        if not isinstance(weights, torch.Tensor) or weights.shape != values.shape:
            raise EvaluationError(f"loss {self.name} returned weights "
                                  f"{tuple(weights.shape) if isinstance(weights, torch.Tensor) else type(weights).__name__}"
                                  f" for values {tuple(values.shape)}: expected the same shape")
        return values, weights.to(dtype)


_BUILTIN = {
    "crossentropy": Loss("crossentropy", crossentropy, _accuracy),
    "mse": Loss("mse", original_mse, _accuracy),
    "regression_mse": Loss("regression_mse", regression_mse),
    "regression_l1": Loss("regression_l1", regression_l1),
    "token_crossentropy": Loss("token_crossentropy", token_crossentropy, _accuracy),
    "model_loss": Loss("model_loss", model_loss, None, needs_targets=False),
}


def resolve_loss(name: str) -> Loss:
    """The loss called `name`: a built-in (`LOSSES`) or ``pkg.module:fn``; `EvaluationError` names what is expected."""
    if isinstance(name, Loss):
        return name
    if not isinstance(name, str):
        raise EvaluationError(f"a loss is a name, found {type(name).__name__}: expected one of {', '.join(LOSSES)} "
                              f"or 'pkg.module:fn'")
    if name in _BUILTIN:
        return _BUILTIN[name]
    if ":" in name:
        fn = import_object(name, what="loss", expected="expected 'pkg.module:fn' importable from the current "
                           "directory, fn(outputs, targets) returning per-sample losses", error=EvaluationError)
        return Loss(name, fn)
    raise EvaluationError(f"unknown loss {name!r}: expected one of {', '.join(LOSSES)} or 'pkg.module:fn'")


def check_loss_name(name: str) -> str:
    """`name` if it names a built-in loss or has the ``pkg.module:fn`` form (imported later); for argparse."""
    if name in _BUILTIN or (isinstance(name, str) and is_object_spec(name)):
        return name
    raise EvaluationError(f"unknown loss {name!r}: expected one of {', '.join(LOSSES)} or 'pkg.module:fn'")
