"""The loss, accuracy and metrics of a model over an evaluation set, batch by batch on the evaluation device.

The data are transformed once (see data.py) and moved to the device once (`DeviceSplit`), or streamed from a
Dataset in a fixed order (`loss_landscape.streaming`); a grid point then costs only forward passes. Losses and
metrics are weighted sums in float64 (by sample or token), so the batch size changes the result only by float
rounding of the forward pass itself.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional, Sequence

import torch
from torch import nn
from loss_landscape import batches as bt
from loss_landscape.errors import EvaluationError
from loss_landscape.losses import CLASSIFICATION, LOSSES, Loss, resolve_loss
from loss_landscape.metrics import Metric, resolve_metrics

PRECISIONS = ("fp32", "tf32", "bf16")
__all__ = ["CLASSIFICATION", "LOSSES", "PRECISIONS", "Criterion", "DeviceSplit", "evaluate", "evaluate_values",
           "per_sample_loss", "precision_context", "recalibrate_bn", "pick_device"]


@dataclass(frozen=True)
class DeviceSplit:
    """Inputs and targets already on the evaluation device (and in its memory format).

    Attributes:
        inputs: a tensor, a tuple or a dict of tensors (see `loss_landscape.batches`), rows first.
        targets: a tensor of one row per sample, or None (a model that computes its own loss).
        transform: applied to each batch of inputs on the device before the model (uint8 images to normalized
            floats, say); None: the inputs go in as they are.
    """

    inputs: Any
    targets: Optional[torch.Tensor]
    transform: Optional[Callable[[Any], Any]] = field(default=None, compare=False)

    def __len__(self) -> int:
        return bt.rows(self.inputs)

    @property
    def device(self) -> torch.device:
        return bt.tensors(self.inputs)[0].device

    @classmethod
    def put(cls, inputs: Any, targets: Optional[torch.Tensor], device: torch.device, channels_last: bool = False,
            transform: Optional[Callable[[Any], Any]] = None) -> "DeviceSplit":
        """Moves a CPU split to `device` once; 4-D image batches may go channels_last. Class targets become
        int64 (as the losses expect); other targets keep their dtype."""
        x = bt.to_device(inputs, device, channels_last=channels_last)
        if targets is not None:
            targets = targets.to(device=device, dtype=torch.long) if not targets.is_floating_point() \
                else targets.to(device)
        return cls(x, targets, transform)

    def batches(self, batch_size: int) -> Iterator[tuple[Any, Optional[torch.Tensor]]]:
        """(inputs, targets) of each batch in order, transformed, on the device."""
        for start in range(0, len(self), batch_size):
            x = bt.slice_rows(self.inputs, start, start + batch_size)
            y = None if self.targets is None else self.targets[start:start + batch_size]
            yield (x if self.transform is None else self.transform(x)), y


@dataclass(frozen=True)
class Criterion:
    """The loss and the metrics a point is evaluated by.

    `quantities` names what `evaluate_values` returns: ``loss``, ``acc`` where the loss has an accuracy
    (classification and token losses), then each metric's name.
    """

    loss: Loss
    metrics: tuple[Metric, ...] = ()

    @classmethod
    def of(cls, loss_name: "str | Loss" = "crossentropy", metrics: Sequence["str | Metric"] = ()) -> "Criterion":
        return cls(resolve_loss(loss_name), resolve_metrics(tuple(metrics)))

    @property
    def quantities(self) -> tuple[str, ...]:
        return ("loss",) + (("acc",) if self.loss.accuracy is not None else ()) + tuple(m.name for m in self.metrics)

    def batch_sums(self, outputs: Any, targets: Optional[torch.Tensor], batch: int,
                   dtype: torch.dtype = torch.float32) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """{quantity: (weighted sum, weight sum)} of one batch, float64 scalars on the device (no sync)."""
        values, weights = self.loss.per_sample(outputs, targets, dtype, batch=batch)
        out = {"loss": ((values.double() * weights.double()).sum(), weights.double().sum())}
        if self.loss.accuracy is not None:
            c, w = self.loss.accuracy(outputs, targets)
            out["acc"] = ((c * w).sum(), w.sum())
        for m in self.metrics:
            if not m.of_loss:
                v, w = m.per_sample(outputs, targets, batch)
                out[m.name] = ((v * w).sum(), w.sum())
        return out

    def finish(self, sums: dict[str, tuple[float, float]]) -> dict[str, float]:
        """The quantities from the whole set's sums."""
        loss_sum, loss_w = sums["loss"]
        if loss_w == 0:
            raise EvaluationError(f"loss {self.loss.name} weighed no sample or token of the evaluation set (all "
                                  f"targets ignored?)")
        out = {"loss": loss_sum / loss_w}
        if "acc" in sums:
            c, w = sums["acc"]
            out["acc"] = 100.0 * c / w if w else math.nan
        for m in self.metrics:
            if m.of_loss:
                out[m.name] = m.finish(out["loss"])
            else:
                v, w = sums[m.name]
                out[m.name] = (m.offset + m.scale * v / w) if w else math.nan
        return out


