"""plot_hessian_eigen.py and the hessian/adam axes of plot_surface.py, run as a user runs them, checked against
independent computations: a dense float64 Hessian (torch.autograd.functional.hessian) of the model moved by hand,
and the loss of weights built by hand from an Adam state."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import dense_hessian, run_command, tiny_after_adam
from loss_landscape.data import load_dataset, take_part
from loss_landscape.directions.files import load_directions
from loss_landscape.surface.reader import read_surface

TINY = ["--model", "tinynet:net", "--model_file", "tiny.t7", "--dataset", "digits"]
PART = ["--data_split", "10", "--split_idx", "1"]  # 140 train examples: dense Hessians stay quick


def _part():
    return take_part(load_dataset("digits").train, 10, 1)


def _moved(model, dirs, coords):
    """The parameters at `coords`, built as w0 + a*dx (+ b*dy) in float32, by name."""
    out = {}
    for i, (name, p) in enumerate(model.named_parameters()):
        change = dirs.x[i] * coords[0]
        if len(coords) > 1:
            change = change + dirs.y[i] * coords[1]
        out[name] = p.detach() + change
    return out


def _eig(model, params, part):
    return np.linalg.eigvalsh(dense_hessian(model, part.inputs, part.targets, params))


def test_eigenvalue_map_matches_the_dense_hessian(tiny):
    root, model = tiny
    run_command("plot_hessian_eigen.py", *TINY, *PART, "--x=-0.5:0.5:3", "--y=-0.4:0.4:2", "--hessian_tol", "1e-8",
                "--dir_file", "d.h5", "--surf_file", "eig.h5", "--quiet", "--plot", cwd=root)
    s = read_surface(str(root / "eig.h5"))
    dirs = load_directions(str(root / "d.h5"))
    part = _part()
    assert s.values["max_eig"].shape == (2, 3) and json.loads(s.attrs["hessian"])["params"] == "all"
    for j, b in enumerate(s.y):
        for i, a in enumerate(s.x):
            exact = _eig(model, _moved(model, dirs, (a, b)), part)
            radius = np.abs(exact).max()
            assert s.values["max_eig"][j, i] == pytest.approx(exact[-1], rel=1e-6)
            assert abs(s.values["min_eig"][j, i] - exact[0]) <= 1e-6 * radius
            assert s.values["eig_ratio"][j, i] == pytest.approx(abs(exact[0] / exact[-1]), rel=1e-4, abs=1e-6)
    import matplotlib.image as mpimg
    for kind in ("2dheat", "2dcontourf"):
        img = mpimg.imread(root / f"eig_eig_ratio_{kind}.png")
        assert img.std() > 0.05 and img[..., :3].min() < 0.5


def test_batch_size_does_not_change_the_eigenvalues(tiny):
    """The original summed per-batch mean losses, so its eigenvalues grew with the number of batches."""
    root, _ = tiny
    maps = []
    for bs in ("7", "140"):
        run_command("plot_hessian_eigen.py", *TINY, *PART, "--x=-0.5:0.5:3", "--batch_size", bs, "--hessian_tol",
                    "1e-8", "--dir_file", "d1.h5", "--surf_file", f"bs{bs}.h5", "--quiet", cwd=root)
        maps.append(read_surface(str(root / f"bs{bs}.h5")).values)
    np.testing.assert_allclose(maps[0]["max_eig"], maps[1]["max_eig"], rtol=1e-6)
    np.testing.assert_allclose(maps[0]["min_eig"], maps[1]["min_eig"], rtol=0, atol=1e-6 * maps[1]["max_eig"].max())


def test_dim_filter_uses_the_weight_matrices_only(tiny):
    root, model = tiny
    run_command("plot_hessian_eigen.py", *TINY, *PART, "--x=0:0.5:2", "--hessian_params", "dim>1",
                "--hessian_tol", "1e-8", "--dir_file", "d1.h5", "--surf_file", "dim.h5", "--quiet", cwd=root)
    s = read_surface(str(root / "dim.h5"))
    part = _part()
    H = dense_hessian(model, part.inputs, part.targets)
    keep = np.concatenate([np.full(p.numel(), p.dim() > 1) for p in model.parameters()])
    exact = np.linalg.eigvalsh(H[np.ix_(keep, keep)])
    assert s.values["max_eig"][0] == pytest.approx(exact[-1], rel=1e-6)  # x = 0: the centre model
    assert "dim2plus" in run_command("plot_hessian_eigen.py", *TINY, *PART, "--x=0:0.5:2", "--hessian_params",
                                     "dim>1", "--dir_file", "d1.h5", "--quiet", cwd=root).stdout


@pytest.mark.mpi
@pytest.mark.parametrize("ranks", [2, 3])
def test_mpi_ranks_give_the_serial_map(tiny, ranks):
    root, _ = tiny
    args = [*TINY, *PART, "--x=-0.5:0.5:4", "--y=-0.5:0.5:3", "--dir_file", "dm.h5", "--quiet", "--chunk_size", "1"]
    if not (root / "serial.h5").exists():
        run_command("plot_hessian_eigen.py", *args, "--surf_file", "serial.h5", cwd=root)
    run_command("plot_hessian_eigen.py", *args, "--surf_file", f"mpi{ranks}.h5", cwd=root, ranks=ranks)
    a, b = read_surface(str(root / "serial.h5")), read_surface(str(root / f"mpi{ranks}.h5"))
    assert np.isfinite(b.values["max_eig"]).all()
    # Ranks run torch with fewer threads, which may reorder float32 sums: equal to the solver's tolerance.
    np.testing.assert_allclose(b.values["max_eig"], a.values["max_eig"], rtol=1e-5)
    np.testing.assert_allclose(b.values["min_eig"], a.values["min_eig"], rtol=0,
                               atol=1e-5 * np.abs(a.values["max_eig"]).max())
    with h5py.File(root / f"mpi{ranks}.h5") as f:
        assert json.loads(f.attrs["runs"])[-1]["world_size"] == ranks


def _done(path: Path) -> int:
    try:
        with h5py.File(path, "r", locking=False) as f:
            return int(f["eig_done"][()].sum())
    except (OSError, KeyError):
        return 0


@pytest.mark.slow
def test_interrupted_map_resumes_to_the_same_values(tiny):
    from test_plot_surface import gated_model, interrupt_at_point
    root, _ = tiny
    args = [*gated_model(tiny, root), "--data_split", "20", "--x=-0.5:0.5:15", "--y=-0.5:0.5:15", "--dir_file",
            "dr.h5", "--quiet", "--chunk_size", "1"]
    cut = [*args, "--surf_file", "cut.h5", "--flush_every", "0.001"]
    code, err = interrupt_at_point("plot_hessian_eigen.py", cut, root, points=8, sig=signal.SIGTERM)
    assert code == 128 + signal.SIGTERM and "rerun the same command to resume" in err, err
    assert "Traceback" not in err
    partial = _done(root / "cut.h5")
    assert 5 <= partial <= 8, partial  # the points before the held one, each flushed as it came
    resumed = run_command("plot_hessian_eigen.py", *args, "--surf_file", "cut.h5", cwd=root)
    assert f"{225 - partial} to compute" in resumed.stdout
    run_command("plot_hessian_eigen.py", *args, "--surf_file", "whole.h5", cwd=root)
    a, b = read_surface(str(root / "cut.h5")), read_surface(str(root / "whole.h5"))
    for key in ("max_eig", "min_eig"):
        np.testing.assert_array_equal(a.values[key], b.values[key], err_msg=key)


def test_hessian_axes_are_the_top_eigenvectors(tiny):
    root, model = tiny
    proc = run_command("plot_surface.py", *TINY, *PART, "--axes", "hessian", "--xnorm", "none", "--xignore", "none",
                       "--hessian_tol", "1e-8", "--x=-0.1:0.1:3", "--y=-0.1:0.1:3", "--dir_file", "h.h5",
                       "--surf_file", "hs.h5", "--quiet", cwd=root)
    assert "Hessian eigenvalues of the axes" in proc.stdout
    d = load_directions(str(root / "h.h5"))
    assert d.spec.kind == "hessian"
    part = _part()
    H = dense_hessian(model, part.inputs, part.targets)
    exact = np.linalg.eigvalsh(H)
    info = json.loads(d.spec.details)
    np.testing.assert_allclose(info["eigenvalues"], exact[::-1][:2], rtol=1e-6)
    for vec, lam in ((d.x, exact[-1]), (d.y, exact[-2])):
        u = torch.cat([t.reshape(-1) for t in vec]).double().numpy()
        assert np.linalg.norm(u) == pytest.approx(1.0, abs=1e-6)
        assert np.linalg.norm(H @ u - lam * u) < 1e-4 * lam
    # The surface along them: a plain evaluation of the moved model (hand-built weights).
    s = read_surface(str(root / "hs.h5"))
    with torch.no_grad():
        params = _moved(model, d, (0.1, -0.1))
        out = torch.func.functional_call(model, params, (part.inputs,))
        loss = F.cross_entropy(out.double(), part.targets).item()
    assert s.values["train_loss"][0, 2] == pytest.approx(loss, rel=1e-5)


@pytest.fixture(scope="module")
def adam_run(tiny):
    """The tiny model after a few Adam steps, with its optimizer state saved as training saves it."""
    root, _ = tiny
    part = _part()
    model, opt = tiny_after_adam(part.inputs, part.targets)
    folder = root / "adam"
    folder.mkdir(exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "epoch": 5, "acc": 0.0}, folder / "model_5.t7")
    torch.save({"optimizer": opt.state_dict()}, folder / "opt_state_5.t7")
    return folder, model, opt


def _loss_with(model, params, part) -> float:
    with torch.no_grad():
        out = torch.func.functional_call(model, {k: v.double() for k, v in params.items()}, (part.inputs.double(),))
        return F.cross_entropy(out, part.targets).item()


@pytest.mark.parametrize("mode", ["add", "adameq"])
def test_adam_axes_move_the_model_as_defined(tiny, adam_run, mode):
    root, _ = tiny
    folder, model, opt = adam_run
    y = "--y=0.5:2:2" if mode == "adameq" else "--y=-1:1:2"
    run_command("plot_surface.py", "--model", "tinynet:net", "--model_file", str(folder / "model_5.t7"),
                "--dataset", "digits", *PART, "--axes", "adam", "--adam_mode", mode, "--xnorm", "none",
                "--xignore", "none", "--x=-1:1:3", y, "--dir_file", f"a_{mode}.h5", "--surf_file", f"as_{mode}.h5",
                "--quiet", cwd=root)
    s = read_surface(str(root / f"as_{mode}.h5"))
    part = _part()
    eps = opt.param_groups[0]["eps"]
    for j, b in enumerate(s.y):
        for i, a in enumerate(s.x):
            params = {}
            for name, p in model.named_parameters():
                st = opt.state[p]
                m, v, w0 = st["exp_avg"].double(), st["exp_avg_sq"].double(), p.detach().double()
                if mode == "add":
                    params[name] = w0 + a * m + b * v
                else:  # LLA's adameq: one step of Adam's update direction, k = x / sqrt(y)
                    params[name] = w0 + (a / np.sqrt(b)) * m / (v.sqrt() + eps)
            assert s.values["train_loss"][j, i] == pytest.approx(_loss_with(model, params, part), rel=1e-5), (a, b)
    spec = load_directions(str(root / f"a_{mode}.h5")).spec
    assert spec.kind == ("adam" if mode == "add" else "adam-adameq")
    assert json.loads(spec.details)["opt_file"].endswith("opt_state_5.t7")


def test_bad_inputs_get_one_line(tiny, adam_run):
    root, _ = tiny
    folder, model, _ = adam_run
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    F.cross_entropy(model(_part().inputs), _part().targets).backward()
    sgd.step()
    torch.save({"optimizer": sgd.state_dict()}, root / "sgd_state.t7")
    cases = [
        ("plot_hessian_eigen.py", [*TINY, "--eval_on", "both"], "train or test, not both"),
        ("plot_hessian_eigen.py", [*TINY, "--precision", "bf16"], "fp32 only"),
        ("plot_hessian_eigen.py", [*TINY, "--hessian_params", "bias"], "invalid choice"),
        ("plot_surface.py", [*TINY, "--axes", "hessian", "--dir_type", "states"], "use --dir_type weights"),
        ("plot_surface.py", [*TINY, "--axes", "adam", "--opt_file", "sgd_state.t7", "--y=-1:1:3"], "SGD"),
        ("plot_surface.py", [*TINY, "--axes", "adam", "--y=-1:1:3"], "give --opt_file"),
        ("plot_surface.py", ["--model", "tinynet:net", "--model_file", str(folder / "model_5.t7"), "--dataset",
                             "digits", "--axes", "adam", "--adam_mode", "adameq", "--y=-1:1:3"], "--y must be > 0"),
    ]
    for script, args, message in cases:
        proc = run_command(script, *args, "--quiet", "--x=-1:1:3", cwd=root, check=False)
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith(("usage:", "  "))]
        assert proc.returncode != 0 and "Traceback" not in proc.stderr, (args, proc.stderr)
        assert len(lines) == 1 and message in lines[0], (args, proc.stderr)


def test_eigenvalue_map_evaluator_runs_in_strict_fp32():
    """Each point's BN recalibration and Hessian-vector products run with TF32 off, whatever the globals say."""
    from loss_landscape.data import EvalData, Split
    from loss_landscape.surface.eigen import EigenEvaluator, EigenSettings
    from loss_landscape.directions.spec import DirectionSpec
    from loss_landscape.directions.make import make_directions
    from loss_landscape.surface.grid import Axis, Grid
    from test_evaluation import STRICT, FlagRecorder, data, tf32_globals

    x, y = data(n=40)
    model = FlagRecorder()
    evaldata = EvalData("recorded", Split(x, y), Split(x, y), num_classes=7)
    dirs = make_directions(model, DirectionSpec(seed=1))
    settings = EigenSettings(tol=1e-3, batch_size=16, bn_recalibrate=2)
    evaluator = EigenEvaluator(model, evaldata, dirs, Grid(Axis(-0.1, 0.1, 2)), settings, torch.device("cpu"))
    with tf32_globals():
        out = evaluator([(0, ("eig",)), (1, ("eig",))])
    assert [flat for flat, _ in out] == [0, 1] and all(np.isfinite(v["eig"]).all() for _, v in out)
    assert model.take() == {STRICT}


