"""A Keras-like model builder that produces a graphrt :class:`~graphrt.graph.Graph`.

Write the model the way Keras users do — Keras 1 or Keras 2/3 spellings — and call ``to_graph``::

    from graphrt.frontends.keras import Sequential, Dense, Activation, Dropout
    model = Sequential()
    model.add(Dense(64, input_dim=20, init='uniform'))        # Keras 1
    model.add(Activation('tanh'))
    model.add(Dense(10, activation='softmax'))                # Keras 2/3
    g = model.to_graph(seed=0)

Layers
------
``Input(shape=...)`` / ``InputLayer`` (first element of a Sequential), ``Dense``, ``Conv2D``
(Keras 1: ``Convolution2D(nb_filter, nb_row, nb_col, border_mode=, subsample=, dim_ordering=)``),
``MaxPooling2D``, ``AveragePooling2D``, ``GlobalAveragePooling2D``, ``GlobalMaxPooling2D``,
``BatchNormalization``, ``Activation``, ``ReLU``, ``LeakyReLU``, ``Softmax``, ``Dropout``,
``Flatten``. Keras 1 keyword spellings (``init``, ``bias``, ``output_dim``, ``border_mode``,
``subsample``, ``dim_ordering``, ``p``) are accepted by the Keras 2 classes too. Regularizers and
constraints are accepted and ignored (they do not change the forward graph).

Data formats
------------
Inside the graph every image tensor is NCHW. A layer's ``data_format`` (or Keras 1
``dim_ordering``: ``'th'`` = channels_first, ``'tf'`` = channels_last) wins when given; otherwise
the model default applies: ``Sequential(data_format=...)`` if given, else ``channels_first`` when the
model uses a Keras 1 spelling (``Convolution2D``, ``border_mode``, ``subsample``, ``dim_ordering``,
``init``...) — the seed's ``Convolution2D(32, 3, 3, input_shape=(3, 100, 100))`` style — and
``channels_last`` (Keras 2/3's default) otherwise. All spatial layers of one model must agree.

For a channels_last model the graph input is declared as Keras sees it, ``(None, H, W, C)``, and a
``transpose`` (0, 3, 1, 2) named ``<input>/to_nchw`` follows it. ``Flatten`` flattens the tensor in
the order Keras stores it: in a channels_last model a ``transpose`` (0, 2, 3, 1) named
``<flatten>/to_nhwc`` comes first, so the following Dense sees Keras' exact feature order (Keras 3's
``Flatten(data_format='channels_first')`` is honoured too). Axis arguments (``Softmax(axis)``,
``BatchNormalization(axis)``) are Keras axes and are mapped into the NCHW graph;
``BatchNormalization`` must normalize the channel axis (Keras' default ``axis=-1`` is the channels
only for channels_last; a channels_first model passes ``axis=1``, as in Keras).

Padding ``'same'`` follows TensorFlow: total pad ``max((ceil(H/s) - 1)*s + (k-1)*d + 1 - H, 0)``,
``top = total // 2``, the rest at the bottom (likewise left/right); padded positions do not count in
average pooling (``count_include_pad=False``), and max pooling pads with -inf.

Names, parameters, sources
--------------------------
Layers without ``name=`` are named per model, Keras 1 style: ``dense_1``, ``dense_2``,
``conv2d_1``, ``activation_1``, ``max_pooling2d_1``, ``batch_normalization_1``, ``dropout_1``,
``flatten_1``, the input ``input_1`` (``Convolution2D`` counts as ``conv2d``). The layer's main node
has the layer's name; helper nodes are ``<layer>/<what>`` (a fused ``activation=`` becomes
``dense_1/relu``; GlobalAveragePooling2D's flatten is ``<layer>/flatten``). Parameters are named
like Keras 3 variables: ``<layer>/kernel``, ``<layer>/bias``, ``<layer>/gamma``, ``<layer>/beta``,
``<layer>/moving_mean``, ``<layer>/moving_variance`` (the moving statistics are not trainable), in
graphrt's layouts: dense (out, in), conv OIHW.

Every node's :class:`~graphrt.graph.Source` is ``(layer name, layer class as written, file, line)``
where file/line is where the user constructed the layer object, so errors point at that line.

Initialization draws from ``np.random.default_rng(seed)`` in layer order (kernel, then bias, in
Keras' kernel layout — (in, out) or (kh, kw, in, out) — then converted), so a Keras 1 and a Keras 2
spelling of one model give the same parameters for the same seed. Pass ``weights=[...]`` (Keras
order and layout, as ``layer.get_weights()`` returns them) to use given values instead.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from ..errors import AttrError, GraphError, GraphrtError, ShapeError, UnsupportedError, WeightError
from ..graph import Graph, Source
from ._init import caller_location, fans, get_initializer

CHANNELS_FIRST = "channels_first"
CHANNELS_LAST = "channels_last"

_IGNORED = frozenset({
    "trainable", "dtype", "kernel_regularizer", "bias_regularizer", "activity_regularizer",
    "kernel_constraint", "bias_constraint", "W_regularizer", "b_regularizer", "W_constraint",
    "b_constraint", "beta_regularizer", "gamma_regularizer", "beta_constraint", "gamma_constraint",
    "seed", "noise_shape", "autocast", "lora_rank", "lora_alpha", "synchronized", "sparse", "ragged",
    "optional", "input_length", "batch_size",
})

_ACTIVATIONS = ("linear", "relu", "tanh", "sigmoid", "softmax", "log_softmax", "leaky_relu")


def _legacy(cls_name: str, kwargs: dict, mapping: dict[str, str], given: dict[str, Any]) -> bool:
    """Move Keras 1 keyword spellings onto their Keras 2 names; True if any was used."""
    used = False
    for old, new in mapping.items():
        if old in kwargs:
            if given.get(new) is not None:
                raise TypeError(f"{cls_name}() got both {old!r} (Keras 1) and {new!r} (Keras 2)")
            given[new] = kwargs.pop(old)
            used = True
    return used


def _dim_ordering(value):
    if value in (None, "default"):
        return None
    if value in ("th", CHANNELS_FIRST):
        return CHANNELS_FIRST
    if value in ("tf", CHANNELS_LAST):
        return CHANNELS_LAST
    return value  # rejected with the layer's name at build time


def _pair(value, what: str, layer: "Layer") -> tuple:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (int(value), int(value))
    try:
        out = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        out = ()
    if len(out) != 2 or min(out) <= 0:
        raise layer.error(AttrError, f"{what} must be a positive integer or a pair of them, "
                                     f"got {value!r}")
    return out


def same_pads(size: int, k: int, s: int, d: int = 1) -> tuple[int, int]:
    """TensorFlow's 'same' padding (before, after) for one spatial dimension."""
    eff = (k - 1) * d + 1
    total = max((math.ceil(size / s) - 1) * s + eff - size, 0)
    return total // 2, total - total // 2


