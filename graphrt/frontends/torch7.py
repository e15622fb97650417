"""Lua Torch7's ``nn`` in Python, argument orders kept, producing a graphrt Graph.

Write the model as the Lua code reads (``:`` becomes ``.``) and call ``to_graph``::

    from graphrt.frontends import torch7 as nn
    net = nn.Sequential()
    net.add(nn.SpatialConvolution(1, 20, 5, 5)).add(nn.SpatialMaxPooling(2, 2, 2, 2))
    net.add(nn.View(-1).setNumInputDims(3))
    net.add(nn.Linear(20 * 12 * 12, 10)).add(nn.LogSoftMax())
    g = net.to_graph(input_shape=(1, 28, 28), seed=0)

The graph is always in batch mode: ``input_shape`` excludes the batch, and the graph input
``input`` is ``(None, *input_shape)``, as Torch sees a batch.

Modules
-------
Containers: ``Sequential``, ``Concat(dim)``, ``DepthConcat(dim)``; ``add`` returns the container
(as Lua's ``net:add(m)`` returns ``net``), ``get(i)`` is 1-based, ``size()``.
``dim`` is written as in Torch, 1-based and counting the batch: ``Concat(2)`` on (N, C, H, W)
concatenates channels (graph axis 1). ``DepthConcat`` zero-pads smaller spatial maps, centred as
Torch does (``floor((H_max - h) / 2)`` rows before, the rest after).

Layers: ``SpatialConvolution(nIn, nOut, kW, kH, dW=1, dH=1, padW=0, padH=padW)`` (and
``SpatialConvolutionMM``; ``.noBias()``), ``SpatialMaxPooling(kW, kH, dW=kW, dH=kH, padW=0,
padH=0)`` and ``SpatialAveragePooling(kW, kH, dW=1, dH=1, padW=0, padH=0)`` with ``.ceil()`` /
``.floor()`` (and ``.setCountIncludePad()`` / ``.setCountExcludePad()``; Torch counts padding by
default), ``SpatialBatchNormalization(n, eps=1e-5, momentum=0.1, affine=True)``,
``BatchNormalization`` (2-D), ``SpatialCrossMapLRN(size, alpha, beta, k)``,
``Linear(inputSize, outputSize, bias=True)``, ``ReLU``, ``LeakyReLU(negval)``, ``Tanh``,
``Sigmoid``, ``SoftMax``, ``LogSoftMax`` (over the features, graph axis 1), ``Dropout(p)``,
``MulConstant(c)``, ``AddConstant(c)``, ``Identity``, ``SpatialZeroPadding(padLeft, padRight,
padTop, padBottom)`` (negative values crop), ``View(sizes...)`` with ``.setNumInputDims(n)``
and ``Reshape(sizes...)``. ``View(-1)`` without ``setNumInputDims`` would fold the batch into one
dimension in Torch; graphrt refuses it with advice. Methods that return ``self`` in Lua return
``self`` here, so calls chain.

Names, parameters, sources
--------------------------
Every module gets its index path in the container tree, 1-based as Torch prints it: the third
module of the root Sequential is ``3``, the second module of the first branch of a Concat at
position 5 is ``5.1.2``. Nodes are named ``<path>_<Type>`` (``10_Linear``,
``5.2.1_SpatialConvolution``; helper nodes ``<path>_<Type>/<what>``) and parameters
``<path>_<field>`` with Torch's field names: ``<path>_weight``, ``<path>_bias`` (OIHW / (out, in)
like Torch itself), ``<path>_running_mean``, ``<path>_running_var`` (not trainable). A module used
as the root itself has path ``1``.

Every node's :class:`~graphrt.graph.Source` is ``(node name, Torch class name, file, line)`` with
the Python file and line where the module object was constructed, so a shape error such as a
``Linear(500, 10)`` fed 10 features points at that line.

Initialization follows Torch's ``reset()``: weights and biases of ``Linear`` and
``SpatialConvolution`` are U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (fan_in = nIn*kW*kH or inputSize);
``SpatialBatchNormalization`` weight U(0, 1), bias 0, running mean 0, running var 1 — drawn from
``np.random.default_rng(seed)`` in module order, weight before bias.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ..errors import AttrError, GraphError, GraphrtError, ShapeError, UnsupportedError
from ..graph import Graph, Source
from ._init import caller_location, torch_default


def _shape_str(shape) -> str:
    return "(" + ", ".join("N" if d is None else str(d) for d in shape) + ")"


class _Builder:
    def __init__(self, graph: Graph, rng: np.random.Generator):
        self.g = graph
        self.rng = rng

    def shape(self, tensor: str) -> tuple:
        return self.g.specs[tensor].shape

    def node(self, module: "Module", path: str, op: str, inputs: Sequence[str], attrs=None,
             suffix: str | None = None) -> str:
        base = module.node_name(path)
        name = base if suffix is None else f"{base}/{suffix}"
        return self.g.add_node(op, list(inputs), name=name, attrs=attrs,
                               source=Source(layer=base, type=module.type_name, file=module.file,
                                             line=module.line))

    def param(self, path: str, field: str, value: np.ndarray, trainable: bool = True) -> str:
        return self.g.add_param(f"{path}_{field}", np.ascontiguousarray(value, np.float32),
                                trainable=trainable)

    def uniform(self, shape: tuple, fan_in: int) -> np.ndarray:
        return torch_default(shape, fan_in, fan_in, self.rng)


class Module:
    """Base of every module: remembers where it was constructed."""

    def __init__(self):
        self.file, self.line = caller_location()

    @property
    def type_name(self) -> str:
        return type(self).__name__

    def node_name(self, path: str) -> str:
        return f"{path}_{self.type_name}" if path else self.type_name

    def error(self, cls: type, path: str, message: str) -> GraphrtError:
        return cls(message, node=self.node_name(path), op=self.type_name, file=self.file,
                   line=self.line)

    def _build(self, b: _Builder, x: str, path: str) -> str:  # pragma: no cover
        raise NotImplementedError

    def _repr_args(self) -> str:
        return ""

    def __repr__(self) -> str:
        args = self._repr_args()
        return f"nn.{self.type_name}" + (f"({args})" if args else "")

    # ---- whole-model entry point -------------------------------------------------------------
    def to_graph(self, input_shape: Sequence[int], seed: int = 0, name: str | None = None) -> Graph:
        """The module as a verified graph on inputs ``(None, *input_shape)``."""
        if input_shape is None:
            raise ShapeError("to_graph needs input_shape=(C, H, W) (or (features,)), batch excluded",
                             file=self.file, line=self.line)
        shape = tuple(input_shape)
        if not shape or any(int(d) <= 0 for d in shape):
            raise ShapeError(f"input_shape {shape} must hold positive sizes (batch excluded)",
                             file=self.file, line=self.line)
        g = Graph(name or "torch7_" + self.type_name.lower())
        b = _Builder(g, np.random.default_rng(seed))
        x = g.add_input("input", (None,) + tuple(int(d) for d in shape))
        root_path = "" if isinstance(self, Container) else "1"
        y = self._build(b, x, root_path)
        if y in g.inputs:  # an empty Sequential: keep one node so the graph has an output node
            y = b.node(self, root_path, "identity", [y], suffix="identity")
        g.set_outputs([y])
        g.verify()
        return g


# ---- containers ---------------------------------------------------------------------------------
class Container(Module):
    def __init__(self):
        super().__init__()
        self.modules: list[Module] = []

    def add(self, module: Module) -> "Container":
        if not isinstance(module, Module):
            file, line = caller_location()
            raise UnsupportedError(f"{self.type_name}.add expects an nn module, got "
                                   f"{type(module).__name__}", op=self.type_name, file=file, line=line)
        self.modules.append(module)
        return self

    def get(self, index: int) -> Module:
        """The ``index``-th module, 1-based as in Lua."""
        return self.modules[index - 1]

    def size(self) -> int:
        return len(self.modules)

    def __len__(self) -> int:
        return len(self.modules)

    def _child_path(self, path: str, i: int) -> str:
        return f"{path}.{i}" if path else str(i)

    def __repr__(self) -> str:
        lines = [f"nn.{self.type_name}" + (f"({self._repr_args()})" if self._repr_args() else "")
                 + " {"]
        for i, m in enumerate(self.modules, 1):
            sub = repr(m).replace("\n", "\n  ")
            lines.append(f"  ({i}): {sub}")
        lines.append("}")
        return "\n".join(lines)


class Sequential(Container):
    """Runs its modules one after another."""

    def _build(self, b, x, path):
        for i, m in enumerate(self.modules, 1):
            x = m._build(b, x, self._child_path(path, i))
        return x


class Concat(Container):
    """Feeds the input to every branch and concatenates the outputs along ``dim`` (1-based,
    counting the batch: ``Concat(2)`` = channels)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def _repr_args(self):
        return str(self.dim)

    def _axis(self, b, outs, path) -> int:
        if not self.modules:
            raise self.error(GraphError, path, f"{self.type_name}({self.dim}) has no branches")
        rank = len(b.shape(outs[0]))
        try:
            dim = int(self.dim)
        except (TypeError, ValueError):
            raise self.error(AttrError, path, f"{self.type_name} dimension must be an integer, got "
                                              f"{self.dim!r}") from None
        if dim == 1:
            raise self.error(UnsupportedError, path,
                             f"{self.type_name}(1) would concatenate along the batch dimension; "
                             "graphrt graphs are batched, so Torch's channel dimension is 2: use "
                             f"{self.type_name}(2)")
        if not 2 <= dim <= rank:
            raise self.error(ShapeError, path, f"{self.type_name}({self.dim}) is out of range for "
                                               f"branch outputs of rank {rank} "
                                               f"{_shape_str(b.shape(outs[0]))}")
        return dim - 1

    def _branches(self, b, x, path) -> list[str]:
        return [m._build(b, x, self._child_path(path, i)) for i, m in enumerate(self.modules, 1)]

    def _build(self, b, x, path):
        outs = self._branches(b, x, path)
        axis = self._axis(b, outs, path)
        first = b.shape(outs[0])
        for i, t in enumerate(outs[1:], 2):
            s = b.shape(t)
            if len(s) != len(first) or any(a != c for d, (a, c) in enumerate(zip(s, first))
                                           if d != axis):
                raise self.error(ShapeError, path,
                                 f"Concat({self.dim}): branch {i} outputs {_shape_str(s)} but branch "
                                 f"1 outputs {_shape_str(first)}; they must match in every "
                                 f"dimension except {self.dim} (DepthConcat pads spatial sizes)")
        return b.node(self, path, "concat", outs, attrs={"axis": axis})


