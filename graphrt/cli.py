"""The ``graphrt`` command line.

    graphrt run MODEL [--weights W] [--device cpu|cuda|auto] [--batch N] [--input FILE.npy] [--json]
    graphrt bench MODEL [--vs torch|onnxruntime] [--batch N] [--iterations N] [--json]
    graphrt profile MODEL [--iterations 10] [--naive] [--html OUT.html] [--json [OUT.json]]
    graphrt viz MODEL [--stage loaded|optimized|placed|PASS] -o OUT.html|.svg|.png|.dot
    graphrt plan MODEL -o plan.png [--batch N] [--json]
    graphrt train MODEL --data FILE.npz|digits [--epochs N] [--lr LR] [--save OUT.npz]

MODEL is a model file (``.prototxt``, ``-symbol.json``, ``.keras``, Keras ``.json``, ``.npz``) or a
Python file of your own that defines ``build()`` returning a model or Graph (it is run as Python:
only name files you wrote or trust). Errors are one line on stderr and exit status 2. ``--json``
prints one JSON object on stdout for scripts; progress bars (for runs longer than a second) go to
stderr, and only on a terminal.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from .ir.errors import GraphrtError, InputError

REPO = Path(__file__).resolve().parents[1]
TORCH_REFERENCE = REPO / "bench" / "torch_reference.py"


# ---- shared helpers ---------------------------------------------------------------------------
def load_model(args):
    from . import load
    from .scheduler.executable import as_graph

    path = Path(args.model)
    shape = tuple(args.input_shape) if args.input_shape else None
    if path.suffix == ".py":
        return _load_python_model(path, shape, as_graph)
    return load(path, format=args.format, weights=args.weights, input_shape=shape,
                phase=args.phase, stage=args.caffe_stage or (), classes=args.classes)


def _load_python_model(path: Path, shape, as_graph):
    if not path.exists():
        raise GraphrtError("no such file", file=str(path))
    name = f"graphrt_model_{path.stem}"
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses and pickling look the module up by name
        spec.loader.exec_module(module)
        if not hasattr(module, "build"):
            raise GraphrtError("a Python model file must define build()", file=str(path))
        model = module.build()
        if shape is None:
            shape = getattr(module, "INPUT_SHAPE", None)
        if shape is not None and not hasattr(model, "params"):
            try:
                return model.to_graph(input_shape=shape)
            except TypeError:
                pass
        return as_graph(model)
    except GraphrtError:
        raise
    except Exception as err:  # the user's file failed: say where, in one line
        frames = traceback.extract_tb(err.__traceback__)
        lines = [f.lineno for f in frames if Path(f.filename) == path.resolve()]
        raise GraphrtError(f"running the model file failed: {type(err).__name__}: {err}",
                           file=str(path), line=lines[-1] if lines else None) from None


def random_batch(graph, batch: int, seed: int = 0) -> dict:
    from .ops.reference import random_feeds

    return random_feeds(graph, batch, seed)


def progress(iterable, desc: str, total: int | None = None):
    """A tqdm bar around ``iterable`` (shown only after a second, and only on a terminal)."""
    try:
        from tqdm import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, desc=desc, total=total, unit="batch", delay=1.0, leave=False,
                file=sys.stderr, disable=None)


def _out_path(path: str, allowed: tuple, what: str) -> Path:
    out = Path(path)
    if out.suffix.lower() not in allowed:
        raise GraphrtError(f"cannot write {what} to {out.name!r}: the extension must be one of "
                           f"{', '.join(allowed)}", file=str(out))
    if not out.parent.exists():
        raise GraphrtError("the output folder does not exist", file=str(out.parent))
    return out


def _emit(args, report: dict, text: str) -> None:
    print(json.dumps(report) if getattr(args, "json", False) is True else text)


# ---- run ------------------------------------------------------------------------------------
def read_array(path: str) -> np.ndarray:
    """A ``.npy`` input batch (never unpickled)."""
    if not Path(path).exists():
        raise InputError("no such input file", file=path)
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        detail = "it is not a .npy array" if "pickle" in str(err) else str(err)
        raise InputError(f"cannot read the input batch: {detail}", file=path) from None


def cmd_run(args) -> int:
    import graphrt

    graph = load_model(args)
    exe = graphrt.compile(graph, device=args.device, batch_size=args.batch, opt_level=args.opt_level)
    x = read_array(args.input) if args.input else random_batch(graph, args.batch)
    y = exe(x)
    outputs = y if isinstance(y, dict) else {graph.outputs[0]: y}
    if args.output:
        np.save(args.output, next(iter(outputs.values())), allow_pickle=False)
    report = {name: {"shape": list(v.shape), "dtype": str(v.dtype),
                     "argmax": np.asarray(v).reshape(len(v), -1).argmax(1).tolist() if v.ndim > 1 else None}
              for name, v in outputs.items()}
    _emit(args, report, "\n".join(
        f"{n}: shape {tuple(r['shape'])} {r['dtype']}" + (f", argmax {r['argmax']}" if r["argmax"] else "")
        for n, r in report.items()))
    return 0


# ---- bench ----------------------------------------------------------------------------------
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

    exe = graphrt.compile(graph, device=args.device, batch_size=args.batch, opt_level=args.opt_level)
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
    _emit(args, report, "\n".join(lines))
    return 0


# ---- profile --------------------------------------------------------------------------------
def profile_rows(graph, iterations: int, batch: int, device: str, naive: bool) -> dict:
    """Run ``iterations`` batches through graphrt's plan (and the naive per-op mode) and return the
    ledgers' summaries keyed by mode."""
    import graphrt
    from .scheduler.naive import NaiveExecutable

    batches = [random_batch(graph, batch, seed=i) for i in range(iterations)]
    exe = graphrt.compile(graph, device=device, batch_size=batch, opt_level=3)
    exe.ledger.reset()
    for _ in progress(exe.stream(batches), "graphrt", total=iterations):
        pass
    results = {"graphrt": exe.ledger.summary()}
    if naive:
        slow = NaiveExecutable(graph, device)
        for x in progress(batches, "naive"):
            slow(x)
        results["naive"] = slow.ledger.summary()
    return results


