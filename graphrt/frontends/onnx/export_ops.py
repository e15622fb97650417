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


# ---- binary, cast -------------------------------------------------------------------------------
def _onnx_dtype(w, dtype) -> int:
    return w.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def _where(w, n, a, out):
    cond = n.inputs[0]
    if w.spec(cond).dtype != "bool":
        cond = w.op("Cast", [cond], to=_onnx_dtype(w, "bool"))
    return w.op("Where", [cond, *n.inputs[1:]], out)


def _nary(op_type):
    def write(w, n, a, out):
        return w.op(op_type, list(n.inputs), out)
    return write


# ---- reductions ---------------------------------------------------------------------------------
_REDUCE = {"sum": "ReduceSum", "mean": "ReduceMean", "max": "ReduceMax", "min": "ReduceMin",
           "prod": "ReduceProd", "l1": "ReduceL1", "l2": "ReduceL2", "sumsq": "ReduceSumSquare",
           "logsum": "ReduceLogSum", "logsumexp": "ReduceLogSumExp"}


def _reduce(w, n, a, out):
    rank = len(w.spec(n.inputs[0]).shape)
    axes = list(a["axes"]) or list(range(rank))
    op_type = _REDUCE[a["mode"]]
    if op_type == "ReduceSum":  # axes are an input from opset 13
        return w.op(op_type, [n.inputs[0], w.const(np.array(axes, np.int64), "axes")], out,
                    keepdims=int(a["keepdims"]))
    return w.op(op_type, [n.inputs[0]], out, axes=axes, keepdims=int(a["keepdims"]))


def _arg_reduce(w, n, a, out):
    return w.op("ArgMax" if a["mode"] == "max" else "ArgMin", n.inputs, out, axis=a["axis"],
                keepdims=int(a["keepdims"]), select_last_index=int(a["select_last_index"]))


def _layer_norm(w, n, a, out):
    x = n.inputs[0]
    rank = len(w.spec(x).shape)
    axes = sorted(ax % rank for ax in a["axes"])
    if axes == list(range(axes[0], rank)) and a["eps_inside_sqrt"] and a["normalize_variance"]:
        scale = n.inputs[1] if len(n.inputs) > 1 else w.const(
            np.ones([w.spec(x).shape[i] for i in axes], w.spec(x).dtype), "scale")
        return w.op("LayerNormalization", [x, scale, *n.inputs[2:]], out, axis=axes[0],
                    epsilon=a["eps"])
    mean = w.op("ReduceMean", [x], axes=axes, keepdims=1)
    y = centered = w.op("Sub", [x, mean])
    if a["normalize_variance"]:
        var = w.op("ReduceMean", [w.op("Mul", [centered, centered])], axes=axes, keepdims=1)
        eps = scalar(w, a["eps"], "eps")
        sigma = w.op("Sqrt", [w.op("Add", [var, eps])]) if a["eps_inside_sqrt"] else \
            w.op("Add", [w.op("Sqrt", [var]), eps])
        y = w.op("Div", [centered, sigma])
    kept = [d if i in axes else 1 for i, d in enumerate(w.spec(x).shape)]
    for k, op_type in ((1, "Mul"), (2, "Add")):
        if len(n.inputs) > k:
            shape = w.const(np.array([1 if d is None else d for d in kept], np.int64), "shape")
            y = w.op(op_type, [y, w.op("Reshape", [n.inputs[k], shape])])
    return w.op("Identity", [y], out)


# ---- resize, transposed convolution -------------------------------------------------------------
def _resize(w, n, a, out):
    if a["coordinate_transformation_mode"] == "half_pixel_symmetric":
        from ...ir.errors import UnsupportedError

        raise UnsupportedError("half_pixel_symmetric resize needs ONNX opset 19 (graphrt exports "
                               "opset 17)", node=n.name, op=n.op)
    roi = ""
    if a["scales"]:
        scales = w.const(np.array([1.0, 1.0, *a["scales"]], np.float32), "scales")
        inputs = [n.inputs[0], roi, scales]
    else:  # sizes: the input's (N, C) from its shape (the batch is symbolic), then the spatial ones
        lead = w.op("Shape", [n.inputs[0]], start=0, end=2)
        sizes = w.op("Concat", [lead, w.const(np.array(a["sizes"], np.int64), "sizes")], axis=0)
        inputs = [n.inputs[0], roi, "", sizes]
    return w.op("Resize", inputs, out, mode=a["mode"],
                coordinate_transformation_mode=a["coordinate_transformation_mode"],
                nearest_mode=a["nearest_mode"], cubic_coeff_a=a["cubic_coeff_a"],
                exclude_outside=int(a["exclude_outside"]))


def _conv_transpose(w, n, a, out):
    t, b, l, r = a["pads"]
    return w.op("ConvTranspose", n.inputs, out, kernel_shape=list(w.spec(n.inputs[1]).shape[2:]),
                strides=list(a["stride"]), dilations=list(a["dilation"]), group=a["groups"],
                pads=[t, l, b, r], output_padding=list(a["output_padding"]))


def _ints(w, values, base):
    return w.const(np.array(values, np.int64), base)


WRITERS.update({
    "sub": _nary("Sub"), "div": _nary("Div"), "pow": _nary("Pow"), "maximum": _nary("Max"),
    "minimum": _nary("Min"), "equal": _nary("Equal"), "greater": _nary("Greater"),
    "less": _nary("Less"), "greater_equal": _nary("GreaterOrEqual"),
    "less_equal": _nary("LessOrEqual"), "prelu": _nary("PRelu"), "where": _where,
    "cast": lambda w, n, a, out: w.op("Cast", n.inputs, out, to=_onnx_dtype(w, a["to"])),
    "reduce": _reduce, "arg_reduce": _arg_reduce, "layer_norm": _layer_norm, "resize": _resize,
    "conv2d_transpose": _conv_transpose,
    "slice": lambda w, n, a, out: w.op("Slice", [n.inputs[0], _ints(w, a["starts"], "starts"),
                                                 _ints(w, a["ends"], "ends"),
                                                 _ints(w, a["axes"], "axes")], out),
    "tile": lambda w, n, a, out: w.op("Tile", [n.inputs[0], _ints(w, a["repeats"], "repeats")],
                                      out),
    "expand": lambda w, n, a, out: w.op("Expand", [n.inputs[0], _ints(
        w, [1 if d == -1 else d for d in a["shape"]], "shape")], out),
    "embedding": lambda w, n, a, out: w.op("Gather", [n.inputs[1], w.op(
        "Cast", [n.inputs[0]], to=_onnx_dtype(w, "int64"))], out, axis=0),
})
