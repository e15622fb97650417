"""Input images: ``image_transform``, the fused first op of a net fed by a data source.

``image_transform(x, window[, mean]) -> y``: x (N, C, H, W) is the batch as stored (uint8 bytes,
or float32 for Caffe's ``float_data`` records); window (N, 3) int32 holds, per image, the crop's
top row, its left column and a mirror flag (0 or 1); mean is (C,) (a value per channel) or
(C, H, W) (a mean image of the stored size). With the crop of size (ch, cw) (attribute ``crop``;
0 keeps the stored size) and ``scale`` s::

    y[n, c, i, j] = (x[n, c, r + i, q + k] - mean[c(, r + i, q + k)]) * s,
    k = cw - 1 - j if mirrored else j,   (r, q, m) = window[n]

in float32, in that order: Caffe's ``DataTransformer`` (the mean image is read at the crop's place
in the stored image, the mirror applied when writing), so a mean of a stored-size image and a
per-channel mean give Caffe's results to the bit. The window comes from the host with the batch
(random in training, the centre in testing), in the same upload as the images and the labels; the
op checks every window of a batch before the step (``check_feed``), so no kernel reads outside
the image.
"""
from __future__ import annotations

import numpy as np

from ..ir import TensorSpec, spec_error
from ..ir.errors import InputError
from .registry import Attr, OpDef, OpPattern, pair, register, to_float

INPUT_DTYPES = ("uint8", "float32")


def _crop(attrs, h: int, w: int) -> tuple[int, int]:
    ch, cw = attrs["crop"]
    return (ch or h, cw or w)


def _infer(attrs, ins, node):
    x, window = ins[0], ins[1]
    if len(x.shape) != 4 or x.dtype not in INPUT_DTYPES:
        raise spec_error(node, f"image_transform expects (N, C, H, W) uint8 or float32 images, got {x}")
    if window.shape[1:] != (3,) or window.dtype != "int32":
        raise spec_error(node, f"image_transform expects an (N, 3) int32 window (row, column, "
                               f"mirror), got {window}")
    _, c, h, w = x.shape
    ch, cw = _crop(attrs, h, w)
    if not (0 < ch <= h and 0 < cw <= w):
        raise spec_error(node, f"crop {ch}x{cw} does not fit {h}x{w} images")
    if len(ins) == 3 and ins[2].shape not in ((c,), (c, h, w)):
        raise spec_error(node, f"the mean must have shape ({c},) or ({c}, {h}, {w}), got {ins[2]}")
    return [TensorSpec((x.shape[0], c, ch, cw), "float32")]


def _check_window(attrs, in_specs, i, value) -> None:
    if i != 1:
        return
    _, _, h, w = in_specs[0].shape
    ch, cw = _crop(attrs, h, w)
    v = np.asarray(value)
    bad = (v[:, 0] < 0) | (v[:, 0] > h - ch) | (v[:, 1] < 0) | (v[:, 1] > w - cw) | \
          ((v[:, 2] != 0) & (v[:, 2] != 1))
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise InputError(f"image {k}: window {v[k].tolist()} does not place a {ch}x{cw} crop "
                         f"inside a {h}x{w} image (rows 0..{h - ch}, columns 0..{w - cw}, "
                         "mirror 0 or 1)")


def crops(x: np.ndarray, window: np.ndarray, ch: int, cw: int) -> np.ndarray:
    """The (N, ..., ch, cw) view-gathered crops of ``x`` (N, ..., H, W) at each image's window
    (not mirrored): one fancy index into the sliding-window view, a copy of the crops only."""
    views = np.lib.stride_tricks.sliding_window_view(x, (ch, cw), axis=(-2, -1))
    return views[np.arange(len(x)), ..., window[:, 0], window[:, 1], :, :]


def _forward(attrs, inputs, outputs) -> None:
    x, window = inputs[0], np.asarray(inputs[1])
    out = outputs[0]
    ch, cw = out.shape[2:]
    mean = inputs[2] if len(inputs) == 3 else None
    v = crops(x, window, ch, cw)
    if mean is None:
        out[...] = v
    elif mean.ndim == 1:
        np.subtract(v, mean[:, None, None], out=out, dtype=np.float32)
    else:  # the mean image read at each crop's place, before the mirror (Caffe's order)
        np.subtract(v, crops(np.broadcast_to(mean, (len(x),) + mean.shape), window, ch, cw),
                    out=out, dtype=np.float32)
    out *= np.float32(attrs["scale"])
    mirrored = window[:, 2] == 1
    out[mirrored] = out[mirrored][..., ::-1]


def _cost(attrs, ins, outs, batch):
    size = int(np.prod(outs[0].concrete(batch)))
    return 2 * size, size + outs[0].nbytes(batch)


IMAGE_TRANSFORM = register(OpDef(
    name="image_transform", family="image", arity=(2, 3),
    attrs={"crop": Attr(pair, (0, 0)), "scale": Attr(to_float, 1.0)},
    infer=_infer, forward=_forward, cost=_cost, pattern=OpPattern.OPAQUE,
    check_feed=_check_window, doc=__doc__))
