"""BVLC Caffe's layer catalogue (and the fork layers Axpy, ReLU6, Permute): each layer in a prototxt
written here, loaded by graphrt (reference and compiled at O3) and compared with a PyTorch
translation written here from Caffe's layer definitions (relative error < 1e-5)."""
from __future__ import annotations

import numpy as np
import pytest

import graphrt
from graphrt.frontends.caffe import load_caffe
from graphrt.ir.errors import UnsupportedError
from naive import rel_error

torch = pytest.importorskip("torch")
F = torch.nn.functional
GAUSS = 'weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "gaussian" std: 0.5 }'


def net(inputs: dict, body: str) -> str:
    head = "".join(f'input: "{n}"\ninput_shape {{ {" ".join(f"dim: {d}" for d in s)} }}\n'
                   for n, s in inputs.items())
    return 'name: "t"\n' + head + body


def layer(name, ltype, bottoms, tops=None, params=""):
    bs = " ".join(f'bottom: "{b}"' for b in ([bottoms] if isinstance(bottoms, str) else bottoms))
    tops = name if tops is None else tops
    ts = " ".join(f'top: "{t}"' for t in ([tops] if isinstance(tops, str) else tops))
    return f'layer {{ name: "{name}" type: "{ltype}" {bs} {ts} {params} }}\n'


def run(text, feeds, outputs=None):
    """graphrt's outputs (reference, and compiled at O3: they must agree) as a dict."""
    g = load_caffe(text=text)
    ref = graphrt.run_reference(g, feeds, return_all=True)
    exe = graphrt.compile(g, device="cpu", batch_size=2, opt_level=3)
    got = exe(feeds if len(g.inputs) > 1 else feeds[g.inputs[0]])
    got = got if isinstance(got, dict) else {g.outputs[0]: got}
    for t in g.outputs:
        assert rel_error(got[t], ref[t])[0] < 1e-5, t
    return g, {t: ref[t] for t in (outputs or g.outputs)}


def close(a, want, tol=1e-5):
    want = want.detach().numpy() if hasattr(want, "detach") else np.asarray(want)
    assert np.shape(a) == want.shape, (np.shape(a), want.shape)
    err = rel_error(a, want)[0]
    assert err < tol, err


def t(a):
    return torch.from_numpy(np.asarray(a, np.float64))


RNG = np.random.default_rng(0)
X = RNG.standard_normal((2, 6, 5, 4)).astype(np.float32)


def test_slice_along_channels_with_points_and_in_equal_parts():
    text = net({"x": X.shape}, layer("s", "Slice", "x", ["a", "b", "c"],
                                     "slice_param { axis: 1 slice_point: 2 slice_point: 5 }")
               + layer("s2", "Slice", "x", ["d", "e"], "slice_param { slice_dim: 3 }"))
    g, out = run(text, {"x": X})
    wants = list(torch.split(t(X), [2, 3, 1], 1)) + list(torch.split(t(X), 2, 3))
    assert len(g.outputs) == 5  # the tops in order
    for tensor, want in zip(g.outputs, wants):
        close(out[tensor], want)


def test_crop_to_the_reference_bottom_with_offsets():
    ref = np.zeros((2, 6, 3, 2), np.float32)
    text = net({"x": X.shape, "r": ref.shape},
               layer("c", "Crop", ["x", "r"], params="crop_param { axis: 2 offset: 1 offset: 2 }")
               + layer("c1", "Crop", ["x", "r"], params="crop_param { axis: 1 offset: 0 offset: 1 offset: 1 }"))
    _, out = run(text, {"x": X, "r": ref})
    close(out["c"], t(X)[:, :, 1:4, 2:4])
    close(out["c1"], t(X)[:, :, 1:4, 1:3])


@pytest.mark.parametrize("group,stride,pad", [(1, 2, 1), (2, 2, 0), (3, 1, 1)])
def test_deconvolution(group, stride, pad):
    params = (f"convolution_param {{ num_output: 6 kernel_size: 3 stride: {stride} pad: {pad} "
              f"group: {group} {GAUSS} }}")
    g, out = run(net({"x": X.shape}, layer("d", "Deconvolution", "x", params=params)), {"x": X})
    want = F.conv_transpose2d(t(X), t(g.params["d_weight"]), t(g.params["d_bias"]), stride=stride,
                              padding=pad, groups=group)
    close(out["d"], want)


