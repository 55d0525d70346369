"""Several runs in one plane, loss along the path, the picture and the animation of trajectories, and bad input
of plot_trajectory.py / animate_trajectory.py (tiny random-walk checkpoints made here, seconds each)."""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from loss_landscape.models import digits as embedded
from conftest import run_command
from loss_landscape.directions.spec import DirectionSpec, Directions
from loss_landscape.directions.files import save_directions
from loss_landscape.params import ParamVector
from test_trajectory import write_path
from loss_landscape.trajectory.pca import Checkpoint, list_checkpoints, project_trajectory
from loss_landscape.plotting.paths import count_frames, label_subset
from loss_landscape.trajectory.runs import Run, read_runs, shared_directions

N = 6  # checkpoints per run


def write_cnn_path(folder, seed):
    """write_path of digits_cnn, with the random walk's BatchNorm running variances made positive again (so
    that each checkpoint evaluates to a finite loss)."""
    ckpts = write_path(folder, name="digits_cnn", n=N, seed=seed)
    for c in ckpts:
        obj = torch.load(c.path, weights_only=True)
        obj["state_dict"] = {k: v.abs() + 0.5 if k.endswith("running_var") else v for k, v in obj["state_dict"].items()}
        torch.save(obj, c.path)
    return ckpts


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    a = write_cnn_path(root / "a", seed=0)
    b = write_cnn_path(root / "b", seed=1)
    return root, [Run("a", a, str(root / "a")), Run("b", b, str(root / "b"))]


def _in_plane(tmp_path, final: Checkpoint, dirs: Directions, a: float, b: float) -> Checkpoint:
    """A checkpoint at w_final + a x + b y (parameters only: the directions are of weights)."""
    model = embedded.create_model("digits_cnn")
    model.load_state_dict(torch.load(final.path, weights_only=True)["state_dict"])
    with torch.no_grad():
        for p, u, v in zip(model.parameters(), dirs.x, dirs.y):
            p.add_(a * u + b * v)
    path = tmp_path / "plane.t7"
    torch.save({"state_dict": model.state_dict(), "epoch": 99, "acc": 0.0}, path)
    return Checkpoint(99, str(path))


@pytest.mark.parametrize("basis", ["pca", "pca_run", "random"])
def test_shared_basis_projects_consistently(two_runs, tmp_path, basis):
    _, runs = two_runs
    dirs, pca = shared_directions("digits_cnn", runs, center=1, basis=basis, log=lambda *a: None)
    assert (pca is None) == (basis == "random")
    final = runs[1].checkpoints[-1]
    for r in runs:
        proj = project_trajectory("digits_cnn", r.checkpoints, dirs, final=final, method="lstsq")
        assert len(proj.x) == N
        if r is runs[1]:
            assert proj.x[-1] == 0 and proj.y[-1] == 0
        else:
            assert np.hypot(proj.x[-1], proj.y[-1]) > 0  # another run's end is elsewhere
    plane = _in_plane(tmp_path, final, dirs, 0.4, -0.9)
    p = project_trajectory("digits_cnn", [plane], dirs, final=final, method="lstsq")
    assert p.x[0] == pytest.approx(0.4, abs=1e-5) and p.y[0] == pytest.approx(-0.9, abs=1e-5)
    assert p.relative_distance[0] < 1e-5


def test_pca_of_all_runs_is_pca_of_their_rows(two_runs):
    """PCA of both runs = PCA of the stacked differences to the centre run's final model."""
    from sklearn.decomposition import PCA
    _, runs = two_runs
    dirs, pca = shared_directions("digits_cnn", runs, center=0, basis="pca", log=lambda *a: None)
    final = ParamVector.from_model(_model(runs[0].checkpoints[-1].path), "weights")

    def row(c):
        w = ParamVector.from_model(_model(c.path), "weights")
        return torch.cat([(a - b).reshape(-1).double() * (a.dim() > 1) for a, b in zip(w, final)]).numpy()

    X = np.stack([row(c) for r in runs for c in r.checkpoints])
    ref = PCA(2).fit(X)
    np.testing.assert_allclose(pca.explained_variance_ratio_, ref.explained_variance_ratio_, rtol=1e-5)
    u = torch.cat([t.reshape(-1).double() for t in dirs.x]).numpy()
    assert abs(abs(u @ ref.components_[0]) - 1) < 1e-5


def _model(path):
    m = embedded.create_model("digits_cnn")
    m.load_state_dict(torch.load(path, weights_only=True)["state_dict"])
    return m


