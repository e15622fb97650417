"""Tests for graphrt.frontends.mxnet.io: .params lists, -symbol.json graphs, attribute strings."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from graphrt.ir.errors import GraphrtError, ParseError, UnsupportedError
from graphrt.frontends.mxnet.io import (SymbolGraph, SymbolNode, parse_attr, read_params,
                                        read_symbol_json)

from bounds import peak_bytes

SHARED = Path(__file__).resolve().parents[2] / "shared"
MXNET = SHARED / "fixtures" / "mxnet"
LENET_PARAMS = MXNET / "lenet-0000.params"
LENET_SYMBOL = MXNET / "lenet-symbol.json"
ALEXNET_SYMBOL = MXNET / "seed_alexnet-symbol.json"

FLAGS = {np.dtype("float32"): 0, np.dtype("float64"): 1, np.dtype("float16"): 2,
         np.dtype("uint8"): 3, np.dtype("int32"): 4, np.dtype("int8"): 5, np.dtype("int64"): 6}


def fixture(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared fixture {path} is absent")
    return path


# ----------------------------------------------------------------------------- writer helper

def encode_array(arr: np.ndarray, version: str = "v2") -> bytes:
    """One NDArray the way MXNet 1.x's NDArray::Save writes it (V2), or V1 / legacy."""
    arr = np.asarray(arr, order="C")  # (ascontiguousarray would make scalars 1-D)
    if version == "v2":
        head = struct.pack("<Ii", 0xF993FAC9, 0)
        head += struct.pack(f"<I{arr.ndim}q", arr.ndim, *arr.shape)
    elif version == "v3":
        head = struct.pack("<Ii", 0xF993FACA, 0)
        head += struct.pack(f"<i{arr.ndim}q", arr.ndim, *arr.shape)
    elif version == "v1":
        head = struct.pack("<I", 0xF993FAC8) + struct.pack(f"<I{arr.ndim}q", arr.ndim, *arr.shape)
    else:
        head = struct.pack(f"<I{arr.ndim}I", arr.ndim, *arr.shape)
    data = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
    return head + struct.pack("<iii", 1, 0, FLAGS[arr.dtype]) + data


def write_params(named: dict[str, np.ndarray], version: str = "v2", names: bool = True) -> bytes:
    out = [struct.pack("<QQQ", 0x112, 0, len(named))]
    out += [encode_array(a, version) for a in named.values()]
    keys = list(named) if names else []
    out.append(struct.pack("<Q", len(keys)))
    for key in keys:
        raw = key.encode("utf-8")
        out.append(struct.pack("<Q", len(raw)) + raw)
    return b"".join(out)


# ----------------------------------------------------------------------------- real files

EXPECTED_LENET = {
    "arg:conv1_weight": (20, 1, 5, 5), "arg:conv1_bias": (20,),
    "arg:conv2_weight": (50, 20, 5, 5), "arg:conv2_bias": (50,),
    "arg:fc1_weight": (500, 800), "arg:fc1_bias": (500,),
    "arg:fc2_weight": (10, 500), "arg:fc2_bias": (10,),
}


def test_real_lenet_params_decode():
    params = read_params(fixture(LENET_PARAMS))
    assert {k: v.shape for k, v in params.items()} == EXPECTED_LENET
    assert list(params) == list(EXPECTED_LENET)
    for arr in params.values():
        assert arr.dtype == np.float32 and np.isfinite(arr).all()
    assert np.abs(params["arg:conv1_weight"]).max() > 0


def test_real_params_from_bytes_equal_path():
    data = fixture(LENET_PARAMS).read_bytes()
    a, b = read_params(data, file="x.params"), read_params(LENET_PARAMS)
    assert all(np.array_equal(a[k], b[k]) for k in b)


def test_real_params_match_symbol():
    params = read_params(fixture(LENET_PARAMS))
    graph = read_symbol_json(fixture(LENET_SYMBOL))
    by_name = {n.name: n for n in graph.nodes}
    for name, arr in params.items():
        node = by_name[name.split(":", 1)[1]]
        assert node.op == "null"
        if "num_filter" in node.attrs:
            assert arr.shape[0] == parse_attr(node.attrs["num_filter"], int)
            if name.endswith("weight"):
                assert arr.shape[2:] == parse_attr(node.attrs["kernel"], tuple)
        else:
            assert arr.shape[0] == parse_attr(node.attrs["num_hidden"], int)
    for index in graph.arg_nodes:
        node = graph.nodes[index]
        assert node.name in ("data", "softmax_label") or f"arg:{node.name}" in params


def test_every_truncation_of_real_file_is_parse_error():
    data = fixture(LENET_PARAMS).read_bytes()
    offsets = sorted(set(range(0, 200)) | set(np.linspace(0, len(data) - 1, 200, dtype=int)))
    for cut in offsets:
        with pytest.raises(ParseError) as info:
            read_params(data[:cut], file="lenet.params")
        assert "lenet.params" in str(info.value) and "offset" in str(info.value)


