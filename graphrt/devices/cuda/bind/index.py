"""Binders of slicing, repeating, casting and gathering: ``slice``, ``expand`` and ``tile`` are
``copy_nd`` of strided views of the input (a slice's window; a stride of 0 along the axes that
``expand`` broadcasts and along ``tile``'s repeat axes), ``cast`` is ``cast_nd`` (any numeric or
bool input to float32 or float64: a cast to an integer type stays on the host), ``embedding`` is
``embedding_gather`` and ``embedding_grad`` ``embedding_rows`` + ``embedding_scatter``,
``pad_grad`` (reflect, edge and wrap padding's gradient) one ``pad_grad_axis`` per padded axis
(kernels in ``kernels/index.cu``).

An index outside [0, rows) gives a row of NaN in ``embedding`` and adds nothing in
``embedding_grad``: a kernel cannot raise (the cpu device raises an InputError).
"""
from __future__ import annotations

import numpy as np

from ....ops.index import slice_bounds
from ..calls import (THREADS, Call, Unsupported, check_dtype, copy_call, estrides, grid_1d,
                     num_elements, pad6, view_copy_call)
from .elementwise import broadcast_strides
from .grad import bind_zeros_like
from .train import LABEL_KINDS


def bind_slice(attrs, inputs, outputs, ws):
    x = inputs[0]
    axes = tuple(a % x.ndim for a in attrs["axes"])
    bounds = slice_bounds({**attrs, "axes": axes}, x.shape)
    return [copy_call(x[tuple(slice(lo, hi) for lo, hi in bounds)], outputs[0])]


def bind_expand(attrs, inputs, outputs, ws):
    y = outputs[0]
    return [view_copy_call(inputs[0], y.shape, broadcast_strides(inputs[0], y.shape), y)]


def tile_calls(x, repeats, y) -> list:
    """x read as (r0, d0, r1, d1, ...) with stride 0 along each repeat axis r: y in C order; where
    that view has more than the kernels' 6 axes, one such copy per repeat of the first repeated
    axis, into its slab of y."""
    shape = [v for r, d in zip(repeats, x.shape) for v in (r, d)]
    strides = [v for s in estrides(x) for v in (0, s)]
    try:
        return [view_copy_call(x, shape, strides, y)]
    except Unsupported:
        axis = next(a for a, r in enumerate(repeats) if r > 1)
        rest = list(repeats[:axis]) + [1] + list(repeats[axis + 1:])
        d = x.shape[axis]
        return [call for k in range(repeats[axis]) for call in tile_calls(
            x, rest, y[(slice(None),) * axis + (slice(k * d, (k + 1) * d),)])]


def bind_tile(attrs, inputs, outputs, ws):
    return tile_calls(inputs[0], attrs["repeats"], outputs[0])


def kind(a) -> int:
    """The ``gr_label`` kind of an index or cast source array."""
    code = LABEL_KINDS.get(np.dtype(a.dtype).name)
    if code is None:
        raise Unsupported(f"dtype {a.dtype}")
    return code


def bind_cast(attrs, inputs, outputs, ws):
    x, y = inputs[0], outputs[0]
    dtype = check_dtype(y)
    if np.dtype(x.dtype) == dtype:
        return [copy_call(x, y)]
    if x.shape != y.shape:
        raise Unsupported("cast shapes differ")
    shape, xs = pad6(x.shape, estrides(x))
    _, ys = pad6(y.shape, estrides(y))
    total = num_elements(y.shape)
    return [Call("cast_nd", dtype, grid_1d(total), (THREADS, 1, 1),
                 (x, kind(x), y, total, *shape, *xs, *ys))]


def _index_layout(idx, *others) -> tuple:
    """``idx``'s sizes and strides, and each of ``others``' (arrays of shape idx.shape + (D,))
    strides over those axes, all rank 6."""
    shape, s = pad6(idx.shape, estrides(idx))
    return shape, s, [pad6(idx.shape, estrides(o)[:-1])[1] for o in others]


