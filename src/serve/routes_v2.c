/* routes_v2.c: the KServe Open Inference Protocol (v2) over HTTP/JSON.
 *
 *   GET  /v2                        {"name","version","extensions"}
 *   GET  /v2/health/live|ready      {"live":true} / {"ready":bool} (503 when not ready)
 *   GET  /v2/models/{m}             metadata: inputs image BYTES [-1] and
 *                                   pixel_values FP32 [-1,3,H,W]; output logits FP32 [-1,L]
 *   GET  /v2/models/{m}/ready       {"name","ready"}
 *   POST /v2/models/{m}/infer       one input: "image" BYTES (each element a
 *                                   base64 string or data: URL of an encoded image;
 *                                   shape [n] or [n,1]) or "pixel_values" FP32
 *                                   [n,3,H,W] (data flat or nested, row-major);
 *                                   n = 1..32.  Output "logits" FP32 [n,L], or with
 *                                   outputs:[{"name":"logits","parameters":
 *                                   {"classification":K}}] BYTES [n,K] strings
 *                                   "score:index:label" (Triton's classification
 *                                   extension: score is the logit, best first).
 * {m} must be the served model's name (vs_model_info()->name); anything
 * else is 404.  Errors are {"error": "..."} (KServe's key).  Encoded images
 * go through the result cache like every other route; pixel tensors skip it.
 * Handlers run on MHD threads.
 */
#include "server_int.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "b64.h"

#define MAX_ITEMS VS_SRV_MAX_BATCH_FILES

static enum MHD_Result json_answer(struct req *r, struct MHD_Connection *c, unsigned code,
                                   struct vs_jbuf *b)
{
    return vs_serve_respond(r, c, code, "application/json", b, NULL, NULL);
}

/* True when the {model} part of "/v2/models/{model}[suffix]" is the served
 * model; otherwise an error response (503 loading, 404) was queued into *ret. */
static bool model_matches(struct req *r, struct MHD_Connection *c, const char *url,
                          const char *suffix, enum MHD_Result *ret)
{
    struct vs_server *s = r->s;
    if (!vs_serve_model_usable(s)) {
        *ret = vs_serve_error(r, c, 503, NULL, NULL, "model is still loading");
        return false;
    }
    const char *name = url + strlen("/v2/models/");
    size_t n = strlen(name);
    if (n && name[n - 1] == '/') n--;
    size_t sl = strlen(suffix);
    if (n >= sl && !strncmp(name + n - sl, suffix, sl)) n -= sl;
    if (n != strlen(s->info->name) || strncmp(name, s->info->name, n)) {
        *ret = vs_serve_error(r, c, 404, NULL, NULL,
                              "model '%.*s' is not served here (this server serves '%s')",
                              (int)VS_MIN(n, 200), name, s->info->name);
        return false;
    }
    return true;
}

