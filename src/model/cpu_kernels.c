/* cpu_kernels.c: LayerNorm, softmax and int8 row quantization for the CPU
 * backend, in a portable version and an AVX2+FMA version; and, AVX2+FMA
 * only, our own fp32 GEMM for the Linears (at the end of the file), with
 * bias, activation and residual fused into its epilogue: a 6x16 AVX2
 * kernel, and a 12x32 one for AVX-512 machines (cpu_gemm_x16.inc), both
 * driven by the same team loop (cpu_gemm_team.inc).
 *
 * The library is compiled with -O2 and no -march, which leaves these float
 * reductions scalar (GCC may not reorder float sums) and has no vector exp,
 * so the AVX2 versions are written with intrinsics inside functions carrying
 * __attribute__((target("avx2,fma"))); vs_model_cpu_kernels() picks them
 * when __builtin_cpu_supports says the CPU has both.  AVX2 is the common
 * ground of the AVX-512 Xeons the project targets and of AMD Zen machines;
 * these loops are ~2% of a forward pass, so no AVX-512 variant is kept
 * (the GEMM's is the exception).
 *
 * Invariants: every kernel reads and writes exactly its row; no state; any
 * thread may run any kernel on disjoint rows concurrently.  The GEMM is
 * called from one thread outside any parallel region and runs its own
 * OpenMP team.
 */
#include "cpu_kernels.h"

#include <math.h>
#include <stdbool.h>
#include <string.h>
#include <immintrin.h>
#include <omp.h>

/* ---- portable versions ------------------------------------------------ */

static void ln_generic(float *y, const float *x, const float *g,
                       const float *b, int dim, float eps)
{
    /* two passes (mean, then centred squares) as torch does: no
     * cancellation from E[x^2] - E[x]^2 */
    float sum = 0.0f;
    for (int d = 0; d < dim; d++) sum += x[d];
    const float mean = sum / (float)dim;
    float sq = 0.0f;
    for (int d = 0; d < dim; d++) {
        const float t = x[d] - mean;
        sq += t * t;
    }
    const float rstd = 1.0f / sqrtf(sq / (float)dim + eps);
    for (int d = 0; d < dim; d++) y[d] = (x[d] - mean) * rstd * g[d] + b[d];
}

static void softmax_generic(float *x, int len, float scale)
{
    float mx = x[0];
    for (int i = 1; i < len; i++) mx = x[i] > mx ? x[i] : mx;
    float sum = 0.0f;
    for (int i = 0; i < len; i++) {
        x[i] = expf((x[i] - mx) * scale);
        sum += x[i];
    }
    const float inv = 1.0f / sum;   /* sum >= 1: the max term is exp(0) */
    for (int i = 0; i < len; i++) x[i] *= inv;
}

static float quant_generic(int8_t *q, const float *x, int dim, int qmax)
{
    float amax = 0.0f;
    for (int d = 0; d < dim; d++) {
        const float a = fabsf(x[d]);
        amax = a > amax ? a : amax;
    }
    if (!(amax > 0.0f) || !isfinite(amax)) {
        /* an all-zero row (or a broken one: quantize NaN/Inf to 0, the
         * fp32 path would give NaN anyway) */
        for (int d = 0; d < dim; d++) q[d] = 0;
        return 1.0f;
    }
    const float fq = (float)qmax;
    const float inv = fq / amax;
    for (int d = 0; d < dim; d++) {
        float v = nearbyintf(x[d] * inv);   /* ties to even, like cvtps2dq */
        v = v > fq ? fq : (v < -fq ? -fq : v);
        q[d] = (int8_t)v;
    }
    return amax / fq;
}

static float quant_u8_generic(uint8_t *q, const float *x, int dim, int *zp)
{
    float lo = 0.0f, hi = 0.0f;
    for (int d = 0; d < dim; d++) {
        lo = x[d] < lo ? x[d] : lo;
        hi = x[d] > hi ? x[d] : hi;
    }
    if (!(hi - lo > 0.0f) || !isfinite(hi - lo)) {
        for (int d = 0; d < dim; d++) q[d] = 0;
        *zp = 0;
        return 1.0f;
    }
    const float scale = (hi - lo) / 255.0f, inv = 255.0f / (hi - lo);
    float z = nearbyintf(-lo * inv);
    z = z < 0.0f ? 0.0f : (z > 255.0f ? 255.0f : z);
    for (int d = 0; d < dim; d++) {
        float v = nearbyintf(x[d] * inv) + z;
        v = v < 0.0f ? 0.0f : (v > 255.0f ? 255.0f : v);
        q[d] = (uint8_t)v;
    }
    *zp = (int)z;
    return scale;
}

static void dequant_generic(float *y, const float *acc, float sa, float zp,
                            const float *sw, const float *cs, const float *b, int dim,
                            int accumulate)
{
    for (int o = 0; o < dim; o++) {
        const float v = (acc[o] * sw[o] - zp * cs[o]) * sa + b[o];
        y[o] = accumulate ? y[o] + v : v;
    }
}

/* ---- AVX2 + FMA versions ---------------------------------------------- */

#define VS_AVX2 __attribute__((target("avx2,fma")))

