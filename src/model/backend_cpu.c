/* backend_cpu.c: the ViT forward pass on the CPU — oneDNN matmul primitives
 * for the GEMMs (with bias, activation and residual fused as post-ops) and
 * our own vectorised loops for LayerNorm and softmax (cpu_kernels.c).
 * Where oneDNN's best ISA is AVX2 (AMD Zen, older Intel), the fp32 Linears
 * and the patch embedding run on our own AVX2/FMA GEMM instead
 * (cpu_kernels.c, bias/activation/residual in its epilogue; own_gemm below):
 * it matches or beats oneDNN 2.6's gemm:jit there, reads the weights in
 * place too, and its results do not depend on M or the thread count.
 * There attention (fp32 and int8) and the fp32 classifier run on it too,
 * one head per thread (attn_own), so logits are the same bits on any
 * thread count.  VS_CPU_GEMM=onednn|own|own-avx2 overrides the choice;
 * VS_CPU_ATTN=onednn keeps attention on oneDNN (measurements).
 *
 * The pass, for n images (M = n*T rows, D hidden, H heads, dh = D/H,
 * F = mlp, G = grid_h*grid_w patches, K0 = C*P*P):
 *
 *   col  = im2col(pixels)                 (n, G, K0)  patch rows, c-major
 *   x    = [cls; 0..] + pos               (n, T, D)   then, fused:
 *   x[:,1:] += col @ patch_w^T + patch_b  (sum post-op)
 *   per layer:
 *     xn  = LN1(x)                        (M, D)
 *     Q,K,V = xn @ {q,k,v}_w^T + b        3 x (M, D)  three GEMMs, one buffer
 *     per image b (own GEMM: per image and head, one thread each, S (T, T)):
 *       S = Q_b K_b^T / sqrt(dh)          (H, T, T)   batched over heads, strided views
 *       S = softmax(S) over the last axis
 *       a_b = S V_b                       (T, H, dh) = (T, D) heads concatenated
 *     x  += a @ o_w^T + o_b               (sum post-op: the residual)
 *     xn  = LN2(x)
 *     f   = act(xn @ fc1_w^T + fc1_b)     (M, F)   eltwise post-op
 *     x  += f @ fc2_w^T + fc2_b           (sum post-op)
 *   c      = LNf(x[:, 0])                 (n, D)   token 0 only
 *   logits = c @ head_w^T + head_b        (n, labels)
 *
 * GEMM layouts: activations are row-major (ld = row length).  A Linear
 * weight W (out, in) row-major is used in place as the matmul B operand
 * (K = in, N = out) with strides {1, K} (oneDNN tag "ba"): no second copy of
 * the fp32 weights, which the loader memory-maps.  Q, K and V are read
 * through strided 4-D descriptors (head h = columns h*dh..(h+1)*dh), so
 * attention needs no transposes or copies.  Attention runs one image at a
 * time so that S (H*T*T floats, 1.9 MB for ViT-B) stays in L2 between the
 * two GEMMs and the softmax instead of streaming n times that through
 * memory; the Linears run on all n*T rows at once.
 *
 * int8 (opt-in): each encoder Linear's weight is quantized at create() per
 * output channel (symmetric s8, scale sw[o] = max|row| / qmax); activations
 * are quantized per token right before each of those GEMMs (asymmetric u8:
 * x ~ (q - zp[m]) * sa[m]).  oneDNN runs a bare u8s8 -> f32 GEMM (the
 * integer sums; no attributes, so any int8 kernel qualifies), with the
 * weights in the layout it prefers (reordered once, they are our copy);
 * one pass of ours then dequantizes,
 *   y[m,o] = (acc[m,o] sw[o] - zp[m] cs[o]) sa[m] + b[o],  cs[o] = sw[o] sum_k q[o,k],
 * writing Q/K/V in place, adding into the residual x, or (fc1) before a
 * oneDNN eltwise pass for the activation.  (oneDNN 2.6's gemm:jit int8
 * matmul takes per-column scales and post-ops but not a per-row scale; with
 * one it falls back to its reference kernel, 50x slower, hence our pass.
 * u8 rather than s8 activations: s8 sources cost oneDNN a compensation
 * pass, ~35% slower.)
 * Patch embedding, attention (QK^T, softmax, SV) and the classifier stay
 * fp32.  Without VNNI, u8*s8 pair products go through 16-bit saturating
 * adds (vpmaddubsw), so weights are limited to 7 bits (qmax 63) there:
 * 2 * 255 * 63 < 32767 keeps them exact.
 *
 * A batch runs image by image (run_images), so every layer of every pass
 * has the same shapes: one plan of about 8 primitives (none on the own
 * GEMM) serves all, built on the first forward and kept (int8 builds it at
 * create, which fixes the weights' layout); the scratch holds one image.
 *
 * Threads: create/destroy from one thread; forward() from one thread at a
 * time (the batcher).  forward() sets the OpenMP thread count of the
 * calling thread to opts->threads (0 = all cores); oneDNN and our loops
 * share that libgomp pool.
 */
#include "backend.h"
#include "cpu_backend.h"
#include "cpu_kernels.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <omp.h>
#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_debug.h>

#define MM_MAX_ARGS 8

/* One matmul primitive with its argument memories (handles set per call). */
struct mm {
    dnnl_primitive_t prim;
    int nargs;
    dnnl_exec_arg_t args[MM_MAX_ARGS];
    char impl[32];
};

/* The primitives of the one-image pass (n = 1 in the shapes below). */
struct plan {
    bool ready;
    struct mm patch;   /* (n,G,K0) x (K0,D) + b, sum into x[:,1:] */
    struct mm qkv;     /* (M,D) x (D,D) + b -> (M,D) (run 3x) */
    struct mm score;   /* one image: (1,H,T,dh) x (1,H,dh,T) / sqrt(dh) -> (1,H,T,T) */
    struct mm pv;      /* one image: (1,H,T,T) x (1,H,T,dh) -> (1,T,H,dh) */
    struct mm oproj;   /* (M,D) x (D,D) + b, sum */
    struct mm fc1;     /* (M,D) x (D,F) + b, act */
    struct mm fc2;     /* (M,F) x (F,D) + b, sum */
    struct mm head;    /* (n,D) x (D,labels) + b */
    struct mm act;     /* int8 only: eltwise activation in place on f (M,F) */
};

/* int8 copy of one Linear: q (out, in) row-major s8, per-row scale (out),
 * cs (out) = scale * sum of the row's q (for the activations' zero point). */
struct q8 {
    int8_t *q;
    float *scale;
    float *cs;
};
struct q8_layer {
    struct q8 q, k, v, o, fc1, fc2;
};

struct cpu_ctx {
    struct vs_vit_config cfg;
    struct vs_vit_weights w;        /* shallow copy; arrays are the caller's */
    int threads, max_batch;
    enum vs_precision prec;
    const struct vs_cpu_kernels *k;
    dnnl_engine_t eng;
    dnnl_stream_t strm;

    /* scratch for one image: a batch runs image by image (run_images) */
    float *x;       /* (n, T, D) residual stream */
    float *xn;      /* (n, T, D) LayerNorm output, then attention output */
    float *qkv;     /* (3, n*T, D): Q, then K, then V */
    float *S;       /* (H, T, T) attention probabilities of one image */
    float *f;       /* (n, T, F) MLP hidden */
    float *col;     /* (n, G, K0) im2col of the pixels */
    float *c;       /* (n, D) final LayerNorm of token 0 */
    float *zeros;   /* (max(D, F, labels)) stands in for a NULL bias */
    uint8_t *aq;    /* int8: (n*T, max(D,F)) quantized activations */
    float *as;      /* int8: (n*T) their per-token scales */
    float *azp;     /* int8: (n*T) their zero points */
    float *acc;     /* int8: (n*T, D) GEMM output before dequantization */

    struct plan plan;               /* built on the first forward (int8: at create) */
    struct q8_layer *q8;            /* [L] when INT8 */
    int8_t *q8_mem;
    float *q8_scales;
    int wqmax;
    /* layouts of the int8 weights, by shape: (D->D), (D->F), (F->D); fixed
     * by the first plan built (q8_md_set), weights reordered to them */
    dnnl_memory_desc_t q8_md[3];
    bool q8_md_set;
    void *q8_blocked;
    /* int8 Linears on our own AVX2 u8 x s8 GEMM (cpu_kernels.c) instead of
     * oneDNN: CPUs without VNNI (wqmax 63); the weights then live in
     * q8_packed, in its layout, and oneDNN has no int8 primitive */
    bool own_q8;
    int8_t *q8_packed;

    /* fp32 Linears and the patch embedding on our own AVX2 GEMM
     * (cpu_kernels.c) instead of oneDNN; chosen in cpu_create() */
    bool own_gemm;
    bool own_attn;      /* attention on the own GEMM too (fp32 and int8) */
    int own_act;        /* enum vs_cpu_act of cfg.act */
    float own_alpha;
    float *gemm_ws;     /* threads x vs_model_cpu_gemm_ws_floats() */
    /* the own GEMM's packed weights (opts->prepack): [0] the patch
     * embedding, [1 + 6 l + j] layer l's q, k, v, o, fc1, fc2.  A background
     * thread (packer_main) fills them one by one and publishes each with
     * `ready` (release/acquire); forward() uses a copy once it is ready and
     * packs per call until then.  The packer then drops the mapped pages of
     * the original (release_mapped), so resident memory stays one copy. */
    struct wpack {
        float *p;
        const float *w;     /* the original (N, K) */
        int64_t N, K;
        int ready;          /* atomic */
    } *wpk;
    int nwpk;
    float *wpk_mem;
    pthread_t packer;
    bool packer_running;    /* started and not joined yet */
    int packer_stop;        /* atomic: destroy() asks it to finish early */

