/* bench_cuda.c: vs-bench_cuda — times the CUDA backend alone (no loader, no
 * image decoding, no HTTP) on a random-weight ViT held in memory, so a GPU
 * run depends on nothing but src/model/backend_cuda.cu.
 *
 *   vs-bench_cuda [--preset base|tiny] [--precision fp32,fp16,bf16]
 *                 [--batch 1,8,32,128] [--iters N] [--warmup N]
 *                 [--chunk N] [--seconds S] [--json]
 *
 * forward() is synchronous (host pixels in, host logits out), so the wall
 * time around it is the engine's latency, uploads and downloads included.
 * Per precision and batch size it prints the median, min and p90 latency,
 * images/s at the median and the achieved TFLOP/s (2 FLOPs per MAC).
 * --chunk sets VS_CUDA_CHUNK (images per launch; default: the backend's).
 * Each measurement stops early after --seconds (default 20) so a slow
 * device cannot eat a short lease.  Exit 0 on success, 1 on an engine
 * error, 2 on bad usage, 77 when built without CUDA or without a device.
 * Single-threaded.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#include "common/vs.h"
#include "model/model.h"
#include "model/backend.h"

#ifndef VS_HAVE_CUDA
int main(void)
{
    fprintf(stderr, "vs-bench_cuda: built without CUDA\n");
    return 77;
}
#else

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* uniform in [center - a, center + a) */
static float *fill(float **cur, uint64_t *s, size_t count, float center, float a)
{
    float *p = *cur;
    for (size_t i = 0; i < count; i++)
        p[i] = center + a * (float)((rng_next(s) >> 40) * (2.0 / 16777216.0) - 1.0);
    *cur += count;
    return p;
}

/* All weights of cfg in one malloc'd block (*block, to free). */
static bool random_weights(const struct vs_vit_config *c, struct vs_vit_weights *w,
                           struct vs_vit_layer **layers, float **block)
{
    const size_t D = c->hidden, M = c->mlp, T = c->tokens, L = c->labels;
    const size_t K = (size_t)c->channels * c->patch * c->patch;
    size_t per_layer = 4 * D * D + 2 * D * M + 9 * D + M;
    size_t total = D * K + 2 * D + T * D + c->layers * per_layer + 2 * D + L * D + L;
    float *buf = malloc(total * sizeof(float)), *cur = buf;
    struct vs_vit_layer *ly = calloc((size_t)c->layers, sizeof *ly);
    if (!buf || !ly) { free(buf); free(ly); return false; }
    uint64_t s = 12345;
    float a = 1.7320508f;
    w->patch_w = fill(&cur, &s, D * K, 0, a / sqrtf((float)K));
    w->patch_b = fill(&cur, &s, D, 0, 0.1f);
    w->cls = fill(&cur, &s, D, 0, 0.5f);
    w->pos = fill(&cur, &s, T * D, 0, 0.2f);
    for (int l = 0; l < c->layers; l++) {
        struct vs_vit_layer *y = &ly[l];
        y->ln1_g = fill(&cur, &s, D, 1, 0.2f);  y->ln1_b = fill(&cur, &s, D, 0, 0.1f);
        y->q_w = fill(&cur, &s, D * D, 0, a / sqrtf((float)D)); y->q_b = fill(&cur, &s, D, 0, 0.1f);
        y->k_w = fill(&cur, &s, D * D, 0, a / sqrtf((float)D)); y->k_b = fill(&cur, &s, D, 0, 0.1f);
        y->v_w = fill(&cur, &s, D * D, 0, a / sqrtf((float)D)); y->v_b = fill(&cur, &s, D, 0, 0.1f);
        y->o_w = fill(&cur, &s, D * D, 0, a / sqrtf((float)D)); y->o_b = fill(&cur, &s, D, 0, 0.1f);
        y->ln2_g = fill(&cur, &s, D, 1, 0.2f);  y->ln2_b = fill(&cur, &s, D, 0, 0.1f);
        y->fc1_w = fill(&cur, &s, M * D, 0, a / sqrtf((float)D)); y->fc1_b = fill(&cur, &s, M, 0, 0.1f);
        y->fc2_w = fill(&cur, &s, D * M, 0, a / sqrtf((float)M)); y->fc2_b = fill(&cur, &s, D, 0, 0.1f);
    }
    w->lnf_g = fill(&cur, &s, D, 1, 0.2f);
    w->lnf_b = fill(&cur, &s, D, 0, 0.1f);
    w->head_w = fill(&cur, &s, L * D, 0, a / sqrtf((float)D));
    w->head_b = fill(&cur, &s, L, 0, 0.1f);
    w->layer = ly;
    *layers = ly;
    *block = buf;
    return true;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Parses "1,8,32" into v[]; returns the count or -1. */
static int parse_list(const char *s, int *v, int cap)
{
    int n = 0;
    while (*s) {
        char *end;
        long x = strtol(s, &end, 10);
        if (end == s || x < 1 || x > 4096 || n == cap) return -1;
        v[n++] = (int)x;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return -1;
    }
    return n;
}

static int usage(void)
{
    fputs("usage: vs-bench_cuda [--preset base|tiny] [--precision fp32,fp16,bf16] "
          "[--batch 1,8,32,128] [--iters N] [--warmup N] [--chunk N] [--seconds S] [--json]\n",
          stderr);
    return 2;
}

int main(int argc, char **argv)
{
    const char *preset = "base", *precs = "fp32,fp16,bf16";
    int batches[16] = { 1, 8, 32, 128 }, nb = 4, iters = 20, warmup = 3;
    double max_s = 20;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--json") == 0) { json = true; continue; }
        if (!v) return usage();
        i++;
        if (strcmp(a, "--preset") == 0) preset = v;
        else if (strcmp(a, "--precision") == 0) precs = v;
        else if (strcmp(a, "--batch") == 0) { if ((nb = parse_list(v, batches, 16)) < 1) return usage(); }
        else if (strcmp(a, "--iters") == 0) iters = atoi(v);
        else if (strcmp(a, "--warmup") == 0) warmup = atoi(v);
        else if (strcmp(a, "--seconds") == 0) max_s = atof(v);
        else if (strcmp(a, "--chunk") == 0) setenv("VS_CUDA_CHUNK", v, 1);
        else return usage();
    }
    if (iters < 1 || iters > 100000 || warmup < 0) return usage();