@pytest.mark.parametrize("shared", [False, True])
def test_prelu(shared):
    params = f'prelu_param {{ channel_shared: {str(shared).lower()} filler {{ type: "gaussian" }} }}'
    g, out = run(net({"x": X.shape}, layer("p", "PReLU", "x", params=params)), {"x": X})
    close(out["p"], F.prelu(t(X), t(g.params["p_slope"])))


def test_prelu_default_slope_is_a_quarter():
    g = load_caffe(text=net({"x": X.shape}, layer("p", "PReLU", "x")))
    assert np.all(g.params["p_slope"] == 0.25) and g.params["p_slope"].shape == (6,)


ACTIVATIONS = [
    ("ELU", "elu_param { alpha: 0.7 }", lambda x: F.elu(x, 0.7)),
    ("AbsVal", "", torch.abs),
    ("BNLL", "", F.softplus),
    ("Power", "power_param { power: 2 scale: 0.5 shift: 1 }", lambda x: (1 + 0.5 * x) ** 2),
    ("Exp", "exp_param { base: 2 scale: 0.5 shift: 0.1 }", lambda x: 2 ** (0.1 + 0.5 * x)),
    ("Exp", "", torch.exp),
    ("Threshold", "threshold_param { threshold: 0.3 }", lambda x: (x > 0.3).double()),
    ("Clip", "clip_param { min: -1 max: 2 }", lambda x: x.clamp(-1, 2)),
    ("Swish", "swish_param { beta: 1.5 }", lambda x: x * torch.sigmoid(1.5 * x)),
    ("Swish", "", F.silu),
    ("ReLU6", "", F.relu6),
    ("ReLU", "relu_param { negative_slope: 0.1 }", lambda x: F.leaky_relu(x, 0.1)),
    ("Sigmoid", "", torch.sigmoid),
    ("TanH", "", torch.tanh),
]


@pytest.mark.parametrize("ltype,params,fn", ACTIVATIONS, ids=lambda v: str(v)[:24])
def test_activation_layers(ltype, params, fn):
    _, out = run(net({"x": X.shape}, layer("a", ltype, "x", params=params)), {"x": X})
    close(out["a"], fn(t(X)))


@pytest.mark.parametrize("params,fn", [
    ("log_param { base: 10 scale: 2 shift: 0.5 }", lambda x: torch.log10(0.5 + 2 * x)),
    ("", torch.log)])
def test_log(params, fn):
    x = np.abs(X) + 0.1
    _, out = run(net({"x": X.shape}, layer("l", "Log", "x", params=params)), {"x": x})
    close(out["l"], fn(t(x)))


def test_bias_learned_and_from_a_second_bottom():
    b2 = RNG.standard_normal((2, 6)).astype(np.float32)
    text = net({"x": X.shape, "b": b2.shape},
               layer("b1", "Bias", "x", params='bias_param { filler { type: "gaussian" } }')
               + layer("b2", "Bias", ["x", "b"], params="bias_param { axis: 0 }")
               + layer("b3", "Bias", "x", params='bias_param { axis: 2 num_axes: 2 filler { type: "gaussian" } }'))
    g, out = run(text, {"x": X, "b": b2})
    close(out["b1"], t(X) + t(g.params["b1_bias"]).reshape(1, 6, 1, 1))
    close(out["b2"], t(X) + t(b2).reshape(2, 6, 1, 1))
    close(out["b3"], t(X) + t(g.params["b3_bias"]))


def test_scale_with_two_bottoms_senet_style():
    """SENet: global pool -> 1x1 convs -> sigmoid -> Reshape (N, C) -> Scale axis 0 with x."""
    body = (layer("pool", "Pooling", "x", params="pooling_param { pool: AVE global_pooling: true }")
            + layer("fc", "Convolution", "pool", params=f"convolution_param {{ num_output: 6 "
                                                        f"kernel_size: 1 {GAUSS} }}")
            + layer("gate", "Sigmoid", "fc")
            + layer("flat", "Reshape", "gate", params="reshape_param { shape { dim: 0 dim: -1 } }")
            + layer("se", "Scale", ["x", "flat"], params="scale_param { axis: 0 }"))
    g, out = run(net({"x": X.shape}, body), {"x": X}, ["se"])
    gate = torch.sigmoid(F.conv2d(t(X).mean(dim=(2, 3), keepdim=True), t(g.params["fc_weight"]),
                                  t(g.params["fc_bias"])))
    close(out["se"], t(X) * gate)


