"""Where a converted symbol's parameter values come from: the given params, or an initializer.

``params`` is None, a dict name -> array, or a ``.params`` path or bytes (read by :mod:`.io`); the
``arg:``/``aux:`` prefixes MXNet saves are stripped. A parameter found there is checked against the
shape conversion inferred for it (floating point, exact shape) and stored as float32. One absent
from it is a WeightError when params were given (unless ``allow_missing``); otherwise it is drawn
from the variable's own ``__init__`` attribute or the converter's initializer (``Xavier()``),
from one Generator seeded once, in conversion order.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np

from ...ir.errors import GraphrtError, ShapeError, WeightError
from ...ir.limits import Budget
from .initializers import Initializer, Xavier, initializer_from_attr
from .io import SymbolNode, read_params


def canonical_params(params: Any, file: str | None) -> tuple[dict[str, np.ndarray], str | None]:
    """``params`` as a dict without ``arg:``/``aux:`` prefixes, and the file it came from."""
    if params is None:
        return {}, None
    if isinstance(params, (str, os.PathLike, bytes, bytearray, memoryview)):
        pfile = None if isinstance(params, (bytes, bytearray, memoryview)) else str(params)
        params = read_params(params, file=pfile)
    else:
        pfile = None
    if not isinstance(params, Mapping):
        raise WeightError(f"params must be a dict, a .params path or bytes, got "
                          f"{type(params).__name__}", file=file)
    out = {}
    for key, value in params.items():
        key = str(key)
        for prefix in ("arg:", "aux:"):
            if key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out, pfile


class ParamSource:
    """The values of a symbol's parameters: loaded from ``params``, or initialized (seeded)."""

    def __init__(self, params: Any, *, file: str | None, seed: int,
                 initializer: Initializer | None, allow_missing: bool):
        self.params, self.params_file = canonical_params(params, file)
        self.have_params = params is not None
        self.rng = np.random.default_rng(seed)
        self.initializer = initializer or Xavier()
        self.allow_missing = allow_missing
        self.budget = Budget()  # initializers allocate from inferred shapes: checked first

    def value(self, var: SymbolNode, kind: str, shape: tuple, where: dict) -> np.ndarray:
        """The float32 value of variable ``var``, the ``kind`` input of node ``where["node"]``.

        ``where`` (node, op, file, line of the node reading it) locates the errors.
        """
        pname = var.name
        if pname in self.params:
            return self._loaded(pname, shape, where)
        if self.have_params and not self.allow_missing:
            raise WeightError(f"parameter {pname!r} ({kind} of node {where['node']!r}, shape "
                              f"{shape}) is missing from the params"
                              + (f" file {self.params_file}" if self.params_file else ""), **where)
        if any(d <= 0 for d in shape):
            raise ShapeError(f"parameter {pname!r} would have shape {shape}", **where)
        self.budget.take_array("param", f"parameter {pname!r}", shape, **where)
        init_attr = var.attrs.get("__init__")
        initializer = initializer_from_attr(init_attr, pname) if init_attr else self.initializer
        try:
            return initializer(kind, shape, self.rng)
        except GraphrtError as err:
            raise err.locate(**where)

    def _loaded(self, pname: str, shape: tuple, where: dict) -> np.ndarray:
        try:
            arr = np.asarray(self.params[pname])
        except Exception:  # noqa: BLE001 - any array-like conversion failure
            raise WeightError(f"parameter {pname!r} is not an array", **where) from None
        if arr.dtype.kind != "f":
            raise WeightError(f"parameter {pname!r} has dtype {arr.dtype}, expected floating point",
                              **where)
        if tuple(arr.shape) != shape:
            raise WeightError(f"parameter {pname!r} of node {where['node']!r} has shape "
                              f"{tuple(arr.shape)}, expected {shape}", **where)
        return np.array(arr, dtype=np.float32)
