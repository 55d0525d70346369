"""The package's imports run one way: parsed from the source (every import, also those inside functions;
not those under ``if TYPE_CHECKING:``), they form no circle, never point to a higher layer, never reach the
commands from the library or one command from another, and never bring torch into the plotting code."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = "loss_landscape"

# Lowest first. A module belongs to the layer of the longest prefix that names it; within a layer imports may
# go either way as long as they form no circle.
LAYERS = [
    ("foundations", ["errors", "version", "_util", "params", "parallel.processes"]),
    ("parallel", ["parallel"]),
    ("models, data, evaluation, surface files", ["models", "cifar10_data", "data", "batches", "losses", "metrics",
                                                  "streaming", "evaluation", "surface",
                                                  "surface.storage", "surface.grid", "surface.file",
                                                  "surface.reader", "surface.order", "surface.stats", "surface.spread",
                                                  "surface.export"]),
    ("directions and curvature", ["directions", "curvature"]),
    ("computing", ["speed", "surface.compute", "surface.eigen", "trajectory", "training", "examples"]),
    ("jobs and plotting", ["surface.job", "plotting"]),
    ("the Python API", ["api", ""]),
    ("commands", ["cli", "__main__"]),
]
# What the plotting code may import from the package (all of it free of torch).
PLOTTING_MAY_USE = ["plotting", "surface.reader", "surface.order", "surface.grid", "surface.storage", "surface.stats",
                    "surface.spread", "errors", "_util", "version", "parallel.processes"]


def package_modules() -> dict[str, Path]:
    mods = {}
    for path in (ROOT / PKG).rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join(parts)] = path
    return mods


def _type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and ((isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or
                                         (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def imported_names(tree: ast.AST, module: str, is_package: bool):
    """Every (line, module name) imported in `tree`, skipping ``if TYPE_CHECKING:`` blocks; ``from a import b``
    gives ``a.b`` (a submodule, if it is one) and ``a``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if _type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name, None
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")
                keep = len(parts) - node.level + (1 if is_package else 0)
                base = ".".join(parts[:keep] + ([node.module] if node.module else []))
            for a in node.names:
                yield node.lineno, base, a.name
        stack.extend(ast.iter_child_nodes(node))


def import_graph() -> dict[str, dict[str, int]]:
    mods = package_modules()
    graph: dict[str, dict[str, int]] = defaultdict(dict)
    for mod, path in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        for line, base, name in imported_names(tree, mod, path.name == "__init__.py"):
            if name is not None and f"{base}.{name}" in mods:
                target = f"{base}.{name}"  # a submodule: its package's __init__ is not what is asked for
            else:
                target = base
                while target and target not in mods:
                    target = target.rpartition(".")[0]
            if target and target != mod and target.startswith(PKG):
                graph[mod].setdefault(target, line)
        graph.setdefault(mod, {})
    return graph


def _matches(mod: str, prefix: str) -> bool:
    name = PKG + ("." + prefix if prefix else "")
    return mod == name or (prefix != "" and mod.startswith(name + "."))


def layer_of(mod: str) -> int:
    best, level = -1, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if _matches(mod, p) and len(p) > best:
                best, level = len(p), i
    assert level is not None, f"{mod} is in no layer of tests/test_layers.py: add it"
    return level


def test_every_module_has_a_layer_and_imports_point_down():
    graph = import_graph()
    upward = [f"{a} (layer {layer_of(a)}: {LAYERS[layer_of(a)][0]}) imports {b} (layer {layer_of(b)}: "
              f"{LAYERS[layer_of(b)][0]}) at line {line}"
              for a, targets in graph.items() for b, line in targets.items() if layer_of(b) > layer_of(a)]
    assert not upward, "\n".join(upward)


def test_no_import_circle():
    graph = import_graph()
    state: dict[str, int] = {}
    circles = []

    def visit(node, path):
        state[node] = 1
        for nxt in graph.get(node, {}):
            if state.get(nxt) == 1:
                circles.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for mod in sorted(graph):
        if mod not in state:
            visit(mod, [mod])
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_the_library_never_imports_the_commands_and_no_command_imports_another():
    graph = import_graph()
    cli = f"{PKG}.cli"
    bad = [f"{a} imports {b}" for a, t in graph.items() for b in t
           if _matches(b, "cli") and not _matches(a, "cli") and a != f"{PKG}.__main__"]
    assert not bad, "\n".join(bad)
    commands = {m for m in graph if m.startswith(cli + ".") and not m.rpartition(".")[2].startswith("_")}
    assert len(commands) >= 10, commands  # nine commands and the loss-landscape entry
    crossing = [f"{a} imports {b}" for a in commands for b in graph[a] if b in commands]
    assert not crossing, "\n".join(crossing)


def test_the_library_never_imports_the_flat_faces():
    faces = {p.stem for p in ROOT.glob("*.py")} | {"cifar10"}
    assert {"net_plotter", "scheduler", "plot_surface"} <= faces
    found = []
    for mod, path in package_modules().items():
        for line, base, _ in imported_names(ast.parse(path.read_text()), mod, path.name == "__init__.py"):
            if base.split(".")[0] in faces:
                found.append(f"{mod}:{line} imports {base}")
    assert not found, "\n".join(found)


def test_plotting_imports_only_torch_free_modules():
    graph = import_graph()
    plotting = [m for m in graph if _matches(m, "plotting")]
    assert len(plotting) >= 5
    seen, todo, bad = set(), list(plotting), []
    while todo:
        m = todo.pop()
        for t in graph[m]:
            if not any(_matches(t, p) for p in PLOTTING_MAY_USE):
                bad.append(f"{m} imports {t}")
            elif t not in seen:
                seen.add(t)
                todo.append(t)
    assert not bad, "\n".join(bad)
    for mod in plotting + [m for m in seen]:
        tree = ast.parse(package_modules()[mod].read_text())
        direct = [b for _, b, _ in imported_names(tree, mod, False) if b.split(".")[0] == "torch"]
        assert not direct, f"{mod} imports torch"


def test_plotting_commands_and_the_package_load_without_torch():
    code = ("import sys, loss_landscape, loss_landscape.plotting.one_d_files, loss_landscape.plotting.two_d, "
            "loss_landscape.plotting.paths, loss_landscape.cli.plot1d, loss_landscape.cli.plot2d, "
            "loss_landscape.cli.export, loss_landscape.cli.main_entry; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'mpi4py')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={**os.environ, "MPLBACKEND": "Agg"})
    assert out.stdout.strip() == "[]", out.stdout


@pytest.mark.parametrize("face,allowed", [("net_plotter.py", "loss_landscape.directions"),
                                          ("scheduler.py", "loss_landscape.parallel.scheduler"),
                                          ("plot_surface.py", "loss_landscape.cli.surface"),
                                          ("cifar10/models/resnet.py", "loss_landscape.models.cifar10.resnet")])
def test_faces_only_re_export(face, allowed):
    tree = ast.parse((ROOT / face).read_text())
    bases = {b for _, b, _ in imported_names(tree, face, False)} - {"sys"}
    assert bases == {allowed}, bases
    assert not [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))], f"{face} defines code"
