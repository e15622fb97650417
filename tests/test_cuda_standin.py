"""The CUDA stand-in is as strict as a GPU about what the cuda device relies on, and the GPU bugs found
by review are fixed, each shown on it.

First the stand-in itself (a stand-in that forgives is worthless): device memory the host cannot
read, streams that run asynchronously and out of order with each other unless an event orders them,
CUDA's pageable/pinned copy rules, capture that records only the capturing stream, launch limits,
wrong-device and bad-pointer errors. Then the fixes: cuBLAS's shared handle is left as found (no
TF32 leak), binding is bounded, device inputs wait for their producer's stream, the GEMM grid stays
within CUDA's limits, and the device's GPU is current in every thread that calls it.
"""
from __future__ import annotations

import threading

import numpy as np
import pytest

import graphrt
from graphrt import Graph
from graphrt.devices.cuda import CudaDevice
from graphrt.devices.cuda import calls
from graphrt.devices.cuda.runtime.gemm import Gemm
from graphrt.testing import relative_error
from tools.cuda_emulator import CUDARuntimeError, installed
from tools.cuda_emulator.gpu import device_of

from cuda_cases import DLPackProducer, Producer, param, requires_cxx, small_graph

pytestmark = requires_cxx
SLOW = (2e-3, 4e-3)  # stream delays long enough that any unordered read sees stale data


@pytest.fixture
def gpu():
    with installed() as machine:
        yield machine


def _mlp(seed: int = 0, width: int = 48) -> Graph:
    rng = np.random.default_rng(seed)
    g = Graph("mlp")
    x = g.add_input("x", (None, 32))
    h = g.add_node("dense", [x, param(g, rng, "w1", (width, 32)), param(g, rng, "b1", (width,))],
                   attrs={"activation": "relu"})
    g.set_outputs([g.add_node("dense", [h, param(g, rng, "w2", (10, width))])])
    return g.verify()


# ---- the stand-in is strict ------------------------------------------------------------------------
def test_device_memory_is_not_host_memory(gpu):
    import cupy

    a = cupy.asarray(np.arange(6, dtype=np.float32))
    with pytest.raises(TypeError, match="Implicit conversion"):
        np.asarray(a)
    assert device_of(a.data.ptr) is not None  # an address no host code can dereference
    np.testing.assert_array_equal(a.get(), np.arange(6))
    with pytest.raises(CUDARuntimeError, match="IllegalAddress"):
        gpu.devices[0].find(a.data.ptr + 10 * 4096)


def test_streams_run_out_of_order_unless_an_event_orders_them():
    with installed(delay=SLOW) as machine:
        import cupy

        rt = cupy.cuda.runtime
        src = cupy.asarray(np.full(1000, 7, np.float32))
        a, b = cupy.cuda.Stream(non_blocking=True), cupy.cuda.Stream(non_blocking=True)
        dst = cupy.zeros(1000, np.float32)
        a.wait_event(cupy.cuda.Stream.null.record())
        gate = machine.hold(a.ptr)  # a is behind b, whatever the delays
        rt.memcpyAsync(dst.data.ptr, src.data.ptr, 4000, rt.memcpyDeviceToDevice, a.ptr)
        host = np.zeros(1000, np.float32)
        rt.memcpyAsync(host.ctypes.data, dst.data.ptr, 4000, rt.memcpyDeviceToHost, b.ptr)
        assert not (host == 7).any()  # b did not wait for a
        b.wait_event(a.record())
        gate.set()
        rt.memcpyAsync(host.ctypes.data, dst.data.ptr, 4000, rt.memcpyDeviceToHost, b.ptr)
        assert (host == 7).all()


def test_copies_follow_cudas_pinned_and_pageable_rules():
    with installed(delay=SLOW):
        import cupy

        rt = cupy.cuda.runtime
        s = cupy.cuda.Stream(non_blocking=True)
        dev = cupy.asarray(np.full(256, 3, np.float32))
        pinned = np.frombuffer(cupy.cuda.alloc_pinned_memory(1024), np.float32, 256)
        pinned[:] = 0
        s.wait_event(cupy.cuda.Stream.null.record())
        rt.memcpyAsync(pinned.ctypes.data, dev.data.ptr, 1024, rt.memcpyDeviceToHost, s.ptr)
        assert not (pinned == 3).any()  # to page-locked memory: asynchronous
        s.synchronize()
        assert (pinned == 3).all()
        pageable = np.zeros(256, np.float32)
        rt.memcpyAsync(pageable.ctypes.data, dev.data.ptr, 1024, rt.memcpyDeviceToHost, s.ptr)
        assert (pageable == 3).all()  # to pageable memory: returns once done
        pinned[:] = 5  # a pinned source is read when the stream gets there ...
        rt.memcpyAsync(dev.data.ptr, pinned.ctypes.data, 1024, rt.memcpyHostToDevice, s.ptr)
        pinned[:] = 6
        assert (dev.get(stream=s) == 6).all()
        pageable[:] = 8  # ... a pageable one at the call
        rt.memcpyAsync(dev.data.ptr, pageable.ctypes.data, 1024, rt.memcpyHostToDevice, s.ptr)
        pageable[:] = 9
        assert (dev.get(stream=s) == 8).all()
        assert rt.pointerGetAttributes(pinned.ctypes.data).type == rt.memoryTypeHost
        assert rt.pointerGetAttributes(pageable.ctypes.data).type == rt.memoryTypeUnregistered


