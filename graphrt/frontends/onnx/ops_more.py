"""ONNX converters of the ops added with issue 15, computed at run time: activations (Clip, Elu,
Selu, HardSigmoid, HardSwish, Softplus, Softsign, Erf, Gelu, Abs, Exp, Log, PRelu), arithmetic (Max,
Min, Where, Equal, Greater, Less, GreaterOrEqual, LessOrEqual, Cast, CastLike; Sub, Div and Pow of two run-time tensors are in :mod:`.ops`), reductions
(Reduce*, ArgMax, ArgMin), LayerNormalization, Resize/Upsample, ConvTranspose, Expand and Tile.

Converters have the signature of :mod:`.ops`; constant operands become parameters (``cv.tensor``).
"""
from __future__ import annotations

import math

import numpy as np

from ...ir.errors import AttrError, ShapeError, UnsupportedError
from .converters import ConverterTable, need
from .fold import BatchError, Const, np_dtype
from .ops import _back, _pads4, _unsupported_rank

CONVERTERS = ConverterTable()
converts = CONVERTERS.converts


def _scalar_input(cv, i, what, default):
    c = cv.const(i, what) if len(cv.node.input) > i else None
    return default if c is None else float(np.asarray(c.value).reshape(-1)[0])


# ---- activations --------------------------------------------------------------------------------
@converts("Clip")
def clip(cv, attrs, ins):
    if cv.opset >= 11:
        lo, hi = _scalar_input(cv, 1, "min", -math.inf), _scalar_input(cv, 2, "max", math.inf)
    else:
        lo, hi = attrs.get("min", -3.4028234663852886e38), attrs.get("max", 3.4028234663852886e38)
    return [cv.emit("clip", [cv.tensor(0)], {"min": lo, "max": hi})]


def _activation(op, **fixed):
    """An activation whose attributes come from the node's (``name: (onnx name, default)``)."""
    def convert(cv, attrs, ins):
        a = {k: attrs.get(src, default) for k, (src, default) in fixed.items()}
        return [cv.emit(op, [cv.tensor(0)], a)]
    return convert


CONVERTERS.update({
    "Elu": _activation("elu", alpha=("alpha", 1.0)),
    "Selu": _activation("selu", alpha=("alpha", 1.67326319217681884765625),
                        gamma=("gamma", 1.05070102214813232421875)),
    "HardSigmoid": _activation("hard_sigmoid", alpha=("alpha", 0.2), beta=("beta", 0.5)),
    "HardSwish": _activation("hard_swish"), "Softplus": _activation("softplus"),
    "Softsign": _activation("softsign"), "Erf": _activation("erf"), "Abs": _activation("abs"),
    "Exp": _activation("exp"), "Log": _activation("log"),
    "Gelu": _activation("gelu", approximate=("approximate", "none")),
})


@converts("PRelu")
def prelu(cv, attrs, ins):
    """A (C,) slope of an (N, C, ...) input is per channel (PRelu before opset 7, and PyTorch's
    exports of that era) where numpy's broadcasting would not apply."""
    x, slope = cv.tensor(0), cv.tensor(1)
    xs, ss = cv.spec(x).shape, cv.spec(slope).shape
    if len(ss) == 1 and len(xs) > 2 and ss[0] == xs[1] and ss[0] not in (1, xs[-1]):
        slope = cv.add("reshape", [slope], {"shape": (1,) * (len(xs) - 2)}, suffix="per_channel")
    return [cv.emit("prelu", [x, slope])]


# ---- arithmetic ---------------------------------------------------------------------------------
def _binary(op):
    def convert(cv, attrs, ins):
        return [cv.emit(op, [cv.tensor(i) for i in range(len(ins))])]
    return convert


CONVERTERS.update({"Max": _binary("maximum"), "Min": _binary("minimum")})


@converts("Where")
def where(cv, attrs, ins):
    return [cv.emit("where", [cv.tensor(0, any_dtype=True), cv.tensor(1), cv.tensor(2)])]


COMPARISONS = {"Equal": "equal", "Greater": "greater", "Less": "less",
               "GreaterOrEqual": "greater_equal", "LessOrEqual": "less_equal"}


