"""What the pictures show: a graph stage annotated with shapes, parameters, arena places and times.

:func:`build_view` turns one stage's :class:`Graph` into a :class:`GraphView`: one :class:`NodeView`
per node (plus one per graph input and output, drawn as tensors) and one :class:`EdgeView` per tensor
flowing between them. A node view carries everything the HTML side panel shows — op, attributes,
input and output shapes, parameter sizes, where each output sits in the arena (from the executable's
memory plan), and the measured time when the view comes from a profiled run — and what the node
stands for in the source model:

- ``members``: the source layers a fused node absorbed (its own layer first);
- ``elided``: source layers a pass removed outright (a Dropout at inference, an identity), shown on
  the node whose output they passed through, so every layer of the source stays findable;
- ``slices``: for an aliased concat (or split), which tensor writes which channel range.

Views are plain data (``to_json()``) shared by the SVG, DOT, PNG and HTML renderers.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ..ir import Graph, Node

KINDS = ("op", "fused", "copy", "alias", "input", "output")


@dataclasses.dataclass
class NodeView:
    """One box of the picture; ``kind`` is one of :data:`KINDS` and picks its style."""

    id: str
    name: str
    op: str
    kind: str
    device: str | None = None
    source: dict = dataclasses.field(default_factory=dict)
    members: list = dataclasses.field(default_factory=list)
    elided: list = dataclasses.field(default_factory=list)
    slices: list = dataclasses.field(default_factory=list)
    attrs: dict = dataclasses.field(default_factory=dict)
    inputs: list = dataclasses.field(default_factory=list)
    outputs: list = dataclasses.field(default_factory=list)
    params: list = dataclasses.field(default_factory=list)
    flops: int = 0
    free: bool = False
    time_ms: float | None = None
    workspace: dict | None = None

    @property
    def is_tensor(self) -> bool:
        return self.kind in ("input", "output")

    def layers(self) -> list[str]:
        """Every source-layer name this box shows."""
        return [self.name, *self.members, *self.elided]

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class EdgeView:
    src: str
    dst: str
    tensor: str
    label: str


@dataclasses.dataclass
class GraphView:
    """A stage of a graph, ready to draw; ``info`` holds the page's header facts."""

    name: str
    stage: str
    nodes: list[NodeView]
    edges: list[EdgeView]
    info: dict
    orphans: list = dataclasses.field(default_factory=list)  # removed layers with no node to sit on

    def node(self, name: str) -> NodeView:
        for n in self.nodes:
            if n.name == name and not n.is_tensor:
                return n
        raise KeyError(name)

    def to_json(self) -> dict:
        return {"name": self.name, "stage": self.stage, "info": self.info, "orphans": self.orphans,
                "nodes": [n.to_json() for n in self.nodes],
                "edges": [dataclasses.asdict(e) for e in self.edges]}


