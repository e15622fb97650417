"""Gradient ops of pooling and normalization (the rest are in :mod:`graphrt.ops.grad`).

- ``max_pool_grad(x, y, dy)`` -> dx: each output's gradient goes to the FIRST maximal element of its
  window in row-major window order (Caffe's and PyTorch's tie rule; a NaN counts as maximal, as in
  PyTorch); padding never receives gradient. Attributes: ``max_pool``'s.
- ``avg_pool_grad(dy)`` -> dx: dy divided by the forward's divisor (``count_include_pad``, ceil mode
  as in ``avg_pool``) spread over each window. Attributes: ``avg_pool``'s and ``input_size`` (H, W).
- ``lrn_grad(x, dy)`` -> dx with s_c = k + alpha/size * sum over c's window of x^2:
  dx_j = dy_j s_j^-beta - 2 alpha beta / size * x_j * sum over the channels c whose window holds j
  of dy_c x_c s_c^(-beta-1). Attributes: ``lrn``'s.
- ``batch_norm_train_grad(x, gamma, saved_mean, saved_invstd, dy)`` -> (dx, dgamma, dbeta) of
  ``batch_norm_train`` with the batch statistics it saved: with xhat = (x - mean) * invstd and m the
  number of values per channel, dbeta = sum dy, dgamma = sum dy * xhat,
  dx = gamma * invstd * (dy - dbeta / m - xhat * dgamma / m).

Every loop here runs over kernel offsets (KH * KW), never over pixels.
"""
from __future__ import annotations

import numpy as np

from ..ir import TensorSpec, spec_error
from .norm import LRN, channel_shape, channel_window_sums, lrn_denominator
from .pool import AVG_POOL, MAX_POOL, avg_divisor, pool_geometry
from .collective import group_reduce, group_size
from .registry import (Attr, OpDef, OpPattern, elementwise_cost, float_dtype, pair, positive,
                       register, to_str)


def _windows(a: np.ndarray, i: int, j: int, out_hw, stride) -> np.ndarray:
    """The strided view of ``a`` (N, C, padded H, padded W) at kernel offset (i, j)."""
    (oh, ow), (sh, sw) = out_hw, stride
    return a[:, :, i:i + (oh - 1) * sh + 1:sh, j:j + (ow - 1) * sw + 1:sw]


def _padded_extent(size: int, out: int, k: int, s: int, lo: int) -> int:
    """Rows (columns) of the padded input the forward's windows read: input, top pad, and as much
    bottom padding as the last window needs."""
    return lo + max(size, (out - 1) * s + k - lo)


def _valid(size: int, out: int, k: int, s: int, lo: int) -> np.ndarray:
    """(k, out) booleans: offset i of window o lies on a real input row (not padding)."""
    pos = np.arange(out)[None, :] * s + np.arange(k)[:, None] - lo
    return (pos >= 0) & (pos < size)


def _pool_grad_cost(attrs, ins, outs, batch):
    dy = ins[-1].concrete(batch)
    h, w = outs[0].concrete(batch)[2:]
    (kh, kw), _, _ = pool_geometry(attrs, h, w)
    return 2 * int(np.prod(dy)) * kh * kw, sum(s.nbytes(batch) for s in list(ins) + list(outs))


def _max_grad_infer(attrs, ins, node):
    x, y, dy = ins
    want = MAX_POOL.infer(attrs, [x], node)[0]
    for name, s in (("y", y), ("dy", dy)):
        if s != want:
            raise spec_error(node, f"max_pool_grad: {name} {s} {s.dtype} is not the max_pool "
                                   f"output {want} {want.dtype} of x {x}")
    return [TensorSpec(x.shape, x.dtype)]


def _max_pool_grad(attrs, inputs, outputs):
    x, y, dy = inputs
    dx = outputs[0]
    n, c, h, w = x.shape
    oh, ow = y.shape[2:]
    (kh, kw), stride, (t, b, l, r) = pool_geometry(attrs, h, w)
    hp, wp = _padded_extent(h, oh, kh, stride[0], t), _padded_extent(w, ow, kw, stride[1], l)
    vh, vw = _valid(h, oh, kh, stride[0], t), _valid(w, ow, kw, stride[1], l)
    xp = np.full((n, c, hp, wp), -np.inf, x.dtype)
    xp[:, :, t:t + h, l:l + w] = x
    dxp = np.zeros_like(xp)
    done = np.zeros(y.shape, bool)
    nan = bool(np.isnan(y).any())
    for i in range(kh):
        for j in range(kw):
            win = _windows(xp, i, j, (oh, ow), stride)
            hit = win == y
            if nan:
                hit |= np.isnan(win)
            hit &= ~done
            hit &= vh[i][:, None] & vw[j][None, :]
            done |= hit
            # one kernel offset reaches each input pixel at most once, so += on the view is safe
            _windows(dxp, i, j, (oh, ow), stride)[...] += np.where(hit, dy, 0)
    dx[...] = dxp[:, :, t:t + h, l:l + w]


def _avg_grad_infer(attrs, ins, node):
    dy = ins[0]
    dtype = float_dtype(dy, node, "dy")
    h, w = attrs["input_size"]
    x = TensorSpec((dy.shape[0], dy.shape[1] if len(dy.shape) > 1 else None, h, w), dtype)
    want = AVG_POOL.infer(attrs, [x], node)[0]
    if dy != want:
        raise spec_error(node, f"avg_pool_grad: dy {dy} is not the avg_pool output {want} of a "
                               f"{h}x{w} input")
    return [x]


