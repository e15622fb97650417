"""A compiled program: the placed graph flattened into launches bound to arena views.

Compilation resolves, once per batch size, each node's kernel, attributes, input and output views
and workspace; running a step is a loop over that list — no graph walking, no shape inference, no
allocation. Nodes the memory plan made free (views: aliased concat/split, reshape/flatten of a
whole buffer) have no launch.
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Callable

import numpy as np

from ..devices.base import Device
from ..ops import get_op
from .interrupts import deferred_interrupt
from ..ir.errors import GraphrtError
from ..ir import Graph
from ..memory import INPUTS, MemoryPlan, make_views


class NumericsError(GraphrtError):
    """A node produced NaN or Inf (reported by ``check_finite``)."""


@dataclasses.dataclass
class Launch:
    node: str
    op: str
    fn: Callable
    attrs: Any
    inputs: list
    outputs: list
    workspace: Any


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
    """Launches for one batch size; ``inputs``/``outputs`` are (host tensor, device view) pairs."""

    def __init__(self, graph: Graph, plan: MemoryPlan, device: Device, arena, params: dict, batch: int,
                 slot: int = 0):
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
        self.launches: list[Launch] = []
        for name in plan.steps:
            node = graph.node(name)
            if node.op == "copy_to_device":
                self.inputs.append((node.inputs[0], views[node.outputs[0]]))
                self.input_offsets[node.inputs[0]] = plan.views[node.outputs[0]].offset
            elif node.op == "copy_to_host":
                self.outputs.append((node.outputs[0], views[node.inputs[0]]))
            elif not is_free(node, plan):
                self.launches.append(Launch(
                    node.name, node.op, device.kernel(node.op), node.attrs,
                    [params[t] if t in params else views[t] for t in node.inputs],
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
            launch.fn(launch.attrs, launch.inputs, launch.outputs, launch.workspace)
            for i, out in enumerate(launch.outputs):
                bad = int(out.size - self.device.count_finite(out)) if out.dtype.kind == "f" else 0
                if bad:
                    raise NumericsError(f"output {i} holds {bad} NaN or infinite values of "
                                        f"{out.size} (the first non-finite output of this step)",
                                        node=launch.node, op=launch.op)

    def __len__(self) -> int:
        return len(self.launches)
