"""The ``graphrt`` command line.

    graphrt run MODEL [--weights W] [--device cpu|cuda|auto] [--batch N] [--input FILE.npy]
    graphrt profile MODEL [--iterations 10] [--naive] [--json OUT.json]

MODEL is a model file (``.prototxt``, ``-symbol.json``, ``.keras``, Keras ``.json``) or a Python file
of your own that defines ``build()`` returning a model or Graph (it is run as Python: only name files
you wrote or trust). Errors are one line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np

from .errors import GraphrtError, InputError


def load_model(args) -> "Graph":  # noqa: F821
    from . import load
    from .scheduler.executable import as_graph

    path = Path(args.model)
    shape = tuple(args.input_shape) if args.input_shape else None
    if path.suffix == ".py":
        if not path.exists():
            raise GraphrtError("no such file", file=str(path))
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
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
    return load(path, format=args.format, weights=args.weights, input_shape=shape,
                phase=args.phase, stage=args.stage or (), classes=args.classes)


def random_batch(graph, batch: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    feeds = {}
    for name in graph.inputs:
        spec = graph.specs[name]
        if np.dtype(spec.dtype).kind == "f":
            feeds[name] = rng.standard_normal(spec.concrete(batch)).astype(spec.dtype)
        else:
            feeds[name] = rng.integers(0, 2, spec.concrete(batch)).astype(spec.dtype)
    return feeds


def cmd_run(args) -> int:
    import graphrt

    graph = load_model(args)
    exe = graphrt.compile(graph, device=args.device, batch_size=args.batch, opt_level=args.opt_level)
    if args.input:
        x = np.load(args.input, allow_pickle=False)
    else:
        x = random_batch(graph, args.batch)
    y = exe(x)
    outputs = y if isinstance(y, dict) else {graph.outputs[0]: y}
    if args.output:
        np.save(args.output, next(iter(outputs.values())), allow_pickle=False)
    report = {name: {"shape": list(v.shape), "dtype": str(v.dtype),
                     "argmax": np.asarray(v).reshape(len(v), -1).argmax(1).tolist() if v.ndim > 1 else None}
              for name, v in outputs.items()}
    print(json.dumps(report) if args.json else "\n".join(
        f"{n}: shape {tuple(r['shape'])} {r['dtype']}" + (f", argmax {r['argmax']}" if r["argmax"] else "")
        for n, r in report.items()))
    return 0


def profile_rows(graph, iterations: int, batch: int, device: str, naive: bool) -> dict:
    """Run ``iterations`` batches through graphrt's plan (and the naive per-op mode) and return the
    ledgers' summaries keyed by mode."""
    import graphrt
    from .scheduler.naive import NaiveExecutable

    batches = [random_batch(graph, batch, seed=i) for i in range(iterations)]
    exe = graphrt.compile(graph, device=device, batch_size=batch, opt_level=3)
    exe.ledger.reset()
    for _ in exe.stream(batches):
        pass
    results = {"graphrt": exe.ledger.summary()}
    if naive:
        slow = NaiveExecutable(graph, device)
        for x in batches:
            slow(x)
        results["naive"] = slow.ledger.summary()
    return results


def format_profile(results: dict) -> str:
    lines = []
    for mode, rows in results.items():
        lines.append(f"== {mode} ==")
        lines.append(f"{'copy':6s} {'invocations':>12s} {'total MB':>10s} {'avg GB/s':>10s} {'duration ms':>12s}")
        for kind, r in rows.items():
            gbs = r["bytes"] / r["seconds"] / 1e9 if r["seconds"] > 0 else 0.0
            lines.append(f"{kind:6s} {r['invocations']:12d} {r['bytes'] / 1e6:10.3f} {gbs:10.2f} "
                         f"{r['seconds'] * 1e3:12.3f}")
    return "\n".join(lines)


def cmd_profile(args) -> int:
    graph = load_model(args)
    results = profile_rows(graph, args.iterations, args.batch, args.device, naive=args.naive)
    print(format_profile(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="model file (.prototxt, -symbol.json, .keras, .json) or a .py with build()")
    p.add_argument("--weights", help=".caffemodel or .params weights")
    p.add_argument("--format", choices=["caffe", "mxnet", "keras"], help="override the detected format")
    p.add_argument("--input-shape", type=int, nargs="+", metavar="D", help="input shape without the batch")
    p.add_argument("--phase", default="TEST", help="Caffe phase (TEST or TRAIN)")
    p.add_argument("--stage", action="append", help="Caffe stage (repeatable)")
    p.add_argument("--classes", type=int, help="outputs of a Caffe InnerProduct without num_output")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    p.add_argument("--batch", type=int, default=1, help="batch size")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="graphrt", description="Run existing model definitions fast.")
    sub = top.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a model on one batch and print its outputs")
    _model_args(run)
    run.add_argument("--input", help=".npy file with the input batch (default: random normal)")
    run.add_argument("--output", help="save the (first) output to this .npy file")
    run.add_argument("--opt-level", type=int, default=3, choices=[0, 1, 2, 3])
    run.add_argument("--json", action="store_true", help="print a JSON report")
    run.set_defaults(fn=cmd_run)
    prof = sub.add_parser("profile", help="count host<->device copies (the seed's NVIDIA profile table)")
    _model_args(prof)
    prof.add_argument("--iterations", type=int, default=10)
    prof.add_argument("--naive", action="store_true", help="also run the per-op copy mode")
    prof.add_argument("--json", metavar="OUT", help="also write the table as JSON to OUT")
    prof.set_defaults(fn=cmd_profile)
    return top


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.fn(args)
    except GraphrtError as err:
        print(f"graphrt: error: {type(err).__name__}: {err}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as err:  # e.g. an unreadable or malformed --input .npy
        print(f"graphrt: error: {InputError(str(err))}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
