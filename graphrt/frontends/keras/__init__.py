"""A Keras-like model builder that produces a graphrt :class:`~graphrt.ir.graph.Graph`.

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
``Flatten``, and the Keras 3 layers of ``keras.applications`` (:mod:`.more_layers`,
:mod:`.norm_layers`): ``ZeroPadding2D``, ``Cropping2D``, ``DepthwiseConv2D``,
``SeparableConv2D``, ``Conv2DTranspose``, ``UpSampling2D``, ``Reshape``, ``Permute``,
``Rescaling``, ``Normalization``, ``LayerNormalization``, ``LayerScale``. Keras 1 keyword spellings (``init``, ``bias``, ``output_dim``, ``border_mode``,
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

Every node's :class:`~graphrt.ir.graph.Source` is ``(layer name, layer class as written, file, line)``
where file/line is where the user constructed the layer object, so errors point at that line.

Initialization draws from ``np.random.default_rng(seed)`` in layer order (kernel, then bias, in
Keras' kernel layout — (in, out) or (kh, kw, in, out) — then converted), so a Keras 1 and a Keras 2
spelling of one model give the same parameters for the same seed. Pass ``weights=[...]`` (Keras
order and layout, as ``layer.get_weights()`` returns them) to use given values instead.

Where the code is
-----------------
This module holds :class:`Sequential` and re-exports the layers, which live in
:mod:`~graphrt.frontends.keras.layer` (the ``Layer`` base, Keras 1 keyword spellings),
:mod:`~graphrt.frontends.keras.core` (input, dense, normalization, activations, dropout, flatten)
and :mod:`~graphrt.frontends.keras.spatial` (convolution, pooling). The rules above (data formats,
axes, padding, weights) are applied by :class:`~graphrt.frontends.keras.builder.GraphBuilder`,
which :mod:`graphrt.frontends.keras.files` shares to build models read from files.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ...ir.errors import GraphError, ShapeError, UnsupportedError
from ...ir import Graph, Source
from ..initializers import caller_location
# the layers live in .core / .spatial, the translation rules in .builder; this
# module is the public face and holds the model
from .builder import (CHANNELS_FIRST, CHANNELS_LAST, GraphBuilder, dim_ordering,
                      known_input_shape, same_pads)
from .core import (Activation, BatchNormalization, Dense, Dropout, Flatten, Input,
                   InputLayer, LeakyReLU, ReLU, Softmax)
from .layer import Layer
from .more_layers import (Conv2DTranspose, Cropping2D, DepthwiseConv2D, Permute, Reshape,
                          SeparableConv2D, UpSampling2D, ZeroPadding2D)
from .norm_layers import LayerNormalization, LayerScale, Normalization, Rescaling
from .spatial import (AveragePooling2D, Conv2D, Convolution2D, GlobalAveragePooling2D,
                      GlobalMaxPooling2D, MaxPooling2D)


class Sequential:
    """``Sequential(layers=None, name=None, data_format=None)``; ``add(layer)`` returns the model."""

    def __init__(self, layers: Sequence[Layer] | None = None, name: str | None = None,
                 data_format: str | None = None):
        self.file, self.line = caller_location()
        self.name = name
        self.data_format = dim_ordering(data_format)
        self.layers: list[Layer] = []
        for layer in layers or []:
            self.add(layer)

    def add(self, layer: Layer) -> "Sequential":
        """Append ``layer`` (a layer object may be in one model once); returns the model."""
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
        """Remove and return the last layer."""
        return self.layers.pop()

    def _assign_names(self) -> None:
        """Name the unnamed layers ``<prefix>_<k>``, Keras 1 style, around the given names."""
        used: set[str] = set()
        for layer in self.layers:
            if layer.given_name is not None:
                if layer.given_name in used:
                    raise layer.error(GraphError, f"two layers are named {layer.given_name!r}")
                used.add(layer.given_name)
        counters: dict[str, int] = {}
        for layer in self.layers:
            if layer.given_name is not None:
                layer.name = layer.given_name
                continue
            k = counters.get(layer.prefix, 0) + 1
            while f"{layer.prefix}_{k}" in used:
                k += 1
            counters[layer.prefix] = k
            layer.name = f"{layer.prefix}_{k}"
            used.add(layer.name)

    def default_data_format(self) -> str:
        """The model's data format: ``data_format=`` if given, else channels_first for a model
        written with Keras 1 spellings and channels_last (Keras 2/3's default) otherwise."""
        if self.data_format is not None:
            return self.data_format
        return CHANNELS_FIRST if any(getattr(l, "keras1", False) for l in self.layers) else CHANNELS_LAST

    def _image_layout(self, default: str) -> str:
        """Keras' layout of an image input: the first spatial layer's data format."""
        spatial = [l for l in self.layers if l.spatial]
        if spatial:
            fmt = spatial[0].data_format or default
            if fmt in (CHANNELS_FIRST, CHANNELS_LAST):
                return fmt
        return CHANNELS_FIRST  # an unknown format is rejected by the layer itself

    def _input_shape(self, input_shape: Sequence[int] | None) -> tuple[int, ...]:
        """The model's input shape (batch excluded): ``input_shape=`` or the first layer's."""
        first = self.layers[0]
        shape = tuple(input_shape) if input_shape is not None else first.input_shape
        if shape is None:
            raise first.error(ShapeError, "the first layer needs input_shape= (Keras 1: input_dim=), "
                                          "or start the model with Input(shape=...)")
        return known_input_shape(first, shape)

    def to_graph(self, seed: int = 0, input_shape: Sequence[int] | None = None,
                 name: str | None = None) -> Graph:
        """The model as a verified graph; parameters drawn from ``default_rng(seed)``."""
        if not self.layers:
            raise GraphError("the Sequential model has no layers", file=self.file, line=self.line)
        self._assign_names()
        shape = self._input_shape(input_shape)
        default = self.default_data_format()
        g = Graph(name or self.name or "sequential")
        b = GraphBuilder(g, np.random.default_rng(seed), default)
        if len(shape) == 3:
            b.layout = self._image_layout(default)
        first = self.layers[0]
        in_layer = first if isinstance(first, InputLayer) else None
        in_name = in_layer.name if in_layer else "input_1"
        if in_layer is None and any(l.name == in_name for l in self.layers):
            in_name = "input"
        src = (in_layer or first).source
        b.add_input(in_name, shape, Source(in_name, src.type, src.file, src.line))
        for layer in self.layers:
            layer.add_nodes(b)
        if b.tensor in g.inputs:  # only an input layer / linear activations: keep one node
            b.node(self.layers[-1], "identity", suffix="identity")
        last = self.layers[-1]
        g.set_outputs([b.to_keras_layout(b.tensor, last.name, last.source)])
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
           "ZeroPadding2D", "Cropping2D", "DepthwiseConv2D", "SeparableConv2D", "Conv2DTranspose",
           "UpSampling2D", "Reshape", "Permute", "Rescaling", "Normalization", "LayerNormalization",
           "LayerScale", "same_pads", "CHANNELS_FIRST", "CHANNELS_LAST"]
