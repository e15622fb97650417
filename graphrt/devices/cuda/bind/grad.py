"""Binders of the training step's gradient ops and its other training-only ops (kernels in
``kernels/grad.cu`` and ``grad_spatial.cu``, GEMMs through
:class:`~graphrt.devices.cuda.runtime.gemm.Gemm`):

- ``conv2d_grad_input``: one GEMM per group (``W_g^T @ dy_g``, a chunk of images at a time) into
  columns in the workspace, then ``col2im`` (a gather: one thread per input pixel, no atomics);
  ``conv2d_grad_weight``: ``im2col`` into columns laid out (K, images, OH*OW) and ``dy`` copied to
  (O, images, OH*OW), so each group's gradient is one GEMM over the chunk, accumulated over chunks.
- ``dense_grad_input`` (``dy @ W``) and ``dense_grad_weight`` (``dy^T @ x``): one GEMM each.
- ``relu_grad``, ``tanh_grad``, ``sigmoid_grad``, ``scale_grad``, ``zeros_like`` (``ew_grad``);
  ``unary_grad`` (the activations' derivatives, ``unary_grad``) and ``binary_grad`` (sub, div, pow,
  maximum, minimum, prelu, where with up to 4 inputs, ``binary_grad``), both in double precision as
  the reference computes them;
  ``softmax_grad``, ``log_softmax_grad`` (``softmax_grad``, a block per row);
  ``softmax_cross_entropy_grad`` and ``nll_loss_grad`` (``class_loss_grad``); ``reduce_channels``
  (``channel_sum``, a block per channel).
- ``max_pool_grad``, ``avg_pool_grad`` (``pool2d_grad``), ``lrn_grad``; ``batch_norm_train`` (batch
  statistics, the running averages in place; ``bn_count`` then advances Caffe's scale factor or the
  count) and ``batch_norm_train_grad``.
- ``dropout_train``: the mask from Philox4x32-10 keyed by the node's seed, its device-resident step
  counter and the element index (``dropout_mask``), then ``dropout_step`` advances the counter: no
  host mask, no read-back; :mod:`graphrt.ops.philox` draws the same mask on the host.
"""
from __future__ import annotations

import numpy as np

from ....ops import get_op
from ..calls import (MAX_BLOCKS, MAX_RANK, THREADS, Call, Unsupported, at_offset, check_dtype,
                     copy_call, estrides, grid_1d, num_elements)
from ..runtime.gemm import Gemm
from .gemm import _im2col_grid, _plane_strides, conv_chunk
from .elementwise import INPUTS_PER_LAUNCH, NARY_CODES, broadcast6, unary_step
from .norm import _nchw, _rows
from .train import LABEL_KINDS


# ---- elementwise ----------------------------------------------------------------------------
def _rank6(y, *others):
    """Shape and strides (y's, then each of ``others``) of views of y's shape, rank 6."""
    shape, ys, xs = broadcast6(y, others)
    return shape, [ys, *xs]


def _ew_grad_call(op: int, dy, t, y, a=0.0, b=0.0, c=0.0, d=0.0) -> Call:
    dtype = check_dtype(dy, t, y)
    if not dy.shape == t.shape == y.shape:
        raise Unsupported("gradient operands of different shapes")
    shape, (ys, ds, ts) = _rank6(y, dy, t)
    total = num_elements(y.shape)
    return Call("ew_grad", dtype, grid_1d(total), (THREADS, 1, 1),
                (dy, t, y, total, *shape, *ds, *ts, *ys, op, a, b, c, d))


def bind_ew_grad(op):
    def bind(attrs, inputs, outputs, ws):
        dy, t = inputs
        if op == "relu_grad":
            return [_ew_grad_call(0, dy, t, outputs[0], attrs["negative_slope"])]
        if op in ("tanh_grad", "sigmoid_grad"):
            return [_ew_grad_call(1 if op == "tanh_grad" else 2, dy, t, outputs[0])]
        p, s, shift = attrs["power"], attrs["scale"], attrs["shift"]  # scale_grad
        code = 5 if p == 0.0 else 4 if p == 1.0 else 3
        return [_ew_grad_call(code, dy, t, outputs[0], p * s, shift, s, p - 1.0)]
    return bind


