"""Every op's backward (VJP) rule against central finite differences and against PyTorch.

The harness builds a one-node float64 graph of the op, asks the rule for the input gradients through
:class:`FakeContext` (the ``ctx`` contract of :mod:`graphrt.training.autodiff`: ``add``, ``spec``,
``wants``, ``state``), which adds the gradient ops to a copy of that graph, and runs both graphs
with ``graphrt.run_reference``. The check is on f = sum_k sum(output_k * cotangent_k) for random
cotangents: the rule's gradients against fourth-order central differences of f, element by element.
Inputs are drawn away from kinks (relu at 0, ties in max pooling) by more than the differences'
reach. State inputs an op writes (running statistics, dropout counters) are reset before every
run. With PyTorch installed, every op with a rule that PyTorch also has is compared with
``torch.autograd`` in float64 too (``test_backward_torch.py``, ``test_backward_torch_ops.py``).
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import graphrt
from graphrt import Graph
from graphrt.ops import all_ops, get_op
from naive import assert_close

EPS = 1e-5  # step of the fourth-order differences: truncation ~EPS^4, rounding ~1e-16 / EPS
TOL = 1e-6  # max-normalized error of the analytic gradient against the differences, the
FLOOR = 1e-3  # maximum taken at least this large (differences carry ~1e-11 absolute noise)
FEW = settings(max_examples=25)  # the costlier ops (each example runs 2 forwards per element)


# ---- the harness ------------------------------------------------------------------------------
class FakeContext:
    """The backward-rule context of ``graphrt.training.autodiff``, adding nodes to ``graph``."""

    def __init__(self, graph: Graph, wants):
        self.graph, self._wants = graph, list(wants)

    def add(self, op, inputs, attrs=None):
        return self.graph.add_node(op, list(inputs), attrs=attrs or {})

    def spec(self, tensor):
        return self.graph.specs[tensor]

    def wants(self, i: int) -> bool:
        return self._wants[i]

    def state(self, base_name, value):
        return self.graph.add_param(self.graph.unique_name(base_name), value, trainable=False)


class OpCase:
    """One op application: ``args`` fed as batched graph inputs (indices in ``batched``) or as
    parameters (the rest); cotangents on the outputs listed in ``cot`` (default: all float ones)."""

    def __init__(self, op, args, attrs=None, batched=(0,), cot=None, seed=0):
        self.op, self.args, self.attrs = op, [np.array(a) for a in args], dict(attrs or {})
        self.batched = tuple(batched)
        g = Graph(op)
        self.names = []
        for i, a in enumerate(self.args):
            if i in self.batched:
                self.names.append(g.add_input(f"a{i}", (None,) + a.shape[1:], str(a.dtype)))
            else:
                self.names.append(g.add_param(f"a{i}", a.copy()))
        outs = g.add_node(op, self.names, name="node", attrs=self.attrs)
        self.outputs = list(outs) if isinstance(outs, tuple) else [outs]
        g.set_outputs(self.outputs)
        g.verify()
        self.graph = g
        batch = self.args[self.batched[0]].shape[0]
        rng = np.random.default_rng(seed)
        floats = [k for k, t in enumerate(self.outputs) if g.specs[t].dtype.startswith("float")]
        self.cots = {k: rng.standard_normal(g.specs[self.outputs[k]].concrete(batch))
                     for k in (floats if cot is None else cot)}

    def _run(self, graph, extra=None):
        for i, name in enumerate(self.names):
            if i not in self.batched:  # reset state the op overwrites
                graph.params[name] = self.args[i].copy()
        feeds = {self.names[i]: self.args[i] for i in self.batched}
        return graphrt.run_reference(graph, {**feeds, **(extra or {})}, return_all=True)

    def objective(self) -> float:
        values = self._run(self.graph)
        return sum(float(np.sum(values[self.outputs[k]] * c)) for k, c in self.cots.items())

    def numeric(self, i: int) -> np.ndarray:
        """Fourth-order central differences: (8 (f(+h) - f(-h)) - (f(+2h) - f(-2h))) / 12h."""
        a = self.args[i]
        grad = np.zeros(a.shape)
        for idx in np.ndindex(a.shape):
            orig, f = a[idx], {}
            for k in (-2, -1, 1, 2):
                a[idx] = orig + k * EPS
                f[k] = self.objective()
            a[idx] = orig
            grad[idx] = (8 * (f[1] - f[-1]) - (f[2] - f[-2])) / (12 * EPS)
        return grad

    def rule(self, wrt) -> dict:
        """The rule's gradients {input index: array} for the inputs ``wrt``."""
        g = self.graph.copy()
        dys = [None] * len(self.outputs)
        feeds = {}
        for k, c in self.cots.items():
            spec = g.specs[self.outputs[k]]
            dys[k] = g.add_input(f"dy{k}", spec.shape, spec.dtype)
            feeds[dys[k]] = c
        ctx = FakeContext(g, [i in wrt for i in range(len(self.args))])
        grads = get_op(self.op).backward(ctx, g.node("node"), dys)
        assert len(grads) == len(self.args), f"{self.op}: one gradient per input"
        for i, t in enumerate(grads):
            if i not in wrt:
                assert t is None, f"{self.op}: input {i} was not asked for but got {t}"
            else:
                assert t is not None, f"{self.op}: no gradient for input {i}"
                assert g.specs[t] == self.graph.specs[self.names[i]], (
                    f"{self.op}: gradient {g.specs[t]} {g.specs[t].dtype} of input {i} "
                    f"{self.graph.specs[self.names[i]]}")
        if not wrt:
            return {}
        g.set_outputs([grads[i] for i in wrt])
        g.verify()
        values = self._run(g, feeds)
        return {i: values[grads[i]] for i in wrt}


