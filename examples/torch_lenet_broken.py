"""The seed slide's Torch7 LeNet as printed: ``Linear(500, nclasses)`` appears twice.

The second Linear receives 10 features where it expects 500, so building the graph fails with a
ShapeError that names that layer (node ``10_Linear``) and this file's line where it is written.
Run ``python examples/torch_lenet_broken.py`` to see the message.
"""
from __future__ import annotations

from graphrt.ir.errors import GraphrtError
from graphrt.frontends import torch7 as nn

INPUT_SHAPE = (1, 28, 28)


def build(nclasses: int = 10) -> nn.Sequential:
    net = nn.Sequential()
    net.add(nn.MulConstant(0.00390625))
    net.add(nn.SpatialConvolution(1, 20, 5, 5))
    net.add(nn.SpatialMaxPooling(2, 2, 2, 2))
    net.add(nn.SpatialConvolution(20, 50, 5, 5))
    net.add(nn.SpatialMaxPooling(2, 2, 2, 2))
    net.add(nn.View(-1).setNumInputDims(3))
    net.add(nn.Linear(800, 500))
    net.add(nn.ReLU())
    net.add(nn.Linear(500, nclasses))
    net.add(nn.Linear(500, nclasses))  # the slide's repeated line
    net.add(nn.LogSoftMax())
    return net


def main() -> None:
    try:
        graph = build().to_graph(input_shape=INPUT_SHAPE, seed=0)
    except GraphrtError as err:
        print(f"{type(err).__name__}: {err}")
        raise SystemExit(1)
    print(graph.summary())


if __name__ == "__main__":
    main()
