"""The ``naive`` mode: run a graph as a per-op framework does, for comparison in ``graphrt profile``.

For every op it copies each input (activations and parameters alike) from the host to the device,
runs the kernel into a freshly allocated device buffer, and copies the output back to the host —
the host<->device ping-pong the seed measured in TensorFlow 2016 (107,912 small CPU->GPU copies for
10 CIFAR-10 iterations). The numbers are computed for real and equal the reference executor's; the
ledger counts every copy. A node the device cannot run (see :meth:`Device.placement`) runs on the
host, where its inputs already are.
"""
from __future__ import annotations

import time

import numpy as np

from ..devices import get_device
from ..ir import Graph
from ..ops import get_op
from ..ops.reference import check_feeds
from .ledger import Ledger


class NaiveExecutable:
    """``NaiveExecutable(graph, device)(x)``: one HtoD per op input, one DtoH per op output."""

    def __init__(self, graph: Graph, device="cpu"):
        self.graph = graph
        self.device = get_device(device)
        self.ledger = Ledger()
        self.output_names = list(graph.outputs)

    def _copy(self, kind: str, src, dst) -> None:
        start = time.perf_counter()
        (self.device.to_device if kind == "HtoD" else self.device.to_host)(src, dst)
        self.ledger.record(kind, src.nbytes, time.perf_counter() - start)

    def __call__(self, x):
        feeds, batch = check_feeds(self.graph, x)
        host = dict(feeds, **self.graph.params)
        for node in self.graph.nodes:
            if self.device.placement(node, self.graph):  # the device cannot: on the host, no copies
                outs = [np.empty(self.graph.specs[t].concrete(batch), self.graph.specs[t].dtype)
                        for t in node.outputs]
                with np.errstate(all="ignore"):
                    get_op(node.op).forward(node.attrs, [host[t] for t in node.inputs], outs)
                host.update(zip(node.outputs, outs))
                continue
            ins = []
            for t in node.inputs:
                dev = self.device.upload(np.zeros_like(host[t]))
                self._copy("HtoD", host[t], dev)
                ins.append(dev)
            outs = [self.device.upload(np.zeros(self.graph.specs[t].concrete(batch), self.graph.specs[t].dtype))
                    for t in node.outputs]
            self.device.kernel(node.op)(node.attrs, ins, outs, self._workspace(node, batch))
            for t, dev in zip(node.outputs, outs):
                host[t] = np.empty(dev.shape, dev.dtype)
                self._copy("DtoH", dev, host[t])
        outs = [host[t] for t in self.output_names]
        return outs[0] if len(outs) == 1 else dict(zip(self.output_names, outs))

    def _workspace(self, node, batch):
        size = self.device.workspace_bytes(node, self.graph, batch)
        return self.device.upload(np.zeros(size // 4, np.float32)) if size else None
