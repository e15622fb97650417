"""Building a bad node fails at once, with a GraphrtError subclass that names the node and says what
was expected (shape inference runs in ``Graph.add_node``)."""
from __future__ import annotations

import numpy as np
import pytest

import graphrt
from graphrt import AttrError, Graph, GraphError, GraphrtError, ShapeError, Source, UnsupportedError


def w(*shape):
    return np.zeros(shape, np.float32)


def conv_graph(c=3, hw=8):
    g = Graph()
    return g, g.add_input("x", (None, c, hw, hw))


# Each case builds a graph whose last add_node must fail; the failing node is always named "bad"
# except where the case says otherwise.
def conv_wrong_channels():
    g, x = conv_graph(c=3)
    g.add_node("conv2d", [x, g.add_param("w", w(6, 4, 3, 3))], name="conv")


def conv_kernel_too_large():
    g, x = conv_graph(c=3, hw=4)
    g.add_node("conv2d", [x, g.add_param("w", w(6, 3, 7, 7))], name="conv", attrs={"pads": 1})


def conv_dilated_kernel_too_large():
    g, x = conv_graph(c=3, hw=5)
    g.add_node("conv2d", [x, g.add_param("w", w(6, 3, 3, 3))], name="conv", attrs={"dilation": 3})


def conv_groups_not_dividing_inputs():
    g, x = conv_graph(c=5)
    g.add_node("conv2d", [x, g.add_param("w", w(4, 2, 3, 3))], name="conv", attrs={"groups": 2})


def conv_groups_not_dividing_outputs():
    g, x = conv_graph(c=4)
    g.add_node("conv2d", [x, g.add_param("w", w(3, 2, 3, 3))], name="conv", attrs={"groups": 2})


def conv_bad_bias():
    g, x = conv_graph(c=3)
    g.add_node("conv2d", [x, g.add_param("w", w(6, 3, 3, 3)), g.add_param("b", w(5))], name="conv")


def conv_integer_input():
    g = Graph()
    x = g.add_input("x", (None, 3, 8, 8), "int32")
    g.add_node("conv2d", [x, g.add_param("w", w(6, 3, 3, 3))], name="conv")


def conv_3d_input():
    g = Graph()
    x = g.add_input("x", (None, 3, 8))
    g.add_node("conv2d", [x, g.add_param("w", w(6, 3, 3, 3))], name="conv")


def dense_wrong_features():
    g = Graph()
    x = g.add_input("x", (None, 10))
    g.add_node("dense", [x, g.add_param("w", w(7, 500))], name="fc2")


def dense_unflattened():
    g, x = conv_graph()
    g.add_node("dense", [x, g.add_param("w", w(7, 192))], name="fc2")


def concat_mismatch():
    g = Graph()
    a, b = g.add_input("a", (None, 3, 8, 8)), g.add_input("b", (None, 4, 7, 8))
    g.add_node("concat", [a, b], name="cat")


def concat_batch_axis():
    g = Graph()
    a, b = g.add_input("a", (None, 3)), g.add_input("b", (None, 3))
    g.add_node("concat", [a, b], name="cat", attrs={"axis": 0})


def reshape_wrong_count():
    g = Graph()
    x = g.add_input("x", (None, 3, 4))
    g.add_node("reshape", [x], name="view", attrs={"shape": (7,)})


def reshape_indivisible():
    g = Graph()
    x = g.add_input("x", (None, 3, 4))
    g.add_node("reshape", [x], name="view", attrs={"shape": (5, -1)})


def reshape_two_unknowns():
    g = Graph()
    x = g.add_input("x", (None, 3, 4))
    g.add_node("reshape", [x], name="view", attrs={"shape": (-1, -1)})


def pool_kernel_too_large():
    g, x = conv_graph(c=1, hw=3)
    g.add_node("max_pool", [x], name="pool", attrs={"kernel": 5})


def pool_pad_not_below_kernel():
    g, x = conv_graph(c=1, hw=8)
    g.add_node("avg_pool", [x], name="pool", attrs={"kernel": 2, "pads": 2})


def add_different_shapes():
    g = Graph()
    a, b = g.add_input("a", (None, 3, 8, 8)), g.add_input("b", (None, 3, 8, 7))
    g.add_node("add", [a, b], name="sum")


def add_wrong_coeff_count():
    g = Graph()
    a, b = g.add_input("a", (None, 3)), g.add_input("b", (None, 3))
    g.add_node("add", [a, b], name="sum", attrs={"coeffs": (1.0, 2.0, 3.0)})


def softmax_bad_axis():
    g = Graph()
    x = g.add_input("x", (None, 10))
    g.add_node("softmax", [x], name="prob", attrs={"axis": 2})


