"""Caffe's solver: ``load_solver`` reads a ``SolverParameter`` strictly, each update rule is its
documented formula, and ``graphrt train solver.prototxt`` trains a LeNet-format net from LMDB
databases of scikit-learn's digits to >= 95% test accuracy, consuming exactly the batches an
independent reader (the wire format decoded by hand, Caffe's transform loop) produces."""
from __future__ import annotations

import contextlib
import io
import math
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import graphrt
from graphrt.frontends.caffe import load_solver
from graphrt.ops import get_op
from graphrt.ops.optim import learning_rate

from caffe_data_cases import caffe_transform, digits_bytes, read_lmdb_records, write_lmdb
from example_files import load_example

MODELS = Path(__file__).resolve().parents[1] / ".." / "shared" / "models" / "caffe"
SOLVER = """net: "lenet_train_test.prototxt"
test_iter: 3
test_interval: %(interval)d
base_lr: 0.01
momentum: 0.9
weight_decay: 0.0005
lr_policy: "inv"
gamma: 0.0001
power: 0.75
display: 100
max_iter: %(max_iter)d
snapshot: 5000
snapshot_prefix: "lenet"
solver_mode: CPU
random_seed: 7
"""


# ---- the update rules against their formulas ------------------------------------------------------
def naive_update(kind, reg, attrs, p, g, h, v, it):
    """Caffe's SGDSolver/NesterovSolver/AdamSolver::ComputeUpdateValue after Regularize, per
    element, in float64 (caffe/src/caffe/solvers/*.cpp)."""
    p, h, v = p.astype(np.float64).copy(), h.astype(np.float64).copy(), v.astype(np.float64).copy()
    rate = learning_rate(attrs, it)
    d = attrs["weight_decay"]
    for i in np.ndindex(p.shape):
        gi = float(g[i]) + d * (math.copysign(1.0, p[i]) * (p[i] != 0) if reg == "L1" else p[i])
        mom = attrs["momentum"]
        if kind == "Adam":
            b1, b2 = mom, attrs["momentum2"]
            h[i] = b1 * h[i] + (1 - b1) * gi
            v[i] = b2 * v[i] + (1 - b2) * gi * gi
            t = it + 1
            p[i] -= rate * math.sqrt(1 - b2 ** t) / (1 - b1 ** t) * h[i] / (math.sqrt(v[i]) + attrs["delta"])
        elif kind == "Nesterov":
            old = h[i]
            h[i] = mom * h[i] + rate * gi
            p[i] -= (1 + mom) * h[i] - mom * old
        else:
            h[i] = mom * h[i] + rate * gi
            p[i] -= h[i]
    return p, h, v


@settings(max_examples=30, deadline=None)
@given(kind=st.sampled_from(["SGD", "Nesterov", "Adam"]), reg=st.sampled_from(["L2", "L1"]),
       policy=st.sampled_from(["fixed", "inv", "step", "multistep", "exp", "poly"]),
       seed=st.integers(0, 2**16), steps=st.integers(1, 4))
def test_each_update_rule_is_its_documented_formula(kind, reg, policy, seed, steps):
    rng = np.random.default_rng(seed)
    op = get_op("solver_update")
    attrs = op.normalize_attrs({"type": kind, "lr": 0.05, "momentum": 0.9, "weight_decay": 0.01,
                                "regularization": reg, "policy": policy, "gamma": 0.5,
                                "power": 0.75, "stepsize": 2, "stepvalues": (1, 3), "max_iter": 10})
    p = rng.standard_normal((3, 4))
    h, v = np.zeros_like(p), np.zeros_like(p)
    want = (p.copy(), h.copy(), v.copy())
    for it in range(steps):
        g = rng.standard_normal(p.shape)
        op.forward(attrs, [p, g, h, v, np.float64(it)], [])
        want = naive_update(kind, reg, attrs, *want[:1], g, want[1], want[2], it)
        for got, ref in zip((p, h, v), want):
            np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)


# ---- the solver file ------------------------------------------------------------------------------
def _write(tmp_path, text, name="solver.prototxt"):
    (tmp_path / "lenet_train_test.prototxt").write_text("name: 'x'")
    path = tmp_path / name
    path.write_text(text)
    return path


