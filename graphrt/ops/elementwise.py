"""Elementwise ops: activations, ``scale``, n-ary ``add`` / ``mul``, ``dropout``, ``identity``.

- ``relu``: max(x, 0) + negative_slope * min(x, 0) (Caffe ReLU's ``negative_slope``, leaky ReLU).
- ``tanh``, ``sigmoid``.
- ``scale``: y = (shift + scale * x) ** power (Caffe Power; Torch MulConstant is power 1, shift 0).
- ``add``: y = sum_i coeffs[i] * x_i (Caffe Eltwise SUM, its ``coeff``).
- ``mul``: y = prod_i x_i (Caffe Eltwise PROD).
- ``add`` and ``mul`` inputs of one shape combine elementwise; inputs of different shapes broadcast
  as in numpy (ONNX Add/Mul/Sum), aligned on their last axes, with two rules for the symbolic
  batch: a batched input has the output's full rank (its batch is the output's first axis), and
  an unbatched input of that rank has size 1 there. ``add`` broadcasts only without ``coeffs``
  (or with all of them 1).
- ``dropout``: the identity in inference; ``rate`` is kept for training.
- ``dropout_train(x, counter) -> (y, mask)``: the training form; ``mask`` is 0 or 1/(1 - rate),
  kept where u >= rate for u ~ U[0, 1) drawn by :func:`dropout_mask` from Philox4x32-10 keyed by
  ``seed``, the step ``counter`` (a state input it increments in place) and the element index
  (:mod:`.philox`), so a step is reproducible and the cuda device draws the same mask on the GPU.
  ``offset`` (samples) draws rows ``offset...`` of a larger batch's mask (data-parallel ranks).
- ``identity``: y = x.
- ``elementwise_chain``: a fused run of the unary ops above and the activations of
  :mod:`.activation`, ``steps`` = ((op, attrs), ...), applied in order in one pass over the data
  (made by the ``fuse_elementwise`` pass).
- The conv2d/dense epilogue (``EPILOGUE_ATTRS``): ``activation`` (relu, tanh, sigmoid or any
  differentiable activation of :mod:`.activation`), ``negative_slope`` for relu and
  ``activation_params`` ((name, value) pairs) for the others.
"""
from __future__ import annotations

import numpy as np

from ..ir import Node, TensorSpec, spec_error
from . import activation, philox
from .registry import (Attr, OpDef, OpPattern, choice, elementwise_cost, float_dtype, floats,
                       nonnegative, register, to_float, to_int)


def _unary(attrs, ins, node):
    return [TensorSpec(ins[0].shape, float_dtype(ins[0], node))]


def _same_shapes(attrs, ins, node):
    first = ins[0]
    float_dtype(first, node)
    for i, s in enumerate(ins[1:], 1):
        if s.dtype != first.dtype:
            raise spec_error(node, f"{node.op if node else 'op'} needs inputs of one dtype: "
                                   f"input 0 is {first} {first.dtype}, input {i} is {s} {s.dtype}")
    coeffs = attrs.get("coeffs") or ()
    if coeffs and len(coeffs) != len(ins):
        raise spec_error(node, f"add has {len(ins)} inputs but {len(coeffs)} coeffs")
    if all(s.shape == first.shape for s in ins):
        return [TensorSpec(first.shape, first.dtype)]
    if any(c != 1.0 for c in coeffs):
        raise spec_error(node, f"add with coeffs {coeffs} needs inputs of one shape, got "
                               + ", ".join(str(s) for s in ins))
    return [TensorSpec(broadcast_shape(ins, node), first.dtype)]


def broadcast_shape(ins, node=None) -> tuple:
    """numpy's broadcast of the input shapes, with the batch rules of the module docstring."""
    rank = max(len(s.shape) for s in ins)
    out = [1] * rank
    for i, s in enumerate(ins):
        why = None
        if s.batched and len(s.shape) != rank:
            why = f"a batched input must have the output's rank {rank}"
        for axis, d in enumerate(s.shape, rank - len(s.shape)):
            have = out[axis]
            if why is None and d != have and 1 not in (d, have):
                why = f"axis {axis} has size {'N' if d is None else d}, earlier inputs " \
                      f"{'N' if have is None else have}"
            out[axis] = have if d == 1 else d
        if why is not None:
            raise spec_error(node, f"{node.op if node else 'op'} needs inputs of one shape or "
                                   f"shapes that broadcast: input 0 is {ins[0]}, input {i} is {s} "
                                   f"({why})")
    return tuple(out)


