"""Splitting one launch across the cpu device's threads.

(Runs of consecutive per-image launches are not split one by one but together, as segments:
:mod:`.segments`. What follows is how a launch outside a segment splits, and the slicing both use.)

A launch is split only when its work is large enough to pay for waking a worker (about 20-50 us):
:func:`parts` decides from the op's own cost (flops, bytes moved) at the compiled batch — never from
a timing — and how many parts each op can be cut into:

- batch slices for the per-image ops (convolution, merged sibling convolutions, pooling, LRN,
  normalization, softmax over a non-batch axis, elementwise ops and their chains, ``add``): part
  ``i`` runs the same kernel on rows ``[n*i/k, n*(i+1)/k)`` of every batched input and output;
- column tiles for a dense layer whose weights outweigh its batch (a small batch through a large
  fully connected layer: each thread reads only its share of the weights), on multiples of
  :data:`TILE` columns;
- batch slices with a reduction for a weight gradient (``conv2d_grad_weight``): part 0 writes the
  output, part ``i > 0`` a partial sum at the end of its own workspace share (the device reports
  the output's bytes on top of each part's workspace: :func:`reduce_bytes`), and the calling
  thread adds the partial sums into the output once every part is done;
- channel blocks for batch norm's training forward and gradient (:data:`CHANNEL_OPS`), whose
  statistics run over the whole batch but each channel on its own: part ``i`` runs the same kernel
  on a block of the channels of x, y, dy and dx (axis 1) and of the per-channel tensors (gamma,
  beta, the saved mean and invstd, the running statistics, dgamma, dbeta): channels
  ``[c*i/k, c*(i+1)/k)``, the cuts moved down to the kernel's group boundaries when it has groups
  (``fn.channel_group(x.shape)`` channels each, whose sums may be one BLAS call each: as the
  tiles of :data:`TILE`, so every part makes the very calls one thread makes and the outputs are
  bit for bit one thread's). Batch norm's ``count`` state is read and written by part
  0; every other part gets a private copy made before the parts start (the same value to read,
  what it writes dropped). Not with a ``group`` attribute (the kernels then run the reference,
  which all-reduces every channel's statistics at once). A part's workspace share is the kernel's
  workspace for the whole launch (its buffers are per group or per channel block, so this is a
  few per-channel vectors more than the part needs). These launches are never in a segment, and
  each part must move at least :data:`CHANNEL_PART_BYTES`.

The training step's data gradients split like their forwards: ``conv2d_grad_input`` (dy sliced,
the weights whole), ``max_pool_grad``, ``avg_pool_grad`` and ``relu_grad`` (every batched input
sliced). The other training launches that split (:data:`OWN_PARTS`: none of them runs in a segment)
each cut their own way, every output element computed by one part as one thread computes it —
bit for bit for the dropout draw and the update; the dense gradients' tiles keep each element's
sum (the GEMM's inner dimension) whole, which BLAS orders as one launch does at the models'
shapes (see :data:`TILE`):

- ``dropout_train`` by batch slices of its draw: part ``i`` draws the Philox counters of its own
  rows (the element offset of its slice added to the op's ``offset``: :func:`.dropout.dropout_part`,
  which handles a slice that starts mid-block), and the step counter is advanced once, after
  every part;
- ``dense_grad_input`` (``dy @ w``) by column tiles of dx: part ``i`` computes
  ``dx[:, s] = dy @ w[:, s]``, reading its share of the weights (the sum over the output
  features is the same GEMM inner dimension in every part);
- ``dense_grad_weight`` (``dy.T @ x``) by row tiles of dw: ``dw[s] = dy[:, s].T @ x`` (each part
  sums over the same batch: no reduction);
- ``sgd_update`` by element blocks of the parameter (its gradient and velocity alike), judged by
  the bytes it moves (4x the parameter's) like the elementwise ops, but each part moving at least
  :data:`UPDATE_FACTOR` times as much (a float32 parameter of 4 MiB or more splits in 2).

The dense gradients' parts do at least :data:`TILE_FACTOR` times the least arithmetic. Tiles and
blocks start on multiples of :data:`TILE`.

Each part gets its own share of the node's workspace: the device reports ``parts`` times the
per-part workspace (at the largest per-part batch, rounded up to :data:`ALIGN` bytes) to the memory
plan, so the parts never share scratch bytes.
"""
from __future__ import annotations

import numpy as np

from ...ir import Graph, Node
from ...ir import opset
from . import dropout
from .kernels import UFUNC_BUFSIZE, _reshaped

