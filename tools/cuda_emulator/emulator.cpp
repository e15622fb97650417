// the emulator's launcher: each block of the grid in turn, its CUDA threads as loop iterations, or as
// threads of their own (a std::barrier for __syncthreads) in kernels that synchronize
#include <thread>
#include <barrier>
#include <vector>
thread_local gr_dim3 threadIdx;
gr_dim3 blockIdx, blockDim, gridDim;
static std::barrier<>* gr_bar = nullptr;
void gr_emu_syncthreads() { if (gr_bar) gr_bar->arrive_and_wait(); }
typedef void (*gr_wrapper)(void**);
extern "C" int gr_emu_launch(gr_wrapper fn, void** args, unsigned gx, unsigned gy, unsigned gz,
                             unsigned bx, unsigned by, unsigned bz, int threaded) {
    gridDim = {gx, gy, gz};
    blockDim = {bx, by, bz};
    for (unsigned z = 0; z < gz; ++z)
    for (unsigned y = 0; y < gy; ++y)
    for (unsigned x = 0; x < gx; ++x) {
        blockIdx = {x, y, z};
        if (!threaded) {
            for (unsigned tz = 0; tz < bz; ++tz)
            for (unsigned ty = 0; ty < by; ++ty)
            for (unsigned tx = 0; tx < bx; ++tx) {
                threadIdx = {tx, ty, tz};
                fn(args);
            }
            continue;
        }
        std::barrier<> bar(bx * by * bz);
        gr_bar = &bar;
        std::vector<std::thread> threads;
        for (unsigned tz = 0; tz < bz; ++tz)
        for (unsigned ty = 0; ty < by; ++ty)
        for (unsigned tx = 0; tx < bx; ++tx)
            threads.emplace_back([=] { threadIdx = {tx, ty, tz}; fn(args); });
        for (auto& t : threads) t.join();
        gr_bar = nullptr;
    }
    return 0;
}
