"""Data-parallel training, 1 rank against N ranks: images/s and all-reduce time per step.

    python bench/distributed.py                     # 1 and 2 ranks on this machine (gloo, cpu)
    python bench/distributed.py --ranks 1 2 4 --steps 50 --batch 256

Each configuration is one ``torchrun --standalone --nproc-per-node=N`` of this script in worker mode:
every rank trains Caffe's LeNet (``lenet_train_test.prototxt``, TRAIN phase) with
``graphrt.distributed.DistributedTrainer`` on its shard (``--batch / N``) of random global batches
for ``--warmup`` untimed and ``--steps`` timed steps; rank 0 reports images/s of the global batch,
the seconds spent inside the all-reduce calls per step and the buckets. Every rank uses cores / N
threads, so on a machine of C cores the comparison is N ranks x C/N threads against 1 x C.

On a multi-GPU machine the same worker runs with the cuda device and NCCL:

    torchrun --standalone --nproc-per-node=8 bench/distributed.py --worker --device cuda --backend nccl

(the cuda device's collectives — NCCL on DLPack-shared buckets ordered after graphrt's compute
stream — are not implemented yet: DistributedTrainer refuses a non-cpu device with a clear error).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT.parent / "shared" / "models" / "caffe" / "lenet_train_test.prototxt"


def worker(args) -> None:
    import graphrt
    from graphrt.distributed import DistributedTrainer, init_process_group

    rank, world = init_process_group(args.backend)
    graph = graphrt.load(MODEL, phase="TRAIN", input_shape=(1, 28, 28))
    trainer = DistributedTrainer(graph, optimizer=graphrt.optim.SGD(lr=0.001, momentum=0.9),
                                 device=args.device, batch_size=args.batch // world, threads=args.threads)
    rng = np.random.default_rng(rank)
    x = rng.uniform(0, 255, (args.batch // world, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, args.batch // world)
    for _ in range(args.warmup):
        trainer.step(x, y)
    trainer.communicator.reset()
    start = time.perf_counter()
    for _ in range(args.steps):
        trainer.step(x, y)
    seconds = time.perf_counter() - start
    comm = trainer.communicator
    if rank == 0:
        print(json.dumps({"ranks": world, "threads": trainer.threads, "batch": args.batch,
                          "images_per_s": args.batch * args.steps / seconds,
                          "step_ms": seconds / args.steps * 1e3,
                          "allreduce_ms_per_step": comm.seconds / args.steps * 1e3,
                          "allreduce_calls_per_step": comm.calls / args.steps,
                          "buckets": [b.nbytes for b in trainer.buckets]}))


def launch(ranks: int, args) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}",
           __file__, "--worker", "--steps", str(args.steps), "--warmup", str(args.warmup),
           "--batch", str(args.batch)] + (["--threads", str(args.threads)] if args.threads else [])
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if run.returncode:
        raise SystemExit(f"{ranks} ranks failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64, help="the global batch (default 64)")
    parser.add_argument("--worker", action="store_true", help="run as one rank (under torchrun)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="threads per rank (default cores / ranks)")
    parser.add_argument("--backend", default=None, help="torch.distributed backend (default gloo)")
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    load = os.getloadavg()
    rows = [launch(n, args) for n in args.ranks]
    after = os.getloadavg()
    print(f"| ranks x threads | global batch | images/s | ms/step | all-reduce ms/step | calls/step | "
          f"buckets (bytes) |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['ranks']} x {r['threads']} | {r['batch']} | {r['images_per_s']:.0f} | {r['step_ms']:.1f} | "
              f"{r['allreduce_ms_per_step']:.2f} | {r['allreduce_calls_per_step']:.0f} | "
              f"{', '.join(map(str, r['buckets']))} |")
    print(f"load average before {' '.join(f'{v:.2f}' for v in load)}, after "
          f"{' '.join(f'{v:.2f}' for v in after)} ({os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
