"""Segments: runs of consecutive per-image launches the cpu device's threads go through together.

Splitting each launch on its own (:mod:`.split`) costs two thread handoffs per op — the workers
woken, then the caller waiting for the last of them — and a woken worker that needs the GIL can
wait while the caller runs Python. A *segment* is a maximal run of consecutive steps (in the plan's
order) whose nodes all work image by image: it is dispatched once, worker ``i`` of ``k`` running
every launch of the run, in order, on rows ``[n*i/k, n*(i+1)/k)`` of every batched buffer (views of
the arena) with its own share of the workspace, and the caller waits once, at the end of the run.

Which steps qualify (:func:`per_image`): the batch-sliced ops of :mod:`.split` (convolution,
pooling, LRN, normalization, softmax over a non-batch axis, elementwise ops, ``add``, a dense layer
split by batch, the data gradients of the training step), ``flatten``/``reshape`` that keep the
batch first, ``concat``/``split`` along a non-batch axis, and the copies of the step's inputs
(which are not launches). A step that is none of these ends the run: a dense layer split by
columns (its weights outweigh its batch and each thread's slice of the batch is too small to make
its GEMM compute-bound — :data:`DENSE_ROWS` — so each thread reads its share of the weights, as
before), a
weight gradient (a reduction over the batch), batch norm's training forward and gradient
(statistics over the batch: split by channels on their own), a loss, an optimizer update, a host
node, and the launches that split their own way (:data:`.split.OWN_PARTS`: ``dropout_train``, whose
parts draw their own rows' counters and whose counter advances once, the dense gradients' tiles).

Whether a run is worth a dispatch is decided from the ops' own costs (flops, bytes moved) at the
compiled batch, as :func:`.split.parts` does for one launch — never from a timing: a run is split
into ``k`` parts when its total work is at least ``k`` times what a single split launch must do.

The memory plan is told about segments (:meth:`CpuDevice.step_groups`): every buffer a segment's
launches touch lives for the whole segment (worker 1 may still read a node's input when worker 0
writes the next node's output), and the segment's nodes share one workspace block of ``k`` shares
of the largest per-part workspace among them. So a run is cut where its live tensors would pass
:data:`SPAN_FACTOR` times its largest node's footprint, and in a training step (whose arena is to
stay under PyTorch's step peak) :data:`TRAIN_SPAN_FACTOR`: there a segment keeps no more live than
its largest node does alone.

Outputs are bit-identical to running each launch split by batch the same way, and to one thread
wherever a kernel's arithmetic per image does not depend on how many images it is given (every
kernel here but the GEMMs, whose blocking may differ with the number of rows: within DESIGN.md's
tolerance).
"""
from __future__ import annotations

import dataclasses

from ...ir import Graph, Node
from ...ir import opset
from . import split

ENABLED = True  # False: every launch split on its own, as before segments (for comparisons)
FREE_VIEWS = {"flatten", "reshape"}
ALONG_CHANNELS = {"concat", "split"}
DENSE_ROWS = 16  # a dense layer's GEMM on this many rows does >= 8 flops per weight byte read:
# compute-bound, so every thread reading all the weights costs little next to a barrier
SPAN_FACTOR = 2  # a segment's tensors: at most this many times its largest node's (see _pieces)
TRAIN_SPAN_FACTOR = 1  # ... in a training step, whose arena is to stay under PyTorch's step peak:
# a segment there keeps no more live than its largest node (CIFAR-10 quick at 2 threads: 34.5 MiB
# instead of 37.7 with the factor 2, at the same images/s within 2%)


def per_image(node: Node, graph: Graph, batch: int, activations=(), threads: int = 2) -> bool:
    """True when ``node`` may run in a segment (at ``batch`` with ``threads`` threads): its work on
    image ``j`` reads and writes only image ``j`` of its batched tensors (its other inputs are
    weights, read whole), and — a dense layer whose weights outweigh its batch — each thread's
    slice has at least :data:`DENSE_ROWS` rows."""
    if node.op == "copy_to_device":
        return node.inputs[0] in graph.inputs  # an input's copy: done before the first launch
    if node.device == "host":
        return False
    specs = [graph.specs[t] for t in node.inputs + node.outputs]
    if node.op in FREE_VIEWS or node.op in ALONG_CHANNELS:
        if not all(s.batched and s.shape for s in specs):
            return False
        return node.op in FREE_VIEWS or node.attrs.get("axis", 1) % len(specs[0].shape) != 0
    return (split.splittable(node, graph, activations) and node.op not in split.REDUCED
            and node.op not in split.OWN_PARTS and node.op not in split.CHANNEL_OPS
            and (not split.columns(node, graph, batch)
                 or split.part_batch(batch, threads) >= DENSE_ROWS))


def _units(node: Node, graph: Graph, batch: int) -> float:
    """``node``'s work in units of the least a split part must do (:data:`.split.MIN_PART_FLOPS`
    of arithmetic for the compute ops, :data:`.split.MIN_PART_BYTES` moved for the others)."""
    if node.op == "copy_to_device" or node.op in FREE_VIEWS:
        return 0.0
    schema = opset.lookup(node.op)
    flops, nbytes = schema.cost(node.attrs, [graph.specs[t] for t in node.inputs],
                                [graph.specs[t] for t in node.outputs], batch)
    if node.op in split.COMPUTE_OPS:
        return flops / split.MIN_PART_FLOPS
    return nbytes / split.MIN_PART_BYTES


