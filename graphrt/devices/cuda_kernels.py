"""CUDA C kernels of the ``cuda`` device, and the pure-Python binders that turn a launch
(``op, attrs, inputs, outputs, workspace``) into kernel calls with every argument resolved.

Nothing here imports CuPy. The sources are strings compiled once per dtype (``typedef float T`` or
``typedef double T`` in front of :data:`PRELUDE` and :data:`SOURCES`) by NVRTC through
``cupy.RawModule`` on a GPU, by ``nvcc`` in the compile test, and by the host C++ compiler with
:data:`EMULATION_PRELUDE` for the emulated device that runs these very kernels on the CPU in tests.

Kernels (all ``extern "C"``; every array argument is a pointer plus strides in elements, so any view
of the arena — a concat branch's channel slice, a transposed view — is read and written in place):

- ``ew_unary``: a run of up to 4 unary steps (identity, relu with slope, tanh, sigmoid, scale/shift/
  power) over a strided tensor of rank <= 6: ``relu``, ``tanh``, ``sigmoid``, ``scale``,
  ``dropout``, ``identity``, ``elementwise_chain``.
- ``ew_nary``: ``add`` (with coefficients) and ``mul`` of up to 4 broadcast inputs per launch
  (more inputs continue in place, in the reference's order).
- ``copy_nd``: copy between two layouts of the same elements in C order: ``concat``/``split`` when
  the plan did not alias them, ``flatten``/``reshape`` of strided views, ``transpose``.
- ``pad_nd``: constant padding and cropping: ``zero_pad``, ``pad``.
- ``im2col`` + ``gemm``/cuBLAS: ``conv2d`` (groups, stride, padding, dilation); 1x1 convolutions
  with stride 1 and no padding skip the im2col.
- ``gemm``: a tiled shared-memory GEMM (64x64 tiles, 4x4 per thread) over strided, batched
  operands with a fused bias + activation epilogue; ``conv2d``, ``dense`` and ``matmul`` use it in
  captured CUDA graphs (and cuBLAS outside them, see :mod:`graphrt.devices.cuda`).
- ``bias_act``: the bias + activation epilogue after a cuBLAS GEMM.
- ``pool2d``: ``max_pool``/``avg_pool`` (ceil mode, padding, count_include_pad, global).
- ``lrn``: across channels, in double precision as the reference.
- ``bn_coeffs`` + ``channel_affine``: ``batch_norm`` (per-channel scale/shift computed in double
  into the workspace, then one pass) and ``channel_affine``.
- ``softmax``: ``softmax``/``log_softmax`` along any axis, one block per row.
- ``class_loss``: ``softmax_cross_entropy``, ``nll_loss``, ``accuracy`` (one block; an invalid
  label gives NaN — a GPU kernel cannot raise).
- ``sgd_update`` and ``counter_inc``: the optimizer step with Caffe's lr policies read from the
  device-resident iteration counter, and the counter itself.

Ops without a binder here (or a layout/dtype a kernel does not take: a rank above 6, float16) run
their reference forward on the device arrays (CuPy implements the numpy calls they make); such a
step is not captured into a CUDA graph (see :func:`bind`).
"""
from __future__ import annotations

import dataclasses
import itertools
import re
from typing import Any, Callable

import numpy as np

MAX_RANK = 6
STEPS_PER_LAUNCH = 4
INPUTS_PER_LAUNCH = 4
THREADS = 256
MAX_BLOCKS = 1 << 16
COLS_BYTES = 128 << 20  # im2col columns per chunk of images
GEMM_TILE = 64
CTYPES = {"float32": "float", "float64": "double"}

# ---- sources --------------------------------------------------------------------------------------
PRELUDE = r"""
// graphrt cuda kernels: helpers shared by every kernel (T is typedef'd in front of this)
#ifndef GR_DEVICE
#define GR_DEVICE __device__ __forceinline__
#endif
GR_DEVICE float gr_exp(float x) { return expf(x); }
GR_DEVICE double gr_exp(double x) { return exp(x); }
GR_DEVICE float gr_log(float x) { return logf(x); }
GR_DEVICE double gr_log(double x) { return log(x); }
GR_DEVICE float gr_tanh(float x) { return tanhf(x); }
GR_DEVICE double gr_tanh(double x) { return tanh(x); }
GR_DEVICE float gr_pow(float x, float y) { return powf(x, y); }
GR_DEVICE double gr_pow(double x, double y) { return pow(x, y); }
GR_DEVICE float gr_abs(float x) { return fabsf(x); }
GR_DEVICE double gr_abs(double x) { return fabs(x); }
// a product rounded on its own (never contracted into an FMA), as numpy's separate ufuncs round it
GR_DEVICE float gr_mul(float a, float b) { return __fmul_rn(a, b); }
GR_DEVICE double gr_mul(double a, double b) { return __dmul_rn(a, b); }
GR_DEVICE float gr_inf(float) { return __int_as_float(0x7f800000); }
GR_DEVICE double gr_inf(double) { return __longlong_as_double(0x7ff0000000000000LL); }
GR_DEVICE float gr_nan(float) { return __int_as_float(0x7fc00000); }
GR_DEVICE double gr_nan(double) { return __longlong_as_double(0x7ff8000000000000LL); }

// the unary steps: 0 identity, 1 relu (a = negative slope), 2 tanh, 3 sigmoid,
// 4 scale (a = scale, b = shift, c = power)
GR_DEVICE T gr_unary(int op, T v, T a, T b, T c) {
    if (op == 1) return v > (T)0 ? v : gr_mul(v, a);
    if (op == 2) return gr_tanh(v);
    if (op == 3) {
        T e = gr_exp(-gr_abs(v));
        return (v >= (T)0 ? (T)1 : e) / ((T)1 + e);
    }
    if (op == 4) {
        T y = gr_mul(v, a);
        if (b != (T)0) y = y + b;
        if (c != (T)1) y = gr_pow(y, c);
        return y;
    }
    return v;
}

// a / b for non-negative a, b: 32-bit division (far cheaper on a GPU) when both fit
GR_DEVICE long long gr_div(long long a, long long b) {
    if ((unsigned long long)a <= 0xffffffffULL && (unsigned long long)b <= 0xffffffffULL)
        return (long long)((unsigned int)a / (unsigned int)b);
    return a / b;
}

// element offset of C-order index i in a tensor of sizes n[6] and strides s[6] (elements)
GR_DEVICE long long gr_offset(long long i, const long long* n, const long long* s) {
    long long off = 0;
    for (int d = 5; d >= 0 && i > 0; --d) {
        if (n[d] == 1) continue;
        long long q = gr_div(i, n[d]);
        off += (i - q * n[d]) * s[d];
        i = q;
    }
    return off;
}

#define GR_LOOP(i, total) \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (total); \
         i += (long long)gridDim.x * blockDim.x)
"""

