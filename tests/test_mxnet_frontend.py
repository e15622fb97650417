"""Tests for graphrt.frontends.mxnet: the symbol API, JSON round trips and conversion to a Graph."""
from __future__ import annotations

import json
import math
import struct

import numpy as np
import pytest
from hypothesis import given, strategies as st

import graphrt
from graphrt.ir.errors import (AttrError, GraphrtError, ParseError, ShapeError, UnsupportedError,
                               WeightError)
from graphrt.frontends import mxnet as mx
from graphrt.frontends.mxnet.io import read_symbol_json

from example_files import load_example

def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


def alexnet_example():
    return load_example("mxnet_alexnet")[0]


def encode_params(named: dict[str, np.ndarray]) -> bytes:
    """A .params file as MXNet 1.x's NDArray::Save writes it (V2 dense float32 arrays)."""
    out = [struct.pack("<QQQ", 0x112, 0, len(named))]
    for arr in named.values():
        arr = np.ascontiguousarray(arr, dtype="<f4")
        out.append(struct.pack("<Ii", 0xF993FAC9, 0) + struct.pack(f"<I{arr.ndim}q", arr.ndim,
                                                                   *arr.shape))
        out.append(struct.pack("<iii", 1, 0, 0) + arr.tobytes())
    out.append(struct.pack("<Q", len(named)))
    for key in named:
        out.append(struct.pack("<Q", len(key.encode())) + key.encode())
    return b"".join(out)


def alexnet_param_count(input_hw: int = 224) -> int:
    """AlexNet's parameters counted by hand: conv weights O*I*K*K + O biases, fc out*in + out."""
    convs = [(96, 3, 11), (256, 96, 5), (384, 256, 3), (384, 384, 3), (256, 384, 3)]
    total = sum(o * i * k * k + o for o, i, k in convs)
    hw = (input_hw - 11) // 4 + 1          # conv1 11x11/4
    hw = (hw - 3) // 2 + 1                 # pool 3/2; conv2 (pad 2) keeps the size
    hw = (hw - 3) // 2 + 1                 # pool 3/2; conv3-5 (pad 1) keep it
    hw = (hw - 3) // 2 + 1                 # pool 3/2
    fcs = [(4096, 256 * hw * hw), (4096, 4096), (1000, 4096)]
    return total + sum(o * i + o for o, i in fcs)


# ----------------------------------------------------------------------------- real MXNet files

def test_lenet_reproduces_mxnet_output(shared):
    d = shared / "fixtures" / "mxnet"
    g = mx.load_mxnet(d / "lenet-symbol.json", params=d / "lenet-0000.params",
                      input_shape=(1, 28, 28))
    g.verify()
    x, want = np.load(d / "lenet_input.npy"), np.load(d / "lenet_output.npy")
    got = graphrt.run_reference(g, x)
    assert got.shape == want.shape == (4, 10)
    assert rel_err(got, want) < 1e-4
    # names kept without the arg: prefix; the label is not an input
    assert g.inputs == ["data"]
    assert set(g.params) == {"conv1_weight", "conv1_bias", "conv2_weight", "conv2_bias",
                             "fc1_weight", "fc1_bias", "fc2_weight", "fc2_bias"}
    assert [n.name for n in g.nodes][:3] == ["conv1", "activation7", "pooling3"]


def test_lenet_sources_name_layer_op_file_and_line(shared):
    path = shared / "fixtures" / "mxnet" / "lenet-symbol.json"
    g = mx.load_mxnet(path, input_shape=(1, 28, 28))
    lines = path.read_text().splitlines()
    for node in g.nodes:
        assert node.source.file == str(path)
        assert node.source.layer in (node.name, node.name.rsplit("_", 1)[0])
        assert f'"name": "{node.source.layer}"' in lines[node.source.line - 1]
    assert g.node("conv1").source.type == "Convolution"
    assert g.node("softmax").source.type == "SoftmaxOutput"


def test_lenet_same_through_symbol_load_and_param_dict(shared):
    d = shared / "fixtures" / "mxnet"
    raw = graphrt.frontends.mxnet.io.read_params(d / "lenet-0000.params")
    net = mx.sym.load(d / "lenet-symbol.json")
    assert net.list_arguments()[:3] == ["data", "conv1_weight", "conv1_bias"]
    assert net.list_outputs() == ["softmax_output"]
    g = mx.to_graph(net, input_shape={"data": (1, 28, 28)}, params=raw)
    x, want = np.load(d / "lenet_input.npy"), np.load(d / "lenet_output.npy")
    assert rel_err(graphrt.run_reference(g, x), want) < 1e-4


