"""plot_hessian_spectrum.py run as a user runs it: the numbers in its JSON against a dense float64 Hessian of
a tiny factory model, its files, the embedded default's checkpoint path, and one-line errors."""

from __future__ import annotations

import json
import os
import shutil

import h5py
import numpy as np
import pytest

from conftest import dense_hessian, run_command
from loss_landscape.data import load_dataset, take_part

def test_numbers_match_the_dense_hessian(tiny):
    root, model = tiny
    out = root / "res" / "tiny"
    proc = run_command("plot_hessian_spectrum.py", "--model", "tinynet:net", "--model_file", "tiny.t7",
                       "--dataset", "digits", "--data_split", "10", "--split_idx", "1", "--batch_size", "33",
                       "--top_k", "3", "--tol", "1e-6", "--trace_samples", "200", "--slq_runs", "3",
                       "--slq_steps", "40", "--out", str(out), cwd=root)
    assert "lambda_max" in proc.stdout and proc.stderr.count("\n") <= 1
    rec = json.loads((root / "res" / "tiny.json").read_text())
    part = take_part(load_dataset("digits").train, 10, 1)
    H = dense_hessian(model, part.inputs, part.targets)
    exact = np.linalg.eigvalsh(H)
    assert rec["dim"] == 460 and rec["samples"] == len(part) and rec["params"] == "all"
    np.testing.assert_allclose(rec["top_eigenvalues"], exact[::-1][:3], rtol=1e-4)
    assert rec["lambda_max"] == pytest.approx(exact[-1], rel=1e-4)
    assert abs(rec["lambda_min"] - exact[0]) <= 1e-4 * abs(exact).max()
    assert abs(rec["trace"] - np.trace(H)) < 4 * rec["trace_stderr"]
    assert rec["re"] > 0 and rec["khn"] >= 0 and rec["khn_n"] == 0.5
    assert len(rec["model_sha256"]) == 64 and rec["timings"]["top_eigenpairs"]["matvecs"] > 0
    with h5py.File(root / "res" / "tiny.h5") as f:
        vecs = f["top_eigenvectors"][()]
        assert vecs.dtype == np.float32 and vecs.shape == (3, 460)
        assert f["slq_nodes"].shape == (3, 40) and f["trace_estimates"].shape == (200,)
        assert f.attrs["model_sha256"] == rec["model_sha256"] and f.attrs["dim"] == 460
    u = vecs[0].astype(np.float64)
    assert np.linalg.norm(H @ u - exact[-1] * u) < 1e-3 * exact[-1]
    import matplotlib.image as mpimg
    img = mpimg.imread(root / "res" / "tiny_density.png")
    assert img.std() > 0.05 and img[..., :3].min() < 0.5  # drawn on, not blank or all white


def test_default_checkpoint_path_and_dim_filter(tmp_path, trained_ckpt):
    target = tmp_path / "trained_nets" / "digits_cnn" / "model_30.t7"
    target.parent.mkdir(parents=True)
    shutil.copy(trained_ckpt, target)  # the embedded default, already trained: no training here
    run_command("plot_hessian_spectrum.py", "--params", "dim>1", "--data_split", "40", "--eval_on", "test",
                "--top_k", "1", "--trace_samples", "5", "--slq_runs", "1", "--slq_steps", "10", "--no_plot",
                cwd=tmp_path)
    out = str(target) + "_hessian_test_weights_part0of40"
    rec = json.loads(open(out + ".json").read())
    assert rec["eval_on"] == "test" and rec["dim"] == 8 * 9 + 16 * 8 * 9 + 16 * 10
    assert rec["param_names"] == ["conv1.weight", "conv2.weight", "linear.weight"]
    assert os.path.exists(out + ".h5") and not os.path.exists(out + "_density.png")


@pytest.mark.parametrize("argv, expected", [
    (["--model_file", "missing.t7"], "does not exist"),
    (["--model", "tinynet:net", "--model_file", "tiny.t7", "--dataset", "digits", "--top_k", "460"], "k must be"),
    (["--model", "tinynet:net", "--model_file", "tiny.t7", "--dataset", "digits", "--data_split", "2",
      "--split_idx", "5"], "part index"),
    (["--model", "tinynet:net", "--model_file", "tiny.t7", "--dataset", "digits", "--loss_name",
      "token_crossentropy"], "expected logits (B, T, V)"),
])
def test_bad_input_gives_one_line(tiny, argv, expected):
    root, _ = tiny
    proc = run_command("plot_hessian_spectrum.py", *argv, "--no_plot", cwd=root, check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1 and expected in proc.stderr
    assert "Traceback" not in proc.stderr
