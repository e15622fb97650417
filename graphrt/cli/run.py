"""``graphrt run``: one batch through the model; every output described, classifiers as top-k with
probabilities, scalars with their value; ``--output`` writes every output."""
from __future__ import annotations

import numpy as np

from ..ir.errors import GraphrtError
from .common import device_of, emit, load_model, out_path, random_batch, read_inputs

SHOWN_ITEMS = 10  # batch items printed per output (--json and --output have them all)


def cmd_run(args) -> int:
    import graphrt

    out = out_path(args.output, (".npz", ".npy"), "the outputs") if args.output else None
    if args.data_layers:
        graph, batch = _from_data_layer(args)
    else:
        graph = load_model(args)
        batch = read_inputs(args.input) if args.input else random_batch(graph, args.batch)
    exe = graphrt.compile(graph, device=device_of(args), batch_size=args.batch, opt_level=args.opt_level)
    y = exe(batch)
    outputs = y if isinstance(y, dict) else {graph.outputs[0]: y}
    if out is not None:
        write_outputs(outputs, out)
    report = {name: describe(graph, name, np.asarray(v), args.top_k) for name, v in outputs.items()}
    emit(args, report, "\n".join(format_output(n, r) for n, r in report.items()))
    return 0


def _from_data_layer(args):
    """The net fed by its own data layer (``--data-layers``) and that layer's first batch."""
    from ..data.caffe import load_fed, net_sources

    stage = tuple(args.caffe_stage or ())
    sources = net_sources(args.model, args.phase, stage, batch_size=args.batch)
    if len(sources) != 1:
        raise GraphrtError(f"--data-layers needs one data layer in phase {args.phase}, the net has "
                           f"{len(sources)}", file=str(args.model))
    graph = load_fed(args.model, sources[0], args.phase, stage, weights=args.weights)
    return graph, next(iter(sources[0]))


def write_outputs(outputs: dict, path) -> None:
    """Every output into an ``.npz`` by name, or the only one into an ``.npy``."""
    if path.suffix.lower() == ".npz":
        np.savez(path, **outputs)
        return
    if len(outputs) > 1:
        raise GraphrtError(f"the model has {len(outputs)} outputs ({', '.join(outputs)}): write them "
                           "to an .npz", file=str(path))
    np.save(path, next(iter(outputs.values())), allow_pickle=False)


def class_probabilities(graph, name: str, value: np.ndarray):
    """``(probabilities (N, classes), where they come from)`` for a classifier's output, or
    ``(None, None)``: a softmax or log_softmax output, or rows that are already distributions."""
    if value.ndim < 2 or not np.issubdtype(value.dtype, np.floating) or len(value) == 0:
        return None, None
    rows = value.reshape(len(value), -1).astype(np.float64)
    if rows.shape[1] < 2 or rows.shape[1] != value.shape[1]:  # (N, C) or (N, C, 1, 1) only
        return None, None
    producer = graph.producer(name)
    op = producer.op if producer is not None else None
    if op == "softmax":
        return rows, "softmax"
    if op == "log_softmax":
        return np.exp(rows), "exp(log_softmax)"
    if (rows >= 0).all() and np.allclose(rows.sum(axis=1), 1.0, atol=1e-3):
        return rows, "rows sum to 1"
    return None, None


def describe(graph, name: str, value: np.ndarray, k: int) -> dict:
    """An output for the report: shape and dtype; the value of a scalar; the top ``k`` classes with
    their probabilities per item of a classifier; else its range and per-item argmax."""
    report = {"shape": list(value.shape), "dtype": str(value.dtype)}
    if value.ndim == 0:
        report["value"] = value.item()
        return report
    probs, source = class_probabilities(graph, name, value)
    if probs is not None:
        top = np.argsort(-probs, axis=1, kind="stable")[:, :max(1, k)]
        report.update(probabilities=source, argmax=top[:, 0].tolist(),
                      top=[[[int(c), float(p[c])] for c in row] for p, row in zip(probs, top)])
        return report
    if value.size and np.issubdtype(value.dtype, np.number):
        report.update(min=float(value.min()), mean=float(value.mean(dtype=np.float64)),
                      max=float(value.max()))
        if value.ndim > 1:
            report["argmax"] = value.reshape(len(value), -1).argmax(1).tolist()
    return report


def format_output(name: str, r: dict) -> str:
    """The report of one output as text (the first :data:`SHOWN_ITEMS` items)."""
    head = f"{name}: shape {tuple(r['shape'])} {r['dtype']}"
    if "value" in r:
        return f"{name}: {r['value']:.6g} ({r['dtype']} scalar)"
    if "top" in r:
        lines = [f"{head}, class probabilities ({r['probabilities']}), top {len(r['top'][0])} per item:"]
        for i, row in enumerate(r["top"][:SHOWN_ITEMS]):
            lines.append(f"  item {i}: " + ", ".join(f"class {c} {p:.4f}" for c, p in row))
    elif "min" in r:
        lines = [f"{head}, min {r['min']:.6g}, mean {r['mean']:.6g}, max {r['max']:.6g}"]
    else:
        lines = [head]
    hidden = r["shape"][0] - SHOWN_ITEMS if "top" in r else 0
    if hidden > 0:
        lines.append(f"  ... {hidden} more items (all of them with --json or --output)")
    return "\n".join(lines)
