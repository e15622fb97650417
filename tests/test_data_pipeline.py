"""Real input pipelines: uint8 batches from Caffe's data layers, the fused ``image_transform`` as the
graph's first node (cpu and the CUDA kernel on the stand-in), one upload per batch of exactly the
images, labels and windows, and Caffe's data-layer semantics (paths, errors, transform order)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import graphrt
from graphrt import Graph
from graphrt.data import LMDBSource, decode_datum, net_sources

from caffe_data_cases import (blobproto, caffe_transform, datum, digits_bytes, float_datum, png,
                              read_lmdb_records, write_lmdb)

NET = """
name: "t"
layer { name: "mnist" type: "Data" top: "data" top: "label"
  include { phase: TRAIN }
  transform_param { scale: 0.00390625 %(extra)s }
  data_param { source: "%(db)s" batch_size: %(batch)d backend: LMDB } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


def transform_graph(shape, dtype, crop, scale, mean):
    g = Graph("t")
    x = g.add_input("x", (None,) + shape, dtype)
    w = g.add_input("w", (None, 3), "int32")
    inputs = [x, w] + ([g.add_param("m", mean, trainable=False)] if mean is not None else [])
    g.set_outputs([g.add_node("image_transform", inputs, attrs={"crop": crop, "scale": scale})])
    return g


@st.composite
def transform_cases(draw):
    c, h, w = draw(st.integers(1, 3)), draw(st.integers(1, 9)), draw(st.integers(1, 9))
    ch, cw = draw(st.integers(1, h)), draw(st.integers(1, w))
    n = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    dtype = draw(st.sampled_from(["uint8", "float32"]))
    x = rng.integers(0, 256, (n, c, h, w)).astype(dtype)
    window = np.stack([rng.integers(0, h - ch + 1, n), rng.integers(0, w - cw + 1, n),
                       rng.integers(0, 2, n)], 1).astype(np.int32)
    kind = draw(st.sampled_from(["none", "channel", "image"]))
    mean = {"none": None, "channel": rng.uniform(0, 255, c).astype(np.float32),
            "image": rng.uniform(0, 255, (c, h, w)).astype(np.float32)}[kind]
    return x, window, (ch, cw), float(draw(st.sampled_from([1.0, 0.00390625, 0.017]))), mean


@settings(max_examples=40, deadline=None)
@given(transform_cases())
def test_image_transform_is_caffes_transformer_loop(case):
    x, window, crop, scale, mean = case
    g = transform_graph(x.shape[1:], str(x.dtype), crop, scale, mean)
    got = graphrt.compile(g, batch_size=len(x))({"x": x, "w": window})
    for n in range(len(x)):
        want = caffe_transform(x[n], *window[n], crop[0] if crop[0] == crop[1] else 0, scale,
                               mean if mean is not None and mean.ndim == 3 else None,
                               mean if mean is not None and mean.ndim == 1 else None) \
            if crop[0] == crop[1] else None
        if want is None:  # Caffe crops squares; a naive loop for the rectangle
            want = np.empty(got.shape[1:], np.float32)
            r, q, m = window[n]
            for c in range(x.shape[1]):
                for i in range(crop[0]):
                    for j in range(crop[1]):
                        k = crop[1] - 1 - j if m else j
                        v = np.float32(x[n, c, r + i, q + k])
                        if mean is not None:
                            v = np.float32(v - (mean[c] if mean.ndim == 1 else mean[c, r + i, q + k]))
                        want[c, i, j] = np.float32(v * np.float32(scale))
        np.testing.assert_array_equal(got[n], want)


def test_a_window_outside_the_image_is_refused_before_the_step():
    g = transform_graph((1, 6, 6), "uint8", (4, 4), 1.0, None)
    exe = graphrt.compile(g, batch_size=2)
    x = np.zeros((2, 1, 6, 6), np.uint8)
    with pytest.raises(graphrt.InputError, match=r"image 1: window \[3, 0, 0\]"):
        exe({"x": x, "w": np.array([[0, 0, 1], [3, 0, 0]], np.int32)})
    with pytest.raises(graphrt.InputError, match="mirror 0 or 1"):
        exe({"x": x, "w": np.array([[0, 0, 2], [0, 0, 0]], np.int32)})


@pytest.mark.parametrize("dtype,kind", [("uint8", "image"), ("uint8", "channel"), ("float32", "none")])
def test_the_cuda_kernel_equals_the_cpu_bit_for_bit_on_the_stand_in(dtype, kind):
    from tools.cuda_emulator import host_compiler, installed

    if host_compiler() is None:
        pytest.skip("no host C++ compiler")
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (5, 3, 9, 11)).astype(dtype)
    mean = {"none": None, "channel": rng.uniform(0, 255, 3).astype(np.float32),
            "image": rng.uniform(0, 255, (3, 9, 11)).astype(np.float32)}[kind]
    window = np.stack([rng.integers(0, 5, 5), rng.integers(0, 5, 5), [0, 1, 0, 1, 1]], 1).astype(np.int32)
    g = transform_graph((3, 9, 11), dtype, (5, 7), 0.017, mean)
    want = graphrt.compile(g, batch_size=5)({"x": x, "w": window})
    with installed():
        exe = graphrt.compile(g, device="cuda", batch_size=5)
        assert not exe.host_nodes  # the transform runs on the device
        got = exe({"x": x, "w": window})
    np.testing.assert_array_equal(got, want)


