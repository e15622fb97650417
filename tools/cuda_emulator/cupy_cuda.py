"""``cupy.cuda`` of the stand-in: devices, streams, events, memory, pinned memory, CUDA graphs and
``RawModule`` kernels, each a thin layer over the stand-in's runtime as CuPy's are over CUDA's.

As in CuPy: ``Device(i).use()`` and ``with Device(i):`` set the calling thread's current device;
``with stream:`` makes a stream the thread's current one, where kernels, cuBLAS calls and CuPy's own
array operations go; ``Stream.null`` is the legacy default stream; a ``RawKernel`` launches on the
current stream of the device its module was loaded on.
"""
from __future__ import annotations

import ctypes
import weakref

import numpy as np

from .gpu import CUDARuntimeError
from .kernels import HostModule
from .state import STATE, machine, rt


class Device:
    """``cupy.cuda.Device``: the current device of the calling thread, as a context manager."""

    def __init__(self, device=None):
        self.id = rt().getDevice() if device is None else int(device)

    def use(self) -> None:
        rt().setDevice(self.id)

    def __enter__(self):
        stack = STATE.tls.__dict__.setdefault("devices", [])
        stack.append(rt().getDevice())
        self.use()
        return self

    def __exit__(self, *exc):
        rt().setDevice(STATE.tls.devices.pop())

    def synchronize(self) -> None:
        with self:
            rt().deviceSynchronize()

    @property
    def compute_capability(self) -> str:
        return "90"

    def __eq__(self, other):
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self):
        return hash(self.id)


def _stack() -> list:
    return STATE.tls.__dict__.setdefault("streams", [])


def get_current_stream():
    stack = _stack()
    return stack[-1] if stack else Stream.null


class Stream:
    """``cupy.cuda.Stream``: ``null`` is the legacy default stream (handle 0), ``ptds`` the
    per-thread default stream (handle 2)."""

    null: "Stream"
    ptds: "Stream"

    def __init__(self, null: bool = False, non_blocking: bool = False, ptds: bool = False):
        if null or ptds:
            self.ptr, self.device_id = (0 if null else 2), -1
            return
        flags = rt().streamNonBlocking if non_blocking else 0
        self.ptr = rt().streamCreateWithFlags(flags)
        self.device_id = rt().getDevice()
        weakref.finalize(self, _destroy_stream, rt(), self.ptr)

    def __enter__(self):
        _stack().append(self)
        return self

    def __exit__(self, *exc):
        _stack().pop()

    def use(self):
        stack = _stack()
        if stack:
            stack[-1] = self
        else:
            stack.append(self)
        return self

    def synchronize(self) -> None:
        rt().streamSynchronize(self.ptr)

    @property
    def done(self) -> bool:
        return rt().streamQuery(self.ptr) == 0

    def record(self, event=None):
        event = Event() if event is None else event
        event.record(self)
        return event

    def wait_event(self, event) -> None:
        rt().streamWaitEvent(self.ptr, event.ptr)

    def begin_capture(self, mode=None) -> None:
        rt().streamBeginCapture(self.ptr, 2 if mode is None else mode)

    def end_capture(self):
        return CudaGraph(rt().streamEndCapture(self.ptr))

    def is_capturing(self) -> bool:
        return rt().streamIsCapturing(self.ptr)

    def __eq__(self, other):
        return isinstance(other, Stream) and other.ptr == self.ptr

    def __hash__(self):
        return hash(self.ptr)


def _destroy_stream(runtime, ptr: int) -> None:
    if runtime is STATE.runtime:  # a stream of an earlier installation went with it
        runtime.streamDestroy(ptr)


Stream.null = Stream(null=True)
Stream.ptds = Stream(ptds=True)


class ExternalStream(Stream):
    """A stream made elsewhere, known by its handle."""

    def __init__(self, ptr: int, device_id: int = -1):
        self.ptr, self.device_id = int(ptr), device_id


class Event:
    """``cupy.cuda.Event``."""

    def __init__(self, block: bool = False, disable_timing: bool = False, interprocess: bool = False):
        self.ptr = rt().eventCreateWithFlags(rt().eventDisableTiming if disable_timing else 0)

    def record(self, stream=None) -> None:
        rt().eventRecord(self.ptr, (stream or get_current_stream()).ptr)

    def synchronize(self) -> None:
        rt().eventSynchronize(self.ptr)

    @property
    def done(self) -> bool:
        return rt().eventQuery(self.ptr) == 0


def get_elapsed_time(start: Event, end: Event) -> float:
    return rt().eventElapsedTime(start.ptr, end.ptr)


class CudaGraph:
    """What ``Stream.end_capture`` returns."""

    def __init__(self, handle: int):
        self.handle = handle

    def upload(self, stream=None) -> None:
        pass

    def launch(self, stream=None) -> None:
        rt().graphLaunch(self.handle, (stream or get_current_stream()).ptr)


