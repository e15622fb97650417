"""Keras' merge layers (``Add``, ``Subtract``, ``Average``, ``Multiply``, ``Maximum``,
``Minimum``, ``Concatenate``) and InceptionResNetV2's ``CustomScaleLayer``.

They combine several tensors, so only functional models read by
:mod:`graphrt.frontends.keras.files` use them; the Sequential builder has no use for them.
"""
from __future__ import annotations

import numpy as np

from ...ir.errors import ParseError, UnsupportedError
from .builder import GraphBuilder
from .layer import Layer


class MergeLayer(Layer):
    """Base of the layers that combine several tensors of one shape into one node ``op``."""

    op = "add"
    min_inputs, max_inputs = 2, None

    def coeffs(self, n: int):
        """The ``add`` coefficients for ``n`` inputs (``None``: a plain sum)."""
        return None

    def check_inputs(self, ins: list[str]) -> None:
        """An UnsupportedError unless the config gives an accepted number of inputs."""
        n = len(ins)
        if n < self.min_inputs or (self.max_inputs is not None and n > self.max_inputs):
            want = (f"exactly {self.min_inputs}" if self.max_inputs == self.min_inputs
                    else f"at least {self.min_inputs}")
            raise self.error(UnsupportedError, f"{type(self).__name__} takes {want} inputs, the "
                                               f"config gives {n}")

    def attrs(self, b: GraphBuilder, ins: list[str]) -> dict:
        """The node's attributes (``b.tensor`` is the first input)."""
        coeffs = self.coeffs(len(ins))
        return {} if coeffs is None else {"coeffs": coeffs}

    def merge(self, b: GraphBuilder, ins: list[str]) -> str:
        """Append the node combining the tensors ``ins``; it becomes ``b.tensor``."""
        self.check_inputs(ins)
        b.tensor = ins[0]
        attrs = self.attrs(b, ins)
        b.tensor = b.g.add_node(self.op, ins, name=self.name, attrs=attrs, source=self.source)
        return b.tensor


class Add(MergeLayer):
    """``Add()``: the elementwise sum (``add``)."""

    prefix = "add"


class Subtract(MergeLayer):
    """``Subtract()``: x0 - x1 (``add`` with coeffs (1, -1); ``sub`` when they broadcast)."""

    prefix = "subtract"
    max_inputs = 2

    def coeffs(self, n):
        return (1.0, -1.0)

    def merge(self, b, ins):
        if len(ins) == 2 and b.g.specs[ins[0]].shape != b.g.specs[ins[1]].shape:
            self.check_inputs(ins)
            b.tensor = b.g.add_node("sub", ins, name=self.name, source=self.source)
            return b.tensor
        return super().merge(b, ins)


class Average(MergeLayer):
    """``Average()``: the mean (``add`` with coeffs 1/n)."""

    prefix = "average"

    def coeffs(self, n):
        return (1.0 / n,) * n


class Multiply(MergeLayer):
    """``Multiply()``: the elementwise product (``mul``)."""

    prefix = "multiply"
    op = "mul"


class Maximum(MergeLayer):
    """``Maximum()``: the elementwise maximum (``maximum``)."""

    prefix = "maximum"
    op = "maximum"


class Minimum(MergeLayer):
    """``Minimum()``: the elementwise minimum (``minimum``)."""

    prefix = "minimum"
    op = "minimum"


class CustomScaleLayer(MergeLayer):
    """InceptionResNetV2's ``CustomScaleLayer(scale)`` on [x, y]: x + y * scale (``add`` with
    coeffs (1, scale))."""

    prefix = "custom_scale_layer"
    min_inputs = max_inputs = 2

    def __init__(self, scale=1.0, **kwargs):
        self.scale = float(scale)
        super().__init__(**kwargs)

    def coeffs(self, n):
        return (1.0, self.scale)


class Concatenate(MergeLayer):
    """``Concatenate(axis=-1)``: a Keras axis (mapped into the NCHW graph like ``Softmax``)."""

    prefix = "concatenate"
    op = "concat"
    min_inputs = 1

    def __init__(self, axis=-1, **kwargs):
        self.axis = axis
        super().__init__(**kwargs)

    def attrs(self, b, ins):
        if isinstance(self.axis, bool) or not isinstance(self.axis, (int, np.integer)):
            raise self.error(ParseError, f"Concatenate axis must be an integer, got {self.axis!r}")
        return {"axis": b.graph_axis(int(self.axis), self)}


__all__ = ["MergeLayer", "Add", "Subtract", "Average", "Multiply", "Maximum", "Minimum",
           "CustomScaleLayer", "Concatenate"]