    struct vs_cpu_stats st;
    char device[192];
};

/* ---- small helpers ---------------------------------------------------- */

static enum vs_status dnnl_fail(struct vs_err *err, dnnl_status_t s,
                                const char *what)
{
    return vs_err_set(err, VS_BACKEND, "cpu backend: oneDNN %s failed: %s",
                      what, dnnl_status2str(s));
}

static void *alloc_floats(size_t count, size_t elem, size_t *total)
{
    size_t bytes;
    if (!vs_mul_size(count, elem, &bytes)) return NULL;
    bytes = (bytes + 63) / 64 * 64;
    if (bytes == 0) bytes = 64;
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes) != 0) return NULL;
    *total += bytes;
    return p;
}

/* Row-major (rows, cols) with leading dimension ld. */
static void md_rows(dnnl_memory_desc_t *md, int64_t rows, int64_t cols,
                    int64_t ld, dnnl_data_type_t dt)
{
    dnnl_dims_t dims = {rows, cols}, str = {ld, 1};
    dnnl_memory_desc_init_by_strides(md, 2, dims, dt, str);
}

/* A Linear weight (N=out, K=in) row-major, seen as B (K, N): tag "ba". */
static void md_linear_w(dnnl_memory_desc_t *md, int64_t K, int64_t N,
                        dnnl_data_type_t dt)
{
    dnnl_dims_t dims = {K, N}, str = {1, K};
    dnnl_memory_desc_init_by_strides(md, 2, dims, dt, str);
}

static void md_nd(dnnl_memory_desc_t *md, int nd, const int64_t *dims,
                  const int64_t *str)
{
    dnnl_dims_t d, s;
    for (int i = 0; i < nd; i++) {
        d[i] = dims[i];
        s[i] = str[i];
    }
    dnnl_memory_desc_init_by_strides(md, nd, d, dnnl_f32, s);
}

/* Creates a matmul and the memories of its arguments: SRC, WEIGHTS, [BIAS],
 * DST, then nextra extra arguments (ids + descriptors), in that order —
 * mm_run() takes the data pointers in the same order. */
static enum vs_status mm_create(struct cpu_ctx *c, struct mm *mm,
                                const char *name,
                                const dnnl_memory_desc_t *a,
                                const dnnl_memory_desc_t *b,
                                const dnnl_memory_desc_t *bias,
                                const dnnl_memory_desc_t *d,
                                const_dnnl_primitive_attr_t attr,
                                int nextra, const int *extra_id,
                                const dnnl_memory_desc_t *extra_md,
                                dnnl_memory_desc_t *wmd_out, struct vs_err *err)
{
    dnnl_matmul_desc_t desc;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_status_t s = dnnl_matmul_desc_init(&desc, a, b, bias, d);
    if (s == dnnl_success)
        s = dnnl_primitive_desc_create(&pd, &desc, attr, c->eng, NULL);
    if (s != dnnl_success) {
        char what[64];
        snprintf(what, sizeof what, "matmul '%s' creation", name);
        return dnnl_fail(err, s, what);
    }
    const char *impl = NULL;
    dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
    /* the weights layout the primitive settled on (b may say "any") */
    const dnnl_memory_desc_t wmd = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    if (wmd_out) *wmd_out = wmd;
    snprintf(mm->impl, sizeof mm->impl, "%s", impl ? impl : "?");
    s = dnnl_primitive_create(&mm->prim, pd);
    dnnl_primitive_desc_destroy(pd);
    if (s != dnnl_success) {
        mm->prim = NULL;
        return dnnl_fail(err, s, "matmul primitive creation");
    }

    const dnnl_memory_desc_t *mds[MM_MAX_ARGS];
    int ids[MM_MAX_ARGS], k = 0;
    ids[k] = DNNL_ARG_SRC;     mds[k++] = a;
    ids[k] = DNNL_ARG_WEIGHTS; mds[k++] = &wmd;
    if (bias) { ids[k] = DNNL_ARG_BIAS; mds[k++] = bias; }
    ids[k] = DNNL_ARG_DST;     mds[k++] = d;
    VS_ASSERT(k + nextra <= MM_MAX_ARGS);
    for (int i = 0; i < nextra; i++) {
        ids[k] = extra_id[i];
        mds[k++] = &extra_md[i];
    }
    for (int i = 0; i < k; i++) {
        mm->args[i].arg = ids[i];
        s = dnnl_memory_create(&mm->args[i].memory, mds[i], c->eng, DNNL_MEMORY_NONE);
        if (s != dnnl_success) {
            mm->args[i].memory = NULL;
            mm->nargs = i;
            return dnnl_fail(err, s, "memory creation");
        }
        mm->nargs = i + 1;
    }
    return VS_OK;
}

static void mm_destroy(struct mm *mm)
{
    for (int i = 0; i < mm->nargs; i++) dnnl_memory_destroy(mm->args[i].memory);
    if (mm->prim) dnnl_primitive_destroy(mm->prim);
    memset(mm, 0, sizeof *mm);
}

/* Runs mm on the given pointers (same order as mm_create's arguments). */
static enum vs_status mm_run(struct cpu_ctx *c, struct mm *mm,
                             void *const *ptr, struct vs_err *err)
{
    for (int i = 0; i < mm->nargs; i++)
        dnnl_memory_set_data_handle(mm->args[i].memory, ptr[i]);
    const uint64_t t0 = vs_now_ns();
    dnnl_status_t s = dnnl_primitive_execute(mm->prim, c->strm, mm->nargs, mm->args);
    c->st.gemm_ns += vs_now_ns() - t0;
    if (s != dnnl_success) return dnnl_fail(err, s, "matmul execution");
    return VS_OK;
}

/* Drops the resident pages of a weight the backend will not read again
 * (its int8 or packed copy replaces it), when the model says it is a
 * read-only file mapping (outside the conversion arena): a later reader
 * (another backend on the same weights) faults them back in from the file.
 * Memory the model converted, or that a test allocated, is never touched. */
static void release_mapped(const struct cpu_ctx *c, const float *w, size_t floats)
{
    if (!c->w.file_backed || !w || floats == 0) return;
    if (c->w.arena && w >= c->w.arena && w < c->w.arena + c->w.arena_floats) return;
    const uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
    const uintptr_t lo = ((uintptr_t)w + pg - 1) / pg * pg;
    const uintptr_t hi = ((uintptr_t)(w + floats)) / pg * pg;
    if (hi > lo) (void)madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

/* C (M, N) = (accumulate ? C : 0) + act?(A (M, K) W^T + bias) on our own
 * GEMM (act: the model's activation, or none); W (N, K) row-major in place,
 * or its packed copy pk once the packer has published it (pk NULL: none). */
static void own_run(struct cpu_ctx *c, int64_t M, int64_t N, int64_t K, const float *A,
                    int64_t lda, const float *W, const struct wpack *pk, const float *bias,
                    float *C, int64_t ldc, bool act, bool accumulate)
{
    const bool packed = pk && __atomic_load_n(&pk->ready, __ATOMIC_ACQUIRE);
    const struct vs_cpu_gemm g = {
        .M = M, .N = N, .K = K, .A = A, .lda = lda, .W = W, .ldw = K, .bias = bias,
        .C = C, .ldc = ldc, .act = act ? c->own_act : VS_CPU_ACT_NONE,
        .alpha = c->own_alpha, .accumulate = accumulate, .Wp = packed ? pk->p : NULL,
    };
    const uint64_t t0 = vs_now_ns();
    c->k->sgemm(&g, c->gemm_ws, c->threads);
    c->st.gemm_ns += vs_now_ns() - t0;
}

/* The packed copy of encoder weight j (0..5: q, k, v, o, fc1, fc2) of
 * layer l, or of the patch embedding (l < 0); NULL without prepacking. */
static const struct wpack *wpk_of(const struct cpu_ctx *c, int l, int j)
{
    if (!c->wpk) return NULL;
    return l < 0 ? &c->wpk[0] : &c->wpk[1 + 6 * l + j];
}

/* The packer thread: packs the weights in the order a forward uses them,
 * publishing each, at a low priority (it must not slow the requests that
 * arrive meanwhile more than it has to). */
static void *packer_main(void *arg)
{
    struct cpu_ctx *c = arg;
#ifdef __linux__
    (void)setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 10);
#endif
    for (int i = 0; i < c->nwpk; i++) {
        if (__atomic_load_n(&c->packer_stop, __ATOMIC_RELAXED)) break;
        struct wpack *pk = &c->wpk[i];
        c->k->sgemm_pack(pk->w, pk->K, pk->N, pk->K, pk->p);
        __atomic_store_n(&pk->ready, 1, __ATOMIC_RELEASE);
        release_mapped(c, pk->w, (size_t)pk->N * (size_t)pk->K);
    }
    return NULL;
}

/* Reserves the packed copies (address space only: pages arrive as the
 * packer writes them, in transparent huge pages where the kernel allows
 * it) and starts the packer.  false: out of memory (nothing started). */
