"""`OpDef`: everything graphrt knows about one op, declared in one place.

Each op family module (``conv.py``, ``pool.py``, ...) registers its ops with :func:`register`. An
``OpDef`` holds the attribute schema, shape/dtype inference, the numpy reference forward (writing
into preallocated outputs), the cost model, the fusion pattern class (as TVM's FuseOps names them),
which input the output may overwrite, and the slot for the backward (VJP) rule.
"""
from __future__ import annotations

import dataclasses
import enum
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..ir import opset
from ..ir.errors import AttrError
from ..ir.types import spec_error

REQUIRED = object()


class OpPattern(enum.Enum):
    """Fusion pattern class of an op (TVM's FuseOps vocabulary)."""

    ELEMWISE = 0
    BROADCAST = 1
    INJECTIVE = 2
    REDUCTION = 3
    OUT_ELEMWISE_FUSABLE = 4
    OPAQUE = 8


@dataclasses.dataclass(frozen=True)
class Attr:
    """One attribute: a converter (raises ValueError/TypeError on bad values) and a default."""

    convert: Callable[[Any], Any]
    default: Any = REQUIRED
    doc: str = ""


# ---- attribute converters ---------------------------------------------------------------------
def to_int(v) -> int:
    if isinstance(v, bool) or not float(v).is_integer():
        raise ValueError(f"expected an integer, got {v!r}")
    return int(v)


def to_float(v) -> float:
    if isinstance(v, bool):
        raise ValueError(f"expected a number, got {v!r}")
    return float(v)


def to_bool(v) -> bool:
    if isinstance(v, (bool, np.bool_)) or v in (0, 1):
        return bool(v)
    raise ValueError(f"expected a boolean, got {v!r}")


def to_str(v) -> str:
    if not isinstance(v, str):
        raise ValueError(f"expected a string, got {v!r}")
    return v


def positive(conv):
    def check(v):
        v = conv(v)
        if (v if not isinstance(v, tuple) else min(v, default=1)) <= 0:
            raise ValueError(f"expected a positive value, got {v!r}")
        return v
    return check


def nonnegative(conv):
    def check(v):
        v = conv(v)
        if (v if not isinstance(v, tuple) else min(v, default=0)) < 0:
            raise ValueError(f"expected a value >= 0, got {v!r}")
        return v
    return check


def pair(v) -> tuple:
    """An int or a sequence of two ints -> (h, w)."""
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return (int(v), int(v))
    v = tuple(to_int(x) for x in v)
    if len(v) != 2:
        raise ValueError(f"expected one or two integers, got {v!r}")
    return v


def pads4(v) -> tuple:
    """Padding as (top, bottom, left, right); an int or (pad_h, pad_w) pads symmetrically."""
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return (int(v),) * 4
    v = tuple(to_int(x) for x in v)
    if len(v) == 2:
        return (v[0], v[0], v[1], v[1])
    if len(v) != 4:
        raise ValueError(f"expected 1, 2 or 4 integers (top, bottom, left, right), got {v!r}")
    return v


def ints(v) -> tuple:
    return tuple(to_int(x) for x in v)


def floats(v) -> tuple:
    return tuple(to_float(x) for x in v)


def choice(*options):
    def check(v):
        if v not in options:
            raise ValueError(f"expected one of {options}, got {v!r}")
        return v
    return check


# ---- the op definition ------------------------------------------------------------------------
def _no_cost(attrs, ins, outs, batch):
    return 0, sum(s.nbytes(batch) for s in list(ins) + list(outs))


@dataclasses.dataclass(frozen=True)
class OpDef:
    """The complete description of one op.

    ``infer(attrs, in_specs, node) -> [TensorSpec]`` raises ShapeError via ``spec_error(node, ...)``;
    ``forward(attrs, inputs, outputs)`` computes with numpy into the preallocated ``outputs``;
    ``cost(attrs, in_specs, out_specs, batch) -> (flops, bytes)``;
    ``inplace``: index of the input whose buffer the output may reuse, or None;
    ``writes``: indices of inputs the op updates in place — state such as running statistics or
    parameters under an optimizer; such an op has a side effect and is never removed as dead code;
    ``backward``: the VJP rule ``backward(ctx, node, dys) -> [dx or None per input]`` (see
    :mod:`graphrt.training.autodiff`): ``dys`` are the gradient tensors of the node's outputs (None where no
    gradient flows); it adds the nodes computing the input gradients through ``ctx``;
    ``check_feed(attrs, in_specs, i, value)``: checks a value the user feeds (a graph input) to
    input ``i`` and raises InputError if the op would refuse it (labels out of range). The
    scheduler runs it on every batch *before* the step, so that a step is never refused half-way,
    after ops that update state (batch-norm statistics, parameters) have run.
    """

    name: str
    family: str
    arity: tuple  # (min, max) number of inputs, max None for variadic
    attrs: Mapping[str, Attr]
    infer: Callable
    forward: Callable
    pattern: OpPattern
    cost: Callable = _no_cost
    inplace: int | None = None
    outputs: Callable[[Mapping], int] = lambda attrs: 1
    backward: Callable | None = None
    writes: tuple = ()
    check_feed: Callable | None = None
    doc: str = ""

    @property
    def side_effect(self) -> bool:
        return bool(self.writes)

    def normalize_attrs(self, attrs: dict, node: str | None = None) -> dict:
        """Check names, convert values and fill defaults; AttrError names the node."""
        unknown = sorted(set(attrs) - set(self.attrs))
        if unknown:
            raise AttrError(f"{self.name} has no attribute {unknown[0]!r} (known: "
                            f"{', '.join(sorted(self.attrs)) or 'none'})", node=node, op=self.name)
        out = {}
        for key, spec in self.attrs.items():
            if key not in attrs or attrs[key] is None:
                if spec.default is REQUIRED:
                    raise AttrError(f"{self.name} needs attribute {key!r}", node=node, op=self.name)
                out[key] = spec.default
                continue
            try:
                out[key] = spec.convert(attrs[key])
            except (ValueError, TypeError) as err:
                raise AttrError(f"attribute {key!r} of {self.name}: {err}", node=node,
                                op=self.name) from None
        return out

    def num_outputs(self, attrs: Mapping) -> int:
        return self.outputs(attrs)


def register(opdef: OpDef) -> OpDef:
    """Add ``opdef`` to the IR's op table (:mod:`graphrt.ir.opset`)."""
    return opset.register(opdef)


def get_op(name: str) -> OpDef:
    """The ``OpDef`` of op ``name`` (UnsupportedError naming the known ops otherwise)."""
    return opset.lookup(name)


def all_ops() -> dict[str, OpDef]:
    return opset.registered()


def elementwise_cost(flops_per_element: int = 1):
    def cost(attrs, ins, outs, batch):
        n = sum(int(np.prod(s.concrete(batch))) for s in outs)
        return flops_per_element * n, sum(s.nbytes(batch) for s in list(ins) + list(outs))
    return cost


def float_dtype(spec, node, what="input"):
    if not np.issubdtype(np.dtype(spec.dtype), np.floating):
        raise spec_error(node, f"{what} must be floating point, got {spec.dtype}")
    return spec.dtype


def describe_shapes(specs: Sequence) -> str:
    return ", ".join(str(s) for s in specs)
