"""``softmax`` and ``log_softmax`` along an axis (default 1, the channels), computed stably."""
from __future__ import annotations

import numpy as np

from ..ir import TensorSpec, spec_error
from .registry import Attr, OpDef, OpPattern, elementwise_cost, float_dtype, register, to_int


def _infer(attrs, ins, node):
    x = ins[0]
    dtype = float_dtype(x, node)
    if not -len(x.shape) <= attrs["axis"] < len(x.shape):
        raise spec_error(node, f"axis {attrs['axis']} is out of range for input shape {x}")
    return [TensorSpec(x.shape, dtype)]


def _softmax(attrs, inputs, outputs):
    x, out, axis = inputs[0], outputs[0], attrs["axis"]
    np.subtract(x, x.max(axis=axis, keepdims=True), out=out)
    np.exp(out, out=out)
    out /= out.sum(axis=axis, keepdims=True)


def _log_softmax(attrs, inputs, outputs):
    x, out, axis = inputs[0], outputs[0], attrs["axis"]
    np.subtract(x, x.max(axis=axis, keepdims=True), out=out)
    out -= np.log(np.exp(out).sum(axis=axis, keepdims=True))


def _grad_rule(grad_op: str):
    """dx = grad_op(dy, y) along the same axis (softmax_grad, log_softmax_grad)."""
    def backward(ctx, node, dys):
        if not ctx.wants(0):
            return [None]
        return [ctx.add(grad_op, [dys[0], node.outputs[0]], {"axis": node.attrs["axis"]})]
    return backward


SOFTMAX = register(OpDef(
    name="softmax", family="softmax", arity=(1, 1), attrs={"axis": Attr(to_int, 1)},
    infer=_infer, forward=_softmax, cost=elementwise_cost(4), pattern=OpPattern.OPAQUE,
    inplace=0, backward=_grad_rule("softmax_grad"), doc=__doc__))
LOG_SOFTMAX = register(OpDef(
    name="log_softmax", family="softmax", arity=(1, 1), attrs={"axis": Attr(to_int, 1)},
    infer=_infer, forward=_log_softmax, cost=elementwise_cost(4), pattern=OpPattern.OPAQUE,
    inplace=0, backward=_grad_rule("log_softmax_grad"), doc=__doc__))
