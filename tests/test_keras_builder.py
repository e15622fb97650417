"""The Keras-like builder (graphrt.frontends.keras): seed models, spellings, layouts, padding, errors."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, strategies as st

import graphrt
from graphrt.ir.errors import (AttrError, GraphError, GraphrtError, ShapeError, UnsupportedError,
                               WeightError)
from graphrt.frontends import keras as K

from example_files import line_of, load_example, this_line


def softmax_rows_ok(y: np.ndarray) -> None:
    assert np.all(np.isfinite(y))
    assert np.all(y >= 0)
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)


# ---- the seed models ----------------------------------------------------------------------------
def test_simple_ann_graph():
    mod, path = load_example("keras_simple_ann")
    g = mod.build().to_graph(seed=0)
    assert [n.op for n in g.nodes] == ["dense", "tanh", "dropout", "dense", "tanh", "dropout",
                                       "dense", "softmax"]
    assert len(g) == 8
    assert g.inputs == ["input_1"] and g.specs["input_1"].shape == (None, 20)
    assert g.specs[g.outputs[0]].shape == (None, 10)
    assert g.num_params() == 20 * 64 + 64 + 64 * 64 + 64 + 64 * 10 + 10
    assert sorted(g.params) == sorted(f"dense_{i}/{v}" for i in (1, 2, 3) for v in ("kernel", "bias"))
    assert g.params["dense_1/kernel"].shape == (64, 20)  # (out, in)
    for i in (1, 2, 3):  # Keras 1 init='uniform' is U(-0.05, 0.05); biases zero
        w = g.params[f"dense_{i}/kernel"]
        assert np.abs(w).max() <= 0.05 and np.abs(w).max() > 0.04
        assert not g.params[f"dense_{i}/bias"].any()
    assert g.node("dropout_1").attrs["rate"] == 0.5
    src = g.node("dense_1").source
    assert (src.layer, src.type, Path(src.file), src.line) == (
        "dense_1", "Dense", path, line_of(path, "Dense(64, input_dim=20"))
    x = np.random.default_rng(1).standard_normal((5, 20)).astype(np.float32)
    y = graphrt.run_reference(g, x)
    assert y.shape == (5, 10) and y.dtype == np.float32
    softmax_rows_ok(y)


def cnn_param_count(size: int) -> int:
    def conv(cin, cout, k=3):
        return cin * cout * k * k + cout
    s = ((size - 4) // 2 - 4) // 2
    return (conv(3, 32) + conv(32, 32) + conv(32, 64) + conv(64, 64)
            + 64 * s * s * 256 + 256 + 256 * 10 + 10)


def test_simple_cnn_graph():
    mod, path = load_example("keras_simple_cnn")
    g = mod.build().to_graph(seed=0)
    assert [n.op for n in g.nodes] == [
        "conv2d", "relu", "conv2d", "relu", "max_pool", "dropout",
        "conv2d", "relu", "conv2d", "relu", "max_pool", "dropout",
        "flatten", "dense", "relu", "dropout", "dense", "softmax"]
    assert len(g) == 18
    assert g.specs["input_1"].shape == (None, 3, 100, 100)  # channels first, no transpose
    assert g.specs["max_pooling2d_2"].shape == (None, 64, 22, 22)
    assert g.specs["flatten_1"].shape == (None, 64 * 22 * 22)
    assert g.specs[g.outputs[0]].shape == (None, 10)
    assert g.num_params() == cnn_param_count(100) == 7998250
    assert g.params["conv2d_1/kernel"].shape == (32, 3, 3, 3)  # OIHW
    assert g.params["dense_1/kernel"].shape == (256, 30976)
    lim = math.sqrt(6 / (3 * 9 + 32 * 9))  # glorot_uniform, the Keras default
    assert np.abs(g.params["conv2d_1/kernel"]).max() <= lim
    assert g.node("conv2d_2").source.type == "Convolution2D"
    assert g.node("conv2d_2").source.line == line_of(path, "Convolution2D(32, 3, 3))")
    x = np.random.default_rng(2).standard_normal((2, 3, 100, 100)).astype(np.float32)
    softmax_rows_ok(graphrt.run_reference(g, x))


def test_simple_cnn_matches_keras3_fixture(shared):
    doc = json.loads((shared / "fixtures/keras/seed_cnn_100.json").read_text())
    ref = [l for l in doc["config"]["layers"] if l["class_name"] != "InputLayer"]
    inp = [l for l in doc["config"]["layers"] if l["class_name"] == "InputLayer"][0]
    mod, _ = load_example("keras_simple_cnn")
    model = mod.build()
    model.to_graph()  # assigns names
    assert len(model.layers) == len(ref)
    assert tuple(inp["config"]["batch_shape"][1:]) == model.layers[0].input_shape
    for ours, theirs in zip(model.layers, ref):
        assert (ours.keras_class or type(ours).__name__) == theirs["class_name"]
        mine = ours.get_config()
        for key, value in theirs["config"].items():
            if key in ("filters", "kernel_size", "strides", "padding", "activation", "units",
                       "rate", "pool_size", "use_bias", "dilation_rate", "groups"):
                got = mine[key]
                assert (list(got) if isinstance(got, tuple) else got) == value, (ours, key)
            if key == "data_format" and theirs["class_name"] != "Flatten":
                assert mine[key] == value


def _keras3_model(archive) -> K.Sequential:
    """Rebuild a real Keras 3 model from its config with its saved weights."""
    model = K.Sequential()
    for layer in archive.config["config"]["layers"]:
        c, cls = layer["config"], layer["class_name"]
        w = archive.weights.get(c["name"])
        if cls == "InputLayer":
            model.add(K.Input(shape=c["batch_shape"][1:]))
        elif cls == "Conv2D":
            model.add(K.Conv2D(c["filters"], c["kernel_size"], strides=c["strides"],
                               padding=c["padding"], data_format=c["data_format"],
                               activation=c["activation"], weights=w))
        elif cls == "Dense":
            model.add(K.Dense(c["units"], activation=c["activation"], weights=w))
        elif cls == "Activation":
            model.add(K.Activation(c["activation"]))
        elif cls == "Dropout":
            model.add(K.Dropout(c["rate"]))
        elif cls == "Flatten":
            model.add(K.Flatten(data_format=c["data_format"]))
        elif cls == "MaxPooling2D":
            model.add(K.MaxPooling2D(c["pool_size"], c["strides"], c["padding"], c["data_format"]))
        else:
            raise AssertionError(cls)
    return model


@pytest.mark.parametrize("name", ["seed_ann", "seed_cnn_32"])
def test_matches_real_keras_outputs(shared, name):
    pytest.importorskip("h5py")
    from graphrt.frontends.keras.io import read_keras_archive

    folder = shared / "fixtures/keras"
    g = _keras3_model(read_keras_archive(folder / f"{name}.keras")).to_graph()
    x = np.load(folder / f"{name}_input.npy")
    want = np.load(folder / f"{name}_output.npy")
    got = graphrt.run_reference(g, x)
    assert np.abs(got.astype(np.float64) - want).max() / np.abs(want).max() < 1e-5


# ---- spellings ----------------------------------------------------------------------------------
def keras1_cnn():
    return K.Sequential([
        K.Convolution2D(8, 3, 3, border_mode='valid', input_shape=(3, 20, 20)),
        K.Activation('relu'),
        K.Convolution2D(8, 3, 3, border_mode='same', subsample=(2, 2)),
        K.Activation('relu'),
        K.MaxPooling2D(pool_size=(2, 2)),
        K.Dropout(0.25),
        K.Flatten(),
        K.Dense(16, init='uniform'),
        K.Activation('relu'),
        K.Dense(10),
        K.Activation('softmax'),
    ])


def keras2_cnn():
    cf = 'channels_first'
    return K.Sequential([
        K.Input(shape=(3, 20, 20)),
        K.Conv2D(8, (3, 3), padding='valid', data_format=cf),
        K.Activation('relu'),
        K.Conv2D(8, 3, strides=2, padding='same', data_format=cf),
        K.Activation('relu'),
        K.MaxPooling2D(pool_size=2, data_format=cf),
        K.Dropout(rate=0.25),
        K.Flatten(),
        K.Dense(units=16, kernel_initializer='random_uniform'),
        K.Activation('relu'),
        K.Dense(10, kernel_initializer='glorot_uniform'),
        K.Activation('softmax'),
    ])


def assert_same_graph(g1, g2):
    n1, n2 = g1.nodes, g2.nodes
    assert [(n.name, n.op, n.inputs, n.outputs, dict(n.attrs)) for n in n1] == \
           [(n.name, n.op, n.inputs, n.outputs, dict(n.attrs)) for n in n2]
    assert g1.inputs == g2.inputs and g1.outputs == g2.outputs
    assert g1.specs == g2.specs
    assert sorted(g1.params) == sorted(g2.params)
    for k in g1.params:
        np.testing.assert_array_equal(g1.params[k], g2.params[k])


def test_keras1_and_keras2_spellings_give_the_same_graph():
    g1, g2 = keras1_cnn().to_graph(seed=7), keras2_cnn().to_graph(seed=7)
    assert_same_graph(g1, g2)
    assert g1.specs["conv2d_2"].shape == (None, 8, 9, 9)
    assert dict(g1.node("conv2d_2").attrs)["pads"] == (0, 1, 0, 1)  # TF: total 1, extra at the end
    x = np.random.default_rng(0).standard_normal((2, 3, 20, 20)).astype(np.float32)
    np.testing.assert_array_equal(graphrt.run_reference(g1, x), graphrt.run_reference(g2, x))
    # a different seed gives different parameters, the same seed the same
    g3 = keras1_cnn().to_graph(seed=8)
    assert not np.array_equal(g1.params["conv2d_1/kernel"], g3.params["conv2d_1/kernel"])
    assert_same_graph(g1, keras1_cnn().to_graph(seed=7))


def test_keras1_and_keras2_ann_spellings():
    m1 = K.Sequential()
    m1.add(K.Dense(64, input_dim=20, init='uniform')).add(K.Activation('tanh'))
    m1.add(K.Dropout(0.5)).add(K.Dense(10, init='uniform')).add(K.Activation('softmax'))
    m2 = K.Sequential([K.InputLayer(input_shape=(20,)),
                       K.Dense(units=64, kernel_initializer='RandomUniform'), K.Activation('tanh'),
                       K.Dropout(rate=0.5),
                       K.Dense(10, kernel_initializer={"class_name": "RandomUniform",
                                                       "config": {"minval": -0.05, "maxval": 0.05}}),
                       K.Activation('softmax')])
    assert_same_graph(m1.to_graph(seed=3), m2.to_graph(seed=3))


# ---- layouts ------------------------------------------------------------------------------------
def conv_stack(fmt: str) -> K.Sequential:
    bn_axis = 1 if fmt == "channels_first" else -1
    shape = (3, 9, 11) if fmt == "channels_first" else (9, 11, 3)
    rng = np.random.default_rng(5)
    bn_w = [rng.uniform(0.5, 1.5, 4).astype(np.float32), rng.standard_normal(4).astype(np.float32),
            rng.standard_normal(4).astype(np.float32), rng.uniform(0.5, 2, 4).astype(np.float32)]
    return K.Sequential([
        K.Input(shape=shape),
        K.Conv2D(4, (3, 3), strides=2, padding="same", data_format=fmt),
        K.BatchNormalization(axis=bn_axis, weights=bn_w),
        K.ReLU(),
        K.MaxPooling2D(pool_size=3, strides=2, padding="same", data_format=fmt),
        K.AveragePooling2D(pool_size=2, padding="same", data_format=fmt),
        K.Softmax(axis=bn_axis),
        K.GlobalAveragePooling2D(data_format=fmt),
        K.Dense(5, activation="softmax"),
    ])


def test_channels_last_equals_channels_first_on_transposed_input():
    gf, gl = conv_stack("channels_first").to_graph(seed=4), conv_stack("channels_last").to_graph(seed=4)
    assert gl.specs["input_1"].shape == (None, 9, 11, 3)
    assert gl.nodes[0].op == "transpose" and gl.nodes[0].name == "input_1/to_nchw"
    assert gf.nodes[0].op == "conv2d"
    assert dict(gl.node("softmax_1").attrs)["axis"] == 1  # Keras' channel axis in NCHW
    for k in gf.params:
        np.testing.assert_array_equal(gf.params[k], gl.params[k])
    x = np.random.default_rng(9).standard_normal((3, 3, 9, 11)).astype(np.float32)
    yf = graphrt.run_reference(gf, x)
    yl = graphrt.run_reference(gl, np.ascontiguousarray(x.transpose(0, 2, 3, 1)))
    np.testing.assert_allclose(yf, yl, rtol=1e-5, atol=1e-6)
    softmax_rows_ok(yf)


def _conv_same_nhwc(x, k, b):
    """Keras' Conv2D (stride 1, 'same', odd kernel) on NHWC with an HWIO kernel, by hand."""
    kh, kw = k.shape[:2]
    xp = np.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    n, h, w, _ = x.shape
    out = np.zeros((n, h, w, k.shape[3]), np.float64)
    for i in range(h):
        for j in range(w):
            out[:, i, j, :] = np.einsum("nabc,abco->no", xp[:, i:i + kh, j:j + kw, :], k)
    return out + b


