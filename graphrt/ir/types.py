"""The IR's value types: :class:`TensorSpec` (shape with a symbolic batch, dtype) and :class:`Source`
(where a node came from), and the helpers shape inference shares."""
from __future__ import annotations

import dataclasses
import math
import types
from typing import Any, Mapping

import numpy as np

from .errors import ShapeError

BATCH = None  # the symbolic batch dimension in a TensorSpec shape

_DTYPE_NAMES: dict = {}  # what TensorSpec was given as dtype -> str(np.dtype(it)) (a hot path)


def _dtype_name(dtype) -> str:
    try:
        return _DTYPE_NAMES[dtype]
    except (KeyError, TypeError):  # TypeError: unhashable, computed every time
        name = str(np.dtype(dtype))
        if isinstance(dtype, (str, type, np.dtype)) and len(_DTYPE_NAMES) < 1024:
            _DTYPE_NAMES[dtype] = name
        return name


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """Shape and dtype of a tensor; ``shape[0] is None`` marks the batch dimension."""

    shape: tuple
    dtype: str = "float32"

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(None if d is None else int(d) for d in self.shape))
        object.__setattr__(self, "dtype", _dtype_name(self.dtype))

    @property
    def batched(self) -> bool:
        return len(self.shape) > 0 and self.shape[0] is None

    def concrete(self, batch: int) -> tuple:
        """The shape with the batch dimension replaced by ``batch``."""
        return tuple(batch if d is None else d for d in self.shape)

    def nbytes(self, batch: int = 1) -> int:
        """Exact bytes at ``batch`` (Python integers: a huge shape never wraps to a small size)."""
        return math.prod(self.concrete(batch)) * np.dtype(self.dtype).itemsize

    def __str__(self) -> str:
        return "(" + ", ".join("N" if d is None else str(d) for d in self.shape) + ")"


@dataclasses.dataclass(frozen=True)
class Source:
    """Where a node came from: the source layer's name and type, file and line."""

    layer: str | None = None
    type: str | None = None
    file: str | None = None
    line: int | None = None


def freeze(value: Any) -> Any:
    """Attribute values are immutable: lists become tuples, dicts mapping proxies."""
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    if isinstance(value, Mapping):
        return types.MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, np.generic):
        return value.item()
    return value


def spec_error(node, message: str) -> ShapeError:
    """A ShapeError located at ``node`` (used by shape inference); ``node`` is a :class:`~graphrt.ir.graph.Node` or None."""
    if node is None:
        return ShapeError(message)
    return ShapeError(message, node=node.name, op=node.source.type or node.op,
                      file=node.source.file, line=node.source.line)
