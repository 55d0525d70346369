"""A direction file is part of a job's identity: a reopened file must hold the directions the command asks for
(every setting that changes their values, compared with what the file records), an explicit --dir_file is
checked against the direction flags given and used as it is when none is, and Hessian axes are unit
eigenvectors unless a normalization is asked."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from conftest import dense_hessian, run_command, tiny_after_adam
from loss_landscape.data import load_dataset, take_part
from loss_landscape.errors import DirectionError
from loss_landscape.directions.spec import Directions, DirectionSpec
from loss_landscape.directions.identity import direction_identity
from loss_landscape.directions.files import load_directions, save_directions
from loss_landscape.directions.vectors import normalize_direction_
from loss_landscape.directions.make import open_directions, setup_directions
from loss_landscape.params import ParamVector
from loss_landscape.surface.reader import read_surface

TINY = ["--model", "tinynet:net", "--model_file", "tiny.t7", "--dataset", "digits"]
PART = ["--data_split", "10", "--split_idx", "1"]  # 140 train examples: dense Hessians stay quick


def quiet(*_):
    pass


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))


def _write(path, net, spec: DirectionSpec) -> None:
    """A direction file with `spec` recorded and random values that fit `net`."""
    w = ParamVector.from_model(net, spec.dir_type)
    g = torch.Generator().manual_seed(1)
    vecs = [ParamVector(w.names, [torch.randn(t.shape, generator=g) for t in w]) for _ in range(2)]
    save_directions(str(path), Directions(vecs[0], vecs[1] if spec.two_d else None, spec))


HESSIAN = DirectionSpec(kind="hessian", xnorm="", xignore="", two_d=True, details=json.dumps(
    {"params": "all", "tol": 1e-4, "seed": 0, "eig_on": "train", "loss_name": "crossentropy"}))
ADAM = DirectionSpec(kind="adam", two_d=True, details=json.dumps({"opt_file": "o.t7", "opt_sha256": "a" * 64,
                                                                   "eps": None}))
TARGET = DirectionSpec(kind="target", xnorm="", xignore="", two_d=True, model_file2="b.t7", model2_sha256="b" * 64,
                       model_file3="c.t7", model3_sha256="c" * 64, ynorm="", yignore="")


def _details(spec, **changes):
    return dataclasses.replace(spec, details=json.dumps({**json.loads(spec.details), **changes}))


@pytest.mark.parametrize("made, asked, message", [
    (DirectionSpec(two_d=True), DirectionSpec(two_d=True, seed=5), "--seed: found 123, asked 5"),
    (DirectionSpec(two_d=True), DirectionSpec(two_d=True, idx=2), "--idx: found 0, asked 2"),
    (DirectionSpec(two_d=True), DirectionSpec(two_d=True, xnorm="layer"), "--xnorm: found filter, asked layer"),
    (DirectionSpec(two_d=True), DirectionSpec(two_d=True, xignore=""), "--xignore: found biasbn, asked none"),
    (DirectionSpec(two_d=True), DirectionSpec(two_d=True, ynorm="dlayer"), "--ynorm: found filter, asked dlayer"),
    (DirectionSpec(two_d=True), DirectionSpec(two_d=True, yignore=""), "--yignore: found biasbn, asked none"),
    (DirectionSpec(two_d=True), DirectionSpec(two_d=True, same_dir=True), "--same_dir: found off, asked on"),
    (DirectionSpec(), DirectionSpec(dir_type="states"), "--dir_type: found weights, asked states"),
    (DirectionSpec(two_d=True), TARGET, "kind: found random, asked target"),
    (TARGET, dataclasses.replace(TARGET, model2_sha256="d" * 64),
     f"--model_file2: found sha256 {'b' * 12}, asked sha256 {'d' * 12}"),
    (TARGET, dataclasses.replace(TARGET, model3_sha256="d" * 64),
     f"--model_file3: found sha256 {'c' * 12}, asked sha256 {'d' * 12}"),
    (dataclasses.replace(TARGET, model_file3="", model3_sha256="", ynorm=None, yignore=None), TARGET,
     f"--model_file3: found none, asked sha256 {'c' * 12}"),
    (HESSIAN, _details(HESSIAN, params="dim>1"), "--hessian_params: found all, asked dim>1"),
    (HESSIAN, _details(HESSIAN, tol=1e-8), "--hessian_tol: found 0.0001, asked 1e-08"),
    (HESSIAN, _details(HESSIAN, seed=3), "--hessian_seed: found 0, asked 3"),
    (HESSIAN, _details(HESSIAN, loss_name="mse"), "--loss_name: found crossentropy, asked mse"),
    (HESSIAN, dataclasses.replace(HESSIAN, xnorm="filter", xignore="biasbn"), "--xnorm: found none, asked filter"),
    (ADAM, _details(ADAM, eps=1e-6), "--adam_eps: found the optimizer's own, asked 1e-06"),
    (ADAM, dataclasses.replace(ADAM, kind="adam-adameq"), "--adam_mode: found add, asked adameq"),
    (ADAM, _details(ADAM, opt_sha256="e" * 64), f"--opt_file: found sha256 {'a' * 12}, asked sha256 {'e' * 12}"),
])
def test_a_file_made_for_other_directions_is_refused(tmp_path, made, asked, message):
    net = small_net()
    _write(tmp_path / "d.h5", net, made)
    with pytest.raises(DirectionError, match="holds other directions than asked") as err:
        setup_directions(str(tmp_path / "d.h5"), net, asked, log=quiet)
    text = str(err.value)
    assert message in text and "delete it" in text and "\n" not in text, text
    open_directions(str(tmp_path / "d.h5"), net, made, log=quiet)  # what it was made for opens


def test_results_and_paths_are_not_part_of_the_identity(tmp_path):
    net = small_net()
    made = dataclasses.replace(_details(HESSIAN, eigenvalues=[3.0, 2.0], residuals=[1e-9, 1e-9], matvecs=40,
                                        axes="the unit eigenvectors"), model_file="elsewhere/m.t7")
    _write(tmp_path / "h.h5", net, made)
    open_directions(str(tmp_path / "h.h5"), net, HESSIAN, log=quiet)
    _write(tmp_path / "t.h5", net, TARGET)
    open_directions(str(tmp_path / "t.h5"), net, dataclasses.replace(TARGET, model_file2="moved/b.t7"), log=quiet)
    # A 1D target does not depend on the seed, a same_dir y not on its norm.
    one_d = dataclasses.replace(TARGET, two_d=False)
    assert "--seed" not in direction_identity(one_d) and "--model_file3" not in direction_identity(one_d)
    assert "--ynorm" not in direction_identity(DirectionSpec(two_d=True, same_dir=True))


def test_old_files_without_target_checksums_stay_usable(tmp_path):
    net = small_net()
    _write(tmp_path / "old.h5", net, TARGET)
    with h5py.File(tmp_path / "old.h5", "r+") as f:  # as written before the checksums were recorded
        spec = json.loads(f.attrs["spec"])
        for key in ("model2_sha256", "model3_sha256"):
            del spec[key]
        f.attrs["spec"] = json.dumps(spec)
    d = open_directions(str(tmp_path / "old.h5"), net, TARGET, log=quiet)
    assert d.spec.model2_sha256 == "" and d.y is not None
    with h5py.File(tmp_path / "old.h5", "r+") as f:  # and a later version's extra fields do not break reading
        f.attrs["spec"] = json.dumps({**json.loads(f.attrs["spec"]), "some_future_field": 1})
    assert load_directions(str(tmp_path / "old.h5")).spec.kind == "target"


def test_asked_settings_only_and_none_at_all(tmp_path):
    net = small_net()
    made = DirectionSpec(two_d=True, seed=7, xnorm="layer")
    _write(tmp_path / "d.h5", net, made)
    notes = []
    d = open_directions(str(tmp_path / "d.h5"), net, DirectionSpec(two_d=True), asked={}, log=notes.append)
    assert d.spec == made
    assert any("as it is (no direction flag given): random directions (x and y)" in n and "--seed 7" in n
               and "--xnorm layer" in n for n in notes), notes
    open_directions(str(tmp_path / "d.h5"), net, DirectionSpec(two_d=True), asked={"--seed": 7}, log=quiet)
    with pytest.raises(DirectionError, match=r"--seed: found 7, asked 8\): drop those flags"):
        open_directions(str(tmp_path / "d.h5"), net, DirectionSpec(two_d=True), asked={"--seed": 8}, log=quiet)
    notes.clear()
    open_directions(str(tmp_path / "d.h5"), net, DirectionSpec(two_d=True), asked={"--hessian_tol": 1e-6},
                    log=notes.append)
    assert any("which --hessian_tol do not decide" in n for n in notes), notes


def test_original_layout_file_is_used_as_it_is(tmp_path):
    net = small_net()
    w = ParamVector.from_model(net, "weights")
    with h5py.File(tmp_path / "orig.h5", "w") as f:
        for group in ("xdirection", "ydirection"):
            g = f.create_group(group)
            for i, t in enumerate(w):
                g.create_dataset(str(i), data=np.ones(t.shape, np.float32))
    notes = []
    d = setup_directions(str(tmp_path / "orig.h5"), net, DirectionSpec(two_d=True, seed=5), asked={"--seed": 5},
                         log=notes.append)
    assert d.spec.kind == "file" and any("records no settings" in n for n in notes)
    assert setup_directions(str(tmp_path / "orig.h5"), net, DirectionSpec(two_d=True), log=quiet).spec.kind == "file"
    notes.clear()
    setup_directions(str(tmp_path / "orig.h5"), net, DirectionSpec(two_d=True), asked={}, log=notes.append)
    assert any("as it is (no direction flag given): a file of the original tool (x and y; no settings recorded)"
               in n for n in notes), notes


def test_parser_defaults_are_the_resolved_defaults():
    from loss_landscape.cli import _surface as plot_surface
    from loss_landscape.surface.request import DIRECTION_DEFAULTS, SurfaceRequest, with_direction_defaults

    parser = plot_surface.get_args_parser()
    args = parser.parse_args([])
    for name, value in DIRECTION_DEFAULTS.items():
        assert getattr(args, name) == value, name
    req = plot_surface.request_from_args(args)
    assert all(getattr(req, name) is None for name in DIRECTION_DEFAULTS)
    assert with_direction_defaults(req) == dataclasses.replace(req, **DIRECTION_DEFAULTS)
    given = plot_surface.request_from_args(parser.parse_args(["--seed", "123", "--axes", "hessian"]))
    assert given.seed == 123 and given.axes == "hessian" and given.xnorm is None
    hess = with_direction_defaults(given)
    assert (hess.xnorm, hess.xignore) == ("", "")
    assert with_direction_defaults(dataclasses.replace(given, xnorm="filter")).xignore == "biasbn"
    assert with_direction_defaults(SurfaceRequest(axes="adam")).xnorm == "filter"
    assert "(default: filter; none for --axes hessian unless --xnorm or --xignore is given)" in \
        " ".join(parser.format_help().split())


# ----------------------------------------------------------------------------------------------------------
# Through the command line
# ----------------------------------------------------------------------------------------------------------

@pytest.fixture
def work(tmp_path, tiny):
    root, model = tiny
    for name in ("tinynet.py", "tiny.t7"):
        shutil.copy(root / name, tmp_path / name)
    return tmp_path, model


def _refused(proc, *parts):
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1 and "holds other directions than asked" in lines[0], proc.stderr
    for part in parts:
        assert part in lines[0], (part, lines[0])


def _other_model(path, seed):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 6), nn.Tanh(), nn.Linear(6, 10))
    torch.save({"state_dict": net.state_dict()}, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_explicit_dir_file_is_checked_against_the_flags_given(work):
    root, _ = work
    base = [*TINY, *PART, "--x=-1:1:3", "--y=-1:1:3", "--quiet", "--dir_file", "d.h5"]
    run_command("plot_surface.py", *base, "--seed", "7", "--xnorm", "layer", "--surf_file", "a.h5", cwd=root)
    proc = run_command("plot_surface.py", *base, "--seed", "5", "--idx", "1", "--xnorm", "filter", "--xignore",
                       "none", "--dir_type", "states", "--surf_file", "b.h5", cwd=root, check=False)
    _refused(proc, "--seed: found 7, asked 5", "--idx: found 0, asked 1", "--xnorm: found layer, asked filter",
             "--xignore: found biasbn, asked none", "--dir_type: found weights, asked states", "drop those flags")
    # The same values given explicitly agree; none given: used as it is, and what it holds is printed.
    again = run_command("plot_surface.py", *base, "--seed", "7", "--xnorm", "layer", "--dir_type", "weights",
                        "--surf_file", "a.h5", cwd=root)
    assert "0 to compute" in again.stdout
    plain = run_command("plot_surface.py", *base, "--surf_file", "a2.h5", cwd=root)
    assert "d.h5 as it is (no direction flag given): random directions (x and y): --dir_type weights, " \
           "--xnorm layer, --xignore biasbn, --seed 7, --idx 0" in plain.stdout
    np.testing.assert_array_equal(read_surface(str(root / "a.h5")).values["train_loss"],
                                  read_surface(str(root / "a2.h5")).values["train_loss"])


def test_named_file_of_another_kind_is_used_as_it_is(work):
    root, model = work
    # A PCA file as plot_trajectory.py writes it, of state-dict directions: no flag given, so its dir_type is
    # taken from the file (here states and weights name the same tensors).
    w = ParamVector.from_model(model, "states")
    g = torch.Generator().manual_seed(0)
    x, y = (ParamVector(w.names, [torch.randn(t.shape, generator=g) * 0.01 for t in w]) for _ in range(2))
    spec = DirectionSpec(dir_type="states", kind="pca", xnorm="", xignore="", ynorm="", yignore="", two_d=True)
    save_directions(str(root / "pca.h5"), Directions(x, y, spec))
    out = run_command("plot_surface.py", *TINY, *PART, "--x=-1:1:3", "--y=-1:1:3", "--quiet", "--dir_file", "pca.h5",
                      cwd=root).stdout
    assert "pca.h5 as it is (no direction flag given): pca directions (x and y): --dir_type states" in out
    # A file of the original tool (nothing recorded) with a direction flag given: a note, then used.
    with h5py.File(root / "orig.h5", "w") as f:
        for name, vec in (("xdirection", x), ("ydirection", y)):
            grp = f.create_group(name)
            for i, t in enumerate(vec):
                grp.create_dataset(str(i), data=t.numpy())
    out = run_command("plot_surface.py", *TINY, *PART, "--x=-1:1:3", "--y=-1:1:3", "--quiet", "--dir_file",
                      "orig.h5", "--seed", "3", "--surf_file", "o.h5", cwd=root).stdout
    assert "records no settings (a file of the original tool), so --seed cannot be checked" in out


def test_target_models_count_by_checksum(work):
    root, _ = work
    old = _other_model(root / "b.t7", 5)
    args = [*TINY, *PART, "--model_file2", "b.t7", "--x=0:1:2", "--quiet"]
    run_command("plot_surface.py", *args, cwd=root)
    default = root / "tiny.t7.dirs-weights-to-b.t7-1d.h5"
    assert load_directions(str(default)).spec.model2_sha256 == old
    new = _other_model(root / "b.t7", 6)  # retrained in place: same path, other model
    _refused(run_command("plot_surface.py", *args, cwd=root, check=False),
             f"--model_file2: found sha256 {old[:12]}, asked sha256 {new[:12]}", "delete it")
    _refused(run_command("plot_surface.py", *args, "--dir_file", default.name, cwd=root, check=False),
             f"--model_file2: found sha256 {old[:12]}, asked sha256 {new[:12]}")


def _part():
    return take_part(load_dataset("digits").train, 10, 1)


def _flat(vec: ParamVector) -> np.ndarray:
    return torch.cat([t.reshape(-1) for t in vec]).double().numpy()


def test_hessian_axes_are_unit_eigenvectors_unless_a_normalization_is_asked(work):
    root, model = work
    common = [*TINY, *PART, "--axes", "hessian", "--hessian_tol", "1e-8", "--x=-0.1:0.1:3", "--y=-0.1:0.1:3",
              "--quiet"]
    unit_run = run_command("plot_surface.py", *common, cwd=root)
    assert "Hessian eigenvalues of the axes (unit eigenvectors): " in unit_run.stdout
    unit = load_directions(str(root / "tiny.t7.dirs-weights-hessian-train-all-unit-tol1e-08-2d.h5"))
    part = _part()
    H = dense_hessian(model, part.inputs, part.targets)
    exact = np.linalg.eigvalsh(H)[::-1][:2]
    info = json.loads(unit.spec.details)
    np.testing.assert_allclose(info["eigenvalues"], exact, rtol=1e-6)
    assert info["axes"] == info["eigenvalues_of"] == "the unit eigenvectors"
    for vec, lam in ((unit.x, exact[0]), (unit.y, exact[1])):
        u = _flat(vec)
        assert np.linalg.norm(u) == pytest.approx(1.0, abs=1e-6)
        assert np.linalg.norm(H @ u - lam * u) < 1e-4 * lam

    normed_run = run_command("plot_surface.py", *common, "--xnorm", "filter", cwd=root)
    assert ("Hessian eigenvalues of the unit eigenvectors: " in normed_run.stdout
            and "the axes are filter-normalized copies of them, biases and BN parameters zeroed (--xnorm filter "
                "--xignore biasbn), not eigenvectors" in normed_run.stdout), normed_run.stdout
    normed = load_directions(str(root / "tiny.t7.dirs-weights-hessian-train-all-filter-biasbn-tol1e-08-2d.h5"))
    ninfo = json.loads(normed.spec.details)
    np.testing.assert_allclose(ninfo["eigenvalues"], info["eigenvalues"], rtol=1e-6)
    assert ninfo["eigenvalues_of"] == "the unit eigenvectors"
    assert ninfo["axes"].startswith("filter-normalized copies of the unit eigenvectors")
    weights = ParamVector.from_model(model, "weights")
    for u_vec, n_vec in ((unit.x, normed.x), (unit.y, normed.y)):
        want = u_vec.clone()
        normalize_direction_(want, weights, norm="filter", ignore="biasbn")
        np.testing.assert_allclose(_flat(n_vec), _flat(want), rtol=1e-4, atol=1e-6)
        assert np.linalg.norm(_flat(n_vec)) > 2  # the weights' scale, not a unit vector

    refused = run_command("plot_surface.py", *TINY, *PART, "--axes", "hessian", "--hessian_tol", "1e-6",
                          "--hessian_params", "dim>1", "--x=-0.1:0.1:3", "--quiet", "--dir_file",
                          "tiny.t7.dirs-weights-hessian-train-all-unit-tol1e-08-2d.h5", cwd=root, check=False)
    _refused(refused, "--hessian_tol: found 1e-08, asked 1e-06", "--hessian_params: found all, asked dim>1")


def test_adam_axes_say_what_they_are_and_their_settings_are_checked(work):
    root, _ = work
    part = _part()
    model, opt = tiny_after_adam(part.inputs, part.targets)
    torch.save({"state_dict": model.state_dict()}, root / "model_5.t7")
    torch.save({"optimizer": opt.state_dict()}, root / "opt_state_5.t7")
    args = ["--model", "tinynet:net", "--model_file", "model_5.t7", "--dataset", "digits", *PART, "--axes", "adam",
            "--x=-1:1:3", "--quiet"]
    made = run_command("plot_surface.py", *args, "--y=-1:1:3", "--dir_file", "a.h5", cwd=root)
    assert ("Adam axes: x = m, y = v; the axes are filter-normalized copies of m and v, biases and BN "
            "parameters zeroed (--xnorm filter --xignore biasbn), not the raw moments") in made.stdout
    _refused(run_command("plot_surface.py", *args, "--y=0.5:2:2", "--dir_file", "a.h5", "--adam_mode", "adameq",
                         "--adam_eps", "1e-6", cwd=root, check=False),
             "--adam_mode: found add, asked adameq", "--adam_eps: found the optimizer's own, asked 1e-06")
