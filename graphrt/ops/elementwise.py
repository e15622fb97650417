"""Elementwise ops: activations, ``scale``, n-ary ``add`` / ``mul``, ``dropout``, ``identity``.

- ``relu``: max(x, 0) + negative_slope * min(x, 0) (Caffe ReLU's ``negative_slope``, leaky ReLU).
- ``tanh``, ``sigmoid``.
- ``scale``: y = (shift + scale * x) ** power (Caffe Power; Torch MulConstant is power 1, shift 0).
- ``add``: y = sum_i coeffs[i] * x_i over inputs of one shape (Caffe Eltwise SUM, its ``coeff``).
- ``mul``: y = prod_i x_i (Caffe Eltwise PROD).
- ``dropout``: the identity in inference; ``rate`` is kept for training.
- ``identity``: y = x.
"""
from __future__ import annotations

import numpy as np

from ..graph import TensorSpec, spec_error
from .registry import (Attr, OpDef, OpPattern, elementwise_cost, float_dtype, floats, register,
                       to_float)


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


def _relu(attrs, inputs, outputs):
    x, out = inputs[0], outputs[0]
    slope = attrs["negative_slope"]
    if slope == 0.0:
        np.maximum(x, 0, out=out)
    else:
        np.multiply(x, np.where(x > 0, 1, slope).astype(x.dtype), out=out)


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
