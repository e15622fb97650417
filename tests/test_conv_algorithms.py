"""The cpu device's convolution algorithms, its own threads and the algorithm cache.

- every algorithm (im2col, im2col_nhwc, pointwise, Winograd F(2x2,3x3)) against naive float64 loops
  (``tests/naive.py``) on hypothesis shapes: strides, pads, dilations, groups, odd sizes, batch
  1..5, on channel-slice views with an exactly sized NaN workspace;
- compiled executables forcing each algorithm, at 1..3 threads, against the reference executor;
- Winograd's rounding error, measured and bounded (the README's cpu section states it);
- the threads: launches split only when large, BLAS held to one thread inside a step and restored
  after, errors in a worker reach the caller;
- ``algorithms="measure"`` with the cache in a temporary folder: written, reused without timing,
  a corrupt or unwritable cache ignored.

Nothing here asserts a time.
"""
from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import graphrt
import naive
from graphrt import Graph
from graphrt.devices.cpu import CpuDevice
from graphrt.devices.cpu import algorithms as algo
from graphrt.devices.cpu import split, threads, winograd
from graphrt.testing import relative_error
from test_cpu_kernels import channel_view, one_node, untouched

# float32 against float64 loops, unit-scale data: im2col and pointwise sum in BLAS's order;
# Winograd adds the transforms' rounding (measured in test_winograd_rounding_error)
TOL = {"im2col": 2e-6, "im2col_nhwc": 2e-6, "pointwise": 2e-6, "winograd": 1e-5}
WINOGRAD_BOUND = 2e-6  # the stated bound on Winograd's float32 error (measured 1.3e-7 .. 6.2e-7)


@st.composite
def conv_layers(draw, winograd_shaped: bool = False):
    """(x, w, b or None, attrs) with odd sizes, strides, pads, dilations, groups, batch 1..5;
    ``winograd_shaped``: 3x3 stride-1 dilation-1 (the layers Winograd takes)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    groups, cg, og = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    if winograd_shaped:
        (kh, kw), stride, dil = (3, 3), (1, 1), (1, 1)
    else:
        kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
        stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
        dil = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    pads = tuple(draw(st.integers(0, 2)) for _ in range(4))
    eh, ew = dil[0] * (kh - 1) + 1, dil[1] * (kw - 1) + 1
    h = draw(st.integers(max(1, eh - pads[0] - pads[1]), 11))
    w = draw(st.integers(max(1, ew - pads[2] - pads[3]), 11))
    n = draw(st.integers(1, 5))
    x = rng.standard_normal((n, groups * cg, h, w)).astype(np.float32)
    wt = rng.standard_normal((groups * og, cg, kh, kw)).astype(np.float32)
    b = rng.standard_normal(groups * og).astype(np.float32) if draw(st.booleans()) else None
    act = draw(st.sampled_from(["none", "relu", "tanh"]))
    attrs = {"stride": stride, "pads": pads, "dilation": dil, "groups": groups, "activation": act}
    return x, wt, b, attrs


def naive_conv(x, w, b, attrs):
    y = naive.conv2d(x, w, b, attrs["stride"], attrs["pads"], attrs["dilation"], attrs["groups"])
    if attrs["activation"] == "relu":
        y = np.maximum(y, 0)
    elif attrs["activation"] == "tanh":
        y = np.tanh(y)
    return y


def run_algorithm(name, x, w, b, attrs, axis=1):
    """Algorithm ``name``'s kernel on channel-slice views with an exactly sized NaN workspace
    (the bytes its workspace function asks for); returns the output view."""
    params = [w] + ([b] if b is not None else [])
    g, node, n = one_node("conv2d", [x], params, attrs)
    size = algo.ALGORITHMS[name].workspace(node, g, n)
    assert size >= 0 and size % 4 == 0
    ws = np.full(size // 4, np.nan, np.float32) if size else None
    spec = g.specs[node.outputs[0]]
    out = channel_view(np.full(spec.concrete(n), np.nan, np.float32), axis)
    algo.ALGORITHMS[name].kernel(node.attrs, [channel_view(x, axis)] + params, [out], ws)
    assert untouched(out), f"{name} wrote outside its output slice"
    return out, node.attrs


@pytest.mark.parametrize("name", sorted(algo.ALGORITHMS))
@given(data=st.data())
def test_algorithm_matches_naive_loops(name, data):
    x, w, b, attrs = data.draw(conv_layers(winograd_shaped=name == "winograd" and data.draw(
        st.booleans())))
    if name == "pointwise":  # the layers it takes: 1x1, stride 1, no pads
        w = w[:, :, :1, :1].copy()
        attrs = dict(attrs, stride=(1, 1), pads=(0, 0, 0, 0))
    g, node, _ = one_node("conv2d", [x], [w], attrs)
    assume(name in algo.candidates(node, g))
    out, _ = run_algorithm(name, x, w, b, attrs)
    err = relative_error(out, naive_conv(x, w, b, attrs))
    assert err < TOL[name], f"{name} {attrs}: relative error {err:.3g}"


@pytest.mark.parametrize("name", ["im2col", "im2col_nhwc", "winograd"])
@pytest.mark.parametrize("axis", [2, 3])
def test_algorithms_on_spatial_slices(name, axis):
    """Inputs and outputs that are slices along H or W (a concat on a spatial axis)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 4, 7, 9)).astype(np.float32)
    w = rng.standard_normal((6, 2, 3, 3)).astype(np.float32)
    attrs = {"pads": (1, 0, 2, 1), "groups": 2, "stride": (1, 1), "dilation": (1, 1),
             "activation": "relu"}
    out, _ = run_algorithm(name, x, w, None, attrs, axis=axis)
    assert relative_error(out, naive_conv(x, w, None, attrs)) < TOL[name]


