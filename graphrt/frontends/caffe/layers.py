"""Caffe layer types -> graphrt ops, one converter per layer type, and Caffe's weight fillers.

Each converter takes the net builder, the layer message, its name and its input tensors, adds nodes
and parameters to ``builder.graph`` and returns the output tensor(s), one per ``top``.
"""
from __future__ import annotations

import logging
import math

import numpy as np

from ...ir.errors import AttrError, GraphrtError, UnsupportedError, WeightError
from ..initializers import normal32, uniform32
from .caffemodel import V1_LAYER_TYPES
from .prototxt import Message
from .schema import V1_LAYER_TYPE_NUMBERS

log = logging.getLogger(__name__)

# legacy V1 `layers { type: CONVOLUTION }` enum names -> current type strings (Caffe's upgrade)
V1_TYPES = {name: V1_LAYER_TYPES[num] for name, num in V1_LAYER_TYPE_NUMBERS.items() if num}

# BVLC layer types graphrt does not convert, and why
UNSUPPORTED = {
    "RNN": "recurrent layers are not supported", "LSTM": "recurrent layers are not supported",
    "LSTMUnit": "recurrent layers are not supported",
    "Recurrent": "recurrent layers are not supported",
    "Python": "a Python layer runs user code, which graphrt does not execute (model files are "
              "data)",
    "SPP": "spatial pyramid pooling is not supported", "Im2col": "Im2col is not supported",
    "Filter": "Filter (data-dependent batch size) is not supported",
    "BatchReindex": "BatchReindex (data-dependent batch order) is not supported",
    "HDF5Output": "HDF5Output writes files; graphrt does not",
    "EuclideanLoss": "only the SoftmaxWithLoss loss layer is supported",
    "SigmoidCrossEntropyLoss": "only the SoftmaxWithLoss loss layer is supported",
    "HingeLoss": "only the SoftmaxWithLoss loss layer is supported",
    "InfogainLoss": "only the SoftmaxWithLoss loss layer is supported",
    "MultinomialLogisticLoss": "only the SoftmaxWithLoss loss layer is supported",
    "ContrastiveLoss": "only the SoftmaxWithLoss loss layer is supported",
}


def layer_type(layer: Message) -> str:
    t = layer.get("type")
    if t is None:
        raise GraphrtError(f"layer {layer.get('name')!r} has no type", line=layer.line)
    return V1_TYPES.get(t, t) if isinstance(t, str) else str(t)


# ---- fillers ------------------------------------------------------------------------------------
def fill(filler: Message | None, shape: tuple, rng: np.random.Generator, default: str) -> np.ndarray:
    """Caffe's FillerParameter: constant, uniform, gaussian, xavier and msra (fan_in by default)."""
    if filler is None and default == "constant_one":
        return np.ones(shape, np.float32)
    kind = filler.get("type", "constant") if filler is not None else default
    f = filler if filler is not None else Message()
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
    fan_out = shape[0] * (int(np.prod(shape[2:])) if len(shape) > 2 else 1)
    norm = {"FAN_IN": fan_in, "FAN_OUT": fan_out, "AVERAGE": (fan_in + fan_out) / 2}
    n = max(1, norm.get(f.get("variance_norm", "FAN_IN"), fan_in))  # 1 for an empty blob
    try:
        if kind == "constant":
            out = np.full(shape, _number(f.get("value", 0.0), "value"), np.float32)
        elif kind == "uniform":
            out = uniform32(rng, _number(f.get("min", 0.0), "min"), _number(f.get("max", 1.0), "max"),
                            shape)
        elif kind == "gaussian":
            out = normal32(rng, _number(f.get("mean", 0.0), "mean"), _number(f.get("std", 1.0), "std"),
                           shape)
        elif kind == "xavier":
            scale = math.sqrt(3.0 / n)
            out = uniform32(rng, -scale, scale, shape)
        elif kind == "msra":
            out = normal32(rng, 0.0, math.sqrt(2.0 / n), shape)
        else:
            raise UnsupportedError(f"filler type {kind!r} is not supported (constant, uniform, "
                                   "gaussian, xavier, msra)")
    except (ValueError, OverflowError) as err:  # numpy: std < 0, an infinite range
        raise AttrError(f"{kind} filler: {err}") from None
    return out


def _number(value, what: str) -> float:
    """A numeric prototxt field (NaN and infinities allowed: they give NaN/Inf weights)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise AttrError(f"{what} must be a number, got {value!r}")
    return float(value)


def _int(value, what: str) -> int:
    """An integer prototxt field; NaN, infinite, fractional, boolean or enum values are AttrErrors."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            isinstance(value, float) and not value.is_integer()):
        raise AttrError(f"{what} must be an integer, got {value!r}")
    return int(value)


