"""Elementwise ops: activations, ``scale``, n-ary ``add`` / ``mul``, ``dropout``, ``identity``.

- ``relu``: max(x, 0) + negative_slope * min(x, 0) (Caffe ReLU's ``negative_slope``, leaky ReLU).
- ``tanh``, ``sigmoid``.
- ``scale``: y = (shift + scale * x) ** power (Caffe Power; Torch MulConstant is power 1, shift 0).
- ``add``: y = sum_i coeffs[i] * x_i over inputs of one shape (Caffe Eltwise SUM, its ``coeff``).
- ``mul``: y = prod_i x_i (Caffe Eltwise PROD).
- ``dropout``: the identity in inference; ``rate`` is kept for training.
- ``identity``: y = x.
- ``elementwise_chain``: a fused run of the unary ops above, ``steps`` = ((op, attrs), ...), applied
  in order in one pass over the data (made by the ``fuse_elementwise`` pass).
"""
from __future__ import annotations

import numpy as np

from ..graph import TensorSpec, spec_error
from .registry import (Attr, OpDef, OpPattern, choice, elementwise_cost, float_dtype, floats,
                       register, to_float)


def _unary(attrs, ins, node):
    return [TensorSpec(ins[0].shape, float_dtype(ins[0], node))]


def _same_shapes(attrs, ins, node):
    first = ins[0]
    float_dtype(first, node)
    for i, s in enumerate(ins[1:], 1):
        if s.shape != first.shape or s.dtype != first.dtype:
            raise spec_error(node, f"{node.op if node else 'op'} needs inputs of one shape and dtype: "
                                   f"input 0 is {first} {first.dtype}, input {i} is {s} {s.dtype}")
    coeffs = attrs.get("coeffs") or ()
    if coeffs and len(coeffs) != len(ins):
        raise spec_error(node, f"add has {len(ins)} inputs but {len(coeffs)} coeffs")
    return [TensorSpec(first.shape, first.dtype)]


ACTIVATIONS = ("none", "relu", "tanh", "sigmoid")


def activate(out: np.ndarray, activation: str, negative_slope: float = 0.0) -> None:
    """Apply a fused activation epilogue in place (conv2d/dense ``activation`` attribute)."""
    if activation == "relu":
        _relu({"negative_slope": negative_slope}, [out], [out])
    elif activation == "tanh":
        np.tanh(out, out=out)
    elif activation == "sigmoid":
        _sigmoid({}, [out], [out])


def _relu(attrs, inputs, outputs):
    x, out = inputs[0], outputs[0]
    slope = attrs["negative_slope"]
    if slope == 0.0:
        np.maximum(x, 0, out=out)
    else:
        np.multiply(x, np.where(x > 0, x.dtype.type(1), x.dtype.type(slope)), out=out)


def _tanh(attrs, inputs, outputs):
    np.tanh(inputs[0], out=outputs[0])


def _sigmoid(attrs, inputs, outputs):
    # 1 / (1 + exp(-x)) written to avoid overflow warnings for large negative x
    x, out = inputs[0], outputs[0]
    e = np.exp(-np.abs(x))
    np.divide(np.where(x >= 0, 1, e), 1 + e, out=out)


def _scale(attrs, inputs, outputs):
    x, out = inputs[0], outputs[0]
    np.multiply(x, x.dtype.type(attrs["scale"]), out=out)
    if attrs["shift"]:
        out += x.dtype.type(attrs["shift"])
    if attrs["power"] != 1.0:
        np.power(out, x.dtype.type(attrs["power"]), out=out)


def _add(attrs, inputs, outputs):
    out = outputs[0]
    coeffs = attrs["coeffs"] or (1.0,) * len(inputs)
    np.multiply(inputs[0], out.dtype.type(coeffs[0]), out=out)
    for c, x in zip(coeffs[1:], inputs[1:]):
        if c == 1.0:
            out += x
        else:
            out += out.dtype.type(c) * x


def _mul(attrs, inputs, outputs):
    out = outputs[0]
    out[...] = inputs[0]
    for x in inputs[1:]:
        out *= x


def _copy(attrs, inputs, outputs):
    outputs[0][...] = inputs[0]


def _rate(v):
    v = to_float(v)
    if not 0.0 <= v < 1.0:
        raise ValueError(f"dropout rate must be in [0, 1), got {v}")
    return v


def _unary_op(name, forward, flops=1, attrs=None, pattern=OpPattern.ELEMWISE):
    return register(OpDef(name=name, family="elementwise", arity=(1, 1), attrs=attrs or {},
                          infer=_unary, forward=forward, cost=elementwise_cost(flops),
                          pattern=pattern, inplace=0, doc=__doc__))


EPILOGUE_ATTRS = {"activation": Attr(choice(*ACTIVATIONS), "none"),
                  "negative_slope": Attr(to_float, 0.0)}
RELU = _unary_op("relu", _relu, attrs={"negative_slope": Attr(to_float, 0.0)})
TANH = _unary_op("tanh", _tanh, flops=4)
SIGMOID = _unary_op("sigmoid", _sigmoid, flops=4)
SCALE = _unary_op("scale", _scale, flops=3, attrs={
    "power": Attr(to_float, 1.0), "scale": Attr(to_float, 1.0), "shift": Attr(to_float, 0.0)})
DROPOUT = _unary_op("dropout", _copy, flops=0, attrs={"rate": Attr(_rate, 0.5)})
IDENTITY = _unary_op("identity", _copy, flops=0)
ADD = register(OpDef(name="add", family="elementwise", arity=(1, None),
                     attrs={"coeffs": Attr(floats, ())}, infer=_same_shapes, forward=_add,
                     cost=elementwise_cost(1), pattern=OpPattern.ELEMWISE, inplace=0, doc=__doc__))
MUL = register(OpDef(name="mul", family="elementwise", arity=(1, None), attrs={},
                     infer=_same_shapes, forward=_mul, cost=elementwise_cost(1),
                     pattern=OpPattern.ELEMWISE, inplace=0, doc=__doc__))


def _steps(v) -> tuple:
    steps = []
    for step in v:
        op, attrs = step
        opdef = UNARY.get(op)
        if opdef is None:
            raise ValueError(f"elementwise_chain step {op!r} is not one of {sorted(UNARY)}")
        steps.append((op, opdef.normalize_attrs(dict(attrs))))
    if not steps:
        raise ValueError("elementwise_chain needs at least one step")
    return tuple(steps)


def _chain(attrs, inputs, outputs):
    x, out = inputs[0], outputs[0]
    for op, step_attrs in attrs["steps"]:
        UNARY[op].forward(step_attrs, [x], [out])
        x = out


def _chain_cost(attrs, ins, outs, batch):
    flops = sum(UNARY[op].cost(a, ins, outs, batch)[0] for op, a in attrs["steps"])
    return flops, ins[0].nbytes(batch) + outs[0].nbytes(batch)


UNARY = {op.name: op for op in (RELU, TANH, SIGMOID, SCALE, DROPOUT, IDENTITY)}
ELEMENTWISE_CHAIN = register(OpDef(
    name="elementwise_chain", family="elementwise", arity=(1, 1), attrs={"steps": Attr(_steps)},
    infer=_unary, forward=_chain, cost=_chain_cost, pattern=OpPattern.ELEMWISE, inplace=0,
    doc=__doc__))
