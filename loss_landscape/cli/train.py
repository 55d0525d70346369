#!/usr/bin/env python
"""Command: train a CIFAR-10 (or digits, or your own) classifier, or any model on any data with any loss (a
language model on token ids with --loss_name token_crossentropy, a regression, a model that computes its own loss
with model_loss), and save the checkpoints that the landscape commands read, with the original's flags and folder
layout (see doc/training.md).

    python cifar10/main.py --model resnet56                      # trained_nets/resnet56_sgd_lr=0.1_...
    python cifar10/main.py --model digits_cnn --epochs 8 --save_epoch 2 --quiet
    python cifar10/main.py --model resnet56 --resume_model trained_nets/X/model_150.t7 \\
        --resume_opt trained_nets/X/opt_state_150.t7
    python cifar10/main.py --model loss_landscape.examples.charlm:model \\
        --dataset loss_landscape.examples.charlm:dataset --loss_name token_crossentropy --optimizer adam \\
        --lr 0.003 --weight_decay 0 --epochs 4 --batch_size 64
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from loss_landscape.errors import USER_ERRORS
from loss_landscape.cli import _common as argtypes

OPTIMIZERS = ("sgd", "adam", "adagrad", "rmsprop")  # as loss_landscape.training.OPTIMIZERS, without importing torch
# As loss_landscape.losses.LOSSES (the help's list; pkg.module:fn names are accepted too), without importing torch.
LOSSES = ("crossentropy", "mse", "regression_mse", "regression_l1", "token_crossentropy", "model_loss")


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argtypes.ArgumentParser(description="Train a model and save checkpoints for loss-landscape plots.",
                                add_help=add_help, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("model and data")
    g.add_argument("--model", default="vgg9",
                   help="registry name (resnet56, vgg9, ...), digits_cnn/digits_mlp, or pkg.module:factory")
    g.add_argument("--dataset", default=None,
                   help="cifar10, digits or pkg.module:factory (default: the model's own, cifar10 otherwise)")
    g.add_argument("--datapath", default="cifar10/data", help="folder holding cifar-10-batches-py")
    g.add_argument("--raw_data", action="store_true", help="no mean/std normalization of the inputs")
    g.add_argument("--noaug", action="store_true", help="no random crop and flip (image data only; other inputs are "
                                                         "never augmented)")
    g.add_argument("--label_corrupt_prob", type=argtypes.probability, default=0.0,
                   help="fraction of training labels replaced by a different random class (class labels only)")
    g = p.add_argument_group("optimization")
    g.add_argument("--optimizer", default="sgd", choices=OPTIMIZERS, help="sgd uses Nesterov momentum")
    g.add_argument("--lr", type=argtypes.nonneg_float, default=0.1, help="initial learning rate")
    g.add_argument("--lr_decay", type=argtypes.nonneg_float, default=0.1,
                   help="factor applied after 1/2, 3/4 and 11/12 of the epochs")
    g.add_argument("--weight_decay", type=argtypes.nonneg_float, default=0.0005, help="L2 weight decay")
    g.add_argument("--momentum", type=argtypes.nonneg_float, default=0.9, help="momentum (sgd, rmsprop)")
    g.add_argument("--batch_size", type=argtypes.pos_int, default=128, help="minibatch size")
    g.add_argument("--epochs", type=argtypes.pos_int, default=300, help="number of epochs")
    g.add_argument("--loss_name", default="crossentropy", type=argtypes.loss_name, metavar="LOSS",
                   help=f"training loss: {', '.join(LOSSES)}, or pkg.module:fn returning per-sample losses")
    g.add_argument("--rand_seed", type=argtypes.nonneg_int, default=0,
                   help="seed of the initialization, label corruption, shuffling and augmentation")
    g = p.add_argument_group("checkpoints")
    g.add_argument("--save", default="trained_nets", help="parent folder of the run's folder")
    g.add_argument("--save_epoch", type=argtypes.pos_int, default=10, help="save every this many epochs")
    g.add_argument("--resume_model", default=None, help="model_E.t7 to continue from")
    g.add_argument("--resume_opt", default=None, help="opt_state_E.t7 to continue from (with --resume_model)")
    g = p.add_argument_group("compute")
    g.add_argument("--cuda", action="store_true", help="train on the GPU")
    g.add_argument("--quiet", action="store_true", help="no progress bar and no per-epoch lines")
    return p


def main(args: argparse.Namespace) -> int:
    if args.resume_opt and not args.resume_model:
        print("error: --resume_opt needs --resume_model", file=sys.stderr)
        return 1
    for flag in ("resume_model", "resume_opt"):
        path = getattr(args, flag)
        if path and not os.path.isfile(path):
            print(f"error: --{flag} file {path} does not exist", file=sys.stderr)
            return 1
    # Imported here so that --help and argument errors answer at once.
    from loss_landscape.training import default_augmentation, init_model, save_folder_name, train
    import dataclasses
    import math

    from loss_landscape.data import in_memory, load_dataset
    from loss_landscape.evaluation import pick_device
    from loss_landscape.models.loading import check_name, native_dataset

    try:
        check_name(args.model)
        dataset = args.dataset or native_dataset(args.model) or "cifar10"
        device = pick_device(args.cuda, local_rank=0)
        data = load_dataset(dataset, datapath=args.datapath, raw_data=args.raw_data)
        # A factory's Dataset is read into memory once: training takes its batches in a shuffled order.
        data = dataclasses.replace(data, train=in_memory(data.train), test=in_memory(data.test))
        folder = os.path.join(args.save, save_folder_name(
            model=args.model, optimizer=args.optimizer, lr=args.lr, lr_decay=args.lr_decay,
            batch_size=args.batch_size, weight_decay=args.weight_decay, momentum=args.momentum,
            save_epoch=args.save_epoch, loss_name=args.loss_name, noaug=args.noaug, raw_data=args.raw_data,
            label_corrupt_prob=args.label_corrupt_prob, seed=args.rand_seed, epochs=args.epochs,
            dataset=None if dataset in ("cifar10", native_dataset(args.model)) else dataset))
        model = init_model(args.model, seed=args.rand_seed, num_classes=data.num_classes)
        record = dict(vars(args), dataset=dataset, save_folder=folder)
        result = train(model, data, save_folder=folder, model_name=args.model, epochs=args.epochs,
                       batch_size=args.batch_size, lr=args.lr, lr_decay=args.lr_decay, optimizer=args.optimizer,
                       weight_decay=args.weight_decay, momentum=args.momentum, save_epoch=args.save_epoch,
                       seed=args.rand_seed, loss_name=args.loss_name,
                       augmentation=None if args.noaug else default_augmentation(data),
                       label_corrupt_prob=args.label_corrupt_prob, device=device,
                       resume_model=args.resume_model, resume_opt=args.resume_opt, record=record,
                       progress=not args.quiet, log=(lambda *a: None) if args.quiet else print)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    measured = (f"test loss {result.test_loss:.6g}" if math.isnan(result.test_acc)
                else f"test accuracy {result.test_acc:.2f}%")
    print(f"done: epoch {result.epoch}, {measured}, checkpoints in {result.save_folder}")
    return 0


def run(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    """Parses `argv` (the command line when None) and runs the command; returns the exit code."""
    return argtypes.run_command(get_args_parser, main, argv, prog=prog)


if __name__ == "__main__":
    sys.exit(run())
