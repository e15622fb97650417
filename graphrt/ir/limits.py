"""Resource limits: how much a model file may make graphrt allocate, and how long it may take.

A model file is data from anywhere. Whatever graphrt allocates *because a file says so* is counted,
per load, in the bytes of the dtype actually allocated, and checked before it is allocated:

=========================  ============  ====================================================
limit                      default       counts, per load
=========================  ============  ====================================================
``MAX_PARAM_BYTES``        4 GiB         parameter arrays read, filled or initialized
``MAX_FOLDED_BYTES``       1 GiB         constants computed at load (ONNX constant folding)
``MAX_DECOMPRESSED_BYTES`` 4 GiB         bytes inflated from an archive (zip members)
``MAX_CONFIG_BYTES``       256 MiB       one JSON member of an archive (before inflating it)
``MAX_GRAPH_NODES``        1,000,000     nodes of one graph (a 20,000-layer model is ordinary)
``HDF5_SECONDS``           60            walking one HDF5 weights file
=========================  ============  ====================================================

Passing one raises :class:`~graphrt.ir.errors.LimitError` naming it; a trusted file that needs
more is loaded after raising the limit, which is read at every check::

    graphrt.limits.MAX_PARAM_BYTES = 16 << 30

Independently of these, a load is refused with :class:`~graphrt.ir.errors.OutOfMemoryError` before
it allocates more than the process may still use (:func:`memory_available`: the address-space
limit, the cgroup's memory limit and the machine's available memory), and ``compile`` checks its
arena against the same numbers.
"""
from __future__ import annotations

import math
import os
import resource
from typing import Sequence

import numpy as np

from .errors import LimitError, OutOfMemoryError

MAX_PARAM_BYTES = 4 << 30
MAX_FOLDED_BYTES = 1 << 30
MAX_DECOMPRESSED_BYTES = 4 << 30
MAX_CONFIG_BYTES = 256 << 20
MAX_GRAPH_NODES = 1_000_000
HDF5_SECONDS = 60.0

_taken = 0  # bytes every Budget of this process has admitted (see taken_bytes)

# budget kind -> the module attribute that limits it, and what it counts (for messages)
KINDS = {"param": ("MAX_PARAM_BYTES", "parameters"),
         "folded": ("MAX_FOLDED_BYTES", "constants computed at load"),
         "decompressed": ("MAX_DECOMPRESSED_BYTES", "bytes inflated from the archive")}


def limit(name: str):
    """The current value of limit ``name`` (callers may have changed it)."""
    return globals()[name]


def how_to_raise(name: str) -> str:
    """The sentence every LimitError ends with."""
    return (f"graphrt.limits.{name} is {limit(name):,}; if you trust the file, raise it "
            f"(graphrt.limits.{name} = ...)")


def nbytes_of(shape: Sequence[int], dtype) -> int:
    """Exact bytes of an array of ``shape`` and ``dtype`` (Python integers: never wraps)."""
    return math.prod(int(d) for d in shape) * np.dtype(dtype).itemsize


class Budget:
    """What one load has allocated so far, by kind (:data:`KINDS`); :meth:`take` before allocating.

    Besides each kind's limit, the total is checked against the memory the process may still use
    (measured once, at the first take)."""

    def __init__(self):
        self.used = dict.fromkeys(KINDS, 0)
        self._room: tuple[int, str] | None = None

    def take(self, kind: str, nbytes: int, what: str, **where) -> None:
        """Reserve ``nbytes`` of ``kind`` for ``what``; LimitError or OutOfMemoryError if they do
        not fit (``where``: node/file/line for the message)."""
        name, counts = KINDS[kind]
        nbytes = int(nbytes)
        if nbytes < 0:
            raise LimitError(f"{what} would have a negative size", **where)
        cap = limit(name)
        if self.used[kind] + nbytes > cap:
            before = f" (with the {self.used[kind]:,} bytes before it)" if self.used[kind] else ""
            raise LimitError(f"{what} needs {nbytes:,} bytes{before}, over the limit on {counts} "
                             f"({name}): {how_to_raise(name)}", **where)
        total = sum(self.used.values()) + nbytes
        if self._room is None:
            self._room = memory_available()
        room, why = self._room
        if total > room:
            raise OutOfMemoryError(f"{what} needs {nbytes:,} bytes ({total:,} for this load so "
                                   f"far) but the process may use only {room:,} more ({why})",
                                   **where)
        self.used[kind] += nbytes
        global _taken
        _taken += nbytes

    def take_array(self, kind: str, what: str, shape: Sequence[int], dtype="float32",
                   **where) -> None:
        """:meth:`take` the bytes of an array of ``shape`` and ``dtype``."""
        dims = [int(d) for d in shape]
        if any(d < 0 for d in dims):
            raise LimitError(f"{what} would have a negative dimension {tuple(dims)}", **where)
        self.take(kind, nbytes_of(dims, dtype), f"{what} of shape {tuple(dims)}", **where)