def default_batch_size(device: torch.device) -> int:
    """A batch size that keeps the device busy: 128 on CPU (measured fastest for ResNet-20 on 2
    cores; 1000 was 2x slower), 1024 on a GPU."""
    return 1024 if device.type == "cuda" else 128


def precision_context(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """Float32 settings for ``fp32`` (strict IEEE float32), ``tf32`` or ``bf16`` while the block runs.

    ``fp32`` turns TF32 off for cuDNN convolutions (torch's default leaves it on) and for matmuls and asks
    for the ``highest`` float32 matmul precision; ``tf32`` allows TF32 in both; ``bf16`` autocasts to
    bfloat16, with TF32 off for what stays float32. The flags are global, and are set whatever `device`
    is (they cost nothing on a CPU, and a test can read them there); the previous values come back when
    the block ends. Raises `EvaluationError` at once for an unknown `precision`.

    Example:
        >>> with precision_context("fp32", torch.device("cpu")):
        ...     torch.backends.cudnn.allow_tf32
        False
    """
    if precision not in PRECISIONS:
        raise EvaluationError(f"unknown precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    return _precision_flags(precision, device)


# torch >= 2.9 also has per-operator settings (torch.backends.cudnn.conv.fp32_precision, ...); once a
# program sets those, the legacy getters may refuse to summarize them, and they are saved as they are.
_PER_OP = (("cuda", "matmul"), ("cudnn", "conv"), ("cudnn", "rnn"), ("mkldnn", "matmul"), ("mkldnn", "conv"),
           ("mkldnn", "rnn"))


def _per_op_nodes() -> list[tuple[str, object]]:
    nodes = [(b, getattr(getattr(torch.backends, b, None), op, None)) for b, op in _PER_OP]
    return [(b, n) for b, n in nodes if n is not None and hasattr(n, "fp32_precision")]


@contextlib.contextmanager
def _precision_flags(precision: str, device: torch.device):
    tf32 = precision == "tf32"
    try:
        saved = ("legacy", torch.get_float32_matmul_precision(), torch.backends.cuda.matmul.allow_tf32,
                 torch.backends.cudnn.allow_tf32)
    except RuntimeError:
        nodes = _per_op_nodes()
        saved = ("per-op", [n.fp32_precision for _, n in nodes])
    try:
        if saved[0] == "legacy":
            if not tf32:  # also pins CPU (oneDNN) matmuls to IEEE float32
                torch.set_float32_matmul_precision("highest")
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
        else:
            for backend, n in nodes:  # tf32 is a GPU setting: CPU (oneDNN) operators stay IEEE
                n.fp32_precision = "tf32" if tf32 and backend != "mkldnn" else "ieee"
        if precision == "bf16":
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
                yield
        else:
            yield
    finally:
        if saved[0] == "legacy":
            torch.backends.cuda.matmul.allow_tf32 = saved[2]
            torch.backends.cudnn.allow_tf32 = saved[3]
            torch.set_float32_matmul_precision(saved[1])
        else:
            for (_, n), value in zip(nodes, saved[1]):
                n.fp32_precision = value


def per_sample_loss(outputs: torch.Tensor, targets: torch.Tensor, loss_name: str,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Per-sample losses in `dtype` of a classification loss (``crossentropy``, ``mse``; see `loss_landscape.losses`)."""
    if loss_name not in CLASSIFICATION:
        raise EvaluationError(f"per_sample_loss takes a classification loss ({', '.join(CLASSIFICATION)}), got "
                              f"{loss_name!r}: use losses.resolve_loss(name).per_sample for the others")
    return resolve_loss(loss_name).per_sample(outputs.to(dtype), targets, dtype)[0]


@torch.no_grad()
def evaluate_values(model: Callable[..., Any] | nn.Module, data: Any, criterion: Criterion, *, batch_size: int = 128,
                    precision: str = "fp32") -> dict[str, float]:
    """{quantity: value} of `model` in eval mode over `data` (a `DeviceSplit` or a streaming split): the mean loss,
    the accuracy in percent where the loss has one, and each metric (see `Criterion.quantities`).

    Example:
        >>> net = nn.Linear(2, 3)
        >>> d = DeviceSplit(torch.randn(10, 2), torch.randint(0, 3, (10,)))
        >>> sorted(evaluate_values(net, d, Criterion.of("crossentropy", ["top5"]), batch_size=4))
        ['acc', 'loss', 'top5']
    """
    if batch_size < 1:
        raise EvaluationError(f"batch size must be >= 1, got {batch_size}")
    if len(data) == 0:
        raise EvaluationError("the evaluation set is empty")
    if isinstance(model, nn.Module):
        model.eval()
    totals: dict[str, list[torch.Tensor]] = {}
    with precision_context(precision, data.device):
        for x, y in data.batches(batch_size):
            out = bt.call_model(model, x)
            for q, (s, w) in criterion.batch_sums(out, y, bt.rows(x)).items():
                if q in totals:
                    totals[q][0] += s
                    totals[q][1] += w
                else:
                    totals[q] = [s.clone(), w.clone()]
    # One synchronization per evaluation, not per batch.
    flat = torch.stack([t for pair in totals.values() for t in pair]).tolist()
    sums = {q: (flat[2 * i], flat[2 * i + 1]) for i, q in enumerate(totals)}
    return criterion.finish(sums)


def evaluate(model: nn.Module, data: Any, *, loss_name: str = "crossentropy", batch_size: int = 128,
             precision: str = "fp32") -> tuple[float, float]:
    """Mean loss and accuracy (percent; NaN where the loss has none) of `model` in eval mode over `data`.

    Example:
        >>> net = nn.Linear(2, 3)
        >>> d = DeviceSplit(torch.randn(10, 2), torch.randint(0, 3, (10,)))
        >>> loss, acc = evaluate(net, d, batch_size=4)
    """
    values = evaluate_values(model, data, Criterion.of(loss_name), batch_size=batch_size, precision=precision)
    return values["loss"], values.get("acc", math.nan)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, data: Any, *, batches: int, batch_size: int,
                   precision: str = "fp32") -> int:
    """Re-estimates BatchNorm running statistics from the first `batches` batches of `data` (a `DeviceSplit`, a
    streaming split, or a tensor of inputs).

    Statistics are reset and accumulated as a plain average over the batches (momentum None);
    only the BN layers run in training mode, so dropout stays off. Returns the number of BN layers.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns or batches <= 0:
        return len(bns)
    model.eval()
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    try:
        if isinstance(data, torch.Tensor):
            data = DeviceSplit(data, None)
        with precision_context(precision, data.device):
            for k, (x, _) in enumerate(data.batches(batch_size)):
                if k >= batches:
                    break
                bt.call_model(model, x)
    finally:
        for m, mom in zip(bns, saved):
            m.momentum = mom
            m.eval()
    return len(bns)


def pick_device(cuda: bool, local_rank: Optional[int] = None) -> torch.device:
    """The device of this process: GPU number (local rank mod GPUs on the node) with `cuda`.

    The local rank comes from the launcher (`local_rank_from_env`), so the same command works under
    mpirun and srun on several nodes.
    """
    if not cuda:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise EvaluationError("--cuda was given but no CUDA GPU is available here (torch.cuda.is_available() "
                              "is False); run without --cuda to use the CPU")
    rank = local_rank_from_env() if local_rank is None else local_rank
    device = torch.device("cuda", rank % torch.cuda.device_count())
    torch.cuda.set_device(device)
    return device


def local_rank_from_env() -> int:
    """This process's rank on its node from Open MPI, MPICH/Intel MPI or Slurm; 0 if none is set."""
    for var in ("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID", "LOCAL_RANK"):
        value = os.environ.get(var)
        if value is not None and value.strip().isdigit():
            return int(value)
    return 0


def local_size_from_env() -> int:
    """How many ranks share this node, from Open MPI, MPICH/Intel MPI or Slurm; 1 if none is set.

    Under ``srun -n N`` without ``--ntasks-per-node``, Slurm gives the count per node only in
    ``SLURM_STEP_TASKS_PER_NODE`` (``4(x2),3``: 4 on each of the first two nodes, 3 on the third), indexed by
    ``SLURM_NODEID``.
    """
    for var in ("OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS_PER_NODE", "LOCAL_WORLD_SIZE"):
        value = os.environ.get(var, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    per_node = _slurm_tasks_per_node(os.environ.get("SLURM_STEP_TASKS_PER_NODE", ""))
    node = os.environ.get("SLURM_NODEID", "0").strip()
    if per_node and node.isdigit() and int(node) < len(per_node):
        return per_node[int(node)]
    return 1


def _slurm_tasks_per_node(text: str) -> list[int]:
    """``4(x2),3`` -> [4, 4, 3]; [] for anything else."""
    out = []
    for part in filter(None, text.strip().split(",")):
        count, _, rest = part.partition("(x")
        if not count.isdigit() or (rest and not rest.rstrip(")").isdigit()):
            return []
        out += [int(count)] * (int(rest.rstrip(")")) if rest else 1)
    return out


def cpu_threads_per_rank() -> int:
    """The node's cores shared out among its ranks, so CPU ranks do not oversubscribe the cores
    (OpenMP threads spinning against each other are many times slower). Where Slurm pins each task to its own
    CPUs (``--cpus-per-task``), those are this rank's already."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if os.environ.get("SLURM_CPUS_PER_TASK", "").strip().isdigit():
        return max(1, cores)
    return max(1, cores // local_size_from_env())
