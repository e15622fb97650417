"""Constant folding for the ONNX frontend: the shape arithmetic exporters wrap around the real ops.

A value whose inputs are all known at load time is a :class:`Const`: initializers, ``Constant``
nodes and everything computed from them (``ConstantOfShape``, ``Gather``, ``Slice``, ``Concat``,
``Cast``, ``Unsqueeze``, ...). ``Shape`` of a graph tensor is known too, except for the symbolic
batch: its element is marked in :attr:`Const.batch`, a boolean mask beside the value, and the
ops that only move elements (the :data:`FOLDERS` table) carry the mask along, so that PyTorch's
``x.view(x.size(0), -1)`` (``Shape -> Gather -> Unsqueeze -> Concat -> Reshape``) reaches the
``Reshape`` as "(batch, -1)". Arithmetic on a marked element would compute with the batch size and
raises :class:`BatchError`. The ops of :data:`.bounds.FOLDABLE` fold through ``onnx.reference``
when their inputs are unmarked constants; no other op runs at load (:mod:`.bounds`).

Every fold first takes the bytes it will allocate from the load's budget
(``graphrt.limits.MAX_FOLDED_BYTES``), computed from its inputs before it runs: a 163-byte file
asking ``ConstantOfShape`` for gigabytes is a :class:`~graphrt.ir.errors.LimitError`, not an
allocation.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ...ir.errors import UnsupportedError
from ...ir.limits import Budget
from . import bounds

# ops that are never folded even with constant inputs: their outputs differ from run to run
NONDETERMINISTIC = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
                    "Multinomial", "Bernoulli"}


class BatchError(UnsupportedError):
    """The model moves the batch dimension away from axis 0 or computes with the batch size."""


class ConstantInputError(UnsupportedError):
    """A graph input feeds an operand graphrt needs at load time (a Reshape target, Pad pads, ...);
    ``load_onnx(..., constants={name: value})`` binds it."""

    def __init__(self, message: str, input: str, **where):
        super().__init__(message, **where)
        self.input = input


@dataclasses.dataclass(frozen=True, eq=False)
class Const:
    """A value known at load time; ``batch`` marks elements equal to the (symbolic) batch size."""

    value: np.ndarray
    batch: np.ndarray | None = None

    @property
    def symbolic(self) -> bool:
        return self.batch is not None and bool(self.batch.any())

    def mask(self) -> np.ndarray:
        return self.batch if self.batch is not None else np.zeros(self.value.shape, bool)

    def move(self, fn) -> "Const":
        """``fn`` (an op that only moves elements) applied to the value and to its batch mask."""
        return self.with_value(fn(self.value), None if self.batch is None else fn(self.batch))

    def with_value(self, value, mask=None) -> "Const":
        value = np.asarray(value)
        if mask is not None and not np.asarray(mask).any():
            mask = None
        return Const(value, None if mask is None else np.asarray(mask, bool))


def node_attrs(node) -> dict:
    """An ONNX node's attributes as Python values (tensors as numpy arrays, strings decoded)."""
    from onnx import helper, numpy_helper

    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode("utf-8")
        elif a.type == a.TENSOR:
            v = numpy_helper.to_array(v)
        elif isinstance(v, list) and v and isinstance(v[0], bytes):
            v = [s.decode("utf-8") for s in v]
        out[a.name] = v
    return out


def np_dtype(onnx_type: int) -> np.dtype:
    from onnx import helper

    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(onnx_type))
    except (KeyError, TypeError, ValueError):  # a data type number ONNX does not define
        raise UnsupportedError(f"ONNX data type {onnx_type} is not supported") from None


# ---- folders: (attrs, inputs: list[Const | None], opset, budget) -> list[Const] ------------------
# each takes what it allocates from ``budget`` ("folded") before allocating it
def _plain(c: Const | None, what: str) -> np.ndarray | None:
    if c is None:
        return None
    if c.symbolic:
        raise BatchError(f"the {what} is computed from the batch size")
    return c.value


def _constant(attrs, ins, opset, budget):
    for key, conv in (("value", np.asarray), ("value_float", np.float32), ("value_int", np.int64),
                      ("value_floats", lambda v: np.asarray(v, np.float32)),
                      ("value_ints", lambda v: np.asarray(v, np.int64))):
        if key in attrs:
            value = np.asarray(conv(attrs[key]))
            budget.take("folded", value.nbytes, "the Constant")
            return [Const(value)]
    raise UnsupportedError(f"Constant with attributes {sorted(attrs)} (sparse or string constants)")


def _constant_of_shape(attrs, ins, opset, budget):
    shape = _plain(ins[0], "shape of ConstantOfShape")
    fill = attrs.get("value", np.zeros(1, np.float32))
    budget.take("folded", bounds.constant_of_shape_bytes(shape, fill),
                f"ConstantOfShape({[int(d) for d in shape.reshape(-1)]})")
    return [Const(np.full(tuple(int(d) for d in shape), fill.reshape(-1)[0], fill.dtype))]


