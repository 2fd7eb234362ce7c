/* resample.c: Pillow 9.4's Image.resize() for RGB8 images, bit for bit.
 *
 * What Pillow does (src/libImaging/Resample.c, Geometry.c, _imaging.c) and
 * what this file reproduces, for an image sw x sh resized to dw x dh:
 *
 *   - same size            -> plain copy (all filters);
 *   - NEAREST              -> an affine "scale" transform: the source
 *                             coordinate of output column x is the running
 *                             double sum 0.5*sx + x*sx (added step by step,
 *                             not multiplied), truncated; likewise for rows;
 *   - any other filter     -> a separable convolution: per output pixel a
 *                             window of source pixels and weights; when
 *                             shrinking, the filter is stretched by the scale
 *                             factor (antialiasing).  Weights are computed in
 *                             double, normalised to sum 1, then turned into
 *                             fixed point with PRECISION_BITS = 22 fraction
 *                             bits.  Each pass accumulates u8 * weight in a
 *                             32-bit integer that starts at 1 << 21 (the
 *                             rounding half) and clips (acc >> 22) to 0..255.
 *                             The horizontal pass runs first (only when the
 *                             width changes), over just the source rows the
 *                             vertical pass will read (ybox_first..last);
 *                             the vertical pass runs only when the height
 *                             changes.  The 8-bit intermediate is what makes
 *                             the order matter.
 *
 * Bit-exactness rests on three things: the weights are computed with the
 * same double expressions in the same order as Pillow (no FMA contraction:
 * the project compiles as ISO C11, where GCC keeps -ffp-contract=off), the
 * same libm sin/cos, and exact integer arithmetic afterwards (any order of
 * integer additions gives the same sum, so the loops below are free to be
 * rearranged and vectorised).  Sums are done in uint32 so that a sum Pillow
 * would overflow in `int` wraps the same way here without UB.
 *
 * Memory layout here is packed RGB (3 bytes/pixel) where Pillow uses 4; the
 * values are independent of it.
 *
 * Threads: reentrant, no global state; called from request worker threads.
 */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "image.h"

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

/* 32 bits of accumulator = 8 bits of result + 2 bits of headroom for
 * overshooting filters (bicubic/lanczos lobes) + 22 fraction bits. */
#define PRECISION_BITS (32 - 8 - 2)
#define ROUND_HALF ((uint32_t)1 << (PRECISION_BITS - 1))

/* ---- the filter kernels (Pillow's definitions, same double arithmetic) -- */

static double filter_box(double x)
{
    return (x > -0.5 && x <= 0.5) ? 1.0 : 0.0;      /* half-open on the left */
}

static double filter_bilinear(double x)
{
    if (x < 0.0) x = -x;
    return x < 1.0 ? 1.0 - x : 0.0;                 /* triangle */
}

static double filter_hamming(double x)
{
    if (x < 0.0) x = -x;
    if (x == 0.0) return 1.0;
    if (x >= 1.0) return 0.0;
    x = x * M_PI;
    /* Pillow writes the window constants as float literals (0.54f, 0.46f):
     * they are float-rounded before the double arithmetic.  Keep that. */
    return sin(x) / x * ((double)0.54f + (double)0.46f * cos(x));
}

