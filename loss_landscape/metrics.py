"""Metrics by name: more scalars per grid point beside the loss, each a weighted mean over samples or tokens.

Built-in metrics (`METRICS`):

- ``accuracy``: percent of argmax predictions equal to the class (B,) or token (B, T) targets, tokens equal to
  -100 left out.
- ``top5``: percent of targets among the five largest logits (classes or tokens, as accuracy).
- ``perplexity``: exp of the mean loss (the mean over tokens for token_crossentropy or a language model's own
  loss).
- ``error``: 100 - accuracy.

``pkg.module:fn`` names a function of the user's: ``fn(outputs, targets)`` returns per-sample values (B,) or
(B, ...), each weighing 1, or a pair ``(values, weights)``; the metric is their weighted mean. It is stored under
the function's name; ``NAME=pkg.module:fn`` chooses the name.

Example:
    >>> m = resolve_metric("top5")
    >>> m.name, m.spec
    ('top5', 'top5')
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

from loss_landscape._util import import_object, is_object_spec
from loss_landscape.errors import EvaluationError
from loss_landscape.losses import Loss, hits

METRICS = ("accuracy", "top5", "perplexity", "error")
# Names a metric cannot take: they are the datasets of the loss group and of the eigenvalue maps.
RESERVED = ("loss", "acc", "done", "max_eig", "min_eig", "eig_ratio")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")


@dataclass(frozen=True)
class Metric:
    """A metric by the name it is stored under.

    Attributes:
        name: the dataset suffix (``train_<name>``); letters and digits.
        spec: as asked (``top5``, ``pkg.module:fn``, ``NAME=pkg.module:fn``); recorded with its values.
        fn: (outputs, targets) -> per-sample values or (values, weights); None for metrics of the loss.
        scale: the weighted mean is multiplied by it (100 for percentages).
        offset: then added (``error`` is 100 - accuracy).
        of_loss: computed from the loss's own mean (perplexity) instead of `fn`.
    """

    name: str
    spec: str
    fn: Optional[Callable[[Any, Optional[torch.Tensor]], Any]] = None
    scale: float = 1.0
    offset: float = 0.0
    of_loss: bool = False

    def finish(self, mean: float) -> float:
        """The metric from the weighted mean of its per-sample values (or of the loss)."""
        if self.of_loss:
            return math.exp(mean) if mean < 709.0 else math.inf
        return self.offset + self.scale * mean

    def per_sample(self, outputs: Any, targets: Optional[torch.Tensor], batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(values, weights) of one batch in float64, checked as a loss's are."""
        return Loss(f"of metric {self.name}", self.fn).per_sample(outputs, targets, torch.float64, batch=batch)


def _builtin(name: str) -> Metric:
    if name == "accuracy":
        return Metric("accuracy", "accuracy", lambda o, t: hits(o, t, 1, "metric accuracy"), scale=100.0)
    if name == "error":
        return Metric("error", "error", lambda o, t: hits(o, t, 1, "metric error"), scale=-100.0, offset=100.0)
    if name == "top5":
        return Metric("top5", "top5", lambda o, t: hits(o, t, 5, "metric top5"), scale=100.0)
    return Metric("perplexity", "perplexity", of_loss=True)


def check_metric_name(name: str, spec: str) -> str:
    if not _NAME.match(name) or name in RESERVED:
        raise EvaluationError(f"metric {spec!r} would be stored as {name!r}: expected a name of letters and digits, "
                              f"not {', '.join(RESERVED)}; choose one with NAME=pkg.module:fn")
    return name


def resolve_metric(spec: str) -> Metric:
    """The metric asked by `spec`: a built-in (`METRICS`), ``pkg.module:fn`` or ``NAME=pkg.module:fn``."""
    if isinstance(spec, Metric):
        return spec
    if not isinstance(spec, str):
        raise EvaluationError(f"a metric is a name, found {type(spec).__name__}: expected one of {', '.join(METRICS)} "
                              f"or 'pkg.module:fn'")
    if spec in METRICS:
        return _builtin(spec)
    if ":" not in spec:
        raise EvaluationError(f"unknown metric {spec!r}: expected one of {', '.join(METRICS)}, 'pkg.module:fn' or "
                              f"'NAME=pkg.module:fn'")
    name, _, target = spec.rpartition("=")
    fn = import_object(target, what="metric", expected="expected 'pkg.module:fn' importable from the current "
                       "directory, fn(outputs, targets) returning per-sample values", error=EvaluationError)
    return Metric(check_metric_name(name or target.rpartition(":")[2], spec), spec, fn)


def check_metric_spec(spec: str) -> str:
    """`spec` if it has a metric's form (the function is imported later); for argparse."""
    if spec in METRICS:
        return spec
    name, _, target = spec.rpartition("=")
    if is_object_spec(target):
        check_metric_name(name or target.rpartition(":")[2], spec)
        return spec
    raise EvaluationError(f"unknown metric {spec!r}: expected one of {', '.join(METRICS)}, 'pkg.module:fn' or "
                          f"'NAME=pkg.module:fn'")


def resolve_metrics(specs: tuple[str, ...] | list[str]) -> tuple[Metric, ...]:
    """The metrics of `specs`, refusing two under one name."""
    out: list[Metric] = []
    for spec in specs:
        m = resolve_metric(spec)
        if any(o.name == m.name for o in out):
            raise EvaluationError(f"two metrics would be stored as {m.name!r}: give each its own NAME=pkg.module:fn")
        out.append(m)
    return tuple(out)
