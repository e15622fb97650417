"""Images/s of the seed models through graphrt against PyTorch eager and onnxruntime, measured
interleaved in the same process at 1 and at 2 threads, with the spread over repeats.

    python bench/seed_models.py --quick               # a short run: the numbers mean little
    python bench/seed_models.py                       # the seed models and CIFAR-10 quick, 1 and 2 threads
    python bench/seed_models.py --write               # ... and the first section of bench/RESULTS.md
    python bench/seed_models.py --update-readme       # the README's speed table from bench/RESULTS.md
    python bench/seed_models.py --models caffe_lenet torch_lenet --threads 2 --repeats 9
    python bench/seed_models.py --all --markdown      # every model in examples/seed_models.py
    python bench/seed_models.py --device cuda         # graphrt on the GPU (torch too if it can)

For each thread count N (``--threads``, default 1 and 2) and each model: graphrt compiled at opt
level 3 with ``threads=N`` (``exe(x)`` per batch, and ``exe.stream(batches)``), the same graph in
PyTorch eager (``bench/torch_reference.to_torch`` under ``torch.no_grad()``, with
``torch.set_num_threads(N)``) and onnxruntime on the file ``graphrt.export_onnx`` writes
(``SessionOptions.intra_op_num_threads = N``). threadpoolctl also limits every BLAS/OpenMP pool of
the process to N (graphrt holds numpy's BLAS to one thread inside its steps anyway and splits the
work over its own N threads). Each engine first runs ``--warmup`` batches; then ``--repeats`` rounds
in which every engine in turn runs one untimed batch and one timed run of ``--iterations`` batches
(raised so that a run lasts at least ``--min-time``). Reported: the median images/s with the min-max
over the repeats, and the ratios graphrt/peer as the median (min-max) of the ratios of the same
round, so load from elsewhere on the machine hits both sides of a ratio alike.

glibc malloc's mmap threshold is pinned for the process first (:func:`steady_allocator`): otherwise
PyTorch's speed depends on which models ran before it in the same process.

The load average is printed at the start and after every model. ``--write`` replaces the first
section of ``bench/RESULTS.md`` with the tables, but refuses (exit status 2) when the 1-minute
load average at the start was above 0.5 per core, unless ``--force`` (only the start: by the end the
benchmark's own 2-thread runs hold the load near one per core).

``--profile`` then profiles graphrt's ``exe(x)`` (cProfile by tottime, and every launch timed on its
own, summed per kernel) for the models where graphrt is slower than PyTorch.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import graphrt

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # torch_reference


def _examples_seed_models():
    """examples/seed_models.py, loaded by path: this file has the same name."""
    import importlib.util

    key = "graphrt_examples_seed_models"
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, HERE.parent / "examples" / "seed_models.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    spec.loader.exec_module(module)
    return module


seed_models = _examples_seed_models().seed_models

BENCHMARK = ["keras_simple_ann", "keras_simple_cnn", "caffe_lenet", "mxnet_alexnet",
             "torch_inception_bn", "torch_lenet", "caffe_cifar10_quick"]
BATCHES = {"caffe_cifar10_quick": 100}  # the batch for CIFAR-10 quick (the seed's example)
RESULTS = HERE / "RESULTS.md"
QUICK = {"repeats": 3, "iterations": 1, "min_time": 0.02, "warmup": 1}
MMAP_THRESHOLD = 64 << 20  # bytes: above the largest activation any benchmarked model allocates


# ---- environment ------------------------------------------------------------------------------
def limit_threads(n: int):
    """Limit every native thread pool to ``n``; returns (context, note)."""
    try:
        import threadpoolctl
    except ImportError:
        return contextlib.nullcontext(), ("threadpoolctl not installed: numpy's BLAS threads not "
                                          "limited (set OMP_NUM_THREADS/OPENBLAS_NUM_THREADS)")
    return threadpoolctl.threadpool_limits(n), None


def steady_allocator() -> str:
    """Pin glibc malloc's mmap and trim thresholds for the whole process (``mallopt``), and say so.

    PyTorch eager allocates every activation afresh. glibc serves a block above the mmap threshold
    with a new mapping whose pages fault in on first touch, and raises that threshold (up to 32 MiB)
    only after such a block is freed: so torch's speed depended on which models ran before in the
    process (CIFAR-10 quick at 1 thread: 2,076 images/s run alone, 3,013 after the Keras CNN, on
    the same quiet machine). With the thresholds pinned above every activation the benchmarks use,
    torch runs at its faster speed whatever the order; graphrt allocates nothing in a step and is
    not affected. Elsewhere than glibc nothing is changed."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return "allocator: not glibc, malloc thresholds left as they are"
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    if not (mallopt(m_mmap_threshold, MMAP_THRESHOLD) and mallopt(m_trim_threshold, 4 * MMAP_THRESHOLD)):
        return "allocator: mallopt refused, malloc thresholds left as they are"
    return (f"allocator: glibc mmap threshold pinned at {MMAP_THRESHOLD >> 20} MiB, trim threshold at "
            f"{4 * MMAP_THRESHOLD >> 20} MiB (mallopt; torch's speed no longer depends on model order)")


