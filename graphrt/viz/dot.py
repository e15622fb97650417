"""DOT text of a :class:`~graphrt.viz.view.GraphView`, and Graphviz's ``dot`` to lay it out.

The DOT file draws what the SVG does: a box per node with its name and op; a fused node is a table
whose rows are the layers it absorbed (a box around boxes); copy nodes have their own colour; edges
are labelled with tensor shapes. Node ids are the view's (``n0``, ``n1``, ...), so the SVG that
``dot`` makes can be wired to the HTML page's side panel just like the built-in one.
"""
from __future__ import annotations

import math
import re
import shutil
import subprocess

from ..ir.errors import GraphrtError
from .svg import COLORS, box_geometry
from .text import FONT_FAMILY, escape, printable, text_width
from .view import GraphView

TIMEOUT_S = 120


class GraphvizError(GraphrtError):
    """Graphviz's ``dot`` is missing or failed."""


def dot_available() -> bool:
    return shutil.which("dot") is not None


def _q(*lines: str) -> str:
    """A DOT quoted string of printable text (backslashes and quotes escaped), its lines joined by
    DOT's line break."""
    return '"' + "\\n".join(printable(s).replace("\\", "\\\\").replace('"', '\\"')
                             for s in lines) + '"'


def _label(n) -> str:
    box = box_geometry(n)
    fill, stroke = COLORS[n.kind]
    title = "<BR/>".join(f"<B>{escape(t)}</B>" for t in box.title)
    # dot sizes text by its own font metrics, which can fall short of the browser's DejaVu Sans:
    # the cell asks for the width the page will draw (points are the SVG's px)
    width = max([text_width(t, 11, bold=True) for t in box.title] + [text_width(box.sub, 9)]
                + [text_width(r, 9) + 12 for r, _ in box.rows])
    cells = [f'<TR><TD BORDER="0" CELLPADDING="1" WIDTH="{math.ceil(width) + 8}">{title}</TD></TR>',
             f'<TR><TD BORDER="0" CELLPADDING="1"><FONT POINT-SIZE="9">{escape(box.sub)}</FONT></TD></TR>']
    for text, kind in box.rows:
        style = ' STYLE="dashed"' if kind == "elided" else ""
        cells.append(f'<TR><TD BGCOLOR="white" COLOR="{stroke}"{style}><FONT POINT-SIZE="9">'
                     f"{escape(text)}</FONT></TD></TR>")
    style = "rounded,dashed" if n.kind == "alias" or n.free else "rounded"
    return (f'<<TABLE BORDER="1" CELLBORDER="1" CELLSPACING="3" CELLPADDING="3" STYLE="{style}" '
            f'BGCOLOR="{fill}" COLOR="{stroke}">{"".join(cells)}</TABLE>>')


def to_dot(view: GraphView) -> str:
    """The view as Graphviz DOT text (see the module docstring)."""
    font = FONT_FAMILY.split(",")[0].strip("' ")
    lines = [f"digraph {_q(view.name)} {{",
             f'  graph [rankdir=TB, nodesep=0.3, ranksep=0.45, fontname={_q(font)}, '
             f'label={_q(f"{view.name} — {view.stage}")}, labelloc=t];',
             f"  node [shape=plain, fontname={_q(font)}, fontsize=11];",
             f'  edge [fontname={_q(font)}, fontsize=9, color="#8a8f98", fontcolor="#555555"];']
    for n in view.nodes:
        cls = f"tensor {n.kind}" if n.is_tensor else f"node {n.kind}"
        if n.is_tensor:
            fill, stroke = COLORS[n.kind]
            label = _q(n.name, box_geometry(n).sub)
            lines.append(f'  {n.id} [id={_q(n.id)}, class={_q(cls)}, shape=ellipse, style=filled, '
                         f'fillcolor="{fill}", color="{stroke}", label={label}, tooltip={_q(n.name)}];')
        else:
            lines.append(f"  {n.id} [id={_q(n.id)}, class={_q(cls)}, label={_label(n)}, "
                         f"tooltip={_q(n.name)}];")
    for i, e in enumerate(view.edges):
        lines.append(f"  {e.src} -> {e.dst} [id={_q(f'e{i}')}, label={_q(e.label)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def run_dot(dot_text: str, fmt: str, timeout_s: float = TIMEOUT_S) -> bytes:
    """``dot -T<fmt>`` of ``dot_text``; :class:`GraphvizError` when dot is absent, fails or takes
    longer than ``timeout_s``."""
    exe = shutil.which("dot")
    if exe is None:
        raise GraphvizError("Graphviz's 'dot' is not installed (apt-get install graphviz); "
                            "use the built-in layout instead")
    try:
        done = subprocess.run([exe, f"-T{fmt}"], input=dot_text.encode(), capture_output=True,
                              timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise GraphvizError(f"dot took more than {timeout_s:g} s; use the built-in layout") from None
    if done.returncode != 0:
        raise GraphvizError(f"dot failed: {done.stderr.decode(errors='replace').strip()[:500]}")
    return done.stdout


def dot_svg(view: GraphView, timeout_s: float = TIMEOUT_S) -> str:
    """The SVG ``dot`` draws for the view, as an ``<svg>`` element ready to inline in a page: no
    XML prolog, and every node group tagged with ``data-name`` like the built-in SVG."""
    svg = run_dot(to_dot(view), "svg", timeout_s).decode("utf-8")
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"<!--.*?-->", "", svg, flags=re.S)
    names = {n.id: n for n in view.nodes}

    def tag(m: re.Match) -> str:
        n = names.get(m.group(1))
        if n is None:
            return m.group(0)
        attr = "data-tensor" if n.is_tensor else "data-name"
        return f'<g id="{n.id}" class="{m.group(2)}" {attr}="{escape(n.name)}"'
    svg = re.sub(r'<g id="(n\d+)" class="([^"]*)"', tag, svg)
    return svg.replace("<svg ", '<svg class="graphrt-graph" ', 1)
