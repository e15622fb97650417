"""``graphrt viz`` (a graph stage as HTML, SVG, PNG or DOT) and ``graphrt plan`` (the memory plan as
a picture)."""
from __future__ import annotations

from ..ir.errors import GraphrtError
from .common import device_of, emit, load_model, out_path, progress


def cmd_viz(args) -> int:
    from .. import viz
    from ..passes import PASSES

    out = out_path(args.output, viz.FORMATS, "the graph")
    if args.graph_stage not in viz.FIXED and args.graph_stage not in PASSES:
        raise GraphrtError(f"unknown stage {args.graph_stage!r}; stages: {', '.join(viz.FIXED)} or a pass "
                           f"name ({', '.join(p for p in PASSES if p != 'place')})")
    graph = load_model(args)
    view = viz.graph_view(graph, args.graph_stage, device=device_of(args), batch=args.batch,
                          opt_level=args.opt_level, profile=args.profile,
                          progress=lambda r: progress(r, "per-node times"))
    viz.write(view, out, engine=args.layout)
    report = {"output": str(out), "stage": args.graph_stage,
              "nodes": sum(not n.is_tensor for n in view.nodes),
              "layers": sorted({layer for n in view.nodes if not n.is_tensor for layer in n.layers()})}
    emit(args, report, f"wrote {out} ({report['nodes']} nodes, stage {args.graph_stage})")
    return 0


def cmd_plan(args) -> int:
    import graphrt
    from ..memory import format_bytes
    from ..viz import plot_plan

    out = out_path(args.output, (".png", ".svg", ".pdf"), "the plan picture")
    graph = load_model(args)
    exe = graphrt.compile(graph, device=device_of(args), batch_size=args.batch, opt_level=args.opt_level)
    plan = exe.plan
    sizes = {k: format_bytes(getattr(plan, k)) for k in ("arena_bytes", "lower_bound_bytes", "naive_bytes")}
    plot_plan(plan, out,
              title=f"{graph.name} memory plan, batch {args.batch}: arena {sizes['arena_bytes']}, lower "
                    f"bound {sizes['lower_bound_bytes']}, naive {sizes['naive_bytes']}")
    report = {"output": str(out), "model": graph.name, "batch": args.batch,
              "arena_bytes": plan.arena_bytes, "lower_bound_bytes": plan.lower_bound_bytes,
              "naive_bytes": plan.naive_bytes, "blocks": len(plan.blocks), "steps": len(plan.steps)}
    emit(args, report, f"arena {sizes['arena_bytes']} = "
         f"{plan.arena_bytes / max(plan.lower_bound_bytes, 1):.3f} x lower bound "
         f"{sizes['lower_bound_bytes']} (naive {sizes['naive_bytes']}); wrote {out}")
    return 0
