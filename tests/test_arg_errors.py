"""Argument errors of every command, run as a user runs them: one short usage line, the error, a pointer to
--help, exit status 2 (argparse's own usage listed every flag above the one line that matters); and --help,
still argparse's complete one."""

from __future__ import annotations

import argparse
import importlib

import pytest

from conftest import run_command

# (command, arguments with one bad flag (and the required ones), what the error names)
CASES = [
    ("plot_surface.py", ["--x=-1:1"], "argument --x: expected MIN:MAX:NUM"),
    ("plot_surface.py", ["--data_split", "2", "--split_idx", "2"], "--split_idx must be below --data_split"),
    ("plot_hessian_eigen.py", ["--hessian_maxiter", "0"], "argument --hessian_maxiter: expected a number >= 1"),
    ("plot_hessian_eigen.py", ["--eval_on", "both"], "train or test, not both"),
    ("plot_hessian_spectrum.py", ["--top_k", "two"], "argument --top_k: expected a whole number, got 'two'"),
    ("plot_1D.py", ["--surf_file", "s.h5", "--format", "gif"], "argument --format: invalid choice: 'gif'"),
    ("plot_2D.py", ["--surf_file", "s.h5", "--kind", "pie"], "argument --kind: invalid choice: 'pie'"),
    ("h52vtp.py", ["--surf_file", "s.h5", "--format", "obj"], "argument --format: invalid choice: 'obj'"),
    ("plot_trajectory.py", ["--model_folder", "runs", "--max_epochs", "3"], "unrecognized arguments: --max_epochs"),
    ("animate_trajectory.py", ["--proj_file", "p.h5", "--format", "avi"], "argument --format: invalid choice: 'avi'"),
    ("cifar10/main.py", ["--epochs", "0"], "argument --epochs: expected a number >= 1, got 0"),
]

MODULES = ["plot_surface", "plot_hessian_eigen", "plot_hessian_spectrum", "plot_1D", "plot_2D", "h52vtp",
           "plot_trajectory", "animate_trajectory", "cifar10.main"]


@pytest.mark.parametrize("script, args, expected", CASES, ids=[f"{c[0]} {' '.join(c[1])}" for c in CASES])
def test_an_argument_error_is_three_short_lines(tmp_path, script, args, expected):
    proc = run_command(script, *args, cwd=tmp_path, check=False, timeout=120)
    prog = script.rsplit("/", 1)[-1]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, proc.stderr
    assert lines == [f"usage: {prog} [options]", lines[1], f"  see {prog} --help for every option"], proc.stderr
    assert lines[1].startswith(f"{prog}: error: ") and expected in lines[1], proc.stderr
    assert "[--" not in proc.stderr and "[-h]" not in proc.stderr, "the usage of every flag came back"
    assert not proc.stdout.strip() and not list(tmp_path.iterdir()), "nothing is done on an argument error"


@pytest.mark.parametrize("module", MODULES)
def test_help_still_lists_every_flag(module, capsys, monkeypatch):
    monkeypatch.setattr("sys.argv", [module.rsplit(".", 1)[-1] + ".py"])
    parser = importlib.import_module(module).get_args_parser()
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ") and "[-h]" in out
    flags = [s for a in parser._actions if a.help != argparse.SUPPRESS for s in a.option_strings]
    assert len(flags) > 5
    missing = [f for f in flags if f not in out]
    assert not missing, missing
