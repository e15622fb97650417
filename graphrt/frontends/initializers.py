"""Seeded weight initializers shared by the Python model builders (Keras-like, Torch7-like).

Every initializer is a callable ``init(shape, fan_in, fan_out, rng) -> np.ndarray`` (float32) that
draws from a ``numpy.random.Generator``; builders create one generator per ``to_graph(seed=...)``
call with ``np.random.default_rng(seed)`` and draw the parameters in layer order, so the same seed
gives the same parameters.

Keras' initializers (Keras 3 definitions; Keras 1 spellings map onto them):

==========================  ===================================================================
``glorot_uniform``          U(-l, l), l = sqrt(6 / (fan_in + fan_out))   (Keras 2/3 default)
``glorot_normal``           truncated normal, std sqrt(2 / (fan_in + fan_out)) / 0.8796...
``he_uniform``              U(-l, l), l = sqrt(6 / fan_in)
``he_normal``               truncated normal, std sqrt(2 / fan_in) / 0.8796...
``lecun_uniform``           U(-l, l), l = sqrt(3 / fan_in)
``lecun_normal``            truncated normal, std sqrt(1 / fan_in) / 0.8796...
``uniform``/``random_uniform``  U(-0.05, 0.05)   (Keras 1 ``init='uniform'``)
``normal``/``random_normal``    N(0, 0.05)
``truncated_normal``        N(0, 0.05) truncated at two standard deviations
``zeros``/``zero``, ``ones``/``one``, ``constant``
==========================  ===================================================================

Names are matched case- and underscore-insensitively (``GlorotUniform`` == ``glorot_uniform``);
a Keras config dict ``{"class_name": "RandomUniform", "config": {"minval": -0.1, ...}}`` and a
callable with the signature above are accepted too.

Torch7's default (``torch_default(fan_in)``): U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for the weights
and biases of ``Linear`` and ``SpatialConvolution``.

Two helpers the builders share live here too: :func:`caller_location` (where the user wrote a
layer, for error messages and node sources) and :func:`shape_str` (a shape as errors print it).
"""
from __future__ import annotations

import functools
import math
import os
import sys
from typing import Any, Callable, Mapping

import numpy as np

Initializer = Callable[[tuple, int, int, np.random.Generator], np.ndarray]

# stddev of a unit normal truncated at +-2 (Keras' VarianceScaling correction constant)
_TRUNC_STD = 0.87962566103423978