@pytest.mark.parametrize("fmt", ["channels_last", "channels_first"])
def test_flatten_order_matches_keras(fmt):
    shape = (5, 4, 2) if fmt == "channels_last" else (2, 5, 4)
    model = K.Sequential([K.Input(shape=shape), K.Conv2D(3, (3, 3), padding="same", data_format=fmt,
                                                          bias_initializer="random_normal"),
                          K.Flatten(), K.Dense(4, bias_initializer="random_normal")])
    g = model.to_graph(seed=1)
    kernel_hwio = g.params["conv2d_1/kernel"].transpose(2, 3, 1, 0)
    dense_in_out = g.params["dense_1/kernel"].T
    x_nhwc = np.random.default_rng(0).standard_normal((2, 5, 4, 2)).astype(np.float32)
    conv = _conv_same_nhwc(x_nhwc.astype(np.float64), kernel_hwio, g.params["conv2d_1/bias"])
    if fmt == "channels_last":  # Keras keeps (N, H, W, C) and flattens that
        flat, x = conv.reshape(2, -1), x_nhwc
        assert [n.name for n in g.nodes if n.op == "transpose"] == ["input_1/to_nchw",
                                                                    "flatten_1/to_nhwc"]
    else:  # Keras keeps (N, C, H, W) and flattens that
        flat, x = conv.transpose(0, 3, 1, 2).reshape(2, -1), x_nhwc.transpose(0, 3, 1, 2)
        assert not [n for n in g.nodes if n.op == "transpose"]
    want = flat @ dense_in_out + g.params["dense_1/bias"]
    got = graphrt.run_reference(g, np.ascontiguousarray(x))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_keras3_flatten_channels_first_moves_channels_last():
    # Keras 3: Flatten(data_format='channels_first') flattens a channels_first tensor as NHWC
    g = K.Sequential([K.Input(shape=(2, 3, 4)), K.Conv2D(2, 1, data_format="channels_first"),
                      K.Flatten(data_format="channels_first")]).to_graph()
    x = np.random.default_rng(0).standard_normal((1, 2, 3, 4)).astype(np.float32)
    vals = graphrt.run_reference(g, x, return_all=True)
    np.testing.assert_array_equal(vals["flatten_1"], vals["conv2d_1"].transpose(0, 2, 3, 1).reshape(1, -1))


