"""The checkout installs: a wheel holds the whole package (and nothing of the checkout around it), and
``pip install .`` into a fresh virtual environment gives a ``loss-landscape`` command and an importable
``loss_landscape`` that work from any folder, with the same flags and ``--help`` as the scripts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _clean_copy(dest: Path) -> Path:
    """What a clean clone holds: the tracked files and the untracked ones git does not ignore."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split("\n")
    for name in filter(None, files):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def _pip(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args], cwd=cwd,
                          capture_output=True, text=True, check=True)


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    return _clean_copy(tmp_path_factory.mktemp("clone"))


def test_the_wheel_holds_every_module_of_the_package_and_only_the_package(clone, tmp_path):
    _pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(clone))
    (wheel,) = tmp_path.glob("loss_landscape-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    source = {str(p.relative_to(clone)) for p in (clone / "loss_landscape").rglob("*.py")}
    packed = {n for n in names if n.endswith(".py")}
    assert source == packed, (sorted(source - packed), sorted(packed - source))
    assert len(packed) > 50
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"loss_landscape"}, tops
    meta = next(n for n in names if n.endswith("entry_points.txt"))
    assert "loss-landscape = loss_landscape.cli.main_entry:main" in zipfile.ZipFile(wheel).read(meta).decode()


@pytest.fixture(scope="module")
def fresh_env(clone, tmp_path_factory):
    """A new virtual environment with `pip install .` of the clean copy (no network: the dependencies are
    those of the test environment, seen through a path file, and the build uses its setuptools)."""
    env = tmp_path_factory.mktemp("venv") / "fresh"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    py = env / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(site, "_test_dependencies.pth").write_text("\n".join(sorted(deps)) + "\n")
    _pip("--python", str(py), "install", "--no-deps", "--no-build-isolation", str(clone))
    return env


def _run(env: Path, args, cwd) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    environ.update(MPLBACKEND="Agg", PATH=f"{env / 'bin'}{os.pathsep}{environ.get('PATH', '')}")
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=environ, timeout=900)


@pytest.mark.slow
def test_installed_package_imports_from_any_folder_and_the_command_answers(fresh_env, tmp_path):
    out = _run(fresh_env, [str(fresh_env / "bin" / "python"), "-c",
                           "import loss_landscape, loss_landscape.cli.surface as s; print(loss_landscape.__file__); "
                           "print(loss_landscape.__version__)"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    where = Path(out.stdout.split()[0]).resolve()
    assert str(where).startswith(str(fresh_env.resolve())), where  # the installed copy, not the checkout
    version = _run(fresh_env, ["loss-landscape", "--version"], cwd=tmp_path)
    assert version.stdout.strip() == f"loss-landscape {out.stdout.split()[1]}"
    listed = _run(fresh_env, ["loss-landscape", "--help"], cwd=tmp_path).stdout
    for sub in ("surface", "plot1d", "plot2d", "export", "trajectory", "animate", "hessian-eigen",
                "hessian-spectrum", "train"):
        assert f"\n  {sub} " in listed, sub
    unknown = _run(fresh_env, ["loss-landscape", "surfac"], cwd=tmp_path)
    assert unknown.returncode == 2 and unknown.stderr.count("\n") == 1 and "expected one of surface" in unknown.stderr


SUBCOMMANDS = [("surface", "plot_surface.py"), ("plot1d", "plot_1D.py"), ("plot2d", "plot_2D.py"),
               ("export", "h52vtp.py"), ("trajectory", "plot_trajectory.py"), ("animate", "animate_trajectory.py"),
               ("hessian-eigen", "plot_hessian_eigen.py"), ("hessian-spectrum", "plot_hessian_spectrum.py"),
               ("train", "cifar10/main.py")]


@pytest.mark.parametrize("sub,script", SUBCOMMANDS)
def test_each_subcommand_has_its_scripts_flags_and_help(sub, script):
    env = {**os.environ, "COLUMNS": "100", "MPLBACKEND": "Agg"}
    by_script = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True,
                               env=env, check=True).stdout
    by_command = subprocess.run([sys.executable, "-m", "loss_landscape", sub, "--help"], cwd=ROOT,
                                capture_output=True, text=True, env=env, check=True).stdout
    prog = os.path.basename(script)
    assert by_script.startswith(f"usage: {prog} ")
    assert by_command.startswith(f"usage: loss-landscape {sub} ")
    # The same text once the program name (and the line breaks it shifts in the usage lines) is set aside.
    body = lambda text: " ".join(text.split("\n\n", 1)[1].split())  # noqa: E731
    assert body(by_script) == body(by_command)


@pytest.mark.slow
def test_installed_command_computes_the_embedded_default_from_another_folder(fresh_env, tmp_path):
    proc = _run(fresh_env, ["loss-landscape", "surface", "--x=-0.5:0.5:11", "--y=-0.5:0.5:11", "--plot"],
                cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    surfaces = []
    for p in tmp_path.rglob("*.h5"):
        with h5py.File(p, "r") as f:
            if "train_loss" in f:
                surfaces.append(p)
    (surf,) = surfaces
    with h5py.File(surf, "r") as f:
        loss = f["train_loss"][()]
        assert loss.shape == (11, 11) and np.isfinite(loss).all() and f["train_done"][()].all()
        assert f["xcoordinates"][5] == 0.0 and f["ycoordinates"][5] == 0.0
    pngs = list(tmp_path.rglob("*.png"))
    assert len(pngs) >= 4, pngs

    # The installed API in memory equals the file the installed command wrote, bit for bit; and the README's
    # Python example runs as it is written there.
    readme = (ROOT / "README.md").read_text()
    example = readme.split("```python\n", 1)[1].split("```", 1)[0]
    check = f"""
import numpy as np, h5py
{example}
import loss_landscape as ll
model = ll.load_model("digits_cnn", "trained_nets/digits_cnn/model_30.t7")
small = ll.random_plane(model, ll.load_dataset("digits"), steps=11, distance=0.5, seed=123)
with h5py.File({str(surf)!r}, "r") as f:
    assert np.array_equal(small.loss, f["train_loss"][()]), abs(small.loss - f["train_loss"][()]).max()
    assert np.array_equal(small.acc, f["train_acc"][()])
    assert np.array_equal(small.x, f["xcoordinates"][()])
assert plane.loss.shape == (21, 21) and line.loss.shape == (41,) and surface.values["train_loss"].shape == (21, 21)
print("same")
"""
    out = _run(fresh_env, [str(fresh_env / "bin" / "python"), "-c", check], cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.strip().endswith("same"), out.stderr[-3000:]
