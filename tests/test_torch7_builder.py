"""The Torch7-style builder (graphrt.frontends.torch7): seed models, pooling, padding, concat, errors."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import graphrt
from graphrt.ir.errors import GraphError, ShapeError, UnsupportedError
from graphrt.frontends import torch7 as nn

from example_files import line_of, load_example, this_line


def log_softmax_rows_ok(y):
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(np.exp(y.astype(np.float64)).sum(axis=1), 1.0, rtol=1e-5)


# ---- LeNet --------------------------------------------------------------------------------------
def test_lenet_graph():
    mod, path = load_example("torch_lenet")
    g = mod.build().to_graph(input_shape=(1, 28, 28), seed=0)
    assert [n.op for n in g.nodes] == ["scale", "conv2d", "max_pool", "conv2d", "max_pool",
                                       "flatten", "dense", "relu", "dense", "log_softmax"]
    assert [n.name for n in g.nodes][:3] == ["1_MulConstant", "2_SpatialConvolution",
                                             "3_SpatialMaxPooling"]
    assert len(g) == 10
    assert g.specs["input"].shape == (None, 1, 28, 28)
    assert g.specs["6_View"].shape == (None, 800)
    assert g.specs[g.outputs[0]].shape == (None, 10)
    assert g.num_params() == (1 * 20 * 25 + 20) + (20 * 50 * 25 + 50) + (800 * 500 + 500) + (500 * 10 + 10)
    assert g.params["2_weight"].shape == (20, 1, 5, 5) and g.params["7_weight"].shape == (500, 800)
    assert dict(g.node("1_MulConstant").attrs)["scale"] == 0.00390625
    # Torch's reset(): U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases
    for key, fan_in in [("2_weight", 25), ("2_bias", 25), ("4_weight", 500), ("7_weight", 800),
                        ("9_bias", 500)]:
        a = np.abs(g.params[key]).max()
        assert a <= 1 / math.sqrt(fan_in) and a > 0.5 / math.sqrt(fan_in)
    src = g.node("7_Linear").source
    assert (src.layer, src.type, Path(src.file), src.line) == (
        "7_Linear", "Linear", path, line_of(path, "nn.Linear(800, 500)"))
    x = np.random.default_rng(0).integers(0, 256, (3, 1, 28, 28)).astype(np.float32)
    log_softmax_rows_ok(graphrt.run_reference(g, x))


def test_broken_lenet_names_the_second_linear():
    mod, path = load_example("torch_lenet_broken")
    model = mod.build()
    with pytest.raises(ShapeError) as err:
        model.to_graph(input_shape=(1, 28, 28))
    e = err.value
    assert e.node == "10_Linear" and e.op == "Linear"
    assert Path(e.file) == path
    assert e.line == line_of(path, "net.add(nn.Linear(500, nclasses))", occurrence=2)
    assert "expects 500 input features, got 10" in str(e)


# ---- Inception-BN --------------------------------------------------------------------------------
INCEPTION_TABLE = [  # name, 1x1, 3x3 reduce, 3x3, double reduce, double 3x3, pool, proj, stride
    ("3a", 64, 64, 64, 64, 96, "avg", 32, 1),
    ("3b", 64, 64, 96, 64, 96, "avg", 64, 1),
    ("3c", 0, 128, 160, 64, 96, "max", 0, 2),
    ("4a", 224, 64, 96, 96, 128, "avg", 128, 1),
    ("4b", 192, 96, 128, 96, 128, "avg", 128, 1),
    ("4c", 160, 128, 160, 128, 160, "avg", 128, 1),
    ("4d", 96, 128, 192, 160, 192, "avg", 128, 1),
    ("4e", 0, 128, 192, 192, 256, "max", 0, 2),
    ("5a", 352, 192, 320, 160, 224, "avg", 128, 1),
    ("5b", 352, 192, 320, 192, 224, "max", 128, 1),
]


def inception_expectations():
    """(params, nodes, [(channels, size) after each block]) from the table, independently."""
    def conv(cin, cout, k):
        return cin * cout * k * k + cout

    def bn(c):
        return 4 * c  # weight, bias, running mean, running var

    params = conv(3, 64, 7) + bn(64) + conv(64, 64, 1) + conv(64, 192, 3) + bn(192)
    nodes = 3 + 1 + 2 + 3 + 1  # stem
    cin, size, outs = 192, 28, []
    for _, c1, r3, c3, rd, cd, _pool, proj, stride in INCEPTION_TABLE:
        if c1:
            params += conv(cin, c1, 1) + bn(c1)
            nodes += 3
        params += conv(cin, r3, 1) + bn(r3) + conv(r3, c3, 3) + bn(c3)
        params += conv(cin, rd, 1) + bn(rd) + conv(rd, cd, 3) + bn(cd) + conv(cd, cd, 3) + bn(cd)
        nodes += 6 + 9
        nodes += (1 if stride == 1 else 0) + 1  # zero padding (stride 1) and pool
        if proj:
            params += conv(cin, proj, 1) + bn(proj)
            nodes += 3
        nodes += 1  # concat
        cout = c1 + c3 + cd + (proj if proj else cin)
        size = size // stride
        outs.append((cout, size))
        cin = cout
    params += 1024 * 1000 + 1000
    nodes += 4  # avg pool, view, linear, log softmax
    return params, nodes, outs


def test_inception_bn_graph():
    mod, _ = load_example("torch_inception_bn")
    g = mod.build().to_graph(input_shape=(3, 224, 224), seed=0)
    params, nodes, outs = inception_expectations()
    assert g.num_params() == params
    assert len(g) == nodes
    assert g.specs[g.outputs[0]].shape == (None, 1000)
    concats = [n for n in g.nodes if n.op == "concat"]
    assert [g.specs[n.outputs[0]].shape[1:] for n in concats] == [(c, s, s) for c, s in outs]
    assert outs[-1] == (1024, 7)
    assert all(dict(n.attrs)["ceil_mode"] for n in g.nodes if n.op == "max_pool")
    bn = [n for n in g.nodes if n.op == "batch_norm"]
    assert bn and all(dict(n.attrs)["eps"] == 1e-3 for n in bn)
    assert g.specs["4_SpatialMaxPooling"].shape == (None, 64, 56, 56)
    assert g.specs["10_SpatialMaxPooling"].shape == (None, 192, 28, 28)


def test_inception_bn_runs_at_batch_1():
    mod, _ = load_example("torch_inception_bn")
    g = mod.build().to_graph(input_shape=(3, 224, 224), seed=0)
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    y = graphrt.run_reference(g, x)
    assert y.shape == (1, 1000)
    log_softmax_rows_ok(y)


# ---- pooling, padding, concat -------------------------------------------------------------------
def torch_pool_size(size, k, s, pad, ceil):
    """THNN's output size rule."""
    if ceil:
        out = int(math.ceil((size - k + 2 * pad) / s)) + 1
    else:
        out = int(math.floor((size - k + 2 * pad) / s)) + 1
    if pad and (out - 1) * s >= size + pad:
        out -= 1
    return out


