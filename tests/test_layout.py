"""The package's layout is the pipeline: no import circle anywhere in ``graphrt/``, each stage imports
only the stages below it (docs/architecture.md), ``import graphrt`` stays light, and the wheel
ships the library alone.

Every import counts as an edge: module level, function-local, under ``if TYPE_CHECKING:``, and
``from pkg import name`` (an edge to ``pkg/__init__.py`` unless ``name`` is a submodule, then to it).
"""
from __future__ import annotations

import ast
import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "graphrt"

# Each stage (longest matching module prefix) and the stages it may import (itself included).
# The devices protocol (base, streams, registry) is what the scheduler sees; the implementations
# are found by name through the registry (importlib, no import edge).
PROTOCOL = "graphrt.devices"
ALLOWED = {
    "graphrt.ir": {"graphrt.ir"},
    "graphrt.ops": {"graphrt.ir", "graphrt.ops"},
    "graphrt.frontends": {"graphrt.ir", "graphrt.ops", "graphrt.frontends"},
    "graphrt.passes": {"graphrt.ir", "graphrt.ops", "graphrt.passes"},
    "graphrt.memory": {"graphrt.ir", "graphrt.ops", "graphrt.memory"},
    PROTOCOL: {"graphrt.ir", PROTOCOL},
    "graphrt.devices.cpu": {"graphrt.ir", "graphrt.ops", "graphrt.memory", PROTOCOL, "graphrt.devices.cpu"},
    "graphrt.devices.cuda": {"graphrt.ir", "graphrt.ops", "graphrt.memory", PROTOCOL, "graphrt.devices.cuda"},
    "graphrt.scheduler": {"graphrt.ir", "graphrt.ops", "graphrt.passes", "graphrt.memory", PROTOCOL,
                          "graphrt.scheduler"},
    # data sources read the frameworks' records (Caffe's messages through its frontend)
    "graphrt.data": {"graphrt.ir", "graphrt.ops", "graphrt.frontends", "graphrt.data"},
    "graphrt.training": {"graphrt.ir", "graphrt.ops", "graphrt.passes", "graphrt.memory",
                         "graphrt.scheduler", "graphrt.frontends", "graphrt.data", "graphrt.training"},
    # data-parallel training and Ray Data inference: above training (torch and ray imported lazily)
    "graphrt.distributed": {"graphrt.ir", "graphrt.ops", "graphrt.passes", "graphrt.memory", PROTOCOL,
                            "graphrt.scheduler", "graphrt.frontends", "graphrt.data",
                            "graphrt.training", "graphrt.distributed"},
    # the ONNX backend runs graphs (onnx.backend.base.Backend): it sits above the scheduler
    "graphrt.frontends.onnx.backend": {"graphrt.ir", "graphrt.ops", "graphrt.frontends", PROTOCOL,
                                       "graphrt.scheduler"},
    "graphrt.testing": {"graphrt.ir", "graphrt.ops", "graphrt.frontends", "graphrt.passes",
                        "graphrt.memory", PROTOCOL, "graphrt.scheduler", "graphrt.testing"},
    "graphrt.viz": {"graphrt.ir", "graphrt.ops", "graphrt.frontends", "graphrt.passes", "graphrt.memory",
                    PROTOCOL, "graphrt.scheduler", "graphrt.viz"},
}
TOP = {"graphrt", "graphrt.__main__", "graphrt.cli"}  # the public API and the command line may import any stage


def is_top(module: str) -> bool:
    """The public API, or a module of the command line (``graphrt/cli/``)."""
    return module in TOP or module.startswith("graphrt.cli.")


