/* bench_cpu.c (vs-bench_cpu): times the CPU backend's forward pass on a
 * random ViT-B/16 (224x224, 12 layers, D 768, 12 heads, MLP 3072, 1000
 * labels; weights from a fixed seed, built in memory) at several batch
 * sizes, and prints ms per batch (median and min), images/s, GFLOP/s, the
 * share of the 343 GFLOP/s fp32 FMA peak of the project's Xeons and of this
 * machine's own measured FMA peak, and the share of time spent outside
 * oneDNN's GEMMs.
 *
 *   vs-bench_cpu [--batch 1,8,32] [--iters N] [--threads T]
 *                [--precision fp32|int8] [--layers L] [--contend]
 *                [--gemm-layout] [--compare-int8] [--gemm-api] [--ab] [--ab-prepack] [--ab-attn] [--ab-avx2]
 *
 * --contend runs one extra busy thread (standing in for the HTTP/decode
 * threads) and reports how much work it got done: with OMP_WAIT_POLICY
 * unset/ACTIVE the GEMM threads spin between parallel regions and starve it.
 * --gemm-layout times the encoder's four Linear shapes with the weights used
 * in place (tag "ba", what the backend does) against a reordered copy in
 * oneDNN's preferred layout ("any").  --compare-int8 reports int8-vs-fp32
 * logits agreement on random inputs (max |d|, cosine, top-1).
 * --gemm-api times the encoder's GEMM shapes (M = 197, and the patch
 * embedding's M = 196) through every entry point at hand: oneDNN's matmul
 * primitive with the weights in place, the same with a reordered copy,
 * dnnl_sgemm (the BLAS-style API), and our own GEMM (cpu_kernels.c; the
 * AVX-512 12x32 kernel on AVX-512 machines, else the AVX2 one),
 * interleaved, with GFLOP/s against this machine's FMA peak.  --ab runs the
 * whole forward on our own GEMM and on oneDNN (VS_CPU_GEMM=onednn)
 * alternately, for each --batch; --ab-prepack the own GEMM with and without
 * its packed weight copies; --ab-attn attention on the own GEMM (the
 * default) and on oneDNN (VS_CPU_ATTN=onednn); --ab-avx2 the own GEMM's
 * kernel for this CPU (the AVX-512 one where there is AVX-512F) and its
 * AVX2 kernel (VS_CPU_GEMM=own-avx2).  --ab-batch: each --batch n > 1 as
 * one batch against n single-image forwards, alternated (ms per image).
 * --ab-igemm: int8 forwards with the Linears on our own u8 x s8 GEMM and
 * on oneDNN (VS_CPU_IGEMM=onednn).
 *
 * Other engineers compile on the same 2 cores: numbers are noisy; repeat
 * and take the best/median.  Not a test: prints, asserts nothing.
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <immintrin.h>
#include <oneapi/dnnl/dnnl.h>

#include "common/vs.h"
#include "model/backend.h"
#include "model/cpu_backend.h"
#include "model/cpu_kernels.h"

#define XEON_PEAK_GFLOPS 343.0

/* ---- random ViT-B ------------------------------------------------------ */

static uint64_t rng = 0x1234567887654321ULL;

static float frand(float a)   /* uniform [-a, a], xorshift64 */
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return ((float)(rng >> 40) / 16777216.0f * 2.0f - 1.0f) * a;
}

static float *fill(float *p, size_t n, float a, float base)
{
    for (size_t i = 0; i < n; i++) p[i] = base + frand(a);
    return p;
}

struct vitb {
    struct vs_vit_config cfg;
    struct vs_vit_weights w;
    struct vs_vit_layer *layers;
    float *mem;
};

static int vitb_init(struct vitb *m, int layers)
{
    struct vs_vit_config *g = &m->cfg;
    *g = (struct vs_vit_config){.channels = 3, .image_h = 224, .image_w = 224, .patch = 16,
                                .grid_h = 14, .grid_w = 14, .tokens = 197, .hidden = 768,
                                .heads = 12, .mlp = 3072, .layers = layers,
                                .labels = 1000, .ln_eps = 1e-12f, .act = VS_ACT_GELU};
    const size_t D = 768, F = 3072, T = 197;
    const size_t per = 4 * D * D + 2 * D * F + 10 * D + F;
    const size_t total = D * 768 + 2 * D + T * D + (size_t)layers * per + 2 * D + 1000 * D + 1000;
    m->mem = malloc(total * sizeof(float));
    m->layers = calloc((size_t)layers + 1, sizeof *m->layers);
    if (!m->mem || !m->layers) return -1;
    float *p = m->mem;
#define TAKE(n, a, base) (p += (n), fill(p - (n), (n), (a), (base)))
    const float wd = sqrtf(3.0f / 768.0f), wf = sqrtf(3.0f / 3072.0f);
    m->w.patch_w = TAKE(D * 768, wd, 0);
    m->w.patch_b = TAKE(D, 0.1f, 0);
    m->w.cls = TAKE(D, 1.0f, 0);
    m->w.pos = TAKE(T * D, 0.5f, 0);
    for (int l = 0; l < layers; l++) {
        struct vs_vit_layer *y = &m->layers[l];
        y->ln1_g = TAKE(D, 0.2f, 1);
        y->ln1_b = TAKE(D, 0.1f, 0);
        y->q_w = TAKE(D * D, wd, 0);
        y->q_b = TAKE(D, 0.1f, 0);
        y->k_w = TAKE(D * D, wd, 0);
        y->k_b = TAKE(D, 0.1f, 0);
        y->v_w = TAKE(D * D, wd, 0);
        y->v_b = TAKE(D, 0.1f, 0);
        y->o_w = TAKE(D * D, wd, 0);
        y->o_b = TAKE(D, 0.1f, 0);
        y->ln2_g = TAKE(D, 0.2f, 1);
        y->ln2_b = TAKE(D, 0.1f, 0);
        y->fc1_w = TAKE(F * D, wd, 0);
        y->fc1_b = TAKE(F, 0.1f, 0);
        y->fc2_w = TAKE(D * F, wf, 0);
        y->fc2_b = TAKE(D, 0.1f, 0);
    }
    m->w.layer = m->layers;
    m->w.lnf_g = TAKE(D, 0.2f, 1);
    m->w.lnf_b = TAKE(D, 0.1f, 0);
    m->w.head_w = TAKE(1000 * D, wd, 0);
    m->w.head_b = TAKE(1000, 0.1f, 0);
#undef TAKE
    return 0;
}

