"""The dataflow graph every frontend produces and every pass rewrites.

A :class:`Graph` wraps a ``networkx.DiGraph`` whose nodes are op applications (:class:`Node`, a small
frozen dataclass) and whose edges carry the tensor flowing from producer to consumer. Tensors are
named; each has a :class:`TensorSpec` (shape with a symbolic batch dimension ``None`` first, dtype).
Graph inputs and parameters are tensors too but have no producing node: inputs are listed in
``graph.inputs``, parameters live in ``graph.params`` (a live mapping name -> numpy array in
canonical layout: convolution weights OIHW, dense weights (out, in)).

Example::

    g = Graph("tiny")
    x = g.add_input("data", (None, 20))
    w = g.add_param("fc_weight", np.zeros((10, 20), np.float32))
    y = g.add_node("dense", [x, w], name="fc")
    g.set_outputs([y])
    g.verify()
"""
from __future__ import annotations

import dataclasses
import heapq
import types
from typing import Iterable, Mapping, Sequence

import networkx as nx
import numpy as np

from . import limits, opset
from .errors import GraphError, GraphrtError
from .verify import verify
from .types import Source, TensorSpec, freeze

@dataclasses.dataclass(frozen=True)
class Node:
    """One op application: ordered input and output tensor names and frozen attributes.

    ``absorbed`` lists the source layers a fused node stands for (empty for plain nodes);
    ``device`` is set by the ``place`` pass ("host" or the executable's device kind); ``after`` names
    nodes that must run first although no tensor connects them (an optimizer update runs after every
    reader of the parameter it overwrites).
    """

    name: str
    op: str
    inputs: tuple
    outputs: tuple
    attrs: Mapping = dataclasses.field(default_factory=lambda: types.MappingProxyType({}))
    source: Source = dataclasses.field(default_factory=Source)
    absorbed: tuple = ()
    device: str | None = None
    after: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        object.__setattr__(self, "attrs", freeze(dict(self.attrs)))
        object.__setattr__(self, "absorbed", tuple(self.absorbed))
        object.__setattr__(self, "after", tuple(self.after))

    def replace(self, **changes) -> "Node":
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass
class ParamInfo:
    """Training metadata of a parameter (Caffe's ``param { lr_mult decay_mult }``)."""

    lr_mult: float = 1.0
    decay_mult: float = 1.0
    trainable: bool = True


