"""Training-step memory on the cpu device: each parameter's update runs as soon as its gradient and
the parameter's last reader allow, so the gradient's arena range is free from there on (not at the
end of the backward); buffers live at the same step never share bytes; and the planned step of
LeNet and CIFAR-10 quick stays below PyTorch's own step peak (torch.profiler, measured here, as
bench/train_models.py does), at one and two threads."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

import graphrt
from test_train_kernels import small_training_graph

ROOT = Path(__file__).resolve().parents[1]


def _trainer(graph, batch, threads=1):
    return graphrt.Trainer(graph, optimizer=graphrt.optim.SGD(lr=0.01, momentum=0.9,
                                                              weight_decay=5e-4),
                           batch_size=batch, threads=threads, algorithms="default")


def _check_updates_run_early(trainer):
    graph, plan = trainer.exe.graph, trainer.exe.plan
    index = {name: i for i, name in enumerate(plan.steps)}
    updates = [graph.node(n) for n in plan.steps if graph.node(n).op == "sgd_update"]
    assert updates
    backward_left = False
    for node in updates:
        i = index[node.name]
        deps = [graph.producer(t).name for t in node.inputs if graph.producer(t) is not None]
        deps += list(node.after)
        j = max(index[d] for d in deps)
        between = [graph.node(plan.steps[k]) for k in range(j + 1, i)]
        # nothing but other updates between the update and the last thing it waits for
        assert all(n.op == "sgd_update" for n in between), (node.name, [n.name for n in between])
        # its gradient's buffer is dead after the update: nothing later reads it
        grad = node.inputs[1]
        block = plan.blocks[plan.views[grad].buffer]
        assert block.end <= i, (node.name, block)
        backward_left |= any("grad" in graph.node(s).op for s in plan.steps[i + 1:])
    assert backward_left, "every update ran after the whole backward"
    plan.check()


@pytest.mark.parametrize("threads", [1, 2])
def test_updates_run_as_soon_as_their_gradient_is_ready(threads):
    trainer = _trainer(small_training_graph(), 6, threads)
    _check_updates_run_early(trainer)


def _train_models():
    """bench/train_models.py loaded by path, sys.path left as it was (bench/ and examples/ both
    have a seed_models module)."""
    saved = list(sys.path)
    try:
        spec = importlib.util.spec_from_file_location("graphrt_bench_train_models",
                                                      ROOT / "bench" / "train_models.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path[:] = saved


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("model", ["torch_lenet", "caffe_cifar10_quick_train"])
def test_training_arena_is_below_pytorchs_step_peak(model, threads):
    pytest.importorskip("torch")
    tm = _train_models()
    build, batch, needs_shared = tm.MODELS[model]
    if needs_shared and not tm.SHARED.exists():
        pytest.skip("needs ../shared")
    graph = build()
    trainer = _trainer(graph, batch, threads)
    _check_updates_run_early(trainer)
    saved = list(sys.path)
    sys.path.insert(0, str(ROOT / "bench"))  # torch_reference
    try:
        module, opt, step = tm.torch_trainer(graph)
        pairs = tm.make_batches(graph, batch, 3)
        peak = tm.torch_step_peak(module, opt, step, pairs)["peak"]
    finally:
        sys.path[:] = saved
    ours = trainer.step(*pairs[0])
    assert np.isfinite(ours)
    assert trainer.exe.plan.arena_bytes <= peak, (trainer.exe.plan.arena_bytes, peak)
