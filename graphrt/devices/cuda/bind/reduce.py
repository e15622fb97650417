"""Binders of the reductions and layer norm (``kernels/reduce.cu``): ``reduce`` and ``reduce_like``
(``reduce_rows``), ``reduce_grad`` (``reduce_grad_rows``), ``arg_reduce`` (``arg_rows``, int64
indices), ``layer_norm`` and ``layer_norm_grad`` (``ln_stats`` into the workspace, then ``ln_rows``
or ``ln_param_grad``).

Each kernel walks a tensor as rows (:func:`rows`): the kept axes collapse into the row index and the
reduced axes into the index within a row, every operand with its own strides, so views of the arena
are read and written in place.
"""
from __future__ import annotations

import numpy as np

from ....ops.reduce import MODES, reduced_axes
from ..calls import (MAX_BLOCKS, THREADS, Call, Unsupported, check_dtype, collapse, estrides,
                     grid_1d, num_elements, pad6)


def rows(shape, axes, *strides) -> tuple:
    """``(outer, inner, kept sizes, reduced sizes, [kept strides], [reduced strides])`` of a
    tensor of ``shape`` reduced over ``axes``; ``strides`` per operand, aligned with ``shape``
    (an operand without the reduced axes, such as the reduction itself, has any stride there)."""
    kept = [d for d in range(len(shape)) if d not in axes]
    parts = []
    for group in (kept, sorted(axes)):
        sizes, ss = collapse([shape[d] for d in group], *[[s[d] for d in group] for s in strides])
        parts.append((num_elements(sizes), pad6(sizes, ss[0])[0], [pad6(sizes, s)[1] for s in ss]))
    (outer, on, os), (inner, rn, rs) = parts
    return outer, inner, on, rn, os, rs


def _aligned(y, rank: int, axes) -> tuple:
    """``y``'s strides aligned with the reduced tensor's ``rank`` axes (0 for a dropped axis)."""
    ys = iter(estrides(y))
    return tuple(next(ys) if (y.ndim == rank or d not in axes) else 0 for d in range(rank))


def _row_blocks(outer: int, inner: int) -> tuple:
    """reduce_rows' grid and block: a block per row, of a power of two (32 to 256) threads."""
    threads = 32
    while threads < min(inner, THREADS):
        threads *= 2
    return (max(1, min(outer, MAX_BLOCKS)), 1, 1), (threads, 1, 1)


def reduce_call(mode: str, x, y, axes, y_strides=None) -> Call:
    """``y`` = ``mode`` of ``x`` over ``axes`` (``y`` with or without the reduced axes, or with
    ``y_strides`` aligned with x's axes)."""
    dtype = check_dtype(x, y)
    axes = tuple(axes)
    ys = _aligned(y, x.ndim, axes) if y_strides is None else y_strides
    outer, inner, on, rn, (xo, yo), (xr, _) = rows(x.shape, axes, estrides(x), ys)
    return Call("reduce_rows", dtype, *_row_blocks(outer, inner),
                (x, y, outer, inner, *on, *xo, *yo, *rn, *xr, MODES.index(mode)))


def bind_reduce(attrs, inputs, outputs, ws):
    x = inputs[0]
    return [reduce_call(attrs["mode"], x, outputs[0], reduced_axes(attrs["axes"], x.ndim))]


def bind_reduce_like(attrs, inputs, outputs, ws):
    dy, out = inputs[0], outputs[0]
    lead = dy.ndim - out.ndim
    axes = tuple(range(lead)) + tuple(lead + i for i, d in enumerate(out.shape)
                                      if d == 1 and dy.shape[lead + i] != 1)
    return [reduce_call("sum", dy, out, axes, (0,) * lead + estrides(out))]


def bind_reduce_grad(attrs, inputs, outputs, ws):
    dy, x, y = inputs
    dx = outputs[0]
    dtype = check_dtype(dy, x, y, dx)
    axes = reduced_axes(attrs["axes"], x.ndim)
    outer, inner, on, rn, (dyo, yo, xo, go), (_, _, xr, gr) = rows(
        x.shape, axes, _aligned(dy, x.ndim, axes), _aligned(y, x.ndim, axes), estrides(x),
        estrides(dx))
    return [Call("reduce_grad_rows", dtype, grid_1d(outer), (THREADS, 1, 1), (
        dy, y, x, dx, outer, inner, *on, *dyo, *yo, *xo, *go, *rn, *xr, *gr,
        MODES.index(attrs["mode"])))]


