"""``DistributedTrainer``: data-parallel ``graphrt.Trainer`` under a torch.distributed process group.

    import graphrt
    from graphrt.distributed import DistributedSampler, DistributedTrainer, init_process_group

    rank, world = init_process_group()                    # under torchrun: gloo on the cpu device
    tr = DistributedTrainer(graph, optimizer=graphrt.optim.SGD(lr=0.01), batch_size=64 // world)
    sampler = DistributedSampler(len(x), global_batch=64)
    tr.fit(sampler.batches(x, y, tr), epochs=2)          # resume=True replays the epoch's order
    tr.save("model.npz")                                  # rank 0 writes, atomically; all ranks wait

Every rank compiles the same step graph: the model's training step (``graphrt.training``) with an
``all_reduce`` per gradient bucket between the gradients and the SGD updates (``buckets``), so the
updates apply the gradient averaged over the ranks and the parameters stay identical everywhere.
The parameters and optimizer state are broadcast from rank 0 once, at construction. Batch-norm
statistics are each rank's own, or, with ``sync_batchnorm=True``, the whole global batch's (the
batch-norm kernels reduce their per-channel sums over the ranks: two all-reduces forward, one
backward, besides the buckets). Dropout masks are keyed by the sample's place in the global batch,
so R ranks draw the masks one process draws for the global batch (exactly so for full global
batches, whose shards all have ``batch_size`` samples). Each rank runs its kernels on
``cores / ranks-on-this-machine`` threads (``threads=`` to choose). ``batch_size`` is each rank's
(a global batch of B over R ranks: ``batch_size=B // R``).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..ops.collective import set_communicator
from ..training.autodiff import SGD, training_graph
from ..training.trainer import Trainer
from .buckets import DEFAULT_BUCKET_BYTES, bucket_gradients
from .process_group import (DistributedError, TorchCommunicator, compute_threads, limit_threads,
                            rank_and_world)

GROUP = "world"


class DistributedTrainer(Trainer):
    """A :class:`graphrt.Trainer` whose steps average the gradients over the process group's ranks
    (see the module docstring). ``buckets`` lists the gradient buckets (``Bucket``: node, params,
    bytes); ``communicator`` counts the all-reduce calls and their seconds."""

    def __init__(self, model, loss: str = "auto", optimizer: SGD | None = None, device="cpu",
                 batch_size: int = 64, opt_level: int = 2, seed: int = 0, *,
                 bucket_bytes: int = DEFAULT_BUCKET_BYTES, sync_batchnorm: bool = False,
                 threads: int | None = None, algorithms: str | None = None):
        self.rank, self.world_size = rank_and_world()
        local = int(os.environ.get("LOCAL_WORLD_SIZE", self.world_size))
        self.threads = threads or compute_threads(local)
        self._limiter = limit_threads(self.threads)
        self.communicator = TorchCommunicator()
        set_communicator(GROUP, self.communicator)
        self.bucket_bytes, self.sync_batchnorm = bucket_bytes, sync_batchnorm
        self.batch_size = batch_size  # the dropout offset needs it before Trainer sets it
        self.buckets = []
        super().__init__(model, loss, optimizer, device, batch_size, opt_level, seed,
                         threads=self.threads, algorithms=algorithms)
        if self.exe.device.kind != "cpu":
            raise DistributedError(f"data-parallel training on the {self.exe.device.kind} device is not "
                                   "implemented yet (NCCL on DLPack-shared buckets): use device='cpu'")
        self.broadcast_parameters()
        self.communicator.reset()

    def _training_graph(self, with_loss, seed):
        def reduce(graph, grads):
            return bucket_gradients(graph, grads, self.bucket_bytes, GROUP, record=self.buckets)
        return training_graph(with_loss, self.loss_name, self.optimizer, seed=seed,
                              training_forms=self._training_forms, reduce_gradients=reduce)

    def _training_forms(self, graph):
        """Dropout draws this rank's rows of the global batch's masks (the shard of a full global
        batch starts at rank x batch_size); batch norm is synchronized when asked."""
        for node in list(graph.nodes):
            if node.op == "dropout_train":
                attrs = dict(node.attrs, offset=self.rank * self.batch_size)
                graph.replace_node(node.name, node.replace(attrs=attrs))
        return synchronize_batch_norm(graph) if self.sync_batchnorm else graph

    def broadcast_parameters(self) -> None:
        """Every parameter and optimizer state of rank 0, on every rank."""
        device = self.exe.device
        for name in sorted(self.exe.params):
            array = self.exe.params[name]
            if isinstance(array, np.ndarray):
                self.communicator.broadcast(array)
            else:  # a device array: through a host copy
                host = np.empty(array.shape, array.dtype)
                device.to_host(array, host)
                self.communicator.broadcast(host)
                device.to_device(host, array)

    def save(self, path):
        """Rank 0 writes the checkpoint (atomically, as :meth:`Trainer.save`); every rank waits for
        it and gets the path."""
        written = super().save(path) if self.rank == 0 else None
        self.communicator.dist.barrier()
        path = Path(path)
        return written or (path if path.suffix else path.with_suffix(".npz"))


def synchronize_batch_norm(graph):
    """Batch norm in training over the whole group: every ``batch_norm_train`` (and so its
    gradient) reduces its statistics over the ranks (``sync_batchnorm=True``)."""
    for node in list(graph.nodes):
        if node.op == "batch_norm_train":
            graph.replace_node(node.name, node.replace(attrs=dict(node.attrs, group=GROUP)))
    return graph
