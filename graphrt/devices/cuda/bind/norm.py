"""Binders of pooling and normalization: ``max_pool``/``avg_pool`` (``pool2d``), ``lrn``,
``batch_norm`` (``bn_coeffs`` computes each channel's scale and shift into the workspace, then
``channel_affine`` makes one pass), ``channel_affine``, and ``softmax``/``log_softmax`` along any
axis (one block per row). Kernels in ``kernels/pool.cu``, ``norm.cu`` and ``softmax.cu``.
"""
from __future__ import annotations

from ..calls import (MAX_BLOCKS, THREADS, Call, Unsupported, check_dtype, collapse, estrides,
                     grid_1d)


def _nchw(a) -> tuple:
    """(N, C, H, W) and 4 strides of a rank-2 to rank-4 view (missing trailing axes have size 1)."""
    s = estrides(a)
    if a.ndim > 4 or a.ndim < 2:
        raise Unsupported(f"rank {a.ndim}")
    shape = tuple(a.shape) + (1,) * (4 - a.ndim)
    return shape, tuple(s) + (0,) * (4 - a.ndim)


def bind_pool(op):
    def bind(attrs, inputs, outputs, ws):
        from ....ops.pool import pool_geometry

        x, y = inputs[0], outputs[0]
        dtype = check_dtype(x, y)
        n, c, h, w = x.shape
        oh, ow = y.shape[2:]
        (kh, kw), (sh, sw), (t, b, l, r) = pool_geometry(attrs, h, w)
        total = n * c * oh * ow
        return [Call("pool2d", dtype, grid_1d(total), (THREADS, 1, 1), (
            x, *estrides(x), y, *estrides(y), n, c, h, w, oh, ow, kh, kw, sh, sw, t, b, l, r,
            int(op == "max_pool"), int(bool(attrs.get("count_include_pad", True)))))]
    return bind


def bind_lrn(attrs, inputs, outputs, ws):
    x, y = inputs[0], outputs[0]
    dtype = check_dtype(x, y)
    n, c, h, w = x.shape
    return [Call("lrn", dtype, grid_1d(n * c * h * w), (THREADS, 1, 1), (
        x, *estrides(x), y, *estrides(y), n, c, h, w, attrs["size"], attrs["alpha"],
        attrs["beta"], attrs["k"]))]


def _contiguous_1d(*arrays):
    for a in arrays:
        if a.ndim != 1 or (a.shape[0] > 1 and estrides(a)[0] != 1):
            raise Unsupported("a per-channel parameter that is not contiguous")


def _affine_call(x, y, scale, shift):
    dtype = check_dtype(x, y, scale, *([shift] if shift is not None else []))
    shape, xs = _nchw(x)
    _, ys = _nchw(y)
    n, c, h, w = shape
    return Call("channel_affine", dtype, grid_1d(n * c * h * w), (THREADS, 1, 1), (
        x, *xs, y, *ys, n, c, h, w, scale, shift, int(shift is not None)))


def bind_batch_norm(attrs, inputs, outputs, ws):
    x, mean, var = inputs[:3]
    affine = len(inputs) == 5
    gamma, beta = (inputs[3], inputs[4]) if affine else (None, None)
    dtype = check_dtype(x, mean, var, *(inputs[3:]))
    _contiguous_1d(*inputs[1:])
    c = x.shape[1]
    coeffs = ws.view(dtype)
    scale, shift = coeffs[:c], coeffs[c:2 * c]
    prep = Call("bn_coeffs", dtype, grid_1d(c), (THREADS, 1, 1),
                (mean, var, gamma, beta, int(affine), c, attrs["eps"], scale, shift))
    return [prep, _affine_call(x, outputs[0], scale, shift)]


def bind_channel_affine(attrs, inputs, outputs, ws):
    _contiguous_1d(*inputs[1:])
    return [_affine_call(inputs[0], outputs[0], inputs[1], inputs[2] if len(inputs) == 3 else None)]


def _rows(a, axis):
    """(outer, L, inner) and their strides for ``a`` along ``axis``."""
    s = estrides(a)
    outer_shape, outer_s = collapse(a.shape[:axis], s[:axis]) if axis else ((1,), [(0,)])
    inner_shape, inner_s = collapse(a.shape[axis + 1:], s[axis + 1:]) if axis + 1 < a.ndim \
        else ((1,), [(0,)])
    if len(outer_shape) != 1 or len(inner_shape) != 1:
        raise Unsupported("softmax rows that do not collapse")
    return (outer_shape[0], a.shape[axis], inner_shape[0]), (outer_s[0][0], s[axis], inner_s[0][0])


def bind_softmax(op):
    def bind(attrs, inputs, outputs, ws):
        x, y = inputs[0], outputs[0]
        dtype = check_dtype(x, y)
        axis = attrs["axis"] % x.ndim
        (outer, length, inner), xs = _rows(x, axis)
        _, ys = _rows(y, axis)
        rows = outer * inner
        threads = 32
        while threads < min(length, 256):
            threads *= 2
        return [Call("softmax", dtype, (max(1, min(rows, MAX_BLOCKS)), 1, 1), (threads, 1, 1), (
            x, *xs, y, *ys, outer, length, inner, int(op == "log_softmax")))]
    return bind
