// elementwise kernels: unary runs, add/mul of broadcast inputs, strided copies, padding, and
// the bias + activation epilogue after a cuBLAS GEMM
// (compiled after prelude.cuh with T typedef'd to float or double: see ../sources.py)
extern "C" __global__ void ew_unary(
        const T* x, T* y, long long total,
        long long n0, long long n1, long long n2, long long n3, long long n4, long long n5,
        long long xs0, long long xs1, long long xs2, long long xs3, long long xs4, long long xs5,
        long long ys0, long long ys1, long long ys2, long long ys3, long long ys4, long long ys5,
        int nsteps,
        int op0, T a0, T b0, T c0, int op1, T a1, T b1, T c1,
        int op2, T a2, T b2, T c2, int op3, T a3, T b3, T c3) {
    GR_ARRAY6(n);
    GR_ARRAY6(xs);
    GR_ARRAY6(ys);
    GR_LOOP(i, total) {
        T v = x[gr_offset(i, n, xs)];
        if (nsteps > 0) v = gr_unary(op0, v, a0, b0, c0);
        if (nsteps > 1) v = gr_unary(op1, v, a1, b1, c1);
        if (nsteps > 2) v = gr_unary(op2, v, a2, b2, c2);
        if (nsteps > 3) v = gr_unary(op3, v, a3, b3, c3);
        y[gr_offset(i, n, ys)] = v;
    }
}

// acc (op) v, the ops of ew_nary: 0 add (c * v), 1 mul, 2 sub, 3 div, 4 pow, 5 maximum,
// 6 minimum, 7 prelu (acc = x, v = slope)
GR_DEVICE T gr_binary(int op, T acc, T v, T c) {
    switch (op) {
    case 1: return gr_mul(acc, v);
    case 2: return acc - v;
    case 3: return acc / v;
    case 4: return gr_pow(acc, v);
    case 5: return gr_max(acc, v);
    case 6: return gr_min(acc, v);
    case 7: return acc > (T)0 ? acc : gr_mul(acc, v);
    default: return acc + (c == (T)1 ? v : gr_mul(c, v));
    }
}

// y = x0 (op) x1 (op) ... left to right over broadcast inputs (ops of gr_binary; add starts from
// c0 * x0); accumulate: continue from y (inputs after the first four)
extern "C" __global__ void ew_nary(
        T* y, long long total,
        long long n0, long long n1, long long n2, long long n3, long long n4, long long n5,
        long long ys0, long long ys1, long long ys2, long long ys3, long long ys4, long long ys5,
        int nin, int op, int accumulate,
        const T* x0, long long s00, long long s01, long long s02, long long s03, long long s04,
        long long s05, T c0,
        const T* x1, long long s10, long long s11, long long s12, long long s13, long long s14,
        long long s15, T c1,
        const T* x2, long long s20, long long s21, long long s22, long long s23, long long s24,
        long long s25, T c2,
        const T* x3, long long s30, long long s31, long long s32, long long s33, long long s34,
        long long s35, T c3) {
    GR_ARRAY6(n);
    GR_ARRAY6(ys);
    const long long st[4][6] = {{GR_LIST6(s0)}, {GR_LIST6(s1)}, {GR_LIST6(s2)}, {GR_LIST6(s3)}};
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
            acc = op == 0 ? gr_mul(v, cs[0]) : v;
            k = 1;
        }
        for (; k < nin; ++k) acc = gr_binary(op, acc, xs[k][gr_offset(i, n, st[k])], cs[k]);
        y[oy] = acc;
    }
}

// y = a (op) b as bool (one byte) over broadcast views: 0 equal, 1 greater, 2 less,
// 3 greater_equal, 4 less_equal
extern "C" __global__ void ew_compare(
        const T* a, const T* b, unsigned char* y, long long total, int op,
        long long n0, long long n1, long long n2, long long n3, long long n4, long long n5,
        long long as0, long long as1, long long as2, long long as3, long long as4, long long as5,
        long long bs0, long long bs1, long long bs2, long long bs3, long long bs4, long long bs5,
        long long ys0, long long ys1, long long ys2, long long ys3, long long ys4, long long ys5) {
    GR_ARRAY6(n);
    GR_ARRAY6(as);
    GR_ARRAY6(bs);
    GR_ARRAY6(ys);
    GR_LOOP(i, total) {
        const T u = a[gr_offset(i, n, as)], v = b[gr_offset(i, n, bs)];
        bool r = op == 0 ? u == v : op == 1 ? u > v : op == 2 ? u < v : op == 3 ? u >= v : u <= v;
        y[gr_offset(i, n, ys)] = (unsigned char)r;
    }
}

// y = a where cond is nonzero, else b, over broadcast views; cond of any kind of gr_label
extern "C" __global__ void ew_where(
        const void* cond, int kind, const T* a, const T* b, T* y, long long total,
        long long n0, long long n1, long long n2, long long n3, long long n4, long long n5,
        long long cs0, long long cs1, long long cs2, long long cs3, long long cs4, long long cs5,
        long long as0, long long as1, long long as2, long long as3, long long as4, long long as5,
        long long bs0, long long bs1, long long bs2, long long bs3, long long bs4, long long bs5,
        long long ys0, long long ys1, long long ys2, long long ys3, long long ys4, long long ys5) {
    GR_ARRAY6(n);
    GR_ARRAY6(cs);
    GR_ARRAY6(as);
    GR_ARRAY6(bs);
    GR_ARRAY6(ys);
    GR_LOOP(i, total) {
        const bool c = gr_label(cond, gr_offset(i, n, cs), kind) != 0.0;
        y[gr_offset(i, n, ys)] = c ? a[gr_offset(i, n, as)] : b[gr_offset(i, n, bs)];
    }
}

extern "C" __global__ void copy_nd(
        const T* x, T* y, long long total,
        long long xn0, long long xn1, long long xn2, long long xn3, long long xn4, long long xn5,
        long long xs0, long long xs1, long long xs2, long long xs3, long long xs4, long long xs5,
        long long yn0, long long yn1, long long yn2, long long yn3, long long yn4, long long yn5,
        long long ys0, long long ys1, long long ys2, long long ys3, long long ys4, long long ys5) {
    GR_ARRAY6(xn);
    GR_ARRAY6(xs);
    GR_ARRAY6(yn);
    GR_ARRAY6(ys);
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
    GR_ARRAY6(xn);
    GR_ARRAY6(xs);
    GR_ARRAY6(yn);
    GR_ARRAY6(ys);
    GR_ARRAY6(lo);
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

// the conv2d/dense epilogue after a cuBLAS GEMM: y[b][i][j] = act(y + bias[i] or bias[j]), act a
// step of gr_unary with parameters slope and act_b
extern "C" __global__ void bias_act(
        T* y, long long nb, long long m, long long n, long long sb, long long sr, long long sc,
        const T* bias, int bias_mode, int act, T slope, T act_b) {
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
        *p = gr_unary(act, v, slope, act_b, (T)1);
    }
}
