"""Small real data sets for demos and tests, shipped inside packages (nothing is downloaded).

``digits_28x28()`` turns scikit-learn's 1,797 handwritten digits (8x8, values 0..16) into MNIST-style
images: scaled to [0, 1], resized to 20x20 by bilinear interpolation and centred in a 28x28 frame,
as MNIST centres its 20x20 digits. scikit-learn is an optional dependency (the ``examples`` extra).
"""
from __future__ import annotations

import numpy as np

from ..ir.errors import GraphrtError


def resize_bilinear(images: np.ndarray, size: int) -> np.ndarray:
    """Resize (N, H, W) images to (N, size, size), sampling pixel centres (half-pixel offsets)."""
    n, h, w = images.shape

    def axis(src: int):
        pos = np.clip((np.arange(size) + 0.5) * src / size - 0.5, 0, src - 1)
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, src - 1)
        return lo, hi, (pos - lo).astype(np.float32)

    (y0, y1, fy), (x0, x1, fx) = axis(h), axis(w)
    rows = images[:, y0] * (1 - fy)[None, :, None] + images[:, y1] * fy[None, :, None]
    return rows[:, :, x0] * (1 - fx) + rows[:, :, x1] * fx


def digits_28x28() -> tuple[np.ndarray, np.ndarray]:
    """(images (1797, 1, 28, 28) float32 in [0, 1], labels (1797,) int64)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise GraphrtError("the digits data set needs scikit-learn: pip install 'graphrt[examples]'") from None
    digits = load_digits()
    small = digits.images.astype(np.float32) / 16.0
    out = np.zeros((len(small), 1, 28, 28), np.float32)
    out[:, 0, 4:24, 4:24] = resize_bilinear(small, 20)
    return out, digits.target.astype(np.int64)