def test_winograd_rounding_error():
    """Winograd's float32 error against float64 loops on unit-scale data, next to im2col's: the
    numbers the README states (measured 3e-7 here, bounded by WINOGRAD_BOUND)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 64, 14, 14)).astype(np.float32)
    w = (rng.standard_normal((64, 64, 3, 3)) / 24).astype(np.float32)
    attrs = {"pads": (1, 1, 1, 1), "stride": (1, 1), "dilation": (1, 1), "groups": 1,
             "activation": "none"}
    exact = naive.conv2d(x, w, None, (1, 1), (1, 1, 1, 1))
    errors = {name: relative_error(run_algorithm(name, x, w, None, attrs)[0], exact)
              for name in ("im2col", "winograd")}
    assert errors["winograd"] < WINOGRAD_BOUND, errors
    assert errors["im2col"] < errors["winograd"] * 10, errors  # the same magnitude, not 10x better


def conv_graph(x, w, b, attrs):
    g = Graph("conv")
    t = g.add_input("x", (None,) + x.shape[1:])
    ins = [t, g.add_param("w", w)] + ([g.add_param("b", b)] if b is not None else [])
    y = g.add_node("conv2d", ins, attrs=attrs)
    y = g.add_node("max_pool", [y], attrs={"kernel": 2, "stride": 1, "pads": 1})
    g.set_outputs([g.add_node("sigmoid", [y])])
    return g.verify()


@contextlib.contextmanager
def split_everything():
    """Every splittable launch split, however small (the shapes here are tiny)."""
    saved = split.MIN_PART_FLOPS, split.MIN_PART_BYTES, split.CHANNEL_PART_BYTES
    split.MIN_PART_FLOPS = split.MIN_PART_BYTES = split.CHANNEL_PART_BYTES = 1
    try:
        yield
    finally:
        split.MIN_PART_FLOPS, split.MIN_PART_BYTES, split.CHANNEL_PART_BYTES = saved


@given(conv_layers(), st.sampled_from(["im2col", "im2col_nhwc", "winograd", "pointwise", "default"]),
       st.integers(1, 3))
def test_compiled_algorithms_and_threads_match_the_reference(case, algorithms, nthreads):
    x, w, b, attrs = case
    g = conv_graph(x, w, b, attrs)
    with split_everything():
        exe = graphrt.compile(g, batch_size=len(x), threads=nthreads, algorithms=algorithms)
    if nthreads > 1 and len(x) > 1:
        assert set(exe.device.parts.values()) == {min(nthreads, len(x))}
    assert relative_error(exe(x), graphrt.run_reference(g, x)) < 1e-5
    small = x[:max(1, len(x) - 2)]  # a smaller batch in the same arena (fewer parts)
    assert relative_error(exe(small), graphrt.run_reference(g, small)) < 1e-5


def wide_conv_graph(n_out=32):
    rng = np.random.default_rng(0)
    g = Graph("wide")
    x = g.add_input("x", (None, 16, 20, 20))
    y = g.add_node("conv2d", [x, g.add_param("w", rng.standard_normal((n_out, 16, 3, 3)).astype(
        np.float32) * 0.1), g.add_param("b", np.zeros(n_out, np.float32))], name="conv",
        attrs={"pads": 1, "activation": "relu"})
    y = g.add_node("flatten", [y])
    y = g.add_node("dense", [y, g.add_param("fw", rng.standard_normal(
        (10, n_out * 400)).astype(np.float32) * 0.01)], name="fc")
    g.set_outputs([y])
    return g.verify()


def test_parts_follow_the_work_not_a_clock():
    """Large launches are split across the threads; a batch-1 step of the same graph, or one
    thread, runs whole. The chosen algorithm's workspace is what the plan reserves, per part."""
    g = wide_conv_graph()
    exe = graphrt.compile(g, batch_size=8, threads=2, algorithms="winograd")
    assert exe.device.parts["conv"] == 2
    assert exe.device.choices["conv"] == "winograd"
    node = exe.graph.node("conv")
    per = algo.ALGORITHMS["winograd"].workspace(node, exe.graph, 4)
    block = exe.plan.blocks[exe.plan.workspaces["conv"]]
    assert block.size >= 2 * split.workspace_share(per)
    assert block.size < 2 * split.workspace_share(per) + 64 * 2
    assert split.columns(exe.graph.node("fc"), exe.graph, 8)  # 12800x10 weights, batch 8
    one = graphrt.compile(g, batch_size=1, threads=2, algorithms="default")
    assert one.device.parts == {}
    assert graphrt.compile(g, batch_size=8, threads=1).device.parts == {}
    x = np.random.default_rng(1).standard_normal((8, 16, 20, 20)).astype(np.float32)
    assert relative_error(exe(x), graphrt.run_reference(g, x)) < 1e-5


