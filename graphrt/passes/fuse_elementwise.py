"""fuse_elementwise: merge a chain of unary elementwise ops (relu, tanh, sigmoid, scale, dropout,
identity), each the only reader of the previous one, into one ``elementwise_chain`` node that makes
a single pass over the data.

    scale -> tanh -> relu    ==>    elementwise_chain(steps=[scale, tanh, relu])
"""
from __future__ import annotations

from ..ir import Graph
from ..ops.elementwise import UNARY
from .pipeline import each_node, register_pass


def _next_in_chain(g: Graph, node):
    """The unary op that is the only reader of ``node``'s output, or None."""
    user = g.single_consumer(node.outputs[0])
    return user if user is not None and user.op in UNARY else None


def _chain_from(g: Graph, node) -> list:
    chain = [node]
    while (user := _next_in_chain(g, chain[-1])) is not None:
        chain.append(user)
    return chain


@register_pass("fuse_elementwise", opt_level=2)
def fuse_elementwise(graph: Graph) -> Graph:
    if not any(n.op in UNARY and _next_in_chain(graph, n) is not None for n in graph.nodes):
        return graph  # nothing to rewrite: no copy (passes are pure either way)
    g = graph.copy()
    done: set[str] = set()
    for node in each_node(g):
        if node.name in done or node.op not in UNARY:
            continue
        prod = g.producer(node.inputs[0])
        if prod is not None and prod.op in UNARY and g.single_consumer(prod.outputs[0]) is not None:
            continue  # not the head of its chain
        chain = _chain_from(g, node)
        done.update(n.name for n in chain)
        if len(chain) < 2:
            continue
        steps = tuple((n.op, dict(n.attrs)) for n in chain)
        fused = node.replace(op="elementwise_chain", attrs={"steps": steps}, outputs=chain[-1].outputs,
                             absorbed=tuple(n.source.layer or n.name for n in chain[1:]))
        g.splice([n.name for n in chain], [fused])
    return g
