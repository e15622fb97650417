"""What the data-pipeline tests share, written independently of graphrt: Caffe records encoded by
hand in the protobuf wire format (``Datum``, ``BlobProto``), LMDB databases of scikit-learn's
digits, and a reader that decodes them by hand and applies Caffe's ``DataTransformer`` loop
(per channel, row and column, in its order: crop offset, mirror on write, mean at the data index,
then scale)."""
from __future__ import annotations

import io
import struct

import numpy as np


def varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b, v = v & 0x7F, v >> 7
        out.append(b | 0x80 if v else b)
        if not v:
            return bytes(out)


def key(field: int, wire: int) -> bytes:
    return varint(field << 3 | wire)


def datum(image: np.ndarray | None, label: int, encoded: bytes | None = None) -> bytes:
    """A serialized Datum: raw uint8 CxHxW bytes, or an encoded image."""
    out = b""
    if image is not None:
        c, h, w = image.shape
        out += key(1, 0) + varint(c) + key(2, 0) + varint(h) + key(3, 0) + varint(w)
        raw = image.astype(np.uint8).tobytes()
    else:
        raw = encoded
    out += key(4, 2) + varint(len(raw)) + raw + key(5, 0) + varint(label)
    if encoded is not None:
        out += key(7, 0) + varint(1)
    return out


def float_datum(image: np.ndarray, label: int) -> bytes:
    """A serialized Datum of ``float_data`` (field 6, packed)."""
    c, h, w = image.shape
    data = image.astype("<f4").tobytes()
    return (key(1, 0) + varint(c) + key(2, 0) + varint(h) + key(3, 0) + varint(w) +
            key(5, 0) + varint(label) + key(6, 2) + varint(len(data)) + data)


def blobproto(mean: np.ndarray) -> bytes:
    """A BlobProto with legacy num/channels/height/width and packed float data."""
    c, h, w = mean.shape
    data = mean.astype("<f4").tobytes()
    return (key(1, 0) + varint(1) + key(2, 0) + varint(c) + key(3, 0) + varint(h) +
            key(4, 0) + varint(w) + key(5, 2) + varint(len(data)) + data)


def digits_bytes(size: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as (N, 1, size, size) uint8 (8x8 upscaled 3x, centred) and labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    up = np.kron(d.images, np.ones((3, 3))) * (255 / 16)
    out = np.zeros((len(up), 1, size, size), np.uint8)
    o = (size - 24) // 2
    out[:, 0, o:o + 24, o:o + 24] = np.round(up).astype(np.uint8)
    return out, d.target.astype(np.int64)


def png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image[0]).save(buf, format="PNG")
    return buf.getvalue()


def write_lmdb(path, images, labels, encode: bool = False) -> None:
    import lmdb

    env = lmdb.open(str(path), map_size=1 << 30)
    with env.begin(write=True) as txn:
        for i, (im, lab) in enumerate(zip(images, labels)):
            rec = datum(None, int(lab), png(im)) if encode else datum(im, int(lab))
            txn.put(b"%08d" % i, rec)
    env.close()


# ---- the independent reader ---------------------------------------------------------------------
def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return result, pos


def parse_datum(buf: bytes) -> tuple[np.ndarray, int]:
    fields, pos = {}, 0
    while pos < len(buf):
        k, pos = read_varint(buf, pos)
        f, w = k >> 3, k & 7
        if w == 0:
            fields[f], pos = read_varint(buf, pos)
        elif w == 2:
            n, pos = read_varint(buf, pos)
            fields[f], pos = buf[pos:pos + n], pos + n
        elif w == 5:
            fields.setdefault(f, []).append(struct.unpack("<f", buf[pos:pos + 4])[0])
            pos += 4
    if fields.get(7):
        from PIL import Image

        a = np.asarray(Image.open(io.BytesIO(fields[4])))
        return a[None].copy(), fields[5]
    c, h, w = fields[1], fields[2], fields[3]
    return np.frombuffer(fields[4], np.uint8).reshape(c, h, w), fields[5]


def read_lmdb_records(path) -> list[tuple[np.ndarray, int]]:
    import lmdb

    env = lmdb.open(str(path), readonly=True, lock=False)
    with env.begin() as txn:
        out = [parse_datum(bytes(v)) for _, v in txn.cursor()]
    env.close()
    return out


def caffe_transform(image: np.ndarray, h_off: int, w_off: int, mirror: int, crop: int, scale: float,
                    mean_image: np.ndarray | None = None, mean_values=None) -> np.ndarray:
    """DataTransformer::Transform(const Datum&, Dtype*) for one image, given its draws."""
    c, h, w = image.shape
    ch, cw = (crop, crop) if crop else (h, w)
    out = np.empty((c, ch, cw), np.float32)
    s = np.float32(scale)
    wi = np.arange(cw)
    top_w = cw - 1 - wi if mirror else wi  # the loop over w, one row at a time
    for ci in range(c):
        for hi in range(ch):
            v = image[ci, h_off + hi, w_off + wi].astype(np.float32)
            if mean_image is not None:
                v = v - mean_image[ci, h_off + hi, w_off + wi].astype(np.float32)
            elif mean_values is not None:
                v = v - np.float32(mean_values[ci if len(mean_values) > 1 else 0])
            out[ci, hi, top_w] = v * s
    return out