def _shape_str(shape) -> str:
    return "(" + ", ".join("N" if d is None else str(d) for d in shape) + ")"


class _Builder:
    """State while a model is turned into a graph."""

    def __init__(self, graph: Graph, rng: np.random.Generator, default_format: str):
        self.g = graph
        self.rng = rng
        self.default_format = default_format
        self.tensor: str = ""
        self.layout = CHANNELS_FIRST  # Keras' layout of the current tensor when it is 4-D

    @property
    def shape(self) -> tuple:
        return self.g.specs[self.tensor].shape

    def node(self, layer: "Layer", op: str, extra_inputs: Sequence[str] = (), attrs=None,
             suffix: str | None = None) -> str:
        name = layer.name if suffix is None else f"{layer.name}/{suffix}"
        self.tensor = self.g.add_node(op, [self.tensor, *extra_inputs], name=name, attrs=attrs,
                                      source=layer.source)
        return self.tensor

    def graph_axis(self, axis: int, layer: "Layer") -> int:
        """Map a Keras axis of the current tensor to the NCHW graph's axis."""
        rank = len(self.shape)
        if not -rank <= axis < rank:
            raise layer.error(AttrError, f"axis {axis} is out of range for an input of rank {rank} "
                                         f"(shape {_shape_str(self.keras_shape())})")
        axis %= rank
        if rank == 4 and self.layout == CHANNELS_LAST:
            return (0, 2, 3, 1)[axis]
        return axis

    def keras_shape(self) -> tuple:
        shape = self.shape
        if len(shape) == 4 and self.layout == CHANNELS_LAST:
            return (shape[0], shape[2], shape[3], shape[1])
        return shape

    def data_format(self, layer: "Layer") -> str:
        """The layer's resolved data format, checked against its input's layout."""
        fmt = layer.data_format or self.default_format
        if fmt not in (CHANNELS_FIRST, CHANNELS_LAST):
            raise layer.error(AttrError, f"data_format must be 'channels_first' or 'channels_last' "
                                         f"(dim_ordering 'th' or 'tf'), got {fmt!r}")
        if len(self.shape) == 4 and fmt != self.layout:
            raise layer.error(UnsupportedError, f"data_format {fmt!r} differs from the {self.layout!r} "
                                                "layout of its input; graphrt does not mix data "
                                                "formats in one model")
        layer.resolved_data_format = fmt
        return fmt

    def weights(self, layer: "Layer", specs: list[tuple[str, tuple, Any]]) -> list[np.ndarray]:
        """Values for ``specs`` = [(variable, keras_shape, initializer)], drawn or given."""
        given = layer.initial_weights
        if given is not None:
            given = list(given)
            if len(given) != len(specs):
                raise layer.error(WeightError, f"weights= has {len(given)} arrays but the layer has "
                                               f"{len(specs)}: {', '.join(s[0] for s in specs)}")
            out = []
            for (var, shape, _), value in zip(specs, given):
                value = np.asarray(value)
                if value.shape != tuple(shape):
                    raise layer.error(WeightError, f"weights= {var} has shape {value.shape}, expected "
                                                   f"{tuple(shape)} (Keras layout)")
                out.append(np.ascontiguousarray(value, dtype=np.float32))
            return out
        out = []
        for var, shape, init in specs:
            try:
                fn = get_initializer(init)
            except ValueError as err:
                raise layer.error(AttrError, f"{var} initializer: {err}") from None
            fan_in, fan_out = fans(shape)
            out.append(np.ascontiguousarray(fn(tuple(shape), fan_in, fan_out, self.rng),
                                            dtype=np.float32))
        return out

    def param(self, layer: "Layer", var: str, value: np.ndarray, trainable: bool = True) -> str:
        return self.g.add_param(f"{layer.name}/{var}", value, trainable=trainable)

    def activation(self, layer: "Layer", activation, fused: bool) -> None:
        """Append the node for a Keras activation name ('linear'/None adds nothing).

        A fused ``activation=`` of Dense/Conv2D becomes ``<layer>/<activation>``; an
        ``Activation`` layer's node has the layer's name.
        """
        if activation is None:
            return
        if not isinstance(activation, str):
            raise layer.error(UnsupportedError, f"activation must be a name, one of "
                                                f"{', '.join(_ACTIVATIONS)}; got {activation!r}")
        act = activation.lower()
        name = act if fused else None
        if act == "linear":
            return
        if act in ("relu", "tanh", "sigmoid"):
            self.node(layer, act, suffix=name)
        elif act == "leaky_relu":
            self.node(layer, "relu", attrs={"negative_slope": 0.2}, suffix=name)
        elif act in ("softmax", "log_softmax"):
            self.node(layer, act, attrs={"axis": self.graph_axis(-1, layer)}, suffix=name)
        else:
            raise layer.error(UnsupportedError, f"unknown activation {activation!r}; graphrt "
                                                f"supports {', '.join(_ACTIVATIONS)}")