def format_profile(results: dict) -> str:
    lines = []
    for mode, rows in results.items():
        lines.append(f"== {mode} ==")
        lines.append(f"{'copy':6s} {'invocations':>12s} {'total MB':>10s} {'avg GB/s':>10s} "
                     f"{'duration ms':>12s}")
        for kind, r in rows.items():
            gbs = r["bytes"] / r["seconds"] / 1e9 if r["seconds"] > 0 else 0.0
            lines.append(f"{kind:6s} {r['invocations']:12d} {r['bytes'] / 1e6:10.3f} {gbs:10.2f} "
                         f"{r['seconds'] * 1e3:12.3f}")
    return "\n".join(lines)


def cmd_profile(args) -> int:
    from . import viz

    html = _out_path(args.html, (".html",), "the profile page") if args.html else None
    graph = load_model(args)
    results = profile_rows(graph, args.iterations, args.batch, args.device, naive=args.naive)
    if html:
        view = viz.graph_view(graph, "optimized", device=args.device, batch=args.batch,
                              profile=args.iterations, progress=lambda r: progress(r, "per-node times"))
        viz.write(view, html)
    if args.json == "-":
        print(json.dumps(results))
        return 0
    print(format_profile(results) + (f"\nper-node times: {html}" if html else ""))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


# ---- viz and plan ---------------------------------------------------------------------------
def cmd_viz(args) -> int:
    from . import viz
    from .passes import PASSES

    out = _out_path(args.output, viz.FORMATS, "the graph")
    if args.graph_stage not in viz.FIXED and args.graph_stage not in PASSES:
        raise GraphrtError(f"unknown stage {args.graph_stage!r}; stages: {', '.join(viz.FIXED)} or a pass "
                           f"name ({', '.join(p for p in PASSES if p != 'place')})")
    graph = load_model(args)
    view = viz.graph_view(graph, args.graph_stage, device=args.device, batch=args.batch,
                          opt_level=args.opt_level, profile=args.profile,
                          progress=lambda r: progress(r, "per-node times"))
    viz.write(view, out, engine=args.layout)
    report = {"output": str(out), "stage": args.graph_stage,
              "nodes": sum(not n.is_tensor for n in view.nodes),
              "layers": sorted({layer for n in view.nodes if not n.is_tensor for layer in n.layers()})}
    _emit(args, report, f"wrote {out} ({report['nodes']} nodes, stage {args.graph_stage})")
    return 0