def bind_embedding(attrs, inputs, outputs, ws):
    idx, w = inputs
    y = outputs[0]
    dtype = check_dtype(w, y)
    n, s, (ys,) = _index_layout(idx, y)
    count, d = num_elements(idx.shape), w.shape[1]
    return [Call("embedding_gather", dtype, grid_1d(count * d), (THREADS, 1, 1), (
        idx, kind(idx), w, w.shape[0], *estrides(w), y, count, d, estrides(y)[-1], *n, *s, *ys))]


def bind_embedding_grad(attrs, inputs, outputs, ws):
    """Each row's index list (a stable counting sort on one thread, in the workspace), then one
    thread per element of the gradient sums its row's dy in index order."""
    dy, idx = inputs
    out = outputs[0]
    dtype = check_dtype(dy, out)
    n, s, (ds,) = _index_layout(idx, dy)
    rows, d = out.shape
    count = num_elements(idx.shape)
    lists = ws.view(np.int64)
    start, cursor, order = lists[:rows + 1], lists[rows + 1:2 * rows + 1], \
        lists[2 * rows + 1:2 * rows + 1 + count]
    return [Call("embedding_rows", dtype, (1, 1, 1), (1, 1, 1), (
                idx, kind(idx), rows, count, start, cursor, order, *n, *s)),
            Call("embedding_scatter", dtype, grid_1d(rows * d), (THREADS, 1, 1), (
                start, order, dy, out, rows, d, estrides(dy)[-1], *estrides(out), *n, *ds))]


def embedding_grad_workspace_bytes(rows: int, count: int) -> int:
    """embedding_rows' lists: row starts, cursors and the sorted positions (int64)."""
    return 8 * (2 * rows + 1 + count)


PAD_MODES = ("reflect", "edge", "wrap")


def bind_pad_grad(attrs, inputs, outputs, ws):
    """dx is zero where the pads cropped the input; inside, dy summed back along each padded axis
    in turn (from one workspace buffer into the other, the last axis into dx)."""
    dy, dx = inputs[0], outputs[0]
    dtype = check_dtype(dy, dx)
    rank, pads = dy.ndim, attrs["pads"]
    inner = dx[tuple(slice(max(0, -lo), n - max(0, -hi))
                     for n, lo, hi in zip(dx.shape, pads[:rank], pads[rank:]))]
    calls = bind_zeros_like({}, [], [dx], ws) if inner.shape != dx.shape else []
    axes = [a for a in range(rank) if pads[a] > 0 or pads[a + rank] > 0]
    if not axes:
        return calls + [copy_call(dy, inner)]
    space, big = ws.view(dtype), num_elements(dy.shape)
    cur, shape = dy, list(dy.shape)
    for k, axis in enumerate(axes):
        m, shape[axis] = shape[axis], inner.shape[axis]
        dst = inner if k == len(axes) - 1 else \
            space[(k % 2) * big:(k % 2) * big + num_elements(shape)].reshape(shape)
        n, ys = pad6(dst.shape, estrides(dst))
        total = num_elements(shape)
        calls.append(Call("pad_grad_axis", dtype, grid_1d(total), (THREADS, 1, 1), (
            cur, dst, total, *n, *pad6(cur.shape, estrides(cur))[1], *ys, axis + 6 - rank, m,
            max(0, pads[axis]), PAD_MODES.index(attrs["mode"]))))
        cur = dst
    return calls


def pad_grad_workspace_bytes(dy_shape, itemsize) -> int:
    """Two buffers of dy's size (the sums after each padded axis but the last)."""
    return 2 * num_elements(dy_shape) * itemsize


BINDERS = {"slice": bind_slice, "expand": bind_expand, "tile": bind_tile, "cast": bind_cast,
           "embedding": bind_embedding, "embedding_grad": bind_embedding_grad,
           "pad_grad": bind_pad_grad}
