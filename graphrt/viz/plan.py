"""A picture of a :class:`~graphrt.memory.MemoryPlan`: buffers as rectangles in (step, offset) space.

Each arena block is a rectangle spanning the steps it is live (x) and its bytes (y, from its
offset); colour says its kind (activation, input slot, workspace). The grey staircase is the bytes
live at each step; its maximum is the plan's lower bound (dashed red line) — no plan of these
buffers can be smaller — and the solid black line is the arena the plan actually uses. The x axis
names the node each step runs (every step, or evenly spaced ones when there are more than fit), and
the :data:`LABELLED` largest blocks carry a number (1: the largest) that a column right of the plot
explains: name, size and live steps. matplotlib draws it (the ``viz`` extra); any extension
matplotlib writes works (``.png``, ``.svg``, ``.pdf``).

    plot_plan(exe.plan, "plan.png", title="GoogLeNet, batch 1")
"""
from __future__ import annotations

from pathlib import Path

from ..ir.errors import GraphrtError
from ..memory import format_bytes

KIND_COLORS = {"activation": "#4a7fc1", "input": "#3a9d5d", "workspace": "#e08a2c"}
LABELLED = 12  # blocks numbered and named, largest first
TICK_PX = 11   # pixels per x tick label (rotated, 7-point text)


def _matplotlib():
    """matplotlib's pieces, without pyplot (so no global backend is touched)."""
    try:
        from matplotlib.collections import PatchCollection
        from matplotlib.figure import Figure
        from matplotlib.patches import Patch, Rectangle
    except ImportError:
        raise GraphrtError("drawing needs matplotlib: pip install 'graphrt[viz]'") from None
    return Figure, PatchCollection, Patch, Rectangle


def _unit(nbytes: int) -> tuple[float, str]:
    for scale, name in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if nbytes >= 4 * scale:
            return float(scale), name
    return 1.0, "bytes"


def live_bytes(plan) -> list[int]:
    """Bytes of the blocks live at each step (its maximum is ``plan.lower_bound_bytes``)."""
    return [sum(b.size for b in plan.blocks.values() if b.start <= i <= b.end)
            for i in range(len(plan.steps))]


def largest_blocks(plan, count: int = LABELLED) -> list:
    """The ``count`` largest blocks (ties by name), the ones the picture names."""
    return sorted(plan.blocks.values(), key=lambda b: (-b.size, b.name))[:count]


def plan_figure(plan, *, title: str | None = None, dpi: int = 100,
                size: tuple[float, float] = (15.0, 8.0)):
    """The picture of ``plan`` as a matplotlib ``Figure`` (see the module docstring)."""
    Figure, PatchCollection, Patch, Rectangle = _matplotlib()
    scale, unit = _unit(max(plan.arena_bytes, 1))
    fig = Figure(figsize=size, dpi=dpi)
    ax = fig.add_axes((0.06, 0.30, 0.66, 0.62))
    rects, colors = [], []
    for b in sorted(plan.blocks.values(), key=lambda b: (b.start, b.offset)):
        rects.append(Rectangle((b.start, b.offset / scale), b.end - b.start + 1, b.size / scale))
        colors.append(KIND_COLORS.get(b.kind, "#888888"))
    ax.add_collection(PatchCollection(rects, facecolor=colors, edgecolor="white", linewidth=0.4, alpha=0.9))
    live = live_bytes(plan)
    ax.step(range(len(live) + 1), [v / scale for v in live] + [live[-1] / scale if live else 0],
            where="post", color="#555555", linewidth=1.0, alpha=0.7, label="live bytes per step")
    ax.axhline(plan.lower_bound_bytes / scale, color="#d62728", linestyle="--", linewidth=1.6,
               label=f"lower bound {format_bytes(plan.lower_bound_bytes)}")
    ax.axhline(plan.arena_bytes / scale, color="black", linewidth=1.2,
               label=f"arena {format_bytes(plan.arena_bytes)}")
    ax.set_xlim(0, max(len(plan.steps), 1))
    ax.set_ylim(0, max(plan.arena_bytes, plan.lower_bound_bytes, 1) / scale * 1.08)
    ax.set_ylabel(f"arena offset ({unit})")
    _step_ticks(ax, plan.steps, fig.get_figwidth() * dpi * 0.66)
    ax.set_xlabel("step: the node it runs (schedule order)")
    _label_largest(ax, plan, scale)
    ratio = plan.arena_bytes / max(plan.lower_bound_bytes, 1)
    ax.set_title(title or f"memory plan at batch {plan.batch}: arena {format_bytes(plan.arena_bytes)} = "
                          f"{ratio:.3f} × lower bound; naive {format_bytes(plan.naive_bytes)}", fontsize=11)
    handles, _ = ax.get_legend_handles_labels()
    kinds = sorted({b.kind for b in plan.blocks.values()})
    handles += [Patch(color=KIND_COLORS.get(k, "#888888"), label=f"{k} buffer") for k in kinds]
    fig.legend(handles=handles, loc="lower right", ncol=3, fontsize=9, frameon=False)
    ax.grid(axis="y", alpha=0.25)
    return fig


def _step_ticks(ax, steps: list[str], width_px: float) -> None:
    """Name the node of every step, or of evenly spaced steps when not all fit."""
    every = max(1, -(-len(steps) * TICK_PX // max(int(width_px), 1)))
    shown = list(range(0, len(steps), every))
    ax.set_xticks([i + 0.5 for i in shown])
    ax.set_xticklabels([_short(steps[i], 28) for i in shown], rotation=90, fontsize=7)


def _short(text: str, most: int) -> str:
    return text if len(text) <= most else text[:most - 1] + "…"


def _label_largest(ax, plan, scale: float) -> None:
    """Number the largest blocks on their rectangles (1: the largest) and name them, with their size
    and live steps, in that order in a column right of the plot."""
    for i, b in enumerate(largest_blocks(plan), start=1):
        ax.text(b.start + (b.end - b.start + 1) / 2, (b.offset + b.size / 2) / scale, str(i),
                ha="center", va="center", fontsize=7, gid=f"block-number-{i}",
                bbox={"boxstyle": "circle,pad=0.2", "facecolor": "white", "edgecolor": "#333333",
                      "linewidth": 0.6})
        ax.text(1.02, 1 - (i - 0.5) / (LABELLED + 1), f"{i:>2d}  {_short(b.name, 36)}\n"
                f"     {format_bytes(b.size)}, steps {b.start}–{b.end}", transform=ax.transAxes,
                fontsize=8, va="center", ha="left", gid=f"block-label-{i}")
    ax.text(1.02, 1.0, f"the {min(LABELLED, len(plan.blocks))} largest buffers", transform=ax.transAxes,
            fontsize=9, va="bottom", ha="left", weight="bold")


def plot_plan(plan, path: str | Path, *, title: str | None = None, dpi: int = 100,
              size: tuple[float, float] = (15.0, 8.0)) -> Path:
    """Draw ``plan`` to ``path`` (see the module docstring); returns the path."""
    path = Path(path)
    fig = plan_figure(plan, title=title, dpi=dpi, size=size)
    try:
        fig.savefig(path)
    except (ValueError, OSError) as err:  # an extension matplotlib cannot write, an unwritable path
        raise GraphrtError(f"cannot write the plan picture: {err}", file=str(path)) from None
    return path
