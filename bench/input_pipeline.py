"""The input pipeline alone — read, decode, transform, upload — against PyTorch's ``DataLoader`` doing
the same work with the same number of workers, and the bytes each image costs on the bus.

    python bench/input_pipeline.py [--images 2000] [--batch 100] [--workers 2] [--device cpu]
                                   [--encoded png|raw] [--repeat 5] [--threads]

Both read the same LMDB of CIFAR-10-sized Caffe ``Datum`` records (PNG-encoded by default, decoded
with Pillow) and apply Caffe's TRAIN transform (random 28x28 crop, random mirror, a mean image,
scale). graphrt: ``graphrt.data``'s source (decoding in worker processes; ``--threads``: threads)
streamed through an
executable whose only node is the fused ``image_transform`` (on the device: uint8 crosses the bus),
outputs left on the device. PyTorch: a ``Dataset`` decoding and transforming each record in numpy
(the same arithmetic, float32; one generator per worker for the random draws) in ``DataLoader``
worker processes, each batch copied to the device as float32 (``.to(device)``: a no-op on the cpu;
``pin_memory`` on CUDA, as a user would set it). Both sides start their workers for each pass (the
``DataLoader``'s are not persistent; graphrt's fork per iteration). After a warm-up pass each, the
two run ``--repeat`` passes interleaved, so both see the same load; the medians, their spread and
the median of the per-pair ratios are printed with the load average. Machine-dependent: quote the
numbers with the machine and the load printed.
"""
from __future__ import annotations

import argparse
import io
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import graphrt
from graphrt import Graph
from graphrt.frontends.caffe.transform import Transform

C, H, W, CROP, SCALE = 3, 32, 32, 28, 0.00390625


def make_lmdb(path: Path, n: int, encoded: str) -> np.ndarray:
    import lmdb
    from PIL import Image

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    from caffe_cifar10_quick_solver import datum, images

    x, y = images(n, 0)
    env = lmdb.open(str(path), map_size=1 << 31)
    with env.begin(write=True) as txn:
        for i, (im, lab) in enumerate(zip(x, y)):
            if encoded == "png":
                buf = io.BytesIO()
                Image.fromarray(im.transpose(1, 2, 0)[:, :, ::-1]).save(buf, format="PNG")
                rec = datum(im, int(lab), encoded=buf.getvalue())
            else:
                rec = datum(im, int(lab))
            txn.put(b"%06d" % i, rec)
    env.close()
    return x.astype(np.float32).mean(axis=0)


def graphrt_pipeline(db: Path, mean: np.ndarray, batch: int, workers: int, device: str,
                     threads: bool):
    """A function timing one pass of graphrt's pipeline: (images/s, bytes/image, uploads)."""
    from graphrt.data import LMDBSource

    g = Graph("input")
    x = g.add_input("data", (None, C, H, W), "uint8")
    win = g.add_input("window", (None, 3), "int32")
    g.add_input("label", (None,), "int64")
    m = g.add_param("mean", mean.astype(np.float32), trainable=False)
    g.set_outputs([g.add_node("image_transform", [x, win, m], attrs={"crop": CROP, "scale": SCALE})])
    g.set_outputs(list(g.outputs) + ["label"])
    exe = graphrt.compile(g, device=device, batch_size=batch)
    transform = Transform(scale=SCALE, crop_size=CROP, mirror=True, train=True)
    kind = {"processes": False} if threads else {}  # main before the worker processes had none

    def one_pass():
        src = LMDBSource(db, batch_size=batch, transform=transform, workers=workers, **kind)
        exe.ledger.reset()
        start = time.perf_counter()
        n = 0
        for out in exe.stream(src, outputs="device", copy=False):
            n += len(out["label"])
        exe.device.synchronize() if hasattr(exe.device, "synchronize") else None
        return (n / (time.perf_counter() - start), exe.ledger.bytes_per_item(),
                exe.ledger.summary()["HtoD"]["invocations"])
    return one_pass


