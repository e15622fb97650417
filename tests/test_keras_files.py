"""Tests for graphrt.frontends.keras.files: Keras to_json() configs and .keras archives."""
from __future__ import annotations

import copy
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

import graphrt
from graphrt.ir.errors import GraphError, ParseError, ShapeError, UnsupportedError, WeightError
from graphrt.frontends.keras.files import config_to_graph, load_keras

from example_files import load_example

h5py = pytest.importorskip("h5py")


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.fixture
def kdir(shared) -> Path:
    path = shared / "fixtures" / "keras"
    if not path.is_dir():
        pytest.skip(f"{path} is absent")
    return path


# ----------------------------------------------------------------------------- config writers

DTYPE = {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"},
         "registered_name": None}


def layer(cls: str, name: str, **cfg) -> dict:
    """A layer entry as Keras 3 writes it in a Sequential config."""
    return {"module": "keras.layers", "class_name": cls,
            "config": {"name": name, "trainable": True, "dtype": DTYPE, **cfg},
            "registered_name": None}


def ktensor(name: str) -> dict:
    return {"class_name": "__keras_tensor__",
            "config": {"shape": None, "dtype": "float32", "keras_history": [name, 0, 0]}}


def flayer(cls: str, name: str, inputs: list[str], **cfg) -> dict:
    """A layer entry of a Keras 3 Functional config (merge layers get a list argument)."""
    entry = layer(cls, name, **cfg)
    entry["name"] = name
    if not inputs:
        entry["inbound_nodes"] = []
    elif len(inputs) == 1 and cls not in ("Add", "Concatenate", "Subtract", "Average",
                                          "Multiply"):
        entry["inbound_nodes"] = [{"args": [ktensor(inputs[0])], "kwargs": {}}]
    else:
        entry["inbound_nodes"] = [{"args": [[ktensor(i) for i in inputs]], "kwargs": {}}]
    return entry


def sequential(layers: list[dict], name: str = "m") -> dict:
    return {"module": "keras", "class_name": "Sequential",
            "config": {"name": name, "trainable": True, "dtype": DTYPE, "layers": layers},
            "registered_name": None}


def functional(layers: list[dict], inputs: list[str], outputs: list[str], name="f") -> dict:
    return {"module": "keras.src.models.functional", "class_name": "Functional",
            "config": {"name": name, "trainable": True, "layers": layers,
                       "input_layers": [[n, 0, 0] for n in inputs],
                       "output_layers": [[n, 0, 0] for n in outputs]},
            "registered_name": "Functional"}


def h5_bytes(weights: dict[str, list[np.ndarray]]) -> bytes:
    buf = io.BytesIO()
    with h5py.File(buf, "w") as h5:
        layers = h5.create_group("layers")
        for lname, arrays in weights.items():
            group = layers.create_group(lname).create_group("vars")
            group.attrs["name"] = lname
            for i, arr in enumerate(arrays):
                group.create_dataset(str(i), data=arr)
        h5.create_group("vars")
    return buf.getvalue()


