"""Explicit fallback, as ONNX Runtime partitions a graph: placement asks the device which nodes it
can run; the others run on the host between explicit copy nodes, which the ledger counts, the
placed-stage picture draws red and a :class:`graphrt.FallbackWarning` names at compile time.
Nothing falls back at bind time.

The cuda device runs on the CUDA stand-in here (``tools/cuda_emulator``); the scheduler's host path
is also checked on the cpu device, with a device that refuses an op.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import graphrt
from graphrt import Graph
from graphrt.devices.cpu import CpuDevice
from graphrt.devices.cuda import CudaDevice
from graphrt.devices.cuda.bind.registry import BINDERS
from graphrt.ops import all_ops
from graphrt.testing import relative_error
from tools.cuda_emulator import installed

from cuda_cases import SEED_MODELS, param, requires_cxx, seed_graph

# the ops the cuda device has no kernel for: they run on the host (none of them is in a seed model's
# training step: see test_no_seed_models_training_step_runs_on_the_host); all_reduce runs on the
# device for a group of one, on the host for a group with a communicator (test_cuda_struct.py)
ON_THE_HOST: list = []


def test_the_op_registry_on_the_cuda_device():
    """Every registered op, and where the cuda device runs it (op by op: a node of an op with a
    kernel still goes to the host when its dtype or rank is one the kernels do not take)."""
    ops = sorted(all_ops())
    device = [op for op in ops if op in BINDERS]
    host = [op for op in ops if op not in BINDERS]
    print(f"cuda device: {len(device)} ops on the device: {', '.join(device)}")
    print(f"cuda device: {len(host)} ops on the host: {', '.join(host)}")
    assert host == ON_THE_HOST
    assert set(device) | set(host) == set(ops)


class RefusingRelu:
    """A device that cannot run relu (so any graph shows the host path)."""

    def placement(self, node, graph):
        return "no relu here (test)" if node.op == "relu" else super().placement(node, graph)


class CpuWithoutRelu(RefusingRelu, CpuDevice):
    pass


class CudaWithoutRelu(RefusingRelu, CudaDevice):
    pass


def _conv_relu_pool(seed=0) -> Graph:
    rng = np.random.default_rng(seed)
    g = Graph("conv_relu_pool")
    x = g.add_input("x", (None, 3, 8, 8))
    y = g.add_node("conv2d", [x, param(g, rng, "w", (4, 3, 3, 3)), param(g, rng, "b", (4,))],
                   attrs={"pads": 1}, name="conv")
    y = g.add_node("relu", [y], name="relu")
    g.set_outputs([g.add_node("max_pool", [y], attrs={"kernel": 2, "stride": 2}, name="pool")])
    return g.verify()


def _check_host_path(device):
    g = _conv_relu_pool()
    with pytest.warns(graphrt.FallbackWarning, match=r"relu \[relu\]: no relu here") as caught:
        exe = graphrt.compile(g, device=device, batch_size=2, opt_level=1)
    assert "1 of 3 nodes" in str(caught[0].message)
    placed = exe.graph
    assert placed.node("relu").device == "host"
    assert placed.producer(placed.node("relu").inputs[0]).op == "copy_to_host"
    assert [c.op for c in placed.consumers("relu")] == ["copy_to_device"]
    assert exe.host_nodes == {"relu": "no relu here (test)"}
    cpu = graphrt.compile(g, device="cpu", batch_size=2, opt_level=1)
    xs = [np.random.default_rng(k).standard_normal((2, 3, 8, 8)).astype(np.float32) for k in range(4)]
    exe.ledger.reset()
    for x in xs:
        assert relative_error(exe(x), cpu(x)) < 1e-5
    outs = list(exe.stream(xs))
    assert all(relative_error(y, cpu(x)) < 1e-5 for x, y in zip(xs, outs))
    s = exe.ledger.summary()  # per step: the input and the relu's output in, its input and the output out
    assert (s["HtoD"]["invocations"], s["DtoH"]["invocations"]) == (16, 16)
    return exe


def test_a_refused_node_runs_on_the_host_between_copies_on_the_cpu_device():
    _check_host_path(CpuWithoutRelu())


@requires_cxx
def test_a_refused_node_runs_on_the_host_between_copies_on_the_cuda_device():
    with installed():
        exe = _check_host_path(CudaWithoutRelu(graphs=True))
        mode, why = exe.device.run_mode(exe.program(2))
        assert mode == "plain" and "relu (relu) runs on the host" in why


def test_every_node_stays_on_a_device_that_runs_everything():
    with warnings.catch_warnings():
        warnings.simplefilter("error", graphrt.FallbackWarning)
        exe = graphrt.compile(_conv_relu_pool(), device="cpu", batch_size=2, opt_level=1)
    assert exe.host_nodes == {} and all(n.device == "cpu" for n in exe.graph.nodes
                                         if n.op not in ("copy_to_host",))


def test_the_placed_stage_draws_host_nodes_red():
    from graphrt import viz
    from graphrt.viz.svg import COLORS

    with pytest.warns(graphrt.FallbackWarning):
        view = viz.graph_view(_conv_relu_pool(), "placed", device=CpuWithoutRelu(), opt_level=1)
    kinds = {n.name: n.kind for n in view.nodes if not n.is_tensor}
    assert kinds["relu"] == "host" and kinds["conv"] == "op"
    assert kinds["conv/copy_to_host"] == "copy" and kinds["relu/copy_to_device"] == "copy"
    svg = viz.to_svg(view)
    assert COLORS["host"][1] in svg and 'class="node host' in svg


def test_a_host_node_may_not_update_state_the_device_uses():
    """An optimizer update on the host while the device reads the parameter: its updates would
    never reach the device, so compiling refuses."""
    rng = np.random.default_rng(0)
    g = Graph("sgd")
    x = g.add_input("x", (None, 4))
    w = param(g, rng, "w", (3, 4))
    y = g.add_node("dense", [x, w])
    g.set_outputs([y])

    class NoSgd(CpuDevice):
        def placement(self, node, graph):
            return "no sgd here (test)" if node.op == "sgd_update" else None
    with pytest.raises(graphrt.UnsupportedError, match="updates 'w' in place.*device='cpu'"):
        graphrt.Trainer(g.verify(), device=NoSgd(), batch_size=2)


@requires_cxx
@pytest.mark.parametrize("name", SEED_MODELS)
def test_no_seed_models_training_step_runs_on_the_host(name):
    """Placement of each seed model's training step (forward, backward, loss, optimizer, dropout,
    batch-norm training) on the cuda device: every node on the device."""
    g = seed_graph(name)
    with installed(), warnings.catch_warnings():
        warnings.simplefilter("error", graphrt.FallbackWarning)
        tr = graphrt.Trainer(g, optimizer=graphrt.optim.SGD(momentum=0.9, weight_decay=1e-4),
                             device=CudaDevice(), batch_size=2)
    ops = {n.op for n in tr.exe.graph.nodes}
    print(f"{name}: {len(ops)} ops, all on the device: {', '.join(sorted(ops))}")
    assert tr.exe.host_nodes == {}
    assert not ops & set(ON_THE_HOST)


class CudaWithoutConvGradWeight(CudaDevice):
    """The cuda device refusing conv2d_grad_weight (so a training step shows the host path)."""

    def placement(self, node, graph):
        if node.op == "conv2d_grad_weight":
            return "no conv2d_grad_weight here (test)"
        return super().placement(node, graph)


@requires_cxx
def test_training_runs_the_backward_ops_on_the_host_with_explicit_copies():
    """A CNN's training step on a cuda device that refuses a backward op: forward, the other
    backward ops and the optimizer on the device, that op on the host; losses and parameters
    match the cpu device."""
    rng = np.random.default_rng(6)
    g = Graph("cnn")
    x = g.add_input("x", (None, 2, 6, 6))
    h = g.add_node("conv2d", [x, param(g, rng, "w1", (4, 2, 3, 3)), param(g, rng, "b1", (4,))],
                   attrs={"pads": 1, "activation": "relu"})
    h = g.add_node("max_pool", [h], attrs={"kernel": 2, "stride": 2})
    h = g.add_node("dense", [g.add_node("flatten", [h]), param(g, rng, "w2", (5, 36))])
    g.set_outputs([h])
    g.verify()
    opt = graphrt.optim.SGD(lr=0.05, momentum=0.9)
    xs = rng.standard_normal((3, 4, 2, 6, 6)).astype(np.float32)
    ys = rng.integers(0, 5, (3, 4))
    with installed():
        with pytest.warns(graphrt.FallbackWarning, match="conv2d_grad_weight") as caught:
            gpu = graphrt.Trainer(g, optimizer=opt, device=CudaWithoutConvGradWeight(),
                                  batch_size=4)
        print(caught[0].message)
        cpu = graphrt.Trainer(g, optimizer=opt, device="cpu", batch_size=4)
        host = {gpu.exe.graph.node(n).op for n in gpu.exe.host_nodes}
        assert host == {"conv2d_grad_weight"}
        gpu.exe.ledger.reset()
        for xb, yb in zip(xs, ys):
            a, b = cpu.step(xb, yb), gpu.step(xb, yb)
            assert abs(a - b) <= 1e-5 * max(1.0, abs(a))
        pc, pg = cpu.parameters(), gpu.parameters()
        for name in pc:
            assert relative_error(pg[name], pc[name]) < 1e-5, name
        s = gpu.exe.ledger.summary()
        copies = sum(n.op in ("copy_to_host", "copy_to_device") for n in gpu.exe.graph.nodes)
        assert s["HtoD"]["invocations"] + s["DtoH"]["invocations"] >= 3 * (copies - 1)
