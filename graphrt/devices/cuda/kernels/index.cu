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

// embedding_grad's index lists: the positions i of the indices equal to row r are
// order[start[r] .. start[r + 1]), in index order (a counting sort, stable; cursor: rows scratch
// entries); indices outside [0, rows) are left out. One thread: O(count + rows).
extern "C" __global__ void embedding_rows(
        const void* idx, int kind, long long rows, long long count, long long* start,
        long long* cursor, long long* order,
        long long n0, long long n1, long long n2, long long n3, long long n4, long long n5,
        long long is0, long long is1, long long is2, long long is3, long long is4, long long is5) {
    GR_ARRAY6(n);
    GR_ARRAY6(is);
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    for (long long r = 0; r <= rows; ++r) start[r] = 0;
    for (long long i = 0; i < count; ++i) {
        const double v = gr_label(idx, gr_offset(i, n, is), kind);
        if (v > -1.0 && v < (double)rows) start[(long long)v + 1] += 1;
    }
    for (long long r = 0; r < rows; ++r) {
        start[r + 1] += start[r];
        cursor[r] = start[r];
    }
    for (long long i = 0; i < count; ++i) {
        const double v = gr_label(idx, gr_offset(i, n, is), kind);
        if (v > -1.0 && v < (double)rows) order[cursor[(long long)v]++] = i;
    }
}

// out[r, d] = the sum of dy[i, d] over the positions i of row r's index list (embedding_rows), in
// index order: one thread per element of out, no atomics
extern "C" __global__ void embedding_scatter(
        const long long* start, const long long* order, const T* dy, T* out, long long rows,
        long long D, long long dsd, long long os0, long long os1,
        long long n0, long long n1, long long n2, long long n3, long long n4, long long n5,
        long long ds0, long long ds1, long long ds2, long long ds3, long long ds4, long long ds5) {
    GR_ARRAY6(n);
    GR_ARRAY6(ds);
    GR_LOOP(t, rows * D) {
        const long long r = gr_div(t, D), d = t - r * D;
        double acc = 0.0;
        for (long long k = start[r]; k < start[r + 1]; ++k)
            acc += (double)dy[gr_offset(order[k], n, ds) + d * dsd];
        out[r * os0 + d * os1] = (T)acc;
    }
}

// resize's (n_out, n_in) weights of one axis (row r: output position r), as ops/resize.py's
// axis_matrix: the input coordinate of r by ctm (0 half_pixel, 1 pytorch_half_pixel,
// 2 half_pixel_symmetric, 3 align_corners over length, 4 asymmetric, 5 tf_half_pixel_for_nn),
// then mode 0 nearest (rounding 0 round_prefer_floor, 1 round_prefer_ceil, 2 floor, 3 ceil),
// 1 linear or 2 cubic (Keys' kernel of parameter a; exclude drops the taps outside the input and
// renormalizes); taps outside the input read its edge. One thread per row, m contiguous.
extern "C" __global__ void resize_weights(
        T* m, long long n_in, long long n_out, double scale, double length, int ctm, int mode,
        int rounding, double a, int exclude) {
    GR_LOOP(r, n_out) {
        T* row = m + r * n_in;
        for (long long i = 0; i < n_in; ++i) row[i] = (T)0;
        const double rd = (double)r;
        double x;
        if (ctm == 3) x = length > 1.0 ? rd * (double)(n_in - 1) / (length - 1.0) : 0.0;
        else if (ctm == 4) x = rd / scale;
        else if (ctm == 5) x = (rd + 0.5) / scale;
        else if (ctm == 1 && n_out == 1) x = 0.0;
        else {
            x = (rd + 0.5) / scale - 0.5;
            if (ctm == 2) x += (double)n_in / 2.0 * (1.0 - (double)n_out / (scale * (double)n_in));
        }
        if (mode == 0) {
            double v = rounding == 0 ? ceil(x - 0.5) : rounding == 1 ? floor(x + 0.5)
                     : rounding == 2 ? floor(x) : ceil(x);
            v = v < 0.0 ? 0.0 : v > (double)(n_in - 1) ? (double)(n_in - 1) : v;
            row[(long long)v] = (T)1;
            continue;
        }
        const double x0 = floor(x), t = x - x0;
        const int taps = mode == 1 ? 2 : 4, first = mode == 1 ? 0 : -1;
        double w[4];
        long long idx[4];
        double total = 0.0;
        for (int k = 0; k < taps; ++k) {
            idx[k] = (long long)x0 + first + k;
            if (mode == 1) {
                w[k] = k == 0 ? 1.0 - t : t;
            } else {
                const double d = k == 0 ? 1.0 + t : k == 1 ? t : k == 2 ? 1.0 - t : 2.0 - t;
                w[k] = d <= 1.0 ? ((a + 2.0) * d - (a + 3.0)) * d * d + 1.0
                                : ((a * d - 5.0 * a) * d + 8.0 * a) * d - 4.0 * a;
            }
            if (exclude && (idx[k] < 0 || idx[k] >= n_in)) w[k] = 0.0;
            total += w[k];
        }
        for (int k = 0; k < taps; ++k) {
            const long long i = idx[k] < 0 ? 0 : idx[k] >= n_in ? n_in - 1 : idx[k];
            row[i] = (T)((double)row[i] + (exclude ? w[k] / total : w[k]));
        }
    }
}

// pad_grad along one axis: y[.., i, ..] = the sum of x[.., o, ..] over the positions o < m of the
// padded axis that copy input position i (numpy's pad: mode 0 reflect, 1 edge, 2 wrap, after lo
// positions in front), in order; x and y of sizes n (y's, the axis i < n[axis]), strides xs, ys
extern "C" __global__ void pad_grad_axis(
        const T* x, T* y, long long total,
        long long n0, long long n1, long long n2, long long n3, long long n4, long long n5,
        long long xs0, long long xs1, long long xs2, long long xs3, long long xs4, long long xs5,
        long long ys0, long long ys1, long long ys2, long long ys3, long long ys4, long long ys5,
        int axis, long long m, long long lo, int mode) {
    GR_ARRAY6(n);
    GR_ARRAY6(xs);
    GR_ARRAY6(ys);
    GR_LOOP(t, total) {
        long long r = t, ox = 0, oy = 0, i = 0;
        for (int d = 5; d >= 0; --d) {
            const long long q = gr_div(r, n[d]), c = r - q * n[d];
            r = q;
            oy += c * ys[d];
            if (d == axis) i = c;
            else ox += c * xs[d];
        }
        const long long len = n[axis];
        double acc = 0.0;
        for (long long o = 0; o < m; ++o) {
            long long j = o - lo;
            if (mode == 1) j = j < 0 ? 0 : j >= len ? len - 1 : j;
            else if (mode == 2) j = ((j % len) + len) % len;
            else if (len > 1) {
                const long long period = 2 * (len - 1);
                j = ((j % period) + period) % period;
                if (j >= len) j = period - j;
            } else j = 0;
            if (j == i) acc += (double)x[ox + o * xs[axis]];
        }
        y[oy] = (T)acc;
    }
}