static double filter_bicubic(double x)
{
    /* Keys cubic convolution with a = -0.5. */
    const double a = -0.5;
    if (x < 0.0) x = -x;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

static double sinc(double x)
{
    if (x == 0.0) return 1.0;
    x = x * M_PI;
    return sin(x) / x;
}

static double filter_lanczos(double x)
{
    /* sinc windowed by a 3-lobe sinc; the interval is [-3, 3). */
    if (-3.0 <= x && x < 3.0) return sinc(x) * sinc(x / 3);
    return 0.0;
}

struct filter {
    double (*fn)(double x);
    double support;          /* half-width of the kernel at scale 1 */
};

static const struct filter *filter_of(enum vs_resample f)
{
    static const struct filter box = {filter_box, 0.5};
    static const struct filter bilinear = {filter_bilinear, 1.0};
    static const struct filter hamming = {filter_hamming, 1.0};
    static const struct filter bicubic = {filter_bicubic, 2.0};
    static const struct filter lanczos = {filter_lanczos, 3.0};
    switch (f) {
    case VS_RESAMPLE_BOX: return &box;
    case VS_RESAMPLE_BILINEAR: return &bilinear;
    case VS_RESAMPLE_HAMMING: return &hamming;
    case VS_RESAMPLE_BICUBIC: return &bicubic;
    case VS_RESAMPLE_LANCZOS: return &lanczos;
    default: return NULL;
    }
}

/* ---- coefficient tables ------------------------------------------------ */

/* One axis of the convolution: output index o reads source pixels
 * first[o] .. first[o]+count[o]-1 with fixed-point weights
 * k[o*stride + 0 .. count[o]-1] (k: int32 (out, stride)). */
struct axis {
    int out;
    int stride;              /* Pillow's ksize = 2*ceil(support)+1 */
    int *first;              /* (out) */
    int *count;              /* (out) */
    int32_t *k;              /* (out, stride) */
};

static void axis_free(struct axis *a)
{
    free(a->first);
    free(a->count);
    free(a->k);
    memset(a, 0, sizeof *a);
}

/* Builds the weights for in_size -> out_size (Pillow's precompute_coeffs
 * with box = [0, in_size] followed by normalize_coeffs_8bpc). */
static enum vs_status axis_build(struct axis *a, int in_size, int out_size,
                                 const struct filter *flt, const char *what,
                                 struct vs_err *err)
{
    memset(a, 0, sizeof *a);
    /* scale: source pixels per output pixel; the filter only stretches
     * (filterscale >= 1), it never shrinks when enlarging. */
    double scale = (double)(float)in_size / out_size;
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double support = flt->support * filterscale;
    double ceil_support = ceil(support);
    if (ceil_support > (double)(INT_MAX / 4))
        return vs_err_set(err, VS_TOO_LARGE, "resize %s: %d -> %d needs a filter of %.0f taps",
                          what, in_size, out_size, 2 * ceil_support + 1);
    int stride = (int)ceil_support * 2 + 1;
    /* Pillow refuses (MemoryError) when out_size * stride doubles would
     * pass INT_MAX bytes; so do we, which also bounds our table to 1 GiB
     * of int32.  Only huge shrinks hit it (e.g. 50M x 1 -> 200 x 1, lanczos). */
    if (stride > INT_MAX / (int)sizeof(double) ||
        out_size > INT_MAX / (stride * (int)sizeof(double)))
        return vs_err_set(err, VS_TOO_LARGE, "resize %s: %d -> %d needs %d x %d filter weights "
                          "(Pillow refuses this too)", what, in_size, out_size, out_size, stride);
    size_t nk = (size_t)out_size * (size_t)stride;
    double *w = malloc(sizeof *w * (size_t)stride);          /* (stride) */
    a->first = malloc(sizeof *a->first * (size_t)out_size);
    a->count = malloc(sizeof *a->count * (size_t)out_size);
    a->k = malloc(sizeof *a->k * nk);
    if (!w || !a->first || !a->count || !a->k) {
        free(w);
        axis_free(a);
        return vs_err_set(err, VS_NOMEM, "resize %s: no memory for %zu weights", what, nk);
    }
    a->out = out_size;
    a->stride = stride;
    double ss = 1.0 / filterscale;    /* maps source distance to filter x */
    for (int o = 0; o < out_size; o++) {
        /* centre of output pixel o, in source pixel units */
        double center = (o + 0.5) * scale;
        /* window [lo, hi): the + 0.5 rounds to nearest; (int) truncates */
        int lo = (int)(center - support + 0.5);
        if (lo < 0) lo = 0;
        int hi = (int)(center + support + 0.5);
        if (hi > in_size) hi = in_size;
        int n = hi - lo;
        VS_ASSERT(n <= stride);
        double sum = 0.0;
        for (int i = 0; i < n; i++) {
            /* distance from the centre to the middle of source pixel lo+i */
            double v = flt->fn((i + lo - center + 0.5) * ss);
            w[i] = v;
            sum += v;
        }
        int32_t *k = a->k + (size_t)o * stride;
        for (int i = 0; i < n; i++) {
            double v = sum != 0.0 ? w[i] / sum : w[i];
            /* round half away from zero to 22 fraction bits */
            k[i] = v < 0 ? (int32_t)(-0.5 + v * (1 << PRECISION_BITS))
                         : (int32_t)(0.5 + v * (1 << PRECISION_BITS));
        }
        for (int i = n; i < stride; i++) k[i] = 0;
        a->first[o] = lo;
        a->count[o] = n;
    }
    free(w);
    return VS_OK;
}

/* (acc >> 22) clipped to 0..255, with acc read as a signed 32-bit sum. */
static inline uint8_t clip8(uint32_t acc)
{
    int32_t v = (int32_t)acc >> PRECISION_BITS;      /* arithmetic shift */
    return v < 0 ? 0 : v > 255 ? 255 : (uint8_t)v;
}

/* ---- horizontal pass --------------------------------------------------- */

/* dst (rows, dw, 3) <- src rows [row0, row0+rows) of (sh, sw, 3) filtered
 * along x.  Per output pixel: 3 accumulators over its window. */
static void pass_horizontal(const uint8_t *src, int sw, int row0, int rows,
                            uint8_t *dst, const struct axis *ax)
{
    const int dw = ax->out;
    for (int r = 0; r < rows; r++) {
        const uint8_t *in = src + ((size_t)(row0 + r) * sw) * 3;   /* (sw, 3) */
        uint8_t *out = dst + (size_t)r * dw * 3;                    /* (dw, 3) */
        for (int o = 0; o < dw; o++) {
            const int32_t *k = ax->k + (size_t)o * ax->stride;      /* (n) */
            const uint8_t *p = in + (size_t)ax->first[o] * 3;       /* (n, 3) */
            const int n = ax->count[o];
            uint32_t s0 = ROUND_HALF, s1 = ROUND_HALF, s2 = ROUND_HALF;
            for (int i = 0; i < n; i++) {
                uint32_t c = (uint32_t)k[i];
                s0 += p[3 * i + 0] * c;
                s1 += p[3 * i + 1] * c;
                s2 += p[3 * i + 2] * c;
            }
            out[3 * o + 0] = clip8(s0);
            out[3 * o + 1] = clip8(s1);
            out[3 * o + 2] = clip8(s2);
        }
    }
}

/* ---- vertical pass ----------------------------------------------------- */

/* dst (dh, w, 3) <- src (h_any, w, 3) filtered along y, where the window
 * of output row o starts at source row first[o] - row0.  acc: uint32
 * (w*3) scratch.  The loop runs over a whole row per tap, so the inner
 * loop is a contiguous multiply-add the compiler vectorises. */
static void pass_vertical(const uint8_t *src, int w, int row0, uint8_t *dst,
                          const struct axis *ay, uint32_t *acc)
{
    const size_t rowlen = (size_t)w * 3;
    for (int o = 0; o < ay->out; o++) {
        const int32_t *k = ay->k + (size_t)o * ay->stride;          /* (n) */
        const uint8_t *in = src + (size_t)(ay->first[o] - row0) * rowlen;
        const int n = ay->count[o];
        for (size_t j = 0; j < rowlen; j++) acc[j] = ROUND_HALF;
        for (int i = 0; i < n; i++) {
            const uint8_t *row = in + (size_t)i * rowlen;           /* (w*3) */
            const uint32_t c = (uint32_t)k[i];
            for (size_t j = 0; j < rowlen; j++) acc[j] += row[j] * c;
        }
        uint8_t *out = dst + (size_t)o * rowlen;
        for (size_t j = 0; j < rowlen; j++) out[j] = clip8(acc[j]);
    }
}

/* ---- AVX2 paths (x86-64 only, chosen at run time) ---------------------
 *
 * Same integer sums as the scalar passes above, reordered so that eight
 * independent sums sit in the eight int32 lanes of a ymm register: the
 * result is bit-identical because integer addition is associative.
 *
 * Horizontal: eight source rows are first transposed (SSE2 byte unpacks)
 * into T (sw*3, 8): T[j][r] = row r, byte j.  Then for each output pixel
 * and tap one broadcast weight multiplies the 8 rows' R, G and B at once
 * (vpmovzxbd + vpmulld + vpaddd), so the weights are read once per 8 rows
 * and there is no horizontal reduction.
 * Vertical: lanes are 8 consecutive bytes of an output row; the taps walk
 * down the intermediate rows with the sum kept in a register. */
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define VS_RESAMPLE_AVX2 1

typedef uint32_t v8u __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
typedef uint8_t v8b __attribute__((vector_size(8)));

/* T (cols, 8) <- 8 rows of `cols` bytes each, `stride` bytes apart. */
static void transpose8(const uint8_t *src, size_t stride, size_t cols, uint8_t *t)
{
    size_t j = 0;
    for (; j + 16 <= cols; j += 16) {
        __m128i r[8], a[8], b[8];
        for (int i = 0; i < 8; i++) r[i] = _mm_loadu_si128((const __m128i *)(src + i * stride + j));
        /* a: byte pairs of rows (0,1) (2,3) (4,5) (6,7); lo = bytes 0..7, hi = 8..15 */
        for (int i = 0; i < 4; i++) {
            a[2 * i] = _mm_unpacklo_epi8(r[2 * i], r[2 * i + 1]);
            a[2 * i + 1] = _mm_unpackhi_epi8(r[2 * i], r[2 * i + 1]);
        }
        /* b: 4-row groups, 4 columns per register: b0 cols 0-3 rows 0-3 ... */
        b[0] = _mm_unpacklo_epi16(a[0], a[2]);   /* cols 0..3,  rows 0..3 */
        b[1] = _mm_unpackhi_epi16(a[0], a[2]);   /* cols 4..7 */
        b[2] = _mm_unpacklo_epi16(a[1], a[3]);   /* cols 8..11 */
        b[3] = _mm_unpackhi_epi16(a[1], a[3]);   /* cols 12..15 */
        b[4] = _mm_unpacklo_epi16(a[4], a[6]);   /* same, rows 4..7 */
        b[5] = _mm_unpackhi_epi16(a[4], a[6]);
        b[6] = _mm_unpacklo_epi16(a[5], a[7]);
        b[7] = _mm_unpackhi_epi16(a[5], a[7]);
        /* c: 8 rows of 2 columns per register, in column order */
        __m128i *out = (__m128i *)(void *)(t + j * 8);
        for (int i = 0; i < 4; i++) {
            _mm_storeu_si128(out + 2 * i, _mm_unpacklo_epi32(b[i], b[i + 4]));
            _mm_storeu_si128(out + 2 * i + 1, _mm_unpackhi_epi32(b[i], b[i + 4]));
        }
    }
    for (; j < cols; j++)
        for (int i = 0; i < 8; i++) t[j * 8 + i] = src[i * stride + j];
}

/* transpose8 with 32-byte rows: the same three unpack stages act on both
 * 128-bit halves at once (columns j..j+15 low, j+16..j+31 high). */
__attribute__((target("avx2")))
static void transpose8_avx2(const uint8_t *src, size_t stride, size_t cols, uint8_t *t)
{
    size_t j = 0;
    for (; j + 32 <= cols; j += 32) {
        const uint8_t *s = src + j;
        __m256i r0 = _mm256_loadu_si256((const __m256i *)(const void *)(s));
        __m256i r1 = _mm256_loadu_si256((const __m256i *)(const void *)(s + stride));
        __m256i r2 = _mm256_loadu_si256((const __m256i *)(const void *)(s + 2 * stride));
        __m256i r3 = _mm256_loadu_si256((const __m256i *)(const void *)(s + 3 * stride));
        __m256i r4 = _mm256_loadu_si256((const __m256i *)(const void *)(s + 4 * stride));
        __m256i r5 = _mm256_loadu_si256((const __m256i *)(const void *)(s + 5 * stride));
        __m256i r6 = _mm256_loadu_si256((const __m256i *)(const void *)(s + 6 * stride));
        __m256i r7 = _mm256_loadu_si256((const __m256i *)(const void *)(s + 7 * stride));
        /* byte pairs of rows (0,1) (2,3) (4,5) (6,7) */
        __m256i a0 = _mm256_unpacklo_epi8(r0, r1), a1 = _mm256_unpackhi_epi8(r0, r1);
        __m256i a2 = _mm256_unpacklo_epi8(r2, r3), a3 = _mm256_unpackhi_epi8(r2, r3);
        __m256i a4 = _mm256_unpacklo_epi8(r4, r5), a5 = _mm256_unpackhi_epi8(r4, r5);
        __m256i a6 = _mm256_unpacklo_epi8(r6, r7), a7 = _mm256_unpackhi_epi8(r6, r7);
        /* 4-row groups, 4 columns each (per half) */
        __m256i b0 = _mm256_unpacklo_epi16(a0, a2), b1 = _mm256_unpackhi_epi16(a0, a2);
        __m256i b2 = _mm256_unpacklo_epi16(a1, a3), b3 = _mm256_unpackhi_epi16(a1, a3);
        __m256i b4 = _mm256_unpacklo_epi16(a4, a6), b5 = _mm256_unpackhi_epi16(a4, a6);
        __m256i b6 = _mm256_unpacklo_epi16(a5, a7), b7 = _mm256_unpackhi_epi16(a5, a7);
        /* 8 rows x 2 columns per half, in column order */
        __m256i c[8] = {
            _mm256_unpacklo_epi32(b0, b4), _mm256_unpackhi_epi32(b0, b4),
            _mm256_unpacklo_epi32(b1, b5), _mm256_unpackhi_epi32(b1, b5),
            _mm256_unpacklo_epi32(b2, b6), _mm256_unpackhi_epi32(b2, b6),
            _mm256_unpacklo_epi32(b3, b7), _mm256_unpackhi_epi32(b3, b7),
        };
        uint8_t *lo = t + j * 8, *hi = t + (j + 16) * 8;
        for (int i = 0; i < 8; i++) {
            _mm_storeu_si128((__m128i *)(void *)(lo + 16 * i), _mm256_castsi256_si128(c[i]));
            _mm_storeu_si128((__m128i *)(void *)(hi + 16 * i), _mm256_extracti128_si256(c[i], 1));
        }
    }
    transpose8(src + j, stride, cols - j, t + j * 8);
}

/* Lane-wise clip8 of 8 sums: (int32)acc >> 22, clamped to 0..255. */
__attribute__((target("avx2"))) static inline v8b clip8x8(v8u acc)
{
    v8i v = (v8i)acc >> PRECISION_BITS;
    v &= ~(v >> 31);                       /* negatives -> 0 */
    v8i over = v > 255;                    /* -1 where above 255 */
    v = (v & ~over) | (255 & over);
    return __builtin_convertvector(v, v8b);
}

__attribute__((target("avx2"))) static inline v8u load8(const uint8_t *p)
{
    /* vpmovzxbd: 8 bytes -> 8 uint32 lanes */
    return (v8u)_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)p));
}

