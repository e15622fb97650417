"""The emulated cuda backend (``CudaDevice(backend=EmulatedBackend())``, or :func:`emulated_device`):
the very same kernel sources compiled
for the CPU by the host C++ compiler, each CUDA thread a loop iteration (or a thread of its own in
kernels that synchronize), with numpy arrays as device memory. The binders, the launch arguments
and the kernels' index arithmetic are tested without a GPU. ``gemm="blas"`` runs cuBLAS's
column-major calls as computed for the GPU, in numpy (:func:`numpy_blas`), so that mapping is
tested too. A "graph" here is the list of captured steps, replayed in order.
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import pathlib
import shutil
import subprocess
import tempfile
import threading
import time

import numpy as np

from graphrt.ir.errors import GraphrtError, UnsupportedError
from graphrt.devices.cuda.calls import Call, Offset
from graphrt.devices.cuda.runtime.gemm import BlasPlan, Gemm
from graphrt.devices.cuda.runtime.graphs import Timer
from graphrt.devices.cuda.runtime.launch import StepPreparer
from graphrt.devices.cuda import CudaDevice
from graphrt.devices.cuda.sources import BARRIER_KERNELS, SIGNATURES, kernel_params, module_source
from graphrt.devices.cuda.runtime.streams import ThreadStreams


class EmulatedBackend(ThreadStreams, StepPreparer):
    """The kernels compiled for the host and run thread by thread (tests without a GPU)."""

    can_capture = True  # a "graph" here is the list of steps, replayed in order

    def __init__(self, gemm: str = "auto"):
        self.gemm_mode = gemm
        self.libs: dict = {}
        self._tls = threading.local()

    def describe(self) -> str:
        return f"emulated on the CPU (GEMMs: {self.gemm_mode})"

    # ---- streams: one host thread's work is already in order ----
    def bind_thread(self) -> None:
        pass

    def new_stream(self):
        return None

    def stream_context(self, s):
        return contextlib.nullcontext()

    def record(self, s):
        return None

    def wait(self, s, event) -> None:
        pass

    def sync(self, s) -> None:
        pass

    # ---- memory: numpy arrays ----
    def alloc_arena(self, nbytes: int, compute):
        from graphrt.devices.cpu import aligned_empty

        return aligned_empty(nbytes)

    def upload(self, array):
        from graphrt.devices.cpu import aligned_empty

        out = aligned_empty(array.nbytes).view(array.dtype).reshape(array.shape)
        out[...] = array
        return out

    def available_bytes(self) -> int:
        return 1 << 40

    def alloc_pinned(self, nbytes: int):
        from graphrt.devices.cpu import aligned_empty

        return aligned_empty(nbytes)

    def adopt(self, value, compute):
        return None

    def to_device(self, host, dst, s) -> None:
        np.copyto(dst, host)

    def to_host(self, src, dst, s) -> None:
        np.copyto(dst, src)

    # ---- kernels ----
    def lib(self, dtype):
        dtype = np.dtype(dtype)
        if dtype.name not in self.libs:
            self.libs[dtype.name] = _compile_emulator(dtype)
        return self.libs[dtype.name]

    @staticmethod
    def pointer(a) -> int:
        if a is None:
            return 0
        if isinstance(a, (int, np.integer)):  # an address already
            return int(a)
        if isinstance(a, Offset):
            return EmulatedBackend.pointer(a.array) + a.offset * a.array.dtype.itemsize
        if not isinstance(a, np.ndarray):
            raise GraphrtError(f"a {type(a).__name__} is not an emulated device array")
        return int(a.__array_interface__["data"][0])

    def launcher(self, call: Call):
        lib = self.lib(call.dtype)
        ctype_of = {"T": np.ctypeslib.as_ctypes_type(call.dtype), "int": ctypes.c_int32,
                    "i64": ctypes.c_int64, "f64": ctypes.c_double, "f32": ctypes.c_float,
                    "ptr": ctypes.c_void_p}
        values = []
        for kind, v in zip(SIGNATURES[call.kernel], call.args):
            values.append(ctype_of[kind](self.pointer(v) if kind == "ptr" else v))
        argv = (ctypes.c_void_p * max(1, len(values)))(*[ctypes.addressof(v) for v in values])
        wrapper = getattr(lib, f"gr_wrap_{call.kernel}")
        gx, gy, gz = (tuple(call.grid) + (1, 1))[:3]
        bx, by, bz = (tuple(call.block) + (1, 1))[:3]
        threaded = int(call.kernel in BARRIER_KERNELS)
        launch = lib.gr_emu_launch

        def run(values=values, argv=argv):
            launch(wrapper, argv, gx, gy, gz, bx, by, bz, threaded)
        return run

    def gemm_library(self):
        return numpy_blas if self.gemm_mode == "blas" else None

    # ---- graphs ----
    def capture_modes(self) -> list[str]:
        return (["blas"] if self.gemm_mode == "blas" else []) + ["kernel"]

    def timer(self, compute) -> Timer:
        return Timer(time.perf_counter, lambda start: time.perf_counter() - start)

    def capture(self, compute, steps, mode):
        return (mode, [s.capture for s in steps])

    def launch_graph(self, graph, compute) -> None:
        mode, captured = graph
        for run in captured:
            run(mode)


def numpy_blas(g: Gemm, plan: BlasPlan):
    """cuBLAS ``gemmStridedBatched`` (column-major) computed with numpy on strided views of the
    emulated device memory: C = alpha op(A) op(B) + beta C."""
    isz = g.dtype.itemsize

    def colmajor(src, rows, cols, ld, stride, batch):
        start = EmulatedBackend.pointer(src)
        return strided_at(start, g.dtype, (batch, rows, cols), (stride * isz, isz, ld * isz))

    def run():
        ra, ca = (plan.m, plan.k) if plan.transa == "N" else (plan.k, plan.m)
        rb, cb = (plan.k, plan.n) if plan.transb == "N" else (plan.n, plan.k)
        a = colmajor(plan.a, ra, ca, plan.lda, plan.stride_a, plan.batch)
        b = colmajor(plan.b, rb, cb, plan.ldb, plan.stride_b, plan.batch)
        c = colmajor(plan.c, plan.m, plan.n, plan.ldc, plan.stride_c, plan.batch)
        opa = a if plan.transa == "N" else a.transpose(0, 2, 1)
        opb = b if plan.transb == "N" else b.transpose(0, 2, 1)
        res = g.dtype.type(g.alpha) * np.matmul(opa, opb)
        if g.beta:
            res += g.dtype.type(g.beta) * c
        c[...] = res
    return run


def strided_at(address: int, dtype, shape, strides):
    """A writable numpy view of memory at ``address`` (inside an array this process owns)."""
    class _Holder:
        pass
    holder = _Holder()
    holder.__array_interface__ = {"data": (address, False), "shape": tuple(shape),
                                  "strides": tuple(strides), "typestr": np.dtype(dtype).str,
                                  "version": 3}
    return np.asarray(holder)


# ---- the kernels compiled for the host -----------------------------------------------------------
HERE = pathlib.Path(__file__).resolve().parent
EMULATION_PRELUDE = (HERE / "emulation.h").read_text(encoding="utf-8")  # CUDA's built-ins for the host
EMULATOR_LAUNCHER = (HERE / "emulator.cpp").read_text(encoding="utf-8")


def emulator_source(dtype) -> str:
    """The module for ``dtype`` as host C++: kernels, a wrapper per kernel unpacking ``void**``
    arguments, and the launcher."""
    src = module_source(dtype, head=EMULATION_PRELUDE)
    wrappers = []
    for name, params in kernel_params().items():
        unpack = ", ".join(f"*({ctype}*)a[{i}]" for i, ctype in enumerate(params))
        wrappers.append(f'extern "C" void gr_wrap_{name}(void** a) {{ {name}({unpack}); }}')
    return src + EMULATOR_LAUNCHER + "\n".join(wrappers) + "\n"


def host_compiler() -> str | None:
    return shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")


_EMU_LOCK = threading.Lock()


def _compile_emulator(dtype):
    cxx = host_compiler()
    if cxx is None:
        raise UnsupportedError("the emulated cuda device needs a host C++ compiler (g++)")
    src = emulator_source(dtype)
    key = hashlib.sha256((cxx + src).encode()).hexdigest()[:16]
    folder = os.path.join(tempfile.gettempdir(), f"graphrt-cuda-emulator-{os.getuid()}")
    lib = os.path.join(folder, f"kernels-{np.dtype(dtype).name}-{key}.so")
    with _EMU_LOCK:
        if not os.path.exists(lib):
            _build(cxx, src, folder, lib)
    handle = ctypes.CDLL(lib)
    handle.gr_emu_launch.argtypes = [ctypes.c_void_p, ctypes.c_void_p] + [ctypes.c_uint] * 6 + \
        [ctypes.c_int]
    handle.gr_emu_launch.restype = ctypes.c_int
    for name in SIGNATURES:
        fn = getattr(handle, f"gr_wrap_{name}")
        fn.argtypes = [ctypes.c_void_p]
        fn.restype = None
    return _EmulatorLib(handle)


def _build(cxx: str, src: str, folder: str, lib: str) -> None:
    """Compile ``src`` into the shared library ``lib`` (written whole, then renamed into place)."""
    os.makedirs(folder, exist_ok=True)
    cpp = lib[:-3] + ".cpp"
    with open(cpp, "w") as f:
        f.write(src)
    tmp = f"{lib}.{os.getpid()}.tmp"
    proc = subprocess.run([cxx, "-O2", "-std=c++20", "-pthread", "-shared", "-fPIC",
                           "-w", "-o", tmp, cpp], capture_output=True, text=True)
    if proc.returncode:
        raise GraphrtError(f"compiling the emulated kernels failed:\n{proc.stderr[-4000:]}")
    os.replace(tmp, lib)


class _EmulatorLib:
    def __init__(self, handle):
        self.handle = handle
        self.gr_emu_launch = handle.gr_emu_launch
        for name in SIGNATURES:
            setattr(self, f"gr_wrap_{name}",
                    ctypes.cast(getattr(handle, f"gr_wrap_{name}"), ctypes.c_void_p))


def emulated_device(*, gemm: str = "auto", **options) -> CudaDevice:
    """The production :class:`CudaDevice` over the emulated backend (``options``: ``graphs``, ...)."""
    return CudaDevice(backend=EmulatedBackend(gemm=gemm), gemm=gemm, **options)
