"""eliminate_dead_code: remove every node none of whose outputs reaches a graph output — except ops
with a side effect (an optimizer update, a running-statistics update) and what they need — and the
parameters nothing reads any more.

    x -> conv -> relu -> (output)          x -> conv -> relu -> (output)
           \\-> pool (unused)        ==>
"""
from __future__ import annotations

from ..ir import Graph
from ..ops import get_op
from .pipeline import register_pass


@register_pass("eliminate_dead_code", opt_level=1)
def eliminate_dead_code(graph: Graph) -> Graph:
    live = {graph.producer(t).name for t in graph.outputs if graph.producer(t) is not None}
    live |= {n.name for n in graph.nodes if get_op(n.op).side_effect}
    stack = list(live)  # everything they depend on (one walk, not one per live node)
    while stack:
        for pred in graph.nx.predecessors(stack.pop()):
            if pred not in live:
                live.add(pred)
                stack.append(pred)
    dead = [n for n in graph.topological_order() if n not in live]
    if not dead and all(graph.consumers(p) for p in graph.params):
        return graph  # nothing to remove: no copy (passes are pure either way)
    g = graph.copy()
    for name in reversed(dead):
        g.remove_node(name)
    g.prune_unused_params()
    return g