def check(op, args, attrs=None, batched=(0,), wrt=None, cot=None, tol=TOL):
    """Assert the rule's gradients for ``wrt`` (default: every float argument) equal central
    differences; returns the OpCase and the rule's gradients."""
    case = OpCase(op, args, attrs, batched, cot)
    if wrt is None:
        wrt = [i for i, a in enumerate(case.args) if a.dtype.kind == "f"]
    got = case.rule(wrt)
    for i in wrt:
        assert_close(got[i], case.numeric(i), tol, what=f"{op} {attrs or {}} d/d(input {i})",
                     floor=FLOOR)
    return case, got


def rng_of(data):
    return np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))


def away_from_zero(rng, shape, gap=0.05):
    """Normal values with |v| >= gap (kinks at 0 stay out of reach of the differences)."""
    x = rng.standard_normal(shape)
    return np.where(np.abs(x) < gap, np.copysign(gap, x) + x, x)


def distinct(rng, shape):
    """Values spaced at least 0.05 apart, in random order: no ties for max pooling to break."""
    n = int(np.prod(shape))
    return (rng.permutation(n) * 0.05 - n * 0.025 + rng.uniform(0, 0.01, n)).reshape(shape)


def assume_no_kink(op, args, attrs, gap=1e-3):
    """Skip an example whose relu input lies within ``gap`` of 0 (the differences would straddle
    the kink): the pre-activation of a relu epilogue, or the input of a relu step of a chain."""
    attrs = get_op(op).normalize_attrs(dict(attrs))
    if op == "elementwise_chain":
        v = args[0]
        for step, step_attrs in attrs["steps"]:
            assume(step != "relu" or np.abs(v).min() > gap)
            out = np.empty_like(v)
            get_op(step).forward(step_attrs, [v], [out])
            v = out
    elif attrs.get("activation") == "relu":
        assume(np.abs(run_op(op, args, {**attrs, "activation": "none"})).min() > gap)


def run_op(op, args, attrs):
    case = OpCase(op, args, attrs)
    return case._run(case.graph)[case.outputs[0]]


def wants_subset(data, n):
    """A non-empty random subset of range(n)."""
    return sorted(data.draw(st.sets(st.integers(0, n - 1), min_size=1)))


def epilogue(data):
    kind = data.draw(st.sampled_from(["none", "relu", "tanh", "sigmoid"]))
    attrs = {"activation": kind}
    if kind == "relu":
        attrs["negative_slope"] = data.draw(st.sampled_from([0.0, 0.1, -0.3]))
    return attrs


