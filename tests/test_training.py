"""Training: two steps of each seed model equal the same steps of its PyTorch translation
(``bench/torch_reference.py``'s ``to_torch``, float64, relative error < 1e-9: a check of graphrt's
backward and update against autograd on every seed architecture; the checks against implementations
independent of graphrt's graph are in ``test_training_rules.py``); the CIFAR-10 quick copy counts;
partial batches are trained on; saving and loading keep the trained weights."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import graphrt
from graphrt.testing import relative_error

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "examples"))  # first: bench/ has a seed_models.py of its own
from seed_models import seed_models  # noqa: E402
from test_training_rules import filled  # noqa: E402

SOLVER = dict(lr=0.01, momentum=0.9, weight_decay=5e-4)
HEAVY = {"caffe_alexnet", "caffe_googlenet", "mxnet_alexnet", "torch_inception_bn", "keras_simple_cnn"}


def pytorch_convention(graph: graphrt.Graph) -> graphrt.Graph:
    """Dropout off and batch norm under PyTorch's running-average convention."""
    g = graph.copy()
    for node in g.nodes:
        if node.op == "dropout":
            g.replace_node(node.name, node.replace(attrs=dict(node.attrs, rate=0.0)))
        elif node.op == "batch_norm":
            g.replace_node(node.name, node.replace(attrs=dict(node.attrs, momentum=0.1, unbiased=True,
                                                              caffe_fraction=0.0)))
    return g


def torch_step(graph, x, y, steps):
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F
    from torch_reference import to_torch

    torch.manual_seed(0)
    module = to_torch(graph).double()
    module.train()
    groups = []
    for name, attr in module.param_names.items():
        p = getattr(module, attr)
        info = graph.param_info[name]
        if p.requires_grad:
            groups.append({"params": [p], "lr": SOLVER["lr"] * info.lr_mult,
                           "weight_decay": SOLVER["weight_decay"] * info.decay_mult})
    opt = torch.optim.SGD(groups, lr=SOLVER["lr"], momentum=SOLVER["momentum"])
    out_name = graph.outputs[0]
    last = graph.producer(out_name)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        values = module(torch.from_numpy(x.astype(np.float64)), return_all=True)
        target = torch.from_numpy(y)
        if last.op == "log_softmax":
            loss = F.nll_loss(values[out_name], target)
        elif last.op == "softmax":
            loss = F.cross_entropy(values[last.inputs[0]], target)
        else:
            loss = F.cross_entropy(values[out_name], target)
        loss.backward()
        opt.step()
        losses.append(float(loss))
    params = {name: getattr(module, attr).detach().numpy() for name, attr in module.param_names.items()}
    return losses, params


@pytest.mark.parametrize("name", [m.name for m in seed_models()])
def test_training_steps_equal_pytorch(name):
    pytest.importorskip("torch")
    model = next(iter(seed_models([name])))
    graph = pytorch_convention(model.build())
    if name in HEAVY and not hasattr(sys, "_graphrt_heavy"):
        batch = 2
    else:
        batch = 4
    # float64 on both sides, so the comparison measures the algorithm, not rounding
    for p in graph.params:
        graph.params[p] = graph.params[p].astype(np.float64)
        graph.specs[p] = graphrt.TensorSpec(graph.specs[p].shape, "float64")
    for t in graph.inputs:
        graph.specs[t] = graphrt.TensorSpec(graph.specs[t].shape, "float64")
    graph = filled(_retyped(graph))  # CIFAR-10 quick's and AlexNet's deploy files load zeros
    rng = np.random.default_rng(0)
    spec = graph.specs[graph.inputs[0]]
    x = rng.standard_normal(spec.concrete(batch))
    classes = graph.specs[graph.outputs[0]].shape[1]
    y = rng.integers(0, classes, batch)
    torch_losses, torch_params = torch_step(graph, x, y, steps=2)
    trainer = graphrt.Trainer(graph, optimizer=graphrt.optim.SGD(**SOLVER), batch_size=batch)
    losses = [trainer.step(x, y) for _ in range(2)]
    np.testing.assert_allclose(losses, torch_losses, rtol=1e-9)
    ours = trainer.parameters()
    for p, value in torch_params.items():
        err = relative_error(ours[p], value)
        assert err < 1e-9, f"{p}: relative error {err:.3g}"


def _retyped(graph):
    """Re-infer every spec after switching parameters and inputs to float64."""
    from graphrt.frontends.npz import graph_from_json, graph_to_json

    doc = graph_to_json(graph)
    return graph_from_json(doc, graph.params)


def digits_batches(x, y, size):
    for start in range(0, len(x), size):
        yield x[start:start + size], y[start:start + size]