@pytest.mark.parametrize("size,k,s,pad", [(112, 3, 2, 0), (56, 3, 2, 0), (28, 3, 2, 0), (14, 3, 2, 0),
                                          (7, 3, 2, 1), (6, 3, 2, 1), (5, 2, 2, 0), (10, 3, 3, 1),
                                          (9, 3, 1, 0), (13, 5, 3, 2)])
@pytest.mark.parametrize("ceil", [True, False])
def test_pooling_output_sizes(size, k, s, pad, ceil):
    for cls in (nn.SpatialMaxPooling, nn.SpatialAveragePooling):
        p = cls(k, k, s, s, pad, pad)
        assert (p.ceil() if ceil else p.floor()) is p
        g = nn.Sequential().add(p).to_graph(input_shape=(2, size, size))
        want = torch_pool_size(size, k, s, pad, ceil)
        assert g.specs[g.outputs[0]].shape == (None, 2, want, want)
    assert torch_pool_size(112, 3, 2, 0, True) == 56 and torch_pool_size(112, 3, 2, 0, False) == 55


def test_ceil_max_pool_values_and_avg_count_include_pad():
    x = np.arange(36, dtype=np.float32).reshape(1, 1, 6, 6)
    g = nn.SpatialMaxPooling(3, 3, 2, 2).ceil().to_graph(input_shape=(1, 6, 6))
    y = graphrt.run_reference(g, x)
    assert y.shape == (1, 1, 3, 3)
    want = np.array([[x[0, 0, i:i + 3, j:j + 3].max() for j in (0, 2, 4)] for i in (0, 2, 4)])
    np.testing.assert_array_equal(y[0, 0], want)
    ones = np.ones((1, 1, 4, 4), np.float32)
    inc = graphrt.run_reference(nn.SpatialAveragePooling(3, 3, 1, 1, 1, 1).to_graph((1, 4, 4)), ones)
    assert inc[0, 0, 0, 0] == pytest.approx(4 / 9) and inc[0, 0, 1, 1] == pytest.approx(1)
    exc = nn.SpatialAveragePooling(3, 3, 1, 1, 1, 1).setCountExcludePad().to_graph((1, 4, 4))
    np.testing.assert_allclose(graphrt.run_reference(exc, ones), 1.0)