static double flops_per_image(const struct vs_vit_config *g)
{
    const double T = g->tokens, D = g->hidden, F = g->mlp, H = g->heads, dh = D / H;
    const double G = (double)g->grid_h * g->grid_w, K0 = (double)g->channels * g->patch * g->patch;
    const double layer = 2 * T * D * 3 * D + 2 * 2 * H * T * T * dh + 2 * T * D * D +
                         2 * 2 * T * D * F;
    return 2 * G * K0 * D + g->layers * layer + 2 * D * g->labels;
}

/* ---- FMA peak and the competing thread (pthreads: no OpenMP here) ------ */

static atomic_int stop_flag;

__attribute__((target("avx2,fma"))) static void *fma_loop(void *arg)
{
    /* 12 independent accumulators in registers hide the FMA latency
     * (2 ports x 4-5 cycles); AVX2 width, so on AVX-512 machines this is
     * half their FMA peak */
    __m256 a0 = _mm256_set1_ps(1.0f), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0;
    __m256 a6 = a0, a7 = a0, a8 = a0, a9 = a0, a10 = a0, a11 = a0;
    const __m256 m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
    const long iters = *(long *)arg;
    for (long it = 0; it < iters; it++) {
        a0 = _mm256_fmadd_ps(a0, m, c); a1 = _mm256_fmadd_ps(a1, m, c);
        a2 = _mm256_fmadd_ps(a2, m, c); a3 = _mm256_fmadd_ps(a3, m, c);
        a4 = _mm256_fmadd_ps(a4, m, c); a5 = _mm256_fmadd_ps(a5, m, c);
        a6 = _mm256_fmadd_ps(a6, m, c); a7 = _mm256_fmadd_ps(a7, m, c);
        a8 = _mm256_fmadd_ps(a8, m, c); a9 = _mm256_fmadd_ps(a9, m, c);
        a10 = _mm256_fmadd_ps(a10, m, c); a11 = _mm256_fmadd_ps(a11, m, c);
        /* every accumulator through the barrier: they start equal, and
         * GCC merged the ones left out into one chain (5 FMAs per
         * iteration instead of 12), which put this "peak" ~1.4x too high
         * (253 instead of ~180 GFLOP/s on the 2-vCPU EPYC) until session 6 */
        __asm__ volatile("" : "+x"(a0), "+x"(a1), "+x"(a2), "+x"(a3), "+x"(a4), "+x"(a5),
                         "+x"(a6), "+x"(a7), "+x"(a8), "+x"(a9), "+x"(a10), "+x"(a11));
    }
    __m256 sum = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)),
                               _mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7)));
    sum = _mm256_add_ps(sum, _mm256_add_ps(_mm256_add_ps(a8, a9), _mm256_add_ps(a10, a11)));
    float out[8];
    _mm256_storeu_ps(out, sum);
    *(long *)arg = (long)out[0];   /* keep the result alive */
    return NULL;
}

static double fma_peak(int threads)
{
    if (!__builtin_cpu_supports("fma")) return 0;
    const long iters = 40000000;
    pthread_t th[64];
    long args[64];
    threads = VS_MIN(threads, 64);
    const double t0 = vs_now_ms();
    for (int i = 0; i < threads; i++) {
        args[i] = iters;
        pthread_create(&th[i], NULL, fma_loop, &args[i]);
    }
    for (int i = 0; i < threads; i++) pthread_join(th[i], NULL);
    const double s = (vs_now_ms() - t0) / 1e3;
    return (double)threads * iters * 12 * 8 * 2 / s / 1e9;
}

static void *contender(void *arg)
{
    /* scalar integer work, like a decoder: counts loop iterations */
    volatile uint64_t x = 1;
    uint64_t n = 0;
    while (!atomic_load_explicit(&stop_flag, memory_order_relaxed)) {
        for (int i = 0; i < 1000; i++) x = x * 6364136223846793005ULL + 1;
        n++;
    }
    *(uint64_t *)arg = n;
    return NULL;
}

/* ---- GEMM layout experiment --------------------------------------------- */

