"""A pure-Python layered (Sugiyama-style) layout, used when Graphviz's ``dot`` is not installed.

1. **Ranks.** A node's rank is its longest path from a source; a source with consumers moves down
   to just above its first consumer (so a graph input sits next to where it is used).
2. **Dummies.** An edge spanning several ranks is split by one dummy vertex per rank it crosses; the
   dummies become the bends of its route.
3. **Order.** Each rank starts in topological order; sweeps down and up sort every rank by the mean
   position of its neighbours in the rank before (barycenter heuristic); the order with the fewest
   edge crossings seen is kept.
4. **Coordinates.** Alternating sweeps move every vertex toward the weighted mean x of its
   neighbours (dummy-to-dummy links weigh more, so long edges run straight), then restore the
   order and minimum gaps with the least total movement — an isotonic regression solved exactly by
   pooling adjacent violators.
5. **Routes.** An edge leaves the bottom of its source (ports spread by target position), passes
   through its dummies vertically and enters the top of its target; the renderer draws smooth
   curves through these points.

Invariant (tested): within a rank, boxes never overlap: neighbours keep ``NODE_GAP`` between them,
or ``2 * DUMMY_GAP`` when an edge passes between.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

RANK_GAP = 56
NODE_GAP = 28
DUMMY_GAP = 10
MARGIN = 24
SWEEPS = 10


@dataclasses.dataclass
class Layout:
    """Boxes (centre x, top y, width, height), edge routes (lists of points) and the canvas size."""

    boxes: dict[str, tuple[float, float, float, float]]
    routes: list[list[tuple[float, float]]]
    width: float
    height: float


def layered_layout(nodes: Sequence[str], sizes: dict[str, tuple[float, float]],
                   edges: Sequence[tuple[str, str]]) -> Layout:
    """Lay out ``nodes`` (given in topological order) with ``sizes[n] = (w, h)``; ``routes[i]`` is
    the route of ``edges[i]``."""
    rank = _ranks(nodes, edges)
    layers, pred, succ, chains = _add_dummies(nodes, rank, edges)
    _order(layers, pred, succ)
    width = {v: sizes[v][0] if v in sizes else 0.0 for layer in layers for v in layer}
    x = _coordinates(layers, pred, succ, width)
    tops, heights = [], []
    y = MARGIN
    for layer in layers:
        h = max((sizes[v][1] for v in layer if v in sizes), default=16.0)
        tops.append(y)
        heights.append(h)
        y += h + RANK_GAP
    where = {v: i for i, layer in enumerate(layers) for v in layer}
    boxes = {v: (x[v], tops[where[v]] + (heights[where[v]] - sizes[v][1]) / 2, *sizes[v]) for v in nodes}
    routes = [_route(chain, boxes, x, where, tops, heights, succ, pred) for chain in chains]
    right = max((x[v] + width[v] / 2 for v in x), default=0.0)
    return Layout(boxes, routes, right + MARGIN, y - RANK_GAP + MARGIN)


def _ranks(nodes, edges) -> dict[str, int]:
    preds = {v: [] for v in nodes}
    succs = {v: [] for v in nodes}
    for u, v in edges:
        preds[v].append(u)
        succs[u].append(v)
    rank = {}
    for v in nodes:
        rank[v] = max((rank[u] + 1 for u in preds[v]), default=0)
    for v in nodes:
        if not preds[v] and succs[v]:
            rank[v] = max(0, min(rank[s] for s in succs[v]) - 1)
    return rank


def _add_dummies(nodes, rank, edges):
    layers: list[list[str]] = [[] for _ in range(max(rank.values(), default=0) + 1)]
    for v in nodes:
        layers[rank[v]].append(v)
    pred = {v: [] for v in nodes}
    succ = {v: [] for v in nodes}
    chains = []
    for i, (u, v) in enumerate(edges):
        chain = [u]
        for r in range(rank[u] + 1, rank[v]):
            d = f"\0{i}:{r}"
            layers[r].append(d)
            pred[d], succ[d] = [], []
            chain.append(d)
        chain.append(v)
        for a, b in zip(chain, chain[1:]):
            if b not in succ[a]:
                succ[a].append(b)
                pred[b].append(a)
        chains.append(chain)
    return layers, pred, succ, chains


def _crossings(upper: list[str], lower: list[str], succ) -> int:
    pos = {v: i for i, v in enumerate(lower)}
    ends = [pos[w] for v in upper for w in sorted((w for w in succ[v] if w in pos), key=pos.get)]
    return sum(1 for i in range(len(ends)) for j in range(i + 1, len(ends)) if ends[j] < ends[i])


def _order(layers, pred, succ) -> None:
    def total() -> int:
        return sum(_crossings(a, b, succ) for a, b in zip(layers, layers[1:]))

    best, best_order = total(), [list(layer) for layer in layers]
    for sweep in range(SWEEPS):
        down = sweep % 2 == 0
        indices = range(1, len(layers)) if down else range(len(layers) - 2, -1, -1)
        for i in indices:
            ref = layers[i - 1] if down else layers[i + 1]
            pos = {v: k for k, v in enumerate(ref)}
            here = {v: k for k, v in enumerate(layers[i])}

            def key(v, pos=pos, here=here):
                near = [pos[w] for w in (pred[v] if down else succ[v]) if w in pos]
                return (sum(near) / len(near)) if near else here[v]
            layers[i].sort(key=key)
        crossings = total()
        if crossings < best:
            best, best_order = crossings, [list(layer) for layer in layers]
        if best == 0:
            break
    layers[:] = best_order


def _gap(a: str, b: str) -> float:
    return DUMMY_GAP if a.startswith("\0") or b.startswith("\0") else NODE_GAP


def _coordinates(layers, pred, succ, width) -> dict[str, float]:
    x = {}
    for layer in layers:
        cursor = 0.0
        for v in layer:
            x[v] = cursor + width[v] / 2
            cursor += width[v] + NODE_GAP
    prepared = []  # per layer: neighbours with link weights, vertex weights, cumulative separations
    for layer in layers:
        links = []
        for v in layer:
            near = pred[v] + succ[v]
            ws = [8.0 if v.startswith("\0") and w.startswith("\0") else 1.0 for w in near]
            links.append((near, ws, sum(ws)))
        seps = [0.0]
        for a, b in zip(layer, layer[1:]):
            seps.append(seps[-1] + width[a] / 2 + width[b] / 2 + _gap(a, b))
        prepared.append((layer, links, [4.0 if v.startswith("\0") else 1.0 for v in layer], seps))
    vertices = sum(len(layer) for layer in layers)
    rounds = 4 * SWEEPS if vertices < 2000 else max(8, 80000 // vertices)  # big graphs: fewer
    for it in range(rounds):
        for layer, links, weight, seps in (prepared if it % 2 == 0 else prepared[::-1]):
            want = [sum(x[w] * k for w, k in zip(near, ws)) / total if near else x[v]
                    for v, (near, ws, total) in zip(layer, links)]
            fitted = _isotonic([w - s for w, s in zip(want, seps)], weight)
            for v, f, s in zip(layer, fitted, seps):
                x[v] = f + s
    left = min((x[v] - width[v] / 2 for v in x), default=0.0)
    return {v: x[v] - left + MARGIN for v in x}


def _isotonic(values: list[float], weights: list[float]) -> list[float]:
    """The non-decreasing sequence closest to ``values`` in weighted least squares (PAV)."""
    blocks: list[list[float]] = []  # [mean, weight, count]
    for v, w in zip(values, weights):
        blocks.append([v, w, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            m2, w2, c2 = blocks.pop()
            m1, w1, c1 = blocks.pop()
            blocks.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2, c1 + c2])
    out = []
    for mean, _, count in blocks:
        out.extend([mean] * count)
    return out


def _port(v, other, boxes, x, links) -> float:
    """x where an edge to/from ``other`` meets ``v``'s box: ports spread in the order of the far ends."""
    cx, _, w, _ = boxes[v]
    if len(links) < 2:
        return cx
    ordered = sorted(links, key=lambda o: x[o])
    step = min(14.0, (w - 16) / (len(links) - 1)) if w > 16 else 0.0
    return cx + (ordered.index(other) - (len(links) - 1) / 2) * step


def _route(chain, boxes, x, where, tops, heights, succ, pred) -> list[tuple[float, float]]:
    u, v = chain[0], chain[-1]
    cx, top, _, h = boxes[u]
    pts = [(_port(u, chain[1], boxes, x, succ[u]), top + h)]
    for d in chain[1:-1]:
        r = where[d]
        pts += [(x[d], tops[r]), (x[d], tops[r] + heights[r])]
    cx, top, _, _ = boxes[v]
    pts.append((_port(v, chain[-2], boxes, x, pred[v]), top))
    return pts
