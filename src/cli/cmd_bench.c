/* cmd_bench.c: `vitserve bench` — engine-only timing of the forward pass on
 * preprocessed (random, fixed-seed) input, and optionally the accuracy of a
 * reduced precision against fp32 over a folder of images.
 *
 * Reports median and min milliseconds per batch, images/s, achieved
 * GFLOP/s and, on the CPU, the share of this machine's fp32 FMA peak,
 * measured on the spot with the same number of threads (peak.c).  For
 * int8 the figure is still relative to the fp32 FMA peak (an int8 VNNI unit
 * does 4x the multiply-adds), so int8 can exceed 100%. */
#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "commands.h"
#include "peak.h"

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Deterministic pixels in [-1, 1): what normalised images look like. */
static void fill_random(float *x, size_t n, uint64_t seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (float)((double)(seed >> 40) / (double)(1ull << 24) * 2.0 - 1.0);
    }
}

struct acc {
    int images, agree;
    double max_diff, sum_diff;
};

static void accuracy_file(struct vs_model *m, struct vs_model *ref, const char *path,
                          float *px, float *a, float *b, uint64_t max_pixels, struct acc *s)
{
    struct vs_image img = {0};
    struct vs_err err = {0};
    const struct vs_model_info *mi = vs_model_info(m);
    if (vs_cli_decode_file(path, max_pixels, &img, &err) != VS_OK ||
        vs_cli_preprocess(&img, mi, px, &err) != VS_OK) {
        vs_image_deinit(&img);
        return; /* not a valid image: not part of the comparison */
    }
    vs_image_deinit(&img);
    if (vs_model_forward(m, px, 1, a, &err) != VS_OK || vs_model_forward(ref, px, 1, b, &err) != VS_OK)
        return;
    int ia, ib;
    vs_topk(a, mi->num_labels, 1, &ia);
    vs_topk(b, mi->num_labels, 1, &ib);
    double md = 0;
    for (int i = 0; i < mi->num_labels; i++) md = fmax(md, fabs((double)a[i] - b[i]));
    s->images++;
    s->agree += ia == ib;
    s->max_diff = fmax(s->max_diff, md);
    s->sum_diff += md;
}

/* Manifests and notes that live beside images in a corpus folder. */
static bool has_text_suffix(const char *name)
{
    static const char *const skip[] = {".json", ".md", ".txt", ".py"};
    size_t n = strlen(name);
    for (size_t i = 0; i < VS_ARRAY_LEN(skip); i++) {
        size_t k = strlen(skip[i]);
        if (n >= k && !strcmp(name + n - k, skip[i])) return true;
    }
    return false;
}

static void accuracy_walk(struct vs_model *m, struct vs_model *ref, const char *dir,
                          float *px, float *a, float *b, uint64_t max_pixels, struct acc *s)
{
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(path, &st) != 0) continue;
        if (S_ISDIR(st.st_mode)) accuracy_walk(m, ref, path, px, a, b, max_pixels, s);
        else if (S_ISREG(st.st_mode) && !has_text_suffix(e->d_name))
            accuracy_file(m, ref, path, px, a, b, max_pixels, s);
    }
    closedir(d);
}

