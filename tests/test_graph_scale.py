"""The Graph's use lists (consumers per tensor, dependents per node) against a brute-force
recomputation after random rewrites, and the linear cost of building, rewriting and planning deep
graphs — counted in operations, never timed."""
from __future__ import annotations

import networkx
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import graphrt
from graphrt import Graph, GraphError, Node
from graphrt.memory import planner
from graphrt.passes import optimize

UNARY = ["relu", "tanh", "sigmoid"]


# ---- brute force --------------------------------------------------------------------------------
def check_use_lists(g: Graph) -> None:
    """Everything the use lists answer, recomputed by scanning every node (in self.nx's order)."""
    nodes = {name: g.nx.nodes[name]["node"] for name in g.nx.nodes}
    readers: dict[str, dict[str, None]] = {}
    waiting: dict[str, dict[str, None]] = {}
    for name, node in nodes.items():
        for t in node.inputs:
            readers.setdefault(t, {})[name] = None
        for before in node.after:
            waiting.setdefault(before, {})[name] = None
    assert {t: list(u) for t, u in g._consumers.items()} == {t: list(u) for t, u in readers.items()}
    assert {n: list(d) for n, d in g._dependents.items()} == {n: list(d) for n, d in waiting.items()}
    assert g._producer == {t: name for name, node in nodes.items() for t in node.outputs}
    assert sorted(nodes, key=g._seq.__getitem__) == list(nodes) and set(g._seq) == set(nodes)
    # edges: from each input's producer and each 'after' node, labelled with the tensors
    edges: dict[tuple, set] = {}
    for name, node in nodes.items():
        for t in node.inputs:
            if t in g._producer:
                edges.setdefault((g._producer[t], name), set()).add(t)
        for before in node.after:
            if before in nodes:
                edges.setdefault((before, name), set())
    assert {(u, v): set(d["tensors"]) for u, v, d in g.nx.edges(data=True)} == edges
    order = {name: g.nx.nodes[name]["order"] for name in nodes}
    for t in set(g.specs) | set(readers):
        expected = sorted((n for n in nodes if t in nodes[n].inputs), key=order.__getitem__)
        assert [c.name for c in g.consumers(t)] == expected, t
        single = g.single_consumer(t)
        assert (single and single.name) == (expected[0] if len(expected) == 1 and t not in g.outputs
                                             else None)
    for base in ("n", "s", "relu", "x"):
        i = 0
        while f"{base}_{i}" in g.specs or f"{base}_{i}" in g.nx:
            i += 1
        assert g.unique_name(base) == f"{base}_{i}"


def snapshot(g: Graph):
    return (list(g.nx.nodes(data=True)), sorted(g.nx.edges(data=True)), dict(g.specs),
            list(g.params), {t: list(u) for t, u in g._consumers.items()})


# ---- random rewrites ----------------------------------------------------------------------------
@st.composite
def rewrites(draw):
    """A short random program of add_node / replace_node / splice / remove_node / replace_uses /
    'after' dependencies / copy / prune_unused_params over a few tensors of one shape."""
    return draw(st.lists(st.tuples(
        st.sampled_from(["add", "add", "add_named", "add_onto", "replace", "after", "reinsert",
                         "splice", "splice_new", "remove", "replace_uses", "copy", "prune",
                         "unique"]),
        st.lists(st.integers(0, 10 ** 6), min_size=4, max_size=4)), min_size=1, max_size=40))


