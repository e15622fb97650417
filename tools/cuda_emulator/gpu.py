"""The simulated GPUs behind the CuPy stand-in, as strict as the hardware about order.

* **Device memory is separate.** Each device has an address space of its own far above any host
  address (:data:`DEVICE_BASE`); an allocation is backed by host bytes that only the stand-in's
  workers touch, and host code reaches them only through a copy. A pointer into no allocation of
  the stream's device is ``cudaErrorIllegalAddress``.
* **Every stream is an ordered queue run by a worker thread of its own**, asynchronously with the
  host and lazily: an operation waits until something needs it — a synchronize, an event wait, a
  copy the host waits for, an operation of another stream ordered after it — or, if nothing does,
  for a random while (:class:`Machine` ``lazy``), and then a random delay (``delay``), now and then
  a long one (``stall``). So work that no stream order, event or synchronize puts before its reader
  runs after that reader, every time or nearly, not only when the timing is unlucky. The legacy
  default stream
  (handle 0) synchronizes with the blocking streams of its device, as CUDA's does; non-blocking
  streams do not. Handle 2 is the calling thread's per-thread default stream.
* **Events are recorded and waited on for real**: an event completes when its stream reaches the
  record; ``streamWaitEvent`` holds a stream until then; elapsed time is measured between the
  moments the records ran (an event not yet complete is ``cudaErrorNotReady``).
* **Copies follow CUDA's rules.** ``memcpyAsync`` runs on the stream it is issued on; from or to
  page-locked memory (``hostAlloc``) it reads or writes the host bytes when the stream gets there;
  from pageable memory it takes the bytes at the call; to pageable memory it returns once done.
* **Capture** records what is issued to a stream between ``streamBeginCapture`` and
  ``streamEndCapture`` (nothing runs); ``graphLaunch`` runs it, in order, on any stream.
  Synchronizing a capturing stream or capturing a pageable copy is an error, as on a GPU.

An error in asynchronous work (a bad pointer in a kernel) is kept and raised by the next call that
synchronizes, as CUDA's sticky errors are.
"""
from __future__ import annotations

import bisect
import ctypes
import itertools
import queue
import random
import threading
import time
import weakref

import numpy as np

DEVICE_BASE = 1 << 52
DEVICE_SPAN = 1 << 44
ALIGN = 512
ERRORS = {1: "cudaErrorInvalidValue", 2: "cudaErrorMemoryAllocation",
          9: "cudaErrorInvalidConfiguration", 101: "cudaErrorInvalidDevice",
          400: "cudaErrorInvalidResourceHandle", 600: "cudaErrorNotReady",
          700: "cudaErrorIllegalAddress", 900: "cudaErrorStreamCaptureUnsupported",
          901: "cudaErrorStreamCaptureInvalidated", 906: "cudaErrorStreamCaptureImplicit"}
HOST_TO_HOST, HOST_TO_DEVICE, DEVICE_TO_HOST, DEVICE_TO_DEVICE, DEFAULT = range(5)


class CUDARuntimeError(RuntimeError):
    """A CUDA runtime error with its ``status`` code, as CuPy raises them."""

    def __init__(self, status: int, detail: str = ""):
        self.status = status
        super().__init__(f"{ERRORS.get(status, status)}: {detail}" if detail else ERRORS.get(status, str(status)))


class Allocation:
    def __init__(self, start: int, size: int, device: int):
        self.start, self.size, self.device = start, size, device
        # 0xFF bytes: what was never written reads as NaN (device memory is not zeroed)
        self.buffer = np.full(max(size, 1) + ALIGN, 0xFF, np.uint8)
        self.host = self.buffer.ctypes.data + (-self.buffer.ctypes.data) % ALIGN


