"""Per-node times of a compiled program, for the HTML page of a profiled run.

:func:`time_nodes` copies one batch in, runs the program once untimed, then runs its launches one
at a time, synchronizing the device after each, ``iterations`` times; a node's time is its mean
over the iterations. The
launches are the same the executable runs (same kernels, same arena views), only timed one by one,
so the sum is close to, and a little above, a step's time.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable, Iterable

import numpy as np


@dataclasses.dataclass
class NodeTimes:
    """Mean seconds per node (launched nodes only) over ``iterations`` runs at ``batch``."""

    seconds: dict[str, float]
    iterations: int
    batch: int

    @property
    def step_seconds(self) -> float:
        return sum(self.seconds.values())


def time_nodes(exe, feeds: dict[str, np.ndarray], iterations: int = 3,
               progress: Callable[[Iterable], Iterable] | None = None) -> NodeTimes:
    """Time every launch of ``exe``'s program for the batch in ``feeds`` (see the module docstring).

    ``progress`` wraps the iteration range (a tqdm bar, say).
    """
    batch = len(next(iter(feeds.values()))) if feeds else 1
    program = exe.program(batch)
    device = exe.device
    for name, view in program.inputs:
        device.to_device(feeds[name], view)
    device.synchronize()
    program.run()  # once untimed: first touches of the arena and lazy kernel set-up are not the op's
    device.synchronize()
    totals = {launch.node: 0.0 for launch in program.launches}
    rounds = range(max(1, int(iterations)))
    for _ in (progress(rounds) if progress else rounds):
        for launch in program.launches:
            start = time.perf_counter()
            launch.fn(launch.attrs, launch.inputs, launch.outputs, launch.workspace)
            device.synchronize()
            totals[launch.node] += time.perf_counter() - start
    return NodeTimes({k: v / len(rounds) for k, v in totals.items()}, len(rounds), batch)
