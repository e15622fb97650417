"""MXNet's symbol API (``mx.sym``): Symbol objects, the op constructors, and ``-symbol.json``.

A symbol is a list of output entries ``(node, index)`` of lightweight nodes that record ``op``,
``name``, the attributes exactly as given (strings such as ``"(3, 3)"``) and the inputs. Only
attributes passed explicitly are recorded, so a net written here serializes to the JSON MXNet
writes; missing parameter inputs become variables ``<name>_<input>`` carrying a copy of the op's
attributes, as nnvm does::

    data = mx.sym.Variable("data")
    conv = mx.sym.Convolution(data=data, kernel=(5, 5), num_filter=20)   # named 'convolution0'
    conv.list_arguments()            # ['data', 'convolution0_weight', 'convolution0_bias']
    same = mx.sym.load_json(conv.tojson())
"""
from __future__ import annotations

import os
import types
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from ...ir.errors import AttrError, GraphError, ParseError
from .io import SymbolGraph, SymbolNode, read_symbol_json
from .symbol_json import MXNET_VERSION, read_bytes, symbol_graph_to_json
from .naming import NameManager
from .ops import ALIASES, OPS, aux_flags

if TYPE_CHECKING:
    from ...ir import Graph


class _Node:
    """One node of a symbol: op (``"null"`` for a variable), name, string attributes, inputs."""

    __slots__ = ("op", "name", "attrs", "inputs")

    def __init__(self, op: str, name: str, attrs: Mapping[str, str], inputs: Sequence[tuple]):
        self.op, self.name, self.attrs, self.inputs = op, name, dict(attrs), list(inputs)

    def __repr__(self) -> str:
        return f"<{self.op} {self.name}>"


def _attr_text(value: Any) -> str:
    """An attribute value as MXNet's Python frontend writes it: ``str(value)``."""
    if isinstance(value, str):
        return value
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, list):
        value = tuple(value)
    if isinstance(value, tuple):
        value = tuple(v.item() if isinstance(v, np.generic) else v for v in value)
    return str(value)


def _attr_texts(attrs: Mapping) -> dict[str, str]:
    return {str(k): _attr_text(v) for k, v in attrs.items()}


def _is_scalar(value: Any) -> bool:
    return (isinstance(value, (int, float, np.integer, np.floating))
            and not isinstance(value, bool))