VS_AVX2 static inline float hsum256(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

VS_AVX2 static inline float hmax256(__m256 v)
{
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* e^x for x <= 0 (softmax inputs after subtracting the max), 8 lanes.
 * x = n ln2 + r with |r| <= ln2/2, e^r by a degree-6 minimax polynomial
 * (relative error ~1e-7, about 1 ulp), 2^n built in the exponent bits.
 * Inputs below -87.3 are clamped there (result ~1e-38 instead of a
 * denormal or 0: invisible after normalisation by a sum >= 1). */
VS_AVX2 static inline __m256 exp256_neg(__m256 x)
{
    x = _mm256_max_ps(x, _mm256_set1_ps(-87.3f));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    /* r = x - n ln2, ln2 split in a short head (exact product) and a tail */
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    /* e^r ~ 1 + r + r^2 p(r) */
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r);
    p = _mm256_add_ps(p, _mm256_set1_ps(1.0f));
    /* 2^n: n in [-126, 0], biased exponent n + 127 in [1, 127] */
    const __m256i e = _mm256_slli_epi32(
        _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

VS_AVX2 static void ln_avx2(float *y, const float *x, const float *g,
                            const float *b, int dim, float eps)
{
    int d = 0;
    __m256 acc = _mm256_setzero_ps();
    for (; d + 8 <= dim; d += 8) acc = _mm256_add_ps(acc, _mm256_loadu_ps(x + d));
    float sum = hsum256(acc);
    for (; d < dim; d++) sum += x[d];
    const float mean = sum / (float)dim;

    const __m256 vm = _mm256_set1_ps(mean);
    acc = _mm256_setzero_ps();
    for (d = 0; d + 8 <= dim; d += 8) {
        const __m256 t = _mm256_sub_ps(_mm256_loadu_ps(x + d), vm);
        acc = _mm256_fmadd_ps(t, t, acc);
    }
    float sq = hsum256(acc);
    for (; d < dim; d++) sq += (x[d] - mean) * (x[d] - mean);
    const float rstd = 1.0f / sqrtf(sq / (float)dim + eps);

    const __m256 vr = _mm256_set1_ps(rstd);
    for (d = 0; d + 8 <= dim; d += 8) {
        const __m256 t = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + d), vm), vr);
        _mm256_storeu_ps(y + d, _mm256_fmadd_ps(t, _mm256_loadu_ps(g + d),
                                                _mm256_loadu_ps(b + d)));
    }
    for (; d < dim; d++) y[d] = (x[d] - mean) * rstd * g[d] + b[d];
}

VS_AVX2 static void softmax_avx2(float *x, int len, float scale)
{
    int i = 0;
    __m256 vmax = _mm256_set1_ps(-INFINITY);
    for (; i + 8 <= len; i += 8) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(x + i));
    float mx = hmax256(vmax);
    for (; i < len; i++) mx = x[i] > mx ? x[i] : mx;

    const __m256 vm = _mm256_set1_ps(mx), vs = _mm256_set1_ps(scale);
    __m256 acc = _mm256_setzero_ps();
    for (i = 0; i + 8 <= len; i += 8) {
        const __m256 e = exp256_neg(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm), vs));
        _mm256_storeu_ps(x + i, e);
        acc = _mm256_add_ps(acc, e);
    }
    float sum = hsum256(acc);
    if (i < len) {
        /* the tail through the same polynomial, padded with -inf -> 0 */
        float tmp[8];
        int k = 0;
        for (; k < len - i; k++) tmp[k] = (x[i + k] - mx) * scale;
        for (; k < 8; k++) tmp[k] = -INFINITY;
        _mm256_storeu_ps(tmp, exp256_neg(_mm256_loadu_ps(tmp)));
        for (k = 0; k < len - i; k++) {
            x[i + k] = tmp[k];
            sum += tmp[k];
        }
    }
    const __m256 vi = _mm256_set1_ps(1.0f / sum);
    for (i = 0; i + 8 <= len; i += 8)
        _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), vi));
    for (; i < len; i++) x[i] *= 1.0f / sum;
}

VS_AVX2 static float quant_avx2(int8_t *q, const float *x, int dim, int qmax)
{
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 vmax = _mm256_setzero_ps();
    int d = 0;
    for (; d + 8 <= dim; d += 8)
        vmax = _mm256_max_ps(vmax, _mm256_and_ps(_mm256_loadu_ps(x + d), absmask));
    float amax = hmax256(vmax);
    for (; d < dim; d++) amax = fabsf(x[d]) > amax ? fabsf(x[d]) : amax;
    if (!(amax > 0.0f) || !isfinite(amax)) return quant_generic(q, x, dim, qmax);

    const float fq = (float)qmax;
    const __m256 vinv = _mm256_set1_ps(fq / amax);
    const __m256 hi = _mm256_set1_ps(fq), lo = _mm256_set1_ps(-fq);
    /* 32 floats -> 4 x 8 int32 -> packs to int16 then int8; the packs work
     * per 128-bit lane, so the dwords come out as a0 b0 c0 d0 a1 b1 c1 d1
     * (4-byte groups) and one permute puts them back in order */
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (d = 0; d + 32 <= dim; d += 32) {
        __m256i v[4];
        for (int k = 0; k < 4; k++) {
            __m256 t = _mm256_mul_ps(_mm256_loadu_ps(x + d + 8 * k), vinv);
            t = _mm256_min_ps(_mm256_max_ps(t, lo), hi);
            v[k] = _mm256_cvtps_epi32(t);      /* rounds to nearest even */
        }
        const __m256i ab = _mm256_packs_epi32(v[0], v[1]);
        const __m256i cd = _mm256_packs_epi32(v[2], v[3]);
        const __m256i abcd = _mm256_packs_epi16(ab, cd);
        _mm256_storeu_si256((__m256i *)(q + d), _mm256_permutevar8x32_epi32(abcd, order));
    }
    const float inv = fq / amax;
    for (; d < dim; d++) {
        float v = nearbyintf(x[d] * inv);
        v = v > fq ? fq : (v < -fq ? -fq : v);
        q[d] = (int8_t)v;
    }
    return amax / fq;
}

