"""``exe.stream(batches)``: the prefetch pipeline that keeps the device fed without ping-pong.

Three actors, each waiting only on what it needs:

* the **loader thread** takes batches from the caller's iterable, checks them, and copies each into a
  free buffer of a ring of staging buffers (page-locked on CUDA, aligned on the cpu device);
* the **copy stream** uploads batch k from its staging buffer into input slot k % 2 of the arena in
  one copy (all inputs, data and labels, are packed alike in the staging buffer and the slot) —
  after the compute of batch k - 2, which read that slot, has finished (an event) — and records an
  event when the upload is done;
* the **compute stream** (the caller's thread on the cpu device) waits on that event, runs the
  program bound to slot k % 2, records the slot-free event, and copies the outputs back once.

So batch k+1 is uploaded while batch k computes. Every batch is processed once and in order; a final
partial batch runs as it is. An exception in the loader (or a bad batch) reaches the caller with its
original traceback, after which the pipeline shuts down.

**Streams always stop.** Leaving the loop — ``break``, an exception in the consumer, ``close()``,
Ctrl-C (the first one: it is never swallowed) — shuts the pipeline down at once. The loader thread
is joined only when it is inside graphrt's own code, where it sees the stop within one poll; while it
is blocked in the caller's iterator (a network read, a queue that never fills) it is *not* waited
for: it stays behind as a daemon thread, and whatever that iterator finally returns is discarded
without touching the staging buffers or the arena.
"""
from __future__ import annotations

import itertools
import queue
import threading
import time
from typing import Iterable

import numpy as np

from ..ir.errors import InputError
from ..ops.reference import check_feeds

_DONE = object()
_STOPPED = object()
SLOTS = 2


class Staging:
    """A ring of host buffers laid out like the arena's packed input block: each holds a batch of
    every input (data and labels together) and goes to the device in one copy."""

    def __init__(self, exe, size: int):
        program = exe.program(exe.batch_size)
        self.free: queue.Queue = queue.Queue()
        self.raw, self.buffers = [], []
        for i in range(size):
            raw = exe.device.alloc_staging(program.packed.nbytes)
            bufs = {}
            for name, offset in program.input_offsets.items():
                spec = exe.source.specs[name]
                shape = spec.concrete(exe.batch_size)
                count = int(np.prod(shape)) * np.dtype(spec.dtype).itemsize
                bufs[name] = raw[offset: offset + count].view(spec.dtype).reshape(shape)
            self.raw.append(raw)
            self.buffers.append(bufs)
            self.free.put(i)
        self.specs = exe.source.specs

    def fill(self, idx: int, feeds: dict, n: int) -> None:
        """Copy a batch of ``n`` items (every input) into buffer ``idx``."""
        for name, value in feeds.items():
            staged = self.buffers[idx][name]
            np.copyto(staged[:n] if self.specs[name].batched else staged, value)