def bind_zeros_like(attrs, inputs, outputs, ws):
    y = outputs[0]
    return [_ew_grad_call(5, y, y, y)]


def bind_unary_grad(attrs, inputs, outputs, ws):
    dy, x = inputs
    y = outputs[0]
    dtype = check_dtype(dy, x, y)
    if not dy.shape == x.shape == y.shape:
        raise Unsupported("gradient operands of different shapes")
    params = get_op(attrs["op"]).normalize_attrs(dict(attrs["params"]))
    code, a, b, _ = unary_step(attrs["op"], params)
    shape, (ys, ds, xs) = _rank6(y, dy, x)
    total = num_elements(y.shape)
    return [Call("unary_grad", dtype, grid_1d(total), (THREADS, 1, 1),
                 (dy, x, y, total, *shape, *ds, *xs, *ys, code, a, b))]


def bind_binary_grad(attrs, inputs, outputs, ws):
    dy, xs = inputs[0], inputs[1:]
    y = outputs[0]
    dtype = check_dtype(dy, y)
    if len(xs) > INPUTS_PER_LAUNCH:
        raise Unsupported(f"binary_grad of {len(xs)} inputs (the kernel takes up to "
                          f"{INPUTS_PER_LAUNCH})")
    kinds = [LABEL_KINDS.get(np.dtype(x.dtype).name) for x in xs]
    if None in kinds:
        raise Unsupported(f"inputs of dtypes {', '.join(str(x.dtype) for x in xs)}")
    shape, ys, (ds, *ss) = broadcast6(y, [dy, *xs])
    args = []
    for k in range(INPUTS_PER_LAUNCH):
        args += [xs[k], kinds[k], *ss[k]] if k < len(xs) else [None, 0, *(0,) * MAX_RANK]
    code = 8 if attrs["op"] == "where" else NARY_CODES[attrs["op"]]
    total = num_elements(y.shape)
    return [Call("binary_grad", dtype, grid_1d(total), (THREADS, 1, 1),
                 (dy, y, total, code, attrs["operand"], len(xs), *shape, *ds, *ys, *args))]


def bind_softmax_grad(op):
    def bind(attrs, inputs, outputs, ws):
        dy, y = inputs
        dx = outputs[0]
        dtype = check_dtype(dy, y, dx)
        axis = attrs["axis"] % dy.ndim
        (outer, length, inner), ds = _rows(dy, axis)
        ys, xs = _rows(y, axis)[1], _rows(dx, axis)[1]
        threads = 32
        while threads < min(length, 256):
            threads *= 2
        return [Call("softmax_grad", dtype, (max(1, min(outer * inner, MAX_BLOCKS)), 1, 1),
                     (threads, 1, 1), (dy, *ds, y, *ys, dx, *xs, outer, length, inner,
                                       int(op == "log_softmax_grad")))]
    return bind


def _label_kind(labels) -> int:
    kind = LABEL_KINDS.get(np.dtype(labels.dtype).name)
    if kind is None:
        raise Unsupported(f"labels of dtype {labels.dtype}")
    return kind


def bind_loss_grad(op):
    def bind(attrs, inputs, outputs, ws):
        if op == "nll_loss_grad":
            (labels, dloss), x = inputs, None
        else:
            x, labels, dloss = inputs
        dx = outputs[0]
        dtype = check_dtype(dx, dloss, *([x] if x is not None else []))
        n, c = dx.shape
        xs = estrides(x) if x is not None else (0, 0)
        ls = estrides(labels)[0] if labels.ndim else 0
        return [Call("class_loss_grad", dtype, grid_1d(n), (THREADS, 1, 1), (
            x, *xs, labels, ls, _label_kind(labels), dloss, dx, *estrides(dx), n, c,
            int(op == "nll_loss_grad")))]
    return bind


