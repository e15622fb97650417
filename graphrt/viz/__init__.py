"""Pictures of graphrt graphs: any stage as a self-contained HTML page, SVG, PNG or DOT, and the
memory plan as a PNG.

    from graphrt import viz
    view = viz.graph_view(graph, "optimized", batch=1)      # or "loaded", "placed", a pass name
    viz.write(view, "googlenet.html")                        # .html .svg .png .dot
    viz.plot_plan(graphrt.compile(graph).plan, "plan.png")

| module | does |
|---|---|
| ``stages`` | the graph as loaded, after each pass, optimized and placed (with the executable) |
| ``view`` | a stage annotated for drawing: shapes, parameters, arena places, times, absorbed layers |
| ``timing`` | per-node times of a compiled program (for pages of a profiled run) |
| ``layout`` | the pure-Python layered layout used when Graphviz's ``dot`` is absent |
| ``svg`` / ``dot`` / ``raster`` | built-in SVG; DOT text (and ``dot``'s SVG/PNG); matplotlib PNG |
| ``html`` / ``page`` | the one-file page: inlined SVG, data, CSS and script; no network |
| ``plan`` | the memory plan in (step, arena offset) space with its lower bound |

Graphviz and matplotlib are optional: without ``dot`` the built-in layout draws everything; PNGs
need matplotlib (``pip install 'graphrt[viz]'``) unless ``dot`` makes them.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Iterable

from ..ir.errors import GraphrtError
from ..ir import Graph
from ..ops.reference import random_feeds  # noqa: F401  (re-exported: viz.random_feeds)
from .dot import TIMEOUT_S as dot_timeout
from .dot import GraphvizError, dot_available, dot_svg, run_dot, to_dot
from .html import to_html
from .plan import largest_blocks, live_bytes, plan_figure, plot_plan
from .raster import graph_image
from .stages import FIXED, StageError, Stages, compile_stages
from .svg import to_svg
from .timing import NodeTimes, time_nodes
from .view import EdgeView, GraphView, NodeView, build_view

FORMATS = (".html", ".svg", ".png", ".dot", ".gv")
ENGINES = ("auto", "dot", "builtin")
AUTO_DOT_NODES = 400
AUTO_DOT_TIMEOUT_S = 30.0
log = logging.getLogger(__name__)

__all__ = ["graph_view", "write", "to_html", "to_svg", "to_dot", "plot_plan", "graph_image",
           "compile_stages", "build_view", "time_nodes", "GraphView", "NodeView", "EdgeView",
           "NodeTimes", "Stages", "StageError", "GraphvizError", "dot_available", "live_bytes",
           "plan_figure", "largest_blocks",
           "random_feeds", "FORMATS", "ENGINES", "FIXED"]


def graph_view(graph: Graph, stage: str = "optimized", *, device="cpu", batch: int = 1,
               opt_level: int = 3, profile: int = 0,
               progress: Callable[[Iterable], Iterable] | None = None) -> GraphView:
    """Compile ``graph`` and annotate it at ``stage`` (``loaded``, a pass name, ``optimized`` or
    ``placed``) with the executable's memory plan; with ``profile=N`` also run every node ``N``
    times on a random batch and show the mean times."""
    stages = compile_stages(graph, device=device, batch=batch, opt_level=opt_level)
    g = stages.get(stage)
    exe = stages.exe
    times = time_nodes(exe, random_feeds(graph, batch), profile, progress) if profile else None
    launched = None
    if stage in ("optimized", "placed"):
        launched = {launch.node for launch in exe.program(batch).launches}
    return build_view(g, stage, source=graph, plan=exe.plan, launched=launched, times=times)


def _engine(engine: str, view: GraphView) -> str:
    if engine not in ENGINES:
        raise GraphrtError(f"unknown layout engine {engine!r}; engines: {', '.join(ENGINES)}")
    if engine == "auto":  # dot's time grows fast with long edges: big graphs get the built-in one
        return "dot" if dot_available() and len(view.nodes) <= AUTO_DOT_NODES else "builtin"
    return engine


def _render(view: GraphView, ext: str, engine: str) -> str | bytes | None:
    """The file's content (None: a PNG the built-in renderer must draw itself)."""
    timeout = AUTO_DOT_TIMEOUT_S if engine == "auto" else dot_timeout
    engine = _engine(engine, view)
    if ext in (".dot", ".gv"):
        return to_dot(view)
    if engine == "dot":
        fmt = {".html": "svg", ".svg": "svg", ".png": "png"}[ext]
        try:
            if ext == ".html":
                return to_html(view, dot_svg(view, timeout))
            return run_dot(to_dot(view), fmt, timeout)
        except GraphvizError as err:
            if timeout != AUTO_DOT_TIMEOUT_S:
                raise
            log.warning("%s; drawing with the built-in layout instead", err)
    if ext == ".html":
        return to_html(view, to_svg(view, standalone=False))
    return to_svg(view) if ext == ".svg" else None


def write(view: GraphView, path: str | Path, *, engine: str = "auto") -> Path:
    """Write ``view`` to ``path`` in the format its extension names (:data:`FORMATS`); ``engine``
    picks the layout: Graphviz's ``dot``, the ``builtin`` one, or ``auto`` (dot when installed and
    the graph has at most :data:`AUTO_DOT_NODES` boxes; the built-in one if dot fails or is slow)."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in FORMATS:
        raise GraphrtError(f"cannot write {path.name!r}: the extension must be one of "
                           f"{', '.join(FORMATS)}", file=str(path))
    data = _render(view, ext, engine)
    if data is None:
        return graph_image(view, path)
    try:
        if isinstance(data, str):
            path.write_text(data, encoding="utf-8")
        else:
            path.write_bytes(data)
    except OSError as err:
        raise GraphrtError(f"cannot write the picture: {err.strerror}", file=str(path)) from None
    return path
