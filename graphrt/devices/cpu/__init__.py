"""The ``cpu`` device: numpy kernels over one preallocated arena — the embedded default and the
reference every other device is compared against. ``device`` holds :class:`CpuDevice`, ``kernels``
the kernels that write into planned views without allocating. May import ``ir``, ``ops``, ``memory``
and the device protocol.
"""
from .device import ARENA_ALIGN, CpuDevice, aligned_empty  # noqa: F401