def test_spatial_zero_padding_negative_crop():
    m = nn.SpatialZeroPadding(-1, -2, 1, 0)  # left, right, top, bottom
    g = m.to_graph(input_shape=(2, 5, 6))
    assert dict(g.nodes[0].attrs)["pads"] == (1, 0, -1, -2)  # top, bottom, left, right
    assert g.specs[g.outputs[0]].shape == (None, 2, 6, 3)
    x = np.random.default_rng(0).standard_normal((1, 2, 5, 6)).astype(np.float32)
    y = graphrt.run_reference(g, x)
    np.testing.assert_array_equal(y[:, :, 0], 0)
    np.testing.assert_array_equal(y[:, :, 1:], x[:, :, :, 1:4])
    g2 = nn.SpatialZeroPadding(2).to_graph(input_shape=(1, 3, 3))
    assert g2.specs[g2.outputs[0]].shape == (None, 1, 7, 7)


def test_depth_concat_centres_smaller_maps():
    dc = nn.DepthConcat(2)
    dc.add(nn.Identity())                          # 2 x 5x5
    dc.add(nn.SpatialMaxPooling(3, 3, 1, 1))       # 2 x 3x3: 1 row/col on each side
    dc.add(nn.SpatialMaxPooling(2, 2, 2, 2))       # 2 x 2x2: 1 before, 2 after
    g = nn.Sequential().add(dc).to_graph(input_shape=(2, 5, 5))
    assert g.specs[g.outputs[0]].shape == (None, 6, 5, 5)
    assert dict(g.node("1_DepthConcat/pad2").attrs)["pads"] == (1, 1, 1, 1)
    assert dict(g.node("1_DepthConcat/pad3").attrs)["pads"] == (1, 2, 1, 2)
    x = np.random.default_rng(1).standard_normal((2, 2, 5, 5)).astype(np.float32)
    y = graphrt.run_reference(g, x)
    vals = graphrt.run_reference(g, x, return_all=True)
    np.testing.assert_array_equal(y[:, :2], x)
    b2 = vals["1.2_SpatialMaxPooling"]
    np.testing.assert_array_equal(y[:, 2:4, 1:4, 1:4], b2)
    b3 = vals["1.3_SpatialMaxPooling"]
    np.testing.assert_array_equal(y[:, 4:, 1:3, 1:3], b3)
    mask = np.ones((5, 5), bool)
    mask[1:3, 1:3] = False
    assert not y[:, 4:, mask].any()


def test_concat_joins_channels_and_chains():
    net = nn.Sequential()
    concat = nn.Concat(2)
    assert concat.add(nn.SpatialConvolution(3, 4, 1, 1)) is concat
    concat.add(nn.Sequential().add(nn.SpatialConvolution(3, 2, 3, 3, 1, 1, 1, 1)).add(nn.ReLU()))
    assert net.add(concat).add(nn.View(6 * 4 * 4).setNumInputDims(3)) is net
    assert net.get(1) is concat and net.size() == 2
    g = net.to_graph(input_shape=(3, 4, 4))
    assert dict(g.node("1_Concat").attrs)["axis"] == 1
    assert g.specs["1_Concat"].shape == (None, 6, 4, 4)
    assert "1.2.1_weight" in g.params and "1.1_bias" in g.params
    vals = graphrt.run_reference(g, np.ones((1, 3, 4, 4), np.float32), return_all=True)
    np.testing.assert_array_equal(vals["1_Concat"][:, :4], vals["1.1_SpatialConvolution"])
    np.testing.assert_array_equal(vals["1_Concat"][:, 4:], vals["1.2.2_ReLU"])