static bool wpk_start(struct cpu_ctx *c)
{
    const struct vs_vit_config *g = &c->cfg;
    const struct vs_vit_weights *w = &c->w;
    const int64_t D = g->hidden, F = g->mlp;
    const int64_t K0 = (int64_t)g->channels * g->patch * g->patch;
    const int n = 1 + 6 * g->layers;
    c->wpk = calloc((size_t)n, sizeof *c->wpk);
    if (!c->wpk) return false;
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        struct wpack *pk = &c->wpk[i];
        if (i == 0) {
            *pk = (struct wpack){.w = w->patch_w, .N = D, .K = K0};
        } else {
            const struct vs_vit_layer *ly = &w->layer[(i - 1) / 6];
            const float *ws[6] = {ly->q_w, ly->k_w, ly->v_w, ly->o_w, ly->fc1_w, ly->fc2_w};
            const int64_t Ns[6] = {D, D, D, D, F, D}, Ks[6] = {D, D, D, D, D, F};
            const int j = (i - 1) % 6;
            *pk = (struct wpack){.w = ws[j], .N = Ns[j], .K = Ks[j]};
        }
        /* a multiple of 16 floats: every copy starts 64-byte aligned */
        const size_t f = vs_model_cpu_gemm_packed_floats(pk->N, pk->K);
        if (total > SIZE_MAX / 8 - f) return false;
        total += f;
    }
    const size_t huge = (size_t)2 << 20;
    const size_t len = (total * sizeof(float) + huge - 1) / huge * huge;
    void *mem = NULL;
    if (posix_memalign(&mem, huge, len) != 0) return false;
#ifdef MADV_HUGEPAGE
    (void)madvise(mem, len, MADV_HUGEPAGE);
#endif
    c->wpk_mem = mem;
    c->nwpk = n;
    float *at = c->wpk_mem;
    for (int i = 0; i < n; i++) {
        c->wpk[i].p = at;
        at += vs_model_cpu_gemm_packed_floats(c->wpk[i].N, c->wpk[i].K);
    }
    if (pthread_create(&c->packer, NULL, packer_main, c) != 0) {
        /* no thread: run as if prepacking were off */
        free(c->wpk);
        free(c->wpk_mem);
        c->wpk = NULL;
        c->wpk_mem = NULL;
        c->nwpk = 0;
        return true;
    }
    c->packer_running = true;
    return true;
}

/* Waits for the packer (early when stop). */
static void wpk_join(struct cpu_ctx *c, bool stop)
{
    if (!c->packer_running) return;
    if (stop) __atomic_store_n(&c->packer_stop, 1, __ATOMIC_RELAXED);
    pthread_join(c->packer, NULL);
    c->packer_running = false;
}

static const float *bias_or_zeros(const struct cpu_ctx *c, const float *b)
{
    return b ? b : c->zeros;
}

/* ---- plan: the primitives of one batch size --------------------------- */

static enum vs_status act_alg(enum vs_act act, dnnl_alg_kind_t *alg, float *alpha)
{
    *alpha = 0.0f;
    switch (act) {
    case VS_ACT_GELU:       *alg = dnnl_eltwise_gelu_erf; return VS_OK;
    case VS_ACT_GELU_TANH:  /* same formula as GELU_FAST: */
    case VS_ACT_GELU_FAST:  *alg = dnnl_eltwise_gelu_tanh; return VS_OK;
    case VS_ACT_RELU:       *alg = dnnl_eltwise_relu; return VS_OK;
    case VS_ACT_QUICK_GELU: *alg = dnnl_eltwise_swish; *alpha = 1.702f; return VS_OK;
    case VS_ACT_SILU:       *alg = dnnl_eltwise_swish; *alpha = 1.0f; return VS_OK;
    }
    return VS_UNSUPPORTED;
}

/* The activation for our own GEMM's epilogue (same formulas as oneDNN's
 * algorithms in act_alg). */
static enum vs_status own_act(enum vs_act act, int *out, float *alpha)
{
    *alpha = 0.0f;
    switch (act) {
    case VS_ACT_GELU:       *out = VS_CPU_ACT_GELU_ERF; return VS_OK;
    case VS_ACT_GELU_TANH:
    case VS_ACT_GELU_FAST:  *out = VS_CPU_ACT_GELU_TANH; return VS_OK;
    case VS_ACT_RELU:       *out = VS_CPU_ACT_RELU; return VS_OK;
    case VS_ACT_QUICK_GELU: *out = VS_CPU_ACT_SWISH; *alpha = 1.702f; return VS_OK;
    case VS_ACT_SILU:       *out = VS_CPU_ACT_SWISH; *alpha = 1.0f; return VS_OK;
    }
    return VS_UNSUPPORTED;
}

/* attr: one static output scale (fp32, oscale != 1), then post-ops:
 * optional eltwise, then optional sum.  int8 GEMMs get none. */
static enum vs_status make_attr(dnnl_primitive_attr_t *out, bool eltwise,
                                dnnl_alg_kind_t alg, float alpha, bool sum,
                                float oscale, struct vs_err *err)
{
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    dnnl_status_t s = dnnl_primitive_attr_create(&attr);
    if (s == dnnl_success) s = dnnl_post_ops_create(&po);
    if (s == dnnl_success && oscale != 1.0f)
        s = dnnl_primitive_attr_set_output_scales(attr, 1, 0, &oscale);
    if (s == dnnl_success && eltwise) s = dnnl_post_ops_append_eltwise(po, 1.0f, alg, alpha, 0.0f);
    if (s == dnnl_success && sum) s = dnnl_post_ops_append_sum(po, 1.0f);
    if (s == dnnl_success) s = dnnl_primitive_attr_set_post_ops(attr, po);
    if (po) dnnl_post_ops_destroy(po);
    if (s != dnnl_success) {
        if (attr) dnnl_primitive_attr_destroy(attr);
        return dnnl_fail(err, s, "primitive attributes");
    }
    *out = attr;
    return VS_OK;
}

/* One encoder Linear (M, K) x (K, N) -> dst with leading dimension ldd. */
static enum vs_status linear_create(struct cpu_ctx *c, struct mm *mm,
                                    const char *name, int64_t M, int64_t K,
                                    int64_t N, int64_t ldd, bool eltwise,
                                    bool sum, struct vs_err *err)
{
    const bool int8 = c->prec == VS_PRECISION_INT8;
    dnnl_alg_kind_t alg = dnnl_eltwise_relu;
    float alpha = 0.0f;
    if (eltwise && act_alg(c->cfg.act, &alg, &alpha) != VS_OK)
        return vs_err_set(err, VS_UNSUPPORTED, "cpu backend: activation %d unknown",
                          (int)c->cfg.act);
    dnnl_primitive_attr_t attr;
    /* int8: a bare GEMM, dequantization is ours */
    enum vs_status st = make_attr(&attr, eltwise && !int8, alg, alpha,
                                  sum && !int8, 1.0f, err);
    if (st != VS_OK) return st;
    dnnl_memory_desc_t a, b, bias, d;
    md_rows(&a, M, K, K, int8 ? dnnl_u8 : dnnl_f32);
    md_linear_w(&b, K, N, int8 ? dnnl_s8 : dnnl_f32);
    md_rows(&bias, 1, N, N, dnnl_f32);
    md_rows(&d, M, N, ldd, dnnl_f32);
    if (int8) {
        /* int8 weights are our own copy: let oneDNN pick their layout on the
         * first plan (VNNI/AMX kernels want blocked ones), then keep it */
        dnnl_memory_desc_t *lay = &c->q8_md[K == N ? 0 : (K < N ? 1 : 2)];
        if (c->q8_md_set) {
            b = *lay;
        } else {
            dnnl_dims_t bd = {K, N};
            dnnl_memory_desc_init_by_tag(&b, 2, bd, dnnl_s8, dnnl_format_tag_any);
        }
        st = mm_create(c, mm, name, &a, &b, NULL, &d, attr, 0, NULL, NULL, lay, err);
    } else {
        st = mm_create(c, mm, name, &a, &b, &bias, &d, attr, 0, NULL, NULL, NULL, err);
    }
    dnnl_primitive_attr_destroy(attr);
    return st;
}

/* The shape of encoder Linear j of a layer (0..5: q, k, v, o, fc1, fc2):
 * K inputs, N outputs (its weight is (N, K)). */
static void linear_shape(const struct vs_vit_config *g, int j, int64_t *K, int64_t *N)
{
    *K = j == 5 ? g->mlp : g->hidden;
    *N = j == 4 ? g->mlp : g->hidden;
}

/* int8: moves every quantized weight into the layout recorded in q8_md (by
 * shape) with oneDNN reorders; the plain copy is freed afterwards. */
static enum vs_status q8_relayout(struct cpu_ctx *c, struct vs_err *err)
{
    const struct vs_vit_config *g = &c->cfg;
    const int64_t D = g->hidden, F = g->mlp;
    const int64_t Ks[3] = {D, D < F ? D : F, D < F ? F : D};
    const int64_t Ns[3] = {D, D < F ? F : D, D < F ? D : F};
    dnnl_memory_desc_t plain[3];
    size_t size[3];
    bool same[3];
    for (int i = 0; i < 3; i++) {
        md_linear_w(&plain[i], Ks[i], Ns[i], dnnl_s8);
        same[i] = dnnl_memory_desc_equal(&plain[i], &c->q8_md[i]);
        size[i] = dnnl_memory_desc_get_size(&c->q8_md[i]);
    }
    if (same[0] && same[1] && same[2]) return VS_OK;