ALIGN = 64  # bytes: each part's workspace starts on a cache line
MIN_PART_FLOPS = 4_000_000  # a part must do at least this much arithmetic (about 40-100 us) ...
MIN_PART_BYTES = 1 << 19  # ... or move at least this much memory (memory-bound ops)
TILE_FACTOR = 4  # a dense gradient's tile: at least this many MIN_PART_FLOPS (a narrow tile runs
# its GEMM below the whole one's rate). CIFAR-10 quick's ip1 gradients (13 MFLOP) ran 0.18 ms
# whole, 0.20-0.25 ms in 2 tiles; LeNet's (51 MFLOP) 0.52 -> 0.36 ms; the Keras CNN's (254) 5.3 ->
# 2.2 ms
UPDATE_FACTOR = 16  # an sgd_update part: at least this many MIN_PART_BYTES moved (8 MiB: the update
# of a parameter that fits in L3 is bound by L3, which the parts share — LeNet's 400K-element ip1
# weights ran 0.23 ms whole, 0.25 ms in 2 parts; the Keras CNN's 7.9M-element weights 7.2 -> 4.3 ms)
CHANNEL_PART_BYTES = 4 << 20  # ... and a part of a channel split this much (CHANNEL_OPS: the batch
# norm kernels make a few dozen small ufunc calls per launch, whose Python and GIL hand-offs the
# parts contend for; 2 threads on 2 vCPUs, per launch: 0.7x-0.8x the time from 4x192x56x56 (19 MB
# moved) up, 1.2x-1.3x slower at 4x96x28x28 (2.4 MB))

# ops whose kernel runs image by image (input 0 and the outputs sliced along the batch)
BATCH_OPS = {"conv2d", "conv2d_split", "max_pool", "avg_pool", "lrn", "batch_norm",
             "channel_affine", "dense", "softmax", "log_softmax", "elementwise_chain", "add", "relu",
             "tanh", "sigmoid", "scale", "conv2d_grad_input", "conv2d_grad_weight", "max_pool_grad",
             "avg_pool_grad", "relu_grad", "dropout_train"}
COMPUTE_OPS = {"conv2d", "conv2d_split", "dense", "conv2d_grad_input", "conv2d_grad_weight",
               "dense_grad_input", "dense_grad_weight"}  # judged by flops; the others by bytes
ALL_BATCHED = {"add", "relu_grad", "max_pool_grad", "conv2d_grad_weight"}  # every batched input sliced
REDUCED = {"conv2d_grad_weight"}  # the output is the sum of the parts' outputs
# training launches that split their own way (see the module docstring): never in a segment
OWN_PARTS = {"dropout_train", "dense_grad_input", "dense_grad_weight", "sgd_update"}
TILE = 16  # sgd_update's element blocks, the dense gradients' column / row tiles start on multiples
# of 16 (64 bytes of float32: no two parts write one cache line; whole SIMD panels of the GEMM, so
# that the tiles' sums are ordered as one launch's — true at the models' shapes, not guaranteed by
# BLAS in general: test_dense_grads_split_bits)
# ops split by channel blocks: op -> (inputs sliced along axis 1, inputs sliced along axis 0);
# output 0 is sliced along axis 1, the others along axis 0; any other input is state (see above)
CHANNEL_OPS = {"batch_norm_train": ((0,), (1, 2, 3, 4)),
               "batch_norm_train_grad": ((0, 4), (1, 2, 3))}


def splittable(node: Node, graph: Graph, activations=()) -> bool:
    """True when ``node``'s kernel may run on batch slices (or column tiles) independently."""
    op = node.op
    if op in CHANNEL_OPS:
        shape = graph.specs[node.inputs[0]].shape
        return not node.attrs.get("group", "") and len(shape) >= 2 and shape[1] is not None
    if op in OWN_PARTS and op != "dropout_train":
        return _own_splittable(node, graph)
    if op not in BATCH_OPS and op not in activations:
        return False
    if len(node.outputs) != 1 and op not in ("conv2d_split", "dropout_train"):  # sliced alike
        return False
    out = graph.specs[node.outputs[0]]
    if not (out.batched or op in REDUCED) or not out.shape or not graph.specs[node.inputs[0]].batched:
        return False
    if op in ("softmax", "log_softmax") and node.attrs["axis"] % len(out.shape) == 0:
        return False
    if op == "dense" and len(out.shape) != 2:
        return False
    return True


def parts(node: Node, graph: Graph, batch: int, threads: int, activations=()) -> int:
    """How many parts ``node`` runs in at ``batch`` with ``threads`` threads (1: not split)."""
    if threads < 2 or not splittable(node, graph, activations):
        return 1
    schema = opset.lookup(node.op)
    flops, nbytes = schema.cost(node.attrs, [graph.specs[t] for t in node.inputs],
                                [graph.specs[t] for t in node.outputs], batch)
    if node.op in ("dense_grad_input", "dense_grad_weight"):
        k = flops // (TILE_FACTOR * MIN_PART_FLOPS)
    elif node.op == "sgd_update":
        k = nbytes // (UPDATE_FACTOR * MIN_PART_BYTES)
    elif node.op in COMPUTE_OPS:
        k = flops // MIN_PART_FLOPS
    elif node.op in CHANNEL_OPS:
        k = nbytes // max(MIN_PART_BYTES, CHANNEL_PART_BYTES)
    else:
        k = nbytes // MIN_PART_BYTES
    return int(max(1, min(threads, k, _limit(node, graph, batch))))


