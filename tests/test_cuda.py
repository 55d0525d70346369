"""The CUDA paths: every evaluation path of `PointEvaluator` on the GPU gives the CPU's values (fp32 strict, so to
float rounding), and bf16 stays close. Run by benchmarks/gpu.sh where a GPU is lent; skipped without one (a GPU is
never part of CI here)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from loss_landscape.data import EvalData, Split
from loss_landscape.directions.make import make_directions
from loss_landscape.directions.spec import DirectionSpec
from loss_landscape.models.loading import build_model
from loss_landscape.surface.compute import EvalSettings, PointEvaluator
from loss_landscape.surface.grid import Axis, Grid

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (benchmarks/gpu.sh)")

PATHS = {
    "plain": dict(fold_bn=False, shortcut=False),
    "fold": dict(fold_bn=True, shortcut=False),
    "shortcut": dict(fold_bn=False, shortcut=True),
    "3 points per pass": dict(points_per_pass=3),
    "compile": dict(compile=True),
    "channels_last": dict(channels_last=True),
}


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = build_model("resnet20").eval()
    x = torch.randn(300, 3, 32, 32)
    y = torch.randint(0, 10, (300,))
    data = EvalData("synthetic", Split(x, y), Split(x[:50], y[:50]), 10, {})
    dirs = make_directions(model, DirectionSpec(two_d=True))
    grid = Grid(Axis(-1, 1, 3), Axis(-1, 1, 3))
    return model, data, dirs, grid


def _values(setup, device, **kw):
    model, data, dirs, grid = setup
    ev = PointEvaluator(copy.deepcopy(model), data, dirs, "weights", grid,
                        EvalSettings(batch_size=64, compile=kw.pop("compile", False), **kw), torch.device(device))
    return [v["train"] for _, v in ev([(f, ("train",)) for f in range(grid.size)])]


@pytest.mark.parametrize("path", list(PATHS))
def test_gpu_equals_cpu(setup, path):
    cpu = _values(setup, "cpu", fold_bn=False, shortcut=False)
    gpu = _values(setup, "cuda", **PATHS[path])
    for (lc, ac), (lg, ag) in zip(cpu, gpu):
        assert math.isclose(lc, lg, rel_tol=1e-4), (path, lc, lg)
        assert abs(ac - ag) <= 100 / 300 + 1e-9  # at most one sample flips on a near tie


def test_gpu_tolerance_and_bf16(setup):
    exact = _values(setup, "cuda")
    est = _values(setup, "cuda", tolerance=0.05)
    bf16 = _values(setup, "cuda", precision="bf16")
    for (le, *_), (lt, _, se, n), (lb, _) in zip(exact, est, bf16):
        assert abs(lt - le) <= 4 * se + 1e-6 and 0 < n <= 300
        assert math.isclose(le, lb, rel_tol=5e-2)