def test_batch_norm_params_and_seed():
    g = nn.Sequential().add(nn.SpatialBatchNormalization(4)).to_graph((4, 2, 2), seed=3)
    node = g.node("1_SpatialBatchNormalization")
    assert node.inputs[1:] == ("1_running_mean", "1_running_var", "1_weight", "1_bias")
    assert dict(node.attrs)["eps"] == 1e-5
    w = g.params["1_weight"]
    assert (w >= 0).all() and (w <= 1).all()  # Torch: weight:uniform()
    g2 = nn.Sequential().add(nn.SpatialBatchNormalization(4, 1e-3, None, False)).to_graph((4, 2, 2))
    assert len(g2.node("1_SpatialBatchNormalization").inputs) == 3
    again = nn.Sequential().add(nn.SpatialBatchNormalization(4)).to_graph((4, 2, 2), seed=3)
    np.testing.assert_array_equal(again.params["1_weight"], w)


# ---- errors -------------------------------------------------------------------------------------
def test_concat_of_mismatched_branches_names_the_concat():
    net = nn.Sequential()
    line = this_line() + 1
    concat = nn.Concat(2)
    concat.add(nn.SpatialConvolution(3, 4, 3, 3))   # 6x6 -> 4x4
    concat.add(nn.SpatialConvolution(3, 4, 1, 1))   # 6x6 -> 6x6
    net.add(nn.ReLU()).add(concat)
    with pytest.raises(ShapeError) as err:
        net.to_graph(input_shape=(3, 6, 6))
    e = err.value
    assert (e.node, e.op, e.file, e.line) == ("2_Concat", "Concat", __file__, line)
    assert "branch 2" in str(e) and "DepthConcat" in str(e)


def test_view_and_linear_errors():
    with pytest.raises(ShapeError, match=r"setNumInputDims\(3\)"):
        nn.Sequential().add(nn.View(-1)).to_graph(input_shape=(2, 3, 3))
    with pytest.raises(ShapeError, match="do not match"):
        nn.Sequential().add(nn.View(17).setNumInputDims(3)).to_graph(input_shape=(2, 3, 3))
    with pytest.raises(ShapeError, match="1_Linear.*View"):
        nn.Sequential().add(nn.Linear(18, 2)).to_graph(input_shape=(2, 3, 3))
    with pytest.raises(ShapeError, match="expects 3 input planes, got 1"):
        nn.Sequential().add(nn.SpatialConvolution(3, 4, 3, 3)).to_graph(input_shape=(1, 5, 5))
    with pytest.raises(UnsupportedError, match="batch"):
        nn.Sequential().add(nn.Concat(1).add(nn.Identity())).to_graph(input_shape=(2, 3, 3))
    with pytest.raises(GraphError, match="no branches"):
        nn.Sequential().add(nn.Concat(2)).to_graph(input_shape=(2, 3, 3))
    g = nn.Sequential().add(nn.View(2, 9)).to_graph(input_shape=(2, 3, 3))
    assert g.specs[g.outputs[0]].shape == (None, 2, 9)
    g = nn.Sequential().add(nn.Reshape(18)).to_graph(input_shape=(2, 3, 3))
    assert g.specs[g.outputs[0]].shape == (None, 18)


def test_sources_point_at_construction():
    line = this_line() + 1
    net = nn.Sequential().add(nn.SpatialConvolution(1, 2, 3, 3)).add(nn.Tanh())
    g = net.to_graph(input_shape=(1, 5, 5))
    for n in g.nodes:
        assert (n.source.file, n.source.line) == (__file__, line)
    assert g.node("2_Tanh").source.type == "Tanh"
    assert "nn.SpatialConvolution(1 -> 2, 3x3)" in repr(net)
