"""Shared test setup: hypothesis profiles and the location of ../shared."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("ci", derandomize=True, max_examples=40, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=40, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=1000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

SHARED = Path(__file__).resolve().parents[2] / "shared"

# convolution algorithms by the fixed rule, not by timing: the suite is deterministic on any machine
# (tests/test_conv_algorithms.py measures, with a cache in a temporary folder)
os.environ["GRAPHRT_ALGORITHMS"] = "default"


@pytest.fixture
def shared() -> Path:
    """The ../shared folder with the real model files; skips the test when it is absent."""
    if not SHARED.is_dir():
        pytest.skip("../shared is not present")
    return SHARED


def graphrt_threads() -> set:
    """graphrt's live threads (its loader and copy threads are named ``graphrt...``)."""
    return {t for t in threading.enumerate() if t.name.startswith("graphrt")}


def threads_back_to(before: set, seconds: float = 30.0) -> bool:
    """Whether graphrt's threads are ``before`` again within ``seconds``. A thread that has been
    told to end may need a moment on a loaded machine: the test waits for that, rather than
    sleeping a fixed time, and ``seconds`` is far above what ending takes."""
    deadline = time.monotonic() + seconds
    while graphrt_threads() != before and time.monotonic() < deadline:
        time.sleep(0.01)
    return graphrt_threads() == before


MODEL_RESULTS_ENV = "GRAPHRT_MODEL_RESULTS"


@pytest.fixture(scope="session")
def model_results():
    """Whole-model comparisons record themselves here: ``record(framework, model, error,
    tolerance, note="")`` before asserting. With ``GRAPHRT_MODEL_RESULTS=path`` set, the records
    are written to ``path`` (JSON) at the end of the session; ``bench/models_table.py`` runs the
    model tests that way and prints the README's "Which models run" table from them."""
    records: list[dict] = []

    def record(framework: str, model: str, error: float | None, tolerance: float | None,
               note: str = "") -> None:
        records.append({"framework": framework, "model": model, "error": error,
                        "tolerance": tolerance, "note": note})
    yield record
    path = os.environ.get(MODEL_RESULTS_ENV)
    if path:
        import json

        Path(path).write_text(json.dumps(records, indent=1), encoding="utf-8")


# ---- what a run skipped for: optional tools, each with how to get it -----------------------------
OPTIONAL_TOOLS = [  # (tool, pattern of its skip reasons, how to get it)
    ("chromium", r"chromium is not installed", "apt-get install chromium (the browser tests drive it)"),
    ("Graphviz", r"Graphviz's dot is not installed", "apt-get install graphviz"),
    ("PyTorch", r"could not import 'torch'|PyTorch is not installed",
     "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"),
    ("onnx, onnxruntime", r"could not import 'onnx", "pip install -e '.[test]'"),
    ("h5py, scikit-learn, matplotlib", r"could not import '(h5py|sklearn|matplotlib)",
     "pip install -e '.[test]'"),
    ("../shared", r"\.\./shared|is absent|shared/models",
     "put the shared models and fixtures beside the repository as ../shared"),
    ("a CUDA GPU", r"no GPU|could not import 'cupy'|torch has no CUDA",
     "a machine with an NVIDIA GPU and pip install -e '.[cuda13]' (or cuda12)"),
    ("nvcc", r"nvcc is not installed", "the CUDA toolkit (nvcc on PATH)"),
    ("NVRTC", r"libnvrtc", "pip install -e '.[cuda13]'"),
    ("a C++ compiler", r"no host C\+\+ compiler", "apt-get install g++"),
]


def skipped_tools(reasons) -> dict[str, int]:
    """How many of the skip ``reasons`` each optional tool accounts for."""
    import re

    counts: dict[str, int] = {}
    for reason in reasons:
        for tool, pattern, _ in OPTIONAL_TOOLS:
            if re.search(pattern, reason):
                counts[tool] = counts.get(tool, 0) + 1
                break
    return counts


def pytest_terminal_summary(terminalreporter):
    """Say which optional tools the run skipped tests for, and how to get each."""
    reasons = []
    for report in terminalreporter.stats.get("skipped", []):
        longrepr = report.longrepr
        reasons.append(longrepr[2] if isinstance(longrepr, tuple) else str(longrepr))
    counts = skipped_tools(reasons)
    terminalreporter.write_sep("-", "optional tools")
    if not counts:
        terminalreporter.write_line("no test was skipped for a missing optional tool")
        return
    terminalreporter.write_line("tests skipped because an optional tool is missing:")
    for tool, _, how in OPTIONAL_TOOLS:
        if tool in counts:
            terminalreporter.write_line(f"  {tool:32s} {counts[tool]:4d} skipped   get it: {how}")
