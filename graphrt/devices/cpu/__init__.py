"""The ``cpu`` device: numpy kernels over one preallocated arena — the embedded default and the
reference every other device is compared against. ``device`` holds :class:`CpuDevice`, ``kernels``
the kernels that write into planned views without allocating; ``threads`` the device's worker pool
and the BLAS limit inside a step, ``split`` which launches run in parts across the threads,
``algorithms`` each convolution's algorithm (measured, cached, or by a fixed rule), ``winograd`` and
``nhwc`` two of those algorithms. May import ``ir``, ``ops``, ``memory`` and the device protocol.
"""
from .device import ARENA_ALIGN, CpuDevice, aligned_empty  # noqa: F401