def test_seed_alexnet_json_loads_with_xavier(shared):
    path = shared / "fixtures" / "mxnet" / "seed_alexnet-symbol.json"
    g = mx.load_mxnet(path, input_shape=(3, 224, 224), seed=0)
    g.verify()
    assert g.specs[g.outputs[0]].shape == (None, 1000)
    assert g.num_params() == alexnet_param_count() == 50_844_008
    y = graphrt.run_reference(g, np.random.default_rng(1).standard_normal((2, 3, 224, 224),
                                                                          dtype=np.float32))
    assert y.shape == (2, 1000)
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)
    # LRN with MXNet's knorm/nsize, pool before LRN as the seed saved it
    lrn = g.node("lrn0")
    assert {k: lrn.attrs[k] for k in ("size", "alpha", "beta", "k")} == \
        {"size": 5, "alpha": 1e-4, "beta": 0.75, "k": 1.0}
    assert g.node("lrn0").inputs == ("pooling0",)


def test_xavier_initialization_matches_mxnet_defaults(shared):
    path = shared / "fixtures" / "mxnet" / "seed_alexnet-symbol.json"
    g = mx.load_mxnet(path, input_shape=(3, 224, 224), seed=0)
    for name, w in g.params.items():
        assert w.dtype == np.float32
        if name.endswith("_bias"):
            assert not w.any()
            continue
        fan_in, fan_out = w.shape[1] * np.prod(w.shape[2:]), w.shape[0] * np.prod(w.shape[2:])
        scale = math.sqrt(3.0 / ((fan_in + fan_out) / 2.0))
        assert np.abs(w).max() <= scale
        assert np.abs(w).max() > 0.99 * scale                  # uniform on (-scale, scale)
        assert abs(float(w.std()) - scale / math.sqrt(3)) < 0.02 * scale
    same = mx.load_mxnet(path, input_shape=(3, 224, 224), seed=0)
    other = mx.load_mxnet(path, input_shape=(3, 224, 224), seed=1)
    w = "convolution1_weight"
    assert np.array_equal(g.params[w], same.params[w])
    assert not np.array_equal(g.params[w], other.params[w])


def test_symbol_api_alexnet_equals_seed_json(shared):
    path = shared / "fixtures" / "mxnet" / "seed_alexnet-symbol.json"
    net = alexnet_example().build()
    # the same JSON document MXNet wrote (nodes, attrs, arg_nodes, node_row_ptr, heads)
    assert json.loads(net.tojson()) == json.loads(path.read_text())
    # and the same graph
    a = mx.to_graph(net, input_shape=(3, 224, 224), seed=3)
    b = mx.load_mxnet(path, input_shape=(3, 224, 224), seed=3)
    assert [(n.name, n.op, n.inputs, dict(n.attrs)) for n in a.nodes] == \
           [(n.name, n.op, n.inputs, dict(n.attrs)) for n in b.nodes]
    assert a.inputs == b.inputs and a.outputs == b.outputs
    assert {k: v.shape for k, v in a.params.items()} == {k: v.shape for k, v in b.params.items()}
    assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)


def test_alexnet_example_builds_fresh_names_each_time():
    ex = alexnet_example()
    first, second = ex.build(), ex.build()
    assert first.tojson() == second.tojson()
    assert first.get_internals()[3].name == "convolution0"
    assert first.list_arguments()[-1] == "softmax_label"


def test_example_main_prints_summary(capsys):
    alexnet_example().main([])
    out = capsys.readouterr().out
    assert "fullyconnected0" in out and "(N, 6400)" in out and "50844008" in out


def test_tojson_round_trips():
    net = alexnet_example().build()
    text = net.tojson()
    again = mx.sym.load_json(text)
    assert again.tojson() == text
    assert again.list_arguments() == net.list_arguments()
    sg = read_symbol_json(text)
    assert sg.mxnet_version == 10901 and sg.nodes[3].attrs["kernel"] == "(11, 11)"


