"""Binders of the elementwise kernels (``kernels/elementwise.cu``): unary runs (``ew_unary``: relu,
tanh, sigmoid, scale, dropout, identity, elementwise_chain), add and mul of broadcast inputs
(``ew_nary``), copies between layouts (``copy_nd``: concat and split where the plan did not alias
them, flatten and reshape of strided views, transpose, host/device copies) and padding
(``pad_nd``: zero_pad, pad).

A binder is ``(attrs, inputs, outputs, workspace) -> [Call]``; it raises
:class:`~graphrt.devices.cuda.calls.Unsupported` where the kernels cannot express the arrays.
"""
from __future__ import annotations

from ..calls import (MAX_RANK, THREADS, Call, Unsupported, check_dtype, collapse, copy_call, estrides,
                     grid_1d, num_elements, pad6)

STEPS_PER_LAUNCH = 4
INPUTS_PER_LAUNCH = 4
UNARY_CODES = {"identity": 0, "dropout": 0, "relu": 1, "tanh": 2, "sigmoid": 3, "scale": 4}


def _step(op: str, attrs) -> tuple:
    code = UNARY_CODES.get(op)
    if code is None:
        raise Unsupported(f"no cuda kernel for the elementwise op {op!r}")
    if op == "relu":
        return code, attrs.get("negative_slope", 0.0), 0.0, 1.0
    if op == "scale":
        return code, attrs["scale"], attrs["shift"], attrs["power"]
    return code, 0.0, 0.0, 1.0


def unary_calls(steps, x, y) -> list:
    """``y = steps(x)`` elementwise in launches of up to :data:`STEPS_PER_LAUNCH` steps."""
    dtype = check_dtype(x, y)
    if x.shape != y.shape:
        raise Unsupported("unary shapes differ")
    steps = list(steps) or [(0, 0.0, 0.0, 1.0)]
    calls, src = [], x
    for i in range(0, len(steps), STEPS_PER_LAUNCH):
        chunk = steps[i:i + STEPS_PER_LAUNCH]
        shape, (xs, ys) = collapse(y.shape, estrides(src), estrides(y))
        shape, xs = pad6(shape, xs)
        _, ys = pad6(shape[MAX_RANK - len(ys):], ys)
        packed = []
        for k in range(STEPS_PER_LAUNCH):
            packed += list(chunk[k]) if k < len(chunk) else [0, 0.0, 0.0, 1.0]
        total = num_elements(y.shape)
        calls.append(Call("ew_unary", dtype, grid_1d(total), (THREADS, 1, 1),
                          (src, y, total, *shape, *xs, *ys, len(chunk), *packed)))
        src = y
    return calls


def bind_unary(op):
    def bind(attrs, inputs, outputs, ws):
        if op == "elementwise_chain":
            steps = [_step(o, a) for o, a in attrs["steps"]]
        elif op in ("dropout", "identity"):
            steps = []
        else:
            steps = [_step(op, attrs)]
        return unary_calls(steps, inputs[0], outputs[0])
    return bind


def broadcast_strides(x, out_shape) -> tuple:
    """Strides (elements) of ``x`` read as an array of ``out_shape`` (numpy broadcasting)."""
    lead = len(out_shape) - x.ndim
    if lead < 0:
        raise Unsupported("input of higher rank than the output")
    xs = estrides(x)
    out = [0] * lead
    for d, n in enumerate(x.shape):
        want = out_shape[lead + d]
        if n == want:
            out.append(xs[d])
        elif n == 1:
            out.append(0)
        else:
            raise Unsupported(f"shape {x.shape} does not broadcast to {out_shape}")
    return tuple(out)


def bind_nary(op):
    def bind(attrs, inputs, outputs, ws):
        y = outputs[0]
        dtype = check_dtype(y, *inputs)
        coeffs = list(attrs.get("coeffs") or ()) or [1.0] * len(inputs)
        mul = 1 if op == "mul" else 0
        strides = [broadcast_strides(x, y.shape) for x in inputs]
        shape, all_s = collapse(y.shape, estrides(y), *strides)
        shape, ys = pad6(shape, all_s[0])
        xs = [pad6(shape[MAX_RANK - len(s):], s)[1] for s in all_s[1:]]
        total = num_elements(y.shape)
        calls = []
        for start in range(0, len(inputs), INPUTS_PER_LAUNCH):
            chunk = list(range(start, min(len(inputs), start + INPUTS_PER_LAUNCH)))
            args = []
            for k in range(INPUTS_PER_LAUNCH):
                if k < len(chunk):
                    i = chunk[k]
                    args += [inputs[i], *xs[i], coeffs[i]]
                else:
                    args += [None, 0, 0, 0, 0, 0, 0, 1.0]
            calls.append(Call("ew_nary", dtype, grid_1d(total), (THREADS, 1, 1),
                              (y, total, *shape, *ys, len(chunk), mul, int(start > 0), *args)))
        return calls
    return bind


def _axis_slices(a, axis, sizes):
    start = 0
    for size in sizes:
        yield a[(slice(None),) * axis + (slice(start, start + size),)]
        start += size


def bind_concat(attrs, inputs, outputs, ws):
    out = outputs[0]
    axis = attrs["axis"] % out.ndim
    return [copy_call(x, part) for x, part in
            zip(inputs, _axis_slices(out, axis, [x.shape[axis] for x in inputs]))]


def bind_split(attrs, inputs, outputs, ws):
    x = inputs[0]
    axis = attrs["axis"] % x.ndim
    return [copy_call(part, y) for y, part in
            zip(outputs, _axis_slices(x, axis, [y.shape[axis] for y in outputs]))]


def bind_copy(attrs, inputs, outputs, ws):
    return [copy_call(inputs[0], outputs[0])]


def bind_transpose(attrs, inputs, outputs, ws):
    return [copy_call(inputs[0].transpose(attrs["perm"]), outputs[0])]


def pad_call(x, y, lo, fill) -> Call:
    dtype = check_dtype(x, y)
    if x.ndim != y.ndim or x.ndim > MAX_RANK:
        raise Unsupported("pad rank")
    k = MAX_RANK - x.ndim
    xn, xs = pad6(x.shape, estrides(x))
    yn, ys = pad6(y.shape, estrides(y))
    lo6 = (0,) * k + tuple(int(v) for v in lo)
    total = num_elements(y.shape)
    return Call("pad_nd", dtype, grid_1d(total), (THREADS, 1, 1),
                (x, y, total, fill, *xn, *xs, *yn, *ys, *lo6))


def bind_zero_pad(attrs, inputs, outputs, ws):
    x = inputs[0]
    t, _, l, _ = attrs["pads"]
    return [pad_call(x, outputs[0], (0,) * (x.ndim - 2) + (t, l), 0.0)]


def bind_pad(attrs, inputs, outputs, ws):
    x = inputs[0]
    return [pad_call(x, outputs[0], attrs["pads"][:x.ndim], attrs["value"])]
