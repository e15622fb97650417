"""Training against independent implementations written here from each framework's documented rules,
never a translation of graphrt's own graph, in float64 with relative errors below 1e-9:

- **the optimizer**: several steps of a Caffe net with momentum, weight decay, per-blob
  ``lr_mult``/``decay_mult`` and every learning-rate policy, against Caffe's SGDSolver
  (``convention="caffe"``: history = momentum * history + local_rate * (grad + local_decay * w);
  w -= history) and ``torch.optim.SGD`` (``convention="pytorch"``: buf = momentum * buf + grad +
  decay * w; w -= lr * buf) — the model's gradients from a numpy MLP written here, and for a small
  convolutional net from a PyTorch module written here, not from graphrt's graph;
- **the optimizer on the seed models** (all but Caffe AlexNet): several steps with momentum,
  weight decay, per-parameter multipliers and a rate policy, every trained parameter against the
  update rule of the model's framework (Caffe's SGDSolver; ``torch.optim.SGD``, which is Torch7's
  ``optim.sgd`` without dampening; Keras' SGD and MXNet's ``sgd_mom_update``: m = momentum * m -
  lr * (grad + decay * w); w += m) applied here to the gradients graphrt's step computed — the
  update is what is checked (the gradients are checked against PyTorch in ``test_training.py`` and
  op by op in the ``test_backward*`` files);
- **batch norm in training**: Caffe's BatchNorm (its blobs are sums scaled by a factor S:
  S = f S + 1, sum = f sum + batch statistic, the variance with Caffe's m / (m - 1) correction;
  inference reads sum / S) and Keras' BatchNormalization (moving = 0.99 moving + 0.01 batch, the
  biased variance, epsilon 1e-3), both normalizing with the batch's biased variance;
- **training-mode dropout**: the statistics of its masks (the kept fraction, the 1 / (1 - rate)
  scale, a new mask every step, the same one for the same seed) and, given the mask a step used,
  exact agreement of the whole step with a numpy implementation.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

import graphrt
from graphrt.frontends.caffe import load_caffe
from graphrt.frontends.npz import graph_from_json, graph_to_json
from graphrt.testing import relative_error
from graphrt.training.autodiff import training_graph
from graphrt.training.trainer import attach_loss

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from seed_models import seed_models  # noqa: E402  (examples/, not bench/seed_models.py)

TOL = 1e-9
STEPS = 8
MLP = """
name: "mlp"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 5 dim: 6 } } }
layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 5 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  inner_product_param { num_output: 8 weight_filler { type: "gaussian" std: 0.5 }
                        bias_filler { type: "gaussian" std: 0.1 } } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  param { lr_mult: 0.5 decay_mult: 2 } param { lr_mult: 1 decay_mult: 0 }
  inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""
SOLVERS = {  # Caffe solver.prototxt fields (base_lr, momentum, weight_decay, lr_policy and its own)
    "fixed": {},
    "step": {"gamma": 0.5, "stepsize": 3},
    "multistep": {"gamma": 0.3, "stepvalues": (2, 5)},
    "exp": {"gamma": 0.8},
    "inv": {"gamma": 0.5, "power": 0.75},
    "poly": {"power": 2.0, "max_iter": 10},
}


# ---- the documented rules ----------------------------------------------------------------------
def caffe_rate(base_lr: float, policy: str, it: int, p: dict) -> float:
    """SGDSolver::GetLearningRate at iteration ``it`` (0 for the first update)."""
    if policy == "fixed":
        return base_lr
    if policy == "step":
        return base_lr * p["gamma"] ** math.floor(it / p["stepsize"])
    if policy == "multistep":
        current = 0
        for k in range(it + 1):  # current_step_ advances once per iteration that reaches a value
            if current < len(p["stepvalues"]) and k >= p["stepvalues"][current]:
                current += 1
        return base_lr * p["gamma"] ** current
    if policy == "exp":
        return base_lr * p["gamma"] ** it
    if policy == "inv":
        return base_lr * (1 + p["gamma"] * it) ** (-p["power"])
    if policy == "poly":
        return base_lr * (1 - it / p["max_iter"]) ** p["power"]
    raise ValueError(policy)