class _TorchSet:
    """The same records, decoded and transformed per sample in numpy (Caffe's order), float32."""

    def __init__(self, db: Path, mean: np.ndarray):
        self.db, self.mean, self.env, self.rng = str(db), mean.astype(np.float32), None, None
        import lmdb

        env = lmdb.open(self.db, readonly=True, lock=False)
        with env.begin() as txn:
            self.keys = [k for k, _ in txn.cursor()]
        env.close()

    def __len__(self):
        return len(self.keys)

    def __getitem__(self, i):
        import lmdb

        from graphrt.data import decode_datum

        if self.env is None:  # one environment and one generator per worker process
            self.env = lmdb.open(self.db, readonly=True, lock=False)
            self.rng = np.random.default_rng()
        with self.env.begin() as txn:
            image, label = decode_datum(txn.get(self.keys[i]))
        mirror = self.rng.integers(2)
        r, q = self.rng.integers(H - CROP + 1), self.rng.integers(W - CROP + 1)
        v = (image[:, r:r + CROP, q:q + CROP].astype(np.float32) - self.mean[:, r:r + CROP, q:q + CROP])
        v = v * np.float32(SCALE)
        return np.ascontiguousarray(v[:, :, ::-1] if mirror else v), label


def torch_pipeline(db: Path, mean: np.ndarray, batch: int, workers: int, device: str):
    """A function timing one pass of the DataLoader: (images/s, bytes/image)."""
    import torch
    from torch.utils.data import DataLoader

    dev = torch.device("cuda" if device == "cuda" else "cpu")

    def one_pass():
        loader = DataLoader(_TorchSet(db, mean), batch_size=batch, num_workers=workers,
                            pin_memory=dev.type == "cuda")  # as a user would: pinned for a GPU
        start = time.perf_counter()
        n = 0
        for x, y in loader:
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            n += len(x)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return n / (time.perf_counter() - start), (C * CROP * CROP * 4 + 8)
    return one_pass


def _spread(values: list) -> str:
    return f"{np.median(values):8.0f} images/s (min {min(values):.0f}, max {max(values):.0f})"


def _cpu_seconds() -> float:
    """CPU time of this process and its reaped children: both sides join their workers each pass,
    so a pass's CPU per image counts them too (steadier than images/s on a busy machine)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--encoded", default="png", choices=["png", "raw"])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", action="store_true", help="graphrt decodes on threads")
    args = parser.parse_args(argv)
    loads = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "db"
        mean = make_lmdb(db, args.images, args.encoded)
        # a copy: LMDB opens a database once per process, and graphrt holds this one
        shutil.copytree(db, Path(tmp) / "db_torch")
        ours = graphrt_pipeline(db, mean, args.batch, args.workers, args.device, args.threads)
        theirs = torch_pipeline(Path(tmp) / "db_torch", mean, args.batch, args.workers, args.device)
        ours(), theirs()  # warm-up: page cache, imports, first compile
        rates, cpu, ratios, last = {"graphrt": [], "torch": []}, {"graphrt": [], "torch": []}, [], {}
        for _ in range(args.repeat):  # interleaved: both see the same load
            for side, one_pass in (("graphrt", ours), ("torch", theirs)):
                start = _cpu_seconds()
                rate, *last[side] = one_pass()  # and bytes per image (and uploads)
                cpu[side].append((_cpu_seconds() - start) / args.images * 1e6)
                rates[side].append(rate)
            ratios.append(rates["graphrt"][-1] / rates["torch"][-1])
            loads.append(os.getloadavg()[0])
    kind = "threads" if args.threads else "processes"
    print(f"{args.images} {args.encoded} 32x32 records, batch {args.batch}, {args.workers} workers "
          f"(graphrt: {kind}), device {args.device}, {args.repeat} interleaved passes each, "
          f"1-minute load average {' '.join(f'{v:.2f}' for v in loads)} (before, after each pair)")
    (ours_bytes, uploads), (theirs_bytes,) = last["graphrt"], last["torch"]
    print(f"graphrt.data + fused transform : {_spread(rates['graphrt'])}, {ours_bytes:.0f} bytes/image "
          f"over the bus (uint8 + label + window; {uploads} uploads a pass)")
    print(f"torch DataLoader (float32)     : {_spread(rates['torch'])}, {theirs_bytes:.0f} bytes/image "
          "(float32 crop + label)")
    print(f"ratio graphrt / DataLoader     : {np.median(ratios):8.2f}x median of the pairs "
          f"(min {min(ratios):.2f}, max {max(ratios):.2f})")
    print(f"CPU per image, all processes   : graphrt {np.median(cpu['graphrt']):.0f} us, DataLoader "
          f"{np.median(cpu['torch']):.0f} us (medians)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
