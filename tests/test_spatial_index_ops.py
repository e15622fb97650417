"""``resize``/``resize_grad``, ``conv2d_transpose`` and the indexing ops (``slice``, ``tile``,
``expand``, ``embedding``/``embedding_grad``): naive loops (``naive_ext.py``), central
differences, PyTorch, and ONNX export through onnxruntime."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import graphrt
import naive_ext
from graphrt import Graph
from naive import assert_close
from test_backward import check as check_gradient
from test_grad_ops import rng_of, run

DTYPES = st.sampled_from(["float32", "float64"])
TOL = {"float32": 1e-5, "float64": 1e-9}
CTMS = ["half_pixel", "pytorch_half_pixel", "half_pixel_symmetric", "align_corners", "asymmetric",
        "tf_half_pixel_for_nn"]


@st.composite
def resize_cases(draw, dtype=DTYPES):
    rng, dt = rng_of(draw), draw(dtype)
    h, w = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    oh, ow = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    attrs = {"sizes": (oh, ow), "mode": draw(st.sampled_from(["nearest", "linear", "cubic"])),
             "coordinate_transformation_mode": draw(st.sampled_from(CTMS)),
             "nearest_mode": draw(st.sampled_from(["round_prefer_floor", "round_prefer_ceil",
                                                   "floor", "ceil"])),
             "cubic_coeff_a": draw(st.sampled_from([-0.75, -0.5])),
             "exclude_outside": draw(st.booleans())}
    if draw(st.booleans()):  # explicit scales, as ONNX Resize's scales input gives them
        attrs["scales"] = (oh / h * draw(st.sampled_from([1.0, 1.1])), ow / w)
    x = rng.standard_normal((draw(st.integers(1, 2)), draw(st.integers(1, 3)), h, w)).astype(dt)
    return x, attrs


@given(resize_cases())
def test_resize_against_naive(case):
    x, attrs = case
    (y,), _ = run("resize", [x], attrs)
    assert_close(y, naive_ext.resize(x, **attrs), TOL[str(x.dtype)] * 10, what=str(attrs))


@given(resize_cases(st.just("float64")))
def test_resize_grad_is_the_adjoint_of_the_naive_resize(case):
    """<resize(x), dy> == <x, resize_grad(dy)> for every x: resize_grad is resize's transpose."""
    x, attrs = case
    dy = np.random.default_rng(0).standard_normal(x.shape[:2] + attrs["sizes"])
    (dx,), _ = run("resize_grad", [dy], {**attrs, "input_size": x.shape[2:]})
    assert dx.shape == x.shape
    basis = np.zeros(x.shape)
    want = np.empty(x.shape)
    for idx in np.ndindex(x.shape):
        basis[idx] = 1.0
        want[idx] = np.sum(naive_ext.resize(basis, **attrs) * dy)
        basis[idx] = 0.0
    assert_close(dx, want, 1e-9)


@settings(max_examples=15)
@given(resize_cases(st.just("float64")))
def test_resize_backward_against_differences(case):
    x, attrs = case
    check_gradient("resize", [x], attrs)


@pytest.mark.parametrize("mode,align,ctm", [("nearest", None, "asymmetric"),
                                            ("bilinear", False, "half_pixel"),
                                            ("bilinear", True, "align_corners"),
                                            ("bicubic", False, "half_pixel")])
def test_resize_matches_pytorch_interpolate(mode, align, ctm):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(1).standard_normal((2, 3, 5, 4))
    for size in ((10, 8), (3, 7)):
        want = torch.nn.functional.interpolate(torch.tensor(x), size=size, mode=mode,
                                               align_corners=align)
        attrs = {"sizes": size, "coordinate_transformation_mode": ctm,
                 "mode": {"bilinear": "linear", "bicubic": "cubic"}.get(mode, mode),
                 "nearest_mode": "floor"}
        (y,), _ = run("resize", [x], attrs)
        assert_close(y, want.numpy(), 1e-12, what=f"{mode} {size}")


# ---- transposed convolution ---------------------------------------------------------------------
@st.composite
def deconv_cases(draw, dtype=DTYPES):
    rng, dt = rng_of(draw), draw(dtype)
    g, cg, og = draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dil = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    pads = tuple(draw(st.integers(0, 1)) for _ in range(4))
    extra = (draw(st.integers(0, max(stride[0], dil[0]) - 1)),
             draw(st.integers(0, max(stride[1], dil[1]) - 1)))
    h, w = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    assume((h - 1) * stride[0] - pads[0] - pads[1] + dil[0] * (kh - 1) + 1 + extra[0] >= 1)
    assume((w - 1) * stride[1] - pads[2] - pads[3] + dil[1] * (kw - 1) + 1 + extra[1] >= 1)
    args = [rng.standard_normal((draw(st.integers(1, 2)), g * cg, h, w)).astype(dt),
            rng.standard_normal((g * cg, og, kh, kw)).astype(dt)]
    if draw(st.booleans()):
        args.append(rng.standard_normal(g * og).astype(dt))
    attrs = {"stride": stride, "pads": pads, "dilation": dil, "groups": g, "output_padding": extra}
    return args, attrs