/* As pass_horizontal; t: scratch of sw*3*8 bytes. */
__attribute__((target("avx2")))
static void pass_horizontal_avx2(const uint8_t *src, int sw, int row0, int rows,
                                 uint8_t *dst, const struct axis *ax, uint8_t *t)
{
    const int dw = ax->out;
    const size_t srow = (size_t)sw * 3, drow = (size_t)dw * 3;
    int r = 0;
    for (; r + 8 <= rows; r += 8) {
        transpose8_avx2(src + (size_t)(row0 + r) * srow, srow, srow, t); /* t: (sw*3, 8) */
        uint8_t *out = dst + (size_t)r * drow;                        /* (8, dw, 3) */
        for (int o = 0; o < dw; o++) {
            const int32_t *k = ax->k + (size_t)o * ax->stride;        /* (n) */
            const uint8_t *p = t + (size_t)ax->first[o] * 3 * 8;      /* (n, 3, 8) */
            const int n = ax->count[o];
            v8u s0 = {0}, s1, s2;
            s0 += ROUND_HALF;
            s1 = s0;
            s2 = s0;
            for (int i = 0; i < n; i++, p += 24) {
                v8u c = {0};
                c += (uint32_t)k[i];
                s0 += load8(p) * c;
                s1 += load8(p + 8) * c;
                s2 += load8(p + 16) * c;
            }
            v8b b0 = clip8x8(s0), b1 = clip8x8(s1), b2 = clip8x8(s2);
            for (int l = 0; l < 8; l++) {
                uint8_t *q = out + (size_t)l * drow + 3 * (size_t)o;
                q[0] = b0[l];
                q[1] = b1[l];
                q[2] = b2[l];
            }
        }
    }
    if (r < rows) pass_horizontal(src, sw, row0 + r, rows - r, dst + (size_t)r * drow, ax);
}

