"""Symbols (built or loaded) as a graphrt :class:`Graph`.

:func:`to_graph` walks the symbol's nodes in order and hands each one reachable from the heads
to its op's converter (:mod:`~graphrt.frontends.mxnet.ops`) through a :class:`Converter`, which
reads the node's attributes and inputs and adds graphrt nodes. ``null`` nodes read in a data
position become graph inputs of shape ``(None,) + input_shape`` (or their ``__shape__`` attribute
without its batch); those in a parameter position become parameters, their shapes inferred by the
converters from the attributes and input shapes, their values from
:class:`~graphrt.frontends.mxnet.params.ParamSource`. Every error is a
:class:`~graphrt.GraphrtError` naming the node, its op and the JSON file and line where known.
"""
from __future__ import annotations

import bisect
import contextlib
import json
import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

from ...ir.errors import (AttrError, GraphError, GraphrtError, ParseError, ShapeError,
                          UnsupportedError, WeightError)
from ...ir import Graph, Source
from ..files import bounded_memory
from .initializers import Initializer
from .io import SymbolGraph, SymbolNode, parse_attr, read_symbol_json
from .symbol_json import read_bytes
from .ops import OPS, REQUIRED, op_spec
from .params import ParamSource


class Converter:
    """Walks a SymbolGraph and builds the Graph; ``index`` is the node being converted."""

    def __init__(self, sg: SymbolGraph, values: ParamSource, *, file: str | None, lines,
                 name: str):
        self.sg, self.values, self.file = sg, values, file
        self.lines = lines or [None] * len(sg.nodes)
        self.graph = Graph(name)
        self.tensors: dict[tuple[int, int], str] = {}
        self.param_shapes: dict[str, tuple] = {}
        self.index = 0

    @property
    def node(self) -> SymbolNode:
        return self.sg.nodes[self.index]

    # ---- locations and attributes -------------------------------------------------------------
    def where(self, i: int | None = None) -> dict:
        """Error location fields of node ``i`` (default: the current node)."""
        i = self.index if i is None else i
        sn = self.sg.nodes[i]
        return dict(node=sn.name, op=sn.op, file=self.file, line=self.lines[i])

    def source(self) -> Source:
        where = self.where()
        return Source(layer=where["node"], type=where["op"], file=where["file"],
                      line=where["line"])

    @contextlib.contextmanager
    def located(self, i: int | None = None):
        """Fill in node ``i``'s location on any GraphrtError raised inside."""
        try:
            yield
        except GraphrtError as err:
            raise err.locate(**self.where(i))

    def attr(self, key: str, kind: str, default: Any = REQUIRED) -> Any:
        """Attribute ``key`` of the current node parsed as ``kind``; ``default`` when absent."""
        sn = self.node
        text = sn.attrs.get(key)
        value = None
        if text is not None:
            with self.located():
                value = parse_attr(text, kind, key)
        if value is None:
            if default is REQUIRED:
                raise AttrError(f"{sn.op} needs attribute {key!r}"
                                + ("" if text is None else ", got None"), **self.where())
            return default
        if kind == "tuple" and any(v is None for v in value):
            raise AttrError(f"attribute {key!r}: {text!r} has a None item", **self.where())
        return value

    def positive(self, key: str, value, allow_zero=False):
        """``value`` (a number or tuple of them) checked to be positive (``>= 0``)."""
        vals = value if isinstance(value, tuple) else (value,)
        if any(v < 0 or (v == 0 and not allow_zero) for v in vals):
            raise AttrError(f"attribute {key!r} must be {'>= 0' if allow_zero else 'positive'}, "
                            f"got {value!r}", **self.where())
        return value

    def spatial(self, key: str, default: tuple, nd: int = 2, allow_zero=False) -> tuple:
        """A per-spatial-axis tuple attribute (``kernel``, ``stride``, ``pad``, ...)."""
        value = self.attr(key, "tuple", default)
        if value == ():  # MXNet writes "()" for "not set"
            if default is REQUIRED:
                raise AttrError(f"attribute {key!r} is empty", **self.where())
            value = default
        if len(value) != nd:
            raise UnsupportedError(f"attribute {key!r} = {value} has {len(value)} dimensions; "
                                   f"graphrt supports {nd}-D (NCHW) only", **self.where())
        return self.positive(key, value, allow_zero)

    def choice(self, key: str, default: str, options: Sequence[str], supported=None) -> str:
        """A string attribute among MXNet's ``options``, of which graphrt handles ``supported``."""
        value = self.attr(key, "str", default)
        if value not in options:
            raise AttrError(f"attribute {key!r} must be one of {list(options)}, got {value!r}",
                            **self.where())
        if supported is not None and value not in supported:
            raise UnsupportedError(f"{key}={value!r} is not supported (supported: "
                                   f"{', '.join(supported)})", **self.where())
        return value

    def check_layout(self, allowed=("NCHW",)):
        layout = self.attr("layout", "str", None)
        if layout not in (None, "None") and layout not in allowed:
            raise UnsupportedError(f"layout {layout!r} is not supported (only {allowed})",
                                   **self.where())

    # ---- graph building -----------------------------------------------------------------------
    def add(self, op: str, inputs: Sequence[str], attrs: Mapping | None = None,
            name: str | None = None) -> str:
        """Add a graphrt node for the current node (named after it unless ``name``)."""
        if name is None:
            name = self.node.name
        elif name in self.graph.specs or name in self.graph.nx:
            name = self.graph.unique_name(name)
        with self.located():
            return self.graph.add_node(op, list(inputs), name=name, attrs=attrs or {},
                                       source=self.source())

    def spec(self, tensor: str):
        return self.graph.specs[tensor]

    def data(self, slot: int) -> str:
        """The tensor feeding input ``slot`` of the current node."""
        sn = self.node
        if slot >= len(sn.inputs):
            raise GraphError(f"{sn.op} needs input {slot}, the node has {len(sn.inputs)} inputs",
                             **self.where())
        key = sn.inputs[slot]
        if key not in self.tensors:
            src = self.sg.nodes[key[0]]
            raise UnsupportedError(f"input {slot} reads output {key[1]} of {src.name!r} ({src.op}), "
                                   "which graphrt does not produce (hidden outputs such as "
                                   "BatchNorm's mean/var are not supported)", **self.where())
        return self.tensors[key]

    def param(self, slot: int, kind: str, shape: tuple) -> str:
        """The parameter feeding input ``slot``: loaded or initialized, checked against ``shape``."""
        sn = self.node
        if slot >= len(sn.inputs):
            raise GraphError(f"{sn.op} node has {len(sn.inputs)} inputs, its {kind} (input {slot}) "
                             "is missing", **self.where())
        src_index, _ = sn.inputs[slot]
        var = self.sg.nodes[src_index]
        if var.op != "null":
            raise UnsupportedError(f"the {kind} of {sn.op} is computed by {var.name!r} ({var.op}); "
                                   "graphrt needs a parameter variable", **self.where())
        pname = var.name
        shape = tuple(int(d) for d in shape)
        if pname in self.param_shapes:
            if self.param_shapes[pname] != shape:
                raise WeightError(f"parameter {pname!r} is shared with shape "
                                  f"{self.param_shapes[pname]}, but node {sn.name!r} needs "
                                  f"{shape}", **self.where())
            return pname
        value = self.values.value(var, kind, shape, self.where())
        lr_mult = self._mult(var, "__lr_mult__", src_index)
        wd_mult = self._mult(var, "__wd_mult__", src_index)
        trainable = kind not in ("moving_mean", "moving_var")
        self.graph.add_param(pname, value, lr_mult=lr_mult if trainable else 0.0,
                             decay_mult=wd_mult, trainable=trainable)
        self.param_shapes[pname] = shape
        return pname

    def _mult(self, var: SymbolNode, key: str, i: int) -> float:
        text = var.attrs.get(key)
        if text is None:
            return 1.0
        with self.located(i):
            return float(parse_attr(text, "float", key))

    # ---- the walk -----------------------------------------------------------------------------
    def run(self, input_shape) -> Graph:
        """Convert every node the heads need, in node order, and set the graph's outputs."""
        needed = self._reachable()
        shapes = self._input_shapes(self._data_variables(needed), input_shape)
        for i in sorted(needed):
            self.index = i
            self._convert_node(i, shapes.get(i))
        outputs = []
        for src, out in self.sg.heads:
            if (src, out) not in self.tensors:
                self.index = src
                raise UnsupportedError(f"output {out} of {self.node.name!r} is a graph head but "
                                       "graphrt does not produce it", **self.where())
            outputs.append(self.tensors[(src, out)])
        self.graph.set_outputs(outputs)
        return self.graph

    def _convert_node(self, i: int, input_shape: tuple | None) -> None:
        """Node ``i`` as graphrt nodes: a graph input (a data variable), nothing, or op outputs."""
        sn = self.node
        if sn.op == "null":
            if input_shape is not None:
                with self.located():
                    self.graph.add_input(sn.name, input_shape)
                self.tensors[(i, 0)] = sn.name
            return
        outs = op_spec(sn.op).convert(self, sn)
        outs = [outs] if isinstance(outs, str) else list(outs)
        for k, t in enumerate(outs):
            self.tensors[(i, k)] = t

    def _reachable(self) -> set[int]:
        """The nodes the heads depend on, checked to be supported and in topological order."""
        sg = self.sg
        needed, stack = set(), [i for i, _ in sg.heads]
        while stack:
            i = stack.pop()
            if i in needed:
                continue
            needed.add(i)
            sn = sg.nodes[i]
            self.index = i
            for src, _ in sn.inputs:
                if src >= i:
                    raise ParseError(f"input {src} ({sg.nodes[src].name!r}) is not an earlier node: "
                                     "the JSON must list nodes in topological order (a cycle?)",
                                     **self.where())
            if sn.op != "null" and op_spec(sn.op) is None:
                raise UnsupportedError(f"node {sn.name!r} has op {sn.op!r}, which graphrt does not "
                                       f"support (supported: {', '.join(sorted(OPS))})",
                                       **self.where())
            stack.extend(src for src, _ in sn.inputs)
        return needed

    def _data_variables(self, needed: set[int]) -> list[int]:
        """Null nodes read as data (not parameters, not labels), in node order."""
        data = set()
        for i in needed:
            sn = self.sg.nodes[i]
            if sn.op == "null":
                continue
            spec = op_spec(sn.op)
            args = spec.arg_names(sn.attrs)
            for slot, (src, _) in enumerate(sn.inputs):
                arg = args[slot] if slot < len(args) else "data"
                if arg not in spec.roles and self.sg.nodes[src].op == "null":
                    data.add(src)
        data.update(i for i, _ in self.sg.heads if self.sg.nodes[i].op == "null")
        return sorted(data)

    def _input_shapes(self, data_vars: list[int], input_shape) -> dict[int, tuple]:
        """The batched shape of each data variable, from ``input_shape`` or ``__shape__``."""
        names = {self.sg.nodes[i].name: i for i in data_vars}
        given = self._given_shapes(names, input_shape)
        shapes = {}
        for vname, i in names.items():
            self.index = i
            shapes[i] = (None,) + self._input_shape(vname, given)
        return shapes

    def _given_shapes(self, names: Mapping[str, int], input_shape) -> dict[str, Any]:
        """``input_shape`` as a dict data-variable name -> shape."""
        if isinstance(input_shape, Mapping):
            unknown = sorted(set(input_shape) - set(names))
            if unknown:
                raise ShapeError(f"input_shape names {unknown}, which are not data inputs of the "
                                 f"symbol (inputs: {sorted(names)})", file=self.file)
            return dict(input_shape)
        if input_shape is None:
            return {}
        if "data" in names:
            return {"data": input_shape}
        if len(names) == 1:
            return {next(iter(names)): input_shape}
        if not names:
            raise ShapeError("input_shape is given but the symbol has no data input",
                             file=self.file)
        raise ShapeError(f"the symbol has {len(names)} data inputs {sorted(names)}: pass "
                         "input_shape as a dict", file=self.file)

    def _input_shape(self, vname: str, given: Mapping[str, Any]) -> tuple:
        """The unbatched shape of the current node, data variable ``vname``."""
        if vname in given:
            shape = given[vname]
            try:
                shape = tuple(int(d) for d in shape)
            except (TypeError, ValueError):
                raise ShapeError(f"input_shape for {vname!r} must be a tuple of ints, got "
                                 f"{shape!r}", **self.where()) from None
        elif "__shape__" in self.node.attrs:
            shape = tuple(self.attr("__shape__", "tuple"))[1:]
        else:
            raise ShapeError(f"the shape of input {vname!r} is unknown: pass "
                             f"input_shape=(C, H, W) or {{{vname!r}: (C, H, W)}}", **self.where())
        if any(d is None or d <= 0 for d in shape):
            raise ShapeError(f"input {vname!r} has a non-positive dimension {shape}",
                             **self.where())
        return shape


