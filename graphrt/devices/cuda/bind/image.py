"""Binder of ``image_transform`` (kernel in ``kernels/image.cu``): one pass from the uint8 (or
float32) batch as uploaded to the float output, reading each image's window from the same upload."""
from __future__ import annotations

import numpy as np

from ..calls import THREADS, Call, Unsupported, check_dtype, estrides, grid_1d


def bind_image_transform(attrs, inputs, outputs, ws):
    x, window, y = inputs[0], inputs[1], outputs[0]
    mean = inputs[2] if len(inputs) == 3 else None
    dtype = check_dtype(y, *([mean] if mean is not None else []))
    if np.dtype(x.dtype).name not in ("uint8", "float32") or np.dtype(window.dtype).name != "int32":
        raise Unsupported(f"images of dtype {x.dtype} or a window of dtype {window.dtype}")
    ws_ = estrides(window)
    if ws_[1] != 1 or (mean is not None and mean.size > 1 and estrides(mean)[-1] != 1):
        raise Unsupported("a window or mean that is not contiguous")
    n, c, ch, cw = y.shape
    h, w = x.shape[2:]
    kind = 0 if mean is None else (1 if mean.ndim == 1 else 2)
    return [Call("image_transform", dtype, grid_1d(n * c * ch * cw), (THREADS, 1, 1), (
        x, int(np.dtype(x.dtype).name == "uint8"), *estrides(x), window, ws_[0],
        y, *estrides(y), n, c, ch, cw, mean, kind, h, w, float(attrs["scale"])))]