VS_AVX2 static float quant_u8_avx2(uint8_t *q, const float *x, int dim, int *zp)
{
    __m256 vlo = _mm256_setzero_ps(), vhi = _mm256_setzero_ps();
    int d = 0;
    for (; d + 8 <= dim; d += 8) {
        const __m256 v = _mm256_loadu_ps(x + d);
        vlo = _mm256_min_ps(vlo, v);
        vhi = _mm256_max_ps(vhi, v);
    }
    float lo = -hmax256(_mm256_sub_ps(_mm256_setzero_ps(), vlo)), hi = hmax256(vhi);
    for (; d < dim; d++) {
        lo = x[d] < lo ? x[d] : lo;
        hi = x[d] > hi ? x[d] : hi;
    }
    if (!(hi - lo > 0.0f) || !isfinite(hi - lo)) return quant_u8_generic(q, x, dim, zp);
    const float scale = (hi - lo) / 255.0f, inv = 255.0f / (hi - lo);
    float z = nearbyintf(-lo * inv);
    z = z < 0.0f ? 0.0f : (z > 255.0f ? 255.0f : z);
    const __m256 vinv = _mm256_set1_ps(inv), vz = _mm256_set1_ps(z);
    const __m256 zero = _mm256_setzero_ps(), top = _mm256_set1_ps(255.0f);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (d = 0; d + 32 <= dim; d += 32) {
        __m256i v[4];
        for (int k = 0; k < 4; k++) {
            __m256 t = _mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + d + 8 * k), vinv),
                                       _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            t = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(t, vz), zero), top);
            v[k] = _mm256_cvtps_epi32(t);
        }
        /* 0..255 survives the signed 32->16 pack and the unsigned 16->8 pack */
        const __m256i ab = _mm256_packs_epi32(v[0], v[1]);
        const __m256i cd = _mm256_packs_epi32(v[2], v[3]);
        const __m256i abcd = _mm256_packus_epi16(ab, cd);
        _mm256_storeu_si256((__m256i *)(q + d), _mm256_permutevar8x32_epi32(abcd, order));
    }
    for (; d < dim; d++) {
        float v = nearbyintf(x[d] * inv) + z;
        v = v < 0.0f ? 0.0f : (v > 255.0f ? 255.0f : v);
        q[d] = (uint8_t)v;
    }
    *zp = (int)z;
    return scale;
}

VS_AVX2 static void dequant_avx2(float *y, const float *acc, float sa, float zp,
                                 const float *sw, const float *cs, const float *b, int dim,
                                 int accumulate)
{
    const __m256 vsa = _mm256_set1_ps(sa), vzp = _mm256_set1_ps(zp);
    int o = 0;
    for (; o + 8 <= dim; o += 8) {
        const __m256 w = _mm256_mul_ps(_mm256_loadu_ps(acc + o), _mm256_loadu_ps(sw + o));
        const __m256 a = _mm256_fnmadd_ps(vzp, _mm256_loadu_ps(cs + o), w);
        __m256 v = _mm256_fmadd_ps(a, vsa, _mm256_loadu_ps(b + o));
        if (accumulate) v = _mm256_add_ps(_mm256_loadu_ps(y + o), v);
        _mm256_storeu_ps(y + o, v);
    }
    for (; o < dim; o++) {
        const float v = (acc[o] * sw[o] - zp * cs[o]) * sa + b[o];
        y[o] = accumulate ? y[o] + v : v;
    }
}

/* ---- own fp32 GEMM (AVX2 + FMA) ----------------------------------------
 *
 * C (M, N) = (accumulate ? C : 0) + act(A (M, K) . W^T + bias), W (N, K) a
 * Linear's weight used in place.  The classic packed scheme (W^T is the
 * "B" operand):
 *
 *   for each chunk of SG_MC rows of A              (A chunk ~ SG_MC x SG_KC
 *     for each panel of SG_NR = 16 columns of C     floats stays in L2)
 *       for each block of SG_KC = 256 along K:
 *         bp (SG_KC, 16) = W[n0:n0+16, k0:k0+kc]^T   packed, 16 KB: stays in L1
 *         for each tile of SG_MR = 6 rows:
 *           ct (6, 16) (+)= A[rows, k0:k0+kc] . bp    12 ymm accumulators
 *       C[rows, n0:n0+16] (+)= act(ct + bias)         the epilogue, per tile
 *
 * The micro-kernel holds the 6x16 tile of C in 12 registers; per k it loads
 * two vectors of bp and broadcasts 6 scalars of A (read in place, row
 * major: 6 sequential streams), 12 FMAs.  Packing costs K*N element moves
 * per GEMM against M*K*N FMAs (1/197 per FMA for ViT's M = 197), done with
 * 8x8 register transposes.  Threads take runs of column panels from a
 * shared counter (no reduction across threads, no other synchronisation);
 * each has its own bp and ct in ws.  Rows past M in the last tile read row 0 of the tile again and are
 * never stored; columns past N are packed as zeros and never stored.
 *
 * The packed blocks can also be prepared once (sgemm_pack_avx2 into g->Wp,
 * the backend's persistent copy: for each panel its K rows of 16 floats,
 * blocks back to back): calls then skip packing and stream the copy
 * sequentially.  On the 2-vCPU EPYC packing was ~8-10% of a GEMM's time (a
 * perf profile); the whole forward gained 6-7% (vs-bench_cpu --ab-prepack).
 * The sum over k runs k = 0, 1, ..., K-1 into one accumulator per C element
 * whatever M, the row or the thread: results do not depend on the batch.
 *
 * The team loop (work items, packing or the packed copy, prefetches, the
 * epilogue) is cpu_gemm_team.inc, included below once per kernel: the 6x16
 * AVX2 kernel here, and the 12x32 16-lane one (cpu_gemm_x16.inc) that
 * AVX-512 machines get with VS_CPU_GEMM=own.  Every instance sums each
 * element in the same order: the same bits. */