def taken_bytes() -> int:
    """Bytes all budgets of this process have admitted so far (a running total, for measuring:
    the fuzzer bounds a case's memory and time by what graphrt's limits let it allocate)."""
    return _taken


def count_nodes(count: int, **where) -> None:
    """LimitError when a graph would grow past ``MAX_GRAPH_NODES`` nodes."""
    if count > MAX_GRAPH_NODES:
        raise LimitError(f"the graph would have more than {MAX_GRAPH_NODES:,} nodes "
                         f"(MAX_GRAPH_NODES): {how_to_raise('MAX_GRAPH_NODES')}", **where)


# ------------------------------------------------------------------------- memory the process may use

def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as fh:
            return fh.read().strip()
    except (OSError, ValueError):
        return None


def _address_space_room() -> int | None:
    """Bytes left under ``ulimit -v`` (RLIMIT_AS), or None when unlimited."""
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    statm = _read("/proc/self/statm")
    used = int(statm.split()[0]) * os.sysconf("SC_PAGE_SIZE") if statm else 0
    return max(0, soft - used)


def _cgroup_room(root: str = "/sys/fs/cgroup") -> int | None:
    """Bytes left under this process's cgroup memory limit (v2, or v1), or None when unlimited."""
    own = _read("/proc/self/cgroup") or ""
    paths = [line.split(":", 2)[2] for line in own.splitlines() if line.startswith("0::")]
    candidates = [(f"{root}{p.rstrip('/')}/memory.max", f"{root}{p.rstrip('/')}/memory.current")
                  for p in paths] + [(f"{root}/memory.max", f"{root}/memory.current"),
                                     (f"{root}/memory/memory.limit_in_bytes",
                                      f"{root}/memory/memory.usage_in_bytes")]
    for limit_file, usage_file in candidates:
        text = _read(limit_file)
        if text is None:
            continue
        if text == "max" or not text.isdigit() or int(text) >= 1 << 60:
            return None
        usage = _read(usage_file)
        return max(0, int(text) - (int(usage) if usage and usage.isdigit() else 0))
    return None


def _machine_room() -> int | None:
    """MemAvailable of /proc/meminfo (free pages where it is missing)."""
    for line in (_read("/proc/meminfo") or "").splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def memory_available() -> tuple[int, str]:
    """The bytes this process may still allocate, and which limit decides it, e.g.
    ``(1073741824, "address-space limit (ulimit -v) 1,073,741,824 bytes left; ...")``."""
    rooms = {"address-space limit (ulimit -v)": _address_space_room(),
             "cgroup memory limit": _cgroup_room(),
             "available memory of the machine": _machine_room()}
    known = {k: v for k, v in rooms.items() if v is not None}
    if not known:
        return 1 << 62, "no limit found"
    return min(known.values()), "; ".join(f"{k}: {v:,} bytes left" for k, v in known.items())


__all__ = ["MAX_PARAM_BYTES", "MAX_FOLDED_BYTES", "MAX_DECOMPRESSED_BYTES", "MAX_CONFIG_BYTES",
           "MAX_GRAPH_NODES", "HDF5_SECONDS", "Budget", "count_nodes", "memory_available",
           "nbytes_of", "how_to_raise", "taken_bytes"]
