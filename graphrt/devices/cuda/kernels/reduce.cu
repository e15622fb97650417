// reductions over axes (reduce, reduce_like and their gradient), arg max/min, and layer norm
// (compiled after prelude.cuh with T typedef'd to float or double: see ../sources.py). A tensor is
// walked as rows: the row index r < outer runs over the kept axes (sizes on, C order) and the
// index j < inner within a row over the reduced axes (sizes rn); each operand has its own strides
// for both (elements). One block per row (reduce_rows: a fixed tree over its threads' shares) or
// one thread per row or element of the result (loops in C order); sums in double, results
// deterministic, no atomics.

// combine two partial results of reduce_rows' mode: max/min keep a NaN, prod multiplies, the
// others add
GR_DEVICE double gr_combine(int mode, double a, double b) {
    if (mode == 2 || mode == 3) {
        if (a != a || b != b) return a != a ? a : b;
        return mode == 2 ? (a > b ? a : b) : (a < b ? a : b);
    }
    return mode == 4 ? a * b : a + b;
}

// y[r] = mode over row r of x: 0 sum, 1 mean, 2 max, 3 min (a NaN wins both), 4 prod, 5 l1,
// 6 l2, 7 sumsq, 8 logsum, 9 logsumexp (m + log(sum exp(x - m)), m the max, 0 when not finite).
// One block (a power of two <= 256 threads) per row: each thread combines its strided share of
// the row, then the block's tree
extern "C" __global__ void reduce_rows(
        const T* x, T* y, long long outer, long long inner,
        long long on0, long long on1, long long on2, long long on3, long long on4, long long on5,
        long long xo0, long long xo1, long long xo2, long long xo3, long long xo4, long long xo5,
        long long yo0, long long yo1, long long yo2, long long yo3, long long yo4, long long yo5,
        long long rn0, long long rn1, long long rn2, long long rn3, long long rn4, long long rn5,
        long long xr0, long long xr1, long long xr2, long long xr3, long long xr4, long long xr5,
        int mode) {
    GR_ARRAY6(on);
    GR_ARRAY6(xo);
    GR_ARRAY6(yo);
    GR_ARRAY6(rn);
    GR_ARRAY6(xr);
    __shared__ double red[256];
    const int tid = threadIdx.x;
    for (long long r = blockIdx.x; r < outer; r += gridDim.x) {
        const T* row = x + gr_offset(r, on, xo);
        double m = 0.0;  // logsumexp's max (phase 0)
        for (int phase = mode == 9 ? 0 : 1; phase < 2; ++phase) {
            const int op = phase == 0 ? 2 : (mode >= 2 && mode <= 4) ? mode : 0;
            double acc = op == 2 ? -gr_inf(0.0) : op == 3 ? gr_inf(0.0) : op == 4 ? 1.0 : 0.0;
            for (long long j = tid; j < inner; j += blockDim.x) {
                const double v = (double)row[gr_offset(j, rn, xr)];
                acc = gr_combine(op, acc, phase == 0 ? v : mode == 5 ? fabs(v)
                                 : (mode == 6 || mode == 7) ? v * v : mode == 9 ? exp(v - m) : v);
            }
            red[tid] = acc;
            __syncthreads();
            for (int s = blockDim.x / 2; s > 0; s >>= 1) {
                if (tid < s) red[tid] = gr_combine(op, red[tid], red[tid + s]);
                __syncthreads();
            }
            acc = red[0];
            __syncthreads();
            if (phase == 0) {
                m = (acc != acc || acc == gr_inf(0.0) || acc == -gr_inf(0.0)) ? 0.0 : acc;
            } else if (tid == 0) {
                if (mode == 1) acc = acc / (double)(inner > 1 ? inner : 1);
                else if (mode == 6) acc = sqrt(acc);
                else if (mode == 8) acc = log(acc);
                else if (mode == 9) acc = m + log(acc);
                y[gr_offset(r, on, yo)] = (T)acc;
            }
        }
    }
}