ELEMENTWISE = r"""
extern "C" __global__ void ew_unary(
        const T* x, T* y, long long total,
        long long n0, long long n1, long long n2, long long n3, long long n4, long long n5,
        long long xs0, long long xs1, long long xs2, long long xs3, long long xs4, long long xs5,
        long long ys0, long long ys1, long long ys2, long long ys3, long long ys4, long long ys5,
        int nsteps,
        int op0, T a0, T b0, T c0, int op1, T a1, T b1, T c1,
        int op2, T a2, T b2, T c2, int op3, T a3, T b3, T c3) {
    const long long n[6] = {n0, n1, n2, n3, n4, n5};
    const long long xs[6] = {xs0, xs1, xs2, xs3, xs4, xs5};
    const long long ys[6] = {ys0, ys1, ys2, ys3, ys4, ys5};
    GR_LOOP(i, total) {
        T v = x[gr_offset(i, n, xs)];
        if (nsteps > 0) v = gr_unary(op0, v, a0, b0, c0);
        if (nsteps > 1) v = gr_unary(op1, v, a1, b1, c1);
        if (nsteps > 2) v = gr_unary(op2, v, a2, b2, c2);
        if (nsteps > 3) v = gr_unary(op3, v, a3, b3, c3);
        y[gr_offset(i, n, ys)] = v;
    }
}

// add: y = c0*x0 + x1 (c == 1) or + c*x ..., left to right; mul: y = x0 * x1 * ...
// accumulate: continue from y (inputs after the first four)
extern "C" __global__ void ew_nary(
        T* y, long long total,
        long long n0, long long n1, long long n2, long long n3, long long n4, long long n5,
        long long ys0, long long ys1, long long ys2, long long ys3, long long ys4, long long ys5,
        int nin, int mul, int accumulate,
        const T* x0, long long s00, long long s01, long long s02, long long s03, long long s04,
        long long s05, T c0,
        const T* x1, long long s10, long long s11, long long s12, long long s13, long long s14,
        long long s15, T c1,
        const T* x2, long long s20, long long s21, long long s22, long long s23, long long s24,
        long long s25, T c2,
        const T* x3, long long s30, long long s31, long long s32, long long s33, long long s34,
        long long s35, T c3) {
    const long long n[6] = {n0, n1, n2, n3, n4, n5};
    const long long ys[6] = {ys0, ys1, ys2, ys3, ys4, ys5};
    const long long st[4][6] = {{s00, s01, s02, s03, s04, s05}, {s10, s11, s12, s13, s14, s15},
                                {s20, s21, s22, s23, s24, s25}, {s30, s31, s32, s33, s34, s35}};
    const T* xs[4] = {x0, x1, x2, x3};
    const T cs[4] = {c0, c1, c2, c3};
    GR_LOOP(i, total) {
        long long oy = gr_offset(i, n, ys);
        T acc = (T)0;
        int k = 0;
        if (accumulate) {
            acc = y[oy];
        } else {
            T v = xs[0][gr_offset(i, n, st[0])];
            acc = mul ? v : gr_mul(v, cs[0]);
            k = 1;
        }
        for (; k < nin; ++k) {
            T v = xs[k][gr_offset(i, n, st[k])];
            if (mul) acc = gr_mul(acc, v);
            else acc = acc + (cs[k] == (T)1 ? v : gr_mul(cs[k], v));
        }
        y[oy] = acc;
    }
}

extern "C" __global__ void copy_nd(
        const T* x, T* y, long long total,
        long long xn0, long long xn1, long long xn2, long long xn3, long long xn4, long long xn5,
        long long xs0, long long xs1, long long xs2, long long xs3, long long xs4, long long xs5,
        long long yn0, long long yn1, long long yn2, long long yn3, long long yn4, long long yn5,
        long long ys0, long long ys1, long long ys2, long long ys3, long long ys4, long long ys5) {
    const long long xn[6] = {xn0, xn1, xn2, xn3, xn4, xn5};
    const long long xs[6] = {xs0, xs1, xs2, xs3, xs4, xs5};
    const long long yn[6] = {yn0, yn1, yn2, yn3, yn4, yn5};
    const long long ys[6] = {ys0, ys1, ys2, ys3, ys4, ys5};
    GR_LOOP(i, total) {
        y[gr_offset(i, yn, ys)] = x[gr_offset(i, xn, xs)];
    }
}

// y[c] = x[c - lo] where that is inside x, else fill (negative lo crops)
extern "C" __global__ void pad_nd(
        const T* x, T* y, long long total, T fill,
        long long xn0, long long xn1, long long xn2, long long xn3, long long xn4, long long xn5,
        long long xs0, long long xs1, long long xs2, long long xs3, long long xs4, long long xs5,
        long long yn0, long long yn1, long long yn2, long long yn3, long long yn4, long long yn5,
        long long ys0, long long ys1, long long ys2, long long ys3, long long ys4, long long ys5,
        long long lo0, long long lo1, long long lo2, long long lo3, long long lo4, long long lo5) {
    const long long xn[6] = {xn0, xn1, xn2, xn3, xn4, xn5};
    const long long xs[6] = {xs0, xs1, xs2, xs3, xs4, xs5};
    const long long yn[6] = {yn0, yn1, yn2, yn3, yn4, yn5};
    const long long ys[6] = {ys0, ys1, ys2, ys3, ys4, ys5};
    const long long lo[6] = {lo0, lo1, lo2, lo3, lo4, lo5};
    GR_LOOP(i, total) {
        long long r = i, oy = 0, ox = 0;
        bool inside = true;
        for (int d = 5; d >= 0; --d) {
            long long q = r / yn[d];
            long long c = r - q * yn[d];
            r = q;
            oy += c * ys[d];
            long long src = c - lo[d];
            if (src < 0 || src >= xn[d]) inside = false;
            else ox += src * xs[d];
        }
        y[oy] = inside ? x[ox] : fill;
    }
}

// the conv2d/dense epilogue after a cuBLAS GEMM: y[b][i][j] = act(y + bias[i] or bias[j])
extern "C" __global__ void bias_act(
        T* y, long long nb, long long m, long long n, long long sb, long long sr, long long sc,
        const T* bias, int bias_mode, int act, T slope) {
    long long total = nb * m * n;
    GR_LOOP(t, total) {
        long long r = gr_div(t, n);
        long long j = t - r * n;
        long long b = gr_div(r, m);
        long long i = r - b * m;
        T* p = y + b * sb + i * sr + j * sc;
        T v = *p;
        if (bias_mode == 1) v = v + bias[i];
        else if (bias_mode == 2) v = v + bias[j];
        *p = gr_unary(act, v, slope, (T)0, (T)1);
    }
}
"""

CONV = r"""
// columns of nimg images: cols[img][k][p], k = (c, i, j) over C x KH x KW, p = (oy, ox);
// blockIdx.y walks the (img, k) rows, x the columns: 32-bit index arithmetic inside a row
extern "C" __global__ void im2col(
        const T* x, long long xsn, long long xsc, long long xsh, long long xsw, T* cols,
        int nimg, int C, int H, int W, int KH, int KW, int OH, int OW,
        int sh, int sw, int pt, int pl, int dh, int dw) {
    const unsigned int P = (unsigned int)OH * OW;
    const unsigned int K = (unsigned int)C * KH * KW;
    const long long rows = (long long)nimg * K;
    for (long long row = blockIdx.y; row < rows; row += gridDim.y) {
        const unsigned int k = (unsigned int)(row % K);
        const long long img = row / K;
        const unsigned int j = k % KW, q = k / KW;
        const unsigned int i = q % KH, c = q / KH;
        const T* xc = x + img * xsn + (long long)c * xsc;
        T* dst = cols + row * P;
        for (unsigned int p = blockIdx.x * blockDim.x + threadIdx.x; p < P;
             p += gridDim.x * blockDim.x) {
            int ox = (int)(p % OW), oy = (int)(p / OW);
            int iy = oy * sh - pt + (int)i * dh;
            int ix = ox * sw - pl + (int)j * dw;
            dst[p] = (iy >= 0 && iy < H && ix >= 0 && ix < W)
                ? xc[(long long)iy * xsh + (long long)ix * xsw] : (T)0;
        }
    }
}
"""

