"""Naive loops for the ops added with issue 15 (activations, binary, reductions, layer norm, resize,
transposed convolution, slicing and indexing), in the manner of ``naive.py``: no graphrt import,
plain Python per output element in float64, written from the ops' documented semantics.
"""
from __future__ import annotations

import itertools
import math

import numpy as np

from naive import _map


# ---- activations --------------------------------------------------------------------------------
def _phi(v):
    return 0.5 * (1.0 + math.erf(v / math.sqrt(2.0)))


def _sig(v):
    return 1.0 / (1.0 + math.exp(-v)) if v >= 0 else math.exp(v) / (1.0 + math.exp(v))


def _elu(v, alpha):
    return v if v > 0 else alpha * math.expm1(v)


def _gelu(v, approximate):
    if approximate == "tanh":  # 0.5 (1 + tanh(u)) = sigmoid(2u): 1 + tanh(u) cancels for x << 0
        return v * _sig(2 * math.sqrt(2 / math.pi) * (v + 0.044715 * v ** 3))
    return v * _phi(v)


def _safe(fn):
    def f(v, **a):
        try:
            return fn(v, **a)
        except (ValueError, OverflowError):
            return math.nan
    return f


ACTIVATIONS = {
    "clip": lambda v, min=-math.inf, max=math.inf: min if v < min else (max if v > max else v),
    "elu": lambda v, alpha=1.0: _elu(v, alpha),
    "selu": lambda v, alpha=1.6732632423543772, gamma=1.0507009873554805: gamma * _elu(v, alpha),
    "gelu": lambda v, approximate="none": _gelu(v, approximate),
    "erf": math.erf,
    "softplus": lambda v: math.log1p(math.exp(v)) if v < 30 else v + math.log1p(math.exp(-v)),
    "softsign": lambda v: v / (1 + abs(v)),
    "exp": math.exp,
    "log": _safe(math.log),
    "sqrt": _safe(math.sqrt),
    "abs": abs,
    "swish": lambda v, beta=1.0: v * _sig(beta * v),
    "hard_sigmoid": lambda v, alpha=0.2, beta=0.5: min(1.0, max(0.0, alpha * v + beta)),
    "hard_swish": lambda v: v * min(1.0, max(0.0, v / 6 + 0.5)),
    "threshold": lambda v, threshold=0.0: 1.0 if v > threshold else 0.0,
}


def activation(op, x, **attrs):
    """The activation ``op`` of graphrt.ops.activation, element by element."""
    fn = ACTIVATIONS[op]
    return _map(lambda v: fn(v, **attrs), x)


def derivative(op, x, **attrs):
    """f'(x) by the exact formulas (for unary_grad)."""
    def d(v):
        if op == "clip":
            return 1.0 if attrs.get("min", -math.inf) <= v <= attrs.get("max", math.inf) else 0.0
        if op in ("elu", "selu"):
            alpha = attrs.get("alpha", 1.0 if op == "elu" else 1.6732632423543772)
            g = 1.0 if op == "elu" else attrs.get("gamma", 1.0507009873554805)
            return g * (1.0 if v > 0 else alpha * math.exp(v))
        if op == "gelu":
            if attrs.get("approximate", "none") == "tanh":
                k = math.sqrt(2 / math.pi)
                t = math.tanh(k * (v + 0.044715 * v ** 3))
                return 0.5 * (1 + t) + 0.5 * v * (1 - t * t) * k * (1 + 3 * 0.044715 * v * v)
            return _phi(v) + v * math.exp(-v * v / 2) / math.sqrt(2 * math.pi)
        if op == "swish":
            b = attrs.get("beta", 1.0)
            s = _sig(b * v)
            return s + b * v * s * (1 - s)
        if op == "hard_sigmoid":
            a, b = attrs.get("alpha", 0.2), attrs.get("beta", 0.5)
            return a if 0 < a * v + b < 1 else 0.0
        if op == "hard_swish":
            return min(1.0, max(0.0, v / 6 + 0.5)) + (v / 6 if -3 < v < 3 else 0.0)
        table = {"erf": lambda: 2 / math.sqrt(math.pi) * math.exp(-v * v), "softplus": lambda: _sig(v),
                 "softsign": lambda: 1 / (1 + abs(v)) ** 2, "exp": lambda: math.exp(v),
                 "log": lambda: 1 / v, "sqrt": lambda: 0.5 / math.sqrt(v),
                 "abs": lambda: math.copysign(1.0, v) if v else 0.0, "threshold": lambda: 0.0}
        return table[op]()
    return _map(d, x)


