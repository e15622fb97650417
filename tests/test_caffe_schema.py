"""Strict, schema-aware Caffe parsing: caffe.proto's fields and kinds, the listed fork fields with
their meaning, "did you mean" for misspelled fields, enum values and layer types."""
from __future__ import annotations

import numpy as np
import pytest

import graphrt
from graphrt.frontends.caffe import load_caffe
from graphrt.frontends.caffe.schema import MESSAGES, check_net
from graphrt.frontends.caffe.prototxt import parse_prototxt
from graphrt.ir.errors import ParseError, UnsupportedError, AttrError

torch = pytest.importorskip("torch")

HEAD = 'name: "t"\ninput: "data"\ninput_shape { dim: 1 dim: 3 dim: %d dim: %d }\n'


def net(body: str, h: int = 8, w: int = 8) -> str:
    return HEAD % (h, w) + body


POOL = """layer {
  name: "pool1" type: "Pooling" bottom: "data" top: "pool1"
  pooling_param { %s }
}
"""


def test_a_misspelled_field_names_file_line_field_and_the_near_miss(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(net(POOL % "pool: MAX kernel_size: 3\n    strid: 2"))
    with pytest.raises(ParseError) as info:
        graphrt.load(path)
    err = info.value
    assert err.file == str(path) and err.line == 7 and err.node == "pool1"
    assert "'strid'" in str(err) and "did you mean 'stride'?" in str(err)


def test_an_unknown_top_level_and_layer_field_are_errors():
    with pytest.raises(ParseError, match="NetParameter has no field 'layr'.*did you mean 'layer'"):
        load_caffe(text=net("layr { name: 'x' }"))
    with pytest.raises(ParseError, match="LayerParameter has no field 'botom'.*'bottom'"):
        load_caffe(text=net('layer { name: "r" type: "ReLU" botom: "data" top: "r" }'))


def test_an_unknown_field_without_a_near_miss_has_no_suggestion():
    with pytest.raises(ParseError) as info:
        load_caffe(text=net(POOL % "pool: MAX kernel_size: 2 zzzzqqq: 1"))
    assert "zzzzqqq" in str(info.value) and "did you mean" not in str(info.value)


def test_an_optional_field_given_twice_is_an_error():
    with pytest.raises(ParseError, match="'kernel_size' of PoolingParameter is not repeated"):
        load_caffe(text=net(POOL % "kernel_size: 2 kernel_size: 3"))


@pytest.mark.parametrize("value,pattern", [
    ("pool: AVG", "PoolMethod enum.*did you mean 'AVE'"),
    ("pool: 7", "PoolMethod enum"),
    ('pool: "MAX"', "PoolMethod enum"),
    ("kernel_size: 2.5", "uint32"),
    ("kernel_size: -2", "uint32"),
    ("global_pooling: 3", "bool"),
    ("kernel_size { dim: 1 }", "is a uint32, got a message"),
])
def test_values_of_the_wrong_kind_are_parse_errors(value, pattern):
    with pytest.raises(ParseError, match=pattern):
        load_caffe(text=net(POOL % value))


def test_a_value_where_a_message_belongs_is_a_parse_error():
    text = net('layer { name: "p" type: "Pooling" bottom: "data" top: "p" pooling_param: 3 }')
    with pytest.raises(ParseError, match="is a message"):
        load_caffe(text=text)


def test_enum_numbers_and_bool_numbers_are_normalized():
    msg = check_net(parse_prototxt(net(POOL % "pool: 1 kernel_size: 2 global_pooling: 1")))
    p = msg.getall("layer")[0].get("pooling_param")
    assert p.get("pool") == "AVE" and p.get("global_pooling") is True


def test_an_unknown_layer_type_suggests_the_nearest_known_one():
    with pytest.raises(UnsupportedError, match="'Relu'.*did you mean 'ReLU'"):
        load_caffe(text=net('layer { name: "r" type: "Relu" bottom: "data" top: "r" }'))
    with pytest.raises(UnsupportedError, match="did you mean 'Convolution'"):
        load_caffe(text=net('layer { name: "c" type: "Convolutoin" bottom: "data" top: "c" }'))


@pytest.mark.parametrize("ltype,pattern", [("LSTM", "recurrent"), ("RNN", "recurrent"),
                                           ("Recurrent", "recurrent"), ("Python", "Python layer")])
def test_recurrent_and_python_layers_are_clearly_unsupported(ltype, pattern):
    text = net(f'layer {{ name: "x" type: "{ltype}" bottom: "data" top: "x" }}')
    with pytest.raises(UnsupportedError, match=pattern):
        load_caffe(text=text)


def test_every_message_kind_in_the_schema_is_declared():
    scalars = {"int32", "int64", "uint32", "uint64", "float", "double", "bool", "string", "bytes"}
    from graphrt.frontends.caffe.schema import ENUMS
    for mtype, fields in MESSAGES.items():
        for field, (kind, _) in fields.items():
            assert kind in scalars or kind in ENUMS or kind in MESSAGES, (mtype, field, kind)


def test_every_real_prototxt_passes_the_schema(shared):
    for path in sorted((shared / "models" / "caffe").glob("*.prototxt")):
        check_net(parse_prototxt(path.read_text()), str(path))


# ---- rounding modes: the silent wrong answer of issue 15 ----------------------------------------

def _pool_net(opts: str, h: int, w: int, pool="MAX", kernel=3, stride=2, pad=1) -> str:
    return net(POOL % f"pool: {pool} kernel_size: {kernel} stride: {stride} pad: {pad} {opts}",
               h, w)


def _torch_pool(x, pool, kernel, stride, pad, ceil):
    t = torch.from_numpy(x.astype(np.float64))
    if pool == "MAX":
        return torch.nn.functional.max_pool2d(t, kernel, stride, pad, ceil_mode=ceil).numpy()
    return torch.nn.functional.avg_pool2d(t, kernel, stride, pad, ceil_mode=ceil,
                                          count_include_pad=True).numpy()


@pytest.mark.parametrize("opts,ceil", [("ceil_mode: false", False), ("ceil_mode: true", True),
                                       ("round_mode: FLOOR", False), ("round_mode: CEIL", True),
                                       ("", True), ("round_mode: FLOOR ceil_mode: false", False)])
@pytest.mark.parametrize("pool", ["MAX", "AVE"])
def test_pooling_in_every_rounding_mode_matches_pytorch(opts, ceil, pool):
    """DenseNet's pool1: 112x112 -> 56x56 with ceil_mode false (57x57 if the field were dropped)."""
    g = load_caffe(text=_pool_net(opts, 112, 112, pool))
    x = np.random.default_rng(0).standard_normal((2, 3, 112, 112)).astype(np.float32)
    y = graphrt.run_reference(g, x)
    want = _torch_pool(x, pool, 3, 2, 1, ceil)
    assert y.shape == want.shape == ((2, 3, 57, 57) if ceil else (2, 3, 56, 56))
    assert np.abs(y - want).max() / np.abs(want).max() < 1e-5


@pytest.mark.parametrize("h,w,kernel,stride,pad", [(7, 9, 2, 2, 0), (10, 11, 3, 3, 1),
                                                     (5, 5, 3, 1, 1), (9, 8, 5, 2, 2), (13, 6, 4, 3, 1)])
@pytest.mark.parametrize("ceil", [False, True])
def test_padded_and_strided_pooling_matches_pytorch(h, w, kernel, stride, pad, ceil):
    for pool in ("MAX", "AVE"):
        g = load_caffe(text=_pool_net(f"ceil_mode: {str(ceil).lower()}", h, w, pool, kernel,
                                      stride, pad))
        x = np.random.default_rng(1).standard_normal((1, 3, h, w)).astype(np.float32)
        want = _torch_pool(x, pool, kernel, stride, pad, ceil)
        y = graphrt.run_reference(g, x)
        assert y.shape == want.shape
        assert np.abs(y - want).max() / np.abs(want).max() < 1e-5


def test_global_pooling_matches_the_mean_and_max():
    for pool, f in (("MAX", np.max), ("AVE", np.mean)):
        g = load_caffe(text=net(POOL % f"pool: {pool} global_pooling: true", 5, 7))
        x = np.random.default_rng(2).standard_normal((2, 3, 5, 7)).astype(np.float32)
        y = graphrt.run_reference(g, x)
        np.testing.assert_allclose(y, f(x, axis=(2, 3), keepdims=True), rtol=1e-5, atol=1e-6)


def test_disagreeing_round_mode_and_ceil_mode_are_an_error():
    with pytest.raises(AttrError, match="disagree"):
        load_caffe(text=_pool_net("round_mode: FLOOR ceil_mode: true", 8, 8))