GEMM = r"""
// C[b] = act(alpha * A[b] @ B[b] + beta * C[b] + bias), A: M x K, B: K x N, C: M x N, each with
// (batch, row, column) strides in elements; blockIdx.z is the batch, 256 threads, 64 x 64 tiles.
// bias_mode: 0 none, 1 per row (bias[i]), 2 per column (bias[j]).
#define GR_TM 64
#define GR_TN 64
#define GR_TK 16
extern "C" __global__ void gemm(
        const T* A, long long sab, long long sar, long long sac,
        const T* B, long long sbb, long long sbr, long long sbc,
        T* C, long long scb, long long scr, long long scc,
        int M, int N, int K, T alpha, T beta, const T* bias, int bias_mode, int act, T slope) {
    __shared__ T As[GR_TK][GR_TM + 1];
    __shared__ T Bs[GR_TK][GR_TN + 1];
    const long long b = blockIdx.z;
    A += b * sab;
    B += b * sbb;
    C += b * scb;
    const int tid = threadIdx.x;
    const int tx = tid % 16, ty = tid / 16;
    const int row0 = blockIdx.y * GR_TM, col0 = blockIdx.x * GR_TN;
    T acc[4][4];
    for (int u = 0; u < 4; ++u)
        for (int v = 0; v < 4; ++v) acc[u][v] = (T)0;
    for (int k0 = 0; k0 < K; k0 += GR_TK) {
        for (int e = tid; e < GR_TM * GR_TK; e += 256) {
            int r = e / GR_TK, kk = e % GR_TK;
            int gr = row0 + r, gk = k0 + kk;
            As[kk][r] = (gr < M && gk < K) ? A[(long long)gr * sar + (long long)gk * sac] : (T)0;
        }
        for (int e = tid; e < GR_TK * GR_TN; e += 256) {
            int kk = e / GR_TN, c = e % GR_TN;
            int gk = k0 + kk, gc = col0 + c;
            Bs[kk][c] = (gk < K && gc < N) ? B[(long long)gk * sbr + (long long)gc * sbc] : (T)0;
        }
        __syncthreads();
        for (int kk = 0; kk < GR_TK; ++kk) {
            T a[4], bv[4];
            for (int u = 0; u < 4; ++u) a[u] = As[kk][ty + 16 * u];
            for (int v = 0; v < 4; ++v) bv[v] = Bs[kk][tx + 16 * v];
            for (int u = 0; u < 4; ++u)
                for (int v = 0; v < 4; ++v) acc[u][v] += a[u] * bv[v];
        }
        __syncthreads();
    }
    for (int u = 0; u < 4; ++u) {
        int i = row0 + ty + 16 * u;
        if (i >= M) continue;
        for (int v = 0; v < 4; ++v) {
            int j = col0 + tx + 16 * v;
            if (j >= N) continue;
            T* p = C + (long long)i * scr + (long long)j * scc;
            T val = alpha * acc[u][v];
            if (beta != (T)0) val = val + beta * (*p);
            if (bias_mode == 1) val = val + bias[i];
            else if (bias_mode == 2) val = val + bias[j];
            *p = gr_unary(act, val, slope, (T)0, (T)1);
        }
    }
}
"""

POOL = r"""
// one thread per output element; windows in padded coordinates start at o * stride; elements
// outside the input are skipped (max: -inf padding, avg: zeros) as in the reference
extern "C" __global__ void pool2d(
        const T* x, long long xsn, long long xsc, long long xsh, long long xsw,
        T* y, long long ysn, long long ysc, long long ysh, long long ysw,
        int N, int C, int H, int W, int OH, int OW, int KH, int KW, int SH, int SW,
        int PT, int PB, int PL, int PR, int is_max, int include_pad) {
    const long long total = (long long)N * C * OH * OW;
    GR_LOOP(t, total) {
        long long r = gr_div(t, OW);
        int ox = (int)(t - r * OW);
        long long r2 = gr_div(r, OH);
        int oy = (int)(r - r2 * OH);
        long long n = gr_div(r2, C);
        int c = (int)(r2 - n * C);
        const int y0 = oy * SH, x0 = ox * SW;
        const T* xp = x + n * xsn + c * xsc;
        T acc = is_max ? -gr_inf((T)0) : (T)0;
        for (int a = 0; a < KH; ++a) {
            int iy = y0 + a - PT;
            if (iy < 0 || iy >= H) continue;
            for (int b = 0; b < KW; ++b) {
                int ix = x0 + b - PL;
                if (ix < 0 || ix >= W) continue;
                T v = xp[(long long)iy * xsh + (long long)ix * xsw];
                if (is_max) {
                    if (v > acc || v != v) acc = v;
                } else {
                    acc = acc + v;
                }
            }
        }
        if (!is_max) {
            long long dh, dw;
            if (include_pad) {
                dh = (long long)min(y0 + KH, H + PT + PB) - y0;
                dw = (long long)min(x0 + KW, W + PL + PR) - x0;
            } else {
                dh = (long long)min(y0 + KH, H + PT) - max(y0, PT);
                dw = (long long)min(x0 + KW, W + PL) - max(x0, PL);
            }
            long long d = dh * dw;
            acc = acc / (T)(d > 1 ? d : 1);
        }
        y[n * ysn + c * ysc + (long long)oy * ysh + (long long)ox * ysw] = acc;
    }
}
"""

NORM = r"""
extern "C" __global__ void lrn(
        const T* x, long long xsn, long long xsc, long long xsh, long long xsw,
        T* y, long long ysn, long long ysc, long long ysh, long long ysw,
        int N, int C, int H, int W, int size, double alpha, double beta, double k) {
    const long long total = (long long)N * C * H * W;
    const int pre = (size - 1) / 2;
    GR_LOOP(t, total) {
        long long r = gr_div(t, W);
        int w = (int)(t - r * W);
        long long r2 = gr_div(r, H);
        int h = (int)(r - r2 * H);
        long long n = gr_div(r2, C);
        int c = (int)(r2 - n * C);
        const T* xp = x + n * xsn + (long long)h * xsh + (long long)w * xsw;
        int lo = c - pre < 0 ? 0 : c - pre;
        int hi = c - pre + size > C ? C : c - pre + size;
        double s = 0.0;
        for (int j = lo; j < hi; ++j) {
            double v = (double)xp[j * xsc];
            s += v * v;
        }
        double scale = s * (alpha / size) + k;
        y[n * ysn + c * ysc + (long long)h * ysh + (long long)w * ysw] =
            (T)((double)xp[c * xsc] * pow(scale, -beta));
    }
}

// batch_norm's per-channel scale and shift, in double as the reference computes them
extern "C" __global__ void bn_coeffs(
        const T* mean, const T* var, const T* gamma, const T* beta, int affine, long long C,
        double eps, T* scale, T* shift) {
    GR_LOOP(c, C) {
        double inv = 1.0 / sqrt((double)var[c] + eps);
        double sh;
        if (affine) {
            inv = inv * (double)gamma[c];
            sh = (double)beta[c] - (double)mean[c] * inv;
        } else {
            sh = -(double)mean[c] * inv;
        }
        scale[c] = (T)inv;
        shift[c] = (T)sh;
    }
}

// y = x * scale[c] (+ shift[c]) over an (N, C, H, W) view
extern "C" __global__ void channel_affine(
        const T* x, long long xsn, long long xsc, long long xsh, long long xsw,
        T* y, long long ysn, long long ysc, long long ysh, long long ysw,
        long long N, long long C, long long H, long long W,
        const T* scale, const T* shift, int has_shift) {
    const long long total = N * C * H * W;
    GR_LOOP(t, total) {
        long long r = gr_div(t, W);
        long long w = t - r * W;
        long long r2 = gr_div(r, H);
        long long h = r - r2 * H;
        long long n = gr_div(r2, C);
        long long c = r2 - n * C;
        T v = gr_mul(x[n * xsn + c * xsc + h * xsh + w * xsw], scale[c]);
        if (has_shift) v = v + shift[c];
        y[n * ysn + c * ysc + h * ysh + w * ysw] = v;
    }
}
"""