def _own_splittable(node: Node, graph: Graph) -> bool:
    """dense_grad_input / dense_grad_weight on 2-D tensors; sgd_update on any parameter."""
    if node.op == "sgd_update":
        return bool(graph.specs[node.inputs[0]].shape)
    return all(len(graph.specs[t].shape) == 2 for t in node.inputs + node.outputs)


def _limit(node: Node, graph: Graph, batch: int) -> int:
    """The most parts ``node`` can be cut into: its batch, columns or rows, element blocks."""
    out = graph.specs[node.outputs[0]].shape if node.outputs else None
    if node.op in CHANNEL_OPS:
        return graph.specs[node.inputs[0]].shape[1]
    if node.op == "sgd_update":
        return int(np.prod(graph.specs[node.inputs[0]].shape)) // TILE
    if node.op == "dense_grad_input":
        return out[1] // TILE
    if node.op == "dense_grad_weight":
        return out[0] // TILE
    if columns(node, graph, batch):
        return out[1] // TILE
    return batch


def columns(node: Node, graph: Graph, batch: int) -> bool:
    """A dense layer split by output columns: its weights are larger than its input batch."""
    if node.op != "dense":
        return False
    n_in = graph.specs[node.inputs[0]].shape[-1]
    n_out = graph.specs[node.outputs[0]].shape[-1]
    return n_in * n_out > batch * (n_in + n_out)


def reduce_bytes(node: Node, graph: Graph) -> int:
    """The bytes a part of ``node`` needs beyond its kernel's workspace: its partial output when
    the parts' outputs are summed, else 0."""
    if node.op not in REDUCED:
        return 0
    spec = graph.specs[node.outputs[0]]
    return int(np.prod(spec.shape)) * np.dtype(spec.dtype).itemsize


def by_channels(node: Node) -> bool:
    """``node`` is split by channel blocks (:data:`CHANNEL_OPS`): its parts have the whole batch."""
    return node.op in CHANNEL_OPS


