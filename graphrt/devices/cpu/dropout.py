"""The cpu device's ``dropout_train`` kernel: the reference's Philox4x32-10 mask
(:func:`graphrt.ops.elementwise.dropout_mask`, :mod:`graphrt.ops.philox`) drawn in cache-sized
blocks of counters with every temporary in the planned workspace, instead of whole-tensor uint64
arrays allocated per round.

Element ``i`` keeps ``x`` (scaled by ``1 / (1 - rate)``) when its uniform ``(word >> 8) / 2^24``
is at least ``rate``; with ``word`` a 32-bit integer that is ``word >= ceil(rate * 2^24) * 256``,
compared in integers (exact: multiplying by a power of two is exact in float64), so the mask is
bit for bit the reference's. A draw may start mid-block (a data-parallel rank's ``offset``, or a
batch slice, whose first element is not a multiple of 4): its first and last blocks are drawn
whole and only the words of its own elements kept.

Split across the device's threads (:mod:`.split`) by batch slices: part ``i`` draws the counters of
its own rows (:func:`dropout_part`: the element offset of its slice added to the op's), so any
number of threads gives the mask one thread and the reference give, and the step counter is
advanced once, after every part (:func:`advance`).
"""
from __future__ import annotations

import math

import numpy as np

from ...ir import Graph, Node
from ...ops.elementwise import dropout_mask
from ...ops.philox import MULTIPLIERS, WEYL

BLOCKS = 32768  # Philox counters per block: 7 uint64 arrays of this length (1.8 MiB: L2 is 1 MiB a
# core, L3 32 MiB). Measured on the Keras CNN's largest dropout (1.2M elements): 2048 -> 0.7x the
# reference's time, 8192 -> 0.35x (8.7 ms); ~100 ufunc calls a block, so with the launch split
# across threads a small block is mostly GIL handoffs between the parts: one thread / two,
# 8192 8.7 / 12.5 ms, 16384 7.8 / 7.9 ms, 32768 7.3 / 4.9 ms
_MASK32 = np.uint64(0xFFFFFFFF)
_SHIFT32 = np.uint64(32)
_ARANGE: dict = {}


def workspace(node: Node, graph: Graph, batch: int) -> int:
    """Seven uint64 blocks (the four counter words, two products, the block indices) and a
    boolean block."""
    spec = graph.specs[node.inputs[0]]
    return workspace_of(int(np.prod(spec.concrete(batch))))