def _channel_grid(c: int) -> tuple:
    return (max(1, min(c, MAX_BLOCKS)), 1, 1)


def bind_reduce_channels(attrs, inputs, outputs, ws):
    x, out = inputs[0], outputs[0]
    dtype = check_dtype(x, out)
    if estrides(out) != (1,) and out.shape[0] > 1:
        raise Unsupported("a channel sum into a strided vector")
    (n, c, h, w), xs = _nchw(x)
    return [Call("channel_sum", dtype, _channel_grid(c), (THREADS, 1, 1),
                 (x, *xs, n, c, h, w, out))]


# ---- dense and convolution ------------------------------------------------------------------
def bind_dense_grad_input(attrs, inputs, outputs, ws):
    dy, w = inputs  # dx = dy @ W: (N, out) x (out, in)
    dx = outputs[0]
    dtype = check_dtype(dy, w, dx)
    n, o = dy.shape
    i = w.shape[1]
    return [Gemm(dtype, 1, n, i, o, dy, (0, *estrides(dy)), w, (0, *estrides(w)),
                 dx, (0, *estrides(dx)))]


def bind_dense_grad_weight(attrs, inputs, outputs, ws):
    dy, x = inputs  # dW = dy^T @ x: (out, N) x (N, in)
    dw = outputs[0]
    dtype = check_dtype(dy, x, dw)
    n, o = dy.shape
    i = x.shape[1]
    s0, s1 = estrides(dy)
    return [Gemm(dtype, 1, o, i, n, dy, (0, s1, s0), x, (0, *estrides(x)), dw, (0, *estrides(dw)))]


def _conv_geometry(attrs):
    (sh, sw), (dh, dw) = attrs["stride"], attrs["dilation"]
    t, _, l, _ = attrs["pads"]
    return sh, sw, t, l, dh, dw


def bind_conv2d_grad_input(attrs, inputs, outputs, ws):
    """cols[img] (C*KH*KW, P) = W_g^T @ dy_g[img] per group (a batched GEMM over the chunk's
    images), then col2im gathers them into dx."""
    dy, w = inputs
    dx = outputs[0]
    dtype = check_dtype(dy, w, dx)
    n, c, h, wd = dx.shape
    o, cg, kh, kw = w.shape
    og, k = o // attrs["groups"], cg * kh * kw
    oh, ow = dy.shape[2:]
    p, kt = oh * ow, c * kh * kw
    if estrides(w) != (k, kh * kw, kw, 1):
        raise Unsupported("a weight that is not contiguous")
    dsn, dsc, dsp = _plane_strides(dy)
    chunk = conv_chunk(n, c, kh, kw, oh, ow, dtype.itemsize)
    cols = ws.view(dtype)[:chunk * kt * p]
    sh, sw, t, l, dh, dw = _conv_geometry(attrs)
    calls: list = []
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        for gi in range(attrs["groups"]):
            chans = slice(gi * og, (gi + 1) * og)
            calls.append(Gemm(dtype, m, k, p, og, w[chans], (0, 1, k), dy[start:start + m, chans],
                              (dsn, dsc, dsp), at_offset(cols, gi * k * p), (kt * p, p, 1)))
        part = dx[start:start + m]
        calls.append(Call("col2im", dtype, grid_1d(m * c * h * wd), (THREADS, 1, 1), (
            cols, kt * p, p, part, *estrides(part), m, c, h, wd, kh, kw, oh, ow,
            sh, sw, t, l, dh, dw)))
    return calls


