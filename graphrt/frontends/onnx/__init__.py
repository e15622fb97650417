"""ONNX: ``.onnx`` import (``reading``: the file, its external data and opset; ``importer``, with
load-time constant folding in ``fold`` bounded by ``bounds``, and the op converters in ``ops`` and
``layout_ops``), export (``export``: fused nodes expanded to standard
ops), ``from_torch`` (a PyTorch module through its ONNX exporter) and the ONNX backend (``backend``,
which runs ONNX's own test suite). The ``onnx`` package is imported when used. May import ``ir``
and ``ops``; ``backend`` alone runs graphs, so it also imports ``scheduler`` and ``devices`` (it sits
above the scheduler in ``docs/architecture.md``, like the CLI).
"""
from .export import export_onnx, to_onnx  # noqa: F401
from .from_torch import from_torch  # noqa: F401
from .importer import load_onnx  # noqa: F401
from .reading import read_model  # noqa: F401
