// The CUDA built-ins on the host, so that CuPy's generated kernel source and xpnet's own CUDA
// source compile with g++ and run on the CPU (xpnet's GPU emulator; see emulator/__init__.py).
//
// Each CUDA thread of a block is a fiber (ucontext).  Kernels without barriers run their threads
// one after the other; kernels that use __syncthreads or warp shuffles run every thread of a block
// as a fiber, and a fiber that reaches a barrier yields until all live threads of its block (or
// lanes of its warp) have reached it, so values cross lanes exactly at each __shfl_*_sync.
// Misuse that is undefined on a GPU (a shuffle with lanes that have exited, divergent barriers,
// a partial warp with a full mask) fails the launch with a message instead.
#pragma once
#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>
#include <ucontext.h>
#include <xmmintrin.h>

#define __device__
#define __host__
#define __global__
#define __forceinline__ inline
#define __noinline__
#define __restrict__ __restrict
// Shared memory is one array per block: blocks run one after another, so a static local serves.
#define __shared__ static thread_local

struct uint3 { unsigned int x, y, z; };
struct dim3 { unsigned int x, y, z; };

// CUDA's math functions take and return float for float arguments: bring the <cmath> overloads
// into the global namespace (a bare exp(float) would otherwise compute in double).
using std::exp; using std::log; using std::sqrt; using std::tanh; using std::expm1; using std::log1p;
using std::fabs; using std::isfinite; using std::isnan; using std::isinf; using std::floor; using std::ceil;
using std::pow; using std::fmin; using std::fmax; using std::erf; using std::sin; using std::cos; using std::abs;
inline float min(float a, float b) { return std::fmin(a, b); }
inline double min(double a, double b) { return std::fmin(a, b); }
inline float max(float a, float b) { return std::fmax(a, b); }
inline double max(double a, double b) { return std::fmax(a, b); }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline int __popc(unsigned int x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }

// Half precision as CUDA converts it: IEEE binary16, round to nearest even (g++'s _Float16).
inline unsigned short __float2half_rn(float f) { _Float16 h = (_Float16)f; unsigned short u; std::memcpy(&u, &h, 2); return u; }
inline float __half2float(unsigned short u) { _Float16 h; std::memcpy(&h, &u, 2); return (float)h; }
inline unsigned short __half_as_ushort(unsigned short u) { return u; }
inline unsigned short __ushort_as_half(unsigned short u) { return u; }

namespace xpnet_emu {

enum State { READY, AT_BLOCK_BARRIER, AT_WARP_BARRIER, DONE };

struct Fiber {
    ucontext_t ctx;
    uint3 tid;
    int lane, warp;
    State state;
};

struct Launch {
    uint3 block_idx;
    dim3 block_dim, grid_dim;
    bool fibers = false;
    std::vector<Fiber> threads;
    std::vector<std::vector<char>> stacks;
    std::vector<unsigned long long> slots;  // one exchange slot per thread for warp shuffles
    ucontext_t scheduler;
    std::string error;
    void (*body)(void*) = nullptr;
    void* body_arg = nullptr;
};

inline thread_local Launch* L = nullptr;
inline thread_local Fiber* cur = nullptr;

struct Failure {};

[[noreturn]] inline void fail(const std::string& msg) {
    if (L->error.empty()) L->error = msg;
    if (L->fibers) {  // park this fiber for good: the scheduler sees the error and stops
        cur->state = DONE;
        swapcontext(&cur->ctx, &L->scheduler);
    }
    throw Failure();
}

inline void yield_at(State s) {
    if (!L->fibers) fail("a barrier or warp shuffle ran in a kernel launched without fibers");
    cur->state = s;
    swapcontext(&cur->ctx, &L->scheduler);
}

inline void warp_sync(unsigned mask) {
    if (mask != 0xffffffffu) fail("warp primitives with a partial mask are not modelled by the emulator");
    int first = cur->warp * 32;
    if (first + 32 > (int)L->threads.size()) fail("a full-mask warp primitive in a partial warp (blockDim.x is not a multiple of 32)");
    yield_at(AT_WARP_BARRIER);
}

}  // namespace xpnet_emu

