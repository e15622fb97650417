"""Binders of the GEMM-based ops: ``conv2d`` (``im2col`` from ``kernels/conv.cu``, then a GEMM per
group straight into the output; pointwise convolutions skip the im2col), ``conv2d_split`` (the same,
one GEMM per output), ``dense`` and ``matmul``.
Each GEMM is a :class:`~graphrt.devices.cuda.runtime.gemm.Gemm` with the bias and activation attached; the
device runs it through cuBLAS or our ``gemm`` kernel (see :mod:`graphrt.devices.cuda.runtime.gemm`).
"""
from __future__ import annotations

import itertools

from ....ops import get_op
from ..calls import THREADS, Call, Unsupported, at_offset, ceil_div, check_dtype, estrides
from ..runtime.gemm import Gemm
from .elementwise import unary_step

COLS_BYTES = 128 << 20  # im2col columns per chunk of images


def epilogue(attrs) -> dict:
    """The fused activation as :class:`Gemm` fields: ``act`` (a step of ``gr_unary``, see
    :func:`~graphrt.devices.cuda.bind.elementwise.unary_step`), ``slope`` and ``act_b`` (its
    parameters a and b)."""
    act = attrs["activation"]
    if act == "none":
        return {}
    params = dict(attrs.get("activation_params", ()))
    params = {"negative_slope": attrs["negative_slope"]} if act == "relu" else \
        get_op(act).normalize_attrs(params)
    code, a, b, _ = unary_step(act, params)
    return {"act": code, "slope": a, "act_b": b}


def _im2col_grid(rows: int, cols: int) -> tuple:
    return (max(1, min(ceil_div(cols, THREADS), 1024)), max(1, min(rows, 65535)), 1)


def _plane_strides(a) -> tuple:
    """(n, c, p) strides of an NCHW view whose H and W collapse into one axis p."""
    sn, sc, sh, sw = estrides(a)
    h, w = a.shape[2:]
    if h > 1 and w > 1 and sh != w * sw:
        raise Unsupported("image rows that are not contiguous planes")
    return sn, sc, (sw if w > 1 else sh)


def _is_pointwise(attrs, kh, kw) -> bool:
    return (kh, kw) == (1, 1) and attrs["stride"] == (1, 1) and not any(attrs["pads"])