class Symbol:
    """An MXNet symbol: one or more output entries ``(node, index)`` of a graph of nodes."""

    def __init__(self, entries: Sequence[tuple]):
        self._entries = list(entries)

    # ---- identity and structure ---------------------------------------------------------------
    @property
    def name(self) -> str | None:
        """The node's name; None for a group."""
        return self._entries[0][0].name if len(self._entries) == 1 else None

    def attr(self, key: str) -> str | None:
        """One recorded attribute of the node (None when absent or for a group)."""
        return self._entries[0][0].attrs.get(key) if len(self._entries) == 1 else None

    def list_attr(self) -> dict[str, str]:
        """The node's recorded attributes (empty for a group)."""
        return dict(self._entries[0][0].attrs) if len(self._entries) == 1 else {}

    def _nodes(self) -> list[_Node]:
        return _dfs([n for n, _ in self._entries])

    def _variables(self, aux: bool) -> list[str]:
        """The names of the variables that are (``aux``) or are not auxiliary states."""
        aux_ids = set()
        for node in self._nodes():
            for is_aux, (src, _) in zip(aux_flags(node.op, node.attrs, len(node.inputs)),
                                        node.inputs):
                if is_aux and src.op == "null":
                    aux_ids.add(id(src))
        return [n.name for n in self._nodes() if n.op == "null" and (id(n) in aux_ids) == aux]

    def list_arguments(self) -> list[str]:
        """Variables that are not auxiliary states, in MXNet's order."""
        return self._variables(aux=False)

    def list_auxiliary_states(self) -> list[str]:
        """Variables that are auxiliary states (BatchNorm's moving mean and variance)."""
        return self._variables(aux=True)

    def list_inputs(self) -> list[str]:
        """Every variable, in MXNet's order."""
        return [n.name for n in self._nodes() if n.op == "null"]

    def list_outputs(self) -> list[str]:
        """Output names as MXNet gives them (``<name>_output``, ``<name>_output1``, ...)."""
        return [n.name if n.op == "null" else f"{n.name}_output" + (str(i) if i else "")
                for n, i in self._entries]

    def get_internals(self) -> "Symbol":
        """Every node's first output, in topological order (MXNet's ``get_internals``)."""
        return Symbol([(n, 0) for n in self._nodes()])

    def get_children(self) -> "Symbol | None":
        """The inputs of this (single-output) symbol's node; None for a variable or a group."""
        if len(self._entries) != 1 or not self._entries[0][0].inputs:
            return None
        return Symbol(list(self._entries[0][0].inputs))

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self):
        return (Symbol([e]) for e in self._entries)

    def __getitem__(self, index) -> "Symbol":
        if isinstance(index, str):
            names = self.list_outputs()
            matches = [i for i, n in enumerate(names) if n == index or
                       self._entries[i][0].name == index]
            if len(matches) != 1:
                raise GraphError(f"symbol has {len(matches)} outputs named {index!r} "
                                 f"(outputs: {names})")
            index = matches[0]
        if not -len(self._entries) <= index < len(self._entries):
            raise GraphError(f"output index {index} out of range for {len(self._entries)} outputs")
        return Symbol([self._entries[index]])

    def __repr__(self) -> str:
        if len(self._entries) == 1:
            return f"<Symbol {self.name}>"
        return f"<Symbol group [{', '.join(n.name for n, _ in self._entries)}]>"

    # ---- arithmetic (MXNet's operator overloads) ----------------------------------------------
    def _binary(self, other, op, hint, scalar_op, scalar_hint):
        if isinstance(other, Symbol) and op is not None:
            return _create(op, hint, (self, other), {})
        if _is_scalar(other):
            return _create(scalar_op, scalar_hint, (self,), {"scalar": other})
        return NotImplemented

    def __add__(self, other):
        return self._binary(other, "elemwise_add", "_plus", "_plus_scalar", "_plusscalar")

    def __radd__(self, other):
        return self.__add__(other)

    def __sub__(self, other):
        return self._binary(other, "elemwise_sub", "_minus", "_minus_scalar", "_minusscalar")

    def __rsub__(self, other):
        return self._binary(other, None, None, "_rminus_scalar", "_rminusscalar")

    def __mul__(self, other):
        return self._binary(other, "elemwise_mul", "_mul", "_mul_scalar", "_mulscalar")

    def __rmul__(self, other):
        return self.__mul__(other)

    def __truediv__(self, other):
        return self._binary(other, None, None, "_div_scalar", "_divscalar")

    def __neg__(self):
        return self.__mul__(-1.0)

    # ---- serialization and conversion ---------------------------------------------------------
    def to_symbol_graph(self) -> SymbolGraph:
        """The symbol as :mod:`.io`'s :class:`SymbolGraph` (nodes in MXNet's DFS order)."""
        nodes = self._nodes()
        index = {id(n): i for i, n in enumerate(nodes)}
        out = tuple(SymbolNode(n.op, n.name, dict(n.attrs),
                               tuple((index[id(src)], i) for src, i in n.inputs)) for n in nodes)
        heads = tuple((index[id(n)], i) for n, i in self._entries)
        arg_nodes = tuple(i for i, n in enumerate(nodes) if n.op == "null")
        return SymbolGraph(out, heads, arg_nodes, MXNET_VERSION)

    def tojson(self) -> str:
        """MXNet's ``-symbol.json`` text for this symbol."""
        return symbol_graph_to_json(self.to_symbol_graph())

    def save(self, fname: str | os.PathLike) -> None:
        """Write :meth:`tojson` to ``fname``."""
        Path(fname).write_text(self.tojson(), encoding="utf-8")

    def to_graph(self, input_shape=None, params=None, seed: int = 0, **kwargs) -> Graph:
        """:func:`~graphrt.frontends.mxnet.convert.to_graph` of this symbol."""
        from .convert import to_graph  # conversion builds on symbols, not the reverse
        return to_graph(self, input_shape=input_shape, params=params, seed=seed, **kwargs)


