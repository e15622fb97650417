"""Hostile model files: each class of attack crafted here (tests/hostile_files.py) and loaded in a
sandboxed subprocess with an address-space limit and a kill timeout. Every one must end in a
GraphrtError, with bounded memory, without opening any file outside the model (a Python audit hook
on ``open``, and bait FIFOs for the opens native code makes).

The limits are the defaults users get unless a case says otherwise; a case that lowers one does so
to keep the crafted file and the test small, on the same code path.
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

import hostile_files as H

pytest.importorskip("h5py")
needs_shared = pytest.mark.skipif(not H.KERAS_SEED.exists(), reason="needs ../shared")
MIB = 1 << 20
LOWERED = {"MAX_PARAM_BYTES": 64 * MIB, "MAX_DECOMPRESSED_BYTES": 64 * MIB}


@pytest.fixture
def world(tmp_path):
    """``model/`` for the file under test; ``outside/`` holds what it must never read."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.bin").write_bytes(b"SECRET!!" * 640)
    H.secret_h5(outside / "secret.h5")
    os.mkfifo(outside / "bait.fifo")
    os.mkfifo(outside / "bait.h5")
    return tmp_path


def touched(result: dict, world: Path) -> list[str]:
    """Files outside the model the load opened (audit hook) or that native code opened (bait)."""
    outside = str(world / "outside")
    forbidden = ("/proc/self/environ", "/etc/passwd")
    return [p for p in result["opened"] if p.startswith(outside) or p in forbidden] + result["baited"]


def assert_refused(result: dict, world: Path, *, grew_mb: float = 200, kinds=None) -> None:
    assert result["outcome"] == "GraphrtError", result
    assert kinds is None or result["type"] in kinds, result
    assert not touched(result, world), result
    assert result["grew_mb"] < grew_mb, result


# ---- a model file can read only itself ---------------------------------------------------------

def _targets(world):
    out = world / "outside"
    return {"file": out / "secret.bin", "h5": out / "secret.h5", "fifo": out / "bait.fifo",
            "fifo-h5": out / "bait.h5", "environ": "/proc/self/environ"}


@needs_shared
@pytest.mark.parametrize("attack, target", [
    ("external_storage", "file"), ("external_storage", "fifo"), ("external_storage", "environ"),
    ("external_link", "h5"), ("external_link", "fifo-h5"),
    ("virtual_dataset", "h5"), ("virtual_dataset", "fifo-h5")])
def test_keras_weights_naming_other_files_are_refused_unread(world, attack, target):
    path = H.keras_with_weights(world / "model", getattr(H, attack)(_targets(world)[target]))
    fifos = [world / "outside/bait.fifo", world / "outside/bait.h5"]
    result = H.run_sandboxed(path, fifos=fifos)
    assert_refused(result, world, kinds={"ParseError"})
    assert "may read only itself" in result["message"], result


@needs_shared
def test_keras_soft_link_cycle_is_refused(world):
    result = H.run_sandboxed(H.keras_with_weights(world / "model", H.soft_link_cycle))
    assert_refused(result, world, kinds={"ParseError"})


@needs_shared
def test_keras_hard_link_dag_is_refused_at_once(world):
    """2**40 paths through 41 groups: a walk that follows every path never ends (it used to run
    into the 60 s HDF5 time limit); each object is visited once."""
    result = H.run_sandboxed(H.keras_with_weights(world / "model", H.hard_link_dag()))
    assert_refused(result, world)
    assert "reached twice" in result["message"]


def test_onnx_external_data_outside_the_folder_is_refused_unread(world):
    pytest.importorskip("onnx")
    for location in ("../outside/secret.bin", str(world / "outside/secret.bin"), "/etc/passwd"):
        path = H.onnx_external_data(world / "model/m.onnx", location)
        assert_refused(H.run_sandboxed(path), world)


def test_onnx_external_data_inside_the_folder_loads(world):
    pytest.importorskip("onnx")
    path = H.onnx_external_data(world / "model/m.onnx", "weights.bin")
    (world / "model/weights.bin").write_bytes(np.arange(4, dtype=np.float32).tobytes())
    result = H.run_sandboxed(path, "import sys; print(graphrt.load(path).params)")
    assert result["outcome"] == "loaded" and not touched(result, world), result


def test_caffe_data_layer_source_is_not_opened_by_load(world):
    (world / "outside/train_lmdb").mkdir()
    (world / "outside/list.txt").write_text("a.png 0\n")
    text = f"""name: "data"
layer {{ name: "mnist" type: "Data" top: "data" top: "label"
  data_param {{ source: "{world}/outside/train_lmdb" backend: LMDB batch_size: 4 }} }}
layer {{ name: "files" type: "ImageData" top: "image" top: "image_label"
  image_data_param {{ source: "{world}/outside/list.txt" batch_size: 4 }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param {{ num_output: 2 }} }}
"""
    (world / "model").mkdir()
    (world / "model/net.prototxt").write_text(text)
    result = H.run_sandboxed(world / "model/net.prototxt",
                             "graphrt.load(path, input_shape=(1, 8, 8))")
    assert result["outcome"] == "loaded" and not touched(result, world), result