static double time_linear(dnnl_engine_t eng, dnnl_stream_t strm, int64_t M, int64_t K,
                          int64_t N, const float *W, bool any, int iters, double *reorder_ms)
{
    dnnl_memory_desc_t a, b, d, bw;
    dnnl_dims_t ad = {M, K}, bd = {K, N}, bs = {1, K}, dd = {M, N};
    dnnl_memory_desc_init_by_tag(&a, 2, ad, dnnl_f32, dnnl_ab);
    dnnl_memory_desc_init_by_strides(&bw, 2, bd, dnnl_f32, bs);
    if (any) dnnl_memory_desc_init_by_tag(&b, 2, bd, dnnl_f32, dnnl_format_tag_any);
    else b = bw;
    dnnl_memory_desc_init_by_tag(&d, 2, dd, dnnl_f32, dnnl_ab);
    dnnl_matmul_desc_t desc;
    dnnl_primitive_desc_t pd;
    dnnl_primitive_t prim;
    dnnl_matmul_desc_init(&desc, &a, &b, NULL, &d);
    if (dnnl_primitive_desc_create(&pd, &desc, NULL, eng, NULL) != dnnl_success) return -1;
    const dnnl_memory_desc_t *wmd = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    dnnl_primitive_create(&prim, pd);
    float *A = malloc((size_t)M * K * sizeof(float)), *C = malloc((size_t)M * N * sizeof(float));
    fill(A, (size_t)M * K, 1.0f, 0);
    void *Wb = NULL;
    dnnl_memory_t ma, mw, mc, mraw;
    dnnl_memory_create(&ma, &a, eng, A);
    dnnl_memory_create(&mc, &d, eng, C);
    dnnl_memory_create(&mraw, &bw, eng, (void *)W);
    *reorder_ms = 0;
    if (any && !dnnl_memory_desc_equal(wmd, &bw)) {
        /* the blocked copy: one reorder at load time */
        posix_memalign(&Wb, 64, dnnl_memory_desc_get_size(wmd));
        dnnl_memory_create(&mw, wmd, eng, Wb);
        dnnl_primitive_desc_t rpd;
        dnnl_primitive_t rp;
        dnnl_reorder_primitive_desc_create(&rpd, &bw, eng, wmd, eng, NULL);
        dnnl_primitive_create(&rp, rpd);
        dnnl_exec_arg_t ra[2] = {{DNNL_ARG_FROM, mraw}, {DNNL_ARG_TO, mw}};
        const double t0 = vs_now_ms();
        dnnl_primitive_execute(rp, strm, 2, ra);
        dnnl_stream_wait(strm);
        *reorder_ms = vs_now_ms() - t0;
        dnnl_primitive_destroy(rp);
        dnnl_primitive_desc_destroy(rpd);
    } else {
        dnnl_memory_create(&mw, wmd, eng, (void *)W);
    }
    dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, ma}, {DNNL_ARG_WEIGHTS, mw}, {DNNL_ARG_DST, mc}};
    double best = 1e30;
    for (int i = 0; i < iters + 1; i++) {
        const double t0 = vs_now_ms();
        dnnl_primitive_execute(prim, strm, 3, args);
        dnnl_stream_wait(strm);
        const double t = vs_now_ms() - t0;
        if (i > 0 && t < best) best = t;
    }
    dnnl_memory_destroy(ma);
    dnnl_memory_destroy(mw);
    dnnl_memory_destroy(mc);
    dnnl_memory_destroy(mraw);
    dnnl_primitive_destroy(prim);
    dnnl_primitive_desc_destroy(pd);
    free(A);
    free(C);
    free(Wb);
    return best;
}

static void gemm_layout(const struct vitb *m, int iters)
{
    dnnl_engine_t eng;
    dnnl_stream_t strm;
    dnnl_engine_create(&eng, dnnl_cpu, 0);
    dnnl_stream_create(&strm, eng, dnnl_stream_default_flags);
    const struct vs_vit_layer *y = &m->layers[0];
    struct { const char *name; int64_t K, N; const float *W; } sh[3] = {
        {"q/k/v/o (768->768)", 768, 768, y->q_w},
        {"fc1 (768->3072)", 768, 3072, y->fc1_w},
        {"fc2 (3072->768)", 3072, 768, y->fc2_w},
    };
    printf("\nGEMM layout: weights in place ('ba') vs a reordered copy ('any'), best of %d\n", iters);
    printf("%-22s %6s %10s %10s %8s %10s\n", "shape", "M", "ba ms", "any ms", "ba/any", "reorder ms");
    const int Ms[3] = {197, 8 * 197, 32 * 197};
    for (int s = 0; s < 3; s++)
        for (int mi = 0; mi < 3; mi++) {
            double r0, r1, tb = 1e30, ta = 1e30;
            for (int rep = 0; rep < 2; rep++) {   /* interleaved, best of both */
                tb = fmin(tb, time_linear(eng, strm, Ms[mi], sh[s].K, sh[s].N, sh[s].W, false, iters, &r0));
                ta = fmin(ta, time_linear(eng, strm, Ms[mi], sh[s].K, sh[s].N, sh[s].W, true, iters, &r1));
            }
            printf("%-22s %6d %10.3f %10.3f %8.2f %10.2f\n", sh[s].name, Ms[mi], tb, ta, tb / ta, r1);
        }
    dnnl_stream_destroy(strm);
    dnnl_engine_destroy(eng);
}

/* ---- GEMM entry points on the encoder's shapes ------------------------- */

/* One way of computing C (M, N) = A (M, K) . W^T + bias, W (N, K) row-major
 * as a Linear stores it.  setup() may build primitives or copies; run() does
 * one GEMM; done() frees. */
struct gvar {
    const char *name;
    dnnl_primitive_t prim;
    dnnl_primitive_desc_t pd;
    dnnl_memory_t ma, mw, mb, mc;
    void *wcopy;
    bool ok;
};

