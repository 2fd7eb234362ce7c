/* test_model_loader.c: the model object end to end on generated
 * checkpoints — hub-cache resolution on a fake cache tree ($HF_HUB_CACHE,
 * $HF_HOME, refs/main, @revision, @commit, missing ids, unsafe ids);
 * F16 / BF16 / sharded checkpoints from vs-gen_vit giving the same logits
 * as an F32 checkpoint holding the same (rounded) values; load_weights =
 * false; every info field against values computed here from the config;
 * vs_model_forward_rows against vs_model_forward (same bits, same checks);
 * the small parsers, scores and top-k.  Checkpoints go to $VS_TMP.
 * Single-threaded (it sets environment variables).
 */
#define _GNU_SOURCE
#include <math.h>
#include <sched.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "model/model.h"

static char tmpdir[1024], tools[1024];

/* Runs vs-gen_vit --out $VS_TMP/name ARGS (once per process). */
static void gen(const char *name, const char *args, char *dir, size_t n)
{
    snprintf(dir, n, "%s/loader_%s", tmpdir, name);
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && '%s/vs-gen_vit' --out '%s' %s", dir, tools, dir, args);
    int rc = system(cmd);
    if (rc != 0) print_error("failed: %s\n", cmd);
    assert_int_equal(rc, 0);
}

static struct vs_model *load(const char *spec, bool weights, int max_batch)
{
    struct vs_model_opts o;
    vs_model_opts_default(&o);
    o.device = VS_DEVICE_CPU;
    o.load_weights = weights;
    o.max_batch = max_batch;
    o.threads = 1;
    struct vs_model *m = NULL;
    struct vs_err e = {0};
    enum vs_status s = vs_model_load(spec, &o, &m, &e);
    if (s) print_error("load %s: %s\n", spec, e.msg);
    assert_int_equal(s, VS_OK);
    assert_non_null(m);
    return m;
}

