"""The cuda device: kernel sources that compile, an import that needs no CuPy, clear errors without a
GPU, every op and every seed model against the cpu device — on the CUDA stand-in of
``tools/cuda_emulator`` (the real CuPy backend over simulated, asynchronous GPUs whose kernels are
the same sources compiled for the host) everywhere, and on a real GPU where there is one.

GPU tests skip without a GPU unless ``GRAPHRT_DEVICE=cuda`` (then a missing GPU fails them: the GPU
script ``bench/gpu_check.sh`` sets it, and deselects the stand-in's tests). Tolerance against the
cpu device: relative error (DESIGN.md) below 1e-5, or 1e-3 with TF32 (``GRAPHRT_TF32=1``).
"""
from __future__ import annotations

import builtins
import importlib
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import graphrt
from graphrt import Graph
from graphrt.devices import get_device
from graphrt.devices.cuda import cuda_available
from graphrt.devices.cuda.bind.registry import BINDERS
from graphrt.devices.cuda.calls import collapse
from graphrt.devices.cuda.runtime.gemm import Gemm, blas_plan
from graphrt.devices.cuda.sources import (BARRIER_KERNELS, CTYPES, PRELUDE, SIGNATURES, SOURCES,
                                          kernel_params, module_source)
from graphrt.ir.errors import GraphrtError, UnsupportedError
from graphrt.ops import all_ops
from graphrt.testing import assert_equivalent, inception_graphs, relative_error, sequential_graphs

from cuda_cases import (CASES, DEVICES, HAVE_GPU, RTOL, SEED_MODELS, TF32, assert_agrees,
                        compare_with_cpu, make_device, on_device_kind, one_node, param, requires_gpu,
                        seed_feeds, seed_graph, seed_model, small_graph)

# the ops of the seed models, inference and the training step's optimizer: each has a kernel
SEED_OPS = {"relu", "tanh", "sigmoid", "scale", "dropout", "identity", "elementwise_chain", "add",
            "mul", "conv2d", "dense", "matmul", "max_pool", "avg_pool", "lrn", "batch_norm",
            "channel_affine", "softmax", "log_softmax", "softmax_cross_entropy", "nll_loss",
            "accuracy", "sgd_update", "step_counter", "concat", "split", "flatten", "reshape",
            "transpose", "zero_pad", "pad", "copy_to_device", "copy_to_host"}
RANDOM_GRAPHS = settings(max_examples=12, deadline=None,  # the fixture installs the stand-in once
                         suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                HealthCheck.too_slow])


@pytest.fixture(autouse=True)
def _device_kind(request):
    """Tests parametrized with ``kind="stand_in"`` run with the CUDA stand-in installed as CuPy."""
    kind = request.node.callspec.params.get("kind") if hasattr(request.node, "callspec") else None
    with on_device_kind(kind):
        yield


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
        graphrt.compile(small_graph(), device="cuda")


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
        "bn_coeffs", "channel_affine", "softmax", "class_loss", "sgd_update", "counter_inc",
        "ew_grad", "softmax_grad", "class_loss_grad", "channel_sum", "dropout_mask",
        "dropout_step", "col2im", "pool2d_grad", "lrn_grad", "bn_train", "bn_count",
        "bn_train_grad", "image_transform", "solver_update", "ew_compare", "ew_where",
        "unary_grad", "binary_grad", "reduce_rows", "reduce_grad_rows",
        "arg_rows", "ln_stats", "ln_rows", "ln_param_grad", "cast_nd", "embedding_gather",
        "embedding_rows", "embedding_scatter", "resize_weights", "pad_grad_axis"}
    assert BARRIER_KERNELS == {"gemm", "softmax", "class_loss", "softmax_grad", "channel_sum",
                               "bn_train", "bn_train_grad", "reduce_rows"}
    for name, kinds in SIGNATURES.items():
        assert len(kinds) == len(params[name])


def test_every_seed_op_has_a_cuda_kernel():
    assert SEED_OPS <= set(BINDERS), sorted(SEED_OPS - set(BINDERS))
    assert set(BINDERS) <= set(all_ops())


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


