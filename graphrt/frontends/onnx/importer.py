"""ONNX: a ``.onnx`` model (or a ``ModelProto``) as a :class:`Graph`, with the ``onnx`` package.

    g = graphrt.load("resnet50.onnx")                        # or load_onnx(model_proto)

What becomes what:

- **Initializers** are constants; one becomes a parameter (under its ONNX name) when a converted op
  reads it as a tensor. Initializers nothing reads are ignored.
- **Shape arithmetic** (``Constant``, ``ConstantOfShape``, ``Shape``, ``Gather``, ``Slice``,
  ``Concat``, ``Cast``, ``Unsqueeze``, ... and any op whose inputs are all constant) is folded at load
  by :mod:`.fold`; the ops that compute on tensors are converted by :mod:`.ops`, those that move
  data by :mod:`.layout_ops`.
- **The batch.** With ``batch="symbolic"`` the first input's first dimension becomes graphrt's
  symbolic batch (``None``), and so does the first dimension of every other input of the same rank
  and the same declared first dimension; fixed-batch models then run any batch. A ``Reshape`` whose
  target starts with the declared batch (``[1, -1]`` in a batch-1 model), with ``0`` or with the
  folded ``Shape`` of the batch keeps it. A model that moves the batch away from axis 0 or computes
  with it (``Transpose`` of axis 0, ``Flatten`` with axis 0, a ``Gemm`` with ``transA``, ...) raises
  :class:`~.fold.BatchError`. ``batch="static"`` keeps every declared dimension (the graph
  then has no batch and runs only the declared shapes); ``batch="auto"`` (the default) tries
  symbolic first and falls back to static, logging why.

Opsets 9 and later of the default domain are read. Any other op, or one whose inputs graphrt cannot
express, raises a :class:`GraphrtError` naming the ONNX node, its op and the file. The file is parsed
as protobuf data (``onnx.load``): nothing in it is executed.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ...ir.errors import AttrError, GraphError, GraphrtError, UnsupportedError, WeightError
from ...ir import Graph, Source, TensorSpec
from ...ir.limits import Budget
from ..files import bounded_memory
from .reading import MIN_OPSET, opset_of, read_model, upgrade
from .fold import (NONDETERMINISTIC, BatchError, Const, ConstantInputError, fold, foldable,
                   node_attrs, np_dtype)
from .layout_ops import CONVERTERS as LAYOUT_CONVERTERS
from .ops import CONVERTERS as COMPUTE_CONVERTERS
from .ops_more import CONVERTERS as MORE_CONVERTERS

CONVERTERS = {**COMPUTE_CONVERTERS, **LAYOUT_CONVERTERS, **MORE_CONVERTERS}

log = logging.getLogger(__name__)

BATCH_MODES = ("auto", "symbolic", "static")


@bounded_memory
def load_onnx(source, *, batch: str = "auto", input_shape: Sequence[int] | None = None,
              batch_size: int | None = None, constants: Mapping[str, np.ndarray] | None = None) -> Graph:
    """Convert an ONNX model (a path, bytes or a ``ModelProto``) into a :class:`Graph`.

    ``batch`` is ``"auto"``, ``"symbolic"`` or ``"static"`` (see the module docstring);
    ``input_shape`` gives the dimensions after the batch of the first input where the model leaves
    them symbolic; ``batch_size`` is the batch the model was exported with when its batch dimension
    is symbolic (``from_torch`` passes its example's). ``constants`` binds graph inputs to values,
    as if they were initializers (for inputs that feed a Reshape target, Pad pads, ...).
    """
    if batch not in BATCH_MODES:
        raise GraphrtError(f"batch must be one of {BATCH_MODES}, got {batch!r}")
    file = None if isinstance(source, bytes) or hasattr(source, "graph") else str(source)
    model = upgrade(read_model(source, file), file)
    options = dict(file=file or "<onnx>", input_shape=input_shape, batch_size=batch_size,
                   constants=constants or {})
    if batch == "static":
        return _Converter(model, symbolic=False, **options).build()
    try:
        return _Converter(model, symbolic=True, **options).build()
    except GraphrtError as err:
        if batch == "symbolic" or (isinstance(err, UnsupportedError) and not isinstance(err, BatchError)):
            raise
        first = err
    try:
        graph = _Converter(model, symbolic=False, **options).build()
    except GraphrtError as err:
        raise (err if isinstance(first, BatchError) else first) from None
    log.info("%s: no symbolic batch (%s); the graph keeps the declared input shapes", file, first)
    return graph


class _Converter:
    """One conversion of a model; the op converters call the methods below."""

    def __init__(self, model, *, symbolic: bool, file: str, input_shape, batch_size, constants):
        self.model, self.symbolic, self.file = model, symbolic, file
        self.constants = {k: Const(np.asarray(v)) for k, v in constants.items()}
        self.opset = opset_of(model)
        self.graph = Graph(model.graph.name or Path(file).stem or "onnx")
        self.values: dict[str, str | Const] = {}
        self.params: dict[str, str] = {}   # ONNX constant name -> parameter tensor
        self.input_shape = None if input_shape is None else tuple(int(d) for d in input_shape)
        self.batch0 = batch_size
        self.used = {t for n in model.graph.node for t in n.input} | {o.name for o in model.graph.output}
        self.node = None
        self.name = ""
        self.budget = Budget()  # initializers (parameters) and folded constants of this load

    # ---- the whole model ----------------------------------------------------------------------
    def build(self) -> Graph:
        if self.opset < MIN_OPSET:
            raise UnsupportedError(f"the model uses opset {self.opset}; graphrt reads opset "
                                   f"{MIN_OPSET} and later (onnx.version_converter can convert it)",
                                   file=self.file)
        from onnx import numpy_helper

        for init in self.model.graph.initializer:
            try:
                dtype = np_dtype(init.data_type)
            except UnsupportedError:
                dtype = None  # to_array below says what is wrong
            if dtype is not None:
                self.budget.take_array("param", f"initializer {init.name!r}", init.dims, dtype,
                                       file=self.file)
            try:
                self.values[init.name] = Const(numpy_helper.to_array(init))
            except (KeyError, ValueError, TypeError) as err:  # dims that do not fit its data, ...
                raise WeightError(f"initializer {init.name!r} is malformed: {type(err).__name__}: "
                                  f"{err}", file=self.file) from None
        unknown = set(self.constants) - {i.name for i in self.model.graph.input}
        if unknown:
            raise GraphrtError(f"constants given for {sorted(unknown)}, which are not graph inputs",
                               file=self.file)
        self.values.update(self.constants)
        self._declare_inputs()
        names: set[str] = set()
        for index, node in enumerate(self.model.graph.node):
            name = node.name if node.name and node.name not in names else f"{node.op_type}_{index}"
            names.add(name)
            self._convert(node, name)
        self._set_outputs()
        return self.graph.verify()

    def _declare_inputs(self):
        declared = [i for i in self.model.graph.input if i.name not in self.values]
        first = None
        for k, info in enumerate(declared):
            tt = info.type.tensor_type
            if not info.type.HasField("tensor_type"):
                raise UnsupportedError(f"input {info.name!r} is not a tensor", node=info.name,
                                       file=self.file)
            dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                    for d in tt.shape.dim]
            if k == 0:
                first = (len(dims), dims[0] if dims else None)
                if dims and isinstance(dims[0], int) and self.batch0 is None:
                    self.batch0 = dims[0]
                if self.input_shape is not None:
                    dims = dims[:1] + list(self.input_shape)
            batched = self.symbolic and bool(dims) and (len(dims), dims[0]) == first
            if not batched and dims and not isinstance(dims[0], int):
                dims[0] = self.batch0 or 1
            shape = [None if batched and i == 0 else d for i, d in enumerate(dims)]
            if any(isinstance(d, str) for d in shape):
                raise UnsupportedError(f"input {info.name!r} has symbolic dimensions {dims}; graphrt "
                                       "needs sizes after the batch (pass input_shape=)",
                                       node=info.name, file=self.file)
            self.graph.add_input(info.name, shape, str(np_dtype(tt.elem_type)))
            self.values[info.name] = info.name

    def _convert(self, node, name: str):
        self.node, self.name = node, name
        ins = [self.values.get(t) if t else None for t in node.input]
        for t, v in zip(node.input, ins):
            if t and v is None:
                raise GraphError(f"input {t!r} is produced by no earlier node, initializer or graph "
                                 "input", node=name, op=node.op_type, file=self.file)
        if node.op_type == "If" and isinstance(ins[0], Const) and not ins[0].symbolic:
            self._inline_branch(node, name, bool(ins[0].value))
            return
        try:
            constant = (all(v is None or isinstance(v, Const) for v in ins)
                        and node.op_type not in NONDETERMINISTIC
                        and (any(v is not None for v in ins) or node.op_type == "Constant"))
            if constant and foldable(node):
                outs = fold(node, ins, self.opset, self.budget)
            elif node.op_type in CONVERTERS and node.domain in ("", "ai.onnx"):
                outs = CONVERTERS[node.op_type](self, node_attrs(node), ins)
            elif constant:
                raise UnsupportedError(
                    f"ONNX op {node.op_type!r} has constant inputs but is not run at load: folding "
                    "runs only ops whose output size is known before they run (no loops; see "
                    "graphrt.frontends.onnx.bounds), and graphrt has no run-time "
                    f"{node.op_type}")
            else:
                raise UnsupportedError(
                    f"ONNX op {node.op_type!r}" + (f" of domain {node.domain!r}" if node.domain else "")
                    + " is not supported with inputs computed at run time; graphrt converts "
                    + ", ".join(sorted(CONVERTERS)))
        except GraphrtError as err:
            raise err.locate(node=name, op=node.op_type, file=self.file)
        except (IndexError, KeyError, ValueError, TypeError, OverflowError) as err:
            # a malformed node (an attribute of the wrong length or type, an unknown data type)
            raise AttrError(f"malformed {node.op_type} node: {type(err).__name__}: {err}",
                            node=name, op=node.op_type, file=self.file) from None
        for t, v in zip(node.output, outs):
            if t:
                self.values[t] = v
        for i, t in enumerate(node.output[len(outs):], len(outs)):
            if t and t in self.used:
                raise UnsupportedError(f"output {i} ({t!r}) of {node.op_type} is used, but graphrt "
                                       "computes only its first output(s) (inference mode)",
                                       node=name, op=node.op_type, file=self.file)

    def _inline_branch(self, node, name: str, condition: bool):
        """An ``If`` whose condition folds at load (PyTorch's exporter guards ``squeeze`` so) is
        its taken branch, converted in place."""
        branch = node_attrs(node)["then_branch" if condition else "else_branch"]
        for index, sub in enumerate(branch.node):
            self._convert(sub, f"{name}/{sub.name or f'{sub.op_type}_{index}'}")
        self.node, self.name = node, name
        for t, out in zip(node.output, branch.output):
            if t:
                self.values[t] = self.values[out.name]

    def _set_outputs(self):
        outputs = []
        self.node = None
        for info in self.model.graph.output:
            v = self.values[info.name]
            self.name = info.name
            if isinstance(v, Const):
                if v.symbolic or v.value.dtype.kind != "f":
                    raise UnsupportedError(f"output {info.name!r} is a constant {v.value.dtype} tensor "
                                           "computed at load; graphrt outputs computed float tensors",
                                           node=info.name, file=self.file)
                v = self.param(v.value, f"{info.name}/value")
            if v != info.name or v in self.graph.inputs or v in outputs or v in self.graph.params:
                v = self.add("identity", [v], out=info.name)
            outputs.append(v)
        self.graph.set_outputs(outputs)

    # ---- helpers for the converters ------------------------------------------------------------
    @property
    def op_type(self) -> str:
        return self.node.op_type

    def input(self, i: int):
        """Input ``i`` of the current node: a tensor name, a :class:`Const`, or None if absent."""
        if i >= len(self.node.input) or not self.node.input[i]:
            return None
        return self.values[self.node.input[i]]

    def const(self, i: int, what: str) -> Const | None:
        """Input ``i`` as a constant (None if absent); a tensor computed at run time is an error."""
        v = self.input(i)
        if isinstance(v, str) and v in self.graph.inputs:
            raise ConstantInputError(f"the {what} is graph input {v!r}, but graphrt needs it at load "
                                     "time (bind it with constants=)", v)
        if v is not None and not isinstance(v, Const):
            raise UnsupportedError(f"the {what} ({self.node.input[i]!r}) must be known at load time, "
                                   "but it is computed from the graph inputs")
        return v

    def tensor(self, i: int, *, batched: bool | None = None, any_dtype: bool = False) -> str:
        """Input ``i`` as a graph tensor (a constant becomes a parameter) of floating point dtype
        (of any dtype with ``any_dtype``). ``batched=False`` refuses a tensor that carries the
        batch."""
        v = self.input(i)
        name = self.node.input[i]
        if isinstance(v, Const):
            if name not in self.params:
                self.params[name] = self.param(v.value, name) if not v.symbolic else None
            if self.params[name] is None:
                raise BatchError(f"input {name!r} is computed from the batch size")
            v = self.params[name]
        spec = self.spec(v)
        if not any_dtype and spec.dtype not in ("float32", "float64", "float16"):
            raise UnsupportedError(f"input {name!r} is {spec.dtype}; graphrt computes in floating point")
        if batched is False and spec.batched:
            raise BatchError(f"input {name!r} carries the batch but {self.op_type} needs it fixed")
        return v

    def spec(self, tensor: str) -> TensorSpec:
        return self.graph.specs[tensor]

    def param(self, value: np.ndarray, base: str) -> str:
        if value.dtype.kind == "f" and value.dtype not in (np.float16, np.float32, np.float64):
            value = value.astype(np.float32)
        name = base if base not in self.graph.specs else self.graph.unique_name(base)
        return self.graph.add_param(name, np.ascontiguousarray(value))

    def source(self) -> Source:
        if self.node is None:  # an identity giving a graph output its ONNX name
            return Source(layer=self.name, type="Identity", file=self.file)
        return Source(layer=self.node.name or self.node.output[0], type=self.node.op_type, file=self.file)

    def add(self, op: str, inputs: Sequence[str], attrs=None, *, out: str | None = None,
            suffix: str | None = None) -> str:
        """Add a graphrt node for the current ONNX node. ``out`` names its output after an ONNX
        value; intermediates get ``<ONNX output>/<suffix>``."""
        first = self.node.output[0] if self.node is not None else self.name
        if out is None:
            out = f"{first}/{suffix or op}"
            out = out if out not in self.graph.specs else self.graph.unique_name(out)
        node = self.name if out == first else f"{self.name}/{out.rsplit('/', 1)[-1]}"
        node = node if node not in self.graph else self.graph.unique_name(node)
        return self.graph.add_node(op, list(inputs), name=node, attrs=attrs, outputs=[out],
                                   source=self.source())

    def emit(self, op: str, inputs: Sequence[str], attrs=None, index: int = 0) -> str:
        """Add the graphrt node that computes ONNX output ``index`` of the current node."""
        return self.add(op, inputs, attrs, out=self.node.output[index])

    def reshape(self, x: str, dims: Sequence, *, final: bool = True, literal_batch: bool = False) -> str:
        """Reshape ``x`` to ``dims`` (None = the batch, -1 = inferred). ``literal_batch`` lets a
        leading -1 or the declared batch size stand for the batch (ONNX Reshape targets)."""
        spec = self.spec(x)
        dims = list(dims)
        if spec.batched:
            lead, rest = dims[0], dims[1:]
            per_item = int(np.prod(spec.shape[1:], dtype=np.int64))
            fits = -1 in rest or int(np.prod(rest, dtype=np.int64)) == per_item
            keeps = lead is None or (literal_batch and fits and -1 not in rest and lead == -1) or (
                literal_batch and fits and lead == self.batch0)
            if None in rest or not keeps:
                raise BatchError(f"{self.op_type} to ({', '.join('N' if d is None else str(d) for d in dims)})"
                                 f" does not keep the batch of {spec} as the first axis")
        else:
            if None in dims:
                raise BatchError(f"{self.op_type} puts a batch into unbatched {spec}")
            try:
                full = np.empty(spec.shape, np.int8).reshape(dims).shape
            except ValueError:
                raise GraphError(f"{self.op_type} cannot reshape {spec} to {tuple(dims)}") from None
            if not full or full[0] != spec.shape[0]:
                raise UnsupportedError(f"{self.op_type} of unbatched {spec} to {full} changes its "
                                       "leading axis, which graphrt's reshape keeps")
            rest = list(full[1:])
        attrs = {"shape": tuple(rest)}
        return self.emit("reshape", [x], attrs) if final else self.add("reshape", [x], attrs)
