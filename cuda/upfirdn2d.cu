// zsgm upfirdn2d kernels, written from the op's published semantics (see docs: OPS.md 2.2):
// zero-insert (up), pad / crop (padding on the upsampled grid), FIR with a filter (true convolution unless
// flip), keep every down-th sample, times gain.
//
// Polyphase: an output (oy, ox) reads the upsampled grid at u = oy * down - pad0 + k for taps k in
// [0, f_len). Only u that are multiples of up hold input samples, so instead of visiting every tap and
// skipping the zero-inserted ones, the loops start at the first input row iy0 = ceil(base / up) and step
// one input row (= up taps) at a time: ceil(f_len / up) taps per axis (4 of 16 for up = 2 and a 4x4
// filter). Inputs outside [0, in) contribute zero (padding).
//
// Launch: blockDim (32, 8) over an (out_w, out_h) tile, grid (ceil(out_w / 32), ceil(out_h / 8), planes'),
// looping over planes with stride gridDim.z, so there is no per-element division. 32-bit indices: the host
// sends only tensors of fewer than 2^31 elements. A separable 1-D filter is run as two launches of the
// same kernel (f_h = 1, then f_w = 1). Template parameters fix up / down / filter size for the generator's
// shapes (so the tap loops unroll and divisions by up become shifts); 0 means "runtime value".
#include "zsgm_common.cuh"

// floor(a / b) for b > 0 and any sign of a.
template <int B>
__device__ __forceinline__ int zsgm_floor_div(int a, int b) {
    const int d = B > 0 ? B : b;
    return a >= 0 ? a / d : -((-a + d - 1) / d);
}

template <typename T, int UPX, int UPY, int DNX, int DNY, int FW, int FH>
__device__ void zsgm_upfirdn2d_poly(const T* __restrict__ x, const typename ZsgmIo<T>::C* __restrict__ f,
                                    T* __restrict__ y, int planes, int in_h, int in_w, int out_h, int out_w,
                                    int up_x_, int up_y_, int down_x_, int down_y_, int pad_x0, int pad_y0,
                                    int f_w_, int f_h_, int flip, typename ZsgmIo<T>::C gain) {
    typedef typename ZsgmIo<T>::C C;
    const int up_x = UPX > 0 ? UPX : up_x_, up_y = UPY > 0 ? UPY : up_y_;
    const int down_x = DNX > 0 ? DNX : down_x_, down_y = DNY > 0 ? DNY : down_y_;
    const int f_w = FW > 0 ? FW : f_w_, f_h = FH > 0 ? FH : f_h_;
    const int ox = blockIdx.x * blockDim.x + threadIdx.x;
    const int oy = blockIdx.y * blockDim.y + threadIdx.y;
    if (ox >= out_w || oy >= out_h) return;
    // correlation window on the upsampled grid starts at base; first input row / column inside it
    const int base_y = oy * down_y - pad_y0;
    const int base_x = ox * down_x - pad_x0;
    const int iy_first = zsgm_floor_div<UPY>(base_y + up_y - 1, up_y);  // ceil(base_y / up_y)
    const int ix_first = zsgm_floor_div<UPX>(base_x + up_x - 1, up_x);
    const int ky_first = iy_first * up_y - base_y;  // in [0, up_y)
    const int kx_first = ix_first * up_x - base_x;
    const int in_plane = in_h * in_w;
    const int out_plane = out_h * out_w;
    for (int plane = blockIdx.z; plane < planes; plane += gridDim.z) {
        const T* xp = x + plane * in_plane;  // < 2^31 elements: the host checked
        C acc = (C)0;
#pragma unroll
        for (int ky = ky_first, iy = iy_first; ky < f_h; ky += up_y, ++iy) {
            if (iy < 0 || iy >= in_h) continue;
            const int frow = flip ? ky : f_h - 1 - ky;  // true convolution unless flip
#pragma unroll
            for (int kx = kx_first, ix = ix_first; kx < f_w; kx += up_x, ++ix) {
                if (ix < 0 || ix >= in_w) continue;
                const int fcol = flip ? kx : f_w - 1 - kx;
                acc += ZsgmIo<T>::load(xp[iy * in_w + ix]) * f[frow * f_w + fcol];
            }
        }
        y[plane * out_plane + oy * out_w + ox] = ZsgmIo<T>::store(acc * gain);
    }
}

