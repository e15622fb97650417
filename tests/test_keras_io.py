"""Tests for graphrt.frontends.keras.io: .keras archives and to_json() configs."""
from __future__ import annotations

import io
import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from graphrt.ir.errors import GraphrtError, ParseError
from graphrt.frontends.keras.io import KerasArchive, read_keras_archive, read_keras_json

h5py = pytest.importorskip("h5py")

SHARED = Path(__file__).resolve().parents[2] / "shared"
KERAS = SHARED / "fixtures" / "keras"


def fixture(name: str) -> Path:
    path = KERAS / name
    if not path.exists():
        pytest.skip(f"shared fixture {path} is absent")
    return path


def layer_names(config: dict) -> list[str]:
    return [layer["config"]["name"] for layer in config["config"]["layers"]]


# ----------------------------------------------------------------------------- writer helpers

def make_h5(build) -> bytes:
    buf = io.BytesIO()
    with h5py.File(buf, "w") as h5:
        build(h5)
    return buf.getvalue()


def add_vars(h5, path: str, arrays, name: str | None = None) -> None:
    group = h5.require_group(path).require_group("vars")
    if name is not None:
        group.attrs["name"] = name
    for i, arr in enumerate(arrays):
        group.create_dataset(str(i), data=arr)


def make_archive(tmp_path: Path, members: dict[str, bytes], name: str = "m.keras") -> Path:
    path = tmp_path / name
    with zipfile.ZipFile(path, "w") as zf:
        for member, blob in members.items():
            zf.writestr(member, blob)
    return path


CONFIG = {"class_name": "Sequential", "config": {"name": "m", "layers": [
    {"class_name": "Dense", "config": {"name": "first"}},
    {"class_name": "Dense", "config": {"name": "second"}}]}}


# ----------------------------------------------------------------------------- real archives

def test_seed_ann_archive():
    archive = read_keras_archive(fixture("seed_ann.keras"))
    assert isinstance(archive, KerasArchive)
    assert archive.metadata["keras_version"].startswith("3.")
    assert archive.config["class_name"] == "Sequential"
    shapes = {k: [a.shape for a in v] for k, v in archive.weights.items()}
    assert shapes == {"dense": [(20, 64), (64,)], "dense_1": [(64, 64), (64,)],
                      "dense_2": [(64, 10), (10,)]}
    assert set(archive.weights) <= set(layer_names(archive.config))
    for arrays in archive.weights.values():
        assert all(a.dtype == np.float32 and np.isfinite(a).all() for a in arrays)


def test_seed_ann_weights_reproduce_reference_output():
    archive = read_keras_archive(fixture("seed_ann.keras"))
    x = np.load(fixture("seed_ann_input.npy"))
    w = archive.weights
    h = np.tanh(x @ w["dense"][0] + w["dense"][1])
    h = np.tanh(h @ w["dense_1"][0] + w["dense_1"][1])
    logits = h @ w["dense_2"][0] + w["dense_2"][1]
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(e / e.sum(axis=1, keepdims=True),
                               np.load(fixture("seed_ann_output.npy")), rtol=1e-4, atol=1e-6)


def test_seed_cnn_32_archive():
    archive = read_keras_archive(fixture("seed_cnn_32.keras"))
    shapes = {k: [a.shape for a in v] for k, v in archive.weights.items()}
    assert shapes == {
        "conv2d_4": [(3, 3, 3, 32), (32,)], "conv2d_5": [(3, 3, 32, 32), (32,)],
        "conv2d_6": [(3, 3, 32, 64), (64,)], "conv2d_7": [(3, 3, 64, 64), (64,)],
        "dense_5": [(1600, 256), (256,)], "dense_6": [(256, 10), (10,)]}
    names = layer_names(archive.config)
    assert list(archive.weights) == [n for n in names if n in archive.weights]


@pytest.mark.parametrize("name", ["seed_ann.json", "seed_cnn_32.json", "seed_cnn_100.json"])
def test_real_json_configs(name):
    path = fixture(name)
    config = read_keras_json(path)
    assert config["class_name"] == "Sequential"
    assert config == read_keras_json(path.read_text())
    assert layer_names(config)[0].startswith("input_layer")


def test_json_matches_archive_config():
    archive = read_keras_archive(fixture("seed_cnn_32.keras"))
    assert layer_names(read_keras_json(fixture("seed_cnn_32.json"))) == \
        layer_names(archive.config)


# ----------------------------------------------------------------------------- corruption

def test_every_truncation_of_real_archive_is_parse_error(tmp_path):
    data = fixture("seed_ann.keras").read_bytes()
    cuts = sorted(set(np.linspace(0, len(data) - 1, 120, dtype=int)) | {len(data) - 22})
    for cut in cuts:
        path = tmp_path / "cut.keras"
        path.write_bytes(data[:cut])
        with pytest.raises(ParseError, match="cut.keras"):
            read_keras_archive(path)