def write_zip(path: Path, members: dict[str, bytes | str]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for member, blob in members.items():
            zf.writestr(member, blob)
    return path


def write_keras(path: Path, config: dict, weights: dict[str, list[np.ndarray]]) -> Path:
    return write_zip(path, {"metadata.json": json.dumps({"keras_version": "3.15.1"}),
                            "config.json": json.dumps(config),
                            "model.weights.h5": h5_bytes(weights)})


# ----------------------------------------------------------------------------- Keras in numpy

def _pad_amounts(size, k, s, d, padding):
    eff = (k - 1) * d + 1
    if padding == "valid":
        return (size - eff) // s + 1, 0, 0
    out = -(-size // s)
    total = max((out - 1) * s + eff - size, 0)
    return out, total // 2, total - total // 2


def conv_nhwc(x, kernel, strides, padding, dilation):
    n, h, w, c = x.shape
    kh, kw, _, o = kernel.shape
    (sh, sw), (dh, dw) = strides, dilation
    oh, pt, pb = _pad_amounts(h, kh, sh, dh, padding)
    ow, pl, pr = _pad_amounts(w, kw, sw, dw, padding)
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    y = np.zeros((n, oh, ow, o))
    for a in range(kh):
        for b in range(kw):
            patch = xp[:, a * dh: a * dh + (oh - 1) * sh + 1: sh,
                       b * dw: b * dw + (ow - 1) * sw + 1: sw, :]
            y += patch @ kernel[a, b]
    return y


def pool_nhwc(x, size, strides, padding, kind):
    n, h, w, c = x.shape
    (kh, kw), (sh, sw) = size, strides
    oh, pt, pb = _pad_amounts(h, kh, sh, 1, padding)
    ow, pl, pr = _pad_amounts(w, kw, sw, 1, padding)
    pad = ((0, 0), (pt, pb), (pl, pr), (0, 0))
    xp = np.pad(x, pad, constant_values=-np.inf if kind == "max" else 0.0)
    ones = np.pad(np.ones_like(x), pad)
    acc = np.full((n, oh, ow, c), -np.inf) if kind == "max" else np.zeros((n, oh, ow, c))
    cnt = np.zeros((n, oh, ow, c))
    for a in range(kh):
        for b in range(kw):
            sl = (slice(None), slice(a, a + (oh - 1) * sh + 1, sh),
                  slice(b, b + (ow - 1) * sw + 1, sw), slice(None))
            if kind == "max":
                acc = np.maximum(acc, xp[sl])
            else:
                acc += xp[sl]
                cnt += ones[sl]
    return acc if kind == "max" else acc / cnt


def activate(x, name):
    if name in (None, "linear"):
        return x
    if name == "relu":
        return np.maximum(x, 0)
    if name == "tanh":
        return np.tanh(x)
    if name == "sigmoid":
        return 1 / (1 + np.exp(-x))
    if name == "softmax":
        return softmax(x, -1)
    raise AssertionError(name)


def softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def keras_layer(cls, c, ws, x):
    """One Keras 3 layer on a Keras-layout float64 tensor ``x`` (what Keras computes)."""
    cl = c.get("data_format", "channels_last") != "channels_first"
    to_nhwc = (lambda t: t) if cl else (lambda t: t.transpose(0, 2, 3, 1))
    from_nhwc = (lambda t: t) if cl else (lambda t: t.transpose(0, 3, 1, 2))
    if cls == "Dense":
        y = x @ ws[0] + (ws[1] if c.get("use_bias", True) else 0)
        return activate(y, c.get("activation"))
    if cls == "Conv2D":
        y = conv_nhwc(to_nhwc(x), ws[0], pair(c.get("strides", 1)), c.get("padding", "valid"),
                      pair(c.get("dilation_rate", 1)))
        if c.get("use_bias", True):
            y = y + ws[1]
        return from_nhwc(activate(y, c.get("activation")))
    if cls in ("MaxPooling2D", "AveragePooling2D"):
        size = pair(c.get("pool_size", 2))
        strides = pair(c.get("strides") or size)
        y = pool_nhwc(to_nhwc(x), size, strides, c.get("padding", "valid"),
                      "max" if cls == "MaxPooling2D" else "avg")
        return from_nhwc(y)
    if cls == "GlobalAveragePooling2D":
        return to_nhwc(x).mean(axis=(1, 2))
    if cls == "BatchNormalization":
        axis = c.get("axis", -1) % x.ndim
        ws = list(ws)
        gamma = ws.pop(0) if c.get("scale", True) else 1.0
        beta = ws.pop(0) if c.get("center", True) else 0.0
        mean, var = ws
        shape = [1] * x.ndim
        shape[axis] = -1
        r = lambda v: np.reshape(v, shape) if np.ndim(v) else v  # noqa: E731
        return (x - r(mean)) / np.sqrt(r(var) + c.get("epsilon", 1e-3)) * r(gamma) + r(beta)
    if cls == "Flatten":
        if c.get("data_format") == "channels_first" and x.ndim > 2:
            x = np.moveaxis(x, 1, -1)
        return x.reshape(len(x), -1)
    if cls == "Activation":
        return activate(x, c["activation"])
    if cls == "ReLU":
        return np.where(x > 0, x, x * c.get("negative_slope", 0.0))
    if cls == "Softmax":
        return softmax(x, c.get("axis", -1))
    if cls == "Dropout":
        return x
    raise AssertionError(cls)


def keras_sequential(config: dict, weights: dict, x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    for entry in config["config"]["layers"]:
        if entry["class_name"] == "InputLayer":
            continue
        c = entry["config"]
        ws = [np.asarray(w, np.float64) for w in weights.get(c["name"], [])]
        x = keras_layer(entry["class_name"], c, ws, x)
    return x


def random_weights(rng, **shapes) -> dict:
    return {k: [rng.standard_normal(s).astype(np.float32) * 0.5 for s in v]
            for k, v in shapes.items()}


# ----------------------------------------------------------------------------- real Keras files

@pytest.mark.parametrize("stem", ["seed_ann", "seed_cnn_32"])
def test_archive_reproduces_keras_outputs(kdir, stem):
    x = np.load(kdir / f"{stem}_input.npy")
    want = np.load(kdir / f"{stem}_output.npy")
    g = graphrt.load(kdir / f"{stem}.keras")
    g.verify()
    assert rel_err(graphrt.run_reference(g, x), want) < 1e-4
    exe = graphrt.compile(g, device="cpu", batch_size=len(x), opt_level=3)
    assert rel_err(exe(x), want) < 1e-4
    # a final partial batch on the same executable
    assert rel_err(exe(x[:3]), want[:3]) < 1e-4


def test_archive_parameters_are_canonical(kdir):
    from graphrt.frontends.keras.io import read_keras_archive

    arch = read_keras_archive(kdir / "seed_cnn_32.keras")
    g = graphrt.load(kdir / "seed_cnn_32.keras")
    np.testing.assert_array_equal(g.params["conv2d_4/kernel"],
                                  arch.weights["conv2d_4"][0].transpose(3, 2, 0, 1))
    np.testing.assert_array_equal(g.params["dense_5/kernel"], arch.weights["dense_5"][0].T)
    np.testing.assert_array_equal(g.params["dense_5/bias"], arch.weights["dense_5"][1])
    assert g.params["dense_5/kernel"].shape == (256, 1600)
    assert g.params["conv2d_4/kernel"].shape == (32, 3, 3, 3)


def test_json_config_with_weights_from_archive(kdir):
    x = np.load(kdir / "seed_cnn_32_input.npy")
    want = np.load(kdir / "seed_cnn_32_output.npy")
    g = load_keras(kdir / "seed_cnn_32.json", weights=kdir / "seed_cnn_32.keras")
    assert rel_err(graphrt.run_reference(g, x), want) < 1e-4


def _conv(cin, cout, k=3):
    return k * k * cin * cout + cout


def _dense(n_in, n_out):
    return n_in * n_out + n_out


@pytest.mark.parametrize("stem, in_shape, n_params", [
    ("seed_ann", (None, 20), _dense(20, 64) + _dense(64, 64) + _dense(64, 10)),
    # 32 -> conv 30 -> conv 28 -> pool 14 -> conv 12 -> conv 10 -> pool 5: 64 * 5 * 5 = 1600
    ("seed_cnn_32", (None, 3, 32, 32), _conv(3, 32) + _conv(32, 32) + _conv(32, 64)
     + _conv(64, 64) + _dense(64 * 5 * 5, 256) + _dense(256, 10)),
    # 100 -> 98 -> 96 -> 48 -> 46 -> 44 -> 22: 64 * 22 * 22 = 30976
    ("seed_cnn_100", (None, 3, 100, 100), _conv(3, 32) + _conv(32, 32) + _conv(32, 64)
     + _conv(64, 64) + _dense(64 * 22 * 22, 256) + _dense(256, 10)),
])
def test_json_configs_load(kdir, stem, in_shape, n_params):
    g = graphrt.load(kdir / f"{stem}.json")
    g.verify()
    assert len(g.inputs) == 1 and g.specs[g.inputs[0]].shape == in_shape
    assert [g.specs[t].shape for t in g.outputs] == [(None, 10)]
    assert g.num_params() == n_params
    assert g.name == stem


def test_json_configs_are_seeded(kdir):
    a = graphrt.load(kdir / "seed_ann.json", seed=3)
    b = load_keras(kdir / "seed_ann.json", seed=3)
    c = load_keras(kdir / "seed_ann.json", seed=4)
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], b.params[name])
    assert not np.array_equal(a.params["dense/kernel"], c.params["dense/kernel"])
    # the config's RandomUniform(-0.05, 0.05) initializer is honoured; biases are Zeros
    assert np.abs(a.params["dense/kernel"]).max() <= 0.05
    assert not a.params["dense/bias"].any()
    x = np.load(kdir / "seed_ann_input.npy")
    y = graphrt.run_reference(a, x)
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)