static void mkdirs(const char *p)
{
    char cmd[4300];
    assert_true(snprintf(cmd, sizeof cmd, "mkdir -p '%s'", p) < (int)sizeof cmd);
    assert_int_equal(system(cmd), 0);
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* ---- hub cache ------------------------------------------------------------ */

#define C1 "0123456789abcdef0123456789abcdef01234567"
#define C2 "fedcba9876543210fedcba9876543210fedcba98"

static void expect_resolve(const char *spec, const char *want_dir)
{
    char dir[4096];
    struct vs_err e = {0};
    enum vs_status s = vs_model_resolve(spec, dir, sizeof dir, &e);
    if (s) print_error("resolve %s: %s\n", spec, e.msg);
    assert_int_equal(s, VS_OK);
    assert_string_equal(dir, want_dir);
}

static void expect_not_found(const char *spec, const char *sub1, const char *sub2)
{
    char dir[4096] = "untouched";
    struct vs_err e = {0};
    enum vs_status s = vs_model_resolve(spec, dir, sizeof dir, &e);
    if (s != VS_NOT_FOUND || !strstr(e.msg, sub1) || !strstr(e.msg, sub2))
        print_error("resolve %s: status %d: %s\n", spec, s, e.msg);
    assert_int_equal(s, VS_NOT_FOUND);
    assert_string_equal(dir, "untouched");          /* out-param untouched on failure */
    assert_non_null(strstr(e.msg, sub1));
    assert_non_null(strstr(e.msg, sub2));
}

static void test_hub_resolution(void **state)
{
    (void)state;
    char cache[1200], repo[1400], p[4200], want[2048], tiny[1200];
    gen("hubsrc", "--preset tiny", tiny, sizeof tiny);
    snprintf(cache, sizeof cache, "%s/loader_hub/cacheA", tmpdir);
    snprintf(repo, sizeof repo, "%s/models--my-org--vit.tiny", cache);
    snprintf(p, sizeof p, "%s/refs", repo);
    mkdirs(p);
    snprintf(p, sizeof p, "%s/snapshots/%s", repo, C2);
    mkdirs(p);
    /* snapshots/C1 = a real checkpoint (symlinks, as huggingface_hub makes). */
    snprintf(p, sizeof p, "rm -f '%s/snapshots/" C1 "' && ln -s '%s' '%s/snapshots/" C1 "'",
             repo, tiny, repo);
    assert_int_equal(system(p), 0);
    snprintf(p, sizeof p, "%s/refs/main", repo);
    write_text(p, C1);                                   /* no newline, as the hub writes it */
    snprintf(p, sizeof p, "%s/refs/v2", repo);
    write_text(p, C2 "\n");
    /* snapshots/C2: what resolution checks is there (the files, not their content). */
    snprintf(p, sizeof p, "%s/snapshots/" C2 "/config.json", repo);
    write_text(p, "{}");
    snprintf(p, sizeof p, "%s/snapshots/" C2 "/model.safetensors", repo);
    write_text(p, "");

    unsetenv("HUGGINGFACE_HUB_CACHE");
    setenv("HF_HUB_CACHE", cache, 1);
    /* Resolution only: a missing model must not be downloaded here. */
    setenv("HF_HUB_OFFLINE", "1", 1);
    snprintf(want, sizeof want, "%s/snapshots/" C1, repo);
    expect_resolve("my-org/vit.tiny", want);
    expect_resolve("my-org/vit.tiny@main", want);
    snprintf(want, sizeof want, "%s/snapshots/" C2, repo);
    expect_resolve("my-org/vit.tiny@v2", want);
    expect_resolve("my-org/vit.tiny@" C2, want);          /* a commit names the snapshot */

    /* A hub id loads like a folder; name is the id. */
    struct vs_model *m = load("my-org/vit.tiny", false, 1);
    const struct vs_model_info *mi = vs_model_info(m);
    assert_string_equal(mi->name, "my-org/vit.tiny");
    assert_string_equal(mi->spec, "my-org/vit.tiny");
    snprintf(want, sizeof want, "%s/snapshots/" C1, repo);
    assert_string_equal(mi->dir, want);
    vs_model_destroy(m);

    /* Missing: every place looked at is listed, and offline mode is named. */
    expect_not_found("my-org/absent", "models--my-org--absent", "HF_HUB_OFFLINE");
    expect_not_found("my-org/vit.tiny@v3", "refs/v3", "HF_HUB_OFFLINE");
    expect_not_found("my-org/vit.tiny@" "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "snapshots/aaaa",
                     "no such snapshot");
    /* A snapshot without its weights (huggingface_hub's AutoConfig leaves
     * config.json alone; a download cut after config.json) is not used. */
    char c3[1500];
    snprintf(c3, sizeof c3, "%s/snapshots/" "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", repo);
    mkdirs(c3);
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", c3);
    unlink(p);                                           /* from an earlier run */
    snprintf(p, sizeof p, "%s/config.json", c3);
    write_text(p, "{}");
    expect_not_found("my-org/vit.tiny@bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", "snapshots/bbbb",
                     "no model.safetensors nor model.safetensors.index.json");
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", c3);
    write_text(p, "{\"weight_map\": {\"x\": \"model-00001-of-00002.safetensors\"}}");
    expect_not_found("my-org/vit.tiny@bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", "snapshots/bbbb",
                     "a shard the index names is missing");
    snprintf(p, sizeof p, "%s/refs/bad", repo);
    write_text(p, "../../etc\n");
    expect_not_found("my-org/vit.tiny@bad", "refs/bad", "commit hash");

    /* Unsafe or malformed ids are refused before any path is built. */
    static const char *const bad[] = {"../etc", "org/../x", "a b/c", "org/name/extra",
                                      "org//name", "-org/name", "org/na..me", "org/name@../x",
                                      "org/name@", "/abs/missing/path", "org/name@.",
                                      "org/name@main/.", "org/name@./main", "org/name@v1/./x"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        expect_not_found(bad[i], "model '", "nor a valid hub id");

    /* $HF_HOME/hub when HF_HUB_CACHE is unset. */
    unsetenv("HF_HUB_CACHE");
    char home[1200];
    snprintf(home, sizeof home, "%s/loader_hub/home", tmpdir);
    snprintf(p, sizeof p, "%s/hub/models--solo/refs", home);
    mkdirs(p);
    snprintf(p, sizeof p, "%s/hub/models--solo/snapshots/" C2, home);
    mkdirs(p);
    snprintf(p, sizeof p, "%s/hub/models--solo/snapshots/" C2 "/config.json", home);
    write_text(p, "{}");
    snprintf(p, sizeof p, "%s/hub/models--solo/snapshots/" C2 "/model.safetensors", home);
    write_text(p, "");
    snprintf(p, sizeof p, "%s/hub/models--solo/refs/main", home);
    write_text(p, C2);
    setenv("HF_HOME", home, 1);
    snprintf(want, sizeof want, "%s/hub/models--solo/snapshots/" C2, home);
    expect_resolve("solo", want);                        /* legacy id without org */
    snprintf(want, sizeof want, "%s/hub/models--my-org--vit.tiny", home);
    expect_not_found("my-org/vit.tiny", want, "no such folder");
    unsetenv("HF_HOME");
    unsetenv("HF_HUB_OFFLINE");

    /* An existing folder is used as is (a trailing '/' dropped). */
    expect_resolve(tiny, tiny);
    snprintf(p, sizeof p, "%s/", tiny);
    expect_resolve(p, tiny);
}

/* A cache root near PATH_MAX: models--<org>--<name> does not fit the
 * path buffer.  Refused with an error, never written past the buffer (the
 * ASan build checks), offline (the cache look-up) and online (the
 * download's own folder name, before any request). */
static void test_hub_long_cache_root(void **state)
{
    (void)state;
    char root[4096];
    memset(root, 'a', sizeof root - 1);
    root[0] = '/';
    root[sizeof root - 1] = '\0';                        /* 4095 bytes, as cache_root keeps */
    unsetenv("HUGGINGFACE_HUB_CACHE");
    unsetenv("HF_HOME");
    setenv("HF_HUB_CACHE", root, 1);
    char dir[4096];
    struct vs_err e = {0};
    setenv("HF_HUB_OFFLINE", "1", 1);
    assert_int_equal(vs_model_resolve("my-org/vit.tiny", dir, sizeof dir, &e), VS_NOT_FOUND);
    unsetenv("HF_HUB_OFFLINE");
    setenv("HF_ENDPOINT", "http://127.0.0.1:1", 1);      /* nothing listens: no request made */
    memset(&e, 0, sizeof e);
    enum vs_status s = vs_model_resolve("my-org/vit.tiny", dir, sizeof dir, &e);
    if (!strstr(e.msg, "too long")) print_error("resolve: %d: %s\n", s, e.msg);
    assert_int_equal(s, VS_BAD_INPUT);
    assert_non_null(strstr(e.msg, "too long"));
    unsetenv("HF_ENDPOINT");
    unsetenv("HF_HUB_CACHE");
}

/* ---- dtypes and shards ---------------------------------------------------- */

static float *random_pixels(const struct vs_model_info *mi, int n, uint32_t seed)
{
    size_t px = (size_t)n * mi->num_channels * mi->image_height * mi->image_width;
    float *p = malloc(px * sizeof *p);
    assert_non_null(p);
    for (size_t i = 0; i < px; i++) {
        seed = seed * 1664525u + 1013904223u;
        p[i] = (float)(seed >> 8) / (float)(1u << 23) - 1.0f;    /* [-1, 1) */
    }
    return p;
}

static float *run(struct vs_model *m, const float *pixels, int n)
{
    const struct vs_model_info *mi = vs_model_info(m);
    float *out = malloc((size_t)n * mi->num_labels * sizeof *out);
    assert_non_null(out);
    struct vs_err e = {0};
    enum vs_status s = vs_model_forward(m, pixels, n, out, &e);
    if (s) print_error("forward: %s\n", e.msg);
    assert_int_equal(s, VS_OK);
    return out;
}

static double max_diff(const float *a, const float *b, int n)
{
    double d = 0;
    for (int i = 0; i < n; i++) d = fmax(d, fabs((double)a[i] - b[i]));
    return d;
}

/* Loads `dir` and returns logits for 3 fixed random images. */
static float *logits_of(const char *dir, const char *want_dtype, int want_files)
{
    struct vs_model *m = load(dir, true, 4);
    const struct vs_model_info *mi = vs_model_info(m);
    assert_string_equal(mi->dtype, want_dtype);
    assert_int_equal(mi->num_files, want_files);
    float *px = random_pixels(mi, 3, 99);
    float *out = run(m, px, 3);
    free(px);
    vs_model_destroy(m);
    return out;
}

static void test_dtypes_and_shards(void **state)
{
    (void)state;
    char d[6][1200];
    /* The F32 references hold exactly the F16 / BF16 values, so the
     * stored dtype is the only difference: logits must agree up to float
     * summation noise (the converted weights are bit-identical). */
    gen("f32_r16", "--seed 5 --round F16", d[0], sizeof d[0]);
    gen("f16", "--seed 5 --dtype F16", d[1], sizeof d[1]);
    gen("f32_rbf16", "--seed 5 --round BF16", d[2], sizeof d[2]);
    gen("bf16", "--seed 5 --dtype BF16 --shards 2", d[3], sizeof d[3]);
    gen("f32", "--seed 5", d[4], sizeof d[4]);
    gen("f32_sharded", "--seed 5 --shards 3 --extra-tensor", d[5], sizeof d[5]);
    /* The F32 file again with a header one byte longer: every tensor is
     * misaligned, so the loader converts instead of using it in place. */
    char mis[1300], p[6000];
    snprintf(mis, sizeof mis, "%s/loader_misaligned", tmpdir);
    snprintf(p, sizeof p, "rm -rf '%s' && mkdir -p '%s' && cp '%s'/*.json '%s'/", mis, mis, d[4], mis);
    assert_int_equal(system(p), 0);
    snprintf(p, sizeof p, "%s/model.safetensors", d[4]);
    uint8_t *raw;
    size_t len;
    assert_int_equal(vs_read_file(p, 0, &raw, &len, NULL), VS_OK);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | raw[i];
    snprintf(p, sizeof p, "%s/model.safetensors", mis);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    uint8_t n8[8];
    for (int i = 0; i < 8; i++) n8[i] = (uint8_t)((hl + 1) >> (8 * i));
    fwrite(n8, 1, 8, f);
    fwrite(raw + 8, 1, (size_t)hl, f);
    fputc(' ', f);
    fwrite(raw + 8 + hl, 1, len - 8 - hl, f);
    fclose(f);
    free(raw);
    float *r16 = logits_of(d[0], "F32", 3), *f16 = logits_of(d[1], "F16", 3);
    float *rbf = logits_of(d[2], "F32", 3), *bf16 = logits_of(d[3], "BF16", 5);
    float *f32 = logits_of(d[4], "F32", 3), *sh = logits_of(d[5], "F32", 6);
    const int n = 3 * 10;
    double a = max_diff(r16, f16, n), b = max_diff(rbf, bf16, n), c = max_diff(f32, sh, n);
    float *mf = logits_of(mis, "F32", 3);
    assert_true(max_diff(mf, f32, n) <= 1e-5);
    free(mf);
    double r = max_diff(f32, f16, n), rb = max_diff(f32, bf16, n);
    print_message("F16 vs F32(same values) %.3g, BF16(2 shards) vs F32(same values) %.3g, "
                  "3 shards + pooler vs 1 file %.3g; rounding effect: F16 %.3g, BF16 %.3g\n",
                  a, b, c, r, rb);
    assert_true(a <= 1e-5);
    assert_true(b <= 1e-5);
    assert_true(c <= 1e-5);
    /* The rounding itself is visible, and of the dtype's size: bf16 keeps
     * 8 bits of mantissa, f16 11, so bf16 perturbs more. */
    assert_true(r > 0 && rb > r);
    assert_true(rb < 0.5);
    free(r16); free(f16); free(rbf); free(bf16); free(f32); free(sh);
}

/* ---- info, load_weights = false, variants --------------------------------- */

static void test_info(void **state)
{
    (void)state;
    char dir[1200];
    gen("info", "--preset tiny --seed 2", dir, sizeof dir);
    struct vs_model *m = load(dir, true, 2);
    const struct vs_model_info *mi = vs_model_info(m);
    assert_string_equal(mi->spec, dir);
    assert_string_equal(mi->dir, dir);
    assert_string_equal(mi->name, "loader_info");
    assert_string_equal(mi->architecture, "ViTForImageClassification");
    assert_string_equal(mi->model_type, "vit");
    assert_string_equal(mi->problem_type, "");
    assert_string_equal(mi->hidden_act, "gelu");
    assert_int_equal(mi->image_height, 32);
    assert_int_equal(mi->image_width, 32);
    assert_int_equal(mi->patch_size, 8);
    assert_int_equal(mi->num_channels, 3);
    assert_int_equal(mi->hidden_size, 48);
    assert_int_equal(mi->num_layers, 2);
    assert_int_equal(mi->num_heads, 3);
    assert_int_equal(mi->intermediate_size, 96);
    assert_int_equal(mi->num_tokens, 17);
    assert_true(mi->layer_norm_eps == 1e-12);
    assert_true(mi->qkv_bias);
    assert_int_equal(mi->num_labels, 10);
    assert_string_equal(mi->labels[2], "caf\xc3\xa9");
    assert_string_equal(mi->labels[6], "emoji \xf0\x9f\x90\xb1 (non-BMP)");
    assert_string_equal(mi->labels[9], "");
    assert_string_equal(mi->dtype, "F32");
    /* Parameters, counted from the architecture: embeddings, 2 layers, head. */
    const uint64_t D = 48, T = 17, M = 96, P = 8, L = 2, K = 10;
    uint64_t params = D + T * D + D * 3 * P * P + D                  /* cls, pos, patch w+b */
                    + L * (4 * (D * D + D) + (M * D + M) + (D * M + D) + 4 * D)
                    + 2 * D + K * D + K;                             /* final LN, classifier */
    assert_int_equal(mi->num_params, params);
    assert_int_equal(mi->weight_bytes, params * 4);
    assert_int_equal(mi->num_files, 3);
    const char *ends[3] = {"/config.json", "/preprocessor_config.json", "/model.safetensors"};
    for (int i = 0; i < 3; i++) {
        size_t l = strlen(mi->files[i]), e = strlen(ends[i]);
        assert_true(l > e && strcmp(mi->files[i] + l - e, ends[i]) == 0);
    }
    assert_int_equal(mi->default_score_fn, VS_SCORE_SOFTMAX);
    assert_int_equal(mi->preproc.height, 32);
    assert_int_equal(mi->preproc.resample, VS_RESAMPLE_BILINEAR);
    assert_string_not_equal(mi->backend, "");
    assert_string_not_equal(mi->device_name, "");
    assert_int_equal(mi->precision, VS_PRECISION_FP32);
    assert_int_equal(mi->threads, 1);
    /* 2 x MACs: patch embedding, per layer QKVO + scores + probs.V + MLP, head. */
    double N = 16, flops = 2 * (N * D * 3 * P * P +
                                L * (4.0 * T * D * D + 2.0 * T * T * D + 2.0 * T * D * M) + D * K);
    assert_true(fabs(mi->flops_per_image - flops) < 1);

    /* Batch bounds. */
    float *px = random_pixels(mi, 3, 1), out[30];
    struct vs_err e = {0};
    assert_int_equal(vs_model_forward(m, px, 0, out, &e), VS_BAD_INPUT);
    assert_int_equal(vs_model_forward(m, px, 3, out, &e), VS_BAD_INPUT);
    assert_non_null(strstr(e.msg, "max_batch"));
    free(px);
    vs_model_destroy(m);

    /* load_weights = false: the same description, no backend, no forward. */
    m = load(dir, false, 2);
    mi = vs_model_info(m);
    assert_int_equal(mi->num_params, params);
    assert_int_equal(mi->num_labels, 10);
    assert_string_equal(mi->backend, "");
    px = random_pixels(mi, 1, 1);
    assert_int_equal(vs_model_forward(m, px, 1, out, &e), VS_UNSUPPORTED);
    free(px);
    vs_model_destroy(m);
    vs_model_destroy(NULL);
}

/* threads 0 ("all cores") means the cores this process may run on (its
 * affinity mask: taskset, a container's cpuset), which is what the CPU
 * backend uses (omp_get_num_procs); info->threads (the "model ready" log,
 * bench's peak and efficiency) says the same number, not the machine's. */
static void test_threads_follow_affinity(void **state)
{
    (void)state;
    cpu_set_t saved, one;
    assert_int_equal(sched_getaffinity(0, sizeof saved, &saved), 0);
    if (CPU_COUNT(&saved) < 2) {
        print_message("  one CPU allowed already: nothing to tell apart\n");
        return;
    }
    CPU_ZERO(&one);
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &saved)) { CPU_SET(c, &one); break; }
    assert_int_equal(sched_setaffinity(0, sizeof one, &one), 0);
    char dir[1200];
    gen("threads", "--preset tiny --seed 4", dir, sizeof dir);
    struct vs_model_opts o;
    vs_model_opts_default(&o);
    o.device = VS_DEVICE_CPU;
    o.max_batch = 1;
    o.threads = 0;
    struct vs_model *m = NULL;
    struct vs_err e = {0};
    enum vs_status s = vs_model_load(dir, &o, &m, &e);
    assert_int_equal(sched_setaffinity(0, sizeof saved, &saved), 0);
    if (s) print_error("load %s: %s\n", dir, e.msg);
    assert_int_equal(s, VS_OK);
    const struct vs_model_info *mi = vs_model_info(m);
    print_message("  affinity 1 CPU: info threads %d, device '%s'\n", mi->threads,
                  mi->device_name);
    assert_non_null(strstr(mi->device_name, " 1 threads"));
    assert_int_equal(mi->threads, 1);
    vs_model_destroy(m);
}

