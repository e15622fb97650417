"""Every differentiable op's backward rule against ``torch.autograd`` where PyTorch has the op, in
float64 (skipped without PyTorch): the forward output and every input gradient the rule gives,
relative error < 1e-10. ``test_backward_torch.py`` holds the cases with their own geometry
(convolution, pooling, LRN, training batch norm, the losses); this file holds the rest, one
PyTorch expression per op in :data:`CASES`. ``test_every_differentiable_op_is_compared_with_torch``
keeps the list complete: an op with a backward rule is compared here, in one of those files
(``test_backward_torch_more.py`` holds the ops added by the model-coverage work), or named in
:data:`NO_TORCH` with the reason.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graphrt.ops import all_ops
from naive import assert_close
from test_backward import NO_RULE_FAMILIES, OpCase, _channel_shape, away_from_zero, rng_of

TOL = 1e-10
ELSEWHERE = {"conv2d", "max_pool", "avg_pool", "lrn", "batch_norm_train", "softmax_cross_entropy",
             "nll_loss"}  # compared in test_backward_torch.py
NO_TORCH = {"accuracy": "piecewise constant: its rule gives no gradient (PyTorch's argmax has none)",
            "conv2d_split": "merged sibling convolutions, an op only graphrt's optimizer makes: its rule "
                            "is conv2d's (compared with PyTorch) on the outputs concatenated, checked "
                            "against finite differences in test_backward.py",
            "all_reduce": "a collective: tests/test_ops.py checks its rule (the same reduction of the "
                          "output gradients), tests/test_distributed.py the training it serves"}
# forward and gradient against torch.autograd in tests/test_activation_ops.py and prelu in
# tests/test_binary_reduce_ops.py
ELSEWHERE |= {"clip", "elu", "erf", "gelu", "hard_sigmoid", "hard_swish", "selu", "softplus", "softsign",
              "swish", "prelu"}
# the ops added by the model-coverage work: tests/test_backward_torch_more.py (its CASES and its
# NO_GRADIENT, the ops whose rule gives no gradient, as PyTorch's give none)


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def _act(torch, z, attrs):
    kind = attrs.get("activation", "none")
    if kind == "relu":
        return torch.nn.functional.leaky_relu(z, attrs.get("negative_slope", 0.0))
    return {"tanh": torch.tanh, "sigmoid": torch.sigmoid}.get(kind, lambda v: v)(z)


def _per_channel(v, ndim):
    return v.reshape((1, -1) + (1,) * (ndim - 2))


# ---- the cases: op -> draw(data, rng) -> (args, attrs, batched, wrt, torch expression) -------------
def case_dense(data, rng):
    n, i, o = (data.draw(st.integers(1, 4)) for _ in range(3))
    attrs = {"activation": data.draw(st.sampled_from(["none", "relu", "tanh", "sigmoid"]))}
    if attrs["activation"] == "relu":
        attrs["negative_slope"] = data.draw(st.sampled_from([0.0, 0.2]))
    args = [rng.standard_normal((n, i)), rng.standard_normal((o, i)), rng.standard_normal(o)]
    if attrs["activation"] == "relu":  # keep the pre-activation off the kink
        z = args[0] @ args[1].T + args[2]
        args[2] = args[2] + np.where(np.abs(z).min(0) < 0.05, 0.1, 0.0)
    return args, attrs, (0,), [0, 1, 2], lambda t, L, a: [_act(t, t.nn.functional.linear(*L), a)]


UNARY = {
    "relu": (lambda d: {"negative_slope": d.draw(st.sampled_from([0.0, 0.2, -0.5, 1.5]))},
             lambda t, L, a: [t.nn.functional.leaky_relu(L[0], a["negative_slope"])]),
    "tanh": (lambda d: {}, lambda t, L, a: [t.tanh(L[0])]),
    "sigmoid": (lambda d: {}, lambda t, L, a: [t.sigmoid(L[0])]),
    "identity": (lambda d: {}, lambda t, L, a: [L[0] * 1]),
    "copy_to_device": (lambda d: {}, lambda t, L, a: [L[0] * 1]),
    "copy_to_host": (lambda d: {}, lambda t, L, a: [L[0] * 1]),
    "dropout": (lambda d: {"rate": 0.3},  # inference: the identity, as F.dropout(training=False)
                lambda t, L, a: [t.nn.functional.dropout(L[0], a["rate"], training=False)]),
    "scale": (lambda d: {"power": d.draw(st.sampled_from([1.0, 2.0, 0.5, -0.75, 0.0])),
                         "scale": d.draw(st.sampled_from([0.5, 2.0])), "shift": 1.0},
              lambda t, L, a: [t.pow(a["shift"] + a["scale"] * L[0], a["power"])]),
}


def unary_case(op):
    def draw_case(data, rng):
        attrs = UNARY[op][0](data)
        shape = _channel_shape(data)
        x = rng.uniform(0, 1, shape) if op == "scale" else away_from_zero(rng, shape)
        return [x], attrs, (0,), [0], UNARY[op][1]
    return draw_case


def case_add(data, rng):
    k = data.draw(st.integers(1, 3))
    shape = _channel_shape(data)
    coeffs = [data.draw(st.sampled_from([1.0, -0.5, 2.0])) for _ in range(k)]
    return ([rng.standard_normal(shape) for _ in range(k)], {"coeffs": coeffs}, tuple(range(k)),
            list(range(k)), lambda t, L, a: [sum(c * v for c, v in zip(a["coeffs"], L))])


def case_mul(data, rng):
    """A batched (N, C, H) operand times an unbatched (C, 1) one: broadcasting's gradient sums."""
    n, c, h = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 3)), data.draw(st.integers(2, 3))
    args = [rng.standard_normal((n, c, h)), rng.standard_normal((c, 1))]
    return args, {}, (0,), [0, 1], lambda t, L, a: [L[0] * L[1]]


