"""Load Keras model files (``model.to_json()`` configs, Keras 3 ``.keras`` archives) as graphs.

::

    g = load_keras("model.keras")                 # config + weights from the archive
    g = load_keras("model.json", seed=0)          # config only: the builder's seeded initializers
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
``AvgPool2D``, ``GlobalAvgPool2D``, ``GlobalMaxPool2D``, ``Convolution2D``). The merge layers
``Add``, ``Subtract``, ``Average``, ``Multiply`` and ``Concatenate(axis)`` are built here (the
Sequential builder has no use for them).

Data formats follow the builder: inside the graph images are NCHW; the model's layout is the
``data_format`` of its first spatial layer (Keras' default ``channels_last`` when none says); a
channels_last input ``(None, H, W, C)`` is followed by a ``<input>/to_nchw`` transpose and
``Flatten`` / ``Concatenate(axis)`` / ``Softmax(axis)`` / ``BatchNormalization(axis)`` act on Keras'
axes, so the numbers are Keras' numbers.

Weights
-------
Archive weights (``keras_io.read_keras_archive``: layer name -> arrays in Keras variable order and
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
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import (GraphError, GraphrtError, ParseError, ShapeError, UnsupportedError,
                      WeightError)
from ..graph import Graph, Source
from . import keras as K
from .keras_io import read_keras_archive, read_keras_json

# ----------------------------------------------------------------------------- merge layers

class _Merge(K.Layer):
    """Base of the layers that combine several tensors of one shape (built here, not in the
    Sequential builder, which has no use for them)."""

    op = "add"
    min_inputs, max_inputs = 2, None

    def coeffs(self, n: int):
        return None

    def check_inputs(self, ins: list[str]) -> None:
        n = len(ins)
        if n < self.min_inputs or (self.max_inputs is not None and n > self.max_inputs):
            want = (f"exactly {self.min_inputs}" if self.max_inputs == self.min_inputs
                    else f"at least {self.min_inputs}")
            raise self.error(UnsupportedError, f"{type(self).__name__} takes {want} inputs, the "
                                               f"config gives {n}")

    def attrs(self, b: K._Builder, ins: list[str]) -> dict:
        coeffs = self.coeffs(len(ins))
        return {} if coeffs is None else {"coeffs": coeffs}

    def merge(self, b: K._Builder, ins: list[str]) -> str:
        self.check_inputs(ins)
        b.tensor = ins[0]
        attrs = self.attrs(b, ins)
        b.tensor = b.g.add_node(self.op, ins, name=self.name, attrs=attrs, source=self.source)
        return b.tensor


class Add(_Merge):
    """``Add()``: the elementwise sum (``add``)."""

    prefix = "add"


class Subtract(_Merge):
    """``Subtract()``: x0 - x1 (``add`` with coeffs (1, -1))."""

    prefix = "subtract"
    max_inputs = 2

    def coeffs(self, n):
        return (1.0, -1.0)


class Average(_Merge):
    """``Average()``: the mean (``add`` with coeffs 1/n)."""

    prefix = "average"

    def coeffs(self, n):
        return (1.0 / n,) * n


class Multiply(_Merge):
    """``Multiply()``: the elementwise product (``mul``)."""

    prefix = "multiply"
    op = "mul"


class Concatenate(_Merge):
    """``Concatenate(axis=-1)``: a Keras axis (mapped into the NCHW graph like ``Softmax``)."""

    prefix = "concatenate"
    op = "concat"
    min_inputs = 1

    def __init__(self, axis=-1, **kwargs):
        self.axis = axis
        super().__init__(**kwargs)

    def attrs(self, b, ins):
        if isinstance(self.axis, bool) or not isinstance(self.axis, (int, np.integer)):
            raise self.error(ParseError, f"Concatenate axis must be an integer, got {self.axis!r}")
        return {"axis": b.graph_axis(int(self.axis), self)}


#: Keras class name -> builder class.
LAYER_CLASSES: dict[str, type] = {
    "InputLayer": K.InputLayer,
    "Dense": K.Dense,
    "Conv2D": K.Conv2D,
    "Convolution2D": K.Conv2D,  # Keras 2 alias; its config uses the Conv2D keywords
    "MaxPooling2D": K.MaxPooling2D,
    "MaxPool2D": K.MaxPooling2D,
    "AveragePooling2D": K.AveragePooling2D,
    "AvgPool2D": K.AveragePooling2D,
    "GlobalAveragePooling2D": K.GlobalAveragePooling2D,
    "GlobalAvgPool2D": K.GlobalAveragePooling2D,
    "GlobalMaxPooling2D": K.GlobalMaxPooling2D,
    "GlobalMaxPool2D": K.GlobalMaxPooling2D,
    "BatchNormalization": K.BatchNormalization,
    "Activation": K.Activation,
    "ReLU": K.ReLU,
    "LeakyReLU": K.LeakyReLU,
    "Softmax": K.Softmax,
    "Dropout": K.Dropout,
    "Flatten": K.Flatten,
    "Add": Add,
    "Subtract": Subtract,
    "Average": Average,
    "Multiply": Multiply,
    "Concatenate": Concatenate,
}
MODEL_CLASSES = ("Sequential", "Functional", "Model")

# keys a config must have for the layer to mean anything (a missing one is a ParseError)
_REQUIRED = {"Dense": ("units",), "Conv2D": ("filters", "kernel_size"),
             "Convolution2D": ("filters", "kernel_size"), "Activation": ("activation",),
             "Dropout": ("rate",)}
_INPUT_SHAPE_KEYS = ("batch_shape", "batch_input_shape", "shape", "input_shape")
_ANY = None  # a _BENIGN entry of None means: whatever the value
# keys Keras writes that do not change the inference graph when they have these values
_BENIGN = {"quantization_config": (None,), "renorm": (False,), "renorm_clipping": (None,),
           "renorm_momentum": None, "fused": None, "virtual_batch_size": (None,),
           "adjustment": (None,), "lora_enabled": (False,), "build_config": None}


@dataclass
class _Entry:
    """One layer of the config, before building."""

    index: int
    cls: str
    name: str
    config: dict
    line: int | None
    inbound: list[str] = field(default_factory=list)  # producing layer names, in argument order


# ----------------------------------------------------------------------------- entry point

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
    entries = [_entry(raw, i, file, lines or {}, functional) for i, raw in enumerate(raw_layers)]
    seen: dict[str, _Entry] = {}
    for e in entries:
        if e.name in seen:
            raise ParseError(f"two layers are named {e.name!r} (layers #{seen[e.name].index} and "
                             f"#{e.index})", node=e.name, op=e.cls, file=file, line=e.line)
        seen[e.name] = e
    if functional:
        inputs, outputs = _functional_io(cfg, entries, file)
    else:
        inputs, outputs = _sequential_io(doc, cfg, entries, file)
    return _Assembler(file, weights, seed).build(
        name or cfg.get("name") or (Path(file).stem if file else "keras"), entries, inputs, outputs)


# ----------------------------------------------------------------------------- reading

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def _head(file: str) -> bytes:
    try:
        with open(file, "rb") as fh:
            return fh.read(8)
    except FileNotFoundError:
        raise ParseError("no such file", file=file) from None
    except OSError as exc:
        raise ParseError(f"cannot read the file: {exc}", file=file) from None


def _sniff(file: str) -> str:
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


def _read_text(file: str) -> str:
    try:
        data = Path(file).read_bytes()
    except OSError as exc:
        raise ParseError(f"cannot read the file: {exc}", file=file) from None
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
    pos = 0
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
            out.setdefault(lname, text.count("\n", 0, m.start()) + 1)
            pos = m.end()
    return out


def _external_weights(weights: Any) -> dict[str, list[np.ndarray]]:
    if isinstance(weights, Mapping):
        return {str(k): list(v) for k, v in weights.items()}
    wfile = os.fspath(weights)
    if not _head(wfile).startswith(_HDF5_MAGIC):
        return read_keras_archive(wfile).weights
    from .keras_io import _import_h5py, _read_weights

    try:
        blob = Path(wfile).read_bytes()
    except OSError as exc:
        raise ParseError(f"cannot read the weights file: {exc}", file=wfile) from None
    return _read_weights(_import_h5py(), blob, wfile)


def _entry(raw: Any, index: int, file: str | None, lines: Mapping[str, int],
           functional: bool) -> _Entry:
    where = f"layer #{index}"
    if not isinstance(raw, Mapping):
        raise ParseError(f"{where} is not an object", file=file)
    cls = raw.get("class_name")
    cfg = raw.get("config")
    lname = cfg.get("name") if isinstance(cfg, Mapping) else None
    lname = lname if isinstance(lname, str) and lname else raw.get("name")
    if isinstance(lname, str) and lname:
        where = f"layer {lname!r}"
    if not isinstance(cls, str):
        raise ParseError(f"{where} has no 'class_name'", node=lname, file=file,
                         line=lines.get(lname))
    if not isinstance(cfg, Mapping):
        raise ParseError(f"{where} ({cls}) has no 'config' object", node=lname, op=cls, file=file,
                         line=lines.get(lname))
    if not isinstance(lname, str) or not lname:
        raise ParseError(f"{where} ({cls}) has no 'name'", op=cls, file=file)
    e = _Entry(index, cls, lname, dict(cfg), lines.get(lname))
    if functional:
        e.inbound = _inbound(raw, e, file)
    return e


# ----------------------------------------------------------------------------- topology

def _history(value: Any, e: _Entry, file: str | None) -> str:
    """The producing layer of one ``[layer, node_index, tensor_index, ...]`` reference."""
    if (not isinstance(value, (list, tuple)) or len(value) < 3 or not isinstance(value[0], str)
            or not all(isinstance(v, int) for v in value[1:3])):
        raise ParseError(f"bad tensor reference {value!r} in the inputs of layer {e.name!r}; "
                         "expected [layer, node_index, tensor_index]", node=e.name, op=e.cls,
                         file=file, line=e.line)
    if value[1] != 0 or value[2] != 0:
        raise UnsupportedError(f"layer {e.name!r} reads output {value[2]} of call {value[1]} of "
                               f"layer {value[0]!r}; graphrt supports layers called once with one "
                               "output", node=e.name, op=e.cls, file=file, line=e.line)
    return value[0]


def _keras3_refs(value: Any, e: _Entry, file: str | None, out: list[str]) -> None:
    if isinstance(value, Mapping):
        if value.get("class_name") == "__keras_tensor__":
            cfg = value.get("config")
            history = cfg.get("keras_history") if isinstance(cfg, Mapping) else None
            out.append(_history(history, e, file))
        else:
            for v in value.values():
                _keras3_refs(v, e, file, out)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _keras3_refs(v, e, file, out)


def _inbound(raw: Mapping, e: _Entry, file: str | None) -> list[str]:
    nodes = raw.get("inbound_nodes")
    if nodes is None:
        raise ParseError(f"layer {e.name!r} of a functional model has no 'inbound_nodes'",
                         node=e.name, op=e.cls, file=file, line=e.line)
    if not isinstance(nodes, list):
        raise ParseError(f"layer {e.name!r}: 'inbound_nodes' must be a list", node=e.name,
                         op=e.cls, file=file, line=e.line)
    if not nodes:
        return []
    if len(nodes) > 1:
        raise UnsupportedError(f"layer {e.name!r} is called {len(nodes)} times (a shared layer); "
                               "graphrt supports layers called once", node=e.name, op=e.cls,
                               file=file, line=e.line)
    node = nodes[0]
    refs: list[str] = []
    if isinstance(node, Mapping):  # Keras 3
        _keras3_refs(node.get("args", []), e, file, refs)
        kw: list[str] = []
        _keras3_refs(node.get("kwargs", {}), e, file, kw)
        if kw:
            raise UnsupportedError(f"layer {e.name!r} takes tensors as keyword arguments "
                                   f"({', '.join(kw)}); graphrt supports positional inputs only",
                                   node=e.name, op=e.cls, file=file, line=e.line)
    elif isinstance(node, list):  # Keras 2: [[layer, node_index, tensor_index, kwargs], ...]
        refs = [_history(ref, e, file) for ref in node]
    else:
        raise ParseError(f"layer {e.name!r}: cannot read inbound node {node!r}", node=e.name,
                         op=e.cls, file=file, line=e.line)
    if not refs:
        raise ParseError(f"layer {e.name!r} has an inbound node without input tensors",
                         node=e.name, op=e.cls, file=file, line=e.line)
    return refs


def _io_refs(value: Any, what: str, file: str | None) -> list[str]:
    """Layer names of ``input_layers`` / ``output_layers`` (one reference, a list or a dict)."""
    if isinstance(value, Mapping):
        value = list(value.values())
    if isinstance(value, list) and value and isinstance(value[0], str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ParseError(f"functional config has no usable {what!r}", file=file)
    names = []
    for ref in value:
        if not (isinstance(ref, (list, tuple)) and len(ref) >= 3 and isinstance(ref[0], str)):
            raise ParseError(f"bad entry {ref!r} in {what!r}; expected [layer, node_index, "
                             "tensor_index]", file=file)
        if ref[1] != 0 or ref[2] != 0:
            raise UnsupportedError(f"{what} entry {ref!r}: graphrt supports layers called once "
                                   "with one output", file=file)
        names.append(ref[0])
    return names


def _functional_io(cfg: Mapping, entries: list[_Entry], file: str | None):
    by_name = {e.name: e for e in entries}
    for e in entries:
        for src in e.inbound:
            if src not in by_name:
                raise ParseError(f"layer {e.name!r} reads layer {src!r}, which is not in the "
                                 "config", node=e.name, op=e.cls, file=file, line=e.line)
    if "output_layers" not in cfg:
        raise ParseError("functional config has no 'output_layers'", file=file)
    outputs = _io_refs(cfg["output_layers"], "output_layers", file)
    if "input_layers" in cfg:
        inputs = _io_refs(cfg["input_layers"], "input_layers", file)
    else:
        inputs = [e.name for e in entries if e.cls == "InputLayer"]
    for lname in inputs + outputs:
        if lname not in by_name:
            raise ParseError(f"model input/output {lname!r} is not a layer of the config",
                             file=file)
    for lname in inputs:
        if by_name[lname].cls != "InputLayer":
            raise UnsupportedError(f"model input {lname!r} is a {by_name[lname].cls}, not an "
                                   "InputLayer", node=lname, file=file)
    for e in entries:
        if not e.inbound and e.name not in inputs:
            what = ("an InputLayer that is not among the model's 'input_layers'"
                    if e.cls == "InputLayer" else "a layer without inputs")
            raise ParseError(f"layer {e.name!r} is {what}", node=e.name, op=e.cls, file=file,
                             line=e.line)
    _topo_sort(entries, file)
    return inputs, outputs


def _topo_sort(entries: list[_Entry], file: str | None) -> None:
    """Order ``entries`` so producers come first (config order among ready layers)."""
    done: set[str] = set()
    order: list[_Entry] = []
    pending = list(entries)
    while pending:
        ready = [e for e in pending if all(s in done for s in e.inbound)]
        if not ready:
            e = pending[0]
            raise GraphError("the layers form a cycle through " + ", ".join(
                repr(p.name) for p in pending), node=e.name, op=e.cls, file=file, line=e.line)
        for e in ready:
            done.add(e.name)
        order += ready
        pending = [e for e in pending if e.name not in done]
    entries[:] = order


def _sequential_io(doc: Mapping, cfg: Mapping, entries: list[_Entry], file: str | None):
    first = entries[0]
    for e in entries[1:]:
        if e.cls == "InputLayer":
            raise ParseError(f"InputLayer {e.name!r} must be the first layer of a Sequential model",
                             node=e.name, op=e.cls, file=file, line=e.line)
    if first.cls != "InputLayer":  # Keras 2 style: the first layer states the input shape
        c = first.config
        if c.get("batch_shape") is not None or c.get("batch_input_shape") is not None:
            shape = c.get("batch_shape", c.get("batch_input_shape"))
        elif c.get("input_shape") is not None or c.get("shape") is not None:
            shape = c.get("input_shape", c.get("shape"))
            shape = [None, *shape] if isinstance(shape, (list, tuple)) else shape
        elif c.get("input_dim") is not None:
            shape = [None, c["input_dim"]]
        else:
            shape = cfg.get("build_input_shape")
            if shape is None and isinstance(doc.get("build_config"), Mapping):
                shape = doc["build_config"].get("input_shape")
        if not isinstance(shape, (list, tuple)) or not shape:
            raise ParseError("the Sequential config has no InputLayer and no input shape "
                             "(batch_input_shape / build_input_shape)", node=first.name,
                             op=first.cls, file=file, line=first.line)
        for k in _INPUT_SHAPE_KEYS + ("input_dim",):
            c.pop(k, None)
        names = {e.name for e in entries}
        in_name = next(n for n in ("input_layer", "input_1", "input") if n not in names)
        entries.insert(0, _Entry(-1, "InputLayer", in_name,
                                 {"name": in_name, "batch_shape": list(shape)}, first.line))
    for prev, e in zip(entries, entries[1:]):
        e.inbound = [prev.name]
    return [entries[0].name], [entries[-1].name]


# ----------------------------------------------------------------------------- building

class _FileBuilder(K._Builder):
    """The builder's state, handing each layer its weights from the file (checked here)."""

    def __init__(self, graph: Graph, rng: np.random.Generator, default_format: str,
                 file: str | None, weights: Mapping[str, Sequence[np.ndarray]] | None):
        super().__init__(graph, rng, default_format)
        self.file = file
        self.given = weights
        self.used: set[str] = set()

    def weights(self, layer: K.Layer, specs: list) -> list[np.ndarray]:
        if self.given is not None and specs:
            want = ", ".join(f"{var} {tuple(shape)}" for var, shape, _ in specs)
            arrays = self.given.get(layer.name)
            if arrays is None:
                raise layer.error(WeightError, f"no weights for layer {layer.name!r} in the "
                                               f"weights; it needs {want} (Keras layout)")
            arrays = list(arrays)
            if len(arrays) != len(specs):
                got = ", ".join(str(tuple(np.shape(a))) for a in arrays) or "none"
                raise layer.error(WeightError, f"the weights hold {len(arrays)} arrays ({got}) for "
                                               f"this layer but it has {len(specs)}: {want}")
            for i, ((var, shape, _), value) in enumerate(zip(specs, arrays)):
                if np.shape(value) != tuple(shape):
                    raise layer.error(WeightError, f"weight {var} (variable {i}) has shape "
                                                   f"{tuple(np.shape(value))} in the file, the "
                                                   f"config needs {tuple(shape)} (Keras layout)")
                if np.asarray(value).dtype.kind not in "fiu":
                    raise layer.error(WeightError, f"weight {var} has dtype "
                                                   f"{np.asarray(value).dtype}, not a number")
            layer.initial_weights = arrays
            self.used.add(layer.name)
        return super().weights(layer, specs)


