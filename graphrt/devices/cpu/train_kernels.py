"""The cpu device's kernels of the training step: gradients and the parameter update.

Written like the forward kernels of :mod:`.kernels` (same signature ``fn(attrs, inputs, outputs,
workspace)``, outputs into planned views, every temporary in the planned workspace whose size the
``*_workspace`` functions report), and computing what the ops' reference forwards in
:mod:`graphrt.ops.grad`, :mod:`graphrt.ops.grad_spatial` and :mod:`graphrt.ops.optim` compute, in
the same order of operations (the numbers differ at most by float rounding: BLAS blocking).

- ``conv2d_grad_input``, ``conv2d_grad_weight``: :mod:`.conv_grad`.
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
- ``dense_grad_input``, ``dense_grad_weight``: one GEMM each (``dy @ w``, ``dy.T @ x``) written
  into the output view, no workspace.
- ``sgd_update``: momentum, weight decay and the learning rate in one pass of blocks over the
  parameter with two block temporaries: no per-step arrays the size of the parameter.

The device splits these launches across its threads (:mod:`.split`): the data gradients by batch
slices, ``conv2d_grad_weight`` by batch slices whose partial sums are added at the end,
``dropout_train`` by batch slices each drawing its own rows' counters, ``dense_grad_input`` by
column tiles, ``dense_grad_weight`` by row tiles and a large ``sgd_update`` by element blocks.
"""
from __future__ import annotations

import numpy as np

from ...ir import Graph, Node
from ...ops.optim import learning_rate
from . import conv_grad, dropout
from . import kernels as K
from .kernels import _bools, _flat, _pool_offsets, _pool_pads, _round4, _spec


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
    "max_pool_grad": max_pool_grad, "avg_pool_grad": avg_pool_grad, "relu_grad": relu_grad,
    "reduce_channels": reduce_channels, "sgd_update": sgd_update,
    "dropout_train": dropout.dropout_train,
    "dense_grad_input": dense_grad_input, "dense_grad_weight": dense_grad_weight,
}
TRAIN_KERNELS = {op: K._small_buffers(fn) for op, fn in _KERNELS.items()}
TRAIN_WORKSPACES = {
    "conv2d_grad_input": conv_grad.conv_grad_input_workspace,
    "conv2d_grad_weight": conv_grad.conv_grad_weight_workspace,
    "max_pool_grad": max_pool_grad_workspace, "avg_pool_grad": avg_pool_grad_workspace,
    "relu_grad": relu_grad_workspace, "reduce_channels": reduce_channels_workspace,
    "sgd_update": sgd_workspace, "dropout_train": dropout.workspace,
    "dense_grad_input": dense_workspace, "dense_grad_weight": dense_workspace,
}
