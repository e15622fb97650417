"""How much of the loading time ``exe.stream`` hides behind compute (the seconds that
``tests/test_stream.py`` deliberately does not assert on).

    python bench/stream_overlap.py [--model torch_lenet] [--batch 64] [--batches 16]

A loader that sleeps about as long as one step takes: run serially (load, then compute), the batches
take about n * (T + C); streamed, close to n * max(T, C). Both are measured in the same run, one after
the other; the ratio streamed / serial is printed (about 0.5 when loading and compute overlap fully,
1.0 when they do not overlap at all). Machine-dependent: quote it with the machine and its load.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

import graphrt  # noqa: E402
from seed_models import seed_models  # noqa: E402


def measure(model: str, batch: int, n: int) -> dict:
    """Serial and streamed seconds for ``n`` batches from a loader sleeping one step's time each."""
    graph = next(iter(seed_models([model]))).build()
    exe = graphrt.compile(graph, batch_size=batch, opt_level=3)
    spec = graph.specs[graph.inputs[0]]
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal(spec.concrete(batch)).astype(spec.dtype) for _ in range(2)]
    for _ in exe.stream(xs):
        pass  # warm up
    start = time.perf_counter()
    for _ in range(3):
        for x in xs:
            exe(x)
    step = (time.perf_counter() - start) / 6

    def slow(count):
        for i in range(count):
            time.sleep(step)
            yield xs[i % 2]

    start = time.perf_counter()
    for x in slow(n):
        exe(x)
    serial = time.perf_counter() - start
    start = time.perf_counter()
    for _ in exe.stream(slow(n)):
        pass
    streamed = time.perf_counter() - start
    return {"model": model, "batch": batch, "batches": n, "step_s": step, "serial_s": serial,
            "streamed_s": streamed, "ratio": streamed / serial}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="torch_lenet")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--batches", type=int, default=16)
    args = parser.parse_args(argv)
    r = measure(args.model, args.batch, args.batches)
    print(f"{r['model']}, batch {r['batch']}, {r['batches']} batches, loader sleeping {r['step_s'] * 1e3:.1f} ms "
          f"per batch: serial {r['serial_s']:.3f} s, streamed {r['streamed_s']:.3f} s, "
          f"streamed / serial {r['ratio']:.2f}")


if __name__ == "__main__":
    main()
