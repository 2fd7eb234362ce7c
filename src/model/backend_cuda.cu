/* backend_cuda.cu: the ViT forward pass on one NVIDIA GPU (cuBLAS + our own
 * kernels), behind the backend seam of backend.h.
 *
 * Layout.  create() uploads the weights once (GEMM weights in the compute
 * type TI = float / __half / __nv_bfloat16; biases, LayerNorm parameters,
 * cls and pos always fp32) and carves ONE cudaMalloc into a weight region
 * and an activation arena sized for `chunk` images (chunk = min(max_batch,
 * VS_CUDA_CHUNK, default 16)).  forward(n) cuts the batch into chunks:
 *   host pixels -> pinned staging (CPU memcpy, image by image: forward_rows
 *   takes each image where the caller has it, forward passes pointers into
 *   its one buffer; same path) -> device (copy stream)
 *   -> im2col (compute stream, waits for that chunk's copy event)
 *   -> the network for m images (a CUDA graph captured on first use per m)
 *   -> logits -> pinned staging (compute stream)
 * so the copy of chunk i+1 overlaps the compute of chunk i (a batch of
 * several chunks starts with a quarter chunk to fill the pipeline early).
 * It then waits for the compute stream and copies the logits out (forward
 * is synchronous).  Design notes and H100 measurements: docs/gpu.md.
 *
 * Numerics.  Every GEMM accumulates in fp32 (CUBLAS_COMPUTE_32F, default
 * math mode: no TF32), writes fp32, and every non-GEMM op (LayerNorm with
 * biased variance, softmax, activations, residual adds) runs in fp32 on the
 * fp32 residual stream.  In fp16/bf16 only the GEMM operands (weights, LN
 * outputs, Q/K/V, softmax probabilities, activations) are rounded to TI.
 *
 * Failures.  cudaMalloc failure at create -> VS_NOMEM naming the MiB needed
 * and free; OOM inside forward (graph instantiation, cuBLAS) -> the chunk
 * size is halved (kept for later calls) and the batch rerun; a sticky CUDA
 * error (illegal address, launch failure, ECC, device unavailable ...) marks
 * the context lost and every later forward fails at once with VS_BACKEND.
 *
 * Packaging.  This file is built as a plugin, libvitserve_cuda.so, loaded
 * with dlopen by cuda_plugin.c only when a CUDA device is wanted: the CUDA
 * runtime and cuBLAS (half a gigabyte of libraries) then cost nothing to a
 * process that runs on the CPU, and the binary runs where they are absent.
 *
 * Threads: create/destroy from the loading thread; forward from one thread
 * at a time (the batcher).  Each call selects its device (cudaSetDevice), so
 * the calling thread may change between calls.
 *
 * Environment (read at create): VS_CUDA_CHUNK (images per launch),
 * VS_CUDA_GRAPHS=0 (launch kernels directly), VS_CUDA_DEBUG=1 (diagnostics
 * on stderr), VS_CUDA_FUSED_ATTN=1 (the experimental fused fp16/bf16
 * attention kernel: correct, but slower than cuBLAS + softmax as measured
 * on an H100, see docs/gpu.md), VS_CUDA_PROFILE=1 (eager launches timed
 * with events per op; a breakdown on stderr at destroy),
 * VS_CUDA_FAKE_OOM_ABOVE=m (test hook: a chunk of more than m images
 * reports out-of-memory, to exercise the split-and-retry path).
 */
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <cublas_v2.h>
#include <mma.h>

#include <type_traits>

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* vs.h spells C11's _Noreturn, which C++ does not know. */
#define _Noreturn __attribute__((noreturn))
extern "C" {
#include "backend.h"
}
#undef _Noreturn

/* ======================================================================
 * Kernels.  TI is the GEMM operand type; all arithmetic is fp32.
 * ====================================================================== */

template <class T> __device__ __forceinline__ T to_ti(float v);
template <> __device__ __forceinline__ float to_ti<float>(float v) { return v; }
template <> __device__ __forceinline__ __half to_ti<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 to_ti<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }

/* The row-wise kernels below put the row on blockIdx.y (at most 65535 rows:
 * create() caps the images per launch so that n*T fits) and the column on
 * blockIdx.x * blockDim.x + threadIdx.x, so that index math stays 32-bit
 * and free of 64-bit divisions (which would cost more than the memory
 * traffic). */

#define GRID_STRIDE(i, count)                                                  \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;       \
         i < (count); i += (long long)gridDim.x * blockDim.x)

/* dst[i] = TI(src[i]), i < count (weight conversion at create). */
template <class TI>
__global__ void k_convert(const float *src, TI *dst, long long count)
{
    GRID_STRIDE(i, count) dst[i] = to_ti<TI>(src[i]);
}

/* Patch extraction for the conv-as-GEMM.
 * pix:  (n, C, H, W) fp32;  cols: (n*Np, K) TI with K = C*P*P ordered
 * (c, ky, kx) like the conv weight (D, C, P, P); patch p = gy*gw + gx.
 * Pixels right/below the last full patch are ignored, as the conv does.
 * Grid: (ceil(K / 256), n*Np). */
template <class TI>
__global__ void k_im2col(const float *pix, TI *cols, int C, int H, int W, int P,
                         int gw, int np)
{
    const int K = C * P * P, k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= K) return;
    const int row = blockIdx.y, b = row / np, p = row % np;
    const int c = k / (P * P), ky = (k / P) % P, kx = k % P;
    const int y = (p / gw) * P + ky, x = (p % gw) * P + kx;
    cols[(size_t)row * K + k] = to_ti<TI>(pix[(((size_t)b * C + c) * H + y) * W + x]);
}

/* Embeddings.  pe: (n*Np, D) TI conv output without bias; x: (n, T, D).
 * x[b,0,:] = cls + pos[0];  x[b,1+p,:] = (pe[b,p,:] + patch_b) + pos[1+p].
 * Grid: (ceil(D / 256), n*T). */
template <class TI>
__global__ void k_embed(const TI *pe, const float *pb, const float *cls,
                        const float *pos, float *x, int T, int D)
{
    const int d = blockIdx.x * blockDim.x + threadIdx.x;
    if (d >= D) return;
    const int row = blockIdx.y, b = row / T, t = row % T;
    float v = t == 0 ? cls[d] : to_f(pe[((size_t)b * (T - 1) + t - 1) * D + d]) + pb[d];
    x[(size_t)row * D + d] = v + pos[(size_t)t * D + d];
}

/* Sum over the block (blockDim.x a multiple of 32); red holds 33 floats.
 * Every thread gets the result. */
__device__ float block_sum(float v, float *red)
{
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    const int w = threadIdx.x >> 5, l = threadIdx.x & 31, nw = blockDim.x >> 5;
    __syncthreads();                    /* red may still be read from a previous call */
    if (l == 0) red[w] = v;
    __syncthreads();
    if (w == 0) {
        float t = l < nw ? red[l] : 0.f;
        for (int o = 16; o > 0; o >>= 1) t += __shfl_xor_sync(0xffffffffu, t, o);
        if (l == 0) red[32] = t;
    }
    __syncthreads();
    return red[32];
}

/* Residual add + LayerNorm, one block per row.
 * x: (R, D) fp32 residual stream, updated in place when y != NULL:
 *    x = (y + bias) + x   (the dense output plus its bias, then the skip).
 * out: (R, D) TI = (x - mean) / sqrt(var + eps) * g + b, biased variance,
 * computed in two passes over the row held in shared memory (D floats). */
template <class TI>
__global__ void k_resid_ln(float *x, const TI *y, const float *bias,
                           const float *g, const float *b, TI *out, int D, float eps)
{
    extern __shared__ float sm[];
    float *row = sm, *red = sm + D;
    const long long r = blockIdx.x;
    float *xr = x + r * D;
    float part = 0.f;
    for (int i = threadIdx.x; i < D; i += blockDim.x) {
        float v = xr[i];
        if (y) {
            v = (to_f(y[r * D + i]) + bias[i]) + v;
            xr[i] = v;
        }
        row[i] = v;
        part += v;
    }
    const float mean = block_sum(part, red) / (float)D;
    part = 0.f;
    for (int i = threadIdx.x; i < D; i += blockDim.x) {
        float d = row[i] - mean;
        part += d * d;
    }
    const float var = block_sum(part, red) / (float)D;
    const float rstd = 1.f / sqrtf(var + eps);
    TI *o = out + r * D;
    for (int i = threadIdx.x; i < D; i += blockDim.x)
        o[i] = to_ti<TI>((row[i] - mean) * rstd * g[i] + b[i]);
}

/* Split the fused QKV projection into per-head operands.
 * y: (R = n*T, 3D) TI = [Q | K | V] without bias; bias: (3D).
 * qkv: Q, K, V at offsets 0, blk, 2*blk, each (n*H, Tp, dh) TI (head h =
 * columns h*dh .. h*dh+dh-1 of each D-wide block).  Rows t >= T are never
 * written: zeroed once at create, they keep every attention GEMM dimension
 * a multiple of 8.  Grid: (ceil(3D / 256), R). */