#define SG_MR 6
#define SG_NR 16
#define SG_KC 256
#define SG_MC 240   /* multiple of SG_MR */

size_t vs_model_cpu_gemm_ws_floats(void)
{
    /* up to two panels per tile (the 12x32 kernel): two packed blocks,
     * two strips */
    return 2 * ((size_t)SG_KC * SG_NR + (size_t)SG_MC * SG_NR);
}

size_t vs_model_cpu_gemm_packed_floats(int64_t N, int64_t K)
{
    if (N <= 0 || K <= 0) return 0;
    return (size_t)((N + SG_NR - 1) / SG_NR) * SG_NR * (size_t)K;
}

/* In-register transpose of 8 vectors (rows) into 8 vectors (columns). */
VS_AVX2 static inline void transpose8(__m256 r[8])
{
    __m256 t[8], s[8];
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);      /* a0 b0 a1 b1 | a4 b4 a5 b5 */
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);  /* a2 b2 a3 b3 | a6 b6 a7 b7 */
    }
    for (int h = 0; h < 2; h++) {   /* rows 0-3, then rows 4-7 */
        const __m256 *u = t + 4 * h;
        s[4 * h + 0] = _mm256_shuffle_ps(u[0], u[2], 0x44);   /* col 0 | col 4 */
        s[4 * h + 1] = _mm256_shuffle_ps(u[0], u[2], 0xEE);   /* col 1 | col 5 */
        s[4 * h + 2] = _mm256_shuffle_ps(u[1], u[3], 0x44);   /* col 2 | col 6 */
        s[4 * h + 3] = _mm256_shuffle_ps(u[1], u[3], 0xEE);   /* col 3 | col 7 */
    }
    for (int i = 0; i < 4; i++) {
        r[i] = _mm256_permute2f128_ps(s[i], s[4 + i], 0x20);      /* cols 0-3 */
        r[i + 4] = _mm256_permute2f128_ps(s[i], s[4 + i], 0x31);  /* cols 4-7 */
    }
}

/* bp (kc, 16): bp[k*16 + j] = w[j*ldw + k] for j < nv, 0 for j >= nv.
 * w points at W[n0][k0]. */
VS_AVX2 static void sg_pack(float *bp, const float *w, int64_t ldw, int nv, int kc)
{
    int k = 0;
    if (nv == SG_NR) {
        for (; k + 8 <= kc; k += 8)
            for (int g = 0; g < 2; g++) {
                __m256 r[8];
                for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps(w + (g * 8 + i) * ldw + k);
                transpose8(r);   /* r[i] = w[g*8 .. g*8+7][k + i] */
                for (int i = 0; i < 8; i++) _mm256_store_ps(bp + (k + i) * SG_NR + g * 8, r[i]);
            }
    }
    for (; k < kc; k++)
        for (int j = 0; j < SG_NR; j++) bp[k * SG_NR + j] = j < nv ? w[j * ldw + k] : 0.0f;
}

/* The same block from W stored (K, N): bp[k*16 + j] = w[k*ldw + j] for
 * j < nv, 0 for j >= nv; w points at W[k0][n0].  Same block, same bits. */
VS_AVX2 static void sg_pack_kn(float *bp, const float *w, int64_t ldw, int nv, int kc)
{
    for (int k = 0; k < kc; k++) {
        if (nv == SG_NR) {
            _mm256_store_ps(bp + k * SG_NR, _mm256_loadu_ps(w + k * ldw));
            _mm256_store_ps(bp + k * SG_NR + 8, _mm256_loadu_ps(w + k * ldw + 8));
        } else {
            for (int j = 0; j < SG_NR; j++) bp[k * SG_NR + j] = j < nv ? w[k * ldw + j] : 0.0f;
        }
    }
}