static void mm_setup(struct gvar *v, dnnl_engine_t eng, dnnl_stream_t strm, int64_t M,
                     int64_t K, int64_t N, const float *A, const float *W, const float *bias,
                     float *C, bool any)
{
    dnnl_memory_desc_t a, b, bw, bd, d;
    dnnl_dims_t ad = {M, K}, wd = {K, N}, ws = {1, K}, bdims = {1, N}, dd = {M, N};
    dnnl_memory_desc_init_by_tag(&a, 2, ad, dnnl_f32, dnnl_ab);
    dnnl_memory_desc_init_by_strides(&bw, 2, wd, dnnl_f32, ws);
    if (any) dnnl_memory_desc_init_by_tag(&b, 2, wd, dnnl_f32, dnnl_format_tag_any);
    else b = bw;
    dnnl_memory_desc_init_by_tag(&bd, 2, bdims, dnnl_f32, dnnl_ab);
    dnnl_memory_desc_init_by_tag(&d, 2, dd, dnnl_f32, dnnl_ab);
    dnnl_matmul_desc_t desc;
    v->ok = false;
    if (dnnl_matmul_desc_init(&desc, &a, &b, &bd, &d) != dnnl_success ||
        dnnl_primitive_desc_create(&v->pd, &desc, NULL, eng, NULL) != dnnl_success)
        return;
    const dnnl_memory_desc_t *wmd = dnnl_primitive_desc_query_md(v->pd, dnnl_query_weights_md, 0);
    const char *impl = "?";
    dnnl_primitive_desc_query(v->pd, dnnl_query_impl_info_str, 0, &impl);
    static char names[8][64];
    static int ni;
    char *nm = names[ni++ % 8];
    snprintf(nm, 64, "%s[%s]", v->name, impl);
    v->name = nm;
    dnnl_primitive_create(&v->prim, v->pd);
    dnnl_memory_create(&v->ma, &a, eng, (void *)A);
    dnnl_memory_create(&v->mb, &bd, eng, (void *)bias);
    dnnl_memory_create(&v->mc, &d, eng, C);
    if (any && !dnnl_memory_desc_equal(wmd, &bw)) {
        dnnl_memory_t raw;
        dnnl_primitive_desc_t rpd;
        dnnl_primitive_t rp;
        if (posix_memalign(&v->wcopy, 64, dnnl_memory_desc_get_size(wmd)) != 0) return;
        dnnl_memory_create(&v->mw, wmd, eng, v->wcopy);
        dnnl_memory_create(&raw, &bw, eng, (void *)W);
        dnnl_reorder_primitive_desc_create(&rpd, &bw, eng, wmd, eng, NULL);
        dnnl_primitive_create(&rp, rpd);
        dnnl_exec_arg_t ra[2] = {{DNNL_ARG_FROM, raw}, {DNNL_ARG_TO, v->mw}};
        dnnl_primitive_execute(rp, strm, 2, ra);
        dnnl_stream_wait(strm);
        dnnl_primitive_destroy(rp);
        dnnl_primitive_desc_destroy(rpd);
        dnnl_memory_destroy(raw);
    } else {
        dnnl_memory_create(&v->mw, wmd, eng, (void *)W);
    }
    v->ok = true;
}

static void mm_done(struct gvar *v)
{
    if (v->prim) dnnl_primitive_destroy(v->prim);
    if (v->pd) dnnl_primitive_desc_destroy(v->pd);
    if (v->ma) dnnl_memory_destroy(v->ma);
    if (v->mw) dnnl_memory_destroy(v->mw);
    if (v->mb) dnnl_memory_destroy(v->mb);
    if (v->mc) dnnl_memory_destroy(v->mc);
    free(v->wcopy);
}

/* C = A W^T via dnnl_sgemm (row-major, B = W with 'T'), then + bias. */
static void sgemm_run(int64_t M, int64_t K, int64_t N, const float *A, const float *W,
                      const float *bias, float *C)
{
    dnnl_sgemm('N', 'T', M, N, K, 1.0f, A, K, W, K, 0.0f, C, N);
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) C[m * N + n] += bias[n];
}

static int cmp_double(const void *a, const void *b);

