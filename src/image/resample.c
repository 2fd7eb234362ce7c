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
    size_t nk;
    if (!vs_mul_size((size_t)out_size, (size_t)stride, &nk) ||
        nk > SIZE_MAX / sizeof(double))
        return vs_err_set(err, VS_TOO_LARGE, "resize %s: %d x %d weights overflow",
                          what, out_size, stride);
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
    uint8_t *tmp = NULL;
    uint32_t *acc = NULL;
    enum vs_status st = VS_OK;

    if (need_v && (st = axis_build(&ay, sh, dh, flt, "height", err)) != VS_OK) goto out;
    if (!need_h) {
        /* vertical only: read the source directly */
        acc = malloc(sizeof *acc * (size_t)sw * 3);
        if (!acc) {
            st = vs_err_set(err, VS_NOMEM, "resize: no memory for a %d-pixel row", sw);
            goto out;
        }
        pass_vertical(src, sw, 0, dst, &ay, acc);
        goto out;
    }
    if ((st = axis_build(&ax, sw, dw, flt, "width", err)) != VS_OK) goto out;
    if (!need_v) {                                /* horizontal only */
        pass_horizontal(src, sw, 0, sh, dst, &ax);
        goto out;
    }
    /* Rows of the source the vertical pass reads: Pillow's ybox_first
     * (window start of output row 0) to ybox_last (window end of the last
     * output row); windows are monotonic, so that covers all of them. */
    const int yfirst = ay.first[0];
    const int ylast = ay.first[dh - 1] + ay.count[dh - 1];
    const int trows = ylast - yfirst;
    size_t tbytes;
    if (!vs_mul_size((size_t)dw * 3, (size_t)trows, &tbytes)) {
        st = vs_err_set(err, VS_TOO_LARGE, "resize: intermediate %dx%d too large", dw, trows);
        goto out;
    }
    tmp = malloc(tbytes ? tbytes : 1);                  /* (trows, dw, 3) */
    acc = malloc(sizeof *acc * (size_t)dw * 3);         /* (dw*3) */
    if (!tmp || !acc) {
        st = vs_err_set(err, VS_NOMEM, "resize: no memory for a %dx%d intermediate", dw, trows);
        goto out;
    }
    pass_horizontal(src, sw, yfirst, trows, tmp, &ax);
    pass_vertical(tmp, dw, yfirst, dst, &ay, acc);
out:
    free(tmp);
    free(acc);
    axis_free(&ax);
    axis_free(&ay);
    return st;
}
