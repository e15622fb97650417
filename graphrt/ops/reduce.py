"""Reductions: ``reduce`` (sum, mean, max, min, prod, l1, l2, sumsq, logsum, logsumexp over ``axes``)
and ``arg_reduce`` (argmax / argmin along one axis).

- ``reduce(x)``: ``mode`` over ``axes`` (empty: every axis; negative axes count from the end),
  ``keepdims`` keeps them as size 1 (ONNX Reduce*, Caffe Reduction, ``x.mean()``, Keras global
  pooling). l1 = sum |x|, l2 = sqrt(sum x^2), sumsq = sum x^2, logsum = log(sum x),
  logsumexp = log(sum exp(x)) computed as max + log(sum exp(x - max)). Sums accumulate in float64.
  Reducing the batch axis gives an unbatched result.
- ``arg_reduce(x)``: the int64 index of the first (or, with ``select_last_index``, the last) max
  (``mode`` "max") or min along ``axis``; ``keepdims`` keeps the axis as size 1 (ONNX ArgMax /
  ArgMin, Caffe ArgMax). It has no gradient.
- ``reduce_grad(dy, x, y)``: dx of ``reduce`` (same attributes): dy spread back over the reduced
  axes times d(mode)/dx (max/min: shared evenly among the elements that attain it).
"""
from __future__ import annotations

import numpy as np

from ..ir import TensorSpec, spec_error
from .registry import (Attr, OpDef, OpPattern, choice, elementwise_cost, float_dtype, ints,
                       register, to_bool, to_int)

MODES = ("sum", "mean", "max", "min", "prod", "l1", "l2", "sumsq", "logsum", "logsumexp")


def reduced_axes(axes, rank: int, node=None) -> tuple:
    """``axes`` normalized to sorted non-negative axes (empty: all of them)."""
    if not axes:
        return tuple(range(rank))
    out = set()
    for a in axes:
        if not -rank <= a < rank:
            raise spec_error(node, f"reduce axis {a} is out of range for rank {rank}")
        out.add(a % rank)
    return tuple(sorted(out))


def _out_shape(shape, axes, keepdims) -> tuple:
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def _infer(attrs, ins, node):
    x = ins[0]
    dtype = float_dtype(x, node)
    axes = reduced_axes(attrs["axes"], len(x.shape), node)
    return [TensorSpec(_out_shape(x.shape, axes, attrs["keepdims"]), dtype)]


def reduce_values(mode: str, x: np.ndarray, axes: tuple) -> np.ndarray:
    """The reduction of ``x`` over ``axes`` with kept dims, in float64."""
    x = np.asarray(x, np.float64)
    if mode in ("max", "min"):
        return (np.max if mode == "max" else np.min)(x, axis=axes, keepdims=True)
    if mode == "prod":
        return np.prod(x, axis=axes, keepdims=True)
    if mode == "logsumexp":
        m = np.max(x, axis=axes, keepdims=True)
        m = np.where(np.isfinite(m), m, 0.0)
        return m + np.log(np.sum(np.exp(x - m), axis=axes, keepdims=True))
    terms = {"l1": np.abs, "l2": np.square, "sumsq": np.square}.get(mode, lambda v: v)(x)
    s = np.sum(terms, axis=axes, keepdims=True)
    count = int(np.prod([x.shape[a] for a in axes]))
    return {"mean": lambda: s / max(count, 1), "l2": lambda: np.sqrt(s),
            "logsum": lambda: np.log(s)}.get(mode, lambda: s)()


def _forward(attrs, inputs, outputs):
    x, out = inputs[0], outputs[0]
    axes = reduced_axes(attrs["axes"], x.ndim)
    with np.errstate(divide="ignore", invalid="ignore"):
        out[...] = reduce_values(attrs["mode"], x, axes).reshape(out.shape)


def _backward(ctx, node, dys):
    if not ctx.wants(0) or dys[0] is None:
        return [None]
    return [ctx.add("reduce_grad", [dys[0], node.inputs[0], node.outputs[0]], dict(node.attrs))]


def _cost(attrs, ins, outs, batch):
    n = int(np.prod(ins[0].concrete(batch)))
    return 2 * n, ins[0].nbytes(batch) + outs[0].nbytes(batch)