def sgd_step(rule: str, params, grads, history, mults, rate: float, momentum: float, decay: float):
    """One update of every parameter, in place: Caffe's SGDSolver (Regularize, ComputeUpdateValue,
    Update), torch.optim.SGD with one parameter group per blob (lr and weight_decay scaled), or
    Keras' SGD / MXNet's sgd_mom_update (a velocity of the opposite sign, added to the weight; the
    weight decay as an L2 term of the gradient, MXNet's ``wd * wd_mult``)."""
    for name in params:
        lr_mult, decay_mult = mults[name]
        g = grads[name] + decay * decay_mult * params[name]
        if rule == "caffe":
            history[name] = momentum * history[name] + rate * lr_mult * g
            params[name] = params[name] - history[name]
        elif rule in ("keras", "mxnet"):
            history[name] = momentum * history[name] - rate * lr_mult * g
            params[name] = params[name] + history[name]
        else:
            history[name] = momentum * history[name] + g
            params[name] = params[name] - rate * lr_mult * history[name]


def mlp_loss_and_grads(p: dict, x: np.ndarray, y: np.ndarray):
    """The MLP prototxt by hand: InnerProduct, ReLU, InnerProduct, SoftmaxWithLoss (mean over the
    batch), and its gradients by the chain rule."""
    h = x @ p["ip1_weight"].T + p["ip1_bias"]
    a = np.maximum(h, 0)
    z = a @ p["ip2_weight"].T + p["ip2_bias"]
    z = z - z.max(axis=1, keepdims=True)
    prob = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    n = len(x)
    loss = -np.log(prob[np.arange(n), y]).mean()
    dz = prob.copy()
    dz[np.arange(n), y] -= 1
    dz /= n
    da = dz @ p["ip2_weight"]
    dh = da * (h > 0)
    return loss, {"ip2_weight": dz.T @ a, "ip2_bias": dz.sum(0), "ip1_weight": dh.T @ x,
                  "ip1_bias": dh.sum(0)}


# ---- helpers -------------------------------------------------------------------------------------
def float64(graph: graphrt.Graph) -> graphrt.Graph:
    """The graph with float64 parameters and float inputs (every spec re-inferred)."""
    g = graph.copy()
    for p in g.params:
        if np.issubdtype(g.params[p].dtype, np.floating):
            g.params[p] = g.params[p].astype(np.float64)
            g.specs[p] = graphrt.TensorSpec(g.specs[p].shape, "float64")
    for t in g.inputs:
        if g.specs[t].dtype.startswith("float"):
            g.specs[t] = graphrt.TensorSpec(g.specs[t].shape, "float64")
    return graph_from_json(graph_to_json(g), g.params)


def solver(convention: str, policy: str, lr: float = 0.1, decay: float = 1e-2) -> graphrt.optim.SGD:
    return graphrt.optim.SGD(lr=lr, momentum=0.9, weight_decay=decay, policy=policy,
                             convention=convention, **SOLVERS[policy])


def batches(shape, classes: int, steps: int = STEPS, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(shape), rng.integers(0, classes, shape[0])) for _ in range(steps)]


def run_reference(params, mults, data, loss_and_grads, convention, policy):
    """The documented loop: for each batch, gradients at the current weights, then one update."""
    params = {k: v.copy() for k, v in params.items()}
    history = {k: np.zeros_like(v) for k, v in params.items()}
    losses = []
    for it, (x, y) in enumerate(data):
        loss, grads = loss_and_grads(params, x, y)
        losses.append(loss)
        sgd_step(convention, params, grads, history, mults, caffe_rate(0.1, policy, it, SOLVERS[policy]),
                 0.9, 1e-2)
    return losses, params


def assert_same_run(trainer, data, losses, params, what: str):
    got = [trainer.step(x, y) for x, y in data]
    err = relative_error(np.array(got), np.array(losses))
    assert err < TOL, f"{what}: losses' relative error {err:.3g}"
    ours = trainer.parameters()
    for name, want in params.items():
        err = relative_error(ours[name], want)
        assert err < TOL, f"{what}: {name} relative error {err:.3g}"


