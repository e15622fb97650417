"""What every data source shares: records read in order (or shuffled), decoded on worker threads,
stacked into uint8 batches with their labels and the windows of the fused transform.

A source subclass gives :meth:`ImageSource._open` (called on the first iteration, never before:
loading a net opens nothing), :meth:`ImageSource._raw` (the bytes of record ``i``, read in the
iterating thread: database handles are not shared across threads) and :meth:`ImageSource._decode`
(bytes -> ``(C, H, W)`` array and label, run on the workers: Pillow and the protobuf slicing release
or barely hold the GIL). A batch is a dict ``{data: (N, C, H, W) uint8, window: (N, 3) int32,
label: (N,) int64}`` named after the graph's inputs, so ``exe.stream(source)`` and
``Trainer.fit(source)`` take a source as it is. The windows are drawn on the host in the iterating
thread from the source's own seeded generator (``Transform.windows``): a run is reproducible.
"""
from __future__ import annotations

import concurrent.futures
import itertools
import os
from typing import Iterator

import numpy as np

from ..frontends.caffe.transform import Transform
from ..ir.errors import GraphrtError, InputError


def default_workers() -> int:
    """Decoding threads when none are asked for: half the cores (at least one), so the loaders do
    not take the cores the compute threads run on."""
    return max(1, (os.cpu_count() or 2) // 2)


class ImageSource:
    """Batches of a record store; see the module docstring. ``repeat``: cycle over the records
    forever, batches running across the end as Caffe's data layers do (else one pass, the last
    batch partial)."""

    def __init__(self, *, batch_size: int, names: tuple[str, str, str] = ("data", "window", "label"),
                 transform: Transform | None = None, shuffle: bool = False, seed: int = 0,
                 workers: int | None = None, repeat: bool = False, where: dict | None = None):
        if int(batch_size) < 1:
            raise InputError(f"batch_size must be at least 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.names = names
        self.transform = transform or Transform()
        self.shuffle, self.seed, self.repeat = shuffle, seed, repeat
        self.workers = default_workers() if workers is None else max(1, int(workers))
        self.where = where or {}  # layer / file / line for errors
        self._count: int | None = None

    # ---- what a subclass gives ------------------------------------------------------------------
    def _open(self) -> int:
        """Open the store; return the number of records."""
        raise NotImplementedError

    def _raw(self, i: int):
        raise NotImplementedError

    def _decode(self, raw) -> tuple[np.ndarray, int]:
        raise NotImplementedError

    # ---- shared ---------------------------------------------------------------------------------
    def error(self, message: str, cls=GraphrtError) -> GraphrtError:
        return cls(message, **self.where)

    def __len__(self) -> int:
        """Batches in one pass (opens the store)."""
        if self._count is None:
            self._count = self._open()
        return -(-self._count // self.batch_size)

    def first(self) -> tuple[np.ndarray, int]:
        """The first record, decoded (a net's input shape comes from it, as in Caffe)."""
        len(self)
        return self._decode(self._raw(0))

    def order(self) -> Iterator[int]:
        """Record indices in reading order: each pass in order, or shuffled per pass."""
        len(self)
        rng = np.random.default_rng(self.seed)
        for _ in itertools.count() if self.repeat else range(1):
            yield from (rng.permutation(self._count) if self.shuffle else range(self._count))

    def __iter__(self) -> Iterator[dict]:
        len(self)
        rng = np.random.default_rng([self.seed, 1])
        indices = self.order()
        with concurrent.futures.ThreadPoolExecutor(self.workers, "graphrt-decode") as pool:
            def submit():
                chunk = list(itertools.islice(indices, self.batch_size))
                return [pool.submit(self._decode, self._raw(i)) for i in chunk]
            pending = submit()
            while pending:
                ahead = submit()  # the next batch decodes while this one is stacked and used
                yield self._stack([f.result() for f in pending], rng)
                pending = ahead

    def _stack(self, records, rng) -> dict:
        images = [r[0] for r in records]
        shape = images[0].shape
        for k, im in enumerate(images):
            if im.shape != shape:
                raise self.error(f"record {k} of a batch is {im.shape}, the first is {shape}: the "
                                 "images of a batch must share one size", InputError)
        x = np.stack(images)
        data, window, label = self.names
        out = {data: x}
        if window is not None:
            out[window] = self.transform.windows(len(x), shape[1], shape[2], rng)
        if label is not None:
            out[label] = np.asarray([r[1] for r in records], np.int64)
        return out