enum MHD_Result vs_serve_v2_get(struct req *r, struct MHD_Connection *c, const char *url)
{
    struct vs_server *s = r->s;
    struct vs_jbuf b;
    vs_jbuf_init(&b, 0);
    enum MHD_Result ret;
    /* Ready as /health/ready is: loaded, serving, device not lost, no
     * pass stalled. */
    const bool stalled = vs_serve_stalled(s, NULL, NULL);
    bool ready = vs_serve_model_usable(s) && !stalled &&
                 atomic_load_explicit(&s->state, memory_order_acquire) == VS_SERVE_READY &&
                 !vs_model_device_lost(s->model, NULL);
    switch (r->route) {
    case VS_ROUTE_V2:
        vs_jbuf_printf(&b, "{\"name\":\"vitserve\",\"version\":\"%s\","
                           "\"extensions\":[\"classification\"]}", VITSERVE_VERSION);
        return json_answer(r, c, 200, &b);
    case VS_ROUTE_V2_LIVE:   /* a stalled pass: not live (a hung device needs a restart) */
        vs_jbuf_puts(&b, stalled ? "{\"live\":false}" : "{\"live\":true}");
        return vs_serve_respond(r, c, stalled ? 503 : 200, "application/json", &b,
                                stalled ? "Retry-After" : NULL, stalled ? "1" : NULL);
    case VS_ROUTE_V2_READY:
        vs_jbuf_printf(&b, "{\"ready\":%s}", ready ? "true" : "false");
        return vs_serve_respond(r, c, ready ? 200 : 503, "application/json", &b,
                                ready ? NULL : "Retry-After", ready ? NULL : "1");
    case VS_ROUTE_V2_MODEL_READY:
        if (!model_matches(r, c, url, "/ready", &ret)) { vs_jbuf_deinit(&b); return ret; }
        vs_jbuf_puts(&b, "{\"name\":");
        vs_jbuf_json_cstr(&b, s->info->name);
        vs_jbuf_printf(&b, ",\"ready\":%s}", ready ? "true" : "false");
        return vs_serve_respond(r, c, ready ? 200 : 503, "application/json", &b,
                                ready ? NULL : "Retry-After", ready ? NULL : "1");
    default: {
        if (!model_matches(r, c, url, "", &ret)) { vs_jbuf_deinit(&b); return ret; }
        const struct vs_model_info *in = s->info;
        vs_jbuf_puts(&b, "{\"name\":");
        vs_jbuf_json_cstr(&b, in->name);
        vs_jbuf_printf(&b, ",\"platform\":\"vitserve\",\"inputs\":["
                           "{\"name\":\"image\",\"datatype\":\"BYTES\",\"shape\":[-1]},"
                           "{\"name\":\"pixel_values\",\"datatype\":\"FP32\","
                           "\"shape\":[-1,3,%d,%d]}],"
                           "\"outputs\":[{\"name\":\"logits\",\"datatype\":\"FP32\","
                           "\"shape\":[-1,%d]}]}",
                       in->image_height, in->image_width, in->num_labels);
        return json_answer(r, c, 200, &b);
    }
    }
}

#define FLAT_TOO_MANY (-1L)
#define FLAT_TOO_DEEP (-3L)

/* Flattens nested arrays depth-first (row-major) into out[] (at most max
 * leaves; out NULL only counts); returns the count, FLAT_TOO_MANY past max
 * or FLAT_TOO_DEEP for nesting over 8. */
static long flatten(json_t *v, json_t **out, long max, long n, int depth)
{
    if (!json_is_array(v)) {
        if (n >= max) return FLAT_TOO_MANY;
        if (out) out[n] = v;
        return n + 1;
    }
    if (depth > 8) return FLAT_TOO_DEEP;
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e) {
        n = flatten(e, out, max, n, depth + 1);
        if (n < 0) return n;
    }
    return n;
}

/* shape as integers; false if not an array of 1..8 non-negative integers. */
static bool read_shape(json_t *shape, long *dims, int *nd)
{
    if (!json_is_array(shape) || json_array_size(shape) < 1 || json_array_size(shape) > 8)
        return false;
    *nd = (int)json_array_size(shape);
    for (int i = 0; i < *nd; i++) {
        json_t *d = json_array_get(shape, (size_t)i);
        if (!json_is_integer(d) || json_integer_value(d) < 0 || json_integer_value(d) > (1L << 30))
            return false;
        dims[i] = (long)json_integer_value(d);
    }
    return true;
}

/* Request parts after validation. */
struct v2_req {
    int n;                 /* batch */
    bool pixels;           /* FP32 pixel_values (else BYTES images) */
    int classify_k;        /* 0: logits as FP32 */
    json_t *id;            /* borrowed "id" */
};