def test_save_and_load_file(tmp_path):
    with mx.name.NameManager():
        data = mx.sym.Variable("data")
        net = mx.sym.FullyConnected(data=data, num_hidden=3)
    path = tmp_path / "tiny-symbol.json"
    net.save(path)
    assert mx.sym.load(path).tojson() == net.tojson()
    g = mx.load_mxnet(path, input_shape=(4,))
    assert g.name == "tiny"
    assert g.node("fullyconnected0").source.line is not None


# ----------------------------------------------------------------------------- the symbol API

def test_auto_names_and_parameter_variables():
    with mx.name.NameManager():
        data = mx.sym.Variable("data")
        c0 = mx.sym.Convolution(data=data, kernel=(3, 3), num_filter=4)
        a0 = mx.sym.Activation(data=c0, act_type="relu")
        c1 = mx.sym.Convolution(data=a0, kernel=(3, 3), num_filter=4, no_bias=True)
        bn = mx.sym.BatchNorm(data=c1)
        a1 = mx.sym.Activation(data=bn, act_type="tanh")
        fc = mx.sym.FullyConnected(data=a1, num_hidden=10, name="fc")
        out = mx.sym.SoftmaxOutput(data=fc, name="softmax")
    assert [c0.name, a0.name, c1.name, bn.name, a1.name] == [
        "convolution0", "activation0", "convolution1", "batchnorm0", "activation1"]
    assert out.list_arguments() == [
        "data", "convolution0_weight", "convolution0_bias", "convolution1_weight",
        "batchnorm0_gamma", "batchnorm0_beta", "fc_weight", "fc_bias", "softmax_label"]
    assert out.list_auxiliary_states() == ["batchnorm0_moving_mean", "batchnorm0_moving_var"]
    # attributes as strings, only those given; variables carry a copy as nnvm makes them
    assert c0.list_attr() == {"kernel": "(3, 3)", "num_filter": "4"}
    assert c1.attr("no_bias") == "True"
    nodes = json.loads(out.tojson())["nodes"]
    by_name = {n["name"]: n for n in nodes}
    assert by_name["convolution0_weight"]["attrs"] == c0.list_attr()
    assert [e[2] for e in by_name["batchnorm0"]["inputs"]] == [0, 0, 0, 1, 1]  # aux: version 1
    g = mx.to_graph(out, input_shape=(2, 8, 8))
    g.verify()
    assert g.specs["fc"].shape == (None, 10)
    assert g.params["convolution0_weight"].shape == (4, 2, 3, 3)
    assert "convolution1_bias" not in g.params
    assert not g.param_info["batchnorm0_moving_mean"].trainable


def test_plus_operator_elemwise_add_concat_and_group():
    with mx.name.NameManager():
        data = mx.sym.Variable("data")
        a = mx.sym.Convolution(data=data, kernel=(1, 1), num_filter=3, name="a")
        b = mx.sym.Convolution(data=data, kernel=(1, 1), num_filter=3, name="b")
        s = a + b
        e = mx.sym.elemwise_add(a, b)
        cat = mx.sym.Concat(s, e, data, dim=1)
        grp = mx.sym.Group([cat, mx.sym.softmax(data=s)])
    assert (s.name, e.name, cat.name) == ("_plus0", "elemwise_add0", "concat0")
    assert json.loads(s.tojson())["nodes"][-1]["op"] == "elemwise_add"
    assert cat.list_attr() == {"dim": "1", "num_args": "3"}
    assert grp.list_outputs() == ["concat0_output", "softmax0_output"]
    g = mx.to_graph(grp, input_shape=(3, 5, 5))
    g.verify()
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 5)).astype(np.float32)
    out = graphrt.run_reference(g, x)
    wa, ba = g.params["a_weight"][:, :, 0, 0], g.params["a_bias"]
    wb, bb = g.params["b_weight"][:, :, 0, 0], g.params["b_bias"]
    ssum = (np.einsum("oc,nchw->nohw", wa, x) + ba[:, None, None]
            + np.einsum("oc,nchw->nohw", wb, x) + bb[:, None, None])
    np.testing.assert_allclose(out["concat0"], np.concatenate([ssum, ssum, x], 1), atol=1e-5)
    soft = np.exp(ssum - ssum.max(-1, keepdims=True))
    np.testing.assert_allclose(out["softmax0"], soft / soft.sum(-1, keepdims=True), atol=1e-6)


