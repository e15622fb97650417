"""The CUDA device (CuPy). Imported lazily: nothing here imports CuPy at module load."""
from __future__ import annotations

from ..errors import UnsupportedError


def cuda_available() -> bool:
    """True when CuPy is installed and sees at least one GPU."""
    try:
        import cupy
    except Exception:
        return False
    try:
        return bool(cupy.is_available())
    except Exception:
        return False


class CudaDevice:
    """Placeholder until the cuda device lands: says so clearly instead of failing obscurely."""

    kind = "cuda"

    def __init__(self):
        raise UnsupportedError("the cuda device is not implemented yet; use device='cpu'")
