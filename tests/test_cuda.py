"""The cuda device: kernel sources that compile, an import that needs no CuPy, clear errors without a
GPU, every op and seed model against the cpu device — on the emulated device (the same kernels
compiled for the CPU) everywhere, and on a real GPU where there is one.

GPU tests skip without a GPU unless ``GRAPHRT_DEVICE=cuda`` (then a missing GPU fails them: the GPU
script ``bench/gpu_check.sh`` sets it). Tolerance against the cpu device: relative error (DESIGN.md)
below 1e-5, or 1e-3 with TF32 (``GRAPHRT_TF32=1``).
"""
from __future__ import annotations

import builtins
import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import graphrt
from graphrt import Graph
from graphrt.devices import get_device
from graphrt.devices.cuda import CudaDevice, cuda_available
from graphrt.devices.cuda.bind.registry import BINDERS, bind
from graphrt.devices.cuda.calls import Call, Fallback, collapse
from graphrt.devices.cuda.runtime.gemm import Gemm, blas_plan
from graphrt.devices.cuda.sources import (BARRIER_KERNELS, CTYPES, PRELUDE, SIGNATURES, SOURCES,
                                          kernel_params, module_source)
from tools.cuda_emulator import EmulatedBackend, emulated_device, host_compiler, strided_at
from graphrt.ir.errors import GraphrtError, UnsupportedError
from graphrt.ops import all_ops
from graphrt.testing import (assert_equivalent, first_divergence, inception_graphs, relative_error,
                             sequential_graphs)

ROOT = Path(__file__).resolve().parents[1]
WANT_GPU = os.environ.get("GRAPHRT_DEVICE", "").lower() == "cuda"
HAVE_GPU = cuda_available()
TF32 = os.environ.get("GRAPHRT_TF32", "") not in ("", "0")
RTOL = 1e-3 if TF32 else 1e-5

requires_gpu = pytest.mark.skipif(not (HAVE_GPU or WANT_GPU), reason="no GPU (CuPy sees none)")
requires_cxx = pytest.mark.skipif(host_compiler() is None, reason="no host C++ compiler")
DEVICES = [pytest.param("emulated", marks=requires_cxx), pytest.param("gpu", marks=requires_gpu)]

# the ops of the seed models, inference and the training step's optimizer: each has a kernel
SEED_OPS = {"relu", "tanh", "sigmoid", "scale", "dropout", "identity", "elementwise_chain", "add",
            "mul", "conv2d", "dense", "matmul", "max_pool", "avg_pool", "lrn", "batch_norm",
            "channel_affine", "softmax", "log_softmax", "softmax_cross_entropy", "nll_loss",
            "accuracy", "sgd_update", "step_counter", "concat", "split", "flatten", "reshape",
            "transpose", "zero_pad", "pad", "copy_to_device", "copy_to_host"}


def make_device(kind: str, **options) -> CudaDevice:
    return emulated_device(**options) if kind == "emulated" else CudaDevice(**options)


# ---- without a GPU: imports, errors, sources -----------------------------------------------------
def _block_cupy(monkeypatch):
    real = builtins.__import__

    def fake(name, *args, **kwargs):
        if name == "cupy" or name.startswith(("cupy.", "cupy_backends", "cupyx")):
            raise ImportError(f"No module named {name!r} (blocked by the test)")
        return real(name, *args, **kwargs)
    for mod in [m for m in sys.modules if m == "cupy" or m.startswith(("cupy.", "cupy_backends"))]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setattr(builtins, "__import__", fake)


def test_module_imports_without_cupy(monkeypatch):
    import graphrt.devices as package

    _block_cupy(monkeypatch)
    # a fresh import of every cuda module; the originals come back afterwards
    for mod in [m for m in sys.modules if m.startswith("graphrt.devices.cuda")]:
        monkeypatch.delitem(sys.modules, mod, raising=False)
    monkeypatch.setattr(package, "cuda", getattr(package, "cuda", None), raising=False)
    cuda = importlib.import_module("graphrt.devices.cuda")
    assert not cuda.cuda_available()
    assert "cupy" not in sys.modules
    assert get_device("auto").kind == "cpu"
    with pytest.raises(UnsupportedError, match="needs CuPy.*pip install"):
        get_device("cuda")
    with pytest.raises(GraphrtError, match="CuPy"):
        graphrt.compile(_small_graph(), device="cuda")


@pytest.mark.skipif(HAVE_GPU, reason="a GPU is present")
def test_with_cupy_installed_but_no_gpu():
    cupy = pytest.importorskip("cupy")
    assert not cupy.is_available() and not cuda_available()
    assert get_device("auto").kind == "cpu"
    with pytest.raises(UnsupportedError, match="no usable GPU|sees no GPU") as err:
        get_device("cuda")
    assert "device='cpu'" in str(err.value)


def test_auto_is_cpu_without_a_gpu():
    if HAVE_GPU:
        assert get_device("auto").kind == "cuda"
    else:
        assert get_device("auto").kind == "cpu"


