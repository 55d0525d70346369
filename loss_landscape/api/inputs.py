"""What a notebook hands the in-memory functions (a model, tensors, a DataLoader, an `EvalData`, numbers), checked
and turned into the engine's objects; every refusal is one `UserError` line naming what was expected.
"""

from __future__ import annotations

import hashlib
import math
import numbers
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from loss_landscape.data import EvalData, Split
from loss_landscape.directions.spec import IGNORES, NORMS
from loss_landscape.errors import DataError, DirectionError, EvaluationError, ModelError, UserError
from loss_landscape.evaluation import LOSSES
from loss_landscape.losses import resolve_loss
from loss_landscape import batches as bt
from loss_landscape.models.loading import state_sha256  # noqa: F401 - used as inputs.state_sha256
from loss_landscape.params import DIR_TYPES, ParamVector
from loss_landscape.surface.grid import Axis

SPLITS = ("train", "test")
DATA_EXPECTED = ("an (inputs, targets) pair of tensors or arrays, a loss_landscape.data.EvalData or Split, or a "
                 "torch DataLoader yielding (inputs, targets) batches")
Limits = Optional[Sequence[float]]


# ----------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------

def check_model(model: Any, what: str = "model") -> nn.Module:
    if not isinstance(model, nn.Module):
        raise ModelError(f"{what} is a {type(model).__name__}: expected a torch.nn.Module")
    return model


def check_same_layout(base: nn.Module, other: nn.Module, dir_type: str, names: tuple[str, str]) -> None:
    """Refuses two models whose tensors (parameters, or state entries for ``states``) differ in name or shape,
    naming the first difference (interpolating between them would mean nothing)."""
    a, b = ParamVector.from_model(base, dir_type), ParamVector.from_model(other, dir_type)
    for i, (na, nb, ta, tb) in enumerate(zip(a.names, b.names, a, b)):
        if na != nb:
            raise DirectionError(f"{names[1]} does not fit {names[0]}: tensor {i} is {nb!r} in {names[1]} but "
                                 f"{na!r} in {names[0]}: expected two models of one architecture")
        if ta.shape != tb.shape:
            raise DirectionError(f"{names[1]} does not fit {names[0]}: {na!r} has shape {tuple(tb.shape)} in "
                                 f"{names[1]} but {tuple(ta.shape)} in {names[0]}: expected two models of one "
                                 f"architecture")
    if len(a) != len(b):
        raise DirectionError(f"{names[1]} does not fit {names[0]}: {len(b)} tensors versus {len(a)} "
                             f"({dir_type}): expected two models of one architecture")


# ----------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------

