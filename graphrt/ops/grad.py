"""Gradient ops: what the backward (VJP) rules of the other families add to a training graph.

Each is an ordinary op (attributes, inference, a vectorized numpy forward, cost, pattern); the rule
that emits it lives with its forward op (``conv.py``'s rule emits ``conv2d_grad_input``, ...).
Gradient ops have no backward rule themselves: graphrt differentiates once.

Convolution and dense (``dy`` is d(loss)/d(output), shapes as in the forward op):

- ``conv2d_grad_input(dy, weight)`` -> dx (N, C, H, W): one GEMM per group, then col2im by one
  strided add per kernel offset. Attributes: the conv's ``stride``, ``pads``, ``dilation``,
  ``groups`` and ``input_size`` (H, W), which strides alone cannot recover.
- ``conv2d_grad_weight(x, dy)`` -> dweight (O, C/groups, KH, KW): im2col columns, one GEMM per
  group. Attributes: the conv's and ``kernel`` (KH, KW).
- ``reduce_channels(dy)`` -> (C,): the sum over every axis but 1 (bias gradients).
- ``reduce_like(dy, x)``: dy summed over the axes along which x was broadcast (numpy's rules, the
  batch rules of ``add``/``mul``), shaped like x: the gradient of a broadcast input.
- ``dense_grad_input(dy, weight)`` = dy @ weight; ``dense_grad_weight(dy, x)`` = dy.T @ x.
- ``matmul_grad(a, b, dy)``: the gradient of ``matmul``'s operand ``operand`` (0: a, 1: b):
  dy @ b^T or a^T @ dy on the last two axes (1-D operands promoted as numpy does), summed over the
  stack axes that operand was broadcast along.

Elementwise and softmax (``y`` the forward output, ``x`` its input; each may write over ``dy``):

- ``relu_grad(dy, t)``: dy where t > 0, else ``negative_slope`` * dy; ``t`` is the relu's input, or
  its output when the slope is >= 0 (the sign is the same). At 0 the slope applies (Caffe, PyTorch).
- ``tanh_grad(dy, y)`` = dy * (1 - y^2); ``sigmoid_grad(dy, y)`` = dy * y * (1 - y).
- ``scale_grad(dy, x)`` = dy * power * scale * (shift + scale * x) ^ (power - 1).
- ``softmax_grad(dy, y)`` = y * (dy - sum(dy * y)); ``log_softmax_grad(dy, y)`` = dy - exp(y) *
  sum(dy), sums along ``axis``.
- ``zeros_like(x)``: zeros shaped like x (the gradient of an output nothing reads).

Losses (``dloss`` the scalar gradient of the loss):

- ``softmax_cross_entropy_grad(logits, labels, dloss)`` = (softmax(logits) - onehot) / N * dloss
  (dloss of shape () or (1,)).
- ``nll_loss_grad(labels, dloss)`` = -onehot / N * dloss, (N, ``classes``).

Pooling and normalization are in :mod:`graphrt.ops.grad_spatial`.
"""
from __future__ import annotations

import numpy as np

from ..ir import TensorSpec, spec_error
from .conv import CONV2D, conv_out_size, im2col
from .elementwise import EPILOGUE_ATTRS
from .loss import class_labels
from .math import MATMUL
from .registry import (Attr, OpDef, OpPattern, choice, elementwise_cost, float_dtype, pair,
                       positive, register, to_float, to_int)


def _grad_op(name, infer, forward, attrs=None, arity=(2, 2), cost=None, inplace=None,
             pattern=OpPattern.OPAQUE):
    return register(OpDef(name=name, family="grad", arity=arity, attrs=attrs or {}, infer=infer,
                          forward=forward, cost=cost or elementwise_cost(2), pattern=pattern,
                          inplace=inplace, doc=__doc__))


def _like(index: int):
    """Inference for an op whose output is shaped like input ``index``, all float inputs alike."""
    def infer(attrs, ins, node):
        ref = ins[index]
        dtype = float_dtype(ref, node)
        for i, s in enumerate(ins):
            if s.shape != ref.shape or s.dtype != ref.dtype:
                raise spec_error(node, f"{node.op if node else 'op'} needs inputs of one shape and "
                                       f"dtype: input {index} is {ref} {ref.dtype}, input {i} is "
                                       f"{s} {s.dtype}")
        return [TensorSpec(ref.shape, dtype)]
    return infer


