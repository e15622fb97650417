"""The installed stand-in: its :class:`~.gpu.Machine`, runtime and options (one at a time, as there
is one ``sys.modules['cupy']``)."""
from __future__ import annotations

import threading


class _State:
    machine = None
    runtime = None
    blas_in_capture = False  # CuPy refuses cuBLAS calls while a stream captures (cupy#6290)
    cai_sync = True  # CUPY_CUDA_ARRAY_INTERFACE_SYNC: CuPy synchronizes a producer's stream
    tls = threading.local()


STATE = _State()


def rt():
    """The installed runtime (:class:`~.runtime.Runtime`)."""
    if STATE.runtime is None:
        raise RuntimeError("the CUDA stand-in is not installed (tools.cuda_emulator.install)")
    return STATE.runtime


def machine():
    return rt().m