/* As pass_vertical (no scratch needed). */
__attribute__((target("avx2")))
static void pass_vertical_avx2(const uint8_t *src, int w, int row0, uint8_t *dst,
                               const struct axis *ay)
{
    const size_t rowlen = (size_t)w * 3;
    for (int o = 0; o < ay->out; o++) {
        const int32_t *k = ay->k + (size_t)o * ay->stride;            /* (n) */
        const uint8_t *in = src + (size_t)(ay->first[o] - row0) * rowlen;
        const int n = ay->count[o];
        uint8_t *out = dst + (size_t)o * rowlen;                      /* (w*3) */
        size_t j = 0;
        for (; j + 32 <= rowlen; j += 32) {      /* 4 x 8 lanes per tap walk */
            v8u s0 = {0}, s1, s2, s3;
            s0 += ROUND_HALF;
            s1 = s2 = s3 = s0;
            const uint8_t *p = in + j;
            for (int i = 0; i < n; i++, p += rowlen) {
                v8u c = {0};
                c += (uint32_t)k[i];
                s0 += load8(p) * c;
                s1 += load8(p + 8) * c;
                s2 += load8(p + 16) * c;
                s3 += load8(p + 24) * c;
            }
            v8b b[4] = {clip8x8(s0), clip8x8(s1), clip8x8(s2), clip8x8(s3)};
            memcpy(out + j, b, 32);
        }
        for (; j < rowlen; j++) {
            uint32_t s = ROUND_HALF;
            for (int i = 0; i < n; i++) s += in[(size_t)i * rowlen + j] * (uint32_t)k[i];
            out[j] = clip8(s);
        }
    }
}

