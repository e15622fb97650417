"""Normalization: ``lrn`` across channels, ``batch_norm`` (inference), ``channel_affine``.

``lrn``: y = x / (k + alpha / size * sum(x^2 over the ``size`` channels around c)) ^ beta, the
window running from c - (size-1)//2 to c + size//2 (Caffe, MXNet, Torch SpatialCrossMapLRN, ONNX).

``batch_norm``: inputs x (N, C, ...), mean (C,), var (C,), optional gamma (C,) and beta (C,);
y = (x - mean) / sqrt(var + eps) * gamma + beta, per channel (axis 1). ``momentum``, ``unbiased``
and ``caffe_fraction`` do not change it: they record the source framework's running-statistics
convention for ``batch_norm_train`` (autodiff copies them there).

``batch_norm_train(x, gamma, beta, running_mean, running_var[, count]) -> (y, saved_mean,
saved_invstd)``: the training form. It normalizes with the batch mean and biased variance over
every axis but 1 (saved as float outputs for the backward) and updates the running statistics in
place: stat <- (1 - w) * stat + w * batch_stat, with w = ``momentum`` (PyTorch's 0.1 is the
default; Keras' momentum 0.99 is w = 0.01) and the running variance fed the unbiased batch
variance when ``unbiased`` (PyTorch, Caffe; Keras and MXNet use the biased one). With
``caffe_fraction`` f > 0 it follows Caffe's BatchNorm, whose blobs hold sums scaled by a factor S
(state input ``count``, float): graphrt stores those blobs divided by S, so w = 1 / (f * S + 1) and
S <- f * S + 1. Without f, a ``count`` input just counts the steps (PyTorch's
``num_batches_tracked``). Gradients of saved_mean and saved_invstd are not propagated. With a
``group`` (synchronized batch norm in data-parallel training, :mod:`.collective`) the batch mean and
variance are averaged over the group's ranks (each rank's shard of the global batch the same size)
and ``batch_norm_train_grad`` sums its per-channel reductions over them, so the ranks normalize and
differentiate as one process with the global batch.

``channel_affine``: inputs x, scale (C,), optional bias (C,); y = x * scale + bias per channel
(Caffe's ``Scale`` layer with ``bias_term``).
"""
from __future__ import annotations

import numpy as np

from ..ir import TensorSpec, spec_error
from .registry import (Attr, OpDef, OpPattern, elementwise_cost, float_dtype, nonnegative,
                       positive, register, to_bool, to_float, to_int, to_str)
from .collective import group_reduce, group_size


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


def channel_window_sums(v: np.ndarray, lo, hi) -> np.ndarray:
    """``out[:, c] = v[:, lo[c]:hi[c]].sum(axis=1)``, from prefix sums over the channels."""
    csum = np.zeros((v.shape[0], v.shape[1] + 1) + v.shape[2:], dtype=v.dtype)
    np.cumsum(v, axis=1, out=csum[:, 1:])
    return csum[:, hi] - csum[:, lo]


def lrn_denominator(x: np.ndarray, attrs) -> np.ndarray:
    """``k + alpha / size * (sum of x^2 over the window of each channel)``, in float64.

    float64: window sums are differences of prefix sums, which cancel catastrophically in float32
    when channel magnitudes differ (relative errors of 1e-4 and more on the small channels).
    """
    size, c = attrs["size"], x.shape[1]
    pre = (size - 1) // 2
    start = np.arange(c) - pre
    scale = channel_window_sums(np.square(x, dtype=np.float64), np.clip(start, 0, c),
                                np.clip(start + size, 0, c))
    scale *= attrs["alpha"] / size
    scale += attrs["k"]
    return scale


def _lrn_forward(attrs, inputs, outputs):
    scale = lrn_denominator(inputs[0], attrs)
    np.power(scale, -attrs["beta"], out=scale)
    np.multiply(inputs[0], scale, out=outputs[0])


def _lrn_backward(ctx, node, dys):
    return [ctx.add("lrn_grad", [node.inputs[0], dys[0]], dict(node.attrs)) if ctx.wants(0)
            else None]


LRN = register(OpDef(
    name="lrn", family="norm", arity=(1, 1),
    attrs={"size": Attr(positive(to_int)), "alpha": Attr(to_float, 1e-4),
           "beta": Attr(to_float, 0.75), "k": Attr(to_float, 1.0)},
    infer=_lrn_infer, forward=_lrn_forward, cost=elementwise_cost(6),
    pattern=OpPattern.OPAQUE, backward=_lrn_backward, doc=__doc__))


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


def _bn_backward(ctx, node, dys):
    """Running statistics are constants: dx = dy * gamma / sqrt(var + eps) per channel,
    dgamma = sum(dy * xhat), dbeta = sum(dy)."""
    x, mean, var = node.inputs[:3]
    dy, eps, affine = dys[0], node.attrs["eps"], len(node.inputs) == 5
    grads = [None] * len(node.inputs)
    if ctx.wants(0):
        inv = ctx.add("scale", [var], {"power": -0.5, "shift": eps})
        grads[0] = ctx.add("channel_affine", [dy, ctx.add("mul", [inv, node.inputs[3]])
                                              if affine else inv])
    if affine and ctx.wants(3):
        xhat = ctx.add("batch_norm", [x, mean, var], {"eps": eps})
        grads[3] = ctx.add("reduce_channels", [ctx.add("mul", [dy, xhat])])
    if affine and ctx.wants(4):
        grads[4] = ctx.add("reduce_channels", [dy])
    return grads


def _fraction(v):
    v = to_float(v)
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"expected a value in [0, 1], got {v}")
    return v