/* ct (6, 16) = (first ? 0 : ct) + sum_k a_i[k] * bp[k, :], i = 0..5. */
VS_AVX2 static void sg_kernel(int kc, const float *a0, const float *a1, const float *a2,
                              const float *a3, const float *a4, const float *a5,
                              const float *bp, float *ct, int first)
{
    __m256 c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51;
    if (first) {
        c00 = c01 = c10 = c11 = c20 = c21 = _mm256_setzero_ps();
        c30 = c31 = c40 = c41 = c50 = c51 = _mm256_setzero_ps();
    } else {
        c00 = _mm256_load_ps(ct + 0);   c01 = _mm256_load_ps(ct + 8);
        c10 = _mm256_load_ps(ct + 16);  c11 = _mm256_load_ps(ct + 24);
        c20 = _mm256_load_ps(ct + 32);  c21 = _mm256_load_ps(ct + 40);
        c30 = _mm256_load_ps(ct + 48);  c31 = _mm256_load_ps(ct + 56);
        c40 = _mm256_load_ps(ct + 64);  c41 = _mm256_load_ps(ct + 72);
        c50 = _mm256_load_ps(ct + 80);  c51 = _mm256_load_ps(ct + 88);
    }
    for (int k = 0; k < kc; k++) {
        const __m256 b0 = _mm256_load_ps(bp), b1 = _mm256_load_ps(bp + 8);
        bp += SG_NR;
        __m256 t;
        t = _mm256_broadcast_ss(a0 + k);
        c00 = _mm256_fmadd_ps(t, b0, c00); c01 = _mm256_fmadd_ps(t, b1, c01);
        t = _mm256_broadcast_ss(a1 + k);
        c10 = _mm256_fmadd_ps(t, b0, c10); c11 = _mm256_fmadd_ps(t, b1, c11);
        t = _mm256_broadcast_ss(a2 + k);
        c20 = _mm256_fmadd_ps(t, b0, c20); c21 = _mm256_fmadd_ps(t, b1, c21);
        t = _mm256_broadcast_ss(a3 + k);
        c30 = _mm256_fmadd_ps(t, b0, c30); c31 = _mm256_fmadd_ps(t, b1, c31);
        t = _mm256_broadcast_ss(a4 + k);
        c40 = _mm256_fmadd_ps(t, b0, c40); c41 = _mm256_fmadd_ps(t, b1, c41);
        t = _mm256_broadcast_ss(a5 + k);
        c50 = _mm256_fmadd_ps(t, b0, c50); c51 = _mm256_fmadd_ps(t, b1, c51);
    }
    _mm256_store_ps(ct + 0, c00);   _mm256_store_ps(ct + 8, c01);
    _mm256_store_ps(ct + 16, c10);  _mm256_store_ps(ct + 24, c11);
    _mm256_store_ps(ct + 32, c20);  _mm256_store_ps(ct + 40, c21);
    _mm256_store_ps(ct + 48, c30);  _mm256_store_ps(ct + 56, c31);
    _mm256_store_ps(ct + 64, c40);  _mm256_store_ps(ct + 72, c41);
    _mm256_store_ps(ct + 80, c50);  _mm256_store_ps(ct + 88, c51);
}

/* The activations, 8 lanes.  exp256_neg (x <= 0 only) everywhere: every
 * formula is arranged so that its exponent is -|something|. */
VS_AVX2 static inline __m256 act8(__m256 v, int act, float alpha)
{
    const __m256 half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f);
    const __m256 sign = _mm256_set1_ps(-0.0f);
    switch (act) {
    case VS_CPU_ACT_GELU_ERF: {
        /* erf by Abramowitz & Stegun 7.1.26 (|error| <= 1.5e-7):
         * erfc(a) = t (a1 + t (a2 + t (a3 + t (a4 + t a5)))) e^{-a^2},
         * t = 1 / (1 + p a), a = |y| >= 0, y = v / sqrt 2;
         * 1 + erf(y) = 2 - erfc(a) for y >= 0, erfc(a) for y < 0
         * (no cancellation on the negative side). */
        const __m256 y = _mm256_mul_ps(v, _mm256_set1_ps(0.70710678118654752f));
        const __m256 a = _mm256_andnot_ps(sign, y);
        const __m256 t = _mm256_div_ps(one, _mm256_fmadd_ps(_mm256_set1_ps(0.3275911f), a, one));
        __m256 p = _mm256_set1_ps(1.061405429f);
        p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-1.453152027f));
        p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(1.421413741f));
        p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-0.284496736f));
        p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(0.254829592f));
        p = _mm256_mul_ps(p, t);
        const __m256 q = _mm256_mul_ps(p, exp256_neg(_mm256_xor_ps(_mm256_mul_ps(a, a), sign)));
        const __m256 neg = _mm256_cmp_ps(y, _mm256_setzero_ps(), _CMP_LT_OQ);
        const __m256 onep = _mm256_blendv_ps(_mm256_sub_ps(_mm256_set1_ps(2.0f), q), q, neg);
        return _mm256_mul_ps(_mm256_mul_ps(half, v), onep);
    }
    case VS_CPU_ACT_GELU_TANH: {
        /* u = sqrt(2/pi) (v + 0.044715 v^3); tanh|u| = (1 - e) / (1 + e),
         * e = e^{-2|u|}; sign of u restored */
        const __m256 v2 = _mm256_mul_ps(v, v);
        const __m256 u = _mm256_mul_ps(_mm256_set1_ps(0.79788456080286536f),
                                       _mm256_fmadd_ps(_mm256_mul_ps(_mm256_set1_ps(0.044715f), v2),
                                                       v, v));
        const __m256 au = _mm256_andnot_ps(sign, u);
        const __m256 e = exp256_neg(_mm256_mul_ps(_mm256_set1_ps(-2.0f), au));
        __m256 th = _mm256_div_ps(_mm256_sub_ps(one, e), _mm256_add_ps(one, e));
        th = _mm256_or_ps(th, _mm256_and_ps(sign, u));
        return _mm256_mul_ps(_mm256_mul_ps(half, v), _mm256_add_ps(one, th));
    }
    case VS_CPU_ACT_RELU:
        return _mm256_max_ps(v, _mm256_setzero_ps());
    case VS_CPU_ACT_SWISH: {
        /* sigmoid(z), z = alpha v: e = e^{-|z|}, s = 1 / (1 + e);
         * z >= 0: s, z < 0: e s */
        const __m256 z = _mm256_mul_ps(_mm256_set1_ps(alpha), v);
        const __m256 e = exp256_neg(_mm256_or_ps(z, sign));   /* -|z| */
        const __m256 s = _mm256_div_ps(one, _mm256_add_ps(one, e));
        const __m256 neg = _mm256_cmp_ps(z, _mm256_setzero_ps(), _CMP_LT_OQ);
        return _mm256_mul_ps(v, _mm256_blendv_ps(s, _mm256_mul_ps(e, s), neg));
    }
    default:
        return v;
    }
}