/* vs_model_forward_rows: images in their own buffers, in any order, give
 * vs_model_forward's bits; the same refusals (batch bounds, no weights)
 * plus NULL rows. */
static void test_forward_rows(void **state)
{
    (void)state;
    char dir[1200];
    gen("rows", "--preset tiny --seed 3", dir, sizeof dir);
    enum { N = 4 };
    struct vs_model *m = load(dir, true, N);
    const struct vs_model_info *mi = vs_model_info(m);
    const size_t img = (size_t)mi->num_channels * mi->image_height * mi->image_width;
    const size_t L = (size_t)mi->num_labels;
    float *px = random_pixels(mi, N, 21), *want = run(m, px, N);
    float *buf[N], *got = malloc(N * L * sizeof *got);
    const float *rows[N];
    assert_non_null(got);
    for (int i = 0; i < N; i++) {
        buf[i] = malloc(img * sizeof(float));
        assert_non_null(buf[i]);
        memcpy(buf[i], px + i * img, img * sizeof(float));
    }
    for (int i = 0; i < N; i++) rows[i] = buf[N - 1 - i];   /* reversed */
    struct vs_err e = {0};
    enum vs_status s = vs_model_forward_rows(m, rows, N, got, &e);
    if (s) print_error("forward_rows: %s\n", e.msg);
    assert_int_equal(s, VS_OK);
    for (int i = 0; i < N; i++)
        assert_memory_equal(got + i * L, want + (size_t)(N - 1 - i) * L, L * sizeof(float));
    assert_true(max_diff(want, want + L, (int)L) > 0);   /* the images differ */
    /* one image: the same as that image alone */
    float *single = run(m, buf[2], 1);
    assert_int_equal(vs_model_forward_rows(m, &rows[1], 1, got, &e), VS_OK);  /* buf[2] */
    assert_memory_equal(got, single, L * sizeof(float));
    free(single);
    /* refusals */
    assert_int_equal(vs_model_forward_rows(m, rows, 0, got, &e), VS_BAD_INPUT);
    assert_int_equal(vs_model_forward_rows(m, rows, N + 1, got, &e), VS_BAD_INPUT);
    assert_non_null(strstr(e.msg, "max_batch"));
    assert_int_equal(vs_model_forward_rows(m, NULL, 1, got, &e), VS_BAD_INPUT);
    assert_int_equal(vs_model_forward_rows(m, rows, 1, NULL, &e), VS_BAD_INPUT);
    const float *hole[2] = {buf[0], NULL};
    assert_int_equal(vs_model_forward_rows(m, hole, 2, got, &e), VS_BAD_INPUT);
    assert_non_null(strstr(e.msg, "NULL"));
    vs_model_destroy(m);
    m = load(dir, false, N);
    assert_int_equal(vs_model_forward_rows(m, rows, 1, got, &e), VS_UNSUPPORTED);
    vs_model_destroy(m);
    for (int i = 0; i < N; i++) free(buf[i]);
    free(px); free(want); free(got);
}

