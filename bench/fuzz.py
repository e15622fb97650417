"""Fuzz every model-file parser with mutations of the real files in ../shared.

    python bench/fuzz.py --cases 10000                       # every format, hypothesis-driven
    python bench/fuzz.py --cases 500 --formats prototxt npz --seed 3 --driver random
    python bench/fuzz.py --replay F --formats npz --replay-seed caffe_lenet.npz   # rerun a failure
    python bench/fuzz.py --atheris --cases 20000 --formats caffemodel          # coverage-guided

Each format runs in its own worker process, with its address space capped (RLIMIT_AS) and each
case bounded in CPU time and traced memory (tracemalloc), both beyond what graphrt's budgets
admitted; graphrt runs with the limits users get unless --lowered-limits; see tools.fuzz.driver. The worker
writes the case it is about to run to ``<save-failures>/inflight-<format>.*`` first, so a case
that kills the process (a crash in native code) still leaves its bytes. Prints one row per format
and every failure with its mutations; failing inputs go to --save-failures.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=int, default=1000, help="cases per format")
    p.add_argument("--formats", nargs="+", help="formats to fuzz (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--driver", choices=("hypothesis", "random"), default="hypothesis")
    p.add_argument("--save-failures", type=Path,
                   default=Path(tempfile.gettempdir()) / "graphrt-fuzz-failures",
                   help="folder for failing inputs and their descriptions")
    p.add_argument("--time-limit", type=float, default=2.0, help="seconds per case")
    p.add_argument("--memory-limit-mb", type=int, default=256, help="traced peak per case")
    p.add_argument("--no-trace-memory", action="store_true", help="skip tracemalloc (faster)")
    p.add_argument("--lowered-limits", action="store_true",
                   help="lower graphrt's own limits (64 MiB of parameters...) instead of running "
                        "with the limits users get")
    p.add_argument("--address-space-mb", type=int, default=3072, help="RLIMIT_AS per worker")
    p.add_argument("--jobs", type=int, default=1, help="formats fuzzed at once")
    p.add_argument("--atheris", action="store_true", help="coverage-guided run with atheris")
    p.add_argument("--replay", type=Path, help="a saved failing input to run again")
    p.add_argument("--replay-seed", help="the seed file the saved input was made from")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def limits_of(args):
    from tools.fuzz.driver import Limits

    return Limits(seconds=args.time_limit, peak_bytes=args.memory_limit_mb << 20,
                  trace_memory=not args.no_trace_memory, lowered=args.lowered_limits)


def cap_address_space(mb: int) -> None:
    if mb > 0:
        resource.setrlimit(resource.RLIMIT_AS, (mb << 20, mb << 20))


# ------------------------------------------------------------------------------- worker

def worker(args) -> int:
    """Fuzz one format in this process; print its report as one JSON line."""
    cap_address_space(args.address_space_mb)
    from tools.fuzz import driver as fuzzing

    target = fuzzing.TARGETS[args.formats[0]]
    folder = args.save_failures
    folder.mkdir(parents=True, exist_ok=True)
    inflight = folder / f"inflight-{target.name}"

    def on_case(index, seed, data, description):
        inflight.with_suffix(".bin").write_bytes(data)
        inflight.with_suffix(".txt").write_text(f"{index}\n{seed.name}\n{description}\n")

    run = fuzzing.fuzz_hypothesis if args.driver == "hypothesis" else fuzzing.fuzz_random
    report = run(target, args.cases, args.seed, limits_of(args), on_case=on_case)
    for suffix in (".bin", ".txt"):
        inflight.with_suffix(suffix).unlink(missing_ok=True)
    saved = fuzzing.save_failures(report.failures, folder)
    print(json.dumps({
        "row": report.row(), "cases": report.cases, "errors": report.errors,
        "failures": [{"kind": f.kind, "error": f.error[:300], "description": f.description[:300],
                      "saved": str(path)} for f, path in zip(report.failures, saved)]}), flush=True)
    return 0


def crash_report(fmt: str, folder: Path, returncode: int) -> dict:
    """The row of a worker that died, with the case it was running."""
    txt = folder / f"inflight-{fmt}.txt"
    index, seed, description = (txt.read_text().split("\n", 2) + ["", "", ""])[:3] \
        if txt.exists() else ("?", "?", "unknown")
    how = (f"signal {-returncode}" if returncode < 0 else f"exit status {returncode}") + \
        f" (its stderr: {folder / f'stderr-{fmt}.log'})"
    return {"row": f"| {fmt} | {index} (crashed) | - | - | 1 | worker died: {how} |", "cases": 0,
            "errors": {}, "failures": [{"kind": "crash", "error": how,
                                        "description": description.strip(),
                                        "saved": str(folder / f"inflight-{fmt}.bin")}]}


def run_workers(args, formats) -> dict[str, dict]:
    """One worker process per format, ``--jobs`` at a time; their JSON results by format."""
    base = [sys.executable, str(Path(__file__).resolve()), "--worker", "--cases", str(args.cases),
            "--seed", str(args.seed), "--driver", args.driver, "--save-failures",
            str(args.save_failures), "--time-limit", str(args.time_limit), "--memory-limit-mb",
            str(args.memory_limit_mb), "--address-space-mb", str(args.address_space_mb)]
    if args.no_trace_memory:
        base.append("--no-trace-memory")
    if args.lowered_limits:
        base.append("--lowered-limits")
    if args.atheris:
        base.append("--atheris")
    pending, running, results = list(formats), {}, {}
    args.save_failures.mkdir(parents=True, exist_ok=True)
    while pending or running:
        while pending and len(running) < max(1, args.jobs):
            fmt = pending.pop(0)
            with open(args.save_failures / f"stderr-{fmt}.log", "w") as err:  # for a crash
                running[fmt] = subprocess.Popen(base + ["--formats", fmt], stdout=subprocess.PIPE,
                                                stderr=err, text=True)
        for fmt, proc in list(running.items()):
            if proc.poll() is None:
                continue
            out = proc.stdout.read().strip().splitlines()
            results[fmt] = (json.loads(out[-1]) if proc.returncode == 0 and out
                            else crash_report(fmt, args.save_failures, proc.returncode))
            del running[fmt]
        time.sleep(0.2)
    return results


def print_table(args, formats, results, seconds: float) -> int:
    from tools.fuzz.driver import TABLE_HEADER

    driver = "atheris (coverage-guided)" if args.atheris else args.driver
    which = "lowered (--lowered-limits)" if args.lowered_limits else "the defaults users get"
    print(f"graphrt fuzz: {args.cases} cases per format, driver {driver}, seed {args.seed}, "
          f"graphrt limits {which}, bounds per case {args.time_limit} s of CPU and "
          f"{args.memory_limit_mb} MiB traced, each plus what graphrt's budgets admitted "
          "(1 s per 64 MiB; the bytes)\n")
    print(TABLE_HEADER)
    failures = 0
    for fmt in formats:
        print(results[fmt]["row"])
        failures += len(results[fmt]["failures"])
    print(f"\n{failures} failures in {seconds:.0f} s")
    for fmt in formats:
        for f in results[fmt]["failures"]:
            print(f"- {fmt}: {f['kind']}: {f['error']}\n    mutations: {f['description']}\n"
                  f"    input: {f['saved']}")
    for fmt in formats:
        if results[fmt]["errors"]:
            kinds = ", ".join(f"{k} {v}" for k, v in sorted(results[fmt]["errors"].items()))
            print(f"{fmt} rejections: {kinds}")
    return 1 if failures else 0


# ------------------------------------------------------------------------------- atheris

def atheris_worker(args) -> int:
    """Coverage-guided: libFuzzer mutates the bytes that drive the structure-aware mutators
    (atheris' FuzzedDataProvider stands in for hypothesis); graphrt is instrumented."""
    import atheris

    cap_address_space(args.address_space_mb)
    with atheris.instrument_imports(include=["graphrt"]):
        import graphrt  # noqa: F401
        from tools.fuzz import mutators as fuzz_mutators  # noqa: F401
        from tools.fuzz import driver as fuzzing  # noqa: F401
        from graphrt.frontends import npz as serialize  # noqa: F401
        from graphrt.frontends import mxnet  # noqa: F401
        from graphrt.frontends.caffe.net import net as caffe  # noqa: F401
        from graphrt.frontends.keras import files as keras_files  # noqa: F401
        with contextlib.suppress(ImportError):
            from graphrt.frontends.onnx.importer import importer as onnx  # noqa: F401
    runner = fuzzing.Runner(fuzzing.TARGETS[args.formats[0]], limits_of(args))
    if runner.skipped:
        print(json.dumps({"row": runner.report.row(), "cases": 0, "errors": {}, "failures": []}))
        os._exit(0)

    def test_one(data: bytes) -> None:
        runner.one(fuzz_mutators.ProviderChooser(atheris.FuzzedDataProvider(data)))
        if runner.report.cases >= args.cases:  # libFuzzer exits through C: report here
            report = runner.close()
            saved = fuzzing.save_failures(report.failures, args.save_failures)
            print(json.dumps({"row": report.row(), "cases": report.cases, "errors": report.errors,
                              "failures": [{"kind": f.kind, "error": f.error[:300],
                                            "description": f.description[:300], "saved": str(p)}
                                           for f, p in zip(report.failures, saved)]}), flush=True)
            os._exit(0)

    # -timeout=0: the case bound is tools.fuzz.driver's own SIGALRM (libFuzzer's would share it)
    atheris.Setup([sys.argv[0], f"-runs={args.cases + 10}", "-timeout=0", f"-seed={args.seed + 1}",
                   f"-rss_limit_mb={args.address_space_mb}", "-max_len=4096", "-len_control=0",
                   "-print_final_stats=0"],
                  test_one)
    atheris.Fuzz()
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    from tools.fuzz.driver import TARGETS

    formats = args.formats or list(TARGETS)
    unknown = [f for f in formats if f not in TARGETS]
    if unknown:
        raise SystemExit(f"unknown formats {unknown}; known: {', '.join(TARGETS)}")
    if args.worker:
        return atheris_worker(args) if args.atheris else worker(args)
    if args.replay:
        from tools.fuzz.driver import replay

        status, error, trace, seconds, peak = replay(TARGETS[formats[0]], args.replay_seed,
                                                     args.replay, limits_of(args))
        print(f"{status}: {error} ({seconds:.3f} s, peak {peak >> 20} MiB)\n{trace}")
        return 0 if status in ("loaded", "rejected") else 1
    start = time.perf_counter()
    results = run_workers(args, formats)
    return print_table(args, formats, results, time.perf_counter() - start)


if __name__ == "__main__":
    sys.exit(main())