template <class TI>
__global__ void k_qkv_split(const TI *y, const float *bias, TI *qkv, size_t blk, int T,
                            int Tp, int H, int dh)
{
    const int D = H * dh, c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= 3 * D) return;
    const int r = blockIdx.y, which = c / D, cc = c % D, h = cc / dh, d = cc % dh;
    const int t = r % T, b = r / T;
    const size_t dst = (size_t)which * blk + (((size_t)b * H + h) * Tp + t) * dh + d;
    qkv[dst] = to_ti<TI>(to_f(y[(size_t)r * 3 * D + c]) + bias[c]);
}

/* Softmax over keys, one warp per row (grid-stride over rows).
 * S: (rows, ld) fp32 raw scores Q.K (first T columns used);
 * P: (rows, ld) TI = softmax(S / sqrt(dh)), same layout, 0 in columns
 * T .. ld-1 (ld <= 32*NPL on the register path).
 * NPL > 0: the row lives in registers, NPL values per lane (T <= 32*NPL),
 * S is read once; NPL == 0: three passes over S for any T. */
template <class TI, int NPL>
__global__ void k_softmax(const float *S, TI *P, long long rows, int T, int ld,
                          float sqrt_dh)
{
    const long long warps = (long long)gridDim.x * (blockDim.x >> 5);
    const int lane = threadIdx.x & 31;
    for (long long row = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
         row < rows; row += warps) {          /* the whole warp shares `row` */
        const float *s = S + row * ld;
        TI *p = P + row * ld;
        float m = -INFINITY, sum = 0.f;
        if (NPL > 0) {
            float v[NPL > 0 ? NPL : 1];
#pragma unroll
            for (int q = 0; q < NPL; q++) {
                const int j = lane + 32 * q;
                v[q] = j < T ? s[j] / sqrt_dh : -INFINITY;
                m = fmaxf(m, v[q]);
            }
            for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
#pragma unroll
            for (int q = 0; q < NPL; q++) {
                v[q] = lane + 32 * q < T ? expf(v[q] - m) : 0.f;
                sum += v[q];
            }
            for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
#pragma unroll
            for (int q = 0; q < NPL; q++)        /* v = 0 for T <= j < ld */
                if (lane + 32 * q < ld) p[lane + 32 * q] = to_ti<TI>(v[q] / sum);
        } else {
            for (int j = lane; j < T; j += 32) m = fmaxf(m, s[j] / sqrt_dh);
            for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
            for (int j = lane; j < T; j += 32) sum += expf(s[j] / sqrt_dh - m);
            for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
            for (int j = lane; j < T; j += 32) p[j] = to_ti<TI>(expf(s[j] / sqrt_dh - m) / sum);
            for (int j = T + lane; j < ld; j += 32) p[j] = to_ti<TI>(0.f);
        }
    }
}

/* Fused attention for fp16/bf16 with head_dim 64 and T <= 256 (tensor
 * cores through WMMA); same numbers as the unfused path (fp32 scores,
 * fp32 softmax, probabilities rounded to TI, fp32 accumulation).
 * y: (n*T, 3D) TI = [Q | K | V] without bias; bias: (3D) fp32;
 * out: (n*T, D) TI, head h in columns h*64 .. h*64+63.
 * Grid: (ceil(T / 64), n*H); block: 4 warps, warp w owns query rows
 * blockIdx.x*64 + w*16 .. +15.  Shared memory (Tp = T rounded up to 16):
 *   Qs (64, 64) TI | Ks (Tp, 64) TI | Vs (Tp, 64) TI | S (4, 16, max(Tp, 64)) fp32
 * Rows past T are zero in Qs/Ks/Vs; key columns past T get probability 0.
 * Each warp's P (TI) overwrites the first half of its own S rows. */
#define ATTN_DH 64
template <class TI>
__global__ void __launch_bounds__(128) k_attn(const TI *y, const float *bias, TI *out,
                                              int T, int Tp, int H, float sqrt_dh)
{
    using namespace nvcuda;
    extern __shared__ __align__(128) unsigned char attn_smem[];
    TI *Qs = (TI *)attn_smem;
    TI *Ks = Qs + 64 * ATTN_DH;
    TI *Vs = Ks + (size_t)Tp * ATTN_DH;
    float *Sall = (float *)(Vs + (size_t)Tp * ATTN_DH);
    const int bh = blockIdx.y, b = bh / H, h = bh % H, D = H * ATTN_DH;
    const int q_base = blockIdx.x * 64;
    const TI *yb = y + (size_t)b * T * 3 * D;

    /* Q rows q_base.., all K and V rows, bias added, zero past T */
    const int total = (64 + 2 * Tp) * ATTN_DH;
    for (int idx = threadIdx.x; idx < total; idx += blockDim.x) {
        const int row = idx / ATTN_DH, d = idx % ATTN_DH;
        int which, j;
        TI *dst;
        if (row < 64) { which = 0; j = q_base + row; dst = Qs + row * ATTN_DH + d; }
        else if (row < 64 + Tp) { which = 1; j = row - 64; dst = Ks + j * ATTN_DH + d; }
        else { which = 2; j = row - 64 - Tp; dst = Vs + j * ATTN_DH + d; }
        float v = 0.f;
        if (j < T) {
            const int col = which * D + h * ATTN_DH + d;
            v = to_f(yb[(size_t)j * 3 * D + col]) + bias[col];
        }
        *dst = to_ti<TI>(v);
    }
    __syncthreads();

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, q0 = warp * 16;
    if (q_base + q0 >= T) return;               /* no barrier below */
    /* (16, Tp) fp32 scores, later (16, 64) fp32 context: 16*max(Tp, 64) */
    float *Sw = Sall + (size_t)warp * 16 * (Tp > ATTN_DH ? Tp : ATTN_DH);

    /* S (16 x Tp) = Q (16 x 64) . K^T (64 x Tp) */
    wmma::fragment<wmma::matrix_a, 16, 16, 16, TI, wmma::row_major> qa[ATTN_DH / 16];
#pragma unroll
    for (int kk = 0; kk < ATTN_DH / 16; kk++)
        wmma::load_matrix_sync(qa[kk], Qs + q0 * ATTN_DH + kk * 16, ATTN_DH);
    for (int n0 = 0; n0 < Tp; n0 += 16) {
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
        wmma::fill_fragment(acc, 0.f);
#pragma unroll
        for (int kk = 0; kk < ATTN_DH / 16; kk++) {
            /* K^T as a col-major (64 x Tp) matrix is K row-major (Tp x 64) */
            wmma::fragment<wmma::matrix_b, 16, 16, 16, TI, wmma::col_major> kb;
            wmma::load_matrix_sync(kb, Ks + n0 * ATTN_DH + kk * 16, ATTN_DH);
            wmma::mma_sync(acc, qa[kk], kb, acc);
        }
        wmma::store_matrix_sync(Sw + n0, acc, Tp, wmma::mem_row_major);
    }
    __syncwarp();

    /* P = softmax(S / sqrt(dh)) per row over the first T keys, as k_softmax */
    for (int r = 0; r < 16; r++) {
        float *sr = Sw + (size_t)r * Tp;
        float v[8], m = -INFINITY, sum = 0.f;
#pragma unroll
        for (int q = 0; q < 8; q++) {
            const int j = lane + 32 * q;
            v[q] = j < T ? sr[j] / sqrt_dh : -INFINITY;
            m = fmaxf(m, v[q]);
        }
        for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
#pragma unroll
        for (int q = 0; q < 8; q++) {
            v[q] = lane + 32 * q < T ? expf(v[q] - m) : 0.f;
            sum += v[q];
        }
        for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
        __syncwarp();                           /* row read by all lanes before overwrite */
        TI *pr = (TI *)sr;
#pragma unroll
        for (int q = 0; q < 8; q++)
            if (lane + 32 * q < Tp) pr[lane + 32 * q] = to_ti<TI>(v[q] / sum);
    }
    __syncwarp();

    /* ctx (16 x 64) = P (16 x Tp, ld 2*Tp in TI) . V (Tp x 64) */
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> cacc[ATTN_DH / 16];
#pragma unroll
    for (int n = 0; n < ATTN_DH / 16; n++) wmma::fill_fragment(cacc[n], 0.f);
    for (int k0 = 0; k0 < Tp; k0 += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, TI, wmma::row_major> pa;
        wmma::load_matrix_sync(pa, (const TI *)Sw + k0, 2 * Tp);
#pragma unroll
        for (int n = 0; n < ATTN_DH / 16; n++) {
            wmma::fragment<wmma::matrix_b, 16, 16, 16, TI, wmma::row_major> vb;
            wmma::load_matrix_sync(vb, Vs + k0 * ATTN_DH + n * 16, ATTN_DH);
            wmma::mma_sync(cacc[n], pa, vb, cacc[n]);
        }
    }
    __syncwarp();                               /* done with P before reusing Sw */
#pragma unroll
    for (int n = 0; n < ATTN_DH / 16; n++)
        wmma::store_matrix_sync(Sw + n * 16, cacc[n], ATTN_DH, wmma::mem_row_major);
    __syncwarp();
    for (int idx = lane; idx < 16 * ATTN_DH; idx += 32) {
        const int r = idx / ATTN_DH, cc = idx % ATTN_DH, t = q_base + q0 + r;
        if (t < T) out[((size_t)b * T + t) * D + h * ATTN_DH + cc] = to_ti<TI>(Sw[idx]);
    }
}

