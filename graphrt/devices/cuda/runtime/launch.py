"""Launching bound calls on the cuda device: each :class:`~graphrt.devices.cuda.calls.Call` and
:class:`~graphrt.devices.cuda.runtime.gemm.Gemm` becomes a
:class:`~graphrt.devices.cuda.runtime.graphs.Step` with its arguments resolved once (pointers, typed
scalars), so a step runs without looking anything up. :class:`CupyLaunch` compiles the kernels
with NVRTC (``cupy.RawModule``, once per GPU and dtype in a process) and passes arguments as
CuPy's ``RawKernel`` takes them.
"""
from __future__ import annotations

import numpy as np

from ....ir.errors import GraphrtError
from ..calls import Call, Offset
from .gemm import Gemm, gemm_step
from .graphs import Step
from .streams import on_device
from ..sources import SIGNATURES, module_source

_MODULES: dict = {}  # (device, dtype) -> cupy.RawModule, compiled once per process
_FUNCTIONS: dict = {}


class CupyLaunch:
    """The CuPy backend's kernels (``self.cp``, ``self.dev``, ``self.device_id``): ``prepare(item)``
    turns a bound call into a step, through ``launcher(call)`` and ``gemm_library()`` (see
    :func:`~graphrt.devices.cuda.runtime.gemm.gemm_step`)."""

    @on_device  # kernels are loaded on the current GPU
    def prepare(self, item) -> Step:
        if isinstance(item, Call):
            return Step(self.launcher(item), what=item.kernel)
        if isinstance(item, Gemm):
            return gemm_step(item, self.launcher, self.gemm_library())
        raise GraphrtError(f"the cuda device cannot run a {type(item).__name__}")

    def function(self, dtype, name: str):
        key = (self.device_id, np.dtype(dtype).name, name)
        fn = _FUNCTIONS.get(key)
        if fn is None:
            module = _MODULES.get(key[:2])
            if module is None:
                module = _MODULES[key[:2]] = self.cp.RawModule(
                    code=module_source(dtype), options=("-std=c++17",))
            fn = _FUNCTIONS[key] = module.get_function(name)
        return fn

    def pointer(self, a) -> int:
        if a is None:
            return 0
        if isinstance(a, Offset):
            return self.pointer(a.array) + a.offset * a.array.dtype.itemsize
        if isinstance(a, self.cp.ndarray):
            return int(a.data.ptr)
        raise GraphrtError(f"a {type(a).__name__} is not a device array of this device")

    def args(self, call: Call) -> tuple:
        scalar = {"T": call.dtype.type, "int": np.int32, "i64": np.int64, "f64": np.float64}
        out = []
        for kind, v in zip(SIGNATURES[call.kernel], call.args):
            if kind == "ptr":
                out.append(np.uint64(self.pointer(v)))
            else:
                out.append(scalar.get(kind, np.float32)(v))
        return tuple(out)

    def launcher(self, call: Call):
        fn = self.function(call.dtype, call.kernel)
        grid, block, args = tuple(call.grid), tuple(call.block), self.args(call)
        return lambda: fn(grid, block, args)
