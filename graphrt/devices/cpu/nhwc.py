"""im2col in channels-last order (``im2col_nhwc``): a convolution candidate for layers whose
NCHW im2col copies short rows.

NCHW im2col gathers, for every (channel, kernel row, kernel column), a run of only ``OW`` elements;
with the input first copied into a zero-padded channels-last buffer (m, H', W', C'), each (output
position, kernel row) gathers ``KW * C'`` contiguous elements instead. The GEMM is then
``cols (m*OH*OW, K) @ W^T (K, O')`` — tall, which OpenBLAS runs well for the small O' of early
layers — and its (positions, channels) result is transposed into the NCHW output chunk, where the
bias and activation run. For each group and chunk of images, in the workspace:

    weights (KH, KW, C', O') | padded input (m, H', W', C') | columns (m, OH, OW, KH, KW, C') | GEMM (m*OH*OW, O')

A chunk holds about :data:`COLS_BYTES` of columns, at least one image: 1 MiB, as the NCHW
im2col's (measured as fast as 8 MiB on LeNet's, CIFAR-10 quick's and the Keras CNN's layers).
"""
from __future__ import annotations

import numpy as np

COLS_BYTES = 1 << 20


def _chunk(n, cg, og, kh, kw, hp, wp, oh, ow, itemsize) -> tuple[int, int]:
    """(images per chunk, elements per image of the chunk's buffers)."""
    k = cg * kh * kw
    p = oh * ow
    per = hp * wp * cg + p * k + p * og
    budget = COLS_BYTES
    return max(1, min(n, budget // (itemsize * p * k))), per


def _padded(h, w, pads):
    t, b, l, r = pads
    return h + t + b, w + l + r


def workspace_elems(n, c, h, w, o, groups, kh, kw, oh, ow, pads, itemsize, temps) -> int:
    cg, og = c // groups, o // groups
    hp, wp = _padded(h, w, pads)
    m, per = _chunk(n, cg, og, kh, kw, hp, wp, oh, ow, itemsize)
    return kh * kw * cg * og + max(m * per, temps)


def _fill_border(xp, h, w, pads):
    t, b, l, r = pads
    hp, wp = xp.shape[1:3]
    if t:
        xp[:, :t] = 0
    if b:
        xp[:, hp - b:] = 0
    if l:
        xp[:, t:hp - b, :l] = 0
    if r:
        xp[:, t:hp - b, wp - r:] = 0


def conv(attrs, x, w, out, ws):
    """Write the convolution of ``x`` with ``w`` (no bias or activation) into ``out``; ``ws`` is the
    workspace in the layer's dtype. Returns the part of ``ws`` free for the epilogue."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    g = attrs["groups"]
    og = o // g
    oh, ow = out.shape[2:]
    (sh, sw), (dh, dw), pads = attrs["stride"], attrs["dilation"], attrs["pads"]
    t, _, l, _ = pads
    hp, wp = _padded(h, wd, pads)
    m, _ = _chunk(n, cg, og, kh, kw, hp, wp, oh, ow, x.dtype.itemsize)
    k, p = cg * kh * kw, oh * ow
    wt = ws[:k * og].reshape(kh, kw, cg, og)
    rest = ws[k * og:]
    for gi in range(g):
        np.copyto(wt, w[gi * og:(gi + 1) * og].transpose(2, 3, 1, 0))
        w2 = wt.reshape(k, og)
        for start in range(0, n, m):
            mm = min(m, n - start)
            xp = rest[:mm * hp * wp * cg].reshape(mm, hp, wp, cg)
            at = mm * hp * wp * cg
            cols = rest[at:at + mm * p * k].reshape(mm, oh, ow, kh, kw, cg)
            at += mm * p * k
            prod = rest[at:at + mm * p * og].reshape(mm * p, og)
            _fill_border(xp, h, wd, pads)
            np.copyto(xp[:, t:t + h, l:l + wd], x[start:start + mm, gi * cg:(gi + 1) * cg]
                      .transpose(0, 2, 3, 1))
            s = xp.strides
            np.copyto(cols, np.lib.stride_tricks.as_strided(
                xp, (mm, oh, ow, kh, kw, cg), (s[0], s[1] * sh, s[2] * sw, s[1] * dh, s[2] * dw, s[3]),
                writeable=False))
            np.matmul(cols.reshape(mm * p, k), w2, out=prod)
            dst = out[start:start + mm, gi * og:(gi + 1) * og]
            np.copyto(dst, prod.reshape(mm, oh, ow, og).transpose(0, 3, 1, 2))
    return rest