def blas_info() -> list[str]:
    try:
        import threadpoolctl
    except ImportError:
        return ["(threadpoolctl not installed)"]
    rows = []
    for p in threadpoolctl.threadpool_info():
        rows.append(f"{p.get('internal_api')} {p.get('version')} ({p.get('user_api')}, "
                    f"{p.get('threading_layer', '-')}, arch {p.get('architecture', '-')}, "
                    f"{p.get('num_threads')} threads) from {Path(p.get('filepath', '?')).name}")
    return rows


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown"


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def load_line() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} ({one / cores():.2f} per core)"


def machine_lines(threads) -> list[str]:
    lines = [f"CPU: {cpu_model()}, {os.cpu_count()} logical CPUs ({cores()} usable); benchmark "
             f"threads: {' and '.join(map(str, threads))}",
             f"Python {platform.python_version()}, numpy {np.__version__}"]
    try:
        import torch
        lines.append(f"torch {torch.__version__} (intra-op threads {torch.get_num_threads()}, "
                     f"oneDNN {'on' if torch.backends.mkldnn.is_available() else 'off'})")
    except ImportError:
        lines.append("torch not installed")
    try:
        import onnxruntime
        lines.append(f"onnxruntime {onnxruntime.__version__}")
    except ImportError:
        lines.append("onnxruntime not installed")
    lines += [f"BLAS: {row}" for row in blas_info()]
    coretype = os.environ.get("OPENBLAS_CORETYPE", "(unset)")
    lines.append(f"OPENBLAS_CORETYPE={coretype}; {load_line()} at start")
    return lines


# ---- engines: each is a callable running one timed run (a list of batches) ----------------------
def graphrt_engines(graph, batch: int, device: str, threads: int, algorithms: str):
    exe = graphrt.compile(graph, device=device, batch_size=batch, opt_level=3, threads=threads,
                          algorithms=algorithms)
    engines = {"graphrt": lambda xs: [exe(x) for x in xs]}
    if hasattr(exe, "stream"):
        engines["graphrt stream"] = lambda xs: list(exe.stream(xs))
    return exe, engines


def torch_engine(graph, device: str, compiled: bool = False):
    import torch
    from torch_reference import to_torch

    module = to_torch(graph)
    dev = torch.device(device if device != "auto" else "cpu")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            return None, "torch has no CUDA here"
        module = module.to(dev)
    if compiled:  # --device cuda: torch.compile (its compilation happens in the warm-up batches)
        module = torch.compile(module)

    def run(xs):
        with torch.no_grad():
            outs = [module(torch.from_numpy(x).to(dev)) for x in xs]
            if dev.type == "cuda":
                torch.cuda.synchronize()
            return [o.cpu().numpy() for o in outs]
    return run, None


def ort_engine(graph, threads: int, tmpdir: str):
    try:
        import onnxruntime as ort
    except ImportError:
        return None, "onnxruntime not installed"
    export = getattr(graphrt, "export_onnx", None)
    if export is None:
        return None, "graphrt has no export_onnx yet: onnxruntime skipped"
    path = os.path.join(tmpdir, f"{graph.name}.onnx")
    try:
        export(graph, path)
    except graphrt.GraphrtError as err:
        return None, f"export_onnx failed: {err}"
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return (lambda xs: [session.run(None, {name: x}) for x in xs]), None


