"""Streams and events of the cpu device, the same small protocol a CUDA stream implements.

A stream runs submitted work in order; ``record_event()`` returns an :class:`Event` that completes
when everything submitted before it has run; ``wait_event(e)`` makes later work on the stream wait
for ``e`` (without blocking the caller). The cpu device's compute stream is :class:`InlineStream`
(work runs at once in the caller's thread); its copy stream is :class:`WorkerStream`, an ordered
worker thread that plays the role of a GPU's copy engine.

An exception raised by work on a worker stream is kept and re-raised, with its traceback, from the
next ``synchronize()``, from waiting on any event recorded after it, and from ``close()``.
"""
from __future__ import annotations

import queue
import threading
from typing import Callable


class Event:
    """Completes once; ``synchronize()`` blocks the calling thread until then."""

    def __init__(self, done: bool = False):
        self._flag = threading.Event()
        self.error: BaseException | None = None
        if done:
            self._flag.set()

    def set(self, error: BaseException | None = None) -> None:
        self.error = error
        self._flag.set()

    def query(self) -> bool:
        return self._flag.is_set()

    def synchronize(self, timeout: float | None = None) -> bool:
        """Wait for the event; re-raise an error of the work before it. False on timeout."""
        if not self._flag.wait(timeout):
            return False
        if self.error is not None:
            raise self.error
        return True


class InlineStream:
    """Runs work immediately in the calling thread (the cpu device's compute stream)."""

    def submit(self, fn: Callable, *args) -> None:
        fn(*args)

    def record_event(self) -> Event:
        return Event(done=True)

    def wait_event(self, event: Event) -> None:
        event.synchronize()

    def synchronize(self) -> None:
        pass

    def close(self) -> None:
        pass


_STOP = object()


class WorkerStream:
    """An ordered worker thread (the cpu device's copy stream)."""

    def __init__(self, name: str = "graphrt-copy"):
        self._queue: queue.Queue = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            fn, args = item
            if self._error is not None and not isinstance(fn, _Setter):
                continue  # after a failure only events run (they carry the error)
            try:
                fn(*args)
            except BaseException as err:  # handed to whoever waits next
                self._error = err

    def submit(self, fn: Callable, *args) -> None:
        if not self._thread.is_alive():
            raise RuntimeError("the stream is closed")
        self._queue.put((fn, args))

    def record_event(self) -> Event:
        event = Event()
        self._queue.put((_Setter(self, event), ()))
        return event

    def wait_event(self, event: Event) -> None:
        self._queue.put((event.synchronize, ()))

    def synchronize(self) -> None:
        self.record_event().synchronize()

    def close(self) -> None:
        """Finish queued work, stop the thread, and re-raise a pending error."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()
        if self._error is not None:
            err, self._error = self._error, None
            raise err


class _Setter:
    def __init__(self, stream: WorkerStream, event: Event):
        self.stream, self.event = stream, event

    def __call__(self) -> None:
        self.event.set(self.stream._error)
