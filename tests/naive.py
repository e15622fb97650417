"""Naive reference implementations of every graphrt op, written from the ops' documented semantics.

Nothing here imports graphrt: each function loops over output positions in plain Python (vectorizing
at most over the batch or a channel slice) and computes in float64, so that a test comparing an op
against it compares two independent readings of the same docstring. Model: JAX's
``lax_reference.py``.

:func:`assert_close` applies the project's relative-error convention, ``max|a - b| / max|b|`` in
float64, and reports the error and the worst element when it fails.
"""
from __future__ import annotations

import itertools
import math

import numpy as np


# ---- comparison -------------------------------------------------------------------------------
def rel_error(actual, expected, floor: float = 0.0) -> tuple[float, tuple]:
    """``max|a - b| / max|b|`` in float64 and the worst index.

    The denominator is at least ``floor`` (and 1 when ``b`` is all zeros), for results whose natural
    scale is known, such as a loss that may be close to zero.
    """
    a = np.asarray(actual, dtype=np.float64)
    b = np.asarray(expected, dtype=np.float64)
    if a.size == 0:
        return 0.0, ()
    diff = np.abs(a - b)
    worst = np.unravel_index(int(np.argmax(diff)), diff.shape) if diff.ndim else ()
    scale = max(float(np.max(np.abs(b))), floor)
    return float(diff.max()) / (scale if scale > 0 else 1.0), tuple(int(i) for i in worst)


def assert_close(actual, expected, tol: float = 1e-5, what: str = "result", floor: float = 0.0):
    """Assert shape equality, matching NaN positions and relative error below ``tol``."""
    a = np.asarray(actual)
    b = np.asarray(expected)
    assert a.shape == b.shape, f"{what}: shape {a.shape} != expected {b.shape}"
    nan_a, nan_b = np.isnan(a.astype(np.float64)), np.isnan(b.astype(np.float64))
    if not np.array_equal(nan_a, nan_b):
        where = tuple(int(i) for i in np.argwhere(nan_a != nan_b)[0])
        raise AssertionError(f"{what}: NaN mismatch at index {where}: got {a[where]!r}, "
                             f"expected {b[where]!r}")
    a, b = np.where(nan_a, 0.0, a), np.where(nan_b, 0.0, b)
    err, worst = rel_error(a, b, floor)
    if not err <= tol:
        raise AssertionError(
            f"{what}: relative error {err:.3e} > {tol:.1e}; worst element at index {worst}: "
            f"got {float(a[worst])!r}, expected {float(b[worst])!r} (max|expected| "
            f"{float(np.max(np.abs(b))):.4g})")


# ---- convolution ------------------------------------------------------------------------------
def conv2d(x, w, b=None, stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1), groups=1):
    """NCHW x OIHW cross-correlation; pads (top, bottom, left, right); loops over n, o, oh, ow."""
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    n_, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    assert c == cg * groups and o % groups == 0
    (sh, sw), (dh, dw), (t, _, l, _) = stride, dilation, pads
    oh_n = (h + pads[0] + pads[1] - dh * (kh - 1) - 1) // sh + 1
    ow_n = (wd + pads[2] + pads[3] - dw * (kw - 1) - 1) // sw + 1
    og = o // groups
    out = np.zeros((n_, o, oh_n, ow_n))
    for n in range(n_):
        for oc in range(o):
            g = oc // og
            chans = slice(g * cg, (g + 1) * cg)
            for oh in range(oh_n):
                for ow in range(ow_n):
                    acc = 0.0 if b is None else float(b[oc])
                    for i in range(kh):
                        ih = oh * sh - t + i * dh
                        if not 0 <= ih < h:
                            continue
                        for j in range(kw):
                            iw = ow * sw - l + j * dw
                            if 0 <= iw < wd:
                                acc += float(np.dot(x[n, chans, ih, iw], w[oc, :, i, j]))
                    out[n, oc, oh, ow] = acc
    return out


# ---- pooling ----------------------------------------------------------------------------------
def pool_out_len(size, k, s, lo, hi, ceil_mode):
    """Floor/ceil output length; ceil mode drops a last window starting at or beyond size + lo."""
    span = size + lo + hi - k
    out = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= size + lo:
        out -= 1
    return out


