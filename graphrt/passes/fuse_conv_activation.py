"""fuse_conv_activation: absorb the activation (relu with any slope, tanh, sigmoid, and the
activations of :mod:`graphrt.ops.activation` such as clip (ReLU6), hard_swish, gelu) that alone reads
a convolution's or dense layer's output into that layer's epilogue, so bias and activation are
applied while the GEMM result is still in cache.

    conv(W, b) -> relu    ==>    conv(W, b, activation="relu")

The fused node keeps the layer's name, takes over the activation's output tensor and lists the
activation in ``absorbed``.
"""
from __future__ import annotations

from ..ir import Graph
from ..ops.elementwise import ACTIVATIONS
from .pipeline import each_node, register_pass

FUSABLE = set(ACTIVATIONS) - {"none"}


def _fusable_producer(g: Graph, node):
    """The convolution or dense layer whose epilogue can take activation ``node``, or None."""
    if node.op not in FUSABLE:
        return None
    prod = g.producer(node.inputs[0])
    if (prod is None or prod.op not in ("conv2d", "dense") or prod.attrs["activation"] != "none"
            or g.single_consumer(prod.outputs[0]) is None):
        return None
    return prod


@register_pass("fuse_conv_activation", opt_level=2)
def fuse_conv_activation(graph: Graph) -> Graph:
    if not any(_fusable_producer(graph, n) is not None for n in graph.nodes):
        return graph  # nothing to rewrite: no copy (passes are pure either way)
    g = graph.copy()
    for node in each_node(g):
        prod = _fusable_producer(g, node)
        if prod is None:
            continue
        params = () if node.op in ("relu", "tanh", "sigmoid") else tuple(sorted(node.attrs.items()))
        attrs = dict(prod.attrs, activation=node.op, activation_params=params,
                     negative_slope=node.attrs.get("negative_slope", 0.0))
        fused = prod.replace(attrs=attrs, outputs=node.outputs,
                             absorbed=prod.absorbed + (node.source.layer or node.name,) + node.absorbed)
        g.splice([prod.name, node.name], [fused])
    return g
