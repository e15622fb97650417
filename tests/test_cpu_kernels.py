"""The cpu device's own kernels (``graphrt/devices/cpu_kernels.py``) against the ops' reference
forwards, and the no-allocation-per-step property of compiled executables.

Every kernel runs as the memory plan runs it: inputs and outputs are channel slices ``big[:, a:b]`` of
wider NaN-filled buffers (the views the plan makes for concat branches), the workspace is exactly the
size its ``WORKSPACES`` function asks for and starts full of NaN. Besides the relative error
(``max|a - b| / max|b|`` against ``get_op(op).forward`` on plain arrays) each test checks that the
kernel wrote nothing outside its output slice. Chunk and block sizes are drawn small as well as at
their defaults, so every chunking path (row chunks, image chunks, several blocks) runs on small shapes.

``test_step_allocates_nothing`` compiles small graphs and two seed examples and checks with tracemalloc
that a step after warm-up allocates less than 64 KiB.
"""
from __future__ import annotations

import contextlib
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import graphrt
import naive
from graphrt import Graph
from graphrt.devices.cpu import kernels as K
from graphrt.devices.cpu import pool as P
from graphrt.devices.cpu import split
from graphrt.ops import get_op
from graphrt.testing import inception_graphs, relative_error

DTYPES = st.sampled_from(["float32", "float64"])
TOL = {"float32": 1e-5, "float64": 1e-9}
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
# the ops whose cpu kernels the tests below run (test_every_kernel_is_tested keeps it complete)
COVERED = {"conv2d", "conv2d_split", "dense", "max_pool", "avg_pool", "lrn", "batch_norm", "channel_affine", "relu",
           "tanh", "sigmoid", "scale", "dropout", "identity", "elementwise_chain", "add", "softmax",
           "log_softmax", "concat", "split", "zero_pad", "flatten", "reshape", "transpose",
           *graphrt.ops.activation.DEFS}  # the activations: tests/test_activation_ops.py


