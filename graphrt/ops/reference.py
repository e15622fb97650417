"""The reference executor: run any :class:`Graph` with numpy, one op at a time in topological order.

It is deliberately simple — fresh output arrays for every node, no planning — because it is what every
optimized path is compared against. ``run_reference(graph, x)`` returns a numpy array for a
single-output graph and a dict name -> array for several.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from ..ir.errors import GraphrtError, InputError
from ..ir import Graph


def check_feeds(graph: Graph, x) -> tuple[dict[str, np.ndarray], int]:
    """Match ``x`` (an array, a sequence of arrays or a dict) to the graph's inputs.

    Checks every shape and dtype against the input's spec (floats of another width convert,
    integers convert when exact: see :func:`_convert`) and that all inputs share one batch size.
    Returns the feeds and the batch size.
    """
    names = graph.inputs
    if isinstance(x, Mapping):
        unknown = sorted(set(x) - set(names))
        missing = [n for n in names if n not in x]
        if unknown or missing:
            raise InputError(f"inputs given {sorted(x)} but the graph takes {names}")
        items = [(n, x[n]) for n in names]
    elif isinstance(x, (list, tuple)) and len(names) > 1:
        if len(x) != len(names):
            raise InputError(f"the graph takes {len(names)} inputs {names}, got {len(x)}")
        items = list(zip(names, x))
    else:
        if len(names) != 1:
            raise InputError(f"the graph takes {len(names)} inputs {names}: pass a dict or a tuple")
        items = [(names[0], x)]
    feeds, batch = {}, None
    for name, value in items:
        spec = graph.specs[name]
        # device arrays with numpy dtypes (CuPy's: the cuda executable adopts the others) stay put
        if not hasattr(value, "dtype"):  # Python numbers and lists take the input's dtype
            try:
                value = np.asarray(value, dtype=spec.dtype)
            except (TypeError, ValueError) as err:
                raise InputError(f"input {name!r} expects {spec.dtype} values, got "
                                 f"{type(value).__name__}: {err}", node=name) from None
        elif not (hasattr(value, "__cuda_array_interface__") and hasattr(value.dtype, "kind")):
            value = np.asarray(value)
        want = "(" + ", ".join("N" if d is None else str(d) for d in spec.shape) + ")"
        if value.ndim != len(spec.shape) or any(d is not None and d != v
                                                 for d, v in zip(spec.shape, value.shape)):
            raise InputError(f"input {name!r} expects shape {want} {spec.dtype}, got {value.shape}",
                             node=name)
        feeds[name] = _convert(name, value, spec.dtype)
        if spec.batched:
            if batch is not None and value.shape[0] != batch:
                raise InputError(f"input {name!r} has batch {value.shape[0]}, others {batch}", node=name)
            batch = value.shape[0]
    return feeds, 1 if batch is None else batch


def _convert(name: str, value, dtype: str):
    """``value`` as ``dtype`` under graphrt's one input policy: floats of another width or byte
    order convert (float64 into float32 rounds, as the model computes in float32); integer or
    boolean data converts when no value changes (uint8 images or class labels into float32, int32
    labels into int64). Integers a float cannot hold exactly, and floats into an integer input
    (truncation), are an InputError naming the input."""
    want = np.dtype(dtype)
    if value.dtype == want:
        return value
    exact = (value.dtype.kind == want.kind == "f") or np.can_cast(value.dtype, want, "safe")
    if not exact and value.dtype.kind in "iub" and want.kind in "iuf":
        lo, hi = ((-2 ** (np.finfo(want).nmant + 1), 2 ** (np.finfo(want).nmant + 1)) if want.kind == "f"
                  else (np.iinfo(want).min, np.iinfo(want).max))
        exact = value.size == 0 or (lo <= int(value.min()) and int(value.max()) <= hi)
    if not exact:
        raise InputError(f"input {name!r} expects dtype {want}, got {value.dtype}, which does not "
                         f"convert exactly: convert it yourself, e.g. x.astype(np.{want})", node=name)
    return value.astype(want)


def random_feeds(graph: Graph, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A random batch for every graph input (standard normal floats; 0/1 integers), seeded."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for name in graph.inputs:
        spec = graph.specs[name]
        if np.dtype(spec.dtype).kind == "f":
            feeds[name] = rng.standard_normal(spec.concrete(batch)).astype(spec.dtype)
        else:
            feeds[name] = rng.integers(0, 2, spec.concrete(batch)).astype(spec.dtype)
    return feeds


def run_reference(graph: Graph, x, *, return_all: bool = False):
    """Run ``graph`` on ``x`` with numpy; see the module docstring for the return value.

    With ``return_all`` it returns a dict of every tensor computed (inputs and node outputs).
    """
    from . import get_op

    feeds, batch = check_feeds(graph, x)
    values: dict[str, np.ndarray] = dict(feeds)
    for node in graph.nodes:
        opdef = get_op(node.op)
        ins = [graph.params[t] if t in graph.params else values[t] for t in node.inputs]
        outs = [np.empty(graph.specs[t].concrete(batch), graph.specs[t].dtype) for t in node.outputs]
        try:
            with np.errstate(all="ignore"):
                opdef.forward(node.attrs, ins, outs)
        except GraphrtError as err:
            raise err.locate(node=node.name, op=node.source.type or node.op,
                             file=node.source.file, line=node.source.line)
        values.update(zip(node.outputs, outs))
    if return_all:
        return values
    if len(graph.outputs) == 1:
        return values[graph.outputs[0]]
    return {t: values[t] for t in graph.outputs}
