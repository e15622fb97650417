"""The stages a graph goes through on its way to an executable, each one a :class:`Graph` to draw.

``loaded`` is the graph as the frontend built it; then one stage per pass that ran (named after the
pass: the graph right after it); ``optimized`` is the last of those; ``placed`` is the optimized
graph put on the device with its explicit copy nodes (exactly the executable's ``exe.graph`` when
it comes from :func:`compile_stages`).

    stages = compile_stages(graph, device="cpu", batch=1, opt_level=3)
    stages.graphs["fold_batchnorm"], stages.exe.plan
"""
from __future__ import annotations

import dataclasses

from ..ir.errors import GraphrtError
from ..ir import Graph
from ..passes import PassInstrument, optimize

FIXED = ("loaded", "optimized", "placed")


class StageError(GraphrtError):
    """An unknown stage name was asked for."""


class _Keep(PassInstrument):
    """Keeps the graph after every pass (passes copy, so each one is a snapshot)."""

    def __init__(self):
        self.graphs: dict[str, Graph] = {}

    def after(self, pass_, graph):
        self.graphs[pass_.name] = graph


@dataclasses.dataclass
class Stages:
    """The graph at every stage, in pipeline order, and the executable compiled from it."""

    graphs: dict[str, Graph]
    exe: "object"  # graphrt.Executable (imported lazily: viz sits downstream of the scheduler)

    def names(self) -> list[str]:
        return list(self.graphs)

    def get(self, stage: str) -> Graph:
        """The graph at ``stage``; a :class:`StageError` lists the valid names otherwise."""
        if stage not in self.graphs:
            raise StageError(f"unknown stage {stage!r}; stages: {', '.join(self.graphs)}")
        return self.graphs[stage]


def compile_stages(graph: Graph, *, device="cpu", batch: int = 1, opt_level: int = 3) -> Stages:
    """Compile ``graph`` and collect the graph at every stage (see the module docstring)."""
    from ..scheduler import compile as compile_graph

    keep = _Keep()
    optimized = optimize(graph, opt_level, instruments=[keep])
    exe = compile_graph(graph, device=device, batch_size=batch, opt_level=opt_level)
    graphs = {"loaded": graph, **keep.graphs, "optimized": optimized, "placed": exe.graph}
    return Stages(graphs, exe)
