"""numpy kernels of the ``cpu`` device that differ from the ops' reference forwards.

Every kernel has the signature ``fn(attrs, inputs, outputs, workspace)`` and writes into its planned
output views, which may be strided slices of a larger buffer (a concat branch's channels); inputs may
be such slices too. ``WORKSPACES[op](node, graph, batch)`` gives the scratch bytes the memory plan
reserves for the node (live only at its step); a float32 view of that block arrives as
``workspace`` (``None`` when 0 bytes were asked for) and kernels view it as the dtype they need.

The point of these kernels is that a step allocates nothing: every temporary larger than a few
per-row/per-channel numbers lives in the planned workspace, and elementwise work runs over cache-sized
blocks (:data:`BLOCK` elements) so that a chain of ufuncs re-reads its data from cache. A kernel may
compute derived index/shape constants once per geometry (a dict keyed by the geometry
tuple, filled at warm-up); nothing is ever cached on a parameter array, and every kernel computes
what the reference forward computes, in the same dtype (float64 where the reference uses it).

- ``conv2d``: im2col into the workspace in chunks of about :data:`COLS_BYTES` (output-row ranges of
  one image when an image's columns are larger, else whole images), one BLAS GEMM (stacked over
  the images) per chunk and group straight into the output, bias and activation on each chunk
  while it is in cache. 1x1 convolutions are GEMMs with no copy at all. That is the fixed rule
  (``conv2d``); the device may pick another algorithm per layer (``conv2d_im2col``,
  ``conv2d_nhwc``, ``conv2d_pointwise``, ``conv2d_winograd``: see :mod:`.algorithms`).
- ``conv2d_split`` (merged sibling convolutions): ``conv2d`` (the fixed rule) without its epilogue
  into the workspace, a chunk of images at a time; the epilogue (bias, activation) then writes each
  output's channels from there into that output, which may be a slice of a concat.
- ``dense``: one GEMM, then the epilogue.
- ``max_pool`` / ``avg_pool``: :mod:`.pool` (one contiguous ufunc per kernel offset over a
  pitched phase layout of a chunk of planes, in the reference's order).
- ``lrn``: one channel plane (of a chunk of images) at a time: squares in a float64 ring of
  ``size`` planes, a float64 running window sum (the reference's float64 accuracy without its
  full-size temporaries), ``s ** -0.75`` as two square roots.
- unary ops (also the activations of :mod:`graphrt.ops.activation`, whose arithmetic takes its
  scratch arrays as arguments) and ``elementwise_chain``, ``add``: ops that need temporaries (leaky
  relu, sigmoid, gelu, swish, weighted add) run block by block with workspace temporaries — a
  chain re-reads each block from cache.
- ``softmax`` / ``log_softmax``: reductions into the workspace.
- ``split`` / ``concat`` (when the plan did not alias them), ``zero_pad``, ``flatten``/``reshape``,
  ``transpose``, ``batch_norm``, ``channel_affine``: copies and broadcasts with no temporaries.

Every kernel runs with numpy's ufunc buffer size at :data:`UFUNC_BUFSIZE` (see :func:`_small_buffers`).
"""
from __future__ import annotations

import numpy as np

from ...ir import Graph, Node
from ...ops import activation
from . import nhwc, pool, winograd

BLOCK = 16384  # elements of an elementwise block: a few of them fit in L1/L2 together
COLS_BYTES = 1 << 20  # im2col columns gathered per GEMM: L2-sized. Measured one layer at a time
# (one BLAS thread, interleaved, 15 runs) on LeNet's, CIFAR-10 quick's and the Keras CNN's layers:
# 1 MiB is as fast as 8 MiB (0.89x to 1.05x the time), and each part of a split launch has its own
# chunk, so this is also the largest block of a training step's forward (it was 8 MiB: a LeNet
# step's peak)
SPLIT_BYTES = 8 << 20  # conv2d_split: its whole output computed this many bytes of images at a time
LRN_BYTES = 2 << 20  # LRN's float64 planes (window sums, squares) for a chunk of images
UFUNC_BUFSIZE = 2048  # numpy's per-operand iteration buffer while a kernel runs (see _small_buffers)


# ---- helpers ----------------------------------------------------------------------------------------
def _spec(graph: Graph, tensor: str, batch: int):
    s = graph.specs[tensor]
    return s.concrete(batch), np.dtype(s.dtype)


def _bools(ws, count: int, offset_bytes: int = 0) -> np.ndarray:
    return ws.view(np.uint8)[offset_bytes:offset_bytes + count].view(np.bool_)


