// Shared helpers for zsgm's CUDA kernels (compiled by NVRTC through CuPy; no host headers).
// Half precision is stored as 16-bit words and converted with PTX cvt, so no cuda_fp16.h is needed.
#pragma once

__device__ __forceinline__ float zsgm_half_to_float(unsigned short v) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v));
    return f;
}

__device__ __forceinline__ unsigned short zsgm_float_to_half(float f) {
    unsigned short v;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(v) : "f"(f));
    return v;
}

// Storage type T, compute type C: float for float and half storage, double for double storage.
template <typename T> struct ZsgmIo;

template <> struct ZsgmIo<float> {
    typedef float C;
    static __device__ __forceinline__ float load(float v) { return v; }
    static __device__ __forceinline__ float store(float v) { return v; }
};

template <> struct ZsgmIo<double> {
    typedef double C;
    static __device__ __forceinline__ double load(double v) { return v; }
    static __device__ __forceinline__ double store(double v) { return v; }
};

template <> struct ZsgmIo<unsigned short> {
    typedef float C;
    static __device__ __forceinline__ float load(unsigned short v) { return zsgm_half_to_float(v); }
    static __device__ __forceinline__ unsigned short store(float v) { return zsgm_float_to_half(v); }
};
