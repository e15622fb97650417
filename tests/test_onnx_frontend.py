"""The ONNX frontend (``graphrt.load("m.onnx")``) and ``graphrt.from_torch``: the PyTorch-exported
LeNet fixture against its stored output, small hand-built models against onnxruntime, the batch
mapping, load-time folding, errors that name the node, and PyTorch modules against PyTorch."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import graphrt  # noqa: E402
from graphrt.ir.errors import GraphrtError, ParseError, UnsupportedError  # noqa: E402
from graphrt.frontends.onnx import load_onnx  # noqa: E402
from graphrt.frontends.onnx.fold import BatchError, ConstantInputError  # noqa: E402
from graphrt.testing import relative_error  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
F = TensorProto.FLOAT


def make_model(nodes, inputs, outputs, initializers=(), opset=17):
    """A model from (name, shape) float32 inputs and outputs and numpy initializers {name: array};
    an output shape of None is filled in by ONNX's shape inference."""
    graph = helper.make_graph(
        nodes, "test", [helper.make_tensor_value_info(n, F, s) for n, s in inputs], [],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in dict(initializers).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    inferred = {v.name: v for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
    model.graph.output.extend(inferred[n] if s is None else helper.make_tensor_value_info(n, F, s)
                              for n, s in outputs)
    return model


def ort_run(model, feeds: dict) -> list:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def rng_array(shape, seed=0, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def check_against_ort(model, feeds: dict, levels=(0, 3), rtol=1e-5):
    graph = load_onnx(model)
    expected = ort_run(model, feeds)
    batch = max(v.shape[0] for v in feeds.values())
    for level in levels:
        out = graphrt.compile(graph, batch_size=batch, opt_level=level)(feeds)
        outs = list(out.values()) if isinstance(out, dict) else [out]
        for got, want in zip(outs, expected):
            assert got.shape == want.shape, (got.shape, want.shape)
            assert relative_error(got, want) < rtol, f"opt_level {level}: {relative_error(got, want)}"
    return graph


# ---- the PyTorch LeNet fixture --------------------------------------------------------------------
def test_torch_lenet_fixture_reproduces_its_stored_output(shared):
    folder = shared / "fixtures" / "onnx"
    graph = graphrt.load(folder / "torch_lenet.onnx")
    x, y = np.load(folder / "torch_lenet_input.npy"), np.load(folder / "torch_lenet_output.npy")
    assert graph.specs[graph.inputs[0]].shape == (None, 1, 28, 28)
    assert {"1.weight", "3.weight", "6.weight", "8.weight"} <= set(graph.params)
    assert relative_error(graphrt.run_reference(graph, x), y) < 1e-5
    for level in range(4):
        exe = graphrt.compile(graph, batch_size=4, opt_level=level)
        assert relative_error(exe(x), y) < 1e-5, level
        assert relative_error(exe(x[:3]), y[:3]) < 1e-5, level  # a smaller batch


# ---- conversions against onnxruntime ---------------------------------------------------------------
@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER", "VALID"])
def test_conv_auto_pad_strides_dilations_groups(auto_pad):
    w = rng_array((6, 2, 3, 3), 1)
    b = rng_array((6,), 2)
    dilations = [1, 2] if auto_pad == "VALID" else [1, 1]  # onnxruntime: no dilation with SAME
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], auto_pad=auto_pad, strides=[2, 1],
                            dilations=dilations, group=2)
    model = make_model([node], [("x", ["N", 4, 9, 8])], [("y", None)], {"w": w, "b": b})
    check_against_ort(model, {"x": rng_array((2, 4, 9, 8))})


def test_conv_asymmetric_pads_and_1d_conv():
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 0, 2, 1], strides=[2, 2]),
             helper.make_node("Relu", ["c"], ["y"])]
    model = make_model(nodes, [("x", ["N", 3, 7, 7])], [("y", None)], {"w": rng_array((4, 3, 3, 3), 1)})
    check_against_ort(model, {"x": rng_array((3, 3, 7, 7))})
    node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[2, 1], strides=[2])
    model = make_model([node], [("x", [2, 3, 11])], [("y", None)], {"w": rng_array((5, 3, 4), 1)})
    check_against_ort(model, {"x": rng_array((2, 3, 11))})


@pytest.mark.parametrize("op,extra", [("MaxPool", {}), ("AveragePool", {"count_include_pad": 1}),
                                      ("AveragePool", {"count_include_pad": 0})])