# ---- layers -------------------------------------------------------------------------------------
class Layer:
    """Base of the layers: name, input shape, initial weights, and where it was written."""

    prefix = "layer"         # auto names: <prefix>_1, <prefix>_2, ...
    keras_class = None       # the Keras 3 class name (defaults to the Python class name)
    spatial = False          # consumes a 4-D image tensor with a data_format

    def __init__(self, *, name: str | None = None, input_shape=None, input_dim=None,
                 batch_input_shape=None, batch_shape=None, weights=None, **kwargs):
        self.file, self.line = caller_location()
        self.name = name
        self._given_name = name
        self.initial_weights = weights
        self.keras1 = getattr(self, "keras1", False)
        self.data_format = getattr(self, "data_format", None)
        self.resolved_data_format = None  # set by to_graph
        shape = None
        if input_dim is not None:
            shape = (int(input_dim),)
        if input_shape is not None:
            shape = tuple(input_shape)
        if batch_input_shape is not None:
            shape = tuple(batch_input_shape)[1:]
        if batch_shape is not None:
            shape = tuple(batch_shape)[1:]
        self.input_shape = shape
        unknown = sorted(set(kwargs) - _IGNORED)
        if unknown:
            raise UnsupportedError(f"{type(self).__name__}() got an unexpected keyword argument "
                                   f"{unknown[0]!r}", node=name, op=type(self).__name__,
                                   file=self.file, line=self.line)

    @property
    def source(self) -> Source:
        return Source(layer=self.name, type=type(self).__name__, file=self.file, line=self.line)

    def error(self, cls: type, message: str) -> GraphrtError:
        return cls(message, node=self.name, op=type(self).__name__, file=self.file, line=self.line)

    def get_config(self) -> dict:
        return {"name": self.name}

    def _build(self, b: _Builder) -> None:  # pragma: no cover - every layer overrides it
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name or '(unnamed)'}>"