def transpose_moves_batch():
    g = Graph()
    x = g.add_input("x", (None, 3, 4))
    g.add_node("transpose", [x], name="perm", attrs={"perm": (1, 0, 2)})


def zero_pad_crops_everything():
    g, x = conv_graph(c=1, hw=4)
    g.add_node("zero_pad", [x], name="pad", attrs={"pads": (-2, -2, 0, 0)})


def zero_pad_batch_axis():
    g = Graph()
    x = g.add_input("x", (None, 4))
    g.add_node("zero_pad", [x], name="pad", attrs={"pads": 1})


def batch_norm_wrong_channels():
    g, x = conv_graph(c=3)
    g.add_node("batch_norm", [x, g.add_param("m", w(4)), g.add_param("v", w(4))], name="bn")


def batch_norm_four_inputs():
    g, x = conv_graph(c=3)
    g.add_node("batch_norm", [x] + [g.add_param(p, w(3)) for p in "mvg"], name="bn")


def lrn_not_4d():
    g = Graph()
    x = g.add_input("x", (None, 10))
    g.add_node("lrn", [x], name="norm", attrs={"size": 5})


def loss_label_shape():
    g = Graph()
    s, lab = g.add_input("s", (None, 10)), g.add_input("l", (None, 2), "int64")
    g.add_node("softmax_cross_entropy", [s, lab], name="loss")


def unknown_attribute():
    g, x = conv_graph()
    g.add_node("conv2d", [x, g.add_param("w", w(6, 3, 3, 3))], name="conv", attrs={"strides": 2})


def missing_attribute():
    g, x = conv_graph()
    g.add_node("lrn", [x], name="norm")


def negative_stride():
    g, x = conv_graph()
    g.add_node("conv2d", [x, g.add_param("w", w(6, 3, 3, 3))], name="conv", attrs={"stride": -1})


def negative_conv_pads():
    g, x = conv_graph()
    g.add_node("conv2d", [x, g.add_param("w", w(6, 3, 3, 3))], name="conv", attrs={"pads": (1, -1)})


def non_integer_groups():
    g, x = conv_graph()
    g.add_node("conv2d", [x, g.add_param("w", w(6, 3, 3, 3))], name="conv", attrs={"groups": 1.5})


def bad_dropout_rate():
    g, x = conv_graph()
    g.add_node("dropout", [x], name="drop", attrs={"rate": 1.5})


def unknown_op():
    g, x = conv_graph()
    g.add_node("frobnicate", [x], name="frob")


def too_many_inputs():
    g, x = conv_graph()
    g.add_node("relu", [x, x], name="act")


def too_few_inputs():
    g, x = conv_graph()
    g.add_node("conv2d", [x], name="conv")


def undefined_input():
    g, x = conv_graph()
    g.add_node("relu", ["nowhere"], name="act")


def duplicate_node_name():
    g, x = conv_graph()
    g.add_node("relu", [x], name="act")
    g.add_node("tanh", [x], name="act")


