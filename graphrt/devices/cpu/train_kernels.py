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

The device splits these launches across its threads (:mod:`.split`): the data gradients by batch
slices, ``conv2d_grad_weight`` by batch slices whose partial sums are added at the end,
``dropout_train`` by batch slices each drawing its own rows' counters, ``dense_grad_input`` by
column tiles, ``dense_grad_weight`` by row tiles and a large ``sgd_update`` by element blocks.
"""
from __future__ import annotations

import numpy as np

from ...ir import Graph, Node
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
}
TRAIN_KERNELS = {op: K._small_buffers(fn) for op, fn in _KERNELS.items()}
TRAIN_WORKSPACES = {
    "conv2d_grad_input": conv_grad.conv_grad_input_workspace,
    "conv2d_grad_weight": conv_grad.conv_grad_weight_workspace,
    "max_pool_grad": pool.max_pool_grad_workspace,
    "avg_pool_grad": pool.avg_pool_grad_workspace,
    "relu_grad": relu_grad_workspace, "reduce_channels": reduce_channels_workspace,
    "sgd_update": sgd_workspace, "dropout_train": dropout.workspace,
    "dense_grad_input": dense_workspace, "dense_grad_weight": dense_workspace,
}
