// zsgm bias_act kernels, written from the op's published semantics (see docs: OPS.md 2.1).
//   forward: y  = clamp(act(x + b[c]) * gain, -clamp, clamp)          act: 0 linear, 1 relu, 2 lrelu
//   grad:    dx = dy * gain * act'(yref / gain) * [|yref| < clamp]   (from the saved forward output)
// One thread per element, grid-stride loop. clamp < 0 means no clamp.
//
// The bias index of element i is (i / stride) % channels, valid for any dense layout (contiguous NCHW or
// channels_last). The 32-bit entry points (tensors of fewer than 2^31 elements) compute it without any
// integer division: q = n / d is (n * m) >> s with a multiplier m and shift s the host precomputes per
// divisor (round-up reciprocal, exact for every n < 2^31; see zsgm/ops/cuda_backend.py: fastdiv_params).
// The 64-bit entry points (2^31 elements and more) divide plainly.
#include "zsgm_common.cuh"

__device__ __forceinline__ unsigned zsgm_fastdiv(unsigned n, unsigned long long m, unsigned s) {
    return (unsigned)(((unsigned long long)n * m) >> s);
}

template <typename T>
__device__ __forceinline__ T zsgm_bias_act_one(T xv, typename ZsgmIo<T>::C bias, int act,
                                               typename ZsgmIo<T>::C alpha, typename ZsgmIo<T>::C gain,
                                               typename ZsgmIo<T>::C clamp) {
    typedef typename ZsgmIo<T>::C C;
    C v = ZsgmIo<T>::load(xv) + bias;
    if (act == 1) v = v > (C)0 ? v : (C)0;
    else if (act == 2) v = v > (C)0 ? v : v * alpha;
    v *= gain;
    if (clamp >= (C)0) v = v < -clamp ? -clamp : (v > clamp ? clamp : v);
    return ZsgmIo<T>::store(v);
}

template <typename T>
__device__ void zsgm_bias_act_forward32(const T* __restrict__ x, const T* __restrict__ b, T* __restrict__ y,
                                        int n, unsigned stride, unsigned long long stride_m, unsigned stride_s,
                                        unsigned channels, unsigned long long channels_m, unsigned channels_s,
                                        int has_bias, int act, typename ZsgmIo<T>::C alpha,
                                        typename ZsgmIo<T>::C gain, typename ZsgmIo<T>::C clamp) {
    typedef typename ZsgmIo<T>::C C;
    // unsigned: i + the grid stride stays below 2^32 for every i < n < 2^31
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < (unsigned)n; i += blockDim.x * gridDim.x) {
        C bias = (C)0;
        if (has_bias) {
            const unsigned q = stride == 1u ? i : zsgm_fastdiv(i, stride_m, stride_s);
            const unsigned c = q - zsgm_fastdiv(q, channels_m, channels_s) * channels;  // q % channels
            bias = ZsgmIo<T>::load(b[c]);
        }
        y[i] = zsgm_bias_act_one<T>(x[i], bias, act, alpha, gain, clamp);
    }
}

template <typename T>
__device__ void zsgm_bias_act_forward64(const T* __restrict__ x, const T* __restrict__ b, T* __restrict__ y,
                                        long long n, long long stride, long long channels, int has_bias,
                                        int act, typename ZsgmIo<T>::C alpha, typename ZsgmIo<T>::C gain,
                                        typename ZsgmIo<T>::C clamp) {
    typedef typename ZsgmIo<T>::C C;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        const C bias = has_bias ? ZsgmIo<T>::load(b[(i / stride) % channels]) : (C)0;
        y[i] = zsgm_bias_act_one<T>(x[i], bias, act, alpha, gain, clamp);
    }
}

template <typename T, typename I>  // I: unsigned (n < 2^31) or long long
__device__ void zsgm_bias_act_grad(const T* __restrict__ dy, const T* __restrict__ yref, T* __restrict__ dx,
                                   I n, int act, typename ZsgmIo<T>::C alpha, typename ZsgmIo<T>::C gain,
                                   typename ZsgmIo<T>::C clamp) {
    typedef typename ZsgmIo<T>::C C;
    for (I i = blockIdx.x * (I)blockDim.x + threadIdx.x; i < n; i += (I)blockDim.x * gridDim.x) {
        const C r = ZsgmIo<T>::load(yref[i]);
        C g = ZsgmIo<T>::load(dy[i]) * gain;
        if (act == 1) g = r > (C)0 ? g : (C)0;
        else if (act == 2) g = r > (C)0 ? g : g * alpha;
        if (clamp >= (C)0 && !(r < clamp && r > -clamp)) g = (C)0;
        dx[i] = ZsgmIo<T>::store(g);
    }
}

// Fixed, descriptive extern "C" entry points (stable names keep CuPy's disk cache effective).
#define ZSGM_BIAS_ACT_ENTRIES(SUFFIX, T, C)                                                              \
    extern "C" __global__ void zsgm_bias_act_forward32_##SUFFIX(                                         \
        const T* x, const T* b, T* y, int n, unsigned stride, unsigned long long stride_m,              \
        unsigned stride_s, unsigned channels, unsigned long long channels_m, unsigned channels_s,      \
        int has_bias, int act, C alpha, C gain, C clamp) {                                             \
        zsgm_bias_act_forward32<T>(x, b, y, n, stride, stride_m, stride_s, channels, channels_m,       \
                                   channels_s, has_bias, act, alpha, gain, clamp);                     \
    }                                                                                                    \
    extern "C" __global__ void zsgm_bias_act_forward64_##SUFFIX(                                         \
        const T* x, const T* b, T* y, long long n, long long stride, long long channels, int has_bias, \
        int act, C alpha, C gain, C clamp) {                                                             \
        zsgm_bias_act_forward64<T>(x, b, y, n, stride, channels, has_bias, act, alpha, gain, clamp);   \
    }                                                                                                    \
    extern "C" __global__ void zsgm_bias_act_grad32_##SUFFIX(                                            \
        const T* dy, const T* yref, T* dx, int n, int act, C alpha, C gain, C clamp) {                   \
        zsgm_bias_act_grad<T, unsigned>(dy, yref, dx, (unsigned)n, act, alpha, gain, clamp);                            \
    }                                                                                                    \
    extern "C" __global__ void zsgm_bias_act_grad64_##SUFFIX(                                            \
        const T* dy, const T* yref, T* dx, long long n, int act, C alpha, C gain, C clamp) {             \
        zsgm_bias_act_grad<T, long long>(dy, yref, dx, n, act, alpha, gain, clamp);                      \
    }

ZSGM_BIAS_ACT_ENTRIES(f32, float, float)
ZSGM_BIAS_ACT_ENTRIES(f64, double, double)
ZSGM_BIAS_ACT_ENTRIES(f16, unsigned short, float)
