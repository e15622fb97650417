"""``graphrt.compile``: optimize, place, plan and bind a graph into an :class:`Executable`.

    exe = graphrt.compile(graph, device="cpu", batch_size=32, opt_level=2)
    y = exe(x)            # fresh numpy arrays the caller owns (a dict for several outputs)
    exe.graph, exe.plan   # the optimized, placed graph and its MemoryPlan
    exe.ledger.summary()  # copies made so far

Any batch up to ``batch_size`` runs in the same arena (views of its first rows); a larger batch runs
in chunks of ``batch_size``.
"""
from __future__ import annotations

import contextlib
import threading
import time
import warnings
from collections.abc import Mapping
from typing import Iterable, Sequence

import numpy as np

from ..devices import get_device
from ..ir.errors import FallbackWarning, GraphrtError, InputError, OutOfMemoryError
from ..ir import Graph
from ..ir.gcpause import gc_paused
from ..memory import plan_memory
from ..passes import host_nodes, optimize, place_on
from ..ops import get_op
from ..ops.reference import check_feeds
from .ledger import Ledger
from .prefetch import SLOTS, Prefetcher, Staging
from .program import Program

#: outputs that are batch means (losses, accuracy): a chunked run averages them by chunk size
CHUNK_MEANS = ("softmax_cross_entropy", "nll_loss", "accuracy")


def as_graph(model) -> Graph:
    """A Graph, or a builder model with ``to_graph()`` (Keras-style Sequential)."""
    if isinstance(model, Graph):
        return model
    to_graph = getattr(model, "to_graph", None)
    if to_graph is None:
        raise GraphrtError(f"cannot compile a {type(model).__name__}: pass a graphrt.Graph or a "
                           "model with to_graph()")
    try:
        return to_graph()
    except TypeError as err:
        raise GraphrtError(f"{type(model).__name__}.to_graph() needs arguments ({err}); call it "
                           "yourself, e.g. model.to_graph(input_shape=(C, H, W))") from None