def module_files(package: Path = PACKAGE) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package's __init__)."""
    mods = {}
    for path in package.rglob("*.py"):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        mods[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return mods


def import_graph(mods: dict[str, tuple[Path, bool]]) -> nx.DiGraph:
    """Edges module -> module for every import statement of the package, wherever it stands."""
    graph = nx.DiGraph()
    for name, (path, is_pkg) in mods.items():
        graph.add_node(name)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[:len(base) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in mods else module
                           for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in mods:  # `import graphrt.x.y` -> graphrt.x.y
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph.add_edge(name, target, line=node.lineno)
    return graph


def stage(module: str) -> str | None:
    """The longest ALLOWED prefix of ``module`` (None for the top: graphrt/__init__, cli)."""
    best = None
    for prefix in ALLOWED:
        if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > len(best)):
            best = prefix
    if best == PROTOCOL and module not in {PROTOCOL, f"{PROTOCOL}.base", f"{PROTOCOL}.streams",
                                           f"{PROTOCOL}.registry"}:
        raise AssertionError(f"{module} is in graphrt/devices/ but neither the protocol nor an "
                             "implementation: give it a stage in this test and docs/architecture.md")
    return best


@pytest.fixture(scope="module")
def graph():
    return import_graph(module_files())


def test_the_package_has_no_import_circle(graph):
    cycles = [sorted(c) for c in nx.strongly_connected_components(graph) if len(c) > 1]
    assert not cycles, f"import circles: {cycles}"


def test_each_stage_imports_only_the_stages_below_it(graph):
    bad = []
    for a, b, data in graph.edges(data=True):
        if is_top(a):
            continue
        src, dst = stage(a), stage(b)
        if src is None:
            raise AssertionError(f"{a} has no stage: add it to ALLOWED")
        if is_top(b) or dst not in ALLOWED[src]:
            bad.append(f"{a} (line {data['line']}) imports {b}")
    assert not bad, "imports against the pipeline's direction:\n" + "\n".join(bad)


def test_the_checker_sees_every_kind_of_import(tmp_path):
    """The graph builder itself: function-local, TYPE_CHECKING and package imports are edges."""
    pkg = tmp_path / "demo"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from . import a\n")
    (pkg / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import X\n")
    (pkg / "b.py").write_text("def f():\n    import demo.sub.c\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "c.py").write_text("from .. import b\nfrom demo import VALUE\n")
    g = import_graph(module_files(pkg))
    assert set(g.edges) == {("demo", "demo.a"), ("demo.a", "demo.b"), ("demo.b", "demo.sub.c"),
                            ("demo.sub.c", "demo.b"), ("demo.sub.c", "demo")}
    # demo -> a -> b -> c -> demo: one circle through the package's __init__
    assert max(nx.strongly_connected_components(g), key=len) == {"demo", "demo.a", "demo.b", "demo.sub.c"}


def test_every_subpackage_says_what_it_owns():
    for init in PACKAGE.rglob("__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert doc and len(doc) > 80, f"{init.relative_to(ROOT)} needs a docstring: what it owns, what it may import"


def test_import_graphrt_is_light_and_testing_is_lazy():
    code = ("import sys, graphrt\n"
            "heavy = [m for m in ('hypothesis', 'pytest', 'cupy', 'torch', 'onnx', 'tools', 'graphrt.testing',"
            " 'graphrt.devices.cuda', 'graphrt.viz', 'graphrt.distributed', 'ray') if m in sys.modules]\n"
            "assert not heavy, heavy\n"
            "fn = graphrt.testing.assert_equivalent\n"
            "assert 'hypothesis' not in sys.modules\n"
            "trainer = graphrt.distributed.DistributedTrainer\n"
            "assert 'torch' not in sys.modules and 'ray' not in sys.modules\n"
            "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT / "tests")
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


@pytest.mark.skipif(importlib.util.find_spec("setuptools") is None, reason="setuptools is not installed")
def test_the_wheel_ships_only_the_library(tmp_path):
    # built from a copy: a build/ folder left in the checkout could carry stale files into the wheel
    src = tmp_path / "src"
    shutil.copytree(ROOT / "graphrt", src / "graphrt", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                          "-w", str(tmp_path), str(src)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    (wheel,) = tmp_path.glob("graphrt-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = [n for n in names if not n.startswith("graphrt-")]
    assert all(n.startswith("graphrt/") for n in shipped), [n for n in shipped if not n.startswith("graphrt/")]
    assert not [n for n in shipped if n.endswith((".cpp", ".h")) or "fuzz" in n or "emulat" in n]
    kernels = {Path(n).name for n in shipped if n.startswith("graphrt/devices/cuda/kernels/")}
    assert {"prelude.cuh", "conv.cu", "gemm.cu", "elementwise.cu"} <= kernels
    assert "graphrt/testing/plugin.py" in shipped and "graphrt/ir/graph.py" in shipped
