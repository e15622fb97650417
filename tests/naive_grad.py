"""Naive loops for graphrt's gradient ops and training-mode ops, from their documented semantics.

The companion of ``naive.py`` (same rules: no graphrt import, plain Python loops vectorized at most
over the batch or a channel slice, float64). Gradient ops are written from the derivative of the
forward they belong to, mostly as explicit sums over the forward's index relations or Jacobian
entries, not from the vectorized formulas the ops use.
"""
from __future__ import annotations

import itertools
import math

import numpy as np

from naive import _map, pool_out_len


def _f64(*arrays):
    return [np.asarray(a, np.float64) for a in arrays]


# ---- convolution and dense --------------------------------------------------------------------
def _conv_taps(oh_n, ow_n, kh, kw, h, w, stride, pads, dilation):
    """Every (oh, ow, i, j, ih, iw): kernel tap (i, j) of output (oh, ow) reads input (ih, iw)."""
    (sh, sw), (dh, dw), (t, _, l, _) = stride, dilation, pads
    for oh, ow, i, j in itertools.product(range(oh_n), range(ow_n), range(kh), range(kw)):
        ih, iw = oh * sh - t + i * dh, ow * sw - l + j * dw
        if 0 <= ih < h and 0 <= iw < w:
            yield oh, ow, i, j, ih, iw


