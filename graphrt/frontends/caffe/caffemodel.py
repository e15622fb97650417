"""Reader for Caffe's binary ``.caffemodel`` weight files (no protobuf dependency).

A ``.caffemodel`` is one serialized ``NetParameter`` message of ``caffe.proto`` in the protobuf
wire format. A message is a run of fields; each starts with a varint key
``field_number << 3 | wire_type`` followed by its payload:

====  ==================  ===========================================================
wire  payload             used here for
====  ==================  ===========================================================
0     varint              ints, enums, unpacked BlobShape.dim
1     8 bytes, LE         unpacked ``double_data``
2     varint length, data strings, nested messages, packed repeated numbers
5     4 bytes, LE         unpacked ``data`` (float)
3, 4  (deprecated groups) rejected
====  ==================  ===========================================================

A varint is 7 bits per byte, low bits first, the high bit set on every byte but the last
(10 bytes at most). Fields this reader uses (everything else is skipped):

* NetParameter: ``layer`` = 100 (LayerParameter), legacy ``layers`` = 2 (V1LayerParameter)
* LayerParameter: ``name`` = 1, ``type`` = 2 (string), ``blobs`` = 7
* V1LayerParameter: ``name`` = 4, ``type`` = 5 (enum, mapped to the modern type string), ``blobs`` = 6
* BlobProto: ``shape`` = 7 (BlobShape: ``dim`` = 1, int64), ``data`` = 5 (float),
  ``double_data`` = 8, legacy ``num``/``channels``/``height``/``width`` = 1..4

Each blob becomes a float32 array of its shape: ``shape`` if present, else the legacy 4-D
``(num, channels, height, width)``, else 1-D. ``double_data`` wins over ``data`` (as in Caffe).
Malformed data raises :class:`~graphrt.ir.errors.ParseError` with the byte offset; a blob whose
value count does not fit its shape raises :class:`~graphrt.ir.errors.WeightError`.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from ...ir.errors import ParseError, WeightError

_MASK64 = (1 << 64) - 1
_LAYER, _V1_LAYERS = 100, 2
# V1LayerParameter.LayerType -> the type string Caffe's own upgrade (UpgradeV1LayerType) gives.
V1_LAYER_TYPES = {
    0: "", 1: "Accuracy", 2: "BNLL", 3: "Concat", 4: "Convolution", 5: "Data", 6: "Dropout",
    7: "EuclideanLoss", 8: "Flatten", 9: "HDF5Data", 10: "HDF5Output", 11: "Im2col",
    12: "ImageData", 13: "InfogainLoss", 14: "InnerProduct", 15: "LRN",
    16: "MultinomialLogisticLoss", 17: "Pooling", 18: "ReLU", 19: "Sigmoid", 20: "Softmax",
    21: "SoftmaxWithLoss", 22: "Split", 23: "TanH", 24: "WindowData", 25: "Eltwise", 26: "Power",
    27: "SigmoidCrossEntropyLoss", 28: "HingeLoss", 29: "MemoryData", 30: "ArgMax",
    31: "Threshold", 32: "DummyData", 33: "Slice", 34: "MVN", 35: "AbsVal", 36: "Silence",
    37: "ContrastiveLoss", 38: "Exp", 39: "Deconvolution",
}


@dataclass(frozen=True, eq=False, repr=False)
class LayerBlobs:
    """One layer of a caffemodel: its name, type string and parameter blobs in file order."""

    name: str
    type: str
    blobs: tuple[np.ndarray, ...]

    def __repr__(self) -> str:
        shapes = ", ".join(str(b.shape) for b in self.blobs)
        return f"LayerBlobs(name={self.name!r}, type={self.type!r}, blob shapes=[{shapes}])"


def read_caffemodel(path_or_bytes: str | os.PathLike | bytes | bytearray | memoryview,
                    file: str | None = None) -> list[LayerBlobs]:
    """Read every layer (with or without blobs) of a ``.caffemodel`` in file order."""
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        data = bytes(path_or_bytes)
    else:
        file = file if file is not None else os.fspath(path_or_bytes)
        data = _read_file(os.fspath(path_or_bytes), file)
    if not data:
        raise ParseError("the caffemodel is empty", file=file)
    if data.startswith(b"\x89HDF"):
        raise ParseError("this is an HDF5 caffemodel (.caffemodel.h5); only the protobuf "
                         "format is supported", file=file)
    try:
        return _Wire(data, file).net()
    except ParseError as exc:
        if _looks_like_text(data):
            exc.message += " (the file looks like text: is it a .prototxt?)"
            exc.args = (exc._render(),)
        raise


def _read_file(path: str, file: str | None) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise ParseError(f"cannot read file: {exc.strerror or exc}", file=file) from exc


def _looks_like_text(data: bytes) -> bool:
    head = data[:256]
    return all(32 <= b < 127 or b in b"\t\r\n" for b in head)


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


class _Wire:
    """Cursor-free protobuf wire decoding over one bytes object; ``layer`` labels errors."""

    def __init__(self, data: bytes, file: str | None):
        self.buf = data
        self.file = file
        self.layer: str | None = None

    def error(self, message: str, offset: int) -> ParseError:
        where = f" while reading layer {self.layer!r}" if self.layer is not None else ""
        return ParseError(f"{message} at byte offset {offset}{where}", file=self.file)

    def varint(self, pos: int, end: int) -> tuple[int, int]:
        buf, start, result, shift = self.buf, pos, 0, 0
        while True:
            if pos >= end:
                raise self.error("truncated varint", start)
            byte = buf[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                return result & _MASK64, pos
            shift += 7
            if shift >= 70:
                raise self.error("varint longer than 10 bytes", start)

    def fields(self, start: int, end: int,
               names: dict[int, int] | None = None) -> Iterator[tuple[int, int, object, int]]:
        """Yield ``(field, wire_type, value, key_offset)`` for the message in ``[start, end)``.

        ``value`` is an int (varint), a ``(begin, stop)`` slice (length-delimited) or the offset
        of the fixed-size payload (wire types 1 and 5). ``names`` maps a field holding a layer to
        that layer's name field, to name the layer when its own length runs past the end.
        """
        pos = start
        while pos < end:
            offset = pos
            key, pos = self.varint(pos, end)
            field, wire = key >> 3, key & 7
            if field == 0:
                raise self.error("invalid field number 0", offset)
            if wire == 0:
                value, pos = self.varint(pos, end)
            elif wire == 2:
                size, pos = self.varint(pos, end)
                if size > end - pos:
                    if names and field in names:
                        self.layer = self.peek_string(pos, end, names[field])
                    where = "file" if end == len(self.buf) else "enclosing message"
                    raise self.error(f"truncated: field {field} declares {size} bytes but only "
                                     f"{end - pos} remain in the {where}", offset)
                value, pos = (pos, pos + size), pos + size
            elif wire in (1, 5):
                size = 8 if wire == 1 else 4
                if size > end - pos:
                    raise self.error(f"truncated: field {field} needs {size} bytes", offset)
                value, pos = pos, pos + size
            elif wire in (3, 4):
                raise self.error(f"field {field} uses groups (wire type {wire}), which are "
                                 "not supported", offset)
            else:
                raise self.error(f"field {field} has invalid wire type {wire}", offset)
            yield field, wire, value, offset

    def peek_string(self, start: int, end: int, wanted: int) -> str | None:
        """Best effort: the string field ``wanted`` of a (maybe truncated) message, or None."""
        try:
            for field, wire, value, offset in self.fields(start, end):
                if field == wanted and wire == 2:
                    return self.string(value, offset)
        except ParseError:
            pass
        return None

    def string(self, value: object, offset: int) -> str:
        begin, stop = value  # type: ignore[misc]
        try:
            return self.buf[begin:stop].decode("utf-8")
        except UnicodeDecodeError:
            raise self.error("string is not valid UTF-8", offset) from None

    def expect(self, wire: int, wanted: tuple[int, ...], what: str, offset: int) -> None:
        if wire not in wanted:
            raise self.error(f"{what} has wire type {wire}, expected {' or '.join(map(str, wanted))}",
                             offset)

    # ------------------------------------------------------------------ NetParameter / layers

    def net(self) -> list[LayerBlobs]:
        layers = []
        names = {_LAYER: 1, _V1_LAYERS: 4}
        for field, wire, value, offset in self.fields(0, len(self.buf), names):
            if field in names:
                self.expect(wire, (2,), f"layer #{len(layers)}", offset)
                layers.append(self.layer_blobs(value, field == _V1_LAYERS, len(layers)))
                self.layer = None
        return layers

    def layer_blobs(self, span: object, v1: bool, index: int) -> LayerBlobs:
        name_f, type_f, blobs_f = (4, 5, 6) if v1 else (1, 2, 7)
        name, kind, blob_spans = "", "", []
        for field, wire, value, offset in self.fields(*span):  # type: ignore[misc]
            if field == name_f:
                self.expect(wire, (2,), "layer name", offset)
                name = self.layer = self.string(value, offset)
            elif field == type_f:
                kind = self.layer_type(wire, value, v1, offset)
            elif field == blobs_f:
                self.expect(wire, (2,), "blob", offset)
                blob_spans.append(value)
        label = repr(name) if name else f"#{index}"
        blobs = tuple(self.blob(span, f"layer {label} blob {i}")
                      for i, span in enumerate(blob_spans))
        return LayerBlobs(name, kind, blobs)

    def layer_type(self, wire: int, value: object, v1: bool, offset: int) -> str:
        if v1:
            self.expect(wire, (0,), "V1 layer type", offset)
            return V1_LAYER_TYPES.get(value, str(_signed64(value)))  # type: ignore[arg-type]
        self.expect(wire, (2,), "layer type", offset)
        return self.string(value, offset)

    # --------------------------------------------------------------------------- BlobProto

    def blob(self, span: object, label: str) -> np.ndarray:
        dims: list[int] | None = None
        legacy: dict[int, int] = {}
        floats: list = []
        doubles: list = []
        for field, wire, value, offset in self.fields(*span):  # type: ignore[misc]
            if field == 7:
                self.expect(wire, (2,), "blob shape", offset)
                dims = (dims or []) + self.shape_dims(value)
            elif field in (1, 2, 3, 4) and wire == 0:
                legacy[field] = _signed64(value)  # type: ignore[arg-type]
            elif field == 5:
                self.numbers(floats, wire, value, 4, offset)
            elif field == 8:
                self.numbers(doubles, wire, value, 8, offset)
        values = self.join(doubles, "<f8") if doubles else self.join(floats, "<f4")
        if dims is None:
            dims = [legacy.get(k, 0) for k in (1, 2, 3, 4)] if legacy else [values.size]
        return self.shaped(values, dims, label)

    def shape_dims(self, span: object) -> list[int]:
        dims = []
        for field, wire, value, offset in self.fields(*span):  # type: ignore[misc]
            if field != 1:
                continue
            self.expect(wire, (0, 2), "shape dim", offset)
            if wire == 0:
                dims.append(_signed64(value))  # type: ignore[arg-type]
                continue
            pos, stop = value  # type: ignore[misc]
            while pos < stop:
                dim, pos = self.varint(pos, stop)
                dims.append(_signed64(dim))
        return dims

    def numbers(self, pieces: list, wire: int, value: object, size: int, offset: int) -> None:
        """Add one packed chunk (an array) or one unpacked value (an offset) to ``pieces``."""
        self.expect(wire, (2, 5 if size == 4 else 1), "blob data", offset)
        if wire != 2:
            if pieces and isinstance(pieces[-1], list):
                pieces[-1].append(value)
            else:
                pieces.append([value])
            return
        begin, stop = value  # type: ignore[misc]
        if (stop - begin) % size:
            raise self.error(f"packed data of {stop - begin} bytes is not a whole number of "
                             f"{size}-byte values", offset)
        dtype = "<f4" if size == 4 else "<f8"
        pieces.append(np.frombuffer(self.buf, dtype, (stop - begin) // size, begin))

    def join(self, pieces: list, dtype: str) -> np.ndarray:
        size = np.dtype(dtype).itemsize
        raw = np.frombuffer(self.buf, np.uint8)
        arrays = [p if isinstance(p, np.ndarray)
                  else raw[np.add.outer(np.asarray(p, np.int64), np.arange(size))].view(dtype).ravel()
                  for p in pieces]
        if not arrays:
            return np.zeros(0, np.float32)
        return np.concatenate(arrays, dtype=np.float32)

    def shaped(self, values: np.ndarray, dims: list[int], label: str) -> np.ndarray:
        if any(d < 0 for d in dims):
            raise WeightError(f"{label}: negative dimension in shape {tuple(dims)}", file=self.file)
        count = math.prod(dims)
        if count != values.size:
            raise WeightError(f"{label}: shape {tuple(dims)} needs {count} values, but the file "
                              f"holds {values.size}", file=self.file)
        return values.reshape(dims)


__all__ = ["LayerBlobs", "read_caffemodel", "V1_LAYER_TYPES"]