def test_cnn_100_json_matches_the_example(kdir):
    module, _ = load_example("keras_simple_cnn")
    built = module.build().to_graph(seed=0)
    loaded = graphrt.load(kdir / "seed_cnn_100.json")

    def signature(g):
        return [(n.op, [g.specs[t].shape for t in n.outputs],
                 sorted(g.specs[t].shape for t in n.inputs if t in g.params),
                 dict(n.attrs)) for n in g.nodes]

    assert signature(loaded) == signature(built)
    shapes = [g.specs[t].shape for g in (loaded, built) for t in g.inputs]
    assert shapes == [(None, 3, 100, 100)] * 2
    assert loaded.num_params() == built.num_params()


# ----------------------------------------------------------------------------- Keras semantics

def _image_model(fmt: str, flatten_fmt: str) -> dict:
    cf = fmt == "channels_first"
    shape = [None, 3, 10, 10] if cf else [None, 10, 10, 3]
    return sequential([
        layer("InputLayer", "input_layer", batch_shape=shape, sparse=False, ragged=False,
              optional=False),
        layer("Conv2D", "c1", filters=4, kernel_size=[3, 3], strides=[2, 2], padding="same",
              data_format=fmt, dilation_rate=[1, 1], groups=1, activation="relu", use_bias=True,
              kernel_initializer={"module": "keras.initializers", "class_name": "GlorotUniform",
                                  "config": {"seed": None}, "registered_name": None},
              bias_initializer={"module": "keras.initializers", "class_name": "Zeros",
                                "config": {}, "registered_name": None},
              kernel_regularizer=None, bias_regularizer=None, activity_regularizer=None,
              kernel_constraint=None, bias_constraint=None),
        layer("BatchNormalization", "bn", axis=1 if cf else -1, momentum=0.99, epsilon=0.01,
              center=False, scale=True, synchronized=False, beta_regularizer=None),
        layer("Conv2D", "c2", filters=5, kernel_size=[2, 3], strides=[1, 1], padding="valid",
              data_format=fmt, dilation_rate=[2, 1], groups=1, activation="linear",
              use_bias=False),
        layer("ReLU", "r", max_value=None, negative_slope=0.1, threshold=0.0),
        layer("MaxPooling2D", "mp", pool_size=[2, 2], padding="same", strides=[1, 1],
              data_format=fmt),
        layer("AveragePooling2D", "ap", pool_size=[2, 2], padding="same", strides=[2, 2],
              data_format=fmt),
        layer("Flatten", "fl", data_format=flatten_fmt),
        layer("Dense", "d1", units=6, activation="tanh", use_bias=True,
              quantization_config=None),
        layer("Dropout", "dr", rate=0.5, seed=None, noise_shape=None),
        layer("Dense", "d2", units=3, activation="linear", use_bias=True),
        layer("Softmax", "sm", axis=-1),
    ])


