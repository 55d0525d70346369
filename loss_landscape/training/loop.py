"""The training loop: epochs over tensors, checkpoints in the original's layout, and resuming exactly.

Any model, data and loss the landscape commands take: inputs of any structure (token ids, tuples, dicts; see
`loss_landscape.batches`), targets of any kind or none (``model_loss``), and any loss of `loss_landscape.losses`.
Each step minimizes the batch's weighted mean loss (by sample, or by token for ``token_crossentropy``), and the
epoch's training loss is the weighted mean over the epoch; accuracies are reported where the loss has one.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from torch import nn

from loss_landscape import batches as bt
from loss_landscape._util import atomic_write
from loss_landscape.data import EvalData, in_memory
from loss_landscape.errors import EvaluationError
from loss_landscape.evaluation import Criterion, DeviceSplit, evaluate_values
from loss_landscape.losses import CLASSIFICATION
from loss_landscape.models.loading import load_weights, read_state_dict
from loss_landscape.errors import TrainError
from loss_landscape.training.setup import (_STREAM_GLOBAL, Augmentation, _stream_seed, augment_batch,
                                           check_augmentation, corrupt_labels, epoch_generator, lr_at, lr_milestones,
                                           make_optimizer)


@dataclass(frozen=True)
class TrainResult:
    """What `train` ends with: the last epoch, its test accuracy (%; NaN for a loss without one) and test loss,
    and the folder."""

    epoch: int
    test_acc: float
    test_loss: float
    save_folder: str


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
        model: a freshly initialized model (see `init_model`); moved to `device`. It is called as ``model(x)``,
            ``model(*x)`` or ``model(**x)`` by the structure of the inputs.
        data: from `data.load_dataset`: tensors, or a factory's Dataset (read into memory once).
        save_folder: where the files go (created).
        model_name: recorded name, used in messages.
        loss_name: a loss of `loss_landscape.losses` (``crossentropy``, ``mse``, ``regression_mse``,
            ``token_crossentropy``, ``model_loss``, ...) or ``pkg.module:fn``; each step minimizes the batch's
            weighted mean. The accuracies (train_acc, test_acc, a checkpoint's ``acc``) are NaN, and left out of
            the log lines, for a loss without one.
        augmentation: crop/flip per batch of 4-D float images (after the data's transform), or None for none.
        label_corrupt_prob: fraction of the training labels replaced by another class (class targets only).
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
    try:
        criterion = Criterion.of(loss_name)
    except EvaluationError as e:
        raise TrainError(str(e)) from None
    loss = criterion.loss
    if resume_opt and not resume_model:
        raise TrainError("resume_opt needs resume_model (the optimizer state belongs to a model checkpoint)")
    train_split, test_split = in_memory(data.train), in_memory(data.test)
    if loss.needs_targets and train_split.targets is None:
        raise TrainError(f"loss {loss.name} needs targets, but the training set has none: use a dataset of "
                         f"(input, target) pairs, or --loss_name model_loss for a model that computes its own loss")
    train_targets, corrupted = corrupt_labels(train_split.targets, label_corrupt_prob,
                                              num_classes=data.num_classes, seed=seed)
    check_augmentation(augmentation, train_split.inputs, transformed=train_split.transform is not None)

    model.to(device)
    opt = make_optimizer(optimizer, model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    start = 0
    if resume_model:
        start = resume_state(model, opt, model_name=model_name, resume_model=resume_model, resume_opt=resume_opt)
        if start >= epochs:
            raise TrainError(f"resume model file {resume_model} is at epoch {start}, already at or past "
                             f"epochs={epochs}")
    train_set = DeviceSplit.put(train_split.inputs, train_targets, device, transform=train_split.transform)
    test_set = DeviceSplit.put(test_split.inputs, test_split.targets, device, transform=test_split.transform)

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

    def test() -> tuple[float, float]:
        values = evaluate_values(model, test_set, criterion, batch_size=batch_size)
        return values["loss"], values.get("acc", math.nan)

    test_loss, test_acc = math.nan, math.nan
    if start == 0:
        test_loss, test_acc = test()
        save(0, test_acc)
    from tqdm import tqdm  # only the training loop needs it

    n = len(train_set)
    log_path = os.path.join(save_folder, "log.txt")
    # The classification losses weigh every sample 1: their batch mean is taken as before, bit for bit.
    plain_mean = loss.name in CLASSIFICATION
    for epoch in range(start + 1, epochs + 1):
        t0 = time.time()
        epoch_lr = lr_at(epoch, lr=lr, lr_decay=lr_decay, epochs=epochs)
        for group in opt.param_groups:
            group["lr"] = epoch_lr
        g = epoch_generator(seed, epoch)
        order = torch.randperm(n, generator=g).to(device)
        model.train()
        sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss x weight, weight, correct, counted
        bar = tqdm(range(0, n, batch_size), desc=f"epoch {epoch}/{epochs}", unit="batch", disable=not progress,
                   leave=False, dynamic_ncols=True, file=sys.stderr)
        # Dropout and other global-RNG users draw from a stream of (seed, epoch) too, without leaking out.
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(_stream_seed(seed, _STREAM_GLOBAL, epoch))
            for s in bar:
                idx = order[s:s + batch_size]
                x = bt.take_rows(train_set.inputs, idx)
                y = None if train_set.targets is None else train_set.targets[idx]
                if train_set.transform is not None:
                    x = train_set.transform(x)
                if augmentation is not None:
                    x = augment_batch(x, augmentation, g)
                opt.zero_grad(set_to_none=True)
                out = bt.call_model(model, x)
                values, weights = loss.per_sample(out, y, batch=len(idx))
                if plain_mean:
                    batch_loss = values.mean()
                else:  # a batch whose weights are all 0 (every token ignored) contributes nothing
                    batch_loss = (values * weights).sum() / weights.sum().clamp_min(torch.finfo(weights.dtype).tiny)
                batch_loss.backward()
                opt.step()
                w = weights.detach().double()
                sums[0] += (values.detach().double() * w).sum()
                sums[1] += w.sum()
                if loss.accuracy is not None:
                    with torch.no_grad():
                        c, cw = loss.accuracy(out, y)
                    sums[2] += (c * cw).sum()
                    sums[3] += cw.sum()
        bar.close()
        loss_sum, weight, correct, counted = sums.tolist()
        train_loss = loss_sum / weight if weight else math.nan
        train_acc = 100.0 * correct / counted if counted else math.nan
        test_loss, test_acc = test()
        seconds = time.time() - t0
        if loss.accuracy is not None:
            line = (f"epoch={epoch} lr={epoch_lr:.6g} train_loss={train_loss:.6f} train_acc={train_acc:.3f} "
                    f"test_loss={test_loss:.6f} test_acc={test_acc:.3f} seconds={seconds:.2f}")
        else:
            line = (f"epoch={epoch} lr={epoch_lr:.6g} train_loss={train_loss:.6f} test_loss={test_loss:.6f} "
                    f"seconds={seconds:.2f}")
        with open(log_path, "a") as f:
            f.write(line + "\n")
        log(line)
        if epoch == 1 or epoch % save_epoch == 0 or epoch == epochs:
            save(epoch, test_acc)
    return TrainResult(epochs, test_acc, test_loss, save_folder)

