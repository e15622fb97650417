"""One rank of tests/test_distributed.py's data-parallel runs (launched by torchrun, 2 ranks, gloo).

Trains Caffe's LeNet on the digits for STEPS steps of a global batch of 64 in float32 and float64,
with 1 MiB buckets, and writes to OUT (argv[1]): per dtype, rank 0's parameters after every step,
each rank's final parameters, the all-reduce calls of each step and the buckets; then a checkpoint
written through ``DistributedTrainer.save``; then BN_STEPS steps of a batch-norm net with and
without ``sync_batchnorm``, and of a dropout net; a fit stopped part-way and resumed.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from graphrt.distributed import DistributedSampler, DistributedTrainer, init_process_group
from graphrt.training.datasets import digits_28x28

sys.path.insert(0, str(Path(__file__).resolve().parent))
from distributed_cases import (BN_SOLVER, BN_STEPS, GLOBAL_BATCH, SOLVER, STEPS, bn_net,  # noqa: E402
                              dropout_net, lenet)


def train(dtype: str, x, y, rank: int, out: Path) -> dict:
    trainer = DistributedTrainer(lenet(dtype), optimizer=SOLVER, batch_size=GLOBAL_BATCH // 2,
                                 bucket_bytes=2**20)
    sampler = DistributedSampler(len(x), GLOBAL_BATCH, seed=0)
    steps, calls = {}, []
    for k, idx in zip(range(STEPS), sampler):
        before = trainer.communicator.calls
        trainer.step(x[idx].astype(dtype), y[idx])
        calls.append(trainer.communicator.calls - before)
        if rank == 0:
            steps.update({f"{k}/{p}": v for p, v in trainer.parameters().items()})
    if rank == 0:
        np.savez(out / f"steps_{dtype}.npz", **steps)
    np.savez(out / f"final_{dtype}_rank{rank}.npz", **trainer.parameters())
    return {"calls": calls, "buckets": [[b.node, list(b.params), b.nbytes] for b in trainer.buckets],
            "aliased": aliased(trainer), "threads": trainer.threads,
            "saved": str(trainer.save(out / f"lenet_{dtype}")) if dtype == "float32" else None}


def train_few(name: str, graph, x, y, rank: int, out: Path, sync: bool = False) -> None:
    """BN_STEPS steps of a small net; its parameters and statistics after each, per rank."""
    trainer = DistributedTrainer(graph, optimizer=BN_SOLVER, batch_size=GLOBAL_BATCH // 2,
                                 sync_batchnorm=sync)
    steps = {}
    for k, idx in zip(range(BN_STEPS), DistributedSampler(len(x), GLOBAL_BATCH, seed=1)):
        trainer.step(x[idx], y[idx])
        steps.update({f"{k}/{p}": v for p, v in trainer.parameters().items()})
    np.savez(out / f"{name}_rank{rank}.npz", **steps)


def train_resumed(x, y, rank: int, out: Path) -> None:
    """2 epochs of 4 steps, stopped after step 6 on every rank and resumed, and the same uninterrupted."""
    def trainer():
        return DistributedTrainer(lenet(), optimizer=SOLVER, batch_size=GLOBAL_BATCH // 2)

    def halt(tr):
        if tr.steps == 6:
            raise RuntimeError("stopped")

    straight, stopped = trainer(), trainer()
    straight.fit(DistributedSampler(256, GLOBAL_BATCH, seed=2).batches(x, y, straight), epochs=2,
                 progress=False)
    batches = DistributedSampler(256, GLOBAL_BATCH, seed=2).batches(x, y, stopped)
    try:
        stopped.fit(batches, epochs=2, progress=False, on_step=halt)
    except RuntimeError:
        pass
    stopped.fit(batches, epochs=2, progress=False, resume=True)
    assert stopped.steps == straight.steps == 8
    if rank == 0:
        runs = {"straight": straight.parameters(), "stopped": stopped.parameters()}
        np.savez(out / "resume.npz", **{f"{k}/{p}": v for k, params in runs.items() for p, v in params.items()})


def aliased(trainer) -> dict:
    """Per bucket: whether every gradient and reduced gradient is a view of the bucket's buffer."""
    exe = trainer.exe
    plan, graph = exe.plan, exe.graph
    result = {}
    for b in trainer.buckets:
        node = graph.node(b.node)
        bucket = plan.views[node.outputs[0]].buffer
        result[b.node] = all(plan.views[t].buffer == bucket for t in node.inputs + node.outputs)
    return result


def main():
    out = Path(sys.argv[1])
    rank, world = init_process_group()
    assert world == 2, world
    images, labels = digits_28x28()
    x = images * 255.0
    report = {dtype: train(dtype, x, labels, rank, out) for dtype in ("float32", "float64")}
    for sync in (True, False):
        train_few(f"bn_sync{int(sync)}", bn_net(), images, labels, rank, out, sync)
    train_few("dropout", dropout_net(), images, labels, rank, out)
    train_resumed(x[:256], labels[:256], rank, out)
    if rank == 0:
        (out / "report.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main()
