"""graphrt: run the model definitions people already have as one optimized dataflow graph.

Frontends turn a definition (Keras ``Sequential``, Torch7 ``nn`` containers, Caffe prototxt, MXNet
symbols, ONNX files) into a :class:`Graph`; :func:`run_reference` runs any graph with numpy;
:func:`compile` optimizes, plans and places it on a device::

    import graphrt
    from graphrt.frontends import keras
    model = keras.Sequential()
    model.add(keras.Dense(10, input_dim=20))
    y = graphrt.run_reference(model.to_graph(), x)

The package is laid out as the pipeline (see ``docs/architecture.md``): ``ir`` <- ``ops`` <-
``frontends``, ``passes``, ``memory`` <- ``scheduler`` (over the ``devices`` protocol) <-
``training``, ``testing``, ``viz``, ``cli``. Every user-facing error is a :class:`GraphrtError`
subclass; what a model file may make graphrt allocate is bounded by :mod:`graphrt.limits`.
``graphrt.testing`` is imported on first use (it needs hypothesis only when a strategy is
built).
"""
import importlib
import sys

from . import ops  # noqa: F401  (registers graphrt's op set in the IR's op table)
from .frontends import load  # noqa: F401
from .frontends.onnx import export_onnx, from_torch  # noqa: F401
from .ir import Graph, Node, Source, TensorSpec  # noqa: F401
from .ir import limits  # noqa: F401  (graphrt.limits: the one public place for resource limits)
from .ir.errors import (AttrError, FallbackWarning, GraphError, GraphrtError, InputError,  # noqa: F401
                        LimitError, MissingWeightsWarning, OutOfMemoryError, ParseError, ShapeError,
                        UnsupportedError, WeightError)
from .ops.reference import run_reference  # noqa: F401
from .scheduler import Executable, NumericsError, compile  # noqa: F401,A001
from .training import optim  # noqa: F401
from .training.trainer import Trainer  # noqa: F401

sys.modules[__name__ + ".limits"] = limits  # ``import graphrt.limits``: the same module object

__version__ = "0.1.0"

_LAZY = {"testing": "graphrt.testing", "distributed": "graphrt.distributed",
         "data": "graphrt.data"}  # loaded on first use


def __getattr__(name: str):
    """``graphrt.testing`` (and hypothesis), ``graphrt.distributed`` (and torch) and ``graphrt.data``
    (and the Caffe frontend) are imported on first use, not with ``import graphrt``."""
    if name in _LAZY:
        return importlib.import_module(_LAZY[name])
    raise AttributeError(f"module 'graphrt' has no attribute {name!r}")