def apply(g: Graph, step: int, action: str, picks: list[int]) -> Graph:
    tensors = sorted(g.specs)
    names = list(g.nx.nodes)

    def pick(seq, k):
        return seq[picks[k] % len(seq)]

    if action in ("add", "add_named", "add_onto"):
        op = pick(UNARY + ["add", "mul"], 0)
        ins = [pick(tensors, 1)] + ([pick(tensors, 2)] if op in ("add", "mul") else [])
        if action == "add":
            g.add_node(op, ins, name=f"n_{step}")
        elif action == "add_named":
            g.add_node(op, ins, name=g.unique_name(op))
        else:  # produce a tensor that existing nodes read but nothing produces (a removed one)
            dangling = sorted({t for n in names for t in g.node(n).inputs} - set(g.specs))
            if dangling:
                g.add_node(op, ins, name=f"n_{step}", outputs=[pick(dangling, 3)])
        return g
    if not names:
        return g
    victim = g.node(pick(names, 0))
    if action == "replace":
        new_inputs = tuple(pick(tensors, 1 + i) for i in range(len(victim.inputs)))
        g.replace_node(victim.name, victim.replace(inputs=new_inputs))
    elif action == "after":
        others = [n for n in names if n != victim.name]
        if others:
            g.replace_node(victim.name, victim.replace(after=(pick(others, 1),)))
    elif action == "reinsert":  # a node others wait for, swapped for itself: rewired to them
        waited = sorted(g._dependents)
        name = pick(waited, 1) if waited else victim.name
        if name in g:
            g.replace_node(name, g.node(name))
    elif action in ("splice", "splice_new"):
        # the same outputs from a new node: existing readers of them are wired to it
        name = victim.name if action == "splice" else f"s_{step}"
        src = [t for t in tensors if t not in victim.outputs]
        if src:
            g.splice([victim.name], [Node(name, pick(UNARY, 1), (pick(src, 2),), victim.outputs)])
    elif action == "remove":
        g.remove_node(victim.name)
    elif action == "replace_uses":
        old, new = pick(tensors, 1), pick(tensors, 2)
        g.replace_uses(old, new)
    elif action == "copy":
        before = snapshot(g)
        c = g.copy()
        c.add_node("relu", [pick(tensors, 1)], name=f"c_{step}")
        if len(c) > 1:
            c.remove_node(pick(names, 2))
        assert snapshot(g) == before  # the copy has its own use lists
        check_use_lists(c)
        return c if picks[3] % 2 else g
    elif action == "prune":
        g.prune_unused_params()
    elif action == "unique":
        g.add_node("relu", [pick(tensors, 1)], name=g.unique_name("x"))
    return g


@given(rewrites())
def test_use_lists_match_a_brute_force_scan_after_random_rewrites(program):
    g = Graph("random")
    x = g.add_input("x", (None, 3))
    w = g.add_param("w", np.ones(3, np.float32))
    g.add_param("unused", np.ones(3, np.float32))
    a = g.add_node("relu", [x], name="a")
    b = g.add_node("mul", [a, w], name="b")
    c = g.add_node("add", [a, b], name="c")
    g.add_node("tanh", [a], name="d")
    g.set_outputs([c])
    check_use_lists(g)
    for step, (action, picks) in enumerate(program):
        try:
            g = apply(g, step, action, picks)
        except GraphError:  # e.g. a node reading a removed tensor cannot be replaced
            pass
        check_use_lists(g)


def test_reinserted_node_is_wired_to_existing_readers_and_dependents():
    g = Graph()
    x = g.add_input("x", (None, 4))
    a = g.add_node("relu", [x], name="a")
    b = g.add_node("tanh", [a], name="b")
    e = g.add_node("tanh", [x], name="e")
    g.replace_node("e", g.node("e").replace(after=("a",)))
    g.remove_node("a")
    assert g.consumers("a")[0].name == "b" and not g.nx.in_edges("b") and not g.nx.in_edges("e")
    g.add_node("sigmoid", [x], name="a")  # the same name and output again
    assert g.nx.edges["a", "b"]["tensors"] == ("a",) and g.nx.edges["a", "e"]["tensors"] == ()
    g.replace_node("a", g.node("a"))
    assert g.nx.has_edge("a", "b") and g.nx.has_edge("a", "e")
    g.set_outputs([b, e])
    g.verify()
    check_use_lists(g)


def test_unique_name_returns_the_smallest_free_index_after_removals():
    g = Graph()
    t = g.add_input("x", (None, 2))
    for _ in range(10):
        t = g.add_node("relu", [t], name=g.unique_name("relu"))
    assert t == "relu_9"
    g.remove_node("relu_9")
    g.remove_node("relu_3")
    g.remove_node("relu_7")
    assert g.unique_name("relu") == "relu_3"
    assert g.unique_name("relu") == "relu_3"  # nothing reserved until it is used
    g.add_node("relu", ["x"], name="relu_3")
    assert g.unique_name("relu") == "relu_7"
    g.add_input("relu_7", (None, 2))  # taken as a tensor name by another route
    assert g.unique_name("relu") == "relu_9"
    c = g.copy()
    c.add_node("relu", ["x"], name="relu_9")
    assert c.unique_name("relu") == "relu_10" and g.unique_name("relu") == "relu_9"