    size_t total = 0, bytes = 0;
    for (int l = 0; l < g->layers; l++)
        for (int j = 0; j < 6; j++) {
            int64_t K, N;
            linear_shape(g, j, &K, &N);
            const int idx = K == N ? 0 : (K < N ? 1 : 2);
            total += same[idx] ? 0 : (size[idx] + 63) / 64 * 64;
        }
    c->q8_blocked = alloc_floats(total, 1, &bytes);
    if (!c->q8_blocked)
        return vs_err_set(err, VS_NOMEM, "cpu backend: cannot allocate %zu bytes for "
                          "int8 weights in oneDNN's layout", total);
    dnnl_primitive_t rp[3] = {NULL, NULL, NULL};
    dnnl_memory_t from[3] = {NULL, NULL, NULL}, to[3] = {NULL, NULL, NULL};
    dnnl_status_t s = dnnl_success;
    for (int i = 0; i < 3 && s == dnnl_success; i++) {
        if (same[i]) continue;
        dnnl_primitive_desc_t rpd = NULL;
        s = dnnl_reorder_primitive_desc_create(&rpd, &plain[i], c->eng, &c->q8_md[i],
                                               c->eng, NULL);
        if (s == dnnl_success) s = dnnl_primitive_create(&rp[i], rpd);
        if (rpd) dnnl_primitive_desc_destroy(rpd);
        if (s == dnnl_success) s = dnnl_memory_create(&from[i], &plain[i], c->eng, DNNL_MEMORY_NONE);
        if (s == dnnl_success) s = dnnl_memory_create(&to[i], &c->q8_md[i], c->eng, DNNL_MEMORY_NONE);
    }
    uint8_t *dst = c->q8_blocked;
    for (int l = 0; l < g->layers && s == dnnl_success; l++) {
        struct q8_layer *o = &c->q8[l];
        struct q8 *w[6] = {&o->q, &o->k, &o->v, &o->o, &o->fc1, &o->fc2};
        for (int j = 0; j < 6 && s == dnnl_success; j++) {
            int64_t K, N;
            linear_shape(g, j, &K, &N);
            const int idx = K == N ? 0 : (K < N ? 1 : 2);
            if (same[idx]) continue;
            dnnl_memory_set_data_handle(from[idx], w[j]->q);
            dnnl_memory_set_data_handle(to[idx], dst);
            dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, from[idx]}, {DNNL_ARG_TO, to[idx]}};
            s = dnnl_primitive_execute(rp[idx], c->strm, 2, args);
            w[j]->q = (int8_t *)dst;
            dst += (size[idx] + 63) / 64 * 64;
        }
    }
    dnnl_stream_wait(c->strm);
    for (int i = 0; i < 3; i++) {
        if (rp[i]) dnnl_primitive_destroy(rp[i]);
        if (from[i]) dnnl_memory_destroy(from[i]);
        if (to[i]) dnnl_memory_destroy(to[i]);
    }
    if (s != dnnl_success) return dnnl_fail(err, s, "int8 weight reorder");
    /* plain weights of shapes kept plain still live in q8_mem */
    if (!same[0] && !same[1] && !same[2]) {
        free(c->q8_mem);
        c->q8_mem = NULL;
    }
    return VS_OK;
}

static void plan_destroy(struct plan *p)
{
    mm_destroy(&p->patch);
    mm_destroy(&p->qkv);
    mm_destroy(&p->score);
    mm_destroy(&p->pv);
    mm_destroy(&p->oproj);
    mm_destroy(&p->fc1);
    mm_destroy(&p->fc2);
    mm_destroy(&p->head);
    mm_destroy(&p->act);
    p->ready = false;
}

static enum vs_status plan_build(struct cpu_ctx *c, struct vs_err *err)
{
    const struct vs_vit_config *g = &c->cfg;
    struct plan *p = &c->plan;
    const int64_t n = 1;   /* images per pass */
    const int64_t T = g->tokens, D = g->hidden, H = g->heads, dh = D / H;
    const int64_t F = g->mlp, G = (int64_t)g->grid_h * g->grid_w;
    const int64_t K0 = (int64_t)g->channels * g->patch * g->patch;
    const int64_t M = n * T, L = g->labels;
    enum vs_status st;
    dnnl_primitive_attr_t attr;
    dnnl_memory_desc_t a, b, bias, d;

    /* with our own GEMM the whole pass (patch embedding, Linears,
     * attention, classifier) needs no primitive; attention alone on
     * oneDNN (VS_CPU_ATTN=onednn, for measurements) needs its two */
    if (c->own_gemm && !c->own_attn) goto attention;
    if (c->own_gemm) {
        snprintf(c->st.impl, sizeof c->st.impl,
                 "patch, qkv, o, fc1, fc2, scores, attn_v, head=own avx2 6x16");
        p->ready = true;
        return VS_OK;
    }

    /* patch: col (n, G, K0) x patch_w^T broadcast (1, K0, D) + b, summed
     * into x viewed as (n, G, D) with strides (T*D, D, 1) at x + D. */
    st = make_attr(&attr, false, dnnl_eltwise_relu, 0, true, 1.0f, err);
    if (st != VS_OK) goto fail;
    {
        const int64_t ad[3] = {n, G, K0}, as[3] = {G * K0, K0, 1};
        const int64_t bd[3] = {1, K0, D}, bs[3] = {K0 * D, 1, K0};
        const int64_t cd[3] = {1, 1, D}, cs[3] = {D, D, 1};
        const int64_t dd[3] = {n, G, D}, ds[3] = {T * D, D, 1};
        md_nd(&a, 3, ad, as);
        md_nd(&b, 3, bd, bs);
        md_nd(&bias, 3, cd, cs);
        md_nd(&d, 3, dd, ds);
    }
    st = mm_create(c, &p->patch, "patch", &a, &b, &bias, &d, attr, 0, NULL, NULL, NULL, err);
    dnnl_primitive_attr_destroy(attr);
    if (st != VS_OK) goto fail;

    /* encoder Linears (int8 on the own GEMM: none) */
    if (c->own_q8) {
        struct mm *lin[4] = {&p->qkv, &p->oproj, &p->fc1, &p->fc2};
        for (int i = 0; i < 4; i++) snprintf(lin[i]->impl, sizeof lin[i]->impl, "own u8s8 4x16");
        goto attention;
    }
    if ((st = linear_create(c, &p->qkv, "qkv", M, D, D, D, false, false, err)) != VS_OK ||
        (st = linear_create(c, &p->oproj, "o_proj", M, D, D, D, false, true, err)) != VS_OK ||
        (st = linear_create(c, &p->fc1, "fc1", M, D, F, F, true, false, err)) != VS_OK ||
        (st = linear_create(c, &p->fc2, "fc2", M, F, D, D, false, true, err)) != VS_OK)
        goto fail;
    if (c->prec == VS_PRECISION_INT8 && !c->q8_md_set) {
        c->q8_md_set = true;
        if ((st = q8_relayout(c, err)) != VS_OK) goto fail;
    }

attention:
    if (c->own_attn) goto head;
    /* scores, one image: Q (1,H,T,dh) = Q[t, h*dh + e] -> strides (TD, dh, D, 1);
     * K^T (1,H,dh,T) = K[t, h*dh + e] -> strides (TD, dh, 1, D); S dense. */
    st = make_attr(&attr, false, dnnl_eltwise_relu, 0, false,
                   (float)(1.0 / sqrt((double)dh)), err);
    if (st != VS_OK) goto fail;
    {
        const int64_t qd[4] = {1, H, T, dh}, qs[4] = {D * T, dh, D, 1};
        const int64_t kd[4] = {1, H, dh, T}, ks[4] = {D * T, dh, 1, D};
        const int64_t sd[4] = {1, H, T, T}, ss[4] = {H * T * T, T * T, T, 1};
        md_nd(&a, 4, qd, qs);
        md_nd(&b, 4, kd, ks);
        md_nd(&d, 4, sd, ss);
    }
    st = mm_create(c, &p->score, "scores", &a, &b, NULL, &d, attr, 0, NULL, NULL, NULL, err);
    dnnl_primitive_attr_destroy(attr);
    if (st != VS_OK) goto fail;

    /* context, one image: S (1,H,T,T) x V (1,H,T,dh) (strides (TD, dh, D, 1))
     * -> out (1,H,T,dh) stored as (T,H,dh) = (T, D): strides (TD, dh, D, 1). */
    {
        const int64_t sd[4] = {1, H, T, T}, ss[4] = {H * T * T, T * T, T, 1};
        const int64_t vd[4] = {1, H, T, dh}, vs[4] = {D * T, dh, D, 1};
        const int64_t od[4] = {1, H, T, dh}, os[4] = {T * D, dh, D, 1};
        md_nd(&a, 4, sd, ss);
        md_nd(&b, 4, vd, vs);
        md_nd(&d, 4, od, os);
    }
    st = mm_create(c, &p->pv, "attn_v", &a, &b, NULL, &d, NULL, 0, NULL, NULL, NULL, err);
    if (st != VS_OK) goto fail;

head:
    /* head: c (n, D) x head_w^T (D, L) + b */
    md_rows(&a, n, D, D, dnnl_f32);
    md_linear_w(&b, D, L, dnnl_f32);
    md_rows(&bias, 1, L, L, dnnl_f32);
    md_rows(&d, n, L, L, dnnl_f32);
    st = mm_create(c, &p->head, "classifier", &a, &b, &bias, &d, NULL, 0, NULL, NULL, NULL, err);
    if (st != VS_OK) goto fail;

