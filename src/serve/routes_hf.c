/* routes_hf.c: the Hugging Face Inference API "image-classification" task
 * on POST / and POST /models/{model_id} (any id: one model is served), as
 * huggingface_hub's InferenceClient and @huggingface/inference send it.
 *
 * Body, decided from the bytes (the Content-Type is only a hint, since the
 * Python client sends none for raw bytes):
 *   1. starts with an image signature (JPEG, PNG, WebP, GIF, BMP): the raw
 *      image, whatever the Content-Type;
 *   2. Content-Type multipart/form-data (a browser form): the part named
 *      "file" or "inputs", else the first part with a file name, else the
 *      first part;
 *   3. starts with '{' (after blanks): JSON {"inputs": "<base64 or data:
 *      URL>", "parameters": {"top_k": K, "function_to_apply": "softmax"|
 *      "sigmoid"|"none"}}; other parameters are ignored;
 *   4. anything else: raw bytes, which the decoder refuses (415).
 * Answer: [{"label": ..., "score": ...}] sorted by score (top_k default 5,
 * clamped to the number of labels); errors {"error": "..."}.  The default
 * function_to_apply is the model's (transformers' pipeline rule: sigmoid
 * for multi-label or one-label models, else softmax); the cache holds
 * logits, so every function is served from one entry.
 * Runs on an MHD thread, after the whole body arrived.
 */
#include "server_int.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "b64.h"
#include "image/image.h"
#include "multipart.h"

#define MAX_PARTS 64
#define HF_MAX_JSON_VALUES 256   /* the JSON form's values, generously */

struct hf_params {
    int top_k;
    enum vs_score_fn fn;
};

/* Reads the JSON form; *img gets a malloc'd decoded image. */
static enum vs_status parse_json(struct req *r, const char *body, size_t len,
                                 struct hf_params *p, uint8_t **img, size_t *img_len,
                                 struct vs_err *err)
{
    /* {"inputs": "...", "parameters": {...}}: a handful of values; a body
     * of many is refused before jansson allocates for each. */
    const size_t nvalues = vs_serve_json_values(body, len);
    if (nvalues > HF_MAX_JSON_VALUES)
        return vs_err_set(err, VS_BAD_INPUT, "JSON body holds %zu values; this route takes an "
                          "object with \"inputs\" (the image as base64) and \"parameters\"",
                          nvalues);
    json_error_t je;
    json_t *doc = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (!doc) return vs_err_set(err, VS_BAD_INPUT, "request body is not valid JSON: line %d: %s",
                                je.line, je.text);
    enum vs_status st = VS_OK;
    json_t *inputs = json_is_object(doc) ? json_object_get(doc, "inputs") : NULL;
    json_t *params = json_is_object(doc) ? json_object_get(doc, "parameters") : NULL;
    if (!json_is_object(doc)) {
        st = vs_err_set(err, VS_BAD_INPUT, "request body must be a JSON object with \"inputs\"");
    } else if (!inputs) {
        st = vs_err_set(err, VS_BAD_INPUT, "missing \"inputs\" (the image as base64 or a data: URL)");
    } else if (!json_is_string(inputs)) {
        st = vs_err_set(err, VS_BAD_INPUT, "\"inputs\" must be a string (the image as base64 or a "
                                           "data: URL)");
    } else if (params && !json_is_null(params) && !json_is_object(params)) {
        st = vs_err_set(err, VS_BAD_INPUT, "\"parameters\" must be an object");
    }
    if (!st && json_is_object(params)) {
        json_t *k = json_object_get(params, "top_k");
        json_t *f = json_object_get(params, "function_to_apply");
        if (k && !json_is_null(k)) {
            if (!json_is_integer(k) || json_integer_value(k) < 1)
                st = vs_err_set(err, VS_BAD_INPUT, "\"top_k\" must be an integer >= 1");
            else
                p->top_k = (int)VS_MIN(json_integer_value(k), (json_int_t)r->s->info->num_labels);
        }
        if (!st && f && !json_is_null(f)) {
            if (!json_is_string(f) || !vs_score_fn_parse(json_string_value(f), &p->fn))
                st = vs_err_set(err, VS_BAD_INPUT,
                                "\"function_to_apply\" must be \"softmax\", \"sigmoid\" or \"none\"");
        }
    }
    if (!st) {
        const char *s = json_string_value(inputs);
        size_t n = json_string_length(inputs);
        if (n >= 8 && (!strncasecmp(s, "http://", 7) || !strncasecmp(s, "https://", 8)))
            st = vs_err_set(err, VS_BAD_INPUT, "\"inputs\" is a URL; this server does not fetch "
                                               "URLs (send the image bytes as base64)");
        else
            st = vs_serve_b64_decode(s, n, r->s->cfg.max_upload_bytes, img, img_len, err);
        if (st) vs_err_prefix(err, "\"inputs\"");
    }
    json_decref(doc);
    return st;
}