SOFTMAX = r"""
// rows (outer, inner) of length L along the axis; one block (a power of two <= 256 threads) per
// row; the sum of exponentials is accumulated in double
extern "C" __global__ void softmax(
        const T* x, long long xso, long long xsl, long long xsi,
        T* y, long long yso, long long ysl, long long ysi,
        long long outer, long long L, long long inner, int log_mode) {
    __shared__ double red[256];
    const int tid = threadIdx.x;
    for (long long row = blockIdx.x; row < outer * inner; row += gridDim.x) {
        long long o = row / inner, in = row % inner;
        const T* xr = x + o * xso + in * xsi;
        T* yr = y + o * yso + in * ysi;
        T m = -gr_inf((T)0);
        for (long long j = tid; j < L; j += blockDim.x) {
            T v = xr[j * xsl];
            if (v > m || v != v) m = v;
        }
        red[tid] = (double)m;
        __syncthreads();
        for (int s = blockDim.x / 2; s > 0; s >>= 1) {
            if (tid < s) {
                double other = red[tid + s];
                if (other > red[tid] || other != other) red[tid] = other;
            }
            __syncthreads();
        }
        m = (T)red[0];
        __syncthreads();
        double sum = 0.0;
        for (long long j = tid; j < L; j += blockDim.x) sum += (double)gr_exp(xr[j * xsl] - m);
        red[tid] = sum;
        __syncthreads();
        for (int s = blockDim.x / 2; s > 0; s >>= 1) {
            if (tid < s) red[tid] += red[tid + s];
            __syncthreads();
        }
        sum = red[0];
        __syncthreads();
        if (log_mode) {
            T ls = (T)log(sum);
            for (long long j = tid; j < L; j += blockDim.x) yr[j * ysl] = (xr[j * xsl] - m) - ls;
        } else {
            T total = (T)sum;
            for (long long j = tid; j < L; j += blockDim.x)
                yr[j * ysl] = gr_exp(xr[j * xsl] - m) / total;
        }
    }
}
"""

LOSS = r"""
// labels of any integer or floating type: 0 float32, 1 float64, 2 int8, 3 int16, 4 int32,
// 5 int64, 6 uint8, 7 uint16, 8 uint32, 9 uint64, 10 bool
GR_DEVICE double gr_label(const void* labels, long long i, int kind) {
    switch (kind) {
    case 0: return (double)((const float*)labels)[i];
    case 1: return ((const double*)labels)[i];
    case 2: return (double)((const signed char*)labels)[i];
    case 3: return (double)((const short*)labels)[i];
    case 4: return (double)((const int*)labels)[i];
    case 5: return (double)((const long long*)labels)[i];
    case 6: return (double)((const unsigned char*)labels)[i];
    case 7: return (double)((const unsigned short*)labels)[i];
    case 8: return (double)((const unsigned int*)labels)[i];
    case 9: return (double)((const unsigned long long*)labels)[i];
    default: return (double)((const unsigned char*)labels)[i];
    }
}

// mode 0: mean softmax cross entropy, 1: mean negative log-likelihood, 2: top-k accuracy;
// one block of 256 threads; an invalid label makes the result NaN
extern "C" __global__ void class_loss(
        const T* x, long long xs0, long long xs1, const void* labels, long long ls,
        int label_kind, long long N, long long C, int mode, int top_k, T* out) {
    __shared__ double red[256];
    __shared__ int bad[256];
    const int tid = threadIdx.x;
    double acc = 0.0;
    int invalid = 0;
    for (long long i = tid; i < N; i += blockDim.x) {
        double lab = gr_label(labels, i * ls, label_kind);
        long long idx = (long long)lab;
        if (lab != (double)idx || idx < 0 || idx >= C) {
            invalid = 1;
            continue;
        }
        const T* row = x + i * xs0;
        if (mode == 0) {
            double m = -gr_inf(0.0);
            for (long long j = 0; j < C; ++j) {
                double v = (double)row[j * xs1];
                if (v > m || v != v) m = v;
            }
            double s = 0.0;
            for (long long j = 0; j < C; ++j) s += exp((double)row[j * xs1] - m);
            acc += log(s) - ((double)row[idx * xs1] - m);
        } else if (mode == 1) {
            acc += -(double)row[idx * xs1];
        } else {
            T xl = row[idx * xs1];
            long long higher = 0;
            for (long long j = 0; j < C; ++j) higher += row[j * xs1] > xl ? 1 : 0;
            acc += higher < top_k ? 1.0 : 0.0;
        }
    }
    red[tid] = acc;
    bad[tid] = invalid;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (tid < s) {
            red[tid] += red[tid + s];
            bad[tid] |= bad[tid + s];
        }
        __syncthreads();
    }
    if (tid == 0) {
        if (bad[0]) out[0] = gr_nan((T)0);
        else if (N == 0) out[0] = mode == 2 ? (T)0 : gr_nan((T)0);
        else out[0] = (T)(red[0] / (double)N);
    }
}
"""

OPTIM = r"""
// policies: 0 fixed, 1 step, 2 multistep (up to 8 step values), 3 exp, 4 inv, 5 poly
extern "C" __global__ void sgd_update(
        T* param, const T* grad, T* vel, const double* it, long long n,
        double lr, double momentum, double decay, double lr_mult, int policy, double gamma,
        double power, double stepsize, double max_iter, int nsv,
        double sv0, double sv1, double sv2, double sv3, double sv4, double sv5, double sv6,
        double sv7) {
    const double t = it[0];
    double rate = lr;
    if (policy == 1) {
        rate = lr * pow(gamma, floor(t / stepsize));
    } else if (policy == 2) {
        const double sv[8] = {sv0, sv1, sv2, sv3, sv4, sv5, sv6, sv7};
        int passed = 0;
        for (int i = 0; i < nsv; ++i) passed += t >= sv[i] ? 1 : 0;
        rate = lr * pow(gamma, (double)passed);
    } else if (policy == 3) {
        rate = lr * pow(gamma, t);
    } else if (policy == 4) {
        rate = lr * pow(1.0 + gamma * t, -power);
    } else if (policy == 5) {
        double f = 1.0 - t / max_iter;
        rate = lr * pow(f > 0.0 ? f : 0.0, power);
    }
    const T r = (T)(rate * lr_mult), mom = (T)momentum, dec = (T)decay;
    GR_LOOP(i, n) {
        T v = gr_mul(vel[i], mom) + grad[i];
        if (decay != 0.0) v = v + gr_mul(dec, param[i]);
        vel[i] = v;
        param[i] = param[i] - gr_mul(r, v);
    }
}

extern "C" __global__ void counter_inc(double* it) {
    if (blockIdx.x == 0 && threadIdx.x == 0) it[0] = it[0] + 1.0;
}
"""

SOURCES = {"elementwise": ELEMENTWISE, "conv": CONV, "gemm": GEMM, "pool": POOL, "norm": NORM,
           "softmax": SOFTMAX, "loss": LOSS, "optim": OPTIM}

# Host C++ definitions of the CUDA built-ins the kernels use: the emulated device compiles the same
# sources with g++ and runs every thread of a block (in threads of its own where the kernel
# synchronizes, see cuda.py's emulator).
EMULATION_PRELUDE = r"""
#include <cmath>
#include <cstring>
#include <algorithm>
struct gr_dim3 { unsigned int x, y, z; };
extern thread_local gr_dim3 threadIdx;
extern gr_dim3 blockIdx, blockDim, gridDim;
void gr_emu_syncthreads();
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
#define __syncthreads() gr_emu_syncthreads()
#define GR_DEVICE static inline
using std::min;
using std::max;
using std::exp; using std::log; using std::tanh; using std::pow; using std::sqrt; using std::floor;
using std::fabs;
static inline float __fmul_rn(float a, float b) { volatile float r = a * b; return r; }
static inline double __dmul_rn(double a, double b) { volatile double r = a * b; return r; }
static inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
static inline double __longlong_as_double(long long i) { double d; std::memcpy(&d, &i, 8); return d; }
"""


def module_source(dtype, *, emulate: bool = False) -> str:
    """The whole CUDA module for ``dtype`` (float32 or float64)."""
    ctype = CTYPES[np.dtype(dtype).name]
    head = (EMULATION_PRELUDE if emulate else "") + f"typedef {ctype} T;\n"
    return head + PRELUDE + "".join(SOURCES.values())


