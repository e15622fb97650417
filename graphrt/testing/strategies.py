"""Hypothesis strategies that draw well-typed random graphs and their inputs.

``sequential_graphs`` (conv/pool/dense/batch-norm/activation chains with a classifier head),
``inception_graphs`` (concat of parallel branches), ``tensors`` and ``inputs_for``. Hypothesis is
imported when a strategy is built, not when this module is.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..ir import Graph

__all__ = ["tensors", "sequential_graphs", "inception_graphs", "inputs_for"]


def _st():
    from hypothesis import strategies as st  # hypothesis is only needed when strategies are used

    return st


def tensors(shape: Sequence[int], dtype="float32", *, extreme: bool = False):
    """Arrays of ``shape`` with finite values; ``extreme`` allows magnitudes up to 1e30."""
    from hypothesis.extra.numpy import arrays

    st = _st()
    width = 32 if np.dtype(dtype) == np.float32 else 64
    bound = float(np.float32(1e30)) if extreme else 10.0
    return arrays(dtype, tuple(shape), elements=st.floats(-bound, bound, allow_nan=False,
                                                          allow_infinity=False, width=width))


def _param(g: Graph, rng, name: str, shape, scale: float | None = None) -> str:
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    value = rng.standard_normal(shape) * (scale if scale is not None else 1 / np.sqrt(fan_in))
    return g.add_param(name, value.astype(np.float32))


def _conv(g, rng, x, out_ch, k, stride=1, pad=0, groups=1, bias=True):
    c = g.specs[x].shape[1]
    name = g.unique_name("conv")
    params = [_param(g, rng, f"{name}_weight", (out_ch, c // groups, k, k))]
    if bias:
        params.append(_param(g, rng, f"{name}_bias", (out_ch,), 0.1))
    return g.add_node("conv2d", [x] + params, name=name,
                      attrs={"stride": stride, "pads": pad, "groups": groups})


def _bn(g, rng, x):
    c = g.specs[x].shape[1]
    name = g.unique_name("bn")
    mean = _param(g, rng, f"{name}_mean", (c,), 0.1)
    var = g.add_param(f"{name}_var", (rng.random(c) + 0.5).astype(np.float32))
    gamma = g.add_param(f"{name}_gamma", (rng.random(c) + 0.5).astype(np.float32))
    beta = _param(g, rng, f"{name}_beta", (c,), 0.1)
    return g.add_node("batch_norm", [x, mean, var, gamma, beta], name=name, attrs={"eps": 1e-5})


LAYERS = ("conv", "conv_bn", "relu", "leaky_relu", "tanh", "sigmoid", "max_pool", "avg_pool",
          "lrn", "scale", "dropout", "zero_pad", "activation", "resize", "layer_norm", "prelu",
          "deconv", "crop")
# activations drawn for the "activation" layer (graphrt.ops.activation), with their attributes
ACTIVATIONS = (("clip", {"min": 0.0, "max": 6.0}), ("hard_swish", {}), ("gelu", {}),
               ("gelu", {"approximate": "tanh"}), ("swish", {}), ("elu", {"alpha": 0.5}),
               ("selu", {}), ("softplus", {}), ("softsign", {}), ("hard_sigmoid", {}),
               ("erf", {}), ("abs", {}))


def _apply_layer(g: Graph, rng, draw, x: str, kind: str) -> str:
    st = _st()
    c, h, w = g.specs[x].shape[1:]
    if kind in ("conv", "conv_bn"):
        k = draw(st.integers(1, min(3, h, w)))
        pad = draw(st.integers(0, k // 2))
        stride = draw(st.integers(1, 2))
        groups = draw(st.sampled_from([d for d in (1, 2) if c % d == 0]))
        y = _conv(g, rng, x, groups * draw(st.integers(1, 4)), k, stride, pad, groups)
        return _bn(g, rng, y) if kind == "conv_bn" else y
    if kind in ("relu", "tanh", "sigmoid"):
        return g.add_node(kind, [x])
    if kind == "activation":
        op, attrs = draw(st.sampled_from(ACTIVATIONS))
        return g.add_node(op, [x], attrs=attrs)
    if kind in ("resize", "layer_norm", "prelu", "deconv", "crop"):
        return _apply_more(g, rng, draw, x, kind)
    if kind == "leaky_relu":
        return g.add_node("relu", [x], attrs={"negative_slope": 0.1})
    if kind in ("max_pool", "avg_pool"):
        k = draw(st.integers(1, min(3, h, w)))
        attrs = {"kernel": k, "stride": draw(st.integers(1, 2)), "pads": draw(st.integers(0, k - 1)),
                 "ceil_mode": draw(st.booleans())}
        if kind == "avg_pool":
            attrs["count_include_pad"] = draw(st.booleans())
        return g.add_node(kind, [x], attrs=attrs)
    if kind == "lrn":
        return g.add_node("lrn", [x], attrs={"size": draw(st.sampled_from([1, 3, 5])),
                                              "alpha": 1e-2, "beta": 0.75, "k": 2.0})
    if kind == "scale":
        return g.add_node("scale", [x], attrs={"scale": draw(st.floats(0.25, 2.0)),
                                                "shift": draw(st.sampled_from([0.0, 0.5]))})
    if kind == "dropout":
        return g.add_node("dropout", [x], attrs={"rate": 0.5})
    return g.add_node("zero_pad", [x], attrs={"pads": tuple(draw(st.integers(0, 1)) for _ in range(4))})


def _apply_more(g: Graph, rng, draw, x: str, kind: str) -> str:
    """The layers of the ops added with issue 15: resize, layer_norm, prelu, conv2d_transpose,
    slice."""
    st = _st()
    c, h, w = g.specs[x].shape[1:]
    if kind == "resize":
        mode = draw(st.sampled_from(["nearest", "linear", "cubic"]))
        size = (draw(st.integers(max(1, h // 2), 2 * h)), draw(st.integers(max(1, w // 2), 2 * w)))
        return g.add_node("resize", [x], attrs={"sizes": size, "mode": mode})
    if kind == "layer_norm":
        axes = draw(st.sampled_from([(1,), (1, 2, 3), (2, 3)]))
        shape = tuple(g.specs[x].shape[a] for a in axes)
        return g.add_node("layer_norm", [x, _param(g, rng, g.unique_name("ln_scale"), shape, 1.0),
                                         _param(g, rng, g.unique_name("ln_bias"), shape, 0.1)],
                          attrs={"axes": axes})
    if kind == "prelu":
        slope = g.add_param(g.unique_name("slope"), rng.uniform(0, 0.5, (c, 1, 1)).astype(np.float32))
        return g.add_node("prelu", [x, slope])
    if kind == "deconv":
        k, s = draw(st.integers(1, 3)), draw(st.integers(1, 2))
        w_ = _param(g, rng, g.unique_name("deconv_weight"), (c, draw(st.integers(1, 3)), k, k))
        return g.add_node("conv2d_transpose", [x, w_], attrs={"stride": s, "pads": (k - 1) // 2})
    if h < 3 or w < 3:
        return x
    return g.add_node("slice", [x], attrs={"starts": (1, 1), "ends": (-1, -1), "axes": (2, 3)})


def _head(g: Graph, rng, draw, x: str, classes: int) -> str:
    st = _st()
    y = g.add_node("flatten", [x])
    if draw(st.booleans()):
        y = g.add_node("dropout", [y])
    features = g.specs[y].shape[1]
    name = g.unique_name("fc")
    w = _param(g, rng, f"{name}_weight", (classes, features))
    b = _param(g, rng, f"{name}_bias", (classes,), 0.1)
    y = g.add_node("dense", [y, w, b], name=name)
    if draw(st.booleans()):
        y = g.add_node("relu", [y])
    return g.add_node(draw(st.sampled_from(["softmax", "log_softmax"])), [y])


def sequential_graphs(max_nodes: int = 8, channels: tuple = (1, 6), spatial: tuple = (4, 12),
                      classes: int = 5, head: bool | None = None):
    """Random Sequential stacks (conv, bn, activations (also those of :data:`ACTIVATIONS`), pooling,
    LRN, scale, dropout, padding),
    optionally ending in flatten -> dense -> softmax. Every drawn graph passes ``verify()``."""
    st = _st()

    @st.composite
    def build(draw):
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        g = Graph("random_sequential")
        c = draw(st.integers(*channels))
        h = draw(st.integers(*spatial))
        x = g.add_input("x", (None, c, h, draw(st.integers(*spatial))))
        for _ in range(draw(st.integers(1, max(1, max_nodes - 3)))):
            x = _apply_layer(g, rng, draw, x, draw(st.sampled_from(LAYERS)))
        with_head = draw(st.booleans()) if head is None else head
        g.set_outputs([_head(g, rng, draw, x, classes) if with_head else x])
        return g.verify()

    return build()


def _branch(g, rng, draw, x, kind):
    st = _st()
    width = draw(st.integers(1, 4))
    if kind == "1x1":
        y = _conv(g, rng, x, width, 1)
    elif kind == "3x3":
        y = _conv(g, rng, _conv(g, rng, x, width, 1), width, 3, pad=1)
    elif kind == "3x3_direct":
        y = _conv(g, rng, x, width, 3, pad=1)
    else:
        pool = draw(st.sampled_from(["max_pool", "avg_pool"]))
        y = _conv(g, rng, g.add_node(pool, [x], attrs={"kernel": 3, "stride": 1, "pads": 1}), width, 1)
    if draw(st.booleans()):
        y = _bn(g, rng, y)
    return g.add_node("relu", [y])


def inception_graphs(max_blocks: int = 2, channels: tuple = (2, 6), spatial: tuple = (5, 10),
                     classes: int = 5):
    """Random inception-style graphs: a stem convolution, then blocks whose 1x1, 1x1->3x3, 3x3 and
    pool->1x1 branches read one tensor and are concatenated on the channels (sibling 1x1 or 3x3
    convolutions merge at opt level 3)."""
    st = _st()

    @st.composite
    def build(draw):
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        g = Graph("random_inception")
        s = draw(st.integers(*spatial))
        x = g.add_input("x", (None, draw(st.integers(*channels)), s, s))
        x = g.add_node("relu", [_conv(g, rng, x, draw(st.integers(2, 6)), 3, pad=1)])
        for _ in range(draw(st.integers(1, max_blocks))):
            kinds = draw(st.lists(st.sampled_from(["1x1", "3x3", "pool", "3x3_direct"]), min_size=1,
                                  max_size=4))
            branches = [_branch(g, rng, draw, x, k) for k in kinds]
            x = g.add_node("concat", branches, attrs={"axis": 1}) if len(branches) > 1 else branches[0]
        g.set_outputs([_head(g, rng, draw, x, classes) if draw(st.booleans()) else x])
        return g.verify()

    return build()


def inputs_for(graph: Graph, batch: int = 2, *, extreme: bool = False):
    """A strategy for a feed dict matching ``graph``'s inputs at ``batch``."""
    st = _st()
    parts = {}
    for name in graph.inputs:
        spec = graph.specs[name]
        if np.dtype(spec.dtype).kind == "f":
            parts[name] = tensors(spec.concrete(batch), spec.dtype, extreme=extreme)
        else:
            parts[name] = st.lists(st.integers(0, 1), min_size=batch, max_size=batch).map(
                lambda v, dt=spec.dtype: np.asarray(v, dt))
    return st.fixed_dictionaries(parts)
