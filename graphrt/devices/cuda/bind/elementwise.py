"""Binders of the elementwise kernels (``kernels/elementwise.cu``): unary runs (``ew_unary``: relu,
tanh, sigmoid, scale, dropout, identity, the activations of :mod:`graphrt.ops.activation`,
elementwise_chain), broadcast binary and n-ary ops (``ew_nary``: add, mul, sub, div, pow, maximum,
minimum, prelu), comparisons into bool (``ew_compare``), ``where`` (``ew_where``), copies between
layouts (``copy_nd``: concat and split where the plan did not alias them, flatten and reshape of
strided views, transpose, host/device copies) and padding (``pad_nd``: zero_pad, pad).

A binder is ``(attrs, inputs, outputs, workspace) -> [Call]``; it raises
:class:`~graphrt.devices.cuda.calls.Unsupported` where the kernels cannot express the arrays.
"""
from __future__ import annotations

from ..calls import (MAX_RANK, THREADS, Call, Unsupported, check_dtype, collapse, copy_call, estrides,
                     grid_1d, num_elements, pad6)
from .train import LABEL_KINDS

STEPS_PER_LAUNCH = 4
INPUTS_PER_LAUNCH = 4
# gr_unary's op codes (kernels/prelude.cuh); gelu with approximate="tanh" is 9
UNARY_CODES = {"identity": 0, "dropout": 0, "relu": 1, "tanh": 2, "sigmoid": 3, "scale": 4,
               "clip": 5, "elu": 6, "selu": 7, "gelu": 8, "erf": 10, "softplus": 11,
               "softsign": 12, "exp": 13, "log": 14, "sqrt": 15, "abs": 16, "swish": 17,
               "hard_sigmoid": 18, "hard_swish": 19, "threshold": 20}
# the attributes a unary step passes as its parameters a, b, c (missing ones: 0, 0, 1)
UNARY_PARAMS = {"relu": ("negative_slope",), "scale": ("scale", "shift", "power"),
                "clip": ("min", "max"), "elu": ("alpha",), "selu": ("alpha", "gamma"),
                "swish": ("beta",), "hard_sigmoid": ("alpha", "beta"), "threshold": ("threshold",)}
# gr_binary's op codes (kernels/elementwise.cu), also binary_grad's (where: 8)
NARY_CODES = {"add": 0, "mul": 1, "sub": 2, "div": 3, "pow": 4, "maximum": 5, "minimum": 6,
              "prelu": 7}
COMPARE_CODES = {"equal": 0, "greater": 1, "less": 2, "greater_equal": 3, "less_equal": 4}


def unary_step(op: str, attrs) -> tuple:
    """``(code, a, b, c)``: unary op ``op`` with its (normalized) attributes as a gr_unary step."""
    code = UNARY_CODES.get(op)
    if code is None:
        raise Unsupported(f"no cuda kernel for the elementwise op {op!r}")
    if op == "gelu" and attrs["approximate"] == "tanh":
        code = 9
    params = [attrs.get(name, 0.0) for name in UNARY_PARAMS.get(op, ())]
    return (code, *params, *(0.0, 0.0, 1.0)[len(params):])


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
            steps = [unary_step(o, a) for o, a in attrs["steps"]]
        elif op in ("dropout", "identity"):
            steps = []
        else:
            steps = [unary_step(op, attrs)]
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


def broadcast6(y, inputs) -> tuple:
    """The rank-6 shape of ``y`` with y's strides and each input's, broadcast to y's shape."""
    strides = [broadcast_strides(x, y.shape) for x in inputs]
    shape, all_s = collapse(y.shape, estrides(y), *strides)
    shape, ys = pad6(shape, all_s[0])
    return shape, ys, [pad6(shape[MAX_RANK - len(s):], s)[1] for s in all_s[1:]]


def bind_nary(op):
    code = NARY_CODES[op]

    def bind(attrs, inputs, outputs, ws):
        y = outputs[0]
        dtype = check_dtype(y, *inputs)
        coeffs = list(attrs.get("coeffs") or ()) or [1.0] * len(inputs)
        shape, ys, xs = broadcast6(y, inputs)
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
                              (y, total, *shape, *ys, len(chunk), code, int(start > 0), *args)))
        return calls
    return bind


def bind_compare(op):
    code = COMPARE_CODES[op]

    def bind(attrs, inputs, outputs, ws):
        a, b = inputs
        y = outputs[0]
        if y.dtype.name != "bool":
            raise Unsupported(f"a comparison into {y.dtype}")
        dtype = check_dtype(a, b)
        shape, ys, (as_, bs) = broadcast6(y, inputs)
        total = num_elements(y.shape)
        return [Call("ew_compare", dtype, grid_1d(total), (THREADS, 1, 1),
                     (a, b, y, total, code, *shape, *as_, *bs, *ys))]
    return bind


def bind_where(attrs, inputs, outputs, ws):
    cond, a, b = inputs
    y = outputs[0]
    dtype = check_dtype(y, a, b)
    kind = LABEL_KINDS.get(cond.dtype.name)
    if kind is None:
        raise Unsupported(f"a condition of dtype {cond.dtype}")
    shape, ys, (cs, as_, bs) = broadcast6(y, inputs)
    total = num_elements(y.shape)
    return [Call("ew_where", dtype, grid_1d(total), (THREADS, 1, 1),
                 (cond, kind, a, b, y, total, *shape, *cs, *as_, *bs, *ys))]


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


def bind_all_reduce(attrs, inputs, outputs, ws):
    """``all_reduce`` of a group of one (placement keeps a group with a communicator on the host):
    the identity, so only copies — each input into its range of the bucket, each range out to its
    output — where the plan did not make them the same memory."""
    bucket, calls, start = outputs[0], [], 0
    for x, y in zip(inputs, outputs[1:]):
        part = bucket[start:start + x.size]
        start += x.size
        calls += [copy_call(a, b) for a, b in ((x, part), (part, y))
                  if (a.data.ptr, a.nbytes) != (b.data.ptr, b.nbytes)]
    return calls


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