NVCC = shutil.which("nvcc") or ("/usr/local/bin/nvcc" if os.path.exists("/usr/local/bin/nvcc") else None)


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_kernel_source_compiles_with_nvcc(dtype, tmp_path):
    """Each source on its own (with the prelude) and the whole module, for sm_90, as PTX."""
    ctype = CTYPES[dtype]
    units = {name: f"typedef {ctype} T;\n" + PRELUDE + src for name, src in SOURCES.items()}
    units["module"] = module_source(dtype)
    for name, text in units.items():
        path = tmp_path / f"{name}_{dtype}.cu"
        path.write_text(text)
        proc = subprocess.run([NVCC, "-arch=sm_90", "--ptx", "-o", os.devnull, str(path)],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{name} ({dtype}) does not compile:\n{proc.stderr[-3000:]}"


def _nvrtc():
    try:
        from cuda.bindings import nvrtc

        return nvrtc if int(nvrtc.nvrtcVersion()[0]) == 0 else None
    except Exception:
        return None


@pytest.mark.skipif(_nvrtc() is None, reason="cuda-bindings with libnvrtc is not installed")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_module_compiles_with_nvrtc(dtype):
    """The runtime path: CuPy compiles the module with NVRTC (no CUDA headers, no host compiler)."""
    nvrtc = _nvrtc()
    err, prog = nvrtc.nvrtcCreateProgram(module_source(dtype).encode(), b"graphrt.cu", 0, [], [])
    assert int(err) == 0
    opts = [b"--gpu-architecture=compute_90", b"-std=c++17"]
    (err,) = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
    _, size = nvrtc.nvrtcGetProgramLogSize(prog)
    log = b" " * size
    nvrtc.nvrtcGetProgramLog(prog, log)
    nvrtc.nvrtcDestroyProgram(prog)
    assert int(err) == 0, log.decode(errors="replace")


def test_signatures_parse_and_match_the_host_wrappers():
    params = kernel_params()
    assert set(params) == set(SIGNATURES) == {
        "ew_unary", "ew_nary", "copy_nd", "pad_nd", "bias_act", "im2col", "gemm", "pool2d", "lrn",
        "bn_coeffs", "channel_affine", "softmax", "class_loss", "sgd_update", "counter_inc"}
    assert BARRIER_KERNELS == {"gemm", "softmax", "class_loss"}
    for name, kinds in SIGNATURES.items():
        assert len(kinds) == len(params[name])


def test_every_op_has_a_cuda_kernel_or_runs_its_forward_on_the_device():
    assert SEED_OPS <= set(BINDERS), sorted(SEED_OPS - set(BINDERS))
    assert set(BINDERS) <= set(all_ops())
    # the rest (backward ops of training) run their reference forward on the device arrays
    x = np.zeros((2, 3), np.float32)
    calls = bind("relu_grad" if "relu_grad" in all_ops() else "no_such_op", {}, [x, x], [x], None)
    assert len(calls) == 1 and isinstance(calls[0], Fallback)


def test_collapse_merges_what_every_operand_walks_contiguously():
    assert collapse((2, 3, 4), (12, 4, 1), (12, 4, 1)) == ((24,), [(1,), (1,)])
    # a channel slice of a wider tensor: the batch axis stays apart
    assert collapse((2, 3, 4), (40, 4, 1)) == ((2, 12), [(40, 1)])
    assert collapse((1, 1), (5, 1)) == ((1,), [(0,)])
    assert collapse((2, 1, 3), (3, 9, 1), (0, 0, 1)) == ((2, 3), [(3, 1), (0, 1)])


def test_blas_plan_is_cublas_column_major_of_the_row_major_product():
    a = np.zeros((4, 5), np.float32)
    g = Gemm(np.dtype(np.float32), 1, 4, 6, 5, a, (0, 5, 1), a, (0, 6, 1), a, (0, 6, 1))
    p = blas_plan(g)
    assert (p.transa, p.transb, p.m, p.n, p.k, p.lda, p.ldb, p.ldc) == ("N", "N", 6, 4, 5, 6, 5, 6)
    # dense: B = W^T with W (6, 5) contiguous -> column stride 5, row stride 1: cuBLAS transposes
    g = Gemm(np.dtype(np.float32), 1, 4, 6, 5, a, (0, 5, 1), a, (0, 1, 5), a, (0, 6, 1))
    p = blas_plan(g)
    assert (p.transa, p.lda) == ("T", 5)
    # no unit stride at all: our kernel
    g = Gemm(np.dtype(np.float32), 1, 4, 6, 5, a, (0, 10, 2), a, (0, 6, 1), a, (0, 6, 1))
    assert blas_plan(g) is None


# ---- graphs --------------------------------------------------------------------------------------
def _small_graph() -> Graph:
    rng = np.random.default_rng(0)
    g = Graph("small")
    x = g.add_input("x", (None, 3, 8, 8))
    w = g.add_param("w", rng.standard_normal((4, 3, 3, 3)).astype(np.float32))
    y = g.add_node("relu", [g.add_node("conv2d", [x, w], attrs={"pads": 1})])
    g.set_outputs([g.add_node("max_pool", [y], attrs={"kernel": 2, "stride": 2})])
    return g.verify()


def _param(g, rng, name, shape, scale=0.5):
    return g.add_param(name, (rng.standard_normal(shape) * scale).astype(np.float32))


def _one_node(op, shapes, params=(), attrs=None, dtype="float32", seed=0, outputs=None,
              batch=3):
    """A graph of one ``op`` node: ``shapes`` are batched inputs (without the batch), ``params``
    parameter arrays; returns (graph, feeds)."""
    rng = np.random.default_rng(seed)
    g = Graph(op)
    names = [g.add_input(f"in{i}", (None,) + tuple(s), dtype) for i, s in enumerate(shapes)]
    names += [g.add_param(f"p{i}", np.asarray(p)) for i, p in enumerate(params)]
    y = g.add_node(op, names, name="node", attrs=attrs or {})
    g.set_outputs(list(y) if isinstance(y, tuple) else [y])
    g.verify()
    feeds = {n: rng.standard_normal((batch,) + tuple(s)).astype(dtype)
             for n, s in zip(names, shapes)}
    return g, feeds


def _case_list():
    rng = np.random.default_rng(1)
    f32 = np.float32

    def r(*shape, scale=0.5):
        return (rng.standard_normal(shape) * scale).astype(f32)

    cases = {
        "relu": ("relu", [(4, 5, 6)], [], {}),
        "leaky_relu": ("relu", [(4, 5, 6)], [], {"negative_slope": 0.1}),
        "tanh": ("tanh", [(7, 9)], [], {}),
        "sigmoid": ("sigmoid", [(7, 9)], [], {}),
        "scale_power": ("scale", [(7, 9)], [], {"scale": 0.5, "shift": 2.0, "power": 2.0}),
        "dropout": ("dropout", [(5, 4)], [], {"rate": 0.5}),
        "identity": ("identity", [(5, 4)], [], {}),
        "chain": ("elementwise_chain", [(3, 5, 5)], [], {"steps": [
            ("scale", {"scale": 2.0}), ("relu", {"negative_slope": 0.2}), ("tanh", {}),
            ("sigmoid", {}), ("scale", {"scale": 0.5, "shift": 1.0}), ("identity", {})]}),
        "add": ("add", [(3, 4, 4), (3, 4, 4)], [], {}),
        "add_coeffs": ("add", [(3, 4, 4)] * 6, [], {"coeffs": (1.0, -0.5, 2.0, 1.0, 0.25, -1.0)}),
        "add_broadcast": ("add", [(3, 4, 4)], [r(3, 1, 1)], {}),
        "mul": ("mul", [(3, 4, 4), (3, 4, 4), (3, 4, 4)], [], {}),
        "mul_broadcast": ("mul", [(2, 5)], [r(5)], {}),
        "conv": ("conv2d", [(3, 9, 9)], [r(4, 3, 3, 3), r(4)], {"pads": 1}),
        "conv_strided": ("conv2d", [(4, 11, 10)], [r(6, 2, 3, 2)],
                         {"stride": (2, 3), "pads": (1, 0, 2, 1), "dilation": (2, 1), "groups": 2,
                          "activation": "relu"}),
        "conv_pointwise": ("conv2d", [(6, 5, 5)], [r(4, 3, 1, 1), r(4)],
                           {"groups": 2, "activation": "sigmoid"}),
        "conv_tanh": ("conv2d", [(2, 6, 6)], [r(3, 2, 5, 5)], {"pads": 2, "activation": "tanh"}),
        "dense": ("dense", [(7,)], [r(5, 7), r(5)], {"activation": "relu", "negative_slope": 0.1}),
        "dense_nobias": ("dense", [(70,)], [r(65, 70)], {}),
        "matmul": ("matmul", [(4, 6)], [r(6, 3)], {}),
        "matmul_stack": ("matmul", [(2, 4, 6)], [r(6, 5)], {}),
        "matmul_vector": ("matmul", [(6,)], [r(6, 2)], {}),
        "max_pool": ("max_pool", [(3, 7, 7)], [], {"kernel": 3, "stride": 2, "pads": 1,
                                                   "ceil_mode": True}),
        "avg_pool": ("avg_pool", [(3, 7, 8)], [], {"kernel": (3, 2), "stride": 2, "pads": (1, 1, 1, 0),
                                                   "ceil_mode": True}),
        "avg_pool_excl": ("avg_pool", [(3, 7, 7)], [], {"kernel": 3, "stride": 2, "pads": 1,
                                                        "count_include_pad": False}),
        "global_pool": ("avg_pool", [(5, 4, 3)], [], {"global_pool": True}),
        "global_max": ("max_pool", [(5, 4, 3)], [], {"global_pool": True}),
        "lrn": ("lrn", [(7, 4, 5)], [], {"size": 5, "alpha": 1e-2, "beta": 0.75, "k": 2.0}),
        "lrn3": ("lrn", [(4, 3, 3)], [], {"size": 3, "alpha": 1e-1, "beta": 0.5, "k": 1.0}),
        "batch_norm": ("batch_norm", [(4, 3, 3)], [r(4), np.abs(r(4)) + 0.5, r(4) + 1, r(4)],
                       {"eps": 1e-3}),
        "batch_norm_plain": ("batch_norm", [(4,)], [r(4), np.abs(r(4)) + 0.5], {}),
        "channel_affine": ("channel_affine", [(4, 2, 3)], [r(4), r(4)], {}),
        "channel_affine_scale": ("channel_affine", [(4, 2)], [r(4)], {}),
        "softmax": ("softmax", [(10,)], [], {}),
        "softmax_channels": ("softmax", [(4, 3, 3)], [], {"axis": 1}),
        "log_softmax": ("log_softmax", [(300,)], [], {"axis": -1}),
        "log_softmax_axis2": ("log_softmax", [(2, 5, 3)], [], {"axis": 2}),
        "concat": ("concat", [(2, 3, 3), (4, 3, 3)], [], {"axis": 1}),
        "concat_w": ("concat", [(2, 3, 3), (2, 3, 1)], [], {"axis": 3}),
        "split": ("split", [(5, 2, 2)], [], {"axis": 1, "sizes": (2, 3)}),
        "flatten": ("flatten", [(3, 4, 2)], [], {}),
        "reshape": ("reshape", [(3, 4, 2)], [], {"shape": (2, -1)}),
        "transpose": ("transpose", [(3, 4, 2)], [], {"perm": (0, 3, 1, 2)}),
        "zero_pad": ("zero_pad", [(2, 5, 6)], [], {"pads": (1, -1, 2, -2)}),
        "pad": ("pad", [(2, 5)], [], {"pads": (0, 1, -1, 0, 2, 3), "value": 1.5}),
    }
    return cases


CASES = _case_list()


def compare_with_cpu(g, feeds, device_kind, levels=(0, 3), rtol=None, **device_options):
    """Compile ``g`` on the cpu and cuda devices at each level; outputs must agree within rtol."""
    rtol = RTOL if rtol is None else rtol
    n = next(iter(feeds.values())).shape[0]
    for level in levels:
        want = graphrt.compile(g, device="cpu", batch_size=n, opt_level=level)(feeds)
        exe = graphrt.compile(g, device=make_device(device_kind, **device_options), batch_size=n,
                              opt_level=level)
        for run in range(4):  # plain, plain timed, captured and replayed, the faster
            got = exe(feeds)
            want_d = want if isinstance(want, dict) else {"out": want}
            got_d = got if isinstance(got, dict) else {"out": got}
            for name, ref in want_d.items():
                err = relative_error(got_d[name], ref)
                if not err < rtol:
                    culprit = first_divergence(exe, g, feeds, max(rtol, 1e-4))
                    raise AssertionError(f"{g.name} level {level} run {run}: output {name} relative "
                                         f"error {err:.3g} >= {rtol}; first departing node: {culprit}")
    return exe


@pytest.mark.parametrize("kind", DEVICES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_every_op_matches_the_cpu_device(case, kind):
    op, shapes, params, attrs = CASES[case]
    g, feeds = _one_node(op, shapes, params, attrs)
    compare_with_cpu(g, feeds, kind)


@pytest.mark.parametrize("kind", DEVICES)
def test_float64_graphs_run_in_double(kind):
    rng = np.random.default_rng(3)
    g, feeds = _one_node("conv2d", [(3, 6, 6)], [rng.standard_normal((2, 3, 3, 3)),
                                                  rng.standard_normal(2)], {"pads": 1},
                         dtype="float64")
    compare_with_cpu(g, feeds, kind, rtol=1e-12 if not TF32 else 1e-10)


@pytest.mark.parametrize("kind", DEVICES)
@pytest.mark.parametrize("op", ["softmax_cross_entropy", "nll_loss", "accuracy"])
@pytest.mark.parametrize("label_dtype", ["int64", "float32", "int32"])
def test_losses_match_the_cpu_device(op, label_dtype, kind):
    rng = np.random.default_rng(4)
    g = Graph(op)
    x = g.add_input("x", (None, 7))
    lab = g.add_input("label", (None,), label_dtype)
    attrs = {"top_k": 2} if op == "accuracy" else {}
    g.set_outputs([g.add_node(op, [x, lab], attrs=attrs)])
    g.verify()
    feeds = {"x": rng.standard_normal((9, 7)).astype(np.float32),
             "label": rng.integers(0, 7, 9).astype(label_dtype)}
    compare_with_cpu(g, feeds, kind)


@requires_cxx
def test_an_invalid_label_is_refused_before_the_step_and_gives_nan_in_the_kernel():
    """Host labels are checked before the step on every device (an InputError, nothing run);
    labels the host does not see (already on the device) make the kernel write NaN."""
    g = Graph("xent")
    x = g.add_input("x", (None, 3))
    lab = g.add_input("label", (None,), "int64")
    g.set_outputs([g.add_node("softmax_cross_entropy", [x, lab])])
    exe = graphrt.compile(g.verify(), device=make_device("emulated"), batch_size=2)
    feeds = {"x": np.zeros((2, 3), np.float32), "label": np.array([0, 5])}
    with pytest.raises(graphrt.InputError, match=r"labels must lie in \[0, 3\)"):
        exe(feeds)
    out = exe._step(feeds, 2, copy=True)[0]  # the kernel itself, past the host check
    assert np.isnan(out)


@pytest.mark.parametrize("kind", DEVICES)
@settings(max_examples=12, deadline=None)
@given(graph=sequential_graphs(max_nodes=6), batch=st.integers(1, 3))
def test_random_sequential_graphs_match_the_reference(graph, batch, kind):
    assert_equivalent(graph, opt_levels=(0, 3), devices=[make_device(kind)], batch=batch,
                      rtol=max(RTOL, 1e-4))


@pytest.mark.parametrize("kind", DEVICES)
@settings(max_examples=10, deadline=None)
@given(graph=inception_graphs(max_blocks=2), batch=st.integers(1, 2))
def test_random_inception_graphs_match_the_reference(graph, batch, kind):
    """Concat branches written into their slices, split outputs read from theirs."""
    assert_equivalent(graph, opt_levels=(1, 2, 3), devices=[make_device(kind)], batch=batch,
                      rtol=max(RTOL, 1e-4))


@requires_cxx
def test_gemms_through_the_cublas_layout_match_the_kernel():
    """The emulated device computes cuBLAS's column-major calls (as planned for the GPU) with numpy:
    the row-major to column-major mapping of conv2d, dense and matmul is checked without a GPU."""
    for case in ("conv", "conv_strided", "conv_pointwise", "dense", "dense_nobias", "matmul",
                 "matmul_stack", "matmul_vector"):
        op, shapes, params, attrs = CASES[case]
        g, feeds = _one_node(op, shapes, params, attrs)
        compare_with_cpu(g, feeds, "emulated", gemm="blas")


# ---- the pipeline: programs, streams, ledger ------------------------------------------------------
@pytest.mark.parametrize("kind", DEVICES)
def test_ledger_counts_one_copy_each_way_per_step(kind):
    g = _small_graph()
    exe = graphrt.compile(g, device=make_device(kind), batch_size=4, opt_level=3)
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((4, 3, 8, 8)).astype(np.float32) for _ in range(10)]
    cpu = graphrt.compile(g, device="cpu", batch_size=4, opt_level=3)
    exe.ledger.reset()
    for x in xs:
        assert relative_error(exe(x), cpu(x)) < RTOL
    s = exe.ledger.summary()
    assert (s["HtoD"]["invocations"], s["DtoH"]["invocations"], s["DtoD"]["invocations"]) == (10, 10, 0)
    exe.ledger.reset()
    outs = list(exe.stream(xs + [xs[0][:3]]))  # and a final partial batch
    s = exe.ledger.summary()
    assert (s["HtoD"]["invocations"], s["DtoH"]["invocations"]) == (11, 11)
    for x, y in zip(xs + [xs[0][:3]], outs):
        assert relative_error(y, cpu(x)) < RTOL


@pytest.mark.parametrize("kind", DEVICES)
def test_programs_are_captured_after_two_plain_runs_and_replayed(kind):
    """The emulated device's "graph" is its list of steps replayed, so the state machine of
    run_program (plain, timed plain, capture, choice) is tested without a GPU too."""
    dev = make_device(kind, graphs=True)
    g = _small_graph()
    exe = graphrt.compile(g, device=dev, batch_size=4, opt_level=3)
    cpu = graphrt.compile(g, device="cpu", batch_size=4, opt_level=3)
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((4, 3, 8, 8)).astype(np.float32) for _ in range(5)]
    modes = []
    for x in xs:
        assert relative_error(exe(x), cpu(x)) < RTOL
        modes.append(dev.run_mode(exe.program(4))[0])
    assert modes[:2] == ["plain", "plain"] and all(m.startswith("graph") for m in modes[2:]), modes
    mode, why = dev.run_mode(exe.program(4))
    assert "captured" in why and "graph replay" in why
    # a partial batch is a program of its own, captured on its third run
    for _ in range(3):
        assert relative_error(exe(xs[0][:3]), cpu(xs[0][:3])) < RTOL
    assert dev.run_mode(exe.program(3))[0].startswith("graph")