def test_name_prefix_and_unknown_attribute():
    with mx.name.Prefix("stage1_"):
        conv = mx.sym.Convolution(data=mx.sym.Variable("data"), kernel=(3, 3), num_filter=2)
    assert conv.name == "stage1_convolution0"
    assert "stage1_convolution0_weight" in conv.list_arguments()
    with pytest.raises(AttrError, match="num_filters"):
        mx.sym.Convolution(data=mx.sym.Variable("data"), kernel=(3, 3), num_filters=2)


# ----------------------------------------------------------------------------- op semantics

def test_batchnorm_fix_gamma_semantics():
    rng = np.random.default_rng(0)
    c = 3
    params = {"bn_gamma": rng.uniform(0.5, 2, c), "bn_beta": rng.standard_normal(c),
              "bn_moving_mean": rng.standard_normal(c), "bn_moving_var": rng.uniform(0.5, 2, c)}
    x = rng.standard_normal((2, c, 4, 4)).astype(np.float32)
    shape = (1, c, 1, 1)

    def numpy_bn(gamma, eps):
        return ((x - params["bn_moving_mean"].reshape(shape))
                / np.sqrt(params["bn_moving_var"].reshape(shape) + eps)
                * gamma.reshape(shape) + params["bn_beta"].reshape(shape))

    for fix_gamma, eps in ((None, 1e-3), (True, 1e-3), (False, 1e-3), (False, 2e-5)):
        kwargs = {} if fix_gamma is None else {"fix_gamma": fix_gamma}
        if eps != 1e-3:
            kwargs["eps"] = eps
        net = mx.sym.BatchNorm(data=mx.sym.Variable("data"), name="bn", **kwargs)
        g = mx.to_graph(net, input_shape=(c, 4, 4), params=params)
        gamma = params["bn_gamma"] if fix_gamma is False else np.ones(c)
        assert rel_err(graphrt.run_reference(g, x), numpy_bn(gamma, eps)) < 1e-5
        if fix_gamma is not False:
            assert np.array_equal(g.params["bn_gamma"], np.ones(c, np.float32))
            assert not g.param_info["bn_gamma"].trainable


def test_pooling_convention_full_vs_valid():
    data = mx.sym.Variable("data")
    x = np.random.default_rng(0).standard_normal((1, 2, 8, 8)).astype(np.float32)
    sizes = {}
    for conv in ("valid", "full"):
        for ptype in ("max", "avg"):
            net = mx.sym.Pooling(data=data, kernel=(3, 3), stride=(2, 2), pool_type=ptype,
                                 pooling_convention=conv, name="p")
            g = mx.to_graph(net, input_shape=(2, 8, 8))
            y = graphrt.run_reference(g, x)
            sizes[conv, ptype] = y.shape[2:]
            # windows at 0, 2, 4 (valid) and also 6 (full: the last one covers rows 6-7 only)
            for i in range(y.shape[2]):
                for j in range(y.shape[3]):
                    win = x[:, :, 2 * i:2 * i + 3, 2 * j:2 * j + 3]
                    want = win.max((2, 3)) if ptype == "max" else win.mean((2, 3))
                    np.testing.assert_allclose(y[:, :, i, j], want, rtol=1e-5)
    # MXNet: valid 1 + floor((8 - 3) / 2) = 3, full 1 + ceil((8 - 3) / 2) = 4
    assert sizes["valid", "max"] == sizes["valid", "avg"] == (3, 3)
    assert sizes["full", "max"] == sizes["full", "avg"] == (4, 4)
    net = mx.sym.Pooling(data=data, kernel=(2, 2), pool_type="avg", global_pool=True)
    assert mx.to_graph(net, input_shape=(2, 8, 8)).specs[net.name].shape == (None, 2, 1, 1)


def test_pooling_count_include_pad():
    x = np.ones((1, 1, 4, 4), np.float32)
    for include, corner in ((True, 4 / 9), (False, 1.0)):
        net = mx.sym.Pooling(data=mx.sym.Variable("data"), kernel=(3, 3), pad=(1, 1),
                             pool_type="avg", count_include_pad=include)
        y = graphrt.run_reference(mx.to_graph(net, input_shape=(1, 4, 4)), x)
        assert y.shape == (1, 1, 4, 4)
        assert y[0, 0, 0, 0] == pytest.approx(corner)


