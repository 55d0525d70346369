"""Loss and accuracy of a model over an evaluation set held as tensors on the evaluation device.

The data are transformed once (see data.py) and moved to the device once; a grid point then costs
only forward passes. Per-sample losses are summed in float64, so the batch size changes the result
only by float rounding of the forward pass itself.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from loss_landscape.errors import EvaluationError

LOSSES = ("crossentropy", "mse")
PRECISIONS = ("fp32", "tf32", "bf16")


@dataclass(frozen=True)
class DeviceSplit:
    """Inputs and targets already on the evaluation device (and in its memory format)."""

    inputs: torch.Tensor
    targets: torch.Tensor

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    @classmethod
    def put(cls, inputs: torch.Tensor, targets: torch.Tensor, device: torch.device,
            channels_last: bool = False) -> "DeviceSplit":
        """Moves a CPU split to `device` once; 4-D image batches may go channels_last."""
        x = inputs.to(device)
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return cls(x, targets.to(device=device, dtype=torch.long))


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
    """Per-sample losses in `dtype` (float32; the curvature code asks for float64 reference values).

    ``crossentropy`` is the usual softmax cross-entropy; ``mse`` is the original tool's: softmax
    outputs against one-hot targets, mean over classes (its MSELoss averaged over batch x classes).
    """
    outputs = outputs.to(dtype)
    if loss_name == "crossentropy":
        return F.cross_entropy(outputs, targets, reduction="none")
    if loss_name == "mse":
        probs = F.softmax(outputs, dim=1)
        one_hot = F.one_hot(targets, num_classes=outputs.shape[1]).to(probs.dtype)
        return ((probs - one_hot) ** 2).mean(dim=1)
    raise EvaluationError(f"unknown loss {loss_name!r}: expected one of {', '.join(LOSSES)}")


@torch.no_grad()
def evaluate(model: nn.Module, data: DeviceSplit, *, loss_name: str = "crossentropy", batch_size: int = 128,
             precision: str = "fp32") -> tuple[float, float]:
    """Mean loss and accuracy (percent) of `model` in eval mode over `data`.

    Example:
        >>> net = nn.Linear(2, 3)
        >>> d = DeviceSplit(torch.randn(10, 2), torch.randint(0, 3, (10,)))
        >>> loss, acc = evaluate(net, d, batch_size=4)
    """
    if loss_name not in LOSSES:
        raise EvaluationError(f"unknown loss {loss_name!r}: expected one of {', '.join(LOSSES)}")
    if batch_size < 1:
        raise EvaluationError(f"batch size must be >= 1, got {batch_size}")
    n = len(data)
    if n == 0:
        raise EvaluationError("the evaluation set is empty")
    model.eval()
    device = data.inputs.device
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    with precision_context(precision, device):
        for start in range(0, n, batch_size):
            x = data.inputs[start:start + batch_size]
            y = data.targets[start:start + batch_size]
            out = model(x)
            total_loss += per_sample_loss(out, y, loss_name).double().sum()
            correct += (out.argmax(dim=1) == y).sum()
    # One synchronization per evaluation, not per batch.
    return total_loss.item() / n, 100.0 * correct.item() / n


@torch.no_grad()
def recalibrate_bn(model: nn.Module, inputs: torch.Tensor, *, batches: int, batch_size: int,
                   precision: str = "fp32") -> int:
    """Re-estimates BatchNorm running statistics from the first `batches` batches of `inputs`.

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
        with precision_context(precision, inputs.device):
            for k in range(batches):
                x = inputs[k * batch_size:(k + 1) * batch_size]
                if x.shape[0] == 0:
                    break
                model(x)
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