def broadcast_index(idx, shape):
    """The index into an array of ``shape`` that numpy broadcasting reads for output ``idx``."""
    lead = len(idx) - len(shape)
    return tuple(0 if n == 1 else i for i, n in zip(idx[lead:], shape))


def out_shape(*shapes):
    rank = max(len(s) for s in shapes)
    out = []
    for axis in range(rank):
        sizes = [s[axis - rank + len(s)] for s in shapes if axis - rank + len(s) >= 0]
        out.append(max(sizes) if 0 not in sizes else 0)
    return tuple(out)


def elementwise(fn, *xs):
    """fn over the broadcast of ``xs`` (float64), element by element."""
    xs = [np.asarray(x, np.float64) for x in xs]
    shape = out_shape(*(x.shape for x in xs))
    out = np.empty(shape)
    for idx in itertools.product(*(range(d) for d in shape)):
        out[idx] = fn(*(float(x[broadcast_index(idx, x.shape)]) for x in xs))
    return out


# ---- binary -------------------------------------------------------------------------------------
def _pow(a, b):
    try:
        return math.pow(a, b)
    except (ValueError, OverflowError):
        return math.nan if a < 0 else math.inf


def _div(a, b):
    if b:
        return a / b
    return math.copysign(math.inf, a) * math.copysign(1.0, b) if a else math.nan


BINARY = {
    "sub": lambda a, b: a - b,
    "div": _div,
    "pow": _pow,
    "maximum": lambda *v: max(v),
    "minimum": lambda *v: min(v),
    "where": lambda c, a, b: a if c else b,
    "equal": lambda a, b: a == b,
    "greater": lambda a, b: a > b,
    "less": lambda a, b: a < b,
    "greater_equal": lambda a, b: a >= b,
    "less_equal": lambda a, b: a <= b,
    "prelu": lambda x, s: x if x > 0 else s * x,
}


def binary(op, *xs):
    return elementwise(BINARY[op], *xs)


def binary_grad_full(op, operand, dy, *xs):
    """d(op)/d(operand) * dy at the broadcast shape, by hand per element."""
    def g(d, *v):
        if op == "sub":
            return d if operand == 0 else -d
        if op == "div":
            a, b = v
            return d / b if operand == 0 else -d * a / (b * b)
        if op == "pow":
            a, b = v
            return d * b * a ** (b - 1) if operand == 0 else d * a ** b * math.log(a)
        if op in ("maximum", "minimum"):
            best = (max if op == "maximum" else min)(v)
            return d if v.index(best) == operand else 0.0
        if op == "where":
            return d * (bool(v[0]) if operand == 1 else not bool(v[0]))
        x, s = v  # prelu
        return d * (1.0 if x > 0 else s) if operand == 0 else d * min(x, 0.0)
    return elementwise(g, dy, *xs)


def sum_to(g, shape):
    """``g`` summed over the axes along which an array of ``shape`` was broadcast."""
    g = np.asarray(g, np.float64)
    lead = g.ndim - len(shape)
    g = g.sum(axis=tuple(range(lead))) if lead else g
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    return g.sum(axis=axes, keepdims=True) if axes else g


# ---- reductions ---------------------------------------------------------------------------------
def _fibres(x, axes):
    """(kept index, list of values) for every combination of the non-reduced axes."""
    rest = [i for i in range(x.ndim) if i not in axes]
    for pos in itertools.product(*(range(x.shape[i]) for i in rest)):
        values = []
        for red in itertools.product(*(range(x.shape[i]) for i in axes)):
            idx = [0] * x.ndim
            for i, p in zip(rest, pos):
                idx[i] = p
            for i, p in zip(axes, red):
                idx[i] = p
            values.append(float(x[tuple(idx)]))
        yield pos, values


REDUCE = {
    "sum": sum, "mean": lambda v: sum(v) / len(v), "max": max, "min": min, "prod": math.prod,
    "l1": lambda v: sum(abs(t) for t in v), "l2": lambda v: math.sqrt(sum(t * t for t in v)),
    "sumsq": lambda v: sum(t * t for t in v),
    "logsum": lambda v: math.log(sum(v)) if sum(v) > 0 else (-math.inf if sum(v) == 0 else math.nan),
    "logsumexp": lambda v: max(v) + math.log(sum(math.exp(t - max(v)) for t in v)),
}


def reduce(x, mode, axes, keepdims=True):
    x = np.asarray(x, np.float64)
    axes = tuple(sorted(a % x.ndim for a in axes)) if axes else tuple(range(x.ndim))
    rest = [i for i in range(x.ndim) if i not in axes]
    out = np.empty(tuple(x.shape[i] for i in rest))
    for pos, values in _fibres(x, axes):
        out[pos] = REDUCE[mode](values)
    if keepdims:
        out = out.reshape(tuple(1 if i in axes else d for i, d in enumerate(x.shape)))
    return out


