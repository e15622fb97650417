"""Caffe's arithmetic layers beyond the seed's: activations (ELU, AbsVal, BNLL, Exp, Log,
Threshold, Clip, Swish, PReLU), Bias and Scale on any axes (also with a second bottom), Eltwise MAX,
Reduction, ArgMax, MVN, Embed, Deconvolution, InnerProduct on any axis or transposed, Parameter
(a learned blob as a layer's output),
and the fork layers Axpy (SENet: a * x + y with a per-channel a) and ReLU6.

Each converter has the signature of :mod:`.layers` (builder, layer message, name, input tensors)
and follows BVLC's layer code for shapes and defaults.
"""
from __future__ import annotations

import math

from ...ir.errors import AttrError, GraphrtError, UnsupportedError
from . import layers
from .layers import _channels, _int, _node, _pair
from .prototxt import Message


def _param_msg(layer, field):
    return layer.get(field, Message())


def _shape(b, x):
    return b.graph.specs[x].shape


def _axis(axis, rank, what):
    if not -rank <= axis < rank:
        raise AttrError(f"{what} axis {axis} is out of range for a {rank}-D bottom")
    return axis % rank


def unary(op, field=None, attrs=None):
    """A layer that is one activation op; ``attrs`` maps op attributes to fields of ``field``."""
    def convert(b, layer, name, inputs):
        p = _param_msg(layer, field) if field else Message()
        a = {k: p.get(src, default) for k, (src, default) in (attrs or {}).items()}
        return _node(b, op, inputs, layer, name, a)
    return convert


def clip(b, layer, name, inputs):
    p = _param_msg(layer, "clip_param")
    if p.get("min") is None or p.get("max") is None:
        raise AttrError("Clip needs clip_param.min and clip_param.max")
    return _node(b, "clip", inputs, layer, name, {"min": p.get("min"), "max": p.get("max")})


def exp(b, layer, name, inputs):
    """y = base ^ (shift + scale * x) = exp(ln(base) * (shift + scale * x)); base -1 is e."""
    p = _param_msg(layer, "exp_param")
    base, scale, shift = p.get("base", -1.0), p.get("scale", 1.0), p.get("shift", 0.0)
    if base != -1.0 and base <= 0:
        raise AttrError(f"Exp base must be -1 (e) or positive, got {base}")
    k = 1.0 if base == -1.0 else math.log(base)
    x = inputs[0]
    if k * scale != 1.0 or shift:
        x = _node(b, "scale", [x], layer, f"{name}/inner", {"scale": k * scale, "shift": k * shift})
    return _node(b, "exp", [x], layer, name)


def log(b, layer, name, inputs):
    """y = log_base(shift + scale * x) = ln(shift + scale * x) / ln(base); base -1 is e."""
    p = _param_msg(layer, "log_param")
    base, scale, shift = p.get("base", -1.0), p.get("scale", 1.0), p.get("shift", 0.0)
    if base != -1.0 and (base <= 0 or base == 1):
        raise AttrError(f"Log base must be -1 (e) or positive and not 1, got {base}")
    x = inputs[0]
    if scale != 1.0 or shift:
        x = _node(b, "scale", [x], layer, f"{name}/inner", {"scale": scale, "shift": shift})
    if base == -1.0:
        return _node(b, "log", [x], layer, name)
    y = _node(b, "log", [x], layer, f"{name}/ln")
    return _node(b, "scale", [y], layer, name, {"scale": 1.0 / math.log(base)})


def _broadcast_to(b, layer, name, factor, x, axis):
    """``factor`` (whose shape is x.shape[axis:axis + k]) reshaped to broadcast against ``x``."""
    fs, xs = _shape(b, factor), _shape(b, x)
    k = len(fs)
    if tuple(xs[axis:axis + k]) != tuple(fs) and not (axis == 0 and fs[0] is None):
        raise GraphrtError(f"the second bottom {fs} does not match the first bottom's "
                           f"{tuple(xs)} from axis {axis}")
    if axis + k == len(xs):
        return factor
    if not fs:
        return factor
    rest = tuple(fs[1:]) + (1,) * (len(xs) - axis - k)
    return _node(b, "reshape", [factor], layer, f"{name}/{factor.split('/')[-1]}_broadcast",
                 {"shape": rest})