def _image_weights(rng):
    w = random_weights(rng, c1=[(3, 3, 3, 4), (4,)], bn=[(4,), (4,), (4,)],
                       c2=[(2, 3, 4, 5)], d1=[(20, 6), (6,)], d2=[(6, 3), (3,)])
    w["bn"][2] = np.abs(w["bn"][2]) + 0.5  # a variance
    return w


@pytest.mark.parametrize("fmt", ["channels_last", "channels_first"])
@pytest.mark.parametrize("flatten_fmt", ["channels_last", "channels_first"])
def test_image_model_gives_keras_numbers(tmp_path, fmt, flatten_fmt):
    rng = np.random.default_rng(0)
    config = _image_model(fmt, flatten_fmt)
    weights = _image_weights(rng)
    path = write_keras(tmp_path / "m.keras", config, weights)
    g = graphrt.load(path)
    x = rng.standard_normal((5, 3, 10, 10) if fmt == "channels_first" else (5, 10, 10, 3))
    x = x.astype(np.float32)
    want = keras_sequential(config, weights, x)
    assert g.specs[g.inputs[0]].shape == (None,) + x.shape[1:]
    assert rel_err(graphrt.run_reference(g, x), want) < 1e-4
    exe = graphrt.compile(g, device="cpu", batch_size=8, opt_level=3)
    assert rel_err(exe(x), want) < 1e-4
    # the BatchNormalization without beta has a fixed zero beta; moving statistics are frozen
    assert not g.params["bn/beta"].any() and not g.param_info["bn/beta"].trainable
    assert not g.param_info["bn/moving_mean"].trainable
    # the same config through the JSON path, with the weights given as a mapping
    (tmp_path / "m.json").write_text(json.dumps(config, indent=2))
    g2 = load_keras(tmp_path / "m.json", weights=weights)
    assert rel_err(graphrt.run_reference(g2, x), want) < 1e-4
    # ... and as a Keras 3 .weights.h5 file (model.save_weights)
    (tmp_path / "m.weights.h5").write_bytes(h5_bytes(weights))
    g3 = load_keras(tmp_path / "m.json", weights=tmp_path / "m.weights.h5")
    assert rel_err(graphrt.run_reference(g3, x), want) < 1e-4


