"""``graphrt.export_onnx``: graphs as loaded and as optimized (fused nodes expanded back to standard
ops) written as ONNX models that onnxruntime runs with graphrt's outputs, and read back by graphrt."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import graphrt  # noqa: E402
from graphrt import Graph  # noqa: E402
from graphrt.ir.errors import UnsupportedError  # noqa: E402
from graphrt.frontends.onnx import load_onnx  # noqa: E402
from graphrt.testing import inception_graphs, relative_error, sequential_graphs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def feeds_for(graph: Graph, batch: int = 2, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {t: rng.standard_normal(graph.specs[t].concrete(batch)).astype(graph.specs[t].dtype)
            for t in graph.inputs}


def ort_outputs(graph: Graph, feeds: dict) -> list:
    model = graphrt.export_onnx(graph)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def assert_roundtrip(graph: Graph, batch: int = 2, levels=(0, 3), rtol=1e-5):
    """graphrt's reference output equals onnxruntime's on the exported graph, for the graph as
    given and as optimized at each level."""
    feeds = feeds_for(graph, batch)
    ref = graphrt.run_reference(graph, feeds)
    ref = list(ref.values()) if isinstance(ref, dict) else [ref]
    for level in levels:
        source = graph if level == 0 else graphrt.compile(graph, batch_size=batch, opt_level=level).graph
        for got, want in zip(ort_outputs(source, feeds), ref):
            err = relative_error(got, want)
            assert err < rtol, f"opt_level {level}: relative error {err:.3g}"


def _seed(name):
    sys.path.insert(0, str(ROOT / "examples"))
    from seed_models import seed_models  # noqa: PLC0415

    models = {m.name: m for m in seed_models()}
    if name not in models:
        pytest.skip(f"{name} needs ../shared")
    return models[name].build()


SEED_FAST = {"keras_simple_ann", "caffe_lenet", "torch_lenet", "caffe_cifar10_quick", "torch_inception_bn"}


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=[] if n in SEED_FAST else [pytest.mark.slow]) for n in (
        "keras_simple_ann", "keras_simple_cnn", "caffe_lenet", "caffe_cifar10_quick", "caffe_alexnet",
        "caffe_googlenet", "mxnet_alexnet", "torch_lenet", "torch_inception_bn")])
def test_seed_models_roundtrip_through_onnxruntime(name):
    assert_roundtrip(_seed(name))


def test_optimized_graph_has_fused_nodes_and_still_exports():
    graph = _seed("torch_inception_bn")
    optimized = graphrt.compile(graph, batch_size=2, opt_level=3).graph
    ops = {n.op for n in optimized.nodes}
    assert {"conv2d_split", "copy_to_device", "copy_to_host"} <= ops
    assert any(n.op == "conv2d" and n.attrs["activation"] != "none" for n in optimized.nodes)
    model = graphrt.export_onnx(optimized)
    assert {n.op_type for n in model.graph.node} >= {"Split", "Conv", "Relu", "Concat"}


def test_export_writes_a_file_that_graphrt_loads_back(tmp_path):
    graph = _seed("torch_lenet")
    path = tmp_path / "lenet.onnx"
    graphrt.export_onnx(graph, path)
    back = graphrt.load(path)
    assert back.specs[back.inputs[0]].shape == graph.specs[graph.inputs[0]].shape
    feeds = feeds_for(graph, 3)
    assert relative_error(graphrt.run_reference(back, feeds), graphrt.run_reference(graph, feeds)) < 1e-6
    assert set(graph.params) <= {i.name for i in onnx.load(str(path)).graph.initializer}


def _tiny(build) -> Graph:
    g = Graph("tiny")
    x = g.add_input("x", (None, 4, 6, 6))
    g.set_outputs([build(g, x)])
    return g.verify()


def _p(g, name, shape, seed=0):
    return g.add_param(name, np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


OP_CASES = {
    "chain": lambda g, x: g.add_node("elementwise_chain", [x], attrs={"steps": (
        ("scale", {"scale": 0.5, "shift": 2.0, "power": 2.0}), ("tanh", {}),
        ("relu", {"negative_slope": 0.1}), ("sigmoid", {}), ("dropout", {"rate": 0.5}))}),
    "conv_epilogue": lambda g, x: g.add_node("conv2d", [x, _p(g, "w", (6, 2, 3, 3)), _p(g, "b", (6,))],
                                             attrs={"groups": 2, "pads": (1, 0, 2, 1), "stride": 2,
                                                    "dilation": (1, 2), "activation": "relu",
                                                    "negative_slope": 0.2}),
    "affine_bn": lambda g, x: g.add_node("batch_norm", [g.add_node("channel_affine", [
        x, _p(g, "s", (4,)), _p(g, "t", (4,))]), _p(g, "m", (4,)), g.add_param(
            "v", np.full(4, 2.0, np.float32))], attrs={"eps": 1e-3}),
    "add_coeffs_mul": lambda g, x: g.add_node("mul", [g.add_node("add", [x, g.add_node("relu", [x])],
                                                                 attrs={"coeffs": (0.5, -2.0)}), x]),
    "broadcast_add": lambda g, x: g.add_node("add", [x, _p(g, "c", (1, 6, 1))]),
    "pads": lambda g, x: g.add_node("pad", [g.add_node("zero_pad", [x], attrs={"pads": (1, -2, 0, 3)})],
                                    attrs={"pads": (0, 1, 0, 0, 0, 0, 2, -1), "value": 1.5}),
    "pools": lambda g, x: g.add_node("avg_pool", [g.add_node("max_pool", [x], attrs={
        "kernel": 3, "stride": 2, "pads": 1, "ceil_mode": True})], attrs={
        "kernel": 2, "count_include_pad": False, "pads": (1, 0, 1, 0)}),
    "global_lrn": lambda g, x: g.add_node("max_pool", [g.add_node("lrn", [x], attrs={"size": 3})],
                                          attrs={"global_pool": True}),
    "shapes": lambda g, x: g.add_node("log_softmax", [g.add_node("flatten", [g.add_node(
        "transpose", [g.add_node("reshape", [x], attrs={"shape": (4, 36)})], attrs={"perm": (0, 2, 1)})],
        attrs={"axis": 2})], attrs={"axis": 1}),
    "matmul_dense": lambda g, x: g.add_node("softmax", [g.add_node("dense", [g.add_node("flatten", [
        g.add_node("matmul", [x, _p(g, "k", (6, 5))])]), _p(g, "d", (3, 120))], attrs={
        "activation": "tanh"})]),
}


@pytest.mark.parametrize("case", sorted(OP_CASES))
def test_every_op_form_exports(case):
    assert_roundtrip(_tiny(OP_CASES[case]), levels=(0, 2, 3))


@settings(max_examples=15)
@given(sequential_graphs(max_nodes=7))
def test_random_sequential_graphs_roundtrip(graph):
    assert_roundtrip(graph, levels=(0, 3), rtol=1e-4)


@settings(max_examples=10)
@given(inception_graphs(max_blocks=2))
def test_random_inception_graphs_roundtrip(graph):
    assert_roundtrip(graph, levels=(0, 3), rtol=1e-4)


def test_exported_graph_loads_back_with_a_symbolic_batch():
    graph = _tiny(OP_CASES["conv_epilogue"])
    back = load_onnx(graphrt.export_onnx(graphrt.compile(graph, opt_level=3).graph))
    assert back.specs[back.inputs[0]].shape == (None, 4, 6, 6)


def test_training_ops_do_not_export_and_name_the_node():
    g = Graph("loss")
    x, y = g.add_input("x", (None, 5)), g.add_input("labels", (None,), "int64")
    g.set_outputs([g.add_node("softmax_cross_entropy", [x, y], name="the_loss")])
    with pytest.raises(UnsupportedError, match="softmax_cross_entropy") as err:
        graphrt.export_onnx(g)
    assert err.value.node == "the_loss"