// dx = dy * d(mode)/dx for reduce_rows' mode, from x, its reduction y and dy (y's layout):
// max/min share dy evenly among the elements of the row equal to y; one thread per row
extern "C" __global__ void reduce_grad_rows(
        const T* dy, const T* y, const T* x, T* dx, long long outer, long long inner,
        long long on0, long long on1, long long on2, long long on3, long long on4, long long on5,
        long long dyo0, long long dyo1, long long dyo2, long long dyo3, long long dyo4, long long dyo5,
        long long yo0, long long yo1, long long yo2, long long yo3, long long yo4, long long yo5,
        long long xo0, long long xo1, long long xo2, long long xo3, long long xo4, long long xo5,
        long long go0, long long go1, long long go2, long long go3, long long go4, long long go5,
        long long rn0, long long rn1, long long rn2, long long rn3, long long rn4, long long rn5,
        long long xr0, long long xr1, long long xr2, long long xr3, long long xr4, long long xr5,
        long long gr0, long long gr1, long long gr2, long long gr3, long long gr4, long long gr5,
        int mode) {
    GR_ARRAY6(on);
    GR_ARRAY6(dyo);
    GR_ARRAY6(yo);
    GR_ARRAY6(xo);
    GR_ARRAY6(go);
    GR_ARRAY6(rn);
    GR_ARRAY6(xr);
    GR_ARRAY6(gr);
    GR_LOOP(r, outer) {
        const T* row = x + gr_offset(r, on, xo);
        T* out = dx + gr_offset(r, on, go);
        const T yt = y[gr_offset(r, on, yo)];
        const double g = (double)dy[gr_offset(r, on, dyo)], yv = (double)yt;
        double hits = 0.0;
        if (mode == 2 || mode == 3)
            for (long long j = 0; j < inner; ++j) hits += row[gr_offset(j, rn, xr)] == yt ? 1.0 : 0.0;
        for (long long j = 0; j < inner; ++j) {
            const T xt = row[gr_offset(j, rn, xr)];
            const double v = (double)xt;
            double d;
            if (mode == 0) d = 1.0;
            else if (mode == 1) d = 1.0 / (double)(inner > 1 ? inner : 1);
            else if (mode == 2 || mode == 3) d = (xt == yt ? 1.0 : 0.0) / hits;
            else if (mode == 4) d = yv / v;
            else if (mode == 5) d = v > 0.0 ? 1.0 : v < 0.0 ? -1.0 : v == 0.0 ? 0.0 : v;
            else if (mode == 6) d = v / yv;
            else if (mode == 7) d = 2.0 * v;
            else if (mode == 8) d = exp(-yv);
            else d = exp(v - yv);
            out[gr_offset(j, rn, gr)] = (T)(g * d);
        }
    }
}

// y[r] = the index along the axis (length L, x stride xl) of the first (last: last != 0) max
// (is_min: min) of row r, a NaN counting as the extreme, as numpy's argmax/argmin
extern "C" __global__ void arg_rows(
        const T* x, long long* y, long long outer, long long L, long long xl,
        long long on0, long long on1, long long on2, long long on3, long long on4, long long on5,
        long long xo0, long long xo1, long long xo2, long long xo3, long long xo4, long long xo5,
        long long yo0, long long yo1, long long yo2, long long yo3, long long yo4, long long yo5,
        int is_min, int last) {
    GR_ARRAY6(on);
    GR_ARRAY6(xo);
    GR_ARRAY6(yo);
    GR_LOOP(r, outer) {
        const T* row = x + gr_offset(r, on, xo);
        long long best = last ? L - 1 : 0;
        T bv = row[best * xl];
        for (long long k = 1; k < L && bv == bv; ++k) {
            const long long j = last ? L - 1 - k : k;
            const T v = row[j * xl];
            if (v != v || (is_min ? v < bv : v > bv)) {
                best = j;
                bv = v;
            }
        }
        y[gr_offset(r, on, yo)] = best;
    }
}

// layer norm's statistics of each row of x, in double: stats[3r .. 3r + 2] = mean, sigma
// (sqrt(var + eps) when inside, else sqrt(var) + eps; 1 without normvar) and var
extern "C" __global__ void ln_stats(
        const T* x, double* stats, long long outer, long long inner,
        long long on0, long long on1, long long on2, long long on3, long long on4, long long on5,
        long long xo0, long long xo1, long long xo2, long long xo3, long long xo4, long long xo5,
        long long rn0, long long rn1, long long rn2, long long rn3, long long rn4, long long rn5,
        long long xr0, long long xr1, long long xr2, long long xr3, long long xr4, long long xr5,
        int normvar, int inside, double eps) {
    GR_ARRAY6(on);
    GR_ARRAY6(xo);
    GR_ARRAY6(rn);
    GR_ARRAY6(xr);
    GR_LOOP(r, outer) {
        const T* row = x + gr_offset(r, on, xo);
        double s = 0.0;
        for (long long j = 0; j < inner; ++j) s += (double)row[gr_offset(j, rn, xr)];
        const double mean = s / (double)inner;
        double q = 0.0;
        for (long long j = 0; j < inner; ++j) {
            const double c = (double)row[gr_offset(j, rn, xr)] - mean;
            q += c * c;
        }
        const double var = q / (double)inner;
        stats[3 * r] = mean;
        stats[3 * r + 1] = !normvar ? 1.0 : inside ? sqrt(var + eps) : sqrt(var) + eps;
        stats[3 * r + 2] = var;
    }
}

