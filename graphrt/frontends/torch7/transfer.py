"""The Torch7-like transfer functions (activations), each one node on its input.

``ReLU``, ``LeakyReLU``, ``Tanh``, ``Sigmoid``, ``SoftMax``, ``LogSoftMax``: the "Transfer function
layers" of Torch's ``nn`` documentation.
"""
from __future__ import annotations

from .module import ElementwiseModule


class ReLU(ElementwiseModule):
    """``ReLU(ip=False)``; in-place is a runtime detail and ignored."""

    op = "relu"

    def __init__(self, ip=False):
        super().__init__()


class LeakyReLU(ElementwiseModule):
    """``LeakyReLU(negval=0.01, ip=False)``."""

    op = "relu"

    def __init__(self, negval=0.01, ip=False):
        super().__init__()
        self.negval = 0.01 if negval is None else float(negval)

    def _attrs(self):
        return {"negative_slope": self.negval}


class Tanh(ElementwiseModule):
    """``Tanh()``."""

    op = "tanh"


class Sigmoid(ElementwiseModule):
    """``Sigmoid()``."""

    op = "sigmoid"


class SoftMax(ElementwiseModule):
    """Softmax over the features (Torch's dimension 2 in batch mode, graph axis 1)."""

    op = "softmax"

    def _attrs(self):
        return {"axis": 1}


class LogSoftMax(SoftMax):
    """Log-softmax over the features (graph axis 1)."""

    op = "log_softmax"


__all__ = ["ReLU", "LeakyReLU", "Tanh", "Sigmoid", "SoftMax", "LogSoftMax"]
