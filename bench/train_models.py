"""Training images/s and training memory of graphrt's cpu device against PyTorch eager, measured in
the same process with the same number of threads.

    python bench/train_models.py                            # the five models below
    python bench/train_models.py --models caffe_lenet_train --repeats 9 --iterations 20
    python bench/train_models.py --threads 1 --markdown --no-rss --profile-steps 0

Models (graph, batch): ``caffe_lenet_train`` (``lenet_train_test.prototxt``, TRAIN phase,
input_shape (1, 28, 28), batch 64), ``torch_lenet`` (examples/torch_lenet.py, batch 64),
``keras_simple_cnn`` (examples/keras_simple_cnn.py, 3x100x100, batch 16) and
``caffe_cifar10_quick_train`` (``cifar10_quick_train_test.prototxt``, TRAIN, input_shape (3, 32, 32),
batch 100) and ``torch_inception_bn`` (examples/torch_inception_bn.py, 3x224x224, batch 4). The
Caffe ones need ``../shared`` and are left out without it.

Engines, all on the same random batches (standard-normal images, uniform labels) and the same
optimizer, ``SGD(lr=0.001, momentum=0.9, weight_decay=5e-4)`` with each parameter's ``lr_mult`` /
``decay_mult``:

- ``graphrt step``: ``graphrt.Trainer(...).step(x, y)`` per batch (returns the loss: one read-back
  per step);
- ``graphrt fit``: ``Trainer.fit(batches, epochs=1, loss_every=10)`` over the timed run's batches
  (the prefetch pipeline; the loss is read back every 10 steps);
- ``torch``: the same graph in PyTorch eager (``bench/torch_reference.to_torch``, ``train()`` mode)
  cut at the class scores, the loss a PyTorch user would write on them (``F.nll_loss`` after a
  ``log_softmax``, ``F.cross_entropy`` on the logits of a final ``softmax`` or of a Caffe
  ``SoftmaxWithLoss``, the same thing graphrt's ``loss="auto"`` trains), ``torch.optim.SGD`` with one
  param group per (lr_mult, decay_mult); per batch ``zero_grad()``, forward, loss, ``backward()``,
  ``step()``, ``loss.item()``. Dropout is applied (``F.dropout``) as graphrt's ``dropout_train`` does.

Both trainers start from the graph's parameters; the first step's losses are compared (models
without dropout). Timing follows ``bench/seed_models.py``: ``--warmup`` untimed steps per engine,
then ``--repeats`` rounds in which each engine in turn runs one untimed step and one timed run of
``--iterations`` steps (raised so that a run lasts at least ``--min-time``); the table gives the
median images/s with the slowest and fastest run, and the load average after the model's runs.
Threads (``--threads``, default 1 and 2): for each N, ``torch.set_num_threads(N)``, threadpoolctl
limiting numpy's BLAS to N, and ``graphrt.Trainer(..., threads=N)`` (graphrt's own pool splits the
launches; BLAS runs single-threaded inside a step). As in ``bench/seed_models.py``, glibc malloc's mmap
threshold is pinned in the timing process (``steady_allocator``), so PyTorch's speed does not depend
on the models run before it.

Memory: graphrt's training-step memory plan (``trainer.exe.plan``: arena, lower bound, naive; the
parameters, velocities and counters live outside the arena and are listed apart) against PyTorch's
peak memory for one steady-state step measured with ``torch.profiler`` (``profile_memory=True``: the
maximum of the cumulative bytes allocated by forward, backward and ``opt.step()``, gradients set to
None before it, so activations + gradients + temporaries; parameters and momentum buffers, which
exist before and after the step, are listed apart). Unless ``--no-rss``, each framework also trains
``--rss-steps`` steps in a fresh subprocess whose peak RSS (VmHWM, reset through
/proc/self/clear_refs after the imports, the graph and the batches exist) minus the RSS at that point
is reported: everything the framework adds, parameters and thread-pool buffers included.

Then graphrt's training step is profiled launch by launch (``trainer.exe.program(batch)``; every
``launch.fn(attrs, inputs, outputs, workspace)`` timed on its own over ``--profile-steps`` steps:
median and minimum, shares from the minima, the least disturbed by other jobs), summed per op (with
its kernel: the cpu device's own, or the op's reference numpy implementation the device falls back
to; GFLOP/s from the op's cost model) and per phase (forward, backward, update); PyTorch's step is
listed next to it (torch.profiler's self CPU time per op).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

import graphrt
from graphrt.ops import get_op

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # torch_reference


def _inference_bench():
    """bench/seed_models.py (the inference benchmark: its thread and machine helpers), loaded by
    path: ``seed_models`` may already name examples/seed_models.py in this process."""
    import importlib.util

    key = "graphrt_bench_seed_models"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, HERE / "seed_models.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


_bench = _inference_bench()
limit_threads, machine_lines, seed_models, steady_allocator = (
    _bench.limit_threads, _bench.machine_lines, _bench.seed_models, _bench.steady_allocator)

SHARED = HERE.parents[1] / "shared"
SOLVER = dict(lr=0.001, momentum=0.9, weight_decay=5e-4)


# ---- models --------------------------------------------------------------------------------------
def _caffe_train(file: str, input_shape) -> Callable[[], graphrt.Graph]:
    return lambda: graphrt.load(SHARED / "models" / "caffe" / file, phase="TRAIN",
                                input_shape=input_shape)


def _seed(name: str) -> Callable[[], graphrt.Graph]:
    return lambda: seed_models([name])[0].build()


MODELS: dict[str, tuple[Callable[[], graphrt.Graph], int, bool]] = {  # build, batch, needs shared
    "caffe_lenet_train": (_caffe_train("lenet_train_test.prototxt", (1, 28, 28)), 64, True),
    "torch_lenet": (_seed("torch_lenet"), 64, False),
    "keras_simple_cnn": (_seed("keras_simple_cnn"), 16, False),
    "caffe_cifar10_quick_train": (_caffe_train("cifar10_quick_train_test.prototxt", (3, 32, 32)),
                                  100, True),
    "torch_inception_bn": (_seed("torch_inception_bn"), 4, False),
}


def chosen_models(names) -> list[str]:
    if names:
        unknown = set(names) - set(MODELS)
        if unknown:
            raise SystemExit(f"unknown model(s) {sorted(unknown)}; known: {list(MODELS)}")
    return [n for n in (names or MODELS) if not MODELS[n][2] or SHARED.is_dir()]


def make_batches(graph: graphrt.Graph, batch: int, count: int, distinct: int = 8) -> list:
    """``count`` (x, labels) pairs made of up to ``distinct`` random ones used in turn."""
    rng = np.random.default_rng(0)
    spec = graph.specs[graph.inputs[0]]
    classes = _classes(graph)
    pairs = [(rng.standard_normal(spec.concrete(batch)).astype(spec.dtype),
              rng.integers(0, classes, batch).astype(np.int64)) for _ in range(min(count, distinct))]
    return [pairs[i % len(pairs)] for i in range(count)]


def _classes(graph: graphrt.Graph) -> int:
    from graphrt.training.trainer import scores_graph

    g = scores_graph(graph)
    return g.specs[g.outputs[0]].shape[1]


# ---- graphrt -------------------------------------------------------------------------------------
def graphrt_trainer(graph: graphrt.Graph, batch: int, threads: int) -> graphrt.Trainer:
    return graphrt.Trainer(graph, optimizer=graphrt.optim.SGD(**SOLVER), batch_size=batch,
                           threads=threads)


def graphrt_engines(trainer: graphrt.Trainer) -> dict:
    def step(pairs):
        return [trainer.step(x, y) for x, y in pairs]

    def fit(pairs):
        return trainer.fit(pairs, epochs=1, loss_every=10, progress=False)
    return {"graphrt step": step, "graphrt fit": fit}


# ---- PyTorch -------------------------------------------------------------------------------------
def torch_peer_graph(graph: graphrt.Graph) -> tuple[graphrt.Graph, str]:
    """The graph cut at what the PyTorch loss takes, and that loss: ("nll", "xent")."""
    from graphrt.passes import PASSES
    from graphrt.training.trainer import scores_graph

    g = scores_graph(graph)  # a Caffe train net: its loss layer cut off, the logits its output
    prod = g.producer(g.outputs[0])
    if prod is not None and prod.op == "log_softmax":
        return g, "nll"
    if prod is not None and prod.op == "softmax":
        g = g.copy()
        g.set_outputs([prod.inputs[0]])
        g = PASSES["eliminate_dead_code"](g)
    return g, "xent"


def torch_trainer(graph: graphrt.Graph, device: str = "cpu", compiled: bool = False):
    """(module, optimizer, step(x, y) -> loss tensor) for ``graph`` on the torch ``device`` (x and y
    numpy arrays or tensors already there), its forward through ``torch.compile`` when
    ``compiled``; see the module docstring."""
    import torch
    import torch.nn.functional as F
    import torch_reference
    from torch_reference import to_torch

    g, loss_kind = torch_peer_graph(graph)
    module = to_torch(g).train().to(device)
    # to_torch keeps dropout the identity; graphrt's training step applies a mask, so do here too
    ops = {n.name: n for n in g.nodes}

    def dropout(attrs, ins):
        return [F.dropout(ins[0], attrs["rate"], training=torch_reference._TRAINING[0])]
    for i, name in enumerate(module._node_names):
        if ops[name].op == "dropout" and ops[name].attrs["rate"] > 0:
            module._program[i] = (dropout,) + module._program[i][1:]
    groups: dict[tuple, list] = {}
    for name, attr in module.param_names.items():
        p = getattr(module, attr)
        if p.requires_grad:
            info = graph.param_info[name]
            groups.setdefault((info.lr_mult, info.decay_mult), []).append(p)
    opt = torch.optim.SGD([{"params": ps, "lr": SOLVER["lr"] * lr,
                            "weight_decay": SOLVER["weight_decay"] * decay}
                           for (lr, decay), ps in groups.items()],
                          lr=SOLVER["lr"], momentum=SOLVER["momentum"])
    loss_fn = F.nll_loss if loss_kind == "nll" else F.cross_entropy
    forward = torch.compile(module) if compiled else module

    def step(x, y):
        opt.zero_grad()
        loss = loss_fn(forward(torch.as_tensor(x, device=device)), torch.as_tensor(y, device=device))
        loss.backward()
        opt.step()
        return loss
    return module, opt, step


def torch_engine(step) -> dict:
    return {"torch": lambda pairs: [step(x, y).item() for x, y in pairs]}


def torch_step_peak(module, opt, step, pairs) -> dict:
    """torch.profiler's peak of cumulative allocated bytes over one steady-state step (gradients set
    to None before it), and the bytes of parameters and momentum buffers."""
    from torch.profiler import ProfilerActivity, profile

    for x, y in pairs[:2]:
        step(x, y)
    opt.zero_grad(set_to_none=True)  # step()'s own zero_grad() then frees nothing in the window
    x, y = pairs[0]
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        loss = step(x, y)
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    total = peak = 0
    for e in events:
        total += e.nbytes()
        peak = max(peak, total)
    persistent = sum(p.numel() * p.element_size() for p in module.parameters())
    persistent += sum(s["momentum_buffer"].numel() * s["momentum_buffer"].element_size()
                      for s in opt.state.values() if s.get("momentum_buffer") is not None)
    return {"peak": peak, "persistent": persistent, "loss": loss.item()}


# ---- timing --------------------------------------------------------------------------------------
def measure(engines: dict, pairs: list, warmup: int, repeats: int) -> dict:
    """Images/s of each engine (median, slowest, fastest) over ``repeats`` runs of all of ``pairs`` (engines alternate;
    each timed run follows one untimed step of the same engine: see bench/seed_models.measure)."""
    images = sum(len(y) for _, y in pairs)
    for run in engines.values():
        run(pairs[:max(1, warmup)])
    times: dict[str, list] = {name: [] for name in engines}
    for _ in range(repeats):
        for name, run in engines.items():
            run(pairs[:1])
            start = time.perf_counter()
            run(pairs)
            times[name].append(time.perf_counter() - start)
    return {name: {"median": images / statistics.median(t), "min": images / max(t),
                   "max": images / min(t)} for name, t in times.items()}


def spread(r: dict) -> str:
    """Median images/s with the slowest and fastest run."""
    return f"{r['median']:,.1f} ({r['min']:,.0f}-{r['max']:,.0f})"


# ---- where graphrt's step spends its time ----------------------------------------------------------
def phase_of(launch) -> str:
    if launch.op in ("sgd_update", "step_counter"):
        return "update"
    if "/grad/" in launch.node or launch.node.startswith("grad_sum"):
        return "backward"
    return "forward"


def profile_step(trainer: graphrt.Trainer, pairs: list, steps: int) -> dict:
    """Each launch of the training step timed on its own over ``steps`` steps: its median and its
    minimum. On a machine shared with other jobs the minimum is the least disturbed estimate of what
    the launch costs (a preempted BLAS thread stalls the other one, so even CPU time is no steadier);
    shares are computed from the minima."""
    batch = len(pairs[0][1])
    trainer.step(*pairs[0])  # the program exists, the inputs are in its slot
    program = trainer.exe.program(batch)
    times = [[] for _ in program.launches]
    for _ in range(steps):
        for i, launch in enumerate(program.launches):
            start = time.perf_counter()
            launch.fn(launch.attrs, launch.inputs, launch.outputs, launch.workspace)
            times[i].append(time.perf_counter() - start)
    med = [statistics.median(t) for t in times]
    best = [min(t) for t in times]
    graph = trainer.exe.graph
    by_op: dict[str, list] = {}  # op -> [median s, min s, launches, flops, kernel]
    by_phase: dict[str, list] = {}  # phase -> [median s, min s]
    for launch, m, b in zip(program.launches, med, best):
        node = graph.node(launch.node)
        flops, _ = get_op(node.op).cost(node.attrs, [graph.specs[x] for x in node.inputs],
                                        [graph.specs[x] for x in node.outputs], batch)
        kernel = "reference" if "_reference_kernel" in getattr(launch.fn, "__qualname__", "") \
            else "cpu"
        entry = by_op.setdefault(launch.op, [0.0, 0.0, 0, 0, kernel])
        entry[0] += m
        entry[1] += b
        entry[2] += 1
        entry[3] += flops
        phase = by_phase.setdefault(phase_of(launch), [0.0, 0.0])
        phase[0] += m
        phase[1] += b
    top = sorted(zip(program.launches, med, best), key=lambda lt: -lt[2])
    return {"launches": len(program.launches), "steps": steps, "median": sum(med),
            "min": sum(best), "by_op": by_op, "by_phase": by_phase,
            "top": [(launch.node, launch.op, m, b) for launch, m, b in top]}


def print_profile(name: str, batch: int, prof: dict, img_s: float, top: int) -> list[str]:
    """The profile as text; shares are of the sum of the launches' minima."""
    total = prof["min"]
    lines = [f"{name}, batch {batch}: {prof['launches']} launches over {prof['steps']} steps; "
             f"sum of per-launch minima {total * 1e3:.1f} ms, of medians {prof['median'] * 1e3:.1f} "
             f"ms; Trainer.step median {batch / img_s * 1e3:.1f} ms",
             "  phases (minima): " + ", ".join(f"{ph} {b * 1e3:.1f} ms ({b / total:.0%})"
                                               for ph, (_, b) in sorted(prof["by_phase"].items(),
                                                                        key=lambda kv: -kv[1][1]))]
    lines.append(f"  {'op':24s} {'kernel':9s} {'launches':>8s} {'min ms':>9s} {'median ms':>9s} "
                 f"{'share':>6s} {'GFLOP/s':>8s}")
    for op, (m, b, n, flops, kernel) in sorted(prof["by_op"].items(),
                                               key=lambda kv: -kv[1][1])[:top]:
        rate = f"{flops / b / 1e9:8.1f}" if flops > 1e6 and b > 0 else f"{'-':>8s}"
        lines.append(f"  {op:24s} {kernel:9s} {n:8d} {b * 1e3:9.2f} {m * 1e3:9.2f} {b / total:6.1%} "
                     f"{rate}")
    lines.append("  costliest launches (min): " + "; ".join(
        f"{node} ({op}) {b * 1e3:.1f} ms" for node, op, _, b in prof["top"][:4]))
    return lines


