// max and average pooling
// (compiled after prelude.cuh with T typedef'd to float or double: see ../sources.py)
// one thread per output element; windows in padded coordinates start at o * stride; elements
// outside the input are skipped (max: -inf padding, avg: zeros) as in the reference
extern "C" __global__ void pool2d(
        const T* x, long long xsn, long long xsc, long long xsh, long long xsw,
        T* y, long long ysn, long long ysc, long long ysh, long long ysw,
        int N, int C, int H, int W, int OH, int OW, int KH, int KW, int SH, int SW,
        int PT, int PB, int PL, int PR, int is_max, int include_pad) {
    const long long total = (long long)N * C * OH * OW;
    GR_LOOP(t, total) {
        long long n;
        int c, oy, ox;
        gr_nchw(t, C, OH, OW, n, c, oy, ox);
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
