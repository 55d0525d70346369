#!/usr/bin/env python
"""Forward passes saved by ``--tolerance`` (`speed.estimate`) against the exact surface, and how good the estimates are.

Both sides run in one process on the same model, grid, data, batch size and precision:

- exact: `Perturber.set_point_` then `evaluate_values` over all the data at each point (what `PointEvaluator` does);
- estimate, for each tolerance: the data `shuffled` once (seed 0), then `estimate_values` at each point.

Cases:

- ``digits``: the embedded default of ``plot_surface.py`` (digits_cnn trained for 30 epochs on the 1,397 digits
  of the train split, as the command trains it; trained into a temporary folder unless --digits_ckpt names one),
  evaluated on that train split, 11x11 points of [-1, 1]^2;
- ``resnet20``: ResNet-20 after a few SGD steps on CIFAR-sized synthetic images whose labels come from a random
  linear teacher, 5x5 points of [-1, 1]^2.

Directions: random, filter-normalized, biases and BN ignored (the command's defaults), dir_type weights.
For each tolerance it prints the share of forward passes (samples) saved, the wall-clock speed-up, the max and
median |estimate - exact| / exact of the loss, and the share of points whose exact loss lies within 3 standard
errors of the estimate.

    python benchmarks/bench_tolerance.py                          # CPU, a few minutes on 2 cores
    python benchmarks/bench_tolerance.py --cases resnet20 --images 10000 --cuda
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from loss_landscape.data import load_dataset  # noqa: E402
from loss_landscape.directions import Directions, DirectionSpec, Perturber  # noqa: E402
from loss_landscape.directions import create_random_direction, direction_generator  # noqa: E402
from loss_landscape.evaluation import Criterion, DeviceSplit, default_batch_size, evaluate_values  # noqa: E402
from loss_landscape.models import digits as embedded  # noqa: E402
from loss_landscape.models.loading import build_model, load_model  # noqa: E402
from loss_landscape.params import ParamVector  # noqa: E402
from loss_landscape.speed.estimate import estimate_values, shuffled  # noqa: E402

EMBEDDED_EPOCHS = 30  # as plot_surface.py trains the embedded model (surface.job.EMBEDDED_EPOCHS)


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help)
    p.add_argument("--cases", nargs="+", choices=["digits", "resnet20"], default=["digits", "resnet20"],
                   help="default: digits resnet20")
    p.add_argument("--tolerances", type=float, nargs="+", default=[0.05, 0.01], help="default: 0.05 0.01")
    p.add_argument("--images", type=int, default=2000, help="synthetic images for resnet20 (default: 2000)")
    p.add_argument("--sgd_steps", type=int, default=30, help="SGD steps of resnet20 before (default: 30)")
    p.add_argument("--digits_grid", type=int, default=11, help="points per axis for digits (default: 11)")
    p.add_argument("--resnet_grid", type=int, default=5, help="points per axis for resnet20 (default: 5)")
    p.add_argument("--digits_ckpt", default=None, help="a digits_cnn checkpoint (default: trained here, 30 epochs)")
    p.add_argument("--batch_size", type=int, default=None, help="default: 128 on CPU, 1024 on a GPU")
    p.add_argument("--seed", type=int, default=0, help="shuffle seed (default: 0)")
    p.add_argument("--cuda", action="store_true", help="run on the GPU")
    return p


def digits_case(device: torch.device, ckpt: str | None, log) -> tuple[torch.nn.Module, DeviceSplit]:
    data = load_dataset("digits")
    with tempfile.TemporaryDirectory() as tmp:
        path = ckpt or embedded.ensure_checkpoint(os.path.join(tmp, "model_30.t7"), "digits_cnn",
                                                  data.train.inputs, data.train.targets, epochs=EMBEDDED_EPOCHS,
                                                  log=log)
        net = load_model("digits_cnn", path)
    return net.to(device).eval(), DeviceSplit.put(data.train.inputs, data.train.targets, device)


def resnet_case(device: torch.device, images: int, steps: int, log) -> tuple[torch.nn.Module, DeviceSplit]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(images, 3, 32, 32, generator=g)
    teacher = torch.randn(3 * 32 * 32, 10, generator=g)
    y = (x.flatten(1) @ teacher).argmax(1)  # learnable-ish labels
    torch.manual_seed(0)
    net = build_model("resnet20").to(device)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    net.train()
    xd, yd = x.to(device), y.to(device)
    for step in range(steps):
        idx = torch.randint(0, images, (64,), generator=g).to(device)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(xd[idx]), yd[idx]).backward()
        opt.step()
    log(f"resnet20: {steps} SGD steps of 64 on {images} synthetic images")
    return net.eval(), DeviceSplit.put(x, y, device)


def run_case(name: str, net: torch.nn.Module, split: DeviceSplit, points: int, args, device: torch.device) -> None:
    bs = args.batch_size or default_batch_size(device)
    w = ParamVector.from_model(net, "weights")
    dirs = Directions(create_random_direction(w, generator=direction_generator(123, 0)),
                      create_random_direction(w, generator=direction_generator(123, 1)), DirectionSpec())
    mover = Perturber(net, dirs, "weights")
    axis = np.linspace(-1, 1, points)
    coords = [(float(a), float(b)) for a in axis for b in axis]
    crit = Criterion.of("crossentropy")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    mover.set_point_(coords[0])
    evaluate_values(net, split, crit, batch_size=bs)  # warm-up
    sync()
    t0 = time.perf_counter()
    exact = []
    for c in coords:
        mover.set_point_(c)
        exact.append(evaluate_values(net, split, crit, batch_size=bs)["loss"])
    sync()
    t_exact = time.perf_counter() - t0
    exact = np.array(exact)
    n, total = len(split), len(coords) * len(split)
    print(f"\n{name}: {points}x{points} points, {n} samples, batch {bs}, min_samples {2 * bs}; exact loss "
          f"{exact.min():.4g} .. {exact.max():.4g}; exact surface {t_exact:.2f} s")
    print(f"{'tolerance':>9} {'samples saved':>13} {'time ratio':>10} {'max rel err':>11} {'median rel err':>14} "
          f"{'within 3 SE':>11} {'points early':>12}")
    t0 = time.perf_counter()
    order = shuffled(split, args.seed)  # once per run, as a job would
    t_shuffle = time.perf_counter() - t0
    for tol in args.tolerances:
        sync()
        t0 = time.perf_counter()
        est, se, used = [], [], []
        for c in coords:
            mover.set_point_(c)
            e = estimate_values(net, order, crit, batch_size=bs, tolerance=tol)
            est.append(e.values["loss"])
            se.append(e.loss_stderr)
            used.append(e.samples)
        sync()
        t_est = time.perf_counter() - t0 + t_shuffle
        est, se, used = np.array(est), np.array(se), np.array(used)
        rel = np.abs(est - exact) / np.abs(exact)
        inside = np.abs(est - exact) <= 3 * se + 1e-9 * np.abs(exact)
        print(f"{tol:>9g} {1 - used.sum() / total:>12.1%} {t_exact / t_est:>9.2f}x {rel.max():>11.2e} "
              f"{np.median(rel):>14.2e} {inside.mean():>10.1%} {np.mean(used < n):>11.1%}")
    mover.restore_()


def main(args: argparse.Namespace) -> None:
    device = torch.device("cuda" if args.cuda else "cpu")
    print(f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads; shuffle seed {args.seed}")
    log = lambda *a: print(*a)  # noqa: E731
    for case in args.cases:
        if case == "digits":
            net, split = digits_case(device, args.digits_ckpt, log)
            run_case("digits_cnn (embedded default)", net, split, args.digits_grid, args, device)
        else:
            net, split = resnet_case(device, args.images, args.sgd_steps, log)
            run_case("resnet20 (synthetic CIFAR-sized)", net, split, args.resnet_grid, args, device)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