@pytest.mark.parametrize("kind", DEVICES)
def test_graphs_auto_keeps_the_faster_and_off_stays_plain(kind):
    g = _small_graph()
    x = np.ones((2, 3, 8, 8), np.float32)
    dev = make_device(kind, graphs="auto")
    exe = graphrt.compile(g, device=dev, batch_size=2)
    for _ in range(4):
        exe(x)
    mode, why = dev.run_mode(exe.program(2))
    assert "plain step" in why and "graph replay" in why, why
    assert mode.startswith("graph") == ("faster" not in why)
    dev = make_device(kind, graphs=False)
    exe = graphrt.compile(g, device=dev, batch_size=2)
    for _ in range(4):
        exe(x)
    mode, why = dev.run_mode(exe.program(2))
    assert mode == "plain" and "off" in why


@requires_cxx
def test_a_step_with_a_reference_fallback_is_not_captured():
    g = Graph("fallback")
    x = g.add_input("x", (None, 3))
    g.set_outputs([g.add_node("relu", [x])])
    g.verify()
    dev = make_device("emulated", graphs=True)
    exe = graphrt.compile(g, device=dev, batch_size=2, opt_level=0)
    program = exe.program(2)
    program.launches[0].op = "no_kernel_op"  # as an op added after the cuda device would be
    program.launches[0].fn = dev.kernel("no_kernel_op")
    from graphrt.ops import get_op

    import graphrt.devices.cuda.bind.registry as kernels
    real = kernels.bind

    def bind(op, attrs, inputs, outputs, ws):
        if op == "no_kernel_op":
            return [kernels.Fallback(op, get_op("relu").forward, {"negative_slope": 0.0}, inputs,
                                     outputs, "no cuda kernel for this op")]
        return real(op, attrs, inputs, outputs, ws)
    kernels.bind = bind
    try:
        xv = np.array([[-1, 2, -3], [4, -5, 6]], np.float32)
        for _ in range(4):
            np.testing.assert_array_equal(exe(xv), np.maximum(xv, 0))
    finally:
        kernels.bind = real
    mode, why = dev.run_mode(program)
    assert mode == "plain" and "no_kernel_op runs its reference forward" in why


