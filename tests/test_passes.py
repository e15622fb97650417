"""Optimization passes: each rewrite checked against a hand-built expected graph and hand-computed
parameters; every pass pure, idempotent and verified on every test graph; the pipeline's opt levels,
disabling, error wrapping and instruments."""
from __future__ import annotations

import types

import numpy as np
import pytest

import graphrt
from graphrt import Graph
from graphrt.passes import (OPTIMIZE, PASSES, GraphDumper, Pass, PassContext, PassError, PassTimer,
                            Pipeline, optimize, place_on)

RTOL = 1e-5


# ---- helpers ------------------------------------------------------------------------------------
def plain(value):
    """Attribute values as plain comparable Python (mapping proxies -> sorted item tuples)."""
    if isinstance(value, (dict, types.MappingProxyType)):
        return tuple(sorted((k, plain(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(plain(v) for v in value)
    return value


def structure(g: Graph):
    """Everything a pass may change, in comparable form (parameters by value)."""
    nodes = tuple((n.name, n.op, n.inputs, n.outputs, plain(n.attrs), n.absorbed, n.device)
                  for n in g.nodes)
    return nodes, tuple(g.inputs), tuple(g.outputs)


def params_equal(a: Graph, b: Graph) -> bool:
    return a.params.keys() == b.params.keys() and all(
        a.params[k].dtype == b.params[k].dtype and np.array_equal(a.params[k], b.params[k])
        for k in a.params)


def snapshot(g: Graph):
    return (structure(g), {k: v.copy() for k, v in g.params.items()}, dict(g.specs),
            {k: (v.lr_mult, v.decay_mult, v.trainable) for k, v in g.param_info.items()})


def unchanged(g: Graph, snap) -> bool:
    s, params, specs, info = snap
    return (structure(g) == s and g.params.keys() == params.keys()
            and all(np.array_equal(g.params[k], params[k]) for k in params) and dict(g.specs) == specs
            and {k: (v.lr_mult, v.decay_mult, v.trainable) for k, v in g.param_info.items()} == info)


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape
    scale = np.abs(b).max()
    return float(np.abs(a - b).max() / scale) if scale else float(np.abs(a - b).max())


def feeds(g: Graph, batch: int = 2, seed: int = 0):
    rng = np.random.default_rng(seed)
    return {t: rng.standard_normal(g.specs[t].concrete(batch)).astype(np.float32) for t in g.inputs}


def assert_same_function(before: Graph, after: Graph, batch: int = 2):
    x = feeds(before, batch)
    a, b = graphrt.run_reference(before, x), graphrt.run_reference(after, x)
    a = a if isinstance(a, dict) else {before.outputs[0]: a}
    b = b if isinstance(b, dict) else {after.outputs[0]: b}
    assert a.keys() == b.keys()
    for k in a:
        assert rel_err(b[k], a[k]) < RTOL, k


def ops(g: Graph) -> list[str]:
    return [n.op for n in g.nodes]


def run(name: str, g: Graph) -> Graph:
    return PASSES[name](g)


def rnd(rng, *shape, scale=0.5):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def conv_params(g: Graph, rng, name: str, o: int, c: int, k: int, bias: bool = True) -> list[str]:
    ps = [g.add_param(f"{name}_weight", rnd(rng, o, c, k, k))]
    if bias:
        ps.append(g.add_param(f"{name}_bias", rnd(rng, o)))
    return ps


# ---- test graphs (each the "before" of one rewrite) ----------------------------------------------
def conv_bn_relu(eps=1e-3) -> Graph:
    rng = np.random.default_rng(1)
    g = Graph("conv_bn_relu")
    x = g.add_input("x", (None, 3, 8, 8))
    c = g.add_node("conv2d", [x, *conv_params(g, rng, "conv", 4, 3, 3)], name="conv",
                   attrs={"pads": 1})
    bn = g.add_node("batch_norm", [c, g.add_param("bn_mean", rnd(rng, 4)),
                                   g.add_param("bn_var", np.abs(rnd(rng, 4)) + 0.1),
                                   g.add_param("bn_gamma", rnd(rng, 4)),
                                   g.add_param("bn_beta", rnd(rng, 4))],
                    name="bn", attrs={"eps": eps})
    g.set_outputs([g.add_node("relu", [bn], name="relu")])
    return g


def caffe_conv_bn_scale() -> Graph:
    rng = np.random.default_rng(2)
    g = Graph("caffe_bn_scale")
    x = g.add_input("x", (None, 3, 6, 6))
    c = g.add_node("conv2d", [x, *conv_params(g, rng, "conv", 5, 3, 3)], name="conv")
    bn = g.add_node("batch_norm", [c, g.add_param("bn_mean", rnd(rng, 5)),
                                   g.add_param("bn_var", np.abs(rnd(rng, 5)) + 0.1)], name="bn")
    s = g.add_node("channel_affine", [bn, g.add_param("scale_scale", rnd(rng, 5)),
                                      g.add_param("scale_bias", rnd(rng, 5))], name="scale")
    g.set_outputs([s])
    return g


def scale_conv(shift=0.0, pads=0, bias=True, power=1.0) -> Graph:
    rng = np.random.default_rng(3)
    g = Graph("scale_conv")
    x = g.add_input("x", (None, 2, 7, 7))
    s = g.add_node("scale", [x], name="mul", attrs={"scale": 0.5, "shift": shift, "power": power})
    g.set_outputs([g.add_node("conv2d", [s, *conv_params(g, rng, "conv", 3, 2, 3, bias)],
                              name="conv", attrs={"pads": pads})])
    return g


def scale_dense(shift=0.25) -> Graph:
    rng = np.random.default_rng(4)
    g = Graph("scale_dense")
    x = g.add_input("x", (None, 6))
    s = g.add_node("scale", [x], name="mul", attrs={"scale": -2.0, "shift": shift})
    g.set_outputs([g.add_node("dense", [s, g.add_param("fc_weight", rnd(rng, 4, 6))], name="fc")])
    return g


def identities() -> Graph:
    rng = np.random.default_rng(5)
    g = Graph("identities")
    x = g.add_input("x", (None, 2, 5, 5))
    c = g.add_node("conv2d", [x, *conv_params(g, rng, "conv", 3, 2, 3)], name="conv")
    d = g.add_node("dropout", [c], name="drop", attrs={"rate": 0.3})
    r = g.add_node("relu", [d], name="relu")
    f4 = g.add_node("flatten", [r], name="flat4")  # (N, 27) from 4-D: not an identity
    fc = g.add_node("dense", [f4, g.add_param("fc_weight", rnd(rng, 8, 27))], name="fc")
    f2 = g.add_node("flatten", [fc], name="flat2")  # (N, 8) -> (N, 8): the identity
    out = g.add_node("dense", [f2, g.add_param("fc2_weight", rnd(rng, 4, 8))], name="fc2")
    kept = g.add_node("dropout", [out], name="drop_out")  # a graph output: kept
    g.set_outputs([kept])
    return g


def dead_branch() -> Graph:
    rng = np.random.default_rng(6)
    g = Graph("dead")
    x = g.add_input("x", (None, 2, 6, 6))
    c = g.add_node("conv2d", [x, *conv_params(g, rng, "conv1", 3, 2, 3)], name="conv1")
    r = g.add_node("relu", [c], name="relu1")
    g.add_node("max_pool", [c], name="pool_unused", attrs={"kernel": 2, "stride": 2})
    c2 = g.add_node("conv2d", [x, *conv_params(g, rng, "conv2", 4, 2, 1)], name="conv2")
    g.add_node("tanh", [c2], name="tanh_unused")
    g.set_outputs([r])
    return g


def elementwise_chain() -> Graph:
    g = Graph("chain")
    x = g.add_input("x", (None, 7))
    s = g.add_node("scale", [x], name="scale", attrs={"scale": 3.0, "shift": -0.5})
    t = g.add_node("tanh", [s], name="tanh")
    g.set_outputs([g.add_node("relu", [t], name="relu", attrs={"negative_slope": 0.1})])
    return g


def forked_chain() -> Graph:
    g = Graph("fork")
    x = g.add_input("x", (None, 7))
    s = g.add_node("scale", [x], name="scale", attrs={"scale": 2.0})
    t = g.add_node("tanh", [s], name="tanh")
    a = g.add_node("relu", [t], name="relu")
    b = g.add_node("sigmoid", [t], name="sigmoid")
    g.set_outputs([a, b])
    return g


def siblings(strides=(1, 1, 1)) -> Graph:
    rng = np.random.default_rng(7)
    g = Graph("inception")
    x = g.add_input("x", (None, 8, 6, 6))
    outs = []
    for name, o, s in zip("abc", (4, 6, 2), strides):
        outs.append(g.add_node("conv2d", [x, *conv_params(g, rng, name, o, 8, 1)], name=name,
                               attrs={"stride": s}))
    if len(set(strides)) == 1:
        g.set_outputs([g.add_node("concat", outs, name="cat")])
    else:
        g.set_outputs(outs)
    return g


def concat_of_convs(axis=1, with_input=False) -> Graph:
    rng = np.random.default_rng(8)
    g = Graph("concat")
    x = g.add_input("x", (None, 3, 5, 5))
    a = g.add_node("conv2d", [x, *conv_params(g, rng, "a", 3, 3, 3)], name="a", attrs={"pads": 1})
    b = g.add_node("conv2d", [x, *conv_params(g, rng, "b", 3, 3, 1)], name="b")
    ins = [x, a] if with_input else [a, b]
    g.set_outputs([g.add_node("concat", ins, name="cat", attrs={"axis": axis})])
    return g


def two_in_two_out() -> Graph:
    rng = np.random.default_rng(9)
    g = Graph("io")
    x = g.add_input("x", (None, 5))
    y = g.add_input("y", (None, 5))
    s = g.add_node("add", [x, y], name="sum")
    h = g.add_node("dense", [s, g.add_param("fc_weight", rnd(rng, 3, 5))], name="fc")
    g.set_outputs([g.add_node("relu", [h], name="relu"), s])
    return g


GRAPHS = {
    "conv_bn_relu": conv_bn_relu,
    "caffe_conv_bn_scale": caffe_conv_bn_scale,
    "scale_conv": lambda: scale_conv(shift=0.25),
    "scale_conv_padded": lambda: scale_conv(shift=0.25, pads=1),
    "scale_dense": scale_dense,
    "identities": identities,
    "dead_branch": dead_branch,
    "elementwise_chain": elementwise_chain,
    "forked_chain": forked_chain,
    "siblings": siblings,
    "siblings_strided": lambda: siblings((1, 2, 1)),
    "concat_of_convs": concat_of_convs,
    "concat_with_input": lambda: concat_of_convs(with_input=True),
    "two_in_two_out": two_in_two_out,
}
ALL_PASSES = OPTIMIZE + ["place"]


def test_every_registered_pass_is_covered():
    assert set(PASSES) == set(ALL_PASSES)


@pytest.mark.parametrize("graph", sorted(GRAPHS))
@pytest.mark.parametrize("name", ALL_PASSES)
def test_pass_is_pure_idempotent_and_verified(name, graph):
    g = GRAPHS[graph]().verify()
    snap = snapshot(g)
    once = run(name, g)
    # a pass that finds nothing to rewrite may return its input itself; it never mutates it
    assert unchanged(g, snap), f"{name} mutated its input graph"
    once.verify()
    twice = run(name, once)
    twice.verify()
    assert structure(twice) == structure(once), f"{name} is not idempotent on {graph}"
    assert params_equal(twice, once)
    if name != "place":
        assert_same_function(g, once)


@pytest.mark.parametrize("graph", sorted(GRAPHS))
@pytest.mark.parametrize("level", [1, 2, 3])
def test_optimize_preserves_the_function(graph, level):
    g = GRAPHS[graph]()
    snap = snapshot(g)
    out = optimize(g, level, debug=True)
    assert unchanged(g, snap)
    assert_same_function(g, out)
    assert out.outputs == g.outputs


# ---- fold_batchnorm + fuse_conv_activation -------------------------------------------------------
def test_conv_bn_relu_becomes_one_conv_with_folded_parameters():
    eps = 1e-3
    g = conv_bn_relu(eps)
    p = {k: v.astype(np.float64) for k, v in g.params.items()}
    k = p["bn_gamma"] / np.sqrt(p["bn_var"] + eps)
    want_w = p["conv_weight"] * k[:, None, None, None]
    want_b = (p["conv_bias"] - p["bn_mean"]) * k + p["bn_beta"]

    folded = run("fold_batchnorm", g)
    assert ops(folded) == ["conv2d", "relu"]
    fused = run("fuse_conv_activation", folded)
    assert len(fused) == 1
    (node,) = fused.nodes
    assert node.op == "conv2d" and node.name == "conv"
    assert node.attrs["activation"] == "relu" and node.attrs["negative_slope"] == 0.0
    assert node.attrs["pads"] == (1, 1, 1, 1)
    assert node.absorbed == ("bn", "relu")
    assert node.inputs[0] == "x" and node.outputs == ("relu",) and fused.outputs == ["relu"]
    w, b = fused.params[node.inputs[1]], fused.params[node.inputs[2]]
    assert w.dtype == np.float32 and b.dtype == np.float32
    np.testing.assert_allclose(w, want_w, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(b, want_b, rtol=1e-6, atol=1e-7)
    # the old parameters are gone from the new graph, untouched in the old one
    assert set(fused.params) == {node.inputs[1], node.inputs[2]}
    assert set(g.params) == {"conv_weight", "conv_bias", "bn_mean", "bn_var", "bn_gamma", "bn_beta"}
    assert_same_function(g, fused)
    # the default pipeline does the same
    assert structure(optimize(g, 2)) == structure(fused)


def test_caffe_batchnorm_then_scale_folds_fully():
    g = caffe_conv_bn_scale()
    p = {k: v.astype(np.float64) for k, v in g.params.items()}
    k = 1.0 / np.sqrt(p["bn_var"] + 1e-5)  # batch_norm's default eps
    s, t = p["scale_scale"], p["scale_bias"]
    want_w = p["conv_weight"] * (k * s)[:, None, None, None]
    want_b = ((p["conv_bias"] - p["bn_mean"]) * k) * s + t

    out = run("fold_batchnorm", g)
    (node,) = out.nodes
    assert node.op == "conv2d" and node.absorbed == ("bn", "scale") and node.outputs == ("scale",)
    np.testing.assert_allclose(out.params[node.inputs[1]], want_w, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(out.params[node.inputs[2]], want_b, rtol=1e-5, atol=1e-7)
    assert len(out.params) == 2
    assert_same_function(g, out)


def test_batchnorm_after_conv_without_bias_and_after_dense():
    rng = np.random.default_rng(11)
    g = Graph("nobias")
    x = g.add_input("x", (None, 4))
    h = g.add_node("dense", [x, g.add_param("fc_weight", rnd(rng, 3, 4))], name="fc")
    mean, var = rnd(rng, 3), np.abs(rnd(rng, 3)) + 0.5
    g.set_outputs([g.add_node("batch_norm", [h, g.add_param("m", mean), g.add_param("v", var)],
                              name="bn", attrs={"eps": 0.01})])
    out = run("fold_batchnorm", g)
    (node,) = out.nodes
    assert node.op == "dense" and len(node.inputs) == 3 and node.absorbed == ("bn",)
    k = 1 / np.sqrt(var.astype(np.float64) + 0.01)
    np.testing.assert_allclose(out.params[node.inputs[1]], g.params["fc_weight"] * k[:, None], rtol=1e-6)
    np.testing.assert_allclose(out.params[node.inputs[2]], -mean * k, rtol=1e-6, atol=1e-7)
    assert_same_function(g, out)


def test_batchnorm_not_folded_when_conv_output_is_read_twice():
    g = conv_bn_relu()
    g.set_outputs(["relu", "conv"])  # the conv's own output is needed too
    out = run("fold_batchnorm", g)
    assert ops(out) == ["conv2d", "batch_norm", "relu"]
    assert params_equal(out, g)
    out = run("fuse_conv_activation", g)
    assert ops(out) == ["conv2d", "batch_norm", "relu"]


def test_batchnorm_not_folded_when_weight_is_shared():
    rng = np.random.default_rng(12)
    g = Graph("shared_weight")
    x = g.add_input("x", (None, 4))
    w = g.add_param("w", rnd(rng, 4, 4))
    h = g.add_node("dense", [x, w], name="fc1")
    bn = g.add_node("batch_norm", [h, g.add_param("m", rnd(rng, 4)),
                                   g.add_param("v", np.abs(rnd(rng, 4)) + 1)], name="bn")
    g.set_outputs([g.add_node("dense", [bn, w], name="fc2")])
    assert structure(run("fold_batchnorm", g)) == structure(g)


def test_fuse_conv_activation_keeps_leaky_slope_and_tanh():
    rng = np.random.default_rng(13)
    g = Graph("acts")
    x = g.add_input("x", (None, 5))
    a = g.add_node("dense", [x, g.add_param("w1", rnd(rng, 5, 5))], name="fc1")
    r = g.add_node("relu", [a], name="leaky", attrs={"negative_slope": 0.2})
    b = g.add_node("dense", [r, g.add_param("w2", rnd(rng, 3, 5))], name="fc2")
    g.set_outputs([g.add_node("tanh", [b], name="tanh")])
    out = run("fuse_conv_activation", g)
    assert [(n.name, n.op, n.attrs["activation"], n.attrs["negative_slope"], n.absorbed, n.outputs)
            for n in out.nodes] == [("fc1", "dense", "relu", 0.2, ("leaky",), ("leaky",)),
                                    ("fc2", "dense", "tanh", 0.0, ("tanh",), ("tanh",))]
    assert_same_function(g, out)


# ---- fold_scale -----------------------------------------------------------------------------------
def test_fold_scale_without_shift_scales_the_weight():
    g = scale_conv(shift=0.0)
    out = run("fold_scale", g)
    (node,) = out.nodes
    assert node.op == "conv2d" and node.name == "conv" and node.inputs[0] == "x"
    assert node.absorbed == ("mul",)
    np.testing.assert_allclose(out.params[node.inputs[1]], 0.5 * g.params["conv_weight"].astype(np.float64),
                               rtol=1e-7)
    np.testing.assert_array_equal(out.params[node.inputs[2]], g.params["conv_bias"])
    assert_same_function(g, out)


def test_fold_scale_with_shift_adjusts_the_bias():
    g = scale_conv(shift=0.25)
    w = g.params["conv_weight"].astype(np.float64)
    out = run("fold_scale", g)
    (node,) = out.nodes
    np.testing.assert_allclose(out.params[node.inputs[1]], 0.5 * w, rtol=1e-7)
    want_b = g.params["conv_bias"] + 0.25 * w.sum(axis=(1, 2, 3))
    np.testing.assert_allclose(out.params[node.inputs[2]], want_b, rtol=1e-6, atol=1e-7)
    assert set(out.params) == {node.inputs[1], node.inputs[2]}
    assert_same_function(g, out)


def test_fold_scale_with_shift_and_no_bias_adds_one():
    g = scale_conv(shift=-1.5, bias=False)
    w = g.params["conv_weight"].astype(np.float64)
    out = run("fold_scale", g)
    (node,) = out.nodes
    assert len(node.inputs) == 3
    np.testing.assert_allclose(out.params[node.inputs[2]], -1.5 * w.sum(axis=(1, 2, 3)), rtol=1e-6, atol=1e-6)
    assert_same_function(g, out)


def test_fold_scale_into_dense_with_shift():
    g = scale_dense(shift=0.25)
    w = g.params["fc_weight"].astype(np.float64)
    out = run("fold_scale", g)
    (node,) = out.nodes
    assert node.op == "dense" and node.absorbed == ("mul",)
    np.testing.assert_allclose(out.params[node.inputs[1]], -2.0 * w, rtol=1e-7)
    np.testing.assert_allclose(out.params[node.inputs[2]], 0.25 * w.sum(axis=1), rtol=1e-6, atol=1e-6)
    assert_same_function(g, out)


def test_fold_scale_shift_is_not_folded_across_padding():
    g = scale_conv(shift=0.25, pads=1)
    out = run("fold_scale", g)
    assert structure(out) == structure(g) and params_equal(out, g)
    # without a shift the padding sees zeros either way: folded
    g = scale_conv(shift=0.0, pads=1)
    out = run("fold_scale", g)
    assert ops(out) == ["conv2d"]
    assert_same_function(g, out)


def test_fold_scale_leaves_powers_alone():
    g = scale_conv(power=2.0)
    assert structure(run("fold_scale", g)) == structure(g)


# ---- remove_identities / eliminate_dead_code -----------------------------------------------------
def test_remove_identities():
    g = identities()
    out = run("remove_identities", g)
    assert [n.name for n in out.nodes] == ["conv", "relu", "flat4", "fc", "fc2", "drop_out"]
    assert out.node("relu").inputs == ("conv",)  # dropout gone
    assert out.node("fc2").inputs[0] == "fc"  # the 2-D flatten gone
    assert out.node("flat4").op == "flatten"  # the 4-D flatten is real
    assert out.outputs == ["drop_out"] and out.node("drop_out").op == "dropout"
    assert params_equal(out, g)
    assert_same_function(g, out)


def test_eliminate_dead_code_removes_unused_branch_and_its_parameters():
    g = dead_branch()
    out = run("eliminate_dead_code", g)
    assert [n.name for n in out.nodes] == ["conv1", "relu1"]
    assert set(out.params) == {"conv1_weight", "conv1_bias"}
    assert not ({"conv2_weight", "conv2_bias", "pool_unused", "conv2"} & set(out.specs))
    assert out.inputs == ["x"] and out.outputs == ["relu1"]
    assert_same_function(g, out)


# ---- fuse_elementwise -----------------------------------------------------------------------------
def test_fuse_elementwise_chain():
    g = elementwise_chain()
    out = run("fuse_elementwise", g)
    (node,) = out.nodes
    assert node.op == "elementwise_chain" and node.inputs == ("x",) and node.outputs == ("relu",)
    assert node.absorbed == ("tanh", "relu")
    assert plain(node.attrs["steps"]) == plain((
        ("scale", {"power": 1.0, "scale": 3.0, "shift": -0.5}), ("tanh", {}),
        ("relu", {"negative_slope": 0.1})))
    assert_same_function(g, out)


def test_fuse_elementwise_stops_at_a_fork():
    g = forked_chain()
    out = run("fuse_elementwise", g)
    assert [(n.op, n.inputs, n.outputs) for n in out.nodes] == [
        ("elementwise_chain", ("x",), ("tanh",)), ("relu", ("tanh",), ("relu",)),
        ("sigmoid", ("tanh",), ("sigmoid",))]
    assert [s[0] for s in out.nodes[0].attrs["steps"]] == ["scale", "tanh"]
    assert_same_function(g, out)


def test_fuse_elementwise_does_not_swallow_a_graph_output():
    g = elementwise_chain()
    g.set_outputs(["relu", "scale"])
    out = run("fuse_elementwise", g)
    assert [n.op for n in out.nodes] == ["scale", "elementwise_chain"]
    assert out.outputs == ["relu", "scale"]
    assert_same_function(g, out)


# ---- merge_sibling_convs --------------------------------------------------------------------------
def test_merge_sibling_convs():
    g = siblings()
    out = run("merge_sibling_convs", g)
    assert [n.op for n in out.nodes] == ["conv2d_split", "concat"]
    wide, cat = out.nodes
    assert wide.inputs[0] == "x" and wide.absorbed == ("a", "b", "c")
    np.testing.assert_array_equal(
        out.params[wide.inputs[1]],
        np.concatenate([g.params["a_weight"], g.params["b_weight"], g.params["c_weight"]]))
    np.testing.assert_array_equal(
        out.params[wide.inputs[2]],
        np.concatenate([g.params["a_bias"], g.params["b_bias"], g.params["c_bias"]]))
    assert wide.outputs == ("a", "b", "c")  # the original tensor names
    assert wide.attrs["sizes"] == (4, 6, 2)
    assert cat.inputs == ("a", "b", "c")
    # each output is a tensor of its own, written by the merged convolution: the concat can alias
    assert run("alias_concat", out).node("cat").attrs["alias"] is True
    assert len(out.params) == 2
    assert_same_function(g, out)


def test_merge_sibling_convs_needs_the_same_geometry():
    g = siblings((1, 2, 1))  # b has stride 2: a and c merge, b stays
    out = run("merge_sibling_convs", g)
    convs = [n for n in out.nodes if n.op in ("conv2d", "conv2d_split")]
    assert sorted((n.name, n.op) for n in convs) == [("a+c", "conv2d_split"), ("b", "conv2d")]
    assert out.node("a+c").outputs == ("a", "c")
    assert_same_function(g, out)

    g = siblings((1, 2, 3))  # all different strides: nothing to merge
    assert structure(run("merge_sibling_convs", g)) == structure(g)


def test_merge_sibling_convs_ignores_different_kernels():
    rng = np.random.default_rng(14)
    g = Graph("kernels")
    x = g.add_input("x", (None, 3, 5, 5))
    a = g.add_node("conv2d", [x, *conv_params(g, rng, "a", 2, 3, 1)], name="a")
    b = g.add_node("conv2d", [x, *conv_params(g, rng, "b", 2, 3, 3)], name="b", attrs={"pads": 1})
    g.set_outputs([a, b])
    assert structure(run("merge_sibling_convs", g)) == structure(g)


# ---- alias_concat ---------------------------------------------------------------------------------
def test_alias_concat_of_conv_outputs():
    g = concat_of_convs()
    out = run("alias_concat", g)
    assert out.node("cat").attrs["alias"] is True
    assert [n.name for n in out.nodes] == [n.name for n in g.nodes]
    assert g.node("cat").attrs["alias"] is False  # the input graph is untouched


@pytest.mark.parametrize("case", ["graph_input", "axis2", "negative_axis", "second_reader", "output"])
def test_alias_concat_refuses(case):
    if case == "graph_input":
        g = concat_of_convs(with_input=True)
    elif case == "axis2":
        g = concat_of_convs(axis=2)
    elif case == "negative_axis":
        g = concat_of_convs(axis=-1)
    else:
        g = concat_of_convs()
        g.set_outputs(["cat", "a"] if case == "output" else ["cat"])
        if case == "second_reader":
            r = g.add_node("relu", ["b"], name="relu_b")
            g.set_outputs(["cat", r])
    out = run("alias_concat", g)
    assert out.node("cat").attrs["alias"] is False


def test_alias_concat_accepts_axis_minus_three():
    g = concat_of_convs(axis=-3)  # axis 1 of a 4-D tensor
    assert run("alias_concat", g).node("cat").attrs["alias"] is True


# ---- place ----------------------------------------------------------------------------------------
def check_placement(g: Graph, placed: Graph, kind: str):
    nodes = placed.nodes
    copies_in = {n.inputs[0]: n for n in nodes if n.op == "copy_to_device"}
    copies_out = {n.inputs[0]: n for n in nodes if n.op == "copy_to_host"}
    assert set(copies_in) == set(g.inputs)
    assert placed.inputs == g.inputs
    assert placed.outputs == [f"{t}@host" for t in g.outputs]
    assert len(copies_out) == len(g.outputs)
    for n in nodes:
        if n.op == "copy_to_host":
            assert n.device == "host"
        else:
            assert n.device == kind, n
    for t, n in copies_in.items():
        assert n.outputs == (f"{t}@device",)
        assert [c.name for c in placed.consumers(t)] == [n.name]
    host = set(g.inputs)  # host tensors: graph inputs and the copies' outputs
    host |= {t for n in nodes if n.device == "host" for t in n.outputs}
    for n in nodes:
        if n.op in ("copy_to_device",):
            continue
        if n.op == "copy_to_host":  # reads a device tensor
            assert n.inputs[0] not in host and n.inputs[0] not in placed.params
            continue
        for t in n.inputs:
            assert t not in host, f"{n.name} reads host tensor {t} without a copy"
    out_src = {placed.producer(t).inputs[0] for t in placed.outputs}
    assert out_src == {f"{t}@device" if t in g.inputs else t for t in g.outputs}


@pytest.mark.parametrize("graph", sorted(GRAPHS))
def test_place(graph):
    g = GRAPHS[graph]()
    for kind in ("cpu", "cuda"):
        placed = place_on(g, kind)
        placed.verify()
        check_placement(g, placed, kind)
        assert params_equal(placed, g)
        x = feeds(g)
        a, b = graphrt.run_reference(g, x), graphrt.run_reference(placed, x)
        a = a if isinstance(a, dict) else {g.outputs[0]: a}
        b = b if isinstance(b, dict) else {placed.outputs[0]: b}
        for t in g.outputs:
            np.testing.assert_array_equal(b[f"{t}@host"], a[t])


def test_place_pass_uses_the_generic_device_and_an_input_passed_through():
    g = two_in_two_out()
    g.set_outputs(["relu", "x"])  # an input straight through to an output
    placed = run("place", g)
    placed.verify()
    check_placement(g, placed, "device")
    assert placed.producer("x@host").inputs == ("x@device",)


# ---- the pipeline ---------------------------------------------------------------------------------
LEVELS = {0: [], 1: ["eliminate_dead_code", "remove_identities"],
          2: ["eliminate_dead_code", "remove_identities", "fold_scale", "fold_batchnorm",
              "fuse_conv_activation", "fuse_elementwise"],
          3: OPTIMIZE}


@pytest.mark.parametrize("level", [0, 1, 2, 3])
def test_pipeline_runs_the_passes_of_its_level(level):
    timer = PassTimer()
    g = conv_bn_relu()
    out = Pipeline(OPTIMIZE)(g, PassContext(opt_level=level, instruments=[timer]))
    assert [name for name, _ in timer.times] == LEVELS[level]
    assert all(sec >= 0 for _, sec in timer.times)
    assert ops(out) == (["conv2d"] if level >= 2 else ["conv2d", "batch_norm", "relu"])
    if level == 0:
        assert structure(out) == structure(g)


def test_pipeline_skips_disabled_passes():
    timer = PassTimer()
    g = conv_bn_relu()
    out = optimize(g, 3, disabled=["fold_batchnorm", "merge_sibling_convs"], instruments=[timer])
    assert [name for name, _ in timer.times] == [p for p in OPTIMIZE
                                                  if p not in ("fold_batchnorm", "merge_sibling_convs")]
    assert ops(out) == ["conv2d", "batch_norm", "relu"]  # relu does not follow the conv directly
    for line, (name, _) in zip(timer.table().splitlines(), timer.times):
        assert line.startswith(name)


def test_unknown_disabled_pass_raises():
    with pytest.raises(PassError, match="fold_everything"):
        optimize(conv_bn_relu(), 2, disabled=["fold_everything"])


def test_failing_pass_is_reported_by_name():
    def explode(graph):
        raise ValueError("boom")

    def bad_graph(graph):
        g = graph.copy()
        g.add_node("relu", ["no_such_tensor"], name="dangling")
        return g

    ok = Pass("ok_pass", lambda g: g.copy(), 0)
    for fn, cause in ((explode, ValueError), (bad_graph, graphrt.GraphrtError)):
        pipeline = Pipeline([ok, Pass("throwaway_pass", fn, 1)])
        with pytest.raises(PassError, match="throwaway_pass") as info:
            pipeline(conv_bn_relu(), PassContext(opt_level=1))
        assert isinstance(info.value.__cause__, cause)
        assert isinstance(info.value, graphrt.GraphrtError)
        # skipped below its level: no error
        pipeline(conv_bn_relu(), PassContext(opt_level=0))
    assert "throwaway_pass" not in PASSES


def test_debug_mode_verifies_after_every_pass():
    def corrupt(graph):
        g = graph.copy()
        g.outputs = ["missing"]
        return g

    pipeline = Pipeline([Pass("corrupt_pass", corrupt, 0)])
    pipeline(conv_bn_relu(), PassContext(opt_level=0))  # no verification, no error
    with pytest.raises(PassError, match="corrupt_pass"):
        pipeline(conv_bn_relu(), PassContext(opt_level=0, debug=True))


def test_graph_dumper_keeps_dot_after_each_pass():
    dumper, timer = GraphDumper(), PassTimer()
    optimize(conv_bn_relu(), 2, instruments=[dumper, timer])
    assert [name for name, _ in dumper.dumps] == LEVELS[2]
    by_pass = dict(dumper.dumps)
    for name, dot in dumper.dumps:
        assert dot.startswith("digraph") and dot.rstrip().endswith("}")
        assert '"conv" [label=' in dot
    assert '"bn" [label=' in by_pass["remove_identities"]
    assert '"bn" [label=' not in by_pass["fold_batchnorm"]
    assert '"relu" [label=' in by_pass["fold_batchnorm"]
    assert '"relu" [label=' not in by_pass["fuse_conv_activation"]
    assert "+ bn, relu" in by_pass["fuse_conv_activation"]  # the absorbed layers are shown
