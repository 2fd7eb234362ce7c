/* server.c: the HTTP server — libmicrohttpd daemon, routes, the per-image
 * pipeline (hash -> cache -> decode/preprocess -> batcher -> scores), the
 * model-loading thread and graceful shutdown.  Public contract in serve.h,
 * wire contract in docs/http-api.md.
 *
 * Threads.
 *  - MHD threads run handle_request(): by default one thread per connection
 *    (--http-threads 0), else a pool of N epoll threads.  A predict request
 *    decodes and preprocesses its images on that thread (outside any lock),
 *    queues them in the batcher and blocks on the batcher's condition
 *    variable until its forward pass is done.  Blocking is what makes the
 *    code simple; the price is one thread per waiting request, bounded by
 *    --max-connections (docs/batcher.md discusses the choice).
 *  - The loader thread loads the model, runs one warm-up forward, creates
 *    the batcher and then publishes `loaded` and state READY (release
 *    stores).  HTTP threads read `loaded` with acquire loads before touching
 *    the model, so model/info/batcher are immutable and safely visible.
 *  - The batcher thread runs compute_fn() (the only caller of
 *    vs_model_forward, as model.h requires) and observe_fn().
 *  - The main (CLI) thread calls start/state/drain/destroy.
 * Invariant: `inflight` counts requests between their first handler call and
 * MHD's completion callback; drain waits for it to reach zero.
 */
#include "serve.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "batcher.h"
#include "image/image.h"
#include "jbuf.h"
#include "metrics.h"
#include "multipart.h"
#include "rcache.h"
#include "slog.h"

#define MAX_TOP_K 20        /* the original app's bound on top_k */
#define MAX_BATCH_FILES 32  /* /predict/batch: at most this many images */
#define MAX_PARTS 64        /* multipart parts parsed per request */

struct vs_server {
    struct vs_serve_config cfg;
    char host[256];
    char model_spec[4096];
    struct MHD_Daemon *mhd;
    int port;
    atomic_int state;              /* enum vs_serve_state */
    atomic_bool loaded;            /* model/info/batcher published (stays true) */
    struct vs_err load_err;        /* written by the loader before FAILED */
    pthread_t loader;
    bool loader_started;
    /* Valid once state >= READY (published by the loader): */
    struct vs_model *model;
    const struct vs_model_info *info;
    struct vs_batcher *batcher;
    size_t in_floats;              /* 3*H*W */
    uint8_t model_key[32];         /* SHA-256 of the model name (cache key part) */
    /* Always valid: */
    struct vs_rcache *cache;
    struct vs_metrics *metrics;
    atomic_int inflight;
    atomic_ullong next_id;
    uint64_t id_seed;
    double started_wall;
};

/* Per-request state, MHD's *con_cls. */
struct req {
    struct vs_server *s;
    uint64_t t0_ns;                /* headers received */
    enum vs_metrics_route route;
    char method[16];
    char id[72];                   /* request id (client's X-Request-ID or generated) */
    char client[64];
    struct vs_jbuf body;           /* raw body, capped at --max-upload-bytes */
    bool responded;                /* a response was queued */
    int status;
    size_t bytes_out;
    int cache_hit;                 /* -1 n/a, 0 miss, 1 every image from the cache */
    int images;
    int batch_size;                /* largest forward pass this request's images ran in */
};

/* ---- small helpers ---------------------------------------------------- */

/* The one place that maps an engine status to an HTTP status. */
static unsigned http_status_of(enum vs_status st)
{
    switch (st) {
    case VS_OK: return 200;
    case VS_BAD_INPUT: return 400;
    case VS_NOT_FOUND: return 404;
    case VS_TOO_LARGE: return 413;
    case VS_UNSUPPORTED: return 415;
    case VS_BUSY: return 429;
    case VS_TIMEOUT: return 504;
    case VS_NOMEM: case VS_IO: case VS_BACKEND: default: return 500;
    }
}

static double elapsed_s(uint64_t t0_ns)
{
    return (double)(vs_now_ns() - t0_ns) / 1e9;
}

static enum vs_serve_state get_state(const struct vs_server *s)
{
    return (enum vs_serve_state)atomic_load_explicit(&((struct vs_server *)s)->state,
                                                     memory_order_acquire);
}

/* Model, batcher and info are usable: the loader published them (acquire
 * pairs with its release store), whether or not we are draining now. */
static bool model_usable(const struct vs_server *s)
{
    return atomic_load_explicit(&((struct vs_server *)s)->loaded, memory_order_acquire);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) msg[--n] = '\0';
    vs_slog_kv(VS_LOG_WARN, "libmicrohttpd", "detail", msg);
}

/* Queues a response with the common headers; takes ownership of body. */
static enum MHD_Result respond(struct req *r, struct MHD_Connection *c, unsigned status,
                               const char *content_type, struct vs_jbuf *body,
                               const char *extra_name, const char *extra_value)
{
    size_t len = 0;
    char *data = vs_jbuf_take(body, &len);
    vs_jbuf_deinit(body);
    if (!data) {
        /* Could not build the body: answer a fixed 500. */
        static const char oom[] = "{\"detail\":\"internal error: out of memory\"}";
        data = strdup(oom);
        if (!data) return MHD_NO;
        len = strlen(data);
        status = 500;
        content_type = "application/json";
    }
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, data, MHD_RESPMEM_MUST_FREE);
    if (!resp) { free(data); return MHD_NO; }
    MHD_add_response_header(resp, "Content-Type", content_type);
    MHD_add_response_header(resp, "X-Request-ID", r->id);
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    if (extra_name) MHD_add_response_header(resp, extra_name, extra_value);
    if (get_state(r->s) == VS_SERVE_DRAINING)
        MHD_add_response_header(resp, "Connection", "close");
    enum MHD_Result ret = MHD_queue_response(c, status, resp);
    MHD_destroy_response(resp);
    r->responded = true;
    r->status = (int)status;
    r->bytes_out = len;
    return ret;
}