def test_lrn_uses_knorm_and_alpha_over_nsize():
    x = np.random.default_rng(0).standard_normal((2, 7, 3, 3)).astype(np.float32)
    net = mx.sym.LRN(data=mx.sym.Variable("data"), alpha=0.5, beta=0.75, knorm=2, nsize=3)
    y = graphrt.run_reference(mx.to_graph(net, input_shape=(7, 3, 3)), x)
    sq = np.pad(x.astype(np.float64) ** 2, ((0, 0), (1, 1), (0, 0), (0, 0)))
    window = sq[:, :-2] + sq[:, 1:-1] + sq[:, 2:]
    assert rel_err(y, x / (2 + 0.5 / 3 * window) ** 0.75) < 1e-5


def test_fully_connected_flattens_and_reshape_special_values():
    data = mx.sym.Variable("data")
    fc = mx.sym.FullyConnected(data=data, num_hidden=5, name="fc")
    g = mx.to_graph(fc, input_shape=(2, 3, 4))
    assert [n.op for n in g.nodes] == ["flatten", "dense"]
    assert g.params["fc_weight"].shape == (5, 24)
    x = np.random.default_rng(0).standard_normal((3, 2, 3, 4)).astype(np.float32)
    want = x.reshape(3, -1) @ g.params["fc_weight"].T + g.params["fc_bias"]
    np.testing.assert_allclose(graphrt.run_reference(g, x), want, rtol=1e-5, atol=1e-6)
    with pytest.raises(UnsupportedError, match="flatten=False"):
        mx.to_graph(mx.sym.FullyConnected(data=data, num_hidden=5, flatten=False),
                    input_shape=(2, 3, 4))
    for target, want_shape in (((0, -1), (None, 24)), ((-1, 6, 4), (None, 6, 4)),
                               ((0, -3, 4), (None, 6, 4)), ((0, 0, -4, 3, -1, 0), (None, 2, 3, 1, 4)),
                               ((-2,), (None, 2, 3, 4))):
        r = mx.sym.Reshape(data=data, shape=target, name="r")
        assert mx.to_graph(r, input_shape=(2, 3, 4)).specs["r"].shape == want_shape
    for bad in ((4, -1), (0, 5), (-1, -1)):
        with pytest.raises(GraphrtError):
            mx.to_graph(mx.sym.Reshape(data=data, shape=bad), input_shape=(2, 3, 4))


@given(st.lists(st.integers(1, 4), min_size=1, max_size=4), st.data())
def test_reshape_rule_matches_numpy(dims, draw):
    """0 and one -1 follow numpy's reshape once 0s are replaced by the copied sizes."""
    src = (None,) + tuple(dims)
    total = math.prod(dims)
    n = len(src)
    target = [0] + [draw.draw(st.sampled_from([0, -1, "keep"])) for i in range(1, n)]
    while target.count(-1) > 1:
        target[target.index(-1)] = "keep"
    target = [src[i] if t == "keep" else t for i, t in enumerate(target)]
    out = mx.mxnet_reshape(src, tuple(target))
    concrete = [src[i] if t == 0 else t for i, t in enumerate(target)]
    assert out[1:] == np.empty((2, total)).reshape([2] + concrete[1:]).shape[1:]
    assert out[0] is None


def test_activations_and_leaky_relu():
    x = np.linspace(-3, 3, 12, dtype=np.float32).reshape(1, 12)
    data = mx.sym.Variable("data")
    for act, fn in (("relu", lambda v: np.maximum(v, 0)), ("tanh", np.tanh),
                    ("sigmoid", lambda v: 1 / (1 + np.exp(-v)))):
        g = mx.to_graph(mx.sym.Activation(data=data, act_type=act), input_shape=(12,))
        np.testing.assert_allclose(graphrt.run_reference(g, x), fn(x), rtol=1e-6)
    g = mx.to_graph(mx.sym.LeakyReLU(data=data, act_type="leaky", slope=0.1), input_shape=(12,))
    np.testing.assert_allclose(graphrt.run_reference(g, x), np.where(x > 0, x, 0.1 * x), rtol=1e-6)
    g = mx.to_graph(mx.sym.LeakyReLU(data=data), input_shape=(12,))  # MXNet default slope 0.25
    np.testing.assert_allclose(graphrt.run_reference(g, x), np.where(x > 0, x, 0.25 * x), rtol=1e-6)
    with pytest.raises(UnsupportedError, match="mish") as info:
        mx.to_graph(mx.sym.Activation(data=data, act_type="mish", name="sr"),
                    input_shape=(12,))
    assert info.value.node == "sr"


