"""The MXNet op table: :class:`OpSpec` (an op's input slots, attributes, parameter roles, auxiliary
states, outputs and converter), the ``@_op`` decorator that fills :data:`OPS`, the name aliases,
and the lookups the symbol API and the converter share. The converters themselves are in
:mod:`.ops` and :mod:`.ops_more`.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Mapping


REQUIRED = object()  # the default of an attribute the node must have


@dataclasses.dataclass(frozen=True)
class OpSpec:
    """What graphrt knows about one MXNet op: its input slots, attributes and converter.

    ``args`` are the input names in order (``None`` for variadic ops); ``roles`` maps an input name to
    the parameter kind it holds (``"weight"``, ``"bias"``, ...), ``"label"``, or is absent for data.
    ``outputs(attrs)`` is the number of outputs MXNet 1.9 (oneDNN build) gives the node, hidden ones
    included (it only matters for ``node_row_ptr`` in the JSON); ``aux`` lists auxiliary states.
    """

    name: str
    args: tuple | None
    attrs: frozenset
    convert: Callable
    roles: Mapping = dataclasses.field(default_factory=dict)
    aux: tuple = ()
    outputs: Callable[[Mapping], int] = lambda attrs: 1

    def arg_names(self, attrs: Mapping[str, str]) -> tuple:
        """The inputs a node with these (string) attributes takes, as MXNet's ListArguments."""
        args = self.args or ()
        if "bias" in args and _truthy(attrs.get("no_bias")):
            args = tuple(a for a in args if a != "bias")
        if self.name == "LeakyReLU" and attrs.get("act_type", "leaky").strip() != "prelu":
            args = ("data",)
        if self.name == "softmax" and not _truthy(attrs.get("use_length")):
            args = ("data",)
        return args


def _truthy(text: str | None) -> bool:
    return text is not None and text.strip().lower() in ("true", "1")


OPS: dict[str, OpSpec] = {}
ALIASES = {"flatten": "Flatten", "concat": "Concat", "reshape": "Reshape", "_plus": "elemwise_add",
           "_Plus": "elemwise_add", "_add": "elemwise_add", "_minus": "elemwise_sub",
           "_sub": "elemwise_sub", "_Minus": "elemwise_sub", "_mul": "elemwise_mul",
           "_Mul": "elemwise_mul", "_PlusScalar": "_plus_scalar", "_MinusScalar": "_minus_scalar",
           "_RMinusScalar": "_rminus_scalar", "_MulScalar": "_mul_scalar",
           "_DivScalar": "_div_scalar"}


def _op(name, args, attrs, roles=None, aux=(), outputs=None):
    """Register the decorated converter as op ``name`` (``attrs``: space-separated names)."""
    def deco(fn):
        OPS[name] = OpSpec(name, args, frozenset(attrs.split()), fn, dict(roles or {}), aux,
                           outputs or (lambda attrs: 1))
        return fn
    return deco


def op_spec(op: str) -> OpSpec | None:
    """The spec of ``op`` (aliases such as ``_Plus`` resolved), or None when unsupported."""
    return OPS.get(ALIASES.get(op, op))


def aux_flags(op: str, attrs: Mapping[str, str], count: int) -> list[bool]:
    """Whether each of the ``count`` inputs of an ``op`` node is an auxiliary state."""
    spec = op_spec(op)
    args = spec.arg_names(attrs) if spec is not None else ()
    return [i < len(args) and args[i] in spec.aux for i in range(count)]


__all__ = ["REQUIRED", "OpSpec", "OPS", "ALIASES", "_op", "op_spec", "aux_flags"]
