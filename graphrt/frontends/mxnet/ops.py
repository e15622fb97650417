"""The MXNet ops graphrt knows: each op's signature and its converter, in one place.

An op is one ``@_op(name, args, attrs, ...)`` block: the decorator records the op's input slots,
attribute names, parameter roles, auxiliary states and output count as an :class:`OpSpec` in
:data:`OPS`; the function under it turns one node into graphrt nodes, reading the node's
attributes (MXNet's defaults applied) through the converter ``c`` (see
:class:`~graphrt.frontends.mxnet.convert.Converter`). The symbol API reads the signatures to build
and serialize nodes; conversion calls ``spec.convert(c, node)``.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from ...ir.errors import AttrError, GraphError, ShapeError, UnsupportedError
from .io import SymbolNode
from .reshape import mxnet_reshape


from .opspec import ALIASES, OPS, REQUIRED, OpSpec, _op, _truthy, aux_flags, op_spec  # noqa: F401


# ---- helpers shared by converters -------------------------------------------------------------
def _pads(pad: tuple) -> tuple:
    """MXNet's symmetric (ph, pw) as graphrt's (top, bottom, left, right)."""
    return (pad[0], pad[0], pad[1], pad[1])


def _weighted(c: "Converter", x: str, weight_shape: tuple, out_channels: int,
              no_bias: bool) -> list[str]:
    """A weighted op's inputs: ``x``, the weight (input 1) and, unless ``no_bias``, the bias."""
    inputs = [x, c.param(1, "weight", weight_shape)]
    if not no_bias:
        inputs.append(c.param(2, "bias", (out_channels,)))
    return inputs


def _flatten_batch(c: "Converter", sn: SymbolNode, x: str) -> str:
    return c.add("flatten", [x], {"axis": 1}, name=f"{sn.name}_flatten")


# ---- converters -------------------------------------------------------------------------------
CONV_ATTRS = ("kernel stride dilate pad num_filter num_group no_bias workspace cudnn_tune cudnn_off "
              "layout")


@_op("Convolution", ("data", "weight", "bias"), CONV_ATTRS, roles={"weight": "weight",
                                                                  "bias": "bias"})
