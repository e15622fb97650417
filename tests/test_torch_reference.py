"""bench/torch_reference.py: every graphrt graph run in PyTorch eager agrees with
graphrt.run_reference within 1e-4 relative error — an independent check of graphrt's numerics
(and of the benchmark's peer: it computes the same model).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import graphrt  # noqa: E402
from graphrt.testing import inception_graphs, relative_error, sequential_graphs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
for folder in ("bench", "examples"):
    if str(ROOT / folder) not in sys.path:
        sys.path.insert(0, str(ROOT / folder))

from seed_models import seed_models  # noqa: E402
from torch_reference import to_torch  # noqa: E402

RTOL = 1e-4


def run_torch(graph, x):
    module = to_torch(graph)
    with torch.no_grad():
        y = module(x)
    if isinstance(y, dict):
        return {k: v.numpy() for k, v in y.items()}
    return y.numpy()


def check(graph, x, rtol=RTOL):
    expected = graphrt.run_reference(graph, x)
    got = run_torch(graph, x)
    if not isinstance(expected, dict):
        expected, got = {graph.outputs[0]: expected}, {graph.outputs[0]: got}
    for name, ref in expected.items():
        assert got[name].shape == ref.shape, (name, got[name].shape, ref.shape)
        err = relative_error(got[name], ref)
        assert err < rtol, f"{graph.name}: output {name!r} relative error {err:.3g} >= {rtol}"


def random_input(graph, batch, seed=0):
    spec = graph.specs[graph.inputs[0]]
    return np.random.default_rng(seed).standard_normal(spec.concrete(batch)).astype(spec.dtype)


def seed_batch(graph) -> int:
    shape = graph.specs[graph.inputs[0]].shape
    return 1 if len(shape) == 4 and shape[-1] >= 200 else 2


def fill_zero_weights(graph, seed=0):
    """Prototxts without fillers or weights load all-zero kernels (a constant output that would
    compare equal whatever the ops did): give those random values scaled by the fan-in."""
    rng = np.random.default_rng(seed)
    for name, value in graph.params.items():
        if value.ndim >= 2 and not value.any():
            fan_in = int(np.prod(value.shape[1:]))
            value = rng.standard_normal(value.shape) / np.sqrt(fan_in)
            graph.params[name] = value.astype(graph.params[name].dtype)
    return graph


@pytest.mark.parametrize("model", seed_models(), ids=lambda m: m.name)
def test_seed_model_matches_reference(model):
    graph = fill_zero_weights(model.build())
    x = random_input(graph, seed_batch(graph))
    check(graph, x)
    assert np.ptp(graphrt.run_reference(graph, x)) > 0  # not a constant output


def _translatable(graph) -> bool:
    """Graphs to_torch can translate: the layers the model-coverage work added to the strategies
    (layer_norm, resize, prelu, conv2d_transpose) are compared with PyTorch in their op tests."""
    from torch_reference import SUPPORTED_OPS

    return all(n.op in SUPPORTED_OPS for n in graph.nodes)


@given(sequential_graphs(max_nodes=8).filter(_translatable), st.integers(0, 2**16))
@settings(max_examples=25)
def test_random_sequential_graphs(graph, seed):
    check(graph, random_input(graph, 2, seed))


@given(inception_graphs(max_blocks=2).filter(_translatable), st.integers(0, 2**16))
@settings(max_examples=15)
def test_random_inception_graphs(graph, seed):
    check(graph, random_input(graph, 2, seed))


def test_optimized_graph_with_fused_nodes_matches():
    """The optimized graph (fused epilogues, folded batch norm, elementwise chains, merged sibling
    convolutions) too."""
    from graphrt.passes import optimize

    model = next(m for m in seed_models() if m.name == "torch_inception_bn")
    graph = model.build()
    optimized = optimize(graph, 3)
    ops = {n.op for n in optimized.nodes}
    assert {"conv2d", "conv2d_split"} <= ops
    x = random_input(graph, 1)
    ref = graphrt.run_reference(graph, x)
    assert relative_error(run_torch(optimized, x), ref) < RTOL


# ---- single ops whose PyTorch spelling differs from graphrt's ------------------------------------
def one_op(op, shape, attrs, params=(), seed=0):
    rng = np.random.default_rng(seed)
    g = graphrt.Graph(op)
    x = g.add_input("x", (None,) + tuple(shape))
    names = [g.add_param(f"p{i}", rng.standard_normal(s).astype(np.float32))
             for i, s in enumerate(params)]
    g.set_outputs([g.add_node(op, [x] + names, attrs=attrs)])
    return g.verify()


@pytest.mark.parametrize("kind", ["max_pool", "avg_pool/include_pad", "avg_pool/exclude_pad"])
@pytest.mark.parametrize("pads", [(0, 0, 0, 0), (1, 1, 1, 1), (0, 1, 0, 1), (1, 0, 2, 0),
                                  (2, 2, 2, 2), (1, 2, 0, 1)])
@pytest.mark.parametrize("ceil_mode", [False, True])
def test_pooling_pads_and_ceil_mode(kind, pads, ceil_mode):
    """Symmetric small pads take PyTorch's own pooling; asymmetric or over-half-kernel pads the
    explicit F.pad path. Both must match graphrt's output size and divisor rules."""
    op, _, divisor = kind.partition("/")
    attrs = {"kernel": 3, "stride": 2, "pads": pads, "ceil_mode": ceil_mode}
    if divisor:
        attrs["count_include_pad"] = divisor == "include_pad"
    for shape in ((3, 7, 8), (2, 6, 5)):
        g = one_op(op, shape, attrs)
        check(g, random_input(g, 2))


