"""``graphrt.export_onnx(graph, path)``: any graphrt graph as an ONNX model (opset 17).

Every graphrt op maps to standard ONNX ops, so a graph as loaded and a graph as optimized export
alike: the fused forms are expanded back — a ``conv2d``/``dense`` ``activation`` epilogue becomes a
``Relu``/``LeakyRelu``/``Tanh``/``Sigmoid`` after the ``Conv``/``Gemm``, an ``elementwise_chain`` its
steps, a ``split`` an ONNX ``Split``, merged sibling convolutions (``conv2d_split``) a ``Conv`` and a
``Split``, an aliased ``concat`` a plain ``Concat``; the ``place``
pass's transfers are ``Identity``. Parameters become initializers under their graphrt names; the
symbolic batch is the dimension ``N``. The model passes ``onnx.checker`` (with shape inference) and
runs in onnxruntime with the outputs graphrt computes.

    graphrt.export_onnx(graph, "model.onnx")          # returns the ModelProto too
    onnxruntime.InferenceSession("model.onnx").run(None, {"data": x})

The training ops (``softmax_cross_entropy``, ``nll_loss``, ``accuracy``, optimizer updates) have no
inference counterpart and raise :class:`UnsupportedError` naming the node.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...ir.errors import GraphrtError, UnsupportedError
from ...ir import Graph, Node
from .export_ops import WRITERS as EXTRA_WRITERS
from .export_ops import activation_node, is_activation

OPSET = 17
BATCH_DIM = "N"


class _Writer:
    """Collects ONNX nodes and initializers for one graph."""

    def __init__(self, graph: Graph):
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.graph = graph
        self.nodes: list = []
        self.initializers: dict[str, object] = {}
        self.node: Node | None = None
        self._count = 0

    def const(self, value, base: str) -> str:
        """An initializer holding ``value``; returns its name."""
        name = f"{self.node.name}/{base}"
        while name in self.initializers or name in self.graph.specs:
            self._count += 1
            name = f"{self.node.name}/{base}_{self._count}"
        self.initializers[name] = self.numpy_helper.from_array(np.asarray(value), name)
        return name

    def op(self, op_type: str, inputs, out: str | None = None, **attrs) -> str:
        """Append an ONNX node; ``out`` defaults to a fresh intermediate name."""
        self._count += 1
        out = out or f"{self.node.name}/{op_type}_{self._count}"
        self.nodes.append(self.helper.make_node(op_type, list(inputs), [out], name=f"{self.node.name}/{self._count}"
                                                if out not in self.node.outputs else self.node.name, **attrs))
        return out

    def spec(self, tensor: str):
        return self.graph.specs[tensor]


def _activation(w: _Writer, x: str, attrs, out: str) -> str:
    act = attrs.get("activation", "none")
    if act == "none":
        return w.op("Identity", [x], out)
    if act == "relu":
        slope = attrs.get("negative_slope", 0.0)
        return w.op("Relu", [x], out) if slope == 0.0 else w.op("LeakyRelu", [x], out, alpha=slope)
    if is_activation(act):
        return activation_node(w, act, x, attrs.get("activation_params", ()), out)
    return w.op({"tanh": "Tanh", "sigmoid": "Sigmoid"}[act], [x], out)


def _epilogue(w, op_type, inputs, attrs, out, **onnx_attrs):
    if attrs.get("activation", "none") == "none":
        return w.op(op_type, inputs, out, **onnx_attrs)
    return _activation(w, w.op(op_type, inputs, **onnx_attrs), attrs, out)


def _conv2d(w, n, a, out):
    t, b, l, r = a["pads"]
    kernel = list(w.spec(n.inputs[1]).shape[2:])
    return _epilogue(w, "Conv", n.inputs, a, out, kernel_shape=kernel, strides=list(a["stride"]),
                     dilations=list(a["dilation"]), group=a["groups"], pads=[t, l, b, r])


def _dense(w, n, a, out):
    return _epilogue(w, "Gemm", n.inputs, a, out, transB=1)


def _pool(w, n, a, out):
    glob = {"max_pool": "GlobalMaxPool", "avg_pool": "GlobalAveragePool"}[n.op]
    if a["global_pool"]:
        return w.op(glob, n.inputs, out)
    t, b, l, r = a["pads"]
    extra = {"count_include_pad": int(a["count_include_pad"])} if n.op == "avg_pool" else {}
    return w.op("MaxPool" if n.op == "max_pool" else "AveragePool", n.inputs, out,
                kernel_shape=list(a["kernel"]), strides=list(a["stride"]), pads=[t, l, b, r],
                ceil_mode=int(_needs_ceil(w.spec(n.inputs[0]).shape[2:], a)), **extra)


def _needs_ceil(spatial, a) -> bool:
    """Whether ceil mode changes the output size. Where graphrt drops a last window that would start
    in the padding, ceil mode gives the floor-mode size, and ONNX's shape inference (which does not
    drop it) disagrees with onnxruntime: export floor mode, whose windows are the same."""
    from ...ops.pool import pool_out_size

    if not a["ceil_mode"]:
        return False
    (kh, kw), (sh, sw), (t, b, l, r) = a["kernel"], a["stride"], a["pads"]
    return any(pool_out_size(n, k, s, lo, hi, True) != pool_out_size(n, k, s, lo, hi, False)
               for n, k, s, lo, hi in ((spatial[0], kh, sh, t, b), (spatial[1], kw, sw, l, r)))


def _channel_shape(w, x: str) -> tuple:
    return (-1,) + (1,) * (len(w.spec(x).shape) - 2)


def _per_channel(w, x: str, vector: str) -> str:
    """A (C,) tensor reshaped to broadcast along axis 1 of ``x``."""
    return w.op("Reshape", [vector, w.const(np.array(_channel_shape(w, x), np.int64), "channel_shape")])


def _batch_norm(w, n, a, out):
    x, mean, var = n.inputs[:3]
    if len(n.inputs) == 5:
        gamma, beta = n.inputs[3:]
    else:
        c = w.spec(mean).shape[0]
        dtype = w.spec(x).dtype
        gamma, beta = w.const(np.ones(c, dtype), "gamma"), w.const(np.zeros(c, dtype), "beta")
    return w.op("BatchNormalization", [x, gamma, beta, mean, var], out, epsilon=a["eps"])


def _channel_affine(w, n, a, out):
    x = n.inputs[0]
    y = w.op("Mul", [x, _per_channel(w, x, n.inputs[1])], None if len(n.inputs) == 3 else out)
    return w.op("Add", [y, _per_channel(w, x, n.inputs[2])], out) if len(n.inputs) == 3 else y


def _scalar(w, value, base: str) -> str:
    """A scalar initializer of the current node's dtype."""
    return w.const(np.array(value, w.spec(w.node.outputs[0]).dtype), base)


