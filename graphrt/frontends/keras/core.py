"""The Keras-like core layers: input, dense, normalization, activations, dropout, flatten.

Axis arguments (``Softmax(axis)``, ``BatchNormalization(axis)``) are Keras axes, mapped into the
NCHW graph by the builder; ``Flatten`` flattens in the order Keras stores the tensor.
"""
from __future__ import annotations

import numpy as np

from ...ir.errors import AttrError, ShapeError, UnsupportedError
from ..initializers import shape_str
from .builder import CHANNELS_FIRST, CHANNELS_LAST, dim_ordering
from .layer import KernelLayer, Layer, keras1_keywords


class InputLayer(Layer):
    """The model's input; ``Input(shape=...)`` makes one. ``shape`` excludes the batch."""

    prefix = "input"

    def __init__(self, input_shape=None, batch_size=None, dtype=None, name=None, *, shape=None,
                 batch_shape=None, **kwargs):
        super().__init__(name=name, input_shape=shape if shape is not None else input_shape,
                         batch_shape=batch_shape, **kwargs)

    def get_config(self):
        return {"name": self.name, "batch_shape": (None,) + tuple(self.input_shape or ())}

    def add_nodes(self, b):  # the model declares the input
        pass


def Input(shape=None, batch_size=None, name=None, dtype=None, batch_shape=None, **kwargs) -> InputLayer:
    """Keras' ``Input``: use as the first element of a Sequential."""
    return InputLayer(shape=shape, batch_shape=batch_shape, name=name, **kwargs)


class Dense(KernelLayer):
    """``Dense(units, activation=None, use_bias=True, kernel_initializer='glorot_uniform', ...)``;
    Keras 1: ``Dense(output_dim, init='glorot_uniform', activation=None, bias=True, input_dim=)``."""

    prefix = "dense"

    def __init__(self, units=None, activation=None, use_bias=True, kernel_initializer=None,
                 bias_initializer="zeros", **kwargs):
        given = {"units": units, "kernel_initializer": kernel_initializer}
        self.keras1 = keras1_keywords("Dense", kwargs, {
            "output_dim": "units", "init": "kernel_initializer"}, given)
        if "bias" in kwargs:
            use_bias, self.keras1 = bool(kwargs.pop("bias")), True
        if given["units"] is None:
            raise TypeError("Dense() missing required argument 'units'")
        self.units = int(given["units"])
        super().__init__(activation=activation, use_bias=use_bias,
                         kernel_initializer=given["kernel_initializer"],
                         bias_initializer=bias_initializer, **kwargs)

    def get_config(self):
        return {"name": self.name, "units": self.units, "activation": self.activation or "linear",
                "use_bias": self.use_bias}

    def add_nodes(self, b):
        shape = b.shape
        if len(shape) < 2:
            raise self.error(ShapeError, f"Dense expects a (batch, ..., features) input, got shape "
                                         f"{shape_str(b.keras_shape())}")
        features = b.keras_shape()[-1]
        if len(shape) == 2:  # Keras' kernel layout (in, out) -> graphrt's dense (out, in)
            b.node(self, "dense", self.kernel_and_bias(b, (features, self.units), (1, 0)))
        elif b.graph_axis(-1, self) == 1:  # the channels of a channels_last image: a 1x1 conv
            b.node(self, "conv2d", self.kernel_and_bias(b, (features, self.units), (1, 0), 2))
        else:  # the last axis of any other tensor: x @ kernel (+ bias)
            params = self.kernel_and_bias(b, (features, self.units), (1, 0))
            w = b.g.add_node("transpose", [params[0]], name=f"{self.name}/kernel_t",
                             attrs={"perm": (1, 0)}, source=self.source)
            b.node(self, "matmul", [w], suffix="matmul" if len(params) > 1 else None)
            if len(params) > 1:
                b.node(self, "add", [params[1]])
        b.activation(self, self.activation, fused=True)


