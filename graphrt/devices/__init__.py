"""Devices: where a compiled program runs.

Owns the whole :class:`Device` protocol (``base``: every method the scheduler calls, importing no
implementation), the stream protocol with its host implementations (``streams``), the registry that
finds an implementation by name and imports it lazily (``registry``), and the implementations:
``cpu/`` (numpy over one arena: the embedded default and the reference) and ``cuda/`` (CuPy, its
runtime, kernel binders and ``kernels/*.cu``; CuPy is imported only when a CUDA device is made).
Implementations may import ``ir``, ``ops``, ``memory`` and the protocol; nothing here imports the
scheduler.
"""
from .base import Device  # noqa: F401
from .registry import get_device  # noqa: F401