static void test_variants(void **state)
{
    (void)state;
    char dir[1200], p[1400];
    /* No preprocessor_config.json: defaults with size = image_size. */
    gen("nopre", "--image-size 48 --patch 16 --hidden 32 --heads 2 --mlp 40 --layers 1 --labels 3",
        dir, sizeof dir);
    snprintf(p, sizeof p, "%s/preprocessor_config.json", dir);
    assert_int_equal(remove(p), 0);
    struct vs_model *m = load(dir, true, 1);
    const struct vs_model_info *mi = vs_model_info(m);
    assert_int_equal(mi->preproc.height, 48);
    assert_int_equal(mi->preproc.width, 48);
    assert_true(mi->preproc.image_mean[1] == 0.5f);
    assert_int_equal(mi->num_files, 2);
    assert_int_equal(mi->num_tokens, 10);
    assert_string_equal(mi->labels[2], "caf\xc3\xa9");   /* the tiny preset's names */
    vs_model_destroy(m);

    /* No q/k/v biases, another activation, multi-label -> sigmoid. */
    gen("nobias", "--no-qkv-bias --act quick_gelu --problem-type multi_label_classification",
        dir, sizeof dir);
    m = load(dir, true, 2);
    mi = vs_model_info(m);
    assert_false(mi->qkv_bias);
    assert_string_equal(mi->hidden_act, "quick_gelu");
    assert_int_equal(mi->default_score_fn, VS_SCORE_SIGMOID);
    float *px = random_pixels(mi, 2, 4), *out = run(m, px, 2);
    for (int i = 0; i < 20; i++) assert_true(isfinite(out[i]));
    assert_true(max_diff(out, out + 10, 10) > 0);        /* depends on the input */
    free(px);
    free(out);
    vs_model_destroy(m);

    /* The config names more layers than the weights hold. */
    gen("short", "--layers 1", dir, sizeof dir);
    snprintf(p, sizeof p, "%s/config.json", dir);
    uint8_t *text;
    size_t len;
    assert_int_equal(vs_read_file(p, 0, &text, &len, NULL), VS_OK);
    char *at = strstr((char *)text, "\"num_hidden_layers\": 1");
    assert_non_null(at);
    at[strlen("\"num_hidden_layers\": ")] = '2';
    FILE *f = fopen(p, "wb");
    fwrite(text, 1, len, f);
    fclose(f);
    free(text);
    struct vs_model_opts o;
    vs_model_opts_default(&o);
    struct vs_err e = {0};
    m = NULL;
    assert_int_equal(vs_model_load(dir, &o, &m, &e), VS_BAD_INPUT);
    assert_null(m);
    assert_non_null(strstr(e.msg, "tensor 'vit.encoder.layer.1.attention.attention.query.weight': missing"));

    /* Bad options. */
    o.max_batch = 0;
    assert_int_equal(vs_model_load(dir, &o, &m, &e), VS_BAD_INPUT);
    vs_model_opts_default(&o);
#ifndef VS_HAVE_CUDA
    gen("cuda", "", dir, sizeof dir);
    o.device = VS_DEVICE_CUDA;
    assert_int_equal(vs_model_load(dir, &o, &m, &e), VS_UNSUPPORTED);
    assert_non_null(strstr(e.msg, "CUDA"));
#endif
    /* Not a checkpoint folder at all. */
    o.device = VS_DEVICE_CPU;
    assert_int_equal(vs_model_load(tmpdir, &o, &m, &e), VS_NOT_FOUND);
    assert_non_null(strstr(e.msg, "config.json"));
}