_ATTRS = {"mode": Attr(choice(*MODES), "sum"), "axes": Attr(ints, ()),
          "keepdims": Attr(to_bool, True)}
REDUCE = register(OpDef(name="reduce", family="reduce", arity=(1, 1), attrs=_ATTRS, infer=_infer,
                        forward=_forward, cost=_cost, pattern=OpPattern.REDUCTION,
                        backward=_backward, doc=__doc__))


# ---- arg_reduce ---------------------------------------------------------------------------------
def _arg_infer(attrs, ins, node):
    x = ins[0]
    rank = len(x.shape)
    if not -rank <= attrs["axis"] < rank:
        raise spec_error(node, f"arg_reduce axis {attrs['axis']} is out of range for {x}")
    axis = attrs["axis"] % rank
    return [TensorSpec(_out_shape(x.shape, (axis,), attrs["keepdims"]), "int64")]


def _arg_forward(attrs, inputs, outputs):
    x = inputs[0]
    axis = attrs["axis"] % x.ndim
    fn = np.argmax if attrs["mode"] == "max" else np.argmin
    if attrs["select_last_index"]:
        flipped = np.flip(x, axis)
        idx = x.shape[axis] - 1 - fn(flipped, axis=axis, keepdims=True)
    else:
        idx = fn(x, axis=axis, keepdims=True)
    outputs[0][...] = idx.reshape(outputs[0].shape)


def _no_gradient(ctx, node, dys):
    return [None]


ARG_REDUCE = register(OpDef(
    name="arg_reduce", family="reduce", arity=(1, 1),
    attrs={"mode": Attr(choice("max", "min"), "max"), "axis": Attr(to_int, 0),
           "keepdims": Attr(to_bool, True), "select_last_index": Attr(to_bool, False)},
    infer=_arg_infer, forward=_arg_forward, cost=_cost, pattern=OpPattern.REDUCTION,
    backward=_no_gradient, doc=__doc__))


# ---- the gradient -------------------------------------------------------------------------------
def reduce_gradient(mode: str, dy, x, y, axes: tuple) -> np.ndarray:
    """dx of ``reduce`` in float64; dy and y have kept dims."""
    x = np.asarray(x, np.float64)
    dy, y = np.asarray(dy, np.float64), np.asarray(y, np.float64)
    if mode == "sum":
        d = np.ones_like(x)
    elif mode == "mean":
        d = np.full_like(x, 1.0 / max(1, int(np.prod([x.shape[a] for a in axes]))))
    elif mode in ("max", "min"):
        hit = (x == y).astype(np.float64)
        d = hit / np.sum(hit, axis=axes, keepdims=True)
    elif mode == "prod":
        d = y / x
    elif mode == "l1":
        d = np.sign(x)
    elif mode == "l2":
        d = x / y
    elif mode == "sumsq":
        d = 2 * x
    elif mode == "logsum":
        d = np.broadcast_to(np.exp(-y), x.shape)
    else:  # logsumexp
        d = np.exp(x - y)
    return dy * d


def _grad_infer(attrs, ins, node):
    dy, x, y = ins
    axes = reduced_axes(attrs["axes"], len(x.shape), node)
    if dy.shape != _out_shape(x.shape, axes, attrs["keepdims"]) or dy.shape != y.shape:
        raise spec_error(node, f"reduce_grad: dy {dy} and y {y} are not the reduction of {x}")
    return [TensorSpec(x.shape, float_dtype(dy, node, "dy"))]


def _grad(attrs, inputs, outputs):
    dy, x, y = inputs
    axes = reduced_axes(attrs["axes"], x.ndim)
    kept = _out_shape(x.shape, axes, True)
    with np.errstate(divide="ignore", invalid="ignore"):
        g = reduce_gradient(attrs["mode"], dy.reshape(kept), x, y.reshape(kept), axes)
    np.copyto(outputs[0], g, casting="unsafe")


REDUCE_GRAD = register(OpDef(
    name="reduce_grad", family="grad", arity=(3, 3), attrs=_ATTRS, infer=_grad_infer,
    forward=_grad, cost=elementwise_cost(4), pattern=OpPattern.BROADCAST, doc=__doc__))
