"""Caffe's ``transform_param`` as one ``image_transform`` node, and the readers it needs.

:class:`Transform` is the parameter as data (``scale``, ``mean_file``, ``mean_value``,
``crop_size``, ``mirror``, with Caffe's checks: a mean file and mean values together are an error,
as are mean values whose count is neither 1 nor the channel count). :func:`fused_transform` adds
the node to a net loaded with ``feed="uint8"``; the data sources of :mod:`graphrt.data` draw the
windows it reads (:meth:`Transform.windows`: in TRAIN a random crop and a coin flip for the mirror,
in TEST the centre crop and no mirror, as Caffe's ``DataTransformer``).

:func:`read_blobproto` reads a ``.binaryproto`` (one ``BlobProto``: Caffe's mean files).
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from ...ir.errors import GraphrtError, ParseError
from .caffemodel import _read_file, _Wire
from .layers import layer_type
from .prototxt import Message


def read_blobproto(path, file: str | None = None) -> np.ndarray:
    """The float32 array of a ``.binaryproto`` file (``BlobProto``: shape, or num/channels/height/width)."""
    file = file or os.fspath(path)
    data = _read_file(os.fspath(path), file)
    return _Wire(data, file).blob((0, len(data)), "the BlobProto")


@dataclasses.dataclass(frozen=True)
class Transform:
    """A data layer's ``transform_param`` and its phase."""

    scale: float = 1.0
    mean_file: str | None = None
    mean_values: tuple = ()
    crop_size: int = 0
    mirror: bool = False
    train: bool = False
    crop_hw: tuple = ()  # a (height, width) crop (MXNet's data_shape) instead of crop_size
    random_crop: bool | None = None  # None: random in TRAIN (Caffe)

    @classmethod
    def from_layer(cls, layer: Message, phase: str, file: str) -> "Transform":
        t = layer.get("transform_param") or Message()
        mean_file, means = t.get("mean_file"), tuple(float(v) for v in t.getall("mean_value"))
        if mean_file is not None and means:
            raise ParseError(f"layer {layer.get('name')!r}: transform_param has both mean_file and "
                             "mean_value (Caffe refuses them together)", file=file, line=layer.line,
                             node=layer.get("name"))
        return cls(float(t.get("scale", 1.0)), mean_file, means, int(t.get("crop_size", 0)),
                   bool(t.get("mirror", False)), phase == "TRAIN")

    def mean(self, layer: Message, file: str, channels: int) -> np.ndarray | None:
        """The mean to subtract: (C, H, W) from the mean file (read now: Caffe resolves its path
        from the working directory), (C,) from the mean values, or None."""
        name = layer.get("name")
        if self.mean_file is not None:
            if not Path(self.mean_file).is_file():
                raise GraphrtError(f"layer {name!r}: mean_file {self.mean_file!r} does not exist "
                                   f"(Caffe resolves it from the working directory, {os.getcwd()})",
                                   file=file, line=layer.line, node=name)
            blob = read_blobproto(self.mean_file)
            return np.ascontiguousarray(blob.reshape(blob.shape[-3:]), np.float32)
        if self.mean_values:
            if len(self.mean_values) not in (1, channels):
                raise ParseError(f"layer {name!r}: {len(self.mean_values)} mean_value entries for "
                                 f"{channels} channels (give 1 or {channels})", file=file,
                                 line=layer.line, node=name)
            return np.resize(np.asarray(self.mean_values, np.float32), channels)
        return None

    def crop(self, h: int, w: int) -> tuple[int, int]:
        if self.crop_hw:
            return tuple(self.crop_hw)
        return (self.crop_size, self.crop_size) if self.crop_size else (h, w)

    def windows(self, n: int, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
        """(n, 3) int32: each image's crop row and column and mirror flag, drawn as Caffe draws
        them per image (mirror, then row, then column; the centre and no mirror in TEST)."""
        ch, cw = self.crop(h, w)
        if ch > h or cw > w:
            raise GraphrtError(f"a {ch}x{cw} crop does not fit {h}x{w} images")
        random_crop = (ch, cw) != (h, w) and (self.train if self.random_crop is None
                                               else self.random_crop)
        mirror = bool(self.train and self.mirror)
        out = np.zeros((n, 3), np.int32)
        out[:, 0], out[:, 1] = (h - ch) // 2, (w - cw) // 2
        highs = [2] * mirror + [h - ch + 1, w - cw + 1] * random_crop
        if highs:  # one call, a bound per draw: the generator is read as by the per-image draws
            draws = rng.integers(np.tile(highs, n)).reshape(n, len(highs))
            out[:, 2] = draws[:, 0] if mirror else 0
            if random_crop:
                out[:, :2] = draws[:, -2:]
        return out


def window_input(layer: Message) -> str:
    """The name of a data layer's window input (crop offsets and mirror flags)."""
    return f"{layer.get('name')}/window"


def fused_transform(b, layer: Message, tensor: str) -> str:
    """Add ``layer``'s window input and its ``image_transform`` node after the uint8 input ``tensor``."""
    t = Transform.from_layer(layer, b.phase, b.file)
    _, c, h, w = b.graph.specs[tensor].shape
    if t.crop_size > min(h, w):
        raise ParseError(f"layer {layer.get('name')!r}: crop_size {t.crop_size} is larger than the "
                         f"{h}x{w} images", file=b.file, line=layer.line, node=layer.get("name"))
    mean = t.mean(layer, b.file, c)
    if mean is not None and mean.ndim == 3 and mean.shape != (c, h, w):
        raise GraphrtError(f"layer {layer.get('name')!r}: the mean file holds a {mean.shape} mean, "
                           f"the images are {(c, h, w)}", file=b.file, line=layer.line,
                           node=layer.get("name"))
    window = b.graph.add_input(window_input(layer), (None, 3), "int32")
    inputs = [tensor, window]
    if mean is not None:
        inputs.append(b.graph.add_param(f"{layer.get('name')}_mean", mean, trainable=False))
    return b.graph.add_node("image_transform", inputs, name=f"{layer.get('name')}/transform",
                            attrs={"crop": t.crop(h, w), "scale": t.scale},
                            source=b.source(layer, layer_type(layer)))
