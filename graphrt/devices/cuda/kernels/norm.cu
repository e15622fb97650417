// normalization: LRN across channels, batch_norm's coefficients, the per-channel affine pass
// (compiled after prelude.cuh with T typedef'd to float or double: see ../sources.py)
extern "C" __global__ void lrn(
        const T* x, long long xsn, long long xsc, long long xsh, long long xsw,
        T* y, long long ysn, long long ysc, long long ysh, long long ysw,
        int N, int C, int H, int W, int size, double alpha, double beta, double k) {
    const long long total = (long long)N * C * H * W;
    const int pre = (size - 1) / 2;
    GR_LOOP(t, total) {
        long long n;
        int c, h, w;
        gr_nchw(t, C, H, W, n, c, h, w);
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
