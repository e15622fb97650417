"""Run a Caffe solver as ``caffe train`` runs it: :func:`run_solver`.

The TRAIN net is loaded with ``feed="uint8"`` (its data layer's images go to the device as stored,
``transform_param`` applied there by the fused ``image_transform``), compiled once with Caffe's
update rule (:class:`CaffeUpdate`: the ``solver_update`` op) and run ``max_iter`` steps through the
prefetch pipeline, one upload per batch. ``iter_size`` > 1 runs each step on ``iter_size`` batches
at once (the same gradient as Caffe's accumulation: the mean over ``iter_size * batch_size``
images). Every ``test_interval`` iterations (and before the first, unless
``test_initialization: false``) each TEST net runs ``test_iter`` batches with the current weights;
its data source keeps its place between tests, as Caffe's does. The log lines are ``caffe
train``'s, with glog's prefix, so its log parsers (``tools/extra/parse_log.py``) read them::

    I1205 02:30:00.123456  4242 solver.cpp:218] Iteration 100, loss = 0.21
    I1205 02:30:00.123456  4242 solver.cpp:237]     Train net output #0: loss = 0.21 (* 1 = 0.21 loss)
    I1205 02:30:00.123456  4242 sgd_solver.cpp:105] Iteration 100, lr = 0.00992565
    I1205 02:30:00.123456  4242 solver.cpp:397]     Test net output #0: accuracy = 0.9775

Snapshots are graphrt checkpoints (``<snapshot_prefix>_iter_<n>.npz``, read by ``graphrt.load``).
"""
from __future__ import annotations

import dataclasses
import datetime
import itertools
import os
import threading
from typing import Callable, ClassVar

import numpy as np

from ..data.base import ImageSource
from ..data.caffe import load_fed, net_sources
from ..frontends.caffe.solver import Solver, load_solver
from ..ir.errors import GraphrtError
from .trainer import LOSSES, Trainer