    struct vs_vit_config c;
    memset(&c, 0, sizeof c);
    if (strcmp(preset, "base") == 0) {         /* ViT-B/16, 224x224, 1000 labels */
        c.channels = 3; c.image_h = c.image_w = 224; c.patch = 16; c.hidden = 768;
        c.heads = 12; c.mlp = 3072; c.layers = 12; c.labels = 1000;
    } else if (strcmp(preset, "tiny") == 0) {
        c.channels = 3; c.image_h = c.image_w = 32; c.patch = 8; c.hidden = 48;
        c.heads = 3; c.mlp = 96; c.layers = 2; c.labels = 10;
    } else {
        return usage();
    }
    c.grid_h = c.image_h / c.patch; c.grid_w = c.image_w / c.patch;
    c.tokens = c.grid_h * c.grid_w + 1; c.ln_eps = 1e-12f; c.act = VS_ACT_GELU;

    if (vs_cuda_device_count() == 0) {
        fprintf(stderr, "vs-bench_cuda: no CUDA device\n");
        return 77;
    }
    int max_batch = 1;
    for (int i = 0; i < nb; i++) max_batch = VS_MAX(max_batch, batches[i]);

    struct vs_vit_weights w = {0};
    struct vs_vit_layer *layers = NULL;
    float *block = NULL;
    if (!random_weights(&c, &w, &layers, &block)) { fprintf(stderr, "out of memory\n"); return 1; }
    const size_t chw = (size_t)c.channels * c.image_h * c.image_w;
    float *pix = malloc((size_t)max_batch * chw * sizeof(float));
    float *logits = malloc((size_t)max_batch * c.labels * sizeof(float));
    double *t = malloc((size_t)iters * sizeof(double));
    if (!pix || !logits || !t) { fprintf(stderr, "out of memory\n"); return 1; }
    uint64_t s = 99;
    for (size_t i = 0; i < (size_t)max_batch * chw; i++)
        pix[i] = (float)((rng_next(&s) >> 40) * (2.0 / 16777216.0) - 1.0);
    const double gflop = vs_vit_flops(&c) / 1e9;
    const char *chunk_env = getenv("VS_CUDA_CHUNK");
    int rc = 0;

