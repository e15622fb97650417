"""SVG of a :class:`~graphrt.viz.view.GraphView` laid out by :mod:`graphrt.viz.layout`.

Each node is a ``<g class="node KIND" id="nK" data-name="NAME">`` holding its box: the name (wrapped
at ``+`` for merged convolutions), a line with the op, source type, device and time, and — for a
fused node — one inner box per source layer it absorbed (layers a pass removed are dashed), or, for
an aliased concat/split, one per slice. Graph inputs and outputs are ellipses
(``<g class="tensor ...">``). Edges carry the shape of the tensor they move. Copy nodes have their
own colour. The same geometry (:func:`box_geometry`) sizes the boxes for the PNG renderer.
"""
from __future__ import annotations

import dataclasses

from .layout import Layout, layered_layout
from .text import FONT_FAMILY, escape, printable, text_width
from .view import GraphView, NodeView

TITLE, SUB, ROW, LABEL = 12.0, 10.5, 10.5, 10.0
PAD, LINE, SUBLINE, ROWH = 8.0, 15.0, 14.0, 18.0
WRAP = 44
COLORS = {  # kind: (fill, stroke)
    "op": ("#e8f0fe", "#4a6fa5"),
    "fused": ("#fff4d6", "#b8860b"),
    "copy": ("#fde2e1", "#c0392b"),
    "host": ("#f9c9c5", "#a4161a"),  # a node the device cannot run, placed on the host
    "alias": ("#f2f2f2", "#7a7a7a"),
    "input": ("#e6f4ea", "#2e7d32"),
    "output": ("#e6f4ea", "#2e7d32"),
}
STYLE = f"""
svg.graphrt-graph {{ font-family: {FONT_FAMILY}; }}
.node .box {{ stroke-width: 1.2; }}
.node.alias .box, .node.free .box {{ stroke-dasharray: 5 3; }}
.node .title {{ font-size: {TITLE}px; font-weight: bold; fill: #1b1b1b; }}
.node .sub, .tensor .sub {{ font-size: {SUB}px; fill: #444; }}
.node .row rect {{ fill: #ffffff; stroke: #c9a544; }}
.node .row.elided rect {{ stroke-dasharray: 3 2; fill: #fafafa; stroke: #999; }}
.node .row.slice rect {{ stroke: #999; }}
.node .row text {{ font-size: {ROW}px; fill: #333; }}
.tensor .title {{ font-size: {TITLE}px; font-weight: bold; fill: #1b1b1b; }}
.edge {{ fill: none; stroke: #8a8f98; stroke-width: 1.2; }}
.elabel {{ font-size: {LABEL}px; fill: #555; paint-order: stroke; stroke: #fff; stroke-width: 3px; }}
"""


@dataclasses.dataclass
class Box:
    width: float
    height: float
    title: list
    sub: str
    rows: list  # (text, css class)


def wrap_name(name: str, width: int = WRAP) -> list[str]:
    """Lines of about ``width`` characters: a merged name splits at ``+`` (never inside a layer),
    and a part still longer than ``width`` after its last ``/``, ``_`` or ``.`` that fits."""
    parts = name.split("+")
    lines = [parts[0]]
    for part in parts[1:]:
        if len(lines[-1]) + 1 + len(part) > width:
            lines[-1] += "+"
            lines.append(part)
        else:
            lines[-1] += "+" + part
    return [piece for line in lines for piece in _split_long(line, width)]


def _split_long(line: str, width: int) -> list[str]:
    out = []
    while len(line) > width:
        cut = max(line.rfind(c, 0, width) for c in "/_.") + 1
        cut = cut if cut > width // 3 else width
        out.append(line[:cut])
        line = line[cut:]
    return out + [line]


def subtitle(n: NodeView) -> str:
    if n.is_tensor:
        return (n.outputs or n.inputs)[0]["shape"]
    bits = [n.op]
    own = n.source.get("layer") == n.name or n.members
    if own and n.source.get("type") and n.source["type"] != n.op:  # conv2d · Conv2D, like max_pool · MaxPooling2D
        bits.append(n.source["type"])
    if n.device:
        bits.append(n.device)
    if n.free:
        bits.append("free (view)")
    if n.time_ms is not None:
        bits.append(f"{n.time_ms:.3g} ms")
    return " · ".join(bits)


