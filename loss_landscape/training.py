"""Training of a classifier on tensors, as the original's ``cifar10/main.py`` trains, but reproducible.

The data come once from `data.load_dataset` as CPU tensors; shuffling and augmentation (random crop with
padding, horizontal flip) are done on tensors per batch with a `torch.Generator` derived from
(seed, epoch), so an epoch's randomness depends on nothing but the seed and the epoch number and a run
resumed from a checkpoint continues exactly as the uninterrupted run would (no RNG state is saved).

Checkpoints keep the original's layout: ``model_{epoch}.t7`` = {'state_dict', 'epoch', 'acc'} (test
accuracy in percent) and ``opt_state_{epoch}.t7`` = {'optimizer': optimizer.state_dict()}.

Example:
    >>> from data import load_dataset  # doctest: +SKIP
    >>> ev = load_dataset("digits")  # doctest: +SKIP
    >>> net = init_model("digits_cnn", seed=0)  # doctest: +SKIP
    >>> result = train(net, ev, save_folder="trained_nets/run", epochs=3, lr=0.05)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import nn

from loss_landscape._util import atomic_write
from loss_landscape.data import EvalData
from loss_landscape.evaluation import LOSSES, DeviceSplit, evaluate, per_sample_loss
from loss_landscape.models.loading import build_model, load_weights, read_state_dict
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


@dataclass(frozen=True)
class TrainResult:
    """What `train` ends with: the last epoch, its test accuracy (%) and test loss, and the folder."""

    epoch: int
    test_acc: float
    test_loss: float
    save_folder: str


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


def corrupt_labels(targets: torch.Tensor, prob: float, *, num_classes: int,
                   seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Replaces exactly ``floor(prob * N + 0.5)`` labels by a different class, chosen at random.

    The samples are a uniformly random subset (from `seed`); each gets a class drawn uniformly from the
    `num_classes` - 1 classes other than its own, so every chosen label really changes.

    Args:
        targets: int64 labels (N,); not modified.
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
    """Builds model `name` with its initialization drawn from `seed`, leaving the global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(name, num_classes=num_classes)