class Prefetcher:
    """Iterates the outputs of ``exe`` over ``batches``; see the module docstring."""

    def __init__(self, exe, batches: Iterable, *, copy: bool = True, outputs: str = "host",
                 depth: int = 2):
        if outputs not in ("host", "device"):
            raise InputError(f"outputs must be 'host' or 'device', got {outputs!r}")
        self.exe, self.batches, self.copy, self.outputs = exe, batches, copy, outputs
        self.staging = Staging(exe, depth + 1)
        self.ready: queue.Queue = queue.Queue()
        self.slot_free = [queue.Queue() for _ in range(SLOTS)]
        for q in self.slot_free:
            q.put(None)  # both slots start free
        self.stop = threading.Event()
        self.in_caller = threading.Event()  # the loader is inside the caller's iterator

    # ---- loader thread --------------------------------------------------------------------------
    def _from_caller(self, fn, *args):
        """``fn(*args)``: the caller's code (``iter``/``next`` of its batches), or ``_STOPPED``.
        ``in_caller`` is set *before* ``stop`` is checked, and the consumer sets ``stop`` before it
        reads ``in_caller``: so it never joins a loader that is about to block in the caller's
        code, and one it does not join returns as soon as the caller's code does."""
        self.in_caller.set()
        try:
            if self.stop.is_set():
                return _STOPPED
            return fn(*args)
        finally:
            self.in_caller.clear()

    def _load(self, copy_stream) -> None:
        try:
            source = self._from_caller(iter, self.batches)
            for k in itertools.count():
                item = _STOPPED if source is _STOPPED else self._from_caller(next, source, _DONE)
                if item is _STOPPED or self.stop.is_set():
                    return  # stopped while the caller's code ran: its result is discarded
                if item is _DONE:
                    break
                feeds, extra, n = self._check(k, item)
                idx = self._get(self.staging.free)
                if idx is None:
                    return
                self.staging.fill(idx, feeds, n)
                slot_event = self._get(self.slot_free[k % SLOTS], allow_none=True)
                if self.stop.is_set():
                    return
                if slot_event is not None:
                    copy_stream.wait_event(slot_event)
                copy_stream.submit(self._upload, self.staging.raw[idx], n, k % SLOTS)
                copy_stream.submit(self.staging.free.put, idx)
                self.ready.put((k, n, extra, copy_stream.record_event()))
            self.ready.put(_DONE)
        except BaseException as err:  # handed to the consumer, traceback intact
            if not self.stop.is_set():
                self.ready.put(err)

    def _get(self, q: queue.Queue, allow_none: bool = False):
        while not self.stop.is_set():
            try:
                return q.get(timeout=0.05)
            except queue.Empty:
                continue
        return None

    def _check(self, k: int, item):
        extra = None
        graph = self.exe.source
        if isinstance(item, tuple) and len(item) == 2 and len(graph.inputs) == 1:
            item, extra = item  # (x, y): y travels alongside the outputs
        try:
            feeds, n = check_feeds(graph, item)
        except InputError as err:
            err.message = f"batch {k}: {err.message}"
            raise err.locate()
        if n > self.exe.batch_size:
            raise InputError(f"batch {k} has {n} items but the executable was compiled for "
                             f"batch_size {self.exe.batch_size}")
        try:
            self.exe.check_values(feeds)
        except InputError as err:
            err.message = f"batch {k}: {err.message}"
            raise err.locate()
        return feeds, extra, n

    def _upload(self, raw, n: int, slot: int) -> None:
        program = self.exe.program(n, slot)
        start = time.perf_counter()
        self.exe.device.to_device(raw, program.packed)
        self.exe.ledger.record("HtoD", raw.nbytes, time.perf_counter() - start, items=n)

    # ---- consumer (compute) ---------------------------------------------------------------------
    def __iter__(self):
        with self.exe.exclusive(streaming=True):
            yield from self._pipeline()

    def _pipeline(self):
        exe = self.exe
        copy_stream, compute = exe.device.copy_stream(), exe.device.compute_stream()
        loader = threading.Thread(target=self._load, args=(copy_stream,), name="graphrt-loader",
                                  daemon=True)
        loader.start()
        try:
            while True:
                item = self.ready.get()
                if item is _DONE:
                    break
                if isinstance(item, BaseException):
                    raise item
                k, n, extra, uploaded = item
                compute.wait_event(uploaded)
                program = exe.program(n, k % SLOTS)
                program.run(exe.check_finite)
                if self.outputs == "device":  # ordered before the caller's stream reads them
                    outs = exe.device_outputs(program, self.copy)
                else:
                    outs = exe.fetch_outputs(program, copy=self.copy)
                self.slot_free[k % SLOTS].put(compute.record_event())
                result = outs[0] if len(outs) == 1 else dict(zip(exe.output_names, outs))
                yield result if extra is None else (result, extra)
        finally:
            self.stop.set()
            if not self.in_caller.is_set():  # in graphrt's code: it sees the stop within one poll
                loader.join()
            copy_stream.close()