def _blas_threads():
    from threadpoolctl import threadpool_info

    return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]


def test_blas_is_single_threaded_only_inside_a_step():
    from threadpoolctl import threadpool_limits

    g = wide_conv_graph()
    exe = graphrt.compile(g, batch_size=4, threads=2, algorithms="default")
    program = exe.program(4)
    seen = []
    first = program.launches[0]
    inner = first.fn

    def spy(*args):
        seen.append(_blas_threads())
        inner(*args)
    first.fn = spy
    x = np.zeros((4, 16, 20, 20), np.float32)
    with threadpool_limits(2, user_api="blas"):
        before = _blas_threads()
        exe(x)
        after = _blas_threads()
    assert seen and all(n == 1 for n in seen[0]), seen
    assert before == after and all(n == 2 for n in before)


def test_pool_errors_reach_the_caller_and_the_pool_survives():
    p = threads.pool(3)
    out = np.zeros(3)

    def put(i):
        out[i] = i + 1

    def fail():
        raise ValueError("part failed")
    with pytest.raises(ValueError, match="part failed"):
        p.run([(put, (0,)), (fail, ()), (put, (2,))])
    assert out[0] == 1 and out[2] == 3  # every part ran to the end before the error was raised
    p.run([(put, (1,)), (put, (0,))])
    assert out.tolist() == [1, 2, 3]


