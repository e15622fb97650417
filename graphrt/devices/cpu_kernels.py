"""numpy kernels of the ``cpu`` device that differ from the ops' reference forwards.

Every kernel has the signature ``fn(attrs, inputs, outputs, workspace)`` and writes into its planned
output views; ``WORKSPACES[op](node, graph, batch)`` gives the scratch bytes the memory plan reserves
for it (a float32 view of that block arrives as ``workspace``). Convolution gathers its im2col columns
into the workspace, a few images at a time, and runs one stacked BLAS GEMM per group.
"""
from __future__ import annotations

import numpy as np

from ..graph import Graph, Node
from ..ops.elementwise import activate

# ---- convolution --------------------------------------------------------------------------------
def _conv_geometry(node: Node, graph: Graph, batch: int):
    n, c, h, w = graph.specs[node.inputs[0]].concrete(batch)
    o, cg, kh, kw = graph.specs[node.inputs[1]].shape
    oh, ow = graph.specs[node.outputs[0]].shape[2:]
    return n, c, h, w, o, cg, kh, kw, oh, ow


def _is_pointwise(attrs, kh, kw) -> bool:
    return (kh, kw) == (1, 1) and attrs["stride"] == (1, 1) and not any(attrs["pads"]) \
        and attrs["groups"] == 1


IM2COL_BYTES = 8 << 20  # columns gathered per GEMM: big enough for BLAS, small enough for cache


def _conv_chunk(n, c, h, w, cg, kh, kw, oh, ow, pads) -> tuple[int, int, int]:
    """(images per chunk, padded floats per image, column floats per image)."""
    t, b, l, r = pads
    padded = c * (h + t + b) * (w + l + r) if any(pads) else 0
    cols = cg * kh * kw * oh * ow
    return max(1, min(n, IM2COL_BYTES // (4 * (padded + cols)))), padded, cols


def conv_workspace(node: Node, graph: Graph, batch: int) -> int:
    n, c, h, w, o, cg, kh, kw, oh, ow = _conv_geometry(node, graph, batch)
    if _is_pointwise(node.attrs, kh, kw):
        return 0
    chunk, padded, cols = _conv_chunk(n, c, h, w, cg, kh, kw, oh, ow, node.attrs["pads"])
    return 4 * chunk * (padded + cols)


def conv2d(attrs, inputs, outputs, ws):
    x, w = inputs[0], inputs[1]
    out = outputs[0]
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    oh, ow = out.shape[2:]
    if _is_pointwise(attrs, kh, kw):
        np.matmul(w.reshape(o, c), x.reshape(n, c, h * wd), out=_flat(out, (n, o, oh * ow)))
    else:
        _conv_im2col(attrs, x, w, out, ws)
    if len(inputs) == 3:
        out += inputs[2].reshape(1, o, 1, 1)
    activate(out, attrs["activation"], attrs["negative_slope"])


def _conv_im2col(attrs, x, w, out, ws):
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    oh, ow = out.shape[2:]
    chunk, padded, cols = _conv_chunk(n, c, h, wd, cg, kh, kw, oh, ow, attrs["pads"])
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        _conv_chunk_im2col(attrs, x[start:stop], w, out[start:stop], ws, padded * (stop - start))


def _conv_chunk_im2col(attrs, x, w, out, ws, padded):
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    oh, ow = out.shape[2:]
    (sh, sw), (dh, dw), g = attrs["stride"], attrs["dilation"], attrs["groups"]
    t, b, l, r = attrs["pads"]
    if padded:
        hp, wp = h + t + b, wd + l + r
        xp = ws[:padded].reshape(n, c, hp, wp)
        xp[:, :, :t], xp[:, :, hp - b:], xp[:, :, :, :l], xp[:, :, :, wp - r:] = 0, 0, 0, 0
        xp[:, :, t:t + h, l:l + wd] = x
        x = xp
    k = cg * kh * kw
    cols = ws[padded: padded + n * k * oh * ow].reshape(n, cg, kh, kw, oh, ow)
    s = x.strides
    og = o // g
    for gi in range(g):
        src = np.lib.stride_tricks.as_strided(
            x[:, gi * cg:(gi + 1) * cg], (n, cg, kh, kw, oh, ow),
            (s[0], s[1], s[2] * dh, s[3] * dw, s[2] * sh, s[3] * sw), writeable=False)
        np.copyto(cols, src)
        np.matmul(w[gi * og:(gi + 1) * og].reshape(og, k), cols.reshape(n, k, oh * ow),
                  out=_flat(out[:, gi * og:(gi + 1) * og], (n, og, oh * ow)))


def _flat(a: np.ndarray, shape) -> np.ndarray:
    """``a`` reshaped without copying (raises if the layout does not allow it: never write to a copy)."""
    v = a.view()
    v.shape = shape
    return v


KERNELS = {"conv2d": conv2d}
WORKSPACES = {"conv2d": conv_workspace}