# ---- the registry -----------------------------------------------------------------------------
# gradient ops (graphrt differentiates once), updates, the input transform (its input is data)
NO_RULE_FAMILIES = {"grad", "optim", "image"}


@pytest.mark.parametrize("name", sorted(all_ops()))
def test_every_op_has_a_backward_rule(name):
    opdef = all_ops()[name]
    if opdef.family in NO_RULE_FAMILIES:
        return
    assert callable(opdef.backward), f"{name} ({opdef.family}) has no backward rule"


# ---- convolution and dense --------------------------------------------------------------------
@st.composite
def conv_cases(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    groups, cg, og = draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(st.integers(1, 2))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    dil = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    pads = tuple(draw(st.integers(0, 2)) for _ in range(4))
    eh, ew = dil[0] * (kh - 1) + 1, dil[1] * (kw - 1) + 1
    h = draw(st.integers(max(1, eh - pads[0] - pads[1]), 6))
    w = draw(st.integers(max(1, ew - pads[2] - pads[3]), 6))
    n = draw(st.integers(1, 2))
    args = [rng.standard_normal((n, groups * cg, h, w)),
            rng.standard_normal((groups * og, cg, kh, kw))]
    if draw(st.booleans()):
        args.append(rng.standard_normal(groups * og))
    attrs = {"stride": stride, "pads": pads, "dilation": dil, "groups": groups}
    return args, attrs


@FEW
@given(conv_cases(), st.data())
def test_conv2d_backward(case, data):
    args, attrs = case
    attrs.update(epilogue(data))
    assume_no_kink("conv2d", args, attrs)
    check("conv2d", args, attrs, wrt=wants_subset(data, len(args)))


@FEW
@given(conv_cases(), st.data())
def test_conv2d_split_backward(case, data):
    """Merged sibling convolutions: cotangents on a random subset of the outputs (no gradient flows
    from the others)."""
    args, attrs = case
    attrs.update(epilogue(data))
    assume_no_kink("conv2d", args, attrs)
    o = args[1].shape[0]
    cuts = sorted(data.draw(st.sets(st.integers(1, o - 1), max_size=2))) if o > 1 else []
    sizes = tuple(int(d) for d in np.diff([0, *cuts, o]))
    cot = data.draw(st.sets(st.integers(0, len(sizes) - 1), min_size=1))
    check("conv2d_split", args, {**attrs, "sizes": sizes}, wrt=wants_subset(data, len(args)),
          cot=sorted(cot))


@FEW
@given(st.data())
def test_dense_backward(data):
    rng = rng_of(data)
    n, fin, fout = (data.draw(st.integers(1, hi)) for hi in (2, 5, 4))
    args = [rng.standard_normal((n, fin)), rng.standard_normal((fout, fin))]
    if data.draw(st.booleans()):
        args.append(rng.standard_normal(fout))
    attrs = epilogue(data)
    assume_no_kink("dense", args, attrs)
    check("dense", args, attrs, wrt=wants_subset(data, len(args)))


# ---- pooling ----------------------------------------------------------------------------------
@st.composite
def pool_cases(draw, kind):
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    if draw(st.integers(0, 5)) == 0:
        return (n, c, draw(st.integers(1, 5)), draw(st.integers(1, 5))), {"global_pool": True}
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    pads = (draw(st.integers(0, kh - 1)), draw(st.integers(0, kh - 1)),
            draw(st.integers(0, kw - 1)), draw(st.integers(0, kw - 1)))
    h = draw(st.integers(max(1, kh - pads[0] - pads[1]), 6))
    w = draw(st.integers(max(1, kw - pads[2] - pads[3]), 6))
    attrs = {"kernel": (kh, kw), "stride": stride, "pads": pads, "ceil_mode": draw(st.booleans())}
    if kind == "avg":
        attrs["count_include_pad"] = draw(st.booleans())
    return (n, c, h, w), attrs


@FEW
@given(pool_cases("max"), st.data())
def test_max_pool_backward(case, data):
    shape, attrs = case
    check("max_pool", [distinct(rng_of(data), shape)], attrs)


@FEW
@given(pool_cases("avg"), st.data())
def test_avg_pool_backward(case, data):
    shape, attrs = case
    check("avg_pool", [rng_of(data).standard_normal(shape)], attrs)


# ---- normalization ----------------------------------------------------------------------------
@FEW
@given(st.data())
def test_lrn_backward(data):
    rng = rng_of(data)
    shape = (data.draw(st.integers(1, 2)), data.draw(st.integers(1, 4)),
             data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3)))
    attrs = {"size": data.draw(st.integers(1, 5)),
             "alpha": data.draw(st.sampled_from([1e-4, 0.5, 2.0])),
             "beta": data.draw(st.sampled_from([0.75, 0.5, 1.0])),
             "k": data.draw(st.sampled_from([1.0, 2.0]))}
    check("lrn", [rng.standard_normal(shape) * 2], attrs)


