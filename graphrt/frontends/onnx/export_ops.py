"""ONNX forms of the ops added for issue 15 (activations, binary and reduction ops, layer norm,
resize, transposed convolution, slicing and indexing), at the exporter's opset 17.

Each writer has the exporter's signature ``(writer, node, attrs, out) -> output name``; where opset
17 lacks the op (``Gelu`` is opset 20) it is written as its decomposition. ``activation_node`` also
expands a conv2d/dense epilogue or an ``elementwise_chain`` step.
"""
from __future__ import annotations

import math

import numpy as np


def scalar(w, value, base: str, dtype=None) -> str:
    """A scalar initializer (of the current node's output dtype unless ``dtype``)."""
    return w.const(np.array(value, dtype or w.spec(w.node.outputs[0]).dtype), base)


def _gelu(w, x, a, out):
    if a["approximate"] == "tanh":  # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        cube = w.op("Mul", [w.op("Mul", [x, x]), x])
        inner = w.op("Add", [x, w.op("Mul", [cube, scalar(w, 0.044715, "c")])])
        t = w.op("Tanh", [w.op("Mul", [inner, scalar(w, math.sqrt(2 / math.pi), "k")])])
    else:  # 0.5 x (1 + erf(x / sqrt(2)))
        t = w.op("Erf", [w.op("Mul", [x, scalar(w, 1 / math.sqrt(2), "k")])])
    half = w.op("Mul", [w.op("Add", [t, scalar(w, 1.0, "one")]), scalar(w, 0.5, "half")])
    return w.op("Mul", [x, half], out)


def _clip(w, x, a, out):
    lo = "" if a["min"] == -math.inf else scalar(w, a["min"], "min")
    hi = "" if a["max"] == math.inf else scalar(w, a["max"], "max")
    return w.op("Clip", [x, lo, hi], out)


def _swish(w, x, a, out):
    z = x if a["beta"] == 1.0 else w.op("Mul", [x, scalar(w, a["beta"], "beta")])
    return w.op("Mul", [x, w.op("Sigmoid", [z])], out)


def _threshold(w, x, a, out):
    to = w.helper.np_dtype_to_tensor_dtype(np.dtype(w.spec(w.node.outputs[0]).dtype))
    return w.op("Cast", [w.op("Greater", [x, scalar(w, a["threshold"], "t")])], out, to=to)


_SIMPLE = {"erf": "Erf", "softplus": "Softplus", "softsign": "Softsign", "exp": "Exp",
           "log": "Log", "sqrt": "Sqrt", "abs": "Abs", "hard_swish": "HardSwish"}
_ACTIVATIONS = {
    "clip": _clip, "gelu": _gelu, "swish": _swish, "threshold": _threshold,
    "elu": lambda w, x, a, out: w.op("Elu", [x], out, alpha=a["alpha"]),
    "selu": lambda w, x, a, out: w.op("Selu", [x], out, alpha=a["alpha"], gamma=a["gamma"]),
    "hard_sigmoid": lambda w, x, a, out: w.op("HardSigmoid", [x], out, alpha=a["alpha"],
                                              beta=a["beta"]),
    **{op: (lambda w, x, a, out, t=t: w.op(t, [x], out)) for op, t in _SIMPLE.items()},
}


def activation_node(w, op: str, x: str, attrs, out: str | None) -> str:
    """The ONNX nodes of activation ``op`` (an op of :mod:`graphrt.ops.activation`) on ``x``."""
    from ...ops import get_op

    return _ACTIVATIONS[op](w, x, get_op(op).normalize_attrs(dict(attrs)), out)


def is_activation(op: str) -> bool:
    return op in _ACTIVATIONS


WRITERS = {op: (lambda w, n, a, out, op=op: activation_node(w, op, n.inputs[0], a, out))
           for op in _ACTIVATIONS}
