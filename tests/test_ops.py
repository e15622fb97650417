"""Every registered op against its naive loop in ``tests/naive.py``, with hypothesis drawing shapes,
attributes and dtypes. Each test builds a one-node graph and runs ``graphrt.run_reference``, so
shape inference and the forward are exercised together.

``test_every_op_has_a_naive_test`` walks the registry: adding an op without a test here fails.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import graphrt
import naive
import test_activation_ops as act_ops  # the activations of graphrt.ops.activation (naive_ext)
import test_binary_reduce_ops as br_ops  # binary, reduce and layer_norm ops (naive_ext)
import test_spatial_index_ops as si_ops  # resize, conv2d_transpose, slicing and indexing
import test_grad_ops as grad_ops  # the gradient and training ops' tests (naive loops: naive_grad)
import test_data_pipeline as data_ops  # image_transform against Caffe's transformer loop
import test_caffe_solver as solver_ops  # solver_update against Caffe's update formulas
from graphrt import Graph
from graphrt.ops import OpPattern, all_ops
from naive import assert_close

DTYPES = st.sampled_from(["float32", "float64"])
LAYOUTS = st.sampled_from(["C", "F", "strided"])  # how the input array is laid out in memory
TOL = {"float32": 1e-5, "float64": 1e-9}


# ---- helpers ----------------------------------------------------------------------------------
def relayout(a, layout):
    """The same values in C order, Fortran order or as a strided (every other element) view."""
    if layout == "F":
        return np.asfortranarray(a)
    if layout == "strided":
        big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
        big[..., ::2] = a
        return big[..., ::2]
    return a


def run_op(op, inputs, params=(), attrs=None, layout="C"):
    """Run ``op`` as the single node of a graph: ``inputs`` become batched graph inputs, ``params``
    parameters, in that order; inputs are fed in ``layout``. Returns ``run_reference``'s output."""
    g = Graph(op)
    names = [g.add_input(f"in{i}", (None,) + a.shape[1:], str(a.dtype))
             for i, a in enumerate(inputs)]
    names += [g.add_param(f"p{i}", a) for i, a in enumerate(params)]
    y = g.add_node(op, names, name="node", attrs=attrs or {})
    g.set_outputs([y])
    g.verify()
    inputs = [relayout(a, layout) for a in inputs]
    feeds = inputs[0] if len(inputs) == 1 else dict(zip(names, inputs))
    out = graphrt.run_reference(g, feeds)
    assert str(out.dtype) == g.specs[y].dtype
    return out


def check(op, expected, inputs, params=(), attrs=None, dtype="float32", tol=None, layout="C"):
    out = run_op(op, inputs, params, attrs, layout)
    assert str(out.dtype) == dtype
    assert_close(out, expected, tol or TOL[dtype], what=f"{op} {attrs or {}}")


def floats(lo, hi):
    """Attribute values exactly representable in float32, so float32 graphs see the same number."""
    # tiny magnitudes only test float32 underflow, not the op: draw 0 or |v| >= 1e-3
    return st.floats(float(np.float32(lo)), float(np.float32(hi)), width=32).filter(
        lambda v: v == 0 or abs(v) >= 1e-3)


def rng_of(draw):
    return np.random.default_rng(draw(st.integers(0, 2**32 - 1)))


def shapes(draw, rank_lo=2, rank_hi=4, dim_hi=5):
    """A shape (N, d1, ...) with N <= 3."""
    rank = draw(st.integers(rank_lo, rank_hi))
    return (draw(st.integers(1, 3)),) + tuple(draw(st.integers(1, dim_hi)) for _ in range(rank - 1))


def pads_attr(draw, lo_max):
    """Padding drawn as an int, a (pad_h, pad_w) pair or an asymmetric 4-tuple; returns
    (attribute value, (top, bottom, left, right)). ``lo_max`` bounds (pad_h, pad_w)."""
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


def pair_attr(draw, lo, hi):
    """An int or an (h, w) pair; returns (attribute value, (h, w))."""
    if draw(st.booleans()):
        v = draw(st.integers(lo, hi))
        return v, (v, v)
    v = (draw(st.integers(lo, hi)), draw(st.integers(lo, hi)))
    return v, v


def epilogue(draw, op):
    """Fused-activation attributes, when ``op`` declares them (the optimizer's epilogue)."""
    if "activation" not in all_ops()[op].attrs:
        return {}
    kind = draw(st.sampled_from(["none", "relu", "tanh", "sigmoid"]))
    attrs = {"activation": kind}
    if kind == "relu" and draw(st.booleans()):
        attrs["negative_slope"] = draw(floats(-1.0, 1.0))
    return attrs


def apply_epilogue(y, attrs):
    return naive.activation(y, attrs.get("activation", "none"), attrs.get("negative_slope", 0.0))