static size_t attn_smem_bytes(int T)
{
    const size_t Tp = (size_t)(T + 15) / 16 * 16;
    return (64 + 2 * Tp) * ATTN_DH * 2 + 4 * 16 * (Tp > ATTN_DH ? Tp : ATTN_DH) * sizeof(float);
}

/* Heads back side by side.  ctx: (n*H, Tp, dh) TI -> out: (n*T, D) TI.
 * Grid: (ceil(D / 256), n*T). */
template <class TI>
__global__ void k_merge(const TI *ctx, TI *out, int T, int Tp, int H, int dh)
{
    const int D = H * dh, cc = blockIdx.x * blockDim.x + threadIdx.x;
    if (cc >= D) return;
    const int r = blockIdx.y, h = cc / dh, d = cc % dh, t = r % T, b = r / T;
    out[(size_t)r * D + cc] = ctx[(((size_t)b * H + h) * Tp + t) * dh + d];
}

__device__ __forceinline__ float act_f(float v, int act)
{
    switch (act) {
    case VS_ACT_GELU:       return 0.5f * v * (1.f + erff(v * 0.70710678118654752f));
    case VS_ACT_GELU_TANH:  return 0.5f * v * (1.f + tanhf(0.79788456080286536f *
                                                          (v + 0.044715f * v * v * v)));
    case VS_ACT_RELU:       return v > 0.f ? v : 0.f;
    case VS_ACT_QUICK_GELU: return v / (1.f + expf(-1.702f * v));
    case VS_ACT_GELU_FAST:  return 0.5f * v * (1.f + tanhf(v * 0.7978845608f *
                                                          (1.f + 0.044715f * v * v)));
    case VS_ACT_SILU:       return v / (1.f + expf(-v));
    default:                return v;
    }
}

/* MLP middle.  y: (R, M) TI fc1 output without bias -> g: (R, M) TI =
 * act(y + b1).  Grid: (ceil(M / 256), R). */
template <class TI>
__global__ void k_bias_act(const TI *y, const float *b1, TI *g, int M, int act)
{
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= M) return;
    const size_t i = (size_t)blockIdx.y * M + j;
    g[i] = to_ti<TI>(act_f(to_f(y[i]) + b1[j], act));
}

/* logits: (n, L) fp32 += bias (L). */
__global__ void k_add_bias(float *logits, const float *bias, int n, int L)
{
    GRID_STRIDE(i, (long long)n * L) logits[i] += bias[i % L];
}

/* ======================================================================
 * Context.
 * ====================================================================== */

/* Op categories of the profile (VS_CUDA_PROFILE=1). */
enum { PROF_START, PROF_IM2COL, PROF_EMBED, PROF_QKV, PROF_ATTN, PROF_OUT, PROF_LN,
       PROF_FC1, PROF_ACT, PROF_FC2, PROF_HEAD, PROF_TAGS };
static const char *const prof_name[PROF_TAGS] = {
    "-", "im2col", "patch GEMM+embed+LN", "QKV GEMM", "attention", "out-proj GEMM",
    "residual+LN", "fc1 GEMM", "bias+act", "fc2 GEMM", "classifier" };

struct cu_layer {
    void *qkv_w;            /* (3D, D) TI: rows [Wq; Wk; Wv] */
    float *qkv_b;           /* (3D), zeros where the checkpoint has none */
    void *o_w;              /* (D, D) TI */
    float *o_b;             /* (D) */
    float *ln1_g, *ln1_b, *ln2_g, *ln2_b;   /* (D) */
    void *fc1_w;            /* (M, D) TI */
    float *fc1_b;           /* (M) */
    void *fc2_w;            /* (D, M) TI */
    float *fc2_b;           /* (D) */
};

struct cu_ctx {
    struct vs_vit_config cfg;
    enum vs_precision prec;
    int dev;
    char name[256];
    int max_batch;          /* largest n of forward() */
    int chunk;              /* images the arena holds (graph sizes 1..chunk) */
    int chunk_cur;          /* current chunk, halved on OOM */
    int fake_oom_above;     /* test hook, 0 = off */
    bool use_graphs, debug;
    bool fused_attn;        /* k_attn instead of GEMM + softmax + GEMM */
    bool prof;              /* VS_CUDA_PROFILE: per-op event timing, no graphs */
    cudaEvent_t *pev;       /* [n_pev] events recorded between ops */
    int *ptag, n_pev, used_pev;
    double prof_ms[PROF_TAGS];
    long long prof_images;
    int prof_calls;         /* the first call (module loading) is not counted */
    size_t attn_smem;       /* its dynamic shared memory */
    bool lost;
    char lost_msg[256];

    cudaDataType_t ti;      /* CUDA_R_32F / 16F / 16BF */
    size_t tsz;             /* sizeof(TI) */
    int np, K, Tp;          /* patches, C*P*P, T rounded up to 8 (attention dims) */

    cudaStream_t s_comp, s_copy;
    cudaEvent_t *ev;        /* [max_batch] one per chunk of a call */
    int n_ev;
    cublasHandle_t blas;
    cudaGraphExec_t *graph; /* [chunk + 1], by images per launch */
    unsigned char *seen;    /* [chunk + 1]: sizes run once eagerly already */

    void *dmem;             /* the one device allocation */
    size_t dmem_bytes;
    float *pix_h, *logits_h;/* pinned (max_batch, C*H*W), (max_batch, L) */
    const float **rows;     /* [max_batch]: forward()'s images as rows */

    /* weights */
    void *patch_w;          /* (D, K) TI */
    float *patch_b, *cls, *pos, *lnf_g, *lnf_b, *head_b;
    void *head_w;           /* (L, D) TI */
    struct cu_layer *layer;

    /* arena (sizes for `chunk` images, R = chunk*T rows) */
    float *d_pix;           /* (max_batch, C, H, W) fp32 — the whole batch */
    void *cols;             /* (chunk*Np, K) TI */
    float *x;               /* (R, D) residual stream */
    void *xn;               /* (R, D) TI: LN output / merged heads */
    void *y;                /* (R, max(3D, M)) TI GEMM output */
    void *qkv;              /* 3 x (chunk*H, Tp, dh) TI, rows past T zero */
    size_t qkv_bytes;
    float *S;               /* (chunk*H, Tp, Tp) fp32 scores */
    void *P;                /* (chunk*H, Tp, Tp) TI probabilities */
    void *g;                /* (R, M) TI activations */
    float *logits_d;        /* (chunk, L) */
    void *wsp;              /* cuBLAS workspace */
    size_t wsp_bytes;
};