def _convolution(c: "Converter", sn: SymbolNode):
    kernel = c.spatial("kernel", REQUIRED)
    stride = c.spatial("stride", (1, 1))
    dilate = c.spatial("dilate", (1, 1))
    pad = c.spatial("pad", (0, 0), allow_zero=True)
    num_filter = c.positive("num_filter", c.attr("num_filter", "int"))
    groups = c.positive("num_group", c.attr("num_group", "int", 1))
    no_bias = c.attr("no_bias", "bool", False)
    c.check_layout()
    x = c.data(0)
    xs = c.spec(x)
    if len(xs.shape) != 4:
        raise ShapeError(f"Convolution with a 2-D kernel expects a 4-D NCHW input, got {xs}",
                         **c.where())
    channels = xs.shape[1]
    if channels % groups or num_filter % groups:
        raise ShapeError(f"num_group={groups} must divide the {channels} input channels and "
                         f"num_filter={num_filter}", **c.where())
    inputs = _weighted(c, x, (num_filter, channels // groups) + kernel, num_filter, no_bias)
    return c.add("conv2d", inputs, {"stride": stride, "dilation": dilate, "groups": groups,
                                    "pads": _pads(pad)})


@_op("Activation", ("data",), "act_type")
def _activation(c: "Converter", sn: SymbolNode):
    act = c.choice("act_type", REQUIRED, ("relu", "sigmoid", "tanh", "softrelu", "softsign",
                                          "log_sigmoid", "mish"),
                   ("relu", "sigmoid", "tanh", "softrelu", "softsign"))
    return c.add({"softrelu": "softplus"}.get(act, act), [c.data(0)])


@_op("LeakyReLU", ("data", "gamma"), "act_type slope lower_bound upper_bound",
     roles={"gamma": "gamma"}, outputs=lambda a: 2 if a.get("act_type") == "rrelu" else 1)
def _leaky_relu(c: "Converter", sn: SymbolNode):
    act = c.choice("act_type", "leaky", ("leaky", "prelu", "rrelu", "elu", "selu", "gelu"),
                   ("leaky", "prelu", "elu", "selu", "gelu"))
    slope = c.attr("slope", "float", 0.25)
    x = c.data(0)
    if act == "prelu":  # a learned slope per channel (axis 1)
        channels = c.spec(x).shape[1]
        gamma = c.param(1, "gamma", (channels,))
        rank = len(c.spec(x).shape)
        if rank > 2:
            gamma = c.add("reshape", [gamma], {"shape": (1,) * (rank - 2)},
                          name=f"{sn.name}_gamma_broadcast")
        return c.add("prelu", [x, gamma])
    if act in ("elu", "selu", "gelu"):
        return c.add(act, [x], {"alpha": slope} if act == "elu" else {})
    return c.add("relu", [x], {"negative_slope": slope})


def _pool_outputs(attrs):
    return 2 if attrs.get("pool_type", "max").strip() == "max" else 1


@_op("Pooling", ("data",), "kernel pool_type global_pool cudnn_off pooling_convention stride pad "
     "p_value count_include_pad layout", outputs=_pool_outputs)
def _pooling(c: "Converter", sn: SymbolNode):
    pool_type = c.choice("pool_type", "max", ("max", "avg", "sum", "lp"), ("max", "avg"))
    global_pool = c.attr("global_pool", "bool", False)
    convention = c.choice("pooling_convention", "valid", ("valid", "full", "same"),
                          ("valid", "full"))
    kernel = c.spatial("kernel", (1, 1) if global_pool else REQUIRED)
    stride = c.spatial("stride", (1, 1))
    pad = c.spatial("pad", (0, 0), allow_zero=True)
    include_pad = c.attr("count_include_pad", "bool", True)
    c.check_layout()
    x = c.data(0)
    attrs = {"kernel": kernel, "stride": stride, "pads": _pads(pad),
             "ceil_mode": convention == "full", "global_pool": global_pool}
    if pool_type == "avg":
        attrs["count_include_pad"] = include_pad
    out = c.add("max_pool" if pool_type == "max" else "avg_pool", [x], attrs)
    xs, ys = c.spec(x), c.spec(out)
    if not global_pool and len(xs.shape) == 4:
        # MXNet's own output size; graphrt drops a last ceil-mode window that starts in the padding
        rnd = math.ceil if convention == "full" else math.floor
        want = tuple(1 + int(rnd((xs.shape[2 + d] + 2 * pad[d] - kernel[d]) / stride[d]))
                     for d in range(2))
        if tuple(ys.shape[2:]) != want:
            raise UnsupportedError(f"MXNet gives this pooling an output of {want[0]}x{want[1]} "
                                   f"(its last window starts in the padding); graphrt computes "
                                   f"{ys.shape[2]}x{ys.shape[3]}", **c.where())
    return out


@_op("LRN", ("data",), "alpha beta knorm nsize", outputs=lambda a: 2)
def _lrn(c: "Converter", sn: SymbolNode):
    size = c.positive("nsize", c.attr("nsize", "int"))
    return c.add("lrn", [c.data(0)], {"size": size, "alpha": c.attr("alpha", "float", 1e-4),
                                      "beta": c.attr("beta", "float", 0.75),
                                      "k": c.attr("knorm", "float", 2.0)})


@_op("Flatten", ("data",), "")
def _flatten(c: "Converter", sn: SymbolNode):
    x = c.data(0)
    if len(c.spec(x).shape) < 2:
        raise ShapeError(f"Flatten expects a batched input, got {c.spec(x)}", **c.where())
    return c.add("flatten", [x], {"axis": 1})


@_op("FullyConnected", ("data", "weight", "bias"), "num_hidden no_bias flatten",
     roles={"weight": "weight", "bias": "bias"})
def _fully_connected(c: "Converter", sn: SymbolNode):
    hidden = c.positive("num_hidden", c.attr("num_hidden", "int"))
    no_bias = c.attr("no_bias", "bool", False)
    flatten = c.attr("flatten", "bool", True)
    x = c.data(0)
    xs = c.spec(x)
    if len(xs.shape) > 2:
        if not flatten:
            raise UnsupportedError(f"FullyConnected(flatten=False) over a {len(xs.shape)}-D input "
                                   f"{xs} (a dense over the last axis) is not supported",
                                   **c.where())
        x = _flatten_batch(c, sn, x)
        xs = c.spec(x)
    if len(xs.shape) != 2:
        raise ShapeError(f"FullyConnected expects a batched input, got {xs}", **c.where())
    return c.add("dense", _weighted(c, x, (hidden, xs.shape[1]), hidden, no_bias))


@_op("Dropout", ("data",), "p mode axes cudnn_off", outputs=lambda a: 2)
def _dropout(c: "Converter", sn: SymbolNode):
    p = c.attr("p", "float", 0.5)
    c.choice("mode", "training", ("training", "always"), ("training",))
    if not 0.0 <= p < 1.0:
        raise AttrError(f"dropout p must be in [0, 1), got {p}", **c.where())
    return c.add("dropout", [c.data(0)], {"rate": p})


@_op("BatchNorm", ("data", "gamma", "beta", "moving_mean", "moving_var"),
     "eps momentum fix_gamma use_global_stats output_mean_var axis cudnn_off min_calib_range "
     "max_calib_range", roles={"gamma": "gamma", "beta": "beta", "moving_mean": "moving_mean",
                               "moving_var": "moving_var"},
     aux=("moving_mean", "moving_var"), outputs=lambda a: 3)
def _batch_norm(c: "Converter", sn: SymbolNode):
    eps = c.attr("eps", "float", 1e-3)
    if not eps > 0:
        raise AttrError(f"eps must be positive, got {eps}", **c.where())
    fix_gamma = c.attr("fix_gamma", "bool", True)
    axis = c.attr("axis", "int", 1)
    x = c.data(0)
    xs = c.spec(x)
    if axis not in (1, 1 - len(xs.shape)):
        raise UnsupportedError(f"BatchNorm over axis {axis} is not supported (only the channel "
                               "axis 1)", **c.where())
    if len(xs.shape) < 2:
        raise ShapeError(f"BatchNorm expects (N, C, ...) input, got {xs}", **c.where())
    ch = (xs.shape[1],)
    gamma = c.param(1, "gamma", ch)
    if fix_gamma:  # MXNet ignores the stored gamma: it is 1
        c.graph.params[gamma] = np.ones(ch, np.float32)
        c.graph.param_info[gamma].trainable = False
        c.graph.param_info[gamma].lr_mult = 0.0
    beta = c.param(2, "beta", ch)
    mean = c.param(3, "moving_mean", ch)
    var = c.param(4, "moving_var", ch)
    momentum = c.attr("momentum", "float", 0.9)  # MXNet keeps `momentum` of the old average
    return c.add("batch_norm", [x, mean, var, gamma, beta],
                 {"eps": eps, "momentum": 1 - momentum, "unbiased": False})


@_op("Concat", None, "dim num_args")
def _concat(c: "Converter", sn: SymbolNode):
    dim = c.attr("dim", "int", 1)
    n = c.attr("num_args", "int", len(sn.inputs))
    if n != len(sn.inputs):
        raise GraphError(f"num_args={n} but the node has {len(sn.inputs)} inputs", **c.where())
    inputs = [c.data(i) for i in range(len(sn.inputs))]
    rank = len(c.spec(inputs[0]).shape)
    return c.add("concat", inputs, {"axis": dim + rank if dim < 0 else dim})


@_op("SoftmaxOutput", ("data", "label"), "grad_scale ignore_label multi_output use_ignore "
     "preserve_shape normalization out_grad smooth_alpha", roles={"label": "label"})
def _softmax_output(c: "Converter", sn: SymbolNode):
    multi = c.attr("multi_output", "bool", False)
    preserve = c.attr("preserve_shape", "bool", False)
    x = c.data(0)
    shape = c.spec(x).shape
    if len(shape) <= 2 or multi:
        return c.add("softmax", [x], {"axis": 1})
    if preserve:
        return c.add("softmax", [x], {"axis": len(shape) - 1})
    flat = _flatten_batch(c, sn, x)
    soft = c.add("softmax", [flat], {"axis": 1}, name=f"{sn.name}_softmax")
    return c.add("reshape", [soft], {"shape": shape[1:]})


@_op("softmax", ("data", "length"), "axis temperature dtype use_length",
     roles={"length": "label"})
def _softmax(c: "Converter", sn: SymbolNode):
    if c.attr("use_length", "bool", False):
        raise UnsupportedError("softmax with use_length is not supported", **c.where())
    x = c.data(0)
    rank = len(c.spec(x).shape)
    axis = c.attr("axis", "int", -1)
    if not -rank <= axis < rank or axis % rank == 0:
        raise ShapeError(f"softmax axis {axis} is not a non-batch axis of {c.spec(x)}",
                         **c.where())
    temperature = c.attr("temperature", "float", 1.0)
    if temperature != 1.0:
        if not temperature > 0:
            raise AttrError(f"temperature must be positive, got {temperature}", **c.where())
        x = c.add("scale", [x], {"scale": 1.0 / temperature}, name=f"{sn.name}_temperature")
    return c.add("softmax", [x], {"axis": axis % rank})


def _elemwise_op(mx_name: str, op: str, attrs: dict | None = None):
    """Register ``mx_name`` as graphrt ``op`` over two inputs of one shape."""
    @_op(mx_name, ("lhs", "rhs"), "")
    def convert(c: "Converter", sn: SymbolNode):
        a, b = c.data(0), c.data(1)
        if c.spec(a).shape != c.spec(b).shape:
            raise ShapeError(f"{sn.op} needs inputs of one shape, got {c.spec(a)} and "
                             f"{c.spec(b)}", **c.where())
        return c.add(op, [a, b], dict(attrs or {}))
    return convert


_elemwise_op("elemwise_add", "add")
_elemwise_op("elemwise_sub", "add", {"coeffs": (1.0, -1.0)})
_elemwise_op("elemwise_mul", "mul")


def _scalar_op(mx_name: str, make: Callable[[float], dict]):
    """Register ``mx_name`` as a graphrt ``scale`` whose attributes ``make(scalar)`` gives."""
    @_op(mx_name, ("data",), "scalar is_int")
    def convert(c: "Converter", sn: SymbolNode):
        s = c.attr("scalar", "float")
        if mx_name == "_div_scalar" and s == 0:
            raise AttrError("division by a zero scalar", **c.where())
        return c.add("scale", [c.data(0)], make(s))
    return convert


_scalar_op("_plus_scalar", lambda s: {"shift": s})
_scalar_op("_minus_scalar", lambda s: {"shift": -s})
_scalar_op("_rminus_scalar", lambda s: {"scale": -1.0, "shift": s})
_scalar_op("_mul_scalar", lambda s: {"scale": s})
_scalar_op("_div_scalar", lambda s: {"scale": 1.0 / s})


@_op("Reshape", ("data",), "shape reverse target_shape keep_highest")
def _reshape(c: "Converter", sn: SymbolNode):
    if c.attr("target_shape", "tuple", ()) not in ((), None):
        raise UnsupportedError("Reshape's deprecated target_shape is not supported; use shape",
                               **c.where())
    target = c.attr("shape", "tuple")
    reverse = c.attr("reverse", "bool", False)
    x = c.data(0)
    src = c.spec(x).shape
    try:
        out = mxnet_reshape(src, tuple(target), reverse)
    except ValueError as exc:
        raise ShapeError(f"cannot reshape {c.spec(x)} to {tuple(target)}: {exc}",
                         **c.where()) from None
    if out[:1] != (None,):
        raise UnsupportedError(f"Reshape to {tuple(target)} moves the batch dimension of "
                               f"{c.spec(x)}", **c.where())
    return c.add("reshape", [x], {"shape": out[1:]})


from . import ops_more  # noqa: E402,F401  (registers the remaining ops into the same table)