static void gemm_api(int iters, int threads)
{
    dnnl_engine_t eng;
    dnnl_stream_t strm;
    dnnl_engine_create(&eng, dnnl_cpu, 0);
    dnnl_stream_create(&strm, eng, dnnl_stream_default_flags);
    threads = threads > 0 ? threads : 2;
    const double peak = fma_peak(threads);
    struct { const char *name; int64_t M, K, N; } sh[4] = {
        {"q/k/v/o", 197, 768, 768},
        {"fc1", 197, 768, 3072},
        {"fc2", 197, 3072, 768},
        {"patch", 196, 768, 768},
    };
    printf("\nGEMM entry points, C (M,N) = A (M,K) W^T + b, W (N,K) in place unless "
           "noted, cycled through copies (~96 MB: from DRAM, as in a forward) except the "
           "reordered one;\nbest and median of %d, interleaved; FMA peak here (%d threads) "
           "%.1f GFLOP/s\n"
           "(oneDNN's threads: OMP_NUM_THREADS; own GEMM: %d)\n",
           iters, threads, peak, threads);
    printf("%-8s %4s %5s %5s  %-34s %8s %9s %6s %8s %9s\n", "shape", "M", "K", "N", "variant",
           "best ms", "GFLOP/s", "%peak", "med ms", "GFLOP/s");
    for (int s = 0; s < 4; s++) {
        const int64_t M = sh[s].M, K = sh[s].K, N = sh[s].N;
        /* the weights cycle through enough copies (~96 MB) that each
         * iteration reads them from DRAM, as a forward pass does (ViT-B's
         * 340 MB of weights do not stay in any cache); the reordered 'any'
         * copy is the exception: one copy, cache-warm after a pass */
        const int64_t copies = VS_MAX(1, VS_MIN(32, (96 << 20) / (N * K * 4) + 1));
        float *A = malloc(M * K * sizeof(float)), *W = malloc(copies * N * K * sizeof(float));
        float *bias = malloc(N * sizeof(float)), *C[4];
        fill(A, M * K, 1.0f, 0);
        fill(W, copies * N * K, 0.05f, 0);
        fill(bias, N, 0.1f, 0);
        for (int i = 0; i < 4; i++) C[i] = malloc(M * N * sizeof(float));
        struct gvar v[4] = {{.name = "matmul ba"}, {.name = "matmul any (copy)"},
                            {.name = "dnnl_sgemm N,T"}, {.name = "own GEMM (in place)"}};
        mm_setup(&v[0], eng, strm, M, K, N, A, W, bias, C[0], false);
        mm_setup(&v[1], eng, strm, M, K, N, A, W, bias, C[1], true);
        v[2].ok = true;
        const struct vs_cpu_kernels *kr = vs_model_cpu_kernels();
        v[3].ok = kr->sgemm != NULL;
        if (v[3].ok) printf("own GEMM: its %s kernel\n", kr->gemm_isa);
        float *ws = NULL;
        if (v[3].ok && posix_memalign((void **)&ws, 64, (size_t)threads *
                                      vs_model_cpu_gemm_ws_floats() * sizeof(float)) != 0)
            v[3].ok = false;
        struct vs_cpu_gemm gg = {.M = M, .N = N, .K = K, .A = A, .lda = K, .W = W, .ldw = K,
                                 .bias = bias, .C = C[3], .ldc = N};
        double best[4] = {1e30, 1e30, 1e30, 1e30};
        double *tm = malloc(sizeof(double) * 4 * (size_t)iters);
        for (int it = 0; it < iters + 1; it++)
            for (int j = 0; j < 4; j++) {
                if (!v[j].ok) continue;
                const float *Wi = W + (it % copies) * N * K;
                if (j == 0) dnnl_memory_set_data_handle(v[0].mw, (void *)Wi);
                gg.W = Wi;
                const double t0 = vs_now_ms();
                if (j < 2) {
                    dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, v[j].ma}, {DNNL_ARG_WEIGHTS, v[j].mw},
                                               {DNNL_ARG_BIAS, v[j].mb}, {DNNL_ARG_DST, v[j].mc}};
                    dnnl_primitive_execute(v[j].prim, strm, 4, args);
                    dnnl_stream_wait(strm);
                } else if (j == 2) {
                    sgemm_run(M, K, N, A, Wi, bias, C[2]);
                } else {
                    kr->sgemm(&gg, ws, threads);
                }
                const double t = vs_now_ms() - t0;
                if (it > 0 && t < best[j]) best[j] = t;
                if (it > 0) tm[j * iters + it - 1] = t;
            }
        double md = 0, mo = 0;
        for (int64_t i = 0; i < M * N; i++) {
            md = fmax(md, fabs((double)C[2][i] - C[0][i]));
            if (v[3].ok) mo = fmax(mo, fabs((double)C[3][i] - C[0][i]));
        }
        free(ws);
        for (int j = 0; j < 4; j++) {
            if (!v[j].ok) { printf("%-8s: %s failed\n", sh[s].name, v[j].name); continue; }
            const double gf = 2.0 * M * K * N / (best[j] / 1e3) / 1e9;
            qsort(tm + j * iters, iters, sizeof(double), cmp_double);
            const double med = tm[j * iters + iters / 2];
            printf("%-8s %4lld %5lld %5lld  %-34.34s %8.3f %9.1f %5.1f%% %8.3f %9.1f\n",
                   sh[s].name, (long long)M, (long long)K, (long long)N, v[j].name, best[j], gf,
                   peak > 0 ? 100 * gf / peak : 0, med, 2.0 * M * K * N / (med / 1e3) / 1e9);
        }
        free(tm);
        printf("%-8s max |sgemm - matmul| = %.2g, max |own - matmul| = %.2g\n", sh[s].name, md, mo);
        mm_done(&v[0]);
        mm_done(&v[1]);
        free(A); free(W); free(bias);
        for (int i = 0; i < 4; i++) free(C[i]);
    }
    dnnl_stream_destroy(strm);
    dnnl_engine_destroy(eng);
}

/* ---- main ---------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* ---- own GEMM vs oneDNN, whole forward, interleaved ---------------------- */

/* Two fp32 backends on the same weights, one on our own GEMM
 * (VS_CPU_GEMM=own) and one on oneDNN (VS_CPU_GEMM=onednn), forwards
 * alternated so that machine noise hits both. */
enum ab_mode { AB_ONEDNN, AB_PREPACK, AB_ATTN, AB_AVX2, AB_IGEMM };