/* {"detail": "..."} with the given status; Retry-After on 429/503. */
static enum MHD_Result respond_error(struct req *r, struct MHD_Connection *c, unsigned status,
                                     const char *extra_name, const char *extra_value,
                                     const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static enum MHD_Result respond_error(struct req *r, struct MHD_Connection *c, unsigned status,
                                     const char *extra_name, const char *extra_value,
                                     const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    struct vs_jbuf b;
    vs_jbuf_init(&b, 0);
    vs_jbuf_puts(&b, "{\"detail\":");
    vs_jbuf_json_cstr(&b, msg);
    vs_jbuf_puts(&b, "}");
    if (!extra_name && (status == 429 || status == 503)) {
        extra_name = "Retry-After";
        extra_value = "1";
    }
    if (status >= 500)
        vs_slog_kv(VS_LOG_WARN, "request failed", "detail", msg);
    return respond(r, c, status, "application/json", &b, extra_name, extra_value);
}

/* ---- routing ---------------------------------------------------------- */

static enum vs_metrics_route route_of(const char *url)
{
    static const struct { const char *path; enum vs_metrics_route r; } table[] = {
        {"/predict", VS_ROUTE_PREDICT},    {"/predict/batch", VS_ROUTE_PREDICT_BATCH},
        {"/health", VS_ROUTE_HEALTH},      {"/health/live", VS_ROUTE_LIVE},
        {"/health/ready", VS_ROUTE_READY}, {"/metrics", VS_ROUTE_METRICS},
    };
    size_t n = strlen(url);
    if (n > 1 && url[n - 1] == '/') n--; /* "/predict/" == "/predict" */
    for (size_t i = 0; i < VS_ARRAY_LEN(table); i++)
        if (strlen(table[i].path) == n && !strncmp(url, table[i].path, n)) return table[i].r;
    return VS_ROUTE_OTHER;
}

static bool is_post_route(enum vs_metrics_route r)
{
    return r == VS_ROUTE_PREDICT || r == VS_ROUTE_PREDICT_BATCH;
}

/* A client's X-Request-ID is echoed if it is 1..64 printable, quote-free
 * ASCII characters; otherwise a fresh id is generated. */
static void set_request_id(struct req *r, struct MHD_Connection *c)
{
    const char *v = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Request-ID");
    if (v) {
        size_t n = strlen(v);
        bool ok = n >= 1 && n <= 64;
        for (size_t i = 0; ok && i < n; i++)
            ok = v[i] > 0x20 && v[i] < 0x7F && v[i] != '"' && v[i] != '\\';
        if (ok) { memcpy(r->id, v, n + 1); return; }
    }
    unsigned long long k = atomic_fetch_add(&r->s->next_id, 1);
    /* A per-process random seed plus a counter, mixed (splitmix64). */
    uint64_t z = r->s->id_seed + k * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    snprintf(r->id, sizeof r->id, "%016llx", (unsigned long long)z);
}

static void set_client(struct req *r, struct MHD_Connection *c)
{
    snprintf(r->client, sizeof r->client, "?");
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (!ci || !ci->client_addr) return;
    const struct sockaddr *sa = ci->client_addr;
    char ip[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
        inet_ntop(AF_INET, &in->sin_addr, ip, sizeof ip);
        port = ntohs(in->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof ip);
        port = ntohs(in6->sin6_port);
    }
    snprintf(r->client, sizeof r->client, "%s:%d", ip, port);
}

/* ---- GET routes ------------------------------------------------------- */

static const char *state_word(enum vs_serve_state st)
{
    switch (st) {
    case VS_SERVE_LOADING: return "loading";
    case VS_SERVE_READY: return "healthy";
    case VS_SERVE_FAILED: return "failed";
    case VS_SERVE_DRAINING: return "draining";
    }
    return "unknown";
}

static enum MHD_Result handle_health(struct req *r, struct MHD_Connection *c)
{
    struct vs_server *s = r->s;
    enum vs_serve_state st = get_state(s);
    struct vs_jbuf b;
    vs_jbuf_init(&b, 0);
    unsigned code = 200;
    if (r->route == VS_ROUTE_LIVE) {
        vs_jbuf_puts(&b, "{\"status\":\"alive\"}");
    } else if (r->route == VS_ROUTE_READY) {
        code = st == VS_SERVE_READY ? 200 : 503;
        vs_jbuf_printf(&b, "{\"status\":\"%s\"}",
                       st == VS_SERVE_READY ? "ready" : state_word(st));
    } else if (st == VS_SERVE_READY) {
        const struct vs_model_info *in = s->info;
        vs_jbuf_puts(&b, "{\"status\":\"healthy\",\"model_loaded\":true,\"gpu_available\":");
        vs_jbuf_puts(&b, in->backend && !strncmp(in->backend, "cuda", 4) ? "true" : "false");
        vs_jbuf_puts(&b, ",\"model\":");
        vs_jbuf_json_cstr(&b, in->name);
        vs_jbuf_puts(&b, ",\"backend\":");
        vs_jbuf_json_cstr(&b, in->backend);
        vs_jbuf_puts(&b, ",\"device\":");
        vs_jbuf_json_cstr(&b, in->device_name);
        vs_jbuf_puts(&b, ",\"precision\":");
        vs_jbuf_json_cstr(&b, vs_precision_name(in->precision));
        vs_jbuf_printf(&b, ",\"num_labels\":%d,\"image_size\":[%d,%d],\"max_batch\":%d,"
                           "\"queue_depth\":%d,\"uptime_s\":%.3f}",
                       in->num_labels, in->image_height, in->image_width, s->cfg.max_batch,
                       vs_batcher_depth(s->batcher), vs_wall_s() - s->started_wall);
    } else {
        code = 503;
        vs_jbuf_printf(&b, "{\"status\":\"%s\",\"model_loaded\":%s", state_word(st),
                       model_usable(s) ? "true" : "false");
        if (st == VS_SERVE_FAILED) {
            vs_jbuf_puts(&b, ",\"detail\":");
            vs_jbuf_json_cstr(&b, s->load_err.msg);
        }
        vs_jbuf_puts(&b, "}");
    }
    return respond(r, c, code, "application/json", &b,
                   code == 503 ? "Retry-After" : NULL, code == 503 ? "1" : NULL);
}

static enum MHD_Result handle_metrics(struct req *r, struct MHD_Connection *c)
{
    struct vs_server *s = r->s;
    struct vs_metrics_extra x = {0};
    struct vs_rcache_stats cs;
    vs_rcache_stats(s->cache, &cs);
    x.cache_hits = cs.hits;
    x.cache_misses = cs.misses;
    x.cache_evictions = cs.evictions;
    x.cache_expirations = cs.expirations;
    x.cache_coalesced = cs.waits;
    x.cache_entries = cs.entries;
    x.cache_capacity = cs.capacity;
    x.max_batch = s->cfg.max_batch;
    x.model = x.backend = x.device = x.precision = "";
    if (model_usable(s)) {
        x.ready = get_state(s) == VS_SERVE_READY;
        x.queue_depth = vs_batcher_depth(s->batcher);
        x.model = s->info->name;
        x.backend = s->info->backend;
        x.device = s->info->device_name;
        x.precision = vs_precision_name(s->info->precision);
        x.num_labels = s->info->num_labels;
    }
    struct vs_jbuf b;
    vs_jbuf_init(&b, 0);
    vs_metrics_render(s->metrics, &x, &b);
    return respond(r, c, 200, "text/plain; version=0.0.4; charset=utf-8", &b, NULL, NULL);
}

/* ---- the inference pipeline ------------------------------------------- */

/* One uploaded image through the pipeline. */
struct image_job {
    const uint8_t *data;
    size_t len;
    const char *filename;          /* for messages ("" for a raw body) */
    uint8_t key[32];
    int alias;                     /* index of an identical earlier image, or -1 */
    int state;                     /* VS_RCACHE_* */
    struct vs_rcache_entry *entry;
    bool filled;                   /* claim completed (fill or fail) */
    float *pixels;                 /* [3][H][W] for a claimed image */
    float *logits;                 /* [num_labels] */
    struct vs_batch_item item;
};

/* Decodes and preprocesses one image into job->pixels (this thread). */
static enum vs_status prepare_image(struct vs_server *s, struct image_job *j,
                                    struct vs_err *err)
{
    const struct vs_model_info *in = s->info;
    struct vs_image_limits lim = {.max_pixels = s->cfg.max_pixels};
    struct vs_image img = {0};
    enum vs_status st = vs_image_decode(j->data, j->len, &lim, &img, err);
    if (st) return st;
    const struct vs_preproc *p = &in->preproc;
    int h = p->do_resize ? p->height : img.height;
    int w = p->do_resize ? p->width : img.width;
    if (h != in->image_height || w != in->image_width) {
        vs_image_deinit(&img);
        return vs_err_set(err, VS_BAD_INPUT,
                          "image is %dx%d after preprocessing but the model takes %dx%d",
                          w, h, in->image_width, in->image_height);
    }
    j->pixels = malloc(s->in_floats * sizeof(float));
    if (!j->pixels) {
        vs_image_deinit(&img);
        return vs_err_set(err, VS_NOMEM, "out of memory for the input tensor");
    }
    st = vs_image_preprocess(&img, p, j->pixels, err);
    vs_image_deinit(&img);
    return st;
}

/* Releases everything a job holds; a claim not yet completed is failed
 * with *why so that single-flight waiters are released. */
static void job_cleanup(struct vs_server *s, struct image_job *j, const struct vs_err *why)
{
    if (j->entry) {
        if (j->state == VS_RCACHE_CLAIMED && !j->filled) vs_rcache_fail(s->cache, j->entry, why);
        vs_rcache_release(s->cache, j->entry);
        j->entry = NULL;
    }
    free(j->pixels);
    free(j->logits);
    j->pixels = j->logits = NULL;
}

/* Runs n images through cache + batcher.  On success every job has
 * logits; *from_cache tells whether none of them needed a forward pass.
 * On failure *bad is the index of the image at fault (or -1). */
static enum vs_status classify_jobs(struct vs_server *s, struct req *r, struct image_job *jobs,
                                    int n, uint64_t deadline_ns, int *bad, struct vs_err *err)
{
    const struct vs_model_info *in = s->info;
    const int L = in->num_labels;
    uint64_t now_ms = (uint64_t)vs_now_ms();
    *bad = -1;
    int claimed = 0, from_cache = 1;

    /* 1. Key every image (SHA-256 of the bytes, bound to the model), fold
     *    duplicates within the request, look each key up once. */
    for (int i = 0; i < n; i++) {
        struct image_job *j = &jobs[i];
        uint8_t both[64];
        vs_sha256(j->data, j->len, both);
        memcpy(both + 32, s->model_key, 32);
        vs_sha256(both, sizeof both, j->key);
        j->alias = -1;
        for (int k = 0; k < i && j->alias < 0; k++)
            if (!memcmp(jobs[k].key, j->key, 32)) j->alias = k;
        if (j->alias >= 0) continue;
        j->logits = malloc((size_t)L * sizeof(float));
        if (!j->logits) return vs_err_set(err, VS_NOMEM, "out of memory for %d logits", L);
        int state = vs_rcache_lookup(s->cache, j->key, now_ms, &j->entry);
        if (state < 0) return vs_err_set(err, VS_NOMEM, "result cache: out of memory");
        j->state = state;
        if (state == VS_RCACHE_CLAIMED) claimed++;
        if (state != VS_RCACHE_HIT) from_cache = 0;
    }

    /* 2. Decode + preprocess our claims here, outside any lock. */
    struct vs_batch_item **items = claimed ? calloc((size_t)claimed, sizeof *items) : NULL;
    if (claimed && !items) return vs_err_set(err, VS_NOMEM, "out of memory");
    int ni = 0;
    for (int i = 0; i < n; i++) {
        struct image_job *j = &jobs[i];
        if (j->alias >= 0 || j->state != VS_RCACHE_CLAIMED) continue;
        enum vs_status st = prepare_image(s, j, err);
        if (st) {
            *bad = i;
            vs_rcache_fail(s->cache, j->entry, err);
            j->filled = true;
            free(items);
            return st;
        }
        j->item.in = j->pixels;
        j->item.out = j->logits;
        j->item.deadline_ns = deadline_ns;
        items[ni++] = &j->item;
    }

    /* 3. One group into the batcher; wait for its forward passes. */
    if (ni > 0) {
        enum vs_status st = vs_batcher_submit(s->batcher, items, ni, err);
        if (st) { free(items); return st; }
        vs_batcher_wait(s->batcher, items, ni);
        free(items);
        /* Complete every claim with its own outcome (waiters of a computed
         * image get it even if another image of this request failed). */
        enum vs_status first = VS_OK;
        for (int i = 0; i < n; i++) {
            struct image_job *j = &jobs[i];
            if (j->alias >= 0 || j->state != VS_RCACHE_CLAIMED) continue;
            r->batch_size = VS_MAX(r->batch_size, j->item.batch_size);
            free(j->pixels);
            j->pixels = NULL;
            struct vs_err e = {0};
            if (j->item.status) {
                st = vs_err_set(&e, j->item.status, "%s", j->item.msg);
                vs_rcache_fail(s->cache, j->entry, &e);
            } else {
                st = vs_rcache_fill(s->cache, j->entry, j->logits, L, (uint64_t)vs_now_ms(), &e);
            }
            j->filled = true;
            if (st && !first) {
                first = st;
                *bad = i;
                if (err) *err = e;
            }
        }
        if (first) return first;
    } else {
        free(items);
    }

    /* 4. Hits and single-flight waits (only now: we hold no open claim). */
    for (int i = 0; i < n; i++) {
        struct image_job *j = &jobs[i];
        if (j->alias >= 0 || j->state == VS_RCACHE_CLAIMED) continue;
        if (j->state == VS_RCACHE_PENDING) {
            enum vs_status st = vs_rcache_wait(s->cache, j->entry, deadline_ns, err);
            if (st) { *bad = i; return st; }
        }
        int m = 0;
        const float *v = vs_rcache_values(j->entry, &m);
        if (m != L) return vs_err_set(err, VS_BACKEND, "cache entry has %d values, not %d", m, L);
        memcpy(j->logits, v, (size_t)L * sizeof(float));
    }
    r->cache_hit = from_cache;
    return VS_OK;
}

/* Appends one {"predictions":[...],"cached":..,"processing_time_ms":..,
 * "model":..} object for logits[num_labels]. */
static void render_result(struct vs_jbuf *b, const struct vs_model_info *in,
                          const float *logits, int top_k, bool cached, double ms)
{
    const int L = in->num_labels;
    float *scores = malloc((size_t)L * sizeof *scores); /* [num_labels] */
    int idx[MAX_TOP_K];
    if (!scores) { b->failed = true; return; }
    vs_scores_apply(in->default_score_fn, logits, L, scores);
    int k = vs_topk(scores, L, top_k, idx);
    vs_jbuf_puts(b, "{\"predictions\":[");
    for (int i = 0; i < k; i++) {
        vs_jbuf_puts(b, i ? ",{\"label\":" : "{\"label\":");
        vs_jbuf_json_cstr(b, in->labels[idx[i]]);
        vs_jbuf_puts(b, ",\"confidence\":");
        vs_jbuf_json_float(b, scores[idx[i]]);
        vs_jbuf_puts(b, "}");
    }
    vs_jbuf_printf(b, "],\"cached\":%s,\"processing_time_ms\":%.3f,\"model\":",
                   cached ? "true" : "false", ms);
    vs_jbuf_json_cstr(b, in->name);
    vs_jbuf_puts(b, "}");
    free(scores);
}

/* Parses ?top_k= (default 5; 1..min(20, num_labels)).  0 on success, else
 * the HTTP status already queued is signalled by returning -1. */
static int parse_top_k(struct vs_server *s, struct MHD_Connection *c, int *out, char *why,
                       size_t why_size)
{
    const char *v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "top_k");
    int maxk = VS_MIN(MAX_TOP_K, s->info->num_labels);
    *out = VS_MIN(5, maxk);
    if (!v) return 0;
    char *end = NULL;
    errno = 0;
    long k = strtol(v, &end, 10);
    if (!*v || *end || errno || k < 1 || k > maxk) {
        snprintf(why, why_size, "top_k must be an integer from 1 to %d (got '%.40s')", maxk, v);
        return -1;
    }
    *out = (int)k;
    return 0;
}