def test_bad_magic_names_file_and_magic():
    data = bytearray(fixture(LENET_PARAMS).read_bytes())
    data[0:8] = struct.pack("<Q", 0xDEADBEEF)
    with pytest.raises(ParseError, match=r"lenet\.params.*0xdeadbeef"):
        read_params(bytes(data), file="lenet.params")


def test_missing_file_is_parse_error(tmp_path):
    with pytest.raises(ParseError, match="nope.params"):
        read_params(tmp_path / "nope.params")


# ----------------------------------------------------------------------------- synthetic files

def random_array(rng, dtype, shape) -> np.ndarray:
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return (rng.standard_normal(shape) * 50).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)


def _sample_arrays(rng) -> dict[str, np.ndarray]:
    out = {}
    specs = [("float32", (2, 3)), ("float64", (4,)), ("float16", (1, 2, 3)), ("uint8", (5,)),
             ("int32", (2, 2, 2, 2)), ("int8", (3, 1)), ("int64", (7,)), ("float32", (0, 3))]
    for i, (dtype, shape) in enumerate(specs):
        out[f"arg:p{i}" if i % 2 else f"aux:p{i}"] = random_array(rng, dtype, shape)
    return out


@pytest.mark.parametrize("version", ["v2", "v3", "v1", "legacy"])
def test_synthetic_round_trip(version):
    arrays = _sample_arrays(np.random.default_rng(0))
    back = read_params(write_params(arrays, version))
    assert list(back) == list(arrays)
    for key, arr in arrays.items():
        assert back[key].dtype == arr.dtype and back[key].shape == arr.shape
        assert np.array_equal(back[key], arr)


def test_v3_scalar_and_none_arrays():
    scalar = read_params(write_params({"s": np.array(2.5, "f4")}, "v3"))["s"]
    assert scalar.shape == () and scalar == 2.5
    none_v3 = struct.pack("<Iii", 0xF993FACA, 0, -1)
    none_v2 = struct.pack("<IiI", 0xF993FAC9, 0, 0)
    blob = struct.pack("<QQQ", 0x112, 0, 2) + none_v3 + none_v2 + struct.pack("<Q", 0)
    assert [a.shape for a in read_params(blob).values()] == [(0,), (0,)]


def test_unnamed_list_gets_index_keys():
    back = read_params(write_params({"a": np.ones(2, "f4"), "b": np.zeros(3, "f4")}, names=False))
    assert list(back) == ["0", "1"]


@given(st.lists(st.tuples(st.sampled_from(sorted(FLAGS, key=str)),
                          st.lists(st.integers(0, 4), min_size=1, max_size=4)), max_size=5))
@settings(max_examples=60, deadline=None)
def test_round_trip_property(specs):
    rng = np.random.default_rng(1)
    arrays = {f"arg:x{i}": random_array(rng, dt, shape)
              for i, (dt, shape) in enumerate(specs)}
    back = read_params(write_params(arrays))
    assert all(np.array_equal(back[k], v) and back[k].dtype == v.dtype for k, v in arrays.items())


def test_huge_declared_sizes_rejected_fast():
    base = struct.pack("<QQ", 0x112, 0)
    head = struct.pack("<Ii", 0xF993FAC9, 0)
    cases = [
        base + struct.pack("<Q", 2**62),                                            # array count
        base + struct.pack("<Q", 1) + head + struct.pack("<I2q", 2, 2**31, 2**31)
        + struct.pack("<iii", 1, 0, 0) + b"\0" * 16,                                 # data size
        base + struct.pack("<Q", 1) + head + struct.pack("<I2q", 2, 2**62, 2**62)
        + struct.pack("<iii", 1, 0, 1),                                              # overflow
        base + struct.pack("<QQ", 0, 1) + struct.pack("<Q", 2**63),                  # name length
        base + struct.pack("<QQ", 0, 2**60),                                         # name count
        base + struct.pack("<Q", 1) + head + struct.pack("<I", 2**31),               # ndim
    ]
    for data in cases:
        with pytest.raises(ParseError):
            read_params(data, file="huge.params")
        assert peak_bytes(lambda: read_params(data, file="huge.params")) < 1 << 20  # before allocating


def test_unsupported_storage_and_type_flag():
    sparse = struct.pack("<QQQ", 0x112, 0, 1) + struct.pack("<Ii", 0xF993FAC9, 2) + b"\0" * 64
    with pytest.raises(UnsupportedError, match="csr"):
        read_params(sparse)
    arr = bytearray(write_params({"a": np.ones(2, "f4")}))
    flag_at = 24 + 4 + 4 + 4 + 8 + 8
    arr[flag_at:flag_at + 4] = struct.pack("<i", 99)
    with pytest.raises(UnsupportedError, match="type flag 99"):
        read_params(bytes(arr))


