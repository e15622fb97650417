"""Tests of the binary .caffemodel reader, on the real LeNet weights and on synthetic files."""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from graphrt.ir.errors import GraphrtError, ParseError, WeightError
from graphrt.frontends.caffe.caffemodel import LayerBlobs, read_caffemodel

from bounds import peak_bytes, python_calls

CAFFE = Path(__file__).resolve().parents[2] / "shared" / "models" / "caffe"
LENET = CAFFE / "lenet_iter_10000.caffemodel"


@pytest.fixture(scope="module")
def lenet_bytes() -> bytes:
    if not LENET.exists():
        pytest.skip(f"{LENET} is absent")
    return LENET.read_bytes()


# ------------------------------------------------------------------- a tiny wire-format writer

def varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def key(field: int, wire: int) -> bytes:
    return varint(field << 3 | wire)


def vint(field: int, n: int) -> bytes:
    return key(field, 0) + varint(n)


def ldelim(field: int, payload: bytes | str) -> bytes:
    payload = payload.encode() if isinstance(payload, str) else payload
    return key(field, 2) + varint(len(payload)) + payload


def fixed32(field: int, payload: bytes) -> bytes:
    return key(field, 5) + payload


def fixed64(field: int, payload: bytes) -> bytes:
    return key(field, 1) + payload


UNKNOWN = (vint(900, 2 ** 64 - 1) + fixed64(901, b"\x01" * 8) + ldelim(902, b"\x00\xff")
           + fixed32(903, b"abcd"))


def blob(values, shape=None, legacy=None, packed=True, double=False, packed_dims=True) -> bytes:
    values = np.asarray(values, np.float64).ravel()
    out = UNKNOWN
    if legacy is not None:
        out += b"".join(vint(f, d) for f, d in zip((1, 2, 3, 4), legacy))
    if shape is not None:
        dims = (ldelim(1, b"".join(varint(d) for d in shape)) if packed_dims
                else b"".join(vint(1, d) for d in shape))
        out += ldelim(7, dims + UNKNOWN)
    field, fmt = (8, "<d") if double else (5, "<f")
    if packed:
        out += ldelim(field, b"".join(struct.pack(fmt, v) for v in values))
    else:
        put = fixed64 if double else fixed32
        out += b"".join(put(field, struct.pack(fmt, v)) for v in values)
    return out + ldelim(6, b"diff is ignored")


def layer(name: str, kind: str, *blobs: bytes) -> bytes:
    body = ldelim(1, name) + UNKNOWN + ldelim(2, kind) + b"".join(ldelim(7, b) for b in blobs)
    return ldelim(100, body)


def v1_layer(name: str, kind: int, *blobs: bytes) -> bytes:
    body = ldelim(2, "bottom") + ldelim(4, name) + vint(5, kind) + UNKNOWN
    return ldelim(2, body + b"".join(ldelim(6, b) for b in blobs))


def net(*layers: bytes) -> bytes:
    return ldelim(1, "net") + UNKNOWN + b"".join(layers)


# ---------------------------------------------------------------------------- the real file

def test_lenet_weights(lenet_bytes):
    model = read_caffemodel(LENET)
    assert [(m.name, m.type) for m in model] == [
        ("mnist", "Data"), ("conv1", "Convolution"), ("pool1", "Pooling"),
        ("conv2", "Convolution"), ("pool2", "Pooling"), ("ip1", "InnerProduct"),
        ("relu1", "ReLU"), ("ip2", "InnerProduct"), ("loss", "SoftmaxWithLoss")]
    shapes = {m.name: [b.shape for b in m.blobs] for m in model if m.blobs}
    assert shapes == {"conv1": [(20, 1, 5, 5), (20,)], "conv2": [(50, 20, 5, 5), (50,)],
                      "ip1": [(500, 800), (500,)], "ip2": [(10, 500), (10,)]}
    for m in model:
        for b in m.blobs:
            assert b.dtype == np.float32 and np.isfinite(b).all() and b.flags.writeable
    assert 0 < np.abs(model[1].blobs[0]).max() < 10
    same = read_caffemodel(lenet_bytes)
    assert all(np.array_equal(a, b) for x, y in zip(model, same)
               for a, b in zip(x.blobs, y.blobs))


def test_lenet_is_decoded_without_a_python_loop_over_its_numbers(lenet_bytes):
    # 431,080 floats; a decoder touching each in Python would make at least that many calls
    assert python_calls(lambda: read_caffemodel(lenet_bytes)) < 5_000


