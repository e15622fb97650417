"""How the Keras-like layers become graph nodes: data formats, axes, padding, weights.

:class:`GraphBuilder` is the state while a model is turned into a graph: the graph, the random
generator the initializers draw from, the current tensor and Keras' layout of it. Each layer's
``add_nodes(builder)`` appends its nodes through it. The Sequential builder
(:mod:`graphrt.frontends.keras`) and the Keras file reader (:mod:`graphrt.frontends.keras.files`)
share it, so a layer means the same thing written in Python or loaded from a file.

The rules it applies are described in :mod:`graphrt.frontends.keras`: the graph is NCHW whatever
Keras' data format; a channels_last input is followed by a ``<input>/to_nchw`` transpose; Keras
axes are mapped into the NCHW graph; ``'same'`` padding is TensorFlow's; a channels_last model's
4-D outputs get a ``<layer>/to_nhwc`` transpose, so outputs come back in Keras' layout.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ...ir.errors import AttrError, ShapeError, UnsupportedError, WeightError
from ...ir import Graph, Source
from ..initializers import fans, get_initializer, shape_str
from ...ir.limits import Budget

if TYPE_CHECKING:  # the layers import this module
    from .layer import Layer

CHANNELS_FIRST = "channels_first"
CHANNELS_LAST = "channels_last"

#: Keras activation name -> (graphrt op, attributes); softmax/log_softmax take the Keras axis -1
ACTIVATION_OPS = {
    "relu": ("relu", {}), "tanh": ("tanh", {}), "sigmoid": ("sigmoid", {}),
    "leaky_relu": ("relu", {"negative_slope": 0.2}), "relu6": ("clip", {"min": 0.0, "max": 6.0}),
    "swish": ("swish", {}), "silu": ("swish", {}), "hard_silu": ("hard_swish", {}),
    "hard_swish": ("hard_swish", {}), "hard_sigmoid": ("hard_sigmoid", {"alpha": 1 / 6, "beta": 0.5}),
    "gelu": ("gelu", {}), "elu": ("elu", {}), "selu": ("selu", {}), "softplus": ("softplus", {}),
    "softsign": ("softsign", {}), "exponential": ("exp", {}),
}
ACTIVATIONS = ("linear", "softmax", "log_softmax") + tuple(ACTIVATION_OPS)


def dim_ordering(value) -> str | None:
    """A data format from Keras 2's ``data_format`` or Keras 1's ``dim_ordering`` spelling.

    ``'th'`` is channels_first, ``'tf'`` channels_last; ``None`` / ``'default'`` leave it to the
    model. Anything else is returned as is and rejected with the layer's name at build time.
    """
    if value in (None, "default"):
        return None
    if value in ("th", CHANNELS_FIRST):
        return CHANNELS_FIRST
    if value in ("tf", CHANNELS_LAST):
        return CHANNELS_LAST
    return value


def same_pads(size: int, k: int, s: int, d: int = 1) -> tuple[int, int]:
    """TensorFlow's 'same' padding (before, after) for one spatial dimension."""
    eff = (k - 1) * d + 1
    total = max((math.ceil(size / s) - 1) * s + eff - size, 0)
    return total // 2, total - total // 2


def padding_pads(layer: "Layer", padding, h: int, w: int, kernel, stride,
                 dilation=(1, 1)) -> tuple:
    """The graph's ``pads`` (top, bottom, left, right) for Keras' ``'valid'`` or ``'same'``."""
    padding = str(padding).lower() if isinstance(padding, str) else padding
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        t, bt = same_pads(h, kernel[0], stride[0], dilation[0])
        l, r = same_pads(w, kernel[1], stride[1], dilation[1])
        return (t, bt, l, r)
    raise layer.error(AttrError if padding != "causal" else UnsupportedError,
                      f"padding must be 'valid' or 'same' (Keras 1 border_mode), got {padding!r}")


def known_input_shape(layer: "Layer", shape) -> tuple[int, ...]:
    """``shape`` (batch excluded) as ints; a ShapeError naming ``layer`` unless fully known."""
    try:
        known = shape is not None and all(d is not None and int(d) > 0 for d in shape)
    except (TypeError, ValueError, OverflowError):  # a list, a string, NaN or infinity
        known = False
    if not known:
        shown = tuple(shape) if isinstance(shape, (list, tuple)) else shape
        raise layer.error(ShapeError, f"input shape {shown} must be fully known (positive sizes, "
                                      "batch excluded)")
    return tuple(int(d) for d in shape)


