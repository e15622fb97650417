"""The README says what the code does: its tour runs as written, its plan table is what
``graphrt.compile(...).plan`` gives today (``bench/plan_table.py``), its ONNX conformance counts are
those of the runner cases the suite selects and excludes, and every script and make target it names
exists."""
from __future__ import annotations

import collections
import re
import sys
from pathlib import Path

import pytest

from conftest import SHARED

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
sys.path.insert(0, str(ROOT / "bench"))


def section(title: str) -> str:
    start = README.index(f"## {title}")
    end = README.find("\n## ", start + 3)
    return README[start:end if end > 0 else None]


def test_plan_table_is_what_the_code_gives(shared):
    import plan_table

    assert plan_table.readme_table(README) == plan_table.table(), (
        "the README's plan table is stale: run python bench/plan_table.py --update README.md")


def test_onnx_conformance_counts_are_the_suites():
    pytest.importorskip("onnxruntime")
    import test_onnx_backend as ob

    names = {"NodeModel": "node tests", "PyTorchConvertedModel": "pytorch-converted",
             "PyTorchOperatorModel": "pytorch-operator", "RealModel": "real models",
             "SimpleModel": "simple models"}
    counts = collections.defaultdict(lambda: [0, 0])
    for case in ob.SELECTED:  # a selected case that is not excluded must pass: the suite runs it
        counts[names[ob.CATEGORY[case]]][case in ob.EXCLUDED] += 1
    rows = dict(re.findall(r"^\| ([a-z -]+) \| (\d+ \| \d+) \| 0 \|$", section("ONNX"), re.M))
    assert rows == {k: f"{p} | {e}" for k, (p, e) in counts.items()}
    total = [sum(v[i] for v in counts.values()) for i in (0, 1)]
    assert f"| **total** | **{total[0]}** | **{total[1]}** | **0** |" in section("ONNX")


def test_the_tour_runs_as_written(shared, tmp_path, monkeypatch):
    """The tour's code block, from a folder with ../shared beside it (here a link to the real one)."""
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    code = re.search(r"```python\n(.*?)```", section("A tour"), re.S).group(1)
    work = tmp_path / "checkout"
    work.mkdir()
    (tmp_path / "shared").symlink_to(SHARED)
    monkeypatch.chdir(work)
    exec(compile(code, "README.md (A tour)", "exec"), {"__name__": "readme_tour"})  # noqa: S102
    assert (work / "model.npz").exists() and (work / "model.onnx").exists()


def test_every_script_and_make_target_it_names_exists():
    scripts = set(re.findall(r"python ((?:bench|examples|tools)/[\w/]+\.py)", README))
    assert scripts and [s for s in scripts if not (ROOT / s).exists()] == []
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"\bmake (\w+)", README))
    assert {"test", "demo", "docs"} <= targets
    assert [t for t in targets if not re.search(rf"^{t}:", makefile, re.M)] == []
    assert "tools/docs_images.py" in makefile and "plan_table.py --update README.md" in makefile
    for image in re.findall(r"\]\((docs/[\w.]+\.png)\)", README):
        assert (ROOT / image).exists(), image


def test_machine_dependent_figures_say_where_they_were_measured():
    speed = section("Speed")
    assert "python bench/seed_models.py" in speed and "AMD EPYC" in speed and "OpenBLAS" in speed
    for line in ("python bench/soak.py", "python bench/stream_overlap.py"):
        paragraph = next(p for p in README.split("\n\n") if line in p)
        assert "VM" in paragraph, paragraph


def test_speed_table_is_bench_results():
    """The README's speed table is what bench/seed_models.py writes from bench/RESULTS.md."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_seed_models", ROOT / "bench" / "seed_models.py")
    seed_models = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(seed_models)
    results = (ROOT / "bench" / "RESULTS.md").read_text(encoding="utf-8")
    assert seed_models.readme_block(README) == seed_models.readme_table(results), (
        "the README's speed table is stale: run python bench/seed_models.py --update-readme")
