"""Devices: ``cpu`` (numpy, the reference) and ``cuda`` (CuPy, imported lazily)."""
from .base import Device, get_device  # noqa: F401