@pytest.mark.parametrize("ceil_mode", [0, 1])
def test_pools_with_pads_and_ceil_mode(op, extra, ceil_mode):
    node = helper.make_node(op, ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 1, 1],
                            ceil_mode=ceil_mode, **extra)
    model = make_model([node], [("x", [2, 3, 8, 9])], [("y", None)])
    check_against_ort(model, {"x": rng_array((2, 3, 8, 9))})


@pytest.mark.parametrize("attrs,c_shape", [
    ({}, (4,)), ({"transB": 1, "alpha": 0.5, "beta": 2.0}, (1, 4)), ({"beta": 0.5}, ()),
    ({"alpha": 2.0}, None), ({}, (3, 4))])
def test_gemm_with_constant_weights(attrs, c_shape):
    b = rng_array((4, 5) if attrs.get("transB") else (5, 4), 1)
    inits = {"b": b} if c_shape is None else {"b": b, "c": rng_array(c_shape, 2)}
    node = helper.make_node("Gemm", ["a", "b"] + ([] if c_shape is None else ["c"]), ["y"], **attrs)
    model = make_model([node], [("a", [3, 5])], [("y", None)], inits)
    graph = check_against_ort(model, {"a": rng_array((3, 5))})
    assert c_shape == (3, 4) or graph.nodes[0].op == "dense"


def test_matmul_nd_and_broadcast_add_mul():
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]),
             helper.make_node("Add", ["m", "bias"], ["a"]),
             helper.make_node("Mul", ["a", "gate"], ["y"])]
    model = make_model(nodes, [("x", [2, 5, 6])], [("y", None)],
                       {"w": rng_array((6, 3), 1), "bias": rng_array((3,), 2), "gate": rng_array((5, 1), 3)})
    graph = check_against_ort(model, {"x": rng_array((2, 5, 6))})
    assert [n.op for n in graph.nodes] == ["matmul", "add", "channel_affine"]  # gate is per axis 1


def test_softmax_before_opset_13_flattens_the_trailing_axes():
    node = helper.make_node("Softmax", ["x"], ["y"], axis=1)
    model = make_model([node], [("x", [2, 3, 4, 5])], [("y", None)], opset=11)
    check_against_ort(model, {"x": rng_array((2, 3, 4, 5))})
    node = helper.make_node("LogSoftmax", ["x"], ["y"], axis=2)
    model = make_model([node], [("x", [2, 3, 4, 5])], [("y", None)], opset=13)
    check_against_ort(model, {"x": rng_array((2, 3, 4, 5))})


@pytest.mark.parametrize("opset", [9, 17])
def test_pad_as_attribute_or_input(opset):
    pads = [0, 0, 1, 2, 0, 0, 3, 0]
    if opset < 11:
        node = helper.make_node("Pad", ["x"], ["y"], pads=pads, value=1.5)
        inits = {}
    else:
        node = helper.make_node("Pad", ["x", "p", "v"], ["y"])
        inits = {"p": np.array(pads, np.int64), "v": np.array(1.5, np.float32)}
    model = make_model([node], [("x", [2, 3, 4, 5])], [("y", None)], inits, opset=opset)
    check_against_ort(model, {"x": rng_array((2, 3, 4, 5))})
    zero = helper.make_node("Pad", ["x", "p"], ["y"])
    model = make_model([zero], [("x", [2, 3, 4, 5])], [("y", None)],
                       {"p": np.array([0, 0, 1, -1, 0, 0, 2, 1], np.int64)})
    assert check_against_ort(model, {"x": rng_array((2, 3, 4, 5))}).nodes[0].op == "zero_pad"


def test_densenet_style_unsqueezed_factors_become_channel_affine():
    nodes = [helper.make_node("Unsqueeze", ["s"], ["s3"], axes=[1, 2]),
             helper.make_node("Mul", ["x", "s3"], ["m"]),
             helper.make_node("Unsqueeze", ["t"], ["t3"], axes=[1, 2]),
             helper.make_node("Add", ["m", "t3"], ["y"])]
    model = make_model(nodes, [("x", [2, 4, 3, 3])], [("y", None)],
                       {"s": rng_array((4,), 1), "t": rng_array((4,), 2)}, opset=11)
    graph = check_against_ort(model, {"x": rng_array((2, 4, 3, 3))})
    assert [n.op for n in graph.nodes] == ["channel_affine", "channel_affine"]


