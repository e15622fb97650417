"""The memory plan: every device tensor and kernel workspace gets an offset in one arena.

Algorithm (the plan is data; applying it — making views of an arena — is the executable's job):

1. **Schedule.** Steps are the placed graph's topological order; step ``i`` runs node ``i``.
2. **Views.** Some tensors are not buffers of their own but views of another tensor's buffer (its
   *root*): the inputs of an ``alias`` concat are slices of the concat output along its axis; the
   inputs and outputs of an ``all_reduce`` are consecutive ranges of its bucket (its first output); the
   outputs of an ``alias`` split are slices of its input; ``flatten``/``reshape`` outputs are the
   input's bytes reshaped; and an op whose ``OpDef.inplace`` names an input writes over that input
   when the input's root is last used by that very op and has the same size. Views of views resolve
   to the root. A strided slice is never reshaped or written over in place.
3. **Liveness.** Each root buffer lives from the first step that defines any tensor viewing it to
   the last step that reads any of them; a workspace lives for its node's step only. Steps the
   device runs together (``groups``: runs of consecutive steps it executes as one, its threads each
   on a batch slice of every node, with no barrier in between) count as one step: every buffer
   touched inside a group lives for the whole group, and the group's nodes share one workspace
   block (the largest they ask for), live for the whole group. All inputs
   are packed into one ``inputs`` block (one copy per batch, data and labels together); with
   ``input_slots=2`` (prefetch) there are two such blocks and both live for the whole step, since
   the next batch is uploaded into one while the other is computed on.
4. **Offsets.** Buffers, sizes rounded up to ``alignment``, are placed one by one; each takes the
   best-fitting gap (the smallest that holds it) among the buffers already placed whose lifetimes
   overlap its own, or goes above them all. The order is greedy by size (largest first, as TFLite's
   planner); a few other orders (longest-lived first, largest size x lifetime first, earliest first)
   are tried too and the smallest arena wins — each is cheap, and none dominates on every graph. Invariant (checked by :meth:`MemoryPlan.check`): two
   buffers live at a common step never share a byte.
5. **Bounds.** ``lower_bound_bytes`` is the largest total size of the buffers live at one step — no
   plan of these buffers can use less; ``naive_bytes`` gives every tensor, workspace and prefetch
   slot its own buffer, so ``lower_bound_bytes <= arena_bytes <= naive_bytes``.
"""
from __future__ import annotations

import bisect
import dataclasses
from typing import Callable

import numpy as np

from ..ir import Graph, Node
from ..ops import get_op

ALIGNMENT = 64


def format_bytes(n: int) -> str:
    """``n`` bytes for people: ``512 B``, ``1.50 KiB``, ``11.92 MiB``, ``2.00 GiB``."""
    for scale, unit in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


def align(n: int, alignment: int = ALIGNMENT) -> int:
    return (n + alignment - 1) // alignment * alignment


@dataclasses.dataclass(frozen=True)
class View:
    """Where a tensor lives: in ``buffer`` at byte ``offset``, whole (``axis`` None) or as
    ``[start:stop]`` along ``axis`` of the buffer's root tensor."""

    buffer: str
    axis: int | None = None
    start: int = 0
    stop: int = 0
    offset: int = 0


@dataclasses.dataclass(frozen=True)
class Block:
    """One buffer of the arena: its bytes, offset and the steps it is live (inclusive)."""

    name: str
    kind: str  # "activation", "input", "workspace"
    size: int
    offset: int
    start: int
    end: int


