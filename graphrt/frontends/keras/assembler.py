"""Build the graph of a Keras model config's layers, with the weights from the file.

The :class:`Assembler` instantiates each :class:`~graphrt.frontends.keras.config.LayerEntry` as the
builder's layer class (:data:`LAYER_CLASSES`, from the config's keyword arguments) and adds its
nodes in order with a :class:`FileBuilder`, a :class:`~graphrt.frontends.keras.builder.GraphBuilder`
that hands each layer its arrays from the file and checks them. Errors point at the layer's
entry in the file, not at graphrt's code.
"""
from __future__ import annotations

import itertools
from typing import Mapping, Sequence

import numpy as np

from ...ir.errors import GraphrtError, ParseError, UnsupportedError, WeightError
from ...ir import Graph, Source
from .builder import CHANNELS_LAST, GraphBuilder, known_input_shape
from .config import (INPUT_SHAPE_KEYS, MODEL_CLASSES, LayerEntry, functional_io, read_entries,
                     sequential_io)
from .core import (Activation, BatchNormalization, Dense, Dropout, Flatten, InputLayer,
                   LeakyReLU, ReLU, Softmax)
from .layer import Layer
from .merge import (Add, Average, Concatenate, CustomScaleLayer, Maximum, MergeLayer, Minimum,
                    Multiply, Subtract)
from .more_layers import (Conv2DTranspose, Cropping2D, DepthwiseConv2D, Permute, Reshape,
                          SeparableConv2D, UpSampling2D, ZeroPadding2D)
from .norm_layers import Identity, LayerNormalization, LayerScale, Normalization, Rescaling
from .spatial import (AveragePooling2D, Conv2D, GlobalAveragePooling2D, GlobalMaxPooling2D,
                      MaxPooling2D)

#: Keras class name -> builder class.
LAYER_CLASSES: dict[str, type] = {
    "InputLayer": InputLayer,
    "Dense": Dense,
    "Conv2D": Conv2D,
    "Convolution2D": Conv2D,  # Keras 2 alias; its config uses the Conv2D keywords
    "MaxPooling2D": MaxPooling2D,
    "MaxPool2D": MaxPooling2D,
    "AveragePooling2D": AveragePooling2D,
    "AvgPool2D": AveragePooling2D,
    "GlobalAveragePooling2D": GlobalAveragePooling2D,
    "GlobalAvgPool2D": GlobalAveragePooling2D,
    "GlobalMaxPooling2D": GlobalMaxPooling2D,
    "GlobalMaxPool2D": GlobalMaxPooling2D,
    "BatchNormalization": BatchNormalization,
    "Activation": Activation,
    "ReLU": ReLU,
    "LeakyReLU": LeakyReLU,
    "Softmax": Softmax,
    "Dropout": Dropout,
    "Flatten": Flatten,
    "Add": Add,
    "Subtract": Subtract,
    "Average": Average,
    "Multiply": Multiply,
    "Concatenate": Concatenate,
    "Maximum": Maximum,
    "Minimum": Minimum,
    "ZeroPadding2D": ZeroPadding2D,
    "Cropping2D": Cropping2D,
    "DepthwiseConv2D": DepthwiseConv2D,
    "SeparableConv2D": SeparableConv2D,
    "SeparableConvolution2D": SeparableConv2D,
    "Conv2DTranspose": Conv2DTranspose,
    "Convolution2DTranspose": Conv2DTranspose,
    "UpSampling2D": UpSampling2D,
    "Reshape": Reshape,
    "Permute": Permute,
    "Rescaling": Rescaling,
    "Normalization": Normalization,
    "LayerNormalization": LayerNormalization,
    # the identity at inference
    **{name: Identity for name in ("SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
                                   "GaussianDropout", "GaussianNoise", "AlphaDropout",
                                   "ActivityRegularization", "StochasticDepth")},
    # the custom layers keras.applications defines and saves by name
    "CustomScaleLayer": CustomScaleLayer,
    "LayerScale": LayerScale,
}