class Graph:
    """A dataflow graph of :class:`Node` s over typed, named tensors."""

    def __init__(self, name: str = "graph"):
        self.name = name
        self.nx = nx.DiGraph()
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self.params: dict[str, np.ndarray] = {}
        self.param_info: dict[str, ParamInfo] = {}
        self.specs: dict[str, TensorSpec] = {}
        self._producer: dict[str, str] = {}
        # use lists (as torch.fx's Node.users): tensor -> the nodes reading it, and node name -> the
        # nodes naming it in their ``after``, each an insertion-ordered dict of node names
        self._consumers: dict[str, dict[str, None]] = {}
        self._dependents: dict[str, dict[str, None]] = {}
        self._seq: dict[str, int] = {}  # node -> rank of its insertion into self.nx (its nx order)
        self._next_seq = 0
        # unique_name: per base, the next index to try and a heap of freed indices below it
        self._name_next: dict[str, int] = {}
        self._name_holes: dict[str, list[int]] = {}
        self._order = 0
        self._topo: list[str] | None = None

    # ---- building ---------------------------------------------------------------------------
    def add_input(self, name: str, shape: Sequence, dtype: str = "float32") -> str:
        """Declare a graph input; ``shape[0]`` should be ``None`` (the batch)."""
        self._check_new_tensor(name)
        self.specs[name] = TensorSpec(tuple(shape), dtype)
        self.inputs.append(name)
        return name

    def add_param(self, name: str, value: np.ndarray, *, lr_mult: float = 1.0,
                  decay_mult: float = 1.0, trainable: bool = True) -> str:
        """Add a named parameter; ``graph.params[name]`` stays the live value."""
        self._check_new_tensor(name)
        value = np.asarray(value)
        if not value.flags.c_contiguous:  # (np.ascontiguousarray would turn a scalar into shape (1,))
            value = value.copy(order="C")
        self.params[name] = value
        self.param_info[name] = ParamInfo(float(lr_mult), float(decay_mult), trainable)
        self.specs[name] = TensorSpec(value.shape, value.dtype)
        return name

    def add_node(self, op: str, inputs: Sequence[str], *, name: str | None = None,
                 attrs: Mapping | None = None, outputs: Sequence[str] | None = None,
                 source: Source | None = None, absorbed: Sequence[str] = ()) -> str | tuple:
        """Append an op node, inferring its output specs now (errors name the node).

        Returns the output tensor name (a tuple of names for several outputs).
        """
        try:
            opdef = opset.lookup(op)
        except GraphrtError as err:  # name the node that asked for the unknown op
            raise err.locate(node=name, op=op, file=source and source.file,
                             line=source and source.line)
        name = name or self.unique_name(op)
        limits.count_nodes(len(self.nx) + 1, node=name, op=op, file=source and source.file)
        if name in self.nx:
            raise GraphError(f"duplicate node name {name!r}", node=name, op=op)
        attrs = opdef.normalize_attrs(dict(attrs or {}), node=name)
        n_out = opdef.num_outputs(attrs)
        outputs = tuple(outputs) if outputs is not None else (
            (name,) if n_out == 1 else tuple(f"{name}:{i}" for i in range(n_out)))
        node = Node(name, op, tuple(inputs), outputs, attrs, source or Source(), tuple(absorbed))
        for t in node.inputs:
            if t not in self.specs:
                raise GraphError(f"input {t!r} is not a graph input, parameter or node output",
                                 node=name, op=op, file=node.source.file, line=node.source.line)
        for t in outputs:
            self._check_new_tensor(t)
        out_specs = self.infer_node(node)
        self._insert(node, out_specs)
        return outputs[0] if len(outputs) == 1 else outputs

    def infer_node(self, node: Node) -> list[TensorSpec]:
        """Run the op's shape inference, attaching the node's location to any error."""
        opdef = opset.lookup(node.op)
        try:
            opset.check_arity(opdef, len(node.inputs), node)
            for t in node.inputs:
                if t not in self.specs:
                    raise GraphError(f"input {t!r} is not a graph input, parameter or node output")
            return opdef.infer(node.attrs, [self.specs[t] for t in node.inputs], node)
        except GraphrtError as err:
            raise err.locate(node=node.name, op=node.source.type or node.op,
                             file=node.source.file, line=node.source.line)

    def _insert(self, node: Node, out_specs: Sequence[TensorSpec], order: float | None = None):
        if order is None:
            order, self._order = self._order, self._order + 1
        self.nx.add_node(node.name, node=node, order=order)
        self._seq[node.name], self._next_seq = self._next_seq, self._next_seq + 1
        for t, spec in zip(node.outputs, out_specs):
            self.specs[t] = spec
            self._producer[t] = node.name
        for t in node.inputs:
            self._consumers.setdefault(t, {})[node.name] = None
        for before in node.after:
            self._dependents.setdefault(before, {})[node.name] = None
        self._wire(node)
        self._topo = None

    def _unlink(self, node: Node) -> None:
        """Drop ``node`` (about to leave self.nx) from the use lists of what it reads and waits for."""
        for t in node.inputs:
            users = self._consumers.get(t)
            if users is not None:
                users.pop(node.name, None)
                if not users:
                    del self._consumers[t]
        for before in node.after:
            deps = self._dependents.get(before)
            if deps is not None:
                deps.pop(node.name, None)
                if not deps:
                    del self._dependents[before]
        self._seq.pop(node.name, None)

    def _wire(self, node: Node) -> None:
        """Add the edges of ``node``: from its inputs' producers and its ``after`` nodes, and to the
        nodes that read its outputs or name it in their ``after``."""
        for t in node.inputs:
            if t in self._producer:
                self._add_edge(self._producer[t], node.name, t)
        for before in node.after:
            if before not in self.nx:
                raise GraphError(f"'after' names {before!r}, which is not a node", node=node.name)
            self._add_edge(before, node.name, None)
        # the nodes already reading an output or waiting for this node (a re-inserted node's
        # outputs may have readers), in self.nx's node order as a scan of all nodes would visit them
        later: dict[str, None] = {}
        for t in node.outputs:
            later.update(self._consumers.get(t, ()))
        later.update(self._dependents.get(node.name, ()))
        later.pop(node.name, None)
        for other in sorted(later, key=self._seq.__getitem__) if len(later) > 1 else later:
            o = self.node(other)
            for t in node.outputs:
                if t in o.inputs:
                    self._add_edge(node.name, other, t)
            if node.name in o.after:
                self._add_edge(node.name, other, None)

    def _add_edge(self, u: str, v: str, tensor: str | None):
        extra = () if tensor is None else (tensor,)
        if self.nx.has_edge(u, v):
            self.nx.edges[u, v]["tensors"] = tuple(dict.fromkeys(self.nx.edges[u, v]["tensors"] + extra))
        else:
            self.nx.add_edge(u, v, tensors=extra)

    def set_outputs(self, outputs: Iterable[str]):
        outputs = list(outputs)
        for t in outputs:
            if t not in self.specs:
                raise GraphError(f"output {t!r} is not a tensor of the graph")
        self.outputs = outputs

    def _check_new_tensor(self, name: str):
        if name in self.specs:
            raise GraphError(f"tensor name {name!r} is already used", node=name)

    def unique_name(self, base: str) -> str:
        """``base_i`` for the smallest ``i`` no tensor or node uses (O(1) amortized per call)."""
        def used(i):
            return f"{base}_{i}" in self.specs or f"{base}_{i}" in self.nx

        holes = self._name_holes.get(base)
        while holes and used(holes[0]):  # indices freed, then taken again
            heapq.heappop(holes)
        if holes:
            return f"{base}_{holes[0]}"
        i = self._name_next.get(base, 0)
        while used(i):
            i += 1
        self._name_next[base] = i  # every index below is used (or a hole in the heap)
        return f"{base}_{i}"

    def _freed(self, name: str) -> None:
        """Note that ``name`` stopped being a tensor or node name: unique_name may return it again."""
        if name in self.specs or name in self.nx:
            return
        base, sep, index = name.rpartition("_")
        if sep and index.isascii() and index.isdigit() and str(int(index)) == index \
                and int(index) < self._name_next.get(base, 0):
            heapq.heappush(self._name_holes.setdefault(base, []), int(index))

    # ---- reading ----------------------------------------------------------------------------
    def node(self, name: str) -> Node:
        return self.nx.nodes[name]["node"]

    @property
    def nodes(self) -> list[Node]:
        """All nodes in the deterministic topological order (ties broken by insertion order)."""
        return [self.node(n) for n in self.topological_order()]

    def topological_order(self) -> list[str]:
        if self._topo is None:
            order = self.nx.nodes
            try:
                self._topo = list(nx.lexicographical_topological_sort(
                    self.nx, key=lambda n: order[n]["order"]))
            except nx.NetworkXUnfeasible:
                cycle = nx.find_cycle(self.nx)
                raise GraphError("the graph has a cycle: " + " -> ".join(u for u, _ in cycle)
                                 + f" -> {cycle[0][0]}", node=cycle[0][0]) from None
        return list(self._topo)

    def producer(self, tensor: str) -> Node | None:
        name = self._producer.get(tensor)
        return None if name is None else self.node(name)

    def consumers(self, tensor: str) -> list[Node]:
        """The nodes reading ``tensor``, in schedule ("order" attribute) order."""
        nodes = self.nx.nodes
        return [nodes[c]["node"] for c in sorted(self._consumers.get(tensor, ()),
                                                 key=lambda c: nodes[c]["order"])]

    def is_param(self, tensor: str) -> bool:
        return tensor in self.params

    def num_params(self) -> int:
        return int(sum(v.size for v in self.params.values()))

    def __len__(self) -> int:
        return self.nx.number_of_nodes()

    def __contains__(self, name: str) -> bool:
        return name in self.nx

    def __repr__(self) -> str:
        return f"<Graph {self.name!r}: {len(self)} nodes, {self.num_params()} parameters>"

    # ---- rewriting (used by passes on a copy) -----------------------------------------------
    def copy(self) -> "Graph":
        """A structural copy; parameter arrays are shared (they are replaced, never mutated, by passes)."""
        g = Graph(self.name)
        g.nx = self.nx.copy()  # (copies each node's attribute dict)
        g.inputs, g.outputs = list(self.inputs), list(self.outputs)
        # ParamInfo is mutable: each copy gets its own, so freezing a layer in one leaves the other
        g.params = dict(self.params)
        g.param_info = {k: ParamInfo(**vars(v)) for k, v in self.param_info.items()}
        g.specs, g._producer, g._order = dict(self.specs), dict(self._producer), self._order
        g._consumers = {t: dict(users) for t, users in self._consumers.items()}
        g._dependents = {n: dict(deps) for n, deps in self._dependents.items()}
        g._seq, g._next_seq = dict(self._seq), self._next_seq
        g._name_next = dict(self._name_next)
        g._name_holes = {b: list(h) for b, h in self._name_holes.items()}
        g._topo = self._topo  # same nodes, edges and order: same order (never mutated, only replaced)
        return g

    def remove_node(self, name: str):
        node = self.node(name)
        for t in node.outputs:
            self.specs.pop(t, None)
            self._producer.pop(t, None)
        self._unlink(node)
        self.nx.remove_node(name)
        self._topo = None
        for t in (name,) + node.outputs:
            self._freed(t)

    def replace_node(self, name: str, new: Node):
        """Swap a node for another with the same outputs (attributes or inputs changed)."""
        old = self.node(name)
        if new.outputs != old.outputs:
            raise GraphError("replace_node keeps the outputs", node=name)
        specs = self.infer_node(new)  # before touching the graph, so a bad node leaves it intact
        order = self.nx.nodes[name]["order"]
        self._unlink(old)
        self.nx.remove_node(name)
        self._insert(new, specs, order)
        if new.name != name:
            self._freed(name)

    def schedule_after(self, name: str, anchors: Sequence[str]) -> None:
        """Move node ``name``'s schedule position up to just after the latest of ``anchors``
        (nodes; never down: a node already placed before that stays): the topological order then
        runs it as soon as it is ready there instead of where it was appended. Edges still decide;
        the position only breaks ties between ready nodes."""
        nodes = self.nx.nodes
        if not anchors:
            return
        latest = max(nodes[a]["order"] for a in anchors)
        if nodes[name]["order"] <= latest:
            return  # already before that
        nodes[name]["order"] = latest + 0.5
        self._topo = None

    def retag(self, name: str, **changes) -> None:
        """Change what a node says about itself — ``device``, ``absorbed``, ``source`` — in place:
        its inputs, outputs, attributes and edges stay, so nothing is re-inferred or rewired."""
        unknown = set(changes) - {"device", "absorbed", "source"}
        if unknown:
            raise GraphError(f"retag changes device, absorbed or source, not {sorted(unknown)}", node=name)
        self.nx.nodes[name]["node"] = self.node(name).replace(**changes)

    def splice(self, remove: Sequence[str], add: Sequence[Node]) -> None:
        """Replace the nodes ``remove`` by the nodes ``add`` (in order), rewiring edges by tensor name.

        The new nodes take the schedule position of the first removed node. Tensors that only the
        removed nodes produced disappear; consumers of a tensor a new node produces read it from there.
        """
        if remove:
            base = min(self.nx.nodes[r]["order"] for r in remove)
        else:
            base, self._order = self._order, self._order + 1
        for r in remove:
            self.remove_node(r)
        for i, node in enumerate(add):
            for t in node.inputs:
                if t not in self.specs:
                    raise GraphError(f"input {t!r} does not exist", node=node.name, op=node.op)
            self._insert(node, self.infer_node(node), base + i / (len(add) + 1))

    def replace_uses(self, old: str, new: str) -> None:
        """Make every consumer of tensor ``old`` (and the graph outputs) read ``new`` instead."""
        for c in self.consumers(old):
            self.rename_input(c.name, old, new)
        self.outputs = [new if t == old else t for t in self.outputs]

    def single_consumer(self, tensor: str) -> Node | None:
        """The only node reading ``tensor``, if exactly one does and it is not a graph output."""
        users = self._consumers.get(tensor, ())
        if len(users) != 1 or tensor in self.outputs:
            return None
        return self.node(next(iter(users)))

    def rename_input(self, node_name: str, old: str, new: str):
        """Make ``node_name`` read tensor ``new`` where it read ``old``."""
        node = self.node(node_name)
        inputs = tuple(new if t == old else t for t in node.inputs)
        self.replace_node(node_name, node.replace(inputs=inputs))

    def prune_unused_params(self):
        for p in [p for p in self.params if not self._consumers.get(p)]:
            del self.params[p], self.param_info[p], self.specs[p]
            self._freed(p)

    # ---- checking and reporting -------------------------------------------------------------
    def verify(self) -> "Graph":
        verify(self)
        return self

    def summary(self, batch: int = 1) -> str:
        rows = [("node", "op", "output shape", "params", "MFLOP")]
        total_flops = 0
        for n in self.nodes:
            in_specs = [self.specs[t] for t in n.inputs]
            out_specs = [self.specs[t] for t in n.outputs]
            flops, _ = opset.lookup(n.op).cost(n.attrs, in_specs, out_specs, batch)
            total_flops += flops
            nparams = sum(self.params[t].size for t in n.inputs if t in self.params)
            rows.append((n.name, n.op, ", ".join(str(s) for s in out_specs), str(nparams),
                         f"{flops / 1e6:.3f}"))
        rows.append(("total", f"{len(self)} nodes", "", str(self.num_params()),
                     f"{total_flops / 1e6:.3f}"))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def flops(self, batch: int = 1) -> int:
        return sum(opset.lookup(n.op).cost(n.attrs, [self.specs[t] for t in n.inputs],
                                     [self.specs[t] for t in n.outputs], batch)[0]
                   for n in self.nodes)
