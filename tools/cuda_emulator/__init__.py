"""A CUDA stand-in for machines without a GPU: a fake ``cupy`` (and ``cupy_backends``' cuBLAS) over
simulated GPUs, so that the cuda device's real CuPy backend — streams, events, copies, pinned
staging, CUDA-graph capture, cuBLAS calls, kernel launches — runs unchanged, and wrong ordering shows
up as wrong results (see :mod:`.gpu` for how strict it is). Kernels run through the cuda device's
own ``kernels/*.cu`` compiled for the host by g++ (:mod:`.kernels`), never through numpy.

    from tools.cuda_emulator import installed
    with installed() as gpu:           # sys.modules["cupy"] is the stand-in inside the block
        exe = graphrt.compile(graph, device="cuda")
"""
from .gpu import CUDARuntimeError, Machine  # noqa: F401
from .install import installed  # noqa: F401
from .kernels import host_compiler, strided_at  # noqa: F401
