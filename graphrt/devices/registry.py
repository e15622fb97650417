"""Devices by name: ``get_device("cpu" | "cuda" | "auto")``.

Each implementation is listed here by module path and imported only when asked for, so importing
graphrt never imports CuPy and no module below the devices imports an implementation.
"""
from __future__ import annotations

import importlib

from ..ir.errors import GraphrtError
from .base import Device

# name -> (module, class, availability check: a module-level function returning bool, or None)
IMPLEMENTATIONS = {
    "cpu": ("graphrt.devices.cpu", "CpuDevice", None),
    "cuda": ("graphrt.devices.cuda", "CudaDevice", "cuda_available"),
}


def available(name: str) -> bool:
    """True when device ``name`` can be created here (``cuda``: CuPy installed and a GPU seen)."""
    module, _, check = IMPLEMENTATIONS[name]
    return True if check is None else bool(getattr(importlib.import_module(module), check)())


def get_device(name: str | Device = "auto") -> Device:
    """``"cpu"``, ``"cuda"`` or ``"auto"`` (CUDA when CuPy sees a GPU, else cpu); a Device passes through."""
    if isinstance(name, Device):
        return name
    if name == "auto":
        name = "cuda" if available("cuda") else "cpu"
    if name not in IMPLEMENTATIONS:
        raise GraphrtError(f"unknown device {name!r}: use {', '.join(map(repr, IMPLEMENTATIONS))} or 'auto'")
    module, cls, _ = IMPLEMENTATIONS[name]
    return getattr(importlib.import_module(module), cls)()
