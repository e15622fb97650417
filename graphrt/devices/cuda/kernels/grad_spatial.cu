// gradient kernels of convolution (col2im), pooling, LRN and batch norm, and batch norm's training
// forward with its running averages (compiled after prelude.cuh with T typedef'd to float or
// double: see ../sources.py). Every scatter of the reference is a gather here: one thread per
// input element sums what reaches it, in the reference's order (kernel offsets i, then j), so no
// atomics and the same rounding.

// dx[n, c, h, w] = the sum over kernel offsets (i, j) of the columns cols[n][(c, i, j)][(oy, ox)]
// whose window puts offset (i, j) on pixel (h, w); columns with strides (csn, csk, 1)
extern "C" __global__ void col2im(
        const T* cols, long long csn, long long csk,
        T* dx, long long xsn, long long xsc, long long xsh, long long xsw,
        int N, int C, int H, int W, int KH, int KW, int OH, int OW,
        int sh, int sw, int pt, int pl, int dh, int dw) {
    const long long total = (long long)N * C * H * W;
    GR_LOOP(t, total) {
        long long n;
        int c, h, w;
        gr_nchw(t, C, H, W, n, c, h, w);
        T acc = (T)0;
        for (int i = 0; i < KH; ++i) {
            const int yp = h + pt - i * dh;
            if (yp < 0 || yp % sh) continue;
            const int oy = yp / sh;
            if (oy >= OH) continue;
            for (int j = 0; j < KW; ++j) {
                const int xp = w + pl - j * dw;
                if (xp < 0 || xp % sw) continue;
                const int ox = xp / sw;
                if (ox >= OW) continue;
                acc = acc + cols[n * csn + ((long long)(c * KH + i) * KW + j) * csk
                                 + (long long)oy * OW + ox];
            }
        }
        dx[n * xsn + c * xsc + (long long)h * xsh + (long long)w * xsw] = acc;
    }
}

// max_pool_grad (is_max): each window's dy goes to the FIRST maximal input of the window in
// row-major order (a NaN is maximal); avg_pool_grad: dy / divisor to every input of the window
extern "C" __global__ void pool2d_grad(
        const T* x, long long xsn, long long xsc, long long xsh, long long xsw,
        const T* y, long long ysn, long long ysc, long long ysh, long long ysw,
        const T* dy, long long dsn, long long dsc, long long dsh, long long dsw,
        T* dx, long long gsn, long long gsc, long long gsh, long long gsw,
        int N, int C, int H, int W, int OH, int OW, int KH, int KW, int SH, int SW,
        int PT, int PB, int PL, int PR, int is_max, int include_pad) {
    const long long total = (long long)N * C * H * W;
    GR_LOOP(t, total) {
        long long n;
        int c, h, w;
        gr_nchw(t, C, H, W, n, c, h, w);
        T acc = (T)0;
        for (int i = 0; i < KH; ++i) {
            const int yp = h + PT - i;
            if (yp < 0 || yp % SH) continue;
            const int oy = yp / SH;
            if (oy >= OH) continue;
            for (int j = 0; j < KW; ++j) {
                const int xp = w + PL - j;
                if (xp < 0 || xp % SW) continue;
                const int ox = xp / SW;
                if (ox >= OW) continue;
                const T g = dy[n * dsn + c * dsc + (long long)oy * dsh + (long long)ox * dsw];
                const int y0 = oy * SH, x0 = ox * SW;
                if (is_max) {
                    const T m = y[n * ysn + c * ysc + (long long)oy * ysh + (long long)ox * ysw];
                    const T* xp0 = x + n * xsn + c * xsc;
                    int first = -1;
                    for (int a = 0; a < KH && first < 0; ++a) {
                        const int iy = y0 + a - PT;
                        if (iy < 0 || iy >= H) continue;
                        for (int b = 0; b < KW; ++b) {
                            const int ix = x0 + b - PL;
                            if (ix < 0 || ix >= W) continue;
                            const T v = xp0[(long long)iy * xsh + (long long)ix * xsw];
                            if (v == m || (v != v && m != m)) {
                                first = a * KW + b;
                                break;
                            }
                        }
                    }
                    if (first == i * KW + j) acc = acc + g;
                } else {
                    long long dh, dw;
                    if (include_pad) {
                        dh = (long long)min(y0 + KH, H + PT + PB) - y0;
                        dw = (long long)min(x0 + KW, W + PL + PR) - x0;
                    } else {
                        dh = (long long)min(y0 + KH, H + PT) - max(y0, PT);
                        dw = (long long)min(x0 + KW, W + PL) - max(x0, PL);
                    }
                    const long long d = dh * dw;
                    acc = acc + g / (T)(d > 1 ? d : 1);
                }
            }
        }
        dx[n * gsn + c * gsc + (long long)h * gsh + (long long)w * gsw] = acc;
    }
}

