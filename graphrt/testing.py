"""Property-based correctness testing for graphrt graphs and users' own models.

Hypothesis strategies draw well-typed random graphs and inputs; :func:`assert_equivalent` checks that
a model computes the same thing through the reference executor and through every compiled
optimization level and device, and reports where it first departs::

    from hypothesis import given
    from graphrt.testing import sequential_graphs, assert_equivalent

    @given(sequential_graphs(max_nodes=6))
    def test_my_passes(graph):
        assert_equivalent(graph)

Relative error is DESIGN.md's: ``max|a - b| / max|b|`` over the whole tensor, in float64.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .graph import Graph
from .reference import random_feeds, run_reference

__all__ = ["tensors", "sequential_graphs", "inception_graphs", "inputs_for", "assert_equivalent",
           "relative_error"]


def relative_error(actual, expected) -> float:
    """``max|a - b| / max|b|`` in float64 (0 when both are all zeros)."""
    a, b = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    if a.shape != b.shape:
        return float("inf")
    scale = np.abs(b).max() if b.size else 0.0
    diff = np.abs(a - b).max() if b.size else 0.0
    if scale == 0:
        return float(diff)
    return float(diff / scale)


# ---- strategies ---------------------------------------------------------------------------------
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
          "lrn", "scale", "dropout", "zero_pad")


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
    """Random Sequential stacks (conv, bn, activations, pooling, LRN, scale, dropout, padding),
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
    else:
        pool = draw(st.sampled_from(["max_pool", "avg_pool"]))
        y = _conv(g, rng, g.add_node(pool, [x], attrs={"kernel": 3, "stride": 1, "pads": 1}), width, 1)
    if draw(st.booleans()):
        y = _bn(g, rng, y)
    return g.add_node("relu", [y])


def inception_graphs(max_blocks: int = 2, channels: tuple = (2, 6), spatial: tuple = (5, 10),
                     classes: int = 5):
    """Random inception-style graphs: a stem convolution, then blocks whose 1x1, 1x1->3x3 and
    pool->1x1 branches read one tensor and are concatenated on the channels."""
    st = _st()

    @st.composite
    def build(draw):
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        g = Graph("random_inception")
        s = draw(st.integers(*spatial))
        x = g.add_input("x", (None, draw(st.integers(*channels)), s, s))
        x = g.add_node("relu", [_conv(g, rng, x, draw(st.integers(2, 6)), 3, pad=1)])
        for _ in range(draw(st.integers(1, max_blocks))):
            kinds = draw(st.lists(st.sampled_from(["1x1", "3x3", "pool"]), min_size=1, max_size=4))
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


# ---- equivalence --------------------------------------------------------------------------------
def _as_dict(graph: Graph, result) -> dict:
    return result if isinstance(result, dict) else {graph.outputs[0]: result}


def _compare(expected: dict, actual: dict, rtol: float) -> tuple[str, float, tuple] | None:
    for name, ref in expected.items():
        got = actual[name]
        err = relative_error(got, ref)
        if not err < rtol:
            diff = np.abs(np.asarray(got, np.float64) - ref) if np.shape(got) == np.shape(ref) else None
            where = tuple(int(i) for i in np.unravel_index(np.argmax(diff), diff.shape)) if \
                diff is not None and diff.size else ()
            return name, err, where
    return None


def first_divergence(exe, source: Graph, feeds: dict, rtol: float) -> str | None:
    """Run ``exe``'s program launch by launch and name the first node whose output departs from
    the reference executor's tensor of the same name."""
    reference = run_reference(source, feeds, return_all=True)
    batch = next(iter(feeds.values())).shape[0] if feeds else 1
    program = exe.program(batch)
    for name, slot in program.inputs:
        exe.device.to_device(np.asarray(feeds[name], slot.dtype), slot)
    for launch in program.launches:
        launch.fn(launch.attrs, launch.inputs, launch.outputs, launch.workspace)
        node = exe.graph.node(launch.node)
        for t, out in zip(node.outputs, launch.outputs):
            if t in reference and not relative_error(_host(out), reference[t]) < rtol:
                absorbed = f" (absorbed {', '.join(node.absorbed)})" if node.absorbed else ""
                return f"{node.name} [{node.op}]{absorbed}: output {t!r} relative error " \
                       f"{relative_error(_host(out), reference[t]):.3g}"
    return None


def assert_equivalent(a, b=None, x=None, *, rtol: float = 1e-4, opt_levels: Sequence[int] = (0, 1, 2, 3),
                      devices: Sequence[str] | None = None, batch: int = 2) -> None:
    """Assert two models agree, or one model agrees with itself compiled at every level and device.

    ``a``/``b`` are Graphs or models with ``to_graph()``; ``x`` the inputs (random normal at ``batch``
    when omitted). Raises AssertionError with the first differing output, its relative error and the
    index of the largest difference, and — for a compiled executable — the first node of the
    optimized graph whose output departs from the reference.
    """
    from .scheduler.executable import as_graph, compile

    ga = as_graph(a)
    feeds = x if x is not None else random_feeds(ga, batch)
    if not isinstance(feeds, dict):
        feeds = {ga.inputs[0]: feeds}
    expected = _as_dict(ga, run_reference(ga, feeds))
    if b is not None:
        gb = as_graph(b)
        bad = _compare(expected, _as_dict(gb, run_reference(gb, feeds)), rtol)
        if bad:
            raise AssertionError(f"output {bad[0]!r} differs: relative error {bad[1]:.3g} (largest "
                                 f"difference at index {bad[2]}) > {rtol}")
        return
    n = next(iter(feeds.values())).shape[0] if ga.inputs and ga.specs[ga.inputs[0]].batched else 1
    for device in devices or available_devices():
        for level in opt_levels:
            exe = compile(ga, device=device, batch_size=n, opt_level=level)
            bad = _compare(expected, _as_dict(ga, exe(feeds)), rtol)
            if bad:
                culprit = first_divergence(exe, ga, feeds, rtol)
                raise AssertionError(
                    f"{ga.name}: device {device}, opt_level {level}: output {bad[0]!r} relative error "
                    f"{bad[1]:.3g} > {rtol} (largest difference at index {bad[2]})"
                    + (f"; first departing node: {culprit}" if culprit else ""))


def _host(a) -> np.ndarray:
    """A host copy of a device array (CuPy's ``get()``), or the numpy array itself."""
    return a if isinstance(a, np.ndarray) else np.asarray(a.get() if hasattr(a, "get") else a)


def available_devices() -> list[str]:
    """``["cpu"]`` plus ``"cuda"`` when a GPU is usable. The environment variable
    ``GRAPHRT_DEVICE=cuda`` demands the cuda device (a missing GPU then fails loudly instead of
    being skipped); ``GRAPHRT_DEVICE=cpu`` leaves it out."""
    import os

    from .devices.cuda import cuda_available

    wanted = os.environ.get("GRAPHRT_DEVICE", "").strip().lower()
    if wanted == "cuda":
        return ["cpu", "cuda"]
    if wanted == "cpu":
        return ["cpu"]
    return ["cpu"] + (["cuda"] if cuda_available() else [])