class InputLayer(Layer):
    """The model's input; ``Input(shape=...)`` makes one. ``shape`` excludes the batch."""

    prefix = "input"

    def __init__(self, input_shape=None, batch_size=None, dtype=None, name=None, *, shape=None,
                 batch_shape=None, **kwargs):
        super().__init__(name=name, input_shape=shape if shape is not None else input_shape,
                         batch_shape=batch_shape, **kwargs)

    def get_config(self):
        return {"name": self.name, "batch_shape": (None,) + tuple(self.input_shape or ())}

    def _build(self, b):  # the Sequential declares the input
        pass


def Input(shape=None, batch_size=None, name=None, dtype=None, batch_shape=None, **kwargs) -> InputLayer:
    """Keras' ``Input``: use as the first element of a Sequential."""
    return InputLayer(shape=shape, batch_shape=batch_shape, name=name, **kwargs)


class Dense(Layer):
    """``Dense(units, activation=None, use_bias=True, kernel_initializer='glorot_uniform', ...)``;
    Keras 1: ``Dense(output_dim, init='glorot_uniform', activation=None, bias=True, input_dim=)``."""

    prefix = "dense"

    def __init__(self, units=None, activation=None, use_bias=True, kernel_initializer=None,
                 bias_initializer="zeros", **kwargs):
        given = {"units": units, "kernel_initializer": kernel_initializer}
        self.keras1 = _legacy("Dense", kwargs, {"output_dim": "units", "init": "kernel_initializer"},
                              given)
        if "bias" in kwargs:
            use_bias, self.keras1 = bool(kwargs.pop("bias")), True
        if given["units"] is None:
            raise TypeError("Dense() missing required argument 'units'")
        self.units = int(given["units"])
        self.activation = activation
        self.use_bias = bool(use_bias)
        self.kernel_initializer = given["kernel_initializer"] or "glorot_uniform"
        self.bias_initializer = bias_initializer
        super().__init__(**kwargs)

    def get_config(self):
        return {"name": self.name, "units": self.units, "activation": self.activation or "linear",
                "use_bias": self.use_bias}

    def _build(self, b):
        shape = b.shape
        if len(shape) != 2:
            raise self.error(ShapeError, f"Dense expects a 2-D (batch, features) input, got shape "
                                         f"{_shape_str(b.keras_shape())}; Keras would apply Dense to "
                                         "the last axis, graphrt does not: add a Flatten() layer "
                                         "before it")
        n_in = shape[1]
        specs = [("kernel", (n_in, self.units), self.kernel_initializer)]
        if self.use_bias:
            specs.append(("bias", (self.units,), self.bias_initializer))
        values = b.weights(self, specs)
        inputs = [b.param(self, "kernel", np.ascontiguousarray(values[0].T))]
        if self.use_bias:
            inputs.append(b.param(self, "bias", values[1]))
        b.node(self, "dense", inputs)
        b.activation(self, self.activation, fused=True)