#: the activations a conv2d/dense epilogue applies: relu (with ``negative_slope``), tanh, sigmoid
#: and every differentiable activation of :mod:`.activation` (with ``activation_params``)
ACTIVATIONS = ("none", "relu", "tanh", "sigmoid") + tuple(
    name for name, d in activation.DEFS.items() if d.differentiable)


def activate(out: np.ndarray, activation_name: str, negative_slope: float = 0.0,
             params=()) -> None:
    """Apply a fused activation epilogue in place (conv2d/dense ``activation`` attribute)."""
    if activation_name == "relu":
        _relu({"negative_slope": negative_slope}, [out], [out])
    elif activation_name == "tanh":
        np.tanh(out, out=out)
    elif activation_name == "sigmoid":
        _sigmoid({}, [out], [out])
    elif activation_name != "none":
        attrs = activation.OPS[activation_name].normalize_attrs(dict(params))
        activation.apply(activation_name, attrs, out, out)


def epilogue_backward(ctx, node, dy: str) -> str:
    """The gradient of a conv2d/dense's pre-activation value from that of its fused-epilogue
    output ``node.outputs[0]`` (the activation's gradient applied first)."""
    kind, slope = node.attrs["activation"], node.attrs["negative_slope"]
    if kind == "none":
        return dy
    y = node.outputs[0]
    if kind in activation.DEFS:  # f'(x) needs the pre-activation value: recompute it
        z = ctx.add(node.op, list(node.inputs), {**node.attrs, "activation": "none",
                                                 "activation_params": ()})
        return ctx.add("unary_grad", [dy, z], {"op": kind,
                                               "params": node.attrs["activation_params"]})
    if kind != "relu":
        return ctx.add(f"{kind}_grad", [dy, y])
    if slope < 0:  # y's sign no longer tells the pre-activation's: recompute it
        y = ctx.add(node.op, list(node.inputs), {**node.attrs, "activation": "none",
                                                 "negative_slope": 0.0})
    return ctx.add("relu_grad", [dy, y], {"negative_slope": slope})


def _relu(attrs, inputs, outputs):
    x, out = inputs[0], outputs[0]
    slope = attrs["negative_slope"]
    if slope == 0.0:
        np.maximum(x, 0, out=out)
    else:
        np.multiply(x, np.where(x > 0, x.dtype.type(1), x.dtype.type(slope)), out=out)


def _relu_backward(ctx, node, dys):
    if not ctx.wants(0):
        return [None]
    slope = node.attrs["negative_slope"]
    # with a slope >= 0, y > 0 exactly where x > 0: reading y lets x's buffer go
    t = node.outputs[0] if slope >= 0 else node.inputs[0]
    return [ctx.add("relu_grad", [dys[0], t], {"negative_slope": slope})]


def _tanh(attrs, inputs, outputs):
    np.tanh(inputs[0], out=outputs[0])


def _tanh_backward(ctx, node, dys):
    return [ctx.add("tanh_grad", [dys[0], node.outputs[0]]) if ctx.wants(0) else None]


def _sigmoid(attrs, inputs, outputs):
    # 1 / (1 + exp(-x)) written to avoid overflow warnings for large negative x
    x, out = inputs[0], outputs[0]
    e = np.exp(-np.abs(x))
    np.divide(np.where(x >= 0, 1, e), 1 + e, out=out)


def _sigmoid_backward(ctx, node, dys):
    return [ctx.add("sigmoid_grad", [dys[0], node.outputs[0]]) if ctx.wants(0) else None]


def _scale(attrs, inputs, outputs):
    x, out = inputs[0], outputs[0]
    np.multiply(x, x.dtype.type(attrs["scale"]), out=out)
    if attrs["shift"]:
        out += x.dtype.type(attrs["shift"])
    if attrs["power"] != 1.0:
        np.power(out, x.dtype.type(attrs["power"]), out=out)


def _scale_backward(ctx, node, dys):
    if not ctx.wants(0):
        return [None]
    if node.attrs["power"] == 1.0:  # linear: dx = scale * dy
        return [ctx.add("scale", [dys[0]], {"scale": node.attrs["scale"]})]
    return [ctx.add("scale_grad", [dys[0], node.inputs[0]], dict(node.attrs))]


