"""The seed's Torch7 Inception-BN: GoogLeNet with batch normalization (Ioffe & Szegedy 2015) on
3x224x224 images, in Torch's ``nn`` calls.

The ``inception`` helper follows the Torch model code of soumith's imagenet-multiGPU.torch
(``googlenet`` with ``SpatialBatchNormalization(n, 1e-3)`` after every convolution of a block):
``Concat(2)`` of four branches — 1x1; 1x1 -> 3x3; 1x1 -> 3x3 -> 3x3 (double 3x3); pool ('avg' or
'max', 3x3, stride 1 after ``SpatialZeroPadding(1,1,1,1)``, ceil mode) -> optional 1x1
projection — a config entry of 0 meaning the branch (or projection) is absent. The stride-2
reduction blocks (3c and 4e, as in the paper; they have no 1x1 branch) put stride 2 in the last
3x3 convolution of both 3x3 branches and pool with a 3x3/2 ceil-mode max pool without projection
(the paper's design, instead of soumith's extra 2x2/2 convolution after 3c and 4e). Configs are
the paper's Table (4c and 4d keep their 128-wide projections, so 4c/4d output 608 channels and
4e 1056). The stem is the Torch model's: 7x7/2 conv + BN + ReLU, 3x3/2 ceil max pool,
1x1 conv + ReLU, 3x3 conv (192) + BN + ReLU, 3x3/2 ceil max pool. The head: 7x7 average pool,
View(1024), Linear(1024, 1000), LogSoftMax.
Run ``python examples/torch_inception_bn.py`` to print the graph summary.
"""
from __future__ import annotations

from graphrt.frontends import torch7 as nn

INPUT_SHAPE = (3, 224, 224)
BN_EPS = 1e-3

# name: (input planes, config) with config = {1x1}, {3x3 reduce, 3x3}, {double 3x3 reduce,
# double 3x3}, {pool type, projection}; 0 = absent.
CONFIGS = [
    ("3a", 192, ((64,), (64, 64), (64, 96), ("avg", 32))),
    ("3b", 256, ((64,), (64, 96), (64, 96), ("avg", 64))),
    ("3c", 320, ((0,), (128, 160), (64, 96), ("max", 0))),
    ("4a", 576, ((224,), (64, 96), (96, 128), ("avg", 128))),
    ("4b", 576, ((192,), (96, 128), (96, 128), ("avg", 128))),
    ("4c", 576, ((160,), (128, 160), (128, 160), ("avg", 128))),
    ("4d", 608, ((96,), (128, 192), (160, 192), ("avg", 128))),
    ("4e", 608, ((0,), (128, 192), (192, 256), ("max", 0))),
    ("5a", 1056, ((352,), (192, 320), (160, 224), ("avg", 128))),
    ("5b", 1024, ((352,), (192, 320), (192, 224), ("max", 128))),
]


def conv_bn_relu(seq, n_in, n_out, k, stride=1, pad=0):
    seq.add(nn.SpatialConvolution(n_in, n_out, k, k, stride, stride, pad, pad))
    seq.add(nn.SpatialBatchNormalization(n_out, BN_EPS))
    seq.add(nn.ReLU(True))
    return seq


def inception(depth_dim, input_size, config, stride=None):
    """One Inception-BN block: ``Concat(depth_dim)`` of the four branches of ``config``.

    ``stride`` defaults to 2 for reduction blocks (those without a 1x1 branch), else 1.
    """
    if stride is None:
        stride = 2 if config[0][0] == 0 else 1
    concat = nn.Concat(depth_dim)
    if config[0][0] != 0:
        concat.add(conv_bn_relu(nn.Sequential(), input_size, config[0][0], 1))

    conv3 = nn.Sequential()
    conv_bn_relu(conv3, input_size, config[1][0], 1)
    conv_bn_relu(conv3, config[1][0], config[1][1], 3, stride, 1)
    concat.add(conv3)

    conv3xx = nn.Sequential()
    conv_bn_relu(conv3xx, input_size, config[2][0], 1)
    conv_bn_relu(conv3xx, config[2][0], config[2][1], 3, 1, 1)
    conv_bn_relu(conv3xx, config[2][1], config[2][1], 3, stride, 1)
    concat.add(conv3xx)

    pool = nn.Sequential()
    if stride == 1:
        pool.add(nn.SpatialZeroPadding(1, 1, 1, 1))
    if config[3][0] == "max":
        pool.add(nn.SpatialMaxPooling(3, 3, stride, stride).ceil())
    elif config[3][0] == "avg":
        pool.add(nn.SpatialAveragePooling(3, 3, stride, stride).ceil())
    else:
        raise ValueError(f"Unknown pooling {config[3][0]!r}")
    if config[3][1] != 0:
        conv_bn_relu(pool, input_size, config[3][1], 1)
    concat.add(pool)
    return concat


def build(nclasses: int = 1000) -> nn.Sequential:
    model = nn.Sequential()
    conv_bn_relu(model, 3, 64, 7, 2, 3)                       # 64x112x112
    model.add(nn.SpatialMaxPooling(3, 3, 2, 2).ceil())        # 64x56x56
    model.add(nn.SpatialConvolution(64, 64, 1, 1)).add(nn.ReLU(True))
    conv_bn_relu(model, 64, 192, 3, 1, 1)                     # 192x56x56
    model.add(nn.SpatialMaxPooling(3, 3, 2, 2).ceil())        # 192x28x28
    for _name, input_size, config in CONFIGS:                 # 3a..5b: 1024x7x7
        model.add(inception(2, input_size, config))
    model.add(nn.SpatialAveragePooling(7, 7, 1, 1))           # 1024x1x1
    model.add(nn.View(1024).setNumInputDims(3))
    model.add(nn.Linear(1024, nclasses))
    model.add(nn.LogSoftMax())
    return model


def main() -> None:
    print(build().to_graph(input_shape=INPUT_SHAPE, seed=0).summary())


if __name__ == "__main__":
    main()