def _node_lines(text: str, nodes: Sequence[SymbolNode]) -> list[int | None]:
    """The JSON line of each node's ``"name"`` (nodes are listed in order in the file)."""
    lines: list[int | None] = []
    pos = 0
    starts = [m.start() for m in re.finditer("\n", text)]
    for sn in nodes:
        m = re.compile(r'"name"\s*:\s*' + re.escape(json.dumps(sn.name))).search(text, pos)
        if m is None:
            lines.append(None)
            continue
        pos = m.end()
        lines.append(bisect.bisect_left(starts, m.start()) + 1)
    return lines


def to_graph(symbol: "Symbol | SymbolGraph", input_shape=None, params=None, seed: int = 0, *,
             initializer: Initializer | None = None, allow_missing: bool = False,
             name: str = "mxnet", file: str | None = None, lines=None) -> Graph:
    """Convert a symbol into a :class:`Graph` (see the module docstring).

    ``input_shape``: (C, H, W) for the ``data`` input (or the only one), or a dict name -> shape.
    ``params``: None (initialize as ``initializer``, default ``Xavier()``, seeded by ``seed``), a
    dict name -> array, or a ``.params`` path/bytes. With ``allow_missing`` parameters absent from
    ``params`` are initialized instead of raising WeightError.
    """
    if isinstance(symbol, SymbolGraph):
        sg = symbol
    elif callable(getattr(symbol, "to_symbol_graph", None)):  # a Symbol (.symbol builds on this module)
        sg = symbol.to_symbol_graph()
    else:
        raise GraphError(f"to_graph takes a Symbol, got {type(symbol).__name__}")
    values = ParamSource(params, file=file, seed=seed, initializer=initializer,
                         allow_missing=allow_missing)
    return Converter(sg, values, file=file, lines=lines, name=name).run(input_shape)


@bounded_memory
def load_mxnet(symbol_json_path: str | os.PathLike, params=None, input_shape=None, seed: int = 0,
               **kwargs) -> Graph:
    """Load ``<prefix>-symbol.json`` (and ``params``: a ``.params`` path or a dict) as a Graph."""
    file = str(symbol_json_path)
    data = read_bytes(symbol_json_path)
    sg = read_symbol_json(data, file=file)  # raises ParseError on anything malformed
    text = data.decode("utf-8-sig")
    stem = Path(file).name
    for suffix in ("-symbol.json", ".json"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return to_graph(sg, input_shape=input_shape, params=params, seed=seed, name=stem or "mxnet",
                    file=file, lines=_node_lines(text, sg.nodes), **kwargs)
