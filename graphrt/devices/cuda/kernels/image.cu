// image_transform: the first op of a net fed by a data source (graphrt/ops/image.py): each
// image's crop window, mirrored where its flag says, minus the mean (per channel, mean_kind 1, or
// a mean image of the stored size, mean_kind 2), times scale, written as T. x is uint8 (x_u8 1)
// or float; window holds (row, column, mirror) int32 per image, checked on the host before the
// step. (Compiled after prelude.cuh with T typedef'd to float or double: see ../sources.py.)
extern "C" __global__ void image_transform(
        const void* x, int x_u8, long long xsn, long long xsc, long long xsh, long long xsw,
        const void* window, long long wsn,
        T* y, long long ysn, long long ysc, long long ysh, long long ysw,
        long long N, long long C, long long CH, long long CW,
        const T* mean, int mean_kind, long long H, long long W, T scale) {
    const long long total = N * C * CH * CW;
    const int* win = (const int*)window;
    GR_LOOP(t, total) {
        long long r = gr_div(t, CW);
        long long j = t - r * CW;
        long long r2 = gr_div(r, CH);
        long long i = r - r2 * CH;
        long long n = gr_div(r2, C);
        long long c = r2 - n * C;
        long long row = win[n * wsn] + i;
        long long col = win[n * wsn + 1] + (win[n * wsn + 2] ? CW - 1 - j : j);
        long long at = n * xsn + c * xsc + row * xsh + col * xsw;
        T v = x_u8 ? (T)((const unsigned char*)x)[at] : (T)((const float*)x)[at];
        if (mean_kind == 1) v = v - mean[c];
        else if (mean_kind == 2) v = v - mean[(c * H + row) * W + col];
        y[n * ysn + c * ysc + i * ysh + j * ysw] = gr_mul(v, scale);
    }
}