static float act1(float v, int act, float alpha)
{
    switch (act) {
    case VS_CPU_ACT_GELU_ERF: return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
    case VS_CPU_ACT_GELU_TANH:
        return 0.5f * v * (1.0f + tanhf(0.79788456080286536f * (v + 0.044715f * v * v * v)));
    case VS_CPU_ACT_RELU: return v > 0.0f ? v : 0.0f;
    case VS_CPU_ACT_SWISH: return v / (1.0f + expf(-alpha * v));
    default: return v;
    }
}

/* One row of the epilogue: c[j] (+)= act(ct[j] + bias[j]), j < nv. */
VS_AVX2 static void sg_epilogue(float *c, const float *ct, int nv, const float *bias,
                                const struct vs_cpu_gemm *g)
{
    int j = 0;
    for (; j + 8 <= nv; j += 8) {
        __m256 v = _mm256_load_ps(ct + j);
        if (bias) v = _mm256_add_ps(v, _mm256_loadu_ps(bias + j));
        v = act8(v, g->act, g->alpha);
        if (g->accumulate) v = _mm256_add_ps(_mm256_loadu_ps(c + j), v);
        _mm256_storeu_ps(c + j, v);
    }
    for (; j < nv; j++) {
        float v = ct[j] + (bias ? bias[j] : 0.0f);
        v = act1(v, g->act, g->alpha);
        c[j] = g->accumulate ? c[j] + v : v;
    }
}

/* The epilogue of one tile, rows 0..rows-1 of ct onto rows ldc apart of c,
 * the 16 columns of a full panel: the per-row version's operations on
 * every element (same bits), with the activation's switch, the bias loads
 * and the call made once per tile instead of once per row (a perf profile
 * put 15% of the epilogue's samples on the per-row call itself). */
VS_AVX2 static inline __attribute__((always_inline)) void
sg_epi_tile(float *c, int64_t ldc, const float *ct, int rows, const float *bias, int act,
            float alpha, int accumulate)
{
    const __m256 b0 = bias ? _mm256_loadu_ps(bias) : _mm256_setzero_ps();
    const __m256 b1 = bias ? _mm256_loadu_ps(bias + 8) : _mm256_setzero_ps();
    for (int r = 0; r < rows; r++, c += ldc, ct += SG_NR) {
        __m256 v0 = _mm256_load_ps(ct), v1 = _mm256_load_ps(ct + 8);
        if (bias) {
            v0 = _mm256_add_ps(v0, b0);
            v1 = _mm256_add_ps(v1, b1);
        }
        v0 = act8(v0, act, alpha);
        v1 = act8(v1, act, alpha);
        if (accumulate) {
            v0 = _mm256_add_ps(_mm256_loadu_ps(c), v0);
            v1 = _mm256_add_ps(_mm256_loadu_ps(c + 8), v1);
        }
        _mm256_storeu_ps(c, v0);
        _mm256_storeu_ps(c + 8, v1);
    }
}

VS_AVX2 static void sg_epilogue_tile(float *c, int64_t ldc, const float *ct, int rows, int nv,
                                     const float *bias, const struct vs_cpu_gemm *g)
{
    if (nv < SG_NR) {
        for (int r = 0; r < rows; r++) sg_epilogue(c + r * ldc, ct + r * SG_NR, nv, bias, g);
        return;
    }
    const float al = g->alpha;
    const int acc = g->accumulate;
    switch (g->act) {   /* one specialised loop per activation */
    case VS_CPU_ACT_GELU_ERF:
        sg_epi_tile(c, ldc, ct, rows, bias, VS_CPU_ACT_GELU_ERF, al, acc);
        break;
    case VS_CPU_ACT_GELU_TANH:
        sg_epi_tile(c, ldc, ct, rows, bias, VS_CPU_ACT_GELU_TANH, al, acc);
        break;
    case VS_CPU_ACT_RELU: sg_epi_tile(c, ldc, ct, rows, bias, VS_CPU_ACT_RELU, al, acc); break;
    case VS_CPU_ACT_SWISH: sg_epi_tile(c, ldc, ct, rows, bias, VS_CPU_ACT_SWISH, al, acc); break;
    default: sg_epi_tile(c, ldc, ct, rows, bias, VS_CPU_ACT_NONE, al, acc); break;
    }
}

/* The persistent copy: panel by panel, each panel's K blocks back to back,
 * every block exactly what sg_thread would pack into ws. */
