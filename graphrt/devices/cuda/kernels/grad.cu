// gradient kernels: elementwise and activation gradients, softmax and loss gradients, channel
// sums (bias gradients), and dropout's mask from a counter-based RNG (Philox4x32-10)
// (compiled after prelude.cuh with T typedef'd to float or double: see ../sources.py)

// y = dy * f'(t) over rank-6 strided views (y may be dy): 0 relu (t = x or y, a = slope),
// 1 tanh (t = y), 2 sigmoid (t = y), 3 scale (t = x: a = power * scale, b = shift, c = scale,
// d = power - 1), 4 scale with power 1 (c = scale), 5 zero
extern "C" __global__ void ew_grad(
        const T* dy, const T* t, T* y, long long total,
        long long n0, long long n1, long long n2, long long n3, long long n4, long long n5,
        long long ds0, long long ds1, long long ds2, long long ds3, long long ds4, long long ds5,
        long long ts0, long long ts1, long long ts2, long long ts3, long long ts4, long long ts5,
        long long ys0, long long ys1, long long ys2, long long ys3, long long ys4, long long ys5,
        int op, T a, T b, T c, T d) {
    GR_ARRAY6(n);
    GR_ARRAY6(ds);
    GR_ARRAY6(ts);
    GR_ARRAY6(ys);
    GR_LOOP(i, total) {
        const T g = dy[gr_offset(i, n, ds)];
        const T v = t[gr_offset(i, n, ts)];
        T r;
        if (op == 0) r = gr_mul(g, v > (T)0 ? (T)1 : a);
        else if (op == 1) r = gr_mul(g, (T)1 - gr_mul(v, v));
        else if (op == 2) r = gr_mul(g, gr_mul(v, (T)1 - v));
        else if (op == 3) r = gr_mul(g, gr_mul(a, gr_pow(b + gr_mul(c, v), d)));
        else if (op == 4) r = gr_mul(g, c);
        else r = (T)0;
        y[gr_offset(i, n, ys)] = r;
    }
}

// unary_grad: y = dy * f'(x) for the unary step op of gr_unary (5 to 20), computed in double as
// the reference does (y may be dy)
extern "C" __global__ void unary_grad(
        const T* dy, const T* x, T* y, long long total,
        long long n0, long long n1, long long n2, long long n3, long long n4, long long n5,
        long long ds0, long long ds1, long long ds2, long long ds3, long long ds4, long long ds5,
        long long xs0, long long xs1, long long xs2, long long xs3, long long xs4, long long xs5,
        long long ys0, long long ys1, long long ys2, long long ys3, long long ys4, long long ys5,
        int op, double a, double b) {
    GR_ARRAY6(n);
    GR_ARRAY6(ds);
    GR_ARRAY6(xs);
    GR_ARRAY6(ys);
    GR_LOOP(i, total) {
        const double d = gr_unary_derivative(op, (double)x[gr_offset(i, n, xs)], a, b);
        y[gr_offset(i, n, ys)] = (T)((double)dy[gr_offset(i, n, ds)] * d);
    }
}

// binary_grad: y = the gradient of input ``operand`` of ew_nary's op (2 sub, 3 div, 4 pow,
// 5 maximum, 6 minimum: to the first input that attains the extreme, 7 prelu) or of where (8)
// given dy, over broadcast views of the nin inputs (of any kind of gr_label), in double as the
// reference computes it
extern "C" __global__ void binary_grad(
        const T* dy, T* y, long long total, int op, int operand, int nin,
        long long n0, long long n1, long long n2, long long n3, long long n4, long long n5,
        long long ds0, long long ds1, long long ds2, long long ds3, long long ds4, long long ds5,
        long long ys0, long long ys1, long long ys2, long long ys3, long long ys4, long long ys5,
        const void* x0, int k0, long long s00, long long s01, long long s02, long long s03,
        long long s04, long long s05,
        const void* x1, int k1, long long s10, long long s11, long long s12, long long s13,
        long long s14, long long s15,
        const void* x2, int k2, long long s20, long long s21, long long s22, long long s23,
        long long s24, long long s25,
        const void* x3, int k3, long long s30, long long s31, long long s32, long long s33,
        long long s34, long long s35) {
    GR_ARRAY6(n);
    GR_ARRAY6(ds);
    GR_ARRAY6(ys);
    const long long st[4][6] = {{GR_LIST6(s0)}, {GR_LIST6(s1)}, {GR_LIST6(s2)}, {GR_LIST6(s3)}};
    const void* xs[4] = {x0, x1, x2, x3};
    const int kinds[4] = {k0, k1, k2, k3};
    GR_LOOP(i, total) {
        double v[4];
        for (int k = 0; k < nin; ++k) v[k] = gr_label(xs[k], gr_offset(i, n, st[k]), kinds[k]);
        const double g = (double)dy[gr_offset(i, n, ds)], a = v[0], b = v[1];
        double r;
        if (op == 2) r = operand == 0 ? g : -g;
        else if (op == 3) r = operand == 0 ? g / b : -g * a / (b * b);
        else if (op == 4) r = operand == 0 ? g * b * pow(a, b - 1.0) : g * pow(a, b) * log(a);
        else if (op == 7) r = operand == 0 ? g * (a > 0.0 ? 1.0 : b) : g * gr_min(a, 0.0);
        else if (op == 8) r = g * ((a != 0.0) == (operand == 1) ? 1.0 : 0.0);
        else {  // maximum, minimum
            double e = a;
            for (int k = 1; k < nin; ++k) e = op == 5 ? gr_max(e, v[k]) : gr_min(e, v[k]);
            bool first = v[operand] == e;
            for (int k = 0; k < operand; ++k) first = first && !(v[k] == e);
            r = g * (first ? 1.0 : 0.0);
        }
        y[gr_offset(i, n, ys)] = (T)r;
    }
}