# ---- convolution ------------------------------------------------------------------------------
@st.composite
def conv_cases(draw):
    rng, dtype = rng_of(draw), draw(DTYPES)
    groups, cg, og = draw(st.integers(1, 3)), draw(st.integers(1, 2)), draw(st.integers(1, 2))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride_a, stride = pair_attr(draw, 1, 3)
    dil_a, dil = pair_attr(draw, 1, 2)
    pads_a, pads = pads_attr(draw, (2, 2))
    eh, ew = dil[0] * (kh - 1) + 1, dil[1] * (kw - 1) + 1  # effective kernel extent
    h = draw(st.integers(max(1, eh - pads[0] - pads[1]), 9))
    w = draw(st.integers(max(1, ew - pads[2] - pads[3]), 9))
    n = draw(st.integers(1, 3))
    x = rng.standard_normal((n, groups * cg, h, w)).astype(dtype)
    wt = rng.standard_normal((groups * og, cg, kh, kw)).astype(dtype)
    params = [wt]
    if draw(st.booleans()):
        params.append(rng.standard_normal(groups * og).astype(dtype))
    attrs = {"stride": stride_a, "pads": pads_a, "dilation": dil_a, "groups": groups,
             **epilogue(draw, "conv2d")}
    geometry = dict(stride=stride, pads=pads, dilation=dil, groups=groups)
    return dtype, x, params, attrs, geometry


@given(conv_cases(), LAYOUTS)
def test_conv2d(case, layout):
    dtype, x, params, attrs, geo = case
    expected = apply_epilogue(naive.conv2d(x, *params, **geo), attrs)
    check("conv2d", expected, [x], params, attrs, dtype, layout=layout)


def channel_sizes(draw, total: int) -> tuple:
    """``total`` channels cut into consecutive runs (a composition of ``total``)."""
    cuts = sorted(draw(st.sets(st.integers(1, total - 1), max_size=3))) if total > 1 else []
    return tuple(int(d) for d in np.diff([0, *cuts, total]))


@given(conv_cases(), LAYOUTS, st.data())
def test_conv2d_split(case, layout, data):
    """Output i of conv2d_split is its run of the naive convolution's channels."""
    dtype, x, params, attrs, geo = case
    sizes = channel_sizes(data.draw, params[0].shape[0])
    expected = apply_epilogue(naive.conv2d(x, *params, **geo), attrs)
    g = Graph("conv2d_split")
    names = [g.add_input("x", (None,) + x.shape[1:], dtype)]
    names += [g.add_param(f"p{i}", a) for i, a in enumerate(params)]
    outs = g.add_node("conv2d_split", names, name="node", attrs={**attrs, "sizes": sizes})
    outs = (outs,) if isinstance(outs, str) else outs
    g.set_outputs(list(outs))
    g.verify()
    got = graphrt.run_reference(g, relayout(x, layout))
    got = got if isinstance(got, dict) else {outs[0]: got}
    start = 0
    for t, size in zip(outs, sizes):
        assert_close(got[t], expected[:, start:start + size], TOL[dtype], what=f"{t} of {sizes}")
        start += size


# ---- pooling ----------------------------------------------------------------------------------
@st.composite
def pool_cases(draw, kind):
    rng, dtype = rng_of(draw), draw(DTYPES)
    n, c = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    if draw(st.integers(0, 4)) == 0:  # global pooling
        h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
        x = rng.standard_normal((n, c, h, w)).astype(dtype)
        return dtype, x, {"global_pool": True}, None
    kernel_a, (kh, kw) = pair_attr(draw, 1, 4)
    stride_a, stride = pair_attr(draw, 1, 3)
    pads_a, pads = pads_attr(draw, (min(kh - 1, 2), min(kw - 1, 2)))
    ceil_mode = draw(st.booleans())
    h = draw(st.integers(max(1, kh - pads[0] - pads[1]), 9))
    w = draw(st.integers(max(1, kw - pads[2] - pads[3]), 9))
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    attrs = {"kernel": kernel_a, "stride": stride_a, "pads": pads_a, "ceil_mode": ceil_mode}
    geometry = dict(kernel=(kh, kw), stride=stride, pads=pads, ceil_mode=ceil_mode)
    if kind == "avg":
        attrs["count_include_pad"] = geometry["count_include_pad"] = draw(st.booleans())
    return dtype, x, attrs, geometry


@given(pool_cases("max"), LAYOUTS)
def test_max_pool(case, layout):
    dtype, x, attrs, geo = case
    expected = naive.global_max_pool(x) if geo is None else naive.max_pool(x, **geo)
    check("max_pool", expected, [x], attrs=attrs, dtype=dtype, layout=layout)


@given(pool_cases("avg"), LAYOUTS)
def test_avg_pool(case, layout):
    dtype, x, attrs, geo = case
    expected = naive.global_avg_pool(x) if geo is None else naive.avg_pool(x, **geo)
    check("avg_pool", expected, [x], attrs=attrs, dtype=dtype, layout=layout)


@pytest.mark.parametrize("h, k, s, p, ceil, want", [
    (6, 3, 2, 1, True, 4),    # ceil((6+2-3)/2)+1 = 4; the last window starts at 6 < 6+1: kept
    (5, 2, 2, 1, True, 3),    # ceil(5/2)+1 = 4, but window 3 starts at 6 >= 5+1: dropped
    (5, 2, 2, 1, False, 3),
    (7, 3, 2, 0, True, 3),
    (8, 3, 2, 0, True, 4),    # GoogLeNet/Inception style: ceil rounds up
    (8, 3, 2, 0, False, 3),
])
def test_pool_output_size_matches_known_frameworks(h, k, s, p, ceil, want):
    g = Graph()
    x = g.add_input("x", (None, 1, h, h))
    y = g.add_node("max_pool", [x], name="pool",
                   attrs={"kernel": k, "stride": s, "pads": p, "ceil_mode": ceil})
    assert g.specs[y].shape == (None, 1, want, want)


