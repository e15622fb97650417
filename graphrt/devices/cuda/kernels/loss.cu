// classification losses and accuracy
// (compiled after prelude.cuh with T typedef'd to float or double: see ../sources.py)
// mode 0: mean softmax cross entropy, 1: mean negative log-likelihood, 2: top-k accuracy;
// one block of 256 threads; an invalid label makes the result NaN
extern "C" __global__ void class_loss(
        const T* x, long long xs0, long long xs1, const void* labels, long long ls,
        int label_kind, long long N, long long C, int mode, int top_k, T* out) {
    __shared__ double red[256];
    __shared__ int bad[256];
    const int tid = threadIdx.x;
    double acc = 0.0;
    int invalid = 0;
    for (long long i = tid; i < N; i += blockDim.x) {
        double lab = gr_label(labels, i * ls, label_kind);
        long long idx = (long long)lab;
        if (lab != (double)idx || idx < 0 || idx >= C) {
            invalid = 1;
            continue;
        }
        const T* row = x + i * xs0;
        if (mode == 0) {
            double m = -gr_inf(0.0);
            for (long long j = 0; j < C; ++j) {
                double v = (double)row[j * xs1];
                if (v > m || v != v) m = v;
            }
            double s = 0.0;
            for (long long j = 0; j < C; ++j) s += exp((double)row[j * xs1] - m);
            acc += log(s) - ((double)row[idx * xs1] - m);
        } else if (mode == 1) {
            acc += -(double)row[idx * xs1];
        } else {
            T xl = row[idx * xs1];
            long long higher = 0;
            for (long long j = 0; j < C; ++j) higher += row[j * xs1] > xl ? 1 : 0;
            acc += higher < top_k ? 1.0 : 0.0;
        }
    }
    red[tid] = acc;
    bad[tid] = invalid;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (tid < s) {
            red[tid] += red[tid + s];
            bad[tid] |= bad[tid + s];
        }
        __syncthreads();
    }
    if (tid == 0) {
        if (bad[0]) out[0] = gr_nan((T)0);
        else if (N == 0) out[0] = mode == 2 ? (T)0 : gr_nan((T)0);
        else out[0] = (T)(red[0] / (double)N);
    }
}
