"""The cuda device's structural ops on the CUDA stand-in against the cpu device (relative error as
DESIGN.md defines it, below 1e-5): ``slice``, ``expand``, ``tile``, ``cast``, ``reduce``,
``reduce_like``, ``reduce_grad``, ``arg_reduce``, ``layer_norm`` and its gradients,
``embedding`` and ``embedding_grad``, ``conv2d_transpose`` and ``matmul_grad``. Each graph is one
node (with its inputs as batched graph inputs or parameters) that must be placed on the device.
Every test runs on the stand-in, and on a real GPU where there is one (``bench/gpu_check.sh``).
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import graphrt
from graphrt import Graph
from graphrt.testing import relative_error
from cuda_cases import DEVICES, RTOL, make_device, on_device_kind
from test_grad_ops import rng_of
from test_spatial_index_ops import CTMS, deconv_cases

KIND: list = []  # the device kind the module's tests run on now (the fixture below sets it)
SHAPES = st.lists(st.integers(1, 5), min_size=1, max_size=4)
FEW = settings(max_examples=12)


@pytest.fixture(scope="module", autouse=True, params=DEVICES)
def kind(request):
    """The stand-in (installed as ``cupy`` for the module's tests) or the real GPU."""
    with on_device_kind(request.param):
        KIND[:] = [request.param]
        yield request.param


def run_both(op, args, attrs, batched=(True,), rtol=None, exact=False) -> None:
    """One ``op`` node over ``args`` (a batched graph input where ``batched`` says so, else a
    parameter) on the cpu device and on the cuda device, where no node may go to the host; the
    outputs equal (``exact``, and always for integers) or within ``rtol``, the output buffer filled
    with NaN (-1) before each run."""
    g = Graph(op)
    names = []
    for i, a in enumerate(args):
        if i < len(batched) and batched[i]:
            names.append(g.add_input(f"in{i}", (None,) + a.shape[1:], a.dtype.name))
        else:
            names.append(g.add_param(f"p{i}", a))
    g.set_outputs([g.add_node(op, names, name="node", attrs=attrs)])
    g.verify()
    feeds = {n: a for n, a in zip(names, args) if n in g.inputs}
    n = args[0].shape[0]
    want = graphrt.compile(g, device="cpu", batch_size=n, opt_level=0)(feeds)
    with warnings.catch_warnings():
        warnings.simplefilter("error", graphrt.FallbackWarning)
        exe = graphrt.compile(g, device=make_device(KIND[0]), batch_size=n, opt_level=0)
    assert exe.host_nodes == {}
    for _ in range(2):
        for _, view in exe.program(n).outputs:  # garbage where a kernel writes nothing
            exe.device.to_device(np.full(view.shape, -1 if want.dtype.kind in "iub" else np.nan,
                                         view.dtype), view)
        got = exe(feeds)
        assert got.dtype == want.dtype and got.shape == want.shape
        if exact or want.dtype.kind in "iub":
            np.testing.assert_array_equal(got, want)
        else:  # NaN where the cpu device has NaN (a row of zero variance), close elsewhere
            nan = np.isnan(want)
            np.testing.assert_array_equal(np.isnan(got), nan)
            err = relative_error(got[~nan], want[~nan]) if not nan.all() else 0.0
            assert err < (rtol or RTOL), f"{op} {attrs}: relative error {err:.3g}"


def _array(rng, shape, dtype="float32"):
    return rng.standard_normal(shape).astype(dtype)


# ---- copies of strided views ---------------------------------------------------------------------
@FEW
@given(st.data(), SHAPES)
def test_slice(data, shape):
    rng = rng_of(data.draw)
    x = _array(rng, [2] + shape)
    axes = data.draw(st.lists(st.integers(1, len(shape)), unique=True, min_size=1))
    starts = [data.draw(st.integers(-x.shape[a], x.shape[a] - 1)) for a in axes]
    ends = [(s % x.shape[a]) + data.draw(st.integers(1, x.shape[a] - s % x.shape[a]))
            for s, a in zip(starts, axes)]
    if data.draw(st.booleans()):  # axes counted from the end
        axes = [a - x.ndim for a in axes]
    run_both("slice", [x], {"starts": starts, "ends": ends, "axes": axes})


@FEW
@given(st.data(), SHAPES)
def test_tile(data, shape):
    rng = rng_of(data.draw)
    x = _array(rng, [3] + shape)
    repeats = [1] + [data.draw(st.integers(1, 3)) for _ in shape]
    run_both("tile", [x], {"repeats": repeats})


@FEW
@given(st.data(), SHAPES)
def test_expand_and_its_gradient_reduce_like(data, shape):
    """x broadcast to ``shape``; dy summed over x's broadcast axes (``reduce_like``), for a batched
    x and for a parameter without the batch axis."""
    rng = rng_of(data.draw)
    small = [data.draw(st.sampled_from([1, d])) for d in shape]
    run_both("expand", [_array(rng, [3] + small)], {"shape": [-1] + shape})
    dy = _array(rng, [3] + shape)
    run_both("reduce_like", [dy, _array(rng, [3] + small)], {}, batched=(True, True))
    run_both("reduce_like", [dy, _array(rng, small)], {}, batched=(True, False))


@pytest.mark.parametrize("source", ["int32", "int64", "uint8", "bool", "float64", "float32"])
@pytest.mark.parametrize("to", ["float32", "float64"])
def test_cast_to_floats(source, to):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (3, 4, 5)) * 2.0 ** (31 if source in ("int32", "int64") else 7)
    run_both("cast", [x.astype(source)], {"to": to}, exact=True)  # numpy's rounding