def _f32(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


def uniform32(rng: np.random.Generator, low: float, high: float, shape) -> np.ndarray:
    """U(low, high) drawn directly in float32 (the dtype the parameter budget counts: no float64
    array three times its size on the way); numpy's errors for a bad range."""
    span = float(high) - float(low)
    if not math.isfinite(span):
        raise OverflowError("high - low range exceeds valid bounds")
    if span < 0:
        raise ValueError("high - low < 0")
    out = rng.random(shape, dtype=np.float32)
    out *= np.float32(span)
    out += np.float32(low)
    return out


def normal32(rng: np.random.Generator, mean: float, std: float, shape) -> np.ndarray:
    """N(mean, std) drawn directly in float32 (see :func:`uniform32`); NaN or infinite arguments
    give NaN or infinite values, as numpy's."""
    if float(std) < 0:
        raise ValueError("scale < 0")
    out = rng.standard_normal(shape, dtype=np.float32)
    with np.errstate(all="ignore"):
        out *= np.float32(std)
        out += np.float32(mean)
    return out


def uniform(minval: float = -0.05, maxval: float = 0.05) -> Initializer:
    """U(minval, maxval) (Keras' RandomUniform)."""
    def init(shape, fan_in, fan_out, rng):
        return uniform32(rng, minval, maxval, shape)
    init.__name__ = f"uniform({minval}, {maxval})"
    return init


def normal(mean: float = 0.0, stddev: float = 0.05) -> Initializer:
    """N(mean, stddev) (Keras' RandomNormal)."""
    def init(shape, fan_in, fan_out, rng):
        return normal32(rng, mean, stddev, shape)
    init.__name__ = f"normal({mean}, {stddev})"
    return init


def _truncated(rng: np.random.Generator, shape, stddev: float, mean: float = 0.0) -> np.ndarray:
    """Normal samples redrawn until they fall within two standard deviations."""
    x = rng.standard_normal(size=shape, dtype=np.float32)
    bad = np.abs(x) > 2.0
    while bad.any():
        x[bad] = rng.standard_normal(size=int(bad.sum()), dtype=np.float32)
        bad = np.abs(x) > 2.0
    with np.errstate(all="ignore"):
        x *= np.float32(stddev)
        x += np.float32(mean)
    return x


def truncated_normal(mean: float = 0.0, stddev: float = 0.05) -> Initializer:
    """N(mean, stddev) redrawn outside two standard deviations (Keras' TruncatedNormal)."""
    def init(shape, fan_in, fan_out, rng):
        return _truncated(rng, shape, stddev, mean)
    init.__name__ = f"truncated_normal({mean}, {stddev})"
    return init


def constant(value: float = 0.0) -> Initializer:
    """Every element ``value`` (Keras' Constant; ``zeros`` and ``ones`` too)."""
    def init(shape, fan_in, fan_out, rng):
        return np.full(shape, value, dtype=np.float32)
    init.__name__ = f"constant({value})"
    return init


def variance_scaling(scale: float = 1.0, mode: str = "fan_in",
                     distribution: str = "truncated_normal") -> Initializer:
    """Keras' VarianceScaling: the family glorot/he/lecun belong to."""
    if mode not in ("fan_in", "fan_out", "fan_avg"):
        raise ValueError(f"variance_scaling mode must be fan_in, fan_out or fan_avg, got {mode!r}")
    if distribution not in ("truncated_normal", "untruncated_normal", "normal", "uniform"):
        raise ValueError(f"unknown variance_scaling distribution {distribution!r}")

    def init(shape, fan_in, fan_out, rng):
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
        var = scale / max(1.0, n)
        if distribution == "uniform":
            lim = math.sqrt(3.0 * var)
            return uniform32(rng, -lim, lim, shape)
        if distribution in ("truncated_normal", "normal"):
            return _truncated(rng, shape, math.sqrt(var) / _TRUNC_STD)
        return normal32(rng, 0.0, math.sqrt(var), shape)
    init.__name__ = f"variance_scaling({scale}, {mode}, {distribution})"
    return init


def torch_default(shape, fan_in, fan_out, rng) -> np.ndarray:
    """Torch7's ``reset()`` for Linear / SpatialConvolution: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    stdv = 1.0 / math.sqrt(max(1, fan_in))
    return uniform32(rng, -stdv, stdv, shape)


def _key(name: str) -> str:
    return name.replace("_", "").lower()


_FACTORIES: dict[str, Callable[..., Initializer]] = {
    "glorotuniform": lambda seed=None: variance_scaling(1.0, "fan_avg", "uniform"),
    "xavieruniform": lambda seed=None: variance_scaling(1.0, "fan_avg", "uniform"),
    "glorotnormal": lambda seed=None: variance_scaling(1.0, "fan_avg", "truncated_normal"),
    "xaviernormal": lambda seed=None: variance_scaling(1.0, "fan_avg", "truncated_normal"),
    "heuniform": lambda seed=None: variance_scaling(2.0, "fan_in", "uniform"),
    "henormal": lambda seed=None: variance_scaling(2.0, "fan_in", "truncated_normal"),
    "lecununiform": lambda seed=None: variance_scaling(1.0, "fan_in", "uniform"),
    "lecunnormal": lambda seed=None: variance_scaling(1.0, "fan_in", "truncated_normal"),
    "uniform": lambda minval=-0.05, maxval=0.05, seed=None, scale=None: (
        uniform(-scale, scale) if scale is not None else uniform(minval, maxval)),
    "randomuniform": lambda minval=-0.05, maxval=0.05, seed=None: uniform(minval, maxval),
    "normal": lambda mean=0.0, stddev=0.05, seed=None: normal(mean, stddev),
    "randomnormal": lambda mean=0.0, stddev=0.05, seed=None: normal(mean, stddev),
    "truncatednormal": lambda mean=0.0, stddev=0.05, seed=None: truncated_normal(mean, stddev),
    "zeros": lambda: constant(0.0),
    "zero": lambda: constant(0.0),
    "ones": lambda: constant(1.0),
    "one": lambda: constant(1.0),
    "constant": lambda value=0.0: constant(value),
    "variancescaling": lambda scale=1.0, mode="fan_in", distribution="truncated_normal", seed=None:
        variance_scaling(scale, mode, distribution),
    "torchdefault": lambda: torch_default,
}


def get_initializer(spec: Any) -> Initializer:
    """An initializer from a name, a Keras config dict or a callable; ValueError if unknown."""
    if callable(spec):
        return spec
    if isinstance(spec, str):
        factory = _FACTORIES.get(_key(spec))
        if factory is None:
            raise ValueError(f"unknown initializer {spec!r}; known: {', '.join(known_initializers())}")
        return factory()
    if isinstance(spec, Mapping) and "class_name" in spec:
        factory = _FACTORIES.get(_key(str(spec["class_name"])))
        if factory is None:
            raise ValueError(f"unknown initializer {spec['class_name']!r}; known: "
                             f"{', '.join(known_initializers())}")
        raw = spec.get("config") or {}
        if not isinstance(raw, Mapping):
            raise ValueError(f"the config of initializer {spec['class_name']!r} must be an object, "
                             f"got {raw!r}")
        config = {k: v for k, v in raw.items() if v is not None}
        try:
            return factory(**config)
        except TypeError as err:
            raise ValueError(f"bad config for initializer {spec['class_name']!r}: {err}") from None
    raise ValueError(f"an initializer must be a name, a Keras config dict or a callable, got {spec!r}")


def known_initializers() -> list[str]:
    """The initializer names error messages list (aliases and spellings left out)."""
    return sorted({"glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "lecun_uniform",
                   "lecun_normal", "uniform", "random_uniform", "normal", "random_normal",
                   "truncated_normal", "zeros", "ones", "constant", "variance_scaling"})


def fans(shape: tuple) -> tuple[int, int]:
    """Keras' fan computation for a kernel in Keras layout ((in, out) or (kh, kw, in, out))."""
    if len(shape) < 1:
        return 1, 1
    if len(shape) == 1:
        return int(shape[0]), int(shape[0])
    if len(shape) == 2:
        return int(shape[0]), int(shape[1])
    receptive = int(np.prod(shape[:-2]))
    return int(shape[-2]) * receptive, int(shape[-1]) * receptive


# ---- helpers the builders share -------------------------------------------------------------
_HERE = os.path.dirname(os.path.abspath(__file__))
# The modules that define layers/modules: frames in them are skipped when looking for the line
# where the user wrote a layer — this module and every module of the Python builders' folders.
_BUILDER_DIRS = tuple(os.path.join(_HERE, d) + os.sep for d in ("keras", "torch7"))
_BUILDER_FILES = {os.path.abspath(__file__)}


@functools.lru_cache(maxsize=1024)
def _is_builder_file(filename: str) -> bool:
    path = os.path.abspath(filename)
    return path in _BUILDER_FILES or path.startswith(_BUILDER_DIRS)


def caller_location() -> tuple[str | None, int | None]:
    """(file, line) of the first frame outside the builder modules: where the user wrote the layer."""
    frame = sys._getframe(1)
    while frame is not None:
        filename = frame.f_code.co_filename
        if not _is_builder_file(filename):
            return filename, frame.f_lineno
        frame = frame.f_back
    return None, None


def shape_str(shape) -> str:
    """A shape as error messages print it, the batch (``None``) as ``N``: ``(N, 3, 32, 32)``."""
    return "(" + ", ".join("N" if d is None else str(d) for d in shape) + ")"
