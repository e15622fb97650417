"""remove_identities: drop ops that are the identity at inference — ``dropout``, ``identity``, and
``reshape``/``flatten`` whose output shape equals their input's — by making their consumers read the
input directly.

    conv -> dropout -> relu    ==>    conv -> relu

A node whose output is a graph output is kept (the output's name is part of the interface).
"""
from __future__ import annotations

from ..ir import Graph
from .pipeline import each_node, register_pass

ALWAYS_IDENTITY = {"dropout", "identity"}


def is_identity(g: Graph, node) -> bool:
    if node.op in ALWAYS_IDENTITY:
        return True
    return node.op in ("reshape", "flatten") and g.specs[node.inputs[0]] == g.specs[node.outputs[0]]


@register_pass("remove_identities", opt_level=1)
def remove_identities(graph: Graph) -> Graph:
    if not any(is_identity(graph, n) and n.outputs[0] not in graph.outputs for n in graph.nodes):
        return graph  # nothing to rewrite: no copy (passes are pure either way)
    g = graph.copy()
    for node in each_node(g):
        if is_identity(g, node) and node.outputs[0] not in g.outputs:
            g.replace_uses(node.outputs[0], node.inputs[0])
            g.remove_node(node.name)
    return g
