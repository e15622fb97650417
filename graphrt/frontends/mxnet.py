"""MXNet: the symbol API as MXNet 1.x users write it, and symbols (built or loaded) as a :class:`Graph`.

Writing a net::

    from graphrt.frontends import mxnet as mx
    data = mx.sym.Variable("data")
    conv = mx.sym.Convolution(data=data, kernel=(5, 5), num_filter=20, name="conv1")
    act = mx.sym.Activation(data=conv, act_type="tanh")
    ...
    net = mx.sym.SoftmaxOutput(data=fc2, name="softmax")
    g = mx.to_graph(net, input_shape=(1, 28, 28), params="lenet-0000.params")
    net.tojson()                                  # MXNet's -symbol.json text
    same = mx.sym.load("lenet-symbol.json")       # back to a Symbol (through mxnet_io)
    g = mx.load_mxnet("lenet-symbol.json", params="lenet-0000.params", input_shape=(1, 28, 28))

Symbols behave as MXNet's: a symbol is a list of output entries of lightweight nodes that record
``op``, ``name``, the attributes exactly as given (strings such as ``"(3, 3)"``) and the inputs.
Only attributes passed explicitly are recorded (MXNet's defaults are applied when converting), so a
net written here serializes to the same JSON MXNet writes. Unnamed ops are named as MXNet names
them (``convolution0``, ``activation1``: one counter per lower-cased function name, kept by the
current :class:`NameManager`); missing parameter inputs become variables ``<name>_weight``,
``_bias``, ``_gamma``, ``_beta``, ``_moving_mean``, ``_moving_var``, ``_label``, carrying a copy of
the op's attributes as nnvm does.

Converting (:func:`to_graph`): ``null`` nodes read in a data position become graph inputs of shape
``(None,) + input_shape`` (or their ``__shape__`` attribute without its batch); those in a parameter
position become parameters, from ``params`` (a dict or a ``.params`` file; ``arg:``/``aux:``
prefixes stripped) or initialized as ``mx.init.Xavier()`` (uniform, ``avg``, magnitude 3; biases,
betas and moving means 0; gammas and moving variances 1), seeded. Parameter shapes are inferred
from the attributes and the input shapes, as MXNet's ``infer_shape`` does, and every loaded array
is checked against them. A ``SoftmaxOutput`` label is not a graph input (inference only).
Conversions with MXNet semantics worth knowing:

- ``LRN``: y = x / (knorm + alpha/nsize * sum of squares)^beta, i.e. ``lrn`` with k=knorm,
  size=nsize (knorm defaults to 2).
- ``BatchNorm``: eps defaults to 1e-3; ``fix_gamma`` (default True) means gamma is 1, whatever the
  stored value: the ``<name>_gamma`` parameter is ones and not trainable.
- ``Pooling``: ``pooling_convention='full'`` is ceil mode; ``'valid'`` (default) floor mode.
- ``FullyConnected`` flattens a >2-D input first (``flatten=True``, the default).
- ``SoftmaxOutput`` is a softmax over axis 1 (over all non-batch values for a >2-D input unless
  ``multi_output``); ``softmax`` defaults to the last axis, as in MXNet.
- ``Reshape`` understands MXNet's special values 0, -1, -2, -3, -4 and must keep the batch.

Every error is a :class:`~graphrt.GraphrtError` naming the node, its op and the JSON file and line
where known.
"""
from __future__ import annotations

import bisect
import dataclasses
import json
import math
import os
import re
import threading
import types
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..errors import (AttrError, GraphError, GraphrtError, ParseError, ShapeError,
                      UnsupportedError, WeightError)
from ..graph import Graph, Source
from .mxnet_io import SymbolGraph, SymbolNode, parse_attr, read_params, read_symbol_json

MXNET_VERSION = 10901  # what tojson() records: the files are written as MXNet 1.9.1 writes them

_REQUIRED = object()


# ============================================================================ op table

@dataclasses.dataclass(frozen=True)
class OpSpec:
    """What graphrt knows about one MXNet op: its input slots, attributes and converter.

    ``args`` are the input names in order (``None`` for variadic ops); ``roles`` maps an input name to
    the parameter kind it holds (``"weight"``, ``"bias"``, ...), ``"label"``, or is absent for data.
    ``outputs(attrs)`` is the number of outputs MXNet 1.9 (oneDNN build) gives the node, hidden ones
    included (it only matters for ``node_row_ptr`` in the JSON); ``aux`` lists auxiliary states.
    """

    name: str
    args: tuple | None
    attrs: frozenset
    convert: Callable
    roles: Mapping = dataclasses.field(default_factory=dict)
    aux: tuple = ()
    outputs: Callable[[Mapping], int] = lambda attrs: 1

    def arg_names(self, attrs: Mapping[str, str]) -> tuple:
        """The inputs a node with these (string) attributes takes, as MXNet's ListArguments."""
        args = self.args or ()
        if "bias" in args and _truthy(attrs.get("no_bias")):
            args = tuple(a for a in args if a != "bias")
        if self.name == "LeakyReLU" and attrs.get("act_type", "leaky").strip() != "prelu":
            args = ("data",)
        if self.name == "softmax" and not _truthy(attrs.get("use_length")):
            args = ("data",)
        return args


def _truthy(text: str | None) -> bool:
    return text is not None and text.strip().lower() in ("true", "1")


OPS: dict[str, OpSpec] = {}
ALIASES = {"flatten": "Flatten", "concat": "Concat", "reshape": "Reshape", "_plus": "elemwise_add",
           "_Plus": "elemwise_add", "_add": "elemwise_add", "_minus": "elemwise_sub",
           "_sub": "elemwise_sub", "_Minus": "elemwise_sub", "_mul": "elemwise_mul",
           "_Mul": "elemwise_mul", "_PlusScalar": "_plus_scalar", "_MinusScalar": "_minus_scalar",
           "_RMinusScalar": "_rminus_scalar", "_MulScalar": "_mul_scalar",
           "_DivScalar": "_div_scalar"}


def _op(name, args, attrs, roles=None, aux=(), outputs=None):
    def deco(fn):
        OPS[name] = OpSpec(name, args, frozenset(attrs.split()), fn, dict(roles or {}), aux,
                           outputs or (lambda attrs: 1))
        return fn
    return deco


def op_spec(op: str) -> OpSpec | None:
    return OPS.get(ALIASES.get(op, op))