static void dbg(const struct cu_ctx *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void dbg(const struct cu_ctx *c, const char *fmt, ...)
{
    if (!c->debug) return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "vs-cuda: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* Errors after which the context (or the device) cannot be trusted again. */
static bool cu_sticky(cudaError_t e)
{
    switch (e) {
    case cudaErrorIllegalAddress: case cudaErrorLaunchFailure:
    case cudaErrorHardwareStackError: case cudaErrorIllegalInstruction:
    case cudaErrorMisalignedAddress: case cudaErrorInvalidAddressSpace:
    case cudaErrorInvalidPc: case cudaErrorECCUncorrectable:
    case cudaErrorDevicesUnavailable: case cudaErrorLaunchTimeout:
    case cudaErrorNvlinkUncorrectable: case cudaErrorContextIsDestroyed:
    case cudaErrorDeviceUninitialized: case cudaErrorUnknown:
    case cudaErrorSystemNotReady: case cudaErrorCudartUnloading:
        return true;
    default:
        return false;
    }
}

/* Maps a CUDA error to a status: OOM -> VS_NOMEM, else VS_BACKEND (and a
 * sticky error marks the context lost).  Clears the thread's last error. */
static enum vs_status cu_fail(struct cu_ctx *c, cudaError_t e, const char *what,
                              struct vs_err *err)
{
    (void)cudaGetLastError();
    if (e == cudaErrorMemoryAllocation)
        return vs_err_set(err, VS_NOMEM, "CUDA out of memory in %s on %s", what,
                          c ? c->name : "the device");
    if (c && cu_sticky(e)) {
        snprintf(c->lost_msg, sizeof c->lost_msg, "%s: %s (%s)", what,
                 cudaGetErrorString(e), cudaGetErrorName(e));
        __atomic_store_n(&c->lost, true, __ATOMIC_RELEASE);  /* read by cuda_status */
        return vs_err_set(err, VS_BACKEND, "CUDA device lost in %s: %s (%s)", what,
                          cudaGetErrorString(e), cudaGetErrorName(e));
    }
    return vs_err_set(err, VS_BACKEND, "CUDA error in %s: %s (%s)", what,
                      cudaGetErrorString(e), cudaGetErrorName(e));
}

#define CU(call, what)                                                        \
    do {                                                                      \
        cudaError_t e_ = (call);                                              \
        if (e_ != cudaSuccess) return cu_fail(c, e_, what, err);              \
    } while (0)

static enum vs_status blas_fail(struct cu_ctx *c, cublasStatus_t s, const char *what,
                                struct vs_err *err)
{
    if (s == CUBLAS_STATUS_ALLOC_FAILED)
        return vs_err_set(err, VS_NOMEM, "cuBLAS out of memory in %s", what);
    if (s == CUBLAS_STATUS_EXECUTION_FAILED) {
        cudaError_t e = cudaGetLastError();
        if (e != cudaSuccess) return cu_fail(c, e, what, err);
    }
    return vs_err_set(err, VS_BACKEND, "cuBLAS error in %s: %s (%d)", what,
                      cublasGetStatusString(s), (int)s);
}

#define BLAS(call, what)                                                      \
    do {                                                                      \
        cublasStatus_t s_ = (call);                                           \
        if (s_ != CUBLAS_STATUS_SUCCESS) return blas_fail(c, s_, what, err);  \
    } while (0)

/* A kernel launch's configuration error shows up here (no sync). */
#define LAUNCHED(what) CU(cudaGetLastError(), what)

/* Profile mark: the time since the previous mark is charged to `tag`. */
#define PROF(tag)                                                             \
    do {                                                                      \
        if (c->prof && c->used_pev < c->n_pev) {                              \
            CU(cudaEventRecord(c->pev[c->used_pev], c->s_comp), "cudaEventRecord"); \
            c->ptag[c->used_pev++] = (tag);                                   \
        }                                                                     \
    } while (0)

static unsigned grid_for(long long count, int threads)
{
    long long b = (count + threads - 1) / threads;
    if (b < 1) b = 1;
    if (b > 65535LL * 16) b = 65535LL * 16;  /* grid-stride covers the rest */
    return (unsigned)b;
}

static const float k_one = 1.f, k_zero = 0.f;

/* Y (R x N, row-major, ld ldy, type yt) = X (R x K, ld ldx, TI) . W (N x K, TI)^T,
 * accumulated in fp32.  Column-major view: Y^T = op_T(W as K x N) . X^T. */
static enum vs_status gemm_nt(struct cu_ctx *c, int N, int R, int K, const void *W,
                              const void *X, int ldx, void *Y, cudaDataType_t yt, int ldy,
                              const char *what, struct vs_err *err)
{
    BLAS(cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, N, R, K, &k_one,
                      W, c->ti, K, X, c->ti, ldx, &k_zero, Y, yt, ldy,
                      CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT), what);
    return VS_OK;
}

/* The network for m images already laid out in c->cols; leaves the logits
 * (m, L) in c->logits_d.  Only enqueues work on s_comp (graph-capturable). */
template <class TI>
static enum vs_status enqueue_net(struct cu_ctx *c, int m, struct vs_err *err)
{
    const struct vs_vit_config *f = &c->cfg;
    const int T = f->tokens, D = f->hidden, H = f->heads, dh = D / H, M = f->mlp;
    const int L = f->labels, Tp = c->Tp;
    const long long R = (long long)m * T;
    const int ln_threads = D >= 256 ? 256 : ((D + 31) / 32) * 32;
    const size_t ln_smem = (size_t)(D + 33) * sizeof(float);
    const float sqrt_dh = sqrtf((float)dh);
    const int bh = m * H;                       /* attention batch */
    TI *xn = (TI *)c->xn, *g = (TI *)c->g, *qkv = (TI *)c->qkv, *P = (TI *)c->P;
    TI *y = (TI *)c->y;
    const cudaDataType_t ti = c->ti;
    cudaStream_t s = c->s_comp;
    const dim3 rows_d((D + 255) / 256, (unsigned)R), rows_3d((3 * D + 255) / 256, (unsigned)R);
    const dim3 rows_m((M + 255) / 256, (unsigned)R);
    enum vs_status st;

    PROF(PROF_IM2COL);
    /* patch embedding: y (m*Np, D) = cols (m*Np, K) . Wp^T */
    if ((st = gemm_nt(c, D, m * c->np, c->K, c->patch_w, c->cols, c->K, y, ti, D,
                      "patch embedding GEMM", err)) != VS_OK)
        return st;
    /* x (R, D) = [cls; patches + b] + pos */
    k_embed<TI><<<rows_d, 256, 0, s>>>(y, c->patch_b, c->cls, c->pos, c->x, T, D);
    LAUNCHED("embedding kernel");
    /* xn = LN1_0(x) */
    k_resid_ln<TI><<<(unsigned)R, ln_threads, ln_smem, s>>>(
        c->x, NULL, NULL, c->layer[0].ln1_g, c->layer[0].ln1_b, xn, D, f->ln_eps);
    LAUNCHED("layernorm kernel");
    PROF(PROF_EMBED);

    for (int l = 0; l < f->layers; l++) {
        const struct cu_layer *w = &c->layer[l];
        /* qkv: y (R, 3D) = xn . [Wq;Wk;Wv]^T, then per-head Q, K, V (TI) */
        if ((st = gemm_nt(c, 3 * D, (int)R, D, w->qkv_w, xn, D, y, ti, 3 * D,
                          "QKV GEMM", err)) != VS_OK)
            return st;
        PROF(PROF_QKV);
        bool fused = false;
        if constexpr (!std::is_same<TI, float>::value) {
            if (c->fused_attn) {
                fused = true;
                /* xn (R, D) TI = heads of softmax(Q K^T / sqrt(dh)) V, side by side */
                k_attn<TI><<<dim3((T + 63) / 64, bh), 128, c->attn_smem, s>>>(
                    y, w->qkv_b, xn, T, (T + 15) / 16 * 16, H, sqrt_dh);
                LAUNCHED("fused attention kernel");
            }
        }
        if (!fused) {
            /* Q, K, V: (bh, Tp, dh) each, rows past T zero */
            const size_t blk = (size_t)c->chunk * H * Tp * dh;
            k_qkv_split<TI><<<rows_3d, 256, 0, s>>>(y, w->qkv_b, qkv, blk, T, Tp, H, dh);
            LAUNCHED("qkv split kernel");
            const TI *Q = qkv, *Kt = qkv + blk, *V = qkv + 2 * blk;
            /* S[bh] (Tp x Tp, fp32) = Q[bh] (Tp x dh) . K[bh]^T; rows/cols past T
             * are products with zero rows */
            BLAS(cublasGemmStridedBatchedEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, Tp, Tp, dh,
                                            &k_one, Kt, ti, dh, (long long)Tp * dh,
                                            Q, ti, dh, (long long)Tp * dh, &k_zero,
                                            c->S, CUDA_R_32F, Tp, (long long)Tp * Tp, bh,
                                            CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                 "attention scores GEMM");
            /* P = softmax(S / sqrt(dh)) over the first T keys, 0 beyond;
             * rows = bh*Tp (rows past T are harmless and never read back) */
            const long long srows = (long long)bh * Tp;
            if (Tp <= 256)
                k_softmax<TI, 8><<<grid_for(srows * 32, 256), 256, 0, s>>>(c->S, P, srows, T, Tp, sqrt_dh);
            else
                k_softmax<TI, 0><<<grid_for(srows * 32, 256), 256, 0, s>>>(c->S, P, srows, T, Tp, sqrt_dh);
            LAUNCHED("softmax kernel");
            /* ctx[bh] (Tp x dh, TI) = P[bh] (Tp x Tp) . V[bh] (Tp x dh), into y */
            BLAS(cublasGemmStridedBatchedEx(c->blas, CUBLAS_OP_N, CUBLAS_OP_N, dh, Tp, Tp,
                                            &k_one, V, ti, dh, (long long)Tp * dh,
                                            P, ti, Tp, (long long)Tp * Tp, &k_zero,
                                            y, ti, dh, (long long)Tp * dh, bh,
                                            CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                 "attention context GEMM");
            /* xn (R, D) TI = heads side by side */
            k_merge<TI><<<rows_d, 256, 0, s>>>(y, xn, T, Tp, H, dh);
            LAUNCHED("head merge kernel");
        }
        PROF(PROF_ATTN);
        /* y (R, D) = ctx . Wo^T;  x = (y + bo) + x;  xn = LN2(x) */
        if ((st = gemm_nt(c, D, (int)R, D, w->o_w, xn, D, y, ti, D,
                          "attention output GEMM", err)) != VS_OK)
            return st;
        PROF(PROF_OUT);
        k_resid_ln<TI><<<(unsigned)R, ln_threads, ln_smem, s>>>(
            c->x, y, w->o_b, w->ln2_g, w->ln2_b, xn, D, f->ln_eps);
        LAUNCHED("residual+layernorm kernel");
        PROF(PROF_LN);
        /* y (R, M) = xn . W1^T;  g = act(y + b1) */
        if ((st = gemm_nt(c, M, (int)R, D, w->fc1_w, xn, D, y, ti, M,
                          "MLP fc1 GEMM", err)) != VS_OK)
            return st;
        PROF(PROF_FC1);
        k_bias_act<TI><<<rows_m, 256, 0, s>>>(y, w->fc1_b, g, M, (int)f->act);
        LAUNCHED("bias+activation kernel");
        PROF(PROF_ACT);
        /* y (R, D) = g . W2^T;  x = (y + b2) + x;  xn = next LN1 or final LN */
        if ((st = gemm_nt(c, D, (int)R, M, w->fc2_w, g, M, y, ti, D,
                          "MLP fc2 GEMM", err)) != VS_OK)
            return st;
        PROF(PROF_FC2);
        const bool last = l + 1 == f->layers;
        k_resid_ln<TI><<<(unsigned)R, ln_threads, ln_smem, s>>>(
            c->x, y, w->fc2_b, last ? c->lnf_g : c->layer[l + 1].ln1_g,
            last ? c->lnf_b : c->layer[l + 1].ln1_b, xn, D, f->ln_eps);
        LAUNCHED("residual+layernorm kernel");
        PROF(PROF_LN);
    }
    /* classifier on the CLS rows: logits (m, L) fp32 = xn[b*T] (ld T*D) . Wh^T + bh */
    if ((st = gemm_nt(c, L, m, D, c->head_w, xn, T * D, c->logits_d, CUDA_R_32F, L,
                      "classifier GEMM", err)) != VS_OK)
        return st;
    k_add_bias<<<grid_for((long long)m * L, 256), 256, 0, s>>>(c->logits_d, c->head_b, m, L);
    LAUNCHED("classifier bias kernel");
    PROF(PROF_HEAD);
    return VS_OK;
}

static enum vs_status enqueue_net_any(struct cu_ctx *c, int m, struct vs_err *err)
{
    switch (c->prec) {
    case VS_PRECISION_FP16: return enqueue_net<__half>(c, m, err);
    case VS_PRECISION_BF16: return enqueue_net<__nv_bfloat16>(c, m, err);
    default:                return enqueue_net<float>(c, m, err);
    }
}

static enum vs_status enqueue_im2col(struct cu_ctx *c, const float *pix, int m,
                                     struct vs_err *err)
{
    const struct vs_vit_config *f = &c->cfg;
    const dim3 grid((c->K + 255) / 256, (unsigned)(m * c->np));
    switch (c->prec) {
    case VS_PRECISION_FP16:
        k_im2col<__half><<<grid, 256, 0, c->s_comp>>>(pix, (__half *)c->cols, f->channels,
            f->image_h, f->image_w, f->patch, f->grid_w, c->np);
        break;
    case VS_PRECISION_BF16:
        k_im2col<__nv_bfloat16><<<grid, 256, 0, c->s_comp>>>(pix, (__nv_bfloat16 *)c->cols,
            f->channels, f->image_h, f->image_w, f->patch, f->grid_w, c->np);
        break;
    default:
        k_im2col<float><<<grid, 256, 0, c->s_comp>>>(pix, (float *)c->cols, f->channels,
            f->image_h, f->image_w, f->patch, f->grid_w, c->np);
        break;
    }
    LAUNCHED("im2col kernel");
    return VS_OK;
}

/* Runs the network for m images (cols already being filled on s_comp).
 * The first time a size is seen it runs eagerly (this loads the kernels
 * and lets cuBLAS pick its algorithms outside any capture); the second
 * time its graph is captured and from then on replayed. */
static enum vs_status run_net(struct cu_ctx *c, int m, struct vs_err *err)
{
    if (!c->use_graphs) return enqueue_net_any(c, m, err);
    if (!c->seen[m]) {
        c->seen[m] = 1;
        return enqueue_net_any(c, m, err);
    }
    if (!c->graph[m]) {
        cudaGraph_t gr = NULL;
        CU(cudaStreamBeginCapture(c->s_comp, cudaStreamCaptureModeThreadLocal),
           "cudaStreamBeginCapture");
        enum vs_status st = enqueue_net_any(c, m, err);
        cudaError_t e = cudaStreamEndCapture(c->s_comp, &gr);
        if (st != VS_OK || e != cudaSuccess) {
            if (gr) cudaGraphDestroy(gr);
            (void)cudaGetLastError();
            if (st == VS_NOMEM) return st;
            /* Capture refused (or a capture-only problem): launch directly. */
            dbg(c, "graph capture for %d images failed (%s; %s); graphs off",
                m, st != VS_OK && err ? err->msg : "-", cudaGetErrorString(e));
            c->use_graphs = false;
            return enqueue_net_any(c, m, err);
        }
        cudaGraphExec_t ex = NULL;
        e = cudaGraphInstantiate(&ex, gr, 0);
        cudaGraphDestroy(gr);
        if (e != cudaSuccess) return cu_fail(c, e, "cudaGraphInstantiate", err);
        c->graph[m] = ex;
        dbg(c, "captured graph for %d images", m);
    }
    CU(cudaGraphLaunch(c->graph[m], c->s_comp), "cudaGraphLaunch");
    return VS_OK;
}

/* One attempt at the whole batch with the current chunk size; image i's
 * pixels are at rows[i] (host, pageable). */
static enum vs_status run_batch(struct cu_ctx *c, const float *const *rows, int n,
                                float *logits, struct vs_err *err)
{
    const struct vs_vit_config *f = &c->cfg;
    const size_t chw = (size_t)f->channels * f->image_h * f->image_w;
    const int L = f->labels, chunk = c->chunk_cur;
    /* A batch of several chunks starts with a quarter chunk, so the GPU
     * starts computing after a short first copy (pipeline fill). */
    const int first = n > chunk ? VS_MAX(1, chunk / 4) : chunk;
    for (int off = 0, i = 0, m; off < n; off += m, i++) {
        m = VS_MIN(i == 0 ? first : chunk, n - off);
        if (c->fake_oom_above > 0 && m > c->fake_oom_above)
            return vs_err_set(err, VS_NOMEM, "simulated CUDA out of memory (%d images > "
                              "VS_CUDA_FAKE_OOM_ABOVE=%d)", m, c->fake_oom_above);
        /* pixels of this chunk: host -> pinned, image by image from where
         * the caller keeps them (no gather before forward) -> device (copy
         * stream).  The CPU copies chunk i+1 while the GPU runs chunk i. */
        for (int j = off; j < off + m; j++)
            memcpy(c->pix_h + (size_t)j * chw, rows[j], chw * sizeof(float));
        CU(cudaMemcpyAsync(c->d_pix + off * chw, c->pix_h + off * chw,
                           m * chw * sizeof(float), cudaMemcpyHostToDevice, c->s_copy),
           "pixel upload");
        CU(cudaEventRecord(c->ev[i], c->s_copy), "cudaEventRecord");
        CU(cudaStreamWaitEvent(c->s_comp, c->ev[i], 0), "cudaStreamWaitEvent");
        c->used_pev = 0;
        PROF(PROF_START);
        enum vs_status st = enqueue_im2col(c, c->d_pix + off * chw, m, err);
        if (st == VS_OK) st = run_net(c, m, err);
        if (st != VS_OK) return st;
        if (c->prof) {      /* serializes the chunks: timing only */
            CU(cudaStreamSynchronize(c->s_comp), "profile synchronize");
            for (int k = 1; k < c->used_pev; k++) {
                float ms = 0.f;
                CU(cudaEventElapsedTime(&ms, c->pev[k - 1], c->pev[k]), "cudaEventElapsedTime");
                c->prof_ms[c->ptag[k]] += ms;
            }
            if (c->prof_calls > 1) c->prof_images += m;
            else memset(c->prof_ms, 0, sizeof c->prof_ms);
        }
        CU(cudaMemcpyAsync(c->logits_h + (size_t)off * L, c->logits_d,
                           (size_t)m * L * sizeof(float), cudaMemcpyDeviceToHost,
                           c->s_comp), "logits download");
    }
    CU(cudaStreamSynchronize(c->s_comp), "forward (stream synchronize)");
    memcpy(logits, c->logits_h, (size_t)n * L * sizeof(float));
    return VS_OK;
}

/* What forward() and forward_rows() refuse before touching anything. */
static enum vs_status check_call(const struct cu_ctx *c, int n, const void *in,
                                 const float *logits, struct vs_err *err)
{
    if (c->lost)
        return vs_err_set(err, VS_BACKEND, "CUDA device %d (%s) was lost earlier (%s); "
                          "reload the model", c->dev, c->name, c->lost_msg);
    if (n < 1 || n > c->max_batch)
        return vs_err_set(err, VS_BAD_INPUT, "batch of %d images outside 1..%d (max_batch)",
                          n, c->max_batch);
    if (!in || !logits) return vs_err_set(err, VS_BAD_INPUT, "NULL pixels or logits");
    return VS_OK;
}

/* The one path of forward() and forward_rows(): the batch with image i at
 * rows[i], retried with half the chunk after an out-of-memory. */
static enum vs_status forward_images(struct cu_ctx *c, const float *const *rows, int n,
                                     float *logits, struct vs_err *err)
{
    for (int i = 0; i < n; i++)
        if (!rows[i]) return vs_err_set(err, VS_BAD_INPUT, "image %d of %d: NULL pixels", i, n);
    CU(cudaSetDevice(c->dev), "cudaSetDevice");
    c->prof_calls++;
    for (;;) {
        enum vs_status st = run_batch(c, rows, n, logits, err);
        if (st == VS_OK) return st;
        /* Nothing may still read the pinned buffers when we return or retry. */
        (void)cudaStreamSynchronize(c->s_copy);
        (void)cudaStreamSynchronize(c->s_comp);
        (void)cudaGetLastError();
        if (st == VS_NOMEM && c->chunk_cur > 1 && !c->lost) {
            c->chunk_cur /= 2;
            dbg(c, "out of memory (%s): retrying with %d images per launch",
                err ? err->msg : "", c->chunk_cur);
            continue;
        }
        return st;
    }
}

static enum vs_status cuda_forward(void *vctx, const float *pixels, int n,
                                   float *logits, struct vs_err *err)
{
    struct cu_ctx *c = (struct cu_ctx *)vctx;
    enum vs_status st = check_call(c, n, pixels, logits, err);
    if (st != VS_OK) return st;
    const size_t chw = (size_t)c->cfg.channels * c->cfg.image_h * c->cfg.image_w;
    for (int i = 0; i < n; i++) c->rows[i] = pixels + (size_t)i * chw;
    return forward_images(c, c->rows, n, logits, err);
}

static enum vs_status cuda_forward_rows(void *vctx, const float *const *rows, int n,
                                        float *logits, struct vs_err *err)
{
    struct cu_ctx *c = (struct cu_ctx *)vctx;
    enum vs_status st = check_call(c, n, rows, logits, err);
    if (st != VS_OK) return st;
    return forward_images(c, rows, n, logits, err);
}

/* ======================================================================
 * Create / destroy.
 * ====================================================================== */

static void cuda_destroy(void *vctx)
{
    struct cu_ctx *c = (struct cu_ctx *)vctx;
    if (!c) return;
    (void)cudaSetDevice(c->dev);
    if (c->s_comp) (void)cudaStreamSynchronize(c->s_comp);
    if (c->s_copy) (void)cudaStreamSynchronize(c->s_copy);
    if (c->graph) {
        for (int m = 0; m <= c->chunk; m++)
            if (c->graph[m]) cudaGraphExecDestroy(c->graph[m]);
        free(c->graph);
    }
    free(c->seen);
    if (c->ev) {
        for (int i = 0; i < c->n_ev; i++) cudaEventDestroy(c->ev[i]);
        free(c->ev);
    }
    if (c->prof && c->prof_images > 0) {
        double total = 0;
        for (int k = 1; k < PROF_TAGS; k++) total += c->prof_ms[k];
        fprintf(stderr, "vs-cuda profile, %s, %lld images, %.3f ms per image:\n",
                c->prec == VS_PRECISION_FP16 ? "fp16" : c->prec == VS_PRECISION_BF16 ? "bf16"
                : "fp32", c->prof_images, total / (double)c->prof_images);
        for (int k = 1; k < PROF_TAGS; k++)
            fprintf(stderr, "  %-22s %8.4f ms/image %5.1f%%\n", prof_name[k],
                    c->prof_ms[k] / (double)c->prof_images, total > 0 ? 100 * c->prof_ms[k] / total : 0.0);
    }
    if (c->pev) {
        for (int i = 0; i < c->n_pev; i++) cudaEventDestroy(c->pev[i]);
        free(c->pev);
    }
    free(c->ptag);
    if (c->blas) cublasDestroy(c->blas);
    if (c->s_comp) cudaStreamDestroy(c->s_comp);
    if (c->s_copy) cudaStreamDestroy(c->s_copy);
    if (c->dmem) cudaFree(c->dmem);
    if (c->pix_h) cudaFreeHost(c->pix_h);
    if (c->logits_h) cudaFreeHost(c->logits_h);
    free(c->layer);
    free(c->rows);
    (void)cudaGetLastError();
    free(c);
}

static const char *cuda_device_name(void *vctx)
{
    return ((struct cu_ctx *)vctx)->name;
}

/* Bump allocator over the one device allocation (256-byte aligned). */
struct cursor { char *base; size_t off; };
static void *carve(struct cursor *cv, size_t bytes)
{
    size_t at = (cv->off + 255) & ~(size_t)255;
    cv->off = at + bytes;
    return cv->base ? cv->base + at : NULL;
}

/* Lays out weights + arena; with base == NULL only measures. */
static size_t layout(struct cu_ctx *c, char *base)
{
    const struct vs_vit_config *f = &c->cfg;
    const size_t D = f->hidden, M = f->mlp, T = f->tokens, Lb = f->labels;
    const size_t ts = c->tsz, ch = c->chunk, R = ch * T, H = f->heads;
    struct cursor cv = { base, 0 };
    c->patch_w = carve(&cv, D * c->K * ts);
    c->patch_b = (float *)carve(&cv, D * 4);
    c->cls = (float *)carve(&cv, D * 4);
    c->pos = (float *)carve(&cv, T * D * 4);
    for (int l = 0; l < f->layers; l++) {
        struct cu_layer *w = &c->layer[l];
        w->qkv_w = carve(&cv, 3 * D * D * ts);
        w->qkv_b = (float *)carve(&cv, 3 * D * 4);
        w->o_w = carve(&cv, D * D * ts);
        w->o_b = (float *)carve(&cv, D * 4);
        w->ln1_g = (float *)carve(&cv, D * 4);
        w->ln1_b = (float *)carve(&cv, D * 4);
        w->ln2_g = (float *)carve(&cv, D * 4);
        w->ln2_b = (float *)carve(&cv, D * 4);
        w->fc1_w = carve(&cv, M * D * ts);
        w->fc1_b = (float *)carve(&cv, M * 4);
        w->fc2_w = carve(&cv, D * M * ts);
        w->fc2_b = (float *)carve(&cv, D * 4);
    }
    c->lnf_g = (float *)carve(&cv, D * 4);
    c->lnf_b = (float *)carve(&cv, D * 4);
    c->head_w = carve(&cv, Lb * D * ts);
    c->head_b = (float *)carve(&cv, Lb * 4);
    c->d_pix = (float *)carve(&cv, (size_t)c->max_batch * f->channels * f->image_h *
                                   f->image_w * 4);
    c->cols = carve(&cv, ch * c->np * c->K * ts);
    c->x = (float *)carve(&cv, R * D * 4);
    c->xn = carve(&cv, R * D * ts);
    /* qkv, ctx (ch*H, Tp, dh), fc1, fc2, patches */
    c->y = carve(&cv, VS_MAX(R * VS_MAX(3 * D, M), ch * c->Tp * D) * ts);
    const size_t unfused = c->fused_attn ? 0 : 1;   /* buffers only the unfused path uses */
    c->qkv_bytes = unfused * 3 * ch * c->Tp * D * ts;
    c->qkv = carve(&cv, c->qkv_bytes);
    c->S = (float *)carve(&cv, unfused * ch * H * c->Tp * c->Tp * 4);
    c->P = carve(&cv, unfused * ch * H * c->Tp * c->Tp * ts);
    c->g = carve(&cv, R * M * ts);
    c->logits_d = (float *)carve(&cv, ch * Lb * 4);
    c->wsp_bytes = 32u << 20;
    c->wsp = carve(&cv, c->wsp_bytes);
    return cv.off + 256;
}

/* Uploads count fp32 values (or `fill` when src is NULL) to dst (fp32). */
static enum vs_status up_f32(struct cu_ctx *c, float *dst, const float *src, size_t count,
                             float fill, const char *what, struct vs_err *err)
{
    if (src) {
        CU(cudaMemcpy(dst, src, count * 4, cudaMemcpyHostToDevice), what);
        return VS_OK;
    }
    float *tmp = (float *)malloc(count * 4);
    if (!tmp) return vs_err_set(err, VS_NOMEM, "out of host memory for %s", what);
    for (size_t i = 0; i < count; i++) tmp[i] = fill;
    cudaError_t e = cudaMemcpy(dst, tmp, count * 4, cudaMemcpyHostToDevice);
    free(tmp);
    if (e != cudaSuccess) return cu_fail(c, e, what, err);
    return VS_OK;
}

/* Uploads a GEMM weight (count fp32 values) into dst in TI, through the
 * fp32 staging buffer `stage` (count floats at least). */
static enum vs_status up_w(struct cu_ctx *c, void *dst, const float *src, size_t count,
                           float *stage, const char *what, struct vs_err *err)
{
    if (!src) return vs_err_set(err, VS_BAD_INPUT, "weight %s is missing", what);
    if (c->prec == VS_PRECISION_FP32) {
        CU(cudaMemcpy(dst, src, count * 4, cudaMemcpyHostToDevice), what);
        return VS_OK;
    }
    CU(cudaMemcpy(stage, src, count * 4, cudaMemcpyHostToDevice), what);
    if (c->prec == VS_PRECISION_FP16)
        k_convert<__half><<<grid_for((long long)count, 256), 256>>>(stage, (__half *)dst,
                                                                   (long long)count);
    else
        k_convert<__nv_bfloat16><<<grid_for((long long)count, 256), 256>>>(
            stage, (__nv_bfloat16 *)dst, (long long)count);
    LAUNCHED("weight conversion kernel");
    CU(cudaDeviceSynchronize(), what);
    return VS_OK;
}

static enum vs_status upload(struct cu_ctx *c, const struct vs_vit_weights *w,
                             struct vs_err *err)
{
    const struct vs_vit_config *f = &c->cfg;
    const size_t D = f->hidden, M = f->mlp, T = f->tokens, Lb = f->labels;
    size_t big = VS_MAX(VS_MAX(D * M, D * (size_t)c->K), Lb * D);
    float *stage = NULL;
    enum vs_status st = VS_OK;
    if (c->prec != VS_PRECISION_FP32) {
        cudaError_t e = cudaMalloc((void **)&stage, big * 4);
        if (e != cudaSuccess) return cu_fail(c, e, "cudaMalloc (weight staging)", err);
    }
#define TRY(x) do { if ((st = (x)) != VS_OK) goto out; } while (0)
    TRY(up_w(c, c->patch_w, w->patch_w, D * c->K, stage, "patch_embeddings.weight", err));
    TRY(up_f32(c, c->patch_b, w->patch_b, D, 0.f, "patch_embeddings.bias", err));
    TRY(up_f32(c, c->cls, w->cls, D, 0.f, "cls_token", err));
    TRY(up_f32(c, c->pos, w->pos, T * D, 0.f, "position_embeddings", err));
    for (int l = 0; l < f->layers; l++) {
        const struct vs_vit_layer *s = &w->layer[l];
        struct cu_layer *d = &c->layer[l];
        const size_t dd = D * D * c->tsz;
        TRY(up_w(c, d->qkv_w, s->q_w, D * D, stage, "attention.query.weight", err));
        TRY(up_w(c, (char *)d->qkv_w + dd, s->k_w, D * D, stage, "attention.key.weight", err));
        TRY(up_w(c, (char *)d->qkv_w + 2 * dd, s->v_w, D * D, stage, "attention.value.weight", err));
        TRY(up_f32(c, d->qkv_b, s->q_b, D, 0.f, "attention.query.bias", err));
        TRY(up_f32(c, d->qkv_b + D, s->k_b, D, 0.f, "attention.key.bias", err));
        TRY(up_f32(c, d->qkv_b + 2 * D, s->v_b, D, 0.f, "attention.value.bias", err));
        TRY(up_w(c, d->o_w, s->o_w, D * D, stage, "attention.output.dense.weight", err));
        TRY(up_f32(c, d->o_b, s->o_b, D, 0.f, "attention.output.dense.bias", err));
        TRY(up_f32(c, d->ln1_g, s->ln1_g, D, 1.f, "layernorm_before.weight", err));
        TRY(up_f32(c, d->ln1_b, s->ln1_b, D, 0.f, "layernorm_before.bias", err));
        TRY(up_f32(c, d->ln2_g, s->ln2_g, D, 1.f, "layernorm_after.weight", err));
        TRY(up_f32(c, d->ln2_b, s->ln2_b, D, 0.f, "layernorm_after.bias", err));
        TRY(up_w(c, d->fc1_w, s->fc1_w, M * D, stage, "intermediate.dense.weight", err));
        TRY(up_f32(c, d->fc1_b, s->fc1_b, M, 0.f, "intermediate.dense.bias", err));
        TRY(up_w(c, d->fc2_w, s->fc2_w, D * M, stage, "output.dense.weight", err));
        TRY(up_f32(c, d->fc2_b, s->fc2_b, D, 0.f, "output.dense.bias", err));
    }
    TRY(up_f32(c, c->lnf_g, w->lnf_g, D, 1.f, "vit.layernorm.weight", err));
    TRY(up_f32(c, c->lnf_b, w->lnf_b, D, 0.f, "vit.layernorm.bias", err));
    TRY(up_w(c, c->head_w, w->head_w, Lb * D, stage, "classifier.weight", err));
    TRY(up_f32(c, c->head_b, w->head_b, Lb, 0.f, "classifier.bias", err));
#undef TRY
out:
    if (stage) cudaFree(stage);
    return st;
}

static int env_int(const char *name, int dflt)
{
    const char *s = getenv(name);
    if (!s || !*s) return dflt;
    char *end;
    long v = strtol(s, &end, 10);
    if (*end || v < 0 || v > 1 << 20) return dflt;
    return (int)v;
}

static enum vs_status check_config(const struct vs_vit_config *f, struct vs_err *err)
{
    if (f->channels < 1 || f->patch < 1 || f->hidden < 1 || f->heads < 1 ||
        f->layers < 1 || f->labels < 1 || f->mlp < 1 || f->grid_h < 1 || f->grid_w < 1)
        return vs_err_set(err, VS_BAD_INPUT, "CUDA backend: non-positive model dimension");
    if (f->hidden % f->heads)
        return vs_err_set(err, VS_BAD_INPUT, "CUDA backend: hidden %d not divisible by "
                          "%d heads", f->hidden, f->heads);
    if (f->grid_h != f->image_h / f->patch || f->grid_w != f->image_w / f->patch ||
        f->tokens != f->grid_h * f->grid_w + 1)
        return vs_err_set(err, VS_BAD_INPUT, "CUDA backend: inconsistent grid %dx%d / "
                          "tokens %d for image %dx%d patch %d", f->grid_h, f->grid_w,
                          f->tokens, f->image_h, f->image_w, f->patch);
    if (f->hidden > 8192)
        return vs_err_set(err, VS_UNSUPPORTED, "CUDA backend: hidden size %d over 8192 "
                          "(LayerNorm keeps a row in shared memory)", f->hidden);
    return VS_OK;
}

static enum vs_status cuda_create(const struct vs_vit_config *cfg,
                                  const struct vs_vit_weights *w,
                                  const struct vs_backend_opts *opts,
                                  void **out, struct vs_err *err)
{
    enum vs_status st = check_config(cfg, err);
    if (st != VS_OK) return st;
    if (opts->precision == VS_PRECISION_INT8)
        return vs_err_set(err, VS_UNSUPPORTED, "precision int8 is CPU-only; the CUDA "
                          "backend runs fp32, fp16 and bf16");
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
        (void)cudaGetLastError();
        return vs_err_set(err, VS_BACKEND, "no usable CUDA device (%s)",
                          e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
    }
    if (opts->device_index < 0 || opts->device_index >= count)
        return vs_err_set(err, VS_NOT_FOUND, "CUDA device %d does not exist (%d device%s)",
                          opts->device_index, count, count == 1 ? "" : "s");

    struct cu_ctx *c = (struct cu_ctx *)calloc(1, sizeof *c);
    if (!c) return vs_err_set(err, VS_NOMEM, "out of host memory");
    c->cfg = *cfg;
    c->prec = opts->precision;
    c->dev = opts->device_index;
    c->max_batch = opts->max_batch > 0 ? opts->max_batch : 32;
    c->chunk = VS_MIN(c->max_batch, VS_MAX(1, env_int("VS_CUDA_CHUNK", 16)));
    /* row kernels put n*T rows on gridDim.y (<= 65535) */
    c->chunk = VS_MAX(1, VS_MIN(c->chunk, 65535 / cfg->tokens));
    c->chunk_cur = c->chunk;
    c->use_graphs = env_int("VS_CUDA_GRAPHS", 1) != 0;
    c->debug = env_int("VS_CUDA_DEBUG", 0) != 0;
    c->prof = env_int("VS_CUDA_PROFILE", 0) != 0;
    if (c->prof) c->use_graphs = false;
    c->fake_oom_above = env_int("VS_CUDA_FAKE_OOM_ABOVE", 0);
    c->np = cfg->grid_h * cfg->grid_w;
    c->K = cfg->channels * cfg->patch * cfg->patch;
    c->Tp = (cfg->tokens + 7) / 8 * 8;
    c->ti = c->prec == VS_PRECISION_FP16 ? CUDA_R_16F
          : c->prec == VS_PRECISION_BF16 ? CUDA_R_16BF : CUDA_R_32F;
    c->tsz = c->prec == VS_PRECISION_FP32 ? 4 : 2;
    snprintf(c->name, sizeof c->name, "CUDA device %d", c->dev);

    cudaDeviceProp prop;
    size_t need, free_b = 0, total_b = 0;
    if ((e = cudaSetDevice(c->dev)) != cudaSuccess) { st = cu_fail(c, e, "cudaSetDevice", err); goto fail; }
    if ((e = cudaGetDeviceProperties(&prop, c->dev)) != cudaSuccess) {
        st = cu_fail(c, e, "cudaGetDeviceProperties", err);
        goto fail;
    }
    snprintf(c->name, sizeof c->name, "%s", prop.name);
    if (prop.major < 8) {
        st = vs_err_set(err, VS_UNSUPPORTED, "%s has compute capability %d.%d; the CUDA "
                        "backend needs 8.0 or newer", prop.name, prop.major, prop.minor);
        goto fail;
    }
    c->layer = (struct cu_layer *)calloc((size_t)cfg->layers, sizeof *c->layer);
    c->graph = (cudaGraphExec_t *)calloc((size_t)c->chunk + 1, sizeof *c->graph);
    c->seen = (unsigned char *)calloc((size_t)c->chunk + 1, 1);
    c->ev = (cudaEvent_t *)calloc((size_t)c->max_batch, sizeof *c->ev);
    c->rows = (const float **)calloc((size_t)c->max_batch, sizeof *c->rows);
    if (!c->layer || !c->graph || !c->seen || !c->ev || !c->rows) { st = vs_err_set(err, VS_NOMEM, "out of host memory"); goto fail; }

    /* fused attention: fp16/bf16, head_dim 64, T <= 256, enough shared memory */
    c->attn_smem = attn_smem_bytes(cfg->tokens);
    c->fused_attn = c->prec != VS_PRECISION_FP32 && cfg->hidden / cfg->heads == ATTN_DH &&
                    cfg->tokens <= 256 && c->attn_smem <= prop.sharedMemPerBlockOptin &&
                    env_int("VS_CUDA_FUSED_ATTN", 0) != 0;
    if (c->fused_attn) {
        e = c->prec == VS_PRECISION_FP16
            ? cudaFuncSetAttribute(k_attn<__half>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                   (int)c->attn_smem)
            : cudaFuncSetAttribute(k_attn<__nv_bfloat16>,
                                   cudaFuncAttributeMaxDynamicSharedMemorySize, (int)c->attn_smem);
        if (e != cudaSuccess) {
            dbg(c, "fused attention off: cudaFuncSetAttribute(%zu bytes): %s", c->attn_smem,
                cudaGetErrorString(e));
            (void)cudaGetLastError();
            c->fused_attn = false;
        }
    }
    need = layout(c, NULL);
    if ((e = cudaMemGetInfo(&free_b, &total_b)) != cudaSuccess) {
        st = cu_fail(c, e, "cudaMemGetInfo", err);
        goto fail;
    }
    e = cudaMalloc(&c->dmem, need);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        c->dmem = NULL;
        st = vs_err_set(err, e == cudaErrorMemoryAllocation ? VS_NOMEM : VS_BACKEND,
                        "CUDA backend on %s needs %.1f MiB (weights + activations for "
                        "%d images), %.1f MiB free of %.1f MiB: %s", c->name,
                        need / 1048576.0, c->chunk, free_b / 1048576.0,
                        total_b / 1048576.0, cudaGetErrorString(e));
        goto fail;
    }
    c->dmem_bytes = need;
    layout(c, (char *)c->dmem);
    dbg(c, "%s: %.1f MiB device memory (%d images per launch, max_batch %d, %s attention), %s",
        c->name, need / 1048576.0, c->chunk, c->max_batch, c->fused_attn ? "fused" : "unfused", c->prec == VS_PRECISION_FP16 ? "fp16" : c->prec == VS_PRECISION_BF16 ? "bf16" : "fp32");

#define CK(call, what) do { if ((e = (call)) != cudaSuccess) { st = cu_fail(c, e, what, err); goto fail; } } while (0)
    CK(cudaStreamCreateWithFlags(&c->s_comp, cudaStreamNonBlocking), "cudaStreamCreate");
    CK(cudaStreamCreateWithFlags(&c->s_copy, cudaStreamNonBlocking), "cudaStreamCreate");
    for (; c->n_ev < c->max_batch; c->n_ev++)
        CK(cudaEventCreateWithFlags(&c->ev[c->n_ev], cudaEventDisableTiming), "cudaEventCreate");
    if (c->prof) {
        const int want = 9 * cfg->layers + 8;
        c->pev = (cudaEvent_t *)calloc((size_t)want, sizeof *c->pev);
        c->ptag = (int *)calloc((size_t)want, sizeof *c->ptag);
        if (!c->pev || !c->ptag) { st = vs_err_set(err, VS_NOMEM, "out of host memory"); goto fail; }
        for (; c->n_pev < want; c->n_pev++)
            CK(cudaEventCreate(&c->pev[c->n_pev]), "cudaEventCreate");
    }
    {
        const size_t chw = (size_t)cfg->channels * cfg->image_h * cfg->image_w;
        e = cudaHostAlloc((void **)&c->pix_h, (size_t)c->max_batch * chw * 4, cudaHostAllocDefault);
        if (e == cudaSuccess)
            e = cudaHostAlloc((void **)&c->logits_h, (size_t)c->max_batch * cfg->labels * 4,
                              cudaHostAllocDefault);
        if (e != cudaSuccess) {
            (void)cudaGetLastError();
            st = vs_err_set(err, VS_NOMEM, "cudaHostAlloc of %.1f MiB pinned staging failed: %s",
                            (double)c->max_batch * (chw + cfg->labels) * 4 / 1048576.0,
                            cudaGetErrorString(e));
            goto fail;
        }
    }
#undef CK
    {
        cublasStatus_t bs = cublasCreate(&c->blas);
        if (bs == CUBLAS_STATUS_SUCCESS) bs = cublasSetStream(c->blas, c->s_comp);
        /* Default math: no TF32 for fp32 GEMMs (parity); fp16/bf16 operands
         * still use tensor cores with fp32 accumulation. */
        if (bs == CUBLAS_STATUS_SUCCESS) bs = cublasSetMathMode(c->blas, CUBLAS_DEFAULT_MATH);
        if (bs == CUBLAS_STATUS_SUCCESS) bs = cublasSetWorkspace(c->blas, c->wsp, c->wsp_bytes);
        if (bs != CUBLAS_STATUS_SUCCESS) {
            st = blas_fail(c, bs, "cuBLAS setup", err);
            goto fail;
        }
    }
    if (c->qkv_bytes) {     /* the padding rows of Q, K, V stay zero forever */
        e = cudaMemset(c->qkv, 0, c->qkv_bytes);
        if (e != cudaSuccess) { st = cu_fail(c, e, "cudaMemset", err); goto fail; }
    }
    if ((st = upload(c, w, err)) != VS_OK) goto fail;
    *out = c;
    return VS_OK;
fail:
    cuda_destroy(c);
    return st;
}

/* The plugin's two entry points (cuda_plugin.c dlsym()s them). */
extern "C" __attribute__((visibility("default"))) int vs_cuda_plugin_device_count(void)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return n;
}

