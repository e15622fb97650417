"""Tests of the protobuf text-format reader used for Caffe prototxt files."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from graphrt.ir.errors import GraphrtError, ParseError
from graphrt.frontends.caffe.prototxt import (MAX_DEPTH, EnumValue, Message, format_prototxt,
                                              load_prototxt, parse_prototxt)

from bounds import python_calls

CAFFE = Path(__file__).resolve().parents[2] / "shared" / "models" / "caffe"
PROTOTXTS = sorted(CAFFE.glob("*.prototxt")) if CAFFE.is_dir() else []


def caffe_file(name: str) -> Path:
    path = CAFFE / name
    if not path.exists():
        pytest.skip(f"{path} is absent")
    return path


def layers(msg: Message) -> list[Message]:
    return msg.getall("layer")


def parse_error(text: str) -> ParseError:
    with pytest.raises(ParseError) as info:
        parse_prototxt(text, file="t.prototxt")
    return info.value


# ------------------------------------------------------------------------------ real files

@pytest.mark.parametrize("path", PROTOTXTS, ids=lambda p: p.name)
def test_real_files_parse_and_round_trip(path):
    msg = load_prototxt(path)
    assert isinstance(msg.get("name"), str)
    assert len(layers(msg)) > 5
    for layer in layers(msg):
        assert isinstance(layer.get("name"), str) and isinstance(layer.get("type"), str)
        assert layer.line is not None
    assert parse_prototxt(format_prototxt(msg)) == msg


def test_real_files_present():
    if not CAFFE.is_dir():
        pytest.skip("shared/models/caffe is absent")
    assert len(PROTOTXTS) >= 8


def test_lenet_structure():
    msg = load_prototxt(caffe_file("lenet.prototxt"))
    assert msg.get("name") == "LeNet"
    got = [(layer.get("name"), layer.get("type")) for layer in layers(msg)]
    assert got == [("data", "Input"), ("conv1", "Convolution"), ("pool1", "Pooling"),
                   ("conv2", "Convolution"), ("pool2", "Pooling"), ("ip1", "InnerProduct"),
                   ("relu1", "ReLU"), ("ip2", "InnerProduct"), ("prob", "Softmax")]
    data = layers(msg)[0]
    assert data.get("input_param").get("shape").getall("dim") == [64, 1, 28, 28]
    conv1 = layers(msg)[1]
    assert [p.get("lr_mult") for p in conv1.getall("param")] == [1, 2]
    assert conv1.get("convolution_param").get("num_output") == 20
    pool = layers(msg)[2].get("pooling_param")
    assert pool.get("pool") == "MAX" and isinstance(pool.get("pool"), EnumValue)
    assert layers(msg)[1].line == 8 and conv1.line_of("bottom") == 11
    assert msg.line_of("layer") == 2 and msg.lines_of("layer")[1] == 8


def test_googlenet_has_inception_4a_output():
    msg = load_prototxt(caffe_file("bvlc_googlenet_deploy.prototxt"))
    by_name = {layer.get("name"): layer for layer in layers(msg)}
    concat = by_name["inception_4a/output"]
    assert concat.get("type") == "Concat"
    assert concat.getall("bottom")[0] == "inception_4a/1x1"
    assert concat.get("top") == "inception_4a/output"


def test_digits_lenet_stages():
    msg = load_prototxt(caffe_file("digits_lenet.prototxt"))
    by_name = {layer.get("name"): layer for layer in layers(msg)}
    assert by_name["scale"].get("include").get("stage") == "deploy"
    assert by_name["scale"].get("power_param").get("scale") == pytest.approx(0.0125)
    assert by_name["train-data"].get("include").get("stage") == "train"
    excluded = [layer.get("name") for layer in layers(msg) if "exclude" in layer]
    assert excluded and all(layer.get("exclude").get("stage") == "deploy"
                            for layer in layers(msg) if "exclude" in layer)


def test_train_test_phases_are_enums():
    msg = load_prototxt(caffe_file("lenet_train_test.prototxt"))
    phases = [layer.get("include").get("phase") for layer in layers(msg) if "include" in layer]
    assert phases[:2] == ["TRAIN", "TEST"]
    assert all(isinstance(p, EnumValue) for p in phases)


# ---------------------------------------------------------------------------------- values

def test_scalar_values():
    msg = parse_prototxt("""
        i: 12  n: -3  h: 0x1F  o: 017  z: 0
        f: 1.5  e: 1e-4  m: -0.5  s: 0.1f  d: 5.  p: .25  big: 1E+3
        pinf: inf  ninf: -inf  nan: nan  inf2: -Infinity
        t: true  u: false  T: True  enum: MAX
        a: "dq"  b: 'sq'  c: "con" 'cat'
          "enated"
    """)
    assert [msg.get(k) for k in "i n h o z".split()] == [12, -3, 31, 15, 0]
    assert all(type(msg.get(k)) is int for k in "i n h o z".split())
    assert [msg.get(k) for k in "f e m s d p big".split()] == [1.5, 1e-4, -0.5, 0.1, 5.0, .25, 1e3]
    assert msg.get("pinf") == math.inf and msg.get("ninf") == -math.inf
    assert math.isnan(msg.get("nan")) and msg.get("inf2") == -math.inf
    assert msg.get("t") is True and msg.get("u") is False and msg.get("T") is True
    assert msg.get("enum") == "MAX" and type(msg.get("enum")) is EnumValue
    assert (msg.get("a"), msg.get("b"), msg.get("c")) == ("dq", "sq", "concatenated")


def test_string_escapes():
    msg = parse_prototxt(r'''s: "a\n\t\\\"\'\x41\101\u00e9\U0001F600\?" q: 'it\'s' raw: "é"''')
    assert msg.get("s") == "a\n\t\\\"'AAé\U0001F600?"
    assert msg.get("q") == "it's" and msg.get("raw") == "é"
    assert parse_prototxt(r's: "\303\251"').get("s") == "é"  # UTF-8 bytes by octal escape


def test_messages_lists_and_separators():
    msg = parse_prototxt("""
        # comment
        a { x: 1 }  a: { x: 2 }  a < x: 3 >  a: <x: 4>;  # trailing comment
        dims: [1, 2, 3], dims: []  dims: 4
        subs: [{k: 1}, <k: 2>]
        layers { name: "old" type: CONVOLUTION }
        n: 1; m: 2,
    """)
    assert [a.get("x") for a in msg.getall("a")] == [1, 2, 3, 4]
    assert msg.getall("dims") == [1, 2, 3, 4]
    assert [s.get("k") for s in msg.getall("subs")] == [1, 2]
    assert msg.get("layers").get("type") == "CONVOLUTION"
    assert msg.get("n") == 1 and msg.get("m") == 2
    assert msg.get("missing", "dflt") == "dflt" and msg.getall("missing") == []
    assert "a" in msg and "missing" not in msg
    assert msg.names()[:3] == ["a", "dims", "subs"]
    assert msg.line_of("a") == 3 and msg.line_of("dims") == 4 and msg.line_of("missing") is None


def test_repeated_scalar_get_is_last():
    msg = parse_prototxt("top: 'a' top: 'b'")
    assert msg.get("top") == "b" and msg.getall("top") == ["a", "b"]
    assert msg.fields == [("top", "a"), ("top", "b")]


def test_bytes_input_and_bom():
    assert parse_prototxt("\ufeffa: 1").get("a") == 1
    assert parse_prototxt(b"\xef\xbb\xbfa: 'x'").get("a") == "x"


def test_empty_input():
    assert len(parse_prototxt("")) == 0 and len(parse_prototxt("  # only a comment\n")) == 0


# ---------------------------------------------------------------------------- syntax errors

@pytest.mark.parametrize("text, line, column, fragment", [
    ('layer {\n  name: "a"\n', 3, 1,
     "expected '}' to close 'layer' opened at line 1, got end of file"),
    ("a: 1\nb {\n  c: }\n", 3, 6, "expected a value for 'c' after ':', got '}'"),
    ('name "x"', 1, 6, "expected ':' or '{' after field name 'name', got string \"x\""),
    ("a: 1\n}\n", 2, 1, "expected a field name, got '}'"),
    ("a {\n  b: 1\n  7\n}", 3, 3, "expected a field name or '}' to close 'a' (opened at line 1)"),
    ('a: "open\nb: 2', 1, 4, "unterminated string"),
    ("a: 1\n  b: @", 2, 6, "unexpected character '@'"),
    ("a: 1e", 1, 4, "invalid number '1e'"),
    ("a: 12abc", 1, 4, "invalid number '12abc'"),
    ("a: 09", 1, 4, "invalid number '09'"),
    ('x: 1\n  s: "ok\\qno"', 2, 9, "invalid escape sequence '\\\\q'"),
    ("a: [1, 2\nb: 3", 2, 1, "expected ',' or ']' in the list for 'a' opened at line 1"),
    ("a: [1,]", 1, 7, "expected a value for 'a'"),
    ("a: -b", 1, 5, "expected a number after '-', got identifier b"),
    ("a < b: 1 }", 1, 10, "expected a field name or '>' to close 'a'"),
    ("a: 1 :", 1, 6, "expected a field name, got ':'"),
    ('a: "\\ud800"', 1, 4, "not valid UTF-8"),
])
def test_syntax_errors(text, line, column, fragment):
    err = parse_error(text)
    assert fragment in err.message
    assert (err.file, err.line, err.column) == ("t.prototxt", line, column)
    assert f"t.prototxt line {line} column {column}" in str(err)


def test_nesting_limit():
    ok = "a {" * MAX_DEPTH + "}" * MAX_DEPTH
    assert parse_prototxt(ok).get("a") is not None
    err = parse_error("a {" * (MAX_DEPTH + 1) + "}" * (MAX_DEPTH + 1))
    assert "nested deeper than" in err.message
    err = parse_error("a {" * 100000)
    assert "nested deeper than" in err.message and err.column == 3 * MAX_DEPTH + 3


def test_huge_integer_is_a_parse_error():
    assert "invalid number" in parse_error("a: " + "9" * 5000).message
    assert parse_prototxt("a: 1" + "0" * 400 + ".0").get("a") == math.inf


def test_load_prototxt_errors(tmp_path):
    bad = tmp_path / "bad.prototxt"
    bad.write_bytes(b'name: "ok"\nlayer { name: "\xff" }\n')
    with pytest.raises(ParseError) as info:
        load_prototxt(bad)
    assert (info.value.line, info.value.column) == (2, 16)
    assert info.value.file == str(bad) and "0xff" in info.value.message
    with pytest.raises(ParseError, match="cannot read file"):
        load_prototxt(tmp_path / "missing.prototxt")


def test_large_input_parses_in_linear_work():
    layer = ('layer {\n  name: "conv%d"\n  type: "Convolution"\n  bottom: "x" top: "y"\n'
             '  param { lr_mult: 1 decay_mult: 1 }\n  convolution_param { num_output: 64 '
             'kernel_size: 3 pad: 1 weight_filler { type: "xavier" std: 0.01 } }\n}\n')
    text = "".join(layer % i for i in range(20000))
    assert len(text) > 4_000_000
    msg = parse_prototxt(text)
    assert len(msg.getall("layer")) == 20000 and msg.getall("layer")[-1].line == 20000 * 7 - 6
    # twice the layers, twice the calls (a parser rescanning its input would need about four times)
    small, large = ("".join(layer % i for i in range(n)) for n in (1000, 2000))
    ratio = python_calls(lambda: parse_prototxt(large)) / python_calls(lambda: parse_prototxt(small))
    assert 1.8 < ratio < 2.2, ratio


# ------------------------------------------------------------------------------ properties

_NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}", fullmatch=True)
_SCALARS = st.one_of(
    st.integers(min_value=-(2 ** 70), max_value=2 ** 70),
    st.floats(allow_nan=False),
    st.booleans(),
    st.text(max_size=12),
    st.from_regex(r"[A-Z_][A-Z0-9_]{0,6}", fullmatch=True).map(EnumValue),
)


def _messages(children):
    return st.lists(st.tuples(_NAMES, children), max_size=5).map(Message)


_MESSAGES = st.recursive(_messages(_SCALARS), lambda inner: _messages(st.one_of(_SCALARS, inner)),
                         max_leaves=30)


@settings(max_examples=300, deadline=None)
@given(_MESSAGES)
def test_format_parse_round_trip(msg):
    text = format_prototxt(msg)
    back = parse_prototxt(text)
    assert back == msg
    assert format_prototxt(back) == text


_PIECES = st.sampled_from(["a", "b", ":", "{", "}", "<", ">", "[", "]", ",", ";", "-", "1",
                           "0x", "1.5e", '"s"', "'", '"', "\\", "#", "\n", " ", "true", "inf",
                           "\xff", "é", "\x00", ".", "9" * 50])


@settings(max_examples=500, deadline=None)
@given(st.lists(_PIECES, max_size=40).map("".join))
def test_fuzz_only_parse_errors(text):
    try:
        parse_prototxt(text)
    except GraphrtError as exc:
        assert isinstance(exc, ParseError) and exc.line is not None and exc.column is not None