def test_a_cast_to_an_integer_stays_on_the_host():
    from graphrt.devices.cuda.bind.registry import unsupported

    g = Graph("cast")
    x = g.add_input("x", (None, 3))
    g.set_outputs([g.add_node("cast", [x], name="c", attrs={"to": "int32"})])
    assert "int32" in unsupported(g.node("c"), g.verify())


# ---- reductions ---------------------------------------------------------------------------------
MODES = ["sum", "mean", "max", "min", "prod", "l1", "l2", "sumsq", "logsum", "logsumexp"]


@st.composite
def reduce_cases(draw, mode, batch_axis=True):
    rng = rng_of(draw)
    shape = [draw(st.integers(1, 3))] + draw(SHAPES)
    lo = 0 if batch_axis else 1
    axes = draw(st.lists(st.integers(lo, len(shape) - 1), unique=True, min_size=lo))
    dtype = draw(st.sampled_from(["float32", "float64"]))
    x = rng.standard_normal(shape)
    if mode in ("logsum", "prod"):
        x = np.abs(x) + 0.5
    if mode in ("max", "min"):
        x = np.round(x * 2)  # ties
    if mode == "logsumexp":
        x = x * 400  # exp overflows unless the max is taken out first
    if draw(st.booleans()):  # some negative axes
        axes = [a - len(shape) for a in axes]
    return x.astype(dtype), {"mode": mode, "axes": axes, "keepdims": draw(st.booleans())}


@pytest.mark.parametrize("mode", MODES)
@settings(max_examples=8)
@given(data=st.data())
def test_reduce(data, mode):
    x, attrs = data.draw(reduce_cases(mode))
    run_both("reduce", [x], attrs)


@pytest.mark.parametrize("mode", MODES)
@settings(max_examples=8)
@given(data=st.data())
def test_reduce_grad(data, mode):
    """``reduce_grad`` after the ``reduce`` it differentiates (so max and min see their ties)."""
    x, attrs = data.draw(reduce_cases(mode, batch_axis=False))
    g = Graph("reduce_grad")
    xi = g.add_input("x", (None,) + x.shape[1:], x.dtype.name)
    y = g.add_node("reduce", [xi], name="y", attrs=attrs)
    dy = g.add_input("dy", (None,) + g.specs[y].shape[1:], x.dtype.name)
    g.set_outputs([g.add_node("reduce_grad", [dy, xi, y], name="node", attrs=attrs)])
    feeds = {"x": x, "dy": np.random.default_rng(1).standard_normal(
        (x.shape[0],) + g.verify().specs[dy].shape[1:]).astype(x.dtype)}
    want = graphrt.compile(g, device="cpu", batch_size=len(x), opt_level=0)(feeds)
    exe = graphrt.compile(g, device=make_device(KIND[0]), batch_size=len(x), opt_level=0)
    assert exe.host_nodes == {}
    assert relative_error(exe(feeds), want) < RTOL


@settings(max_examples=30)
@given(st.data(), SHAPES)
def test_arg_reduce(data, shape):
    rng = rng_of(data.draw)
    x = np.round(rng.standard_normal([2] + shape)).astype(data.draw(st.sampled_from(
        ["float32", "float64"])))  # ties
    if data.draw(st.booleans()):
        x.flat[data.draw(st.integers(0, x.size - 1))] = np.nan
    attrs = {"mode": data.draw(st.sampled_from(["max", "min"])),
             "axis": data.draw(st.integers(-len(shape), len(shape))),
             "keepdims": data.draw(st.booleans()), "select_last_index": data.draw(st.booleans())}
    run_both("arg_reduce", [x], attrs)


