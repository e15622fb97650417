"""The cpu device's kernels of the training step: gradients and the parameter update.

Written like the forward kernels of :mod:`.kernels` (same signature ``fn(attrs, inputs, outputs,
workspace)``, outputs into planned views, every temporary in the planned workspace whose size the
``*_workspace`` functions report), and computing what the ops' reference forwards in
:mod:`graphrt.ops.grad`, :mod:`graphrt.ops.grad_spatial` and :mod:`graphrt.ops.optim` compute, in
the same order of operations (the numbers differ at most by float rounding: BLAS blocking).

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
- ``max_pool_grad``: over chunks of images that stay in L2 (:data:`POOL_GRAD_BYTES`), per kernel
  offset over the output positions whose window element lies in the input
  (:func:`.kernels._pool_offsets`: no padded copy), a comparison with ``y`` into a workspace mask,
  ``hit > done`` (the first maximum wins), ``dy * hit`` into a contiguous workspace block (a masked
  copy where dy holds an inf or NaN), and one strided add into dx. When y has no NaN and dy is
  finite (the common case), four ufuncs per offset instead of five: the dy still to hand out is
  kept in the workspace and zeroed where a maximum took it (0.83x the time on CIFAR-10 quick's
  overlapping 3x3/2 pool, the same on 2x2/2 pools).
- ``avg_pool_grad``: ``dy`` over the divisor once into the workspace, then the (separable) window
  scatter as one add per kernel column into a (N, C, OH, W) workspace and one per kernel row into dx.
- ``relu_grad``: block by block, ``dy * (t > 0)`` (or the slope where ``t <= 0``).
- ``reduce_channels`` (bias gradients): per-image channel sums in the input's dtype over contiguous
  runs, then the images summed in float64 (the reference sums everything in float64).
- ``dropout_train``: the reference's Philox mask drawn in blocks in the workspace
  (:mod:`.dropout`).
- ``sgd_update``: momentum, weight decay and the learning rate in one pass of blocks over the
  parameter with two block temporaries: no per-step arrays the size of the parameter.

The device splits these launches across its threads (:mod:`.split`): the data gradients by batch
slices, ``conv2d_grad_weight`` by batch slices whose partial sums are added at the end.
"""
from __future__ import annotations

import numpy as np

from ...ir import Graph, Node
from ...ops import get_op
from ...ops.optim import learning_rate
from . import dropout
from . import kernels as K
from . import nhwc
from .kernels import _flat, _pad_into, _pool_offsets, _pool_pads, _reshaped, _spec


def _bools(ws, count: int, offset_bytes: int = 0) -> np.ndarray:
    return ws.view(np.uint8)[offset_bytes:offset_bytes + count].view(np.bool_)