def bind_arg_reduce(attrs, inputs, outputs, ws):
    """int64 indices; the input must be float32 or float64 (placement keeps others on the host)."""
    x, y = inputs[0], outputs[0]
    dtype = check_dtype(x)
    if np.dtype(y.dtype) != np.int64:
        raise Unsupported(f"arg_reduce into {y.dtype}")
    axis = attrs["axis"] % x.ndim
    outer, _, on, _, (xo, yo), _ = rows(x.shape, (axis,), estrides(x),
                                        _aligned(y, x.ndim, (axis,)))
    return [Call("arg_rows", dtype, grid_1d(outer), (THREADS, 1, 1), (
        x, y, outer, x.shape[axis], estrides(x)[axis], *on, *xo, *yo,
        int(attrs["mode"] == "min"), int(attrs["select_last_index"])))]


# ---- layer norm ----------------------------------------------------------------------------------
def _contiguous(*params):
    for p in params:
        if p is not None and estrides(p) != tuple(int(np.prod(p.shape[d + 1:]))
                                                  for d in range(p.ndim)):
            raise Unsupported("a layer norm parameter that is not contiguous")


def _ln_stats(attrs, x, axes, ws) -> tuple:
    """The ``ln_stats`` call (mean, sigma and variance per row, doubles in the workspace) and the
    statistics' array."""
    outer, inner, on, rn, (xo,), (xr,) = rows(x.shape, axes, estrides(x))
    stats = ws.view(np.float64)[:3 * outer]
    return Call("ln_stats", check_dtype(x), grid_1d(outer), (THREADS, 1, 1), (
        x, stats, outer, inner, *on, *xo, *rn, *xr, int(attrs["normalize_variance"]),
        int(attrs["eps_inside_sqrt"]), attrs["eps"])), stats


def ln_workspace_bytes(x_shape, attrs) -> int:
    """Bytes of layer norm's per-row statistics (three doubles per row)."""
    axes = reduced_axes(attrs["axes"], len(x_shape))
    return 24 * num_elements([d for i, d in enumerate(x_shape) if i not in axes])


def _ln_rows(attrs, x, g, out, scale, bias, stats, axes, grad: int) -> Call:
    g_ = g if g is not None else x
    outer, inner, on, rn, (xo, go, oo), (xr, gr, orr) = rows(
        x.shape, axes, estrides(x), estrides(g_), estrides(out))
    return Call("ln_rows", check_dtype(x, out, *(a for a in (g, scale, bias) if a is not None)),
                grid_1d(outer), (THREADS, 1, 1), (
                    x, g, out, scale, bias, stats, outer, inner, *on, *xo, *go, *oo, *rn, *xr,
                    *gr, *orr, grad, int(attrs["normalize_variance"]),
                    int(attrs["eps_inside_sqrt"])))


def bind_layer_norm(attrs, inputs, outputs, ws):
    x, out = inputs[0], outputs[0]
    scale, bias = (list(inputs[1:]) + [None, None])[:2]
    _contiguous(scale, bias)
    axes = reduced_axes(attrs["axes"], x.ndim)
    stats_call, stats = _ln_stats(attrs, x, axes, ws)
    return [stats_call, _ln_rows(attrs, x, None, out, scale, bias, stats, axes, 0)]


def bind_layer_norm_grad(attrs, inputs, outputs, ws):
    dy, x = inputs[:2]
    scale = inputs[2] if len(inputs) == 3 else None
    out = outputs[0]
    _contiguous(scale)
    axes = reduced_axes(attrs["axes"], x.ndim)
    stats_call, stats = _ln_stats(attrs, x, axes, ws)
    if attrs["wrt"] == "x":
        return [stats_call, _ln_rows(attrs, x, dy, out, scale, None, stats, axes, 1)]
    _contiguous(out)
    outer, inner, on, rn, (xo, go), (xr, gr) = rows(x.shape, axes, estrides(x), estrides(dy))
    return [stats_call, Call("ln_param_grad", check_dtype(x, dy, out), grid_1d(inner),
                             (THREADS, 1, 1), (x, dy, out, stats, outer, inner, *on, *xo, *go, *rn,
                                           *xr, *gr, int(attrs["wrt"] == "scale")))]


BINDERS = {"reduce": bind_reduce, "reduce_like": bind_reduce_like, "reduce_grad": bind_reduce_grad,
           "arg_reduce": bind_arg_reduce, "layer_norm": bind_layer_norm,
           "layer_norm_grad": bind_layer_norm_grad}