def _dfs(heads: Sequence[_Node]) -> list[_Node]:
    """Post-order depth-first walk over inputs in order, as nnvm's DFSVisit (iterative)."""
    seen: set[int] = set()
    order: list[_Node] = []
    for head in heads:
        if id(head) in seen:
            continue
        seen.add(id(head))
        stack = [(head, 0)]
        while stack:
            node, i = stack[-1]
            if i < len(node.inputs):
                stack[-1] = (node, i + 1)
                child = node.inputs[i][0]
                if id(child) not in seen:
                    seen.add(id(child))
                    stack.append((child, 0))
            else:
                stack.pop()
                order.append(node)
    return order


# ---- making nodes -----------------------------------------------------------------------------
def _entry(value: Any, arg: str, where: dict) -> tuple:
    """The one output entry of the Symbol passed as input ``arg``."""
    op = where["op"]
    if not isinstance(value, Symbol):
        raise AttrError(f"input {arg!r} of {op} must be a Symbol, got {type(value).__name__}",
                        **where)
    if len(value._entries) != 1:
        raise GraphError(f"input {arg!r} of {op} is a group of {len(value._entries)} outputs; "
                         "pass one", **where)
    return value._entries[0]


def _create(op: str, hint: str, args: Sequence, kwargs: dict) -> Symbol:
    """Make an op node as MXNet's generated symbol functions do."""
    spec = OPS[op]
    kwargs = dict(kwargs)
    node_name = NameManager.current().get(kwargs.pop("name", None), hint)
    extra = kwargs.pop("attr", None) or {}
    where = dict(node=node_name, op=op)
    inputs: dict[str, Any] = {}
    attrs: dict[str, str] = {}
    arg_set = set(spec.args or ())
    for key, value in kwargs.items():
        if key in arg_set or isinstance(value, Symbol):
            inputs[key] = value
        elif value is not None:
            if key not in spec.attrs:
                raise AttrError(f"{op} has no attribute {key!r} (known: "
                                f"{', '.join(sorted(spec.attrs)) or 'none'})", **where)
            attrs[key] = _attr_text(value)
    if spec.args is None:
        entries = _variadic_entries(spec, args, inputs, attrs, where)
    else:
        entries = _named_entries(spec, args, inputs, attrs, where)
    attrs.update(_attr_texts(extra))
    return Symbol([(_Node(op, node_name, attrs, entries), 0)])


def _variadic_entries(spec, args: Sequence, inputs: dict, attrs: dict, where: dict) -> list:
    """A variadic op's inputs: positional symbols only (``num_args`` recorded when it has one)."""
    op = spec.name
    if inputs:
        raise AttrError(f"{op} takes its inputs positionally, got {sorted(inputs)}", **where)
    entries = [_entry(a, f"arg{i}", where) for i, a in enumerate(args)]
    if not entries:
        raise GraphError(f"{op} needs at least one input", **where)
    if "num_args" in spec.attrs:
        attrs["num_args"] = str(len(entries))
    return entries


def _named_entries(spec, args: Sequence, inputs: dict, attrs: dict, where: dict) -> list:
    """An op's inputs in slot order, positional then keyword; missing ones become variables."""
    op, node_name = spec.name, where["node"]
    names = spec.arg_names(attrs)
    if len(args) > len(names):
        raise GraphError(f"{op} takes at most {len(names)} inputs {names}, got {len(args)} "
                         "positional", **where)
    for arg, value in zip(names, args):
        if arg in inputs:
            raise AttrError(f"{op} got input {arg!r} twice", **where)
        inputs[arg] = value
    unknown = sorted(set(inputs) - set(names))
    if unknown:
        raise AttrError(f"{op} (with these attributes) has no input {unknown[0]!r}; it takes "
                        f"{list(names)}", **where)
    entries = []
    for arg in names:
        if arg in inputs:
            entries.append(_entry(inputs[arg], arg, where))
        else:  # nnvm copies the op's attributes onto the variables it creates
            entries.append((_Node("null", f"{node_name}_{arg}", attrs, ()), 0))
    return entries


