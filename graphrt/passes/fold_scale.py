"""fold_scale: fold a constant ``scale`` (y = a*x + s, power 1: Torch MulConstant, Caffe Power) into
the convolution or dense layer that alone reads it.

    scale(a, s) -> conv(W, b)    ==>    conv(a*W, b + s*sum(W))

exact because the layer is linear in its input; a shift is folded only where no zero padding would
see it (dense layers, convolutions without padding).
"""
from __future__ import annotations

import numpy as np

from ..ir import Graph
from .pipeline import add_derived_param, constant_param, each_node, register_pass


def _foldable(g: Graph, node):
    if node.op != "scale" or node.attrs["power"] != 1.0:
        return None
    user = g.single_consumer(node.outputs[0])
    if user is None or user.op not in ("conv2d", "dense") or user.inputs[0] != node.outputs[0]:
        return None
    if not all(constant_param(g, t) for t in user.inputs[1:]):
        return None
    if node.attrs["shift"] and user.op == "conv2d" and any(user.attrs["pads"]):
        return None
    if len(g.consumers(user.inputs[1])) != 1:  # weight shared with another layer
        return None
    return user


@register_pass("fold_scale", opt_level=2)
def fold_scale(graph: Graph) -> Graph:
    if not any(_foldable(graph, n) is not None for n in graph.nodes):
        return graph  # nothing to rewrite: no copy (passes are pure either way)
    g = graph.copy()
    for node in each_node(g, reverse=True):  # a chain of scales folds from the layer up
        user = _foldable(g, node)
        if user is None:
            continue
        a, s = node.attrs["scale"], node.attrs["shift"]
        w = g.params[user.inputs[1]]
        inputs = [node.inputs[0], user.inputs[1]] + list(user.inputs[2:])
        inputs[1] = add_derived_param(g, f"{user.name}_folded_weight", (w * np.float32(a)).astype(w.dtype),
                                      like=user.inputs[1])
        if s:
            shift = (s * w.reshape(w.shape[0], -1).sum(axis=1)).astype(w.dtype)
            if len(user.inputs) == 3:
                inputs[2] = add_derived_param(g, f"{user.name}_folded_bias",
                                              g.params[user.inputs[2]] + shift, like=user.inputs[2])
            else:
                inputs.append(add_derived_param(g, f"{user.name}_folded_bias", shift))
        g.splice([node.name, user.name], [user.replace(
            inputs=tuple(inputs), absorbed=(node.source.layer or node.name,) + user.absorbed)])
    g.prune_unused_params()
    return g
