"""merge_sibling_convs: convolutions that read the same tensor with the same geometry (kernel size,
stride, pads, dilation, no groups, same epilogue) — an inception module's 1x1 branches — become one
wider convolution, a ``conv2d_split`` whose outputs are the original tensors.

    x -> conv_a (64)  \\                x -> conv_a+conv_b: conv2d_split(sizes 64, 96) -> a, b
    x -> conv_b (96)  /      ==>

One GEMM with a larger N instead of several small ones. Each output stays a tensor of its own, so
the memory plan can still make ``a`` a slice of the concat that reads it (``alias_concat``); the
kernel's epilogue writes each output's channels straight to wherever the plan put them.
"""
from __future__ import annotations

import numpy as np

from ..ir import Graph
from .pipeline import add_derived_param, constant_param, register_pass


def _key(g: Graph, node: Node):
    if node.op != "conv2d" or node.attrs["groups"] != 1 or \
            not all(constant_param(g, t) for t in node.inputs[1:]):
        return None
    kh, kw = g.specs[node.inputs[1]].shape[2:]
    a = node.attrs
    return (node.inputs[0], kh, kw, a["stride"], a["pads"], a["dilation"], a["activation"],
            a["negative_slope"], a["activation_params"], len(node.inputs))


@register_pass("merge_sibling_convs", opt_level=3)
def merge_sibling_convs(graph: Graph) -> Graph:
    groups: dict[tuple, list[Node]] = {}
    for node in graph.nodes:
        key = _key(graph, node)
        if key is not None:
            groups.setdefault(key, []).append(node)
    groups = {k: members for k, members in groups.items() if len(members) > 1}
    if not groups:
        return graph  # nothing to rewrite: no copy (passes are pure either way)
    g = graph.copy()
    for members in groups.values():
        first = members[0]
        name = "+".join(m.name for m in members)
        params = [add_derived_param(g, f"{name}_weight",
                                    np.concatenate([g.params[m.inputs[1]] for m in members]),
                                    like=first.inputs[1])]
        if len(first.inputs) == 3:
            params.append(add_derived_param(g, f"{name}_bias",
                                            np.concatenate([g.params[m.inputs[2]] for m in members]),
                                            like=first.inputs[2]))
        sizes = tuple(g.params[m.inputs[1]].shape[0] for m in members)
        wide = first.replace(name=name, op="conv2d_split", inputs=(first.inputs[0], *params),
                             outputs=tuple(m.outputs[0] for m in members),
                             attrs={**first.attrs, "sizes": sizes},
                             absorbed=tuple(a for m in members
                                            for a in (m.source.layer or m.name,) + m.absorbed))
        g.splice([m.name for m in members], [wide])
    g.prune_unused_params()
    return g
