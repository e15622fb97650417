"""Compiled executables against the reference executor on every seed Caffe model, and the executable's
contract: fresh outputs, views on request, input checking, transfer counts, one upload per parameter,
no state leaking between calls, chunked large batches, named outputs, out-of-memory before
allocating."""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest

import graphrt
from graphrt import Graph
from graphrt.devices.cpu import CpuDevice
from graphrt.frontends.caffe import load_caffe
from graphrt.scheduler import OutOfMemoryError

TOL = 1e-4

# every seed prototxt, with the load options a net without a deploy input needs
SMALL = [
    ("lenet.prototxt", {}),
    ("lenet_train_test.prototxt", {"input_shape": (1, 28, 28)}),
    ("cifar10_quick.prototxt", {}),
    ("cifar10_quick_train_test.prototxt", {"input_shape": (3, 32, 32)}),
    ("cifar10_full.prototxt", {}),
    ("digits_lenet.prototxt", {"input_shape": (1, 28, 28), "stage": ("deploy",), "classes": 10}),
    ("digits_lenet.prototxt", {"input_shape": (1, 28, 28), "stage": ("val",), "classes": 10}),
]
BIG = [("bvlc_alexnet_deploy.prototxt", {}), ("bvlc_googlenet_deploy.prototxt", {})]


def model_id(case) -> str:
    file, options = case
    return file.replace(".prototxt", "") + "".join(f"-{s}" for s in options.get("stage", ()))


@functools.lru_cache(maxsize=None)
def _load(path: str, options: tuple) -> Graph:
    options = dict(options)
    if "input_shape" in options:
        options["input_shape"] = tuple(options["input_shape"])
    if "stage" in options:
        options["stage"] = list(options["stage"])
    g = load_caffe(path, **options)
    rng = np.random.default_rng(0)
    for name, value in list(g.params.items()):
        w = rng.standard_normal(value.shape) * 0.05
        if name.endswith("_var"):
            w = np.abs(w) + 0.5
        g.params[name] = w.astype(value.dtype)
    return g


def load(shared: Path, case) -> Graph:
    file, options = case
    return _load(str(shared / "models/caffe" / file), tuple(sorted(options.items())))


