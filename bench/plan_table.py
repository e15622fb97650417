"""The memory-plan and kernel-count table of the README: every seed model and every prototxt in
../shared/models/caffe, at batch 1 and 32, compiled for the cpu device.

    python bench/plan_table.py [--batches 1 32] [--markdown]

Columns: kernels per step at opt level 0 and 3; the level-3 plan's arena bytes, its lower bound (the
most bytes live at one step), arena / lower bound, and the naive total (every tensor its own buffer).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

import graphrt  # noqa: E402
from graphrt.devices.cpu import CpuDevice  # noqa: E402
from graphrt.memory import plan_memory  # noqa: E402
from graphrt.passes import optimize, place_on  # noqa: E402
from graphrt.scheduler.program import is_free  # noqa: E402
from seed_models import SHARED, seed_models  # noqa: E402

PROTOTXT_OPTIONS = {
    "lenet_train_test.prototxt": {"input_shape": (1, 28, 28)},
    "cifar10_quick_train_test.prototxt": {"input_shape": (3, 32, 32)},
    "digits_lenet.prototxt": {"input_shape": (1, 28, 28), "stage": ["deploy"], "classes": 10},
}


def models():
    for m in seed_models():
        yield m.name, m.build
    if SHARED.is_dir():
        for path in sorted((SHARED / "models" / "caffe").glob("*.prototxt")):
            yield path.name, (lambda p=path: graphrt.load(p, **PROTOTXT_OPTIONS.get(p.name, {})))


def kernels(placed, plan) -> int:
    return sum(1 for n in placed.nodes if n.op not in ("copy_to_device", "copy_to_host")
               and not is_free(n, plan))


def row(name, graph, batch):
    device = CpuDevice()
    out = [name, str(batch)]
    for level in (0, 3):
        placed = place_on(optimize(graph, level), "cpu")
        plan = plan_memory(placed, batch, workspace=device.workspace_bytes)
        out.append(str(kernels(placed, plan)))
    plan.check()
    ratio = plan.arena_bytes / plan.lower_bound_bytes
    out += [f"{plan.arena_bytes / 2**20:.2f}", f"{plan.lower_bound_bytes / 2**20:.2f}", f"{ratio:.3f}",
            f"{plan.naive_bytes / 2**20:.2f}"]
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args(argv)
    head = ["model", "batch", "kernels O0", "kernels O3", "arena MiB", "lower bound MiB",
            "arena/bound", "naive MiB"]
    rows = [row(name, build(), b) for name, build in models() for b in args.batches]
    if args.markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for r in rows:
            print("| " + " | ".join(r) + " |")
    else:
        widths = [max(len(x) for x in col) for col in zip(head, *rows)]
        for r in [head] + rows:
            print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))))


if __name__ == "__main__":
    main()
