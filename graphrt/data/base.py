"""What every data source shares: records read in order (or shuffled), decoded a whole batch per
task by worker processes (or threads) into uint8 batches with their labels and the windows of the
fused transform.

A source subclass gives :meth:`ImageSource._open` (called on the first iteration, never before:
loading a net opens nothing), :meth:`ImageSource._raw` (the bytes of record ``i``),
:meth:`ImageSource._decode` (bytes -> ``(C, H, W)`` array and label) and, for a store whose handles
may not cross a fork, :meth:`ImageSource._reopen`. A batch is a dict ``{data: (N, C, H, W) uint8,
window: (N, 3) int32, label: (N,) int64}`` named after the graph's inputs, so ``exe.stream(source)``
and ``Trainer.fit(source)`` take a source as it is. The windows are drawn on the host in the
iterating thread from the source's own seeded generator (``Transform.windows``), and the batches are
yielded in reading order whoever decoded them: a run is reproducible, and its batches are the same
bytes whatever the number and kind of workers.

**Workers.** ``workers`` processes, forked when an iteration starts (as ``DataLoader``'s workers are
on Linux; threads with ``processes=False``, on other systems, or in a daemonic process).
Pillow's PNG decode and the per-record Python hold the GIL for much of their work, so threads decode
little faster than one. A worker takes a batch's record indices from a queue, reads and decodes the
records itself (:meth:`_reopen` gives it its own database handle) straight into one slot of a ring
of shared-memory buffers, and answers with the batch number and the labels: no image is ever
pickled. The iterating thread copies the slot out (one ``memcpy`` per batch: a batch the caller
keeps is never overwritten) and hands the slot to the next batch. The memory is anonymous
(``mmap(-1, n)``, inherited by the fork): it has no name that could outlive the processes, and the
workers are terminated when an iteration ends, stops early, raises, or is garbage-collected. With
threads, records are read in the iterating thread (database handles are not shared across threads)
and each batch decodes on one thread into its own array.

Forking a process that runs other threads (the prefetch loader forks from its own thread) is what
``DataLoader`` does too, and what Python 3.12 warns about: a lock another thread held at the fork
stays held in the child. The workers only read records and run Pillow and numpy, which take no such
lock (Python re-creates its own locks in the child); they never log or call BLAS.

The default, :func:`default_workers`, is half the cores, so that decoding and the compute threads do
not fight for the cores: one worker decodes some 20,000 32x32 PNG records a second on the 2-core
development machine, far more than a training step consumes.
"""
from __future__ import annotations

import collections
import concurrent.futures
import itertools
import mmap
import multiprocessing
import os
import queue
import signal
import sys
import weakref
from typing import Iterator

import numpy as np

from ..frontends.caffe.transform import Transform
from ..ir.errors import GraphrtError, InputError

# fork is Linux's start method; macOS has it but its system libraries may not survive it
FORK = sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


