"""`make demo`: compile every seed model on the cpu device and print what graphrt made of it.

Columns: model, graph nodes as loaded, kernels per step after optimization (opt level 3),
parameters, GFLOP per image, output shape, the batch size, and images/s of the compiled executable
on the cpu device with all the cores this process may use: the median of :data:`REPEATS` timed
steps at that batch size (after one warm-up), with the slowest and fastest step in brackets. Then
the trained Caffe LeNet classifies scikit-learn's real digits.
"""
from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import graphrt  # noqa: E402
from seed_models import SHARED, example, seed_models  # noqa: E402


REPEATS = 7


def images_per_second(exe, x, repeats: int = REPEATS) -> tuple[float, float, float]:
    """(median, slowest, fastest) images/s over ``repeats`` timed steps."""
    exe(x)  # warm-up: touches the arena and the workspaces
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        exe(x)
        rates.append(len(x) / (time.perf_counter() - start))
    return statistics.median(rates), min(rates), max(rates)


def main() -> None:
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    header = f"{'model':22s} {'nodes':>6s} {'kernels':>8s} {'params':>12s} {'GFLOP/img':>10s} " \
             f"{'output':>12s} {'batch':>6s} {'images/s: median (min-max)':>30s}"
    print(f"images/s: median of {REPEATS} timed steps per model at its batch size, with the slowest "
          f"and fastest step's rate in brackets ({threads} threads, load average "
          f"{os.getloadavg()[0]:.2f})")
    print(header)
    print("-" * len(header))
    for model in seed_models():
        graph = model.build()
        exe = graphrt.compile(graph, device="cpu", batch_size=model.batch, opt_level=3)
        spec = graph.specs[graph.inputs[0]]
        x = np.random.default_rng(0).standard_normal(spec.concrete(model.batch)).astype(spec.dtype)
        out = graph.specs[graph.outputs[0]]
        med, lo, hi = images_per_second(exe, x)
        rate = f"{med:,.1f} ({lo:,.1f}-{hi:,.1f})"
        print(f"{model.name:22s} {len(graph):6d} {exe.kernels_per_step:8d} {graph.num_params():12,d} "
              f"{graph.flops(1) / 1e9:10.3f} {str(out):>12s} {model.batch:6d} {rate:>30s}",
              flush=True)
    if not SHARED.is_dir():
        print("\n(../shared is absent: the Caffe models and the trained LeNet are skipped)")
        return
    try:
        accuracy, _, labels = example("caffe_lenet_digits").classify()
    except graphrt.GraphrtError as err:  # scikit-learn missing
        print(f"\ndigits demo skipped: {err}")
        return
    print(f"\nCaffe LeNet (lenet_iter_10000.caffemodel) on {len(labels)} real scikit-learn digits: "
          f"{accuracy:.1%} correct")


if __name__ == "__main__":
    main()
