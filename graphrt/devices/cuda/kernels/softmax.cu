// softmax and log_softmax along any axis
// (compiled after prelude.cuh with T typedef'd to float or double: see ../sources.py)
// rows (outer, inner) of length L along the axis; one block (a power of two <= 256 threads) per
// row; the sum of exponentials is accumulated in double
extern "C" __global__ void softmax(
        const T* x, long long xso, long long xsl, long long xsi,
        T* y, long long yso, long long ysl, long long ysi,
        long long outer, long long L, long long inner, int log_mode) {
    __shared__ double red[256];
    const int tid = threadIdx.x;
    for (long long row = blockIdx.x; row < outer * inner; row += gridDim.x) {
        long long o = row / inner, in = row % inner;
        const T* xr = x + o * xso + in * xsi;
        T* yr = y + o * yso + in * ysi;
        T m = -gr_inf((T)0);
        for (long long j = tid; j < L; j += blockDim.x) {
            T v = xr[j * xsl];
            if (v > m || v != v) m = v;
        }
        red[tid] = (double)m;
        __syncthreads();
        for (int s = blockDim.x / 2; s > 0; s >>= 1) {
            if (tid < s) {
                double other = red[tid + s];
                if (other > red[tid] || other != other) red[tid] = other;
            }
            __syncthreads();
        }
        m = (T)red[0];
        __syncthreads();
        double sum = 0.0;
        for (long long j = tid; j < L; j += blockDim.x) sum += (double)gr_exp(xr[j * xsl] - m);
        red[tid] = sum;
        __syncthreads();
        for (int s = blockDim.x / 2; s > 0; s >>= 1) {
            if (tid < s) red[tid] += red[tid + s];
            __syncthreads();
        }
        sum = red[0];
        __syncthreads();
        if (log_mode) {
            T ls = (T)log(sum);
            for (long long j = tid; j < L; j += blockDim.x) yr[j * ysl] = (xr[j * xsl] - m) - ls;
        } else {
            T total = (T)sum;
            for (long long j = tid; j < L; j += blockDim.x)
                yr[j * ysl] = gr_exp(xr[j * xsl] - m) / total;
        }
    }
}