# ---- every op, float64, losses, random graphs ----------------------------------------------------
@pytest.mark.parametrize("kind", DEVICES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_every_op_matches_the_cpu_device(case, kind):
    op, shapes, params, attrs = CASES[case]
    g, feeds = one_node(op, shapes, params, attrs)
    compare_with_cpu(g, feeds, kind)


@pytest.mark.parametrize("kind", DEVICES)
def test_float64_graphs_run_in_double(kind):
    rng = np.random.default_rng(3)
    g, feeds = one_node("conv2d", [(3, 6, 6)], [rng.standard_normal((2, 3, 3, 3)),
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


@pytest.mark.parametrize("kind", DEVICES)
def test_an_invalid_label_is_refused_before_the_step_and_gives_nan_in_the_kernel(kind):
    """Host labels are checked before the step on every device (an InputError, nothing run);
    labels the host does not see (already on the device) make the kernel write NaN."""
    g = Graph("xent")
    x = g.add_input("x", (None, 3))
    lab = g.add_input("label", (None,), "int64")
    g.set_outputs([g.add_node("softmax_cross_entropy", [x, lab])])
    exe = graphrt.compile(g.verify(), device=make_device(kind), batch_size=2)
    feeds = {"x": np.zeros((2, 3), np.float32), "label": np.array([0, 5])}
    with pytest.raises(graphrt.InputError, match=r"labels must lie in \[0, 3\)"):
        exe(feeds)
    out = exe._step(feeds, 2, copy=True)[0]  # the kernel itself, past the host check
    assert np.isnan(out)


@pytest.mark.parametrize("kind", DEVICES)
@RANDOM_GRAPHS
@given(graph=sequential_graphs(max_nodes=6), batch=st.integers(1, 3))
def test_random_sequential_graphs_match_the_reference(graph, batch, kind):
    assert_equivalent(graph, opt_levels=(0, 3), devices=[make_device(kind)], batch=batch,
                      rtol=max(RTOL, 1e-4))


@pytest.mark.parametrize("kind", DEVICES)
@settings(RANDOM_GRAPHS, max_examples=10)
@given(graph=inception_graphs(max_blocks=2), batch=st.integers(1, 2))
def test_random_inception_graphs_match_the_reference(graph, batch, kind):
    """Concat branches written into their slices, split outputs read from theirs."""
    assert_equivalent(graph, opt_levels=(1, 2, 3), devices=[make_device(kind)], batch=batch,
                      rtol=max(RTOL, 1e-4))


def inception_block() -> Graph:
    """A GoogLeNet-style module: 1x1, 1x1 -> 3x3 and 3x3 branches, two pairs of which merge."""
    rng = np.random.default_rng(5)
    g = Graph("inception_block")
    x = g.add_input("x", (None, 5, 7, 6))

    def conv(src, o, k):
        c = g.specs[src].shape[1]
        w, b = param(g, rng, g.unique_name("w"), (o, c, k, k)), param(g, rng, g.unique_name("b"), (o,))
        return g.add_node("relu", [g.add_node("conv2d", [src, w, b], attrs={"pads": k // 2})])
    branches = [conv(x, 3, 1), conv(conv(x, 2, 1), 4, 3), conv(x, 2, 3), conv(x, 3, 3)]
    g.set_outputs([g.add_node("concat", branches, name="cat")])
    return g.verify()


@pytest.mark.parametrize("kind", DEVICES)
def test_merged_convolutions_write_into_their_concat_slices(kind):
    """Each conv2d_split GEMM writes its channels straight into the concat's buffer — strided
    channel slices at batch 3 — and the concat runs no kernel; the outputs equal the cpu device's."""
    g = inception_block()
    exe = compare_with_cpu(g, seed_feeds(g, 3), kind, levels=(3,))
    merged = [n for n in exe.graph.nodes if n.op == "conv2d_split"]
    views = exe.plan.views
    cat = views[exe.graph.node("cat").outputs[0]].buffer
    # the 1x1 pair: its first output is a concat slice, the reduce its own; the 3x3 pair: both slices
    assert sorted([views[t].buffer == cat for t in n.outputs] for n in merged) == [
        [True, False], [True, True]]
    assert "cat" not in {launch.node for launch in exe.program(3).launches}


@pytest.mark.parametrize("kind", DEVICES)
@pytest.mark.parametrize("gemm", ["blas", "kernel"])
def test_gemms_through_cublas_and_through_our_kernel(gemm, kind):
    """Every step through cuBLAS (its column-major call as planned from our row-major GEMM), or
    every step through our ``gemm`` kernel."""
    for case in ("conv", "conv_strided", "conv_pointwise", "conv_split", "conv_split_pointwise",
                 "dense", "dense_nobias", "matmul", "matmul_stack", "matmul_vector"):
        op, shapes, params, attrs = CASES[case]
        g, feeds = one_node(op, shapes, params, attrs)
        compare_with_cpu(g, feeds, kind, gemm=gemm, graphs=False)


# ---- the pipeline: programs, streams, ledger ------------------------------------------------------
@pytest.mark.parametrize("kind", DEVICES)
def test_ledger_counts_one_copy_each_way_per_step(kind):
    g = small_graph()
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
    """The state machine of run_program: plain, timed plain, capture, choice; on the stand-in the
    capture records what the compute stream is given and the replay runs only that."""
    dev = make_device(kind, graphs=True)
    g = small_graph()
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
    g = small_graph()
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


@pytest.mark.parametrize("kind", DEVICES)
def test_copy_stream_errors_reach_the_waiter(kind):
    dev = make_device(kind)
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
    """sgd_update (both momentum conventions, a rate that changes), step_counter and the backward
    ops on the device (tests/test_cuda_training.py trains every seed model)."""
    rng = np.random.default_rng(5)
    g = Graph("mlp")
    x = g.add_input("x", (None, 6))
    h = g.add_node("dense", [x, param(g, rng, "w1", (8, 6)), param(g, rng, "b1", (8,))])
    h = g.add_node("relu", [h])
    g.set_outputs([g.add_node("dense", [h, param(g, rng, "w2", (4, 8)), param(g, rng, "b2", (4,))])])
    g.verify()
    opt = graphrt.optim.SGD(lr=0.1, momentum=0.9, weight_decay=1e-3, policy="step", gamma=0.5,
                            stepsize=2, convention=convention)
    xs = rng.standard_normal((4, 5, 6)).astype(np.float32)
    ys = rng.integers(0, 4, (4, 5))
    trainers = [graphrt.Trainer(g, optimizer=opt, device=d, batch_size=5)
                for d in ("cpu", make_device(kind))]
    assert trainers[1].exe.host_nodes == {}
    for xb, yb in zip(xs, ys):
        losses = [t.step(xb, yb) for t in trainers]
        assert abs(losses[0] - losses[1]) <= 1e-4 * max(1.0, abs(losses[0]))
    pc, pd = (t.parameters() for t in trainers)
    for name in pc:
        assert relative_error(pd[name], pc[name]) < 1e-4, name


# ---- seed models ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", DEVICES)
@pytest.mark.parametrize("name", SEED_MODELS)
def test_seed_models_match_the_cpu_device(name, kind):
    """Inference of every seed model against the cpu device (relative error < 1e-5): plain, timed
    plain, captured into a CUDA graph and launched, replayed; then through the prefetch pipeline.
    One HtoD per batch and one DtoH per step throughout."""
    g = seed_graph(name)
    batch = 1 if kind == "stand_in" else min(seed_model(name).batch, 8)
    feeds, more = seed_feeds(g, batch), seed_feeds(g, batch, seed=8)
    cpu = graphrt.compile(g, device="cpu", batch_size=batch, opt_level=3)
    exe = graphrt.compile(g, device=make_device(kind, graphs=True), batch_size=batch, opt_level=3)
    exe.ledger.reset()
    for run in range(4):
        assert_agrees(exe, g, feeds, cpu(feeds), label=f"run {run}")
    mode, why = exe.device.run_mode(exe.program(batch))
    print(f"{name}: {mode}: {why}")
    assert mode.startswith("graph") and why.startswith("captured"), why
    outs = list(exe.stream([feeds, more]))  # slot 0's program replays, slot 1's runs plainly
    for out, f in zip(outs, [feeds, more]):
        assert relative_error(out, cpu(f)) < RTOL
    s = exe.ledger.summary()
    assert (s["HtoD"]["invocations"], s["DtoH"]["invocations"], s["DtoD"]["invocations"]) == (6, 6, 0)


# ---- GPU only: capture, zero copy, properties ----------------------------------------------------
@requires_gpu
def test_device_arrays_in_and_out_without_a_host_round_trip():
    import cupy

    g = small_graph()
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
