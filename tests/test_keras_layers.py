"""The Keras 3 layers of issue 15, each in a small model built with Keras (torch backend), saved as
``.keras`` and loaded by graphrt: outputs equal Keras' (relative error < 1e-5) at opt levels 0
and 3, in Keras' layout."""
from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")
if keras.backend.backend() != "torch":  # pragma: no cover
    pytest.skip("built with Keras' torch backend", allow_module_level=True)

import graphrt  # noqa: E402
from naive import rel_error  # noqa: E402

L = keras.layers


def check(model, x, tmp_path, tol=1e-5, name="m"):
    """graphrt's outputs of ``model`` saved as .keras, at opt levels 0 and 3, against Keras'."""
    rng = np.random.default_rng(0)
    for w in model.weights:  # away from the identity initial values
        if "count" not in w.path:
            value = rng.uniform(0.5, 1.5, tuple(w.shape)) if "variance" in w.path else \
                rng.normal(0, 0.5, tuple(w.shape))
            w.assign(value.astype(np.float32))
    path = tmp_path / f"{name}.keras"
    model.save(path)
    want = keras.ops.convert_to_numpy(model(x, training=False))
    g = graphrt.load(path)
    for level in (0, 3):
        got = graphrt.compile(g, device="cpu", batch_size=len(x), opt_level=level)(x)
        assert got.shape == want.shape, (got.shape, want.shape)
        err = rel_error(got, want)[0]
        assert err < tol, f"opt_level {level}: relative error {err:.3g}"
    return g


def image(shape=(2, 7, 6, 3), seed=1):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def model_of(*layers, shape=(7, 6, 3)):
    inp = keras.Input(shape)
    y = inp
    for layer in layers:
        y = layer(y)
    return keras.Model(inp, y)


LAYERS = {
    "zero_padding": lambda: [L.ZeroPadding2D(((1, 2), (3, 0)))],
    "cropping": lambda: [L.Cropping2D(((1, 2), (0, 1)))],
    "depthwise": lambda: [L.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=2)],
    "depthwise_dilated": lambda: [L.DepthwiseConv2D(3, dilation_rate=2, activation="relu6")],
    "separable": lambda: [L.SeparableConv2D(5, 3, padding="same", depth_multiplier=2,
                                            activation="swish")],
    "conv_transpose_valid": lambda: [L.Conv2DTranspose(4, 3, strides=2)],
    "conv_transpose_same": lambda: [L.Conv2DTranspose(4, 3, strides=2, padding="same")],
    "conv_transpose_small_kernel": lambda: [L.Conv2DTranspose(2, 2, strides=3)],
    "conv_transpose_output_padding": lambda: [L.Conv2DTranspose(3, 4, strides=2, padding="same",
                                                                output_padding=1)],
    "relu_variants": lambda: [L.ReLU(max_value=6.0), L.ReLU(negative_slope=0.1, max_value=2.0),
                              L.ReLU(threshold=0.5, negative_slope=0.2)],
    "reshape_permute": lambda: [L.Reshape((6, 7, 3)), L.Permute((2, 1, 3)), L.Reshape((-1,))],
    "rescaling": lambda: [L.Rescaling(1 / 127.5, offset=-1), L.Rescaling([0.5, 1.0, 2.0])],
    "normalization": lambda: [L.Normalization(mean=[0.1, 0.2, 0.3], variance=[1.0, 2.0, 0.5])],
    "normalization_weights": lambda: [L.Normalization(axis=-1)],
    "global_max_pooling": lambda: [L.GlobalMaxPooling2D(keepdims=True), L.Flatten()],
    "upsampling": lambda: [L.UpSampling2D(2), L.UpSampling2D((1, 3), interpolation="bilinear")],
    "layer_norm": lambda: [L.LayerNormalization(epsilon=1e-3)],
    "dropouts": lambda: [L.Dropout(0.3), L.SpatialDropout2D(0.2), L.GaussianDropout(0.1),
                         L.GaussianNoise(0.1), L.AlphaDropout(0.1)],
    "dense_on_images": lambda: [L.Dense(4, activation="gelu")],
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_matches_keras(name, tmp_path):
    model = model_of(*LAYERS[name]())
    if name == "normalization_weights":
        model.layers[1].adapt(image((16, 7, 6, 3), 3))
    check(model, image(), tmp_path, name=name)


ACTIVATIONS = ["relu", "relu6", "swish", "silu", "hard_silu", "hard_swish", "hard_sigmoid",
               "gelu", "elu", "selu", "softplus", "softsign", "exponential", "leaky_relu", "linear",
               "tanh", "sigmoid", "softmax"]


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_every_built_in_activation(act, tmp_path):
    model = model_of(L.Conv2D(4, 3, activation=act), L.Activation(act))
    check(model, image() * 0.5, tmp_path, name=act)


def test_merge_layers_broadcast_like_keras(tmp_path):
    inp = keras.Input((5, 4, 3))
    a = L.Conv2D(3, 1)(inp)
    gate = L.Reshape((1, 1, 3))(L.GlobalAveragePooling2D()(a))  # the SE block's shape
    outs = [L.Multiply()([a, gate]), L.Add()([a, gate]), L.Subtract()([a, gate]),
            L.Average()([a, inp]), L.Maximum()([a, inp, gate]), L.Minimum()([a, gate])]
    y = L.Concatenate()(outs)
    check(keras.Model(inp, y), image((2, 5, 4, 3)), tmp_path)


def test_nested_sequential_and_functional_models(tmp_path):
    inner = keras.Sequential([L.Conv2D(4, 3, padding="same"), L.LayerNormalization()],
                             name="inner_seq")
    sub_in = keras.Input((7, 6, 4))
    sub = keras.Model(sub_in, L.Add()([sub_in, L.Conv2D(4, 1)(sub_in)]), name="inner_fn")
    inp = keras.Input((7, 6, 3))
    y = sub(inner(inp))
    g = check(keras.Model(inp, L.GlobalAveragePooling2D()(y)), image(), tmp_path)
    assert any(n.op == "layer_norm" for n in g.nodes)


def test_four_d_outputs_are_nhwc_like_keras(tmp_path):
    """VGG16(include_top=False) returns (N, 1, 1, 512) in Keras: so does graphrt."""
    keras.utils.set_random_seed(0)
    model = keras.applications.VGG16(weights=None, include_top=False, input_shape=(32, 32, 3))
    g = check(model, image((2, 32, 32, 3)), tmp_path, tol=1e-4)
    assert g.specs[g.outputs[0]].shape == (None, 1, 1, 512)


def test_json_with_weights_file_matches(tmp_path):
    model = model_of(L.DepthwiseConv2D(3), L.LayerNormalization(), L.Dense(2))
    x = image()
    check(model, x, tmp_path)
    (tmp_path / "m.json").write_text(model.to_json())
    model.save_weights(tmp_path / "m.weights.h5")
    g = graphrt.load(tmp_path / "m.json", weights=tmp_path / "m.weights.h5")
    want = keras.ops.convert_to_numpy(model(x))
    assert rel_error(graphrt.run_reference(g, x), want)[0] < 1e-5