/* Called from HTTP threads while the batcher thread runs forward(): reads
 * the lost flag atomically and asks the runtime for memory (thread-safe). */
static void cuda_status(void *vctx, struct vs_device_status *out, char *pci_bus_id)
{
    struct cu_ctx *c = (struct cu_ctx *)vctx;
    out->is_gpu = true;
    out->lost = __atomic_load_n(&c->lost, __ATOMIC_ACQUIRE);
    if (out->lost) snprintf(out->why, sizeof out->why, "%s", c->lost_msg);
    if (!pci_bus_id) return;   /* the per-request check: the flag only */
    pci_bus_id[0] = '\0';
    if (cudaSetDevice(c->dev) == cudaSuccess) {
        size_t free_b = 0, total_b = 0;
        if (cudaMemGetInfo(&free_b, &total_b) == cudaSuccess) {
            out->mem_total_bytes = total_b;
            out->mem_used_bytes = total_b - free_b;
        }
        if (cudaDeviceGetPCIBusId(pci_bus_id, 32, c->dev) != cudaSuccess) pci_bus_id[0] = '\0';
    }
    (void)cudaGetLastError();
}

/* what cuda_plugin.c checks before it uses the table below */
extern "C" __attribute__((visibility("default")))
const unsigned vs_cuda_plugin_abi = VS_BACKEND_ABI;

extern "C" __attribute__((visibility("default")))
const struct vs_backend_ops vs_cuda_plugin_backend = {
    "cuda",
    cuda_create,
    cuda_forward,
    cuda_forward_rows,
    cuda_device_name,
    cuda_destroy,
    cuda_status,
    NULL,               /* settle: nothing runs in the background */
};
