"""``graphrt bench``: images/s of graphrt and, measured in the same run on the same batch, of
PyTorch (through ``bench/torch_reference.py`` of a source checkout) and onnxruntime (through
graphrt's ONNX export), with how closely their outputs agree."""
from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import numpy as np

from .common import device_of, emit, load_model, progress, random_batch

REPO = Path(__file__).resolve().parents[2]
TORCH_REFERENCE = REPO / "bench" / "torch_reference.py"


def _rate(run_one, iterations: int, warmup: int, batch: int, desc: str) -> tuple[dict, object]:
    out = None
    for _ in range(warmup):
        out = run_one()
    start = time.perf_counter()
    for _ in progress(range(iterations), desc):
        out = run_one()
    seconds = time.perf_counter() - start
    return {"images_per_s": batch * iterations / seconds, "seconds": seconds,
            "iterations": iterations}, out


def bench_graphrt(graph, feeds, args) -> tuple[dict, np.ndarray]:
    import graphrt

    exe = graphrt.compile(graph, device=device_of(args), batch_size=args.batch, opt_level=args.opt_level)
    first = exe(feeds)
    for _ in range(args.warmup):
        exe(feeds)
    start = time.perf_counter()
    for _ in progress(exe.stream([feeds] * args.iterations), "graphrt", total=args.iterations):
        pass
    seconds = time.perf_counter() - start
    result = {"images_per_s": args.batch * args.iterations / seconds, "seconds": seconds,
              "iterations": args.iterations, "device": exe.device.kind}
    return result, first


def bench_torch(graph, feeds, args):
    if not TORCH_REFERENCE.exists():
        return {"skipped": f"the torch converter {TORCH_REFERENCE} is not here "
                           "(a source checkout has it)"}, None
    try:
        import torch
    except ImportError:
        return {"skipped": "torch is not installed"}, None
    if str(TORCH_REFERENCE.parent) not in sys.path:  # it imports its sibling torch_reference_more
        sys.path.append(str(TORCH_REFERENCE.parent))
    spec = importlib.util.spec_from_file_location("graphrt_bench_torch_reference", TORCH_REFERENCE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    try:
        model = module.to_torch(graph)
    except Exception as err:  # an op the converter lacks: no peer number, said why
        return {"skipped": f"the torch converter failed: {type(err).__name__}: {err}"}, None
    tensors = {k: torch.from_numpy(v) for k, v in feeds.items()}
    with torch.no_grad():
        result, out = _rate(lambda: model(tensors), args.iterations, max(args.warmup, 1), args.batch, "torch")
    result["version"] = torch.__version__
    return result, out


def bench_onnxruntime(graph, feeds, args):
    import tempfile

    import graphrt

    export = getattr(graphrt, "export_onnx", None)
    if export is None:
        return {"skipped": "graphrt.export_onnx is not available yet"}, None
    try:
        import onnxruntime as ort
    except ImportError:
        return {"skipped": "onnxruntime is not installed"}, None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        try:
            export(graph, path)
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except ImportError as err:
            return {"skipped": f"exporting to ONNX needs {err.name or 'onnx'}: it is not installed"}, None
        except Exception as err:  # an op the exporter or onnxruntime lacks
            return {"skipped": f"the ONNX export failed: {type(err).__name__}: {err}"}, None
    names = [i.name for i in session.get_inputs()]
    run_feeds = dict(zip(names, feeds.values())) if set(names) != set(feeds) else feeds
    result, out = _rate(lambda: session.run(None, run_feeds)[0], args.iterations, max(args.warmup, 1),
                        args.batch, "onnxruntime")
    result["version"] = ort.__version__
    return result, out


PEERS = {"torch": bench_torch, "onnxruntime": bench_onnxruntime}


def _first(out):
    if isinstance(out, dict):
        out = next(iter(out.values()))
    return np.asarray(out.detach().numpy() if hasattr(out, "detach") else out, np.float64)


def cmd_bench(args) -> int:
    graph = load_model(args)
    feeds = random_batch(graph, args.batch)
    results, first = {}, None
    results["graphrt"], first = bench_graphrt(graph, feeds, args)
    for peer in args.vs or []:
        results[peer], out = PEERS[peer](graph, feeds, args)
        if out is not None:
            ref = _first(out)
            err = np.abs(_first(first) - ref).max() / max(np.abs(ref).max(), 1e-30)
            results[peer]["graphrt_rel_err"] = float(err)
    report = {"model": graph.name, "batch": args.batch, "results": results}
    lines = [f"{graph.name}, batch {args.batch}:"]
    base = results["graphrt"]["images_per_s"]
    for name, r in results.items():
        if "skipped" in r:
            lines.append(f"  {name:12s} skipped: {r['skipped']}")
        else:
            extra = "" if name == "graphrt" else (f"  (graphrt is {base / r['images_per_s']:.2f}x; outputs "
                                                  f"agree to {r['graphrt_rel_err']:.1e})")
            lines.append(f"  {name:12s} {r['images_per_s']:10.1f} images/s{extra}")
    emit(args, report, "\n".join(lines))
    return 0
