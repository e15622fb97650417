"""Training on the cuda device (the CUDA stand-in of ``tools/cuda_emulator`` in CI, a real GPU where
there is one) against the cpu device, the reference: every gradient, loss, optimizer and dropout op
runs as a kernel, nothing is placed on the host, the whole step is captured into one CUDA graph,
numpy never touches a device array during a step, and the ledger shows one host-to-device copy per
batch and a device-to-host copy only when the loss is read.
"""
from __future__ import annotations

import contextlib
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import graphrt
from graphrt import Graph
from graphrt.ops.philox import philox4x32, uniform
from graphrt.testing import as_float64, relative_error

import naive_grad
from cuda_cases import DEVICES, RTOL, SEED_MODELS, make_device, on_device_kind, param, seed_graph

# the large seed models train at batch 2 to keep the suite fast, and in float64: in float32 the
# cuda device's GEMMs round in another order than the cpu device's BLAS, and in networks this deep a
# pre-activation within rounding of 0 (or a near-tie in a max-pool window) then takes the other
# branch of a relu or of a max-pool's argmax on the two devices, which moves whole gradient entries
# (mxnet_alexnet: one step from equal parameters, loss within 5e-7 but a weight 9e-5 apart in
# float32 with our GEMM kernel; bitwise equal with the stand-in's cuBLAS, which is numpy's). The
# kernels are the same source for both types (``typedef double T``); float32 is compared on the
# other models here, and kernel by kernel below.
BATCH = {"caffe_alexnet": 2, "caffe_googlenet": 2, "mxnet_alexnet": 2, "torch_inception_bn": 2,
         "keras_simple_cnn": 2}
FLOAT64 = {"caffe_alexnet", "caffe_googlenet", "mxnet_alexnet", "torch_inception_bn"}
DEVICE_OPTIONS: dict = {}
OPT = graphrt.optim.SGD(lr=1e-3, momentum=0.9, weight_decay=5e-4)
# what numpy must never be handed during a step: a device array (each is a hidden host round trip
# or a host computation on device data)
NUMPY_HOOKS = ("__array__", "__array_ufunc__", "__array_function__", "__int__", "__float__",
               "__bool__")


@pytest.fixture(autouse=True)
def _device_kind(request):
    kind = request.node.callspec.params.get("kind") if hasattr(request.node, "callspec") else None
    with on_device_kind(kind):
        yield


@contextlib.contextmanager
def numpy_refused(kind: str):
    """Every numpy entry point of the stand-in's device arrays raises and is recorded (the list
    yielded); on a real GPU nothing is patched."""
    calls: list[str] = []
    if kind != "stand_in":
        yield calls
        return
    from tools.cuda_emulator.array import ndarray

    saved = {name: ndarray.__dict__[name] for name in NUMPY_HOOKS}

    def refuse(name):
        def hook(self, *args, **kwargs):
            calls.append(f"{name} on {self!r}")
            raise TypeError(f"numpy's {name} was called on a device array during a step")
        return hook
    for name in NUMPY_HOOKS:
        setattr(ndarray, name, refuse(name))
    try:
        yield calls
    finally:
        for name, fn in saved.items():
            setattr(ndarray, name, fn)


def _seed_graph(name: str) -> Graph:
    """The seed model with He-scale weights (``seed_graph``) and its all-zero vectors (biases,
    running means) drawn small and nonzero: a bias ahead of a batch norm gets a zero gradient, so
    from zero it would hold nothing but rounding noise, which no relative error can compare."""
    g = seed_graph(name)
    rng = np.random.default_rng(5)
    for key, value in list(g.params.items()):
        if value.ndim == 1 and value.dtype.kind == "f" and value.size > 1 and not value.any():
            g.params[key] = (rng.standard_normal(value.shape) * 0.1).astype(value.dtype)
    return g