# ============================================================================ naming

class NameManager:
    """MXNet's automatic naming: ``hint + counter`` per hint; use as a context manager."""

    _state = threading.local()

    def __init__(self):
        self._counter: dict[str, int] = {}
        self._old: NameManager | None = None

    def get(self, name: str | None, hint: str) -> str:
        if name:
            return name
        count = self._counter.get(hint, 0)
        self._counter[hint] = count + 1
        return f"{hint}{count}"

    def __enter__(self):
        self._old = NameManager.current()
        NameManager._state.value = self
        return self

    def __exit__(self, *exc):
        NameManager._state.value = self._old

    @staticmethod
    def current() -> "NameManager":
        if getattr(NameManager._state, "value", None) is None:
            NameManager._state.value = NameManager()
        return NameManager._state.value


class Prefix(NameManager):
    """Prefix every name made while active (``with mx.name.Prefix("stage1_"): ...``)."""

    def __init__(self, prefix: str):
        super().__init__()
        self._prefix = prefix

    def get(self, name: str | None, hint: str) -> str:
        return self._prefix + super().get(name, hint)


name = types.SimpleNamespace(NameManager=NameManager, Prefix=Prefix)


# ============================================================================ symbols

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


class Symbol:
    """An MXNet symbol: one or more output entries ``(node, index)`` of a graph of nodes."""

    def __init__(self, entries: Sequence[tuple]):
        self._entries = list(entries)

    # ---- identity and structure ---------------------------------------------------------------
    @property
    def name(self) -> str | None:
        return self._entries[0][0].name if len(self._entries) == 1 else None

    def attr(self, key: str) -> str | None:
        return self._entries[0][0].attrs.get(key) if len(self._entries) == 1 else None

    def list_attr(self) -> dict[str, str]:
        return dict(self._entries[0][0].attrs) if len(self._entries) == 1 else {}

    def _nodes(self) -> list[_Node]:
        return _dfs([n for n, _ in self._entries])

    def _aux_nodes(self) -> set[int]:
        aux = set()
        for node in self._nodes():
            spec = op_spec(node.op)
            if spec is not None and spec.aux:
                names = spec.arg_names(node.attrs)
                for arg, (src, _) in zip(names, node.inputs):
                    if arg in spec.aux and src.op == "null":
                        aux.add(id(src))
        return aux

    def list_arguments(self) -> list[str]:
        aux = self._aux_nodes()
        return [n.name for n in self._nodes() if n.op == "null" and id(n) not in aux]

    def list_auxiliary_states(self) -> list[str]:
        aux = self._aux_nodes()
        return [n.name for n in self._nodes() if n.op == "null" and id(n) in aux]

    def list_inputs(self) -> list[str]:
        return [n.name for n in self._nodes() if n.op == "null"]

    def list_outputs(self) -> list[str]:
        return [n.name if n.op == "null" else f"{n.name}_output" + (str(i) if i else "")
                for n, i in self._entries]

    def get_internals(self) -> "Symbol":
        """Every node's first output, in topological order (MXNet's ``get_internals``)."""
        return Symbol([(n, 0) for n in self._nodes()])

    def get_children(self) -> "Symbol | None":
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
        if isinstance(other, Symbol):
            return _create(op, hint, (self, other), {})
        if isinstance(other, (int, float, np.integer, np.floating)) and not isinstance(other, bool):
            return _create(scalar_op, scalar_hint, (self,), {"scalar": other})
        return NotImplemented

    def __add__(self, other):
        return self._binary(other, "elemwise_add", "_plus", "_plus_scalar", "_plusscalar")

    def __radd__(self, other):
        return self.__add__(other)

    def __sub__(self, other):
        return self._binary(other, "elemwise_sub", "_minus", "_minus_scalar", "_minusscalar")

    def __rsub__(self, other):
        if isinstance(other, (int, float, np.integer, np.floating)) and not isinstance(other, bool):
            return _create("_rminus_scalar", "_rminusscalar", (self,), {"scalar": other})
        return NotImplemented

    def __mul__(self, other):
        return self._binary(other, "elemwise_mul", "_mul", "_mul_scalar", "_mulscalar")

    def __rmul__(self, other):
        return self.__mul__(other)

    def __truediv__(self, other):
        if isinstance(other, (int, float, np.integer, np.floating)) and not isinstance(other, bool):
            return _create("_div_scalar", "_divscalar", (self,), {"scalar": other})
        return NotImplemented

    def __neg__(self):
        return self.__mul__(-1.0)

    # ---- serialization and conversion ---------------------------------------------------------
    def to_symbol_graph(self) -> SymbolGraph:
        """The symbol as mxnet_io's :class:`SymbolGraph` (nodes in MXNet's DFS order)."""
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
        Path(fname).write_text(self.tojson(), encoding="utf-8")

    def to_graph(self, input_shape=None, params=None, seed: int = 0, **kwargs) -> Graph:
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


def _entry(value: Any, op: str, name: str, arg: str) -> tuple:
    if not isinstance(value, Symbol):
        raise AttrError(f"input {arg!r} of {op} must be a Symbol, got {type(value).__name__}",
                        node=name, op=op)
    if len(value._entries) != 1:
        raise GraphError(f"input {arg!r} of {op} is a group of {len(value._entries)} outputs; "
                         "pass one", node=name, op=op)
    return value._entries[0]


