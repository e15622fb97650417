// index kernels: cast from any numeric dtype, and embedding's gather and its gradient (compiled
// after prelude.cuh with T typedef'd to float or double: see ../sources.py). Source dtypes are the
// label kinds of gr_label (prelude.cuh).

// y = (T)x over rank-6 strided views, x of any label kind (read as a double first)
extern "C" __global__ void cast_nd(
        const void* x, int kind, T* y, long long total,
        long long n0, long long n1, long long n2, long long n3, long long n4, long long n5,
        long long xs0, long long xs1, long long xs2, long long xs3, long long xs4, long long xs5,
        long long ys0, long long ys1, long long ys2, long long ys3, long long ys4, long long ys5) {
    GR_ARRAY6(n);
    GR_ARRAY6(xs);
    GR_ARRAY6(ys);
    GR_LOOP(i, total) {
        y[gr_offset(i, n, ys)] = (T)gr_label(x, gr_offset(i, n, xs), kind);
    }
}

// y[i, d] = w[idx[i], d] with idx truncated to an integer; a row of NaN for an index outside
// [0, rows) (a kernel cannot raise). idx and y's leading axes: sizes n, strides is and ys.
extern "C" __global__ void embedding_gather(
        const void* idx, int kind, const T* w, long long rows, long long ws0, long long ws1,
        T* y, long long count, long long D, long long ysd,
        long long n0, long long n1, long long n2, long long n3, long long n4, long long n5,
        long long is0, long long is1, long long is2, long long is3, long long is4, long long is5,
        long long ys0, long long ys1, long long ys2, long long ys3, long long ys4, long long ys5) {
    GR_ARRAY6(n);
    GR_ARRAY6(is);
    GR_ARRAY6(ys);
    GR_LOOP(t, count * D) {
        const long long i = gr_div(t, D), d = t - i * D;
        const double v = gr_label(idx, gr_offset(i, n, is), kind);
        T* dst = y + gr_offset(i, n, ys) + d * ysd;
        if (!(v > -1.0 && v < (double)rows)) *dst = gr_nan((T)0);
        else *dst = w[(long long)v * ws0 + d * ws1];
    }
}

// out[r, d] = the sum of dy[i, d] over the indices i with idx[i] == r, in index order (a gather:
// one thread per element of out, no atomics); indices outside [0, rows) add nothing
extern "C" __global__ void embedding_scatter(
        const void* idx, int kind, const T* dy, T* out, long long rows, long long D,
        long long count, long long dsd, long long os0, long long os1,
        long long n0, long long n1, long long n2, long long n3, long long n4, long long n5,
        long long is0, long long is1, long long is2, long long is3, long long is4, long long is5,
        long long ds0, long long ds1, long long ds2, long long ds3, long long ds4, long long ds5) {
    GR_ARRAY6(n);
    GR_ARRAY6(is);
    GR_ARRAY6(ds);
    GR_LOOP(t, rows * D) {
        const long long r = gr_div(t, D), d = t - r * D;
        double acc = 0.0;
        for (long long i = 0; i < count; ++i) {
            const double v = gr_label(idx, gr_offset(i, n, is), kind);
            if (v > -1.0 && v < (double)rows && (long long)v == r)
                acc += (double)dy[gr_offset(i, n, ds) + d * dsd];
        }
        out[r * os0 + d * os1] = (T)acc;
    }
}
