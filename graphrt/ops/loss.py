"""Training-side ops over (N, C) scores and (N,) class labels, each giving a scalar.

- ``softmax_cross_entropy``: mean over the batch of -log softmax(logits)[label] (Caffe
  SoftmaxWithLoss with the default VALID normalization, PyTorch CrossEntropyLoss).
- ``nll_loss``: mean of -logprobs[label] (Torch ClassNLLCriterion after LogSoftMax).
- ``accuracy``: fraction of rows whose label is among the ``top_k`` highest scores (Caffe Accuracy).

Labels may be integer or integral floating point (Caffe's label blobs are float); a label outside
[0, C) raises InputError.
"""
from __future__ import annotations

import numpy as np

from ..ir.errors import InputError
from ..ir import TensorSpec, spec_error
from .registry import Attr, OpDef, OpPattern, float_dtype, positive, register, to_int


def _infer(attrs, ins, node):
    scores, labels = ins
    dtype = float_dtype(scores, node, "scores")
    if len(scores.shape) != 2:
        raise spec_error(node, f"{node.op if node else 'loss'} expects (N, C) scores, got {scores}")
    if len(labels.shape) != 1 or (None not in (labels.shape[0], scores.shape[0])
                                  and labels.shape[0] != scores.shape[0]):
        raise spec_error(node, f"labels must have shape ({scores.shape[0] or 'N'},), got {labels}")
    return [TensorSpec((), dtype)]


def class_labels(labels: np.ndarray, classes: int) -> np.ndarray:
    idx = labels.astype(np.int64)
    if labels.dtype.kind == "f" and not np.array_equal(idx, labels):
        raise InputError("labels must be whole numbers")
    if idx.size and (idx.min() < 0 or idx.max() >= classes):
        raise InputError(f"labels must lie in [0, {classes}), got values from {idx.min()} to {idx.max()}")
    return idx


def log_softmax_rows(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _xent(attrs, inputs, outputs):
    x, labels = inputs
    idx = class_labels(labels, x.shape[1])
    outputs[0][...] = -log_softmax_rows(x.astype(np.float64))[np.arange(len(idx)), idx].mean()


def _nll(attrs, inputs, outputs):
    x, labels = inputs
    idx = class_labels(labels, x.shape[1])
    outputs[0][...] = -x[np.arange(len(idx)), idx].astype(np.float64).mean()


def _accuracy(attrs, inputs, outputs):
    x, labels = inputs
    idx = class_labels(labels, x.shape[1])
    k = min(attrs["top_k"], x.shape[1])
    # a row is right when fewer than k classes score strictly higher than its label (Caffe's rule)
    higher = (x > x[np.arange(len(idx)), idx][:, None]).sum(axis=1)
    outputs[0][...] = (higher < k).mean() if len(idx) else 0.0


def _cost(attrs, ins, outs, batch):
    return 4 * int(np.prod(ins[0].concrete(batch))), ins[0].nbytes(batch) + ins[1].nbytes(batch)


def _xent_backward(ctx, node, dys):
    """dlogits = (softmax(logits) - onehot(labels)) / N * dloss; labels get none."""
    if not ctx.wants(0):
        return [None, None]
    return [ctx.add("softmax_cross_entropy_grad", [*node.inputs, dys[0]]), None]


def _nll_backward(ctx, node, dys):
    """dlogprobs = -onehot(labels) / N * dloss; labels get none."""
    if not ctx.wants(0):
        return [None, None]
    classes = ctx.spec(node.inputs[0]).shape[1]
    return [ctx.add("nll_loss_grad", [node.inputs[1], dys[0]], {"classes": classes}), None]


def _no_gradient(ctx, node, dys):
    """accuracy is piecewise constant: no gradient flows through it."""
    return [None] * len(node.inputs)


def _check_labels(attrs, in_specs, i, value) -> None:
    """Labels fed by the user are checked before the step (see ``OpDef.check_feed``)."""
    if i == 1:
        class_labels(np.asarray(value), in_specs[0].shape[1])


def _loss(name, forward, backward, attrs=None):
    return register(OpDef(name=name, family="loss", arity=(2, 2), attrs=attrs or {},
                          infer=_infer, forward=forward, cost=_cost, pattern=OpPattern.OPAQUE,
                          backward=backward, check_feed=_check_labels, doc=__doc__))


SOFTMAX_CROSS_ENTROPY = _loss("softmax_cross_entropy", _xent, _xent_backward)
NLL_LOSS = _loss("nll_loss", _nll, _nll_backward)
ACCURACY = _loss("accuracy", _accuracy, _no_gradient, {"top_k": Attr(positive(to_int), 1)})