static enum MHD_Result handle_predict(struct req *r, struct MHD_Connection *c)
{
    struct vs_server *s = r->s;
    const bool batch = r->route == VS_ROUTE_PREDICT_BATCH;
    const uint64_t t_start = vs_now_ns();
    const uint64_t deadline = r->t0_ns + (uint64_t)(s->cfg.request_timeout_s * 1e9);
    char why[256];
    int top_k;
    if (parse_top_k(s, c, &top_k, why, sizeof why))
        return respond_error(r, c, 400, NULL, NULL, "%s", why);

    /* Find the image bytes: multipart fields, or the raw body. */
    const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
    const char *field = batch ? "files" : "file";
    struct vs_mp_part *parts = NULL;
    size_t nparts = 0;
    struct image_job *jobs = NULL;
    int n = 0;
    enum MHD_Result ret;
    struct vs_err err = {0};
    const uint8_t *body = (const uint8_t *)r->body.data;
    size_t body_len = r->body.len;
    if (vs_multipart_is_form(ct)) {
        char boundary[VS_MP_MAX_BOUNDARY + 1];
        if (vs_multipart_boundary(ct, boundary, sizeof boundary, &err))
            return respond_error(r, c, 400, NULL, NULL, "%s", err.msg);
        parts = calloc(MAX_PARTS, sizeof *parts);
        if (!parts) return respond_error(r, c, 500, NULL, NULL, "out of memory");
        if (vs_multipart_parse(body ? body : (const uint8_t *)"", body_len, boundary, parts,
                               MAX_PARTS, &nparts, &err)) {
            free(parts);
            return respond_error(r, c, 400, NULL, NULL, "%s", err.msg);
        }
        for (size_t i = 0; i < nparts; i++)
            if (!strcmp(parts[i].name, field)) n++;
    } else if (!batch && body_len > 0) {
        n = 1;
    }
    if (n == 0) {
        free(parts);
        if (batch)
            return respond_error(r, c, 422, NULL, NULL,
                                 "missing form field 'files' (multipart/form-data, 1 to %d images)",
                                 MAX_BATCH_FILES);
        return respond_error(r, c, 422, NULL, NULL,
                             "missing form field 'file' (send multipart/form-data or the image "
                             "bytes as the request body)");
    }
    if (batch && n > MAX_BATCH_FILES) {
        free(parts);
        return respond_error(r, c, 400, NULL, NULL,
                             "too many files: %d (at most %d per request)", n, MAX_BATCH_FILES);
    }
    jobs = calloc((size_t)n, sizeof *jobs);
    if (!jobs) {
        free(parts);
        return respond_error(r, c, 500, NULL, NULL, "out of memory");
    }
    if (parts) {
        int k = 0;
        for (size_t i = 0; i < nparts; i++) {
            if (strcmp(parts[i].name, field)) continue;
            jobs[k].data = parts[i].data;
            jobs[k].len = parts[i].len;
            jobs[k].filename = parts[i].filename;
            k++;
        }
    } else {
        jobs[0].data = body;
        jobs[0].len = body_len;
        jobs[0].filename = "";
    }
    r->images = n;
    for (int i = 0; i < n; i++) {
        if (jobs[i].len == 0) {
            ret = respond_error(r, c, 400, NULL, NULL, "file '%s' is empty", jobs[i].filename);
            goto out;
        }
    }

