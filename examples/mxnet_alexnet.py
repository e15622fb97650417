"""The seed's MXNet AlexNet, written with graphrt's MXNet symbol API, as a graphrt Graph.

``build()`` returns the symbol; it is the net MXNet 1.9 saved as
``../shared/fixtures/mxnet/seed_alexnet-symbol.json`` (same node names, ops and attributes: the
layer order conv-relu-pool-LRN and ``knorm=1`` are the seed's). ``main()`` converts it for
3x224x224 images (Xavier-initialized, seeded) and prints the graph summary.

    python examples/mxnet_alexnet.py [--json OUT.json]
"""
from __future__ import annotations

import argparse

from graphrt.frontends import mxnet as mx


def build(num_classes: int = 1000) -> "mx.Symbol":
    """The seed's AlexNet symbol (auto-named from a fresh NameManager, as in a new MXNet process)."""
    sym = mx.sym
    with mx.name.NameManager():
        data = sym.Variable("data")
        # stage 1
        conv1 = sym.Convolution(data=data, kernel=(11, 11), stride=(4, 4), num_filter=96)
        relu1 = sym.Activation(data=conv1, act_type="relu")
        pool1 = sym.Pooling(data=relu1, pool_type="max", kernel=(3, 3), stride=(2, 2))
        lrn1 = sym.LRN(data=pool1, alpha=0.0001, beta=0.75, knorm=1, nsize=5)
        # stage 2
        conv2 = sym.Convolution(data=lrn1, kernel=(5, 5), pad=(2, 2), num_filter=256)
        relu2 = sym.Activation(data=conv2, act_type="relu")
        pool2 = sym.Pooling(data=relu2, kernel=(3, 3), stride=(2, 2), pool_type="max")
        lrn2 = sym.LRN(data=pool2, alpha=0.0001, beta=0.75, knorm=1, nsize=5)
        # stage 3
        conv3 = sym.Convolution(data=lrn2, kernel=(3, 3), pad=(1, 1), num_filter=384)
        relu3 = sym.Activation(data=conv3, act_type="relu")
        conv4 = sym.Convolution(data=relu3, kernel=(3, 3), pad=(1, 1), num_filter=384)
        relu4 = sym.Activation(data=conv4, act_type="relu")
        conv5 = sym.Convolution(data=relu4, kernel=(3, 3), pad=(1, 1), num_filter=256)
        relu5 = sym.Activation(data=conv5, act_type="relu")
        pool3 = sym.Pooling(data=relu5, kernel=(3, 3), stride=(2, 2), pool_type="max")
        # stage 4
        flatten = sym.Flatten(data=pool3)
        fc1 = sym.FullyConnected(data=flatten, num_hidden=4096)
        relu6 = sym.Activation(data=fc1, act_type="relu")
        dropout1 = sym.Dropout(data=relu6, p=0.5)
        # stage 5
        fc2 = sym.FullyConnected(data=dropout1, num_hidden=4096)
        relu7 = sym.Activation(data=fc2, act_type="relu")
        dropout2 = sym.Dropout(data=relu7, p=0.5)
        # stage 6
        fc3 = sym.FullyConnected(data=dropout2, num_hidden=num_classes)
        return sym.SoftmaxOutput(data=fc3, name="softmax")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the symbol's MXNet JSON to this file")
    args = parser.parse_args(argv)
    net = build()
    if args.json:
        net.save(args.json)
    graph = mx.to_graph(net, input_shape=(3, 224, 224), seed=0)
    graph.verify()
    print(f"MXNet AlexNet, input 3x224x224: {graph!r}")
    print(graph.summary())


if __name__ == "__main__":
    main()