def _create(op: str, hint: str, args: Sequence, kwargs: dict) -> Symbol:
    """Make an op node as MXNet's generated symbol functions do."""
    spec = OPS[op]
    kwargs = dict(kwargs)
    node_name = NameManager.current().get(kwargs.pop("name", None), hint)
    extra = kwargs.pop("attr", None) or {}
    inputs: dict[str, Any] = {}
    attrs: dict[str, str] = {}
    arg_set = set(spec.args or ())
    for key, value in kwargs.items():
        if key in arg_set or isinstance(value, Symbol):
            inputs[key] = value
        elif value is not None:
            if key not in spec.attrs:
                raise AttrError(f"{op} has no attribute {key!r} (known: "
                                f"{', '.join(sorted(spec.attrs)) or 'none'})", node=node_name, op=op)
            attrs[key] = _attr_text(value)
    if spec.args is None:  # variadic: positional symbols only
        if inputs:
            raise AttrError(f"{op} takes its inputs positionally, got {sorted(inputs)}",
                            node=node_name, op=op)
        entries = [_entry(a, op, node_name, f"arg{i}") for i, a in enumerate(args)]
        if not entries:
            raise GraphError(f"{op} needs at least one input", node=node_name, op=op)
        if "num_args" in spec.attrs:
            attrs["num_args"] = str(len(entries))
    else:
        names = spec.arg_names(attrs)
        if len(args) > len(names):
            raise GraphError(f"{op} takes at most {len(names)} inputs {names}, got {len(args)} "
                             "positional", node=node_name, op=op)
        for arg, value in zip(names, args):
            if arg in inputs:
                raise AttrError(f"{op} got input {arg!r} twice", node=node_name, op=op)
            inputs[arg] = value
        unknown = sorted(set(inputs) - set(names))
        if unknown:
            raise AttrError(f"{op} (with these attributes) has no input {unknown[0]!r}; it takes "
                            f"{list(names)}", node=node_name, op=op)
        entries = []
        for arg in names:
            if arg in inputs:
                entries.append(_entry(inputs[arg], op, node_name, arg))
            else:  # nnvm copies the op's attributes onto the variables it creates
                entries.append((_Node("null", f"{node_name}_{arg}", attrs, ()), 0))
    attrs.update({str(k): _attr_text(v) for k, v in extra.items()})
    return Symbol([(_Node(op, node_name, attrs, entries), 0)])


def Variable(name: str, attr: Mapping | None = None, shape: Sequence[int] | None = None,
             lr_mult: float | None = None, wd_mult: float | None = None, dtype=None,
             init=None, **kwargs) -> Symbol:
    """A variable: a data input or a parameter, depending on where it is used."""
    if not isinstance(name, str) or not name:
        raise AttrError(f"Variable needs a non-empty string name, got {name!r}")
    attrs = {str(k): _attr_text(v) for k, v in (attr or {}).items()}
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


def load_json(text: str) -> Symbol:
    """A Symbol from ``-symbol.json`` text."""
    if not isinstance(text, str):
        raise ParseError(f"load_json takes JSON text, got {type(text).__name__}")
    return symbol_from_graph(read_symbol_json(text.encode("utf-8")))


def load(path: str | os.PathLike) -> Symbol:
    """A Symbol from a ``-symbol.json`` file."""
    return symbol_from_graph(read_symbol_json(_read_bytes(path), file=str(path)))