def conv_chunk(n, cg, kh, kw, oh, ow, itemsize) -> int:
    """Images whose im2col columns go to the workspace at once."""
    per_image = cg * kh * kw * oh * ow * itemsize
    return max(1, min(n, COLS_BYTES // max(per_image, 1)))


def conv_workspace_bytes(n, c, o, cg, kh, kw, oh, ow, attrs, itemsize) -> int:
    if _is_pointwise(attrs, kh, kw):
        return 0
    return conv_chunk(n, cg, kh, kw, oh, ow, itemsize) * cg * kh * kw * oh * ow * itemsize


def bind_conv2d(attrs, inputs, outputs, ws):
    """im2col into the workspace, a chunk of images at a time, and one GEMM per group straight into
    the output; a pointwise convolution (1x1, stride 1, no padding) multiplies ``x`` itself."""
    out = outputs[0]
    og = inputs[1].shape[0] // attrs["groups"]
    return _conv_calls(attrs, inputs, ws, [[(slice(gi * og, (gi + 1) * og),
                                             out[:, gi * og:(gi + 1) * og])]
                                           for gi in range(attrs["groups"])])


def bind_conv2d_split(attrs, inputs, outputs, ws):
    """Merged sibling convolutions: conv2d's calls, with one GEMM per output (and group) from the
    shared im2col columns, its bias and activation fused, writing its channels straight into that
    output — a concat's channel slice where the plan aliased it."""
    og = inputs[1].shape[0] // attrs["groups"]
    units: list = [[] for _ in range(attrs["groups"])]
    c0 = 0
    for out in outputs:
        c1 = c0 + out.shape[1]
        for gi, dests in enumerate(units):  # the output's channels that group gi computes
            lo, hi = max(c0, gi * og), min(c1, (gi + 1) * og)
            if lo < hi:
                dests.append((slice(lo, hi), out[:, lo - c0:hi - c0]))
        c0 = c1
    return _conv_calls(attrs, inputs, ws, units)


def _conv_calls(attrs, inputs, ws, units):
    """``units[gi]``: (weight rows, destination view) pairs, the GEMMs of group ``gi``'s columns."""
    x, w = inputs[0], inputs[1]
    bias = inputs[2] if len(inputs) == 3 else None
    dests = [d for group in units for _, d in group]
    dtype = check_dtype(x, w, *dests, *([bias] if bias is not None else []))
    n, _, h, wd = x.shape
    _, cg, kh, kw = w.shape
    oh, ow = dests[0].shape[2:]
    k = cg * kh * kw
    p = oh * ow
    if estrides(w) != (cg * kh * kw, kh * kw, kw, 1):
        raise Unsupported("a weight that is not contiguous")
    gemm = _gemm(attrs, dtype, w, bias)
    if _is_pointwise(attrs, kh, kw):
        xs = _plane_strides(x)
        return [gemm(rows, dst, n, x[:, gi * cg:(gi + 1) * cg], xs, slice(None))
                for gi, group in enumerate(units) for rows, dst in group]
    calls: list = []
    chunk = conv_chunk(n, cg, kh, kw, oh, ow, dtype.itemsize)
    cols_all = ws.view(dtype)[:chunk * k * p]
    xs = estrides(x)
    (sh, sw), (dh, dw) = attrs["stride"], attrs["dilation"]
    t, _, l, _ = attrs["pads"]
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        cols = cols_all[:m * k * p]
        for gi, group in enumerate(units):
            xg = x[start:start + m, gi * cg:(gi + 1) * cg]
            calls.append(Call("im2col", dtype, _im2col_grid(m * k, p), (THREADS, 1, 1), (
                xg, *xs, cols, k * p, p, m, cg, h, wd, kh, kw, oh, ow, sh, sw, t, l, dh, dw)))
            calls += [gemm(rows, dst, m, cols, (k * p, p, 1), slice(start, start + m))
                      for rows, dst in group]
    return calls


def _gemm(attrs, dtype, w, bias):
    """``gemm(rows, dst, batch, b, sb, images)``: the GEMM of the output channels ``rows`` of
    ``images`` (a slice of the batch) into ``dst`` from ``b``, (K, OH*OW) per image with strides
    ``sb``; bias and activation fused."""
    _, cg, kh, kw = w.shape
    k = cg * kh * kw
    act = epilogue(attrs)

    def gemm(rows, dst, batch, b, sb, images):
        p = dst.shape[2] * dst.shape[3]
        return Gemm(dtype, batch, rows.stop - rows.start, p, k, w[rows], (0, k, 1), b, sb,
                    dst[images], _plane_strides(dst), bias=None if bias is None else bias[rows],
                    bias_mode=0 if bias is None else 1, **act)
    return gemm


def bind_dense(attrs, inputs, outputs, ws):
    x, w = inputs[0], inputs[1]
    bias = inputs[2] if len(inputs) == 3 else None
    out = outputs[0]
    dtype = check_dtype(x, w, out, *([bias] if bias is not None else []))
    n, k = x.shape
    o = w.shape[0]
    xs0, xs1 = estrides(x)
    ws0, ws1 = estrides(w)
    ys0, ys1 = estrides(out)
    return [Gemm(dtype, 1, n, o, k, x, (0, xs0, xs1), w, (0, ws1, ws0), out, (0, ys0, ys1),
                 bias=bias, bias_mode=0 if bias is None else 2,
                 **epilogue(attrs))]


def bind_matmul(attrs, inputs, outputs, ws):
    a, b = inputs
    out = outputs[0]
    dtype = check_dtype(a, b, out)
    if a.ndim == 1:
        a = a[None, :]
        out = out[..., None, :]
    if b.ndim == 1:
        b = b[:, None]
        out = out[..., :, None]
    stack = out.shape[:-2]
    m, n = out.shape[-2:]
    k = a.shape[-1]

    def stack_strides(v):
        lead = len(stack) - (v.ndim - 2)
        vs = estrides(v)
        return [0] * lead + [vs[d] if v.shape[d] != 1 else 0 for d in range(v.ndim - 2)]

    sa, sb, so = stack_strides(a), stack_strides(b), list(estrides(out)[:-2])
    a_rc, b_rc, o_rc = estrides(a)[-2:], estrides(b)[-2:], estrides(out)[-2:]
    inner = stack[-1] if stack else 1
    calls = []
    for idx in itertools.product(*(range(s) for s in stack[:-1])):
        oa = sum(i * s for i, s in zip(idx, sa))
        ob = sum(i * s for i, s in zip(idx, sb))
        oo = sum(i * s for i, s in zip(idx, so))
        calls.append(Gemm(dtype, inner, m, n, k,
                          at_offset(a, oa), (sa[-1] if stack else 0, *a_rc),
                          at_offset(b, ob), (sb[-1] if stack else 0, *b_rc),
                          at_offset(out, oo), (so[-1] if stack else 0, *o_rc)))
    return calls