    char list[64];
    snprintf(list, sizeof list, "%s", precs);
    for (char *p = strtok(list, ","); p && rc == 0; p = strtok(NULL, ",")) {
        enum vs_precision prec;
        if (strcmp(p, "fp32") == 0) prec = VS_PRECISION_FP32;
        else if (strcmp(p, "fp16") == 0) prec = VS_PRECISION_FP16;
        else if (strcmp(p, "bf16") == 0) prec = VS_PRECISION_BF16;
        else { rc = usage(); break; }
        struct vs_backend_opts o = { .precision = prec, .threads = 0, .max_batch = max_batch,
                                     .device_index = 0 };
        struct vs_err err = {0};
        void *ctx = NULL;
        double t0 = vs_now_ms();
        if (vs_backend_cuda.create(&c, &w, &o, &ctx, &err) != VS_OK) {
            fprintf(stderr, "vs-bench_cuda: create %s: %s\n", p, err.msg);
            rc = 1;
            break;
        }
        double t_create = vs_now_ms() - t0;
        if (!json)
            printf("%s, ViT %s (%.1f GFLOP/image), %s, create %.0f ms, chunk %s\n",
                   vs_backend_cuda.device_name(ctx), preset, gflop, p, t_create,
                   chunk_env ? chunk_env : "default");
        for (int bi = 0; bi < nb && rc == 0; bi++) {
            const int n = batches[bi];
            double tw = vs_now_ms();
            for (int i = 0; i < warmup + 2; i++)   /* +2: eager run, graph capture */
                if (vs_backend_cuda.forward(ctx, pix, n, logits, &err) != VS_OK) { rc = 1; break; }
            tw = vs_now_ms() - tw;
            int done = 0;
            double start = vs_now_ms();
            for (; rc == 0 && done < iters; done++) {
                double a = vs_now_ms();
                if (vs_backend_cuda.forward(ctx, pix, n, logits, &err) != VS_OK) { rc = 1; break; }
                t[done] = vs_now_ms() - a;
                if ((vs_now_ms() - start) / 1000 > max_s) { done++; break; }
            }
            if (rc) {
                fprintf(stderr, "vs-bench_cuda: forward %s batch %d: %s\n", p, n, err.msg);
                break;
            }
            bool finite = true;
            for (size_t i = 0; i < (size_t)n * c.labels; i++) finite &= isfinite(logits[i]);
            qsort(t, (size_t)done, sizeof *t, cmp_double);
            double med = t[done / 2], mn = t[0], p90 = t[(int)(0.9 * (done - 1))];
            double ips = n / (med / 1000), tflops = ips * gflop / 1000;
            if (json)
                printf("{\"device\":\"%s\",\"preset\":\"%s\",\"precision\":\"%s\",\"batch\":%d,"
                       "\"chunk\":%s,\"iters\":%d,\"median_ms\":%.4f,\"min_ms\":%.4f,\"p90_ms\":%.4f,"
                       "\"images_per_s\":%.1f,\"tflops\":%.2f,\"warmup_ms\":%.1f,"
                       "\"create_ms\":%.1f,\"finite\":%s}\n",
                       vs_backend_cuda.device_name(ctx), preset, p, n,
                       chunk_env ? chunk_env : "null", done, med, mn, p90, ips, tflops, tw,
                       t_create, finite ? "true" : "false");
            else
                printf("  batch %4d: median %8.3f ms  min %8.3f  p90 %8.3f  %9.1f img/s  "
                       "%6.1f TFLOP/s  (%d iters, warmup %.0f ms)%s\n",
                       n, med, mn, p90, ips, tflops, done, tw, finite ? "" : "  NON-FINITE LOGITS");
            fflush(stdout);
        }
        vs_backend_cuda.destroy(ctx);
    }
    free(t); free(pix); free(logits); free(block); free(layers);
    return rc;
}
#endif
