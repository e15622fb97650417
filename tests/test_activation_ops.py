"""The activations of ``graphrt.ops.activation`` (clip/ReLU6, elu, selu, gelu, erf, softplus,
softsign, exp, log, sqrt, abs, swish, hard_sigmoid, hard_swish, threshold) and ``unary_grad``:
against naive loops (``naive_ext.py``), their cpu kernels, central differences, PyTorch, fusion
into conv/dense epilogues and elementwise chains, and ONNX export through onnxruntime."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import graphrt
import naive_ext
from graphrt import Graph
from graphrt.ops.activation import DEFS
from naive import assert_close
from test_backward import check as check_gradient
from test_cpu_kernels import TUNINGS, check_kernel, tuned
from test_grad_ops import run, rng_of

DTYPES = st.sampled_from(["float32", "float64"])
TOL = {"float32": 1e-5, "float64": 1e-9}
OPS = sorted(DEFS)


def f32(lo, hi):
    return st.floats(float(np.float32(lo)), float(np.float32(hi)), width=32)


def draw_attrs(draw, op) -> dict:
    if op == "clip":
        return {"min": draw(f32(-2, 0)), "max": draw(f32(0.5, 6))}
    if op in ("elu", "selu"):
        return draw(st.just({}) | st.fixed_dictionaries({"alpha": f32(0.1, 2)}))
    if op == "gelu":
        return {"approximate": draw(st.sampled_from(["none", "tanh"]))}
    if op == "swish":
        return {"beta": draw(f32(0.5, 2))}
    if op == "hard_sigmoid":
        return draw(st.just({}) | st.fixed_dictionaries({"alpha": f32(0.1, 1), "beta": f32(0, 1)}))
    if op == "threshold":
        return {"threshold": draw(f32(-1, 1))}
    return {}


def draw_input(draw, rng, op, dtype, spread=3.0):
    rank = draw(st.integers(1, 4))
    shape = (draw(st.integers(1, 3)),) + tuple(draw(st.integers(1, 5)) for _ in range(rank - 1))
    x = rng.standard_normal(shape) * spread
    if op in ("log", "sqrt"):
        x = np.abs(x) + 0.1
    if op == "exp":
        x = np.clip(x, -30, 30)
    return x.astype(dtype)


@pytest.mark.parametrize("op", OPS)
@given(data=st.data())
def test_activation_against_its_naive_loop(op, data):
    rng, dtype = rng_of(data.draw), data.draw(DTYPES)
    x = draw_input(data.draw, rng, op, dtype)
    attrs = draw_attrs(data.draw, op)
    (y,), _ = run(op, [x], attrs, layout=data.draw(st.booleans()))
    assert y.dtype == x.dtype
    assert_close(y, naive_ext.activation(op, x, **attrs), TOL[dtype], what=f"{op} {attrs}")


@given(st.data())
def test_unary_grad_against_the_exact_derivative(data):
    op = data.draw(st.sampled_from([o for o in OPS if DEFS[o].differentiable]))
    rng, dtype = rng_of(data.draw), data.draw(DTYPES)
    x = draw_input(data.draw, rng, op, dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    attrs = draw_attrs(data.draw, op)
    (g,), _ = run("unary_grad", [dy, x], {"op": op, "params": attrs}, batched=(0, 1))
    want = np.asarray(dy, np.float64) * naive_ext.derivative(op, x, **attrs)
    assert_close(g, want, TOL[dtype] * 10, what=f"unary_grad {op} {attrs}")


@pytest.mark.parametrize("op", OPS)
@given(data=st.data())
def test_activation_cpu_kernel(op, data):
    rng, dtype = rng_of(data.draw), data.draw(DTYPES)
    x = draw_input(data.draw, rng, op, dtype)
    with tuned(**data.draw(TUNINGS)):
        check_kernel(op, [x], attrs=draw_attrs(data.draw, op), tol=TOL[dtype],
                     inplace=data.draw(st.booleans()))


@given(st.data())
def test_elementwise_chain_of_activations_cpu_kernel(data):
    rng = rng_of(data.draw)
    steps = [(op, draw_attrs(data.draw, op))
             for op in data.draw(st.lists(st.sampled_from(["clip", "gelu", "swish", "hard_swish",
                                                           "elu", "softplus", "relu", "tanh"]),
                                          min_size=1, max_size=4))]
    x = rng.standard_normal((2, 3, 4)).astype("float32")
    (y,), _ = run("elementwise_chain", [x], {"steps": steps})
    want = x.astype(np.float64)
    for op, attrs in steps:
        want = naive_ext.activation(op, want, **attrs) if op in DEFS else \
            {"relu": np.maximum, "tanh": lambda v, _: np.tanh(v)}[op](want, 0)
    assert_close(y, want, 1e-5)
    with tuned(**data.draw(TUNINGS)):
        check_kernel("elementwise_chain", [x], attrs={"steps": steps}, tol=1e-5)


KINKS = {"clip": lambda a: [a["min"], a["max"]], "abs": lambda a: [0.0],
         "elu": lambda a: [0.0], "selu": lambda a: [0.0], "hard_swish": lambda a: [-3.0, 3.0],
         "hard_sigmoid": lambda a: [(0 - a["beta"]) / a["alpha"], (1 - a["beta"]) / a["alpha"]]}


@pytest.mark.parametrize("op", [o for o in OPS if DEFS[o].differentiable])
@settings(max_examples=10)
@given(data=st.data())
def test_activation_backward_against_differences(op, data):
    rng = rng_of(data.draw)
    x = draw_input(data.draw, rng, op, "float64", spread=2.0)
    attrs = draw_attrs(data.draw, op)
    full = graphrt.ops.get_op(op).normalize_attrs(dict(attrs))
    for k in KINKS.get(op, lambda a: [])(full):
        assume(np.abs(x - k).min() > 1e-3)
    check_gradient(op, [x], attrs)


TORCH = {
    "clip": ("clip", {"min": -1.0, "max": 6.0}, lambda F, t: F.hardtanh(t, -1.0, 6.0)),
    "elu": ("elu", {"alpha": 0.5}, lambda F, t: F.elu(t, 0.5)),
    "selu": ("selu", {}, lambda F, t: F.selu(t)),
    "gelu": ("gelu", {}, lambda F, t: F.gelu(t)),
    "gelu_tanh": ("gelu", {"approximate": "tanh"}, lambda F, t: F.gelu(t, approximate="tanh")),
    "softplus": ("softplus", {}, lambda F, t: F.softplus(t)),
    "softsign": ("softsign", {}, lambda F, t: F.softsign(t)),
    "swish": ("swish", {}, lambda F, t: F.silu(t)),
    "hard_sigmoid": ("hard_sigmoid", {"alpha": 1 / 6, "beta": 0.5}, lambda F, t: F.hardsigmoid(t)),
    "hard_swish": ("hard_swish", {}, lambda F, t: F.hardswish(t)),
    "erf": ("erf", {}, lambda F, t: __import__("torch").erf(t)),
}


@pytest.mark.parametrize("case", sorted(TORCH))
def test_activation_and_gradient_match_pytorch(case):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    op, attrs, fn = TORCH[case]
    x = np.random.default_rng(1).standard_normal((3, 4, 5)) * 4
    x[np.abs(np.abs(x) - 3) < 1e-3] += 0.01  # hard_swish's kinks
    dy = np.random.default_rng(2).standard_normal(x.shape)
    t = torch.tensor(x, requires_grad=True)
    want = fn(F, t)
    want.backward(torch.tensor(dy))
    (y,), _ = run(op, [x], attrs)
    assert_close(y, want.detach().numpy(), 1e-12)
    (g,), _ = run("unary_grad", [dy, x], {"op": op, "params": attrs}, batched=(0, 1))
    assert_close(g, t.grad.numpy(), 1e-7)  # PyTorch's hardsigmoid backward uses float32 1/6


def _conv_then(op, attrs, dense=False):
    rng = np.random.default_rng(3)
    g = Graph("t")
    if dense:
        x = g.add_input("x", (None, 6))
        w = g.add_param("w", rng.standard_normal((4, 6)).astype(np.float32))
        y = g.add_node("dense", [x, w, g.add_param("b", rng.standard_normal(4).astype(np.float32))])
    else:
        x = g.add_input("x", (None, 3, 6, 6))
        w = g.add_param("w", rng.standard_normal((4, 3, 3, 3)).astype(np.float32) * 0.5)
        y = g.add_node("conv2d", [x, w], attrs={"pads": 1})
    g.set_outputs([g.add_node(op, [y], attrs=attrs)])
    return g


@pytest.mark.parametrize("op", ["clip", "hard_swish", "gelu", "swish", "elu", "hard_sigmoid"])
@pytest.mark.parametrize("dense", [False, True])
def test_activations_fuse_into_conv_and_dense_epilogues(op, dense):
    attrs = {"clip": {"min": 0.0, "max": 6.0}, "gelu": {"approximate": "tanh"}}.get(op, {})
    g = _conv_then(op, attrs, dense)
    x = np.random.default_rng(4).standard_normal((2,) + g.specs["x"].shape[1:]).astype(np.float32)
    want = graphrt.run_reference(g, x)
    exe = graphrt.compile(g, device="cpu", batch_size=2, opt_level=3)
    fused = [n for n in exe.graph.nodes if n.op in ("conv2d", "dense")]
    assert len(fused) == 1 and fused[0].attrs["activation"] == op
    assert dict(fused[0].attrs["activation_params"]) == graphrt.ops.get_op(op).normalize_attrs(attrs)
    assert not any(n.op == op for n in exe.graph.nodes)
    assert_close(exe(x), want, 1e-5)


@pytest.mark.parametrize("op", OPS)
def test_activation_exports_to_onnx(op):
    ort = pytest.importorskip("onnxruntime")
    attrs = {"clip": {"min": 0.0, "max": 6.0}, "gelu": {"approximate": "tanh"},
             "swish": {"beta": 1.5}, "threshold": {"threshold": 0.25}}.get(op, {})
    g = Graph("t")
    x = g.add_input("x", (None, 3, 4))
    g.set_outputs([g.add_node(op, [x], attrs=attrs)])
    xv = np.random.default_rng(5).standard_normal((2, 3, 4)).astype(np.float32)
    if op in ("log", "sqrt"):
        xv = np.abs(xv) + 0.1
    model = graphrt.export_onnx(g)
    got = ort.InferenceSession(model.SerializeToString()).run(None, {"x": xv})[0]
    assert_close(got, graphrt.run_reference(g, xv), 1e-5)
    # ... and as a fused conv epilogue
    if DEFS[op].differentiable:
        g2 = _conv_then(op, attrs)
        x2 = np.random.default_rng(6).standard_normal((2, 3, 6, 6)).astype(np.float32)
        if op in ("log", "sqrt"):
            return
        opt = graphrt.compile(g2, device="cpu", batch_size=2, opt_level=3).graph
        model = graphrt.export_onnx(opt)
        inp = model.graph.input[0].name
        got = ort.InferenceSession(model.SerializeToString()).run(None, {inp: x2})[0]
        assert_close(got, graphrt.run_reference(g2, x2), 1e-5)


def test_activation_derivatives_cover_every_differentiable_activation():
    assert {o for o in OPS if DEFS[o].differentiable} == set(OPS) - {"threshold"}
    assert math.isclose(naive_ext.activation("gelu", np.array([1.0]))[0], 0.8413447460685429)