def _gather(attrs, ins, opset, budget):
    data, idx = ins[0], _plain(ins[1], "Gather indices")
    axis = attrs.get("axis", 0)
    budget.take("folded", bounds.gather_bytes(data.value, idx, axis, data.batch is not None),
                "the Gather")
    return [data.move(lambda a: np.take(a, idx, axis=axis))]


def _axes(attrs, ins, opset, what: str):
    if opset >= 13 and len(ins) > 1:
        return _plain(ins[1], f"axes of {what}")
    return attrs.get("axes")


def _unsqueeze(attrs, ins, opset, budget):
    data, axes = ins[0], _axes(attrs, ins, opset, "Unsqueeze")
    rank = data.value.ndim + len(axes)
    axes = sorted(int(a) % rank for a in axes)
    return [data.move(lambda a: np.expand_dims(a, tuple(axes)))]  # a view: nothing allocated


def _squeeze(attrs, ins, opset, budget):
    data, axes = ins[0], _axes(attrs, ins, opset, "Squeeze")
    axes = tuple(range(data.value.ndim)) if axes is None else tuple(int(a) for a in axes)
    axes = tuple(a % data.value.ndim for a in axes if data.value.shape[a] == 1)
    return [data.move(lambda a: np.squeeze(a, axes))]


def _concat(attrs, ins, opset, budget):
    axis = attrs["axis"]
    masked = any(c.batch is not None for c in ins)
    budget.take("folded", sum(c.value.nbytes + masked * c.value.size for c in ins), "the Concat")
    mask = np.concatenate([c.mask() for c in ins], axis) if masked else None
    return [ins[0].with_value(np.concatenate([c.value for c in ins], axis), mask)]


def _slice(attrs, ins, opset, budget):
    data = ins[0]
    if opset >= 10:
        starts, ends = _plain(ins[1], "Slice starts"), _plain(ins[2], "Slice ends")
        axes = _plain(ins[3], "Slice axes") if len(ins) > 3 else None
        steps = _plain(ins[4], "Slice steps") if len(ins) > 4 else None
    else:
        starts, ends, axes, steps = attrs["starts"], attrs["ends"], attrs.get("axes"), None
    axes = range(len(starts)) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    index = [slice(None)] * data.value.ndim
    for a, s, e, st in zip(axes, starts, ends, steps):
        index[int(a)] = slice(int(s), int(e), int(st))
    index = tuple(index)
    return [data.move(lambda a: a[index])]  # a view


def _cast(attrs, ins, opset, budget):
    to = np_dtype(attrs["to"])
    budget.take("folded", ins[0].value.size * to.itemsize, f"the Cast to {to}")
    return [ins[0].with_value(ins[0].value.astype(to), ins[0].batch)]


def _identity(attrs, ins, opset, budget):
    return [ins[0]]


def _reshape(attrs, ins, opset, budget):
    data, shape = ins[0], _plain(ins[1], "target shape of Reshape")
    shape = [int(d) for d in shape]
    if not attrs.get("allowzero", 0):
        shape = [data.value.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    if not data.value.flags.c_contiguous:  # a copy; otherwise a view
        budget.take("folded", data.value.nbytes, "the Reshape")
    return [data.move(lambda a: a.reshape(shape))]


FOLDERS = {"Constant": _constant, "ConstantOfShape": _constant_of_shape, "Gather": _gather,
           "Unsqueeze": _unsqueeze, "Squeeze": _squeeze, "Concat": _concat, "Slice": _slice,
           "Cast": _cast, "Identity": _identity, "Reshape": _reshape}


def foldable(node) -> bool:
    """Whether ``node`` may run at load when its inputs are constants (see :mod:`.bounds`)."""
    return node.domain in ("", "ai.onnx") and (node.op_type in FOLDERS
                                                or node.op_type in bounds.FOLDABLE)


def fold(node, ins: list, opset: int, budget: Budget) -> list[Const]:
    """The outputs of ``node`` (a :func:`foldable` one) whose present inputs are all
    :class:`Const` s, each fold's bytes taken from ``budget`` before it runs."""
    attrs = node_attrs(node)
    folder = FOLDERS.get(node.op_type)
    try:
        if folder is not None:
            return folder(attrs, ins, opset, budget)
        for c in ins:
            _plain(c, f"input of {node.op_type}")
        values = [c.value for c in ins if c is not None]
        need = bounds.reference_bytes(node.op_type, attrs, values)
    except (ValueError, IndexError, TypeError, KeyError, OverflowError) as err:
        raise UnsupportedError(f"cannot fold {node.op_type} at load: {err}") from None
    budget.take("folded", need, f"the {node.op_type}")
    return _evaluate(node, ins, opset)


def _evaluate(node, ins: list, opset: int) -> list[Const]:
    from onnx.reference import ReferenceEvaluator

    feeds = {name: c.value for name, c in zip(node.input, ins) if name and c is not None}
    try:
        evaluator = ReferenceEvaluator(node, opsets={"": opset})
        outs = evaluator.run(None, feeds)
    except MemoryError:
        raise
    except Exception as err:  # onnx.reference raises whatever its op implementation raises
        raise UnsupportedError(f"cannot fold {node.op_type} at load ({type(err).__name__}: "
                               f"{err})") from None
    return [Const(np.asarray(v)) for v in outs]