def box_geometry(n: NodeView) -> Box:
    """The box of ``n``: its size and the text lines it holds (see the module docstring)."""
    title = [printable(n.name)] if n.is_tensor else wrap_name(printable(n.name))
    rows = [(printable(m), "member") for m in n.members] + [
        (f"{printable(m)} (removed)", "elided") for m in n.elided]
    for s in n.slices:
        span = f"[{s['start']}:{s['stop']}]"
        text = f"{s['layer']} → {span}" if n.op == "concat" else f"{span} → {s['tensor']}"
        rows.append((printable(text), "slice"))
    sub = printable(subtitle(n))
    width = max([text_width(t, TITLE, True) for t in title] + [text_width(sub, SUB)]
                + [text_width(r, ROW) + 16 for r, _ in rows]) + 2 * PAD + 4
    height = PAD + LINE * len(title) + SUBLINE + (4 + ROWH * len(rows) if rows else 0) + PAD / 2
    if n.is_tensor:
        width, height = width * 1.25, height + 6
    return Box(max(width, 80.0), height, title, sub, rows)


def layout_view(view: GraphView) -> tuple[dict[str, Box], Layout]:
    boxes = {n.id: box_geometry(n) for n in view.nodes}
    layout = layered_layout([n.id for n in view.nodes], {k: (b.width, b.height) for k, b in boxes.items()},
                            [(e.src, e.dst) for e in view.edges])
    return boxes, layout


def path_d(points) -> str:
    (x0, y0), rest = points[0], points[1:]
    d = [f"M{x0:.1f},{y0:.1f}"]
    for (px, py), (qx, qy) in zip(points, rest):
        if abs(px - qx) < 0.5:
            d.append(f"L{qx:.1f},{qy:.1f}")
        else:
            my = (py + qy) / 2
            d.append(f"C{px:.1f},{my:.1f} {qx:.1f},{my:.1f} {qx:.1f},{qy:.1f}")
    return " ".join(d)


def _on_curve(p, q, t: float) -> tuple[float, float, int]:
    """The point at ``t`` of the curve :func:`path_d` draws from ``p`` to ``q``, and its heading
    (-1 left, 0 straight down, 1 right)."""
    (px, py), (qx, qy) = p, q
    x = px + (qx - px) * (3 * t * t - 2 * t ** 3)
    y = py + (qy - py) * (1.5 * t * (1 - t) + t ** 3)
    return x, y, (qx > px + 1) - (qx < px - 1)


def label_positions(view: GraphView, layout: Layout) -> list[tuple[str, float, float, str]]:
    """(text, x, y, anchor) per tensor. A tensor read by one edge is labelled beside it: near its
    target when the source fans out (the targets are spread apart), else near its source. A tensor
    read by several edges is labelled once, under its producer."""
    fanout: dict[tuple[str, str], int] = {}
    outs: dict[str, int] = {}
    ins: dict[str, int] = {}
    for e in view.edges:
        fanout[e.src, e.tensor] = fanout.get((e.src, e.tensor), 0) + 1
        outs[e.src] = outs.get(e.src, 0) + 1
        ins[e.dst] = ins.get(e.dst, 0) + 1
    done, out = set(), []
    for e, route in zip(view.edges, layout.routes):
        if fanout[e.src, e.tensor] == 1:
            near_target = outs[e.src] > 1 and ins[e.dst] == 1
            x, y, heading = _on_curve(route[0], route[1], 0.8 if near_target else 0.22)
            # beside the curve, on the side it is not coming from (near the target) or not going to
            side = heading if near_target else -heading
            width = text_width(e.label, LABEL)
            if side < 0 and x - 5 - width < 2:
                side = 1
            out.append((e.label, x - 5, y + 3, "end") if side < 0 else (e.label, x + 5, y + 3, "start"))
        elif (e.src, e.tensor) not in done:
            done.add((e.src, e.tensor))
            cx, top, _, h = layout.boxes[e.src]
            out.append((e.label, cx + 6, top + h + 13, "start"))
    return out


