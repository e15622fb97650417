"""The ONNX ops the frontend converts to graphrt nodes, one function per op (or family).

Each converter takes the converter context ``cv`` (:class:`graphrt.frontends.onnx._Converter`), the
node's attributes and its inputs (tensor names, :class:`~.fold.Const` s, or None where an
optional input is absent) and returns the values of the node's outputs. Constant operands become
parameters, or fold into the attributes of a cheaper op: a scalar ``Mul``/``Add`` is a ``scale``, a
per-channel one (DenseNet's unsqueezed batch-norm factors) a ``channel_affine``, a ``Gemm`` with a
constant ``B`` a ``dense`` (alpha folded into the weight, beta into the bias).
"""
from __future__ import annotations

import math

import numpy as np

from ...ir.errors import AttrError, ShapeError, UnsupportedError
from .converters import ConverterTable, need
from .fold import BatchError, Const

CONVERTERS = ConverterTable()
converts = CONVERTERS.converts


def axis_pads(attrs, spatial, kernel, strides, dilations) -> list:
    """[(begin, end)] per spatial axis from ONNX ``pads`` (begins, then ends) or ``auto_pad``."""
    nd = len(spatial)
    auto = attrs.get("auto_pad", "NOTSET") or "NOTSET"
    if auto == "NOTSET":
        p = list(attrs.get("pads", (0,) * (2 * nd)))
        return list(zip(p[:nd], p[nd:]))
    if auto == "VALID":
        return [(0, 0)] * nd
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        raise AttrError(f"unknown auto_pad {auto!r}")
    out = []
    for n, k, s, d in zip(spatial, kernel, strides, dilations):
        total = max(0, (math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n)
        lo = total // 2 if auto == "SAME_UPPER" else total - total // 2
        out.append((lo, total - lo))
    return out


def _geometry(cv, attrs, spec, kernel):
    """(kernel, strides, dilations, pads) of an N-D conv or pool, defaults filled."""
    nd = len(spec.shape) - 2
    strides = tuple(attrs.get("strides", (1,) * nd))
    dilations = tuple(attrs.get("dilations", (1,) * nd))
    return tuple(kernel), strides, dilations, axis_pads(attrs, spec.shape[2:], kernel, strides, dilations)


def _unsupported_rank(cv, spec, what="2-D (NCHW) and 1-D (NCL)"):
    return UnsupportedError(f"{cv.op_type} over {len(spec.shape) - 2}-D data (input {spec}): graphrt "
                            f"runs {what} convolution and pooling")


def _as_2d(cv, x: str, spec, kernel, strides, dilations, pads):
    """1-D data as 2-D with a unit trailing axis; 3-D pooling whose window is 1x1 on the last two
    axes (PyTorch's LocalResponseNorm) as 2-D over (D, H*W). Returns x and the 2-D geometry."""
    nd = len(spec.shape) - 2
    if nd == 2:
        return x, kernel, strides, dilations, pads
    if nd == 1:
        x = cv.reshape(x, list(spec.shape) + [1], final=False)
        return x, kernel + (1,), strides + (1,), dilations + (1,), pads + [(0, 0)]
    if nd == 3 and kernel[1:] == (1, 1) and strides[1:] == (1, 1) and pads[1:] == [(0, 0), (0, 0)]:
        n, c, d, h, w = spec.shape
        x = cv.reshape(x, [n, c, d, h * w], final=False)
        return x, kernel[:1] + (1,), strides[:1] + (1,), dilations[:1] + (1,), pads[:1] + [(0, 0)]
    raise _unsupported_rank(cv, spec, "2-D (NCHW), 1-D (NCL), and depth-only 3-D")


def _back(cv, y: str, spec) -> str:
    """The 2-D result ``y`` reshaped to the rank of the N-D input ``spec``."""
    ys = cv.spec(y).shape
    nd = len(spec.shape) - 2
    dims = list(ys[:3]) if nd == 1 else list(ys[:3]) + list(spec.shape[3:])
    return cv.reshape(y, dims)


def _pads4(pads) -> tuple:
    return (pads[0][0], pads[0][1], pads[1][0], pads[1][1])


# ---- convolution, pooling, normalization ---------------------------------------------------------
@converts("Conv")
def conv(cv, attrs, ins):
    x, w = cv.tensor(0), cv.tensor(1, batched=False)
    xs, ws = cv.spec(x), cv.spec(w)
    if len(xs.shape) not in (3, 4) or len(ws.shape) != len(xs.shape):
        raise _unsupported_rank(cv, xs)
    kernel = ws.shape[2:]
    if tuple(attrs.get("kernel_shape", kernel)) != kernel:
        raise ShapeError(f"kernel_shape {attrs['kernel_shape']} does not match the weight {ws}")
    geometry = _geometry(cv, attrs, xs, kernel)
    x, _, strides, dil, pads = _as_2d(cv, x, xs, *geometry)
    if len(ws.shape) == 3:
        w = cv.reshape(w, list(ws.shape) + [1], final=False)
    inputs = [x, w] + ([cv.tensor(2, batched=False)] if ins[2:] and ins[2] is not None else [])
    a = {"stride": strides, "dilation": dil, "groups": attrs.get("group", 1), "pads": _pads4(pads)}
    if len(xs.shape) == 4:
        return [cv.emit("conv2d", inputs, a)]
    return [_back(cv, cv.add("conv2d", inputs, a, suffix="conv2d"), xs)]


@converts("MaxPool", "AveragePool")
def pool(cv, attrs, ins):
    x = cv.tensor(0)
    xs = cv.spec(x)
    if len(xs.shape) < 3:
        raise _unsupported_rank(cv, xs)
    geometry = _geometry(cv, attrs, xs, tuple(need(attrs, "kernel_shape")))
    if any(d != 1 for d in geometry[2]):
        raise UnsupportedError(f"pooling with dilations {list(geometry[2])}")
    x, kernel, strides, _, pads = _as_2d(cv, x, xs, *geometry)
    a = {"kernel": kernel, "stride": strides, "ceil_mode": bool(attrs.get("ceil_mode", 0)),
         "pads": _pads4(pads)}
    if cv.op_type == "AveragePool":
        a["count_include_pad"] = bool(attrs.get("count_include_pad", 0))
    op = "max_pool" if cv.op_type == "MaxPool" else "avg_pool"
    if len(xs.shape) == 4:
        return [cv.emit(op, [x], a)]
    return [_back(cv, cv.add(op, [x], a, suffix=op), xs)]


@converts("GlobalAveragePool", "GlobalMaxPool")
def global_pool(cv, attrs, ins):
    x = cv.tensor(0)
    xs = cv.spec(x)
    if len(xs.shape) < 3:
        raise _unsupported_rank(cv, xs)
    op = "avg_pool" if cv.op_type == "GlobalAveragePool" else "max_pool"
    if len(xs.shape) == 4:
        return [cv.emit(op, [x], {"global_pool": True})]
    flat = cv.reshape(x, list(xs.shape[:2]) + [int(np.prod(xs.shape[2:])), 1], final=False)
    y = cv.add(op, [flat], {"global_pool": True}, suffix=op)
    return [cv.reshape(y, list(xs.shape[:2]) + [1] * (len(xs.shape) - 2))]


@converts("LRN")
def lrn(cv, attrs, ins):
    return [cv.emit("lrn", [cv.tensor(0)], {
        "size": need(attrs, "size"), "alpha": attrs.get("alpha", 1e-4),
        "beta": attrs.get("beta", 0.75), "k": attrs.get("bias", 1.0)})]


@converts("BatchNormalization")
def batch_norm(cv, attrs, ins):
    if attrs.get("training_mode", 0):
        raise UnsupportedError("BatchNormalization in training mode (graphrt runs inference)")
    x = cv.tensor(0)
    scale, bias, mean, var = (cv.tensor(i, batched=False) for i in range(1, 5))
    return [cv.emit("batch_norm", [x, mean, var, scale, bias], {"eps": attrs.get("epsilon", 1e-5)})]


# ---- matrix products -----------------------------------------------------------------------------
def _bias_vector(c: Const, out: int, beta: float):
    """``beta * C`` as an (out,) bias when C broadcasts along the rows only, else None."""
    if c.symbolic or c.value.shape not in ((), (1,), (out,), (1, 1), (1, out)):
        return None
    return np.broadcast_to(c.value.reshape(-1).astype(np.float32) * np.float32(beta), (out,)).copy()


@converts("Gemm")
def gemm(cv, attrs, ins):
    alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
    trans_a, trans_b = attrs.get("transA", 0), attrs.get("transB", 0)
    a = cv.tensor(0, batched=False if trans_a else None)
    if trans_a:
        a = cv.add("transpose", [a], {"perm": (1, 0)}, suffix="transA")
    b, c = ins[1], ins[2] if len(ins) > 2 else None
    if isinstance(b, Const) and b.value.ndim == 2 and not b.symbolic:
        w = b.value if trans_b else b.value.T
        weight = cv.tensor(1) if trans_b and alpha == 1.0 else cv.param(
            (w * np.float32(alpha)).astype(np.float32), f"{cv.node.input[1]}/gemm")
        bias = _bias_vector(c, w.shape[0], beta) if isinstance(c, Const) else None
        if bias is not None:  # an (out,) C with beta 1 keeps its ONNX name
            bias = cv.tensor(2) if beta == 1.0 and c.value.shape == (w.shape[0],) else \
                cv.param(bias, f"{cv.node.input[2]}/gemm")
        inputs = [a, weight] + ([bias] if bias is not None else [])
        if c is None or bias is not None:
            return [cv.emit("dense", inputs)]
        y = cv.add("dense", inputs, suffix="dense")
    else:
        bt = cv.tensor(1, batched=False)
        if trans_b:
            bt = cv.add("transpose", [bt], {"perm": (1, 0)}, suffix="transB")
        if c is None and alpha == 1.0:
            return [cv.emit("matmul", [a, bt])]
        y = cv.add("matmul", [a, bt], suffix="matmul")
        if alpha != 1.0:
            if c is None:
                return [cv.emit("scale", [y], {"scale": alpha})]
            y = cv.add("scale", [y], {"scale": alpha}, suffix="alpha")
    if isinstance(c, Const):
        return [_add_const(cv, y, c.value * np.float32(beta))]
    ct = cv.tensor(2)
    if beta != 1.0:
        ct = cv.add("scale", [ct], {"scale": beta}, suffix="beta")
    return [cv.emit("add", [y, ct])]


@converts("MatMul")
def matmul(cv, attrs, ins):
    a, b = cv.tensor(0), ins[1]
    if isinstance(b, Const) and b.value.ndim == 2 and len(cv.spec(a).shape) == 2 and not b.symbolic:
        w = cv.param(np.ascontiguousarray(b.value.T), f"{cv.node.input[1]}/matmul")
        return [cv.emit("dense", [a, w])]
    return [cv.emit("matmul", [a, cv.tensor(1)])]


# ---- elementwise ---------------------------------------------------------------------------------
def _channel_vector(spec, value: np.ndarray):
    """``value`` as a (C,) vector if it broadcasts against ``spec`` along axis 1 only."""
    rank = len(spec.shape)
    if rank < 2 or value.ndim > rank or value.size < 2:
        return None
    full = (1,) * (rank - value.ndim) + value.shape
    if full[0] == 1 and full[1] == spec.shape[1] and all(d == 1 for d in full[2:]):
        return value.reshape(-1)
    return None


def _add_const(cv, x: str, value: np.ndarray, op: str = "Add", final: bool = True) -> str:
    """``x + value`` or ``x * value`` as scale, channel_affine or a broadcast add/mul."""
    spec = cv.spec(x)
    value = np.asarray(value, spec.dtype)
    make = cv.emit if final else (lambda o, i, a=None: cv.add(o, i, a, suffix=o))
    if value.size == 1 and value.ndim <= len(spec.shape):
        v = float(value.reshape(-1)[0])
        return make("scale", [x], {"scale": v} if op == "Mul" else {"shift": v})
    vec = _channel_vector(spec, value)
    if vec is not None:
        if op == "Mul":
            return make("channel_affine", [x, cv.param(vec, f"{cv.name}/scale")])
        ones = cv.param(np.ones_like(vec), f"{cv.name}/ones")
        return make("channel_affine", [x, ones, cv.param(vec, f"{cv.name}/bias")])
    return make("add" if op == "Add" else "mul", [x, cv.param(value, f"{cv.name}/constant")])


@converts("Add", "Sub", "Mul", "Div")
def arithmetic(cv, attrs, ins):
    op = cv.op_type
    if isinstance(ins[0], Const) or isinstance(ins[1], Const):
        k = 1 if isinstance(ins[0], Const) else 0  # the tensor operand
        x, c = cv.tensor(k), ins[1 - k]
        if c.symbolic:
            raise BatchError(f"{op} computes with the batch size")
        value = c.value.astype(cv.spec(x).dtype)
        if op == "Sub":
            if k == 1:  # c - x
                x = cv.add("scale", [x], {"scale": -1.0}, suffix="negate")
            else:
                value = -value
        elif op == "Div":
            if k == 1:  # c / x
                x = cv.add("scale", [x], {"power": -1.0}, suffix="reciprocal")
            else:
                value = (1 / value).astype(value.dtype)
        return [_add_const(cv, x, value, "Add" if op in ("Add", "Sub") else "Mul")]
    x, y = cv.tensor(0), cv.tensor(1)
    if op == "Sub":
        if cv.spec(x).shape == cv.spec(y).shape:
            return [cv.emit("add", [x, y], {"coeffs": (1.0, -1.0)})]
        return [cv.emit("sub", [x, y])]
    if op == "Div":
        return [cv.emit("div", [x, y])]
    return [cv.emit("add" if op == "Add" else "mul", [x, y])]


@converts("Sum")
def sum_(cv, attrs, ins):
    consts = [v for v in ins if isinstance(v, Const)]
    tensors = [cv.tensor(i) for i, v in enumerate(ins) if not isinstance(v, Const)]
    if any(c.symbolic for c in consts):
        raise BatchError("Sum computes with the batch size")
    if not consts:
        return [cv.emit("add" if len(tensors) > 1 else "identity", tensors)]
    y = tensors[0] if len(tensors) == 1 else cv.add("add", tensors, suffix="sum")
    return [_add_const(cv, y, sum(c.value for c in consts))]


def _unary(op, **fixed):
    def convert(cv, attrs, ins):
        a = {k: (attrs.get(src, default) if isinstance(src, str) else src)
             for k, (src, default) in fixed.items()}
        return [cv.emit(op, [cv.tensor(0)], a)]
    return convert


CONVERTERS.update({"Relu": _unary("relu"), "Sigmoid": _unary("sigmoid"), "Tanh": _unary("tanh"),
                   "LeakyRelu": _unary("relu", negative_slope=("alpha", 0.01)),
                   "Neg": _unary("scale", scale=(-1.0, None)),
                   "Sqrt": _unary("scale", power=(0.5, None)),
                   "Reciprocal": _unary("scale", power=(-1.0, None))})


@converts("Pow")
def pow_(cv, attrs, ins):
    """A constant scalar exponent is a ``scale`` (fusable); anything else the ``pow`` op."""
    exponent = ins[1]
    if isinstance(exponent, Const) and exponent.value.size == 1 and not exponent.symbolic:
        return [cv.emit("scale", [cv.tensor(0)], {"power": float(exponent.value.reshape(-1)[0])})]
    x = cv.tensor(0)
    if isinstance(exponent, Const) and exponent.value.dtype.kind in "iub":  # Pow(float, int)
        return [cv.emit("pow", [x, cv.param(exponent.value.astype(cv.spec(x).dtype),
                                             f"{cv.node.input[1]}/as_float")])]
    return [cv.emit("pow", [x, cv.tensor(1)])]


@converts("Softmax", "LogSoftmax")
def softmax(cv, attrs, ins):
    x = cv.tensor(0)
    s = cv.spec(x)
    rank = len(s.shape)
    axis = attrs.get("axis", -1 if cv.opset >= 13 else 1) % max(rank, 1)
    op = "softmax" if cv.op_type == "Softmax" else "log_softmax"
    if axis == 0 and s.batched:
        raise BatchError(f"{cv.op_type} along the batch axis")
    if cv.opset >= 13 or all(d == 1 for d in s.shape[axis + 1:]):
        return [cv.emit(op, [x], {"axis": axis})]
    # before opset 13 the softmax runs over all the axes from ``axis`` on, flattened
    rest = int(np.prod(s.shape[axis:], dtype=np.int64))
    flat = cv.reshape(x, list(s.shape[:axis]) + [rest], final=False)
    y = cv.add(op, [flat], {"axis": axis}, suffix=op)
    return [cv.reshape(y, list(s.shape))]


@converts("Dropout")
def dropout(cv, attrs, ins):
    if cv.opset >= 12:
        ratio, training = cv.const(1, "dropout ratio"), cv.const(2, "training_mode")
        if training is not None and bool(training.value):
            raise UnsupportedError("Dropout in training mode (graphrt runs inference)")
        ratio = 0.5 if ratio is None else float(ratio.value)
    else:
        ratio = attrs.get("ratio", 0.5)
    return [cv.emit("dropout", [cv.tensor(0)], {"rate": min(ratio, 0.999)})]

