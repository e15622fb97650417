// the emulator's launcher: each block of the grid in turn, its CUDA threads as loop iterations, or,
// in kernels that synchronize, as fibers that run round-robin from one __syncthreads to the next
// (so every thread of the block reaches a barrier before any passes it). The fibers switch with a
// few instructions on x86-64; elsewhere each CUDA thread is a host thread and a std::barrier the
// __syncthreads (correct, much slower).
#include <cstdlib>
#include <vector>
thread_local gr_dim3 threadIdx, blockIdx, blockDim, gridDim;
typedef void (*gr_wrapper)(void**);

#if defined(__x86_64__) && !defined(GR_EMU_THREADS)
// save the callee-saved registers and the FPU/SSE control words on this stack, store its pointer in
// *save, continue on the stack at load (a fiber's saved state, or a fresh one made by gr_fiber_init)
extern "C" void gr_fiber_switch(void** save, void* load);
asm(".text\n.globl gr_fiber_switch\n.hidden gr_fiber_switch\n.type gr_fiber_switch,@function\n"
    "gr_fiber_switch:\n"
    "  pushq %rbp\n  pushq %rbx\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
    "  subq $16, %rsp\n  stmxcsr 8(%rsp)\n  fnstcw (%rsp)\n"
    "  movq %rsp, (%rdi)\n  movq %rsi, %rsp\n"
    "  ldmxcsr 8(%rsp)\n  fldcw (%rsp)\n  addq $16, %rsp\n"
    "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbx\n  popq %rbp\n  ret\n"
    ".size gr_fiber_switch, .-gr_fiber_switch\n");

struct gr_fiber { void* sp; bool done; gr_dim3 idx; };
static const size_t GR_STACK = 64 * 1024;
thread_local std::vector<char*> gr_stacks;
thread_local std::vector<gr_fiber> gr_fibers;
thread_local gr_fiber* gr_cur = nullptr;
thread_local void* gr_sched = nullptr;
thread_local gr_wrapper gr_fn;
thread_local void** gr_args;

void gr_emu_syncthreads() { if (gr_cur) gr_fiber_switch(&gr_cur->sp, gr_sched); }

static void gr_fiber_entry() {  // entered by gr_fiber_switch's ret; never returns
    gr_fn(gr_args);
    gr_cur->done = true;
    gr_fiber_switch(&gr_cur->sp, gr_sched);
    std::abort();
}

static void* gr_fiber_init(char* stack) {
    char* top = stack + GR_STACK;  // malloc'd: 16-byte aligned
    void** s = (void**)top;
    *--s = nullptr;                      // padding: the entry sees rsp = 8 mod 16, as after a call
    *--s = (void*)&gr_fiber_entry;       // ret target
    for (int i = 0; i < 6; ++i) *--s = nullptr;  // rbp rbx r12 r13 r14 r15
    s -= 2;
    unsigned int* cw = (unsigned int*)s;
    cw[0] = 0x037f;  // x87 control word (default)
    cw[2] = 0x1f80;  // MXCSR (default)
    return s;
}

static void gr_run_block(unsigned bx, unsigned by, unsigned bz) {
    unsigned n = bx * by * bz;
    while (gr_stacks.size() < n) gr_stacks.push_back((char*)std::malloc(GR_STACK));
    gr_fibers.resize(n);
    unsigned t = 0;
    for (unsigned tz = 0; tz < bz; ++tz)
    for (unsigned ty = 0; ty < by; ++ty)
    for (unsigned tx = 0; tx < bx; ++tx, ++t)
        gr_fibers[t] = {gr_fiber_init(gr_stacks[t]), false, {tx, ty, tz}};
    unsigned alive = n;
    while (alive) {
        for (auto& f : gr_fibers) {
            if (f.done) continue;
            gr_cur = &f;
            threadIdx = f.idx;
            gr_fiber_switch(&gr_sched, f.sp);
            if (f.done) --alive;
        }
    }
    gr_cur = nullptr;
}
#else
#include <thread>
#include <barrier>
thread_local std::barrier<>* gr_bar = nullptr;
thread_local gr_wrapper gr_fn;
thread_local void** gr_args;
void gr_emu_syncthreads() { if (gr_bar) gr_bar->arrive_and_wait(); }

static void gr_run_block(unsigned bx, unsigned by, unsigned bz) {
    std::barrier<> bar(bx * by * bz);
    std::vector<std::thread> threads;
    gr_dim3 block = blockIdx, grid = gridDim, dims = blockDim;
    gr_wrapper fn = gr_fn;
    void** args = gr_args;
    for (unsigned tz = 0; tz < bz; ++tz)
    for (unsigned ty = 0; ty < by; ++ty)
    for (unsigned tx = 0; tx < bx; ++tx)
        threads.emplace_back([=, &bar] {
            threadIdx = {tx, ty, tz}; blockIdx = block; gridDim = grid; blockDim = dims;
            gr_bar = &bar;
            fn(args);
        });
    for (auto& t : threads) t.join();
}
#endif

extern "C" int gr_emu_launch(gr_wrapper fn, void** args, unsigned gx, unsigned gy, unsigned gz,
                             unsigned bx, unsigned by, unsigned bz, int threaded) {
    gridDim = {gx, gy, gz};
    blockDim = {bx, by, bz};
    gr_fn = fn;
    gr_args = args;
    for (unsigned z = 0; z < gz; ++z)
    for (unsigned y = 0; y < gy; ++y)
    for (unsigned x = 0; x < gx; ++x) {
        blockIdx = {x, y, z};
        if (threaded) {
            gr_run_block(bx, by, bz);
            continue;
        }
        for (unsigned tz = 0; tz < bz; ++tz)
        for (unsigned ty = 0; ty < by; ++ty)
        for (unsigned tx = 0; tx < bx; ++tx) {
            threadIdx = {tx, ty, tz};
            fn(args);
        }
    }
    return 0;
}
