"""Splitting one launch across the cpu device's threads.

A launch is split only when its work is large enough to pay for waking a worker (about 20-50 us):
:func:`parts` decides from the op's own cost (flops, bytes moved) at the compiled batch — never from
a timing — and how many parts each op can be cut into:

- batch slices for the per-image ops (convolution, merged sibling convolutions, pooling, LRN,
  normalization, softmax over a non-batch axis, elementwise ops and their chains, ``add``): part
  ``i`` runs the same kernel on rows ``[n*i/k, n*(i+1)/k)`` of every batched input and output;
- column tiles for a dense layer whose weights outweigh its batch (a small batch through a large
  fully connected layer: each thread reads only its share of the weights).

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

# ops whose kernel runs image by image (input 0 and the outputs sliced along the batch)
BATCH_OPS = {"conv2d", "conv2d_split", "max_pool", "avg_pool", "lrn", "batch_norm",
             "channel_affine", "dense", "softmax", "log_softmax", "elementwise_chain", "add", "relu",
             "tanh", "sigmoid", "scale"}
COMPUTE_OPS = {"conv2d", "conv2d_split", "dense"}  # judged by flops; the others by bytes


def splittable(node: Node, graph: Graph, activations=()) -> bool:
    """True when ``node``'s kernel may run on batch slices (or column tiles) independently."""
    op = node.op
    if op not in BATCH_OPS and op not in activations:
        return False
    if len(node.outputs) != 1 and op != "conv2d_split":  # its outputs all sliced alike
        return False
    out = graph.specs[node.outputs[0]]
    if not out.batched or not out.shape or not graph.specs[node.inputs[0]].batched:
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
    else:
        k = nbytes // MIN_PART_BYTES
    limit = batch if not columns(node, graph, batch) else graph.specs[node.outputs[0]].shape[1]
    return int(max(1, min(threads, k, limit)))


def columns(node: Node, graph: Graph, batch: int) -> bool:
    """A dense layer split by output columns: its weights are larger than its input batch."""
    if node.op != "dense":
        return False
    n_in = graph.specs[node.inputs[0]].shape[-1]
    n_out = graph.specs[node.outputs[0]].shape[-1]
    return n_in * n_out > batch * (n_in + n_out)


def part_batch(batch: int, k: int) -> int:
    """The largest batch slice of ``batch`` cut into ``k`` parts."""
    return -(-batch // k)


def workspace_share(nbytes: int) -> int:
    return -(-nbytes // ALIGN) * ALIGN


def split_kernel(fn, op: str, k: int, by_columns: bool, share: int, run_parts):
    """``fn`` run in ``k`` parts (by batch slices, or by output columns of a dense layer) through
    ``run_parts(calls)``; each part gets ``share`` bytes of the workspace."""
    share_elems = share // 4

    def run(attrs, inputs, outputs, ws):
        out = outputs[0]
        n = out.shape[1] if by_columns else out.shape[0]
        m = min(k, n)
        if m < 2:
            fn(attrs, inputs, outputs, ws)
            return
        calls = []
        for i in range(m):
            s = slice(n * i // m, n * (i + 1) // m)
            part_ws = ws[i * share_elems:(i + 1) * share_elems] if ws is not None else None
            if by_columns:  # dense: out[:, s] = x @ w[s].T + b[s]
                ins = [inputs[0], inputs[1][s]] + [b[s] for b in inputs[2:]]
                outs = [out[:, s]]
            else:
                ins = [x[s] if _batched(x, out) else x for x in inputs] if op == "add" \
                    else [inputs[0][s]] + list(inputs[1:])
                outs = [o[s] for o in outputs]
            calls.append((fn, (attrs, ins, outs, part_ws)))
        run_parts(calls)
    run.__name__ = getattr(fn, "__name__", op)
    run.__wrapped__ = fn
    return run


def _batched(x: np.ndarray, out: np.ndarray) -> bool:
    """An ``add`` input that runs along the output's batch axis (not broadcast over it)."""
    return x.ndim == out.ndim and x.shape[0] == out.shape[0]
