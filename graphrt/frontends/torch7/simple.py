"""The Torch7-like simple modules: Linear, BatchNormalization, Dropout, constants, views.

The grouping follows Torch's ``nn`` documentation ("Simple layers"); the activations are in
:mod:`graphrt.frontends.torch7.transfer`, the image modules in
:mod:`graphrt.frontends.torch7.convolution`.
"""
from __future__ import annotations

import numpy as np

from ...ir.errors import AttrError, ShapeError, UnsupportedError
from ..initializers import shape_str
from .module import ElementwiseModule, Module


class BatchNormalization(Module):
    """``BatchNormalization(nOutput, eps=1e-5, momentum=0.1, affine=True)`` on (batch, n)."""

    rank = 2
    what = "a 2-D (batch, features) input"

    def __init__(self, nOutput, eps=1e-5, momentum=0.1, affine=True):
        super().__init__()
        self.nOutput = int(nOutput)
        self.eps = 1e-5 if eps is None else float(eps)
        self.momentum = 0.1 if momentum is None else float(momentum)
        self.affine = True if affine is None else bool(affine)

    def _repr_args(self):
        return str(self.nOutput)

    def add_nodes(self, b, x, path):
        s = b.require_rank(self, path, x, self.rank, self.what)
        if s[1] != self.nOutput:
            raise self.error(ShapeError, path, f"{self!r} expects {self.nOutput} channels, got {s[1]} "
                                               f"(input shape {shape_str(s)})")
        n = self.nOutput
        inputs = [x]
        if self.affine:
            weight = b.rng.uniform(0.0, 1.0, size=(n,)).astype(np.float32)  # Torch: weight:uniform()
            bias = np.zeros(n, np.float32)
        inputs.append(b.param(path, "running_mean", np.zeros(n, np.float32), trainable=False))
        inputs.append(b.param(path, "running_var", np.ones(n, np.float32), trainable=False))
        if self.affine:
            inputs += [b.param(path, "weight", weight), b.param(path, "bias", bias)]
        return b.node(self, path, "batch_norm", inputs,
                      attrs={"eps": self.eps, "momentum": self.momentum, "unbiased": True})


class Linear(Module):
    """``Linear(inputSize, outputSize, bias=True)``: weight (outputSize, inputSize)."""

    def __init__(self, inputSize, outputSize, bias=True):
        super().__init__()
        self.inputSize, self.outputSize = int(inputSize), int(outputSize)
        self.bias = True if bias is None else bool(bias)

    def noBias(self) -> "Linear":
        """Drop the bias parameter; returns the module."""
        self.bias = False
        return self

    def _repr_args(self):
        return f"{self.inputSize} -> {self.outputSize}" + ("" if self.bias else " without bias")

    def add_nodes(self, b, x, path):
        s = b.shape(x)
        if len(s) != 2:
            raise self.error(ShapeError, path,
                             f"{self!r} expects a 2-D (batch, {self.inputSize}) input, got shape "
                             f"{shape_str(s)}; add nn.View({self.inputSize}).setNumInputDims("
                             f"{len(s) - 1}) (or View(-1)) before it")
        if s[1] != self.inputSize:
            raise self.error(ShapeError, path,
                             f"{self!r} expects {self.inputSize} input features, got {s[1]} "
                             f"(input shape {shape_str(s)})")
        params = b.weight_and_bias(path, (self.outputSize, self.inputSize), self.inputSize,
                                   self.bias)
        return b.node(self, path, "dense", [x, *params])


class Identity(ElementwiseModule):
    """``Identity()``: passes its input on (an ``identity`` node)."""

    op = "identity"


class Dropout(ElementwiseModule):
    """``Dropout(p=0.5)``: the identity at inference; ``p`` kept as the rate."""

    op = "dropout"

    def __init__(self, p=0.5, v1=False, inplace=False):
        super().__init__()
        self.p = 0.5 if p is None else p

    def _repr_args(self):
        return f"{self.p}"

    def add_nodes(self, b, x, path):
        if not isinstance(self.p, (int, float)) or not 0 <= self.p < 1:
            raise self.error(AttrError, path, f"Dropout probability must be in [0, 1), got {self.p!r}")
        return super().add_nodes(b, x, path)

    def _attrs(self):
        return {"rate": float(self.p)}


class _Constant(ElementwiseModule):
    """Base of MulConstant / AddConstant: ``scale`` with one constant."""

    op = "scale"

    def __init__(self, constant_scalar, ip=False):
        super().__init__()
        self.constant_scalar = float(constant_scalar)