def _save_atomic(obj: Any, path: str) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _read_checkpoint(path: str, what: str) -> dict:
    if not os.path.isfile(path):
        raise TrainError(f"{what} {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any unreadable file is a user error here, named by its first line
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise TrainError(f"cannot read {what} {path}: {first[:200]}") from None
    if not isinstance(obj, dict):
        raise TrainError(f"{what} {path} holds a {type(obj).__name__}, expected a dict")
    return obj


def resume_state(model: nn.Module, optimizer: torch.optim.Optimizer, *, model_name: str,
                 resume_model: str, resume_opt: Optional[str] = None) -> int:
    """Loads a ``model_E.t7`` (and ``opt_state_E.t7``) into `model` (and `optimizer`); returns E."""
    ckpt = _read_checkpoint(resume_model, "resume model file")
    epoch = ckpt.get("epoch")
    if isinstance(epoch, torch.Tensor):
        epoch = int(epoch)
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise TrainError(f"resume model file {resume_model} has no epoch number (found {epoch!r}): "
                         f"expected a model_E.t7 written by training")
    load_weights(model, read_state_dict(resume_model), source=f"resume model file {resume_model}",
                 model_name=model_name)
    if resume_opt:
        opt = _read_checkpoint(resume_opt, "resume optimizer file")
        if not isinstance(opt.get("optimizer"), dict):
            raise TrainError(f"resume optimizer file {resume_opt} has no 'optimizer' state: "
                             f"expected an opt_state_E.t7 written by training")
        try:
            optimizer.load_state_dict(opt["optimizer"])
        except (ValueError, KeyError, RuntimeError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise TrainError(f"resume optimizer file {resume_opt} does not fit the {type(optimizer).__name__} "
                             f"optimizer of model {model_name}: {first[:200]}") from None
    return epoch


def train(model: nn.Module, data: EvalData, *, save_folder: str, model_name: str = "model", epochs: int = 300,
          batch_size: int = 128, lr: float = 0.1, lr_decay: float = 0.1, optimizer: str = "sgd",
          weight_decay: float = 0.0005, momentum: float = 0.9, save_epoch: int = 10, seed: int = 0,
          loss_name: str = "crossentropy", augmentation: Optional[Augmentation] = None,
          label_corrupt_prob: float = 0.0, device: torch.device = torch.device("cpu"),
          resume_model: Optional[str] = None, resume_opt: Optional[str] = None,
          record: Optional[dict[str, Any]] = None, progress: bool = False,
          log: Callable[[str], None] = print) -> TrainResult:
    """Trains `model` on ``data.train`` and writes checkpoints, ``log.txt`` and ``args.json`` into `save_folder`.

    Checkpoints are written at epoch 0 (before training, unless resuming), 1, every `save_epoch` and the
    last. The learning rate of epoch e is `lr_at`; labels are corrupted by `corrupt_labels` (the test set
    never); shuffling and augmentation use `epoch_generator` (seed, epoch), so a run resumed from
    ``model_E.t7`` and ``opt_state_E.t7`` ends with the same weights as an uninterrupted one.

    Args:
        model: a freshly initialized model (see `init_model`); moved to `device`.
        data: tensors from `data.load_dataset`.
        save_folder: where the files go (created).
        model_name: recorded name, used in messages.
        augmentation: crop/flip per batch, or None for none.
        resume_model, resume_opt: checkpoint files to continue from.
        record: extra entries for ``args.json`` (the command's resolved arguments).
        progress: a tqdm bar per epoch.
        log: where one-line messages go.

    Returns:
        The final epoch's `TrainResult`.
    """
    if epochs < 1:
        raise TrainError(f"epochs must be >= 1, got {epochs}")
    if batch_size < 1:
        raise TrainError(f"batch size must be >= 1, got {batch_size}")
    if save_epoch < 1:
        raise TrainError(f"save_epoch must be >= 1, got {save_epoch}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise TrainError(f"seed must be an integer >= 0, got {seed!r}")
    if loss_name not in LOSSES:
        raise TrainError(f"unknown loss {loss_name!r}: expected one of {', '.join(LOSSES)}")
    if resume_opt and not resume_model:
        raise TrainError("resume_opt needs resume_model (the optimizer state belongs to a model checkpoint)")
    train_targets, corrupted = corrupt_labels(data.train.targets, label_corrupt_prob,
                                              num_classes=data.num_classes, seed=seed)
    if augmentation is not None and data.train.inputs.dim() != 4:
        raise TrainError(f"augmentation needs image inputs (N, C, H, W), found shape "
                         f"{tuple(data.train.inputs.shape)}; use noaug")

    model.to(device)
    opt = make_optimizer(optimizer, model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    start = 0
    if resume_model:
        start = resume_state(model, opt, model_name=model_name, resume_model=resume_model, resume_opt=resume_opt)
        if start >= epochs:
            raise TrainError(f"resume model file {resume_model} is at epoch {start}, already at or past "
                             f"epochs={epochs}")
    train_set = DeviceSplit.put(data.train.inputs, train_targets, device)
    test_set = DeviceSplit.put(data.test.inputs, data.test.targets, device)

    os.makedirs(save_folder, exist_ok=True)
    info = dict(record or {})
    info.update({"model": model_name, "dataset": data.name, "epochs": epochs, "batch_size": batch_size, "lr": lr,
                 "lr_decay": lr_decay, "lr_milestones": list(lr_milestones(epochs)), "optimizer": optimizer,
                 "weight_decay": weight_decay, "momentum": momentum, "save_epoch": save_epoch, "seed": seed,
                 "loss_name": loss_name, "label_corrupt_prob": label_corrupt_prob,
                 "labels_corrupted": len(corrupted),
                 "augmentation": None if augmentation is None else
                 {"padding": augmentation.padding, "flip": augmentation.flip,
                  "fill": None if augmentation.fill is None else list(augmentation.fill)},
                 "device": str(device), "resumed_from": resume_model, "data_info": data.info})
    with open(os.path.join(save_folder, "args.json"), "w") as f:
        json.dump(info, f, indent=2, sort_keys=True, default=str)

    def save(epoch: int, acc: float) -> None:
        _save_atomic({"state_dict": _cpu_state(model), "epoch": epoch, "acc": acc},
                     os.path.join(save_folder, f"model_{epoch}.t7"))
        _save_atomic({"optimizer": opt.state_dict()}, os.path.join(save_folder, f"opt_state_{epoch}.t7"))

    test_loss, test_acc = float("nan"), float("nan")
    if start == 0:
        test_loss, test_acc = evaluate(model, test_set, loss_name=loss_name, batch_size=batch_size)
        save(0, test_acc)
    from tqdm import tqdm  # only the training loop needs it

    n = len(train_set)
    log_path = os.path.join(save_folder, "log.txt")
    for epoch in range(start + 1, epochs + 1):
        t0 = time.time()
        epoch_lr = lr_at(epoch, lr=lr, lr_decay=lr_decay, epochs=epochs)
        for group in opt.param_groups:
            group["lr"] = epoch_lr
        g = epoch_generator(seed, epoch)
        order = torch.randperm(n, generator=g).to(device)
        model.train()
        total_loss = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        bar = tqdm(range(0, n, batch_size), desc=f"epoch {epoch}/{epochs}", unit="batch", disable=not progress,
                   leave=False, dynamic_ncols=True, file=sys.stderr)
        # Dropout and other global-RNG users draw from a stream of (seed, epoch) too, without leaking out.
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(_stream_seed(seed, _STREAM_GLOBAL, epoch))
            for s in bar:
                idx = order[s:s + batch_size]
                x, y = train_set.inputs[idx], train_set.targets[idx]
                if augmentation is not None:
                    x = augment_batch(x, augmentation, g)
                opt.zero_grad(set_to_none=True)
                out = model(x)
                losses = per_sample_loss(out, y, loss_name)
                losses.mean().backward()
                opt.step()
                total_loss += losses.detach().double().sum()
                correct += (out.detach().argmax(1) == y).sum()
        bar.close()
        train_loss, train_acc = total_loss.item() / n, 100.0 * correct.item() / n
        test_loss, test_acc = evaluate(model, test_set, loss_name=loss_name, batch_size=batch_size)
        seconds = time.time() - t0
        line = (f"epoch={epoch} lr={epoch_lr:.6g} train_loss={train_loss:.6f} train_acc={train_acc:.3f} "
                f"test_loss={test_loss:.6f} test_acc={test_acc:.3f} seconds={seconds:.2f}")
        with open(log_path, "a") as f:
            f.write(line + "\n")
        log(line)
        if epoch == 1 or epoch % save_epoch == 0 or epoch == epochs:
            save(epoch, test_acc)
    return TrainResult(epochs, test_acc, test_loss, save_folder)


def default_augmentation(data: EvalData) -> Optional[Augmentation]:
    """The original's crop (padding 4) and flip for 32x32 images, with padded pixels black before
    normalization; for smaller images (digits: 8x8) padding 1 and no flip (a mirrored digit is another
    symbol); None for inputs that are not images."""
    shape = tuple(data.train.inputs.shape[1:])
    if len(shape) != 3:
        return None
    fill = None
    if not data.info.get("raw_data", True):
        mean = [float(v) for v in str(data.info.get("normalize_mean", "")).split(",") if v]
        std = [float(v) for v in str(data.info.get("normalize_std", "")).split(",") if v]
        if len(mean) == len(std) == shape[0]:
            fill = tuple(-m / s for m, s in zip(mean, std))
    if data.name == "digits" or min(shape[1:]) < 32:
        return Augmentation(padding=1 if min(shape[1:]) >= 4 else 0, flip=data.name != "digits", fill=fill)
    return Augmentation(padding=4, flip=True, fill=fill)


__all__ = ["Augmentation", "DECAY_FRACTIONS", "OPTIMIZERS", "TrainError", "TrainResult", "augment_batch",
           "corrupt_labels", "default_augmentation", "epoch_generator", "init_model", "lr_at", "lr_milestones",
           "make_optimizer", "resume_state", "save_folder_name", "train"]
