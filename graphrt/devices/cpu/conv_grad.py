"""The cpu device's convolution gradients (kernels of the training step, as :mod:`.train_kernels`).

- ``conv2d_grad_input``: with stride 1 (most layers) the forward convolution of ``dy`` with the
  weights flipped and transposed into the workspace, padded by ``dilation * (kernel - 1) - pad``:
  the forward's im2col (a gather) and a GEMM of depth O x KH x KW (:func:`.kernels.conv2d`; gathered
  channels-last by :mod:`.nhwc` from a depth of :data:`FLIPPED_NHWC_DEPTH`), about twice as fast
  as the scatter below. Otherwise, per chunk of images (about
  :data:`GRAD_COLS_BYTES` of columns) and group, one stacked GEMM ``W^T dy`` into workspace
  columns, then col2im written once: one strided add per kernel offset into the (padded, in the
  workspace) input gradient — channels-last where C' exceeds OW (:func:`_grad_input_nhwc`: one
  tall GEMM, runs of C' elements to add instead of OW; 0.6-0.74x the time on LeNet's conv2).
- ``conv2d_grad_weight``: per chunk, the input copied channels-last (zero-padded) and its columns
  gathered in (images x positions, KH x KW x C') order — runs of KW x C' contiguous elements, as
  :mod:`.nhwc`'s forward — and ``dy`` as (O, images x positions) (no copy for one image), so that
  each group is ONE GEMM ``dy @ columns`` whose depth is the whole chunk and whose second operand
  is row-major: OpenBLAS runs (32 x 256) @ (256 x 800) at 85 GFLOP/s this way and at 59 with the
  columns transposed (the NCHW im2col's (K, positions) order). Chunks after the first accumulate
  through a workspace (O, K); the (O, KH, KW, C) sum is transposed into the output at the end.
"""
from __future__ import annotations

import numpy as np

from ...ir import Graph, Node
from ...ops import get_op
from . import kernels as K
from . import nhwc
from .kernels import _flat, _reshaped, _round4, _spec

GRAD_COLS_BYTES = 1 << 20  # columns per chunk of the gradient GEMMs (at most the forward's
# COLS_BYTES): as fast as 8 MiB at one thread (the GEMM depth is images x pixels) and the workspace
# is live in the backward pass, when most activations are too


WEIGHT_COLS_BYTES = 3 << 18  # conv2d_grad_weight's columns per chunk (768 KiB): as fast as 1 MiB on
# LeNet's, CIFAR-10 quick's and the Keras CNN's layers (within 5%, one thread, interleaved) and,
# split in two parts at two threads, small enough that LeNet's step plans at its lower bound