# ---- Caffe's Data layer --------------------------------------------------------------------------
RECORDS: dict = {}


@pytest.fixture(scope="module")
def digits_db(tmp_path_factory):
    pytest.importorskip("lmdb")
    pytest.importorskip("sklearn")
    images, labels = digits_bytes()
    root = tmp_path_factory.mktemp("digits")
    write_lmdb(root / "raw_lmdb", images[:300], labels[:300])
    write_lmdb(root / "png_lmdb", images[:40], labels[:40], encode=True)
    # read by hand now: LMDB opens an environment once per process, and graphrt will hold it
    RECORDS.update(raw=read_lmdb_records(root / "raw_lmdb"), png=read_lmdb_records(root / "png_lmdb"))
    return root, images[:300], labels[:300]


def _net(tmp_path, db, batch=64, extra=""):
    path = tmp_path / "net.prototxt"
    path.write_text(NET % {"db": db, "batch": batch, "extra": extra})
    return path


def test_datum_records_decode_raw_and_png(digits_db):
    root, images, labels = digits_db
    for (im, lab), want_im, want_lab in zip(RECORDS["raw"][:5] + RECORDS["png"][:5],
                                                  np.concatenate([images[:5]] * 2), np.tile(labels[:5], 2)):
        np.testing.assert_array_equal(im, want_im)
        assert lab == want_lab
    got, lab = decode_datum(datum(None, 7, png(images[3])))
    np.testing.assert_array_equal(got, images[3])
    assert lab == 7
    src = LMDBSource(root / "png_lmdb", batch_size=16, workers=2)
    batches = list(src)
    assert [len(b["label"]) for b in batches] == [16, 16, 8]
    np.testing.assert_array_equal(np.concatenate([b["data"] for b in batches]), images[:40])


def test_one_upload_per_batch_of_exactly_images_labels_and_windows(digits_db, tmp_path):
    root, images, labels = digits_db
    path = _net(tmp_path, root / "raw_lmdb", extra="crop_size: 24 mirror: true")
    g = graphrt.load(path, phase="TRAIN", input_shape=(1, 28, 28), feed="uint8")
    assert [n.op for n in g.nodes].count("image_transform") == 1
    assert not {"channel_affine", "scale"} & {n.op for n in g.nodes}  # the transform is applied once
    (src,) = net_sources(path, "TRAIN", workers=2)
    n, batches = 64, 300 // 64  # full batches only (the last partial batch is dropped here)
    tr = graphrt.Trainer(g, optimizer=graphrt.optim.SGD(lr=0.01), batch_size=n)
    tr.fit(lambda: (b for b in src if len(b["label"]) == n), progress=False)
    htod = tr.exe.ledger.summary()["HtoD"]
    assert htod["invocations"] == batches
    assert htod["bytes"] == batches * (n * 1 * 28 * 28 + n * 8 + n * 3 * 4)
    assert tr.exe.ledger.bytes_per_item() == 28 * 28 + 8 + 12  # 784 bytes of image, not 3,136


