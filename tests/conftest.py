"""Shared test setup: hypothesis profiles and the location of ../shared."""
from __future__ import annotations

import os
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


@pytest.fixture
def shared() -> Path:
    """The ../shared folder with the real model files; skips the test when it is absent."""
    if not SHARED.is_dir():
        pytest.skip("../shared is not present")
    return SHARED


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