class Executable:
    """A graph compiled for one device and a maximum batch size; see the module docstring."""

    def __init__(self, graph: Graph, device="cpu", batch_size: int = 1, opt_level: int = 2, *,
                 threads: int | None = None, algorithms: str | None = None,
                 disabled: Sequence[str] = (), debug: bool = False, check_finite: bool = False):
        if int(batch_size) < 1:
            raise GraphrtError(f"batch_size must be at least 1, got {batch_size}")
        self.source = graph
        self.device = get_device(device)
        self.batch_size = int(batch_size)
        self.opt_level = opt_level
        optimized = optimize(graph, opt_level, disabled=disabled, debug=debug)
        self.host_nodes = host_nodes(optimized, self.device.placement)
        self.graph = place_on(optimized, self.device.kind, self.host_nodes)
        if self.host_nodes:
            warnings.warn(FallbackWarning(fallback_message(optimized, self.host_nodes,
                                                           self.device.kind)), stacklevel=3)
        if debug:
            self.graph.verify()
        self.output_names = list(graph.outputs)
        # the device made for this graph: threads, each launch's split, each layer's algorithm
        self.device = self.device.for_graph(self.graph, self.batch_size, threads=threads,
                                            algorithms=algorithms)
        self._plan()
        self.ledger = Ledger()
        self.params = self._upload_params()
        self._programs: dict[tuple, Program] = {}
        self._lock = threading.Lock()
        if self.device.tune(self.program(self.batch_size)):  # measured: plan the chosen workspaces
            self._programs.clear()
            self.arena = None
            self._plan()
        self._host_buffers: dict = {}
        self._staging: Staging | None = None  # the packed upload of exe(x)'s host inputs
        self._staged = None  # the event after the last upload from it (it may be refilled)
        self.check_finite = check_finite
        # one step at a time: a second thread waits; the thread that is streaming may not step
        self._busy = threading.RLock()
        self._streaming: int | None = None
        self._feed_checks = feed_checks(graph)

    def _plan(self) -> None:
        """The memory plan with the device's workspaces, checked against the memory available,
        and its arena."""
        self.plan = plan_memory(self.graph, self.batch_size, workspace=self.device.workspace_bytes,
                                input_slots=SLOTS, groups=self.device.step_groups)
        self._check_memory()
        self.arena = self.device.alloc_arena(self.plan.arena_bytes)

    def _check_memory(self) -> None:
        """OutOfMemoryError, before allocating, when the arena and the parameters' device copies
        do not fit what the device (on the cpu device: the process) may still use."""
        params = sum(self.graph.params[t].nbytes for t in
                     {t for n in self.graph.nodes for t in n.inputs if t in self.graph.params})
        available, why = self.device.available_memory()
        need = self.plan.arena_bytes + params
        if need > available:
            raise OutOfMemoryError(
                f"the memory plan needs an arena of {self.plan.arena_bytes / 2**20:.1f} MiB at batch "
                f"{self.batch_size} (and {params / 2**20:.1f} MiB of parameters) but the "
                f"{self.device.kind} device has {available / 2**20:.1f} MiB available ({why}); "
                "compile with a smaller batch_size")

    def _upload_params(self) -> dict:
        """Every parameter the device reads, uploaded once; a parameter only host nodes read gets
        a host copy of its own instead (host nodes may update it in place)."""
        g = self.graph
        used = {t for n in g.nodes for t in n.inputs if t in g.params}
        params = {}
        for name in sorted(used):
            if all(c.device == "host" and c.op != "copy_to_host" for c in g.consumers(name)):
                params[name] = np.array(g.params[name], copy=True)
                continue
            start = time.perf_counter()
            params[name] = self.device.upload(g.params[name])
            self.ledger.record_upload(g.params[name].nbytes, time.perf_counter() - start)
        return params

    def program(self, batch: int, slot: int = 0) -> Program:
        """The launch list bound to arena views for ``batch`` with the inputs in prefetch ``slot``
        (built once per batch size and slot)."""
        with self._lock:
            if (batch, slot) not in self._programs:
                self._programs[batch, slot] = Program(self.graph, self.plan, self.device, self.arena,
                                                      self.params, batch, slot, self.ledger)
            return self._programs[batch, slot]

    @property
    def kernels_per_step(self) -> int:
        return len(self.program(self.batch_size))

    def __call__(self, x, *, copy: bool = True, outputs: str = "host"):
        """Run on ``x`` (an array, a tuple or a dict of arrays); see the module docstring.

        On a device that can take them (cuda), inputs may be device arrays — CuPy arrays, anything
        with ``__cuda_array_interface__`` or CUDA DLPack (PyTorch CUDA tensors) — copied on the
        device into the input slot, never through the host; ``outputs="device"`` returns device
        arrays (fresh ones, or with ``copy=False`` the arena's views, valid until the next step)."""
        if outputs not in ("host", "device"):
            raise GraphrtError(f"outputs must be 'host' or 'device', got {outputs!r}")
        feeds, batch = check_feeds(self.source, self._adopt(x))
        self.check_values(feeds)
        with self.exclusive():
            if batch > self.batch_size:
                return self._run_chunks(feeds, batch, outputs)
            outs = self._step(feeds, batch, copy, outputs)
        return outs[0] if len(outs) == 1 else dict(zip(self.output_names, outs))

    def check_values(self, feeds: dict) -> None:
        """Every op's check of the values fed to it (labels in range), run before the step: a
        step either runs whole or is refused before it writes any state."""
        for tensor, node, check, in_specs, i in self._feed_checks:
            value = feeds.get(tensor)
            if value is None or hasattr(value, "__cuda_array_interface__"):
                continue  # device arrays: their kernels check
            try:
                check(node.attrs, in_specs, i, value)
            except GraphrtError as err:
                err.message = f"input {tensor!r}: {err.message}"
                raise err.locate(node=node.name, op=node.op)

    @contextlib.contextmanager
    def exclusive(self, streaming: bool = False):
        """Hold the executable for one step (or, ``streaming``, for a whole stream): its arena and
        input slots serve one run at a time. Another thread waits its turn; the thread iterating a
        stream gets a clear error instead of corrupting the batch in flight."""
        if self._streaming == threading.get_ident():
            raise GraphrtError("this executable is streaming in this thread: finish or close the "
                               "stream first, or compile a second executable for this call")
        with self._busy:
            if streaming:
                self._streaming = threading.get_ident()
            try:
                yield
            finally:
                if streaming:
                    self._streaming = None

    def _adopt(self, x):
        """Device arrays as the device's own array type, without a copy (the device decides)."""
        def one(v):
            a = self.device.adopt(v)
            return v if a is None else a
        if isinstance(x, Mapping):
            return {k: one(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)) and len(self.source.inputs) > 1:
            return type(x)(one(v) for v in x)
        return one(x)

    def _step(self, feeds: dict, batch: int, copy: bool, outputs: str = "host") -> list:
        program = self.program(batch)
        packed = self._packed_inputs(program, feeds)
        if packed:
            self._upload_packed(program, {name: feeds[name] for name in packed}, batch)
        for name, slot in program.inputs:
            if name in packed:
                continue
            start = time.perf_counter()
            self.device.to_device(feeds[name], slot)
            kind = "DtoD" if hasattr(feeds[name], "__cuda_array_interface__") else "HtoD"
            self.ledger.record(kind, feeds[name].nbytes, time.perf_counter() - start)
        program.run(self.check_finite)
        if outputs == "device":
            return self.device_outputs(program, copy)
        return self.fetch_outputs(program, copy=copy)

    def _packed_inputs(self, program: Program, feeds: dict) -> list:
        """The host inputs that go to the device in one copy: all of them, where there are several
        (a training step's data and labels) and the arena is device memory (on the cpu device the
        arena is host memory, where packing would only copy each input twice)."""
        names = [name for name, _ in program.inputs
                 if not hasattr(feeds[name], "__cuda_array_interface__")]
        if len(names) < 2 or program.packed is None or len(names) != len(program.inputs) \
                or isinstance(program.packed, np.ndarray):
            return []
        return names

    def _upload_packed(self, program: Program, feeds: dict, batch: int) -> None:
        """Host inputs packed into a page-locked staging buffer laid out like the arena's input
        block, as ``exe.stream`` packs a batch, and uploaded in one copy; the buffer is refilled
        only after the previous upload from it has completed."""
        start = time.perf_counter()
        if self._staging is None:
            self._staging = Staging(self, 1)
        elif self._staged is not None:
            self._staged.synchronize()
        self._staging.fill(0, feeds, batch)
        raw = self._staging.raw[0]
        self.device.to_device(raw, program.packed)
        self._staged = self.device.compute_stream().record_event()
        self.ledger.record("HtoD", raw.nbytes, time.perf_counter() - start, items=batch)

    def device_outputs(self, program: Program, copy: bool) -> list:
        """The step's outputs as device arrays for the caller: after the caller's stream is
        ordered behind the step (:meth:`Device.hand_over`), fresh copies made on that stream, or
        (``copy=False``) the arena's views, valid until the next step."""
        outs = self.fetch_outputs(program, device=True)
        self.device.hand_over()
        return [o.copy() for o in outs] if copy else outs

    def fetch_outputs(self, program: Program, *, copy: bool = True, device: bool = False) -> list:
        """The step's outputs: fresh host arrays, host views valid until the next step
        (``copy=False``), or the device arrays themselves (``device=True``, no copy at all)."""
        outs = []
        for name, view in program.outputs:
            if device:
                outs.append(view)
                continue
            if name in program.host_outputs:  # made on the host: nothing crosses the bus
                outs.append(view.copy() if copy else view)
                continue
            start = time.perf_counter()
            host = np.empty(view.shape, view.dtype) if copy else self._host_view(view)
            self.device.to_host(view, host)
            self.ledger.record("DtoH", view.nbytes, time.perf_counter() - start)
            outs.append(host)
        return outs

    def _host_view(self, view):
        """A reusable host buffer for ``copy=False`` outputs (the arena itself on the cpu device)."""
        if isinstance(view, np.ndarray):
            return view
        key = (view.shape, str(view.dtype))
        if key not in self._host_buffers:
            self._host_buffers[key] = self.device.alloc_staging(view.nbytes).view(view.dtype).reshape(view.shape)
        return self._host_buffers[key]

    def stream(self, batches: Iterable, *, copy: bool = True, outputs: str = "host"):
        """Run over an iterable of batches (or ``(x, y)`` pairs) with the prefetch pipeline of
        :mod:`graphrt.scheduler.prefetch`; yields one result per batch, in order."""
        return iter(Prefetcher(self, batches, copy=copy, outputs=outputs))

    def _run_chunks(self, feeds: dict, batch: int, outputs: str = "host"):
        self._check_chunkable(batch)
        parts, sizes = [], []
        for start in range(0, batch, self.batch_size):
            chunk = {k: (v[start:start + self.batch_size] if self.source.specs[k].batched else v)
                     for k, v in feeds.items()}
            sizes.append(min(self.batch_size, batch - start))
            parts.append(self._step(chunk, sizes[-1], copy=True, outputs=outputs))
        # scalar outputs (losses, accuracy) are batch means: weight each chunk by its size
        if outputs == "device":  # device arrays: np.concatenate dispatches to their module
            outs = [np.concatenate(p) if p[0].ndim else
                    (sum(v.astype("float64") * s for v, s in zip(p, sizes)) / batch).astype(p[0].dtype)
                    for p in zip(*parts)]
            return outs[0] if len(outs) == 1 else dict(zip(self.output_names, outs))
        outs = [np.concatenate(p) if p[0].ndim else np.asarray(np.average(p, weights=sizes), p[0].dtype)
                for p in zip(*parts)]
        return outs[0] if len(outs) == 1 else dict(zip(self.output_names, outs))

    def _check_chunkable(self, batch: int) -> None:
        """An output computed over the whole batch (a reduction over axis 0) cannot be put together
        from chunks; only batch-mean losses can (their chunks are averaged)."""
        for name in self.source.outputs:
            spec, prod = self.source.specs[name], self.source.producer(name)
            if not spec.batched and prod is not None and prod.op not in CHUNK_MEANS and any(
                    self.source.specs[t].batched for t in self.source.inputs):
                raise InputError(f"output {name!r} is computed over the whole batch, so a batch of "
                                 f"{batch} cannot run in chunks of this executable's batch_size "
                                 f"{self.batch_size}: compile with batch_size >= {batch}",
                                 node=name)

    def __repr__(self) -> str:
        return (f"<Executable {self.source.name!r} on {self.device.kind}, batch {self.batch_size}, "
                f"opt_level {self.opt_level}: {self.kernels_per_step} kernels, "
                f"arena {self.plan.arena_bytes / 2**20:.2f} MiB>")


