// CUDA's bfloat16 (cuda_bf16.h) on the host, for xpnet's GPU emulator: just what CuPy's
// cupy/bfloat16.cuh uses.  A 16-bit storage type (the upper half of a float32) whose conversion
// from float rounds to nearest even and turns every NaN into the canonical 0x7fff, as
// __float2bfloat16 does on the device; the conversion to float is exact.  Arithmetic goes
// through float, as CuPy's bfloat16 class and xpnet's kernels (compute type float) do.
#pragma once
#include <cstdint>
#include <cstring>

inline unsigned short xpnet_float2bfloat16_rn(float f) {
    std::uint32_t u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fffu;  // NaN
    u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest, ties to even (inf stays inf)
    return (unsigned short)(u >> 16);
}

struct __nv_bfloat16 {
    unsigned short x;
    __nv_bfloat16() = default;
    __nv_bfloat16(float f) : x(xpnet_float2bfloat16_rn(f)) {}
    __nv_bfloat16(double f) : x(xpnet_float2bfloat16_rn((float)f)) {}
    operator float() const {
        std::uint32_t u = std::uint32_t(x) << 16;
        float f;
        std::memcpy(&f, &u, 4);
        return f;
    }
};

inline __nv_bfloat16 __float2bfloat16(float f) { return __nv_bfloat16(f); }
inline float __bfloat162float(__nv_bfloat16 h) { return float(h); }
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.x; }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short u) { __nv_bfloat16 h; h.x = u; return h; }
inline bool __hisnan(__nv_bfloat16 h) { return (h.x & 0x7fffu) > 0x7f80u; }
inline int __hisinf(__nv_bfloat16 h) { return (h.x & 0x7fffu) == 0x7f80u ? ((h.x & 0x8000u) ? -1 : 1) : 0; }
inline bool operator==(__nv_bfloat16 a, __nv_bfloat16 b) { return float(a) == float(b); }
inline bool operator!=(__nv_bfloat16 a, __nv_bfloat16 b) { return float(a) != float(b); }
