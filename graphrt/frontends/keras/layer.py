"""The base of the Keras-like layers and the keyword handling they share.

A layer remembers what the user passed (Keras 1 spellings moved onto their Keras 2 names by
:func:`keras1_keywords`), its name, and the file and line where it was constructed; it adds its
nodes to a graph only when the model is built (``add_nodes``, see
:mod:`.builder`, whose ``GraphBuilder`` each ``add_nodes`` receives).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ...ir.errors import AttrError, GraphrtError, UnsupportedError
from ...ir import Source
from ..initializers import caller_location

# keywords Keras accepts that do not change the inference graph (regularizers, constraints, ...)
IGNORED_KEYWORDS = frozenset({
    "trainable", "dtype", "kernel_regularizer", "bias_regularizer", "activity_regularizer",
    "kernel_constraint", "bias_constraint", "W_regularizer", "b_regularizer", "W_constraint",
    "b_constraint", "beta_regularizer", "gamma_regularizer", "beta_constraint", "gamma_constraint",
    "seed", "noise_shape", "autocast", "lora_rank", "lora_alpha", "synchronized", "sparse", "ragged",
    "optional", "input_length", "batch_size",
})


def keras1_keywords(cls_name: str, kwargs: dict, mapping: dict[str, str],
                    given: dict[str, Any]) -> bool:
    """Move Keras 1 keyword spellings onto their Keras 2 names; True if any was used.

    ``mapping`` is {Keras 1 name: Keras 2 name}; a used Keras 1 keyword is popped from
    ``kwargs`` into ``given`` under its Keras 2 name (a TypeError if both spellings are given).
    """
    used = False
    for old, new in mapping.items():
        if old in kwargs:
            if given.get(new) is not None:
                raise TypeError(f"{cls_name}() got both {old!r} (Keras 1) and {new!r} (Keras 2)")
            given[new] = kwargs.pop(old)
            used = True
    return used


def int_pair(value, what: str, layer: "Layer") -> tuple:
    """``value`` (an int or a pair of them, as Keras takes ``kernel_size``) as a positive pair."""
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


class Layer:
    """Base of the layers: name, input shape, initial weights, and where it was written.

    ``given_name`` is the ``name=`` the user passed (``None``: the model assigns ``name``,
    ``dense_1`` style, when it is built).
    """

    prefix = "layer"         # auto names: <prefix>_1, <prefix>_2, ...
    keras_class = None       # the Keras 3 class name (defaults to the Python class name)
    spatial = False          # consumes a 4-D image tensor with a data_format

    def __init__(self, *, name: str | None = None, input_shape=None, input_dim=None,
                 batch_input_shape=None, batch_shape=None, weights=None, **kwargs):
        self.file, self.line = caller_location()
        self.name = name
        self.given_name = name
        self.initial_weights = weights
        # subclasses set these before calling this constructor when the user's keywords say so
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
        unknown = sorted(set(kwargs) - IGNORED_KEYWORDS)
        if unknown:
            raise UnsupportedError(f"{type(self).__name__}() got an unexpected keyword argument "
                                   f"{unknown[0]!r}", node=name, op=type(self).__name__,
                                   file=self.file, line=self.line)

    @property
    def source(self) -> Source:
        """Where the layer's nodes come from: (layer name, class, file, line)."""
        return Source(layer=self.name, type=type(self).__name__, file=self.file, line=self.line)

    def error(self, cls: type, message: str) -> GraphrtError:
        """An error of class ``cls`` naming this layer and where it was written."""
        return cls(message, node=self.name, op=type(self).__name__, file=self.file, line=self.line)

    def get_config(self) -> dict:
        """The layer's settings, as Keras' ``get_config`` names them."""
        return {"name": self.name}

    def add_nodes(self, b: "GraphBuilder") -> None:  # pragma: no cover - every layer overrides it
        """Append this layer's nodes and parameters to ``b``'s graph, on ``b.tensor``."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name or '(unnamed)'}>"


class KernelLayer(Layer):
    """Base of Dense and Conv2D: a kernel, an optional bias and a fused ``activation=``."""

    def __init__(self, *, activation=None, use_bias=True, kernel_initializer=None,
                 bias_initializer="zeros", **kwargs):
        self.activation = activation
        self.use_bias = bool(use_bias)
        self.kernel_initializer = kernel_initializer or "glorot_uniform"
        self.bias_initializer = bias_initializer
        super().__init__(**kwargs)

    def kernel_and_bias(self, b: "GraphBuilder", kernel_shape: tuple, perm: tuple,
                        trailing: int = 0) -> list[str]:
        """Add the ``kernel`` (and ``bias`` if ``use_bias``) parameters; their names.

        The kernel is drawn (or taken from ``weights=``) in Keras' layout ``kernel_shape``, the
        output count last, and stored transposed by ``perm`` into graphrt's layout, with
        ``trailing`` unit axes appended (a Dense kernel as a 1x1 convolution's).
        """
        specs = [("kernel", kernel_shape, self.kernel_initializer)]
        if self.use_bias:
            specs.append(("bias", (kernel_shape[-1],), self.bias_initializer))
        values = b.weights(self, specs)
        kernel = values[0].transpose(perm)
        kernel = kernel.reshape(kernel.shape + (1,) * trailing)
        params = [b.param(self, "kernel", np.ascontiguousarray(kernel))]
        if self.use_bias:
            params.append(b.param(self, "bias", values[1]))
        return params


__all__ = ["Layer", "KernelLayer", "IGNORED_KEYWORDS", "keras1_keywords", "int_pair"]