def lm_tokens():
    """The factory ``test_hessian_eigen:lm_tokens``: the token set of test_any_loss_curvature (some targets -100),
    as both splits."""
    from test_any_loss_curvature import tokens
    x, y = tokens()
    return (x, y), (x, y)


@pytest.mark.slow
def test_eigenvalue_map_of_a_language_model(tmp_path, monkeypatch, capsys):
    """plot_hessian_eigen.py of a tiny causal LM on token ids with ignored targets: each point's extreme eigenvalues
    against a dense float64 Hessian of the token-weighted mean loss of the model moved by hand."""
    import copy

    from loss_landscape.cli import hessian_eigen
    from test_any_loss_curvature import dense_hessian as dense_of, tiny_lm, token_mean
    monkeypatch.chdir(tmp_path)
    model = tiny_lm()
    torch.save({"state_dict": model.state_dict()}, tmp_path / "lm.t7")
    code = hessian_eigen.run(["--model", "test_any_loss_curvature:tiny_lm", "--model_file", "lm.t7", "--dataset",
                              "test_hessian_eigen:lm_tokens", "--loss_name", "token_crossentropy", "--batch_size", "4",
                              "--x=-0.5:0.5:2", "--hessian_tol", "1e-8", "--dir_file", "d.h5", "--surf_file",
                              "eig.h5", "--quiet"])
    assert code == 0, capsys.readouterr().err
    s = read_surface(str(tmp_path / "eig.h5"))
    dirs = load_directions(str(tmp_path / "d.h5"))
    assert s.attrs["loss_name"] == "token_crossentropy"
    (x, y), _ = lm_tokens()
    for i, a in enumerate(s.x):
        moved = copy.deepcopy(model)
        with torch.no_grad():
            for name, p in moved.named_parameters():
                p.copy_(_moved(model, dirs, (a,))[name])
        exact = np.linalg.eigvalsh(dense_of(moved, lambda f: token_mean(f(x), y)))
        assert s.values["max_eig"][i] == pytest.approx(exact[-1], rel=1e-5)
        assert abs(s.values["min_eig"][i] - exact[0]) <= 1e-5 * np.abs(exact).max()


def test_metrics_do_not_apply_to_eigenvalue_maps(tiny):
    root, _ = tiny
    proc = run_command("plot_hessian_eigen.py", *TINY, "--metric", "top5", "--x=-1:1:3", "--quiet", cwd=root,
                       check=False)
    assert proc.returncode == 2 and "--metric does not apply to an eigenvalue map" in proc.stderr
