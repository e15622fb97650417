"""The Keras 3 layers of ``keras.applications`` that scale or normalize features: ``Rescaling``,
``Normalization``, ``LayerNormalization``, ConvNeXt's ``LayerScale``, and the layers that are the
identity at inference (dropout variants, noise, ``StochasticDepth``).

Per-feature values act on the last Keras axis: the channels of a channels_last image (graph axis
1, a ``channel_affine``) or the last axis of any other tensor.
"""
from __future__ import annotations

import numpy as np

from ...ir.errors import ShapeError, UnsupportedError
from ..initializers import shape_str
from .layer import Layer


def _per_channel(b, layer, values, what) -> np.ndarray:
    """Keras per-feature values along the last (Keras) axis as a (C,) vector of the graph's
    channel (4-D channels_last: axis 1) or last axis."""
    v = np.asarray(values, np.float64).reshape(-1)
    c = b.keras_shape()[-1]
    if v.size == 1:
        return np.full(c, v[0])
    if v.size != c:
        raise layer.error(ShapeError, f"{what} has {v.size} values for {c} features")
    return v


def _affine(b, layer, gain, shift):
    """x * gain + shift along the Keras last axis (gain, shift: (C,) float arrays)."""
    if b.graph_axis(-1, layer) == 1 and len(b.shape) >= 2:
        g = b.param(layer, "gain", gain.astype(np.float32), trainable=False)
        s = b.param(layer, "shift", shift.astype(np.float32), trainable=False)
        b.node(layer, "channel_affine", [g, s])
        return
    g = b.param(layer, "gain", gain.astype(np.float32), trainable=False)
    b.node(layer, "mul", [g], suffix="scale")
    b.node(layer, "add", [b.param(layer, "shift", shift.astype(np.float32), trainable=False)])


class Rescaling(Layer):
    """``Rescaling(scale, offset=0.0)``: x * scale + offset (a scalar ``scale``, or one value per
    feature on the last Keras axis)."""

    prefix = "rescaling"

    def __init__(self, scale=1.0, offset=0.0, **kwargs):
        self.scale, self.offset = scale, offset
        super().__init__(**kwargs)

    def add_nodes(self, b):
        if np.size(self.scale) == 1 and np.size(self.offset) == 1:
            b.node(self, "scale", attrs={"scale": float(np.reshape(self.scale, -1)[0]),
                                         "shift": float(np.reshape(self.offset, -1)[0])})
            return
        _affine(b, self, _per_channel(b, self, self.scale, "scale"),
                _per_channel(b, self, self.offset, "offset"))


class Normalization(Layer):
    """``Normalization(axis=-1, mean=None, variance=None, invert=False)``: (x - mean) /
    max(sqrt(variance), 1e-7) per feature of the last axis (the mean and variance from the config,
    or the layer's ``mean``/``variance``/``count`` weights)."""

    prefix = "normalization"

    def __init__(self, axis=-1, mean=None, variance=None, invert=False, **kwargs):
        self.axis, self.mean, self.variance, self.invert = axis, mean, variance, bool(invert)
        super().__init__(**kwargs)

    def add_nodes(self, b):
        axis = self.axis if not isinstance(self.axis, (list, tuple)) else (
            self.axis[0] if len(self.axis) == 1 else None)
        if axis is None or int(axis) % len(b.shape) != len(b.shape) - 1:
            raise self.error(UnsupportedError, f"Normalization over axis {self.axis} (graphrt "
                                               "normalizes the last Keras axis)")
        c = b.keras_shape()[-1]
        if self.mean is None:
            mean, var, _ = b.weights(self, [("mean", (c,), "zeros"), ("variance", (c,), "ones"),
                                            ("count", (), "zeros")])
        else:
            mean, var = self.mean, self.variance
        mean, std = _per_channel(b, self, mean, "mean"), np.sqrt(_per_channel(b, self, var,
                                                                              "variance"))
        std = np.maximum(std, 1e-7)
        if self.invert:
            _affine(b, self, std, mean)
        else:
            _affine(b, self, 1 / std, -mean / std)


class LayerNormalization(Layer):
    """``LayerNormalization(axis=-1, epsilon=1e-3, center=True, scale=True)``: ``layer_norm``
    over the Keras axes (mapped into the graph)."""

    prefix = "layer_normalization"

    def __init__(self, axis=-1, epsilon=1e-3, center=True, scale=True, rms_scaling=False,
                 beta_initializer="zeros", gamma_initializer="ones", **kwargs):
        self.axis = list(axis) if isinstance(axis, (list, tuple)) else [axis]
        self.epsilon, self.center, self.scale = float(epsilon), bool(center), bool(scale)
        self.rms_scaling = rms_scaling
        self.beta_initializer, self.gamma_initializer = beta_initializer, gamma_initializer
        for key in ("beta_regularizer", "gamma_regularizer", "beta_constraint",
                    "gamma_constraint"):
            kwargs.pop(key, None)
        super().__init__(**kwargs)

    def add_nodes(self, b):
        if self.rms_scaling:
            raise self.error(UnsupportedError, "LayerNormalization with rms_scaling")
        rank = len(b.shape)
        keras_axes = sorted(int(a) % rank for a in self.axis)
        axes = [b.graph_axis(a, self) for a in keras_axes]
        if axes != sorted(axes) or 0 in axes:
            raise self.error(UnsupportedError, f"LayerNormalization over axes {self.axis} of "
                                               f"{shape_str(b.keras_shape())}")
        shape = tuple(b.keras_shape()[a] for a in keras_axes)
        specs = ([("gamma", shape, self.gamma_initializer)] if self.scale else []) + (
            [("beta", shape, self.beta_initializer)] if self.center else [])
        values = dict(zip([s[0] for s in specs], b.weights(self, specs)))
        params = []
        if self.scale or self.center:
            params.append(b.param(self, "gamma", values.get("gamma", np.ones(shape, np.float32)),
                                  trainable=self.scale))
        if self.center:
            params.append(b.param(self, "beta", values["beta"]))
        b.node(self, "layer_norm", params, attrs={"axes": tuple(axes), "eps": self.epsilon})


class Identity(Layer):
    """The layers that are the identity at inference: ``SpatialDropout1D/2D/3D``,
    ``GaussianDropout``, ``GaussianNoise``, ``AlphaDropout``, ``ActivityRegularization``,
    ``StochasticDepth`` (ConvNeXt's drop path)."""

    prefix = "identity"

    def __init__(self, rate=None, stddev=None, drop_path_rate=None, l1=None, l2=None,
                 data_format=None, **kwargs):
        super().__init__(**kwargs)

    def add_nodes(self, b):
        b.node(self, "identity")


class LayerScale(Layer):
    """ConvNeXt's ``LayerScale(init_values, projection_dim)``: x times a learned (C,) vector on the
    last Keras axis."""

    prefix = "layer_scale"

    def __init__(self, init_values=1e-6, projection_dim=None, **kwargs):
        self.init_values, self.projection_dim = float(init_values), projection_dim
        super().__init__(**kwargs)

    def add_nodes(self, b):
        c = b.keras_shape()[-1]
        init = {"class_name": "Constant", "config": {"value": self.init_values}}
        (gamma,) = b.weights(self, [("variable", (c,), init)])
        if b.graph_axis(-1, self) == 1 and len(b.shape) >= 2:
            b.node(self, "channel_affine", [b.param(self, "gamma", gamma)])
        else:
            b.node(self, "mul", [b.param(self, "gamma", gamma)])


__all__ = ["Rescaling", "Normalization", "LayerNormalization", "Identity", "LayerScale"]
