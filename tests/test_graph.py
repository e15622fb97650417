"""The Graph IR: deterministic order, cycle and dangling-input detection, ``verify``, ``summary``,
live parameters, ``copy``, and ``run_reference``'s checks of what it is fed."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import graphrt
import naive
from graphrt import Graph, GraphError, GraphrtError, InputError
from naive import assert_close


def lenet(seed=0):
    """conv -> relu -> max_pool -> flatten -> dense -> softmax on (N, 3, 8, 8), float32."""
    rng = np.random.default_rng(seed)
    g = Graph("lenet")
    x = g.add_input("x", (None, 3, 8, 8))
    w1 = g.add_param("conv_w", rng.standard_normal((4, 3, 3, 3)).astype(np.float32))
    b1 = g.add_param("conv_b", rng.standard_normal(4).astype(np.float32))
    h = g.add_node("conv2d", [x, w1, b1], name="conv", attrs={"pads": 1})
    h = g.add_node("relu", [h], name="relu")
    h = g.add_node("max_pool", [h], name="pool", attrs={"kernel": 2, "stride": 2})
    h = g.add_node("flatten", [h], name="flat")
    w2 = g.add_param("fc_w", rng.standard_normal((10, 64)).astype(np.float32))
    b2 = g.add_param("fc_b", rng.standard_normal(10).astype(np.float32))
    h = g.add_node("dense", [h, w2, b2], name="fc")
    y = g.add_node("softmax", [h], name="prob")
    g.set_outputs([y])
    return g


def lenet_naive(g, x):
    p = g.params
    h = naive.conv2d(x, p["conv_w"], p["conv_b"], pads=(1, 1, 1, 1))
    h = naive.max_pool(naive.relu(h), kernel=(2, 2), stride=(2, 2))
    return naive.softmax(naive.dense(naive.flatten(h), p["fc_w"], p["fc_b"]))


def branches():
    """x feeding three independent branches added in the order zeta, alpha, mid, then joined."""
    g = Graph("branches")
    x = g.add_input("x", (None, 4))
    outs = [g.add_node(op, [x], name=name) for op, name in
            [("tanh", "zeta"), ("relu", "alpha"), ("sigmoid", "mid")]]
    y = g.add_node("add", outs, name="join")
    g.set_outputs([y])
    return g


# ---- order ------------------------------------------------------------------------------------
def test_topological_order_is_deterministic_and_ties_follow_insertion():
    order = branches().topological_order()
    assert order == ["zeta", "alpha", "mid", "join"]  # insertion order, not alphabetical
    assert all(branches().topological_order() == order for _ in range(3))
    assert [n.name for n in branches().nodes] == order
    assert branches().copy().topological_order() == order


def test_topological_order_puts_producers_first_after_rewiring():
    g = branches()
    g.rename_input("zeta", "x", "mid")  # zeta (inserted first) now reads mid (inserted last)
    order = g.topological_order()
    assert order == ["alpha", "mid", "zeta", "join"]
    g.verify()


@st.composite
def random_dags(draw):
    """A random graph of unary and n-ary elementwise nodes over one input; returns the graph and
    the build order as (name, op, input tensor names)."""
    g = Graph("random")
    tensors = [g.add_input("x", (None, 3))]
    built = []
    for i in range(draw(st.integers(1, 12))):
        op = draw(st.sampled_from(["relu", "tanh", "add", "mul"]))
        k = 1 if op in ("relu", "tanh") else draw(st.integers(1, 3))
        ins = [draw(st.sampled_from(tensors)) for _ in range(k)]
        tensors.append(g.add_node(op, ins, name=f"n{i}"))
        built.append((f"n{i}", op, ins))
    g.set_outputs([tensors[-1]] + ([tensors[1]] if len(tensors) > 2 else []))
    return g, built


@given(random_dags(), st.integers(1, 4))
def test_random_graphs_verify_order_and_run(case, batch):
    g, built = case
    g.verify()
    order = g.topological_order()
    assert order == [name for name, _, _ in built]  # insertion is a topological order: kept
    assert g.copy().topological_order() == order
    pos = {n: i for i, n in enumerate(order)}
    for u, v in g.nx.edges:
        assert pos[u] < pos[v]
    x = np.random.default_rng(batch).standard_normal((batch, 3)).astype(np.float32)
    values = {"x": x}
    fns = {"relu": naive.relu, "tanh": naive.tanh, "add": naive.add, "mul": naive.mul}
    for name, op, ins in built:
        values[name] = fns[op](*[values[t] for t in ins])
    got = graphrt.run_reference(g, x, return_all=True)
    for name, _, _ in built:
        assert_close(got[name], values[name], 1e-5, what=name)


def test_consumers_and_producer():
    g = branches()
    assert [n.name for n in g.consumers("x")] == ["zeta", "alpha", "mid"]
    assert [n.name for n in g.consumers("alpha")] == ["join"]
    assert g.producer("join").op == "add" and g.producer("x") is None


# ---- cycles and dangling inputs ---------------------------------------------------------------
def test_cycle_made_by_rewiring_is_detected_naming_a_node():
    g = Graph()
    x = g.add_input("x", (None, 4))
    a = g.add_node("relu", [x], name="a")
    b = g.add_node("tanh", [a], name="b")
    g.set_outputs([b])
    g.rename_input("a", x, b)  # a now reads b, which reads a
    with pytest.raises(GraphError, match=r"cycle: (a -> b -> a|b -> a -> b)") as info:
        g.topological_order()
    assert info.value.node in ("a", "b")
    with pytest.raises(GraphError, match="cycle"):
        g.verify()
    with pytest.raises(GraphError, match="cycle"):
        graphrt.run_reference(g, np.zeros((1, 4), np.float32))


def test_cycle_added_to_the_networkx_graph_is_detected():
    g = branches()
    g.topological_order()  # the order is cached; verify must not trust the cache
    g.nx.add_edge("join", "zeta", tensors=("join",))
    with pytest.raises(GraphError, match="cycle") as info:
        g.verify()
    assert info.value.node in ("join", "zeta")


def test_verify_catches_a_dangling_input():
    g = branches()
    g.remove_node("alpha")  # join still reads alpha's output
    with pytest.raises(GraphError, match="'alpha' is not produced") as info:
        g.verify()
    assert info.value.node == "join"
    assert "inputs from ['mid', 'zeta']" in str(info.value)


def test_replace_node_with_an_unknown_input_names_it_and_keeps_the_graph():
    g = branches()
    bad = g.node("alpha").replace(inputs=("nowhere",))
    with pytest.raises(GraphError, match="'nowhere'") as info:
        g.replace_node("alpha", bad)
    assert info.value.node == "alpha"
    assert g.node("alpha").inputs == ("x",)
    g.verify()


def test_verify_catches_a_parameter_replaced_with_the_wrong_shape():
    g = lenet()
    g.verify()
    g.params["fc_w"] = np.zeros((10, 63), np.float32)
    with pytest.raises(GraphError, match=r"parameter 'fc_w' is \(10, 63\)") as info:
        g.verify()
    assert "(10, 64)" in str(info.value)
    g.params["fc_w"] = np.zeros((10, 64), np.float64)  # right shape, wrong dtype
    with pytest.raises(GraphError, match="'fc_w'.*float64"):
        g.verify()


def test_verify_catches_a_missing_output_list_and_unnormalized_attrs():
    g = branches()
    g.outputs = []
    with pytest.raises(GraphError, match="no outputs"):
        g.verify()
    g = branches()
    node = g.node("alpha")
    g.nx.nodes["alpha"]["node"] = dataclasses.replace(node, attrs={})  # lost its defaults
    with pytest.raises(GraphError, match="not normalized") as info:
        g.verify()
    assert info.value.node == "alpha"


def test_nodes_are_frozen():
    node = lenet().node("conv")
    assert isinstance(node.attrs["pads"], tuple)
    with pytest.raises(dataclasses.FrozenInstanceError):
        node.op = "dense"
    with pytest.raises(TypeError):
        node.attrs["groups"] = 2


# ---- summary ----------------------------------------------------------------------------------
def test_summary_has_a_row_per_node_and_a_total():
    g = lenet()
    lines = g.summary().splitlines()
    assert lines[0].split()[:3] == ["node", "op", "output"]
    rows = lines[2:]
    assert [r.split()[0] for r in rows[:-1]] == g.topological_order()
    total = rows[-1].split()
    assert total[:3] == ["total", "6", "nodes"]
    assert str(g.num_params()) in total
    assert g.num_params() == 4 * 27 + 4 + 10 * 64 + 10
    conv_row = rows[0].split()
    assert "(N, 4, 8, 8)" in rows[0] and str(4 * 27 + 4) in conv_row
    assert float(conv_row[-1]) == pytest.approx(2 * 4 * 8 * 8 * 27 / 1e6, abs=1e-3)


# ---- live parameters and copy -----------------------------------------------------------------
def test_params_are_live():
    g = lenet()
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    before = graphrt.run_reference(g, x)
    assert_close(before, lenet_naive(g, x))
    g.params["fc_w"] = np.random.default_rng(2).standard_normal((10, 64)).astype(np.float32)
    after = graphrt.run_reference(g, x)
    assert not np.allclose(before, after)
    assert_close(after, lenet_naive(g, x))
    g.params["conv_b"][...] = 0  # mutating the array in place counts too
    assert_close(graphrt.run_reference(g, x), lenet_naive(g, x))


def test_copy_is_independent():
    g = lenet()
    order, specs, n_params = g.topological_order(), dict(g.specs), g.num_params()
    c = g.copy()
    y = c.add_node("relu", ["prob"], name="extra")
    c.set_outputs([y])
    c.params["fc_w"] = np.zeros((10, 64), np.float32)
    c.param_info["fc_w"].lr_mult = 0.0
    c.inputs.append("ghost")
    c.nx.nodes["conv"]["order"] = 99
    assert g.topological_order() == order and "extra" not in g
    assert g.specs == specs and g.outputs == ["prob"] and g.inputs == ["x"]
    assert g.num_params() == n_params and np.any(g.params["fc_w"] != 0)
    assert g.param_info["fc_w"].lr_mult == 1.0
    assert g.nx.nodes["conv"]["order"] == 0
    g.verify()
    c.inputs.pop()
    c.verify()
    assert c.topological_order()[-1] == "extra"


def test_copy_shares_parameter_arrays_and_computes_the_same():
    g = lenet()
    c = g.copy()
    assert all(c.params[k] is g.params[k] for k in g.params)
    x = np.ones((1, 3, 8, 8), np.float32)
    np.testing.assert_array_equal(graphrt.run_reference(c, x), graphrt.run_reference(g, x))


# ---- run_reference's input checks -------------------------------------------------------------
def two_inputs():
    g = Graph()
    a, b = g.add_input("a", (None, 3)), g.add_input("b", (None, 3))
    g.set_outputs([g.add_node("add", [a, b], name="sum")])
    return g


@pytest.mark.parametrize("feed, pattern", [
    (np.zeros((2, 3, 8, 7), np.float32),
     r"input 'x' expects shape \(N, 3, 8, 8\) float32, got \(2, 3, 8, 7\)"),
    (np.zeros((3, 8, 8), np.float32), r"input 'x' expects shape \(N, 3, 8, 8\)"),
    (np.full((2, 3, 8, 8), 2**25), r"input 'x' expects dtype float32, got int64, which does not "
                                   r"convert exactly"),
    (np.full((2, 3, 8, 8), 2**25 + 1), r"input 'x' expects dtype float32, got int64.*x.astype\(np.float32\)"),
    (np.zeros((2, 3, 8, 8), np.complex64), r"input 'x' expects dtype float32, got complex64"),
    ("text", r"input 'x' expects float32 values"),
])
def test_run_reference_rejects_a_bad_feed_naming_the_input(feed, pattern):
    with pytest.raises(InputError, match=pattern) as info:
        graphrt.run_reference(lenet(), feed)
    assert info.value.node == "x"


def test_run_reference_converts_what_converts_exactly():
    g = lenet()
    x = np.random.default_rng(3).standard_normal((2, 3, 8, 8)).astype(np.float16)
    pixels = np.random.default_rng(4).integers(0, 256, (2, 3, 8, 8))
    for feed in (x, x.astype(np.float64), pixels, pixels.astype(np.uint8), pixels > 100):  # floats, integers, bytes, bools
        out = graphrt.run_reference(g, feed)
        assert out.dtype == np.float32
        assert_close(out, lenet_naive(g, feed.astype(np.float32)))


def test_run_reference_checks_the_number_and_names_of_inputs():
    g = two_inputs()
    a = np.ones((2, 3), np.float32)
    with pytest.raises(InputError, match=r"takes 2 inputs \['a', 'b'\], got 3"):
        graphrt.run_reference(g, (a, a, a))
    with pytest.raises(InputError, match="pass a dict or a tuple"):
        graphrt.run_reference(g, a)
    with pytest.raises(InputError, match=r"inputs given \['a', 'c'\]"):
        graphrt.run_reference(g, {"a": a, "c": a})
    with pytest.raises(InputError, match="'b' has batch 3, others 2") as info:
        graphrt.run_reference(g, {"a": a, "b": np.ones((3, 3), np.float32)})
    assert info.value.node == "b"
    np.testing.assert_array_equal(graphrt.run_reference(g, (a, 2 * a)), 3 * a)
    np.testing.assert_array_equal(graphrt.run_reference(g, {"b": a, "a": 2 * a}), 3 * a)


def test_every_run_reference_failure_is_a_graphrt_error():
    for feed in ([1, 2, 3], "text", np.zeros((2, 3, 8, 8), np.complex64), None):
        with pytest.raises(GraphrtError):
            graphrt.run_reference(lenet(), feed)


@given(st.integers(1, 9))
def test_any_batch_size_runs(batch):
    g = lenet()
    x = np.random.default_rng(batch).standard_normal((batch, 3, 8, 8)).astype(np.float32)
    y = graphrt.run_reference(g, x)
    assert y.shape == (batch, 10)
    assert_close(y, lenet_naive(g, x))
    # each row depends on its own item only
    assert_close(y[-1:], graphrt.run_reference(g, x[-1:]))


def test_multiple_outputs_and_return_all():
    g = lenet()
    g.set_outputs(["fc", "prob"])
    x = np.zeros((1, 3, 8, 8), np.float32)
    out = graphrt.run_reference(g, x)
    assert sorted(out) == ["fc", "prob"]
    everything = graphrt.run_reference(g, x, return_all=True)
    assert set(everything) == {"x"} | set(g.topological_order())


def test_schedule_after_moves_a_ready_node_up_and_never_breaks_an_edge():
    g = Graph("g")
    x = g.add_input("x", (None, 4))
    a = g.add_node("relu", [x], name="a")
    b = g.add_node("tanh", [a], name="b")
    c = g.add_node("sigmoid", [b], name="c")
    late = g.add_node("relu", [a], name="late")  # appended last: it runs last
    assert g.topological_order() == ["a", "b", "c", "late"]
    g.schedule_after("late", ["a"])
    assert g.topological_order() == ["a", "late", "b", "c"]
    g.schedule_after("late", ["b"])  # already before b: not moved back
    assert g.topological_order() == ["a", "late", "b", "c"]
    dep = g.add_node("relu", [c], name="dep")
    g.schedule_after("dep", ["a"])  # a position before its producer: the edge still decides
    assert g.topological_order().index("dep") > g.topological_order().index("c")
    assert late and dep