def arg_reduce(x, mode, axis, keepdims=True, select_last_index=False):
    x = np.asarray(x, np.float64)
    axis %= x.ndim
    out = np.empty(tuple(d for i, d in enumerate(x.shape) if i != axis), np.int64)
    for pos, values in _fibres(x, (axis,)):
        best = (max if mode == "max" else min)(values)
        hits = [i for i, v in enumerate(values) if v == best]
        out[pos] = hits[-1] if select_last_index else hits[0]
    return out.reshape(tuple(1 if i == axis else d for i, d in enumerate(x.shape))) if keepdims \
        else out


# ---- layer norm ---------------------------------------------------------------------------------
def layer_norm(x, axes, scale=None, bias=None, eps=1e-5, eps_inside_sqrt=True,
               normalize_variance=True):
    x = np.asarray(x, np.float64)
    axes = tuple(sorted(a % x.ndim for a in axes))
    out = np.empty_like(x)
    rest = [i for i in range(x.ndim) if i not in axes]
    for pos, values in _fibres(x, axes):
        mu = sum(values) / len(values)
        var = sum((v - mu) ** 2 for v in values) / len(values)
        sigma = (math.sqrt(var + eps) if eps_inside_sqrt else math.sqrt(var) + eps) \
            if normalize_variance else 1.0
        for k, red in enumerate(itertools.product(*(range(x.shape[i]) for i in axes))):
            idx = [0] * x.ndim
            for i, p in zip(rest, pos):
                idx[i] = p
            for i, p in zip(axes, red):
                idx[i] = p
            y = (values[k] - mu) / sigma
            if scale is not None:
                y *= float(np.asarray(scale)[red])
            if bias is not None:
                y += float(np.asarray(bias)[red])
            out[tuple(idx)] = y
    return out


# ---- resize -------------------------------------------------------------------------------------
def _source(r, n_in, n_out, scale, mode, explicit=False):
    if mode == "align_corners":  # ONNX: the resized length is in * scale when scales are given
        length = n_in * scale if explicit else n_out
        return r * (n_in - 1) / (length - 1) if length > 1 else 0.0
    if mode == "asymmetric":
        return r / scale
    if mode == "tf_half_pixel_for_nn":
        return (r + 0.5) / scale
    if mode == "pytorch_half_pixel" and n_out == 1:
        return 0.0
    x = (r + 0.5) / scale - 0.5
    if mode == "half_pixel_symmetric":
        x += n_in / 2 * (1 - n_out / (scale * n_in))
    return x


def _taps(x, n_in, mode, nearest_mode, a, exclude):
    """[(index, weight)] of one output coordinate along one axis."""
    if mode == "nearest":
        r = {"round_prefer_floor": math.ceil(x - 0.5), "round_prefer_ceil": math.floor(x + 0.5),
             "floor": math.floor(x), "ceil": math.ceil(x)}[nearest_mode]
        return [(min(max(r, 0), n_in - 1), 1.0)]
    x0 = math.floor(x)
    t = x - x0
    if mode == "linear":
        taps = [(x0, 1 - t), (x0 + 1, t)]
    else:
        def keys(d):
            d = abs(d)
            if d <= 1:
                return ((a + 2) * d - (a + 3)) * d * d + 1
            return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a if d < 2 else 0.0
        taps = [(x0 + k, keys(x - (x0 + k))) for k in (-1, 0, 1, 2)]
    if exclude:
        taps = [(i, w) for i, w in taps if 0 <= i < n_in]
        total = sum(w for _, w in taps)
        taps = [(i, w / total) for i, w in taps]
    return [(min(max(i, 0), n_in - 1), w) for i, w in taps]


def resize(x, sizes, scales=(), mode="nearest", coordinate_transformation_mode="half_pixel",
           nearest_mode="round_prefer_floor", cubic_coeff_a=-0.75, exclude_outside=False):
    """ONNX Resize of the two spatial axes of an NCHW tensor, one output element at a time."""
    x = np.asarray(x, np.float64)
    n, c, h, w = x.shape
    oh, ow = sizes
    sh, sw = scales or (oh / h, ow / w)
    out = np.zeros((n, c, oh, ow))
    for i in range(oh):
        ty = _taps(_source(i, h, oh, sh, coordinate_transformation_mode, bool(scales)), h, mode,
                   nearest_mode,
                   cubic_coeff_a, exclude_outside)
        for j in range(ow):
            tx = _taps(_source(j, w, ow, sw, coordinate_transformation_mode, bool(scales)), w,
                       mode, nearest_mode, cubic_coeff_a, exclude_outside)
            for (yi, wy), (xi, wx) in itertools.product(ty, tx):
                out[:, :, i, j] += wy * wx * x[:, :, yi, xi]
    return out