    if (c->prec == VS_PRECISION_INT8) {
        /* the activation of fc1 as its own pass over f (M, F), in place */
        dnnl_alg_kind_t alg;
        float alpha;
        if (act_alg(g->act, &alg, &alpha) != VS_OK) {
            st = vs_err_set(err, VS_UNSUPPORTED, "cpu backend: activation %d unknown",
                            (int)g->act);
            goto fail;
        }
        md_rows(&a, M, F, F, dnnl_f32);
        dnnl_eltwise_desc_t ed;
        dnnl_primitive_desc_t pd = NULL;
        dnnl_status_t s = dnnl_eltwise_forward_desc_init(&ed, dnnl_forward_inference, alg,
                                                         &a, alpha, 0.0f);
        if (s == dnnl_success) s = dnnl_primitive_desc_create(&pd, &ed, NULL, c->eng, NULL);
        if (s == dnnl_success) {
            s = dnnl_primitive_create(&p->act.prim, pd);
            dnnl_primitive_desc_destroy(pd);
        }
        for (int i = 0; s == dnnl_success && i < 2; i++) {
            p->act.args[i].arg = i == 0 ? DNNL_ARG_SRC : DNNL_ARG_DST;
            s = dnnl_memory_create(&p->act.args[i].memory, &a, c->eng, DNNL_MEMORY_NONE);
            if (s == dnnl_success) p->act.nargs = i + 1;
        }
        if (s != dnnl_success) {
            st = dnnl_fail(err, s, "eltwise (activation) creation");
            goto fail;
        }
    }

    snprintf(c->st.impl, sizeof c->st.impl,
             "patch=%s qkv=%s scores=%s attn_v=%s o=%s fc1=%s fc2=%s head=%s",
             p->patch.impl, p->qkv.impl, c->own_attn ? "own avx2 6x16" : p->score.impl,
             c->own_attn ? "own avx2 6x16" : p->pv.impl, p->oproj.impl, p->fc1.impl,
             p->fc2.impl, p->head.impl);
    p->ready = true;
    return VS_OK;
fail:
    plan_destroy(p);
    return st;
}

/* ---- int8 weights ----------------------------------------------------- */

/* w (rows, cols) fp32 -> q (rows, cols) s8 and scale (rows); symmetric,
 * scale = max|row| / qmax so that q = round(w / scale) spans [-qmax, qmax]. */
static void quantize_weight(const struct vs_cpu_kernels *k, const float *w,
                            int rows, int cols, int qmax, struct q8 *out)
{
    #pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        int8_t *qr = out->q + (size_t)r * cols;
        out->scale[r] = k->quantize_row(qr, w + (size_t)r * cols, cols, qmax);
        int64_t sum = 0;
        for (int i = 0; i < cols; i++) sum += qr[i];
        out->cs[r] = out->scale[r] * (float)sum;
    }
}

static enum vs_status q8_build(struct cpu_ctx *c, size_t *bytes, struct vs_err *err)
{
    const struct vs_vit_config *g = &c->cfg;
    const size_t D = (size_t)g->hidden, F = (size_t)g->mlp, L = (size_t)g->layers;
    const size_t per_layer = 4 * D * D + 2 * D * F;       /* s8 weights */
    const size_t per_layer_s = 2 * (4 * D + F + D);       /* scales, cs */
    size_t qbytes, sbytes;
    if (!vs_mul_size(per_layer, L, &qbytes) || !vs_mul_size(per_layer_s, L, &sbytes))
        return vs_err_set(err, VS_TOO_LARGE, "cpu backend: int8 weights size overflows");
    c->q8 = calloc(L, sizeof *c->q8);
    c->q8_mem = alloc_floats(qbytes, 1, bytes);
    c->q8_scales = alloc_floats(sbytes, sizeof(float), bytes);
    if (!c->q8 || !c->q8_mem || !c->q8_scales)
        return vs_err_set(err, VS_NOMEM, "cpu backend: cannot allocate %zu bytes of int8 weights",
                          qbytes + sbytes * sizeof(float));
    int8_t *q = c->q8_mem;
    float *s = c->q8_scales;
    const int qm = c->wqmax;
    for (size_t l = 0; l < L; l++) {
        const struct vs_vit_layer *ly = &c->w.layer[l];
        struct q8_layer *o = &c->q8[l];
        struct q8 *dst[6] = {&o->q, &o->k, &o->v, &o->o, &o->fc1, &o->fc2};
        const float *src[6] = {ly->q_w, ly->k_w, ly->v_w, ly->o_w, ly->fc1_w, ly->fc2_w};
        for (int i = 0; i < 6; i++) {
            int64_t cols, rows;   /* the weight is (N, K) = (rows, cols) */
            linear_shape(g, i, &cols, &rows);
            dst[i]->q = q;
            dst[i]->scale = s;
            dst[i]->cs = s + rows;
            quantize_weight(c->k, src[i], (int)rows, (int)cols, qm, dst[i]);
            /* the int8 copy replaces the fp32 weight: its mapped pages
             * need not stay resident */
            release_mapped(c, src[i], (size_t)(rows * cols));
            q += rows * cols;
            s += 2 * rows;
        }
    }
    return VS_OK;
}

/* int8 on the own GEMM: every quantized weight into the kernel's packed
 * layout (one buffer, the same size for ViT's shapes), the plain copy
 * freed. */
static enum vs_status q8_pack_own(struct cpu_ctx *c, size_t *bytes, struct vs_err *err)
{
    const struct vs_vit_config *g = &c->cfg;
    size_t per_layer = 0, total;
    for (int j = 0; j < 6; j++) {
        int64_t K, N;
        linear_shape(g, j, &K, &N);
        per_layer += (vs_model_cpu_igemm_packed_bytes(N, K) + 63) / 64 * 64;
    }
    if (!vs_mul_size(per_layer, (size_t)g->layers, &total))
        return vs_err_set(err, VS_TOO_LARGE, "cpu backend: int8 weights size overflows");
    c->q8_packed = alloc_floats(total, 1, bytes);
    if (!c->q8_packed)
        return vs_err_set(err, VS_NOMEM, "cpu backend: cannot allocate %zu bytes for the "
                          "packed int8 weights", total);
    int8_t *dst = c->q8_packed;
    for (int l = 0; l < g->layers; l++) {
        struct q8_layer *o = &c->q8[l];
        struct q8 *w[6] = {&o->q, &o->k, &o->v, &o->o, &o->fc1, &o->fc2};
        for (int j = 0; j < 6; j++) {
            int64_t K, N;
            linear_shape(g, j, &K, &N);
            c->k->igemm_pack(w[j]->q, K, N, K, dst);
            w[j]->q = dst;
            dst += (vs_model_cpu_igemm_packed_bytes(N, K) + 63) / 64 * 64;
        }
    }
    free(c->q8_mem);
    c->q8_mem = NULL;
    return VS_OK;
}

/* ---- create / destroy ------------------------------------------------- */

static void cpu_destroy(void *vctx)
{
    struct cpu_ctx *c = vctx;
    if (!c) return;
    plan_destroy(&c->plan);
    if (c->strm) dnnl_stream_destroy(c->strm);
    if (c->eng) dnnl_engine_destroy(c->eng);
    free(c->x);
    free(c->xn);
    free(c->qkv);
    free(c->S);
    free(c->f);
    free(c->col);
    free(c->c);
    free(c->zeros);
    free(c->aq);
    free(c->as);
    free(c->azp);
    free(c->acc);
    free(c->gemm_ws);
    wpk_join(c, true);
    free(c->wpk);
    free(c->wpk_mem);
    free(c->q8);
    free(c->q8_mem);
    free(c->q8_blocked);
    free(c->q8_packed);
    free(c->q8_scales);
    free(c);
}

static const char *isa_name(dnnl_cpu_isa_t isa)
{
    switch (isa) {
    case dnnl_cpu_isa_sse41: return "sse41";
    case dnnl_cpu_isa_avx: return "avx";
    case dnnl_cpu_isa_avx2: return "avx2";
    case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
    case dnnl_cpu_isa_avx512_core: return "avx512_core";
    case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
    default: return "other";
    }
}

static void read_cpu_name(char *out, size_t size)
{
    snprintf(out, size, "CPU");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[256];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) == 0) {
            const char *v = strchr(line, ':');
            if (v) {
                v++;
                while (*v == ' ' || *v == '\t') v++;
                size_t len = strcspn(v, "\n");
                snprintf(out, size, "%.*s", (int)len, v);
            }
            break;
        }
    }
    fclose(f);
}

