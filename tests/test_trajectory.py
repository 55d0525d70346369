"""PCA trajectories: the Gram route against sklearn's PCA on the stacked differences, the projections, the
direction file as plot_surface.py reads it, and bad input."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from loss_landscape.models import digits as embedded
from loss_landscape.trajectory import pca as trajectory
from conftest import run_command
from loss_landscape.directions.files import check_fits, load_directions
from loss_landscape.params import ParamVector
from loss_landscape.plotting.two_d import read_axis_labels, read_projection
from loss_landscape.trajectory.pca import (Checkpoint, list_checkpoints, pca_directions, project_trajectory,
                                           save_pca_directions)
from loss_landscape.errors import TrajectoryError

K = 8  # checkpoints, the final one included


def write_path(folder, name="digits_mlp", n=K, seed=0, step=0.1):
    """A random walk of state dicts saved as the original's checkpoints model_0.t7 ... model_{n-1}.t7."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    state = {k: v.clone() for k, v in embedded.create_model(name).state_dict().items()}
    drift = {k: torch.randn_like(v) for k, v in state.items() if v.is_floating_point()}
    for e in range(n):
        state = {k: (v + step * (drift[k] + torch.randn_like(v)) if v.is_floating_point() else v + 1)
                 for k, v in state.items()}
        torch.save({"state_dict": state, "epoch": e, "acc": 0.0}, folder / f"model_{e}.t7")
    return list_checkpoints(str(folder), max_epoch=n - 1)


def flat_differences(ckpts, name="digits_mlp", dir_type="weights", ignore="biasbn"):
    """The K-1 x P matrix the original handed to sklearn (built here only as the reference)."""
    def vec(path):
        model = embedded.create_model(name)
        model.load_state_dict(torch.load(path, weights_only=True)["state_dict"])
        v = ParamVector.from_model(model, dir_type)
        return [t.detach().double() * (0 if (ignore == "biasbn" and t.dim() <= 1) or not t.is_floating_point()
                                       else 1) for t in v]
    final = vec(ckpts[-1].path)
    rows = []
    for c in ckpts:  # every checkpoint, the final one (a zero row) included, as the original
        rows.append(torch.cat([(a - b).reshape(-1) for a, b in zip(vec(c.path), final)]).numpy())
    return np.stack(rows)


def flat(vec: ParamVector) -> np.ndarray:
    return torch.cat([t.reshape(-1).double() for t in vec]).numpy()


@pytest.fixture(scope="module")
def path_ckpts(tmp_path_factory):
    return write_path(tmp_path_factory.mktemp("path") / "run")


@pytest.mark.parametrize("ignore", ["biasbn", ""])
def test_gram_route_matches_sklearn(path_ckpts, ignore):
    from sklearn.decomposition import PCA
    res = pca_directions("digits_mlp", path_ckpts, ignore=ignore, log=lambda *a: None)
    X = flat_differences(path_ckpts, ignore=ignore)
    ref = PCA(n_components=2).fit(X)
    np.testing.assert_allclose(res.explained_variance_ratio_, ref.explained_variance_ratio_, rtol=1e-6)
    np.testing.assert_allclose(res.singular_values_, ref.singular_values_, rtol=1e-6)
    np.testing.assert_allclose(res.explained_variance_, ref.explained_variance_, rtol=1e-6)
    for c, vec in enumerate((res.directions.x, res.directions.y)):
        u = flat(vec)
        assert abs(np.linalg.norm(u) - 1) < 1e-6
        sign = np.sign(u @ ref.components_[c])
        np.testing.assert_allclose(sign * u, ref.components_[c], atol=2e-6)
    # and against a direct SVD of the centred matrix
    _, s, vt = np.linalg.svd(X - X.mean(0), full_matrices=False)
    np.testing.assert_allclose(res.singular_values_, s[:2], rtol=1e-6)
    assert abs(abs(flat(res.directions.x) @ vt[0]) - 1) < 1e-6


def test_small_blocks_give_the_same_gram(path_ckpts):
    """One difference per block (the low-memory schedule) gives the Gram matrix of one block."""
    reader = trajectory._Reader("digits_mlp", "weights", "biasbn")
    final = reader.read(path_ckpts[-1].path)
    rows = path_ckpts
    g1 = trajectory.gram_matrix(reader, rows, final)
    g2 = trajectory.gram_matrix(reader, rows, final, max_block_bytes=4 * reader.numel * 2)
    X = flat_differences(path_ckpts)
    np.testing.assert_allclose(g1, X @ X.T, rtol=1e-6)
    np.testing.assert_allclose(g2, g1, rtol=1e-12)