def torch_ops(step, pairs: list, steps: int, top: int) -> list[str]:
    """PyTorch's side of the same step: torch.profiler's self CPU time per op (mean per step)."""
    from torch.profiler import ProfilerActivity, profile

    step(*pairs[0])
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(steps):
            step(*pairs[i % len(pairs)]).item()
    rows = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in rows)
    return [f"  torch, same step (torch.profiler, self CPU, mean of {steps} steps): "
            f"{total / steps / 1e3:.1f} ms; " + "; ".join(
                f"{e.key} {e.self_cpu_time_total / steps / 1e3:.1f} ms ({e.count // steps}x)"
                for e in rows[:top])]


# ---- peak RSS in a fresh process ------------------------------------------------------------------
def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def rss_child(framework: str, name: str, threads: int, steps: int) -> dict:
    build, batch, _ = MODELS[name]
    limits, _ = limit_threads(threads)
    with limits:
        if framework == "torch":
            import torch
            torch.set_num_threads(threads)
        graph = build()
        pairs = make_batches(graph, batch, 2, distinct=2)
        base = _status_kib("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak (VmHWM) to the current RSS
        if framework == "graphrt":
            trainer = graphrt_trainer(graph, batch, threads)
            for i in range(steps):
                trainer.step(*pairs[i % 2])
        else:
            _, _, step = torch_trainer(graph)
            for i in range(steps):
                step(*pairs[i % 2]).item()
        return {"delta": (_status_kib("VmHWM") - base) * 1024, "base": base * 1024}


def rss_delta(framework: str, name: str, threads: int, steps: int) -> dict | None:
    cmd = [sys.executable, __file__, "--rss-child", framework, name, "--threads", str(threads),
           "--rss-steps", str(steps)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        print(f"note: RSS child {framework} {name} failed: {out.stderr.strip()[-300:]}")
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def code_line() -> str:
    """The commit measured, and the files of graphrt/ that differ from it (the tree is shared)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, text=True,
                              capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--short", "--", "graphrt"], cwd=HERE.parent,
                               text=True, capture_output=True, check=True).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return "code: (not a git checkout)"
    changed = [line[3:] for line in dirty if line.strip()]
    return f"code: commit {head}" + (f", uncommitted changes in {', '.join(changed)}" if changed
                                     else "")


# ---- tables --------------------------------------------------------------------------------------
def mib(n) -> str:
    return "-" if n is None else f"{n / 2**20:.2f}"


def ratio(a, b) -> str:
    return "-" if a is None or not b else f"{a / b:.3g}x"


def table(columns: list[str], rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        out = ["| " + " | ".join(columns) + " |",
               "|" + "|".join("---" if i == 0 else "---:" for i in range(len(columns))) + "|"]
        out += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(out)
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    return "\n".join("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                               enumerate(zip(row, widths))) for row in [columns] + rows)


SPEED = ["model", "batch", "threads", "graphrt step img/s (min-max)", "graphrt fit img/s (min-max)",
         "torch img/s (min-max)", "step/torch", "fit/torch", "first loss graphrt / torch", "load"]
MEMORY = ["model", "batch", "threads", "arena MiB", "lower bound MiB", "arena/bound", "naive MiB",
          "graphrt params+state MiB", "torch step peak MiB", "torch params+momentum MiB",
          "arena/torch peak", "graphrt RSS delta MiB", "torch RSS delta MiB"]


def bench_model(name, threads, args, speed_rows, memory_rows, profiles, notes) -> None:
    """One model at ``threads`` threads: speed, memory and profile rows appended."""
    build, batch, _ = MODELS[name]
    graph = build()
    trainer = graphrt_trainer(graph, batch, threads)
    module, opt, tstep = torch_trainer(graph)
    probe = make_batches(graph, batch, 1)
    first_graphrt = trainer.step(*probe[0])
    first_torch = tstep(*probe[0]).item()
    dropout = any(n.op == "dropout" and n.attrs["rate"] > 0 for n in graph.nodes)
    check = (f"{first_graphrt:.4f} / {first_torch:.4f}" +
             (" (dropout masks differ)" if dropout else ""))
    if not dropout and not abs(first_graphrt - first_torch) <= 1e-3 * abs(first_torch):
        notes.append(f"{name}: first-step losses differ: {check}")
    start = time.perf_counter()
    trainer.step(*probe[0])
    per_step = max(time.perf_counter() - start, 1e-6)
    count = max(args.iterations, int(np.ceil(args.min_time / per_step)))
    pairs = make_batches(graph, batch, count)
    engines = {**graphrt_engines(trainer), **torch_engine(tstep)}
    result = measure(engines, pairs, args.warmup, args.repeats)
    load = f"{os.getloadavg()[0]:.2f}"
    g, f, t = result["graphrt step"], result["graphrt fit"], result["torch"]
    speed_rows.append([name, str(batch), str(threads), spread(g), spread(f), spread(t),
                       ratio(g["median"], t["median"]), ratio(f["median"], t["median"]), check,
                       load])
    print(f"{name} at {threads} thread(s) ({count} steps per timed run): "
          + ", ".join(f"{k} {spread(v)} img/s" for k, v in result.items())
          + f"; load average {load}", flush=True)

    plan = trainer.exe.plan
    state = sum(v.nbytes for v in trainer.exe.params.values())
    peak = torch_step_peak(module, opt, tstep, pairs)
    rss = ({fw: rss_delta(fw, name, threads, args.rss_steps) for fw in ("graphrt", "torch")}
           if not args.no_rss else {})
    memory_rows.append([name, str(batch), str(threads), mib(plan.arena_bytes),
                        mib(plan.lower_bound_bytes),
                        ratio(plan.arena_bytes, plan.lower_bound_bytes),
                        mib(plan.naive_bytes), mib(state), mib(peak["peak"]),
                        mib(peak["persistent"]), ratio(plan.arena_bytes, peak["peak"]),
                        mib((rss.get("graphrt") or {}).get("delta")),
                        mib((rss.get("torch") or {}).get("delta"))])

    if args.profile_steps:
        prof = profile_step(trainer, pairs, args.profile_steps)
        lines = print_profile(f"{name} at {threads} thread(s)", batch, prof, g["median"],
                              args.profile_top)
        lines += torch_ops(tstep, pairs, args.profile_steps, args.profile_top)
        print("\n".join(lines) + "\n", flush=True)
        profiles += lines
    losses = [trainer.step(*pairs[0]), tstep(*pairs[0]).item()]
    if not all(np.isfinite(losses)):
        notes.append(f"{name}: the loss is no longer finite after the run: {losses}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", metavar="NAME", help=f"default: {' '.join(MODELS)}")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                    help="thread counts, each for both engines (default: 1 2)")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs; the median is reported")
    ap.add_argument("--iterations", type=int, default=10, help="steps per timed run")
    ap.add_argument("--min-time", type=float, default=0.5,
                    help="raise --iterations so one timed run of graphrt step lasts this long (s)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per engine first")
    ap.add_argument("--profile-steps", type=int, default=7,
                    help="steps of the launch profile (0: no profile)")
    ap.add_argument("--profile-top", type=int, default=8, help="ops listed per model")
    ap.add_argument("--no-rss", action="store_true", help="skip the peak-RSS subprocesses")
    ap.add_argument("--rss-steps", type=int, default=3, help="steps in each peak-RSS subprocess")
    ap.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    ap.add_argument("--rss-child", nargs=2, metavar=("FRAMEWORK", "MODEL"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.rss_child:
        print(json.dumps(rss_child(*args.rss_child, args.threads[0], args.rss_steps)))
        return 0

    allocator = steady_allocator()  # the timing process only: the peak-RSS children keep glibc's defaults
    import torch

    names = chosen_models(args.models)
    speed_rows, memory_rows, profiles = [], [], []
    notes = []
    print("\n".join(machine_lines(args.threads) + [allocator, code_line()]), flush=True)
    print(f"SGD{SOLVER}; median of {args.repeats} timed runs of >= {args.iterations} steps "
          f"(>= {args.min_time} s), warm-up {args.warmup} steps per engine\n", flush=True)
    for threads in args.threads:
        limits, note = limit_threads(threads)
        torch.set_num_threads(threads)
        if note and note not in notes:
            notes.append(note)
        with limits:
            for name in names:
                bench_model(name, threads, args, speed_rows, memory_rows, profiles, notes)

    print("training images/s (higher is better):")
    print(table(SPEED, speed_rows, args.markdown))
    print("\ntraining-step memory:")
    print(table(MEMORY, memory_rows, args.markdown))
    print("\nwhere graphrt's training step spends its time (launch by launch):")
    print("\n".join(profiles))
    for n in notes:
        print(f"note: {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
