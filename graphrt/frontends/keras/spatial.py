"""The Keras-like image layers: convolution and pooling, with a data format.

Each consumes a 4-D image tensor; the graph is NCHW whatever the layer's ``data_format`` (Keras 1:
``dim_ordering``), and ``padding='same'`` is TensorFlow's (see
:mod:`graphrt.frontends.keras.builder`).
"""
from __future__ import annotations

from ...ir.errors import ShapeError
from .builder import dim_ordering, padding_pads
from .layer import KernelLayer, Layer, int_pair, keras1_keywords


class Conv2D(KernelLayer):
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
        keras1 = keras1_keywords("Conv2D", kwargs, {
            "nb_filter": "filters", "border_mode": "padding", "subsample": "strides",
            "dim_ordering": "data_format", "init": "kernel_initializer"}, given)
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
        self.data_format = dim_ordering(given["data_format"])
        self.dilation_rate = dilation_rate
        self.groups = groups
        super().__init__(activation=activation, use_bias=use_bias,
                         kernel_initializer=given["kernel_initializer"],
                         bias_initializer=bias_initializer, **kwargs)

    def get_config(self):
        return {"name": self.name, "filters": self.filters,
                "kernel_size": int_pair(self.kernel_size, "kernel_size", self),
                "strides": int_pair(self.strides, "strides", self), "padding": self.padding,
                "data_format": self.resolved_data_format or self.data_format,
                "dilation_rate": int_pair(self.dilation_rate, "dilation_rate", self),
                "groups": self.groups, "activation": self.activation or "linear",
                "use_bias": self.use_bias}

    def add_nodes(self, b):
        b.image_input(self, "a 4-D input (batch, channels, rows, cols) or (batch, rows, cols, "
                            "channels)")
        kh, kw = int_pair(self.kernel_size, "kernel_size", self)
        sh, sw = int_pair(self.strides, "strides", self)
        dh, dw = int_pair(self.dilation_rate, "dilation_rate", self)
        groups = int(self.groups)
        _, c, h, w = b.shape
        if groups < 1 or c % groups or self.filters % groups:
            raise self.error(ShapeError, f"groups={self.groups} must divide the {c} input channels "
                                         f"and the {self.filters} filters")
        pads = padding_pads(self, self.padding, h, w, (kh, kw), (sh, sw), (dh, dw))
        # Keras' kernel layout (kh, kw, in, out) -> OIHW
        params = self.kernel_and_bias(b, (kh, kw, c // groups, self.filters), (3, 2, 0, 1))
        b.node(self, "conv2d", params, attrs={"stride": (sh, sw), "pads": pads,
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


class _Pooling2D(Layer):
    """Base of MaxPooling2D / AveragePooling2D: ``op`` over ``pool_size`` windows."""

    op = "max_pool"
    spatial = True

    def __init__(self, pool_size=(2, 2), strides=None, padding="valid", data_format=None, **kwargs):
        given = {"padding": None, "data_format": data_format}
        self.keras1 = keras1_keywords(type(self).__name__, kwargs, {
            "border_mode": "padding", "dim_ordering": "data_format"}, given)
        self.pool_size = pool_size
        self.strides = strides
        self.padding = given["padding"] if given["padding"] is not None else padding
        self.data_format = dim_ordering(given["data_format"])
        super().__init__(**kwargs)

    def get_config(self):
        size = int_pair(self.pool_size, "pool_size", self)
        return {"name": self.name, "pool_size": size, "padding": self.padding,
                "strides": size if self.strides is None else int_pair(self.strides, "strides", self),
                "data_format": self.resolved_data_format or self.data_format}

    def add_nodes(self, b):
        b.image_input(self)
        k = int_pair(self.pool_size, "pool_size", self)
        s = k if self.strides is None else int_pair(self.strides, "strides", self)
        _, _, h, w = b.shape
        pads = padding_pads(self, self.padding, h, w, k, s)
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
    """Base of the global poolings: ``op`` over the whole image, then a flatten unless
    ``keepdims``."""

    op = "avg_pool"
    spatial = True

    def __init__(self, data_format=None, keepdims=False, **kwargs):
        given = {"data_format": data_format}
        self.keras1 = keras1_keywords(type(self).__name__, kwargs,
                                      {"dim_ordering": "data_format"}, given)
        self.data_format = dim_ordering(given["data_format"])
        self.keepdims = bool(keepdims)
        super().__init__(**kwargs)

    def add_nodes(self, b):
        b.image_input(self)
        b.node(self, self.op, attrs={"global_pool": True})
        if not self.keepdims:
            b.node(self, "flatten", attrs={"axis": 1}, suffix="flatten")


class GlobalAveragePooling2D(_GlobalPooling2D):
    """(batch, C, H, W) or (batch, H, W, C) -> (batch, C): ``avg_pool`` global + ``flatten``."""

    prefix = "global_average_pooling2d"
    op = "avg_pool"


class GlobalMaxPooling2D(_GlobalPooling2D):
    """(batch, C, H, W) or (batch, H, W, C) -> (batch, C): ``max_pool`` global + ``flatten``."""

    prefix = "global_max_pooling2d"
    op = "max_pool"


__all__ = ["Conv2D", "Convolution2D", "MaxPooling2D", "AveragePooling2D",
           "GlobalAveragePooling2D", "GlobalMaxPooling2D"]
