"""The seed's own experiment: 10 training iterations of Caffe's CIFAR-10 quick net at batch 100,
then the copy table in the layout of the seed's NVIDIA profile — graphrt's plan next to the naive
per-op mode.

The data are synthetic 32x32 images (the point is the copies, not the accuracy); the net is
``cifar10_quick_train_test.prototxt`` in the TRAIN phase.

    python examples/train_cifar10_quick.py [--iterations 10]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import graphrt
from graphrt.cli import format_copies

MODELS = Path(__file__).resolve().parents[2] / "shared" / "models" / "caffe"


def run(iterations: int = 10, batch: int = 100):
    graph = graphrt.load(MODELS / "cifar10_quick_train_test.prototxt", phase="TRAIN",
                         input_shape=(3, 32, 32))
    rng = np.random.default_rng(0)
    data = [(rng.standard_normal((batch, 3, 32, 32)).astype(np.float32),
             rng.integers(0, 10, batch)) for _ in range(iterations)]
    solver = graphrt.optim.SGD(lr=0.001, momentum=0.9, weight_decay=0.004)
    trainer = graphrt.Trainer(graph, optimizer=solver, batch_size=batch)
    trainer.exe.ledger.reset()
    history = trainer.fit(data, epochs=1, loss_every=iterations, progress=False)
    return trainer, history


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=10)
    args = parser.parse_args(argv)
    trainer, history = run(args.iterations)
    print(f"{args.iterations} CIFAR-10 quick training iterations at batch 100; loss {history[-1][1]:.4f}")
    print(f"parameters uploaded once at compile time: {trainer.exe.ledger.uploads['invocations']} "
          "copies")
    print(format_copies({"graphrt (training)": trainer.exe.ledger.summary()}))


if __name__ == "__main__":
    main()
