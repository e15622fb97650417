"""General linear algebra and padding: ``matmul`` and ``pad`` (what ONNX MatMul and Pad need beyond
``dense`` and ``zero_pad``).

- ``matmul``: numpy's ``matmul``: the last two axes multiply as matrices and the leading (stack)
  axes broadcast; a 1-D left operand is a row vector, a 1-D right operand a column vector, and
  their unit axis is dropped from the result. The symbolic batch is never contracted: a batched
  left operand of rank 2 has it as its rows, a batched operand of rank 3 or more as its first stack
  axis, and it must be the result's first axis.
- ``pad``: padding of every axis. ``pads`` = (begin_0, ..., begin_{r-1}, end_0, ...,
  end_{r-1}) as in ONNX Pad; negative values crop (first); ``mode`` "constant" fills the new
  elements with ``value``, "reflect" mirrors the input without repeating its edge, "edge" repeats
  the edge, "wrap" continues periodically (numpy's pad modes, ONNX Pad's). The batch axis of a
  batched input is neither padded nor cropped.
- ``pad_grad(dy)`` (with ``pads``, ``mode`` and ``input_shape``, the input's shape after its
  batch): the gradient of a non-constant ``pad``: each output element's gradient added to the input
  element it copies.
"""
from __future__ import annotations

import numpy as np

from ..ir import TensorSpec, spec_error
from .registry import Attr, OpDef, OpPattern, choice, float_dtype, ints, register, to_float


def _dim(d) -> str:
    return "N" if d is None else str(d)


def _stack_broadcast(a: list, b: list, node) -> list:
    rank = max(len(a), len(b))
    a, b = [1] * (rank - len(a)) + a, [1] * (rank - len(b)) + b
    out = []
    for x, y in zip(a, b):
        if x != y and 1 not in (x, y):
            raise spec_error(node, f"matmul stack axes {_dim(x)} and {_dim(y)} do not broadcast")
        out.append(x if y == 1 else y)
    return out


def _matmul_infer(attrs, ins, node):
    a, b = ins
    dtype = float_dtype(a, node)
    if b.dtype != dtype:
        raise spec_error(node, f"matmul operands must share a dtype, got {a.dtype} and {b.dtype}")
    if not a.shape or not b.shape:
        raise spec_error(node, f"matmul needs operands of rank 1 or more, got {a} and {b}")
    sa, sb = list(a.shape), list(b.shape)
    row, col = len(sa) == 1, len(sb) == 1
    sa, sb = ([1] + sa if row else sa), (sb + [1] if col else sb)
    (m, k), (k2, p) = sa[-2:], sb[-2:]
    if k is None or k2 is None or p is None:
        raise spec_error(node, f"matmul of {a} and {b} would contract or transpose the batch")
    if k != k2:
        raise spec_error(node, f"matmul of {a} and {b}: {k} columns against {k2} rows")
    out = _stack_broadcast(sa[:-2], sb[:-2], node) + ([] if row else [m]) + ([] if col else [p])
    batched = a.batched or b.batched
    if None in out[1:] or (batched and (not out or out[0] is not None)):
        raise spec_error(node, f"matmul of {a} and {b} does not keep the batch as its first axis")
    return [TensorSpec(tuple(out), dtype)]


def _matmul(attrs, inputs, outputs):
    np.matmul(inputs[0], inputs[1], out=outputs[0])


def _matmul_cost(attrs, ins, outs, batch):
    k = ins[0].concrete(batch)[-1]
    n_out = int(np.prod(outs[0].concrete(batch), dtype=np.int64))
    return 2 * n_out * k, sum(s.nbytes(batch) for s in list(ins) + list(outs))


def _matmul_backward(ctx, node, dys):
    """da = dy @ b^T, db = a^T @ dy, each summed over the stack axes it was broadcast along."""
    return [ctx.add("matmul_grad", [*node.inputs, dys[0]], {"operand": i}) if ctx.wants(i)
            else None for i in range(2)]


MATMUL = register(OpDef(
    name="matmul", family="math", arity=(2, 2), attrs={}, infer=_matmul_infer, forward=_matmul,
    cost=_matmul_cost, pattern=OpPattern.OUT_ELEMWISE_FUSABLE, backward=_matmul_backward,
    doc=__doc__))


def _pad_infer(attrs, ins, node):
    x, pads = ins[0], attrs["pads"]
    rank = len(x.shape)
    if len(pads) != 2 * rank:
        raise spec_error(node, f"pad needs {2 * rank} pads (begins, then ends) for input {x}, "
                               f"got {len(pads)}")
    if x.batched and (pads[0] or pads[rank]):
        raise spec_error(node, f"pad cannot pad or crop the batch axis of {x} (pads {pads})")
    shape = [d if d is None else d + lo + hi for d, lo, hi in zip(x.shape, pads[:rank], pads[rank:])]
    if any(d is not None and d < 1 for d in shape):
        raise spec_error(node, f"pads {pads} crop all of an axis of input {x}")
    return [TensorSpec(tuple(shape), x.dtype)]