def _add(attrs, inputs, outputs):
    out = outputs[0]
    coeffs = attrs["coeffs"] or (1.0,) * len(inputs)
    np.multiply(inputs[0], out.dtype.type(coeffs[0]), out=out)
    for c, x in zip(coeffs[1:], inputs[1:]):
        if c == 1.0:
            out += x
        else:
            out += out.dtype.type(c) * x


def _unbroadcast(ctx, grad: str, x: str, out: str) -> str:
    """The gradient of input ``x`` from ``grad``, shaped like ``out``: summed where x broadcast."""
    same = ctx.spec(x).shape == ctx.spec(out).shape
    return grad if same else ctx.add("reduce_like", [grad, x])


def _add_backward(ctx, node, dys):
    """dx_i = coeffs[i] * dy (dy itself for a coefficient of 1)."""
    coeffs = node.attrs["coeffs"] or (1.0,) * len(node.inputs)
    grads = []
    for i, (x, c) in enumerate(zip(node.inputs, coeffs)):
        if not ctx.wants(i):
            grads.append(None)
            continue
        g = dys[0] if c == 1.0 else ctx.add("scale", [dys[0]], {"scale": c})
        grads.append(_unbroadcast(ctx, g, x, node.outputs[0]))
    return grads


def _mul(attrs, inputs, outputs):
    out = outputs[0]
    out[...] = inputs[0]
    for x in inputs[1:]:
        out *= x


def _mul_backward(ctx, node, dys):
    """dx_i = dy * the product of the other inputs."""
    grads = []
    for i, x in enumerate(node.inputs):
        others = list(node.inputs[:i] + node.inputs[i + 1:])
        if not ctx.wants(i):
            grads.append(None)
            continue
        g = ctx.add("mul", [dys[0], *others]) if others else dys[0]
        grads.append(_unbroadcast(ctx, g, x, node.outputs[0]))
    return grads


def _copy(attrs, inputs, outputs):
    outputs[0][...] = inputs[0]


def pass_through_backward(ctx, node, dys):
    """The rule of an op that is the identity on values: dx = dy."""
    return [dys[0] if ctx.wants(0) else None]


def _rate(v):
    v = to_float(v)
    if not 0.0 <= v < 1.0:
        raise ValueError(f"dropout rate must be in [0, 1), got {v}")
    return v


def _unary_op(name, forward, flops=1, attrs=None, pattern=OpPattern.ELEMWISE, backward=None):
    return register(OpDef(name=name, family="elementwise", arity=(1, 1), attrs=attrs or {},
                          infer=_unary, forward=forward, cost=elementwise_cost(flops),
                          pattern=pattern, inplace=0, backward=backward, doc=__doc__))


EPILOGUE_ATTRS = {"activation": Attr(choice(*ACTIVATIONS), "none"),
                  "negative_slope": Attr(to_float, 0.0),
                  "activation_params": Attr(activation.params_attr, ())}
RELU = _unary_op("relu", _relu, attrs={"negative_slope": Attr(to_float, 0.0)},
                 backward=_relu_backward)
TANH = _unary_op("tanh", _tanh, flops=4, backward=_tanh_backward)
SIGMOID = _unary_op("sigmoid", _sigmoid, flops=4, backward=_sigmoid_backward)
SCALE = _unary_op("scale", _scale, flops=3, attrs={
    "power": Attr(to_float, 1.0), "scale": Attr(to_float, 1.0), "shift": Attr(to_float, 0.0)},
    backward=_scale_backward)
DROPOUT = _unary_op("dropout", _copy, flops=0, attrs={"rate": Attr(_rate, 0.5)},
                    backward=pass_through_backward)
IDENTITY = _unary_op("identity", _copy, flops=0, backward=pass_through_backward)
ADD = register(OpDef(name="add", family="elementwise", arity=(1, None),
                     attrs={"coeffs": Attr(floats, ())}, infer=_same_shapes, forward=_add,
                     cost=elementwise_cost(1), pattern=OpPattern.ELEMWISE, inplace=0,
                     backward=_add_backward, doc=__doc__))
MUL = register(OpDef(name="mul", family="elementwise", arity=(1, None), attrs={},
                     infer=_same_shapes, forward=_mul, cost=elementwise_cost(1),
                     pattern=OpPattern.ELEMWISE, inplace=0, backward=_mul_backward, doc=__doc__))