def _first(out):
    if isinstance(out, dict):
        out = next(iter(out.values()))
    if isinstance(out, (list, tuple)):
        out = out[0]
    return np.asarray(out)


def agreement(engines: dict, x) -> dict:
    """Relative error (DESIGN.md's) of each engine's output against graphrt's exe(x) on ``x``."""
    from graphrt.testing import relative_error

    ref = _first(engines["graphrt"]([x])[0])
    return {name: relative_error(_first(run([x])[0]), ref) for name, run in engines.items()
            if name != "graphrt"}


def measure(engines: dict, xs: list, warmup: int, repeats: int) -> dict:
    """Images/s of each engine in each of ``repeats`` runs of all of ``xs`` ({engine: [rate per
    round]}, rounds in the same order for every engine).

    Repeats alternate between engines, so a burst of load from elsewhere on the machine hits all of
    them alike; each timed run follows one untimed batch of the same engine, because thread pools
    (OpenBLAS's, PyTorch's OpenMP, onnxruntime's) spin for a while after their last task and would
    otherwise time the next engine against the previous one's spinning threads.
    """
    images = sum(len(x) for x in xs)
    for run in engines.values():
        run(xs[:max(1, warmup)])
    times = {name: [] for name in engines}
    for _ in range(repeats):
        for name, run in engines.items():
            run(xs[:1])
            start = time.perf_counter()
            run(xs)
            times[name].append(time.perf_counter() - start)
    return {name: [images / v for v in t] for name, t in times.items()}


def batches_for(spec, batch: int, iterations: int, min_time: float, probe) -> list:
    """``iterations`` batches (at least enough for ``min_time`` seconds of ``probe``), made of up
    to 8 distinct random arrays used in turn."""
    rng = np.random.default_rng(0)
    distinct = [rng.standard_normal(spec.concrete(batch)).astype(spec.dtype)
                for _ in range(min(iterations, 8))]
    probe(distinct[:1])  # first call: builds the program, touches the arena
    start = time.perf_counter()
    probe(distinct[:1])
    per_batch = max(time.perf_counter() - start, 1e-7)
    count = max(iterations, int(np.ceil(min_time / per_batch)))
    return [distinct[i % len(distinct)] for i in range(count)]


# ---- where the time goes ------------------------------------------------------------------------
def profile(exe, xs: list, top: int) -> None:
    """cProfile of ``exe(x)`` over ``xs`` (top functions by tottime), then each launch of the
    program timed on its own, summed per kernel."""
    import cProfile
    import pstats

    for x in xs[:2]:
        exe(x)
    prof = cProfile.Profile()
    prof.enable()
    for x in xs:
        exe(x)
    prof.disable()
    stats = pstats.Stats(prof)
    stats.sort_stats("tottime").print_stats(top)

    program = exe.program(len(xs[0]))
    per_kernel: dict = {}
    for _ in range(len(xs)):
        for launch in program.launches:
            start = time.perf_counter()
            launch.fn(launch.attrs, launch.inputs, launch.outputs, launch.workspace)
            key = (launch.op, getattr(launch.fn, "__name__", "?"))
            per_kernel[key] = per_kernel.get(key, 0.0) + time.perf_counter() - start
    total = sum(per_kernel.values())
    print(f"per-launch timing, {len(program.launches)} launches per step, "
          f"{total / len(xs) * 1e3:.2f} ms per step:")
    for (op, fn), t in sorted(per_kernel.items(), key=lambda kv: -kv[1]):
        print(f"  {op:20s} {fn:28s} {t / len(xs) * 1e3:9.3f} ms/step  {t / total:6.1%}")


# ---- the table ----------------------------------------------------------------------------------
COLUMNS = ["model", "batch", "graphrt img/s", "graphrt stream img/s", "torch img/s",
           "graphrt/torch", "ort img/s", "graphrt/ort"]
GPU_COLUMNS = ["torch.compile img/s", "graphrt/compile"]  # --device cuda only


def spread(values, ratio: bool = False) -> str:
    """``median (min-max)`` of ``values``; '-' when there are none."""
    if not values:
        return "-"
    med, lo, hi = statistics.median(values), min(values), max(values)
    if ratio:
        return f"{med:.2f}x ({lo:.2f}-{hi:.2f})"
    digits = 0 if med >= 100 else 1
    return f"{med:,.{digits}f} ({lo:,.{digits}f}-{hi:,.{digits}f})"