def test_a_part_left_behind_is_not_taken_for_this_runs():
    """A part of an earlier run that finishes late (its caller was interrupted while waiting) does
    not count as a part of the next run."""
    import threading

    p = threads.Pool(2)
    p._done.put((p._run, None))  # the late part of the previous run
    gate, out = threading.Event(), []

    def slow():
        gate.wait(5)
        out.append("worker")
    timer = threading.Timer(0.2, gate.set)
    timer.start()
    p.run([(out.append, ("caller",)), (slow, ())])
    assert sorted(out) == ["caller", "worker"]


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_bad_threads_and_algorithms_are_errors(bad):
    g = wide_conv_graph()
    with pytest.raises(graphrt.GraphrtError, match="threads"):
        graphrt.compile(g, threads=bad)
    with pytest.raises(graphrt.GraphrtError, match="algorithms"):
        graphrt.compile(g, algorithms="fastest")


# ---- measuring, and the cache ---------------------------------------------------------------------
@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(algo.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_measure_writes_the_cache_and_the_next_compile_reads_it(cache_dir, monkeypatch):
    g = wide_conv_graph()
    x = np.random.default_rng(2).standard_normal((4, 16, 20, 20)).astype(np.float32)
    exe = graphrt.compile(g, batch_size=4, threads=2, algorithms="measure")
    assert set(exe.device.timings["conv"]) == {"im2col", "im2col_nhwc", "winograd"}
    chosen = exe.device.choices["conv"]
    assert relative_error(exe(x), graphrt.run_reference(g, x)) < 1e-5
    # the plan holds the chosen algorithm's workspace, not the largest candidate's
    assert exe.plan.blocks[exe.plan.workspaces["conv"]].size == exe.device.workspace_bytes(
        exe.graph.node("conv"), exe.graph, 4)
    data = json.loads((cache_dir / algo.CACHE_FILE).read_text())
    entries = data["machines"][algo.machine_key()]
    assert [v["algorithm"] for v in entries.values()] == [chosen]

    def no_timing(*args):
        raise AssertionError("timed although the cache has the layer")
    monkeypatch.setattr(algo, "measure", no_timing)
    again = graphrt.compile(g, batch_size=4, threads=2, algorithms="measure")
    assert again.device.choices["conv"] == chosen and again.device.timings == {}
    # another batch or thread count is another layer for the cache
    with pytest.raises(AssertionError, match="timed although"):
        graphrt.compile(g, batch_size=4, threads=1, algorithms="measure")


@pytest.mark.parametrize("content", ["{not json", "[]", '{"machines": 3}', ""])
def test_a_corrupt_cache_is_ignored_and_rewritten(cache_dir, content):
    cache_dir.mkdir()
    (cache_dir / algo.CACHE_FILE).write_text(content)
    exe = graphrt.compile(wide_conv_graph(), batch_size=2, threads=1, algorithms="measure")
    assert exe.device.choices["conv"] in ("im2col", "im2col_nhwc", "winograd")
    data = json.loads((cache_dir / algo.CACHE_FILE).read_text())
    assert len(data["machines"][algo.machine_key()]) == 1


def test_an_unwritable_cache_is_not_an_error(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder would be")
    monkeypatch.setenv(algo.CACHE_ENV, str(blocker / "cache"))
    exe = graphrt.compile(wide_conv_graph(), batch_size=2, threads=1, algorithms="measure")
    assert exe.device.choices["conv"] in ("im2col", "im2col_nhwc", "winograd")


def test_default_is_the_fixed_rule_without_timing(cache_dir, monkeypatch):
    monkeypatch.setattr(algo, "measure", lambda *a: (_ for _ in ()).throw(AssertionError("timed")))
    exe = graphrt.compile(wide_conv_graph(), batch_size=2, algorithms="default")
    assert exe.device.choices == {"conv": "im2col"}
    monkeypatch.setenv(algo.ENV, "default")
    assert graphrt.compile(wide_conv_graph(), batch_size=2).device.choices == {"conv": "im2col"}
    assert not cache_dir.exists()


def test_cpu_device_instance_options_carry_over():
    dev = CpuDevice(threads=3, algorithms="winograd")
    exe = graphrt.compile(wide_conv_graph(), device=dev, batch_size=6)
    assert exe.device is not dev and exe.device.threads == 3
    assert exe.device.choices["conv"] == "winograd"
    assert winograd.applies(exe.graph.node("conv").attrs, 3, 3)


def test_dense_column_tiles_and_batch_slices_match_the_reference():
    rng = np.random.default_rng(4)
    g = Graph("fc")
    x = g.add_input("x", (None, 37))
    y = g.add_node("dense", [x, g.add_param("w", rng.standard_normal((53, 37)).astype(np.float32)),
                             g.add_param("b", rng.standard_normal(53).astype(np.float32))],
                   name="fc", attrs={"activation": "sigmoid"})
    y = g.add_node("add", [y, y], attrs={"coeffs": (1.0, 0.5)})
    g.set_outputs([g.add_node("softmax", [y])])
    g.verify()
    for batch in (2, 5, 200):
        xs = rng.standard_normal((batch, 37)).astype(np.float32)
        with split_everything():
            exe = graphrt.compile(g, batch_size=batch, threads=3)
        assert exe.device.parts["fc"] == min(3, 53 if batch < 20 else batch)
        assert split.columns(exe.graph.node("fc"), exe.graph, batch) == (batch < 20)
        assert relative_error(exe(xs), graphrt.run_reference(g, xs)) < 1e-5


@pytest.mark.parametrize("command", ["run", "bench", "profile", "viz", "plan", "train"])
def test_every_command_takes_threads_and_algorithms(command):
    from graphrt import cli

    extra = {"viz": ["-o", "g.html"], "plan": ["-o", "p.png"], "train": ["--data", "digits"]}
    args = cli.parser().parse_args([command, "m.py", "--threads", "3", "--algorithms", "winograd",
                                    *extra.get(command, [])])
    assert (args.threads, args.algorithms) == (3, "winograd")
    args = cli.parser().parse_args([command, "m.py", *extra.get(command, [])])
    assert (args.threads, args.algorithms) == (None, None)  # the library's defaults


def test_run_command_uses_the_threads_and_algorithms(capsys, tmp_path):
    from graphrt import cli
    from graphrt.devices.cpu import device as cpu_device

    made = []
    original = cpu_device.CpuDevice.for_graph

    def record(self, graph, batch, **options):
        dev = original(self, graph, batch, **options)
        made.append(dev)
        return dev
    model = tmp_path / "m.py"
    model.write_text(
        "import numpy as np\nimport graphrt\n\ndef build():\n    g = graphrt.Graph('m')\n"
        "    x = g.add_input('x', (None, 4, 9, 9))\n"
        "    w = g.add_param('w', np.ones((6, 4, 3, 3), np.float32))\n"
        "    g.set_outputs([g.add_node('conv2d', [x, w], name='conv', attrs={'pads': 1})])\n"
        "    return g\n")
    try:
        cpu_device.CpuDevice.for_graph = record
        assert cli.main(["run", str(model), "--batch", "4", "--threads", "2", "--algorithms",
                         "winograd", "--json"]) == 0
    finally:
        cpu_device.CpuDevice.for_graph = original
    capsys.readouterr()
    assert made and made[-1].threads == 2 and made[-1].choices == {"conv": "winograd"}


def _run_split_in_child(queue):
    g = wide_conv_graph()
    exe = graphrt.compile(g, batch_size=4, threads=2, algorithms="default")
    x = np.ones((4, 16, 20, 20), np.float32)
    queue.put(relative_error(exe(x), graphrt.run_reference(g, x)))


def test_a_forked_child_gets_its_own_pool():
    import multiprocessing

    threads.pool(2).run([(len, ((),)), (len, ((),))])  # the parent's pool exists
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_run_split_in_child, args=(queue,))
    child.start()
    child.join(60)
    if child.is_alive():  # a child stuck on the parent's (absent) threads
        child.kill()
        pytest.fail("the forked child hung on the parent's pool")
    assert child.exitcode == 0 and queue.get(timeout=5) < 1e-5
