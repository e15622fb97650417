"""The cuda device's elementwise kernels beyond add/mul/relu/tanh/sigmoid/scale against the cpu
device (on the CUDA stand-in of ``tools/cuda_emulator`` in CI, a real GPU where there is one): the
activations of :mod:`graphrt.ops.activation` as steps of ``ew_unary`` (alone and fused into an
``elementwise_chain``), the broadcast ops of :mod:`graphrt.ops.binary` (``ew_nary``,
``ew_compare``, ``ew_where``) on hypothesis-drawn broadcast shapes, their gradients
(``unary_grad``, ``binary_grad``), and a training step through them with nothing on the host.
Float32 and float64; relative error (DESIGN.md) below 1e-5.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import graphrt
from graphrt import Graph
from graphrt.devices.cuda.bind.elementwise import COMPARE_CODES, NARY_CODES, UNARY_CODES

from cuda_cases import DEVICES, compare_with_cpu, param
# _device_kind: the autouse fixture that installs the stand-in for kind "stand_in"
from test_cuda_training import (_assert_same_loss, _assert_same_parameters, _batches,  # noqa: F401
                                _device_kind, _trainers)

# (op, attrs): every activation, with non-default attributes where it has them
ACTIVATIONS = [
    ("clip", {"min": -0.5, "max": 0.75}), ("clip", {"max": 6.0}), ("elu", {}),
    ("elu", {"alpha": 0.3}), ("selu", {}), ("gelu", {}), ("gelu", {"approximate": "tanh"}),
    ("erf", {}), ("softplus", {}), ("softsign", {}), ("exp", {}), ("log", {}), ("sqrt", {}),
    ("abs", {}), ("swish", {}), ("swish", {"beta": 1.7}), ("hard_sigmoid", {}),
    ("hard_sigmoid", {"alpha": 1 / 6}), ("hard_swish", {}), ("threshold", {"threshold": 0.25})]
POSITIVE = {"log", "sqrt"}  # ops whose input is drawn positive
BINARY = ["sub", "div", "pow", "maximum", "minimum", "prelu", "where"]
SETTINGS = settings(max_examples=10, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


def _ids(cases):
    return [f"{op}-{'-'.join(f'{k}={v}' for k, v in a.items())}" if a else op for op, a in cases]


def test_every_elementwise_op_has_a_code():
    assert set(UNARY_CODES) >= {op for op, _ in ACTIVATIONS}
    assert set(NARY_CODES) | set(COMPARE_CODES) | {"where"} >= set(BINARY)


def _on_the_device(g, feeds, kind, levels=(0,)):
    """The graph's outputs on the cuda device as on the cpu device, every node on the device."""
    exe = compare_with_cpu(g, feeds, kind, levels)
    assert exe.host_nodes == {}
    return exe


def _feed(rng, shape, dtype, op=None):
    x = rng.standard_normal(shape) * 2
    return (np.abs(x) + 0.1 if op in POSITIVE else x).astype(dtype)


# ---- activations -------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", DEVICES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("op,attrs", ACTIVATIONS, ids=_ids(ACTIVATIONS))
def test_activations_and_their_gradients_match_the_cpu_device(op, attrs, dtype, kind):
    """``op(x)`` and ``unary_grad(dy, x)`` of it, from a strided (transposed) input."""
    rng = np.random.default_rng(len(op))
    g = Graph(op)
    x = g.add_input("x", (None, 4, 5), dtype)
    dy = g.add_input("dy", (None, 5, 4), dtype)
    xt = g.add_node("transpose", [x], attrs={"perm": (0, 2, 1)})
    y = g.add_node(op, [xt], attrs=attrs)
    dx = g.add_node("unary_grad", [dy, xt], attrs={"op": op, "params": tuple(attrs.items())})
    g.set_outputs([y, dx])
    feeds = {"x": _feed(rng, (3, 4, 5), dtype, op), "dy": _feed(rng, (3, 5, 4), dtype)}
    _on_the_device(g.verify(), feeds, kind)


@pytest.mark.parametrize("kind", DEVICES)
def test_a_chain_of_activations_fuses_into_one_launch(kind):
    g = Graph("chain")
    y = g.add_input("x", (None, 3, 7))
    for op, attrs in [("gelu", {}), ("swish", {"beta": 0.5}), ("softplus", {}), ("log", {}),
                      ("clip", {"min": -1.0, "max": 1.0}), ("hard_swish", {}), ("selu", {})]:
        y = g.add_node(op, [y], attrs=attrs)
    g.set_outputs([y])
    feeds = {"x": _feed(np.random.default_rng(0), (2, 3, 7), "float32")}
    ops = {n.op for n in _on_the_device(g.verify(), feeds, kind, (0, 3)).graph.nodes}
    assert "elementwise_chain" in ops and not ops & set(UNARY_CODES)