static enum vs_status check_config(const struct vs_vit_config *g, struct vs_err *err)
{
    if (g->channels < 1 || g->patch < 1 || g->grid_h < 1 || g->grid_w < 1 ||
        g->hidden < 1 || g->heads < 1 || g->mlp < 1 || g->layers < 0 ||
        g->labels < 1 || !(g->ln_eps >= 0.0f))   /* eps 0 is valid, as in torch */
        return vs_err_set(err, VS_BAD_INPUT, "cpu backend: config has a non-positive size "
                          "or a negative eps (channels %d patch %d grid %dx%d hidden %d "
                          "heads %d mlp %d layers %d labels %d eps %g)", g->channels, g->patch,
                          g->grid_h, g->grid_w, g->hidden, g->heads, g->mlp,
                          g->layers, g->labels, (double)g->ln_eps);
    if (g->hidden % g->heads != 0)
        return vs_err_set(err, VS_BAD_INPUT, "cpu backend: hidden %d not divisible by heads %d",
                          g->hidden, g->heads);
    if (g->tokens != g->grid_h * g->grid_w + 1 || g->image_h != g->grid_h * g->patch ||
        g->image_w != g->grid_w * g->patch)
        return vs_err_set(err, VS_BAD_INPUT, "cpu backend: inconsistent geometry (image %dx%d, "
                          "patch %d, grid %dx%d, tokens %d)", g->image_h, g->image_w,
                          g->patch, g->grid_h, g->grid_w, g->tokens);
    return VS_OK;
}

static enum vs_status cpu_create(const struct vs_vit_config *cfg,
                                 const struct vs_vit_weights *w,
                                 const struct vs_backend_opts *opts,
                                 void **out, struct vs_err *err)
{
    enum vs_status st = check_config(cfg, err);
    if (st != VS_OK) return st;
    if (opts->precision != VS_PRECISION_FP32 && opts->precision != VS_PRECISION_INT8)
        return vs_err_set(err, VS_UNSUPPORTED, "cpu backend: precision %s is not supported "
                          "on the CPU (use fp32, or int8 for the quantized path)",
                          opts->precision == VS_PRECISION_FP16 ? "fp16" :
                          opts->precision == VS_PRECISION_BF16 ? "bf16" : "(unknown)");
    if (opts->max_batch < 1 || opts->max_batch > 4096)
        return vs_err_set(err, VS_BAD_INPUT, "cpu backend: max_batch %d out of range 1..4096",
                          opts->max_batch);
    if (opts->threads < 0)
        return vs_err_set(err, VS_BAD_INPUT, "cpu backend: threads %d < 0", opts->threads);

    struct cpu_ctx *c = calloc(1, sizeof *c);
    if (!c) return vs_err_set(err, VS_NOMEM, "cpu backend: out of memory");
    c->cfg = *cfg;
    c->w = *w;
    c->prec = opts->precision;
    c->max_batch = opts->max_batch;
    c->threads = opts->threads > 0 ? opts->threads : omp_get_num_procs();
    c->k = vs_model_cpu_kernels();

    dnnl_status_t ds = dnnl_engine_create(&c->eng, dnnl_cpu, 0);
    if (ds == dnnl_success) ds = dnnl_stream_create(&c->strm, c->eng, dnnl_stream_default_flags);
    if (ds != dnnl_success) {
        st = dnnl_fail(err, ds, "engine/stream creation");
        cpu_destroy(c);
        return st;
    }
    const dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
    const bool vnni = isa == dnnl_cpu_isa_avx2_vnni || isa == dnnl_cpu_isa_avx512_core_vnni ||
                      isa == dnnl_cpu_isa_avx512_core_bf16 || isa == dnnl_cpu_isa_avx512_core_amx;
    c->wqmax = vnni ? 127 : 63;
    /* int8 Linears: our own AVX2 u8 x s8 GEMM where oneDNN's best is plain
     * AVX2 (no VNNI: there it beats oneDNN 2.6's avx2 igemm,
     * docs/forward.md; AVX-512 machines without VNNI keep oneDNN's kernels,
     * twice as wide).  VS_CPU_IGEMM=onednn or =own overrides (measurements;
     * =own still needs wqmax 63, i.e. no VNNI) */
    {
        const char *e = getenv("VS_CPU_IGEMM");
        const bool want = e && strcmp(e, "own") == 0 ? true :
                          e && strcmp(e, "onednn") == 0 ? false : isa == dnnl_cpu_isa_avx2;
        c->own_q8 = want && c->prec == VS_PRECISION_INT8 && c->k->igemm && c->wqmax == 63 &&
                    cfg->hidden % 4 == 0 && cfg->mlp % 4 == 0;
    }

    /* scratch for one image (nb = 1): the pass runs image by image */
    const size_t nb = 1, T = (size_t)cfg->tokens, D = (size_t)cfg->hidden;
    const size_t H = (size_t)cfg->heads, F = (size_t)cfg->mlp;
    const size_t G = (size_t)cfg->grid_h * cfg->grid_w;
    const size_t K0 = (size_t)cfg->channels * cfg->patch * cfg->patch;
    const size_t M = nb * T, Z = VS_MAX(VS_MAX(D, F), (size_t)cfg->labels);
    size_t bytes = 0, tt;
    /* S: one image's (H, T, T) for oneDNN, or a (T, T) slice per thread
     * for the own GEMM's attention (attn_own) */
    bool ok = vs_mul_size(T, T, &tt) && vs_mul_size(tt, VS_MAX(H, (size_t)c->threads), &tt);
    if (ok) {
        c->x = alloc_floats(M * D, sizeof(float), &bytes);
        c->xn = alloc_floats(M * D, sizeof(float), &bytes);
        c->qkv = alloc_floats(M * 3 * D, sizeof(float), &bytes);
        c->S = alloc_floats(tt, sizeof(float), &bytes);
        c->f = alloc_floats(M * F, sizeof(float), &bytes);
        c->col = alloc_floats(nb * G * K0, sizeof(float), &bytes);
        c->c = alloc_floats(nb * D, sizeof(float), &bytes);
        c->zeros = calloc(Z, sizeof(float));
        if (c->prec == VS_PRECISION_INT8) {
            c->aq = alloc_floats(M * VS_MAX(D, F), 1, &bytes);
            c->as = alloc_floats(M, sizeof(float), &bytes);
            c->azp = alloc_floats(M, sizeof(float), &bytes);
            c->acc = alloc_floats(M * D, sizeof(float), &bytes);
        }
    }
    /* our own GEMM for fp32 where oneDNN's best is AVX2 (there it matches
     * or beats oneDNN 2.6's gemm:jit, see docs/forward.md); on AVX-512
     * machines oneDNN stays the default (its kernels beat our AVX2 one
     * there; our 12x32 AVX-512 kernel is not measured against it yet).
     * VS_CPU_GEMM=onednn or =own overrides (side-by-side measurements,
     * tests); =own-avx2 is =own with the AVX2 kernel on an AVX-512 CPU. */
    {
        const char *e = getenv("VS_CPU_GEMM");
        const dnnl_cpu_isa_t ci = dnnl_get_effective_cpu_isa();
        const bool force_avx2 = e && strcmp(e, "own-avx2") == 0;
        if (force_avx2 && vs_model_cpu_kernels_avx2()) c->k = vs_model_cpu_kernels_avx2();
        const bool want = e && (strcmp(e, "own") == 0 || force_avx2) ? true :
                          e && strcmp(e, "onednn") == 0 ? false :
                          ci == dnnl_cpu_isa_avx2 || ci == dnnl_cpu_isa_avx2_vnni;
        c->own_gemm = want && c->prec == VS_PRECISION_FP32 && c->k->sgemm &&
                      own_act(cfg->act, &c->own_act, &c->own_alpha) == VS_OK;
        const char *ea = getenv("VS_CPU_ATTN");   /* onednn: for measurements */
        c->own_attn = want && c->k->sgemm && !(ea && strcmp(ea, "onednn") == 0);
        if (ok && (c->own_gemm || c->own_attn))
            c->gemm_ws = alloc_floats((size_t)c->threads * vs_model_cpu_gemm_ws_floats(),
                                      sizeof(float), &bytes);
    }
    if (!ok || !c->x || !c->xn || !c->qkv || !c->S || !c->f || !c->col || !c->c ||
        !c->zeros || ((c->own_gemm || c->own_attn) && !c->gemm_ws) ||
        (c->prec == VS_PRECISION_INT8 && (!c->aq || !c->as || !c->azp || !c->acc))) {
        cpu_destroy(c);
        return vs_err_set(err, VS_NOMEM, "cpu backend: cannot allocate the forward pass's "
                          "scratch (%zu bytes reserved so far)", bytes);
    }
    if (c->prec == VS_PRECISION_INT8) {
        omp_set_num_threads(c->threads);
        st = q8_build(c, &bytes, err);
        if (st == VS_OK && c->own_q8) st = q8_pack_own(c, &bytes, err);
        /* the first plan fixes the int8 weight layouts and reorders them:
         * do it now rather than on the first request */
        if (st == VS_OK) st = plan_build(c, err);
        if (st != VS_OK) {
            cpu_destroy(c);
            return st;
        }
    }
    char cpu[128];
    read_cpu_name(cpu, sizeof cpu);
    const char *own = c->own_q8 ? ", own int8 GEMM" : !c->own_gemm ? "" :
                      strcmp(c->k->gemm_isa, "avx512") == 0 ? ", own AVX-512 GEMM" :
                      ", own AVX2 GEMM";
    snprintf(c->device, sizeof c->device, "%s (oneDNN %s%s, %d threads)", cpu,
             isa_name(isa), own, c->threads);
    c->st.threads = c->threads;
    c->st.kernels = c->k->isa;
    c->st.dnnl_isa = isa_name(isa);
    c->st.weight_qmax = c->prec == VS_PRECISION_INT8 ? c->wqmax : 0;
    /* packed weight copies for the own GEMM, built in the background
     * (opts->prepack; VS_CPU_PREPACK=0/1 overrides for measurements) */
    const char *pp = getenv("VS_CPU_PREPACK");
    const bool prepack = pp && *pp ? strcmp(pp, "0") != 0 : opts->prepack;
    if (prepack && c->own_gemm && c->k->sgemm_pack) {
        if (!wpk_start(c)) {
            cpu_destroy(c);
            return vs_err_set(err, VS_NOMEM, "cpu backend: cannot reserve the packed weight "
                              "copies (VS_CPU_PREPACK=0 runs without them)");
        }
    }
    *out = c;
    return VS_OK;
}

