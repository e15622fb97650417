"""``resize``: nearest, linear or cubic resampling of the spatial axes (2 and on) of an (N, C, ...)
tensor (ONNX Resize / Upsample, Keras UpSampling2D, PyTorch nn.Upsample, MXNet UpSampling).

Attributes: ``sizes`` (the output's spatial sizes), ``scales`` (per spatial axis; default
output/input), ``mode`` (nearest, linear, cubic), ``coordinate_transformation_mode`` and
``nearest_mode``, ``cubic_coeff_a`` and ``exclude_outside`` as ONNX defines them. Output
coordinate ``r`` of an axis maps to the input coordinate

| mode | x |
|---|---|
| half_pixel | (r + 0.5) / scale - 0.5 |
| pytorch_half_pixel | as half_pixel, 0 when the output axis has length 1 |
| half_pixel_symmetric | as half_pixel, shifted by in/2 * (1 - out / (scale * in)) |
| align_corners | r * (in - 1) / (L - 1) (0 when L is 1), L = out, or in * scale for explicit scales |
| asymmetric | r / scale |
| tf_half_pixel_for_nn | (r + 0.5) / scale |

nearest takes the input element at x rounded by ``nearest_mode`` (round_prefer_floor,
round_prefer_ceil, floor, ceil); linear interpolates between floor(x) and floor(x) + 1; cubic
uses the four neighbours with Keys' kernel of parameter ``cubic_coeff_a``. Indices outside the
input read its edge (``exclude_outside`` instead drops them and renormalizes the cubic weights).

Every mode is separable: each axis is one (out, in) matrix of weights, applied in turn, so the
gradient ``resize_grad(dy)`` (with ``input_size``) applies the transposed matrices.
"""
from __future__ import annotations


import numpy as np

from ..ir import TensorSpec, spec_error
from .registry import (Attr, OpDef, OpPattern, choice, float_dtype, floats, ints, positive,
                       register, to_bool, to_float)

COORDINATE_MODES = ("half_pixel", "pytorch_half_pixel", "half_pixel_symmetric", "align_corners",
                    "asymmetric", "tf_half_pixel_for_nn")
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


