"""Training: one SGD step (momentum 0.9) of Keras' MobileNetV2 and ResNet50 at a small input,
loaded from ``.keras`` by graphrt and trained with ``graphrt.Trainer`` in float64, equals the same
step taken by Keras itself (torch backend, ``floatx`` float64, ``train_on_batch``): the loss, every
updated parameter and every moving statistic (relative error < 1e-5), and each parameter's change
(relative error < 1e-5 of the change itself, so the test sees the update, not only the weight).
"""
from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")
if keras.backend.backend() != "torch":  # pragma: no cover
    pytest.skip("built with Keras' torch backend", allow_module_level=True)

import graphrt  # noqa: E402
from graphrt.frontends.npz import graph_from_json, graph_to_json  # noqa: E402
from naive import rel_error  # noqa: E402

A = keras.applications
SOLVER = dict(lr=0.05, momentum=0.9)


@pytest.fixture
def float64_keras(monkeypatch):
    """Keras as a float64 reference. Two things in Keras 3.15 keep float32 precision in a
    float64 model: its type promotion follows JAX without x64 (``result_type('float64',
    'float32')`` is float32, and BatchNormalization computes in ``result_type(inputs, 'float32')``),
    and its torch backend computes a batch's variance as E[x^2] - E[x]^2 ("faster but less
    numerically stable", its comment says). Here promotion keeps float64 and the variance is the
    two-pass E[(x - E[x])^2], as graphrt computes them; the arithmetic is otherwise Keras'."""
    import torch
    from keras.src import backend

    promote = backend.result_type

    def result_type(*dtypes):
        if any(backend.standardize_dtype(d) == "float64" for d in dtypes
               if d is not None and not isinstance(d, (int, float, bool))):
            return "float64"
        return promote(*dtypes)

    def moments(x, axes, keepdims=False, synchronized=False):
        x = backend.convert_to_tensor(x)
        mean = torch.mean(x, dim=axes, keepdim=True)
        variance = torch.mean(torch.square(x - mean), dim=axes, keepdim=True)
        if not keepdims:
            mean, variance = torch.squeeze(mean, axes), torch.squeeze(variance, axes)
        return mean, variance

    monkeypatch.setattr(backend, "result_type", result_type)
    monkeypatch.setattr(backend.nn, "moments", moments)


def _float64(graph):
    for p in graph.params:
        graph.params[p] = graph.params[p].astype(np.float64)
        graph.specs[p] = graphrt.TensorSpec(graph.specs[p].shape, "float64")
    for name in graph.inputs:
        graph.specs[name] = graphrt.TensorSpec(graph.specs[name].shape, "float64")
    return graph_from_json(graph_to_json(graph), graph.params)


def _build(fn, floatx):
    old, policy = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx(floatx)
    keras.config.set_dtype_policy(floatx)  # the layers' compute dtype follows the policy
    try:
        keras.utils.set_random_seed(0)
        return fn(weights=None, input_shape=(32, 32, 3), classes=5)
    finally:
        keras.config.set_floatx(old)
        keras.config.set_dtype_policy(policy)


def _canonical(model, values, path):
    """``values`` (one array per model weight, Keras order and layout) in graphrt's layouts and
    names: saved through ``model`` as .keras and loaded by graphrt (float32 of these values)."""
    old = model.get_weights()
    model.set_weights(values)
    model.save(path)
    model.set_weights(old)
    return graphrt.load(path).params


@pytest.mark.parametrize("name", ["MobileNetV2", "ResNet50"])
def test_one_sgd_step_equals_keras(name, tmp_path, float64_keras, model_results):
    fn = getattr(A, name)
    model32 = _build(fn, "float32")
    rng = np.random.default_rng(0)
    for w in model32.weights:  # random batch-norm statistics too
        if "moving_variance" in w.path:
            w.assign(rng.uniform(0.5, 1.5, tuple(w.shape)).astype(np.float32))
        elif "moving_mean" in w.path:
            w.assign(rng.normal(0, 0.1, tuple(w.shape)).astype(np.float32))
    model32.save(tmp_path / "m.keras")
    before = [np.asarray(v, np.float64) for v in model32.get_weights()]
    x = rng.uniform(-1, 1, (4, 32, 32, 3))
    y = np.array([0, 3, 1, 4])

    # Keras: the same weights in float64, one train_on_batch
    keras.config.set_floatx("float64")
    try:
        model = _build(fn, "float64")
        model.set_weights(before)
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=SOLVER["lr"],
                                                     momentum=SOLVER["momentum"]),
                      loss=keras.losses.SparseCategoricalCrossentropy())
        keras_loss = float(model.train_on_batch(x, y))
        after = [np.asarray(v, np.float64) for v in model.get_weights()]
    finally:
        keras.config.set_floatx("float32")

    # graphrt: the .keras file, in float64, one Trainer step
    g = _float64(graphrt.load(tmp_path / "m.keras"))
    trainer = graphrt.Trainer(g, optimizer=graphrt.optim.SGD(**SOLVER), batch_size=4)
    loss = trainer.step(x, y)
    ours = trainer.parameters()
    assert abs(loss - keras_loss) / abs(keras_loss) < 1e-5, (loss, keras_loss)

    want_after = _canonical(model32, after, tmp_path / "after.keras")
    want_delta = _canonical(model32, [a - b for a, b in zip(after, before)], tmp_path / "d.keras")
    start = _canonical(model32, before, tmp_path / "before.keras")
    checked = 0
    scale = max(np.abs(d).max() for d in want_delta.values())
    for pname, value in want_after.items():
        delta = ours[pname] - start[pname].astype(np.float64)
        if np.abs(want_delta[pname]).max() <= 1e-9 * scale:
            # a zero gradient (a bias or shift that a batch norm right after removes): the
            # change is rounding noise, on both sides
            assert np.abs(delta).max() <= 1e-9 * scale, pname
            continue
        assert rel_error(ours[pname], value)[0] < 1e-5, pname
        assert rel_error(delta, want_delta[pname])[0] < 1e-5, f"{pname} update"
        checked += 1
    assert checked > 100  # kernels, biases, gammas, betas and moving statistics all moved
    worst = max(rel_error(ours[p], v)[0] for p, v in want_after.items()
                if np.abs(want_delta[p]).max() > 1e-9 * scale)
    model_results("Keras 3.15 (.keras)", f"keras.applications.{name} (32x32): one SGD step",
                  max(worst, abs(loss - keras_loss) / abs(keras_loss)), 1e-5,
                  "training, float64, loss and every parameter vs Keras")
