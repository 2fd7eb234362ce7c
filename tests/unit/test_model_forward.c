/* test_model_forward.c: the CPU backend's forward pass against a naive
 * double-precision reference written here from the formulas (direct
 * convolution, per-head attention loops, exact activations), on small
 * random ViTs of several shapes; batch invariance; forward_rows (images in
 * scattered buffers) against forward, directly and through the model's
 * gather fallback; the int8 path against fp32; the row kernels' AVX2 and
 * portable versions against each other; refusal of unsupported precisions
 * and bad batch sizes.
 *
 * Weights are random with a fixed seed, built in memory (no loader).  Sizes
 * are small so the test stays fast under ASan.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/backend.h"
#include "model/cpu_kernels.h"

/* ---- random numbers (splitmix64) --------------------------------------- */

static uint64_t rng_state;

static uint64_t rng_next(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* uniform in [-a, a] */
static float rng_uni(float a)
{
    return (float)(((double)(rng_next() >> 11) / 9007199254740992.0) * 2.0 - 1.0) * a;
}

/* ---- a random model ---------------------------------------------------- */

struct tmodel {
    struct vs_vit_config cfg;
    struct vs_vit_weights w;
    struct vs_vit_layer *layers;
    float *mem;          /* every tensor, one block */
    size_t used, cap;
};

static float *take(struct tmodel *m, size_t n, float lo_scale, float base)
{
    assert_true(m->used + n <= m->cap);
    float *p = m->mem + m->used;
    m->used += n;
    for (size_t i = 0; i < n; i++) p[i] = base + rng_uni(lo_scale);
    return p;
}

/* Linear weights uniform with variance 1/in (outputs keep unit scale, so
 * the logits are O(1) and errors are measured on a meaningful scale). */
static float *take_w(struct tmodel *m, int out, int in)
{
    return take(m, (size_t)out * in, sqrtf(3.0f / (float)in), 0.0f);
}

static void tmodel_init(struct tmodel *m, int C, int ih, int iw, int P, int D,
                        int heads, int mlp, int L, int labels, enum vs_act act,
                        bool qkv_bias, uint64_t seed)
{
    memset(m, 0, sizeof *m);
    rng_state = seed;
    struct vs_vit_config *g = &m->cfg;
    g->channels = C;
    g->image_h = ih;
    g->image_w = iw;
    g->patch = P;
    g->grid_h = ih / P;
    g->grid_w = iw / P;
    g->tokens = g->grid_h * g->grid_w + 1;
    g->hidden = D;
    g->heads = heads;
    g->mlp = mlp;
    g->layers = L;
    g->labels = labels;
    g->ln_eps = 1e-12f;
    g->act = act;
    const size_t per_layer = 4 * (size_t)D + 4 * (size_t)D * D + 4 * (size_t)D +
                             2 * (size_t)D * mlp + mlp + D;
    m->cap = (size_t)D * C * P * P + D + D + (size_t)g->tokens * D + L * per_layer +
             2 * (size_t)D + (size_t)labels * D + labels;
    m->mem = malloc(m->cap * sizeof(float));
    m->layers = calloc((size_t)(L > 0 ? L : 1), sizeof *m->layers);
    assert_non_null(m->mem);
    assert_non_null(m->layers);
    struct vs_vit_weights *w = &m->w;
    w->patch_w = take_w(m, D, C * P * P);
    w->patch_b = take(m, D, 0.1f, 0.0f);
    w->cls = take(m, D, 1.0f, 0.0f);
    w->pos = take(m, (size_t)g->tokens * D, 0.5f, 0.0f);
    for (int l = 0; l < L; l++) {
        struct vs_vit_layer *y = &m->layers[l];
        y->ln1_g = take(m, D, 0.2f, 1.0f);
        y->ln1_b = take(m, D, 0.1f, 0.0f);
        y->q_w = take_w(m, D, D);
        y->k_w = take_w(m, D, D);
        y->v_w = take_w(m, D, D);
        y->o_w = take_w(m, D, D);
        float *qb = take(m, D, 0.1f, 0.0f), *kb = take(m, D, 0.1f, 0.0f);
        float *vb = take(m, D, 0.1f, 0.0f);
        y->q_b = qkv_bias ? qb : NULL;
        y->k_b = qkv_bias ? kb : NULL;
        y->v_b = qkv_bias ? vb : NULL;
        y->o_b = take(m, D, 0.1f, 0.0f);
        y->ln2_g = take(m, D, 0.2f, 1.0f);
        y->ln2_b = take(m, D, 0.1f, 0.0f);
        y->fc1_w = take_w(m, mlp, D);
        y->fc1_b = take(m, mlp, 0.1f, 0.0f);
        y->fc2_w = take_w(m, D, mlp);
        y->fc2_b = take(m, D, 0.1f, 0.0f);
    }
    w->layer = m->layers;
    w->lnf_g = take(m, D, 0.2f, 1.0f);
    w->lnf_b = take(m, D, 0.1f, 0.0f);
    w->head_w = take_w(m, labels, D);
    w->head_b = take(m, labels, 0.1f, 0.0f);
}

static void tmodel_free(struct tmodel *m)
{
    free(m->mem);
    free(m->layers);
}

static float *random_pixels(const struct vs_vit_config *g, int n)
{
    const size_t count = (size_t)n * g->channels * g->image_h * g->image_w;
    float *p = malloc(count * sizeof(float));
    assert_non_null(p);
    for (size_t i = 0; i < count; i++) p[i] = rng_uni(1.0f);   /* like normalised pixels */
    return p;
}

/* ---- the reference: plain loops in double ------------------------------ */

static double act_ref(enum vs_act a, double x)
{
    switch (a) {
    case VS_ACT_GELU:       return 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
    case VS_ACT_GELU_TANH:  return 0.5 * x * (1.0 + tanh(sqrt(2.0 / 3.14159265358979323846) * (x + 0.044715 * x * x * x)));
    case VS_ACT_RELU:       return x > 0 ? x : 0;
    case VS_ACT_QUICK_GELU: return x / (1.0 + exp(-1.702 * x));
    case VS_ACT_GELU_FAST:  return 0.5 * x * (1.0 + tanh(x * 0.7978845608 * (1.0 + 0.044715 * x * x)));
    case VS_ACT_SILU:       return x / (1.0 + exp(-x));
    }
    return NAN;
}

static void ln_ref(double *y, const double *x, const float *g, const float *b, int D,
                   double eps)
{
    double mean = 0, var = 0;
    for (int d = 0; d < D; d++) mean += x[d];
    mean /= D;
    for (int d = 0; d < D; d++) var += (x[d] - mean) * (x[d] - mean);
    var /= D;
    for (int d = 0; d < D; d++) y[d] = (x[d] - mean) / sqrt(var + eps) * g[d] + b[d];
}

/* y (rows, out) = x (rows, in) W^T + b, W (out, in) */
static void linear_ref(double *y, const double *x, int rows, int in, int out,
                       const float *W, const float *b)
{
    for (int r = 0; r < rows; r++)
        for (int o = 0; o < out; o++) {
            double s = b ? b[o] : 0.0;
            for (int i = 0; i < in; i++) s += x[(size_t)r * in + i] * W[(size_t)o * in + i];
            y[(size_t)r * out + o] = s;
        }
}

/* One image: pixels (C, H, W) -> logits (labels). */
static void forward_ref(const struct tmodel *m, const float *pix, double *logits)
{
    const struct vs_vit_config *g = &m->cfg;
    const struct vs_vit_weights *w = &m->w;
    const int T = g->tokens, D = g->hidden, H = g->heads, dh = D / H, F = g->mlp;
    const int C = g->channels, P = g->patch;
    double *x = calloc((size_t)T * D, sizeof(double));
    double *xn = calloc((size_t)T * D, sizeof(double));
    double *q = calloc((size_t)T * D, sizeof(double));
    double *k = calloc((size_t)T * D, sizeof(double));
    double *v = calloc((size_t)T * D, sizeof(double));
    double *a = calloc((size_t)T * D, sizeof(double));
    double *o = calloc((size_t)T * D, sizeof(double));
    double *f = calloc((size_t)T * F, sizeof(double));
    double *s = calloc((size_t)T, sizeof(double));
    double *c = calloc((size_t)D, sizeof(double));
    assert_true(x && xn && q && k && v && a && o && f && s && c);

    /* embeddings: token 0 = cls, token 1 + gy*gw + gx = conv at that patch */
    for (int d = 0; d < D; d++) x[d] = (double)w->cls[d] + w->pos[d];
    for (int gy = 0; gy < g->grid_h; gy++)
        for (int gx = 0; gx < g->grid_w; gx++) {
            const int t = 1 + gy * g->grid_w + gx;
            for (int d = 0; d < D; d++) {
                double acc = w->patch_b[d];
                for (int ch = 0; ch < C; ch++)
                    for (int ky = 0; ky < P; ky++)
                        for (int kx = 0; kx < P; kx++)
                            acc += (double)w->patch_w[(((size_t)d * C + ch) * P + ky) * P + kx] *
                                   pix[((size_t)ch * g->image_h + gy * P + ky) * g->image_w +
                                       gx * P + kx];
                x[(size_t)t * D + d] = acc + w->pos[(size_t)t * D + d];
            }
        }

    for (int l = 0; l < g->layers; l++) {
        const struct vs_vit_layer *y = &w->layer[l];
        for (int t = 0; t < T; t++)
            ln_ref(xn + (size_t)t * D, x + (size_t)t * D, y->ln1_g, y->ln1_b, D, g->ln_eps);
        linear_ref(q, xn, T, D, D, y->q_w, y->q_b);
        linear_ref(k, xn, T, D, D, y->k_w, y->k_b);
        linear_ref(v, xn, T, D, D, y->v_w, y->v_b);
        for (int h = 0; h < H; h++)
            for (int i = 0; i < T; i++) {
                double mx = -INFINITY, sum = 0;
                for (int j = 0; j < T; j++) {
                    double dot = 0;
                    for (int e = 0; e < dh; e++)
                        dot += q[(size_t)i * D + h * dh + e] * k[(size_t)j * D + h * dh + e];
                    s[j] = dot / sqrt((double)dh);
                    mx = s[j] > mx ? s[j] : mx;
                }
                for (int j = 0; j < T; j++) sum += (s[j] = exp(s[j] - mx));
                for (int e = 0; e < dh; e++) {
                    double acc = 0;
                    for (int j = 0; j < T; j++) acc += s[j] / sum * v[(size_t)j * D + h * dh + e];
                    a[(size_t)i * D + h * dh + e] = acc;
                }
            }
        linear_ref(o, a, T, D, D, y->o_w, y->o_b);
        for (size_t i = 0; i < (size_t)T * D; i++) x[i] += o[i];
        for (int t = 0; t < T; t++)
            ln_ref(xn + (size_t)t * D, x + (size_t)t * D, y->ln2_g, y->ln2_b, D, g->ln_eps);
        linear_ref(f, xn, T, D, F, y->fc1_w, y->fc1_b);
        for (size_t i = 0; i < (size_t)T * F; i++) f[i] = act_ref(g->act, f[i]);
        linear_ref(o, f, T, F, D, y->fc2_w, y->fc2_b);
        for (size_t i = 0; i < (size_t)T * D; i++) x[i] += o[i];
    }
    ln_ref(c, x, w->lnf_g, w->lnf_b, D, g->ln_eps);
    linear_ref(logits, c, 1, D, g->labels, w->head_w, w->head_b);
    free(x); free(xn); free(q); free(k); free(v); free(a); free(o); free(f); free(s); free(c);
}

/* ---- helpers ----------------------------------------------------------- */

static void *backend_new(const struct tmodel *m, enum vs_precision prec, int max_batch)
{
    struct vs_backend_opts o = {.precision = prec, .threads = 2, .max_batch = max_batch};
    struct vs_err err = {0};
    void *ctx = NULL;
    enum vs_status st = vs_backend_cpu.create(&m->cfg, &m->w, &o, &ctx, &err);
    if (st != VS_OK) fail_msg("create: %s", err.msg);
    assert_non_null(ctx);
    return ctx;
}

static void run_forward(void *ctx, const float *pix, int n, float *logits)
{
    struct vs_err err = {0};
    enum vs_status st = vs_backend_cpu.forward(ctx, pix, n, logits, &err);
    if (st != VS_OK) fail_msg("forward n=%d: %s", n, err.msg);
}

/* fp32 backend vs the double reference on nimg images, batched. */
static void check_vs_reference(struct tmodel *m, int nimg)
{
    const struct vs_vit_config *g = &m->cfg;
    float *pix = random_pixels(g, nimg);
    float *out = malloc((size_t)nimg * g->labels * sizeof(float));
    double *ref = malloc((size_t)g->labels * sizeof(double));
    assert_true(out && ref);
    void *ctx = backend_new(m, VS_PRECISION_FP32, nimg);
    run_forward(ctx, pix, nimg, out);
    const size_t img = (size_t)g->channels * g->image_h * g->image_w;
    double worst = 0, scale = 1.0;
    for (int b = 0; b < nimg; b++) {
        forward_ref(m, pix + b * img, ref);
        for (int j = 0; j < g->labels; j++) scale = fmax(scale, fabs(ref[j]));
        for (int j = 0; j < g->labels; j++)
            worst = fmax(worst, fabs(ref[j] - (double)out[(size_t)b * g->labels + j]));
    }
    print_message("  D=%d H=%d L=%d labels=%d act=%d image %dx%d/%d: max|d| = %.3g "
                  "(logit scale %.3g)\n", g->hidden, g->heads, g->layers, g->labels,
                  (int)g->act, g->image_h, g->image_w, g->patch, worst, scale);
    assert_true(worst <= 1e-4 * scale);
    vs_backend_cpu.destroy(ctx);
    free(pix);
    free(out);
    free(ref);
}

/* ---- tests -------------------------------------------------------------- */

/* non-square image 32x48, patch 8, 3 layers, 4 heads, 7 labels, GELU */
static void test_ref_nonsquare_3layers(void **state)
{
    (void)state;
    struct tmodel m;
    tmodel_init(&m, 3, 32, 48, 8, 32, 4, 64, 3, 7, VS_ACT_GELU, true, 11);
    check_vs_reference(&m, 2);
    tmodel_free(&m);
}

/* 1 layer, 1 head, 1 label, no qkv bias, odd sizes (D=20, T=17) */
static void test_ref_one_head_no_qkv_bias(void **state)
{
    (void)state;
    struct tmodel m;
    tmodel_init(&m, 3, 16, 16, 4, 20, 1, 36, 1, 1, VS_ACT_GELU_TANH, false, 12);
    check_vs_reference(&m, 1);
    tmodel_free(&m);
}

/* layer_norm_eps 0 (config.json may say so: docs/checkpoints.md accepts
 * any finite eps >= 0; torch's LayerNorm takes it): created and correct */
static void test_ref_ln_eps_zero(void **state)
{
    (void)state;
    struct tmodel m;
    tmodel_init(&m, 3, 16, 16, 8, 16, 2, 32, 1, 3, VS_ACT_GELU, true, 13);
    m.cfg.ln_eps = 0.0f;
    check_vs_reference(&m, 1);
    tmodel_free(&m);
}

/* every activation, 2 heads, 2 layers, one channel, 12x20 patch 4 */
static void test_ref_every_activation(void **state)
{
    (void)state;
    const enum vs_act acts[] = {VS_ACT_GELU, VS_ACT_GELU_TANH, VS_ACT_RELU,
                                VS_ACT_QUICK_GELU, VS_ACT_GELU_FAST, VS_ACT_SILU};
    for (size_t i = 0; i < sizeof acts / sizeof acts[0]; i++) {
        struct tmodel m;
        tmodel_init(&m, 1, 12, 20, 4, 24, 2, 48, 2, 5, acts[i], i % 2 == 0, 20 + i);
        check_vs_reference(&m, 2);
        tmodel_free(&m);
    }
}

/* Batch n gives the same logits as n single-image runs, bit for bit: the
 * backend runs a batch image by image through the one-image plan, so no
 * GEMM's blocking depends on n. */
static void test_batch_invariance(void **state)
{
    (void)state;
    struct tmodel m;
    tmodel_init(&m, 3, 32, 32, 8, 32, 4, 64, 2, 7, VS_ACT_GELU, true, 31);
    const struct vs_vit_config *g = &m.cfg;
    const int N = 5;
    float *pix = random_pixels(g, N);
    float *one = malloc((size_t)N * g->labels * sizeof(float));
    float *bat = malloc((size_t)N * g->labels * sizeof(float));
    assert_true(one && bat);
    void *ctx = backend_new(&m, VS_PRECISION_FP32, N);
    const size_t img = (size_t)g->channels * g->image_h * g->image_w;
    for (int b = 0; b < N; b++) run_forward(ctx, pix + b * img, 1, one + (size_t)b * g->labels);
    /* The contract: an image's logits do not depend on the batch it rides
     * in, bit for bit (the server batches concurrent requests). */
    for (int n = 1; n <= N; n++) {
        run_forward(ctx, pix, n, bat);
        for (int i = 0; i < n * g->labels; i++) assert_true(bat[i] == one[i]);
    }
    print_message("  batched (n = 1..%d) vs one at a time: bitwise equal\n", N);
    vs_backend_cpu.destroy(ctx);
    free(pix);
    free(one);
    free(bat);
    tmodel_free(&m);
}

/* forward_rows: each image in its own heap buffer (scattered, with other
 * allocations between them), handed over in reverse order, gives the bits
 * of forward() on one contiguous buffer and of single-image forwards; the
 * same through vs_backend_forward_rows, which gathers for a backend
 * without forward_rows; bad arguments are refused with logits untouched. */
static void check_rows(void *ctx, int prec_int8, const struct vs_vit_config *g)
{
    enum { N = 5 };
    const size_t img = (size_t)g->channels * g->image_h * g->image_w;
    const size_t L = (size_t)g->labels, nl = N * L;
    float *pix = random_pixels(g, N);
    float *one = malloc(nl * sizeof(float)), *bat = malloc(nl * sizeof(float));
    float *got = malloc(nl * sizeof(float));
    float *buf[N];
    void *decoy[N];
    assert_true(one && bat && got);
    for (int b = 0; b < N; b++) {
        decoy[b] = malloc(1000 + 4096 * (size_t)b);   /* keeps the buffers apart */
        buf[b] = malloc(img * sizeof(float));
        assert_true(decoy[b] && buf[b]);
        memcpy(buf[b], pix + b * img, img * sizeof(float));
    }
    for (int b = 0; b < N; b++) run_forward(ctx, pix + b * img, 1, one + b * L);
    run_forward(ctx, pix, N, bat);
    assert_memory_equal(bat, one, nl * sizeof(float));

    struct vs_err err = {0};
    const float *rev[N], *fwd[N];
    for (int i = 0; i < N; i++) {
        rev[i] = buf[N - 1 - i];
        fwd[i] = buf[i];
    }
    for (int n = 1; n <= N; n++) {       /* the last n images, reversed */
        memset(got, 0xff, nl * sizeof(float));
        enum vs_status st = vs_backend_cpu.forward_rows(ctx, rev + (N - n), n, got, &err);
        if (st != VS_OK) fail_msg("forward_rows n=%d: %s", n, err.msg);
        for (int i = 0; i < n; i++)      /* rev[N - n + i] = buf[n - 1 - i] */
            assert_memory_equal(got + i * L, one + (size_t)(n - 1 - i) * L, L * sizeof(float));
    }
    assert_int_equal(vs_backend_cpu.forward_rows(ctx, fwd, N, got, &err), VS_OK);
    assert_memory_equal(got, bat, nl * sizeof(float));
    /* the same image twice in one batch */
    const float *dup[3] = {buf[2], buf[2], buf[0]};
    assert_int_equal(vs_backend_cpu.forward_rows(ctx, dup, 3, got, &err), VS_OK);
    assert_memory_equal(got, one + 2 * L, L * sizeof(float));
    assert_memory_equal(got + L, one + 2 * L, L * sizeof(float));
    assert_memory_equal(got + 2 * L, one, L * sizeof(float));

    /* the model's helper: rows straight to the backend (no gather buffer
     * needed), and gathered for a backend that lacks forward_rows */
    struct vs_backend_ops no_rows = vs_backend_cpu;
    no_rows.forward_rows = NULL;
    float *gather = malloc((size_t)N * img * sizeof(float));
    assert_non_null(gather);
    memset(got, 0xff, nl * sizeof(float));
    assert_int_equal(vs_backend_forward_rows(&vs_backend_cpu, ctx, NULL, img, rev, N, got, &err),
                     VS_OK);
    for (int i = 0; i < N; i++)
        assert_memory_equal(got + i * L, one + (size_t)(N - 1 - i) * L, L * sizeof(float));
    memset(got, 0xff, nl * sizeof(float));
    assert_int_equal(vs_backend_forward_rows(&no_rows, ctx, gather, img, rev, N, got, &err),
                     VS_OK);
    for (int i = 0; i < N; i++)
        assert_memory_equal(got + i * L, one + (size_t)(N - 1 - i) * L, L * sizeof(float));
    /* it did gather: the buffer holds the images in rows' order */
    for (int i = 0; i < N; i++)
        assert_memory_equal(gather + i * img, rev[i], img * sizeof(float));

    /* refusals, logits untouched */
    memset(got, 0, nl * sizeof(float));
    float *zero = calloc(nl, sizeof(float));
    assert_non_null(zero);
    assert_int_equal(vs_backend_cpu.forward_rows(ctx, fwd, 0, got, &err), VS_BAD_INPUT);
    assert_int_equal(vs_backend_cpu.forward_rows(ctx, fwd, N + 1, got, &err), VS_BAD_INPUT);
    assert_non_null(strstr(err.msg, "6"));
    assert_int_equal(vs_backend_cpu.forward_rows(ctx, NULL, 1, got, &err), VS_BAD_INPUT);
    assert_int_equal(vs_backend_cpu.forward_rows(ctx, fwd, 1, NULL, &err), VS_BAD_INPUT);
    const float *hole[2] = {buf[0], NULL};
    err.msg[0] = '\0';
    assert_int_equal(vs_backend_forward_rows(&no_rows, ctx, gather, img, hole, 2, got, &err),
                     VS_BAD_INPUT);
    assert_non_null(strstr(err.msg, "image 1 of 2"));
    assert_int_equal(vs_backend_forward_rows(&vs_backend_cpu, ctx, NULL, img, hole, 2, got, &err),
                     VS_BAD_INPUT);
    assert_memory_equal(got, zero, nl * sizeof(float));
    print_message("  %s: forward_rows (scattered, reversed, duplicated; gathered fallback) "
                  "== forward == singles, bitwise\n", prec_int8 ? "int8" : "fp32");

    for (int b = 0; b < N; b++) { free(buf[b]); free(decoy[b]); }
    free(gather); free(pix); free(one); free(bat); free(got); free(zero);
}

static void test_forward_rows(void **state)
{
    (void)state;
    struct tmodel m;
    tmodel_init(&m, 3, 32, 32, 8, 32, 4, 64, 2, 7, VS_ACT_GELU, true, 33);
    void *ctx = backend_new(&m, VS_PRECISION_FP32, 5);
    check_rows(ctx, 0, &m.cfg);
    vs_backend_cpu.destroy(ctx);
    ctx = backend_new(&m, VS_PRECISION_INT8, 5);
    check_rows(ctx, 1, &m.cfg);
    vs_backend_cpu.destroy(ctx);
    tmodel_free(&m);
}

/* int8: close to fp32 and the same top-1 on most inputs.  Bounds: logits
 * cosine >= 0.99 over all images, max |d| <= 0.15 x logit scale, argmax
 * equal on >= 80% of 24 images (10 labels). */
static void test_int8_close_to_fp32(void **state)
{
    (void)state;
    struct tmodel m;
    tmodel_init(&m, 3, 32, 32, 8, 64, 4, 128, 3, 10, VS_ACT_GELU, true, 41);
    const struct vs_vit_config *g = &m.cfg;
    const int N = 24;
    float *pix = random_pixels(g, N);
    float *f32 = malloc((size_t)N * g->labels * sizeof(float));
    float *i8 = malloc((size_t)N * g->labels * sizeof(float));
    assert_true(f32 && i8);
    void *c32 = backend_new(&m, VS_PRECISION_FP32, N);
    void *c8 = backend_new(&m, VS_PRECISION_INT8, N);
    run_forward(c32, pix, N, f32);
    run_forward(c8, pix, N, i8);
    double dot = 0, na = 0, nb = 0, worst = 0, scale = 0;
    int agree = 0;
    for (int b = 0; b < N; b++) {
        int a1 = 0, a2 = 0;
        for (int j = 0; j < g->labels; j++) {
            const float x = f32[b * g->labels + j], y = i8[b * g->labels + j];
            dot += (double)x * y;
            na += (double)x * x;
            nb += (double)y * y;
            worst = fmax(worst, fabs((double)x - y));
            scale = fmax(scale, fabs(x));
            if (x > f32[b * g->labels + a1]) a1 = j;
            if (y > i8[b * g->labels + a2]) a2 = j;
        }
        agree += a1 == a2;
    }
    const double cosine = dot / sqrt(na * nb);
    print_message("  int8 vs fp32: cosine %.5f, max|d| %.4f (scale %.3f), top-1 %d/%d\n",
                  cosine, worst, scale, agree, N);
    assert_true(cosine >= 0.99);
    assert_true(worst <= 0.15 * scale);
    assert_true(agree * 5 >= N * 4);
    /* and int8 is not secretly fp32 */
    assert_true(worst > 0.0);
    /* int8 one image at a time (another plan, same weight layout) vs the
     * batch: per-token quantization has no cross-talk, so only float
     * rounding differs (it may flip a quantization step: bound 1%) */
    const size_t img = (size_t)g->channels * g->image_h * g->image_w;
    double bworst = 0;
    for (int b = 0; b < 3; b++) {
        float one[10];
        run_forward(c8, pix + b * img, 1, one);
        for (int j = 0; j < g->labels; j++)
            bworst = fmax(bworst, fabs((double)one[j] - i8[b * g->labels + j]));
    }
    print_message("  int8 single vs batched: max|d| %.3g\n", bworst);
    assert_true(bworst == 0.0);
    /* the int8 Linears on oneDNN (VS_CPU_IGEMM=onednn) and on the own
     * GEMM (the default without VNNI): both exact integer sums, the same
     * bits */
    setenv("VS_CPU_IGEMM", "onednn", 1);
    void *cd = backend_new(&m, VS_PRECISION_INT8, N);
    unsetenv("VS_CPU_IGEMM");
    float *i8d = malloc((size_t)N * g->labels * sizeof(float));
    assert_non_null(i8d);
    run_forward(cd, pix, N, i8d);
    print_message("  int8 Linears on %s vs on oneDNN: %s\n",
                  vs_backend_cpu.device_name(c8),
                  memcmp(i8, i8d, (size_t)N * g->labels * sizeof(float)) ? "differ" : "same bits");
    assert_memory_equal(i8, i8d, (size_t)N * g->labels * sizeof(float));
    free(i8d);
    vs_backend_cpu.destroy(cd);
    vs_backend_cpu.destroy(c32);
    vs_backend_cpu.destroy(c8);
    free(pix);
    free(f32);
    free(i8);
    tmodel_free(&m);
}

static void test_unsupported_and_bad_batch(void **state)
{
    (void)state;
    struct tmodel m;
    tmodel_init(&m, 3, 16, 16, 8, 16, 2, 32, 1, 3, VS_ACT_GELU, true, 51);
    const enum vs_precision bad[2] = {VS_PRECISION_FP16, VS_PRECISION_BF16};
    const char *names[2] = {"fp16", "bf16"};
    for (int i = 0; i < 2; i++) {
        struct vs_backend_opts o = {.precision = bad[i], .threads = 1, .max_batch = 2};
        struct vs_err err = {0};
        void *ctx = (void *)&o;   /* must stay untouched */
        assert_int_equal(vs_backend_cpu.create(&m.cfg, &m.w, &o, &ctx, &err), VS_UNSUPPORTED);
        assert_ptr_equal(ctx, (void *)&o);
        assert_non_null(strstr(err.msg, names[i]));
    }
    void *ctx = backend_new(&m, VS_PRECISION_FP32, 2);
    float *pix = random_pixels(&m.cfg, 3);
    float logits[9] = {42, 42, 42, 42, 42, 42, 42, 42, 42};
    struct vs_err err = {0};
    assert_int_equal(vs_backend_cpu.forward(ctx, pix, 0, logits, &err), VS_BAD_INPUT);
    assert_int_equal(vs_backend_cpu.forward(ctx, pix, 3, logits, &err), VS_BAD_INPUT);
    assert_non_null(strstr(err.msg, "3"));
    for (int i = 0; i < 9; i++) assert_true(logits[i] == 42.0f);
    assert_non_null(vs_backend_cpu.device_name(ctx));
    vs_backend_cpu.destroy(ctx);
    /* a config that cannot be split into heads */
    struct vs_vit_config bad_cfg = m.cfg;
    bad_cfg.heads = 3;
    struct vs_backend_opts o = {.precision = VS_PRECISION_FP32, .threads = 1, .max_batch = 1};
    void *c2 = NULL;
    assert_int_equal(vs_backend_cpu.create(&bad_cfg, &m.w, &o, &c2, &err), VS_BAD_INPUT);
    assert_null(c2);
    free(pix);
    tmodel_free(&m);
}

/* The dispatched kernels (AVX2 on most machines) against the portable ones
 * and against double math, on lengths that exercise the vector tails. */
static void test_kernels(void **state)
{
    (void)state;
    const struct vs_cpu_kernels *k = vs_model_cpu_kernels(), *p = vs_model_cpu_kernels_generic();
    print_message("  row kernels: %s\n", k->isa);
    rng_state = 61;
    float x[80], y1[80], y2[80], gg[80], bb[80];
    int8_t q1[80], q2[80];
    for (int len = 1; len <= 80; len++) {
        for (int i = 0; i < len; i++) {
            x[i] = rng_uni(8.0f);
            gg[i] = 1.0f + rng_uni(0.5f);
            bb[i] = rng_uni(0.5f);
        }
        /* softmax vs double, plain and scaled (attention's 1/sqrt(64)) */
        for (int si = 0; si < 2; si++) {
            const float sc = si ? 0.125f : 1.0f;
            memcpy(y1, x, sizeof x);
            memcpy(y2, x, sizeof x);
            k->softmax(y1, len, sc);
            p->softmax(y2, len, sc);
            double mx = -INFINITY, sum = 0;
            for (int i = 0; i < len; i++) mx = fmax(mx, x[i]);
            for (int i = 0; i < len; i++) sum += exp(sc * (x[i] - mx));
            for (int i = 0; i < len; i++) {
                const double e = exp(sc * (x[i] - mx)) / sum;
                assert_true(fabs(y1[i] - e) <= 1e-6 * e + 1e-30);
                assert_true(fabs(y2[i] - e) <= 1e-6 * e + 1e-30);
            }
        }
        /* layernorm vs each other */
        k->layernorm(y1, x, gg, bb, len, 1e-5f);
        p->layernorm(y2, x, gg, bb, len, 1e-5f);
        for (int i = 0; i < len; i++) assert_true(fabsf(y1[i] - y2[i]) <= 1e-5f);
        /* quantization: identical codes and scale */
        const float s1 = k->quantize_row(q1, x, len, 127);
        const float s2 = p->quantize_row(q2, x, len, 127);
        assert_true(s1 == s2);
        assert_memory_equal(q1, q2, (size_t)len);
        for (int i = 0; i < len; i++) assert_true(fabsf(q1[i] * s1 - x[i]) <= 0.5f * s1 * 1.0001f);
    }
    /* an all-zero row quantizes to zeros with scale 1 */
    memset(x, 0, sizeof x);
    assert_true(k->quantize_row(q1, x, 40, 63) == 1.0f);
    for (int i = 0; i < 40; i++) assert_int_equal(q1[i], 0);
    /* extreme softmax inputs: a -1e30 entry gets 0, no NaN */
    x[0] = 0.0f; x[1] = -1e30f; x[2] = 5.0f;
    for (int i = 3; i < 11; i++) x[i] = -100.0f;
    k->softmax(x, 11, 1.0f);
    for (int i = 0; i < 11; i++) assert_false(isnan(x[i]));
    assert_true(x[1] < 1e-30f);
}

/* ---- own GEMM ------------------------------------------------------------ */

static double gemm_act_ref(double v, int act, double alpha)
{
    switch (act) {
    case VS_CPU_ACT_GELU_ERF: return 0.5 * v * (1.0 + erf(v / sqrt(2.0)));
    case VS_CPU_ACT_GELU_TANH:
        return 0.5 * v * (1.0 + tanh(sqrt(2.0 / 3.14159265358979323846) * (v + 0.044715 * v * v * v)));
    case VS_CPU_ACT_RELU: return v > 0 ? v : 0;
    case VS_CPU_ACT_SWISH: return v / (1.0 + exp(-alpha * v));
    default: return v;
    }
}

/* One GEMM of the own AVX2 kernel vs double math: C (M, N), A with lda =
 * K + 3, C with ldc = N + 5 (the gaps must stay untouched), every shape
 * edge (rows past a 6-row tile, columns past a 16-column panel, K past a
 * 256 block, M past a 240-row chunk), accumulate, NULL bias, activation;
 * then the same on 1 and 3 threads and on single rows: bitwise equal. */
static void check_own_gemm(const struct vs_cpu_kernels *k, int M, int N, int K, int act,
                           float alpha, int accumulate, bool bias)
{
    const int lda = K + 3, ldc = N + 5;
    float *A = malloc(((size_t)M * lda + 1) * sizeof(float));
    float *W = malloc(((size_t)N * K + 1) * sizeof(float));
    float *b = malloc((size_t)N * sizeof(float));
    float *C = malloc((size_t)M * ldc * sizeof(float));
    float *C0 = malloc((size_t)M * ldc * sizeof(float));
    float *C1 = malloc((size_t)M * ldc * sizeof(float));
    float *ws = NULL;
    assert_true(A && W && b && C && C0 && C1);
    assert_int_equal(posix_memalign((void **)&ws, 64, 3 * vs_model_cpu_gemm_ws_floats() *
                                    sizeof(float)), 0);
    for (size_t i = 0; i < (size_t)M * lda; i++) A[i] = rng_uni(2.0f);
    for (size_t i = 0; i < (size_t)N * K; i++) W[i] = rng_uni(1.0f);
    for (int i = 0; i < N; i++) b[i] = rng_uni(1.0f);
    for (size_t i = 0; i < (size_t)M * ldc; i++) C0[i] = rng_uni(3.0f);
    memcpy(C, C0, (size_t)M * ldc * sizeof(float));
    struct vs_cpu_gemm g = {.M = M, .N = N, .K = K, .A = A, .lda = lda, .W = W, .ldw = K,
                            .bias = bias ? b : NULL, .C = C, .ldc = ldc, .act = act,
                            .alpha = alpha, .accumulate = accumulate};
    k->sgemm(&g, ws, 2);
    double worst = 0;
    for (int m = 0; m < M; m++)
        for (int n = 0; n < ldc; n++) {
            const size_t at = (size_t)m * ldc + n;
            if (n >= N) {   /* the gap between rows of C */
                assert_true(C[at] == C0[at]);
                continue;
            }
            double sum = 0.0, mag = accumulate ? fabs(C0[at]) : 0.0;
            for (int i = 0; i < K; i++) {
                sum += (double)A[(size_t)m * lda + i] * W[(size_t)n * K + i];
                mag += fabs((double)A[(size_t)m * lda + i] * W[(size_t)n * K + i]);
            }
            if (bias) { sum += b[n]; mag += fabs(b[n]); }
            const double ref = (accumulate ? C0[at] : 0.0) + gemm_act_ref(sum, act, alpha);
            /* fp32 sums: ~K ulps of the magnitude; activations ~1e-6 */
            const double err = fabs(ref - C[at]) / (1.0 + mag);
            worst = fmax(worst, err);
            if (err > 2e-6) fail_msg("own gemm M%d N%d K%d act %d acc %d: C[%d][%d] = %.9g, "
                                     "reference %.9g", M, N, K, act, accumulate, m, n,
                                     (double)C[at], ref);
        }
    /* thread count and M do not change a single bit */
    memcpy(C1, C0, (size_t)M * ldc * sizeof(float));
    g.C = C1;
    k->sgemm(&g, ws, 1);
    assert_memory_equal(C, C1, (size_t)M * ldc * sizeof(float));
    memcpy(C1, C0, (size_t)M * ldc * sizeof(float));
    k->sgemm(&g, ws, 3);
    assert_memory_equal(C, C1, (size_t)M * ldc * sizeof(float));
    memcpy(C1, C0, (size_t)M * ldc * sizeof(float));
    for (int m = M - 1; m >= 0; m -= 7) {   /* some rows alone (M = 1) */
        g.M = 1;
        g.A = A + (size_t)m * lda;
        g.C = C1 + (size_t)m * ldc;
        k->sgemm(&g, ws, 2);
        assert_memory_equal(C + (size_t)m * ldc, C1 + (size_t)m * ldc, (size_t)N * sizeof(float));
    }
    /* W stored (K, N) (w_kn, ldw = N + 2): the same bits, on 1 and 2 threads */
    float *Wt = malloc(((size_t)K * (N + 2) + 1) * sizeof(float));
    assert_non_null(Wt);
    for (int i = 0; i < K; i++)
        for (int n = 0; n < N + 2; n++) Wt[(size_t)i * (N + 2) + n] = n < N ? W[(size_t)n * K + i] : NAN;
    g.M = M;
    g.A = A;
    g.W = Wt;
    g.ldw = N + 2;
    g.w_kn = 1;
    for (int t = 1; t <= 2; t++) {
        memcpy(C1, C0, (size_t)M * ldc * sizeof(float));
        g.C = C1;
        k->sgemm(&g, ws, t);
        assert_memory_equal(C, C1, (size_t)M * ldc * sizeof(float));
    }
    g.W = W;
    g.ldw = K;
    g.w_kn = 0;
    free(Wt);
    /* a persistent packed copy (sgemm_pack): calls that use it (W replaced
     * by NaNs to prove it is not read) give the same bits */
    const size_t pf = vs_model_cpu_gemm_packed_floats(N, K);
    assert_true(pf >= (size_t)N * K && pf % 16 == 0);
    float *Wp = NULL, *Wnan = malloc(((size_t)N * K + 1) * sizeof(float));
    assert_int_equal(posix_memalign((void **)&Wp, 64, pf * sizeof(float)), 0);
    assert_non_null(Wnan);
    for (size_t i = 0; i < (size_t)N * K; i++) Wnan[i] = NAN;
    k->sgemm_pack(W, K, N, K, Wp);
    g.M = M;
    g.A = A;
    g.W = Wnan;
    g.Wp = Wp;
    for (int t = 1; t <= 2; t++) {
        memcpy(C1, C0, (size_t)M * ldc * sizeof(float));
        g.C = C1;
        k->sgemm(&g, ws, t);
        assert_memory_equal(C, C1, (size_t)M * ldc * sizeof(float));
    }
    free(Wp); free(Wnan);
    free(A); free(W); free(b); free(C); free(C0); free(C1); free(ws);
}

static void own_gemm_suite(const struct vs_cpu_kernels *k)
{
    print_message("  own GEMM on its %s kernel\n", k->gemm_isa);
    rng_state = 71;
    const int Ms[] = {1, 5, 6, 7, 13, 197, 251};
    const int Ns[] = {1, 8, 15, 16, 17, 40, 64};
    const int Ks[] = {1, 7, 8, 9, 64, 256, 257, 530};
    for (size_t i = 0; i < sizeof Ms / sizeof Ms[0]; i++)
        for (size_t j = 0; j < sizeof Ns / sizeof Ns[0]; j++)
            for (size_t l = 0; l < sizeof Ks / sizeof Ks[0]; l++) {
                /* big products only on a few combinations (ASan speed) */
                if ((long)Ms[i] * Ns[j] * Ks[l] > 300000 && (i + j + l) % 3 != 0) continue;
                check_own_gemm(k, Ms[i], Ns[j], Ks[l], VS_CPU_ACT_NONE, 0.0f,
                               (int)((i + j + l) % 2), (i + l) % 3 != 0);
            }
    /* every activation, on a full tile and on edges */
    const int acts[] = {VS_CPU_ACT_GELU_ERF, VS_CPU_ACT_GELU_TANH, VS_CPU_ACT_RELU,
                        VS_CPU_ACT_SWISH};
    for (size_t a = 0; a < sizeof acts / sizeof acts[0]; a++) {
        check_own_gemm(k, 12, 32, 40, acts[a], 1.702f, 0, true);
        check_own_gemm(k, 9, 23, 300, acts[a], 1.0f, 0, true);
        check_own_gemm(k, 7, 17, 5, acts[a], 1.0f, 1, false);
        check_own_gemm(k, 13, 17, 0, acts[a], 1.0f, (int)(a % 2), true);   /* empty sum */
    }
    /* the activations far out: no NaN, the right limits */
    float x[16] = {-200, -50, -12, -9.5f, -4, -1e-3f, 0, 1e-3f, 3, 9.5f, 12, 50, 200, -1e-30f, 1e-30f, 1};
    float one = 1.0f, out[16];
    for (size_t a = 0; a < sizeof acts / sizeof acts[0]; a++) {
        float *ws = NULL;
        assert_int_equal(posix_memalign((void **)&ws, 64, vs_model_cpu_gemm_ws_floats() *
                                        sizeof(float)), 0);
        /* C (16, 1) = act(x . 1): one output column, 16 rows */
        struct vs_cpu_gemm g = {.M = 16, .N = 1, .K = 1, .A = x, .lda = 1, .W = &one, .ldw = 1,
                                .C = out, .ldc = 1, .act = acts[a], .alpha = 1.702f};
        k->sgemm(&g, ws, 1);
        for (int i = 0; i < 16; i++) {
            const double ref = gemm_act_ref(x[i], acts[a], 1.702);
            assert_false(isnan(out[i]));
            assert_true(fabs(out[i] - ref) <= 1e-6 * (1.0 + fabs(ref)));
        }
        free(ws);
    }
}

/* The GEMM kernels this CPU can run: the one vs_model_cpu_kernels() picks,
 * the AVX2 one and the 12x32 one on AVX2 registers (the AVX-512 kernel's
 * code, checked here on machines without AVX-512); NULL-terminated,
 * duplicates left out.  Returns the count (0 without AVX2+FMA). */
static int gemm_variants(const struct vs_cpu_kernels *out[4])
{
    const struct vs_cpu_kernels *all[3] = {vs_model_cpu_kernels(), vs_model_cpu_kernels_avx2(),
                                           vs_model_cpu_kernels_x16emu()};
    int n = 0;
    for (int i = 0; i < 3; i++) {
        if (!all[i] || !all[i]->sgemm) continue;
        bool dup = false;
        for (int j = 0; j < n; j++) dup |= out[j] == all[i];
        if (!dup) out[n++] = all[i];
    }
    out[n] = NULL;
    return n;
}

static void test_own_gemm(void **state)
{
    (void)state;
    assert_null(vs_model_cpu_kernels_generic()->sgemm);
    const struct vs_cpu_kernels *ks[4];
    if (gemm_variants(ks) == 0) {
        print_message("  no AVX2+FMA: own GEMM not in use, nothing to test\n");
        return;
    }
    for (int i = 0; ks[i]; i++) own_gemm_suite(ks[i]);
}

/* Every GEMM kernel gives the same bits as the AVX2 one (same sum order
 * per element): on tile, panel, chunk and K-block edges, with and without
 * packed copies, W (N, K) and (K, N), every activation, accumulate or not,
 * on 1 and 3 threads; C's gaps untouched. */
static void test_gemm_kernels_agree(void **state)
{
    (void)state;
    const struct vs_cpu_kernels *ks[4];
    const int nk = gemm_variants(ks);
    const struct vs_cpu_kernels *ref = vs_model_cpu_kernels_avx2();
    if (nk < 2 || !ref) {
        print_message("  fewer than two GEMM kernels here: nothing to compare\n");
        return;
    }
    rng_state = 83;
    const int Ms[] = {1, 11, 12, 13, 197, 251};
    const int Ns[] = {1, 16, 17, 31, 32, 33, 48, 197};
    const int Ks[] = {1, 64, 257, 530};
    int cases = 0;
    for (size_t i = 0; i < sizeof Ms / sizeof Ms[0]; i++)
        for (size_t j = 0; j < sizeof Ns / sizeof Ns[0]; j++)
            for (size_t l = 0; l < sizeof Ks / sizeof Ks[0]; l++) {
                const int M = Ms[i], N = Ns[j], K = Ks[l];
                if ((long)M * N * K > 2000000 && (i + j + l) % 2) continue;
                const int lda = K + 1, ldc = N + 3, v = (int)(i + 2 * j + 3 * l);
                const int act = v % 5, acc = v % 2, kn = (v / 2) % 2, packed = (v / 3) % 2;
                float *A = malloc((size_t)M * lda * sizeof(float));
                float *W = malloc((size_t)N * K * sizeof(float));
                float *Wt = malloc((size_t)K * N * sizeof(float));
                float *b = malloc((size_t)N * sizeof(float));
                float *C0 = malloc((size_t)M * ldc * sizeof(float));
                float *Cr = malloc((size_t)M * ldc * sizeof(float));
                float *C = malloc((size_t)M * ldc * sizeof(float));
                float *Wp = NULL, *ws = NULL;
                assert_true(A && W && Wt && b && C0 && Cr && C);
                assert_int_equal(posix_memalign((void **)&Wp, 64,
                                 vs_model_cpu_gemm_packed_floats(N, K) * sizeof(float)), 0);
                assert_int_equal(posix_memalign((void **)&ws, 64, 3 *
                                 vs_model_cpu_gemm_ws_floats() * sizeof(float)), 0);
                for (size_t e = 0; e < (size_t)M * lda; e++) A[e] = rng_uni(2.0f);
                for (int n = 0; n < N; n++)
                    for (int q = 0; q < K; q++)
                        Wt[(size_t)q * N + n] = W[(size_t)n * K + q] = rng_uni(1.0f);
                for (int n = 0; n < N; n++) b[n] = rng_uni(1.0f);
                for (size_t e = 0; e < (size_t)M * ldc; e++) C0[e] = rng_uni(3.0f);
                ref->sgemm_pack(W, K, N, K, Wp);
                struct vs_cpu_gemm g = {.M = M, .N = N, .K = K, .A = A, .lda = lda,
                                        .W = kn ? Wt : W, .ldw = kn ? N : K, .w_kn = kn,
                                        .Wp = packed && !kn ? Wp : NULL,
                                        .bias = v % 3 ? b : NULL, .ldc = ldc, .act = act,
                                        .alpha = 1.702f, .accumulate = acc};
                memcpy(Cr, C0, (size_t)M * ldc * sizeof(float));
                g.C = Cr;
                ref->sgemm(&g, ws, 2);
                for (int x = 0; ks[x]; x++) {
                    if (ks[x] == ref) continue;
                    for (int t = 1; t <= 3; t += 2) {
                        memcpy(C, C0, (size_t)M * ldc * sizeof(float));
                        g.C = C;
                        ks[x]->sgemm(&g, ws, t);
                        if (memcmp(C, Cr, (size_t)M * ldc * sizeof(float)) != 0)
                            fail_msg("%s vs avx2 GEMM: M%d N%d K%d act %d acc %d w_kn %d "
                                     "packed %d, %d threads: bits differ", ks[x]->gemm_isa,
                                     M, N, K, act, acc, kn, packed && !kn, t);
                    }
                }
                cases++;
                free(A); free(W); free(Wt); free(b); free(C0); free(Cr); free(C); free(Wp);
                free(ws);
            }
    print_message("  %d GEMM cases, %d kernels: identical bits\n", cases, nk);
}

/* The own int8 GEMM against integer arithmetic: exact, on tile and panel
 * edges, at the extremes of u8 x s8 (255 x +-63: the largest pair sums
 * vpmaddubsw must not saturate), on 1 to 3 threads; C's gaps untouched. */
static void test_own_igemm(void **state)
{
    (void)state;
    const struct vs_cpu_kernels *k = vs_model_cpu_kernels();
    assert_null(vs_model_cpu_kernels_generic()->igemm);
    if (!k->igemm) {
        print_message("  no AVX2: own int8 GEMM not in use, nothing to test\n");
        return;
    }
    rng_state = 97;
    const int Ms[] = {1, 3, 4, 5, 13, 197};
    const int Ns[] = {1, 15, 16, 17, 40};
    const int Ks[] = {4, 8, 60, 772};
    int cases = 0;
    for (size_t i = 0; i < sizeof Ms / sizeof Ms[0]; i++)
        for (size_t j = 0; j < sizeof Ns / sizeof Ns[0]; j++)
            for (size_t l = 0; l < sizeof Ks / sizeof Ks[0]; l++) {
                const int M = Ms[i], N = Ns[j], K = Ks[l], lda = K + 4, ldc = N + 3;
                const int v = (int)(i + j + l) % 3;   /* 0 random, 1 max, 2 min */
                uint8_t *A = malloc((size_t)M * lda);
                int8_t *W = malloc((size_t)N * K), *Wp = NULL;
                float *C = malloc((size_t)M * ldc * sizeof(float));
                assert_true(A && W && C);
                assert_int_equal(posix_memalign((void **)&Wp, 64,
                                 vs_model_cpu_igemm_packed_bytes(N, K) + 64), 0);
                for (size_t e = 0; e < (size_t)M * lda; e++)
                    A[e] = v ? 255 : (uint8_t)(rng_uni(1.0f) * 127.5f + 128.0f);
                for (size_t e = 0; e < (size_t)N * K; e++)
                    W[e] = v == 1 ? 63 : v == 2 ? -63 : (int8_t)lrintf(rng_uni(63.0f));
                for (size_t e = 0; e < (size_t)M * ldc; e++) C[e] = -7.0f;
                k->igemm_pack(W, K, N, K, Wp);
                const struct vs_cpu_igemm g = {.M = M, .N = N, .K = K, .A = A, .lda = lda,
                                               .Wp = Wp, .C = C, .ldc = ldc};
                k->igemm(&g, 1 + (int)(i + l) % 3);
                for (int m = 0; m < M; m++)
                    for (int n = 0; n < ldc; n++) {
                        float want = -7.0f;
                        if (n < N) {
                            int64_t sum = 0;
                            for (int q = 0; q < K; q++)
                                sum += (int64_t)A[(size_t)m * lda + q] * W[(size_t)n * K + q];
                            want = (float)sum;
                        }
                        if (C[(size_t)m * ldc + n] != want)
                            fail_msg("own igemm M%d N%d K%d: C[%d][%d] = %.1f, want %.1f", M, N,
                                     K, m, n, (double)C[(size_t)m * ldc + n], (double)want);
                    }
                cases++;
                free(A); free(W); free(Wp); free(C);
            }
    print_message("  own int8 GEMM: %d cases exact\n", cases);
}

/* Prepacking (a background thread builds the GEMM's packed weight copies
 * while forwards run): forwards during the packing, after it (settle) and
 * without it give the same bits; destroying while it packs is clean. */
static void test_prepack(void **state)
{
    (void)state;
    if (!vs_model_cpu_kernels()->sgemm) return;
    assert_null(vs_model_cpu_kernels_generic()->sgemm_pack);
    struct tmodel m;
    tmodel_init(&m, 3, 64, 48, 8, 64, 4, 128, 4, 7, VS_ACT_GELU, true, 61);
    const struct vs_vit_config *g = &m.cfg;
    float *pix = random_pixels(g, 2);
    const size_t nl = (size_t)2 * g->labels;
    float *ref = malloc(nl * sizeof(float)), *out = malloc(nl * sizeof(float));
    assert_true(ref && out);
    setenv("VS_CPU_GEMM", "own", 1);
    void *plain = backend_new(&m, VS_PRECISION_FP32, 2);
    run_forward(plain, pix, 2, ref);
    struct vs_backend_opts o = {.precision = VS_PRECISION_FP32, .threads = 2, .max_batch = 2,
                                .prepack = true};
    struct vs_err err = {0};
    void *pp = NULL;
    assert_int_equal(vs_backend_cpu.create(&m.cfg, &m.w, &o, &pp, &err), VS_OK);
    for (int i = 0; i < 4; i++) {   /* racing the packer (some weights packed) */
        run_forward(pp, pix, 2, out);
        assert_memory_equal(ref, out, nl * sizeof(float));
    }
    vs_backend_cpu.settle(pp);       /* all packed */
    vs_backend_cpu.settle(pp);       /* idempotent */
    run_forward(pp, pix, 2, out);
    assert_memory_equal(ref, out, nl * sizeof(float));
    vs_backend_cpu.destroy(pp);
    /* destroyed at once, mid-packing */
    pp = NULL;
    assert_int_equal(vs_backend_cpu.create(&m.cfg, &m.w, &o, &pp, &err), VS_OK);
    vs_backend_cpu.destroy(pp);
    unsetenv("VS_CPU_GEMM");
    vs_backend_cpu.destroy(plain);
    free(pix); free(ref); free(out);
    tmodel_free(&m);
}

/* The fp32 reference tests once more with the GEMMs on oneDNN (what the
 * backend uses on CPUs without AVX2+FMA): both paths stay correct. */
static void test_ref_onednn_gemm(void **state)
{
    (void)state;
    setenv("VS_CPU_GEMM", "onednn", 1);
    struct tmodel m;
    tmodel_init(&m, 3, 32, 48, 8, 32, 4, 64, 3, 7, VS_ACT_GELU, true, 11);
    check_vs_reference(&m, 2);
    tmodel_free(&m);
    tmodel_init(&m, 1, 12, 20, 4, 24, 2, 48, 2, 5, VS_ACT_QUICK_GELU, false, 41);
    check_vs_reference(&m, 1);
    tmodel_free(&m);
    unsetenv("VS_CPU_GEMM");
}

/* Own GEMM vs oneDNN on the same model: the two fp32 paths agree to float
 * rounding (1e-5 of the logit scale). */
static void test_own_vs_onednn(void **state)
{
    (void)state;
    if (!vs_model_cpu_kernels()->sgemm) return;
    struct tmodel m;
    tmodel_init(&m, 3, 32, 32, 8, 48, 4, 96, 3, 9, VS_ACT_GELU, true, 51);
    const struct vs_vit_config *g = &m.cfg;
    float *pix = random_pixels(g, 3);
    float *a = malloc((size_t)3 * g->labels * sizeof(float));
    float *b = malloc((size_t)3 * g->labels * sizeof(float));
    assert_true(a && b);
    setenv("VS_CPU_GEMM", "own", 1);   /* the default only where oneDNN is AVX2 */
    void *own = backend_new(&m, VS_PRECISION_FP32, 3);
    assert_non_null(strstr(vs_backend_cpu.device_name(own), ", own "));
    setenv("VS_CPU_GEMM", "onednn", 1);
    void *dnn = backend_new(&m, VS_PRECISION_FP32, 3);
    assert_null(strstr(vs_backend_cpu.device_name(dnn), ", own "));
    unsetenv("VS_CPU_GEMM");
    run_forward(own, pix, 3, a);
    run_forward(dnn, pix, 3, b);
    double worst = 0, scale = 1;
    for (int i = 0; i < 3 * g->labels; i++) {
        worst = fmax(worst, fabs((double)a[i] - b[i]));
        scale = fmax(scale, fabs((double)b[i]));
    }
    print_message("  own GEMM vs oneDNN: max|d| = %.3g (logit scale %.3g)\n", worst, scale);
    assert_true(worst <= 1e-5 * scale);
    /* the own Linears with oneDNN's attention (VS_CPU_ATTN=onednn, kept for
     * side-by-side measurements) */
    setenv("VS_CPU_GEMM", "own", 1);
    setenv("VS_CPU_ATTN", "onednn", 1);
    void *mix = backend_new(&m, VS_PRECISION_FP32, 3);
    unsetenv("VS_CPU_GEMM");
    unsetenv("VS_CPU_ATTN");
    run_forward(mix, pix, 3, a);
    worst = 0;
    for (int i = 0; i < 3 * g->labels; i++) worst = fmax(worst, fabs((double)a[i] - b[i]));
    print_message("  own Linears + oneDNN attention vs oneDNN: max|d| = %.3g\n", worst);
    assert_true(worst <= 1e-5 * scale);
    /* own-avx2: the AVX2 kernel whatever the CPU; the same bits as the
     * kernel "own" picks (the 12x32 one on AVX-512 machines) */
    float *c = malloc((size_t)3 * g->labels * sizeof(float));
    assert_non_null(c);
    setenv("VS_CPU_GEMM", "own-avx2", 1);
    void *own2 = backend_new(&m, VS_PRECISION_FP32, 3);
    unsetenv("VS_CPU_GEMM");
    assert_non_null(strstr(vs_backend_cpu.device_name(own2), "own AVX2 GEMM"));
    run_forward(own, pix, 3, a);
    run_forward(own2, pix, 3, c);
    print_message("  own (%s) vs own-avx2: %s\n", vs_backend_cpu.device_name(own),
                  memcmp(a, c, (size_t)3 * g->labels * sizeof(float)) ? "differ" : "same bits");
    assert_memory_equal(a, c, (size_t)3 * g->labels * sizeof(float));
    free(c);
    vs_backend_cpu.destroy(own2);
    vs_backend_cpu.destroy(mix);
    vs_backend_cpu.destroy(own);
    vs_backend_cpu.destroy(dnn);
    free(pix); free(a); free(b);
    tmodel_free(&m);
}

/* With the own GEMM (the Linears, and attention head by head) an image's
 * logits are the same bits on 1, 2, 3 and 5 threads: every element is the
 * same float operations whatever thread computes it.  12 heads, so that
 * heads outnumber threads and the threads take several each. */
static void test_thread_invariance(void **state)
{
    (void)state;
    if (!vs_model_cpu_kernels()->sgemm) {
        print_message("  no AVX2+FMA: own GEMM not in use, nothing to test\n");
        return;
    }
    struct tmodel m;
    tmodel_init(&m, 3, 32, 32, 8, 48, 12, 96, 2, 9, VS_ACT_GELU, true, 57);
    const struct vs_vit_config *g = &m.cfg;
    float *pix = random_pixels(g, 2);
    const size_t nl = (size_t)2 * g->labels;
    float *ref = malloc(nl * sizeof(float)), *got = malloc(nl * sizeof(float));
    assert_true(ref && got);
    setenv("VS_CPU_GEMM", "own", 1);
    const int threads[] = {1, 2, 3, 5};
    for (size_t t = 0; t < sizeof threads / sizeof threads[0]; t++) {
        struct vs_backend_opts o = {.precision = VS_PRECISION_FP32, .threads = threads[t],
                                    .max_batch = 2};
        struct vs_err err = {0};
        void *ctx = NULL;
        if (vs_backend_cpu.create(&m.cfg, &m.w, &o, &ctx, &err) != VS_OK)
            fail_msg("create (%d threads): %s", threads[t], err.msg);
        run_forward(ctx, pix, 2, t == 0 ? ref : got);
        if (t > 0) assert_memory_equal(got, ref, nl * sizeof(float));
        vs_backend_cpu.destroy(ctx);
    }
    unsetenv("VS_CPU_GEMM");
    print_message("  own GEMM and attention: 1, 2, 3, 5 threads give the same bits\n");
    free(pix); free(ref); free(got);
    tmodel_free(&m);
}

int main(int argc, char **argv)
{
    /* libgomp reads OMP_WAIT_POLICY when it is loaded, before main: to get
     * PASSIVE (threads sleep between parallel regions instead of spinning;
     * on a busy machine spinning makes this test 50x slower) the variable
     * must be in the environment at exec, so re-exec once with it set. */
    char self[4096];
    const ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (!getenv("OMP_WAIT_POLICY") && argc > 0 && len > 0) {
        self[len] = '\0';
        /* only when /proc/self/exe is this program (not, say, ld.so) */
        const char *a = strrchr(argv[0], '/'), *b = strrchr(self, '/');
        if (strcmp(a ? a + 1 : argv[0], b ? b + 1 : self) == 0) {
            setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
            execv(self, argv);   /* returns only on failure: go on */
        }
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kernels),
        cmocka_unit_test(test_own_gemm),
        cmocka_unit_test(test_gemm_kernels_agree),
        cmocka_unit_test(test_own_igemm),
        cmocka_unit_test(test_ref_onednn_gemm),
        cmocka_unit_test(test_own_vs_onednn),
        cmocka_unit_test(test_thread_invariance),
        cmocka_unit_test(test_prepack),
        cmocka_unit_test(test_ref_nonsquare_3layers),
        cmocka_unit_test(test_ref_one_head_no_qkv_bias),
        cmocka_unit_test(test_ref_ln_eps_zero),
        cmocka_unit_test(test_ref_every_activation),
        cmocka_unit_test(test_batch_invariance),
        cmocka_unit_test(test_forward_rows),
        cmocka_unit_test(test_int8_close_to_fp32),
        cmocka_unit_test(test_unsupported_and_bad_batch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