# keys a config must have for the layer to mean anything (a missing one is a ParseError)
_REQUIRED = {"Dense": ("units",), "Conv2D": ("filters", "kernel_size"),
             "Convolution2D": ("filters", "kernel_size"), "Activation": ("activation",),
             "Dropout": ("rate",)}
_ANY = None  # a _BENIGN entry of None means: whatever the value
# keys Keras writes that do not change the inference graph when they have these values
_BENIGN = {"quantization_config": (None,), "renorm": (False,), "renorm_clipping": (None,),
           "renorm_momentum": None, "fused": None, "virtual_batch_size": (None,),
           "adjustment": (None,), "lora_enabled": (False,), "build_config": None}


class FileBuilder(GraphBuilder):
    """The builder's state, handing each layer its weights from the file (checked here).

    ``weights`` maps layer names to arrays in Keras order and layout (``None``: every layer
    draws from the initializers); ``used`` collects the layers that took theirs.
    """

    def __init__(self, graph: Graph, rng: np.random.Generator, default_format: str,
                 file: str | None, weights: Mapping[str, Sequence[np.ndarray]] | None):
        super().__init__(graph, rng, default_format)
        self.file = file
        self.given = weights
        self.used: set[str] = set()

    def weights(self, layer: Layer, specs: list) -> list[np.ndarray]:
        if self.given is not None and specs:
            layer.initial_weights = self._file_weights(layer, specs)
            self.used.add(layer.name)
        return super().weights(layer, specs)

    def _file_weights(self, layer: Layer, specs: list) -> list:
        """The layer's arrays from the file, checked against ``specs`` (count, shape, dtype)."""
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
        return arrays