class BatchNormalization(Layer):
    """``BatchNormalization(axis=-1, momentum=0.99, epsilon=1e-3, center=True, scale=True, ...)``
    in inference form: ``batch_norm(x, moving_mean, moving_variance, gamma, beta; eps)``."""

    prefix = "batch_normalization"

    def __init__(self, axis=-1, momentum=0.99, epsilon=1e-3, center=True, scale=True,
                 beta_initializer="zeros", gamma_initializer="ones",
                 moving_mean_initializer="zeros", moving_variance_initializer="ones", **kwargs):
        given = {"beta_initializer": None, "gamma_initializer": None}
        self.keras1 = keras1_keywords("BatchNormalization", kwargs, {
            "beta_init": "beta_initializer", "gamma_init": "gamma_initializer"}, given)
        self.mode = kwargs.pop("mode", 0)
        self.axis = axis
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.center, self.scale = bool(center), bool(scale)
        self.beta_initializer = given["beta_initializer"] or beta_initializer
        self.gamma_initializer = given["gamma_initializer"] or gamma_initializer
        self.moving_mean_initializer = moving_mean_initializer
        self.moving_variance_initializer = moving_variance_initializer
        super().__init__(**kwargs)

    def get_config(self):
        return {"name": self.name, "axis": self.axis, "momentum": self.momentum,
                "epsilon": self.epsilon, "center": self.center, "scale": self.scale}

    def add_nodes(self, b):
        self._check_axis(b)
        c = b.shape[1]
        specs = []
        if self.scale:
            specs.append(("gamma", (c,), self.gamma_initializer))
        if self.center:
            specs.append(("beta", (c,), self.beta_initializer))
        specs += [("moving_mean", (c,), self.moving_mean_initializer),
                  ("moving_variance", (c,), self.moving_variance_initializer)]
        values = dict(zip([s[0] for s in specs], b.weights(self, specs)))
        inputs = [b.param(self, "moving_mean", values["moving_mean"], trainable=False),
                  b.param(self, "moving_variance", values["moving_variance"], trainable=False)]
        if self.scale or self.center:
            # batch_norm takes gamma and beta together: a disabled one is a fixed constant
            gamma = values.get("gamma", np.ones(c, np.float32))
            beta = values.get("beta", np.zeros(c, np.float32))
            inputs.append(b.param(self, "gamma", gamma, trainable=self.scale))
            inputs.append(b.param(self, "beta", beta, trainable=self.center))
        # Keras keeps `momentum` of the old average and uses the biased batch variance
        b.node(self, "batch_norm", inputs, attrs={"eps": self.epsilon, "momentum": 1 - self.momentum,
                                                  "unbiased": False})

    def _check_axis(self, b) -> None:
        """graphrt's batch_norm normalizes graph axis 1: the layer's axis must map there."""
        if self.mode != 0:
            raise self.error(UnsupportedError, f"BatchNormalization mode={self.mode} (Keras 1) is not "
                                               "supported; only mode=0 (feature-wise)")
        axis = self.axis
        if isinstance(axis, (list, tuple)):
            if len(axis) != 1:
                raise self.error(UnsupportedError, f"BatchNormalization over several axes {axis} is "
                                                   "not supported")
            axis = axis[0]
        if len(b.shape) < 2:
            raise self.error(ShapeError, f"BatchNormalization expects (batch, ...) input with a "
                                         f"feature axis, got {shape_str(b.keras_shape())}")
        if b.graph_axis(int(axis), self) != 1:
            raise self.error(UnsupportedError, f"BatchNormalization(axis={self.axis}) normalizes axis "
                                               f"{int(axis) % len(b.shape)} of the "
                                               f"{b.layout if len(b.shape) == 4 else ''} input "
                                               f"{shape_str(b.keras_shape())}, which is not its "
                                               "channel/feature axis; graphrt only normalizes "
                                               "channels (use axis=1 for channels_first)")


class Activation(Layer):
    """``Activation(name)``: relu, tanh, sigmoid, softmax, log_softmax, leaky_relu, or linear
    (which adds no node). The node has the layer's name."""

    prefix = "activation"

    def __init__(self, activation, **kwargs):
        self.activation = activation
        super().__init__(**kwargs)

    def get_config(self):
        return {"name": self.name, "activation": self.activation}

    def add_nodes(self, b):
        b.activation(self, self.activation, fused=False)