@requires_cxx
def test_copy_stream_errors_reach_the_waiter():
    dev = make_device("emulated")
    s = dev.copy_stream()

    def boom():
        raise ValueError("copy failed")
    s.submit(boom)
    ev = s.record_event()
    with pytest.raises(ValueError, match="copy failed"):
        ev.synchronize()
    with pytest.raises(ValueError):
        s.close()


@pytest.mark.parametrize("convention", ["pytorch", "caffe"])
@pytest.mark.parametrize("kind", DEVICES)
def test_training_steps_match_the_cpu_device(kind, convention):
    """sgd_update (both momentum conventions, a rate that changes) and step_counter on the device
    (the backward ops run their forward there)."""
    rng = np.random.default_rng(5)
    g = Graph("mlp")
    x = g.add_input("x", (None, 6))
    h = g.add_node("dense", [x, _param(g, rng, "w1", (8, 6)), _param(g, rng, "b1", (8,))])
    h = g.add_node("relu", [h])
    g.set_outputs([g.add_node("dense", [h, _param(g, rng, "w2", (4, 8)), _param(g, rng, "b2", (4,))])])
    g.verify()
    opt = graphrt.optim.SGD(lr=0.1, momentum=0.9, weight_decay=1e-3, policy="step", gamma=0.5,
                            stepsize=2, convention=convention)
    xs = rng.standard_normal((4, 5, 6)).astype(np.float32)
    ys = rng.integers(0, 4, (4, 5))
    trainers = [graphrt.Trainer(g, optimizer=opt, device=d, batch_size=5)
                for d in ("cpu", make_device(kind))]
    for xb, yb in zip(xs, ys):
        losses = [t.step(xb, yb) for t in trainers]
        assert abs(losses[0] - losses[1]) <= 1e-4 * max(1.0, abs(losses[0]))
    pc, pd = (t.parameters() for t in trainers)
    for name in pc:
        assert relative_error(pd[name], pc[name]) < 1e-4, name