def workspace_of(size: int) -> int:
    """The workspace of a draw of ``size`` elements starting anywhere (up to 3 words into its
    first block: it may span one block more than ``size / 4``)."""
    blocks = min(BLOCKS, (size + 6) // 4)
    return 7 * 8 * blocks + -(-blocks // 8) * 8


def _arange(n: int) -> np.ndarray:
    found = _ARANGE.get(n)
    if found is None:
        found = _ARANGE[n] = np.arange(n, dtype=np.uint64)
    return found


def dropout_train(attrs, inputs, outputs, ws):
    """The mask of ``inputs[0]``'s rows (from the op's ``offset``), ``y = x * mask``, and the
    counter advanced."""
    dropout_part(attrs, inputs, outputs, ws, 0)
    advance(attrs, inputs, outputs, ws)


def advance(attrs, inputs, outputs, ws):
    """The step counter advanced (once per launch, however many parts drew the mask)."""
    counter = inputs[1]
    counter += 1


def dropout_part(attrs, inputs, outputs, ws, row: int):
    """The mask and ``y`` of rows ``row...`` of the launch (``inputs[0]`` and the outputs are those
    rows; the counter is not advanced): element ``e`` of the slice is element
    ``(offset + row) * per_row + e`` of the draw."""
    x, counter = inputs
    y, mask = outputs
    size = x.size
    per_row = size // x.shape[0] if x.shape[0] else 0
    start = (attrs.get("offset", 0) + row) * per_row
    flat = _flat_or_none(mask)
    if flat is None:  # the plan's outputs are contiguous; a strided mask gets the reference's draw
        mask[...] = dropout_mask(x.shape, attrs["rate"], attrs["seed"],
                                 int(counter.reshape(-1)[0]), mask.dtype,
                                 attrs.get("offset", 0) + row)
        np.multiply(x, mask, out=y)
        return
    if size:
        _draw(flat, start, int(counter.reshape(-1)[0]) % 2**64, attrs, ws)
    np.multiply(x, mask, out=y)


def _draw(flat, start: int, step: int, attrs, ws) -> None:
    """Elements ``start ... start + flat.size - 1`` of the mask into ``flat``: element ``g`` is
    word ``g % 4`` of block ``g // 4``."""
    size = flat.size
    seed = int(attrs["seed"]) % 2**64
    threshold = np.uint64(math.ceil(attrs["rate"] * 2**24) * 256)
    scale = flat.dtype.type(1.0 / (1.0 - attrs["rate"]))
    first = start // 4
    nb = (start + size + 3) // 4 - first  # blocks spanned
    b = min(BLOCKS, nb)
    words = ws.view(np.uint8)[:7 * 8 * b].view(np.uint64)
    c0, c1, c2, c3, p0, p1, idx = (words[i * b:(i + 1) * b] for i in range(7))
    hit = ws.view(np.uint8)[7 * 8 * b:7 * 8 * b + b].view(np.bool_)
    for b0 in range(0, nb, b):
        nblk = min(b, nb - b0)
        cs = [c0[:nblk], c1[:nblk], c2[:nblk], c3[:nblk]]
        q0, q1, ix, hb = p0[:nblk], p1[:nblk], idx[:nblk], hit[:nblk]
        np.add(_arange(b)[:nblk], np.uint64(first + b0), out=ix)
        np.bitwise_and(ix, _MASK32, out=cs[0])
        np.right_shift(ix, _SHIFT32, out=cs[1])
        cs[2].fill(step & 0xFFFFFFFF)
        cs[3].fill(step >> 32)
        _rounds(cs, q0, q1, seed & 0xFFFFFFFF, seed >> 32)
        for j in range(4):
            # word j of block first + b0 + t is element e = 4 * (first + b0 + t) + j - start
            e0 = 4 * (first + b0) + j - start  # >= -3
            skip = 1 if e0 < 0 else 0  # the first block's words before the draw's start
            e_first = e0 + 4 * skip
            e_last = min(size - 1, e0 + 4 * (nblk - 1))
            if e_last < e_first:
                continue
            count = (e_last - e_first) // 4 + 1
            np.greater_equal(cs[j][skip:skip + count], threshold, out=hb[:count])
            np.multiply(hb[:count], scale, out=flat[e_first:e_first + 4 * (count - 1) + 1:4])


def _rounds(c, p0, p1, k0: int, k1: int) -> None:
    """Philox4x32's ten rounds on the counter words ``c`` in place (``p0``, ``p1``: scratch), as
    :func:`graphrt.ops.philox.philox4x32` computes them."""
    m0, m1 = np.uint64(MULTIPLIERS[0]), np.uint64(MULTIPLIERS[1])
    for _ in range(10):
        np.multiply(c[0], m0, out=p0)
        np.multiply(c[2], m1, out=p1)
        # new c0 = hi(p1) ^ c1 ^ k0 ; new c2 = hi(p0) ^ c3 ^ k1 ; c1 = lo(p1) ; c3 = lo(p0)
        np.right_shift(p1, _SHIFT32, out=c[0])
        np.bitwise_xor(c[0], c[1], out=c[0])
        np.bitwise_xor(c[0], np.uint64(k0), out=c[0])
        np.right_shift(p0, _SHIFT32, out=c[2])
        np.bitwise_xor(c[2], c[3], out=c[2])
        np.bitwise_xor(c[2], np.uint64(k1), out=c[2])
        np.bitwise_and(p1, _MASK32, out=c[1])
        np.bitwise_and(p0, _MASK32, out=c[3])
        k0, k1 = (k0 + WEYL[0]) & 0xFFFFFFFF, (k1 + WEYL[1]) & 0xFFFFFFFF


def _flat_or_none(a: np.ndarray):
    v = a.view()
    try:
        v.shape = (a.size,)
    except AttributeError:
        return None
    return v
