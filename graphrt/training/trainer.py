"""``graphrt.Trainer``: train a model's graph on the device, one compiled step graph per batch.

    tr = graphrt.Trainer(g, loss="auto", optimizer=graphrt.optim.SGD(lr=0.01, momentum=0.9),
                         device="cpu", batch_size=64)
    tr.step(x, labels)              # one step; returns the loss (one device->host copy)
    tr.fit(batches, epochs=2)       # the prefetch pipeline; the loss is read back once per N steps
    tr.evaluate(batches)            # {"loss": ..., "accuracy": ...} with the current parameters
    tr.parameters(); tr.save("lenet.npz"); graphrt.load("lenet.npz")

``loss="auto"`` uses the graph's own loss output when it has one (Caffe train/test nets), else
attaches one to its first output: ``nll_loss`` after a ``log_softmax`` (Torch's ClassNLLCriterion),
``softmax_cross_entropy`` on the logits before a final ``softmax`` (Caffe SoftmaxWithLoss, Keras'
categorical cross-entropy), or on the output itself. Labels are a ``label`` input of class indices.
"""
from __future__ import annotations

import itertools
import sys
import time
from typing import Callable, Iterable

import numpy as np

from .autodiff import SGD, training_graph
from ..ir.errors import GraphrtError, InputError
from ..ir import Graph

LOSSES = ("softmax_cross_entropy", "nll_loss")


def attach_loss(graph: Graph, loss: str = "auto") -> tuple[Graph, str]:
    """A copy of ``graph`` with a scalar loss output (see the module docstring); returns it and the
    loss tensor's name."""
    g = graph.copy()
    own = [t for t in g.outputs if g.producer(t) is not None and g.producer(t).op in LOSSES]
    if own and loss in ("auto", g.producer(own[0]).op):
        return g, own[0]
    if loss not in ("auto",) + LOSSES:
        raise GraphrtError(f"unknown loss {loss!r}: use 'auto', {', '.join(LOSSES)}")
    out = g.outputs[0]
    prod = g.producer(out)
    if loss == "auto":
        loss = "nll_loss" if prod is not None and prod.op == "log_softmax" else "softmax_cross_entropy"
    scores = out
    if loss == "softmax_cross_entropy" and prod is not None and prod.op == "softmax":
        scores = prod.inputs[0]  # cross-entropy of the softmax, computed stably from the logits
    if len(g.specs[scores].shape) != 2:
        raise GraphrtError(f"the loss needs (N, classes) scores, output {scores!r} is {g.specs[scores]}")
    label = g.add_input("label", (None,), "int64")
    name = g.add_node(loss, [scores, label], name="loss")
    g.set_outputs([name])
    return g, name