def make_feeds(g: Graph, batch: int, seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for name in g.inputs:
        spec = g.specs[name]
        if np.dtype(spec.dtype).kind == "f":
            out[name] = rng.standard_normal(spec.concrete(batch)).astype(spec.dtype)
        else:
            out[name] = rng.integers(0, 10, spec.concrete(batch)).astype(spec.dtype)
    return out


def as_dict(g: Graph, result) -> dict:
    return result if isinstance(result, dict) else {g.outputs[0]: result}


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    scale = np.abs(b).max() if b.size else 0.0
    diff = np.abs(a - b).max() if b.size else 0.0
    return float(diff / scale) if scale else float(diff)


def assert_close(g: Graph, got, want, tol=TOL):
    got, want = as_dict(g, got), as_dict(g, want)
    assert sorted(got) == sorted(want) == sorted(g.outputs)
    for k in want:
        assert rel_err(got[k], want[k]) < tol, k


@functools.lru_cache(maxsize=None)
def _reference(path: str, options: tuple, batch: int, seed: int):
    g = _load(path, options)
    return graphrt.run_reference(g, make_feeds(g, batch, seed))


def reference(shared, case, batch, seed=1):
    file, options = case
    return _reference(str(shared / "models/caffe" / file), tuple(sorted(options.items())), batch, seed)


def test_every_seed_prototxt_is_covered(shared):
    files = {p.name for p in (shared / "models/caffe").glob("*.prototxt")}
    assert files == {file for file, _ in SMALL + BIG}


# ---- compiled == reference -----------------------------------------------------------------------
@pytest.mark.parametrize("level", [0, 1, 2, 3])
@pytest.mark.parametrize("case", SMALL, ids=model_id)
def test_small_models_match_reference(shared, case, level):
    g = load(shared, case)
    exe = graphrt.compile(g, "cpu", batch_size=4, opt_level=level)
    exe.plan.check()
    for batch in (1, 3):
        assert_close(g, exe(make_feeds(g, batch)), reference(shared, case, batch))
    assert exe.output_names == g.outputs


@pytest.mark.parametrize("level", [0, 3])
@pytest.mark.parametrize("case", BIG, ids=model_id)
def test_big_models_match_reference(shared, case, level):
    g = load(shared, case)
    exe = graphrt.compile(g, "cpu", batch_size=2, opt_level=level)
    exe.plan.check()
    x = make_feeds(g, 2)
    want = reference(shared, case, 2)
    assert_close(g, exe(x), want)
    one = exe({k: v[:1] for k, v in x.items()})
    assert_close(g, one, {k: v[:1] for k, v in as_dict(g, want).items()})
    if level == 3:
        assert exe.kernels_per_step < graphrt.compile(g, "cpu", 1, opt_level=0).kernels_per_step


# ---- batches -------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", [SMALL[0], SMALL[1]], ids=model_id)
def test_batch_larger_than_compiled_runs_in_chunks(shared, case):
    g = load(shared, case)
    exe = graphrt.compile(g, "cpu", batch_size=2, opt_level=2)
    exe.ledger.reset()
    got = as_dict(g, exe(make_feeds(g, 5)))
    want = as_dict(g, reference(shared, case, 5))
    assert_close(g, got, want)
    for k in want:  # scalar outputs (losses) stay 0-d arrays; per-item outputs keep all 5 rows
        assert np.shape(got[k]) == np.shape(want[k]) and got[k].dtype == want[k].dtype
    summary = exe.ledger.summary()
    assert summary["HtoD"]["invocations"] == 3 * len(g.inputs)  # chunks of 2, 2, 1
    assert summary["DtoH"]["invocations"] == 3 * len(g.outputs)


# ---- outputs -------------------------------------------------------------------------------------
@pytest.fixture
def lenet(shared):
    g = load(shared, SMALL[0])
    return g, graphrt.compile(g, "cpu", batch_size=4, opt_level=3)


def test_outputs_are_fresh_arrays(lenet):
    g, exe = lenet
    x = make_feeds(g, 3)
    first = exe(x)
    kept = first.copy()
    first[...] = 12345.0  # the caller owns it
    second = exe(x)
    assert second is not first and not np.shares_memory(second, first)
    assert not np.shares_memory(second, exe.arena)
    np.testing.assert_array_equal(second, kept)
    third = exe(make_feeds(g, 3, seed=7))
    assert not np.allclose(third, second)
    np.testing.assert_array_equal(second, kept)  # a later call does not write into it


def test_copy_false_returns_views_of_the_arena(lenet):
    g, exe = lenet
    x = make_feeds(g, 3)
    want = exe(x)
    view = exe(x, copy=False)
    assert np.shares_memory(view, exe.arena)
    np.testing.assert_array_equal(view, want)
    assert view.shape == want.shape
    exe(make_feeds(g, 3, seed=9), copy=False)
    assert not np.array_equal(view, want)  # the view shows the next step's result


# ---- input checking ------------------------------------------------------------------------------
def test_wrong_input_shape_or_dtype_names_the_input(shared, lenet):
    g, exe = lenet
    with pytest.raises(graphrt.InputError, match="'data'"):
        exe(np.zeros((2, 1, 27, 28), np.float32))
    with pytest.raises(graphrt.InputError, match="'data'"):
        exe(np.zeros((2, 28, 28), np.float32))
    with pytest.raises(graphrt.InputError, match="'data'"):
        exe(np.zeros((2, 1, 28, 28), np.complex64))
    with pytest.raises(graphrt.InputError):
        exe({"data": np.zeros((2, 1, 28, 28), np.float32), "extra": np.zeros(2)})
    # integers that convert exactly are converted (uint8 images), floats of another width too
    pixels = np.random.default_rng(0).integers(0, 256, (2, 1, 28, 28)).astype(np.uint8)
    np.testing.assert_array_equal(exe(pixels), exe(pixels.astype(np.float32)))
    np.testing.assert_array_equal(exe(pixels.astype(np.float64)), exe(pixels.astype(np.float32)))
    np.testing.assert_array_equal(exe(np.zeros((2, 1, 28, 28)).tolist()),  # Python lists take the dtype
                                  exe(np.zeros((2, 1, 28, 28), np.float32)))
    ints = np.arange(2 * 28 * 28).reshape(2, 1, 28, 28) - 700  # integers a float32 holds exactly
    np.testing.assert_array_equal(exe(ints), exe(ints.astype(np.float32)))
    with pytest.raises(graphrt.InputError, match="got int64, which does not convert exactly"):
        exe(ints + 2**24)  # beyond float32's integers: they would round

    train = load(shared, SMALL[1])
    exe = graphrt.compile(train, "cpu", batch_size=4, opt_level=1)
    x = make_feeds(train, 2)
    with pytest.raises(graphrt.InputError, match="'label'"):
        exe({"data": x["data"], "label": np.zeros(2, np.float32)})
    with pytest.raises(graphrt.InputError, match="'label'"):
        exe({"data": x["data"], "label": np.zeros(3, np.int64)})  # batch 3 against 2


# ---- transfers and uploads -----------------------------------------------------------------------
@pytest.mark.parametrize("case", [SMALL[0], SMALL[1]], ids=model_id)
def test_ledger_counts_one_copy_per_input_and_output_per_call(shared, case):
    g = load(shared, case)
    exe = graphrt.compile(g, "cpu", batch_size=4, opt_level=2)
    used = {t for n in exe.graph.nodes for t in n.inputs if t in exe.graph.params}
    uploads = dict(exe.ledger.uploads)
    assert uploads["invocations"] == len(used) == len(exe.params)
    assert uploads["bytes"] == sum(exe.graph.params[p].nbytes for p in used)
    exe.ledger.reset()
    calls = [make_feeds(g, b, seed=b) for b in (4, 1, 3)]
    for x in calls:
        exe(x)
    s = exe.ledger.summary()
    assert s["HtoD"]["invocations"] == len(calls) * len(g.inputs)
    assert s["HtoD"]["bytes"] == sum(v.nbytes for x in calls for v in x.values())
    assert s["DtoH"]["invocations"] == len(calls) * len(g.outputs)
    assert s["DtoD"]["invocations"] == 0
    assert exe.ledger.uploads == uploads  # parameters are not uploaded again
    exe.ledger.reset()
    assert exe.ledger.summary()["HtoD"]["invocations"] == 0 and exe.ledger.uploads == uploads


# ---- no state leaks between calls ----------------------------------------------------------------
@pytest.mark.parametrize("level", [0, 3])
def test_repeated_calls_give_identical_results(shared, level):
    case = SMALL[2]  # cifar10_quick: padded convolutions with workspaces
    g = load(shared, case)
    exe = graphrt.compile(g, "cpu", batch_size=4, opt_level=level)
    x1, x4 = make_feeds(g, 1), make_feeds(g, 4, seed=3)
    big = np.random.default_rng(5).standard_normal((4, 3, 32, 32)).astype(np.float32) * 1e3
    first1, first4 = exe(x1), exe(x4)
    exe(big)  # large values everywhere in the arena, padded borders included
    np.testing.assert_array_equal(exe(x1), first1)
    np.testing.assert_array_equal(exe(x4), first4)
    np.testing.assert_array_equal(exe(x1), first1)
    fresh = graphrt.compile(g, "cpu", batch_size=4, opt_level=level)
    assert rel_err(exe(x1), fresh(x1)) < 1e-6
    assert_close(g, exe(big), graphrt.run_reference(g, big))


# ---- several outputs -----------------------------------------------------------------------------
def test_multi_output_graph_returns_a_dict_by_original_names():
    rng = np.random.default_rng(2)
    g = Graph("two_heads")
    x = g.add_input("image", (None, 2, 5, 5))
    c = g.add_node("conv2d", [x, g.add_param("w", (rng.standard_normal((3, 2, 3, 3)) * 0.3).astype(np.float32))],
                   name="features", attrs={"pads": 1})
    r = g.add_node("relu", [c], name="relu")
    f = g.add_node("flatten", [r], name="flat")
    logits = g.add_node("dense", [f, g.add_param("fc", (rng.standard_normal((4, 75)) * 0.1).astype(np.float32))],
                        name="logits")
    prob = g.add_node("softmax", [logits], name="prob")
    g.set_outputs([prob, "features", "image"])  # the input itself passed through
    x = rng.standard_normal((3, 2, 5, 5)).astype(np.float32)
    want = graphrt.run_reference(g, x)
    for level in (0, 3):
        exe = graphrt.compile(g, "cpu", batch_size=4, opt_level=level)
        got = exe(x)
        assert isinstance(got, dict) and list(got) == ["prob", "features", "image"]
        assert_close(g, got, want, tol=1e-5)
        np.testing.assert_array_equal(got["image"], x)
        assert exe.ledger.summary()["DtoH"]["invocations"] == 3
        chunked = exe(np.concatenate([x, x]))  # 6 > 4: chunks, still a dict
        assert list(chunked) == ["prob", "features", "image"]
        assert rel_err(chunked["prob"][3:], want["prob"]) < 1e-5


def test_train_test_net_returns_its_losses(shared):
    case = SMALL[1]
    g = load(shared, case)
    got = graphrt.compile(g, "cpu", batch_size=4, opt_level=3)(make_feeds(g, 3))
    assert sorted(got) == ["accuracy", "loss"] and got["loss"].shape == ()


# ---- out of memory -------------------------------------------------------------------------------
@pytest.fixture
def no_alloc(monkeypatch):
    """64 GiB available and no arena allocation allowed."""
    def refuse(self, nbytes):
        raise AssertionError(f"allocated an arena of {nbytes} bytes")

    monkeypatch.setattr(CpuDevice, "available_bytes", lambda self: 64 << 30)
    monkeypatch.setattr(CpuDevice, "alloc_arena", refuse)


def test_absurd_batch_raises_out_of_memory_before_allocating(shared, no_alloc):
    g = load(shared, BIG[0])
    with pytest.raises(OutOfMemoryError, match="batch_size") as info:
        graphrt.compile(g, "cpu", batch_size=10**7, opt_level=0)
    assert isinstance(info.value, graphrt.GraphrtError)
    assert "10000000" in str(info.value)


def test_out_of_memory_is_checked_against_the_device(lenet, monkeypatch):
    g, exe = lenet
    need = exe.plan.arena_bytes + sum(exe.graph.params[t].nbytes for t in exe.params)
    monkeypatch.setattr(CpuDevice, "available_bytes", lambda self: need - 1)
    allocated = []
    real = CpuDevice.alloc_arena
    monkeypatch.setattr(CpuDevice, "alloc_arena", lambda self, n: allocated.append(n) or real(self, n))
    with pytest.raises(OutOfMemoryError):
        graphrt.compile(g, "cpu", batch_size=4, opt_level=3)
    assert allocated == []
    monkeypatch.setattr(CpuDevice, "available_bytes", lambda self: need)
    graphrt.compile(g, "cpu", batch_size=4, opt_level=3)  # exactly enough: arena and parameters
    assert allocated == [exe.plan.arena_bytes]


def test_bad_batch_size():
    g = Graph("tiny")
    g.set_outputs([g.add_node("relu", [g.add_input("x", (None, 3))], name="r")])
    with pytest.raises(graphrt.GraphrtError, match="batch_size"):
        graphrt.compile(g, "cpu", batch_size=0)


# ---- one input policy ------------------------------------------------------------------------

def test_every_floating_layout_is_converted_once_and_gives_the_right_answer(tmp_path):
    """Another float width or byte order, non-contiguous, Fortran order, read-only, memory-mapped:
    all converted while staging (calls and streams) and equal to the plain float32 answer."""
    g = graphrt.Graph("policy")
    x = g.add_input("x", (None, 6))
    g.set_outputs([g.add_node("softmax", [g.add_node("relu", [x])])])
    exe = graphrt.compile(g, batch_size=4)
    base = np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)
    want = graphrt.run_reference(g, base)
    mapped = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32, shape=(4, 6))
    mapped[...] = base
    readonly = base.copy()
    readonly.setflags(write=False)
    wide = np.zeros((4, 12), np.float32)
    wide[:, ::2] = base
    variants = {"float64": base.astype(np.float64), "float16": base.astype(np.float16),
                "big-endian": base.astype(">f4"), "fortran": np.asfortranarray(base),
                "strided": wide[:, ::2], "read-only": readonly, "memmap": mapped,
                "list": base.tolist()}
    for name, value in variants.items():
        tol = 1e-3 if name == "float16" else 1e-6
        np.testing.assert_allclose(exe(value), want, rtol=tol, atol=tol, err_msg=name)
        [streamed] = list(exe.stream([value]))
        np.testing.assert_allclose(streamed, want, rtol=tol, atol=tol, err_msg=name)