@converts(*COMPARISONS)
def compare(cv, attrs, ins):
    return [cv.emit(COMPARISONS[cv.op_type], [cv.tensor(0, any_dtype=True),
                                              cv.tensor(1, any_dtype=True)])]


@converts("Cast")
def cast(cv, attrs, ins):
    return [_cast_to(cv, cv.tensor(0, any_dtype=True), np_dtype(need(attrs, "to")))]


def _cast_to(cv, x: str, to) -> str:
    src = cv.spec(x).dtype
    if str(to) == src:
        return x
    if str(to).startswith(("float8", "float4")):  # ONNX saturates (or not) by its own rules
        raise UnsupportedError(f"Cast from {src} to {to} (graphrt casts to float16/32/64, "
                               "bfloat16, integer and bool types)")
    return cv.emit("cast", [x], {"to": str(to)})


@converts("CastLike")
def cast_like(cv, attrs, ins):
    """Cast to the dtype of the second input (ONNX function bodies write constants so)."""
    x = cv.tensor(0, any_dtype=True)
    like = ins[1]
    to = like.value.dtype if isinstance(like, Const) else np.dtype(cv.spec(like).dtype)
    return [_cast_to(cv, x, to)]


# ---- reductions ---------------------------------------------------------------------------------
REDUCE_MODES = {"ReduceSum": "sum", "ReduceMean": "mean", "ReduceMax": "max", "ReduceMin": "min",
                "ReduceProd": "prod", "ReduceL1": "l1", "ReduceL2": "l2",
                "ReduceSumSquare": "sumsq", "ReduceLogSum": "logsum",
                "ReduceLogSumExp": "logsumexp"}


@converts(*REDUCE_MODES)
def reduce(cv, attrs, ins):
    x = cv.tensor(0)
    axes_from_input = cv.opset >= 18 or (cv.op_type == "ReduceSum" and cv.opset >= 13)
    if axes_from_input:
        c = cv.const(1, "axes") if len(ins) > 1 else None
        axes = () if c is None else tuple(int(a) for a in np.asarray(c.value).reshape(-1))
    else:
        axes = tuple(attrs.get("axes", ()))
    if not axes and attrs.get("noop_with_empty_axes", 0):
        return [x]
    keep = bool(attrs.get("keepdims", 1))
    return [cv.emit("reduce", [x], {"mode": REDUCE_MODES[cv.op_type], "axes": axes,
                                    "keepdims": keep})]


@converts("ArgMax", "ArgMin")
def arg_reduce(cv, attrs, ins):
    return [cv.emit("arg_reduce", [cv.tensor(0)], {
        "mode": "max" if cv.op_type == "ArgMax" else "min", "axis": attrs.get("axis", 0),
        "keepdims": bool(attrs.get("keepdims", 1)),
        "select_last_index": bool(attrs.get("select_last_index", 0))})]


@converts("LayerNormalization")
def layer_norm(cv, attrs, ins):
    x = cv.tensor(0)
    shape = cv.spec(x).shape
    rank = len(shape)
    axis = attrs.get("axis", -1) % rank
    if shape[0] is None and axis == 0:
        raise BatchError("LayerNormalization over the batch axis")
    normalized = tuple(shape[axis:])
    params = []
    for i, what in ((1, "Scale"), (2, "B")):
        v = cv.input(i) if len(ins) > i else None
        if v is None:
            continue
        if isinstance(v, Const) and v.value.shape != normalized:  # broadcastable: expand at load
            v = cv.param(np.ascontiguousarray(np.broadcast_to(v.value, normalized)),
                         f"{cv.node.input[i]}/expanded")
        else:
            v = cv.tensor(i, batched=False)
        if cv.spec(v).shape != normalized:
            raise ShapeError(f"LayerNormalization {what} {cv.spec(v)} is not {normalized}")
        params.append(v)
    if len(params) == 1 and len(ins) > 2 and ins[2] is not None:
        raise UnsupportedError("LayerNormalization with a bias but no scale")
    axes, eps = tuple(range(axis, rank)), attrs.get("epsilon", 1e-5)
    y = cv.emit("layer_norm", [x, *params], {"axes": axes, "eps": eps})
    if len([t for t in cv.node.output if t]) == 1:
        return [y]
    # the statistics outputs: Mean and InvStdDev = (var + eps) ** -0.5, over the same axes
    mean = cv.emit("reduce", [x], {"mode": "mean", "axes": axes}, index=1)
    centered = cv.add("sub", [x, mean], suffix="centered")
    var = cv.add("reduce", [cv.add("mul", [centered, centered], suffix="square")],
                 {"mode": "mean", "axes": axes}, suffix="var")
    inv = cv.add("scale", [var], {"shift": eps, "power": -0.5}, out=cv.node.output[2]) \
        if len(cv.node.output) > 2 and cv.node.output[2] else None
    return [y, mean] + ([inv] if inv else [])


