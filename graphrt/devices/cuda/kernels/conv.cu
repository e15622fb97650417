// convolution's im2col (the GEMM that follows is gemm.cu's kernel or cuBLAS)
// (compiled after prelude.cuh with T typedef'd to float or double: see ../sources.py)
// columns of nimg images: cols[img * csn + k * csk + p], k = (c, i, j) over C x KH x KW,
// p = (oy, ox) (the forward: csn = K * P, csk = P; the weight gradient: csn = P, csk = nimg * P);
// blockIdx.y walks the (img, k) rows, x the columns: 32-bit index arithmetic inside a row
extern "C" __global__ void im2col(
        const T* x, long long xsn, long long xsc, long long xsh, long long xsw, T* cols,
        long long csn, long long csk,
        int nimg, int C, int H, int W, int KH, int KW, int OH, int OW,
        int sh, int sw, int pt, int pl, int dh, int dw) {
    const unsigned int P = (unsigned int)OH * OW;
    const unsigned int K = (unsigned int)C * KH * KW;
    const long long rows = (long long)nimg * K;
    for (long long row = blockIdx.y; row < rows; row += gridDim.y) {
        const unsigned int k = (unsigned int)(row % K);
        const long long img = row / K;
        const unsigned int j = k % KW, q = k / KW;
        const unsigned int i = q % KH, c = q / KH;
        const T* xc = x + img * xsn + (long long)c * xsc;
        T* dst = cols + img * csn + (long long)k * csk;
        for (unsigned int p = blockIdx.x * blockDim.x + threadIdx.x; p < P;
             p += gridDim.x * blockDim.x) {
            int ox = (int)(p % OW), oy = (int)(p / OW);
            int iy = oy * sh - pt + (int)i * dh;
            int ix = ox * sw - pl + (int)j * dw;
            dst[p] = (iy >= 0 && iy < H && ix >= 0 && ix < W)
                ? xc[(long long)iy * xsh + (long long)ix * xsw] : (T)0;
        }
    }
}
