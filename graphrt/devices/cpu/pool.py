"""Pooling on the cpu device, forward and backward, in a pitched phase layout.

numpy's ufuncs over the 4-D strided windows of a pool (``x[:, :, i::2, j::2]``, shape (N, C, OH, OW))
run an inner loop of only OW elements, and pay a loop setup per row: 9 ``np.maximum`` over CIFAR-10
quick's (100, 32, 16, 16) windows took 4.3 ms at one thread, the same ufuncs over contiguous 1-D
arrays of the same size 0.7 ms. Here every kernel offset is ONE contiguous 1-D ufunc instead:

1. the (padded) input of a chunk of planes is split into its ``sh * sw`` stride phases,
   ``P[a][b] = xpad[:, :, a::sh, b::sw]``, each a contiguous (planes, PH, PW) block with the same
   row pitch PW (filled with the pool's padding: -inf for max, 0 for average, NaN for the max
   gradient's hit test, which then never hits padding);
2. window offset (i, j) of output (p, q) is element (p + i // sh, q + j // sw) of phase
   (i % sh, j % sw): on the flat phase that is output index ``p * PW + q`` shifted by the constant
   ``(i // sh) * PW + j // sw``, so the output is computed in the same pitched layout (PH, PW) per
   plane, one ufunc over ``(planes - 1) * PH * PW + (OH - 1) * PW + OW`` elements per offset (the
   columns and rows past OW, OH are garbage, dropped when the result is copied out; every shifted
   view stays inside its phase);
3. one pass copies (average: divides) the pitched result into the output.

Stride-1 pools without padding read their input (and the max gradient accumulates into dx) as
its own single phase when it is contiguous: no copy in, no copy out.

- ``max_pool`` / ``avg_pool``: the reference's order (``max(max(w0, w1), w2)...``,
  ``((w0 + w1) + w2) + ...``, then the divisor), so the results are the reference's to the bit
  (up to the sign of a zero sum, as before). Global max pools (and very large global averages)
  stay one reduction.
- ``max_pool_grad``: per offset ``hit = x == y`` (pitched), ``masked = rest * hit``,
  ``rest -= masked`` (the dy still to hand out: the first maximum of a window takes it, a later
  tie takes 0 — the reference's rule) and ``dx_phase += masked``, four contiguous ufuncs; then the
  dx phases are copied into dx. Where some window kept dy (``rest`` not all 0 at the end: y holds
  a NaN, which no x equals, or dy an inf or NaN, and inf * 0 is NaN) the chunk is redone by the
  per-offset path over strided views (exact, slower: the old kernel).
  The alternative, each window's first-maximum offset recorded (uint8, three ufuncs per offset)
  and dy scattered with one ``np.add.at`` into the dx phases, measured the same (0.29 ms either way
  for 6 images of CIFAR-10 quick's pool1), and it adds each dx element's shares in output order,
  not the reference's offset order (off by rounding), so the masks stay.
- ``avg_pool_grad``: dy over the divisor into a pitched block, one ``dx_phase += share`` per offset
  (the reference's order of adds, so it is exact), the phases copied into dx.

Pools whose windows do not overlap (kernel <= stride: each input element is read once, so the
phases would only add a copy: the Keras CNN's 2x2/2 pools were 1.1 to 1.3x slower pitched) and
pools whose pitched layout would waste too much (``PH * PW > PITCH_WASTE * OH * OW``: windows much
larger than the stride, so few outputs, e.g. a 7x7 pool over a 7x7 input) take each kernel offset
over only the output positions whose window element lies inside the input instead (strided views,
no copy: the old kernels).

Everything lives in the workspace, a chunk of about :data:`POOL_BYTES` (:data:`POOL_GRAD_BYTES`
for ``max_pool_grad``) of planes at a time: whole images, or channels of one image, at least one
plane. Larger chunks are faster (fewer calls: CIFAR-10 quick's pool1 gradient takes 9.6 ms with
4 MiB chunks, 13.8 ms with 640 KiB) but ``max_pool_grad`` is live at CIFAR-10 quick's peak step,
whose arena must stay below PyTorch's step peak at two threads (tests/test_training_memory.py):
so ``max_pool_grad`` takes its first images in chunks of up to :data:`POOL_TAIL_BYTES` whose
scratch is the part of dx it has not written yet, and only the last ones in the workspace's
(:func:`_max_grad_in_tail`).

Measured at one thread (AMD EPYC, numpy 2.4, float32, min of 15 calls over 3 interleaved runs on a
shared machine; old kernels -> these, forward / backward, ms):

========================================================  ===============  ================
layer                                                     forward          backward
========================================================  ===============  ================
CIFAR-10 quick pool1 max 3x3/2 ceil (100, 32, 32, 32)     4.59 -> 2.97     19.08 -> 13.49
CIFAR-10 quick pool2 avg 3x3/2 ceil (100, 32, 16, 16)     1.52 -> 1.04     1.57 -> 1.11
CIFAR-10 quick pool3 avg 3x3/2 ceil (100, 64, 8, 8)       1.29 -> 0.87     1.26 -> 0.89
Inception-BN max 3x3/2 ceil (4, 64, 112, 112)             4.15 -> 2.33     16.20 -> 10.68
Inception-BN max 3x3/2 ceil (4, 192, 56, 56)              3.01 -> 1.97     11.56 -> 8.09
Inception-BN avg 3x3/1 (4, 256, 30, 30)                   1.92 -> 1.00     1.69 -> 1.23
Inception-BN max 3x3/1 (4, 1024, 9, 9)                    1.40 -> 0.46     4.81 -> 2.32
max 3x3/1 pad 1 (4, 256, 28, 28)                          2.21 -> 1.26     10.79 -> 6.14
Keras CNN max 2x2/2 (16, 32, 96, 96), strided views      2.46 -> 2.30     10.48 -> 10.75
========================================================  ===============  ================
"""
from __future__ import annotations