class DeviceState:
    """One simulated GPU: its allocations, its legacy default stream, its sticky error."""

    def __init__(self, machine: "Machine", index: int, memory: int):
        self.machine, self.index, self.total = machine, index, memory
        self.next = DEVICE_BASE + index * DEVICE_SPAN
        self.starts: list[int] = []
        self.allocations: dict[int, Allocation] = {}
        self.used = 0
        self.error: CUDARuntimeError | None = None
        self.legacy = Stream(machine, self, handle=0, blocking=True)

    def malloc(self, size: int) -> int:
        if self.used + size > self.total:
            raise CUDARuntimeError(2, f"{size} bytes on device {self.index}")
        start = self.next
        self.next += (size + ALIGN - 1) // ALIGN * ALIGN + 4096  # a gap: overruns hit no allocation
        a = Allocation(start, size, self.index)
        bisect.insort(self.starts, start)
        self.allocations[start] = a
        self.used += size
        return start

    def free(self, ptr: int) -> None:
        a = self.allocations.pop(ptr, None)
        if a is None:
            raise CUDARuntimeError(1, f"free of {ptr:#x}, not an allocation of device {self.index}")
        self.starts.remove(ptr)
        self.used -= a.size

    def find(self, ptr: int, nbytes: int = 0) -> tuple[Allocation, int]:
        """The allocation holding ``[ptr, ptr + nbytes)`` and the offset of ``ptr`` in it."""
        i = bisect.bisect_right(self.starts, ptr) - 1
        if i >= 0:
            a = self.allocations[self.starts[i]]
            off = ptr - a.start
            if off + max(nbytes, 0) <= a.size and (off < a.size or nbytes == 0):
                return a, off
        raise CUDARuntimeError(700, f"address {ptr:#x} (+{nbytes} bytes) is in no allocation of "
                                    f"device {self.index}")

    def host_address(self, ptr: int, nbytes: int = 0) -> int:
        a, off = self.find(ptr, nbytes)
        return a.host + off

    def blocking_streams(self):
        return [s for s in self.machine.streams.values()
                if s.device is self and s.blocking and s.handle != 0 and s.alive]

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error


def device_of(ptr: int) -> int | None:
    """The device whose address space holds ``ptr`` (None: a host address)."""
    if ptr < DEVICE_BASE:
        return None
    return (ptr - DEVICE_BASE) // DEVICE_SPAN


class Marker:
    """The completion of one enqueued operation (an event's record, the last op of a stream);
    waiting for it makes its stream run everything up to it."""

    __slots__ = ("flag", "time", "capture", "stream", "seq")

    def __init__(self, capture=None, stream=None, seq: int = 0):
        self.flag = threading.Event()
        self.time = None
        self.capture, self.stream, self.seq = capture, stream, seq

    def set(self) -> None:
        self.time = time.perf_counter()
        self.flag.set()

    def done(self) -> bool:
        return self.flag.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        if self.stream is not None and not self.flag.is_set():
            self.stream.demand(self.seq)
        return self.flag.wait(timeout)


DONE = Marker()
DONE.set()
_STOP = object()


class Stream:
    """An ordered queue of operations run by a worker thread (see the module docstring)."""

    def __init__(self, machine: "Machine", device: DeviceState, handle: int, blocking: bool):
        self.machine, self.device, self.handle, self.blocking = machine, device, handle, blocking
        self.last = DONE
        self.capture: list | None = None
        self.capture_error: CUDARuntimeError | None = None
        self.alive = True
        self._seq = self._demanded = 0
        self._cond = threading.Condition()
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"stand-in-stream-{device.index}-{handle:#x}")
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            fn, deps, done, what = item
            with self._cond:  # lazily: until some waiter needs it, or a random while
                self._cond.wait_for(lambda: self._demanded >= done.seq, self.machine.lazy())
            time.sleep(self.machine.delay(what))
            for d in deps:
                d.wait()
            if self.device.error is None:
                try:
                    fn()
                except CUDARuntimeError as err:
                    self.device.error = err
                except Exception as err:  # the stand-in's own failure: as loud as a GPU fault
                    self.device.error = CUDARuntimeError(700, f"{type(err).__name__}: {err}")
            done.set()

    def enqueue(self, fn, what: str = "") -> Marker:
        """Run ``fn`` on this stream in order (recorded instead while capturing)."""
        if self.capture is not None:
            self.capture.append(fn)
            return Marker(capture=self.capture)
        if not self.alive:
            raise CUDARuntimeError(400, f"stream {self.handle:#x} was destroyed")
        machine = self.machine
        deps = [self.last]
        if self.handle == 0:  # the legacy stream waits for the blocking streams, they for it
            if any(s.capture is not None for s in self.device.blocking_streams()):
                raise CUDARuntimeError(906, "the legacy stream while a blocking stream captures")
            deps += [s.last for s in self.device.blocking_streams()]
        elif self.blocking:
            deps.append(self.device.legacy.last)
        machine.count(what)
        with self._cond:  # one order for the sequence numbers and the queue
            self._seq += 1
            done = self.last = Marker(stream=self, seq=self._seq)
            self._queue.put((fn, deps, done, what))
        return done

    def synchronize(self) -> None:
        if self.capture is not None:
            self.capture_error = CUDARuntimeError(901, "synchronized while capturing")
            raise CUDARuntimeError(900, "synchronize of a capturing stream")
        self.last.wait()
        self.device.raise_error()

    def demand(self, seq: int) -> None:
        """Run everything up to operation ``seq`` without waiting for the lazy while."""
        with self._cond:
            if seq > self._demanded:
                self._demanded = seq
                self._cond.notify_all()

    def destroy(self) -> None:
        if self.alive:
            self.alive = False
            self.demand(self._seq)
            self._queue.put(_STOP)