EPILOGUES = [("gelu", {}), ("clip", {"min": -0.5, "max": 0.75}), ("selu", {}),
             ("hard_sigmoid", {"alpha": 0.3, "beta": 0.4}), ("swish", {"beta": 1.5}),
             ("relu", {"negative_slope": 0.1})]


@pytest.mark.parametrize("kind", DEVICES)
@pytest.mark.parametrize("gemm", ["blas", "kernel"])
@pytest.mark.parametrize("op,attrs", EPILOGUES, ids=_ids(EPILOGUES))
def test_activations_fused_into_the_gemm_epilogue(op, attrs, gemm, kind):
    """conv2d -> op and dense -> op fuse (level 2 on) into the GEMM's epilogue: ``bias_act``
    after cuBLAS, or our ``gemm`` kernel."""
    rng = np.random.default_rng(2)
    g = Graph(op)
    x = g.add_input("x", (None, 3, 5, 5))
    y = g.add_node("conv2d", [x, param(g, rng, "w", (4, 3, 3, 3)), param(g, rng, "b", (4,))],
                   attrs={"pads": 1})
    y = g.add_node("flatten", [g.add_node(op, [y], attrs=attrs)])
    y = g.add_node("dense", [y, param(g, rng, "w2", (6, 100)), param(g, rng, "b2", (6,))])
    g.set_outputs([g.add_node(op, [y], attrs=attrs)])
    feeds = {"x": _feed(rng, (2, 3, 5, 5), "float32")}
    exe = compare_with_cpu(g.verify(), feeds, kind, levels=(3,), gemm=gemm, graphs=False)
    assert {n.op for n in exe.graph.nodes} & {"conv2d", "dense", op} == {"conv2d", "dense"}
    assert exe.host_nodes == {}


# ---- broadcast binary ops ----------------------------------------------------------------------
@st.composite
def broadcast_shapes(draw, count: int):
    """An output shape (without the batch) and ``count`` shapes that broadcast to it: each axis
    kept or 1, the first input batched (None) and the others parameters, which may drop leading
    axes."""
    out = draw(st.lists(st.integers(1, 4), min_size=1, max_size=4))
    shapes = [tuple(draw(st.sampled_from([n, 1])) for n in out) for _ in range(count)]
    return tuple(out), [shapes[0]] + [s[draw(st.integers(0, len(s))):] for s in shapes[1:]]


def _operands(op, rng, shapes, dtype):
    """Inputs in each op's domain, half-integers so comparisons, maxima and minima hold ties."""
    xs = [np.round(rng.standard_normal(s) * 4) / 2 for s in shapes]
    if op == "div":
        xs[1] = np.where(xs[1] < 0, xs[1] - 0.5, xs[1] + 0.5)
    elif op == "pow":
        xs[0] = np.abs(xs[0]) + 0.5
    elif op == "where":
        xs[0] = (xs[0] > 0).astype(np.float64) * (rng.integers(0, 2) * 2 - 1)
    return [x.astype(dtype) for x in xs]


def _graph(op, shapes, xs, dtype, grads):
    """``op`` of the batched first operand and the others as parameters, and for each operand in
    ``grads`` its ``binary_grad`` given a batched dy."""
    g = Graph(op)
    names = [g.add_input("x0", (None,) + shapes[0], dtype)]
    names += [g.add_param(f"x{i}", x) for i, x in enumerate(xs[1:], 1)]
    y = g.add_node(op, names)
    outs = [y]
    if grads:
        dy = g.add_input("dy", (None,) + g.specs[y].shape[1:], dtype)
        outs += [g.add_node("binary_grad", [dy, *names], attrs={"op": op, "operand": k})
                 for k in grads]
    g.set_outputs(outs)
    return g.verify()