def cmd_plan(args) -> int:
    import graphrt
    from .viz import plot_plan

    out = _out_path(args.output, (".png", ".svg", ".pdf"), "the plan picture")
    graph = load_model(args)
    exe = graphrt.compile(graph, device=args.device, batch_size=args.batch, opt_level=args.opt_level)
    plan = exe.plan
    mib = {k: getattr(plan, k) / 2**20 for k in ("arena_bytes", "lower_bound_bytes", "naive_bytes")}
    plot_plan(plan, out, title=f"{graph.name} memory plan, batch {args.batch}: arena "
                               f"{mib['arena_bytes']:.2f} MiB, lower bound {mib['lower_bound_bytes']:.2f} "
                               f"MiB, naive {mib['naive_bytes']:.2f} MiB")
    report = {"output": str(out), "batch": args.batch, "arena_bytes": plan.arena_bytes,
              "lower_bound_bytes": plan.lower_bound_bytes, "naive_bytes": plan.naive_bytes,
              "blocks": len(plan.blocks), "steps": len(plan.steps)}
    _emit(args, report, f"arena {mib['arena_bytes']:.2f} MiB = "
          f"{plan.arena_bytes / max(plan.lower_bound_bytes, 1):.3f} x lower bound "
          f"{mib['lower_bound_bytes']:.2f} MiB (naive {mib['naive_bytes']:.2f} MiB); wrote {out}")
    return 0


# ---- train ----------------------------------------------------------------------------------
def training_data(spec: str) -> tuple[np.ndarray, np.ndarray]:
    """``digits`` (scikit-learn's, as 1x28x28 images) or an ``.npz`` with inputs ``x`` (or ``data``)
    and labels ``y`` (or ``label``/``labels``)."""
    if spec == "digits":
        from .training.datasets import digits_28x28

        return digits_28x28()
    path = Path(spec)
    if not path.exists():
        raise GraphrtError("no such data file", file=spec)
    if path.suffix != ".npz":
        raise GraphrtError("training data must be an .npz with arrays x and y, or 'digits'", file=spec)
    with np.load(path, allow_pickle=False) as archive:
        xs = [k for k in ("x", "data", "inputs") if k in archive]
        ys = [k for k in ("y", "label", "labels", "targets") if k in archive]
        if not xs or not ys:
            raise GraphrtError(f"the .npz must hold x and y arrays; it has {sorted(archive.files)}",
                               file=spec)
        x, y = archive[xs[0]], archive[ys[0]]
    if len(x) != len(y):
        raise InputError(f"{len(x)} inputs but {len(y)} labels", file=spec)
    return x, y