// grad = 0: y = (x - mean) / sigma * scale[j] + bias[j] (scale, bias: null or contiguous over the
// row); grad = 1: dx of that from dy (with scale), one thread per row; y/dx is out, dy is g
extern "C" __global__ void ln_rows(
        const T* x, const T* g, T* out, const T* scale, const T* bias, const double* stats,
        long long outer, long long inner,
        long long on0, long long on1, long long on2, long long on3, long long on4, long long on5,
        long long xo0, long long xo1, long long xo2, long long xo3, long long xo4, long long xo5,
        long long go0, long long go1, long long go2, long long go3, long long go4, long long go5,
        long long oo0, long long oo1, long long oo2, long long oo3, long long oo4, long long oo5,
        long long rn0, long long rn1, long long rn2, long long rn3, long long rn4, long long rn5,
        long long xr0, long long xr1, long long xr2, long long xr3, long long xr4, long long xr5,
        long long gr0, long long gr1, long long gr2, long long gr3, long long gr4, long long gr5,
        long long ot0, long long ot1, long long ot2, long long ot3, long long ot4, long long ot5,
        int grad, int normvar, int inside) {
    GR_ARRAY6(on);
    GR_ARRAY6(xo);
    GR_ARRAY6(go);
    GR_ARRAY6(oo);
    GR_ARRAY6(rn);
    GR_ARRAY6(xr);
    GR_ARRAY6(gr);
    GR_ARRAY6(ot);
    GR_LOOP(r, outer) {
        const T* xrow = x + gr_offset(r, on, xo);
        T* orow = out + gr_offset(r, on, oo);
        const double mean = stats[3 * r], sigma = stats[3 * r + 1], var = stats[3 * r + 2];
        if (!grad) {
            for (long long j = 0; j < inner; ++j) {
                double v = ((double)xrow[gr_offset(j, rn, xr)] - mean) / sigma;
                if (scale) v = v * (double)scale[j];
                if (bias) v = v + (double)bias[j];
                orow[gr_offset(j, rn, ot)] = (T)v;
            }
            continue;
        }
        const T* grow = g + gr_offset(r, on, go);
        double sg = 0.0, sgc = 0.0;
        for (long long j = 0; j < inner; ++j) {
            double gv = (double)grow[gr_offset(j, rn, gr)];
            if (scale) gv = gv * (double)scale[j];
            sg += gv;
            sgc += gv * ((double)xrow[gr_offset(j, rn, xr)] - mean);
        }
        const double mg = sg / (double)inner, mgc = sgc / (double)inner;
        // outside the root, var = 0 (a constant row: x - mean and mgc are 0) contributes 0
        const double dsig = inside ? 0.5 / sigma : var > 0.0 ? 0.5 / sqrt(var) : 0.0;
        const double k = 2.0 * dsig / (sigma * sigma);
        for (long long j = 0; j < inner; ++j) {
            double gv = (double)grow[gr_offset(j, rn, gr)];
            if (scale) gv = gv * (double)scale[j];
            double d = (gv - mg) / sigma;
            if (normvar) d -= ((double)xrow[gr_offset(j, rn, xr)] - mean) * k * mgc;
            orow[gr_offset(j, rn, ot)] = (T)d;
        }
    }
}

// layer norm's parameter gradients: out[j] = the sum over rows of dy (bias) or of
// dy * (x - mean) / sigma (is_scale); one thread per parameter element j, out contiguous
extern "C" __global__ void ln_param_grad(
        const T* x, const T* dy, T* out, const double* stats, long long outer, long long inner,
        long long on0, long long on1, long long on2, long long on3, long long on4, long long on5,
        long long xo0, long long xo1, long long xo2, long long xo3, long long xo4, long long xo5,
        long long go0, long long go1, long long go2, long long go3, long long go4, long long go5,
        long long rn0, long long rn1, long long rn2, long long rn3, long long rn4, long long rn5,
        long long xr0, long long xr1, long long xr2, long long xr3, long long xr4, long long xr5,
        long long gr0, long long gr1, long long gr2, long long gr3, long long gr4, long long gr5,
        int is_scale) {
    GR_ARRAY6(on);
    GR_ARRAY6(xo);
    GR_ARRAY6(go);
    GR_ARRAY6(rn);
    GR_ARRAY6(xr);
    GR_ARRAY6(gr);
    GR_LOOP(j, inner) {
        const long long xj = gr_offset(j, rn, xr), gj = gr_offset(j, rn, gr);
        double acc = 0.0;
        for (long long r = 0; r < outer; ++r) {
            const double g = (double)dy[gr_offset(r, on, go) + gj];
            if (!is_scale) {
                acc += g;
                continue;
            }
            const double c = (double)x[gr_offset(r, on, xo) + xj] - stats[3 * r];
            acc += g * c / stats[3 * r + 1];
        }
        out[j] = (T)acc;
    }
}
