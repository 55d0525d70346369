"""Coarse-to-fine order and previews: after 1/64, 1/16 and 1/4 of the points a regular sub-grid is complete (checked
against a plain loop over the definition), a run killed a third of the way through (serial and under MPI) holds one,
its preview's values are the final values at the sub-grid's points, and ``--preview`` draws a picture while it
computes."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
from PIL import Image
from scipy.interpolate import RegularGridInterpolator

from conftest import run_command
from loss_landscape.plotting.preview import interpolate_subgrid, preview_surface
from loss_landscape.surface.order import STRIDES, coarse_to_fine, complete_stride
from loss_landscape.surface.reader import Surface, read_surface

TINY = ["--model", "tinynet:net", "--model_file", "tiny.t7", "--dataset", "digits"]


def _in_subgrid(i: int, n: int, s: int) -> bool:
    return i % s == 0 or i == n - 1


def _subgrid_flats(shape, s) -> set[int]:
    """The flat indices of the stride-s sub-grid, by a plain loop over the definition."""
    if len(shape) == 1:
        return {i for i in range(shape[0]) if _in_subgrid(i, shape[0], s)}
    ny, nx = shape
    return {j * nx + i for j in range(ny) for i in range(nx) if _in_subgrid(j, ny, s) and _in_subgrid(i, nx, s)}


@pytest.mark.parametrize("shape", [(51,), (51, 51), (17, 9), (5, 33), (2, 2), (1, 7), (3,)])
def test_each_prefix_completes_the_next_subgrid(shape):
    order = coarse_to_fine(shape).tolist()
    assert sorted(order) == list(range(int(np.prod(shape))))
    start = 0
    for s in STRIDES:
        sub = _subgrid_flats(shape, s)
        assert set(order[:len(sub)]) == sub, f"stride {s}: the first {len(sub)} points are not its sub-grid"
        assert order[start:len(sub)] == sorted(order[start:len(sub)]), "each level goes in raster order"
        done = np.zeros(int(np.prod(shape)), bool)
        done[order[:len(sub)]] = True
        assert complete_stride(done.reshape(shape)) <= s
        if len(sub) < done.size:  # one point fewer: this sub-grid is no longer complete
            done[order[len(sub) - 1]] = False
            got = complete_stride(done.reshape(shape))
            assert got is None or got > s
        start = len(sub)
    if shape == (51, 51):  # the shares: stride 8 after ~1/64 of the work, 4 after ~1/16, 2 after ~1/4
        sizes = [len(_subgrid_flats(shape, s)) / (51 * 51) for s in (8, 4, 2)]
        assert sizes[0] < 0.03 and sizes[1] < 0.08 and sizes[2] < 0.27


def test_interpolation_is_bilinear_and_exact_on_the_subgrid():
    x, y = np.linspace(-1, 1, 13), np.linspace(-2, 0.5, 10)
    z = np.sin(3 * x)[None, :] * np.cos(2 * y)[:, None] + 0.1 * np.add.outer(y, x) ** 2
    for s in (2, 4, 8):
        iy, ix = [np.array(sorted({i for i in range(len(c)) if _in_subgrid(i, len(c), s)})) for c in (y, x)]
        ref = RegularGridInterpolator((y[iy], x[ix]), z[np.ix_(iy, ix)], method="linear")
        yy, xx = np.meshgrid(y, x, indexing="ij")
        want = ref(np.stack([yy.ravel(), xx.ravel()], axis=1)).reshape(z.shape)
        got = interpolate_subgrid([y, x], z, s)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
        assert np.array_equal(got[np.ix_(iy, ix)], z[np.ix_(iy, ix)])  # bit for bit at the computed points


def test_preview_of_a_surface_without_a_subgrid_is_left_alone():
    x = np.linspace(-1, 1, 9)
    done = np.zeros(9, bool)
    done[:3] = True  # not the stride-8 sub-grid {0, 8}
    s = Surface("s.h5", x, None, {"train_loss": np.where(done, x ** 2, np.nan)}, {}, computed={"train_loss": done})
    same, note = preview_surface(s)
    assert note == "" and same is s
    full = Surface("s.h5", x, None, {"train_loss": x ** 2}, {}, computed={"train_loss": np.ones(9, bool)})
    assert preview_surface(full) == (full, "")


def _done(path) -> np.ndarray:
    with h5py.File(path, "r") as f:
        return np.asarray(f["train_done"][()]).astype(bool)


@pytest.mark.parametrize("ranks", [0, 3])
def test_a_run_killed_a_third_of_the_way_holds_a_subgrid_whose_preview_is_final(tmp_path, tiny, ranks):
    root, _ = tiny
    for f in ("tinynet.py", "tiny.t7"):
        shutil.copy(root / f, tmp_path / f)
    nx, ny = 17, 13
    # Rank 0 is killed as it is about to write the 74th of the 221 points (a third); what has arrived before is
    # flushed at once (--flush_every 1e-6), in the order the points were handed out.
    args = [*TINY, "--x=-1:1:17", "--y=-1:1:13", "--surf_file", "s.h5", "--chunk_size", "4", "--flush_every",
            "1e-6", "--quiet"] + (["--preview", "0.01"] if not ranks else [])  # MPI: results wait while rank 0 draws
    env = {"LOSS_LANDSCAPE_FAULT": f"0:write:sigkill:{nx * ny // 3 + 1}"}
    killed = run_command("plot_surface.py", *args, cwd=tmp_path, ranks=ranks, check=False, env=env)
    assert killed.returncode != 0, killed.stdout + killed.stderr
    done = _done(tmp_path / "s.h5")
    assert 0 < done.sum() < nx * ny
    stride = complete_stride(done)
    assert stride is not None and stride <= 4, f"{done.sum()} points done, complete stride {stride}"
    partial = read_surface(str(tmp_path / "s.h5"))
    shown, note = preview_surface(partial)
    assert note.startswith(f"preview: {done.sum()} of {nx * ny} points computed")
    picture = tmp_path / "s_preview.png"
    assert ranks or picture.exists() and Image.open(picture).size[0] > 100  # drawn before the kill
    run_command("plot_2D.py", "--surf_file", "s.h5", "--format", "png", cwd=tmp_path)  # a partial file plots

    run_command("plot_surface.py", *args, cwd=tmp_path, ranks=ranks)  # resumes, in the same order
    final = read_surface(str(tmp_path / "s.h5"))
    iy, ix = [np.array(sorted({i for i in range(n) if _in_subgrid(i, n, stride)})) for n in (ny, nx)]
    for name in ("train_loss", "train_acc"):
        assert np.array_equal(shown.values[name][np.ix_(iy, ix)], final.values[name][np.ix_(iy, ix)])
        assert np.array_equal(partial.values[name][done], final.values[name][done])
    assert ranks or Image.open(picture).size[0] > 100  # redrawn complete at the end