def test_events_time_what_ran_and_are_not_ready_before():
    with installed(delay=(0.02, 0.02)):
        import cupy

        s = cupy.cuda.Stream(non_blocking=True)
        start = s.record()
        end = s.record()
        with pytest.raises(CUDARuntimeError, match="NotReady"):
            cupy.cuda.get_elapsed_time(start, end)
        end.synchronize()
        assert 15 < cupy.cuda.get_elapsed_time(start, end) < 500  # ms: the second record's delay


def test_capture_records_only_the_capturing_stream_and_refuses_to_synchronize(gpu):
    import cupy

    rt = cupy.cuda.runtime
    s = cupy.cuda.Stream(non_blocking=True)
    src, dst = cupy.asarray(np.ones(4, np.float32)), cupy.zeros(4, np.float32)
    s.wait_event(cupy.cuda.Stream.null.record())
    s.begin_capture()
    rt.memcpyAsync(dst.data.ptr, src.data.ptr, 16, rt.memcpyDeviceToDevice, s.ptr)
    with pytest.raises(CUDARuntimeError, match="CaptureUnsupported"):
        s.synchronize()
    with pytest.raises(CUDARuntimeError, match="Invalidated"):
        s.end_capture()
    s.begin_capture()
    rt.memcpyAsync(dst.data.ptr, src.data.ptr, 16, rt.memcpyDeviceToDevice, s.ptr)
    graph = s.end_capture()
    assert (dst.get(stream=s) == 0).all()  # recorded, not run
    graph.launch(s)
    assert (dst.get(stream=s) == 1).all()


def test_kernel_launches_are_checked_as_a_gpu_checks_them(gpu):
    import cupy
    from graphrt.devices.cuda.sources import module_source

    fn = cupy.RawModule(code=module_source(np.float32)).get_function("counter_inc")
    it = cupy.zeros(1, np.float64)
    with pytest.raises(CUDARuntimeError, match="InvalidConfiguration"):
        fn((1, 65536, 1), (1, 1, 1), (np.uint64(it.data.ptr),))
    with pytest.raises(TypeError, match="pointer"):
        fn((1, 1, 1), (1, 1, 1), (it.data.ptr,))  # a Python int is not how CuPy passes a pointer
    host = np.zeros(1)
    fn((1, 1, 1), (1, 1, 1), (np.uint64(host.ctypes.data),))  # a host address on the device
    with pytest.raises(CUDARuntimeError, match="IllegalAddress"):
        cupy.cuda.Stream.null.synchronize()


def test_a_stream_of_another_gpu_is_refused(gpu):
    import cupy

    with cupy.cuda.Device(1):
        s = cupy.cuda.Stream(non_blocking=True)
        a = cupy.zeros(4, np.float32)
    with pytest.raises(CUDARuntimeError, match="InvalidResourceHandle"):
        cupy.cuda.runtime.memsetAsync(a.data.ptr, 0, 16, s.ptr)  # device 0 current


# ---- the fixes -------------------------------------------------------------------------------------
def test_tf32_gemms_leave_cupys_shared_cublas_handle_as_found(gpu):
    """graphrt's TF32 GEMMs run on CuPy's handle; the user's own matmuls keep full float32."""
    import cupy

    rng = np.random.default_rng(0)
    a, b = (cupy.asarray(rng.standard_normal(s).astype(np.float32)) for s in ((16, 32), (32, 8)))
    before = cupy.matmul(a, b).get()
    g = _mlp()
    x = rng.standard_normal((4, 32)).astype(np.float32)
    want = graphrt.compile(g, device="cpu", batch_size=4)(x)
    tf32 = graphrt.compile(g, device=CudaDevice(tf32=True, graphs=False), batch_size=4)(x)
    full = graphrt.compile(g, device=CudaDevice(graphs=False), batch_size=4)(x)
    assert 1e-5 < relative_error(tf32, want) < 1e-2  # TF32 was used for graphrt's GEMMs ...
    assert relative_error(full, want) < 1e-6
    np.testing.assert_array_equal(cupy.matmul(a, b).get(), before)  # ... and only there


