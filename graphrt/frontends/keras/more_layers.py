"""The Keras 3 layers the ``keras.applications`` architectures use beyond the seed's that move or
convolve images: padding and cropping, depthwise, separable and transposed convolution,
upsampling, reshaping and permuting (the normalizing ones are in :mod:`.norm_layers`).

Shapes and axes are Keras' (channels_last by default); the graph stays NCHW, so a layer that
reorders elements (``Reshape``, ``Permute``) reads its input in Keras' order and gives its output
back in the graph's (see :meth:`GraphBuilder.keras_order` / :meth:`GraphBuilder.graph_order`).
"""
from __future__ import annotations

import numpy as np

from ...ir.errors import AttrError, UnsupportedError
from .builder import dim_ordering, padding_pads
from .layer import KernelLayer, Layer, int_pair


def _pads(value, what, layer) -> tuple:
    """Keras' ``padding`` / ``cropping``: an int, (h, w) or ((top, bottom), (left, right))."""
    if isinstance(value, (int, np.integer)):
        return (int(value),) * 4
    value = list(value)
    if len(value) == 2 and all(isinstance(v, (int, np.integer)) for v in value):
        return (int(value[0]),) * 2 + (int(value[1]),) * 2
    if len(value) == 2 and all(len(v) == 2 for v in value):
        return tuple(int(p) for pair in value for p in pair)
    raise layer.error(AttrError, f"{what} must be an int, (rows, cols) or ((top, bottom), (left, "
                                 f"right)), got {value!r}")


class ZeroPadding2D(Layer):
    """``ZeroPadding2D(padding=(1, 1), data_format=None)``: ``zero_pad``."""

    prefix = "zero_padding2d"
    spatial = True
    sign = 1

    def __init__(self, padding=(1, 1), data_format=None, **kwargs):
        self.padding = padding
        self.data_format = dim_ordering(data_format)
        super().__init__(**kwargs)

    def add_nodes(self, b):
        b.image_input(self)
        pads = _pads(self.padding, type(self).__name__.lower(), self)
        if min(pads) < 0:
            raise self.error(AttrError, f"{type(self).__name__} needs sizes >= 0, got {pads}")
        b.node(self, "zero_pad", attrs={"pads": tuple(self.sign * p for p in pads)})


class Cropping2D(ZeroPadding2D):
    """``Cropping2D(cropping=((0, 0), (0, 0)), data_format=None)``: ``zero_pad`` with negative
    pads."""

    prefix = "cropping2d"
    sign = -1

    def __init__(self, cropping=((0, 0), (0, 0)), data_format=None, **kwargs):
        super().__init__(padding=cropping, data_format=data_format, **kwargs)


class DepthwiseConv2D(KernelLayer):
    """``DepthwiseConv2D(kernel_size, strides=(1, 1), padding='valid', depth_multiplier=1, ...)``:
    a grouped ``conv2d`` (groups = channels); the kernel (kh, kw, C, M) becomes OIHW (C*M, 1, kh,
    kw), output channel c*M + m."""

    prefix = "depthwise_conv2d"
    spatial = True

    def __init__(self, kernel_size=None, strides=(1, 1), padding="valid", depth_multiplier=1,
                 data_format=None, dilation_rate=(1, 1), activation=None, use_bias=True,
                 depthwise_initializer="glorot_uniform", bias_initializer="zeros", **kwargs):
        if kernel_size is None:
            raise TypeError("DepthwiseConv2D() needs kernel_size")
        self.kernel_size, self.strides, self.padding = kernel_size, strides, padding
        self.depth_multiplier = int(depth_multiplier)
        self.data_format = dim_ordering(data_format)
        self.dilation_rate = dilation_rate
        for key in ("depthwise_regularizer", "depthwise_constraint"):
            kwargs.pop(key, None)
        super().__init__(activation=activation, use_bias=use_bias,
                         kernel_initializer=depthwise_initializer,
                         bias_initializer=bias_initializer, **kwargs)

    def geometry(self, b):
        b.image_input(self)
        k = int_pair(self.kernel_size, "kernel_size", self)
        s = int_pair(self.strides, "strides", self)
        d = int_pair(self.dilation_rate, "dilation_rate", self)
        _, c, h, w = b.shape
        return c, k, s, d, padding_pads(self, self.padding, h, w, k, s, d)

    def depthwise(self, b, var: str, values=None) -> str:
        """The depthwise kernel parameter (Keras (kh, kw, C, M)) as OIHW (C*M, 1, kh, kw)."""
        c, (kh, kw), *_ = self.geometry(b)
        m = self.depth_multiplier
        if values is None:
            values = b.weights(self, [(var, (kh, kw, c, m), self.kernel_initializer)])[0]
        return b.param(self, var, np.ascontiguousarray(
            values.reshape(kh, kw, 1, c * m).transpose(3, 2, 0, 1)))

    def add_nodes(self, b):
        c, (kh, kw), s, d, pads = self.geometry(b)
        m = self.depth_multiplier
        specs = [("kernel", (kh, kw, c, m), self.kernel_initializer)]
        if self.use_bias:
            specs.append(("bias", (c * m,), self.bias_initializer))
        values = b.weights(self, specs)
        params = [self.depthwise(b, "kernel", values[0])]
        if self.use_bias:
            params.append(b.param(self, "bias", values[1]))
        b.node(self, "conv2d", params, attrs={"stride": s, "pads": pads, "dilation": d,
                                               "groups": c})
        b.activation(self, self.activation, fused=True)


