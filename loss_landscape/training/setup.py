"""What a training run is set up from: the learning-rate schedule, the optimizers, seeded random streams
(epochs, label corruption), augmentation on tensors, the model's seeded initialization and the original's
folder names.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch import nn

from loss_landscape import batches as bt
from loss_landscape.data import EvalData
from loss_landscape.models.loading import build_model
from loss_landscape.errors import TrainError


OPTIMIZERS = ("sgd", "adam", "adagrad", "rmsprop")

# The original decays the learning rate after epochs 150, 225 and 275 of 300: the same fractions of any
# run length, as exact (numerator, denominator) pairs so that 300 epochs give exactly 150, 225, 275.
DECAY_FRACTIONS = ((1, 2), (3, 4), (11, 12))

# Independent random streams derived from the seed (numpy SeedSequence spawn keys).
_STREAM_EPOCH = 1
_STREAM_LABELS = 2
_STREAM_GLOBAL = 3  # what the model itself draws from torch's global RNG (dropout)


@dataclass(frozen=True)
class Augmentation:
    """Random crop with padding and horizontal flip, applied per batch on tensors.

    Attributes:
        padding: pixels added on each side before a random crop back to the input size; 0: no crop.
        flip: flip each image horizontally with probability 1/2.
        fill: per-channel value of the padded pixels (a black pixel after normalization, as the
            original pads the PIL image before normalizing), or None for 0.
    """

    padding: int = 4
    flip: bool = True
    fill: Optional[tuple[float, ...]] = None


def lr_milestones(epochs: int) -> tuple[int, ...]:
    """The epochs after which the learning rate is multiplied by lr_decay.

    Each is the original's fraction (1/2, 3/4, 11/12) of `epochs`, rounded half up; 300 epochs give
    (150, 225, 275) as the original, 8 give (4, 6, 7). Equal milestones each apply.

    Example:
        >>> lr_milestones(300), lr_milestones(8)
        ((150, 225, 275), (4, 6, 7))
    """
    if epochs < 1:
        raise TrainError(f"epochs must be >= 1, got {epochs}")
    return tuple((2 * num * epochs + den) // (2 * den) for num, den in DECAY_FRACTIONS)


def lr_at(epoch: int, *, lr: float, lr_decay: float, epochs: int) -> float:
    """The learning rate used while training epoch `epoch` (1-based): `lr` times `lr_decay` once for
    each milestone before `epoch` (multiplied step by step, as the original updates its optimizer).

    Example:
        >>> [lr_at(e, lr=1.0, lr_decay=0.5, epochs=8) for e in range(1, 9)]
        [1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.25, 0.125]
    """
    value = lr
    for m in lr_milestones(epochs):
        if epoch > m:
            value *= lr_decay
    return value


def _stream_seed(seed: int, stream: int, epoch: int = 0) -> int:
    return int(np.random.SeedSequence([seed, stream, epoch]).generate_state(1, dtype=np.uint64)[0] >> 1)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The CPU generator for shuffling and augmentation in `epoch`, a function of (seed, epoch) only."""
    return torch.Generator().manual_seed(_stream_seed(seed, _STREAM_EPOCH, epoch))


def corrupt_labels(targets: Optional[torch.Tensor], prob: float, *, num_classes: int,
                   seed: int) -> tuple[Optional[torch.Tensor], torch.Tensor]:
    """Replaces exactly ``floor(prob * N + 0.5)`` labels by a different class, chosen at random.

    The samples are a uniformly random subset (from `seed`); each gets a class drawn uniformly from the
    `num_classes` - 1 classes other than its own, so every chosen label really changes.

    Args:
        targets: int64 labels (N,); not modified. Other targets (tokens, regression values, None) are returned
            as they are when nothing is to be corrupted, and refused otherwise.
        prob: fraction of labels to corrupt, in [0, 1].
        num_classes: number of classes (>= 2 when prob > 0).
        seed: the run's seed.

    Returns:
        (new targets, sorted indices of the changed samples).

    Example:
        >>> y, idx = corrupt_labels(torch.zeros(10, dtype=torch.int64), 0.3, num_classes=10, seed=0)
        >>> len(idx), int((y != 0).sum())
        (3, 3)
    """
    if not 0.0 <= prob <= 1.0:
        raise TrainError(f"label corruption probability must be in [0, 1], got {prob}")
    classes = targets is not None and targets.dim() == 1 and not targets.is_floating_point()
    if not classes and prob > 0:
        found = "no targets" if targets is None else \
            f"targets {str(targets.dtype).replace('torch.', '')} {tuple(targets.shape)}"
        raise TrainError(f"label corruption needs class labels (integers, one per sample), found {found}: leave "
                         f"--label_corrupt_prob at 0 for token, regression or model-computed losses")
    if targets is None:
        return None, torch.zeros(0, dtype=torch.int64)
    n = len(targets)
    count = math.floor(prob * n + 0.5)
    if count == 0:
        return targets.clone(), torch.zeros(0, dtype=torch.int64)
    if num_classes < 2:
        raise TrainError(f"label corruption needs at least 2 classes, found {num_classes}")
    g = torch.Generator().manual_seed(_stream_seed(seed, _STREAM_LABELS))
    idx = torch.randperm(n, generator=g)[:count].sort().values
    shift = torch.randint(1, num_classes, (count,), generator=g)
    new = targets.clone()
    new[idx] = (targets[idx] + shift) % num_classes
    return new, idx