/* libgcc fills the CPU model from a constructor before main(), so this only
 * reads it (no write from worker threads).  VS_RESAMPLE_NO_SIMD (any value)
 * forces the portable path: the tests use it to check both. */
static bool have_avx2(void)
{
    return __builtin_cpu_supports("avx2") && !getenv("VS_RESAMPLE_NO_SIMD");
}
#endif

/* ---- NEAREST ----------------------------------------------------------- */

/* Pillow's ImagingScaleAffine with a = [sw/dw, 0, 0, 0, sh/dh, 0], fill on:
 * source coordinates are running double sums (start at half a step, add
 * one step per pixel), truncated; out-of-range pixels stay black. */
static enum vs_status resize_nearest(const uint8_t *src, int sw, int sh,
                                     uint8_t *dst, int dw, int dh, struct vs_err *err)
{
    int *xin = malloc(sizeof *xin * (size_t)dw);                    /* (dw) */
    if (!xin) return vs_err_set(err, VS_NOMEM, "resize: no memory for %d columns", dw);
    const double ax = (double)(float)sw / dw, ay = (double)(float)sh / dh;
    double xo = 0.0 + ax * 0.5;
    int xmin = dw, xmax = 0;        /* output columns that map inside */
    for (int x = 0; x < dw; x++) {
        int xi = xo < 0.0 ? -1 : (int)xo;
        if (xi >= 0 && xi < sw) {
            xmax = x + 1;
            if (x < xmin) xmin = x;
            xin[x] = xi;
        }
        xo += ax;
    }
    double yo = 0.0 + ay * 0.5;
    for (int y = 0; y < dh; y++) {
        int yi = yo < 0.0 ? -1 : (int)yo;
        uint8_t *out = dst + (size_t)y * dw * 3;
        memset(out, 0, (size_t)dw * 3);
        if (yi >= 0 && yi < sh) {
            const uint8_t *in = src + (size_t)yi * sw * 3;
            for (int x = xmin; x < xmax; x++) memcpy(out + 3 * x, in + 3 * (size_t)xin[x], 3);
        }
        yo += ay;
    }
    free(xin);
    return VS_OK;
}

