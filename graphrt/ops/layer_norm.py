"""``layer_norm``: normalization over a set of axes of each example, with optional scale and bias
(ONNX LayerNormalization, Keras LayerNormalization, Caffe MVN).

``layer_norm(x[, scale[, bias]])`` with ``axes`` (the normalized axes; negative count from the
end), ``eps``, ``eps_inside_sqrt`` and ``normalize_variance``:

    mu = mean(x over axes), var = mean((x - mu)^2 over axes)
    y = (x - mu) / sqrt(var + eps)        (eps_inside_sqrt, the default: ONNX, Keras)
    y = (x - mu) / (sqrt(var) + eps)      (Caffe MVN)
    y = x - mu                            (normalize_variance false: MVN without variance)
    y = y * scale + bias

``scale`` and ``bias`` have the sizes of the normalized axes, in order (a channel axis: (C,)).
The statistics are computed in float64. ``layer_norm_grad(dy, x[, scale])`` with ``wrt`` ("x",
"scale" or "bias") and the same attributes is one of the three gradients.
"""
from __future__ import annotations

import numpy as np

from ..ir import TensorSpec, spec_error
from .reduce import reduced_axes
from .registry import (Attr, OpDef, OpPattern, choice, elementwise_cost, float_dtype, ints,
                       register, to_bool, to_float)

_ATTRS = {"axes": Attr(ints, (-1,)), "eps": Attr(to_float, 1e-5),
          "eps_inside_sqrt": Attr(to_bool, True), "normalize_variance": Attr(to_bool, True)}


def _param_shape(x_shape, axes) -> tuple:
    return tuple(x_shape[a] for a in axes)


def _check_params(attrs, ins, node) -> tuple:
    x = ins[0]
    dtype = float_dtype(x, node)
    axes = reduced_axes(attrs["axes"], len(x.shape), node)
    if x.batched and 0 in axes:
        raise spec_error(node, f"layer_norm cannot normalize over the batch axis of {x}")
    want = _param_shape(x.shape, axes)
    for name, s in zip(("scale", "bias"), ins[1:]):
        if tuple(s.shape) != want or s.dtype != dtype:
            raise spec_error(node, f"layer_norm {name} must have shape {want} ({dtype}) for input "
                                   f"{x} normalized over axes {axes}, got {s} {s.dtype}")
    return axes, dtype


def _infer(attrs, ins, node):
    _, dtype = _check_params(attrs, ins, node)
    return [TensorSpec(ins[0].shape, dtype)]


def _kept(x, axes, p):
    """Parameter ``p`` (sizes of the normalized axes) reshaped to broadcast against ``x``."""
    return np.reshape(p, tuple(d if i in axes else 1 for i, d in enumerate(x.shape)))


def statistics(attrs, x, axes):
    """(x - mu, sigma) in float64; sigma is 1 without variance normalization."""
    x = np.asarray(x, np.float64)
    centered = x - x.mean(axis=axes, keepdims=True)
    if not attrs["normalize_variance"]:
        return centered, np.ones((1,) * x.ndim)
    var = np.mean(centered * centered, axis=axes, keepdims=True)
    sigma = np.sqrt(var + attrs["eps"]) if attrs["eps_inside_sqrt"] else np.sqrt(var) + attrs["eps"]
    return centered, sigma


def _forward(attrs, inputs, outputs):
    x = inputs[0]
    axes = reduced_axes(attrs["axes"], x.ndim)
    centered, sigma = statistics(attrs, x, axes)
    y = centered / sigma
    if len(inputs) > 1:
        y = y * _kept(x, axes, inputs[1])
    if len(inputs) > 2:
        y = y + _kept(x, axes, inputs[2])
    np.copyto(outputs[0], y, casting="unsafe")


def _backward(ctx, node, dys):
    if dys[0] is None:
        return [None] * len(node.inputs)
    wrt = ("x", "scale", "bias")
    return [ctx.add("layer_norm_grad", [dys[0], *node.inputs[:2]], {**node.attrs, "wrt": wrt[i]})
            if ctx.wants(i) else None for i in range(len(node.inputs))]


LAYER_NORM = register(OpDef(
    name="layer_norm", family="norm", arity=(1, 3), attrs=_ATTRS, infer=_infer, forward=_forward,
    cost=elementwise_cost(8), pattern=OpPattern.OPAQUE, inplace=0, backward=_backward,
    doc=__doc__))


def _grad_infer(attrs, ins, node):
    dy, x = ins[:2]
    axes, dtype = _check_params(attrs, [x, *ins[2:]], node)
    if dy.shape != x.shape:
        raise spec_error(node, f"layer_norm_grad: dy {dy} is not shaped like x {x}")
    if attrs["wrt"] == "x":
        return [TensorSpec(x.shape, dtype)]
    return [TensorSpec(_param_shape(x.shape, axes), dtype)]


def layer_norm_gradient(attrs, dy, x, scale=None) -> np.ndarray:
    """The gradient ``attrs['wrt']`` of ``layer_norm`` in float64."""
    x, dy = np.asarray(x, np.float64), np.asarray(dy, np.float64)
    axes = reduced_axes(attrs["axes"], x.ndim)
    rest = tuple(i for i in range(x.ndim) if i not in axes)
    centered, sigma = statistics(attrs, x, axes)
    if attrs["wrt"] == "bias":
        return dy.sum(axis=rest).reshape(_param_shape(x.shape, axes))
    if attrs["wrt"] == "scale":
        return (dy * centered / sigma).sum(axis=rest).reshape(_param_shape(x.shape, axes))
    g = dy if scale is None else dy * _kept(x, axes, np.asarray(scale, np.float64))
    dx = (g - g.mean(axis=axes, keepdims=True)) / sigma
    if attrs["normalize_variance"]:
        var = np.mean(centered * centered, axis=axes, keepdims=True)
        # d sigma / d var: 1 / (2 sigma) inside the root, 1 / (2 sqrt(var)) outside, where a
        # constant row (var = 0: x - mu and the mean below are 0) contributes 0, not 0 * inf
        if attrs["eps_inside_sqrt"]:
            dsig = 0.5 / sigma
        else:
            root = np.sqrt(var)
            dsig = np.divide(0.5, root, out=np.zeros_like(root), where=root > 0)
        dx -= centered * (2 * dsig / sigma ** 2) * np.mean(g * centered, axis=axes, keepdims=True)
    return dx


def _grad(attrs, inputs, outputs):
    np.copyto(outputs[0], layer_norm_gradient(attrs, *inputs), casting="unsafe")


LAYER_NORM_GRAD = register(OpDef(
    name="layer_norm_grad", family="grad", arity=(2, 3),
    attrs={**_ATTRS, "wrt": Attr(choice("x", "scale", "bias"), "x")}, infer=_grad_infer,
    forward=_grad, cost=elementwise_cost(12), pattern=OpPattern.OPAQUE, doc=__doc__))
