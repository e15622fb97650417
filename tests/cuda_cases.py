"""What the cuda device's tests share: the devices to test on (the CUDA stand-in everywhere, a real
GPU where there is one), small graphs, one graph per op case, the seed models, device inputs made on
another stream, and the comparison with the cpu device (relative error as DESIGN.md defines it:
below 1e-5, or 1e-3 with TF32).

``kind`` "stand_in" is the cuda device over the CUDA stand-in of ``tools/cuda_emulator`` (the test
installs it; see :func:`on_device_kind`), "gpu" the cuda device over the real CuPy.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest

import graphrt
from graphrt import Graph
from graphrt.devices.cuda import CudaDevice, cuda_available
from graphrt.testing import first_divergence, relative_error
from tools.cuda_emulator import host_compiler, installed

ROOT = Path(__file__).resolve().parents[1]
WANT_GPU = os.environ.get("GRAPHRT_DEVICE", "").lower() == "cuda"
HAVE_GPU = cuda_available()
TF32 = os.environ.get("GRAPHRT_TF32", "") not in ("", "0")
RTOL = 1e-3 if TF32 else 1e-5

requires_gpu = pytest.mark.skipif(not (HAVE_GPU or WANT_GPU), reason="no GPU (CuPy sees none)")
requires_cxx = pytest.mark.skipif(host_compiler() is None, reason="no host C++ compiler")
DEVICES = [pytest.param("stand_in", marks=requires_cxx), pytest.param("gpu", marks=requires_gpu)]


def make_device(kind: str, **options) -> CudaDevice:
    """The cuda device (over the stand-in when it is installed: see :func:`on_device_kind`)."""
    return CudaDevice(**options)


def on_device_kind(kind: str):
    """A context with the stand-in installed as ``cupy`` for kind "stand_in" (nothing for "gpu")."""
    return installed() if kind == "stand_in" else contextlib.nullcontext()


def small_graph() -> Graph:
    rng = np.random.default_rng(0)
    g = Graph("small")
    x = g.add_input("x", (None, 3, 8, 8))
    w = g.add_param("w", rng.standard_normal((4, 3, 3, 3)).astype(np.float32))
    y = g.add_node("relu", [g.add_node("conv2d", [x, w], attrs={"pads": 1})])
    g.set_outputs([g.add_node("max_pool", [y], attrs={"kernel": 2, "stride": 2})])
    return g.verify()


def param(g, rng, name, shape, scale=0.5):
    return g.add_param(name, (rng.standard_normal(shape) * scale).astype(np.float32))


def one_node(op, shapes, params=(), attrs=None, dtype="float32", seed=0, outputs=None,
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


def case_list():
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
        # merged sibling convolutions; the second output straddles the two groups
        "conv_split": ("conv2d_split", [(4, 7, 6)], [r(6, 2, 3, 3), r(6)],
                       {"pads": 1, "groups": 2, "activation": "relu", "sizes": (2, 3, 1)}),
        "conv_split_pointwise": ("conv2d_split", [(6, 5, 5)], [r(5, 6, 1, 1)],
                                 {"activation": "tanh", "sizes": (1, 4)}),
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


CASES = case_list()


def compare_with_cpu(g, feeds, device_kind, levels=(0, 3), rtol=None, **device_options):
    """Compile ``g`` on the cpu and cuda devices at each level; outputs must agree within rtol."""
    n = next(iter(feeds.values())).shape[0]
    for level in levels:
        want = graphrt.compile(g, device="cpu", batch_size=n, opt_level=level)(feeds)
        exe = graphrt.compile(g, device=make_device(device_kind, **device_options), batch_size=n,
                              opt_level=level)
        for run in range(4):  # plain, plain timed, captured and replayed, the faster
            assert_agrees(exe, g, feeds, want, rtol, f"level {level} run {run}")
    return exe


def assert_agrees(exe, g, feeds, want, rtol=None, label=""):
    """``exe(feeds)`` against the cpu device's ``want``; names the first departing node if not."""
    rtol = RTOL if rtol is None else rtol
    got = exe(feeds)
    want_d = want if isinstance(want, dict) else {"out": want}
    got_d = got if isinstance(got, dict) else {"out": got}
    for name, ref in want_d.items():
        err = relative_error(got_d[name], ref)
        if not err < rtol:
            culprit = first_divergence(exe, g, feeds, max(rtol, 1e-4))
            raise AssertionError(f"{g.name} {label}: output {name} relative error {err:.3g} >= "
                                 f"{rtol}; first departing node: {culprit}")


# ---- seed models ---------------------------------------------------------------------------------
def seed_model_module():
    """``examples/seed_models.py`` (the list the demo and the benchmarks use)."""
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


def seed_model(name):
    """The seed model entry ``name`` (skips when it needs ../shared and that is absent)."""
    try:
        module = seed_model_module()
    except Exception as err:  # pragma: no cover - examples missing
        pytest.skip(f"examples/seed_models.py: {err}")
    found = [m for m in module.seed_models() if m.name == name]
    if not found:
        pytest.skip(f"{name} needs ../shared")
    return found[0]


def seed_graph(name) -> Graph:
    """Seed model ``name`` with its weight matrices drawn again at He scale (seeded): the files'
    fillers leave most of these untrained networks with a uniform softmax (AlexNet's and CIFAR-10
    quick's are exactly uniform), which would agree with any device; these outputs do not."""
    g = seed_model(name).build()
    rng = np.random.default_rng(3)
    for key, value in list(g.params.items()):
        if value.ndim >= 2 and value.dtype.kind == "f":
            fan_in = int(np.prod(value.shape[1:]))
            g.params[key] = (rng.standard_normal(value.shape) * np.sqrt(2.0 / fan_in)).astype(value.dtype)
    return g


def seed_feeds(g: Graph, batch: int, seed: int = 7) -> dict:
    """A seeded standard normal batch for every input of ``g``."""
    rng = np.random.default_rng(seed)
    return {t: rng.standard_normal(g.specs[t].concrete(batch)).astype(g.specs[t].dtype)
            for t in g.inputs}


# ---- device inputs made elsewhere -----------------------------------------------------------------
class Producer:
    """A device array made on a side stream, slowly, exposed through ``__cuda_array_interface__``
    (with that stream) or DLPack (ordering its work before the consumer's stream)."""

    def __init__(self, cupy, x: np.ndarray):
        self.stream = cupy.cuda.Stream(non_blocking=True)
        self.array = cupy.zeros(x.shape, x.dtype)  # on the caller's current stream
        self.stream.wait_event(cupy.cuda.get_current_stream().record())
        pinned = np.frombuffer(cupy.cuda.alloc_pinned_memory(x.nbytes), x.dtype).reshape(x.shape)
        pinned[...] = x
        self.keep = pinned
        for _ in range(3):  # a few slow steps on the producer's stream
            cupy.cuda.runtime.memcpyAsync(self.array.data.ptr, pinned.ctypes.data, x.nbytes,
                                          cupy.cuda.runtime.memcpyHostToDevice, self.stream.ptr)
        self.cupy = cupy

    @property
    def __cuda_array_interface__(self):
        return dict(self.array.__cuda_array_interface__, stream=self.stream.ptr)


class DLPackProducer(Producer):
    """The same, handed over through DLPack: the producer orders its stream before the consumer's."""

    def __dlpack_device__(self):
        return (2, 0)

    def __dlpack__(self, stream=None):
        consumer = self.cupy.cuda.ExternalStream(0 if stream in (None, 1) else stream)
        consumer.wait_event(self.stream.record())  # the producer's side of the protocol
        return self.array