def conv2d_grad_input(dy, w, input_size, stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1),
                      groups=1):
    """dx[n, c, ih, iw] = sum of dy[n, o, oh, ow] * w[o, c, i, j] over the taps reading (ih, iw)."""
    dy, w = _f64(dy, w)
    n, o_n, oh_n, ow_n = dy.shape
    _, cg, kh, kw = w.shape
    h, wd = input_size
    dx = np.zeros((n, cg * groups, h, wd))
    og = o_n // groups
    for o in range(o_n):
        chans = slice(o // og * cg, (o // og + 1) * cg)
        for oh, ow, i, j, ih, iw in _conv_taps(oh_n, ow_n, kh, kw, h, wd, stride, pads, dilation):
            dx[:, chans, ih, iw] += dy[:, o, oh, ow, None] * w[o, :, i, j]
    return dx


def conv2d_grad_weight(x, dy, kernel, stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1), groups=1):
    """dw[o, c, i, j] = sum over n and outputs (oh, ow) of dy[n, o, oh, ow] * x[n, c, ih, iw]."""
    x, dy = _f64(x, dy)
    n, c, h, wd = x.shape
    o_n, oh_n, ow_n = dy.shape[1:]
    cg, og = c // groups, o_n // groups
    dw = np.zeros((o_n, cg) + tuple(kernel))
    for o in range(o_n):
        chans = slice(o // og * cg, (o // og + 1) * cg)
        for oh, ow, i, j, ih, iw in _conv_taps(oh_n, ow_n, *kernel, h, wd, stride, pads, dilation):
            dw[o, :, i, j] += dy[:, o, oh, ow] @ x[:, chans, ih, iw]
    return dw


def reduce_channels(x):
    x = np.asarray(x, np.float64)
    return np.array([math.fsum(x[:, c].ravel()) for c in range(x.shape[1])])


def reduce_like(dy, shape):
    """Sum dy onto ``shape`` by numpy's broadcasting map (leading axes dropped, size-1 axes 0)."""
    dy = np.asarray(dy, np.float64)
    out = np.zeros(shape)
    lead = dy.ndim - len(shape)
    for idx in np.ndindex(dy.shape):
        out[tuple(0 if d == 1 else k for k, d in zip(idx[lead:], shape))] += dy[idx]
    return out


def dense_grad_input(dy, w):
    """dx[n, i] = sum_o dy[n, o] * w[o, i]."""
    dy, w = _f64(dy, w)
    dx = np.zeros((dy.shape[0], w.shape[1]))
    for n, o, i in itertools.product(range(dy.shape[0]), range(w.shape[0]), range(w.shape[1])):
        dx[n, i] += dy[n, o] * w[o, i]
    return dx


def dense_grad_weight(dy, x):
    """dw[o, i] = sum_n dy[n, o] * x[n, i]."""
    dy, x = _f64(dy, x)
    dw = np.zeros((dy.shape[1], x.shape[1]))
    for n, o, i in itertools.product(range(dy.shape[0]), range(dy.shape[1]), range(x.shape[1])):
        dw[o, i] += dy[n, o] * x[n, i]
    return dw


def matmul_grad(a, b, dy, operand):
    """d sum(dy * matmul(a, b)) / d operand, by looping over every product numpy's matmul forms."""
    a, b, dy = _f64(a, b, dy)
    a2 = a.reshape((1,) + a.shape) if a.ndim == 1 else a
    b2 = b.reshape(b.shape + (1,)) if b.ndim == 1 else b
    stack = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
    m, k, p = a2.shape[-2], a2.shape[-1], b2.shape[-1]
    g = dy.reshape(stack + (m, p))
    ga, gb = np.zeros(a2.shape), np.zeros(b2.shape)

    def home(s, shape):  # where stack index s reads an operand of stack shape ``shape``
        s = s[len(s) - len(shape):]
        return tuple(0 if d == 1 else i for i, d in zip(s, shape))
    for s in np.ndindex(*stack):
        sa, sb = home(s, a2.shape[:-2]), home(s, b2.shape[:-2])
        for i, j, q in itertools.product(range(m), range(p), range(k)):
            ga[sa + (i, q)] += g[s + (i, j)] * b2[sb + (q, j)]
            gb[sb + (q, j)] += g[s + (i, j)] * a2[sa + (i, q)]
    return ga.reshape(a.shape) if operand == 0 else gb.reshape(b.shape)


# ---- elementwise and softmax ------------------------------------------------------------------
def _map2(fn, a, b):
    a, b = _f64(a, b)
    out = np.empty_like(a)
    for idx in np.ndindex(a.shape):
        out[idx] = fn(float(a[idx]), float(b[idx]))
    return out


def relu_grad(dy, t, negative_slope=0.0):
    return _map2(lambda g, v: g if v > 0 else negative_slope * g, dy, t)


def tanh_grad(dy, y):
    return _map2(lambda g, v: g * (1.0 - v * v), dy, y)


def sigmoid_grad(dy, y):
    return _map2(lambda g, v: g * v * (1.0 - v), dy, y)


def scale_grad(dy, x, power=1.0, scale=1.0, shift=0.0):
    """d/dx (shift + scale x) ** power = power * scale * (shift + scale x) ** (power - 1)."""
    if power == 0.0:
        return _map(lambda v: 0.0, dy)
    return _map2(lambda g, v: g * power * scale * (shift + scale * v) ** (power - 1.0), dy, x)


def _jacobian_product(dy, y, axis, jac):
    """dx_i = sum_j dy_j * jac(y, i, j) along ``axis``."""
    dy, y = _f64(dy, y)
    stacked = np.stack([dy, y], axis=-1)
    axis = axis % dy.ndim

    def fibre(pairs):
        gs, ys = [p[0] for p in pairs], [p[1] for p in pairs]
        return [[sum(gs[j] * jac(ys, i, j) for j in range(len(ys))), 0.0] for i in range(len(ys))]
    out = np.empty_like(stacked)
    rest = [range(d) for i, d in enumerate(dy.shape) if i != axis]
    for pos in itertools.product(*rest):
        idx = list(pos)
        idx.insert(axis, slice(None))
        out[tuple(idx)] = fibre(stacked[tuple(idx)].tolist())
    return out[..., 0]


def softmax_grad(dy, y, axis=1):
    """Jacobian of softmax: dy_i/dx_j = y_i (delta_ij - y_j)."""
    return _jacobian_product(dy, y, axis, lambda ys, i, j: ys[j] * ((i == j) - ys[i]))


def log_softmax_grad(dy, y, axis=1):
    """Jacobian of log softmax: d y_j / d x_i = delta_ij - exp(y_i)."""
    return _jacobian_product(dy, y, axis, lambda ys, i, j: (i == j) - math.exp(ys[i]))


def zeros_like(x):
    return np.zeros(np.shape(x))


# ---- losses -----------------------------------------------------------------------------------
def softmax_cross_entropy_grad(scores, labels, dloss):
    out = np.empty(np.shape(scores))
    for r, (row, lab) in enumerate(zip(scores, labels)):
        m = max(float(v) for v in row)
        e = [math.exp(float(v) - m) for v in row]
        total = math.fsum(e)
        for c, v in enumerate(e):
            out[r, c] = (v / total - (c == int(lab))) * float(np.ravel(dloss)[0]) / len(labels)
    return out


def nll_loss_grad(labels, dloss, classes):
    out = np.zeros((len(labels), classes))
    for r, lab in enumerate(labels):
        out[r, int(lab)] = -float(np.ravel(dloss)[0]) / len(labels)
    return out


# ---- pooling ----------------------------------------------------------------------------------
def _windows(h, w, kernel, stride, pads, ceil_mode):
    """Per output (oh, ow): the window's start in padded coordinates and its real (ih, iw) taps in
    row-major order."""
    (kh, kw), (sh, sw), (t, b, l, r) = kernel, stride, pads
    for oh in range(pool_out_len(h, kh, sh, t, b, ceil_mode)):
        for ow in range(pool_out_len(w, kw, sw, l, r, ceil_mode)):
            taps = [(oh * sh + i - t, ow * sw + j - l) for i in range(kh) for j in range(kw)]
            yield oh, ow, [(ih, iw) for ih, iw in taps if 0 <= ih < h and 0 <= iw < w]


def max_pool_grad(x, dy, kernel=(1, 1), stride=(1, 1), pads=(0, 0, 0, 0), ceil_mode=False):
    """Each dy goes to the first (row-major) real element of its window holding the maximum."""
    x, dy = _f64(x, dy)
    dx = np.zeros_like(x)
    for n, c in itertools.product(range(x.shape[0]), range(x.shape[1])):
        for oh, ow, taps in _windows(*x.shape[2:], kernel, stride, pads, ceil_mode):
            best = max(x[n, c, ih, iw] for ih, iw in taps)
            ih, iw = next(t for t in taps if x[n, c][t] == best)
            dx[n, c, ih, iw] += dy[n, c, oh, ow]
    return dx


def avg_pool_grad(dy, input_size, kernel=(1, 1), stride=(1, 1), pads=(0, 0, 0, 0),
                  ceil_mode=False, count_include_pad=True):
    """Each dy / divisor goes to every real element of its window (divisor as in avg_pool)."""
    dy = np.asarray(dy, np.float64)
    h, w = input_size
    (kh, kw), (sh, sw), (t, b, l, r) = kernel, stride, pads
    dx = np.zeros(dy.shape[:2] + (h, w))
    for oh, ow, taps in _windows(h, w, kernel, stride, pads, ceil_mode):
        if count_include_pad:
            rows = min(oh * sh + kh, h + t + b) - oh * sh
            div = rows * (min(ow * sw + kw, w + l + r) - ow * sw)
        else:
            div = len(taps)
        for ih, iw in taps:
            dx[:, :, ih, iw] += dy[:, :, oh, ow] / div
    return dx


# ---- normalization ----------------------------------------------------------------------------
def lrn_grad(x, dy, size, alpha=1e-4, beta=0.75, k=1.0):
    """dx_j = sum_c dy_c dy_c/dx_j, y_c = x_c s_c^-beta, s_c = k + alpha/size sum_{window(c)} x^2:
    dy_c/dx_j = [c == j] s_c^-beta - 2 alpha beta / size x_c x_j s_c^(-beta-1) [j in window(c)]."""
    x, dy = _f64(x, dy)
    cn = x.shape[1]
    window = [[cc for cc in range(c - (size - 1) // 2, c + size // 2 + 1) if 0 <= cc < cn]
              for c in range(cn)]
    s = [k + alpha / size * sum(x[:, cc] ** 2 for cc in window[c]) for c in range(cn)]
    dx = np.zeros_like(x)
    for c in range(cn):
        dx[:, c] += dy[:, c] * s[c] ** -beta
        for j in window[c]:
            dx[:, j] -= dy[:, c] * 2 * alpha * beta / size * x[:, c] * x[:, j] * s[c] ** (-beta - 1)
    return dx


def batch_norm_train(x, gamma, beta, running_mean, running_var, count=None, eps=1e-5,
                     momentum=0.1, unbiased=True, caffe_fraction=0.0):
    """(y, saved_mean, saved_invstd, running_mean', running_var', count') of one training step."""
    x = np.asarray(x, np.float64)
    y = np.empty_like(x)
    cn = x.shape[1]
    mean, invstd, new_mean, new_var = (np.empty(cn) for _ in range(4))
    if caffe_fraction > 0:
        s = caffe_fraction * float(np.ravel(count)[0]) + 1.0
        w, new_count = 1.0 / s, s
    else:
        w = momentum
        new_count = None if count is None else float(np.ravel(count)[0]) + 1
    for c in range(cn):
        vals = [float(v) for v in x[:, c].ravel()]
        m = len(vals)
        mu = math.fsum(vals) / m
        var = math.fsum((v - mu) ** 2 for v in vals) / m
        mean[c], invstd[c] = mu, 1.0 / math.sqrt(var + eps)
        y[:, c] = (x[:, c] - mu) * invstd[c] * float(gamma[c]) + float(beta[c])
        stat_var = var * m / (m - 1) if unbiased and m > 1 else var
        new_mean[c] = (1 - w) * float(running_mean[c]) + w * mu
        new_var[c] = (1 - w) * float(running_var[c]) + w * stat_var
    return y, mean, invstd, new_mean, new_var, new_count


def batch_norm_train_grad(x, gamma, mean, invstd, dy):
    """(dx, dgamma, dbeta) from the Jacobian of y = gamma xhat + beta over a channel's m values:
    dy_i/dx_j = gamma invstd (delta_ij - 1/m - xhat_i xhat_j / m)."""
    x, dy = _f64(x, dy)
    dx = np.empty_like(x)
    cn = x.shape[1]
    dgamma, dbeta = np.empty(cn), np.empty(cn)
    for c in range(cn):
        xs, gs = x[:, c].ravel(), dy[:, c].ravel()
        xhat = [(float(v) - float(mean[c])) * float(invstd[c]) for v in xs]
        m = len(xhat)
        scale = float(gamma[c]) * float(invstd[c])
        col = [scale * math.fsum(float(gs[i]) * ((i == j) - 1 / m - xhat[i] * xhat[j] / m)
                                 for i in range(m)) for j in range(m)]
        dx[:, c] = np.reshape(col, x[:, c].shape)
        dgamma[c] = math.fsum(float(g) * h for g, h in zip(gs, xhat))
        dbeta[c] = math.fsum(float(g) for g in gs)
    return dx, dgamma, dbeta


def philox4x32_10(ctr, key):
    """Philox4x32-10 of one 4-word counter and 2-word key, on Python ints (Salmon et al., SC'11)."""
    c0, c1, c2, c3 = ctr
    k0, k1 = key
    for _ in range(10):
        p0, p1 = 0xD2511F53 * c0, 0xCD9E8D57 * c2
        c0, c1, c2, c3 = (p1 >> 32) ^ c1 ^ k0, p1 & 0xFFFFFFFF, (p0 >> 32) ^ c3 ^ k1, p0 & 0xFFFFFFFF
        k0, k1 = (k0 + 0x9E3779B9) & 0xFFFFFFFF, (k1 + 0xBB67AE85) & 0xFFFFFFFF
    return c0, c1, c2, c3


def dropout_train(x, counter, rate=0.5, seed=0):
    """(y, mask): mask 1/(1 - rate) where u >= rate, else 0, for element i (C order):
    u = (word i % 4 of Philox4x32-10(counter (i // 4, counter), key seed)) >> 8) / 2^24."""
    x = np.asarray(x, np.float64)
    step = int(counter)
    mask, y = np.empty_like(x), np.empty_like(x)
    for i, idx in enumerate(np.ndindex(x.shape)):
        words = philox4x32_10((i // 4 & 0xFFFFFFFF, i // 4 >> 32, step & 0xFFFFFFFF, step >> 32),
                              (seed & 0xFFFFFFFF, seed >> 32))
        u = (words[i % 4] >> 8) / 2**24
        mask[idx] = 1.0 / (1.0 - rate) if u >= rate else 0.0
        y[idx] = x[idx] * mask[idx]
    return y, mask

