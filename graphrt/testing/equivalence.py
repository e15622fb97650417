"""``assert_equivalent``: a model computes the same through the reference executor and through
every compiled optimization level and device; on a difference, the first departing node.

Relative error is DESIGN.md's: ``max|a - b| / max|b|`` over the whole tensor, in float64.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from ..devices import registry
from ..ir import Graph
from ..ops.reference import random_feeds, run_reference
from ..scheduler.executable import as_graph, compile

__all__ = ["assert_equivalent", "relative_error", "first_divergence", "available_devices",
           "as_float64"]


def as_float64(graph: Graph) -> Graph:
    """``graph`` rebuilt with float64 inputs, parameters and tensors (integer inputs and parameters
    kept), names and ``lr_mult``/``decay_mult`` unchanged: comparing two devices in double
    precision, where rounding no longer flips a relu's or a max-pool's decision."""
    out = Graph(f"{graph.name}_float64")
    names = {}
    for t in graph.inputs:
        spec = graph.specs[t]
        names[t] = out.add_input(t, spec.shape, "float64" if spec.dtype.startswith("float")
                                 else spec.dtype)
    for t, value in graph.params.items():
        info = graph.param_info[t]
        names[t] = out.add_param(t, value.astype(np.float64) if value.dtype.kind == "f" else value,
                                 lr_mult=info.lr_mult, decay_mult=info.decay_mult,
                                 trainable=info.trainable)
    for node in graph.nodes:
        made = out.add_node(node.op, [names[t] for t in node.inputs], name=node.name,
                            attrs=dict(node.attrs))
        names.update(zip(node.outputs, made if isinstance(made, tuple) else (made,)))
    out.set_outputs([names[t] for t in graph.outputs])
    return out.verify()


def relative_error(actual, expected) -> float:
    """``max|a - b| / max|b|`` in float64 (0 when both are all zeros)."""
    a, b = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    if a.shape != b.shape:
        return float("inf")
    scale = np.abs(b).max() if b.size else 0.0
    diff = np.abs(a - b).max() if b.size else 0.0
    if scale == 0:
        return float(diff)
    return float(diff / scale)


# ---- strategies ---------------------------------------------------------------------------------
# --------------------------------------------------------------------------------
def _as_dict(graph: Graph, result) -> dict:
    return result if isinstance(result, dict) else {graph.outputs[0]: result}


def _compare(expected: dict, actual: dict, rtol: float) -> tuple[str, float, tuple] | None:
    for name, ref in expected.items():
        got = actual[name]
        err = relative_error(got, ref)
        if not err < rtol:
            diff = np.abs(np.asarray(got, np.float64) - ref) if np.shape(got) == np.shape(ref) else None
            where = tuple(int(i) for i in np.unravel_index(np.argmax(diff), diff.shape)) if \
                diff is not None and diff.size else ()
            return name, err, where
    return None


def first_divergence(exe, source: Graph, feeds: dict, rtol: float) -> str | None:
    """Run ``exe``'s program launch by launch and name the first node whose output departs from
    the reference executor's tensor of the same name."""
    reference = run_reference(source, feeds, return_all=True)
    batch = next(iter(feeds.values())).shape[0] if feeds else 1
    program = exe.program(batch)
    for name, slot in program.inputs:
        exe.device.to_device(np.asarray(feeds[name], slot.dtype), slot)
    for launch in program.launches:
        launch.fn(launch.attrs, launch.inputs, launch.outputs, launch.workspace)
        node = exe.graph.node(launch.node)
        for t, out in zip(node.outputs, launch.outputs):
            if t in reference and not relative_error(_host(out), reference[t]) < rtol:
                absorbed = f" (absorbed {', '.join(node.absorbed)})" if node.absorbed else ""
                return f"{node.name} [{node.op}]{absorbed}: output {t!r} relative error " \
                       f"{relative_error(_host(out), reference[t]):.3g}"
    return None


def assert_equivalent(a, b=None, x=None, *, rtol: float = 1e-4, opt_levels: Sequence[int] = (0, 1, 2, 3),
                      devices: Sequence[str] | None = None, batch: int = 2) -> None:
    """Assert two models agree, or one model agrees with itself compiled at every level and device.

    ``a``/``b`` are Graphs or models with ``to_graph()``; ``x`` the inputs (random normal at ``batch``
    when omitted). Raises AssertionError with the first differing output, its relative error and the
    index of the largest difference, and — for a compiled executable — the first node of the
    optimized graph whose output departs from the reference.
    """
    ga = as_graph(a)
    feeds = x if x is not None else random_feeds(ga, batch)
    if not isinstance(feeds, dict):
        feeds = {ga.inputs[0]: feeds}
    expected = _as_dict(ga, run_reference(ga, feeds))
    if b is not None:
        gb = as_graph(b)
        bad = _compare(expected, _as_dict(gb, run_reference(gb, feeds)), rtol)
        if bad:
            raise AssertionError(f"output {bad[0]!r} differs: relative error {bad[1]:.3g} (largest "
                                 f"difference at index {bad[2]}) > {rtol}")
        return
    n = next(iter(feeds.values())).shape[0] if ga.inputs and ga.specs[ga.inputs[0]].batched else 1
    for device in devices or available_devices():
        for level in opt_levels:
            exe = compile(ga, device=device, batch_size=n, opt_level=level)
            bad = _compare(expected, _as_dict(ga, exe(feeds)), rtol)
            if bad:
                culprit = first_divergence(exe, ga, feeds, rtol)
                raise AssertionError(
                    f"{ga.name}: device {device}, opt_level {level}: output {bad[0]!r} relative error "
                    f"{bad[1]:.3g} > {rtol} (largest difference at index {bad[2]})"
                    + (f"; first departing node: {culprit}" if culprit else ""))


def _host(a) -> np.ndarray:
    """A host copy of a device array (CuPy's ``get()``), or the numpy array itself."""
    return a if isinstance(a, np.ndarray) else np.asarray(a.get() if hasattr(a, "get") else a)


def available_devices() -> list[str]:
    """``["cpu"]`` plus ``"cuda"`` when a GPU is usable. The environment variable
    ``GRAPHRT_DEVICE=cuda`` demands the cuda device (a missing GPU then fails loudly instead of
    being skipped); ``GRAPHRT_DEVICE=cpu`` leaves it out."""
    wanted = os.environ.get("GRAPHRT_DEVICE", "").strip().lower()
    if wanted == "cuda":
        return ["cpu", "cuda"]
    if wanted == "cpu":
        return ["cpu"]
    return ["cpu"] + (["cuda"] if registry.available("cuda") else [])