VS_AVX2 static void sgemm_pack_avx2(const float *W, int64_t ldw, int64_t N, int64_t K,
                                    float *Wp)
{
    const int64_t panels = (N + SG_NR - 1) / SG_NR;
    for (int64_t pj = 0; pj < panels; pj++) {
        const int64_t n0 = pj * SG_NR;
        const int nv = (int)(N - n0 < SG_NR ? N - n0 : SG_NR);
        for (int64_t k0 = 0; k0 < K; k0 += SG_KC)
            sg_pack(Wp + (pj * K + k0) * SG_NR, W + n0 * ldw + k0, ldw, nv,
                    (int)(K - k0 < SG_KC ? K - k0 : SG_KC));
    }
}

/* The team loop and entry point for the AVX2 6x16 kernel: sgemm_avx2 */
#define GT_NAME(x) x##_avx2
#define GT_TARGET VS_AVX2
#define GT_MR SG_MR
#define GT_NP 1
#define GT_KERNEL(kc, a, bp, ct, first) \
    sg_kernel(kc, a[0], a[1], a[2], a[3], a[4], a[5], bp[0], ct[0], first)
#include "cpu_gemm_team.inc"
#undef GT_NAME
#undef GT_TARGET
#undef GT_MR
#undef GT_NP
#undef GT_KERNEL

/* The 12x32 kernel for AVX-512 machines (sgemm_x16), and the same code on
 * pairs of AVX2 registers for the tests (sgemm_x16emu) */
#define X16_NATIVE 1
#define X16_SUFFIX _x16
#define X16_TARGET __attribute__((target("avx512f,avx2,fma")))
#include "cpu_gemm_x16.inc"
#undef X16_NATIVE
#undef X16_SUFFIX
#undef X16_TARGET
#define X16_NATIVE 0
#define X16_SUFFIX _x16emu
#define X16_TARGET VS_AVX2
#include "cpu_gemm_x16.inc"
#undef X16_NATIVE
#undef X16_SUFFIX
#undef X16_TARGET

/* ---- own int8 GEMM (AVX2, u8 x s8 without VNNI) -----------------------
 *
 * For each panel of 16 output columns, its weights are packed as K/4
 * groups of (16 columns x 4 consecutive k) bytes: one 64-byte line per
 * group, the panels back to back.  The micro-kernel holds a 4-row x
 * 16-column tile of s32 sums in 8 registers; per group of 4 k it loads the
 * group's two 32-byte halves (columns 0-7, 8-15) and, per row, broadcasts
 * the row's 4 activation bytes: vpmaddubsw multiplies u8 by s8 and adds
 * adjacent pairs into s16 (exact for |w| <= 63), vpmaddwd by 1 adds the
 * pairs into s32, vpaddd accumulates: 3 instructions per 32 MACs, of which
 * the two multiplies share the CPU's two vector-multiply ports.  4 rows
 * rather than 6: the 6 x 16 tile needs 17 vector registers (12 sums, 2
 * weights, the broadcast, a product, the ones).  The whole K runs in
 * registers (no K blocks: integer sums do not round), the weight panel (K x
 * 16 bytes, 12-48 KB for ViT-B) streams from L2 and the rows of A (K bytes
 * each) stay in L1/L2.  Threads take runs of panels from a shared counter,
 * as the fp32 GEMM does. */

#define IG_MR 4
#define IG_NR 16

size_t vs_model_cpu_igemm_packed_bytes(int64_t N, int64_t K)
{
    if (N <= 0 || K <= 0) return 0;
    return (size_t)((N + IG_NR - 1) / IG_NR) * IG_NR * (size_t)((K + 3) / 4 * 4);
}

static void igemm_pack_avx2(const int8_t *W, int64_t ldw, int64_t N, int64_t K, int8_t *Wp)
{
    const int64_t panels = (N + IG_NR - 1) / IG_NR, groups = (K + 3) / 4;
    for (int64_t p = 0; p < panels; p++)
        for (int64_t gi = 0; gi < groups; gi++) {
            int8_t *dst = Wp + (p * groups + gi) * IG_NR * 4;
            for (int j = 0; j < IG_NR; j++)
                for (int i = 0; i < 4; i++) {
                    const int64_t n = p * IG_NR + j, k = gi * 4 + i;
                    dst[j * 4 + i] = n < N && k < K ? W[n * ldw + k] : 0;
                }
        }
}

/* c rows (ldc apart), 16 columns of which nv are stored = the tile's sums
 * as floats; rows past `rows` were computed from a repeated row. */
VS_AVX2 static inline void ig_store(float *c, int64_t ldc, int r, int rows, int nv, __m256i lo,
                                    __m256i hi)
{
    if (r >= rows) return;
    float *dst = c + r * ldc;
    const __m256 flo = _mm256_cvtepi32_ps(lo), fhi = _mm256_cvtepi32_ps(hi);
    if (nv == IG_NR) {
        _mm256_storeu_ps(dst, flo);
        _mm256_storeu_ps(dst + 8, fhi);
        return;
    }
    float t[IG_NR];
    _mm256_storeu_ps(t, flo);
    _mm256_storeu_ps(t + 8, fhi);
    for (int j = 0; j < nv; j++) dst[j] = t[j];
}

VS_AVX2 static inline __m256i ig_bcast4(const uint8_t *p)
{
    int32_t v;
    memcpy(&v, p, sizeof v);
    return _mm256_set1_epi32(v);
}