# ---- layer norm ---------------------------------------------------------------------------------
@st.composite
def layer_norm_cases(draw):
    rng = rng_of(draw)
    shape = [draw(st.integers(1, 3))] + draw(SHAPES)
    axes = sorted(draw(st.lists(st.integers(1, len(shape) - 1), unique=True, min_size=1))) \
        if len(shape) > 1 else []
    if not axes:
        shape, axes = shape + [5], [len(shape)]
    attrs = {"axes": axes, "eps": draw(st.sampled_from([1e-5, 0.1])),
             "eps_inside_sqrt": draw(st.booleans()), "normalize_variance": draw(st.booleans())}
    dtype = draw(st.sampled_from(["float32", "float64"]))
    x = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
    params = [rng.standard_normal([shape[a] for a in axes]).astype(dtype)
              for _ in range(draw(st.integers(0, 2)))]
    return x, params, attrs


@settings(max_examples=30)
@given(layer_norm_cases())
def test_layer_norm(case):
    x, params, attrs = case
    run_both("layer_norm", [x] + params, attrs)


@settings(max_examples=30)
@given(layer_norm_cases(), st.sampled_from(["x", "scale", "bias"]))
def test_layer_norm_grad(case, wrt):
    x, params, attrs = case
    dy = np.random.default_rng(2).standard_normal(x.shape).astype(x.dtype)
    run_both("layer_norm_grad", [dy, x] + params[:1], {**attrs, "wrt": wrt},
             batched=(True, True))


# ---- embedding ----------------------------------------------------------------------------------
@FEW
@given(st.data(), st.sampled_from(["int64", "int32", "float32"]), st.integers(1, 7),
       st.integers(1, 4))
def test_embedding_and_its_gradient(data, index_dtype, rows, d):
    rng = rng_of(data.draw)
    shape = [3] + data.draw(st.lists(st.integers(1, 4), max_size=2))
    idx = rng.integers(0, rows, shape).astype(index_dtype)  # repeated rows
    if index_dtype == "float32":
        idx = idx + 0.5  # truncated
    run_both("embedding", [idx, _array(rng, (rows, d))], {})
    dy = _array(rng, shape + [d])
    run_both("embedding_grad", [dy, idx], {"rows": rows}, batched=(True, True))


# ---- GEMM adjoints ------------------------------------------------------------------------------
@FEW
@given(deconv_cases())
def test_conv2d_transpose(case):
    args, attrs = case
    run_both("conv2d_transpose", args, attrs, rtol=1e-4 if args[0].dtype == np.float32 else None)


MATMUL_SHAPES = [((4,), (4, 3)), ((2, 4), (4,)), ((2, 4), (4, 3)), ((2, 3, 4), (4, 5)),
                 ((2, 3, 4), (2, 4, 5)), ((2, 1, 3, 4), (5, 4, 2)), ((2, 3, 4), (1, 4, 2))]


@pytest.mark.parametrize("operand", [0, 1])
@pytest.mark.parametrize("shapes", MATMUL_SHAPES, ids=str)
def test_matmul_grad(shapes, operand):
    """Both operands' gradients, batched or not, with numpy's broadcasting and 1-D promotions."""
    rng = np.random.default_rng(3)
    a, b = _array(rng, shapes[0]), _array(rng, shapes[1])
    dy = _array(rng, np.matmul(a, b).shape)
    batched = (len(shapes[0]) > 2, len(shapes[1]) > 2 and shapes[1][0] == shapes[0][0], True)
    if not batched[0]:
        batched = (False, False, False)
    run_both("matmul_grad", [a, b, dy], {"operand": operand}, batched=batched)


# ---- resize -------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
@pytest.mark.parametrize("ctm", CTMS)
@settings(max_examples=5)
@given(data=st.data())
def test_resize_and_its_gradient(data, mode, ctm):
    """Every coordinate transformation and rounding, explicit scales, 1 to 3 spatial axes."""
    rng = rng_of(data.draw)
    spatial = data.draw(st.lists(st.integers(1, 5), min_size=1, max_size=3))
    sizes = [data.draw(st.integers(1, 7)) for _ in spatial]
    attrs = {"sizes": sizes, "mode": mode,
             "coordinate_transformation_mode": ctm,
             "nearest_mode": data.draw(st.sampled_from(["round_prefer_floor", "round_prefer_ceil",
                                                        "floor", "ceil"])),
             "cubic_coeff_a": data.draw(st.sampled_from([-0.75, -0.5])),
             "exclude_outside": data.draw(st.booleans())}
    if data.draw(st.booleans()):  # explicit scales, not always the sizes' ratio
        attrs["scales"] = [o / i * data.draw(st.sampled_from([1.0, 1.1]))
                           for o, i in zip(sizes, spatial)]
    dtype = data.draw(st.sampled_from(["float32", "float64"]))
    x = rng.standard_normal([2, data.draw(st.integers(1, 3))] + spatial).astype(dtype)
    run_both("resize", [x], attrs)
    dy = rng.standard_normal(list(x.shape[:2]) + sizes).astype(dtype)
    run_both("resize_grad", [dy], {**attrs, "input_size": spatial})


