"""Fuzzing the parsers: a fixed, seeded few hundred mutations of the real files per format must each
load or raise a GraphrtError in time and memory; plus the bugs fuzzing found, one test each.

The long runs are ``python bench/fuzz.py --cases 10000`` (hypothesis-driven) and
``--atheris`` (coverage-guided); this file is the deterministic CI slice (seeded random driver).
"""
from __future__ import annotations

import io
import random
import zipfile

import numpy as np
import pytest

import graphrt
from tools.fuzz import binary as B
from tools.fuzz import mutators as M
from tools.fuzz import driver as fuzzing
from graphrt import limits
from graphrt.ir.errors import GraphrtError, LimitError, ParseError, WeightError
from graphrt.frontends.caffe import load_caffe
from graphrt.frontends.npz import save_graph

from bounds import peak_bytes

# cases per format: a few hundred, fewer for the slow loaders, to keep this file near 60 s
CASES = {"prototxt": 300, "caffemodel": 300, "mxnet-json": 300, "mxnet-params": 300,
         "keras-json": 200, "keras-archive": 150, "onnx": 300, "npz": 200}
# graphrt's own limits lowered (the same code paths, smaller numbers: faster cases); the long runs of
# bench/fuzz.py use the limits users get
LOWERED = fuzzing.Limits(lowered=True)


def _explain(report) -> str:
    return "\n".join(f"case {f.index}: {f.kind}: {f.error}\n  mutations: {f.description}\n"
                     f"{f.trace}" for f in report.failures[:5])


@pytest.mark.parametrize("name", sorted(CASES))
def test_mutated_files_load_or_raise_graphrt_error(shared, name):
    report = fuzzing.fuzz_random(fuzzing.TARGETS[name], CASES[name], seed=0, limits=LOWERED)
    if report.skipped:
        pytest.skip(report.skipped)
    assert report.cases == CASES[name]
    assert not report.failures, _explain(report)
    assert report.loaded and report.rejected  # the mutations reach past the first check, and fail


def test_cases_are_reproducible_by_index(shared):
    target = fuzzing.TARGETS["caffemodel"]
    seeds = list(target.seeds())
    made = [fuzzing.make_case(target, seeds, M.RandomChooser(random.Random("0/caffemodel/7")))
            for _ in range(2)]
    assert made[0][1] == made[1][1] and made[0][2] == made[1][2]


def test_hypothesis_drives_the_mutations(shared):
    a = fuzzing.fuzz_hypothesis(fuzzing.TARGETS["mxnet-params"], 25, limits=LOWERED, derandomize=True)
    b = fuzzing.fuzz_hypothesis(fuzzing.TARGETS["mxnet-params"], 25, limits=LOWERED, derandomize=True)
    assert a.cases == 25 and not a.failures, _explain(a)
    assert (a.loaded, a.rejected, a.errors) == (b.loaded, b.rejected, b.errors)


def test_failures_are_saved_with_a_reproducer(tmp_path, shared):
    failure = fuzzing.Failure("prototxt", "lenet.prototxt", 12, "lenet.prototxt: delete line",
                              "exception", "IndexError: x", "Traceback ...", b"name: 1", 0.1, 10)
    [path] = fuzzing.save_failures([failure], tmp_path)
    assert path.read_bytes() == b"name: 1" and path.suffix == ".prototxt"
    text = (tmp_path / "prototxt-000012.txt").read_text()
    assert "delete line" in text and "bench/fuzz.py --replay" in text


def test_run_case_reports_other_exceptions_timeouts_and_memory(tmp_path, monkeypatch):
    seed = fuzzing.Seed(tmp_path / "x.prototxt")
    limits_ = fuzzing.Limits(seconds=0.5, peak_bytes=8 << 20, hard_factor=2)

    def load(kind):
        def fake(seed, path):
            if kind == "exception":
                raise IndexError("boom")
            if kind == "timeout":
                while True:
                    pass
            if kind == "memory":
                return np.ones(4 << 20)  # 32 MiB
            raise WeightError("refused")
        return fake

    for kind, want in (("exception", "exception"), ("timeout", "timeout"), ("memory", "memory"),
                       ("graphrt", "rejected")):
        monkeypatch.setattr(fuzzing, "load_case", load(kind))
        assert fuzzing.run_case(seed, b"", tmp_path, limits_)[0] == want


# ---- the bugs fuzzing found ----------------------------------------------------------------

def _lenet_text(shared) -> str:
    return (shared / "models/caffe/lenet.prototxt").read_text()


def test_huge_num_output_is_refused_before_allocating(shared):
    text = _lenet_text(shared).replace("num_output: 500", "num_output: 4000000000")  # < 2**32: caffe.proto says uint32
    with pytest.raises(LimitError, match="ip1.*MAX_PARAM_BYTES"):
        load_caffe(text=text)
    assert peak_bytes(lambda: load_caffe(text=text)) < 16 << 20


@pytest.mark.parametrize("value", ["nan", "inf", "-3", "2.5", "MAX"])
def test_bad_kernel_sizes_are_attr_errors(shared, value):
    text = _lenet_text(shared).replace("kernel_size: 5", f"kernel_size: {value}", 1)
    with pytest.raises(GraphrtError, match="conv1"):
        load_caffe(text=text)


def test_a_value_where_a_message_belongs_is_a_parse_error(shared):
    text = _lenet_text(shared).replace("convolution_param {", "bottom {", 1)
    with pytest.raises(ParseError, match="conv1"):
        load_caffe(text=text)


def test_filler_with_negative_std_is_an_attr_error(shared):
    text = _lenet_text(shared).replace('type: "xavier"', 'type: "gaussian" std: -1', 1)
    with pytest.raises(GraphrtError, match="gaussian filler"):
        load_caffe(text=text)


