// Wick's CUDA kernels: the GPU side of the fused ops in ops.rs, rms_norm.rs and rope.rs, the same math as
// their CPU implementations (the references they are tested against), in f32. Compiled to PTX by
// build.rs when the `cuda` feature is on, loaded by cuda_ops.rs. Every reduction is a fixed tree
// inside one block, or a fixed order across blocks, so results do not depend on scheduling.
//
// NOT YET RUN ON A GPU: compiled in CI (nvcc's front end), off unless WICK_CUDA_KERNELS=1.

#include <stdint.h>

#define BLOCK 256

// Sum of `v` over the block (BLOCK threads); every thread gets the total.
__device__ float block_sum(float v, float* shared) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    v = lane < (BLOCK >> 5) ? shared[lane] : 0.0f;
    if (warp == 0) {
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
        if (lane == 0) shared[0] = v;
    }
    __syncthreads();
    float total = shared[0];
    __syncthreads();
    return total;
}

// Maximum of `v` over the block.
__device__ float block_max(float v, float* shared) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, o));
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    v = lane < (BLOCK >> 5) ? shared[lane] : -INFINITY;
    if (warp == 0) {
        for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, o));
        if (lane == 0) shared[0] = v;
    }
    __syncthreads();
    float total = shared[0];
    __syncthreads();
    return total;
}

// ---- RMSNorm: y = x · r · w, r = 1/sqrt(mean(x²) + eps), one block per row of c -----------------

extern "C" __global__ void wick_rms_norm_fwd_f32(const float* x, const float* w, float* y, int c,
                                                 float eps) {
    __shared__ float shared[32];
    const float* xs = x + (size_t)blockIdx.x * c;
    float* ys = y + (size_t)blockIdx.x * c;
    float sq = 0.0f;
    for (int j = threadIdx.x; j < c; j += BLOCK) sq += xs[j] * xs[j];
    float r = rsqrtf(block_sum(sq, shared) / c + eps);
    for (int j = threadIdx.x; j < c; j += BLOCK) ys[j] = xs[j] * r * w[j];
}

// dx = r · (g ⊙ w − x̂ · mean(g ⊙ w ⊙ x̂)) per row, x̂ = x · r; each row's r goes to `rs` for dw.
extern "C" __global__ void wick_rms_norm_bwd_dx_f32(const float* x, const float* w, const float* g,
                                                   float* dx, float* rs, int c, float eps) {
    __shared__ float shared[32];
    size_t row = blockIdx.x;
    const float* xs = x + row * c;
    const float* gs = g + row * c;
    float* dxs = dx + row * c;
    float sq = 0.0f;
    for (int j = threadIdx.x; j < c; j += BLOCK) sq += xs[j] * xs[j];
    float r = rsqrtf(block_sum(sq, shared) / c + eps);
    float dot = 0.0f;
    for (int j = threadIdx.x; j < c; j += BLOCK) dot += gs[j] * w[j] * xs[j] * r;
    float mean = block_sum(dot, shared) / c;
    for (int j = threadIdx.x; j < c; j += BLOCK) dxs[j] = r * (gs[j] * w[j] - xs[j] * r * mean);
    if (threadIdx.x == 0) rs[row] = r;
}

// dw partial sums: block (bx, by) sums column j = bx·BLOCK + tid over rows by, by + chunks, ...
// into partial[by·c + j]; wick_column_sums adds the chunks in order.
extern "C" __global__ void wick_rms_norm_bwd_dw_partial_f32(const float* x, const float* g,
                                                           const float* rs, float* partial, int n,
                                                           int c) {
    int j = blockIdx.x * BLOCK + threadIdx.x;
    if (j >= c) return;
    float acc = 0.0f;
    for (int row = blockIdx.y; row < n; row += gridDim.y)
        acc += g[(size_t)row * c + j] * x[(size_t)row * c + j] * rs[row];
    partial[(size_t)blockIdx.y * c + j] = acc;
}

// out[j] = Σ_k partial[k·c + j] for k in 0..chunks, in order.
extern "C" __global__ void wick_column_sums_f32(const float* partial, float* out, int chunks,
                                                int c) {
    int j = blockIdx.x * BLOCK + threadIdx.x;
    if (j >= c) return;
    float acc = 0.0f;
    for (int k = 0; k < chunks; k++) acc += partial[(size_t)k * c + j];
    out[j] = acc;
}

