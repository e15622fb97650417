"""Backward rules against ``torch.autograd`` in float64 (skipped without PyTorch).

Each test runs the op and its rule's gradient ops through the harness of ``test_backward`` and the
same computation through PyTorch, then compares the forward outputs and every input gradient:
convolution (groups, dilation, asymmetric padding through ``F.pad``, fused epilogues), max pooling
with ties (both route to the first maximal element), average pooling (ceil mode,
``count_include_pad``), LRN, training batch norm (outputs, PyTorch's running-statistics update with
momentum 0.1 and unbiased variance, gradients) and the two losses.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from naive import assert_close
from test_backward import OpCase, conv_cases, epilogue, rng_of

TOL = 1e-10


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def tensors(torch, *arrays):
    return [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in arrays]


def compare(case: OpCase, got: dict, y_torch, leaves, what: str):
    """The op's forward output 0 and the gradients of the inputs ``got`` holds against torch's."""
    y = case._run(case.graph)[case.outputs[0]]
    assert_close(y, y_torch.detach().numpy(), TOL, what=f"{what} forward")
    for i, leaf in leaves.items():
        assert_close(got[i], leaf.grad.numpy(), TOL, what=f"{what} d/d(input {i})")


def backward(torch, y, cot):
    (y * torch.tensor(cot)).sum().backward()


def activation(torch, z, attrs):
    kind = attrs.get("activation", "none")
    if kind == "relu":
        return torch.nn.functional.leaky_relu(z, attrs.get("negative_slope", 0.0))
    return {"tanh": torch.tanh, "sigmoid": torch.sigmoid}.get(kind, lambda v: v)(z)


@settings(max_examples=25)
@given(conv_cases(), st.data())
def test_conv2d_matches_torch(torch, case, data):
    F = torch.nn.functional
    args, attrs = case
    attrs.update(epilogue(data))
    op = OpCase("conv2d", args, attrs)
    got = op.rule(list(range(len(args))))
    leaves = tensors(torch, *args)
    t, b, l, r = attrs["pads"]
    z = F.conv2d(F.pad(leaves[0], (l, r, t, b)), leaves[1], leaves[2] if len(args) == 3 else None,
                 attrs["stride"], 0, attrs["dilation"], attrs["groups"])
    y = activation(torch, z, attrs)
    backward(torch, y, op.cots[0])
    compare(op, got, y, dict(enumerate(leaves)), f"conv2d {attrs}")


@st.composite
def torch_pool_cases(draw, kind):
    """Pooling geometry PyTorch accepts: symmetric pads of at most half the kernel."""
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    ph, pw = draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    h = draw(st.integers(max(1, kh - 2 * ph), 7))
    w = draw(st.integers(max(1, kw - 2 * pw), 7))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), h, w)
    attrs = {"kernel": (kh, kw), "stride": stride, "pads": (ph, pw),
             "ceil_mode": draw(st.booleans())}
    if kind == "avg":
        attrs["count_include_pad"] = draw(st.booleans())
    return shape, attrs


@settings(max_examples=40)
@given(torch_pool_cases("max"), st.data())
def test_max_pool_matches_torch_with_ties(torch, case, data):
    shape, attrs = case
    rng = rng_of(data)
    x = rng.integers(-1, 2, shape).astype(np.float64)  # three values: ties in almost every window
    op = OpCase("max_pool", [x], attrs)
    (leaf,) = tensors(torch, x)
    y = torch.nn.functional.max_pool2d(leaf, attrs["kernel"], attrs["stride"], attrs["pads"],
                                       ceil_mode=attrs["ceil_mode"])
    backward(torch, y, op.cots[0])
    compare(op, op.rule([0]), y, {0: leaf}, f"max_pool {attrs}")


@settings(max_examples=40)
@given(torch_pool_cases("avg"), st.data())
def test_avg_pool_matches_torch(torch, case, data):
    shape, attrs = case
    x = rng_of(data).standard_normal(shape)
    op = OpCase("avg_pool", [x], attrs)
    (leaf,) = tensors(torch, x)
    y = torch.nn.functional.avg_pool2d(leaf, attrs["kernel"], attrs["stride"], attrs["pads"],
                                       ceil_mode=attrs["ceil_mode"],
                                       count_include_pad=attrs["count_include_pad"])
    backward(torch, y, op.cots[0])
    compare(op, op.rule([0]), y, {0: leaf}, f"avg_pool {attrs}")


@settings(max_examples=25)
@given(st.data())
def test_lrn_matches_torch(torch, data):
    rng = rng_of(data)
    shape = (data.draw(st.integers(1, 2)), data.draw(st.integers(1, 6)),
             data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4)))
    # odd sizes: PyTorch centres an even window one channel lower than Caffe and graphrt
    attrs = {"size": data.draw(st.sampled_from([1, 3, 5])),
             "alpha": data.draw(st.sampled_from([1e-4, 0.5, 2.0])),
             "beta": data.draw(st.sampled_from([0.75, 0.5])),
             "k": data.draw(st.sampled_from([1.0, 2.0]))}
    x = rng.standard_normal(shape) * 2
    op = OpCase("lrn", [x], attrs)
    (leaf,) = tensors(torch, x)
    y = torch.nn.functional.local_response_norm(leaf, attrs["size"], attrs["alpha"], attrs["beta"],
                                                attrs["k"])
    backward(torch, y, op.cots[0])
    compare(op, op.rule([0]), y, {0: leaf}, f"lrn {attrs}")


@settings(max_examples=25)
@given(st.data())
def test_batch_norm_train_matches_torch(torch, data):
    """PyTorch's convention: momentum 0.1, the running variance fed the unbiased batch variance."""
    rng = rng_of(data)
    n, c = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 4))
    spatial = data.draw(st.lists(st.integers(1, 3), max_size=2))
    shape = (n, c) + tuple(spatial)
    if int(np.prod(shape)) == c:  # PyTorch refuses one value per channel in training
        shape = (2,) + shape[1:]
    x = rng.standard_normal(shape) * 3 + 1
    gamma, beta = rng.standard_normal(c), rng.standard_normal(c)
    mean, var = rng.standard_normal(c), rng.uniform(0.5, 2.0, c)
    op = OpCase("batch_norm_train", [x, gamma, beta, mean, var], {"eps": 1e-3}, cot=[0])
    got = op.rule([0, 1, 2])
    leaves = tensors(torch, x, gamma, beta)
    running = [torch.tensor(mean), torch.tensor(var)]
    y = torch.nn.functional.batch_norm(leaves[0], *running, leaves[1], leaves[2], training=True,
                                       momentum=0.1, eps=1e-3)
    backward(torch, y, op.cots[0])
    compare(op, got, y, dict(enumerate(leaves)), "batch_norm_train")
    op._run(op.graph)  # one step from the initial statistics updates them in place
    for name, want in zip(op.names[3:], running):
        assert_close(op.graph.params[name], want.numpy(), TOL, what=f"running statistic {name}")


@pytest.mark.parametrize("op", ["softmax_cross_entropy", "nll_loss"])
@settings(max_examples=25)
@given(data=st.data())
def test_losses_match_torch(torch, op, data):
    rng = rng_of(data)
    n, c = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 6))
    scores = rng.standard_normal((n, c)) * data.draw(st.sampled_from([1.0, 10.0]))
    labels = rng.integers(0, c, n)
    case = OpCase(op, [scores, labels], batched=(0, 1))
    (leaf,) = tensors(torch, scores)
    fn = torch.nn.functional.cross_entropy if op == "softmax_cross_entropy" else \
        torch.nn.functional.nll_loss
    loss = fn(leaf, torch.tensor(labels))
    backward(torch, loss, case.cots[0])
    compare(case, case.rule([0]), loss, {0: leaf}, op)