def best_graphrt(r: dict) -> list:
    """graphrt's better of exe(x) and exe.stream in each round."""
    rounds = [r["graphrt"]] + ([r["graphrt stream"]] if "graphrt stream" in r else [])
    return [max(v) for v in zip(*rounds)]


def paired(r: dict, peer: str) -> list:
    """graphrt / ``peer`` in each round (the two measured back to back)."""
    if peer not in r:
        return []
    return [g / p for g, p in zip(best_graphrt(r), r[peer])]


def row_for(name, batch, r):
    row = [name, str(batch), spread(r.get("graphrt")), spread(r.get("graphrt stream")),
           spread(r.get("torch")), spread(paired(r, "torch"), True), spread(r.get("ort")),
           spread(paired(r, "ort"), True)]
    if "torch.compile" in r:
        row += [spread(r["torch.compile"]), spread(paired(r, "torch.compile"), True)]
    return row


def table_lines(rows, markdown: bool) -> list[str]:
    columns = COLUMNS + (GPU_COLUMNS if any(len(r) > len(COLUMNS) for r in rows) else [])
    rows = [r + ["-"] * (len(columns) - len(r)) for r in rows]
    if markdown:
        lines = ["| " + " | ".join(columns) + " |",
                 "|" + "|".join("---" if i < 1 else "---:" for i in range(len(columns))) + "|"]
        return lines + ["| " + " | ".join(row) + " |" for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    return ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
            for row in [columns] + rows]


def results_section(argv, machine, tables, notes, loads, args) -> str:
    """The first section of bench/RESULTS.md, from this run."""
    lines = ["# Seed models: graphrt vs PyTorch eager vs onnxruntime (cpu)", "",
             "Written by `bench/seed_models.py --write` (do not edit by hand):", "", "```",
             "python bench/seed_models.py " + " ".join(argv), "```", "",
             "Engines run interleaved in one process: every round times each engine in turn, after "
             "one untimed batch of its own. Each cell is the **median over "
             f"{args.repeats} rounds, with the min-max over the rounds** in brackets; a ratio is "
             "graphrt's better of `exe(x)` and `exe.stream` over the peer's images/s **in the same "
             "round** (median and min-max of those per-round ratios).", "",
             "## Machine and load", ""]
    lines += [f"- {m}" for m in machine]
    lines += [f"- {load}" for load in loads] + [""]
    for threads, rows in tables:
        lines += [f"## {threads} thread{'s' if threads > 1 else ''} per engine", ""]
        lines += table_lines(rows, True) + [""]
    lines += [f"- note: {n}" for n in notes]
    return "\n".join(lines).rstrip() + "\n"


def write_results(section: str) -> None:
    """Replace bench/RESULTS.md's first section (up to the next top-level heading) with ``section``."""
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else ""
    lines = text.splitlines(keepends=True)
    rest = ""
    fence = False
    for i, line in enumerate(lines):
        fence ^= line.startswith("```")
        if i > 0 and not fence and line.startswith("# "):
            rest = "".join(lines[i:])
            break
    RESULTS.write_text(section + ("\n" + rest if rest else ""), encoding="utf-8")


README = HERE.parent / "README.md"
README_BLOCK = ("<!-- speed-table: python bench/seed_models.py --update-readme -->",
                "<!-- /speed-table -->")
NAMES = {"keras_simple_ann": "Keras Simple ANN", "keras_simple_cnn": "Keras Simple CNN",
         "caffe_lenet": "Caffe LeNet", "caffe_cifar10_quick": "Caffe CIFAR-10 quick",
         "mxnet_alexnet": "MXNet AlexNet", "torch_lenet": "Torch LeNet",
         "torch_inception_bn": "Torch Inception-BN"}