def _pool(x, kernel, stride, pads, ceil_mode, reduce):
    x = np.asarray(x, np.float64)
    n_, c, h, w = x.shape
    (kh, kw), (sh, sw), (t, b, l, r) = kernel, stride, pads
    oh_n = pool_out_len(h, kh, sh, t, b, ceil_mode)
    ow_n = pool_out_len(w, kw, sw, l, r, ceil_mode)
    out = np.zeros((n_, c, oh_n, ow_n))
    for oh in range(oh_n):
        for ow in range(ow_n):
            ps_h, ps_w = oh * sh, ow * sw  # window start in padded coordinates
            out[:, :, oh, ow] = reduce(x, (ps_h, ps_w), (h, w), (kh, kw), (t, b, l, r))
    return out


def max_pool(x, kernel=(1, 1), stride=(1, 1), pads=(0, 0, 0, 0), ceil_mode=False):
    """Max over the real input elements of each window (padding never wins)."""
    def reduce(x, start, hw, k, p):
        best = np.full(x.shape[:2], -np.inf)
        for i in range(k[0]):
            ih = start[0] + i - p[0]
            for j in range(k[1]):
                iw = start[1] + j - p[2]
                if 0 <= ih < hw[0] and 0 <= iw < hw[1]:
                    best = np.maximum(best, x[:, :, ih, iw])
        return best
    return _pool(x, kernel, stride, pads, ceil_mode, reduce)


def avg_pool(x, kernel=(1, 1), stride=(1, 1), pads=(0, 0, 0, 0), ceil_mode=False,
             count_include_pad=True):
    """Sum of real elements / divisor: the window clipped to the padded extent (include) or the
    number of real elements (exclude)."""
    def reduce(x, start, hw, k, p):
        total = np.zeros(x.shape[:2])
        real = 0
        for i in range(k[0]):
            ih = start[0] + i - p[0]
            for j in range(k[1]):
                iw = start[1] + j - p[2]
                if 0 <= ih < hw[0] and 0 <= iw < hw[1]:
                    total += x[:, :, ih, iw]
                    real += 1
        if count_include_pad:
            rows = min(start[0] + k[0], hw[0] + p[0] + p[1]) - start[0]
            cols = min(start[1] + k[1], hw[1] + p[2] + p[3]) - start[1]
            div = rows * cols
        else:
            div = real
        return total / div
    return _pool(x, kernel, stride, pads, ceil_mode, reduce)


def global_max_pool(x):
    x = np.asarray(x, np.float64)
    out = np.empty(x.shape[:2] + (1, 1))
    for n, c in itertools.product(range(x.shape[0]), range(x.shape[1])):
        out[n, c, 0, 0] = max(float(v) for v in x[n, c].ravel())
    return out


def global_avg_pool(x):
    x = np.asarray(x, np.float64)
    out = np.empty(x.shape[:2] + (1, 1))
    for n, c in itertools.product(range(x.shape[0]), range(x.shape[1])):
        out[n, c, 0, 0] = sum(float(v) for v in x[n, c].ravel()) / x[n, c].size
    return out


