"""Past one process: data-parallel training over ``torch.distributed`` and batch inference on Ray Data.

graphrt grows no cluster layer of its own; it plugs into the engines people already run:

- :class:`DistributedTrainer` (``trainer``): ``graphrt.Trainer`` under an initialized
  ``torch.distributed`` process group (``torchrun``, Ray Train's ``TorchTrainer``). The parameters
  are broadcast from rank 0; the step graph gets ``all_reduce`` nodes between the gradients and the
  SGD updates, one per bucket (``buckets``), each bucket one contiguous arena range that the
  gradients are written into and gloo reduces in place (``process_group``: the communicator,
  zero-copy through ``torch.from_numpy``); checkpoints are written by rank 0.
- :class:`DistributedSampler` (``sampler``): each rank's disjoint shard of every global batch,
  reshuffled per epoch with a shared seed.
- :class:`Predictor` (``ray``): a callable class for Ray Data's ``map_batches``.

Needs the ``distributed`` extra (torch) or the ``ray`` extra; ``import graphrt`` does not import this
package, and this package imports torch and ray only when they are used. May import ``ir``, ``ops``,
``passes``, ``memory``, ``scheduler``, ``frontends`` and ``training``.
"""
from .process_group import DistributedError, init_process_group, rank_and_world  # noqa: F401
from .ray import Predictor  # noqa: F401
from .sampler import DistributedSampler  # noqa: F401
from .trainer import DistributedTrainer  # noqa: F401
