"""Injective ops that move data without arithmetic: ``concat``, ``flatten``, ``reshape``,
``transpose`` and ``zero_pad``.

- ``concat``: along ``axis`` (default 1); every other dimension must match. The batch axis 0 of
  batched tensors cannot be concatenated.
- ``flatten``: (N, d1, d2, ...) -> (N, d1*d2*...) for ``axis`` 1 (Caffe Flatten, Keras Flatten on
  NCHW, Torch View(-1)).
- ``reshape``: ``shape`` gives the dimensions after the batch; one may be -1 (inferred).
- ``transpose``: ``perm`` as numpy's; the batch dimension stays first.
- ``alias`` (concat, split): the memory plan makes the concat's inputs (the split's outputs) views
  of slices of its output (input), so the op costs nothing when compiled.
- ``split``: the inverse of concat: ``sizes`` along ``axis``, one output per size (ONNX ``Split``,
  concat's gradient; with ``alias`` the memory plan makes its outputs views of the input). Merged
  sibling convolutions are not a conv and a split but one ``conv2d_split`` (:mod:`.conv`), whose
  outputs are tensors of their own.
- ``zero_pad``: ``pads`` (top, bottom, left, right) on the last two axes; negative pads crop
  (Torch SpatialZeroPadding).
"""
from __future__ import annotations

import numpy as np

from ..ir import TensorSpec, spec_error
from .registry import Attr, OpDef, OpPattern, ints, pads4, register, to_bool, to_int


def _concat_infer(attrs, ins, node):
    first = ins[0]
    rank = len(first.shape)
    axis = attrs["axis"] + rank if attrs["axis"] < 0 else attrs["axis"]
    if not 0 <= axis < rank or (axis == 0 and first.batched):
        raise spec_error(node, f"concat axis {attrs['axis']} is not valid for inputs of shape {first}")
    total = 0
    for i, s in enumerate(ins):
        same = len(s.shape) == rank and all(a == b for d, (a, b) in enumerate(zip(s.shape, first.shape))
                                            if d != axis)
        if not same or s.dtype != first.dtype:
            raise spec_error(node, f"concat along axis {axis}: input {i} has shape {s} {s.dtype}, "
                                   f"which does not match input 0's {first} {first.dtype} off that axis")
        total += s.shape[axis]
    shape = list(first.shape)
    shape[axis] = total
    return [TensorSpec(tuple(shape), first.dtype)]


def _concat(attrs, inputs, outputs):
    np.concatenate(inputs, axis=attrs["axis"], out=outputs[0])


def _concat_backward(ctx, node, dys):
    """The inputs' gradients are the slices of dy: one split."""
    if len(node.inputs) == 1:
        return [dys[0] if ctx.wants(0) else None]
    specs = [ctx.spec(t) for t in node.inputs]
    axis = node.attrs["axis"] % len(specs[0].shape)
    parts = ctx.add("split", [dys[0]], {"axis": axis, "sizes": [s.shape[axis] for s in specs]})
    return [p if ctx.wants(i) else None for i, p in enumerate(parts)]


def _flatten_infer(attrs, ins, node):
    x, axis = ins[0], attrs["axis"]
    if not 1 <= axis <= len(x.shape):
        raise spec_error(node, f"flatten axis {axis} is not valid for input shape {x}")
    rest = int(np.prod(x.shape[axis:], dtype=np.int64))
    return [TensorSpec(tuple(x.shape[:axis]) + (rest,), x.dtype)]


def _reshape_to(attrs, inputs, outputs):
    outputs[0][...] = inputs[0].reshape(outputs[0].shape)


def _reshape_backward(ctx, node, dys):
    """flatten / reshape: dy reshaped back to the input's shape (the first axis never changes)."""
    if not ctx.wants(0):
        return [None]
    return [ctx.add("reshape", [dys[0]], {"shape": ctx.spec(node.inputs[0]).shape[1:]})]


def _reshape_infer(attrs, ins, node):
    x, shape = ins[0], list(attrs["shape"])
    lead = x.shape[:1]
    have = int(np.prod(x.shape[1:], dtype=np.int64))
    if shape.count(-1) > 1 or any(d < -1 or d == 0 for d in shape):
        raise spec_error(node, f"reshape target {tuple(shape)} may hold one -1 and positive sizes")
    known = int(np.prod([d for d in shape if d != -1], dtype=np.int64))
    if -1 in shape:
        if known == 0 or have % known:
            raise spec_error(node, f"cannot reshape {x} to (N, {', '.join(map(str, shape))})")
        shape[shape.index(-1)] = have // known
    elif known != have:
        raise spec_error(node, f"cannot reshape {x} ({have} values per item) to "
                               f"(N, {', '.join(map(str, shape))}) ({known} values per item)")
    return [TensorSpec(tuple(lead) + tuple(shape), x.dtype)]