def _channel_shape(data):
    return (data.draw(st.integers(1, 2)), data.draw(st.integers(1, 4))) + tuple(
        data.draw(st.integers(1, 3)) for _ in range(data.draw(st.integers(0, 2))))


@FEW
@given(st.data())
def test_batch_norm_backward(data):
    rng = rng_of(data)
    shape = _channel_shape(data)
    c = shape[1]
    args = [rng.standard_normal(shape), rng.standard_normal(c), rng.uniform(0.2, 2.0, c)]
    affine = data.draw(st.booleans())
    if affine:
        args += [rng.standard_normal(c), rng.standard_normal(c)]
    wrt = [0, 3, 4] if affine else [0]
    wrt = [i for i in wrt if data.draw(st.booleans())] or [0]
    check("batch_norm", args, {"eps": 1e-3}, wrt=wrt)


@FEW
@given(st.data())
def test_channel_affine_backward(data):
    rng = rng_of(data)
    shape = _channel_shape(data)
    args = [rng.standard_normal(shape), rng.standard_normal(shape[1])]
    if data.draw(st.booleans()):
        args.append(rng.standard_normal(shape[1]))
    check("channel_affine", args, wrt=wants_subset(data, len(args)))


@pytest.mark.parametrize("convention", [
    {"momentum": 0.1, "unbiased": True}, {"momentum": 0.01, "unbiased": False},
    {"caffe_fraction": 0.999, "unbiased": True}])
@FEW
@given(data=st.data())
def test_batch_norm_train_backward(convention, data):
    rng = rng_of(data)
    shape = _channel_shape(data)
    c = shape[1]
    args = [rng.standard_normal(shape) * 2 + 1, rng.standard_normal(c), rng.standard_normal(c),
            rng.standard_normal(c), rng.uniform(0.5, 2.0, c)]
    if "caffe_fraction" in convention or data.draw(st.booleans()):
        args.append(np.array([data.draw(st.sampled_from([0.0, 3.0]))]))
    # the saved batch statistics carry no gradient: the cotangent sits on y only
    check("batch_norm_train", args, {"eps": 1e-3, **convention}, wrt=[0, 1, 2], cot=[0])


# ---- elementwise ------------------------------------------------------------------------------
UNARY = {
    "relu": lambda d: {"negative_slope": d.draw(st.sampled_from([0.0, 0.2, -0.5, 1.5]))},
    "tanh": lambda d: {}, "sigmoid": lambda d: {}, "identity": lambda d: {},
    "dropout": lambda d: {"rate": 0.3}, "copy_to_device": lambda d: {},
    "copy_to_host": lambda d: {},
    "scale": lambda d: {"power": d.draw(st.sampled_from([1.0, 2.0, 3.0, 0.5, -1.0, -0.75, 0.0])),
                        "scale": d.draw(st.sampled_from([0.5, 1.0, 2.0])),
                        "shift": d.draw(st.sampled_from([1.0, 2.0]))},
}


@pytest.mark.parametrize("op", sorted(UNARY))
@given(data=st.data())
@settings(max_examples=8)
def test_unary_backward(op, data):
    rng = rng_of(data)
    shape = _channel_shape(data)
    attrs = UNARY[op](data)
    # scale: keep the base shift + scale * x in [1, 3] for fractional and negative powers
    x = rng.uniform(0, 1, shape) if op == "scale" else away_from_zero(rng, shape)
    check(op, [x], attrs)


