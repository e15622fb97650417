"""place: put every node on the executable's device or, where the device cannot run it, on the host,
and make each host<->device crossing an explicit copy node (as ONNX Runtime partitions a graph
between execution providers and inserts Memcpy nodes).

* Every graph input gets a ``copy_to_device`` node (its output, ``<input>@device``, is the arena's
  input slot) and every graph output a ``copy_to_host`` node (``<output>@host``).
* A node the device refuses (``placement(node, graph)`` returns why) runs on the host
  (``device="host"``). Each device tensor it reads comes through a ``copy_to_host`` node
  (``<tensor>@host``, shared with the output copy of that tensor), and each tensor it makes that a
  device node reads goes back through a ``copy_to_device`` node (``<tensor>@device``). Parameters
  that only host nodes read stay on the host; a parameter that device nodes read too is copied
  over like any device tensor (an optimizer on the device may be changing it).
* A host node may not write state the device also uses (an optimizer update placed on the host
  while the device reads the parameter): that is an :class:`~graphrt.ir.errors.UnsupportedError`.

After this pass no edge crosses between host and device without a copy node, and the transfer
ledger counts exactly those. Parameters are not copied per step: the executable uploads them once.
"""
from __future__ import annotations

from typing import Callable

from ..ir import Graph, Node
from ..ir.errors import UnsupportedError
from ..ops import get_op
from .pipeline import register_pass

Placement = Callable[[Node, Graph], "str | None"]


def host_nodes(graph: Graph, placement: Placement | None) -> dict[str, str]:
    """``{node: why}`` for the nodes ``placement`` keeps off the device (in graph order)."""
    if placement is None:
        return {}
    out = {}
    for node in graph.nodes:
        why = placement(node, graph)
        if why:
            out[node.name] = why
    return out


def place_on(graph: Graph, device: str, on_host: dict[str, str] | None = None) -> Graph:
    """``graph`` placed on ``device`` with the nodes named in ``on_host`` on the host (see the
    module docstring)."""
    g = graph.copy()
    if any(n.op in ("copy_to_device", "copy_to_host") for n in g.nodes):
        return g  # already placed
    on_host = on_host or {}
    for name in g.topological_order():
        g.retag(name, device="host" if name in on_host else device)
    for t in list(g.inputs):
        users = g.consumers(t)
        _copy(g, t, "copy_to_device", device)
        for user in users:
            g.rename_input(user.name, t, f"{t}@device")
    if on_host:
        _cross(g, device)
    outputs = []
    for t in g.outputs:
        src = f"{t}@device" if t in g.inputs else t  # an input passed straight through
        host = f"{src.removesuffix('@device')}@host" if src.endswith("@device") else f"{t}@host"
        if host not in g.specs:
            _copy(g, src, "copy_to_host", "host", host)
        outputs.append(host)
    g.outputs = outputs
    return g


def _copy(g: Graph, t: str, op: str, device: str, out: str | None = None) -> str:
    out = out or (f"{t}@device" if op == "copy_to_device" else f"{t}@host")
    name = f"{t.removesuffix('@device')}/{op}"
    g.splice([], [Node(name, op, (t,), (out,), device=device)])
    return out


def _cross(g: Graph, device: str) -> None:
    """Copy nodes on every edge between a host node and a device node."""
    host = {n.name for n in g.nodes if n.device == "host"}
    for node in [n for n in g.nodes if n.name in host]:
        _check_writes(g, node, host)
        for t in dict.fromkeys(node.inputs):
            prod = g.producer(t)
            if prod is not None and prod.name in host:
                continue
            if prod is None and t in g.params and all(c.name in host for c in g.consumers(t)):
                continue  # a parameter only the host reads stays there
            copy = f"{t.removesuffix('@device')}@host"
            if copy not in g.specs:
                _copy(g, t, "copy_to_host", "host", copy)
            g.rename_input(node.name, t, copy)
    for node in [n for n in g.nodes if n.name in host]:
        for t in node.outputs:
            users = [c for c in g.consumers(t) if c.device != "host"]
            if users:
                _copy(g, t, "copy_to_device", device)
                for user in users:
                    g.rename_input(user.name, t, f"{t}@device")


def _check_writes(g: Graph, node: Node, host: set) -> None:
    for i in get_op(node.op).writes:
        t = node.inputs[i]
        if any(c.name not in host for c in g.consumers(t)):
            raise UnsupportedError(
                f"{node.op} runs on the host here ({node.name}) but updates {t!r} in place, which "
                "the device also uses: its updates would be lost; use device='cpu'",
                node=node.name, op=node.op)


@register_pass("place", opt_level=0)
def place(graph: Graph) -> Graph:
    """Placement on the generic device (the executable calls :func:`place_on` with its own kind)."""
    return place_on(graph, "device")