# ---- kernel signatures, parsed from the sources -----------------------------------------------
_KERNEL_RE = re.compile(r'extern "C" __global__ void (\w+)\(([^)]*)\)\s*\{', re.S)
_TYPES = {"const T*": "ptr", "T*": "ptr", "const void*": "ptr", "const double*": "ptr",
          "double*": "ptr", "T": "T", "int": "int", "long long": "i64", "double": "f64",
          "float": "f32"}


def parse_signatures(source: str) -> dict[str, tuple[str, ...]]:
    """``{kernel: (arg kind, ...)}`` with kinds ptr, T, int, i64, f64, f32."""
    out = {}
    for name, params in _KERNEL_RE.findall(source):
        kinds = []
        for p in params.split(","):
            p = " ".join(p.split())
            ctype = p.rsplit(" ", 1)[0].replace(" *", "*")
            if ctype not in _TYPES:
                raise ValueError(f"kernel {name}: unsupported parameter {p!r}")
            kinds.append(_TYPES[ctype])
        out[name] = tuple(kinds)
    return out


SIGNATURES = parse_signatures("".join(SOURCES.values()))


def kernel_params(source: str | None = None) -> dict[str, tuple[str, ...]]:
    """``{kernel: (C type of each parameter, ...)}`` (the emulator's argument unpacking)."""
    out = {}
    for name, params in _KERNEL_RE.findall(source or "".join(SOURCES.values())):
        out[name] = tuple(" ".join(p.split()).rsplit(" ", 1)[0].replace(" *", "*")
                          for p in params.split(","))
    return out

BARRIER_KERNELS = frozenset(name for name, body in re.findall(
    r'extern "C" __global__ void (\w+)\((.*?)\n\}', "".join(SOURCES.values()), re.S)
    if "__syncthreads" in body)


# ---- calls ----------------------------------------------------------------------------------------
@dataclasses.dataclass
class Call:
    """One kernel launch with its arguments (arrays for pointers, Python numbers otherwise)."""

    kernel: str
    dtype: np.dtype
    grid: tuple
    block: tuple
    args: tuple

    def __post_init__(self):
        want = SIGNATURES[self.kernel]
        if len(want) != len(self.args):
            raise TypeError(f"{self.kernel} takes {len(want)} arguments, got {len(self.args)}")


@dataclasses.dataclass
class Gemm:
    """``C[b] = act(alpha * A[b] @ B[b] + beta * C[b] + bias)`` for b < batch; each operand is an
    array (its data pointer is the first element) with (batch, row, column) strides in elements.
    The device runs it with cuBLAS (+ ``bias_act``) or the ``gemm`` kernel (:meth:`as_kernel`)."""

    dtype: np.dtype
    batch: int
    m: int
    n: int
    k: int
    a: Any
    sa: tuple
    b: Any
    sb: tuple
    c: Any
    sc: tuple
    alpha: float = 1.0
    beta: float = 0.0
    bias: Any = None
    bias_mode: int = 0
    act: int = 0
    slope: float = 0.0

    def as_kernel(self) -> Call:
        grid = (_ceil(self.n, GEMM_TILE), _ceil(self.m, GEMM_TILE), self.batch)
        return Call("gemm", self.dtype, grid, (256, 1, 1), (
            self.a, *self.sa, self.b, *self.sb, self.c, *self.sc, self.m, self.n, self.k,
            self.alpha, self.beta, self.bias, self.bias_mode, self.act, self.slope))

    def epilogue(self) -> Call | None:
        """The bias + activation after a library GEMM (None when there is none)."""
        if not self.bias_mode and not self.act:
            return None
        return Call("bias_act", self.dtype, _grid(self.batch * self.m * self.n), (THREADS, 1, 1), (
            self.c, self.batch, self.m, self.n, *self.sc, self.bias, self.bias_mode, self.act,
            self.slope))


@dataclasses.dataclass(frozen=True)
class BlasPlan:
    """The column-major ``gemmStridedBatched`` call computing a :class:`Gemm`: cuBLAS sees the
    row-major ``C = A @ B`` as ``C^T = B^T A^T``, so its A is our B and its B our A."""

    transa: str
    transb: str
    m: int
    n: int
    k: int
    a: Any
    lda: int
    stride_a: int
    b: Any
    ldb: int
    stride_b: int
    c: Any
    ldc: int
    stride_c: int
    batch: int


INT32_MAX = 2**31 - 1


def _ld(unit: int, other: int, rows: int, cols: int) -> int | None:
    """The leading dimension of a column-major ``rows x cols`` matrix whose element (p, q) is at
    ``p * unit + q * other``, or None when it is not one."""
    if rows > 1 and unit != 1:
        return None
    if cols <= 1:
        return max(rows, 1)
    if other < max(rows, 1) or other > INT32_MAX:
        return None
    return int(other)


def blas_plan(g: Gemm) -> BlasPlan | None:
    """The cuBLAS arguments for ``g`` (None when a layout needs our kernel: no unit stride, an
    overlapping or too-large leading dimension, a batch stride that cuBLAS cannot take)."""
    m, n, k = g.m, g.n, g.k
    if min(m, n, k) < 1 or max(m, n, k, g.batch) > INT32_MAX:
        return None
    sab, sar, sac = g.sa
    sbb, sbr, sbc = g.sb
    scb, scr, scc = g.sc
    ldc = _ld(scc, scr, n, m)  # C^T: n x m
    if ldc is None or (g.batch > 1 and scb < 0):
        return None
    lda = _ld(sbc, sbr, n, k)  # B^T (n x k) as stored, or B (k x n) transposed
    transa = "N"
    if lda is None:
        lda, transa = _ld(sbr, sbc, k, n), "T"
    ldb = _ld(sac, sar, k, m)  # A^T (k x m) as stored, or A (m x k) transposed
    transb = "N"
    if ldb is None:
        ldb, transb = _ld(sar, sac, m, k), "T"
    if lda is None or ldb is None:
        return None
    batch = g.batch
    return BlasPlan(transa, transb, n, m, k, g.b, lda, sbb if batch > 1 else 0, g.a, ldb,
                    sab if batch > 1 else 0, g.c, ldc, scb if batch > 1 else 0, batch)


@dataclasses.dataclass
class Fallback:
    """An op run by its reference forward on the device arrays (no kernel of its own here)."""

    op: str
    forward: Callable
    attrs: Any
    inputs: list
    outputs: list
    reason: str

    def run(self) -> None:
        self.forward(self.attrs, self.inputs, self.outputs)


class Unsupported(Exception):
    """A binder cannot express this launch with the kernels (the caller falls back)."""