# ---- the optimizer -------------------------------------------------------------------------------
@pytest.mark.parametrize("policy", sorted(SOLVERS))
@pytest.mark.parametrize("convention", ["caffe", "pytorch"])
def test_sgd_follows_the_documented_rule(convention, policy):
    graph = float64(load_caffe(text=MLP, phase="TRAIN"))
    mults = {p: (graph.param_info[p].lr_mult, graph.param_info[p].decay_mult) for p in graph.params}
    assert mults["ip1_bias"] == (2.0, 0.0) and mults["ip2_weight"] == (0.5, 2.0)
    data = batches((5, 6), 4)
    losses, params = run_reference(graph.params, mults, data, mlp_loss_and_grads, convention, policy)
    trainer = graphrt.Trainer(graph, optimizer=solver(convention, policy), batch_size=5)
    assert_same_run(trainer, data, losses, params, f"{convention} {policy}")
    if policy in ("step", "multistep"):  # a changing rate tells the two conventions apart
        other = "pytorch" if convention == "caffe" else "caffe"
        _, theirs = run_reference(graph.params, mults, data, mlp_loss_and_grads, other, policy)
        assert max(relative_error(params[p], theirs[p]) for p in params) > 1e-6


TINY_CONV = """
name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 4 dim: 2 dim: 7 dim: 7 } } }
layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 4 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.3 }
                      bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool1" top: "ip1"
  param { lr_mult: 0.5 decay_mult: 2 } param { lr_mult: 1 decay_mult: 0 }
  inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.2 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip1" bottom: "label" top: "loss" }
"""


