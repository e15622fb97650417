"""Data-parallel training of Caffe's LeNet on scikit-learn's digits over torch.distributed.

Launched as PyTorch programs are launched; each process is one rank (gloo on the cpu device):

    torchrun --standalone --nproc-per-node=2 examples/train_distributed.py [--epochs 8] [--batch 64]

``--batch`` is the global batch: each of the N ranks trains on its shard of it (``DistributedSampler``)
and the gradients are averaged over the ranks in the step graph's all-reduce buckets, so N ranks
train what one process with the global batch trains. Rank 0 reports and saves.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import graphrt
from graphrt.distributed import DistributedSampler, DistributedTrainer, init_process_group
from graphrt.training.datasets import digits_28x28

MODELS = Path(__file__).resolve().parents[2] / "shared" / "models" / "caffe"
SOLVER = graphrt.optim.SGD(lr=0.01, momentum=0.9, weight_decay=5e-4, policy="inv", gamma=1e-4, power=0.75)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch", type=int, default=64, help="the global batch (default 64)")
    parser.add_argument("--save", help="save the trained model (.npz; rank 0 writes it)")
    parser.add_argument("--models", type=Path, default=MODELS)
    args = parser.parse_args(argv)
    rank, world = init_process_group()
    images, labels = digits_28x28()
    x, y = images[:1500] * 255.0, labels[:1500]  # the Data layer's transform scales bytes by 1/256
    graph = graphrt.load(args.models / "lenet_train_test.prototxt", phase="TRAIN", input_shape=(1, 28, 28))
    sampler = DistributedSampler(len(x), args.batch, seed=0)
    trainer = DistributedTrainer(graph, optimizer=SOLVER, batch_size=sampler.local_batch)
    start = time.perf_counter()
    history = trainer.fit(sampler.batches(x, y, trainer), epochs=args.epochs, progress=rank == 0)
    seconds = time.perf_counter() - start
    metrics = trainer.evaluate([(images[1500:] * 255.0, labels[1500:])])
    if rank == 0:
        comm = trainer.communicator
        print(f"{world} ranks x {trainer.threads} threads: {trainer.steps} steps of a global batch of "
              f"{args.batch} in {seconds:.1f} s ({len(x) * args.epochs / seconds:.0f} images/s); "
              f"{len(trainer.buckets)} all-reduce buckets, {comm.seconds / max(trainer.steps, 1) * 1e3:.1f} ms "
              f"of all-reduce per step; final loss {history[-1][1]:.4f}; held-out accuracy "
              f"{metrics['accuracy']:.1%}")
    if args.save:
        saved = trainer.save(args.save)
        if rank == 0:
            print(f"saved {saved}")


if __name__ == "__main__":
    main()