def adapt_blobs(layer: str, params: list[str], blobs: list, file: str) -> list:
    """BatchNorm stores (mean, var, scale_factor): divide the factor out as Caffe does."""
    if params and params[0].endswith("_mean") and len(blobs) == 3:
        factor = float(blobs[2].reshape(-1)[0]) if blobs[2].size else 0.0
        factor = 0.0 if factor == 0 else 1.0 / factor
        return [blobs[0] * factor, blobs[1] * factor]
    return blobs


# ---- helpers ------------------------------------------------------------------------------------
def _pair(p: Message, name: str, h: str, w: str, default):
    """Caffe's `kernel_size` (repeated, 1 or 2 values) or the explicit `_h`/`_w` fields."""
    if p.get(h) is not None or p.get(w) is not None:
        hv, wv = p.get(h, default), p.get(w, default)
        return (None if hv is None else _uint32(hv, h)), (None if wv is None else _uint32(wv, w))
    vals = p.getall(name)
    if not vals:
        return default, default
    if len(vals) > 2:
        raise GraphrtError(f"{name} has {len(vals)} values; 2-D layers take 1 or 2")
    return (_uint32(vals[0], name), _uint32(vals[-1], name))


def _uint32(value, what: str) -> int:
    """Kernel sizes, strides, pads and dilations are uint32 fields in caffe.proto."""
    value = _int(value, what)
    if not 0 <= value < 2**32:
        raise AttrError(f"{what} must be in [0, 2**32), got {value}")
    return value


def _node(b, op, inputs, layer, name, attrs=None):
    out = name if name not in b.graph.specs else b.graph.unique_name(name)
    return b.graph.add_node(op, inputs, name=out, attrs=attrs, source=b.source(layer, layer_type(layer)))


def _flatten_to_2d(b, layer, name, x):
    if len(b.graph.specs[x].shape) == 2:
        return x
    return _node(b, "flatten", [x], layer, f"{name}/flatten")


def _channels(b, x, name):
    shape = b.graph.specs[x].shape
    if len(shape) < 2:
        raise GraphrtError(f"layer {name!r} needs an (N, C, ...) input, got shape {shape}")
    return shape[1]


