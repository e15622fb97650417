"""Caffe frontend: every real prototxt loads and runs; the trained LeNet matches a plain numpy LeNet;
bad files give errors that name the file and line or the layer."""
from __future__ import annotations

import numpy as np
import pytest

import graphrt
from graphrt.frontends.caffe import load_caffe

# (file, load options, expected output specs)
PROTOTXTS = [
    ("lenet.prototxt", {}, {"prob": (None, 10)}),
    ("lenet_train_test.prototxt", {"input_shape": (1, 28, 28)}, {"accuracy": (), "loss": ()}),
    ("lenet_train_test.prototxt", {"input_shape": (1, 28, 28), "phase": "TRAIN"}, {"loss": ()}),
    ("cifar10_quick.prototxt", {}, {"prob": (None, 10)}),
    ("cifar10_quick_train_test.prototxt", {"input_shape": (3, 32, 32)}, {"accuracy": (), "loss": ()}),
    ("cifar10_full.prototxt", {}, {"prob": (None, 10)}),
    ("bvlc_alexnet_deploy.prototxt", {}, {"prob": (None, 1000)}),
    ("bvlc_googlenet_deploy.prototxt", {}, {"prob": (None, 1000)}),
    ("digits_lenet.prototxt", {"input_shape": (1, 28, 28), "stage": ["deploy"], "classes": 10},
     {"softmax": (None, 10)}),
    ("digits_lenet.prototxt", {"input_shape": (1, 28, 28), "stage": ["val"], "classes": 10},
     {"accuracy": (), "loss": ()}),
]


def feeds(graph, batch, rng):
    out = {}
    for name in graph.inputs:
        spec = graph.specs[name]
        if spec.dtype == "float32":
            out[name] = rng.standard_normal(spec.concrete(batch)).astype(np.float32)
        else:
            out[name] = rng.integers(0, 10, spec.concrete(batch))
    return out


@pytest.mark.parametrize("file,options,outputs", PROTOTXTS, ids=lambda v: str(v)[:40])
def test_every_prototxt_loads_verifies_and_runs(shared, file, options, outputs):
    graph = load_caffe(shared / "models/caffe" / file, **options)
    graph.verify()
    assert {t: graph.specs[t].shape for t in graph.outputs} == outputs
    if graph.flops() < 2e9:  # GoogLeNet/AlexNet are checked for shapes only, to keep the suite fast
        result = graphrt.run_reference(graph, feeds(graph, 2, np.random.default_rng(0)))
        result = result if isinstance(result, dict) else {graph.outputs[0]: result}
        for name, value in result.items():
            assert np.isfinite(value).all(), name


def test_phase_and_stage_select_layers(shared):
    path = shared / "models/caffe/digits_lenet.prototxt"
    deploy = load_caffe(path, input_shape=(1, 28, 28), stage=["deploy"], classes=10)
    assert "scale" in deploy and deploy.node("scale").attrs["scale"] == pytest.approx(0.0125)
    assert "loss" not in deploy and "accuracy" not in deploy
    train = load_caffe(path, input_shape=(1, 28, 28), stage=["train"], phase="TRAIN", classes=10)
    assert "loss" in train and "accuracy" not in train and "scale" not in train


def test_one_stage_may_be_a_string_and_input_shape_is_never_ignored(shared):
    path = shared / "models/caffe/digits_lenet.prototxt"
    one = graphrt.load(path, input_shape=(1, 28, 28), stage="deploy", classes=10)
    listed = graphrt.load(path, input_shape=(1, 28, 28), stage=["deploy"], classes=10)
    assert [n.name for n in one.nodes] == [n.name for n in listed.nodes] and "scale" in one
    declared = shared / "models/caffe/lenet.prototxt"  # input_shape: { dim: 64 dim: 1 dim: 28 dim: 28 }
    assert graphrt.load(declared, input_shape=(1, 28, 28)).specs["data"].shape == (None, 1, 28, 28)
    with pytest.raises(graphrt.InputError, match=r"input_shape=\(3, 32, 32\) was given, but the file "
                                                  r"declares input 'data' as \(1, 28, 28\)"):
        graphrt.load(declared, input_shape=(3, 32, 32))


def test_unsupported_enum_reads_as_written():
    text = ('layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 8 '
            'dim: 8 } } }\nlayer { name: "pool" type: "Pooling" bottom: "data" top: "pool" '
            'pooling_param { pool: MAXX kernel_size: 2 } }\n')
    with pytest.raises(graphrt.GraphrtError) as err:
        load_caffe(text=text)
    message = str(err.value)  # the schema names the enum's values and the nearest one
    assert "got MAXX; did you mean 'MAX'?" in message and "EnumValue" not in message


def test_deploy_batch_is_symbolic(shared):
    graph = load_caffe(shared / "models/caffe/lenet.prototxt")  # declares batch 64
    for batch in (1, 3, 65):
        assert graphrt.run_reference(graph, np.zeros((batch, 1, 28, 28), np.float32)).shape == (batch, 10)


def test_lr_mult_and_decay_mult_are_kept(shared):
    graph = load_caffe(shared / "models/caffe/bvlc_googlenet_deploy.prototxt")
    w, b = graph.param_info["conv1/7x7_s2_weight"], graph.param_info["conv1/7x7_s2_bias"]
    assert (w.lr_mult, w.decay_mult, b.lr_mult, b.decay_mult) == (1, 1, 2, 0)


