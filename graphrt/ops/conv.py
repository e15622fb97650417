"""Convolution: ``conv2d`` over NCHW with OIHW weights, via im2col and one BLAS GEMM per group.

Inputs: ``x`` (N, C, H, W), ``weight`` (O, C/groups, KH, KW), optional ``bias`` (O,).
Attributes: ``stride`` (sh, sw), ``pads`` (top, bottom, left, right), ``dilation`` (dh, dw),
``groups``, and the fused epilogue ``activation`` (none, relu, tanh, sigmoid; ``negative_slope`` for
relu) that the optimizer sets when it absorbs the next layer. Output (N, O, OH, OW) with OH = (H + top + bottom - dh*(KH-1) - 1) // sh + 1.

``conv2d_split``: the same convolution with its output channels handed out as several tensors,
``sizes`` channels each (the ``merge_sibling_convs`` pass makes it from sibling convolutions that
read the same input). Output ``i`` is ``conv2d(x)[:, sum(sizes[:i]):sum(sizes[:i + 1])]``; each is a
tensor of its own, so the memory plan can place each one where its reader wants it (a slice of a
concat) and the kernel writes each output's channels straight there.
"""
from __future__ import annotations

import numpy as np

from ..ir import TensorSpec, spec_error
from .elementwise import EPILOGUE_ATTRS, activate, epilogue_backward
from .registry import (Attr, OpDef, OpPattern, float_dtype, ints, nonnegative, pads4, pair,
                       positive, register, to_int)


def conv_out_size(size: int, k: int, stride: int, pad_lo: int, pad_hi: int, dilation: int = 1) -> int:
    return (size + pad_lo + pad_hi - dilation * (k - 1) - 1) // stride + 1


def _infer(attrs, ins, node):
    x, w = ins[0], ins[1]
    dtype = float_dtype(x, node)
    if len(x.shape) != 4:
        raise spec_error(node, f"conv2d expects a 4-D NCHW input, got shape {x}")
    if len(w.shape) != 4:
        raise spec_error(node, f"conv2d expects a 4-D OIHW weight, got shape {w}")
    n, c, h, wd = x.shape
    o, ci, kh, kw = w.shape
    g = attrs["groups"]
    if c is not None and c != ci * g:
        raise spec_error(node, f"conv2d weight {w} with groups={g} expects {ci * g} input "
                               f"channels, got {c} (input shape {x})")
    if o % g:
        raise spec_error(node, f"conv2d: {o} output channels are not divisible by groups={g}")
    if len(ins) == 3 and ins[2].shape != (o,):
        raise spec_error(node, f"conv2d bias must have shape ({o},), got {ins[2]}")
    (sh, sw), (dh, dw) = attrs["stride"], attrs["dilation"]
    t, b, l, r = attrs["pads"]
    oh = conv_out_size(h, kh, sh, t, b, dh)
    ow = conv_out_size(wd, kw, sw, l, r, dw)
    if oh < 1 or ow < 1:
        raise spec_error(node, f"conv2d kernel {kh}x{kw} (dilation {dh}x{dw}) is larger than the "
                               f"padded input {h + t + b}x{wd + l + r} (input shape {x})")
    return [TensorSpec((n, o, oh, ow), dtype)]


def im2col(x: np.ndarray, kh: int, kw: int, stride, pads, dilation) -> np.ndarray:
    """A strided (N, OH, OW, C, KH, KW) view of the padded input: the GEMM's left operand."""
    t, b, l, r = pads
    if any(pads):
        # negative pads never reach here (validated); pad once, then window by strides
        x = np.pad(x, ((0, 0), (0, 0), (t, b), (l, r)))
    n, c, h, w = x.shape
    (sh, sw), (dh, dw) = stride, dilation
    oh = (h - dh * (kh - 1) - 1) // sh + 1
    ow = (w - dw * (kw - 1) - 1) // sw + 1
    s = x.strides
    return np.lib.stride_tricks.as_strided(
        x, (n, oh, ow, c, kh, kw), (s[0], s[2] * sh, s[3] * sw, s[1], s[2] * dh, s[3] * dw),
        writeable=False)


