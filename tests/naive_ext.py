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
    if approximate == "tanh":
        return 0.5 * v * (1 + math.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v ** 3)))
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
