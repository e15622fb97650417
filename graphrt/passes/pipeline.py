"""Pass infrastructure: named passes with an opt level, a `Pipeline` run under a `PassContext`.

A pass is a pure function ``Graph -> Graph`` (it copies, never mutates its argument), registered with
:func:`register_pass` under a verb name and the lowest opt level that runs it. ``Pipeline`` runs its
passes in order, skipping those above ``ctx.opt_level`` or named in ``ctx.disabled``; in debug mode
it runs ``verify()`` after every pass. Instruments see each pass before and after it runs (model: TVM's
``PassInstrument``): :class:`PassTimer` times them, :class:`GraphDumper` keeps the DOT text after each.
An exception inside a pass is re-raised as :class:`PassError` naming the pass.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable, Iterable, Sequence

from ..ir.errors import GraphrtError
from ..ir import Graph
from ..ir.gcpause import gc_paused


class PassError(GraphrtError):
    """A pass failed or left an invalid graph; the message names the pass."""


@dataclasses.dataclass(frozen=True)
class Pass:
    name: str
    fn: Callable[[Graph], Graph]
    opt_level: int
    doc: str = ""

    def __call__(self, graph: Graph) -> Graph:
        return self.fn(graph)


PASSES: dict[str, Pass] = {}


def register_pass(name: str, opt_level: int):
    """Decorator: register ``fn`` as pass ``name`` run from ``opt_level`` up."""
    def wrap(fn):
        PASSES[name] = Pass(name, fn, opt_level, (fn.__doc__ or "").strip())
        return PASSES[name]
    return wrap


class PassInstrument:
    """Hooks called around every pass that runs."""

    def before(self, pass_: Pass, graph: Graph) -> None:
        pass

    def after(self, pass_: Pass, graph: Graph) -> None:
        pass


class PassTimer(PassInstrument):
    """Records the wall time of each pass: ``timer.times`` is a list of (pass name, seconds)."""

    def __init__(self):
        self.times: list[tuple[str, float]] = []
        self._start = 0.0

    def before(self, pass_, graph):
        self._start = time.perf_counter()

    def after(self, pass_, graph):
        self.times.append((pass_.name, time.perf_counter() - self._start))

    def table(self) -> str:
        return "\n".join(f"{name:28s} {sec * 1e3:8.2f} ms" for name, sec in self.times)


class GraphDumper(PassInstrument):
    """Keeps the graph as DOT text after each pass: ``dumper.dumps`` is a list of (pass name, dot)."""

    def __init__(self):
        self.dumps: list[tuple[str, str]] = []

    def after(self, pass_, graph):
        self.dumps.append((pass_.name, to_dot(graph)))


@dataclasses.dataclass
class PassContext:
    """Options for a pipeline run: the opt level, passes to skip, instruments, debug verification."""

    opt_level: int = 2
    disabled: Sequence[str] = ()
    instruments: Sequence[PassInstrument] = ()
    debug: bool = False


class Pipeline:
    """An ordered list of passes; ``Pipeline(["eliminate_dead_code", ...])(graph, ctx)``."""

    def __init__(self, passes: Iterable[str | Pass]):
        self.passes = [PASSES[p] if isinstance(p, str) else p for p in passes]

    @gc_paused
    def __call__(self, graph: Graph, ctx: PassContext | None = None) -> Graph:
        ctx = ctx or PassContext()
        unknown = [d for d in ctx.disabled if d not in PASSES]
        if unknown:
            raise PassError(f"unknown pass {unknown[0]!r} in disabled; passes: {', '.join(PASSES)}")
        for p in self.passes:
            if p.opt_level > ctx.opt_level or p.name in ctx.disabled:
                continue
            for inst in ctx.instruments:
                inst.before(p, graph)
            graph = _run_one(p, graph, ctx.debug)
            for inst in ctx.instruments:
                inst.after(p, graph)
        return graph

    def __repr__(self) -> str:
        return "Pipeline([" + ", ".join(p.name for p in self.passes) + "])"


def _run_one(p: Pass, graph: Graph, debug: bool) -> Graph:
    try:
        out = p(graph)
        if debug:
            out.verify()
        return out
    except GraphrtError as err:
        raise PassError(f"pass {p.name!r} failed: {err}") from err
    except Exception as err:  # a bug in a pass: still say which pass
        raise PassError(f"pass {p.name!r} failed: {type(err).__name__}: {err}") from err


def to_dot(graph: Graph) -> str:
    """The graph as Graphviz DOT text: one box per node, edges labelled with tensor shapes."""
    def q(s: str) -> str:
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = [f"digraph {q(graph.name)} {{", "  rankdir=TB; node [shape=box, fontsize=10];"]
    for t in graph.inputs:
        lines.append(f"  {q('in:' + t)} [label={q(t + chr(10) + str(graph.specs[t]))}, shape=ellipse];")
    for node in graph.nodes:
        label = f"{node.name}\\n{node.op}" + (f" [{node.device}]" if node.device else "")
        if node.absorbed:
            label += "\\n+ " + ", ".join(node.absorbed)
        lines.append(f"  {q(node.name)} [label=\"{label}\"];")
        for t in node.inputs:
            src = graph.producer(t)
            if src is not None:
                lines.append(f"  {q(src.name)} -> {q(node.name)} [label={q(str(graph.specs[t]))}];")
            elif t in graph.inputs:
                lines.append(f"  {q('in:' + t)} -> {q(node.name)};")
    lines.append("}")
    return "\n".join(lines)


def each_node(graph: Graph, reverse: bool = False):
    """The nodes in topological order (or its reverse) as of the call, each fetched fresh and skipped
    once removed, so a pass may rewrite the graph while it walks it."""
    order = graph.topological_order()
    for name in reversed(order) if reverse else order:
        if name in graph.nx:
            yield graph.node(name)


def add_derived_param(graph: Graph, base: str, value, like: str | None = None) -> str:
    """Add a parameter computed by a pass under a fresh name, with ``like``'s training metadata."""
    name = base if base not in graph.specs else graph.unique_name(base)
    info = graph.param_info.get(like) if like else None
    graph.add_param(name, value, lr_mult=info.lr_mult if info else 1.0,
                    decay_mult=info.decay_mult if info else 1.0)
    return name


def constant_param(graph: Graph, tensor: str) -> bool:
    """True for a parameter no op of the graph updates in place: passes may fold it into another
    (a training step's weights are rewritten every step and must stay where the update writes)."""
    from ..ops import get_op

    if tensor not in graph.params:
        return False
    for node in graph.consumers(tensor):  # only a node reading the parameter can write it
        writes = get_op(node.op).writes
        if any(node.inputs[i] == tensor for i in writes if i < len(node.inputs)):
            return False
    return True
