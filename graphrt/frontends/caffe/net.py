"""Caffe: a ``.prototxt`` net (and optionally its ``.caffemodel`` weights) as a :class:`Graph`.

The prototxt is parsed as data by :mod:`.prototxt`; layers are filtered by ``phase`` and ``stage``
with Caffe's NetStateRule semantics (a layer with ``include`` rules is kept when one rule matches; a
layer with ``exclude`` rules is dropped when one matches; a rule matches when its phase, stages and
not-stages all agree with the net state). Blobs are tracked by name, so in-place layers (``top`` equal
to ``bottom``) simply rebind the blob to the new node's output. Caffe's batch dimension becomes the
graph's symbolic batch: a deploy file that declares batch 10 runs any batch size.

Parameters are named ``<layer>_weight`` / ``<layer>_bias`` (BatchNorm: ``_mean`` / ``_var`` with
Caffe's scale-factor blob already divided out; Scale: ``_scale`` / ``_bias``) and carry the layer's
``param { lr_mult decay_mult }``. Without a caffemodel, weights come from the layer's fillers, seeded.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ...ir.errors import GraphError, GraphrtError, ParseError, UnsupportedError, WeightError
from ...ir import Graph, Source
from . import catalogue
from . import layers as caffe_layers
from ..files import bounded_memory
from .caffemodel import read_caffemodel
from ...ir.limits import Budget
from .prototxt import Message, load_prototxt, parse_prototxt
from .schema import check_net, suggest
from .transform import fused_transform

FEEDS = ("float32", "uint8", "stored-float32")  # see load_caffe
DATA_LAYERS = {"Data", "ImageData", "HDF5Data", "MemoryData", "DummyData", "WindowData", "Python",
               "AnnotatedData"}


@bounded_memory
def load_caffe(path: str | Path | None = None, weights: str | Path | None = None, *,
               text: str | None = None, phase: str = "TEST", stage: str | Sequence[str] = (),
               input_shape: Sequence[int] | None = None, classes: int | None = None,
               seed: int = 0, feed: str = "float32") -> Graph:
    """Load a Caffe net definition (``path`` or ``text``) and optionally its trained weights.

    ``input_shape`` (C, H, W) gives the shape of ``Data``-style inputs, whose shape lives in a
    database rather than the prototxt, and of a deploy input no layer declares (DIGITS). ``classes``
    fills an ``InnerProduct`` that has no ``num_output`` (DIGITS sets it to the dataset's classes).

    ``feed`` says what a ``Data``/``ImageData`` layer's input takes: ``"float32"`` (images already
    cropped and mirrored by the caller; ``scale`` and ``mean_value`` applied in the graph) or
    ``"uint8"``: the images as stored (``input_shape`` is then the stored C, H, W) and a
    ``<layer>/window`` input (N, 3) int32 of crop offsets and mirror flags, with all of
    ``transform_param`` applied by one ``image_transform`` node (what :mod:`graphrt.data`'s
    sources feed; ``"stored-float32"`` the same for records stored as floats, Caffe's
    ``float_data``). The mean file is read when the net is loaded; no data source is opened.
    """
    if feed not in FEEDS:
        raise GraphrtError(f"feed must be one of {', '.join(map(repr, FEEDS))}, got {feed!r}")
    file = str(path) if path is not None else "<prototxt>"
    net = load_prototxt(path) if text is None else parse_prototxt(text, file)
    net = check_net(net, file)  # caffe.proto's schema: unknown fields are errors, as in Caffe
    stages = (stage,) if isinstance(stage, str) else tuple(stage)  # one stage, or several
    builder = _NetBuilder(net, file, phase.upper(), stages, input_shape, classes, seed)
    builder.feed = feed
    graph = builder.build()
    if weights is not None:
        apply_caffemodel(graph, builder.blob_owners, weights)
    return graph


def rule_matches(rule: Message, phase: str, stages: tuple) -> bool:
    if rule.get("phase") is not None and rule.get("phase") != phase:
        return False
    if any(s not in stages for s in rule.getall("stage")):
        return False
    return not any(s in stages for s in rule.getall("not_stage"))


def layer_included(layer: Message, phase: str, stages: tuple) -> bool:
    includes, excludes = layer.getall("include"), layer.getall("exclude")
    if includes:
        return any(rule_matches(r, phase, stages) for r in includes)
    return not any(rule_matches(r, phase, stages) for r in excludes)


class _NetBuilder:
    def __init__(self, net, file, phase, stages, input_shape, classes, seed):
        self.net, self.file, self.phase, self.stages = net, file, phase, stages
        self.input_shape = None if input_shape is None else tuple(int(d) for d in input_shape)
        self.classes = classes
        self.feed = "float32"  # see load_caffe
        self.rng = np.random.default_rng(seed)
        self.graph = Graph(str(net.get("name", Path(file).stem)))
        self.blobs: dict[str, str] = {}      # Caffe blob name -> current graph tensor
        self.consumed: set[str] = set()
        self.blob_owners: dict[str, list[str]] = {}  # layer name -> its parameter names in blob order
        self.budget = Budget()  # fillers allocate from declared shapes: checked first

    def build(self) -> Graph:
        try:
            self._declare_net_inputs()
        except (AttributeError, TypeError) as err:  # see _checked_layer
            raise ParseError(f"the net's inputs hold a field of the wrong kind ({err})",
                             file=self.file) from None
        layers = self.net.getall("layer") or self.net.getall("layers")
        if self.net.getall("layer") and self.net.getall("layers"):
            raise ParseError("the net mixes 'layer' and legacy 'layers' fields", file=self.file)
        for layer in layers:
            self._checked_layer(layer)
        outputs = [t for b, t in self.blobs.items() if t not in self.consumed
                   and t not in self.graph.inputs]
        if not outputs:
            raise GraphrtError("the net has no output blob", file=self.file)
        self.graph.set_outputs(outputs)
        return self.graph

    # ---- inputs -------------------------------------------------------------------------------
    def _declare_net_inputs(self):
        names = self.net.getall("input")
        shapes = [tuple(s.getall("dim")) for s in self.net.getall("input_shape")]
        dims = self.net.getall("input_dim")
        if dims:
            shapes = [tuple(dims[i:i + 4]) for i in range(0, len(dims), 4)]
        if names and len(shapes) != len(names):
            raise ParseError(f"{len(names)} 'input' fields but {len(shapes)} input shapes",
                             file=self.file, line=self.net.line_of("input"))
        for name, shape in zip(names, shapes):
            self._add_input(name, shape, self.net.line_of("input"))

    def _add_input(self, blob: str, shape: Sequence[int], line=None, dtype="float32"):
        try:
            shape = tuple(caffe_layers._int(d, "an input dimension") for d in shape)
        except GraphrtError as err:  # NaN, infinite, fractional
            raise ParseError(f"input {blob!r}: {err.message}", file=self.file, line=line) from None
        if any(d <= 0 or d >= 2**31 for d in shape[1:]):  # Caffe's blob dimensions are int32
            raise ParseError(f"input {blob!r} has a dimension outside [1, 2**31): {shape}",
                             file=self.file, line=line)
        self.graph.add_input(blob, (None,) + shape[1:], dtype)
        self.blobs[blob] = blob

    def data_shape(self, layer_name: str, line) -> tuple:
        if self.input_shape is None:
            raise GraphrtError(f"data layer {layer_name!r} reads its shape from a database: pass "
                               "input_shape=(C, H, W)", file=self.file, line=line, node=layer_name)
        return (None,) + self.input_shape

    # ---- layers -------------------------------------------------------------------------------
    def source(self, layer: Message, ltype: str) -> Source:
        return Source(layer=layer.get("name"), type=ltype, file=self.file, line=layer.line)

    def _checked_layer(self, layer) -> None:
        """Add ``layer`` if its rules include it. The prototxt is read without a schema, so a
        field may hold a value where a message belongs (``convolution_param: 5``) or the reverse;
        the converters then meet an AttributeError/TypeError, reported as the layer's ParseError."""
        line = getattr(layer, "line", None)
        if not isinstance(layer, Message):
            raise ParseError(f"a layer must be a message, got {layer!r}", file=self.file)
        name = layer.get("name")
        for what, values in (("name", [name] if name is not None else []),
                             ("top", layer.getall("top")), ("bottom", layer.getall("bottom"))):
            if any(not isinstance(v, str) for v in values):
                raise ParseError(f"layer {name!r}: {what} must be a string", file=self.file,
                                 line=line)
        try:
            if layer_included(layer, self.phase, self.stages):
                self._add_layer(layer)
        except (AttributeError, TypeError) as err:
            raise ParseError(f"layer {name!r}: a field holds a value of the wrong kind ({err})",
                             file=self.file, line=line, node=name) from None

    def _add_layer(self, layer: Message):
        name = layer.get("name")
        ltype = caffe_layers.layer_type(layer)
        if name is None:
            raise ParseError("a layer has no name", file=self.file, line=layer.line)
        tops, bottoms = layer.getall("top"), layer.getall("bottom")
        # a Python layer without bottoms feeds data; one with bottoms computes (unsupported)
        if (ltype in DATA_LAYERS and not (ltype == "Python" and bottoms)) or ltype == "Input":
            self._add_data_layer(layer, ltype, tops)
            return
        inputs = []
        for b in bottoms:
            if b not in self.blobs:
                if self.input_shape is not None and not self.graph.inputs:
                    self._add_input(b, (1,) + self.input_shape, layer.line)
                else:
                    raise GraphrtError(f"bottom {b!r} of layer {name!r} ({ltype}) is produced by no "
                                       "earlier layer", file=self.file, line=layer.line, node=name)
            inputs.append(self.blobs[b])
        convert = catalogue.CONVERTERS.get(ltype)
        if convert is None:
            raise self._unknown_type(name, ltype, layer.line)
        need = catalogue.MIN_BOTTOMS.get(ltype, 1)
        if len(inputs) < need:
            raise GraphError(f"layer {name!r} ({ltype}) needs {need} bottom(s), it has "
                             f"{len(inputs)}", file=self.file, line=layer.line, node=name)
        try:
            outs = convert(self, layer, name, inputs)
        except GraphrtError as err:
            raise err.locate(node=name, op=ltype, file=self.file, line=layer.line)
        outs = [outs] if isinstance(outs, str) else list(outs)
        if len(outs) != len(tops):
            raise GraphrtError(f"layer {name!r} ({ltype}) has {len(tops)} tops, graphrt makes "
                               f"{len(outs)}", file=self.file, line=layer.line, node=name)
        self.consumed.update(inputs)
        for top, tensor in zip(tops, outs):
            self.blobs[top] = tensor

    def _unknown_type(self, name: str, ltype: str, line) -> UnsupportedError:
        """The error for a layer type graphrt does not convert: why, or the nearest known type."""
        why = catalogue.UNSUPPORTED.get(ltype)
        if why is not None:
            return UnsupportedError(f"layer {name!r} has type {ltype!r}: {why}", file=self.file,
                                    line=line, node=name)
        known = set(catalogue.CONVERTERS) | DATA_LAYERS | {"Input"}
        hint = suggest(ltype, known) or suggest(ltype, catalogue.UNSUPPORTED)
        return UnsupportedError(f"layer {name!r} has type {ltype!r}, which is neither a BVLC Caffe "
                                f"layer graphrt converts nor a known fork layer{hint} (supported: "
                                f"{', '.join(sorted(catalogue.CONVERTERS))})", file=self.file,
                                line=line, node=name)

    def _add_data_layer(self, layer: Message, ltype: str, tops: list[str]):
        line = layer.line
        if ltype == "Input":
            shapes = [tuple(s.getall("dim")) for s in layer.get("input_param", Message()).getall("shape")]
            if len(shapes) == 1 and len(tops) > 1:
                shapes *= len(tops)
            if len(shapes) != len(tops):
                raise ParseError(f"Input layer {layer.get('name')!r} has {len(tops)} tops and "
                                 f"{len(shapes)} shapes", file=self.file, line=line)
            for top, shape in zip(tops, shapes):
                self._add_input(top, shape, line)
            return
        shape = self.data_shape(layer.get("name"), line)
        data_top = tops[0]
        transform = layer.get("transform_param")
        if self.feed != "float32" and ltype in ("Data", "ImageData"):
            self.graph.add_input(data_top, shape, "uint8" if self.feed == "uint8" else "float32")
            tensor = fused_transform(self, layer, data_top)
            self.blobs[data_top] = tensor
            for extra in tops[1:]:
                self.graph.add_input(extra, (None,), "int64")
                self.blobs[extra] = extra
            return
        self.graph.add_input(data_top, shape)
        tensor = data_top
        if transform is not None:
            tensor = caffe_layers.data_transform(self, layer, transform, tensor)
        self.blobs[data_top] = tensor
        for extra in tops[1:]:
            self.graph.add_input(extra, (None,), "int64")
            self.blobs[extra] = extra

    # ---- parameters ---------------------------------------------------------------------------
    def param(self, layer: Message, index: int, suffix: str, shape: tuple, filler: Message | None,
              default_filler: str = "constant") -> str:
        name = f"{layer.get('name')}_{suffix}"
        specs = layer.getall("param")
        spec = specs[index] if index < len(specs) else Message()
        self.budget.take_array("param", f"parameter {name!r}", shape, node=layer.get("name"))
        value = caffe_layers.fill(filler, shape, self.rng, default_filler)
        self.graph.add_param(name, value, lr_mult=spec.get("lr_mult", 1.0),
                             decay_mult=spec.get("decay_mult", 1.0))
        self.blob_owners.setdefault(layer.get("name"), []).append(name)
        return name