def test_avg_pool_divisors_by_hand():
    # 3x3 ones, kernel 2, stride 2, pad 1, ceil mode: windows cover padded rows [0,2) [2,4);
    # the second overhangs the padded extent 5 by nothing, the first holds 1 real row of 2.
    x = np.ones((1, 1, 3, 3), np.float32)
    attrs = {"kernel": 2, "stride": 2, "pads": 1, "ceil_mode": True}
    inc = run_op("avg_pool", [x], attrs={**attrs, "count_include_pad": True})
    exc = run_op("avg_pool", [x], attrs={**attrs, "count_include_pad": False})
    np.testing.assert_allclose(inc[0, 0], [[0.25, 0.5], [0.5, 1.0]])
    np.testing.assert_allclose(exc[0, 0], np.ones((2, 2)))


# ---- normalization ----------------------------------------------------------------------------
@st.composite
def lrn_cases(draw):
    rng, dtype = rng_of(draw), draw(DTYPES)
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 6)), draw(st.integers(1, 5)),
             draw(st.integers(1, 5)))
    # channel magnitudes spread over 1e-2..1e2: a small channel next to large ones is the hard case
    spread = 10.0 ** rng.uniform(-2, 2, (1, shape[1], 1, 1)) if draw(st.booleans()) else 1.0
    x = (rng.standard_normal(shape) * spread).astype(dtype)
    attrs = {"size": draw(st.integers(1, 7)), "alpha": draw(floats(1e-4, 2.0)),
             "beta": draw(floats(0.25, 1.0)), "k": draw(floats(0.5, 2.0))}
    return dtype, x, attrs


@given(lrn_cases(), LAYOUTS)
def test_lrn(case, layout):
    dtype, x, attrs = case
    check("lrn", naive.lrn(x, **attrs), [x], attrs=attrs, dtype=dtype, layout=layout)


@given(st.data())
def test_batch_norm(data):
    draw = data.draw
    rng, dtype = rng_of(draw), draw(DTYPES)
    shape = shapes(draw, 2, 4)
    c = shape[1]
    x = rng.standard_normal(shape).astype(dtype)
    mean = rng.standard_normal(c).astype(dtype)
    var = rng.uniform(0.05, 3.0, c).astype(dtype)
    params = [mean, var]
    if draw(st.booleans()):
        params += [rng.standard_normal(c).astype(dtype), rng.standard_normal(c).astype(dtype)]
    eps = draw(st.sampled_from([1e-5, 1e-3, 0.5]))
    check("batch_norm", naive.batch_norm(x, *params, eps=eps), [x], params, {"eps": eps}, dtype,
          layout=data.draw(LAYOUTS))


@given(st.data())
def test_channel_affine(data):
    draw = data.draw
    rng, dtype = rng_of(draw), draw(DTYPES)
    shape = shapes(draw, 2, 4)
    x = rng.standard_normal(shape).astype(dtype)
    params = [rng.standard_normal(shape[1]).astype(dtype)]
    if draw(st.booleans()):
        params.append(rng.standard_normal(shape[1]).astype(dtype))
    check("channel_affine", naive.channel_affine(x, *params), [x], params, dtype=dtype)


# ---- dense ------------------------------------------------------------------------------------
@given(st.data())
def test_dense(data):
    draw = data.draw
    rng, dtype = rng_of(draw), draw(DTYPES)
    n, fin, fout = draw(st.integers(1, 3)), draw(st.integers(1, 8)), draw(st.integers(1, 6))
    x = rng.standard_normal((n, fin)).astype(dtype)
    params = [rng.standard_normal((fout, fin)).astype(dtype)]
    if draw(st.booleans()):
        params.append(rng.standard_normal(fout).astype(dtype))
    attrs = epilogue(draw, "dense")
    check("dense", apply_epilogue(naive.dense(x, *params), attrs), [x], params, attrs, dtype,
          layout=data.draw(LAYOUTS))


