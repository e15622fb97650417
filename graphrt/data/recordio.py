"""MXNet's RecordIO image records: :class:`RecordIO`, the source ``mx.io.ImageRecordIter`` reads.

The container (dmlc-core ``recordio``): each record is a little-endian uint32 magic ``0xced7230a``,
a uint32 ``lrecord`` whose upper 3 bits are the continuation flag (0 a whole record; 1, 2, 3 the
first, a middle and the last part of a record split where its payload held the magic, which goes
back between the parts) and whose lower 29 bits are the part's length, then the payload padded
with zeros to a multiple of 4 bytes. The ``.idx`` file has a line ``key<TAB>byte offset`` per
record. An image record's payload (``mx.recordio.pack``) starts with the header ``IRHeader``
(``<IfQQ``: ``flag``, ``label``, ``id``, ``id2``; with ``flag`` > 0, ``flag`` float32 labels follow and
``label`` is unused) and holds the encoded image (JPEG or PNG, decoded with Pillow, RGB order).

Transforms as ``ImageRecordIter``: a crop of ``data_shape`` (random with ``rand_crop``, else the
centre), a coin flip for the mirror with ``rand_mirror``, then ``(x - mean_rgb) * scale / std``; the
crop, mirror, mean and scale run on the device as the graph's first op (:meth:`RecordIO.attach`
puts it in front of a graph's float input), so the records' stored images must share one size.
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from ..frontends.caffe.transform import Transform
from ..ir import Graph
from ..ir.errors import GraphrtError, ParseError, UnsupportedError
from .base import ImageSource
from .caffe import decode_image

MAGIC = 0xCED7230A
HEADER = struct.Struct("<IfQQ")


def read_record(buf, pos: int, file: str) -> tuple[bytes, int]:
    """The payload of the record at byte ``pos`` (its parts joined) and the offset after it."""
    parts = []
    while True:
        if pos + 8 > len(buf):
            raise ParseError(f"truncated record header at byte offset {pos}", file=file)
        magic, lrecord = struct.unpack_from("<II", buf, pos)
        if magic != MAGIC:
            raise ParseError(f"no RecordIO magic at byte offset {pos} (found {magic:#x})", file=file)
        flag, length = lrecord >> 29, lrecord & ((1 << 29) - 1)
        start = pos + 8
        if start + length > len(buf):
            raise ParseError(f"the record at byte offset {pos} declares {length} bytes, "
                             f"{len(buf) - start} remain", file=file)
        parts.append(bytes(buf[start:start + length]))
        pos = start + ((length + 3) & ~3)
        if flag in (0, 3):
            return struct.pack("<I", MAGIC).join(parts), pos
        if flag not in (1, 2):
            raise ParseError(f"record part with flag {flag} at byte offset {pos}", file=file)


def unpack_image_record(payload: bytes) -> tuple[np.ndarray, bytes]:
    """(labels as float32, encoded image) of an ``IRHeader``-prefixed payload."""
    flag, label, _, _ = HEADER.unpack_from(payload, 0)
    at = HEADER.size
    if flag > 0:
        labels = np.frombuffer(payload, "<f4", flag, at).copy()
        at += 4 * flag
    else:
        labels = np.asarray([label], np.float32)
    return labels, payload[at:]


class RecordIO(ImageSource):
    """Batches of a ``.rec`` file (see the module docstring), named ``data``, ``data/window`` and
    ``label_name`` (MXNet's ``softmax_label``); ``label_width`` 1 gives int64 class labels, more
    gives (N, label_width) float32."""

    def __init__(self, path_rec, path_idx=None, *, data_shape, batch_size: int, mean_rgb=None,
                 std_rgb=None, scale: float = 1.0, rand_crop: bool = False, rand_mirror: bool = False,
                 shuffle: bool = False, seed: int = 0, workers: int | None = None,
                 processes: bool = True, label_width: int = 1, data_name: str = "data",
                 label_name: str = "softmax_label", repeat: bool = False):
        self.data_shape = tuple(int(d) for d in data_shape)
        if len(self.data_shape) != 3:
            raise GraphrtError(f"data_shape must be (C, H, W), got {data_shape}")
        std = None if std_rgb is None else np.asarray(std_rgb, np.float64)
        if std is not None and not np.all(std == std.flat[0]):
            raise UnsupportedError("a std_rgb that differs between channels (the fused transform "
                                   "scales every channel alike): give one value for all")
        self.mean = None if mean_rgb is None else np.asarray(mean_rgb, np.float32)
        self.scale = float(scale) / (1.0 if std is None else float(std.flat[0]))
        transform = Transform(scale=self.scale, mirror=rand_mirror, train=rand_crop or rand_mirror,
                              crop_hw=self.data_shape[1:], random_crop=rand_crop)
        super().__init__(batch_size=batch_size, names=(data_name, f"{data_name}/window", label_name),
                         transform=transform, shuffle=shuffle, seed=seed, workers=workers,
                         processes=processes, repeat=repeat, where={"file": str(path_rec)})
        self.path_rec, self.path_idx = str(path_rec), path_idx
        self.store = f"the RecordIO file {self.path_rec!r}"
        self.label_width = int(label_width)

    def _open(self) -> int:
        if not Path(self.path_rec).is_file():
            raise self.error(f"the RecordIO file {self.path_rec!r} does not exist")
        self._buf = memoryview(Path(self.path_rec).read_bytes())
        if self.path_idx is not None:
            offsets = []
            for n, line in enumerate(Path(self.path_idx).read_text().splitlines(), 1):
                if line.strip():
                    try:
                        offsets.append(int(line.split("\t")[1]))
                    except (IndexError, ValueError):
                        raise ParseError(f"line {n} is not 'key<TAB>offset': {line!r}",
                                         file=str(self.path_idx)) from None
        else:
            offsets, pos = [], 0
            while pos < len(self._buf):
                offsets.append(pos)
                _, pos = read_record(self._buf, pos, self.path_rec)
        if not offsets:
            raise self.error(f"the RecordIO file {self.path_rec!r} holds no records")
        self._offsets = offsets
        return len(offsets)

    def _raw(self, i: int):
        return read_record(self._buf, self._offsets[i], self.path_rec)[0]

    def _decode(self, payload):
        labels, image = unpack_image_record(payload)
        x = decode_image(image, self.data_shape[0] == 3, bgr=False)
        if len(labels) < self.label_width:
            raise self.error(f"a record holds {len(labels)} labels, label_width is {self.label_width}")
        label = labels[:self.label_width]
        return x, (int(label[0]) if self.label_width == 1 else label)

    def _labels(self, labels: list) -> np.ndarray:
        if self.label_width > 1:
            return np.stack(labels).astype(np.float32)
        return super()._labels(labels)

    def attach(self, graph: Graph, input_name: str | None = None) -> Graph:
        """A copy of ``graph`` whose float input (``data_name`` by default) is made on the device
        from this source's uint8 batch (input ``<name>/stored``, which this source then yields) and
        windows by ``image_transform``: feed the new graph this source's batches (which carry the
        labels only when the graph takes them)."""
        x = input_name or self.names[0]
        if x not in graph.inputs:
            raise GraphrtError(f"the graph has no input {x!r} (inputs: {graph.inputs})")
        if self._count is None:
            len(self)
        stored = self.first()[0].shape
        g = graph.copy()
        g.inputs.remove(x)
        del g.specs[x]
        data = g.add_input(f"{x}/stored", (None,) + stored, "uint8")
        window = g.add_input(self.names[1], (None, 3), "int32")
        inputs = [data, window]
        if self.mean is not None:
            inputs.append(g.add_param(f"{x}/mean", np.resize(self.mean, stored[0]), trainable=False))
        g.add_node("image_transform", inputs, name=f"{x}/transform", outputs=[x],
                   attrs={"crop": self.data_shape[1:], "scale": self.scale})
        label = self.names[2] if self.names[2] in g.inputs else None  # an inference graph: no labels
        self.names = (data, self.names[1], label)
        return g