# ---- converters ---------------------------------------------------------------------------------
def convolution(b, layer, name, inputs):
    p = layer.get("convolution_param", Message())
    if p.get("num_output") is None:
        raise GraphrtError("Convolution needs convolution_param.num_output")
    kh, kw = _pair(p, "kernel_size", "kernel_h", "kernel_w", None)
    if kh is None:
        raise GraphrtError("Convolution needs kernel_size (or kernel_h and kernel_w)")
    sh, sw = _pair(p, "stride", "stride_h", "stride_w", 1)
    ph, pw = _pair(p, "pad", "pad_h", "pad_w", 0)
    dh, dw = _pair(p, "dilation", "dilation_h", "dilation_w", 1)
    groups = _int(p.get("group", 1), "group")
    c, o = _channels(b, inputs[0], name), _int(p.get("num_output"), "num_output")
    if kh <= 0 or kw <= 0 or o <= 0 or groups <= 0:
        raise AttrError(f"Convolution needs positive kernel_size, num_output and group, got "
                        f"kernel {(kh, kw)}, num_output {o}, group {groups}")
    if c % groups:
        raise GraphrtError(f"Convolution input has {c} channels, not divisible by group {groups}")
    w = b.param(layer, 0, "weight", (o, c // groups, kh, kw), p.get("weight_filler"))
    params = [w]
    if p.get("bias_term", True):
        params.append(b.param(layer, 1, "bias", (o,), p.get("bias_filler")))
    return _node(b, "conv2d", inputs + params, layer, name,
                 {"stride": (sh, sw), "pads": (ph, pw), "dilation": (dh, dw), "groups": groups})


def pooling(b, layer, name, inputs):
    p = layer.get("pooling_param", Message())
    pool = p.get("pool", "MAX")
    if pool not in ("MAX", "AVE", 0, 1):
        raise UnsupportedError(f"pooling method {pool!r} is not supported (MAX, AVE)")
    kh, kw = _pair(p, "kernel_size", "kernel_h", "kernel_w", 1)
    sh, sw = _pair(p, "stride", "stride_h", "stride_w", 1)
    ph, pw = _pair(p, "pad", "pad_h", "pad_w", 0)
    attrs = {"kernel": (kh, kw), "stride": (sh, sw), "pads": (ph, pw),
             "ceil_mode": _ceil_mode(p), "global_pool": bool(p.get("global_pooling", False))}
    op = "max_pool" if pool in ("MAX", 0) else "avg_pool"
    return _node(b, op, inputs, layer, name, attrs)


def _ceil_mode(p: Message) -> bool:
    """BVLC's ``round_mode`` (CEIL by default) or the forks' ``ceil_mode`` (true by default)."""
    round_mode, ceil = p.get("round_mode"), p.get("ceil_mode")
    if round_mode is not None and ceil is not None and (round_mode == "CEIL") != ceil:
        raise AttrError(f"pooling_param has round_mode {round_mode} and ceil_mode "
                        f"{str(ceil).lower()}, which disagree")
    return ceil if ceil is not None else (round_mode or "CEIL") == "CEIL"


def lrn(b, layer, name, inputs):
    p = layer.get("lrn_param", Message())
    if p.get("norm_region", "ACROSS_CHANNELS") in ("WITHIN_CHANNEL", 1):
        return _lrn_within_channel(b, layer, name, inputs[0], p)
    return _node(b, "lrn", inputs, layer, name, {"size": p.get("local_size", 5),
                 "alpha": p.get("alpha", 1.0), "beta": p.get("beta", 0.75), "k": p.get("k", 1.0)})


def _lrn_within_channel(b, layer, name, x, p):
    """Caffe builds WITHIN_CHANNEL LRN from other layers; so does graphrt:
    y = x * (1 + alpha * avg_pool(x^2, size x size, pad (size-1)/2, stride 1)) ^ -beta."""
    size = int(p.get("local_size", 5))
    if size % 2 == 0:
        raise GraphrtError(f"LRN local_size must be odd, got {size}")
    sq = _node(b, "mul", [x, x], layer, f"{name}/square")
    pooled = _node(b, "avg_pool", [sq], layer, f"{name}/pool",
                   {"kernel": size, "stride": 1, "pads": (size - 1) // 2})
    scale = _node(b, "scale", [pooled], layer, f"{name}/scale",
                  {"power": -p.get("beta", 0.75), "scale": p.get("alpha", 1.0), "shift": 1.0})
    return _node(b, "mul", [x, scale], layer, name)


def inner_product(b, layer, name, inputs):
    p = layer.get("inner_product_param", Message())
    out = p.get("num_output", b.classes)
    if out is None:
        raise GraphrtError("InnerProduct has no num_output (DIGITS leaves it to the number of "
                           "classes: pass classes=N)")
    if p.get("axis", 1) != 1 or p.get("transpose", False):
        raise UnsupportedError("InnerProduct supports axis 1 without transpose")
    out = _int(out, "num_output")
    if out <= 0:
        raise AttrError(f"InnerProduct needs a positive num_output, got {out}")
    x = _flatten_to_2d(b, layer, name, inputs[0])
    n_in = b.graph.specs[x].shape[1]
    params = [b.param(layer, 0, "weight", (out, n_in), p.get("weight_filler"))]
    if p.get("bias_term", True):
        params.append(b.param(layer, 1, "bias", (out,), p.get("bias_filler")))
    return _node(b, "dense", [x] + params, layer, name)


def relu(b, layer, name, inputs):
    slope = layer.get("relu_param", Message()).get("negative_slope", 0.0)
    return _node(b, "relu", inputs, layer, name, {"negative_slope": slope})


def softmax(b, layer, name, inputs):
    return _node(b, "softmax", inputs, layer, name, {"axis": layer.get("softmax_param", Message()).get("axis", 1)})


def softmax_loss(b, layer, name, inputs):
    return _node(b, "softmax_cross_entropy", [_flatten_to_2d(b, layer, name, inputs[0]), inputs[1]],
                 layer, name)


def accuracy(b, layer, name, inputs):
    k = layer.get("accuracy_param", Message()).get("top_k", 1)
    return _node(b, "accuracy", [_flatten_to_2d(b, layer, name, inputs[0]), inputs[1]], layer, name,
                 {"top_k": k})


def dropout(b, layer, name, inputs):
    rate = layer.get("dropout_param", Message()).get("dropout_ratio", 0.5)
    return _node(b, "dropout", inputs, layer, name, {"rate": rate})


def concat(b, layer, name, inputs):
    p = layer.get("concat_param", Message())
    return _node(b, "concat", inputs, layer, name, {"axis": p.get("axis", p.get("concat_dim", 1))})


def eltwise(b, layer, name, inputs):
    p = layer.get("eltwise_param", Message())
    op = p.get("operation", "SUM")
    if op in ("SUM", 1):
        return _node(b, "add", inputs, layer, name, {"coeffs": tuple(p.getall("coeff"))})
    if op in ("PROD", 0):
        return _node(b, "mul", inputs, layer, name)
    raise UnsupportedError(f"Eltwise operation {op!r} is not supported (SUM, PROD)")


def flatten(b, layer, name, inputs):
    p = layer.get("flatten_param", Message())
    if p.get("axis", 1) != 1 or p.get("end_axis", -1) != -1:
        raise UnsupportedError("Flatten supports axis 1 to the end")
    return _node(b, "flatten", inputs, layer, name)


def reshape(b, layer, name, inputs):
    dims = list(layer.get("reshape_param", Message()).get("shape", Message()).getall("dim"))
    src = b.graph.specs[inputs[0]].shape
    if not dims or dims[0] not in (0, -1):
        raise UnsupportedError("Reshape must keep the batch dimension (first dim 0)")
    target = [src[i] if d == 0 else int(d) for i, d in enumerate(dims)][1:]
    return _node(b, "reshape", inputs, layer, name, {"shape": target})


def power(b, layer, name, inputs):
    p = layer.get("power_param", Message())
    return _node(b, "scale", inputs, layer, name, {"power": p.get("power", 1.0),
                 "scale": p.get("scale", 1.0), "shift": p.get("shift", 0.0)})


def scale(b, layer, name, inputs):
    p = layer.get("scale_param", Message())
    if len(inputs) != 1 or p.get("axis", 1) != 1 or p.get("num_axes", 1) != 1:
        raise UnsupportedError("Scale supports one bottom with a learned per-channel scale")
    c = _channels(b, inputs[0], name)
    params = [b.param(layer, 0, "scale", (c,), p.get("filler"), default_filler="constant_one")]
    if p.get("bias_term", False):
        params.append(b.param(layer, 1, "bias", (c,), p.get("bias_filler")))
    return _node(b, "channel_affine", inputs + params, layer, name)


def batch_norm(b, layer, name, inputs):
    p = layer.get("batch_norm_param", Message())
    c = _channels(b, inputs[0], name)
    mean = b.param(layer, 0, "mean", (c,), None)
    var = b.param(layer, 1, "var", (c,), None, default_filler="constant_one")
    for pname in (mean, var):
        b.graph.param_info[pname].trainable = False
    # Caffe accumulates sums weighted by moving_average_fraction and divides by a scale factor
    return _node(b, "batch_norm", inputs + [mean, var], layer, name,
                 {"eps": p.get("eps", 1e-5), "caffe_fraction": p.get("moving_average_fraction", 0.999),
                  "unbiased": True})


def unary(op):
    def convert(b, layer, name, inputs):
        return _node(b, op, inputs, layer, name)
    return convert


def split(b, layer, name, inputs):
    return [inputs[0]] * len(layer.getall("top"))


CONVERTERS = {
    "Convolution": convolution, "Pooling": pooling, "LRN": lrn, "InnerProduct": inner_product,
    "ReLU": relu, "Sigmoid": unary("sigmoid"), "TanH": unary("tanh"), "Softmax": softmax,
    "SoftmaxWithLoss": softmax_loss, "Accuracy": accuracy, "Dropout": dropout, "Concat": concat,
    "Eltwise": eltwise, "Flatten": flatten, "Reshape": reshape, "Power": power, "Scale": scale,
    "BatchNorm": batch_norm, "Split": split,
}


# bottoms each converter reads (1 unless listed)
MIN_BOTTOMS = {"SoftmaxWithLoss": 2, "Accuracy": 2}


def data_transform(b, layer, transform: Message, tensor: str) -> str:
    """Caffe's data transformer as graph ops: (x - mean_value) * scale."""
    skipped = [f for f in ("mean_file", "crop_size", "mirror") if transform.get(f)]
    if skipped:
        log.warning("layer %r: transform_param %s are data-pipeline steps left to the caller "
                    "(feed batches already mean-subtracted, cropped and mirrored)",
                    layer.get("name"), ", ".join(skipped))
    means = transform.getall("mean_value")
    s = float(transform.get("scale", 1.0))
    name = layer.get("name")
    if means:
        c = b.graph.specs[tensor].shape[1]
        vals = np.resize(np.asarray(means, np.float32), c)
        shift = b.graph.add_param(f"{name}_mean_shift", -vals * s, trainable=False)
        gain = b.graph.add_param(f"{name}_mean_scale", np.full(c, s, np.float32), trainable=False)
        return _node(b, "channel_affine", [tensor, gain, shift], layer, f"{name}/transform")
    if s != 1.0:
        return _node(b, "scale", [tensor], layer, f"{name}/transform", {"scale": s})
    return tensor


__all__ = ["CONVERTERS", "fill", "layer_type", "data_transform", "adapt_blobs", "WeightError"]