def chain_torch(t, L, a):
    v = L[0]
    for op, attrs in a["steps"]:
        v = UNARY[op][1](t, [v], attrs)[0]
    return [v]


def case_elementwise_chain(data, rng):
    steps = data.draw(st.lists(st.sampled_from([("tanh", {}), ("sigmoid", {}), ("identity", {}),
                                                ("scale", {"power": 2.0, "scale": 0.5, "shift": 1.0}),
                                                ("relu", {"negative_slope": 0.3})]), min_size=1, max_size=3))
    x = rng.uniform(0.1, 1.0, _channel_shape(data))  # positive through every step: no relu kink
    return [x], {"steps": steps}, (0,), [0], chain_torch


def case_softmax(op):
    def draw_case(data, rng):
        shape = _channel_shape(data)
        axis = data.draw(st.integers(-len(shape), len(shape) - 1))
        fn = "softmax" if op == "softmax" else "log_softmax"
        return ([rng.standard_normal(shape) * 2], {"axis": axis}, (0,), [0],
                lambda t, L, a: [getattr(t, fn)(L[0], a["axis"])])
    return draw_case


def case_concat(data, rng):
    shape = list(_channel_shape(data))
    axis = data.draw(st.integers(1, len(shape) - 1))
    args = []
    for _ in range(data.draw(st.integers(1, 3))):
        shape[axis] = data.draw(st.integers(1, 3))
        args.append(rng.standard_normal(shape))
    return (args, {"axis": axis}, tuple(range(len(args))), list(range(len(args))),
            lambda t, L, a: [t.cat(L, a["axis"])])


def case_split(data, rng):
    shape = _channel_shape(data)
    sizes = [data.draw(st.integers(1, 2)) for _ in range(data.draw(st.integers(1, 3)))]
    x = rng.standard_normal((shape[0], sum(sizes)) + shape[2:])
    return [x], {"axis": 1, "sizes": sizes}, (0,), [0], lambda t, L, a: list(t.split(L[0], a["sizes"], 1))


def _shape(data):
    return (data.draw(st.integers(1, 2)),) + tuple(data.draw(st.integers(1, 4))
                                                   for _ in range(data.draw(st.integers(2, 3))))


def case_flatten(data, rng):
    shape = _shape(data)
    axis = data.draw(st.integers(1, len(shape)))
    return ([rng.standard_normal(shape)], {"axis": axis}, (0,), [0],
            lambda t, L, a: [L[0].reshape(tuple(shape[:axis]) + (-1,))])


