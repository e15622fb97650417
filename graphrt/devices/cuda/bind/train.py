"""Binders of the training step's ops: ``softmax_cross_entropy``, ``nll_loss`` and ``accuracy``
(``class_loss``, one block; an invalid label gives NaN, as a GPU kernel cannot raise), and the
optimizer: ``sgd_update`` with Caffe's lr policies read from the device-resident iteration counter,
and ``step_counter`` (``counter_inc``). Kernels in ``kernels/loss.cu`` and ``optim.cu``.
"""
from __future__ import annotations

import numpy as np

from ..calls import THREADS, Call, Unsupported, check_dtype, estrides, grid_1d


LABEL_KINDS = {"float32": 0, "float64": 1, "int8": 2, "int16": 3, "int32": 4, "int64": 5,
               "uint8": 6, "uint16": 7, "uint32": 8, "uint64": 9, "bool": 10}


def bind_loss(op):
    mode = {"softmax_cross_entropy": 0, "nll_loss": 1, "accuracy": 2}[op]

    def bind(attrs, inputs, outputs, ws):
        x, labels = inputs
        out = outputs[0]
        dtype = check_dtype(x, out)
        kind = LABEL_KINDS.get(np.dtype(labels.dtype).name)
        if kind is None:
            raise Unsupported(f"labels of dtype {labels.dtype}")
        n, c = x.shape
        return [Call("class_loss", dtype, (1, 1, 1), (256, 1, 1), (
            x, *estrides(x), labels, estrides(labels)[0] if labels.ndim else 0, kind, n, c, mode,
            attrs.get("top_k", 1), out))]
    return bind


POLICY_CODES = {"fixed": 0, "step": 1, "multistep": 2, "exp": 3, "inv": 4, "poly": 5}


def bind_sgd(attrs, inputs, outputs, ws):
    param, grad, vel, it = inputs
    dtype = check_dtype(param, grad, vel)
    if np.dtype(it.dtype) != np.float64 or it.size != 1:
        raise Unsupported("an iteration counter that is not one float64")
    for a in (param, grad, vel):
        if not a.flags.c_contiguous:
            raise Unsupported("a parameter, gradient or velocity that is not contiguous")
    sv = tuple(attrs["stepvalues"])
    if len(sv) > 8:
        raise Unsupported("more than 8 step values")
    n = int(param.size)
    return [Call("sgd_update", dtype, grid_1d(n), (THREADS, 1, 1), (
        param, grad, vel, it, n, attrs["lr"], attrs["momentum"],
        attrs["weight_decay"] * attrs["decay_mult"], attrs["lr_mult"],
        POLICY_CODES[attrs["policy"]], attrs["gamma"], attrs["power"], float(attrs["stepsize"]),
        float(attrs["max_iter"]), len(sv), *(sv + (0.0,) * (8 - len(sv))),
        int(attrs.get("convention", "pytorch") == "caffe")))]


def bind_counter(attrs, inputs, outputs, ws):
    it = inputs[0]
    if np.dtype(it.dtype) != np.float64 or it.size != 1:
        raise Unsupported("an iteration counter that is not one float64")
    return [Call("counter_inc", np.dtype(np.float32), (1, 1, 1), (1, 1, 1), (it,))]
