"""The embedded default: small models for scikit-learn's handwritten digits, trained in seconds.

With no ``--model_file``, ``plot_surface.py`` trains `digits_cnn` once (fixed seed, a few epochs,
about ten seconds on two CPU cores), saves it in the original's checkpoint form, and computes its
landscape, so the tool produces a real surface on any machine with no download.
"""

from __future__ import annotations

import os

import torch

from loss_landscape._util import atomic_write
import torch.nn.functional as F
from torch import nn

DEFAULT_MODEL = "digits_cnn"


class DigitsCNN(nn.Module):
    """conv(1->8)-BN-ReLU, conv(8->16, stride 2)-BN-ReLU, global average pool, linear: 1.5k parameters,
    with BatchNorm so that ``--dir_type states`` and BN recalibration have something to act on."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.linear = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


class DigitsMLP(nn.Module):
    """64-32-10 multilayer perceptron without BatchNorm (the smallest useful landscape)."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.fc1 = nn.Linear(64, 32)
        self.fc2 = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


_MODELS = {"digits_cnn": DigitsCNN, "digits_mlp": DigitsMLP}


def list_models() -> list[str]:
    return sorted(_MODELS)


def create_model(name: str, num_classes: int = 10) -> nn.Module:
    return _MODELS[name](num_classes=num_classes)


def train(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *, epochs: int = 30,
          batch_size: int = 64, lr: float = 0.05, seed: int = 0) -> float:
    """Plain SGD with momentum on the CPU, deterministic for a seed; returns the final train accuracy (%).

    Example:
        >>> net = create_model("digits_mlp")
        >>> acc = train(net, torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,)), epochs=1)
    """
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    n = len(targets)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(n, generator=g)
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(inputs[idx]), targets[idx]).backward()
            opt.step()
        sched.step()
    model.eval()
    with torch.no_grad():
        return 100.0 * (model(inputs).argmax(1) == targets).float().mean().item()


def ensure_checkpoint(path: str, name: str, inputs: torch.Tensor, targets: torch.Tensor, *, seed: int = 0,
                      epochs: int = 30, log=print) -> str:
    """Trains model `name` on (inputs, targets) and saves ``{'state_dict', 'epoch', 'acc'}`` at `path`,
    unless that file exists already. Returns `path`."""
    if os.path.exists(path):
        return path
    with torch.random.fork_rng(devices=[]):  # seeds the initialization without touching the caller's RNG
        torch.manual_seed(seed)
        model = create_model(name)
    acc = train(model, inputs, targets, epochs=epochs, seed=seed)
    atomic_write(path, lambda tmp: torch.save({"state_dict": model.state_dict(), "epoch": epochs, "acc": acc}, tmp))
    log(f"trained the embedded {name} for {epochs} epochs (train accuracy {acc:.1f}%), saved {path}")
    return path
