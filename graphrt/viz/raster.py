"""A PNG (or any matplotlib format) of a graph view drawn with the built-in layout, for machines
without Graphviz: the same boxes, inner rows, colours and edge labels as :mod:`graphrt.viz.svg`."""
from __future__ import annotations

from pathlib import Path

from ..ir.errors import GraphrtError
from .plan import _matplotlib
from .svg import COLORS, LABEL, LINE, PAD, ROW, ROWH, SUB, SUBLINE, TITLE, label_positions, layout_view
from .text import text_width
from .view import GraphView

MAX_PIXELS = 30000  # Agg refuses images above 2**16 pixels a side


def _curve(route):
    """matplotlib path vertices and codes for the SVG renderer's curve through ``route``."""
    from matplotlib.path import Path as MplPath

    verts, codes = [route[0]], [MplPath.MOVETO]
    for (px, py), (qx, qy) in zip(route, route[1:]):
        if abs(px - qx) < 0.5:
            verts.append((qx, qy))
            codes.append(MplPath.LINETO)
        else:
            my = (py + qy) / 2
            verts += [(px, my), (qx, my), (qx, qy)]
            codes += [MplPath.CURVE4] * 3
    return MplPath(verts, codes)


def graph_image(view: GraphView, path: str | Path, *, dpi: int = 100) -> Path:
    """Draw ``view`` to ``path`` with matplotlib; returns the path."""
    Figure, _, _, _ = _matplotlib()
    from matplotlib.patches import Ellipse, FancyBboxPatch, PathPatch, Polygon

    path = Path(path)
    boxes, layout = layout_view(view)
    labels = label_positions(view, layout)
    width = max([layout.width] + [x + (text_width(t, LABEL) if a == "start" else 0) + 8
                                  for t, x, _, a in labels])
    scale = min(1.0, MAX_PIXELS / max(width, layout.height, 1))
    fig = Figure(figsize=(width * scale / dpi, layout.height * scale / dpi), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(layout.height, 0)
    ax.axis("off")
    pt = 72.0 / dpi * scale  # points per layout pixel

    for route in layout.routes:
        ax.add_patch(PathPatch(_curve(route), fill=False, edgecolor="#8a8f98", linewidth=1.2 * pt))
        x, y = route[-1]
        ax.add_patch(Polygon([(x - 4, y - 8), (x + 4, y - 8), (x, y)], closed=True, color="#8a8f98"))
    for text, x, y, anchor in labels:
        ax.text(x, y, text, fontsize=LABEL * pt, color="#555555", ha="left" if anchor == "start" else "right",
                va="baseline", parse_math=False,  # a "$" in a name is text, not mathtext
                bbox=dict(facecolor="white", edgecolor="none", pad=0.5))
    for n in view.nodes:
        cx, top, w, h = layout.boxes[n.id]
        box = boxes[n.id]
        fill, stroke = COLORS[n.kind]
        style = "--" if n.kind == "alias" or n.free else "-"
        if n.is_tensor:
            ax.add_patch(Ellipse((cx, top + h / 2), w, h, facecolor=fill, edgecolor=stroke,
                                 linewidth=pt * 1.2))
        else:
            ax.add_patch(FancyBboxPatch((cx - w / 2, top), w, h, boxstyle="round,pad=0,rounding_size=5",
                                        facecolor=fill, edgecolor=stroke, linewidth=pt * 1.2,
                                        linestyle=style))
        y = top + PAD + (3 if n.is_tensor else 0)
        for line in box.title:
            y += LINE
            ax.text(cx, y - 3, line, fontsize=TITLE * pt, fontweight="bold", ha="center", va="baseline", parse_math=False)
        y += SUBLINE
        ax.text(cx, y - 3, box.sub, fontsize=SUB * pt, color="#444444", ha="center", va="baseline", parse_math=False)
        y += 4
        for text, kind in box.rows:
            ax.add_patch(FancyBboxPatch((cx - w / 2 + PAD, y), w - 2 * PAD, ROWH - 3,
                                        boxstyle="round,pad=0,rounding_size=3", facecolor="white",
                                        edgecolor="#999999" if kind != "member" else "#c9a544",
                                        linewidth=pt, linestyle="--" if kind == "elided" else "-"))
            ax.text(cx, y + ROWH - 7, text, fontsize=ROW * pt, color="#333333", ha="center", va="baseline", parse_math=False)
            y += ROWH
    try:
        fig.savefig(path, facecolor="white")
    except (ValueError, OSError) as err:
        raise GraphrtError(f"cannot write the picture: {err}", file=str(path)) from None
    return path