@pytest.mark.parametrize("dtype", ["int32", "int64", "uint32"])
def test_integers_a_float_input_cannot_hold_are_an_input_error(dtype):
    """Integer data converts when no value changes (uint8 images, class labels); integers beyond
    float32's 2**24 would round, and are refused in calls and streams alike."""
    g = graphrt.Graph("policy")
    x = g.add_input("x", (None, 6))
    g.set_outputs([g.add_node("relu", [x])])
    exe = graphrt.compile(g, batch_size=4)
    np.testing.assert_array_equal(exe(np.full((4, 6), 7, dtype)), np.full((4, 6), 7, np.float32))
    big = np.full((4, 6), 2**24 + 1, dtype)
    with pytest.raises(graphrt.InputError, match=f"expects dtype float32, got {dtype}"):
        exe(big)
    with pytest.raises(graphrt.InputError, match="expects dtype float32"):
        list(exe.stream([big]))


def test_floats_into_an_integer_input_are_an_input_error():
    g = graphrt.Graph("labels")
    x = g.add_input("x", (None, 3))
    label = g.add_input("label", (None,), "int64")
    g.set_outputs([g.add_node("softmax_cross_entropy", [x, label])])
    feeds = {"x": np.zeros((2, 3), np.float32), "label": np.array([1.0, 2.0], np.float32)}
    with pytest.raises(graphrt.InputError, match="expects dtype int64, got float32"):
        graphrt.run_reference(g, feeds)