def _scale(w, x: str, a, out: str | None) -> str:
    y = x
    if a.get("scale", 1.0) != 1.0:
        y = w.op("Mul", [y, _scalar(w, a["scale"], "scale")])
    if a.get("shift", 0.0) != 0.0:
        y = w.op("Add", [y, _scalar(w, a["shift"], "shift")])
    if a.get("power", 1.0) != 1.0:
        y = w.op("Pow", [y, _scalar(w, a["power"], "power")])
    return w.op("Identity", [y], out) if out is not None else y


def _unary(w, op: str, x: str, a, out: str | None) -> str:
    if op == "relu":
        slope = a.get("negative_slope", 0.0)
        return w.op("Relu", [x], out) if slope == 0.0 else w.op("LeakyRelu", [x], out, alpha=slope)
    if op in ("tanh", "sigmoid"):
        return w.op(op.capitalize(), [x], out)
    if op == "scale":
        return _scale(w, x, a, out)
    if is_activation(op):
        return activation_node(w, op, x, a, out)
    return w.op("Identity", [x], out)  # dropout, identity: inference


def _chain(w, n, a, out):
    x = n.inputs[0]
    steps = a["steps"]
    for i, (op, step_attrs) in enumerate(steps):
        x = _unary(w, op, x, step_attrs, out if i == len(steps) - 1 else None)
    return x


def _add(w, n, a, out):
    coeffs = a["coeffs"] or (1.0,) * len(n.inputs)
    terms = [x if c == 1.0 else w.op("Mul", [x, _scalar(w, c, "coeff")]) for x, c in zip(n.inputs, coeffs)]
    return w.op("Sum", terms, out) if len(terms) > 1 else w.op("Identity", terms, out)


def _mul(w, n, a, out):
    y = n.inputs[0]
    for i, x in enumerate(n.inputs[1:], 2):
        y = w.op("Mul", [y, x], out if i == len(n.inputs) else None)
    return y if len(n.inputs) > 1 else w.op("Identity", [y], out)


def _reshape_to(w, x: str, rest, out):
    shape = np.array([0] + list(rest), np.int64)  # 0 copies the leading (batch) axis
    return w.op("Reshape", [x, w.const(shape, "shape")], out)


def _zero_pad(w, n, a, out):
    t, b, l, r = a["pads"]
    rank = len(w.spec(n.inputs[0]).shape)
    pads = [0] * (rank - 2) + [t, l] + [0] * (rank - 2) + [b, r]
    return w.op("Pad", [n.inputs[0], w.const(np.array(pads, np.int64), "pads")], out, mode="constant")


