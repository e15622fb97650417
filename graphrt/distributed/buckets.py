"""Gradient buckets: one ``all_reduce`` node per few megabytes of gradients.

:func:`bucket_gradients` is the ``reduce_gradients`` hook of ``training_graph``: it groups the
gradients — last layer first, the order the backward finishes them — into buckets of one dtype and
at most ``bucket_bytes`` (a larger gradient gets a bucket of its own), appends one ``all_reduce``
(``op="mean"``) per bucket and hands the updates the reduced gradients. The memory plan lays each
bucket out as one arena range the gradients are written into (``graphrt.memory.planner``), so the
reduction is one in-place call per bucket, with no packing copy.
"""
from __future__ import annotations

import dataclasses


from ..ir import Graph

DEFAULT_BUCKET_BYTES = 25 * 2**20  # PyTorch DDP's bucket_cap_mb


@dataclasses.dataclass(frozen=True)
class Bucket:
    """One all-reduce: its node, the parameters whose gradients it holds and its bytes."""

    node: str
    params: tuple
    nbytes: int


def plan_buckets(graph: Graph, grads: dict[str, str], bucket_bytes: int) -> list[list[str]]:
    """Parameters grouped into buckets (see the module docstring)."""
    buckets: list[list[str]] = []
    open_by_dtype: dict[str, tuple[list[str], int]] = {}
    for p in reversed(list(grads)):
        spec = graph.specs[grads[p]]
        size = spec.nbytes(1)
        current, used = open_by_dtype.get(spec.dtype, (None, 0))
        if current is None or used + size > bucket_bytes:
            current, used = [], 0
            buckets.append(current)
        current.append(p)
        open_by_dtype[spec.dtype] = (current, used + size)
    return buckets


def bucket_gradients(graph: Graph, grads: dict[str, str], bucket_bytes: int = DEFAULT_BUCKET_BYTES,
                     group: str = "world", record: list | None = None) -> dict[str, str]:
    """Append the buckets' ``all_reduce`` nodes to ``graph`` (in place); return param -> reduced
    gradient. ``record`` (a list) receives a :class:`Bucket` per node."""
    reduced = dict(grads)
    for k, params in enumerate(plan_buckets(graph, grads, bucket_bytes)):
        name = f"grad_bucket{k}" if f"grad_bucket{k}" not in graph.nx else graph.unique_name("grad_bucket")
        outs = graph.add_node("all_reduce", [grads[p] for p in params], name=name,
                              attrs={"count": len(params), "group": group, "op": "mean"})
        for p, out in zip(params, outs[1:]):
            reduced[p] = out
        if record is not None:
            record.append(Bucket(name, tuple(params), graph.specs[outs[0]].nbytes(1)))
    return reduced


def bucket_table(buckets: list[Bucket]) -> str:
    """One line per bucket: name, parameters and bytes."""
    return "\n".join(f"{b.node}: {len(b.params)} gradients, {b.nbytes} bytes "
                     f"({b.nbytes / 2**20:.2f} MiB): {', '.join(b.params)}" for b in buckets)


