"""Broadcasting elementwise ops beyond ``add``/``mul``: ``sub``, ``div``, ``pow``, ``maximum``,
``minimum``, ``where``, the comparisons ``equal``, ``greater``, ``less``, ``greater_equal``,
``less_equal``, ``prelu``, and ``cast``.

Inputs broadcast as numpy's (ONNX's) rules with the batch rules of ``add`` (see
:func:`graphrt.ops.elementwise.broadcast_shape`).

- ``sub(a, b)`` = a - b; ``div(a, b)`` = a / b; ``pow(a, b)`` = a ** b (NaN for a negative base and
  a fractional exponent, as numpy).
- ``maximum(x0, x1, ...)`` / ``minimum``: elementwise max / min of any number of inputs (Caffe
  Eltwise MAX, Keras Maximum/Minimum, ONNX Max/Min). The gradient goes to the first input that
  attains it (Caffe's rule for ties; PyTorch's ``torch.maximum`` splits a tie evenly).
- ``where(cond, a, b)``: a where cond is nonzero, else b. ``equal(a, b)``: a == b as ``bool``;
  likewise ``greater``, ``less``, ``greater_equal``, ``less_equal`` (no gradient).
- ``prelu(x, slope)``: x where x > 0, else slope * x; ``slope`` broadcasts against x (Caffe
  PReLU's per-channel (C, 1, 1), ONNX PRelu, Keras PReLU).
- ``cast(x)``: x converted to ``to`` (a numpy dtype name).

``binary_grad(dy, *inputs)`` with ``op`` and ``operand`` is the gradient of one operand of any of
them, at the output's (broadcast) shape; the backward rules sum it to the operand's shape with
``reduce_like``.
"""
from __future__ import annotations

import numpy as np

from ..ir import TensorSpec, spec_error
from .elementwise import _unbroadcast, broadcast_shape
from .registry import (Attr, OpDef, OpPattern, choice, elementwise_cost, float_dtype, register,
                       to_int, to_str)

ARITHMETIC = ("sub", "div", "pow", "maximum", "minimum", "prelu")


def _same_dtype(ins, node, what="inputs"):
    first = ins[0].dtype
    for i, s in enumerate(ins[1:], 1):
        if s.dtype != first:
            raise spec_error(node, f"{node.op if node else 'op'} needs {what} of one dtype: "
                                   f"{ins[0]} {first} and {s} {s.dtype}")
    return first


def _arith_infer(attrs, ins, node):
    dtype = _same_dtype(ins, node)
    float_dtype(ins[0], node)
    return [TensorSpec(broadcast_shape(ins, node), dtype)]


def _where_infer(attrs, ins, node):
    dtype = _same_dtype(ins[1:], node, "values")
    return [TensorSpec(broadcast_shape(ins, node), dtype)]


def _equal_infer(attrs, ins, node):
    _same_dtype(ins, node)
    return [TensorSpec(broadcast_shape(ins, node), "bool")]


def _prelu(attrs, inputs, outputs):
    x, slope = inputs
    out = outputs[0]
    np.multiply(x, slope, out=out)
    if (slope <= 1).all():  # then x > 0 exactly where x >= slope * x: one ufunc, no mask
        np.maximum(out, x, out=out)
    else:
        np.copyto(out, x, where=x > 0)


def _where(attrs, inputs, outputs):
    cond, a, b = inputs
    np.copyto(outputs[0], b)
    np.copyto(outputs[0], a, where=cond.astype(bool, copy=False))


def _nary(ufunc):
    def forward(attrs, inputs, outputs):
        out = outputs[0]
        if len(inputs) == 1:
            np.copyto(out, inputs[0])
        else:
            ufunc(inputs[0], inputs[1], out=out)
        for x in inputs[2:]:
            ufunc(out, x, out=out)
    return forward


def _binary_backward(ctx, node, dys):
    """binary_grad of each wanted operand, summed to its shape where it was broadcast."""
    grads = []
    for i, x in enumerate(node.inputs):
        if not ctx.wants(i) or dys[0] is None or (node.op == "where" and i == 0):
            grads.append(None)
            continue
        g = ctx.add("binary_grad", [dys[0], *node.inputs], {"op": node.op, "operand": i})
        grads.append(_unbroadcast(ctx, g, x, node.outputs[0]))
    return grads


def _binary(name, forward, arity=(2, 2), infer=_arith_infer, backward=_binary_backward, flops=1):
    return register(OpDef(name=name, family="binary", arity=arity, attrs={}, infer=infer,
                          forward=forward, cost=elementwise_cost(flops),
                          pattern=OpPattern.BROADCAST, backward=backward, doc=__doc__))


def _ufunc(fn):
    return lambda attrs, inputs, outputs: fn(*inputs, out=outputs[0])