def trains(graph: Graph) -> bool:
    """True for a training step (a graph with parameter updates: the ``optim`` family)."""
    return any(opset.lookup(node.op).family == "optim" for node in graph.nodes)


def _pieces(nodes: list[Node], graph: Graph, batch: int, span: float) -> list[list[Node]]:
    """``nodes`` (a run of per-image nodes) cut so that the tensors each piece touches — all
    live for the whole piece — stay within ``span`` times the largest footprint (inputs and
    outputs) of one of its nodes: a long segment would otherwise keep a whole network's
    activations live at once, where one more barrier costs tens of microseconds."""
    pieces, piece, seen, touched, largest = [], [], set(), 0, 0
    for node in nodes:
        tensors = [t for t in node.inputs + node.outputs if graph.specs[t].batched]
        footprint = sum(graph.specs[t].nbytes(batch) for t in tensors)
        new = sum(graph.specs[t].nbytes(batch) for t in set(tensors) - seen)
        if piece and touched + new > span * max(largest, footprint):
            pieces.append(piece)
            piece, seen, touched, largest = [], set(), 0, 0
            new = footprint
        piece.append(node)
        seen.update(tensors)
        touched += new
        largest = max(largest, footprint)
    if piece:
        pieces.append(piece)
    return pieces


@dataclasses.dataclass(frozen=True)
class Segment:
    """Steps ``first..last`` (of the plan's order) run as one, in ``parts`` batch slices."""

    first: int
    last: int
    parts: int
    nodes: tuple[str, ...]


def find(graph: Graph, steps: list[str], batch: int, threads: int, activations=()) -> list[Segment]:
    """The segments of a step at ``batch`` with ``threads`` threads (the plan's order ``steps``):
    maximal runs of :func:`per_image` steps with enough work for at least two parts."""
    if threads < 2 or batch < 2:
        return []
    found, run = [], []
    position = {name: i for i, name in enumerate(steps)}
    span = TRAIN_SPAN_FACTOR if trains(graph) else SPAN_FACTOR

    def close():
        for piece in _pieces([graph.node(n) for n in run if graph.node(n).op != "copy_to_device"],
                             graph, batch, span):
            work = sum(_units(n, graph, batch) for n in piece)
            k = int(min(threads, batch, work))
            if k >= 2:
                found.append(Segment(position[piece[0].name], position[piece[-1].name], k,
                                     tuple(n.name for n in piece)))
        run.clear()
    for name in steps:
        if per_image(graph.node(name), graph, batch, activations, threads):
            run.append(name)
        elif run:
            close()
    if run:
        close()
    return found


# ---- running ----------------------------------------------------------------------------------
class Run:
    """The launches of one segment in a program, dispatched once: part ``i`` runs each launch's
    unsplit kernel on batch slice ``i`` with workspace share ``i`` (``share`` float32 elements
    each, the same offsets for every launch: the plan gave them one block)."""

    def __init__(self, launches: list, parts: int, share: int):
        self.launches, self.parts, self.share = launches, parts, share
        self._calls: dict[tuple[int, int], list] = {}  # (batch, parts) -> the parts' calls

    def __call__(self, run_parts) -> None:
        n = self.launches[0].outputs[0].shape[0]
        m = min(self.parts, n)
        if m < 2:
            for launch in self.launches:
                launch.fn(launch.attrs, launch.inputs, launch.outputs, launch.workspace)
            return
        calls = self._calls.get((n, m))
        if calls is None:
            calls = self._calls[n, m] = [(_run_part, (self._part(i, m, n),)) for i in range(m)]
        run_parts(calls)

    def _part(self, i: int, m: int, n: int) -> list:
        """Part ``i`` of ``m``: every launch's (kernel, attrs, inputs, outputs, workspace)."""
        s = slice(n * i // m, n * (i + 1) // m)
        items = []
        for launch in self.launches:
            out = launch.outputs[0]
            ws = launch.workspace
            part_ws = ws[i * self.share:(i + 1) * self.share] if ws is not None else None
            items.append((launch.fn.part_kernel, launch.attrs,
                          split.batch_inputs(launch.op, launch.inputs, s, n, out.ndim),
                          [o[s] for o in launch.outputs], part_ws))
        return items


def _run_part(items: list) -> None:
    for fn, attrs, inputs, outputs, ws in items:
        fn(attrs, inputs, outputs, ws)


def bind(launches: list, segment_of: dict, shares: dict) -> list:
    """A program's launches with each segment's consecutive launches gathered into a :class:`Run`
    (``segment_of``: node -> its :class:`Segment`; ``shares``: segment -> workspace share in
    float32 elements). A launch whose kernel cannot run per slice (replaced since compiling)
    ends its run and runs alone."""
    items, current, seg = [], [], None

    def close():
        if current:
            items.append(Run(list(current), seg.parts, shares[seg]))
            current.clear()
    for launch in launches:
        this = segment_of.get(launch.node)
        if this is None or getattr(launch.fn, "part_kernel", None) is None:
            close()
            items.append(launch)
            continue
        if this is not seg:
            close()
            seg = this
        current.append(launch)
    close()
    return items