def test_dropout_is_identity_and_softmax_output_over_axis_1():
    data = mx.sym.Variable("data")
    net = mx.sym.SoftmaxOutput(data=mx.sym.Dropout(data=data, p=0.3, name="drop"),
                               name="softmax")
    g = mx.to_graph(net, input_shape=(6,))
    assert g.inputs == ["data"] and g.node("drop").attrs["rate"] == 0.3
    x = np.random.default_rng(0).standard_normal((3, 6)).astype(np.float32)
    e = np.exp(x - x.max(1, keepdims=True))
    np.testing.assert_allclose(graphrt.run_reference(g, x), e / e.sum(1, keepdims=True), rtol=1e-5)


def test_params_file_with_prefixes_and_aux(tmp_path):
    rng = np.random.default_rng(0)
    with mx.name.NameManager():
        data = mx.sym.Variable("data")
        net = mx.sym.FullyConnected(data=mx.sym.BatchNorm(data=data, fix_gamma=False, name="bn"),
                                    num_hidden=2, name="fc")
    arrays = {"arg:bn_gamma": rng.uniform(1, 2, 3), "arg:bn_beta": rng.standard_normal(3),
              "aux:bn_moving_mean": rng.standard_normal(3), "aux:bn_moving_var": rng.uniform(1, 2, 3),
              "arg:fc_weight": rng.standard_normal((2, 3)), "arg:fc_bias": rng.standard_normal(2),
              "arg:unused": np.zeros(1)}
    path = tmp_path / "net-0000.params"
    path.write_bytes(encode_params(arrays))
    g = mx.to_graph(net, input_shape=(3,), params=path)
    assert "unused" not in g.params
    np.testing.assert_allclose(g.params["bn_moving_var"], arrays["aux:bn_moving_var"], rtol=1e-6)
    x = rng.standard_normal((4, 3)).astype(np.float32)
    a = {k.split(":")[1]: v for k, v in arrays.items()}
    h = (x - a["bn_moving_mean"]) / np.sqrt(a["bn_moving_var"] + 1e-3) * a["bn_gamma"] + a["bn_beta"]
    assert rel_err(graphrt.run_reference(g, x), h @ a["fc_weight"].T + a["fc_bias"]) < 1e-5


def test_input_shapes_from_dict_and_variable_shape():
    a, b = mx.sym.Variable("a"), mx.sym.Variable("b", shape=(1, 3))
    net = mx.sym.Concat(a, b, dim=1)
    g = mx.to_graph(net, input_shape={"a": (2,)})
    assert g.inputs == ["a", "b"] and g.specs[g.outputs[0]].shape == (None, 5)
    with pytest.raises(ShapeError, match="'a'"):
        mx.to_graph(net)
    with pytest.raises(ShapeError, match="dict"):
        mx.to_graph(mx.sym.Concat(a, mx.sym.Variable("c"), dim=1), input_shape=(2,))


# ----------------------------------------------------------------------------- errors

def lenet_doc(shared) -> dict:
    return json.loads((shared / "fixtures" / "mxnet" / "lenet-symbol.json").read_text())


def test_unknown_op_names_node_op_and_file(shared, tmp_path):
    doc = lenet_doc(shared)
    doc["nodes"][4]["op"] = "Swish"
    path = tmp_path / "bad-symbol.json"
    path.write_text(json.dumps(doc, indent=2))
    with pytest.raises(UnsupportedError) as info:
        mx.load_mxnet(path, input_shape=(1, 28, 28))
    err = info.value
    assert isinstance(err, GraphrtError)
    assert err.node == "activation7" and err.op == "Swish" and err.file == str(path)
    assert err.line is not None and "Swish" in str(err) and "activation7" in str(err)


