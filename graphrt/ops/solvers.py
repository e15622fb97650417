"""Caffe's solver updates as one op: ``solver_update(param, grad, history, history2, iteration)``.

Updates ``param`` and its history blobs in place, as Caffe's ``SGDSolver`` family does in
``ApplyUpdate`` (``Regularize``, then ``ComputeUpdateValue``, then ``param -= update``), with
``rate = lr_policy(iteration) * lr_mult`` (the policies of :mod:`graphrt.ops.optim`) and the decay
``d = weight_decay * decay_mult``:

- regularization: ``g = grad + d * param`` (``L2``) or ``g = grad + d * sign(param)`` (``L1``);
- ``SGD``: ``h = momentum * h + rate * g``; ``param -= h``;
- ``Nesterov``: ``h_old = h``; ``h = momentum * h + rate * g``;
  ``param -= (1 + momentum) * h - momentum * h_old``;
- ``Adam`` (``momentum`` is beta1, ``momentum2`` beta2, ``delta`` epsilon, t = iteration + 1):
  ``m = beta1 * m + (1 - beta1) * g``; ``v = beta2 * v + (1 - beta2) * g^2``;
  ``param -= rate * sqrt(1 - beta2^t) / (1 - beta1^t) * m / (sqrt(v) + delta)``.

``history2`` is Adam's ``v`` (unused by the others). Computed in the parameter's dtype, the
correction factor in double as Caffe computes it.
"""
from __future__ import annotations

import math

import numpy as np

from ..ir import spec_error
from .optim import POLICIES, check_schedule, learning_rate
from .registry import Attr, OpDef, OpPattern, choice, floats, nonnegative, register, to_float, to_int

TYPES = ("SGD", "Nesterov", "Adam")


def _infer(attrs, ins, node):
    param, grad, h1, h2, it = ins
    if any(s.shape != param.shape for s in (grad, h1, h2)):
        raise spec_error(node, f"solver_update needs grad and histories shaped like {param}")
    check_schedule(attrs, it, node)
    return []


def _update(attrs, inputs, outputs):
    param, grad, h, v, it = inputs
    t = param.dtype.type
    rate = t(learning_rate(attrs, float(it)) * attrs["lr_mult"])
    decay = t(attrs["weight_decay"] * attrs["decay_mult"])
    g = grad
    if decay:
        g = grad + decay * (np.sign(param) if attrs["regularization"] == "L1" else param)
    mom = t(attrs["momentum"])
    if attrs["type"] == "Adam":
        b2 = t(attrs["momentum2"])
        h *= mom
        h += (t(1) - mom) * g
        v *= b2
        v += (t(1) - b2) * g * g
        step = float(it) + 1
        correction = t(math.sqrt(1 - attrs["momentum2"] ** step) / (1 - attrs["momentum"] ** step))
        param -= rate * correction * h / (np.sqrt(v) + t(attrs["delta"]))
        return
    old = h.copy() if attrs["type"] == "Nesterov" else None
    h *= mom
    h += rate * g
    if old is None:
        param -= h
    else:
        param -= (t(1) + mom) * h - mom * old


SOLVER_UPDATE = register(OpDef(
    name="solver_update", family="optim", arity=(5, 5),
    attrs={"type": Attr(choice(*TYPES), "SGD"), "lr": Attr(nonnegative(to_float)),
           "momentum": Attr(nonnegative(to_float), 0.0), "momentum2": Attr(to_float, 0.999),
           "delta": Attr(to_float, 1e-8), "weight_decay": Attr(nonnegative(to_float), 0.0),
           "regularization": Attr(choice("L2", "L1"), "L2"), "lr_mult": Attr(to_float, 1.0),
           "decay_mult": Attr(to_float, 1.0), "policy": Attr(choice(*POLICIES), "fixed"),
           "gamma": Attr(to_float, 0.1), "power": Attr(to_float, 1.0), "stepsize": Attr(to_int, 0),
           "stepvalues": Attr(floats, ()), "max_iter": Attr(to_int, 0)},
    infer=_infer, forward=_update, pattern=OpPattern.OPAQUE, outputs=lambda attrs: 0,
    writes=(0, 2, 3), doc=__doc__))