def test_the_stream_feeds_what_caffes_transformer_makes(digits_db, tmp_path):
    """The graph's first node, fed a source's batch, equals the hand-written reader + Caffe's loop."""
    root, images, labels = digits_db
    mean = np.random.default_rng(0).uniform(0, 40, (1, 28, 28)).astype(np.float32)
    (tmp_path / "mean.binaryproto").write_bytes(blobproto(mean))
    path = _net(tmp_path, root / "raw_lmdb", batch=32,
                extra=f'crop_size: 20 mirror: true mean_file: "{tmp_path / "mean.binaryproto"}"')
    g = graphrt.load(path, phase="TRAIN", input_shape=(1, 28, 28), feed="uint8")
    g.set_outputs(["mnist/transform"])
    exe = graphrt.compile(g, batch_size=32)
    records = RECORDS["raw"]
    (src,) = net_sources(path, "TRAIN", workers=3)
    seen = 0
    for batch, out in zip(src, exe.stream(
            ({"data": b["data"], "mnist/window": b["mnist/window"], "label": b["label"]} for b in src))):
        for k, win in enumerate(batch["mnist/window"]):
            im, lab = records[seen + k]
            want = caffe_transform(im, int(win[0]), int(win[1]), int(win[2]), 20, 0.00390625, mean)
            np.testing.assert_array_equal(out[k], want)
            assert batch["label"][k] == lab
        seen += len(batch["label"])
    assert seen == 300
    assert len({tuple(w) for b in net_sources(path, "TRAIN")[0] for w in b["mnist/window"]}) > 20


def test_loading_opens_no_source_and_a_missing_one_names_layer_file_and_line(tmp_path):
    pytest.importorskip("lmdb")
    path = _net(tmp_path, tmp_path / "nowhere_lmdb")
    graphrt.load(path, phase="TRAIN", input_shape=(1, 28, 28), feed="uint8")  # opens nothing
    (src,) = net_sources(path, "TRAIN")
    with pytest.raises(graphrt.GraphrtError, match=r"node 'mnist' \(Data\) in .*net.prototxt line 3: "
                                                   r"the LMDB source .*nowhere_lmdb.* does not exist"):
        next(iter(src))