def test_wrong_shaped_parameter_names_param_node_and_shapes(shared):
    d = shared / "fixtures" / "mxnet"
    params = graphrt.frontends.mxnet.io.read_params(d / "lenet-0000.params")
    params["arg:fc1_weight"] = np.zeros((500, 801), np.float32)
    with pytest.raises(WeightError) as info:
        mx.load_mxnet(d / "lenet-symbol.json", params=params, input_shape=(1, 28, 28))
    msg = str(info.value)
    assert info.value.node == "fc1"
    assert "fc1_weight" in msg and "(500, 801)" in msg and "(500, 800)" in msg
    # a wrong input size shows up as the same kind of error
    with pytest.raises(WeightError, match=r"\(500, 800\).*\(500, 1250\)"):
        mx.load_mxnet(d / "lenet-symbol.json", params=d / "lenet-0000.params",
                      input_shape=(1, 32, 32))


def test_missing_parameter_names_it(shared):
    d = shared / "fixtures" / "mxnet"
    params = graphrt.frontends.mxnet.io.read_params(d / "lenet-0000.params")
    del params["arg:conv2_bias"]
    with pytest.raises(WeightError, match="conv2_bias") as info:
        mx.load_mxnet(d / "lenet-symbol.json", params=params, input_shape=(1, 28, 28))
    assert info.value.node == "conv2"
    g = mx.load_mxnet(d / "lenet-symbol.json", params=params, input_shape=(1, 28, 28),
                      allow_missing=True)
    assert not g.params["conv2_bias"].any()


def test_malformed_attribute_names_node(shared, tmp_path):
    doc = lenet_doc(shared)
    doc["nodes"][8]["attrs"]["kernel"] = "(3, x)"
    path = tmp_path / "bad-symbol.json"
    path.write_text(json.dumps(doc, indent=2))
    with pytest.raises(GraphrtError) as info:
        mx.load_mxnet(path, input_shape=(1, 28, 28))
    assert info.value.node == "conv2" and "kernel" in str(info.value)
    assert "(3, x)" in str(info.value) and info.value.file == str(path)
    # the same through the symbol API
    net = mx.sym.Convolution(data=mx.sym.Variable("data"), kernel="(3, x)", num_filter=2,
                             name="c")
    with pytest.raises(ParseError, match="'c'"):
        mx.to_graph(net, input_shape=(1, 8, 8))


@pytest.mark.parametrize("kwargs, error, text", [
    ({"kernel": (3, 3, 3), "num_filter": 2}, UnsupportedError, "2-D"),
    ({"kernel": (3, 3)}, AttrError, "num_filter"),
    ({"kernel": (3, 3), "num_filter": 0}, AttrError, "positive"),
    ({"kernel": (3, 3), "num_filter": 4, "num_group": 3}, ShapeError, "num_group"),
    ({"kernel": (9, 9), "num_filter": 2}, ShapeError, "larger"),
])
def test_convolution_errors(kwargs, error, text):
    net = mx.sym.Convolution(data=mx.sym.Variable("data"), name="conv", **kwargs)
    with pytest.raises(error, match=text) as info:
        mx.to_graph(net, input_shape=(2, 8, 8))
    assert info.value.node == "conv"


def test_invalid_json_and_cycle(tmp_path):
    path = tmp_path / "x-symbol.json"
    path.write_text('{"nodes": [')
    with pytest.raises(ParseError):
        mx.load_mxnet(path, input_shape=(1,))
    doc = {"nodes": [{"op": "null", "name": "data", "inputs": []},
                     {"op": "Activation", "name": "a", "attrs": {"act_type": "relu"},
                      "inputs": [[2, 0, 0]]},
                     {"op": "Activation", "name": "b", "attrs": {"act_type": "relu"},
                      "inputs": [[1, 0, 0]]}],
           "arg_nodes": [0], "heads": [[2, 0, 0]]}
    path.write_text(json.dumps(doc))
    with pytest.raises(GraphrtError, match="earlier"):
        mx.load_mxnet(path, input_shape=(3,))
    with pytest.raises(ParseError):
        mx.load(tmp_path / "absent.json")


def test_pooling_window_starting_past_the_input_is_refused():
    # MXNet: 1 + ceil((5 - 1) / 3) = 3 outputs, the last window starting at 6, past the input
    net = mx.sym.Pooling(data=mx.sym.Variable("data"), kernel=(1, 1), stride=(3, 3),
                         pooling_convention="full", name="p")
    with pytest.raises(UnsupportedError, match="3x3") as info:
        mx.to_graph(net, input_shape=(1, 5, 5))
    assert info.value.node == "p"


