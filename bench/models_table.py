"""The README's "Which models run" table, from the model tests' own results.

Runs the whole-model tests (Keras applications, the Gluon model zoo's symbols, PyTorch modules
through ONNX files and ``from_torch``, the training steps, the trained Caffe LeNet) with
``GRAPHRT_MODEL_RESULTS`` set, so that each test records its framework, model and measured maximum
relative error (``tests/conftest.py``), and prints the table; ``--readme`` also writes it into
README.md between the ``<!-- models table -->`` markers.

    python bench/models_table.py             # runs the tests (several minutes), prints markdown
    python bench/models_table.py --readme    # ... and updates README.md
    python bench/models_table.py --results results.json   # from an earlier run's records
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ["tests/test_keras_applications.py", "tests/test_keras_training.py",
         "tests/test_mxnet_gluon_zoo.py", "tests/test_onnx_torch_ops.py",
         "tests/test_caffe_frontend.py::test_trained_lenet_matches_numpy_on_real_digits",
         "tests/test_caffe_layers.py::test_one_sgd_step_through_the_new_layers_equals_pytorch"]
BEGIN, END = "<!-- models table -->", "<!-- end models table -->"


def run_tests(path: Path) -> int:
    """Run the model tests, recording into ``path``; pytest's exit status."""
    env = {**os.environ, "GRAPHRT_MODEL_RESULTS": str(path), "HYPOTHESIS_PROFILE": "ci",
           "KERAS_BACKEND": "torch"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W",
           "ignore::DeprecationWarning", *TESTS]
    return subprocess.call(cmd, cwd=ROOT, env=env)


def status(r: dict) -> str:
    if r["error"] is None:
        return r["note"] or "not run"
    return "runs" if r["error"] < r["tolerance"] else f"**wrong** (> {r['tolerance']:g})"


def table(records: list[dict]) -> str:
    rows = ["| framework | model | status | max relative error | compared with |",
            "|---|---|---|---|---|"]
    for r in sorted(records, key=lambda r: (r["framework"], r["model"])):
        err = "" if r["error"] is None else f"{r['error']:.1e}"
        note = "" if r["error"] is None else r["note"]
        rows.append(f"| {r['framework']} | {r['model']} | {status(r)} | {err} | {note} |")
    return "\n".join(rows)


def write_readme(text: str) -> None:
    readme = ROOT / "README.md"
    body = readme.read_text(encoding="utf-8")
    if BEGIN not in body or END not in body:
        raise SystemExit(f"README.md has no {BEGIN} ... {END} block")
    head, rest = body.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}", encoding="utf-8")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, help="records of an earlier run (skip the tests)")
    parser.add_argument("--readme", action="store_true", help="write the table into README.md")
    args = parser.parse_args(argv)
    code = 0
    if args.results is None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "models.json"
            code = run_tests(path)
            records = json.loads(path.read_text(encoding="utf-8")) if path.exists() else []
    else:
        records = json.loads(args.results.read_text(encoding="utf-8"))
    text = table(records)
    print(text)
    if args.readme:
        write_readme(text)
    return code


if __name__ == "__main__":
    sys.exit(main())