class Assembler:
    """Turns a config's ordered layer entries into a verified graph.

    ``weights`` maps layer names to arrays (``None``: initialize from ``default_rng(seed)``);
    errors name ``file`` and the entry's line.
    """

    def __init__(self, file: str | None, weights, seed: int):
        self.file = file
        self.weights = weights
        self.seed = seed

    def build(self, name: str, entries: list[LayerEntry], inputs: list[str],
              outputs: list[str]) -> Graph:
        """The graph of ``entries`` (producers first) with the given input/output layers."""
        layers = {e.name: self.make_layer(e) for e in entries}
        # the model's layout is its first spatial layer's stated data format (Keras' default
        # channels_last when none states one)
        flat = [l for layer in layers.values() for l in (
            layer.all_layers() if isinstance(layer, NestedModel) else [layer])]
        spatial = [l for l in flat if l.spatial and l.data_format]
        layout = spatial[0].data_format if spatial else CHANNELS_LAST
        g = Graph(name)
        b = FileBuilder(g, np.random.default_rng(self.seed), layout, self.file, self.weights)
        b.layout = layout
        tensors: dict[str, str] = {}
        for e in entries:
            tensors[e.name] = self._add_layer(b, e, layers[e.name], tensors)
        self._check_unused(entries, b.used)
        g.set_outputs(self._outputs(b, entries, outputs, tensors))
        g.verify()
        return g

    def make_layer(self, e: LayerEntry):
        """The builder layer of one entry (a :class:`NestedModel` for a model used as a layer),
        pointing at the entry's line in the file."""
        if e.cls in MODEL_CLASSES:
            return NestedModel(self, e)
        cls = LAYER_CLASSES.get(e.cls)
        if cls is None:
            known = sorted(LAYER_CLASSES)
            raise UnsupportedError(f"layer class {e.cls!r} is not supported; graphrt reads "
                                   f"{', '.join(known)} and nested Sequential/Functional models",
                                   node=e.name, op=e.cls, file=self.file, line=e.line)
        for key in _REQUIRED.get(e.cls, ()):
            if key not in e.config:
                raise ParseError(f"{e.cls} config is missing {key!r}", node=e.name, op=e.cls,
                                 file=self.file, line=e.line)
        if e.cls == "InputLayer" and not any(e.config.get(k) is not None
                                             for k in INPUT_SHAPE_KEYS):
            raise ParseError("InputLayer config has no 'batch_shape' (Keras 2: "
                             "'batch_input_shape')", node=e.name, op=e.cls, file=self.file,
                             line=e.line)
        try:
            layer = cls(**_layer_kwargs(e))
        except GraphrtError as err:
            raise self._relocate(err, e) from None
        except (TypeError, ValueError, OverflowError) as err:  # OverflowError: int(inf)
            raise ParseError(f"bad {e.cls} config: {err}", node=e.name, op=e.cls, file=self.file,
                             line=e.line) from None
        layer.file, layer.line = self.file, e.line
        return layer

    def _relocate(self, err: GraphrtError, e: LayerEntry) -> GraphrtError:
        """Point an error raised while constructing a layer at the config, not at Python code."""
        err.node, err.op, err.file, err.line = e.name, e.cls, self.file, e.line
        err.args = (err._render(),)
        return err

    def _add_layer(self, b: FileBuilder, e: LayerEntry, layer: Layer,
                   tensors: Mapping[str, str]) -> str:
        """Append one layer's nodes on its inputs' tensors; returns its output tensor."""
        if e.cls == "InputLayer":
            return self._input(b, layer, e)
        ins = [tensors[s] for s in e.inbound]
        if isinstance(layer, NestedModel):
            return layer.add(b, ins)
        if e.constants:
            return self._with_constant(b, e, layer, ins)
        n_params = len(b.g.params)
        try:
            if isinstance(layer, MergeLayer):
                return layer.merge(b, ins)  # no parameters to freeze
            if len(ins) != 1:
                raise UnsupportedError(f"{e.cls} takes one input, the config gives "
                                       f"{len(ins)} ({', '.join(e.inbound)})", node=e.name,
                                       op=e.cls, file=self.file, line=e.line)
            b.tensor = ins[0]
            layer.add_nodes(b)
        except GraphrtError as err:
            raise err.locate(node=e.name, op=e.cls, file=self.file, line=e.line)
        except (TypeError, ValueError, OverflowError) as err:  # as in _make_layer: a config value
            # of the wrong type (groups=None, a string where a number belongs, NaN)
            raise ParseError(f"bad {e.cls} config: {err}", node=e.name, op=e.cls, file=self.file,
                             line=e.line) from None
        if e.config.get("trainable") is False:  # the parameters this layer added (the newest)
            for p in itertools.islice(reversed(b.g.params), len(b.g.params) - n_params):
                if p.startswith(e.name + "/"):
                    b.g.param_info[p].trainable = False
        return b.tensor

    def _with_constant(self, b: FileBuilder, e: LayerEntry, layer, ins: list[str]) -> str:
        """An operation node of one tensor and one number (MobileNetV3 writes its hard sigmoid
        as ``ReLU6(x + 3.0) * (1 / 6)``): a ``scale`` or ``clip`` node."""
        if len(ins) != 1 or len(e.constants) != 1:
            raise UnsupportedError(f"{e.cls} of {len(ins)} tensors and {len(e.constants)} "
                                   "numbers (graphrt takes one of each)", node=e.name, op=e.cls,
                                   file=self.file, line=e.line)
        (position, c), first = e.constants[0], e.constants[0][0] == 0
        attrs = {"Add": ("scale", {"shift": c}), "Multiply": ("scale", {"scale": c}),
                 "Subtract": ("scale", {"scale": -1.0, "shift": c} if first else {"shift": -c}),
                 "Maximum": ("clip", {"min": c}), "Minimum": ("clip", {"max": c})}
        if e.cls in ("Divide", "TrueDivide") and not first:
            attrs[e.cls] = ("scale", {"scale": 1.0 / c})
        if e.cls not in attrs:
            raise UnsupportedError(f"{e.cls} with a constant operand", node=e.name, op=e.cls,
                                   file=self.file, line=e.line)
        op, a = attrs[e.cls]
        return b.g.add_node(op, ins, name=e.name, attrs=a,
                            source=Source(e.name, e.cls, self.file, e.line))

    def _input(self, b: FileBuilder, layer: InputLayer, e: LayerEntry) -> str:
        """Declare a model input (and its ``to_nchw`` transpose when channels_last)."""
        shape = known_input_shape(layer, layer.input_shape)
        return b.add_input(e.name, shape, Source(e.name, e.cls, self.file, e.line))

    def _outputs(self, b: FileBuilder, entries: list[LayerEntry], outputs: list[str],
                 tensors: Mapping[str, str]) -> list[str]:
        """The graph outputs of the model's output layers, in Keras' layout."""
        by_name = {e.name: e for e in entries}
        g = b.g
        outs = []
        for lname in outputs:
            e = by_name[lname]
            source = Source(lname, e.cls, self.file, e.line)
            t = tensors[lname]
            if t in g.inputs or t in outs:  # an output that no node produces (or a repeat)
                t = g.add_node("identity", [t], name=g.unique_name(f"{lname}/identity"),
                               source=source)
            outs.append(b.to_keras_layout(t, lname, source))
        return outs

    def _check_unused(self, entries: list[LayerEntry], used: set[str]) -> None:
        """A WeightError for arrays given to a layer that has no weights."""
        if self.weights is None:
            return
        for e in entries:
            arrays = self.weights.get(e.name)
            if arrays and e.name not in used:
                raise WeightError(f"the weights hold {len(arrays)} arrays for layer {e.name!r} "
                                  f"({e.cls}), which has no weights", node=e.name, op=e.cls,
                                  file=self.file, line=e.line)


