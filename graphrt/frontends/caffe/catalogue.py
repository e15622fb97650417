"""The Caffe layer types graphrt converts, in one table: the seed's converters (:mod:`.layers`),
the arithmetic layers (:mod:`.math_layers`) and the data-moving ones (:mod:`.shape_layers`); the
BVLC types it refuses with their reason; the fork types it knows (Axpy, ReLU6, Permute)."""
from __future__ import annotations

from . import layers, math_layers, shape_layers

CONVERTERS = {**layers.CONVERTERS, **math_layers.CONVERTERS, **shape_layers.CONVERTERS}
MIN_BOTTOMS = {**layers.MIN_BOTTOMS, **math_layers.MIN_BOTTOMS, **shape_layers.MIN_BOTTOMS}
UNSUPPORTED = layers.UNSUPPORTED
FORK_LAYERS = ("Axpy", "ReLU6", "Permute")
