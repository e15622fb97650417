"""Binders of the GEMM adjoints: ``conv2d_transpose`` (the data gradient of the convolution it
transposes: ``conv2d_grad_input``'s GEMMs + ``col2im`` with x in the role of dy, then the bias
added by ``ew_nary``) and ``matmul_grad`` (one GEMM per matrix of dy's stack, accumulated with
beta = 1 into the operand's matrix where the operand was broadcast over the stack).
"""
from __future__ import annotations

import itertools

from ..calls import at_offset, check_dtype, estrides
from ..runtime.gemm import Gemm
from .elementwise import bind_nary
from .grad import bind_conv2d_grad_input, conv_grad_workspace_bytes

_add = bind_nary("add")


def bind_conv2d_transpose(attrs, inputs, outputs, ws):
    x, w = inputs[:2]
    out = outputs[0]
    calls = bind_conv2d_grad_input(attrs, [x, w], [out], ws)
    if len(inputs) == 3:
        calls += _add({}, [out, inputs[2].reshape(1, -1, 1, 1)], [out], ws)
    return calls


def conv2d_transpose_workspace_bytes(x_shape, w_shape, out_shape, itemsize) -> int:
    """conv2d_grad_input's columns for this transposed convolution."""
    n, c, h, wd = x_shape
    _, og, kh, kw = w_shape
    return conv_grad_workspace_bytes("conv2d_grad_input", n, out_shape[1], c, kh, kw, h, wd,
                                     itemsize)


def bind_matmul_grad(attrs, inputs, outputs, ws):
    """da = dy @ b^T (operand 0) or db = a^T @ dy (operand 1), per matrix of dy's stack, summed
    over the stack axes the operand lacks or has as 1 (numpy's 1-D promotions undone)."""
    a, b, dy = inputs
    out = outputs[0]
    dtype = check_dtype(a, b, dy, out)
    target = out
    if a.ndim == 1:
        a, dy = a[None, :], dy[..., None, :]
        target = out[None, :] if attrs["operand"] == 0 else target
    if b.ndim == 1:
        b, dy = b[:, None], dy[..., :, None]
        target = out[:, None] if attrs["operand"] == 1 else target
    stack = dy.shape[:-2]

    def offsets(v):
        """Element offset of ``v``'s matrix at each stack index (0 along axes it broadcasts)."""
        lead = len(stack) - (v.ndim - 2)
        vs = estrides(v)
        s = [0] * lead + [vs[d] if v.shape[d] != 1 else 0 for d in range(v.ndim - 2)]
        return lambda idx: sum(i * k for i, k in zip(idx, s))

    oa, ob, od, oo = offsets(a), offsets(b), offsets(dy), offsets(target)
    m, n = dy.shape[-2:]
    k = a.shape[-1]
    (ar, ac), (br, bc), (dr, dc), rc = (estrides(v)[-2:] for v in (a, b, dy, target))
    calls, written = [], set()
    for idx in itertools.product(*(range(s) for s in stack)):
        dst = oo(idx)
        beta = float(dst in written)
        written.add(dst)
        g = at_offset(dy, od(idx))
        if attrs["operand"] == 0:  # (m, k) = (m, n) @ (n, k)
            calls.append(Gemm(dtype, 1, m, k, n, g, (0, dr, dc), at_offset(b, ob(idx)),
                              (0, bc, br), at_offset(target, dst), (0, *rc), beta=beta))
        else:  # (k, n) = (k, m) @ (m, n)
            calls.append(Gemm(dtype, 1, k, n, m, at_offset(a, oa(idx)), (0, ac, ar), g,
                              (0, dr, dc), at_offset(target, dst), (0, *rc), beta=beta))
    return calls


BINDERS = {"conv2d_transpose": bind_conv2d_transpose, "matmul_grad": bind_matmul_grad}