def _no_gradient(ctx, node, dys):
    return [None] * len(node.inputs)


SUB = _binary("sub", _ufunc(np.subtract))
DIV = _binary("div", _ufunc(np.divide), flops=4)
POW = _binary("pow", _ufunc(np.power), flops=8)
MAXIMUM = _binary("maximum", _nary(np.maximum), arity=(1, None))
MINIMUM = _binary("minimum", _nary(np.minimum), arity=(1, None))
WHERE = _binary("where", _where, arity=(3, 3), infer=_where_infer)
EQUAL = _binary("equal", _ufunc(np.equal), infer=_equal_infer, backward=_no_gradient)
GREATER = _binary("greater", _ufunc(np.greater), infer=_equal_infer, backward=_no_gradient)
LESS = _binary("less", _ufunc(np.less), infer=_equal_infer, backward=_no_gradient)
GREATER_EQUAL = _binary("greater_equal", _ufunc(np.greater_equal), infer=_equal_infer,
                        backward=_no_gradient)
LESS_EQUAL = _binary("less_equal", _ufunc(np.less_equal), infer=_equal_infer,
                     backward=_no_gradient)
PRELU = _binary("prelu", _prelu, flops=2)


# ---- cast ---------------------------------------------------------------------------------------
def _dtype_name(v) -> str:
    try:
        return str(np.dtype(to_str(v)))
    except TypeError:
        raise ValueError(f"{v!r} is not a numpy dtype name") from None


def _cast_infer(attrs, ins, node):
    return [TensorSpec(ins[0].shape, attrs["to"])]


def _cast(attrs, inputs, outputs):
    np.copyto(outputs[0], inputs[0], casting="unsafe")


def _cast_backward(ctx, node, dys):
    src = ctx.spec(node.inputs[0]).dtype
    if not ctx.wants(0) or dys[0] is None or np.dtype(src).kind != "f":
        return [None]
    return [ctx.add("cast", [dys[0]], {"to": src})]


CAST = register(OpDef(name="cast", family="binary", arity=(1, 1), attrs={"to": Attr(_dtype_name)},
                      infer=_cast_infer, forward=_cast, cost=elementwise_cost(0),
                      pattern=OpPattern.ELEMWISE, backward=_cast_backward, doc=__doc__))


# ---- the gradient -------------------------------------------------------------------------------
def _first_extreme(xs, y, k):
    """1 where input ``k`` equals ``y`` and no earlier input does (the first to attain it)."""
    mask = xs[k] == y
    for x in xs[:k]:
        mask &= ~(x == y)
    return mask


def binary_gradient(op: str, operand: int, dy, xs, y=None):
    """The gradient (at the broadcast shape, float64) of ``op``'s ``operand`` given dy."""
    dy = np.asarray(dy, np.float64)
    xs = [np.asarray(x, np.float64) for x in xs]
    if op in ("maximum", "minimum"):
        y = (np.maximum if op == "maximum" else np.minimum).reduce(np.broadcast_arrays(*xs))
        return dy * _first_extreme(xs, y, operand)
    if op == "where":
        cond = xs[0] != 0
        return dy * (cond if operand == 1 else ~cond)
    a, b = xs
    if op == "sub":
        return dy if operand == 0 else -dy
    if op == "div":
        return dy / b if operand == 0 else -dy * a / (b * b)
    if op == "pow":
        return dy * b * a ** (b - 1) if operand == 0 else dy * a ** b * np.log(a)
    # prelu: x, slope
    return dy * np.where(a > 0, 1.0, b) if operand == 0 else dy * np.minimum(a, 0)


def _grad_infer(attrs, ins, node):
    dy, xs = ins[0], ins[1:]
    op, k = attrs["op"], attrs["operand"]
    if not 0 <= k < len(xs):
        raise spec_error(node, f"binary_grad operand {k} of {len(xs)} inputs")
    shape = broadcast_shape(xs, node)
    if tuple(dy.shape) != shape:
        raise spec_error(node, f"binary_grad of {op}: dy {dy} is not the output shape {shape}")
    return [TensorSpec(shape, float_dtype(dy, node, "dy"))]


def _grad(attrs, inputs, outputs):
    with np.errstate(divide="ignore", invalid="ignore"):
        g = binary_gradient(attrs["op"], attrs["operand"], inputs[0], inputs[1:])
    np.copyto(outputs[0], np.broadcast_to(g, outputs[0].shape), casting="unsafe")


BINARY_GRAD = register(OpDef(
    name="binary_grad", family="grad", arity=(2, None),
    attrs={"op": Attr(choice(*ARITHMETIC, "where")), "operand": Attr(to_int)},
    infer=_grad_infer, forward=_grad, cost=elementwise_cost(6), pattern=OpPattern.BROADCAST,
    doc=__doc__))