#define threadIdx (xpnet_emu::cur->tid)
#define blockIdx (xpnet_emu::L->block_idx)
#define blockDim (xpnet_emu::L->block_dim)
#define gridDim (xpnet_emu::L->grid_dim)
#define warpSize 32

inline void __syncthreads() { xpnet_emu::yield_at(xpnet_emu::AT_BLOCK_BARRIER); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { xpnet_emu::warp_sync(mask); }

template <typename T> inline T xpnet_emu_shfl(unsigned mask, T var, int src, int width) {
    static_assert(sizeof(T) <= sizeof(unsigned long long), "shuffle of a type wider than 8 bytes");
    using namespace xpnet_emu;
    if (width <= 0 || width > 32 || (width & (width - 1))) fail("__shfl_*_sync: width must be a power of 2 <= 32");
    int base = cur->warp * 32;
    unsigned long long bits = 0;
    std::memcpy(&bits, &var, sizeof(T));
    L->slots[base + cur->lane] = bits;
    warp_sync(mask);  // every lane has published its value
    int seg = cur->lane & ~(width - 1);
    int from = (src >= seg && src < seg + width) ? src : cur->lane;
    if (L->threads[base + from].state == DONE) fail("__shfl_*_sync reads a lane that has exited");
    bits = L->slots[base + from];
    warp_sync(mask);  // every lane has read before the slots are reused
    T out;
    std::memcpy(&out, &bits, sizeof(T));
    return out;
}
template <typename T> inline T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = 32) {
    return xpnet_emu_shfl(mask, var, xpnet_emu::cur->lane ^ lane_mask, width);
}
template <typename T> inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = 32) {
    int seg = xpnet_emu::cur->lane & ~(width - 1), src = xpnet_emu::cur->lane + (int)delta;
    return xpnet_emu_shfl(mask, var, src < seg + width ? src : xpnet_emu::cur->lane, width);
}
template <typename T> inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = 32) {
    int seg = xpnet_emu::cur->lane & ~(width - 1), src = xpnet_emu::cur->lane - (int)delta;
    return xpnet_emu_shfl(mask, var, src >= seg ? src : xpnet_emu::cur->lane, width);
}
template <typename T> inline T __shfl_sync(unsigned mask, T var, int src_lane, int width = 32) {
    int seg = xpnet_emu::cur->lane & ~(width - 1);
    return xpnet_emu_shfl(mask, var, seg + (src_lane & (width - 1)), width);
}
// Fibers of one launch share one OS thread, so atomics are plain read-modify-writes.
template <typename T> inline T atomicAdd(T* address, T val) { T old = *address; *address = old + val; return old; }
template <typename T> inline T atomicMax(T* address, T val) { T old = *address; if (val > old) *address = val; return old; }
template <typename T> inline T atomicOr(T* address, T val) { T old = *address; *address = old | val; return old; }