static int ab_forward(const struct vitb *m, int threads, int n, int iters, enum ab_mode mode)
{
    struct vs_backend_opts o = {.precision = mode == AB_IGEMM ? VS_PRECISION_INT8
                                                              : VS_PRECISION_FP32,
                                .threads = threads, .max_batch = n};
    struct vs_err err = {0};
    void *ctx[2] = {NULL, NULL};
    /* --ab: own GEMM vs oneDNN; --ab-avx2: own GEMM vs its AVX2 kernel;
     * --ab-prepack: own GEMM with its packed
     * weight copies (the default) vs packing on every call; --ab-attn:
     * attention on the own GEMM (the default) vs on oneDNN */
    setenv("VS_CPU_GEMM", "own", 1);
    o.prepack = true;   /* as serve and bench run it */
    if (vs_backend_cpu.create(&m->cfg, &m->w, &o, &ctx[0], &err) != VS_OK) goto fail;
    vs_backend_cpu.settle(ctx[0]);
    if (mode == AB_PREPACK) setenv("VS_CPU_PREPACK", "0", 1);
    else if (mode == AB_ATTN) setenv("VS_CPU_ATTN", "onednn", 1);
    else if (mode == AB_AVX2) setenv("VS_CPU_GEMM", "own-avx2", 1);
    else if (mode == AB_IGEMM) setenv("VS_CPU_IGEMM", "onednn", 1);
    else setenv("VS_CPU_GEMM", "onednn", 1);
    if (vs_backend_cpu.create(&m->cfg, &m->w, &o, &ctx[1], &err) != VS_OK) goto fail;
    vs_backend_cpu.settle(ctx[1]);
    unsetenv("VS_CPU_GEMM");
    unsetenv("VS_CPU_PREPACK");
    unsetenv("VS_CPU_ATTN");
    unsetenv("VS_CPU_IGEMM");
    const size_t img = 3 * 224 * 224;
    float *pix = malloc(img * n * sizeof(float)), *lg[2];
    lg[0] = malloc((size_t)n * 1000 * sizeof(float));
    lg[1] = malloc((size_t)n * 1000 * sizeof(float));
    double *t[2] = {malloc(sizeof(double) * iters), malloc(sizeof(double) * iters)};
    fill(pix, img * n, 1.0f, 0);
    for (int j = 0; j < 2; j++) {   /* warm-up: plans, pages, packed weights */
        const double t0 = vs_now_ms();
        if (vs_backend_cpu.forward(ctx[j], pix, n, lg[j], &err) != VS_OK) goto fail;
        printf("first forward of %s: %.1f ms\n", j == 0 ? "A" : "B", vs_now_ms() - t0);
    }
    for (int i = 0; i < iters; i++)
        for (int j0 = 0; j0 < 2; j0++) {
            const int j = (i + j0) % 2;   /* alternate which goes first */
            const double t0 = vs_now_ms();
            vs_backend_cpu.forward(ctx[j], pix, n, lg[j], &err);
            t[j][i] = vs_now_ms() - t0;
        }
    double d = 0, sc = 0;
    for (int i = 0; i < n * 1000; i++) {
        d = fmax(d, fabs((double)lg[0][i] - lg[1][i]));
        sc = fmax(sc, fabs((double)lg[1][i]));
    }
    const double fl = flops_per_image(&m->cfg) * n;
    printf("\nbatch %d, %d alternated forwards each: ms per batch (median / min), GFLOP/s at the median\n",
           n, iters);
    const char *bname = mode == AB_PREPACK ? "own, no prepack" :
                        mode == AB_ATTN ? "oneDNN attention" :
                        mode == AB_AVX2 ? "own AVX2 GEMM" :
                        mode == AB_IGEMM ? "oneDNN int8" : "oneDNN matmul";
    const char *names[2] = {mode == AB_IGEMM ? "own int8 GEMM" : "own GEMM", bname};
    double med[2];
    for (int j = 0; j < 2; j++) {
        qsort(t[j], iters, sizeof(double), cmp_double);
        med[j] = t[j][iters / 2];
        printf("  %-14s %8.1f / %8.1f ms  %6.1f GFLOP/s  (%s)\n", names[j], med[j], t[j][0],
               fl / (med[j] / 1e3) / 1e9, vs_backend_cpu.device_name(ctx[j]));
    }
    printf("  %s / own: %.3fx (median), %.3fx (min); logits max|d| %.3g (scale %.3g)\n",
           bname, med[1] / med[0], t[1][0] / t[0][0], d, sc);
    free(pix); free(lg[0]); free(lg[1]); free(t[0]); free(t[1]);
    vs_backend_cpu.destroy(ctx[0]);
    vs_backend_cpu.destroy(ctx[1]);
    return 0;
fail:
    fprintf(stderr, "ab: %s\n", err.msg);
    vs_backend_cpu.destroy(ctx[0]);
    vs_backend_cpu.destroy(ctx[1]);
    return 1;
}

/* --ab-batch: the per-image time of a batch of n against n single-image
 * forwards, in one backend, alternated round by round (which goes first
 * alternates too), so that both see the same machine: the "batch
 * 8 and 32 at least as many images/s per core as batch 1" without the
 * bias of comparing medians of 0.3 s passes with medians of 10 s ones. */
static int ab_batch(const struct vitb *m, int threads, int n, int rounds, enum vs_precision prec)
{
    struct vs_backend_opts o = {.precision = prec, .threads = threads, .max_batch = n,
                                .prepack = true};
    struct vs_err err = {0};
    void *ctx = NULL;
    if (vs_backend_cpu.create(&m->cfg, &m->w, &o, &ctx, &err) != VS_OK) {
        fprintf(stderr, "ab-batch: %s\n", err.msg);
        return 1;
    }
    vs_backend_cpu.settle(ctx);
    const size_t img = 3 * 224 * 224;
    float *pix = malloc(img * n * sizeof(float));
    float *lg = malloc((size_t)n * 1000 * sizeof(float)), *l1 = malloc(1000 * sizeof(float));
    double *tb = malloc(sizeof(double) * rounds), *ts = malloc(sizeof(double) * rounds);
    if (!pix || !lg || !l1 || !tb || !ts) {
        fprintf(stderr, "ab-batch: out of memory\n");
        return 1;
    }
    fill(pix, img * n, 1.0f, 0);
    int rc = vs_backend_cpu.forward(ctx, pix, 1, l1, &err) != VS_OK;   /* warm-up */
    double sum_b = 0, sum_s = 0, diff = 0;
    for (int r = 0; r < rounds && !rc; r++)
        for (int j0 = 0; j0 < 2 && !rc; j0++) {
            const double t0 = vs_now_ms();
            if ((r + j0) % 2 == 0) {
                rc = vs_backend_cpu.forward(ctx, pix, n, lg, &err) != VS_OK;
                tb[r] = (vs_now_ms() - t0) / n;
                sum_b += tb[r];
            } else {
                for (int i = 0; i < n && !rc; i++) {
                    rc = vs_backend_cpu.forward(ctx, pix + img * i, 1, l1, &err) != VS_OK;
                    for (int k = 0; k < 1000 && !rc; k++)
                        diff = fmax(diff, fabs((double)l1[k] - lg[(size_t)i * 1000 + k]));
                }
                ts[r] = (vs_now_ms() - t0) / n;
                sum_s += ts[r];
            }
        }
    if (rc) {
        fprintf(stderr, "ab-batch: %s\n", err.msg);
    } else {
        qsort(tb, rounds, sizeof(double), cmp_double);
        qsort(ts, rounds, sizeof(double), cmp_double);
        printf("\nbatch %d vs %d single-image forwards, %d alternated rounds: ms per image "
               "(median / min / mean)\n", n, n, rounds);
        printf("  batch of %-3d %8.1f / %8.1f / %8.1f\n", n, tb[rounds / 2], tb[0], sum_b / rounds);
        printf("  singles      %8.1f / %8.1f / %8.1f\n", ts[rounds / 2], ts[0], sum_s / rounds);
        printf("  images/s per core, batch / singles: %.3fx (median), %.3fx (min), %.3fx (mean); "
               "logits max|d| %.3g\n", ts[rounds / 2] / tb[rounds / 2], ts[0] / tb[0],
               sum_s / sum_b, diff);
    }
    free(pix); free(lg); free(l1); free(tb); free(ts);
    vs_backend_cpu.destroy(ctx);
    return rc;
}

