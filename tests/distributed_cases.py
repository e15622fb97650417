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

BN_STEPS = 5
# conv (no bias: batch norm would cancel it) -> batch norm (Caffe's moving sums) -> scale -> relu -> pool
# -> ip: batch statistics matter
CAFFE_BN = """
name: "bn"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 64 dim: 1 dim: 28 dim: 28 } } }
layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 64 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 6 kernel_size: 5 stride: 2 bias_term: false weight_filler { type: "xavier" } } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "bn1"
  batch_norm_param { moving_average_fraction: 0.9 eps: 1e-5 } }
layer { name: "scale1" type: "Scale" bottom: "bn1" top: "bn1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "bn1" top: "bn1" }
layer { name: "pool1" type: "Pooling" bottom: "bn1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool1" top: "ip1"
  inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip1" bottom: "label" top: "loss" }
"""
BN_SOLVER = graphrt.optim.SGD(lr=0.05, momentum=0.9)


def bn_net() -> graphrt.Graph:
    from graphrt.frontends.caffe import load_caffe

    return load_caffe(text=CAFFE_BN, phase="TRAIN")


# digits -> ip 64 -> relu -> dropout 0.5 -> ip 10: the masks must be the global batch's
CAFFE_DROPOUT = """
name: "dropout"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 64 dim: 1 dim: 28 dim: 28 } } }
layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 64 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
  inner_product_param { num_output: 64 weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "drop1" type: "Dropout" bottom: "ip1" top: "ip1" dropout_param { dropout_ratio: 0.5 } }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""


def dropout_net() -> graphrt.Graph:
    from graphrt.frontends.caffe import load_caffe

    return load_caffe(text=CAFFE_DROPOUT, phase="TRAIN")
