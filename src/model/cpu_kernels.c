/* cpu_kernels.c: LayerNorm, softmax and int8 row quantization for the CPU
 * backend, in a portable version and an AVX2+FMA version.
 *
 * The library is compiled with -O2 and no -march, which leaves these float
 * reductions scalar (GCC may not reorder float sums) and has no vector exp,
 * so the AVX2 versions are written with intrinsics inside functions carrying
 * __attribute__((target("avx2,fma"))); vs_model_cpu_kernels() picks them
 * when __builtin_cpu_supports says the CPU has both.  AVX2 is the common
 * ground of the AVX-512 Xeons the project targets and of AMD Zen machines;
 * these loops are ~2% of a forward pass, so no AVX-512 variant is kept.
 *
 * Invariants: every kernel reads and writes exactly its row; no state; any
 * thread may run any kernel on disjoint rows concurrently.
 */
#include "cpu_kernels.h"

#include <math.h>
#include <immintrin.h>

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

static void softmax_generic(float *x, int len)
{
    float mx = x[0];
    for (int i = 1; i < len; i++) mx = x[i] > mx ? x[i] : mx;
    float sum = 0.0f;
    for (int i = 0; i < len; i++) {
        x[i] = expf(x[i] - mx);
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

VS_AVX2 static void softmax_avx2(float *x, int len)
{
    int i = 0;
    __m256 vmax = _mm256_set1_ps(-INFINITY);
    for (; i + 8 <= len; i += 8) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(x + i));
    float mx = hmax256(vmax);
    for (; i < len; i++) mx = x[i] > mx ? x[i] : mx;

    const __m256 vm = _mm256_set1_ps(mx);
    __m256 acc = _mm256_setzero_ps();
    for (i = 0; i + 8 <= len; i += 8) {
        const __m256 e = exp256_neg(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm));
        _mm256_storeu_ps(x + i, e);
        acc = _mm256_add_ps(acc, e);
    }
    float sum = hsum256(acc);
    if (i < len) {
        /* the tail through the same polynomial, padded with -inf -> 0 */
        float tmp[8];
        int k = 0;
        for (; k < len - i; k++) tmp[k] = x[i + k] - mx;
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

/* ---- dispatch --------------------------------------------------------- */

static const struct vs_cpu_kernels k_generic = {
    ln_generic, softmax_generic, quant_generic, quant_u8_generic, dequant_generic,
    "generic"
};
static const struct vs_cpu_kernels k_avx2 = {
    ln_avx2, softmax_avx2, quant_avx2, quant_u8_avx2, dequant_avx2, "avx2"
};

const struct vs_cpu_kernels *vs_model_cpu_kernels_generic(void)
{
    return &k_generic;
}

const struct vs_cpu_kernels *vs_model_cpu_kernels(void)
{
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return &k_avx2;
    return &k_generic;
}
