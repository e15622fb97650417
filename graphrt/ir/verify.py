"""``verify(graph)``: the structural and type invariants every stage of a graph must hold.

Checks, in order: the graph is acyclic; every node's inputs are graph inputs, parameters or outputs
of exactly one node; each node's attributes pass its op's schema; shape inference reproduces the
recorded output specs; parameters match their specs; outputs exist; edges agree with inputs. Errors
name the failing node and its neighbours.
"""
from __future__ import annotations

from .errors import GraphError, GraphrtError
from . import opset


def _neighbours(graph: Graph, name: str) -> str:
    preds = sorted(graph.nx.predecessors(name))
    succs = sorted(graph.nx.successors(name))
    return f" (inputs from {preds or 'graph inputs'}, feeding {succs or 'graph outputs'})"


def verify(graph: Graph) -> None:
    """Raise a GraphrtError naming the first node that breaks an invariant."""
    graph._topo = None  # never trust a cached order: a pass may have edited graph.nx directly
    order = graph.topological_order()  # raises GraphError on a cycle
    produced: dict[str, str] = {}
    for name in order:
        node = graph.node(name)
        where = _neighbours(graph, name)
        for t in node.inputs:
            if t not in graph.specs or (t not in graph.params and t not in graph.inputs
                                        and t not in produced):
                raise GraphError(f"input {t!r} is not produced before this node{where}",
                                 node=name, op=node.op)
            if t in produced and not graph.nx.has_edge(produced[t], name):
                raise GraphError(f"missing edge from {produced[t]!r} for tensor {t!r}{where}",
                                 node=name, op=node.op)
        for t in node.outputs:
            if t in produced or t in graph.params or t in graph.inputs:
                raise GraphError(f"output tensor {t!r} is defined twice{where}", node=name, op=node.op)
            produced[t] = name
        try:
            opdef = opset.lookup(node.op)
            attrs = opdef.normalize_attrs(dict(node.attrs), node=name)
            if attrs != dict(node.attrs):
                raise GraphError(f"attributes are not normalized: {dict(node.attrs)}", node=name)
            specs = graph.infer_node(node)
        except GraphrtError as err:
            err.message += where
            raise err.locate(node=name, op=node.op)
        for t, spec in zip(node.outputs, specs):
            if graph.specs.get(t) != spec:
                raise GraphError(f"recorded spec of {t!r} is {graph.specs.get(t)}, inference gives "
                                 f"{spec}{where}", node=name, op=node.op)
    for p, value in graph.params.items():
        spec = graph.specs.get(p)
        if spec is None or spec.shape != value.shape or spec.dtype != str(value.dtype):
            raise GraphError(f"parameter {p!r} is {value.shape} {value.dtype} but its spec says {spec}")
    for t in graph.outputs:
        if t not in graph.specs:
            raise GraphError(f"graph output {t!r} is not a tensor of the graph")
    if not graph.outputs:
        raise GraphError("the graph declares no outputs")