def test_a_learned_bias_along_the_batch_is_refused():
    """Caffe would learn a bias of the batch's size for a batched second bottom: refused."""
    body = layer("se_b", "Scale", ["x", "x"], params="scale_param { axis: 0 bias_term: true }")
    with pytest.raises(UnsupportedError, match="batch"):
        load_caffe(text=net({"x": X.shape}, body))


def test_scale_learned_over_two_axes_and_bias():
    params = 'scale_param { axis: 1 num_axes: 2 bias_term: true filler { type: "gaussian" } ' \
             'bias_filler { type: "gaussian" } }'
    g, out = run(net({"x": X.shape}, layer("s", "Scale", "x", params=params)), {"x": X})
    close(out["s"], t(X) * t(g.params["s_scale"]).reshape(1, 6, 5, 1)
          + t(g.params["s_bias"]).reshape(1, 6, 5, 1))


def test_axpy_fork_layer():
    a = RNG.standard_normal((2, 6, 1, 1)).astype(np.float32)
    y = RNG.standard_normal(X.shape).astype(np.float32)
    text = net({"a": a.shape, "x": X.shape, "y": y.shape}, layer("axpy", "Axpy", ["a", "x", "y"]))
    _, out = run(text, {"a": a, "x": X, "y": y})
    close(out["axpy"], t(a) * t(X) + t(y))


@pytest.mark.parametrize("params,fn", [
    ("eltwise_param { operation: MAX }", lambda a, b, c: torch.maximum(torch.maximum(a, b), c)),
    ("eltwise_param { operation: SUM coeff: 1 coeff: -0.5 coeff: 2 }", lambda a, b, c: a - 0.5 * b + 2 * c),
    ("eltwise_param { operation: PROD }", lambda a, b, c: a * b * c)])
def test_eltwise(params, fn):
    xs = [RNG.standard_normal(X.shape).astype(np.float32) for _ in range(3)]
    text = net({f"x{i}": X.shape for i in range(3)}, layer("e", "Eltwise", ["x0", "x1", "x2"],
                                                           params=params))
    _, out = run(text, {f"x{i}": v for i, v in enumerate(xs)})
    close(out["e"], fn(*map(t, xs)))


@pytest.mark.parametrize("op,fn", [("SUM", lambda v, d: v.sum(d)), ("ASUM", lambda v, d: v.abs().sum(d)),
                                   ("SUMSQ", lambda v, d: (v * v).sum(d)), ("MEAN", lambda v, d: v.mean(d))])
def test_reduction(op, fn):
    text = net({"x": X.shape}, layer("r1", "Reduction", "x", params=f"reduction_param {{ operation: "
                                     f"{op} axis: 1 coeff: 2 }}")
               + layer("r2", "Reduction", "x", params=f"reduction_param {{ operation: {op} axis: 2 }}"))
    _, out = run(text, {"x": X})
    close(out["r1"], 2 * fn(t(X), (1, 2, 3)))
    close(out["r2"], fn(t(X), (2, 3)))
    _, out = run(net({"x": X.shape}, layer("r0", "Reduction", "x", params=f"reduction_param {{ "
                                           f"operation: {op} }}")), {"x": X})
    close(out["r0"], fn(t(X), (0, 1, 2, 3)))


def test_argmax_with_and_without_axis():
    text = net({"x": X.shape}, layer("a1", "ArgMax", "x", params="argmax_param { axis: 1 }")
               + layer("a2", "ArgMax", "x")
               + layer("a3", "ArgMax", "x", params="argmax_param { out_max_val: true }")
               + layer("a4", "ArgMax", "x", params="argmax_param { axis: 2 out_max_val: true }"))
    _, out = run(text, {"x": X})
    tx = t(X)
    close(out["a1"], tx.argmax(1, keepdim=True).double())
    flat = tx.reshape(2, -1)
    close(out["a2"], flat.argmax(1).double().reshape(2, 1, 1))
    close(out["a3"], torch.stack([flat.argmax(1).double(), flat.amax(1)], 1).reshape(2, 2, 1))
    close(out["a4"], tx.amax(2, keepdim=True))