    int bad = -1;
    enum vs_status st = classify_jobs(s, r, jobs, n, deadline, &bad, &err);
    if (st) {
        unsigned code = http_status_of(st);
        if (bad >= 0 && (st == VS_BAD_INPUT || st == VS_UNSUPPORTED || st == VS_TOO_LARGE)) {
            const char *fn = jobs[bad].filename;
            if (fn[0])
                ret = respond_error(r, c, code, NULL, NULL, "invalid image file '%s': %s", fn,
                                    err.msg);
            else
                ret = respond_error(r, c, code, NULL, NULL, "invalid image: %s", err.msg);
        } else {
            ret = respond_error(r, c, code, NULL, NULL, "%s",
                                err.msg[0] ? err.msg : vs_status_str(st));
        }
        goto out;
    }

    /* Render: one object, or an array in upload order. */
    double ms = (double)(vs_now_ns() - t_start) / 1e6;
    struct vs_jbuf b;
    vs_jbuf_init(&b, 0);
    if (batch) vs_jbuf_puts(&b, "[");
    for (int i = 0; i < n; i++) {
        const struct image_job *j = jobs[i].alias >= 0 ? &jobs[jobs[i].alias] : &jobs[i];
        if (i) vs_jbuf_puts(&b, ",");
        render_result(&b, s->info, j->logits, top_k, j->state != VS_RCACHE_CLAIMED, ms);
    }
    if (batch) vs_jbuf_puts(&b, "]");
    vs_metrics_inference(s->metrics, r->route, elapsed_s(t_start));
    ret = respond(r, c, 200, "application/json", &b, NULL, NULL);

out:
    for (int i = 0; i < n; i++) {
        struct vs_err cancelled;
        vs_err_set(&cancelled, VS_BUSY,
                   "an identical request in flight failed on another image; retry");
        job_cleanup(s, &jobs[i], &cancelled);
    }
    free(jobs);
    free(parts);
    return ret;
}

