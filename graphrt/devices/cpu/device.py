"""The ``cpu`` device: numpy kernels over one preallocated arena — the embedded default and the
reference every other device is compared against.

Kernels (:mod:`.kernels`, and :mod:`.train_kernels` for the training step) write into their planned output views (``out=``); ops without a
kernel of their own there run their ``OpDef`` reference forward. An executable's device is made for
its graph (:meth:`CpuDevice.for_graph`): it owns ``threads`` threads (:mod:`.threads`), gathers
runs of consecutive per-image launches into segments its threads go through together, each on
its batch slice, with one barrier per segment (:mod:`.segments`), splits each other large launch
across them on its own (:mod:`.split`) and runs each convolution with the algorithm chosen for it
(:mod:`.algorithms`); the workspace it reports to the memory plan is that of the chosen algorithm,
one share per part, and its segments are steps the plan keeps together
(:meth:`CpuDevice.step_groups`).
"""
from __future__ import annotations

import weakref

import numpy as np

from ...ir import Graph, Node
from ...ir.errors import GraphrtError
from ...ir.limits import memory_available
from ...ops import activation, get_op
from ..base import Device
from . import algorithms as algo
from . import segments as seg
from . import split
from .kernels import KERNELS, WORKSPACES
from .train_kernels import TRAIN_KERNELS, TRAIN_WORKSPACES
from .threads import blas_single_thread, default_threads, pool
from ..streams import InlineStream, WorkerStream

ARENA_ALIGN = 64


def aligned_empty(nbytes: int, align: int = ARENA_ALIGN) -> np.ndarray:
    """A zeroed uint8 array of ``nbytes`` whose data starts on an ``align``-byte boundary."""
    raw = np.zeros(nbytes + align, np.uint8)
    start = (-raw.ctypes.data) % align
    return raw[start:start + nbytes]


# ---- the device ---------------------------------------------------------------------------------
SPLIT_ACTIVATIONS = frozenset(activation.DEFS)  # unary activations: elementwise, split by batch



def _workspace_fn(op: str):
    """The workspace function of ``op``'s kernel (forward or training step), or None."""
    return WORKSPACES.get(op) or TRAIN_WORKSPACES.get(op)


def _reference_kernel(op: str):
    forward = get_op(op).forward

    def run(attrs, inputs, outputs, ws):
        forward(attrs, inputs, outputs)
    run.__name__ = f"reference_{op}"
    return run