class MulConstant(_Constant):
    """``MulConstant(constant_scalar, ip=False)``: y = c * x (``scale`` op)."""

    def _repr_args(self):
        return f"{self.constant_scalar}"

    def _attrs(self):
        return {"scale": self.constant_scalar}


class AddConstant(_Constant):
    """``AddConstant(constant_scalar, ip=False)``: y = x + c (``scale`` op's shift)."""

    def _attrs(self):
        return {"shift": self.constant_scalar}


def _sizes(args) -> tuple:
    """Sizes written as ``View(2, 3)`` or ``View({2, 3})`` (a list) as a tuple of ints."""
    if len(args) == 1 and isinstance(args[0], (list, tuple)):
        args = tuple(args[0])
    return tuple(int(a) for a in args)


class View(Module):
    """``View(sizes...)`` with ``.setNumInputDims(n)``: reshape the per-example dimensions.

    With ``setNumInputDims(n)`` the last ``n`` dimensions are viewed as ``sizes`` and the rest is
    the batch; without it the whole per-example tensor must have exactly ``prod(sizes)`` elements
    (a ``-1`` without ``setNumInputDims`` would fold the batch in, which graphrt refuses).
    """

    def __init__(self, *sizes):
        super().__init__()
        self.sizes = _sizes(sizes)
        self.numInputDims = None

    def setNumInputDims(self, n: int) -> "View":
        """View only the last ``n`` dimensions (the rest is the batch); returns the module."""
        self.numInputDims = int(n)
        return self

    def _repr_args(self):
        return ", ".join(str(s) for s in self.sizes)

    def add_nodes(self, b, x, path):
        s = b.shape(x)
        item = s[1:]
        sizes = self.sizes
        if not sizes or sizes.count(-1) > 1 or any(d == 0 or d < -1 for d in sizes):
            raise self.error(AttrError, path, f"{self!r}: sizes must be positive, with at most one -1")
        n = self.numInputDims
        if n is not None and n != len(item):
            if n > len(item):
                raise self.error(ShapeError, path, f"{self!r}.setNumInputDims({n}) but each example "
                                                   f"has only {len(item)} dimensions "
                                                   f"(input shape {shape_str(s)})")
            raise self.error(UnsupportedError, path,
                             f"{self!r}.setNumInputDims({n}) would fold {len(item) - n} example "
                             f"dimension(s) of input {shape_str(s)} into the batch")
        if n is None and -1 in sizes:
            raise self.error(ShapeError, path,
                             f"{self!r} without setNumInputDims folds the batch into one dimension "
                             f"in Torch (input {shape_str(s)}); write "
                             f"nn.View({self._repr_args()}).setNumInputDims({len(item)})")
        have = int(np.prod(item, dtype=np.int64))
        known = int(np.prod([d for d in sizes if d != -1], dtype=np.int64))
        if (-1 in sizes and have % known) or (-1 not in sizes and have != known):
            raise self.error(ShapeError, path, f"{self!r}: input view {shape_str(s)} ({have} values "
                                               f"per example) and desired view "
                                               f"(N, {self._repr_args()}) do not match")
        if sizes == (-1,) or (len(sizes) == 1 and sizes[0] == have):
            return b.node(self, path, "flatten", [x], attrs={"axis": 1})
        return b.node(self, path, "reshape", [x], attrs={"shape": sizes})


class Reshape(Module):
    """``Reshape(sizes..., batchMode=None)``: (N, ...) -> (N, *sizes) in batch mode."""

    def __init__(self, *sizes):
        super().__init__()
        self.batchMode = None
        if sizes and isinstance(sizes[-1], bool):
            self.batchMode, sizes = sizes[-1], sizes[:-1]
        self.sizes = _sizes(sizes)

    def _repr_args(self):
        return "x".join(str(s) for s in self.sizes)

    def add_nodes(self, b, x, path):
        s = b.shape(x)
        if self.batchMode is False:
            raise self.error(UnsupportedError, path, f"{self!r} with batchMode=false drops the batch "
                                                     "dimension; graphrt graphs are batched")
        have = int(np.prod(s[1:], dtype=np.int64))
        want = int(np.prod(self.sizes, dtype=np.int64)) if self.sizes else 0
        if not self.sizes or any(d <= 0 for d in self.sizes) or have != want:
            raise self.error(ShapeError, path, f"{self!r}: cannot reshape {shape_str(s)} ({have} "
                                               f"values per example) to (N, {self._repr_args()})")
        return b.node(self, path, "reshape", [x], attrs={"shape": self.sizes})


__all__ = ["BatchNormalization", "Linear", "Identity", "Dropout", "MulConstant", "AddConstant",
           "View", "Reshape"]
