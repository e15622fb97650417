"""graphrt as an ONNX backend (``onnx.backend.base.Backend``), so ONNX's own backend test runner
(``onnx.backend.test.runner.Runner``) can run its node and model tests on it::

    import graphrt.frontends.onnx.backend as backend
    rep = backend.prepare(model, "CPU")     # load_onnx + graphrt.compile
    outputs = rep.run([x])                  # a tuple in the model's output order

``prepare`` converts the model with :func:`graphrt.frontends.onnx.load_onnx` (``batch="auto"``) and
compiles it for the cpu device (``"CUDA"`` compiles for graphrt's cuda device where CuPy sees a GPU)
at ``opt_level`` (default 3: every pass). The executable is compiled for the batch the model
declares and runs larger batches in chunks.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from onnx.backend.base import Backend, BackendRep

from ...ir.errors import InputError
from .importer import load_onnx
from .reading import read_model
from .fold import ConstantInputError
from ...ir import Graph
from ...devices import registry
from ...scheduler import compile as compile_graph

DEVICES = {"CPU": "cpu", "CUDA": "cuda"}
FLOAT_TYPES = (1, 10, 11)  # TensorProto FLOAT, FLOAT16, DOUBLE


class GraphrtRep(BackendRep):
    """A prepared model: its executable(s) and the ONNX input and output order.

    Graph inputs that feed operands graphrt needs at load time (integer inputs, a Reshape target,
    Pad pads, a Dropout ratio, ...) are bound to the values given to :meth:`run`: the model is
    converted and compiled once per distinct set of those values.
    """

    def __init__(self, model, device: str, opt_level: int, batch: str):
        self.model, self.device, self.opt_level, self.batch = model, device, opt_level, batch
        inits = {i.name for i in model.graph.initializer}
        self.input_names = [i.name for i in model.graph.input if i.name not in inits]
        self.bound = {i.name for i in model.graph.input if i.name not in inits
                      and i.type.HasField("tensor_type")
                      and i.type.tensor_type.elem_type not in FLOAT_TYPES}
        self._compiled: dict[tuple, tuple[Graph, object]] = {}
        self._feeds: dict[str, np.ndarray] = {}
        if not self.bound:
            try:
                self._compile({})
            except ConstantInputError as err:
                self.bound.add(err.input)

    def _compile(self, constants: dict) -> tuple:
        key = tuple((k, v.dtype.str, v.shape, v.tobytes()) for k, v in sorted(constants.items()))
        if key not in self._compiled:
            while True:
                try:
                    graph = load_onnx(self.model, batch=self.batch, constants=constants)
                    break
                except ConstantInputError as err:
                    if err.input in constants or err.input not in self._feeds:
                        raise
                    self.bound.add(err.input)
                    constants = {**constants, err.input: self._feeds[err.input]}
            batch = max((graph.specs[t].shape[0] or self._declared_batch()
                         for t in graph.inputs if graph.specs[t].shape), default=1)
            exe = compile_graph(graph, device=self.device, batch_size=batch, opt_level=self.opt_level)
            self._compiled[key] = (graph, exe)
        return self._compiled[key]

    def _declared_batch(self) -> int:
        """The first input's declared first dimension (1 when symbolic): the batch to compile for,
        so that results computed over the whole batch see all of it."""
        for info in self.model.graph.input:
            if info.name in self.input_names:
                dims = info.type.tensor_type.shape.dim
                return dims[0].dim_value if dims and dims[0].dim_value > 0 else 1
        return 1

    @property
    def graph(self) -> Graph:
        """The graph of the most recent compilation."""
        return next(reversed(self._compiled.values()))[0]

    def run(self, inputs: Any, **kwargs) -> tuple:
        """Run on ``inputs``: a list in the model's input order, a dict, or one array."""
        if kwargs:
            raise InputError(f"GraphrtRep.run takes no options, got {sorted(kwargs)}")
        if isinstance(inputs, dict):
            feeds = dict(inputs)
        else:
            inputs = [inputs] if isinstance(inputs, np.ndarray) else list(inputs)
            if len(inputs) != len(self.input_names):
                raise InputError(f"the model takes {len(self.input_names)} inputs "
                                 f"{self.input_names}, got {len(inputs)}")
            feeds = dict(zip(self.input_names, inputs))
        self._feeds = {k: np.asarray(v) for k, v in feeds.items()}
        graph, exe = self._compile({k: self._feeds[k] for k in self.bound})
        out = exe({k: feeds[k] for k in graph.inputs})
        if not isinstance(out, dict):
            out = {graph.outputs[0]: out}
        return tuple(out[t] for t in graph.outputs)


class GraphrtBackend(Backend):
    """The ONNX backend interface over :func:`load_onnx` and :func:`graphrt.compile`."""

    @classmethod
    def prepare(cls, model, device: str = "CPU", *, opt_level: int = 3, batch: str = "auto") -> GraphrtRep:
        """Convert and compile ``model`` (a ``ModelProto``, bytes or a path) for ``device``."""
        return GraphrtRep(read_model(model), _device(device), opt_level, batch)

    @classmethod
    def run_model(cls, model, inputs, device: str = "CPU", **options) -> tuple:
        return cls.prepare(model, device, **options).run(inputs)

    @classmethod
    def run_node(cls, node, inputs: Sequence[np.ndarray], device: str = "CPU",
                 outputs_info=None, **options) -> tuple:
        """Run one ONNX node on ``inputs`` (wrapped in a one-node model; ONNX's shape inference
        types its outputs)."""
        import onnx
        from onnx import helper

        ins = [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(np.asarray(x).dtype),
                                             np.shape(x)) for name, x in zip(node.input, inputs)]
        graph = helper.make_graph([node], "node", ins, [])
        inferred = onnx.shape_inference.infer_shapes(helper.make_model(graph)).graph.value_info
        types = {v.name: v for v in inferred}
        graph.output.extend(types.get(name) or helper.make_tensor_value_info(name, 1, None)
                            for name in node.output)
        return cls.run_model(helper.make_model(graph), list(inputs), device, **options)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        kind = device.split(":")[0]
        if kind == "CUDA":
            return registry.available("cuda")
        return kind == "CPU"


def _device(device: str) -> str:
    kind = device.split(":")[0]
    if kind not in DEVICES:
        raise InputError(f"unknown ONNX device {device!r}: use 'CPU' or 'CUDA'")
    return DEVICES[kind]


prepare = GraphrtBackend.prepare
run_model = GraphrtBackend.run_model
run_node = GraphrtBackend.run_node
supports_device = GraphrtBackend.supports_device
