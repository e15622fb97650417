"""The gradient ops and the training-mode ops against their naive loops in ``naive_grad.py``.

Like ``test_ops.py`` (whose ``NAIVE_TESTS`` registry points here for these ops), each test builds a
one-node graph, runs ``graphrt.run_reference`` and compares every output with the naive loop, over
hypothesis-drawn shapes, attributes, dtypes and memory layouts. State an op writes (running
statistics, counters) is compared after the run too.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import graphrt
import naive
import naive_grad
from graphrt import Graph
from naive import assert_close

DTYPES = st.sampled_from(["float32", "float64"])
TOL = {"float32": 1e-5, "float64": 1e-9}


def strided(a):
    """The same values as a view of every other element (a non-contiguous input)."""
    big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    big[..., ::2] = a
    return big[..., ::2]


def run(op, args, attrs=None, batched=(0,), layout=False):
    """Run ``op`` as a one-node graph: ``args[i]`` is a batched graph input for i in ``batched``
    (fed strided when ``layout``), a parameter otherwise. Returns (outputs, graph)."""
    g = Graph(op)
    names = [g.add_input(f"a{i}", (None,) + a.shape[1:], str(a.dtype)) if i in batched
             else g.add_param(f"a{i}", a.copy()) for i, a in enumerate(args)]
    outs = g.add_node(op, names, name="node", attrs=attrs or {})
    outs = list(outs) if isinstance(outs, tuple) else [outs]
    g.set_outputs(outs)
    g.verify()
    feeds = {names[i]: strided(args[i]) if layout else args[i] for i in batched}
    values = graphrt.run_reference(g, feeds, return_all=True)
    for t in outs:
        assert str(values[t].dtype) == g.specs[t].dtype
    return [values[t] for t in outs], g


def rng_of(draw):
    return np.random.default_rng(draw(st.integers(0, 2**32 - 1)))


def normal(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


# ---- convolution and dense --------------------------------------------------------------------
@st.composite
def conv_geometry(draw):
    groups, cg, og = draw(st.integers(1, 3)), draw(st.integers(1, 2)), draw(st.integers(1, 2))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dil = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    pads = tuple(draw(st.integers(0, 2)) for _ in range(4))
    h = draw(st.integers(max(1, dil[0] * (kh - 1) + 1 - pads[0] - pads[1]), 8))
    w = draw(st.integers(max(1, dil[1] * (kw - 1) + 1 - pads[2] - pads[3]), 8))
    oh = (h + pads[0] + pads[1] - dil[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (w + pads[2] + pads[3] - dil[1] * (kw - 1) - 1) // stride[1] + 1
    n = draw(st.integers(1, 3))
    geo = {"stride": stride, "pads": pads, "dilation": dil, "groups": groups}
    return geo, (n, groups * cg, h, w), (groups * og, cg, kh, kw), (n, groups * og, oh, ow)


@given(conv_geometry(), st.data())
def test_conv2d_grad_input(case, data):
    geo, xs, ws, ys = case
    rng, dtype = rng_of(data.draw), data.draw(DTYPES)
    dy, w = normal(rng, ys, dtype), normal(rng, ws, dtype)
    (dx,), _ = run("conv2d_grad_input", [dy, w], {**geo, "input_size": xs[2:]},
                   layout=data.draw(st.booleans()))
    assert_close(dx, naive_grad.conv2d_grad_input(dy, w, xs[2:], **geo), TOL[dtype])


@given(conv_geometry(), st.data())
def test_conv2d_grad_weight(case, data):
    geo, xs, ws, ys = case
    rng, dtype = rng_of(data.draw), data.draw(DTYPES)
    x, dy = normal(rng, xs, dtype), normal(rng, ys, dtype)
    (dw,), _ = run("conv2d_grad_weight", [x, dy], {**geo, "kernel": ws[2:]}, batched=(0, 1),
                   layout=data.draw(st.booleans()))
    assert_close(dw, naive_grad.conv2d_grad_weight(x, dy, ws[2:], **geo), TOL[dtype])


def test_conv2d_grad_input_refuses_a_mismatched_dy():
    g = Graph()
    dy = g.add_input("dy", (None, 2, 3, 3))
    w = g.add_param("w", np.zeros((2, 1, 3, 3), np.float32))
    with pytest.raises(graphrt.GraphrtError, match="does not match a conv2d"):
        g.add_node("conv2d_grad_input", [dy, w], name="dx", attrs={"input_size": (4, 4)})


@given(st.data())
def test_reduce_channels(data):
    rng, dtype = rng_of(data.draw), data.draw(DTYPES)
    shape = tuple(data.draw(st.integers(1, 4)) for _ in range(data.draw(st.integers(2, 4))))
    x = normal(rng, shape, dtype)
    (out,), _ = run("reduce_channels", [x], layout=data.draw(st.booleans()))
    assert_close(out, naive_grad.reduce_channels(x), TOL[dtype])


@given(st.data())
def test_reduce_like(data):
    rng, dtype = rng_of(data.draw), data.draw(DTYPES)
    n, c, h = (data.draw(st.integers(1, 3)) for _ in range(3))
    dy = normal(rng, (n, c, h), dtype)
    batched = data.draw(st.booleans())
    like = ((n, 1, h), (n, c, 1), (n, 1, 1)) if batched else ((c, 1), (h,), (1, c, h), (1, 1, 1))
    x = normal(rng, data.draw(st.sampled_from(like)), dtype)
    (out,), _ = run("reduce_like", [dy, x], batched=(0, 1) if batched else (0,))
    assert_close(out, naive_grad.reduce_like(dy, x.shape), TOL[dtype])


@given(st.data())
def test_dense_grads(data):
    rng, dtype = rng_of(data.draw), data.draw(DTYPES)
    n, fin, fout = (data.draw(st.integers(1, hi)) for hi in (3, 6, 5))
    dy, x = normal(rng, (n, fout), dtype), normal(rng, (n, fin), dtype)
    w = normal(rng, (fout, fin), dtype)
    layout = data.draw(st.booleans())
    (dx,), _ = run("dense_grad_input", [dy, w], layout=layout)
    assert_close(dx, naive_grad.dense_grad_input(dy, w), TOL[dtype], what="dense_grad_input")
    (dw,), _ = run("dense_grad_weight", [dy, x], batched=(0, 1), layout=layout)
    assert_close(dw, naive_grad.dense_grad_weight(dy, x), TOL[dtype], what="dense_grad_weight")


MATMUL_SHAPES = [((3, 4), (4, 2), (0,)), ((3, 2, 4), (4,), (0,)), ((4,), (3, 4, 2), (1,)),
                 ((3, 1, 2, 4), (2, 4, 3), (0,)), ((3, 2, 4), (3, 4, 2), (0, 1)),
                 ((3, 2, 4), (1, 4, 2), (0,))]


@given(st.sampled_from(MATMUL_SHAPES), st.integers(0, 1), st.data())
def test_matmul_grad(shapes, operand, data):
    rng, dtype = rng_of(data.draw), data.draw(DTYPES)
    *ab, batched = shapes
    n = data.draw(st.integers(1, 2))
    a, b = (normal(rng, (n,) + s[1:] if i in batched else s, dtype) for i, s in enumerate(ab))
    y = np.matmul(a, b)
    dy = normal(rng, y.shape, dtype)
    (out,), _ = run("matmul_grad", [a, b, dy], {"operand": operand},
                    batched=tuple(batched) + (2,))
    assert_close(out, naive_grad.matmul_grad(a, b, dy, operand), TOL[dtype])


# ---- elementwise and softmax ------------------------------------------------------------------
ELEMENTWISE_GRADS = {
    "relu_grad": lambda draw: {"negative_slope": draw(st.sampled_from([0.0, 0.25, -0.5]))},
    "tanh_grad": lambda draw: {}, "sigmoid_grad": lambda draw: {},
    "scale_grad": lambda draw: {"power": draw(st.sampled_from([0.0, 1.0, 2.0, 0.5, -1.5])),
                                "scale": draw(st.sampled_from([0.5, 2.0])),
                                "shift": draw(st.sampled_from([1.0, 1.5]))},
}


@pytest.mark.parametrize("op", sorted(ELEMENTWISE_GRADS))
@given(data=st.data())
def test_elementwise_grads(op, data):
    rng, dtype = rng_of(data.draw), data.draw(DTYPES)
    shape = tuple(data.draw(st.integers(1, 4)) for _ in range(data.draw(st.integers(1, 4))))
    dy = normal(rng, shape, dtype)
    # the second input: relu's t with exact zeros, tanh/sigmoid outputs, scale's x keeping a
    # positive base
    t = rng.uniform(0, 1, shape).astype(dtype) if op != "relu_grad" else normal(rng, shape, dtype)
    if op == "relu_grad":
        t.ravel()[::3] = 0
    attrs = ELEMENTWISE_GRADS[op](data.draw)
    (out,), _ = run(op, [dy, t], attrs, batched=(0, 1), layout=data.draw(st.booleans()))
    assert_close(out, getattr(naive_grad, op)(dy, t, **attrs), TOL[dtype], what=f"{op} {attrs}")


@pytest.mark.parametrize("op", ["softmax_grad", "log_softmax_grad"])
@given(data=st.data())
def test_softmax_grads(op, data):
    rng, dtype = rng_of(data.draw), data.draw(DTYPES)
    shape = tuple(data.draw(st.integers(1, 4)) for _ in range(data.draw(st.integers(1, 4))))
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = normal(rng, shape, "float64") * 3
    y = (naive.softmax if op == "softmax_grad" else naive.log_softmax)(x, axis).astype(dtype)
    dy = normal(rng, shape, dtype)
    (out,), _ = run(op, [dy, y], {"axis": axis}, batched=(0, 1))
    # measured against |dy|: y * (dy - sum(dy y)) cancels, and float32 keeps only |dy| * 1e-7
    assert_close(out, getattr(naive_grad, op)(dy, y, axis), TOL[dtype], what=f"{op} axis {axis}",
                 floor=float(np.abs(dy).max()))


@given(st.data())
def test_zeros_like(data):
    x = normal(rng_of(data.draw), (2, data.draw(st.integers(1, 4))), data.draw(DTYPES))
    (out,), _ = run("zeros_like", [x])
    assert_close(out, naive_grad.zeros_like(x), 0.0)


# ---- losses -----------------------------------------------------------------------------------
@pytest.mark.parametrize("op", ["softmax_cross_entropy_grad", "nll_loss_grad"])
@given(data=st.data())
def test_loss_grads(op, data):
    rng, dtype = rng_of(data.draw), data.draw(DTYPES)
    n, c = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 6))
    scores = (rng.standard_normal((n, c)) * data.draw(st.sampled_from([1.0, 20.0]))).astype(dtype)
    labels = rng.integers(0, c, n).astype(data.draw(st.sampled_from(["int64", "int32", "float32"])))
    dloss = np.full(data.draw(st.sampled_from([(), (1,)])),
                    data.draw(st.sampled_from([1.0, -0.5, 3.0])), dtype)
    if op == "nll_loss_grad":
        (out,), _ = run(op, [labels, dloss], {"classes": c})
        expected = naive_grad.nll_loss_grad(labels, dloss, c)
    else:
        (out,), _ = run(op, [scores, labels, dloss], batched=(0, 1))
        expected = naive_grad.softmax_cross_entropy_grad(scores, labels, dloss)
    assert_close(out, expected, TOL[dtype], what=op)


# ---- pooling ----------------------------------------------------------------------------------
@st.composite
def pool_geometry(draw, kind):
    n, c = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    if draw(st.integers(0, 4)) == 0:
        h, w = draw(st.integers(1, 6)), draw(st.integers(1, 6))
        geo = {"kernel": (h, w), "stride": (1, 1), "pads": (0, 0, 0, 0), "ceil_mode": False}
        return (n, c, h, w), {"global_pool": True}, geo
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    pads = (draw(st.integers(0, min(kh - 1, 2))), draw(st.integers(0, min(kh - 1, 2))),
            draw(st.integers(0, min(kw - 1, 2))), draw(st.integers(0, min(kw - 1, 2))))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    h = draw(st.integers(max(1, kh - pads[0] - pads[1]), 8))
    w = draw(st.integers(max(1, kw - pads[2] - pads[3]), 8))
    geo = {"kernel": (kh, kw), "stride": stride, "pads": pads, "ceil_mode": draw(st.booleans())}
    if kind == "avg":
        geo["count_include_pad"] = draw(st.booleans())
    return (n, c, h, w), dict(geo), geo


@given(pool_geometry("max"), st.data())
def test_max_pool_grad(case, data):
    shape, attrs, geo = case
    rng, dtype = rng_of(data.draw), data.draw(DTYPES)
    x = rng.integers(-2, 3, shape).astype(dtype)  # small integers: ties the first maximum breaks
    y = naive.max_pool(x, **geo).astype(dtype)
    dy = normal(rng, y.shape, dtype)
    (dx,), _ = run("max_pool_grad", [x, y, dy], attrs, batched=(0, 1, 2),
                   layout=data.draw(st.booleans()))
    assert_close(dx, naive_grad.max_pool_grad(x, dy, **geo), TOL[dtype], what=f"{attrs}")


@given(pool_geometry("avg"), st.data())
def test_avg_pool_grad(case, data):
    shape, attrs, geo = case
    rng, dtype = rng_of(data.draw), data.draw(DTYPES)
    geo.setdefault("count_include_pad", True)
    oh, ow = naive.avg_pool(np.zeros(shape), **geo).shape[2:]
    dy = normal(rng, shape[:2] + (oh, ow), dtype)
    (dx,), _ = run("avg_pool_grad", [dy], {**attrs, "input_size": shape[2:]},
                   layout=data.draw(st.booleans()))
    assert_close(dx, naive_grad.avg_pool_grad(dy, shape[2:], **geo), TOL[dtype], what=f"{attrs}")


# ---- normalization ----------------------------------------------------------------------------
@given(st.data())
def test_lrn_grad(data):
    rng, dtype = rng_of(data.draw), data.draw(DTYPES)
    shape = tuple(data.draw(st.integers(1, hi)) for hi in (3, 6, 4, 4))
    attrs = {"size": data.draw(st.integers(1, 6)),
             "alpha": data.draw(st.sampled_from([1e-4, 0.3, 2.0])),
             "beta": data.draw(st.sampled_from([0.75, 0.5, 1.0])),
             "k": data.draw(st.sampled_from([1.0, 2.0]))}
    x, dy = normal(rng, shape, dtype) * 2, normal(rng, shape, dtype)
    (dx,), _ = run("lrn_grad", [x, dy], attrs, batched=(0, 1), layout=data.draw(st.booleans()))
    assert_close(dx, naive_grad.lrn_grad(x, dy, **attrs), TOL[dtype], what=f"lrn_grad {attrs}")


def _bn_shape(draw):
    return (draw(st.integers(1, 3)), draw(st.integers(1, 4))) + tuple(
        draw(st.integers(1, 3)) for _ in range(draw(st.integers(0, 2))))


CONVENTIONS = [{}, {"momentum": 0.01, "unbiased": False}, {"caffe_fraction": 0.999},
               {"caffe_fraction": 0.5, "unbiased": False}]


@given(st.sampled_from(CONVENTIONS), st.integers(1, 3), st.data())
def test_batch_norm_train(convention, steps, data):
    """Outputs and, after ``steps`` runs, the running statistics (and count), per convention."""
    rng, dtype = rng_of(data.draw), data.draw(DTYPES)
    shape = _bn_shape(data.draw)
    c = shape[1]
    params = [normal(rng, c, dtype), normal(rng, c, dtype), normal(rng, c, dtype),
              rng.uniform(0.5, 2.0, c).astype(dtype)]
    if "caffe_fraction" in convention or data.draw(st.booleans()):
        params.append(np.array([data.draw(st.sampled_from([0.0, 2.5]))], dtype))
    attrs = {"eps": 1e-3, **convention}
    stats = params[2:]
    g = None
    for _ in range(steps):
        x = (normal(rng, shape, dtype) * 2 + 1).astype(dtype)
        if g is None:
            (y, mean, invstd), g = run("batch_norm_train", [x, *params], attrs)
        else:
            y, mean, invstd = graphrt.run_reference(g, x).values()
        want = naive_grad.batch_norm_train(x, *params[:2], *stats, **attrs)
        stats = [s for s in want[3:] if s is not None]
    tol = 10 * TOL[dtype]
    for name, got, exp in zip(("y", "saved_mean", "saved_invstd"), (y, mean, invstd), want):
        assert_close(got, exp, tol, what=name)
    for i, exp in zip((3, 4, 5), stats):
        assert_close(g.params[f"a{i}"], np.reshape(exp, g.params[f"a{i}"].shape), tol,
                     what=f"state input {i} after {steps} steps")


@given(st.data())
def test_batch_norm_train_grad(data):
    rng, dtype = rng_of(data.draw), data.draw(DTYPES)
    shape = _bn_shape(data.draw)
    c = shape[1]
    # with one or two values per channel the exact dx is 0 (every dy is explained by the mean and the
    # normalized input): the result is pure rounding noise, nothing to compare
    assume(np.prod(shape) // c > 2)
    x, dy = normal(rng, shape, dtype), normal(rng, shape, dtype)
    gamma = normal(rng, c, dtype)
    axes = (0,) + tuple(range(2, len(shape)))
    mean = x.mean(axis=axes, dtype=np.float64).astype(dtype)
    invstd = (1 / np.sqrt(x.var(axis=axes, dtype=np.float64) + 1e-3)).astype(dtype)
    outs, _ = run("batch_norm_train_grad", [x, gamma, mean, invstd, dy], batched=(0, 4))
    want = naive_grad.batch_norm_train_grad(x, gamma, mean, invstd, dy)
    for name, got, exp in zip(("dx", "dgamma", "dbeta"), outs, want):
        assert_close(got, exp, 10 * TOL[dtype], what=name)


# ---- dropout ----------------------------------------------------------------------------------
@given(st.data())
def test_dropout_train(data):
    rng, dtype = rng_of(data.draw), data.draw(DTYPES)
    x = normal(rng, _bn_shape(data.draw), dtype)
    start = data.draw(st.integers(0, 2**40))
    counter = np.array([start], data.draw(st.sampled_from(["int64", "float64"])))
    attrs = {"rate": data.draw(st.sampled_from([0.0, 0.1, 0.5, 0.9])),
             "seed": data.draw(st.integers(0, 2**64 - 1))}
    (y, mask), g = run("dropout_train", [x, counter], attrs)
    want_y, want_mask = naive_grad.dropout_train(x, start, **attrs)
    assert_close(mask, want_mask, TOL[dtype], what="mask")
    assert_close(y, want_y, TOL[dtype], what="y")
    assert g.params["a1"][0] == start + 1, "the counter advances by one per step"
    y2, mask2 = graphrt.run_reference(g, x).values()  # the next step draws the next mask
    assert_close(mask2, naive_grad.dropout_train(x, start + 1, **attrs)[1], TOL[dtype])


def test_dropout_train_keeps_about_1_minus_rate():
    x = np.ones((64, 1000), np.float32)
    (y, mask), _ = run("dropout_train", [x, np.zeros(1, np.int64)], {"rate": 0.3, "seed": 7})
    assert set(np.unique(mask)) == {0.0, np.float32(1 / 0.7)}
    assert abs((mask > 0).mean() - 0.7) < 0.01
    assert abs(y.mean() - 1.0) < 0.02