@given(deconv_cases())
def test_conv2d_transpose_against_naive(case):
    args, attrs = case
    (y,), _ = run("conv2d_transpose", args, attrs)
    assert_close(y, naive_ext.conv2d_transpose(*args, **attrs), TOL[str(args[0].dtype)] * 10)


@settings(max_examples=15)
@given(deconv_cases(st.just("float64")))
def test_conv2d_transpose_backward_against_differences(case):
    args, attrs = case
    check_gradient("conv2d_transpose", args, attrs)


@pytest.mark.parametrize("pads", [(0, 0, 0, 0), (1, 2, 2, 1)])
def test_conv2d_transpose_backward_with_output_padding_past_the_stride(pads):
    """output_padding may reach the dilation, past the stride: whole strides more output rows."""
    rng = np.random.default_rng(4)
    args = [rng.standard_normal((2, 2, 3, 2)), rng.standard_normal((2, 2, 2, 2)), rng.standard_normal(2)]
    check_gradient("conv2d_transpose", args, {"stride": 1, "dilation": 3, "output_padding": (2, 1),
                                              "pads": pads})


def test_conv2d_transpose_matches_pytorch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    x, w, b = rng.standard_normal((2, 4, 5, 3)), rng.standard_normal((4, 3, 3, 2)), rng.standard_normal(6)
    want = torch.nn.functional.conv_transpose2d(torch.tensor(x), torch.tensor(w), torch.tensor(b),
                                                stride=2, padding=1, output_padding=1, groups=2)
    (y,), _ = run("conv2d_transpose", [x, w, b], {"stride": 2, "pads": 1, "output_padding": 1,
                                                  "groups": 2})
    assert_close(y, want.numpy(), 1e-12)


# ---- slicing and indexing -----------------------------------------------------------------------
@st.composite
def slice_cases(draw):
    rng = rng_of(draw)
    shape = (draw(st.integers(1, 3)),) + tuple(draw(st.integers(1, 5)) for _ in range(
        draw(st.integers(1, 3))))
    axes = draw(st.lists(st.integers(1, len(shape) - 1), unique=True, min_size=1))
    starts, ends = [], []
    for a in axes:
        n = shape[a]
        lo = draw(st.integers(-n - 1, n - 1))
        lo_abs = min(max(lo + n if lo < 0 else lo, 0), n)
        hi = draw(st.integers(lo_abs + 1, n + 2))
        starts.append(lo)
        ends.append(hi if draw(st.booleans()) or hi > n else hi - n - (hi == n))
    return rng.standard_normal(shape), {"starts": starts, "ends": ends, "axes": axes}


@given(slice_cases())
def test_slice_against_naive(case):
    x, attrs = case
    want = naive_ext.slice_(x, **attrs)
    assume(want.size > 0)
    (y,), _ = run("slice", [x], attrs)
    assert_close(y, want, 0)


@settings(max_examples=15)
@given(slice_cases())
def test_slice_backward_against_differences(case):
    x, attrs = case
    assume(naive_ext.slice_(x, **attrs).size > 0)
    check_gradient("slice", [x], attrs)


@given(st.data())
def test_tile_and_expand_against_naive(data):
    rng = rng_of(data.draw)
    shape = (data.draw(st.integers(1, 2)),) + tuple(data.draw(st.integers(1, 3)) for _ in range(2))
    x = rng.standard_normal(shape)
    reps = (1,) + tuple(data.draw(st.integers(1, 3)) for _ in shape[1:])
    (y,), _ = run("tile", [x], {"repeats": reps})
    assert_close(y, naive_ext.tile(x, reps), 0)
    small = rng.standard_normal((shape[0], 1, shape[2]))
    target = (-1, data.draw(st.integers(1, 4)), shape[2])
    (y,), _ = run("expand", [small], {"shape": target})
    assert_close(y, naive_ext.expand(small, target), 0)


@settings(max_examples=10)
@given(st.data())
def test_tile_and_expand_backward_against_differences(data):
    rng = rng_of(data.draw)
    x = rng.standard_normal((2, data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))))
    check_gradient("tile", [x], {"repeats": (1, data.draw(st.integers(1, 3)), 2)})
    check_gradient("expand", [x[:, :1]], {"shape": (-1, 3, x.shape[2])})


@given(st.data())
def test_embedding_and_its_gradient_against_naive(data):
    rng = rng_of(data.draw)
    rows, d = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 4))
    idx = rng.integers(0, rows, (data.draw(st.integers(1, 3)), data.draw(st.integers(1, 4))))
    idx = idx.astype(data.draw(st.sampled_from(["int64", "float32"])))  # Caffe's indices are floats
    w = rng.standard_normal((rows, d))
    (y,), _ = run("embedding", [idx, w])
    assert_close(y, naive_ext.embedding(idx, w), 0)
    dy = rng.standard_normal(y.shape)
    (g,), _ = run("embedding_grad", [dy, idx], {"rows": rows}, batched=(0, 1))
    assert_close(g, naive_ext.embedding_grad(dy, idx, rows), 1e-12)
    check_gradient("embedding", [idx, w], wrt=[1])