def readme_table(results: str) -> str:
    """The README's speed table, from bench/RESULTS.md's first section (this script's ``--write``):
    the median per-round ratios graphrt/PyTorch and graphrt/onnxruntime at every thread count."""
    section = results.split("\n# ", 1)[0]
    per_threads = {}  # threads -> {model: (batch, torch ratio, ort ratio)}
    for threads, body in re.findall(r"^## (\d+) threads? per engine\n(.*?)(?=^## |\Z)", section,
                                    re.M | re.S):
        rows = [line.split(" | ") for line in body.splitlines() if line.startswith("| ")]
        head = [c.strip("| ") for c in rows[0]]
        at = {c: head.index(c) for c in ("model", "batch", "graphrt/torch", "graphrt/ort")}
        per_threads[int(threads)] = {
            r[at["model"]].strip("| "): (r[at["batch"]], r[at["graphrt/torch"]].split(" ")[0],
                                         r[at["graphrt/ort"]].split(" ")[0].strip(" |"))
            for r in rows[1:]}
    counts = sorted(per_threads)
    models = list(per_threads[counts[0]])
    head = (["model", "batch"] + [f"graphrt / PyTorch eager, {t} thread{'s' if t > 1 else ''}"
                                  for t in counts]
            + [f"graphrt / onnxruntime, {t} thread{'s' if t > 1 else ''}" for t in counts])
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for m in models:
        cells = [NAMES.get(m, m), per_threads[counts[0]][m][0]]
        cells += [per_threads[t][m][1] for t in counts] + [per_threads[t][m][2] for t in counts]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def readme_block(readme: str) -> str:
    """What the README holds between its speed-table markers."""
    start, end = README_BLOCK
    return readme.split(start + "\n", 1)[1].split(end, 1)[0]


def update_readme() -> None:
    """Rewrite the README's speed table from bench/RESULTS.md (no benchmark is run)."""
    readme = README.read_text(encoding="utf-8")
    old = readme_block(readme)
    README.write_text(readme.replace(README_BLOCK[0] + "\n" + old, README_BLOCK[0] + "\n"
                                     + readme_table(RESULTS.read_text(encoding="utf-8"))),
                      encoding="utf-8")


def busy(limit_per_core: float = 0.5) -> bool:
    return os.getloadavg()[0] > limit_per_core * cores()


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", metavar="NAME", help=f"default: {' '.join(BENCHMARK)}")
    ap.add_argument("--all", action="store_true", help="every model in examples/seed_models.py")
    ap.add_argument("--device", default="cpu", help="graphrt device: cpu (default), cuda, auto")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                    help="thread counts to run every engine at (default: 1 2)")
    ap.add_argument("--algorithms", default="measure",
                    help="graphrt's conv algorithm choice (compile(algorithms=...); default measure)")
    ap.add_argument("--repeats", type=int, default=7, help="timed rounds; medians are reported")
    ap.add_argument("--iterations", type=int, default=10, help="batches per timed run")
    ap.add_argument("--min-time", type=float, default=0.25,
                    help="raise --iterations so one timed run of graphrt lasts at least this (s)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed batches per engine first")
    ap.add_argument("--quick", action="store_true",
                    help="a short run (3 rounds of 1 batch, 1 warm-up): checks the script, not speed")
    ap.add_argument("--batch", type=int, help="override every model's benchmark batch")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--no-ort", action="store_true")
    ap.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    ap.add_argument("--write", action="store_true",
                    help="replace the first section of bench/RESULTS.md with this run's tables")
    ap.add_argument("--force", action="store_true",
                    help="--write even when the load average is above 0.5 per core")
    ap.add_argument("--profile", action="store_true",
                    help="after timing, profile graphrt where it is slower than torch")
    ap.add_argument("--profile-all", action="store_true", help="profile every model")
    ap.add_argument("--profile-top", type=int, default=15, help="functions in the cProfile listing")
    ap.add_argument("--update-readme", action="store_true",
                    help="only rewrite the README's speed table from bench/RESULTS.md (no run)")
    args = ap.parse_args(argv)
    if args.update_readme:
        update_readme()
        return 0
    allocator = steady_allocator()
    if args.quick:
        for k, v in QUICK.items():
            setattr(args, k, v)
    if args.write and args.quick and not args.force:
        raise SystemExit("--write with --quick: a quick run is not a result (add --force)")

    loads = [f"{load_line()} at the start"]
    busy_start = busy()
    if busy_start:
        print(f"warning: the machine is busy ({load_line()}): numbers are noisy"
              + ("; bench/RESULTS.md will not be written (--force)" if args.write and not args.force
                 else ""), flush=True)
    names = None if args.all else (args.models or BENCHMARK)
    models = seed_models(names)
    try:
        import torch
    except ImportError:
        torch = None
    machine = machine_lines(args.threads) + [allocator]
    print("\n".join(machine), flush=True)
    print(f"median (min-max) of {args.repeats} rounds of >= {args.iterations} batches "
          f"(>= {args.min_time} s), warm-up {args.warmup} batches per engine, graphrt device "
          f"{args.device}, opt level 3, algorithms {args.algorithms}\n", flush=True)
    tables, notes = [], []
    with tempfile.TemporaryDirectory() as tmpdir:
        for threads in args.threads:
            limits, note = limit_threads(threads)
            if note and note not in notes:
                notes.append(note)
            if torch is not None:
                torch.set_num_threads(threads)
            with limits:
                rows = [run_model(model, threads, args, torch, tmpdir, notes) for model in models]
            tables.append((threads, rows))
            print(f"\n{threads} thread{'s' if threads > 1 else ''} per engine:")
            print("\n".join(table_lines(rows, args.markdown)), flush=True)
    loads.append(f"{load_line()} at the end")
    print()
    for n in notes:
        print(f"note: {n}")
    print("cells: median (min-max) over the rounds; ratios: graphrt's better of exe(x) and "
          "exe.stream over the peer, per round")
    print("; ".join(loads))
    if args.write:
        if busy_start and not args.force:
            print(f"not writing {RESULTS}: the load average at the start was above 0.5 per core "
                  f"({cores()} cores); rerun on a quiet machine or add --force", file=sys.stderr)
            return 2
        write_results(results_section(argv, machine, tables, notes, loads, args))
        print(f"wrote the first section of {RESULTS}")
        update_readme()  # the README's table shows what RESULTS.md holds, whatever was run
        print(f"rewrote the speed table of {README}")
    return 0


