// zsgm bias_act kernels, written from the op's published semantics (see docs: OPS.md 2.1).
//   forward: y  = clamp(act(x + b[c]) * gain, -clamp, clamp)          act: 0 linear, 1 relu, 2 lrelu
//   grad:    dx = dy * gain * act'(yref / gain) * [|yref| < clamp]   (from the saved forward output)
// One thread per element, grid-stride loop. The bias index of element i is (i / stride) % channels,
// valid for any dense layout (contiguous NCHW or channels_last). clamp < 0 means no clamp.
#include "zsgm_common.cuh"

template <typename T>
__device__ void zsgm_bias_act_forward(const T* x, const T* b, T* y, long long n, long long stride,
                                      int channels, int has_bias, int act,
                                      typename ZsgmIo<T>::C alpha, typename ZsgmIo<T>::C gain,
                                      typename ZsgmIo<T>::C clamp) {
    typedef typename ZsgmIo<T>::C C;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        C v = ZsgmIo<T>::load(x[i]);
        if (has_bias) v += ZsgmIo<T>::load(b[(i / stride) % channels]);
        if (act == 1) v = v > (C)0 ? v : (C)0;
        else if (act == 2) v = v > (C)0 ? v : v * alpha;
        v *= gain;
        if (clamp >= (C)0) v = v < -clamp ? -clamp : (v > clamp ? clamp : v);
        y[i] = ZsgmIo<T>::store(v);
    }
}

template <typename T>
__device__ void zsgm_bias_act_grad(const T* dy, const T* yref, T* dx, long long n, int act,
                                   typename ZsgmIo<T>::C alpha, typename ZsgmIo<T>::C gain,
                                   typename ZsgmIo<T>::C clamp) {
    typedef typename ZsgmIo<T>::C C;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        C r = ZsgmIo<T>::load(yref[i]);
        C g = ZsgmIo<T>::load(dy[i]) * gain;
        if (act == 1) g = r > (C)0 ? g : (C)0;
        else if (act == 2) g = r > (C)0 ? g : g * alpha;
        if (clamp >= (C)0 && !(r < clamp && r > -clamp)) g = (C)0;
        dx[i] = ZsgmIo<T>::store(g);
    }
}

// Fixed, descriptive extern "C" entry points (stable names keep CuPy's disk cache effective).
#define ZSGM_BIAS_ACT_ENTRIES(SUFFIX, T, C)                                                            \
    extern "C" __global__ void zsgm_bias_act_forward_##SUFFIX(                                         \
        const T* x, const T* b, T* y, long long n, long long stride, int channels, int has_bias,     \
        int act, C alpha, C gain, C clamp) {                                                           \
        zsgm_bias_act_forward<T>(x, b, y, n, stride, channels, has_bias, act, alpha, gain, clamp);    \
    }                                                                                                  \
    extern "C" __global__ void zsgm_bias_act_grad_##SUFFIX(                                            \
        const T* dy, const T* yref, T* dx, long long n, int act, C alpha, C gain, C clamp) {           \
        zsgm_bias_act_grad<T>(dy, yref, dx, n, act, alpha, gain, clamp);                               \
    }

ZSGM_BIAS_ACT_ENTRIES(f32, float, float)
ZSGM_BIAS_ACT_ENTRIES(f64, double, double)
ZSGM_BIAS_ACT_ENTRIES(f16, unsigned short, float)