/* ---- parsers, scores, top-k ----------------------------------------------- */

static void test_parsers(void **state)
{
    (void)state;
    enum vs_precision p;
    assert_true(vs_precision_parse("int8", &p) && p == VS_PRECISION_INT8);
    assert_true(vs_precision_parse("bf16", &p) && p == VS_PRECISION_BF16);
    assert_false(vs_precision_parse("fp64", &p));
    assert_string_equal(vs_precision_name(VS_PRECISION_FP16), "fp16");
    enum vs_device d;
    int idx;
    assert_true(vs_device_parse("cuda:3", &d, &idx) && d == VS_DEVICE_CUDA && idx == 3);
    assert_true(vs_device_parse("cpu", &d, &idx) && d == VS_DEVICE_CPU);
    assert_true(vs_device_parse("auto", &d, &idx) && d == VS_DEVICE_AUTO);
    assert_false(vs_device_parse("cuda:", &d, &idx));
    assert_false(vs_device_parse("cuda:1x", &d, &idx));
    assert_false(vs_device_parse("gpu", &d, &idx));
    enum vs_score_fn f;
    assert_true(vs_score_fn_parse("sigmoid", &f) && f == VS_SCORE_SIGMOID);
    assert_true(vs_score_fn_parse("none", &f) && f == VS_SCORE_NONE);
    assert_false(vs_score_fn_parse("tanh", &f));
    struct vs_model_opts o;
    vs_model_opts_default(&o);
    assert_int_equal(o.max_batch, 32);
    assert_true(o.load_weights);
    assert_int_equal(o.device, VS_DEVICE_AUTO);
}