/* ---- the MHD callbacks ------------------------------------------------ */

static enum MHD_Result handle_request(void *cls, struct MHD_Connection *c, const char *url,
                                      const char *method, const char *version,
                                      const char *upload_data, size_t *upload_size,
                                      void **con_cls)
{
    struct vs_server *s = cls;
    struct req *r = *con_cls;
    (void)version;
    if (!r) {
        /* First call: headers are in, the body is not.  Decide everything
         * that does not need the body now, so a refused upload is never
         * read (MHD closes the connection after an early response). */
        r = calloc(1, sizeof *r);
        if (!r) return MHD_NO;
        r->s = s;
        r->t0_ns = vs_now_ns();
        r->cache_hit = -1;
        r->route = route_of(url);
        snprintf(r->method, sizeof r->method, "%s", method);
        vs_jbuf_init(&r->body, s->cfg.max_upload_bytes ? s->cfg.max_upload_bytes : 1);
        set_request_id(r, c);
        set_client(r, c);
        atomic_fetch_add(&s->inflight, 1);
        *con_cls = r;

        bool is_get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
        bool is_post = !strcmp(method, "POST");
        if (r->route == VS_ROUTE_OTHER)
            return respond_error(r, c, 404, NULL, NULL, "no route for %s %.200s", method, url);
        if (is_post_route(r->route) && !is_post)
            return respond_error(r, c, 405, "Allow", "POST", "method %s not allowed on %s",
                                 method, vs_metrics_route_name(r->route));
        if (!is_post_route(r->route) && !is_get)
            return respond_error(r, c, 405, "Allow", "GET, HEAD", "method %s not allowed on %s",
                                 method, vs_metrics_route_name(r->route));
        if (r->route == VS_ROUTE_METRICS) return handle_metrics(r, c);
        if (!is_post_route(r->route)) return handle_health(r, c);
        if (!model_usable(s)) {
            enum vs_serve_state st = get_state(s);
            return respond_error(r, c, 503, NULL, NULL, "model is %s",
                                 st == VS_SERVE_FAILED ? "not available (loading failed)"
                                                       : "still loading");
        }
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        if (cl) {
            char *end = NULL;
            errno = 0;
            unsigned long long v = strtoull(cl, &end, 10);
            if (end != cl && !*end && !errno) {
                if (v > s->cfg.max_upload_bytes)
                    return respond_error(r, c, 413, NULL, NULL,
                                         "request body of %llu bytes exceeds the limit of %zu bytes",
                                         v, s->cfg.max_upload_bytes);
                /* Reserve the whole body once (no regrowth while it streams). */
                vs_jbuf_add(&r->body, "", 0);
                if (v > 0 && !r->body.failed && r->body.cap < v + 1) {
                    char *d = realloc(r->body.data, (size_t)v + 1);
                    if (d) { r->body.data = d; r->body.cap = (size_t)v + 1; }
                }
            }
        }
        return MHD_YES;
    }
    if (r->responded) {
        /* An early response was queued; swallow whatever still arrives. */
        *upload_size = 0;
        return MHD_YES;
    }
    if (*upload_size) {
        /* Body bytes stream in; past the cap (a chunked or lying upload)
         * the connection is closed at once instead of reading on. */
        if (*upload_size > s->cfg.max_upload_bytes - r->body.len) {
            vs_slog_kv(VS_LOG_INFO, "upload over the limit, closing connection", "request_id",
                       r->id);
            r->status = 413;
            return MHD_NO;
        }
        vs_jbuf_add(&r->body, upload_data, *upload_size);
        if (r->body.failed) {
            r->status = 500;
            return MHD_NO;
        }
        *upload_size = 0;
        return MHD_YES;
    }
    /* Last call: the body is complete. */
    return handle_predict(r, c);
}

