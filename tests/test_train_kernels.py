"""The cpu device's training kernels (``graphrt/devices/cpu/train_kernels.py``) against the ops'
reference forwards (the reference executor's numpy rules) and against naive loops
(``tests/naive_grad.py``), run as the memory plan runs them: channel-slice views of NaN-filled
buffers, a workspace of exactly the reported size full of NaN, nothing written outside the output.
Chunk and block sizes are drawn small as well as at their defaults (every chunking path runs).
"""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import graphrt
import naive
import naive_grad
from graphrt import Graph
from graphrt.devices.cpu import device as cpu_device
from graphrt.devices.cpu import kernels as K
from graphrt.devices.cpu import conv_grad as C
from graphrt.devices.cpu import pool as P
from graphrt.devices.cpu import split
from graphrt.devices.cpu.threads import pool
from graphrt.devices.cpu import train_kernels as T
from graphrt.devices.cpu.train_kernels import TRAIN_KERNELS, TRAIN_WORKSPACES
from graphrt.ops import get_op
from graphrt.testing import relative_error
from test_conv_algorithms import split_everything
from test_cpu_kernels import (DTYPES, POOL_TUNINGS, TOL, TUNINGS, batch_cuts, channel_view,
                              conv_geometry, one_node, pads_attr, pair_attr, rng_of, run_sliced,
                              special_values, tuned, untouched)

NAIVE_TOL = {"float32": 1e-5, "float64": 1e-10}