def test_load_solver_reads_the_fields(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = load_solver(_write(tmp_path, SOLVER % {"interval": 100, "max_iter": 300}
                           + 'type: "Nesterov"\nstepvalue: 5\nstepvalue: 9\niter_size: 2\n'))
    assert (s.train_net, s.test_nets, s.test_iter, s.test_interval) == \
        ("lenet_train_test.prototxt", ["lenet_train_test.prototxt"], [3], 100)
    assert (s.base_lr, s.momentum, s.weight_decay, s.lr_policy, s.gamma, s.power, s.max_iter) == \
        (0.01, 0.9, 0.0005, "inv", 0.0001, 0.75, 300)
    assert (s.type, s.stepvalue, s.iter_size, s.device, s.random_seed) == ("Nesterov", (5, 9), 2, "cpu", 7)
    legacy = load_solver(_write(tmp_path, SOLVER % {"interval": 1, "max_iter": 1}
                                + "solver_type: ADAM\nsolver_mode: GPU\n"))
    assert legacy.type == "Adam" and legacy.device == "auto"


@pytest.mark.parametrize("extra,error,match", [
    ('type: "AdaGrad"\n', graphrt.UnsupportedError, r"line 16: solver type 'AdaGrad'"),
    ("base_lrr: 0.1\n", graphrt.ParseError, r"line 16: unknown solver field 'base_lrr'.*base_lr"),
    ("clip_gradients: 10\n", graphrt.UnsupportedError, "gradient clipping"),
    ('lr_policy: "steep"\n', graphrt.ParseError, "unknown lr_policy 'steep'"),
])
def test_load_solver_refuses_what_it_cannot_honour(tmp_path, monkeypatch, extra, error, match):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(error, match=match):
        load_solver(_write(tmp_path, SOLVER % {"interval": 1, "max_iter": 1} + extra))


def test_a_missing_net_names_the_solver_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "solver.prototxt"
    path.write_text(SOLVER % {"interval": 1, "max_iter": 1})
    with pytest.raises(graphrt.ParseError,
                       match=r"solver.prototxt line 1: net 'lenet_train_test.prototxt' does not exist"):
        load_solver(path)


# ---- training from LMDB ---------------------------------------------------------------------------
@pytest.fixture
def lenet_dir(tmp_path, monkeypatch):
    """Caffe's LeNet train/test prototxt (layer widths reduced to keep the test short) over LMDBs of
    the digits: TRAIN raw Datum records, TEST PNG-encoded ones; paths relative to the working
    directory, as Caffe resolves them."""
    pytest.importorskip("lmdb")
    pytest.importorskip("sklearn")
    monkeypatch.chdir(tmp_path)
    images, labels = digits_bytes()
    perm = np.random.default_rng(0).permutation(len(images))
    images, labels = images[perm], labels[perm]
    write_lmdb("train_lmdb", images[:1497], labels[:1497])
    write_lmdb("test_lmdb", images[1497:], labels[1497:], encode=True)
    records = read_lmdb_records("train_lmdb"), read_lmdb_records("test_lmdb")
    proto = (MODELS / "lenet_train_test.prototxt").read_text()
    proto = proto.replace("examples/mnist/mnist_train_lmdb", "train_lmdb").replace(
        "examples/mnist/mnist_test_lmdb", "test_lmdb").replace("batch_size: 64", "batch_size: 32")
    proto = proto.replace("scale: 0.00390625", "scale: 0.00390625\n    mirror: true", 1)
    for wide, narrow in ((20, 8), (50, 16), (500, 100)):
        proto = proto.replace(f"num_output: {wide}", f"num_output: {narrow}")
    Path("lenet_train_test.prototxt").write_text(proto)
    return tmp_path, records


def test_graphrt_train_solver_reaches_95_percent_on_exactly_the_independent_readers_batches(lenet_dir):
    from graphrt.training.caffe_solver import run_solver

    tmp_path, (train_records, test_records) = lenet_dir
    assert test_records[0][0].shape == (1, 28, 28)  # the PNGs decode to what was stored
    Path("solver.prototxt").write_text(SOLVER % {"interval": 150, "max_iter": 300})
    consumed, lines = [], []
    result = run_solver("solver.prototxt", on_batch=consumed.append, log=lines.append)
    assert len(consumed) == 300
    op = get_op("image_transform")
    cursor = 0
    for batch in consumed:  # the records in key order, cycling, and Caffe's transform of each
        got = np.empty((32, 1, 28, 28), np.float32)
        op.forward({"crop": (28, 28), "scale": 0.00390625},
                   [batch["data"], batch["mnist/window"]], [got])
        for k in range(32):
            image, label = train_records[cursor % len(train_records)]
            cursor += 1
            win = batch["mnist/window"][k]
            assert batch["label"][k] == label
            np.testing.assert_array_equal(
                got[k], caffe_transform(image, win[0], win[1], win[2], 0, 0.00390625))
    mirrored = np.concatenate([b["mnist/window"][:, 2] for b in consumed])
    assert 0.4 < mirrored.mean() < 0.6  # TRAIN draws the mirror coin per image
    accuracy = [float(m.group(1)) for m in
                (re.search(r"Test net output #0: accuracy = ([\d.e+-]+)$", line) for line in lines) if m]
    assert len(accuracy) == 3 and accuracy[-1] >= 0.95, accuracy  # iterations 0, 150, 300
    assert result["test"][0]["accuracy"] == pytest.approx(accuracy[-1], rel=1e-5)
    assert Path("lenet_iter_300.npz").exists()
    # the lines caffe train prints, with glog's prefix
    glog = r"^I\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ [\w.]+:\d+\] "
    assert any(re.match(glog + r"Iteration 100, loss = [\d.e+-]+$", line) for line in lines)
    assert any(re.match(glog + r"Iteration 100, lr = 0\.00992565$", line) for line in lines)
    assert any(re.match(glog + r"    Test net output #1: loss = [\d.e+-]+ \(\* 1 = [\d.e+-]+ loss\)$", line)
               for line in lines)


def test_the_command_line_runs_a_solver(lenet_dir):
    from graphrt.cli import main

    Path("solver.prototxt").write_text((SOLVER % {"interval": 2, "max_iter": 2}).replace(
        "display: 100", "display: 1"))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["train", "solver.prototxt"]) == 0
    text = out.getvalue()
    assert "Iteration 1, lr = 0.00999925" in text and "Test net output #0: accuracy" in text
    assert "Optimization Done." in text


