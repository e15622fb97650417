"""A compiled program: the placed graph flattened into launches bound to arena views.

Compilation resolves, once per batch size, each node's kernel, attributes, input and output views
and workspace; running a step is a loop over that list — no graph walking, no shape inference, no
allocation. Nodes the memory plan made free (views: aliased concat/split, reshape/flatten of a
whole buffer) have no launch.

Nodes placed on the host (ops the device cannot run) are host launches: their reference forward
over host buffers made once per program, and the copy nodes around them — device-to-host and
host-to-device copies at their place in the step, counted in the transfer ledger.
"""
from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import Any, Callable

import numpy as np

from ..devices.base import Device
from ..ops import get_op
from .interrupts import deferred_interrupt
from ..ir.errors import GraphrtError
from ..ir import Graph
from ..memory import INPUTS, MemoryPlan, is_input_copy, make_views


class NumericsError(GraphrtError):
    """A node produced NaN or Inf (reported by ``check_finite``)."""


@dataclasses.dataclass
class Launch:
    """One call of a step: ``fn(attrs, inputs, outputs, workspace)``; ``host``: it runs on the host
    (a node placed there, or a copy between host and device) rather than as a device kernel."""

    node: str
    op: str
    fn: Callable
    attrs: Any
    inputs: list
    outputs: list
    workspace: Any
    host: bool = False


def is_free(node, plan: MemoryPlan) -> bool:
    """True when the plan already made the node's outputs views of its inputs (or vice versa)."""
    views = plan.views
    if node.op in ("reshape", "flatten"):
        src = views.get(node.inputs[0])
        return src is not None and views[node.outputs[0]].buffer == src.buffer
    if node.op == "concat" and node.attrs.get("alias"):
        return all(t in views and views[t].buffer == views[node.outputs[0]].buffer for t in node.inputs)
    if node.op == "split" and node.attrs.get("alias"):
        return node.inputs[0] in views and all(
            views[t].buffer == views[node.inputs[0]].buffer for t in node.outputs)
    return False


class Program:
    """Launches for one batch size; ``inputs``/``outputs`` are (host tensor, device view) pairs
    (an output a host node makes is a host buffer, named in ``host_outputs``)."""

    def __init__(self, graph: Graph, plan: MemoryPlan, device: Device, arena, params: dict, batch: int,
                 slot: int = 0, ledger=None):
        remap = {INPUTS: plan.input_slots[slot]} if slot else None
        views = make_views(plan, arena, graph, batch, remap)
        self.batch = batch
        self.device = device
        self.input_offsets: dict[str, int] = {}  # host input -> byte offset in ``packed``
        self.packed = None  # every input of this slot in one byte range: one upload per batch
        if plan.input_slots:
            block = plan.blocks[plan.input_slots[slot]]
            self.packed = arena[block.offset: block.offset + block.size]
        self.inputs: list[tuple[str, Any]] = []
        self.outputs: list[tuple[str, Any]] = []
        self.host_outputs: set[str] = set()
        self.launches: list[Launch] = []
        host = _host_buffers(graph, batch)

        def where(t):
            return params[t] if t in params else views[t] if t in views else host[t]
        for name in plan.steps:
            node = graph.node(name)
            if is_input_copy(node, graph):
                self.inputs.append((node.inputs[0], views[node.outputs[0]]))
                self.input_offsets[node.inputs[0]] = plan.views[node.outputs[0]].offset
                continue
            if node.op == "copy_to_host" and node.outputs[0] in graph.outputs:
                self.outputs.append((node.outputs[0], where(node.inputs[0])))
                if node.inputs[0] in host:
                    self.host_outputs.add(node.outputs[0])
                if not graph.consumers(node.outputs[0]):
                    continue
            if node.op in ("copy_to_host", "copy_to_device"):
                self.launches.append(Launch(node.name, node.op, _transfer(node.op, device, ledger),
                                            node.attrs, [where(node.inputs[0])],
                                            [where(node.outputs[0])], None, host=True))
            elif node.device == "host":
                self.launches.append(Launch(node.name, node.op, _host_kernel(node.op), node.attrs,
                                            [where(t) for t in node.inputs],
                                            [host[t] for t in node.outputs], None, host=True))
            elif not is_free(node, plan):
                self.launches.append(Launch(
                    node.name, node.op, device.kernel_for(node, graph), node.attrs,
                    [where(t) for t in node.inputs],
                    [views[t] for t in node.outputs], self._workspace(plan, arena, node.name)))
        # a step that writes parameters or statistics in place (training) runs whole even if
        # interrupted
        self.updates_state = any(get_op(launch.op).side_effect for launch in self.launches)

    @staticmethod
    def _workspace(plan, arena, node_name):
        block = plan.workspaces.get(node_name)
        if block is None:
            return None
        b = plan.blocks[block]
        return arena[b.offset: b.offset + b.size].view(np.float32)

    def run(self, check_finite: bool = False) -> None:
        """One step. With ``check_finite`` every launch's outputs are checked as they are made and
        the first node producing NaN or Inf is named (a debugging mode: slower, never captured)."""
        with deferred_interrupt() if self.updates_state else contextlib.nullcontext(), \
                np.errstate(all="ignore"):  # NaN/Inf are the model's business (see check_finite)
            if check_finite:
                self._run_checked()
                return
            # the device runs the step (the cuda device replays it as one CUDA graph)
            self.device.run_program(self)

    def _run_checked(self) -> None:
        for launch in self.launches:
            if launch.host and launch.op in ("copy_to_host", "copy_to_device"):
                launch.fn(launch.attrs, launch.inputs, launch.outputs, launch.workspace)
                continue
            launch.fn(launch.attrs, launch.inputs, launch.outputs, launch.workspace)
            for i, out in enumerate(launch.outputs):
                bad = int(out.size - self.device.count_finite(out)) if out.dtype.kind == "f" else 0
                if bad:
                    raise NumericsError(f"output {i} holds {bad} NaN or infinite values of "
                                        f"{out.size} (the first non-finite output of this step)",
                                        node=launch.node, op=launch.op)

    def __len__(self) -> int:
        return len(self.launches)


def _host_buffers(graph: Graph, batch: int) -> dict[str, np.ndarray]:
    """A host buffer for each tensor made on the host in the middle of a step (outputs of host
    nodes and of their device-to-host copies)."""
    out = {}
    for node in graph.nodes:
        if node.device == "host" and not (node.op == "copy_to_host" and node.outputs[0] in graph.outputs
                                          and not graph.consumers(node.outputs[0])):
            for t in node.outputs:
                spec = graph.specs[t]
                out[t] = np.empty(spec.concrete(batch), spec.dtype)
    return out


def _host_kernel(op: str) -> Callable:
    forward = get_op(op).forward

    def run(attrs, inputs, outputs, ws):
        forward(attrs, inputs, outputs)
    run.__name__ = f"host_{op}"
    return run


def _transfer(op: str, device: Device, ledger) -> Callable:
    """A copy node of the step: device to host (``DtoH``) or host to device (``HtoD``), counted."""
    kind, move = ("DtoH", device.to_host) if op == "copy_to_host" else ("HtoD", device.to_device)

    def run(attrs, inputs, outputs, ws):
        start = time.perf_counter()
        move(inputs[0], outputs[0])
        if ledger is not None:
            ledger.record(kind, inputs[0].nbytes, time.perf_counter() - start)
    run.__name__ = f"{kind}_copy"
    return run
