"""Transfers the ``place`` pass inserts where a tensor crosses between host and device.

``copy_to_device`` (host -> device, "HtoD") and ``copy_to_host`` (device -> host, "DtoH") are the
identity on values; the scheduler turns them into copies on the copy stream and counts them in the
transfer ledger.
"""
from __future__ import annotations

from ..ir import TensorSpec
from .elementwise import pass_through_backward
from .registry import OpDef, OpPattern, register


def _infer(attrs, ins, node):
    return [TensorSpec(ins[0].shape, ins[0].dtype)]


def _copy(attrs, inputs, outputs):
    outputs[0][...] = inputs[0]


def _cost(attrs, ins, outs, batch):
    return 0, ins[0].nbytes(batch)


COPY_TO_DEVICE = register(OpDef(name="copy_to_device", family="transfer", arity=(1, 1), attrs={},
                                infer=_infer, forward=_copy, cost=_cost, pattern=OpPattern.OPAQUE,
                                backward=pass_through_backward, doc=__doc__))
COPY_TO_HOST = register(OpDef(name="copy_to_host", family="transfer", arity=(1, 1), attrs={},
                              infer=_infer, forward=_copy, cost=_cost, pattern=OpPattern.OPAQUE,
                              backward=pass_through_backward, doc=__doc__))