def default_workers() -> int:
    """Decoding workers when none are asked for: half the cores (at least one), so the loaders do
    not take the cores the compute threads run on."""
    return max(1, (os.cpu_count() or 2) // 2)


class ImageSource:
    """Batches of a record store (``store`` names it in errors); see the module docstring.
    ``repeat``: cycle over the records forever, batches running across the end as Caffe's data
    layers do (else one pass, the last batch partial). ``workers``: how many decode;
    ``processes``: as processes (on Linux), else threads."""

    def __init__(self, *, batch_size: int, names: tuple[str, str, str] = ("data", "window", "label"),
                 transform: Transform | None = None, shuffle: bool = False, seed: int = 0,
                 workers: int | None = None, processes: bool = True, repeat: bool = False,
                 where: dict | None = None):
        if int(batch_size) < 1:
            raise InputError(f"batch_size must be at least 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.names = names
        self.transform = transform or Transform()
        self.shuffle, self.seed, self.repeat = shuffle, seed, repeat
        self.workers = default_workers() if workers is None else max(1, int(workers))
        self.processes = bool(processes) and FORK
        self.where = where or {}  # layer / file / line for errors
        self.store = "the source"
        self._count: int | None = None

    # ---- what a subclass gives ------------------------------------------------------------------
    def _open(self) -> int:
        """Open the store; return the number of records."""
        raise NotImplementedError

    def _raw(self, i: int):
        raise NotImplementedError

    def _decode(self, raw) -> tuple[np.ndarray, int]:
        raise NotImplementedError

    def _reopen(self) -> None:
        """In a forked worker: replace the handles the fork inherited but may not use."""

    # ---- shared ---------------------------------------------------------------------------------
    def error(self, message: str, cls=GraphrtError) -> GraphrtError:
        return cls(message, **self.where)

    def __len__(self) -> int:
        """Batches in one pass (opens the store)."""
        if self._count is None:
            self._count = self._open()
        return -(-self._count // self.batch_size)

    def first(self) -> tuple[np.ndarray, int]:
        """The first record, decoded (a net's input shape comes from it, as in Caffe)."""
        len(self)
        return self._decode(self._raw(0))

    def order(self) -> Iterator[int]:
        """Record indices in reading order: each pass in order, or shuffled per pass."""
        len(self)
        rng = np.random.default_rng(self.seed)
        for _ in itertools.count() if self.repeat else range(1):
            yield from (rng.permutation(self._count) if self.shuffle else range(self._count))

    def __iter__(self) -> Iterator[dict]:
        image = self.first()[0]
        rng = np.random.default_rng([self.seed, 1])
        indices = self.order()
        chunks = iter(lambda: [int(i) for i in itertools.islice(indices, self.batch_size)], [])
        # a daemonic process (a multiprocessing pool's worker) may not have children: threads
        kind = _Processes if self.processes and not multiprocessing.current_process().daemon \
            else _Threads
        with kind(self, image.shape, image.dtype) as pool:
            pending = collections.deque(map(pool.submit, itertools.islice(chunks, pool.ahead)))
            while pending:
                x, labels = pool.result(pending.popleft())
                pending.extend(map(pool.submit, itertools.islice(chunks, 1)))
                yield self._batch(x, labels, rng)

    def _decode_into(self, chunk: list, raws, out: np.ndarray) -> list:
        """Decode ``raws``, the records ``chunk``, into the rows of ``out``; their labels."""
        labels = []
        for k, (i, raw) in enumerate(zip(chunk, raws)):
            try:
                image, label = self._decode(raw)
            except GraphrtError as err:  # a corrupt record: name it and its store
                err.message = f"record {i} of {self.store}: {err.message}"
                raise err.locate(**self.where)
            if image.shape != out.shape[1:] or image.dtype != out.dtype:
                raise self.error(f"record {i} of {self.store} is {image.shape} {image.dtype}, the "
                                 f"first is {out.shape[1:]} {out.dtype}: the images must share one "
                                 "size", InputError)
            out[k] = image
            labels.append(label)
        return labels

    def _batch(self, x: np.ndarray, labels: list, rng) -> dict:
        data, window, label = self.names
        out = {data: x}
        if window is not None:
            out[window] = self.transform.windows(len(x), x.shape[2], x.shape[3], rng)
        if label is not None:
            out[label] = self._labels(labels)
        return out

    def _labels(self, labels: list) -> np.ndarray:
        return np.asarray(labels, np.int64)


class _Threads:
    """Batches decoded on threads, each into its own array; records read in the iterating thread."""

    def __init__(self, source: ImageSource, shape: tuple, dtype):
        self.source, self.shape, self.dtype = source, shape, dtype
        self.ahead = source.workers + 1
        self.pool = concurrent.futures.ThreadPoolExecutor(source.workers, "graphrt-decode")

    def submit(self, chunk: list):
        out = np.empty((len(chunk),) + self.shape, self.dtype)
        return out, self.pool.submit(self.source._decode_into, chunk,
                                     [self.source._raw(i) for i in chunk], out)

    def result(self, handle) -> tuple[np.ndarray, list]:
        out, future = handle
        return out, future.result()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.pool.shutdown(cancel_futures=True)


class _Processes:
    """Batches decoded by forked worker processes into a ring of shared-memory slots (see the module
    docstring): ``submit`` queues a batch's indices, ``result`` waits for its batch in any order."""

    def __init__(self, source: ImageSource, shape: tuple, dtype):
        ctx = multiprocessing.get_context("fork")
        self.ahead = 2 * source.workers
        shape = (source.batch_size,) + tuple(shape)
        nbytes = max(1, int(np.prod(shape)) * np.dtype(dtype).itemsize)
        self.slots = [np.ndarray(shape, dtype, mmap.mmap(-1, nbytes)) for _ in range(self.ahead)]
        self.free = list(range(self.ahead))
        self.tasks, self.results = ctx.SimpleQueue(), ctx.Queue()
        self.done: dict = {}
        self.submitted = 0
        self.source = source
        self.procs = [ctx.Process(target=_work, args=(source, self.tasks, self.results, self.slots),
                                  name=f"graphrt-decode-{i}", daemon=True)
                      for i in range(source.workers)]
        self.stop = weakref.finalize(self, _stop, os.getpid(), self.procs, self.tasks, self.results)
        for p in self.procs:
            p.start()

    def submit(self, chunk: list):
        k, slot = self.submitted, self.free.pop()
        self.submitted += 1
        self.tasks.put((k, slot, chunk))
        return k, slot, len(chunk)

    def result(self, handle) -> tuple[np.ndarray, list]:
        k, slot, n = handle
        while k not in self.done:
            try:
                done, labels, err = self.results.get(timeout=1.0)
            except queue.Empty:
                dead = [p for p in self.procs if p.exitcode is not None]
                if dead:
                    raise self.source.error(f"a decoding worker of {self.source.store} exited "
                                            f"with code {dead[0].exitcode}") from None
                continue
            self.done[done] = labels, err
        labels, err = self.done.pop(k)
        x = self.slots[slot][:n].copy()
        self.free.append(slot)
        if err is not None:
            raise err
        return x, labels

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _work(source: ImageSource, tasks, results, slots: list) -> None:
    """A worker process: decode each queued batch into its slot, answer (batch, labels, error)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    try:
        source._reopen()
        failed = None
    except Exception as err:  # reported with the first batch
        failed = err
    for k, slot, chunk in iter(tasks.get, None):
        try:
            if failed is not None:
                raise failed
            labels, err = source._decode_into(chunk, map(source._raw, chunk), slots[slot]), None
        except Exception as e:  # a GraphrtError pickles whole; anything else by its message
            labels, err = None, e if isinstance(e, GraphrtError) else \
                source.error(f"decoding failed: {type(e).__name__}: {e}")
        results.put((k, labels, err))


def _stop(owner: int, procs: list, tasks, results) -> None:
    """Terminate the workers (they hold nothing worth finishing) and close the queues; nothing in
    a process forked later (its copy of the pool is not its own)."""
    if os.getpid() != owner:
        return
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        if p.pid is not None:  # started
            p.join()
    tasks.close()
    results.close()
