"""The cpu device's kernels of the training step: gradients and the parameter update.

Written like the forward kernels of :mod:`.kernels` (same signature ``fn(attrs, inputs, outputs,
workspace)``, outputs into planned views, every temporary in the planned workspace whose size the
``*_workspace`` functions report), and computing what the ops' reference forwards in
:mod:`graphrt.ops.grad`, :mod:`graphrt.ops.grad_spatial` and :mod:`graphrt.ops.optim` compute, in
the same order of operations (the numbers differ at most by float rounding: BLAS blocking).

- ``conv2d_grad_input``, ``conv2d_grad_weight``: :mod:`.conv_grad`.
- ``max_pool_grad``, ``avg_pool_grad``: :mod:`.pool` (pitched phase layouts: four contiguous
  ufuncs per kernel offset for the max, one for the average).
- ``relu_grad``: block by block, ``dy * (t > 0)`` (or the slope where ``t <= 0``).
- ``reduce_channels`` (bias gradients): per-image channel sums in the input's dtype over contiguous
  runs, then the images summed in float64 (the reference sums everything in float64).
- ``dropout_train``: the reference's Philox mask drawn in blocks in the workspace
  (:mod:`.dropout`).
- ``dense_grad_input``, ``dense_grad_weight``: one GEMM each (``dy @ w``, ``dy.T @ x``) written
  into the output view, no workspace.
- ``sgd_update``: momentum, weight decay and the learning rate in one pass of blocks over the
  parameter with two block temporaries: no per-step arrays the size of the parameter.
- ``batch_norm_train``, ``batch_norm_train_grad``: the per-channel sums in float64 (as the
  reference) over groups of channels (the whole batch) whose float64 copies stay in cache, by GEMV
  for small planes, the per-channel ufuncs over channel blocks; split across threads by channel
  blocks cut between groups (:mod:`.split`).
  A ``group`` (synchronized batch norm) and other dtypes run the reference.

The device splits these launches across its threads (:mod:`.split`): the data gradients by batch
slices, ``conv2d_grad_weight`` by batch slices whose partial sums are added at the end,
``dropout_train`` by batch slices each drawing its own rows' counters, ``dense_grad_input`` by
column tiles, ``dense_grad_weight`` by row tiles, a large ``sgd_update`` by element blocks and
batch norm by channel blocks.
"""
from __future__ import annotations

import math

import numpy as np

from ...ir import Graph, Node
from ...ops import get_op
from ...ops.norm import running_weight
from ...ops.optim import learning_rate
from . import conv_grad, dropout, pool
from . import kernels as K
from .kernels import _bools, _flat, _round4, _spec


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

# ---- batch normalization --------------------------------------------------------------------------
BN_CHUNK = 1 << 17  # elements of a block of channels over the whole batch (its float64 copy: 1 MiB):
# few ufunc calls per launch (each costs about a microsecond, as much as 8K elements of work), and
# small enough to stay in L2/L3 between the ufuncs that go over it
BN_GROUP = 1 << 16  # elements of a group of channels whose sums are taken together (_Sums): enough
# work per GEMV (Inception-BN's batch norms at batch 4, one thread: groups of 2^15 elements took
# 1.13x the time, 2^17 0.97x, fixed groups of 32 channels 1.5x the reference at 7x7), few enough
# channels a group (83 at 4x14x14) that a layer large enough to be split has groups to split
BN_BIG_GROUP = 1 << 18  # ... of planes of BN_GEMV_HW elements or more: a few channels a group
# (5 at 4x112x112) where 2^16 held one — 16 ufunc calls a channel (one thread, 4x64x112x112:
# 0.71x the time of the forward, 4x192x56x56 0.78x)
BN_GEMV_HW = 2048  # planes of fewer elements are summed by GEMV, larger ones by ufunc reductions
# (one thread: GEMV 0.9x the time at 4x96x28x28, the same from 56x56 up; see _Sums)


