/* cpu_kernels.h: the row-wise loops of the CPU backend that are not GEMMs —
 * LayerNorm, softmax, per-row int8 quantization.  Private to src/model/.
 *
 * Each kernel works on one row (a token, or one row of an attention matrix)
 * so that backend_cpu.c can spread rows over its OpenMP threads.  Each has a
 * portable version and an AVX2+FMA version picked once at start-up
 * (vs_model_cpu_kernels); both compute in fp32 with the same formulas, so the
 * results differ only by float rounding order.  Pure functions: any thread
 * may call them, on disjoint rows, at the same time.
 */
#ifndef VS_MODEL_CPU_KERNELS_H
#define VS_MODEL_CPU_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/* ---- own fp32 GEMM (AVX2+FMA; NULL entry in the generic table) ---------
 *
 * C (M, N) = (accumulate ? C : 0) + act(A (M, K) . W^T + bias): A
 * row-major with leading dimension lda, W (N, K) row-major with leading
 * dimension ldw (a Linear's weight, used in place), bias (N) or NULL, C with
 * leading dimension ldc; act one of VS_CPU_ACT_* (alpha for swish).  With
 * accumulate and no activation, C += A W^T + b: the residual.
 * Every C element is a fixed sequence of float operations that depends on
 * (K, its column) only: not on M, the row, the thread count or the batch. */
enum vs_cpu_act {
    VS_CPU_ACT_NONE = 0,
    VS_CPU_ACT_GELU_ERF,    /* 0.5 x (1 + erf(x / sqrt 2)) */
    VS_CPU_ACT_GELU_TANH,   /* 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) */
    VS_CPU_ACT_RELU,        /* max(x, 0) */
    VS_CPU_ACT_SWISH,       /* x / (1 + exp(-alpha x)) */
};

struct vs_cpu_gemm {
    int64_t M, N, K;
    const float *A;
    int64_t lda;
    const float *W;
    int64_t ldw;
    const float *bias;      /* (N) or NULL */
    float *C;
    int64_t ldc;
    int act;                /* enum vs_cpu_act */
    float alpha;
    int accumulate;
    /* Optional: W already packed by vs_cpu_kernels.sgemm_pack (W is then
     * not read at all), or NULL: W is packed piece by piece into ws on
     * every call.  Both give bit-identical C. */
    const float *Wp;
    /* W stored (K, N) instead, leading dimension ldw >= N: C = A W (the
     * V of attention, read in place).  Same bits as the (N, K) copy. */
    int w_kn;
};

/* Floats of workspace the GEMM needs per thread (packed W panel + a column
 * strip of partial sums). */
size_t vs_model_cpu_gemm_ws_floats(void);

/* Floats of a persistent packed copy of an (N, K) weight: N rounded up to
 * the 16-column panel, times K. */
size_t vs_model_cpu_gemm_packed_floats(int64_t N, int64_t K);

/* Packs W (N, K), leading dimension ldw, into Wp
 * (vs_model_cpu_gemm_packed_floats(N, K) floats, 32-byte aligned), the
 * layout vs_cpu_gemm.Wp expects.  Single-threaded; touches nothing else. */
typedef void (*vs_cpu_sgemm_pack_fn)(const float *W, int64_t ldw, int64_t N, int64_t K,
                                     float *Wp);

/* Runs g on `threads` OpenMP threads (called outside a parallel region;
 * with threads = 1 on the calling thread, inside one too);
 * ws: threads * vs_model_cpu_gemm_ws_floats() floats, 32-byte aligned.
 * Requires AVX2+FMA (vs_model_cpu_kernels()->sgemm != NULL). */
typedef void (*vs_cpu_sgemm_fn)(const struct vs_cpu_gemm *g, float *ws, int threads);

/* ---- own int8 GEMM (AVX2 without VNNI; NULL entry in the generic table)
 *
 * C (M, N) = the exact sums over k of A[m][k] * W[n][k] as s32, converted to
 * float (round to nearest): A u8 (M, K) row-major, leading dimension lda;
 * W s8 (N, K) packed by igemm_pack; C leading dimension ldc.  The weights
 * must satisfy |w| <= 63: u8 * s8 products are summed in pairs by
 * vpmaddubsw with 16-bit saturation, and 2 * 255 * 63 < 32767 keeps every
 * pair exact (the int8 path quantizes to 63 on CPUs without VNNI).  K a
 * multiple of 4.  The same results as oneDNN's u8 x s8 -> f32 matmul (both
 * exact integer sums, then one rounding). */
struct vs_cpu_igemm {
    int64_t M, N, K;
    const uint8_t *A;
    int64_t lda;
    const int8_t *Wp;       /* igemm_pack's layout */
    float *C;
    int64_t ldc;
};

/* Bytes of the packed copy of an (N, K) s8 weight. */
size_t vs_model_cpu_igemm_packed_bytes(int64_t N, int64_t K);

/* Packs W (N, K) s8, leading dimension ldw, into Wp (64-byte aligned,
 * vs_model_cpu_igemm_packed_bytes(N, K) bytes).  Single-threaded. */
typedef void (*vs_cpu_igemm_pack_fn)(const int8_t *W, int64_t ldw, int64_t N, int64_t K,
                                     int8_t *Wp);

/* Runs g on `threads` OpenMP threads (called outside a parallel region). */
typedef void (*vs_cpu_igemm_fn)(const struct vs_cpu_igemm *g, int threads);

struct vs_cpu_kernels {
    /* y[d] = (x[d] - mean) / sqrt(var + eps) * g[d] + b[d]; var biased.
     * x, y: (dim); g, b: (dim). y may equal x. */
    void (*layernorm)(float *y, const float *x, const float *g,
                      const float *b, int dim, float eps);
    /* In place: x = exp(s (x - max x)) / sum exp(s (x - max x)), s = scale > 0
     * (attention's 1/sqrt(dh); 1: the plain softmax, whose bits s leaves
     * unchanged); x: (len). */
    void (*softmax)(float *x, int len, float scale);
    /* Symmetric per-row quantization: scale = max|x| / qmax (1 when the row
     * is all zeros), q[d] = round-to-nearest-even(x[d] / scale), clamped to
     * [-qmax, qmax].  Returns scale.  x: (dim), q: (dim). */
    float (*quantize_row)(int8_t *q, const float *x, int dim, int qmax);
    /* Asymmetric per-row quantization to u8: the range [min(x,0), max(x,0)]
     * maps onto 0..255, scale = range / 255 (1 for an all-zero row),
     * zero point zp = round(-min / scale), q = clamp(round(x / scale) + zp,
     * 0, 255), so x ~ (q - zp) * scale.  Returns scale, *zp set.
     * x: (dim), q: (dim). */
    float (*quantize_u8)(uint8_t *q, const float *x, int dim, int *zp);
    /* Dequantization of one row of an int8 GEMM (acc = the exact integer
     * sums, as floats): v[o] = (acc[o] * sw[o] - zp * cs[o]) * sa + b[o]
     * (sw[o] the column's weight scale, cs[o] = sw[o] x sum of its int8
     * weights: the zero point's contribution); y[o] = v[o], or y[o] += v[o]
     * when accumulate.  y may equal acc.  acc, y, sw, cs, b: (dim). */
    void (*dequant_row)(float *y, const float *acc, float sa, float zp,
                        const float *sw, const float *cs, const float *b, int dim,
                        int accumulate);
    /* the own GEMM above; NULL in the generic table (use oneDNN there) */
    vs_cpu_sgemm_fn sgemm;
    vs_cpu_sgemm_pack_fn sgemm_pack;   /* its weight packing (NULL with sgemm) */
    /* the own int8 GEMM above; NULL in the generic table */
    vs_cpu_igemm_fn igemm;
    vs_cpu_igemm_pack_fn igemm_pack;
    const char *isa;    /* the row kernels': "avx2" or "generic" */
    /* the GEMM's: "avx2" (6x16 kernel), "avx512" (12x32), "x16 on avx2"
     * (the 12x32 kernel's code on pairs of AVX2 registers: tests); NULL
     * without sgemm */
    const char *gemm_isa;
};

/* The kernels for this CPU (AVX2+FMA when __builtin_cpu_supports says so;
 * with AVX-512F too, the GEMM is the 12x32 AVX-512 one). */
const struct vs_cpu_kernels *vs_model_cpu_kernels(void);

/* The portable versions, whatever the CPU (for tests of the dispatch). */
const struct vs_cpu_kernels *vs_model_cpu_kernels_generic(void);

/* The AVX2 table whatever AVX-512 the CPU has (VS_CPU_GEMM=own-avx2,
 * tests), and the same with the 12x32 GEMM's code run on pairs of AVX2
 * registers (tests: it checks that code on machines without AVX-512);
 * NULL without AVX2+FMA. */
const struct vs_cpu_kernels *vs_model_cpu_kernels_avx2(void);
const struct vs_cpu_kernels *vs_model_cpu_kernels_x16emu(void);

#endif
