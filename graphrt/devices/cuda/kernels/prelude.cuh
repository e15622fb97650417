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
GR_DEVICE float gr_sqrt(float x) { return sqrtf(x); }
GR_DEVICE double gr_sqrt(double x) { return sqrt(x); }
GR_DEVICE float gr_expm1(float x) { return expm1f(x); }
GR_DEVICE double gr_expm1(double x) { return expm1(x); }
GR_DEVICE float gr_log1p(float x) { return log1pf(x); }
GR_DEVICE double gr_log1p(double x) { return log1p(x); }
GR_DEVICE float gr_erf(float x) { return erff(x); }
GR_DEVICE double gr_erf(double x) { return erf(x); }
GR_DEVICE float gr_erfc(float x) { return erfcf(x); }
GR_DEVICE double gr_erfc(double x) { return erfc(x); }
// a product rounded on its own (never contracted into an FMA), as numpy's separate ufuncs round it
GR_DEVICE float gr_mul(float a, float b) { return __fmul_rn(a, b); }
GR_DEVICE double gr_mul(double a, double b) { return __dmul_rn(a, b); }
GR_DEVICE float gr_inf(float) { return __int_as_float(0x7f800000); }
GR_DEVICE double gr_inf(double) { return __longlong_as_double(0x7ff0000000000000LL); }
GR_DEVICE float gr_nan(float) { return __int_as_float(0x7fc00000); }
GR_DEVICE double gr_nan(double) { return __longlong_as_double(0x7ff8000000000000LL); }

// sigmoid without overflow: 1 / (1 + e^-v) for v >= 0, e^v / (1 + e^v) below
template <typename U> GR_DEVICE U gr_sigmoid(U v) {
    U e = gr_exp(-gr_abs(v));
    return (v >= (U)0 ? (U)1 : e) / ((U)1 + e);
}

// numpy's heaviside(v, 0): 1 above 0, 0 at or below it, NaN for NaN
template <typename U> GR_DEVICE U gr_step(U v) { return v > (U)0 ? (U)1 : v <= (U)0 ? (U)0 : v; }

// min(max(v, lo), hi) as numpy's clip (NaN stays NaN)
template <typename U> GR_DEVICE U gr_clip(U v, U lo, U hi) {
    U y = v < lo ? lo : v;
    return y > hi ? hi : y;
}

// numpy's maximum and minimum: NaN when either is NaN
template <typename U> GR_DEVICE U gr_max(U a, U b) { return a != a || a > b ? a : b; }
template <typename U> GR_DEVICE U gr_min(U a, U b) { return a != a || a < b ? a : b; }

#define GR_SQRT1_2 0.70710678118654752440
#define GR_SQRT_2_PI 0.79788456080286535588  // sqrt(2 / pi)
#define GR_GELU_C 0.044715
#define GR_2_SQRT_PI 1.12837916709551257390  // 2 / sqrt(pi)
#define GR_1_SQRT_2PI 0.39894228040143267794  // 1 / sqrt(2 pi)

// the unary steps (the activations of graphrt/ops/activation.py from 5 on, as its numpy forward
// rounds them): 0 identity, 1 relu (a = negative slope), 2 tanh, 3 sigmoid, 4 scale (a = scale,
// b = shift, c = power), 5 clip (a = min, b = max), 6 elu (a = alpha), 7 selu (a = alpha,
// b = gamma), 8 gelu, 9 gelu with the tanh approximation, 10 erf, 11 softplus, 12 softsign,
// 13 exp, 14 log, 15 sqrt, 16 abs, 17 swish (a = beta), 18 hard_sigmoid (a = alpha, b = beta),
// 19 hard_swish, 20 threshold (a = threshold)
GR_DEVICE T gr_unary(int op, T v, T a, T b, T c) {
    switch (op) {
    case 1: return v > (T)0 ? v : gr_mul(v, a);
    case 2: return gr_tanh(v);
    case 3: return gr_sigmoid(v);
    case 4: {
        T y = gr_mul(v, a);
        if (b != (T)0) y = y + b;
        if (c != (T)1) y = gr_pow(y, c);
        return y;
    }
    case 5: return gr_clip(v, a, b);
    case 6: return v > (T)0 ? v : gr_mul(gr_expm1(v), a);
    case 7: return gr_mul(v > (T)0 ? v : gr_mul(gr_expm1(v), a), b);
    case 8: return gr_mul(v, gr_mul(gr_erfc(gr_mul(v, (T)-GR_SQRT1_2)), (T)0.5));
    case 9: {
        T u = gr_mul(gr_mul(gr_mul(v, v), (T)GR_GELU_C) + (T)1, v);
        return gr_mul(v, gr_sigmoid(gr_mul(u, (T)(2 * GR_SQRT_2_PI))));
    }
    case 10: return gr_erf(v);
    case 11: return (v > (T)0 ? v : (T)0) + gr_log1p(gr_exp(-gr_abs(v)));
    case 12: return v / (gr_abs(v) + (T)1);
    case 13: return gr_exp(v);
    case 14: return gr_log(v);
    case 15: return gr_sqrt(v);
    case 16: return gr_abs(v);
    case 17: return gr_mul(v, gr_sigmoid(gr_mul(v, a)));
    case 18: return gr_clip(gr_mul(v, a) + b, (T)0, (T)1);
    case 19: return gr_mul(v, gr_clip(gr_mul(v, (T)(1.0 / 6)) + (T)0.5, (T)0, (T)1));
    case 20: return gr_step(v - a);
    default: return v;
    }
}

// d/dv of unary step ``op`` (5 to 20 above) in double precision, as graphrt/ops/activation.py's
// derivatives compute it
GR_DEVICE double gr_unary_derivative(int op, double v, double a, double b) {
    switch (op) {
    case 5: return v >= a && v <= b ? 1.0 : 0.0;
    case 6: return v > 0.0 ? 1.0 : a * exp(v < 0.0 ? v : 0.0);
    case 7: return b * (v > 0.0 ? 1.0 : a * exp(v < 0.0 ? v : 0.0));
    case 8: return 0.5 * erfc(-v * GR_SQRT1_2) + v * exp(-0.5 * v * v) * GR_1_SQRT_2PI;
    case 9: {
        double th = tanh(GR_SQRT_2_PI * (v + GR_GELU_C * v * v * v));
        return 0.5 * (1.0 + th)
            + 0.5 * v * (1.0 - th * th) * GR_SQRT_2_PI * (1.0 + 3.0 * GR_GELU_C * v * v);
    }
    case 10: return GR_2_SQRT_PI * exp(-v * v);
    case 11: return 0.5 * (1.0 + tanh(0.5 * v));
    case 12: { double d = 1.0 + fabs(v); return 1.0 / (d * d); }
    case 13: return exp(v);
    case 14: return 1.0 / v;
    case 15: return 0.5 / sqrt(v);
    case 16: return v > 0.0 ? 1.0 : v < 0.0 ? -1.0 : v;  // numpy's sign (0 at 0, NaN for NaN)
    case 17: {
        double s = 0.5 * (1.0 + tanh(0.5 * a * v));
        return s + a * v * s * (1.0 - s);
    }
    case 18: { double z = a * v + b; return z > 0.0 && z < 1.0 ? a : 0.0; }
    case 19: {
        double z = v / 6 + 0.5;
        return gr_clip(z, 0.0, 1.0) + (z > 0.0 && z < 1.0 ? v / 6 : 0.0);
    }
    default: return 0.0;  // threshold: no gradient
    }
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
