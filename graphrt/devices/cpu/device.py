"""The ``cpu`` device: numpy kernels over one preallocated arena — the embedded default and the
reference every other device is compared against.

Kernels (:mod:`.kernels`) write into their planned output views (``out=``); ops without a
kernel of their own there run their ``OpDef`` reference forward.
"""
from __future__ import annotations

import numpy as np

from ...ir import Graph, Node
from ...ir.limits import memory_available
from ...ops import get_op
from ..base import Device
from .kernels import KERNELS, WORKSPACES
from ..streams import InlineStream, WorkerStream

ARENA_ALIGN = 64


def aligned_empty(nbytes: int, align: int = ARENA_ALIGN) -> np.ndarray:
    """A zeroed uint8 array of ``nbytes`` whose data starts on an ``align``-byte boundary."""
    raw = np.zeros(nbytes + align, np.uint8)
    start = (-raw.ctypes.data) % align
    return raw[start:start + nbytes]


# ---- the device ---------------------------------------------------------------------------------


def _reference_kernel(op: str):
    forward = get_op(op).forward

    def run(attrs, inputs, outputs, ws):
        forward(attrs, inputs, outputs)
    run.__name__ = f"reference_{op}"
    return run


class CpuDevice(Device):
    """numpy on the host; its "device memory" is one aligned numpy buffer."""

    kind = "cpu"

    def alloc_arena(self, nbytes: int) -> np.ndarray:
        return aligned_empty(nbytes)

    def upload(self, array: np.ndarray) -> np.ndarray:
        out = aligned_empty(array.nbytes).view(array.dtype).reshape(array.shape)
        out[...] = array
        return out

    def kernel(self, op: str):
        return KERNELS.get(op) or _reference_kernel(op)

    def workspace_bytes(self, node: Node, graph: Graph, batch: int) -> int:
        fn = WORKSPACES.get(node.op)
        return fn(node, graph, batch) if fn else 0

    def available_bytes(self) -> int:
        """The least of the address-space limit, the cgroup limit and the machine's available
        memory (:func:`graphrt.ir.limits.memory_available`): the arena is host memory."""
        return memory_available()[0]

    def available_memory(self) -> tuple[int, str]:
        room, why = memory_available()
        available = self.available_bytes()
        return available, why if available == room else "the cpu device's available_bytes()"

    def compute_stream(self) -> InlineStream:
        return InlineStream()

    def copy_stream(self) -> WorkerStream:
        return WorkerStream()

    def alloc_staging(self, nbytes: int) -> np.ndarray:
        return aligned_empty(nbytes)

    def to_device(self, host, dst, stream=None) -> None:
        np.copyto(dst, host)

    def to_host(self, src, dst, stream=None) -> None:
        np.copyto(dst, src)
