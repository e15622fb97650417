"""The backward rules of the ops added with the model-coverage work (issue 15) against
``torch.autograd`` in float64, in the style of ``test_backward_torch_ops.py`` (whose harness
``_compare`` this file reuses, and whose registry test counts the ops listed here): the forward
output and every input gradient the rule gives, relative error < 1e-10, shapes and attributes drawn
by hypothesis. The PyTorch side is ``bench/torch_reference_more.py``'s translation of each op
(written from the op's docstring with ``torch`` / ``torch.nn.functional``), so PyTorch's autograd,
not graphrt's rule, differentiates it.

Where PyTorch's op covers only part of graphrt's (``resize``'s coordinate modes, ``expand``'s
two-way broadcasting), the cases draw that part; the rest is checked against finite differences in
``test_spatial_index_ops.py``. :data:`NO_GRADIENT` holds the ops whose rule gives no gradient
(comparisons, ``arg_reduce``, ``threshold``, a cast to an integer): PyTorch's result carries no
gradient either, and the rule, asked for every float input with a cotangent on every float output,
returns none.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import naive_ext
from graphrt.ops import get_op
from naive import assert_close
from test_backward import FakeContext, OpCase, _channel_shape, away_from_zero, rng_of
from test_backward_torch_ops import _compare
from test_binary_reduce_ops import (MODES, broadcast_partner, draw_axes, layer_norm_cases, operands,
                                    reduce_input, shapes)
from test_spatial_index_ops import deconv_cases, slice_cases

BENCH = str(Path(__file__).resolve().parents[1] / "bench")


@pytest.fixture(scope="module")
def torch():
    torch = pytest.importorskip("torch")
    if BENCH not in sys.path:
        sys.path.append(BENCH)  # last: bench/seed_models.py must not hide examples/seed_models.py
    return torch


def translation(op):
    """The PyTorch expression of ``op``: torch_reference_more's, given the normalized attributes."""
    def expression(t, L, a):
        from torch_reference_more import OPS
        return OPS[op](get_op(op).normalize_attrs(dict(a)), L)
    return expression


# ---- the cases: op -> draw(data, rng) -> (args, attrs, batched, wrt, torch expression) -------------
def unary_case(op):
    def draw_case(data, rng):
        shape = _channel_shape(data)
        x = {"log": lambda: rng.uniform(0.1, 3.0, shape), "sqrt": lambda: rng.uniform(0.1, 3.0, shape),
             "exp": lambda: rng.standard_normal(shape) * 2}.get(op, lambda: away_from_zero(rng, shape))()
        return [x], {}, (0,), [0], translation(op)
    return draw_case


def binary_case(op):
    """Two operands, the second broadcast (batched or a parameter), as test_binary_reduce_ops."""
    def draw_case(data, rng):
        shape = shapes(data.draw, hi=3)
        other, batched = broadcast_partner(data.draw, shape)
        a, b = operands(op, rng, shape, other, "float64")
        return [a, b], {}, (0, 1) if batched else (0,), [0, 1], translation(op)
    return draw_case


def extreme_case(op):
    """``maximum``/``minimum`` of 1 to 3 operands with no ties (PyTorch splits a tie's gradient,
    graphrt gives it to the first operand)."""
    def draw_case(data, rng):
        shape = shapes(data.draw, hi=3)
        k = data.draw(st.integers(1, 3))
        values = (rng.permutation(k * int(np.prod(shape))) * 0.1).reshape((k,) + shape)
        return list(values), {}, tuple(range(k)), list(range(k)), translation(op)
    return draw_case


def case_where(data, rng):
    shape = shapes(data.draw, hi=3)
    other, batched = broadcast_partner(data.draw, shape)
    cond = rng.random(shape) < 0.5
    return ([cond, rng.standard_normal(shape), rng.standard_normal(other)], {}, (0, 1, 2) if batched
            else (0, 1), [1, 2], translation("where"))


def case_cast(data, rng):
    attrs = {"to": data.draw(st.sampled_from(["float32", "float64"]))}
    return [rng.standard_normal(_channel_shape(data))], attrs, (0,), [0], translation("cast")


def case_reduce(data, rng):
    mode = data.draw(st.sampled_from(MODES))
    shape = shapes(data.draw, 2, 3)
    x = reduce_input(rng, mode, shape, "float64")
    if mode in ("max", "min"):  # distinct: PyTorch's amax splits a tie's gradient
        x = (rng.permutation(int(np.prod(shape))) * 0.1 + 0.05).reshape(shape)
    attrs = {"mode": mode, "axes": draw_axes(data.draw, x.ndim, False),
             "keepdims": data.draw(st.booleans())}
    return [x], attrs, (0,), [0], translation("reduce")


def case_layer_norm(data, rng):
    x, params, attrs = data.draw(layer_norm_cases(st.just("float64")))
    args = [x, *params]
    return args, attrs, (0,), list(range(len(args))), translation("layer_norm")


def case_resize(data, rng):
    """The modes F.interpolate (and a gather, for the other nearest roundings) has: nearest
    asymmetric/half_pixel with each rounding, linear and cubic (a = -0.75) half_pixel and
    align_corners; the other coordinate modes are checked against differences only."""
    h, w, oh, ow = (data.draw(st.integers(1, 5)) for _ in range(4))
    mode = data.draw(st.sampled_from(["nearest", "linear", "cubic"]))
    attrs = {"sizes": (oh, ow), "mode": mode}
    if mode == "nearest":
        attrs["coordinate_transformation_mode"] = data.draw(st.sampled_from(["asymmetric", "half_pixel"]))
        attrs["nearest_mode"] = data.draw(st.sampled_from(["round_prefer_floor", "round_prefer_ceil",
                                                           "floor", "ceil"]))
    else:
        attrs["coordinate_transformation_mode"] = data.draw(st.sampled_from(["half_pixel",
                                                                             "align_corners"]))
    x = rng.standard_normal((data.draw(st.integers(1, 2)), data.draw(st.integers(1, 3)), h, w))
    return [x], attrs, (0,), [0], translation("resize")


