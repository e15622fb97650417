"""Caffe's CIFAR-10 quick example run as ``caffe train`` runs it, its files unmodified: the solver
(``cifar10_quick_solver.prototxt``, as Caffe ships it), the train/test net
(``../shared/models/caffe/cifar10_quick_train_test.prototxt``), its mean file and its two LMDB
databases in a folder laid out like Caffe's root (``examples/cifar10/...``, the paths the files
name, relative to the working directory as Caffe resolves them). Nothing is downloaded: the
databases hold generated 32x32 images (a colour and a stripe pattern per class, with noise), so
accuracy rises above chance (0.1) within a few hundred iterations.

    python examples/caffe_cifar10_quick_solver.py [--max-iter 4000] [--test-iter 100] [--dir DIR]

``--max-iter``/``--test-iter`` shorten the run (the solver file itself stays as Caffe ships it);
the solver's ``solver_mode: GPU`` runs on cuda where CuPy sees a GPU, else on the cpu.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MODELS = HERE.parents[1] / "shared" / "models" / "caffe"

# examples/cifar10/cifar10_quick_solver.prototxt, as Caffe ships it
SOLVER = """# reduce the learning rate after 8 epochs (4000 iters) by a factor of 10

# The train/test net protocol buffer definition
net: "examples/cifar10/cifar10_quick_train_test.prototxt"
# test_iter specifies how many forward passes the test should carry out.
# In the case of MNIST, we have test batch size 100 and 100 test iterations,
# covering the full 10,000 testing images.
test_iter: 100
# Carry out testing every 500 training iterations.
test_interval: 500
# The base learning rate, momentum and the weight decay of the network.
base_lr: 0.001
momentum: 0.9
weight_decay: 0.004
# The learning rate policy
lr_policy: "fixed"
# Display every 100 iterations
display: 100
# The maximum number of iterations
max_iter: 4000
# snapshot intermediate results
snapshot: 4000
snapshot_format: HDF5
snapshot_prefix: "examples/cifar10/cifar10_quick"
# solver mode: CPU or GPU
solver_mode: GPU
"""


def _varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b, v = v & 0x7F, v >> 7
        out.append(b | 0x80 if v else b)
        if not v:
            return bytes(out)


def datum(image: np.ndarray, label: int, encoded: bytes | None = None) -> bytes:
    """A serialized Caffe ``Datum`` (channels 1, height 2, width 3, data 4, label 5); with
    ``encoded`` (a PNG or JPEG file's bytes), data 4, label 5 and encoded 7 only, as Caffe's
    ``convert_imageset --encoded`` leaves the sizes to the decoder."""
    if encoded is not None:
        return b"\x22" + _varint(len(encoded)) + encoded + b"\x28" + _varint(label) + b"\x38\x01"
    c, h, w = image.shape
    raw = image.tobytes()
    return (b"\x08" + _varint(c) + b"\x10" + _varint(h) + b"\x18" + _varint(w) + b"\x22"
            + _varint(len(raw)) + raw + b"\x28" + _varint(label))


def blobproto(mean: np.ndarray) -> bytes:
    """A ``BlobProto`` (num 1, channels 2, height 3, width 4, packed data 5)."""
    c, h, w = mean.shape
    data = mean.astype("<f4").tobytes()
    return (b"\x08\x01\x10" + _varint(c) + b"\x18" + _varint(h) + b"\x20" + _varint(w) + b"\x2a"
            + _varint(len(data)) + data)


def images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, 3, 32, 32) uint8 images of 10 classes and their labels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    colours = np.random.default_rng(99).integers(104, 152, (10, 3))  # close: not trivially apart
    yy, xx = np.mgrid[:32, :32]
    out = np.empty((n, 3, 32, 32), np.float32)
    for i, k in enumerate(labels):
        stripes = np.sin((xx * np.cos(k * 0.6) + yy * np.sin(k * 0.6)) * (0.3 + 0.05 * k)) * 20
        out[i] = colours[k][:, None, None] + stripes + rng.normal(0, 50, (3, 32, 32))
    return np.clip(out, 0, 255).astype(np.uint8), labels


def prepare(root: Path, train: int = 2000, test: int = 1000) -> None:
    """Caffe's layout under ``root``: the solver, the net, the mean and the two databases."""
    import lmdb

    folder = root / "examples" / "cifar10"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cifar10_quick_solver.prototxt").write_text(SOLVER)
    shutil.copy(MODELS / "cifar10_quick_train_test.prototxt", folder)
    x_train, y_train = images(train, 0)
    for name, (x, y) in (("cifar10_train_lmdb", (x_train, y_train)), ("cifar10_test_lmdb", images(test, 1))):
        env = lmdb.open(str(folder / name), map_size=1 << 30)
        with env.begin(write=True) as txn:
            for i, (im, lab) in enumerate(zip(x, y)):
                txn.put(b"%05d" % i, datum(im, int(lab)))
        env.close()
    # Caffe's compute_image_mean: the mean image of the training set
    (folder / "mean.binaryproto").write_bytes(blobproto(x_train.astype(np.float64).mean(axis=0)))


def run(root: Path, max_iter: int | None = None, test_iter: int | None = None, log=print) -> dict:
    from graphrt.frontends.caffe import load_solver
    from graphrt.training.caffe_solver import run_solver

    cwd = os.getcwd()
    os.chdir(root)  # Caffe resolves the solver's paths from the working directory
    try:
        solver = load_solver("examples/cifar10/cifar10_quick_solver.prototxt")
        if max_iter is not None:
            solver = dataclasses.replace(solver, max_iter=max_iter, test_interval=min(
                solver.test_interval, max_iter), snapshot=0, snapshot_after_train=False)
        if test_iter is not None:
            solver = dataclasses.replace(solver, test_iter=[test_iter] * len(solver.test_iter))
        return run_solver(solver, log=log)
    finally:
        os.chdir(cwd)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-iter", type=int,
                        help="stop after this many iterations (default: the solver's 4000)")
    parser.add_argument("--test-iter", type=int,
                        help="test batches per test (default: the solver's 100)")
    parser.add_argument("--dir", type=Path,
                        help="where to lay out Caffe's files (default: a temporary folder)")
    args = parser.parse_args(argv)
    root = args.dir or Path(tempfile.mkdtemp(prefix="cifar10_quick_"))
    if not (root / "examples" / "cifar10" / "cifar10_train_lmdb").exists():
        prepare(root)
    result = run(root, args.max_iter, args.test_iter)
    print(f"final test scores: {result['test']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
