"""The cpu device's segments: runs of per-image launches dispatched to the threads once.

- random Sequential and inception graphs at random batches (odd ones, and smaller than the
  threads) and 2-3 threads: segments give exactly what splitting each launch on its own gives (the
  same kernels on the same batch slices with the same workspace shapes: bit-equal, no tolerance),
  and the reference executor's result within 1e-5;
- the seed LeNets: threads=2 (segments) bit-equal to threads=1 (their kernels compute each image
  alone, and OpenBLAS's GEMM result per element does not depend on the number of rows);
- the memory plan keeps every buffer a segment touches live for the whole segment, and its nodes
  share one workspace block;
- a failing part reaches the caller and the pool keeps working; what decides a segment is the ops'
  cost, not a clock.
"""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import graphrt
from graphrt.devices.cpu import segments, split
from graphrt.testing import relative_error
from graphrt.testing.strategies import inception_graphs, sequential_graphs


@contextlib.contextmanager
def split_everything(use_segments: bool = True):
    """Every splittable launch split (and every run of them a segment), however small."""
    saved = split.MIN_PART_FLOPS, split.MIN_PART_BYTES, split.CHANNEL_PART_BYTES, segments.ENABLED
    split.MIN_PART_FLOPS = split.MIN_PART_BYTES = split.CHANNEL_PART_BYTES = 1
    segments.ENABLED = use_segments
    try:
        yield
    finally:
        (split.MIN_PART_FLOPS, split.MIN_PART_BYTES, split.CHANNEL_PART_BYTES,
         segments.ENABLED) = saved


def compiled(graph, batch, threads, use_segments=True):
    with split_everything(use_segments):
        return graphrt.compile(graph, batch_size=batch, opt_level=3, threads=threads,
                               algorithms="default")


def feed(graph, batch, seed=0):
    spec = graph.specs[graph.inputs[0]]
    return np.random.default_rng(seed).standard_normal(spec.concrete(batch)).astype(spec.dtype)


def check_against_per_launch(graph, batch, threads):
    seg = compiled(graph, batch, threads)
    per_launch = compiled(graph, batch, threads, use_segments=False)
    assert per_launch.device.segments == []
    launches = [la for la in seg.program(batch).launches if not la.host]
    if threads > 1 and batch > 1 and any(
            segments.per_image(seg.graph.node(la.node), seg.graph, batch) for la in launches):
        assert seg.device.segments, "nothing ran as a segment"
    for n in sorted({batch, max(1, batch - 1), 1}):  # smaller batches in the same arena too
        x = feed(graph, n, seed=n)
        got, want = seg(x), per_launch(x)
        np.testing.assert_array_equal(got, want)
        assert relative_error(got, graphrt.run_reference(graph, x)) < 1e-5
    seg.plan.check()


@settings(max_examples=25, deadline=None)
@given(sequential_graphs(max_nodes=8), st.integers(1, 7), st.integers(2, 3))
def test_segments_equal_per_launch_splits_on_random_stacks(graph, batch, threads):
    check_against_per_launch(graph, batch, threads)


@settings(max_examples=10, deadline=None)
@given(inception_graphs(max_blocks=2), st.integers(1, 5), st.integers(2, 3))
def test_segments_equal_per_launch_splits_on_random_inceptions(graph, batch, threads):
    """Branches, concats (aliased or copied) and merged sibling convolutions inside segments."""
    check_against_per_launch(graph, batch, threads)


def seed_model(name):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    from seed_models import seed_models

    found = seed_models([name])
    if not found:
        pytest.skip(f"{name} needs ../shared")
    return found[0]


@pytest.mark.parametrize("name", ["torch_lenet", "caffe_lenet"])
def test_seed_lenets_two_threads_bit_equal_one(name):
    model = seed_model(name)
    g = model.build()
    one = graphrt.compile(g, batch_size=model.batch, opt_level=3, threads=1, algorithms="default")
    two = graphrt.compile(g, batch_size=model.batch, opt_level=3, threads=2, algorithms="default")
    assert two.device.segments and two.device.segments[0].parts == 2
    for n in (model.batch, 7, 1):
        x = feed(g, n, seed=n)
        np.testing.assert_array_equal(two(x), one(x))


def test_the_plan_keeps_a_segments_buffers_live_throughout():
    model = seed_model("torch_lenet")
    exe = graphrt.compile(model.build(), batch_size=64, opt_level=3, threads=2,
                          algorithms="default")
    plan, graph = exe.plan, exe.graph
    (seg,) = [s for s in exe.device.segments if len(s.nodes) > 1]
    assert (plan.steps.index(seg.nodes[0]), plan.steps.index(seg.nodes[-1])) == (seg.first, seg.last)
    touched = {t for name in seg.nodes for t in graph.node(name).inputs + graph.node(name).outputs
               if t in plan.views}
    for t in touched:
        block = plan.blocks[plan.views[t].buffer]
        assert block.start <= seg.first and block.end >= seg.last, (t, block)
    ws = {plan.workspaces[name] for name in seg.nodes if name in plan.workspaces}
    assert len(ws) == 1
    block = plan.blocks[ws.pop()]
    assert (block.start, block.end) == (seg.first, seg.last)
    assert block.size == max(exe.device.workspace_bytes(graph.node(n), graph, 64)
                             for n in seg.nodes)
    plan.check()