def case_reshape(data, rng):
    shape = _shape(data)
    return ([rng.standard_normal(shape)], {"shape": [-1]}, (0,), [0],
            lambda t, L, a: [L[0].reshape(shape[0], -1)])


def case_transpose(data, rng):
    shape = (data.draw(st.integers(1, 2)),) + tuple(data.draw(st.integers(1, 4)) for _ in range(3))
    perm = [0] + data.draw(st.sampled_from([[2, 3, 1], [3, 1, 2], [1, 3, 2], [3, 2, 1]]))  # cycles too
    return [rng.standard_normal(shape)], {"perm": perm}, (0,), [0], lambda t, L, a: [L[0].permute(a["perm"])]


def case_zero_pad(data, rng):
    """Caffe/Torch padding (top, bottom, left, right); negative values crop, as F.pad's do."""
    shape = (data.draw(st.integers(1, 2)), data.draw(st.integers(1, 3)), data.draw(st.integers(1, 4)),
             data.draw(st.integers(1, 4)))
    pads = [data.draw(st.integers(-2, 2)) for _ in range(4)]
    # F.pad crops the input itself before it pads: each axis keeps at least one input element
    # (graphrt also pads first and crops the padding, e.g. (2, -2) on a width of 1; torch refuses)
    pads[0], pads[2] = max(pads[0], 1 - shape[2]), max(pads[2], 1 - shape[3])
    pads[1] = max(pads[1], 1 - shape[2] - min(pads[0], 0))
    pads[3] = max(pads[3], 1 - shape[3] - min(pads[2], 0))
    top, bottom, left, right = pads
    return ([rng.standard_normal(shape)], {"pads": pads}, (0,), [0],
            lambda t, L, a: [t.nn.functional.pad(L[0], (left, right, top, bottom))])


def case_pad(data, rng):
    shape = (data.draw(st.integers(1, 2)),) + tuple(data.draw(st.integers(1, 3)) for _ in range(2))
    begins = [0] + [data.draw(st.integers(-1, 2)) for _ in range(2)]
    ends = [0] + [data.draw(st.integers(-1, 2)) for _ in range(2)]
    for i in (1, 2):
        begins[i] = max(begins[i], 1 - shape[i] - ends[i])
    value = data.draw(st.sampled_from([0.0, 1.5]))
    torch_pads = (begins[2], ends[2], begins[1], ends[1])  # F.pad: last axis first
    return ([rng.standard_normal(shape)], {"pads": begins + ends, "value": value}, (0,), [0],
            lambda t, L, a: [t.nn.functional.pad(L[0], torch_pads, value=a["value"])])


def case_matmul(data, rng):
    n = data.draw(st.integers(1, 2))
    a_shape, b_shape = data.draw(st.sampled_from([((n, 3, 4), (4, 2)), ((n, 2, 4), (4,)),
                                                  ((n, 2, 2, 4), (2, 4, 3))]))
    return ([rng.standard_normal(a_shape), rng.standard_normal(b_shape)], {}, (0,), [0, 1],
            lambda t, L, a: [t.matmul(L[0], L[1])])


def case_channel_affine(data, rng):
    shape = _channel_shape(data)
    c = shape[1]
    args = [rng.standard_normal(shape), rng.standard_normal(c), rng.standard_normal(c)]
    return (args, {}, (0,), [0, 1, 2],
            lambda t, L, a: [L[0] * _per_channel(L[1], L[0].ndim) + _per_channel(L[2], L[0].ndim)])


def case_batch_norm(data, rng):
    """Inference batch norm: F.batch_norm(training=False); gradients of x, gamma and beta."""
    shape = _channel_shape(data)
    c = shape[1]
    args = [rng.standard_normal(shape), rng.standard_normal(c), rng.uniform(0.5, 2.0, c),
            rng.standard_normal(c), rng.standard_normal(c)]
    eps = data.draw(st.sampled_from([1e-5, 1e-3]))
    return (args, {"eps": eps}, (0,), [0, 3, 4],
            lambda t, L, a: [t.nn.functional.batch_norm(L[0], L[1].detach(), L[2].detach(), L[3], L[4],
                                                        training=False, eps=a["eps"])])