def _symbol_function(op: str):
    """``mx.sym.<op>``: makes an ``op`` node, auto-named from the lower-cased op name."""
    hint = op.lower()

    def make(*args, **kwargs) -> Symbol:
        return _create(op, hint, args, kwargs)

    make.__name__ = make.__qualname__ = op
    make.__doc__ = f"MXNet's ``{op}``: records the node; see :func:`to_graph` for its semantics."
    return make


def Variable(name: str, attr: Mapping | None = None, shape: Sequence[int] | None = None,
             lr_mult: float | None = None, wd_mult: float | None = None, dtype=None,
             init=None, **kwargs) -> Symbol:
    """A variable: a data input or a parameter, depending on where it is used."""
    if not isinstance(name, str) or not name:
        raise AttrError(f"Variable needs a non-empty string name, got {name!r}")
    attrs = _attr_texts(attr or {})
    for key, value in (("__shape__", shape), ("__lr_mult__", lr_mult), ("__wd_mult__", wd_mult),
                       ("__dtype__", dtype)):
        if value is not None:
            attrs[key] = _attr_text(tuple(value) if key == "__shape__" else value)
    if init is not None:
        attrs["__init__"] = init.dumps() if hasattr(init, "dumps") else _attr_text(init)
    for key, value in kwargs.items():
        attrs[f"__{key}__"] = _attr_text(value)
    return Symbol([(_Node("null", name, attrs, ()), 0)])


def Group(symbols: Sequence[Symbol]) -> Symbol:
    """Several symbols as one with several outputs."""
    entries = []
    for s in symbols:
        if not isinstance(s, Symbol):
            raise AttrError(f"Group takes Symbols, got {type(s).__name__}")
        entries.extend(s._entries)
    if not entries:
        raise GraphError("Group needs at least one symbol")
    return Symbol(entries)


# ---- -symbol.json -----------------------------------------------------------------------------
def load_json(text: str) -> Symbol:
    """A Symbol from ``-symbol.json`` text."""
    if not isinstance(text, str):
        raise ParseError(f"load_json takes JSON text, got {type(text).__name__}")
    return symbol_from_graph(read_symbol_json(text.encode("utf-8")))


def load(path: str | os.PathLike) -> Symbol:
    """A Symbol from a ``-symbol.json`` file."""
    return symbol_from_graph(read_symbol_json(read_bytes(path), file=str(path)))


def symbol_from_graph(sg: SymbolGraph) -> Symbol:
    """A Symbol from a parsed :class:`SymbolGraph` (nodes must be in topological order)."""
    nodes: list[_Node] = []
    for i, sn in enumerate(sg.nodes):
        inputs = []
        for src, out in sn.inputs:
            if src >= i:
                raise ParseError(f"input {src} of node {i} is not an earlier node (the JSON must "
                                 "list nodes in topological order)", node=sn.name, op=sn.op)
            inputs.append((nodes[src], out))
        nodes.append(_Node(sn.op, sn.name, sn.attrs, inputs))
    return Symbol([(nodes[i], out) for i, out in sg.heads])


# ---- the mx.sym namespace ---------------------------------------------------------------------
_SYMBOL_FUNCTIONS = ("Convolution", "Activation", "LeakyReLU", "Pooling", "LRN", "Flatten",
                     "flatten", "FullyConnected", "Dropout", "BatchNorm", "Concat", "concat",
                     "SoftmaxOutput", "softmax", "elemwise_add", "elemwise_sub", "elemwise_mul",
                     "Reshape", "reshape", "clip", "_copy", "identity", "BlockGrad",
                     "broadcast_add", "broadcast_sub", "broadcast_mul", "broadcast_div",
                     "elemwise_div", "broadcast_maximum", "broadcast_minimum")

sym = symbol = types.SimpleNamespace(
    Symbol=Symbol, Variable=Variable, var=Variable, Group=Group, load=load, load_json=load_json,
    **{fn: _symbol_function(ALIASES.get(fn, fn)) for fn in _SYMBOL_FUNCTIONS})