def test_a_failing_part_reaches_the_caller_and_the_next_step_is_right():
    model = seed_model("torch_lenet")
    g = model.build()
    exe = graphrt.compile(g, batch_size=8, opt_level=3, threads=2, algorithms="default")
    program = exe.program(8)
    launch = next(la for la in program.launches if la.node in exe.device.segments[0].nodes[1:])
    inner = launch.fn.part_kernel

    def second_half_fails(attrs, inputs, outputs, ws):
        if outputs[0].ctypes.data != launch.outputs[0].ctypes.data:  # not the first slice
            raise ValueError("part 1 failed")
        inner(attrs, inputs, outputs, ws)
    launch.fn.part_kernel = second_half_fails
    x = feed(g, 8)
    with pytest.raises(ValueError, match="part 1 failed"):
        exe(x)
    launch.fn.part_kernel = inner
    exe._programs.clear()
    np.testing.assert_array_equal(exe(x), graphrt.compile(g, batch_size=8, opt_level=3, threads=1,
                                                          algorithms="default")(x))


def test_segments_follow_the_work_not_a_clock():
    """A segment needs work for two parts by the ops' costs; one thread, or a batch of one, has
    none; a dense layer whose weights outweigh its batch (split by columns) ends a segment unless
    each thread gets enough rows to make its GEMM compute-bound."""
    model = seed_model("torch_lenet")
    g = model.build()
    exe = graphrt.compile(g, batch_size=64, opt_level=3, threads=2, algorithms="default")
    dense = [n for n in exe.graph.nodes if n.op == "dense"][0]
    assert split.columns(dense, exe.graph, 64)  # 800x500 weights, batch 64 ...
    (whole,) = exe.device.segments
    assert {la.node for la in exe.program(64).launches} <= set(whole.nodes)
    assert not exe.device._by_columns(dense)  # ... but 32 rows a thread: the whole step is one
    small = graphrt.compile(g, batch_size=16, opt_level=3, threads=2, algorithms="default")
    ops = [[small.graph.node(n).op for n in s.nodes] for s in small.device.segments]
    assert ops[0][:2] == ["conv2d", "max_pool"] and "dense" not in ops[0]
    assert small.device._by_columns(small.graph.node(dense.name))  # 8 rows: columns, alone
    assert small.device.parts[dense.name] == 2
    assert graphrt.compile(g, batch_size=64, threads=1).device.segments == []
    assert graphrt.compile(g, batch_size=1, threads=2).device.segments == []
    saved = split.MIN_PART_FLOPS, split.MIN_PART_BYTES
    split.MIN_PART_FLOPS = split.MIN_PART_BYTES = 1 << 40  # no run is worth a worker
    try:
        assert graphrt.compile(g, batch_size=64, threads=2).device.segments == []
    finally:
        split.MIN_PART_FLOPS, split.MIN_PART_BYTES = saved


def test_a_segment_keeps_at_most_twice_its_largest_nodes_tensors_live():
    """Segments are cut so that the arena does not hold a whole network's activations at once."""
    model = seed_model("torch_inception_bn")
    g = model.build()
    exe = graphrt.compile(g, batch_size=4, opt_level=3, threads=2, algorithms="default")
    graph = exe.graph
    assert len(exe.device.segments) > 1
    nbytes = {}
    for s in exe.device.segments:
        largest = 0
        for name in s.nodes:
            node = graph.node(name)
            batched = [t for t in node.inputs + node.outputs if graph.specs[t].batched]
            nbytes.update({t: graph.specs[t].nbytes(4) for t in batched})
            largest = max(largest, sum(graph.specs[t].nbytes(4) for t in batched))
        touched = {t for name in s.nodes for t in graph.node(name).inputs + graph.node(name).outputs
                   if graph.specs[t].batched}
        if len(s.nodes) > 1:
            assert sum(nbytes[t] for t in touched) <= segments.SPAN_FACTOR * largest, s
    x = feed(g, 4)
    one = graphrt.compile(g, batch_size=4, opt_level=3, threads=1, algorithms="default")
    assert relative_error(exe(x), one(x)) < 1e-5


def test_a_training_step_with_segments_equals_one_thread():
    """The training step's data gradients run in segments (the weight gradients, reductions over
    the batch, end them): two threads give one thread's parameters after two steps, within 1e-5
    (the weight gradients' partial sums add in another order)."""
    model = seed_model("torch_lenet")
    g = model.build()
    rng = np.random.default_rng(3)
    x = rng.standard_normal((32, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 32).astype(np.int64)
    params = []
    for threads in (1, 2):
        tr = graphrt.Trainer(g, batch_size=32, threads=threads, algorithms="default",
                             optimizer=graphrt.optim.SGD(lr=0.01, momentum=0.9))
        if threads == 2:
            assert tr.exe.device.segments, "no segment in the training step"
        for _ in range(2):
            tr.step(x, y)
        params.append({k: np.array(v) for k, v in tr.parameters().items()})
    for k in params[0]:
        assert relative_error(params[1][k], params[0][k]) < 1e-5, k
