// graphrt's own GEMM with the bias + activation epilogue fused (used in captured CUDA graphs)
// (compiled after prelude.cuh with T typedef'd to float or double: see ../sources.py)
// C[b] = act(alpha * A[b] @ B[b] + beta * C[b] + bias), A: M x K, B: K x N, C: M x N, each with
// (batch, row, column) strides in elements; 256 threads, 64 x 64 tiles. blockIdx.x is the column
// tile; the row tiles (y) and the batch (z) are strided over, as a grid's y and z stop at 65,535
// (every thread of a block takes the same iterations, so the barriers stay uniform).
// bias_mode: 0 none, 1 per row (bias[i]), 2 per column (bias[j]).
#define GR_TM 64
#define GR_TN 64
#define GR_TK 16
extern "C" __global__ void gemm(
        const T* A, long long sab, long long sar, long long sac,
        const T* B, long long sbb, long long sbr, long long sbc,
        T* C, long long scb, long long scr, long long scc,
        int M, int N, int K, int batch, T alpha, T beta, const T* bias, int bias_mode, int act,
        T slope, T act_b) {
    __shared__ T As[GR_TK][GR_TM + 1];
    __shared__ T Bs[GR_TK][GR_TN + 1];
    const int tid = threadIdx.x;
    const int tx = tid % 16, ty = tid / 16;
    const int col0 = blockIdx.x * GR_TN;
    const int row_tiles = (M + GR_TM - 1) / GR_TM;
    for (long long b = blockIdx.z; b < batch; b += gridDim.z)
    for (int tile = blockIdx.y; tile < row_tiles; tile += gridDim.y) {
        const T* Ab = A + b * sab;
        const T* Bb = B + b * sbb;
        T* Cb = C + b * scb;
        const int row0 = tile * GR_TM;
        T acc[4][4];
        for (int u = 0; u < 4; ++u)
            for (int v = 0; v < 4; ++v) acc[u][v] = (T)0;
        for (int k0 = 0; k0 < K; k0 += GR_TK) {
            for (int e = tid; e < GR_TM * GR_TK; e += 256) {
                int r = e / GR_TK, kk = e % GR_TK;
                int gr = row0 + r, gk = k0 + kk;
                As[kk][r] = (gr < M && gk < K)
                    ? Ab[(long long)gr * sar + (long long)gk * sac] : (T)0;
            }
            for (int e = tid; e < GR_TK * GR_TN; e += 256) {
                int kk = e / GR_TN, c = e % GR_TN;
                int gk = k0 + kk, gc = col0 + c;
                Bs[kk][c] = (gk < K && gc < N)
                    ? Bb[(long long)gk * sbr + (long long)gc * sbc] : (T)0;
            }
            __syncthreads();
            // each K tile summed on its own, then added: the rounding error grows with
            // GR_TK + K / GR_TK terms rather than K (what a BLAS's blocking gives)
            T part[4][4];
            for (int u = 0; u < 4; ++u)
                for (int v = 0; v < 4; ++v) part[u][v] = (T)0;
            for (int kk = 0; kk < GR_TK; ++kk) {
                T a[4], bv[4];
                for (int u = 0; u < 4; ++u) a[u] = As[kk][ty + 16 * u];
                for (int v = 0; v < 4; ++v) bv[v] = Bs[kk][tx + 16 * v];
                for (int u = 0; u < 4; ++u)
                    for (int v = 0; v < 4; ++v) part[u][v] += a[u] * bv[v];
            }
            for (int u = 0; u < 4; ++u)
                for (int v = 0; v < 4; ++v) acc[u][v] += part[u][v];
            __syncthreads();
        }
        for (int u = 0; u < 4; ++u) {
            int i = row0 + ty + 16 * u;
            if (i >= M) continue;
            for (int v = 0; v < 4; ++v) {
                int j = col0 + tx + 16 * v;
                if (j >= N) continue;
                T* p = Cb + (long long)i * scr + (long long)j * scc;
                T val = alpha * acc[u][v];
                if (beta != (T)0) val = val + beta * (*p);
                if (bias_mode == 1) val = val + bias[i];
                else if (bias_mode == 2) val = val + bias[j];
                *p = gr_unary(act, val, slope, act_b, (T)1);
            }
        }
    }
}
