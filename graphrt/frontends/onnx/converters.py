"""The shape of an ONNX converter table, shared by :mod:`.ops` (ops that compute) and
:mod:`.layout_ops` (ops that move data): each module fills its own table with ``@converts(...)``
and the importer merges them, so no module registers into another by being imported.

A converter takes the converter context ``cv``, the node's attributes and its inputs and returns the
values of the node's outputs (see :mod:`.ops`).
"""
from __future__ import annotations

from ...ir.errors import AttrError


class ConverterTable(dict):
    """ONNX op type -> converter function."""

    def converts(self, *names):
        """Decorator: register the function as the converter of each of ``names``."""
        def wrap(fn):
            for name in names:
                self[name] = fn
            return fn
        return wrap


def need(attrs, key: str):
    """The required attribute ``key`` (AttrError naming it when the node lacks it)."""
    if key not in attrs:
        raise AttrError(f"the node has no {key!r} attribute")
    return attrs[key]