static enum vs_status parse_outputs(json_t *outputs, int L, struct v2_req *q, struct vs_err *err)
{
    if (!outputs || json_is_null(outputs)) return VS_OK;
    if (!json_is_array(outputs))
        return vs_err_set(err, VS_BAD_INPUT, "\"outputs\" must be an array");
    size_t i;
    json_t *o;
    json_array_foreach(outputs, i, o) {
        json_t *name = json_object_get(o, "name");
        if (!json_is_string(name) || strcmp(json_string_value(name), "logits"))
            return vs_err_set(err, VS_BAD_INPUT, "outputs[%zu]: unknown output %s%s%s (this "
                              "model has one output, \"logits\")", i,
                              json_is_string(name) ? "'" : "",
                              json_is_string(name) ? json_string_value(name) : "without a name",
                              json_is_string(name) ? "'" : "");
        json_t *p = json_object_get(o, "parameters");
        json_t *k = json_is_object(p) ? json_object_get(p, "classification") : NULL;
        if (k && !json_is_null(k)) {
            if (!json_is_integer(k) || json_integer_value(k) < 1)
                return vs_err_set(err, VS_BAD_INPUT,
                                  "outputs[%zu]: \"classification\" must be an integer >= 1", i);
            q->classify_k = (int)VS_MIN(json_integer_value(k), (json_int_t)L);
        }
    }
    return VS_OK;
}

/* Renders the outputs for logits[n][L]. */
static void render_outputs(struct vs_jbuf *b, const struct vs_model_info *in,
                           const struct v2_req *q, const float *const *rows)
{
    const int L = in->num_labels;
    vs_jbuf_puts(b, "{\"model_name\":");
    vs_jbuf_json_cstr(b, in->name);
    vs_jbuf_puts(b, ",\"model_version\":\"1\"");
    if (json_is_string(q->id)) {
        vs_jbuf_puts(b, ",\"id\":");
        vs_jbuf_json_str(b, json_string_value(q->id), json_string_length(q->id));
    }
    if (!q->classify_k) {
        /* logits FP32 [n, L], row-major */
        vs_jbuf_printf(b, ",\"outputs\":[{\"name\":\"logits\",\"datatype\":\"FP32\","
                          "\"shape\":[%d,%d],\"data\":[", q->n, L);
        for (int i = 0; i < q->n; i++)
            for (int j = 0; j < L; j++) {
                if (i || j) vs_jbuf_puts(b, ",");
                vs_jbuf_json_float(b, rows[i][j]);
            }
        vs_jbuf_puts(b, "]}]}");
        return;
    }
    /* classification BYTES [n, K]: "logit:index:label", best first */
    int *idx = malloc((size_t)q->classify_k * sizeof *idx);
    if (!idx) { b->failed = true; return; }
    vs_jbuf_printf(b, ",\"outputs\":[{\"name\":\"logits\",\"datatype\":\"BYTES\","
                      "\"shape\":[%d,%d],\"data\":[", q->n, q->classify_k);
    struct vs_jbuf item;
    for (int i = 0; i < q->n; i++) {
        int k = vs_topk(rows[i], L, q->classify_k, idx);
        for (int j = 0; j < k; j++) {
            vs_jbuf_init(&item, 0);
            vs_jbuf_printf(&item, "%.9g:%d:", (double)rows[i][idx[j]], idx[j]);
            vs_jbuf_puts(&item, in->labels[idx[j]]);
            if (i || j) vs_jbuf_puts(b, ",");
            if (item.failed) b->failed = true;
            else vs_jbuf_json_str(b, item.data, item.len);
            vs_jbuf_deinit(&item);
        }
    }
    free(idx);
    vs_jbuf_puts(b, "]}]}");
}