def test_never_stacks_all_differences(path_ckpts, monkeypatch):
    """With a block budget of 2 differences no float32 block of more rows is allocated, and no float64
    array has K rows of P entries."""
    shapes = []
    real_empty = torch.empty

    def spy(*size, **kw):
        shape = tuple(size[0]) if len(size) == 1 and isinstance(size[0], (tuple, list)) else tuple(size)
        shapes.append((shape, kw.get("dtype")))
        return real_empty(*size, **kw)

    monkeypatch.setattr(trajectory.torch, "empty", spy)
    reader = trajectory._Reader("digits_mlp", "weights", "biasbn")
    pca_directions("digits_mlp", path_ckpts, max_block_bytes=4 * reader.numel * 2, log=lambda *a: None)
    blocks = [s for s, _ in shapes if len(s) == 2 and s[1] == reader.numel]
    assert blocks and all(s[0] <= 2 for s in blocks)


def test_biasbn_zeroed_and_file_layout(path_ckpts, tmp_path):
    res = pca_directions("digits_mlp", path_ckpts, log=lambda *a: None)
    model = embedded.create_model("digits_mlp")
    w = ParamVector.from_model(model, "weights")
    for vec in (res.directions.x, res.directions.y):
        for name, t in zip(vec.names, vec):
            assert t.dtype == torch.float32
            if t.dim() <= 1:
                assert torch.count_nonzero(t) == 0, name
    path = tmp_path / "pca.h5"
    save_pca_directions(str(path), res)
    d = load_directions(str(path))
    check_fits(d, w)
    assert d.spec.kind == "pca" and d.y is not None and d.spec.two_d
    assert d.x.names == w.names and d.x.shapes == w.shapes
    with h5py.File(path, "r") as f:
        for key in ("explained_variance_ratio_", "singular_values_", "explained_variance_"):
            assert f[key].shape == (2,)
        np.testing.assert_allclose(f["explained_variance_ratio_"][()], res.explained_variance_ratio_)
    xl, yl = read_axis_labels(str(path))
    assert xl.startswith("1st PC") and yl.startswith("2nd PC")


def test_states_directions_fit_the_state_dict(tmp_path):
    ckpts = write_path(tmp_path / "cnn", name="digits_cnn", n=5)
    res = pca_directions("digits_cnn", ckpts, dir_type="states", ignore="", log=lambda *a: None)
    s = ParamVector.from_model(embedded.create_model("digits_cnn"), "states")
    check_fits(res.directions, s)
    nbt = s.names.index("bn1.num_batches_tracked")
    assert torch.count_nonzero(res.directions.x[nbt]) == 0  # integer buffers never enter the PCA
    assert torch.count_nonzero(res.directions.x[s.names.index("bn1.running_mean")]) > 0


@pytest.mark.parametrize("method", ["cos", "lstsq"])
def test_projection_final_and_in_plane_point(path_ckpts, tmp_path, method):
    res = pca_directions("digits_mlp", path_ckpts, log=lambda *a: None)
    final = path_ckpts[-1]
    proj = project_trajectory("digits_mlp", path_ckpts, res.directions, final=final, method=method)
    assert proj.x[-1] == 0 and proj.y[-1] == 0 and proj.distance[-1] == 0
    # the coordinates of the PCA rows: <d_k, u>, so their centred values are sklearn's transform()
    from sklearn.decomposition import PCA
    X = flat_differences(path_ckpts)
    t = PCA(n_components=2).fit(X).transform(X)
    xy = np.stack([proj.x, proj.y], 1)
    xy -= xy.mean(0)
    np.testing.assert_allclose(np.abs(xy), np.abs(t), rtol=1e-5, atol=1e-6)
    # a checkpoint in the plane: w_final + a u + b v
    a, b = 0.7, -1.3
    state = torch.load(final.path, weights_only=True)["state_dict"]
    model = embedded.create_model("digits_mlp")
    model.load_state_dict(state)
    with torch.no_grad():
        for p, u, v in zip(model.parameters(), res.directions.x, res.directions.y):
            p.add_(a * u + b * v)
    plane = tmp_path / "plane.t7"
    torch.save({"state_dict": model.state_dict(), "epoch": 99, "acc": 0.0}, plane)
    p2 = project_trajectory("digits_mlp", [Checkpoint(99, str(plane))], res.directions, final=final, method=method)
    tol = 1e-6 if method == "lstsq" else 1e-5
    assert p2.x[0] == pytest.approx(a, abs=tol) and p2.y[0] == pytest.approx(b, abs=tol)
    assert p2.relative_distance[0] < 1e-6