RUNNING_STATS_ATTRS = {"momentum": Attr(_fraction, 0.1), "unbiased": Attr(to_bool, True),
                       "caffe_fraction": Attr(nonnegative(to_float), 0.0)}
BATCH_NORM = register(OpDef(
    name="batch_norm", family="norm", arity=(3, 5),
    attrs={"eps": Attr(positive(to_float), 1e-5), **RUNNING_STATS_ATTRS},
    infer=_bn_infer, forward=_bn_forward, cost=elementwise_cost(2),
    pattern=OpPattern.INJECTIVE, inplace=0, backward=_bn_backward, doc=__doc__))


def _bn_train_infer(attrs, ins, node):
    y = _same_as_input(attrs, ins[:5], node)[0]
    if len(ins) == 6 and ins[5].shape not in ((), (1,)):
        raise spec_error(node, f"batch_norm_train's count must be a scalar or (1,) state tensor, "
                               f"got {ins[5]}")
    if attrs["caffe_fraction"] > 0 and (len(ins) != 6 or ins[5].dtype[0] != "f"):
        raise spec_error(node, "batch_norm_train with caffe_fraction needs Caffe's scale factor "
                               "as a float state input 5")
    c = ins[0].shape[1]
    return [y, TensorSpec((c,), y.dtype), TensorSpec((c,), y.dtype)]


def _bn_train(attrs, inputs, outputs):
    x, gamma, beta = inputs[:3]
    y, saved_mean, saved_invstd = outputs
    shape, axes = channel_shape(x), (0,) + tuple(range(2, x.ndim))
    group = attrs.get("group", "")  # nodes made by autodiff carry only the attributes they set
    mean = group_reduce(group, x.mean(axis=axes, dtype=np.float64), "mean")
    np.subtract(x, mean.astype(x.dtype).reshape(shape), out=y)
    # biased: what normalization uses
    var = group_reduce(group, np.square(y).mean(axis=axes, dtype=np.float64), "mean")
    invstd = 1.0 / np.sqrt(var + attrs["eps"])
    y *= (invstd * gamma).astype(x.dtype).reshape(shape)
    y += beta.astype(x.dtype).reshape(shape)
    saved_mean[...] = mean
    saved_invstd[...] = invstd
    _update_running_stats(attrs, inputs, mean, var, x.size // max(x.shape[1], 1) * group_size(group))


def running_weight(attrs, inputs) -> float:
    """The weight of this batch's statistics in the running ones (``momentum``, or Caffe's
    ``1 / (caffe_fraction * count + 1)``), advancing the ``count`` state when there is one."""
    count = inputs[5] if len(inputs) == 6 else None
    if attrs["caffe_fraction"] > 0:
        scale_factor = attrs["caffe_fraction"] * float(count.reshape(-1)[0]) + 1.0
        count[...] = scale_factor
        return 1.0 / scale_factor
    if count is not None:
        count += 1
    return attrs["momentum"]


def _update_running_stats(attrs, inputs, mean, var, m: int):
    running_mean, running_var = inputs[3], inputs[4]
    if attrs["unbiased"] and m > 1:
        var = var * (m / (m - 1))
    w = running_weight(attrs, inputs)
    running_mean[...] = (1.0 - w) * running_mean + w * mean
    running_var[...] = (1.0 - w) * running_var + w * var


def _bn_train_backward(ctx, node, dys):
    grads = [None] * len(node.inputs)
    if dys[0] is None or not any(ctx.wants(i) for i in range(3)):
        return grads
    x, gamma = node.inputs[:2]
    dx, dgamma, dbeta = ctx.add("batch_norm_train_grad", [x, gamma, node.outputs[1],
                                                         node.outputs[2], dys[0]],
                                {"group": node.attrs.get("group", "")})
    return [g if ctx.wants(i) else None for i, g in enumerate((dx, dgamma, dbeta))] + grads[3:]


BATCH_NORM_TRAIN = register(OpDef(
    name="batch_norm_train", family="norm", arity=(5, 6),
    attrs={"eps": Attr(positive(to_float), 1e-5), **RUNNING_STATS_ATTRS, "group": Attr(to_str, "")},
    infer=_bn_train_infer, forward=_bn_train, cost=elementwise_cost(8),
    pattern=OpPattern.OPAQUE, outputs=lambda attrs: 3, writes=(3, 4, 5),
    backward=_bn_train_backward, doc=__doc__))


def _affine_forward(attrs, inputs, outputs):
    x, out = inputs[0], outputs[0]
    shape = channel_shape(x)
    np.multiply(x, inputs[1].reshape(shape), out=out)
    if len(inputs) == 3:
        out += inputs[2].reshape(shape)


def _affine_backward(ctx, node, dys):
    """dx = dy * scale, dscale = sum(dy * x), dbias = sum(dy), sums over every axis but 1."""
    x, scale, dy = node.inputs[0], node.inputs[1], dys[0]
    grads = [None] * len(node.inputs)
    if ctx.wants(0):
        grads[0] = ctx.add("channel_affine", [dy, scale])
    if ctx.wants(1):
        grads[1] = ctx.add("reduce_channels", [ctx.add("mul", [dy, x])])
    if len(node.inputs) == 3 and ctx.wants(2):
        grads[2] = ctx.add("reduce_channels", [dy])
    return grads


CHANNEL_AFFINE = register(OpDef(
    name="channel_affine", family="norm", arity=(2, 3), attrs={},
    infer=_same_as_input, forward=_affine_forward, cost=elementwise_cost(2),
    pattern=OpPattern.BROADCAST, inplace=0, backward=_affine_backward, doc=__doc__))