class ReLU(Layer):
    """``ReLU(max_value=None, negative_slope=0.0, threshold=0.0)``: x for threshold <= x <
    max_value, max_value above, negative_slope * (x - threshold) below (Keras' definition)."""

    prefix = "re_lu"

    def __init__(self, max_value=None, negative_slope=0.0, threshold=0.0, **kwargs):
        self.max_value, self.negative_slope, self.threshold = max_value, negative_slope, threshold
        super().__init__(**kwargs)

    def add_nodes(self, b):
        slope, t = float(self.negative_slope), float(self.threshold)
        top = None if self.max_value is None else float(self.max_value)
        if t == 0.0 and slope == 0.0 and top is not None:
            b.node(self, "clip", attrs={"min": 0.0, "max": top})  # ReLU6 and friends
            return
        if t == 0.0:
            b.node(self, "relu", attrs={"negative_slope": slope},
                   suffix=None if top is None else "relu")
        else:  # where(x >= t, x, slope * (x - t))
            x = b.tensor
            dtype = b.g.specs[x].dtype
            keep = b.node(self, "greater_equal", [b.param(self, "threshold", np.array(
                t, dtype), trainable=False)], suffix="keep")
            b.tensor = x
            below = b.node(self, "scale", attrs={"scale": slope, "shift": -slope * t},
                           suffix="below")
            b.tensor = b.g.add_node("where", [keep, x, below], name=self.name if top is None
                                    else f"{self.name}/relu", source=self.source)
        if top is not None:
            b.node(self, "clip", attrs={"max": top})


class LeakyReLU(Layer):
    """``LeakyReLU(negative_slope=0.3)`` (Keras 2: ``alpha``)."""

    prefix = "leaky_re_lu"

    def __init__(self, negative_slope=0.3, **kwargs):
        if "alpha" in kwargs:
            negative_slope = kwargs.pop("alpha")
        self.negative_slope = float(negative_slope)
        super().__init__(**kwargs)

    def add_nodes(self, b):
        b.node(self, "relu", attrs={"negative_slope": self.negative_slope})


class Softmax(Layer):
    """``Softmax(axis=-1)`` (a Keras axis, mapped into the NCHW graph)."""

    prefix = "softmax"

    def __init__(self, axis=-1, **kwargs):
        self.axis = axis
        super().__init__(**kwargs)

    def add_nodes(self, b):
        b.node(self, "softmax", attrs={"axis": b.graph_axis(int(self.axis), self)})


class Dropout(Layer):
    """``Dropout(rate)`` (Keras 1: ``Dropout(p)``): the identity at inference, ``rate`` kept."""

    prefix = "dropout"

    def __init__(self, rate=None, **kwargs):
        if "p" in kwargs:
            rate = kwargs.pop("p")
            self.keras1 = True
        if rate is None:
            raise TypeError("Dropout() missing required argument 'rate'")
        self.rate = rate
        super().__init__(**kwargs)

    def get_config(self):
        return {"name": self.name, "rate": self.rate}

    def add_nodes(self, b):
        try:
            rate = float(self.rate)
        except (TypeError, ValueError):
            rate = -1.0
        if not 0.0 <= rate < 1.0:
            raise self.error(AttrError, f"Dropout rate must be in [0, 1), got {self.rate!r}")
        b.node(self, "dropout", attrs={"rate": rate})


class Flatten(Layer):
    """``Flatten(data_format=None)``: flattens in the order Keras stores the tensor (see
    :mod:`graphrt.frontends.keras`); a channels_last model gets a transpose to NHWC first."""

    prefix = "flatten"

    def __init__(self, data_format=None, **kwargs):
        self.data_format_flatten = dim_ordering(data_format)
        super().__init__(**kwargs)

    def get_config(self):
        return {"name": self.name, "data_format": self.data_format_flatten or CHANNELS_LAST}

    def add_nodes(self, b):
        rank = len(b.shape)
        if rank > 2:
            fmt = self.data_format_flatten or CHANNELS_LAST
            # graph axis order of the tensor Keras flattens
            if rank == 4 and b.layout == CHANNELS_LAST:
                stored = (0, 2, 3, 1)
            else:
                stored = tuple(range(rank))
            if fmt == CHANNELS_FIRST:  # Keras 3 moves axis 1 of the stored tensor last first
                stored = (stored[0],) + stored[2:] + (stored[1],)
            if stored != tuple(range(rank)):
                b.node(self, "transpose", attrs={"perm": stored},
                       suffix="to_nhwc" if stored == (0, 2, 3, 1) else "to_keras_order")
        b.node(self, "flatten", attrs={"axis": 1})


__all__ = ["InputLayer", "Input", "Dense", "BatchNormalization", "Activation", "ReLU", "LeakyReLU",
           "Softmax", "Dropout", "Flatten"]