def _learned(b, layer, name, x, index, suffix, axis, num_axes, filler, default):
    """A learned parameter over x.shape[axis:axis + num_axes] (num_axes -1: to the end)."""
    xs = _shape(b, x)
    end = len(xs) if num_axes == -1 else axis + num_axes
    if end > len(xs) or num_axes < -1:
        raise AttrError(f"num_axes {num_axes} from axis {axis} exceeds the bottom's {len(xs)} axes")
    shape = tuple(xs[axis:end])
    if None in shape:
        raise UnsupportedError("a learned parameter along the batch axis")
    p = b.param(layer, index, suffix, shape, filler, default_filler=default)
    return _broadcast_to(b, layer, name, p, x, axis) if shape else p


def scale(b, layer, name, inputs):
    """Scale: y = x * factor (+ bias); factor the second bottom or a learned parameter."""
    p = _param_msg(layer, "scale_param")
    x = inputs[0]
    axis = _axis(p.get("axis", 1), len(_shape(b, x)), "Scale")
    num_axes = p.get("num_axes", 1)
    if len(inputs) == 1 and axis == 1 and num_axes == 1 and len(_shape(b, x)) >= 2:
        c = _channels(b, x, name)  # the common per-channel case: one fusable node
        params = [b.param(layer, 0, "scale", (c,), p.get("filler"), default_filler="constant_one")]
        if p.get("bias_term", False):
            params.append(b.param(layer, 1, "bias", (c,), p.get("bias_filler")))
        return _node(b, "channel_affine", inputs + params, layer, name)
    if len(inputs) == 2:
        factor = _broadcast_to(b, layer, name, inputs[1], x, axis)
        bias_shape_axes = len(_shape(b, inputs[1]))
    else:
        factor = _learned(b, layer, name, x, 0, "scale", axis, num_axes, p.get("filler"),
                          "constant_one")
        bias_shape_axes = num_axes
    bias = p.get("bias_term", False)
    y = _node(b, "mul", [x, factor], layer, f"{name}/scale" if bias else name)
    if not bias:
        return y
    index = 0 if len(inputs) == 2 else 1
    if len(inputs) == 2 and None in _shape(b, inputs[1]):
        raise UnsupportedError("Scale with a batched second bottom and bias_term")
    beta = _learned(b, layer, name, x, index, "bias", axis, bias_shape_axes,
                    p.get("bias_filler"), "constant")
    return _node(b, "add", [y, beta], layer, name)


def bias(b, layer, name, inputs):
    p = _param_msg(layer, "bias_param")
    x = inputs[0]
    axis = _axis(p.get("axis", 1), len(_shape(b, x)), "Bias")
    if len(inputs) == 2:
        beta = _broadcast_to(b, layer, name, inputs[1], x, axis)
    else:
        beta = _learned(b, layer, name, x, 0, "bias", axis, p.get("num_axes", 1), p.get("filler"),
                        "constant")
    return _node(b, "add", [x, beta], layer, name)


def prelu(b, layer, name, inputs):
    p = _param_msg(layer, "prelu_param")
    x = inputs[0]
    c = 1 if p.get("channel_shared", False) else _channels(b, x, name)
    filler = p.get("filler") or Message([("type", "constant"), ("value", 0.25)])
    slope = b.param(layer, 0, "slope", (c,), filler)
    rank = len(_shape(b, x))
    if c > 1 and rank > 2:
        slope = _node(b, "reshape", [slope], layer, f"{name}/slope_broadcast",
                      {"shape": (1,) * (rank - 2)})
    return _node(b, "prelu", [x, slope], layer, name)


def eltwise(b, layer, name, inputs):
    p = _param_msg(layer, "eltwise_param")
    op = p.get("operation", "SUM")
    coeffs = tuple(p.getall("coeff"))
    if coeffs and op != "SUM":
        raise AttrError("Eltwise coeff applies to the SUM operation only")
    if coeffs and len(coeffs) != len(inputs):
        raise AttrError(f"Eltwise has {len(inputs)} bottoms but {len(coeffs)} coeff values")
    if op == "SUM":
        return _node(b, "add", inputs, layer, name, {"coeffs": coeffs})
    return _node(b, {"PROD": "mul", "MAX": "maximum"}[op], inputs, layer, name)


