"""The op table the IR consults: the graph knows no op itself.

An op set (:mod:`graphrt.ops`) registers one schema per op name with :func:`register`. The graph
and the verifier look schemas up with :func:`lookup` and use only this part of them: ``name``,
``arity`` ((min, max) inputs, max None for variadic), ``normalize_attrs(attrs, node)``,
``num_outputs(attrs)``, ``infer(attrs, in_specs, node)`` and ``cost(attrs, in_specs, out_specs,
batch)``. A table, not an import: ``ir`` stays below ``ops`` and nothing registers by side effect
of importing the IR. ``import graphrt`` registers graphrt's own op set.
"""
from __future__ import annotations

from typing import Any

from .errors import GraphError, UnsupportedError

_TABLE: dict[str, Any] = {}


def register(schema: Any) -> Any:
    """Add ``schema`` under ``schema.name``; a name registers once."""
    if schema.name in _TABLE:
        raise ValueError(f"op {schema.name!r} registered twice")
    _TABLE[schema.name] = schema
    return schema


def lookup(name: str) -> Any:
    """The schema registered as ``name``; UnsupportedError listing the known ops otherwise."""
    try:
        return _TABLE[name]
    except KeyError:
        raise UnsupportedError(f"unknown op {name!r}; graphrt has: {', '.join(sorted(_TABLE))}") from None


def registered() -> dict[str, Any]:
    """A copy of the whole table (name -> schema)."""
    return dict(_TABLE)


def check_arity(schema: Any, n: int, node=None) -> None:
    """GraphError when ``n`` inputs do not fit ``schema.arity``, located at ``node`` when given."""
    lo, hi = schema.arity
    if n < lo or (hi is not None and n > hi):
        want = f"{lo}" if lo == hi else f"{lo} to {hi if hi is not None else 'any number of'}"
        # a wrong input count is a structural error (GraphError), not a shape mismatch
        err = GraphError(f"{schema.name} takes {want} inputs, got {n}")
        if node is not None:
            err.locate(node=node.name, op=node.source.type or node.op, file=node.source.file,
                       line=node.source.line)
        raise err
