"""Load Keras model files (``model.to_json()`` configs, Keras 3 ``.keras`` archives) as graphs.

::

    g = load_keras("model.keras")                 # config + weights from the archive
    g = load_keras("model.json", seed=0)          # config only: seeded initial values, and a
                                                  # MissingWeightsWarning naming the file
    g = load_keras("model.json", weights="model.keras")   # weights from another file

``graphrt.load(path)`` calls :func:`load_keras` for ``.keras`` files and for JSON files holding a
Keras config.

What is read
------------
Model classes ``Sequential`` and ``Functional`` (also Keras 2's ``Model``), in the Keras 3 layout
``{"class_name": ..., "config": {"layers": [...], ...}}``. A functional model's layers carry
``inbound_nodes`` (Keras 3: ``{"args": [...], "kwargs": {...}}`` with ``__keras_tensor__`` entries
whose ``keras_history`` is ``[layer, node_index, tensor_index]``; Keras 2:
``[[layer, node_index, tensor_index, kwargs], ...]``); the layers may form any DAG, with one or
several inputs and outputs, as long as every layer is called once.

Layers are the builder's (:mod:`graphrt.frontends.keras`) classes, instantiated from the config's
keyword arguments, so a layer means the same thing written in Python or loaded from a file:
``InputLayer``, ``Dense``, ``Conv2D``, ``MaxPooling2D``, ``AveragePooling2D``,
``GlobalAveragePooling2D``, ``GlobalMaxPooling2D``, ``BatchNormalization``, ``Activation``,
``ReLU``, ``LeakyReLU``, ``Softmax``, ``Dropout``, ``Flatten`` (and the Keras aliases ``MaxPool2D``,
``AvgPool2D``, ``GlobalAvgPool2D``, ``GlobalMaxPool2D``, ``Convolution2D``), every layer the
``keras.applications`` architectures use (``ZeroPadding2D``, ``Cropping2D``, ``DepthwiseConv2D``,
``SeparableConv2D``, ``Conv2DTranspose``, ``UpSampling2D``, ``Reshape``, ``Permute``,
``Rescaling``, ``Normalization``, ``LayerNormalization``, the dropout and noise layers, and the
custom layers ``keras.applications`` saves by name: ``CustomScaleLayer``, ``LayerScale``,
``StochasticDepth``), and nested ``Sequential``/functional models used as layers. The merge
layers ``Add``, ``Subtract``, ``Average``, ``Multiply``, ``Maximum``, ``Minimum`` and
``Concatenate(axis)`` broadcast as Keras does; an operation node of a tensor and a number
(MobileNetV3's ``x + 3.0``) is a ``scale``. Every built-in activation name is read.

Data formats follow the builder: inside the graph images are NCHW; the model's layout is the
``data_format`` of its first spatial layer (Keras' default ``channels_last`` when none says); a
channels_last input ``(None, H, W, C)`` is followed by a ``<input>/to_nchw`` transpose and
``Flatten`` / ``Concatenate(axis)`` / ``Softmax(axis)`` / ``BatchNormalization(axis)`` act on Keras'
axes, so the numbers are Keras' numbers; 4-D outputs come back NHWC, as Keras returns them.

Weights
-------
Archive weights (``.io.read_keras_archive``: layer name -> arrays in Keras variable order and
layout) are handed to each layer as the builder's ``weights=``, which converts HWIO kernels to OIHW
and (in, out) dense kernels to (out, in). A layer that needs weights and has none, a wrong number of
arrays, or an array of the wrong shape raises :class:`WeightError` naming the layer, the file and
both shapes. Weights for names that are not layers of the config are ignored (Keras stores the
state of non-layer objects the same way). Without weights the builder's initializers (the config's
``kernel_initializer`` etc.) draw from ``np.random.default_rng(seed)`` in layer order.

Errors
------
Syntax errors are :class:`ParseError` with line and column; a layer entry or config missing a key
the layer needs is a :class:`ParseError` naming the layer; a layer class graphrt does not know is an
:class:`UnsupportedError` naming the layer and the file. For a pretty-printed JSON file errors carry
the line of the layer's ``"name"``.

Where the code is
-----------------
This module reads the files; :mod:`~graphrt.frontends.keras.config` turns the config's layers
into entries and connects them, :mod:`~graphrt.frontends.keras.assembler` builds the graph with the
builder's layers (:mod:`~graphrt.frontends.keras.builder`) and the merge layers
(:mod:`~graphrt.frontends.keras.merge`).
"""
from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ...ir.errors import GraphError, MissingWeightsWarning, ParseError, UnsupportedError
from ...ir import Graph
from ..files import bounded_memory
from .assembler import LAYER_CLASSES, Assembler
from .config import MODEL_CLASSES, functional_io, read_entries, sequential_io
from .io import read_keras_archive, read_keras_json
from .merge import Add, Average, Concatenate, Multiply, Subtract

# ----------------------------------------------------------------------------- entry point

@bounded_memory
def load_keras(path: str | os.PathLike, *, seed: int = 0,
               weights: str | os.PathLike | Mapping[str, Sequence[np.ndarray]] | None = None,
               name: str | None = None) -> Graph:
    """Load a Keras ``.keras`` archive or ``to_json()`` config as a verified :class:`Graph`.

    ``weights`` overrides where the weights come from: another ``.keras`` archive, a Keras 3
    ``.weights.h5`` file, or a mapping layer name -> arrays in Keras order and layout. Without it an
    archive's own weights are used, and a JSON config gets seeded initial values (``seed``).
    """
    file = os.fspath(path)
    kind = _sniff(file)
    lines: dict[str, int] = {}
    if kind == "archive":
        archive = read_keras_archive(file)
        doc, arrays = archive.config, archive.weights
    else:
        text = _read_text(file)
        doc = read_keras_json(text, file)
        arrays = None
        lines = _layer_lines(text, doc)
    if weights is not None:
        arrays = _external_weights(weights)
    elif kind == "json":
        warnings.warn(f"{file} is a Keras config without weights: the model runs on initial "
                      f"values drawn with seed {seed}; pass weights= (the .keras archive or "
                      f"the .weights.h5 file) to load the trained ones", MissingWeightsWarning,
                      stacklevel=2)
    return config_to_graph(doc, file=file, weights=arrays, seed=seed, name=name, lines=lines)


