"""ONNX's own backend test runner (``onnx.backend.test.runner.Runner``) on ``graphrt.frontends.onnx.backend``,
for the ONNX op set graphrt converts, plus the light real-architecture models at every optimization
level and with random weights against onnxruntime.

Which tests run is explicit: :data:`INCLUDE` selects, per runner category, the cases of graphrt's
op set (on the cpu device); every selected case graphrt cannot run is listed, with its reason, in
``onnx_backend_exclusions.json`` and reported as a skip carrying that reason — nothing is dropped
silently, and ``test_exclusions_name_selected_cases`` fails on a stale entry.
``bench/onnx_conformance.py`` prints the counts.
"""
from __future__ import annotations

import json
import os
import re
import unittest
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import numpy_helper  # noqa: E402
from onnx.backend.test.runner import Runner  # noqa: E402

import graphrt  # noqa: E402
from graphrt.frontends.onnx import load_onnx  # noqa: E402
from graphrt.frontends.onnx.backend import GraphrtBackend  # noqa: E402
from graphrt.testing import relative_error  # noqa: E402

EXCLUSIONS_FILE = Path(__file__).with_name("onnx_backend_exclusions.json")
LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"

# ---- which runner cases cover graphrt's op set (names without the _cpu suffix) ------------------
INCLUDE = {
    "NodeModel": [
        r"test_(basic_)?conv_with", r"test_maxpool_", r"test_averagepool_", r"test_globalaveragepool",
        r"test_globalmaxpool", r"test_lrn", r"test_batchnorm_", r"test_gemm_", r"test_matmul_",
        r"test_add($|_)", r"test_mul($|_)", r"test_sum_", r"test_relu", r"test_leakyrelu",
        r"test_sigmoid", r"test_tanh", r"test_softmax_(axis|default|example|large|negative)",
        r"test_logsoftmax_", r"test_dropout_", r"test_identity", r"test_concat_", r"test_flatten_",
        r"test_reshape_", r"test_transpose_", r"test_unsqueeze", r"test_(constant|edge|reflect|wrap)_pad",
        r"test_constant$", r"test_constantofshape_", r"test_shape", r"test_gather_(\d|2d|negative)",
        r"test_slice", r"test_cast_",
        # issue 15: the ops computed at run time
        r"test_clip", r"test_reduce_(l1|l2|log_sum|log_sum_exp|max|mean|min|prod|sum|sum_square)_",
        r"test_hardswish", r"test_hardsigmoid", r"test_resize_", r"test_upsample_",
        r"test_layer_normalization_", r"test_erf", r"test_gelu_", r"test_elu", r"test_selu",
        r"test_prelu_", r"test_softplus", r"test_softsign", r"test_convtranspose", r"test_argmax_",
        r"test_argmin_", r"test_pow", r"test_sqrt", r"test_div", r"test_sub", r"test_where_",
        r"test_expand_", r"test_tile", r"test_equal", r"test_abs", r"test_exp($|_)", r"test_log$",
        r"test_max_", r"test_min_", r"test_castlike_"],
    "SimpleModel": [r"test_expand_shape_model"],
    "RealModel": [r"test_(bvlc_alexnet|densenet121|inception_v1|inception_v2|resnet50|shufflenet|"
                  r"squeezenet|vgg19|zfnet512)$"],
    "PyTorchConvertedModel": [
        r"test_(AvgPool|BatchNorm|ConstantPad2d|ZeroPad2d|ReflectionPad2d|ReplicationPad2d|Conv[123]d|"
        r"LeakyReLU|Linear|LogSoftmax|MaxPool|ReLU|Sigmoid|Softmax$|Tanh|log_softmax|softmax_|"
        r"ConvTranspose2d|ELU|PReLU|SELU|Softplus|Softsign)"],
    "PyTorchOperatorModel": [
        r"test_operator_(add_|addconstant|addmm|basic|concat2|conv$|flatten|index|maxpool|mm|"
        r"non_float_params|pad|params|permute2|symbolic_override_nested|view|clip|convtranspose|"
        r"exp|max|min|pow|reduced_|repeat|selu|sqrt)"],
}
SLOW_REAL = {"test_vgg19", "test_densenet121", "test_shufflenet"}  # several seconds each


