// zsgm upfirdn2d kernel, written from the op's published semantics (see docs: OPS.md 2.2):
// zero-insert (up), pad / crop (padding on the upsampled grid), FIR with a 2-D filter (true convolution
// unless flip_filter), keep every down-th sample. The host passes the filter already multiplied by its
// gain and converted to the compute type; separable 1-D filters are expanded to their outer product.
// Generic path: one thread per output pixel, walking the taps in global memory, accumulating in C.
#include "zsgm_common.cuh"

template <typename T>
__device__ void zsgm_upfirdn2d_generic(const T* x, const typename ZsgmIo<T>::C* f, T* y,
                                       int planes, int in_h, int in_w, int out_h, int out_w,
                                       int up_x, int up_y, int down_x, int down_y,
                                       int pad_x0, int pad_y0, int f_w, int f_h, int flip) {
    typedef typename ZsgmIo<T>::C C;
    long long total = (long long)planes * out_h * out_w;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)blockDim.x * gridDim.x) {
        int ox = (int)(i % out_w);
        int oy = (int)((i / out_w) % out_h);
        long long plane = i / ((long long)out_w * out_h);
        const T* xp = x + plane * (long long)in_h * in_w;
        int py = oy * down_y;  // top-left of the filter window on the padded, upsampled grid
        int px = ox * down_x;
        C acc = (C)0;
        for (int ky = 0; ky < f_h; ++ky) {
            int uy = py + ky - pad_y0;  // coordinate on the upsampled (zero-inserted) grid
            if (uy < 0 || uy % up_y != 0) continue;
            int iy = uy / up_y;
            if (iy >= in_h) continue;
            for (int kx = 0; kx < f_w; ++kx) {
                int ux = px + kx - pad_x0;
                if (ux < 0 || ux % up_x != 0) continue;
                int ix = ux / up_x;
                if (ix >= in_w) continue;
                // correlation with the flipped filter is a true convolution
                C w = flip ? f[ky * f_w + kx] : f[(f_h - 1 - ky) * f_w + (f_w - 1 - kx)];
                acc += ZsgmIo<T>::load(xp[(long long)iy * in_w + ix]) * w;
            }
        }
        y[i] = ZsgmIo<T>::store(acc);
    }
}

#define ZSGM_UPFIRDN_ENTRY(SUFFIX, T, C)                                                                \
    extern "C" __global__ void zsgm_upfirdn2d_generic_##SUFFIX(                                        \
        const T* x, const C* f, T* y, int planes, int in_h, int in_w, int out_h, int out_w,          \
        int up_x, int up_y, int down_x, int down_y, int pad_x0, int pad_y0, int f_w, int f_h,         \
        int flip) {                                                                                    \
        zsgm_upfirdn2d_generic<T>(x, f, y, planes, in_h, in_w, out_h, out_w, up_x, up_y, down_x,      \
                                  down_y, pad_x0, pad_y0, f_w, f_h, flip);                             \
    }

ZSGM_UPFIRDN_ENTRY(f32, float, float)
ZSGM_UPFIRDN_ENTRY(f64, double, double)
ZSGM_UPFIRDN_ENTRY(f16, unsigned short, float)