def fmt_attr(value: Any) -> str:
    if isinstance(value, tuple):
        return "(" + ", ".join(fmt_attr(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    if hasattr(value, "items"):
        return "{" + ", ".join(f"{k}: {fmt_attr(v)}" for k, v in value.items()) + "}"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def arena_place(plan, graph: Graph, tensor: str) -> dict | None:
    """Where ``tensor`` lives in the arena: buffer, byte offset, size, live steps, slice if a view."""
    if plan is None:
        return None
    key = tensor if tensor in plan.views else f"{tensor}@device"
    view = plan.views.get(key)
    if view is None:
        return None
    block = plan.blocks[view.buffer]
    spec = graph.specs.get(tensor) or graph.specs[key]
    within = getattr(view, "offset", 0)  # a tensor packed at an offset inside its block
    place = {"buffer": view.buffer, "offset": block.offset + within, "size": spec.nbytes(plan.batch),
             "block_size": block.size, "steps": [block.start, block.end], "kind": block.kind}
    if view.axis is not None:  # a strided slice: its first row starts this far into the buffer
        inner = _count(spec.shape[view.axis + 1:]) * np.dtype(spec.dtype).itemsize
        place["offset"] += view.start * inner
        place["slice"] = {"axis": view.axis, "start": view.start, "stop": view.stop}
    slots = list(plan.input_slots)
    if view.buffer in slots and len(slots) > 1:  # prefetch: the same tensor in each input slot
        place["slots"] = [plan.blocks[s].offset + within for s in slots]
    return place


def _count(shape) -> int:
    n = 1
    for d in shape:
        n *= 1 if d is None else d
    return n


def _flops(node: Node, graph: Graph, batch: int) -> int:
    from ..ops import get_op

    try:
        return int(get_op(node.op).cost(node.attrs, [graph.specs[t] for t in node.inputs],
                                        [graph.specs[t] for t in node.outputs], batch)[0])
    except Exception:  # a cost model gap must not stop a picture
        return 0


def _kind(node: Node, members: list, elided: list) -> str:
    if node.op in ("copy_to_device", "copy_to_host"):
        return "copy"
    if node.device == "host":  # placed on the host: the device cannot run it (drawn red)
        return "host"
    if node.op in ("concat", "split") and node.attrs.get("alias"):
        return "alias"
    return "fused" if len(members) > 1 or elided else "op"


def _slices(node: Node, graph: Graph) -> list:
    if node.op not in ("concat", "split") or not node.attrs.get("alias"):
        return []
    axis = node.attrs["axis"]
    tensors = node.inputs if node.op == "concat" else node.outputs
    rows, start = [], 0
    for t in tensors:
        size = graph.specs[t].shape[axis]
        prod = graph.producer(t) if node.op == "concat" else None
        rows.append({"tensor": t, "layer": prod.name if prod else t, "start": start, "stop": start + size})
        start += size
    return rows


def elided_layers(source: Graph, stage: Graph) -> tuple[dict[str, list[str]], list[str]]:
    """Source layers that no node of ``stage`` names (removed by a pass), keyed by the stage node
    they now sit on: the nearest producer upstream that the stage still shows (else downstream)."""
    shown: dict[str, str] = {}
    for n in stage.nodes:
        for layer in (n.name, n.source.layer, *n.absorbed):
            if layer:
                shown.setdefault(layer, n.name)
    placed: dict[str, list[str]] = {}
    orphans = []
    for n in source.nodes:
        layer = n.source.layer or n.name
        if layer in shown or n.name in shown:
            continue
        host = (_nearest_shown(source, n, shown, upstream=True)
                or _nearest_shown(source, n, shown, upstream=False))
        if host is None:
            orphans.append(layer)
        else:
            placed.setdefault(host, []).append(layer)
    return placed, orphans


def _nearest_shown(source: Graph, node: Node, shown: dict, upstream: bool) -> str | None:
    seen, frontier = set(), [node]
    while frontier:
        nxt = []
        for n in frontier:
            if upstream:
                around = [source.producer(t) for t in n.inputs if not source.is_param(t)]
            else:
                around = [c for t in n.outputs for c in source.consumers(t)]
            for m in around:
                if m is None or m.name in seen:
                    continue
                seen.add(m.name)
                for layer in (m.name, m.source.layer):
                    if layer in shown:
                        return shown[layer]
                nxt.append(m)
        frontier = nxt
    return None


def _node_view(node: Node, graph: Graph, plan, batch: int, elided: list, times, launched) -> dict:
    own = node.source.layer or node.name
    members = list(dict.fromkeys([own, *node.absorbed])) if node.absorbed else [own]
    spec = graph.specs
    view = dict(
        name=node.name, op=node.op, kind=_kind(node, members, elided), device=node.device,
        source={k: v for k, v in dataclasses.asdict(node.source).items() if v is not None},
        members=members if len(members) > 1 else [], elided=list(elided),
        slices=_slices(node, graph),
        attrs={k: fmt_attr(v) for k, v in node.attrs.items()},
        inputs=[{"name": t, "shape": str(spec[t]), "dtype": spec[t].dtype,
                 "from": ("param" if graph.is_param(t) else
                          graph.producer(t).name if graph.producer(t) else "input")}
                for t in node.inputs],
        outputs=[{"name": t, "shape": str(spec[t]), "dtype": spec[t].dtype,
                  "bytes": spec[t].nbytes(batch), "arena": arena_place(plan, graph, t)}
                 for t in node.outputs],
        params=[{"name": t, "shape": list(graph.params[t].shape), "count": int(graph.params[t].size),
                 "bytes": int(graph.params[t].nbytes)} for t in node.inputs if graph.is_param(t)],
        flops=_flops(node, graph, batch))
    if launched is not None:
        view["free"] = node.op not in ("copy_to_device", "copy_to_host") and node.name not in launched
    if times is not None and node.name in times.seconds:
        view["time_ms"] = times.seconds[node.name] * 1e3
    ws = plan.workspaces.get(node.name) if plan is not None else None
    if ws:
        block = plan.blocks[ws]
        view["workspace"] = {"offset": block.offset, "size": block.size}
    return view


def build_view(graph: Graph, stage: str = "optimized", *, source: Graph | None = None, plan=None,
               launched=None, times=None) -> GraphView:
    """Annotate ``graph`` (the graph at ``stage``) for drawing.

    ``source`` is the loaded graph (for removed layers), ``plan`` the executable's
    :class:`~graphrt.memory.MemoryPlan`, ``launched`` the node names the program launches (the rest
    are free views), ``times`` a :class:`~graphrt.viz.timing.NodeTimes`.
    """
    batch = plan.batch if plan is not None else 1
    placed, orphans = elided_layers(source, graph) if source is not None else ({}, [])
    nodes: list[NodeView] = []
    ids: dict[str, str] = {}

    def add(**kw) -> NodeView:
        nv = NodeView(id=f"n{len(nodes)}", **kw)
        nodes.append(nv)
        return nv

    for t in graph.inputs:
        ids["in:" + t] = add(name=t, op="input", kind="input", outputs=[
            {"name": t, "shape": str(graph.specs[t]), "dtype": graph.specs[t].dtype,
             "bytes": graph.specs[t].nbytes(batch), "arena": arena_place(plan, graph, t)}]).id
    for node in graph.nodes:
        ids[node.name] = add(**_node_view(node, graph, plan, batch, placed.get(node.name, []),
                                          times, launched)).id
    for t in graph.outputs:
        ids["out:" + t] = add(name=t, op="output", kind="output", inputs=[
            {"name": t, "shape": str(graph.specs[t]), "dtype": graph.specs[t].dtype,
             "from": graph.producer(t).name if graph.producer(t) else "input"}]).id
    edges = []
    for node in graph.nodes:
        for t in dict.fromkeys(node.inputs):
            prod = graph.producer(t)
            src = ids[prod.name] if prod is not None else ids.get("in:" + t)
            if src is not None:
                edges.append(EdgeView(src, ids[node.name], t, str(graph.specs[t])))
    for t in graph.outputs:
        prod = graph.producer(t)
        src = ids[prod.name] if prod is not None else ids.get("in:" + t)
        edges.append(EdgeView(src, ids["out:" + t], t, str(graph.specs[t])))
    info = {"nodes": len(graph), "params": graph.num_params(), "batch": batch}
    if plan is not None:
        info.update(arena_bytes=plan.arena_bytes, lower_bound_bytes=plan.lower_bound_bytes,
                    naive_bytes=plan.naive_bytes)
    if times is not None:
        info.update(step_ms=times.step_seconds * 1e3, iterations=times.iterations)
    return GraphView(graph.name, stage, nodes, edges, info, orphans)