def reduction(b, layer, name, inputs):
    """Reduction over every axis from ``axis`` (default 0) on; the output has the leading axes."""
    p = _param_msg(layer, "reduction_param")
    x = inputs[0]
    rank = len(_shape(b, x))
    axis = _axis(p.get("axis", 0), rank, "Reduction")
    mode = {"SUM": "sum", "ASUM": "l1", "SUMSQ": "sumsq", "MEAN": "mean"}[p.get("operation", "SUM")]
    coeff = p.get("coeff", 1.0)
    y = _node(b, "reduce", [x], layer, name if coeff == 1.0 else f"{name}/reduce",
              {"mode": mode, "axes": tuple(range(axis, rank)), "keepdims": False})
    return y if coeff == 1.0 else _node(b, "scale", [y], layer, name, {"scale": coeff})


def argmax(b, layer, name, inputs):
    p = _param_msg(layer, "argmax_param")
    if p.get("top_k", 1) != 1:
        raise UnsupportedError("ArgMax with top_k > 1")
    x = inputs[0]
    values = p.get("out_max_val", False)
    if p.get("axis") is not None:
        axis = _axis(p.get("axis"), len(_shape(b, x)), "ArgMax")
        if values:
            return _node(b, "reduce", [x], layer, name, {"mode": "max", "axes": (axis,)})
        idx = _node(b, "arg_reduce", [x], layer, f"{name}/index", {"axis": axis})
        return _node(b, "cast", [idx], layer, name, {"to": "float32"})
    flat = _node(b, "flatten", [x], layer, f"{name}/flatten") if len(_shape(b, x)) > 2 else x
    idx = _node(b, "arg_reduce", [flat], layer, f"{name}/index", {"axis": 1})
    idx = _node(b, "cast", [idx], layer, f"{name}/index_float", {"to": "float32"})
    out = idx
    if values:
        top = _node(b, "reduce", [flat], layer, f"{name}/value", {"mode": "max", "axes": (1,)})
        out = _node(b, "concat", [idx, top], layer, f"{name}/pairs", {"axis": 1})
    return _node(b, "reshape", [out], layer, name, {"shape": (1 + values, 1)})


def mvn(b, layer, name, inputs):
    p = _param_msg(layer, "mvn_param")
    rank = len(_shape(b, inputs[0]))
    first = 1 if p.get("across_channels", False) else 2
    if rank <= first:
        raise GraphrtError(f"MVN needs a bottom with axes after axis {first - 1}")
    return _node(b, "layer_norm", inputs, layer, name, {
        "axes": tuple(range(first, rank)), "eps": p.get("eps", 1e-9), "eps_inside_sqrt": False,
        "normalize_variance": p.get("normalize_variance", True)})


def embed(b, layer, name, inputs):
    p = _param_msg(layer, "embed_param")
    if p.get("num_output") is None or p.get("input_dim") is None:
        raise AttrError("Embed needs embed_param.num_output and embed_param.input_dim")
    rows, d = _int(p.get("input_dim"), "input_dim"), _int(p.get("num_output"), "num_output")
    w = b.param(layer, 0, "weight", (rows, d), p.get("weight_filler"))
    if not p.get("bias_term", True):
        return _node(b, "embedding", [inputs[0], w], layer, name)
    y = _node(b, "embedding", [inputs[0], w], layer, f"{name}/lookup")
    return _node(b, "add", [y, b.param(layer, 1, "bias", (d,), p.get("bias_filler"))], layer, name)