def test_cifar10_quick_ten_iterations_ten_copies(shared):
    graph = graphrt.load(shared / "models/caffe/cifar10_quick_train_test.prototxt", phase="TRAIN",
                         input_shape=(3, 32, 32))
    rng = np.random.default_rng(0)
    data = [(rng.standard_normal((100, 3, 32, 32)).astype(np.float32), rng.integers(0, 10, 100))
            for _ in range(10)]
    trainer = graphrt.Trainer(graph, optimizer=graphrt.optim.SGD(lr=0.001, momentum=0.9),
                              batch_size=100)
    trainer.exe.ledger.reset()
    history = trainer.fit(data, epochs=1, loss_every=10, progress=False)
    s = trainer.exe.ledger.summary()
    assert s["HtoD"]["invocations"] == 10  # data and labels travel together, once per batch
    assert s["DtoH"]["invocations"] == 1 and len(history) == 1  # only the loss, when asked for
    assert np.isfinite(history[0][1])


def test_fit_progress_counts_against_the_total_and_stays_off_log_files(capsys, monkeypatch):
    tqdm = pytest.importorskip("tqdm")
    model = next(iter(seed_models(["keras_simple_ann"])))
    trainer = graphrt.Trainer(model.build(), optimizer=graphrt.optim.SGD(lr=0.1), batch_size=16)
    rng = np.random.default_rng(1)
    data = list(digits_batches(rng.standard_normal((40, 20)).astype(np.float32), rng.integers(0, 10, 40), 16))
    trainer.fit(data, epochs=1)  # stderr is not a terminal here: no bar, no carriage returns
    assert "\r" not in capsys.readouterr().err
    bars = []
    real = tqdm.tqdm

    def recording(*args, **kwargs):
        bars.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(tqdm, "tqdm", recording)
    trainer.fit(data, epochs=2)
    assert [(b["desc"], b["total"], b["disable"]) for b in bars] == [("epoch 1/2", 3, None), ("epoch 2/2", 3, None)]
    trainer.fit(iter(data), epochs=1)  # a one-pass iterator has no length: no total
    assert bars[-1]["total"] is None


def test_last_partial_batch_is_trained_on():
    model = next(iter(seed_models(["keras_simple_ann"])))
    trainer = graphrt.Trainer(model.build(), optimizer=graphrt.optim.SGD(lr=0.1), batch_size=16)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((40, 20)).astype(np.float32)
    y = rng.integers(0, 10, 40)
    before = trainer.parameters()
    trainer.fit(list(digits_batches(x, y, 16)), epochs=1, progress=False)
    assert trainer.steps == 3  # 16 + 16 + 8
    after = trainer.parameters()
    assert any(not np.array_equal(before[p], after[p]) for p in before)


def test_training_reduces_the_loss_and_save_load_keeps_weights(tmp_path):
    model = next(iter(seed_models(["torch_lenet"])))
    graph = model.build()
    pytest.importorskip("sklearn")
    from graphrt.training.datasets import digits_28x28

    images, labels = digits_28x28()
    x, y = images[:64] * 255, labels[:64]  # bytes: the net's MulConstant scales them to [0, 1)
    trainer = graphrt.Trainer(graph, optimizer=graphrt.optim.SGD(lr=0.05, momentum=0.9), batch_size=64)
    first = trainer.step(x, y)
    for _ in range(20):
        last = trainer.step(x, y)
    assert last < 0.5 * first
    trainer.save(tmp_path / "lenet.npz")
    loaded = graphrt.load(tmp_path / "lenet.npz")
    expected = graphrt.run_reference(trainer.sync(), x)
    np.testing.assert_allclose(graphrt.run_reference(loaded, x), expected, rtol=1e-6)
    assert trainer.evaluate([(x, y)])["accuracy"] > 0.5


def test_lr_policies_follow_caffe():
    from graphrt.ops.optim import learning_rate

    base = {"lr": 0.01, "gamma": 1e-4, "power": 0.75, "stepsize": 10, "stepvalues": (5, 8),
            "max_iter": 100}
    assert learning_rate(dict(base, policy="fixed"), 50) == 0.01
    assert learning_rate(dict(base, policy="inv"), 100) == pytest.approx(0.01 * (1 + 1e-4 * 100) ** -0.75)
    assert learning_rate(dict(base, policy="step", gamma=0.1), 25) == pytest.approx(0.01 * 0.1 ** 2)
    assert learning_rate(dict(base, policy="multistep", gamma=0.1), 9) == pytest.approx(0.01 * 0.01)
    assert learning_rate(dict(base, policy="poly", power=1.0), 50) == pytest.approx(0.005)