static void request_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                              enum MHD_RequestTerminationCode toe)
{
    struct vs_server *s = cls;
    struct req *r = *con_cls;
    (void)c;
    if (!r) return;
    *con_cls = NULL;
    double secs = elapsed_s(r->t0_ns);
    vs_metrics_http(s->metrics, r->method, r->route, r->status, secs);
    if (vs_slog_enabled(VS_LOG_INFO)) {
        struct vs_jbuf f;
        vs_jbuf_init(&f, 0);
        vs_jbuf_puts(&f, ",\"request_id\":");
        vs_jbuf_json_cstr(&f, r->id);
        vs_jbuf_puts(&f, ",\"method\":");
        vs_jbuf_json_cstr(&f, r->method);
        vs_jbuf_printf(&f, ",\"route\":\"%s\",\"status\":%d,\"bytes_in\":%zu,\"bytes_out\":%zu,"
                           "\"ms\":%.3f",
                       vs_metrics_route_name(r->route), r->status, r->body.len, r->bytes_out,
                       secs * 1e3);
        if (r->cache_hit >= 0) vs_jbuf_printf(&f, ",\"cache_hit\":%s", r->cache_hit ? "true" : "false");
        if (r->images) vs_jbuf_printf(&f, ",\"images\":%d", r->images);
        if (r->batch_size) vs_jbuf_printf(&f, ",\"batch_size\":%d", r->batch_size);
        vs_jbuf_puts(&f, ",\"client\":");
        vs_jbuf_json_cstr(&f, r->client);
        if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK)
            vs_jbuf_printf(&f, ",\"terminated\":%d", (int)toe);
        vs_slog(VS_LOG_INFO, "request", &f);
        vs_jbuf_deinit(&f);
    }
    vs_jbuf_deinit(&r->body);
    free(r);
    atomic_fetch_sub(&s->inflight, 1);
}

/* ---- model loading ---------------------------------------------------- */

static enum vs_status compute_fn(void *ctx, const float *in, int n, float *out,
                                 struct vs_err *err)
{
    struct vs_server *s = ctx;
    /* in: [n][3][H][W] -> out: [n][num_labels] logits */
    return vs_model_forward(s->model, in, n, out, err);
}

static void observe_fn(void *ctx, int n, const double *wait_s)
{
    struct vs_server *s = ctx;
    vs_metrics_batch(s->metrics, n, wait_s);
}