@pytest.mark.parametrize("convention, policy", [("caffe", "step"), ("pytorch", "multistep")])
def test_conv_net_steps_equal_a_pytorch_module_written_from_the_prototxt(convention, policy):
    """Caffe's 7x7 -> 3x3 convolution (pad 1) -> ReLU -> 2x2 max pooling (Caffe rounds up: 4x4) ->
    InnerProduct, written as a PyTorch module here; its autograd gradients and the documented update
    rule against graphrt's training step on the prototxt."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    graph = float64(load_caffe(text=TINY_CONV, phase="TRAIN"))
    mults = {p: (graph.param_info[p].lr_mult, graph.param_info[p].decay_mult) for p in graph.params}

    def loss_and_grads(p, x, y):
        t = {k: torch.tensor(v, requires_grad=True) for k, v in p.items()}
        h = F.relu(F.conv2d(torch.tensor(x), t["conv1_weight"], t["conv1_bias"], padding=1))
        h = F.max_pool2d(h, 2, 2, ceil_mode=True)
        loss = F.cross_entropy(F.linear(h.flatten(1), t["ip1_weight"], t["ip1_bias"]), torch.tensor(y))
        loss.backward()
        return float(loss.detach()), {k: v.grad.numpy() for k, v in t.items()}

    data = batches((4, 2, 7, 7), 5)
    losses, params = run_reference(graph.params, mults, data, loss_and_grads, convention, policy)
    trainer = graphrt.Trainer(graph, optimizer=solver(convention, policy), batch_size=4)
    assert_same_run(trainer, data, losses, params, f"{convention} {policy}")


# ---- the optimizer on every seed model -----------------------------------------------------------
# seed model: (its framework's update rule, a rate policy, the batch). Caffe AlexNet is left out for
# time (its 61 M parameters in float64 make gigabytes of copies); MXNet AlexNet stands for it.
SEED_RUNS = {
    "caffe_lenet": ("caffe", "step", 2), "caffe_cifar10_quick": ("caffe", "multistep", 2),
    "caffe_googlenet": ("caffe", "poly", 1),
    "torch_lenet": ("torch", "inv", 2), "torch_inception_bn": ("torch", "step", 2),
    "keras_simple_ann": ("keras", "multistep", 4), "keras_simple_cnn": ("keras", "inv", 2),
    "mxnet_alexnet": ("mxnet", "step", 1),
}
MULTS = [(1.0, 1.0), (2.0, 0.0), (0.5, 2.0)]  # (lr_mult, decay_mult), given to parameters in turn
SEED_LR, SEED_DECAY = 0.01, 0.05  # a rate the deep nets survive; a decay far above the tolerance
SEED_STEPS = 4  # each policy's rate changes within them (SOLVERS)


def filled(graph: graphrt.Graph, seed: int = 0) -> graphrt.Graph:
    """The graph with random values in every trainable parameter that is all zeros (std
    1 / sqrt(fan-in) for weights, 0.1 for vectors): deploy prototxts without fillers (CIFAR-10
    quick, AlexNet) load zeros, where a step would leave most parameters at 0 and hide a wrong
    update."""
    rng = np.random.default_rng(seed)
    for p, info in graph.param_info.items():
        v = graph.params[p]
        if info.trainable and np.issubdtype(v.dtype, np.floating) and not v.any():
            scale = 1 / math.sqrt(math.prod(v.shape[1:])) if v.ndim > 1 else 0.1
            graph.params[p] = rng.normal(0, scale, v.shape).astype(v.dtype)
    return graph


def step_with_outputs(train_graph, batch_size: int, extra) -> graphrt.Executable:
    """A training step graph compiled as ``Trainer`` compiles it, with the tensors ``extra`` as
    further outputs."""
    g = train_graph.copy()
    g.set_outputs(list(g.outputs) + list(extra))
    return graphrt.compile(g, batch_size=batch_size, opt_level=2)


@pytest.mark.parametrize("name", sorted(SEED_RUNS))
def test_sgd_on_every_seed_model_follows_its_frameworks_rule(name):
    """Four steps of the seed model in float64; each step's gradients (graphrt's backward, an
    extra output of the step) go through the framework's rule written here, and every trained
    parameter must end where graphrt's sgd_update nodes took it. The multipliers are the test's own
    (the MLP test above checks a prototxt's are read), so every model has a decay_mult of 0 and 2;
    parameters left at zero are filled (see :func:`filled`)."""
    models = seed_models([name])
    if not models:
        pytest.skip(f"{name} needs ../shared")
    rule, policy, batch = SEED_RUNS[name]
    graph = filled(float64(models[0].build()))
    mults = {}
    for i, p in enumerate(p for p, info in graph.param_info.items() if info.trainable):
        mults[p] = graph.param_info[p].lr_mult, graph.param_info[p].decay_mult = MULTS[i % len(MULTS)]
    convention = "pytorch" if rule == "torch" else "caffe"
    with_loss, loss = attach_loss(graph)  # the step graph Trainer builds (its compile is not needed)
    train_graph, _ = training_graph(with_loss, loss, solver(convention, policy, SEED_LR, SEED_DECAY))
    updates = {n.inputs[0]: n.inputs[1] for n in train_graph.nodes if n.op == "sgd_update"}
    assert set(updates) == set(mults), "a trainable parameter without an update, or the reverse"
    exe = step_with_outputs(train_graph, batch, updates.values())
    params = {p: graph.params[p] for p in mults}  # sgd_step makes new arrays
    history = {p: np.zeros_like(v) for p, v in params.items()}
    x_name, classes = train_graph.inputs[0], graph.specs[graph.outputs[0]].shape[1]
    for it, (x, y) in enumerate(batches(graph.specs[x_name].concrete(batch), classes, SEED_STEPS)):
        out = exe({x_name: x, "label": y})
        grads = {p: out[g] for p, g in updates.items()}
        sgd_step(rule, params, grads, history, mults, caffe_rate(SEED_LR, policy, it, SOLVERS[policy]),
                 0.9, SEED_DECAY)
    for p, want in params.items():
        assert np.isfinite(want).all(), f"{name}: {p} diverged"
        err = relative_error(exe.params[p], want)
        assert err < TOL, f"{name} ({rule}, {policy}): {p} relative error {err:.3g}"


# ---- batch norm in training ----------------------------------------------------------------------
CAFFE_BN = """
name: "bn"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 6 dim: 3 dim: 2 dim: 2 } } }
layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 6 } } }
layer { name: "bn1" type: "BatchNorm" bottom: "data" top: "bn1"
  batch_norm_param { moving_average_fraction: 0.9 eps: 1e-5 } }
