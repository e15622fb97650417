"""Normalization: ``lrn`` across channels, ``batch_norm`` (inference), ``channel_affine``.

``lrn``: y = x / (k + alpha / size * sum(x^2 over the ``size`` channels around c)) ^ beta, the
window running from c - (size-1)//2 to c + size//2 (Caffe, MXNet, Torch SpatialCrossMapLRN, ONNX).

``batch_norm``: inputs x (N, C, ...), mean (C,), var (C,), optional gamma (C,) and beta (C,);
y = (x - mean) / sqrt(var + eps) * gamma + beta, per channel (axis 1).

``channel_affine``: inputs x, scale (C,), optional bias (C,); y = x * scale + bias per channel
(Caffe's ``Scale`` layer with ``bias_term``).
"""
from __future__ import annotations

import numpy as np

from ..graph import TensorSpec, spec_error
from .registry import (Attr, OpDef, OpPattern, elementwise_cost, float_dtype, positive, register,
                       to_float, to_int)


def _same_as_input(attrs, ins, node):
    x = ins[0]
    dtype = float_dtype(x, node)
    if len(x.shape) < 2:
        raise spec_error(node, f"{node.op if node else 'op'} expects (N, C, ...) input, got {x}")
    c = x.shape[1]
    for i, s in enumerate(ins[1:], 1):
        if s.shape != (c,):
            raise spec_error(node, f"parameter {i} must have shape ({c},) for {c} channels, got {s}")
    return [TensorSpec(x.shape, dtype)]


def _lrn_infer(attrs, ins, node):
    if len(ins[0].shape) != 4:
        raise spec_error(node, f"lrn expects a 4-D NCHW input, got {ins[0]}")
    return _same_as_input(attrs, ins, node)


def _lrn_forward(attrs, inputs, outputs):
    x, out = inputs[0], outputs[0]
    size, alpha, beta, k = attrs["size"], attrs["alpha"], attrs["beta"], attrs["k"]
    c = x.shape[1]
    # float64: window sums are differences of prefix sums, which cancel catastrophically in float32
    # when channel magnitudes differ (relative errors of 1e-4 and more on the small channels)
    sq = np.square(x, dtype=np.float64)
    pre = (size - 1) // 2
    # prefix sums over channels give every window sum in one subtraction
    csum = np.zeros((x.shape[0], c + 1) + x.shape[2:], dtype=sq.dtype)
    np.cumsum(sq, axis=1, out=csum[:, 1:])
    lo = np.clip(np.arange(c) - pre, 0, c)
    hi = np.clip(np.arange(c) - pre + size, 0, c)
    scale = csum[:, hi] - csum[:, lo]
    scale *= alpha / size
    scale += k
    np.power(scale, -beta, out=scale)
    np.multiply(x, scale, out=out)


LRN = register(OpDef(
    name="lrn", family="norm", arity=(1, 1),
    attrs={"size": Attr(positive(to_int)), "alpha": Attr(to_float, 1e-4),
           "beta": Attr(to_float, 0.75), "k": Attr(to_float, 1.0)},
    infer=_lrn_infer, forward=_lrn_forward, cost=elementwise_cost(6),
    pattern=OpPattern.OPAQUE, doc=__doc__))


def channel_shape(x: np.ndarray) -> tuple:
    return (1, x.shape[1]) + (1,) * (x.ndim - 2)


def _bn_forward(attrs, inputs, outputs):
    x, mean, var = inputs[:3]
    shape = channel_shape(x)
    inv = 1.0 / np.sqrt(var.astype(np.float64) + attrs["eps"])
    if len(inputs) == 5:
        inv = inv * inputs[3]
        shift = inputs[4] - mean * inv
    else:
        shift = -mean * inv
    np.multiply(x, inv.astype(x.dtype).reshape(shape), out=outputs[0])
    outputs[0] += shift.astype(x.dtype).reshape(shape)


def _bn_infer(attrs, ins, node):
    if len(ins) == 4:
        raise spec_error(node, "batch_norm takes x, mean, var and optionally both gamma and beta")
    return _same_as_input(attrs, ins, node)


BATCH_NORM = register(OpDef(
    name="batch_norm", family="norm", arity=(3, 5),
    attrs={"eps": Attr(positive(to_float), 1e-5)},
    infer=_bn_infer, forward=_bn_forward, cost=elementwise_cost(2),
    pattern=OpPattern.INJECTIVE, inplace=0, doc=__doc__))


def _affine_forward(attrs, inputs, outputs):
    x, out = inputs[0], outputs[0]
    shape = channel_shape(x)
    np.multiply(x, inputs[1].reshape(shape), out=out)
    if len(inputs) == 3:
        out += inputs[2].reshape(shape)


CHANNEL_AFFINE = register(OpDef(
    name="channel_affine", family="norm", arity=(2, 3), attrs={},
    infer=_same_as_input, forward=_affine_forward, cost=elementwise_cost(2),
    pattern=OpPattern.BROADCAST, inplace=0, doc=__doc__))
