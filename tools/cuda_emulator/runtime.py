"""``cupy.cuda.runtime`` of the stand-in: the CUDA runtime calls CuPy exposes, over the simulated
GPUs of :mod:`.gpu` (same names, same arguments, same error codes)."""
from __future__ import annotations

import ctypes
import types

from .gpu import (DEVICE_TO_DEVICE, DEVICE_TO_HOST, DEFAULT, ERRORS, HOST_TO_DEVICE, HOST_TO_HOST,
                  CUDARuntimeError, Event, Graph, Machine, Stream, device_of)

KIND_NAMES = {HOST_TO_HOST: "HtoH", HOST_TO_DEVICE: "HtoD", DEVICE_TO_HOST: "DtoH",
              DEVICE_TO_DEVICE: "DtoD"}


class Runtime:
    """The functions of ``cupy.cuda.runtime`` bound to one :class:`~.gpu.Machine`."""

    memcpyHostToHost, memcpyHostToDevice, memcpyDeviceToHost = HOST_TO_HOST, HOST_TO_DEVICE, DEVICE_TO_HOST
    memcpyDeviceToDevice, memcpyDefault = DEVICE_TO_DEVICE, DEFAULT
    memoryTypeUnregistered, memoryTypeHost, memoryTypeDevice = 0, 1, 2
    streamNonBlocking = 1
    eventDisableTiming = 2
    streamCaptureModeGlobal, streamCaptureModeThreadLocal, streamCaptureModeRelaxed = 0, 1, 2
    CUDARuntimeError = CUDARuntimeError

    def __init__(self, machine: Machine):
        self.m = machine
        self.pending_frees: list = []

    # ---- devices ----
    def getDeviceCount(self) -> int:
        return len(self.m.devices)

    def getDevice(self) -> int:
        return self.m.current.index

    def setDevice(self, index: int) -> None:
        self.m.set_device(index)

    def deviceSynchronize(self) -> None:
        dev = self.m.current
        for s in [dev.legacy] + [s for s in self.m.streams.values() if s.device is dev and s.alive]:
            s.last.wait()
        dev.raise_error()

    def getDeviceProperties(self, index: int) -> dict:
        dev = self.m.devices[index]
        return {"name": b"graphrt CUDA stand-in", "major": 9, "minor": 0,
                "totalGlobalMem": dev.total, "multiProcessorCount": 1, "l2CacheSize": 0}

    def driverGetVersion(self) -> int:
        return 13000

    def runtimeGetVersion(self) -> int:
        return 13000

    def getErrorString(self, code: int) -> str:
        return ERRORS.get(code, f"error {code}")

    # ---- memory ----
    def malloc(self, size: int) -> int:
        self._reap()
        return self.m.current.malloc(int(size))

    def free(self, ptr: int) -> None:
        """Freed once every stream of its device has run what was queued before (as CUDA's
        cudaFree waits for the device)."""
        if ptr:
            dev = self.m.devices[device_of(ptr)]
            streams = [dev.legacy] + [s for s in self.m.streams.values() if s.device is dev]
            self.pending_frees.append((dev, ptr, [s.last for s in streams]))

    def _reap(self) -> None:
        keep = []
        for dev, ptr, markers in self.pending_frees:
            if all(m.done() for m in markers):
                dev.free(ptr)
            else:
                keep.append((dev, ptr, markers))
        self.pending_frees = keep

    def memGetInfo(self) -> tuple[int, int]:
        dev = self.m.current
        return dev.total - dev.used, dev.total

    def hostAlloc(self, size: int, flags: int = 0):
        """A page-locked host buffer (a ctypes array; its address is ``ctypes.addressof``)."""
        buf = (ctypes.c_uint8 * max(int(size), 1))()
        self.m.pin(buf)
        return buf

    def pointerGetAttributes(self, ptr: int):
        dev = device_of(ptr)
        if dev is not None:
            self.m.devices[dev].find(ptr)
            return types.SimpleNamespace(type=self.memoryTypeDevice, device=dev, devicePointer=ptr,
                                         hostPointer=0)
        kind = self.memoryTypeHost if self.m.pinned_buffer(ptr, 1) is not None \
            else self.memoryTypeUnregistered
        return types.SimpleNamespace(type=kind, device=-2, devicePointer=0, hostPointer=ptr)

    # ---- copies ----
    def _direction(self, dst: int, src: int, kind: int) -> int:
        actual = {(False, False): HOST_TO_HOST, (False, True): HOST_TO_DEVICE,
                  (True, False): DEVICE_TO_HOST, (True, True): DEVICE_TO_DEVICE}[
            (device_of(src) is not None, device_of(dst) is not None)]
        if kind not in (DEFAULT, actual):
            raise CUDARuntimeError(1, f"a {KIND_NAMES[kind]} copy from {src:#x} to {dst:#x}, which "
                                      f"is {KIND_NAMES[actual]}")
        return actual

    def memcpyAsync(self, dst: int, src: int, size: int, kind: int, stream: int) -> None:
        self._copy(int(dst), int(src), int(size), kind, self.m.stream(stream), sync=False)

    def memcpy(self, dst: int, src: int, size: int, kind: int) -> None:
        """Synchronous on the legacy stream, with CUDA's exceptions: a pageable host-to-device copy
        returns once its bytes are taken, a device-to-device copy at once."""
        self._copy(int(dst), int(src), int(size), kind, self.m.current.legacy, sync=True)

    def _copy(self, dst: int, src: int, size: int, kind: int, s: Stream, sync: bool) -> None:
        self._check_stream(s)
        direction = self._direction(dst, src, kind)
        if size == 0:
            return
        if direction == HOST_TO_HOST:
            ctypes.memmove(dst, src, size)
            return
        dev = s.device
        if direction == HOST_TO_DEVICE:
            pinned = self.m.pinned_buffer(src, size)
            data = ctypes.create_string_buffer(ctypes.string_at(src, size), size) if pinned is None \
                else src
            self._no_pageable_capture(s, pinned)
            done = s.enqueue(lambda keep=pinned: ctypes.memmove(dev.host_address(dst, size), data,
                                                                size), "HtoD")
            wait = sync and pinned is not None
        elif direction == DEVICE_TO_HOST:
            pinned = self.m.pinned_buffer(dst, size)
            self._no_pageable_capture(s, pinned)
            src_dev = self.m.devices[device_of(src)]
            done = s.enqueue(lambda keep=pinned: ctypes.memmove(dst, src_dev.host_address(src, size),
                                                                size), "DtoH")
            wait = sync or pinned is None
        else:
            src_dev, dst_dev = self.m.devices[device_of(src)], self.m.devices[device_of(dst)]
            done = s.enqueue(lambda: ctypes.memmove(dst_dev.host_address(dst, size),
                                                    src_dev.host_address(src, size), size), "DtoD")
            wait = False
        if wait and s.capture is None:
            done.wait()
            dev.raise_error()

    @staticmethod
    def _no_pageable_capture(s: Stream, pinned) -> None:
        if s.capture is not None and pinned is None:
            s.capture_error = CUDARuntimeError(901, "a pageable copy was captured")
            raise CUDARuntimeError(900, "a copy to or from pageable host memory while capturing")

    def memsetAsync(self, ptr: int, value: int, size: int, stream: int) -> None:
        s = self.m.stream(stream)
        self._check_stream(s)
        dev = s.device
        if size:
            s.enqueue(lambda: ctypes.memset(dev.host_address(ptr, size), value, size), "memset")

    def _check_stream(self, s: Stream) -> None:
        """Work goes to a stream of the calling thread's current device (as the CUDA runtime
        demands of kernel launches and asynchronous copies)."""
        if s.device is not self.m.current:
            raise CUDARuntimeError(400, f"a stream of device {s.device.index} used while device "
                                        f"{self.m.current.index} is current")

    # ---- streams ----
    def streamCreate(self) -> int:
        return self.m.new_stream(blocking=True).handle

    def streamCreateWithFlags(self, flags: int) -> int:
        return self.m.new_stream(blocking=not flags & self.streamNonBlocking).handle

    def streamDestroy(self, stream: int) -> None:
        s = self.m.streams.get(stream)
        if s is not None:
            s.destroy()

    def streamSynchronize(self, stream: int) -> None:
        self.m.stream(stream).synchronize()

    def streamQuery(self, stream: int) -> int:
        return 0 if self.m.stream(stream).last.done() else 600

    def streamWaitEvent(self, stream: int, event: int, flags: int = 0) -> None:
        s, e = self.m.stream(stream), self._event(event)
        marker = e.marker
        if marker is None or marker.done() and s.capture is None:
            return
        if s.capture is not None:
            raise CUDARuntimeError(900, "waiting on an event recorded outside the capture")
        s.enqueue(marker.wait, "wait")

    def streamBeginCapture(self, stream: int, mode: int = 2) -> None:
        s = self.m.stream(stream)
        if s.handle in (0, 1):
            raise CUDARuntimeError(906, "the legacy stream cannot capture")
        if s.capture is not None:
            raise CUDARuntimeError(900, "the stream is already capturing")
        s.capture, s.capture_error = [], None

    def streamEndCapture(self, stream: int) -> int:
        s = self.m.stream(stream)
        if s.capture is None:
            raise CUDARuntimeError(1, "the stream is not capturing")
        work, error = s.capture, s.capture_error
        s.capture, s.capture_error = None, None
        if error is not None:
            raise error
        handle = next(self.m.ids)
        self.m.graphs[handle] = Graph(s.device, work)
        return handle

    def streamIsCapturing(self, stream: int) -> bool:
        return self.m.stream(stream).capture is not None

    def graphLaunch(self, graph: int, stream: int) -> None:
        g, s = self.m.graphs[graph], self.m.stream(stream)
        self._check_stream(s)
        s.enqueue(g.run, "graph")

    # ---- events ----
    def eventCreate(self) -> int:
        return self.eventCreateWithFlags(0)

    def eventCreateWithFlags(self, flags: int) -> int:
        handle = next(self.m.ids)
        self.m.events[handle] = Event(handle, timing=not flags & self.eventDisableTiming)
        return handle

    def eventDestroy(self, event: int) -> None:
        self.m.events.pop(event, None)

    def _event(self, event: int) -> Event:
        e = self.m.events.get(event)
        if e is None:
            raise CUDARuntimeError(400, f"no event {event:#x}")
        return e

    def eventRecord(self, event: int, stream: int) -> None:
        e, s = self._event(event), self.m.stream(stream)
        if s.capture is not None:
            raise CUDARuntimeError(900, "the stand-in does not capture event records")
        e.marker = s.enqueue(lambda: None, "record")  # complete (and timed) when the stream gets there

    def eventQuery(self, event: int) -> int:
        m = self._event(event).marker
        return 0 if m is None or m.done() else 600

    def eventSynchronize(self, event: int) -> None:
        m = self._event(event).marker
        if m is not None:
            m.wait()
        self.m.current.raise_error()

    def eventElapsedTime(self, start: int, end: int) -> float:
        a, b = self._event(start), self._event(end)
        if not (a.timing and b.timing) or a.marker is None or b.marker is None:
            raise CUDARuntimeError(400, "elapsed time of events not recorded with timing")
        if not (a.marker.done() and b.marker.done()):
            raise CUDARuntimeError(600, "elapsed time of an event that has not completed")
        return float((b.marker.time - a.marker.time) * 1e3)