enum MHD_Result vs_serve_v2_infer(struct req *r, struct MHD_Connection *c, const char *url)
{
    struct vs_server *s = r->s;
    enum MHD_Result ret;
    if (!model_matches(r, c, url, "/infer", &ret)) return ret;
    const struct vs_model_info *in = s->info;
    const int L = in->num_labels;
    struct vs_err err = {0};
    enum vs_status st = VS_OK;
    struct v2_req q = {0};
    json_error_t je;
    json_t *doc = NULL;
    json_t **leaves = NULL;
    float *pixels = NULL, *logits = NULL;
    struct vs_srv_job *jobs = NULL;
    uint8_t **decoded = NULL;
    const float **rows = NULL;
    long nleaves = 0;
    /* At most MAX_ITEMS images of pixel values plus the request's few
     * other fields: a body with more values is refused before jansson
     * allocates for each (~40-100 bytes a value). */
    const char *body = r->body.data ? r->body.data : "";
    const size_t nvalues = vs_serve_json_values(body, r->body.len);
    const size_t max_values = (size_t)MAX_ITEMS * s->in_floats + 1024;
    if (nvalues > max_values) {
        st = vs_err_set(&err, VS_TOO_LARGE, "JSON body holds %zu values, more than %d images of "
                        "%zu pixel values and the request's other fields (%zu)",
                        nvalues, MAX_ITEMS, s->in_floats, max_values);
        goto fail;
    }
    doc = json_loadb(body, r->body.len, JSON_REJECT_DUPLICATES, &je);
    if (!doc) {
        st = vs_err_set(&err, VS_BAD_INPUT, "request body is not valid JSON: line %d: %s",
                        je.line, je.text);
        goto fail;
    }
    json_t *inputs = json_object_get(doc, "inputs");
    if (!json_is_array(inputs) || json_array_size(inputs) != 1) {
        st = vs_err_set(&err, VS_BAD_INPUT, "\"inputs\" must be an array of exactly one tensor "
                                            "(\"image\" BYTES or \"pixel_values\" FP32)");
        goto fail;
    }
    q.id = json_object_get(doc, "id");
    if ((st = parse_outputs(json_object_get(doc, "outputs"), L, &q, &err))) goto fail;
    json_t *t = json_array_get(inputs, 0);
    const char *name = json_string_value(json_object_get(t, "name"));
    const char *dtype = json_string_value(json_object_get(t, "datatype"));
    long dims[8];
    int nd = 0;
    if (!name || !dtype) {
        st = vs_err_set(&err, VS_BAD_INPUT, "inputs[0] needs \"name\" and \"datatype\" strings");
        goto fail;
    }
    if (!read_shape(json_object_get(t, "shape"), dims, &nd)) {
        st = vs_err_set(&err, VS_BAD_INPUT, "inputs[0] '%.64s': \"shape\" must be an array of 1 "
                                            "to 8 non-negative integers", name);
        goto fail;
    }
    if (!strcmp(name, "image")) {
        if (strcmp(dtype, "BYTES")) {
            st = vs_err_set(&err, VS_BAD_INPUT, "input 'image' has datatype BYTES, not '%.32s'",
                            dtype);
            goto fail;
        }
        if (!((nd == 1) || (nd == 2 && dims[1] == 1)) || dims[0] < 1 || dims[0] > MAX_ITEMS) {
            st = vs_err_set(&err, VS_BAD_INPUT, "input 'image': shape must be [n] or [n,1] with "
                                                "n from 1 to %d", MAX_ITEMS);
            goto fail;
        }
        q.n = (int)dims[0];
    } else if (!strcmp(name, "pixel_values")) {
        if (strcmp(dtype, "FP32")) {
            st = vs_err_set(&err, VS_BAD_INPUT,
                            "input 'pixel_values' has datatype FP32, not '%.32s'", dtype);
            goto fail;
        }
        if (nd != 4 || dims[0] < 1 || dims[0] > MAX_ITEMS || dims[1] != 3 ||
            dims[2] != in->image_height || dims[3] != in->image_width) {
            st = vs_err_set(&err, VS_BAD_INPUT, "input 'pixel_values': shape must be [n,3,%d,%d] "
                                                "with n from 1 to %d", in->image_height,
                            in->image_width, MAX_ITEMS);
            goto fail;
        }
        q.n = (int)dims[0];
        q.pixels = true;
    } else {
        st = vs_err_set(&err, VS_BAD_INPUT, "unknown input '%.64s' (this model takes 'image' "
                                            "BYTES or 'pixel_values' FP32)", name);
        goto fail;
    }
    /* data: flat or nested, exactly prod(shape) elements. */
    long want = q.pixels ? (long)q.n * (long)s->in_floats : q.n;
    json_t *data = json_object_get(t, "data");
    /* Count first: the shape alone must not make us allocate (a 100-byte
     * request declaring [32,3,H,W] would cost 8 bytes per element). */
    nleaves = json_is_array(data) ? flatten(data, NULL, want, 0, 0) : -2;
    if (nleaves == want && want >= 0) {   /* (flatten's failure codes are negative) */
        leaves = malloc((size_t)want * sizeof *leaves);
        if (!leaves) { st = vs_err_set(&err, VS_NOMEM, "out of memory"); goto fail; }
        flatten(data, leaves, want, 0, 0);
    }
    if (nleaves != want) {
        st = vs_err_set(&err, VS_BAD_INPUT,
                        "input '%s': \"data\" must be an array of %ld elements (the product of "
                        "its shape)%s", name, want,
                        nleaves == FLAT_TOO_MANY   ? "; it has more"
                        : nleaves == FLAT_TOO_DEEP ? ", nested at most 8 levels deep"
                                                   : "");
        goto fail;
    }
    logits = malloc((size_t)q.n * (size_t)L * sizeof *logits);
    rows = calloc((size_t)q.n, sizeof *rows);
    if (!logits || !rows) { st = vs_err_set(&err, VS_NOMEM, "out of memory"); goto fail; }
    r->images = q.n;
    if (q.pixels) {
        /* pixels[n][3][H][W] straight to the batcher (no cache). */
        pixels = malloc((size_t)want * sizeof *pixels);
        if (!pixels) { st = vs_err_set(&err, VS_NOMEM, "out of memory"); goto fail; }
        for (long i = 0; i < want; i++) {
            if (!json_is_number(leaves[i])) {
                st = vs_err_set(&err, VS_BAD_INPUT, "input 'pixel_values': element %ld is not a "
                                                    "number", i);
                goto fail;
            }
            pixels[i] = (float)json_number_value(leaves[i]);
        }
        st = vs_serve_run_pixels(r, pixels, q.n, logits, vs_serve_deadline(r), &err);
        if (st) goto fail;
        for (int i = 0; i < q.n; i++) rows[i] = logits + (size_t)i * (size_t)L;
    } else {
        jobs = calloc((size_t)q.n, sizeof *jobs);
        decoded = calloc((size_t)q.n, sizeof *decoded);
        if (!jobs || !decoded) { st = vs_err_set(&err, VS_NOMEM, "out of memory"); goto fail; }
        for (int i = 0; i < q.n; i++) {
            if (!json_is_string(leaves[i])) {
                st = vs_err_set(&err, VS_BAD_INPUT, "input 'image': element %d is not a string "
                                                    "(base64 of an encoded image)", i);
                goto fail;
            }
            size_t len = 0;
            st = vs_serve_b64_decode(json_string_value(leaves[i]), json_string_length(leaves[i]),
                                     s->cfg.max_upload_bytes, &decoded[i], &len, &err);
            if (!st && !len) st = vs_err_set(&err, VS_BAD_INPUT, "the image is empty");
            if (st) { vs_err_prefix(&err, "input 'image' element %d", i); goto fail; }
            jobs[i].data = decoded[i];
            jobs[i].len = len;
            jobs[i].filename = "";
        }
        int bad = -1;
        st = vs_serve_classify(r, jobs, q.n, vs_serve_deadline(r), &bad, &err);
        if (st) {
            if (bad >= 0) vs_err_prefix(&err, "input 'image' element %d", bad);
            goto fail;
        }
        for (int i = 0; i < q.n; i++) rows[i] = vs_serve_job_logits(jobs, i);
    }
    struct vs_jbuf b;
    vs_jbuf_init(&b, 0);
    render_outputs(&b, in, &q, rows);
    vs_metrics_inference(s->metrics, r->route, (double)(vs_now_ns() - r->work_t0_ns) / 1e9);
    ret = vs_serve_respond(r, c, 200, "application/json", &b, NULL, NULL);
    goto out;
fail:
    if (r->would_block)
        ret = MHD_YES;   /* handle_request offloads it */
    else
        ret = vs_serve_error(r, c, vs_serve_http_status(st), NULL, NULL, "%s",
                             err.msg[0] ? err.msg : vs_status_str(st));
out:
    if (jobs) vs_serve_jobs_free(s, jobs, q.n);
    if (decoded)
        for (int i = 0; i < q.n; i++) free(decoded[i]);
    free(decoded);
    free(jobs);
    free(rows);
    free(logits);
    free(pixels);
    free(leaves);
    json_decref(doc);
    return ret;
}
