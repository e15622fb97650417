"""The errors graphrt raises for user mistakes.

Every user-facing error is a :class:`GraphrtError`. It carries, where known, the node or layer it is
about, the file and line/column, and says what was expected, so a message reads like::

    ShapeError: node 'fc2' (Linear) in lenet.lua line 12: dense expects 500 input features, got 10
"""
from __future__ import annotations


class GraphrtError(Exception):
    """Base class of every error graphrt raises on bad input."""

    def __init__(self, message: str, *, node: str | None = None, op: str | None = None,
                 file: str | None = None, line: int | None = None, column: int | None = None):
        self.message = message
        self.node = node
        self.op = op
        self.file = file
        self.line = line
        self.column = column
        super().__init__(self._render())

    def _render(self) -> str:
        where = []
        if self.node is not None:
            where.append(f"node {self.node!r}" + (f" ({self.op})" if self.op else ""))
        if self.file is not None:
            loc = str(self.file)
            if self.line is not None:
                loc += f" line {self.line}"
                if self.column is not None:
                    loc += f" column {self.column}"
            where.append(loc)
        elif self.line is not None:
            where.append(f"line {self.line}")
        return (" in ".join(where) + ": " if where else "") + self.message

    def locate(self, *, node: str | None = None, op: str | None = None,
               file: str | None = None, line: int | None = None) -> "GraphrtError":
        """Fill in location fields that are still unknown and re-render the message."""
        self.node = self.node if self.node is not None else node
        self.op = self.op if self.op is not None else op
        self.file = self.file if self.file is not None else file
        self.line = self.line if self.line is not None else line
        self.args = (self._render(),)
        return self


class ShapeError(GraphrtError):
    """A tensor's shape or dtype is not what an op needs."""


class AttrError(GraphrtError):
    """An op attribute is missing, unknown or out of range."""


class GraphError(GraphrtError):
    """The graph's structure is wrong: a cycle, a dangling input, a duplicate name, wrong arity."""


class UnsupportedError(GraphrtError):
    """A layer type, op or feature graphrt does not implement."""


class ParseError(GraphrtError):
    """A model file is malformed: syntax error, truncated, wrong magic number."""


class WeightError(GraphrtError):
    """A parameter is missing, or has the wrong shape or dtype."""


class InputError(GraphrtError):
    """A batch fed to a graph or executable has the wrong name, shape or dtype."""


class LimitError(GraphrtError):
    """A model file asks for more than a resource limit of :mod:`graphrt.limits` allows; the
    message names the limit and how to raise it."""


class OutOfMemoryError(GraphrtError):
    """What a load or a memory plan needs does not fit the memory the process (or the device) may
    still use; the message gives both numbers."""


class FallbackWarning(UserWarning):
    """Some nodes run on the host because the device cannot run them (named in the message, each
    with its reason); explicit copy nodes move their tensors every step."""


class MissingWeightsWarning(UserWarning):
    """A model was loaded from a definition without weights: it runs on initial values."""


__all__ = ["FallbackWarning", "MissingWeightsWarning", "GraphrtError", "ShapeError", "AttrError",
           "GraphError", "UnsupportedError", "ParseError", "WeightError", "InputError", "LimitError",
           "OutOfMemoryError"]