class Trainer:
    """Compiles ``model``'s training step once and runs it; see the module docstring."""

    def __init__(self, model, loss: str = "auto", optimizer: SGD | None = None, device="cpu",
                 batch_size: int = 64, opt_level: int = 2, seed: int = 0, *,
                 threads: int | None = None, algorithms: str | None = None):
        from ..scheduler.executable import Executable, as_graph

        self.graph = as_graph(model)
        with_loss, self.loss_name = attach_loss(self.graph, loss)
        self.optimizer = optimizer or SGD()
        self.train_graph, self.trained = self._training_graph(with_loss, seed)
        # threads, algorithms: as graphrt.compile's (the cpu device's threads and conv algorithms)
        self.exe = Executable(self.train_graph, device, batch_size, opt_level, threads=threads,
                              algorithms=algorithms)
        self.batch_size = batch_size
        self.steps = 0
        self._epoch = self._epoch_start = 0  # where fit(resume=True) picks up

    def _training_graph(self, with_loss: Graph, seed: int) -> tuple[Graph, list[str]]:
        """The step graph and the trained parameters (a data-parallel trainer adds its all-reduce)."""
        return training_graph(with_loss, self.loss_name, self.optimizer, seed=seed)

    # ---- stepping ---------------------------------------------------------------------------
    def _feeds(self, x, y) -> dict:
        inputs = self.train_graph.inputs
        if isinstance(x, dict):
            return x if y is None else dict(x, label=y)
        if len(inputs) != 2:
            raise InputError(f"the training graph takes inputs {inputs}: pass a dict")
        return {inputs[0]: x, inputs[1]: y}

    def step(self, x, y=None) -> float:
        """One training step on a batch; returns its loss."""
        out = self.exe(self._feeds(x, y))
        self.steps += 1
        loss = out[self.loss_name] if isinstance(out, dict) else out
        return float(loss)

    def fit(self, batches, epochs: int = 1, *, loss_every: int = 10, progress: bool = True,
            on_step: Callable | None = None, resume: bool = False) -> list[tuple[int, float]]:
        """Train for ``epochs`` over ``batches`` (an iterable of ``(x, y)`` pairs, re-iterated each
        epoch, or a callable returning one). The loss is read back once every ``loss_every`` steps
        and at the end of each epoch; returns those ``(step, loss)`` readings.

        A fit stopped part-way (Ctrl-C, an exception) leaves the parameters as after its last
        completed step; ``fit(..., resume=True)`` with the same batches and epochs continues from the
        next batch of the interrupted epoch."""
        history = []
        if resume:  # the device's counter is exact even when the interrupt hit during a step
            self.steps = self._completed_steps()
        first = self._epoch if resume else 0
        skip = self.steps - self._epoch_start if resume else 0
        for epoch in range(first, epochs):
            if not (resume and epoch == first):
                self._epoch, self._epoch_start = epoch, self.steps
            source = batches() if callable(batches) else batches
            total = len(source) - skip if hasattr(source, "__len__") else None
            source = itertools.islice(source, skip, None) if skip else source
            skip = 0
            pairs = (self._feeds(*item) if isinstance(item, tuple) else item for item in source)
            bar = _progress(progress, f"epoch {epoch + 1}/{epochs}", total)
            last = None
            for k, out in enumerate(self.exe.stream(pairs, outputs="device", copy=False)):
                self.steps += 1
                last = out
                if self.steps % loss_every == 0:
                    history.append((self.steps, self._read_loss(out)))
                    bar.set_postfix(loss=f"{history[-1][1]:.4f}")
                bar.update(1)
                if on_step is not None:
                    on_step(self)
            if last is not None and (not history or history[-1][0] != self.steps):
                history.append((self.steps, self._read_loss(last)))
            bar.close()
        self._epoch, self._epoch_start = epochs, self.steps
        return history

    def _completed_steps(self) -> int:
        """Steps the device has completed (its iteration counter advances as a step's last act)."""
        from .autodiff import ITERATION

        counter = np.empty(self.exe.params[ITERATION].shape, self.exe.params[ITERATION].dtype)
        start = time.perf_counter()
        self.exe.device.to_host(self.exe.params[ITERATION], counter)
        self.exe.ledger.record("DtoH", counter.nbytes, time.perf_counter() - start)
        return int(counter.reshape(-1)[0])

    def _read_loss(self, out) -> float:
        view = out[self.loss_name] if isinstance(out, dict) else out
        host = np.empty(view.shape, view.dtype)  # no numpy function on a device array
        start = time.perf_counter()
        self.exe.device.to_host(view, host)
        self.exe.ledger.record("DtoH", host.nbytes, time.perf_counter() - start)
        return float(host)

    # ---- parameters -------------------------------------------------------------------------
    def parameters(self) -> dict[str, np.ndarray]:
        """Current values of the model's parameters (trained weights and running statistics)."""
        out = {}
        for name in self.graph.params:
            if name in self.exe.params:
                host = np.empty(self.graph.params[name].shape, self.graph.params[name].dtype)
                self.exe.device.to_host(self.exe.params[name], host)
                out[name] = host
            else:
                out[name] = self.graph.params[name].copy()
        return out

    def sync(self) -> Graph:
        """Copy the current parameters into ``self.graph.params`` (the model's live mapping)."""
        self.graph.params.update(self.parameters())
        return self.graph

    def evaluate(self, batches: Iterable, batch_size: int | None = None) -> dict[str, float]:
        """Mean loss and accuracy of the model with the current parameters over ``(x, y)`` batches."""
        from ..scheduler.executable import compile

        graph = scores_graph(self.sync())
        exe = compile(graph, device=self.exe.device, batch_size=batch_size or self.batch_size)
        total = correct = 0
        loss_sum = 0.0
        for x, y in batches:
            scores = exe(x)
            scores = scores[graph.outputs[0]] if isinstance(scores, dict) else scores
            y = np.asarray(y)
            correct += int((scores.argmax(axis=1) == y).sum())
            loss_sum += float(_nll(scores, y, graph).sum())
            total += len(y)
        if total == 0:
            raise InputError("evaluate() got no batches")
        return {"loss": loss_sum / total, "accuracy": correct / total}

    def save(self, path):
        """Save the model with its current parameters as .npz (no pickle), atomically: the path
        named is the path written (``.npz`` added only when it has no suffix), and a failed or
        interrupted save leaves the previous checkpoint intact. Returns the path written;
        ``graphrt.load`` reads it (``format="graphrt"`` for another suffix)."""
        from ..frontends.npz import save_graph

        return save_graph(self.sync(), path)


def scores_graph(graph: Graph) -> Graph:
    """The graph computing the model's class scores: a train/test net's loss and accuracy layers are
    cut off (their score input becomes the output) and inputs nothing reads any more dropped."""
    from ..passes import PASSES

    first = graph.producer(graph.outputs[0])
    if first is None or first.op not in LOSSES + ("accuracy",):
        return graph
    g = graph.copy()
    g.set_outputs([first.inputs[0]])
    g = PASSES["eliminate_dead_code"](g)
    used = {t for n in g.nodes for t in n.inputs}
    g.inputs = [t for t in g.inputs if t in used or t in g.outputs]
    return g


def _nll(scores: np.ndarray, y: np.ndarray, graph: Graph) -> np.ndarray:
    """Per-row negative log-likelihood of the model's outputs (probabilities, log-probabilities or
    logits, told apart by the output op)."""
    prod = graph.producer(graph.outputs[0])
    s = scores.astype(np.float64)
    if prod is not None and prod.op == "softmax":
        logp = np.log(np.clip(s, 1e-30, None))
    elif prod is not None and prod.op == "log_softmax":
        logp = s
    else:
        z = s - s.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return -logp[np.arange(len(y)), y.astype(np.int64)]


class _NoBar:
    def update(self, n=1):
        pass

    def set_postfix(self, **kw):
        pass

    def close(self):
        pass


def _progress(enabled: bool, desc: str, total: int | None = None):
    """A tqdm bar on stderr counting batches out of ``total`` (when the batches have a length); only
    on a terminal, so a log file gets no carriage-return updates."""
    if not enabled:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(desc=desc, total=total, unit="batch", leave=False, file=sys.stderr, disable=None)