static void test_scores_topk(void **state)
{
    (void)state;
    float x[5] = {1.0f, 3.0f, -2.0f, 3.0f, 0.5f}, s[5];
    vs_scores_apply(VS_SCORE_SOFTMAX, x, 5, s);
    double sum = 0, z = 0;
    for (int i = 0; i < 5; i++) z += exp(x[i] - 3.0);
    for (int i = 0; i < 5; i++) {
        sum += s[i];
        assert_true(fabs(s[i] - exp(x[i] - 3.0) / z) < 1e-7);
    }
    assert_true(fabs(sum - 1.0) < 1e-6);
    /* Large logits do not overflow (max subtracted first). */
    float big[2] = {1000.0f, 999.0f};
    vs_scores_apply(VS_SCORE_SOFTMAX, big, 2, big);      /* in place */
    assert_true(fabs(big[0] - 1.0 / (1.0 + exp(-1.0))) < 1e-6);
    vs_scores_apply(VS_SCORE_SIGMOID, x, 5, s);
    assert_true(fabs(s[2] - 1.0 / (1.0 + exp(2.0))) < 1e-7);
    vs_scores_apply(VS_SCORE_NONE, x, 5, s);
    assert_memory_equal(s, x, sizeof x);

    int idx[5];
    assert_int_equal(vs_topk(x, 5, 3, idx), 3);
    assert_int_equal(idx[0], 1);                         /* tie 3.0: lower index first */
    assert_int_equal(idx[1], 3);
    assert_int_equal(idx[2], 0);
    assert_int_equal(vs_topk(x, 5, 9, idx), 5);          /* k > n -> n */
    assert_int_equal(idx[4], 2);
    assert_int_equal(vs_topk(x, 5, 0, idx), 0);
    /* Large k takes the sorting path: same order rule. */
    enum { N = 1000 };
    static float v[N];
    static int all[N];
    for (int i = 0; i < N; i++) v[i] = (float)((i * 37) % 100);   /* many ties */
    assert_int_equal(vs_topk(v, N, N, all), N);
    for (int i = 1; i < N; i++) {
        assert_true(v[all[i - 1]] >= v[all[i]]);
        if (v[all[i - 1]] == v[all[i]]) assert_true(all[i - 1] < all[i]);
    }
    int small[5];
    assert_int_equal(vs_topk(v, N, 5, small), 5);
    assert_memory_equal(small, all, sizeof small);       /* both paths agree */
    /* The small-k path (with its quick '<' rejection) against the full
     * sort on random scores with ties and NaNs, every k up to 64. */
    uint32_t r = 12345;
    for (int round = 0; round < 20; round++) {
        for (int i = 0; i < N; i++) {
            r = r * 1664525u + 1013904223u;
            v[i] = (float)((r >> 8) % 50) - 25.0f;       /* ties */
            if (round % 4 == 3 && r % 97 == 0) v[i] = NAN;
        }
        assert_int_equal(vs_topk(v, N, N, all), N);
        for (int k = 1; k <= 64; k++) {
            int top[64];
            assert_int_equal(vs_topk(v, N, k, top), k);
            assert_memory_equal(top, all, (size_t)k * sizeof *top);
        }
    }
}

int main(void)
{
    const char *t = getenv("VS_TMP"), *tl = getenv("VS_TOOLS");
    if (!tl) {
        fprintf(stderr, "VS_TOOLS is not set (the folder holding vs-gen_vit)\n");
        return 1;
    }
    snprintf(tmpdir, sizeof tmpdir, "%s", t ? t : "/tmp");
    snprintf(tools, sizeof tools, "%s", tl);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parsers),
        cmocka_unit_test(test_scores_topk),
        cmocka_unit_test(test_hub_resolution),
        cmocka_unit_test(test_hub_long_cache_root),
        cmocka_unit_test(test_info),
        cmocka_unit_test(test_threads_follow_affinity),
        cmocka_unit_test(test_forward_rows),
        cmocka_unit_test(test_variants),
        cmocka_unit_test(test_dtypes_and_shards),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