layer { name: "scale1" type: "Scale" bottom: "bn1" top: "bn1" scale_param { bias_term: true } }
layer { name: "ip1" type: "InnerProduct" bottom: "bn1" top: "ip1"
  inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip1" bottom: "label" top: "loss" }
"""


def softmax_loss(z: np.ndarray, y: np.ndarray) -> float:
    z = z - z.max(axis=1, keepdims=True)
    return float(-(z[np.arange(len(y)), y] - np.log(np.exp(z).sum(axis=1))).mean())


def caffe_batch_norm_blobs(batches_seen, fraction: float):
    """Caffe's BatchNormLayer::Forward_cpu in training, step by step: (mean sum, variance sum,
    scale factor) blobs from zero."""
    mean_sum, var_sum, factor = 0.0, 0.0, 0.0
    for x in batches_seen:
        m = x.size // x.shape[1]
        mean = x.mean(axis=(0, 2, 3))
        var = ((x - mean[None, :, None, None]) ** 2).mean(axis=(0, 2, 3))
        factor = fraction * factor + 1
        mean_sum = fraction * mean_sum + mean
        var_sum = fraction * var_sum + var * m / (m - 1)
    return mean_sum, var_sum, factor


def test_caffe_batch_norm_trains_with_batch_statistics_and_caffes_moving_sums():
    graph = float64(load_caffe(text=CAFFE_BN, phase="TRAIN"))
    data = batches((6, 3, 2, 2), 4, steps=4, seed=3)
    data = [(x * 2 + 1, y) for x, y in data]
    trainer = graphrt.Trainer(graph, optimizer=graphrt.optim.SGD(lr=0.0), batch_size=6)
    x, y = data[0]
    mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))  # biased: what Caffe normalizes with
    xhat = (x - mean[None, :, None, None]) / np.sqrt(var[None, :, None, None] + 1e-5)
    z = xhat.reshape(6, -1) @ graph.params["ip1_weight"].T + graph.params["ip1_bias"]
    assert abs(trainer.step(x, y) - softmax_loss(z, y)) < TOL * abs(softmax_loss(z, y))
    for x, y in data[1:]:
        trainer.step(x, y)
    mean_sum, var_sum, factor = caffe_batch_norm_blobs([x for x, _ in data], 0.9)
    stats = trainer.parameters()
    names = [p for p in graph.params if p.startswith("bn1")]
    running_mean, running_var = (stats[n] for n in names[:2])
    # graphrt keeps Caffe's blobs divided by the scale factor: what inference reads
    assert relative_error(running_mean, mean_sum / factor) < TOL
    assert relative_error(running_var, var_sum / factor) < TOL


def test_keras_batch_normalization_keeps_kerass_moving_averages():
    from graphrt.frontends import keras

    model = keras.Sequential()
    model.add(keras.BatchNormalization(input_shape=(6,)))
    model.add(keras.Dense(4))
    model.add(keras.Activation("softmax"))
    graph = float64(model.to_graph())
    data = [(x * 3 - 1, y) for x, y in batches((8, 6), 4, steps=5, seed=4)]
    trainer = graphrt.Trainer(graph, optimizer=graphrt.optim.SGD(lr=0.0), batch_size=8)
    names = list(graph.params)
    moving_mean, moving_var = (graph.params[n].copy() for n in names if "moving" in n)
    gamma, beta = (graph.params[n] for n in names if n.endswith(("gamma", "beta")))
    kernel = next(graph.params[n] for n in names if "dense" in n and graph.params[n].ndim == 2)
    bias = next(graph.params[n] for n in names if "dense" in n and graph.params[n].ndim == 1)
    for x, y in data:
        mean, var = x.mean(axis=0), x.var(axis=0)
        z = ((x - mean) / np.sqrt(var + 1e-3) * gamma + beta) @ kernel.T + bias
        assert abs(trainer.step(x, y) - softmax_loss(z, y)) < TOL * softmax_loss(z, y)
        moving_mean = 0.99 * moving_mean + 0.01 * mean  # keras.layers.BatchNormalization
        moving_var = 0.99 * moving_var + 0.01 * var
    stats = trainer.parameters()
    got_mean, got_var = (stats[n] for n in names if "moving" in n)
    assert relative_error(got_mean, moving_mean) < TOL and relative_error(got_var, moving_var) < TOL


# ---- training-mode dropout -----------------------------------------------------------------------
def dropout_net(rate: float, width: int = 400) -> graphrt.Graph:
    from graphrt.frontends import keras

    model = keras.Sequential()
    model.add(keras.Dense(width, input_dim=10, activation="tanh"))
    model.add(keras.Dropout(rate))
    model.add(keras.Dense(3))
    model.add(keras.Activation("softmax"))
    return float64(model.to_graph())


def step_with_mask(trainer) -> graphrt.Executable:
    """The trainer's step graph compiled with the dropout mask as a second output."""
    return step_with_outputs(trainer.train_graph, trainer.batch_size,
                             [t for n in trainer.train_graph.nodes if n.op == "dropout_train"
                              for t in n.outputs[1:]])


