"""Binders of ``resize`` and ``resize_grad``: every mode is separable (see
:mod:`graphrt.ops.resize`), so each spatial axis is one (out, in) weight matrix, made on the device
by ``resize_weights`` (``kernels/index.cu``) in the workspace, and applied as one batched GEMM per
axis — the matrix for ``resize``, its transpose for ``resize_grad`` — from one workspace buffer
into the other, the last straight into the output where it is contiguous.
"""
from __future__ import annotations

from ....ops.resize import COORDINATE_MODES, NEAREST_MODES
from ..calls import THREADS, Call, check_dtype, copy_call, estrides, grid_1d, num_elements
from ..runtime.gemm import Gemm

MODES = ("nearest", "linear", "cubic")


def _contiguous(shape) -> tuple:
    return tuple(num_elements(shape[d + 1:]) for d in range(len(shape)))


def _axes(attrs, in_spatial, out_spatial) -> list:
    """(n_in, n_out, scale, align_corners length) per spatial axis."""
    scales = attrs["scales"] or tuple(o / i for o, i in zip(out_spatial, in_spatial))
    return [(i, o, s, i * s if attrs["scales"] else o)
            for i, o, s in zip(in_spatial, out_spatial, scales)]


def _shapes(lead, src, dst) -> list:
    """The tensor's shape before the first axis and after each (axis k resized from src to dst)."""
    return [tuple(lead) + tuple(dst[:k]) + tuple(src[k:]) for k in range(len(src) + 1)]


def resize_workspace_bytes(lead, src, dst, itemsize) -> int:
    """The weight matrices and two buffers of the largest intermediate tensor, resizing the
    spatial sizes ``src`` to ``dst``."""
    mats = sum(i * o for i, o in zip(src, dst))
    big = max(num_elements(s) for s in _shapes(lead, src, dst))
    return (mats + 2 * big) * itemsize


def resize_calls(attrs, x, y, ws, transpose: bool) -> list:
    """``y`` = the axis matrices applied to ``x`` (transposed: ``resize_grad``, with ``x`` = dy)."""
    dtype = check_dtype(x, y)
    lead = x.shape[:2]
    src, dst = x.shape[2:], y.shape[2:]
    in_sp, out_sp = (dst, src) if transpose else (src, dst)
    space = ws.view(dtype)
    calls, offset, mats = [], 0, []
    for n_in, n_out, scale, length in _axes(attrs, in_sp, out_sp):
        m = space[offset:offset + n_in * n_out]
        offset += n_in * n_out
        mats.append(m)
        calls.append(Call("resize_weights", dtype, grid_1d(n_out), (THREADS, 1, 1), (
            m, n_in, n_out, float(scale), float(length),
            COORDINATE_MODES.index(attrs["coordinate_transformation_mode"]),
            MODES.index(attrs["mode"]), NEAREST_MODES.index(attrs["nearest_mode"]),
            float(attrs["cubic_coeff_a"]), int(attrs["exclude_outside"]))))
    shapes = _shapes(lead, src, dst)
    big = max(num_elements(s) for s in shapes)
    buffers = [space[offset:offset + big], space[offset + big:offset + 2 * big]]
    cur = x
    if estrides(x) != _contiguous(x.shape):
        calls.append(copy_call(x, buffers[1][:num_elements(x.shape)].reshape(x.shape)))
        cur = buffers[1]
    for k, m in enumerate(mats):
        last = k == len(mats) - 1
        shape = shapes[k + 1]
        out = y if last and estrides(y) == _contiguous(y.shape) else buffers[k % 2]
        a, b = num_elements(shape[:2 + k]), num_elements(shape[3 + k:])
        n_from, n_to = src[k], dst[k]
        ms = (1, n_to) if transpose else (n_from, 1)  # M is (rows: resized, columns: input)
        calls.append(Gemm(dtype, a, n_to, b, n_from, m, (0, *ms), cur, (n_from * b, b, 1), out,
                          (n_to * b, b, 1)))
        cur = out
    if cur is not y:
        calls.append(copy_call(cur[:num_elements(y.shape)].reshape(y.shape), y))
    return calls


def bind_resize(attrs, inputs, outputs, ws):
    return resize_calls(attrs, inputs[0], outputs[0], ws, transpose=False)


def bind_resize_grad(attrs, inputs, outputs, ws):
    return resize_calls(attrs, inputs[0], outputs[0], ws, transpose=True)


BINDERS = {"resize": bind_resize, "resize_grad": bind_resize_grad}
