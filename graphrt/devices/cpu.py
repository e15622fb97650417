"""The ``cpu`` device: numpy kernels over one preallocated arena — the embedded default and the
reference every other device is compared against.

Kernels write into their planned output views (``out=``); convolution gathers its im2col columns
into a planned workspace and runs one stacked BLAS GEMM per group. Ops without a kernel of their own
here run their ``OpDef`` reference forward.
"""
from __future__ import annotations

import os

import numpy as np

from ..graph import Graph, Node
from ..ops import get_op
from ..ops.elementwise import activate
from .base import Device

ARENA_ALIGN = 64


def aligned_empty(nbytes: int, align: int = ARENA_ALIGN) -> np.ndarray:
    """A zeroed uint8 array of ``nbytes`` whose data starts on an ``align``-byte boundary."""
    raw = np.zeros(nbytes + align, np.uint8)
    start = (-raw.ctypes.data) % align
    return raw[start:start + nbytes]


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


# ---- the device ---------------------------------------------------------------------------------
KERNELS = {"conv2d": conv2d}
WORKSPACES = {"conv2d": conv_workspace}


def _reference_kernel(op: str):
    forward = get_op(op).forward

    def run(attrs, inputs, outputs, ws):
        forward(attrs, inputs, outputs)
    run.__name__ = f"reference_{op}"
    return run


class CpuDevice(Device):
    """numpy on the host; its "device memory" is one aligned numpy buffer."""

    kind = "cpu"

    def alloc_arena(self, nbytes: int) -> np.ndarray:
        return aligned_empty(nbytes)

    def upload(self, array: np.ndarray) -> np.ndarray:
        out = aligned_empty(array.nbytes).view(array.dtype).reshape(array.shape)
        out[...] = array
        return out

    def kernel(self, op: str):
        return KERNELS.get(op) or _reference_kernel(op)

    def workspace_bytes(self, node: Node, graph: Graph, batch: int) -> int:
        fn = WORKSPACES.get(node.op)
        return fn(node, graph, batch) if fn else 0

    def available_bytes(self) -> int:
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return 1 << 62

    def to_device(self, host, dst, stream=None) -> None:
        np.copyto(dst, host)

    def to_host(self, src, dst, stream=None) -> None:
        np.copyto(dst, src)
