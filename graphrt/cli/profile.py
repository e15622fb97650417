"""``graphrt profile``: where a step's time goes — every launched node's time (the slowest first, with
the source layers it stands for) — and the host<->device copies per mode (the seed's NVIDIA profile
table; ``--naive`` adds the per-op copy mode for comparison)."""
from __future__ import annotations

import json
from pathlib import Path

from .common import device_of, load_model, out_path, progress, random_batch


def copy_counts(exe, graph, iterations: int, batch: int, device: str, naive: bool) -> dict:
    """Run ``iterations`` batches through ``exe``'s prefetch pipeline (and the naive per-op mode)
    and return the ledgers' summaries keyed by mode."""
    from ..scheduler.naive import NaiveExecutable

    batches = [random_batch(graph, batch, seed=i) for i in range(iterations)]
    exe.ledger.reset()
    for _ in progress(exe.stream(batches), "graphrt", total=iterations):
        pass
    results = {"graphrt": exe.ledger.summary()}
    if naive:
        slow = NaiveExecutable(graph, device)
        for x in progress(batches, "naive"):
            slow(x)
        results["naive"] = slow.ledger.summary()
    return results


def layer_rows(graph, times) -> list[dict]:
    """One row per launched node of ``graph``, slowest first: its op, the source layers it stands
    for, mean milliseconds and share of the step."""
    step = times.step_seconds or 1.0
    rows = []
    for name, seconds in times.seconds.items():
        node = graph.node(name)
        own = node.source.layer if node.source is not None and node.source.layer else name
        layers = list(dict.fromkeys([own, *node.absorbed])) if node.absorbed else [own]
        rows.append({"node": name, "op": node.op, "layers": layers, "ms": seconds * 1e3,
                     "percent": 100.0 * seconds / step})
    return sorted(rows, key=lambda r: -r["ms"])


def format_profile(report: dict, shown: int) -> str:
    """The per-layer table (the ``shown`` slowest; 0: all) and the copy table, as text."""
    rows = report["layers"] if shown == 0 else report["layers"][:shown]
    lines = [f"== per-node times: batch {report['batch']}, mean of {report['iterations']} runs, "
             f"step {report['step_ms']:.3f} ms ==",
             f"{'ms':>9s} {'%':>6s}  {'op':16s} node (source layers)"]
    for r in rows:
        layers = ", ".join(r["layers"])
        extra = f" ({layers})" if layers != r["node"] else ""
        lines.append(f"{r['ms']:9.3f} {r['percent']:6.1f}  {r['op']:16s} {r['node']}{extra}")
    if len(rows) < len(report["layers"]):
        lines.append(f"  ... {len(report['layers']) - len(rows)} more nodes (--layers 0 shows all)")
    return "\n".join(lines) + "\n" + format_copies(report["copies"])


def format_copies(copies: dict) -> str:
    """The seed's copy table per mode: ``{mode: ledger.summary()}`` as text."""
    lines = []
    for mode, summary in copies.items():
        lines.append(f"== copies: {mode} ==")
        lines.append(f"{'copy':6s} {'invocations':>12s} {'total MB':>10s} {'avg GB/s':>10s} "
                     f"{'duration ms':>12s}")
        for kind, r in summary.items():
            gbs = r["bytes"] / r["seconds"] / 1e9 if r["seconds"] > 0 else 0.0
            lines.append(f"{kind:6s} {r['invocations']:12d} {r['bytes'] / 1e6:10.3f} {gbs:10.2f} "
                         f"{r['seconds'] * 1e3:12.3f}")
    return "\n".join(lines)


def cmd_profile(args) -> int:
    from .. import viz

    html = out_path(args.html, (".html",), "the profile page") if args.html else None
    graph = load_model(args)
    stages = viz.compile_stages(graph, device=device_of(args), batch=args.batch, opt_level=args.opt_level)
    exe = stages.exe
    copies = copy_counts(exe, graph, args.iterations, args.batch, exe.device, naive=args.naive)
    times = viz.time_nodes(exe, random_batch(graph, args.batch), args.iterations,
                           lambda r: progress(r, "per-node times"))
    report = {"model": graph.name, "batch": args.batch, "iterations": times.iterations,
              "step_ms": times.step_seconds * 1e3, "layers": layer_rows(exe.graph, times),
              "copies": copies}
    if html:
        launched = {launch.node for launch in exe.program(args.batch).launches}
        view = viz.build_view(stages.get("optimized"), "optimized", source=graph, plan=exe.plan,
                              launched=launched, times=times)
        viz.write(view, html)
    if args.json == "-":
        print(json.dumps(report))
        return 0
    print(format_profile(report, args.layers) + (f"\nper-node times on the page: {html}" if html else ""))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0