def bind_conv2d_grad_weight(attrs, inputs, outputs, ws):
    """Per chunk of m images: im2col into cols (C*KH*KW, m*P) and dy into dyt (O, m*P), then per
    group dW_g (+)= dyt_g @ cols_g^T."""
    x, dy = inputs
    dwt = outputs[0]
    dtype = check_dtype(x, dy, dwt)
    n, c, h, wd = x.shape
    o, cg, kh, kw = dwt.shape
    og, k = o // attrs["groups"], cg * kh * kw
    oh, ow = dy.shape[2:]
    p, kt = oh * ow, c * kh * kw
    if estrides(dwt) != (k, kh * kw, kw, 1):
        raise Unsupported("a weight gradient that is not contiguous")
    chunk = conv_chunk(n, c, kh, kw, oh, ow, dtype.itemsize)
    space = ws.view(dtype)
    cols, dyt = space[:kt * chunk * p], space[kt * chunk * p:(kt + o) * chunk * p]
    sh, sw, t, l, dh, dw = _conv_geometry(attrs)
    calls: list = []
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        mp = m * p
        calls.append(Call("im2col", dtype, _im2col_grid(m * kt, p), (THREADS, 1, 1), (
            x[start:start + m], *estrides(x), cols, p, mp, m, c, h, wd, kh, kw, oh, ow,
            sh, sw, t, l, dh, dw)))
        calls.append(copy_call(dy[start:start + m].transpose(1, 0, 2, 3),
                               dyt[:o * mp].reshape(o, m, oh, ow)))
        for gi in range(attrs["groups"]):
            calls.append(Gemm(dtype, 1, og, k, mp, at_offset(dyt, gi * og * mp), (0, mp, 1),
                              at_offset(cols, gi * k * mp), (0, 1, mp),
                              dwt[gi * og:(gi + 1) * og], (0, k, 1), beta=float(start > 0)))
    return calls


def conv_grad_workspace_bytes(op, n, c, o, kh, kw, oh, ow, itemsize) -> int:
    chunk = conv_chunk(n, c, kh, kw, oh, ow, itemsize)
    rows = c * kh * kw + (o if op == "conv2d_grad_weight" else 0)
    return chunk * rows * oh * ow * itemsize


# ---- pooling, LRN, batch norm -------------------------------------------------------------
def bind_pool_grad(op):
    def bind(attrs, inputs, outputs, ws):
        from ....ops.pool import pool_geometry

        dx = outputs[0]
        if op == "max_pool_grad":
            x, y, dy = inputs
        else:
            x = y = None
            dy = inputs[0]
        dtype = check_dtype(dx, dy, *([x, y] if x is not None else []))
        n, c, h, w = dx.shape
        oh, ow = dy.shape[2:]
        (kh, kw), (sh, sw), (t, b, l, r) = pool_geometry(attrs, h, w)
        xs = estrides(x) if x is not None else (0,) * 4
        ys = estrides(y) if y is not None else (0,) * 4
        return [Call("pool2d_grad", dtype, grid_1d(n * c * h * w), (THREADS, 1, 1), (
            x, *xs, y, *ys, dy, *estrides(dy), dx, *estrides(dx), n, c, h, w, oh, ow, kh, kw,
            sh, sw, t, b, l, r, int(op == "max_pool_grad"),
            int(bool(attrs.get("count_include_pad", True)))))]
    return bind


def bind_lrn_grad(attrs, inputs, outputs, ws):
    x, dy = inputs
    dx = outputs[0]
    dtype = check_dtype(x, dy, dx)
    n, c, h, w = x.shape
    return [Call("lrn_grad", dtype, grid_1d(n * c * h * w), (THREADS, 1, 1), (
        x, *estrides(x), dy, *estrides(dy), dx, *estrides(dx), n, c, h, w, attrs["size"],
        attrs["alpha"], attrs["beta"], attrs["k"]))]


def _vectors(*arrays):
    for a in arrays:
        if a.ndim != 1 or (a.shape[0] > 1 and estrides(a)[0] != 1):
            raise Unsupported("a per-channel vector that is not contiguous")


