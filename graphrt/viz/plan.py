"""A picture of a :class:`~graphrt.memory.MemoryPlan`: buffers as rectangles in (step, offset) space.

Each arena block is a rectangle spanning the steps it is live (x) and its bytes (y, from its
offset); colour says its kind (activation, input slot, workspace). The grey staircase is the bytes
live at each step; its maximum is the plan's lower bound (dashed red line) — no plan of these
buffers can be smaller — and the solid black line is the arena the plan actually uses. matplotlib
draws it (the ``viz`` extra); any extension matplotlib writes works (``.png``, ``.svg``, ``.pdf``).

    plot_plan(exe.plan, "plan.png", title="GoogLeNet, batch 1")
"""
from __future__ import annotations

from pathlib import Path

from ..ir.errors import GraphrtError

KIND_COLORS = {"activation": "#4a7fc1", "input": "#3a9d5d", "workspace": "#e08a2c"}


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


def plot_plan(plan, path: str | Path, *, title: str | None = None, dpi: int = 100,
              size: tuple[float, float] = (14.0, 7.0)) -> Path:
    """Draw ``plan`` to ``path`` (see the module docstring); returns the path."""
    Figure, PatchCollection, Patch, Rectangle = _matplotlib()
    path = Path(path)
    scale, unit = _unit(max(plan.arena_bytes, 1))
    steps = max(len(plan.steps), 1)
    fig = Figure(figsize=size, dpi=dpi)
    ax = fig.subplots()
    try:
        rects, colors = [], []
        for b in sorted(plan.blocks.values(), key=lambda b: (b.start, b.offset)):
            rects.append(Rectangle((b.start, b.offset / scale), b.end - b.start + 1, b.size / scale))
            colors.append(KIND_COLORS.get(b.kind, "#888888"))
        ax.add_collection(PatchCollection(rects, facecolor=colors, edgecolor="white", linewidth=0.4,
                                          alpha=0.9))
        _label_big_blocks(ax, plan, scale, steps)
        live = live_bytes(plan)
        ax.step(range(len(live) + 1), [v / scale for v in live] + [live[-1] / scale if live else 0],
                where="post", color="#555555", linewidth=1.0, alpha=0.7, label="live bytes per step")
        ax.axhline(plan.lower_bound_bytes / scale, color="#d62728", linestyle="--", linewidth=1.6,
                   label=f"lower bound {plan.lower_bound_bytes / scale:.2f} {unit}")
        ax.axhline(plan.arena_bytes / scale, color="black", linewidth=1.2,
                   label=f"arena {plan.arena_bytes / scale:.2f} {unit}")
        ax.set_xlim(0, steps)
        ax.set_ylim(0, max(plan.arena_bytes, plan.lower_bound_bytes, 1) / scale * 1.08)
        ax.set_xlabel("step (node in schedule order)")
        ax.set_ylabel(f"arena offset ({unit})")
        ratio = plan.arena_bytes / max(plan.lower_bound_bytes, 1)
        ax.set_title(title or f"memory plan at batch {plan.batch}: arena {plan.arena_bytes / scale:.2f} "
                              f"{unit} = {ratio:.3f} × lower bound; "
                              f"naive {plan.naive_bytes / scale:.2f} {unit}")
        handles, _ = ax.get_legend_handles_labels()
        kinds = sorted({b.kind for b in plan.blocks.values()})
        handles += [Patch(color=KIND_COLORS.get(k, "#888888"), label=k) for k in kinds]
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False)
        ax.grid(axis="y", alpha=0.25)
        fig.tight_layout()
        fig.savefig(path)
    except (ValueError, OSError) as err:  # an extension matplotlib cannot write, an unwritable path
        raise GraphrtError(f"cannot write the plan picture: {err}", file=str(path)) from None
    return path


def _label_big_blocks(ax, plan, scale: float, steps: int) -> None:
    """Name the blocks big enough to hold a label (cut to the characters that fit)."""
    height = max(plan.arena_bytes, 1)
    width_px = ax.get_figure().get_figwidth() * ax.get_figure().dpi * 0.8
    for b in plan.blocks.values():
        fits = int((b.end - b.start + 1) / steps * width_px / 6.5)
        if b.size / height > 0.05 and fits >= 6:
            name = b.name if len(b.name) <= fits else b.name[:fits - 1] + "…"
            ax.text(b.start + (b.end - b.start + 1) / 2, (b.offset + b.size / 2) / scale, name,
                    ha="center", va="center", fontsize=7, color="white", clip_on=True)