def _coordinates(attrs, n_in: int, n_out: int, scale: float) -> np.ndarray:
    r = np.arange(n_out, dtype=np.float64)
    mode = attrs["coordinate_transformation_mode"]
    if mode == "align_corners":  # with explicit scales the resized length is in * scale (ONNX)
        length = n_in * scale if attrs["scales"] else n_out
        return r * (n_in - 1) / (length - 1) if length > 1 else np.zeros(n_out)
    if mode == "asymmetric":
        return r / scale
    if mode == "tf_half_pixel_for_nn":
        return (r + 0.5) / scale
    x = (r + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel" and n_out == 1:
        return np.zeros(n_out)
    if mode == "half_pixel_symmetric":
        x += n_in / 2 * (1 - n_out / (scale * n_in))
    return x


def _cubic_weights(t: np.ndarray, a: float) -> np.ndarray:
    """Keys' kernel at distances (1 + t, t, 1 - t, 2 - t): (out, 4)."""
    d = np.stack([1 + t, t, 1 - t, 2 - t], axis=1)
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return np.where(d <= 1, near, far)


def axis_matrix(attrs, n_in: int, n_out: int, scale: float) -> np.ndarray:
    """The (n_out, n_in) float64 weights of one axis."""
    x = _coordinates(attrs, n_in, n_out, scale)
    m = np.zeros((n_out, n_in))
    rows = np.arange(n_out)
    if attrs["mode"] == "nearest":
        rounding = {"round_prefer_floor": lambda v: np.ceil(v - 0.5),
                    "round_prefer_ceil": lambda v: np.floor(v + 0.5),
                    "floor": np.floor, "ceil": np.ceil}[attrs["nearest_mode"]]
        m[rows, np.clip(rounding(x), 0, n_in - 1).astype(int)] = 1.0
        return m
    x0 = np.floor(x)
    t = x - x0
    if attrs["mode"] == "linear":
        offsets, weights = (0, 1), np.stack([1 - t, t], axis=1)
    else:
        offsets, weights = (-1, 0, 1, 2), _cubic_weights(t, attrs["cubic_coeff_a"])
    idx = x0[:, None].astype(int) + np.array(offsets)
    if attrs["exclude_outside"]:
        weights = np.where((idx >= 0) & (idx < n_in), weights, 0.0)
        weights /= weights.sum(axis=1, keepdims=True)
    for k in range(len(offsets)):
        np.add.at(m, (rows, np.clip(idx[:, k], 0, n_in - 1)), weights[:, k])
    return m


def matrices(attrs, in_spatial, out_spatial) -> list:
    scales = attrs["scales"] or tuple(o / i for o, i in zip(out_spatial, in_spatial))
    return [axis_matrix(attrs, i, o, s) for i, o, s in zip(in_spatial, out_spatial, scales)]


def apply_matrices(x: np.ndarray, mats, transpose: bool = False) -> np.ndarray:
    """The matrices applied to the spatial axes (2, 3, ...) of ``x``, in float64."""
    y = np.asarray(x, np.float64)
    for k, m in enumerate(mats):
        axis = 2 + k
        y = np.moveaxis(np.tensordot(m.T if transpose else m, y, axes=([1], [axis])), 0, axis)
    return y


def _check(attrs, x, node):
    rank = len(x.shape)
    if rank < 3 or len(attrs["sizes"]) != rank - 2 or None in x.shape[2:]:
        raise spec_error(node, f"resize needs an (N, C, ...) input and one size per spatial axis, "
                               f"got input {x} and sizes {attrs['sizes']}")
    if attrs["scales"] and len(attrs["scales"]) != rank - 2:
        raise spec_error(node, f"resize scales {attrs['scales']} are not one per spatial axis")


def _infer(attrs, ins, node):
    x = ins[0]
    _check(attrs, x, node)
    return [TensorSpec(tuple(x.shape[:2]) + tuple(attrs["sizes"]), float_dtype(x, node))]


def _forward(attrs, inputs, outputs):
    x, out = inputs[0], outputs[0]
    mats = matrices(attrs, x.shape[2:], out.shape[2:])
    np.copyto(out, apply_matrices(x, mats), casting="unsafe")


def _backward(ctx, node, dys):
    if not ctx.wants(0) or dys[0] is None:
        return [None]
    size = ctx.spec(node.inputs[0]).shape[2:]
    return [ctx.add("resize_grad", [dys[0]], {**node.attrs, "input_size": size})]


def _cost(attrs, ins, outs, batch):
    taps = {"nearest": 1, "linear": 2, "cubic": 4}[attrs["mode"]]
    n = int(np.prod(outs[0].concrete(batch)))
    return 2 * taps * len(attrs["sizes"]) * n, ins[0].nbytes(batch) + outs[0].nbytes(batch)


_ATTRS = {"sizes": Attr(positive(ints)), "scales": Attr(floats, ()),
          "mode": Attr(choice("nearest", "linear", "cubic"), "nearest"),
          "coordinate_transformation_mode": Attr(choice(*COORDINATE_MODES), "half_pixel"),
          "nearest_mode": Attr(choice(*NEAREST_MODES), "round_prefer_floor"),
          "cubic_coeff_a": Attr(to_float, -0.75), "exclude_outside": Attr(to_bool, False)}

RESIZE = register(OpDef(name="resize", family="resize", arity=(1, 1), attrs=_ATTRS, infer=_infer,
                        forward=_forward, cost=_cost, pattern=OpPattern.INJECTIVE,
                        backward=_backward, doc=__doc__))


def _grad_infer(attrs, ins, node):
    dy = ins[0]
    size = attrs["input_size"]
    if len(dy.shape) != len(size) + 2 or tuple(dy.shape[2:]) != tuple(attrs["sizes"]):
        raise spec_error(node, f"resize_grad: dy {dy} is not the resize to {attrs['sizes']}")
    return [TensorSpec(tuple(dy.shape[:2]) + tuple(size), float_dtype(dy, node, "dy"))]


def _grad(attrs, inputs, outputs):
    dy, out = inputs[0], outputs[0]
    mats = matrices(attrs, out.shape[2:], dy.shape[2:])
    np.copyto(out, apply_matrices(dy, mats, transpose=True), casting="unsafe")


RESIZE_GRAD = register(OpDef(
    name="resize_grad", family="grad", arity=(1, 1),
    attrs={**_ATTRS, "input_size": Attr(positive(ints))}, infer=_grad_infer, forward=_grad,
    cost=_cost, pattern=OpPattern.INJECTIVE, doc=__doc__))

__all__ = ["RESIZE", "RESIZE_GRAD", "axis_matrix"]