class DepthConcat(Concat):
    """Concat that zero-pads smaller spatial maps to the largest, centred as Torch does."""

    def _build(self, b, x, path):
        outs = self._branches(b, x, path)
        axis = self._axis(b, outs, path)
        shapes = [b.shape(t) for t in outs]
        rank = len(shapes[0])
        for i, s in enumerate(shapes[1:], 2):
            if len(s) != rank:
                raise self.error(ShapeError, path, f"DepthConcat({self.dim}): branch {i} outputs "
                                                   f"{_shape_str(s)}, branch 1 {_shape_str(shapes[0])}")
        target = [max(s[d] for s in shapes) if d not in (0, axis) else None for d in range(rank)]
        padded = []
        for i, (t, s) in enumerate(zip(outs, shapes), 1):
            diff = [d for d in range(1, rank) if d != axis and s[d] != target[d]]
            if any(d < rank - 2 for d in diff) or (diff and rank < 3):
                raise self.error(ShapeError, path,
                                 f"DepthConcat({self.dim}): branch {i} outputs {_shape_str(s)}, which "
                                 f"differs from {_shape_str(target)} outside the two spatial "
                                 "dimensions it can pad")
            if diff:
                dh, dw = target[-2] - s[-2], target[-1] - s[-1]
                pads = (dh // 2, dh - dh // 2, dw // 2, dw - dw // 2)
                t = b.node(self, path, "zero_pad", [t], attrs={"pads": pads}, suffix=f"pad{i}")
            padded.append(t)
        return b.node(self, path, "concat", padded, attrs={"axis": axis})


# ---- layers -------------------------------------------------------------------------------------
def _need_rank(module: Module, path: str, b: _Builder, x: str, rank: int, what: str) -> tuple:
    s = b.shape(x)
    if len(s) != rank:
        raise module.error(ShapeError, path, f"{module!r} expects {what}, got shape {_shape_str(s)}")
    return s


class SpatialConvolution(Module):
    """``SpatialConvolution(nInputPlane, nOutputPlane, kW, kH, dW=1, dH=1, padW=0, padH=padW)``."""

    def __init__(self, nInputPlane, nOutputPlane, kW, kH, dW=1, dH=1, padW=0, padH=None):
        super().__init__()
        self.nInputPlane, self.nOutputPlane = int(nInputPlane), int(nOutputPlane)
        self.kW, self.kH, self.dW, self.dH = int(kW), int(kH), int(dW), int(dH)
        self.padW = int(padW or 0)
        self.padH = self.padW if padH is None else int(padH)
        self.bias = True

    def noBias(self) -> "SpatialConvolution":
        self.bias = False
        return self

    def _repr_args(self):
        s = f"{self.nInputPlane} -> {self.nOutputPlane}, {self.kW}x{self.kH}"
        if (self.dW, self.dH) != (1, 1) or self.padW or self.padH:
            s += f", {self.dW},{self.dH}"
        if self.padW or self.padH:
            s += f", {self.padW},{self.padH}"
        return s

    def _build(self, b, x, path):
        s = _need_rank(self, path, b, x, 4, "a 4-D (batch, planes, height, width) input")
        if s[1] != self.nInputPlane:
            raise self.error(ShapeError, path, f"{self!r} expects {self.nInputPlane} input planes, "
                                               f"got {s[1]} (input shape {_shape_str(s)})")
        fan_in = self.nInputPlane * self.kH * self.kW
        w = b.uniform((self.nOutputPlane, self.nInputPlane, self.kH, self.kW), fan_in)
        inputs = [x, b.param(path, "weight", w)]
        if self.bias:
            inputs.append(b.param(path, "bias", b.uniform((self.nOutputPlane,), fan_in)))
        return b.node(self, path, "conv2d", inputs, attrs={
            "stride": (self.dH, self.dW), "pads": (self.padH, self.padH, self.padW, self.padW)})


class SpatialConvolutionMM(SpatialConvolution):
    """Same as SpatialConvolution (Torch's im2col implementation of it)."""


class _SpatialPooling(Module):
    op = "max_pool"

    def __init__(self, kW, kH, dW=None, dH=None, padW=0, padH=0):
        super().__init__()
        self.kW, self.kH = int(kW), int(kH)
        self.dW = int(kW if dW is None else dW)
        self.dH = int(kH if dH is None else dH)
        self.padW, self.padH = int(padW or 0), int(padH or 0)
        self.ceil_mode = False

    def ceil(self):
        self.ceil_mode = True
        return self

    def floor(self):
        self.ceil_mode = False
        return self

    def _repr_args(self):
        s = f"{self.kW}x{self.kH}, {self.dW},{self.dH}"
        if self.padW or self.padH:
            s += f", {self.padW},{self.padH}"
        return s

    def _attrs(self) -> dict:
        return {"kernel": (self.kH, self.kW), "stride": (self.dH, self.dW),
                "pads": (self.padH, self.padH, self.padW, self.padW), "ceil_mode": self.ceil_mode}

    def _build(self, b, x, path):
        _need_rank(self, path, b, x, 4, "a 4-D (batch, planes, height, width) input")
        if self.padW > self.kW // 2 or self.padH > self.kH // 2:
            raise self.error(AttrError, path, f"{self!r}: padding should be at most half the kernel")
        return b.node(self, path, self.op, [x], attrs=self._attrs())


class SpatialMaxPooling(_SpatialPooling):
    """``SpatialMaxPooling(kW, kH, dW=kW, dH=kH, padW=0, padH=0)``; ``.ceil()`` / ``.floor()``."""

    op = "max_pool"


class SpatialAveragePooling(_SpatialPooling):
    """``SpatialAveragePooling(kW, kH, dW=1, dH=1, padW=0, padH=0)``; padding counts in the
    average unless ``.setCountExcludePad()``."""

    op = "avg_pool"

    def __init__(self, kW, kH, dW=1, dH=1, padW=0, padH=0):
        super().__init__(kW, kH, 1 if dW is None else dW, 1 if dH is None else dH, padW, padH)
        self.count_include_pad = True

    def setCountIncludePad(self):
        self.count_include_pad = True
        return self

    def setCountExcludePad(self):
        self.count_include_pad = False
        return self

    def _attrs(self):
        return {**super()._attrs(), "count_include_pad": self.count_include_pad}


class BatchNormalization(Module):
    """``BatchNormalization(nOutput, eps=1e-5, momentum=0.1, affine=True)`` on (batch, n)."""

    rank = 2
    what = "a 2-D (batch, features) input"

    def __init__(self, nOutput, eps=1e-5, momentum=0.1, affine=True):
        super().__init__()
        self.nOutput = int(nOutput)
        self.eps = 1e-5 if eps is None else float(eps)
        self.momentum = 0.1 if momentum is None else float(momentum)
        self.affine = True if affine is None else bool(affine)

    def _repr_args(self):
        return str(self.nOutput)

    def _build(self, b, x, path):
        s = _need_rank(self, path, b, x, self.rank, self.what)
        if s[1] != self.nOutput:
            raise self.error(ShapeError, path, f"{self!r} expects {self.nOutput} channels, got {s[1]} "
                                               f"(input shape {_shape_str(s)})")
        n = self.nOutput
        inputs = [x]
        if self.affine:
            weight = b.rng.uniform(0.0, 1.0, size=(n,)).astype(np.float32)  # Torch: weight:uniform()
            bias = np.zeros(n, np.float32)
        inputs.append(b.param(path, "running_mean", np.zeros(n, np.float32), trainable=False))
        inputs.append(b.param(path, "running_var", np.ones(n, np.float32), trainable=False))
        if self.affine:
            inputs += [b.param(path, "weight", weight), b.param(path, "bias", bias)]
        return b.node(self, path, "batch_norm", inputs, attrs={"eps": self.eps})


class SpatialBatchNormalization(BatchNormalization):
    """``SpatialBatchNormalization(nOutput, eps=1e-5, momentum=0.1, affine=True)`` on NCHW."""

    rank = 4
    what = "a 4-D (batch, planes, height, width) input"


class SpatialCrossMapLRN(Module):
    """``SpatialCrossMapLRN(size, alpha=1e-4, beta=0.75, k=1)``."""

    def __init__(self, size, alpha=1e-4, beta=0.75, k=1.0):
        super().__init__()
        self.size, self.alpha, self.beta, self.k = int(size), float(alpha), float(beta), float(k)

    def _build(self, b, x, path):
        _need_rank(self, path, b, x, 4, "a 4-D (batch, planes, height, width) input")
        return b.node(self, path, "lrn", [x], attrs={"size": self.size, "alpha": self.alpha,
                                                      "beta": self.beta, "k": self.k})


class Linear(Module):
    """``Linear(inputSize, outputSize, bias=True)``: weight (outputSize, inputSize)."""

    def __init__(self, inputSize, outputSize, bias=True):
        super().__init__()
        self.inputSize, self.outputSize = int(inputSize), int(outputSize)
        self.bias = True if bias is None else bool(bias)

    def noBias(self) -> "Linear":
        self.bias = False
        return self

    def _repr_args(self):
        return f"{self.inputSize} -> {self.outputSize}" + ("" if self.bias else " without bias")

    def _build(self, b, x, path):
        s = b.shape(x)
        if len(s) != 2:
            raise self.error(ShapeError, path,
                             f"{self!r} expects a 2-D (batch, {self.inputSize}) input, got shape "
                             f"{_shape_str(s)}; add nn.View({self.inputSize}).setNumInputDims("
                             f"{len(s) - 1}) (or View(-1)) before it")
        if s[1] != self.inputSize:
            raise self.error(ShapeError, path,
                             f"{self!r} expects {self.inputSize} input features, got {s[1]} "
                             f"(input shape {_shape_str(s)})")
        w = b.uniform((self.outputSize, self.inputSize), self.inputSize)
        inputs = [x, b.param(path, "weight", w)]
        if self.bias:
            inputs.append(b.param(path, "bias", b.uniform((self.outputSize,), self.inputSize)))
        return b.node(self, path, "dense", inputs)


class _Elementwise(Module):
    op = "identity"

    def _attrs(self) -> dict:
        return {}

    def _build(self, b, x, path):
        return b.node(self, path, self.op, [x], attrs=self._attrs())


class ReLU(_Elementwise):
    """``ReLU(ip=False)``; in-place is a runtime detail and ignored."""

    op = "relu"

    def __init__(self, ip=False):
        super().__init__()


class LeakyReLU(_Elementwise):
    """``LeakyReLU(negval=0.01, ip=False)``."""

    op = "relu"

    def __init__(self, negval=0.01, ip=False):
        super().__init__()
        self.negval = 0.01 if negval is None else float(negval)

    def _attrs(self):
        return {"negative_slope": self.negval}


class Tanh(_Elementwise):
    op = "tanh"


class Sigmoid(_Elementwise):
    op = "sigmoid"


class Identity(_Elementwise):
    op = "identity"


class SoftMax(_Elementwise):
    """Softmax over the features (Torch's dimension 2 in batch mode, graph axis 1)."""

    op = "softmax"

    def _attrs(self):
        return {"axis": 1}


class LogSoftMax(SoftMax):
    op = "log_softmax"


class Dropout(_Elementwise):
    """``Dropout(p=0.5)``: the identity at inference; ``p`` kept as the rate."""

    op = "dropout"

    def __init__(self, p=0.5, v1=False, inplace=False):
        super().__init__()
        self.p = 0.5 if p is None else p

    def _repr_args(self):
        return f"{self.p}"

    def _build(self, b, x, path):
        if not isinstance(self.p, (int, float)) or not 0 <= self.p < 1:
            raise self.error(AttrError, path, f"Dropout probability must be in [0, 1), got {self.p!r}")
        return super()._build(b, x, path)

    def _attrs(self):
        return {"rate": float(self.p)}


class MulConstant(_Elementwise):
    """``MulConstant(constant_scalar, ip=False)``: y = c * x (``scale`` op)."""

    op = "scale"

    def __init__(self, constant_scalar, ip=False):
        super().__init__()
        self.constant_scalar = float(constant_scalar)

    def _repr_args(self):
        return f"{self.constant_scalar}"

    def _attrs(self):
        return {"scale": self.constant_scalar}


class AddConstant(_Elementwise):
    """``AddConstant(constant_scalar, ip=False)``: y = x + c (``scale`` op's shift)."""

    op = "scale"

    def __init__(self, constant_scalar, ip=False):
        super().__init__()
        self.constant_scalar = float(constant_scalar)

    def _attrs(self):
        return {"shift": self.constant_scalar}


class SpatialZeroPadding(Module):
    """``SpatialZeroPadding(padLeft, padRight=padLeft, padTop=padLeft, padBottom=padLeft)``;
    negative values crop."""

    def __init__(self, pad_l, pad_r=None, pad_t=None, pad_b=None):
        super().__init__()
        self.pad_l = int(pad_l)
        self.pad_r = self.pad_l if pad_r is None else int(pad_r)
        self.pad_t = self.pad_l if pad_t is None else int(pad_t)
        self.pad_b = self.pad_l if pad_b is None else int(pad_b)

    def _repr_args(self):
        return f"l={self.pad_l}, r={self.pad_r}, t={self.pad_t}, b={self.pad_b}"

    def _build(self, b, x, path):
        s = b.shape(x)
        if len(s) < 3:
            raise self.error(ShapeError, path, f"{self!r} expects a (batch, ..., height, width) "
                                               f"input, got shape {_shape_str(s)}")
        return b.node(self, path, "zero_pad", [x],
                      attrs={"pads": (self.pad_t, self.pad_b, self.pad_l, self.pad_r)})


def _sizes(args) -> tuple:
    if len(args) == 1 and isinstance(args[0], (list, tuple)):
        args = tuple(args[0])
    return tuple(int(a) for a in args)


class View(Module):
    """``View(sizes...)`` with ``.setNumInputDims(n)``: reshape the per-example dimensions.

    With ``setNumInputDims(n)`` the last ``n`` dimensions are viewed as ``sizes`` and the rest is
    the batch; without it the whole per-example tensor must have exactly ``prod(sizes)`` elements
    (a ``-1`` without ``setNumInputDims`` would fold the batch in, which graphrt refuses).
    """

    def __init__(self, *sizes):
        super().__init__()
        self.sizes = _sizes(sizes)
        self.numInputDims = None

    def setNumInputDims(self, n: int) -> "View":
        self.numInputDims = int(n)
        return self

    def _repr_args(self):
        return ", ".join(str(s) for s in self.sizes)

    def _build(self, b, x, path):
        s = b.shape(x)
        item = s[1:]
        sizes = self.sizes
        if not sizes or sizes.count(-1) > 1 or any(d == 0 or d < -1 for d in sizes):
            raise self.error(AttrError, path, f"{self!r}: sizes must be positive, with at most one -1")
        n = self.numInputDims
        if n is not None and n != len(item):
            if n > len(item):
                raise self.error(ShapeError, path, f"{self!r}.setNumInputDims({n}) but each example "
                                                   f"has only {len(item)} dimensions "
                                                   f"(input shape {_shape_str(s)})")
            raise self.error(UnsupportedError, path,
                             f"{self!r}.setNumInputDims({n}) would fold {len(item) - n} example "
                             f"dimension(s) of input {_shape_str(s)} into the batch")
        if n is None and -1 in sizes:
            raise self.error(ShapeError, path,
                             f"{self!r} without setNumInputDims folds the batch into one dimension "
                             f"in Torch (input {_shape_str(s)}); write "
                             f"nn.View({self._repr_args()}).setNumInputDims({len(item)})")
        have = int(np.prod(item, dtype=np.int64))
        known = int(np.prod([d for d in sizes if d != -1], dtype=np.int64))
        if (-1 in sizes and have % known) or (-1 not in sizes and have != known):
            raise self.error(ShapeError, path, f"{self!r}: input view {_shape_str(s)} ({have} values "
                                               f"per example) and desired view "
                                               f"(N, {self._repr_args()}) do not match")
        if sizes == (-1,) or (len(sizes) == 1 and sizes[0] == have):
            return b.node(self, path, "flatten", [x], attrs={"axis": 1})
        return b.node(self, path, "reshape", [x], attrs={"shape": sizes})


class Reshape(Module):
    """``Reshape(sizes..., batchMode=None)``: (N, ...) -> (N, *sizes) in batch mode."""

    def __init__(self, *sizes):
        super().__init__()
        self.batchMode = None
        if sizes and isinstance(sizes[-1], bool):
            self.batchMode, sizes = sizes[-1], sizes[:-1]
        self.sizes = _sizes(sizes)

    def _repr_args(self):
        return "x".join(str(s) for s in self.sizes)

    def _build(self, b, x, path):
        s = b.shape(x)
        if self.batchMode is False:
            raise self.error(UnsupportedError, path, f"{self!r} with batchMode=false drops the batch "
                                                     "dimension; graphrt graphs are batched")
        have = int(np.prod(s[1:], dtype=np.int64))
        want = int(np.prod(self.sizes, dtype=np.int64)) if self.sizes else 0
        if not self.sizes or any(d <= 0 for d in self.sizes) or have != want:
            raise self.error(ShapeError, path, f"{self!r}: cannot reshape {_shape_str(s)} ({have} "
                                               f"values per example) to (N, {self._repr_args()})")
        return b.node(self, path, "reshape", [x], attrs={"shape": self.sizes})


__all__ = ["Module", "Container", "Sequential", "Concat", "DepthConcat", "SpatialConvolution",
           "SpatialConvolutionMM", "SpatialMaxPooling", "SpatialAveragePooling",
           "BatchNormalization", "SpatialBatchNormalization", "SpatialCrossMapLRN", "Linear",
           "ReLU", "LeakyReLU", "Tanh", "Sigmoid", "Identity", "SoftMax", "LogSoftMax", "Dropout",
           "MulConstant", "AddConstant", "SpatialZeroPadding", "View", "Reshape"]
