"""Streams and events of the cuda device: the protocol of :mod:`graphrt.devices.streams`, with CUDA
streams and CUDA events underneath.

The compute stream (:class:`CudaComputeStream`, one per device, non-blocking) runs kernels at once
in the caller's thread with its CUDA stream current. Each copy stream (:class:`CudaCopyStream`) is
the cpu device's ordered worker thread whose work runs with a CUDA stream of its own current and is
waited for before the next item, so host work submitted after a copy (freeing its staging buffer)
runs only once the copy is done. Events are CUDA events recorded on those streams; ``wait_event``
makes a stream wait for one on the GPU.

A backend says which graphrt stream is current in each thread (:class:`ThreadStreams`, the
"current graphrt stream" that ``to_device``/``to_host`` use by default); :class:`CupyStreams` maps
graphrt streams to CuPy streams.
"""
from __future__ import annotations

import contextlib
import functools

from ...streams import Event, WorkerStream, _Setter


def on_device(method):
    """Run a backend method with the backend's GPU current in the calling thread (CuPy's current
    device is per thread: a thread that never chose one works on GPU 0), restoring the caller's."""
    @functools.wraps(method)
    def run(self, *args, **kwargs):
        with self.dev:
            return method(self, *args, **kwargs)
    return run


class CudaEvent(Event):
    """An event of the cuda device's streams: set on the host once recorded (a copy stream records
    from its worker thread), then a CUDA event (None when the work before it failed)."""

    def __init__(self):
        super().__init__()
        self.event = None

    def _set(self, event=None, error: BaseException | None = None) -> None:
        self.event = event
        self.set(error)

    def query(self) -> bool:
        return super().query() and (self.event is None or bool(self.event.done))

    def synchronize(self, timeout: float | None = None) -> bool:
        """Wait for the event; re-raise an error of the work before it. False on timeout."""
        if not super().synchronize(timeout):
            return False
        if self.event is not None:
            self.event.synchronize()
        return True

    def recorded(self):
        """Block until the event is recorded (re-raising an error of the work before it); the CUDA
        event."""
        self._flag.wait()
        if self.error is not None:
            raise self.error
        return self.event


def _wait_for(backend, stream, event) -> None:
    """Make ``stream`` wait for ``event``: on the GPU for a CUDA event, else on the host."""
    if isinstance(event, CudaEvent):
        cuda_event = event.recorded()
        if cuda_event is not None:
            backend.wait(stream, cuda_event)
    else:
        event.synchronize()


class CudaComputeStream:
    """The device's compute stream: work submitted runs at once in the caller's thread with the CUDA
    stream current (it enqueues kernels); closing it is a no-op (the device owns it)."""

    def __init__(self, backend):
        self.backend = backend

    def submit(self, fn, *args) -> None:
        with self.backend.on(self):
            fn(*args)

    def record_event(self) -> CudaEvent:
        event = CudaEvent()
        event._set(self.backend.record(self))
        return event

    def wait_event(self, event) -> None:
        _wait_for(self.backend, self, event)

    def synchronize(self) -> None:
        self.backend.sync(self)

    def close(self) -> None:
        pass


class CudaCopyStream(WorkerStream):
    """A copy stream: an ordered worker thread with a CUDA stream of its own. Each submitted item
    runs with that stream current and is waited for before the next, so a host callback submitted
    after an upload runs once the upload is done. An error is kept and re-raised from the next
    ``synchronize()``, from events recorded after it, and from ``close()``."""

    def __init__(self, backend, name: str = "graphrt-cuda-copy"):
        self.backend = backend
        self.handle = backend.new_stream()
        super().__init__(name)

    def _on_stream(self, fn, args) -> None:
        with self.backend.on(self):
            fn(*args)
        self.backend.sync(self)

    def submit(self, fn, *args) -> None:
        super().submit(self._on_stream, fn, args)

    def record_event(self) -> CudaEvent:
        event = CudaEvent()
        self._queue.put((_Recorder(self, event), ()))
        return event

    def wait_event(self, event) -> None:
        self._queue.put((self._on_stream, (_wait_for, (self.backend, self, event))))


class _Recorder(_Setter):
    """Records a CUDA event on the copy stream; after a failure (it still runs, as every event
    setter of a worker stream does) it sets the event with the error instead."""

    def __call__(self) -> None:
        stream, event = self.stream, self.event
        if stream._error is not None:
            event._set(error=stream._error)
            return
        try:
            event._set(stream.backend.record(stream))
        except BaseException as err:  # pragma: no cover - driver failure
            stream._error = err
            event._set(error=err)


# ---- which graphrt stream is current, per thread -------------------------------------------------
class ThreadStreams:
    """``on(s)`` makes ``s`` this thread's current graphrt stream inside a with-block, with the
    backend's GPU (``self.dev``) and stream context (``self.stream_context(s)``) entered; needs
    ``self._tls``."""

    @contextlib.contextmanager
    def on(self, s):
        prev = getattr(self._tls, "stream", None)
        self._tls.stream = s
        try:
            with self.dev, self.stream_context(s):
                yield
        finally:
            self._tls.stream = prev

    def current_graphrt_stream(self):
        return getattr(self._tls, "stream", None)


class CupyStreams(ThreadStreams):
    """The CuPy backend's streams: the compute stream is ``self.stream``, a copy stream has its own
    (``handle``); CuPy's events between them (``self.cp``, ``self.dev``)."""

    def handle(self, s):
        return self.stream if isinstance(s, CudaComputeStream) else s.handle

    def stream_context(self, s):
        return self.handle(s)  # a CuPy stream is current inside ``with stream:``

    @on_device
    def new_stream(self):
        return self.cp.cuda.Stream(non_blocking=True)

    @on_device
    def record(self, s):
        return self.handle(s).record()

    @on_device
    def wait(self, s, event) -> None:
        self.handle(s).wait_event(event)

    @on_device
    def sync(self, s) -> None:
        self.handle(s).synchronize()

    def hand_over(self, s) -> None:
        """Make the caller's current CuPy stream wait, on the GPU, for the work queued so far on
        graphrt stream ``s`` (the caller's stream is taken before the backend's GPU is made
        current)."""
        caller = self.cp.cuda.get_current_stream()
        with self.dev:
            event = self.handle(s).record()
        caller.wait_event(event)

    def wait_for_stream(self, producer: int, s) -> None:
        """Make graphrt stream ``s`` wait, on the GPU, for the work queued so far on the stream
        with handle ``producer`` (1: the legacy default stream, 2: the per-thread default stream:
        the CUDA Array Interface's and DLPack's conventions). The event is recorded with the
        caller's current GPU (the producer's), the wait issued with the backend's."""
        rt = self.cp.cuda.runtime
        event = rt.eventCreateWithFlags(2)  # cudaEventDisableTiming
        try:
            rt.eventRecord(event, producer)
            with self.dev:
                rt.streamWaitEvent(self.handle(s).ptr, event, 0)
        finally:
            rt.eventDestroy(event)  # released by CUDA once the event completes

    def after_caller(self, s) -> None:
        """Order graphrt stream ``s`` after what the caller has queued on its current CuPy stream
        (reads of device outputs, conversions of device inputs)."""
        self.wait_for_stream(protocol_handle(self.cp.cuda.get_current_stream().ptr), s)


def protocol_handle(ptr: int) -> int:
    """A stream handle as the CUDA Array Interface and DLPack name it (the legacy stream is 1)."""
    return 1 if ptr == 0 else ptr
