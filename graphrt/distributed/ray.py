"""Batch inference on Ray Data: :class:`Predictor`, a callable class for ``Dataset.map_batches``.

    import ray
    from graphrt.distributed import Predictor

    ds = ray.data.from_numpy(images)                       # a column "data"
    out = ds.map_batches(Predictor, fn_constructor_kwargs={"model": "lenet.prototxt",
                         "weights": "lenet_iter_10000.caffemodel"},
                         batch_format="numpy", batch_size=1024, concurrency=2)

Ray makes one instance per actor, so the model is loaded and compiled once per actor; each batch
runs through the executable's prefetch pipeline in chunks of the compiled batch size. Ray hands the
batch's columns as read-only zero-copy views of its object store: they are copied into the
pipeline's staging ring and never written. Ray itself is imported by the caller, not here.
"""
from __future__ import annotations


import numpy as np

from ..ir.errors import InputError


class Predictor:
    """Load and compile ``model`` (a path ``graphrt.load`` reads, with ``weights`` and the other
    ``load_options``; or a ``Graph``); each call maps a batch ``{input_column: array}`` to
    ``{output_column: outputs}`` in the batch's row order. ``threads`` and ``algorithms`` are
    ``graphrt.compile``'s (give an actor of ``num_cpus=1`` one thread); for outputs equal to the bit
    across actors and processes, fix both (``algorithms="default"`` skips the timing)."""

    def __init__(self, model, *, weights=None, load_options: dict | None = None, device: str = "cpu",
                 batch_size: int = 256, opt_level: int = 2, input_column: str = "data",
                 output_column: str = "output", threads: int | None = None,
                 algorithms: str | None = None):
        from ..frontends import load
        from ..ir import Graph
        from ..scheduler.executable import compile

        graph = model if isinstance(model, Graph) else load(model, weights=weights, **(load_options or {}))
        self.exe = compile(graph, device=device, batch_size=batch_size, opt_level=opt_level,
                           threads=threads, algorithms=algorithms)
        self.batch_size = batch_size
        self.input_column, self.output_column = input_column, output_column

    def __call__(self, batch: dict) -> dict:
        if self.input_column not in batch:
            raise InputError(f"the batch has columns {sorted(batch)}, not the input column "
                             f"{self.input_column!r} (Predictor(input_column=...))")
        x = batch[self.input_column]
        chunks = (x[i:i + self.batch_size] for i in range(0, len(x), self.batch_size))
        outs = list(self.exe.stream(chunks))  # the prefetcher copies each chunk into its staging ring
        if not outs:
            return {self.output_column: np.zeros((0,), np.float32)}
        if isinstance(outs[0], dict):
            return {f"{self.output_column}.{k}": np.concatenate([o[k] for o in outs]) for k in outs[0]}
        return {self.output_column: np.concatenate(outs)}
