"""The memory planner on hand-built graphs: in-place reuse, views (aliased concat and split, flatten),
workspaces, the overlap check, the bounds, and a property test of the offset assignment."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import graphrt
from graphrt import Graph
from graphrt.devices.cpu import CpuDevice
from graphrt.memory import MemoryPlan, View, plan_memory
from graphrt.memory.planner import ALIGNMENT, _assign_offsets, align
from graphrt.passes import optimize, place_on
from graphrt.scheduler.program import is_free

CPU = CpuDevice()


def plan(g: Graph, batch: int = 2, **kw) -> tuple[Graph, MemoryPlan]:
    placed = place_on(g, "cpu")
    p = plan_memory(placed, batch, workspace=CPU.workspace_bytes, **kw)
    p.check()
    assert p.lower_bound_bytes <= p.arena_bytes <= p.naive_bytes
    return placed, p


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = np.abs(b).max()
    return float(np.abs(a - b).max() / scale) if scale else float(np.abs(a - b).max())


def assert_runs_like_reference(g: Graph, batch: int = 2, opt_level: int = 0):
    rng = np.random.default_rng(0)
    x = {t: rng.standard_normal(g.specs[t].concrete(batch)).astype(np.float32) for t in g.inputs}
    exe = graphrt.compile(g, "cpu", batch_size=batch, opt_level=opt_level)
    exe.plan.check()
    got, want = exe(x), graphrt.run_reference(g, x)
    got = got if isinstance(got, dict) else {g.outputs[0]: got}
    want = want if isinstance(want, dict) else {g.outputs[0]: want}
    for k in want:
        assert rel_err(got[k], want[k]) < 1e-5, k
    return exe


def rnd(rng, *shape):
    return (rng.standard_normal(shape) * 0.5).astype(np.float32)


def conv(g, rng, name, x, o, c, k, **attrs):
    return g.add_node("conv2d", [x, g.add_param(f"{name}_w", rnd(rng, o, c, k, k)),
                                 g.add_param(f"{name}_b", rnd(rng, o))], name=name, attrs=attrs)


def block_of(p: MemoryPlan, tensor: str):
    return p.blocks[p.views[tensor].buffer]


# ---- in-place ------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 5])
def test_chain_of_relus_runs_in_place(n):
    g = Graph("relus")
    t = g.add_input("x", (None, 16, 8))
    for i in range(n):
        t = g.add_node("relu", [t], name=f"relu{i}")
    g.set_outputs([t])
    placed, p = plan(g, batch=3)
    size = align(3 * 16 * 8 * 4)
    # the input slot is never written over; every relu shares the first relu's buffer
    assert {p.views[f"relu{i}"].buffer for i in range(n)} == {"relu0"}
    assert p.views["relu0"] == View("relu0")
    assert set(p.blocks) == {"inputs", "relu0"}
    assert p.views["x@device"] == View("inputs")
    assert p.blocks["relu0"].size == p.blocks["inputs"].size == size
    assert p.arena_bytes == p.lower_bound_bytes == 2 * size
    assert p.naive_bytes == (n + 1) * size
    assert_runs_like_reference(g, batch=3)


def test_no_in_place_over_a_tensor_read_later():
    rng = np.random.default_rng(1)
    g = Graph("diamond")
    x = g.add_input("x", (None, 2, 5, 5))
    c = conv(g, rng, "conv", x, 3, 2, 1)
    r = g.add_node("relu", [c], name="relu")  # conv is read again by the add below
    t = g.add_node("tanh", [r], name="tanh")  # relu is last read here: may be overwritten
    s = g.add_node("add", [c, t], name="sum", attrs={"coeffs": (1.0, -2.0)})
    g.set_outputs([s])
    placed, p = plan(g)
    assert p.views["relu"].buffer != p.views["conv"].buffer
    assert p.views["tanh"].buffer == p.views["relu"].buffer
    # conv's last reader is the add, which may write over it
    assert p.views["sum"].buffer == p.views["conv"].buffer
    steps = p.steps
    conv_block = block_of(p, "conv")
    assert conv_block.start == steps.index("conv") and conv_block.end >= steps.index("sum")
    assert_runs_like_reference(g)


def test_no_in_place_when_another_input_views_the_same_buffer():
    """add(fc, flatten(fc)): the flatten is a view of fc's buffer, so writing the sum over fc would
    change the second operand while it is read."""
    rng = np.random.default_rng(2)
    g = Graph("alias_read")
    x = g.add_input("x", (None, 6))
    h = g.add_node("dense", [x, g.add_param("w", rnd(rng, 6, 6))], name="fc")
    f = g.add_node("flatten", [h], name="flat")  # (N, 6) -> (N, 6): a view of fc
    s = g.add_node("add", [h, f], name="sum", attrs={"coeffs": (2.0, 1.0)})
    g.set_outputs([s])
    placed, p = plan(g)
    assert p.views["flat"] == View("fc")
    assert p.views["sum"].buffer != "fc"
    assert_runs_like_reference(g, opt_level=0)


def test_no_in_place_over_an_input_slot():
    g = Graph("input")
    x = g.add_input("x", (None, 8))
    g.set_outputs([g.add_node("sigmoid", [x], name="sig")])
    placed, p = plan(g)
    assert p.views["sig"] == View("sig")


def test_input_slots_live_from_the_first_step():
    """Every input is copied in before the first launch, even one its copy_to_device node schedules
    late: the buffer must not be shared with anything that runs before."""
    rng = np.random.default_rng(3)
    g = Graph("late_input")
    x = g.add_input("x", (None, 2, 6, 6))
    y = g.add_input("y", (None, 8))
    c = conv(g, rng, "conv", x, 2, 2, 3, pads=1)
    f = g.add_node("flatten", [g.add_node("max_pool", [c], name="pool",
                                          attrs={"kernel": 3, "stride": 3})], name="flat")
    s = g.add_node("add", [f, y], name="sum")
    g.set_outputs([s])
    placed, p = plan(g)
    assert p.views["x@device"].buffer == p.views["y@device"].buffer == "inputs"
    assert p.blocks["inputs"].start == 0
    assert p.views["y@device"].offset == align(2 * 2 * 6 * 6 * 4)  # packed after x
    for _ in range(2):
        assert_runs_like_reference(g)


# ---- views ---------------------------------------------------------------------------------------
def inception(alias_concat=True, alias_split=False) -> Graph:
    rng = np.random.default_rng(4)
    g = Graph("inception")
    x = g.add_input("x", (None, 3, 6, 6))
    a = conv(g, rng, "a", x, 4, 3, 1)
    b = conv(g, rng, "b", x, 5, 3, 3, pads=1)
    wide = conv(g, rng, "wide", x, 5, 3, 1)
    p, q = g.add_node("split", [wide], name="split", outputs=["p", "q"],
                      attrs={"sizes": (2, 3), "alias": alias_split})
    rp = g.add_node("relu", [p], name="relu_p")
    tq = g.add_node("tanh", [q], name="tanh_q")
    cat = g.add_node("concat", [a, b, rp, tq], name="cat", attrs={"alias": alias_concat})
    g.set_outputs([g.add_node("relu", [cat], name="out")])
    return g


def test_aliased_concat_branches_are_slices_of_its_output():
    g = inception()
    placed, p = plan(g)
    assert p.views["a"] == View("cat", 1, 0, 4)
    assert p.views["b"] == View("cat", 1, 4, 9)
    assert p.views["relu_p"] == View("cat", 1, 9, 11)
    assert p.views["tanh_q"] == View("cat", 1, 11, 14)
    assert "a" not in p.blocks and "b" not in p.blocks
    assert is_free(placed.node("cat"), p)
    # the concat buffer lives from its first branch to its last reader
    cat = p.blocks["cat"]
    assert cat.start == min(p.steps.index(t) for t in ("a", "b", "relu_p", "tanh_q"))
    assert cat.end >= p.steps.index("out")
    exe = assert_runs_like_reference(g)
    assert "cat" not in {launch.node for launch in exe.program(2).launches}


def test_unaliased_concat_copies():
    g = inception(alias_concat=False)
    placed, p = plan(g)
    assert p.views["a"] == View("a") and p.views["cat"] == View("cat")
    assert not is_free(placed.node("cat"), p)
    assert_runs_like_reference(g)


def test_aliased_split_outputs_are_slices_of_its_input():
    g = inception(alias_concat=False, alias_split=True)
    placed, p = plan(g)
    assert p.views["p"] == View("wide", 1, 0, 2)
    assert p.views["q"] == View("wide", 1, 2, 5)
    # a strided slice is never written over in place
    assert p.views["relu_p"] == View("relu_p") and p.views["tanh_q"] == View("tanh_q")
    wide = p.blocks["wide"]
    assert wide.end >= max(p.steps.index("relu_p"), p.steps.index("tanh_q"))
    assert is_free(placed.node("split"), p)
    assert_runs_like_reference(g)


def test_aliased_split_and_concat_together():
    g = inception(alias_concat=True, alias_split=True)
    placed, p = plan(g)
    assert p.views["p"] == View("wide", 1, 0, 2)
    assert p.views["relu_p"] == View("cat", 1, 9, 11)
    assert_runs_like_reference(g)


def test_flatten_is_a_view():
    rng = np.random.default_rng(5)
    g = Graph("flat")
    x = g.add_input("x", (None, 2, 4, 4))
    c = conv(g, rng, "conv", x, 3, 2, 3)
    f = g.add_node("flatten", [c], name="flat")
    r = g.add_node("reshape", [f], name="rs", attrs={"shape": (3, 4)})
    g.set_outputs([g.add_node("dense", [g.add_node("flatten", [r], name="flat2"),
                                        g.add_param("fc_w", rnd(rng, 5, 12))], name="fc")])
    placed, p = plan(g)
    assert p.views["flat"] == p.views["rs"] == p.views["flat2"] == View("conv")
    assert p.blocks["conv"].end == p.steps.index("fc")
    assert all(is_free(placed.node(n), p) for n in ("flat", "rs", "flat2"))
    exe = assert_runs_like_reference(g)
    assert [launch.op for launch in exe.program(2).launches] == ["conv2d", "dense"]


# ---- workspaces ----------------------------------------------------------------------------------
def test_padded_conv_gets_a_workspace_live_only_at_its_step():
    rng = np.random.default_rng(6)
    g = Graph("ws")
    x = g.add_input("x", (None, 3, 7, 7))
    c = conv(g, rng, "conv", x, 4, 3, 3, pads=1)
    pw = conv(g, rng, "pw", c, 2, 4, 1)  # pointwise: a plain GEMM, no workspace
    g.set_outputs([g.add_node("relu", [pw], name="relu")])
    placed, p = plan(g, batch=3)
    assert p.workspaces == {"conv": "conv#workspace"}
    ws = p.blocks["conv#workspace"]
    step = p.steps.index("conv")
    assert ws.kind == "workspace" and ws.start == ws.end == step
    # padded input + im2col columns in float32, per image; the kernel may work in chunks of images
    per_image = 4 * (3 * 9 * 9 + 3 * 3 * 3 * 7 * 7)
    need = CPU.workspace_bytes(placed.node("conv"), placed, 3)
    assert need % per_image == 0 and per_image <= need <= 3 * per_image
    assert ws.size == align(need)
    assert p.naive_bytes == sum(align(placed.specs[t].nbytes(3)) for t in p.views) + align(need)
    # without a workspace function there are none
    assert plan_memory(placed, 3).workspaces == {}
    assert_runs_like_reference(g, batch=3)


# ---- the check and the bounds --------------------------------------------------------------------
def test_check_detects_an_overlap():
    rng = np.random.default_rng(7)
    g = Graph("overlap")
    x = g.add_input("x", (None, 2, 5, 5))
    c = conv(g, rng, "conv", x, 2, 2, 3, pads=1)
    g.set_outputs([g.add_node("tanh", [c], name="tanh")])
    placed, p = plan(g)
    blocks = p.blocks
    a, b = blocks["inputs"], blocks["conv"]  # both live at the conv's step
    assert not (a.end < b.start or b.end < a.start)
    bad = dataclasses.replace(p, blocks={**blocks, "conv": dataclasses.replace(b, offset=a.offset)})
    with pytest.raises(AssertionError, match="overlap"):
        bad.check()
    ws = blocks["conv#workspace"]
    bad = dataclasses.replace(p, blocks={**blocks, "conv#workspace": dataclasses.replace(
        ws, offset=b.offset + ALIGNMENT)})
    with pytest.raises(AssertionError):
        bad.check()
    bad = dataclasses.replace(p, arena_bytes=p.arena_bytes - ALIGNMENT)  # a block past the end
    with pytest.raises(AssertionError):
        bad.check()
    p.check()  # the real plan is fine
    assert "conv#workspace" in p.table() and "x@device" in p.table()  # the input views the inputs block


@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("make", [inception, lambda: inception(False, True)])
def test_bounds(make, batch):
    placed, p = plan(make(), batch=batch)
    assert 0 < p.lower_bound_bytes <= p.arena_bytes <= p.naive_bytes
    for b in p.blocks.values():
        assert b.offset % ALIGNMENT == 0 and b.size % ALIGNMENT == 0
    live_max = max(sum(b.size for b in p.blocks.values() if b.start <= i <= b.end)
                   for i in range(len(p.steps)))
    assert p.lower_bound_bytes == live_max


def test_prefetch_input_slots():
    g = inception()
    placed, p = plan(g, input_slots=2)
    assert p.input_slots == ["inputs", "inputs#slot1"]
    for name in p.input_slots:  # both live for the whole step: one is filled while the other is read
        slot = p.blocks[name]
        assert slot.start == 0 and slot.end == len(p.steps) - 1 and slot.kind == "input"


def test_naive_plan_counts_every_prefetch_slot_and_the_repr_is_short():
    """A tiny dense net whose input is most of its bytes: the executable's plan (two prefetch slots)
    stays within the naive total, which gives each slot its own buffer too."""
    from graphrt.frontends import keras

    model = keras.Sequential()
    model.add(keras.Dense(4, input_dim=200))
    model.add(keras.Activation("softmax"))
    exe = graphrt.compile(model, batch_size=1, opt_level=3)
    p = exe.plan
    assert len(p.input_slots) == 2
    assert p.lower_bound_bytes <= p.arena_bytes <= p.naive_bytes
    text = repr(p)
    assert len(text) < 200 and text.startswith("<MemoryPlan batch 1: ") and " KiB, lower bound " in text


def test_every_caffe_model_plan_is_consistent(shared):
    from graphrt.frontends.caffe import load_caffe

    for file in ("lenet.prototxt", "cifar10_full.prototxt", "bvlc_googlenet_deploy.prototxt"):
        g = load_caffe(shared / "models/caffe" / file)
        for level in (0, 3):
            optimized = optimize(g, level)
            for batch in (1, 8):
                plan(optimized, batch)


@pytest.mark.parametrize("batch", [1, 3])
def test_googlenet_merged_convolutions_write_into_their_concats(shared, batch):
    """Each GoogLeNet inception module's three sibling 1x1 convolutions stay one ``conv2d_split``,
    and the output of it that the module's concat reads (the 1x1 branch) is that concat's channel
    slice — strided when N > 1 — so all 9 concats are free; the optimized program equals the
    reference executor launch by launch."""
    from graphrt.frontends.caffe import load_caffe
    from graphrt.ops.reference import random_feeds
    from graphrt.testing import first_divergence

    g = load_caffe(shared / "models/caffe/bvlc_googlenet_deploy.prototxt")
    exe = graphrt.compile(g, "cpu", batch_size=batch, opt_level=3)
    graph, p = exe.graph, exe.plan
    merged = [n for n in graph.nodes if n.op == "conv2d_split"]
    concats = [n for n in graph.nodes if n.op == "concat"]
    assert len(merged) == 9 and len(concats) == 9
    assert all(is_free(cat, p) for cat in concats)
    assert not {cat.name for cat in concats} & {launch.node for launch in exe.program(batch).launches}
    for node in merged:
        readers = [graph.single_consumer(t) for t in node.outputs]
        assert [r.op for r in readers] == ["concat", "conv2d", "conv2d"], node.name  # 1x1, reduces
        t, cat = node.outputs[0], readers[0]
        start = sum(graph.specs[u].shape[1] for u in cat.inputs[:cat.inputs.index(t)])
        assert p.views[t] == View(p.views[cat.outputs[0]].buffer, 1, start,
                                  start + graph.specs[t].shape[1]), node.name
    feeds = random_feeds(g, batch)
    assert first_divergence(exe, g, feeds, 1e-4) is None
    assert rel_err(exe(feeds), graphrt.run_reference(g, feeds)) < 1e-5


# ---- the offset assignment, as a property --------------------------------------------------------
lifetimes = st.lists(st.tuples(st.integers(1, 4096), st.integers(0, 30), st.integers(0, 10)),
                     min_size=0, max_size=40)


@given(lifetimes)
def test_assign_offsets_never_overlaps_and_respects_the_lower_bound(items):
    requests = [(f"b{i}", "activation", size, start, start + length)
                for i, (size, start, length) in enumerate(items)]
    blocks = _assign_offsets(requests)
    assert set(blocks) == {r[0] for r in requests}
    for name, kind, size, start, end in requests:
        b = blocks[name]
        assert (b.size, b.start, b.end, b.kind) == (size, start, end, kind) and b.offset >= 0
    bs = list(blocks.values())
    for i, a in enumerate(bs):
        for b in bs[i + 1:]:
            if not (a.end < b.start or b.end < a.start):  # live at a common step
                assert a.offset + a.size <= b.offset or b.offset + b.size <= a.offset, (a, b)
    arena = max((b.offset + b.size for b in bs), default=0)
    lower = max((sum(b.size for b in bs if b.start <= t <= b.end) for t in range(41)), default=0)
    assert arena >= lower
    if all(b.start == bs[0].start and b.end == bs[0].end for b in bs):
        assert arena == lower  # everything live together: packed with no gaps