class SeparableConv2D(DepthwiseConv2D):
    """``SeparableConv2D(filters, kernel_size, ..., depth_multiplier=1)``: a depthwise ``conv2d``
    (``<name>/depthwise``) then a 1x1 ``conv2d`` with the bias and activation."""

    prefix = "separable_conv2d"

    def __init__(self, filters=None, kernel_size=None, pointwise_initializer="glorot_uniform",
                 **kwargs):
        if filters is None:
            raise TypeError("SeparableConv2D() needs filters")
        self.filters = int(filters)
        self.pointwise_initializer = pointwise_initializer
        for key in ("pointwise_regularizer", "pointwise_constraint"):
            kwargs.pop(key, None)
        super().__init__(kernel_size=kernel_size, **kwargs)

    def add_nodes(self, b):
        c, (kh, kw), s, d, pads = self.geometry(b)
        m = self.depth_multiplier
        specs = [("depthwise_kernel", (kh, kw, c, m), self.kernel_initializer),
                 ("pointwise_kernel", (1, 1, c * m, self.filters), self.pointwise_initializer)]
        if self.use_bias:
            specs.append(("bias", (self.filters,), self.bias_initializer))
        values = b.weights(self, specs)
        dw = self.depthwise(b, "depthwise_kernel", values[0])
        b.node(self, "conv2d", [dw], attrs={"stride": s, "pads": pads, "dilation": d, "groups": c},
               suffix="depthwise")
        params = [b.param(self, "pointwise_kernel",
                          np.ascontiguousarray(values[1].transpose(3, 2, 0, 1)))]
        if self.use_bias:
            params.append(b.param(self, "bias", values[2]))
        b.node(self, "conv2d", params)
        b.activation(self, self.activation, fused=True)


