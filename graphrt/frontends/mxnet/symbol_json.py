"""Writing MXNet's ``-symbol.json`` (the reader is :mod:`~graphrt.frontends.mxnet.io`).

:func:`symbol_graph_to_json` writes a :class:`SymbolGraph` as MXNet 1.9.1 does, so a net written
with the symbol API serializes to the same text MXNet saves: attributes sorted, auxiliary-state
inputs marked with version 1, ``node_row_ptr`` counting every output of each op (hidden ones
included), and ``mxnet_version`` recorded.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ...ir.errors import ParseError
from .io import SymbolGraph
from .ops import aux_flags, op_spec

MXNET_VERSION = 10901  # what tojson() records: the files are written as MXNet 1.9.1 writes them


def symbol_graph_to_json(sg: SymbolGraph) -> str:
    """Serialize as MXNet 1.9 does (attributes sorted, aux inputs at version 1, node_row_ptr)."""
    nodes, row_ptr = [], [0]
    for sn in sg.nodes:
        entry: dict[str, Any] = {"op": sn.op, "name": sn.name}
        if sn.attrs:
            entry["attrs"] = {k: sn.attrs[k] for k in sorted(sn.attrs)}
        flags = aux_flags(sn.op, sn.attrs, len(sn.inputs))
        entry["inputs"] = [[src, out, int(is_aux)]
                           for is_aux, (src, out) in zip(flags, sn.inputs)]
        nodes.append(entry)
        spec = op_spec(sn.op)  # None for variables: one output
        row_ptr.append(row_ptr[-1] + (1 if spec is None else spec.outputs(sn.attrs)))
    doc = {"nodes": nodes, "arg_nodes": list(sg.arg_nodes), "node_row_ptr": row_ptr,
           "heads": [[i, out, 0] for i, out in sg.heads],
           "attrs": {"mxnet_version": ["int", sg.mxnet_version or MXNET_VERSION]}}
    return json.dumps(doc, indent=2)


def read_bytes(path: str | os.PathLike) -> bytes:
    """The file's bytes; an unreadable file is a ParseError naming it."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ParseError(f"cannot read file: {exc.strerror or exc}", file=str(path)) from None