def _round4(nbytes: int) -> int:
    return -(-nbytes // 4) * 4


def _flat(a: np.ndarray, shape) -> np.ndarray:
    """``a`` reshaped without copying (raises if the layout does not allow it: never write to a copy)."""
    v = a.view()
    v.shape = shape
    return v


def _reshaped(a: np.ndarray, shape):
    """``a`` reshaped without copying, or None when its strides do not allow it."""
    try:
        return _flat(a, shape)
    except AttributeError:
        return None


_BLOCKS: dict = {}


def _blocks(shape: tuple, limit: int | None = None) -> list:
    """Index tuples splitting an array of ``shape`` into blocks of at most ``limit`` (default
    :data:`BLOCK`) elements, each the widest run of trailing axes that fits (cached per shape)."""
    limit = limit or BLOCK
    key = (shape, limit)
    found = _BLOCKS.get(key)
    if found is not None:
        return found
    nd = len(shape)
    inner, d = 1, nd
    while d > 0 and inner * shape[d - 1] <= limit:
        d -= 1
        inner *= shape[d]
    # axes d.. fit whole; split axis d-1 into groups (or the last axis into runs)
    if d == 0:
        out = [()]
    else:
        g = max(1, limit // inner)
        size = shape[d - 1]
        out = []
        for lead in np.ndindex(*shape[:d - 1]):
            for s in range(0, size, g):
                out.append(tuple(int(i) for i in lead) + (slice(s, min(size, s + g)),))
    if len(_BLOCKS) > 4096:
        _BLOCKS.clear()
    _BLOCKS[key] = out
    return out


def _block_temps(ws, dtype, k: int, size: int):
    """``k`` temporaries for the blocks of an array of ``size`` elements of ``dtype``, from the
    workspace (``k * min(BLOCK, size)`` elements: see :func:`_temps_bytes`)."""
    base = ws.view(dtype)
    m = min(BLOCK, size)
    return [base[i * m:(i + 1) * m] for i in range(k)]


def _temps_bytes(k: int, shape, dtype) -> int:
    return k * min(BLOCK, int(np.prod(shape))) * np.dtype(dtype).itemsize


def _tmp(t: np.ndarray, like: np.ndarray) -> np.ndarray:
    return _flat(t[:like.size], like.shape)


# ---- elementwise steps, each bit-for-bit the op's reference, with no temporaries but the caller's ---
TEMPS = {"relu": 0, "tanh": 0, "sigmoid": 2, "scale": 0, "dropout": 0, "identity": 0}


def _temps_needed(op: str, attrs) -> int:
    if op == "relu" and attrs.get("negative_slope", 0.0) != 0.0:
        return 1
    return TEMPS[op] if op in TEMPS else activation.DEFS[op].temps


def _step(op: str, attrs, x: np.ndarray, out: np.ndarray, t1, t2) -> None:
    """``out = op(x)`` elementwise; ``t1``/``t2`` are scratch arrays shaped like ``x`` (or None when
    the step needs none). ``out`` may be ``x``."""
    if op == "relu":
        slope = attrs["negative_slope"]
        if slope == 0.0:
            np.maximum(x, 0, out=out)
        else:
            # x * where(x > 0, 1, slope) == max(x, slope*x) for slope <= 1, min(...) for slope >= 1
            np.multiply(x, x.dtype.type(slope), out=t1)
            (np.maximum if slope <= 1.0 else np.minimum)(x, t1, out=out)
    elif op == "tanh":
        np.tanh(x, out=out)
    elif op == "sigmoid":
        # where(x >= 0, 1, e) / (1 + e) with e = exp(-|x|) <= 1: the numerator is max(e, H(x))
        np.abs(x, out=t1)
        np.negative(t1, out=t1)
        np.exp(t1, out=t1)
        np.add(t1, 1, out=t2)
        np.heaviside(x, 1, out=out)
        np.maximum(out, t1, out=out)
        np.divide(out, t2, out=out)
    elif op == "scale":
        np.multiply(x, x.dtype.type(attrs["scale"]), out=out)
        if attrs["shift"]:
            out += x.dtype.type(attrs["shift"])
        if attrs["power"] != 1.0:
            np.power(out, x.dtype.type(attrs["power"]), out=out)
    elif op in ("dropout", "identity"):
        if out is not x:
            np.copyto(out, x)
    else:  # the activations of graphrt.ops.activation compute into the given scratch
        activation.DEFS[op].compute(attrs, x, out, [t1, t2][:activation.DEFS[op].temps])


def _run_steps(steps, x: np.ndarray, out: np.ndarray, ws) -> None:
    """Apply ``steps`` ((op, attrs), ...) elementwise from ``x`` to ``out`` block by block."""
    k = max(_temps_needed(op, a) for op, a in steps)
    if k == 0:
        # no temporaries: whole-array ufuncs (each one pass, no Python per block) are as fast
        src = x
        for op, a in steps:
            _step(op, a, src, out, None, None)
            src = out
        return
    temps = _block_temps(ws, out.dtype, k, out.size)
    if x.shape != out.shape:  # pragma: no cover - shapes are checked by inference
        raise ValueError("shape mismatch")
    for idx in _blocks(out.shape):
        xb, ob = x[idx], out[idx]
        t = [_tmp(tt, ob) for tt in temps] + [None, None]
        src = xb
        for op, a in steps:
            _step(op, a, src, ob, t[0], t[1])
            src = ob


def _epilogue_step(attrs) -> tuple:
    """The conv2d/dense epilogue as one elementwise step (op, attrs)."""
    act = attrs.get("activation", "none")
    if act == "relu":
        return act, {"negative_slope": attrs.get("negative_slope", 0.0)}
    if act in activation.DEFS:
        return act, activation.OPS[act].normalize_attrs(dict(attrs.get("activation_params", ())))
    return act, {}


def _activate(out: np.ndarray, attrs, ws) -> None:
    """The conv2d/dense epilogue in place, temporaries from ``ws`` (see :func:`_epilogue_temps`)."""
    if attrs["activation"] == "none":
        return
    _run_steps((_epilogue_step(attrs),), out, out, ws)


def _epilogue_temps(attrs) -> int:
    """Block temporaries the fused activation needs."""
    if attrs.get("activation", "none") == "none":
        return 0
    return _temps_needed(*_epilogue_step(attrs))


def _unary_workspace(node: Node, graph: Graph, batch: int) -> int:
    shape, dtype = _spec(graph, node.outputs[0], batch)
    if node.op == "elementwise_chain":
        k = max(_temps_needed(op, a) for op, a in node.attrs["steps"])
    else:
        k = _temps_needed(node.op, node.attrs)
    return _temps_bytes(k, shape, dtype)


def _unary_kernel(op: str):
    def run(attrs, inputs, outputs, ws):
        _run_steps(((op, attrs),), inputs[0], outputs[0], ws)
    run.__name__ = op
    return run


def elementwise_chain(attrs, inputs, outputs, ws):
    _run_steps(attrs["steps"], inputs[0], outputs[0], ws)


def add(attrs, inputs, outputs, ws):
    out = outputs[0]
    coeffs = attrs["coeffs"] or (1.0,) * len(inputs)
    dt = out.dtype.type
    np.multiply(inputs[0], dt(coeffs[0]), out=out)
    if all(c == 1.0 for c in coeffs[1:]):
        for x in inputs[1:]:
            out += x
        return
    (t,) = _block_temps(ws, out.dtype, 1, out.size)
    for idx in _blocks(out.shape):
        ob = out[idx]
        tb = _tmp(t, ob)
        for c, x in zip(coeffs[1:], inputs[1:]):
            if c == 1.0:
                ob += x[idx]
            else:
                np.multiply(x[idx], dt(c), out=tb)
                ob += tb


def add_workspace(node: Node, graph: Graph, batch: int) -> int:
    coeffs = node.attrs["coeffs"]
    if not coeffs or all(c == 1.0 for c in coeffs[1:]):
        return 0
    shape, dtype = _spec(graph, node.outputs[0], batch)
    return _temps_bytes(1, shape, dtype)


# ---- convolution ------------------------------------------------------------------------------------
def _is_pointwise(attrs, kh, kw) -> bool:
    return (kh, kw) == (1, 1) and attrs["stride"] == (1, 1) and not any(attrs["pads"])


def _conv_plan(n, c, h, w, o, cg, kh, kw, oh, ow, attrs, itemsize, temps=0):
    """How the im2col columns are chunked. Returns (mode, count, padded elements per image,
    workspace elements); the columns' space (after the padded images) holds at least ``temps``
    elements for the epilogue, which runs after the GEMMs.

    The chunk holds about :data:`COLS_BYTES` of columns (at least one output row).

    - "rows" (an image's columns exceed the chunk): ``count`` output rows per chunk,
      gathered by strided windows, GEMM straight into the output.
    - "images": ``count`` whole images per chunk, one stacked GEMM straight into the output.
    """
    t, b, l, r = attrs["pads"]
    hp, wp = h + t + b, w + l + r
    padded = c * hp * wp if any(attrs["pads"]) else 0
    k = cg * kh * kw
    per_image = k * oh * ow
    budget = COLS_BYTES
    if per_image * itemsize > budget and oh > 1:
        rows = max(1, min(oh, budget // (itemsize * k * ow)))
        return "rows", rows, padded, padded + max(k * rows * ow, temps)
    imgs = max(1, min(n, budget // (itemsize * per_image)))
    return "images", imgs, padded, imgs * padded + max(imgs * per_image, temps)


def _conv_dims(node: Node, graph: Graph, batch: int):
    (n, c, h, w), dtype = _spec(graph, node.inputs[0], batch)
    o, cg, kh, kw = graph.specs[node.inputs[1]].shape
    oh, ow = graph.specs[node.outputs[0]].shape[2:]
    return n, c, h, w, o, cg, kh, kw, oh, ow, dtype


def conv_workspace(node: Node, graph: Graph, batch: int) -> int:
    """The workspace of :func:`conv2d` (the fixed choice: pointwise GEMM for 1x1, else im2col)."""
    return conv_workspace_of(*_conv_dims(node, graph, batch)[:10], node.attrs,
                             _spec(graph, node.inputs[0], batch)[1])


def conv_workspace_of(n, c, h, w, o, cg, kh, kw, oh, ow, attrs, dtype) -> int:
    """:func:`conv_workspace` of a convolution given by its dimensions (no node: a training kernel
    runs :func:`conv2d` on its own operands)."""
    temps = _epilogue_temps(attrs) * BLOCK
    if _is_pointwise(attrs, kh, kw):
        return temps * dtype.itemsize
    return _conv_plan(n, c, h, w, o, cg, kh, kw, oh, ow, attrs, dtype.itemsize, temps)[3] * \
        dtype.itemsize


def pointwise_workspace(node: Node, graph: Graph, batch: int) -> int:
    _, dtype = _spec(graph, node.inputs[0], batch)
    return _epilogue_temps(node.attrs) * BLOCK * dtype.itemsize


def im2col_workspace(node: Node, graph: Graph, batch: int) -> int:
    n, c, h, w, o, cg, kh, kw, oh, ow, dtype = _conv_dims(node, graph, batch)
    temps = _epilogue_temps(node.attrs) * BLOCK
    _, _, _, elems = _conv_plan(n, c, h, w, o, cg, kh, kw, oh, ow, node.attrs, dtype.itemsize,
                                temps)
    return elems * dtype.itemsize


def winograd_workspace(node: Node, graph: Graph, batch: int) -> int:
    n, c, h, w, o, cg, kh, kw, oh, ow, dtype = _conv_dims(node, graph, batch)
    temps = _epilogue_temps(node.attrs) * BLOCK
    return winograd.workspace_elems(n, c, o, node.attrs["groups"], oh, ow, dtype.itemsize,
                                    temps) * dtype.itemsize


def nhwc_workspace(node: Node, graph: Graph, batch: int) -> int:
    n, c, h, w, o, cg, kh, kw, oh, ow, dtype = _conv_dims(node, graph, batch)
    temps = _epilogue_temps(node.attrs) * BLOCK
    return nhwc.workspace_elems(n, c, h, w, o, node.attrs["groups"], kh, kw, oh, ow,
                                node.attrs["pads"], dtype.itemsize, temps) * dtype.itemsize


def conv2d(attrs, inputs, outputs, ws):
    """The fixed choice: a 1x1 stride-1 unpadded convolution is a GEMM, anything else im2col."""
    kh, kw = inputs[1].shape[2:]
    if _is_pointwise(attrs, kh, kw):
        conv2d_pointwise(attrs, inputs, outputs, ws)
    else:
        conv2d_im2col(attrs, inputs, outputs, ws)


def conv2d_pointwise(attrs, inputs, outputs, ws):
    """A 1x1 stride-1 unpadded convolution: one GEMM per group on the input itself, no im2col."""
    bias = inputs[2] if len(inputs) == 3 else None
    out = outputs[0]
    _conv_pointwise(attrs, inputs[0], inputs[1], out)
    if bias is not None:
        out += bias.reshape(1, -1, 1, 1)
    _activate(out, attrs, ws)


def conv2d_winograd(attrs, inputs, outputs, ws):
    """Winograd F(2x2, 3x3) (3x3, stride 1, dilation 1): see :mod:`.winograd`."""
    x = inputs[0]
    rest = winograd.conv(attrs, x, inputs[1], outputs[0], ws.view(x.dtype), _pad_into)
    _epilogue(outputs[0], inputs[2] if len(inputs) == 3 else None, attrs, rest)


def conv2d_nhwc(attrs, inputs, outputs, ws):
    """im2col in channels-last order and a tall GEMM: see :mod:`.nhwc`."""
    x = inputs[0]
    rest = nhwc.conv(attrs, x, inputs[1], outputs[0], ws.view(x.dtype))
    _epilogue(outputs[0], inputs[2] if len(inputs) == 3 else None, attrs, rest)


def conv2d_im2col(attrs, inputs, outputs, ws):
    """im2col into the workspace, chunk by chunk, and one BLAS GEMM per chunk and group."""
    x, w = inputs[0], inputs[1]
    bias = inputs[2] if len(inputs) == 3 else None
    out = outputs[0]
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    oh, ow = out.shape[2:]
    mode, count, padded, _ = _conv_plan(n, c, h, wd, o, cg, kh, kw, oh, ow, attrs, x.dtype.itemsize)
    wsd = ws.view(x.dtype)
    if mode == "rows":
        for i in range(n):
            xi = _pad_into(x[i:i + 1], attrs["pads"], wsd[:padded]) if padded else x[i:i + 1]
            cols = wsd[padded:]
            for r0 in range(0, oh, count):
                r1 = min(oh, r0 + count)
                region = out[i, :, r0:r1]
                _conv_gather_gemm(attrs, xi, w, region, r0, cols)
                _epilogue(region, bias, attrs, cols)
    else:
        for start in range(0, n, count):
            stop = min(n, start + count)
            m = stop - start
            xs = x[start:stop]
            if padded:
                xs = _pad_into(xs, attrs["pads"], wsd[:padded * m])
            cols = wsd[padded * m:]
            _conv_images(attrs, xs, w, out[start:stop], cols)
            _epilogue(out[start:stop], bias, attrs, cols)


def _epilogue(region, bias, attrs, ws):
    """Bias and activation on a region of the output just computed: (O, rows, OW) of one image or
    (images, O, OH, OW)."""
    if bias is None and attrs["activation"] == "none":
        return
    # the two spatial axes merged when their layout allows it: fewer, longer inner loops
    flat = _reshaped(region, region.shape[:-2] + (region.shape[-2] * region.shape[-1],))
    bshape = (-1, 1)
    if flat is None:
        flat, bshape = region, (-1, 1, 1)
    if bias is not None:
        flat += bias.reshape(bshape)
    _activate(flat, attrs, ws)


def _gemm_into(wg, cols2, dst):
    """``dst`` (O', rows, OW) = ``wg`` (O', K) @ ``cols2`` (K, rows*OW), without a copy."""
    og, rows, ow = dst.shape
    flat = _reshaped(dst, (og, rows * ow))
    if flat is not None:
        np.matmul(wg, cols2, out=flat)
    else:  # the output's rows do not flatten (a slice along H or W): one GEMM per output row
        np.matmul(wg, _flat(cols2, (cols2.shape[0], rows, ow)).transpose(1, 0, 2),
                  out=dst.transpose(1, 0, 2))


def _weights(w, gi, og):
    return w[gi * og:(gi + 1) * og].reshape(og, -1)


def _conv_pointwise(attrs, x, w, out):
    n, c, h, wd = x.shape
    o = w.shape[0]
    g = attrs["groups"]
    og, cg = o // g, c // g
    for gi in range(g):
        xg = x[:, gi * cg:(gi + 1) * cg]
        og_out = out[:, gi * og:(gi + 1) * og]
        x3 = _reshaped(xg, (n, cg, h * wd))
        o3 = _reshaped(og_out, (n, og, h * wd))
        wg = w[gi * og:(gi + 1) * og].reshape(og, cg)
        if x3 is not None and o3 is not None:
            np.matmul(wg, x3, out=o3)
        else:  # planes that do not flatten (a slice along W): one GEMM per image row
            for i in range(n):
                np.matmul(wg, xg[i].transpose(1, 0, 2), out=og_out[i].transpose(1, 0, 2))


def _pad_into(x, pads, buf):
    """``x`` (m, C, H, W) zero-padded into ``buf``; only the border is zeroed."""
    m, c, h, wd = x.shape
    t, b, l, r = pads
    hp, wp = h + t + b, wd + l + r
    xp = _flat(buf[:m * c * hp * wp], (m, c, hp, wp))
    if t:
        xp[:, :, :t] = 0
    if b:
        xp[:, :, hp - b:] = 0
    if l:
        xp[:, :, t:hp - b, :l] = 0
    if r:
        xp[:, :, t:hp - b, wp - r:] = 0
    xp[:, :, t:t + h, l:l + wd] = x
    return xp


def _windows(x, kh, kw, oh, ow, attrs, r0=0):
    """(m, C, KH, KW, oh, OW) strided view of the (padded) input for output rows r0 .. r0+oh."""
    (sh, sw), (dh, dw) = attrs["stride"], attrs["dilation"]
    base = x[:, :, r0 * sh:]
    s = base.strides
    return np.lib.stride_tricks.as_strided(
        base, (x.shape[0], x.shape[1], kh, kw, oh, ow),
        (s[0], s[1], s[2] * dh, s[3] * dw, s[2] * sh, s[3] * sw), writeable=False)


def _conv_gather_gemm(attrs, xi, w, region, r0, cols_buf):
    """Output rows [r0, r0 + rows) of one image (``region`` = out[i, :, r0:r1]): im2col of those
    rows into ``cols_buf``, then one GEMM per group straight into the output."""
    o, cg, kh, kw = w.shape
    _, rows, ow = region.shape
    g = attrs["groups"]
    og = o // g
    k = cg * kh * kw
    p = rows * ow
    cols = _flat(cols_buf[:k * p], (cg, kh, kw, rows, ow))
    cols2 = _flat(cols, (k, p))
    for gi in range(g):
        np.copyto(cols, _windows(xi[:, gi * cg:(gi + 1) * cg], kh, kw, rows, ow, attrs, r0)[0])
        _gemm_into(_weights(w, gi, og), cols2, region[gi * og:(gi + 1) * og])


def _conv_images(attrs, xs, w, out, buf):
    """A chunk of whole images: im2col as (images, K, OH*OW) and one stacked GEMM per group straight
    into the output."""
    m = xs.shape[0]
    o, cg, kh, kw = w.shape
    oh, ow = out.shape[2:]
    g = attrs["groups"]
    og = o // g
    k = cg * kh * kw
    p = oh * ow
    cols = _flat(buf[:m * k * p], (m, cg, kh, kw, oh, ow))
    cols3 = _flat(cols, (m, k, p))
    for gi in range(g):
        np.copyto(cols, _windows(xs[:, gi * cg:(gi + 1) * cg], kh, kw, oh, ow, attrs))
        wg = _weights(w, gi, og)
        dst = out[:, gi * og:(gi + 1) * og]
        out3 = _reshaped(dst, (m, og, p))
        if out3 is not None:
            np.matmul(wg, cols3, out=out3)
        else:
            for i in range(m):
                _gemm_into(wg, cols3[i], dst[i])


# ---- merged sibling convolutions ---------------------------------------------------------------------
def _split_layout(n, o, oh, ow, itemsize) -> tuple[int, int]:
    """(images, elements): a ``conv2d_split`` computes its whole (N, O, OH, OW) output a chunk of
    about :data:`SPLIT_BYTES` of images at a time into the workspace's first ``elements`` (rounded
    up so that the convolution's own workspace after them stays 64-byte aligned)."""
    m = max(1, min(n, SPLIT_BYTES // (o * oh * ow * itemsize)))
    return m, -(-m * o * oh * ow // 16) * 16


def conv2d_split_workspace(node: Node, graph: Graph, batch: int) -> int:
    (n, _, _, _), dtype = _spec(graph, node.inputs[0], batch)
    o = graph.specs[node.inputs[1]].shape[0]
    oh, ow = graph.specs[node.outputs[0]].shape[2:]
    m, wide = _split_layout(n, o, oh, ow, dtype.itemsize)
    plain = node.replace(op="conv2d", attrs={**node.attrs, "activation": "none"})
    return wide * dtype.itemsize + max(conv_workspace(plain, graph, m),
                                       _epilogue_temps(node.attrs) * BLOCK * dtype.itemsize)


def conv2d_split(attrs, inputs, outputs, ws):
    """Sibling convolutions merged (``merge_sibling_convs``): one convolution, without its bias and
    activation, a chunk of images at a time into the workspace; then each output's epilogue reads its
    channels there and writes them straight into that output — which may be a strided slice of a
    concat's buffer (the plan's alias), so nothing is copied twice."""
    x, w = inputs[0], inputs[1]
    bias = inputs[2] if len(inputs) == 3 else None
    n, o = x.shape[0], w.shape[0]
    oh, ow = outputs[0].shape[2:]
    m, size = _split_layout(n, o, oh, ow, x.dtype.itemsize)
    wsd = ws.view(x.dtype)
    wide, rest = _flat(wsd[:m * o * oh * ow], (m, o, oh, ow)), wsd[size:]
    plain = {**attrs, "activation": "none"}
    for start in range(0, n, m):
        stop = min(n, start + m)
        conv2d(plain, [x[start:stop], w], [wide[:stop - start]], rest)
        c0 = 0
        for out in outputs:
            c1 = c0 + out.shape[1]
            src, dst = wide[:stop - start, c0:c1], out[start:stop]
            if bias is None:
                np.copyto(dst, src)
            else:
                np.add(src, bias[c0:c1].reshape(-1, 1, 1), out=dst)
            _activate(dst, attrs, rest)
            c0 = c1


# ---- dense ------------------------------------------------------------------------------------------
WIDE = 2  # dense: W @ x^T (then transposed) when the output has at least this many columns per row
def dense(attrs, inputs, outputs, ws):
    """``x @ W^T`` (+ bias, activation). With at least :data:`WIDE` times more output columns than
    rows (a small batch through a large layer, or a thread's column tile of it) the product is
    computed as ``W @ x^T`` into the workspace and transposed into ``out``: OpenBLAS streams the
    large weight matrix faster as the GEMM's left operand (1 thread, batch 8: AlexNet's
    4096x6400 layer 19.7 -> 16.5 ms, its 1000x4096 layer 3.1 -> 1.5 ms; batch 64 through LeNet's
    500x800 0.65 -> 0.55 ms; with fewer columns than rows it is slower: 100x1024 -> 64 0.16 ->
    0.19 ms)."""
    x, w = inputs[0], inputs[1]
    out = outputs[0]
    rows, cols = out.shape if out.ndim == 2 else (0, 0)
    if rows and cols >= WIDE * rows and ws is not None and ws.nbytes >= out.nbytes:
        flipped = ws.view(out.dtype)[:out.size].reshape(cols, rows)
        np.matmul(w, x.T, out=flipped)
        np.copyto(out, flipped.T)
    else:
        np.matmul(x, w.T, out=out)
    if len(inputs) == 3:
        out += inputs[2]
    _activate(out, attrs, ws)


def dense_workspace(node: Node, graph: Graph, batch: int) -> int:
    """The epilogue's temporaries, or the flipped product when there is one (used before the
    epilogue, so the two share the bytes)."""
    shape, dtype = _spec(graph, node.outputs[0], batch)
    k = _epilogue_temps(node.attrs)
    temps = _temps_bytes(k, shape, dtype) if k else 0
    if len(shape) == 2 and shape[1] >= WIDE * shape[0]:
        temps = max(temps, int(np.prod(shape)) * dtype.itemsize)
    return temps


# ---- normalization ----------------------------------------------------------------------------------
def _lrn_chunk(n, c, h, w, size) -> tuple[int, int]:
    """(images per chunk, float64 planes per image): the running sum, two temporaries and the ring
    of squares, for about :data:`LRN_BYTES` of workspace (at least one image)."""
    planes = min(size, c) + 3
    return max(1, min(n, LRN_BYTES // (planes * h * w * 8))), planes


def lrn_workspace(node: Node, graph: Graph, batch: int) -> int:
    (n, c, h, w), _ = _spec(graph, node.inputs[0], batch)
    m, planes = _lrn_chunk(n, c, h, w, node.attrs["size"])
    return m * planes * h * w * 8


def lrn(attrs, inputs, outputs, ws):
    x, out = inputs[0], outputs[0]
    n, c, h, w = x.shape
    m, _ = _lrn_chunk(n, c, h, w, attrs["size"])
    for start in range(0, n, m):
        _lrn_images(attrs, x[start:start + m], out[start:start + m], ws)


def _lrn_images(attrs, x, out, ws):
    n, c, h, w = x.shape
    size, alpha, beta, k = attrs["size"], attrs["alpha"], attrs["beta"], attrs["k"]
    p = n * h * w
    ring_n = min(size, c)
    f64 = ws.view(np.float64)
    acc, tmp, tmp2, *ring = (_flat(f64[i * p:(i + 1) * p], (n, h, w)) for i in range(3 + ring_n))
    windows = _lrn_windows(c, size)

    def load(j):  # x[:, j] ** 2 in float64, kept in the ring until it leaves the window
        sq = ring[j % ring_n]
        np.copyto(sq, x[:, j])
        np.square(sq, out=sq)
        return sq

    lo, hi = windows[0]
    acc.fill(0)
    for j in range(lo, hi):
        acc += load(j)
    coef = alpha / size
    for ch in range(c):
        nlo, nhi = windows[ch]
        for j in range(lo, nlo):  # leaving first: the ring then never holds more than `size`
            acc -= ring[j % ring_n]
        for j in range(hi, nhi):
            acc += load(j)
        lo, hi = nlo, nhi
        # out = x * (k + alpha/size * window) ** -beta, in float64 as the reference
        np.multiply(acc, coef, out=tmp)
        tmp += k
        if beta == 0.75:  # s ** 0.75 = sqrt(s) * sqrt(sqrt(s)): two square roots, not a pow
            np.sqrt(tmp, out=tmp)
            np.sqrt(tmp, out=tmp2)
            tmp *= tmp2
            np.divide(x[:, ch], tmp, out=out[:, ch])
        else:
            np.power(tmp, -beta, out=tmp)
            np.multiply(x[:, ch], tmp, out=out[:, ch])


def _lrn_windows(c, size):
    """[lo, hi) channel window of every channel (the reference's clipped window)."""
    pre = (size - 1) // 2
    return [(max(0, ch - pre), min(c, ch - pre + size)) for ch in range(c)]


def batch_norm(attrs, inputs, outputs, ws):
    x, mean, var = inputs[:3]
    out = outputs[0]
    c = x.shape[1]
    shape = (1, c) + (1,) * (x.ndim - 2)
    inv = 1.0 / np.sqrt(var.astype(np.float64) + attrs["eps"])
    if len(inputs) == 5:
        inv = inv * inputs[3]
        shift = inputs[4] - mean * inv
    else:
        shift = -mean * inv
    np.multiply(x, inv.astype(x.dtype).reshape(shape), out=out)
    out += shift.astype(x.dtype).reshape(shape)


def channel_affine(attrs, inputs, outputs, ws):
    x, out = inputs[0], outputs[0]
    shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    np.multiply(x, inputs[1].reshape(shape), out=out)
    if len(inputs) == 3:
        out += inputs[2].reshape(shape)


# ---- softmax ----------------------------------------------------------------------------------------
def _reduced(shape, axis):
    axis = axis % len(shape)
    return tuple(1 if d == axis else s for d, s in enumerate(shape)), axis


def softmax_workspace(node: Node, graph: Graph, batch: int) -> int:
    shape, dtype = _spec(graph, node.inputs[0], batch)
    red, _ = _reduced(shape, node.attrs["axis"])
    full = int(np.prod(shape)) if node.op == "log_softmax" else 0
    return (int(np.prod(red)) + full) * dtype.itemsize


def _reduction(ws, x, axis):
    """(the reduced-shape workspace view for per-row maxima and sums, the axis)."""
    red, axis = _reduced(x.shape, axis)
    count = 1
    for d in red:
        count *= d
    return _flat(ws.view(x.dtype)[:count], red), axis, count


def softmax(attrs, inputs, outputs, ws):
    x, out = inputs[0], outputs[0]
    m, axis, _ = _reduction(ws, x, attrs["axis"])
    np.maximum.reduce(x, axis=axis, keepdims=True, out=m)
    np.subtract(x, m, out=out)
    np.exp(out, out=out)
    np.add.reduce(out, axis=axis, keepdims=True, out=m)
    out /= m


def log_softmax(attrs, inputs, outputs, ws):
    x, out = inputs[0], outputs[0]
    m, axis, r = _reduction(ws, x, attrs["axis"])
    e = _flat(ws.view(x.dtype)[r:r + x.size], x.shape)
    np.maximum.reduce(x, axis=axis, keepdims=True, out=m)
    np.subtract(x, m, out=out)
    np.exp(out, out=e)
    np.add.reduce(e, axis=axis, keepdims=True, out=m)
    np.log(m, out=m)
    out -= m


# ---- data movement ----------------------------------------------------------------------------------
def concat(attrs, inputs, outputs, ws):
    out = outputs[0]
    axis = attrs["axis"] % out.ndim
    start = 0
    lead = (slice(None),) * axis
    for x in inputs:
        size = x.shape[axis]
        np.copyto(out[lead + (slice(start, start + size),)], x)
        start += size


def split(attrs, inputs, outputs, ws):
    x = inputs[0]
    axis = attrs["axis"] % x.ndim
    lead = (slice(None),) * axis
    start = 0
    for out in outputs:
        size = out.shape[axis]
        np.copyto(out, x[lead + (slice(start, start + size),)])
        start += size


def reshape(attrs, inputs, outputs, ws):
    x, out = inputs[0], outputs[0]
    view = _reshaped(out, x.shape)
    if view is not None:
        np.copyto(view, x)
        return
    xv = _reshaped(x, out.shape)
    if xv is not None:
        np.copyto(out, xv)
        return
    for i in range(x.shape[0]):  # both strided (slices of wider buffers): image by image
        oi = _reshaped(out[i], x.shape[1:])
        if oi is not None:
            np.copyto(oi, x[i])
        else:
            np.copyto(out[i], x[i].reshape(out.shape[1:]))


def transpose(attrs, inputs, outputs, ws):
    np.copyto(outputs[0], inputs[0].transpose(attrs["perm"]))


def zero_pad(attrs, inputs, outputs, ws):
    x, out = inputs[0], outputs[0]
    t, b, l, r = attrs["pads"]
    h, w = x.shape[-2:]
    oh, ow = out.shape[-2:]
    src = x[..., max(0, -t):max(0, h - max(0, -b)), max(0, -l):max(0, w - max(0, -r))]
    top, left = max(0, t), max(0, l)
    bottom, right = top + src.shape[-2], left + src.shape[-1]
    if oh * ow <= 4096:  # small planes: one fill beats four strided border fills
        out[...] = 0
    else:  # zero only the border: the interior is copied next
        out[..., :top, :] = 0
        out[..., bottom:, :] = 0
        out[..., top:bottom, :left] = 0
        out[..., top:bottom, right:] = 0
    np.copyto(out[..., top:bottom, left:right], src)


def _small_buffers(fn, bufsize: int | None = None):
    """Run ``fn`` with ufunc buffers of :data:`UFUNC_BUFSIZE` (or ``bufsize``) elements: numpy (2.4)
    allocates an iteration buffer per operand (8192 elements by default) for every ufunc call that
    broadcasts or walks strided multi-dimensional views, even when no casting needs it; smaller
    buffers are as fast here and keep a step's transient allocations to a few KiB."""
    def run(attrs, inputs, outputs, ws):
        old = np.setbufsize(bufsize or UFUNC_BUFSIZE)
        try:
            fn(attrs, inputs, outputs, ws)
        finally:
            np.setbufsize(old)
    run.__name__ = fn.__name__
    run.__qualname__ = fn.__qualname__
    run.__doc__ = fn.__doc__
    run.__wrapped__ = fn
    return run


KERNELS = {
    "conv2d": conv2d, "conv2d_split": conv2d_split, "dense": dense, "max_pool": pool.max_pool,
    "avg_pool": pool.avg_pool, "lrn": lrn,
    "batch_norm": batch_norm, "channel_affine": channel_affine, "softmax": softmax,
    "log_softmax": log_softmax, "elementwise_chain": elementwise_chain, "add": add,
    "concat": concat, "split": split, "flatten": reshape, "reshape": reshape,
    "transpose": transpose, "zero_pad": zero_pad,
    **{op: _unary_kernel(op) for op in ("relu", "tanh", "sigmoid", "scale", "dropout", "identity",
                                        *activation.DEFS)},
}
COPIES = {"concat", "split", "flatten", "reshape", "transpose", "zero_pad"}  # no ufunc: no buffers
BUFSIZES = {"lrn": 512}  # float32 <-> float64 loops really buffer, three operands of 8 bytes
KERNELS = {op: fn if op in COPIES else _small_buffers(fn, BUFSIZES.get(op))
           for op, fn in KERNELS.items()}
WORKSPACES = {
    "conv2d": conv_workspace, "conv2d_split": conv2d_split_workspace, "dense": dense_workspace,
    "lrn": lrn_workspace,
    "softmax": softmax_workspace, "log_softmax": softmax_workspace,
    "elementwise_chain": _unary_workspace, "add": add_workspace,
    "max_pool": pool.pool_workspace, "avg_pool": pool.pool_workspace,
    **{op: _unary_workspace for op in ("relu", "sigmoid",
                                       *(n for n, d in activation.DEFS.items() if d.temps))},
}