def test_dropout_masks_keep_the_right_fraction_scaled_and_change_every_step():
    rate, n = 0.3, 64
    exe = step_with_mask(graphrt.Trainer(dropout_net(rate), optimizer=graphrt.optim.SGD(lr=0.0),
                                         batch_size=n))
    mask_name = exe.output_names[-1]
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((n, 10)), rng.integers(0, 3, n)
    masks = [exe({"input_1": x, "label": y})[mask_name] for _ in range(3)]
    for m in masks:
        assert set(np.unique(m)) == {0.0, 1 / (1 - rate)}  # inverted dropout: kept values scaled
        kept = (m > 0).mean()
        assert abs(kept - (1 - rate)) < 5 * math.sqrt(rate * (1 - rate) / m.size)
    a, b = (masks[0] > 0).ravel(), (masks[1] > 0).ravel()
    assert not np.array_equal(a, b)  # a new mask every step...
    assert abs(np.corrcoef(a, b)[0, 1]) < 5 / math.sqrt(a.size)  # ...independent of the last
    again = step_with_mask(graphrt.Trainer(dropout_net(rate), optimizer=graphrt.optim.SGD(lr=0.0),
                                           batch_size=n))
    np.testing.assert_array_equal(again({"input_1": x, "label": y})[mask_name], masks[0])  # seeded
    other = step_with_mask(graphrt.Trainer(dropout_net(rate), optimizer=graphrt.optim.SGD(lr=0.0),
                                           batch_size=n, seed=1))
    assert not np.array_equal(other({"input_1": x, "label": y})[mask_name], masks[0])


def test_a_dropout_step_equals_numpy_given_its_mask():
    """Dense, tanh, dropout with the step's mask, Dense, softmax cross-entropy; backward by hand;
    one SGD update with momentum and weight decay: loss and every parameter."""
    graph = dropout_net(0.5, width=16)
    trainer = graphrt.Trainer(graph, optimizer=graphrt.optim.SGD(lr=0.1, momentum=0.9, weight_decay=1e-2),
                              batch_size=8)
    exe = step_with_mask(trainer)
    rng = np.random.default_rng(2)
    p = {k: v.copy() for k, v in graph.params.items()}
    w1, b1, w2, b2 = (p[k] for k in graph.params)
    history = {k: np.zeros_like(v) for k, v in p.items()}
    for step in range(3):
        x, y = rng.standard_normal((8, 10)), rng.integers(0, 3, 8)
        out = exe({"input_1": x, "label": y})
        mask = out[exe.output_names[-1]]
        h = np.tanh(x @ w1.T + b1)
        d = h * mask
        z = d @ w2.T + b2
        loss = softmax_loss(z, y)
        assert abs(float(out[exe.output_names[0]]) - loss) < TOL * loss, step
        prob = np.exp(z - z.max(1, keepdims=True))
        prob /= prob.sum(1, keepdims=True)
        dz = prob
        dz[np.arange(8), y] -= 1
        dz /= 8
        dh = (dz @ w2) * mask * (1 - h ** 2)
        grads = dict(zip(graph.params, (dh.T @ x, dh.sum(0), dz.T @ d, dz.sum(0))))
        params = dict(zip(graph.params, (w1, b1, w2, b2)))
        sgd_step("pytorch", params, grads, history, {k: (1.0, 1.0) for k in params}, 0.1, 0.9, 1e-2)
        w1, b1, w2, b2 = params.values()
    for name, want in zip(graph.params, (w1, b1, w2, b2)):
        assert relative_error(exe.params[name], want) < TOL, name