# ---- elementwise ------------------------------------------------------------------------------
def elementwise_input(draw, rng, dtype, spread=3.0):
    x = (rng.standard_normal(shapes(draw, 1, 4)) * spread).astype(dtype)
    x.ravel()[:: max(1, x.size // 3)] = 0.0  # exact zeros: the branch points of relu and sigmoid
    return x


@given(st.data())
def test_relu(data):
    draw = data.draw
    rng, dtype = rng_of(draw), draw(DTYPES)
    x = elementwise_input(draw, rng, dtype)
    slope = draw(st.sampled_from([0.0]) | floats(-2.0, 2.0))
    check("relu", naive.relu(x, slope), [x], attrs={"negative_slope": slope}, dtype=dtype,
          layout=data.draw(LAYOUTS))


@given(st.data())
def test_tanh(data):
    rng, dtype = rng_of(data.draw), data.draw(DTYPES)
    x = elementwise_input(data.draw, rng, dtype)
    check("tanh", naive.tanh(x), [x], dtype=dtype)


@given(st.data())
def test_sigmoid(data):
    rng, dtype = rng_of(data.draw), data.draw(DTYPES)
    x = elementwise_input(data.draw, rng, dtype, spread=data.draw(st.sampled_from([1.0, 30.0])))
    check("sigmoid", naive.sigmoid(x), [x], dtype=dtype)


@given(st.data())
def test_scale(data):
    draw = data.draw
    rng, dtype = rng_of(draw), draw(DTYPES)
    power = draw(st.sampled_from([1.0, 2.0, 3.0, 0.5, 1.5, -1.0, -0.75]))
    shape = shapes(draw, 1, 4)
    if power.is_integer() and power > 0:
        scale, shift = draw(floats(-2.0, 2.0)), draw(floats(-2.0, 2.0))
        x = rng.standard_normal(shape).astype(dtype)
    else:  # keep the base shift + scale * x in [1, 4]
        scale, shift = draw(floats(0.5, 2.0)), draw(floats(1.0, 2.0))
        x = rng.uniform(0.0, 1.0, shape).astype(dtype)
    attrs = {"power": power, "scale": scale, "shift": shift}
    check("scale", naive.scale(x, **attrs), [x], attrs=attrs, dtype=dtype)


@given(st.data())
def test_add(data):
    draw = data.draw
    rng, dtype = rng_of(draw), draw(DTYPES)
    shape, k = shapes(draw, 1, 4), draw(st.integers(1, 4))
    xs = [rng.standard_normal(shape).astype(dtype) for _ in range(k)]
    coeffs = draw(st.sampled_from([()]) | st.lists(floats(-2.0, 2.0), min_size=k, max_size=k))
    check("add", naive.add(*xs, coeffs=tuple(coeffs)), xs, attrs={"coeffs": coeffs}, dtype=dtype,
          layout=data.draw(LAYOUTS))


@given(st.data())
def test_mul(data):
    draw = data.draw
    rng, dtype = rng_of(draw), draw(DTYPES)
    shape, k = shapes(draw, 1, 4), draw(st.integers(1, 4))
    xs = [rng.standard_normal(shape).astype(dtype) for _ in range(k)]
    check("mul", naive.mul(*xs), xs, dtype=dtype)


@given(st.data())
def test_dropout(data):
    rng, dtype = rng_of(data.draw), data.draw(DTYPES)
    x = elementwise_input(data.draw, rng, dtype)
    rate = data.draw(floats(0.0, 0.99))
    check("dropout", naive.identity(x), [x], attrs={"rate": rate}, dtype=dtype)


@given(st.data())
def test_identity(data):
    rng, dtype = rng_of(data.draw), data.draw(DTYPES)
    x = elementwise_input(data.draw, rng, dtype)
    check("identity", naive.identity(x), [x], dtype=dtype)


def unary_steps():
    """One step of an ``elementwise_chain``: a unary op and attributes for it (integral powers, so
    no NaN depends on the rounding of a base near zero)."""
    return st.one_of(
        st.tuples(st.just("relu"), st.fixed_dictionaries({}, optional={
            "negative_slope": floats(-1.0, 1.0)})),
        st.tuples(st.sampled_from(["tanh", "sigmoid", "identity"]), st.just({})),
        st.tuples(st.just("dropout"), st.fixed_dictionaries({"rate": floats(0.0, 0.9)})),
        st.tuples(st.just("scale"), st.fixed_dictionaries({
            "power": st.sampled_from([1.0, 2.0, 3.0]), "scale": floats(-2.0, 2.0),
            "shift": floats(-1.0, 1.0)})))


@given(st.data())
def test_elementwise_chain(data):
    rng, dtype = rng_of(data.draw), data.draw(DTYPES)
    x = elementwise_input(data.draw, rng, dtype, spread=1.0)
    steps = data.draw(st.lists(unary_steps(), min_size=1, max_size=4))
    check("elementwise_chain", naive.elementwise_chain(x, steps), [x], attrs={"steps": steps},
          dtype=dtype)


@given(st.data(), st.sampled_from(["copy_to_device", "copy_to_host"]))
def test_transfers_are_the_identity(data, op):
    rng, dtype = rng_of(data.draw), data.draw(DTYPES)
    x = elementwise_input(data.draw, rng, dtype)
    check(op, naive.identity(x), [x], dtype=dtype)


# ---- softmax ----------------------------------------------------------------------------------
@st.composite
def softmax_cases(draw):
    rng, dtype = rng_of(draw), draw(DTYPES)
    shape = shapes(draw, 1, 4)
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    x = (rng.standard_normal(shape) * draw(st.sampled_from([1.0, 10.0, 100.0]))).astype(dtype)
    return dtype, x, axis


@given(softmax_cases(), LAYOUTS)
def test_softmax(case, layout):
    dtype, x, axis = case
    check("softmax", naive.softmax(x, axis), [x], attrs={"axis": axis}, dtype=dtype, layout=layout)


@given(softmax_cases(), LAYOUTS)
def test_log_softmax(case, layout):
    dtype, x, axis = case
    check("log_softmax", naive.log_softmax(x, axis), [x], attrs={"axis": axis}, dtype=dtype,
          layout=layout)


# ---- losses -----------------------------------------------------------------------------------
@st.composite
def loss_cases(draw, integral_scores=False):
    rng, dtype = rng_of(draw), draw(DTYPES)
    n, c = draw(st.integers(1, 3)), draw(st.integers(1, 6))
    if integral_scores:  # small integers make ties, which the top-k rule must handle
        scores = rng.integers(0, 3, (n, c)).astype(dtype)
    else:
        scores = (rng.standard_normal((n, c)) * draw(st.sampled_from([1.0, 20.0]))).astype(dtype)
    labels = rng.integers(0, c, n).astype(draw(st.sampled_from(["int64", "int32", "float32"])))
    return dtype, scores, labels


@given(loss_cases())
def test_softmax_cross_entropy(case):
    dtype, scores, labels = case
    expected = naive.softmax_cross_entropy(scores, labels)
    out = run_op("softmax_cross_entropy", [scores, labels])
    assert str(out.dtype) == dtype
    # a near-zero loss is log(1 + tiny), which log-sum-exp gets right only to ~1e-16 absolute: the
    # error is measured against max(|loss|, 1 nat) rather than the loss itself
    assert_close(out, np.float64(expected), TOL[dtype], floor=1.0, what="softmax_cross_entropy")


@given(loss_cases())
def test_nll_loss(case):
    dtype, scores, labels = case
    check("nll_loss", np.float64(naive.nll_loss(scores, labels)), [scores, labels], dtype=dtype)


@given(loss_cases(integral_scores=True), st.integers(1, 7))
def test_accuracy(case, top_k):
    dtype, scores, labels = case
    expected = naive.accuracy(scores, labels, top_k)
    check("accuracy", np.float64(expected), [scores, labels], attrs={"top_k": top_k}, dtype=dtype)


def test_loss_rejects_labels_out_of_range():
    scores = np.zeros((2, 3), np.float32)
    with pytest.raises(graphrt.InputError, match=r"\[0, 3\)") as info:
        run_op("nll_loss", [scores, np.array([0, 3])])
    assert info.value.node == "node"
    with pytest.raises(graphrt.InputError, match="whole numbers"):
        run_op("accuracy", [scores, np.array([0.5, 1.0], np.float32)])


# ---- data movement ----------------------------------------------------------------------------
@given(st.data())
def test_concat(data):
    draw = data.draw
    rng, dtype = rng_of(draw), draw(DTYPES)
    shape = shapes(draw, 2, 4)
    rank = len(shape)
    axis = draw(st.integers(1, rank - 1) | st.integers(-rank + 1, -1))
    xs = []
    for _ in range(draw(st.integers(1, 3))):
        s = list(shape)
        s[axis] = draw(st.integers(1, 4))
        xs.append(rng.standard_normal(s).astype(dtype))
    check("concat", naive.concat(xs, axis), xs, attrs={"axis": axis}, dtype=dtype,
          layout=data.draw(LAYOUTS))


@given(st.data())
def test_flatten(data):
    rng, dtype = rng_of(data.draw), data.draw(DTYPES)
    shape = shapes(data.draw, 2, 4)
    axis = data.draw(st.integers(1, len(shape)))
    x = rng.standard_normal(shape).astype(dtype)
    check("flatten", naive.flatten(x, axis), [x], attrs={"axis": axis}, dtype=dtype,
          layout=data.draw(LAYOUTS))


@given(st.data())
def test_reshape(data):
    draw = data.draw
    rng, dtype = rng_of(draw), draw(DTYPES)
    shape = shapes(draw, 2, 4)
    left, target = math.prod(shape[1:]), []
    while left > 1 and len(target) < 3:
        d = draw(st.sampled_from([d for d in range(1, left + 1) if left % d == 0]))
        target.append(d)
        left //= d
    target.append(left)
    target = draw(st.permutations(target))
    if draw(st.booleans()):
        target[draw(st.integers(0, len(target) - 1))] = -1
    x = rng.standard_normal(shape).astype(dtype)
    check("reshape", naive.reshape(x, target), [x], attrs={"shape": target}, dtype=dtype,
          layout=data.draw(LAYOUTS))


@given(st.data())
def test_transpose(data):
    rng, dtype = rng_of(data.draw), data.draw(DTYPES)
    shape = shapes(data.draw, 2, 4)
    perm = [0] + data.draw(st.permutations(range(1, len(shape))))
    x = rng.standard_normal(shape).astype(dtype)
    check("transpose", naive.transpose(x, perm), [x], attrs={"perm": perm}, dtype=dtype,
          layout=data.draw(LAYOUTS))


@given(st.data())
def test_split(data):
    draw = data.draw
    rng, dtype = rng_of(draw), draw(DTYPES)
    shape = shapes(draw, 2, 4, dim_hi=6)
    axis = draw(st.integers(1, len(shape) - 1))
    cuts = sorted(draw(st.sets(st.integers(1, shape[axis] - 1))) if shape[axis] > 1 else [])
    sizes = [b - a for a, b in zip([0] + cuts, cuts + [shape[axis]])]
    x = rng.standard_normal(shape).astype(dtype)
    g = Graph()
    xin = g.add_input("x", (None,) + shape[1:], dtype)
    ys = g.add_node("split", [xin], name="split", attrs={"axis": axis, "sizes": sizes})
    ys = ys if isinstance(ys, tuple) else (ys,)
    g.set_outputs(ys)
    g.verify()
    out = graphrt.run_reference(g, x)
    outs = [out[y] for y in ys] if isinstance(out, dict) else [out]
    expected = naive.split(x, sizes, axis)
    assert len(outs) == len(expected)
    for i, (a, b) in enumerate(zip(outs, expected)):
        assert_close(a, b, TOL[dtype], what=f"split output {i} (sizes {sizes}, axis {axis})")


@given(st.data())
def test_zero_pad(data):
    draw = data.draw
    rng, dtype = rng_of(draw), draw(DTYPES)
    shape = shapes(draw, 3, 4, dim_hi=6)
    pads = tuple(draw(st.integers(-4, 4)) for _ in range(4))
    h, w = shape[-2:]
    assume(h + pads[0] + pads[1] >= 1 and w + pads[2] + pads[3] >= 1)
    x = rng.standard_normal(shape).astype(dtype)
    check("zero_pad", naive.zero_pad(x, pads), [x], attrs={"pads": pads}, dtype=dtype,
          layout=data.draw(LAYOUTS))


# ---- ONNX's general forms: matmul, pad, broadcasting add/mul ------------------------------------
def naive_matmul(a, b):
    """numpy.matmul's semantics written as loops over the stack, rows and columns, in float64."""
    row, col = a.ndim == 1, b.ndim == 1
    a = a[None, :] if row else a
    b = b[:, None] if col else b
    stack = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    a2 = np.broadcast_to(a, stack + a.shape[-2:])
    b2 = np.broadcast_to(b, stack + b.shape[-2:])
    out = np.zeros(stack + (a.shape[-2], b.shape[-1]))
    for idx in np.ndindex(*stack):
        for i in range(a.shape[-2]):
            for j in range(b.shape[-1]):
                out[idx + (i, j)] = sum(float(a2[idx + (i, k)]) * float(b2[idx + (k, j)])
                                        for k in range(a.shape[-1]))
    if row:
        out = out[..., 0, :]
    if col:
        out = out[..., 0]
    return out


@given(st.data())
def test_matmul(data):
    draw = data.draw
    rng, dtype = rng_of(draw), draw(DTYPES)
    n, m, k, p = (draw(st.integers(1, 4)) for _ in range(4))
    lead = tuple(draw(st.integers(1, 3)) for _ in range(draw(st.integers(0, 2))))
    a = rng.standard_normal((n,) + lead + (m, k)).astype(dtype)
    b_shape = draw(st.sampled_from([(k, p), (k,), (1,) * len(lead) + (k, p)]))
    b = rng.standard_normal(b_shape).astype(dtype)
    check("matmul", naive_matmul(a, b), [a], params=[b], dtype=dtype)


def naive_pad(x, pads, value):
    rank = x.ndim
    shape = tuple(d + lo + hi for d, lo, hi in zip(x.shape, pads[:rank], pads[rank:]))
    out = np.full(shape, value, np.float64)
    for idx in np.ndindex(*x.shape):
        dst = tuple(i + lo for i, lo in zip(idx, pads[:rank]))
        if all(0 <= d < n for d, n in zip(dst, shape)):
            out[dst] = x[idx]
    return out


@given(st.data())
def test_pad(data):
    draw = data.draw
    rng, dtype = rng_of(draw), draw(DTYPES)
    shape = shapes(draw, 2, 4)
    rank = len(shape)
    pads = [0] + [draw(st.integers(-2, 3)) for _ in range(rank - 1)]
    pads += [0] + [draw(st.integers(-2, 3)) for _ in range(rank - 1)]
    assume(all(d + lo + hi >= 1 for d, lo, hi in zip(shape, pads[:rank], pads[rank:])))
    x = rng.standard_normal(shape).astype(dtype)
    value = draw(floats(-2.0, 2.0))
    check("pad", naive_pad(x, pads, value), [x], attrs={"pads": tuple(pads), "value": value},
          dtype=dtype, layout=data.draw(LAYOUTS))


@given(st.data())
def test_add_and_mul_broadcast(data):
    """Both ops against naive loops over the broadcast output (naive.add / naive.mul on the inputs
    broadcast by hand), for an unbatched operand of lower rank or with unit axes."""
    draw = data.draw
    rng, dtype = rng_of(draw), draw(DTYPES)
    shape = shapes(draw, 2, 4)
    other = tuple(d if draw(st.booleans()) else 1 for d in shape[1:])[draw(st.integers(0, len(shape) - 2)):]
    x = rng.standard_normal(shape).astype(dtype)
    c = rng.standard_normal(other).astype(dtype)
    full = np.broadcast_to(c, shape).copy()
    check("add", naive.add(x, full), [x], params=[c], dtype=dtype)
    check("mul", naive.mul(x, full), [x], params=[c], dtype=dtype)


@given(st.data())
def test_sgd_update_and_step_counter(data):
    """A few steps of the in-place update against PyTorch's momentum SGD written out by hand, with
    each Caffe learning-rate policy evaluated at the device-resident iteration counter."""
    draw = data.draw
    rng = rng_of(draw)
    shape = shapes(draw, 1, 3)
    policy = draw(st.sampled_from(["fixed", "step", "multistep", "exp", "inv", "poly"]))
    attrs = {"lr": 0.1, "momentum": draw(st.sampled_from([0.0, 0.9])),
             "weight_decay": draw(st.sampled_from([0.0, 0.01])), "lr_mult": 2.0, "decay_mult": 0.5,
             "policy": policy, "gamma": 0.5, "power": 0.75, "stepsize": 2, "stepvalues": (1.0, 3.0),
             "max_iter": 10}
    g = Graph("sgd")
    p = g.add_param("p", rng.standard_normal(shape))
    grad = g.add_input("g", shape, "float64")
    v = g.add_param("v", np.zeros(shape))
    it = g.add_param("it", np.zeros((), np.float64))
    g.add_node("sgd_update", [p, grad, v, it], name="update", attrs=attrs)
    g.add_node("step_counter", [it], name="count")  # inserted after: runs after the update
    g.set_outputs([grad])
    w, vel = g.params["p"].copy(), np.zeros(shape)
    for step in range(4):
        dw = rng.standard_normal(shape)
        graphrt.run_reference(g, {"g": dw})
        lr = {"fixed": 0.1, "step": 0.1 * 0.5 ** (step // 2),
              "multistep": 0.1 * 0.5 ** sum(step >= s for s in (1, 3)), "exp": 0.1 * 0.5 ** step,
              "inv": 0.1 * (1 + 0.5 * step) ** -0.75, "poly": 0.1 * (1 - step / 10) ** 0.75}[policy]
        vel = attrs["momentum"] * vel + dw + attrs["weight_decay"] * 0.5 * w
        w = w - lr * 2.0 * vel
        assert_close(g.params["p"], w, 1e-12)
        assert float(g.params["it"]) == step + 1


@given(st.data())
def test_all_reduce(data):
    """The bucket is the inputs laid end to end, reduced by the group's communicator (here a stand-in
    for a second rank holding ``other``), and each output its input's reduced part; a process with no
    communicator is a group of one. The VJP is the same reduction of the output gradients."""
    from graphrt.ops.collective import set_communicator
    from graphrt.training.autodiff import GradContext

    rng = rng_of(data.draw)
    op = data.draw(st.sampled_from(["mean", "sum"]))
    xs = [rng.standard_normal(shapes(data.draw, 1, 3)) for _ in range(data.draw(st.integers(1, 3)))]
    other = rng.standard_normal(sum(x.size for x in xs))

    class SecondRank:
        def all_reduce(self, bucket, how):
            bucket += other
            if how == "mean":
                bucket /= 2

    g = Graph("all_reduce")
    names = [g.add_input(f"x{i}", x.shape, "float64") for i, x in enumerate(xs)]
    outs = g.add_node("all_reduce", names, name="ar", attrs={"count": len(xs), "group": "t", "op": op})
    g.set_outputs(list(outs))
    feeds = dict(zip(names, xs))
    flat = np.concatenate([x.ravel() for x in xs])
    alone = graphrt.run_reference(g, feeds)
    assert_close(alone[outs[0]], flat, 0)
    set_communicator("t", SecondRank())
    try:
        got = graphrt.run_reference(g, feeds)
    finally:
        set_communicator("t", None)
    reduced = (flat + other) / (2 if op == "mean" else 1)
    assert_close(got[outs[0]], reduced, 1e-15)
    start = 0
    for x, y in zip(xs, outs[1:]):
        assert_close(got[y], reduced[start:start + x.size].reshape(x.shape), 1e-15)
        start += x.size
    dys = [None] + [g.add_input(f"dy{i}", x.shape, "float64") for i, x in enumerate(xs)]
    grads = all_ops()["all_reduce"].backward(GradContext(g, g.node("ar"), [True] * len(xs)), g.node("ar"), dys)
    back = g.producer(grads[0])
    assert back.op == "all_reduce" and back.inputs == tuple(dys[1:]) and back.attrs["op"] == op
    assert list(grads) == list(back.outputs[1:])


# ---- the registry -----------------------------------------------------------------------------
NAIVE_TESTS = {
    "conv2d": test_conv2d, "conv2d_split": test_conv2d_split, "max_pool": test_max_pool, "avg_pool": test_avg_pool, "lrn": test_lrn,
    "batch_norm": test_batch_norm, "channel_affine": test_channel_affine, "dense": test_dense,
    "relu": test_relu, "tanh": test_tanh, "sigmoid": test_sigmoid, "scale": test_scale,
    "add": test_add, "mul": test_mul, "dropout": test_dropout, "identity": test_identity,
    "softmax": test_softmax, "log_softmax": test_log_softmax,
    "softmax_cross_entropy": test_softmax_cross_entropy, "nll_loss": test_nll_loss,
    "accuracy": test_accuracy, "concat": test_concat, "flatten": test_flatten,
    "reshape": test_reshape, "transpose": test_transpose, "zero_pad": test_zero_pad,
    "split": test_split, "elementwise_chain": test_elementwise_chain,
    "copy_to_device": test_transfers_are_the_identity,
    "copy_to_host": test_transfers_are_the_identity,
    "matmul": test_matmul, "pad": test_pad,
    "dropout_train": grad_ops.test_dropout_train, "batch_norm_train": grad_ops.test_batch_norm_train,
    "conv2d_grad_input": grad_ops.test_conv2d_grad_input,
    "conv2d_grad_weight": grad_ops.test_conv2d_grad_weight,
    "reduce_channels": grad_ops.test_reduce_channels, "reduce_like": grad_ops.test_reduce_like,
    "dense_grad_input": grad_ops.test_dense_grads, "dense_grad_weight": grad_ops.test_dense_grads,
    "matmul_grad": grad_ops.test_matmul_grad,
    "relu_grad": grad_ops.test_elementwise_grads, "tanh_grad": grad_ops.test_elementwise_grads,
    "sigmoid_grad": grad_ops.test_elementwise_grads, "scale_grad": grad_ops.test_elementwise_grads,
    "softmax_grad": grad_ops.test_softmax_grads, "log_softmax_grad": grad_ops.test_softmax_grads,
    "zeros_like": grad_ops.test_zeros_like,
    "softmax_cross_entropy_grad": grad_ops.test_loss_grads, "nll_loss_grad": grad_ops.test_loss_grads,
    "max_pool_grad": grad_ops.test_max_pool_grad, "avg_pool_grad": grad_ops.test_avg_pool_grad,
    "lrn_grad": grad_ops.test_lrn_grad, "batch_norm_train_grad": grad_ops.test_batch_norm_train_grad,
    "sgd_update": test_sgd_update_and_step_counter, "step_counter": test_sgd_update_and_step_counter,
    **{op: act_ops.test_activation_against_its_naive_loop for op in act_ops.OPS},
    "unary_grad": act_ops.test_unary_grad_against_the_exact_derivative,
    **{op: br_ops.test_binary_against_naive for op in br_ops.ARITH},
    "where": br_ops.test_nary_maximum_minimum_and_where_and_equal,
    **{op: br_ops.test_nary_maximum_minimum_and_where_and_equal for op in br_ops.COMPARISONS},
    "cast": br_ops.test_cast, "binary_grad": br_ops.test_binary_grad_against_naive,
    "reduce": br_ops.test_reduce_against_naive, "arg_reduce": br_ops.test_arg_reduce_against_naive,
    "reduce_grad": br_ops.test_reduce_grad_against_differences_of_the_naive_reduce,
    "layer_norm": br_ops.test_layer_norm_against_naive,
    "layer_norm_grad": br_ops.test_layer_norm_grad_against_differences_of_the_naive,
    "resize": si_ops.test_resize_against_naive,
    "resize_grad": si_ops.test_resize_grad_is_the_adjoint_of_the_naive_resize,
    "conv2d_transpose": si_ops.test_conv2d_transpose_against_naive,
    "slice": si_ops.test_slice_against_naive, "tile": si_ops.test_tile_and_expand_against_naive,
    "expand": si_ops.test_tile_and_expand_against_naive,
    "embedding": si_ops.test_embedding_and_its_gradient_against_naive,
    "embedding_grad": si_ops.test_embedding_and_its_gradient_against_naive,
    "pad_grad": si_ops.test_pad_grad_is_the_adjoint_of_the_naive_pad,
    "all_reduce": test_all_reduce,
    "image_transform": data_ops.test_image_transform_is_caffes_transformer_loop,
    "solver_update": solver_ops.test_each_update_rule_is_its_documented_formula,
}


def test_every_op_has_a_naive_test():
    registered = set(all_ops())
    assert set(NAIVE_TESTS) == registered, (
        f"ops without a naive test: {sorted(registered - set(NAIVE_TESTS))}; "
        f"tests for unknown ops: {sorted(set(NAIVE_TESTS) - registered)}")


@pytest.mark.parametrize("name", sorted(all_ops()))
def test_every_op_declares_its_rules(name):
    opdef = all_ops()[name]
    assert opdef.name == name
    for rule in ("infer", "forward", "cost"):
        assert callable(getattr(opdef, rule, None)), f"{name} lacks {rule}"
    assert isinstance(opdef.pattern, OpPattern), f"{name} lacks a fusion pattern"
    assert opdef.family and opdef.doc, f"{name} lacks a family or docstring"
    lo, hi = opdef.arity
    assert lo >= 1 and (hi is None or hi >= lo)
    assert opdef.inplace is None or 0 <= opdef.inplace < lo


@pytest.mark.parametrize("op, extra", [("sgd_update", 1), ("solver_update", 2)])
@pytest.mark.parametrize("attrs, it_shape, says", [
    ({"policy": "step", "stepsize": 0}, (), "stepsize >= 1"),
    ({"policy": "poly", "max_iter": 0}, (), "max_iter >= 1"),
    ({"policy": "fixed"}, (1,), "must be a scalar"),
])
def test_update_ops_refuse_a_schedule_that_cannot_run(op, extra, attrs, it_shape, says):
    """Both optimizer updates check the iteration counter and the rate policy's attributes when the
    graph is built, naming the node (one shared check: ops/optim.py check_schedule)."""
    g = Graph("bad schedule")
    p = g.add_param("p", np.zeros((2, 3)))
    grad = g.add_input("g", (2, 3), "float64")
    state = [g.add_param(f"s{i}", np.zeros((2, 3))) for i in range(extra)]
    it = g.add_param("it", np.zeros(it_shape, np.float64))
    with pytest.raises(graphrt.GraphrtError, match=says) as err:
        g.add_node(op, [p, grad, *state, it], name="update", attrs={"lr": 0.1, **attrs})
    assert "update" in str(err.value)
