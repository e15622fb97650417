"""Winograd F(2x2, 3x3) convolution for 3x3, stride-1, dilation-1 layers (Lavin & Gray, 2015).

Each 2x2 block of output is ``A^T [(G g G^T) * (B^T d B)] A`` for the 4x4 input tile ``d`` that
covers it: 16 multiplications per output block and input channel instead of 36. With the tiles of
all images and positions laid side by side that is one batched GEMM, ``M[k] = U[k] @ V[k]`` for the
16 tile positions ``k`` (``np.matmul`` over (16, O, C) @ (16, C, P)), between elementwise
transforms:

1. ``U = G g G^T``: the weights of a group, (16, O', C'); recomputed every call (a few ufuncs over
   O'*C' numbers), never cached on the parameter, which training may update in place;
2. the input chunk zero-padded into the workspace (the layer's pads, plus the bottom/right rows
   and columns that round the output up to whole 2x2 blocks);
3. ``V = B^T d B`` on strided views of the padded input (one ufunc per add of the 0/±1 matrices),
   (16, C', P) with P = images * tile rows * tile columns;
4. ``M = U @ V``, then ``Y = A^T M A`` written straight into the output's four 2x2 phases
   (``out[..., a::2, b::2]``), clipped at odd output sizes; bias and activation last.

Everything lives in the workspace: images are processed in chunks of about :data:`WINO_BYTES`.
Rounding: the transforms add and subtract inputs (and products) before and after the GEMM, so each
output is rounded differently from a direct sum; for F(2x2, 3x3) the effect is small. Measured in
float32 against float64 loops on unit-scale data, 3x3 layers of 3..256 channels: 1.3e-7 to 6.2e-7
relative (max-normalized), im2col 1.9e-7 to 5.6e-7 on the same layers; tests/test_conv_algorithms.py
bounds it by 2e-6.
"""
from __future__ import annotations

import numpy as np

WINO_BYTES = 8 << 20  # workspace of the tile transforms and the GEMM for one chunk of images


def applies(attrs, kh: int, kw: int) -> bool:
    return (kh, kw) == (3, 3) and attrs["stride"] == (1, 1) and attrs["dilation"] == (1, 1)


