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
from collections.abc import Mapping
from typing import Iterable, Sequence

import numpy as np

from ..devices import get_device
from ..ir.errors import GraphrtError, InputError
from ..ir import Graph
from ..memory import plan_memory
from ..passes import optimize, place_on
from ..ops.reference import check_feeds
from .ledger import Ledger
from .prefetch import SLOTS, Prefetcher
from .program import Program

#: outputs that are batch means (losses, accuracy): a chunked run averages them by chunk size
CHUNK_MEANS = ("softmax_cross_entropy", "nll_loss", "accuracy")


class OutOfMemoryError(GraphrtError):
    """The memory plan does not fit the device."""


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
                 disabled: Sequence[str] = (), debug: bool = False, check_finite: bool = False):
        if int(batch_size) < 1:
            raise GraphrtError(f"batch_size must be at least 1, got {batch_size}")
        self.source = graph
        self.device = get_device(device)
        self.batch_size = int(batch_size)
        self.opt_level = opt_level
        optimized = optimize(graph, opt_level, disabled=disabled, debug=debug)
        self.graph = place_on(optimized, self.device.kind)
        if debug:
            self.graph.verify()
        self.output_names = list(graph.outputs)
        self.plan = plan_memory(self.graph, self.batch_size, workspace=self.device.workspace_bytes,
                                input_slots=SLOTS)
        available = self.device.available_bytes()
        if self.plan.arena_bytes > available:
            raise OutOfMemoryError(
                f"the memory plan needs an arena of {self.plan.arena_bytes / 2**20:.1f} MiB at batch "
                f"{self.batch_size} but the {self.device.kind} device has {available / 2**20:.1f} MiB "
                "available; compile with a smaller batch_size")
        self.ledger = Ledger()
        self.arena = self.device.alloc_arena(self.plan.arena_bytes)
        self.params = self._upload_params()
        self._programs: dict[tuple, Program] = {}
        self._lock = threading.Lock()
        self._host_buffers: dict = {}
        self.check_finite = check_finite
        # one step at a time: a second thread waits; the thread that is streaming may not step
        self._busy = threading.RLock()
        self._streaming: int | None = None

    def _upload_params(self) -> dict:
        used = {t for n in self.graph.nodes for t in n.inputs if t in self.graph.params}
        params = {}
        for name in sorted(used):
            start = time.perf_counter()
            params[name] = self.device.upload(self.graph.params[name])
            self.ledger.record_upload(self.graph.params[name].nbytes, time.perf_counter() - start)
        return params

    def program(self, batch: int, slot: int = 0) -> Program:
        """The launch list bound to arena views for ``batch`` with the inputs in prefetch ``slot``
        (built once per batch size and slot)."""
        with self._lock:
            if (batch, slot) not in self._programs:
                self._programs[batch, slot] = Program(self.graph, self.plan, self.device, self.arena,
                                                      self.params, batch, slot)
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
        with self.exclusive():
            if batch > self.batch_size:
                return self._run_chunks(feeds, batch, outputs)
            outs = self._step(feeds, batch, copy, outputs)
        return outs[0] if len(outs) == 1 else dict(zip(self.output_names, outs))

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
        for name, slot in program.inputs:
            start = time.perf_counter()
            self.device.to_device(feeds[name], slot)
            kind = "DtoD" if hasattr(feeds[name], "__cuda_array_interface__") else "HtoD"
            self.ledger.record(kind, feeds[name].nbytes, time.perf_counter() - start)
        program.run(self.check_finite)
        if outputs == "device":
            outs = self.fetch_outputs(program, device=True)
            self.device.synchronize()
            return [o.copy() for o in outs] if copy else outs
        return self.fetch_outputs(program, copy=copy)

    def fetch_outputs(self, program: Program, *, copy: bool = True, device: bool = False) -> list:
        """The step's outputs: fresh host arrays, host views valid until the next step
        (``copy=False``), or the device arrays themselves (``device=True``, no copy at all)."""
        outs = []
        for name, view in program.outputs:
            if device:
                outs.append(view)
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


def compile(model, device="cpu", batch_size: int = 1, opt_level: int = 2, *,
            disabled: Sequence[str] = (), debug: bool = False, check_finite: bool = False) -> Executable:
    """Compile a Graph (or a model with ``to_graph()``) into an :class:`Executable`.

    ``check_finite`` checks every node's outputs while a step runs and raises
    :class:`~graphrt.scheduler.program.NumericsError` naming the first node that made NaN or Inf."""
    return Executable(as_graph(model), device, batch_size, opt_level, disabled=disabled, debug=debug,
                      check_finite=check_finite)
