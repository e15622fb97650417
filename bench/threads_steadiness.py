"""Images/s and their spread for the cpu device's threading variants, interleaved in one process.

    python bench/threads_steadiness.py                                  # the LeNets, batch 64
    python bench/threads_steadiness.py --models caffe_cifar10_quick --batch 100 --rounds 9

Variants (all compiled from the same graph at opt level 3, timed in turn in every round, each after
one untimed step of its own, so that load from elsewhere hits all alike):

- ``t1``: one thread;
- ``t2``: two threads as the device runs them by default (segments, see
  ``graphrt/devices/cpu/segments.py``);
- ``t2-per-launch``: two threads with every launch split on its own (segments off: how the device
  ran before issue 18);

Each round times ``--steps`` consecutive steps. Printed per variant: the median images/s of the
rounds with their min-max and spread ((max - min) / median), and the 10th/50th/90th percentiles
of the single steps' rates; the load average before and after. The first variant's outputs are
compared with every other's (max |difference|: 0 where the kernels compute each image alone).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import graphrt
from graphrt.devices.cpu import segments

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from seed_models import seed_models  # noqa: E402


def configure(variant: str) -> int:
    """Set the module switches for ``variant``; its thread count."""
    segments.ENABLED = "per-launch" not in variant
    return int(variant[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["caffe_lenet", "torch_lenet"])
    ap.add_argument("--variants", nargs="+", default=["t1", "t2-per-launch", "t2"])
    ap.add_argument("--batch", type=int, default=0, help="default: the model's own")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--algorithms", default=None, help="as graphrt.compile's (default: measure)")
    a = ap.parse_args()
    print(f"load average {os.getloadavg()}", flush=True)
    for model in seed_models(a.models):
        g = model.build()
        batch = a.batch or model.batch
        spec = g.specs[g.inputs[0]]
        x = np.random.default_rng(0).standard_normal(spec.concrete(batch)).astype(spec.dtype)
        exes = {}
        for v in a.variants:
            exes[v] = graphrt.compile(g, device="cpu", batch_size=batch, opt_level=3,
                                      threads=configure(v), algorithms=a.algorithms)
        first = None
        for v, exe in exes.items():
            configure(v)
            out = exe(x)
            if first is None:
                first = out
            else:
                print(f"  {v}: max |difference| from {a.variants[0]}: {np.abs(out - first).max():.3g}")
        runs = {v: [] for v in exes}
        steps = {v: [] for v in exes}
        for _ in range(a.rounds):
            for v, exe in exes.items():
                configure(v)
                exe(x)
                start = time.perf_counter()
                for _ in range(a.steps):
                    t = time.perf_counter()
                    exe(x)
                    steps[v].append(batch / (time.perf_counter() - t))
                runs[v].append(batch * a.steps / (time.perf_counter() - start))
        configure("t1")
        for v in exes:
            med, rates = statistics.median(runs[v]), sorted(steps[v])
            pct = [rates[int(p * (len(rates) - 1))] for p in (0.1, 0.5, 0.9)]
            print(f"{model.name:20s} batch {batch:4d} {v:18s} images/s {med:10,.0f} "
                  f"({min(runs[v]):,.0f}-{max(runs[v]):,.0f}, spread "
                  f"{(max(runs[v]) - min(runs[v])) / med:4.0%}); steps p10/p50/p90 "
                  f"{pct[0]:,.0f} / {pct[1]:,.0f} / {pct[2]:,.0f}", flush=True)
    print(f"load average {os.getloadavg()}", flush=True)


if __name__ == "__main__":
    main()