# ---- bounded memory and time ---------------------------------------------------------------------

def test_onnx_loop_over_constants_is_not_run_at_load(world):
    pytest.importorskip("onnx")
    result = H.run_sandboxed(H.onnx_loop(world / "model/loop.onnx"))
    assert_refused(result, world, kinds={"UnsupportedError"})
    assert (world / "model/loop.onnx").stat().st_size < 1000


def test_onnx_constant_of_shape_is_bounded_before_allocating(world):
    pytest.importorskip("onnx")
    result = H.run_sandboxed(H.onnx_constant_of_shape(world / "model/cos.onnx", 1 << 29))
    assert_refused(result, world, kinds={"LimitError"})
    assert "MAX_FOLDED_BYTES" in result["message"]


@pytest.mark.parametrize("op", ["Range", "Expand", "Tile"])
def test_onnx_value_sized_folds_are_bounded_before_allocating(world, op):
    pytest.importorskip("onnx")
    result = H.run_sandboxed(H.onnx_value_sized(world / f"model/{op}.onnx", op))
    assert_refused(result, world, kinds={"LimitError"})


@needs_shared
def test_keras_compressed_dataset_never_written_is_refused(world):
    result = H.run_sandboxed(H.keras_with_weights(world / "model", H.unwritten_compressed()))
    assert_refused(result, world, kinds={"ParseError"})
    assert "chunks" in result["message"]