def test_deeply_nested_json_is_a_parse_error(tmp_path):
    path = tmp_path / "deep-symbol.json"
    path.write_text('{"nodes": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(ParseError):
        graphrt.load(path, input_shape=(1, 28, 28))


def _non_finite(data: bytes, s: int, e: int) -> bytes:
    return data[:s] + np.resize(np.array([np.nan, np.inf], "<f4"), (e - s) // 4).tobytes() + data[e:]


def _biggest_pb_blob(data: bytes):
    return max((f for f in B.pb_fields(data) if f.wire == 2 and not f.is_message),
               key=lambda f: f.payload[1] - f.payload[0])


@pytest.mark.parametrize("fmt", ["caffemodel", "mxnet-params", "keras-archive", "onnx", "npz"])
def test_nan_and_inf_weights_load(shared, tmp_path, fmt):
    """The policy for every format: non-finite weights load (the numerics guard reports them)."""
    c, m, k = shared / "models/caffe", shared / "fixtures/mxnet", shared / "fixtures/keras"
    if fmt == "caffemodel":
        data = (c / "lenet_iter_10000.caffemodel").read_bytes()
        (tmp_path / "w.caffemodel").write_bytes(_non_finite(data, *_biggest_pb_blob(data).payload))
        g = graphrt.load(c / "lenet.prototxt", weights=tmp_path / "w.caffemodel")
    elif fmt == "mxnet-params":
        data = (m / "lenet-0000.params").read_bytes()
        _, at, size = next(r for r in B.params_regions(data) if r[0] == "data")
        (tmp_path / "w.params").write_bytes(_non_finite(data, at, at + int(size)))
        g = graphrt.load(m / "lenet-symbol.json", input_shape=(1, 28, 28),
                         weights=tmp_path / "w.params")
    elif fmt == "keras-archive":
        h5py = pytest.importorskip("h5py")
        with zipfile.ZipFile(k / "seed_ann.keras") as zf:
            members = [(i, zf.read(i)) for i in zf.infolist()]
        i = next(i for i, (info, _) in enumerate(members) if info.filename.endswith(".h5"))
        buf = io.BytesIO(members[i][1])
        with h5py.File(buf, "r+") as h5:
            for name in _datasets(h5py, h5):
                h5[name][...] = np.nan
        members[i] = (members[i][0], buf.getvalue())
        (tmp_path / "nan.keras").write_bytes(B._rezip(members))
        g = graphrt.load(tmp_path / "nan.keras")
    elif fmt == "onnx":
        pytest.importorskip("onnx")
        data = (shared / "fixtures/onnx/torch_lenet.onnx").read_bytes()
        (tmp_path / "nan.onnx").write_bytes(_non_finite(data, *_biggest_pb_blob(data).payload))
        g = graphrt.load(tmp_path / "nan.onnx")
    else:
        g = graphrt.load(c / "lenet.prototxt")
        g.params[next(iter(g.params))][...] = np.inf
        save_graph(g, tmp_path / "g.npz")
        g = graphrt.load(tmp_path / "g.npz")
    assert any((~np.isfinite(v)).any() for v in g.params.values())


def test_npz_member_declaring_a_huge_shape_is_refused(shared, tmp_path):
    g = graphrt.load(shared / "models/caffe/lenet.prototxt")
    save_graph(g, tmp_path / "g.npz")
    with zipfile.ZipFile(tmp_path / "g.npz") as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist()}
    head = b"{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776,), }"
    members["conv1_bias.npy"] = b"\x93NUMPY\x01\x00" + len(head).to_bytes(2, "little") + head
    with zipfile.ZipFile(tmp_path / "bad.npz", "w") as zf:
        for name, blob in members.items():
            zf.writestr(name, blob)
    with pytest.raises(ParseError, match="declares shape"):
        graphrt.load(tmp_path / "bad.npz")


def test_keras_archive_deflate_bomb_is_refused_before_inflating(shared, tmp_path):
    with zipfile.ZipFile(shared / "fixtures/keras/seed_ann.keras") as zf:
        members = [(i, zf.read(i)) for i in zf.infolist()]
    k = next(i for i, (info, _) in enumerate(members) if info.filename == "config.json")
    (tmp_path / "bomb.keras").write_bytes(B._with_bomb(members, k, 64 << 20))
    with fuzzing.graphrt_limits(LOWERED), pytest.raises(LimitError, match="declares"):
        graphrt.load(tmp_path / "bomb.keras")


def test_keras_dataset_declaring_more_than_it_stores_is_refused(shared, tmp_path):
    h5py = pytest.importorskip("h5py")
    with zipfile.ZipFile(shared / "fixtures/keras/seed_ann.keras") as zf:
        members = [(i, zf.read(i)) for i in zf.infolist()]
    k = next(i for i, (info, _) in enumerate(members) if info.filename == "model.weights.h5")
    buf = io.BytesIO(members[k][1])
    with h5py.File(buf, "r+") as h5:
        name = [n for n in _datasets(h5py, h5)][0]
        del h5[name]
        h5.create_dataset(name, shape=(2**31,), dtype="f4", chunks=True)  # nothing written
    members[k] = (members[k][0], buf.getvalue())
    (tmp_path / "huge.keras").write_bytes(B._rezip(members))
    with pytest.raises(ParseError, match="declares shape"):
        graphrt.load(tmp_path / "huge.keras")


def _datasets(h5py, h5):
    out = []
    h5.visititems(lambda n, o: out.append(n) if isinstance(o, h5py.Dataset) else None)
    return out


def test_limits_default_to_generous_values():
    assert limits.MAX_PARAM_BYTES == 4 << 30 and limits.HDF5_SECONDS >= 10