def test_variable_init_and_multipliers():
    w = mx.sym.Variable("w", init=mx.init.Constant(0.5), lr_mult=2, wd_mult=0)
    net = mx.sym.FullyConnected(data=mx.sym.Variable("data"), weight=w, num_hidden=3, name="fc")
    assert net.list_arguments() == ["data", "w", "fc_bias"]
    g = mx.to_graph(mx.sym.load_json(net.tojson()), input_shape=(4,))
    assert np.all(g.params["w"] == 0.5)
    assert (g.param_info["w"].lr_mult, g.param_info["w"].decay_mult) == (2.0, 0.0)
    x = mx.sym.Variable("w2", init=mx.init.Xavier(magnitude=6))
    g = mx.to_graph(mx.sym.FullyConnected(data=mx.sym.Variable("data"), weight=x, num_hidden=30),
                    input_shape=(10,))
    assert np.abs(g.params["w2"]).max() > math.sqrt(3 / 20)  # beyond the magnitude-3 scale


def test_all_attributes_explicit_as_the_brief_writes_them():
    data = mx.sym.Variable("data")
    conv = mx.sym.Convolution(data=data, kernel=(3, 3), stride=(1, 1), pad=(1, 1), dilate=(1, 1),
                              num_filter=4, num_group=2, no_bias=False, name="c")
    act = mx.sym.LeakyReLU(data=conv, act_type="leaky", slope=0.25)
    pool = mx.sym.Pooling(data=act, kernel=(2, 2), stride=(2, 2), pad=(0, 0), pool_type="avg",
                          pooling_convention="valid", global_pool=False, count_include_pad=True)
    bn = mx.sym.BatchNorm(data=pool, eps=1e-3, momentum=0.9, fix_gamma=True,
                          use_global_stats=False)
    g = mx.to_graph(mx.sym.Flatten(data=bn), input_shape=(2, 6, 6))
    g.verify()
    attrs = g.node("c").attrs
    assert (attrs["stride"], attrs["pads"], attrs["dilation"], attrs["groups"]) == \
        ((1, 1), (1, 1, 1, 1), (1, 1), 2)
    assert g.params["c_weight"].shape == (4, 1, 3, 3)
    assert g.specs[g.outputs[0]].shape == (None, 36)


CHAIN_OPS = st.sampled_from(["conv", "pool", "act", "lrn", "bn"])


@given(st.lists(st.tuples(CHAIN_OPS, st.integers(1, 3), st.integers(1, 2), st.integers(0, 1),
                          st.booleans()), min_size=1, max_size=4),
       st.integers(4, 9))
def test_symbol_and_its_json_give_the_same_graph(layers, size):
    """Random chains convert identically from the symbol and from its JSON (or fail identically)."""
    with mx.name.NameManager():
        net = mx.sym.Variable("data")
        for op, k, s, p, flag in layers:
            if op == "conv":
                net = mx.sym.Convolution(data=net, kernel=(k, k), stride=(s, s), pad=(p, p),
                                         num_filter=3, no_bias=flag)
            elif op == "pool":
                net = mx.sym.Pooling(data=net, kernel=(k, k), stride=(s, s), pad=(p, p),
                                     pool_type="max" if flag else "avg",
                                     pooling_convention="full" if s > 1 else "valid")
            elif op == "act":
                net = mx.sym.Activation(data=net, act_type="tanh" if flag else "relu")
            elif op == "lrn":
                net = mx.sym.LRN(data=net, nsize=2 * k - 1, knorm=1 + p)
            else:
                net = mx.sym.BatchNorm(data=net, fix_gamma=flag)
        net = mx.sym.FullyConnected(data=net, num_hidden=2)
    results = []
    for source in (net, mx.sym.load_json(net.tojson())):
        try:
            g = mx.to_graph(source, input_shape=(3, size, size), seed=5)
        except GraphrtError as err:
            results.append((type(err), err.node))
            continue
        g.verify()
        x = np.random.default_rng(0).standard_normal((2, 3, size, size)).astype(np.float32)
        results.append(([(n.name, n.op, n.inputs, dict(n.attrs)) for n in g.nodes],
                        graphrt.run_reference(g, x)))
    (a, ya), (b, yb) = results
    assert a == b
    if isinstance(ya, np.ndarray):
        assert np.array_equal(ya, yb)
