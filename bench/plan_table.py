"""The README's kernel-count and memory-plan table: every seed model and every prototxt in
../shared/models/caffe, at batch 1 and 32, from ``graphrt.compile(model, device="cpu", ...)`` itself.

    python bench/plan_table.py                  # print the table (Markdown)
    python bench/plan_table.py --update README.md   # rewrite the table in the README in place

Columns: kernels per step (``exe.kernels_per_step``) at opt level 0 and 3; the sibling convolutions
the level-3 graph merged (``conv2d_split`` nodes, each one GEMM whose outputs are written where their
readers want them); the concats of the level-3 graph that are free (their branches, merged ones
too, write into their slices: no kernel) out of all concats; and the level-3 executable's
``exe.plan``: arena bytes, its lower bound (the most bytes live at one
step), arena / lower bound, and the naive total (every tensor, workspace and prefetch slot its own
buffer). Every figure depends only on graphrt's code, the model files and numpy's dtype sizes, not
on the machine: the cpu device's kernel and workspace choice is fixed (no timing decides it), so
``tests/test_readme.py`` recomputes this table and fails when the README's copy differs.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

import graphrt  # noqa: E402
from graphrt.memory import format_bytes  # noqa: E402
from graphrt.scheduler.program import is_free  # noqa: E402
from seed_models import SHARED, seed_models  # noqa: E402

HEAD = ["model", "batch", "kernels O0", "kernels O3", "merged convs", "free concats", "arena",
        "lower bound", "arena / bound", "naive"]
BEGIN, END = "<!-- plan-table: python bench/plan_table.py --update README.md -->", "<!-- /plan-table -->"
PROTOTXT_OPTIONS = {
    "lenet_train_test.prototxt": {"input_shape": (1, 28, 28)},
    "cifar10_quick_train_test.prototxt": {"input_shape": (3, 32, 32)},
    "digits_lenet.prototxt": {"input_shape": (1, 28, 28), "stage": "deploy", "classes": 10},
}


SEED_FILES = {"digits_lenet.prototxt", "cifar10_quick.prototxt", "bvlc_alexnet_deploy.prototxt",
              "bvlc_googlenet_deploy.prototxt"}  # already rows as caffe_lenet, ... above them


def models():
    """(name, build) for every seed model, then every other prototxt of ../shared/models/caffe."""
    for m in seed_models():
        yield m.name, m.build
    if SHARED.is_dir():
        for path in sorted((SHARED / "models" / "caffe").glob("*.prototxt")):
            if path.name not in SEED_FILES:
                yield path.name, (lambda p=path: graphrt.load(p, **PROTOTXT_OPTIONS.get(p.name, {})))


def row(name: str, graph, batch: int) -> list[str]:
    """One table row from the level-0 and level-3 executables of ``graph`` at ``batch``."""
    # one thread and the fixed conv rule: the plan is then the same on every machine (a split
    # launch reserves a workspace share per thread; a measured algorithm has its own workspace)
    o0 = graphrt.compile(graph, device="cpu", batch_size=batch, opt_level=0, threads=1,
                         algorithms="default")
    exe = graphrt.compile(graph, device="cpu", batch_size=batch, opt_level=3, threads=1,
                          algorithms="default")
    plan = exe.plan
    plan.check()
    concats = [n for n in exe.graph.nodes if n.op == "concat"]
    free = sum(is_free(n, plan) for n in concats)
    merged = [n for n in exe.graph.nodes if n.op == "conv2d_split"]
    return [name, str(batch), str(o0.kernels_per_step), str(exe.kernels_per_step),
            f"{sum(len(n.outputs) for n in merged)} into {len(merged)}" if merged else "-",
            f"{free} of {len(concats)}" if concats else "-", format_bytes(plan.arena_bytes),
            format_bytes(plan.lower_bound_bytes), f"{plan.arena_bytes / plan.lower_bound_bytes:.3f}",
            format_bytes(plan.naive_bytes)]


def table(batches=(1, 32)) -> str:
    """The whole table as Markdown."""
    rows = [row(name, build(), b) for name, build in models() for b in batches]
    lines = ["| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def readme_table(text: str) -> str:
    """The table between the README's plan-table markers."""
    match = re.search(re.escape(BEGIN) + r"\n(.*?)\n" + re.escape(END), text, re.S)
    if match is None:
        raise SystemExit(f"the README has no {BEGIN} ... {END} block")
    return match.group(1).strip()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--update", metavar="README.md", help="rewrite the table in this file in place")
    args = parser.parse_args(argv)
    text = table(args.batches)
    if args.update:
        path = Path(args.update)
        old = path.read_text(encoding="utf-8")
        path.write_text(old.replace(readme_table(old), text), encoding="utf-8")
    else:
        print(text)


if __name__ == "__main__":
    main()