/* ---- the door ---------------------------------------------------------- */

enum vs_status vs_image_resize(const uint8_t *src, int sw, int sh,
                               uint8_t *dst, int dw, int dh,
                               enum vs_resample filter, struct vs_err *err)
{
    VS_ASSERT(src && dst);
    if (sw <= 0 || sh <= 0 || dw <= 0 || dh <= 0)
        return vs_err_set(err, VS_BAD_INPUT, "resize: bad size %dx%d -> %dx%d", sw, sh, dw, dh);
    const struct filter *flt = filter_of(filter);
    if (!flt && filter != VS_RESAMPLE_NEAREST)
        return vs_err_set(err, VS_BAD_INPUT,
                          "resize: unknown resample filter %d (Pillow knows 0..5)", (int)filter);
    size_t sbytes, dbytes;
    if (!vs_mul_size((size_t)sw * 3, (size_t)sh, &sbytes) ||
        !vs_mul_size((size_t)dw * 3, (size_t)dh, &dbytes))
        return vs_err_set(err, VS_TOO_LARGE, "resize: %dx%d -> %dx%d is too large", sw, sh, dw, dh);
    if (sw == dw && sh == dh) {                   /* Pillow: im.copy() */
        memcpy(dst, src, sbytes);
        return VS_OK;
    }
    if (!flt) return resize_nearest(src, sw, sh, dst, dw, dh, err);