# ---- resize -------------------------------------------------------------------------------------
def _resize_inputs(cv, attrs, ins):
    """(scales or None, sizes or None) of Resize/Upsample at this opset."""
    if cv.op_type == "Upsample":
        if cv.opset < 9 or len(ins) < 2:
            return np.asarray(need(attrs, "scales"), float), None
        return np.asarray(cv.const(1, "scales").value, float), None
    if cv.opset < 11:
        return np.asarray(cv.const(1, "scales").value, float), None
    scales = cv.const(2, "scales") if len(ins) > 2 else None
    sizes = cv.const(3, "sizes") if len(ins) > 3 else None
    if scales is not None and scales.value.size:
        return np.asarray(scales.value, float), None
    if sizes is None:
        raise AttrError("Resize needs scales or sizes")
    return None, np.asarray(sizes.value, np.int64)


def _resize_sizes(attrs, shape, scales, sizes):
    """(spatial sizes, spatial scales or ()) from ONNX's scales/sizes (and axes, aspect policy);
    the batch and channel axes must keep their size."""
    rank = len(shape)
    axes = [a % rank for a in attrs.get("axes", range(rank))]
    if shape[0] is None:  # the symbolic batch: its size or scale is the model's, kept
        values = sizes if sizes is not None else scales
        if 0 in axes and sizes is None and values[axes.index(0)] != 1.0:
            raise BatchError("Resize scales the batch axis")
        keep = [i for i, a in enumerate(axes) if a != 0]
        axes = [axes[i] for i in keep]
        if sizes is not None:
            sizes = sizes[keep]
        else:
            scales = scales[keep]
    full_scales, full_sizes = [1.0] * rank, list(shape)
    if sizes is not None:
        policy = attrs.get("keep_aspect_ratio_policy", "stretch")
        wanted = dict(zip(axes, sizes.tolist()))
        if policy != "stretch":
            pick = min if policy == "not_larger" else max
            s = pick(wanted[a] / shape[a] for a in axes)
            wanted = {a: int(round(s * shape[a])) for a in axes}
        for a in axes:
            full_sizes[a] = wanted[a]
            full_scales[a] = wanted[a] / shape[a]
        explicit = ()
    else:
        for a, s in zip(axes, scales.tolist()):
            full_scales[a] = s
            full_sizes[a] = int(math.floor(shape[a] * s))
        explicit = tuple(full_scales[2:])
    if any(full_sizes[a] != shape[a] for a in range(min(2, rank))) or \
            any(s != 1.0 for s in full_scales[:2]):
        raise UnsupportedError(f"Resize of the batch or channel axes (scales {full_scales})")
    return tuple(full_sizes[2:]), explicit


@converts("Resize", "Upsample")
def resize(cv, attrs, ins):
    x = cv.tensor(0)
    shape = cv.spec(x).shape
    if attrs.get("coordinate_transformation_mode") == "tf_crop_and_resize":
        raise UnsupportedError("Resize with coordinate_transformation_mode tf_crop_and_resize")
    scales, sizes = _resize_inputs(cv, attrs, ins)
    spatial, explicit = _resize_sizes(attrs, shape, scales, sizes)
    mode = attrs.get("mode", "nearest")
    mode = {"bilinear": "linear", "trilinear": "linear"}.get(mode, mode)
    old = cv.op_type == "Upsample" or cv.opset < 11
    ctm = "asymmetric" if old else attrs.get("coordinate_transformation_mode", "half_pixel")
    if attrs.get("antialias", 0) and any(o < i for o, i in zip(spatial, shape[2:])):
        raise UnsupportedError("Resize with antialias when downsampling")
    return [cv.emit("resize", [x], {
        "sizes": spatial, "scales": explicit, "mode": mode, "coordinate_transformation_mode": ctm,
        "nearest_mode": "floor" if old else attrs.get("nearest_mode", "round_prefer_floor"),
        "cubic_coeff_a": attrs.get("cubic_coeff_a", -0.75),
        "exclude_outside": bool(attrs.get("exclude_outside", 0))})]