def case_dropout_train(data, rng):
    """Given the mask the op drew (its second output), PyTorch's x * mask: PyTorch's own dropout
    draws other random numbers, so the mask is shared and the rule's gradient compared."""
    x = rng.standard_normal(_channel_shape(data))
    attrs = {"rate": data.draw(st.sampled_from([0.25, 0.5])), "seed": data.draw(st.integers(0, 9))}
    counter = np.array([data.draw(st.integers(0, 1000))], np.int64)
    probe = OpCase("dropout_train", [x, counter], attrs)
    mask = probe._run(probe.graph)[probe.outputs[1]]
    return [x, counter], attrs, (0,), [0], lambda t, L, a: [L[0] * t.tensor(mask)]


case_dropout_train.cot = [0]  # the mask output carries no gradient


def case_global_pool(op):
    def draw_case(data, rng):
        x = rng.permutation(np.arange(2 * 3 * 3 * 4, dtype=np.float64)).reshape(2, 3, 3, 4) * 0.1
        fn = (lambda t, L, a: [L[0].mean((2, 3), keepdim=True)]) if op == "avg_pool" else \
             (lambda t, L, a: [L[0].amax((2, 3), keepdim=True)])
        return [x], {"global_pool": True}, (0,), [0], fn
    return draw_case


CASES = {"dense": case_dense, **{op: unary_case(op) for op in UNARY}, "add": case_add, "mul": case_mul,
         "elementwise_chain": case_elementwise_chain, "softmax": case_softmax("softmax"),
         "log_softmax": case_softmax("log_softmax"), "concat": case_concat, "split": case_split,
         "flatten": case_flatten, "reshape": case_reshape, "transpose": case_transpose,
         "zero_pad": case_zero_pad, "pad": case_pad, "matmul": case_matmul,
         "channel_affine": case_channel_affine, "batch_norm": case_batch_norm,
         "dropout_train": case_dropout_train}
GLOBAL_POOLS = {"avg_pool": case_global_pool("avg_pool"), "max_pool": case_global_pool("max_pool")}


def _compare(torch, op, draw_case, data):
    args, attrs, batched, wrt, expression = draw_case(data, rng_of(data))
    case = OpCase(op, args, attrs, batched=batched, cot=getattr(draw_case, "cot", None))
    got = case.rule(wrt)
    leaves = [torch.tensor(a, dtype=torch.float64, requires_grad=i in wrt) if a.dtype.kind == "f"
              else torch.tensor(a) for i, a in enumerate(case.args)]
    outs = expression(torch, leaves, case.attrs)
    values = case._run(case.graph)
    total = sum((outs[k] * torch.tensor(c)).sum() for k, c in case.cots.items())
    total.backward()
    for k in case.cots:
        assert_close(values[case.outputs[k]], outs[k].detach().numpy(), TOL, what=f"{op} {attrs} output {k}")
    for i in wrt:
        assert_close(got[i], leaves[i].grad.numpy(), TOL, what=f"{op} {attrs} d/d(input {i})")


@pytest.mark.parametrize("op", sorted(CASES))
@settings(max_examples=10)
@given(data=st.data())
def test_backward_rule_matches_torch(torch, op, data):
    _compare(torch, op, CASES[op], data)


@pytest.mark.parametrize("op", sorted(GLOBAL_POOLS))
@settings(max_examples=2)
@given(data=st.data())
def test_global_pooling_backward_matches_torch(torch, op, data):
    _compare(torch, op, GLOBAL_POOLS[op], data)


def test_every_differentiable_op_is_compared_with_torch():
    differentiable = {name for name, op in all_ops().items()
                      if op.family not in NO_RULE_FAMILIES and op.backward is not None}
    from test_backward_torch_more import CASES as MORE, NO_GRADIENT
    compared = set(CASES) | ELSEWHERE | set(MORE) | set(NO_GRADIENT)
    missing = differentiable - compared - set(NO_TORCH)
    assert missing == set(), "ops with a rule and no PyTorch check"
    assert (compared | set(NO_TORCH)) - differentiable == set(), "listed ops that have no rule"
