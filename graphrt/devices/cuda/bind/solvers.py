"""Binder of ``solver_update`` (Caffe's SGD, Nesterov and Adam; kernel in ``kernels/solvers.cu``):
one pass over a parameter, its gradient and its two history blobs, the rate read from the
device-resident iteration counter."""
from __future__ import annotations

import numpy as np

from ..calls import THREADS, Call, Unsupported, check_dtype, grid_1d
from .train import POLICY_CODES

KINDS = {"SGD": 0, "Nesterov": 1, "Adam": 2}


def bind_solver(attrs, inputs, outputs, ws):
    param, grad, h, v, it = inputs
    dtype = check_dtype(param, grad, h, v)
    if np.dtype(it.dtype) != np.float64 or it.size != 1:
        raise Unsupported("an iteration counter that is not one float64")
    if not all(a.flags.c_contiguous for a in (param, grad, h, v)):
        raise Unsupported("a parameter, gradient or history that is not contiguous")
    sv = tuple(attrs["stepvalues"])
    if len(sv) > 8:
        raise Unsupported("more than 8 step values")
    n = int(param.size)
    return [Call("solver_update", dtype, grid_1d(n), (THREADS, 1, 1), (
        param, grad, h, v, it, n, KINDS[attrs["type"]], attrs["lr"], attrs["momentum"],
        attrs["momentum2"], attrs["delta"], attrs["weight_decay"] * attrs["decay_mult"],
        int(attrs["regularization"] == "L1"), attrs["lr_mult"], POLICY_CODES[attrs["policy"]],
        attrs["gamma"], attrs["power"], float(attrs["stepsize"]), float(attrs["max_iter"]),
        len(sv), *(sv + (0.0,) * (8 - len(sv)))))]