# ---- normalization ----------------------------------------------------------------------------
def lrn(x, size, alpha=1e-4, beta=0.75, k=1.0):
    """x / (k + alpha/size * sum of squares over channels c-(size-1)//2 .. c+size//2) ** beta."""
    x = np.asarray(x, np.float64)
    c_n = x.shape[1]
    out = np.empty_like(x)
    for c in range(c_n):
        acc = np.zeros(x.shape[:1] + x.shape[2:])
        for cc in range(c - (size - 1) // 2, c + size // 2 + 1):
            if 0 <= cc < c_n:
                acc += x[:, cc] ** 2
        out[:, c] = x[:, c] / (k + alpha / size * acc) ** beta
    return out


def batch_norm(x, mean, var, gamma=None, beta=None, eps=1e-5):
    x = np.asarray(x, np.float64)
    out = np.empty_like(x)
    for c in range(x.shape[1]):
        y = (x[:, c] - float(mean[c])) / math.sqrt(float(var[c]) + eps)
        if gamma is not None:
            y = y * float(gamma[c]) + float(beta[c])
        out[:, c] = y
    return out


def channel_affine(x, scale, bias=None):
    x = np.asarray(x, np.float64)
    out = np.empty_like(x)
    for c in range(x.shape[1]):
        out[:, c] = x[:, c] * float(scale[c]) + (0.0 if bias is None else float(bias[c]))
    return out


# ---- dense ------------------------------------------------------------------------------------
def dense(x, w, b=None):
    """y[n, o] = sum_i x[n, i] * w[o, i] + b[o] with w (out, in)."""
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    out = np.zeros((x.shape[0], w.shape[0]))
    for n in range(x.shape[0]):
        for o in range(w.shape[0]):
            out[n, o] = sum(x[n, i] * w[o, i] for i in range(w.shape[1]))
            if b is not None:
                out[n, o] += float(b[o])
    return out


# ---- elementwise ------------------------------------------------------------------------------
def _map(fn, x):
    x = np.asarray(x, np.float64)
    out = np.empty_like(x)
    for idx in np.ndindex(x.shape):
        out[idx] = fn(float(x[idx]))
    return out


def relu(x, negative_slope=0.0):
    return _map(lambda v: max(v, 0.0) + negative_slope * min(v, 0.0), x)


def tanh(x):
    return _map(math.tanh, x)


def sigmoid(x):
    def sig(v):
        if v >= 0:
            return 1.0 / (1.0 + math.exp(-v))
        e = math.exp(v)
        return e / (1.0 + e)
    return _map(sig, x)


def scale(x, power=1.0, scale=1.0, shift=0.0):
    """(shift + scale * x) ** power (NaN where a negative base meets a fractional power)."""
    def f(v):
        base = shift + scale * v
        if base < 0 and not float(power).is_integer():
            return math.nan
        if base == 0 and power < 0:
            return math.inf
        return base ** power
    return _map(f, x)


def add(*xs, coeffs=()):
    coeffs = coeffs or (1.0,) * len(xs)
    xs = [np.asarray(x, np.float64) for x in xs]
    out = np.empty_like(xs[0])
    for idx in np.ndindex(out.shape):
        out[idx] = sum(c * float(x[idx]) for c, x in zip(coeffs, xs))
    return out


def mul(*xs):
    xs = [np.asarray(x, np.float64) for x in xs]
    out = np.empty_like(xs[0])
    for idx in np.ndindex(out.shape):
        out[idx] = math.prod(float(x[idx]) for x in xs)
    return out


def identity(x):
    return _map(lambda v: v, x)


def elementwise_chain(x, steps):
    """The unary ops of ``steps`` = ((op, attrs), ...) applied in order."""
    unary = {"relu": relu, "tanh": tanh, "sigmoid": sigmoid, "scale": scale,
             "dropout": lambda v, rate=0.5: identity(v), "identity": identity}
    for op, attrs in steps:
        x = unary[op](x, **attrs)
    return np.asarray(x, np.float64)


def activation(x, kind="none", negative_slope=0.0):
    """The fused epilogue of conv2d / dense: none, relu (with slope), tanh or sigmoid."""
    if kind == "relu":
        return relu(x, negative_slope)
    if kind in ("tanh", "sigmoid"):
        return {"tanh": tanh, "sigmoid": sigmoid}[kind](x)
    assert kind == "none", kind
    return np.asarray(x, np.float64)


# ---- softmax ----------------------------------------------------------------------------------
def _along_axis(fn, x, axis):
    """Apply ``fn`` to every 1-D fibre of ``x`` along ``axis``."""
    x = np.asarray(x, np.float64)
    axis = axis % x.ndim
    out = np.empty_like(x)
    rest = [range(d) for i, d in enumerate(x.shape) if i != axis]
    for pos in itertools.product(*rest):
        idx = list(pos)
        idx.insert(axis, slice(None))
        out[tuple(idx)] = fn([float(v) for v in x[tuple(idx)]])
    return out


def _log_softmax_list(v):
    m = max(v)
    lse = m + math.log(sum(math.exp(a - m) for a in v))
    return [a - lse for a in v]


def softmax(x, axis=1):
    return _along_axis(lambda v: [math.exp(a) for a in _log_softmax_list(v)], x, axis)


def log_softmax(x, axis=1):
    return _along_axis(_log_softmax_list, x, axis)


# ---- losses -----------------------------------------------------------------------------------
def softmax_cross_entropy(scores, labels):
    """Mean of -log softmax(row)[label] = log(sum_j exp(x_j - x_label)), summed accurately."""
    total = 0.0
    for row, lab in zip(scores, labels):
        d = [float(v) - float(row[int(lab)]) for v in row]
        m = max(d)
        if m == 0.0:  # the label scores highest: log1p keeps a tiny loss accurate
            total += math.log1p(math.fsum(math.exp(v) for j, v in enumerate(d) if j != int(lab)))
        else:
            total += m + math.log(math.fsum(math.exp(v - m) for v in d))
    return total / len(labels)


def nll_loss(logprobs, labels):
    return -sum(float(row[int(lab)]) for row, lab in zip(logprobs, labels)) / len(labels)


def accuracy(scores, labels, top_k=1):
    """Caffe's rule: a row is right when fewer than k classes score strictly higher than its
    label."""
    right = 0
    for row, lab in zip(scores, labels):
        target = float(row[int(lab)])
        higher = sum(1 for v in row if float(v) > target)
        right += higher < top_k
    return right / len(labels) if len(labels) else 0.0


# ---- data movement ----------------------------------------------------------------------------
def concat(xs, axis=1):
    xs = [np.asarray(x) for x in xs]
    axis = axis % xs[0].ndim
    shape = list(xs[0].shape)
    shape[axis] = sum(x.shape[axis] for x in xs)
    out = np.empty(shape, np.float64)
    offset = 0
    for x in xs:
        for idx in np.ndindex(x.shape):
            dst = list(idx)
            dst[axis] += offset
            out[tuple(dst)] = x[idx]
        offset += x.shape[axis]
    return out


def _c_order_copy(x, shape):
    """Row-major relabelling of ``x``'s elements into ``shape`` (element counts must agree)."""
    x = np.asarray(x)
    flat = [x[idx] for idx in np.ndindex(x.shape)]
    out = np.empty(shape, np.float64)
    for i, idx in enumerate(np.ndindex(*shape)):
        out[idx] = flat[i]
    return out


def flatten(x, axis=1):
    x = np.asarray(x)
    return _c_order_copy(x, x.shape[:axis] + (math.prod(x.shape[axis:]),))


def reshape(x, shape):
    """``shape`` gives the dimensions after the batch; one may be -1."""
    x = np.asarray(x)
    per_item = math.prod(x.shape[1:])
    shape = list(shape)
    if -1 in shape:
        known = math.prod(d for d in shape if d != -1)
        shape[shape.index(-1)] = per_item // known
    return _c_order_copy(x, (x.shape[0],) + tuple(shape))


def transpose(x, perm):
    x = np.asarray(x)
    out = np.empty(tuple(x.shape[p] for p in perm), np.float64)
    for idx in np.ndindex(out.shape):
        src = [0] * x.ndim
        for k, p in enumerate(perm):
            src[p] = idx[k]
        out[idx] = x[tuple(src)]
    return out


def split(x, sizes, axis=1):
    """Consecutive pieces of ``sizes`` along ``axis`` (the inverse of concat)."""
    x = np.asarray(x)
    outs, start = [], 0
    for size in sizes:
        shape = list(x.shape)
        shape[axis] = size
        out = np.empty(shape, np.float64)
        for idx in np.ndindex(*shape):
            src = list(idx)
            src[axis] += start
            out[idx] = x[tuple(src)]
        outs.append(out)
        start += size
    return outs


def zero_pad(x, pads):
    """Pad (or crop, where negative) the last two axes:
    ``out[..., i, j] = x[..., i - top, j - left]``, zero outside ``x``."""
    x = np.asarray(x)
    t, b, l, r = pads
    h, w = x.shape[-2:]
    out = np.zeros(x.shape[:-2] + (h + t + b, w + l + r))
    for i in range(h + t + b):
        for j in range(w + l + r):
            if 0 <= i - t < h and 0 <= j - l < w:
                out[..., i, j] = x[..., i - t, j - l]
    return out