def _trainers(g: Graph, kind: str, batch: int, opt=OPT):
    """A cpu and a cuda Trainer of ``g``; the cuda one must place nothing on the host."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", graphrt.FallbackWarning)
        cpu = graphrt.Trainer(g, optimizer=opt, device="cpu", batch_size=batch)
        dev = graphrt.Trainer(g, optimizer=opt, device=make_device(kind, graphs=True, **DEVICE_OPTIONS),
                              batch_size=batch)
    assert dev.exe.host_nodes == {}
    return cpu, dev


def _batches(g: Graph, batch: int, count: int, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    x = g.inputs[0]
    classes = g.specs[g.outputs[0]].shape[-1]
    return [(rng.standard_normal(g.specs[x].concrete(batch)).astype(g.specs[x].dtype),
             rng.integers(0, classes, batch)) for _ in range(count)]


def _assert_same_parameters(cpu, dev, label=""):
    pc, pd = cpu.parameters(), dev.parameters()
    assert pc.keys() == pd.keys()
    for name in pc:
        err = relative_error(pd[name], pc[name])
        assert err < RTOL, f"{label} parameter {name}: relative error {err:.3g}"


def _assert_same_loss(a: float, b: float, label=""):
    assert abs(a - b) <= RTOL * abs(a), f"{label} loss {b} on the cuda device, {a} on the cpu"


# ---- every seed model: one captured SGD step ---------------------------------------------------
@pytest.mark.parametrize("kind", DEVICES)
@pytest.mark.parametrize("name", SEED_MODELS)
def test_seed_model_training_steps_match_the_cpu_device(name, kind):
    """Three SGD steps (momentum, weight decay) of each seed model (the large ones at batch 2, in
    float64: see FLOAT64): plain, plain timed, then captured into one CUDA graph and launched. Every step's loss and, after each, every parameter
    (weights, velocities' effect, running statistics) match the cpu device's; numpy never sees a
    device array; per step the ledger counts one copy in (inputs and labels packed together) and
    the loss out, nothing else."""
    g = _seed_graph(name)
    g = as_float64(g) if name in FLOAT64 else g
    batch = BATCH.get(name, 4)
    cpu, dev = _trainers(g, kind, batch)
    dev.exe.ledger.reset()
    for step, (x, y) in enumerate(_batches(g, batch, 3)):
        want = cpu.step(x, y)
        with numpy_refused(kind) as calls:
            got = dev.step(x, y)
        assert calls == [], calls[:3]
        _assert_same_loss(want, got, f"{name} step {step}")
    _assert_same_parameters(cpu, dev, name)
    mode, why = dev.exe.device.run_mode(dev.exe.program(batch))
    assert mode.startswith("graph") and why.startswith("captured"), why
    s = dev.exe.ledger.summary()
    assert (s["HtoD"]["invocations"], s["DtoH"]["invocations"], s["DtoD"]["invocations"]) == \
        (3, 3, 0)


@pytest.mark.parametrize("kind", DEVICES)
def test_step_uploads_inputs_and_labels_in_one_copy(kind):
    """Trainer.step packs the batch and its labels into one page-locked buffer (the layout of the
    arena's input block, as the prefetch pipeline does) and uploads it in one copy, also for a final
    partial batch and when steps follow each other without a read-back in between."""
    g = _seed_graph("keras_simple_ann")
    cpu, dev = _trainers(g, kind, 4)
    batches = _batches(g, 4, 3, seed=2)
    batches[-1] = (batches[-1][0][:3], batches[-1][1][:3])
    dev.exe.ledger.reset()
    for x, y in batches:
        _assert_same_loss(cpu.step(x, y), dev.step(x, y))
    s = dev.exe.ledger.summary()
    assert (s["HtoD"]["invocations"], s["DtoD"]["invocations"]) == (3, 0)
    for x, y in _batches(g, 4, 3, seed=3):  # no read-back: the buffer waits for its last upload
        cpu.exe(cpu._feeds(x, y))
        dev.exe(dev._feeds(x, y), outputs="device", copy=False)
    _assert_same_parameters(cpu, dev)


# ---- fit: captured, the loss read every loss_every steps ---------------------------------------
@pytest.mark.parametrize("kind", DEVICES)
@pytest.mark.parametrize("name", ["keras_simple_ann", "caffe_lenet"])
def test_fit_reads_the_loss_every_loss_every_steps_and_replays_the_graph(name, kind):
    """``fit`` through the prefetch pipeline: one HtoD per batch (inputs and labels packed), a DtoH
    only every ``loss_every`` steps, each slot's program captured and then replayed; the losses
    read and the parameters match the cpu device's (dropout's Philox mask included)."""
    g = _seed_graph(name)
    cpu, dev = _trainers(g, kind, 4)
    batches = _batches(g, 4, 8, seed=1)
    want = cpu.fit(batches, loss_every=4, progress=False)
    dev.exe.ledger.reset()
    with numpy_refused(kind) as calls:
        got = dev.fit(batches, loss_every=4, progress=False)
    assert calls == [], calls[:3]
    assert [s for s, _ in got] == [s for s, _ in want] == [4, 8]
    for (_, a), (_, b) in zip(want, got):
        _assert_same_loss(a, b, name)
    _assert_same_parameters(cpu, dev, name)
    s = dev.exe.ledger.summary()
    assert (s["HtoD"]["invocations"], s["DtoH"]["invocations"], s["DtoD"]["invocations"]) == \
        (8, 2, 0)
    for slot in (0, 1):
        mode, why = dev.exe.device.run_mode(dev.exe.program(4, slot))
        assert mode.startswith("graph"), why


# ---- the gradient kernels, one family at a time ------------------------------------------------
def _net(kind: str) -> Graph:
    """A small net through every gradient kernel: grouped, strided, dilated convolution; ceil-mode
    max pooling; average pooling without the padding; LRN; batch norm (train: running
    averages); tanh, sigmoid, Caffe Power, leaky relu; a concat; dropout; dense; log_softmax."""
    rng = np.random.default_rng(4)
    g = Graph(f"grads_{kind}")
    x = g.add_input("x", (None, 4, 11, 10))
    h = g.add_node("conv2d", [x, param(g, rng, "w1", (6, 2, 3, 2)), param(g, rng, "b1", (6,))],
                   attrs={"stride": (2, 1), "pads": (1, 0, 2, 1), "dilation": (1, 2), "groups": 2})
    h = g.add_node("batch_norm", [h, g.add_param("m", np.zeros(6, np.float32)),
                                  g.add_param("v", np.ones(6, np.float32)),
                                  param(g, rng, "gamma", (6,)), param(g, rng, "beta", (6,))],
                   attrs={"momentum": 0.3})
    h = g.add_node("relu", [h], attrs={"negative_slope": 0.1})
    a = g.add_node("max_pool", [h], attrs={"kernel": 3, "stride": 2, "pads": 1, "ceil_mode": True})
    b = g.add_node("avg_pool", [h], attrs={"kernel": 3, "stride": 2, "pads": 1, "ceil_mode": True,
                                           "count_include_pad": False})
    h = g.add_node("concat", [g.add_node("tanh", [a]), g.add_node("sigmoid", [b])],
                   attrs={"axis": 1})
    h = g.add_node("lrn", [h], attrs={"size": 3, "alpha": 0.1, "beta": 0.75, "k": 2.0})
    h = g.add_node("conv2d", [h, param(g, rng, "w2", (5, 12, 1, 1))])
    h = g.add_node("scale", [h], attrs={"scale": 0.5, "shift": 3.0, "power": 2.0})
    h = g.add_node("dropout", [g.add_node("flatten", [h])], attrs={"rate": 0.3})
    h = g.add_node("dense", [h, param(g, rng, "w3", (7, g.specs[h].shape[1]), 0.1)])
    g.set_outputs([g.add_node("log_softmax", [h])])
    return g.verify()


@pytest.mark.parametrize("kind", DEVICES)
def test_every_gradient_kernel_matches_the_cpu_device(kind):
    g = _net(kind)
    cpu, dev = _trainers(g, kind, 3)
    ops = {n.op for n in dev.exe.graph.nodes}
    assert {"conv2d_grad_input", "conv2d_grad_weight", "max_pool_grad", "avg_pool_grad",
            "lrn_grad", "batch_norm_train", "batch_norm_train_grad", "dropout_train",
            "nll_loss_grad", "log_softmax_grad", "reduce_channels", "dense_grad_weight",
            "dense_grad_input"} <= ops, ops
    for step, (x, y) in enumerate(_batches(g, 3, 3, seed=2)):
        _assert_same_loss(cpu.step(x, y), dev.step(x, y), f"step {step}")
        _assert_same_parameters(cpu, dev, f"step {step}")


@pytest.mark.parametrize("kind", DEVICES)
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_convolution_and_pooling_gradients_of_random_geometry(kind, data):
    """conv2d's data and weight gradients (col2im, the GEMMs) and the pools' gradients (ties go to
    the first maximum) for random kernels, strides, pads, dilations and groups, against the cpu
    device."""
    draw = data.draw
    groups = draw(st.sampled_from([1, 2]))
    c, o = groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dil = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    pads = tuple(draw(st.integers(0, 2)) for _ in range(4))
    h, w = draw(st.integers(kh * dil[0], 9)), draw(st.integers(kw * dil[1], 9))
    rng = np.random.default_rng(draw(st.integers(0, 99)))
    g = Graph("conv_geometry")
    x = g.add_input("x", (None, c, h, w))
    # whole numbers: the first step's convolution is exact on both devices, so its max-pool
    # windows hold exact ties (which must go to the first maximum)
    w = g.add_param("w", np.round(rng.standard_normal((o, c // groups, kh, kw))).astype(np.float32))
    y = g.add_node("conv2d", [x, w], attrs={"stride": stride, "dilation": dil, "pads": pads,
                                            "groups": groups, "activation": "relu"})
    pool = draw(st.sampled_from(["max_pool", "avg_pool"]))
    k = min(2, *g.specs[y].shape[2:])
    y = g.add_node(pool, [y], attrs={"kernel": k, "stride": draw(st.integers(1, 2)),
                                     "ceil_mode": draw(st.booleans())})
    y = g.add_node("dense", [g.add_node("flatten", [y]),
                             param(g, rng, "d", (3, int(np.prod(g.specs[y].shape[1:]))))])
    g.set_outputs([y])
    cpu, dev = _trainers(g.verify(), kind, 2, graphrt.optim.SGD(lr=0.1, momentum=0.5))
    for x, labels in _batches(g, 2, 3, seed=3):  # plain, plain, captured (our GEMM kernel)
        x = np.round(x * 2)
        _assert_same_loss(cpu.step(x, labels), dev.step(x, labels))
    _assert_same_parameters(cpu, dev)


# ---- dropout: Philox4x32-10 on the host and on the device --------------------------------------
def test_philox_matches_random123s_known_answers():
    """Random123's known-answer vectors of Philox4x32-10 (kat_vectors)."""
    cases = [((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
             ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
             ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
              (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1))]
    for ctr, key, want in cases:
        assert tuple(int(v) for v in philox4x32(np.array([ctr], np.uint32), key)[0]) == want
        assert naive_grad.philox4x32_10(ctr, key) == want


@given(size=st.integers(1, 40), seed=st.integers(0, 2**64 - 1), step=st.integers(0, 2**40))
def test_philox_uniforms_follow_the_element_index(size, seed, step):
    u = uniform(size, seed, step)
    for i in range(size):
        words = naive_grad.philox4x32_10((i // 4, 0, step & 0xFFFFFFFF, step >> 32),
                                         (seed & 0xFFFFFFFF, seed >> 32))
        assert u[i] == (words[i % 4] >> 8) / 2**24


@pytest.mark.parametrize("kind", DEVICES)
def test_dropout_masks_are_drawn_on_the_device_as_on_the_host(kind):
    """The dropout_train kernel's mask equals the cpu device's at every step (its counter advances
    on the device), with no host mask and no read-back."""
    g = Graph("drop")
    x = g.add_input("x", (None, 5, 7))
    counter = g.add_param("counter", np.array([2**33 + 5], np.int64), trainable=False)
    y, mask = g.add_node("dropout_train", [x, counter], attrs={"rate": 0.4, "seed": 2**63 + 11})
    g.set_outputs([y, mask])
    g.verify()
    cpu = graphrt.compile(g, device="cpu", batch_size=3)
    dev = graphrt.compile(g, device=make_device(kind, graphs=True), batch_size=3)
    assert dev.host_nodes == {}
    feeds = np.random.default_rng(0).standard_normal((3, 5, 7)).astype(np.float32)
    for step in range(4):
        want, got = cpu(feeds), dev(feeds)
        for name in want:
            np.testing.assert_array_equal(got[name], want[name], err_msg=f"step {step} {name}")
    masks = {tuple(cpu(feeds)[mask].ravel() > 0) for _ in range(3)}
    assert len(masks) == 3  # a new mask each step


def test_as_float64_rebuilds_the_graph_in_double():
    g = _net("cpu")
    g64 = as_float64(g)
    assert [n.op for n in g64.nodes] == [n.op for n in g.nodes]
    assert g64.inputs == g.inputs and g64.outputs == g.outputs
    assert {g64.specs[t].dtype for t in g64.specs} == {"float64"}
    assert g64.param_info == g.param_info
    x = np.random.default_rng(0).standard_normal((2, 4, 11, 10)).astype(np.float32)
    y32, y64 = graphrt.run_reference(g, x), graphrt.run_reference(g64, x.astype(np.float64))
    assert y64.dtype == np.float64 and relative_error(y32, y64) < 1e-5


def _token_net() -> Graph:
    """Token ids -> embedding -> layer norm -> a transposed convolution over (D, T) -> slice,
    tile and resize -> mean over the sequence -> matmul -> logits: a training step of the
    structural ops (their gradients embedding_grad, layer_norm_grad, pad, reduce_grad,
    resize_grad, matmul_grad, reduce_like...)."""
    rng = np.random.default_rng(6)
    g = Graph("tokens")
    ids = g.add_input("ids", (None, 6), "int64")
    y = g.add_node("embedding", [ids, param(g, rng, "table", (9, 4))], name="embed")
    y = g.add_node("layer_norm", [y, param(g, rng, "ln_s", (4,)), param(g, rng, "ln_b", (4,))],
                   name="ln", attrs={"axes": [-1]})
    y = g.add_node("reshape", [y], name="img", attrs={"shape": [1, 6, 4]})
    y = g.add_node("conv2d_transpose", [y, param(g, rng, "up", (1, 2, 2, 2)),
                                        param(g, rng, "up_b", (2,))],
                   name="deconv", attrs={"stride": (1, 1)})  # (N, 2, 7, 5)
    y = g.add_node("slice", [y], name="crop", attrs={"starts": [1], "ends": [6], "axes": [2]})
    y = g.add_node("tile", [y], name="rep", attrs={"repeats": [1, 1, 1, 2]})
    y = g.add_node("resize", [y], name="resize", attrs={"sizes": [4, 6], "mode": "linear"})
    y = g.add_node("reduce", [y], name="pool", attrs={"mode": "mean", "axes": [2], "keepdims": False})
    y = g.add_node("reshape", [y], name="flat", attrs={"shape": [12]})
    y = g.add_node("matmul", [y, param(g, rng, "w_out", (12, 5))], name="proj")
    g.set_outputs([g.add_node("add", [y, param(g, rng, "bias", (5,))], name="logits")])
    return g.verify()


@pytest.mark.parametrize("kind", DEVICES)
def test_a_model_of_the_structural_ops_trains_on_the_device(kind):
    """Every node of the training step on the device (nothing on the host), three SGD steps
    matching the cpu device's losses and parameters, one upload per step."""
    g = _token_net()
    cpu, dev = _trainers(g, kind, 4)
    rng = np.random.default_rng(7)
    dev.exe.ledger.reset()
    for step in range(3):
        x, y = rng.integers(0, 9, (4, 6)), rng.integers(0, 5, 4)
        _assert_same_loss(cpu.step(x, y), dev.step(x, y), f"step {step}")
    _assert_same_parameters(cpu, dev, "tokens")
    assert dev.exe.ledger.summary()["HtoD"]["invocations"] == 3
