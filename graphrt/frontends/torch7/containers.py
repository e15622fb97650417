"""The Torch7-like containers: ``Sequential``, ``Concat``, ``DepthConcat``.

A container gives each child its index path (``<path>.<i>``, 1-based as Torch prints it) and
combines the children's outputs.
"""
from __future__ import annotations

from ...ir.errors import AttrError, GraphError, ShapeError, UnsupportedError
from ..initializers import caller_location, shape_str
from .module import Module


class Container(Module):
    """Base of the modules that hold modules; ``add`` returns the container, ``get`` is 1-based."""

    root_path = ""  # the container's children are 1, 2, ...

    def __init__(self):
        super().__init__()
        self.modules: list[Module] = []

    def add(self, module: Module) -> "Container":
        """Append ``module``; returns the container, as Lua's ``net:add(m)`` returns ``net``."""
        if not isinstance(module, Module):
            file, line = caller_location()
            raise UnsupportedError(f"{self.type_name}.add expects an nn module, got "
                                   f"{type(module).__name__}", op=self.type_name, file=file, line=line)
        self.modules.append(module)
        return self

    def get(self, index: int) -> Module:
        """The ``index``-th module, 1-based as in Lua."""
        return self.modules[index - 1]

    def size(self) -> int:
        """The number of modules (Lua's ``#``)."""
        return len(self.modules)

    def __len__(self) -> int:
        return len(self.modules)

    def _child_path(self, path: str, i: int) -> str:
        return f"{path}.{i}" if path else str(i)

    def __repr__(self) -> str:
        lines = [f"nn.{self.type_name}" + (f"({self._repr_args()})" if self._repr_args() else "")
                 + " {"]
        for i, m in enumerate(self.modules, 1):
            sub = repr(m).replace("\n", "\n  ")
            lines.append(f"  ({i}): {sub}")
        lines.append("}")
        return "\n".join(lines)


class Sequential(Container):
    """Runs its modules one after another."""

    def add_nodes(self, b, x, path):
        for i, m in enumerate(self.modules, 1):
            x = m.add_nodes(b, x, self._child_path(path, i))
        return x


class Concat(Container):
    """Feeds the input to every branch and concatenates the outputs along ``dim`` (1-based,
    counting the batch: ``Concat(2)`` = channels)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def _repr_args(self):
        return str(self.dim)

    def _axis(self, b, outs, path) -> int:
        """The graph axis of ``dim`` (1-based, counting the batch), checked against the outputs."""
        if not self.modules:
            raise self.error(GraphError, path, f"{self.type_name}({self.dim}) has no branches")
        rank = len(b.shape(outs[0]))
        try:
            dim = int(self.dim)
        except (TypeError, ValueError):
            raise self.error(AttrError, path, f"{self.type_name} dimension must be an integer, got "
                                              f"{self.dim!r}") from None
        if dim == 1:
            raise self.error(UnsupportedError, path,
                             f"{self.type_name}(1) would concatenate along the batch dimension; "
                             "graphrt graphs are batched, so Torch's channel dimension is 2: use "
                             f"{self.type_name}(2)")
        if not 2 <= dim <= rank:
            raise self.error(ShapeError, path, f"{self.type_name}({self.dim}) is out of range for "
                                               f"branch outputs of rank {rank} "
                                               f"{shape_str(b.shape(outs[0]))}")
        return dim - 1

    def _branches(self, b, x, path) -> list[str]:
        """Every branch applied to ``x``: their output tensors."""
        return [m.add_nodes(b, x, self._child_path(path, i)) for i, m in enumerate(self.modules, 1)]

    def add_nodes(self, b, x, path):
        outs = self._branches(b, x, path)
        axis = self._axis(b, outs, path)
        first = b.shape(outs[0])
        for i, t in enumerate(outs[1:], 2):
            s = b.shape(t)
            if len(s) != len(first) or any(a != c for d, (a, c) in enumerate(zip(s, first))
                                           if d != axis):
                raise self.error(ShapeError, path,
                                 f"Concat({self.dim}): branch {i} outputs {shape_str(s)} but branch "
                                 f"1 outputs {shape_str(first)}; they must match in every "
                                 f"dimension except {self.dim} (DepthConcat pads spatial sizes)")
        return b.node(self, path, "concat", outs, attrs={"axis": axis})


class DepthConcat(Concat):
    """Concat that zero-pads smaller spatial maps to the largest, centred as Torch does."""

    def add_nodes(self, b, x, path):
        outs = self._branches(b, x, path)
        axis = self._axis(b, outs, path)
        shapes = [b.shape(t) for t in outs]
        rank = len(shapes[0])
        for i, s in enumerate(shapes[1:], 2):
            if len(s) != rank:
                raise self.error(ShapeError, path, f"DepthConcat({self.dim}): branch {i} outputs "
                                                   f"{shape_str(s)}, branch 1 {shape_str(shapes[0])}")
        target = [max(s[d] for s in shapes) if d not in (0, axis) else None for d in range(rank)]
        padded = []
        for i, (t, s) in enumerate(zip(outs, shapes), 1):
            diff = [d for d in range(1, rank) if d != axis and s[d] != target[d]]
            if any(d < rank - 2 for d in diff) or (diff and rank < 3):
                raise self.error(ShapeError, path,
                                 f"DepthConcat({self.dim}): branch {i} outputs {shape_str(s)}, which "
                                 f"differs from {shape_str(target)} outside the two spatial "
                                 "dimensions it can pad")
            if diff:
                dh, dw = target[-2] - s[-2], target[-1] - s[-1]
                pads = (dh // 2, dh - dh // 2, dw // 2, dw - dw // 2)
                t = b.node(self, path, "zero_pad", [t], attrs={"pads": pads}, suffix=f"pad{i}")
            padded.append(t)
        return b.node(self, path, "concat", padded, attrs={"axis": axis})


__all__ = ["Container", "Sequential", "Concat", "DepthConcat"]