def case_conv2d_transpose(data, rng):
    args, attrs = data.draw(deconv_cases(st.just("float64")))
    return args, attrs, (0,), list(range(len(args))), translation("conv2d_transpose")


def case_slice(data, rng):
    x, attrs = data.draw(slice_cases())
    assume(naive_ext.slice_(x, **attrs).size > 0)
    return [x], attrs, (0,), [0], translation("slice")


def case_tile(data, rng):
    x = rng.standard_normal(_channel_shape(data))
    attrs = {"repeats": (1,) + tuple(data.draw(st.integers(1, 3)) for _ in x.shape[1:])}
    return [x], attrs, (0,), [0], translation("tile")


def case_expand(data, rng):
    """Size-1 axes broadcast to a drawn size, -1 keeps an axis (the batch axis is written so)."""
    shape = _channel_shape(data)
    small = tuple(1 if data.draw(st.booleans()) else d for d in shape[1:])
    target = (-1,) + tuple(data.draw(st.integers(1, 3)) if d == 1 else data.draw(st.sampled_from([d, -1]))
                           for d in small)
    return [rng.standard_normal((shape[0],) + small)], {"shape": target}, (0,), [0], translation("expand")


def case_embedding(data, rng):
    rows, d = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 4))
    idx = rng.integers(0, rows, (data.draw(st.integers(1, 3)), data.draw(st.integers(1, 4))))
    idx = idx.astype(data.draw(st.sampled_from(["int64", "float64"])))  # Caffe's indices are floats
    return [idx, rng.standard_normal((rows, d))], {}, (0,), [1], translation("embedding")


CASES = {**{op: unary_case(op) for op in ("exp", "log", "sqrt", "abs")},
         **{op: binary_case(op) for op in ("sub", "div", "pow")},
         **{op: extreme_case(op) for op in ("maximum", "minimum")},
         "where": case_where, "cast": case_cast, "reduce": case_reduce, "layer_norm": case_layer_norm,
         "resize": case_resize, "conv2d_transpose": case_conv2d_transpose, "slice": case_slice,
         "tile": case_tile, "expand": case_expand, "embedding": case_embedding}


@pytest.mark.parametrize("op", sorted(CASES))
@settings(max_examples=20)
@given(data=st.data())
def test_backward_rule_matches_torch(torch, op, data):
    _compare(torch, op, CASES[op], data)


# ---- ops without a gradient -----------------------------------------------------------------------
def comparison(op):
    def draw_case(data, rng):
        shape = shapes(data.draw, hi=3)
        other, batched = broadcast_partner(data.draw, shape)
        a, b = np.round(rng.standard_normal(shape)), np.round(rng.standard_normal(other))  # ties too
        return [a, b], {}, (0, 1) if batched else (0,)
    return draw_case


def case_arg_reduce(data, rng):
    x = np.round(rng.standard_normal(shapes(data.draw, 1, 3)))
    attrs = {"mode": data.draw(st.sampled_from(["max", "min"])),
             "axis": data.draw(st.integers(-x.ndim, x.ndim - 1)),
             "keepdims": data.draw(st.booleans()), "select_last_index": data.draw(st.booleans())}
    return [x], attrs, (0,)


NO_GRADIENT = {**{op: comparison(op) for op in ("equal", "greater", "less", "greater_equal",
                                                 "less_equal")},
               "arg_reduce": case_arg_reduce,
               "threshold": lambda data, rng: ([away_from_zero(rng, _channel_shape(data))],
                                               {"threshold": data.draw(st.sampled_from([0.0, 0.5]))}, (0,)),
               "cast": lambda data, rng: ([rng.standard_normal(_channel_shape(data)) * 3],
                                          {"to": data.draw(st.sampled_from(["int64", "int32"]))}, (0,))}


def rule_gradients(case):
    """The rule's answer when every float input wants a gradient and every float output has one."""
    g = case.graph.copy()
    dys = [g.add_input(f"dy{k}", g.specs[t].shape, g.specs[t].dtype) if k in case.cots else None
           for k, t in enumerate(case.outputs)]
    ctx = FakeContext(g, [a.dtype.kind == "f" for a in case.args])
    return get_op(case.op).backward(ctx, g.node("node"), dys)


@pytest.mark.parametrize("op", sorted(NO_GRADIENT))
@settings(max_examples=10)
@given(data=st.data())
def test_no_gradient_where_torch_has_none(torch, op, data):
    args, attrs, batched = NO_GRADIENT[op](data, rng_of(data))
    case = OpCase(op, args, attrs, batched=batched)
    leaves = [torch.tensor(a, requires_grad=a.dtype.kind == "f") for a in case.args]
    want = translation(op)(torch, leaves, case.attrs)[0]
    got = case._run(case.graph)[case.outputs[0]]
    assert got.dtype == want.detach().numpy().dtype, f"{op} {attrs}: dtype"
    assert_close(got, want.detach().numpy(), 0, what=f"{op} {attrs}")
    assert not want.requires_grad, f"PyTorch differentiates {op} {attrs}"
    assert rule_gradients(case) == [None] * len(args), f"{op} {attrs}: the rule gives a gradient"
