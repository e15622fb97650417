"""MXNet RecordIO: a ``.rec``/``.idx`` pair written here with the layout MXNet documents (dmlc-core's
record framing, ``mx.recordio.pack``'s ``IRHeader``), read back with random crop and mirror, equals a
numpy reimplementation of ``ImageRecordIter``'s transform given the same draws."""
from __future__ import annotations

import io
import struct

import numpy as np
import pytest

import graphrt
from graphrt import Graph
from graphrt.data import RecordIO
from graphrt.data.recordio import MAGIC, read_record
from graphrt.memory.planner import align

PIL = pytest.importorskip("PIL.Image")


def frame(payload: bytes) -> bytes:
    """dmlc::RecordIOWriter::WriteRecord: split where the payload holds the magic (4-byte aligned),
    each part ``magic, (cflag << 29) | length, data, zero padding to 4 bytes``."""
    magic = struct.pack("<I", MAGIC)
    cuts = [i for i in range(0, len(payload) - 3, 4) if payload[i:i + 4] == magic]
    bounds = [0] + [c for c in cuts] + [len(payload)]
    parts = [payload[bounds[0]:bounds[1]]] + [payload[c + 4:e] for c, e in zip(cuts, bounds[2:])]
    out = b""
    for k, part in enumerate(parts):
        flag = 0 if len(parts) == 1 else 1 if k == 0 else 3 if k == len(parts) - 1 else 2
        out += magic + struct.pack("<I", flag << 29 | len(part)) + part + b"\0" * (-len(part) % 4)
    return out


def pack(label: float, index: int, image: bytes, id2: int = 0) -> bytes:
    """mx.recordio.pack(IRHeader(0, label, id, id2), s)."""
    return struct.pack("<IfQQ", 0, label, index, id2) + image


def jpeg(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    PIL.fromarray(image).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture
def rec_pair(tmp_path):
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (10, 12, 14, 3)).astype(np.uint8)
    rec, idx, pos = b"", "", 0
    for i, im in enumerate(images):
        # record 3's payload holds the magic (its id2), so it is written in parts
        payload = pack(float(i % 4), i, jpeg(im), MAGIC if i == 3 else 0)
        idx += f"{i}\t{len(rec)}\n"
        rec += frame(payload)
    (tmp_path / "d.rec").write_bytes(rec)
    (tmp_path / "d.idx").write_text(idx)
    return tmp_path, images


def test_the_container_frames_and_a_split_record_joins(rec_pair):
    tmp_path, _ = rec_pair
    buf = (tmp_path / "d.rec").read_bytes()
    offsets = [int(line.split("\t")[1]) for line in (tmp_path / "d.idx").read_text().splitlines()]
    payload, _ = read_record(buf, offsets[3], "d.rec")
    assert buf[offsets[3] + 4] >> 5 == 0 and buf[offsets[3] + 7] >> 5 == 1  # a first part
    assert struct.unpack_from("<IfQQ", payload)[1:] == (3.0, 3, MAGIC)


def test_recordio_with_random_crop_and_mirror_equals_numpy_given_the_draws(rec_pair):
    tmp_path, images = rec_pair
    mean, std, scale = [123.0, 117.0, 104.0], [58.0, 58.0, 58.0], 1.5
    src = RecordIO(tmp_path / "d.rec", tmp_path / "d.idx", data_shape=(3, 8, 10), batch_size=4,
                   mean_rgb=mean, std_rgb=std, scale=scale, rand_crop=True, rand_mirror=True, seed=2,
                   workers=2)
    g = Graph("net")
    x = g.add_input("data", (None, 3, 8, 10))
    g.set_outputs([g.add_node("identity", [x])])
    exe = graphrt.compile(src.attach(g), batch_size=4)
    labels = np.concatenate([b["softmax_label"] for b in RecordIO(
        tmp_path / "d.rec", tmp_path / "d.idx", data_shape=(3, 8, 10), batch_size=4)])
    assert labels.tolist() == [i % 4 for i in range(10)]
    draws, k = [], 0
    for batch, out in zip(src, exe.stream(src)):
        assert "softmax_label" not in batch  # the graph takes no labels
        for j, (r, q, m) in enumerate(batch["data/window"]):
            decoded = np.asarray(PIL.open(io.BytesIO(jpeg(images[k + j]))).convert("RGB"))
            crop = decoded.transpose(2, 0, 1)[:, r:r + 8, q:q + 10].astype(np.float32)
            crop = crop[:, :, ::-1] if m else crop
            want = (crop - np.float32(mean)[:, None, None]) * np.float32(scale / std[0])
            np.testing.assert_array_equal(out[j], want)
            draws.append((r, q, m))
        k += len(out)
    assert k == 10
    assert len(set(draws)) > 5 and {d[2] for d in draws} == {0, 1}  # crops and mirrors were drawn
    # one upload per batch: the stored uint8 images and the windows (each block 64-byte aligned in
    # the input slot), nothing else
    htod = exe.ledger.summary()["HtoD"]
    assert htod["invocations"] == 3 and htod["bytes"] == 3 * (align(4 * 3 * 12 * 14) + align(4 * 3 * 4))


def test_without_random_crop_the_centre_is_taken_and_nothing_is_mirrored(rec_pair):
    tmp_path, _ = rec_pair
    src = RecordIO(tmp_path / "d.rec", data_shape=(3, 8, 10), batch_size=5)  # no .idx: scanned
    windows = np.concatenate([b["data/window"] for b in src])
    assert len(windows) == 10 and (windows == [2, 2, 0]).all()


def test_per_channel_std_is_a_clear_error(rec_pair):
    tmp_path, _ = rec_pair
    with pytest.raises(graphrt.UnsupportedError, match="std_rgb"):
        RecordIO(tmp_path / "d.rec", data_shape=(3, 8, 10), batch_size=2, std_rgb=[1, 2, 3])