class CpuDevice(Device):
    """numpy on the host; its "device memory" is one aligned numpy buffer.

    ``threads``: the threads a step uses (default: the cores this process may run on);
    ``algorithms``: how convolutions choose their algorithm (see :mod:`.algorithms`)."""

    kind = "cpu"

    def __init__(self, threads: int | None = None, algorithms: str | None = None):
        if threads is None:
            threads = default_threads()
        if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
            raise GraphrtError(f"threads must be a whole number of at least 1, got {threads!r}")
        self.threads = int(threads)
        self.algorithms = algo.resolve_mode(algorithms)
        self._graph: Graph | None = None
        self._batch = 0
        self.choices: dict[str, str] = {}  # conv2d node -> algorithm
        self.timings: dict[str, dict] = {}  # conv2d node -> {algorithm: ms}, where measured
        self._pending: dict[str, str] = {}  # conv2d node -> cache key, still to measure
        self.parts: dict[str, int] = {}  # node -> parts its launches run in (absent: 1)
        self.segments: list[seg.Segment] = []  # runs of launches dispatched once (see .segments)
        self._segment_of: dict[str, seg.Segment] = {}
        self._bound = weakref.WeakKeyDictionary()  # program -> its launches and segment runs

    # ---- choices for one graph --------------------------------------------------------------
    def for_graph(self, graph: Graph, batch: int, *, threads: int | None = None,
                  algorithms: str | None = None) -> "CpuDevice":
        dev = CpuDevice(self.threads if threads is None else threads,
                        self.algorithms if algorithms is None else algorithms)
        dev._graph, dev._batch = graph, batch
        cached = algo.read_cache() if dev.algorithms == "measure" else {}
        if seg.ENABLED:
            dev.segments = seg.find(graph, graph.topological_order(), batch, dev.threads,
                                    SPLIT_ACTIVATIONS)
        dev._segment_of = {name: s for s in dev.segments for name in s.nodes}
        for node in graph.nodes:
            if node.device == "host":
                continue
            k = split.parts(node, graph, batch, dev.threads, SPLIT_ACTIVATIONS)
            if node.name in dev._segment_of:  # split like the rest of its segment
                k = dev._segment_of[node.name].parts
            if k > 1:
                dev.parts[node.name] = k
            if node.op == "conv2d":
                key = algo.layer_key(node, graph, batch, dev.threads)
                chosen = algo.initial_choice(node, graph, dev.algorithms, cached, key)
                if chosen is None:
                    dev._pending[node.name] = key
                else:
                    dev.choices[node.name] = chosen
        return dev

    def _by_columns(self, node: Node) -> bool:
        """``node`` (a dense layer) split by output columns; in a segment it is split by batch."""
        return node.name not in self._segment_of and split.columns(node, self._graph, self._batch)

    def _ours(self, graph: Graph) -> bool:
        return graph is self._graph

    def _algorithms(self, node: Node) -> list[str]:
        """The algorithm(s) whose workspace ``node`` needs: the chosen one, or while it is still to
        be measured every candidate (the plan then holds the largest)."""
        if node.name in self._pending:
            return algo.candidates(node, self._graph)
        return [self.choices.get(node.name) or algo.fixed(node, self._graph)]

    def _part_workspace(self, node: Node, graph: Graph, batch: int, names=None) -> int:
        """(per-part batch) workspace of ``node``'s kernel — of the algorithms ``names`` for a
        convolution — as one part of its split runs it."""
        k = self.parts.get(node.name, 1)
        if k > 1 and not self._by_columns(node) and not split.by_channels(node):
            batch = split.part_batch(batch, k)
        if node.op == "conv2d":
            names = names or self._algorithms(node)
            return max(algo.ALGORITHMS[a].workspace(node, graph, batch) for a in names)
        fn = _workspace_fn(node.op)
        return (fn(node, graph, batch) if fn else 0) + (split.reduce_bytes(node, graph) if k > 1
                                                        else 0)

    def workspace_bytes(self, node: Node, graph: Graph, batch: int) -> int:
        if not self._ours(graph):
            fn = _workspace_fn(node.op)
            return fn(node, graph, batch) if fn else 0
        per = self._part_workspace(node, graph, batch)
        k = self.parts.get(node.name, 1)
        return per if k == 1 or per == 0 else k * split.workspace_share(per)

    def kernel_for(self, node: Node, graph: Graph):
        if not self._ours(graph):
            return self.kernel(node.op)
        name = None
        if node.op == "conv2d":
            name = self._algorithms(node)[0]
        return self._kernel(node, name)

    def _kernel(self, node: Node, name: str | None):
        """``node``'s kernel (conv2d: algorithm ``name``), split into its parts."""
        fn = algo.ALGORITHMS[name].kernel if name else self.kernel(node.op)
        k = self.parts.get(node.name, 1)
        if k == 1:
            return fn
        graph = self._graph
        share = split.workspace_share(self._part_workspace(node, graph, self._batch,
                                                           [name] if name else None))
        return split.split_kernel(fn, node.op, k, self._by_columns(node), share,
                                  pool(self.threads).run)

    def tune(self, program) -> bool:
        """Time the candidates of every convolution still to be measured, on the program's own
        views and workspace, keep the fastest, and cache the choices."""
        if not self._pending:
            return False
        found = {}
        with blas_single_thread():
            for launch in program.launches:
                key = self._pending.get(launch.node)
                if key is None:
                    continue
                node = self._graph.node(launch.node)
                kernels = {a: self._kernel(node, a) for a in algo.candidates(node, self._graph)}
                best, ms = algo.measure(launch, kernels)
                self.choices[node.name], self.timings[node.name] = best, ms
                found[key] = {"algorithm": best, "ms": ms}
        for name in self._pending:  # not bound to a launch (cannot happen for device nodes)
            self.choices.setdefault(name, algo.fixed(self._graph.node(name), self._graph))
        self._pending.clear()
        algo.write_cache(found)
        return True

    def step_groups(self, graph: Graph, steps: list[str]) -> list[tuple[int, int]]:
        """The steps of each segment (:mod:`.segments`): the plan keeps their buffers live
        throughout and gives their nodes one workspace block."""
        if not self._ours(graph) or not self.segments:
            return []
        position = {name: i for i, name in enumerate(steps)}
        return [(position[s.nodes[0]], position[s.nodes[-1]]) for s in self.segments]

    def _segment_share(self, segment: seg.Segment) -> int:
        """Each part's workspace in a segment, in float32 elements: the largest of its nodes'."""
        return max((split.workspace_share(self._part_workspace(self._graph.node(name), self._graph,
                                                               self._batch))
                    for name in segment.nodes), default=0) // 4

    def run_program(self, program) -> None:
        """One step with numpy's BLAS held to one thread: the parallelism is the pool's. Each
        segment's launches are dispatched to the pool once (see :mod:`.segments`)."""
        items = self._bound.get(program)
        if items is None:
            shares = {s: self._segment_share(s) for s in self.segments}
            items = self._bound[program] = seg.bind(program.launches, self._segment_of, shares)
        run_parts = pool(self.threads).run
        with blas_single_thread():
            for item in items:
                if type(item) is seg.Run:
                    item(run_parts)
                else:
                    item.fn(item.attrs, item.inputs, item.outputs, item.workspace)

    def alloc_arena(self, nbytes: int) -> np.ndarray:
        return aligned_empty(nbytes)

    def upload(self, array: np.ndarray) -> np.ndarray:
        out = aligned_empty(array.nbytes).view(array.dtype).reshape(array.shape)
        out[...] = array
        return out

    def kernel(self, op: str):
        return KERNELS.get(op) or TRAIN_KERNELS.get(op) or _reference_kernel(op)

    def available_bytes(self) -> int:
        """The least of the address-space limit, the cgroup limit and the machine's available
        memory (:func:`graphrt.ir.limits.memory_available`): the arena is host memory."""
        return memory_available()[0]

    def available_memory(self) -> tuple[int, str]:
        room, why = memory_available()
        available = self.available_bytes()
        return available, why if available == room else "the cpu device's available_bytes()"

    def compute_stream(self) -> InlineStream:
        return InlineStream()

    def copy_stream(self) -> WorkerStream:
        return WorkerStream()

    def alloc_staging(self, nbytes: int) -> np.ndarray:
        return aligned_empty(nbytes)

    def to_device(self, host, dst, stream=None) -> None:
        np.copyto(dst, host)

    def to_host(self, src, dst, stream=None) -> None:
        np.copyto(dst, src)
