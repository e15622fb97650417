"""The process group graphrt's collectives run on: torch.distributed (gloo on the cpu device).

:class:`TorchCommunicator` is what the ``all_reduce`` op calls (``graphrt.ops.collective``): it wraps
the arena's bucket in a tensor with ``torch.from_numpy`` (no copy), reduces it in place and counts
the calls and the seconds they took. gloo silently corrupts a non-contiguous buffer, so such a
buffer is refused.
"""
from __future__ import annotations

import atexit
import contextlib
import logging
import os
import time

import numpy as np

from ..ir.errors import GraphrtError
from ..ops.collective import CollectiveError

log = logging.getLogger(__name__)


class DistributedError(GraphrtError):
    """torch.distributed is missing, not initialized, or used in a way graphrt does not support."""


def torch_distributed():
    """``torch.distributed``, or a DistributedError saying how to get it."""
    try:
        import torch.distributed as dist
    except ImportError:
        raise DistributedError("data-parallel training needs PyTorch: "
                               "pip install 'graphrt[distributed]'") from None
    if not dist.is_available():
        raise DistributedError("this PyTorch build has no torch.distributed")
    return dist


def init_process_group(backend: str | None = None) -> tuple[int, int]:
    """Join the process group ``torchrun`` describes in the environment (``RANK``, ``WORLD_SIZE``,
    ``MASTER_ADDR``...), with gloo unless ``backend`` says otherwise; returns (rank, world size).
    Does nothing when the group is already initialized (Ray Train initializes it); a group it
    initializes it also destroys at exit."""
    dist = torch_distributed()
    if not dist.is_initialized():
        if "RANK" not in os.environ:
            raise DistributedError("no process group: launch with torchrun (it sets RANK, WORLD_SIZE, "
                                   "MASTER_ADDR and MASTER_PORT), or call "
                                   "torch.distributed.init_process_group yourself")
        dist.init_process_group(backend or "gloo")
        # the group this made is torn down before the interpreter's (a gloo group left to it can
        # abort the process at exit: "terminate called without an active exception")
        atexit.register(_destroy, dist)
    return dist.get_rank(), dist.get_world_size()


def _destroy(dist) -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def rank_and_world(group=None) -> tuple[int, int]:
    """This process's rank and the group's size; a DistributedError when no group is initialized."""
    dist = torch_distributed()
    if not dist.is_initialized():
        raise DistributedError("torch.distributed is not initialized: call "
                               "graphrt.distributed.init_process_group() under torchrun first")
    return dist.get_rank(group), dist.get_world_size(group)


def contiguous(array: np.ndarray, what: str) -> np.ndarray:
    if not (isinstance(array, np.ndarray) and array.flags.c_contiguous and array.flags.writeable):
        raise CollectiveError(f"{what}: collectives need a writable C-contiguous buffer (gloo "
                              f"corrupts strided ones silently), got strides "
                              f"{getattr(array, 'strides', '?')}")
    return array


class TorchCommunicator:
    """All-reduce of numpy buckets over a torch.distributed group, in place and zero-copy.

    ``calls`` and ``seconds`` count the all-reduces (the tests and bench/distributed.py read them);
    ``sizes`` the bytes of each call since the last :meth:`reset`."""

    def __init__(self, group=None):
        self.dist = torch_distributed()
        self.group = group
        self.world = self.dist.get_world_size(group)
        self.reset()

    def reset(self) -> None:
        self.calls, self.seconds, self.sizes = 0, 0.0, []

    def all_reduce(self, bucket: np.ndarray, op: str) -> None:
        import torch

        contiguous(bucket, "all_reduce")
        start = time.perf_counter()
        if self.world > 1:  # a group of one: both reductions are the identity
            tensor = torch.from_numpy(bucket)  # shares the arena's bytes
            self.dist.all_reduce(tensor, op=self.dist.ReduceOp.SUM, group=self.group)
            if op == "mean":
                tensor.div_(self.world)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        self.sizes.append(bucket.nbytes)

    def broadcast(self, array: np.ndarray, src: int = 0) -> None:
        import torch

        self.dist.broadcast(torch.from_numpy(contiguous(array, "broadcast")), src=src, group=self.group)


def compute_threads(local_world: int) -> int:
    """This rank's share of the machine's cores (``cores / ranks`` on it, at least 1)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // max(local_world, 1))


def limit_threads(threads: int):
    """Limit the BLAS/OpenMP pools numpy's kernels use to ``threads`` (threadpoolctl, when installed);
    returns the limiter (keep it alive, or use it as a context manager) or a null context."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        log.info("threadpoolctl is not installed: the BLAS keeps its own thread count")
        return contextlib.nullcontext()
    return threadpool_limits(limits=threads)  # also a context manager