def test_label_subset_keeps_spacing():
    x = np.r_[np.linspace(1, 0.2, 8), 0.2 * 0.5 ** np.arange(1, 12)]  # the last epochs crowd near 0
    y = np.zeros_like(x)
    idx = label_subset(x, y, (0, 1), (-0.5, 0.5), 0.1)
    assert idx[0] == 0 and idx[-1] == len(x) - 1
    pts = x[idx]
    assert np.min(np.abs(np.subtract.outer(pts, pts))[~np.eye(len(pts), dtype=bool)]) >= 0.1
    assert idx == list(range(8)) + [len(x) - 1]  # the spread-out part, and of the crowd only the final point


def test_end_to_end_two_runs_surface_picture_and_animation(two_runs):
    """plot_trajectory (two runs, evaluated) -> plot_surface on its directions -> animate_trajectory, and
    plot_2D with epoch labels; the GIF and MP4 have the documented frame counts and are not blank."""
    root, runs = two_runs
    run_command("plot_trajectory.py", "--model", "digits_cnn", "--model_folder", "a", "b", "--labels", "sgd", "adam",
                "--max_epoch", str(N - 1), "--dir_file", "pca.h5", "--eval_on", "train", "--method", "lstsq", cwd=root)
    paths, center, attrs = read_runs(str(root / "pca.h5_proj_lstsq.h5"))
    assert [p.label for p in paths] == ["sgd", "adam"] and center == 0 and attrs["basis"] == "pca"
    assert all(len(p.metrics.loss) == N and np.isfinite(p.metrics.loss).all() for p in paths)
    report = json.loads((root / "pca.h5_proj_lstsq.h5.json").read_text())
    assert len(report["runs"]) == 2 and "loss" in report["runs"][1]["checkpoints"][0]
    run_command("plot_surface.py", "--model", "digits_cnn", "--model_file", runs[0].checkpoints[-1].path,
                "--dir_file", "pca.h5", "--x=-1:1:5", "--y=-2:2:5", "--quiet", "--surf_file", "surf.h5", cwd=root)
    # the surface's centre is the centre run's final model: the same loss as its own evaluation
    from loss_landscape.surface.reader import read_surface
    s = read_surface(str(root / "surf.h5"))
    assert s.values["train_loss"][np.argmin(np.abs(s.y)), np.argmin(np.abs(s.x))] == pytest.approx(
        paths[0].metrics.loss[-1], rel=1e-5)
    hold = 2
    out = run_command("animate_trajectory.py", "--proj_file", "pca.h5_proj_lstsq.h5", "--surf_file", "surf.h5",
                      "--prefix", "anim", "--fps", "5", "--hold", str(hold), "--dpi", "50", cwd=root)
    assert "anim.gif (6 frames)" in out.stdout
    frames = iio.imread(root / "anim.gif", index=None)
    assert frames.shape[0] == N == count_frames(str(root / "anim.gif"))
    assert all(f.std() > 20 for f in frames)
    diffs = [np.abs(frames[i + 1].astype(int) - frames[i]).sum() for i in range(N - 1)]
    assert all(d > 0 for d in diffs)  # the path grows: every frame differs from the one before
    assert count_frames(str(root / "anim.mp4")) == N + hold
    assert (root / "anim.png").stat().st_size > 10_000
    run_command("plot_2D.py", "--surf_file", "surf.h5", "--proj_file", "pca.h5_proj_lstsq.h5", "--kind", "filled",
                "--format", "png", "--dpi", "50", cwd=root)
    assert (root / "surf_train_loss_2dcontourf.png").exists()


def test_random_and_file_bases(two_runs, tmp_path):
    root, runs = two_runs
    run_command("plot_trajectory.py", "--model", "digits_cnn", "--model_folder", str(root / "a"), str(root / "b"),
                "--max_epoch", str(N - 1), "--basis", "random", "--seed", "7", "--dir_file", "rnd.h5",
                "--method", "lstsq", "--no_plot", cwd=tmp_path)
    p_rnd, _, _ = read_runs(str(tmp_path / "rnd.h5_proj_lstsq.h5"))
    assert p_rnd[0].projection.x[-1] == 0 and p_rnd[0].metrics is None
    # the same random directions as plot_surface.py draws with --seed 7
    model = _model(runs[0].checkpoints[-1].path)
    from loss_landscape.directions.files import load_directions
    from loss_landscape.directions.make import make_directions
    ref = make_directions(model, DirectionSpec(two_d=True, seed=7))
    got = load_directions(str(tmp_path / "rnd.h5"))
    assert all(torch.equal(a, b) for a, b in zip(got.x, ref.x))
    # a user-given file: the random pair written by hand gives the same projection
    save_directions(str(tmp_path / "mine.h5"), Directions(ref.x, ref.y, DirectionSpec(two_d=True, seed=7)))
    run_command("plot_trajectory.py", "--model", "digits_cnn", "--model_folder", str(root / "a"), str(root / "b"),
                "--max_epoch", str(N - 1), "--basis", "file", "--dir_file", "mine.h5", "--method", "lstsq",
                "--proj_file", "mine_proj.h5", cwd=tmp_path)
    p_file, _, attrs = read_runs(str(tmp_path / "mine_proj.h5"))
    assert attrs["basis"] == "file"
    for a, b in zip(p_rnd, p_file):
        np.testing.assert_allclose(a.projection.x, b.projection.x, rtol=1e-12)
        np.testing.assert_allclose(a.projection.y, b.projection.y, rtol=1e-12)


