"""Philox4x32-10 (Salmon, Moraes, Dror, Shaw: "Parallel random numbers: as easy as 1, 2, 3",
SC'11), vectorized in numpy: the counter-based generator behind ``dropout_train``'s mask, so the
cpu device draws exactly the mask the cuda device's ``dropout_mask`` kernel draws on the GPU
(``devices/cuda/kernels/grad.cu``) without a host mask or a read-back.

Element ``i`` (C order) of a draw at ``step`` with key ``seed`` takes 32-bit word ``i % 4`` of
Philox4x32-10 with counter ``(i // 4 low, i // 4 high, step low, step high)`` and key
``(seed low, seed high)``; its uniform is the word's top 24 bits / 2^24 (exact in float32 and
float64).

>>> uniform(6, seed=1, step=0).shape
(6,)
"""
from __future__ import annotations

import numpy as np

MULTIPLIERS = (0xD2511F53, 0xCD9E8D57)
WEYL = (0x9E3779B9, 0xBB67AE85)
MASK32 = np.uint64(0xFFFFFFFF)


def philox4x32(counter: np.ndarray, key: tuple[int, int], rounds: int = 10) -> np.ndarray:
    """The (n, 4) uint32 outputs of Philox4x32 for (n, 4) uint32 counters and a 2-word key."""
    c = [counter[:, j].astype(np.uint64) for j in range(4)]
    k0, k1 = int(key[0]), int(key[1])
    for _ in range(rounds):
        p0 = np.uint64(MULTIPLIERS[0]) * c[0]
        p1 = np.uint64(MULTIPLIERS[1]) * c[2]
        c = [(p1 >> np.uint64(32)) ^ c[1] ^ np.uint64(k0), p1 & MASK32,
             (p0 >> np.uint64(32)) ^ c[3] ^ np.uint64(k1), p0 & MASK32]
        k0, k1 = (k0 + WEYL[0]) & 0xFFFFFFFF, (k1 + WEYL[1]) & 0xFFFFFFFF
    return np.stack(c, axis=1).astype(np.uint32)


def uniform(size: int, seed: int, step: int, start: int = 0) -> np.ndarray:
    """``size`` uniforms in [0, 1) (float64, multiples of 2^-24) for element indices ``start`` ..
    ``start + size - 1``."""
    blocks = np.arange(start // 4, (start + size + 3) // 4, dtype=np.uint64)
    step, seed = int(step) % 2**64, int(seed) % 2**64
    counter = np.stack([blocks & MASK32, blocks >> np.uint64(32),
                        np.full_like(blocks, step & 0xFFFFFFFF), np.full_like(blocks, step >> 32)],
                       axis=1)
    words = philox4x32(counter, (seed & 0xFFFFFFFF, seed >> 32)).reshape(-1)[start % 4:start % 4 + size]
    return (words >> 8).astype(np.float64) * (1.0 / 2**24)
