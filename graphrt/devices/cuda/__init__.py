"""The ``cuda`` device: CuPy arrays in one device arena, graphrt's own kernels (``kernels/*.cu``),
cuBLAS GEMMs, compute and copy streams with events, pinned staging and CUDA-graph replay.

``device`` holds :class:`CudaDevice`; ``runtime/`` talks to the GPU through CuPy (streams, memory,
launches, GEMMs, graph capture); ``bind/`` turns each launch of a program into kernel calls with
every argument resolved; ``sources`` reads the CUDA C sources and ``calls`` describes one kernel
call. Importing this package never imports CuPy. May import ``ir``, ``ops``, ``memory`` and the
device protocol.
"""
from .device import CudaDevice, cuda_available  # noqa: F401
from .runtime.driver import cuda_error_text, device_properties  # noqa: F401