@dataclasses.dataclass
class MemoryPlan:
    """Offsets and sizes of every arena buffer, how each tensor maps onto one, and the totals."""

    batch: int
    alignment: int
    steps: list[str]
    blocks: dict[str, Block]
    views: dict[str, View]
    workspaces: dict[str, str]  # node -> block name
    input_slots: list[str]  # one block per prefetch slot, holding every input packed
    arena_bytes: int
    lower_bound_bytes: int
    naive_bytes: int

    def __repr__(self) -> str:
        return (f"<MemoryPlan batch {self.batch}: {len(self.blocks)} buffers over {len(self.steps)} "
                f"steps, arena {format_bytes(self.arena_bytes)}, lower bound "
                f"{format_bytes(self.lower_bound_bytes)}, naive {format_bytes(self.naive_bytes)}; "
                ".table() lists the buffers>")

    def check(self) -> None:
        """Raise AssertionError if two buffers live at a common step share a byte."""
        blocks = sorted(self.blocks.values(), key=lambda b: b.offset)
        for i, a in enumerate(blocks):
            assert a.offset % self.alignment == 0 and a.offset + a.size <= self.arena_bytes, a
            for b in blocks[i + 1:]:
                if b.offset >= a.offset + a.size:
                    break
                assert a.end < b.start or b.end < a.start, f"{a.name} and {b.name} overlap"

    def table(self) -> str:
        """One row per buffer: name, kind, bytes, offset, live steps, tensors viewing it."""
        users: dict[str, list[str]] = {}
        for t, v in self.views.items():
            users.setdefault(v.buffer, []).append(t)
        rows = [f"{'buffer':40s} {'kind':10s} {'bytes':>12s} {'offset':>12s}  steps    tensors"]
        for b in sorted(self.blocks.values(), key=lambda b: (b.start, b.offset)):
            shared = ", ".join(t for t in users.get(b.name, []) if t != b.name)
            rows.append(f"{b.name[:40]:40s} {b.kind:10s} {b.size:12d} {b.offset:12d}  "
                        f"{b.start:3d}-{b.end:<3d}  {shared}")
        rows.append(f"arena {self.arena_bytes} bytes, lower bound {self.lower_bound_bytes}, "
                    f"naive {self.naive_bytes} ({self.arena_bytes / max(self.lower_bound_bytes, 1):.3f}"
                    " x lower bound)")
        return "\n".join(rows)


WorkspaceFn = Callable[[Node, Graph, int], int]
GroupsFn = Callable[[Graph, list], list]


def plan_memory(graph: Graph, batch: int, *, workspace: WorkspaceFn | None = None,
                alignment: int = ALIGNMENT, input_slots: int = 1,
                groups: GroupsFn | None = None) -> MemoryPlan:
    """Plan the arena for a placed graph at ``batch``; see the module docstring. ``groups(graph,
    steps)`` gives the (first, last) step of each run of steps the device executes as one."""
    steps = graph.topological_order()
    nodes = [graph.node(n) for n in steps]
    spans = _group_spans(groups(graph, steps) if groups else (), len(nodes))
    device = {t for n in nodes if n.device != "host" for t in n.outputs}
    defined = {t: i for i, n in enumerate(nodes) for t in n.outputs}
    # the executable copies every input in before the first launch, whatever step its
    # copy_to_device node has: an input buffer is live from step 0
    defined.update({n.outputs[0]: 0 for n in nodes if is_input_copy(n, graph)})
    last_use = {t: defined[t] for t in device}
    for i, n in enumerate(nodes):
        for t in n.inputs:
            if t in device:
                last_use[t] = i
    nbytes = {t: align(graph.specs[t].nbytes(batch), alignment) for t in device}
    views, packed = _pack_inputs([n for n in nodes if is_input_copy(n, graph)], nbytes)
    views = _assign_views(graph, nodes, device, last_use, nbytes, views)

    live: dict[str, list[int]] = {}
    for t, v in views.items():
        first, last = spans[defined[t]][0], spans[last_use[t]][1]
        span = live.setdefault(v.buffer, [first, last])
        span[0], span[1] = min(span[0], first), max(span[1], last)
    requests = [(b, "input" if b == INPUTS else "activation",
                 packed if b == INPUTS else nbytes[b], s, e) for b, (s, e) in live.items()]
    slots = [INPUTS] if INPUTS in live else []
    if slots and input_slots > 1:  # the next batch is uploaded while this one computes
        requests = [r if r[0] != INPUTS else (INPUTS, "input", packed, 0, len(nodes) - 1)
                    for r in requests]
        slots += [f"{INPUTS}#slot{k}" for k in range(1, input_slots)]
        requests += [(name, "input", packed, 0, len(nodes) - 1) for name in slots[1:]]
    ws_blocks, shared = {}, {}  # shared: group's first step -> index of its request
    for i, n in enumerate(nodes):
        size = workspace(n, graph, batch) if workspace and n.device != "host" else 0
        if not size:
            continue
        first, last = spans[i]
        if first == last or first not in shared:
            ws_blocks[n.name] = f"{n.name}#workspace"
            if first != last:
                shared[first] = len(requests)
            requests.append((ws_blocks[n.name], "workspace", align(size, alignment), first, last))
        else:  # one block for the whole group, as large as its largest request
            name, kind, have, s, e = requests[shared[first]]
            requests[shared[first]] = (name, kind, max(have, align(size, alignment)), s, e)
            ws_blocks[n.name] = name
    blocks = _assign_offsets(requests)
    arena = max((b.offset + b.size for b in blocks.values()), default=0)
    lower = _max_live_bytes(blocks.values(), len(nodes))
    # naively too, every prefetch slot but the first is a buffer of its own
    naive = (sum(nbytes.values()) + packed * (len(slots) - 1)
             + sum(r[2] for r in requests if r[1] == "workspace"))
    return MemoryPlan(batch, alignment, steps, blocks, views, ws_blocks, slots, arena, lower, naive)


