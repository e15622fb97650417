"""Classify scikit-learn's real handwritten digits with Caffe's trained LeNet.

Loads ``../shared/models/caffe/lenet.prototxt`` with ``lenet_iter_10000.caffemodel`` (trained on
MNIST-style digits) and runs it on the 1,797 digits resized MNIST-style; prints the accuracy (about 85%).

    python examples/caffe_lenet_digits.py [--models DIR]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import graphrt
from graphrt.training.datasets import digits_28x28

MODELS = Path(__file__).resolve().parents[2] / "shared" / "models" / "caffe"


def classify(models: Path = MODELS) -> tuple[float, np.ndarray, np.ndarray]:
    """(accuracy, predicted classes, labels) of the trained LeNet on the digits."""
    graph = graphrt.load(models / "lenet.prototxt", weights=models / "lenet_iter_10000.caffemodel")
    images, labels = digits_28x28()
    probs = graphrt.run_reference(graph, images)
    predicted = probs.argmax(axis=1)
    return float((predicted == labels).mean()), predicted, labels


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=MODELS, help="folder with the Caffe LeNet files")
    args = parser.parse_args(argv)
    accuracy, predicted, labels = classify(args.models)
    print(f"Caffe LeNet (lenet_iter_10000.caffemodel) on {len(labels)} scikit-learn digits: "
          f"{accuracy:.1%} correct")
    confusion = np.zeros((10, 10), int)
    np.add.at(confusion, (labels, predicted), 1)
    print("per-digit accuracy: " + " ".join(f"{d}:{confusion[d, d] / confusion[d].sum():.0%}"
                                            for d in range(10)))


if __name__ == "__main__":
    main()