static void usage(void)
{
    fprintf(stderr, "usage: vs-bench_cpu [--batch 1,8,32] [--iters N] [--threads T] "
                    "[--precision fp32|int8] [--layers L] [--contend] [--gemm-layout] "
                    "[--compare-int8] [--gemm-api] [--ab] [--ab-prepack] [--ab-attn] [--ab-avx2] "
                    "[--ab-batch] [--ab-igemm]\n");
}

static int compare_int8(const struct vitb *m, int threads, int nimg)
{
    struct vs_backend_opts o = {.precision = VS_PRECISION_FP32, .threads = threads,
                                .max_batch = nimg};
    struct vs_err err = {0};
    void *c32 = NULL, *c8 = NULL;
    if (vs_backend_cpu.create(&m->cfg, &m->w, &o, &c32, &err) != VS_OK) goto fail;
    o.precision = VS_PRECISION_INT8;
    if (vs_backend_cpu.create(&m->cfg, &m->w, &o, &c8, &err) != VS_OK) goto fail;
    const size_t img = 3 * 224 * 224;
    float *pix = malloc(img * nimg * sizeof(float));
    float *a = malloc(1000 * (size_t)nimg * sizeof(float)), *b = malloc(1000 * (size_t)nimg * sizeof(float));
    fill(pix, img * nimg, 1.0f, 0);
    if (vs_backend_cpu.forward(c32, pix, nimg, a, &err) != VS_OK ||
        vs_backend_cpu.forward(c8, pix, nimg, b, &err) != VS_OK)
        goto fail;
    double worst = 0, scale = 0, cmin = 1;
    int agree = 0;
    for (int i = 0; i < nimg; i++) {
        double dot = 0, na = 0, nb = 0;
        int ia = 0, ib = 0;
        for (int j = 0; j < 1000; j++) {
            const double x = a[i * 1000 + j], yv = b[i * 1000 + j];
            dot += x * yv; na += x * x; nb += yv * yv;
            worst = fmax(worst, fabs(x - yv));
            scale = fmax(scale, fabs(x));
            if (x > a[i * 1000 + ia]) ia = j;
            if (yv > b[i * 1000 + ib]) ib = j;
        }
        cmin = fmin(cmin, dot / sqrt(na * nb));
        agree += ia == ib;
    }
    printf("\nint8 vs fp32 on %d random images (random ViT-B weights): max|d logit| %.4f "
           "(max |logit| %.3f), min cosine %.6f, top-1 agreement %d/%d\n",
           nimg, worst, scale, cmin, agree, nimg);
    free(pix); free(a); free(b);
    vs_backend_cpu.destroy(c32);
    vs_backend_cpu.destroy(c8);
    return 0;
fail:
    fprintf(stderr, "compare-int8: %s\n", err.msg);
    vs_backend_cpu.destroy(c32);
    vs_backend_cpu.destroy(c8);
    return 1;
}

