/* cmd_classify.c: `vitserve classify` — top-k labels of image files.
 *
 * Images are decoded and preprocessed one by one, collected into batches of
 * --batch-size and run through one forward pass per batch.  A file that
 * fails (unreadable, undecodable) is reported in its place and the others
 * are still classified; the exit status is then 1.  Output order is the
 * order of the arguments. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "commands.h"

#define MAX_FILES 65536

struct job {
    const char *file;
    char error[600];      /* non-empty: failed before or during the forward pass */
    float *logits;        /* [num_labels] once run */
};

static void print_text(const struct job *j, const struct vs_model_info *mi,
                       const float *scores, int top_k, bool logits)
{
    if (j->error[0]) {
        printf("%s: error: %s\n", j->file, j->error);
        return;
    }
    int idx[64];
    int k = vs_topk(scores, mi->num_labels, top_k, idx);
    printf("%s\n", j->file);
    for (int i = 0; i < k; i++)
        printf("  %8.5f  %s\n", scores[idx[i]], mi->labels[idx[i]]);
    if (logits) {
        printf("  logits:");
        for (int i = 0; i < mi->num_labels; i++) printf(" %.9g", j->logits[i]);
        printf("\n");
    }
}

static void print_json(const struct job *j, const struct vs_model_info *mi,
                       const float *scores, int top_k, bool logits)
{
    json_t *o = json_object();
    json_object_set_new(o, "file", vs_cli_json_string(j->file));
    if (j->error[0]) {
        json_object_set_new(o, "error", vs_cli_json_string(j->error));
    } else {
        int idx[64];
        int k = vs_topk(scores, mi->num_labels, top_k, idx);
        json_t *preds = json_array();
        for (int i = 0; i < k; i++) {
            json_t *p = json_object();
            json_object_set_new(p, "label", json_string(mi->labels[idx[i]]));
            json_object_set_new(p, "score", json_real(scores[idx[i]]));
            json_array_append_new(preds, p);
        }
        json_object_set_new(o, "predictions", preds);
        if (logits) {
            json_t *l = json_array();
            for (int i = 0; i < mi->num_labels; i++) json_array_append_new(l, json_real(j->logits[i]));
            json_object_set_new(o, "logits", l);
        }
    }
    char *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(9));
    if (s) {
        puts(s);
        free(s);
    }
    json_decref(o);
}

int vs_cmd_classify(int argc, char **argv)
{
    struct vs_cli_model_args ma = {0};
    int top_k = 5, batch = 8;
    bool as_json = false, with_logits = false;
    const char *fn_name = NULL;
    const struct vs_option opts[] = {
        VS_CLI_MODEL_OPTIONS(ma),
        {"top-k", 'k', NULL, VS_OPT_INT, &top_k, 1, 64, "5", "K",
         "labels to print per image (1 to 64; at most the label count)", NULL},
        {"batch-size", 'b', NULL, VS_OPT_INT, &batch, 1, 1024, "8", "N",
         "images per forward pass", NULL},
        {"json", 0, NULL, VS_OPT_FLAG, &as_json, 0, -1, NULL, NULL,
         "one JSON object per line per image", NULL},
        {"logits", 0, NULL, VS_OPT_FLAG, &with_logits, 0, -1, NULL, NULL,
         "also print the raw logits", NULL},
        {"function", 0, NULL, VS_OPT_STRING, &fn_name, 0, -1, "", "F",
         "scores: softmax, sigmoid or none (default: what transformers' pipeline picks)", NULL},
        VS_CLI_PIXELS_OPTION(ma),
    };
    char **files = calloc(MAX_FILES, sizeof *files);
    if (!files) return 1;
    int nfiles = 0;
    int rc = vs_options_parse("classify", "[options] IMAGE... ('-' reads stdin)",
                              "Print the top-k labels of each image file.", opts,
                              VS_ARRAY_LEN(opts), argc, argv, files, MAX_FILES, &nfiles);
    if (rc) { free(files); return rc == 1 ? 0 : rc; }
    if (nfiles == 0) {
        fprintf(stderr, "vitserve classify: no image given (see --help)\n");
        free(files);
        return 2;
    }
    enum vs_score_fn fn = VS_SCORE_SOFTMAX;
    bool fn_given = fn_name && fn_name[0];
    if (fn_given && !vs_score_fn_parse(fn_name, &fn)) {
        fprintf(stderr, "vitserve classify: --function: '%s' is not softmax, sigmoid or none\n", fn_name);
        free(files);
        return 2;
    }

    struct vs_model_opts checked;   /* a bad --device is a usage error (2), not a load failure */
    if (!vs_cli_model_opts("classify", &ma, &checked)) {
        free(files);
        return 2;
    }

    struct vs_model *m = vs_cli_load_model("classify", &ma, batch, true);
    if (!m) { free(files); return 1; }
    const struct vs_model_info *mi = vs_model_info(m);
    if (!fn_given) fn = mi->default_score_fn;
    if (top_k > mi->num_labels) top_k = mi->num_labels;

    size_t per = vs_cli_input_floats(mi);
    float *pixels = malloc(per * (size_t)batch * sizeof *pixels);
    float *logits = malloc((size_t)mi->num_labels * (size_t)batch * sizeof *logits);
    float *scores = malloc((size_t)mi->num_labels * sizeof *scores);
    struct job *jobs = calloc((size_t)batch, sizeof *jobs);
    if (!pixels || !logits || !scores || !jobs) {
        fprintf(stderr, "vitserve classify: out of memory\n");
        rc = 1;
        goto out;
    }

    int failures = 0;
    for (int start = 0; start < nfiles; start += batch) {
        int nb = VS_MIN(batch, nfiles - start), ready = 0;
        int slot[1024];
        for (int i = 0; i < nb; i++) {
            struct job *j = &jobs[i];
            memset(j, 0, sizeof *j);
            j->file = files[start + i];
            struct vs_image img = {0};
            struct vs_err err = {0};
            enum vs_status st = vs_cli_decode_file(j->file, ma.max_pixels, &img, &err);
            if (st == VS_OK)
                st = vs_cli_preprocess(&img, mi, pixels + per * (size_t)ready, &err);
            vs_image_deinit(&img);
            if (st != VS_OK) {
                snprintf(j->error, sizeof j->error, "%s", err.msg[0] ? err.msg : vs_status_str(st));
                continue;
            }
            slot[ready++] = i;
        }
        if (ready > 0) {
            struct vs_err err = {0};
            if (vs_model_forward(m, pixels, ready, logits, &err) != VS_OK) {
                for (int r = 0; r < ready; r++)
                    snprintf(jobs[slot[r]].error, sizeof jobs[slot[r]].error,
                             "forward pass failed: %s", err.msg);
            } else {
                for (int r = 0; r < ready; r++)
                    jobs[slot[r]].logits = logits + (size_t)r * (size_t)mi->num_labels;
            }
        }
        for (int i = 0; i < nb; i++) {
            struct job *j = &jobs[i];
            if (j->error[0]) failures++;
            else vs_scores_apply(fn, j->logits, mi->num_labels, scores);
            if (as_json) print_json(j, mi, scores, top_k, with_logits);
            else print_text(j, mi, scores, top_k, with_logits);
        }
        fflush(stdout);
    }
    if (failures) {
        fprintf(stderr, "vitserve classify: %d of %d image(s) failed\n", failures, nfiles);
        rc = 1;
    }
out:
    free(jobs);
    free(scores);
    free(logits);
    free(pixels);
    free(files);
    vs_model_destroy(m);
    return rc;
}