// ---- Causal softmax of scale·x over keys j ≤ i (i = row mod t); masked entries 0 ------------

extern "C" __global__ void wick_causal_softmax_fwd_f32(const float* x, float* y, int t,
                                                       float scale) {
    __shared__ float shared[32];
    size_t row = blockIdx.x;
    int i = (int)(row % t);
    const float* xs = x + row * t;
    float* ys = y + row * t;
    float m = -INFINITY;
    for (int j = threadIdx.x; j <= i; j += BLOCK) m = fmaxf(m, xs[j] * scale);
    m = block_max(m, shared);
    float s = 0.0f;
    for (int j = threadIdx.x; j <= i; j += BLOCK) s += expf(xs[j] * scale - m);
    s = block_sum(s, shared);
    float inv = 1.0f / s;
    for (int j = threadIdx.x; j < t; j += BLOCK) ys[j] = j <= i ? expf(xs[j] * scale - m) * inv : 0.0f;
}

// dx = scale · y · (g − Σ_j≤i g·y).
extern "C" __global__ void wick_causal_softmax_bwd_f32(const float* y, const float* g, float* dx,
                                                       int t, float scale) {
    __shared__ float shared[32];
    size_t row = blockIdx.x;
    int i = (int)(row % t);
    const float* ys = y + row * t;
    const float* gs = g + row * t;
    float* d = dx + row * t;
    float dot = 0.0f;
    for (int j = threadIdx.x; j <= i; j += BLOCK) dot += gs[j] * ys[j];
    dot = block_sum(dot, shared);
    for (int j = threadIdx.x; j < t; j += BLOCK) d[j] = j <= i ? scale * ys[j] * (gs[j] - dot) : 0.0f;
}

// ---- Row cross-entropy: loss = max + log Σ exp(x − max) − x[target], one block per row of v ------

extern "C" __global__ void wick_cross_entropy_fwd_f32(const float* x, const uint32_t* targets,
                                                      float* loss, int v) {
    __shared__ float shared[32];
    size_t row = blockIdx.x;
    const float* xs = x + row * v;
    float m = -INFINITY;
    for (int j = threadIdx.x; j < v; j += BLOCK) m = fmaxf(m, xs[j]);
    m = block_max(m, shared);
    float s = 0.0f;
    for (int j = threadIdx.x; j < v; j += BLOCK) s += expf(xs[j] - m);
    s = block_sum(s, shared);
    if (threadIdx.x == 0) loss[row] = m + logf(s) - xs[targets[row]];
}

// dx = g · (softmax(x) − onehot(target)).
extern "C" __global__ void wick_cross_entropy_bwd_f32(const float* x, const uint32_t* targets,
                                                      const float* g, float* dx, int v) {
    __shared__ float shared[32];
    size_t row = blockIdx.x;
    const float* xs = x + row * v;
    float* d = dx + row * v;
    float m = -INFINITY;
    for (int j = threadIdx.x; j < v; j += BLOCK) m = fmaxf(m, xs[j]);
    m = block_max(m, shared);
    float s = 0.0f;
    for (int j = threadIdx.x; j < v; j += BLOCK) s += expf(xs[j] - m);
    s = block_sum(s, shared);
    float k = g[row] / s;
    uint32_t t = targets[row];
    for (int j = threadIdx.x; j < v; j += BLOCK) d[j] = expf(xs[j] - m) * k - (j == (int)t ? g[row] : 0.0f);
}

// ---- RoPE, rotate-half: y = x·cos + rotate_half(x)·(±sin), one thread per element ------------
// x (B, H, T, hd); cos/sin (B, 1, T, hd). Backward is the same rotation by −sin (sign = −1).

extern "C" __global__ void wick_rotary_f32(const float* x, const float* cos, const float* sin,
                                           float* y, int heads, int t, int hd, float sign,
                                           size_t n) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= n) return;
    size_t row = idx / hd;
    int i = (int)(idx % hd), half = hd / 2;
    size_t b = row / ((size_t)heads * t), ti = row % t;
    size_t at = (b * t + ti) * hd + i;
    float r = i < half ? -x[idx + half] : x[idx - half];
    y[idx] = x[idx] * cos[at] + r * (sign * sin[at]);
}