def test_channels_last_global_pooling_and_keras2_sequential(tmp_path):
    """A Keras 2 style Sequential (no InputLayer, batch_input_shape on the first layer)."""
    rng = np.random.default_rng(1)
    config = {"class_name": "Sequential", "config": {"name": "k2", "layers": [
        {"class_name": "Conv2D", "config": {
            "name": "conv", "batch_input_shape": [None, 6, 7, 2], "filters": 3,
            "kernel_size": [3, 3], "strides": [1, 1], "padding": "same",
            "data_format": "channels_last", "dilation_rate": [1, 1], "activation": "sigmoid",
            "use_bias": True}},
        {"class_name": "BatchNormalization", "config": {
            "name": "bn", "axis": [3], "epsilon": 0.001, "center": True, "scale": False,
            "renorm": False, "renorm_clipping": None, "fused": None,
            "virtual_batch_size": None, "adjustment": None}},
        {"class_name": "GlobalAveragePooling2D", "config": {"name": "gap",
                                                           "data_format": "channels_last"}},
        {"class_name": "Dense", "config": {"name": "out", "units": 4, "activation": "softmax"}},
    ]}}
    weights = random_weights(rng, conv=[(3, 3, 2, 3), (3,)], bn=[(3,), (3,), (3,)],
                             out=[(3, 4), (4,)])
    weights["bn"][2] = np.abs(weights["bn"][2]) + 0.5
    path = tmp_path / "k2.json"
    path.write_text(json.dumps(config))
    g = load_keras(path, weights=weights)
    x = rng.standard_normal((3, 6, 7, 2)).astype(np.float32)
    c = copy.deepcopy(config)
    c["config"]["layers"][1]["config"]["axis"] = 3
    want = keras_sequential(c, weights, x)
    assert g.inputs == ["input_layer"]
    assert rel_err(graphrt.run_reference(g, x), want) < 1e-4


# ----------------------------------------------------------------------------- functional models

def _dense_merge_model() -> dict:
    return functional([
        flayer("InputLayer", "x", [], batch_shape=[None, 6]),
        flayer("Dense", "a", ["x"], units=4, activation="relu"),
        flayer("Dense", "b", ["x"], units=4, activation="linear", use_bias=False),
        flayer("Add", "sum", ["a", "b"]),
        flayer("Subtract", "diff", ["a", "b"]),
        flayer("Average", "avg", ["a", "b", "sum"]),
        flayer("Multiply", "prod", ["diff", "avg"]),
        flayer("Concatenate", "cat", ["sum", "prod", "x"], axis=-1),
        flayer("Dense", "out", ["cat"], units=3, activation="softmax"),
    ], ["x"], ["out"])


def test_functional_merge_model_matches_numpy(tmp_path):
    rng = np.random.default_rng(2)
    weights = random_weights(rng, a=[(6, 4), (4,)], b=[(6, 4)], out=[(14, 3), (3,)])
    path = write_keras(tmp_path / "f.keras", _dense_merge_model(), weights)
    g = graphrt.load(path)
    x = rng.standard_normal((7, 6)).astype(np.float32)
    xd = x.astype(np.float64)
    w = {k: [np.asarray(v, np.float64) for v in vs] for k, vs in weights.items()}
    a = np.maximum(xd @ w["a"][0] + w["a"][1], 0)
    b = xd @ w["b"][0]
    s = a + b
    prod = (a - b) * ((a + b + s) / 3)
    cat = np.concatenate([s, prod, xd], axis=1)
    want = softmax(cat @ w["out"][0] + w["out"][1], -1)
    assert rel_err(graphrt.run_reference(g, x), want) < 1e-4
    exe = graphrt.compile(g, device="cpu", batch_size=7, opt_level=3)
    assert rel_err(exe(x), want) < 1e-4
    assert {n.op for n in g.nodes} >= {"add", "mul", "concat", "dense", "softmax"}


