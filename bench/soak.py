"""Soak: many steps of ``exe.stream`` on a seed model, with resident memory, threads and open file
handles measured, and the pipeline's shutdown checked for a normal end, an early ``break`` and a
loader that raises part-way.

    python bench/soak.py [--steps 10000] [--model keras_simple_ann] [--batch 32]

Prints one table; exits non-zero when RSS grows by 5 MB or more after warm-up or a thread or file
handle is left behind.
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

import graphrt  # noqa: E402
from seed_models import seed_models  # noqa: E402


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def handles() -> int:
    return len(os.listdir("/proc/self/fd"))


def threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith("graphrt"))


class Boom(RuntimeError):
    pass


def batches(xs, steps, fail_at=None):
    for i in range(steps):
        if i == fail_at:
            raise Boom(f"loader fault at step {i}")
        yield xs[i % len(xs)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=10000)
    p.add_argument("--model", default="keras_simple_ann")
    p.add_argument("--batch", type=int, default=32)
    args = p.parse_args(argv)
    model = next(iter(seed_models([args.model])))
    graph = model.build()
    exe = graphrt.compile(graph, batch_size=args.batch)
    spec = graph.specs[graph.inputs[0]]
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal(spec.concrete(args.batch)).astype(spec.dtype) for _ in range(8)]
    base_threads, base_fds = threads(), handles()
    for _ in exe.stream(batches(xs, 500)):
        pass  # warm-up
    start_rss, start = rss(), time.perf_counter()
    n = sum(1 for _ in exe.stream(batches(xs, args.steps)))
    seconds = time.perf_counter() - start
    growth = rss() - start_rss
    rows = [("steps", f"{n} in {seconds:.1f} s ({n / seconds:.0f} steps/s)"),
            ("RSS growth after warm-up", f"{growth / 2**20:.2f} MiB")]
    for i, _ in enumerate(exe.stream(batches(xs, args.steps))):
        if i == args.steps // 10:
            break
    rows.append(("after an early break", f"{threads() - base_threads} threads, "
                                          f"{handles() - base_fds} file handles left"))
    try:
        for _ in exe.stream(batches(xs, args.steps, fail_at=args.steps // 2)):
            pass
        rows.append(("loader raising at step", "NOT RAISED"))
    except Boom as err:
        rows.append((f"loader raising at step {args.steps // 2}", f"{type(err).__name__} reached the "
                     f"caller; {threads() - base_threads} threads, {handles() - base_fds} handles left"))
    for k, v in rows:
        print(f"{k:32s} {v}")
    ok = growth < 5 * 2**20 and threads() == base_threads and handles() == base_fds
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