def transpose_crops(n_k: int, s: int, d: int, padding: str, output_padding):
    """(crop at the start, crop at the end, extra rows) of one axis of Keras 3's transposed
    convolution on the torch backend: the full output (in - 1) * s + k_eff cropped by
    (k_eff - 1) - left_pad and (k_eff - 1) - right_pad, JAX's pads; a negative end crop adds rows."""
    k = (n_k - 1) * d + 1
    if padding == "valid":
        extra = max(k, s) - k if output_padding is None else output_padding
        left, right = k - 1, k - 1 + extra
    else:
        total = s + k - 2 if output_padding is None else k + k % 2 - 2 + output_padding
        left = min(total // 2 + total % 2, k - 1)
        right = total - left
    start, end = (k - 1) - left, (k - 1) - right
    return start, max(0, end), max(0, -end)


class Conv2DTranspose(KernelLayer):
    """``Conv2DTranspose(filters, kernel_size, strides=(1, 1), padding='valid',
    output_padding=None, data_format=None, dilation_rate=(1, 1), ...)``: ``conv2d_transpose``; the
    kernel (kh, kw, filters, in) becomes (in, filters, kh, kw)."""

    prefix = "conv2d_transpose"
    spatial = True

    def __init__(self, filters=None, kernel_size=None, strides=(1, 1), padding="valid",
                 output_padding=None, data_format=None, dilation_rate=(1, 1), **kwargs):
        if filters is None or kernel_size is None:
            raise TypeError("Conv2DTranspose() needs filters and kernel_size")
        self.filters, self.kernel_size, self.strides = int(filters), kernel_size, strides
        self.padding, self.output_padding = str(padding).lower(), output_padding
        self.data_format = dim_ordering(data_format)
        self.dilation_rate = dilation_rate
        super().__init__(**kwargs)

    def add_nodes(self, b):
        b.image_input(self)
        k = int_pair(self.kernel_size, "kernel_size", self)
        s = int_pair(self.strides, "strides", self)
        d = int_pair(self.dilation_rate, "dilation_rate", self)
        if self.padding not in ("valid", "same"):
            raise self.error(AttrError, f"padding must be 'valid' or 'same', got {self.padding!r}")
        extra = self.output_padding
        if extra is None:
            extra = (None, None)
        elif isinstance(extra, (list, tuple)):
            extra = tuple(int(v) for v in extra)
        else:
            extra = (int(extra),) * 2
        (t, bt, eh), (l, r, ew) = (transpose_crops(k[i], s[i], d[i], self.padding, extra[i])
                                   for i in range(2))
        c = b.shape[1]
        specs = [("kernel", k + (self.filters, c), self.kernel_initializer)]
        if self.use_bias:
            specs.append(("bias", (self.filters,), self.bias_initializer))
        values = b.weights(self, specs)
        params = [b.param(self, "kernel", np.ascontiguousarray(values[0].transpose(3, 2, 0, 1)))]
        if self.use_bias:
            params.append(b.param(self, "bias", values[1]))
        b.node(self, "conv2d_transpose", params, attrs={
            "stride": s, "dilation": d, "pads": (t, bt, l, r), "output_padding": (eh, ew)})
        b.activation(self, self.activation, fused=True)


class UpSampling2D(Layer):
    """``UpSampling2D(size=(2, 2), data_format=None, interpolation='nearest')``: ``resize``
    (nearest repeats each element; bilinear and bicubic as PyTorch's with align_corners off)."""

    prefix = "up_sampling2d"
    spatial = True

    def __init__(self, size=(2, 2), data_format=None, interpolation="nearest", **kwargs):
        self.size, self.interpolation = size, interpolation
        self.data_format = dim_ordering(data_format)
        super().__init__(**kwargs)

    def add_nodes(self, b):
        b.image_input(self)
        sh, sw = int_pair(self.size, "size", self)
        _, _, h, w = b.shape
        mode = {"nearest": "nearest", "bilinear": "linear", "bicubic": "cubic"}.get(
            self.interpolation)
        if mode is None:
            raise self.error(UnsupportedError, f"UpSampling2D interpolation "
                                               f"{self.interpolation!r} (nearest, bilinear, "
                                               "bicubic)")
        b.node(self, "resize", attrs={
            "sizes": (h * sh, w * sw), "mode": mode, "nearest_mode": "floor",
            "coordinate_transformation_mode": "asymmetric" if mode == "nearest" else "half_pixel"})


class Reshape(Layer):
    """``Reshape(target_shape)``: in Keras' element order (a channels_last image is read as NHWC
    and a 4-D result given back as NCHW)."""

    prefix = "reshape"

    def __init__(self, target_shape=None, **kwargs):
        if target_shape is None:
            raise TypeError("Reshape() needs target_shape")
        self.target_shape = tuple(int(d) for d in target_shape)
        super().__init__(**kwargs)

    def add_nodes(self, b):
        b.keras_order(self)
        b.node(self, "reshape", attrs={"shape": self.target_shape})
        b.graph_order(self)


class Permute(Layer):
    """``Permute(dims)`` (1-based, the batch excluded), in Keras' element order."""

    prefix = "permute"

    def __init__(self, dims=None, **kwargs):
        if dims is None:
            raise TypeError("Permute() needs dims")
        self.dims = tuple(int(d) for d in dims)
        super().__init__(**kwargs)

    def add_nodes(self, b):
        b.keras_order(self)
        if sorted(self.dims) != list(range(1, len(b.shape))):
            raise self.error(AttrError, f"Permute dims {self.dims} are not a permutation of the "
                                        f"axes 1..{len(b.shape) - 1}")
        b.node(self, "transpose", attrs={"perm": (0,) + self.dims})
        b.graph_order(self)


__all__ = ["ZeroPadding2D", "Cropping2D", "DepthwiseConv2D", "SeparableConv2D",
           "Conv2DTranspose", "UpSampling2D", "Reshape", "Permute", "transpose_crops"]
