"""Limits that keep a hostile or broken model file from exhausting memory or time.

``MAX_PARAM_BYTES`` caps the float32 bytes of all parameters one load may allocate from shapes the
file *declares* (initializers, fillers, declared array sizes): a ``num_output: 100000000`` is a
:class:`~graphrt.ir.errors.WeightError` naming the layer, raised before anything is allocated.
``MAX_CONFIG_BYTES`` caps a JSON member of an archive (checked on its declared size, before it is
inflated). ``HDF5_SECONDS`` bounds reading a Keras HDF5 weights file (libhdf5 can loop on corrupt input).
Both are module attributes so a caller (the fuzzer, a server) may lower them.
"""
from __future__ import annotations

import math
from typing import Sequence

from ..ir.errors import WeightError

MAX_PARAM_BYTES = 4 << 30
MAX_CONFIG_BYTES = 256 << 20
HDF5_SECONDS = 60.0


class ParamBudget:
    """Counts the bytes of the parameters one load allocates; :meth:`take` before allocating."""

    def __init__(self, limit: int | None = None):
        self.limit = MAX_PARAM_BYTES if limit is None else limit
        self.used = 0

    def take(self, name: str, shape: Sequence[int], itemsize: int = 4, **where) -> None:
        """Reserve ``shape``; a WeightError naming ``name`` when the total would pass the cap."""
        dims = [int(d) for d in shape]
        if any(d < 0 for d in dims):
            raise WeightError(f"parameter {name!r} would have a negative dimension {tuple(dims)}",
                              **where)
        size = math.prod(dims) * itemsize
        if self.used + size > self.limit:
            raise WeightError(f"parameter {name!r} of shape {tuple(dims)} needs {size:,} bytes; "
                              f"with the {self.used:,} before it that passes the "
                              f"{self.limit:,}-byte limit on parameters (graphrt.frontends.limits."
                              "MAX_PARAM_BYTES)", **where)
        self.used += size


__all__ = ["MAX_PARAM_BYTES", "MAX_CONFIG_BYTES", "HDF5_SECONDS", "ParamBudget"]
