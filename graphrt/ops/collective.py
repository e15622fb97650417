"""Collectives: ``all_reduce`` over the ranks of a process group (data-parallel training).

``all_reduce(x_1, ..., x_k) -> (bucket, y_1, ..., y_k)`` (``count`` = k): the inputs (tensors of
one float dtype and fixed shapes: gradients, per-channel statistics — no batch axis) are laid end
to end in ``bucket`` (1-D, their total size), the bucket is reduced across the group's ranks in one call —
``op`` ``"mean"`` (the average, as data-parallel SGD wants) or ``"sum"`` — and ``y_i`` is ``x_i``'s
part of the reduced bucket. The memory plan makes every ``x_i`` and ``y_i`` a view of its range of
``bucket`` (one arena range, written straight by the producers: no packing copy) and the reduction
runs in place on it; where it could not (a graph run by the reference executor), the forward copies.

The reduction itself is the communicator registered for ``group`` with :func:`set_communicator`
(``graphrt.distributed`` registers torch.distributed's); a process with none is a group of one,
where both reductions are the identity. The VJP of ``all_reduce`` is ``all_reduce`` of the output
gradients with the same ``op``: each rank's loss is its own shard's, and the gradient of a value
every rank shares is the reduction of what each rank's backward gives it.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np

from ..ir import TensorSpec, spec_error
from ..ir.errors import GraphrtError
from .registry import Attr, OpDef, OpPattern, choice, float_dtype, positive, register, to_int, to_str


class CollectiveError(GraphrtError):
    """A collective refused its buffer (not contiguous) or its process group failed."""


class Communicator(Protocol):
    world: int  # the number of ranks

    def all_reduce(self, bucket: np.ndarray, op: str) -> None:
        """Reduce the contiguous 1-D ``bucket`` across the ranks, in place."""


COMMUNICATORS: dict[str, Communicator] = {}


def set_communicator(group: str, communicator: Communicator | None) -> None:
    """Route the ``all_reduce`` nodes of ``group`` to ``communicator`` (None: a group of one)."""
    if communicator is None:
        COMMUNICATORS.pop(group, None)
    else:
        COMMUNICATORS[group] = communicator


def group_size(group: str) -> int:
    """The number of ranks in ``group`` ("" or a group without communicator: 1)."""
    comm = COMMUNICATORS.get(group) if group else None
    return getattr(comm, "world", 1) if comm is not None else 1


def group_reduce(group: str, values: np.ndarray, op: str) -> np.ndarray:
    """``values`` (a fresh contiguous array) reduced over ``group`` in place ("": not reduced);
    for ops whose kernels reduce a few statistics themselves (synchronized batch norm)."""
    comm = COMMUNICATORS.get(group) if group else None
    if comm is not None:
        comm.all_reduce(values, op)
    return values


def _infer(attrs, ins, node):
    dtype = float_dtype(ins[0], node)
    if len(ins) != attrs["count"]:
        raise spec_error(node, f"all_reduce has count {attrs['count']} but {len(ins)} inputs")
    total = 0
    for i, s in enumerate(ins):
        if s.dtype != dtype or any(d is None for d in s.shape):
            raise spec_error(node, f"all_reduce input {i} is {s}: every input must be {dtype} with a "
                                   "fixed shape (no batch axis)")
        total += int(np.prod(s.shape, dtype=np.int64))
    return [TensorSpec((total,), dtype)] + [TensorSpec(s.shape, s.dtype) for s in ins]


def _same_bytes(a: np.ndarray, b: np.ndarray) -> bool:
    return a.ctypes.data == b.ctypes.data and a.nbytes == b.nbytes


def _all_reduce(attrs, inputs, outputs):
    bucket, parts, start = outputs[0], [], 0
    for x in inputs:
        part = bucket[start:start + x.size]
        start += x.size
        parts.append(part)
        if not _same_bytes(part, x):  # the plan did not alias it (reference executor): copy in
            part[...] = x.reshape(-1)
    comm = COMMUNICATORS.get(attrs["group"])
    if comm is not None:
        comm.all_reduce(bucket, attrs["op"])
    for y, part in zip(outputs[1:], parts):
        if not _same_bytes(part, y):
            y[...] = part.reshape(y.shape)


def _all_reduce_backward(ctx, node, dys):
    wanted = [i for i, dy in enumerate(dys[1:]) if dy is not None and ctx.wants(i)]
    grads = [None] * len(node.inputs)
    if wanted:
        out = ctx.add("all_reduce", [dys[1 + i] for i in wanted], dict(node.attrs, count=len(wanted)))
        for i, g in zip(wanted, out[1:]):
            grads[i] = g
    return grads


def _cost(attrs, ins, outs, batch):
    n = outs[0].nbytes(batch)
    return int(np.prod(outs[0].shape)), 4 * n


ALL_REDUCE = register(OpDef(
    name="all_reduce", family="collective", arity=(1, None),
    attrs={"count": Attr(positive(to_int)), "group": Attr(to_str, "world"),
           "op": Attr(choice("mean", "sum"), "mean")},
    infer=_infer, forward=_all_reduce, cost=_cost, pattern=OpPattern.OPAQUE,
    outputs=lambda attrs: 1 + attrs["count"], backward=_all_reduce_backward, doc=__doc__))
