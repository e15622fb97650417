"""The Torch7-like image modules: convolution, pooling, padding, normalization over NCHW.

Argument orders are Torch's: widths before heights (``kW, kH, dW, dH, padW, padH``).
"""
from __future__ import annotations

from ...ir.errors import AttrError, ShapeError
from ..initializers import shape_str
from .module import Module
from .simple import BatchNormalization

_IMAGE = "a 4-D (batch, planes, height, width) input"


class SpatialConvolution(Module):
    """``SpatialConvolution(nInputPlane, nOutputPlane, kW, kH, dW=1, dH=1, padW=0, padH=padW)``."""

    def __init__(self, nInputPlane, nOutputPlane, kW, kH, dW=1, dH=1, padW=0, padH=None):
        super().__init__()
        self.nInputPlane, self.nOutputPlane = int(nInputPlane), int(nOutputPlane)
        self.kW, self.kH, self.dW, self.dH = int(kW), int(kH), int(dW), int(dH)
        self.padW = int(padW or 0)
        self.padH = self.padW if padH is None else int(padH)
        self.bias = True

    def noBias(self) -> "SpatialConvolution":
        """Drop the bias parameter; returns the module."""
        self.bias = False
        return self

    def _repr_args(self):
        s = f"{self.nInputPlane} -> {self.nOutputPlane}, {self.kW}x{self.kH}"
        if (self.dW, self.dH) != (1, 1) or self.padW or self.padH:
            s += f", {self.dW},{self.dH}"
        if self.padW or self.padH:
            s += f", {self.padW},{self.padH}"
        return s

    def add_nodes(self, b, x, path):
        s = b.require_rank(self, path, x, 4, _IMAGE)
        if s[1] != self.nInputPlane:
            raise self.error(ShapeError, path, f"{self!r} expects {self.nInputPlane} input planes, "
                                               f"got {s[1]} (input shape {shape_str(s)})")
        params = b.weight_and_bias(path, (self.nOutputPlane, self.nInputPlane, self.kH, self.kW),
                                   self.nInputPlane * self.kH * self.kW, self.bias)
        return b.node(self, path, "conv2d", [x, *params], attrs={
            "stride": (self.dH, self.dW), "pads": (self.padH, self.padH, self.padW, self.padW)})


class SpatialConvolutionMM(SpatialConvolution):
    """Same as SpatialConvolution (Torch's im2col implementation of it)."""


class _SpatialPooling(Module):
    """Base of the spatial poolings: ``op`` over kH x kW windows, floor mode unless ``.ceil()``."""

    op = "max_pool"

    def __init__(self, kW, kH, dW=None, dH=None, padW=0, padH=0):
        super().__init__()
        self.kW, self.kH = int(kW), int(kH)
        self.dW = int(kW if dW is None else dW)
        self.dH = int(kH if dH is None else dH)
        self.padW, self.padH = int(padW or 0), int(padH or 0)
        self.ceil_mode = False

    def ceil(self):
        """Round the output size up (Torch's ``:ceil()``); returns the module."""
        self.ceil_mode = True
        return self

    def floor(self):
        """Round the output size down, the default (``:floor()``); returns the module."""
        self.ceil_mode = False
        return self

    def _repr_args(self):
        s = f"{self.kW}x{self.kH}, {self.dW},{self.dH}"
        if self.padW or self.padH:
            s += f", {self.padW},{self.padH}"
        return s

    def _attrs(self) -> dict:
        return {"kernel": (self.kH, self.kW), "stride": (self.dH, self.dW),
                "pads": (self.padH, self.padH, self.padW, self.padW), "ceil_mode": self.ceil_mode}

    def add_nodes(self, b, x, path):
        b.require_rank(self, path, x, 4, _IMAGE)
        if self.padW > self.kW // 2 or self.padH > self.kH // 2:
            raise self.error(AttrError, path, f"{self!r}: padding should be at most half the kernel")
        return b.node(self, path, self.op, [x], attrs=self._attrs())


class SpatialMaxPooling(_SpatialPooling):
    """``SpatialMaxPooling(kW, kH, dW=kW, dH=kH, padW=0, padH=0)``; ``.ceil()`` / ``.floor()``."""

    op = "max_pool"


class SpatialAveragePooling(_SpatialPooling):
    """``SpatialAveragePooling(kW, kH, dW=1, dH=1, padW=0, padH=0)``; padding counts in the
    average unless ``.setCountExcludePad()``."""

    op = "avg_pool"

    def __init__(self, kW, kH, dW=1, dH=1, padW=0, padH=0):
        super().__init__(kW, kH, 1 if dW is None else dW, 1 if dH is None else dH, padW, padH)
        self.count_include_pad = True

    def setCountIncludePad(self):
        """Count padded positions in the average (Torch's default); returns the module."""
        self.count_include_pad = True
        return self

    def setCountExcludePad(self):
        """Leave padded positions out of the average; returns the module."""
        self.count_include_pad = False
        return self

    def _attrs(self):
        return {**super()._attrs(), "count_include_pad": self.count_include_pad}


class SpatialBatchNormalization(BatchNormalization):
    """``SpatialBatchNormalization(nOutput, eps=1e-5, momentum=0.1, affine=True)`` on NCHW."""

    rank = 4
    what = _IMAGE


class SpatialCrossMapLRN(Module):
    """``SpatialCrossMapLRN(size, alpha=1e-4, beta=0.75, k=1)``."""

    def __init__(self, size, alpha=1e-4, beta=0.75, k=1.0):
        super().__init__()
        self.size, self.alpha, self.beta, self.k = int(size), float(alpha), float(beta), float(k)

    def add_nodes(self, b, x, path):
        b.require_rank(self, path, x, 4, _IMAGE)
        return b.node(self, path, "lrn", [x], attrs={"size": self.size, "alpha": self.alpha,
                                                      "beta": self.beta, "k": self.k})


class SpatialZeroPadding(Module):
    """``SpatialZeroPadding(padLeft, padRight=padLeft, padTop=padLeft, padBottom=padLeft)``;
    negative values crop."""

    def __init__(self, pad_l, pad_r=None, pad_t=None, pad_b=None):
        super().__init__()
        self.pad_l = int(pad_l)
        self.pad_r = self.pad_l if pad_r is None else int(pad_r)
        self.pad_t = self.pad_l if pad_t is None else int(pad_t)
        self.pad_b = self.pad_l if pad_b is None else int(pad_b)

    def _repr_args(self):
        return f"l={self.pad_l}, r={self.pad_r}, t={self.pad_t}, b={self.pad_b}"

    def add_nodes(self, b, x, path):
        s = b.shape(x)
        if len(s) < 3:
            raise self.error(ShapeError, path, f"{self!r} expects a (batch, ..., height, width) "
                                               f"input, got shape {shape_str(s)}")
        return b.node(self, path, "zero_pad", [x],
                      attrs={"pads": (self.pad_t, self.pad_b, self.pad_l, self.pad_r)})


__all__ = ["SpatialConvolution", "SpatialConvolutionMM", "SpatialMaxPooling",
           "SpatialAveragePooling", "SpatialBatchNormalization", "SpatialCrossMapLRN",
           "SpatialZeroPadding"]
