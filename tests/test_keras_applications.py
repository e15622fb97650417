"""Every ``keras.applications`` architecture Keras 3.15 builds on its torch backend, built here with
``weights=None`` at the smallest input Keras allows, random weights and randomized batch-norm (and
normalization / layer-scale) statistics, saved as ``.keras`` and loaded by graphrt: the outputs
match Keras' (relative error < 1e-4) at opt levels 0 and 3, batch 2.

NASNetMobile is not built: Keras 3.15 refuses it on the torch backend ("not available with the
torch backend at this time due to an outstanding bug").
"""
from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is imported (here or by a plugin)
keras = pytest.importorskip("keras")
if keras.backend.backend() != "torch":  # pragma: no cover - another backend was chosen first
    pytest.skip("these tests build the models with Keras' torch backend", allow_module_level=True)

import graphrt  # noqa: E402
from naive import rel_error  # noqa: E402

A = keras.applications
# architecture -> (constructor, smallest input side Keras allows)
APPS = {
    "ResNet50": (A.ResNet50, 32), "ResNet50V2": (A.ResNet50V2, 32),
    "ResNet101": (A.ResNet101, 32), "DenseNet121": (A.DenseNet121, 32),
    "MobileNet": (A.MobileNet, 32), "MobileNetV2": (A.MobileNetV2, 32),
    "MobileNetV3Small": (A.MobileNetV3Small, 32), "MobileNetV3Large": (A.MobileNetV3Large, 32),
    "EfficientNetB0": (A.EfficientNetB0, 32), "EfficientNetV2B0": (A.EfficientNetV2B0, 32),
    "Xception": (A.Xception, 71), "InceptionV3": (A.InceptionV3, 75),
    "InceptionResNetV2": (A.InceptionResNetV2, 75), "VGG16": (A.VGG16, 32),
    "ConvNeXtTiny": (A.ConvNeXtTiny, 32),
}


def randomize_statistics(model, rng) -> None:
    """Batch-norm moving statistics, scales and shifts, Normalization's mean and variance and
    ConvNeXt's layer scales drawn at random (Keras' initial ones are the identity)."""
    for layer in _all_layers(model):
        cls = type(layer).__name__
        for w in layer.weights:
            name, shape = w.path.rsplit("/", 1)[-1], tuple(w.shape)
            if cls == "BatchNormalization" or (cls == "Normalization" and name != "count"):
                if name in ("moving_variance", "variance"):
                    value = rng.uniform(0.5, 1.5, shape)
                elif name == "gamma":
                    value = rng.uniform(0.5, 1.5, shape)
                else:
                    value = rng.normal(0, 0.1, shape)
            elif cls == "LayerScale":
                value = rng.uniform(0.2, 1.0, shape)
            else:
                continue
            w.assign(value.astype(np.float32))


def _all_layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)
        yield layer


def build(name: str, tmp_path):
    fn, side = APPS[name]
    keras.utils.set_random_seed(0)
    model = fn(weights=None, input_shape=(side, side, 3), classes=10)
    randomize_statistics(model, np.random.default_rng(1))
    path = tmp_path / f"{name}.keras"
    model.save(path)
    x = np.random.default_rng(2).uniform(0, 255, (2, side, side, 3)).astype(np.float32)
    if name.startswith(("ResNet", "VGG", "Xception", "Inception", "MobileNet", "DenseNet")) \
            and not name.startswith("MobileNetV3"):
        x = x / 127.5 - 1.0  # these take preprocessed input; the others include preprocessing
    want = keras.ops.convert_to_numpy(model(x, training=False))
    return path, x, want


@pytest.mark.parametrize("name", sorted(APPS))
def test_keras_application_matches_keras(name, tmp_path, model_results):

    path, x, want = build(name, tmp_path)
    g = graphrt.load(path)
    assert g.specs[g.inputs[0]].shape == (None,) + x.shape[1:]
    errors = [rel_error(graphrt.compile(g, device="cpu", batch_size=2, opt_level=level)(x),
                        want)[0] for level in (0, 3)]
    side = x.shape[1]
    model_results("Keras 3.15 (.keras)", f"keras.applications.{name} ({side}x{side})",
                  max(errors), 1e-4, "vs Keras, opt levels 0 and 3")
    for level, err in zip((0, 3), errors):
        assert err < 1e-4, f"{name} at opt_level {level}: relative error {err:.3g}"


def test_nasnet_is_refused_by_keras_on_torch(model_results):
    """The one architecture of the list Keras 3.15 does not build on its torch backend."""
    with pytest.raises(ValueError, match="torch backend"):
        A.NASNetMobile(weights=None, input_shape=(32, 32, 3), classes=10)
    model_results("Keras 3.15 (.keras)", "keras.applications.NASNetMobile", None, None,
                  "not built: Keras 3.15 refuses it on the torch backend")
