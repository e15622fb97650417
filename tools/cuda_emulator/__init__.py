"""A CUDA stand-in for tests without a GPU: the cuda device's kernel sources compiled for the host
by g++ and run behind the production :class:`graphrt.devices.cuda.CudaDevice` (``backend``)."""
from .backend import EmulatedBackend, emulated_device, emulator_source, host_compiler, strided_at  # noqa: F401