// k + alpha / size * the sum of x^2 over channel c's window, in double (the LRN denominator)
GR_DEVICE double gr_lrn_scale(const T* xp, long long xsc, int c, int C, int size, double alpha,
                              double k) {
    const int pre = (size - 1) / 2;
    const int lo = c - pre < 0 ? 0 : c - pre;
    const int hi = c - pre + size > C ? C : c - pre + size;
    double s = 0.0;
    for (int j = lo; j < hi; ++j) {
        double v = (double)xp[j * xsc];
        s += v * v;
    }
    return s * (alpha / size) + k;
}

// lrn_grad: dx_j = dy_j s_j^-beta - 2 alpha beta / size * x_j * sum over the channels c whose
// window holds j of dy_c x_c s_c^(-beta-1), in double
extern "C" __global__ void lrn_grad(
        const T* x, long long xsn, long long xsc, long long xsh, long long xsw,
        const T* dy, long long dsn, long long dsc, long long dsh, long long dsw,
        T* dx, long long gsn, long long gsc, long long gsh, long long gsw,
        int N, int C, int H, int W, int size, double alpha, double beta, double k) {
    const long long total = (long long)N * C * H * W;
    const int pre = (size - 1) / 2;
    GR_LOOP(t, total) {
        long long n;
        int c, h, w;
        gr_nchw(t, C, H, W, n, c, h, w);
        const T* xp = x + n * xsn + (long long)h * xsh + (long long)w * xsw;
        const T* dp = dy + n * dsn + (long long)h * dsh + (long long)w * dsw;
        int lo = c + pre - size + 1, hi = c + pre + 1;
        lo = lo < 0 ? 0 : lo;
        hi = hi > C ? C : hi;
        double acc = 0.0;
        for (int cc = lo; cc < hi; ++cc) {
            const double s = gr_lrn_scale(xp, xsc, cc, C, size, alpha, k);
            acc += (double)gr_mul(dp[cc * dsc], xp[cc * xsc]) * pow(s, -beta) / s;
        }
        const double s = gr_lrn_scale(xp, xsc, c, C, size, alpha, k);
        acc = acc * (double)xp[c * xsc] * (-2.0 * alpha * beta / size);
        dx[n * gsn + c * gsc + (long long)h * gsh + (long long)w * gsw] =
            (T)(acc + pow(s, -beta) * (double)dp[c * dsc]);
    }
}

// the per-channel sum of a block's values (double, blockDim a power of two <= 256)
GR_DEVICE double gr_block_sum(double v, double* red) {
    const int tid = threadIdx.x;
    red[tid] = v;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (tid < s) red[tid] += red[tid + s];
        __syncthreads();
    }
    const double total = red[0];
    __syncthreads();
    return total;
}

#define GR_CHANNEL_LOOP(t, n, h, w)                                          \
    for (long long t = threadIdx.x, n = 0, h = 0, w = 0; t < per &&          \
         ((n = gr_div(t, H * W)), (h = gr_div(t - n * H * W, W)),            \
          (w = t - n * H * W - h * W), true); t += blockDim.x)