# ---- convolution ------------------------------------------------------------------------------
CONV_ATTRS = {k: a for k, a in CONV2D.attrs.items() if k not in EPILOGUE_ATTRS}  # no epilogue
CHUNK_BYTES = 8 << 20  # columns per GEMM: big enough for BLAS, small enough for cache


def _check_conv_geometry(attrs, n, c, h, w, dy, wshape, node):
    """The forward conv2d this gradient belongs to must map (c, h, w) onto dy's (o, oh, ow)."""
    o, cg, kh, kw = wshape
    g = attrs["groups"]
    (sh, sw), (dh, dw), (t, b, l, r) = attrs["stride"], attrs["dilation"], attrs["pads"]
    want = (o, conv_out_size(h, kh, sh, t, b, dh), conv_out_size(w, kw, sw, l, r, dw))
    if len(dy.shape) != 4 or tuple(dy.shape[1:]) != want or c != cg * g or o % g:
        raise spec_error(node, f"{node.op if node else 'conv2d grad'}: dy {dy} does not match a "
                               f"conv2d of a ({c}, {h}, {w}) input with weight {wshape}, "
                               f"groups {g}")
    if n != dy.shape[0]:
        raise spec_error(node, f"batch of x {n} differs from dy's {dy.shape[0]}")


def _conv_grad_input_infer(attrs, ins, node):
    dy, w = ins
    dtype = float_dtype(dy, node, "dy")
    if len(w.shape) != 4:
        raise spec_error(node, f"conv2d_grad_input expects a 4-D OIHW weight, got {w}")
    h, wd = attrs["input_size"]
    c = w.shape[1] * attrs["groups"]
    _check_conv_geometry(attrs, dy.shape[0], c, h, wd, dy, w.shape, node)
    return [TensorSpec((dy.shape[0], c, h, wd), dtype)]