def _round4(nbytes: int) -> int:
    return -(-nbytes // 4) * 4


# ---- convolution ----------------------------------------------------------------------------------
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


# ---- pooling --------------------------------------------------------------------------------------
POOL_GRAD_BYTES = 3 << 18  # max_pool_grad: input images per chunk (the chunk stays in L2 over the
# kernel offsets, each of which re-reads its x, y, dy and dx). 768 KiB: the workspace (masks and two
# dy-shaped blocks) is then about what 1 MiB chunks took with one dy-shaped block; it is live at
# CIFAR-10 quick's peak step


def _pool_grad_chunk(n, c, h, w, itemsize) -> int:
    return max(1, min(n, POOL_GRAD_BYTES // max(1, c * h * w * itemsize)))


def max_pool_grad_workspace(node: Node, graph: Graph, batch: int) -> int:
    """For a chunk of images, two boolean masks shaped like the output (this offset's hits, the
    windows done), the masked dy and the dy still to hand out."""
    (n, c, h, w), dtype = _spec(graph, node.inputs[0], batch)
    oh, ow = graph.specs[node.inputs[1]].shape[2:]
    per = _pool_grad_chunk(n, c, h, w, dtype.itemsize) * c * oh * ow
    return _round4(2 * per) + 2 * per * dtype.itemsize


def max_pool_grad(attrs, inputs, outputs, ws):
    x, y, dy = inputs
    dx = outputs[0]
    n, c, h, w = x.shape
    oh, ow = y.shape[2:]
    kernel, stride, pads = _pool_pads(attrs, h, w, oh, ow)
    m = _pool_grad_chunk(n, c, h, w, x.itemsize)
    per = m * c * oh * ow
    hit_buf, done_buf = _bools(ws, per), _bools(ws, per, per)
    masked_buf = ws.view(np.uint8)[_round4(2 * per):].view(x.dtype)[:per]
    rest_buf = ws.view(np.uint8)[_round4(2 * per):].view(x.dtype)[per:2 * per]
    dx.fill(0)
    offsets = _pool_offsets(kernel, stride, pads, h, w, oh, ow)
    for start in range(0, n, m):
        stop = min(n, start + m)
        xs, ys, dys, dxs = x[start:stop], y[start:stop], dy[start:stop], dx[start:stop]
        done = _flat(done_buf[:ys.size], ys.shape)
        done.fill(False)
        nan = bool(np.isnan(np.max(ys)))  # max propagates NaN: no temporary like ys
        finite = bool(np.isfinite(np.max(dys)) and np.isfinite(np.min(dys)))
        if finite and not nan:
            _max_pool_grad_finite(offsets, xs, ys, dys, dxs, hit_buf, masked_buf, rest_buf)
            continue
        for entry in offsets:
            if entry is None:
                continue
            rows, cols, rs, cs = entry
            ysub, dsub, xsub = ys[:, :, rows, cols], done[:, :, rows, cols], xs[:, :, rs, cs]
            hit = _flat(hit_buf[:ysub.size], ysub.shape)
            np.equal(xsub, ysub, out=hit)
            if nan:
                hit |= np.isnan(xsub)  # rare (a NaN in the output): one small temporary is fine
            np.greater(hit, dsub, out=hit)  # hit and not done: the first maximum of each window
            np.logical_or(dsub, hit, out=dsub)
            masked = _flat(masked_buf[:ysub.size], ysub.shape)
            if finite:  # dy * hit is the reference's where(hit, dy, 0) (up to the sign of 0)
                np.multiply(dys[:, :, rows, cols], hit, out=masked)
            else:  # an inf or NaN times 0 is NaN: copy where hit (twice as slow)
                np.copyto(masked, 0)
                np.copyto(masked, dys[:, :, rows, cols], where=hit)
            target = dxs[:, :, rs, cs]
            np.add(target, masked, out=target)


def _max_pool_grad_finite(offsets, xs, ys, dys, dxs, hit_buf, masked_buf, rest_buf):
    """The common case (no NaN in y, dy finite) in four ufuncs per kernel offset instead of five:
    ``rest`` holds the dy still to hand out, zeroed (``rest - rest * 1``, exact) in the window
    whose maximum took it, so a later tie takes 0 — the first maximum wins, as the reference."""
    rest = _flat(rest_buf[:ys.size], ys.shape)
    np.copyto(rest, dys)
    for entry in offsets:
        if entry is None:
            continue
        rows, cols, rs, cs = entry
        ysub, xsub, rsub = ys[:, :, rows, cols], xs[:, :, rs, cs], rest[:, :, rows, cols]
        hit = _flat(hit_buf[:ysub.size], ysub.shape)
        np.equal(xsub, ysub, out=hit)
        masked = _flat(masked_buf[:ysub.size], ysub.shape)
        np.multiply(rsub, hit, out=masked)
        np.subtract(rsub, masked, out=rsub)
        target = dxs[:, :, rs, cs]
        np.add(target, masked, out=target)


def avg_pool_grad_workspace(node: Node, graph: Graph, batch: int) -> int:
    """dy over the divisor, shaped like dy, then its columns scattered: (N, C, OH, W)."""
    (n, c, oh, ow), dtype = _spec(graph, node.inputs[0], batch)
    w = node.attrs["input_size"][1]
    return (n * c * oh * ow + n * c * oh * w) * dtype.itemsize


def _separable_offsets(kernel, stride, pads, h, w, oh, ow):
    """The kernel offsets' (output rows, input rows) per kernel row and (output cols, input cols)
    per kernel column (None where no output position reaches the input), from :func:`_pool_offsets`
    (whose entry for offset (i, j) is the product of the two)."""
    kh, kw = kernel
    entries = _pool_offsets(kernel, stride, pads, h, w, oh, ow)
    rows = [next(((e[0], e[2]) for e in entries[i * kw:(i + 1) * kw] if e is not None), None)
            for i in range(kh)]
    cols = [next(((e[1], e[3]) for e in entries[j::kw] if e is not None), None) for j in range(kw)]
    return rows, cols


def avg_pool_grad(attrs, inputs, outputs, ws):
    """dy over the divisor, then the window scatter split in two passes (it is separable): along
    the columns into (N, C, OH, W), then along the rows into dx, whose adds run over whole rows of
    W elements — KH + KW strided adds instead of KH x KW."""
    dy, dx = inputs[0], outputs[0]
    n, c, oh, ow = dy.shape
    h, w = attrs["input_size"]
    kernel, stride, pads = _pool_pads(attrs, h, w, oh, ow)
    wsd = ws.view(dy.dtype)
    share = _flat(wsd[:dy.size], dy.shape)
    np.divide(dy, K._avg_divisor(attrs, h, w, oh, ow, dy.dtype), out=share)
    rows, cols = _separable_offsets(kernel, stride, pads, h, w, oh, ow)
    wide = _flat(wsd[dy.size:dy.size + n * c * oh * w], (n, c, oh, w))
    wide.fill(0)
    for entry in cols:
        if entry is not None:
            out_cols, in_cols = entry
            target = wide[:, :, :, in_cols]
            np.add(target, share[:, :, :, out_cols], out=target)
    dx.fill(0)
    for entry in rows:
        if entry is not None:
            out_rows, in_rows = entry
            target = dx[:, :, in_rows]
            np.add(target, wide[:, :, out_rows], out=target)


# ---- elementwise ----------------------------------------------------------------------------------
def relu_grad_workspace(node: Node, graph: Graph, batch: int) -> int:
    """A boolean block mask and (leaky relu) a block of slopes."""
    shape, dtype = _spec(graph, node.inputs[0], batch)
    block = min(K.BLOCK, int(np.prod(shape)))
    slopes = block * dtype.itemsize if node.attrs["negative_slope"] != 0.0 else 0
    return _round4(block) + slopes


def relu_grad(attrs, inputs, outputs, ws):
    """``dy * (t > 0)`` (``dy * where(t > 0, 1, slope)``) block by block, as the reference."""
    dy, t = inputs
    out = outputs[0]
    slope = attrs["negative_slope"]
    block = min(K.BLOCK, out.size)
    mask_buf = _bools(ws, block)
    slope_buf = ws.view(np.uint8)[_round4(block):].view(out.dtype) if slope != 0.0 else None
    for idx in K._blocks(out.shape):
        ob = out[idx]
        mask = _flat(mask_buf[:ob.size], ob.shape)
        np.greater(t[idx], 0, out=mask)
        if slope == 0.0:
            np.multiply(dy[idx], mask, out=ob)
        else:
            s = _flat(slope_buf[:ob.size], ob.shape)
            s.fill(slope)
            np.copyto(s, 1, where=mask)
            np.multiply(dy[idx], s, out=ob)


# ---- bias gradients -------------------------------------------------------------------------------
def reduce_channels_workspace(node: Node, graph: Graph, batch: int) -> int:
    """The (N, C) per-image sums in the input's dtype, then C float64 totals."""
    (n, c, *_), dtype = _spec(graph, node.inputs[0], batch)
    return _round8(n * c * dtype.itemsize) + c * 8


def _round8(nbytes: int) -> int:
    return -(-nbytes // 8) * 8


def reduce_channels(attrs, inputs, outputs, ws):
    """The sum over every axis but 1: each image's channel planes summed in the input's dtype
    (contiguous runs: 2 to 3.5x faster than the reference's one float64 reduction over the strided
    axes, which casts every element), then the images summed in float64 as the reference."""
    x, out = inputs[0], outputs[0]
    n, c = x.shape[:2]
    rows = _flat(ws.view(np.uint8)[:n * c * x.itemsize].view(x.dtype), (n, c))
    total = ws.view(np.uint8)[_round8(n * c * x.itemsize):][:c * 8].view(np.float64)
    if x.ndim > 2:
        np.add.reduce(x, axis=tuple(range(2, x.ndim)), out=rows)
    else:
        np.copyto(rows, x)
    np.add.reduce(rows, axis=0, dtype=np.float64, out=total)
    np.copyto(out, total)


# ---- optimizer ------------------------------------------------------------------------------------
def sgd_workspace(node: Node, graph: Graph, batch: int) -> int:
    """Two blocks of the parameter's dtype."""
    spec = graph.specs[node.inputs[0]]
    return 2 * min(K.BLOCK, int(np.prod(spec.shape))) * np.dtype(spec.dtype).itemsize


def sgd_update(attrs, inputs, outputs, ws):
    """The reference's update, block by block: ``g = grad + decay * param``; ``v = momentum * v + g``
    then ``param -= lr * v`` (PyTorch) or ``v = momentum * v + lr * g; param -= v`` (Caffe)."""
    param, grad, velocity, it = inputs
    tp = param.dtype.type
    lr = tp(learning_rate(attrs, float(it)) * attrs["lr_mult"])
    decay = attrs["weight_decay"] * attrs["decay_mult"]
    momentum, caffe = tp(attrs["momentum"]), attrs["convention"] == "caffe"
    block = min(K.BLOCK, param.size)
    base = ws.view(param.dtype)
    t1, t2 = base[:block], base[block:2 * block]
    for idx in K._blocks(param.shape):
        pb, gb, vb = param[idx], grad[idx], velocity[idx]
        g = gb
        if decay:
            g = _flat(t1[:pb.size], pb.shape)
            np.multiply(pb, tp(decay), out=g)
            np.add(gb, g, out=g)
        np.multiply(vb, momentum, out=vb)
        step = _flat(t2[:pb.size], pb.shape)
        if caffe:
            np.multiply(g, lr, out=step)
            np.add(vb, step, out=vb)
            np.subtract(pb, vb, out=pb)
        else:
            np.add(vb, g, out=vb)
            np.multiply(vb, lr, out=step)
            np.subtract(pb, step, out=pb)


_KERNELS = {
    "conv2d_grad_input": conv2d_grad_input, "conv2d_grad_weight": conv2d_grad_weight,
    "max_pool_grad": max_pool_grad, "avg_pool_grad": avg_pool_grad, "relu_grad": relu_grad,
    "reduce_channels": reduce_channels, "sgd_update": sgd_update,
    "dropout_train": dropout.dropout_train,
}
TRAIN_KERNELS = {op: K._small_buffers(fn) for op, fn in _KERNELS.items()}
TRAIN_WORKSPACES = {
    "conv2d_grad_input": conv_grad_input_workspace, "conv2d_grad_weight": conv_grad_weight_workspace,
    "max_pool_grad": max_pool_grad_workspace, "avg_pool_grad": avg_pool_grad_workspace,
    "relu_grad": relu_grad_workspace, "reduce_channels": reduce_channels_workspace,
    "sgd_update": sgd_workspace, "dropout_train": dropout.workspace,
}
