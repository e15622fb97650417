"""exe.stream: exactly one HtoD per batch and one DtoH per step, loading and uploading overlapping
compute (checked as an order of events), faults reaching the caller, no thread left behind, every
batch once and in order."""
from __future__ import annotations

import sys
import threading
import time
import traceback
from pathlib import Path

import numpy as np
import pytest

import graphrt
from conftest import graphrt_threads, threads_back_to
from graphrt.scheduler.naive import NaiveExecutable

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from seed_models import seed_models  # noqa: E402

SMALL = ["keras_simple_ann", "torch_lenet", "caffe_lenet", "caffe_cifar10_quick"]


def batches_for(graph, batch, n, seed=0):
    rng = np.random.default_rng(seed)
    spec = graph.specs[graph.inputs[0]]
    return [rng.standard_normal(spec.concrete(batch)).astype(spec.dtype) for _ in range(n)]


@pytest.mark.parametrize("name", SMALL)
def test_ten_iterations_ten_copies_each_way(name):
    model = next(iter(seed_models([name])), None)
    if model is None:
        pytest.skip("needs ../shared")
    graph = model.build()
    exe = graphrt.compile(graph, batch_size=model.batch, opt_level=3)
    used = {t for n in exe.graph.nodes for t in n.inputs if t in exe.graph.params}
    assert exe.ledger.uploads["invocations"] == len(used)  # parameters: once, at compile time
    exe.ledger.reset()
    outs = list(exe.stream(batches_for(graph, model.batch, 10)))
    summary = exe.ledger.summary()
    assert len(outs) == 10
    assert summary["HtoD"]["invocations"] == 10 and summary["DtoH"]["invocations"] == 10
    assert summary["DtoD"]["invocations"] == 0
    assert exe.ledger.uploads["invocations"] == len(used)


def test_naive_mode_copies_per_op():
    graph = next(iter(seed_models(["torch_lenet"]))).build()
    naive = NaiveExecutable(graph)
    x = batches_for(graph, 4, 1)[0]
    np.testing.assert_allclose(naive(x), graphrt.run_reference(graph, x), rtol=1e-6)
    s = naive.ledger.summary()
    assert s["HtoD"]["invocations"] >= len(graph) and s["DtoH"]["invocations"] >= len(graph)


def test_stream_equals_calls_including_a_partial_last_batch():
    graph = next(iter(seed_models(["torch_lenet"]))).build()
    exe = graphrt.compile(graph, batch_size=8, opt_level=3)
    xs = batches_for(graph, 8, 7) + [batches_for(graph, 3, 1, seed=9)[0]]
    expected = [graphrt.run_reference(graph, x) for x in xs]
    got = list(exe.stream(iter(xs)))  # any iterable; outputs are owned by the caller
    assert [g.shape for g in got] == [e.shape for e in expected]
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)
    assert len({id(g) for g in got}) == len(got)


def test_pairs_carry_labels_alongside():
    graph = next(iter(seed_models(["keras_simple_ann"]))).build()
    exe = graphrt.compile(graph, batch_size=4)
    xs = batches_for(graph, 4, 3)
    out = list(exe.stream((x, np.full(4, i)) for i, x in enumerate(xs)))
    assert [int(y[0]) for _, y in out] == [0, 1, 2]


def test_copy_false_gives_views_valid_until_the_next_step():
    graph = next(iter(seed_models(["keras_simple_ann"]))).build()
    exe = graphrt.compile(graph, batch_size=4)
    xs = batches_for(graph, 4, 3)
    for x, y in zip(xs, exe.stream(xs, copy=False)):
        np.testing.assert_allclose(y, graphrt.run_reference(graph, x), rtol=1e-5)
        assert not y.flags.owndata


class Boom(RuntimeError):
    pass


def failing_loader(xs, at):
    for i, x in enumerate(xs):
        if i == at:
            raise Boom(f"loader failed at {i}")
        yield x


def test_loader_exception_reaches_caller_with_traceback_and_threads_end():
    graph = next(iter(seed_models(["keras_simple_ann"]))).build()
    exe = graphrt.compile(graph, batch_size=4)
    before = graphrt_threads()
    seen = []
    with pytest.raises(Boom) as err:
        for y in exe.stream(failing_loader(batches_for(graph, 4, 6), at=3)):
            seen.append(y)
    assert len(seen) == 3  # the batches before the fault, each once
    frames = "".join(traceback.format_tb(err.value.__traceback__))
    assert "failing_loader" in frames  # the original traceback, from the loader's frame
    assert threads_back_to(before)


def test_breaking_early_leaves_no_thread():
    graph = next(iter(seed_models(["keras_simple_ann"]))).build()
    exe = graphrt.compile(graph, batch_size=4)
    before = graphrt_threads()
    stream = exe.stream(batches_for(graph, 4, 50))
    for i, _ in enumerate(stream):
        if i == 2:
            break
    stream.close()
    assert threads_back_to(before)


def test_bad_batch_names_input_and_expected_shape():
    graph = next(iter(seed_models(["torch_lenet"]))).build()
    exe = graphrt.compile(graph, batch_size=4)
    xs = batches_for(graph, 4, 2) + [np.zeros((4, 1, 27, 28), np.float32)]
    with pytest.raises(graphrt.InputError, match=r"batch 2: input 'input' expects shape \(N, 1, 28, 28\)"):
        list(exe.stream(xs))
    with pytest.raises(graphrt.InputError, match="dtype"):
        list(exe.stream([np.zeros((4, 1, 28, 28), np.int64) + 2**24 + 1]))  # float32 cannot hold them
    with pytest.raises(graphrt.InputError, match="compiled for batch_size 4"):
        list(exe.stream([np.zeros((5, 1, 28, 28), np.float32)]))


