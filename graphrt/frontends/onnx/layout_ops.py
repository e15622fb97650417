"""The ONNX frontend's converters for ops that move data or types rather than compute:
``Identity``, ``Shape`` (of a run-time tensor: folded, with the batch marked), ``Concat``,
``Flatten``, ``Reshape``, ``Transpose``, ``Unsqueeze``, ``Squeeze``, ``Pad``, ``Slice`` and
``Split``. Their table is merged with :data:`.ops.CONVERTERS` by the importer; see :mod:`.ops` for the conventions.

graphrt's ``reshape`` and ``flatten`` keep axis 0, so every conversion that would move the batch
off it raises :class:`~.fold.BatchError` (the loader then retries the model with static shapes).
"""
from __future__ import annotations

import numpy as np

from ...ir.errors import ShapeError, UnsupportedError
from .fold import BatchError, Const
from .converters import ConverterTable, need

CONVERTERS = ConverterTable()
converts = CONVERTERS.converts


@converts("Identity")
def identity(cv, attrs, ins):
    return [ins[0]]


@converts("Shape")
def shape(cv, attrs, ins):
    s = cv.spec(ins[0])
    value = np.array([cv.batch0 or 1 if d is None else d for d in s.shape], np.int64)
    mask = np.array([d is None for d in s.shape], bool)
    cut = slice(attrs.get("start", 0), attrs.get("end", None))
    return [Const(value[cut], mask[cut] if mask[cut].any() else None)]


# ---- data movement -------------------------------------------------------------------------------
@converts("Concat")
def concat(cv, attrs, ins):
    tensors = [cv.tensor(i) for i in range(len(ins))]
    specs = [cv.spec(t) for t in tensors]
    axis = need(attrs, "axis") % len(specs[0].shape)
    batched = [s.batched for s in specs]
    if any(batched) and (not all(batched) or axis == 0):
        raise BatchError(f"Concat along axis {axis} of " + ", ".join(str(s) for s in specs))
    return [cv.emit("concat", tensors, {"axis": axis})]


@converts("Flatten")
def flatten(cv, attrs, ins):
    x = cv.tensor(0)
    s = cv.spec(x)
    axis = attrs.get("axis", 1)
    axis = axis + len(s.shape) if axis < 0 else axis
    if axis == 1:
        return [cv.emit("flatten", [x], {"axis": 1})]
    if s.batched:
        raise BatchError(f"Flatten with axis {axis} merges the batch of {s} into another axis")
    return [cv.reshape(x, [int(np.prod(s.shape[:axis])), int(np.prod(s.shape[axis:]))])]


@converts("Reshape")
def reshape(cv, attrs, ins):
    x, target = cv.tensor(0), cv.const(1, "target shape")
    s = cv.spec(x)
    zero_literal = bool(attrs.get("allowzero", 0))
    dims = []
    for i, (d, batch) in enumerate(zip(target.value.tolist(), target.mask().tolist())):
        if batch:
            dims.append(None)
        elif d == 0 and not zero_literal:
            if i >= len(s.shape):
                raise ShapeError(f"Reshape target {target.value.tolist()} copies axis {i} of {s}")
            dims.append(s.shape[i])
        elif d == 0:
            raise UnsupportedError("Reshape to an empty tensor (allowzero)")
        else:
            dims.append(int(d))
    return [cv.reshape(x, dims, literal_batch=True)]


@converts("Transpose")
def transpose(cv, attrs, ins):
    x = cv.tensor(0)
    s = cv.spec(x)
    perm = tuple(attrs.get("perm", range(len(s.shape) - 1, -1, -1)))
    if s.batched and perm and perm[0] != 0:
        raise BatchError(f"Transpose {perm} moves the batch of {s} off axis 0")
    return [cv.emit("transpose", [x], {"perm": perm})]


def _axes(cv, attrs, what):
    if cv.opset >= 13:
        c = cv.const(1, f"axes of {what}")
        return None if c is None else [int(a) for a in c.value]
    return attrs.get("axes")


@converts("Unsqueeze")
def unsqueeze(cv, attrs, ins):
    x = cv.tensor(0)
    s = cv.spec(x)
    axes = _axes(cv, attrs, "Unsqueeze")
    rank = len(s.shape) + len(axes)
    dims = list(s.shape)
    for a in sorted(a % rank for a in axes):
        dims.insert(a, 1)
    if s.batched and dims[0] is not None:
        raise BatchError(f"Unsqueeze {axes} moves the batch of {s} off axis 0")
    return [cv.reshape(x, dims)]


