"""Mutation tests of the cuda device on the CUDA stand-in: each mutation is one ordering, copy or
device-selection mistake that would corrupt results (or fail) on a real GPU. It is applied at run
time — the function's source with one line changed, recompiled and monkeypatched in its place, the
files untouched — and the probes named with it must then fail. A mutation no probe catches is a
hole in the stand-in or in the tests.

The probes are small runs of the public API (``exe(x)``, ``exe.stream``, device inputs and
outputs, a second GPU, TF32, the GEMM grid) against the cpu device; unmutated, every probe passes
(:func:`test_the_probes_pass_on_the_unmutated_device`). The stand-in's streams run work nothing
waits for half a second late, and each operation after 2-4 ms (30 ms now and then): a read that is
not ordered after its writer sees stale data. The prefetch probe also makes uploads slower than
compute (else the pipeline's own lead hides a missing wait). The probes run with the caller's current stream the legacy
default stream and a stream of the caller's own (the legacy stream would order some mistakes by
accident).
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import inspect
import textwrap
import threading
import warnings

import numpy as np
import pytest

import graphrt
from graphrt import Graph
from graphrt.devices.cuda import CudaDevice
from graphrt.devices.cuda.bind.registry import BINDERS
from graphrt.devices.cuda.runtime.gemm import Gemm
from graphrt.testing import relative_error
from tools.cuda_emulator import installed

from cuda_cases import DLPackProducer, Producer, param, requires_cxx, small_graph

pytestmark = requires_cxx
STAND_IN = dict(lazy=(0.5, 1.0), delay=(2e-3, 4e-3), stall=(0.3, 0.03), cai_sync=False)
RTOL = 1e-5


# ---- applying a mutation ---------------------------------------------------------------------------
def mutate(monkeypatch, target: str, old: str, new: str) -> None:
    """Replace ``old`` by ``new`` (it must occur once) in the source of ``target``
    ("module:Class.method" or "module:function") and install the recompiled function for this test."""
    module_name, qualname = target.split(":")
    module = importlib.import_module(module_name)
    *path, name = qualname.split(".")
    owner = module
    for part in path:
        owner = getattr(owner, part)
    source = textwrap.dedent(inspect.getsource(getattr(owner, name)))
    assert source.count(old) == 1, f"{target}: {old!r} occurs {source.count(old)} times"
    scope = dict(vars(module))
    exec(compile(source.replace(old, new), f"<mutant of {target}>", "exec"), scope)
    monkeypatch.setattr(owner, name, scope[name])


# ---- the probes ------------------------------------------------------------------------------------
def _batches(shape, n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(np.float32) for _ in range(n)]


def _callers_streams():
    """The caller's current stream: the legacy default stream, then one of the caller's own."""
    import cupy

    yield cupy.cuda.Stream.null
    yield cupy.cuda.Stream(non_blocking=True)


def probe_calls():
    """exe(x) over distinct batches, fresh outputs and (page-locked) reused ones, captured."""
    g = small_graph()
    cpu = graphrt.compile(g, device="cpu", batch_size=2)
    for caller in _callers_streams():
        with caller:
            exe = graphrt.compile(g, device=CudaDevice(graphs=True), batch_size=2)
            for x in _batches((2, 3, 8, 8), 6):
                assert relative_error(exe(x), cpu(x)) < RTOL
                assert relative_error(exe(x, copy=False), cpu(x)) < RTOL


def probe_prefetch():
    """exe.stream over distinct batches (host outputs), through the copy stream and staging ring."""
    g = small_graph()
    exe = graphrt.compile(g, device=CudaDevice(graphs=False), batch_size=2)
    cpu = graphrt.compile(g, device="cpu", batch_size=2)
    xs = _batches((2, 3, 8, 8), 16, seed=1)
    for caller in _callers_streams():
        with caller:
            for x, y in zip(xs, exe.stream(xs)):
                assert relative_error(y, cpu(x)) < RTOL


def probe_device_outputs():
    """Device outputs read on the caller's own stream: from exe(x), and from exe.stream, read as
    they come (views) or all at the end (copies)."""
    import cupy

    g = small_graph()
    exe = graphrt.compile(g, device=CudaDevice(graphs=False), batch_size=2)
    cpu = graphrt.compile(g, device="cpu", batch_size=2)
    xs = _batches((2, 3, 8, 8), 10, seed=2)
    for caller in _callers_streams():
        with caller:
            for x in xs[:3]:
                assert relative_error(cupy.asnumpy(exe(x, outputs="device")), cpu(x)) < RTOL
            for x, y in zip(xs, exe.stream(xs, outputs="device", copy=False)):
                assert relative_error(cupy.asnumpy(y), cpu(x)) < RTOL
            ys = list(exe.stream(xs, outputs="device"))
            for x, y in zip(xs, ys):
                assert relative_error(cupy.asnumpy(y), cpu(x)) < RTOL


def probe_device_inputs():
    """Inputs on the device: made on a side stream and handed over through the CUDA Array Interface
    and DLPack, and a float64 CuPy array the executable converts."""
    import cupy

    g = small_graph()
    exe = graphrt.compile(g, device=CudaDevice(graphs=False), batch_size=2)
    cpu = graphrt.compile(g, device="cpu", batch_size=2)
    for k, x in enumerate(_batches((2, 3, 8, 8), 8, seed=3)):
        # the caller's current stream: the legacy one, or one of its own
        with cupy.cuda.Stream(non_blocking=True) if k >= 4 else cupy.cuda.Stream.null:
            assert relative_error(exe((Producer, DLPackProducer)[k % 2](cupy, x)), cpu(x)) < RTOL
            x64 = cupy.asarray(x.astype(np.float64))
            assert relative_error(exe(x64), cpu(x)) < RTOL


def probe_copy_stream():
    """A copy stream's promise: host work submitted after a copy runs once the copy is done (so a
    staging buffer may be refilled by it)."""
    import cupy

    dev = CudaDevice()
    stream = dev.copy_stream()
    dst = cupy.zeros(4096, np.float32)
    cupy.cuda.get_current_stream().synchronize()
    for k in range(4):
        buf = dev.alloc_staging(4 * 4096).view(np.float32)
        buf[:] = k + 1
        stream.submit(dev.to_device, buf, dst)
        stream.submit(buf.fill, -1.0)  # the buffer is free again once the copy is done
        stream.record_event().synchronize()
        assert (cupy.asnumpy(dst) == k + 1).all()
    stream.close()


def probe_second_gpu():
    """A device on GPU 1 used from a thread where GPU 0 is current."""
    dev = CudaDevice(device_id=1, graphs=True)
    g = small_graph()
    cpu = graphrt.compile(g, device="cpu", batch_size=2)
    xs = _batches((2, 3, 8, 8), 4, seed=4)
    errors = []

    def work():
        try:
            exe = graphrt.compile(g, device=dev, batch_size=2)
            for x in xs:
                assert relative_error(exe(x), cpu(x)) < RTOL
            for x, y in zip(xs, exe.stream(xs)):
                assert relative_error(y, cpu(x)) < RTOL
        except BaseException as err:
            errors.append(err)
    t = threading.Thread(target=work)
    t.start()
    t.join()
    if errors:
        raise errors[0]


def probe_tf32():
    """The user's own CuPy matmul keeps float32 after graphrt's TF32 GEMMs."""
    import cupy

    rng = np.random.default_rng(5)
    a, b = (cupy.asarray(rng.standard_normal(s).astype(np.float32)) for s in ((16, 32), (32, 8)))
    before = cupy.matmul(a, b).get()
    g = Graph("dense")
    x = g.add_input("x", (None, 32))
    g.set_outputs([g.add_node("dense", [x, param(g, rng, "w", (8, 32))])])
    graphrt.compile(g.verify(), device=CudaDevice(tf32=True), batch_size=2)(np.ones((2, 32), np.float32))
    np.testing.assert_array_equal(cupy.matmul(a, b).get(), before)


def probe_grid():
    """Our GEMM kernel's grid stays within CUDA's limits for any shape."""
    a = np.zeros((2, 2), np.float32)
    g = Gemm(np.dtype(np.float32), 10**6, 64 * 70000, 5, 3, a, (0, 3, 1), a, (0, 5, 1), a, (0, 5, 1))
    assert max(g.as_kernel().grid[1:]) <= 65535


def probe_numerics_guard():
    """check_finite runs launch by launch: after the first step nothing is bound again."""
    import graphrt.devices.cuda.bind.registry as K

    g = small_graph()
    exe = graphrt.compile(g, device=CudaDevice(), batch_size=2, check_finite=True)
    x = _batches((2, 3, 8, 8), 1)[0]
    exe(x)
    real, binds = K.bind, []
    K.bind = lambda *args: binds.append(args[0]) or real(*args)
    try:
        for _ in range(3):
            exe(x)
    finally:
        K.bind = real
    assert binds == [], binds


@contextlib.contextmanager
def without_kernels(*ops):
    """The cuda device's binders of ``ops`` removed (every op has a kernel: this makes one that
    has none, so placement must put it on the host)."""
    saved = {op: BINDERS.pop(op) for op in ops}
    try:
        yield
    finally:
        BINDERS.update(saved)


def probe_training():
    """A training step: an op without a kernel (softplus, its kernel removed) and its gradient on
    the host, the rest on the device."""
    rng = np.random.default_rng(7)
    g = Graph("mlp")
    x = g.add_input("x", (None, 6))
    h = g.add_node("dense", [x, param(g, rng, "w1", (8, 6))], attrs={"activation": "relu"})
    h = g.add_node("softplus", [h])
    g.set_outputs([g.add_node("dense", [h, param(g, rng, "w2", (3, 8))])])
    g.verify()
    with without_kernels("softplus", "unary_grad"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainers = [graphrt.Trainer(g, device=d, batch_size=4) for d in ("cpu", CudaDevice())]
        assert any(issubclass(w.category, graphrt.FallbackWarning) for w in caught)
        for k in range(3):
            xb, yb = rng.standard_normal((4, 6)).astype(np.float32), rng.integers(0, 3, 4)
            a, b = (t.step(xb, yb) for t in trainers)
            assert abs(a - b) <= 1e-5 * max(1.0, abs(a))


def probe_graphs_auto():
    """graphs="auto" times a plain step and a replay (events on the GPU) and keeps the faster."""
    g = small_graph()
    exe = graphrt.compile(g, device=CudaDevice(graphs="auto"), batch_size=2)
    cpu = graphrt.compile(g, device="cpu", batch_size=2)
    for x in _batches((2, 3, 8, 8), 4, seed=6):
        assert relative_error(exe(x), cpu(x)) < RTOL


OPTIONS = {probe_prefetch: dict(upload_delay=(0.04, 0.06))}  # per probe, on top of STAND_IN
PROBES = [probe_calls, probe_prefetch, probe_device_outputs, probe_device_inputs, probe_copy_stream,
          probe_second_gpu, probe_tf32, probe_grid, probe_numerics_guard, probe_training,
          probe_graphs_auto]


# ---- the mutations -----------------------------------------------------------------------------------
MEMORY = "graphrt.devices.cuda.runtime.memory"
STREAMS = "graphrt.devices.cuda.runtime.streams"
GRAPHS = "graphrt.devices.cuda.runtime.graphs"


@dataclasses.dataclass(frozen=True)
class Mutation:
    name: str
    target: str
    old: str
    new: str
    probes: tuple


MUTATIONS = [
    Mutation("no synchronize after the device-to-host copy", f"{MEMORY}:CupyMemory.to_host",
             "stream.synchronize()\n", "\n", (probe_calls,)),
    Mutation("host-to-device copies on stream 0", f"{MEMORY}:CupyMemory.to_device",
             "memcpyHostToDevice, stream.ptr)", "memcpyHostToDevice, 0)", (probe_prefetch,)),
    Mutation("the compute stream's wait on the copy event is a no-op",
             f"{STREAMS}:CudaComputeStream.wait_event", "_wait_for(self.backend, self, event)",
             "pass", (probe_prefetch,)),
    Mutation("the copy stream does not synchronize after each item",
             f"{STREAMS}:CudaCopyStream._on_stream", "self.backend.sync(self)", "pass",
             (probe_copy_stream,)),
    Mutation("a stream's wait on another stream's event is a no-op", f"{STREAMS}:CupyStreams.wait",
             "self.handle(s).wait_event(event)", "pass", (probe_device_outputs,)),
    Mutation("events recorded on the legacy stream", f"{STREAMS}:CupyStreams.record",
             "return self.handle(s).record()", "return self.cp.cuda.Stream.null.record()",
             (probe_device_outputs,)),
    Mutation("the prefetch upload does not wait for the slot to be free",
             "graphrt.scheduler.prefetch:Prefetcher._load", "copy_stream.wait_event(slot_event)",
             "pass", (probe_device_outputs,)),
    Mutation("parameters uploaded on the legacy stream", f"{MEMORY}:CupyMemory.upload",
             "self.stream.ptr)", "0)", (probe_calls,)),
    Mutation("device inputs not ordered after their producer's stream",
             f"{STREAMS}:CupyStreams.wait_for_stream", "rt.streamWaitEvent(self.handle(s).ptr, event, 0)",
             "pass", (probe_device_inputs,)),
    Mutation("DLPack producers handed the legacy stream instead of the compute stream",
             f"{MEMORY}:CupyMemory.adopt", "with self.handle(compute):",
             "with self.cp.cuda.Stream.null:", (probe_device_inputs,)),
    Mutation("device outputs handed over without ordering the caller's stream",
             f"{STREAMS}:CupyStreams.hand_over", "caller.wait_event(event)", "pass",
             (probe_device_outputs,)),
    Mutation("graph replays launched on the legacy stream", f"{GRAPHS}:CupyGraphs.launch_graph",
             "graph.launch(self.stream)", "graph.launch(self.cp.cuda.Stream.null)", (probe_calls,)),
    Mutation("a step's kernels launched outside the compute stream",
             "graphrt.devices.cuda.device:CudaDevice.run_program",
             "with self.backend.on(self._compute):", "with self.backend.dev:", (probe_calls,)),
    Mutation("the step timer reads the end event before it completes", f"{GRAPHS}:CupyGraphs.timer",
             "end.synchronize()", "pass", (probe_graphs_auto,)),
    Mutation("launches without the device's GPU current", f"{STREAMS}:ThreadStreams.on",
             "with self.dev, self.stream_context(s):", "with self.stream_context(s):",
             (probe_second_gpu,)),
    Mutation("a copy stream's CUDA stream made on the caller's current GPU",
             f"{STREAMS}:CupyStreams.new_stream", "@on_device\n", "", (probe_second_gpu,)),
    Mutation("cuBLAS's math mode left as graphrt set it",
             "graphrt.devices.cuda.runtime.gemm:CupyBlas._blas_call",
             "cublas.setMathMode(handle, saved[1])", "pass", (probe_tf32,)),
    Mutation("every launch of the numerics guard bound anew",
             "graphrt.devices.cuda.device:_KernelFn.steps", "entry = self.bound.get(key)",
             "entry = None", (probe_numerics_guard,)),
    Mutation("the device claims every op (no host placement)",
             "graphrt.devices.cuda.device:CudaDevice.placement", "return K.unsupported(node, graph)",
             "return None", (probe_training,)),
    Mutation("the GEMM grid's batch dimension unbounded",
             "graphrt.devices.cuda.runtime.gemm:Gemm.as_kernel",
             "min(self.batch, calls.MAX_GRID_YZ)", "self.batch", (probe_grid,)),
]


def run_probe(probe) -> None:
    with installed(**STAND_IN, **OPTIONS.get(probe, {})):
        probe()


def test_the_probes_pass_on_the_unmutated_device():
    for probe in PROBES:
        run_probe(probe)


@pytest.mark.parametrize("mutation", MUTATIONS, ids=[m.name for m in MUTATIONS])
def test_the_stand_in_catches_the_mutation(mutation, monkeypatch):
    mutate(monkeypatch, mutation.target, mutation.old, mutation.new)
    caught = []
    for probe in mutation.probes:
        try:
            run_probe(probe)
        except Exception as err:  # a wrong result, or an error the GPU would raise too
            caught.append(f"{probe.__name__}: {type(err).__name__}: {str(err)[:200]}")
    assert caught, f"no probe caught: {mutation.name}"
    print(f"{mutation.name}: {caught[0]}")