class _Assembler:
    def __init__(self, file: str | None, weights, seed: int):
        self.file = file
        self.weights = weights
        self.seed = seed

    def _relocate(self, err: GraphrtError, e: _Entry) -> GraphrtError:
        """Point an error raised while constructing a layer at the config, not at Python code."""
        err.node, err.op, err.file, err.line = e.name, e.cls, self.file, e.line
        err.args = (err._render(),)
        return err

    def _make_layer(self, e: _Entry) -> K.Layer:
        cls = LAYER_CLASSES.get(e.cls)
        if cls is None:
            known = sorted(LAYER_CLASSES)
            what = ("nested models are not supported" if e.cls in MODEL_CLASSES
                    else f"layer class {e.cls!r} is not supported")
            raise UnsupportedError(f"{what}; graphrt reads {', '.join(known)}", node=e.name,
                                   op=e.cls, file=self.file, line=e.line)
        for key in _REQUIRED.get(e.cls, ()):
            if key not in e.config:
                raise ParseError(f"{e.cls} config is missing {key!r}", node=e.name, op=e.cls,
                                 file=self.file, line=e.line)
        if e.cls == "InputLayer" and not any(e.config.get(k) is not None
                                             for k in _INPUT_SHAPE_KEYS):
            raise ParseError("InputLayer config has no 'batch_shape' (Keras 2: "
                             "'batch_input_shape')", node=e.name, op=e.cls, file=self.file,
                             line=e.line)
        kwargs = {}
        for key, value in e.config.items():
            if key in _BENIGN and (_BENIGN[key] is _ANY or value in _BENIGN[key]):
                continue
            kwargs[key] = value
        kwargs["name"] = e.name
        if isinstance(kwargs.get("activation"), Mapping):  # Keras 3 serialized function
            act = kwargs["activation"]
            if act.get("class_name") == "function" and isinstance(act.get("config"), str):
                kwargs["activation"] = act["config"]
        try:
            layer = cls(**kwargs)
        except GraphrtError as err:
            raise self._relocate(err, e) from None
        except (TypeError, ValueError) as err:
            raise ParseError(f"bad {e.cls} config: {err}", node=e.name, op=e.cls, file=self.file,
                             line=e.line) from None
        layer.file, layer.line = self.file, e.line
        return layer

    def build(self, name: str, entries: list[_Entry], inputs: list[str],
              outputs: list[str]) -> Graph:
        layers = {e.name: self._make_layer(e) for e in entries}
        spatial = [l for l in layers.values() if l.spatial and l.data_format]
        layout = spatial[0].data_format if spatial else K.CHANNELS_LAST
        g = Graph(name)
        b = _FileBuilder(g, np.random.default_rng(self.seed), layout, self.file, self.weights)
        b.layout = layout
        tensors: dict[str, str] = {}
        by_name = {e.name: e for e in entries}
        for e in entries:
            layer = layers[e.name]
            if e.cls == "InputLayer":
                tensors[e.name] = self._input(g, layer, layout, e)
                continue
            ins = [tensors[s] for s in e.inbound]
            try:
                if isinstance(layer, _Merge):
                    tensors[e.name] = layer.merge(b, ins)
                    continue
                if len(ins) != 1:
                    raise UnsupportedError(f"{e.cls} takes one input, the config gives "
                                           f"{len(ins)} ({', '.join(e.inbound)})", node=e.name,
                                           op=e.cls, file=self.file, line=e.line)
                b.tensor = ins[0]
                layer._build(b)
                tensors[e.name] = b.tensor
            except GraphrtError as err:
                raise err.locate(node=e.name, op=e.cls, file=self.file, line=e.line)
            if e.config.get("trainable") is False:
                for p in g.params:
                    if p.startswith(e.name + "/"):
                        g.param_info[p].trainable = False
        self._check_unused(entries, b.used)
        outs = []
        for lname in outputs:
            t = tensors[lname]
            if t in g.inputs or t in outs:  # an output that no node produces (or a repeat)
                e = by_name[lname]
                t = g.add_node("identity", [t], name=g.unique_name(f"{lname}/identity"),
                               source=Source(lname, e.cls, self.file, e.line))
            outs.append(t)
        g.set_outputs(outs)
        g.verify()
        return g

    def _input(self, g: Graph, layer: K.InputLayer, layout: str, e: _Entry) -> str:
        shape = layer.input_shape
        if shape is None or any(d is None or int(d) <= 0 for d in shape):
            raise ShapeError(f"input shape {shape} must be fully known (positive sizes, batch "
                             "excluded)", node=e.name, op=e.cls, file=self.file, line=e.line)
        t = g.add_input(e.name, (None,) + tuple(int(d) for d in shape))
        if len(shape) == 3 and layout == K.CHANNELS_LAST:
            t = g.add_node("transpose", [t], name=f"{e.name}/to_nchw", attrs={"perm": (0, 3, 1, 2)},
                           source=Source(e.name, e.cls, self.file, e.line))
        return t

    def _check_unused(self, entries: list[_Entry], used: set[str]) -> None:
        if self.weights is None:
            return
        for e in entries:
            arrays = self.weights.get(e.name)
            if arrays and e.name not in used:
                raise WeightError(f"the weights hold {len(arrays)} arrays for layer {e.name!r} "
                                  f"({e.cls}), which has no weights", node=e.name, op=e.cls,
                                  file=self.file, line=e.line)


__all__ = ["load_keras", "config_to_graph", "LAYER_CLASSES", "Add", "Subtract", "Average",
           "Multiply", "Concatenate"]