static void *loader_main(void *arg)
{
    struct vs_server *s = arg;
    struct vs_err err = {0};
    struct vs_model *m = NULL;
    struct vs_batcher *b = NULL;
    float *zeros = NULL, *logits = NULL;
    double t0 = vs_now_ms();
    struct vs_model_opts o = s->cfg.model_opts;
    o.max_batch = s->cfg.max_batch;
    o.load_weights = true;
    enum vs_status st = vs_model_load(s->model_spec, &o, &m, &err);
    if (st) goto fail;
    const struct vs_model_info *in = vs_model_info(m);
    if (in->num_channels != 3 || in->num_labels < 1) {
        st = vs_err_set(&err, VS_UNSUPPORTED, "model has %d channels and %d labels (need 3, >= 1)",
                        in->num_channels, in->num_labels);
        goto fail;
    }
    size_t in_floats = (size_t)3 * (size_t)in->image_height * (size_t)in->image_width;
    double t_load = vs_now_ms() - t0;

    /* Warm-up: one forward pass on zeros (first-touch of weights, oneDNN
     * primitive creation) before /health says ready. */
    zeros = calloc(in_floats, sizeof *zeros);
    logits = calloc((size_t)in->num_labels, sizeof *logits);
    if (!zeros || !logits) { st = vs_err_set(&err, VS_NOMEM, "out of memory for warm-up"); goto fail; }
    s->model = m; /* compute_fn reads it; no other thread sees it yet */
    double t1 = vs_now_ms();
    st = vs_model_forward(m, zeros, 1, logits, &err);
    if (st) { vs_err_prefix(&err, "warm-up forward"); goto fail; }
    double t_warm = vs_now_ms() - t1;

    struct vs_batcher_config bc = {
        .max_batch = s->cfg.max_batch, .timeout_ms = s->cfg.batch_timeout_ms,
        .max_queue = s->cfg.max_queue, .in_floats = in_floats,
        .out_floats = (size_t)in->num_labels, .compute = compute_fn, .observe = observe_fn,
        .ctx = s};
    st = vs_batcher_create(&bc, &b, &err);
    if (st) goto fail;
    vs_sha256(in->name, strlen(in->name), s->model_key);
    s->info = in;
    s->in_floats = in_floats;
    s->batcher = b;
    free(zeros);
    free(logits);

    struct vs_jbuf f;
    vs_jbuf_init(&f, 0);
    vs_jbuf_puts(&f, ",\"model\":");
    vs_jbuf_json_cstr(&f, in->name);
    vs_jbuf_puts(&f, ",\"dir\":");
    vs_jbuf_json_cstr(&f, in->dir);
    vs_jbuf_puts(&f, ",\"backend\":");
    vs_jbuf_json_cstr(&f, in->backend);
    vs_jbuf_puts(&f, ",\"device\":");
    vs_jbuf_json_cstr(&f, in->device_name);
    vs_jbuf_printf(&f, ",\"precision\":\"%s\",\"threads\":%d,\"image_size\":[%d,%d],"
                       "\"num_labels\":%d,\"params\":%llu,\"load_ms\":%.1f,\"warmup_ms\":%.1f",
                   vs_precision_name(in->precision), in->threads, in->image_height,
                   in->image_width, in->num_labels, (unsigned long long)in->num_params, t_load,
                   t_warm);
    vs_slog(VS_LOG_INFO, "model ready", &f);
    vs_jbuf_deinit(&f);
    /* Publish: everything above is visible to acquire loads of `loaded`
     * and `state`.  A drain that began meanwhile keeps state DRAINING. */
    atomic_store_explicit(&s->loaded, true, memory_order_release);
    int expect = VS_SERVE_LOADING;
    atomic_compare_exchange_strong_explicit(&s->state, &expect, VS_SERVE_READY,
                                            memory_order_acq_rel, memory_order_acquire);
    return NULL;

fail:
    free(zeros);
    free(logits);
    s->model = NULL;
    vs_model_destroy(m);
    s->load_err = err;
    if (!s->load_err.msg[0]) vs_err_set(&s->load_err, st, "%s", vs_status_str(st));
    vs_slog_kv(VS_LOG_ERROR, "model failed to load", "detail", s->load_err.msg);
    int expect2 = VS_SERVE_LOADING;
    atomic_compare_exchange_strong_explicit(&s->state, &expect2, VS_SERVE_FAILED,
                                            memory_order_acq_rel, memory_order_acquire);
    return NULL;
}

/* ---- life cycle ------------------------------------------------------- */

static uint64_t random_seed(void)
{
    uint64_t seed = vs_now_ns() ^ ((uint64_t)getpid() << 32);
    FILE *f = fopen("/dev/urandom", "rb");
    if (f) {
        uint64_t r;
        if (fread(&r, sizeof r, 1, f) == 1) seed ^= r;
        fclose(f);
    }
    return seed;
}

static void log_config(const struct vs_server *s)
{
    const struct vs_serve_config *c = &s->cfg;
    struct vs_jbuf f;
    vs_jbuf_init(&f, 0);
    vs_jbuf_puts(&f, ",\"model\":");
    vs_jbuf_json_cstr(&f, c->model);
    vs_jbuf_printf(&f, ",\"compute_threads\":%d,\"http_threads\":%d,\"max_connections\":%d,"
                       "\"max_batch\":%d,\"batch_timeout_ms\":%d,\"max_queue\":%d,"
                       "\"request_timeout_s\":%g,\"cache_entries\":%zu,\"cache_ttl_s\":%g,"
                       "\"max_upload_bytes\":%zu,\"max_pixels\":%llu,\"idle_timeout_s\":%d,"
                       "\"precision\":\"%s\"",
                   c->model_opts.threads, c->http_threads, c->max_connections, c->max_batch,
                   c->batch_timeout_ms, c->max_queue, c->request_timeout_s, c->cache_entries,
                   c->cache_ttl_s, c->max_upload_bytes,
                   (unsigned long long)(c->max_pixels ? c->max_pixels : VS_IMAGE_DEFAULT_MAX_PIXELS),
                   c->idle_timeout_s, vs_precision_name(c->model_opts.precision));
    vs_slog(VS_LOG_INFO, "starting", &f);
    vs_jbuf_deinit(&f);
}

