"""The cpu device's own threads: a persistent pool of workers, and BLAS held to one thread while a
step runs.

A step's parallelism is graphrt's, not the BLAS library's: a segment of per-image launches is
dispatched once, each thread running all of its launches on its own batch slice (see
:mod:`.segments`), and each other large launch is split into parts (batch slices, or column tiles
of a dense GEMM; see :mod:`.split`) — one part in the calling thread, the others on the pool's
workers. numpy's ufuncs and BLAS release the GIL, so the
parts really run in parallel. Inside a step numpy's BLAS is limited to one thread
(:func:`blas_single_thread`, with threadpoolctl): OpenBLAS's own threads spin between calls and would
fight graphrt's workers (and the prefetch thread) for the cores. Outside a step the limit is
restored, so the user's own numpy keeps its threads.

Workers block on a queue when idle (they never spin: on the quiet 2-core machine a 100 us poll
before blocking, and a lower interpreter switch interval inside a step, changed LeNet's and
CIFAR-10 quick's images/s and spread by no more than their noise), so a pool costs nothing between
steps; pools
are shared by every executable with the same thread count (:func:`pool`) and live as daemon threads
for the life of the process (a forked child makes its own). The prefetch pipeline's loader and copy
threads only copy batches (a small, memory-bound part of a step) and never spin either, so they do
not keep the cores from the pool for long; BLAS's own pool, which does spin, is held at one thread. A pool serves one step at a time: a second thread stepping another
executable with the same pool meanwhile runs its launches on its own thread, unsplit.
"""
from __future__ import annotations

import contextlib
import os
import queue
import threading
from typing import Callable, Sequence

import numpy as np


def default_threads() -> int:
    """The cores this process may run on (``os.sched_getaffinity``; ``os.cpu_count`` where that
    does not exist)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


class Pool:
    """``threads - 1`` persistent worker threads; :meth:`run` runs a list of calls across them and
    the calling thread, and returns when all are done (re-raising the first error)."""

    def __init__(self, threads: int):
        self.threads = threads
        self._lock = threading.Lock()
        self._done: queue.SimpleQueue = queue.SimpleQueue()
        self._run = 0  # which run() a finished part belongs to
        self._tasks = [queue.SimpleQueue() for _ in range(threads - 1)]
        for i, tasks in enumerate(self._tasks):
            threading.Thread(target=self._work, args=(tasks,), name=f"graphrt-cpu-{i + 1}",
                             daemon=True).start()

    def _work(self, tasks: queue.SimpleQueue) -> None:
        np.seterr(all="ignore")  # as the step's own thread: NaN/Inf are the model's business
        while True:
            run, fn, args = tasks.get()
            try:
                fn(*args)
            except BaseException as err:  # handed to the caller of run()
                self._done.put((run, err))
            else:
                self._done.put((run, None))

    def run(self, calls: Sequence[tuple[Callable, tuple]]) -> None:
        """Run every ``(fn, args)`` of ``calls``: the first in this thread, the others (at most
        ``threads - 1``) on the workers. Serial when another thread is using the pool."""
        if len(calls) > self.threads:
            raise ValueError(f"{len(calls)} calls for a pool of {self.threads} threads")
        if len(calls) < 2 or not self._lock.acquire(blocking=False):
            for fn, args in calls:
                fn(*args)
            return
        try:
            self._run += 1
            for tasks, (fn, args) in zip(self._tasks, calls[1:]):
                tasks.put((self._run, fn, args))
            error = None
            try:
                calls[0][0](*calls[0][1])
            except BaseException as err:
                error = err
            waiting = len(calls) - 1
            while waiting:  # always wait for every part: they write into the arena
                run, result = self._done.get()
                if run != self._run:
                    continue  # a part of a run the caller left (Ctrl-C while it waited)
                waiting -= 1
                if error is None:
                    error = result
            if error is not None:
                raise error
        finally:
            self._lock.release()


_POOLS: dict[int, Pool] = {}
_POOLS_LOCK = threading.Lock()


def _forget_pools() -> None:
    """In a forked child the pools' threads do not exist: make new ones on first use."""
    global _POOLS_LOCK
    _POOLS.clear()
    _POOLS_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pools)


def pool(threads: int) -> Pool:
    """The process's pool of ``threads`` threads (made on first use, then shared)."""
    with _POOLS_LOCK:
        found = _POOLS.get(threads)
        if found is None:
            found = _POOLS[threads] = Pool(threads)
        return found


_BLAS: list | None = None


def _blas_libraries() -> list:
    """threadpoolctl's controllers of the BLAS libraries loaded with numpy (found once)."""
    global _BLAS
    if _BLAS is None:
        try:
            import threadpoolctl
        except ImportError:  # pragma: no cover - a dependency; without it BLAS keeps its threads
            _BLAS = []
        else:
            _BLAS = list(threadpoolctl.ThreadpoolController().select(user_api="blas").lib_controllers)
    return _BLAS


@contextlib.contextmanager
def blas_single_thread():
    """numpy's BLAS limited to one thread inside the block, its previous count restored after
    (a few microseconds each way: the libraries are found once)."""
    libraries = _blas_libraries()
    saved = [lib.num_threads for lib in libraries]
    for lib, n in zip(libraries, saved):
        if n != 1:
            lib.set_num_threads(1)
    try:
        yield
    finally:
        for lib, n in zip(libraries, saved):
            if n != 1:
                lib.set_num_threads(n)


def blas_description() -> str:
    """The BLAS libraries numpy uses, with versions (part of the algorithm cache's machine key)."""
    rows = []
    for lib in _blas_libraries():
        rows.append(f"{lib.internal_api} {lib.version} {getattr(lib, 'architecture', '')}".strip())
    return "; ".join(rows) or "no BLAS found"
