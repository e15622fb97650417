"""The self-contained HTML page of a graph stage: one file, no network.

The page inlines the SVG (Graphviz's when ``dot`` is installed, else the built-in layout), the
view's data as JSON, and its own CSS and JavaScript (:mod:`graphrt.viz.page`). Clicking a node
shows its op, attributes, input/output shapes, parameter sizes, arena offset and size, and measured
time (for a profiled run) in the side panel; the search box finds a node by name or by any source
layer it stands for. ``page.html#node=NAME`` opens with NAME selected.
"""
from __future__ import annotations

import json

from ..memory import format_bytes
from .page import PAGE_CSS, PAGE_JS
from .text import escape
from .view import GraphView


# nothing may be fetched: the page is one file
CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"


def header_facts(view: GraphView) -> list[str]:
    info = view.info
    facts = [f"{info['nodes']} nodes", f"{info['params']:,} parameters", f"batch {info['batch']}"]
    if "arena_bytes" in info:
        facts.append(f"arena {format_bytes(info['arena_bytes'])} "
                     f"(lower bound {format_bytes(info['lower_bound_bytes'])})")
    if "step_ms" in info:
        facts.append(f"step {info['step_ms']:.2f} ms (mean of {info['iterations']})")
    return facts


def to_html(view: GraphView, svg: str) -> str:
    """The page for ``view`` drawn as ``svg`` (an ``<svg>`` element from :mod:`~graphrt.viz.svg`
    or :func:`~graphrt.viz.dot.dot_svg`)."""
    if svg.startswith("<?xml"):
        svg = svg[svg.index("<svg"):]
    # inside <script> no "<" may appear at all ("<!--<script>" in a layer name would switch the
    # HTML parser into its double-escaped script state): every <, > and & as a JSON \u escape
    data = (json.dumps(view.to_json(), separators=(",", ":")).replace("<", "\\u003c")
            .replace(">", "\\u003e").replace("&", "\\u0026"))
    title = f"{view.name} — {view.stage}"
    orphans = ""
    if view.orphans:
        orphans = ('<div id="orphans">removed layers: '
                   + ", ".join(f"<span>{escape(o)}</span>" for o in view.orphans) + "</div>")
    legend = "".join(f'<span class="key {k}">{k}</span>'
                     for k in ("op", "fused", "copy", "host", "alias"))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<link rel="icon" href="data:,">
<title>{escape(title)} · graphrt</title>
<style>{PAGE_CSS}</style></head>
<body>
<header>
  <div class="name"><b>{escape(view.name)}</b> <span class="stage">{escape(view.stage)}</span></div>
  <div class="facts">{escape(" · ".join(header_facts(view)))}</div>
  <div class="tools">
    <input id="search" type="search" placeholder="find a node or layer…" list="names" autocomplete="off">
    <datalist id="names"></datalist>
    <span id="search-status"></span>
    <button id="zoom-out" title="zoom out">−</button><button id="zoom-in" title="zoom in">+</button>
    <button id="zoom-fit" title="show the whole graph">fit</button>
  </div>
  <div class="legend">{legend}</div>
  {orphans}
</header>
<main>
  <div id="canvas">{svg}</div>
  <div id="overview" hidden title="the whole graph: click or drag to move there">
    <div class="caption">overview</div><svg xmlns="http://www.w3.org/2000/svg"></svg></div>
  <aside id="panel"><p class="hint">Click a node to see its op, attributes, shapes, parameters and
  place in the memory arena.</p></aside>
</main>
<script type="application/json" id="graphrt-data">{data}</script>
<script>{PAGE_JS}</script>
</body></html>
"""