def _fails(script, *args, capsys):
    import importlib
    mod = importlib.import_module(script)
    capsys.readouterr()
    code = mod.main(mod.get_args_parser().parse_args(list(args)))
    err = capsys.readouterr().err
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def test_bad_inputs(tmp_path, capsys, monkeypatch):
    """Each gives one line on stderr and exit status 1 (missing epochs, another architecture and too few
    checkpoints for one run are in test_trajectory.py)."""
    monkeypatch.chdir(tmp_path)
    write_path(tmp_path / "mlp", n=N)
    write_path(tmp_path / "cnn", name="digits_cnn", n=N)
    write_path(tmp_path / "cnn2", name="digits_cnn", n=N, seed=3)
    common = ("--max_epoch", str(N - 1), "--no_plot")
    msg = _fails("plot_trajectory", "--model", "digits_cnn", "--model_folder", "cnn", "mlp", *common, capsys=capsys)
    assert "mlp/model_0.t7 does not fit model digits_cnn" in msg  # runs of different architectures
    msg = _fails("plot_trajectory", "--model", "digits_cnn", "--model_folder", "cnn", "mlp", "--basis", "random",
                 *common, capsys=capsys)
    assert "does not fit model digits_cnn" in msg
    msg = _fails("plot_trajectory", "--model", "digits_cnn", "--model_folder", "cnn", "cnn2", "--center_run", "2",
                 *common, capsys=capsys)
    assert "--center_run 2" in msg and "0..1" in msg
    msg = _fails("plot_trajectory", "--model", "digits_cnn", "--model_folder", "cnn", "cnn2", "--labels", "x",
                 *common, capsys=capsys)
    assert "1 label(s) for 2" in msg
    msg = _fails("plot_trajectory", "--model", "digits_cnn", "--model_folder", "cnn", "--basis", "random",
                 "--start_epoch", "5", *common, capsys=capsys)
    assert "at least 2 checkpoints, found 1" in msg  # a single checkpoint
    (tmp_path / "cnn2" / "model_3.t7").unlink()
    msg = _fails("plot_trajectory", "--model", "digits_cnn", "--model_folder", "cnn", "cnn2", *common, capsys=capsys)
    assert "cnn2/model_3.t7 (epoch 3) does not exist" in msg  # missing epochs in the second run
    msg = _fails("plot_trajectory", "--model", "digits_cnn", "--model_folder", "cnn", "--basis", "file",
                 "--dir_file", "none.h5", *common, capsys=capsys)
    assert "none.h5 does not exist" in msg
    mlp_dirs = shared_directions("digits_mlp", [Run("m", list_checkpoints("mlp", max_epoch=N - 1))], basis="random")[0]
    save_directions("mlp_dirs.h5", mlp_dirs)
    msg = _fails("plot_trajectory", "--model", "digits_cnn", "--model_folder", "cnn", "--basis", "file",
                 "--dir_file", "mlp_dirs.h5", *common, capsys=capsys)
    assert "mlp_dirs.h5 does not fit" in msg
    msg = _fails("animate_trajectory", "--proj_file", "nothing.h5", capsys=capsys)
    assert "nothing.h5 does not exist" in msg
    # a surface made on other directions than the paths' plane
    run_command("plot_trajectory.py", "--model", "digits_cnn", "--model_folder", "cnn", *common, "--dir_file",
                "p.h5", cwd=tmp_path)
    run_command("plot_surface.py", "--model", "digits_cnn", "--model_file", "cnn/model_5.t7", "--x=-1:1:3",
                "--y=-1:1:3", "--quiet", "--surf_file", "other.h5", cwd=tmp_path)
    msg = _fails("animate_trajectory", "--proj_file", "p.h5_proj_cos.h5", "--surf_file", "other.h5",
                 "--format", "gif", capsys=capsys)
    assert "other directions" in msg
    msg = _fails("animate_trajectory", "--proj_file", "p.h5_proj_cos.h5", "--fps", "0", "--format", "gif",
                 capsys=capsys)
    assert "--fps must be > 0" in msg