def _conv_grad_plan(n, c, h, w, o, g, kh, kw, oh, ow, pads, itemsize):
    """conv2d_grad_input's scatter: (images per chunk, padded elements per image, workspace
    elements). The chunk's columns (K x images x pixels for one group) hold about
    :data:`GRAD_COLS_BYTES`."""
    t, b, l, r = pads
    padded = c * (h + t + b) * (w + l + r) if any(pads) else 0
    k, p = c // g * kh * kw, oh * ow
    m = max(1, min(n, min(GRAD_COLS_BYTES, K.COLS_BYTES) // (itemsize * k * p)))
    return m, padded, m * padded + m * k * p


def _grad_dims(node: Node, graph: Graph, batch: int, x_index: int | None):
    """(n, c, h, w, o, g, kh, kw, oh, ow, dtype) of a convolution gradient node."""
    attrs = node.attrs
    dy = node.inputs[0] if x_index is None else node.inputs[1]
    (n, o, oh, ow), dtype = _spec(graph, dy, batch)
    if x_index is None:  # conv2d_grad_input(dy, weight)
        _, cg, kh, kw = graph.specs[node.inputs[1]].shape
        c, (h, w) = cg * attrs["groups"], attrs["input_size"]
    else:  # conv2d_grad_weight(x, dy)
        _, c, h, w = graph.specs[node.inputs[0]].shape
        kh, kw = attrs["kernel"]
    return n, c, h, w, o, attrs["groups"], kh, kw, oh, ow, dtype


FLIPPED_AREA = 1.3  # the flipped convolution does (H*W) / (OH*OW) times the GEMM's flops: it pays
# while that ratio is small (measured, one thread: 1.0 (5x5, pad 2) -> 1.7x faster; LeNet's 12x12
# input of an 8x8 dy (2.25) -> 2x slower)


def _flipped(attrs, h: int, w: int, kh: int, kw: int):
    """The forward conv2d attributes computing a stride-1 convolution's input gradient from dy
    (stride 1, pads ``dilation * (kernel - 1) - pad``), or None when the gradient is not such a
    convolution (strided, or pads beyond the kernel's extent). Cached per geometry."""
    key = (attrs["stride"], attrs["pads"], attrs["dilation"], attrs["groups"], h, w, kh, kw,
           FLIPPED_AREA)
    found = _FLIPPED.get(key, False)
    if found is not False:
        return found
    (dh, dw), (t, b, l, r) = attrs["dilation"], attrs["pads"]
    eh, ew = dh * (kh - 1), dw * (kw - 1)
    found = None
    if attrs["stride"] == (1, 1) and max(t, b) <= eh and max(l, r) <= ew and \
            h * w <= FLIPPED_AREA * (h + t + b - eh) * (w + l + r - ew):
        found = get_op("conv2d").normalize_attrs({
            "pads": (eh - t, eh - b, ew - l, ew - r), "dilation": (dh, dw),
            "groups": attrs["groups"]})
    _FLIPPED[key] = found
    return found


_FLIPPED: dict = {}


FLIPPED_NHWC_DEPTH = 768  # the flipped convolution gathers channels-last (:mod:`.nhwc`) when its
# GEMM depth O' x KH x KW is at least this (measured, one thread, interleaved: CIFAR-10 quick's 5x5
# layers, depth 800 and 1600, 0.83x and 0.69x the NCHW im2col's time; the Keras CNN's 3x3 layers,
# depth 288 and 576, 0.97x to 1.5x); 0 always, a huge number never


def _flipped_nhwc(og: int, kh: int, kw: int) -> bool:
    """The flipped convolution (input channels O', kernel KH x KW) gathers channels-last."""
    return og * kh * kw >= FLIPPED_NHWC_DEPTH


def _flipped_chunk(n: int, cols_per_image: int) -> int:
    """Images per call of the flipped forward convolution: about :data:`GRAD_COLS_BYTES` of its
    columns (the forward alone would gather up to ``COLS_BYTES``)."""
    return max(1, min(n, min(GRAD_COLS_BYTES, K.COLS_BYTES) // max(1, cols_per_image)))


def conv_grad_input_workspace(node: Node, graph: Graph, batch: int) -> int:
    n, c, h, w, o, g, kh, kw, oh, ow, dtype = _grad_dims(node, graph, batch, None)
    flipped = _flipped(node.attrs, h, w, kh, kw)
    if flipped is not None:  # the flipped weights, then the forward conv's own workspace
        m = _flipped_chunk(n, o // g * kh * kw * h * w * dtype.itemsize)
        if _flipped_nhwc(o // g, kh, kw):
            conv = nhwc.workspace_elems(m, o, oh, ow, c, g, kh, kw, h, w, flipped["pads"],
                                        dtype.itemsize, 0) * dtype.itemsize
        else:
            conv = K.conv_workspace_of(m, o, oh, ow, c, o // g, kh, kw, h, w, flipped, dtype)
        return _round4(c * (o // g) * kh * kw * dtype.itemsize) + conv
    m, _, elems = _conv_grad_plan(n, c, h, w, o, g, kh, kw, oh, ow, node.attrs["pads"],
                                  dtype.itemsize)
    if _col2im_nhwc(c // g, ow):
        elems = _nhwc_grad_input_elems(m, c, h, w, o, g, kh, kw, oh, ow, node.attrs["pads"])
    return elems * dtype.itemsize


COL2IM_NHWC = 1  # channels-last col2im when C' > COL2IM_NHWC * OW (0: always; huge: never)


def _col2im_nhwc(cg: int, ow: int) -> bool:
    """The scatter's runs: OW elements in NCHW, C' channels-last; the longer wins (measured on
    LeNet's conv2, C' = 20 over OW = 8: 0.70x the time; the Keras CNN's C' = 32 over OW = 47:
    1.1x)."""
    return cg > COL2IM_NHWC * ow


def _nhwc_grad_input_elems(m, c, h, w, o, g, kh, kw, oh, ow, pads) -> int:
    """:func:`_grad_input_nhwc`'s workspace: one group's weights (O', KH, KW, C'), then per chunk
    dy channels-last, the columns and the padded channels-last input gradient."""
    t, b, l, r = pads
    cg, og = c // g, o // g
    k, p = cg * kh * kw, oh * ow
    return og * k + m * (p * og + p * k + (h + t + b) * (w + l + r) * cg)


def _grad_input_nhwc(attrs, dy, w, dx, wsd, m):
    """dx channels-last: per chunk and group ``dy (images x positions, O') @ W' (O', KH KW C')``
    into columns (one tall GEMM), col2im as one add per kernel offset over runs of C' contiguous
    elements into a zeroed padded (images, H', W', C') block, then its interior transposed into dx."""
    n, o, oh, ow = dy.shape
    _, cg, kh, kw = w.shape
    g = attrs["groups"]
    og, k, p = o // g, cg * kh * kw, oh * ow
    (sh, sw), (dh, dw) = attrs["stride"], attrs["dilation"]
    t, b, l, r = attrs["pads"]
    h, wd = attrs["input_size"]
    hp, wp = h + t + b, wd + l + r
    wt = _flat(wsd[:og * k], (og, kh, kw, cg))
    at = og * k
    dyt_buf, at = wsd[at:at + m * p * og], at + m * p * og
    cols_buf, at = wsd[at:at + m * p * k], at + m * p * k
    xp_buf = wsd[at:at + m * hp * wp * cg]
    for gi in range(g):
        np.copyto(wt, w[gi * og:(gi + 1) * og].transpose(0, 2, 3, 1))
        for start in range(0, n, m):
            mm = min(m, n - start)
            dyt = _flat(dyt_buf[:mm * p * og], (mm, oh, ow, og))
            np.copyto(dyt, dy[start:start + mm, gi * og:(gi + 1) * og].transpose(0, 2, 3, 1))
            cols = _flat(cols_buf[:mm * p * k], (mm, oh, ow, kh, kw, cg))
            np.matmul(_flat(dyt, (mm * p, og)), _flat(wt, (og, k)), out=_flat(cols, (mm * p, k)))
            xp = _flat(xp_buf[:mm * hp * wp * cg], (mm, hp, wp, cg))
            xp.fill(0)
            for i in range(kh):
                for j in range(kw):
                    view = xp[:, i * dh:i * dh + (oh - 1) * sh + 1:sh,
                              j * dw:j * dw + (ow - 1) * sw + 1:sw]
                    np.add(view, cols[:, :, :, i, j], out=view)
            np.copyto(dx[start:start + mm, gi * cg:(gi + 1) * cg],
                      xp[:, t:t + h, l:l + wd].transpose(0, 3, 1, 2))


def _weight_plan(n, c, h, w, o, g, kh, kw, oh, ow, pads, itemsize):
    """(images per chunk, workspace elements) of :func:`conv2d_grad_weight`: for one group, the
    chunk's padded channels-last input, its columns (positions x K), dy as (O', images x
    positions) and two (O', K) accumulators. The columns hold about :data:`WEIGHT_COLS_BYTES`."""
    t, b, l, r = pads
    cg, og = c // g, o // g
    k, p = cg * kh * kw, oh * ow
    m = max(1, min(n, min(WEIGHT_COLS_BYTES, K.COLS_BYTES) // (itemsize * k * p)))
    return m, m * ((h + t + b) * (w + l + r) * cg + p * k + og * p) + 2 * og * k


def conv_grad_weight_workspace(node: Node, graph: Graph, batch: int) -> int:
    n, c, h, w, o, g, kh, kw, oh, ow, dtype = _grad_dims(node, graph, batch, 0)
    _, elems = _weight_plan(n, c, h, w, o, g, kh, kw, oh, ow, node.attrs["pads"], dtype.itemsize)
    return elems * dtype.itemsize


def _cols_from_dy(wg_t, dyg, cols3):
    """``cols3`` (m, K, P) = ``wg_t`` (K, O') @ ``dyg`` (m, O', OH, OW), without copying dy."""
    m, og, oh, ow = dyg.shape
    dy3 = _reshaped(dyg, (m, og, oh * ow))
    if dy3 is not None:
        np.matmul(wg_t, dy3, out=cols3)
        return
    for i in range(m):  # planes that do not flatten (a slice along H or W): one GEMM per row
        cols = _flat(cols3[i], (cols3.shape[1], oh, ow))
        np.matmul(wg_t, dyg[i].transpose(1, 0, 2), out=cols.transpose(1, 0, 2))


def conv2d_grad_input(attrs, inputs, outputs, ws):
    """dx: per chunk and group one stacked GEMM into the columns, then col2im (see the module)."""
    dy, w = inputs
    dx = outputs[0]
    n, o, oh, ow = dy.shape
    _, cg, kh, kw = w.shape
    g = attrs["groups"]
    og, k, c = o // g, cg * kh * kw, cg * g
    (sh, sw), (dh, dw), pads = attrs["stride"], attrs["dilation"], attrs["pads"]
    t, b, l, r = pads
    h, wd = attrs["input_size"]
    wsd = ws.view(dy.dtype)
    flipped = _flipped(attrs, h, wd, kh, kw)
    if flipped is not None:
        wt = _flat(wsd[:c * og * kh * kw], (c, og, kh, kw))
        # wt[gi*cg + ci, oi, i, j] = w[gi*og + oi, ci, kh-1-i, kw-1-j]
        np.copyto(_flat(wt, (g, cg, og, kh, kw)),
                  _flat(w, (g, og, cg, kh, kw)).transpose(0, 2, 1, 3, 4)[..., ::-1, ::-1])
        rest = ws.view(np.uint8)[_round4(wt.nbytes):].view(np.float32)
        m = _flipped_chunk(n, og * kh * kw * h * wd * dy.itemsize)
        channels_last = _flipped_nhwc(og, kh, kw)
        for start in range(0, n, m):  # chunks: the forward's workspace sized for m images
            if channels_last:  # nhwc.conv takes the workspace in the layer's dtype
                nhwc.conv(flipped, dy[start:start + m], wt, dx[start:start + m], rest.view(dy.dtype))
            else:
                K.conv2d(flipped, [dy[start:start + m], wt], [dx[start:start + m]], rest)
        return
    m, padded, _ = _conv_grad_plan(n, c, h, wd, o, g, kh, kw, oh, ow, pads, dy.itemsize)
    if _col2im_nhwc(cg, ow):
        _grad_input_nhwc(attrs, dy, w, dx, wsd, m)
        return
    for start in range(0, n, m):
        stop = min(n, start + m)
        mm = stop - start
        if padded:
            tgt_all = _flat(wsd[:mm * padded], (mm, c, h + t + b, wd + l + r))
        else:
            tgt_all = dx[start:stop]
        tgt_all.fill(0)
        cols3 = _flat(wsd[m * padded:m * padded + mm * k * oh * ow], (mm, k, oh * ow))
        cols = _flat(cols3, (mm, cg, kh, kw, oh, ow))
        for gi in range(g):
            wg_t = _flat(w[gi * og:(gi + 1) * og], (og, k)).T
            _cols_from_dy(wg_t, dy[start:stop, gi * og:(gi + 1) * og], cols3)
            tgt = tgt_all[:, gi * cg:(gi + 1) * cg]
            for i in range(kh):  # col2im: one kernel offset reaches each pixel at most once
                for j in range(kw):
                    view = tgt[:, :, i * dh:i * dh + (oh - 1) * sh + 1:sh,
                               j * dw:j * dw + (ow - 1) * sw + 1:sw]
                    np.add(view, cols[:, :, i, j], out=view)
        if padded:
            np.copyto(dx[start:stop], tgt_all[:, :, t:t + h, l:l + wd])


def conv2d_grad_weight(attrs, inputs, outputs, ws):
    """dweight: per chunk and group ONE GEMM ``dy (O', images x positions) @ columns (images x
    positions, K)`` over channels-last columns (see the module)."""
    x, dy = inputs
    dwt = outputs[0]
    n, c, h, wd = x.shape
    o, oh, ow = dy.shape[1:]
    g, (kh, kw), pads = attrs["groups"], attrs["kernel"], attrs["pads"]
    (sh, sw), (dh, dw) = attrs["stride"], attrs["dilation"]
    og, cg = o // g, c // g
    k, p = cg * kh * kw, oh * ow
    t, b, l, r = pads
    hp, wp = h + t + b, wd + l + r
    m, _ = _weight_plan(n, c, h, wd, o, g, kh, kw, oh, ow, pads, x.itemsize)
    wsd = ws.view(x.dtype)
    at = 0
    xp_buf, at = wsd[at:at + m * hp * wp * cg], at + m * hp * wp * cg
    cols_buf, at = wsd[at:at + m * p * k], at + m * p * k
    dyt_buf, at = wsd[at:at + m * og * p], at + m * og * p
    acc, at = _flat(wsd[at:at + og * k], (og, k)), at + og * k
    part = _flat(wsd[at:at + og * k], (og, k))
    for gi in range(g):
        for start in range(0, n, m):
            stop = min(n, start + m)
            mm = stop - start
            xp = _flat(xp_buf[:mm * hp * wp * cg], (mm, hp, wp, cg))
            nhwc._fill_border(xp, h, wd, pads)
            np.copyto(xp[:, t:t + h, l:l + wd], x[start:stop, gi * cg:(gi + 1) * cg]
                      .transpose(0, 2, 3, 1))
            cols = _flat(cols_buf[:mm * p * k], (mm, oh, ow, kh, kw, cg))
            st = xp.strides
            np.copyto(cols, np.lib.stride_tricks.as_strided(
                xp, (mm, oh, ow, kh, kw, cg),
                (st[0], st[1] * sh, st[2] * sw, st[1] * dh, st[2] * dw, st[3]), writeable=False))
            dys = dy[start:stop, gi * og:(gi + 1) * og]
            dy2 = _reshaped(dys, (og, p)) if mm == 1 else None
            if dy2 is None:  # (O', images x positions): a copy unless one image's dy flattens
                dyt = _flat(dyt_buf[:og * mm * p], (og, mm, oh, ow))
                np.copyto(dyt, dys.transpose(1, 0, 2, 3))
                dy2 = _flat(dyt, (og, mm * p))
            np.matmul(dy2, _flat(cols, (mm * p, k)), out=acc if start == 0 else part)
            if start:
                np.add(acc, part, out=acc)
        # (O', KH, KW, C') -> the output's (O', C', KH, KW)
        np.copyto(dwt[gi * og:(gi + 1) * og], _flat(acc, (og, kh, kw, cg)).transpose(0, 3, 1, 2))