def _chunk(n: int, per_image: int) -> int:
    return max(1, min(n, CHUNK_BYTES // max(1, per_image)))


def _conv_grad_input(attrs, inputs, outputs):
    dy, w = inputs
    dx = outputs[0]
    n, o, oh, ow = dy.shape
    _, cg, kh, kw = w.shape
    g, og, k = attrs["groups"], o // attrs["groups"], cg * kh * kw
    (sh, sw), (dh, dw), (t, b, l, r) = attrs["stride"], attrs["dilation"], attrs["pads"]
    h, wd = attrs["input_size"]
    step = _chunk(n, k * g * oh * ow * dy.itemsize)
    dxp = np.empty((step, cg * g, h + t + b, wd + l + r), dx.dtype)
    for start in range(0, n, step):
        stop = min(n, start + step)
        part = dxp[:stop - start]
        part[...] = 0
        for gi in range(g):
            wg = w[gi * og:(gi + 1) * og].reshape(og, k)
            cols = np.matmul(wg.T, dy[start:stop, gi * og:(gi + 1) * og].reshape(-1, og, oh * ow))
            cols = cols.reshape(stop - start, cg, kh, kw, oh, ow)
            tgt = part[:, gi * cg:(gi + 1) * cg]
            for i in range(kh):  # col2im: each kernel offset hits distinct pixels, so += is safe
                for j in range(kw):
                    tgt[:, :, i * dh:i * dh + (oh - 1) * sh + 1:sh,
                        j * dw:j * dw + (ow - 1) * sw + 1:sw] += cols[:, :, i, j]
        dx[start:stop] = part[:, :, t:t + h, l:l + wd]


def _conv_grad_weight_infer(attrs, ins, node):
    x, dy = ins
    dtype = float_dtype(x, node)
    if len(x.shape) != 4 or dy.dtype != x.dtype:
        raise spec_error(node, f"conv2d_grad_weight expects 4-D x and dy of one dtype, got {x} "
                               f"{x.dtype} and {dy} {dy.dtype}")
    g = attrs["groups"]
    kh, kw = attrs["kernel"]
    n, c, h, w = x.shape
    o = dy.shape[1] if len(dy.shape) == 4 else None
    if c % g or o is None:
        raise spec_error(node, f"conv2d_grad_weight: {c} channels are not divisible by groups={g}")
    _check_conv_geometry(attrs, n, c, h, w, dy, (o, c // g, kh, kw), node)
    return [TensorSpec((o, c // g, kh, kw), dtype)]


def _conv_grad_weight(attrs, inputs, outputs):
    x, dy = inputs
    dw = outputs[0]
    n, c, h, wd = x.shape
    o, oh, ow = dy.shape[1:]
    g, (kh, kw) = attrs["groups"], attrs["kernel"]
    og, cg = o // g, c // g
    dw[...] = 0
    step = _chunk(n, cg * kh * kw * oh * ow * x.itemsize)
    for start in range(0, n, step):
        stop = min(n, start + step)
        cols = im2col(x[start:stop], kh, kw, attrs["stride"], attrs["pads"], attrs["dilation"])
        for gi in range(g):
            # (cg, kh, kw) x (n, oh, ow): the GEMM's right operand, gathered once
            src = cols[:, :, :, gi * cg:(gi + 1) * cg].transpose(3, 4, 5, 0, 1, 2)
            src = np.ascontiguousarray(src).reshape(cg * kh * kw, -1)
            dyg = dy[start:stop, gi * og:(gi + 1) * og].transpose(1, 0, 2, 3).reshape(og, -1)
            dw[gi * og:(gi + 1) * og] += (dyg @ src.T).reshape(og, cg, kh, kw)


def _conv_grad_cost(dy_index: int):
    """Flops of the forward conv: 2 per multiply-add, |dy| * (C/groups) * KH * KW of them."""
    def cost(attrs, ins, outs, batch):
        dy = ins[dy_index]
        if dy_index == 0:  # conv2d_grad_input(dy, weight)
            per_out = int(np.prod(ins[1].shape[1:]))
        else:  # conv2d_grad_weight(x, dy)
            per_out = ins[0].shape[1] // attrs["groups"] * attrs["kernel"][0] * attrs["kernel"][1]
        return 2 * int(np.prod(dy.concrete(batch))) * per_out, sum(
            s.nbytes(batch) for s in list(ins) + list(outs))
    return cost


CONV2D_GRAD_INPUT = _grad_op(
    "conv2d_grad_input", _conv_grad_input_infer, _conv_grad_input,
    {**CONV_ATTRS, "input_size": Attr(positive(pair))}, cost=_conv_grad_cost(0))
CONV2D_GRAD_WEIGHT = _grad_op(
    "conv2d_grad_weight", _conv_grad_weight_infer, _conv_grad_weight,
    {**CONV_ATTRS, "kernel": Attr(positive(pair))}, cost=_conv_grad_cost(1))


# ---- reductions and dense ---------------------------------------------------------------------
def _reduce_infer(attrs, ins, node):
    x = ins[0]
    dtype = float_dtype(x, node)
    if len(x.shape) < 2 or x.shape[1] is None:
        raise spec_error(node, f"reduce_channels expects (N, C, ...) input, got {x}")
    return [TensorSpec((x.shape[1],), dtype)]


def _reduce_channels(attrs, inputs, outputs):
    x = inputs[0]
    axes = (0,) + tuple(range(2, x.ndim))
    outputs[0][...] = x.sum(axis=axes, dtype=np.float64)


def _reduce_like_infer(attrs, ins, node):
    dy, x = ins
    dtype = float_dtype(dy, node, "dy")
    lead = len(dy.shape) - len(x.shape)
    if lead < 0 or (x.batched and lead) or any(
            d not in (1, e) for d, e in zip(x.shape, dy.shape[lead:]) if d is not None):
        raise spec_error(node, f"reduce_like: {x} does not broadcast to dy {dy}")
    return [TensorSpec(x.shape, dtype)]


def _reduce_like(attrs, inputs, outputs):
    dy, out = inputs[0], outputs[0]
    lead = dy.ndim - out.ndim
    axes = tuple(range(lead)) + tuple(lead + i for i, d in enumerate(out.shape)
                                      if d == 1 and dy.shape[lead + i] != 1)
    out[...] = dy.sum(axis=axes, dtype=np.float64).reshape(out.shape)


def _dense_grad_input_infer(attrs, ins, node):
    dy, w = ins
    dtype = float_dtype(dy, node, "dy")
    if len(dy.shape) != 2 or len(w.shape) != 2 or dy.shape[1] != w.shape[0]:
        raise spec_error(node, f"dense_grad_input needs dy (N, out) and weight (out, in), got "
                               f"{dy} and {w}")
    return [TensorSpec((dy.shape[0], w.shape[1]), dtype)]


def _dense_grad_weight_infer(attrs, ins, node):
    dy, x = ins
    dtype = float_dtype(dy, node, "dy")
    if len(dy.shape) != 2 or len(x.shape) != 2 or dy.shape[0] != x.shape[0]:
        raise spec_error(node, f"dense_grad_weight needs dy (N, out) and x (N, in), got {dy} "
                               f"and {x}")
    return [TensorSpec((dy.shape[1], x.shape[1]), dtype)]


def _dense_cost(attrs, ins, outs, batch):
    a, b = (s.concrete(batch) for s in ins)
    return 2 * int(np.prod(a)) * b[-1], sum(s.nbytes(batch) for s in list(ins) + list(outs))


REDUCE_CHANNELS = _grad_op("reduce_channels", _reduce_infer, _reduce_channels, arity=(1, 1),
                           cost=elementwise_cost(1), pattern=OpPattern.REDUCTION)
REDUCE_LIKE = _grad_op("reduce_like", _reduce_like_infer, _reduce_like, cost=elementwise_cost(1),
                       pattern=OpPattern.REDUCTION)
DENSE_GRAD_INPUT = _grad_op("dense_grad_input", _dense_grad_input_infer,
                            lambda attrs, ins, outs: np.matmul(ins[0], ins[1], out=outs[0]),
                            cost=_dense_cost)
DENSE_GRAD_WEIGHT = _grad_op("dense_grad_weight", _dense_grad_weight_infer,
                             lambda attrs, ins, outs: np.matmul(ins[0].T, ins[1], out=outs[0]),
                             cost=_dense_cost)


# ---- elementwise and softmax ------------------------------------------------------------------
# each forward reads all of its inputs before writing, so the output may overwrite dy (inplace=0)
def _relu_grad(attrs, inputs, outputs):
    dy, t = inputs
    one = dy.dtype.type(1)
    np.multiply(dy, np.where(t > 0, one, dy.dtype.type(attrs["negative_slope"])), out=outputs[0])


def _tanh_grad(attrs, inputs, outputs):
    dy, y = inputs
    np.multiply(dy, 1 - np.square(y), out=outputs[0])


def _sigmoid_grad(attrs, inputs, outputs):
    dy, y = inputs
    np.multiply(dy, y * (1 - y), out=outputs[0])


def _scale_grad(attrs, inputs, outputs):
    dy, x = inputs
    p, s, shift = attrs["power"], attrs["scale"], attrs["shift"]
    if p == 0.0:
        outputs[0][...] = 0
        return
    t = dy.dtype.type
    slope = t(p * s) * np.power(t(shift) + t(s) * x, t(p - 1.0)) if p != 1.0 else t(s)
    np.multiply(dy, slope, out=outputs[0])


def _softmax_grad(attrs, inputs, outputs):
    dy, y = inputs
    dot = np.sum(dy * y, axis=attrs["axis"], keepdims=True)
    np.subtract(dy, dot, out=outputs[0])
    outputs[0] *= y


def _log_softmax_grad(attrs, inputs, outputs):
    dy, y = inputs
    total = np.sum(dy, axis=attrs["axis"], keepdims=True)
    np.subtract(dy, np.exp(y) * total, out=outputs[0])


def _softmax_axis_infer(attrs, ins, node):
    out = _like(1)(attrs, ins, node)
    if not -len(ins[0].shape) <= attrs["axis"] < len(ins[0].shape):
        raise spec_error(node, f"axis {attrs['axis']} is out of range for {ins[0]}")
    return out


def _zeros(attrs, inputs, outputs):
    outputs[0][...] = 0


def _elementwise_grad(name, forward, flops, attrs=None, infer=None):
    return _grad_op(name, infer or _like(1), forward, attrs, cost=elementwise_cost(flops),
                    inplace=0, pattern=OpPattern.ELEMWISE)


RELU_GRAD = _elementwise_grad("relu_grad", _relu_grad, 2, {"negative_slope": Attr(to_float, 0.0)})
TANH_GRAD = _elementwise_grad("tanh_grad", _tanh_grad, 3)
SIGMOID_GRAD = _elementwise_grad("sigmoid_grad", _sigmoid_grad, 3)
SCALE_GRAD = _elementwise_grad("scale_grad", _scale_grad, 5, {
    "power": Attr(to_float, 1.0), "scale": Attr(to_float, 1.0), "shift": Attr(to_float, 0.0)})
SOFTMAX_GRAD = _elementwise_grad("softmax_grad", _softmax_grad, 4, {"axis": Attr(to_int, 1)},
                                 _softmax_axis_infer)
LOG_SOFTMAX_GRAD = _elementwise_grad("log_softmax_grad", _log_softmax_grad, 4,
                                     {"axis": Attr(to_int, 1)}, _softmax_axis_infer)
ZEROS_LIKE = _grad_op("zeros_like", lambda attrs, ins, node: [TensorSpec(ins[0].shape,
                                                                         ins[0].dtype)],
                      _zeros, arity=(1, 1), cost=elementwise_cost(0), pattern=OpPattern.ELEMWISE)


# ---- losses -----------------------------------------------------------------------------------
def _check_dloss(dloss, dtype, node):
    # () or (1,): Graph.add_param stores a 0-d seed gradient as (1,)
    if dloss.shape not in ((), (1,)) or dloss.dtype != dtype:
        raise spec_error(node, f"dloss must be a {dtype} scalar, got {dloss} {dloss.dtype}")


def _xent_grad_infer(attrs, ins, node):
    logits, labels, dloss = ins
    dtype = float_dtype(logits, node, "logits")
    if len(logits.shape) != 2 or len(labels.shape) != 1:
        raise spec_error(node, f"softmax_cross_entropy_grad expects (N, C) logits and (N,) labels, "
                               f"got {logits} and {labels}")
    _check_dloss(dloss, dtype, node)
    return [TensorSpec(logits.shape, dtype)]


def _xent_grad(attrs, inputs, outputs):
    logits, labels, dloss = inputs
    n = len(labels)
    idx = class_labels(labels, logits.shape[1])
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    z[np.arange(n), idx] -= 1
    z *= float(np.ravel(dloss)[0]) / max(n, 1)
    outputs[0][...] = z


def _nll_grad_infer(attrs, ins, node):
    labels, dloss = ins
    dtype = float_dtype(dloss, node, "dloss")
    if len(labels.shape) != 1:
        raise spec_error(node, f"nll_loss_grad expects (N,) labels, got {labels}")
    _check_dloss(dloss, dtype, node)
    return [TensorSpec((labels.shape[0], attrs["classes"]), dtype)]


def _nll_grad(attrs, inputs, outputs):
    labels, dloss = inputs
    out = outputs[0]
    idx = class_labels(labels, out.shape[1])
    out[...] = 0
    out[np.arange(len(idx)), idx] = -float(np.ravel(dloss)[0]) / max(len(idx), 1)


SOFTMAX_CROSS_ENTROPY_GRAD = _grad_op("softmax_cross_entropy_grad", _xent_grad_infer, _xent_grad,
                                      arity=(3, 3), cost=elementwise_cost(5))
NLL_LOSS_GRAD = _grad_op("nll_loss_grad", _nll_grad_infer, _nll_grad,
                         {"classes": Attr(positive(to_int))}, cost=elementwise_cost(1))


# ---- matmul -----------------------------------------------------------------------------------
def _matmul_grad_infer(attrs, ins, node):
    a, b, dy = ins
    want = MATMUL.infer({}, [a, b], node)[0]
    if dy != want:
        raise spec_error(node, f"matmul_grad: dy {dy} {dy.dtype} is not the matmul output {want} "
                               f"{want.dtype} of {a} and {b}")
    operand = ins[attrs["operand"]]
    return [TensorSpec(operand.shape, operand.dtype)]


def _matmul_grad(attrs, inputs, outputs):
    a, b, dy = inputs
    out = outputs[0]
    g = dy
    if a.ndim == 1:  # numpy's promotions of 1-D operands, undone on dy too
        a, g = a[None, :], np.expand_dims(g, -2)
    if b.ndim == 1:
        b, g = b[:, None], np.expand_dims(g, -1)
    if attrs["operand"] == 0:
        full, target = np.matmul(g, np.swapaxes(b, -1, -2)), a.shape
    else:
        full, target = np.matmul(np.swapaxes(a, -1, -2), g), b.shape
    full = full.sum(axis=tuple(range(full.ndim - len(target))))  # stack axes the operand lacks
    ones = tuple(i for i, d in enumerate(target) if d == 1 and full.shape[i] != 1)
    out[...] = full.sum(axis=ones, keepdims=True).reshape(out.shape)


def _matmul_grad_cost(attrs, ins, outs, batch):
    k = ins[1 - attrs["operand"]].concrete(batch)
    inner = k[-1] if attrs["operand"] == 0 or len(k) == 1 else k[-2]
    return 2 * int(np.prod(ins[2].concrete(batch))) * inner, sum(
        s.nbytes(batch) for s in list(ins) + list(outs))


MATMUL_GRAD = _grad_op("matmul_grad", _matmul_grad_infer, _matmul_grad,
                       {"operand": Attr(choice(0, 1))}, arity=(3, 3), cost=_matmul_grad_cost)
