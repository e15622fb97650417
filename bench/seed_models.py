"""Images/s of the seed models through graphrt against PyTorch eager (and onnxruntime when graphrt
can export ONNX), measured in the same process with the same number of threads.

    python bench/seed_models.py                       # the six seed models of the benchmark
    python bench/seed_models.py --models caffe_lenet torch_lenet --repeats 9 --iterations 20
    python bench/seed_models.py --all --markdown      # every model in examples/seed_models.py
    python bench/seed_models.py --device cuda         # graphrt on the GPU (torch too if it can)

For each model: graphrt compiled at opt level 3 (``exe(x)`` per batch, and ``exe.stream(batches)``
when the executable has it), the same graph in PyTorch eager (``bench/torch_reference.to_torch``
under ``torch.no_grad()``) and, when ``graphrt.export_onnx`` exists and onnxruntime is installed,
onnxruntime on the exported file. Each engine first runs ``--warmup`` batches; then ``--repeats``
rounds in which every engine in turn runs one untimed batch and one timed run of ``--iterations``
batches (raised so that a run lasts at least ``--min-time``); the table gives the median images/s.
Threads: ``torch.set_num_threads(N)``, onnxruntime's intra-op threads N, and threadpoolctl limits
every BLAS/OpenMP pool of the process (numpy's OpenBLAS) to N, with N = ``--threads`` (default
``os.cpu_count()``).

``--profile`` then profiles graphrt's ``exe(x)`` (cProfile by tottime, and every launch timed on its
own, summed per kernel) for the models where graphrt is slower than PyTorch.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import platform
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
             "torch_inception_bn", "torch_lenet"]


# ---- environment ------------------------------------------------------------------------------
def limit_threads(n: int):
    """Limit every native thread pool to ``n``; returns (context, note)."""
    try:
        import threadpoolctl
    except ImportError:
        return contextlib.nullcontext(), ("threadpoolctl not installed: numpy's BLAS threads not "
                                          "limited (set OMP_NUM_THREADS/OPENBLAS_NUM_THREADS)")
    return threadpoolctl.threadpool_limits(n), None


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


def machine_lines(threads: int) -> list[str]:
    lines = [f"CPU: {cpu_model()}, {os.cpu_count()} logical CPUs; benchmark threads: {threads}",
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
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    lines.append(f"OPENBLAS_CORETYPE={coretype}; load average {load} at start")
    return lines


# ---- engines: each is a callable running one timed run (a list of batches) ----------------------
def graphrt_engines(graph, batch: int, device: str):
    exe = graphrt.compile(graph, device=device, batch_size=batch, opt_level=3)
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
    """Median images/s of each engine over ``repeats`` runs of all of ``xs``.

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
    return {name: images / statistics.median(t) for name, t in times.items()}


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


def fmt(v, ratio=False):
    if v is None:
        return "-"
    return f"{v:.3g}x" if ratio else f"{v:,.1f}"


GPU_COLUMNS = ["torch.compile img/s", "graphrt/compile"]  # --device cuda only


def row_for(name, batch, r):
    g, s, t, o = (r.get(k) for k in ("graphrt", "graphrt stream", "torch", "ort"))
    best = max(v for v in (g, s) if v is not None)
    row = [name, str(batch), fmt(g), fmt(s), fmt(t), fmt(best / t if t else None, True), fmt(o),
           fmt(best / o if o else None, True)]
    if "torch.compile" in r:
        c = r["torch.compile"]
        row += [fmt(c), fmt(best / c if c else None, True)]
    return row


def print_table(rows, markdown: bool):
    columns = COLUMNS + (GPU_COLUMNS if any(len(r) > len(COLUMNS) for r in rows) else [])
    rows = [r + ["-"] * (len(columns) - len(r)) for r in rows]
    if markdown:
        print("| " + " | ".join(columns) + " |")
        print("|" + "|".join("---" if i < 1 else "---:" for i in range(len(columns))) + "|")
        for row in rows:
            print("| " + " | ".join(row) + " |")
        return
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    for row in [columns] + rows:
        cells = zip(row, widths)
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(cells)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", metavar="NAME", help=f"default: {' '.join(BENCHMARK)}")
    ap.add_argument("--all", action="store_true", help="every model in examples/seed_models.py")
    ap.add_argument("--device", default="cpu", help="graphrt device: cpu (default), cuda, auto")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for every engine")
    ap.add_argument("--repeats", type=int, default=7, help="timed runs; the median is reported")
    ap.add_argument("--iterations", type=int, default=10, help="batches per timed run")
    ap.add_argument("--min-time", type=float, default=0.25,
                    help="raise --iterations so one timed run of graphrt lasts at least this (s)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed batches per engine first")
    ap.add_argument("--batch", type=int, help="override every model's benchmark batch")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--no-ort", action="store_true")
    ap.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    ap.add_argument("--profile", action="store_true",
                    help="after timing, profile graphrt where it is slower than torch")
    ap.add_argument("--profile-all", action="store_true", help="profile every model")
    ap.add_argument("--profile-top", type=int, default=15, help="functions in the cProfile listing")
    args = ap.parse_args(argv)

    names = None if args.all else (args.models or BENCHMARK)
    models = seed_models(names)
    limits, note = limit_threads(args.threads)
    try:
        import torch
        torch.set_num_threads(args.threads)
    except ImportError:
        torch = None
    rows, notes = [], [note] if note else []
    with limits, tempfile.TemporaryDirectory() as tmpdir:
        print("\n".join(machine_lines(args.threads)), flush=True)
        print(f"median of {args.repeats} timed runs of >= {args.iterations} batches "
              f"(>= {args.min_time} s), "
              f"warm-up {args.warmup} batches per engine, "
              f"graphrt device {args.device}, opt level 3\n", flush=True)
        for model in models:
            graph = model.build()
            batch = args.batch or model.batch
            spec = graph.specs[graph.inputs[0]]
            try:
                exe, engines = graphrt_engines(graph, batch, args.device)
            except graphrt.GraphrtError as err:
                raise SystemExit(f"{model.name}: graphrt.compile(device={args.device!r}) "
                                 f"failed: {err}")
            xs = batches_for(spec, batch, args.iterations, args.min_time, engines["graphrt"])
            for label, make, skip in (
                    ("torch", lambda: torch_engine(graph, args.device) if torch else
                     (None, "torch not installed"), args.no_torch),
                    ("torch.compile", lambda: torch_engine(graph, args.device, compiled=True)
                     if torch else (None, "torch not installed"),
                     args.no_torch or args.device != "cuda"),
                    ("ort", lambda: ort_engine(graph, args.threads, tmpdir), args.no_ort)):
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
            rows.append(row_for(model.name, batch, result))
            print(f"{model.name} ({len(xs)} batches per timed run): "
                  + ", ".join(f"{k} {v:,.1f} img/s" for k, v in result.items())
                  + f"; load average {os.getloadavg()[0]:.2f}; relative error vs graphrt: "
                  + ", ".join(f"{k} {v:.1e}" for k, v in errors.items()), flush=True)
            slower = "torch" in result and max(result["graphrt"], result.get("graphrt stream", 0)) \
                < result["torch"]
            if args.profile_all or (args.profile and slower):
                print(f"\n== profile of graphrt exe(x), {model.name}, batch {batch} ==", flush=True)
                profile(exe, xs[:max(args.iterations, 3)], args.profile_top)
                print(flush=True)
    print()
    print_table(rows, args.markdown)
    for n in notes:
        print(f"note: {n}")
    print("ratios use graphrt's better of exe(x) and exe.stream")
    return 0


if __name__ == "__main__":
    sys.exit(main())