def _dropout_train_infer(attrs, ins, node):
    x, counter = ins
    dtype = float_dtype(x, node)
    if counter.shape not in ((), (1,)):
        raise spec_error(node, f"dropout_train's counter must be a scalar or (1,) state tensor, "
                               f"got {counter}")
    return [TensorSpec(x.shape, dtype), TensorSpec(x.shape, dtype)]


def dropout_mask(shape, rate: float, seed: int, step: int, dtype, offset: int = 0) -> np.ndarray:
    """The mask of ``dropout_train`` at ``step``: 1/(1 - rate) where u >= rate, else 0, for
    u = :func:`.philox.uniform` of the element indices (C order) at ``step`` with key ``seed`` —
    rows ``offset`` to ``offset + shape[0]`` of the mask of a batch that starts ``offset`` samples
    earlier (a data-parallel rank's shard of the global batch draws the global batch's masks)."""
    start = offset * int(np.prod(shape[1:], dtype=np.int64))
    u = philox.uniform(int(np.prod(shape, dtype=np.int64)), seed, step, start).reshape(shape)
    dtype = np.dtype(dtype)
    return np.multiply(u >= rate, dtype.type(1.0 / (1.0 - rate)), dtype=dtype)


def _dropout_train(attrs, inputs, outputs):
    x, counter = inputs
    y, mask = outputs
    step = int(counter.reshape(-1)[0])
    mask[...] = dropout_mask(x.shape, attrs["rate"], attrs["seed"], step, mask.dtype,
                             attrs.get("offset", 0))
    np.multiply(x, mask, out=y)
    counter += 1


def _dropout_train_backward(ctx, node, dys):
    if dys[0] is None or not ctx.wants(0):
        return [None, None]
    return [ctx.add("mul", [dys[0], node.outputs[1]]), None]


DROPOUT_TRAIN = register(OpDef(
    name="dropout_train", family="elementwise", arity=(2, 2),
    attrs={"rate": Attr(_rate, 0.5), "seed": Attr(nonnegative(to_int), 0),
           "offset": Attr(nonnegative(to_int), 0)},
    infer=_dropout_train_infer, forward=_dropout_train, cost=elementwise_cost(12),
    pattern=OpPattern.OPAQUE, outputs=lambda attrs: 2, writes=(1,),
    backward=_dropout_train_backward, doc=__doc__))


def _steps(v) -> tuple:
    steps = []
    for step in v:
        op, attrs = step
        opdef = UNARY.get(op)
        if opdef is None:
            raise ValueError(f"elementwise_chain step {op!r} is not one of {sorted(UNARY)}")
        steps.append((op, opdef.normalize_attrs(dict(attrs))))
    if not steps:
        raise ValueError("elementwise_chain needs at least one step")
    return tuple(steps)


def _chain(attrs, inputs, outputs):
    x, out = inputs[0], outputs[0]
    for op, step_attrs in attrs["steps"]:
        UNARY[op].forward(step_attrs, [x], [out])
        x = out


def _chain_backward(ctx, node, dys):
    """Recompute the intermediate values, then apply the steps' rules in reverse order."""
    if not ctx.wants(0):
        return [None]
    steps = node.attrs["steps"]
    values = [node.inputs[0]]
    for op, attrs in steps[:-1]:
        values.append(ctx.add(op, [values[-1]], dict(attrs)))
    values.append(node.outputs[0])
    dy = dys[0]
    for k in reversed(range(len(steps))):
        op, attrs = steps[k]
        step = Node(f"{node.name}/{k}", op, (values[k],), (values[k + 1],), attrs, node.source)
        dy = UNARY[op].backward(ctx, step, [dy])[0]
    return [dy]


def _chain_cost(attrs, ins, outs, batch):
    flops = sum(UNARY[op].cost(a, ins, outs, batch)[0] for op, a in attrs["steps"])
    return flops, ins[0].nbytes(batch) + outs[0].nbytes(batch)


UNARY = {op.name: op for op in (RELU, TANH, SIGMOID, SCALE, DROPOUT, IDENTITY,
                                *activation.OPS.values())}
ELEMENTWISE_CHAIN = register(OpDef(
    name="elementwise_chain", family="elementwise", arity=(1, 1), attrs={"steps": Attr(_steps)},
    infer=_unary, forward=_chain, cost=_chain_cost, pattern=OpPattern.ELEMWISE, inplace=0,
    backward=_chain_backward, doc=__doc__))