def part_batch(batch: int, k: int) -> int:
    """The largest batch slice of ``batch`` cut into ``k`` parts."""
    return -(-batch // k)


def workspace_share(nbytes: int) -> int:
    return -(-nbytes // ALIGN) * ALIGN


def split_kernel(fn, op: str, k: int, by_columns: bool, share: int, run_parts):
    """``fn`` run in ``k`` parts (by batch slices, by output columns of a dense layer, or by
    channel blocks for :data:`CHANNEL_OPS`) through ``run_parts(calls)``; each part gets ``share``
    bytes of the workspace."""
    share_elems = share // 4
    reduced = op in REDUCED
    if op in OWN_PARTS:
        return _own_split_kernel(fn, op, k, share_elems, run_parts)
    channels = CHANNEL_OPS.get(op)
    grouped = getattr(fn, "channel_group", None)  # a channel split cuts between these groups

    def run(attrs, inputs, outputs, ws):
        out = outputs[0]
        if channels:  # cut between the kernel's groups of channels
            n = inputs[0].shape[1]
            step = grouped(inputs[0].shape) if grouped else 1
        else:
            n = inputs[0].shape[0] if reduced else out.shape[1] if by_columns else out.shape[0]
            step = TILE if by_columns else 1
        m = min(k, n // step)
        if m < 2:
            fn(attrs, inputs, outputs, ws)
            return
        calls, partials = [], []
        ndim = inputs[0].ndim if reduced else out.ndim
        for i in range(m):
            s = _tile(n, i, m, step)
            part_ws = ws[i * share_elems:(i + 1) * share_elems] if ws is not None else None
            if channels:
                ins, outs = channel_slices(channels, inputs, outputs, s, i)
            elif by_columns:  # dense: out[:, s] = x @ w[s].T + b[s]
                ins = [inputs[0], inputs[1][s]] + [b[s] for b in inputs[2:]]
                outs = [out[:, s]]
            else:
                ins = batch_inputs(op, inputs, s, n, ndim)
                if not reduced:
                    outs = [o[s] for o in outputs]
                elif i == 0:
                    outs = [out]
                else:
                    partials.append(_partial(part_ws, out))
                    outs = [partials[-1]]
            calls.append((fn, (attrs, ins, outs, part_ws)))
        run_parts(calls)
        for p in partials:  # after every part is done: the sum in part order
            np.add(out, p, out=out)
    run.__name__ = getattr(fn, "__name__", op)
    run.__wrapped__ = fn
    run.part_kernel = None if by_columns or reduced or channels else fn  # what a segment runs per
    # batch slice
    return run


def _own_split_kernel(fn, op: str, k: int, share_elems: int, run_parts):
    """``fn`` (one of :data:`OWN_PARTS`) run in ``k`` parts its own way (module docstring)."""

    def run(attrs, inputs, outputs, ws):
        if op == "sgd_update":
            flats = [_reshaped(a, (a.size,)) for a in inputs[:3]]
            n = inputs[0].size if all(f is not None for f in flats) else 0
        elif op == "dense_grad_input":
            n = outputs[0].shape[1]
        elif op == "dense_grad_weight":
            n = outputs[0].shape[0]
        else:
            n = inputs[0].shape[0]
        step = 1 if op == "dropout_train" else TILE
        m = min(k, n // step)
        if m < 2:
            fn(attrs, inputs, outputs, ws)
            return
        calls = []
        for i in range(m):
            s = _tile(n, i, m, step)
            part_ws = ws[i * share_elems:(i + 1) * share_elems] if ws is not None else None
            if op == "sgd_update":
                calls.append((fn, (attrs, [f[s] for f in flats] + [inputs[3]], [], part_ws)))
            elif op == "dense_grad_input":  # dx[:, s] = dy @ w[:, s]
                calls.append((fn, (attrs, [inputs[0], inputs[1][:, s]], [outputs[0][:, s]],
                                   part_ws)))
            elif op == "dense_grad_weight":  # dw[s] = dy[:, s].T @ x
                calls.append((fn, (attrs, [inputs[0][:, s], inputs[1]], [outputs[0][s]],
                                   part_ws)))
            else:  # dropout_train: rows s draw their own counters; the counter advanced after
                calls.append((_seeded_part, (dropout.dropout_part, attrs,
                                             [inputs[0][s], inputs[1]], [o[s] for o in outputs],
                                             part_ws, s.start)))
        run_parts(calls)
        if op == "dropout_train":
            dropout.advance(attrs, inputs, outputs, ws)
    run.__name__ = getattr(fn, "__name__", op)
    run.__wrapped__ = fn
    run.part_kernel = None
    return run


def _tile(n: int, i: int, m: int, step: int) -> slice:
    """Part ``i`` of ``m`` of ``range(n)``, its boundaries on multiples of ``step``."""
    return slice(n * i // m // step * step, n * (i + 1) // m // step * step if i + 1 < m else n)


def _seeded_part(part, attrs, inputs, outputs, ws, row: int) -> None:
    """A part of a seeded draw (rows ``row...``), with the kernels' small ufunc buffers."""
    old = np.setbufsize(UFUNC_BUFSIZE)
    try:
        part(attrs, inputs, outputs, ws, row)
    finally:
        np.setbufsize(old)


def channel_slices(channels: tuple, inputs: list, outputs: list, s: slice, i: int):
    """The inputs and outputs of part ``i`` (channels ``s``) of a :data:`CHANNEL_OPS` op: the
    inputs ``channels[0]`` and output 0 sliced along axis 1, the inputs ``channels[1]`` and the
    other outputs along axis 0, any other input (state) whole for part 0 and a private copy for the
    others (made before the parts start: a 1-element counter)."""
    along1, along0 = channels
    ins = [x[:, s] if j in along1 else x[s] if j in along0 else x if i == 0 else x.copy()
           for j, x in enumerate(inputs)]
    return ins, [outputs[0][:, s]] + [o[s] for o in outputs[1:]]


def batch_inputs(op: str, inputs: list, s: slice, n: int, ndim: int) -> list:
    """The inputs of ``op``'s part on batch rows ``s`` (of ``n``; ``ndim``: the output's rank):
    every batched input sliced for the ops of :data:`ALL_BATCHED` (and a concat), else input 0
    alone (the others are weights, whole)."""
    if op in ALL_BATCHED or op == "concat":
        return [x[s] if _batched(x, n, ndim) else x for x in inputs]
    return [inputs[0][s]] + list(inputs[1:])


def _partial(part_ws: np.ndarray, out: np.ndarray) -> np.ndarray:
    """A part's own output (shaped like ``out``) at the end of its workspace share."""
    v = part_ws[part_ws.size - out.nbytes // 4:].view(out.dtype)
    v.shape = out.shape
    return v


def _batched(x: np.ndarray, n: int, ndim: int) -> bool:
    """An input that runs along the batch axis of the op (not broadcast over it)."""
    return x.ndim == ndim and x.shape[0] == n