class GraphBuilder:
    """State while a model is turned into a graph.

    ``tensor`` is the current tensor (the next layer's input) and ``layout`` Keras' layout of it
    when it is 4-D (the graph itself is always NCHW).
    """

    def __init__(self, graph: Graph, rng: np.random.Generator, default_format: str):
        self.g = graph
        self.rng = rng
        self.default_format = default_format
        self.tensor: str = ""
        self.layout = CHANNELS_FIRST  # Keras' layout of the current tensor when it is 4-D
        self.budget = Budget()  # initializers allocate from config shapes: checked first

    @property
    def shape(self) -> tuple:
        """The graph (NCHW) shape of the current tensor."""
        return self.g.specs[self.tensor].shape

    def add_input(self, name: str, shape: tuple, source: Source) -> str:
        """Declare the graph input ``(None, *shape)`` as Keras sees it and make it current.

        A channels_last image input is followed by a ``<name>/to_nchw`` transpose, since the
        graph's images are NCHW.
        """
        self.tensor = self.g.add_input(name, (None,) + tuple(shape))
        if len(shape) == 3 and self.layout == CHANNELS_LAST:
            self.tensor = self.g.add_node("transpose", [self.tensor], name=f"{name}/to_nchw",
                                          attrs={"perm": (0, 3, 1, 2)}, source=source)
        return self.tensor

    def to_keras_layout(self, tensor: str, name: str, source: Source) -> str:
        """``tensor`` as Keras returns it: a 4-D tensor of a channels_last model gets a
        ``<name>/to_nhwc`` transpose (0, 2, 3, 1), so the model's outputs are NHWC as in Keras."""
        if len(self.g.specs[tensor].shape) == 4 and self.layout == CHANNELS_LAST:
            out = f"{name}/to_nhwc"
            out = out if out not in self.g.specs else self.g.unique_name(out)
            return self.g.add_node("transpose", [tensor], name=out, attrs={"perm": (0, 2, 3, 1)},
                                   source=source)
        return tensor

    def keras_order(self, layer: "Layer") -> str:
        """Make the current tensor hold its elements in Keras' order (a channels_last image as
        NHWC, ``<layer>/to_nhwc``) for a layer that reorders elements; see :meth:`graph_order`."""
        if len(self.shape) == 4 and self.layout == CHANNELS_LAST:
            self.node(layer, "transpose", attrs={"perm": (0, 2, 3, 1)}, suffix="to_nhwc")
        return self.tensor

    def graph_order(self, layer: "Layer") -> str:
        """After :meth:`keras_order`: a 4-D result of a channels_last model back to NCHW."""
        if len(self.shape) == 4 and self.layout == CHANNELS_LAST:
            self.node(layer, "transpose", attrs={"perm": (0, 3, 1, 2)}, suffix="to_nchw")
        return self.tensor

    def node(self, layer: "Layer", op: str, extra_inputs: Sequence[str] = (), attrs=None,
             suffix: str | None = None) -> str:
        """Append ``op`` on the current tensor (and ``extra_inputs``); its output becomes current.

        The node is named after the layer, or ``<layer>/<suffix>`` for a helper node.
        """
        name = layer.name if suffix is None else f"{layer.name}/{suffix}"
        self.tensor = self.g.add_node(op, [self.tensor, *extra_inputs], name=name, attrs=attrs,
                                      source=layer.source)
        return self.tensor

    def graph_axis(self, axis: int, layer: "Layer") -> int:
        """Map a Keras axis of the current tensor to the NCHW graph's axis."""
        rank = len(self.shape)
        if not -rank <= axis < rank:
            raise layer.error(AttrError, f"axis {axis} is out of range for an input of rank {rank} "
                                         f"(shape {shape_str(self.keras_shape())})")
        axis %= rank
        if rank == 4 and self.layout == CHANNELS_LAST:
            return (0, 2, 3, 1)[axis]
        return axis

    def keras_shape(self) -> tuple:
        """The current tensor's shape as Keras sees it (NHWC for a channels_last image)."""
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

    def image_input(self, layer: "Layer", expects: str = "a 4-D input") -> str:
        """Check that the current tensor is a 4-D image; return the layer's data format."""
        if len(self.shape) != 4:
            raise layer.error(ShapeError, f"{type(layer).__name__} expects {expects}, got shape "
                                          f"{shape_str(self.keras_shape())}")
        return self.data_format(layer)

    def weights(self, layer: "Layer", specs: list[tuple[str, tuple, Any]]) -> list[np.ndarray]:
        """Values for ``specs`` = [(variable, keras_shape, initializer)], drawn or given."""
        if layer.initial_weights is not None:
            return _given_weights(layer, specs)
        out = []
        for var, shape, init in specs:
            try:
                fn = get_initializer(init)
            except ValueError as err:
                raise layer.error(AttrError, f"{var} initializer: {err}") from None
            self.budget.take_array("param", f"parameter {layer.name}/{var}", shape)
            fan_in, fan_out = fans(shape)
            try:
                value = fn(tuple(shape), fan_in, fan_out, self.rng)
            except (TypeError, ValueError, OverflowError) as err:  # numpy: minval > maxval, ...
                raise layer.error(AttrError, f"{var} initializer: {err}") from None
            out.append(np.ascontiguousarray(value, dtype=np.float32))
        return out

    def param(self, layer: "Layer", var: str, value: np.ndarray, trainable: bool = True) -> str:
        """Add the parameter ``<layer>/<var>`` (Keras 3's variable path) to the graph."""
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
                                                f"{', '.join(ACTIVATIONS)}; got {activation!r}")
        act = activation.lower()
        name = act if fused else None
        if act == "linear":
            return
        if act in ACTIVATION_OPS:
            op, attrs = ACTIVATION_OPS[act]
            self.node(layer, op, attrs=attrs, suffix=name)
        elif act in ("softmax", "log_softmax"):
            self.node(layer, act, attrs={"axis": self.graph_axis(-1, layer)}, suffix=name)
        else:
            raise layer.error(UnsupportedError, f"unknown activation {activation!r}; graphrt "
                                                f"supports {', '.join(ACTIVATIONS)}")


def _given_weights(layer: "Layer", specs: list[tuple[str, tuple, Any]]) -> list[np.ndarray]:
    """The layer's ``weights=`` checked against ``specs`` (count and Keras-layout shapes)."""
    given = list(layer.initial_weights)
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


__all__ = ["GraphBuilder", "CHANNELS_FIRST", "CHANNELS_LAST", "ACTIVATIONS", "dim_ordering",
           "same_pads", "padding_pads", "known_input_shape"]