def _node_svg(n: NodeView, box: Box, where) -> str:
    cx, top, w, h = where
    x0 = cx - w / 2
    fill, stroke = COLORS[n.kind]
    if n.is_tensor:
        cls = f"tensor {n.kind}"
        shape = (f'<ellipse class="box" cx="{w / 2:.1f}" cy="{h / 2:.1f}" rx="{w / 2:.1f}" '
                 f'ry="{h / 2:.1f}" fill="{fill}" stroke="{stroke}"/>')
        attr = f'data-tensor="{escape(n.name)}"'
    else:
        cls = f"node {n.kind}" + (" free" if n.free else "")
        shape = (f'<rect class="box" width="{w:.1f}" height="{h:.1f}" rx="5" fill="{fill}" '
                 f'stroke="{stroke}"/>')
        attr = f'data-name="{escape(n.name)}"'
    parts = [f'<g class="{cls}" id="{n.id}" {attr} transform="translate({x0:.1f},{top:.1f})">',
             f"<title>{escape(n.name)}</title>", shape]
    y = PAD + (3 if n.is_tensor else 0)
    for line in box.title:
        y += LINE
        parts.append(f'<text class="title" x="{w / 2:.1f}" y="{y - 3:.1f}" text-anchor="middle">'
                     f"{escape(line)}</text>")
    y += SUBLINE
    parts.append(f'<text class="sub" x="{w / 2:.1f}" y="{y - 3:.1f}" text-anchor="middle">'
                 f"{escape(box.sub)}</text>")
    y += 4
    for text, kind in box.rows:
        parts.append(f'<g class="row {kind}"><rect x="{PAD:.1f}" y="{y:.1f}" width="{w - 2 * PAD:.1f}" '
                     f'height="{ROWH - 3:.1f}" rx="3"/><text x="{w / 2:.1f}" y="{y + ROWH - 7:.1f}" '
                     f'text-anchor="middle">{escape(text)}</text></g>')
        y += ROWH
    parts.append("</g>")
    return "".join(parts)


def to_svg(view: GraphView, *, standalone: bool = True) -> str:
    """The view as SVG text drawn by the built-in layout (an ``<svg>`` element; with an XML
    declaration when ``standalone``)."""
    boxes, layout = layout_view(view)
    labels = label_positions(view, layout)
    width = max([layout.width] + [x + (text_width(t, LABEL) if a == "start" else 0) + 8
                                  for t, x, _, a in labels])
    out = []
    if standalone:
        out.append('<?xml version="1.0" encoding="UTF-8"?>\n')
    out.append(f'<svg xmlns="http://www.w3.org/2000/svg" class="graphrt-graph" '
               f'viewBox="0 0 {width:.0f} {layout.height:.0f}" width="{width:.0f}" '
               f'height="{layout.height:.0f}" font-family="{escape(FONT_FAMILY)}">')
    out.append(f"<style>{STYLE}</style>")
    out.append('<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
               'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
               'fill="#8a8f98"/></marker></defs>')
    out.append('<rect width="100%" height="100%" fill="#ffffff"/>')
    out.append('<g class="edges">')
    for e, route in zip(view.edges, layout.routes):
        out.append(f'<path class="edge" data-src="{e.src}" data-dst="{e.dst}" '
                   f'data-tensor="{escape(e.tensor)}" d="{path_d(route)}" marker-end="url(#arrow)"/>')
    out.append('</g><g class="labels">')
    for text, x, y, anchor in labels:
        out.append(f'<text class="elabel" x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}">'
                   f'{escape(text)}</text>')
    out.append('</g><g class="nodes">')
    for n in view.nodes:
        out.append(_node_svg(n, boxes[n.id], layout.boxes[n.id]))
    out.append("</g></svg>\n")
    return "\n".join(out)