// up = down = 1 with a 4x4 filter (the generator's blur after the transposed conv, and its backward), on
// the biggest tensors of the generator: each thread computes ROWS vertically adjacent outputs and reuses
// every input row it loads for all of them (ROWS + 3 rows of 4 samples for ROWS outputs: 7 loads per output
// instead of 16 for ROWS = 4). Launch: blockDim (bx, by), grid (ceil(out_w / bx), ceil(out_h / (by * ROWS)),
// planes'). The unused parameters keep the signature of the other entry points.
template <typename T, int ROWS>
__device__ void zsgm_upfirdn2d_blur4(const T* __restrict__ x, const typename ZsgmIo<T>::C* __restrict__ f,
                                     T* __restrict__ y, int planes, int in_h, int in_w, int out_h, int out_w,
                                     int pad_x0, int pad_y0, int flip, typename ZsgmIo<T>::C gain) {
    typedef typename ZsgmIo<T>::C C;
    const int ox = blockIdx.x * blockDim.x + threadIdx.x;
    const int oy0 = (blockIdx.y * blockDim.y + threadIdx.y) * ROWS;
    if (ox >= out_w || oy0 >= out_h) return;
    C w[4][4];  // correlation weights: w[ky][kx] multiplies x[oy - pad_y0 + ky][ox - pad_x0 + kx]
#pragma unroll
    for (int ky = 0; ky < 4; ++ky)
#pragma unroll
        for (int kx = 0; kx < 4; ++kx) w[ky][kx] = flip ? f[ky * 4 + kx] : f[(3 - ky) * 4 + (3 - kx)];
    const int bx = ox - pad_x0, by = oy0 - pad_y0;
    const int in_plane = in_h * in_w, out_plane = out_h * out_w;
    for (int plane = blockIdx.z; plane < planes; plane += gridDim.z) {
        const T* xp = x + plane * in_plane;
        C acc[ROWS];
#pragma unroll
        for (int j = 0; j < ROWS; ++j) acc[j] = (C)0;
#pragma unroll
        for (int r = 0; r < ROWS + 3; ++r) {
            const int iy = by + r;
            if (iy < 0 || iy >= in_h) continue;
            C v[4];
#pragma unroll
            for (int kx = 0; kx < 4; ++kx) {
                const int ix = bx + kx;
                v[kx] = (ix >= 0 && ix < in_w) ? ZsgmIo<T>::load(xp[iy * in_w + ix]) : (C)0;
            }
#pragma unroll
            for (int j = 0; j < ROWS; ++j) {
                const int ky = r - j;  // compile-time after unrolling
                if (ky >= 0 && ky < 4)
                    acc[j] += v[0] * w[ky][0] + v[1] * w[ky][1] + v[2] * w[ky][2] + v[3] * w[ky][3];
            }
        }
#pragma unroll
        for (int j = 0; j < ROWS; ++j)
            if (oy0 + j < out_h) y[plane * out_plane + (oy0 + j) * out_w + ox] = ZsgmIo<T>::store(acc[j] * gain);
    }
}

#define ZSGM_BLUR_ENTRY(SUFFIX, T, C, ROWS)                                                             \
    extern "C" __global__ void zsgm_upfirdn2d_up1_down1_k4_##SUFFIX(                                    \
        const T* x, const C* f, T* y, int planes, int in_h, int in_w, int out_h, int out_w, int up_x,  \
        int up_y, int down_x, int down_y, int pad_x0, int pad_y0, int f_w, int f_h, int flip, C gain) { \
        zsgm_upfirdn2d_blur4<T, ROWS>(x, f, y, planes, in_h, in_w, out_h, out_w, pad_x0, pad_y0, flip,  \
                                      gain);                                                            \
    }

// Fixed, descriptive extern "C" entry points (stable names keep CuPy's disk cache effective):
//   zsgm_upfirdn2d_poly_<dtype>                 every parameter at run time
//   zsgm_upfirdn2d_up2_down1_k4_<dtype>        the generator's skip upsample (pad 2,1,2,1)
//   zsgm_upfirdn2d_up1_down1_k4_<dtype>        blur after the transposed conv (pad 1) and its backward
//                                               (zsgm_upfirdn2d_blur4: 4 output rows per thread)
//   zsgm_upfirdn2d_up1_down2_k4_<dtype>        backward of the skip upsample
#define ZSGM_UPFIRDN_ENTRY(NAME, SUFFIX, T, C, UX, UY, DX, DY, KW, KH)                                  \
    extern "C" __global__ void zsgm_upfirdn2d_##NAME##_##SUFFIX(                                        \
        const T* x, const C* f, T* y, int planes, int in_h, int in_w, int out_h, int out_w, int up_x,  \
        int up_y, int down_x, int down_y, int pad_x0, int pad_y0, int f_w, int f_h, int flip, C gain) { \
        zsgm_upfirdn2d_poly<T, UX, UY, DX, DY, KW, KH>(x, f, y, planes, in_h, in_w, out_h, out_w, up_x, \
                                                       up_y, down_x, down_y, pad_x0, pad_y0, f_w, f_h,  \
                                                       flip, gain);                                     \
    }

#define ZSGM_UPFIRDN_DTYPE(SUFFIX, T, C)                                        \
    ZSGM_UPFIRDN_ENTRY(poly, SUFFIX, T, C, 0, 0, 0, 0, 0, 0)                    \
    ZSGM_UPFIRDN_ENTRY(up2_down1_k4, SUFFIX, T, C, 2, 2, 1, 1, 4, 4)            \
    ZSGM_BLUR_ENTRY(SUFFIX, T, C, 4)                                            \
    ZSGM_UPFIRDN_ENTRY(up1_down2_k4, SUFFIX, T, C, 1, 1, 2, 2, 4, 4)

ZSGM_UPFIRDN_DTYPE(f32, float, float)
ZSGM_UPFIRDN_DTYPE(f64, double, double)
ZSGM_UPFIRDN_DTYPE(f16, unsigned short, float)