def check_augmentation(aug: Optional[Augmentation], inputs: object, *, transformed: bool = False) -> None:
    """Refuses augmentation of inputs that are not images: a 4-D tensor (N, C, H, W) of floats (or of what the
    data's transform makes floats, `transformed`)."""
    if aug is None:
        return
    if isinstance(inputs, torch.Tensor) and inputs.dim() == 4 and (inputs.is_floating_point() or transformed):
        return
    found = (f"shape {tuple(inputs.shape)} of {str(inputs.dtype).replace('torch.', '')}"
             if isinstance(inputs, torch.Tensor) else bt.describe(inputs))
    raise TrainError(f"augmentation needs float image inputs (N, C, H, W), found {found}; use noaug")


def augment_batch(x: torch.Tensor, aug: Augmentation, generator: torch.Generator) -> torch.Tensor:
    """Random crop (after padding) and horizontal flip of an image batch (B, C, H, W); a new tensor.

    The random numbers are drawn on the CPU from `generator` whatever the device of `x`.
    """
    b, c, h, w = x.shape
    out = x
    if aug.padding > 0:
        p = aug.padding
        padded = x.new_zeros((b, c, h + 2 * p, w + 2 * p))
        if aug.fill is not None:
            padded += torch.as_tensor(aug.fill, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        padded[:, :, p:p + h, p:p + w] = x
        oy = torch.randint(0, 2 * p + 1, (b,), generator=generator).to(x.device)
        ox = torch.randint(0, 2 * p + 1, (b,), generator=generator).to(x.device)
        rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
        cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
        bi = torch.arange(b, device=x.device)[:, None, None, None]
        ci = torch.arange(c, device=x.device)[None, :, None, None]
        out = padded[bi, ci, rows, cols]
    if aug.flip:
        flip = (torch.rand(b, generator=generator) < 0.5).to(x.device)
        out = torch.where(flip[:, None, None, None], out.flip(3), out)
    return out


def make_optimizer(name: str, params, *, lr: float, momentum: float,
                   weight_decay: float) -> torch.optim.Optimizer:
    """SGD (Nesterov momentum as the original, plain SGD when momentum is 0), Adam, Adagrad or RMSprop."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay,
                               nesterov=momentum > 0)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, weight_decay=weight_decay)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise TrainError(f"unknown optimizer {name!r}: expected one of {', '.join(OPTIMIZERS)}")


def save_folder_name(*, model: str, optimizer: str = "sgd", lr: float = 0.1, lr_decay: float = 0.1,
                     batch_size: int = 128, weight_decay: float = 0.0005, momentum: float = 0.9,
                     save_epoch: int = 10, loss_name: str = "crossentropy", noaug: bool = False,
                     raw_data: bool = False, label_corrupt_prob: float = 0.0, seed: int = 0,
                     epochs: int = 300, dataset: Optional[str] = None) -> str:
    """The run's folder name, built from the hyper-parameters as the original does, plus suffixes of ours.

    Example:
        >>> save_folder_name(model="resnet56")
        'resnet56_sgd_lr=0.1_bs=128_wd=0.0005_mom=0.9_save_epoch=10'
    """
    name = f"{model}_{optimizer}_lr={lr}"
    if lr_decay != 0.1:
        name += f"_lr_decay={lr_decay}"
    name += f"_bs={batch_size}_wd={weight_decay}_mom={momentum}_save_epoch={save_epoch}"
    if loss_name != "crossentropy":
        name += f"_loss={loss_name}"
    if noaug:
        name += "_noaug"
    if raw_data:
        name += "_rawdata"
    if label_corrupt_prob > 0:
        name += f"_randlabel={label_corrupt_prob}"
    # Ours: the schedule depends on the run length, the data on the dataset, everything on the seed.
    if epochs != 300:
        name += f"_epochs={epochs}"
    if dataset:
        name += f"_data={dataset}"
    if seed != 0:
        name += f"_seed={seed}"
    return "".join(ch if ch.isalnum() or ch in "._=-" else "-" for ch in name)


def init_model(name: str, *, seed: int, num_classes: int = 10) -> nn.Module:
    """Builds model `name` with its initialization drawn from `seed`, leaving the global RNG untouched.

    `num_classes` sizes a registry or embedded classifier; 0 (data whose targets are no classes) builds it with
    its default, and a ``pkg.module:factory`` model is built by its factory alone.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(name, num_classes=num_classes) if num_classes > 0 else build_model(name)



def default_augmentation(data: EvalData) -> Optional[Augmentation]:
    """The original's crop (padding 4) and flip for 32x32 images, with padded pixels black before
    normalization; for smaller images (digits: 8x8) padding 1 and no flip (a mirrored digit is another
    symbol); None for inputs that are not images (token ids, tuples, dicts, a Dataset read item by item)."""
    inputs = getattr(data.train, "inputs", None)
    if not isinstance(inputs, torch.Tensor) or inputs.dim() != 4 or not (
            inputs.is_floating_point() or getattr(data.train, "transform", None) is not None):
        return None
    shape = tuple(inputs.shape[1:])
    fill = None
    if not data.info.get("raw_data", True):
        mean = [float(v) for v in str(data.info.get("normalize_mean", "")).split(",") if v]
        std = [float(v) for v in str(data.info.get("normalize_std", "")).split(",") if v]
        if len(mean) == len(std) == shape[0]:
            fill = tuple(-m / s for m, s in zip(mean, std))
    if data.name == "digits" or min(shape[1:]) < 32:
        return Augmentation(padding=1 if min(shape[1:]) >= 4 else 0, flip=data.name != "digits", fill=fill)
    return Augmentation(padding=4, flip=True, fill=fill)