def _pad(w, n, a, out):
    value = _scalar(w, a["value"], "value")
    return w.op("Pad", [n.inputs[0], w.const(np.array(a["pads"], np.int64), "pads"), value], out,
                mode="constant")


def _split(w, n, a, x=None):
    sizes = w.const(np.array(a["sizes"], np.int64), "split")
    w.nodes.append(w.helper.make_node("Split", [x or n.inputs[0], sizes], list(n.outputs), name=n.name,
                                      axis=a.get("axis", 1)))


def _conv2d_split(w, n, a):
    """The one convolution (with its epilogue), then its channels split into the outputs."""
    _split(w, n, a, _conv2d(w, n, a, None))


WRITERS = {
    "conv2d": _conv2d, "dense": _dense, "max_pool": _pool, "avg_pool": _pool,
    "lrn": lambda w, n, a, out: w.op("LRN", n.inputs, out, size=a["size"], alpha=a["alpha"],
                                     beta=a["beta"], bias=a["k"]),
    "batch_norm": _batch_norm, "channel_affine": _channel_affine,
    "relu": lambda w, n, a, out: _unary(w, "relu", n.inputs[0], a, out),
    "tanh": lambda w, n, a, out: _unary(w, "tanh", n.inputs[0], a, out),
    "sigmoid": lambda w, n, a, out: _unary(w, "sigmoid", n.inputs[0], a, out),
    "scale": lambda w, n, a, out: _scale(w, n.inputs[0], a, out),
    "elementwise_chain": _chain, "add": _add, "mul": _mul,
    "softmax": lambda w, n, a, out: w.op("Softmax", n.inputs, out, axis=a["axis"]),
    "log_softmax": lambda w, n, a, out: w.op("LogSoftmax", n.inputs, out, axis=a["axis"]),
    "concat": lambda w, n, a, out: w.op("Concat", n.inputs, out, axis=a["axis"]),
    "flatten": lambda w, n, a, out: _reshape_to(w, n.inputs[0], [0] * (a["axis"] - 1) + [-1], out),
    "reshape": lambda w, n, a, out: _reshape_to(w, n.inputs[0], a["shape"], out),
    "transpose": lambda w, n, a, out: w.op("Transpose", n.inputs, out, perm=list(a["perm"])),
    "zero_pad": _zero_pad, "pad": _pad,
    "matmul": lambda w, n, a, out: w.op("MatMul", n.inputs, out),
    **{op: (lambda w, n, a, out: w.op("Identity", n.inputs, out))
       for op in ("dropout", "identity", "copy_to_device", "copy_to_host")},
    **EXTRA_WRITERS,
}


def _value_info(graph: Graph, tensor: str):
    from onnx import helper

    spec = graph.specs[tensor]
    shape = [BATCH_DIM if d is None else d for d in spec.shape]
    return helper.make_tensor_value_info(tensor, helper.np_dtype_to_tensor_dtype(np.dtype(spec.dtype)), shape)


def to_onnx(graph: Graph):
    """The graph as an ONNX ``ModelProto`` (checked with ``onnx.checker``, full check)."""
    try:
        import onnx
    except ImportError:
        raise UnsupportedError("exporting ONNX needs the onnx package (pip install 'graphrt[onnx]')") from None
    from onnx import helper

    w = _Writer(graph)
    for node in graph.nodes:
        w.node = node
        if node.op in ("split", "conv2d_split"):
            (_split if node.op == "split" else _conv2d_split)(w, node, node.attrs)
            continue
        writer = WRITERS.get(node.op)
        if writer is None:
            raise UnsupportedError(f"graphrt op {node.op!r} has no ONNX form (training ops do not "
                                   "export)", node=node.name, op=node.op)
        writer(w, node, node.attrs, node.outputs[0])
    used = {t for n in graph.nodes for t in n.inputs}
    params = [w.numpy_helper.from_array(np.ascontiguousarray(v), k) for k, v in graph.params.items()
              if k in used or k in graph.outputs]
    onnx_graph = helper.make_graph(
        w.nodes, graph.name, [_value_info(graph, t) for t in graph.inputs],
        [_value_info(graph, t) for t in graph.outputs], params + list(w.initializers.values()))
    model = helper.make_model(onnx_graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="graphrt")
    model.ir_version = min(model.ir_version, 8)  # what onnxruntime of 2023 on reads for opset 17
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as err:
        raise GraphrtError(f"the exported model fails onnx.checker: {str(err).splitlines()[0]}") from None
    return model


def export_onnx(graph: Graph, path: str | Path | None = None):
    """Write ``graph`` as an ONNX model to ``path`` (if given) and return the ``ModelProto``."""
    model = to_onnx(graph)
    if path is not None:
        import onnx

        onnx.save(model, str(path))
    return model