// softmax_grad: dx = (dy - sum(dy * y)) * y; log_softmax_grad: dx = dy - exp(y) * sum(dy); rows
// (outer, inner) of length L along the axis, one block (a power of two <= 256 threads) per row;
// dx may be dy (each thread reads its elements before writing them, after the row's sum)
extern "C" __global__ void softmax_grad(
        const T* dy, long long dso, long long dsl, long long dsi,
        const T* y, long long yso, long long ysl, long long ysi,
        T* dx, long long xso, long long xsl, long long xsi,
        long long outer, long long L, long long inner, int log_mode) {
    __shared__ double red[256];
    const int tid = threadIdx.x;
    for (long long row = blockIdx.x; row < outer * inner; row += gridDim.x) {
        long long o = row / inner, in = row % inner;
        const T* dr = dy + o * dso + in * dsi;
        const T* yr = y + o * yso + in * ysi;
        T* xr = dx + o * xso + in * xsi;
        double acc = 0.0;
        for (long long j = tid; j < L; j += blockDim.x)
            acc += log_mode ? (double)dr[j * dsl] : (double)gr_mul(dr[j * dsl], yr[j * ysl]);
        red[tid] = acc;
        __syncthreads();
        for (int s = blockDim.x / 2; s > 0; s >>= 1) {
            if (tid < s) red[tid] += red[tid + s];
            __syncthreads();
        }
        const T sum = (T)red[0];
        __syncthreads();
        for (long long j = tid; j < L; j += blockDim.x) {
            const T g = dr[j * dsl], v = yr[j * ysl];
            xr[j * xsl] = log_mode ? g - gr_mul(gr_exp(v), sum) : gr_mul(g - sum, v);
        }
    }
}

// softmax_cross_entropy_grad (nll = 0): dx = (softmax(x) - onehot) * dloss / N, in double;
// nll_loss_grad (nll = 1): dx = -onehot * dloss / N (x unused); one thread per row; a row with an
// invalid label is NaN (a kernel cannot raise). Label kinds as in loss.cu.
extern "C" __global__ void class_loss_grad(
        const T* x, long long xs0, long long xs1, const void* labels, long long ls,
        int label_kind, const T* dloss, T* dx, long long ds0, long long ds1, long long N,
        long long C, int nll) {
    const double scale = (double)dloss[0] / (double)(N > 1 ? N : 1);
    GR_LOOP(i, N) {
        double lab = gr_label(labels, i * ls, label_kind);
        long long idx = (long long)lab;
        T* out = dx + i * ds0;
        if (lab != (double)idx || idx < 0 || idx >= C) {
            for (long long j = 0; j < C; ++j) out[j * ds1] = gr_nan((T)0);
            continue;
        }
        if (nll) {
            for (long long j = 0; j < C; ++j) out[j * ds1] = j == idx ? (T)(-scale) : (T)0;
            continue;
        }
        const T* row = x + i * xs0;
        double m = -gr_inf(0.0);
        for (long long j = 0; j < C; ++j) {
            double v = (double)row[j * xs1];
            if (v > m || v != v) m = v;
        }
        double s = 0.0;
        for (long long j = 0; j < C; ++j) s += exp((double)row[j * xs1] - m);
        for (long long j = 0; j < C; ++j) {
            double p = exp((double)row[j * xs1] - m) / s;
            if (j == idx) p -= 1.0;
            out[j * ds1] = (T)(p * scale);
        }
    }
}