@converts("Squeeze")
def squeeze(cv, attrs, ins):
    x = cv.tensor(0)
    s = cv.spec(x)
    axes = _axes(cv, attrs, "Squeeze")
    rank = len(s.shape)
    axes = [i for i, d in enumerate(s.shape) if d == 1] if axes is None else [a % rank for a in axes]
    if s.batched and 0 in axes:
        raise BatchError(f"Squeeze {axes} removes the batch axis of {s}")
    if any(s.shape[a] != 1 for a in axes):
        raise ShapeError(f"Squeeze {axes} of {s}: those axes are not all of size 1")
    return [cv.reshape(x, [d for i, d in enumerate(s.shape) if i not in axes])]


@converts("Pad")
def pad(cv, attrs, ins):
    mode = attrs.get("mode", "constant")
    if mode not in ("constant", "reflect", "edge", "wrap"):
        raise UnsupportedError(f"Pad mode {mode!r} (graphrt pads constant, reflect, edge, wrap)")
    x = cv.tensor(0)
    s = cv.spec(x)
    rank = len(s.shape)
    if cv.opset < 11:
        pads, value, axes = list(need(attrs, "pads")), float(attrs.get("value", 0.0)), None
    else:
        pads = [int(p) for p in cv.const(1, "pads").value]
        value = cv.const(2, "constant_value") if len(ins) > 2 else None
        value = 0.0 if value is None else float(value.value)
        axes = cv.const(3, "axes") if len(ins) > 3 else None
    if axes is not None:
        axes = [int(a) % rank for a in axes.value]
        full = [0] * (2 * rank)
        for k, a in enumerate(axes):
            full[a], full[a + rank] = pads[k], pads[k + len(axes)]
        pads = full
    if len(pads) != 2 * rank:
        raise ShapeError(f"Pad needs {2 * rank} pads for input {s}, got {len(pads)}")
    if s.batched and (pads[0] or pads[rank]):
        raise BatchError(f"Pad {pads} pads the batch axis of {s}")
    if mode != "constant":
        return [cv.emit("pad", [x], {"pads": tuple(pads), "mode": mode})]
    outer = [p for i, p in enumerate(pads) if i % rank < rank - 2]
    if value == 0.0 and rank >= 2 and not any(outer) and None not in s.shape[-2:]:
        return [cv.emit("zero_pad", [x], {"pads": (pads[rank - 2], pads[2 * rank - 2],
                                                   pads[rank - 1], pads[2 * rank - 1])})]
    return [cv.emit("pad", [x], {"pads": tuple(pads), "value": value})]


@converts("Slice")
def slice_(cv, attrs, ins):
    """A Slice of a tensor with constant bounds and unit steps: a crop (``pad`` with negative pads)."""
    x = cv.tensor(0)
    s = cv.spec(x)
    rank = len(s.shape)
    if cv.opset >= 10:
        starts, ends = cv.const(1, "Slice starts").value, cv.const(2, "Slice ends").value
        axes = cv.const(3, "Slice axes") if len(ins) > 3 else None
        steps = cv.const(4, "Slice steps") if len(ins) > 4 else None
        axes = range(len(starts)) if axes is None else axes.value
        steps = [1] * len(starts) if steps is None else steps.value
    else:
        starts, ends = need(attrs, "starts"), need(attrs, "ends")
        axes, steps = attrs.get("axes", range(len(starts))), [1] * len(starts)
    pads = [0] * (2 * rank)
    for a, start, end, step in zip(axes, starts, ends, steps):
        a, start, end = int(a) % rank, int(start), int(end)
        if step != 1:
            raise UnsupportedError(f"Slice with step {step} (graphrt crops with unit steps)")
        n = s.shape[a]
        if n is None:
            if start in (0, -2**63) and end >= 2**31 - 1:
                continue
            raise BatchError(f"Slice of the batch axis of {s}")
        lo, hi, _ = slice(start, end).indices(n)
        pads[a], pads[a + rank] = -lo, -(n - max(lo, hi))
    return [cv.emit("pad", [x], {"pads": tuple(pads), "value": 0.0})]


@converts("Split")
def split(cv, attrs, ins):
    x = cv.tensor(0)
    s = cv.spec(x)
    axis = attrs.get("axis", 0) % len(s.shape)
    if s.shape[axis] is None:
        raise BatchError(f"Split of the batch axis of {s}")
    sizes = cv.const(1, "split sizes") if cv.opset >= 13 and len(ins) > 1 else None
    sizes = attrs.get("split") if sizes is None else [int(v) for v in sizes.value]
    if sizes is None:
        parts = attrs.get("num_outputs", len(cv.node.output))
        step = -(-s.shape[axis] // parts)
        sizes = [min(step, s.shape[axis] - i * step) for i in range(parts)]
    outs = cv.graph.add_node("split", [x], name=cv.name, attrs={"axis": axis, "sizes": tuple(sizes)},
                             outputs=list(cv.node.output), source=cv.source())
    return list(outs) if isinstance(outs, tuple) else [outs]