int vs_cmd_bench(int argc, char **argv)
{
    struct vs_cli_model_args ma = {0};
    int batch = 1, iters = 10, warmup = 2;
    bool as_json = false;
    const char *accuracy_dir = NULL, *input_path = NULL, *logits_path = NULL, *image_path = NULL;
    const struct vs_option opts[] = {
        VS_CLI_MODEL_OPTIONS(ma),
        {"batch-size", 'b', NULL, VS_OPT_INT, &batch, 1, 4096, "1", "B", "images per forward pass", NULL},
        {"iters", 'n', NULL, VS_OPT_INT, &iters, 1, 100000, "10", "N", "timed forward passes", NULL},
        {"warmup", 0, NULL, VS_OPT_INT, &warmup, 0, 1000, "2", "N", "untimed passes first", NULL},
        {"json", 0, NULL, VS_OPT_FLAG, &as_json, 0, -1, NULL, NULL, "print one JSON object", NULL},
        {"accuracy-dir", 0, NULL, VS_OPT_STRING, &accuracy_dir, 0, -1, NULL, "DIR",
         "also compare this precision with fp32 on every image under DIR (top-1 agreement, max logit difference)", NULL},
        {"input", 0, NULL, VS_OPT_STRING, &input_path, 0, -1, NULL, "FILE",
         "time this raw float32 [B,C,H,W] tensor instead of random pixels", NULL},
        {"image", 0, NULL, VS_OPT_STRING, &image_path, 0, -1, NULL, "FILE",
         "also time decoding + preprocessing this image (single thread) and compare with the forward pass", NULL},
        {"save-logits", 0, NULL, VS_OPT_STRING, &logits_path, 0, -1, NULL, "FILE",
         "write the last pass's logits (raw float32 [B,labels]) for comparisons", NULL},
        VS_CLI_PIXELS_OPTION(ma),
    };
    char *pos[1];
    int npos = 0;
    int rc = vs_options_parse("bench", "--model M [--batch-size B] [--iters N] [--threads T] [--precision P] [--json]",
                              "Time the forward pass alone (no decoding, no HTTP) on random input.",
                              opts, VS_ARRAY_LEN(opts), argc, argv, pos, 0, &npos);
    if (rc) return rc == 1 ? 0 : rc;
    struct vs_model_opts checked;   /* a bad --device is a usage error (2), not a load failure */
    if (!vs_cli_model_opts("bench", &ma, &checked)) return 2;

    double t_load = vs_now_ms();
    ma.prepack = true;   /* time the steady state of a server: packed weights */
    struct vs_model *m = vs_cli_load_model("bench", &ma, batch, true);
    if (!m) return 1;
    t_load = vs_now_ms() - t_load;
    double t_settle = vs_now_ms();
    vs_model_settle(m);
    t_settle = vs_now_ms() - t_settle;
    const struct vs_model_info *mi = vs_model_info(m);
    size_t per = vs_cli_input_floats(mi);
    float *px = malloc(per * (size_t)batch * sizeof *px);
    float *logits = malloc((size_t)mi->num_labels * (size_t)batch * sizeof *logits);
    double *ms = malloc((size_t)iters * sizeof *ms);
    if (!px || !logits || !ms) {
        fprintf(stderr, "vitserve bench: out of memory\n");
        rc = 1;
        goto out;
    }
    if (input_path) {
        uint8_t *raw = NULL;
        size_t len = 0;
        struct vs_err rerr = {0};
        if (vs_read_file(input_path, 0, &raw, &len, &rerr) != VS_OK ||
            len != per * (size_t)batch * sizeof *px) {
            fprintf(stderr, "vitserve bench: --input %s: %s\n", input_path,
                    raw ? "size is not batch-size x C x H x W float32 values" : rerr.msg);
            free(raw);
            rc = 1;
            goto out;
        }
        memcpy(px, raw, len);
        free(raw);
    } else {
        fill_random(px, per * (size_t)batch, 42);
    }
    struct vs_err err = {0};
    double t_first = vs_now_ms();
    for (int i = 0; i < warmup + iters; i++) {
        double t0 = vs_now_ms();
        if (vs_model_forward(m, px, batch, logits, &err) != VS_OK) {
            fprintf(stderr, "vitserve bench: forward failed: %s\n", err.msg);
            rc = 1;
            goto out;
        }
        double dt = vs_now_ms() - t0;
        if (i == 0) t_first = dt;
        if (i >= warmup) ms[i - warmup] = dt;
    }
    if (logits_path) {
        FILE *f = fopen(logits_path, "wb");
        size_t nl = (size_t)mi->num_labels * (size_t)batch;
        bool ok = f && fwrite(logits, sizeof *logits, nl, f) == nl;
        if (f && fclose(f) != 0) ok = false;
        if (!ok) {
            fprintf(stderr, "vitserve bench: --save-logits %s: write failed\n", logits_path);
            rc = 1;
            goto out;
        }
    }
    qsort(ms, (size_t)iters, sizeof *ms, cmp_double);
    double med = iters % 2 ? ms[iters / 2] : 0.5 * (ms[iters / 2 - 1] + ms[iters / 2]);
    double best = ms[0];
    double ips = batch * 1000.0 / med;
    double gflops = mi->flops_per_image * batch / (med / 1000.0) / 1e9;
    bool on_cpu = !strncmp(mi->backend, "cpu", 3);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int used = mi->threads > 0 ? mi->threads : (int)cores;
    const char *isa = "";
    double peak = on_cpu ? vs_peak_fp32_gflops(used, &isa) : 0;
    double pct = on_cpu && peak > 0 ? 100.0 * gflops / peak : NAN;

    /* Decode + preprocess, as the server does per request (one thread). */
    double pre_med = NAN;
    int pre_w = 0, pre_h = 0;
    if (image_path) {
        uint8_t *raw = NULL;
        size_t len = 0;
        struct vs_err ierr = {0};
        if (vs_read_file(image_path, 0, &raw, &len, &ierr) != VS_OK) {
            fprintf(stderr, "vitserve bench: --image: %s\n", ierr.msg);
            rc = 1;
            goto out;
        }
        int reps = iters < 5 ? 5 : iters;
        double *pt = malloc((size_t)reps * sizeof *pt);
        for (int i = 0; pt && i < reps + 1; i++) {
            struct vs_image img = {0};
            struct vs_image_limits lim = {.max_pixels = ma.max_pixels};
            double t0 = vs_now_ms();
            enum vs_status ps = vs_image_decode(raw, len, &lim, &img, &ierr);
            if (ps == VS_OK) ps = vs_cli_preprocess(&img, mi, px, &ierr);
            double dt = vs_now_ms() - t0;
            pre_w = img.width;
            pre_h = img.height;
            vs_image_deinit(&img);
            if (ps != VS_OK) {
                fprintf(stderr, "vitserve bench: --image %s: %s\n", image_path, ierr.msg);
                free(pt);
                free(raw);
                rc = 1;
                goto out;
            }
            if (i > 0) pt[i - 1] = dt;   /* the first run warms caches */
        }
        if (pt) {
            qsort(pt, (size_t)reps, sizeof *pt, cmp_double);
            pre_med = pt[reps / 2];
        }
        free(pt);
        free(raw);
    }

    struct acc acc = {0};
    if (accuracy_dir) {
        struct vs_cli_model_args ra = ma;
        ra.precision = "fp32";
        ra.device = "cpu";
        struct vs_model *ref = vs_cli_load_model("bench", &ra, 1, true);
        float *ref_logits = malloc((size_t)mi->num_labels * sizeof *ref_logits);
        if (!ref || !ref_logits) {
            vs_model_destroy(ref);
            free(ref_logits);
            rc = 1;
            goto out;
        }
        /* logits holds at least one row; the reference writes its own row. */
        accuracy_walk(m, ref, accuracy_dir, px, logits, ref_logits, ma.max_pixels, &acc);
        free(ref_logits);
        vs_model_destroy(ref);
    }

    if (as_json) {
        json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:i, s:i, s:i, s:f, s:f, s:f, s:f, s:f, s:f, s:f}",
                              "model", mi->name, "backend", mi->backend, "device", mi->device_name,
                              "precision", vs_precision_name(mi->precision), "threads", used,
                              "batch_size", batch, "iters", iters, "median_ms", med, "min_ms", best,
                              "images_per_s", ips, "gflops", gflops, "gflop_per_image", mi->flops_per_image / 1e9,
                              "first_ms", t_first, "load_ms", t_load);
        json_object_set_new(o, "prepack_ms", json_real(t_settle));
        if (image_path) {
            json_object_set_new(o, "preprocess_ms", json_real(pre_med));
            json_object_set_new(o, "preprocess_image", json_pack("[i,i]", pre_w, pre_h));
            json_object_set_new(o, "preprocess_vs_forward_b1", json_real(pre_med / (med / batch)));
        }
        if (on_cpu && peak > 0) {
            json_object_set_new(o, "pct_of_peak", json_real(pct));
            json_object_set_new(o, "peak_gflops", json_real(peak));
            json_object_set_new(o, "peak_isa", json_string(isa));
        }
        if (accuracy_dir)
            json_object_set_new(o, "accuracy_vs_fp32", json_pack("{s:i, s:f, s:f, s:f}",
                "images", acc.images, "top1_agreement", acc.images ? (double)acc.agree / acc.images : 0.0,
                "max_logit_diff", acc.max_diff, "mean_max_logit_diff", acc.images ? acc.sum_diff / acc.images : 0.0));
        char *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(6));
        if (s) puts(s);
        free(s);
        json_decref(o);
    } else {
        printf("model      %s (%.2f GFLOP/image), loaded in %.0f ms", mi->name, mi->flops_per_image / 1e9, t_load);
        if (t_settle >= 1.0) printf(", weights packed for the GEMM %.0f ms later", t_settle);
        printf("\n");
        printf("backend    %s on %s, %s, %d thread(s)\n", mi->backend, mi->device_name,
               vs_precision_name(mi->precision), used);
        printf("batch %-4d median %.2f ms  min %.2f ms  (%d iters)  %.1f images/s  %.1f GFLOP/s",
               batch, med, best, iters, ips, gflops);
        if (on_cpu && peak > 0)
            printf("  %.0f%% of the measured %.0f GFLOP/s fp32 FMA peak (%s, %d threads)", pct, peak, isa, used);
        printf("\n");
        if (image_path)
            printf("preprocess %s (%dx%d): decode + resize + normalize %.2f ms median, "
                   "%.1f%% of one image's forward pass\n", image_path, pre_w, pre_h, pre_med,
                   100.0 * pre_med / (med / batch));
        if (accuracy_dir)
            printf("accuracy   vs fp32 on %d images under %s: top-1 agreement %.2f%%, max |logit diff| %.4g, mean %.4g\n",
                   acc.images, accuracy_dir, acc.images ? 100.0 * acc.agree / acc.images : 0.0,
                   acc.max_diff, acc.images ? acc.sum_diff / acc.images : 0.0);
    }
out:
    free(ms);
    free(logits);
    free(px);
    vs_model_destroy(m);
    return rc;
}
