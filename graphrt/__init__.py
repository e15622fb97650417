"""graphrt: run the model definitions people already have as one optimized dataflow graph.

Frontends turn a definition (Keras ``Sequential``, Torch7 ``nn`` containers, Caffe prototxt, MXNet
symbols) into a :class:`Graph`; :func:`run_reference` runs any graph with numpy::

    import graphrt
    from graphrt.frontends import keras
    model = keras.Sequential()
    model.add(keras.Dense(10, input_dim=20))
    y = graphrt.run_reference(model.to_graph(), x)

Every user-facing error is a :class:`GraphrtError` subclass.
"""
from .errors import (AttrError, GraphError, GraphrtError, InputError, ParseError,  # noqa: F401
                     ShapeError, UnsupportedError, WeightError)
from .graph import Graph, Node, Source, TensorSpec  # noqa: F401
from .reference import run_reference  # noqa: F401
from .loading import load  # noqa: F401
from .scheduler import Executable, NumericsError, OutOfMemoryError, compile  # noqa: F401,A001
from . import ops, optim  # noqa: F401
from .trainer import Trainer  # noqa: F401
from .export_onnx import export_onnx  # noqa: F401
from .torch_import import from_torch  # noqa: F401

__version__ = "0.1.0"