def run_model(model, threads: int, args, torch, tmpdir: str, notes: list) -> list:
    """Time one model at ``threads`` threads; returns its table row."""
    graph = model.build()
    batch = args.batch or BATCHES.get(model.name, model.batch)
    spec = graph.specs[graph.inputs[0]]
    try:
        exe, engines = graphrt_engines(graph, batch, args.device, threads, args.algorithms)
    except graphrt.GraphrtError as err:
        raise SystemExit(f"{model.name}: graphrt.compile(device={args.device!r}) failed: {err}")
    xs = batches_for(spec, batch, args.iterations, args.min_time, engines["graphrt"])
    for label, make, skip in (
            ("torch", lambda: torch_engine(graph, args.device) if torch else
             (None, "torch not installed"), args.no_torch),
            ("torch.compile", lambda: torch_engine(graph, args.device, compiled=True)
             if torch else (None, "torch not installed"), args.no_torch or args.device != "cuda"),
            ("ort", lambda: ort_engine(graph, threads, tmpdir), args.no_ort)):
        if skip:
            continue
        run, why = make()
        if run is None:
            if why not in notes:
                notes.append(why)
        else:
            engines[label] = run
    errors = agreement(engines, xs[0])
    bad = {k: v for k, v in errors.items() if not v < 1e-3}
    if bad:
        notes.append(f"{model.name}: outputs differ from graphrt's: {bad}")
    result = measure(engines, xs, args.warmup, args.repeats)
    print(f"{model.name}, batch {batch}, {threads} thread(s), {len(xs)} batches per timed run: "
          + ", ".join(f"{k} {statistics.median(v):,.1f} img/s" for k, v in result.items())
          + f"; {load_line()}; relative error vs graphrt: "
          + ", ".join(f"{k} {v:.1e}" for k, v in errors.items()), flush=True)
    slower = "torch" in result and statistics.median(paired(result, "torch")) < 1
    if args.profile_all or (args.profile and slower):
        print(f"\n== profile of graphrt exe(x), {model.name}, batch {batch}, {threads} thread(s) ==",
              flush=True)
        profile(exe, xs[:max(args.iterations, 3)], args.profile_top)
        print(flush=True)
    return row_for(model.name, batch, result)


if __name__ == "__main__":
    sys.exit(main())