def test_sum_dropout_identity_leaky_relu_lrn_batchnorm():
    c = 4
    nodes = [helper.make_node("BatchNormalization", ["x", "g", "b", "m", "v"], ["bn"], epsilon=1e-3),
             helper.make_node("LeakyRelu", ["bn"], ["lr"], alpha=0.2),
             helper.make_node("LRN", ["lr"], ["n"], size=3, alpha=1e-2, beta=0.6, bias=2.0),
             helper.make_node("Dropout", ["n"], ["d"]),
             helper.make_node("Identity", ["d"], ["i"]),
             helper.make_node("Sum", ["i", "x", "bn"], ["y"])]
    inits = {"g": rng_array((c,), 1), "b": rng_array((c,), 2), "m": rng_array((c,), 3),
             "v": np.abs(rng_array((c,), 4)) + 0.5}
    model = make_model(nodes, [("x", [2, c, 5, 5])], [("y", None)], inits)
    check_against_ort(model, {"x": rng_array((2, c, 5, 5))}, levels=(0, 1, 2, 3))


# ---- load-time folding and the batch -------------------------------------------------------------
def _torch_style_flatten(opset=13):
    """PyTorch's x.view(x.size(0), -1): Shape -> Gather -> Unsqueeze -> Concat -> Reshape."""
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Constant", [], ["zero"], value=numpy_helper.from_array(np.array(0, np.int64))),
             helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
             helper.make_node("Unsqueeze", ["n", "axes"], ["n1"]),
             helper.make_node("Concat", ["n1", "minus1"], ["shape"], axis=0),
             helper.make_node("Reshape", ["x", "shape"], ["y"])]
    inits = {"axes": np.array([0], np.int64), "minus1": np.array([-1], np.int64),
             "unused": np.zeros((3, 3), np.float32)}
    graph = helper.make_graph(nodes, "flatten", [helper.make_tensor_value_info("x", F, ["batch", 3, 4])],
                              [helper.make_tensor_value_info("y", F, ["batch", 12])],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def test_shape_arithmetic_folds_and_keeps_the_batch_symbolic():
    graph = load_onnx(_torch_style_flatten())
    assert [n.op for n in graph.nodes] == ["reshape"]
    assert graph.specs[graph.outputs[0]].shape == (None, 12)
    assert not graph.params  # the unused initializer is tolerated and dropped
    x = rng_array((5, 3, 4))
    assert np.array_equal(graphrt.compile(graph, batch_size=5)(x), x.reshape(5, 12))


def test_fixed_batch_model_runs_any_batch():
    nodes = [helper.make_node("ConstantOfShape", ["wshape"], ["w"],
                              value=numpy_helper.from_array(np.array([0.02], np.float32))),
             helper.make_node("Reshape", ["x", "target"], ["f"]),
             helper.make_node("Gemm", ["f", "w"], ["y"], transB=1)]
    model = make_model(nodes, [("x", [1, 2, 3, 4])], [("y", [1, 5])],
                       {"wshape": np.array([5, 24], np.int64), "target": np.array([1, -1], np.int64)},
                       opset=11)
    graph = load_onnx(model)
    assert graph.specs["x"].shape == (None, 2, 3, 4) and graph.specs["y"].shape == (None, 5)
    x = rng_array((3, 2, 3, 4))
    np.testing.assert_allclose(graphrt.run_reference(graph, x), x.reshape(3, 24) @ np.full((24, 5), 0.02),
                               rtol=1e-5)


def test_batch_moving_model_is_static_in_auto_mode_and_an_error_in_symbolic_mode():
    node = helper.make_node("Transpose", ["x"], ["y"], perm=[1, 0, 2])
    model = make_model([node], [("x", [2, 3, 4])], [("y", None)])
    with pytest.raises(BatchError, match="Transpose") as err:
        load_onnx(model, batch="symbolic")
    assert err.value.node == "Transpose_0"
    graph = load_onnx(model)
    assert graph.specs["x"].shape == (2, 3, 4) and graph.specs["y"].shape == (3, 2, 4)
    x = rng_array((2, 3, 4))
    assert np.array_equal(graphrt.compile(graph)(x), x.transpose(1, 0, 2))
    with pytest.raises(GraphrtError, match="expects shape"):
        graphrt.compile(graph)(rng_array((3, 3, 4)))


def test_an_input_feeding_a_reshape_target_is_bound_with_constants():
    node = helper.make_node("Reshape", ["x", "shape"], ["y"])
    graph = helper.make_graph([node], "r", [helper.make_tensor_value_info("x", F, [2, 3, 4]),
                                            helper.make_tensor_value_info("shape", TensorProto.INT64, [3])],
                              [helper.make_tensor_value_info("y", F, [2, 6, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    with pytest.raises(ConstantInputError, match="graph input 'shape'") as err:
        load_onnx(model)
    assert err.value.input == "shape" and err.value.node == "Reshape_0"
    g = load_onnx(model, constants={"shape": np.array([2, -1, 2])})
    assert g.inputs == ["x"] and g.specs["y"].shape == (None, 6, 2)


def test_old_opsets_go_through_the_version_converter():
    node = helper.make_node("Relu", ["x"], ["y"])
    model = make_model([node], [("x", [2, 3])], [("y", None)], opset=6)
    check_against_ort(model, {"x": rng_array((2, 3))})


# ---- errors ----------------------------------------------------------------------------------------
def test_unsupported_op_names_the_node_op_and_file(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="first"),
             helper.make_node("Round", ["r"], ["y"], name="my_round")]
    path = tmp_path / "round.onnx"
    onnx.save(make_model(nodes, [("x", [2, 3])], [("y", None)]), str(path))
    with pytest.raises(UnsupportedError) as err:
        graphrt.load(path)
    assert err.value.node == "my_round" and err.value.op == "Round" and err.value.file == str(path)
    assert "'Round'" in str(err.value) and "my_round" in str(err.value)


def test_garbage_file_is_a_parse_error(tmp_path):
    path = tmp_path / "bad.onnx"
    path.write_bytes(b"\x08\x07not a model at all\xff\xff")
    with pytest.raises(ParseError) as err:
        graphrt.load(path)
    assert err.value.file == str(path)


def test_missing_input_of_a_node_is_a_graph_error():
    node = helper.make_node("Relu", ["nowhere"], ["y"], name="lost")
    model = make_model([node], [("x", [2, 3])], [("y", [2, 3])])
    with pytest.raises(GraphrtError, match="lost|nowhere"):
        load_onnx(model)


def test_conv_3d_is_unsupported_and_named():
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="c3")
    model = make_model([node], [("x", [1, 2, 4, 4, 4])], [("y", None)], {"w": rng_array((3, 2, 2, 2, 2))})
    with pytest.raises(UnsupportedError, match="3-D") as err:
        load_onnx(model)
    assert err.value.node == "c3"


# ---- from_torch ------------------------------------------------------------------------------------
try:
    import torch
except ImportError:  # torch is an optional dependency: only these tests need it
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")


def torch_seed_modules() -> dict:
    """The seed models as a PyTorch user writes them: name -> (module builder, input shape)."""
    nn = torch.nn

    class TorchLeNet(nn.Module):
        def __init__(self, classes=10):
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(1, 20, 5), nn.Conv2d(20, 50, 5)
            self.fc1, self.fc2 = nn.Linear(800, 500), nn.Linear(500, classes)

        def forward(self, x):
            x = x * 0.00390625
            x = nn.functional.max_pool2d(self.conv1(x), 2)
            x = nn.functional.max_pool2d(self.conv2(x), 2)
            x = torch.relu(self.fc1(x.view(x.size(0), -1)))
            return nn.functional.log_softmax(self.fc2(x), dim=1)

    def simple_ann():
        return nn.Sequential(nn.Linear(20, 64), nn.Tanh(), nn.Dropout(0.5), nn.Linear(64, 64), nn.Tanh(),
                             nn.Dropout(0.5), nn.Linear(64, 10), nn.Softmax(dim=1))

    def simple_cnn():
        return nn.Sequential(
            nn.Conv2d(3, 32, 3), nn.ReLU(), nn.Conv2d(32, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Dropout(0.25), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.Conv2d(64, 64, 3), nn.ReLU(),
            nn.MaxPool2d(2), nn.Dropout(0.25), nn.Flatten(), nn.Linear(64 * 22 * 22, 256), nn.ReLU(),
            nn.Dropout(0.5), nn.Linear(256, 10), nn.Softmax(dim=1))

    class InceptionBN(nn.Module):
        """Four branches with batch norm, zero padding and ceil-mode pooling, concatenated on the
        channels, then LocalResponseNorm (which PyTorch exports as a 3-D average pool)."""

        def __init__(self, c=8):
            super().__init__()

            def cbr(i, o, k, p=0):
                return nn.Sequential(nn.Conv2d(i, o, k, padding=p), nn.BatchNorm2d(o), nn.ReLU())
            self.b1 = cbr(c, 4, 1)
            self.b2 = nn.Sequential(cbr(c, 4, 1), cbr(4, 6, 3, 1))
            self.b3 = nn.Sequential(cbr(c, 4, 1), nn.ZeroPad2d(1), cbr(4, 6, 3), cbr(6, 6, 3, 1))
            self.b4 = nn.Sequential(nn.AvgPool2d(3, 1, 1, ceil_mode=True), cbr(c, 4, 1))
            self.pool = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.lrn = nn.LocalResponseNorm(5, 1e-3, 0.75, 2.0)

        def forward(self, x):
            y = torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)
            return self.lrn(self.pool(y))

    return {"torch_lenet": (TorchLeNet, (1, 28, 28)), "keras_simple_ann": (simple_ann, (20,)),
            "keras_simple_cnn": (simple_cnn, (3, 100, 100)),
            "torch_inception_bn": (InceptionBN, (8, 14, 14))}


def _randomize_batchnorm(module):
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return module


def _torch_output(module, x) -> np.ndarray:
    with torch.no_grad():
        y = module(x)
    return (y if isinstance(y, torch.Tensor) else next(iter(y.values()))).numpy()


@needs_torch
@pytest.mark.parametrize("name", ["torch_lenet", "keras_simple_ann",
                                  pytest.param("keras_simple_cnn", marks=pytest.mark.slow),
                                  "torch_inception_bn"])
def test_from_torch_matches_pytorch(name):
    build, shape = torch_seed_modules()[name]
    torch.manual_seed(0)
    module = _randomize_batchnorm(build()).eval()
    graph = graphrt.from_torch(module, torch.randn(2, *shape))
    assert graph.specs[graph.inputs[0]].shape == (None,) + tuple(shape)
    x = torch.randn(3, *shape)  # another batch than the example's
    expected = _torch_output(module, x)
    for level in (0, 3):
        out = graphrt.compile(graph, batch_size=3, opt_level=level)(x.numpy())
        assert relative_error(out, expected) < 1e-4, (level, relative_error(out, expected))


@needs_torch
def test_from_torch_keeps_pytorch_parameter_names_and_the_training_flag():
    build, shape = torch_seed_modules()["torch_lenet"]
    module = build().train()
    graph = graphrt.from_torch(module, torch.randn(2, *shape))
    assert module.training
    assert {"conv1.weight", "fc2.bias"} <= set(graph.params)


@needs_torch
def test_from_torch_rejects_what_is_not_a_module():
    with pytest.raises(GraphrtError, match="torch.nn.Module"):
        graphrt.from_torch(lambda x: x, torch.randn(2, 3))


SEED_FAST = {"keras_simple_ann", "caffe_lenet", "torch_lenet", "caffe_cifar10_quick"}


@needs_torch
@pytest.mark.parametrize("name", [
    pytest.param(n, marks=[] if n in SEED_FAST else [pytest.mark.slow]) for n in (
        "keras_simple_ann", "keras_simple_cnn", "caffe_lenet", "caffe_cifar10_quick", "caffe_alexnet",
        "caffe_googlenet", "mxnet_alexnet", "torch_lenet", "torch_inception_bn")])
def test_from_torch_on_the_pytorch_version_of_every_seed_model(name, monkeypatch):
    """Each seed model as a PyTorch module (bench/torch_reference.py's graph -> PyTorch), back
    into graphrt through from_torch."""
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    torch_reference = pytest.importorskip("torch_reference")
    from seed_models import seed_models  # noqa: PLC0415

    models = {m.name: m for m in seed_models()}
    if name not in models:
        pytest.skip(f"{name} needs ../shared")
    graph = models[name].build()
    module = torch_reference.to_torch(graph).eval()
    shape = graph.specs[graph.inputs[0]].shape[1:]
    torch.manual_seed(0)
    imported = graphrt.from_torch(module, torch.randn(2, *shape))
    x = torch.randn(3, *shape)
    out = graphrt.compile(imported, batch_size=3, opt_level=3)(x.numpy())
    assert relative_error(out, _torch_output(module, x)) < 1e-4
