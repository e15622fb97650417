"""ONNX backend conformance of graphrt: run the runner cases ``tests/test_onnx_backend.py`` selects
(graphrt's ONNX op set, cpu device) and print how many pass, how many are excluded (with the
reasons of ``tests/onnx_backend_exclusions.json``) and how many fail.

    python bench/onnx_conformance.py            # counts per runner category and per reason
    python bench/onnx_conformance.py --json out.json   # also every case's outcome and message

Slow-marked cases run too. The exit status is 1 when a selected case that is not excluded fails.
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULE = ROOT / "tests" / "test_onnx_backend.py"


class Collector:
    """A pytest plugin keeping each runner case's outcome and message."""

    def __init__(self):
        self.cases: dict[str, dict] = {}

    def pytest_runtest_logreport(self, report):
        if "OnnxBackend" not in report.nodeid:
            return
        if report.when == "call" or (report.when == "setup" and not report.passed):
            category, name = report.nodeid.split("::")[-2:]
            outcome = "excluded" if report.skipped else ("passed" if report.passed else "failed")
            message = ""
            if report.skipped:
                message = report.longrepr[2].removeprefix("Skipped: ").removeprefix("excluded: ")
            elif report.failed:
                message = (report.longreprtext.strip().splitlines() or [""])[-1][:300]
            self.cases[name] = {"category": category[len("OnnxBackend"):-len("Test")],
                                "outcome": outcome, "message": message}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write every case's outcome and message here")
    args = parser.parse_args(argv)
    collector = Collector()
    pytest.main([str(MODULE), "-q", "-p", "no:warnings", "-p", "no:cacheprovider", "-k", "OnnxBackend",
                 "--tb=line", "-o", "addopts=", "--no-header", "-rN"], plugins=[collector])
    cases = collector.cases
    counts = collections.Counter(c["outcome"] for c in cases.values())
    by_category = collections.defaultdict(collections.Counter)
    for c in cases.values():
        by_category[c["category"]][c["outcome"]] += 1
    reasons = collections.Counter(c["message"] for c in cases.values() if c["outcome"] == "excluded")
    print(f"\nONNX backend conformance (onnx {_version('onnx')}, {len(cases)} selected cases)")
    print(f"{'category':<24}{'passed':>8}{'excluded':>10}{'failed':>8}")
    for category in sorted(by_category):
        c = by_category[category]
        print(f"{category:<24}{c['passed']:>8}{c['excluded']:>10}{c['failed']:>8}")
    print(f"{'total':<24}{counts['passed']:>8}{counts['excluded']:>10}{counts['failed']:>8}")
    print("\nexcluded, by reason:")
    for reason, n in reasons.most_common():
        print(f"{n:5d}  {reason}")
    failed = sorted(name for name, c in cases.items() if c["outcome"] == "failed")
    if failed:
        print("\nfailed:")
        for name in failed:
            print(f"  {name}: {cases[name]['message']}")
    if args.json:
        args.json.write_text(json.dumps(cases, indent=1, sort_keys=True), encoding="utf-8")
    return 1 if failed else 0


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


if __name__ == "__main__":
    sys.exit(main())
