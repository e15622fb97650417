"""Slicing, repeating and gathering: ``slice``, ``tile``, ``expand``, ``embedding``.

- ``slice(x)``: ``x[starts:ends]`` along ``axes`` (step 1; negative positions count from the end
  and positions are clamped to the axis, as ONNX Slice; Caffe Crop and Slice, Keras Cropping2D).
  The batch axis of a batched tensor is not sliced. Its gradient pads dy back with zeros.
- ``tile(x)``: x repeated ``repeats[i]`` times along axis i (numpy ``tile``; ONNX Tile, Caffe
  Tile); the batch axis repeats once. Its gradient sums the copies.
- ``expand(x)``: x broadcast to ``shape`` (numpy's rules both ways, as ONNX Expand; -1 keeps the
  input's size, which is how the batch axis is written). Its gradient is ``reduce_like``.
- ``embedding(indices, weight)``: ``weight[indices]``, shape indices.shape + (D,) for a (rows, D)
  weight (Caffe Embed, Keras Embedding); float indices are truncated to integers; an index outside
  [0, rows) is an error at run time. ``embedding_grad(dy, indices)`` (with ``rows``) scatter-adds
  dy into a zero (rows, D) gradient of the weight.
"""
from __future__ import annotations

import numpy as np

from ..ir import TensorSpec, spec_error
from ..ir.errors import InputError, UnsupportedError
from .registry import (Attr, OpDef, OpPattern, elementwise_cost, float_dtype, ints, positive,
                       register, to_int)


def _move_cost(attrs, ins, outs, batch):
    return 0, sum(s.nbytes(batch) for s in list(ins) + list(outs))


# ---- slice --------------------------------------------------------------------------------------
def slice_bounds(attrs, shape) -> list:
    """[(start, stop)] per axis of ``shape`` (the batch axis, None, whole)."""
    bounds = [(0, d) for d in shape]
    for start, end, axis in zip(attrs["starts"], attrs["ends"], attrs["axes"]):
        n = shape[axis]
        lo, hi = (start + n if start < 0 else start), (end + n if end < 0 else end)
        bounds[axis] = (min(max(lo, 0), n), min(max(hi, 0), n))
    return bounds


def _slice_infer(attrs, ins, node):
    x = ins[0]
    rank = len(x.shape)
    if not len(attrs["starts"]) == len(attrs["ends"]) == len(attrs["axes"]):
        raise spec_error(node, "slice needs as many starts and ends as axes")
    axes = [a % rank if -rank <= a < rank else None for a in attrs["axes"]]
    if None in axes or len(set(axes)) != len(axes) or (x.batched and 0 in axes):
        raise spec_error(node, f"slice axes {attrs['axes']} are not distinct axes of {x} (the "
                               "batch axis cannot be sliced)")
    bounds = slice_bounds({**attrs, "axes": axes}, x.shape)
    shape = tuple(d if d is None else hi - lo for d, (lo, hi) in zip(x.shape, bounds))
    if any(d is not None and d < 1 for d in shape):
        raise spec_error(node, f"slice {attrs['starts']}:{attrs['ends']} on axes {attrs['axes']} "
                               f"of {x} is empty")
    return [TensorSpec(shape, x.dtype)]


def _axes(attrs, rank):
    return {**attrs, "axes": tuple(a % rank for a in attrs["axes"])}


def _slice(attrs, inputs, outputs):
    x = inputs[0]
    bounds = slice_bounds(_axes(attrs, x.ndim), x.shape)
    outputs[0][...] = x[tuple(slice(lo, hi) for lo, hi in bounds)]


def _slice_backward(ctx, node, dys):
    if not ctx.wants(0) or dys[0] is None:
        return [None]
    shape = ctx.spec(node.inputs[0]).shape
    bounds = slice_bounds(_axes(node.attrs, len(shape)), shape)
    begins = [0 if d is None else lo for d, (lo, hi) in zip(shape, bounds)]
    ends = [0 if d is None else d - hi for d, (lo, hi) in zip(shape, bounds)]
    return [ctx.add("pad", [dys[0]], {"pads": begins + ends})]


SLICE = register(OpDef(
    name="slice", family="index", arity=(1, 1),
    attrs={"starts": Attr(ints), "ends": Attr(ints), "axes": Attr(ints)}, infer=_slice_infer,
    forward=_slice, cost=_move_cost, pattern=OpPattern.INJECTIVE, backward=_slice_backward,
    doc=__doc__))


# ---- tile ---------------------------------------------------------------------------------------
def _tile_infer(attrs, ins, node):
    x, reps = ins[0], attrs["repeats"]
    if len(reps) != len(x.shape) or (x.batched and reps[0] != 1):
        raise spec_error(node, f"tile repeats {reps} need one count per axis of {x} (1 for the "
                               "batch axis)")
    return [TensorSpec(tuple(None if d is None else d * r for d, r in zip(x.shape, reps)),
                       x.dtype)]


def _tile(attrs, inputs, outputs):
    outputs[0][...] = np.tile(inputs[0], attrs["repeats"])