# ---- memory -------------------------------------------------------------------------------------
class Memory:
    """``cupy.cuda.Memory``: one device allocation on the current device, freed when garbage."""

    def __init__(self, size: int):
        self.size = int(size)
        self.device_id = rt().getDevice()
        self.ptr = rt().malloc(max(self.size, 1))
        weakref.finalize(self, _free, rt(), self.ptr)


def _free(runtime, ptr: int) -> None:
    if runtime is STATE.runtime:  # memory of an earlier installation went with it
        runtime.free(ptr)


class MemoryPointer:
    def __init__(self, mem: Memory, offset: int):
        self.mem, self.offset = mem, int(offset)
        self.device_id = mem.device_id

    @property
    def ptr(self) -> int:
        return self.mem.ptr + self.offset


def alloc(nbytes: int) -> MemoryPointer:
    return MemoryPointer(Memory(nbytes), 0)


def alloc_pinned_memory(nbytes: int):
    """Page-locked host memory: a buffer numpy can wrap (``np.frombuffer``)."""
    return rt().hostAlloc(nbytes)


# ---- kernels ------------------------------------------------------------------------------------
_POINTER_TYPES = (np.uint64, np.int64, np.uintp, np.intp)


class RawModule:
    """``cupy.RawModule``: the CUDA source compiled for the host; ``get_function`` loads it on the
    current device."""

    def __init__(self, code: str, options=(), **kwargs):
        self.module = HostModule(code)

    def get_function(self, name: str) -> "RawKernel":
        if name not in self.module.params:
            raise CUDARuntimeError(500, f"no kernel named {name}")
        return RawKernel(self.module, name, rt().getDevice())


class RawKernel:
    """A kernel of a loaded module: ``kernel(grid, block, args)`` checks the launch as a GPU does
    (configuration limits, argument types, the current device) and enqueues it on the current
    stream; pointers are resolved when it runs."""

    def __init__(self, module: HostModule, name: str, device: int):
        self.module, self.name, self.device = module, name, device

    def __call__(self, grid, block, args, shared_mem: int = 0, **kwargs) -> None:
        grid, block = _dims(grid), _dims(block)
        _check_config(self.name, grid, block)
        if rt().getDevice() != self.device:
            raise CUDARuntimeError(400, f"kernel {self.name} of device {self.device} launched "
                                        f"while device {rt().getDevice()} is current")
        kinds = self.module.params[self.name]
        if len(args) != len(kinds):
            raise TypeError(f"{self.name} takes {len(kinds)} arguments, got {len(args)}")
        plan = [self._arg(i, a) for i, a in enumerate(args)]
        stream = machine().stream(get_current_stream().ptr)
        rt()._check_stream(stream)
        dev, module, name = stream.device, self.module, self.name

        def run():
            values = [ctypes.c_void_p(dev.host_address(v) if v else None) if c is None else c(v)
                      for c, v in plan]
            module.launch(name, values, grid, block)
        stream.enqueue(run, "kernel")

    def _arg(self, i: int, a):
        ctype = self.module.ctype(self.name, i)
        if ctype is None:  # a pointer: a device array or its address as a 64-bit integer
            if hasattr(a, "data") and hasattr(a, "__cuda_array_interface__"):
                return None, int(a.data.ptr)
            if not isinstance(a, _POINTER_TYPES):
                raise TypeError(f"{self.name} argument {i}: a pointer must be passed as a 64-bit "
                                f"integer or a device array, got {type(a).__name__}")
            return None, int(a)
        if not isinstance(a, np.generic) or a.dtype.itemsize != ctypes.sizeof(ctype) or \
                (a.dtype.kind == "f") != (ctype in (ctypes.c_float, ctypes.c_double)):
            raise TypeError(f"{self.name} argument {i} is a {self.module.params[self.name][i]}: "
                            f"got {type(a).__name__} (CuPy would pass its bytes as they are)")
        return ctype, a.item()


def _dims(d) -> tuple:
    d = (int(d),) if isinstance(d, (int, np.integer)) else tuple(int(v) for v in d)
    return (d + (1, 1, 1))[:3]


def _check_config(name: str, grid: tuple, block: tuple) -> None:
    """CUDA's launch limits: grid x < 2^31, y and z <= 65,535; block <= 1,024 threads (z <= 64)."""
    gx, gy, gz = grid
    bx, by, bz = block
    if min(grid + block) < 1 or gx > 2**31 - 1 or gy > 65535 or gz > 65535 or \
            bx > 1024 or by > 1024 or bz > 64 or bx * by * bz > 1024:
        raise CUDARuntimeError(9, f"kernel {name} launched with grid {grid} and block {block}")