def _avg_pool_grad(attrs, inputs, outputs):
    dy, dx = inputs[0], outputs[0]
    n, c, oh, ow = dy.shape
    h, w = attrs["input_size"]
    (kh, kw), (sh, sw), (t, b, l, r) = pool_geometry(attrs, h, w)
    inc = attrs["count_include_pad"]
    div = np.outer(avg_divisor(h, oh, kh, sh, t, b, inc), avg_divisor(w, ow, kw, sw, l, r, inc))
    share = dy / np.maximum(div, 1).astype(dy.dtype)
    dxp = np.zeros((n, c, _padded_extent(h, oh, kh, sh, t), _padded_extent(w, ow, kw, sw, l)),
                   dx.dtype)
    for i in range(kh):
        for j in range(kw):
            _windows(dxp, i, j, (oh, ow), (sh, sw))[...] += share
    dx[...] = dxp[:, :, t:t + h, l:l + w]


MAX_POOL_GRAD = register(OpDef(
    name="max_pool_grad", family="grad", arity=(3, 3), attrs=MAX_POOL.attrs, infer=_max_grad_infer,
    forward=_max_pool_grad, cost=_pool_grad_cost, pattern=OpPattern.OPAQUE, doc=__doc__))
AVG_POOL_GRAD = register(OpDef(
    name="avg_pool_grad", family="grad", arity=(1, 1),
    attrs={**AVG_POOL.attrs, "input_size": Attr(positive(pair))}, infer=_avg_grad_infer,
    forward=_avg_pool_grad, cost=_pool_grad_cost, pattern=OpPattern.OPAQUE, doc=__doc__))


# ---- normalization ----------------------------------------------------------------------------
def _same_specs(name):
    def infer(attrs, ins, node):
        x = ins[0]
        float_dtype(x, node)
        if len(x.shape) != 4 or any(s != x for s in ins):
            raise spec_error(node, f"{name} needs 4-D x and dy of one shape and dtype, got "
                                   + ", ".join(f"{s} {s.dtype}" for s in ins))
        return [TensorSpec(x.shape, x.dtype)]
    return infer


def _lrn_grad(attrs, inputs, outputs):
    x, dy = inputs
    size, beta, c = attrs["size"], attrs["beta"], x.shape[1]
    s = lrn_denominator(x, attrs)
    p = np.power(s, -beta)
    contrib = dy * x * p  # float64
    contrib /= s
    # channel c's window holds j exactly when c lies in [j + pre - size + 1, j + pre]
    start = np.arange(c) + (size - 1) // 2 - size + 1
    acc = channel_window_sums(contrib, np.clip(start, 0, c), np.clip(start + size, 0, c))
    acc *= x
    acc *= -2.0 * attrs["alpha"] * beta / size
    p *= dy
    acc += p
    outputs[0][...] = acc


LRN_GRAD = register(OpDef(
    name="lrn_grad", family="grad", arity=(2, 2), attrs=LRN.attrs,
    infer=_same_specs("lrn_grad"), forward=_lrn_grad, cost=elementwise_cost(12),
    pattern=OpPattern.OPAQUE, doc=__doc__))


def _bn_grad_infer(attrs, ins, node):
    x, gamma, mean, invstd, dy = ins
    dtype = float_dtype(x, node)
    c = x.shape[1] if len(x.shape) >= 2 else None
    if c is None or dy != x or any(s.shape != (c,) for s in (gamma, mean, invstd)):
        raise spec_error(node, "batch_norm_train_grad needs x and dy (N, C, ...) of one shape and "
                               "gamma, saved_mean, saved_invstd of shape (C,), got "
                               + ", ".join(str(s) for s in ins))
    return [TensorSpec(x.shape, dtype)] + [TensorSpec((c,), gamma.dtype)] * 2


def _bn_train_grad(attrs, inputs, outputs):
    x, gamma, mean, invstd, dy = inputs
    dx, dgamma, dbeta = outputs
    shape, axes = channel_shape(x), (0,) + tuple(range(2, x.ndim))
    m = x.size // max(x.shape[1], 1)
    xhat = (x - mean.reshape(shape)) * invstd.reshape(shape).astype(x.dtype)
    sum_dy = dy.sum(axis=axes, dtype=np.float64)
    sum_dy_xhat = (dy * xhat).sum(axis=axes, dtype=np.float64)
    dgamma[...] = sum_dy_xhat  # this rank's own: the gradient buckets average the parameters'
    dbeta[...] = sum_dy
    if attrs.get("group", ""):  # synchronized batch norm: dx sees the sums over the whole global batch
        both = group_reduce(attrs.get("group", ""), np.concatenate([sum_dy, sum_dy_xhat]), "sum")
        sum_dy, sum_dy_xhat = both[:len(sum_dy)], both[len(sum_dy):]
        m *= group_size(attrs.get("group", ""))
    xhat *= (sum_dy_xhat / max(m, 1)).astype(x.dtype).reshape(shape)
    np.subtract(dy, (sum_dy / max(m, 1)).astype(x.dtype).reshape(shape), out=dx)
    dx -= xhat
    dx *= (gamma * invstd.astype(np.float64)).astype(x.dtype).reshape(shape)


BATCH_NORM_TRAIN_GRAD = register(OpDef(
    name="batch_norm_train_grad", family="grad", arity=(5, 5), attrs={"group": Attr(to_str, "")},
    infer=_bn_grad_infer,
    forward=_bn_train_grad, cost=elementwise_cost(8), pattern=OpPattern.OPAQUE,
    outputs=lambda attrs: 3, doc=__doc__))
