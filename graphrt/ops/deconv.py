"""``conv2d_transpose``: the transposed (fractionally strided) convolution over NCHW (Caffe
Deconvolution, ONNX ConvTranspose, PyTorch ConvTranspose2d, Keras Conv2DTranspose).

Inputs: ``x`` (N, C, H, W), ``weight`` (C, O/groups, KH, KW) — the layout of all four frameworks —
and optional ``bias`` (O,). Attributes ``stride``, ``pads`` (top, bottom, left, right),
``dilation``, ``groups`` and ``output_padding`` (extra rows/columns at the bottom/right). Output
(N, O, OH, OW) with OH = (H - 1) * sh - top - bottom + dh * (KH - 1) + 1 + output_padding_h.

It is the gradient of the convolution it transposes: the forward runs ``conv2d_grad_input``'s
col2im (x in the role of dy); its own gradients are a ``conv2d`` (dx), a ``conv2d_grad_weight``
with the roles of x and dy swapped (dw) and ``reduce_channels`` (db).
"""
from __future__ import annotations

import numpy as np

from ..ir import TensorSpec, spec_error
from .grad import _conv_grad_input
from .registry import (Attr, OpDef, OpPattern, float_dtype, nonnegative, pads4, pair, positive,
                       register, to_int)


def transpose_out_size(n: int, k: int, s: int, lo: int, hi: int, d: int, extra: int) -> int:
    return (n - 1) * s - lo - hi + d * (k - 1) + 1 + extra


def _geometry(attrs):
    return {k: attrs[k] for k in ("stride", "pads", "dilation", "groups")}


def _infer(attrs, ins, node):
    x, w = ins[:2]
    dtype = float_dtype(x, node)
    if len(x.shape) != 4 or len(w.shape) != 4:
        raise spec_error(node, f"conv2d_transpose expects a 4-D input and a 4-D (C, O/groups, KH, "
                               f"KW) weight, got {x} and {w}")
    g = attrs["groups"]
    c, og, kh, kw = w.shape
    if x.shape[1] != c or c % g:
        raise spec_error(node, f"conv2d_transpose weight {w} with groups={g} expects {c} input "
                               f"channels divisible by the groups, got input {x}")
    if len(ins) == 3 and ins[2].shape != (og * g,):
        raise spec_error(node, f"conv2d_transpose bias must have shape ({og * g},), got {ins[2]}")
    (sh, sw), (dh, dw), (t, b, l, r) = attrs["stride"], attrs["dilation"], attrs["pads"]
    eh, ew = attrs["output_padding"]
    if eh >= max(sh, dh) or ew >= max(sw, dw):
        raise spec_error(node, f"output_padding {attrs['output_padding']} must be smaller than "
                               f"the stride or the dilation")
    oh = transpose_out_size(x.shape[2], kh, sh, t, b, dh, eh)
    ow = transpose_out_size(x.shape[3], kw, sw, l, r, dw, ew)
    if oh < 1 or ow < 1:
        raise spec_error(node, f"conv2d_transpose of {x} with kernel {kh}x{kw} and pads "
                               f"{attrs['pads']} has no output")
    return [TensorSpec((x.shape[0], og * g, oh, ow), dtype)]


def _forward(attrs, inputs, outputs):
    x, w = inputs[:2]
    out = outputs[0]
    _conv_grad_input({**_geometry(attrs), "input_size": out.shape[2:]}, [x, w], [out])
    if len(inputs) == 3:
        out += inputs[2].reshape(1, -1, 1, 1)


def _adjoint_geometry(attrs):
    """The convolution whose transpose this is, and the rows/columns to crop from dy first.

    An ``output_padding`` of ``stride`` or more (allowed below the dilation) adds whole strides to
    the output, and a convolution over it with the forward's pads would give more than H rows:
    ``stride * (output_padding // stride)`` comes off the bottom pad, and where that pad is
    smaller, off dy's last rows, which no input position reaches.
    """
    t, b, l, r = attrs["pads"]
    cut = [s * (e // s) for s, e in zip(attrs["stride"], attrs["output_padding"])]
    geometry = {**_geometry(attrs), "pads": (t, max(b - cut[0], 0), l, max(r - cut[1], 0))}
    return geometry, (max(cut[0] - b, 0), max(cut[1] - r, 0))


def _backward(ctx, node, dys):
    x, w = node.inputs[:2]
    dy = dys[0]
    grads = [None] * len(node.inputs)
    if dy is None:
        return grads
    geometry, crop = _adjoint_geometry(node.attrs)
    if any(crop) and (ctx.wants(0) or ctx.wants(1)):
        size = ctx.spec(dy).shape[2:]
        dy = ctx.add("slice", [dy], {"starts": [0, 0], "ends": [size[0] - crop[0], size[1] - crop[1]],
                                     "axes": [2, 3]})
    if ctx.wants(0):
        grads[0] = ctx.add("conv2d", [dy, w], geometry)
    if ctx.wants(1):
        grads[1] = ctx.add("conv2d_grad_weight", [dy, x],
                           {**geometry, "kernel": ctx.spec(w).shape[2:]})
    if len(node.inputs) == 3 and ctx.wants(2):
        grads[2] = ctx.add("reduce_channels", [dys[0]])
    return grads


def _cost(attrs, ins, outs, batch):
    c, og, kh, kw = ins[1].shape
    n = int(np.prod(ins[0].concrete(batch)))
    return 2 * n * og * kh * kw, sum(s.nbytes(batch) for s in list(ins) + list(outs))


CONV2D_TRANSPOSE = register(OpDef(
    name="conv2d_transpose", family="conv", arity=(2, 3),
    attrs={"stride": Attr(positive(pair), (1, 1)), "pads": Attr(nonnegative(pads4), (0, 0, 0, 0)),
           "dilation": Attr(positive(pair), (1, 1)), "groups": Attr(positive(to_int), 1),
           "output_padding": Attr(nonnegative(pair), (0, 0))},
    infer=_infer, forward=_forward, cost=_cost, pattern=OpPattern.OUT_ELEMWISE_FUSABLE,
    backward=_backward, doc=__doc__))
