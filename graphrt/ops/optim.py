"""Optimizer ops: parameter updates that run on the device as part of the training step.

``sgd_update(param, grad, velocity, iteration)`` updates ``param`` and ``velocity`` in place (no
outputs): with ``lr = lr_policy(iteration) * lr_mult`` and ``g = grad + weight_decay * decay_mult *
param``, ``convention="pytorch"`` is ``torch.optim.SGD``'s ``velocity = momentum * velocity + g;
param -= lr * velocity`` and ``convention="caffe"`` is Caffe's SGDSolver's ``velocity = momentum *
velocity + lr * g; param -= velocity`` (Keras' SGD too). The two agree while the rate is constant
and differ once a policy changes it: PyTorch's velocity carries past gradients at the new rate,
Caffe's at the rates they were taken with. Learning-rate policies are Caffe's: ``fixed``;
``step`` (lr * gamma ^ floor(it / stepsize)); ``multistep`` (gamma ^ number of ``stepvalues``
passed); ``exp`` (lr * gamma ^ it); ``inv`` (lr * (1 + gamma * it) ^ -power); ``poly``
(lr * (1 - it / max_iter) ^ power). ``iteration`` is a device-resident counter, so the rate needs no
host round trip.

``step_counter(iteration)`` adds one to the counter at the end of a step.
"""
from __future__ import annotations

import math

import numpy as np

from ..ir import spec_error
from .registry import Attr, OpDef, OpPattern, choice, floats, nonnegative, register, to_float, to_int

POLICIES = ("fixed", "step", "multistep", "exp", "inv", "poly")
CONVENTIONS = ("pytorch", "caffe")


def learning_rate(attrs, it: float) -> float:
    """The policy's rate at iteration ``it`` (before ``lr_mult``)."""
    lr, policy, gamma = attrs["lr"], attrs["policy"], attrs["gamma"]
    if policy == "step":
        return lr * gamma ** math.floor(it / attrs["stepsize"])
    if policy == "multistep":
        return lr * gamma ** sum(it >= s for s in attrs["stepvalues"])
    if policy == "exp":
        return lr * gamma ** it
    if policy == "inv":
        return lr * (1 + gamma * it) ** -attrs["power"]
    if policy == "poly":
        return lr * max(0.0, 1 - it / attrs["max_iter"]) ** attrs["power"]
    return lr


def _sgd_infer(attrs, ins, node):
    param, grad, velocity, it = ins
    if grad.shape != param.shape or velocity.shape != param.shape:
        raise spec_error(node, f"sgd_update needs grad and velocity shaped like the parameter {param}, "
                               f"got {grad} and {velocity}")
    check_schedule(attrs, it, node)
    return []


def check_schedule(attrs, it, node) -> None:
    """The iteration counter ``it`` is a scalar and the rate policy's own attributes make sense
    (shared by every update op that reads :func:`learning_rate`)."""
    if it.shape != ():
        raise spec_error(node, f"the iteration counter must be a scalar, got {it}")
    if attrs["policy"] == "step" and attrs["stepsize"] < 1:
        raise spec_error(node, "the 'step' policy needs stepsize >= 1")
    if attrs["policy"] == "poly" and attrs["max_iter"] < 1:
        raise spec_error(node, "the 'poly' policy needs max_iter >= 1")


def _sgd(attrs, inputs, outputs):
    param, grad, velocity, it = inputs
    lr = param.dtype.type(learning_rate(attrs, float(it)) * attrs["lr_mult"])
    decay = attrs["weight_decay"] * attrs["decay_mult"]
    g = grad + param.dtype.type(decay) * param if decay else grad
    velocity *= param.dtype.type(attrs["momentum"])
    if attrs["convention"] == "caffe":
        velocity += lr * g
        param -= velocity
    else:
        velocity += g
        param -= lr * velocity


def _sgd_cost(attrs, ins, outs, batch):
    n = int(np.prod(ins[0].shape))
    return 5 * n, 4 * ins[0].nbytes(batch)


SGD_UPDATE = register(OpDef(
    name="sgd_update", family="optim", arity=(4, 4),
    attrs={"lr": Attr(nonnegative(to_float)), "momentum": Attr(nonnegative(to_float), 0.0),
           "weight_decay": Attr(nonnegative(to_float), 0.0), "lr_mult": Attr(to_float, 1.0),
           "decay_mult": Attr(to_float, 1.0), "policy": Attr(choice(*POLICIES), "fixed"),
           "gamma": Attr(to_float, 0.1), "power": Attr(to_float, 1.0), "stepsize": Attr(to_int, 0),
           "stepvalues": Attr(floats, ()), "max_iter": Attr(to_int, 0),
           "convention": Attr(choice(*CONVENTIONS), "pytorch")},
    infer=_sgd_infer, forward=_sgd, cost=_sgd_cost, pattern=OpPattern.OPAQUE,
    outputs=lambda attrs: 0, writes=(0, 2), doc=__doc__))


def _counter_infer(attrs, ins, node):
    if ins[0].shape != ():
        raise spec_error(node, f"step_counter takes a scalar counter, got {ins[0]}")
    return []


def _count(attrs, inputs, outputs):
    inputs[0] += 1


STEP_COUNTER = register(OpDef(
    name="step_counter", family="optim", arity=(1, 1), attrs={}, infer=_counter_infer,
    forward=_count, pattern=OpPattern.OPAQUE, outputs=lambda attrs: 0, writes=(0,), doc=__doc__))