def _read_bytes(path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ParseError(f"cannot read file: {exc.strerror or exc}", file=str(path)) from None


def symbol_from_graph(sg: SymbolGraph) -> Symbol:
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


def _num_outputs(op: str, attrs: Mapping[str, str]) -> int:
    spec = op_spec(op)
    return 1 if spec is None else spec.outputs(attrs)


def symbol_graph_to_json(sg: SymbolGraph) -> str:
    """Serialize as MXNet 1.9 does (attributes sorted, aux inputs at version 1, node_row_ptr)."""
    nodes, row_ptr = [], [0]
    for sn in sg.nodes:
        entry: dict[str, Any] = {"op": sn.op, "name": sn.name}
        if sn.attrs:
            entry["attrs"] = {k: sn.attrs[k] for k in sorted(sn.attrs)}
        spec = op_spec(sn.op)
        args = spec.arg_names(sn.attrs) if spec is not None and spec.args is not None else ()
        entry["inputs"] = [[src, out, int(i < len(args) and spec is not None
                                          and args[i] in spec.aux)]
                           for i, (src, out) in enumerate(sn.inputs)]
        nodes.append(entry)
        row_ptr.append(row_ptr[-1] + (1 if sn.op == "null" else _num_outputs(sn.op, sn.attrs)))
    doc = {"nodes": nodes, "arg_nodes": list(sg.arg_nodes), "node_row_ptr": row_ptr,
           "heads": [[i, out, 0] for i, out in sg.heads],
           "attrs": {"mxnet_version": ["int", sg.mxnet_version or MXNET_VERSION]}}
    return json.dumps(doc, indent=2)


# ---- the symbol functions ---------------------------------------------------------------------
def _symbol_function(op: str, hint: str | None = None):
    hint = hint or op.lower()

    def make(*args, **kwargs) -> Symbol:
        return _create(op, hint, args, kwargs)

    make.__name__ = make.__qualname__ = op
    make.__doc__ = f"MXNet's ``{op}``: records the node; see :func:`to_graph` for its semantics."
    return make


# ============================================================================ initializers

class Initializer:
    """MXNet's initializer dispatch: weights by the subclass, the rest by kind."""

    def __call__(self, kind: str, shape: tuple, rng: np.random.Generator) -> np.ndarray:
        if kind in ("gamma", "moving_var"):
            return np.ones(shape, np.float32)
        if kind == "weight":
            return self._init_weight(shape, rng)
        return np.zeros(shape, np.float32)

    def _init_weight(self, shape, rng):  # pragma: no cover - overridden
        raise NotImplementedError

    def dumps(self) -> str:
        """The ``__init__`` attribute text MXNet writes: ``'["xavier", {...}]'``."""
        return json.dumps([type(self).__name__.lower(), dict(self.__dict__)])


class Xavier(Initializer):
    """``mx.init.Xavier``: scale = sqrt(magnitude / factor) over fan_in/fan_out of the weight."""

    def __init__(self, rnd_type: str = "uniform", factor_type: str = "avg", magnitude: float = 3):
        if rnd_type not in ("uniform", "gaussian") or factor_type not in ("avg", "in", "out"):
            raise AttrError(f"Xavier(rnd_type={rnd_type!r}, factor_type={factor_type!r}) is not "
                            "supported")
        self.rnd_type, self.factor_type, self.magnitude = rnd_type, factor_type, float(magnitude)

    def _init_weight(self, shape, rng):
        if len(shape) < 2:
            raise WeightError(f"Xavier cannot initialize a weight of shape {shape} (needs 2-D+)")
        hw = math.prod(shape[2:]) if len(shape) > 2 else 1
        fan_in, fan_out = shape[1] * hw, shape[0] * hw
        factor = {"avg": (fan_in + fan_out) / 2.0, "in": fan_in, "out": fan_out}[self.factor_type]
        scale = math.sqrt(self.magnitude / factor)
        if self.rnd_type == "uniform":
            return _uniform(rng, shape, scale)
        return (rng.standard_normal(shape, dtype=np.float32) * np.float32(scale))


class Uniform(Initializer):
    def __init__(self, scale: float = 0.07):
        self.scale = float(scale)

    def _init_weight(self, shape, rng):
        return _uniform(rng, shape, self.scale)


class Normal(Initializer):
    def __init__(self, sigma: float = 0.01):
        self.sigma = float(sigma)

    def _init_weight(self, shape, rng):
        return rng.standard_normal(shape, dtype=np.float32) * np.float32(self.sigma)


class Constant(Initializer):
    def __init__(self, value: float = 0.0):
        self.value = float(value)

    def __call__(self, kind, shape, rng):
        return np.full(shape, self.value, np.float32)


class Zero(Constant):
    def __init__(self):
        super().__init__(0.0)

    def dumps(self) -> str:
        return json.dumps(["zero", {}])


class One(Constant):
    def __init__(self):
        super().__init__(1.0)

    def dumps(self) -> str:
        return json.dumps(["one", {}])


def _uniform(rng, shape, scale) -> np.ndarray:
    out = rng.random(shape, dtype=np.float32)
    out *= np.float32(2 * scale)
    out -= np.float32(scale)
    return out


init = types.SimpleNamespace(Initializer=Initializer, Xavier=Xavier, Uniform=Uniform,
                             Normal=Normal, Constant=Constant, Zero=Zero, One=One)


def _initializer_from_attr(text: str, node: str) -> Initializer:
    """A variable's ``__init__`` attribute (``'["xavier", {...}]'`` as MXNet dumps it)."""
    try:
        kind, kwargs = json.loads(text)
        cls = {"xavier": Xavier, "uniform": Uniform, "normal": Normal, "constant": Constant,
               "zero": Zero, "zeros": Zero, "one": One, "ones": One}[str(kind).lower()]
        return cls(**dict(kwargs))
    except GraphrtError as err:
        raise err.locate(node=node)
    except (ValueError, TypeError, KeyError):
        raise UnsupportedError(f"variable initializer {text!r} is not supported "
                               "(xavier, uniform, normal, constant, zero, one)", node=node) from None


# ============================================================================ conversion

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


def _canonical_params(params: Any, file: str | None) -> tuple[dict[str, np.ndarray], str | None]:
    if params is None:
        return {}, None
    if isinstance(params, (str, os.PathLike, bytes, bytearray, memoryview)):
        pfile = None if isinstance(params, (bytes, bytearray, memoryview)) else str(params)
        params = read_params(params, file=pfile)
    else:
        pfile = None
    if not isinstance(params, Mapping):
        raise WeightError(f"params must be a dict, a .params path or bytes, got "
                          f"{type(params).__name__}", file=file)
    out = {}
    for key, value in params.items():
        key = str(key)
        for prefix in ("arg:", "aux:"):
            if key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out, pfile


class _Converter:
    """Walks a SymbolGraph and builds the Graph."""

    def __init__(self, sg: SymbolGraph, *, file, lines, input_shape, params, seed, initializer,
                 name, allow_missing):
        self.sg, self.file = sg, file
        self.lines = lines or [None] * len(sg.nodes)
        self.input_shape = input_shape
        self.params, self.params_file = _canonical_params(params, file)
        self.have_params = params is not None
        self.rng = np.random.default_rng(seed)
        self.initializer = initializer or Xavier()
        self.allow_missing = allow_missing
        self.graph = Graph(name)
        self.tensors: dict[tuple[int, int], str] = {}
        self.param_shapes: dict[str, tuple] = {}
        self.index = 0  # node being converted

    # ---- locations and attributes -------------------------------------------------------------
    def where(self, i: int | None = None) -> dict:
        i = self.index if i is None else i
        sn = self.sg.nodes[i]
        return dict(node=sn.name, op=sn.op, file=self.file, line=self.lines[i])

    def source(self, i: int | None = None) -> Source:
        i = self.index if i is None else i
        sn = self.sg.nodes[i]
        return Source(layer=sn.name, type=sn.op, file=self.file, line=self.lines[i])

    def attr(self, key: str, kind: str, default: Any = _REQUIRED) -> Any:
        sn = self.sg.nodes[self.index]
        text = sn.attrs.get(key)
        if text is None:
            if default is _REQUIRED:
                raise AttrError(f"{sn.op} needs attribute {key!r}", **self.where())
            return default
        try:
            value = parse_attr(text, kind, key)
        except GraphrtError as err:
            raise err.locate(**self.where())
        if value is None:
            if default is _REQUIRED:
                raise AttrError(f"{sn.op} needs attribute {key!r}, got None", **self.where())
            return default
        if kind == "tuple" and any(v is None for v in value):
            raise AttrError(f"attribute {key!r}: {text!r} has a None item", **self.where())
        return value

    def positive(self, key: str, value, allow_zero=False):
        vals = value if isinstance(value, tuple) else (value,)
        if any(v < 0 or (v == 0 and not allow_zero) for v in vals):
            raise AttrError(f"attribute {key!r} must be {'>= 0' if allow_zero else 'positive'}, "
                            f"got {value!r}", **self.where())
        return value

    def spatial(self, key: str, default: tuple, nd: int = 2, allow_zero=False) -> tuple:
        value = self.attr(key, "tuple", default)
        if value == ():  # MXNet writes "()" for "not set"
            if default is _REQUIRED:
                raise AttrError(f"attribute {key!r} is empty", **self.where())
            value = default
        if len(value) != nd:
            raise UnsupportedError(f"attribute {key!r} = {value} has {len(value)} dimensions; "
                                   f"graphrt supports {nd}-D (NCHW) only", **self.where())
        return self.positive(key, value, allow_zero)

    def choice(self, key: str, default: str, options: Sequence[str], supported=None) -> str:
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
        sn = self.sg.nodes[self.index]
        if name is None:
            name = sn.name
        elif name in self.graph.specs or name in self.graph.nx:
            name = self.graph.unique_name(name)
        try:
            return self.graph.add_node(op, list(inputs), name=name, attrs=attrs or {},
                                       source=self.source())
        except GraphrtError as err:
            raise err.locate(**self.where())

    def spec(self, tensor: str):
        return self.graph.specs[tensor]

    def data(self, slot: int) -> str:
        """The tensor feeding input ``slot`` of the current node."""
        sn = self.sg.nodes[self.index]
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
        sn = self.sg.nodes[self.index]
        if slot >= len(sn.inputs):
            raise GraphError(f"{sn.op} node has {len(sn.inputs)} inputs, its {kind} (input {slot}) "
                             "is missing", **self.where())
        src_index, out = sn.inputs[slot]
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
        if pname in self.params:
            value = self._loaded(pname, shape)
        elif self.have_params and not self.allow_missing:
            raise WeightError(f"parameter {pname!r} ({kind} of node {sn.name!r}, shape {shape}) is "
                              f"missing from the params" + (f" file {self.params_file}"
                                                            if self.params_file else ""),
                              **self.where())
        else:
            if any(d <= 0 for d in shape):
                raise ShapeError(f"parameter {pname!r} would have shape {shape}", **self.where())
            init_attr = var.attrs.get("__init__")
            initializer = (_initializer_from_attr(init_attr, pname) if init_attr
                           else self.initializer)
            try:
                value = initializer(kind, shape, self.rng)
            except GraphrtError as err:
                raise err.locate(**self.where())
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
        try:
            return float(parse_attr(text, "float", key))
        except GraphrtError as err:
            raise err.locate(**self.where(i))

    def _loaded(self, pname: str, shape: tuple) -> np.ndarray:
        value = self.params[pname]
        sn = self.sg.nodes[self.index]
        try:
            arr = np.asarray(value)
        except Exception:  # noqa: BLE001 - any array-like conversion failure
            raise WeightError(f"parameter {pname!r} is not an array", **self.where()) from None
        if arr.dtype.kind != "f":
            raise WeightError(f"parameter {pname!r} has dtype {arr.dtype}, expected floating point",
                              **self.where())
        if tuple(arr.shape) != shape:
            raise WeightError(f"parameter {pname!r} of node {sn.name!r} has shape "
                              f"{tuple(arr.shape)}, expected {shape}", **self.where())
        return np.array(arr, dtype=np.float32)

    # ---- the walk -----------------------------------------------------------------------------
    def run(self, input_shape) -> Graph:
        sg = self.sg
        needed = self._reachable()
        data_vars = self._data_variables(needed)
        shapes = self._input_shapes(data_vars, input_shape)
        for i, sn in enumerate(sg.nodes):
            if i not in needed:
                continue
            self.index = i
            if sn.op == "null":
                if i in shapes:
                    try:
                        self.graph.add_input(sn.name, shapes[i])
                    except GraphrtError as err:
                        raise err.locate(**self.where())
                    self.tensors[(i, 0)] = sn.name
                continue
            spec = op_spec(sn.op)
            outs = spec.convert(self, sn)
            outs = [outs] if isinstance(outs, str) else list(outs)
            for k, t in enumerate(outs):
                self.tensors[(i, k)] = t
        outputs = []
        for src, out in sg.heads:
            if (src, out) not in self.tensors:
                self.index = src
                raise UnsupportedError(f"output {out} of {sg.nodes[src].name!r} is a graph head "
                                       "but graphrt does not produce it", **self.where())
            outputs.append(self.tensors[(src, out)])
        self.graph.set_outputs(outputs)
        return self.graph

    def _reachable(self) -> set[int]:
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
            args = spec.arg_names(sn.attrs) if spec.args is not None else ()
            for slot, (src, _) in enumerate(sn.inputs):
                arg = args[slot] if slot < len(args) else "data"
                if arg not in spec.roles and self.sg.nodes[src].op == "null":
                    data.add(src)
        data.update(i for i, _ in self.sg.heads if self.sg.nodes[i].op == "null")
        return sorted(data)

    def _input_shapes(self, data_vars: list[int], input_shape) -> dict[int, tuple]:
        names = {self.sg.nodes[i].name: i for i in data_vars}
        given: dict[str, Any] = {}
        if isinstance(input_shape, Mapping):
            unknown = sorted(set(input_shape) - set(names))
            if unknown:
                raise ShapeError(f"input_shape names {unknown}, which are not data inputs of the "
                                 f"symbol (inputs: {sorted(names)})", file=self.file)
            given = dict(input_shape)
        elif input_shape is not None:
            if "data" in names:
                given["data"] = input_shape
            elif len(names) == 1:
                given[next(iter(names))] = input_shape
            elif not names:
                raise ShapeError("input_shape is given but the symbol has no data input",
                                 file=self.file)
            else:
                raise ShapeError(f"the symbol has {len(names)} data inputs {sorted(names)}: pass "
                                 "input_shape as a dict", file=self.file)
        shapes = {}
        for vname, i in names.items():
            self.index = i
            if vname in given:
                shape = given[vname]
                try:
                    shape = tuple(int(d) for d in shape)
                except (TypeError, ValueError):
                    raise ShapeError(f"input_shape for {vname!r} must be a tuple of ints, got "
                                     f"{shape!r}", **self.where()) from None
            elif "__shape__" in self.sg.nodes[i].attrs:
                full = self.attr("__shape__", "tuple")
                shape = tuple(full)[1:]
            else:
                raise ShapeError(f"the shape of input {vname!r} is unknown: pass "
                                 f"input_shape=(C, H, W) or {{{vname!r}: (C, H, W)}}",
                                 **self.where())
            if any(d is None or d <= 0 for d in shape):
                raise ShapeError(f"input {vname!r} has a non-positive dimension {shape}",
                                 **self.where())
            shapes[i] = (None,) + shape
        return shapes


def to_graph(symbol: Symbol | SymbolGraph, input_shape=None, params=None, seed: int = 0, *,
             initializer: Initializer | None = None, allow_missing: bool = False,
             name: str = "mxnet", file: str | None = None, lines=None) -> Graph:
    """Convert a symbol into a :class:`Graph` (see the module docstring).

    ``input_shape``: (C, H, W) for the ``data`` input (or the only one), or a dict name -> shape.
    ``params``: None (initialize as ``initializer``, default ``Xavier()``, seeded by ``seed``), a
    dict name -> array, or a ``.params`` path/bytes. With ``allow_missing`` parameters absent from
    ``params`` are initialized instead of raising WeightError.
    """
    if isinstance(symbol, Symbol):
        sg = symbol.to_symbol_graph()
    elif isinstance(symbol, SymbolGraph):
        sg = symbol
    else:
        raise GraphError(f"to_graph takes a Symbol, got {type(symbol).__name__}")
    conv = _Converter(sg, file=file, lines=lines, input_shape=input_shape, params=params,
                      seed=seed, initializer=initializer, name=name, allow_missing=allow_missing)
    return conv.run(input_shape)


def load_mxnet(symbol_json_path: str | os.PathLike, params=None, input_shape=None, seed: int = 0,
               **kwargs) -> Graph:
    """Load ``<prefix>-symbol.json`` (and ``params``: a ``.params`` path or a dict) as a Graph."""
    file = str(symbol_json_path)
    data = _read_bytes(symbol_json_path)
    sg = read_symbol_json(data, file=file)  # raises ParseError on anything malformed
    text = data.decode("utf-8-sig")
    stem = Path(file).name
    for suffix in ("-symbol.json", ".json"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return to_graph(sg, input_shape=input_shape, params=params, seed=seed, name=stem or "mxnet",
                    file=file, lines=_node_lines(text, sg.nodes), **kwargs)


# ============================================================================ converters

CONV_ATTRS = ("kernel stride dilate pad num_filter num_group no_bias workspace cudnn_tune cudnn_off "
              "layout")


@_op("Convolution", ("data", "weight", "bias"), CONV_ATTRS, roles={"weight": "weight",
                                                                  "bias": "bias"})
def _convolution(c: _Converter, sn: SymbolNode):
    kernel = c.spatial("kernel", _REQUIRED)
    stride = c.spatial("stride", (1, 1))
    dilate = c.spatial("dilate", (1, 1))
    pad = c.spatial("pad", (0, 0), allow_zero=True)
    num_filter = c.positive("num_filter", c.attr("num_filter", "int"))
    groups = c.positive("num_group", c.attr("num_group", "int", 1))
    no_bias = c.attr("no_bias", "bool", False)
    c.check_layout()
    x = c.data(0)
    xs = c.spec(x)
    if len(xs.shape) != 4:
        raise ShapeError(f"Convolution with a 2-D kernel expects a 4-D NCHW input, got {xs}",
                         **c.where())
    channels = xs.shape[1]
    if channels % groups or num_filter % groups:
        raise ShapeError(f"num_group={groups} must divide the {channels} input channels and "
                         f"num_filter={num_filter}", **c.where())
    inputs = [x, c.param(1, "weight", (num_filter, channels // groups) + kernel)]
    if not no_bias:
        inputs.append(c.param(2, "bias", (num_filter,)))
    return c.add("conv2d", inputs, {"stride": stride, "dilation": dilate, "groups": groups,
                                    "pads": (pad[0], pad[0], pad[1], pad[1])})


@_op("Activation", ("data",), "act_type")
def _activation(c: _Converter, sn: SymbolNode):
    act = c.choice("act_type", _REQUIRED, ("relu", "sigmoid", "tanh", "softrelu", "softsign",
                                           "log_sigmoid", "mish"), ("relu", "sigmoid", "tanh"))
    return c.add(act, [c.data(0)])


@_op("LeakyReLU", ("data", "gamma"), "act_type slope lower_bound upper_bound",
     roles={"gamma": "gamma"}, outputs=lambda a: 2 if a.get("act_type") == "rrelu" else 1)
def _leaky_relu(c: _Converter, sn: SymbolNode):
    c.choice("act_type", "leaky", ("leaky", "prelu", "rrelu", "elu", "selu", "gelu"), ("leaky",))
    slope = c.attr("slope", "float", 0.25)
    return c.add("relu", [c.data(0)], {"negative_slope": slope})


def _pool_outputs(attrs):
    return 2 if attrs.get("pool_type", "max").strip() == "max" else 1


@_op("Pooling", ("data",), "kernel pool_type global_pool cudnn_off pooling_convention stride pad "
     "p_value count_include_pad layout", outputs=_pool_outputs)
def _pooling(c: _Converter, sn: SymbolNode):
    pool_type = c.choice("pool_type", "max", ("max", "avg", "sum", "lp"), ("max", "avg"))
    global_pool = c.attr("global_pool", "bool", False)
    convention = c.choice("pooling_convention", "valid", ("valid", "full", "same"),
                          ("valid", "full"))
    kernel = c.spatial("kernel", (1, 1) if global_pool else _REQUIRED)
    stride = c.spatial("stride", (1, 1))
    pad = c.spatial("pad", (0, 0), allow_zero=True)
    include_pad = c.attr("count_include_pad", "bool", True)
    c.check_layout()
    x = c.data(0)
    attrs = {"kernel": kernel, "stride": stride, "pads": (pad[0], pad[0], pad[1], pad[1]),
             "ceil_mode": convention == "full", "global_pool": global_pool}
    if pool_type == "avg":
        attrs["count_include_pad"] = include_pad
    out = c.add("max_pool" if pool_type == "max" else "avg_pool", [x], attrs)
    xs, ys = c.spec(x), c.spec(out)
    if not global_pool and len(xs.shape) == 4:
        # MXNet's own output size; graphrt drops a last ceil-mode window that starts in the padding
        rnd = math.ceil if convention == "full" else math.floor
        want = tuple(1 + int(rnd((xs.shape[2 + d] + 2 * pad[d] - kernel[d]) / stride[d]))
                     for d in range(2))
        if tuple(ys.shape[2:]) != want:
            raise UnsupportedError(f"MXNet gives this pooling an output of {want[0]}x{want[1]} "
                                   f"(its last window starts in the padding); graphrt computes "
                                   f"{ys.shape[2]}x{ys.shape[3]}", **c.where())
    return out


@_op("LRN", ("data",), "alpha beta knorm nsize", outputs=lambda a: 2)
def _lrn(c: _Converter, sn: SymbolNode):
    size = c.positive("nsize", c.attr("nsize", "int"))
    return c.add("lrn", [c.data(0)], {"size": size, "alpha": c.attr("alpha", "float", 1e-4),
                                      "beta": c.attr("beta", "float", 0.75),
                                      "k": c.attr("knorm", "float", 2.0)})


@_op("Flatten", ("data",), "")
def _flatten(c: _Converter, sn: SymbolNode):
    x = c.data(0)
    if len(c.spec(x).shape) < 2:
        raise ShapeError(f"Flatten expects a batched input, got {c.spec(x)}", **c.where())
    return c.add("flatten", [x], {"axis": 1})


@_op("FullyConnected", ("data", "weight", "bias"), "num_hidden no_bias flatten",
     roles={"weight": "weight", "bias": "bias"})
def _fully_connected(c: _Converter, sn: SymbolNode):
    hidden = c.positive("num_hidden", c.attr("num_hidden", "int"))
    no_bias = c.attr("no_bias", "bool", False)
    flatten = c.attr("flatten", "bool", True)
    x = c.data(0)
    xs = c.spec(x)
    if len(xs.shape) > 2:
        if not flatten:
            raise UnsupportedError(f"FullyConnected(flatten=False) over a {len(xs.shape)}-D input "
                                   f"{xs} (a dense over the last axis) is not supported",
                                   **c.where())
        x = c.add("flatten", [x], {"axis": 1}, name=f"{sn.name}_flatten")
        xs = c.spec(x)
    if len(xs.shape) != 2:
        raise ShapeError(f"FullyConnected expects a batched input, got {xs}", **c.where())
    inputs = [x, c.param(1, "weight", (hidden, xs.shape[1]))]
    if not no_bias:
        inputs.append(c.param(2, "bias", (hidden,)))
    return c.add("dense", inputs)


@_op("Dropout", ("data",), "p mode axes cudnn_off", outputs=lambda a: 2)
def _dropout(c: _Converter, sn: SymbolNode):
    p = c.attr("p", "float", 0.5)
    c.choice("mode", "training", ("training", "always"), ("training",))
    if not 0.0 <= p < 1.0:
        raise AttrError(f"dropout p must be in [0, 1), got {p}", **c.where())
    return c.add("dropout", [c.data(0)], {"rate": p})


@_op("BatchNorm", ("data", "gamma", "beta", "moving_mean", "moving_var"),
     "eps momentum fix_gamma use_global_stats output_mean_var axis cudnn_off min_calib_range "
     "max_calib_range", roles={"gamma": "gamma", "beta": "beta", "moving_mean": "moving_mean",
                               "moving_var": "moving_var"},
     aux=("moving_mean", "moving_var"), outputs=lambda a: 3)
def _batch_norm(c: _Converter, sn: SymbolNode):
    eps = c.attr("eps", "float", 1e-3)
    if not eps > 0:
        raise AttrError(f"eps must be positive, got {eps}", **c.where())
    fix_gamma = c.attr("fix_gamma", "bool", True)
    axis = c.attr("axis", "int", 1)
    x = c.data(0)
    xs = c.spec(x)
    if axis not in (1, 1 - len(xs.shape)):
        raise UnsupportedError(f"BatchNorm over axis {axis} is not supported (only the channel "
                               "axis 1)", **c.where())
    if len(xs.shape) < 2:
        raise ShapeError(f"BatchNorm expects (N, C, ...) input, got {xs}", **c.where())
    ch = (xs.shape[1],)
    gamma = c.param(1, "gamma", ch)
    if fix_gamma:  # MXNet ignores the stored gamma: it is 1
        c.graph.params[gamma] = np.ones(ch, np.float32)
        c.graph.param_info[gamma].trainable = False
        c.graph.param_info[gamma].lr_mult = 0.0
    beta = c.param(2, "beta", ch)
    mean = c.param(3, "moving_mean", ch)
    var = c.param(4, "moving_var", ch)
    return c.add("batch_norm", [x, mean, var, gamma, beta], {"eps": eps})


@_op("Concat", None, "dim num_args")
def _concat(c: _Converter, sn: SymbolNode):
    dim = c.attr("dim", "int", 1)
    n = c.attr("num_args", "int", len(sn.inputs))
    if n != len(sn.inputs):
        raise GraphError(f"num_args={n} but the node has {len(sn.inputs)} inputs", **c.where())
    inputs = [c.data(i) for i in range(len(sn.inputs))]
    rank = len(c.spec(inputs[0]).shape)
    return c.add("concat", inputs, {"axis": dim + rank if dim < 0 else dim})


@_op("SoftmaxOutput", ("data", "label"), "grad_scale ignore_label multi_output use_ignore "
     "preserve_shape normalization out_grad smooth_alpha", roles={"label": "label"})
def _softmax_output(c: _Converter, sn: SymbolNode):
    multi = c.attr("multi_output", "bool", False)
    preserve = c.attr("preserve_shape", "bool", False)
    x = c.data(0)
    shape = c.spec(x).shape
    if len(shape) <= 2 or multi:
        return c.add("softmax", [x], {"axis": 1})
    if preserve:
        return c.add("softmax", [x], {"axis": len(shape) - 1})
    flat = c.add("flatten", [x], {"axis": 1}, name=f"{sn.name}_flatten")
    soft = c.add("softmax", [flat], {"axis": 1}, name=f"{sn.name}_softmax")
    return c.add("reshape", [soft], {"shape": shape[1:]})


@_op("softmax", ("data", "length"), "axis temperature dtype use_length",
     roles={"length": "label"})
def _softmax(c: _Converter, sn: SymbolNode):
    if c.attr("use_length", "bool", False):
        raise UnsupportedError("softmax with use_length is not supported", **c.where())
    x = c.data(0)
    rank = len(c.spec(x).shape)
    axis = c.attr("axis", "int", -1)
    if not -rank <= axis < rank or axis % rank == 0:
        raise ShapeError(f"softmax axis {axis} is not a non-batch axis of {c.spec(x)}",
                         **c.where())
    temperature = c.attr("temperature", "float", 1.0)
    if temperature != 1.0:
        if not temperature > 0:
            raise AttrError(f"temperature must be positive, got {temperature}", **c.where())
        x = c.add("scale", [x], {"scale": 1.0 / temperature}, name=f"{sn.name}_temperature")
    return c.add("softmax", [x], {"axis": axis % rank})


def _same_shape_pair(c: _Converter, sn: SymbolNode) -> list[str]:
    a, b = c.data(0), c.data(1)
    if c.spec(a).shape != c.spec(b).shape:
        raise ShapeError(f"{sn.op} needs inputs of one shape, got {c.spec(a)} and {c.spec(b)}",
                         **c.where())
    return [a, b]


@_op("elemwise_add", ("lhs", "rhs"), "")
def _elemwise_add(c: _Converter, sn: SymbolNode):
    return c.add("add", _same_shape_pair(c, sn))


@_op("elemwise_sub", ("lhs", "rhs"), "")
def _elemwise_sub(c: _Converter, sn: SymbolNode):
    return c.add("add", _same_shape_pair(c, sn), {"coeffs": (1.0, -1.0)})


@_op("elemwise_mul", ("lhs", "rhs"), "")
def _elemwise_mul(c: _Converter, sn: SymbolNode):
    return c.add("mul", _same_shape_pair(c, sn))


def _scalar_op(mx_name: str, make: Callable[[float], dict]):
    @_op(mx_name, ("data",), "scalar is_int")
    def convert(c: _Converter, sn: SymbolNode):
        s = c.attr("scalar", "float")
        if mx_name == "_div_scalar" and s == 0:
            raise AttrError("division by a zero scalar", **c.where())
        return c.add("scale", [c.data(0)], make(s))
    return convert


_scalar_op("_plus_scalar", lambda s: {"shift": s})
_scalar_op("_minus_scalar", lambda s: {"shift": -s})
_scalar_op("_rminus_scalar", lambda s: {"scale": -1.0, "shift": s})
_scalar_op("_mul_scalar", lambda s: {"scale": s})
_scalar_op("_div_scalar", lambda s: {"scale": 1.0 / s})


def mxnet_reshape(src: tuple, target: tuple, reverse: bool = False) -> tuple:
    """MXNet's Reshape shape rule (0 copy, -1 infer, -2 copy rest, -3 merge two, -4 split one).

    ``src`` holds None for the batch, which must come out as the one None of the result (copied by
    0/-2, or inferred by a -1 when the other sizes account for every value of an item). Raises
    ValueError with the reason when the target does not fit.
    """
    if reverse:
        if any(d in (-3, -4) for d in target):
            raise ValueError("reverse=True with -3/-4 is not supported")
        return tuple(reversed(mxnet_reshape(tuple(reversed(src)), tuple(reversed(target)))))
    out: list = []
    i = k = 0
    t = list(target)
    while k < len(t):
        d = t[k]
        if d > 0:
            out.append(d)
            i += 1
        elif d == 0:
            if i >= len(src):
                raise ValueError(f"0 at position {k} has no input dimension to copy")
            out.append(src[i])
            i += 1
        elif d == -1:
            out.append(-1)
            i += 1
        elif d == -2:
            out.extend(src[i:])
            i = len(src)
        elif d == -3:
            if i + 1 >= len(src):
                raise ValueError("-3 needs two input dimensions to merge")
            if src[i] is None or src[i + 1] is None:
                raise ValueError("-3 would merge the batch dimension into another")
            out.append(src[i] * src[i + 1])
            i += 2
        elif d == -4:
            if k + 2 >= len(t) or i >= len(src):
                raise ValueError("-4 needs an input dimension and two sizes after it")
            whole, a, b = src[i], t[k + 1], t[k + 2]
            if whole is None:
                raise ValueError("-4 would split the batch dimension")
            if a == -1 and b > 0:
                a = whole // b
            elif b == -1 and a > 0:
                b = whole // a
            if a <= 0 or b <= 0 or a * b != whole:
                raise ValueError(f"-4 cannot split {whole} into {t[k + 1]} x {t[k + 2]}")
            out.extend([a, b])
            i += 1
            k += 2
        else:
            raise ValueError(f"invalid size {d} in the target shape")
        k += 1
    if out.count(-1) > 1:
        raise ValueError("more than one -1 in the target shape")
    total = math.prod(d for d in src if d is not None)
    known = math.prod(d for d in out if d is not None and d != -1)
    if -1 in out:
        if None in out or None not in src:  # -1 is an ordinary inferred size
            if known == 0 or total % known:
                raise ValueError(f"cannot infer -1: {total} values per item, {known} known")
            out[out.index(-1)] = total // known
        elif known == total:  # the -1 stands for the batch
            out[out.index(-1)] = None
        else:
            raise ValueError("the -1 would mix the batch with other dimensions")
    if None in src and out.count(None) != 1:
        raise ValueError("the target shape must keep the batch dimension")
    if math.prod(d for d in out if d is not None) != total:
        raise ValueError(f"{total} values per item cannot become {tuple(out)}")
    return tuple(out)


@_op("Reshape", ("data",), "shape reverse target_shape keep_highest")
def _reshape(c: _Converter, sn: SymbolNode):
    if c.attr("target_shape", "tuple", ()) not in ((), None):
        raise UnsupportedError("Reshape's deprecated target_shape is not supported; use shape",
                               **c.where())
    target = c.attr("shape", "tuple")
    reverse = c.attr("reverse", "bool", False)
    x = c.data(0)
    src = c.spec(x).shape
    try:
        out = mxnet_reshape(src, tuple(target), reverse)
    except ValueError as exc:
        raise ShapeError(f"cannot reshape {c.spec(x)} to {tuple(target)}: {exc}",
                         **c.where()) from None
    if out[:1] != (None,):
        raise UnsupportedError(f"Reshape to {tuple(target)} moves the batch dimension of "
                               f"{c.spec(x)}", **c.where())
    return c.add("reshape", [x], {"shape": out[1:]})


# ============================================================================ the mx.sym namespace

sym = symbol = types.SimpleNamespace(
    Symbol=Symbol, Variable=Variable, var=Variable, Group=Group, load=load, load_json=load_json,
    Convolution=_symbol_function("Convolution"),
    Activation=_symbol_function("Activation"),
    LeakyReLU=_symbol_function("LeakyReLU"),
    Pooling=_symbol_function("Pooling"),
    LRN=_symbol_function("LRN"),
    Flatten=_symbol_function("Flatten"),
    flatten=_symbol_function("Flatten", "flatten"),
    FullyConnected=_symbol_function("FullyConnected"),
    Dropout=_symbol_function("Dropout"),
    BatchNorm=_symbol_function("BatchNorm"),
    Concat=_symbol_function("Concat"),
    concat=_symbol_function("Concat", "concat"),
    SoftmaxOutput=_symbol_function("SoftmaxOutput"),
    softmax=_symbol_function("softmax"),
    elemwise_add=_symbol_function("elemwise_add"),
    elemwise_sub=_symbol_function("elemwise_sub"),
    elemwise_mul=_symbol_function("elemwise_mul"),
    Reshape=_symbol_function("Reshape"),
    reshape=_symbol_function("Reshape", "reshape"),
)

__all__ = ["sym", "symbol", "name", "init", "Symbol", "Variable", "Group", "load", "load_json",
           "to_graph", "load_mxnet", "NameManager", "Prefix", "Xavier", "OPS", "mxnet_reshape"]