def test_functional_channels_last_concat_axis(tmp_path):
    """Concatenate(axis=-1) of channels_last convs is the channel axis; Flatten keeps NHWC order."""
    rng = np.random.default_rng(3)
    conv = dict(strides=[1, 1], padding="same", data_format="channels_last",
                dilation_rate=[1, 1], groups=1, activation="linear", use_bias=True)
    config = functional([
        flayer("InputLayer", "img", [], batch_shape=[None, 5, 4, 2]),
        flayer("Conv2D", "p", ["img"], filters=3, kernel_size=[3, 3], **conv),
        flayer("Conv2D", "q", ["img"], filters=2, kernel_size=[1, 1], **conv),
        flayer("Concatenate", "cat", ["p", "q"], axis=-1),
        flayer("Flatten", "flat", ["cat"], data_format="channels_last"),
        flayer("Dense", "out", ["flat"], units=3),
    ], ["img"], ["out"])
    weights = random_weights(rng, p=[(3, 3, 2, 3), (3,)], q=[(1, 1, 2, 2), (2,)],
                             out=[(5 * 4 * 5, 3), (3,)])
    g = config_to_graph(config, weights=weights)
    x = rng.standard_normal((2, 5, 4, 2))
    w = {k: [np.asarray(v, np.float64) for v in vs] for k, vs in weights.items()}
    p = conv_nhwc(x, w["p"][0], (1, 1), "same", (1, 1)) + w["p"][1]
    q = conv_nhwc(x, w["q"][0], (1, 1), "same", (1, 1)) + w["q"][1]
    flat = np.concatenate([p, q], axis=-1).reshape(2, -1)
    want = flat @ w["out"][0] + w["out"][1]
    assert rel_err(graphrt.run_reference(g, x.astype(np.float32)), want) < 1e-4


def test_functional_keras2_inbound_nodes_and_two_outputs():
    config = {"class_name": "Functional", "config": {"name": "k2f", "layers": [
        {"class_name": "InputLayer", "name": "in", "inbound_nodes": [],
         "config": {"name": "in", "batch_input_shape": [None, 3]}},
        {"class_name": "Dense", "name": "h", "inbound_nodes": [[["in", 0, 0, {}]]],
         "config": {"name": "h", "units": 2}},
        {"class_name": "Activation", "name": "t", "inbound_nodes": [[["h", 0, 0, {}]]],
         "config": {"name": "t", "activation": "tanh"}},
        {"class_name": "Add", "name": "s", "inbound_nodes": [[["h", 0, 0, {}], ["t", 0, 0, {}]]],
         "config": {"name": "s"}},
    ], "input_layers": [["in", 0, 0]], "output_layers": [["s", 0, 0], ["h", 0, 0]]}}
    k, bias = np.arange(6, dtype=np.float32).reshape(3, 2) / 10, np.array([0.5, -1], np.float32)
    g = config_to_graph(config, weights={"h": [k, bias]})
    x = np.array([[1, 2, 3], [-1, 0, 2]], np.float32)
    out = graphrt.run_reference(g, x)
    h = x @ k + bias
    np.testing.assert_allclose(out["s"], h + np.tanh(h), rtol=1e-6)
    np.testing.assert_allclose(out["h"], h, rtol=1e-6)
    assert g.outputs == ["s", "h"]


def test_functional_layer_order_is_resolved():
    """Layers listed before their inputs still build; a cycle is a GraphError."""
    layers = [flayer("Dense", "d2", ["d1"], units=2), flayer("Dense", "d1", ["x"], units=3),
              flayer("InputLayer", "x", [], batch_shape=[None, 4])]
    g = config_to_graph(functional(layers, ["x"], ["d2"]))
    assert [n.name for n in g.nodes] == ["d1", "d2"]
    cyc = [flayer("InputLayer", "x", [], batch_shape=[None, 4]),
           flayer("Add", "p", ["x", "q"]), flayer("Add", "q", ["p", "x"])]
    with pytest.raises(GraphError, match="cycle"):
        config_to_graph(functional(cyc, ["x"], ["q"]))


# ----------------------------------------------------------------------------- errors

