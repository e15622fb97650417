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

// the coordinates (n, c, h, w) of element t of an N x C x H x W index space in C order
GR_DEVICE void gr_nchw(long long t, int C, int H, int W, long long& n, int& c, int& h, int& w) {
    long long r = gr_div(t, W);
    w = (int)(t - r * W);
    long long r2 = gr_div(r, H);
    h = (int)(r - r2 * H);
    n = gr_div(r2, C);
    c = (int)(r2 - n * C);
}

// a kernel's six scalar parameters a0 .. a5 (sizes, strides or offsets of a rank-6 view) as one
// array a[6]
#define GR_LIST6(a) a##0, a##1, a##2, a##3, a##4, a##5
#define GR_ARRAY6(a) const long long a[6] = {GR_LIST6(a)}

#define GR_LOOP(i, total) \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (total); \
         i += (long long)gridDim.x * blockDim.x)

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