@pytest.mark.parametrize("across", [False, True])
@pytest.mark.parametrize("variance", [True, False])
def test_mvn(across, variance):
    params = f"mvn_param {{ across_channels: {str(across).lower()} " \
             f"normalize_variance: {str(variance).lower()} eps: 1e-3 }}"
    _, out = run(net({"x": X.shape}, layer("m", "MVN", "x", params=params)), {"x": X})
    dims = (1, 2, 3) if across else (2, 3)
    centered = t(X) - t(X).mean(dims, keepdim=True)
    want = centered / (centered.pow(2).mean(dims, keepdim=True).sqrt() + 1e-3) if variance else centered
    close(out["m"], want)


def test_tile_flatten_reshape_permute_silence_split():
    body = (layer("tile", "Tile", "x", params="tile_param { axis: 2 tiles: 3 }")
            + layer("flat", "Flatten", "x", params="flatten_param { axis: 1 end_axis: 2 }")
            + layer("rs", "Reshape", "x", params="reshape_param { axis: 1 num_axes: 2 shape { dim: 3 dim: -1 } }")
            + layer("perm", "Permute", "x", params="permute_param { order: 0 order: 2 order: 3 order: 1 }")
            + layer("split", "Split", "x", ["x1", "x2"])
            + layer("quiet", "Silence", "x2", tops=[]))
    g, out = run(net({"x": X.shape}, body), {"x": X})
    assert "x2" not in g.outputs
    tx = t(X)
    close(out["tile"], tx.repeat(1, 1, 3, 1))
    close(out["flat"], tx.reshape(2, 30, 4))
    close(out["rs"], tx.reshape(2, 3, 10, 4))
    close(out["perm"], tx.permute(0, 2, 3, 1))


def test_embed():
    idx = RNG.integers(0, 10, (2, 5)).astype(np.float32)  # Caffe feeds indices as floats
    params = f"embed_param {{ num_output: 4 input_dim: 10 {GAUSS} }}"
    g, out = run(net({"i": idx.shape}, layer("e", "Embed", "i", params=params)), {"i": idx})
    close(out["e"], F.embedding(torch.from_numpy(idx.astype(np.int64)), t(g.params["e_weight"]))
          + t(g.params["e_bias"]))


@pytest.mark.parametrize("params", ["axis: 2", "transpose: true", "axis: 2 transpose: true bias_term: false"])
def test_inner_product_on_other_axes_and_transposed(params):
    text = net({"x": X.shape}, layer("ip", "InnerProduct", "x", params=f"inner_product_param {{ "
                                     f"num_output: 3 {params} {GAUSS} }}"))
    g, out = run(text, {"x": X})
    w = t(g.params["ip_weight"])
    axis = 2 if "axis: 2" in params else 1
    x = t(X).reshape(X.shape[:axis] + (-1,))
    y = x @ (w if "transpose" in params else w.T)
    if "bias_term: false" not in params:
        y = y + t(g.params["ip_bias"])
    close(out["ip"], y)


def test_parameter_layer():
    g, out = run(net({"x": X.shape}, layer("p", "Parameter", [], params="parameter_param { shape { dim: 3 dim: 2 } }")
                     + layer("r", "ReLU", "x")), {"x": X}, ["p"])
    close(out["p"], g.params["p_value"])


@pytest.mark.parametrize("ltype", ["RNN", "LSTM", "Recurrent", "Python"])
def test_recurrent_and_python_layers_are_unsupported(ltype):
    with pytest.raises(UnsupportedError, match=ltype):
        load_caffe(text=net({"x": X.shape}, layer("l", ltype, "x")))