# ---- transposed convolution ---------------------------------------------------------------------
def _transpose_pads(attrs, spatial, kernel, strides, dilations, extra):
    """[(begin, end)] and output_padding per axis from pads / auto_pad / output_shape."""
    nd = len(spatial)
    out_shape = attrs.get("output_shape")
    auto = attrs.get("auto_pad", "NOTSET") or "NOTSET"
    if out_shape is None and auto in ("NOTSET", "VALID"):
        p = list(attrs.get("pads", (0,) * (2 * nd))) if auto == "NOTSET" else [0] * (2 * nd)
        return list(zip(p[:nd], p[nd:])), list(extra)
    out_shape = list(out_shape)[-nd:] if out_shape is not None else [n * s for n, s in
                                                                     zip(spatial, strides)]
    pads, extras = [], []
    for n, k, s, d, e, o in zip(spatial, kernel, strides, dilations, extra, out_shape):
        total = s * (n - 1) + e + (k - 1) * d + 1 - o
        grow = max(0, -total)
        total = max(0, total)
        lo = total // 2 if auto == "SAME_UPPER" else total - total // 2
        pads.append((lo, total - lo))
        extras.append(e + grow)
    return pads, extras


@converts("ConvTranspose")
def conv_transpose(cv, attrs, ins):
    x, w = cv.tensor(0), cv.tensor(1, batched=False)
    xs, ws = cv.spec(x), cv.spec(w)
    nd = len(xs.shape) - 2
    if nd not in (1, 2) or len(ws.shape) != len(xs.shape):
        raise _unsupported_rank(cv, xs, "2-D (NCHW) and 1-D (NCL) transposed")
    kernel = tuple(attrs.get("kernel_shape", ws.shape[2:]))
    strides = tuple(attrs.get("strides", (1,) * nd))
    dilations = tuple(attrs.get("dilations", (1,) * nd))
    pads, extra = _transpose_pads(attrs, xs.shape[2:], kernel, strides, dilations,
                                  attrs.get("output_padding", (0,) * nd))
    if nd == 1:
        x = cv.reshape(x, list(xs.shape) + [1], final=False)
        w = cv.reshape(w, list(ws.shape) + [1], final=False)
        strides, dilations, pads, extra = strides + (1,), dilations + (1,), pads + [(0, 0)], extra + [0]
    inputs = [x, w] + ([cv.tensor(2, batched=False)] if len(ins) > 2 and ins[2] is not None else [])
    a = {"stride": strides, "dilation": dilations, "groups": attrs.get("group", 1),
         "pads": _pads4(pads), "output_padding": tuple(extra)}
    if nd == 2:
        return [cv.emit("conv2d_transpose", inputs, a)]
    return [_back(cv, cv.add("conv2d_transpose", inputs, a, suffix="deconv"), xs)]


# ---- expand, tile --------------------------------------------------------------------------------
@converts("Expand")
def expand(cv, attrs, ins):
    x = cv.tensor(0, any_dtype=True)
    target = cv.const(1, "Expand shape")
    dims = [-1 if b else int(d) for d, b in zip(target.value.tolist(), target.mask().tolist())]
    return [cv.emit("expand", [x], {"shape": dims})]


@converts("Tile")
def tile(cv, attrs, ins):
    x = cv.tensor(0, any_dtype=True)
    reps = [int(r) for r in cv.const(1, "Tile repeats").value]
    if cv.spec(x).batched and reps[0] != 1:
        raise BatchError(f"Tile {reps} repeats the batch axis")
    return [cv.emit("tile", [x], {"repeats": reps})]