def test_fillers_are_seeded_and_follow_caffe(shared):
    path = shared / "models/caffe/lenet_train_test.prototxt"
    a = load_caffe(path, input_shape=(1, 28, 28), seed=1)
    b = load_caffe(path, input_shape=(1, 28, 28), seed=1)
    np.testing.assert_array_equal(a.params["conv1_weight"], b.params["conv1_weight"])
    w = a.params["ip1_weight"]  # xavier: U(-sqrt(3/fan_in), +sqrt(3/fan_in)), fan_in = 800
    assert np.abs(w).max() <= np.sqrt(3 / 800) and np.abs(w).max() > 0.9 * np.sqrt(3 / 800)
    assert not a.params["ip1_bias"].any()  # constant filler, value 0


def numpy_lenet(params, x):
    """Caffe's LeNet written directly in numpy (einsum over explicit windows), independent of graphrt."""
    def conv(x, w, b):
        k = w.shape[-1]
        win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))
        return np.einsum("nchwij,ocij->nohw", win, w, optimize=True) + b[None, :, None, None]

    def pool(x):
        n, c, h, w = x.shape
        return x.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))

    x = x.astype(np.float64)
    h = pool(conv(x, params["conv1_weight"], params["conv1_bias"]))
    h = pool(conv(h, params["conv2_weight"], params["conv2_bias"]))
    h = np.maximum(h.reshape(len(h), -1) @ params["ip1_weight"].T + params["ip1_bias"], 0)
    z = h @ params["ip2_weight"].T + params["ip2_bias"]
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_trained_lenet_matches_numpy_on_real_digits(shared, model_results):
    pytest.importorskip("sklearn")
    from graphrt.training.datasets import digits_28x28

    models = shared / "models/caffe"
    graph = graphrt.load(models / "lenet.prototxt", weights=models / "lenet_iter_10000.caffemodel")
    images, labels = digits_28x28()
    ours = graphrt.run_reference(graph, images)
    expected = numpy_lenet(graph.params, images)
    err = np.abs(ours - expected).max() / np.abs(expected).max()
    model_results("Caffe (prototxt + caffemodel)", "LeNet, trained (shared/models/caffe)", err,
                  1e-4, "vs a numpy LeNet on real digits")
    assert err < 1e-4
    np.testing.assert_array_equal(ours.argmax(1), expected.argmax(1))
    accuracy = (ours.argmax(1) == labels).mean()
    assert 0.80 < accuracy < 0.90  # the shared README: "about 85%"


LENET_HEAD = """name: "t"
input: "data"
input_shape { dim: 1 dim: 1 dim: 8 dim: 8 }
"""


def test_syntax_error_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.prototxt"
    bad.write_text(LENET_HEAD + 'layer {\n  name: "c"\n  type: "Convolution"\n  bottom "data"\n}\n')
    with pytest.raises(graphrt.ParseError) as err:
        graphrt.load(bad)
    assert err.value.file == str(bad) and err.value.line == 7
    assert "bad.prototxt" in str(err.value) and "line 7" in str(err.value)


def test_unknown_layer_type_names_layer_and_line():
    text = LENET_HEAD + 'layer {\n  name: "odd"\n  type: "Frobnicate"\n  bottom: "data"\n  top: "o"\n}\n'
    with pytest.raises(graphrt.UnsupportedError) as err:
        load_caffe(text=text)
    assert err.value.node == "odd" and err.value.line == 4 and "Frobnicate" in str(err.value)


def test_bottom_that_no_layer_produces():
    text = LENET_HEAD + 'layer {\n  name: "r"\n  type: "ReLU"\n  bottom: "nowhere"\n  top: "r"\n}\n'
    with pytest.raises(graphrt.GraphrtError, match="'nowhere' of layer 'r'") as err:
        load_caffe(text=text)
    assert err.value.line == 4


def test_shape_error_in_layer_names_it():
    text = LENET_HEAD + ('layer {\n  name: "big"\n  type: "Convolution"\n  bottom: "data"\n  top: "big"\n'
                         '  convolution_param { num_output: 2 kernel_size: 11 }\n}\n')
    with pytest.raises(graphrt.ShapeError, match="larger than the padded input") as err:
        load_caffe(text=text)
    assert err.value.node == "big" and err.value.line == 4


def test_weight_blob_of_wrong_shape(shared, tmp_path):
    text = (shared / "models/caffe/lenet.prototxt").read_text().replace("num_output: 500", "num_output: 400")
    path = tmp_path / "lenet400.prototxt"
    path.write_text(text)
    with pytest.raises(graphrt.WeightError, match="ip1") as err:
        graphrt.load(path, weights=shared / "models/caffe/lenet_iter_10000.caffemodel")
    assert "(500, 800)" in str(err.value) and "(400, 800)" in str(err.value)


def test_truncated_caffemodel(shared, tmp_path):
    data = (shared / "models/caffe/lenet_iter_10000.caffemodel").read_bytes()
    cut = tmp_path / "cut.caffemodel"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises((graphrt.ParseError, graphrt.WeightError)):
        graphrt.load(shared / "models/caffe/lenet.prototxt", weights=cut)


def test_within_channel_lrn_matches_formula():
    text = LENET_HEAD + ('layer {\n name: "n"\n type: "LRN"\n bottom: "data"\n top: "n"\n'
                         ' lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 norm_region: WITHIN_CHANNEL }\n}\n')
    graph = load_caffe(text=text)
    x = np.random.default_rng(0).standard_normal((2, 1, 8, 8)).astype(np.float32)
    padded = np.pad(x.astype(np.float64) ** 2, ((0, 0), (0, 0), (1, 1), (1, 1)))
    window = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(2, 3)).sum(axis=(-1, -2)) / 9
    expected = x / (1 + 0.5 * window) ** 0.75
    np.testing.assert_allclose(graphrt.run_reference(graph, x), expected, rtol=1e-5, atol=1e-6)