# ---- 'same' padding -----------------------------------------------------------------------------
def tf_same(size, k, s, d=1):
    out = -(-size // s)
    total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2, out


@given(h=st.integers(1, 40), w=st.integers(1, 40), k=st.integers(1, 6), s=st.integers(1, 3),
       d=st.integers(1, 2))
def test_conv_same_padding_is_tensorflows(h, w, k, s, d):
    g = K.Sequential([K.Conv2D(2, (k, k), strides=s, dilation_rate=d, padding="same",
                               data_format="channels_first", input_shape=(1, h, w))]).to_graph()
    t, b, oh = tf_same(h, k, s, d)
    l, r, ow = tf_same(w, k, s, d)
    assert dict(g.node("conv2d_1").attrs)["pads"] == (t, b, l, r)
    assert g.specs["conv2d_1"].shape == (None, 2, oh, ow)


@pytest.mark.parametrize("size,k,s,pads", [(7, 3, 1, (1, 1)), (7, 3, 2, (1, 1)), (8, 3, 2, (0, 1)),
                                           (8, 2, 2, (0, 0)), (9, 2, 2, (0, 1)), (5, 5, 2, (2, 2)),
                                           (6, 4, 1, (1, 2)), (10, 1, 3, (0, 0))])
def test_pool_same_padding_examples(size, k, s, pads):
    for cls in (K.MaxPooling2D, K.AveragePooling2D):
        g = K.Sequential([K.Input(shape=(size, size, 1)),
                          cls(pool_size=k, strides=s, padding="same")]).to_graph()
        node = g.nodes[-2]  # the last is the output's to_nhwc transpose
        assert g.nodes[-1].name.endswith("/to_nhwc")
        assert dict(node.attrs)["pads"] == pads + pads
        assert g.specs[node.outputs[0]].shape == (None, 1, -(-size // s), -(-size // s))


def test_same_average_pooling_does_not_count_padding():
    g = K.Sequential([K.Input(shape=(3, 3, 2)),
                      K.AveragePooling2D(pool_size=2, strides=2, padding="same")]).to_graph()
    assert dict(g.nodes[-2].attrs)["count_include_pad"] is False
    y = graphrt.run_reference(g, np.ones((1, 3, 3, 2), np.float32))
    np.testing.assert_allclose(y, 1.0)


def test_same_max_pooling_pads_with_minus_infinity():
    g = K.Sequential([K.Input(shape=(1, 3, 3)),
                      K.MaxPooling2D(pool_size=2, strides=2, padding="same",
                                     data_format="channels_first")]).to_graph()
    y = graphrt.run_reference(g, -np.ones((1, 1, 3, 3), np.float32))
    np.testing.assert_allclose(y, -1.0)


# ---- names, sources, weights ----------------------------------------------------------------------
def test_names_and_sources():
    line = this_line() + 1
    a = K.Dense(4, input_dim=3, name="dense_2", activation="relu")
    b = K.Dense(4)
    c = K.Dense(2, name="head")
    g = K.Sequential([a, b, c, K.Activation("linear")]).to_graph()
    assert [n.name for n in g.nodes] == ["dense_2", "dense_2/relu", "dense_1", "head"]
    assert g.outputs == ["head"]
    src = g.node("dense_2/relu").source
    assert (src.layer, src.type, src.file, src.line) == ("dense_2", "Dense", __file__, line)
    assert g.node("dense_1").source.line == line + 1
    assert "dense_2/kernel" in g.params and "head/bias" in g.params


def test_duplicate_names_and_layers_are_refused():
    with pytest.raises(GraphError, match="named 'x'"):
        K.Sequential([K.Dense(2, input_dim=2, name="x"), K.Dense(2, name="x")]).to_graph()
    d = K.Dense(2, input_dim=2)
    with pytest.raises(GraphError, match="already in this model"):
        K.Sequential([d, d])


def test_given_weights_and_bad_weights():
    k = np.arange(6, dtype=np.float32).reshape(3, 2)  # Keras (in, out)
    g = K.Sequential([K.Dense(2, input_dim=3, weights=[k, np.array([1, 2], np.float32)])]).to_graph()
    np.testing.assert_array_equal(g.params["dense_1/kernel"], k.T)
    x = np.ones((1, 3), np.float32)
    np.testing.assert_allclose(graphrt.run_reference(g, x), x @ k + [1, 2])
    with pytest.raises(WeightError, match="dense_1"):
        K.Sequential([K.Dense(2, input_dim=3, weights=[k.T, np.zeros(2)])]).to_graph()


def test_batchnorm_parameters_and_flags():
    g = K.Sequential([K.Dense(3, input_dim=2), K.BatchNormalization(epsilon=1e-2)]).to_graph()
    node = g.node("batch_normalization_1")
    assert node.inputs[1:] == tuple(f"batch_normalization_1/{v}" for v in
                                    ("moving_mean", "moving_variance", "gamma", "beta"))
    assert dict(node.attrs)["eps"] == 1e-2
    assert not g.param_info["batch_normalization_1/moving_mean"].trainable
    g2 = K.Sequential([K.Dense(3, input_dim=2), K.BatchNormalization(center=False, scale=False)]).to_graph()
    assert len(g2.node("batch_normalization_1").inputs) == 3


# ---- errors name the layer ------------------------------------------------------------------------
def test_conv_with_wrong_input_rank():
    line = this_line() + 1
    model = K.Sequential([K.Input(shape=(20,)), K.Conv2D(4, 3)])
    with pytest.raises(ShapeError) as err:
        model.to_graph()
    e = err.value
    assert (e.node, e.op, e.file, e.line) == ("conv2d_1", "Conv2D", __file__, line)
    assert "4-D" in str(e) and "(N, 20)" in str(e)


def test_unknown_activation_names_the_layer():
    model = K.Sequential([K.Dense(4, input_dim=3), K.Activation("swishy")])
    with pytest.raises(GraphrtError, match="activation_1.*unknown activation 'swishy'"):
        model.to_graph()
    with pytest.raises(GraphrtError, match="'mid'.*unknown activation"):
        K.Sequential([K.Dense(4, input_dim=3, name="mid", activation="nope")]).to_graph()


def test_dense_on_images_acts_on_the_channels():
    """As in Keras, Dense on a (N, H, W, C) tensor multiplies the last axis (a 1x1 convolution)."""
    rng = np.random.default_rng(0)
    w, b = rng.standard_normal((2, 3)).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    model = K.Sequential([K.Input(shape=(8, 8, 2)), K.Dense(3, weights=[w, b])])
    x = rng.standard_normal((2, 8, 8, 2)).astype(np.float32)
    y = graphrt.run_reference(model.to_graph(), x)
    np.testing.assert_allclose(y, x @ w + b, rtol=1e-5, atol=1e-5)


def test_more_errors():
    with pytest.raises(ShapeError, match="input_shape"):
        K.Sequential([K.Dense(3)]).to_graph()
    with pytest.raises(UnsupportedError, match="unexpected keyword argument 'activaton'"):
        K.Dense(3, activaton="relu")
    with pytest.raises(UnsupportedError, match="conv2d_2.*does not mix"):
        K.Sequential([K.Conv2D(2, 3, input_shape=(8, 8, 1)),
                      K.Conv2D(2, 3, data_format="channels_first")]).to_graph()
    with pytest.raises(UnsupportedError, match="batch_normalization_1.*axis=1"):
        K.Sequential([K.Conv2D(2, 3, input_shape=(1, 8, 8), data_format="channels_first"),
                      K.BatchNormalization()]).to_graph()
    with pytest.raises(AttrError, match="conv2d_1.*padding"):
        K.Sequential([K.Conv2D(2, 3, padding="full", input_shape=(8, 8, 1))]).to_graph()
    with pytest.raises(ShapeError, match="conv2d_2"):  # kernel larger than its input
        K.Sequential([K.Conv2D(2, 3, input_shape=(4, 4, 1)), K.Conv2D(2, 3)]).to_graph()
    with pytest.raises(GraphError, match="first layer"):
        K.Sequential([K.Dense(2, input_dim=2), K.Input(shape=(2,))])