/* One 4 x 16 tile over the whole K: rows a0..a3 (u8, K bytes each), the
 * panel bp (K/4 groups of 64 bytes). */
VS_AVX2 static void ig_kernel(int64_t K, const uint8_t *a0, const uint8_t *a1,
                              const uint8_t *a2, const uint8_t *a3, const int8_t *bp,
                              float *c, int64_t ldc, int rows, int nv)
{
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00;
    __m256i c20 = c00, c21 = c00, c30 = c00, c31 = c00;
    for (int64_t k = 0; k < K; k += 4, bp += 4 * IG_NR) {
        const __m256i w0 = _mm256_load_si256((const __m256i *)bp);
        const __m256i w1 = _mm256_load_si256((const __m256i *)(bp + 32));
        __m256i t;
#define IG_ROW(r)                                                                          \
        t = ig_bcast4(a##r + k);                                                           \
        c##r##0 = _mm256_add_epi32(c##r##0,                                                \
                                   _mm256_madd_epi16(_mm256_maddubs_epi16(t, w0), ones));   \
        c##r##1 = _mm256_add_epi32(c##r##1,                                                \
                                   _mm256_madd_epi16(_mm256_maddubs_epi16(t, w1), ones));
        IG_ROW(0) IG_ROW(1) IG_ROW(2) IG_ROW(3)
#undef IG_ROW
    }
    ig_store(c, ldc, 0, rows, nv, c00, c01);
    ig_store(c, ldc, 1, rows, nv, c10, c11);
    ig_store(c, ldc, 2, rows, nv, c20, c21);
    ig_store(c, ldc, 3, rows, nv, c30, c31);
}

VS_AVX2 __attribute__((noinline)) static void ig_thread(const struct vs_cpu_igemm *g, int nt,
                                                        int64_t *next)
{
    const int64_t panels = (g->N + IG_NR - 1) / IG_NR, groups = (g->K + 3) / 4;
    int64_t run = panels / (8 * (int64_t)nt);
    run = run < 1 ? 1 : run;
    for (;;) {
        const int64_t p0 = __atomic_fetch_add(next, 1, __ATOMIC_RELAXED) * run;
        if (p0 >= panels) break;
        const int64_t p1 = p0 + run < panels ? p0 + run : panels;
        for (int64_t p = p0; p < p1; p++) {
            const int64_t n0 = p * IG_NR;
            const int nv = (int)(g->N - n0 < IG_NR ? g->N - n0 : IG_NR);
            const int8_t *bp = g->Wp + p * groups * 4 * IG_NR;
            for (int64_t i = 0; i < g->M; i += IG_MR) {
                const int rows = (int)(g->M - i < IG_MR ? g->M - i : IG_MR);
                const uint8_t *a[IG_MR];
                for (int r = 0; r < IG_MR; r++)   /* rows past M repeat row i */
                    a[r] = g->A + (i + (r < rows ? r : 0)) * g->lda;
                ig_kernel(g->K, a[0], a[1], a[2], a[3], bp, g->C + i * g->ldc + n0, g->ldc,
                          rows, nv);
            }
        }
    }
}

static void igemm_avx2(const struct vs_cpu_igemm *g, int threads)
{
    if (g->M <= 0 || g->N <= 0) return;
    int64_t next = 0;
    if (threads <= 1) {
        ig_thread(g, 1, &next);
        return;
    }
    #pragma omp parallel num_threads(threads)
    ig_thread(g, omp_get_num_threads(), &next);
}

/* ---- dispatch --------------------------------------------------------- */

static const struct vs_cpu_kernels k_generic = {
    ln_generic, softmax_generic, quant_generic, quant_u8_generic, dequant_generic,
    NULL, NULL, NULL, NULL, "generic", NULL
};
static const struct vs_cpu_kernels k_avx2 = {
    ln_avx2, softmax_avx2, quant_avx2, quant_u8_avx2, dequant_avx2, sgemm_avx2,
    sgemm_pack_avx2, igemm_avx2, igemm_pack_avx2, "avx2", "avx2"
};
/* AVX-512F machines: the row kernels stay AVX2 (~2% of a forward), the
 * GEMM is the 12x32 one */
static const struct vs_cpu_kernels k_avx512 = {
    ln_avx2, softmax_avx2, quant_avx2, quant_u8_avx2, dequant_avx2, sgemm_x16,
    sgemm_pack_avx2, igemm_avx2, igemm_pack_avx2, "avx2", "avx512"
};
static const struct vs_cpu_kernels k_x16emu = {
    ln_avx2, softmax_avx2, quant_avx2, quant_u8_avx2, dequant_avx2, sgemm_x16emu,
    sgemm_pack_avx2, igemm_avx2, igemm_pack_avx2, "avx2", "x16 on avx2"
};

const struct vs_cpu_kernels *vs_model_cpu_kernels_generic(void)
{
    return &k_generic;
}

const struct vs_cpu_kernels *vs_model_cpu_kernels(void)
{
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return &k_generic;
    return __builtin_cpu_supports("avx512f") ? &k_avx512 : &k_avx2;
}

const struct vs_cpu_kernels *vs_model_cpu_kernels_avx2(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? &k_avx2 : NULL;
}

const struct vs_cpu_kernels *vs_model_cpu_kernels_x16emu(void)
{
    return vs_model_cpu_kernels_avx2() ? &k_x16emu : NULL;
}
