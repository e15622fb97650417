"""The IR: the dataflow :class:`Graph` every frontend produces and every pass rewrites.

Owns :class:`Graph` (a ``networkx.DiGraph`` of frozen :class:`Node` s with a producer and consumer
list per tensor), :class:`TensorSpec` and :class:`Source` (``types``), :func:`verify`, the op table
the graph consults (``opset``; the ops themselves live in :mod:`graphrt.ops`, which fills it),
every user-facing error (``errors``) and the resource limits every stage checks (``limits``,
public as ``graphrt.limits``). Imports nothing of graphrt: every other stage builds on it.
"""
from .errors import (AttrError, GraphError, GraphrtError, InputError, LimitError,  # noqa: F401
                     OutOfMemoryError, ParseError, ShapeError, UnsupportedError, WeightError)
from .graph import Graph, Node, ParamInfo  # noqa: F401
from .types import BATCH, Source, TensorSpec, freeze, spec_error  # noqa: F401
from .verify import verify  # noqa: F401
