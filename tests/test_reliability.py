"""Faults, long runs and misuse: the numerics guard, memory exhaustion, a short soak, two threads,
and interrupts that leave parameters consistent and a fit that resumes."""
from __future__ import annotations

import _thread
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import graphrt
from conftest import graphrt_threads, threads_back_to

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from seed_models import seed_models  # noqa: E402


def model(name):
    return next(iter(seed_models([name]))).build()


def test_check_finite_names_the_first_node():
    g = graphrt.Graph("nan")
    x = g.add_input("x", (None, 4))
    y = g.add_node("scale", [x], name="sqrt", attrs={"power": 0.5})
    g.set_outputs([g.add_node("relu", [y], name="relu")])
    exe = graphrt.compile(g, batch_size=2, opt_level=0, check_finite=True)
    np.testing.assert_allclose(exe(np.full((2, 4), 4, np.float32)), 2)
    with pytest.raises(graphrt.NumericsError) as err:
        exe(np.full((2, 4), -1, np.float32))
    assert err.value.node == "sqrt" and "NaN or infinite" in str(err.value)
    with pytest.raises(graphrt.NumericsError):
        list(exe.stream([np.full((2, 4), -1, np.float32)]))


def test_a_plan_that_does_not_fit_fails_before_allocating(monkeypatch):
    from graphrt.devices.cpu import CpuDevice

    def refuse(self, nbytes):
        raise AssertionError("allocated")

    monkeypatch.setattr(CpuDevice, "alloc_arena", refuse)
    monkeypatch.setattr(CpuDevice, "available_bytes", lambda self: 1 << 26)
    with pytest.raises(graphrt.OutOfMemoryError, match=r"needs an arena of [\d.]+ MiB at batch 4096 "
                                                        r"\(and [\d.]+ MiB of parameters\) but "
                                                        r"the cpu device has 64.0 MiB available"):
        graphrt.compile(model("torch_lenet"), batch_size=4096)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc")
def test_soak_memory_stays_flat_and_threads_end():
    g = model("keras_simple_ann")
    exe = graphrt.compile(g, batch_size=32)
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((32, 20)).astype(np.float32) for _ in range(4)]
    before_threads = graphrt_threads()
    for _ in exe.stream(xs * 50):
        pass  # warm-up
    start = rss_bytes()
    steps = 0
    for _ in exe.stream(xs[i % 4] for i in range(3000)):
        steps += 1
    growth = rss_bytes() - start
    assert steps == 3000 and growth < 5 << 20, growth
    assert threads_back_to(before_threads)