def test_command_end_to_end(tmp_path):
    ckpts = write_path(tmp_path / "run")
    out = run_command("plot_trajectory.py", "--model", "digits_mlp", "--model_folder", "run", "--max_epoch",
                      str(K - 1), "--dir_file", "pca.h5", "--method", "lstsq", cwd=tmp_path)
    assert "explained variance ratio" in out.stdout
    xs, ys = read_projection(str(tmp_path / "pca.h5_proj_lstsq.h5"))
    assert len(xs) == K and xs[-1] == 0 and ys[-1] == 0
    with h5py.File(tmp_path / "pca.h5_proj_lstsq.h5", "r") as f:
        assert list(f.attrs["epochs"]) == list(range(K)) and f.attrs["method"] == "lstsq"
    import json
    report = json.loads((tmp_path / "pca.h5_proj_lstsq.h5.json").read_text())
    assert len(report["checkpoints"]) == K and len(report["explained_variance_ratio_"]) == 2
    assert (tmp_path / "pca.h5_proj_lstsq.h5.png").stat().st_size > 0
    run_command("plot_surface.py", "--model", "digits_mlp", "--model_file", ckpts[-1].path, "--dir_file", "pca.h5",
                "--x=-1:1:3", "--y=-1:1:3", "--quiet", "--surf_file", "surf.h5", cwd=tmp_path)
    run_command("plot_2D.py", "--surf_file", "surf.h5", "--proj_file", "pca.h5_proj_lstsq.h5", "--dir_file",
                "pca.h5", "--kind", "contour", "--format", "png", cwd=tmp_path)
    assert (tmp_path / "surf_train_loss_2dcontour.png").exists()


def _fails(tmp_path, *args, capsys=None):
    """Runs the command (in this process when `capsys` is given: the same main(), without the start-up cost)."""
    if capsys is None:
        proc = run_command("plot_trajectory.py", *args, cwd=tmp_path, check=False)
        code, err = proc.returncode, proc.stderr
    else:
        from loss_landscape.cli import trajectory as plot_trajectory
        capsys.readouterr()
        code = plot_trajectory.main(plot_trajectory.get_args_parser().parse_args(list(args)))
        err = capsys.readouterr().err
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_bad_input_subprocess(tmp_path):
    write_path(tmp_path / "two", n=2)
    msg = _fails(tmp_path, "--model", "digits_mlp", "--model_folder", "two", "--max_epoch", "1")
    assert "at least 3 checkpoints" in msg and "found 2" in msg