def test_embedding_index_out_of_range_is_an_input_error():
    with pytest.raises(graphrt.InputError, match="outside"):
        run("embedding", [np.array([[0, 3]]), np.zeros((3, 2))])


# ---- ONNX export ---------------------------------------------------------------------------------
EXPORTS = [
    ("resize", {"sizes": (6, 8), "mode": "linear"}, (None, 2, 3, 4)),
    ("resize", {"sizes": (6, 8), "mode": "nearest", "coordinate_transformation_mode": "asymmetric",
                "nearest_mode": "floor"}, (None, 2, 3, 4)),
    ("resize", {"sizes": (5, 3), "mode": "cubic", "coordinate_transformation_mode": "align_corners"},
     (None, 2, 3, 4)),
    ("slice", {"starts": (1, -3), "ends": (3, 100), "axes": (1, 2)}, (None, 4, 5)),
    ("tile", {"repeats": (1, 2, 3)}, (None, 2, 3)),
    ("expand", {"shape": (-1, 3, 4)}, (None, 1, 4)),
]


@pytest.mark.parametrize("op,attrs,shape", EXPORTS, ids=lambda v: str(v)[:30])
def test_spatial_and_index_ops_export_to_onnx(op, attrs, shape):
    ort = pytest.importorskip("onnxruntime")
    g = Graph("t")
    x = g.add_input("x", shape)
    g.set_outputs([g.add_node(op, [x], attrs=attrs)])
    xv = np.random.default_rng(5).standard_normal((2,) + shape[1:]).astype(np.float32)
    got = ort.InferenceSession(graphrt.export_onnx(g).SerializeToString()).run(None, {"x": xv})[0]
    assert_close(got, graphrt.run_reference(g, xv), 1e-5)


def test_conv2d_transpose_and_embedding_export_to_onnx():
    ort = pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(6)
    g = Graph("t")
    x = g.add_input("x", (None, 4, 3, 3))
    w = g.add_param("w", rng.standard_normal((4, 2, 3, 3)).astype(np.float32))
    y = g.add_node("conv2d_transpose", [x, w, g.add_param("b", np.ones(4, np.float32))],
                   attrs={"stride": 2, "pads": 1, "output_padding": 1, "groups": 2})
    idx = g.add_input("i", (None, 2), "int64")
    e = g.add_node("embedding", [idx, g.add_param("e", rng.standard_normal((5, 3)).astype(np.float32))])
    g.set_outputs([y, e])
    feeds = {"x": rng.standard_normal((2, 4, 3, 3)).astype(np.float32),
             "i": np.array([[0, 4], [2, 2]])}
    want = graphrt.run_reference(g, feeds)
    got = ort.InferenceSession(graphrt.export_onnx(g).SerializeToString()).run(None, feeds)
    for a, t in zip(got, g.outputs):
        assert_close(a, want[t], 1e-5)


# ---- padding modes ------------------------------------------------------------------------------
@st.composite
def pad_cases(draw):
    rng = rng_of(draw)
    shape = (draw(st.integers(1, 2)),) + tuple(draw(st.integers(3, 4)) for _ in range(2))
    mode = draw(st.sampled_from(["reflect", "edge", "wrap"]))
    hi = {"reflect": 1, "edge": 3, "wrap": 2}[mode]  # reflect needs pads < the (cropped) axis
    lo = 0 if mode == "reflect" else -1
    pads = [0] + [draw(st.integers(lo, hi)) for _ in range(2)] + [0] + \
        [draw(st.integers(lo, hi)) for _ in range(2)]
    return rng.standard_normal(shape), {"pads": pads, "mode": mode}


@given(pad_cases())
def test_pad_modes_against_naive(case):
    x, attrs = case
    (y,), _ = run("pad", [x], attrs)
    assert_close(y, naive_ext.pad(x, **attrs), 0)


@given(pad_cases())
def test_pad_grad_is_the_adjoint_of_the_naive_pad(case):
    x, attrs = case
    dy = np.random.default_rng(1).standard_normal(naive_ext.pad(x, **attrs).shape)
    (dx,), _ = run("pad_grad", [dy], {**attrs, "input_shape": x.shape[1:]})
    basis, want = np.zeros(x.shape), np.empty(x.shape)
    for idx in np.ndindex(x.shape):
        basis[idx] = 1.0
        want[idx] = np.sum(naive_ext.pad(basis, **attrs) * dy)
        basis[idx] = 0.0
    assert_close(dx, want, 1e-12)


@settings(max_examples=10)
@given(pad_cases())
def test_pad_modes_backward_against_differences(case):
    x, attrs = case
    check_gradient("pad", [x], attrs)