def config_to_graph(doc: Mapping, *, file: str | None = None,
                    weights: Mapping[str, Sequence[np.ndarray]] | None = None, seed: int = 0,
                    name: str | None = None, lines: Mapping[str, int] | None = None) -> Graph:
    """Build the graph of a parsed Keras model config (``{"class_name": ..., "config": ...}``).

    ``weights`` maps layer names to their arrays in Keras order and layout (``None``: initialize
    from ``default_rng(seed)``); ``lines`` maps layer names to their line in ``file``.
    """
    if not isinstance(doc, Mapping) or not isinstance(doc.get("config"), Mapping):
        raise ParseError("not a Keras model config: expected an object with 'class_name' and "
                         "'config'", file=file)
    model_cls = doc.get("class_name")
    if model_cls not in MODEL_CLASSES:
        raise UnsupportedError(f"model class {model_cls!r} is not supported; graphrt reads "
                               f"{', '.join(MODEL_CLASSES)} models", file=file)
    cfg = doc["config"]
    raw_layers = cfg.get("layers")
    if not isinstance(raw_layers, list):
        raise ParseError(f"{model_cls} config has no 'layers' list", file=file)
    if not raw_layers:
        raise GraphError(f"the {model_cls} model has no layers", file=file)
    functional = model_cls != "Sequential"
    entries = read_entries(raw_layers, file, lines or {}, functional)
    if functional:
        inputs, outputs = functional_io(cfg, entries, file)
    else:
        inputs, outputs = sequential_io(doc, cfg, entries, file)
    return Assembler(file, weights, seed).build(
        name or cfg.get("name") or (Path(file).stem if file else "keras"), entries, inputs, outputs)


# ----------------------------------------------------------------------------- reading

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def _head(file: str) -> bytes:
    """The file's first bytes (its magic number)."""
    try:
        with open(file, "rb") as fh:
            return fh.read(8)
    except FileNotFoundError:
        raise ParseError("no such file", file=file) from None
    except OSError as exc:
        raise ParseError(f"cannot read the file: {exc}", file=file) from None


def _sniff(file: str) -> str:
    """``'archive'`` (a .keras zip) or ``'json'``; an UnsupportedError for an HDF5 file."""
    head = _head(file)
    if head.startswith(_ZIP_MAGIC):
        return "archive"
    if head.startswith(_HDF5_MAGIC):
        raise UnsupportedError("this is an HDF5 file (a legacy Keras 2 .h5 model or a weights "
                               "file); graphrt reads Keras 3 .keras archives and to_json() "
                               "configs: re-save the model with model.save('model.keras'), or "
                               "pass a .weights.h5 file as weights= with its config", file=file)
    if file.lower().endswith(".keras"):
        return "archive"  # not a zip: read_keras_archive says so
    return "json"


def _read_bytes(file: str, what: str = "the file") -> bytes:
    try:
        return Path(file).read_bytes()
    except OSError as exc:
        raise ParseError(f"cannot read {what}: {exc}", file=file) from None


def _read_text(file: str) -> str:
    data = _read_bytes(file)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ParseError(f"not UTF-8 text (byte offset {exc.start})", file=file) from None
    if not text.strip():
        raise ParseError("empty file", file=file)
    return text


def _layer_lines(text: str, doc: Any) -> dict[str, int]:
    """Line of each top-level layer's ``"name"`` in a pretty-printed JSON file ({} if one line)."""
    if text.count("\n") < 2:
        return {}
    layers = doc.get("config", {}).get("layers") if isinstance(doc, dict) else None
    out: dict[str, int] = {}
    pos, counted, line = 0, 0, 1  # line: the line of text[counted]
    for raw in layers if isinstance(layers, list) else []:
        cfg = raw.get("config") if isinstance(raw, dict) else None
        lname = cfg.get("name") if isinstance(cfg, dict) else None
        if not isinstance(lname, str):
            continue
        m = re.compile(r'"name"\s*:\s*' + re.escape(json.dumps(lname))).search(text, pos)
        if m is None:
            m = re.compile(r'"name"\s*:\s*' + re.escape(json.dumps(lname, ensure_ascii=False))
                           ).search(text, pos)
        if m is not None:
            line += text.count("\n", counted, m.start())
            counted = m.start()
            out.setdefault(lname, line)
            pos = m.end()
    return out


def _external_weights(weights: Any) -> dict[str, list[np.ndarray]]:
    """``weights=`` of :func:`load_keras` as layer name -> arrays."""
    if isinstance(weights, Mapping):
        return {str(k): list(v) for k, v in weights.items()}
    wfile = os.fspath(weights)
    if not _head(wfile).startswith(_HDF5_MAGIC):
        return read_keras_archive(wfile).weights
    from .hdf5 import read_weights
    from .io import _import_h5py

    h5py = _import_h5py()
    try:
        with open(wfile, "rb") as fh:  # the file the user named: read in place, not copied
            return read_weights(h5py, fh, wfile)
    except OSError as exc:
        raise ParseError(f"cannot read the weights file: {exc}", file=wfile) from None


__all__ = ["load_keras", "config_to_graph", "LAYER_CLASSES", "Add", "Subtract", "Average",
           "Multiply", "Concatenate"]