def test_leveldb_is_a_clear_unsupported_error(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text((NET % {"db": "x", "batch": 4, "extra": ""}).replace("backend: LMDB", ""))
    with pytest.raises(graphrt.UnsupportedError, match="LEVELDB.*convert the database to LMDB"):
        net_sources(path, "TRAIN")


def test_mean_file_and_mean_value_together_are_refused_and_a_missing_mean_file_is_named(tmp_path):
    path = _net(tmp_path, "db", extra='mean_file: "m.binaryproto" mean_value: 3')
    with pytest.raises(graphrt.ParseError, match="both mean_file and mean_value"):
        graphrt.load(path, phase="TRAIN", input_shape=(1, 28, 28), feed="uint8")
    path = _net(tmp_path, "db", extra='mean_file: "absent.binaryproto"')
    with pytest.raises(graphrt.GraphrtError, match=r"line 3: layer 'mnist': mean_file 'absent.binaryproto'"):
        graphrt.load(path, phase="TRAIN", input_shape=(1, 28, 28), feed="uint8")


def test_image_data_reads_the_list_resizes_and_orders_channels_bgr(tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (5, 12, 10, 3)).astype(np.uint8)
    (tmp_path / "img").mkdir()
    for i, im in enumerate(rgb):
        Image.fromarray(im).save(tmp_path / "img" / f"{i}.png")
    Path("list.txt").write_text("".join(f"{i}.png {i % 3}\n" for i in range(5)))
    Path("net.prototxt").write_text("""
layer { name: "images" type: "ImageData" top: "data" top: "label"
  transform_param { mirror: true crop_size: 4 }
  image_data_param { source: "list.txt" root_folder: "img/" batch_size: 2 new_height: 6 new_width: 8 } }
""")
    (src,) = net_sources("net.prototxt", "TEST", workers=2)
    batches = list(src)
    assert [len(b["label"]) for b in batches] == [2, 2, 1]
    x = np.concatenate([b["data"] for b in batches])
    want = np.stack([np.asarray(Image.fromarray(im).resize((8, 6), Image.BILINEAR))[:, :, ::-1]
                     .transpose(2, 0, 1) for im in rgb])
    np.testing.assert_array_equal(x, want)
    assert np.concatenate([b["label"] for b in batches]).tolist() == [0, 1, 2, 0, 1]
    # TEST: the centre crop, never mirrored
    assert all((b["images/window"] == [1, 2, 0]).all() for b in batches)


def test_hdf5_data_reads_the_listed_files_in_order(tmp_path, monkeypatch):
    h5py = pytest.importorskip("h5py")
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(1)
    parts = [rng.standard_normal((n, 2, 3)).astype(np.float32) for n in (3, 4)]
    for i, part in enumerate(parts):
        with h5py.File(f"d{i}.h5", "w") as f:
            f["data"], f["label"] = part, np.arange(len(part), dtype=np.float32) + 10 * i
    Path("files.txt").write_text("d0.h5\nd1.h5\n")
    Path("net.prototxt").write_text("""
layer { name: "h5" type: "HDF5Data" top: "data" top: "label"
  hdf5_data_param { source: "files.txt" batch_size: 5 } }
""")
    (src,) = net_sources("net.prototxt", "TRAIN")
    batches = list(src)
    np.testing.assert_array_equal(np.concatenate([b["data"] for b in batches]), np.concatenate(parts))
    assert np.concatenate([b["label"] for b in batches]).tolist() == [0, 1, 2, 10, 11, 12, 13]


def test_float_data_records_feed_the_transform_as_floats(tmp_path):
    lmdb = pytest.importorskip("lmdb")
    rng = np.random.default_rng(4)
    images = rng.uniform(-3, 300, (6, 2, 7, 9)).astype(np.float32)
    env = lmdb.open(str(tmp_path / "f_lmdb"), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i, im in enumerate(images):
            txn.put(b"%03d" % i, float_datum(im, i))
    env.close()
    got, label = decode_datum(float_datum(images[2], 2))
    np.testing.assert_array_equal(got, images[2])
    path = tmp_path / "net.prototxt"
    path.write_text((NET % {"db": tmp_path / "f_lmdb", "batch": 3, "extra": "crop_size: 5 mirror: true"})
                    .replace("num_output: 10", "num_output: 6"))
    g = graphrt.load(path, phase="TRAIN", input_shape=(2, 7, 9), feed="stored-float32")
    g.set_outputs(["mnist/transform"])
    exe = graphrt.compile(g, batch_size=3)
    (src,) = net_sources(path, "TRAIN")
    for k, batch in enumerate(src):
        out = exe(batch)
        for j, (r, q, m) in enumerate(batch["mnist/window"]):
            np.testing.assert_array_equal(out[j], caffe_transform(images[3 * k + j], r, q, m, 5, 0.00390625))


def test_graphrt_run_takes_its_batch_from_the_nets_data_layer(digits_db, tmp_path, capsys, monkeypatch):
    from graphrt.cli import main

    root, images, labels = digits_db
    monkeypatch.chdir(tmp_path)
    path = _net(tmp_path, root / "raw_lmdb", batch=8, extra="crop_size: 24")
    assert main(["run", str(path), "--phase", "TRAIN", "--data-layers", "--batch", "8", "--json"]) == 0
    import json

    report = json.loads(capsys.readouterr().out)
    assert report["loss"]["shape"] == [] and report["loss"]["value"] > 0