@given(st.data())
@settings(max_examples=40, deadline=None)
def test_corrupted_archive_bytes_only_raise_graphrt_errors(tmp_path_factory, data):
    blob = bytearray(fixture("seed_ann.keras").read_bytes())
    for _ in range(data.draw(st.integers(1, 8))):
        blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    path = tmp_path_factory.mktemp("c") / "c.keras"
    path.write_bytes(bytes(blob))
    try:
        read_keras_archive(path)
    except GraphrtError:
        pass


def test_corrupt_h5_member_names_member(tmp_path):
    good = zipfile.ZipFile(fixture("seed_ann.keras"))
    h5 = bytearray(good.read("model.weights.h5"))
    members = {n: good.read(n) for n in good.namelist()}
    for blob in (bytes(h5[:len(h5) // 2]), b"garbage" * 100, bytes(h5[:600]) + b"\0" * 5000):
        members["model.weights.h5"] = blob
        with pytest.raises(ParseError, match=r"m\.keras:model\.weights\.h5"):
            read_keras_archive(make_archive(tmp_path, members))


@pytest.mark.parametrize("drop", ["config.json", "model.weights.h5"])
def test_missing_member(tmp_path, drop):
    members = {"config.json": json.dumps(CONFIG).encode(),
               "model.weights.h5": make_h5(lambda h5: None)}
    del members[drop]
    with pytest.raises(ParseError, match=f"m.keras.*{drop}"):
        read_keras_archive(make_archive(tmp_path, members))


def test_bad_config_json_in_archive(tmp_path):
    text = json.dumps(CONFIG, indent=1)
    members = {"config.json": text[:40].encode(), "model.weights.h5": make_h5(lambda h5: None)}
    with pytest.raises(ParseError, match=r"m\.keras:config\.json line \d+ column \d+"):
        read_keras_archive(make_archive(tmp_path, members))
    members["config.json"] = b'{"layers": []}'
    with pytest.raises(ParseError, match="class_name"):
        read_keras_archive(make_archive(tmp_path, members))
    members["config.json"] = b"\xff\xfe"
    with pytest.raises(ParseError, match="config.json"):
        read_keras_archive(make_archive(tmp_path, members))


def test_not_a_zip_and_missing_file(tmp_path):
    with pytest.raises(ParseError, match="nope.keras"):
        read_keras_archive(tmp_path / "nope.keras")
    path = tmp_path / "plain.keras"
    path.write_text("hello")
    with pytest.raises(ParseError, match="plain.keras"):
        read_keras_archive(path)


def test_missing_h5py_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(GraphrtError, match="pip install h5py"):
        read_keras_archive(fixture("seed_ann.keras"))


# ----------------------------------------------------------------------------- synthetic layouts

def test_nested_layout_numeric_var_order_and_config_order(tmp_path):
    many = [np.full((2,), i, np.float32) for i in range(12)]

    def build(h5):
        add_vars(h5, "layers/second", [np.ones((3,), np.float64)], name="second")
        add_vars(h5, "layers/functional/layers/dense", many, name="first")
        add_vars(h5, "layers/unnamed_thing", [np.zeros((1,), np.int32)])
        add_vars(h5, "optimizer", [np.zeros(1)], name="adam")
        add_vars(h5, "layers/activation", [], name="act")
        h5.require_group("vars").attrs["name"] = "m"

    members = {"config.json": json.dumps(CONFIG).encode(), "model.weights.h5": make_h5(build)}
    archive = read_keras_archive(make_archive(tmp_path, members))
    assert list(archive.weights) == ["first", "second", "unnamed_thing"]
    assert [int(a[0]) for a in archive.weights["first"]] == list(range(12))
    assert archive.weights["second"][0].dtype == np.float64
    assert archive.metadata is None


def test_duplicate_layer_names_and_string_datasets(tmp_path):
    def dup(h5):
        add_vars(h5, "layers/a", [np.ones(1)], name="x")
        add_vars(h5, "layers/b", [np.ones(1)], name="x")

    def strings(h5):
        h5.require_group("layers/a/vars").create_dataset("0", data=np.array([b"hi"]))

    for build, match in ((dup, "'x'.*both"), (strings, "non-numeric")):
        members = {"config.json": json.dumps(CONFIG).encode(), "model.weights.h5": make_h5(build)}
        with pytest.raises(ParseError, match=match):
            read_keras_archive(make_archive(tmp_path, members))


# ----------------------------------------------------------------------------- to_json configs

def test_read_keras_json_errors(tmp_path):
    text = fixture("seed_ann.json").read_text()
    with pytest.raises(ParseError) as info:
        read_keras_json(text[:len(text) // 2], file="ann.json")
    assert info.value.line == 1 and info.value.column > 1 and "ann.json" in str(info.value)
    for bad in ('{"config": {}}', '{"class_name": "Sequential"}', "[1]",
                '{"class_name": 3, "config": {}}'):
        with pytest.raises(ParseError, match="class_name"):
            read_keras_json(bad)
    with pytest.raises(ParseError, match="missing.json"):
        read_keras_json(tmp_path / "missing.json")


@given(st.text(max_size=60))
@settings(max_examples=150, deadline=None)
def test_read_keras_json_arbitrary_text(text):
    try:
        read_keras_json("{" + text)
    except ParseError:
        pass