def cmd_train(args) -> int:
    import graphrt

    if not hasattr(graphrt, "Trainer"):
        raise GraphrtError("training is not available yet")
    graph = load_model(args)
    x, y = training_data(args.data)
    spec = graph.specs[graph.inputs[0]]
    if x.ndim != len(spec.shape) or any(d is not None and d != v for d, v in zip(spec.shape, x.shape)):
        raise InputError(f"the training inputs have shape {x.shape} but input {graph.inputs[0]!r} "
                         f"expects {spec}", file=args.data)
    batches = [(x[i:i + args.batch], y[i:i + args.batch]) for i in range(0, len(x), args.batch)]
    optimizer = graphrt.optim.SGD(lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    trainer = graphrt.Trainer(graph, loss=args.loss, optimizer=optimizer, device=args.device,
                              batch_size=args.batch)
    start = time.perf_counter()
    history = trainer.fit(batches, epochs=args.epochs)
    seconds = time.perf_counter() - start
    saved = str(trainer.save(args.save)) if args.save else None
    report = {"steps": len(batches) * args.epochs, "seconds": seconds,
              "images_per_s": len(x) * args.epochs / seconds,
              "loss": [[int(s), float(v)] for s, v in history], "saved": saved}
    last = f", final loss {history[-1][1]:.4f}" if history else ""
    _emit(args, report, f"{report['steps']} steps in {seconds:.1f} s ({report['images_per_s']:.0f} images/s)"
          f"{last}" + (f"; saved {saved}" if saved else ""))
    return 0


# ---- argument parsing -----------------------------------------------------------------------
def _model_args(p: argparse.ArgumentParser, batch: int = 1, stage_flag: bool = True) -> None:
    """The options every subcommand shares; ``viz`` has its own ``--stage`` (the graph stage), so
    there the Caffe stage is only ``--caffe-stage``."""
    p.add_argument("model", help="model file (.prototxt, -symbol.json, .keras, .json, .npz) "
                                 "or a .py with build()")
    p.add_argument("--weights", help=".caffemodel or .params weights")
    from .frontends.loading import FORMATS

    p.add_argument("--format", choices=FORMATS, help="override the detected format")
    p.add_argument("--input-shape", type=int, nargs="+", metavar="D", help="input shape without the batch")
    p.add_argument("--phase", default="TEST", help="Caffe phase (TEST or TRAIN)")
    flags = ("--stage", "--caffe-stage") if stage_flag else ("--caffe-stage",)
    p.add_argument(*flags, dest="caffe_stage", action="append", help="Caffe stage (repeatable)")
    p.add_argument("--classes", type=int, help="outputs of a Caffe InnerProduct without num_output")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    p.add_argument("--batch", type=int, default=batch, help=f"batch size (default {batch})")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="graphrt", description="Run existing model definitions fast.",
        epilog="'graphrt COMMAND --help' for a command's options. Examples: graphrt viz "
               "model.prototxt -o model.html; graphrt plan model.prototxt -o plan.png; "
               "graphrt bench model.prototxt --vs torch")
    top.add_argument("--version", action="version", version="graphrt 0.1.0")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="run a model on one batch and print its outputs")
    _model_args(run)
    run.add_argument("--input", help=".npy file with the input batch (default: random normal)")
    run.add_argument("--output", help="save the (first) output to this .npy file")
    run.add_argument("--opt-level", type=int, default=3, choices=[0, 1, 2, 3])
    run.add_argument("--json", action="store_true", help="print a JSON report")
    run.set_defaults(fn=cmd_run)

    bench = sub.add_parser("bench", help="images/s of graphrt, and of a peer measured in the same run")
    _model_args(bench, batch=16)
    bench.add_argument("--vs", action="append", choices=sorted(PEERS),
                       help="also time this peer (repeatable)")
    bench.add_argument("--iterations", type=_positive, default=20)
    bench.add_argument("--warmup", type=int, default=2)
    bench.add_argument("--opt-level", type=int, default=3, choices=[0, 1, 2, 3])
    bench.add_argument("--json", action="store_true", help="print a JSON report")
    bench.set_defaults(fn=cmd_bench)

    prof = sub.add_parser("profile", help="count host<->device copies (the seed's NVIDIA profile table)")
    _model_args(prof)
    prof.add_argument("--iterations", type=_positive, default=10)
    prof.add_argument("--naive", action="store_true", help="also run the per-op copy mode")
    prof.add_argument("--html", metavar="OUT.html", help="also write the graph page with per-node times")
    prof.add_argument("--json", metavar="OUT", nargs="?", const="-",
                      help="print the table as JSON (or write it to OUT)")
    prof.set_defaults(fn=cmd_profile)

    viz = sub.add_parser("viz", help="draw a graph stage: self-contained HTML, SVG, PNG or DOT")
    _model_args(viz, stage_flag=False)
    viz.add_argument("--stage", dest="graph_stage", default="optimized", metavar="STAGE",
                     help="loaded, optimized (default), placed, or a pass name (the graph after it)")
    viz.add_argument("-o", "--output", required=True, help="OUT.html, .svg, .png or .dot")
    viz.add_argument("--layout", default="auto", choices=["auto", "dot", "builtin"],
                     help="Graphviz dot (auto: when installed) or the built-in layered layout")
    viz.add_argument("--profile", type=int, default=0, metavar="N",
                     help="time every node over N runs and show the times on the page")
    viz.add_argument("--opt-level", type=int, default=3, choices=[0, 1, 2, 3])
    viz.add_argument("--json", action="store_true", help="print a JSON report")
    viz.set_defaults(fn=cmd_viz)

    plan = sub.add_parser("plan", help="draw the memory plan: tensors in (step, arena offset) space")
    _model_args(plan)
    plan.add_argument("-o", "--output", required=True, help="OUT.png (or .svg, .pdf)")
    plan.add_argument("--opt-level", type=int, default=3, choices=[0, 1, 2, 3])
    plan.add_argument("--json", action="store_true", help="print a JSON report")
    plan.set_defaults(fn=cmd_plan)

    train = sub.add_parser("train", help="train a model with SGD on an .npz of inputs and labels")
    _model_args(train, batch=64)
    train.add_argument("--data", required=True, help=".npz with arrays x and y, or 'digits'")
    train.add_argument("--epochs", type=_positive, default=1)
    train.add_argument("--lr", type=float, default=0.01)
    train.add_argument("--momentum", type=float, default=0.9)
    train.add_argument("--weight-decay", type=float, default=0.0)
    train.add_argument("--loss", default="auto", help="auto, softmax_cross_entropy or nll_loss")
    train.add_argument("--save", metavar="OUT.npz", help="save the trained model")
    train.add_argument("--json", action="store_true", help="print a JSON report")
    train.set_defaults(fn=cmd_train)
    return top


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.fn(args)
    except GraphrtError as err:
        print(f"graphrt: error: {type(err).__name__}: {err}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as err:  # e.g. an unwritable --output
        print(f"graphrt: error: {type(err).__name__}: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("graphrt: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
