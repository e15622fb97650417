"""Memory of the cuda device's CuPy backend: the arena, parameter uploads, page-locked staging,
adopted device arrays, and the copies between host and device.

``alloc_arena`` makes one device allocation (``cupy.cuda.Memory``) per executable and returns it as
a CuPy ``uint8`` array, so :func:`graphrt.memory.make_views` slices it into CuPy views at the
planned offsets exactly as it slices the cpu device's numpy arena. Parameters are uploaded once
(``upload``, on the compute stream that will read them); a step allocates nothing.
``alloc_pinned`` gives page-locked host memory (``cupy.cuda.alloc_pinned_memory``) as a numpy array;
``to_device``/``to_host`` are ``cudaMemcpyAsync`` on the given stream, and ``to_host`` waits for
its copy.

Device inputs. ``adopt`` takes a CuPy array, anything with ``__cuda_array_interface__`` or a CUDA
DLPack capsule (a PyTorch CUDA tensor) without a host round trip, and orders the compute stream
after the stream that produced it: the caller's current CuPy stream for a CuPy array, the
interface's ``stream`` field, or — for DLPack — the compute stream is handed to the producer, which
orders its own work before it. A device input is then copied into the input slot after the
caller's current CuPy stream too (where a dtype conversion of the input ran).
"""
from __future__ import annotations

import numpy as np

from ....ir.errors import GraphrtError
from ..calls import copy_call
from .streams import on_device, protocol_handle

CUDA_DLPACK_DEVICES = (2, 3, 13)  # kDLCUDA, kDLCUDAHost, kDLCUDAManaged


class CupyMemory:
    """The CuPy backend's memory and copies (``self.cp``, ``self.dev``, ``self.stream``;
    ``self.handle``, ``self.on``, ``self.wait_for_stream`` and ``self.prepare`` for copies)."""

    @on_device
    def alloc_arena(self, nbytes: int, compute):
        cp = self.cp
        mem = cp.cuda.Memory(max(nbytes, 1))
        arena = cp.ndarray((nbytes,), dtype=cp.uint8, memptr=cp.cuda.MemoryPointer(mem, 0))
        if nbytes:
            cp.cuda.runtime.memsetAsync(arena.data.ptr, 0, nbytes, self.stream.ptr)
        self.stream.synchronize()
        return arena

    @on_device
    def upload(self, array: np.ndarray):
        """A device copy of ``array``, made on the compute stream (whose kernels read it) and
        waited for, so ``array`` may change as soon as this returns."""
        out = self.cp.empty(array.shape, array.dtype)
        if array.nbytes:
            self.cp.cuda.runtime.memcpyAsync(out.data.ptr, array.ctypes.data, array.nbytes,
                                             self.cp.cuda.runtime.memcpyHostToDevice, self.stream.ptr)
        self.stream.synchronize()
        return out

    @on_device
    def available_bytes(self) -> int:
        free, _ = self.cp.cuda.runtime.memGetInfo()
        pool = self.cp.get_default_memory_pool()
        return int(free + pool.free_bytes())

    def alloc_pinned(self, nbytes: int) -> np.ndarray:
        if nbytes == 0:
            return np.empty(0, np.uint8)
        mem = self.cp.cuda.alloc_pinned_memory(nbytes)
        return np.frombuffer(mem, np.uint8, nbytes)

    # ---- device inputs ----
    def is_device_array(self, a) -> bool:
        return isinstance(a, self.cp.ndarray)

    @on_device
    def adopt(self, value, compute):
        cp = self.cp
        if isinstance(value, cp.ndarray):
            self.wait_for_stream(protocol_handle(cp.cuda.get_current_stream().ptr), compute)
            return value
        dev = getattr(value, "__dlpack_device__", None)
        if dev is not None:
            try:
                kind = int(dev()[0])
            except Exception:
                kind = None
            if kind in CUDA_DLPACK_DEVICES:
                with self.handle(compute):  # CuPy hands the current stream to the producer
                    return cp.from_dlpack(value)
        cai = getattr(value, "__cuda_array_interface__", None)
        if cai is not None:
            array = cp.asarray(value)
            if cai.get("stream") is not None:  # None: the producer says no ordering is needed
                self.wait_for_stream(int(cai["stream"]), compute)
            return array
        return None

    # ---- copies ----
    @on_device
    def to_device(self, host, dst, s) -> None:
        cp = self.cp
        stream = self.handle(s)
        if isinstance(host, cp.ndarray):
            self._device_to_device(host, dst, s, stream)
            return
        host = np.ascontiguousarray(host)
        if not dst.flags.c_contiguous or host.nbytes != dst.nbytes:
            raise GraphrtError(f"to_device: {host.nbytes} host bytes for a device view of "
                               f"{dst.nbytes} bytes (contiguous: {dst.flags.c_contiguous})")
        if host.nbytes:
            cp.cuda.runtime.memcpyAsync(dst.data.ptr, host.ctypes.data, host.nbytes,
                                        cp.cuda.runtime.memcpyHostToDevice, stream.ptr)

    def _device_to_device(self, src, dst, s, stream) -> None:
        """A device input: after the caller's current CuPy stream (a conversion of the input may
        have run there), copied on the GPU."""
        cp = self.cp
        self.after_caller(s)
        if src.flags.c_contiguous and dst.flags.c_contiguous and src.nbytes == dst.nbytes \
                and src.dtype == dst.dtype:
            cp.cuda.runtime.memcpyAsync(dst.data.ptr, src.data.ptr, src.nbytes,
                                        cp.cuda.runtime.memcpyDeviceToDevice, stream.ptr)
        else:
            with self.on(s):
                self.prepare(copy_call(src.astype(dst.dtype, copy=False), dst)).plain()

    @on_device
    def to_host(self, src, dst: np.ndarray, s) -> None:
        cp = self.cp
        stream = self.handle(s)
        if not isinstance(src, cp.ndarray):
            np.copyto(dst, src)
            return
        if not src.flags.c_contiguous:
            with self.on(s):
                tmp = cp.empty(src.shape, src.dtype)
                self.prepare(copy_call(src, tmp)).plain()
            src = tmp
        if dst.flags.c_contiguous and dst.dtype == src.dtype and dst.nbytes == src.nbytes:
            if src.nbytes:
                cp.cuda.runtime.memcpyAsync(dst.ctypes.data, src.data.ptr, src.nbytes,
                                            cp.cuda.runtime.memcpyDeviceToHost, stream.ptr)
            stream.synchronize()
            return
        tmp_host = np.empty(src.shape, src.dtype)
        self.to_host(src, tmp_host, s)
        np.copyto(dst, tmp_host)