    const bool need_h = dw != sw, need_v = dh != sh;
    struct axis ax = {0}, ay = {0};
    uint8_t *tmp = NULL, *tr = NULL;
    uint32_t *acc = NULL;
    enum vs_status st = VS_OK;
#ifdef VS_RESAMPLE_AVX2
    const bool simd = have_avx2();
#else
    const bool simd = false;
#endif

    if (need_v && (st = axis_build(&ay, sh, dh, flt, "height", err)) != VS_OK) goto out;
    if (need_h && (st = axis_build(&ax, sw, dw, flt, "width", err)) != VS_OK) goto out;
    /* Rows of the source the vertical pass reads: Pillow's ybox_first
     * (window start of output row 0) to ybox_last (window end of the last
     * output row); windows are monotonic, so that covers all of them.
     * Without a vertical pass the horizontal one covers every row. */
    const int yfirst = need_v ? ay.first[0] : 0;
    const int trows = need_v ? ay.first[dh - 1] + ay.count[dh - 1] - yfirst : sh;
    const int w = need_h ? dw : sw;       /* width seen by the vertical pass */
    if (need_h && need_v) {
        size_t tbytes;
        if (!vs_mul_size((size_t)dw * 3, (size_t)trows, &tbytes)) {
            st = vs_err_set(err, VS_TOO_LARGE, "resize: intermediate %dx%d too large", dw, trows);
            goto out;
        }
        tmp = malloc(tbytes ? tbytes : 1);              /* (trows, dw, 3) */
        if (!tmp) {
            st = vs_err_set(err, VS_NOMEM, "resize: no memory for a %dx%d intermediate", dw, trows);
            goto out;
        }
    }
    if (need_h && simd) {
        tr = malloc((size_t)sw * 3 * 8);                /* (sw*3, 8) */
        if (!tr) {
            st = vs_err_set(err, VS_NOMEM, "resize: no memory for %d source columns", sw);
            goto out;
        }
    }
    if (need_v && !simd) {
        acc = malloc(sizeof *acc * (size_t)w * 3);      /* (w*3) */
        if (!acc) {
            st = vs_err_set(err, VS_NOMEM, "resize: no memory for a %d-pixel row", w);
            goto out;
        }
    }
    /* horizontal: src rows [yfirst, yfirst+trows) -> tmp, or straight to dst */
    uint8_t *hout = need_v ? tmp : dst;
    if (need_h) {
#ifdef VS_RESAMPLE_AVX2
        if (simd) pass_horizontal_avx2(src, sw, yfirst, trows, hout, &ax, tr);
        else
#endif
            pass_horizontal(src, sw, yfirst, trows, hout, &ax);
    }
    /* vertical: tmp (its row 0 is source row yfirst) or src -> dst */
    if (need_v) {
        const uint8_t *vin = need_h ? tmp : src;
        const int row0 = need_h ? yfirst : 0;
#ifdef VS_RESAMPLE_AVX2
        if (simd) pass_vertical_avx2(vin, w, row0, dst, &ay);
        else
#endif
            pass_vertical(vin, w, row0, dst, &ay, acc);
    }
out:
    free(tmp);
    free(tr);
    free(acc);
    axis_free(&ax);
    axis_free(&ay);
    return st;
}
