"""graphrt.testing as a public API: strategies give valid graphs, assert_equivalent passes on equal
models, fails with a readable report on different ones, and every seed model and prototxt passes it
at every optimization level."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings

import graphrt
from graphrt.testing import (assert_equivalent, inception_graphs, inputs_for, relative_error,
                             sequential_graphs, tensors)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from seed_models import seed_models  # noqa: E402


@given(sequential_graphs(max_nodes=6))
def test_sequential_strategy_gives_verified_graphs(graph):
    graph.verify()
    assert graph.inputs and graph.outputs


@given(inception_graphs(max_blocks=2))
def test_inception_strategy_gives_verified_graphs(graph):
    graph.verify()
    assert any(n.op == "concat" for n in graph.nodes) or len(graph) > 0


@given(tensors((3, 4), extreme=True))
def test_tensors_are_finite(x):
    assert x.shape == (3, 4) and np.isfinite(x).all()


def test_inputs_for_matches_the_graph():
    graph = next(iter(seed_models(["torch_lenet"]))).build()
    from hypothesis import find

    feeds = find(inputs_for(graph, batch=2), lambda f: True)
    assert feeds["input"].shape == (2, 1, 28, 28) and feeds["input"].dtype == np.float32


def test_relative_error_is_max_normalized():
    assert relative_error(np.array([1.0, 2.0]), np.array([1.0, 4.0])) == pytest.approx(0.5)
    assert relative_error(np.zeros(3), np.zeros(3)) == 0.0


def test_two_different_models_fail_with_a_report():
    a = next(iter(seed_models(["keras_simple_ann"]))).build()
    b = a.copy()
    b.params = dict(b.params)
    name = next(p for p in b.params if p.endswith("kernel"))
    b.params[name] = b.params[name] * 1.5
    assert_equivalent(a, a.copy())
    with pytest.raises(AssertionError, match=r"relative error .* \(largest difference at index"):
        assert_equivalent(a, b)


def test_a_wrong_kernel_is_named(monkeypatch):
    """A bug in one device kernel (not in a pass) is located by running the program launch by launch."""
    from graphrt.devices.cpu import kernels as cpu_kernels

    graph = next(iter(seed_models(["torch_lenet"]))).build()
    original = cpu_kernels.KERNELS.get("max_pool")
    if original is None:
        pytest.skip("no dedicated max_pool kernel")

    def broken(attrs, inputs, outputs, ws):
        original(attrs, inputs, outputs, ws)
        outputs[0] *= 1.1

    monkeypatch.setitem(cpu_kernels.KERNELS, "max_pool", broken)
    with pytest.raises(AssertionError, match=r"first departing node: \S+ \[max_pool\]"):
        assert_equivalent(graph, opt_levels=(0,), devices=["cpu"])


def test_the_fixture_is_available(graphrt_equivalence):
    graphrt_equivalence(next(iter(seed_models(["keras_simple_ann"]))).build(), opt_levels=(0, 3))


@pytest.mark.parametrize("name", [m.name for m in seed_models()])
def test_seed_models_pass_at_every_level(name):
    graph = next(iter(seed_models([name]))).build()
    assert_equivalent(graph, opt_levels=(0, 1, 2, 3), devices=["cpu"], batch=1)


PROTOTXT_OPTIONS = {
    "lenet_train_test.prototxt": {"input_shape": (1, 28, 28)},
    "cifar10_quick_train_test.prototxt": {"input_shape": (3, 32, 32)},
    "digits_lenet.prototxt": {"input_shape": (1, 28, 28), "stage": ["deploy"], "classes": 10},
}


def test_every_prototxt_passes_at_every_level(shared):
    for path in sorted((shared / "models/caffe").glob("*.prototxt")):
        graph = graphrt.load(path, seed=1, **PROTOTXT_OPTIONS.get(path.name, {}))
        for p in graph.params:  # the deploy files' default fillers are zeros: use random weights
            graph.params[p] = (np.random.default_rng(0).standard_normal(graph.params[p].shape) * 0.05
                               ).astype(graph.params[p].dtype)
        assert_equivalent(graph, opt_levels=(0, 1, 2, 3), devices=["cpu"], batch=2)
