"""The seed's Torch7 LeNet (the classic Torch demo) on 1x28x28 digits, in Torch's ``nn`` calls.

MulConstant scales bytes to [0, 1); two 5x5 convolutions with 2x2 max pooling; View flattens the
50x4x4 maps; Linear(800, 500), ReLU, Linear(500, nclasses), LogSoftMax.
Run ``python examples/torch_lenet.py`` to print the graph summary.
"""
from __future__ import annotations

from graphrt.frontends import torch7 as nn

INPUT_SHAPE = (1, 28, 28)


def build(nclasses: int = 10) -> nn.Sequential:
    net = nn.Sequential()
    net.add(nn.MulConstant(0.00390625))
    net.add(nn.SpatialConvolution(1, 20, 5, 5))   # 1x28x28 -> 20x24x24
    net.add(nn.SpatialMaxPooling(2, 2, 2, 2))     # -> 20x12x12
    net.add(nn.SpatialConvolution(20, 50, 5, 5))  # -> 50x8x8
    net.add(nn.SpatialMaxPooling(2, 2, 2, 2))     # -> 50x4x4
    net.add(nn.View(-1).setNumInputDims(3))       # -> 800
    net.add(nn.Linear(800, 500))
    net.add(nn.ReLU())
    net.add(nn.Linear(500, nclasses))
    net.add(nn.LogSoftMax())
    return net


def main() -> None:
    print(build().to_graph(input_shape=INPUT_SHAPE, seed=0).summary())


if __name__ == "__main__":
    main()