def test_the_numerics_guard_binds_each_launch_once(gpu, monkeypatch):
    """check_finite runs launch by launch (``device.kernel(op)``): the bindings are cached, so
    steps after the first bind nothing and keep nothing new."""
    import graphrt.devices.cuda.bind.registry as K

    exe = graphrt.compile(_mlp(), device=CudaDevice(), batch_size=4, check_finite=True)
    x = np.ones((4, 32), np.float32)
    exe(x)
    binds = []
    real = K.bind
    monkeypatch.setattr(K, "bind", lambda *a: binds.append(a[0]) or real(*a))
    for _ in range(30):
        exe(x)
    assert binds == []
    kernels = [launch.fn for launch in exe.program(4).launches]
    assert all(len(k.bound) == 1 for k in kernels)
    assert not hasattr(exe.device.backend, "_keep")


def test_the_bind_cache_is_bounded(gpu):
    dev = CudaDevice()
    fn = dev.kernel("relu")
    for _ in range(3 * fn.CACHE):
        x = dev.upload(np.ones((2, 3), np.float32))
        y = dev.upload(np.zeros((2, 3), np.float32))
        fn({}, [x], [y], None)
    assert len(fn.bound) == fn.CACHE


@pytest.mark.parametrize("producer", [Producer, DLPackProducer])
def test_device_inputs_wait_for_their_producers_stream(producer):
    """CuPy would synchronize a ``__cuda_array_interface__`` producer's stream itself unless
    ``CUPY_CUDA_ARRAY_INTERFACE_SYNC=0``: with it off, the cuda device still orders its copy."""
    with installed(delay=SLOW, cai_sync=False):
        import cupy

        g = small_graph()
        exe = graphrt.compile(g, device=CudaDevice(), batch_size=2)
        cpu = graphrt.compile(g, device="cpu", batch_size=2)
        rng = np.random.default_rng(1)
        for _ in range(3):
            x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
            assert relative_error(exe(producer(cupy, x)), cpu(x)) < 1e-5
        # a CuPy array made on the caller's current stream, a non-blocking one
        s = cupy.cuda.Stream(non_blocking=True)
        with s:
            x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
            assert relative_error(exe(cupy.asarray(x)), cpu(x)) < 1e-5


def test_device_outputs_are_ready_for_the_callers_stream():
    with installed(delay=SLOW):
        import cupy

        g = small_graph()
        exe = graphrt.compile(g, device=CudaDevice(), batch_size=2)
        cpu = graphrt.compile(g, device="cpu", batch_size=2)
        xs = [np.random.default_rng(k).standard_normal((2, 3, 8, 8)).astype(np.float32)
              for k in range(4)]
        for x in xs:
            assert relative_error(cupy.asnumpy(exe(x, outputs="device")), cpu(x)) < 1e-5
        for x, y in zip(xs, exe.stream(xs, outputs="device")):
            assert relative_error(cupy.asnumpy(y), cpu(x)) < 1e-5


def test_the_gemm_grid_stays_within_cudas_limits(gpu, monkeypatch):
    a = np.zeros((2, 2), np.float32)
    big = Gemm(np.dtype(np.float32), 10**6, 64 * 70000, 5, 3, a, (0, 3, 1), a, (0, 5, 1), a, (0, 5, 1))
    assert big.as_kernel().grid[1:] == (65535, 65535)
    # the kernel strides over the rest: run with a limit of 2 so small shapes exercise it
    monkeypatch.setattr(calls, "MAX_GRID_YZ", 2)
    rng = np.random.default_rng(2)
    g = Graph("stack")
    x = g.add_input("x", (None, 5, 130, 7))
    g.set_outputs([g.add_node("matmul", [x, param(g, rng, "w", (7, 3))])])
    feeds = rng.standard_normal((2, 5, 130, 7)).astype(np.float32)
    exe = graphrt.compile(g.verify(), device=CudaDevice(gemm="kernel"), batch_size=2)
    assert exe.program(2).launches and relative_error(exe(feeds), graphrt.run_reference(g, feeds)) < 1e-5


def test_the_devices_gpu_is_current_in_every_calling_thread(gpu):
    """A device on GPU 1, made in this thread and used from another (where GPU 0 is current):
    every allocation, stream and launch is on GPU 1, and no caller's current GPU changes."""
    import cupy

    dev = CudaDevice(device_id=1)
    assert cupy.cuda.runtime.getDevice() == 0
    g = small_graph()
    cpu = graphrt.compile(g, device="cpu", batch_size=2)
    x = np.random.default_rng(3).standard_normal((2, 3, 8, 8)).astype(np.float32)
    results = []

    def work():
        exe = graphrt.compile(g, device=dev, batch_size=2)
        results.append(exe(x))
        results.append(list(exe.stream([x, x]))[-1])
        results.append((device_of(exe.arena.data.ptr), cupy.cuda.runtime.getDevice()))
    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert len(results) == 3, "the worker thread failed"
    assert relative_error(results[0], cpu(x)) < 1e-5 and relative_error(results[1], cpu(x)) < 1e-5
    assert results[2] == (1, 0)
    assert cupy.cuda.runtime.getDevice() == 0
