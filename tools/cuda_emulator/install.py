"""Putting the stand-in in CuPy's place: ``with installed(): ...`` makes ``import cupy`` (and
``cupy_backends.cuda.libs.cublas``) give the stand-in's modules over a fresh
:class:`~.gpu.Machine`, so the cuda device's real CuPy backend runs unchanged on it; on exit the
previous modules (the real CuPy, where there is one) come back.

    with installed(delay=(0, 0)) as gpu:
        exe = graphrt.compile(graph, device="cuda")
        gpu.counts["kernel"]
"""
from __future__ import annotations

import contextlib
import sys
import types

import numpy as np

from . import array, cublas, cupy_cuda
from .gpu import CUDARuntimeError, Machine
from .runtime import Runtime
from .state import STATE

MODULES = ("cupy", "cupy.cuda", "cupy.cuda.runtime", "cupy.cuda.device", "cupy_backends",
           "cupy_backends.cuda", "cupy_backends.cuda.libs", "cupy_backends.cuda.libs.cublas")


def build_modules(runtime: Runtime) -> dict[str, types.ModuleType]:
    """The stand-in's ``cupy`` and ``cupy_backends`` modules over ``runtime``."""
    rt_mod = types.ModuleType("cupy.cuda.runtime")
    for name in dir(runtime):
        if not name.startswith("_"):
            setattr(rt_mod, name, getattr(runtime, name))
    device_mod = types.ModuleType("cupy.cuda.device")
    device_mod.get_cublas_handle = cublas.get_cublas_handle
    device_mod.Device = cupy_cuda.Device
    cuda = types.ModuleType("cupy.cuda")
    for name in ("Device", "Stream", "ExternalStream", "Event", "Memory", "MemoryPointer",
                 "alloc_pinned_memory", "get_elapsed_time", "get_current_stream"):
        setattr(cuda, name, getattr(cupy_cuda, name))
    cuda.runtime, cuda.device, cuda.Graph = rt_mod, device_mod, cupy_cuda.CudaGraph
    cuda.is_available = lambda: True
    cp = types.ModuleType("cupy")
    cp.__version__ = "14.0.0+graphrt-stand-in"
    cp.cuda = cuda
    cp.is_available = lambda: True
    for name in ("ndarray", "empty", "zeros", "asarray", "asnumpy", "from_dlpack", "concatenate",
                 "matmul", "isfinite"):
        setattr(cp, name, getattr(array, name))
    cp.RawModule = cupy_cuda.RawModule
    cp.get_default_memory_pool = lambda: types.SimpleNamespace(free_bytes=lambda: 0,
                                                               used_bytes=lambda: 0)
    for name in ("uint8", "int32", "int64", "float32", "float64", "bool_"):
        setattr(cp, name, getattr(np, name))
    libs = types.ModuleType("cupy_backends.cuda.libs")
    libs.cublas = types.ModuleType("cupy_backends.cuda.libs.cublas")
    for name in ("create", "destroy", "setStream", "getStream", "setPointerMode", "getPointerMode",
                 "setMathMode", "getMathMode", "sgemmStridedBatched", "dgemmStridedBatched",
                 "CUBLASError"):
        setattr(libs.cublas, name, getattr(cublas, name))
    backends, backends_cuda = types.ModuleType("cupy_backends"), types.ModuleType("cupy_backends.cuda")
    backends.cuda, backends_cuda.libs = backends_cuda, libs
    return dict(zip(MODULES, (cp, cuda, rt_mod, device_mod, backends, backends_cuda, libs,
                              libs.cublas)))


@contextlib.contextmanager
def installed(*, devices: int = 2, lazy=(0.02, 0.05), delay=(1e-4, 1e-3), stall=(0.02, 0.01),
              upload_delay=(0.0, 0.0), seed: int = 0, blas_in_capture: bool = False,
              cai_sync: bool = True):
    """The stand-in as ``cupy`` for the duration of the block; yields its :class:`~.gpu.Machine`
    (``devices``, ``lazy``, ``delay``, ``stall``, ``upload_delay``, ``seed``: see there).
    ``blas_in_capture``: let cuBLAS run during capture (CuPy refuses); ``cai_sync``: synchronize
    a ``__cuda_array_interface__`` producer's stream in ``cupy.asarray`` (CuPy's default)."""
    from graphrt.devices.cuda.runtime import driver, launch

    if STATE.runtime is not None:
        raise RuntimeError("the CUDA stand-in is already installed")
    machine = Machine(devices=devices, lazy=lazy, delay=delay, stall=stall, upload_delay=upload_delay,
                      seed=seed)
    saved_modules = {name: sys.modules.get(name) for name in MODULES}
    saved = (launch._MODULES.copy(), launch._FUNCTIONS.copy(), driver._properties_from_cuda_python)
    STATE.machine, STATE.runtime = machine, Runtime(machine)
    STATE.blas_in_capture, STATE.cai_sync = blas_in_capture, cai_sync
    sys.modules.update(build_modules(STATE.runtime))
    launch._MODULES.clear()
    launch._FUNCTIONS.clear()
    driver._properties_from_cuda_python = _no_cuda_python
    try:
        yield machine
    finally:
        for stream in list(machine.streams.values()):
            stream.last.wait(5)
        STATE.machine = STATE.runtime = None
        STATE.tls.__dict__.clear()
        for name, module in saved_modules.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
        launch._MODULES.clear()
        launch._MODULES.update(saved[0])
        launch._FUNCTIONS.clear()
        launch._FUNCTIONS.update(saved[1])
        driver._properties_from_cuda_python = saved[2]
        machine.shutdown()


def _no_cuda_python(device_id: int) -> dict:
    raise CUDARuntimeError(100, "the CUDA stand-in answers through CuPy")