def load_exclusions() -> dict[str, str]:
    """{test name: reason} from the data file (groups of names sharing one reason)."""
    data = json.loads(EXCLUSIONS_FILE.read_text(encoding="utf-8"))
    out = {}
    for group in data["groups"]:
        for name in group["tests"]:
            assert name not in out, f"{name} is excluded twice"
            out[name] = group["reason"]
    return out


def selected(category: str, name: str) -> bool:
    base = name[:-len("_cpu")] if name.endswith("_cpu") else None
    return base is not None and any(re.match(p, base) for p in INCLUDE.get(category, ()))


EXCLUDED = load_exclusions()
SELECTED: list[str] = []
CATEGORY: dict[str, str] = {}  # selected case -> runner category (NodeModel, RealModel, ...)


def _conformance_cases() -> dict:
    runner = Runner(GraphrtBackend, __name__)
    cases = {}
    for case_name, case in runner.test_cases.items():
        category = case_name[len("OnnxBackend"):-len("Test")]
        keep = {}
        for name in [n for n in vars(case) if n.startswith("test_")]:
            if not selected(category, name):
                continue
            func = getattr(case, name)
            base = name[:-len("_cpu")]
            SELECTED.append(base)
            CATEGORY[base] = category
            if base in EXCLUDED:
                func = unittest.skip(f"excluded: {EXCLUDED[base]}")(func)
            elif base in SLOW_REAL:
                func = pytest.mark.slow(func)
            keep[name] = func
        if keep:
            cases[case_name] = type(case_name, (unittest.TestCase,), {**keep, "__module__": __name__})
    return cases


globals().update(_conformance_cases())


@pytest.fixture(autouse=True, scope="module")
def onnx_home(tmp_path_factory):
    """The runner writes the light models' test data under ONNX_HOME: keep it out of ~/.onnx."""
    old = os.environ.get("ONNX_HOME")
    os.environ["ONNX_HOME"] = str(tmp_path_factory.mktemp("onnx_home"))
    yield
    if old is None:
        os.environ.pop("ONNX_HOME", None)
    else:
        os.environ["ONNX_HOME"] = old


def test_exclusions_name_selected_cases():
    stale = sorted(set(EXCLUDED) - set(SELECTED))
    assert not stale, f"exclusions that name no selected runner case: {stale}"
    assert all(reason.strip() for reason in EXCLUDED.values())


def test_named_cases_are_selected_and_not_excluded():
    for name in ("test_conv_with_strides_and_asymmetric_padding", "test_maxpool_2d_ceil",
                 "test_averagepool_2d_pads_count_include_pad", "test_lrn", "test_batchnorm_epsilon",
                 "test_gemm_all_attributes", "test_softmax_large_number", "test_reshape_negative_dim",
                 "test_concat_2d_axis_negative_1", "test_bvlc_alexnet", "test_Conv2d", "test_Linear"):
        assert name in SELECTED and name not in EXCLUDED, name


# ---- the light models: stored outputs at every level, random weights against onnxruntime ---------
LIGHT_MODELS = ["bvlc_alexnet", "inception_v1", "vgg19", "resnet50", "squeezenet", "densenet121"]
# light_squeezenet's stored softmax is decided by float32 rounding: its logits are ~9.5e9 (float32
# spacing 1024) and differ only by conv10's biases (|b| < 0.2), so the stored output is uniform exactly
# when every channel of the final 1x1 convolution sums in the same order — true of some BLAS kernels and
# not of others. Its stored output says which BLAS ran, not whether graphrt is right: squeezenet is
# compared with onnxruntime at the logits instead (test_squeezenet_logits_match_onnxruntime...).
STORED = [n for n in LIGHT_MODELS if n != "squeezenet"]


def _light(name: str, fast: str, marks=()):
    """One light model; all but ``fast`` are marked slow (several seconds to a minute each)."""
    return pytest.param(name, marks=[pytest.mark.slow] * (name != fast) + list(marks), id=name)


def _dummy_input(model) -> tuple[str, np.ndarray]:
    """The runner's input for the light models: arange over the declared shape, scaled to [0, 1)."""
    inits = {i.name for i in model.graph.initializer}
    inp = next(i for i in model.graph.input if i.name not in inits)
    shape = tuple(d.dim_value for d in inp.type.tensor_type.shape.dim)
    n = int(np.prod(shape))
    return inp.name, (np.arange(n).reshape(shape) / n).astype(np.float32)


