"""Pooling: ``max_pool`` and ``avg_pool`` over NCHW.

Attributes: ``kernel`` (kh, kw), ``stride`` (sh, sw), ``pads`` (top, bottom, left, right),
``ceil_mode``, ``global_pool``; ``avg_pool`` also ``count_include_pad``.

Output size: ``floor`` (or ``ceil`` in ceil mode) of ``(H + top + bottom - kh) / sh``, plus one; in
ceil mode a last window that would start in the bottom padding is dropped. That is Caffe's rule
(Caffe always rounds up), Torch's ``:ceil()``, PyTorch's and ONNX's ``ceil_mode``.

Average divisor: with ``count_include_pad`` it is the window clipped to the padded input (so windows
overhanging the padded edge in ceil mode count only what they cover, as in Caffe and PyTorch);
without, the number of real input elements in the window.
"""
from __future__ import annotations

import math

import numpy as np

from ..ir import TensorSpec, spec_error
from .registry import (Attr, OpDef, OpPattern, float_dtype, nonnegative, pads4, pair, positive,
                       register, to_bool)


def pool_out_size(size: int, k: int, s: int, lo: int, hi: int, ceil_mode: bool) -> int:
    span = size + lo + hi - k
    out = (math.ceil(span / s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= size + lo:
        out -= 1
    return out


def pool_geometry(attrs, h: int, w: int):
    """(kernel, stride, pads) after resolving global pooling."""
    if attrs["global_pool"]:
        return (h, w), (1, 1), (0, 0, 0, 0)
    return attrs["kernel"], attrs["stride"], attrs["pads"]


def _infer(attrs, ins, node):
    x = ins[0]
    dtype = float_dtype(x, node)
    if len(x.shape) != 4:
        raise spec_error(node, f"{node.op if node else 'pool'} expects a 4-D NCHW input, got {x}")
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (t, b, l, r) = pool_geometry(attrs, h, w)
    if max(t, b) >= kh or max(l, r) >= kw:
        raise spec_error(node, f"pooling pads {attrs['pads']} must be smaller than the kernel {kh}x{kw}")
    if kh > h + t + b or kw > w + l + r:
        raise spec_error(node, f"pooling kernel {kh}x{kw} is larger than the padded input "
                               f"{h + t + b}x{w + l + r} (input shape {x})")
    oh = pool_out_size(h, kh, sh, t, b, attrs["ceil_mode"])
    ow = pool_out_size(w, kw, sw, l, r, attrs["ceil_mode"])
    return [TensorSpec((n, c, oh, ow), dtype)]


def _padded_windows(x, attrs, out_hw, fill):
    """The input padded to cover every window, and the geometry."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (t, b, l, r) = pool_geometry(attrs, h, w)
    oh, ow = out_hw
    need_h, need_w = (oh - 1) * sh + kh, (ow - 1) * sw + kw
    bottom, right = max(0, need_h - h - t), max(0, need_w - w - l)
    if t or l or bottom or right:
        x = np.pad(x, ((0, 0), (0, 0), (t, bottom), (l, right)), constant_values=fill)
    return x, (kh, kw), (sh, sw), (t, b, l, r)


def _max_forward(attrs, inputs, outputs):
    out = outputs[0]
    xp, (kh, kw), (sh, sw), _ = _padded_windows(inputs[0], attrs, out.shape[2:], -np.inf)
    oh, ow = out.shape[2:]
    for i in range(kh):
        for j in range(kw):
            win = xp[:, :, i:i + (oh - 1) * sh + 1:sh, j:j + (ow - 1) * sw + 1:sw]
            if i == 0 and j == 0:
                out[...] = win
            else:
                np.maximum(out, win, out=out)


def avg_divisor(size: int, out: int, k: int, s: int, lo: int, hi: int, include_pad: bool):
    start = np.arange(out) * s  # in padded coordinates
    if include_pad:
        return np.minimum(start + k, size + lo + hi) - start
    return np.minimum(start + k, size + lo) - np.maximum(start, lo)


def _avg_forward(attrs, inputs, outputs):
    x, out = inputs[0], outputs[0]
    h, w = x.shape[2:]
    xp, (kh, kw), (sh, sw), (t, b, l, r) = _padded_windows(x, attrs, out.shape[2:], 0)
    oh, ow = out.shape[2:]
    out[...] = 0
    for i in range(kh):
        for j in range(kw):
            out += xp[:, :, i:i + (oh - 1) * sh + 1:sh, j:j + (ow - 1) * sw + 1:sw]
    inc = attrs["count_include_pad"]
    div = np.outer(avg_divisor(h, oh, kh, sh, t, b, inc), avg_divisor(w, ow, kw, sw, l, r, inc))
    out /= np.maximum(div, 1).astype(out.dtype)


def _cost(attrs, ins, outs, batch):
    n, c, h, w = ins[0].concrete(batch)
    (kh, kw), _, _ = pool_geometry(attrs, h, w)
    n_out = int(np.prod(outs[0].concrete(batch)))
    return n_out * kh * kw, ins[0].nbytes(batch) + outs[0].nbytes(batch)


def _max_backward(ctx, node, dys):
    """Each output's gradient goes to the first maximal element of its window (max_pool_grad)."""
    if not ctx.wants(0):
        return [None]
    return [ctx.add("max_pool_grad", [node.inputs[0], node.outputs[0], dys[0]], dict(node.attrs))]


def _avg_backward(ctx, node, dys):
    """dy / divisor spread evenly over each window (avg_pool_grad)."""
    if not ctx.wants(0):
        return [None]
    size = ctx.spec(node.inputs[0]).shape[2:]
    return [ctx.add("avg_pool_grad", [dys[0]], {**node.attrs, "input_size": size})]


_POOL_ATTRS = {"kernel": Attr(positive(pair), (1, 1)), "stride": Attr(positive(pair), (1, 1)),
               "pads": Attr(nonnegative(pads4), (0, 0, 0, 0)), "ceil_mode": Attr(to_bool, False),
               "global_pool": Attr(to_bool, False)}

MAX_POOL = register(OpDef(
    name="max_pool", family="pool", arity=(1, 1), attrs=_POOL_ATTRS, infer=_infer,
    forward=_max_forward, cost=_cost, pattern=OpPattern.OUT_ELEMWISE_FUSABLE,
    backward=_max_backward, doc=__doc__))

AVG_POOL = register(OpDef(
    name="avg_pool", family="pool", arity=(1, 1),
    attrs={**_POOL_ATTRS, "count_include_pad": Attr(to_bool, True)}, infer=_infer,
    forward=_avg_forward, cost=_cost, pattern=OpPattern.OUT_ELEMWISE_FUSABLE,
    backward=_avg_backward, doc=__doc__))