def test_name_count_mismatch_duplicates_and_trailing_bytes():
    arrays = {"a": np.ones(2, "f4"), "b": np.ones(1, "f4")}
    data = write_params(arrays)
    with pytest.raises(ParseError, match="trailing"):
        read_params(data + b"\0")
    dup = data.replace(b"\x01\x00\x00\x00\x00\x00\x00\x00b", b"\x01\x00\x00\x00\x00\x00\x00\x00a")
    with pytest.raises(ParseError, match="duplicate"):
        read_params(dup)
    one_name = struct.pack("<QQQ", 0x112, 0, 1) + encode_array(np.ones(1, "f4")) + \
        struct.pack("<QQ", 2, 1) + b"a" + struct.pack("<Q", 1) + b"b"
    with pytest.raises(ParseError, match="1 arrays but 2 names"):
        read_params(one_name)


@given(st.binary(max_size=200))
@settings(max_examples=300, deadline=None)
def test_random_bytes_only_raise_graphrt_errors(blob):
    for data in (blob, struct.pack("<QQ", 0x112, 0) + blob):
        try:
            read_params(data)
        except GraphrtError:
            pass


@given(st.data())
@settings(max_examples=150, deadline=None)
def test_corrupted_synthetic_only_raise_graphrt_errors(data):
    blob = bytearray(write_params(_sample_arrays(np.random.default_rng(2))))
    for _ in range(data.draw(st.integers(1, 4))):
        blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    try:
        read_params(bytes(blob))
    except GraphrtError:
        pass


# ----------------------------------------------------------------------------- symbol json

def test_lenet_symbol_parses():
    graph = read_symbol_json(fixture(LENET_SYMBOL))
    assert isinstance(graph, SymbolGraph) and len(graph.nodes) == 21
    assert graph.heads == ((20, 0),) and graph.mxnet_version == 10901
    conv1 = graph.nodes[3]
    assert conv1 == SymbolNode("Convolution", "conv1", {"kernel": "(5, 5)", "num_filter": "20"},
                               ((0, 0), (1, 0), (2, 0)))
    assert graph.nodes[-1].op == "SoftmaxOutput"
    hash(conv1)  # nodes are frozen and hashable


def test_alexnet_symbol_parses():
    graph = read_symbol_json(fixture(ALEXNET_SYMBOL))
    ops = {n.op for n in graph.nodes}
    assert {"Convolution", "LRN", "Pooling", "FullyConnected", "Dropout"} <= ops
    conv0 = next(n for n in graph.nodes if n.op == "Convolution")
    assert conv0.attrs["kernel"] == "(11, 11)"
    assert parse_attr(conv0.attrs["kernel"], tuple) == (11, 11)
    assert parse_attr(conv0.attrs["stride"], "tuple") == (4, 4)
    lrn = next(n for n in graph.nodes if n.op == "LRN")
    assert parse_attr(lrn.attrs["alpha"], float) == pytest.approx(1e-4)
    assert parse_attr(lrn.attrs["nsize"], int) == 5
    for node in graph.nodes:
        assert all(src < len(graph.nodes) for src, _ in node.inputs)


def test_symbol_text_and_legacy_attr_keys():
    text = json.dumps({"nodes": [{"op": "null", "name": "x", "inputs": []},
                                 {"op": "Activation", "name": "a", "param": {"act_type": "relu"},
                                  "inputs": [[0, 0]]},
                                 {"op": "Flatten", "name": "f", "attr": {"k": "v"},
                                  "inputs": [[1, 0, 0]]}],
                       "heads": [[2, 0, 0]]})
    graph = read_symbol_json(text)
    assert graph.nodes[1].attrs == {"act_type": "relu"} and graph.nodes[2].attrs == {"k": "v"}
    assert graph.arg_nodes == (0,) and graph.mxnet_version is None