static void cpu_settle(void *ctx)
{
    wpk_join(ctx, false);
}

static const char *cpu_device_name(void *ctx)
{
    return ((struct cpu_ctx *)ctx)->device;
}

void vs_model_cpu_stats(void *ctx, struct vs_cpu_stats *out, bool reset)
{
    struct cpu_ctx *c = ctx;
    *out = c->st;
    if (reset) {
        c->st.forwards = c->st.images = 0;
        c->st.total_ns = c->st.gemm_ns = c->st.plan_ns = c->st.attn_ns = 0;
    }
}

/* ---- forward ---------------------------------------------------------- */

/* y rows = LayerNorm(x rows); rows of length dim, row stride ld. */
static void ln_rows(const struct cpu_ctx *c, float *y, const float *x, int64_t rows,
                    int64_t ld, const float *g, const float *b)
{
    const int dim = c->cfg.hidden;
    const float eps = c->cfg.ln_eps;
    void (*ln)(float *, const float *, const float *, const float *, int, float) =
        c->k->layernorm;
    #pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) ln(y + r * dim, x + r * ld, g, b, dim, eps);
}

/* int8: quantize rows of x (rows, dim) into c->aq; scales and zero points
 * into c->as, c->azp. */
static void quant_rows(const struct cpu_ctx *c, const float *x, int64_t rows, int dim)
{
    float (*q)(uint8_t *, const float *, int, int *) = c->k->quantize_u8;
    uint8_t *aq = c->aq;
    float *as = c->as, *azp = c->azp;
    #pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        int zp;
        as[r] = q(aq + r * dim, x + r * dim, dim, &zp);
        azp[r] = (float)zp;
    }
}

/* int8: y rows (ld ldy) = or += dequantized acc rows (ld lda), N columns. */
static void dequant_rows(const struct cpu_ctx *c, float *y, int64_t ldy, const float *acc,
                         int64_t lda, int64_t rows, int N, const struct q8 *wq,
                         const float *b, int accumulate)
{
    void (*dq)(float *, const float *, float, float, const float *, const float *,
               const float *, int, int) = c->k->dequant_row;
    const float *as = c->as, *azp = c->azp, *sw = wq->scale, *cs = wq->cs;
    #pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++)
        dq(y + r * ldy, acc + r * lda, as[r], azp[r], sw, cs, b, N, accumulate);
}

/* int8: the GEMM of the quantized activations c->aq (rows, K) by the
 * quantized weight wq (N, K) into out (rows, N) as floats: exact s32 sums
 * on the own GEMM or on oneDNN (the same bits). */
static enum vs_status q8_run(struct cpu_ctx *c, struct mm *mm, const struct q8 *wq, float *out,
                             int64_t rows, int K, int N, struct vs_err *err)
{
    if (c->own_q8) {
        const struct vs_cpu_igemm ig = {.M = rows, .N = N, .K = K, .A = c->aq, .lda = K,
                                        .Wp = wq->q, .C = out, .ldc = N};
        c->k->igemm(&ig, c->threads);
        return VS_OK;
    }
    void *p[3] = {c->aq, wq->q, out};
    return mm_run(c, mm, p, err);
}

/* One encoder Linear (rows, K) -> (rows, N): fp32 (src used in place,
 * bias/act/residual fused) or int8 (src quantized, then dequantized into
 * dst, added to it when accumulate). */
static enum vs_status linear_run(struct cpu_ctx *c, struct mm *mm, const float *src,
                                 int64_t rows, int K, int N, const float *w,
                                 const struct wpack *pk, const struct q8 *wq, const float *b,
                                 float *dst, int accumulate, struct vs_err *err)
{
    if (c->prec == VS_PRECISION_INT8) {
        quant_rows(c, src, rows, K);
        float *out = accumulate ? c->acc : dst;
        enum vs_status st = q8_run(c, mm, wq, out, rows, K, N, err);
        if (st == VS_OK)
            dequant_rows(c, dst, N, out, N, rows, N, wq, bias_or_zeros(c, b), accumulate);
        return st;
    }
    if (c->own_gemm) {
        /* fc1 is the only non-accumulating Linear that reaches here */
        own_run(c, rows, N, K, src, K, w, pk, b, dst, N, !accumulate, accumulate);
        return VS_OK;
    }
    void *p[4] = {(void *)src, (void *)w, (void *)bias_or_zeros(c, b), dst};
    return mm_run(c, mm, p, err);
}

/* Attention of n images on the own GEMM, head by head: for image b, head h
 * (columns h*dh.. of Q, K, V, rows T apart per image),
 *   S = Q_h K_h^T (T, T), S = softmax(S / sqrt(dh)) row by row,
 *   out[:, h*dh..] = S V_h (V read in place as the (K, N) operand).
 * Heads are spread over the threads, each head on one thread with
 * its own (T, T) slice of S: 2 x 2.5 MFLOP per head for ViT-B is too small
 * to split further (a parallel region per GEMM cost more than it saved).
 * Every element is the same float operations whatever the thread count. */
static void attn_own(struct cpu_ctx *c, const float *qkv, float *out, int n)
{
    const struct vs_vit_config *g = &c->cfg;
    const int64_t T = g->tokens, D = g->hidden, H = g->heads, dh = D / H, M = n * T;
    const float scale = (float)(1.0 / sqrt((double)dh));
    const int nt = c->threads < n * H ? c->threads : (int)(n * H);
    void (*sm)(float *, int, float) = c->k->softmax;
    const size_t wsf = vs_model_cpu_gemm_ws_floats();
    #pragma omp parallel for schedule(dynamic, 1) num_threads(nt) if (nt > 1)
    for (int64_t bh = 0; bh < n * H; bh++) {
        const int tid = nt > 1 ? omp_get_thread_num() : 0;
        const int64_t b = bh / H, h = bh % H;
        const float *q = qkv + b * T * D + h * dh, *k = q + M * D, *v = k + M * D;
        float *S = c->S + (size_t)tid * T * T;
        float *ws = c->gemm_ws + (size_t)tid * wsf;
        const struct vs_cpu_gemm score = {
            .M = T, .N = T, .K = dh, .A = q, .lda = D, .W = k, .ldw = D, .C = S, .ldc = T,
        };
        c->k->sgemm(&score, ws, 1);
        for (int64_t r = 0; r < T; r++) sm(S + r * T, (int)T, scale);
        const struct vs_cpu_gemm ctx = {
            .M = T, .N = dh, .K = T, .A = S, .lda = T, .W = v, .ldw = D, .w_kn = 1,
            .C = out + b * T * D + h * dh, .ldc = D,
        };
        c->k->sgemm(&ctx, ws, 1);
    }
}

/* The same on oneDNN's plan (p->score, p->pv), image by image: S (H, T, T)
 * of one image stays in cache between its two GEMMs and the softmax. */
static enum vs_status attn_onednn(struct cpu_ctx *c, struct plan *p, float *qkv, float *out,
                                  int n, struct vs_err *err)
{
    const struct vs_vit_config *g = &c->cfg;
    const int64_t T = g->tokens, D = g->hidden, H = g->heads, M = n * T;
    float *S = c->S;
    enum vs_status st;
    for (int b = 0; b < n; b++) {
        float *qb = qkv + (size_t)b * T * D, *kb = qb + M * D, *vb = kb + M * D;
        /* S = Q K^T / sqrt(dh)  (H, T, T) */
        void *ps[3] = {qb, kb, S};
        if ((st = mm_run(c, &p->score, ps, err)) != VS_OK) return st;
        /* softmax over keys, one row per (h, query) */
        void (*sm)(float *, int, float) = c->k->softmax;
        const int64_t rows = H * T;
        #pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < rows; r++) sm(S + r * T, (int)T, 1.0f);
        /* out_b = S V  -> (T, H, dh) = (T, D), heads concatenated */
        void *pv[3] = {S, vb, out + (size_t)b * T * D};
        if ((st = mm_run(c, &p->pv, pv, err)) != VS_OK) return st;
    }
    return VS_OK;
}

/* One image: pixels (C, H, W) -> logits (labels). */
static enum vs_status forward_one(struct cpu_ctx *c, const float *pixels, float *logits,
                                  struct vs_err *err)
{
    const struct vs_vit_config *g = &c->cfg;
    if (!pixels || !logits)
        return vs_err_set(err, VS_BAD_INPUT, "cpu backend: NULL pixels or logits");
    const int n = 1;   /* the shapes below are written for n images */
    const uint64_t t_start = vs_now_ns();
    omp_set_num_threads(c->threads);
    struct plan *p = &c->plan;
    enum vs_status st;
    if (!p->ready) {
        const uint64_t t0 = vs_now_ns();
        st = plan_build(c, err);
        c->st.plan_ns += vs_now_ns() - t0;
        if (st != VS_OK) return st;
    }