CASES = [
    # (builder, error class, node, message pattern)
    (conv_wrong_channels, ShapeError, "conv", r"expects 4 input channels, got 3"),
    (conv_kernel_too_large, ShapeError, "conv", r"kernel 7x7 .*larger than the padded input 6x6"),
    (conv_dilated_kernel_too_large, ShapeError, "conv", r"dilation 3x3\) is larger than the pad"),
    (conv_groups_not_dividing_inputs, ShapeError, "conv", r"groups=2 expects 4 input channels, "
                                                           r"got 5"),
    (conv_groups_not_dividing_outputs, ShapeError, "conv", r"3 output channels are not divisible "
                                                            r"by groups=2"),
    (conv_bad_bias, ShapeError, "conv", r"bias must have shape \(6,\)"),
    (conv_integer_input, ShapeError, "conv", r"floating point, got int32"),
    (conv_3d_input, ShapeError, "conv", r"4-D NCHW input, got shape \(N, 3, 8\)"),
    (dense_wrong_features, ShapeError, "fc2", r"dense expects 500 input features, got 10"),
    (dense_unflattened, ShapeError, "fc2", r"2-D \(N, 192\) input.*flatten"),
    (concat_mismatch, ShapeError, "cat", r"input 1 has shape \(N, 4, 7, 8\).*does not match"),
    (concat_batch_axis, ShapeError, "cat", r"concat axis 0 is not valid"),
    (reshape_wrong_count, ShapeError, "view", r"cannot reshape \(N, 3, 4\) \(12 values per item\)"),
    (reshape_indivisible, ShapeError, "view", r"cannot reshape \(N, 3, 4\) to \(N, 5, -1\)"),
    (reshape_two_unknowns, ShapeError, "view", r"one -1"),
    (pool_kernel_too_large, ShapeError, "pool", r"kernel 5x5 is larger than the padded input 3x3"),
    (pool_pad_not_below_kernel, ShapeError, "pool", r"smaller than the kernel 2x2"),
    (add_different_shapes, ShapeError, "sum", r"one shape.*input 1 is \(N, 3, 8, 7\)"),
    (add_wrong_coeff_count, ShapeError, "sum", r"2 inputs but 3 coeffs"),
    (softmax_bad_axis, ShapeError, "prob", r"axis 2 is out of range"),
    (transpose_moves_batch, ShapeError, "perm", r"keeping the batch first"),
    (zero_pad_crops_everything, ShapeError, "pad", r"crops all"),
    (zero_pad_batch_axis, ShapeError, "pad", r"not the batch"),
    (batch_norm_wrong_channels, ShapeError, "bn", r"shape \(3,\) for 3 channels, got \(4\)"),
    (batch_norm_four_inputs, ShapeError, "bn", r"both gamma and beta"),
    (lrn_not_4d, ShapeError, "norm", r"4-D NCHW"),
    (loss_label_shape, ShapeError, "loss", r"labels must have shape \(N,\)"),
    (unknown_attribute, AttrError, "conv", r"no attribute 'strides'.*known: .*stride"),
    (missing_attribute, AttrError, "norm", r"needs attribute 'size'"),
    (negative_stride, AttrError, "conv", r"attribute 'stride'.*positive"),
    (negative_conv_pads, AttrError, "conv", r"attribute 'pads'.*>= 0"),
    (non_integer_groups, AttrError, "conv", r"attribute 'groups'.*integer"),
    (bad_dropout_rate, AttrError, "drop", r"rate must be in \[0, 1\)"),
    (unknown_op, UnsupportedError, "frob", r"unknown op 'frobnicate'.*conv2d"),
    (too_many_inputs, GraphError, "act", r"relu takes 1 inputs, got 2"),
    (too_few_inputs, GraphError, "conv", r"conv2d takes 2 to 3 inputs, got 1"),
    (undefined_input, GraphError, "act", r"'nowhere' is not a graph input"),
    (duplicate_node_name, GraphError, "act", r"duplicate node name 'act'"),
]


@pytest.mark.parametrize("build, cls, node, pattern", CASES, ids=[c[0].__name__ for c in CASES])
def test_bad_node_fails_naming_it(build, cls, node, pattern):
    with pytest.raises(cls, match=pattern) as info:
        build()
    err = info.value
    assert isinstance(err, GraphrtError)
    assert err.node == node, f"error names {err.node!r}, not {node!r}: {err}"
    assert f"node {node!r}" in str(err)


def test_every_error_class_is_a_graphrt_error():
    for cls in (graphrt.ShapeError, graphrt.AttrError, graphrt.GraphError, graphrt.UnsupportedError,
                graphrt.ParseError, graphrt.WeightError, graphrt.InputError):
        assert issubclass(cls, GraphrtError)


def test_error_names_source_layer_file_and_line():
    # the seed's Torch LeNet repeats Linear(500, n): the second one is fed 10 features
    g = Graph()
    x = g.add_input("x", (None, 500))
    h = g.add_node("dense", [x, g.add_param("w1", w(10, 500))], name="fc1")
    with pytest.raises(ShapeError) as info:
        g.add_node("dense", [h, g.add_param("w2", w(10, 500))], name="fc2",
                   source=Source(layer="fc2", type="Linear", file="lenet.lua", line=12))
    err = info.value
    assert (err.node, err.op, err.file, err.line) == ("fc2", "Linear", "lenet.lua", 12)
    assert str(err) == ("node 'fc2' (Linear) in lenet.lua line 12: dense expects 500 input "
                        "features, got 10 (input shape (N, 10), weight (10, 500))")


def test_failed_add_node_leaves_the_graph_unchanged():
    g, x = conv_graph(c=3)
    wt = g.add_param("w", w(6, 4, 3, 3))
    before = (len(g), dict(g.specs), list(g.nx.edges))
    with pytest.raises(ShapeError):
        g.add_node("conv2d", [x, wt], name="conv")
    assert (len(g), dict(g.specs), list(g.nx.edges)) == before
    assert "conv" not in g


def test_verify_names_the_node_whose_inference_now_fails():
    g = Graph()
    x = g.add_input("x", (None, 20))
    y = g.add_node("dense", [x, g.add_param("w", w(10, 20))], name="fc")
    g.add_node("relu", [y], name="act")
    g.specs["x"] = graphrt.TensorSpec((None, 30))  # the input spec changes after building
    with pytest.raises(ShapeError, match="expects 20 input features, got 30") as info:
        g.verify()
    assert info.value.node == "fc"
    assert "feeding ['act']" in str(info.value)