namespace xpnet_emu {

inline void fiber_entry() {
    try {
        L->body(L->body_arg);
    } catch (Failure&) {
    }
    cur->state = DONE;
    swapcontext(&cur->ctx, &L->scheduler);
}

// Runs one block as fibers until every thread is done; resolves barriers as they fill.
inline void run_block_fibers(size_t nthreads) {
    const size_t stack_size = 128 * 1024;
    L->threads.assign(nthreads, Fiber());
    if (L->stacks.size() < nthreads) L->stacks.resize(nthreads);
    L->slots.assign(((nthreads + 31) / 32) * 32, 0);
    for (size_t t = 0; t < nthreads; ++t) {
        Fiber& f = L->threads[t];
        f.tid = {unsigned(t % L->block_dim.x), unsigned((t / L->block_dim.x) % L->block_dim.y),
                 unsigned(t / (L->block_dim.x * L->block_dim.y))};
        f.lane = int(t % 32);
        f.warp = int(t / 32);
        f.state = READY;
        L->stacks[t].resize(stack_size);
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = L->stacks[t].data();
        f.ctx.uc_stack.ss_size = stack_size;
        f.ctx.uc_link = nullptr;
        makecontext(&f.ctx, fiber_entry, 0);
    }
    for (;;) {
        bool ran = false;
        for (auto& f : L->threads) {
            if (f.state != READY) continue;
            cur = &f;
            swapcontext(&L->scheduler, &f.ctx);
            ran = true;
            if (!L->error.empty()) return;
        }
        size_t live = 0, at_block = 0;
        for (auto& f : L->threads) {
            if (f.state != DONE) ++live;
            if (f.state == AT_BLOCK_BARRIER) ++at_block;
        }
        if (live == 0) return;
        bool released = false;
        for (size_t w = 0; w * 32 < nthreads; ++w) {  // a warp barrier fills when all 32 lanes wait at it
            size_t waiting = 0, done = 0;
            for (size_t t = w * 32; t < std::min(nthreads, w * 32 + 32); ++t) {
                waiting += L->threads[t].state == AT_WARP_BARRIER;
                done += L->threads[t].state == DONE;
            }
            if (waiting == 0) continue;
            if (done > 0) { L->error = "a warp shuffle or __syncwarp waits on lanes that have exited"; return; }
            if (waiting == 32) {
                for (size_t t = w * 32; t < w * 32 + 32; ++t) L->threads[t].state = READY;
                released = true;
            }
        }
        if (!released && at_block == live) {  // __syncthreads: every live thread has arrived
            for (auto& f : L->threads) if (f.state == AT_BLOCK_BARRIER) f.state = READY;
            released = true;
        }
        if (!released && !ran) { L->error = "deadlock: threads wait at different barriers (divergent __syncthreads or shuffle)"; return; }
    }
}

template <typename F>
inline void body_trampoline(void* f) { (*static_cast<F*>(f))(); }

// Launch `kernel` over grid x block with arguments packed as CUDA's kernelParams (void**).
template <typename... A, size_t... I>
inline void call(void (*kernel)(A...), void** args, std::index_sequence<I...>) {
    kernel(*static_cast<std::remove_cv_t<std::remove_reference_t<A>>*>(args[I])...);
}

template <typename... A>
inline int launch(void (*kernel)(A...), void** args, const unsigned* grid, const unsigned* block, int fibers, int ftz,
                  char* err, int err_len) {
    Launch launch;
    Launch* prev = L;
    L = &launch;
    launch.grid_dim = {grid[0], grid[1], grid[2]};
    launch.block_dim = {block[0], block[1], block[2]};
    launch.fibers = fibers != 0;
    unsigned csr = _mm_getcsr();
    if (ftz) _mm_setcsr(csr | 0x8040);  // flush-to-zero and denormals-are-zero, as -ftz=true
    auto body = [&]() { call(kernel, args, std::index_sequence_for<A...>()); };
    launch.body = &body_trampoline<decltype(body)>;
    launch.body_arg = &body;
    size_t nthreads = size_t(block[0]) * block[1] * block[2];
    Fiber seq;
    for (unsigned bz = 0; bz < grid[2] && launch.error.empty(); ++bz)
        for (unsigned by = 0; by < grid[1] && launch.error.empty(); ++by)
            for (unsigned bx = 0; bx < grid[0] && launch.error.empty(); ++bx) {
                launch.block_idx = {bx, by, bz};
                if (launch.fibers) {
                    run_block_fibers(nthreads);
                    continue;
                }
                cur = &seq;
                for (size_t t = 0; t < nthreads && launch.error.empty(); ++t) {
                    seq.tid = {unsigned(t % block[0]), unsigned((t / block[0]) % block[1]), unsigned(t / (size_t(block[0]) * block[1]))};
                    seq.lane = int(t % 32);
                    seq.warp = int(t / 32);
                    try {
                        body();
                    } catch (Failure&) {
                    }
                }
            }
    _mm_setcsr(csr);
    L = prev;
    if (!launch.error.empty()) {
        std::strncpy(err, launch.error.c_str(), err_len - 1);
        err[err_len - 1] = 0;
        return 1;
    }
    return 0;
}

}  // namespace xpnet_emu