/* Finds the image in a multipart body (see the file comment). */
static enum vs_status pick_part(const char *ct, const uint8_t *body, size_t len,
                                const uint8_t **data, size_t *dlen, struct vs_err *err)
{
    char boundary[VS_MP_MAX_BOUNDARY + 1];
    enum vs_status st = vs_multipart_boundary(ct, boundary, sizeof boundary, err);
    if (st) return st;
    struct vs_mp_part *parts = calloc(MAX_PARTS, sizeof *parts);
    if (!parts) return vs_err_set(err, VS_NOMEM, "out of memory");
    size_t n = 0;
    st = vs_multipart_parse(body, len, boundary, parts, MAX_PARTS, &n, err);
    if (!st && n == 0) st = vs_err_set(err, VS_BAD_INPUT, "multipart body has no parts");
    if (!st) {
        size_t pick = n;
        for (size_t i = 0; i < n && pick == n; i++)
            if (!strcmp(parts[i].name, "file") || !strcmp(parts[i].name, "inputs")) pick = i;
        for (size_t i = 0; i < n && pick == n; i++)
            if (parts[i].has_filename) pick = i;
        if (pick == n) pick = 0;
        *data = parts[pick].data;
        *dlen = parts[pick].len;
    }
    free(parts);
    return st;
}

enum MHD_Result vs_serve_hf_predict(struct req *r, struct MHD_Connection *c, const char *url)
{
    struct vs_server *s = r->s;
    const struct vs_model_info *in = s->info;
    (void)url;
    struct hf_params p = {.top_k = VS_MIN(5, in->num_labels), .fn = in->default_score_fn};
    const uint8_t *body = r->body.data ? (const uint8_t *)r->body.data : (const uint8_t *)"";
    size_t len = r->body.len;
    const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
    uint8_t *decoded = NULL;
    struct vs_err err = {0};
    enum vs_status st = VS_OK;
    const uint8_t *img = body;
    size_t img_len = len;

    if (len == 0)
        return vs_serve_error(r, c, 400, NULL, NULL,
                              "empty request body: send the image bytes, or JSON "
                              "{\"inputs\": \"<base64>\"}");
    size_t lead = 0;
    while (lead < len && (body[lead] == ' ' || body[lead] == '\t' || body[lead] == '\r' ||
                          body[lead] == '\n'))
        lead++;
    if (vs_image_sniff(body, len) != VS_IMAGE_UNKNOWN) {
        /* 1. raw image */
    } else if (vs_multipart_is_form(ct)) {
        st = pick_part(ct, body, len, &img, &img_len, &err);
    } else if (lead < len && body[lead] == '{') {
        st = parse_json(r, (const char *)body, len, &p, &decoded, &img_len, &err);
        img = decoded;
    }
    if (st) {
        free(decoded);
        return vs_serve_error(r, c, vs_serve_http_status(st), NULL, NULL, "%s", err.msg);
    }
    if (img_len == 0) {
        free(decoded);
        return vs_serve_error(r, c, 400, NULL, NULL, "the image is empty");
    }

    struct vs_srv_job job = {.data = img, .len = img_len, .filename = ""};
    r->images = 1;
    int bad = -1;
    enum MHD_Result ret;
    st = vs_serve_classify(r, &job, 1, vs_serve_deadline(r), &bad, &err);
    if (r->would_block) {
        ret = MHD_YES;   /* handle_request offloads it */
        goto out;
    }
    if (st) {
        unsigned code = vs_serve_http_status(st);
        if (bad >= 0 && (st == VS_BAD_INPUT || st == VS_UNSUPPORTED || st == VS_TOO_LARGE))
            ret = vs_serve_error(r, c, code, NULL, NULL, "invalid image: %s", err.msg);
        else
            ret = vs_serve_error(r, c, code, NULL, NULL, "%s",
                                 err.msg[0] ? err.msg : vs_status_str(st));
        goto out;
    }
    /* scores[L] = fn(logits[L]); idx[k] = the k best, highest first. */
    const int L = in->num_labels;
    float *scores = malloc((size_t)L * sizeof *scores);
    int *idx = malloc((size_t)L * sizeof *idx);
    struct vs_jbuf b;
    vs_jbuf_init(&b, 0);
    if (!scores || !idx) {
        b.failed = true;
    } else {
        vs_scores_apply(p.fn, vs_serve_job_logits(&job, 0), L, scores);
        int k = vs_topk(scores, L, p.top_k, idx);
        vs_jbuf_puts(&b, "[");
        for (int i = 0; i < k; i++) {
            vs_jbuf_puts(&b, i ? ",{\"label\":" : "{\"label\":");
            vs_jbuf_json_cstr(&b, in->labels[idx[i]]);
            vs_jbuf_puts(&b, ",\"score\":");
            vs_jbuf_json_float(&b, scores[idx[i]]);
            vs_jbuf_puts(&b, "}");
        }
        vs_jbuf_puts(&b, "]");
    }
    free(scores);
    free(idx);
    vs_metrics_inference(s->metrics, r->route, (double)(vs_now_ns() - r->work_t0_ns) / 1e9);
    ret = vs_serve_respond(r, c, 200, "application/json", &b, NULL, NULL);
out:
    vs_serve_jobs_free(s, &job, 1);
    free(decoded);
    return ret;
}