@pytest.mark.parametrize("name", [_light(n, "bvlc_alexnet") for n in STORED])
def test_light_model_reproduces_stored_output_at_every_level(name):
    model = onnx.load(str(LIGHT / f"light_{name}.onnx"))
    graph = load_onnx(model)
    _, x = _dummy_input(model)
    expected = numpy_helper.to_array(onnx.load_tensor(str(LIGHT / f"light_{name}_output_0.pb")))
    for level in range(4):
        out = graphrt.compile(graph, batch_size=1, opt_level=level)(x)
        np.testing.assert_allclose(out, expected, rtol=1e-3, atol=1e-7, err_msg=f"opt_level {level}")


def test_squeezenet_logits_match_onnxruntime_at_every_level():
    """The stored weights and the runner's input; the logits (the global average pool before the
    softmax) made a second output of both graphrt's graph and onnxruntime's session."""
    model = onnx.load(str(LIGHT / "light_squeezenet.onnx"))
    softmax = model.graph.node[-1]
    assert softmax.op_type == "Softmax"
    logits = softmax.input[0]
    model.graph.output.append(onnx.helper.make_tensor_value_info(logits, onnx.TensorProto.FLOAT,
                                                                 [1, 1000, 1, 1]))
    input_name, x = _dummy_input(model)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = session.run([logits], {input_name: x})[0]
    assert np.abs(expected).max() > 1e9  # the ill-conditioned softmax the comment above describes
    graph = load_onnx(model)
    for level in range(4):
        out = graphrt.compile(graph, batch_size=1, opt_level=level)(x)
        err = relative_error(out[logits], expected)
        assert err < 1e-5, f"opt_level {level}: logits' relative error {err:.3g}"
        z = out[logits].astype(np.float64).reshape(-1)
        p = np.exp(z - z.max())
        assert relative_error(out[softmax.output[0]].reshape(-1), p / p.sum()) < 1e-6


def randomize_weights(model, seed: int = 0):
    """The model with every ConstantOfShape weight replaced by a seeded random initializer of a
    sensible scale: normal conv/fc weights of variance gain / fan_in (He's gain 2 for plain ReLU
    stacks, 1 where batch norm and residual sums would otherwise saturate the softmax), small
    biases and shifts, batch-norm scales and variances near 1."""
    rng = np.random.default_rng(seed)
    gain = 1.0 if any(n.op_type == "BatchNormalization" for n in model.graph.node) else 2.0
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    weights = []
    for node in model.graph.node:
        if node.op_type != "ConstantOfShape" or node.input[0] not in inits:
            out.graph.node.append(node)
            continue
        shape = tuple(int(d) for d in inits[node.input[0]])
        name = node.output[0]
        if len(shape) >= 2:
            value = rng.standard_normal(shape) * np.sqrt(gain / np.prod(shape[1:]))
        elif re.search(r"(var|riv|scale|_s_0|bn_w|_w_0)", name):
            value = rng.uniform(0.5, 1.5, shape)
        else:
            value = rng.standard_normal(shape) * 0.1
        weights.append(numpy_helper.from_array(value.astype(np.float32), name))
    out.graph.initializer.extend(weights)
    out.ir_version = max(out.ir_version, 4)  # IR 3 would list every initializer as a graph input
    return out


@pytest.mark.parametrize("name", [_light(n, "squeezenet") for n in LIGHT_MODELS])
def test_light_model_with_random_weights_matches_onnxruntime(name):
    model = randomize_weights(onnx.load(str(LIGHT / f"light_{name}.onnx")))
    input_name, _ = _dummy_input(model)
    graph = load_onnx(model)
    x = np.random.default_rng(1).standard_normal(graph.specs[graph.inputs[0]].concrete(2)).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    # the ONNX model declares batch 1: onnxruntime runs the two images one at a time
    expected = np.concatenate([session.run(None, {input_name: x[i:i + 1]})[0] for i in range(2)])
    for level in (0, 3):
        out = graphrt.compile(graph, batch_size=2, opt_level=level)(x)
        err = relative_error(out, expected)
        assert err < 1e-4, f"opt_level {level}: relative error {err:.3g}"
        assert np.ptp(expected) > 1e-3, "the random weights should give a non-uniform output"
