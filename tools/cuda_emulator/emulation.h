// host C++ definitions of the CUDA built-ins the kernels use: the CUDA stand-in compiles the same
// sources with the host compiler and runs every thread of a block (as fibers of their own where the
// kernel synchronizes, see emulator.cpp). The built-in indices and __shared__ memory are per host
// thread, so two streams' worker threads may run kernels at the same time, as a GPU does.
#include <cmath>
#include <cstring>
#include <algorithm>
struct gr_dim3 { unsigned int x, y, z; };
extern thread_local gr_dim3 threadIdx, blockIdx, blockDim, gridDim;
void gr_emu_syncthreads();
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static thread_local
#define __syncthreads() gr_emu_syncthreads()
#define GR_DEVICE static inline
using std::min;
using std::max;
using std::exp; using std::log; using std::tanh; using std::pow; using std::sqrt; using std::floor;
using std::fabs;
static inline float __fmul_rn(float a, float b) { volatile float r = a * b; return r; }
static inline double __dmul_rn(double a, double b) { volatile double r = a * b; return r; }
static inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
static inline double __longlong_as_double(long long i) { double d; std::memcpy(&d, &i, 8); return d; }