class Conv2D(Layer):
    """``Conv2D(filters, kernel_size, strides=(1, 1), padding='valid', data_format=None,
    dilation_rate=(1, 1), groups=1, activation=None, use_bias=True,
    kernel_initializer='glorot_uniform', bias_initializer='zeros')``. The kernel (Keras layout
    (kh, kw, in/groups, filters)) is stored OIHW as ``<name>/kernel``."""

    prefix = "conv2d"
    keras_class = "Conv2D"
    spatial = True

    def __init__(self, filters=None, kernel_size=None, strides=(1, 1), padding="valid",
                 data_format=None, dilation_rate=(1, 1), groups=1, activation=None, use_bias=True,
                 kernel_initializer=None, bias_initializer="zeros", **kwargs):
        given = {"filters": filters, "padding": None, "strides": None, "data_format": data_format,
                 "kernel_initializer": kernel_initializer}
        keras1 = _legacy("Conv2D", kwargs, {"nb_filter": "filters", "border_mode": "padding",
                                            "subsample": "strides", "dim_ordering": "data_format",
                                            "init": "kernel_initializer"}, given)
        if "bias" in kwargs:
            use_bias, keras1 = bool(kwargs.pop("bias")), True
        if "nb_row" in kwargs or "nb_col" in kwargs:
            kernel_size, keras1 = (kwargs.pop("nb_row", None), kwargs.pop("nb_col", None)), True
        self.keras1 = getattr(self, "keras1", False) or keras1
        if given["filters"] is None or kernel_size is None:
            raise TypeError(f"{type(self).__name__}() needs filters and kernel_size")
        self.filters = int(given["filters"])
        self.kernel_size = kernel_size
        self.strides = given["strides"] if given["strides"] is not None else strides
        self.padding = given["padding"] if given["padding"] is not None else padding
        self.data_format = _dim_ordering(given["data_format"])
        self.dilation_rate = dilation_rate
        self.groups = groups
        self.activation = activation
        self.use_bias = bool(use_bias)
        self.kernel_initializer = given["kernel_initializer"] or "glorot_uniform"
        self.bias_initializer = bias_initializer
        super().__init__(**kwargs)

    def get_config(self):
        return {"name": self.name, "filters": self.filters,
                "kernel_size": _pair(self.kernel_size, "kernel_size", self),
                "strides": _pair(self.strides, "strides", self), "padding": self.padding,
                "data_format": self.resolved_data_format or self.data_format,
                "dilation_rate": _pair(self.dilation_rate, "dilation_rate", self),
                "groups": self.groups, "activation": self.activation or "linear",
                "use_bias": self.use_bias}

    def _build(self, b):
        if len(b.shape) != 4:
            raise self.error(ShapeError, f"{type(self).__name__} expects a 4-D input (batch, "
                                         f"channels, rows, cols) or (batch, rows, cols, channels), "
                                         f"got shape {_shape_str(b.keras_shape())}")
        b.data_format(self)
        kh, kw = _pair(self.kernel_size, "kernel_size", self)
        sh, sw = _pair(self.strides, "strides", self)
        dh, dw = _pair(self.dilation_rate, "dilation_rate", self)
        groups = int(self.groups)
        _, c, h, w = b.shape
        if groups < 1 or c % groups or self.filters % groups:
            raise self.error(ShapeError, f"groups={self.groups} must divide the {c} input channels "
                                         f"and the {self.filters} filters")
        pads = _padding(self, self.padding, h, w, (kh, kw), (sh, sw), (dh, dw))
        specs = [("kernel", (kh, kw, c // groups, self.filters), self.kernel_initializer)]
        if self.use_bias:
            specs.append(("bias", (self.filters,), self.bias_initializer))
        values = b.weights(self, specs)
        inputs = [b.param(self, "kernel", np.ascontiguousarray(values[0].transpose(3, 2, 0, 1)))]
        if self.use_bias:
            inputs.append(b.param(self, "bias", values[1]))
        b.node(self, "conv2d", inputs, attrs={"stride": (sh, sw), "pads": pads,
                                               "dilation": (dh, dw), "groups": groups})
        b.activation(self, self.activation, fused=True)


class Convolution2D(Conv2D):
    """Keras 1: ``Convolution2D(nb_filter, nb_row, nb_col, init='glorot_uniform', activation=None,
    border_mode='valid', subsample=(1, 1), dim_ordering='default', bias=True)``; the default
    ordering is 'th' (channels_first)."""

    keras1 = True

    def __init__(self, nb_filter, nb_row, nb_col, init="glorot_uniform", activation=None,
                 weights=None, border_mode="valid", subsample=(1, 1), dim_ordering="default",
                 bias=True, **kwargs):
        super().__init__(nb_filter, (nb_row, nb_col), strides=subsample, padding=border_mode,
                         data_format=dim_ordering, activation=activation, use_bias=bias,
                         kernel_initializer=init, weights=weights, **kwargs)


def _padding(layer: Layer, padding, h: int, w: int, kernel, stride, dilation=(1, 1)) -> tuple:
    padding = str(padding).lower() if isinstance(padding, str) else padding
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        t, bt = same_pads(h, kernel[0], stride[0], dilation[0])
        l, r = same_pads(w, kernel[1], stride[1], dilation[1])
        return (t, bt, l, r)
    raise layer.error(AttrError if padding != "causal" else UnsupportedError,
                      f"padding must be 'valid' or 'same' (Keras 1 border_mode), got {padding!r}")


class _Pooling2D(Layer):
    op = "max_pool"
    spatial = True

    def __init__(self, pool_size=(2, 2), strides=None, padding="valid", data_format=None, **kwargs):
        given = {"padding": None, "data_format": data_format}
        self.keras1 = _legacy(type(self).__name__, kwargs, {"border_mode": "padding",
                                                            "dim_ordering": "data_format"}, given)
        self.pool_size = pool_size
        self.strides = strides
        self.padding = given["padding"] if given["padding"] is not None else padding
        self.data_format = _dim_ordering(given["data_format"])
        super().__init__(**kwargs)

    def get_config(self):
        size = _pair(self.pool_size, "pool_size", self)
        return {"name": self.name, "pool_size": size, "padding": self.padding,
                "strides": size if self.strides is None else _pair(self.strides, "strides", self),
                "data_format": self.resolved_data_format or self.data_format}

    def _build(self, b):
        if len(b.shape) != 4:
            raise self.error(ShapeError, f"{type(self).__name__} expects a 4-D input, got shape "
                                         f"{_shape_str(b.keras_shape())}")
        b.data_format(self)
        k = _pair(self.pool_size, "pool_size", self)
        s = k if self.strides is None else _pair(self.strides, "strides", self)
        _, _, h, w = b.shape
        pads = _padding(self, self.padding, h, w, k, s)
        attrs = {"kernel": k, "stride": s, "pads": pads, "ceil_mode": False}
        if self.op == "avg_pool":
            attrs["count_include_pad"] = False
        b.node(self, self.op, attrs=attrs)


class MaxPooling2D(_Pooling2D):
    """``MaxPooling2D(pool_size=(2, 2), strides=None, padding='valid', data_format=None)``
    (Keras 1: ``border_mode``, ``dim_ordering``); strides default to the pool size."""

    prefix = "max_pooling2d"
    op = "max_pool"


class AveragePooling2D(_Pooling2D):
    """``AveragePooling2D(pool_size=(2, 2), strides=None, padding='valid', data_format=None)``;
    'same' padding does not count in the average."""

    prefix = "average_pooling2d"
    op = "avg_pool"


class _GlobalPooling2D(Layer):
    op = "avg_pool"
    spatial = True

    def __init__(self, data_format=None, keepdims=False, **kwargs):
        given = {"data_format": data_format}
        self.keras1 = _legacy(type(self).__name__, kwargs, {"dim_ordering": "data_format"}, given)
        self.data_format = _dim_ordering(given["data_format"])
        self.keepdims = bool(keepdims)
        super().__init__(**kwargs)

    def _build(self, b):
        if len(b.shape) != 4:
            raise self.error(ShapeError, f"{type(self).__name__} expects a 4-D input, got shape "
                                         f"{_shape_str(b.keras_shape())}")
        b.data_format(self)
        b.node(self, self.op, attrs={"global_pool": True})
        if not self.keepdims:
            b.node(self, "flatten", attrs={"axis": 1}, suffix="flatten")


class GlobalAveragePooling2D(_GlobalPooling2D):
    """(batch, C, H, W) or (batch, H, W, C) -> (batch, C): ``avg_pool`` global + ``flatten``."""

    prefix = "global_average_pooling2d"
    op = "avg_pool"


class GlobalMaxPooling2D(_GlobalPooling2D):
    prefix = "global_max_pooling2d"
    op = "max_pool"


class BatchNormalization(Layer):
    """``BatchNormalization(axis=-1, momentum=0.99, epsilon=1e-3, center=True, scale=True, ...)``
    in inference form: ``batch_norm(x, moving_mean, moving_variance, gamma, beta; eps)``."""

    prefix = "batch_normalization"

    def __init__(self, axis=-1, momentum=0.99, epsilon=1e-3, center=True, scale=True,
                 beta_initializer="zeros", gamma_initializer="ones",
                 moving_mean_initializer="zeros", moving_variance_initializer="ones", **kwargs):
        given = {"beta_initializer": None, "gamma_initializer": None}
        self.keras1 = _legacy("BatchNormalization", kwargs, {"beta_init": "beta_initializer",
                                                             "gamma_init": "gamma_initializer"}, given)
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

    def _build(self, b):
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
                                         f"feature axis, got {_shape_str(b.keras_shape())}")
        gaxis = b.graph_axis(int(axis), self)
        if gaxis != 1:
            raise self.error(UnsupportedError, f"BatchNormalization(axis={self.axis}) normalizes axis "
                                               f"{int(axis) % len(b.shape)} of the "
                                               f"{b.layout if len(b.shape) == 4 else ''} input "
                                               f"{_shape_str(b.keras_shape())}, which is not its "
                                               "channel/feature axis; graphrt only normalizes "
                                               "channels (use axis=1 for channels_first)")
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
        b.node(self, "batch_norm", inputs, attrs={"eps": self.epsilon})


class Activation(Layer):
    """``Activation(name)``: relu, tanh, sigmoid, softmax, log_softmax, leaky_relu, or linear
    (which adds no node). The node has the layer's name."""

    prefix = "activation"

    def __init__(self, activation, **kwargs):
        self.activation = activation
        super().__init__(**kwargs)

    def get_config(self):
        return {"name": self.name, "activation": self.activation}

    def _build(self, b):
        b.activation(self, self.activation, fused=False)


class ReLU(Layer):
    """``ReLU(max_value=None, negative_slope=0.0, threshold=0.0)``; max_value and threshold are
    not supported."""

    prefix = "re_lu"

    def __init__(self, max_value=None, negative_slope=0.0, threshold=0.0, **kwargs):
        self.max_value, self.negative_slope, self.threshold = max_value, negative_slope, threshold
        super().__init__(**kwargs)

    def _build(self, b):
        if self.max_value is not None or self.threshold:
            raise self.error(UnsupportedError, "ReLU max_value/threshold are not supported")
        b.node(self, "relu", attrs={"negative_slope": float(self.negative_slope)})


class LeakyReLU(Layer):
    """``LeakyReLU(negative_slope=0.3)`` (Keras 2: ``alpha``)."""

    prefix = "leaky_re_lu"

    def __init__(self, negative_slope=0.3, **kwargs):
        if "alpha" in kwargs:
            negative_slope = kwargs.pop("alpha")
        self.negative_slope = float(negative_slope)
        super().__init__(**kwargs)

    def _build(self, b):
        b.node(self, "relu", attrs={"negative_slope": self.negative_slope})


class Softmax(Layer):
    """``Softmax(axis=-1)`` (a Keras axis, mapped into the NCHW graph)."""

    prefix = "softmax"

    def __init__(self, axis=-1, **kwargs):
        self.axis = axis
        super().__init__(**kwargs)

    def _build(self, b):
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

    def _build(self, b):
        try:
            rate = float(self.rate)
        except (TypeError, ValueError):
            rate = -1.0
        if not 0.0 <= rate < 1.0:
            raise self.error(AttrError, f"Dropout rate must be in [0, 1), got {self.rate!r}")
        b.node(self, "dropout", attrs={"rate": rate})


class Flatten(Layer):
    """``Flatten(data_format=None)``: flattens in the order Keras stores the tensor (see the module
    docstring); a channels_last model gets a transpose to NHWC first."""

    prefix = "flatten"

    def __init__(self, data_format=None, **kwargs):
        self.data_format_flatten = _dim_ordering(data_format)
        super().__init__(**kwargs)

    def get_config(self):
        return {"name": self.name, "data_format": self.data_format_flatten or CHANNELS_LAST}

    def _build(self, b):
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


# ---- the model ----------------------------------------------------------------------------------
class Sequential:
    """``Sequential(layers=None, name=None, data_format=None)``; ``add(layer)`` returns the model."""

    def __init__(self, layers: Sequence[Layer] | None = None, name: str | None = None,
                 data_format: str | None = None):
        self.file, self.line = caller_location()
        self.name = name
        self.data_format = _dim_ordering(data_format)
        self.layers: list[Layer] = []
        for layer in layers or []:
            self.add(layer)

    def add(self, layer: Layer) -> "Sequential":
        if not isinstance(layer, Layer):
            file, line = caller_location()
            raise UnsupportedError(f"Sequential.add expects a graphrt.frontends.keras layer, got "
                                   f"{type(layer).__name__}", file=file, line=line)
        if any(layer is other for other in self.layers):
            raise GraphError(f"layer {layer.name or type(layer).__name__} is already in this model; "
                             "create a new layer object", node=layer.name, op=type(layer).__name__,
                             file=layer.file, line=layer.line)
        if isinstance(layer, InputLayer) and self.layers:
            raise layer.error(GraphError, "an Input/InputLayer must be the first layer of a "
                                          "Sequential model")
        self.layers.append(layer)
        return self

    def pop(self) -> Layer:
        return self.layers.pop()

    def _assign_names(self) -> None:
        used: set[str] = set()
        for layer in self.layers:
            if layer._given_name is not None:
                if layer._given_name in used:
                    raise layer.error(GraphError, f"two layers are named {layer._given_name!r}")
                used.add(layer._given_name)
        counters: dict[str, int] = {}
        for layer in self.layers:
            if layer._given_name is not None:
                layer.name = layer._given_name
                continue
            k = counters.get(layer.prefix, 0) + 1
            while f"{layer.prefix}_{k}" in used:
                k += 1
            counters[layer.prefix] = k
            layer.name = f"{layer.prefix}_{k}"
            used.add(layer.name)

    def default_data_format(self) -> str:
        if self.data_format is not None:
            return self.data_format
        return CHANNELS_FIRST if any(getattr(l, "keras1", False) for l in self.layers) else CHANNELS_LAST

    def to_graph(self, seed: int = 0, input_shape: Sequence[int] | None = None,
                 name: str | None = None) -> Graph:
        """The model as a verified graph; parameters drawn from ``default_rng(seed)``."""
        if not self.layers:
            raise GraphError("the Sequential model has no layers", file=self.file, line=self.line)
        self._assign_names()
        first = self.layers[0]
        shape = tuple(input_shape) if input_shape is not None else first.input_shape
        if shape is None:
            raise first.error(ShapeError, "the first layer needs input_shape= (Keras 1: input_dim=), "
                                          "or start the model with Input(shape=...)")
        if any(d is None or int(d) <= 0 for d in shape):
            raise first.error(ShapeError, f"input shape {tuple(shape)} must be fully known "
                                          "(positive sizes, batch excluded)")
        shape = tuple(int(d) for d in shape)
        default = self.default_data_format()
        g = Graph(name or self.name or "sequential")
        b = _Builder(g, np.random.default_rng(seed), default)
        in_layer = first if isinstance(first, InputLayer) else None
        in_name = in_layer.name if in_layer else "input_1"
        if in_layer is None and any(l.name == in_name for l in self.layers):
            in_name = "input"
        b.tensor = g.add_input(in_name, (None,) + shape)
        if len(shape) == 3:
            spatial = [l for l in self.layers if l.spatial]
            if spatial:
                fmt = spatial[0].data_format or default
                if fmt in (CHANNELS_FIRST, CHANNELS_LAST):
                    b.layout = fmt
            if b.layout == CHANNELS_LAST:
                src = (in_layer or first).source
                b.tensor = g.add_node("transpose", [b.tensor], name=f"{in_name}/to_nchw",
                                      attrs={"perm": (0, 3, 1, 2)},
                                      source=Source(in_name, src.type, src.file, src.line))
        for layer in self.layers:
            layer._build(b)
        if b.tensor in g.inputs:  # only an input layer / linear activations: keep one node
            b.node(self.layers[-1], "identity", suffix="identity")
        g.set_outputs([b.tensor])
        g.verify()
        return g

    def summary(self, seed: int = 0) -> str:
        """The graph summary (node, op, output shape, params) as text; also printed."""
        text = self.to_graph(seed=seed).summary()
        print(text)
        return text

    def __repr__(self) -> str:
        return f"<Sequential {self.name or ''} of {len(self.layers)} layers>"


__all__ = ["Sequential", "Layer", "Input", "InputLayer", "Dense", "Conv2D", "Convolution2D",
           "MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D", "GlobalMaxPooling2D",
           "BatchNormalization", "Activation", "ReLU", "LeakyReLU", "Softmax", "Dropout", "Flatten",
           "same_pads", "CHANNELS_FIRST", "CHANNELS_LAST"]