def _tile_backward(ctx, node, dys):
    """dy viewed as (N, r1, d1, r2, d2, ...), summed over the repeat axes (an axis repeated once
    stays one axis, which keeps the view's rank low: the cuda kernels take up to 6)."""
    if not ctx.wants(0) or dys[0] is None:
        return [None]
    x = ctx.spec(node.inputs[0])
    reps = node.attrs["repeats"]
    if all(r == 1 for r in reps):
        return [dys[0]]
    if reps[0] != 1:  # only an unbatched tensor repeats its first axis; reshape keeps that axis
        raise UnsupportedError(f"the gradient of tile {reps} along the first axis",
                               node=node.name, op=node.op)
    split, axes = [], []
    for r, d in zip(reps[1:], x.shape[1:]):
        if r > 1:
            axes.append(1 + len(split))
            split.append(r)
        split.append(d)
    y = ctx.add("reshape", [dys[0]], {"shape": split})
    return [ctx.add("reduce", [y], {"mode": "sum", "keepdims": False, "axes": tuple(axes)})]


TILE = register(OpDef(
    name="tile", family="index", arity=(1, 1), attrs={"repeats": Attr(positive(ints))},
    infer=_tile_infer, forward=_tile, cost=_move_cost, pattern=OpPattern.INJECTIVE,
    backward=_tile_backward, doc=__doc__))


# ---- expand -------------------------------------------------------------------------------------
def _expand_infer(attrs, ins, node):
    x, target = ins[0], list(attrs["shape"])
    rank = max(len(x.shape), len(target))
    xs = [1] * (rank - len(x.shape)) + list(x.shape)
    ts = [1] * (rank - len(target)) + target
    out = []
    for a, t in zip(xs, ts):
        if t == -1 or t == 1 or a == t:
            out.append(a)
        elif a == 1:
            out.append(t)
        else:
            raise spec_error(node, f"expand: {x} does not broadcast to {tuple(attrs['shape'])}")
    if x.batched and len(target) > len(x.shape):
        raise spec_error(node, f"expand cannot add axes in front of the batch axis of {x}")
    return [TensorSpec(tuple(out), x.dtype)]


def _expand(attrs, inputs, outputs):
    outputs[0][...] = np.broadcast_to(inputs[0].reshape((1,) * (outputs[0].ndim - inputs[0].ndim)
                                                        + inputs[0].shape), outputs[0].shape)


def _expand_backward(ctx, node, dys):
    if not ctx.wants(0) or dys[0] is None:
        return [None]
    same = ctx.spec(node.inputs[0]).shape == ctx.spec(node.outputs[0]).shape
    return [dys[0] if same else ctx.add("reduce_like", [dys[0], node.inputs[0]])]


EXPAND = register(OpDef(
    name="expand", family="index", arity=(1, 1), attrs={"shape": Attr(ints)},
    infer=_expand_infer, forward=_expand, cost=_move_cost, pattern=OpPattern.BROADCAST,
    backward=_expand_backward, doc=__doc__))


# ---- embedding ----------------------------------------------------------------------------------
def _embedding_infer(attrs, ins, node):
    idx, w = ins
    dtype = float_dtype(w, node, "weight")
    if len(w.shape) != 2 or w.batched:
        raise spec_error(node, f"embedding needs a (rows, D) weight, got {w}")
    return [TensorSpec(tuple(idx.shape) + (w.shape[1],), dtype)]


def rows_of(indices: np.ndarray, rows: int) -> np.ndarray:
    """``indices`` as int64 row numbers; InputError when one is outside [0, rows)."""
    idx = np.asarray(indices).astype(np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= rows):
        raise InputError(f"embedding index {int(idx.min() if idx.min() < 0 else idx.max())} is "
                         f"outside [0, {rows})")
    return idx


def _embedding(attrs, inputs, outputs):
    idx, w = inputs
    np.take(w, rows_of(idx, w.shape[0]), axis=0, out=outputs[0])


def _embedding_backward(ctx, node, dys):
    if not ctx.wants(1) or dys[0] is None:
        return [None, None]
    rows = ctx.spec(node.inputs[1]).shape[0]
    return [None, ctx.add("embedding_grad", [dys[0], node.inputs[0]], {"rows": rows})]


EMBEDDING = register(OpDef(
    name="embedding", family="index", arity=(2, 2), attrs={}, infer=_embedding_infer,
    forward=_embedding, cost=_move_cost, pattern=OpPattern.INJECTIVE,
    backward=_embedding_backward, doc=__doc__))


def _embedding_grad_infer(attrs, ins, node):
    dy, idx = ins
    if tuple(dy.shape[:-1]) != tuple(idx.shape):
        raise spec_error(node, f"embedding_grad: dy {dy} does not match indices {idx}")
    return [TensorSpec((attrs["rows"], dy.shape[-1]), float_dtype(dy, node, "dy"))]


def _embedding_grad(attrs, inputs, outputs):
    dy, idx = inputs
    out = outputs[0]
    acc = np.zeros(out.shape, np.float64)
    np.add.at(acc, rows_of(idx, attrs["rows"]).reshape(-1), dy.reshape(-1, dy.shape[-1]))
    np.copyto(out, acc, casting="unsafe")


EMBEDDING_GRAD = register(OpDef(
    name="embedding_grad", family="grad", arity=(2, 2), attrs={"rows": Attr(positive(to_int))},
    infer=_embedding_grad_infer, forward=_embedding_grad, cost=elementwise_cost(1),
    pattern=OpPattern.OPAQUE, doc=__doc__))