def test_one_executable_from_two_threads_is_correct():
    g = model("torch_lenet")
    exe = graphrt.compile(g, batch_size=8, opt_level=3)
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((8, 1, 28, 28)).astype(np.float32) for _ in range(6)]
    expected = [graphrt.run_reference(g, x) for x in xs]
    errors = []

    def worker(offset):
        try:
            for i in range(30):
                k = (i + offset) % len(xs)
                np.testing.assert_allclose(exe(xs[k]), expected[k], rtol=1e-4, atol=1e-6)
        except Exception as err:  # reported in the main thread
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(o,)) for o in (0, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def test_two_executables_in_two_threads_equal_alone():
    g = model("keras_simple_ann")
    rng = np.random.default_rng(2)
    xs = [rng.standard_normal((16, 20)).astype(np.float32) for _ in range(5)]
    alone = list(graphrt.compile(g, batch_size=16).stream(xs))
    results = {}

    def worker(key):
        results[key] = list(graphrt.compile(g, batch_size=16).stream(xs))

    threads = [threading.Thread(target=worker, args=(k,)) for k in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for key in "ab":
        for a, b in zip(results[key], alone):
            np.testing.assert_array_equal(a, b)


def test_calling_a_streaming_executable_from_its_loop_is_refused():
    g = model("keras_simple_ann")
    exe = graphrt.compile(g, batch_size=4)
    xs = [np.zeros((4, 20), np.float32)] * 3
    with pytest.raises(graphrt.GraphrtError, match="streaming in this thread"):
        for _ in exe.stream(xs):
            exe(xs[0])
    assert exe(xs[0]).shape == (4, 10)  # usable again once the stream is closed


def test_keyboard_interrupt_during_stream_leaves_no_thread():
    g = model("torch_lenet")
    exe = graphrt.compile(g, batch_size=8)
    x = np.zeros((8, 1, 28, 28), np.float32)
    before = graphrt_threads()
    with pytest.raises(KeyboardInterrupt):
        for i, _ in enumerate(exe.stream(x for _ in range(1000))):
            if i == 5:
                _thread.interrupt_main()
                time.sleep(0.5)  # the interrupt lands while the pipeline runs
    assert threads_back_to(before)


def _digits(n=96):
    pytest.importorskip("sklearn")
    from graphrt.training.datasets import digits_28x28

    x, y = digits_28x28()
    return [(x[i:i + 16] * 255, y[i:i + 16]) for i in range(0, n, 16)]


def test_interrupted_fit_is_consistent_and_resumes():
    batches = _digits()
    opt = graphrt.optim.SGD(lr=0.01, momentum=0.9)
    reference = graphrt.Trainer(model("torch_lenet"), optimizer=opt, batch_size=16)
    reference.fit(batches, epochs=2, progress=False)

    trainer = graphrt.Trainer(model("torch_lenet"), optimizer=opt, batch_size=16)
    state = {"n": 0}

    def interrupt_soon(tr):
        state["n"] += 1
        if state["n"] == 8:  # in the second epoch: Ctrl-C arrives while the next step runs...
            threading.Timer(0.001, _thread.interrupt_main).start()
        elif state["n"] > 8:  # ...or here, on a machine too loaded to run the timer sooner
            time.sleep(30)

    with pytest.raises(KeyboardInterrupt):
        trainer.fit(batches, epochs=2, progress=False, on_step=interrupt_soon)
    done = trainer._completed_steps()
    assert done in (8, 9)
    partial = graphrt.Trainer(model("torch_lenet"), optimizer=opt, batch_size=16)
    for x, y in (batches * 2)[:done]:
        partial.step(x, y)
    for name, value in partial.parameters().items():  # a whole number of steps, nothing half-done
        np.testing.assert_allclose(trainer.parameters()[name], value, rtol=1e-5, atol=1e-7)
    trainer.fit(batches, epochs=2, progress=False, resume=True)
    assert trainer._completed_steps() == 12
    for name, value in reference.parameters().items():
        np.testing.assert_allclose(trainer.parameters()[name], value, rtol=1e-5, atol=1e-7)


# ---- validate before mutating ----------------------------------------------------------------

def _bn_trainer():
    from graphrt.frontends import torch7 as nn

    net = (nn.Sequential().add(nn.Linear(4, 8)).add(nn.BatchNormalization(8)).add(nn.ReLU())
           .add(nn.Linear(8, 3)).add(nn.LogSoftMax()))
    return graphrt.Trainer(net.to_graph(input_shape=(4,)), batch_size=8)


@pytest.mark.parametrize("path", ["step", "fit"])
def test_a_bad_label_is_refused_before_any_state_is_written(path):
    """A label out of range is refused before the step: batch norm's running statistics (and every
    parameter) are those before it (the check used to run in the loss kernel, after batch norm)."""
    tr = _bn_trainer()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 4)).astype(np.float32)
    tr.step(x, np.arange(8) % 3)
    before = tr.parameters()
    bad = np.array([0, 1, 2, 3, 0, 1, 2, 0])  # 3 classes: label 3 is out of range
    with pytest.raises(graphrt.InputError, match=r"labels must lie in \[0, 3\)"):
        if path == "step":
            tr.step(x, bad)
        else:
            tr.fit([(x, bad)], progress=False)
    after = tr.parameters()
    assert any("running_mean" in k for k in after)
    for name, value in before.items():
        np.testing.assert_array_equal(after[name], value, err_msg=name)


# ---- atomic checkpoints ----------------------------------------------------------------------------

def test_save_writes_the_path_named(tmp_path):
    tr = _bn_trainer()
    tr.save(tmp_path / "model.ckpt")
    tr.save(tmp_path / "plain")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.ckpt", "plain.npz"]
    assert tr.save(tmp_path / "model.ckpt") == tmp_path / "model.ckpt"  # the path written
    g = graphrt.load(tmp_path / "model.ckpt")  # told apart by its content
    for name, value in tr.parameters().items():
        np.testing.assert_array_equal(g.params[name], value)


@pytest.mark.parametrize("fault", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_a_failed_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch, fault):
    """A full disk or a Ctrl-C half-way through writing: the previous checkpoint still loads, with
    its own values, and no temporary file is left."""
    tr = _bn_trainer()
    x = np.random.default_rng(1).standard_normal((8, 4)).astype(np.float32)
    path = tmp_path / "model.npz"
    tr.save(path)
    saved = tr.parameters()
    tr.step(x, np.arange(8) % 3)
    real = np.lib.format.write_array
    calls = []

    def failing(fp, array, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # some members written, then the disk is full
            raise fault
        return real(fp, array, *args, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", failing)
    with pytest.raises(type(fault)):
        tr.save(path)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]
    g = graphrt.load(path)
    for name, value in saved.items():
        np.testing.assert_array_equal(g.params[name], value)
