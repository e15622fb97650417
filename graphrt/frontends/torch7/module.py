"""The base of the Torch7-like modules and the builder that turns them into a graph.

A :class:`Module` remembers where it was constructed; ``to_graph`` walks the module tree, each
module appending its nodes through a :class:`GraphBuilder` with its index path in the tree
(``add_nodes(builder, x, path)``), which names its nodes ``<path>_<Type>`` and its parameters
``<path>_<field>`` (see :mod:`graphrt.frontends.torch7`).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ...ir.errors import GraphrtError, ShapeError
from ...ir import Graph, Source
from ..initializers import caller_location, shape_str, torch_default


class GraphBuilder:
    """State while a module tree is turned into a graph: the graph and the random generator the
    initializers draw from, in module order."""

    def __init__(self, graph: Graph, rng: np.random.Generator):
        self.g = graph
        self.rng = rng

    def shape(self, tensor: str) -> tuple:
        """The graph shape of ``tensor``."""
        return self.g.specs[tensor].shape

    def require_rank(self, module: "Module", path: str, x: str, rank: int, what: str) -> tuple:
        """The shape of ``x``; a ShapeError naming the module unless it has ``rank`` dimensions."""
        s = self.shape(x)
        if len(s) != rank:
            raise module.error(ShapeError, path, f"{module!r} expects {what}, got shape "
                                                 f"{shape_str(s)}")
        return s

    def node(self, module: "Module", path: str, op: str, inputs: Sequence[str], attrs=None,
             suffix: str | None = None) -> str:
        """Append the module's node ``<path>_<Type>`` (or a helper ``<path>_<Type>/<suffix>``)."""
        base = module.node_name(path)
        name = base if suffix is None else f"{base}/{suffix}"
        return self.g.add_node(op, list(inputs), name=name, attrs=attrs,
                               source=Source(layer=base, type=module.type_name, file=module.file,
                                             line=module.line))

    def param(self, path: str, field: str, value: np.ndarray, trainable: bool = True) -> str:
        """Add the parameter ``<path>_<field>`` (Torch's field name) to the graph."""
        return self.g.add_param(f"{path}_{field}", np.ascontiguousarray(value, np.float32),
                                trainable=trainable)

    def uniform(self, shape: tuple, fan_in: int) -> np.ndarray:
        """Values drawn as Torch's ``reset()`` draws them: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
        return torch_default(shape, fan_in, fan_in, self.rng)

    def weight_and_bias(self, path: str, weight_shape: tuple, fan_in: int,
                        bias: bool) -> list[str]:
        """``<path>_weight`` of ``weight_shape`` (outputs first) and, if ``bias``, ``<path>_bias``,
        drawn in that order with :meth:`uniform`."""
        params = [self.param(path, "weight", self.uniform(weight_shape, fan_in))]
        if bias:
            params.append(self.param(path, "bias", self.uniform((weight_shape[0],), fan_in)))
        return params


class Module:
    """Base of every module: remembers where it was constructed."""

    root_path = "1"  # the path of a module used as the root itself (a container's is "")

    def __init__(self):
        self.file, self.line = caller_location()

    @property
    def type_name(self) -> str:
        """The Torch class name (``nn.<type_name>``)."""
        return type(self).__name__

    def node_name(self, path: str) -> str:
        """The name of the module's node at ``path``: ``<path>_<Type>``."""
        return f"{path}_{self.type_name}" if path else self.type_name

    def error(self, cls: type, path: str, message: str) -> GraphrtError:
        """An error of class ``cls`` naming the module's node and where it was written."""
        return cls(message, node=self.node_name(path), op=self.type_name, file=self.file,
                   line=self.line)

    def add_nodes(self, b: GraphBuilder, x: str, path: str) -> str:  # pragma: no cover
        """Append the module's nodes on tensor ``x``; returns the output tensor."""
        raise NotImplementedError

    def _repr_args(self) -> str:
        return ""

    def __repr__(self) -> str:
        args = self._repr_args()
        return f"nn.{self.type_name}" + (f"({args})" if args else "")

    def to_graph(self, input_shape: Sequence[int], seed: int = 0, name: str | None = None) -> Graph:
        """The module as a verified graph on inputs ``(None, *input_shape)``."""
        if input_shape is None:
            raise ShapeError("to_graph needs input_shape=(C, H, W) (or (features,)), batch excluded",
                             file=self.file, line=self.line)
        shape = tuple(input_shape)
        if not shape or any(int(d) <= 0 for d in shape):
            raise ShapeError(f"input_shape {shape} must hold positive sizes (batch excluded)",
                             file=self.file, line=self.line)
        g = Graph(name or "torch7_" + self.type_name.lower())
        b = GraphBuilder(g, np.random.default_rng(seed))
        x = g.add_input("input", (None,) + tuple(int(d) for d in shape))
        y = self.add_nodes(b, x, self.root_path)
        if y in g.inputs:  # an empty Sequential: keep one node so the graph has an output node
            y = b.node(self, self.root_path, "identity", [y], suffix="identity")
        g.set_outputs([y])
        g.verify()
        return g


class ElementwiseModule(Module):
    """Base of the modules that are one node ``op`` on their input (attributes from ``_attrs``)."""

    op = "identity"

    def _attrs(self) -> dict:
        return {}

    def add_nodes(self, b, x, path):
        return b.node(self, path, self.op, [x], attrs=self._attrs())


__all__ = ["GraphBuilder", "Module", "ElementwiseModule"]