# ---- transposed convolution ---------------------------------------------------------------------
def conv2d_transpose(x, w, b=None, stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1), groups=1,
                     output_padding=(0, 0)):
    """Scatter every input element through the kernel into the output (the definition)."""
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    n, c, h, wd = x.shape
    _, og, kh, kw = w.shape
    (sh, sw), (dh, dw), (t, bt, l, r) = stride, dilation, pads
    oh = (h - 1) * sh - t - bt + dh * (kh - 1) + 1 + output_padding[0]
    ow = (wd - 1) * sw - l - r + dw * (kw - 1) + 1 + output_padding[1]
    out = np.zeros((n, og * groups, oh, ow))
    cg = c // groups
    for ci, i, j, ki, kj in itertools.product(range(c), range(h), range(wd), range(kh), range(kw)):
        y, z = i * sh - t + ki * dh, j * sw - l + kj * dw
        if 0 <= y < oh and 0 <= z < ow:
            g = ci // cg
            for o in range(og):
                out[:, g * og + o, y, z] += x[:, ci, i, j] * w[ci, o, ki, kj]
    if b is not None:
        out += np.asarray(b, np.float64).reshape(1, -1, 1, 1)
    return out


# ---- slicing and indexing -----------------------------------------------------------------------
def slice_(x, starts, ends, axes):
    x = np.asarray(x, np.float64)
    lo, hi = [0] * x.ndim, list(x.shape)
    for s, e, a in zip(starts, ends, axes):
        a %= x.ndim
        n = x.shape[a]
        s, e = (s + n if s < 0 else s), (e + n if e < 0 else e)
        lo[a], hi[a] = min(max(s, 0), n), min(max(e, 0), n)
    out = np.empty(tuple(b - a for a, b in zip(lo, hi)))
    for idx in itertools.product(*(range(d) for d in out.shape)):
        out[idx] = x[tuple(i + a for i, a in zip(idx, lo))]
    return out


def tile(x, repeats):
    x = np.asarray(x, np.float64)
    out = np.empty(tuple(d * r for d, r in zip(x.shape, repeats)))
    for idx in itertools.product(*(range(d) for d in out.shape)):
        out[idx] = x[tuple(i % d for i, d in zip(idx, x.shape))]
    return out


def expand(x, shape):
    x = np.asarray(x, np.float64)
    target = [1] * (len(x.shape) - len(shape)) + [d if d != -1 else 1 for d in shape]
    return elementwise(lambda v, _: v, x, np.zeros(target))


def embedding(indices, w):
    idx, w = np.asarray(indices), np.asarray(w, np.float64)
    out = np.empty(idx.shape + (w.shape[1],))
    for pos in itertools.product(*(range(d) for d in idx.shape)):
        out[pos] = w[int(idx[pos])]
    return out


def embedding_grad(dy, indices, rows):
    dy, idx = np.asarray(dy, np.float64), np.asarray(indices)
    out = np.zeros((rows, dy.shape[-1]))
    for pos in itertools.product(*(range(d) for d in idx.shape)):
        out[int(idx[pos])] += dy[pos]
    return out


# ---- padding modes ------------------------------------------------------------------------------
def _source_index(i, n, mode):
    if mode == "edge":
        return min(max(i, 0), n - 1)
    if mode == "wrap":
        return i % n
    while i < 0 or i >= n:  # reflect about the first and last element (not repeating them)
        i = -i if i < 0 else 2 * (n - 1) - i
    return i


def pad(x, pads, mode="constant", value=0.0):
    """ONNX Pad: negative pads crop first; then every output element reads its source element."""
    x = np.asarray(x, np.float64)
    rank = x.ndim
    lo, hi = list(pads[:rank]), list(pads[rank:])
    x = x[tuple(slice(max(0, -a), n - max(0, -b)) for n, a, b in zip(x.shape, lo, hi))]
    lo, hi = [max(0, a) for a in lo], [max(0, b) for b in hi]
    out = np.empty(tuple(n + a + b for n, a, b in zip(x.shape, lo, hi)))
    for idx in itertools.product(*(range(d) for d in out.shape)):
        src = [i - a for i, a in zip(idx, lo)]
        if mode == "constant":
            inside = all(0 <= s < n for s, n in zip(src, x.shape))
            out[idx] = x[tuple(src)] if inside else value
        else:
            out[idx] = x[tuple(_source_index(s, n, mode) for s, n in zip(src, x.shape))]
    return out
