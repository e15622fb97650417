"""MXNet's parameter initializers (``mx.init``), for parameters the params do not provide.

An initializer is called with the parameter's kind (``"weight"``, ``"bias"``, ``"gamma"``,
``"beta"``, ``"moving_mean"``, ``"moving_var"``), its shape and a numpy Generator. As in MXNet, only
weights are drawn by the subclass; gammas and moving variances are ones, the rest zeros::

    w = mx.init.Xavier()("weight", (20, 1, 5, 5), np.random.default_rng(0))
    mx.init.Xavier().dumps()   # '["xavier", {"rnd_type": "uniform", ...}]', a variable's __init__
"""
from __future__ import annotations

import json
import math
import types

import numpy as np

from ...ir.errors import AttrError, GraphrtError, UnsupportedError, WeightError


class Initializer:
    """MXNet's initializer dispatch: weights by the subclass, the rest by kind."""

    def __call__(self, kind: str, shape: tuple, rng: np.random.Generator) -> np.ndarray:
        if kind in ("gamma", "moving_var"):
            return np.ones(shape, np.float32)
        if kind == "weight":
            return self._init_weight(shape, rng)
        return np.zeros(shape, np.float32)

    def _init_weight(self, shape, rng):  # pragma: no cover - overridden
        raise NotImplementedError

    def dumps(self) -> str:
        """The ``__init__`` attribute text MXNet writes: ``'["xavier", {...}]'``."""
        return json.dumps([type(self).__name__.lower(), dict(self.__dict__)])


class Xavier(Initializer):
    """``mx.init.Xavier``: scale = sqrt(magnitude / factor) over fan_in/fan_out of the weight."""

    def __init__(self, rnd_type: str = "uniform", factor_type: str = "avg", magnitude: float = 3):
        if rnd_type not in ("uniform", "gaussian") or factor_type not in ("avg", "in", "out"):
            raise AttrError(f"Xavier(rnd_type={rnd_type!r}, factor_type={factor_type!r}) is not "
                            "supported")
        self.rnd_type, self.factor_type, self.magnitude = rnd_type, factor_type, float(magnitude)

    def _init_weight(self, shape, rng):
        if len(shape) < 2:
            raise WeightError(f"Xavier cannot initialize a weight of shape {shape} (needs 2-D+)")
        hw = math.prod(shape[2:]) if len(shape) > 2 else 1
        fan_in, fan_out = shape[1] * hw, shape[0] * hw
        factor = {"avg": (fan_in + fan_out) / 2.0, "in": fan_in, "out": fan_out}[self.factor_type]
        scale = math.sqrt(self.magnitude / factor)
        if self.rnd_type == "uniform":
            return _uniform(rng, shape, scale)
        return _normal(rng, shape, scale)


class Uniform(Initializer):
    """``mx.init.Uniform``: weights uniform in [-scale, scale)."""

    def __init__(self, scale: float = 0.07):
        self.scale = float(scale)

    def _init_weight(self, shape, rng):
        return _uniform(rng, shape, self.scale)


class Normal(Initializer):
    """``mx.init.Normal``: weights normal with standard deviation ``sigma``."""

    def __init__(self, sigma: float = 0.01):
        self.sigma = float(sigma)

    def _init_weight(self, shape, rng):
        return _normal(rng, shape, self.sigma)


class Constant(Initializer):
    """``mx.init.Constant``: every parameter, whatever its kind, filled with ``value``."""

    def __init__(self, value: float = 0.0):
        self.value = float(value)

    def __call__(self, kind, shape, rng):
        return np.full(shape, self.value, np.float32)


class _Fixed(Constant):
    """A constant MXNet serializes without arguments (``'["zero", {}]'``)."""

    VALUE = 0.0

    def __init__(self):
        super().__init__(self.VALUE)

    def dumps(self) -> str:
        return json.dumps([type(self).__name__.lower(), {}])


class Zero(_Fixed):
    """``mx.init.Zero``."""

    VALUE = 0.0


class One(_Fixed):
    """``mx.init.One``."""

    VALUE = 1.0


def _uniform(rng, shape, scale) -> np.ndarray:
    out = rng.random(shape, dtype=np.float32)
    out *= np.float32(2 * scale)
    out -= np.float32(scale)
    return out


def _normal(rng, shape, sigma) -> np.ndarray:
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(sigma)


init = types.SimpleNamespace(Initializer=Initializer, Xavier=Xavier, Uniform=Uniform,
                             Normal=Normal, Constant=Constant, Zero=Zero, One=One)

_BY_NAME = {"xavier": Xavier, "uniform": Uniform, "normal": Normal, "constant": Constant,
            "zero": Zero, "zeros": Zero, "one": One, "ones": One}


def initializer_from_attr(text: str, node: str) -> Initializer:
    """A variable's ``__init__`` attribute (``'["xavier", {...}]'`` as MXNet dumps it)."""
    try:
        kind, kwargs = json.loads(text)
        return _BY_NAME[str(kind).lower()](**dict(kwargs))
    except GraphrtError as err:
        raise err.locate(node=node)
    except (ValueError, TypeError, KeyError):
        raise UnsupportedError(f"variable initializer {text!r} is not supported "
                               "(xavier, uniform, normal, constant, zero, one)", node=node) from None