def _as_tensor(value: Any, what: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    raise DataError(f"{what} is a {type(value).__name__}: expected a tensor or a numpy array")


def _pair(inputs: Any, targets: Any, where: str) -> Split:
    """An (inputs, targets) pair as a `Split`: inputs as float32 (as every dataset of the tool), targets as
    int64 class labels (whole-number floats and (N, 1) columns are accepted)."""
    x, y = _as_tensor(inputs, f"the inputs of {where}"), _as_tensor(targets, f"the targets of {where}")
    if y.dim() == 2 and y.shape[1] == 1:
        y = y.reshape(-1)
    if y.dim() != 1 or x.dim() < 1 or x.shape[0] != y.shape[0]:
        raise DataError(f"{where}: inputs {tuple(x.shape)} and targets {tuple(y.shape)} do not match: expected "
                        f"inputs (N, ...) and class labels (N,)")
    if x.dtype == torch.bool or x.is_complex():
        raise DataError(f"{where}: inputs have dtype {x.dtype}: expected real numbers")
    if y.dtype == torch.bool or y.is_complex() or (y.is_floating_point() and not torch.equal(y, y.round())):
        raise DataError(f"{where}: targets of dtype {y.dtype} are not class labels: expected whole numbers >= 0")
    if len(y) == 0:
        raise DataError(f"{where} has no samples: expected at least one (input, label) pair")
    if int(y.min()) < 0:
        raise DataError(f"{where}: a target is {int(y.min())}: expected class labels >= 0")
    return Split(x.to(torch.float32), y.to(torch.int64))


def _from_loader(loader: Any) -> Split:
    """Every batch of a DataLoader, read once in the order it yields them and joined into one `Split`."""
    xs, ys = [], []
    for k, batch in enumerate(loader):
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            found = f"a {len(batch)}-item {type(batch).__name__}" if isinstance(batch, (tuple, list)) \
                else f"a {type(batch).__name__}"
            raise DataError(f"batch {k} of the DataLoader is {found}: expected (inputs, targets)")
        xs.append(_as_tensor(batch[0], f"the inputs of batch {k} of the DataLoader"))
        ys.append(_as_tensor(batch[1], f"the targets of batch {k} of the DataLoader"))
    if not xs:
        raise DataError("the DataLoader yields no batches: expected (inputs, targets) batches")
    try:
        x, y = torch.cat(xs), torch.cat([t.reshape(-1) if t.dim() == 2 and t.shape[1] == 1 else t for t in ys])
    except RuntimeError as e:
        raise DataError(f"the DataLoader's batches cannot be joined ({str(e).splitlines()[0]}): expected inputs "
                        f"of one shape and class labels") from None
    return _pair(x, y, "the DataLoader")


def fingerprint(part: Split) -> str:
    """A short checksum of a split's values, which names tensors given from memory in a surface file (so a
    file resumes only for the same data)."""
    h = hashlib.sha256()
    for t in bt.tensors(part.inputs) + ([] if part.targets is None else [part.targets]):
        a = np.ascontiguousarray(t.cpu().numpy())
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def as_eval_data(data: Any, split: str, *, name_by_values: bool = False) -> EvalData:
    """`data` as an `EvalData` whose `split` part is what is evaluated (an `EvalData` is used as it is).

    Args:
        data: see `DATA_EXPECTED`.
        split: ``train`` or ``test``: the part of an `EvalData` to evaluate, and the name the values of other
            data are recorded under.
        name_by_values: name other data by a checksum of their values (``tensors-<sha256[:16]>``) rather than
            plain ``tensors``; a surface file records the name, and refuses to resume for other data.
    """
    if split not in SPLITS:
        raise UserError(f"split must be 'train' or 'test', got {split!r}")
    if isinstance(data, EvalData):
        part = data.train if split == "train" else data.test
        if len(part) == 0:
            raise DataError(f"the {split} split of dataset {data.name!r} is empty: expected at least one sample")
        return data
    if isinstance(data, Split):
        classes = isinstance(data.inputs, torch.Tensor) and data.targets is not None and data.targets.dim() == 1
        # Class labels are checked as a pair's; other kinds (tokens, regression, none, dicts) are used as they are.
        part = _pair(data.inputs, data.targets, "data") if classes else data
    elif isinstance(data, DataLoader):
        part = _from_loader(data)
    elif isinstance(data, (tuple, list)):
        if len(data) != 2:
            raise DataError(f"data is a {len(data)}-item {type(data).__name__}: expected {DATA_EXPECTED}")
        part = _pair(data[0], data[1], "data")
    else:
        raise DataError(f"data is a {type(data).__name__}: expected {DATA_EXPECTED}")
    empty = part.part(0, 0)
    train, test = (part, empty) if split == "train" else (empty, part)
    name = f"tensors-{fingerprint(part)}" if name_by_values else "tensors"
    y = part.targets
    num_classes = int(y.max()) + 1 if y is not None and y.dim() == 1 and not y.is_floating_point() else 0
    info = {"dataset": name, "raw_data": False, "split": f"given in memory, evaluated as {split}",
            "inputs": bt.describe(part.inputs), "train_size": len(train), "test_size": len(test),
            "num_classes": num_classes}
    if isinstance(part.inputs, torch.Tensor):
        info["input_shape"] = "x".join(str(d) for d in part.inputs.shape[1:])
    return EvalData(name, train, test, num_classes, info)


# ----------------------------------------------------------------------------------------------------------
# Settings
# ----------------------------------------------------------------------------------------------------------

def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def check_steps(steps: Any, what: str = "steps") -> int:
    if not _is_int(steps) or steps < 2:
        raise UserError(f"{what} must be a whole number >= 2 (points along the axis, ends included), got {steps!r}")
    return int(steps)


def plane_steps(steps: Union[int, Sequence[int]]) -> tuple[int, int]:
    """(nx, ny) from one count for both axes or a pair."""
    if isinstance(steps, (tuple, list)):
        if len(steps) != 2:
            raise UserError(f"steps must be a whole number >= 2 or a pair (nx, ny) of them, got {steps!r}")
        return check_steps(steps[0], "steps along x"), check_steps(steps[1], "steps along y")
    n = check_steps(steps, "steps (or a pair (nx, ny))")
    return n, n


def _finite(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))