enum vs_status vs_serve_start(const struct vs_serve_config *cfg, struct vs_server **out,
                              struct vs_err *err)
{
    if (cfg->max_batch < 1 || cfg->max_queue < 1 || cfg->batch_timeout_ms < 0 ||
        cfg->request_timeout_s <= 0 || cfg->max_connections < 1 || cfg->http_threads < 0 ||
        cfg->port < 0 || cfg->port > 65535 || !cfg->model || !cfg->host)
        return vs_err_set(err, VS_BAD_INPUT, "serve: invalid configuration");
    struct vs_server *s = calloc(1, sizeof *s);
    if (!s) return vs_err_set(err, VS_NOMEM, "serve: out of memory");
    s->cfg = *cfg;
    snprintf(s->host, sizeof s->host, "%s", cfg->host);
    snprintf(s->model_spec, sizeof s->model_spec, "%s", cfg->model);
    s->cfg.host = s->host;
    s->cfg.model = s->model_spec;
    s->id_seed = random_seed();
    s->started_wall = vs_wall_s();
    atomic_init(&s->state, VS_SERVE_LOADING);
    atomic_init(&s->loaded, false);
    atomic_init(&s->inflight, 0);
    atomic_init(&s->next_id, 1);
    enum vs_status st;
    uint64_t ttl_ms = (uint64_t)(cfg->cache_ttl_s * 1000.0);
    if ((st = vs_rcache_create(cfg->cache_entries, ttl_ms, &s->cache, err)) ||
        (st = vs_metrics_create(&s->metrics, err))) {
        vs_serve_destroy(s);
        return st;
    }
    log_config(s);

    /* Resolve the bind address (numeric or a name such as "localhost"). */
    struct addrinfo hints = {.ai_flags = AI_PASSIVE, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    char port_s[16];
    snprintf(port_s, sizeof port_s, "%d", cfg->port);
    int gai = getaddrinfo(s->host, port_s, &hints, &ai);
    if (gai || !ai) {
        st = vs_err_set(err, VS_BAD_INPUT, "serve: cannot resolve --host '%s': %s", s->host,
                        gai_strerror(gai));
        vs_serve_destroy(s);
        return st;
    }
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ITC | MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
    if (cfg->http_threads == 0) flags |= MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL;
    else flags |= MHD_USE_EPOLL;
    struct MHD_OptionItem opts[] = {
        {MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)mhd_log, s},
        {MHD_OPTION_SOCK_ADDR, 0, ai->ai_addr},
        {MHD_OPTION_CONNECTION_LIMIT, (intptr_t)cfg->max_connections, NULL},
        {MHD_OPTION_CONNECTION_TIMEOUT, (intptr_t)cfg->idle_timeout_s, NULL},
        {MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)request_completed, s},
        {MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024, NULL},
        {MHD_OPTION_CONNECTION_MEMORY_LIMIT, 64 * 1024, NULL},
        {cfg->http_threads > 0 ? MHD_OPTION_THREAD_POOL_SIZE : MHD_OPTION_THREAD_STACK_SIZE,
         cfg->http_threads > 0 ? (intptr_t)cfg->http_threads : (intptr_t)(1 << 20), NULL},
        {MHD_OPTION_END, 0, NULL},
    };
    s->mhd = MHD_start_daemon(flags, 0, NULL, NULL, handle_request, s,
                              MHD_OPTION_ARRAY, opts, MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!s->mhd) {
        st = vs_err_set(err, VS_IO, "serve: cannot listen on %s:%d (%s)", s->host, cfg->port,
                        errno ? strerror(errno) : "libmicrohttpd refused the options");
        vs_serve_destroy(s);
        return st;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : cfg->port;
    {
        struct vs_jbuf f;
        vs_jbuf_init(&f, 0);
        bool v6 = strchr(s->host, ':') != NULL;
        vs_jbuf_printf(&f, ",\"url\":\"http://%s%s%s:%d\",\"host\":", v6 ? "[" : "", s->host,
                       v6 ? "]" : "", s->port);
        vs_jbuf_json_cstr(&f, s->host);
        vs_jbuf_printf(&f, ",\"port\":%d", s->port);
        vs_slog(VS_LOG_INFO, "listening", &f);
        vs_jbuf_deinit(&f);
    }
    if (pthread_create(&s->loader, NULL, loader_main, s)) {
        vs_serve_destroy(s);
        return vs_err_set(err, VS_NOMEM, "serve: cannot start the model-loading thread");
    }
    s->loader_started = true;
    *out = s;
    return VS_OK;
}

int vs_serve_port(const struct vs_server *s)
{
    return s->port;
}

enum vs_serve_state vs_serve_state(struct vs_server *s, struct vs_err *why)
{
    enum vs_serve_state st = get_state(s);
    if (st == VS_SERVE_FAILED && why) *why = s->load_err;
    return st;
}

enum vs_status vs_serve_drain(struct vs_server *s, double grace_s, struct vs_err *err)
{
    /* Readiness goes first, so orchestrators stop routing to us. */
    atomic_store_explicit(&s->state, VS_SERVE_DRAINING, memory_order_release);
    if (s->mhd) {
        MHD_socket fd = MHD_quiesce_daemon(s->mhd);
        if (fd != MHD_INVALID_SOCKET) close(fd);
    }
    vs_slog_kv(VS_LOG_INFO, "draining", "detail", "stopped accepting connections");
    uint64_t until = vs_now_ns() + (uint64_t)(grace_s * 1e9);
    int quiet = 0;
    /* In-flight requests finish; zero must hold for 50 ms in a row so that a
     * request whose headers were just completing is counted too. */
    while (quiet < 5) {
        if (atomic_load(&s->inflight) == 0) quiet++;
        else quiet = 0;
        if (vs_now_ns() >= until) {
            int left = atomic_load(&s->inflight);
            if (left == 0) break;
            return vs_err_set(err, VS_TIMEOUT, "%d request(s) still running after %g s of grace",
                              left, grace_s);
        }
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return VS_OK;
}

void vs_serve_destroy(struct vs_server *s)
{
    if (!s) return;
    if (s->mhd) MHD_stop_daemon(s->mhd); /* joins every HTTP thread */
    if (s->loader_started) pthread_join(s->loader, NULL);
    vs_batcher_destroy(s->batcher);      /* finishes anything still queued */
    vs_model_destroy(s->model);
    vs_rcache_destroy(s->cache);
    vs_metrics_destroy(s->metrics);
    free(s);
}