@dataclasses.dataclass(frozen=True)
class CaffeUpdate:
    """Caffe's update rules for :func:`~graphrt.training.autodiff.training_graph` (see
    :mod:`graphrt.ops.solvers`)."""

    op: ClassVar[str] = "solver_update"
    states: ClassVar[int] = 2
    type: str = "SGD"
    lr: float = 0.01
    momentum: float = 0.0
    momentum2: float = 0.999
    delta: float = 1e-8
    weight_decay: float = 0.0
    regularization: str = "L2"
    policy: str = "fixed"
    gamma: float = 0.1
    power: float = 1.0
    stepsize: int = 0
    stepvalues: tuple = ()
    max_iter: int = 0

    @classmethod
    def of(cls, s: Solver) -> "CaffeUpdate":
        return cls(s.type, s.base_lr, s.momentum, s.momentum2, s.delta, s.weight_decay,
                   s.regularization_type, s.lr_policy, s.gamma, s.power, s.stepsize,
                   tuple(float(v) for v in s.stepvalue), s.max_iter)

    def attrs(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def glog(source: str, message: str, level: str = "I") -> str:
    """``message`` with glog's prefix (``I1205 02:30:00.123456  4242 solver.cpp:218] ``)."""
    now = datetime.datetime.now()
    return (f"{level}{now:%m%d %H:%M:%S.%f} {threading.get_native_id() % 100000:5d} {source}] "
            f"{message}")


def _source(net: str, phase: str, seed: int, workers) -> ImageSource:
    sources = net_sources(net, phase, workers=workers, seed=seed, repeat=True)
    if len(sources) != 1 or not isinstance(sources[0], ImageSource):
        raise GraphrtError(f"the {phase} net needs one Data or ImageData layer to train from, it has "
                           f"{len(sources)} data layers of those kinds", file=net)
    return sources[0]


def _net(net: str, phase: str, source: ImageSource, seed: int):
    return load_fed(net, source, phase, seed=seed)  # shaped by the first record, as Caffe does


def _merged(batches, k: int):
    """``k`` batches at a time, concatenated (``iter_size``)."""
    while True:
        group = list(itertools.islice(batches, k))
        if not group:
            return
        yield {name: np.concatenate([b[name] for b in group]) for name in group[0]}


def run_solver(solver: Solver | str, *, device=None, workers: int | None = None,
               log: Callable[[str], None] = print,
               on_batch: Callable[[dict], None] | None = None) -> dict:
    """Train as the solver says; see the module docstring. ``device`` overrides ``solver_mode``;
    ``on_batch`` sees every TRAIN batch as it is fed. Returns ``{"test": [{output: mean}] (the last
    test of each TEST net), "iterations": n, "trainer": the Trainer}``."""
    s = load_solver(solver) if isinstance(solver, (str, os.PathLike)) else solver
    return _Run(s, device, workers, log).solve(on_batch)


class _Run:
    """One solver run: the TRAIN trainer, the TEST nets with their sources, the log."""

    def __init__(self, s: Solver, device, workers, log):
        self.s, self.log, seed = s, log, max(s.random_seed, 0)
        self.train_src = _source(s.train_net, "TRAIN", seed, workers)
        graph = _net(s.train_net, "TRAIN", self.train_src, seed)
        self.trainer = Trainer(graph, optimizer=CaffeUpdate.of(s), device=device or s.device,
                               batch_size=self.train_src.batch_size * s.iter_size, seed=seed)
        self.tests = []  # (graph, source, its running iterator, test_iter)
        for k, net in enumerate(s.test_nets if s.test_iter else []):
            src = _source(net, "TEST", seed, workers)
            self.tests.append((_net(net, "TEST", src, seed), src, iter(src), s.test_iter[k]))
        self.scores: list = []
        self.losses: list = []

    def solve(self, on_batch) -> dict:
        s, log = self.s, self.log
        log(glog("solver.cpp:44", f"Solving {self.trainer.graph.name}"))
        log(glog("solver.cpp:48", f"Learning Rate Policy: {s.lr_policy}"))
        src = iter(self.train_src)
        batches = _merged(src, s.iter_size) if s.iter_size > 1 else src
        if on_batch is not None:
            batches = (on_batch(b) or b for b in batches)
        it = 0
        while it < s.max_iter:
            if self._due(it) and (it or s.test_initialization):
                self.test(it)
            # up to the next test: each segment is one pass of the prefetch pipeline
            end = min(s.max_iter, (it // s.test_interval + 1) * s.test_interval) \
                if self._due(0) else s.max_iter
            it = self.train(itertools.islice(batches, end - it), it)
        if s.snapshot_after_train:
            _snapshot(self.trainer, s, it, log)
        if s.display and it % s.display == 0 and self.losses:
            log(glog("solver.cpp:310", f"Iteration {it}, loss = {self._smoothed():g}"))
        if self._due(it):
            self.test(it)
        log(glog("solver.cpp:315", "Optimization Done."))
        return {"test": self.scores[-len(self.tests):] if self.tests else [], "iterations": it,
                "trainer": self.trainer}

    def _due(self, it: int) -> bool:
        return bool(self.tests and self.s.test_interval and it % self.s.test_interval == 0)

    def _smoothed(self) -> float:
        return sum(self.losses) / len(self.losses)

    def train(self, segment, it: int) -> int:
        """Steps over ``segment``, from iteration ``it``; returns the next iteration."""
        s, log, tr = self.s, self.log, self.trainer
        for out in tr.exe.stream(segment, outputs="device", copy=False):
            shown = s.display and it % s.display == 0
            if s.average_loss > 1 or shown:  # Caffe's smoothed loss: the last average_loss losses
                self.losses = (self.losses + [tr._read_loss(out)])[-s.average_loss:]
            if shown:
                log(glog("solver.cpp:218", f"Iteration {it}, loss = {self._smoothed():g}"))
                log(glog("solver.cpp:237", "    Train net output #0: "
                         + _score(tr.train_graph, tr.loss_name, self._smoothed())))
                log(glog("sgd_solver.cpp:105", f"Iteration {it}, lr = {_rate(s, it):g}"))
            it += 1
            tr.steps += 1
            if s.snapshot and it % s.snapshot == 0 and it < s.max_iter:
                _snapshot(tr, s, it, log)
        return it

    def test(self, it: int) -> None:
        """Each TEST net over its next ``test_iter`` batches with the current weights."""
        from ..scheduler.executable import compile

        params = self.trainer.parameters()
        for k, (g, src, batches, count) in enumerate(self.tests):
            self.log(glog("solver.cpp:330", f"Iteration {it}, Testing net (#{k})"))
            g.params.update({n: v for n, v in params.items() if n in g.params})
            exe = compile(g, device=self.trainer.exe.device, batch_size=src.batch_size)
            sums: dict = {}
            for b in itertools.islice(batches, count):
                out = exe(b)
                out = out if isinstance(out, dict) else {exe.output_names[0]: out}
                for name, v in out.items():
                    sums[name] = sums.get(name, 0.0) + float(v)
            result = {name: v / count for name, v in sums.items()}
            self.scores.append(result)
            for i, (name, v) in enumerate(result.items()):
                self.log(glog("solver.cpp:397", f"    Test net output #{i}: {_score(g, name, v)}"))


def _score(graph, name: str, value: float) -> str:
    prod = graph.producer(name)
    if prod is not None and prod.op in LOSSES:
        return f"{name} = {value:g} (* 1 = {value:g} loss)"
    return f"{name} = {value:g}"


def _rate(s: Solver, it: int) -> float:
    from ..ops.optim import learning_rate

    return learning_rate({"lr": s.base_lr, "policy": s.lr_policy, "gamma": s.gamma, "power": s.power,
                          "stepsize": s.stepsize, "stepvalues": s.stepvalue, "max_iter": s.max_iter},
                         it)


def _snapshot(trainer, s: Solver, it: int, log) -> None:
    path = trainer.save(f"{s.snapshot_prefix}_iter_{it}.npz")
    log(glog("solver.cpp:464", f"Snapshotting to graphrt checkpoint {path}"))