int main(int argc, char **argv)
{
    int batches[16] = {1, 8, 32}, nb = 3, iters = 0, threads = 0, layers = 12;
    bool contend = false, layout = false, cmp8 = false, api = false, ab = false, abb = false;
    enum ab_mode abm = AB_ONEDNN;
    enum vs_precision prec = VS_PRECISION_FP32;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--batch") && v) {
            nb = 0;
            for (char *s = argv[++i]; *s && nb < 16;) {
                batches[nb++] = (int)strtol(s, &s, 10);
                if (*s == ',') s++;
                else if (*s) { usage(); return 2; }
            }
        } else if (!strcmp(a, "--iters") && v) iters = atoi(argv[++i]);
        else if (!strcmp(a, "--threads") && v) threads = atoi(argv[++i]);
        else if (!strcmp(a, "--layers") && v) layers = atoi(argv[++i]);
        else if (!strcmp(a, "--precision") && v) {
            ++i;
            if (!strcmp(v, "fp32")) prec = VS_PRECISION_FP32;
            else if (!strcmp(v, "int8")) prec = VS_PRECISION_INT8;
            else { usage(); return 2; }
        } else if (!strcmp(a, "--contend")) contend = true;
        else if (!strcmp(a, "--gemm-layout")) layout = true;
        else if (!strcmp(a, "--compare-int8")) cmp8 = true;
        else if (!strcmp(a, "--gemm-api")) api = true;
        else if (!strcmp(a, "--ab")) ab = true;
        else if (!strcmp(a, "--ab-prepack")) ab = true, abm = AB_PREPACK;
        else if (!strcmp(a, "--ab-attn")) ab = true, abm = AB_ATTN;
        else if (!strcmp(a, "--ab-avx2")) ab = true, abm = AB_AVX2;
        else if (!strcmp(a, "--ab-batch")) abb = true;
        else if (!strcmp(a, "--ab-igemm")) ab = true, abm = AB_IGEMM;
        else { usage(); return 2; }
    }
    int maxb = 1;
    for (int i = 0; i < nb; i++) {
        if (batches[i] < 1 || batches[i] > 256) { usage(); return 2; }
        maxb = VS_MAX(maxb, batches[i]);
    }
    struct vitb m = {0};
    if (layers < 1 || vitb_init(&m, layers) != 0) { fprintf(stderr, "out of memory\n"); return 1; }
    const char *wp = getenv("OMP_WAIT_POLICY");
    printf("ViT-B/16 224x224, %d layers, random weights; %s; OMP_WAIT_POLICY=%s\n", layers,
           prec == VS_PRECISION_INT8 ? "int8" : "fp32", wp ? wp : "(unset)");
    if (layout) {
        gemm_layout(&m, iters > 0 ? iters : 5);
        free(m.mem);
        free(m.layers);
        return 0;
    }
    if (ab) {
        int r = 0;
        for (int i = 0; i < nb && r == 0; i++)
            r = ab_forward(&m, threads, batches[i], iters > 0 ? iters : 5, abm);
        free(m.mem);
        free(m.layers);
        return r;
    }
    if (abb) {
        int r = 0;
        for (int i = 0; i < nb && r == 0; i++)
            if (batches[i] > 1) r = ab_batch(&m, threads, batches[i], iters > 0 ? iters : 5, prec);
        free(m.mem);
        free(m.layers);
        return r;
    }
    if (api) {
        gemm_api(iters > 0 ? iters : 10, threads);
        free(m.mem);
        free(m.layers);
        return 0;
    }
    if (cmp8) {
        const int r = compare_int8(&m, threads, iters > 0 ? iters : 16);
        free(m.mem);
        free(m.layers);
        return r;
    }

    /* as serve runs it: packed weight copies (VS_CPU_PREPACK=0 to compare) */
    struct vs_backend_opts o = {.precision = prec, .threads = threads, .max_batch = maxb,
                                .prepack = true};
    struct vs_err err = {0};
    void *ctx = NULL;
    const double tc = vs_now_ms();
    if (vs_backend_cpu.create(&m.cfg, &m.w, &o, &ctx, &err) != VS_OK) {
        fprintf(stderr, "create: %s\n", err.msg);
        return 1;
    }
    const double create_ms = vs_now_ms() - tc;
    vs_backend_cpu.settle(ctx);
    struct vs_cpu_stats st;
    vs_model_cpu_stats(ctx, &st, true);
    const double peak_here = fma_peak(st.threads);
    printf("device: %s\nrow kernels %s, threads %d, create %.1f ms, measured AVX2 FMA peak "
           "here %.1f GFLOP/s (%d threads)\n", vs_backend_cpu.device_name(ctx), st.kernels,
           st.threads, create_ms, peak_here, st.threads);
    const double fl = flops_per_image(&m.cfg);
    printf("%.2f GFLOP per image\n\n", fl / 1e9);
    printf("%5s %10s %10s %10s %9s %9s %9s %9s %10s %10s%s\n", "batch", "median ms", "min ms",
           "first ms", "img/s", "GFLOP/s", "%343", "%here", "non-GEMM", "attention",
           contend ? "  contender Mit/s" : "");

    const size_t img = 3 * 224 * 224;
    float *pix = malloc(img * maxb * sizeof(float));
    float *logits = malloc((size_t)maxb * 1000 * sizeof(float));
    fill(pix, img * maxb, 1.0f, 0);
    for (int bi = 0; bi < nb; bi++) {
        const int n = batches[bi];
        const int it = iters > 0 ? iters : (n == 1 ? 20 : (n <= 8 ? 6 : 3));
        double *t = malloc(sizeof(double) * it);
        const double tf = vs_now_ms();
        if (vs_backend_cpu.forward(ctx, pix, n, logits, &err) != VS_OK) {
            fprintf(stderr, "forward: %s\n", err.msg);
            return 1;
        }
        const double first = vs_now_ms() - tf;   /* includes building the plan */
        vs_backend_cpu.forward(ctx, pix, n, logits, &err);
        vs_model_cpu_stats(ctx, &st, true);
        pthread_t cth;
        uint64_t cwork = 0;
        atomic_store(&stop_flag, 0);
        if (contend) pthread_create(&cth, NULL, contender, &cwork);
        const double t_all = vs_now_ms();
        for (int i = 0; i < it; i++) {
            const double t0 = vs_now_ms();
            vs_backend_cpu.forward(ctx, pix, n, logits, &err);
            t[i] = vs_now_ms() - t0;
        }
        const double wall = vs_now_ms() - t_all;
        if (contend) {
            atomic_store(&stop_flag, 1);
            pthread_join(cth, NULL);
        }
        vs_model_cpu_stats(ctx, &st, true);
        qsort(t, it, sizeof *t, cmp_double);
        const double med = t[it / 2], mn = t[0];
        const double gf = fl * n / (med / 1e3) / 1e9;
        const double other = st.total_ns ? 1.0 - (double)st.gemm_ns / st.total_ns : 0;
        const double attn = st.total_ns ? (double)st.attn_ns / st.total_ns : 0;
        printf("%5d %10.1f %10.1f %10.1f %9.2f %9.1f %8.1f%% %8.1f%% %9.1f%% %9.1f%%", n, med, mn,
               first, n / (med / 1e3), gf, 100 * gf / XEON_PEAK_GFLOPS,
               peak_here > 0 ? 100 * gf / peak_here : 0, 100 * other, 100 * attn);
        if (contend) printf("  %10.1f", (double)cwork * 1000.0 / (wall / 1e3) / 1e6);
        printf("\n");
        free(t);
    }
    printf("\noneDNN: %s\n", st.impl);
    vs_backend_cpu.destroy(ctx);
    free(pix);
    free(logits);
    free(m.mem);
    free(m.layers);
    return 0;
}
