"""The cuda device's CuPy backend: one GPU, a non-blocking compute stream, and the parts that each
answer one question — streams (:mod:`~graphrt.devices.cuda.runtime.streams`), memory and copies
(:mod:`~graphrt.devices.cuda.runtime.memory`), kernel launches (:mod:`~graphrt.devices.cuda.runtime.launch`),
GEMMs (:mod:`~graphrt.devices.cuda.runtime.gemm`), CUDA graphs (:mod:`~graphrt.devices.cuda.runtime.graphs`).

CuPy's current device is per thread: the backend makes its GPU current around every call that
touches it (:func:`~graphrt.devices.cuda.runtime.streams.on_device`, and ``on(stream)``), in
whatever thread calls, and leaves the caller's current device as it was.

CuPy is imported when a backend is created, never when this module is.
"""
from __future__ import annotations

import threading

from ....ir.errors import UnsupportedError
from . import driver as cuda_runtime
from .gemm import CupyBlas
from .graphs import CupyGraphs
from .launch import CupyLaunch
from .memory import CupyMemory
from .streams import CupyStreams

INSTALL_HINT = ("pip install 'graphrt[cuda13]' (CuPy for CUDA 13) or 'graphrt[cuda12]'; "
                "or use device='cpu'")


class CupyBackend(CupyStreams, CupyMemory, CupyLaunch, CupyBlas, CupyGraphs):
    """GPU ``device_id`` through CuPy; raises :class:`~graphrt.ir.errors.UnsupportedError` saying
    whether CuPy or a GPU is missing."""

    can_capture = True

    def __init__(self, device_id: int, *, tf32: bool, gemm: str):
        try:
            import cupy
        except ImportError as err:
            raise UnsupportedError(f"the cuda device needs CuPy, which is not installed ({err}): "
                                   f"{INSTALL_HINT}") from None
        self.cp = cupy
        try:
            count = cupy.cuda.runtime.getDeviceCount()
        except Exception as err:
            raise UnsupportedError(f"CuPy {cupy.__version__} is installed but sees no usable GPU "
                                   f"({type(err).__name__}: {err}); use device='cpu'") from None
        if count < 1 or not cupy.is_available():
            raise UnsupportedError(f"CuPy {cupy.__version__} sees no GPU; use device='cpu'")
        if not 0 <= device_id < count:
            raise UnsupportedError(f"there is no GPU {device_id}: CuPy sees {count}")
        self.device_id = device_id
        self.dev = cupy.cuda.Device(device_id)  # made current per call, never for the caller
        self.tf32 = tf32
        self.gemm_mode = gemm
        with self.dev:
            self.stream = cupy.cuda.Stream(non_blocking=True)
        self.modules: dict = {}
        self._tls = threading.local()
        self._blas = None
        self._alpha_is_pointer = None
        self.props = None

    def describe(self) -> str:
        if self.props is None:
            try:
                self.props = cuda_runtime.device_properties(self.device_id)
            except Exception as err:  # pragma: no cover - informational only
                self.props = {"name": f"GPU {self.device_id} ({err})"}
        p = self.props
        return (f"{p.get('name')} (sm {p.get('compute_capability', '?')}, "
                f"{p.get('total_memory', 0) / 2**30:.1f} GiB, CuPy {self.cp.__version__}"
                f"{', TF32' if self.tf32 else ''})")