def _tiles(oh: int, ow: int) -> tuple[int, int]:
    return -(-oh // 2), -(-ow // 2)


def _per_image(cg, og, oh, ow) -> int:
    """Workspace elements per image of a chunk: padded input, two (16, C', tiles) buffers
    (row-pass temporaries and V), M (16, O', tiles) and the output row pass (8, O', tiles)."""
    th, tw = _tiles(oh, ow)
    t = th * tw
    return cg * (2 * th + 2) * (2 * tw + 2) + 32 * cg * t + 24 * og * t


def plan(n, cg, og, oh, ow, itemsize) -> tuple[int, int]:
    """(images per chunk, workspace elements) without the weight transform and epilogue."""
    per = _per_image(cg, og, oh, ow)
    m = max(1, min(n, WINO_BYTES // (itemsize * per)))
    return m, m * per


def workspace_elems(n, c, o, groups, oh, ow, itemsize, temps) -> int:
    """Workspace elements of a layer: the weight transform of one group (16 + 12 planes of
    O'*C'), one chunk's buffers, and the epilogue's block temporaries (which reuse the chunk's)."""
    cg, og = c // groups, o // groups
    _, chunk = plan(n, cg, og, oh, ow, itemsize)
    return 28 * og * cg + max(chunk, temps)


def _weights(g, u, ut):
    """``u`` (16, O', C') = G g G^T of ``g`` (O', C', 3, 3); ``ut`` (4, 3, O', C') scratch."""
    half = g.dtype.type(0.5)
    for col in range(3):  # rows: G @ g
        g0, g1, g2 = g[:, :, 0, col], g[:, :, 1, col], g[:, :, 2, col]
        np.copyto(ut[0, col], g0)
        np.add(g0, g2, out=ut[1, col])
        np.subtract(ut[1, col], g1, out=ut[2, col])
        ut[1, col] += g1
        ut[1, col] *= half
        ut[2, col] *= half
        np.copyto(ut[3, col], g2)
    for i in range(4):  # columns: (G g) @ G^T
        a0, a1, a2 = ut[i, 0], ut[i, 1], ut[i, 2]
        np.copyto(u[4 * i], a0)
        np.add(a0, a2, out=u[4 * i + 1])
        np.subtract(u[4 * i + 1], a1, out=u[4 * i + 2])
        u[4 * i + 1] += a1
        u[4 * i + 1] *= half
        u[4 * i + 2] *= half
        np.copyto(u[4 * i + 3], a2)


def _bt(d0, d1, d2, d3, o0, o1, o2, o3):
    """(o0..o3) = B^T (d0..d3): d0 - d2, d1 + d2, d2 - d1, d1 - d3."""
    np.subtract(d0, d2, out=o0)
    np.add(d1, d2, out=o1)
    np.subtract(d2, d1, out=o2)
    np.subtract(d1, d3, out=o3)


def _inputs(xp, th, tw, t, v):
    """``v`` (16, C', m, th, tw) = B^T d B of the tiles of padded ``xp`` (m, C', 2th+2, 2tw+2);
    ``t`` has v's shape (the row pass). Tile (ty, tx) starts at row 2ty, column 2tx."""
    def d(i, j):  # element (i, j) of every tile: (m, C', th, tw)
        return xp[:, :, i:i + 2 * th:2, j:j + 2 * tw:2]

    def lay(a, k):  # plane k laid out (m, C', th, tw) over the (C', m, ...) storage
        return a[k].transpose(1, 0, 2, 3)

    for j in range(4):
        _bt(d(0, j), d(1, j), d(2, j), d(3, j), *(lay(t, 4 * i + j) for i in range(4)))
    for i in range(4):
        _bt(*(t[4 * i + j] for j in range(4)), *(v[4 * i + j] for j in range(4)))


def _outputs(mm, r, out, oh, ow):
    """``out`` (m, O', oh, ow) = A^T M A of ``mm`` (16, O', m, th, tw); ``r`` (8, O', m, th, tw)."""
    for j in range(4):  # rows: A^T M  (m0 + m1 + m2, m1 - m2 - m3)
        np.add(mm[j], mm[4 + j], out=r[j])
        r[j] += mm[8 + j]
        np.subtract(mm[4 + j], mm[8 + j], out=r[4 + j])
        r[4 + j] -= mm[12 + j]
    for a in range(2):  # columns, into the output phase (a, b) clipped at odd sizes
        ra = r[4 * a:4 * a + 4]
        for b in range(2):
            dst = out[:, :, a::2, b::2]
            rows, cols = dst.shape[2], dst.shape[3]

            def src(k):
                return ra[k].transpose(1, 0, 2, 3)[:, :, :rows, :cols]
            if b == 0:
                np.add(src(0), src(1), out=dst)
                dst += src(2)
            else:
                np.subtract(src(1), src(2), out=dst)
                dst -= src(3)
    return out


def conv(attrs, x, w, out, ws, pad_into):
    """Write the convolution of ``x`` with ``w`` (no bias, no activation) into ``out``;
    ``pad_into`` is the kernels' zero-padding helper, ``ws`` the workspace in the layer's dtype.
    Returns the part of ``ws`` free for the epilogue."""
    n, c, h, wd = x.shape
    o = w.shape[0]
    g = attrs["groups"]
    cg, og = c // g, o // g
    oh, ow = out.shape[2:]
    th, tw = _tiles(oh, ow)
    top, bottom, left, right = attrs["pads"]
    hp, wp = 2 * th + 2, 2 * tw + 2
    pads = (top, hp - h - top, left, wp - wd - left)
    m, _ = plan(n, cg, og, oh, ow, x.dtype.itemsize)
    u = ws[:16 * og * cg].reshape(16, og, cg)
    ut = ws[16 * og * cg:28 * og * cg].reshape(4, 3, og, cg)
    rest = ws[28 * og * cg:]
    for gi in range(g):
        _weights(w[gi * og:(gi + 1) * og], u, ut)
        for start in range(0, n, m):
            k = min(m, n - start)
            tiles = k * th * tw
            sizes = [k * cg * hp * wp, 16 * cg * tiles, 16 * cg * tiles, 16 * og * tiles]
            offsets = [0]
            for size in sizes:
                offsets.append(offsets[-1] + size)
            xp = pad_into(x[start:start + k, gi * cg:(gi + 1) * cg], pads, rest[:sizes[0]])
            t = rest[offsets[1]:offsets[2]].reshape(16, cg, k, th, tw)
            v = rest[offsets[2]:offsets[3]].reshape(16, cg, k, th, tw)
            mm = rest[offsets[3]:offsets[4]].reshape(16, og, k, th, tw)
            r = rest[offsets[4]:offsets[4] + 8 * og * tiles].reshape(8, og, k, th, tw)
            _inputs(xp, th, tw, t, v)
            np.matmul(u, v.reshape(16, cg, tiles), out=mm.reshape(16, og, tiles))
            _outputs(mm, r, out[start:start + k, gi * og:(gi + 1) * og], oh, ow)
    return rest
