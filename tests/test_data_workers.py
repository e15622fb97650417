"""The data sources' windows and decoding workers: the windows are Caffe's per-image draws; the
batches (images, labels and the random windows of a seed) are the same bytes whatever the number of
workers and whether they are threads or processes; worker processes never outlive an iteration that
ends early, raises or is dropped."""
from __future__ import annotations

import gc
import multiprocessing
import os
import signal

import numpy as np
import pytest

from graphrt.data import LMDBSource
from graphrt.data.base import FORK
from graphrt.frontends.caffe.transform import Transform
from graphrt.ir.errors import GraphrtError, InputError

from caffe_data_cases import datum, png, write_lmdb

pytest.importorskip("lmdb")
processes = pytest.mark.skipif(not FORK, reason="worker processes are forked on Linux only")


def _db(path, n=23, replace=None):
    """An LMDB of ``n`` PNG-encoded random 1x9x11 images; ``replace``: {record: Datum bytes}
    written over those records."""
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (n, 1, 9, 11)).astype(np.uint8)
    labels = rng.integers(0, 10, n)
    write_lmdb(path, images, labels, encode=True)
    if replace:
        import lmdb

        env = lmdb.open(str(path))
        with env.begin(write=True) as txn:
            for i, record in replace.items():
                txn.put(b"%08d" % i, record)
        env.close()
    return images, labels


def _workers() -> list:
    return [p for p in multiprocessing.active_children() if p.name.startswith("graphrt-decode")]


def _source(path, **options):
    transform = Transform(crop_size=5, mirror=True, train=True)
    return LMDBSource(path, batch_size=5, transform=transform, shuffle=True, seed=7, **options)


@processes
def test_threads_and_processes_of_any_count_give_the_same_batches(tmp_path):
    images, labels = _db(tmp_path / "db")
    runs = {(kind, n): list(_source(tmp_path / "db", workers=n, processes=kind == "processes"))
            for kind in ("threads", "processes") for n in (1, 3)}
    want = runs["threads", 1]
    assert [len(b["label"]) for b in want] == [5, 5, 5, 5, 3]  # a shuffled pass, the last partial
    order = np.random.default_rng(7).permutation(len(images))
    np.testing.assert_array_equal(np.concatenate([b["data"] for b in want]), images[order])
    np.testing.assert_array_equal(np.concatenate([b["label"] for b in want]), labels[order])
    for run in runs.values():
        assert len(run) == len(want)
        for got, batch in zip(run, want):
            assert got.keys() == batch.keys()
            for name in batch:
                np.testing.assert_array_equal(got[name], batch[name])


@processes
def test_worker_processes_stop_when_the_iteration_ends_early_or_is_dropped(tmp_path):
    _db(tmp_path / "db")
    shm = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    src = _source(tmp_path / "db", workers=2, repeat=True)
    batches = iter(src)
    next(batches)
    assert len(_workers()) == 2
    batches.close()  # a break out of a for loop
    assert _workers() == []
    batches = iter(src)
    next(batches)
    del batches  # dropped without closing
    gc.collect()
    assert _workers() == []
    assert (set(os.listdir("/dev/shm")) if shm else set()) <= shm  # no named segment left behind


@pytest.mark.parametrize("kind", ["threads", pytest.param("processes", marks=processes)])
def test_a_corrupt_record_raises_naming_record_and_store_and_stops_the_workers(tmp_path, kind):
    _db(tmp_path / "db", replace={12: datum(None, 1, png(np.zeros((1, 9, 11), np.uint8))[:20])})
    src = LMDBSource(tmp_path / "db", batch_size=5, workers=2, processes=kind == "processes")
    with pytest.raises(GraphrtError, match=r"record 12 of the LMDB source '.*db'.*cannot decode"):
        list(src)
    assert _workers() == []


@pytest.mark.parametrize("kind", ["threads", pytest.param("processes", marks=processes)])
def test_an_image_of_another_size_is_refused_naming_record_and_store(tmp_path, kind):
    _db(tmp_path / "db", replace={7: datum(None, 1, png(np.zeros((1, 9, 12), np.uint8)))})
    src = LMDBSource(tmp_path / "db", batch_size=5, workers=2, processes=kind == "processes")
    with pytest.raises(InputError, match=r"record 7 of the LMDB source '.*db' is \(1, 9, 12\) uint8, "
                                         r"the first is \(1, 9, 11\) uint8"):
        list(src)


@processes
def test_a_worker_that_dies_is_an_error_naming_the_store(tmp_path):
    _db(tmp_path / "db")
    batches = iter(_source(tmp_path / "db", workers=2, repeat=True))
    next(batches)
    for p in _workers():
        os.kill(p.pid, signal.SIGKILL)
    with pytest.raises(GraphrtError, match=r"a decoding worker of the LMDB source '.*db' exited"):
        for _ in batches:
            pass
    assert _workers() == []


@pytest.mark.parametrize("options", [dict(crop_size=5, mirror=True, train=True),
                                     dict(crop_size=5, train=True), dict(mirror=True, train=True),
                                     dict(crop_size=5, mirror=True, train=False)])
def test_windows_are_caffes_per_image_draws_mirror_row_column(options):
    h, w, n = 9, 11, 13
    got = Transform(**options).windows(n, h, w, np.random.default_rng(4))
    rng = np.random.default_rng(4)
    train, crop = options["train"], options.get("crop_size", 0)
    for i in range(n):  # DataTransformer: Rand(2) for the mirror, then Rand(h - crop + 1), Rand(...)
        mirror = int(rng.integers(2)) if train and options.get("mirror") else 0
        if train and crop:
            want = (rng.integers(h - crop + 1), rng.integers(w - crop + 1), mirror)
        else:
            want = ((h - (crop or h)) // 2, (w - (crop or w)) // 2, mirror)
        assert tuple(got[i]) == want, i