# ---- training -----------------------------------------------------------------------------------
def _float64(graph):
    from graphrt.frontends.npz import graph_from_json, graph_to_json

    for p in graph.params:
        graph.params[p] = graph.params[p].astype(np.float64)
        graph.specs[p] = graphrt.TensorSpec(graph.specs[p].shape, "float64")
    for name in graph.inputs:
        graph.specs[name] = graphrt.TensorSpec(graph.specs[name].shape, "float64")
    return graph_from_json(graph_to_json(graph), graph.params)


def test_one_sgd_step_through_the_new_layers_equals_pytorch(model_results):
    """Convolution, PReLU, Deconvolution, ELU, learned Scale over two axes, Slice, Eltwise MAX,
    MVN, Bias, global pooling and InnerProduct: the loss and every parameter after one SGD step
    with momentum and weight decay equal PyTorch's (float64)."""
    body = (layer("conv", "Convolution", "x", params=f"convolution_param {{ num_output: 4 kernel_size: 3 "
                                                     f"pad: 1 {GAUSS} }}")
            + layer("prelu", "PReLU", "conv", params='prelu_param { filler { type: "gaussian" } }')
            + layer("up", "Deconvolution", "prelu", params=f"convolution_param {{ num_output: 4 "
                                                           f"kernel_size: 2 stride: 2 {GAUSS} }}")
            + layer("elu", "ELU", "up")
            + layer("sc", "Scale", "elu", params='scale_param { num_axes: 2 bias_term: true '
                                                 'filler { type: "gaussian" } bias_filler { type: "gaussian" } }')
            + layer("sl", "Slice", "sc", ["a", "b"], "slice_param { axis: 1 }")
            + layer("mx", "Eltwise", ["a", "b"], params="eltwise_param { operation: MAX }")
            + layer("mvn", "MVN", "mx")
            + layer("bias", "Bias", "mvn", params='bias_param { filler { type: "gaussian" } }')
            + layer("pool", "Pooling", "bias", params="pooling_param { pool: AVE kernel_size: 2 stride: 2 }")
            + layer("fc", "InnerProduct", "pool", params=f"inner_product_param {{ num_output: 3 {GAUSS} }}"))
    g = _float64(load_caffe(text=net({"x": (2, 3, 4, 4)}, body)))
    x = RNG.standard_normal((2, 3, 4, 4))
    labels = np.array([0, 2])
    P = {k: t(v).clone().requires_grad_(True) for k, v in g.params.items()}

    def forward(v):
        v = F.conv2d(v, P["conv_weight"], P["conv_bias"], padding=1)
        v = F.prelu(v, P["prelu_slope"])
        v = F.conv_transpose2d(v, P["up_weight"], P["up_bias"], stride=2)
        v = F.elu(v) * P["sc_scale"].reshape(1, 4, 8, 1) + P["sc_bias"].reshape(1, 4, 8, 1)
        a, b_ = torch.split(v, 2, 1)
        v = torch.maximum(a, b_)
        v = v - v.mean((2, 3), keepdim=True)
        v = v / (v.pow(2).mean((2, 3), keepdim=True).sqrt() + 1e-9)
        v = F.avg_pool2d(v + P["bias_bias"].reshape(1, 2, 1, 1), 2, 2)
        return F.linear(v.reshape(2, -1), P["fc_weight"], P["fc_bias"])

    solver = dict(lr=0.1, momentum=0.9, weight_decay=1e-3)
    opt = torch.optim.SGD(list(P.values()), **solver)
    loss = F.cross_entropy(forward(t(x)), torch.from_numpy(labels))
    loss.backward()
    opt.step()
    trainer = graphrt.Trainer(g, optimizer=graphrt.optim.SGD(**solver), batch_size=2)
    ours = trainer.step(x, labels)
    params = trainer.parameters()
    errors = [rel_error(params[k], p.detach().numpy())[0] for k, p in P.items()]
    model_results("Caffe (prototxt)", "the new layers in one net (tests/test_caffe_layers.py): "
                  "one SGD step", max(errors + [abs(ours - loss.item()) / abs(loss.item())]), 1e-9,
                  "training, float64, loss and every parameter vs PyTorch")
    assert abs(ours - loss.item()) / abs(loss.item()) < 1e-9
    for k, err in zip(P, errors):
        assert err < 1e-9, k