@pytest.mark.parametrize("kind", DEVICES)
@pytest.mark.parametrize("op", BINARY)
@SETTINGS
@given(data=st.data())
def test_binary_ops_and_their_gradients_match_the_cpu_device(op, kind, data):
    arity = 3 if op == "where" else data.draw(st.integers(2, 4)) if "imum" in op else 2
    _, shapes = data.draw(broadcast_shapes(arity))
    dtype = data.draw(st.sampled_from(["float32", "float64"]))
    rng = np.random.default_rng(data.draw(st.integers(0, 99)))
    batch = 2
    xs = _operands(op, rng, [(batch,) + shapes[0]] + shapes[1:], dtype)
    g = _graph(op, shapes, [xs[0][0]] + xs[1:], dtype, range(op == "where", arity))
    feeds = {"x0": xs[0], "dy": _feed(rng, (batch,) + g.specs["dy"].shape[1:], dtype)}
    _on_the_device(g, feeds, kind)


@pytest.mark.parametrize("kind", DEVICES)
@pytest.mark.parametrize("op", ["maximum", "minimum"])
def test_more_than_four_inputs(op, kind):
    """Six inputs: the forward op in two launches (the second continues from the output), the
    gradient (the kernel takes up to four inputs) on the host, named in the warning."""
    rng = np.random.default_rng(3)
    xs = _operands(op, rng, [(2, 3, 4)] + [(3, 1)] * 5, "float32")
    g = _graph(op, ((3, 4),) + ((3, 1),) * 5, [xs[0][0]] + xs[1:], "float32", [0, 5])
    feeds = {"x0": xs[0], "dy": _feed(rng, (2, 3, 4), "float32")}
    with pytest.warns(graphrt.FallbackWarning, match="binary_grad kernel takes up to 4"):
        exe = compare_with_cpu(g, feeds, kind, levels=(0,))
    assert {exe.graph.node(n).op for n in exe.host_nodes} == {"binary_grad"}


@pytest.mark.parametrize("kind", DEVICES)
@pytest.mark.parametrize("op", sorted(COMPARE_CODES))
@SETTINGS
@given(data=st.data())
def test_comparisons_into_bool_and_where_of_them(op, kind, data):
    """``where(op(a, b), a, b)``: the comparison's bool output read as the condition."""
    _, (sa, sb) = data.draw(broadcast_shapes(2))
    dtype = data.draw(st.sampled_from(["float32", "float64"]))
    rng = np.random.default_rng(data.draw(st.integers(0, 99)))
    a, b = _operands(op, rng, [(2,) + sa, sb], dtype)
    g = Graph(op)
    names = [g.add_input("a", (None,) + sa, dtype), g.add_param("b", b)]
    cond = g.add_node(op, names)
    g.set_outputs([cond, g.add_node("where", [cond, *names])])
    _on_the_device(g.verify(), {"a": a}, kind)


# ---- a training step ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind", DEVICES)
def test_training_through_the_elementwise_ops_runs_on_the_device(kind):
    """Activations and the binary ops between two dense layers' outputs (of one shape: a
    broadcast parameter's gradient needs reduce_like): forward and backward on the device,
    nothing on the host, losses and parameters as on the cpu device."""
    rng = np.random.default_rng(4)
    g = Graph("elementwise_net")
    x = g.add_input("x", (None, 6))
    h, s = (g.add_node("dense", [x, param(g, rng, f"w{k}", (8, 6)), param(g, rng, f"b{k}", (8,))])
            for k in (1, 2))
    p = g.add_node("prelu", [h, g.add_node("sigmoid", [s])])
    a = g.add_node("gelu", [p], attrs={"approximate": "tanh"})
    b = g.add_node("swish", [g.add_node("sub", [p, s])])
    m = g.add_node("maximum", [a, b, g.add_node("elu", [s])])
    d = g.add_node("add", [g.add_node("softplus", [s]), g.add_node("abs", [s])])  # >= log 2
    m = g.add_node("div", [m, d])
    m = g.add_node("where", [g.add_node("greater", [m, a]), m, g.add_node("hard_swish", [a])])
    m = g.add_node("minimum", [m, g.add_node("pow", [d, g.add_node("tanh", [h])])])
    g.set_outputs([g.add_node("log_softmax", [
        g.add_node("dense", [m, param(g, rng, "w3", (4, 8)), param(g, rng, "b3", (4,))])])])
    cpu, dev = _trainers(g.verify(), kind, 3)
    assert {"unary_grad", "binary_grad"} <= {n.op for n in dev.exe.graph.nodes}
    for x, labels in _batches(g, 3, 3, seed=1):
        _assert_same_loss(cpu.step(x, labels), dev.step(x, labels))
    _assert_same_parameters(cpu, dev)
