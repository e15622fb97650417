"""What tests/test_distributed.py and its torchrun worker (tests/distributed_worker.py) both build."""
from __future__ import annotations

from pathlib import Path

import graphrt
from test_training_rules import float64

SHARED = Path(__file__).resolve().parents[2] / "shared"
GLOBAL_BATCH = 64
STEPS = 20
SOLVER = graphrt.optim.SGD(lr=0.01, momentum=0.9, weight_decay=5e-4, policy="inv", gamma=1e-4, power=0.75)


def lenet(dtype: str = "float32") -> graphrt.Graph:
    graph = graphrt.load(SHARED / "models/caffe/lenet_train_test.prototxt", phase="TRAIN",
                         input_shape=(1, 28, 28))
    return graph if dtype == "float32" else float64(graph)
