"""cuBLAS of the stand-in (``cupy_backends.cuda.libs.cublas`` and
``cupy.cuda.device.get_cublas_handle``): handles with their stream, pointer mode and math mode, and
``gemmStridedBatched`` computed with numpy on the stream the handle is set to.

As in CuPy, every call first sets the handle's stream to the current stream and is refused while
that stream captures (cupy#6290; ``STATE.blas_in_capture`` lifts it); alpha and beta are pointers
(CuPy 14), read at the call in host pointer mode and when the GEMM runs in device pointer mode.
In TF32 math mode (3) float32 operands are rounded to TF32's 10-bit mantissa, as tensor cores do,
so a math mode left behind on a shared handle changes the results of the next user of the handle.
"""
from __future__ import annotations

import itertools

import numpy as np

from . import cupy_cuda as cuda
from .gpu import device_of
from .kernels import strided_at
from .state import STATE, machine, rt

CUBLAS_DEFAULT_MATH, CUBLAS_TF32_TENSOR_OP_MATH = 0, 3
_IDS = itertools.count(1)


class CUBLASError(RuntimeError):
    def __init__(self, status: int, detail: str = ""):
        self.status = status
        super().__init__(f"CUBLAS_STATUS {status}: {detail}")


class _Handle:
    def __init__(self, device: int):
        self.device, self.stream, self.pointer_mode, self.math_mode = device, 0, 0, 0


def _handles() -> dict:
    if not hasattr(STATE, "cublas_handles") or STATE.cublas_handles[0] is not STATE.machine:
        STATE.cublas_handles = (STATE.machine, {})
    return STATE.cublas_handles[1]


def _get(handle: int) -> _Handle:
    h = _handles().get(handle)
    if h is None:
        raise CUBLASError(1, f"no cuBLAS handle {handle}")
    return h


def create() -> int:
    handle = next(_IDS)
    _handles()[handle] = _Handle(rt().getDevice())
    return handle


def destroy(handle: int) -> None:
    _handles().pop(handle, None)


def get_cublas_handle() -> int:
    """CuPy's handle of the current device, shared by every user in this thread."""
    per = STATE.tls.__dict__.setdefault("cublas", {})
    key = (id(STATE.machine), rt().getDevice())
    if key not in per:
        per[key] = create()
    return per[key]


def setStream(handle: int, stream: int) -> None:
    _get(handle).stream = int(stream)


def getStream(handle: int) -> int:
    return _get(handle).stream


def setPointerMode(handle: int, mode: int) -> None:
    _get(handle).pointer_mode = int(mode)


def getPointerMode(handle: int) -> int:
    return _get(handle).pointer_mode


def setMathMode(handle: int, mode: int) -> None:
    _get(handle).math_mode = int(mode)


def getMathMode(handle: int) -> int:
    return _get(handle).math_mode


def tf32(x: np.ndarray) -> np.ndarray:
    """float32 values rounded to TF32 (10 mantissa bits, to nearest even)."""
    u = np.ascontiguousarray(x, np.float32).view(np.uint32)
    u = (u + np.uint32(0x0FFF) + ((u >> np.uint32(13)) & np.uint32(1))) & np.uint32(0xFFFFE000)
    return u.view(np.float32)


def gemm_strided_batched(dtype):
    dtype = np.dtype(dtype)
    isz = dtype.itemsize

    def gemm(handle, transa, transb, m, n, k, alpha, A, lda, strideA, B, ldb, strideB, beta, C, ldc,
             strideC, batchCount):
        h = _get(handle)
        h.stream = cuda.get_current_stream().ptr  # CuPy's _setStream
        stream = machine().stream(h.stream)
        if stream.capture is not None and not STATE.blas_in_capture:
            raise NotImplementedError("cuBLAS is not supported during stream capture (CuPy)")
        if not all(isinstance(v, (int, np.integer)) for v in (alpha, beta)):
            raise TypeError("an integer is required (alpha and beta are pointers)")
        if h.device != rt().getDevice() or stream.device.index != h.device:
            raise CUBLASError(13, f"a handle of device {h.device} used on device {rt().getDevice()}")
        dev = stream.device
        host_scalars = None
        if h.pointer_mode == 0:  # read now, from host memory
            if device_of(alpha) is not None or device_of(beta) is not None:
                raise CUBLASError(7, "host pointer mode with device scalars")
            host_scalars = (strided_at(alpha, dtype, (), ())[()], strided_at(beta, dtype, (), ())[()])
        math = h.math_mode

        def view(ptr, trans, rows, cols, ld, stride):
            r, c = (rows, cols) if trans == 0 else (cols, rows)
            extent = ((batchCount - 1) * stride + (r - 1) + (c - 1) * ld + 1) * isz
            v = strided_at(dev.host_address(ptr, extent), dtype, (batchCount, r, c),
                           (stride * isz, isz, ld * isz))
            return v if trans == 0 else v.transpose(0, 2, 1)

        def run():
            al, be = host_scalars or (strided_at(dev.host_address(alpha, isz), dtype, (), ())[()],
                                      strided_at(dev.host_address(beta, isz), dtype, (), ())[()])
            a, b = view(A, transa, m, k, lda, strideA), view(B, transb, k, n, ldb, strideB)
            c = view(C, 0, m, n, ldc, strideC)
            if math == CUBLAS_TF32_TENSOR_OP_MATH and dtype == np.float32:
                a, b = tf32(a), tf32(b)
            res = dtype.type(al) * np.matmul(a, b)
            if be != 0:  # beta 0: C is not read (it may hold NaN)
                res += dtype.type(be) * c
            c[...] = res
        stream.enqueue(run, "cublas")
    return gemm


sgemmStridedBatched = gemm_strided_batched(np.float32)
dgemmStridedBatched = gemm_strided_batched(np.float64)