def test_bad_inputs(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def fails(*args):
        return _fails(tmp_path, *args, capsys=capsys)

    write_path(tmp_path / "run", n=5)
    (tmp_path / "run" / "model_2.t7").unlink()
    msg = fails("--model", "digits_mlp", "--model_folder", "run", "--max_epoch", "4")
    assert "model_2.t7" in msg
    write_path(tmp_path / "two", n=2)
    msg = fails("--model", "digits_mlp", "--model_folder", "two", "--max_epoch", "1")
    assert "at least 3 checkpoints" in msg and "found 2" in msg
    write_path(tmp_path / "cnn", name="digits_cnn", n=5)
    msg = fails("--model", "digits_mlp", "--model_folder", "cnn", "--max_epoch", "4")
    assert "does not fit model digits_mlp" in msg and "model_4.t7" in msg and "'fc1.weight'" in msg
    (tmp_path / "two" / "model_1.t7").rename(tmp_path / "run" / "model_2.t7")  # the mlp path, complete again
    (tmp_path / "cnn" / "model_3.t7").replace(tmp_path / "run" / "model_3.t7")  # one foreign checkpoint
    msg = fails("--model", "digits_mlp", "--model_folder", "run", "--max_epoch", "4")
    assert "run/model_3.t7 does not fit model digits_mlp" in msg and "'fc1.weight'" in msg
    msg = fails("--model", "digits_mlp", "--model_folder", "run", "--start_epoch", "4", "--max_epoch", "4")
    assert "found 1" in msg
    msg = fails("--model", "no_such_net", "--model_folder", "run", "--max_epoch", "4")
    assert "unknown model 'no_such_net'" in msg
    msg = fails("--model", "digits_mlp", "--model_folder", "nowhere", "--max_epoch", "4")
    assert "does not exist" in msg


def test_degenerate_path_refused(tmp_path):
    """Checkpoints on one line around their mean have no second principal direction."""
    folder = tmp_path / "line"
    folder.mkdir()
    base = embedded.create_model("digits_mlp").state_dict()
    d = {k: torch.randn_like(v) for k, v in base.items()}
    for e in range(5):
        torch.save({"state_dict": {k: base[k] + e * d[k] for k in base}, "epoch": e, "acc": 0.0},
                   folder / f"model_{e}.t7")
    with pytest.raises(TrajectoryError, match="fewer than 2 dimensions"):
        pca_directions("digits_mlp", list_checkpoints(str(folder), max_epoch=4), log=lambda *a: None)


# ----------------------------------------------------------------------------------------------------------
# Any model, data and loss along the paths
# ----------------------------------------------------------------------------------------------------------

def write_factory_path(folder, factory, n=4, seed=0, step=0.05):
    """A random walk of a factory model's state dict, saved as model_0.t7 ... model_{n-1}.t7."""
    from loss_landscape.models.loading import build_model
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    state = {k: v.clone() for k, v in build_model(factory).state_dict().items()}
    for e in range(n):
        state = {k: v + step * torch.randn(v.shape, generator=g) for k, v in state.items()}
        torch.save({"state_dict": state, "epoch": e, "acc": 0.0}, folder / f"model_{e}.t7")
    return list_checkpoints(str(folder), max_epoch=n - 1)


def reg_model():
    """The factory ``test_trajectory:reg_model``: a small regression MLP."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))


def reg_data():
    """The factory ``test_trajectory:reg_data``: float inputs (N, 3) and float targets (N, 2)."""
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(60, 3, generator=g), torch.randn(60, 2, generator=g)
    return (x[:40], y[:40]), (x[40:], y[40:])


def test_language_model_path_with_token_loss(tmp_path, capsys):
    """plot_trajectory.py --eval_on test of a tiny char LM: each checkpoint's token loss and accuracy against an
    independent computation."""
    import json

    from loss_landscape.cli import trajectory as plot_trajectory
    from loss_landscape.models.loading import load_model
    from test_train import _token_loss_and_acc, tiny_lm_data
    ckpts = write_factory_path(tmp_path / "lm", "test_train:tiny_lm")
    args = plot_trajectory.get_args_parser().parse_args(
        ["--model", "test_train:tiny_lm", "--model_folder", str(tmp_path / "lm"), "--max_epoch", "3",
         "--dir_file", str(tmp_path / "lm.h5"), "--eval_on", "test", "--dataset", "test_train:tiny_lm_data",
         "--loss_name", "token_crossentropy", "--batch_size", "10", "--no_plot"])
    assert plot_trajectory.main(args) == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "lm.h5_proj_cos.h5.json").read_text())
    _, (tx, ty) = tiny_lm_data()
    for c, rec in zip(ckpts, report["runs"][0]["checkpoints"]):
        loss, acc = _token_loss_and_acc(load_model("test_train:tiny_lm", c.path), tx, ty)
        assert rec["loss"] == pytest.approx(loss, rel=1e-5) and rec["acc"] == pytest.approx(acc, abs=1e-9)


def test_regression_path_has_no_accuracy(tmp_path, capsys):
    import json

    from loss_landscape.cli import trajectory as plot_trajectory
    from loss_landscape.models.loading import load_model
    from loss_landscape.trajectory.runs import evaluate_path
    ckpts = write_factory_path(tmp_path / "reg", "test_trajectory:reg_model")
    args = plot_trajectory.get_args_parser().parse_args(
        ["--model", "test_trajectory:reg_model", "--model_folder", str(tmp_path / "reg"), "--max_epoch", "3",
         "--dir_file", str(tmp_path / "reg.h5"), "--eval_on", "train", "--dataset", "test_trajectory:reg_data",
         "--loss_name", "regression_mse"])
    assert plot_trajectory.main(args) == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "reg.h5_proj_cos.h5.json").read_text())
    (x, y), _ = reg_data()
    for c, rec in zip(ckpts, report["runs"][0]["checkpoints"]):
        with torch.no_grad():
            ref = torch.nn.functional.mse_loss(load_model("test_trajectory:reg_model", c.path)(x), y).item()
        assert rec["loss"] == pytest.approx(ref, rel=1e-5) and rec["acc"] is None
    assert (tmp_path / "reg.h5_proj_cos.h5.png").stat().st_size > 0
    # The library takes bare inputs of any structure too, and refuses a loss that does not fit the outputs.
    m = evaluate_path("test_trajectory:reg_model", ckpts, x, y, loss_name="regression_l1", batch_size=7)
    assert np.isnan(m.acc).all() and m.loss.shape == (4,)
    with pytest.raises(TrajectoryError, match="crossentropy: expected logits"):
        evaluate_path("test_trajectory:reg_model", ckpts, x, y, loss_name="crossentropy")