# ---- linear cost, counted -----------------------------------------------------------------------
class CountingDict(dict):
    def __init__(self, *args):
        super().__init__(*args)
        self.lookups = 0

    def __contains__(self, key):
        self.lookups += 1
        return super().__contains__(key)


@pytest.fixture
def counts(monkeypatch):
    """Calls of Graph.node, of the all-nodes Graph.nodes property and of topological sorts."""
    calls = {"node": 0, "nodes": 0, "sorts": 0}
    node, nodes = Graph.node, Graph.nodes.fget
    sort = networkx.lexicographical_topological_sort

    def counted(key, fn):
        def wrapper(*args, **kwargs):
            calls[key] += 1
            return fn(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(Graph, "node", counted("node", node))
    monkeypatch.setattr(Graph, "nodes", property(counted("nodes", nodes)))
    monkeypatch.setattr(networkx, "lexicographical_topological_sort", counted("sorts", sort))
    return calls


N = 20_000


def test_building_a_deep_chain_touches_each_node_a_constant_number_of_times(counts):
    g = Graph("chain")
    g.specs = CountingDict()
    t = g.add_input("x", (None, 2))
    for _ in range(N):
        t = g.add_node("relu", [t], name=g.unique_name("relu"))
    g.set_outputs([t])
    # (the old _wire called Graph.node for every node already there: N * (N - 1) / 2 times)
    assert counts == {"node": 0, "nodes": 0, "sorts": 0}
    assert g.specs.lookups <= 10 * N  # unique_name does not rescan relu_0, relu_1, ...
    assert len(g.nx.edges) == N - 1
    assert [c.name for c in g.consumers("relu_0")] == ["relu_1"]
    assert g.single_consumer(f"relu_{N - 1}") is None  # a graph output


def test_rewriting_and_planning_a_deep_model_is_linear(counts, monkeypatch):
    n = 2_000
    rng = np.random.default_rng(0)
    g = Graph("deep")
    t = g.add_input("x", (None, 4))
    for i in range(n):
        w = g.add_param(f"fc{i}/w", rng.standard_normal((4, 4)).astype(np.float32))
        b = g.add_param(f"fc{i}/b", np.zeros(4, np.float32))
        t = g.add_node("dense", [t, w, b], name=f"fc{i}")
        t = g.add_node("relu", [t], name=f"relu{i}")
        t = g.add_node("dropout", [t], name=f"drop{i}")
    g.set_outputs([t])
    examined = []
    overlapping = planner._Lifetimes.overlapping
    monkeypatch.setattr(planner._Lifetimes, "overlapping",
                        lambda self, s, e: examined.append(overlapping(self, s, e)) or examined[-1])
    g.verify()
    o = optimize(g, 3)
    exe = graphrt.compile(g, device="cpu", batch_size=1, opt_level=3)
    # dense+relu fused, every dropout gone but the last (its output is the graph's), two copies
    assert len(o) == n + 1 and len(exe.graph) == n + 3
    # a pass walks the graph a constant number of times: no per-node scan (Graph.nodes), no
    # re-sort per rewrite, and a constant number of Graph.node calls per node
    assert counts["nodes"] <= 30 and counts["sorts"] <= 30
    assert counts["node"] <= 60 * 3 * n
    # best-fit placement looks at the blocks overlapping each lifetime, not at all blocks
    assert len(examined) == len(planner.ORDERS) * len(exe.plan.blocks)
    assert sum(len(found) for found in examined) <= 10 * len(examined)
    x = rng.standard_normal((1, 4)).astype(np.float32)
    np.testing.assert_allclose(exe(x), graphrt.run_reference(g, x), rtol=1e-5, atol=1e-6)


def test_gc_paused_restores_the_collector_even_on_errors():
    import gc

    from graphrt.ir.gcpause import gc_paused

    seen = []

    @gc_paused
    def inner():
        seen.append(gc.isenabled())

    @gc_paused
    def outer(fail):
        inner()
        seen.append(gc.isenabled())  # the inner call left it paused for the outer one
        if fail:
            raise ValueError("boom")

    assert gc.isenabled()
    outer(False)
    with pytest.raises(ValueError):
        outer(True)
    assert gc.isenabled() and seen == [False, False, False, False]
    gc.disable()
    try:
        outer(False)
        assert not gc.isenabled()  # a caller's own pause is left as it was
    finally:
        gc.enable()
