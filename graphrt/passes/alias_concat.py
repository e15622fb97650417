"""alias_concat: let the branches of a ``concat`` write straight into their slices of its output.

The pass marks a concat ``alias=True`` when every input is the output of a node that only the concat
reads (not a graph input, parameter or another view); the memory plan then makes each input a view of
its slice of the concat's buffer and the concat itself does nothing at run time.

    a -> concat <- b      ==>    a, b written into out[:, 0:Ca], out[:, Ca:Ca+Cb]; concat is free
"""
from __future__ import annotations

from ..ir import Graph
from .pipeline import each_node, register_pass

VIEW_OPS = {"split", "concat", "flatten", "reshape"}


def can_alias(g: Graph, node) -> bool:
    if node.op != "concat" or node.attrs.get("alias") or len(set(node.inputs)) != len(node.inputs):
        return False
    rank = len(g.specs[node.outputs[0]].shape)
    if node.attrs["axis"] % rank != 1:
        return False
    for t in node.inputs:
        prod, user = g.producer(t), g.single_consumer(t)
        if prod is None or prod.op in VIEW_OPS or user is None or user.name != node.name:
            return False
    return True


@register_pass("alias_concat", opt_level=3)
def alias_concat(graph: Graph) -> Graph:
    if not any(can_alias(graph, n) for n in graph.nodes):
        return graph  # nothing to rewrite: no copy (passes are pure either way)
    g = graph.copy()
    for node in each_node(g):
        if can_alias(g, node):
            g.replace_node(node.name, node.replace(attrs=dict(node.attrs, alias=True)))
    return g