def test_truncated_json_names_line_and_column(kdir, tmp_path):
    text = (kdir / "seed_ann.json").read_text()
    path = tmp_path / "trunc.json"
    path.write_text(text[: len(text) // 2])
    with pytest.raises(ParseError) as info:
        load_keras(path)
    err = info.value
    assert err.file == str(path) and err.line is not None and err.column is not None
    assert f"line {err.line} column {err.column}" in str(err)
    with pytest.raises(ParseError) as info:
        graphrt.load(path, format="keras")
    assert info.value.line == err.line and info.value.column == err.column
    with pytest.raises(ParseError):  # format sniffing fails first, still a ParseError
        graphrt.load(path)


def test_unknown_layer_class(kdir, tmp_path):
    doc = json.loads((kdir / "seed_ann.json").read_text())
    doc["config"]["layers"][4]["class_name"] = "LSTM"
    path = tmp_path / "lstm.json"
    path.write_text(json.dumps(doc, indent=2))
    with pytest.raises(UnsupportedError) as info:
        graphrt.load(path)
    err = info.value
    assert err.node == "dense_1" and err.op == "LSTM" and err.file == str(path)
    assert "LSTM" in str(err) and str(path) in str(err)
    assert err.line is not None and '"dense_1"' in path.read_text().splitlines()[err.line - 1]


def test_missing_config_key_names_the_layer(kdir, tmp_path):
    doc = json.loads((kdir / "seed_cnn_32.json").read_text())
    del doc["config"]["layers"][3]["config"]["filters"]
    path = tmp_path / "nofilters.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ParseError) as info:
        graphrt.load(path)
    assert info.value.node == "conv2d_5" and "filters" in str(info.value)
    # a layer entry without its config
    doc = sequential([layer("InputLayer", "i", batch_shape=[None, 3]),
                      {"class_name": "Dense", "name": "dd"}])
    with pytest.raises(ParseError, match="'dd'.*config"):
        config_to_graph(doc)
    # a functional layer without inbound_nodes
    doc = functional([flayer("InputLayer", "i", [], batch_shape=[None, 3]),
                      layer("Dense", "d", units=2)], ["i"], ["d"])
    with pytest.raises(ParseError, match="inbound_nodes") as info:
        config_to_graph(doc)
    assert info.value.node == "d"


def test_unsupported_options_name_the_layer():
    base = [layer("InputLayer", "i", batch_shape=[None, 4])]
    with pytest.raises(UnsupportedError) as info:
        config_to_graph(sequential(base + [layer("LayerNormalization", "rms", rms_scaling=True)]),
                        file="m.json")
    assert info.value.node == "rms" and info.value.file == "m.json"
    with pytest.raises(UnsupportedError) as info:
        config_to_graph(sequential(base + [layer("Dense", "q", units=2,
                                                 quantization_config={"mode": "int8"})]))
    assert info.value.node == "q" and "quantization_config" in str(info.value)
    with pytest.raises(UnsupportedError, match="activation"):
        config_to_graph(sequential(base + [layer("Activation", "g", activation="mish")]))
    with pytest.raises(ShapeError):
        config_to_graph(sequential([layer("InputLayer", "i", batch_shape=[None, None, 3]),
                                    layer("Dense", "d", units=2)]))


def _rebuild_archive(src: Path, dst: Path, edit) -> Path:
    """Copy a .keras archive, letting ``edit(h5)`` change its weights file."""
    with zipfile.ZipFile(src) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    h5_path = dst.with_suffix(".h5tmp")
    h5_path.write_bytes(members["model.weights.h5"])
    with h5py.File(h5_path, "r+") as h5:
        edit(h5)
    members["model.weights.h5"] = h5_path.read_bytes()
    return write_zip(dst, members)


def test_wrong_weight_shape_in_archive(kdir, tmp_path):
    def edit(h5):
        del h5["layers/dense_1/vars/0"]
        h5["layers/dense_1/vars"].create_dataset("0", data=np.zeros((64, 32), np.float32))

    path = _rebuild_archive(kdir / "seed_ann.keras", tmp_path / "bad.keras", edit)
    with pytest.raises(WeightError) as info:
        graphrt.load(path)
    err = info.value
    assert err.node == "dense_1" and err.file == str(path)
    assert "(64, 32)" in str(err) and "(64, 64)" in str(err) and "kernel" in str(err)


def test_missing_layer_weights_in_archive(kdir, tmp_path):
    path = _rebuild_archive(kdir / "seed_ann.keras", tmp_path / "nodense.keras",
                            lambda h5: h5.__delitem__("layers/dense_2"))
    with pytest.raises(WeightError) as info:
        graphrt.load(path)
    assert info.value.node == "dense_2" and "(64, 10)" in str(info.value)

    def drop_bias(h5):
        del h5["layers/dense/vars/1"]

    path = _rebuild_archive(kdir / "seed_ann.keras", tmp_path / "nobias.keras", drop_bias)
    with pytest.raises(WeightError, match="1 arrays") as info:
        graphrt.load(path)
    assert info.value.node == "dense"


def test_weights_for_a_layer_without_weights(tmp_path):
    config = sequential([layer("InputLayer", "i", batch_shape=[None, 3]),
                         layer("Dense", "d", units=2), layer("Activation", "act",
                                                             activation="relu")])
    weights = {"d": [np.ones((3, 2), np.float32), np.zeros(2, np.float32)],
               "act": [np.ones(2, np.float32)], "some_other_object": [np.ones(1, np.float32)]}
    with pytest.raises(WeightError) as info:
        config_to_graph(config, weights=weights)
    assert info.value.node == "act"
    del weights["act"]  # names that are not layers of the config are ignored
    g = config_to_graph(config, weights=weights)
    np.testing.assert_array_equal(g.params["d/kernel"], np.ones((2, 3)))


@pytest.mark.parametrize("member", ["config.json", "model.weights.h5"])
def test_missing_archive_member(kdir, tmp_path, member):
    with zipfile.ZipFile(kdir / "seed_ann.keras") as zf:
        members = {n: zf.read(n) for n in zf.namelist() if n != member}
    path = write_zip(tmp_path / "partial.keras", members)
    with pytest.raises(ParseError, match=member) as info:
        graphrt.load(path)
    assert info.value.file == str(path)


def test_not_a_model_file(tmp_path):
    path = tmp_path / "junk.keras"
    path.write_bytes(b"not a zip at all")
    with pytest.raises(ParseError):
        load_keras(path)
    h5 = tmp_path / "legacy.h5"
    h5.write_bytes(h5_bytes({}))
    with pytest.raises(UnsupportedError, match="HDF5"):
        graphrt.load(h5)


# ----------------------------------------------------------------------------- issue 15: no silent wrong answer

def test_load_honours_weights_for_a_json_config(kdir, tmp_path):
    """graphrt.load(json, weights=...) uses the given weights (.keras or .weights.h5)."""
    x = np.load(kdir / "seed_cnn_32_input.npy")
    want = np.load(kdir / "seed_cnn_32_output.npy")
    g = graphrt.load(kdir / "seed_cnn_32.json", weights=kdir / "seed_cnn_32.keras")
    assert rel_err(graphrt.run_reference(g, x), want) < 1e-4
    with zipfile.ZipFile(kdir / "seed_cnn_32.keras") as zf:
        (tmp_path / "m.weights.h5").write_bytes(zf.read("model.weights.h5"))
    g = graphrt.load(kdir / "seed_cnn_32.json", weights=tmp_path / "m.weights.h5")
    assert rel_err(graphrt.run_reference(g, x), want) < 1e-4


def test_a_json_config_without_weights_warns_naming_the_file(kdir):
    path = kdir / "seed_cnn_32.json"
    with pytest.warns(graphrt.MissingWeightsWarning, match="seed_cnn_32.json"):
        graphrt.load(path)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error", graphrt.MissingWeightsWarning)
        graphrt.load(path, weights=kdir / "seed_cnn_32.keras")
        graphrt.load(kdir / "seed_cnn_32.keras")


@pytest.mark.parametrize("fmt", ["channels_last", "channels_first"])
def test_4d_outputs_come_back_in_the_models_layout(fmt):
    """A channels_last model returns NHWC outputs, as Keras does (and channels_first NCHW)."""
    rng = np.random.default_rng(4)
    shape = [None, 5, 4, 2] if fmt == "channels_last" else [None, 2, 5, 4]
    conv = dict(strides=[1, 1], padding="same", data_format=fmt, dilation_rate=[1, 1],
                groups=1, activation="linear", use_bias=True)
    config = functional([
        flayer("InputLayer", "img", [], batch_shape=shape),
        flayer("Conv2D", "p", ["img"], filters=3, kernel_size=[3, 3], **conv),
        flayer("GlobalAveragePooling2D", "gap", ["p"], data_format=fmt),
    ], ["img"], ["p", "gap", "img"])
    weights = random_weights(rng, p=[(3, 3, 2, 3), (3,)])
    g = config_to_graph(config, weights=weights)
    x = rng.standard_normal((2, 5, 4, 2))
    p = conv_nhwc(x, np.asarray(weights["p"][0], np.float64), (1, 1), "same", (1, 1)) \
        + weights["p"][1]
    feed = x if fmt == "channels_last" else x.transpose(0, 3, 1, 2)
    out = graphrt.run_reference(g, feed.astype(np.float32))
    got = [out[t] for t in g.outputs]
    if fmt == "channels_first":
        p = p.transpose(0, 3, 1, 2)
    assert got[0].shape == p.shape and rel_err(got[0], p) < 1e-5
    assert rel_err(got[1], p.mean(axis=(1, 2) if fmt == "channels_last" else (2, 3))) < 1e-5
    np.testing.assert_array_equal(got[2], feed.astype(np.float32))
    exe = graphrt.compile(g, device="cpu", batch_size=2, opt_level=3)
    assert rel_err(exe(feed.astype(np.float32))[g.outputs[0]], p) < 1e-5