class Event:
    def __init__(self, handle: int, timing: bool):
        self.handle, self.timing = handle, timing
        self.marker: Marker | None = None


class Graph:
    """What a capture recorded, run in order by ``launch``."""

    def __init__(self, device: DeviceState, work: list):
        self.device, self.work = device, list(work)

    def run(self) -> None:
        for fn in self.work:
            fn()


class Machine:
    """The simulated GPUs of one stand-in installation (see the module docstring).

    ``devices``: how many GPUs; ``lazy``: (min, max) seconds an operation nothing waits for stays
    queued; ``delay``: (min, max) seconds each operation takes to start once it may; ``stall``:
    (probability, seconds) of a much longer start; ``upload_delay``: (min, max) seconds more for
    host-to-device copies (a slow bus: uploads behind compute); ``seed``: the delays' random seed."""

    def __init__(self, devices: int = 2, memory: int = 16 << 30, lazy=(0.02, 0.05),
                 delay=(1e-4, 1e-3), stall=(0.02, 0.01), upload_delay=(0.0, 0.0), seed: int = 0):
        self.lock = threading.RLock()
        self.rng = random.Random(seed)
        self.lazy_range, self.delay_range, self.stall = lazy, delay, stall
        self.upload_delay = upload_delay
        self.counts: dict[str, int] = {}
        self.streams: dict[int, Stream] = {}
        self.events: dict[int, Event] = {}
        self.graphs: dict[int, Graph] = {}
        self.pinned: dict[int, tuple] = {}  # start -> (size, buffer) of page-locked host ranges
        self.ids = itertools.count(0x1000, 0x10)
        self.devices = [DeviceState(self, i, memory) for i in range(devices)]
        self._tls = threading.local()

    def delay(self, what: str = "") -> float:
        with self.lock:
            stall = self.stall[1] if self.rng.random() < self.stall[0] else 0.0
            upload = self.rng.uniform(*self.upload_delay) if what == "HtoD" else 0.0
            return self.rng.uniform(*self.delay_range) + stall + upload

    def lazy(self) -> float:
        with self.lock:
            return self.rng.uniform(*self.lazy_range)

    def count(self, what: str) -> None:
        if what:
            with self.lock:
                self.counts[what] = self.counts.get(what, 0) + 1

    # ---- the calling thread's device and default stream ----
    @property
    def current(self) -> DeviceState:
        return self.devices[getattr(self._tls, "device", 0)]

    def set_device(self, index: int) -> None:
        if not 0 <= index < len(self.devices):
            raise CUDARuntimeError(101, f"device {index}")
        self._tls.device = index

    def stream(self, handle: int) -> Stream:
        """The stream a handle names: 0 and 1 the current device's legacy stream, 2 this thread's
        per-thread default stream."""
        if handle in (0, 1):
            return self.current.legacy
        if handle == 2:
            per = self._tls.__dict__.setdefault("ptds", {})
            dev = self.current
            if dev.index not in per:
                per[dev.index] = self.new_stream(blocking=True)
            return per[dev.index]
        s = self.streams.get(handle)
        if s is None or not s.alive:
            raise CUDARuntimeError(400, f"no stream {handle:#x}")
        return s

    def new_stream(self, blocking: bool) -> Stream:
        with self.lock:
            handle = next(self.ids)
            s = self.streams[handle] = Stream(self, self.current, handle, blocking)
        return s

    def hold(self, handle: int) -> threading.Event:
        """Stop the stream ``handle`` where it is until the returned event is set (for tests that
        need one stream to be behind another, whatever the delays)."""
        gate = threading.Event()
        stream = self.stream(handle)
        stream.enqueue(gate.wait, "hold")
        stream.demand(stream.last.seq)
        return gate

    def pinned_buffer(self, ptr: int, nbytes: int):
        """The page-locked buffer holding ``[ptr, ptr + nbytes)``, or None (pageable memory). A copy
        keeps it, so it lives until the copy has run (cudaFreeHost waits for the device)."""
        with self.lock:
            for start, (size, ref) in self.pinned.items():
                if start <= ptr and ptr + nbytes <= start + size:
                    return ref()
        return None

    def pin(self, buffer) -> None:
        """Register a ctypes buffer as page-locked until it is garbage."""
        start, size = ctypes.addressof(buffer), ctypes.sizeof(buffer)
        with self.lock:
            self.pinned[start] = (size, weakref.ref(buffer))
        weakref.finalize(buffer, self._unpin, start)

    def _unpin(self, start: int) -> None:
        with self.lock:
            self.pinned.pop(start, None)

    def shutdown(self) -> None:
        for s in list(self.streams.values()) + [d.legacy for d in self.devices]:
            s.destroy()