// out[c] = the sum of x[n, c, h, w] over n, h, w (in double): the bias gradient; one block
// (a power of two <= 256 threads) per channel
extern "C" __global__ void channel_sum(
        const T* x, long long sn, long long sc, long long sh, long long sw,
        long long N, long long C, long long H, long long W, T* out) {
    __shared__ double red[256];
    const int tid = threadIdx.x;
    const long long per = N * H * W;
    for (long long c = blockIdx.x; c < C; c += gridDim.x) {
        double acc = 0.0;
        for (long long t = tid; t < per; t += blockDim.x) {
            long long r = gr_div(t, W);
            long long w = t - r * W;
            long long n = gr_div(r, H);
            long long h = r - n * H;
            acc += (double)x[n * sn + c * sc + h * sh + w * sw];
        }
        red[tid] = acc;
        __syncthreads();
        for (int s = blockDim.x / 2; s > 0; s >>= 1) {
            if (tid < s) red[tid] += red[tid + s];
            __syncthreads();
        }
        if (tid == 0) out[c] = (T)red[0];
        __syncthreads();
    }
}

// Philox4x32-10 (Salmon et al., SC'11): 4 x 32 random bits from a 128-bit counter and a 64-bit key
GR_DEVICE void gr_philox(unsigned int c[4], unsigned int k0, unsigned int k1) {
    for (int round = 0; round < 10; ++round) {
        const unsigned long long p0 = (unsigned long long)0xD2511F53u * c[0];
        const unsigned long long p1 = (unsigned long long)0xCD9E8D57u * c[2];
        const unsigned int hi0 = (unsigned int)(p0 >> 32), lo0 = (unsigned int)p0;
        const unsigned int hi1 = (unsigned int)(p1 >> 32), lo1 = (unsigned int)p1;
        c[0] = hi1 ^ c[1] ^ k0;
        c[1] = lo1;
        c[2] = hi0 ^ c[3] ^ k1;
        c[3] = lo0;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
}

// dropout_train: element i (C order) keeps x when u >= rate, u = (word i % 4 of
// Philox4x32-10(counter = (i / 4, step), key = seed)) >> 8) / 2^24, with step = *counter (the
// node's device-resident step count, advanced by dropout_step after this kernel); mask is 0 or
// scale = 1 / (1 - rate); y = x * mask. Over rank-6 strided views, one thread per 4 elements.
extern "C" __global__ void dropout_mask(
        const T* x, T* y, T* mask, long long total,
        long long n0, long long n1, long long n2, long long n3, long long n4, long long n5,
        long long xs0, long long xs1, long long xs2, long long xs3, long long xs4, long long xs5,
        long long ys0, long long ys1, long long ys2, long long ys3, long long ys4, long long ys5,
        long long ms0, long long ms1, long long ms2, long long ms3, long long ms4, long long ms5,
        const long long* counter, long long seed, double rate, T scale) {
    GR_ARRAY6(n);
    GR_ARRAY6(xs);
    GR_ARRAY6(ys);
    GR_ARRAY6(ms);
    const unsigned long long step = (unsigned long long)counter[0];
    const unsigned long long key = (unsigned long long)seed;
    GR_LOOP(g, (total + 3) / 4) {
        unsigned int c[4] = {(unsigned int)g, (unsigned int)((unsigned long long)g >> 32),
                             (unsigned int)step, (unsigned int)(step >> 32)};
        gr_philox(c, (unsigned int)key, (unsigned int)(key >> 32));
        for (int lane = 0; lane < 4; ++lane) {
            const long long i = g * 4 + lane;
            if (i >= total) break;
            const double u = (double)(c[lane] >> 8) * (1.0 / 16777216.0);
            const T m = u >= rate ? scale : (T)0;
            mask[gr_offset(i, n, ms)] = m;
            y[gr_offset(i, n, ys)] = gr_mul(x[gr_offset(i, n, xs)], m);
        }
    }
}

extern "C" __global__ void dropout_step(long long* counter) {
    if (blockIdx.x == 0 && threadIdx.x == 0) counter[0] = counter[0] + 1;
}
