"""``dense``: y = x @ weight.T + bias with weight (out, in) — Caffe InnerProduct, Torch Linear,
MXNet FullyConnected, Keras Dense (whose (in, out) kernel frontends transpose on load).

``activation`` (none, relu, tanh, sigmoid) and ``negative_slope`` are the fused epilogue the
optimizer sets. The input must be 2-D (N, in); frontends insert ``flatten`` where the source flattens implicitly.
"""
from __future__ import annotations

import numpy as np

from ..ir import TensorSpec, spec_error
from .elementwise import EPILOGUE_ATTRS, activate, epilogue_backward
from .registry import OpDef, OpPattern, float_dtype, register


def _infer(attrs, ins, node):
    x, w = ins[0], ins[1]
    dtype = float_dtype(x, node)
    if len(w.shape) != 2:
        raise spec_error(node, f"dense weight must be 2-D (out, in), got {w}")
    out_f, in_f = w.shape
    if len(x.shape) != 2:
        raise spec_error(node, f"dense expects a 2-D (N, {in_f}) input, got shape {x}; "
                               "flatten it first")
    if x.shape[1] != in_f:
        raise spec_error(node, f"dense expects {in_f} input features, got {x.shape[1]} "
                               f"(input shape {x}, weight {w})")
    if len(ins) == 3 and ins[2].shape != (out_f,):
        raise spec_error(node, f"dense bias must have shape ({out_f},), got {ins[2]}")
    return [TensorSpec((x.shape[0], out_f), dtype)]


def _forward(attrs, inputs, outputs):
    np.matmul(inputs[0], inputs[1].T, out=outputs[0])
    if len(inputs) == 3:
        outputs[0] += inputs[2]
    activate(outputs[0], attrs["activation"], attrs["negative_slope"], attrs["activation_params"])


def _cost(attrs, ins, outs, batch):
    out_f, in_f = ins[1].shape
    n = outs[0].concrete(batch)[0]
    return 2 * n * out_f * in_f, sum(s.nbytes(batch) for s in list(ins) + list(outs))


def _backward(ctx, node, dys):
    """dx = g @ w, dw = g.T @ x, db = sum of g over the batch, with g the gradient of the
    pre-activation output (the fused epilogue's gradient applied first)."""
    x, w = node.inputs[:2]
    g = epilogue_backward(ctx, node, dys[0])
    grads = [None] * len(node.inputs)
    if ctx.wants(0):
        grads[0] = ctx.add("dense_grad_input", [g, w])
    if ctx.wants(1):
        grads[1] = ctx.add("dense_grad_weight", [g, x])
    if len(node.inputs) == 3 and ctx.wants(2):
        grads[2] = ctx.add("reduce_channels", [g])
    return grads


DENSE = register(OpDef(
    name="dense", family="dense", arity=(2, 3), attrs=EPILOGUE_ATTRS, infer=_infer, forward=_forward,
    cost=_cost, pattern=OpPattern.OUT_ELEMWISE_FUSABLE, backward=_backward, doc=__doc__))
