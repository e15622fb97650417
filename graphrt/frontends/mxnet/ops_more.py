"""MXNet ops beyond the seed's that the Gluon model zoo's exported symbols use: ``_copy`` (and its
spellings ``identity``, ``BlockGrad``, ``stop_gradient``), ``clip`` (ReLU6 in MobileNetV2) and the
broadcasting arithmetic ``broadcast_add/sub/mul/div`` and ``elemwise_div``.

Registered into the table of :mod:`.opspec` with ``@_op``, like the converters of :mod:`.ops`.
"""
from __future__ import annotations

from ...ir.errors import AttrError
from .opspec import ALIASES, REQUIRED, _op


@_op("_copy", ("data",), "")
def _copy(c, sn):
    return c.add("identity", [c.data(0)])


ALIASES.update({"identity": "_copy", "BlockGrad": "_copy", "stop_gradient": "_copy"})


@_op("clip", ("data",), "a_min a_max")
def _clip(c, sn):
    lo, hi = c.attr("a_min", "float", REQUIRED), c.attr("a_max", "float", REQUIRED)
    if lo > hi:
        raise AttrError(f"clip a_min {lo} is larger than a_max {hi}", **c.where())
    return c.add("clip", [c.data(0)], {"min": lo, "max": hi})


def _broadcast_op(mx_name: str, op: str):
    """Register ``mx_name`` as graphrt ``op`` over two inputs that broadcast (numpy's rules)."""
    @_op(mx_name, ("lhs", "rhs"), "")
    def convert(c, sn):
        return c.add(op, [c.data(0), c.data(1)])
    return convert


for _name, _graph_op in (("broadcast_add", "add"), ("broadcast_plus", "add"),
                         ("broadcast_sub", "sub"), ("broadcast_minus", "sub"),
                         ("broadcast_mul", "mul"), ("broadcast_div", "div"),
                         ("elemwise_div", "div"), ("broadcast_maximum", "maximum"),
                         ("broadcast_minimum", "minimum")):
    _broadcast_op(_name, _graph_op)
ALIASES.update({"_div": "elemwise_div", "_Div": "elemwise_div", "_maximum": "broadcast_maximum",
                "_minimum": "broadcast_minimum"})