def source_index(n: int, lo: int, hi: int, mode: str) -> np.ndarray:
    """For one axis of length ``n`` padded by (lo, hi) >= 0: the input index every output index
    copies (numpy's reflect, edge or wrap)."""
    return np.pad(np.arange(n), (lo, hi), mode={"reflect": "reflect", "edge": "edge",
                                               "wrap": "wrap"}[mode])


def _cropped(x, pads):
    """x cropped by the negative pads, and the remaining (non-negative) pads."""
    rank = x.ndim
    index = tuple(slice(max(0, -lo), n - max(0, -hi)) for n, lo, hi in
                  zip(x.shape, pads[:rank], pads[rank:]))
    return x[index], [max(0, p) for p in pads]


def _pad(attrs, inputs, outputs):
    x, out = inputs[0], outputs[0]
    rank, pads = x.ndim, attrs["pads"]
    if attrs["mode"] != "constant":
        xc, p = _cropped(x, pads)
        for axis in range(rank):
            xc = np.take(xc, source_index(xc.shape[axis], p[axis], p[axis + rank], attrs["mode"]),
                         axis=axis)
        np.copyto(out, xc)
        return
    out.fill(attrs["value"])
    src, dst = [], []
    for n, lo, hi in zip(x.shape, pads[:rank], pads[rank:]):
        start, stop = max(0, -lo), n - max(0, -hi)
        src.append(slice(start, max(start, stop)))
        dst.append(slice(max(0, lo), max(0, lo) + max(0, stop - start)))
    out[tuple(dst)] = x[tuple(src)]


def _pad_cost(attrs, ins, outs, batch):
    return 0, ins[0].nbytes(batch) + outs[0].nbytes(batch)


def _pad_backward(ctx, node, dys):
    """Constant padding's gradient crops and cropping's pads: pad with the pads negated (value 0);
    the other modes add the copies back (pad_grad)."""
    if not ctx.wants(0) or dys[0] is None:
        return [None]
    if node.attrs["mode"] != "constant":
        shape = ctx.spec(node.inputs[0]).shape
        return [ctx.add("pad_grad", [dys[0]], {"pads": node.attrs["pads"], "mode": node.attrs["mode"],
                                               "input_shape": shape[1:]})]
    return [ctx.add("pad", [dys[0]], {"pads": [-p for p in node.attrs["pads"]]})]


def _pad_modes_infer(attrs, ins, node):
    if attrs["mode"] != "constant":
        rank = len(ins[0].shape)
        for d, lo, hi in zip(ins[0].shape, attrs["pads"][:rank], attrs["pads"][rank:]):
            d = None if d is None else d - max(0, -lo) - max(0, -hi)  # after cropping
            if d is not None and attrs["mode"] == "reflect" and max(lo, hi) >= d:
                raise spec_error(node, f"reflect padding {attrs['pads']} needs pads smaller than "
                                       f"the axis of input {ins[0]}")
    return _pad_infer(attrs, ins, node)


PAD = register(OpDef(
    name="pad", family="math", arity=(1, 1),
    attrs={"pads": Attr(ints), "value": Attr(to_float, 0.0),
           "mode": Attr(choice("constant", "reflect", "edge", "wrap"), "constant")},
    infer=_pad_modes_infer, forward=_pad, cost=_pad_cost, pattern=OpPattern.INJECTIVE,
    backward=_pad_backward, doc=__doc__))


def _pad_grad_infer(attrs, ins, node):
    dy = ins[0]
    shape = (dy.shape[0],) + tuple(attrs["input_shape"])
    want = _pad_infer(attrs, [TensorSpec(shape, dy.dtype)], node)[0]
    if want.shape != dy.shape:
        raise spec_error(node, f"pad_grad: dy {dy} is not the padding of {shape}")
    return [TensorSpec(shape, float_dtype(dy, node, "dy"))]


def _pad_grad(attrs, inputs, outputs):
    dy, out = inputs[0], outputs[0]
    rank, pads = dy.ndim, attrs["pads"]
    g = np.asarray(dy, np.float64)
    _, p = _cropped(np.empty(out.shape, np.int8), pads)
    inner = [n - max(0, -lo) - max(0, -hi) for n, lo, hi in zip(out.shape, pads[:rank], pads[rank:])]
    for axis in range(rank):  # per axis, add every output slice to the input index it copies
        idx = source_index(inner[axis], p[axis], p[axis + rank], attrs["mode"])
        acc = np.zeros(g.shape[:axis] + (inner[axis],) + g.shape[axis + 1:])
        np.add.at(acc, (slice(None),) * axis + (idx,), g)
        g = acc
    out[...] = 0
    out[tuple(slice(max(0, -lo), n - max(0, -hi)) for n, lo, hi in
              zip(out.shape, pads[:rank], pads[rank:]))] = g


PAD_GRAD = register(OpDef(
    name="pad_grad", family="grad", arity=(1, 1),
    attrs={"pads": Attr(ints), "mode": Attr(choice("reflect", "edge", "wrap")),
           "input_shape": Attr(ints)},
    infer=_pad_grad_infer, forward=_pad_grad, cost=_pad_cost, pattern=OpPattern.INJECTIVE,
    doc=__doc__))