def axis(lim: Limits, num: int, what: str) -> Axis:
    """The grid axis of `num` points from lim[0] to lim[1], ends included: the tool's `Axis`, so the
    coordinates are those ``plot_surface.py --x=MIN:MAX:NUM`` uses."""
    if not isinstance(lim, (tuple, list)) or len(lim) != 2 or not all(_finite(v) for v in lim):
        raise UserError(f"{what} must be a pair (min, max) of finite numbers, got {lim!r}")
    lo, hi = float(lim[0]), float(lim[1])
    if not hi > lo:
        raise UserError(f"{what} must have max > min, got {lim!r}")
    return Axis(lo, hi, num)


def limits(distance: Optional[float], lim: Limits, what: str) -> Sequence[float]:
    """(-distance, distance), or `lim` when given; not both. Default: distance 1."""
    if distance is not None and lim is not None:
        raise UserError(f"give distance or {what}, not both")
    if lim is not None:
        return lim
    d = 1.0 if distance is None else distance
    if not _finite(d) or not d > 0:
        raise UserError(f"distance must be a finite number > 0, got {distance!r}")
    return (-float(d), float(d))


def check_norm(norm: Optional[str], what: str = "norm") -> str:
    """A norm of the tool (`NORMS`); ``"none"`` and None are its empty value, raw N(0, 1) directions."""
    value = "" if norm is None or norm == "none" else norm
    if value not in NORMS:
        raise DirectionError(f"unknown {what} {norm!r}: expected one of {', '.join(n for n in NORMS if n)} or none")
    return value


def check_ignore(ignore: Optional[str]) -> str:
    value = "" if ignore is None or ignore == "none" else ignore
    if value not in IGNORES:
        raise DirectionError(f"unknown ignore {ignore!r}: expected biasbn or none")
    return value


def check_dir_type(dir_type: Any) -> str:
    if dir_type not in DIR_TYPES:
        raise DirectionError(f"unknown dir_type {dir_type!r}: expected one of {', '.join(DIR_TYPES)}")
    return dir_type


def check_seed(seed: Any, what: str = "seed") -> int:
    if not _is_int(seed) or seed < 0:
        raise UserError(f"{what} must be a whole number >= 0, got {seed!r}")
    return int(seed)


def check_loss(loss_name: Any) -> str:
    """A loss name of `loss_landscape.losses` or ``pkg.module:fn``, imported now so a wrong one fails at once."""
    if not isinstance(loss_name, str):
        raise EvaluationError(f"unknown loss {loss_name!r}: expected one of {', '.join(LOSSES)} or 'pkg.module:fn'")
    resolve_loss(loss_name)
    return loss_name


def check_batch_size(batch_size: Any) -> Optional[int]:
    if batch_size is not None and (not _is_int(batch_size) or batch_size < 1):
        raise EvaluationError(f"batch_size must be a whole number >= 1 or None (128 on a CPU, 1024 on a GPU), "
                              f"got {batch_size!r}")
    return None if batch_size is None else int(batch_size)


def resolve_device(device: Any) -> torch.device:
    try:
        dev = torch.device(device)
    except (TypeError, RuntimeError) as e:
        raise EvaluationError(f"device {device!r} is not a device ({str(e).splitlines()[0]}): expected 'cpu', "
                              f"'cuda', 'cuda:N' or a torch.device") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise EvaluationError(f"device {device!r} was asked but no CUDA GPU is available here "
                              f"(torch.cuda.is_available() is False): use device='cpu'")
    return dev