def test_resize_into_a_concat_slice():
    """The resize's output is a channel slice of the concat's (the plan aliases it), which the
    last GEMM cannot write: a copy from the workspace."""
    rng = np.random.default_rng(4)
    g = Graph("resize_concat")
    x = g.add_input("x", (None, 2, 3, 4))
    y = g.add_node("resize", [x], name="up", attrs={"sizes": [6, 5], "mode": "linear"})
    z = g.add_node("conv2d", [x, g.add_param("w", _array(rng, (3, 2, 1, 1)))], name="conv")
    z = g.add_node("resize", [z], name="up2", attrs={"sizes": [6, 5]})
    g.set_outputs([g.add_node("concat", [y, z], name="cat", attrs={"axis": 1})])
    feeds = {"x": _array(rng, (2, 2, 3, 4))}
    want = graphrt.compile(g.verify(), device="cpu", batch_size=2, opt_level=3)(feeds)
    exe = graphrt.compile(g, device=make_device(KIND[0]), batch_size=2, opt_level=3)
    assert exe.host_nodes == {}
    assert exe.graph.node("cat").attrs.get("alias")  # its inputs are slices of its output
    assert relative_error(exe(feeds), want) < RTOL


@pytest.mark.parametrize("mode", ["reflect", "edge", "wrap"])
@settings(max_examples=10)
@given(data=st.data())
def test_pad_grad(data, mode):
    """Reflect, edge and wrap padding's gradient, with crops (negative pads) on some axes."""
    rng = rng_of(data.draw)
    shape = [2] + data.draw(st.lists(st.integers(3, 6), min_size=1, max_size=4))
    rank = len(shape)
    # reflect pads stay below the axis left after cropping one on each side; the others may wrap
    limit = (lambda d: d - 3) if mode == "reflect" else (lambda d: 2 * d + 1)
    pads = [0] * (2 * rank)
    for a in range(1, rank):
        for side in (a, a + rank):
            pads[side] = data.draw(st.integers(-1, limit(shape[a])))
    cropped = [d - max(0, -pads[a]) - max(0, -pads[a + rank]) for a, d in enumerate(shape)]
    padded = [c + max(0, pads[a]) + max(0, pads[a + rank]) for a, c in enumerate(cropped)]
    dy = rng.standard_normal(padded).astype(data.draw(st.sampled_from(["float32", "float64"])))
    run_both("pad_grad", [dy], {"pads": pads, "mode": mode, "input_shape": shape[1:]})


# ---- all_reduce ---------------------------------------------------------------------------------
class Doubling:
    """A communicator of two ranks whose other rank holds the same values (a sum doubles)."""

    world = 2

    def all_reduce(self, bucket, op):
        bucket *= 2


def test_all_reduce_runs_on_the_device_for_a_group_of_one_and_on_the_host_for_a_communicator():
    """A group of one is the identity: on the device, copies only; a group with a communicator
    stays on the host (its reduction is a host call), and one registered after an executable's
    first step is refused rather than skipped."""
    from graphrt.ops.collective import CollectiveError, set_communicator

    g = Graph("all_reduce")
    names = [g.add_input("a", (3, 4)), g.add_input("b", (5,))]
    outs = g.add_node("all_reduce", names, name="ar", attrs={"count": 2, "group": "t", "op": "sum"})
    g.set_outputs(list(outs))
    g.verify()
    rng = np.random.default_rng(0)
    feeds = {"a": rng.standard_normal((3, 4)).astype(np.float32),
             "b": rng.standard_normal(5).astype(np.float32)}
    flat = np.concatenate([feeds["a"].ravel(), feeds["b"]])

    def check(exe, k):
        got = exe(feeds)
        np.testing.assert_array_equal(got[outs[0]], k * flat)
        np.testing.assert_array_equal(got[outs[1]], k * feeds["a"])
        np.testing.assert_array_equal(got[outs[2]], k * feeds["b"])

    with warnings.catch_warnings():
        warnings.simplefilter("error", graphrt.FallbackWarning)
        alone = graphrt.compile(g, device=make_device(KIND[0]), batch_size=1, opt_level=0)
    assert alone.host_nodes == {}
    check(alone, 1)
    try:
        set_communicator("t", Doubling())
        with pytest.raises(CollectiveError, match="group 't' got a communicator"):
            alone(feeds)
        with pytest.warns(graphrt.FallbackWarning, match="communicator"):
            shared = graphrt.compile(g, device=make_device(KIND[0]), batch_size=1, opt_level=0)
        assert list(shared.host_nodes) == ["ar"]
        check(shared, 2)
    finally:
        set_communicator("t", None)
    check(alone, 1)