def _bn_rows(n: int, c: int, hw: int) -> int:
    """Channels per elementwise block: (N, rows, H*W) up to :data:`BN_CHUNK` elements."""
    return max(1, min(c, BN_CHUNK // max(n * hw, 1)))


def bn_channel_group(shape) -> int:
    """The channels of one group of sums of a batch norm over x of ``shape`` (N, C, ...), from N
    and H*W alone (up to :data:`BN_GROUP` elements; not from C, which a part of a channel split
    has less of): a channel split cuts the channels only between groups
    (:func:`.split.split_kernel`), so that every part makes the very BLAS calls one thread makes
    on its channels."""
    hw = math.prod(shape[2:])
    size = BN_GROUP if hw < BN_GEMV_HW else BN_BIG_GROUP
    return max(1, size // max(shape[0] * hw, 1))


def _bn_planes(a: np.ndarray):
    """``a`` (N, C, ...) as (N, C, H*W) without copying, each image's channel planes contiguous
    (a channel slice of a wider buffer qualifies), or None."""
    if a.ndim < 2:
        return None
    shape = a.shape
    v = K._reshaped(a, (shape[0], shape[1], math.prod(shape[2:])))
    if v is None:
        return None
    hw, item = v.shape[2], a.itemsize
    if (hw > 1 and v.strides[2] != item) or (v.shape[1] > 1 and v.strides[1] != hw * item):
        return None
    return v


def _bn_views(attrs, arrays: list):
    """The (N, C, H*W) views of ``arrays`` (:func:`_bn_planes`) in the kernels' case, else None:
    no ``group`` (a synchronized batch norm all-reduces its statistics across ranks: the
    reference), float32 or float64 throughout, planes laid out per image."""
    if attrs.get("group", "") or arrays[0].dtype not in (np.float32, np.float64):
        return None
    views = [_bn_planes(a) if a.dtype == arrays[0].dtype else None for a in arrays]
    return None if any(v is None for v in views) else views


class _Carve:
    """Consecutive typed views of a workspace, each starting on 8 bytes (as :func:`_carved`
    counts them)."""

    def __init__(self, ws):
        self.buf, self.at = ws.view(np.uint8), 0

    def take(self, count: int, dtype) -> np.ndarray:
        size = count * np.dtype(dtype).itemsize
        v = self.buf[self.at:self.at + size].view(dtype)
        self.at += _round8(size)
        return v


def _carved(*pieces) -> int:
    """The bytes :class:`_Carve` takes for ``(count, dtype)`` pieces."""
    return sum(_round8(count * np.dtype(dtype).itemsize) for count, dtype in pieces)


class _Sums:
    """Float64 per-channel sums over (N, H*W), a group of :func:`bn_channel_group` channels at a
    time: the group's (N, g, H*W) values made float64 exactly in ``t64`` (so are the square or the
    product of two float32 values: one in-place float64 ufunc), then the sum of each (image,
    channel) row and each channel's N row sums. Float64 throughout, as the reference accumulates.

    Rows shorter than :data:`BN_GEMV_HW`: one GEMV of the (N*g, H*W) rows with a ones vector (a
    ufunc reduction would loop per row: 1.5x the time at 7x7), then the N row sums of each channel
    added in order. A GEMV's per-row result depends on the row's place in the call, so the groups
    are fixed by the channel index and the shape alone and a channel split cuts only between them
    (``channel_group``, :mod:`.split`): each part makes one thread's calls, bit for bit. Longer
    rows: each row's pairwise sum, the row sums moved channel-major and summed pairwise — a
    channel's sums depend on its own values only, and no BLAS (two threads calling OpenBLAS's GEMV
    at once ran slower than one thread calling it twice: these are the launches large enough to
    be split)."""

    def __init__(self, cv: _Carve, n: int, group: int, hw: int, second: bool = False):
        self.t64 = cv.take(n * group * hw, np.float64)
        self.u64 = cv.take(n * group * hw, np.float64) if second else None
        self.ones = cv.take(hw, np.float64) if hw < BN_GEMV_HW else None
        if self.ones is not None:
            self.ones.fill(1.0)
        self.rows, self.cols = cv.take(n * group, np.float64), cv.take(n * group, np.float64)

    @staticmethod
    def size(n: int, group: int, hw: int, second: bool = False) -> list:
        return [(n * group * hw, np.float64)] * (2 if second else 1) + [
            (hw if hw < BN_GEMV_HW else 0, np.float64), (n * group, np.float64),
            (n * group, np.float64)]

    def float64(self, block, buf=None):
        """``block`` (N, g, H*W) in float64, contiguous: an exact copy in the workspace."""
        t = _flat((self.t64 if buf is None else buf)[:block.size], block.shape)
        np.copyto(t, block)
        return t

    def __call__(self, t, out, square=False, other=None):
        """``out[c]`` = the sum over images and positions of channel c's values in ``t`` (a
        :meth:`float64` block; squared in place with ``square``; multiplied by ``other``'s, copied
        to the second buffer, with ``other``)."""
        n, g, hw = t.shape
        if square:
            np.multiply(t, t, out=t)
        elif other is not None:
            u = self.float64(other, self.u64)
            np.multiply(u, t, out=u)
            t = u
        if self.ones is not None:
            rows = _flat(self.rows[:n * g], (n * g,))
            np.matmul(_flat(t, (n * g, hw)), self.ones, out=rows)
            np.add.reduce(_flat(rows, (n, g)), axis=0, out=out)
            return
        rows = _flat(self.rows[:n * g], (n, g))
        np.add.reduce(t, axis=-1, out=rows)
        cols = _flat(self.cols[:n * g], (g, n))
        np.copyto(cols, rows.T)
        np.add.reduce(cols, axis=-1, out=out)


def _groups(c: int, group: int) -> list:
    return [(a, min(c, a + group)) for a in range(0, c, group)]


def _plane(buf: np.ndarray, values: np.ndarray, hw: int) -> np.ndarray:
    """(r, H*W) with ``values[c]`` along row c: broadcast over the batch, it lets a per-channel
    ufunc run over each image's whole block (r*H*W contiguous elements) instead of one H*W row
    at a time (a third of the time at 14x14)."""
    p = _flat(buf[:values.size * hw], (values.size, hw))
    np.copyto(p, values[:, None])
    return p


def _bn_shape(graph: Graph, node: Node, batch: int):
    (n, c, *rest), dtype = _spec(graph, node.inputs[0], batch)
    return n, c, math.prod(rest), dtype


def batch_norm_train_workspace(node: Node, graph: Graph, batch: int) -> int:
    """A group's float64 values and row sums (:class:`_Sums`), a (channels, H*W) plane of a
    block's channels in the input's dtype (:func:`_plane`); five per-channel float64 vectors
    (statistics, running-statistics terms), three in the input's dtype (mean, scale, shift), one
    in the running statistics' dtype."""
    n, c, hw, dtype = _bn_shape(graph, node, batch)
    group = bn_channel_group((n, c, hw))
    stat = np.dtype(graph.specs[node.inputs[3]].dtype)
    return _carved(*_Sums.size(n, group, hw), (max(_bn_rows(n, c, hw), min(group, c)) * hw, dtype),
                   *[(c, np.float64)] * 5, *[(c, dtype)] * 3, (c, stat))


def batch_norm_train(attrs, inputs, outputs, ws):
    """The reference's batch statistics, then the normalization, in passes over channel blocks
    (over the whole batch) that stay in cache: the float64 sum of x per channel (:class:`_Sums`);
    ``y = x - mean`` (the mean rounded to x's dtype, as the reference); the float64 sum of y's
    squares (exact squares, where the reference rounds them to float32 first); ``y = y * (invstd
    * gamma) + beta`` (in the same pass, group by group, for planes of :data:`BN_GEMV_HW`
    elements or more); the per-channel ufuncs over :func:`_plane` s. The running statistics are
    updated as the reference updates them. Left to the reference: a ``group`` (synchronized batch
    norm: the statistics are all-reduced across ranks), a dtype other than float32/float64 (or
    unlike y's, or running statistics of two dtypes), planes not laid out per image."""
    x, gamma, beta = inputs[:3]
    y, saved_mean, saved_invstd = outputs
    views = _bn_views(attrs, [x, y])
    if views is None or inputs[3].dtype != inputs[4].dtype:
        get_op("batch_norm_train").forward(attrs, inputs, outputs)
        return
    x3, y3 = views
    n, c, hw = x3.shape
    m = n * hw
    group, rows = bn_channel_group((n, c, hw)), _bn_rows(n, c, hw)
    cv = _Carve(ws)
    sums = _Sums(cv, n, group, hw)
    plane_buf = cv.take(max(rows, min(group, c)) * hw, x.dtype)
    mean, var, invstd, scale64, w64 = (cv.take(c, np.float64) for _ in range(5))
    mean_x, scale_x, shift_x = (cv.take(c, x.dtype) for _ in range(3))
    w_stat = cv.take(c, inputs[3].dtype)
    fused = hw >= BN_GEMV_HW  # large planes: normalize each group while it is in cache
    for a, b in _groups(c, group):  # each group's x, y and float64 copy stay in cache throughout
        yb = y3[:, a:b]
        sums(sums.float64(x3[:, a:b]), mean[a:b])
        np.true_divide(mean[a:b], max(m, 1), out=mean[a:b])
        np.copyto(mean_x[a:b], mean[a:b])
        np.subtract(x3[:, a:b], _plane(plane_buf, mean_x[a:b], hw), out=yb)
        sums(sums.float64(yb), var[a:b], square=True)
        if fused:
            _bn_normalize(attrs, yb, gamma[a:b], beta[a:b], var[a:b], invstd[a:b], scale64[a:b],
                          scale_x[a:b], shift_x[a:b], m, plane_buf, hw)
    if not fused:
        _bn_normalize(attrs, None, gamma, beta, var, invstd, scale64, scale_x, shift_x, m,
                      plane_buf, hw)
        for a, b in _groups(c, rows):
            yb = y3[:, a:b]
            np.multiply(yb, _plane(plane_buf, scale_x[a:b], hw), out=yb)
            np.add(yb, _plane(plane_buf, shift_x[a:b], hw), out=yb)
    np.copyto(saved_mean, mean)
    np.copyto(saved_invstd, invstd)
    _update_running_stats(attrs, inputs, mean, var, m, w64, w_stat)


def _bn_normalize(attrs, yb, gamma, beta, var, invstd, scale64, scale_x, shift_x, m, plane_buf,
                  hw):
    """The variance from the sum of squares, invstd, the scale and shift (in y's dtype) of some
    channels and — given ``yb``, their block of y — ``yb = yb * scale + shift``."""
    np.true_divide(var, max(m, 1), out=var)  # biased: what normalization uses
    np.add(var, attrs["eps"], out=invstd)
    np.sqrt(invstd, out=invstd)
    np.true_divide(1.0, invstd, out=invstd)
    np.multiply(invstd, gamma, out=scale64)
    np.copyto(scale_x, scale64)
    np.copyto(shift_x, beta)
    if yb is not None:
        np.multiply(yb, _plane(plane_buf, scale_x, hw), out=yb)
        np.add(yb, _plane(plane_buf, shift_x, hw), out=yb)


def _update_running_stats(attrs, inputs, mean, var, m, w64, w_stat):
    """:func:`graphrt.ops.norm._update_running_stats` with its temporaries in the workspace (the
    same ufuncs: ``(1 - w) * stat`` in the statistic's dtype, ``w * batch_stat`` in float64);
    ``var`` is overwritten."""
    running_mean, running_var = inputs[3], inputs[4]
    if attrs["unbiased"] and m > 1:
        np.multiply(var, m / (m - 1), out=var)
    w = running_weight(attrs, inputs)
    for stat, batch_stat in ((running_mean, mean), (running_var, var)):
        np.multiply(stat, 1.0 - w, out=w_stat)
        np.multiply(batch_stat, w, out=w64)
        np.add(w_stat, w64, out=w64)
        np.copyto(stat, w64)


def batch_norm_train_grad_workspace(node: Node, graph: Graph, batch: int) -> int:
    """Two groups' float64 values and row sums (:class:`_Sums`), a block temporary and a
    :func:`_plane` in the input's dtype; two per-channel float64 sums and three per-channel factors
    in the input's dtype."""
    n, c, hw, dtype = _bn_shape(graph, node, batch)
    rows, group = _bn_rows(n, c, hw), bn_channel_group((n, c, hw))
    block = max(rows, min(group, c))
    return _carved(*_Sums.size(n, group, hw, second=True), (n * block * hw, dtype),
                   (block * hw, dtype), (c, np.float64), (c, np.float64),
                   *[(c, dtype)] * 3)


def batch_norm_train_grad(attrs, inputs, outputs, ws):
    """The reference's gradient in passes over channel blocks (over the whole batch) that stay
    in cache: ``xhat = (x - mean) * invstd`` into dx; the float64 sums of dy and of ``dy * xhat``
    per channel (:class:`_Sums`: exact float64 products, where the reference rounds them to
    float32); then, in the reference's order, ``dx = (dy - sum_dy / m - xhat * (sum_dy_xhat /
    m)) * (gamma * invstd)`` (in the same pass, group by group, for planes of
    :data:`BN_GEMV_HW` elements or more), the per-channel ufuncs over :func:`_plane` s. Left to the
    reference:
    a ``group`` (the sums are all-reduced across ranks), a dtype other than float32/float64 (or
    saved statistics of another dtype), planes not laid out per image."""
    x, gamma, mean, invstd, dy = inputs
    dx, dgamma, dbeta = outputs
    views = _bn_views(attrs, [x, dy, dx])
    if views is None or mean.dtype != x.dtype or invstd.dtype != x.dtype:
        get_op("batch_norm_train_grad").forward(attrs, inputs, outputs)
        return
    x3, dy3, dx3 = views
    n, c, hw = x3.shape
    m = max(n * hw, 1)
    group, rows = bn_channel_group((n, c, hw)), _bn_rows(n, c, hw)
    cv = _Carve(ws)
    sums = _Sums(cv, n, group, hw, second=True)
    tx = cv.take(n * max(rows, min(group, c)) * hw, x.dtype)
    plane_buf = cv.take(max(rows, min(group, c)) * hw, x.dtype)
    sum_dy, sum_dy_xhat = cv.take(c, np.float64), cv.take(c, np.float64)
    k_xhat, k_dy, k_out = (cv.take(c, x.dtype) for _ in range(3))
    fused = hw >= BN_GEMV_HW  # large planes: dx of each group while it is in cache
    for a, b in _groups(c, group):  # each group's x, dy, xhat and float64 copies stay in cache
        xhat = dx3[:, a:b]
        np.subtract(x3[:, a:b], _plane(plane_buf, mean[a:b], hw), out=xhat)
        np.multiply(xhat, _plane(plane_buf, invstd[a:b], hw), out=xhat)
        dy64 = sums.float64(dy3[:, a:b])  # made float64 once for both sums
        sums(dy64, sum_dy_xhat[a:b], other=xhat)
        sums(dy64, sum_dy[a:b])
        if fused:
            _bn_grad_factors(gamma[a:b], invstd[a:b], sum_dy[a:b], sum_dy_xhat[a:b], dgamma[a:b],
                             dbeta[a:b], k_xhat[a:b], k_dy[a:b], k_out[a:b], m)
            _bn_grad_dx(dx3[:, a:b], dy3[:, a:b], k_xhat[a:b], k_dy[a:b], k_out[a:b], tx,
                        plane_buf, hw)
    if not fused:
        _bn_grad_factors(gamma, invstd, sum_dy, sum_dy_xhat, dgamma, dbeta, k_xhat, k_dy, k_out, m)
        for a, b in _groups(c, rows):
            _bn_grad_dx(dx3[:, a:b], dy3[:, a:b], k_xhat[a:b], k_dy[a:b], k_out[a:b], tx,
                        plane_buf, hw)


def _bn_grad_factors(gamma, invstd, sum_dy, sum_dy_xhat, dgamma, dbeta, k_xhat, k_dy, k_out, m):
    """dgamma, dbeta and the per-channel factors of dx (in x's dtype) of some channels, from
    their sums (overwritten)."""
    np.copyto(dgamma, sum_dy_xhat)
    np.copyto(dbeta, sum_dy)
    np.true_divide(sum_dy_xhat, m, out=sum_dy_xhat)
    np.copyto(k_xhat, sum_dy_xhat)
    np.true_divide(sum_dy, m, out=sum_dy)
    np.copyto(k_dy, sum_dy)
    np.multiply(gamma, invstd, out=sum_dy, dtype=np.float64)  # gamma * invstd in float64
    np.copyto(k_out, sum_dy)


def _bn_grad_dx(d, dyb, k_xhat, k_dy, k_out, tx, plane_buf, hw):
    """``d`` (a block of dx holding xhat) = ``(dy - k_dy - xhat * k_xhat) * k_out``, in the
    reference's order."""
    np.multiply(d, _plane(plane_buf, k_xhat, hw), out=d)
    t = _flat(tx[:d.size], d.shape)
    np.subtract(dyb, _plane(plane_buf, k_dy, hw), out=t)
    np.subtract(t, d, out=d)
    np.multiply(d, _plane(plane_buf, k_out, hw), out=d)


# ---- dense layers --------------------------------------------------------------------------------
def dense_workspace(node: Node, graph: Graph, batch: int) -> int:
    """None: the GEMM writes straight into the output view."""
    return 0


def dense_grad_input(attrs, inputs, outputs, ws):
    """``dx = dy @ w`` (dy (N, out), w (out, in)) into the planned view: one GEMM, as the reference
    (which the split calls on column tiles ``w[:, s]``, ``dx[:, s]``)."""
    np.matmul(inputs[0], inputs[1], out=outputs[0])


def dense_grad_weight(attrs, inputs, outputs, ws):
    """``dw = dy.T @ x`` (dy (N, out), x (N, in)): dy's transpose read in place by the GEMM (the
    split calls it on row tiles ``dy[:, s]``, ``dw[s]``)."""
    np.matmul(inputs[0].T, inputs[1], out=outputs[0])


# ---- optimizer ------------------------------------------------------------------------------------
SGD_BLOCK = 1 << 17  # elements per block of the update (its two temporaries: 1 MiB of float32);
# ~6 ufunc calls per block, so a small block is mostly call overhead — and, split across threads,
# GIL handoffs between the parts. Measured on the Keras CNN's 256x30976 weights (one thread /
# two): 16384 elements 9.9 / 9.9 ms, 65536 8.0 / 4.8 ms, 262144 6.8 / 3.6 ms


def sgd_workspace(node: Node, graph: Graph, batch: int) -> int:
    """Two blocks of the parameter's dtype."""
    spec = graph.specs[node.inputs[0]]
    return 2 * min(SGD_BLOCK, int(np.prod(spec.shape))) * np.dtype(spec.dtype).itemsize


def sgd_update(attrs, inputs, outputs, ws):
    """The reference's update, block by block: ``g = grad + decay * param``; ``v = momentum * v + g``
    then ``param -= lr * v`` (PyTorch) or ``v = momentum * v + lr * g; param -= v`` (Caffe)."""
    param, grad, velocity, it = inputs
    tp = param.dtype.type
    lr = tp(learning_rate(attrs, float(it)) * attrs["lr_mult"])
    decay = attrs["weight_decay"] * attrs["decay_mult"]
    momentum, caffe = tp(attrs["momentum"]), attrs["convention"] == "caffe"
    block = min(SGD_BLOCK, param.size)
    base = ws.view(param.dtype)
    t1, t2 = base[:block], base[block:2 * block]
    for idx in K._blocks(param.shape, SGD_BLOCK):
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
    "conv2d_grad_input": conv_grad.conv2d_grad_input,
    "conv2d_grad_weight": conv_grad.conv2d_grad_weight,
    "max_pool_grad": pool.max_pool_grad, "avg_pool_grad": pool.avg_pool_grad, "relu_grad": relu_grad,
    "reduce_channels": reduce_channels, "sgd_update": sgd_update,
    "dropout_train": dropout.dropout_train,
    "dense_grad_input": dense_grad_input, "dense_grad_weight": dense_grad_weight,
    "batch_norm_train": batch_norm_train, "batch_norm_train_grad": batch_norm_train_grad,
}
TRAIN_KERNELS = {op: K._small_buffers(fn) for op, fn in _KERNELS.items()}
for _op in ("batch_norm_train", "batch_norm_train_grad"):  # where a channel split may cut
    TRAIN_KERNELS[_op].channel_group = bn_channel_group
TRAIN_WORKSPACES = {
    "conv2d_grad_input": conv_grad.conv_grad_input_workspace,
    "conv2d_grad_weight": conv_grad.conv_grad_weight_workspace,
    "max_pool_grad": pool.max_pool_grad_workspace,
    "avg_pool_grad": pool.avg_pool_grad_workspace,
    "relu_grad": relu_grad_workspace, "reduce_channels": reduce_channels_workspace,
    "sgd_update": sgd_workspace, "dropout_train": dropout.workspace,
    "dense_grad_input": dense_workspace, "dense_grad_weight": dense_workspace,
    "batch_norm_train": batch_norm_train_workspace,
    "batch_norm_train_grad": batch_norm_train_grad_workspace,
}
