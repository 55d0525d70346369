"""A regression network with a loss and a metric of the user's own, on a synthetic function.

Data: x uniform in [-1, 1]^2 and ``y = sin(3 x1) + x2^2 + 0.1 * noise`` (standard normal noise), drawn from
numpy's ``default_rng(DATA_SEED)`` in this order: all x (`N_TRAIN` + `N_TEST`, 2), then all noise; the first
`N_TRAIN` rows train, the rest test. Inputs float32 (N, 2), targets float32 (N, 1).

The landscape uses `log_cosh` as the loss and `abs_error` as a metric (its mean is the mean absolute error)::

    python plot_surface.py --model loss_landscape.examples.regression:model --model_file regression.pt \\
        --dataset loss_landscape.examples.regression:dataset \\
        --loss_name loss_landscape.examples.regression:log_cosh \\
        --metric mae=loss_landscape.examples.regression:abs_error --x=-1:1:11 --y=-1:1:11 --surf_file reg.h5

Example:
    >>> (x, y), _ = dataset()
    >>> tuple(x.shape), tuple(y.shape), x.dtype
    ((1000, 2), (1000, 1), torch.float32)
    >>> log_cosh(torch.zeros(3, 1), torch.zeros(3, 1))
    tensor([0., 0., 0.])
"""

from __future__ import annotations

import math
import time
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from loss_landscape._util import atomic_write
from loss_landscape.examples import _cli

N_TRAIN = 1000
N_TEST = 250
NOISE = 0.1
DATA_SEED = 0
HIDDEN = 32
DEFAULT_STEPS = 2000

Pair = tuple[torch.Tensor, torch.Tensor]


def target_function(x: torch.Tensor) -> torch.Tensor:
    """sin(3 x1) + x2^2, (N, 2) -> (N, 1), without the noise."""
    return (torch.sin(3 * x[:, 0]) + x[:, 1] ** 2).unsqueeze(1)


def dataset() -> tuple[Pair, Pair]:
    """The factory for ``--dataset loss_landscape.examples.regression:dataset``: ((train_x, train_y), (test_x,
    test_y)), float32, inputs (N, 2) and targets (N, 1) (see the module's docstring)."""
    rng = np.random.default_rng(DATA_SEED)
    n = N_TRAIN + N_TEST
    x = torch.from_numpy(rng.uniform(-1.0, 1.0, size=(n, 2)))
    noise = torch.from_numpy(rng.standard_normal(size=(n, 1)))
    y = target_function(x) + NOISE * noise
    x, y = x.to(torch.float32), y.to(torch.float32)
    return (x[:N_TRAIN], y[:N_TRAIN]), (x[N_TRAIN:], y[N_TRAIN:])


def model(seed: int = 0) -> nn.Module:
    """The factory for ``--model loss_landscape.examples.regression:model``: a 2-32-32-1 tanh MLP with weights
    drawn from `seed` (the caller's random state is left as it was), the same at every call.

    Example:
        >>> model()(torch.zeros(4, 2)).shape
        torch.Size([4, 1])
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(2, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, HIDDEN), nn.Tanh(),
                             nn.Linear(HIDDEN, 1))


def _residuals(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    if not isinstance(outputs, torch.Tensor) or outputs.dim() == 0 or targets is None \
            or outputs.shape[0] != targets.shape[0] or outputs[0].numel() != targets[0].numel():
        found = tuple(outputs.shape) if isinstance(outputs, torch.Tensor) else type(outputs).__name__
        raise ValueError(f"outputs {found} and targets "
                         f"{None if targets is None else tuple(targets.shape)} do not match: expected the same "
                         f"number of values per sample")
    return outputs.reshape(len(outputs), -1) - targets.reshape(len(targets), -1).to(outputs.dtype)


def log_cosh(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-sample log(cosh(output - target)), averaged over a sample's values: (B,). Quadratic for small errors,
    linear for large ones; computed as |d| + log1p(exp(-2|d|)) - log 2, which does not overflow.

    A user loss for ``--loss_name loss_landscape.examples.regression:log_cosh``.

    Example:
        >>> round(float(log_cosh(torch.tensor([[1.0]]), torch.tensor([[0.0]]))[0]), 6)  # log(cosh(1))
        0.433781
    """
    d = _residuals(outputs, targets).abs()
    return (d + F.softplus(-2 * d) - math.log(2.0)).mean(dim=1)


def abs_error(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-sample |output - target| (B,), averaged over a sample's values; the metric's mean is the MAE.

    A user metric for ``--metric mae=loss_landscape.examples.regression:abs_error``.
    """
    return _residuals(outputs, targets).abs().mean(dim=1)


def mean_of(fn, net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> float:
    net.eval()
    with torch.no_grad():
        return float(fn(net(inputs), targets).mean())


def train(out_path: Optional[str] = None, *, steps: int = DEFAULT_STEPS, seed: int = 0, batch_size: int = 64,
          lr: float = 3e-3) -> dict[str, float]:
    """Adam on `log_cosh` for `steps` batches (drawn from `seed`), the learning rate decaying to 0 on a cosine,
    then the bare state dict is saved at `out_path` (None: not saved). A few seconds at the default steps.

    Returns:
        ``{"train_loss", "test_loss", "test_mae", "seconds"}``.

    Example:
        >>> train("regression.pt", steps=50)["train_loss"] < 0.5  # doctest: +SKIP
        True
    """
    (train_x, train_y), (test_x, test_y) = dataset()
    net = model(seed)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / max(steps, 1))))
    start = time.perf_counter()
    net.train()
    for _ in range(steps):
        idx = torch.randint(0, len(train_x), (batch_size,), generator=g)
        opt.zero_grad(set_to_none=True)
        log_cosh(net(train_x[idx]), train_y[idx]).mean().backward()
        opt.step()
        sched.step()
    net.eval()
    if out_path is not None:
        atomic_write(out_path, lambda tmp: torch.save(net.state_dict(), tmp))
    return {"train_loss": mean_of(log_cosh, net, train_x, train_y), "test_loss": mean_of(log_cosh, net, test_x, test_y),
            "test_mae": mean_of(abs_error, net, test_x, test_y), "seconds": time.perf_counter() - start}


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = _cli.get_args_parser(prog="python -m loss_landscape.examples.regression",
                                  description=__doc__.split("\n\n")[0], steps=DEFAULT_STEPS)
    args = _cli.parse_args(parser, argv)
    r = train(args.out, steps=args.steps, seed=args.seed)
    print(f"trained {args.steps} steps in {r['seconds']:.1f} s; train log-cosh {r['train_loss']:.5f}, test log-cosh "
          f"{r['test_loss']:.5f}, test MAE {r['test_mae']:.4f}; saved {args.out}")


if __name__ == "__main__":
    main()
