"""Random graphs: every optimization level compiled on the cpu device equals the reference executor;
verify() holds after every pass; every pass is idempotent; no two live buffers share a byte."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

import graphrt
from graphrt.memory import plan_memory
from graphrt.passes import OPTIMIZE, PASSES, optimize, place_on
from graphrt.testing import assert_equivalent, inception_graphs, sequential_graphs

graphs = st.one_of(sequential_graphs(max_nodes=8), inception_graphs(max_blocks=2))


@given(graphs, st.integers(1, 3))
@settings(max_examples=30)
def test_compiled_equals_reference_at_every_level(graph, batch):
    assert_equivalent(graph, opt_levels=(0, 1, 2, 3), devices=["cpu"], batch=batch)


def _snapshot(g):
    return ([(n.name, n.op, n.inputs, n.outputs, dict(n.attrs), n.absorbed) for n in g.nodes],
            sorted(g.params), list(g.outputs))


@given(graphs)
def test_every_pass_verifies_and_is_idempotent(graph):
    for name in OPTIMIZE + ["place"]:
        once = PASSES[name](graph)
        once.verify()
        assert _snapshot(PASSES[name](once)) == _snapshot(once), name
        graph = once


@given(graphs, st.integers(1, 4), st.integers(0, 3))
def test_no_two_live_buffers_share_a_byte(graph, batch, level):
    placed = place_on(optimize(graph, level), "cpu")
    from graphrt.devices.cpu import CpuDevice

    plan = plan_memory(placed, batch, workspace=CpuDevice().workspace_bytes)
    plan.check()
    assert plan.lower_bound_bytes <= plan.arena_bytes <= plan.naive_bytes


def test_deliberately_wrong_rewrite_is_caught_and_named():
    """A batch-norm fold with a mis-scaled weight must fail with the fused node named."""
    import numpy as np
    import pytest

    from graphrt.passes import fold_batchnorm as module

    g = graphrt.Graph("bn")
    x = g.add_input("x", (None, 2, 5, 5))
    rng = np.random.default_rng(0)
    w = g.add_param("c_w", rng.standard_normal((3, 2, 3, 3)).astype("f4"))
    y = g.add_node("conv2d", [x, w], name="c")
    p = [g.add_param(f"bn_{k}", (rng.random(3) + 0.5).astype("f4")) for k in ("m", "v", "g", "b")]
    y = g.add_node("batch_norm", [y] + p, name="bn")
    g.set_outputs([g.add_node("relu", [y], name="r")])
    original = module.channel_factors

    def wrong(graph, node):
        k, t = original(graph, node)
        return k * 1.01, t

    module.channel_factors = wrong
    try:
        with pytest.raises(AssertionError, match=r"first departing node: c \[conv2d\]"):
            assert_equivalent(g, opt_levels=(2,), devices=["cpu"])
    finally:
        module.channel_factors = original
