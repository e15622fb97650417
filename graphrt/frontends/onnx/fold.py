"""Constant folding for the ONNX frontend: the shape arithmetic exporters wrap around the real ops.

A value whose inputs are all known at load time is a :class:`Const`: initializers, ``Constant``
nodes and everything computed from them (``ConstantOfShape``, ``Gather``, ``Slice``, ``Concat``,
``Cast``, ``Unsqueeze``, ...). ``Shape`` of a graph tensor is known too, except for the symbolic
batch: its element is marked in :attr:`Const.batch`, a boolean mask beside the value, and the
ops that only move elements (the :data:`FOLDERS` table) carry the mask along, so that PyTorch's
``x.view(x.size(0), -1)`` (``Shape -> Gather -> Unsqueeze -> Concat -> Reshape``) reaches the
``Reshape`` as "(batch, -1)". Arithmetic on a marked element would compute with the batch size and
raises :class:`BatchError`. Ops outside the table fold through ``onnx.reference`` when their inputs
are unmarked constants.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ...ir.errors import UnsupportedError

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


# ---- folders: (attrs, inputs: list[Const | None], opset) -> list[Const] --------------------------
def _plain(c: Const | None, what: str) -> np.ndarray | None:
    if c is None:
        return None
    if c.symbolic:
        raise BatchError(f"the {what} is computed from the batch size")
    return c.value


def _constant(attrs, ins, opset):
    for key, conv in (("value", np.asarray), ("value_float", np.float32), ("value_int", np.int64),
                      ("value_floats", lambda v: np.asarray(v, np.float32)),
                      ("value_ints", lambda v: np.asarray(v, np.int64))):
        if key in attrs:
            return [Const(np.asarray(conv(attrs[key])))]
    raise UnsupportedError(f"Constant with attributes {sorted(attrs)} (sparse or string constants)")


def _constant_of_shape(attrs, ins, opset):
    shape = _plain(ins[0], "shape of ConstantOfShape")
    fill = attrs.get("value", np.zeros(1, np.float32))
    return [Const(np.full(tuple(int(d) for d in shape), fill.reshape(-1)[0], fill.dtype))]


def _gather(attrs, ins, opset):
    data, idx = ins[0], _plain(ins[1], "Gather indices")
    axis = attrs.get("axis", 0)
    return [data.with_value(np.take(data.value, idx, axis=axis), np.take(data.mask(), idx, axis=axis))]


def _axes(attrs, ins, opset, what: str):
    if opset >= 13 and len(ins) > 1:
        return _plain(ins[1], f"axes of {what}")
    return attrs.get("axes")


def _unsqueeze(attrs, ins, opset):
    data, axes = ins[0], _axes(attrs, ins, opset, "Unsqueeze")
    rank = data.value.ndim + len(axes)
    axes = sorted(int(a) % rank for a in axes)
    value, mask = data.value, data.mask()
    for a in axes:
        value, mask = np.expand_dims(value, a), np.expand_dims(mask, a)
    return [data.with_value(value, mask)]


def _squeeze(attrs, ins, opset):
    data, axes = ins[0], _axes(attrs, ins, opset, "Squeeze")
    axes = tuple(range(data.value.ndim)) if axes is None else tuple(int(a) for a in axes)
    axes = tuple(a % data.value.ndim for a in axes if data.value.shape[a] == 1)
    return [data.with_value(np.squeeze(data.value, axes), np.squeeze(data.mask(), axes))]


def _concat(attrs, ins, opset):
    axis = attrs["axis"]
    return [ins[0].with_value(np.concatenate([c.value for c in ins], axis),
                              np.concatenate([c.mask() for c in ins], axis))]


def _slice(attrs, ins, opset):
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
    return [data.with_value(data.value[index], data.mask()[index])]


def _cast(attrs, ins, opset):
    return [ins[0].with_value(ins[0].value.astype(np_dtype(attrs["to"])), ins[0].batch)]


def _identity(attrs, ins, opset):
    return [ins[0]]


def _reshape(attrs, ins, opset):
    data, shape = ins[0], _plain(ins[1], "target shape of Reshape")
    shape = [int(d) for d in shape]
    if not attrs.get("allowzero", 0):
        shape = [data.value.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return [data.with_value(data.value.reshape(shape), data.mask().reshape(shape))]


FOLDERS = {"Constant": _constant, "ConstantOfShape": _constant_of_shape, "Gather": _gather,
           "Unsqueeze": _unsqueeze, "Squeeze": _squeeze, "Concat": _concat, "Slice": _slice,
           "Cast": _cast, "Identity": _identity, "Reshape": _reshape}


def fold(node, ins: list, opset: int) -> list[Const]:
    """The outputs of ``node`` whose present inputs are all :class:`Const` s."""
    attrs = node_attrs(node)
    folder = FOLDERS.get(node.op_type)
    if folder is not None and node.domain in ("", "ai.onnx"):
        try:
            return folder(attrs, ins, opset)
        except (ValueError, IndexError, TypeError, KeyError) as err:
            raise UnsupportedError(f"cannot fold {node.op_type} at load: {err}") from None
    for c in ins:
        _plain(c, f"input of {node.op_type}")
    return _evaluate(node, ins, opset)


def _evaluate(node, ins: list, opset: int) -> list[Const]:
    from onnx.reference import ReferenceEvaluator

    feeds = {name: c.value for name, c in zip(node.input, ins) if name and c is not None}
    try:
        evaluator = ReferenceEvaluator(node, opsets={"": opset})
        outs = evaluator.run(None, feeds)
    except Exception as err:  # onnx.reference raises whatever its op implementation raises
        raise UnsupportedError(f"cannot fold {node.op_type} at load ({type(err).__name__}: "
                               f"{err})") from None
    return [Const(np.asarray(v)) for v in outs]