def deconvolution(b, layer, name, inputs):
    p = _param_msg(layer, "convolution_param")
    if p.get("num_output") is None:
        raise AttrError("Deconvolution needs convolution_param.num_output")
    kh, kw = _pair(p, "kernel_size", "kernel_h", "kernel_w", None)
    if kh is None:
        raise AttrError("Deconvolution needs kernel_size (or kernel_h and kernel_w)")
    stride, pads = _pair(p, "stride", "stride_h", "stride_w", 1), _pair(p, "pad", "pad_h", "pad_w", 0)
    dilation = _pair(p, "dilation", "dilation_h", "dilation_w", 1)
    groups, o = _int(p.get("group", 1), "group"), _int(p.get("num_output"), "num_output")
    c = _channels(b, inputs[0], name)
    if c % groups or o % groups or min(kh, kw, o, groups) <= 0:
        raise AttrError(f"Deconvolution: {c} input and {o} output channels, kernel {(kh, kw)} and "
                        f"group {groups} do not fit")
    params = [b.param(layer, 0, "weight", (c, o // groups, kh, kw), p.get("weight_filler"))]
    if p.get("bias_term", True):
        params.append(b.param(layer, 1, "bias", (o,), p.get("bias_filler")))
    return _node(b, "conv2d_transpose", inputs + params, layer, name,
                 {"stride": stride, "pads": pads, "dilation": dilation, "groups": groups})


def inner_product(b, layer, name, inputs):
    """InnerProduct: :func:`.layers.inner_product` on axis 1, else :func:`inner_product_general`."""
    p = _param_msg(layer, "inner_product_param")
    if p.get("axis", 1) == 1 and not p.get("transpose", False):
        return layers.inner_product(b, layer, name, inputs)
    out = p.get("num_output", b.classes)
    if out is None or _int(out, "num_output") <= 0:
        raise AttrError(f"InnerProduct needs a positive num_output, got {out}")
    return inner_product_general(b, layer, name, inputs, p, _int(out, "num_output"))


def inner_product_general(b, layer, name, inputs, p, out):
    """InnerProduct on ``axis`` != 1 or with ``transpose``: the trailing axes from ``axis`` are
    flattened and multiplied by the weight (out, in), or (in, out) when transposed."""
    x = inputs[0]
    xs = _shape(b, x)
    axis = _axis(p.get("axis", 1), len(xs), "InnerProduct")
    if axis == 0:
        raise UnsupportedError("InnerProduct over the batch axis (axis 0)")
    n_in = int(math.prod(xs[axis:]))
    if len(xs) != axis + 1:
        x = _node(b, "reshape", [x], layer, f"{name}/flatten", {"shape": tuple(xs[1:axis]) + (n_in,)})
    transpose = p.get("transpose", False)
    w = b.param(layer, 0, "weight", (n_in, out) if transpose else (out, n_in), p.get("weight_filler"))
    if not transpose:
        w = _node(b, "transpose", [w], layer, f"{name}/weight_t", {"perm": (1, 0)})
    y = _node(b, "matmul", [x, w], layer, name if not p.get("bias_term", True) else f"{name}/matmul")
    if not p.get("bias_term", True):
        return y
    return _node(b, "add", [y, b.param(layer, 1, "bias", (out,), p.get("bias_filler"))], layer, name)


def axpy(b, layer, name, inputs):
    """The SENet fork's Axpy: bottoms (a, x, y) -> a * x + y, a of shape (N, C, 1, 1)."""
    if len(inputs) != 3:
        raise GraphrtError(f"Axpy takes three bottoms (a, x, y), got {len(inputs)}")
    a, x, y = inputs
    ax = _node(b, "mul", [a, x], layer, f"{name}/ax")
    return _node(b, "add", [ax, y], layer, name)


def parameter(b, layer, name, inputs):
    shape = tuple(_param_msg(layer, "parameter_param").get("shape", Message()).getall("dim"))
    if not shape:
        raise AttrError("Parameter needs parameter_param.shape")
    return _node(b, "identity", [b.param(layer, 0, "value", shape, None)], layer, name)


CONVERTERS = {
    "ELU": unary("elu", "elu_param", {"alpha": ("alpha", 1.0)}), "AbsVal": unary("abs"),
    "BNLL": unary("softplus"), "Exp": exp, "Log": log, "Clip": clip,
    "Threshold": unary("threshold", "threshold_param", {"threshold": ("threshold", 0.0)}),
    "Swish": unary("swish", "swish_param", {"beta": ("beta", 1.0)}), "PReLU": prelu,
    "Scale": scale, "Bias": bias, "Eltwise": eltwise, "Reduction": reduction, "ArgMax": argmax,
    "MVN": mvn, "Embed": embed, "Deconvolution": deconvolution, "InnerProduct": inner_product,
    "Parameter": parameter,
    # fork layers: SENet's Axpy, MobileNet ports' ReLU6
    "Axpy": axpy, "ReLU6": lambda b, layer, name, inputs: _node(b, "clip", inputs, layer, name,
                                                                {"min": 0.0, "max": 6.0}),
}
MIN_BOTTOMS = {"Axpy": 3, "Parameter": 0}
