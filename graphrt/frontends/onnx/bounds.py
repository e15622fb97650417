"""What constant folding may compute at load, and how many bytes each fold will allocate.

Folding runs code on a model's constants before anything else has looked at the model, so it runs
only ops whose output size is known *before* they run, from the shapes of their inputs or, for the
ops whose output size is itself a value (``ConstantOfShape``, ``Expand``, ``Tile``, ``Range``,
``OneHot``), from those values. :func:`fold_bytes` is that size, an upper bound in bytes taken from
the load's budget (``graphrt.limits.MAX_FOLDED_BYTES``) before the op runs. Every op listed here
costs time linear in its inputs and output, so bounding the bytes bounds the time as well.

Ops not listed (``Loop``, ``Scan``, ``MatMul``, ``Conv``, ``Resize``, ...) are never run at load:
with constant inputs they become run-time ops when graphrt has them, and are refused otherwise.
"""
from __future__ import annotations

import math

import numpy as np

ELEMENTWISE = frozenset({
    "Abs", "Neg", "Floor", "Ceil", "Round", "Sqrt", "Reciprocal", "Exp", "Log", "Sign", "Not",
    "Relu", "Sigmoid", "Tanh", "Erf", "Sin", "Cos", "Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh",
    "Asinh", "Acosh", "Atanh", "IsNaN", "IsInf", "Softplus", "Softsign", "HardSigmoid", "HardSwish",
    "LeakyRelu", "Elu", "Selu", "Celu", "ThresholdedRelu", "PRelu", "Add", "Sub", "Mul", "Div",
    "Pow", "Mod", "Min", "Max", "Sum", "Mean", "Equal", "Less", "LessOrEqual", "Greater",
    "GreaterOrEqual", "And", "Or", "Xor", "Where", "Clip", "BitShift", "BitwiseAnd", "BitwiseOr",
    "BitwiseXor", "BitwiseNot", "DequantizeLinear", "QuantizeLinear", "CastLike"})
# outputs no larger than the largest input (in elements; indices count 8 bytes each)
NOT_LARGER = frozenset({
    "Transpose", "Flatten", "Softmax", "LogSoftmax", "Hardmax", "CumSum", "Split", "Trilu",
    "ScatterElements", "ScatterND", "DepthToSpace", "SpaceToDepth", "Compress", "EyeLike",
    "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
    "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare", "ArgMax", "ArgMin", "Shape", "Size"})


def _elements(shape) -> int:
    dims = [int(d) for d in shape]
    if any(d < 0 for d in dims):
        raise ValueError(f"negative dimension in {tuple(dims)}")
    return math.prod(dims)


def _itemsize(values) -> int:
    """Bytes per element of an elementwise result: the widest input, at least 4 (so that
    DequantizeLinear's int8 -> float32 is covered)."""
    return max([4] + [v.dtype.itemsize for v in values])


def _broadcast(values) -> int:
    try:
        return _elements(np.broadcast_shapes(*(v.shape for v in values)))
    except ValueError:  # per-axis operands (DequantizeLinear's scale): no larger than the largest
        return max(v.size for v in values)


def _by_value(op: str, attrs: dict, values: list) -> int:
    """Output bytes of the ops whose output size is one of their input values."""
    if op == "Expand":
        shape = np.broadcast_shapes(values[0].shape, tuple(_dims(values[1])))
        return _elements(shape) * values[0].dtype.itemsize
    if op == "Tile":
        return _elements(values[0].shape) * _elements(_dims(values[1])) * values[0].dtype.itemsize
    if op == "Range":
        start, limit, delta = (float(v.reshape(-1)[0]) for v in values[:3])
        if delta == 0 or not math.isfinite((limit - start) / delta):
            raise ValueError(f"Range({start}, {limit}, {delta}) has no finite length")
        return max(0, math.ceil((limit - start) / delta)) * values[0].dtype.itemsize
    if op == "OneHot":
        depth = int(values[1].reshape(-1)[0])
        return _elements(values[0].shape) * max(depth, 0) * values[2].dtype.itemsize
    raise KeyError(op)


def _dims(value: np.ndarray) -> list[int]:
    dims = [int(d) for d in value.reshape(-1)]
    if any(d < 0 for d in dims):
        raise ValueError(f"negative dimension in {tuple(dims)}")
    return dims


BY_VALUE = frozenset({"Expand", "Tile", "Range", "OneHot"})
FOLDABLE = ELEMENTWISE | NOT_LARGER | BY_VALUE | {"NonZero"}


def reference_bytes(op: str, attrs: dict, values: list) -> int:
    """Upper bound of the bytes ``onnx.reference`` allocates for ``op``'s outputs (``values``:
    its present inputs); KeyError when the op is not run at load."""
    if op in ELEMENTWISE:
        return _broadcast(values) * _itemsize(values)
    if op in NOT_LARGER:
        return max([0] + [v.size for v in values]) * 8
    if op == "NonZero":
        return values[0].size * max(1, values[0].ndim) * 8
    return _by_value(op, attrs, values)


def constant_of_shape_bytes(shape: np.ndarray, fill: np.ndarray) -> int:
    return _elements(_dims(shape)) * fill.dtype.itemsize


def gather_bytes(data: np.ndarray, indices: np.ndarray, axis: int, masked: bool) -> int:
    rest = data.shape[:axis % max(1, data.ndim)] + data.shape[axis % max(1, data.ndim) + 1:]
    return _elements(indices.shape) * _elements(rest) * (data.dtype.itemsize + masked)


__all__ = ["FOLDABLE", "reference_bytes", "constant_of_shape_bytes", "gather_bytes"]
