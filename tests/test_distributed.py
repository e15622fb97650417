"""Data-parallel training over torch.distributed (gloo, 2 ranks under torchrun) against one process.

torchrun is launched once (``ranks`` fixture, tests/distributed_worker.py): 2 ranks train Caffe's
LeNet on the digits for 20 steps of a global batch of 64, in float32 and float64. Each step's
parameters must equal single-process training with the global batch (relative error < 1e-5 in
float32 — see below for the steps after float32 rounding flips a near-tie — and < 1e-12 in
float64); each step makes one all-reduce per gradient bucket, every gradient
is written straight into its bucket's arena range, and rank 0's checkpoint holds the result. A
batch-norm net with ``sync_batchnorm=True`` and a dropout net equal one process for 5 steps; ``graphrt train
--distributed`` runs under torchrun.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import graphrt
from graphrt.distributed import DistributedSampler
from graphrt.testing import relative_error
from graphrt.training.datasets import digits_28x28

from distributed_cases import (BN_SOLVER, BN_STEPS, GLOBAL_BATCH, SHARED, SOLVER, STEPS, bn_net,
                               dropout_net, lenet)

ROOT = Path(__file__).resolve().parent.parent
TOLERANCE = {"float32": 1e-5, "float64": 1e-12}


def torchrun(*args, nproc: int = 2) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc-per-node={nproc}", *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    pytest.importorskip("torch.distributed", reason="data-parallel training needs PyTorch")
    if not (SHARED / "models/caffe/lenet_train_test.prototxt").exists():
        pytest.skip("../shared/models is not there")
    out = tmp_path_factory.mktemp("ranks")
    run = torchrun(ROOT / "tests/distributed_worker.py", out)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return out, json.loads((out / "report.json").read_text())


@pytest.fixture(scope="module")
def digits():
    images, labels = digits_28x28()
    return images * 255.0, labels


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_two_ranks_equal_one_process_with_the_global_batch_after_every_step(ranks, digits, dtype):
    """float64: < 1e-12 at every step. float32: < 1e-5 at every step, except that once float32
    rounding alone has moved one process's own trajectory further than that from the exact one
    (float64) — a near-tie in a max pool or ReLU decided the other way, which this chaotic start of
    training then amplifies — the two ranks may differ from one process by no more than that."""
    out, _ = ranks
    x, y = digits
    one = graphrt.Trainer(lenet(dtype), optimizer=SOLVER, batch_size=GLOBAL_BATCH)
    exact = graphrt.Trainer(lenet("float64"), optimizer=SOLVER, batch_size=GLOBAL_BATCH) \
        if dtype == "float32" else None
    sampler = DistributedSampler(len(x), GLOBAL_BATCH, rank=0, world_size=1, seed=0)
    errors, bounds = [], []
    with np.load(out / f"steps_{dtype}.npz") as steps:
        for k, idx in zip(range(STEPS), sampler):
            one.step(x[idx].astype(dtype), y[idx])
            ours = one.parameters()
            bound = TOLERANCE[dtype]
            if exact is not None:
                exact.step(x[idx], y[idx])
                truth = exact.parameters()
                bound = max(bound, max(relative_error(ours[p], truth[p]) for p in ours))
            err = {p: relative_error(steps[f"{k}/{p}"], value) for p, value in ours.items()}
            worst = max(err, key=err.get)
            errors.append(err[worst])
            bounds.append(bound)
            assert err[worst] < bound, f"step {k}, {worst}: relative error {err[worst]:.3g}"
    strict = next((k for k, e in enumerate(errors) if e >= TOLERANCE[dtype]), STEPS)
    print(f"{dtype}: relative error per step " + " ".join(f"{e:.1g}" for e in errors)
          + f"; under {TOLERANCE[dtype]:g} for the first {strict} steps"
          + ("; float32's own drift from float64: " + " ".join(f"{b:.1g}" for b in bounds) if exact else ""))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_ranks_hold_the_same_parameters(ranks, dtype):
    out, _ = ranks
    with np.load(out / f"final_{dtype}_rank0.npz") as a, np.load(out / f"final_{dtype}_rank1.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for p in a.files:
            np.testing.assert_array_equal(a[p], b[p], err_msg=p)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_one_all_reduce_per_bucket_per_step_on_the_bucket_in_place(ranks, dtype):
    _, report = ranks
    run = report[dtype]
    buckets = run["buckets"]
    print(f"{dtype} buckets (1 MiB cap): " + "; ".join(f"{n}: {p} {b} bytes" for n, p, b in buckets))
    assert len(buckets) == 3  # [ip2, ip1 bias], [ip1 weight] (over the cap alone), [conv2, conv1]
    assert run["calls"] == [len(buckets)] * STEPS
    assert all(run["aliased"].values()), run["aliased"]  # gradients written into the bucket: no copy
    params = lenet(dtype).params
    trained = [p for b in buckets for p in b[1]]
    assert sorted(trained) == sorted(p for p in params if p.endswith(("weight", "bias")))
    assert sum(b[2] for b in buckets) == sum(params[p].nbytes for p in trained)
    assert run["threads"] == max(1, len(os.sched_getaffinity(0)) // 2)


def test_rank_zero_writes_the_checkpoint(ranks):
    out, report = ranks
    saved = Path(report["float32"]["saved"])
    assert saved == out / "lenet_float32.npz" and not list(out.glob("*.tmp*"))
    loaded = graphrt.load(saved)
    with np.load(out / "final_float32_rank0.npz") as final:
        for p in final.files:
            np.testing.assert_array_equal(loaded.params[p], final[p], err_msg=p)


def test_synchronized_batch_norm_equals_one_process_with_the_global_batch(ranks, digits):
    """With sync_batchnorm=True two ranks normalize with the global batch's statistics and keep the
    same running statistics as one process; without it (the default) each rank uses its own."""
    out, _ = ranks
    images, labels = digits_28x28()
    one = graphrt.Trainer(bn_net(), optimizer=BN_SOLVER, batch_size=GLOBAL_BATCH)
    sampler = DistributedSampler(len(images), GLOBAL_BATCH, rank=0, world_size=1, seed=1)
    with np.load(out / "bn_sync1_rank0.npz") as sync, np.load(out / "bn_sync1_rank1.npz") as other, \
            np.load(out / "bn_sync0_rank0.npz") as own:
        apart = 0.0
        for k, idx in zip(range(BN_STEPS), sampler):
            one.step(images[idx], labels[idx])
            for p, value in one.parameters().items():
                err = relative_error(sync[f"{k}/{p}"], value)
                assert err < 1e-5, f"step {k}, {p}: relative error {err:.3g}"
                np.testing.assert_array_equal(sync[f"{k}/{p}"], other[f"{k}/{p}"])
                apart = max(apart, relative_error(own[f"{k}/{p}"], value))
    assert apart > 1e-3, "per-rank statistics should not equal the global batch's"
    assert {"bn1_mean", "bn1_var"} <= set(one.parameters())


def test_dropout_on_two_ranks_draws_the_global_batchs_masks(ranks, digits):
    out, _ = ranks
    images, labels = digits_28x28()
    one = graphrt.Trainer(dropout_net(), optimizer=BN_SOLVER, batch_size=GLOBAL_BATCH)
    sampler = DistributedSampler(len(images), GLOBAL_BATCH, rank=0, world_size=1, seed=1)
    with np.load(out / "dropout_rank0.npz") as two:
        for k, idx in zip(range(BN_STEPS), sampler):
            one.step(images[idx], labels[idx])
            for p, value in one.parameters().items():
                err = relative_error(two[f"{k}/{p}"], value)
                assert err < 1e-5, f"step {k}, {p}: relative error {err:.3g}"


def test_a_fit_stopped_on_every_rank_resumes_where_it_stopped(ranks):
    out, _ = ranks
    with np.load(out / "resume.npz") as runs:
        for name in [n for n in runs.files if n.startswith("straight/")]:
            p = name.split("/", 1)[1]
            np.testing.assert_array_equal(runs[f"stopped/{p}"], runs[name], err_msg=p)


def test_graphrt_train_distributed_under_torchrun(ranks, tmp_path):
    saved = tmp_path / "lenet.npz"
    run = torchrun("-m", "graphrt.cli", "train", SHARED / "models/caffe/lenet_train_test.prototxt",
                   "--phase", "TRAIN", "--input-shape", "1", "28", "28", "--data", "digits", "--batch", "64",
                   "--distributed", "--json", "--save", saved)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])  # rank 0 alone reports
    assert report["steps"] == -(-1797 // 64) and report["saved"] == str(saved)
    assert set(graphrt.load(saved).params) == set(lenet().params)


# ---- in this process: a group of one ---------------------------------------------------------------
@pytest.fixture
def group_of_one(tmp_path):
    dist = pytest.importorskip("torch.distributed", reason="data-parallel training needs PyTorch")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield dist
    dist.destroy_process_group()


def test_a_group_of_one_trains_as_the_plain_trainer(group_of_one, digits):
    from graphrt.distributed import DistributedTrainer

    x, y = digits
    plain = graphrt.Trainer(lenet(), optimizer=SOLVER, batch_size=32)
    ours = DistributedTrainer(lenet(), optimizer=SOLVER, batch_size=32, bucket_bytes=2**20)
    for k in range(3):
        batch = slice(32 * k, 32 * (k + 1))
        assert plain.step(x[batch], y[batch]) == ours.step(x[batch], y[batch])
    for p, value in plain.parameters().items():
        np.testing.assert_array_equal(ours.parameters()[p], value, err_msg=p)
    assert ours.communicator.calls == 3 * len(ours.buckets) == 9


def test_collectives_refuse_strided_and_read_only_buffers(group_of_one):
    from graphrt.distributed.process_group import TorchCommunicator
    from graphrt.ops.collective import CollectiveError

    comm = TorchCommunicator()
    with pytest.raises(CollectiveError, match="contiguous"):
        comm.all_reduce(np.zeros(10, np.float32)[::2], "mean")  # gloo would corrupt it silently
    frozen = np.zeros(4, np.float32)
    frozen.flags.writeable = False
    with pytest.raises(CollectiveError, match="writable"):
        comm.broadcast(frozen)
    assert comm.calls == 0


def test_trainer_needs_a_process_group():
    pytest.importorskip("torch.distributed", reason="data-parallel training needs PyTorch")
    from graphrt.distributed import DistributedError, DistributedTrainer

    with pytest.raises(DistributedError, match="init_process_group"):
        DistributedTrainer(lenet(), batch_size=4)


# ---- the sampler (no process group needed) -------------------------------------------------------
def test_the_shards_are_disjoint_and_together_the_global_batch_in_order():
    n, batch, world = 1000, 64, 3
    samplers = [DistributedSampler(n, batch, rank=r, world_size=world, seed=7) for r in range(world)]
    one = DistributedSampler(n, batch, rank=0, world_size=1, seed=7)
    for epoch in range(2):
        for s in samplers + [one]:
            s.set_epoch(epoch)
        shards = [list(s) for s in samplers]
        for k, whole in enumerate(one):
            parts = [shard[k] for shard in shards]
            np.testing.assert_array_equal(np.concatenate(parts), whole)
            assert max(map(len, parts)) - min(map(len, parts)) <= 1
        seen = np.concatenate([i for shard in shards for i in shard])
        assert sorted(seen) == list(range(n))  # every sample once: disjoint, nothing dropped
    one.set_epoch(0)
    first = np.concatenate(list(one))
    one.set_epoch(1)
    assert not np.array_equal(first, np.concatenate(list(one)))  # reshuffled per epoch


def test_the_sampler_refuses_a_rank_outside_the_world():
    with pytest.raises(graphrt.GraphrtError, match="rank 2"):
        DistributedSampler(10, 4, rank=2, world_size=2)