def bind_batch_norm_train(attrs, inputs, outputs, ws):
    x, gamma, beta, rmean, rvar = inputs[:5]
    count = inputs[5] if len(inputs) == 6 else None
    y, saved_mean, saved_invstd = outputs
    dtype = check_dtype(x, y, gamma, beta, rmean, rvar, saved_mean, saved_invstd,
                        *([count] if count is not None else []))
    _vectors(gamma, beta, rmean, rvar, saved_mean, saved_invstd)
    (n, c, h, w), xs = _nchw(x)
    _, ys = _nchw(y)
    fraction = attrs["caffe_fraction"]
    calls = [Call("bn_train", dtype, _channel_grid(c), (THREADS, 1, 1), (
        x, *xs, y, *ys, n, c, h, w, gamma, beta, rmean, rvar, saved_mean, saved_invstd, count,
        attrs["eps"], attrs["momentum"], int(attrs["unbiased"]), fraction))]
    if count is not None:
        calls.append(Call("bn_count", dtype, (1, 1, 1), (1, 1, 1), (count, fraction)))
    return calls


def bind_batch_norm_train_grad(attrs, inputs, outputs, ws):
    x, gamma, mean, invstd, dy = inputs
    dx, dgamma, dbeta = outputs
    dtype = check_dtype(x, gamma, mean, invstd, dy, dx, dgamma, dbeta)
    _vectors(gamma, mean, invstd, dgamma, dbeta)
    (n, c, h, w), xs = _nchw(x)
    return [Call("bn_train_grad", dtype, _channel_grid(c), (THREADS, 1, 1), (
        x, *xs, dy, *_nchw(dy)[1], dx, *_nchw(dx)[1], n, c, h, w, gamma, mean, invstd,
        dgamma, dbeta))]


# ---- dropout ------------------------------------------------------------------------------
def bind_dropout_train(attrs, inputs, outputs, ws):
    x, counter = inputs
    y, mask = outputs
    dtype = check_dtype(x, y, mask)
    if np.dtype(counter.dtype) != np.int64 or counter.size != 1:
        raise Unsupported("a dropout step counter that is not one int64")
    shape, (ys, xs, ms) = _rank6(y, x, mask)
    total = num_elements(y.shape)
    rate, seed = attrs["rate"], attrs["seed"] % 2**64
    seed = seed - 2**64 if seed >= 2**63 else seed  # the kernel's long long, as its bits
    return [Call("dropout_mask", dtype, grid_1d((total + 3) // 4), (THREADS, 1, 1), (
                x, y, mask, total, *shape, *xs, *ys, *ms, counter, seed, rate,
                1.0 / (1.0 - rate))),
            Call("dropout_step", dtype, (1, 1, 1), (1, 1, 1), (counter,))]


BINDERS = {
    **{op: bind_ew_grad(op) for op in ("relu_grad", "tanh_grad", "sigmoid_grad", "scale_grad")},
    "zeros_like": bind_zeros_like, "unary_grad": bind_unary_grad, "binary_grad": bind_binary_grad,
    "softmax_grad": bind_softmax_grad("softmax_grad"),
    "log_softmax_grad": bind_softmax_grad("log_softmax_grad"),
    "softmax_cross_entropy_grad": bind_loss_grad("softmax_cross_entropy_grad"),
    "nll_loss_grad": bind_loss_grad("nll_loss_grad"),
    "reduce_channels": bind_reduce_channels,
    "dense_grad_input": bind_dense_grad_input, "dense_grad_weight": bind_dense_grad_weight,
    "conv2d_grad_input": bind_conv2d_grad_input, "conv2d_grad_weight": bind_conv2d_grad_weight,
    "max_pool_grad": bind_pool_grad("max_pool_grad"),
    "avg_pool_grad": bind_pool_grad("avg_pool_grad"),
    "lrn_grad": bind_lrn_grad, "batch_norm_train": bind_batch_norm_train,
    "batch_norm_train_grad": bind_batch_norm_train_grad, "dropout_train": bind_dropout_train,
}