def run_kernel(op, inputs, params=(), attrs=None):
    """(kernel outputs, reference outputs) of ``op`` on channel-slice views with an exactly sized
    NaN workspace; checks that nothing outside the outputs was written."""
    g, node, n = one_node(op, inputs, params, attrs)
    specs = [g.specs[t] for t in node.outputs]
    expected = [np.zeros(s.concrete(n), s.dtype) for s in specs]
    get_op(op).forward(node.attrs, [a.copy() for a in inputs] + list(params), expected)
    size = TRAIN_WORKSPACES[op](node, g, n)
    assert size > 0 and size % 4 == 0
    ws = np.full(size // 4, np.nan, np.float32)
    views = [channel_view(a) for a in inputs]
    outs = [channel_view(np.full(s.concrete(n), np.nan, s.dtype)) for s in specs]
    TRAIN_KERNELS[op](node.attrs, views + list(params), outs, ws)
    for out in outs:
        if out.ndim == 4:
            assert untouched(out), f"{op} wrote outside its output slice"
    for view, a in zip(views, inputs):
        assert np.array_equal(view, a, equal_nan=True), f"{op} changed an input"
    return outs[0], expected[0]


def check(op, dtype, inputs, params, attrs, naive_out):
    out, ref = run_kernel(op, inputs, params, attrs)
    assert out.dtype == ref.dtype
    err = relative_error(out, ref)
    assert err < TOL[dtype], f"{op} {attrs}: relative error {err:.3g} against the reference"
    err = relative_error(out, naive_out)
    assert err < NAIVE_TOL[dtype], f"{op} {attrs}: relative error {err:.3g} against naive loops"


# ---- convolution ----------------------------------------------------------------------------------
@st.composite
def conv_grad_cases(draw):
    rng, dtype = rng_of(draw), draw(DTYPES)
    x_shape, w_shape, attrs, geometry = conv_geometry(draw, 10, 5)
    x = rng.standard_normal(x_shape).astype(dtype)
    wt = rng.standard_normal(w_shape).astype(dtype)
    dy = rng.standard_normal(naive.conv2d(x, wt, **geometry).shape).astype(dtype)
    return dtype, x, wt, dy, attrs, geometry


@given(conv_grad_cases(), TUNINGS, st.sampled_from([0.0, None, 100.0]),
       st.sampled_from([0, None, 10**9]), st.sampled_from([0, None, 10**9]))
def test_conv2d_grad_input(case, tuning, flipped_area, nhwc_depth, col2im_nhwc):
    """Every path: the flipped forward convolution (stride 1: always with a large
    ``FLIPPED_AREA``), gathered channels-last (always with ``FLIPPED_NHWC_DEPTH`` 0) or NCHW (never
    with a huge one), and GEMM + col2im (always with ``FLIPPED_AREA`` 0), channels-last (always
    with ``COL2IM_NHWC`` 0) or NCHW (never with a huge one)."""
    dtype, x, wt, dy, attrs, geometry = case
    expected = naive_grad.conv2d_grad_input(dy, wt, x.shape[2:], **geometry)
    saved = C.FLIPPED_AREA, C.FLIPPED_NHWC_DEPTH, C.COL2IM_NHWC
    C.FLIPPED_AREA = saved[0] if flipped_area is None else flipped_area
    C.FLIPPED_NHWC_DEPTH = saved[1] if nhwc_depth is None else nhwc_depth
    C.COL2IM_NHWC = saved[2] if col2im_nhwc is None else col2im_nhwc
    C._FLIPPED.clear()  # cached per geometry with FLIPPED_AREA in its key; cleared all the same
    try:
        with tuned(**tuning):
            check("conv2d_grad_input", dtype, [dy], [wt], {**attrs, "input_size": x.shape[2:]},
                  expected)
    finally:
        C.FLIPPED_AREA, C.FLIPPED_NHWC_DEPTH, C.COL2IM_NHWC = saved


@given(conv_grad_cases(), TUNINGS)
def test_conv2d_grad_weight(case, tuning):
    dtype, x, wt, dy, attrs, geometry = case
    expected = naive_grad.conv2d_grad_weight(x, dy, wt.shape[2:], **geometry)
    with tuned(**tuning):
        check("conv2d_grad_weight", dtype, [x, dy], [], {**attrs, "kernel": wt.shape[2:]},
              expected)


# ---- pooling ---------------------------------------------------------------------------------------
@st.composite
def pool_cases(draw):
    rng, dtype = rng_of(draw), draw(DTYPES)
    kernel_a, kernel = pair_attr(draw, 1, 4)
    stride_a, stride = pair_attr(draw, 1, 3)
    pads_a, pads = pads_attr(draw, (kernel[0] - 1, kernel[1] - 1))
    h = draw(st.integers(max(1, kernel[0] - pads[0] - pads[1]), 10))
    w = draw(st.integers(max(1, kernel[1] - pads[2] - pads[3]), 10))
    n, c = draw(st.integers(1, 5)), draw(st.integers(1, 3))
    ceil = draw(st.booleans())
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    if draw(st.booleans()):  # ties: the first maximum of a window takes the gradient
        x = np.round(x).astype(dtype)
    attrs = {"kernel": kernel_a, "stride": stride_a, "pads": pads_a, "ceil_mode": ceil}
    geometry = dict(kernel=kernel, stride=stride, pads=pads, ceil_mode=ceil)
    return dtype, x, attrs, geometry, rng


@given(pool_cases(), POOL_TUNINGS, st.data())
def test_max_pool_grad(case, tuning, data):
    """On batch slices, with ties, NaN and infinities in x (y is x's max pool) and an inf in dy:
    the reference's values to the bit (the same adds in the same order), naive loops' when
    finite."""
    dtype, x, attrs, geometry, rng = case
    x = special_values(data.draw, rng, x, "max")
    y = naive.max_pool(x, **geometry).astype(dtype)
    dy = rng.standard_normal(y.shape).astype(dtype)
    if data.draw(st.integers(0, 3)) == 0:  # an inf in dy: the masked-copy path
        dy.flat[rng.integers(0, dy.size)] = np.inf
    cuts = batch_cuts(data.draw, x.shape[0])
    with tuned(P, **tuning):
        out, ref, _ = run_sliced("max_pool_grad", [x, y, dy], attrs, cuts, TRAIN_KERNELS,
                                 TRAIN_WORKSPACES)
    assert np.array_equal(out, ref, equal_nan=True), f"{attrs}: not the reference's values"
    if np.isfinite(x).all() and np.isfinite(dy).all():
        err = relative_error(out, naive_grad.max_pool_grad(x, dy, **geometry))
        assert err < NAIVE_TOL[dtype], f"{attrs}: relative error {err:.3g} against naive loops"


@given(pool_cases(), st.integers(6, 24), st.sampled_from([1, 3000, 10**9]), st.data())
def test_max_pool_grad_in_the_tail_of_dx(case, images, tail, data):
    """Chunks whose scratch is the part of dx not written yet (many images, the workspace's own
    chunks as small as can be): the reference's values to the bit, with NaN and infinities too;
    on a dx that overlaps an input, the workspace alone."""
    dtype, x, attrs, geometry, rng = case
    x = np.concatenate([x, rng.standard_normal((images,) + x.shape[1:]).astype(dtype)])
    x = special_values(data.draw, rng, x, "max")
    y = naive.max_pool(x, **geometry).astype(dtype)
    dy = rng.standard_normal(y.shape).astype(dtype)
    if data.draw(st.integers(0, 3)) == 0:
        dy.flat[rng.integers(0, dy.size)] = np.inf
    cuts = batch_cuts(data.draw, x.shape[0])
    with tuned(P, POOL_GRAD_BYTES=1, POOL_TAIL_BYTES=tail):
        out, ref, _ = run_sliced("max_pool_grad", [x, y, dy], attrs, cuts, TRAIN_KERNELS,
                                 TRAIN_WORKSPACES)
    assert np.array_equal(out, ref, equal_nan=True), f"{attrs}: not the reference's values"


def test_max_pool_grad_uses_the_tail_of_dx():
    """The tail path runs (its scratch is in dx: the workspace's NaN filler never reaches it)
    and gives the reference's values; CIFAR-10 quick's pool1 shape, 12 images."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((12, 4, 32, 32)).astype(np.float32)
    attrs = {"kernel": 3, "stride": 2, "ceil_mode": True}
    y = naive.max_pool(x, kernel=(3, 3), stride=(2, 2), pads=(0, 0, 0, 0),
                       ceil_mode=True).astype(np.float32)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    geo = P.geometry(get_op("max_pool").normalize_attrs(attrs), 32, 32, 16, 16)
    dx = np.full_like(x, np.nan)
    with tuned(P, POOL_GRAD_BYTES=1):  # chunks larger than the workspace's: from 1 image on
        done = P._max_grad_in_tail(geo, x, y, dy, dx, P._max_grad_per_plane(geo, 4))
        out, ref = run_kernel("max_pool_grad", [x, y, dy], [], attrs)
        shared = x.copy()  # dx over its own input: no tail
        none = P._max_grad_in_tail(geo, shared, y, dy, shared, P._max_grad_per_plane(geo, 4))
    assert 0 < done < 12 and none == 0
    assert np.array_equal(dx[:done], ref[:done]) and np.array_equal(out, ref)


@given(pool_cases(), st.booleans(), POOL_TUNINGS, st.data())
def test_avg_pool_grad(case, include_pad, tuning, data):
    """On batch slices: the reference's values to the bit, naive loops' within rounding."""
    dtype, x, attrs, geometry, rng = case
    y = naive.avg_pool(x, **geometry, count_include_pad=include_pad)
    dy = rng.standard_normal(y.shape).astype(dtype)
    attrs = {**attrs, "count_include_pad": include_pad, "input_size": x.shape[2:]}
    cuts = batch_cuts(data.draw, x.shape[0])
    with tuned(P, **tuning):
        out, ref, _ = run_sliced("avg_pool_grad", [dy], attrs, cuts, TRAIN_KERNELS,
                                 TRAIN_WORKSPACES)
    assert np.array_equal(out, ref), f"{attrs}: not the reference's values"
    expected = naive_grad.avg_pool_grad(dy, x.shape[2:], **geometry, count_include_pad=include_pad)
    err = relative_error(out, expected)
    assert err < NAIVE_TOL[dtype], f"{attrs}: relative error {err:.3g} against naive loops"


def test_max_pool_grad_nan():
    """A NaN in a window is its maximum (PyTorch's rule), as in the reference."""
    x = np.arange(2 * 1 * 4 * 4, dtype=np.float32).reshape(2, 1, 4, 4)
    x[0, 0, 1, 2] = np.nan
    attrs = {"kernel": 2, "stride": 2}
    y = np.full((2, 1, 2, 2), np.nan, np.float32)
    get_op("max_pool").forward(get_op("max_pool").normalize_attrs(attrs), [x], [y])
    dy = np.arange(1, 9, dtype=np.float32).reshape(2, 1, 2, 2)
    out, ref = run_kernel("max_pool_grad", [x, y, dy], [], attrs)
    assert np.array_equal(out, ref) and out[0, 0, 1, 2] == 2


@pytest.mark.parametrize("attrs", [{"kernel": 3, "stride": 2, "pads": 1, "ceil_mode": True},
                                   {"kernel": 3, "stride": 1, "pads": 1},
                                   {"kernel": 2, "stride": 2}])
def test_max_pool_grad_minus_inf(attrs):
    """A window of -inf gives its dy to its first real element, never to the padding (which the
    pitched layout fills with NaN for the hit test, not with the forward's -inf)."""
    x = np.full((2, 2, 5, 6), -np.inf, np.float32)
    x[1, 1] = np.arange(30, dtype=np.float32).reshape(5, 6)
    op = get_op("max_pool")
    a = op.normalize_attrs(attrs)
    y = np.zeros(op.infer(a, [graphrt.ir.TensorSpec((2, 2, 5, 6), "float32")], None)[0].shape,
                 np.float32)
    op.forward(a, [x], [y])
    dy = np.arange(1, y.size + 1, dtype=np.float32).reshape(y.shape)
    out, ref = run_kernel("max_pool_grad", [x, y, dy], [], attrs)
    assert np.array_equal(out, ref) and out.sum() == dy.sum()


# ---- relu ------------------------------------------------------------------------------------------
@given(st.data(), DTYPES, st.sampled_from([0.0, 0.1, -0.5, 2.0]), TUNINGS)
def test_relu_grad(data, dtype, slope, tuning):
    rng = rng_of(data.draw)
    shape = tuple(data.draw(st.lists(st.integers(1, 6), min_size=2, max_size=4)))
    dy = rng.standard_normal(shape).astype(dtype)
    t = np.round(rng.standard_normal(shape), 1).astype(dtype)  # zeros too: the slope applies
    with tuned(**tuning):
        check("relu_grad", dtype, [dy, t], [], {"negative_slope": slope},
              naive_grad.relu_grad(dy, t, slope))


# ---- bias gradients ----------------------------------------------------------------------------------
@given(st.data(), DTYPES)
def test_reduce_channels(data, dtype):
    """(N, C, ...) of 2 to 5 axes, odd sizes, a channel slice of a wider buffer (strided), large
    values of both signs (cancellation): against math.fsum per channel and the reference."""
    rng = rng_of(data.draw)
    shape = tuple(data.draw(st.lists(st.integers(1, 9), min_size=2, max_size=5)))
    scale = data.draw(st.sampled_from([1.0, 1e4]))
    dy = (rng.standard_normal(shape) * scale + data.draw(st.sampled_from([0.0, 3.0]))).astype(dtype)
    check("reduce_channels", dtype, [dy], [], {}, naive_grad.reduce_channels(dy))


# ---- dropout ---------------------------------------------------------------------------------------
@given(st.data(), DTYPES)
def test_dropout_train(data, dtype):
    """The mask bit for bit the reference's (Philox, :func:`dropout_mask`) and an independent
    float64 draw's (philox.uniform >= rate): odd sizes, several blocks (a small ``BLOCKS``), large
    seeds and steps, data-parallel offsets (a multiple of 4 elements or not: the first block
    drawn whole, its words before the start dropped); the counter advanced once."""
    from graphrt.devices.cpu import dropout as D
    from graphrt.ops import philox

    rng = rng_of(data.draw)
    shape = tuple(data.draw(st.lists(st.integers(1, 9), min_size=1, max_size=4)))
    rate = data.draw(st.sampled_from([0.0, 0.1, 0.5, 0.9]))
    seed = data.draw(st.sampled_from([0, 7, 2**40 + 3]))
    step = data.draw(st.sampled_from([0, 5, 2**33 + 1]))
    offset = data.draw(st.sampled_from([0, 0, 1, 4]))
    attrs = get_op("dropout_train").normalize_attrs({"rate": rate, "seed": seed, "offset": offset})
    x = rng.standard_normal(shape).astype(dtype)
    saved = D.BLOCKS
    D.BLOCKS = data.draw(st.sampled_from([1, 3, saved]))
    try:
        ws = np.full(D.workspace_of(x.size) // 4, np.nan, np.float32)
        y, mask = np.full_like(x, np.nan), np.full_like(x, np.nan)
        counter = np.array(step, np.int64)
        TRAIN_KERNELS["dropout_train"](attrs, [x, counter], [y, mask], ws)
    finally:
        D.BLOCKS = saved
    want_y, want_mask = np.empty_like(x), np.empty_like(x)
    get_op("dropout_train").forward(attrs, [x, np.array(step, np.int64)], [want_y, want_mask])
    assert np.array_equal(mask, want_mask) and np.array_equal(y, want_y) and int(counter) == step + 1
    per = x.size // shape[0]
    u = philox.uniform(x.size, seed, step, offset * per).reshape(shape)
    assert np.array_equal(mask != 0, u >= rate)


def serial_parts(calls):
    """A ``run_parts`` that runs the parts one after another, in reverse order (a part must not
    depend on another's having run first)."""
    for fn, args in reversed(calls):
        fn(*args)


def split_run(op, k, parallel, attrs, inputs, outputs, per_part_ws):
    """``op``'s training kernel cut into ``k`` parts by :func:`split.split_kernel` (on the pool's
    ``k`` threads, or one after another), each with a NaN share of ``per_part_ws`` bytes."""
    share = split.workspace_share(per_part_ws)
    fn = split.split_kernel(TRAIN_KERNELS[op], op, k, False, share,
                            pool(k).run if parallel else serial_parts)
    ws = np.full(k * share // 4, np.nan, np.float32) if share else None
    fn(attrs, inputs, outputs, ws)


@given(st.data(), DTYPES, st.integers(2, 4), st.booleans())
def test_dropout_train_split(data, dtype, k, parallel):
    """Cut into batch slices (any number of rows, rows of any number of elements: slices that start
    mid-block), each part drawing its own rows' counters: the mask and y bit for bit one launch's
    and the reference's, the counter advanced once; every element written."""
    from graphrt.devices.cpu import dropout as D

    rng = rng_of(data.draw)
    shape = tuple(data.draw(st.lists(st.integers(1, 7), min_size=1, max_size=4)))
    attrs = get_op("dropout_train").normalize_attrs({
        "rate": data.draw(st.sampled_from([0.0, 0.2, 0.5, 0.9])),
        "seed": data.draw(st.sampled_from([0, 11, 2**50 + 5])),
        "offset": data.draw(st.sampled_from([0, 1, 3, 6]))})
    step = data.draw(st.sampled_from([0, 9, 2**32 + 7]))
    x = rng.standard_normal(shape).astype(dtype)
    saved = D.BLOCKS
    D.BLOCKS = data.draw(st.sampled_from([1, 2, saved]))
    try:
        per_part = D.workspace_of(split.part_batch(shape[0], min(k, shape[0])) * x[0].size)
        y, mask = np.full_like(x, np.nan), np.full_like(x, np.nan)
        counter = np.array(step, np.int64)
        split_run("dropout_train", k, parallel, attrs, [x, counter], [y, mask], per_part)
    finally:
        D.BLOCKS = saved
    want_y, want_mask = np.empty_like(x), np.empty_like(x)
    get_op("dropout_train").forward(attrs, [x, np.array(step, np.int64)], [want_y, want_mask])
    assert np.array_equal(mask, want_mask) and np.array_equal(y, want_y)
    assert int(counter) == step + 1
    # and a naive draw: philox.uniform of the elements' global indices, one element at a time
    from graphrt.ops import philox
    per = x.size // shape[0]
    flat = mask.reshape(-1)
    for e in rng.choice(x.size, min(x.size, 5), replace=False):
        u = philox.uniform(1, attrs["seed"], step, attrs["offset"] * per + int(e))[0]
        assert (flat[e] != 0) == (u >= attrs["rate"])


@given(st.data(), DTYPES, st.integers(1, 4), st.booleans())
def test_dense_grads(data, dtype, k, parallel):
    """dense_grad_input (dy @ w) and dense_grad_weight (dy.T @ x) into views of NaN buffers (the
    input gradient a column slice, as a concat's branch): the reference's values, a float64 loop's
    within rounding, and cut into k column / row tiles (the split) one launch's within rounding:
    each output element sums over the same inner dimension, but BLAS's small-matrix and edge
    kernels (a 1-row GEMV, float64 tails) may order that sum differently for a narrower tile. At
    the models' shapes the tiles are bit for bit one launch's: test_dense_grads_split_bits."""
    rng = rng_of(data.draw)
    n, o, i = (data.draw(st.integers(1, 40)) for _ in range(3))
    dy = rng.standard_normal((n, o)).astype(dtype)
    w = rng.standard_normal((o, i)).astype(dtype)
    x = rng.standard_normal((n, i)).astype(dtype)
    a64 = [np.abs(a.astype(np.float64)) for a in (dy, w, x)]
    for op, ins, shape, naive_out, scale in [
            ("dense_grad_input", [dy, w], (n, i), naive_grad.dense_grad_input(dy, w),
             a64[0] @ a64[1]),
            ("dense_grad_weight", [dy, x], (o, i), naive_grad.dense_grad_weight(dy, x),
             a64[0].T @ a64[2])]:
        assert TRAIN_WORKSPACES[op](None, None, n) == 0
        want = np.empty(shape, dtype)
        get_op(op).forward({}, ins, [want])
        big = np.full((shape[0], shape[1] + 5), np.nan, dtype)
        out = big[:, 2:2 + shape[1]]
        TRAIN_KERNELS[op]({}, ins, [out], None)
        assert np.isnan(big[:, :2]).all() and np.isnan(big[:, 2 + shape[1]:]).all()
        assert relative_error(out, want) < TOL[dtype]
        # each element against the float64 sum, relative to the sum of its terms' magnitudes
        # (a short sum that cancels has a tiny result and a float32 rounding of its terms' size)
        assert (np.abs(out - naive_out) <= NAIVE_TOL[dtype] * (scale + 1e-30)).all()
        parts = np.full(shape, np.nan, dtype)
        split_run(op, k, parallel, {}, ins, [parts], 0)
        assert (np.abs(parts - out) <= TOL[dtype] * (scale + 1e-30)).all(), \
            f"{op}: {k} parts differ from one launch"


@pytest.mark.parametrize("n, o, i", [(16, 256, 30976), (64, 500, 800), (100, 64, 1024),
                                     (64, 10, 500), (16, 128, 256)])
def test_dense_grads_split_bits(n, o, i):
    """The dense layers of the Keras CNN, LeNet and CIFAR-10 quick (float32, BLAS at one thread
    as in a step): their gradients cut in 2 and 3 tiles on the pool are bit for bit one launch's."""
    from graphrt.devices.cpu.threads import blas_single_thread

    rng = np.random.default_rng(n * o + i)
    dy, w, x = (rng.standard_normal(s).astype(np.float32) for s in [(n, o), (o, i), (n, i)])
    with blas_single_thread():
        for op, ins, shape in [("dense_grad_input", [dy, w], (n, i)),
                               ("dense_grad_weight", [dy, x], (o, i))]:
            one = np.empty(shape, np.float32)
            TRAIN_KERNELS[op]({}, ins, [one], None)
            for k in (2, 3):
                parts = np.full(shape, np.nan, np.float32)
                split_run(op, k, True, {}, ins, [parts], 0)
                assert np.array_equal(parts, one), f"{op} {shape}: {k} parts"


@given(st.data(), DTYPES, st.integers(2, 4), st.booleans())
def test_sgd_update_split(data, dtype, k, parallel):
    """Cut into element blocks (sizes below, at and past k aligned blocks): bit for bit one
    launch's update of the parameter and the velocity."""
    rng = rng_of(data.draw)
    size = data.draw(st.sampled_from([1, 15, 16, 17, 33, 64, 100, 1000, 40000]))
    block = data.draw(st.sampled_from([7, 50, T.SGD_BLOCK]))
    shape = (size,) if data.draw(st.booleans()) or size % 4 else (4, size // 4)
    param, grad, velocity = (rng.standard_normal(shape).astype(dtype) for _ in range(3))
    it = np.array(data.draw(st.integers(0, 30)), np.int64)
    attrs = get_op("sgd_update").normalize_attrs({
        "lr": 0.01, "momentum": data.draw(st.sampled_from([0.0, 0.9])),
        "weight_decay": data.draw(st.sampled_from([0.0, 5e-4])),
        "convention": data.draw(st.sampled_from(["pytorch", "caffe"]))})
    g = Graph("sgd")
    names = [g.add_param(f"p{j}", a) for j, a in enumerate([param, grad, velocity])]
    g.add_node("sgd_update", names + [g.add_param("it", it)], name="node", attrs=attrs)
    with tuned(T, SGD_BLOCK=block):
        per_part = TRAIN_WORKSPACES["sgd_update"](g.node("node"), g, 1)
        want_p, want_v = param.copy(), velocity.copy()
        ws = np.full(per_part // 4, np.nan, np.float32)
        TRAIN_KERNELS["sgd_update"](attrs, [want_p, grad, want_v, it], [], ws)
        p, v = param.copy(), velocity.copy()
        split_run("sgd_update", k, parallel, attrs, [p, grad, v, it], [], per_part)
    assert np.array_equal(p, want_p) and np.array_equal(v, want_v)


# ---- batch normalization ---------------------------------------------------------------------------
BN_CONVENTIONS = st.sampled_from([{"momentum": 0.1, "unbiased": True},
                                  {"momentum": 0.01, "unbiased": False},
                                  {"momentum": 1.0, "unbiased": True},
                                  {"caffe_fraction": 0.999, "unbiased": True},
                                  {"caffe_fraction": 0.5, "unbiased": False}])
# default sizes; a group of sums and a block of one channel; a few channels per group and block
BN_TUNINGS = st.sampled_from([{}, {"BN_CHUNK": 1, "BN_GROUP": 1}, {"BN_CHUNK": 200, "BN_GROUP": 60},
                              {"BN_CHUNK": 5000, "BN_BIG_GROUP": 700, "BN_GEMV_HW": 20},
                              {"BN_GEMV_HW": 1}, {"BN_GEMV_HW": 1, "BN_BIG_GROUP": 1}])


@st.composite
def bn_cases(draw, max_n=5, max_c=40, max_side=9):
    """x of (N, C) or (N, C, H, W) with odd sizes, values offset from 0 (a mean to remove) and of
    any scale."""
    rng, dtype = rng_of(draw), draw(DTYPES)
    n, c = draw(st.integers(1, max_n)), draw(st.integers(1, max_c))
    spatial = draw(st.sampled_from([(), None]))
    if spatial is None:
        spatial = (draw(st.integers(1, max_side)), draw(st.integers(1, max_side)))
    scale = draw(st.sampled_from([1.0, 1e-3, 50.0]))
    shift = draw(st.sampled_from([0.0, 3.0, -100.0]))
    x = (rng.standard_normal((n, c) + spatial) * scale + shift).astype(dtype)
    return rng, dtype, x


def bn_grad_node(x, dy, params, attrs=None):
    """A one-node ``batch_norm_train_grad`` graph over batched inputs x and dy and the parameters
    (gamma, saved_mean, saved_invstd), in the op's input order; returns (graph, node, batch)."""
    g = Graph("batch_norm_train_grad")
    xi = g.add_input("in0", (None,) + x.shape[1:], str(x.dtype))
    dyi = g.add_input("in1", (None,) + dy.shape[1:], str(dy.dtype))
    names = [g.add_param(f"p{i}", a) for i, a in enumerate(params)]
    g.add_node("batch_norm_train_grad", [xi] + names + [dyi], name="node", attrs=attrs or {})
    return g, g.node("node"), x.shape[0]


def bn_run(op, inputs, params, attrs, parts=1):
    """``op``'s kernel on channel-slice views (NaN around them) with an exactly sized NaN
    workspace, in ``parts`` channel blocks as the device's channel split runs them (the parts in
    turn), and the reference on copies: (kernel outputs, reference outputs, kernel state,
    reference state) — state: the parameters the op updates in place."""
    g, node, n = (one_node(op, inputs, params, attrs) if op == "batch_norm_train"
                  else bn_grad_node(*inputs, params, attrs))
    specs = [g.specs[t] for t in node.outputs]
    size = TRAIN_WORKSPACES[op](node, g, n)
    assert size > 0 and size % 4 == 0
    share = split.workspace_share(size)
    ws = np.full(parts * share // 4, np.nan, np.float32)
    views = [channel_view(a) for a in inputs]
    state = [p.copy() for p in params]
    outs = [channel_view(np.full(s.concrete(n), np.nan, s.dtype)) if len(s.shape) > 1
            else np.full(s.concrete(n), np.nan, s.dtype) for s in specs]
    kernel = TRAIN_KERNELS[op]
    if parts > 1:
        kernel = split.split_kernel(kernel, op, parts, False, share,
                                    lambda calls: [f(*args) for f, args in calls])
    if op == "batch_norm_train":
        args = [views[0]] + state
    else:
        args = [views[0]] + state + [views[1]]
    kernel(node.attrs, args, outs, ws)
    for out in outs:
        if out.ndim > 1:
            assert untouched(out), f"{op} wrote outside its output slice"
    for view, a in zip(views, inputs):
        assert np.array_equal(view, a), f"{op} changed an input"
    expected = [np.zeros(s.concrete(n), s.dtype) for s in specs]
    ref_state = [p.copy() for p in params]
    ref_args = [inputs[0].copy()] + ref_state + [a.copy() for a in inputs[1:]]
    get_op(op).forward(node.attrs, ref_args, expected)
    return outs, expected, state, ref_state


def bn_params(rng, dtype, c, count):
    gamma = rng.standard_normal(c).astype(dtype)
    beta = rng.standard_normal(c).astype(dtype)
    stats = [rng.standard_normal(c).astype(dtype), rng.uniform(0.5, 2.0, c).astype(dtype)]
    return [gamma, beta] + stats + count


@given(bn_cases(), BN_CONVENTIONS, st.sampled_from([1e-5, 1e-3]), st.booleans(), BN_TUNINGS,
       st.integers(2, 4))
def test_batch_norm_train(case, convention, eps, counted, tuning, parts):
    """y, the saved mean and invstd, the running statistics (and Caffe's scale factor or the step
    counter) against the reference forward and (small cases) naive float64 loops; split into 2-4
    channel blocks the outputs and the state are bit for bit the unsplit kernel's."""
    rng, dtype, x = case
    c = x.shape[1]
    count = [np.array([draw_count], dtype) for draw_count in [3.0]] if (
        counted or "caffe_fraction" in convention) else []
    params = bn_params(rng, dtype, c, count)
    attrs = {"eps": eps, **convention}
    with tuned(T, **tuning):
        outs, expected, state, ref_state = bn_run("batch_norm_train", [x], params, attrs)
        for got, want in zip(outs + state[2:], expected + ref_state[2:]):
            assert got.dtype == want.dtype
            err = relative_error(got, want)
            assert err < TOL[dtype], f"relative error {err:.3g} against the reference"
        if x.size <= 4000:
            naive_out = naive_grad.batch_norm_train(x, *params[:4], *(count or [None]), eps=eps,
                                                    **convention)
            # the reference (and the kernel) subtract the mean rounded to x's dtype: an error of
            # |mean| * eps against a spread of std
            spread = np.std(x.astype(np.float64), axis=tuple(i for i in range(x.ndim) if i != 1))
            cond = 1 + float(np.max(np.abs(x)) / max(float(np.min(spread)), 1e-30))
            for got, want in zip(outs + state[2:4], naive_out[:5]):
                assert relative_error(got, want) < NAIVE_TOL[dtype] * min(cond, 1e6)
            if count:  # the counter in the state's dtype
                assert state[4][0] == np.asarray(naive_out[5], dtype)
        split_outs, _, split_state, _ = bn_run("batch_norm_train", [x], params, attrs, parts)
    for a, b in zip(outs + state, split_outs + split_state):
        assert np.array_equal(a, b), "a channel split changed the result"


@given(bn_cases(), BN_TUNINGS, st.integers(2, 4))
def test_batch_norm_train_grad(case, tuning, parts):
    """dx, dgamma, dbeta from the statistics the forward saved, against the reference and (small
    cases) the naive Jacobian; split into 2-4 channel blocks bit for bit the unsplit kernel's."""
    rng, dtype, x = case
    c = x.shape[1]
    gamma = rng.standard_normal(c).astype(dtype)
    y, mean, invstd = (np.zeros(x.shape, dtype), np.zeros(c, dtype), np.zeros(c, dtype))
    get_op("batch_norm_train").forward(
        get_op("batch_norm_train").normalize_attrs({"eps": 1e-3}),
        [x, gamma, np.zeros(c, dtype), np.zeros(c, dtype), np.ones(c, dtype)], [y, mean, invstd])
    dy = (rng.standard_normal(x.shape) * data_scale(rng)).astype(dtype)
    params = [gamma, mean, invstd]
    with tuned(T, **tuning):
        outs, expected, _, _ = bn_run("batch_norm_train_grad", [x, dy], params, {})
        for got, want in zip(outs, expected):
            assert got.dtype == want.dtype
            err = relative_error(got, want)
            assert err < TOL[dtype], f"relative error {err:.3g} against the reference"
        if x.size // c <= 60:
            for got, want in zip(outs, naive_grad.batch_norm_train_grad(x, gamma, mean, invstd, dy)):
                assert relative_error(got, want) < NAIVE_TOL[dtype] * 10
        split_outs, _, _, _ = bn_run("batch_norm_train_grad", [x, dy], params, {}, parts)
    for a, b in zip(outs, split_outs):
        assert np.array_equal(a, b), "a channel split changed the result"


def data_scale(rng):
    return float(rng.choice([1.0, 1e-2, 30.0]))


def test_batch_norm_kernels_leave_the_rest_to_the_reference():
    """A ``group`` (synchronized batch norm), float16 and a layout without per-image planes run
    the reference: its results bit for bit."""
    rng = np.random.default_rng(3)
    for dtype, attrs, transpose in (("float32", {"group": "g"}, False),
                                    ("float16", {}, False), ("float32", {}, True)):
        x = rng.standard_normal((3, 4, 5, 6)).astype(dtype)
        if transpose:
            x = np.ascontiguousarray(x.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
        c = x.shape[1]
        params = bn_params(rng, dtype, c, [])
        g, node, n = one_node("batch_norm_train", [x], params, attrs)
        ws = np.full(TRAIN_WORKSPACES["batch_norm_train"](node, g, n) // 4, np.nan, np.float32)
        outs = [np.empty(x.shape, dtype), np.empty(c, dtype), np.empty(c, dtype)]
        state = [p.copy() for p in params]
        TRAIN_KERNELS["batch_norm_train"](node.attrs, [x] + state, outs, ws)
        want = [np.empty(x.shape, dtype), np.empty(c, dtype), np.empty(c, dtype)]
        ref_state = [p.copy() for p in params]
        get_op("batch_norm_train").forward(node.attrs, [x] + ref_state, want)
        for a, b in zip(outs + state, want + ref_state):
            assert np.array_equal(a, b), (dtype, attrs, transpose)
        dy = rng.standard_normal(x.shape).astype(dtype)
        g, node, n = bn_grad_node(x, dy, [params[0], outs[1], outs[2]], attrs)
        ws = np.full(TRAIN_WORKSPACES["batch_norm_train_grad"](node, g, n) // 4, np.nan,
                     np.float32)
        got = [np.empty(x.shape, dtype), np.empty(c, dtype), np.empty(c, dtype)]
        TRAIN_KERNELS["batch_norm_train_grad"](node.attrs, [x, params[0], outs[1], outs[2], dy],
                                               got, ws)
        want = [np.empty(x.shape, dtype), np.empty(c, dtype), np.empty(c, dtype)]
        get_op("batch_norm_train_grad").forward(node.attrs, [x, params[0], outs[1], outs[2], dy],
                                                want)
        for a, b in zip(got, want):
            assert np.array_equal(a, b), (dtype, attrs, transpose)


@given(bn_cases(max_n=5, max_c=40, max_side=7), BN_CONVENTIONS, st.sampled_from([1, 40, 300]),
       st.sampled_from([2048, 10]))
def test_batch_norm_compiled_two_threads_bit_equal_one(case, convention, group, gemv_hw):
    """``batch_norm_train`` (with a step counter) and ``batch_norm_train_grad`` compiled on the
    cpu device with 2 and 3 threads, split by channel blocks however small (groups of ``group``
    elements, planes summed by GEMV or by ufuncs): their outputs and the running statistics bit for bit one thread's, over two
    steps."""
    rng, dtype, x = case
    c = x.shape[1]
    count = [np.zeros(1, dtype)]
    params = bn_params(rng, dtype, c, count)
    dy = rng.standard_normal(x.shape).astype(dtype)
    results = {}
    for threads in (1, 2, 3):
        with split_everything(), tuned(T, BN_GROUP=group, BN_BIG_GROUP=group, BN_GEMV_HW=gemv_hw):
            g, node, n = one_node("batch_norm_train", [x], [p.copy() for p in params], convention)
            g.set_outputs(list(node.outputs))
            fwd = graphrt.compile(g, batch_size=n, opt_level=2, threads=threads)
            gg, gnode, _ = bn_grad_node(x, dy, [params[0], np.ones(c, dtype), np.ones(c, dtype)])
            gg.set_outputs(list(gnode.outputs))
            bwd = graphrt.compile(gg, batch_size=n, opt_level=2, threads=threads)
            if threads > 1 and c > T.bn_channel_group(x.shape):
                assert fwd.device.parts.get("node", 1) > 1 and bwd.device.parts.get("node", 1) > 1
            got = []
            for step in range(2):
                out = fwd(x + step)
                y, mean, invstd = (np.array(out[t]) for t in node.outputs)
                bwd.params["p1"][...] = mean
                bwd.params["p2"][...] = invstd
                grads = bwd((x + step, dy))
                got += [y, mean, invstd] + [np.array(grads[t]) for t in gnode.outputs]
            got += [fwd.params[f"p{i}"].copy() for i in (2, 3, 4)]
            results[threads] = got
    for threads in (2, 3):
        for i, (a, b) in enumerate(zip(results[1], results[threads])):
            assert np.array_equal(a, b), f"{threads} threads: result {i} differs"


# ---- the SGD update --------------------------------------------------------------------------------
def test_every_training_kernel_is_tested():
    tested = {"conv2d_grad_input", "conv2d_grad_weight", "max_pool_grad", "avg_pool_grad",
              "relu_grad", "reduce_channels", "sgd_update", "dropout_train", "dense_grad_input",
              "dense_grad_weight", "batch_norm_train", "batch_norm_train_grad"}
    assert set(TRAIN_KERNELS) == tested == set(TRAIN_WORKSPACES)
    assert not set(TRAIN_KERNELS) & set(K.KERNELS)


def sgd_reference(attrs, param, grad, velocity, it):
    p, v = param.copy(), velocity.copy()
    get_op("sgd_update").forward(attrs, [p, grad, v, it], [])
    return p, v


@given(st.data(), DTYPES, st.sampled_from(["pytorch", "caffe"]), TUNINGS)
def test_sgd_update(data, dtype, convention, tuning):
    rng = rng_of(data.draw)
    shape = tuple(data.draw(st.lists(st.integers(1, 7), min_size=1, max_size=4)))
    param, grad, velocity = (rng.standard_normal(shape).astype(dtype) for _ in range(3))
    it = np.array(data.draw(st.integers(0, 30)), np.int64)
    attrs = get_op("sgd_update").normalize_attrs({
        "lr": 0.01, "momentum": data.draw(st.sampled_from([0.0, 0.9])),
        "weight_decay": data.draw(st.sampled_from([0.0, 5e-4])), "lr_mult": 2.0,
        "decay_mult": data.draw(st.sampled_from([0.0, 1.0])), "policy": "step", "gamma": 0.5,
        "stepsize": 7, "convention": convention})
    g = Graph("sgd")
    names = [g.add_param(f"p{i}", a) for i, a in enumerate([param, grad, velocity])]
    g.add_node("sgd_update", names + [g.add_param("it", it)], name="node", attrs=attrs)
    node = g.node("node")
    with tuned(T, SGD_BLOCK=tuning.get("BLOCK")):  # the update's own block, small as the others
        size = TRAIN_WORKSPACES["sgd_update"](node, g, 1)
        ws = np.full(size // 4, np.nan, np.float32)
        p, v = param.copy(), velocity.copy()
        TRAIN_KERNELS["sgd_update"](node.attrs, [p, grad, v, it], [], ws)
    want_p, want_v = sgd_reference(node.attrs, param, grad, velocity, it)
    assert np.array_equal(p, want_p) and np.array_equal(v, want_v)  # the same ufuncs in order
    # independently: torch.optim.SGD's / Caffe's rule written out in float64
    lr = 0.01 * 0.5 ** (int(it) // 7) * 2.0
    g64 = grad.astype(np.float64) + attrs["weight_decay"] * attrs["decay_mult"] * param
    v64 = attrs["momentum"] * velocity.astype(np.float64)
    v64 = v64 + (lr * g64 if convention == "caffe" else g64)
    p64 = param - (v64 if convention == "caffe" else lr * v64)
    assert relative_error(v, v64) < TOL[dtype] * 10 and relative_error(p, p64) < TOL[dtype] * 10


# ---- whole training steps: kernels and threads against the reference rules ---------------------------
def small_training_graph(size: int = 13) -> Graph:
    """Padded, grouped and strided convolutions, batch norm, leaky relu, overlapping max pooling in
    ceil mode, dropout, average pooling, dense layers (the hidden one's gradients 32 rows / columns
    wide: two tiles of :data:`split.TILE`) and a log-softmax output."""
    rng = np.random.default_rng(0)
    g = Graph("small_train")
    x = g.add_input("x", (None, 3, size, size))

    def param(name, shape):
        return g.add_param(name, (rng.standard_normal(shape) * 0.3).astype(np.float32))
    y = g.add_node("conv2d", [x, param("w1", (8, 3, 3, 3)), param("b1", (8,))], attrs={"pads": 1})
    y = g.add_node("batch_norm", [y, param("bn_mean", (8,)),
                                  g.add_param("bn_var", rng.uniform(0.5, 2.0, 8).astype(np.float32)),
                                  param("bn_gamma", (8,)), param("bn_beta", (8,))],
                   attrs={"eps": 1e-3, "momentum": 0.2})
    y = g.add_node("relu", [y], attrs={"negative_slope": 0.1})
    y = g.add_node("max_pool", [y], attrs={"kernel": 3, "stride": 2, "ceil_mode": True})
    y = g.add_node("dropout", [y], attrs={"rate": 0.3})
    y = g.add_node("conv2d", [y, param("w2", (6, 4, 3, 3)), param("b2", (6,))],
                   attrs={"pads": (1, 0), "stride": (1, 2), "groups": 2})
    y = g.add_node("relu", [y])
    y = g.add_node("avg_pool", [y], attrs={"kernel": 2, "stride": 1, "pads": 1})
    y = g.add_node("flatten", [y])
    y = g.add_node("dense", [y, param("hw", (32, g.specs[y].shape[1])), param("hb", (32,))])
    y = g.add_node("relu", [y])
    y = g.add_node("dense", [y, param("fw", (5, 32)), param("fb", (5,))])
    g.set_outputs([g.add_node("log_softmax", [y])])
    return g.verify()


def _train(graph, threads, steps=3, batch=6):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((batch,) + graph.specs[graph.inputs[0]].shape[1:]).astype(np.float32)
    labels = rng.integers(0, 5, batch)
    trainer = graphrt.Trainer(graph, optimizer=graphrt.optim.SGD(lr=0.05, momentum=0.9,
                                                                 weight_decay=1e-3),
                              batch_size=batch, threads=threads)
    losses = [trainer.step(x, labels) for _ in range(steps)]
    ops = {launch.op for launch in trainer.exe.program(batch).launches}
    return losses, {k: v.copy() for k, v in trainer.sync().params.items()}, trainer, ops


@pytest.mark.parametrize("threads", [1, 3])
def test_training_steps_match_the_reference_rules(threads, monkeypatch):
    """Three SGD steps with the training kernels (split into parts however small the launch, at 3
    threads) against the same steps with every gradient op and the update run by its reference
    rule (the device's training kernels taken away)."""
    with monkeypatch.context() as m:
        m.setattr(cpu_device, "TRAIN_KERNELS", {})
        m.setattr(cpu_device, "TRAIN_WORKSPACES", {})
        want_losses, want, _, _ = _train(small_training_graph(), 1)
    with split_everything():
        losses, got, trainer, ops = _train(small_training_graph(), threads)
    assert set(T.TRAIN_KERNELS) <= ops, "a training kernel did not run"
    if threads > 1:  # every splittable training launch ran in parts
        parted = {trainer.exe.graph.node(n).op for n in trainer.exe.device.parts}
        assert set(T.TRAIN_KERNELS) - {"reduce_channels"} <= parted
    np.testing.assert_allclose(losses, want_losses, rtol=1e-5)
    for name in want:
        assert relative_error(got[name], want[name]) < 1e-5, name


def dense_dropout_graph(features: int = 300) -> Graph:
    """Dense layers (64 and 48 units) with dropout after each: the launches that split their own
    way (:data:`split.OWN_PARTS`), with elementwise ops between them."""
    rng = np.random.default_rng(2)
    g = Graph("dense_dropout")
    y = g.add_input("x", (None, features))

    def param(name, shape):
        return g.add_param(name, (rng.standard_normal(shape) * 0.1).astype(np.float32))
    for i, units in enumerate([64, 48]):
        y = g.add_node("dense", [y, param(f"w{i}", (units, g.specs[y].shape[1])),
                                 param(f"b{i}", (units,))])
        y = g.add_node("relu", [y])
        y = g.add_node("dropout", [y], attrs={"rate": 0.4})
    y = g.add_node("dense", [y, param("fw", (16, 48)), param("fb", (16,))])  # one column tile
    g.set_outputs([g.add_node("log_softmax", [y])])
    return g.verify()


@pytest.mark.parametrize("batch", [6, 7])
def test_dropout_and_dense_steps_are_bit_identical_across_threads(batch):
    """Three SGD steps of dense layers and dropout at 2 and 3 threads (every launch split however
    small: dropout's batch slices start mid-block, 7 rows of 300 and 64 elements) give the
    losses and parameters of one thread bit for bit: the masks are drawn from the same counters,
    the update's element blocks and the gradients' tiles compute each element as one launch."""
    with split_everything():
        want_losses, want, _, _ = _train(dense_dropout_graph(), 1, batch=batch)
        for threads in (2, 3):
            losses, got, trainer, _ = _train(dense_dropout_graph(), threads, batch=batch)
            parted = {trainer.exe.graph.node(n).op for n in trainer.exe.device.parts}
            assert split.OWN_PARTS <= parted
            assert losses == want_losses
            for name in want:
                assert np.array_equal(got[name], want[name]), (threads, name)


@pytest.mark.parametrize("threads", [1, 2])
def test_training_kernels_allocate_nothing(threads):
    """After warm-up every training-kernel launch of a step (split into parts at 2 threads)
    allocates less than 32 KiB per part (numpy's small ufunc iteration buffers; the tensors here are
    50 KiB to 1 MiB): its temporaries live in the planned workspace."""
    with split_everything():
        _, _, trainer, _ = _train(small_training_graph(48), threads, steps=2)
    launches = trainer.exe.program(6).launches
    assert {la.op for la in launches if la.op in T.TRAIN_KERNELS} == set(T.TRAIN_KERNELS)
    tracemalloc.start()
    try:  # every launch in order (each training kernel on the data of the step, not stale arena
        # bytes: a NaN there takes max_pool_grad's rare path, which allocates)
        for launch in launches:
            if launch.op not in T.TRAIN_KERNELS:
                launch.fn(launch.attrs, launch.inputs, launch.outputs, launch.workspace)
                continue
            before = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            launch.fn(launch.attrs, launch.inputs, launch.outputs, launch.workspace)
            peak = tracemalloc.get_traced_memory()[1]
            assert peak - before < threads * 32 * 1024, \
                f"{launch.node}: {peak - before} bytes allocated"
    finally:
        tracemalloc.stop()