@pytest.mark.parametrize("kind", ["max_pool", "avg_pool"])
def test_global_pooling(kind):
    g = one_op(kind, (4, 5, 6), {"global_pool": True})
    check(g, random_input(g, 2))


@pytest.mark.parametrize("pads", [(0, 1, 2, 0), (1, 1, 0, 0)])
@pytest.mark.parametrize("activation", ["none", "relu", "tanh", "sigmoid"])
def test_conv_asymmetric_pads_dilation_groups_epilogue(pads, activation):
    attrs = {"stride": (2, 1), "pads": pads, "dilation": (1, 2), "groups": 2,
             "activation": activation, "negative_slope": 0.1 if activation == "relu" else 0.0}
    g = one_op("conv2d", (4, 9, 10), attrs, params=[(6, 2, 3, 3), (6,)])
    check(g, random_input(g, 2))


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5])
def test_lrn_even_and_odd_sizes(size):
    g = one_op("lrn", (7, 4, 4), {"size": size, "alpha": 1e-2, "beta": 0.75, "k": 2.0})
    check(g, random_input(g, 2))


@pytest.mark.parametrize("pads", [(1, -1, 0, 2), (-2, -1, -1, -3), (-6, 4, 0, 0), (2, 2, -9, 10)])
def test_zero_pad_and_crop(pads):
    g = one_op("zero_pad", (2, 5, 6), {"pads": pads})
    check(g, random_input(g, 2))


@pytest.mark.parametrize("pads,value", [((0, 1, -1, 2, 0, 0, 2, -1), 0.0),
                                        ((0, -1, 4, 0, 0, 2, -7, 3), 1.5),
                                        ((0, 0, 0, 0, 0, 0, 0, 0), 0.0)])
def test_pad(pads, value):
    if "pad" not in graphrt.ops.registry.all_ops():
        pytest.skip("graphrt has no pad op")
    g = one_op("pad", (3, 5, 4), {"pads": pads, "value": value})
    check(g, random_input(g, 2))


def test_matmul():
    if "matmul" not in graphrt.ops.registry.all_ops():
        pytest.skip("graphrt has no matmul op")
    g = one_op("matmul", (3, 5), {}, params=[(5, 4)])
    check(g, random_input(g, 2))


def test_shape_and_elementwise_ops():
    rng = np.random.default_rng(1)
    g = graphrt.Graph("misc")
    x = g.add_input("x", (None, 6, 4, 5))
    s = g.add_param("s", (rng.random(6) + 0.5).astype(np.float32))
    b = g.add_param("b", rng.standard_normal(6).astype(np.float32))
    a = g.add_node("channel_affine", [x, s, b])
    parts = g.add_node("split", [a], attrs={"axis": 1, "sizes": (2, 4)})
    left = g.add_node("scale", [parts[0]], attrs={"scale": 0.5, "shift": 2.0, "power": 2.0})
    right = g.add_node("elementwise_chain", [parts[1]], attrs={"steps": (
        ("relu", {"negative_slope": 0.2}), ("scale", {"scale": 2.0}), ("sigmoid", {}))})
    right2 = g.add_node("transpose", [right], attrs={"perm": (0, 1, 3, 2)})
    right3 = g.add_node("transpose", [right2], attrs={"perm": (0, 1, 3, 2)})
    m = g.add_node("mul", [right3, right3])
    cat = g.add_node("concat", [left, m, right3], attrs={"axis": 1})
    summed = g.add_node("add", [cat, cat], attrs={"coeffs": (0.5, -2.0)})
    r = g.add_node("reshape", [summed], attrs={"shape": (10, -1)})
    f = g.add_node("flatten", [r])
    g.set_outputs([g.add_node("softmax", [f]), g.add_node("log_softmax", [r], attrs={"axis": 2})])
    g.verify()
    check(g, random_input(g, 3))


def test_parameters_are_registered_and_copied():
    model = next(m for m in seed_models() if m.name == "torch_lenet")
    graph = model.build()
    module = to_torch(graph)
    assert sum(p.numel() for p in module.parameters()) == graph.num_params()
    assert not module.training
    name, attr = next(iter(module.param_names.items()))
    with torch.no_grad():
        getattr(module, attr).add_(1.0)
    assert not np.array_equal(getattr(module, attr).detach().numpy(), graph.params[name])


def test_op_without_translation_is_refused(monkeypatch):
    import torch_reference

    monkeypatch.delitem(torch_reference.STATELESS, "tanh")
    g = one_op("tanh", (3,), {})
    with pytest.raises(graphrt.UnsupportedError, match="tanh"):
        to_torch(g)