// batch_norm_train: one block per channel: batch mean and biased variance (double), y =
// (x - mean) * (invstd * gamma) + beta, the saved mean and 1/std, and the running averages
// (momentum, or Caffe's 1 / scale factor from count; the count itself is advanced by bn_count
// after every channel has read it)
extern "C" __global__ void bn_train(
        const T* x, long long xsn, long long xsc, long long xsh, long long xsw,
        T* y, long long ysn, long long ysc, long long ysh, long long ysw,
        long long N, long long C, long long H, long long W,
        const T* gamma, const T* beta, T* rmean, T* rvar, T* saved_mean, T* saved_invstd,
        const T* count, double eps, double momentum, int unbiased, double caffe_fraction) {
    __shared__ double red[256];
    const long long per = N * H * W;
    for (long long c = blockIdx.x; c < C; c += gridDim.x) {
        const T* xc = x + c * xsc;
        T* yc = y + c * ysc;
        double s = 0.0;
        GR_CHANNEL_LOOP(t, n, h, w) s += (double)xc[n * xsn + h * xsh + w * xsw];
        const double mean = gr_block_sum(s, red) / (double)(per > 0 ? per : 1);
        const T tm = (T)mean;
        double s2 = 0.0;
        GR_CHANNEL_LOOP(t, n, h, w) {
            const T d = xc[n * xsn + h * xsh + w * xsw] - tm;
            s2 += (double)gr_mul(d, d);
        }
        const double var = gr_block_sum(s2, red) / (double)(per > 0 ? per : 1);
        const double invstd = 1.0 / sqrt(var + eps);
        const T sc = (T)(invstd * (double)gamma[c]), sh = beta[c];
        GR_CHANNEL_LOOP(t, n, h, w)
            yc[n * ysn + h * ysh + w * ysw] = gr_mul(xc[n * xsn + h * xsh + w * xsw] - tm, sc) + sh;
        if (threadIdx.x == 0) {
            saved_mean[c] = tm;
            saved_invstd[c] = (T)invstd;
            const double v = unbiased && per > 1 ? var * ((double)per / (double)(per - 1)) : var;
            const double wgt = caffe_fraction > 0.0
                ? 1.0 / (caffe_fraction * (double)count[0] + 1.0) : momentum;
            const T keep = (T)(1.0 - wgt);
            rmean[c] = (T)((double)gr_mul(keep, rmean[c]) + wgt * mean);
            rvar[c] = (T)((double)gr_mul(keep, rvar[c]) + wgt * v);
        }
        __syncthreads();
    }
}

extern "C" __global__ void bn_count(T* count, double caffe_fraction) {
    if (blockIdx.x == 0 && threadIdx.x == 0)
        count[0] = caffe_fraction > 0.0 ? (T)(caffe_fraction * (double)count[0] + 1.0)
                                         : count[0] + (T)1;
}

// batch_norm_train_grad: one block per channel; xhat = (x - mean) * invstd,
// dbeta = sum dy, dgamma = sum dy * xhat (double), dx = (dy - dbeta / m - xhat * dgamma / m) *
// gamma * invstd
extern "C" __global__ void bn_train_grad(
        const T* x, long long xsn, long long xsc, long long xsh, long long xsw,
        const T* dy, long long dsn, long long dsc, long long dsh, long long dsw,
        T* dx, long long gsn, long long gsc, long long gsh, long long gsw,
        long long N, long long C, long long H, long long W,
        const T* gamma, const T* mean, const T* invstd, T* dgamma, T* dbeta) {
    __shared__ double red[256];
    const long long per = N * H * W;
    const double m = (double)(per > 1 ? per : 1);
    for (long long c = blockIdx.x; c < C; c += gridDim.x) {
        const T* xc = x + c * xsc;
        const T* dc = dy + c * dsc;
        T* gc = dx + c * gsc;
        const T tm = mean[c], ti = invstd[c];
        double s = 0.0, s2 = 0.0;
        GR_CHANNEL_LOOP(t, n, h, w) {
            const T g = dc[n * dsn + h * dsh + w * dsw];
            s += (double)g;
            s2 += (double)gr_mul(g, gr_mul(xc[n * xsn + h * xsh + w * xsw] - tm, ti));
        }
        const double sum_dy = gr_block_sum(s, red);
        const double sum_dy_xhat = gr_block_sum(s2, red);
        const T a = (T)(sum_dy / m), b = (T)(sum_dy_xhat / m);
        const T f = (T)((double)gamma[c] * (double)ti);
        GR_CHANNEL_LOOP(t, n, h, w) {
            const T xhat = gr_mul(gr_mul(xc[n * xsn + h * xsh + w * xsw] - tm, ti), b);
            gc[n * gsn + h * gsh + w * gsw] = gr_mul((dc[n * dsn + h * dsh + w * dsw] - a) - xhat, f);
        }
        if (threadIdx.x == 0) {
            dgamma[c] = (T)sum_dy_xhat;
            dbeta[c] = (T)sum_dy;
        }
        __syncthreads();
    }
}