# ---- helpers ------------------------------------------------------------------------------------
@contextlib.contextmanager
def tuned(module=K, **sizes):
    """Temporarily other chunk and block sizes in the kernels module (or ``module``:
    ``COLS_BYTES=64``, ...), so that small shapes take every chunking path; a value None keeps the
    default."""
    saved = {name: getattr(module, name) for name in sizes}
    for name, value in sizes.items():
        if value is not None:
            setattr(module, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(module, name, value)


# default sizes; tiny im2col chunks (a row at a time) and blocks; chunks of a few rows or images
TUNINGS = st.sampled_from([{}, {"COLS_BYTES": 64, "BLOCK": 7}, {"COLS_BYTES": 700, "BLOCK": 50},
                           {"COLS_BYTES": 4096, "BLOCK": 333}])


def rng_of(draw):
    return np.random.default_rng(draw(st.integers(0, 2**32 - 1)))


def floats(lo, hi):
    """Attribute values exactly representable in float32 (0 or |v| >= 1e-3), as in test_ops."""
    return st.floats(float(np.float32(lo)), float(np.float32(hi)), width=32).filter(
        lambda v: v == 0 or abs(v) >= 1e-3)


def pair_attr(draw, lo, hi):
    if draw(st.booleans()):
        v = draw(st.integers(lo, hi))
        return v, (v, v)
    v = (draw(st.integers(lo, hi)), draw(st.integers(lo, hi)))
    return v, v


def pads_attr(draw, lo_max):
    mh, mw = lo_max
    form = draw(st.sampled_from(["int", "pair", "four"]))
    if form == "int":
        p = draw(st.integers(0, min(mh, mw)))
        return p, (p, p, p, p)
    if form == "pair":
        ph, pw = draw(st.integers(0, mh)), draw(st.integers(0, mw))
        return (ph, pw), (ph, ph, pw, pw)
    four = (draw(st.integers(0, mh)), draw(st.integers(0, mh)), draw(st.integers(0, mw)),
            draw(st.integers(0, mw)))
    return four, four


def epilogue(draw):
    kind = draw(st.sampled_from(["none", "relu", "tanh", "sigmoid"]))
    attrs = {"activation": kind}
    if kind == "relu" and draw(st.booleans()):
        attrs["negative_slope"] = draw(st.sampled_from([0.1, -0.5, 1.0, 2.5]) | floats(-2.0, 2.0))
    return attrs


def channel_view(a: np.ndarray, axis: int = 1, lo: int = 2, hi: int = 3) -> np.ndarray:
    """``a``'s values as ``big[:, lo:lo + C]`` of a NaN-filled buffer with ``hi`` more channels
    (or the same slice along another ``axis``)."""
    if a.ndim <= axis:
        return a.copy()
    shape = list(a.shape)
    shape[axis] += lo + hi
    big = np.full(shape, np.nan, a.dtype)
    index = (slice(None),) * axis + (slice(lo, lo + a.shape[axis]),)
    view = big[index]
    view[...] = a
    return view


def untouched(view: np.ndarray) -> bool:
    """True when everything of ``view``'s base outside ``view`` (a box of it) is still NaN."""
    base = view.base
    if base is None:
        return True
    start = np.unravel_index((view.ctypes.data - base.ctypes.data) // base.itemsize, base.shape)
    outside = np.ones(base.shape, bool)
    outside[tuple(slice(s, s + n) for s, n in zip(start, view.shape))] = False
    return bool(np.isnan(base[outside]).all())


def one_node(op, inputs, params=(), attrs=None):
    """A one-node graph over ``inputs`` (batched graph inputs) and ``params``; returns (graph, node,
    batch)."""
    g = Graph(op)
    names = [g.add_input(f"in{i}", (None,) + a.shape[1:], str(a.dtype)) for i, a in enumerate(inputs)]
    names += [g.add_param(f"p{i}", a) for i, a in enumerate(params)]
    g.add_node(op, names, name="node", attrs=attrs or {})
    return g, g.node("node"), inputs[0].shape[0]


def check_kernel(op, inputs, params=(), attrs=None, *, tol, inplace=False, axis=1):
    """Run ``op``'s cpu kernel on channel-slice views with an exactly sized NaN workspace and
    compare with the reference forward on plain arrays. With ``inplace`` the output is the first
    input's view (as the memory plan makes for an op with ``inplace=0``); ``axis`` is the axis the
    views slice (1: channels, as concat branches)."""
    assert op in COVERED
    g, node, n = one_node(op, inputs, params, attrs)
    specs = [g.specs[t] for t in node.outputs]
    expected = [np.zeros(s.concrete(n), s.dtype) for s in specs]
    get_op(op).forward(node.attrs, [a.copy() for a in inputs] + list(params), expected)
    size = K.WORKSPACES[op](node, g, n) if op in K.WORKSPACES else 0
    assert size >= 0 and size % 4 == 0
    ws = np.full(size // 4, np.nan, np.float32) if size else None
    views = [channel_view(a, axis) for a in inputs]
    if inplace:
        outs = [views[0]]
    else:
        outs = [channel_view(np.full(s.concrete(n), np.nan, s.dtype), axis) for s in specs]
    K.KERNELS[op](node.attrs, views + list(params), outs, ws)
    for out, exp in zip(outs, expected):
        assert out.shape == exp.shape and out.dtype == exp.dtype
        err = relative_error(out, exp)
        assert err < tol, f"{op} {node.attrs}: relative error {err:.3g}"
        if out.ndim > 1:
            assert untouched(out), f"{op} wrote outside its output slice"
    if ws is not None:
        assert ws.shape == (size // 4,)


# ---- convolution and dense ------------------------------------------------------------------------
def conv_geometry(draw, max_side: int, max_batch: int):
    """A random convolution: the input and weight shapes ``(n, groups*cg, h, w)``,
    ``(groups*og, cg, kh, kw)``, its attributes as the op takes them and the same geometry as the
    naive loops take it (strides, pads, dilations and groups drawn; the window always fits)."""
    groups, cg, og = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride_a, stride = pair_attr(draw, 1, 3)
    dil_a, dil = pair_attr(draw, 1, 2)
    pads_a, pads = pads_attr(draw, (2, 2))
    eh, ew = dil[0] * (kh - 1) + 1, dil[1] * (kw - 1) + 1
    h = draw(st.integers(max(1, eh - pads[0] - pads[1]), max_side))
    w = draw(st.integers(max(1, ew - pads[2] - pads[3]), max_side))
    n = draw(st.integers(1, max_batch))
    attrs = {"stride": stride_a, "pads": pads_a, "dilation": dil_a, "groups": groups}
    geometry = dict(stride=stride, pads=pads, dilation=dil, groups=groups)
    return (n, groups * cg, h, w), (groups * og, cg, kh, kw), attrs, geometry


@st.composite
def conv_cases(draw):
    rng, dtype = rng_of(draw), draw(DTYPES)
    x_shape, w_shape, attrs, _ = conv_geometry(draw, 12, 4)
    x = rng.standard_normal(x_shape).astype(dtype)
    params = [rng.standard_normal(w_shape).astype(dtype)]
    if draw(st.booleans()):
        params.append(rng.standard_normal(w_shape[0]).astype(dtype))
    return dtype, x, params, {**attrs, **epilogue(draw)}


@given(conv_cases(), TUNINGS)
def test_conv2d(case, tuning):
    dtype, x, params, attrs = case
    with tuned(**tuning):
        check_kernel("conv2d", [x], params, attrs, tol=TOL[dtype])


def channel_sizes(draw, total: int) -> tuple:
    """``total`` channels cut into consecutive runs (the outputs of merged sibling convolutions)."""
    cuts = sorted(draw(st.sets(st.integers(1, total - 1), max_size=3))) if total > 1 else []
    return tuple(int(d) for d in np.diff([0, *cuts, total]))


@given(conv_cases(), TUNINGS, st.data())
def test_conv2d_split(case, tuning, data):
    """Merged sibling convolutions: each output a channel slice of a NaN-filled buffer of its own
    (a concat's, strided when N > 1); small COLS_BYTES also cut the whole output into chunks of
    images."""
    dtype, x, params, attrs = case
    attrs["sizes"] = channel_sizes(data.draw, params[0].shape[0])
    with tuned(**tuning):
        check_kernel("conv2d_split", [x], params, attrs, tol=TOL[dtype])


@settings(max_examples=15)
@given(inception_graphs(max_blocks=2), st.integers(2, 4), st.integers(2, 3))
def test_merged_convolutions_split_across_threads(graph, batch, threads):
    """A conv2d_split launch cut into batch slices, one per thread, every output sliced alike — its
    outputs strided slices of the concats — still equals the reference executor."""
    saved = split.MIN_PART_FLOPS, split.MIN_PART_BYTES
    split.MIN_PART_FLOPS = split.MIN_PART_BYTES = 1  # split however small
    try:
        exe = graphrt.compile(graph, batch_size=batch, opt_level=3, threads=threads,
                              algorithms="default")
    finally:
        split.MIN_PART_FLOPS, split.MIN_PART_BYTES = saved
    for node in exe.graph.nodes:
        if node.op == "conv2d_split":
            assert exe.device.parts[node.name] == min(threads, batch), node.name
    x = np.random.default_rng(batch).standard_normal(graph.specs["x"].concrete(batch))
    x = x.astype(np.float32)
    assert relative_error(exe(x), graphrt.run_reference(graph, x)) < 1e-5


@pytest.mark.parametrize("shape, weight, attrs", [
    ((2, 3, 20, 20), (8, 3, 3, 3), {}),                               # first layer, C = 3
    ((2, 16, 9, 9), (24, 16, 1, 1), {"activation": "relu"}),         # pointwise
    ((3, 8, 12, 12), (12, 4, 5, 5), {"pads": 2, "groups": 2}),        # grouped, padded
    ((2, 6, 15, 15), (6, 6, 3, 3), {"stride": 2, "pads": 1, "activation": "sigmoid"}),
])
@pytest.mark.parametrize("cols_bytes", [None, 256, 3000])
def test_conv2d_layers(shape, weight, attrs, cols_bytes):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype(np.float32)
    params = [rng.standard_normal(weight).astype(np.float32) * 0.2,
              rng.standard_normal(weight[0]).astype(np.float32)]
    with tuned(COLS_BYTES=cols_bytes):
        check_kernel("conv2d", [x], params, attrs, tol=1e-5)


@pytest.mark.parametrize("axis", [2, 3])
@pytest.mark.parametrize("cols_bytes", [None, 200])
def test_conv2d_row_and_column_slices(axis, cols_bytes):
    """Outputs (and inputs) sliced along H or W (a concat along a spatial axis): output rows that do
    not flatten take the row-by-row GEMM."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 4, 9, 8)).astype(np.float32)
    params = [rng.standard_normal((6, 2, 3, 2)).astype(np.float32),
              rng.standard_normal(6).astype(np.float32)]
    for attrs in ({"pads": 1, "groups": 2, "activation": "relu", "negative_slope": 0.2},
                  {"stride": (2, 1), "dilation": (1, 2), "groups": 2}):
        with tuned(COLS_BYTES=cols_bytes):
            check_kernel("conv2d", [x], params, attrs, tol=1e-5, axis=axis)
    pointwise = [rng.standard_normal((5, 4, 1, 1)).astype(np.float32)]
    check_kernel("conv2d", [x], pointwise, {"activation": "tanh"}, tol=1e-5, axis=axis)
    check_kernel("conv2d_split", [x], pointwise, {"activation": "tanh", "sizes": (2, 3)}, tol=1e-5,
                 axis=axis)


@given(st.data())
def test_dense(data):
    draw = data.draw
    rng, dtype = rng_of(draw), draw(DTYPES)
    n, fin, fout = draw(st.integers(1, 5)), draw(st.integers(1, 9)), draw(st.integers(1, 40))
    x = rng.standard_normal((n, fin)).astype(dtype)
    params = [rng.standard_normal((fout, fin)).astype(dtype)]
    if draw(st.booleans()):
        params.append(rng.standard_normal(fout).astype(dtype))
    with tuned(**draw(TUNINGS)):
        check_kernel("dense", [x], params, epilogue(draw), tol=TOL[dtype])


# ---- pooling ------------------------------------------------------------------------------------
@st.composite
def pool_cases(draw, kind):
    rng, dtype = rng_of(draw), draw(DTYPES)
    n, c = draw(st.integers(1, 3)), draw(st.integers(1, 5))
    if draw(st.integers(0, 4)) == 0:
        x = rng.standard_normal((n, c, draw(st.integers(1, 9)), draw(st.integers(1, 9))))
        return dtype, x.astype(dtype), {"global_pool": True}
    kernel_a, (kh, kw) = pair_attr(draw, 1, 4)
    stride_a, _ = pair_attr(draw, 1, 3)
    pads_a, pads = pads_attr(draw, (min(kh - 1, 2), min(kw - 1, 2)))
    h = draw(st.integers(max(1, kh - pads[0] - pads[1]), 11))
    w = draw(st.integers(max(1, kw - pads[2] - pads[3]), 11))
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    attrs = {"kernel": kernel_a, "stride": stride_a, "pads": pads_a,
             "ceil_mode": draw(st.booleans())}
    if kind == "avg":
        attrs["count_include_pad"] = draw(st.booleans())
    return dtype, x, attrs


# the pitched layout in chunks of all images, a few images, a few channels or one plane; always
# pitched however much it wastes; never pitched (strided views of the input)
POOL_TUNINGS = st.sampled_from([{}, {"POOL_BYTES": 1, "POOL_GRAD_BYTES": 1},
                                {"POOL_BYTES": 1000, "POOL_GRAD_BYTES": 1500},
                                {"PITCH_WASTE": 10**9}, {"PITCH_WASTE": 0}])


@given(pool_cases("max"), POOL_TUNINGS)
def test_max_pool(case, tuning):
    dtype, x, attrs = case
    with tuned(P, **tuning):
        check_kernel("max_pool", [x], attrs=attrs, tol=TOL[dtype])


@given(pool_cases("avg"), POOL_TUNINGS)
def test_avg_pool(case, tuning):
    dtype, x, attrs = case
    with tuned(P, **tuning):
        check_kernel("avg_pool", [x], attrs=attrs, tol=TOL[dtype])


@pytest.mark.parametrize("op", ["max_pool", "avg_pool"])
@pytest.mark.parametrize("attrs", [{"kernel": 3, "stride": 2, "ceil_mode": True},
                                   {"kernel": 3, "stride": 1, "pads": 1},
                                   {"kernel": (2, 3), "stride": 2, "pads": (1, 0, 2, 1)}])
def test_pool_large_planes(op, attrs):
    """Large planes: the workspace holds a chunk of about POOL_BYTES (at least one plane)."""
    x = np.random.default_rng(5).standard_normal((2, 3, 70, 67)).astype(np.float32)
    if op == "avg_pool":
        attrs = {**attrs, "count_include_pad": False}
    for size in (P.POOL_BYTES, 1):
        with tuned(P, POOL_BYTES=size):
            check_kernel(op, [x], attrs=attrs, tol=1e-5)
            g, node, n = one_node(op, [x], attrs=attrs)
            assert 0 < K.WORKSPACES[op](node, g, n) <= max(size, 6 * 36 * 68 * 4)


def special_values(draw, rng, x, kind):
    """``x`` with ties (rounded), NaN, +-inf or whole planes of -inf drawn in (average pools: no
    -inf, whose sum with +inf would be an invalid operation)."""
    special = draw(st.sampled_from(["none", "ties", "nan", "inf", "plane"]))
    x = x.copy()
    if special == "ties":
        x = np.round(x).astype(x.dtype)
    elif special in ("nan", "inf"):
        values = [np.nan] if special == "nan" else [np.inf] + [-np.inf] * (kind == "max")
        for _ in range(draw(st.integers(1, 4))):
            x.flat[rng.integers(0, x.size)] = values[rng.integers(0, len(values))]
    elif special == "plane" and kind == "max":
        x[rng.integers(0, x.shape[0]), rng.integers(0, x.shape[1])] = -np.inf
    return x


def batch_cuts(draw, n):
    """Batch slices [cuts[i], cuts[i+1]) as the device splits a launch: whole, or in parts."""
    inner = draw(st.lists(st.integers(1, max(1, n - 1)), max_size=2, unique=True)) if n > 1 else []
    return [0, *sorted(inner), n]


def run_sliced(op, inputs, attrs, cuts, kernels, workspaces):
    """``op``'s kernel on batch slices of channel-slice views (each part with its own exactly
    sized NaN workspace, as the device runs a split launch) and the reference on plain arrays."""
    g, node, n = one_node(op, inputs, attrs=attrs)
    spec = g.specs[node.outputs[0]]
    expected = np.zeros(spec.concrete(n), spec.dtype)
    get_op(op).forward(node.attrs, [a.copy() for a in inputs], [expected])
    views = [channel_view(a) for a in inputs]
    out = channel_view(np.full(spec.concrete(n), np.nan, spec.dtype))
    for lo, hi in zip(cuts, cuts[1:]):
        size = workspaces[op](node, g, hi - lo) if op in workspaces else 0
        ws = np.full(size // 4, np.nan, np.float32) if size else None
        kernels[op](node.attrs, [v[lo:hi] for v in views], [out[lo:hi]], ws)
    assert untouched(out), f"{op} wrote outside its output slice"
    for view, a in zip(views, inputs):
        assert np.array_equal(view, a, equal_nan=True), f"{op} changed an input"
    return out, expected, node.attrs


@given(st.sampled_from(["max", "avg"]), st.data(), POOL_TUNINGS)
def test_pool_exact(kind, data, tuning):
    """The pitched (and strided) pools on batch slices, with ties, NaN and infinities: the
    reference's values to the bit (same order of operations), and naive loops' within rounding."""
    dtype, x, attrs = data.draw(pool_cases(kind))
    rng = rng_of(data.draw)
    x = special_values(data.draw, rng, x, kind)
    cuts = batch_cuts(data.draw, x.shape[0])
    with tuned(P, **tuning):
        out, ref, a = run_sliced(f"{kind}_pool", [x], attrs, cuts, K.KERNELS, K.WORKSPACES)
    assert np.array_equal(out, ref, equal_nan=True), f"{a}: not the reference's values"
    if a["global_pool"]:
        if np.isnan(x).any():  # the naive global max is Python's max(), which skips a NaN
            return
        naive_out = naive.global_max_pool(x) if kind == "max" else naive.global_avg_pool(x)
    else:
        geo = dict(kernel=a["kernel"], stride=a["stride"], pads=a["pads"], ceil_mode=a["ceil_mode"])
        naive_out = (naive.max_pool(x, **geo) if kind == "max" else
                     naive.avg_pool(x, **geo, count_include_pad=a["count_include_pad"]))
    if kind == "max":
        assert np.array_equal(out, naive_out.astype(dtype), equal_nan=True)
    elif np.isfinite(x).all():
        assert relative_error(out, naive_out) < TOL[dtype]


@pytest.mark.parametrize("op", ["max_pool", "avg_pool"])
@pytest.mark.parametrize("size", [7, 40])  # 40 x 40 windows: the average is one reduction
def test_global_pool(op, size):
    x = np.random.default_rng(4).standard_normal((2, 3, size, size)).astype(np.float32)
    check_kernel(op, [x], attrs={"global_pool": True}, tol=1e-5)
    check_kernel(op, [x], attrs={"kernel": size, "stride": 2}, tol=1e-5)


# ---- normalization ------------------------------------------------------------------------------
@given(st.data())
def test_lrn(data):
    draw = data.draw
    rng, dtype = rng_of(draw), draw(DTYPES)
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 12)), draw(st.integers(1, 6)),
             draw(st.integers(1, 6)))
    # channel magnitudes over 1e-2..1e2: a small channel next to large ones is the hard case
    spread = 10.0 ** rng.uniform(-2, 2, (1, shape[1], 1, 1)) if draw(st.booleans()) else 1.0
    x = (rng.standard_normal(shape) * spread).astype(dtype)
    attrs = {"size": draw(st.integers(1, 9)), "alpha": draw(floats(1e-4, 2.0)),
             "beta": draw(st.sampled_from([0.75]) | floats(0.25, 1.0)), "k": draw(floats(0.5, 2.0))}
    with tuned(LRN_BYTES=draw(st.sampled_from([None, 1, 3000]))):  # all images, or chunks
        check_kernel("lrn", [x], attrs=attrs, tol=TOL[dtype])


@given(st.data())
def test_batch_norm_and_channel_affine(data):
    draw = data.draw
    rng, dtype = rng_of(draw), draw(DTYPES)
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 6))) + tuple(
        draw(st.integers(1, 5)) for _ in range(draw(st.integers(0, 2))))
    c = shape[1]
    x = rng.standard_normal(shape).astype(dtype)
    stats = [rng.standard_normal(c).astype(dtype), rng.uniform(0.05, 3.0, c).astype(dtype)]
    if draw(st.booleans()):
        stats += [rng.standard_normal(c).astype(dtype), rng.standard_normal(c).astype(dtype)]
    inplace = draw(st.booleans())
    check_kernel("batch_norm", [x], stats, {"eps": draw(st.sampled_from([1e-5, 1e-3, 0.5]))},
                 tol=TOL[dtype], inplace=inplace)
    affine = [rng.standard_normal(c).astype(dtype) for _ in range(draw(st.integers(1, 2)))]
    check_kernel("channel_affine", [x], affine, tol=TOL[dtype], inplace=inplace)


@given(st.data())
def test_compiled_batch_norm_matches_naive_loops(data):
    """The cpu device's batch norm, inference and training (its running statistics after a few
    steps, per framework convention), against the per-element loops of tests/naive.py — not
    against graphrt's own reference forward."""
    import naive
    import naive_grad

    draw = data.draw
    rng, dtype = rng_of(draw), draw(DTYPES)
    shape = (draw(st.integers(2, 3)), draw(st.integers(1, 4))) + tuple(
        draw(st.integers(1, 3)) for _ in range(draw(st.integers(0, 2))))
    c = shape[1]
    x = (rng.standard_normal(shape) * 2 + 1).astype(dtype)
    stats = [rng.standard_normal(c).astype(dtype), rng.uniform(0.5, 2.0, c).astype(dtype)]
    affine = [rng.standard_normal(c).astype(dtype), rng.standard_normal(c).astype(dtype)]
    eps = draw(st.sampled_from([1e-5, 1e-3]))
    g, _, n = one_node("batch_norm", [x], stats + affine, {"eps": eps})
    g.set_outputs(["node"])
    for level in (0, 3):
        got = graphrt.compile(g, batch_size=n, opt_level=level)(x)
        assert relative_error(got, naive.batch_norm(x, *stats, *affine, eps=eps)) < TOL[dtype], level
    convention = draw(st.sampled_from([{"momentum": 0.1, "unbiased": True},
                                       {"momentum": 0.01, "unbiased": False},
                                       {"caffe_fraction": 0.9, "unbiased": True}]))
    count = [np.zeros(1, dtype)] if "caffe_fraction" in convention else []
    g, node, n = one_node("batch_norm_train", [x], affine + [s.copy() for s in stats] + count,
                          {"eps": eps, **convention})
    g.set_outputs([node.outputs[0]])
    exe = graphrt.compile(g, batch_size=n, opt_level=2)
    state = list(stats) + [c_.copy() for c_ in count]
    for _ in range(3):
        xs = (rng.standard_normal(shape) * 2 + 1).astype(dtype)
        want = naive_grad.batch_norm_train(xs, *affine, *state, eps=eps, **convention)
        assert relative_error(exe(xs), want[0]) < TOL[dtype]
        state = [v for v in want[3:] if v is not None]
    for i, expected in zip((2, 3), state):
        assert relative_error(exe.params[f"p{i}"], expected) < 10 * TOL[dtype], f"running statistic {i}"


# ---- elementwise --------------------------------------------------------------------------------
def elementwise_input(draw, rng, dtype, spread=3.0):
    rank = draw(st.integers(2, 4))
    shape = (draw(st.integers(1, 3)),) + tuple(draw(st.integers(1, 7)) for _ in range(rank - 1))
    x = (rng.standard_normal(shape) * spread).astype(dtype)
    x.ravel()[:: max(1, x.size // 3)] = 0.0  # exact zeros: the branch points of relu and sigmoid
    return x


def unary_steps():
    return st.one_of(
        st.tuples(st.just("relu"), st.fixed_dictionaries({}, optional={
            "negative_slope": st.sampled_from([0.1, -0.5, 1.0, 3.0]) | floats(-2.0, 2.0)})),
        st.tuples(st.sampled_from(["tanh", "sigmoid", "identity"]), st.just({})),
        st.tuples(st.just("dropout"), st.fixed_dictionaries({"rate": floats(0.0, 0.9)})),
        st.tuples(st.just("scale"), st.fixed_dictionaries({
            "power": st.sampled_from([1.0, 2.0, 3.0]), "scale": floats(-2.0, 2.0),
            "shift": floats(-1.0, 1.0)})))


@given(st.data(), unary_steps())
def test_unary(data, step):
    rng, dtype = rng_of(data.draw), data.draw(DTYPES)
    op, attrs = step
    x = elementwise_input(data.draw, rng, dtype, spread=data.draw(st.sampled_from([1.0, 30.0])))
    with tuned(**data.draw(TUNINGS)):
        check_kernel(op, [x], attrs=attrs, tol=TOL[dtype], inplace=data.draw(st.booleans()))


@given(st.data())
def test_elementwise_chain(data):
    rng, dtype = rng_of(data.draw), data.draw(DTYPES)
    x = elementwise_input(data.draw, rng, dtype, spread=1.0)
    steps = data.draw(st.lists(unary_steps(), min_size=1, max_size=4))
    with tuned(**data.draw(TUNINGS)):
        check_kernel("elementwise_chain", [x], attrs={"steps": steps}, tol=TOL[dtype],
                     inplace=data.draw(st.booleans()))


@given(st.data())
def test_add(data):
    draw = data.draw
    rng, dtype = rng_of(draw), draw(DTYPES)
    x = elementwise_input(draw, rng, dtype)
    k = draw(st.integers(1, 4))
    xs = [rng.standard_normal(x.shape).astype(dtype) for _ in range(k)]
    coeffs = draw(st.sampled_from([()]) | st.lists(floats(-2.0, 2.0), min_size=k, max_size=k))
    with tuned(**draw(TUNINGS)):
        check_kernel("add", xs, attrs={"coeffs": coeffs}, tol=TOL[dtype],
                     inplace=draw(st.booleans()))


# ---- softmax ------------------------------------------------------------------------------------
@given(st.data(), st.sampled_from(["softmax", "log_softmax"]))
def test_softmax(data, op):
    rng, dtype = rng_of(data.draw), data.draw(DTYPES)
    rank = data.draw(st.integers(2, 4))
    shape = (data.draw(st.integers(1, 3)),) + tuple(data.draw(st.integers(1, 6))
                                                    for _ in range(rank - 1))
    x = (rng.standard_normal(shape) * data.draw(st.sampled_from([1.0, 10.0, 100.0]))).astype(dtype)
    axis = data.draw(st.integers(-rank, rank - 1))
    check_kernel(op, [x], attrs={"axis": axis}, tol=TOL[dtype])


# ---- data movement ------------------------------------------------------------------------------
@given(st.data())
def test_concat_and_split(data):
    rng, dtype = rng_of(data.draw), data.draw(DTYPES)
    x = elementwise_input(data.draw, rng, dtype)
    axis = data.draw(st.integers(1, x.ndim - 1))
    others = [rng.standard_normal(x.shape[:axis] + (data.draw(st.integers(1, 4)),) + x.shape[axis + 1:])
              .astype(dtype) for _ in range(data.draw(st.integers(0, 3)))]
    check_kernel("concat", [x] + others, attrs={"axis": axis}, tol=TOL[dtype])
    sizes, left = [], x.shape[axis]
    while left:
        sizes.append(data.draw(st.integers(1, left)))
        left -= sizes[-1]
    check_kernel("split", [x], attrs={"axis": axis, "sizes": sizes}, tol=TOL[dtype])


@given(st.data())
def test_zero_pad(data):
    rng, dtype = rng_of(data.draw), data.draw(DTYPES)
    x = rng.standard_normal((data.draw(st.integers(1, 3)), data.draw(st.integers(1, 4)),
                             data.draw(st.integers(1, 6)), data.draw(st.integers(1, 6)))).astype(dtype)
    h, w = x.shape[2:]
    t, b = data.draw(st.integers(-h + 1, 3)), data.draw(st.integers(-h + 1, 3))
    l, r = data.draw(st.integers(-w + 1, 3)), data.draw(st.integers(-w + 1, 3))
    assume(h + t + b >= 1 and w + l + r >= 1)
    check_kernel("zero_pad", [x], attrs={"pads": (t, b, l, r)}, tol=TOL[dtype])


@pytest.mark.parametrize("pads", [(1, 2, -1, 3), (0, 0, 2, 0), (-2, 1, 0, -3)])
def test_zero_pad_large_planes(pads):
    x = np.random.default_rng(3).standard_normal((2, 3, 70, 66)).astype(np.float32)
    check_kernel("zero_pad", [x], attrs={"pads": pads}, tol=1e-12)


@given(st.data())
def test_reshape_flatten_transpose(data):
    rng, dtype = rng_of(data.draw), data.draw(DTYPES)
    x = elementwise_input(data.draw, rng, dtype)
    check_kernel("flatten", [x], attrs={"axis": 1}, tol=TOL[dtype])
    rest = int(np.prod(x.shape[1:]))
    check_kernel("reshape", [x], attrs={"shape": (-1,) if data.draw(st.booleans()) else (rest, 1)},
                 tol=TOL[dtype])
    perm = (0,) + tuple(data.draw(st.permutations(range(1, x.ndim))))
    check_kernel("transpose", [x], attrs={"perm": perm}, tol=TOL[dtype])


def test_every_kernel_is_tested():
    """Adding a cpu kernel without a test here fails; so does a workspace without a kernel."""
    assert set(K.KERNELS) - COVERED == set(), "add a test (and the op to COVERED)"
    assert set(K.WORKSPACES) <= set(K.KERNELS)
    for op, fn in K.KERNELS.items():
        assert get_op(op).name == op and callable(fn)


# ---- no allocation per step -----------------------------------------------------------------------
def _param(g, rng, name, shape, scale=0.3):
    return g.add_param(name, (rng.standard_normal(shape) * scale).astype(np.float32))


def small_sequential() -> Graph:
    """conv, batch norm, relu, max/avg pooling with padding, LRN, leaky relu, sigmoid, scale,
    zero_pad, an inception-style block (concat of four branches, two of them sibling 1x1
    convolutions that merge), dense and softmax."""
    rng = np.random.default_rng(0)
    g = Graph("small")
    x = g.add_input("x", (None, 3, 20, 20))
    y = g.add_node("conv2d", [x, _param(g, rng, "w1", (8, 3, 3, 3)), _param(g, rng, "b1", (8,))],
                   attrs={"pads": 1})
    y = g.add_node("batch_norm", [y, _param(g, rng, "m", (8,)),
                                  g.add_param("v", rng.uniform(0.5, 2, 8).astype(np.float32))])
    y = g.add_node("relu", [y])
    y = g.add_node("max_pool", [y], attrs={"kernel": 3, "stride": 2, "pads": 1, "ceil_mode": True})
    y = g.add_node("lrn", [y], attrs={"size": 5, "alpha": 1e-3, "beta": 0.75, "k": 2.0})
    a = g.add_node("relu", [g.add_node("conv2d", [y, _param(g, rng, "wa", (4, 8, 1, 1)),
                                                  _param(g, rng, "ba", (4,))])])
    b = g.add_node("conv2d", [y, _param(g, rng, "wb", (6, 4, 3, 3)), _param(g, rng, "bb", (6,))],
                   attrs={"pads": 1, "groups": 2})
    b = g.add_node("relu", [b], attrs={"negative_slope": 0.1})
    c = g.add_node("zero_pad", [y], attrs={"pads": 1})
    c = g.add_node("avg_pool", [c], attrs={"kernel": 3, "stride": 1})
    d = g.add_node("relu", [g.add_node("conv2d", [y, _param(g, rng, "wd", (3, 8, 1, 1)),
                                                  _param(g, rng, "bd", (3,))])])
    y = g.add_node("concat", [a, b, c, d])
    y = g.add_node("sigmoid", [y])
    y = g.add_node("scale", [y], attrs={"scale": 2.0, "shift": -1.0})
    y = g.add_node("avg_pool", [y], attrs={"kernel": 2, "stride": 2, "pads": 1,
                                           "count_include_pad": False})
    y = g.add_node("flatten", [y])
    y = g.add_node("dense", [y, _param(g, rng, "fw", (10, g.specs[y].shape[1])),
                             _param(g, rng, "fb", (10,))])
    g.set_outputs([g.add_node("softmax", [y])])
    return g.verify()


def _example(name):
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    from seed_models import example

    return example(name)


MODELS = {
    "small_sequential": small_sequential,
    "torch_lenet": lambda: _example("torch_lenet").build().to_graph(input_shape=(1, 28, 28), seed=0),
    "keras_simple_cnn": lambda: _example("keras_simple_cnn").build().to_graph(seed=0),
}


@pytest.mark.parametrize("model", sorted(MODELS))
def test_step_allocates_nothing(model):
    graph = MODELS[model]()
    batch = 8
    exe = graphrt.compile(graph, device="cpu", batch_size=batch, opt_level=3)
    spec = graph.specs[graph.inputs[0]]
    x = np.random.default_rng(0).standard_normal(spec.concrete(batch)).astype(spec.dtype)
    expected = graphrt.run_reference(graph, x)
    for _ in range(3):  # warm-up: programs built, caches filled, arena touched
        y = exe(x, copy=False)
    assert relative_error(y, expected) < 1e-4
    steps = 5
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        for _ in range(steps):
            exe(x, copy=False)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak - before < 64 * 1024, f"{model}: a step's peak allocation is {peak - before} bytes"
    assert (current - before) / steps < 64 * 1024
    kernels = {launch.op for launch in exe.program(batch).launches}
    assert kernels <= set(K.KERNELS), f"ops run by their reference forward: {kernels - set(K.KERNELS)}"