def fallback_message(graph: Graph, on_host: dict[str, str], kind: str) -> str:
    """The warning that names the nodes placed on the host, by op, with the device's reasons."""
    by_op: dict[tuple, list[str]] = {}
    for name, why in on_host.items():
        by_op.setdefault((graph.node(name).op, why), []).append(name)
    parts = []
    for (op, why), names in by_op.items():
        shown = ", ".join(names[:3]) + (f", ... ({len(names)} nodes)" if len(names) > 3 else "")
        parts.append(f"{op} [{shown}]: {why}")
    return (f"{len(on_host)} of {len(graph)} nodes of {graph.name!r} run on the host, not on the "
            f"{kind} device, with explicit copies every step: " + "; ".join(parts))


def feed_checks(graph: Graph) -> list[tuple]:
    """``(graph input, node, check, input specs, index)`` for every op input fed straight from a
    graph input whose op declares ``check_feed``."""
    out = []
    for node in graph.nodes:
        check = get_op(node.op).check_feed
        if check is None:
            continue
        specs = [graph.specs[t] for t in node.inputs]
        out.extend((t, node, check, specs, i) for i, t in enumerate(node.inputs) if t in graph.inputs)
    return out


@gc_paused
def compile(model, device="cpu", batch_size: int = 1, opt_level: int = 2, *,
            threads: int | None = None, algorithms: str | None = None,
            disabled: Sequence[str] = (), debug: bool = False, check_finite: bool = False) -> Executable:
    """Compile a Graph (or a model with ``to_graph()``) into an :class:`Executable`.

    ``threads`` (cpu device): the threads a step runs on (default: the cores this process may use,
    ``len(os.sched_getaffinity(0))``); numpy's BLAS keeps its own threads outside a step.
    ``algorithms`` (cpu device): ``"measure"`` times each convolution's candidate algorithms at
    compile time and keeps the fastest (cached on disk), ``"default"`` picks by a fixed rule so plans
    are the same on every machine, or an algorithm's name (``"im2col"``, ``"pointwise"``,
    ``"winograd"``) forces it where it applies; None: ``$GRAPHRT_ALGORITHMS``, else ``"measure"``
    (see :mod:`graphrt.devices.cpu.algorithms`).
    ``check_finite`` checks every node's outputs while a step runs and raises
    :class:`~graphrt.scheduler.program.NumericsError` naming the first node that made NaN or Inf."""
    return Executable(as_graph(model), device, batch_size, opt_level, threads=threads,
                      algorithms=algorithms, disabled=disabled, debug=debug,
                      check_finite=check_finite)