@given(st.data())
@settings(max_examples=15)
def test_add_and_mul_backward(data):
    rng = rng_of(data)
    op = data.draw(st.sampled_from(["add", "mul"]))
    k = data.draw(st.integers(1, 3))
    shape = _channel_shape(data)
    args = [rng.standard_normal(shape) for _ in range(k)]
    attrs = {}
    if op == "add" and data.draw(st.booleans()):
        attrs["coeffs"] = [data.draw(st.sampled_from([1.0, -0.5, 2.0])) for _ in range(k)]
    check(op, args, attrs, batched=tuple(range(k)), wrt=wants_subset(data, k))


@given(st.data())
@settings(max_examples=15)
def test_add_and_mul_broadcast_backward(data):
    """A batched (N, C, H) operand with an unbatched (C, 1) or (1, C, H) one: the second's
    gradient is summed over the axes it was broadcast along."""
    rng = rng_of(data)
    op = data.draw(st.sampled_from(["add", "mul"]))
    n, c, h = (data.draw(st.integers(lo, hi)) for lo, hi in ((1, 2), (1, 3), (2, 3)))
    small = data.draw(st.sampled_from([(c, 1), (1, c, h), (h,)]))
    args = [rng.standard_normal((n, c, h)), rng.standard_normal(small)]
    if data.draw(st.booleans()):
        args.reverse()
        check(op, args, batched=(1,))
    else:
        check(op, args)


@st.composite
def chain_steps(draw):
    step = st.one_of(
        st.tuples(st.just("relu"), st.fixed_dictionaries({"negative_slope": st.sampled_from(
            [0.0, 0.3, -0.5])})),
        st.tuples(st.sampled_from(["tanh", "sigmoid", "identity"]), st.just({})),
        st.tuples(st.just("dropout"), st.just({"rate": 0.5})),
        st.tuples(st.just("scale"), st.fixed_dictionaries({
            "power": st.sampled_from([1.0, 2.0]), "scale": st.sampled_from([-1.5, 0.5, 2.0]),
            "shift": st.sampled_from([0.0, 0.25])})))
    return draw(st.lists(step, min_size=1, max_size=4))


@given(chain_steps(), st.data())
@settings(max_examples=15)
def test_elementwise_chain_backward(steps, data):
    x = away_from_zero(rng_of(data), _channel_shape(data))
    assume_no_kink("elementwise_chain", [x], {"steps": steps})
    check("elementwise_chain", [x], {"steps": steps})


# ---- softmax and losses -----------------------------------------------------------------------
@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
@given(data=st.data())
@settings(max_examples=10)
def test_softmax_backward(op, data):
    shape = _channel_shape(data)
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    check(op, [rng_of(data).standard_normal(shape) * 2], {"axis": axis})


@pytest.mark.parametrize("op", ["softmax_cross_entropy", "nll_loss", "accuracy"])
@given(data=st.data())
@settings(max_examples=10)
def test_loss_backward(op, data):
    rng = rng_of(data)
    n, c = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 5))
    labels = rng.integers(0, c, n).astype(data.draw(st.sampled_from(["int64", "float64"])))
    args = [rng.standard_normal((n, c)) * 2, labels]
    if op == "accuracy":  # piecewise constant: the rule gives no gradient at all
        case = OpCase(op, args, batched=(0, 1))
        assert case.rule([]) == {}
        return
    check(op, args, batched=(0, 1), wrt=[0])


# ---- data movement ----------------------------------------------------------------------------
@given(st.data())
@settings(max_examples=15)
def test_concat_backward(data):
    rng = rng_of(data)
    shape = list(_channel_shape(data))
    axis = data.draw(st.integers(1, len(shape) - 1))
    args = []
    for _ in range(data.draw(st.integers(1, 3))):
        shape[axis] = data.draw(st.integers(1, 3))
        args.append(rng.standard_normal(shape))
    axis_attr = axis - len(shape) if data.draw(st.booleans()) else axis
    check("concat", args, {"axis": axis_attr}, batched=tuple(range(len(args))),
          wrt=wants_subset(data, len(args)))