@needs_shared
def test_keras_datasets_are_counted_together_against_the_budget(world):
    """Three 40 MiB variables under a 64 MiB budget: each fits, together they do not."""
    path = H.keras_with_weights(world / "model", H.compressed_zeros(3, 10 * MIB // 4 * 4))
    assert path.stat().st_size < 2 * MIB
    result = H.run_sandboxed(path, limits=LOWERED)
    assert_refused(result, world, grew_mb=100, kinds={"LimitError"})
    assert "MAX_PARAM_BYTES" in result["message"]


@needs_shared
def test_keras_weights_member_is_bounded_by_the_decompressed_budget(world):
    """A member declaring more than the budget is refused before it is inflated (it used to be
    allowed twice the parameter budget)."""
    path = H.padded_weights_member(world / "model", 100 * MIB)
    assert path.stat().st_size < 2 * MIB
    result = H.run_sandboxed(path, limits=LOWERED)
    assert_refused(result, world, grew_mb=50, kinds={"LimitError"})
    assert "MAX_DECOMPRESSED_BYTES" in result["message"]


def test_caffe_fillers_allocate_what_the_budget_counts(world):
    """A 128 MiB float32 weight is filled in float32: no float64 array on the way (that was 3x)."""
    (world / "model").mkdir()
    (world / "model/ip.prototxt").write_text(
        'name: "ip" input: "data" input_shape { dim: 1 dim: 4096 }\n'
        'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"\n'
        '  inner_product_param { num_output: 8192 weight_filler { type: "gaussian" std: 0.01 } } }\n')
    result = H.run_sandboxed(world / "model/ip.prototxt")
    assert result["outcome"] == "loaded", result
    assert result["grew_mb"] < 1.5 * 128, result


def _keras_json(world, units: int) -> Path:
    import json

    doc = json.loads((H.SHARED / "fixtures/keras/seed_ann.json").read_text())
    dense = next(layer for layer in doc["config"]["layers"] if layer["class_name"] == "Dense")
    dense["config"]["units"] = units
    path = world / "model/big.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def _mxnet_json(world, hidden: int) -> Path:
    text = (H.SHARED / "fixtures/mxnet/lenet-symbol.json").read_text()
    path = world / "model/big-symbol.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text.replace('"num_hidden": "500"', f'"num_hidden": "{hidden}"'))
    return path


def _npz(world, elements: int) -> Path:
    header = ("{'descr': '<f4', 'fortran_order': False, 'shape': (%d,), }" % elements).encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    path = world / "model/big.npz"
    path.parent.mkdir(exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("w.npy", "w", force_zip64=True) as out:
            out.write(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header)
            zeros = bytes(4 * MIB)
            for start in range(0, elements * 4, len(zeros)):
                out.write(zeros[:elements * 4 - start])
    return path


def _prototxt(world, n: int) -> Path:
    path = world / "model/big.prototxt"
    path.parent.mkdir(exist_ok=True)
    path.write_text(f'name: "big" input: "data" input_shape {{ dim: 1 dim: {n} }}\n'
                    f'layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "ip" '
                    f'inner_product_param {{ num_output: {n} }} }}\n')
    return path


@pytest.mark.parametrize("fmt", ["prototxt", "keras-json", "mxnet-json", "onnx", "npz", "keras"])
def test_out_of_memory_within_the_budget_is_a_graphrt_error(world, fmt):
    """Files the budget admits (4 GiB) but the address space cannot hold: an OutOfMemoryError
    before allocating (or from the allocation), never a raw MemoryError."""
    limits = {}
    if fmt == "prototxt":
        path = _prototxt(world, 16384)  # 1 GiB of weights
    elif fmt == "keras-json":
        path = _keras_json(world, 1 << 23)  # 640 MiB, then 2 GiB
    elif fmt == "mxnet-json":
        path = _mxnet_json(world, 1 << 20)  # 3.2 GiB
    elif fmt == "onnx":
        pytest.importorskip("onnx")
        path, limits = H.onnx_constant_of_shape(world / "model/c.onnx", 1 << 28), {
            "MAX_FOLDED_BYTES": 4 << 30}
    elif fmt == "npz":
        path = _npz(world, 1 << 27)  # 512 MiB of zeros, deflated
    else:
        path = H.keras_with_weights(world / "model", H.compressed_zeros(1, 1 << 27))
    if fmt in ("keras-json", "mxnet-json", "keras") and not H.KERAS_SEED.exists():
        pytest.skip("needs ../shared")
    code = ("graphrt.load(path, input_shape=(1, 28, 28))" if fmt == "mxnet-json"
            else "graphrt.load(path)")
    result = H.run_sandboxed(path, code, limits=limits, room_mb=300)
    assert_refused(result, world, grew_mb=400, kinds={"OutOfMemoryError"})


def test_compile_checks_the_arena_against_the_address_space(world):
    code = ("g = graphrt.Graph('big'); x = g.add_input('x', (None, 1 << 26))\n"
            "g.set_outputs([g.add_node('relu', [x])]); graphrt.compile(g, batch_size=4)")
    result = H.run_sandboxed(world, code, room_mb=300)
    assert_refused(result, world, kinds={"OutOfMemoryError"})
    assert "address-space limit" in result["message"], result


# ---- smaller findings ------------------------------------------------------------------------------

@pytest.mark.parametrize("literal", ["0x" + "f" * 5000, "0" + "7" * 5000, "1" * 5000])
def test_huge_integer_literals_in_a_prototxt_are_parse_errors(literal):
    import graphrt
    from graphrt.frontends.caffe import load_caffe

    text = ('name: "x" input: "data" input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }\n'
            'layer { name: "c" type: "Convolution" bottom: "data" top: "c"\n'
            f'  convolution_param {{ num_output: {literal} kernel_size: 3 }} }}\n')
    with pytest.raises(graphrt.ParseError, match="line 3"):
        load_caffe(text=text)


def test_the_graph_size_budget(monkeypatch):
    import graphrt
    from graphrt.frontends.caffe import load_caffe

    assert graphrt.limits.MAX_GRAPH_NODES >= 1_000_000
    layers = "".join(f'layer {{ name: "r{i}" type: "ReLU" bottom: "{"data" if i == 0 else f"r{i-1}"}" '
                     f'top: "r{i}" }}\n' for i in range(300))
    text = 'name: "deep" input: "data" input_shape { dim: 1 dim: 4 }\n' + layers
    assert len(load_caffe(text=text)) >= 300
    monkeypatch.setattr(graphrt.limits, "MAX_GRAPH_NODES", 100)
    with pytest.raises(graphrt.LimitError, match="MAX_GRAPH_NODES"):
        load_caffe(text=text)


def test_tensor_sizes_never_wrap():
    import graphrt

    spec = graphrt.TensorSpec((None, 1 << 31, 1 << 31), "float32")
    assert spec.nbytes(4) == 4 * (1 << 62) * 4
    g = graphrt.Graph("huge")
    x = g.add_input("x", (None, 1 << 31, 1 << 31))
    g.set_outputs([g.add_node("relu", [x])])
    with pytest.raises(graphrt.OutOfMemoryError):
        graphrt.compile(g, batch_size=4)


def test_cgroup_limits_are_read(tmp_path, monkeypatch):
    from graphrt.ir import limits

    (tmp_path / "memory.max").write_text("1073741824\n")
    (tmp_path / "memory.current").write_text("268435456\n")
    monkeypatch.setattr(limits, "_read", lambda p: None if p == "/proc/self/cgroup" else
                        (Path(p).read_text().strip() if Path(p).exists() else None))
    assert limits._cgroup_room(str(tmp_path)) == 768 << 20
    (tmp_path / "memory.max").write_text("max\n")
    assert limits._cgroup_room(str(tmp_path)) is None


@needs_shared
def test_keras_archives_load_without_forking(monkeypatch):
    import graphrt

    def no_fork():
        raise AssertionError("forked")

    monkeypatch.setattr(os, "fork", no_fork)
    g = graphrt.load(H.KERAS_SEED)
    x = np.load(H.SHARED / "fixtures/keras/seed_ann_input.npy")
    want = np.load(H.SHARED / "fixtures/keras/seed_ann_output.npy")
    got = graphrt.run_reference(g, x)
    assert np.abs(got - want).max() / np.abs(want).max() < 1e-5
