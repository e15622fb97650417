"""PyTorch translations of the ops added with issue 15, for :mod:`torch_reference`: the
activations (also as conv2d/dense epilogues and elementwise-chain steps), the broadcasting binary
ops, reductions, layer norm, resize, transposed convolution and the indexing ops. Each is written
from the op's graphrt docstring with ``torch`` / ``torch.nn.functional``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _sigmoid_scaled(x, beta):
    return x * torch.sigmoid(beta * x)


ACTIVATIONS = {
    "clip": lambda x, a: x.clamp(None if a["min"] == -math.inf else a["min"],
                                 None if a["max"] == math.inf else a["max"]),
    "elu": lambda x, a: F.elu(x, a["alpha"]),
    "selu": lambda x, a: a["gamma"] * F.elu(x, a["alpha"]),
    "gelu": lambda x, a: F.gelu(x, approximate=a["approximate"]),
    "erf": lambda x, a: torch.erf(x),
    "softplus": lambda x, a: F.softplus(x),
    "softsign": lambda x, a: F.softsign(x),
    "exp": lambda x, a: torch.exp(x), "log": lambda x, a: torch.log(x),
    "sqrt": lambda x, a: torch.sqrt(x), "abs": lambda x, a: torch.abs(x),
    "swish": lambda x, a: _sigmoid_scaled(x, a["beta"]),
    "hard_sigmoid": lambda x, a: (a["alpha"] * x + a["beta"]).clamp(0.0, 1.0),
    "hard_swish": lambda x, a: F.hardswish(x),
    "threshold": lambda x, a: (x > a["threshold"]).to(x.dtype),
}


def activation(name: str, attrs, x):
    """Activation ``name`` of graphrt.ops.activation with its (normalized) attributes."""
    full = graphrt_attrs(name, attrs)
    return ACTIVATIONS[name](x, full)


def graphrt_attrs(op, attrs):
    import graphrt

    return graphrt.ops.get_op(op).normalize_attrs(dict(attrs))


def _unary(name):
    return lambda attrs, ins: [activation(name, attrs, ins[0])]


def _nary(fn):
    def run(attrs, ins):
        y = ins[0]
        for x in ins[1:]:
            y = fn(y, x)
        return [y]
    return run


def _reduce(attrs, ins):
    x = ins[0]
    axes = tuple(a % x.dim() for a in attrs["axes"]) or tuple(range(x.dim()))
    keep = attrs["keepdims"]
    mode = attrs["mode"]
    table = {"sum": lambda: x.sum(axes, keepdim=keep), "mean": lambda: x.mean(axes, keepdim=keep),
             "max": lambda: x.amax(axes, keepdim=keep), "min": lambda: x.amin(axes, keepdim=keep),
             "l1": lambda: x.abs().sum(axes, keepdim=keep),
             "l2": lambda: (x * x).sum(axes, keepdim=keep).sqrt(),
             "sumsq": lambda: (x * x).sum(axes, keepdim=keep),
             "logsum": lambda: x.sum(axes, keepdim=keep).log(),
             "logsumexp": lambda: torch.logsumexp(x, axes, keepdim=keep),
             "prod": lambda: _prod(x, axes, keep)}
    return [table[mode]()]


def _prod(x, axes, keep):
    for a in sorted(axes, reverse=True):
        x = x.prod(a, keepdim=True)
    return x if keep else x.reshape([d for i, d in enumerate(x.shape) if i not in axes])


def _layer_norm(attrs, ins):
    x = ins[0]
    axes = tuple(a % x.dim() for a in attrs["axes"])
    centered = x - x.mean(axes, keepdim=True)
    if attrs["normalize_variance"]:
        var = (centered * centered).mean(axes, keepdim=True)
        sigma = (var + attrs["eps"]).sqrt() if attrs["eps_inside_sqrt"] else var.sqrt() + attrs["eps"]
        centered = centered / sigma
    shape = [d if i in axes else 1 for i, d in enumerate(x.shape)]
    if len(ins) > 1:
        centered = centered * ins[1].reshape(shape)
    if len(ins) > 2:
        centered = centered + ins[2].reshape(shape)
    return [centered]


def _resize(attrs, ins):
    """F.interpolate where its rules are graphrt's: nearest (asymmetric, floor), linear and
    cubic (half_pixel or align_corners, a = -0.75, edge clamping)."""
    x, size, mode = ins[0], tuple(attrs["sizes"]), attrs["mode"]
    ctm = attrs["coordinate_transformation_mode"]
    if mode == "nearest" and ctm == "asymmetric" and attrs["nearest_mode"] == "floor":
        return [F.interpolate(x, size=size, mode="nearest")]
    if mode == "nearest" and ctm in ("half_pixel", "asymmetric") and not attrs["scales"]:
        for axis, n_out in enumerate(size, 2):  # PyTorch's nearest-exact rounds ties up: gather
            n_in = x.shape[axis]
            r = torch.arange(n_out, dtype=torch.float64)
            src = (r + 0.5) * n_in / n_out - 0.5 if ctm == "half_pixel" else r * n_in / n_out
            rounding = {"round_prefer_floor": lambda v: torch.ceil(v - 0.5),
                        "round_prefer_ceil": lambda v: torch.floor(v + 0.5),
                        "floor": torch.floor, "ceil": torch.ceil}[attrs["nearest_mode"]]
            x = x.index_select(axis, rounding(src).clamp(0, n_in - 1).long())
        return [x]
    if mode in ("linear", "cubic") and ctm in ("half_pixel", "align_corners") and \
            not attrs["scales"] and attrs["cubic_coeff_a"] == -0.75 and not attrs["exclude_outside"]:
        return [F.interpolate(x, size=size, mode="bilinear" if mode == "linear" else "bicubic",
                              align_corners=ctm == "align_corners")]
    raise ValueError(f"no PyTorch translation of resize {attrs}")


def _conv2d_transpose(attrs, ins):
    x, w = ins[0], ins[1]
    t, b, l, r = attrs["pads"]
    full = F.conv_transpose2d(x, w, None, stride=tuple(attrs["stride"]),
                              dilation=tuple(attrs["dilation"]), groups=attrs["groups"])
    eh, ew = attrs["output_padding"]
    full = F.pad(full, (0, ew, 0, eh))  # output_padding: rows/columns past the natural end
    y = full[:, :, t:full.shape[2] - b, l:full.shape[3] - r]
    if len(ins) == 3:
        y = y + ins[2].reshape(1, -1, 1, 1)
    return [y]


def _slice(attrs, ins):
    x = ins[0]
    index = [slice(None)] * x.dim()
    for s, e, a in zip(attrs["starts"], attrs["ends"], attrs["axes"]):
        index[a % x.dim()] = slice(s, e)
    return [x[tuple(index)]]


def _arg_reduce(attrs, ins):
    x = ins[0]
    axis = attrs["axis"] % x.dim()
    fn = torch.argmax if attrs["mode"] == "max" else torch.argmin
    if attrs["select_last_index"]:
        idx = x.shape[axis] - 1 - fn(torch.flip(x, (axis,)), axis, keepdim=attrs["keepdims"])
    else:
        idx = fn(x, axis, keepdim=attrs["keepdims"])
    return [idx]


def _where(attrs, ins):
    return [torch.where(ins[0].bool(), ins[1], ins[2])]


def _prelu(attrs, ins):
    x, slope = ins
    return [torch.where(x > 0, x, slope * x)]


OPS = {
    **{name: _unary(name) for name in ACTIVATIONS},
    "sub": _nary(torch.sub), "div": _nary(torch.div), "pow": _nary(torch.pow),
    "maximum": _nary(torch.maximum), "minimum": _nary(torch.minimum),
    "equal": _nary(torch.eq), "greater": _nary(torch.gt), "less": _nary(torch.lt),
    "greater_equal": _nary(torch.ge), "less_equal": _nary(torch.le),
    "where": _where, "prelu": _prelu,
    "cast": lambda attrs, ins: [ins[0].to(getattr(torch, attrs["to"]))],
    "reduce": _reduce, "arg_reduce": _arg_reduce, "layer_norm": _layer_norm, "resize": _resize,
    "conv2d_transpose": _conv2d_transpose, "slice": _slice,
    "tile": lambda attrs, ins: [ins[0].repeat(*attrs["repeats"])],
    "expand": lambda attrs, ins: [ins[0].expand(*attrs["shape"])],
    "embedding": lambda attrs, ins: [F.embedding(ins[0].long(), ins[1])],
}
