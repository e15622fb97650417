"""Train Caffe's LeNet (``lenet_train_test.prototxt``) on scikit-learn's real handwritten digits.

The net is loaded in the TRAIN phase (its Data layer becomes the ``data``/``label`` inputs, its
``transform_param { scale: 0.00390625 }`` a scale node, so images go in as bytes 0..255), trained with
Caffe's LeNet solver settings (SGD, lr 0.01, momentum 0.9, weight decay 5e-4, ``inv`` policy) on
1,500 digits and evaluated on the 297 held out. Goal: at least 95% held-out accuracy in under a minute
on the cpu device.

    python examples/train_lenet_digits.py [--epochs 8] [--batch 64]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import graphrt
from graphrt.training.datasets import digits_28x28

MODELS = Path(__file__).resolve().parents[2] / "shared" / "models" / "caffe"
SOLVER = graphrt.optim.SGD(lr=0.01, momentum=0.9, weight_decay=5e-4, policy="inv", gamma=1e-4, power=0.75)


def batches(x, y, size, rng=None):
    order = rng.permutation(len(x)) if rng is not None else np.arange(len(x))
    for start in range(0, len(x), size):  # the last partial batch is trained on, not dropped
        idx = order[start:start + size]
        yield x[idx], y[idx]


def train(epochs: int = 8, batch: int = 64, seed: int = 0, models: Path = MODELS, progress=True):
    """Returns (trainer, held-out metrics, seconds)."""
    images, labels = digits_28x28()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(images))
    train_idx, test_idx = order[:1500], order[1500:]
    x = images * 255.0  # the Data layer's transform scales bytes by 1/256
    graph = graphrt.load(models / "lenet_train_test.prototxt", phase="TRAIN", input_shape=(1, 28, 28),
                         seed=seed)
    trainer = graphrt.Trainer(graph, optimizer=SOLVER, device="cpu", batch_size=batch, seed=seed)
    start = time.perf_counter()
    trainer.fit(lambda: batches(x[train_idx], labels[train_idx], batch, rng), epochs=epochs,
                progress=progress)
    seconds = time.perf_counter() - start
    metrics = trainer.evaluate(batches(x[test_idx], labels[test_idx], batch))
    return trainer, metrics, seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--save", help="save the trained model (.npz)")
    args = parser.parse_args(argv)
    trainer, metrics, seconds = train(args.epochs, args.batch)
    print(f"trained {trainer.steps} steps in {seconds:.1f} s; held-out accuracy "
          f"{metrics['accuracy']:.1%}, loss {metrics['loss']:.4f}")
    if args.save:
        trainer.save(args.save)


if __name__ == "__main__":
    main()