INPUTS = "inputs"


def _group_spans(groups, steps: int) -> list[tuple[int, int]]:
    """The (first, last) step of the group each step belongs to (a step alone: itself)."""
    spans = [(i, i) for i in range(steps)]
    for first, last in groups:
        for i in range(first, last + 1):
            spans[i] = (first, last)
    return spans


def is_input_copy(node: Node, graph: Graph) -> bool:
    """True for the ``copy_to_device`` node of a graph input (the others copy a host node's output
    back to the device in the middle of a step)."""
    return node.op == "copy_to_device" and node.inputs[0] in graph.inputs


def _pack_inputs(copies, nbytes) -> tuple[dict[str, View], int]:
    """Every input's device copy at its own offset in one ``inputs`` block, so a batch of data and
    labels travels in one host-to-device copy from one staging buffer."""
    views, offset = {}, 0
    for n in copies:
        views[n.outputs[0]] = View(INPUTS, offset=offset)
        offset += nbytes[n.outputs[0]]
    return views, offset


def _assign_views(graph: Graph, nodes, device, last_use, nbytes, views) -> dict[str, View]:
    for n in nodes:  # concat branches write into their slices of the concat output
        if n.op == "concat" and n.attrs.get("alias") and all(
                t in device and graph.producer(t).op != "copy_to_device" for t in n.inputs):
            start = 0
            for t in n.inputs:
                size = graph.specs[t].shape[n.attrs["axis"]]
                views[t] = View(n.outputs[0], n.attrs["axis"], start, start + size)
                start += size
    for n in nodes:
        if n.op == "all_reduce" and n.outputs[0] in device:
            _bucket_views(graph, n, device, views)
    root_last = dict(last_use)
    for i, n in enumerate(nodes):
        for t in n.outputs:
            if t not in device or t in views:
                continue
            views[t] = _view_of_output(graph, n, t, i, views, root_last, nbytes) or View(t)
            root_last[views[t].buffer] = max(root_last.get(views[t].buffer, i), last_use[t])
    # a concat output may itself have become a view: re-root its branch slices
    for t, v in list(views.items()):
        outer = views.get(v.buffer)
        if v.axis is not None and outer is not None and outer.buffer != v.buffer:
            views[t] = View(outer.buffer, v.axis, v.start, v.stop)
    return views


def _bucket_views(graph: Graph, n: Node, device, views) -> None:
    """An ``all_reduce``'s inputs and outputs are consecutive ranges of its bucket (its first
    output): the producers write straight into the bucket, the reduction runs in place on it and
    the readers read the reduced ranges. An input that is not a plain output read by this node
    alone keeps its own buffer (the op copies it in)."""
    bucket, start = n.outputs[0], 0
    for x, y in zip(n.inputs, n.outputs[1:]):
        prod, user = graph.producer(x), graph.single_consumer(x)
        if (x in device and x not in views and n.inputs.count(x) == 1 and user is not None
                and user.name == n.name and prod.op not in ("copy_to_device", "split", "concat",
                                                              "flatten", "reshape")):
            views[x] = View(bucket, offset=start)
        views[y] = View(bucket, offset=start)
        start += graph.specs[x].nbytes(1)


def _view_of_output(graph, n, t, i, views, root_last, nbytes) -> View | None:
    src = n.inputs[0] if n.inputs else None
    whole = src in views and views[src].axis is None
    if n.op in ("flatten", "reshape") and whole:
        return View(views[src].buffer, offset=views[src].offset)
    if n.op == "split" and n.attrs.get("alias") and whole and views[src].buffer != INPUTS:
        axis, start = n.attrs["axis"], 0
        for out, size in zip(n.outputs, n.attrs["sizes"]):
            if out == t:
                return View(views[src].buffer, axis, start, start + size)
            start += size
    k = get_op(n.op).inplace
    if k is not None and k < len(n.inputs):
        x = n.inputs[k]
        root = views[x].buffer if x in views else None
        # no other input may read the root (as x again or through another view): it would see
        # the overwrite
        if (root is not None and root != INPUTS and views[x].axis is None and nbytes.get(root) == nbytes[t]
                and root_last.get(root) == i
                and sum(y in views and views[y].buffer == root for y in n.inputs) == 1):
            return View(root)
    return None


ORDERS = (
    lambda r: (-r[2], r[3], r[0]),                      # largest first
    lambda r: (-(r[4] - r[3]), -r[2], r[0]),            # longest-lived first
    lambda r: (-r[2] * (r[4] - r[3] + 1), r[3], r[0]),  # largest area in (time, bytes) first
    lambda r: (r[3], -r[2], r[0]),                      # earliest first
)