def _forward(attrs, inputs, outputs):
    x, w = inputs[0], inputs[1]
    out = outputs[0]
    g = attrs["groups"]
    o, ci, kh, kw = w.shape
    cols = im2col(x, kh, kw, attrs["stride"], attrs["pads"], attrs["dilation"])
    n, oh, ow = cols.shape[:3]
    og = o // g
    for gi in range(g):
        part = cols[:, :, :, gi * ci:(gi + 1) * ci].reshape(n * oh * ow, ci * kh * kw)
        wg = w[gi * og:(gi + 1) * og].reshape(og, ci * kh * kw)
        res = (part @ wg.T).reshape(n, oh, ow, og)
        out[:, gi * og:(gi + 1) * og] = res.transpose(0, 3, 1, 2)
    if len(inputs) == 3:
        out += inputs[2].reshape(1, o, 1, 1)
    activate(out, attrs["activation"], attrs["negative_slope"], attrs["activation_params"])


def _cost(attrs, ins, outs, batch):
    o, ci, kh, kw = ins[1].shape
    n_out = sum(int(np.prod(s.concrete(batch))) for s in outs)
    return 2 * n_out * ci * kh * kw, sum(s.nbytes(batch) for s in list(ins) + list(outs))


def _backward(ctx, node, dys):
    """dx = conv2d_grad_input(g, w), dw = conv2d_grad_weight(x, g), db = reduce_channels(g), with
    g the gradient of the pre-activation output (the fused epilogue's gradient applied first)."""
    x, w = node.inputs[:2]
    g = epilogue_backward(ctx, node, dys[0])
    geometry = {k: node.attrs[k] for k in ("stride", "pads", "dilation", "groups")}
    grads = [None] * len(node.inputs)
    if ctx.wants(0):
        grads[0] = ctx.add("conv2d_grad_input", [g, w],
                           {**geometry, "input_size": ctx.spec(x).shape[2:]})
    if ctx.wants(1):
        grads[1] = ctx.add("conv2d_grad_weight", [x, g],
                           {**geometry, "kernel": ctx.spec(w).shape[2:]})
    if len(node.inputs) == 3 and ctx.wants(2):
        grads[2] = ctx.add("reduce_channels", [g])
    return grads


CONV2D = register(OpDef(
    name="conv2d", family="conv", arity=(2, 3),
    attrs={"stride": Attr(positive(pair), (1, 1)), "pads": Attr(nonnegative(pads4), (0, 0, 0, 0)),
           "dilation": Attr(positive(pair), (1, 1)), "groups": Attr(positive(to_int), 1), **EPILOGUE_ATTRS},
    infer=_infer, forward=_forward, cost=_cost, pattern=OpPattern.OUT_ELEMWISE_FUSABLE,
    backward=_backward, doc=__doc__))


# ---- conv2d_split: merged sibling convolutions ----------------------------------------------------
def _split_infer(attrs, ins, node):
    (wide,) = _infer(attrs, ins, node)
    sizes = attrs["sizes"]
    if not sizes or sum(sizes) != wide.shape[1]:
        raise spec_error(node, f"conv2d_split sizes {sizes} do not add up to the {wide.shape[1]} "
                               f"output channels of weight {ins[1]}")
    n, _, oh, ow = wide.shape
    return [TensorSpec((n, s, oh, ow), wide.dtype) for s in sizes]


def _split_forward(attrs, inputs, outputs):
    n, _, oh, ow = outputs[0].shape
    wide = np.empty((n, sum(attrs["sizes"]), oh, ow), outputs[0].dtype)
    _forward(attrs, inputs, [wide])
    start = 0
    for out in outputs:
        out[...] = wide[:, start:start + out.shape[1]]
        start += out.shape[1]


def _split_backward(ctx, node, dys):
    """conv2d's rule for the whole output: its gradient is the outputs' gradients concatenated
    (zeros where none flows); the activation's gradient reads the outputs concatenated."""
    def whole(parts):
        return parts[0] if len(parts) == 1 else ctx.add("concat", parts, {"axis": 1})
    dy = whole([d if d is not None else ctx.add("zeros_like", [t]) for d, t in zip(dys, node.outputs)])
    attrs = {k: v for k, v in node.attrs.items() if k != "sizes"}
    y = whole(list(node.outputs)) if attrs["activation"] != "none" else node.outputs[0]
    return _backward(ctx, node.replace(op="conv2d", outputs=(y,), attrs=attrs), [dy])


CONV2D_SPLIT = register(OpDef(
    name="conv2d_split", family="conv", arity=(2, 3),
    attrs={**CONV2D.attrs, "sizes": Attr(positive(ints))},
    infer=_split_infer, forward=_split_forward, cost=_cost, pattern=OpPattern.OPAQUE,
    outputs=lambda attrs: len(attrs["sizes"]), backward=_split_backward, doc=__doc__))
