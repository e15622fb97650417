"""fold_batchnorm: fold an inference ``batch_norm`` (or a Caffe ``Scale``, i.e. ``channel_affine``)
into the convolution or dense layer whose output only it reads.

    conv(W, b) -> batch_norm(mean, var, gamma, beta)
        ==>  conv(W * k, (b - mean) * k + beta)    with k = gamma / sqrt(var + eps) per channel
    conv(W, b) -> channel_affine(s, t)  ==>  conv(W * s, b * s + t)

Caffe's BatchNorm + Scale pair folds in two steps. Parameters are new arrays (the source graph's
parameters are untouched); the folded node records what it absorbed.
"""
from __future__ import annotations

import numpy as np

from ..ir import Graph
from .pipeline import add_derived_param, constant_param, each_node, register_pass


def channel_factors(g: Graph, node) -> tuple[np.ndarray, np.ndarray] | None:
    """(k, t) with node(x) = x * k + t per channel, or None if its parameters are not constants."""
    if not all(constant_param(g, t) for t in node.inputs[1:]):
        return None
    p = [g.params[t].astype(np.float64) for t in node.inputs[1:]]
    if node.op == "batch_norm":
        gamma, beta = (p[2], p[3]) if len(p) == 4 else (1.0, 0.0)
        k = gamma / np.sqrt(p[1] + node.attrs["eps"])
        return k * np.ones_like(p[0]), beta - p[0] * k
    return p[0], (p[1] if len(p) == 2 else np.zeros_like(p[0]))


def _producer_layer(g: Graph, node):
    if node.op not in ("batch_norm", "channel_affine"):
        return None
    prod = g.producer(node.inputs[0])
    if (prod is None or prod.op not in ("conv2d", "dense") or prod.attrs["activation"] != "none"
            or g.single_consumer(prod.outputs[0]) is None
            or not all(constant_param(g, t) for t in prod.inputs[1:])
            or len(g.consumers(prod.inputs[1])) != 1):
        return None
    return prod


@register_pass("fold_batchnorm", opt_level=2)
def fold_batchnorm(graph: Graph) -> Graph:
    if not any(_producer_layer(graph, n) is not None for n in graph.nodes):
        return graph  # nothing to rewrite: no copy (passes are pure either way)
    g = graph.copy()
    for node in each_node(g):
        prod = _producer_layer(g, node)
        factors = channel_factors(g, node) if prod is not None else None
        if factors is None:
            continue
        k, t = factors
        w = g.params[prod.inputs[1]]
        bias = g.params[prod.inputs[2]].astype(np.float64) if len(prod.inputs) == 3 else 0.0
        wname = add_derived_param(g, f"{prod.name}_folded_weight",
                                  (w * k.reshape((-1,) + (1,) * (w.ndim - 1))).astype(w.dtype),
                                  like=prod.inputs[1])
        bname = add_derived_param(g, f"{prod.name}_folded_bias", (bias * k + t).astype(w.dtype),
                                  like=prod.inputs[2] if len(prod.inputs) == 3 else None)
        folded = prod.replace(inputs=(prod.inputs[0], wname, bname), outputs=node.outputs,
                              absorbed=prod.absorbed + (node.source.layer or node.name,) + node.absorbed)
        g.splice([prod.name, node.name], [folded])
    g.prune_unused_params()
    return g