def test_truncated_symbol_json_gives_line_and_column():
    text = fixture(LENET_SYMBOL).read_text()
    for cut in range(1, len(text) - 1, 97):
        with pytest.raises(ParseError) as info:
            read_symbol_json(text[:cut], file="lenet-symbol.json")
        err = info.value
        if err.line is not None:
            assert err.column is not None and "lenet-symbol.json line" in str(err)
    with pytest.raises(ParseError) as info:
        read_symbol_json(text[:len(text) // 2], file="lenet-symbol.json")
    assert info.value.line > 1 and info.value.column >= 1


@pytest.mark.parametrize("doc, match", [
    ({"nodes": [{"op": "null", "name": "x", "inputs": []},
                {"op": "relu", "name": "r", "inputs": [[5, 0, 0]]}], "heads": [[1, 0, 0]]},
     "node 'r'.*out of range"),
    ({"nodes": [{"op": "null", "inputs": []}], "heads": [[0, 0, 0]]}, "node 0.*name"),
    ({"nodes": [{"name": "x", "inputs": []}], "heads": [[0, 0, 0]]}, "node 'x'.*'op'"),
    ({"nodes": [{"op": "null", "name": "x", "inputs": []}]}, "heads"),
    ({"nodes": [{"op": "null", "name": "x", "inputs": []}], "heads": [[3, 0, 0]]}, "heads"),
    ({"nodes": [{"op": "null", "name": "x", "attrs": {"k": 3}, "inputs": []}],
      "heads": [[0, 0, 0]]}, "node 'x'.*attrs"),
    ({"nodes": [{"op": "r", "name": "x", "inputs": [["0", 0, 0]]}], "heads": [[0, 0, 0]]},
     "node 'x'"),
    ({"nodes": "nope", "heads": []}, "nodes"),
    ([1, 2], "nodes"),
])
def test_structural_errors_name_the_node(doc, match):
    with pytest.raises(ParseError, match=match):
        read_symbol_json(json.dumps(doc), file="bad.json")


@given(st.text(max_size=80))
@settings(max_examples=200, deadline=None)
def test_arbitrary_text_only_raises_parse_error(text):
    try:
        read_symbol_json("{" + text)
    except ParseError:
        pass


def test_deep_nesting_and_bad_utf8(tmp_path):
    with pytest.raises(ParseError):
        read_symbol_json("[" * 100000)
    bad = tmp_path / "bad-symbol.json"
    bad.write_bytes(b'{"nodes": "\xff"}')
    with pytest.raises(ParseError, match="bad-symbol.json"):
        read_symbol_json(bad)


# ----------------------------------------------------------------------------- parse_attr

@pytest.mark.parametrize("text, kind, expected", [
    ("(3, 3)", tuple, (3, 3)), ("(3,)", tuple, (3,)), ("[2,2]", tuple, (2, 2)), ("()", tuple, ()),
    ("5", tuple, (5,)), ("(3L, 4L)", tuple, (3, 4)), ("(None, 2)", tuple, (None, 2)),
    ("True", bool, True), ("1", bool, True), ("false", bool, False), ("0", "bool", False),
    ("-7", int, -7), ("0.75", float, 0.75), ("1e-4", float, 1e-4), ("None", int, None),
    ("None", tuple, None), ("max", str, "max"), ("(0.5, 1)", "float_tuple", (0.5, 1.0)),
    ("(11, 11)", "auto", (11, 11)), ("20", "auto", 20), ("0.5", "auto", 0.5),
    ("relu", "auto", "relu"), ("False", "auto", False), ("None", "auto", None),
])
def test_parse_attr_examples(text, kind, expected):
    assert parse_attr(text, kind) == expected


@pytest.mark.parametrize("text, kind", [
    ("(3, 3", tuple), ("(3,,3)", tuple), ("(a, 3)", tuple), ("((3))", tuple), ("(,)", tuple),
    ("yes", bool), ("3.5", int), ("1_000", int), ("", int), ("abc", float), ("1_0.5", float),
    ("2", bool),
])
def test_parse_attr_rejects_malformed(text, kind):
    with pytest.raises(ParseError, match="'kernel'"):
        parse_attr(text, kind, name="kernel")


def mxnet_tuple(values, style):
    """Format a tuple the ways MXNet / Python print shapes."""
    if style == "py":
        return repr(tuple(values))
    if style == "list":
        return "[" + ",".join(map(str, values)) + "]"
    return "(" + ",".join(map(str, values)) + ")"


@given(st.lists(st.integers(-2**40, 2**40), max_size=6), st.sampled_from(["py", "list", "dmlc"]))
def test_parse_attr_tuple_round_trip(values, style):
    assert parse_attr(mxnet_tuple(values, style), tuple) == tuple(values)


@given(st.integers())
def test_parse_attr_int_round_trip(value):
    assert parse_attr(str(value), int) == value
    assert parse_attr(str(value), "auto") == value


@given(st.booleans(), st.sampled_from([str, lambda b: str(b).lower(), lambda b: str(int(b))]))
def test_parse_attr_bool_round_trip(value, fmt):
    assert parse_attr(fmt(value), bool) is value


@given(st.floats(allow_nan=False))
def test_parse_attr_float_round_trip(value):
    assert parse_attr(repr(value), float) == value


@given(st.text(max_size=30), st.sampled_from(["int", "float", "bool", "str", "tuple",
                                                 "float_tuple", "auto"]))
def test_parse_attr_never_raises_other_errors(text, kind):
    try:
        parse_attr(text, kind, name="a")
    except ParseError:
        pass