def _transpose_infer(attrs, ins, node):
    x, perm = ins[0], attrs["perm"]
    if sorted(perm) != list(range(len(x.shape))) or (x.batched and perm[0] != 0):
        raise spec_error(node, f"transpose perm {perm} is not a permutation of {x}'s axes keeping "
                               "the batch first")
    return [TensorSpec(tuple(x.shape[p] for p in perm), x.dtype)]


def _transpose(attrs, inputs, outputs):
    outputs[0][...] = inputs[0].transpose(attrs["perm"])


def _transpose_backward(ctx, node, dys):
    """dy transposed by the inverse permutation."""
    if not ctx.wants(0):
        return [None]
    inverse = [int(i) for i in np.argsort(node.attrs["perm"])]
    return [ctx.add("transpose", [dys[0]], {"perm": inverse})]


def _pad_infer(attrs, ins, node):
    x = ins[0]
    if len(x.shape) < 2 or None in x.shape[-2:]:
        raise spec_error(node, f"zero_pad expects at least 2-D input whose last two axes are not "
                               f"the batch, got {x}")
    t, b, l, r = attrs["pads"]
    h, w = x.shape[-2] + t + b, x.shape[-1] + l + r
    if h < 1 or w < 1:
        raise spec_error(node, f"zero_pad {attrs['pads']} crops all of input {x}")
    return [TensorSpec(tuple(x.shape[:-2]) + (h, w), x.dtype)]


def _zero_pad(attrs, inputs, outputs):
    x, out = inputs[0], outputs[0]
    t, b, l, r = attrs["pads"]
    h, w = x.shape[-2:]
    out[...] = 0
    # clamp the stops: a crop deeper than the input on one side must not wrap to a negative index
    src = x[..., max(0, -t):max(0, h - max(0, -b)), max(0, -l):max(0, w - max(0, -r))]
    out[..., max(0, t):max(0, t) + src.shape[-2], max(0, l):max(0, l) + src.shape[-1]] = src


def _zero_pad_backward(ctx, node, dys):
    """Padding's gradient crops and cropping's pads: zero_pad with the pads negated."""
    if not ctx.wants(0):
        return [None]
    return [ctx.add("zero_pad", [dys[0]], {"pads": [-p for p in node.attrs["pads"]]})]


def _split_infer(attrs, ins, node):
    x, axis, sizes = ins[0], attrs["axis"], attrs["sizes"]
    if not 1 <= axis < len(x.shape) or sum(sizes) != x.shape[axis] or min(sizes) < 1:
        raise spec_error(node, f"split sizes {sizes} along axis {axis} do not add up to input {x}")
    return [TensorSpec(x.shape[:axis] + (n,) + x.shape[axis + 1:], x.dtype) for n in sizes]


def _split(attrs, inputs, outputs):
    start = 0
    for out in outputs:
        n = out.shape[attrs["axis"]]
        out[...] = np.take(inputs[0], range(start, start + n), axis=attrs["axis"])
        start += n


def _split_backward(ctx, node, dys):
    """dx = concat of the outputs' gradients, zeros where none flows."""
    if not ctx.wants(0):
        return [None]
    parts = [dy if dy is not None else ctx.add("zeros_like", [out])
             for dy, out in zip(dys, node.outputs)]
    if len(parts) == 1:
        return parts
    return [ctx.add("concat", parts, {"axis": node.attrs["axis"]})]


def _move_cost(attrs, ins, outs, batch):
    return 0, sum(s.nbytes(batch) for s in list(ins) + list(outs))


def _shape_op(name, infer, forward, attrs, backward, arity=(1, 1)):
    return register(OpDef(name=name, family="shape", arity=arity, attrs=attrs, infer=infer,
                          forward=forward, cost=_move_cost, pattern=OpPattern.INJECTIVE,
                          backward=backward, doc=__doc__))


CONCAT = _shape_op("concat", _concat_infer, _concat, {"axis": Attr(to_int, 1),
                                                     "alias": Attr(to_bool, False)},
                   _concat_backward, arity=(1, None))
FLATTEN = _shape_op("flatten", _flatten_infer, _reshape_to, {"axis": Attr(to_int, 1)},
                    _reshape_backward)
RESHAPE = _shape_op("reshape", _reshape_infer, _reshape_to, {"shape": Attr(ints)},
                    _reshape_backward)
TRANSPOSE = _shape_op("transpose", _transpose_infer, _transpose, {"perm": Attr(ints)},
                      _transpose_backward)
SPLIT = register(OpDef(name="split", family="shape", arity=(1, 1),
                       attrs={"axis": Attr(to_int, 1), "sizes": Attr(ints), "alias": Attr(to_bool, False)},
                       infer=_split_infer,
                       forward=_split, cost=_move_cost, pattern=OpPattern.INJECTIVE,
                       outputs=lambda attrs: len(attrs["sizes"]), backward=_split_backward,
                       doc=__doc__))
ZERO_PAD = _shape_op("zero_pad", _pad_infer, _zero_pad, {"pads": Attr(pads4)}, _zero_pad_backward)