# ---- seed models ---------------------------------------------------------------------------------
def _seed_models():
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        spec = importlib.util.spec_from_file_location("graphrt_examples_seed_models_test",
                                                      ROOT / "examples" / "seed_models.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.pop(0)


SEED_MODELS = ["keras_simple_ann", "keras_simple_cnn", "caffe_lenet", "caffe_cifar10_quick",
               "caffe_alexnet", "caffe_googlenet", "mxnet_alexnet", "torch_lenet",
               "torch_inception_bn"]
SMALL_SEED_MODELS = ["keras_simple_ann", "caffe_lenet", "torch_lenet"]


def _seed_model(name):
    try:
        module = _seed_models()
    except Exception as err:  # pragma: no cover - examples missing
        pytest.skip(f"examples/seed_models.py: {err}")
    found = [m for m in module.seed_models() if m.name == name]
    if not found:
        pytest.skip(f"{name} needs ../shared")
    return found[0]


def _seed_check(name, kind, batch=None):
    model = _seed_model(name)
    g = model.build()
    batch = batch or min(model.batch, 8)
    rng = np.random.default_rng(7)
    feeds = {t: rng.standard_normal(g.specs[t].concrete(batch)).astype(g.specs[t].dtype)
             for t in g.inputs}
    return compare_with_cpu(g, feeds, kind, levels=(3,))


@requires_gpu
@pytest.mark.parametrize("name", SEED_MODELS)
def test_seed_models_match_the_cpu_device_on_the_gpu(name):
    exe = _seed_check(name, "gpu")
    mode, why = exe.device.run_mode(exe.program(exe.batch_size))
    print(f"{name}: {mode}: {why}")
    assert why.startswith("captured"), why


@requires_cxx
@pytest.mark.parametrize("name", SMALL_SEED_MODELS)
def test_small_seed_models_match_the_cpu_device_emulated(name):
    _seed_check(name, "emulated", batch=2)


# ---- GPU only: capture, zero copy, properties ----------------------------------------------------
@requires_gpu
def test_device_arrays_in_and_out_without_a_host_round_trip():
    import cupy

    g = _small_graph()
    exe = graphrt.compile(g, device="cuda", batch_size=4, opt_level=3)
    cpu = graphrt.compile(g, device="cpu", batch_size=4, opt_level=3)
    x = np.random.default_rng(1).standard_normal((4, 3, 8, 8)).astype(np.float32)
    exe.ledger.reset()
    y = exe(cupy.asarray(x), outputs="device")
    assert isinstance(y, cupy.ndarray)
    assert relative_error(cupy.asnumpy(y), cpu(x)) < RTOL
    s = exe.ledger.summary()
    assert (s["HtoD"]["invocations"], s["DtoH"]["invocations"], s["DtoD"]["invocations"]) == (0, 0, 1)
    view = exe(cupy.asarray(x), outputs="device", copy=False)
    assert isinstance(view, cupy.ndarray)
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA")
    t = torch.from_numpy(x).cuda()
    y = exe(t, outputs="device")
    assert relative_error(torch.as_tensor(y, device="cuda").cpu().numpy(), cpu(x)) < RTOL
    assert relative_error(exe(t), cpu(x)) < RTOL


@requires_gpu
def test_device_properties_and_available_memory():
    from graphrt.devices.cuda import device_properties

    props = device_properties(0)
    assert props["total_memory"] > 0 and props["name"]
    dev = make_device("gpu")
    assert 0 < dev.available_bytes() <= props["total_memory"] * 2
    assert "GiB" in dev.describe()


@requires_gpu
def test_staging_is_page_locked_and_uploads_are_async():
    import cupy

    dev = make_device("gpu")
    buf = dev.alloc_staging(1 << 20)
    assert isinstance(buf, np.ndarray) and buf.nbytes == 1 << 20
    attrs = cupy.cuda.runtime.pointerGetAttributes(buf.ctypes.data)
    assert attrs.type == cupy.cuda.runtime.memoryTypeHost
    dst = cupy.zeros(1 << 20, cupy.uint8)
    buf[:] = 7
    stream = dev.copy_stream()
    stream.submit(dev.to_device, buf, dst)
    stream.record_event().synchronize()
    stream.close()
    assert int(dst.sum()) == 7 << 20


# ---- the CuPy backend's plumbing, run against a stand-in CuPy -----------------------------------
def _stand_in_cupy():
    """A tiny CuPy look-alike over host memory whose RawModule runs the emulated kernels: enough of
    the CuPy API the cuda device calls (memory, streams, events, capture, cuBLAS, kernels) to run
    the CuPy backend's own code without a GPU. Its cuBLAS refuses to run during capture, as
    CuPy's does (cupy#6290)."""
    import ctypes
    import threading
    import types


    cp = types.ModuleType("cupy")
    cp.__version__ = "14.stand-in"
    cp.is_available = lambda: True
    tls = threading.local()
    log = {"launches": 0, "captured": 0, "blas": 0, "refused": 0}

    class _Ptr:
        def __init__(self, ptr):
            self.ptr = ptr

    class ndarray(np.ndarray):
        def __new__(cls, shape, dtype=np.float32, memptr=None):
            nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
            buf = memptr.mem.buf[memptr.offset:memptr.offset + nbytes]
            return buf.view(dtype).reshape(shape).view(cls)

        @property
        def data(self):
            return _Ptr(self.__array_interface__["data"][0])

        @property
        def __cuda_array_interface__(self):
            return self.__array_interface__

    class Memory:
        def __init__(self, size):
            self.buf = np.zeros(size + 256, np.uint8)
            self.ptr = self.buf.ctypes.data

    class MemoryPointer:
        def __init__(self, mem, offset):
            self.mem, self.offset = mem, offset

    class Event:
        done = True

        def synchronize(self):
            pass

    class Graph:
        def __init__(self, work):
            self.work = work

        def upload(self, stream=None):
            pass

        def launch(self, stream=None):
            for fn in self.work:
                fn()

    class Stream:
        def __init__(self, null=False, non_blocking=False):
            self.ptr, self.capture = (0 if null else id(self)), None

        def __enter__(self):
            tls.stack = getattr(tls, "stack", []) + [self]
            return self

        def __exit__(self, *exc):
            tls.stack.pop()

        def record(self, event=None):
            return Event()

        def wait_event(self, event):
            pass

        def synchronize(self):
            pass

        def begin_capture(self, mode=None):
            self.capture = []

        def end_capture(self):
            work, self.capture = self.capture, None
            return Graph(work)

        def is_capturing(self):
            return self.capture is not None

    Stream.null = Stream(null=True)

    def current():
        stack = getattr(tls, "stack", [])
        return stack[-1] if stack else Stream.null

    def enqueue(fn):
        s = current()
        if s.capture is not None:
            s.capture.append(fn)
            log["captured"] += 1
        else:
            fn()

    emu = EmulatedBackend()

    class RawModule:
        def __init__(self, code, options=()):
            self.dtype = np.float64 if "typedef double T;" in code else np.float32

        def get_function(self, name):
            def launch(grid, block, args):
                for a, kind in zip(args, SIGNATURES[name]):  # what CuPy receives
                    assert isinstance(a, np.generic), (name, a)
                    assert kind != "ptr" or a.dtype == np.uint64
                run = emu.launcher(Call(name, np.dtype(self.dtype), grid, block,
                                          tuple(a.item() for a in args)))
                log["launches"] += 1
                enqueue(run)
            return launch

    def memcpy(dst, src, size, kind):
        ctypes.memmove(dst, src, size)

    runtime = types.SimpleNamespace(
        getDeviceCount=lambda: 1, memcpyHostToDevice=1, memcpyDeviceToHost=2,
        memcpyDeviceToDevice=3, memGetInfo=lambda: (1 << 34, 1 << 35), memcpy=memcpy,
        memsetAsync=lambda ptr, v, n, s: ctypes.memset(ptr, v, n),
        memcpyAsync=lambda dst, src, n, kind, s: enqueue(lambda: ctypes.memmove(dst, src, n)),
        getDeviceProperties=lambda i: {"name": b"Stand-in GPU", "major": 9, "minor": 0,
                                       "totalGlobalMem": 1 << 35, "multiProcessorCount": 1},
        driverGetVersion=lambda: 13000, runtimeGetVersion=lambda: 13000)

    def empty(shape, dtype=np.float32):
        return np.empty(shape, dtype).view(ndarray)

    def pinned(n):
        return bytearray(n)

    device_mod = types.SimpleNamespace(get_cublas_handle=lambda: 1)

    class Device:
        def __init__(self, i=0):
            pass

        def use(self):
            pass
    cp.cuda = types.SimpleNamespace(
        runtime=runtime, Device=Device, Stream=Stream, Memory=Memory, MemoryPointer=MemoryPointer,
        alloc_pinned_memory=pinned, device=device_mod, get_elapsed_time=lambda a, b: 1.0)
    cp.ndarray = ndarray
    cp.uint8 = np.uint8
    cp.empty = empty
    cp.RawModule = RawModule
    cp.get_default_memory_pool = lambda: types.SimpleNamespace(free_bytes=lambda: 0)
    cp.asarray = lambda a: np.asarray(a).view(ndarray)

    def gemm_strided(dtype):
        def fn(handle, ta, tb, m, n, k, alpha, a, lda, sa, b, ldb, sb, beta, c, ldc, sc, batch):
            if isinstance(alpha, float):  # CuPy 14 takes alpha and beta by pointer
                raise TypeError("an integer is required")
            if current().capture is not None:
                log["refused"] += 1
                raise NotImplementedError("cuBLAS is not supported during stream capture")

            al = strided_at(alpha, dtype, (1,), (8,))[0]
            be = strided_at(beta, dtype, (1,), (8,))[0]
            isz = np.dtype(dtype).itemsize

            def view(ptr, trans, rows, cols, ld, stride):
                r, c_ = (rows, cols) if trans == 0 else (cols, rows)
                v = strided_at(ptr, dtype, (batch, r, c_), (stride * isz, isz, ld * isz))
                return v if trans == 0 else v.transpose(0, 2, 1)

            def run():
                A = view(a, ta, m, k, lda, sa)
                B = view(b, tb, k, n, ldb, sb)
                C = strided_at(c, dtype, (batch, m, n), (sc * isz, isz, ldc * isz))
                C[...] = al * np.matmul(A, B) + (be * C if be else 0)
                log["blas"] += 1
            enqueue(run)
        return fn
    cublas = types.SimpleNamespace(setPointerMode=lambda h, m: None, setMathMode=lambda h, m: None,
                                   sgemmStridedBatched=gemm_strided(np.float32),
                                   dgemmStridedBatched=gemm_strided(np.float64))
    libs = types.ModuleType("cupy_backends.cuda.libs")
    libs.cublas = cublas
    return cp, libs, cublas, log


@requires_cxx
def test_the_cupy_backend_runs_against_a_stand_in_cupy(monkeypatch):
    import types

    import graphrt.devices.cuda.runtime.launch as launch_mod
    import graphrt.devices.cuda.runtime.driver as runtime_mod

    cp, libs, cublas, log = _stand_in_cupy()
    monkeypatch.setitem(sys.modules, "cupy", cp)
    monkeypatch.setitem(sys.modules, "cupy_backends", types.ModuleType("cupy_backends"))
    monkeypatch.setitem(sys.modules, "cupy_backends.cuda", types.ModuleType("cupy_backends.cuda"))
    monkeypatch.setitem(sys.modules, "cupy_backends.cuda.libs", libs)
    monkeypatch.setitem(sys.modules, "cupy_backends.cuda.libs.cublas", cublas)
    monkeypatch.setattr(launch_mod, "_MODULES", {})
    monkeypatch.setattr(launch_mod, "_FUNCTIONS", {})
    monkeypatch.setattr(runtime_mod, "device_properties", lambda i=0: {"name": "Stand-in GPU",
                                                                      "compute_capability": "9.0"})
    rng = np.random.default_rng(2)
    g = Graph("net")
    x = g.add_input("x", (None, 3, 8, 8))
    y = g.add_node("conv2d", [x, _param(g, rng, "w", (4, 3, 3, 3)), _param(g, rng, "b", (4,))],
                   attrs={"pads": 1, "activation": "relu"})
    y = g.add_node("max_pool", [y], attrs={"kernel": 2, "stride": 2})
    y = g.add_node("dense", [g.add_node("flatten", [y]), _param(g, rng, "fw", (5, 64))])
    g.set_outputs([g.add_node("log_softmax", [y])])
    g.verify()
    dev = CudaDevice(graphs=True)
    assert "Stand-in GPU" in dev.describe()
    exe = graphrt.compile(g, device=dev, batch_size=4, opt_level=3)
    cpu = graphrt.compile(g, device="cpu", batch_size=4, opt_level=3)
    xs = [rng.standard_normal((4, 3, 8, 8)).astype(np.float32) for _ in range(5)]
    for k, xv in enumerate(xs):
        assert relative_error(exe(xv), cpu(xv)) < 1e-5, k
    mode, why = dev.run_mode(exe.program(4))
    assert mode == "graph (kernel GEMMs)", why
    assert "blas capture refused: NotImplementedError" in why
    assert log["blas"] >= 2 and log["refused"] == 1 and log["captured"] > 0
    s = exe.ledger.summary()
    assert (s["HtoD"]["invocations"], s["DtoH"]["invocations"]) == (5, 5)
    # the prefetch pipeline: page-locked staging, the copy stream's worker, events
    exe.ledger.reset()
    outs = list(exe.stream(xs))
    assert all(relative_error(o, cpu(xv)) < 1e-5 for o, xv in zip(outs, xs))
    assert exe.ledger.summary()["HtoD"]["invocations"] == 5
    # device arrays in and out: a device-to-device copy, no host transfer
    exe.ledger.reset()
    out = exe(cp.asarray(xs[0]), outputs="device")
    assert isinstance(out, cp.ndarray) and relative_error(np.asarray(out), cpu(xs[0])) < 1e-5
    s = exe.ledger.summary()
    assert (s["HtoD"]["invocations"], s["DtoH"]["invocations"], s["DtoD"]["invocations"]) == (0, 0, 1)
    # the plain path keeps cuBLAS: graphs off
    dev = CudaDevice(graphs=False)
    exe = graphrt.compile(g, device=dev, batch_size=4, opt_level=3)
    before = log["blas"]
    for xv in xs[:3]:
        assert relative_error(exe(xv), cpu(xv)) < 1e-5
    assert log["blas"] == before + 6 and dev.run_mode(exe.program(4))[0] == "plain"