def apply_caffemodel(graph: Graph, blob_owners: dict[str, list[str]], weights) -> None:
    """Copy trained blobs into the graph's parameters, layer by layer, checking every shape."""
    file = str(weights)
    layers = {lb.name: lb for lb in read_caffemodel(weights, file=file)}
    for layer, params in blob_owners.items():
        if layer not in layers:
            raise WeightError(f"the caffemodel has no blobs for layer {layer!r}", file=file, node=layer)
        blobs = list(layers[layer].blobs)
        blobs = caffe_layers.adapt_blobs(layer, params, blobs, file)
        if len(blobs) != len(params):
            raise WeightError(f"layer {layer!r} needs {len(params)} blobs, the caffemodel has "
                              f"{len(blobs)}", file=file, node=layer)
        for pname, blob in zip(params, blobs):
            want = graph.params[pname].shape
            if blob.shape != want:
                if blob.size == int(np.prod(want)) and blob.squeeze().shape == tuple(
                        d for d in want if d != 1):
                    blob = blob.reshape(want)  # legacy (1, 1, out, in) InnerProduct blobs
                else:
                    raise WeightError(f"blob {pname!r} of layer {layer!r} has shape {blob.shape}, the "
                                      f"prototxt implies {want}", file=file, node=layer)
            graph.params[pname] = np.ascontiguousarray(blob, dtype=np.float32)
