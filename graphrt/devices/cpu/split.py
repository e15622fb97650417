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
  fully connected layer: each thread reads only its share of the weights);
- batch slices with a reduction for a weight gradient (``conv2d_grad_weight``): part 0 writes the
  output, part ``i > 0`` a partial sum at the end of its own workspace share (the device reports
  the output's bytes on top of each part's workspace: :func:`reduce_bytes`), and the calling
  thread adds the partial sums into the output once every part is done;
- channel blocks for batch norm's training forward and gradient (:data:`CHANNEL_OPS`), whose
  statistics run over the whole batch but each channel on its own: part ``i`` runs the same kernel
  on a block of the channels of x, y, dy and dx (axis 1) and of the per-channel tensors (gamma,
  beta, the saved mean and invstd, the running statistics, dgamma, dbeta): channels
  ``[c*i/k, c*(i+1)/k)``, the cuts moved to the kernel's group boundaries when it has groups
  (``fn.channel_group(x.shape)`` channels each, whose sums may be one BLAS call each: part ``i``
  starts at group ``g*i/k`` of ``g``, so every part makes the very calls one thread makes and the
  outputs are bit for bit one thread's). Batch norm's ``count`` state is read and written by part
  0; every other part gets a private copy made before the parts start (the same value to read,
  what it writes dropped). Not with a ``group`` attribute (the kernels then run the reference,
  which all-reduces every channel's statistics at once). A part's workspace share is the kernel's
  workspace for the whole launch (its buffers are per group or per channel block, so this is a
  few per-channel vectors more than the part needs). These launches are never in a segment, and
  each part must move at least :data:`CHANNEL_PART_BYTES`.

The training step's data gradients split like their forwards: ``conv2d_grad_input`` (dy sliced,
the weights whole), ``max_pool_grad``, ``avg_pool_grad`` and ``relu_grad`` (every batched input
sliced).

Each part gets its own share of the node's workspace: the device reports ``parts`` times the
per-part workspace (at the largest per-part batch, rounded up to :data:`ALIGN` bytes) to the memory
plan, so the parts never share scratch bytes.
"""
from __future__ import annotations

import numpy as np

from ...ir import Graph, Node
from ...ir import opset

ALIGN = 64  # bytes: each part's workspace starts on a cache line
MIN_PART_FLOPS = 4_000_000  # a part must do at least this much arithmetic (about 40-100 us) ...
MIN_PART_BYTES = 1 << 19  # ... or move at least this much memory (memory-bound ops)
CHANNEL_PART_BYTES = 4 << 20  # ... and a part of a channel split this much (CHANNEL_OPS: the batch
# norm kernels make a few dozen small ufunc calls per launch, whose Python and GIL hand-offs the
# parts contend for; 2 threads on 2 vCPUs, per launch: 0.7x-0.8x the time from 4x192x56x56 (19 MB
# moved) up, 1.2x-1.3x slower at 4x96x28x28 (2.4 MB))

# ops whose kernel runs image by image (input 0 and the outputs sliced along the batch)
BATCH_OPS = {"conv2d", "conv2d_split", "max_pool", "avg_pool", "lrn", "batch_norm",
             "channel_affine", "dense", "softmax", "log_softmax", "elementwise_chain", "add", "relu",
             "tanh", "sigmoid", "scale", "conv2d_grad_input", "conv2d_grad_weight", "max_pool_grad",
             "avg_pool_grad", "relu_grad"}
COMPUTE_OPS = {"conv2d", "conv2d_split", "dense", "conv2d_grad_input",
               "conv2d_grad_weight"}  # judged by flops; the others by bytes
ALL_BATCHED = {"add", "relu_grad", "max_pool_grad", "conv2d_grad_weight"}  # every batched input sliced
REDUCED = {"conv2d_grad_weight"}  # the output is the sum of the parts' outputs
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
    if op not in BATCH_OPS and op not in activations:
        return False
    if len(node.outputs) != 1 and op != "conv2d_split":  # its outputs all sliced alike
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
    if node.op in COMPUTE_OPS:
        k = flops // MIN_PART_FLOPS
    elif node.op in CHANNEL_OPS:
        k = nbytes // max(MIN_PART_BYTES, CHANNEL_PART_BYTES)
    else:
        k = nbytes // MIN_PART_BYTES
    if node.op in CHANNEL_OPS:
        limit = graph.specs[node.inputs[0]].shape[1]
    elif columns(node, graph, batch):
        limit = graph.specs[node.outputs[0]].shape[1]
    else:
        limit = batch
    return int(max(1, min(threads, k, limit)))


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
    channels = CHANNEL_OPS.get(op)
    grouped = getattr(fn, "channel_group", None)  # a channel split cuts between these groups

    def run(attrs, inputs, outputs, ws):
        out = outputs[0]
        unit = 1
        if channels:
            n = inputs[0].shape[1]
            unit = grouped(inputs[0].shape) if grouped else 1
        else:
            n = inputs[0].shape[0] if reduced else out.shape[1] if by_columns else out.shape[0]
        units = -(-n // unit)
        m = min(k, units)
        if m < 2:
            fn(attrs, inputs, outputs, ws)
            return
        calls, partials = [], []
        ndim = inputs[0].ndim if reduced else out.ndim
        for i in range(m):
            s = slice(unit * (units * i // m), min(n, unit * (units * (i + 1) // m)))
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
