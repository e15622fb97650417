"""Batch inference on Ray Data: ``graphrt.distributed.Predictor`` in ``map_batches`` on a local
cluster (2 CPUs, 2 actors) returns exactly what one process computes, in the dataset's row order."""
from __future__ import annotations

import numpy as np
import pytest

import graphrt
from graphrt.distributed import Predictor
from graphrt.training.datasets import digits_28x28

from distributed_cases import SHARED

ROWS, CHUNK, RAY_BATCH = 10_000, 256, 1024  # Ray's batches a whole number of the compiled chunks


@pytest.fixture(scope="module")
def ray():
    ray = pytest.importorskip("ray", reason="Ray Data is not installed (pip install 'graphrt[ray]')")
    pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install 'graphrt[ray]')")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def test_predictor_on_ray_data_equals_one_process_in_row_order(ray):
    model = SHARED / "models/caffe/lenet.prototxt"
    weights = SHARED / "models/caffe/lenet_iter_10000.caffemodel"
    images, _ = digits_28x28()
    rng = np.random.default_rng(0)
    x = (images[rng.integers(0, len(images), ROWS)] * 255).astype(np.float32)  # 10,000 digits as bytes
    x[:, 0, 0, 0] = np.arange(ROWS) % 251  # no two neighbouring rows alike: a reordering would show
    # one thread and the fixed conv rule, here and in the actors: the summation order depends on them
    expected = graphrt.compile(graphrt.load(model, weights=weights), batch_size=CHUNK, threads=1,
                               algorithms="default")(x)

    ray.data.DataContext.get_current().execution_options.preserve_order = True
    blocks = [x[i:i + RAY_BATCH] for i in range(0, ROWS, RAY_BATCH)]
    ds = ray.data.from_numpy(blocks)  # a column "data"; Ray hands the actors read-only views
    out = ds.map_batches(Predictor, fn_constructor_kwargs={"model": str(model), "weights": str(weights),
                                                           "batch_size": CHUNK, "threads": 1,
                                                           "algorithms": "default"},
                         batch_format="numpy", batch_size=RAY_BATCH, concurrency=2)
    got = np.concatenate([batch["output"] for batch in out.iter_batches(batch_size=None,
                                                                        batch_format="numpy")])
    assert got.shape == expected.shape == (ROWS, 10)
    np.testing.assert_array_equal(got, expected)


def test_predictor_names_a_missing_column():
    model = SHARED / "models/caffe/lenet.prototxt"
    predict = Predictor(str(model), batch_size=4)
    with pytest.raises(graphrt.GraphrtError, match="'data'"):
        predict({"image": np.zeros((2, 1, 28, 28), np.float32)})
    batch = np.full((5, 1, 28, 28), 7, np.float32)
    batch.flags.writeable = False  # as Ray's zero-copy batches are: copied in, never written
    y = predict({"data": batch})["output"]
    assert y.shape == (5, 10) and (batch == 7).all()