class NestedModel:
    """A Sequential or functional model used as a layer of another: its layers are added in
    place, its inputs bound to the outer layer's input tensors."""

    def __init__(self, assembler: "Assembler", e: LayerEntry):
        self.assembler, self.entry = assembler, e
        cfg, file = e.config, assembler.file
        raw = cfg.get("layers")
        if not isinstance(raw, list) or not raw:
            raise ParseError(f"nested model {e.name!r} has no 'layers' list", node=e.name,
                             op=e.cls, file=file, line=e.line)
        functional = e.cls != "Sequential"
        self.entries = read_entries(raw, file, {}, functional)
        io = functional_io if functional else sequential_io
        self.inputs, self.outputs = (io(cfg, self.entries, file) if functional else
                                     io({"class_name": e.cls, "config": cfg}, cfg, self.entries,
                                        file))
        if len(self.outputs) != 1:
            raise UnsupportedError(f"nested model {e.name!r} has {len(self.outputs)} outputs; "
                                   "graphrt supports one", node=e.name, op=e.cls, file=file,
                                   line=e.line)
        self.layers = {n.name: assembler.make_layer(n) for n in self.entries}

    def all_layers(self) -> list:
        return [l for layer in self.layers.values() for l in (
            layer.all_layers() if isinstance(layer, NestedModel) else [layer])]

    def add(self, b: FileBuilder, ins: list[str]) -> str:
        e = self.entry
        if len(ins) != len(self.inputs):
            raise UnsupportedError(f"nested model {e.name!r} takes {len(self.inputs)} inputs, "
                                   f"the config gives {len(ins)}", node=e.name, op=e.cls,
                                   file=self.assembler.file, line=e.line)
        tensors = dict(zip(self.inputs, ins))
        for n in self.entries:
            if n.name not in tensors:
                tensors[n.name] = self.assembler._add_layer(b, n, self.layers[n.name], tensors)
        b.tensor = tensors[self.outputs[0]]
        return b.tensor


def _layer_kwargs(e: LayerEntry) -> dict:
    """The layer class's keyword arguments from the entry's config."""
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
    return kwargs


__all__ = ["LAYER_CLASSES", "Assembler", "FileBuilder"]