@given(st.data())
@settings(max_examples=15)
def test_split_backward(data):
    rng = rng_of(data)
    shape = _channel_shape(data)
    sizes = [data.draw(st.integers(1, 2)) for _ in range(data.draw(st.integers(1, 3)))]
    x = rng.standard_normal((shape[0], sum(sizes)) + shape[2:])
    # some outputs get no gradient: the rule fills zeros there
    cot = sorted(data.draw(st.sets(st.integers(0, len(sizes) - 1), min_size=1)))
    check("split", [x], {"axis": 1, "sizes": sizes}, cot=cot)


@given(st.data())
@settings(max_examples=20)
def test_shape_ops_backward(data):
    rng = rng_of(data)
    op = data.draw(st.sampled_from(["flatten", "reshape", "transpose", "zero_pad"]))
    shape = (data.draw(st.integers(1, 2)),) + tuple(data.draw(st.integers(1, 4)) for _ in range(
        data.draw(st.integers(2, 3))))
    if op == "flatten":
        attrs = {"axis": data.draw(st.integers(1, len(shape)))}
    elif op == "reshape":
        attrs = {"shape": [-1]}
    elif op == "transpose":
        attrs = {"perm": [0] + data.draw(st.permutations(range(1, len(shape))))}
    else:
        pads = [data.draw(st.integers(-2, 2)) for _ in range(4)]
        pads[0] = max(pads[0], 1 - shape[-2] - pads[1])
        pads[2] = max(pads[2], 1 - shape[-1] - pads[3])
        attrs = {"pads": pads}
    check(op, [rng.standard_normal(shape)], attrs)


# ---- training-mode ops ------------------------------------------------------------------------
@given(st.data())
@settings(max_examples=10)
def test_dropout_train_backward(data):
    rng = rng_of(data)
    counter = np.array([data.draw(st.integers(0, 10**6))], np.int64)
    attrs = {"rate": data.draw(st.sampled_from([0.0, 0.25, 0.5])),
             "seed": data.draw(st.integers(0, 99))}
    case, _ = check("dropout_train", [rng.standard_normal(_channel_shape(data)), counter], attrs,
                    wrt=[0])
    assert case.args[1][0] == counter[0], "the harness resets the counter it was given"


# ---- math -------------------------------------------------------------------------------------
MATMUL_SHAPES = [  # (a, b, which is batched): numpy's promotions and broadcasts, batch first
    ((3, 4), (4, 2), (0,)), ((3, 2, 4), (4, 2), (0,)), ((3, 2, 4), (4,), (0,)),
    ((3, 4), (4,), (0,)), ((4,), (3, 4, 2), (1,)), ((3, 2, 2, 4), (2, 4, 3), (0,)),
    ((3, 1, 2, 4), (2, 4, 3), (0,)), ((3, 2, 4), (1, 4, 2), (0,)), ((3, 2, 4), (3, 4, 2), (0, 1))]


@pytest.mark.parametrize("a_shape, b_shape, batched", MATMUL_SHAPES)
@given(data=st.data())
@settings(max_examples=4)
def test_matmul_backward(a_shape, b_shape, batched, data):
    rng = rng_of(data)
    n = data.draw(st.integers(1, 2))
    shapes = [(n,) + s[1:] if i in batched else s for i, s in enumerate((a_shape, b_shape))]
    args = [rng.standard_normal(s) for s in shapes]
    check("matmul", args, batched=batched, wrt=wants_subset(data, 2))


@given(st.data())
@settings(max_examples=20)
def test_pad_backward(data):
    rng = rng_of(data)
    shape = (data.draw(st.integers(1, 2)),) + tuple(data.draw(st.integers(1, 3)) for _ in range(
        data.draw(st.integers(1, 3))))
    rank = len(shape)
    begins = [0] + [data.draw(st.integers(-2, 2)) for _ in range(rank - 1)]
    ends = [0] + [data.draw(st.integers(-2, 2)) for _ in range(rank - 1)]
    for i in range(1, rank):  # keep at least one element on every axis
        begins[i] = max(begins[i], 1 - shape[i] - ends[i])
    check("pad", [rng.standard_normal(shape)], {"pads": begins + ends,
                                                "value": data.draw(st.sampled_from([0.0, 1.5]))})