def _ceil(a: int, b: int) -> int:
    return -(-int(a) // b)


def _grid(total: int, threads: int = THREADS) -> tuple:
    return (max(1, min(_ceil(total, threads), MAX_BLOCKS)), 1, 1)


def _im2col_grid(rows: int, cols: int) -> tuple:
    return (max(1, min(_ceil(cols, THREADS), 1024)), max(1, min(rows, 65535)), 1)


# ---- layouts --------------------------------------------------------------------------------------
def estrides(a) -> tuple:
    """Strides of ``a`` in elements."""
    size = a.dtype.itemsize
    for s in a.strides:
        if s % size:
            raise Unsupported("a stride that is not a whole number of elements")
    return tuple(s // size for s in a.strides)


def collapse(shape, *strides) -> tuple[tuple, list[tuple]]:
    """Merge adjacent axes that every operand walks contiguously and drop unit axes: the same
    elements in the same C order, with as few axes as possible."""
    dims = [(n, [s[d] for s in strides]) for d, n in enumerate(shape) if n != 1]
    out: list = []
    for n, ss in dims:
        if out and all(ps == s * n for ps, s in zip(out[-1][1], ss)):
            out[-1] = (out[-1][0] * n, ss)
        else:
            out.append((n, ss))
    if not out:
        out = [(1, [0] * len(strides))]
    return tuple(n for n, _ in out), [tuple(ss[i] for _, ss in out) for i in range(len(strides))]


def pad6(shape, strides) -> tuple[tuple, tuple]:
    if len(shape) > MAX_RANK:
        raise Unsupported(f"rank {len(shape)} above {MAX_RANK}")
    k = MAX_RANK - len(shape)
    return (1,) * k + tuple(int(n) for n in shape), (0,) * k + tuple(int(s) for s in strides)


def _size(shape) -> int:
    return int(np.prod(shape, dtype=np.int64))


def _check_dtype(*arrays):
    dtype = np.dtype(arrays[0].dtype)
    if dtype.name not in CTYPES:
        raise Unsupported(f"dtype {dtype}")
    for a in arrays[1:]:
        if np.dtype(a.dtype) != dtype:
            raise Unsupported(f"mixed dtypes {dtype} and {a.dtype}")
    return dtype


# ---- binders: (attrs, inputs, outputs, workspace) -> [Call | Gemm] -----------------------------
UNARY_CODES = {"identity": 0, "dropout": 0, "relu": 1, "tanh": 2, "sigmoid": 3, "scale": 4}
ACT_CODES = {"none": 0, "relu": 1, "tanh": 2, "sigmoid": 3}


def _step(op: str, attrs) -> tuple:
    code = UNARY_CODES[op]
    if op == "relu":
        return code, attrs.get("negative_slope", 0.0), 0.0, 1.0
    if op == "scale":
        return code, attrs["scale"], attrs["shift"], attrs["power"]
    return code, 0.0, 0.0, 1.0


def unary_calls(steps, x, y) -> list:
    """``y = steps(x)`` elementwise in launches of up to :data:`STEPS_PER_LAUNCH` steps."""
    dtype = _check_dtype(x, y)
    if x.shape != y.shape:
        raise Unsupported("unary shapes differ")
    steps = list(steps) or [(0, 0.0, 0.0, 1.0)]
    calls, src = [], x
    for i in range(0, len(steps), STEPS_PER_LAUNCH):
        chunk = steps[i:i + STEPS_PER_LAUNCH]
        shape, (xs, ys) = collapse(y.shape, estrides(src), estrides(y))
        shape, xs = pad6(shape, xs)
        _, ys = pad6(shape[MAX_RANK - len(ys):], ys)
        packed = []
        for k in range(STEPS_PER_LAUNCH):
            packed += list(chunk[k]) if k < len(chunk) else [0, 0.0, 0.0, 1.0]
        total = _size(y.shape)
        calls.append(Call("ew_unary", dtype, _grid(total), (THREADS, 1, 1),
                          (src, y, total, *shape, *xs, *ys, len(chunk), *packed)))
        src = y
    return calls


def bind_unary(op):
    def bind(attrs, inputs, outputs, ws):
        if op == "elementwise_chain":
            steps = [_step(o, a) for o, a in attrs["steps"]]
        elif op in ("dropout", "identity"):
            steps = []
        else:
            steps = [_step(op, attrs)]
        return unary_calls(steps, inputs[0], outputs[0])
    return bind


def broadcast_strides(x, out_shape) -> tuple:
    """Strides (elements) of ``x`` read as an array of ``out_shape`` (numpy broadcasting)."""
    lead = len(out_shape) - x.ndim
    if lead < 0:
        raise Unsupported("input of higher rank than the output")
    xs = estrides(x)
    out = [0] * lead
    for d, n in enumerate(x.shape):
        want = out_shape[lead + d]
        if n == want:
            out.append(xs[d])
        elif n == 1:
            out.append(0)
        else:
            raise Unsupported(f"shape {x.shape} does not broadcast to {out_shape}")
    return tuple(out)


def bind_nary(op):
    def bind(attrs, inputs, outputs, ws):
        y = outputs[0]
        dtype = _check_dtype(y, *inputs)
        coeffs = list(attrs.get("coeffs") or ()) or [1.0] * len(inputs)
        mul = 1 if op == "mul" else 0
        strides = [broadcast_strides(x, y.shape) for x in inputs]
        shape, all_s = collapse(y.shape, estrides(y), *strides)
        shape, ys = pad6(shape, all_s[0])
        xs = [pad6(shape[MAX_RANK - len(s):], s)[1] for s in all_s[1:]]
        total = _size(y.shape)
        calls = []
        for start in range(0, len(inputs), INPUTS_PER_LAUNCH):
            chunk = list(range(start, min(len(inputs), start + INPUTS_PER_LAUNCH)))
            args = []
            for k in range(INPUTS_PER_LAUNCH):
                if k < len(chunk):
                    i = chunk[k]
                    args += [inputs[i], *xs[i], coeffs[i]]
                else:
                    args += [None, 0, 0, 0, 0, 0, 0, 1.0]
            calls.append(Call("ew_nary", dtype, _grid(total), (THREADS, 1, 1),
                              (y, total, *shape, *ys, len(chunk), mul, int(start > 0), *args)))
        return calls
    return bind


def copy_call(x, y) -> Call:
    """``y[...] = x`` in C order (shapes may differ, sizes not)."""
    dtype = _check_dtype(x, y)
    total = _size(y.shape)
    if _size(x.shape) != total:
        raise Unsupported("copy of different sizes")
    xn, (xs,) = collapse(x.shape, estrides(x))
    yn, (ys,) = collapse(y.shape, estrides(y))
    xn, xs = pad6(xn, xs)
    yn, ys = pad6(yn, ys)
    return Call("copy_nd", dtype, _grid(total), (THREADS, 1, 1), (x, y, total, *xn, *xs, *yn, *ys))


def _axis_slices(a, axis, sizes):
    start = 0
    for size in sizes:
        yield a[(slice(None),) * axis + (slice(start, start + size),)]
        start += size


def bind_concat(attrs, inputs, outputs, ws):
    out = outputs[0]
    axis = attrs["axis"] % out.ndim
    return [copy_call(x, part) for x, part in
            zip(inputs, _axis_slices(out, axis, [x.shape[axis] for x in inputs]))]


def bind_split(attrs, inputs, outputs, ws):
    x = inputs[0]
    axis = attrs["axis"] % x.ndim
    return [copy_call(part, y) for y, part in
            zip(outputs, _axis_slices(x, axis, [y.shape[axis] for y in outputs]))]


def bind_copy(attrs, inputs, outputs, ws):
    return [copy_call(inputs[0], outputs[0])]


def bind_transpose(attrs, inputs, outputs, ws):
    return [copy_call(inputs[0].transpose(attrs["perm"]), outputs[0])]


def pad_call(x, y, lo, fill) -> Call:
    dtype = _check_dtype(x, y)
    if x.ndim != y.ndim or x.ndim > MAX_RANK:
        raise Unsupported("pad rank")
    k = MAX_RANK - x.ndim
    xn, xs = pad6(x.shape, estrides(x))
    yn, ys = pad6(y.shape, estrides(y))
    lo6 = (0,) * k + tuple(int(v) for v in lo)
    total = _size(y.shape)
    return Call("pad_nd", dtype, _grid(total), (THREADS, 1, 1),
                (x, y, total, fill, *xn, *xs, *yn, *ys, *lo6))


def bind_zero_pad(attrs, inputs, outputs, ws):
    x = inputs[0]
    t, _, l, _ = attrs["pads"]
    return [pad_call(x, outputs[0], (0,) * (x.ndim - 2) + (t, l), 0.0)]


def bind_pad(attrs, inputs, outputs, ws):
    x = inputs[0]
    return [pad_call(x, outputs[0], attrs["pads"][:x.ndim], attrs["value"])]


# ---- GEMM-based ops ------------------------------------------------------------------------------
def _plane_strides(a) -> tuple:
    """(n, c, p) strides of an NCHW view whose H and W collapse into one axis p."""
    sn, sc, sh, sw = estrides(a)
    h, w = a.shape[2:]
    if h > 1 and w > 1 and sh != w * sw:
        raise Unsupported("image rows that are not contiguous planes")
    return sn, sc, (sw if w > 1 else sh)


def _is_pointwise(attrs, kh, kw) -> bool:
    return (kh, kw) == (1, 1) and attrs["stride"] == (1, 1) and not any(attrs["pads"])


def conv_chunk(n, cg, kh, kw, oh, ow, itemsize) -> int:
    """Images whose im2col columns go to the workspace at once."""
    per_image = cg * kh * kw * oh * ow * itemsize
    return max(1, min(n, COLS_BYTES // max(per_image, 1)))


def conv_workspace_bytes(n, c, o, cg, kh, kw, oh, ow, attrs, itemsize) -> int:
    if _is_pointwise(attrs, kh, kw):
        return 0
    return conv_chunk(n, cg, kh, kw, oh, ow, itemsize) * cg * kh * kw * oh * ow * itemsize


def bind_conv2d(attrs, inputs, outputs, ws):
    x, w = inputs[0], inputs[1]
    bias = inputs[2] if len(inputs) == 3 else None
    out = outputs[0]
    dtype = _check_dtype(x, w, out, *([bias] if bias is not None else []))
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    oh, ow = out.shape[2:]
    g = attrs["groups"]
    og = o // g
    k = cg * kh * kw
    p = oh * ow
    if estrides(w) != (cg * kh * kw, kh * kw, kw, 1):
        raise Unsupported("a weight that is not contiguous")
    osn, osc, osp = _plane_strides(out)
    act = ACT_CODES[attrs["activation"]]
    slope = attrs["negative_slope"]
    calls: list = []
    if _is_pointwise(attrs, kh, kw):
        xsn, xsc, xsp = _plane_strides(x)
        for gi in range(g):
            calls.append(Gemm(dtype, n, og, p, cg, w[gi * og:(gi + 1) * og], (0, k, 1),
                              x[:, gi * cg:(gi + 1) * cg], (xsn, xsc, xsp),
                              out[:, gi * og:(gi + 1) * og], (osn, osc, osp),
                              bias=None if bias is None else bias[gi * og:(gi + 1) * og],
                              bias_mode=0 if bias is None else 1, act=act, slope=slope))
        return calls
    chunk = conv_chunk(n, cg, kh, kw, oh, ow, dtype.itemsize)
    cols_all = ws.view(dtype)[:chunk * k * p]
    xs = estrides(x)
    (sh, sw), (dh, dw) = attrs["stride"], attrs["dilation"]
    t, _, l, _ = attrs["pads"]
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        cols = cols_all[:m * k * p]
        for gi in range(g):
            xg = x[start:start + m, gi * cg:(gi + 1) * cg]
            calls.append(Call("im2col", dtype, _im2col_grid(m * k, p), (THREADS, 1, 1), (
                xg, *xs, cols, m, cg, h, wd, kh, kw, oh, ow, sh, sw, t, l, dh, dw)))
            calls.append(Gemm(dtype, m, og, p, k, w[gi * og:(gi + 1) * og], (0, k, 1),
                              cols, (k * p, p, 1),
                              out[start:start + m, gi * og:(gi + 1) * og], (osn, osc, osp),
                              bias=None if bias is None else bias[gi * og:(gi + 1) * og],
                              bias_mode=0 if bias is None else 1, act=act, slope=slope))
    return calls


def bind_dense(attrs, inputs, outputs, ws):
    x, w = inputs[0], inputs[1]
    bias = inputs[2] if len(inputs) == 3 else None
    out = outputs[0]
    dtype = _check_dtype(x, w, out, *([bias] if bias is not None else []))
    n, k = x.shape
    o = w.shape[0]
    xs0, xs1 = estrides(x)
    ws0, ws1 = estrides(w)
    ys0, ys1 = estrides(out)
    return [Gemm(dtype, 1, n, o, k, x, (0, xs0, xs1), w, (0, ws1, ws0), out, (0, ys0, ys1),
                 bias=bias, bias_mode=0 if bias is None else 2,
                 act=ACT_CODES[attrs["activation"]], slope=attrs["negative_slope"])]


def bind_matmul(attrs, inputs, outputs, ws):
    a, b = inputs
    out = outputs[0]
    dtype = _check_dtype(a, b, out)
    if a.ndim == 1:
        a = a[None, :]
        out = out[..., None, :]
    if b.ndim == 1:
        b = b[:, None]
        out = out[..., :, None]
    stack = out.shape[:-2]
    m, n = out.shape[-2:]
    k = a.shape[-1]

    def stack_strides(v):
        lead = len(stack) - (v.ndim - 2)
        vs = estrides(v)
        return [0] * lead + [vs[d] if v.shape[d] != 1 else 0 for d in range(v.ndim - 2)]

    sa, sb, so = stack_strides(a), stack_strides(b), list(estrides(out)[:-2])
    a_rc, b_rc, o_rc = estrides(a)[-2:], estrides(b)[-2:], estrides(out)[-2:]
    inner = stack[-1] if stack else 1
    calls = []
    for idx in itertools.product(*(range(s) for s in stack[:-1])):
        oa = sum(i * s for i, s in zip(idx, sa))
        ob = sum(i * s for i, s in zip(idx, sb))
        oo = sum(i * s for i, s in zip(idx, so))
        calls.append(Gemm(dtype, inner, m, n, k,
                          _at(a, oa), (sa[-1] if stack else 0, *a_rc),
                          _at(b, ob), (sb[-1] if stack else 0, *b_rc),
                          _at(out, oo), (so[-1] if stack else 0, *o_rc)))
    return calls


def _at(a, offset: int):
    """``a``'s memory from ``offset`` elements after its first element (a kernel argument)."""
    return a if offset == 0 else Offset(a, offset)


@dataclasses.dataclass
class Offset:
    """An array argument at an element offset from another array's first element."""

    array: Any
    offset: int


# ---- pooling, normalization, softmax, losses, optimizer ------------------------------------------
def _nchw(a) -> tuple:
    """(N, C, H, W) and 4 strides of a rank-2 to rank-4 view (missing trailing axes have size 1)."""
    s = estrides(a)
    if a.ndim > 4 or a.ndim < 2:
        raise Unsupported(f"rank {a.ndim}")
    shape = tuple(a.shape) + (1,) * (4 - a.ndim)
    return shape, tuple(s) + (0,) * (4 - a.ndim)


def bind_pool(op):
    def bind(attrs, inputs, outputs, ws):
        from ..ops.pool import pool_geometry

        x, y = inputs[0], outputs[0]
        dtype = _check_dtype(x, y)
        n, c, h, w = x.shape
        oh, ow = y.shape[2:]
        (kh, kw), (sh, sw), (t, b, l, r) = pool_geometry(attrs, h, w)
        total = n * c * oh * ow
        return [Call("pool2d", dtype, _grid(total), (THREADS, 1, 1), (
            x, *estrides(x), y, *estrides(y), n, c, h, w, oh, ow, kh, kw, sh, sw, t, b, l, r,
            int(op == "max_pool"), int(bool(attrs.get("count_include_pad", True)))))]
    return bind


def bind_lrn(attrs, inputs, outputs, ws):
    x, y = inputs[0], outputs[0]
    dtype = _check_dtype(x, y)
    n, c, h, w = x.shape
    return [Call("lrn", dtype, _grid(n * c * h * w), (THREADS, 1, 1), (
        x, *estrides(x), y, *estrides(y), n, c, h, w, attrs["size"], attrs["alpha"],
        attrs["beta"], attrs["k"]))]


def _contiguous_1d(*arrays):
    for a in arrays:
        if a.ndim != 1 or (a.shape[0] > 1 and estrides(a)[0] != 1):
            raise Unsupported("a per-channel parameter that is not contiguous")


def _affine_call(x, y, scale, shift):
    dtype = _check_dtype(x, y, scale, *([shift] if shift is not None else []))
    shape, xs = _nchw(x)
    _, ys = _nchw(y)
    n, c, h, w = shape
    return Call("channel_affine", dtype, _grid(n * c * h * w), (THREADS, 1, 1), (
        x, *xs, y, *ys, n, c, h, w, scale, shift, int(shift is not None)))


def bind_batch_norm(attrs, inputs, outputs, ws):
    x, mean, var = inputs[:3]
    affine = len(inputs) == 5
    gamma, beta = (inputs[3], inputs[4]) if affine else (None, None)
    dtype = _check_dtype(x, mean, var, *(inputs[3:]))
    _contiguous_1d(*inputs[1:])
    c = x.shape[1]
    coeffs = ws.view(dtype)
    scale, shift = coeffs[:c], coeffs[c:2 * c]
    prep = Call("bn_coeffs", dtype, _grid(c), (THREADS, 1, 1),
                (mean, var, gamma, beta, int(affine), c, attrs["eps"], scale, shift))
    return [prep, _affine_call(x, outputs[0], scale, shift)]


def bind_channel_affine(attrs, inputs, outputs, ws):
    _contiguous_1d(*inputs[1:])
    return [_affine_call(inputs[0], outputs[0], inputs[1], inputs[2] if len(inputs) == 3 else None)]


def _rows(a, axis):
    """(outer, L, inner) and their strides for ``a`` along ``axis``."""
    s = estrides(a)
    outer_shape, outer_s = collapse(a.shape[:axis], s[:axis]) if axis else ((1,), [(0,)])
    inner_shape, inner_s = collapse(a.shape[axis + 1:], s[axis + 1:]) if axis + 1 < a.ndim \
        else ((1,), [(0,)])
    if len(outer_shape) != 1 or len(inner_shape) != 1:
        raise Unsupported("softmax rows that do not collapse")
    return (outer_shape[0], a.shape[axis], inner_shape[0]), (outer_s[0][0], s[axis], inner_s[0][0])


def bind_softmax(op):
    def bind(attrs, inputs, outputs, ws):
        x, y = inputs[0], outputs[0]
        dtype = _check_dtype(x, y)
        axis = attrs["axis"] % x.ndim
        (outer, length, inner), xs = _rows(x, axis)
        _, ys = _rows(y, axis)
        rows = outer * inner
        threads = 32
        while threads < min(length, 256):
            threads *= 2
        return [Call("softmax", dtype, (max(1, min(rows, MAX_BLOCKS)), 1, 1), (threads, 1, 1), (
            x, *xs, y, *ys, outer, length, inner, int(op == "log_softmax")))]
    return bind


LABEL_KINDS = {"float32": 0, "float64": 1, "int8": 2, "int16": 3, "int32": 4, "int64": 5,
               "uint8": 6, "uint16": 7, "uint32": 8, "uint64": 9, "bool": 10}


def bind_loss(op):
    mode = {"softmax_cross_entropy": 0, "nll_loss": 1, "accuracy": 2}[op]

    def bind(attrs, inputs, outputs, ws):
        x, labels = inputs
        out = outputs[0]
        dtype = _check_dtype(x, out)
        kind = LABEL_KINDS.get(np.dtype(labels.dtype).name)
        if kind is None:
            raise Unsupported(f"labels of dtype {labels.dtype}")
        n, c = x.shape
        return [Call("class_loss", dtype, (1, 1, 1), (256, 1, 1), (
            x, *estrides(x), labels, estrides(labels)[0] if labels.ndim else 0, kind, n, c, mode,
            attrs.get("top_k", 1), out))]
    return bind


POLICY_CODES = {"fixed": 0, "step": 1, "multistep": 2, "exp": 3, "inv": 4, "poly": 5}


def bind_sgd(attrs, inputs, outputs, ws):
    param, grad, vel, it = inputs
    dtype = _check_dtype(param, grad, vel)
    if np.dtype(it.dtype) != np.float64 or it.size != 1:
        raise Unsupported("an iteration counter that is not one float64")
    for a in (param, grad, vel):
        if not a.flags.c_contiguous:
            raise Unsupported("a parameter, gradient or velocity that is not contiguous")
    sv = tuple(attrs["stepvalues"])
    if len(sv) > 8:
        raise Unsupported("more than 8 step values")
    n = int(param.size)
    return [Call("sgd_update", dtype, _grid(n), (THREADS, 1, 1), (
        param, grad, vel, it, n, attrs["lr"], attrs["momentum"],
        attrs["weight_decay"] * attrs["decay_mult"], attrs["lr_mult"],
        POLICY_CODES[attrs["policy"]], attrs["gamma"], attrs["power"], float(attrs["stepsize"]),
        float(attrs["max_iter"]), len(sv), *(sv + (0.0,) * (8 - len(sv)))))]


def bind_counter(attrs, inputs, outputs, ws):
    it = inputs[0]
    if np.dtype(it.dtype) != np.float64 or it.size != 1:
        raise Unsupported("an iteration counter that is not one float64")
    return [Call("counter_inc", np.dtype(np.float32), (1, 1, 1), (1, 1, 1), (it,))]


BINDERS: dict[str, Callable] = {
    **{op: bind_unary(op) for op in ("relu", "tanh", "sigmoid", "scale", "dropout", "identity",
                                     "elementwise_chain")},
    "add": bind_nary("add"), "mul": bind_nary("mul"),
    "concat": bind_concat, "split": bind_split, "flatten": bind_copy, "reshape": bind_copy,
    "transpose": bind_transpose, "copy_to_device": bind_copy, "copy_to_host": bind_copy,
    "zero_pad": bind_zero_pad, "pad": bind_pad,
    "conv2d": bind_conv2d, "dense": bind_dense, "matmul": bind_matmul,
    "max_pool": bind_pool("max_pool"), "avg_pool": bind_pool("avg_pool"), "lrn": bind_lrn,
    "batch_norm": bind_batch_norm, "channel_affine": bind_channel_affine,
    "softmax": bind_softmax("softmax"), "log_softmax": bind_softmax("log_softmax"),
    "softmax_cross_entropy": bind_loss("softmax_cross_entropy"), "nll_loss": bind_loss("nll_loss"),
    "accuracy": bind_loss("accuracy"), "sgd_update": bind_sgd, "step_counter": bind_counter,
}


def bind(op: str, attrs, inputs, outputs, ws) -> list:
    """The calls that run ``op``, or one :class:`Fallback` (reference forward on device arrays)
    where no binder exists or a binder cannot express these arrays."""
    binder = BINDERS.get(op)
    reason = "no cuda kernel for this op"
    if binder is not None:
        try:
            return binder(attrs, inputs, outputs, ws)
        except Unsupported as err:
            reason = str(err)
    from ..ops import get_op

    return [Fallback(op, get_op(op).forward, attrs, inputs, outputs, reason)]


# ---- workspaces -----------------------------------------------------------------------------------
def workspace_bytes(node, graph, batch: int) -> int:
    """Scratch bytes the node's calls use (planned in the arena)."""
    specs = graph.specs
    if node.op == "conv2d":
        x = specs[node.inputs[0]]
        n, c, h, w = x.concrete(batch)
        o, cg, kh, kw = specs[node.inputs[1]].shape
        oh, ow = specs[node.outputs[0]].shape[2:]
        itemsize = np.dtype(x.dtype).itemsize
        return conv_workspace_bytes(n, c, o, cg, kh, kw, oh, ow, node.attrs, itemsize)
    if node.op == "batch_norm":
        x = specs[node.inputs[0]]
        return 2 * x.shape[1] * np.dtype(x.dtype).itemsize
    return 0