import numpy as np

from ...ir import Graph, Node
from ...ops.pool import avg_divisor, pool_geometry

POOL_BYTES = 1 << 20  # workspace of one chunk of planes (phases, pitched output, masks): L2-sized
POOL_GRAD_BYTES = 640 << 10  # max_pool_grad's chunk (it is live at CIFAR-10 quick's peak step)
POOL_TAIL_BYTES = 4 << 20  # max_pool_grad's larger chunks, in the part of dx not written yet
PITCH_WASTE = 2.5  # pitched only while a plane's PH * PW is at most this many times OH * OW
GLOBAL_SUM_LOOP = 1024  # global average pools up to this many windows sum in the reference's order


# ---- helpers ----------------------------------------------------------------------------------------
def _spec(graph: Graph, tensor: str, batch: int):
    s = graph.specs[tensor]
    return s.concrete(batch), np.dtype(s.dtype)


def _shaped(a: np.ndarray, shape) -> np.ndarray:
    """``a`` reshaped without copying (raises if the layout does not allow it)."""
    v = a.view()
    v.shape = shape
    return v


def _flat_or_none(a: np.ndarray):
    """``a`` as a 1-D view when it is C-contiguous, else None."""
    return a.reshape(-1) if a.flags.c_contiguous else None


def _round4(nbytes: int) -> int:
    return -(-nbytes // 4) * 4


def _typed(ws, dtype, offset_bytes: int = 0) -> np.ndarray:
    """The workspace from ``offset_bytes`` on as a 1-D array of ``dtype`` (whole elements)."""
    raw = ws.view(np.uint8)[offset_bytes:]
    return raw[:raw.size - raw.size % dtype.itemsize].view(dtype)


def pool_pads(attrs, h, w, oh, ow):
    """(kernel, stride, (top, bottom, left, right) actually needed to cover every window) — the
    reference's padding (``_padded_windows``), where bottom/right may differ from the attribute."""
    (kh, kw), (sh, sw), (t, b, l, r) = pool_geometry(attrs, h, w)
    bottom = max(0, (oh - 1) * sh + kh - h - t)
    right = max(0, (ow - 1) * sw + kw - w - l)
    return (kh, kw), (sh, sw), (t, bottom, l, right)


# ---- geometry ---------------------------------------------------------------------------------------
def _phase_range(a: int, s: int, lo: int, size: int, count: int):
    """(phase slice, input slice) of phase ``a`` of stride ``s``: phase row k holds input row
    ``a - lo + k * s``; None when the phase holds no input row."""
    k0 = max(0, -((a - lo) // s))
    k1 = min(count, (size - 1 - a + lo) // s + 1)
    if k1 <= k0:
        return None
    start = a - lo + k0 * s
    return slice(k0, k1), slice(start, start + (k1 - k0 - 1) * s + 1, s)


class Geometry:
    """A pool's pitched layout: phase shape (PH, PW), the phases the kernel offsets read (each with
    its (phase rows, input rows, phase cols, input cols) and whether it needs no fill), the unused
    phases' input slices, the (phase, shift) of every offset in the reference's order, and
    ``offsets``: :func:`pool_offsets`' per-offset slices (the strided path)."""

    def __init__(self, kernel, stride, pads, h, w, oh, ow):
        (kh, kw), (sh, sw), (t, b, l, r) = kernel, stride, pads
        self.kernel, self.stride, self.pads = kernel, stride, pads
        self.h, self.w, self.oh, self.ow = h, w, oh, ow
        ph, pw = -(-(h + t + b) // sh), -(-(w + l + r) // sw)
        self.ph, self.pw, self.plane = ph, pw, ph * pw
        used = sorted({(i % sh, j % sw) for i in range(kh) for j in range(kw)})
        self.phases, self.unused = [], []
        for a in range(sh):
            for bb in range(sw):
                rows, cols = _phase_range(a, sh, t, h, ph), _phase_range(bb, sw, l, w, pw)
                inside = None if rows is None or cols is None else (rows[0], rows[1], cols[0],
                                                                     cols[1])
                if (a, bb) in used:
                    full = inside is not None and (rows[0], cols[0]) == (slice(0, ph), slice(0, pw))
                    self.phases.append((inside, full))
                elif inside is not None:
                    self.unused.append(inside)
        index = {p: k for k, p in enumerate(used)}
        self.shifts = [(index[(i % sh, j % sw)], (i // sh) * pw + j // sw)
                       for i in range(kh) for j in range(kw)]
        self.first = {}  # phase -> the index of the first offset reading it
        for k, (p, _) in enumerate(self.shifts):
            self.first.setdefault(p, k)
        self.direct = (sh, sw) == (1, 1) and not any(pads)  # the input is its own phase
        # windows that do not overlap read each input element once: the strided views cost no more
        self.pitched = (kh > sh or kw > sw) and ph * pw <= PITCH_WASTE * oh * ow
        self.offsets = pool_offsets(kernel, stride, pads, h, w, oh, ow)

    def span(self, planes: int) -> int:
        """Elements of the pitched layout a ufunc covers for ``planes`` planes."""
        return (planes - 1) * self.plane + (self.oh - 1) * self.pw + self.ow


_GEOMETRIES: dict = {}


def geometry(attrs, h, w, oh, ow) -> Geometry:
    kernel, stride, pads = pool_pads(attrs, h, w, oh, ow)
    key = (kernel, stride, pads, h, w, oh, ow, PITCH_WASTE)
    geo = _GEOMETRIES.get(key)
    if geo is None:
        if len(_GEOMETRIES) > 4096:
            _GEOMETRIES.clear()
        geo = _GEOMETRIES[key] = Geometry(kernel, stride, pads, h, w, oh, ow)
    return geo


def pool_offsets(kernel, stride, pads, h, w, oh, ow):
    """Per kernel offset (i, j), in the reference's order: (output rows, output cols, input rows,
    input cols) slices of the output positions whose window element (i, j) lies inside the input,
    or None when there are none."""
    (kh, kw), (sh, sw), (t, _, l, _) = kernel, stride, pads

    def valid(size, out, k, s, lo):  # positions p with 0 <= p*s + k - lo < size
        first = max(0, -(-(lo - k) // s))
        last = min(out - 1, (size - 1 + lo - k) // s)
        if last < first:
            return None
        start = first * s + k - lo
        return slice(first, last + 1), slice(start, start + (last - first) * s + 1, s)

    found = []
    for i in range(kh):
        for j in range(kw):
            vr, vc = valid(h, oh, i, sh, t), valid(w, ow, j, sw, l)
            found.append(None if vr is None or vc is None else (vr[0], vc[0], vr[1], vc[1]))
    return found


def _chunks(n: int, c: int, planes: int):
    """(images, channels) slices of chunks of at most ``planes`` planes: whole images when one
    fits, else channel ranges of one image."""
    if planes >= c:
        m = planes // c
        for start in range(0, n, m):
            yield slice(start, min(n, start + m)), slice(None)
    else:
        for i in range(n):
            for start in range(0, c, planes):
                yield slice(i, i + 1), slice(start, min(c, start + planes))


def _planes(per_plane: int, c: int, n: int, budget: int | None = None) -> int:
    """Planes per chunk: about ``budget`` (:data:`POOL_BYTES`) of workspace, at least one, at most
    all."""
    return max(1, min(n * c, (budget or POOL_BYTES) // max(1, per_plane)))


def _phases(xs, geo: Geometry, fill, buf, filled=False):
    """The phases of ``xs`` (m, c, H, W) as flat views of ``buf`` (one (m*c*PH*PW) block each);
    ``filled``: the padding is still there from the previous chunk of the same size."""
    m, c = xs.shape[:2]
    size = m * c * geo.plane
    views = []
    for k, (inside, full) in enumerate(geo.phases):
        flat = buf[k * size:(k + 1) * size]
        views.append(flat)
        if not (full or filled):
            flat.fill(fill)
        if inside is not None:
            rows, rin, cols, cin = inside
            np.copyto(_shaped(flat, (m, c, geo.ph, geo.pw))[:, :, rows, cols],
                      xs[:, :, rin, cin])
    return views


def _pitched(flat, geo: Geometry, shape):
    """The (m, c, OH, OW) output positions of a pitched flat block."""
    return _shaped(flat[:shape[0] * shape[1] * geo.plane],
                   (shape[0], shape[1], geo.ph, geo.pw))[:, :, :geo.oh, :geo.ow]


# ---- forward ----------------------------------------------------------------------------------------
def _forward_per_plane(geo: Geometry, itemsize: int) -> int:
    return (len(geo.phases) + 1) * geo.plane * itemsize


def pool_workspace(node: Node, graph: Graph, batch: int) -> int:
    (n, c, h, w), dtype = _spec(graph, node.inputs[0], batch)
    oh, ow = graph.specs[node.outputs[0]].shape[2:]
    geo = geometry(node.attrs, h, w, oh, ow)
    if not geo.pitched:
        return 0
    per = _forward_per_plane(geo, dtype.itemsize)
    return _round4(_planes(per, c, n) * per)


def _forward(x, out, geo: Geometry, fill, ws, avg: bool):
    """The pitched forward: out = max (or sum) over the windows, in the reference's order."""
    n, c = x.shape[:2]
    wsd = _typed(ws, x.dtype)
    planes = _planes(_forward_per_plane(geo, x.itemsize), c, n)
    filled = 0  # the chunk size whose phase padding is in the workspace
    for imgs, chans in _chunks(n, c, planes):
        xs, os = x[imgs, chans], out[imgs, chans]
        count = xs.shape[0] * xs.shape[1]
        size, span = count * geo.plane, geo.span(count)
        src = _flat_or_none(xs) if geo.direct else None
        srcs = [src] if src is not None else _phases(xs, geo, fill, wsd, filled == size)
        filled = size if src is None else filled
        base = len(geo.phases) * size
        dst = wsd[base:base + size]
        acc = dst[:span]
        (p0, s0), rest = geo.shifts[0], geo.shifts[1:]
        first = srcs[p0][s0:s0 + span]
        if avg and rest:  # ((w0 + w1) + w2) + ...
            (p1, s1), rest = rest[0], rest[1:]
            np.add(first, srcs[p1][s1:s1 + span], out=acc)
        else:
            np.copyto(acc, first)
        op = np.add if avg else np.maximum
        for p, s in rest:
            op(acc, srcs[p][s:s + span], out=acc)
        if avg:
            yield os, _pitched(dst, geo, os.shape)
        else:
            np.copyto(os, _pitched(dst, geo, os.shape))


def _pool_sub(op, x, out, geo: Geometry, fill):
    """``out`` = op-reduction over the windows without padding the input: each kernel offset
    updates the output positions it covers (a padded position would add 0 / never win a max)."""
    oh, ow = out.shape[2:]
    started = False
    for entry in geo.offsets:
        if entry is None:
            continue
        rows, cols, rs, cs = entry
        src = x[:, :, rs, cs]
        if not started:
            started = True
            if (rows.start, rows.stop, cols.start, cols.stop) == (0, oh, 0, ow):
                np.copyto(out, src)  # (0 + w0) == w0, max(-inf, w0) == w0
                continue
            out.fill(fill)
        dst = out[:, :, rows, cols]
        op(dst, src, out=dst)


def max_pool(attrs, inputs, outputs, ws):
    x, out = inputs[0], outputs[0]
    h, w = x.shape[2:]
    oh, ow = out.shape[2:]
    geo = geometry(attrs, h, w, oh, ow)
    if (oh, ow) == (1, 1) and not any(geo.pads):  # a global pool: one reduction, not h*w ufuncs
        kh, kw = geo.kernel
        np.maximum.reduce(x[:, :, :kh, :kw], axis=(2, 3), keepdims=True, out=out)
    elif not geo.pitched:
        _pool_sub(np.maximum, x, out, geo, -np.inf)
    else:
        for _ in _forward(x, out, geo, -np.inf, ws, avg=False):
            pass


_DIVISORS: dict = {}


def avg_divisor_of(attrs, h, w, oh, ow, dtype):
    """The reference's divisor (OH, OW) array, or one number when all are equal; per geometry."""
    key = (attrs["kernel"], attrs["stride"], attrs["pads"], attrs["global_pool"],
           attrs["count_include_pad"], h, w, oh, ow, dtype.str)
    div = _DIVISORS.get(key)
    if div is None:
        (kh, kw), (sh, sw), (t, b, l, r) = pool_geometry(attrs, h, w)
        inc = attrs["count_include_pad"]
        d = np.outer(avg_divisor(h, oh, kh, sh, t, b, inc), avg_divisor(w, ow, kw, sw, l, r, inc))
        d = np.maximum(d, 1).astype(dtype)
        div = d.flat[0] if (d == d.flat[0]).all() else d
        if len(_DIVISORS) > 4096:
            _DIVISORS.clear()
        _DIVISORS[key] = div
    return div


def avg_pool(attrs, inputs, outputs, ws):
    x, out = inputs[0], outputs[0]
    h, w = x.shape[2:]
    oh, ow = out.shape[2:]
    geo = geometry(attrs, h, w, oh, ow)
    div = avg_divisor_of(attrs, h, w, oh, ow, out.dtype)
    kh, kw = geo.kernel
    if (oh, ow) == (1, 1) and not any(geo.pads) and kh * kw > GLOBAL_SUM_LOOP:
        # a large global pool: one reduction (pairwise, so rounded unlike the reference's
        # window-by-window sum, which smaller pools keep: a stored ONNX output can depend on it)
        np.add.reduce(x[:, :, :kh, :kw], axis=(2, 3), keepdims=True, out=out)
        np.divide(out, div, out=out)
    elif not geo.pitched:
        _pool_sub(np.add, x, out, geo, 0)
        np.divide(out, div, out=out)
    else:
        for os, sums in _forward(x, out, geo, 0, ws, avg=True):
            np.divide(sums, div, out=os)  # the copy out of the pitched sums, or in place


# ---- max_pool_grad ----------------------------------------------------------------------------------
def _max_grad_per_plane(geo: Geometry, itemsize: int) -> int:
    """Pitched: the x and dx phases, pitched y, rest and masked dy, the hit mask; strided (the
    fallback of every chunk): two masks and two dy-shaped blocks per output."""
    strided = geo.oh * geo.ow * (2 + 2 * itemsize)
    if not geo.pitched:
        return strided
    return max(strided, (2 * len(geo.phases) + 3) * geo.plane * itemsize + geo.plane)


def max_pool_grad_workspace(node: Node, graph: Graph, batch: int) -> int:
    (n, c, h, w), dtype = _spec(graph, node.inputs[0], batch)
    oh, ow = graph.specs[node.inputs[1]].shape[2:]
    geo = geometry(node.attrs, h, w, oh, ow)
    per = _max_grad_per_plane(geo, dtype.itemsize)
    # + an element: the strided path aligns its floats after the masks
    return _round4(_planes(per, c, n, POOL_GRAD_BYTES) * per + dtype.itemsize)


def max_pool_grad(attrs, inputs, outputs, ws):
    x, y, dy = inputs
    dx = outputs[0]
    n, c, h, w = x.shape
    oh, ow = y.shape[2:]
    geo = geometry(attrs, h, w, oh, ow)
    per_plane = _max_grad_per_plane(geo, x.itemsize)
    done = _max_grad_in_tail(geo, x, y, dy, dx, per_plane) if geo.pitched else 0
    x, y, dy, dx = x[done:], y[done:], dy[done:], dx[done:]
    planes = _planes(per_plane, c, n - done, POOL_GRAD_BYTES)
    filled = 0  # the chunk size whose paddings (x phases, y and dy pitched) are in the workspace
    with np.errstate(invalid="ignore"):  # inf * 0 in a pitched try that the strided path redoes
        for imgs, chans in _chunks(n - done, c, planes):
            xs, ys, dys, dxs = x[imgs, chans], y[imgs, chans], dy[imgs, chans], dx[imgs, chans]
            size = xs.shape[0] * xs.shape[1] * geo.plane
            if geo.pitched and _max_grad_pitched(geo, xs, ys, dys, dxs, ws, filled == size):
                filled = size
            else:
                _max_grad_strided(geo, xs, ys, dys, dxs, ws)
                filled = 0


def _max_grad_in_tail(geo: Geometry, x, y, dy, dx, per_plane: int) -> int:
    """The gradient of the first images in chunks of up to :data:`POOL_TAIL_BYTES` of scratch,
    taken from the images of dx not written yet (dx is the output: nothing reads those bytes
    before this launch writes them); returns how many images were done (the rest: the workspace's
    smaller chunks). Larger chunks mean fewer ufunc calls, which two threads' parts otherwise
    contend for (CIFAR-10 quick's training step at 2 threads: 87 ms with 640 KiB chunks, 74.5 ms
    with 4 MiB ones), without a larger workspace in the plan: the training arena stays under
    PyTorch's step peak. Only for a C-contiguous dx that shares no memory with x, y or dy."""
    n, c = x.shape[:2]
    flat = _flat_or_none(dx)
    if flat is None or n < 2 or any(np.may_share_memory(dx, a) for a in (x, y, dy)):
        return 0
    image_dx, image_ws = dx[0].nbytes, per_plane * c
    most = max(1, POOL_TAIL_BYTES // image_ws)
    done = 0
    with np.errstate(invalid="ignore"):
        while True:
            # k images, their scratch (plus the strided path's alignment element) after them
            k = min(most, ((n - done) * image_dx - x.itemsize) // (image_dx + image_ws))
            if k < 1 or k * image_ws <= POOL_GRAD_BYTES:  # no larger than the workspace's chunks
                return done
            s = slice(done, done + k)
            scratch = flat[(done + k) * (image_dx // dx.itemsize):]
            if not _max_grad_pitched(geo, x[s], y[s], dy[s], dx[s], scratch, False):
                _max_grad_strided(geo, x[s], y[s], dy[s], dx[s], scratch)
            done += k


def _max_grad_pitched(geo: Geometry, xs, ys, dys, dxs, ws, filled: bool) -> bool:
    """One chunk in the pitched layout. False (dx not final) when some window's dy was not handed
    out whole (``rest`` not all 0 at the end): y holds a NaN (no x equals it), or dy an inf or NaN
    (inf * 0 is NaN) — the strided path's cases. ``filled``: the paddings are still in the
    workspace from the previous chunk (of the same size)."""
    m, c = xs.shape[:2]
    count = m * c
    size, span = count * geo.plane, geo.span(count)
    wsd = _typed(ws, xs.dtype)
    nph = len(geo.phases)
    yp = wsd[2 * nph * size:(2 * nph + 1) * size]
    rest = wsd[(2 * nph + 1) * size:(2 * nph + 2) * size]
    masked = wsd[(2 * nph + 2) * size:(2 * nph + 2) * size + span]
    hit = ws.view(np.uint8)[(2 * nph + 3) * size * xs.itemsize:][:span].view(np.bool_)
    if not filled:
        yp.fill(0)  # garbage positions are compared, never used: any finite value
        rest.fill(0)  # garbage positions hand out 0 (and stay 0)
    np.copyto(_pitched(yp, geo, ys.shape), ys)
    np.copyto(_pitched(rest, geo, dys.shape), dys)
    src = _flat_or_none(xs) if geo.direct else None
    xph = [src] if src is not None else _phases(xs, geo, np.nan, wsd, filled)
    out = _flat_or_none(dxs) if geo.direct else None
    if out is not None:
        dxph = [out]
    else:
        dxph = [wsd[(nph + k) * size:(nph + k + 1) * size] for k in range(nph)]
    for p, k in geo.first.items():  # zeros where the first offset reading a phase writes nothing
        s = geo.shifts[k][1]
        dxph[p][:s].fill(0)
        dxph[p][s + span:].fill(0)
    r, yv = rest[:span], yp[:span]
    for k, (p, s) in enumerate(geo.shifts):
        np.equal(xph[p][s:s + span], yv, out=hit)
        np.multiply(r, hit, out=masked)  # the first maximum takes the dy still there
        np.subtract(r, masked, out=r)  # rest - rest * 1 == 0 exactly: a later tie takes 0
        target = dxph[p][s:s + span]
        if geo.first[p] == k:
            np.copyto(target, masked)  # (0 + dy == dy, up to the sign of a zero)
        else:
            np.add(target, masked, out=target)
    if np.count_nonzero(r):
        return False
    if out is None:
        for (inside, _), ph in zip(geo.phases, dxph):
            if inside is not None:
                rows, rin, cols, cin = inside
                np.copyto(dxs[:, :, rin, cin], _shaped(ph, (m, c, geo.ph, geo.pw))[:, :, rows, cols])
        for _, rin, _, cin in geo.unused:  # input positions no window reads
            dxs[:, :, rin, cin] = 0
    return True


def _max_grad_strided(geo: Geometry, xs, ys, dys, dxs, ws):
    """Per kernel offset over the output positions whose window element lies in the input (strided
    views, no padded copy): a comparison with ``y`` into a mask, ``hit > done`` (the first maximum
    wins), ``dy * hit`` (a masked copy where dy holds an inf or NaN) and one strided add into dx.
    When y has no NaN and dy is finite, the dy still to hand out is kept instead of ``done``."""
    per = ys.size
    hit_buf = ws.view(np.uint8)[:per].view(np.bool_)
    done_buf = ws.view(np.uint8)[per:2 * per].view(np.bool_)
    floats = _typed(ws, xs.dtype, -(-2 * per // xs.itemsize) * xs.itemsize)
    masked_buf, rest_buf = floats[:per], floats[per:2 * per]
    dxs.fill(0)
    nan = bool(np.isnan(np.max(ys)))  # max propagates NaN: no temporary like ys
    finite = bool(np.isfinite(np.max(dys)) and np.isfinite(np.min(dys)))
    if finite and not nan:
        rest = _shaped(rest_buf, ys.shape)
        np.copyto(rest, dys)
    else:
        done = _shaped(done_buf, ys.shape)
        done.fill(False)
    for entry in geo.offsets:
        if entry is None:
            continue
        rows, cols, rs, cs = entry
        ysub, xsub = ys[:, :, rows, cols], xs[:, :, rs, cs]
        hit = _shaped(hit_buf[:ysub.size], ysub.shape)
        masked = _shaped(masked_buf[:ysub.size], ysub.shape)
        np.equal(xsub, ysub, out=hit)
        if finite and not nan:
            rsub = rest[:, :, rows, cols]
            np.multiply(rsub, hit, out=masked)
            np.subtract(rsub, masked, out=rsub)
        else:
            dsub = done[:, :, rows, cols]
            if nan:
                hit |= np.isnan(xsub)  # rare (a NaN in the output): one small temporary is fine
            np.greater(hit, dsub, out=hit)  # hit and not done: the first maximum of each window
            np.logical_or(dsub, hit, out=dsub)
            if finite:  # dy * hit is the reference's where(hit, dy, 0) (up to the sign of 0)
                np.multiply(dys[:, :, rows, cols], hit, out=masked)
            else:  # an inf or NaN times 0 is NaN: copy where hit
                np.copyto(masked, 0)
                np.copyto(masked, dys[:, :, rows, cols], where=hit)
        target = dxs[:, :, rs, cs]
        np.add(target, masked, out=target)


# ---- avg_pool_grad ----------------------------------------------------------------------------------
def _avg_grad_per_plane(geo: Geometry, itemsize: int) -> int:
    if not geo.pitched:
        return geo.oh * geo.ow * itemsize
    return (len(geo.phases) + 1) * geo.plane * itemsize


def avg_pool_grad_workspace(node: Node, graph: Graph, batch: int) -> int:
    (n, c, oh, ow), dtype = _spec(graph, node.inputs[0], batch)
    h, w = node.attrs["input_size"]
    geo = geometry(node.attrs, h, w, oh, ow)
    per = _avg_grad_per_plane(geo, dtype.itemsize)
    return _round4(_planes(per, c, n) * per)


def avg_pool_grad(attrs, inputs, outputs, ws):
    """dy over the divisor, then added into every window element in the reference's order of
    kernel offsets (exact): pitched, or per offset over strided views."""
    dy, dx = inputs[0], outputs[0]
    n, c, oh, ow = dy.shape
    h, w = attrs["input_size"]
    geo = geometry(attrs, h, w, oh, ow)
    div = avg_divisor_of(attrs, h, w, oh, ow, dy.dtype)
    planes = _planes(_avg_grad_per_plane(geo, dy.itemsize), c, n)
    wsd = _typed(ws, dy.dtype)
    nph = len(geo.phases)
    for imgs, chans in _chunks(n, c, planes):
        dys, dxs = dy[imgs, chans], dx[imgs, chans]
        m, cc = dys.shape[:2]
        if not geo.pitched:
            share = _shaped(wsd[:dys.size], dys.shape)
            np.divide(dys, div, out=share)
            dxs.fill(0)
            for entry in geo.offsets:
                if entry is not None:
                    rows, cols, rs, cs = entry
                    target = dxs[:, :, rs, cs]
                    np.add(target, share[:, :, rows, cols], out=target)
            continue
        size, span = m * cc * geo.plane, geo.span(m * cc)
        share = wsd[nph * size:(nph + 1) * size]
        share.fill(0)
        np.divide(dys, div, out=_pitched(share, geo, dys.shape))
        out = _flat_or_none(dxs) if geo.direct else None
        dxph = [out] if out is not None else [wsd[k * size:(k + 1) * size] for k in range(nph)]
        for p, k in geo.first.items():  # zeros where the first offset of a phase writes nothing
            s = geo.shifts[k][1]
            dxph[p][:s].fill(0)
            dxph[p][s + span:].fill(0)
        sv = share[:span]
        for k, (p, s) in enumerate(geo.shifts):
            target = dxph[p][s:s + span]
            if geo.first[p] == k:
                np.copyto(target, sv)  # 0 + share == share (up to the sign of a zero)
            else:
                np.add(target, sv, out=target)
        if out is None:
            for (inside, _), ph in zip(geo.phases, dxph):
                if inside is not None:
                    rows, rin, cols, cin = inside
                    np.copyto(dxs[:, :, rin, cin],
                              _shaped(ph, (m, cc, geo.ph, geo.pw))[:, :, rows, cols])
            for _, rin, _, cin in geo.unused:
                dxs[:, :, rin, cin] = 0
