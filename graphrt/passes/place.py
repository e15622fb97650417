"""place: put every node on the executable's device and make each host<->device crossing explicit.

Every graph input gets a ``copy_to_device`` node (its output, ``<input>@device``, is the arena's input
slot) and every graph output a ``copy_to_host`` node (``<output>@host``); after this pass no edge
crosses between host and device without a copy node, and the transfer ledger counts exactly those.
Parameters are not copied per step: the executable uploads them once when it is built.
"""
from __future__ import annotations

from ..ir import Graph, Node
from .pipeline import register_pass


def place_on(graph: Graph, device: str) -> Graph:
    g = graph.copy()
    if any(n.op in ("copy_to_device", "copy_to_host") for n in g.nodes):
        return g  # already placed
    for name in g.topological_order():
        g.retag(name, device=device)
    for t in list(g.inputs):
        dev = f"{t}@device"
        users = g.consumers(t)
        g.splice([], [Node(f"{t}/copy_to_device", "copy_to_device", (t,), (dev,), device=device)])
        for user in users:
            g.rename_input(user.name, t, dev)
    outputs = []
    for t in g.outputs:
        host = f"{t}@host"
        src = f"{t}@device" if t in g.inputs else t  # an input passed straight through
        g.splice([], [Node(f"{t}/copy_to_host", "copy_to_host", (src,), (host,), device="host")])
        outputs.append(host)
    g.outputs = outputs
    return g


@register_pass("place", opt_level=0)
def place(graph: Graph) -> Graph:
    """Placement on the generic device (the executable calls :func:`place_on` with its own kind)."""
    return place_on(graph, "device")