    const int C = g->channels, P = g->patch, Hh = g->image_h, Ww = g->image_w;
    const int gh = g->grid_h, gw = g->grid_w;
    const int64_t T = g->tokens, D = g->hidden, F = g->mlp;
    const int64_t G = (int64_t)gh * gw, K0 = (int64_t)C * P * P, M = n * T;

    /* im2col: col[b][gy*gw+gx][(ch*P + ky)*P + kx] = pix[b][ch][gy*P+ky][gx*P+kx],
     * the flattening order of the conv weight (D, C, P, P). */
    float *col = c->col;
    #pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < n; b++)
        for (int gy = 0; gy < gh; gy++) {
            const float *img = pixels + (size_t)b * C * Hh * Ww;
            for (int gx = 0; gx < gw; gx++) {
                float *row = col + ((size_t)b * G + (size_t)gy * gw + gx) * K0;
                for (int ch = 0; ch < C; ch++)
                    for (int ky = 0; ky < P; ky++)
                        memcpy(row + ((size_t)ch * P + ky) * P,
                               img + ((size_t)ch * Hh + (size_t)gy * P + ky) * Ww +
                                   (size_t)gx * P,
                               (size_t)P * sizeof(float));
            }
        }

    /* x[b][0] = cls + pos[0]; x[b][t] = pos[t]: the patch GEMM then adds
     * conv + bias on top (sum post-op), i.e. x = cat(cls, conv+b) + pos. */
    float *x = c->x;
    for (int b = 0; b < n; b++) {
        float *xb = x + (size_t)b * T * D;
        memcpy(xb, c->w.pos, (size_t)T * D * sizeof(float));
        for (int64_t d = 0; d < D; d++) xb[d] = c->w.cls[d] + c->w.pos[d];
    }
    if (c->own_gemm) {
        /* x[b][1:] (G, D), row stride D, += col_b (G, K0) patch_w^T + b */
        for (int b = 0; b < n; b++)
            own_run(c, G, D, K0, col + (size_t)b * G * K0, K0, c->w.patch_w, wpk_of(c, -1, 0),
                    c->w.patch_b, x + (size_t)b * T * D + D, D, false, true);
    } else {
        void *pp[4] = {col, (void *)c->w.patch_w, (void *)bias_or_zeros(c, c->w.patch_b),
                       x + D};
        if ((st = mm_run(c, &p->patch, pp, err)) != VS_OK) return st;
    }

    float *xn = c->xn, *qkv = c->qkv, *f = c->f;
    const bool int8 = c->prec == VS_PRECISION_INT8;
    for (int l = 0; l < g->layers; l++) {
        const struct vs_vit_layer *ly = &c->w.layer[l];
        const struct q8_layer *lq = int8 ? &c->q8[l] : NULL;

        /* xn = LN1(x)  (M, D) */
        ln_rows(c, xn, x, M, D, ly->ln1_g, ly->ln1_b);
        /* Q = qkv[0], K = qkv[1], V = qkv[2], each (M, D) */
        if (int8) quant_rows(c, xn, M, (int)D);
        const float *ws[3] = {ly->q_w, ly->k_w, ly->v_w};
        const float *bs[3] = {ly->q_b, ly->k_b, ly->v_b};
        for (int j = 0; j < 3; j++) {
            if (int8) {
                const struct q8 *wq = j == 0 ? &lq->q : (j == 1 ? &lq->k : &lq->v);
                st = q8_run(c, &p->qkv, wq, qkv + j * M * D, M, (int)D, (int)D, err);
                if (st == VS_OK)
                    dequant_rows(c, qkv + j * M * D, D, qkv + j * M * D, D, M, (int)D, wq,
                                 bias_or_zeros(c, bs[j]), 0);
            } else if (c->own_gemm) {
                own_run(c, M, D, D, xn, D, ws[j], wpk_of(c, l, j), bs[j], qkv + j * M * D, D,
                        false, false);
                st = VS_OK;
            } else {
                void *pp[4] = {xn, (void *)ws[j], (void *)bias_or_zeros(c, bs[j]),
                               qkv + j * M * D};
                st = mm_run(c, &p->qkv, pp, err);
            }
            if (st != VS_OK) return st;
        }
        /* attention (attn_own, or attn_onednn) */
        const uint64_t t_attn = vs_now_ns();
        if (c->own_attn) attn_own(c, qkv, xn, n);
        else if ((st = attn_onednn(c, p, qkv, xn, n, err)) != VS_OK) return st;
        c->st.attn_ns += vs_now_ns() - t_attn;
        /* x += xn o_w^T + o_b */
        if ((st = linear_run(c, &p->oproj, xn, M, (int)D, (int)D, ly->o_w, wpk_of(c, l, 3),
                             lq ? &lq->o : NULL, ly->o_b, x, 1, err)) != VS_OK)
            return st;
        /* xn = LN2(x); f = act(xn fc1^T + b)  (M, F) */
        ln_rows(c, xn, x, M, D, ly->ln2_g, ly->ln2_b);
        if ((st = linear_run(c, &p->fc1, xn, M, (int)D, (int)F, ly->fc1_w, wpk_of(c, l, 4),
                             lq ? &lq->fc1 : NULL, ly->fc1_b, f, 0, err)) != VS_OK)
            return st;
        if (int8) {
            /* the activation, which fp32 fuses into the GEMM */
            dnnl_memory_set_data_handle(p->act.args[0].memory, f);
            dnnl_memory_set_data_handle(p->act.args[1].memory, f);
            dnnl_status_t s = dnnl_primitive_execute(p->act.prim, c->strm, 2, p->act.args);
            if (s != dnnl_success) return dnnl_fail(err, s, "eltwise execution");
        }
        /* x += f fc2^T + b */
        if ((st = linear_run(c, &p->fc2, f, M, (int)F, (int)D, ly->fc2_w, wpk_of(c, l, 5),
                             lq ? &lq->fc2 : NULL, ly->fc2_b, x, 1, err)) != VS_OK)
            return st;
    }

    /* final LayerNorm on token 0 of each image (row stride T*D), classifier */
    ln_rows(c, c->c, x, n, T * D, c->w.lnf_g, c->w.lnf_b);
    if (c->own_gemm) {
        own_run(c, n, g->labels, D, c->c, D, c->w.head_w, NULL, c->w.head_b, logits,
                g->labels, false, false);
    } else {
        void *pp[4] = {c->c, (void *)c->w.head_w, (void *)bias_or_zeros(c, c->w.head_b),
                       logits};
        if ((st = mm_run(c, &p->head, pp, err)) != VS_OK) return st;
        dnnl_stream_wait(c->strm);
    }
    c->st.forwards++;
    c->st.images += (uint64_t)n;
    c->st.total_ns += vs_now_ns() - t_start;
    return VS_OK;
}

/* A batch runs image by image through the one-image plan.  Two reasons,
 * both measured: oneDNN picks its blocking from the row count, so the same
 * image gave logits differing by ~4e-6 depending on the batch it rode in
 * (batched results must equal one-image results, bit for bit); and at
 * M = T = 197 rows per GEMM the matmuls already run at full speed, so the
 * multi-image plans were no faster per image (0.80-0.94x of batch 1 on
 * the Xeon).  The rows of one image are still computed together.  (One
 * image per thread instead, each thread alone on its share of the scratch,
 * measured 0.95-1.05x of this on the 2-core EPYC with the own GEMM: not
 * worth its code.)
 * Image b is pixels + b * C*H*W (cpu_forward) or rows[b] (cpu_forward_rows:
 * the images stay where the caller has them, nothing is gathered). */
static enum vs_status run_images(struct cpu_ctx *c, const float *pixels,
                                 const float *const *rows, int n, float *logits,
                                 struct vs_err *err)
{
    if ((!pixels && !rows) || !logits)
        return vs_err_set(err, VS_BAD_INPUT, "cpu backend: NULL pixels or logits");
    if (n < 1 || n > c->max_batch)
        return vs_err_set(err, VS_BAD_INPUT, "cpu backend: batch %d outside 1..%d",
                          n, c->max_batch);
    const size_t per_image = (size_t)c->cfg.channels * c->cfg.image_h * c->cfg.image_w;
    for (int b = 0; b < n; b++) {
        enum vs_status st = forward_one(c, rows ? rows[b] : pixels + per_image * b,
                                        logits + (size_t)c->cfg.labels * b, err);
        if (st != VS_OK) return st;
    }
    return VS_OK;
}

static enum vs_status cpu_forward(void *vctx, const float *pixels, int n,
                                  float *logits, struct vs_err *err)
{
    return run_images(vctx, pixels, NULL, n, logits, err);
}

static enum vs_status cpu_forward_rows(void *vctx, const float *const *rows, int n,
                                       float *logits, struct vs_err *err)
{
    return run_images(vctx, NULL, rows, n, logits, err);
}

const struct vs_backend_ops vs_backend_cpu = {
    .name = "cpu",
    .create = cpu_create,
    .forward = cpu_forward,
    .forward_rows = cpu_forward_rows,
    .device_name = cpu_device_name,
    .destroy = cpu_destroy,
    .settle = cpu_settle,
};