def _truncations(data: bytes, count: int = 200) -> list[int]:
    return sorted({int(i) for i in np.linspace(1, len(data) - 1, count)})


def test_every_truncation_raises_parse_error(lenet_bytes):
    full = read_caffemodel(lenet_bytes)
    for cut in _truncations(lenet_bytes):
        try:
            model = read_caffemodel(lenet_bytes[:cut], file="cut.caffemodel")
        except (ParseError, WeightError) as exc:
            assert exc.file == "cut.caffemodel" and "byte offset" in str(exc)
        else:  # a cut exactly between two layers leaves a shorter valid file
            assert [m.name for m in model] == [m.name for m in full[:len(model)]]


def test_truncation_names_the_layer(lenet_bytes):
    with pytest.raises(ParseError, match=r"byte offset \d+ while reading layer 'ip1'") as info:
        read_caffemodel(lenet_bytes[:len(lenet_bytes) // 2], file="half.caffemodel")
    assert info.value.file == "half.caffemodel"


def test_text_file_gets_a_hint():
    path = CAFFE / "lenet.prototxt"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    with pytest.raises(ParseError, match="looks like text"):
        read_caffemodel(path)


# ------------------------------------------------------------------------ synthetic models

def test_packed_unpacked_and_shapes_decode():
    w = np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 7
    data = net(
        layer("a", "Convolution", blob(w, shape=w.shape), blob([1, 2], shape=[2], packed=False)),
        layer("b", "InnerProduct", blob(w, legacy=(1, 2, 3, 4), packed=False, double=True)),
        layer("c", "Scale", blob(w, shape=w.shape, packed_dims=False, double=True),
              blob([5, 6, 7])),
        layer("empty", "ReLU"),
    )
    model = read_caffemodel(data)
    assert [(m.name, m.type, len(m.blobs)) for m in model] == [
        ("a", "Convolution", 2), ("b", "InnerProduct", 1), ("c", "Scale", 2), ("empty", "ReLU", 0)]
    assert np.array_equal(model[0].blobs[0], w) and model[0].blobs[1].tolist() == [1, 2]
    assert model[1].blobs[0].shape == (1, 2, 3, 4) and np.array_equal(model[1].blobs[0].ravel(),
                                                                      w.ravel())
    assert np.array_equal(model[2].blobs[0], w) and model[2].blobs[1].tolist() == [5, 6, 7]
    assert all(b.dtype == np.float32 for m in model for b in m.blobs)
    assert isinstance(model[0], LayerBlobs)
    assert repr(model[0]) == "LayerBlobs(name='a', type='Convolution', blob shapes=[(2, 3, 4), (2,)])"


def test_mixed_packed_and_unpacked_chunks_keep_order():
    body = (ldelim(7, ldelim(1, varint(5))) + fixed32(5, struct.pack("<f", 1))
            + ldelim(5, struct.pack("<2f", 2, 3)) + fixed32(5, struct.pack("<f", 4))
            + fixed32(5, struct.pack("<f", 5)))
    model = read_caffemodel(net(layer("m", "X", body)))
    assert model[0].blobs[0].tolist() == [1, 2, 3, 4, 5]


def test_v1_layers():
    data = net(v1_layer("conv", 4, blob(np.ones((2, 2)), legacy=(1, 1, 2, 2))),
               v1_layer("ip", 14, blob([1.0], shape=[1, 1])), v1_layer("relu", 18),
               v1_layer("sm", 21), v1_layer("odd", 999))
    model = read_caffemodel(data)
    assert [(m.name, m.type) for m in model] == [
        ("conv", "Convolution"), ("ip", "InnerProduct"), ("relu", "ReLU"),
        ("sm", "SoftmaxWithLoss"), ("odd", "999")]
    assert model[0].blobs[0].shape == (1, 1, 2, 2) and model[1].blobs[0].shape == (1, 1)


def test_count_mismatch_is_a_weight_error():
    with pytest.raises(WeightError, match=r"layer 'fc' blob 1: shape \(3, 2\) needs 6 values, "
                                          r"but the file holds 5"):
        read_caffemodel(net(layer("fc", "InnerProduct", blob([1]), blob(range(5), shape=(3, 2)))))
    with pytest.raises(WeightError, match="negative dimension"):
        read_caffemodel(net(layer("fc", "X", blob([], shape=[2 ** 64 - 1]))))
    with pytest.raises(WeightError, match="needs 0 values"):
        read_caffemodel(net(layer("fc", "X", blob([1, 2], legacy=(2,)))))


@pytest.mark.parametrize("data, fragment", [
    (b"", "empty"),
    (net(layer("g", "X")) + key(5, 3), "groups"),
    (net(layer("g", "X")) + key(5, 4), "groups"),
    (net(layer("g", "X")) + key(5, 7), "invalid wire type 7"),
    (net(layer("g", "X", key(5, 6))), "invalid wire type 6 at byte offset"),
    (b"\x08" + b"\xff" * 10 + b"\x01", "varint longer than 10 bytes at byte offset 1"),
    (b"\x08\xff\xff", "truncated varint at byte offset 1"),
    (b"\x0d\x00\x00", "truncated: field 1 needs 4 bytes"),
    (key(0, 0) + b"\x00", "invalid field number 0"),
    (vint(100, 3), "layer #0 has wire type 0, expected 2"),
    (net(layer("p", "X", ldelim(5, b"\x00" * 6))), "packed data of 6 bytes"),
    (net(layer("p", "X", vint(5, 1))), "blob data has wire type 0"),
    (net(layer("p", "X", ldelim(7, ldelim(1, b"\xff")))), "truncated varint"),
    (net(ldelim(100, ldelim(1, b"\xff\xfe"))), "not valid UTF-8"),
    (b"\x89HDF\r\n\x1a\n", "HDF5"),
])
def test_malformed(data, fragment):
    with pytest.raises(ParseError) as info:
        read_caffemodel(data, file="bad.caffemodel")
    assert fragment in str(info.value) and info.value.file == "bad.caffemodel"


def test_error_inside_a_layer_names_it():
    data = net(layer("good", "X", blob([1])), layer("broken", "X", blob([1]) + key(3, 3)))
    with pytest.raises(ParseError, match="while reading layer 'broken'"):
        read_caffemodel(data)


def test_huge_declared_length_fails_fast():
    data = net(layer("a", "X")) + key(100, 2) + varint(2 ** 62) + b"\x0a\x03big"
    with pytest.raises(ParseError, match=r"declares 4611686018427387904 bytes.*layer 'big'"):
        read_caffemodel(data)
    huge_blob = net(layer("b", "X", key(5, 2) + varint(2 ** 63)))
    with pytest.raises(ParseError, match="declares"):
        read_caffemodel(huge_blob)
    for case in (data, huge_blob):  # refused before anything of the declared size is allocated
        assert peak_bytes(lambda: read_caffemodel(case)) < 1 << 20


def test_missing_file_is_a_parse_error(tmp_path):
    with pytest.raises(ParseError, match="cannot read file"):
        read_caffemodel(tmp_path / "nope.caffemodel")


# ------------------------------------------------------------------------------ properties

_BLOBS = st.tuples(
    st.lists(st.integers(0, 4), max_size=4),
    st.booleans(), st.booleans(), st.booleans(), st.booleans(),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_BLOBS, max_size=4), st.booleans())
def test_random_blobs_round_trip(specs, v1):
    rng = np.random.default_rng(0)
    arrays, blobs = [], []
    for dims, packed, double, legacy, packed_dims in specs:
        if legacy:
            dims = (dims + [1, 1, 1, 1])[:4]
        arr = rng.standard_normal(dims).astype(np.float32)
        arrays.append(arr)
        blobs.append(blob(arr, legacy=dims if legacy else None, shape=None if legacy else dims,
                          packed=packed, double=double, packed_dims=packed_dims))
    data = net(v1_layer("l", 4, *blobs) if v1 else layer("l", "Convolution", *blobs))
    (got,) = read_caffemodel(data)
    assert got.type == "Convolution" and len(got.blobs) == len(arrays)
    for a, b in zip(arrays, got.blobs):
        assert a.shape == b.shape and np.array_equal(a, b)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_fuzzed_bytes_raise_only_graphrt_errors(data):
    base = net(layer("a", "Convolution", blob(np.ones((2, 3)), shape=(2, 3)), blob([1, 2])),
               v1_layer("b", 14, blob([3.0], legacy=(1, 1, 1, 1), packed=False)))
    buf = bytearray(base)
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(buf) - 1))
        buf[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(buf)))
    try:
        read_caffemodel(bytes(buf[:cut]))
    except GraphrtError as exc:
        assert isinstance(exc, (ParseError, WeightError))
