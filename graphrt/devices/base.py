"""The ``Device`` protocol: what the scheduler needs from a device, and nothing more.

A device allocates the arena, uploads parameters once, supplies a kernel per op (``kernel(op)``
returns ``fn(attrs, inputs, outputs, workspace)``) and each kernel's workspace size, copies between
host and device, and provides streams and events (see :mod:`graphrt.devices.cpu` for the reference
implementation). This module imports no implementation: :mod:`.registry` finds them by name.
"""
from __future__ import annotations

import abc
from typing import Any, Callable

import numpy as np

from ..ir import Graph, Node

Kernel = Callable[[Any, list, list, Any], None]


class Device(abc.ABC):
    """A place where a compiled program runs."""

    kind: str = "abstract"

    @abc.abstractmethod
    def alloc_arena(self, nbytes: int) -> Any:
        """One zeroed byte buffer of ``nbytes`` for the whole memory plan."""

    @abc.abstractmethod
    def upload(self, array: np.ndarray) -> Any:
        """A device copy of a parameter, made once when an executable is built."""

    @abc.abstractmethod
    def kernel(self, op: str) -> Kernel:
        """The kernel that runs ``op`` on this device."""

    def for_graph(self, graph: Graph, batch: int, *, threads: int | None = None,
                  algorithms: str | None = None) -> "Device":
        """The device an executable of ``graph`` at ``batch`` runs on, with its choices made for
        that graph (the cpu device: its threads, each launch's split, each convolution's
        algorithm); by default this device itself, which ignores both options."""
        return self

    def kernel_for(self, node: Node, graph: Graph) -> Kernel:
        """The kernel that runs ``node`` (by default :meth:`kernel` of its op)."""
        return self.kernel(node.op)

    def tune(self, program: Any) -> bool:
        """Choices left to measure on a bound program (:class:`graphrt.scheduler.program.Program`,
        over the arena's own buffers), made now; True when the memory plan must be redone because a
        workspace changed."""
        return False

    def placement(self, node: Node, graph: Graph) -> str | None:
        """Why this device cannot run ``node`` (None: it can). The ``place`` pass puts the nodes a
        device refuses on the host, with explicit copies, and the executable warns about them."""
        return None

    def workspace_bytes(self, node: Node, graph: Graph, batch: int) -> int:
        """Scratch bytes ``node``'s kernel needs at ``batch`` (planned in the arena like a tensor)."""
        return 0

    @abc.abstractmethod
    def available_bytes(self) -> int:
        """Memory the device can still give an arena."""

    def available_memory(self) -> tuple[int, str]:
        """:meth:`available_bytes` and what decides it, for the messages of an out-of-memory error."""
        return self.available_bytes(), f"free memory of the {self.kind} device"

    @abc.abstractmethod
    def to_device(self, host: np.ndarray, dst: Any, stream: Any = None) -> None:
        """Copy a host array into a device view (asynchronously on ``stream`` where supported)."""

    @abc.abstractmethod
    def to_host(self, src: Any, dst: np.ndarray, stream: Any = None) -> None:
        """Copy a device view into a host array."""

    def synchronize(self) -> None:
        """Wait for all work queued on the device."""

    def hand_over(self) -> None:
        """Order the caller's own work after everything queued so far, before device arrays are
        handed to the caller (the cuda device makes the caller's current CuPy stream wait on the
        GPU); by default, :meth:`synchronize`."""
        self.synchronize()

    def count_finite(self, array) -> int:
        """How many elements of a device array are finite (the numerics guard)."""
        return int(np.isfinite(array).sum())

    @abc.abstractmethod
    def compute_stream(self) -> Any:
        """A stream for kernels (see :mod:`graphrt.devices.streams` for the protocol)."""

    @abc.abstractmethod
    def copy_stream(self) -> Any:
        """A separate stream for host<->device copies; the caller closes it."""

    @abc.abstractmethod
    def alloc_staging(self, nbytes: int) -> np.ndarray:
        """A host buffer for batches on their way in (page-locked where the device has DMA)."""

    def adopt(self, value: Any) -> Any:
        """``value`` as this device's own array without a copy when it already lives on the device
        (a CuPy array, a CUDA DLPack capsule, ...); None for host data, which the executable copies."""
        return None

    def step_groups(self, graph: Graph, steps: list[str]) -> list[tuple[int, int]]:
        """The runs of consecutive steps (first, last; indices into ``steps``, the plan's order)
        this device executes as one, its threads working through all of a run's nodes at once:
        the memory plan keeps every buffer they touch live for the whole run. None by default."""
        return []

    def run_program(self, program: Any) -> None:
        """Run one step of a compiled program (:class:`graphrt.scheduler.program.Program`): by
        default each launch in order on the calling thread; a device may replace the whole step
        (the cuda device replays it as one CUDA graph)."""
        for launch in program.launches:
            launch.fn(launch.attrs, launch.inputs, launch.outputs, launch.workspace)