WAIT_S = 60.0  # reached only when the pipeline is serial (a deadlock this test turns into a failure)


def test_next_batch_is_loaded_and_uploaded_while_one_computes(monkeypatch):
    """Overlap as an order of events, not seconds (the timing is ``bench/stream_overlap.py``): step k
    does not finish until batch k+1 has been taken from the loader and uploaded, and the loader does
    not hand out batch k+1 until step k has begun. A pipeline that loads or uploads only between
    steps never satisfies both; its waits time out and the test fails instead of hanging."""
    from graphrt.scheduler.program import Program

    graph = next(iter(seed_models(["torch_lenet"]))).build()
    exe = graphrt.compile(graph, batch_size=4, opt_level=3)
    n = 6
    xs = batches_for(graph, 4, n)
    expected = [exe(x) for x in xs]
    computing, uploaded = [threading.Event() for _ in range(n)], [threading.Event() for _ in range(n)]
    log, missed, lock = [], [], threading.Lock()
    uploads, steps = iter(range(n)), iter(range(n))

    def note(*event):
        with lock:
            log.append(event)

    def wait(event, what):
        if not event.wait(WAIT_S):
            missed.append(what)

    def loader():
        for k in range(n):
            if k:
                wait(computing[k - 1], f"batch {k} was asked for but step {k - 1} never began")
            note("load", k)
            yield xs[k]

    real_upload, real_run = exe.device.to_device, Program.run

    def upload(host, dst, stream=None):
        real_upload(host, dst, stream)
        k = next(uploads)
        note("uploaded", k)
        uploaded[k].set()

    def run(self, *args, **kwargs):
        k = next(steps)
        note("step begins", k)
        computing[k].set()
        real_run(self, *args, **kwargs)
        if k + 1 < n:
            wait(uploaded[k + 1], f"step {k} could not finish: batch {k + 1} was never uploaded")
        note("step ends", k)

    monkeypatch.setattr(exe.device, "to_device", upload)
    monkeypatch.setattr(Program, "run", run)
    got = list(exe.stream(loader()))
    assert missed == [], missed
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g, e)
    at = {event: i for i, event in enumerate(log)}
    for k in range(n):
        assert at["uploaded", k] < at["step begins", k]  # compute waits on its batch's upload
        if k + 1 < n:
            assert at["step begins", k] < at["load", k + 1] < at["uploaded", k + 1] < at["step ends", k]


# ---- streams always stop ---------------------------------------------------------------------

def blocked_after_one(x, release: threading.Event):
    """The caller's iterator: one batch, then blocked (a network read that never returns) until
    ``release``; after that it would go on."""
    yield x
    release.wait()
    yield x
    yield x


def _stop_while_blocked(how: str, exe, x, release):
    stream = exe.stream(blocked_after_one(x, release))
    if how == "break":
        for _ in stream:
            break
    elif how == "close":
        next(stream)
        stream.close()
    else:  # an exception in the consumer
        with pytest.raises(Boom):
            for _ in stream:
                raise Boom("consumer failed")


@pytest.mark.parametrize("how", ["break", "close", "raise"])
def test_leaving_a_stream_returns_while_the_loader_is_blocked(how):
    """The consumer returns at once although the loader is inside the caller's iterator: the loader
    is not joined while blocked, and what the iterator returns later is discarded."""
    graph = next(iter(seed_models(["keras_simple_ann"]))).build()
    exe = graphrt.compile(graph, batch_size=4)
    x = batches_for(graph, 4, 1)[0]
    release = threading.Event()
    done = threading.Event()
    consumer = threading.Thread(target=lambda: (_stop_while_blocked(how, exe, x, release),
                                                done.set()), daemon=True)
    consumer.start()
    consumer.join(30)  # generous: this returns in milliseconds; before the fix it never did
    blocked = not done.is_set()
    release.set()
    assert not blocked, f"leaving the stream ({how}) waited for the blocked loader"
    np.testing.assert_allclose(exe(x), graphrt.run_reference(graph, x), rtol=1e-5, atol=1e-6)
    assert len(list(exe.stream([x, x]))) == 2  # the executable streams again


_CTRL_C = r"""
import sys, threading
sys.path.insert(0, sys.argv[1])
import numpy as np, graphrt
g = graphrt.Graph("g"); x = g.add_input("x", (None, 4)); g.set_outputs([g.add_node("relu", [x])])
exe = graphrt.compile(g, batch_size=2)
def batches():
    yield np.ones((2, 4), np.float32)
    threading.Event().wait()  # blocked for ever in the caller's code
try:
    for y in exe.stream(batches()):
        print("READY", flush=True)
except KeyboardInterrupt:
    print("INTERRUPTED", flush=True)
"""


def test_the_first_ctrl_c_stops_a_stream_with_a_blocked_loader():
    import signal
    import subprocess

    root = str(Path(__file__).resolve().parents[1])
    proc = subprocess.Popen([sys.executable, "-c", _CTRL_C, root], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "READY"
        time.sleep(0.2)  # the consumer is now waiting for the blocked loader's next batch
        proc.send_signal(signal.SIGINT)  # once
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("one Ctrl-C did not stop the stream")
    assert "INTERRUPTED" in out and proc.returncode == 0