def test_caffes_cifar10_quick_solver_and_net_run_unmodified(tmp_path):
    """examples/caffe_cifar10_quick_solver.py: Caffe's own files (the net byte for byte from
    ../shared), a generated mean and LMDBs, a short run."""
    pytest.importorskip("lmdb")
    example, _ = load_example("caffe_cifar10_quick_solver")
    example.prepare(tmp_path, train=200, test=100)
    folder = tmp_path / "examples" / "cifar10"
    assert (folder / "cifar10_quick_train_test.prototxt").read_bytes() == \
        (MODELS / "cifar10_quick_train_test.prototxt").read_bytes()
    lines = []
    result = example.run(tmp_path, max_iter=2, test_iter=1, log=lines.append)
    assert result["iterations"] == 2 and set(result["test"][0]) == {"accuracy", "loss"}
    assert any("Iteration 0, lr = 0.001" in line for line in lines)
    g = result["trainer"].train_graph
    transform = [n for n in g.nodes if n.op == "image_transform"]
    assert len(transform) == 1 and len(transform[0].inputs) == 3  # the mean image, on the device
    assert g.params["cifar_mean"].shape == (3, 32, 32)


@pytest.mark.filterwarnings("ignore::graphrt.FallbackWarning")
@pytest.mark.parametrize("kind,reg", [("SGD", "L1"), ("Nesterov", "L2"), ("Adam", "L2")])
def test_the_cuda_solver_kernel_steps_as_the_cpu_on_the_stand_in(kind, reg):
    from tools.cuda_emulator import host_compiler, installed

    from graphrt.training.caffe_solver import CaffeUpdate

    if host_compiler() is None:
        pytest.skip("no host C++ compiler")
    rng = np.random.default_rng(0)
    g = graphrt.Graph("mlp")
    x = g.add_input("x", (None, 6))
    w = g.add_param("w", rng.standard_normal((5, 6)).astype(np.float32))
    b = g.add_param("b", rng.standard_normal(5).astype(np.float32), lr_mult=2, decay_mult=0)
    g.set_outputs([g.add_node("dense", [x, w, b])])
    opt = CaffeUpdate(type=kind, lr=0.05, momentum=0.9, weight_decay=0.01, regularization=reg,
                      policy="multistep", gamma=0.5, stepvalues=(1.0, 2.0))
    xs, ys = rng.standard_normal((8, 6)).astype(np.float32), rng.integers(0, 5, 8)

    def train(device):
        tr = graphrt.Trainer(g, optimizer=opt, device=device, batch_size=8)
        # the update runs on the device (gradient ops without a cuda kernel yet run on the host)
        assert not [n for n in tr.exe.host_nodes if "update" in n]
        for _ in range(3):
            tr.step(xs, ys)
        return tr.parameters()

    want = train("cpu")
    with installed():
        got = train("cuda")
    for name in ("w", "b"):
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6)


def test_iter_size_steps_on_iter_size_batches_at_once(lenet_dir):
    from graphrt.training.caffe_solver import run_solver

    _, (train_records, _) = lenet_dir
    Path("solver.prototxt").write_text((SOLVER % {"interval": 100, "max_iter": 2}) + "iter_size: 3\n")
    consumed = []
    result = run_solver("solver.prototxt", on_batch=consumed.append, log=lambda line: None)
    assert result["trainer"].batch_size == 96 and len(consumed) == 2
    assert consumed[1]["label"].tolist() == [lab for _, lab in train_records[96:192]]
