"""Each rank's shard of every global batch, reshuffled per epoch with a seed all ranks share.

    sampler = DistributedSampler(len(x), global_batch=64, rank=rank, world_size=world, seed=0)
    trainer.fit(sampler.batches(x, y, trainer), epochs=3)   # epoch e: shuffled by (seed, e)

Epoch ``e`` orders the samples by one permutation drawn from ``(seed, e)`` — the same on every
rank — and cuts it into global batches; rank ``r`` takes the ``r``-th of ``world_size`` consecutive
near-equal parts of each global batch. The shards are disjoint and together they are the global
batch, in order, so ``world_size`` ranks see what one process with the global batch sees. The final
partial global batch is split the same way, never dropped (its parts then differ by at most one
sample; the gradients are averaged over ranks, as PyTorch's DistributedDataParallel does).
"""
from __future__ import annotations

import numpy as np

from ..ir.errors import GraphrtError


class DistributedSampler:
    """Index arrays of this rank's shard of each global batch of an epoch (see the module docstring).

    ``rank`` and ``world_size`` default to the initialized process group's."""

    def __init__(self, num_samples: int, global_batch: int, *, rank: int | None = None,
                 world_size: int | None = None, seed: int = 0, shuffle: bool = True):
        if rank is None or world_size is None:
            from .process_group import rank_and_world

            rank, world_size = rank_and_world()
        if not 0 <= rank < world_size:
            raise GraphrtError(f"rank {rank} is not in a world of {world_size}")
        if global_batch < world_size:
            raise GraphrtError(f"a global batch of {global_batch} cannot give each of {world_size} "
                               "ranks a sample")
        self.num_samples, self.global_batch = num_samples, global_batch
        self.rank, self.world_size, self.seed, self.shuffle = rank, world_size, seed, shuffle
        self.epoch = 0

    @property
    def local_batch(self) -> int:
        """The largest shard of a full global batch (the batch size to compile each rank for)."""
        return -(-self.global_batch // self.world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-self.num_samples // self.global_batch)

    def order(self) -> np.ndarray:
        """The epoch's order of all samples (identical on every rank)."""
        if not self.shuffle:
            return np.arange(self.num_samples)
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.num_samples)

    def __iter__(self):
        order = self.order()
        for start in range(0, self.num_samples, self.global_batch):
            yield np.array_split(order[start:start + self.global_batch], self.world_size)[self.rank]

    def batches(self, x, y, trainer=None):
        """A callable for ``Trainer.fit`` giving an epoch's ``(x, y)`` shards: with ``trainer``, the
        epoch the trainer is in (so ``fit(resume=True)`` replays the interrupted epoch's order on
        every rank), else the next epoch at each call."""
        def epoch():
            if trainer is not None:
                self.set_epoch(trainer._epoch)
            shards = list(self)  # now: a prefetcher reading ahead cannot move the epoch
            if trainer is None:
                self.epoch += 1
            return ((x[idx], y[idx]) for idx in shards)
        return epoch