def _assign_offsets(requests) -> dict[str, Block]:
    """The best of the greedy best-fit placements over :data:`ORDERS` (smallest arena)."""
    best = None
    for order in ORDERS:
        blocks = _best_fit(sorted(requests, key=order))
        top = max((b.offset + b.size for b in blocks.values()), default=0)
        if best is None or top < best[0]:
            best = (top, blocks)
    return best[1]


def _max_live_bytes(blocks, steps: int) -> int:
    """The largest total size of the blocks live at one of the steps 0..steps-1 (a sweep)."""
    delta = [0] * (steps + 1)
    for b in blocks:
        lo, hi = max(b.start, 0), min(b.end, steps - 1)
        if lo <= hi:
            delta[lo] += b.size
            delta[hi + 1] -= b.size
    best, live = 0, 0
    for d in delta[:steps]:
        live += d
        best = max(best, live)
    return best


class _Lifetimes:
    """Placed blocks indexed by lifetime: those overlapping steps [start, end] are the ones live at
    ``start`` (a stabbing query on a segment tree over the steps) and the ones starting after it, up
    to ``end`` (buckets by start step), in O(log steps + answer) rather than a scan of all blocks."""

    def __init__(self, requests):
        self.low = min((r[3] for r in requests), default=0)
        steps = max((r[4] for r in requests), default=0) - self.low + 1
        self.size = 1
        while self.size < steps:
            self.size *= 2
        self.tree: dict[int, list] = {}  # segment-tree node -> (offset, index, block) it covers
        self.by_start: dict[int, list] = {}
        self.starts: list[int] = []  # the keys of by_start, sorted

    def add(self, item) -> None:
        b = item[2]
        lo, hi = b.start - self.low + self.size, b.end - self.low + self.size + 1
        while lo < hi:
            if lo & 1:
                self.tree.setdefault(lo, []).append(item)
                lo += 1
            if hi & 1:
                hi -= 1
                self.tree.setdefault(hi, []).append(item)
            lo, hi = lo >> 1, hi >> 1
        if b.start not in self.by_start:
            bisect.insort(self.starts, b.start)
        self.by_start.setdefault(b.start, []).append(item)

    def overlapping(self, start: int, end: int) -> list:
        found = []
        i = start - self.low + self.size
        while i:
            found.extend(self.tree.get(i, ()))
            i >>= 1
        j = bisect.bisect_right(self.starts, start)
        while j < len(self.starts) and self.starts[j] <= end:
            found.extend(self.by_start[self.starts[j]])
            j += 1
        return found


def _best_fit(requests) -> dict[str, Block]:
    placed: list[Block] = []
    index = _Lifetimes(requests)
    for name, kind, size, start, end in requests:
        # the placed blocks whose lifetimes overlap [start, end], by offset then placement order
        overlapping = [b for _, _, b in sorted(index.overlapping(start, end))]
        best, best_gap, cursor = None, None, 0
        for b in overlapping:
            gap = b.offset - cursor
            if gap >= size and (best_gap is None or gap < best_gap):
                best, best_gap = cursor, gap
            cursor = max(cursor, b.offset + b.size)
        offset = best if best is not None else cursor
        placed.append(Block(name, kind, size, offset, start, end))
        index.add((offset, len(placed) - 1, placed[-1]))
    return {b.name: b for b in placed}


def make_views(plan: MemoryPlan, arena: np.ndarray, graph: Graph, batch: int,
               remap: dict[str, str] | None = None) -> dict[str, np.ndarray]:
    """Apply the plan: numpy views of every device tensor at ``batch`` (<= the planned batch) in the
    uint8 ``arena``. Roots come first, slices and reshapes of them after. ``remap`` puts a buffer at
    another block's offset (an input tensor in its second prefetch slot)."""
    remap = remap or {}

    def whole(buffer: str, spec, within: int = 0) -> np.ndarray:
        shape = spec.concrete(batch)
        count = spec.nbytes(batch)
        offset = plan.blocks[remap.get(buffer, buffer)].offset + within
        return arena[offset: offset + count].view(spec.dtype).reshape(shape)

    out: dict[str, np.ndarray] = {}
    for t, v in plan.views.items():
        if v.axis is None:
            out[t] = whole(v.buffer, graph.specs[t], v.offset)
    for t, v in plan.views.items():
        if v.axis is not None:
            root = out.get(v.buffer)
            if root is None:
                root = out[v.buffer] = whole(v.buffer, graph.specs[v.buffer])
            out[t] = root[(slice(None),) * v.axis + (slice(v.start, v.stop),)]
    return out
