"""Activation functions beyond relu/tanh/sigmoid as unary elementwise ops, and their one gradient op.

| op | f(x) | attributes (default) |
|---|---|---|
| ``clip`` | min(max(x, min), max) (ReLU6 is clip 0..6) | ``min`` (-inf), ``max`` (inf) |
| ``elu`` | x if x > 0 else alpha * (exp(x) - 1) | ``alpha`` (1) |
| ``selu`` | gamma * elu(x, alpha) | ``alpha`` (1.6733), ``gamma`` (1.0507) |
| ``gelu`` | x * Phi(x); ``approximate`` "tanh": 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) | ``approximate`` ("none") |
| ``erf`` | the error function | |
| ``softplus`` | log(1 + exp(x)), as max(x, 0) + log1p(exp(-abs(x))) (Caffe BNLL) | |
| ``softsign`` | x / (1 + abs(x)) | |
| ``exp``, ``log``, ``sqrt``, ``abs`` | as numpy | |
| ``swish`` | x * sigmoid(beta * x) (silu for beta 1) | ``beta`` (1) |
| ``hard_sigmoid`` | clip(alpha * x + beta, 0, 1) | ``alpha`` (0.2), ``beta`` (0.5) (ONNX; Keras 3 and PyTorch use 1/6) |
| ``hard_swish`` | x * hard_sigmoid(x, 1/6, 1/2) (ONNX HardSwish, Keras hard_silu) | |
| ``threshold`` | 1 if x > threshold else 0 (Caffe Threshold; no gradient flows) | ``threshold`` (0) |

Each activation is one :class:`Activation`: ``compute(attrs, x, out, temps)`` writes f(x) into
``out`` (which may be ``x`` itself) with ufuncs and only the scratch arrays it is given (``temps``
of them, shaped like x); ``derivative(attrs, x)`` is f'(x). The reference forward allocates those
temporaries; the cpu device's kernels hand it blocks of the planned workspace, so the same arithmetic
runs there without allocating. Every one of them fuses into a ``conv2d``/``dense`` epilogue and into
an ``elementwise_chain``.

``unary_grad(dy, x)`` (attributes ``op`` and ``params``: the activation's name and attributes as
(name, value) pairs) is the backward of them all: dy * f'(x).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np

from ..ir import TensorSpec, spec_error
from .registry import (Attr, OpDef, OpPattern, choice, elementwise_cost, float_dtype, register,
                       to_float, to_str)

SQRT1_2 = 1 / math.sqrt(2.0)
SQRT_2_PI = math.sqrt(2.0 / math.pi)
GELU_C = 0.044715
SELU_ALPHA, SELU_GAMMA = 1.6732632423543772, 1.0507009873554805


def erf_into(x: np.ndarray, out: np.ndarray, complement: bool = False) -> None:
    """erf(x) (or erfc(x) with ``complement``) into ``out``: SciPy's ufuncs when installed (no
    temporaries), else :func:`math.erf` / :func:`math.erfc` per element."""
    fns = _erf_ufuncs()
    if fns is not None:
        fns[complement](x, out=out)
    else:
        fn = math.erfc if complement else math.erf
        out[...] = np.frompyfunc(fn, 1, 1)(x).astype(out.dtype)


def _erf_ufuncs():
    if not hasattr(_erf_ufuncs, "fns"):
        try:
            from scipy.special import erf, erfc  # optional: graphrt needs only numpy
            _erf_ufuncs.fns = (erf, erfc)
        except ImportError:  # pragma: no cover - SciPy is present where scikit-learn is
            _erf_ufuncs.fns = None
    return _erf_ufuncs.fns


@dataclasses.dataclass(frozen=True)
class Activation:
    """One activation: attributes, forward into given scratch, derivative, cost."""

    name: str
    compute: Callable  # (attrs, x, out, temps) -> None
    derivative: Callable  # (attrs, x) -> f'(x)
    attrs: dict = dataclasses.field(default_factory=dict)
    temps: int = 0
    flops: int = 1
    differentiable: bool = True


def _t(x, v):
    return x.dtype.type(v)


def _clip(a, x, out, t):
    np.clip(x, _t(x, a["min"]), _t(x, a["max"]), out=out)


def _elu_into(alpha, x, out, t1):
    np.minimum(x, 0, out=t1)
    np.expm1(t1, out=t1)
    t1 *= _t(x, alpha)
    np.maximum(x, 0, out=out)
    out += t1


def _elu(a, x, out, t):
    _elu_into(a["alpha"], x, out, t[0])


def _selu(a, x, out, t):
    _elu_into(a["alpha"], x, out, t[0])
    out *= _t(x, a["gamma"])


def _gelu(a, x, out, t):
    """x * Phi(x) with Phi(x) = erfc(-x / sqrt 2) / 2, which keeps its precision where Phi is
    small; the tanh form as x * sigmoid(2 u) = 0.5 x (1 + tanh(u)), likewise."""
    t1 = t[0]
    if a["approximate"] == "tanh":
        np.multiply(x, x, out=t1)
        t1 *= _t(x, GELU_C)
        t1 += 1
        t1 *= x
        t1 *= _t(x, 2 * SQRT_2_PI)
        _sigmoid_inplace(t1, t[1])
    else:
        np.multiply(x, _t(x, -SQRT1_2), out=t1)
        erf_into(t1, t1, complement=True)
        t1 *= _t(x, 0.5)
    np.multiply(x, t1, out=out)


def _gelu_derivative(a, x):
    if a["approximate"] == "tanh":
        th = np.tanh(SQRT_2_PI * (x + GELU_C * x ** 3))
        return 0.5 * (1 + th) + 0.5 * x * (1 - th ** 2) * SQRT_2_PI * (1 + 3 * GELU_C * x ** 2)
    cdf = np.empty_like(x)
    erf_into(-x * SQRT1_2, cdf, complement=True)
    return 0.5 * cdf + x * np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def _softplus(a, x, out, t):
    t1 = t[0]
    np.abs(x, out=t1)
    np.negative(t1, out=t1)
    np.exp(t1, out=t1)
    np.log1p(t1, out=t1)
    np.maximum(x, 0, out=out)
    out += t1


def _softsign(a, x, out, t):
    np.abs(x, out=t[0])
    t[0] += 1
    np.divide(x, t[0], out=out)


def _swish(a, x, out, t):
    t1, t2 = t
    np.multiply(x, _t(x, a["beta"]), out=t1)
    _sigmoid_inplace(t1, t2)
    np.multiply(x, t1, out=out)


def _sigmoid_inplace(t1, t2) -> None:
    """t1 = sigmoid(t1), in place, with t2 as scratch."""
    np.abs(t1, out=t2)
    np.negative(t2, out=t2)
    np.exp(t2, out=t2)
    np.heaviside(t1, 1, out=t1)
    np.maximum(t1, t2, out=t1)
    t2 += 1
    t1 /= t2


def _sigmoid(z):
    return 0.5 * (1 + np.tanh(0.5 * z))


def _hard_sigmoid_into(alpha, beta, x, out):
    np.multiply(x, _t(x, alpha), out=out)
    out += _t(x, beta)
    np.clip(out, 0, 1, out=out)


def _hard_sigmoid(a, x, out, t):
    _hard_sigmoid_into(a["alpha"], a["beta"], x, out)


def _hard_swish(a, x, out, t):
    _hard_sigmoid_into(1 / 6, 0.5, x, t[0])
    np.multiply(x, t[0], out=out)


def _inside(z):
    return ((z > 0) & (z < 1)).astype(np.float64)


def _hard_swish_derivative(a, x):
    z = x / 6 + 0.5
    return np.clip(z, 0, 1) + x / 6 * _inside(z)


def _threshold(a, x, out, t):
    np.subtract(x, _t(x, a["threshold"]), out=out)
    np.heaviside(out, 0, out=out)


def _numpy(fn):
    def compute(a, x, out, t):
        fn(x, out=out)
    return compute


_F = Attr(to_float)
DEFS = {d.name: d for d in (
    Activation("clip", _clip, lambda a, x: ((x >= a["min"]) & (x <= a["max"])).astype(np.float64),
               {"min": Attr(to_float, -math.inf), "max": Attr(to_float, math.inf)}, flops=2),
    Activation("elu", _elu, lambda a, x: np.where(x > 0, 1.0, a["alpha"] * np.exp(np.minimum(x, 0))),
               {"alpha": Attr(to_float, 1.0)}, temps=1, flops=5),
    Activation("selu", _selu, lambda a, x: a["gamma"] * np.where(
        x > 0, 1.0, a["alpha"] * np.exp(np.minimum(x, 0))),
        {"alpha": Attr(to_float, SELU_ALPHA), "gamma": Attr(to_float, SELU_GAMMA)}, temps=1, flops=6),
    Activation("gelu", _gelu, _gelu_derivative,
               {"approximate": Attr(choice("none", "tanh"), "none")}, temps=2, flops=12),
    Activation("erf", lambda a, x, out, t: erf_into(x, out),
               lambda a, x: 2 / math.sqrt(math.pi) * np.exp(-x * x), flops=8),
    Activation("softplus", _softplus, lambda a, x: _sigmoid(x), temps=1, flops=6),
    Activation("softsign", _softsign, lambda a, x: 1 / (1 + np.abs(x)) ** 2, temps=1, flops=3),
    Activation("exp", _numpy(np.exp), lambda a, x: np.exp(x), flops=4),
    Activation("log", _numpy(np.log), lambda a, x: 1 / x, flops=4),
    Activation("sqrt", _numpy(np.sqrt), lambda a, x: 0.5 / np.sqrt(x), flops=2),
    Activation("abs", _numpy(np.abs), lambda a, x: np.sign(x)),
    Activation("swish", _swish, lambda a, x: _sigmoid(a["beta"] * x) + a["beta"] * x * _sigmoid(
        a["beta"] * x) * (1 - _sigmoid(a["beta"] * x)), {"beta": Attr(to_float, 1.0)}, temps=2,
        flops=8),
    Activation("hard_sigmoid", _hard_sigmoid,
               lambda a, x: a["alpha"] * _inside(a["alpha"] * x + a["beta"]),
               {"alpha": Attr(to_float, 0.2), "beta": Attr(to_float, 0.5)}, flops=3),
    Activation("hard_swish", _hard_swish, _hard_swish_derivative, temps=1, flops=5),
    Activation("threshold", _threshold, lambda a, x: np.zeros_like(x),
               {"threshold": Attr(to_float, 0.0)}, flops=2, differentiable=False),
)}


def apply(name: str, attrs, x: np.ndarray, out: np.ndarray, temps=None) -> None:
    """``out = name(x)`` with scratch ``temps`` (allocated here when None)."""
    d = DEFS[name]
    if temps is None:
        temps = [np.empty_like(out) for _ in range(d.temps)]
    d.compute(attrs, x, out, temps)


def _forward(name):
    def forward(attrs, inputs, outputs):
        apply(name, attrs, inputs[0], outputs[0])
    forward.__name__ = name
    return forward


def _backward(name):
    def backward(ctx, node, dys):
        if not ctx.wants(0) or dys[0] is None or not DEFS[name].differentiable:
            return [None]
        return [ctx.add("unary_grad", [dys[0], node.inputs[0]],
                        {"op": name, "params": tuple(sorted(node.attrs.items()))})]
    return backward


def _infer(attrs, ins, node):
    return [TensorSpec(ins[0].shape, float_dtype(ins[0], node))]


def _register(d: Activation) -> OpDef:
    return register(OpDef(name=d.name, family="activation", arity=(1, 1), attrs=d.attrs,
                          infer=_infer, forward=_forward(d.name), cost=elementwise_cost(d.flops),
                          pattern=OpPattern.ELEMWISE, inplace=0, backward=_backward(d.name),
                          doc=__doc__))


OPS = {name: _register(d) for name, d in DEFS.items()}


# ---- the gradient --------------------------------------------------------------------------------
def params_attr(v) -> tuple:
    """An activation's attributes as sorted ((name, value), ...) pairs (a dict is accepted)."""
    pairs = v.items() if isinstance(v, dict) else v
    return tuple(sorted((to_str(k), val) for k, val in pairs))


def _grad_infer(attrs, ins, node):
    dy, x = ins
    if dy.shape != x.shape or dy.dtype != x.dtype:
        raise spec_error(node, f"unary_grad needs dy and x of one shape and dtype, got {dy} "
                               f"{dy.dtype} and {x} {x.dtype}")
    if attrs["op"] not in DEFS:
        raise spec_error(node, f"unary_grad of unknown activation {attrs['op']!r}")
    return [TensorSpec(dy.shape, float_dtype(dy, node))]


def _grad(attrs, inputs, outputs):
    dy, x = inputs
    params = OPS[attrs["op"]].normalize_attrs(dict(attrs["params"]))
    d = DEFS[attrs["op"]].derivative(params, x.astype(np.float64))
    np.multiply(dy, d, out=outputs[0], casting="unsafe")


UNARY_GRAD = register(OpDef(
    name="unary_grad", family="grad", arity=(2, 2),
    attrs={"op": Attr(choice(*DEFS)), "params": Attr(params_attr, ())}, infer=_grad_infer,
    forward=_grad, cost=elementwise_cost(8), pattern=OpPattern.ELEMWISE, inplace=0, doc=__doc__))
