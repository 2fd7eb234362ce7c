/* server.c: the HTTP server — libmicrohttpd daemon, routes, the per-image
 * pipeline (hash -> cache -> decode/preprocess -> batcher -> scores), the
 * model-loading thread and graceful shutdown.  Public contract in serve.h,
 * wire contract in docs/http-api.md.
 *
 * Threads.
 *  - MHD threads run handle_request(): by default a pool of N threads
 *    (--http-threads, one per core), each a libmicrohttpd daemon of one
 *    poll() thread with its own SO_REUSEPORT listening socket (listen_on),
 *    else one daemon with a thread per connection (--http-threads 0).  A prediction's code is written blocking: it
 *    decodes and preprocesses its images (outside any lock), queues them
 *    in the batcher and sleeps on the batcher's condition variable until
 *    its forward pass is done.  On a pool thread it first runs with
 *    r->nonblock: the routes parse the request and vs_serve_classify
 *    answers it if every image is a cache hit; at the first wait it would
 *    need (a miss, an identical request in flight, raw pixels) it stops
 *    with r->would_block, having taken nothing.  offload() then suspends
 *    the connection and runs the route again, blocking, on a thread of its
 *    own (the first pass's cache keys reused); queue() keeps that answer in
 *    r->deferred, and the resumed connection's next handle_request call
 *    queues it.  So hits never wait behind misses, a pool thread never
 *    sleeps, and every waiting request is in the batcher's queue, as with
 *    a thread per connection (docs/batcher.md).
 *  - The loader thread loads the model, runs one warm-up forward, creates
 *    the batcher and then publishes `loaded` and state READY (release
 *    stores).  HTTP threads read `loaded` with acquire loads before touching
 *    the model, so model/info/batcher are immutable and safely visible.
 *  - The batcher thread runs compute_fn() (the only caller of
 *    vs_model_forward_rows, as model.h requires) and observe_fn().
 *  - The main (CLI) thread calls start/state/drain/destroy.
 * Invariants: `inflight` counts requests between their first handler call
 * and MHD's completion callback; drain waits for it to reach zero.
 * `offloaded` counts offload threads until their last step (after the
 * resume); vs_serve_destroy waits for zero before stopping MHD, which would
 * otherwise close suspended connections and free requests in use.
 *
 * A request's first call (headers only) goes through begin_request(): CORS
 * decision, header size (431), route (404), OPTIONS preflight (204), method
 * (405), then for prediction requests the API key (401, auth.c), the rate
 * limit (429, ratelimit.c), the model's state (503) and Content-Length
 * (413); GET routes are answered at once (web.c, routes_v2.c, health,
 * metrics).  The last call (body complete) dispatches POST / and
 * /models/{id} to routes_hf.c, v2 infer to routes_v2.c, /predict* to
 * handle_predict(); a chunked body that passed --max-upload-bytes is
 * answered 413 there instead (handle_request explains why so late).
 * Those files share this file's pipeline and response helpers through
 * server_int.h; respond() adds the CORS, RateLimit and timing headers.
 */
#include "server_int.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "image/image.h"
#include "multipart.h"
#include "slog.h"

#define MAX_TOP_K VS_SRV_MAX_TOP_K
#define MAX_BATCH_FILES VS_SRV_MAX_BATCH_FILES
#define MAX_PARTS 64        /* multipart parts parsed per request */
/* Stack of every thread that runs a request (libmicrohttpd's, offload
 * threads): parsing, decoding and preprocessing fit in it. */
#define REQUEST_THREAD_STACK ((size_t)1 << 20)

/* ---- small helpers ---------------------------------------------------- */

unsigned vs_serve_http_status(enum vs_status st)
{
    switch (st) {
    case VS_OK: return 200;
    case VS_BAD_INPUT: return 400;
    case VS_NOT_FOUND: return 404;
    case VS_TOO_LARGE: return 413;
    case VS_UNSUPPORTED: return 415;
    case VS_BUSY: return 429;
    case VS_TIMEOUT: return 504;
    case VS_CANCELLED: return 499;   /* nginx's "client closed request": logs, metrics */
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
bool vs_serve_model_usable(const struct vs_server *s)
{
    return atomic_load_explicit(&((struct vs_server *)s)->loaded, memory_order_acquire);
}

/* --stall-timeout-s, or 20 times what a full batch takes going by the
 * fastest image per pass so far (the warm-up pass at first), at least a
 * minute. */
static double stall_limit_s(const struct vs_server *s)
{
    if (s->cfg.stall_timeout_s > 0) return s->cfg.stall_timeout_s;
    const double best = atomic_load_explicit(&((struct vs_server *)s)->best_image_s,
                                             memory_order_relaxed);
    return VS_MAX(60.0, 20.0 * s->cfg.max_batch * best);
}

bool vs_serve_stalled(struct vs_server *s, double *run_s, double *limit_s)
{
    if (run_s) *run_s = 0;
    if (limit_s) *limit_s = 0;
    if (!vs_serve_model_usable(s)) return false;
    const double limit = stall_limit_s(s);
    const double run = vs_batcher_pass_s(s->batcher);   /* read once: age and verdict agree */
    if (run_s) *run_s = run;
    if (limit_s) *limit_s = limit;
    if (run <= limit) {
        atomic_store(&s->stall_logged, false);
        return false;
    }
    if (!atomic_exchange(&s->stall_logged, true)) {
        struct vs_jbuf f;
        vs_jbuf_init(&f, 0);
        vs_jbuf_puts(&f, ",\"running_s\":");
        vs_jbuf_fixed3(&f, run);
        vs_jbuf_puts(&f, ",\"limit_s\":");
        vs_jbuf_fixed3(&f, limit);
        vs_slog(VS_LOG_WARN, "forward pass stalled: health routes answer 503", &f);
        vs_jbuf_deinit(&f);
    }
    return true;
}

uint64_t vs_serve_deadline(const struct req *r)
{
    return r->t0_ns + (uint64_t)(r->s->cfg.request_timeout_s * 1e9);
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

/* Adds the headers every answer carries, then queues it. */
static enum MHD_Result queue(struct req *r, struct MHD_Connection *c, unsigned status,
                             struct MHD_Response *resp, const char *content_type, size_t len,
                             const char *extra_name, const char *extra_value)
{
    if (content_type) MHD_add_response_header(resp, "Content-Type", content_type);
    MHD_add_response_header(resp, "X-Request-ID", r->id);
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    if (r->cors_origin[0]) {
        MHD_add_response_header(resp, "Access-Control-Allow-Origin", r->cors_origin);
        MHD_add_response_header(resp, "Access-Control-Expose-Headers", VS_CORS_EXPOSE_HEADERS);
    }
    if (r->cors_vary) MHD_add_response_header(resp, "Vary", "Origin");
    if (r->rl_set) {
        MHD_add_response_header(resp, "RateLimit-Policy", r->rl_policy);
        MHD_add_response_header(resp, "RateLimit", r->rl_state);
    }
    if (r->timing && status < 300) {
        /* compute = processing time after the body arrived, less the
         * batcher queue wait (both ms). */
        char v[VS_FMT_FIXED3_SIZE];
        double total = (double)(vs_now_ns() - r->work_t0_ns) / 1e6;
        double comp = total > r->queue_ms ? total - r->queue_ms : 0.0;
        vs_fmt_fixed3(v, comp);
        MHD_add_response_header(resp, "X-Compute-Time", v);
        vs_fmt_fixed3(v, r->queue_ms);
        MHD_add_response_header(resp, "X-Queue-Time", v);
        MHD_add_response_header(resp, "X-Cache", r->cache_hit == 1 ? "hit" : "miss");
    }
    if (extra_name) MHD_add_response_header(resp, extra_name, extra_value);
    if (get_state(r->s) == VS_SERVE_DRAINING)
        MHD_add_response_header(resp, "Connection", "close");
    enum MHD_Result ret = MHD_YES;
    if (r->deferring) {
        /* On the offload thread: the answer waits for the resume. */
        r->deferred = resp;
        r->deferred_status = status;
    } else {
        ret = MHD_queue_response(c, status, resp);
        MHD_destroy_response(resp);
    }
    r->responded = true;
    r->status = (int)status;
    r->bytes_out = len;
    return ret;
}

enum MHD_Result vs_serve_respond(struct req *r, struct MHD_Connection *c, unsigned status,
                                 const char *content_type, struct vs_jbuf *body,
                                 const char *extra_name, const char *extra_value)
{
    size_t len = 0;
    char *data = vs_jbuf_take(body, &len);
    vs_jbuf_deinit(body);
    if (!data) {
        /* Could not build the body: answer a fixed 500. */
        char oom[64];
        snprintf(oom, sizeof oom, "{\"%s\":\"internal error: out of memory\"}", r->err_key);
        data = strdup(oom);
        if (!data) return MHD_NO;
        len = strlen(data);
        status = 500;
        content_type = "application/json";
        r->timing = false;
    }
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, data, MHD_RESPMEM_MUST_FREE);
    if (!resp) { free(data); return MHD_NO; }
    return queue(r, c, status, resp, content_type, len, extra_name, extra_value);
}

enum MHD_Result vs_serve_respond_static(struct req *r, struct MHD_Connection *c,
                                        unsigned status, const char *content_type,
                                        const void *data, size_t len)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)data, MHD_RESPMEM_PERSISTENT);
    if (!resp) return MHD_NO;
    return queue(r, c, status, resp, content_type, len, NULL, NULL);
}

enum MHD_Result vs_serve_error(struct req *r, struct MHD_Connection *c, unsigned status,
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
    vs_jbuf_printf(&b, "{\"%s\":", r->err_key);
    vs_jbuf_json_cstr(&b, msg);
    vs_jbuf_puts(&b, "}");
    if (!extra_name && (status == 429 || status == 503)) {
        extra_name = "Retry-After";
        extra_value = "1";
    }
    if (status >= 500)
        vs_slog_kv(VS_LOG_WARN, "request failed", "detail", msg);
    r->timing = false;
    return vs_serve_respond(r, c, status, "application/json", &b, extra_name, extra_value);
}

/* ---- routing ---------------------------------------------------------- */

/* What a route accepts and whether it is a prediction route (auth and rate
 * limits apply to prediction requests only). */
enum { M_GET = 1, M_POST = 2 };

static enum vs_metrics_route route_of(const char *url)
{
    static const struct { const char *path; enum vs_metrics_route r; } table[] = {
        {"/predict", VS_ROUTE_PREDICT},      {"/predict/batch", VS_ROUTE_PREDICT_BATCH},
        {"/health", VS_ROUTE_HEALTH},        {"/health/live", VS_ROUTE_LIVE},
        {"/health/ready", VS_ROUTE_READY},   {"/metrics", VS_ROUTE_METRICS},
        {"/docs", VS_ROUTE_DOCS},            {"/openapi.json", VS_ROUTE_OPENAPI},
        {"/v2", VS_ROUTE_V2},                {"/v2/health/live", VS_ROUTE_V2_LIVE},
        {"/v2/health/ready", VS_ROUTE_V2_READY},
    };
    size_t n = strlen(url);
    if (n == 1 && url[0] == '/') return VS_ROUTE_ROOT;
    if (n > 1 && url[n - 1] == '/') n--; /* "/predict/" == "/predict" */
    for (size_t i = 0; i < VS_ARRAY_LEN(table); i++)
        if (strlen(table[i].path) == n && !strncmp(url, table[i].path, n)) return table[i].r;
    /* "/models/{model_id}": any non-empty id (hub ids contain a slash). */
    if (n > 8 && !strncmp(url, "/models/", 8)) return VS_ROUTE_HF_MODEL;
    /* "/v2/models/{model}[/ready|/infer]" (the handler checks the name). */
    if (n > 11 && !strncmp(url, "/v2/models/", 11)) {
        if (n > 17 && !strncmp(url + n - 6, "/infer", 6)) return VS_ROUTE_V2_INFER;
        if (n > 17 && !strncmp(url + n - 6, "/ready", 6)) return VS_ROUTE_V2_MODEL_READY;
        return VS_ROUTE_V2_MODEL;
    }
    return VS_ROUTE_OTHER;
}

static unsigned methods_of(enum vs_metrics_route r)
{
    switch (r) {
    case VS_ROUTE_ROOT: return M_GET | M_POST;
    case VS_ROUTE_PREDICT: case VS_ROUTE_PREDICT_BATCH: case VS_ROUTE_HF_MODEL:
    case VS_ROUTE_V2_INFER: return M_POST;
    default: return M_GET;
    }
}

/* The Allow header (OPTIONS, answered on every route, is left out as the
 * original API did). */
static const char *allow_of(unsigned m)
{
    return m == M_POST ? "POST" : m == M_GET ? "GET, HEAD" : "GET, HEAD, POST";
}

/* Prediction requests: the ones that need a key and count against limits. */
static bool is_prediction(enum vs_metrics_route r, bool is_post)
{
    return is_post && (methods_of(r) & M_POST);
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
    snprintf(r->ip, sizeof r->ip, "?");
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
    snprintf(r->ip, sizeof r->ip, "%s", ip);
}

/* Has the client closed its connection (or reset it)?  The batcher asks
 * just before a queued image of this request joins a forward pass, so that
 * a client that gave up (its own timeout, a closed browser tab) costs no
 * forward pass.  A peek at the socket: 0 bytes is the client's FIN, an
 * error a reset; bytes (a pipelined request) or nothing yet mean it is
 * still there.  Like nginx, a client that half-closes after sending its
 * request counts as gone.  The socket stays ours meanwhile: the connection
 * is suspended (a pool) or its thread is the one waiting here. */
static bool client_gone(void *ctx)
{
    const struct req *r = ctx;
    if (r->fd < 0) return false;
    char c;
    const ssize_t n = recv(r->fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
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
    /* A lost GPU makes a loaded model unusable: not ready, 503 everywhere. */
    struct vs_device_status ds = {0};
    ds.utilization = -1;
    if (vs_serve_model_usable(s)) vs_model_device_status(s->model, &ds);
    double run = 0, limit = 0;
    if (vs_serve_stalled(s, &run, &limit)) {
        /* Live too: a hung device needs a new process. */
        code = 503;
        vs_jbuf_puts(&b, "{\"status\":\"stalled\",\"model_loaded\":true,\"detail\":");
        char why[160];
        snprintf(why, sizeof why,
                 "a forward pass has run for %.1f s (stall limit %.1f s, --stall-timeout-s)",
                 run, limit);
        vs_jbuf_json_cstr(&b, why);
        vs_jbuf_puts(&b, "}");
    } else if (r->route == VS_ROUTE_LIVE) {
        vs_jbuf_puts(&b, "{\"status\":\"alive\"}");
    } else if (r->route == VS_ROUTE_READY) {
        code = st == VS_SERVE_READY && !ds.lost ? 200 : 503;
        vs_jbuf_printf(&b, "{\"status\":\"%s\"}",
                       ds.lost ? "device_lost" : st == VS_SERVE_READY ? "ready" : state_word(st));
    } else if (st == VS_SERVE_READY && ds.lost) {
        code = 503;
        vs_jbuf_puts(&b, "{\"status\":\"device_lost\",\"model_loaded\":true,\"gpu_available\":false,\"detail\":");
        vs_jbuf_json_cstr(&b, ds.why);
        vs_jbuf_puts(&b, "}");
    } else if (st == VS_SERVE_READY) {
        const struct vs_model_info *in = s->info;
        vs_jbuf_puts(&b, "{\"status\":\"healthy\",\"model_loaded\":true,\"gpu_available\":");
        vs_jbuf_puts(&b, ds.is_gpu ? "true" : "false");
        if (ds.is_gpu && ds.mem_total_bytes)
            vs_jbuf_printf(&b, ",\"gpu_memory_used_bytes\":%llu,\"gpu_memory_total_bytes\":%llu",
                           (unsigned long long)ds.mem_used_bytes,
                           (unsigned long long)ds.mem_total_bytes);
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
                       vs_serve_model_usable(s) ? "true" : "false");
        if (st == VS_SERVE_FAILED) {
            vs_jbuf_puts(&b, ",\"detail\":");
            vs_jbuf_json_cstr(&b, s->load_err.msg);
        }
        vs_jbuf_puts(&b, "}");
    }
    return vs_serve_respond(r, c, code, "application/json", &b,
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
    if (vs_serve_model_usable(s)) {
        x.ready = get_state(s) == VS_SERVE_READY;
        x.queue_depth = vs_batcher_depth(s->batcher);
        x.model = s->info->name;
        x.backend = s->info->backend;
        x.device = s->info->device_name;
        x.precision = vs_precision_name(s->info->precision);
        x.num_labels = s->info->num_labels;
        struct vs_device_status ds;
        vs_model_device_status(s->model, &ds);
        x.gpu = ds.is_gpu;
        x.gpu_lost = ds.lost;
        x.gpu_mem_used = ds.mem_used_bytes;
        x.gpu_mem_total = ds.mem_total_bytes;
        x.gpu_util = ds.utilization;
        x.stalled = vs_serve_stalled(s, &x.pass_s, &x.stall_limit_s);
    }
    struct vs_jbuf b;
    vs_jbuf_init(&b, 0);
    vs_metrics_render(s->metrics, &x, &b);
    return vs_serve_respond(r, c, 200, "text/plain; version=0.0.4; charset=utf-8", &b, NULL, NULL);
}

/* ---- the inference pipeline ------------------------------------------- */

/* Decodes and preprocesses one image into job->pixels (this thread). */
static enum vs_status prepare_image(struct vs_server *s, struct vs_srv_job *j,
                                    struct vs_err *err)
{
    const struct vs_model_info *in = s->info;
    struct vs_image_limits lim = {.max_pixels = s->cfg.max_pixels};
    struct vs_image img = {0};
    enum vs_status st = vs_image_decode(j->data, j->len, &lim, &img, err);
    if (st) return st;
    if ((st = vs_model_check_image_size(in, img.width, img.height, err)) != VS_OK) {
        vs_image_deinit(&img);
        return st;
    }
    j->pixels = malloc(s->in_floats * sizeof(float));
    if (!j->pixels) {
        vs_image_deinit(&img);
        return vs_err_set(err, VS_NOMEM, "out of memory for the input tensor");
    }
    st = vs_image_preprocess(&img, &in->preproc, j->pixels, err);
    vs_image_deinit(&img);
    return st;
}

/* Releases everything a job holds; a claim not yet completed (the request
 * stopped before computing it) is abandoned with *why, so that
 * single-flight waiters take the image over instead of sharing a failure
 * that is not the image's. */
static void job_cleanup(struct vs_server *s, struct vs_srv_job *j, const struct vs_err *why)
{
    if (j->entry) {
        if (j->state == VS_RCACHE_CLAIMED && !j->filled) vs_rcache_abandon(s->cache, j->entry, why);
        vs_rcache_release(s->cache, j->entry);
        j->entry = NULL;
    }
    free(j->pixels);
    free(j->logits);
    j->pixels = j->logits = NULL;
}

/* What classify produces and the result cache stores for one image, its
 * record: the L = num_labels logits, then the ranking of the model's
 * default score function, R = min(MAX_TOP_K, L) scores best first and
 * their R label indices (as floats: exact, num_labels <= 1,000,000 <
 * 2^24).  /predict formats its top_k (<= R) from the ranking, so that a
 * cache hit does not score all L labels again (with ViT-B's 1,000 labels
 * that was ~10% of the server's CPU on cache hits); the other routes read
 * the logits.  record_rank fills the ranking from the logits. */
static int record_floats(const struct vs_model_info *in)
{
    return in->num_labels + 2 * VS_MIN(MAX_TOP_K, in->num_labels);
}

static enum vs_status record_rank(const struct vs_model_info *in, float *rec, struct vs_err *err)
{
    const int L = in->num_labels, R = VS_MIN(MAX_TOP_K, L);
    float *scores = malloc((size_t)L * sizeof *scores); /* [num_labels] */
    int idx[MAX_TOP_K];
    if (!scores) return vs_err_set(err, VS_NOMEM, "out of memory for %d scores", L);
    vs_scores_apply(in->default_score_fn, rec, L, scores);
    int k = vs_topk(scores, L, R, idx);   /* k == R: L >= R */
    for (int i = 0; i < k; i++) {
        rec[L + i] = scores[idx[i]];
        rec[L + R + i] = (float)idx[i];
    }
    free(scores);
    return VS_OK;
}

/* An image of this request that we claimed and have not completed. */
static bool open_claim(const struct vs_srv_job *j)
{
    return j->alias < 0 && !j->done && j->entry && j->state == VS_RCACHE_CLAIMED && !j->filled;
}

/* Computes this round's claims: decode + preprocess here, outside any lock,
 * then one group into the batcher, then each claim completed with its own
 * outcome.  A failure that is the image's (it does not decode; the engine
 * failed on it) fails the claim for its waiters too; one that is only ours
 * (the queue refused our group, our deadline passed before the batch ran)
 * abandons it, and the waiters take the image over on their own deadlines. */
static enum vs_status compute_claims(struct req *r, struct vs_srv_job *jobs, int n, int claimed,
                                     uint64_t deadline_ns, int *bad, struct vs_err *err)
{
    struct vs_server *s = r->s;
    struct vs_batch_item **items = calloc((size_t)claimed, sizeof *items);
    if (!items) return vs_err_set(err, VS_NOMEM, "out of memory");
    int ni = 0;
    for (int i = 0; i < n; i++) {
        struct vs_srv_job *j = &jobs[i];
        if (!open_claim(j)) continue;
        enum vs_status st = prepare_image(s, j, err);
        if (st) {
            /* The image's verdict (it does not decode, it is too large):
             * shared.  Running out of memory is this process's state at
             * this moment, not the image's: abandoned, so that a waiter
             * tries the image itself.  Our other claims are abandoned by
             * vs_serve_jobs_free. */
            *bad = i;
            if (st == VS_NOMEM) vs_rcache_abandon(s->cache, j->entry, err);
            else vs_rcache_fail(s->cache, j->entry, err);
            j->filled = true;
            free(items);
            return st;
        }
        j->item.in = j->pixels;
        j->item.out = j->logits;
        j->item.deadline_ns = deadline_ns;
        j->item.gone = client_gone;
        j->item.gone_ctx = r;
        items[ni++] = &j->item;
    }
    enum vs_status st = vs_batcher_submit(s->batcher, items, ni, err);
    if (st) {
        /* Refused (queue full, shutting down): a verdict on our group, not
         * on the images.  A waiter retries on its own, and its own
         * (smaller) group may well fit. */
        struct vs_err why;
        vs_err_set(&why, st, "the identical request in flight was refused: %s",
                   err && err->msg[0] ? err->msg : vs_status_str(st));
        for (int i = 0; i < n; i++) {
            struct vs_srv_job *j = &jobs[i];
            if (!open_claim(j)) continue;
            vs_rcache_abandon(s->cache, j->entry, &why);
            j->filled = true;
        }
        free(items);
        return st;
    }
    vs_batcher_wait(s->batcher, items, ni);
    free(items);
    /* Complete every claim with its own outcome (waiters of a computed image
     * get it even if another image of this request failed). */
    enum vs_status first = VS_OK;
    for (int i = 0; i < n; i++) {
        struct vs_srv_job *j = &jobs[i];
        if (!open_claim(j)) continue;
        r->batch_size = VS_MAX(r->batch_size, j->item.batch_size);
        r->queue_ms = VS_MAX(r->queue_ms, (double)j->item.queue_ns / 1e6);
        free(j->pixels);
        j->pixels = NULL;
        struct vs_err e = {0};
        if (j->item.status == VS_TIMEOUT || j->item.status == VS_CANCELLED) {
            /* Dropped uncomputed: our deadline passed in the queue, or our
             * client left; a waiter for the same image takes it over. */
            st = vs_err_set(&e, j->item.status, "%s", j->item.msg);
            vs_rcache_abandon(s->cache, j->entry, &e);
        } else if (j->item.status) {
            st = vs_err_set(&e, j->item.status, "%s", j->item.msg);
            vs_rcache_fail(s->cache, j->entry, &e);
        } else if ((st = record_rank(s->info, j->logits, &e)) == VS_OK) {
            st = vs_rcache_fill(s->cache, j->entry, j->logits, record_floats(s->info),
                                (uint64_t)vs_now_ms(), &e);
            j->done = st == VS_OK;
        } else {
            vs_rcache_abandon(s->cache, j->entry, &e);
        }
        j->filled = true;
        if (st && !first) {
            first = st;
            *bad = i;
            if (err) *err = e;
        }
    }
    return first;
}

/* A non-blocking pass (r->nonblock) stops where it would wait: the caller
 * (handle_request) runs the request again on a thread of its own. */
static enum vs_status must_wait(struct req *r, struct vs_err *err)
{
    r->would_block = true;
    return vs_err_set(err, VS_BUSY, "the request has to wait for the engine");
}

/* Copies a ready entry's record (rec floats) into the job's logits. */
static enum vs_status take_values(struct vs_srv_job *j, int rec, struct vs_err *err)
{
    int m = 0;
    const float *v = vs_rcache_values(j->entry, &m);
    if (m != rec) return vs_err_set(err, VS_BACKEND, "cache entry has %d values, not %d", m, rec);
    memcpy(j->logits, v, (size_t)rec * sizeof(float));
    j->done = true;
    return VS_OK;
}

/* Runs n images through cache + batcher.  On success every job has
 * logits; r->cache_hit tells whether none of them needed a forward pass.
 * On failure *bad is the index of the image at fault (or -1).
 *
 * In rounds: look up every image not yet done, compute our claims, then
 * wait for the images others compute.  An image whose claimant abandoned it
 * (see compute_claims) goes into the next round while our own deadline is
 * ahead: we claim and compute it ourselves, or wait on whoever claimed it
 * first.  Each further round needs another request to have given an image
 * up, and every wait ends at our deadline. */
enum vs_status vs_serve_classify(struct req *r, struct vs_srv_job *jobs, int n,
                                 uint64_t deadline_ns, int *bad, struct vs_err *err)
{
    struct vs_server *s = r->s;
    const struct vs_model_info *in = s->info;
    const int L = in->num_labels, rec = record_floats(in);
    *bad = -1;
    int from_cache = 1;

    /* 1. Key every image (vs_digest of the bytes, bound to the model) and
     *    fold duplicates within the request.  The second pass of an
     *    offloaded request parsed the same body into the same images: it
     *    takes the keys of the first. */
    const bool keyed = r->keys && r->nkeys == n;
    for (int i = 0; i < n; i++) {
        struct vs_srv_job *j = &jobs[i];
        if (keyed) {
            memcpy(j->key, r->keys[i], 32);
        } else {
            uint8_t both[64];
            vs_digest(j->data, j->len, both);
            memcpy(both + 32, s->model_key, 32);
            vs_sha256(both, sizeof both, j->key);
        }
        j->alias = -1;
        for (int k = 0; k < i && j->alias < 0; k++)
            if (!memcmp(jobs[k].key, j->key, 32)) j->alias = k;
        if (j->alias >= 0) continue;
        j->logits = malloc((size_t)rec * sizeof(float));
        if (!j->logits) return vs_err_set(err, VS_NOMEM, "out of memory for %d logits", L);
    }

    /* 1b. A pass that must not wait (on an HTTP pool thread) answers only
     *     when every image is ready in the cache.  Otherwise it takes
     *     nothing (no claim, no wait, no count) and says so in
     *     r->would_block: the caller runs the request again on a thread
     *     of its own, where this function blocks as usual. */
    if (r->nonblock) {
        const uint64_t now_ms = (uint64_t)vs_now_ms();
        int i = 0;
        for (; i < n; i++) {
            struct vs_srv_job *j = &jobs[i];
            if (j->alias >= 0) continue;
            if (!vs_rcache_peek(s->cache, j->key, now_ms, &j->entry)) break;
            j->state = VS_RCACHE_HIT;
        }
        if (i < n) {
            for (int k = 0; k < i; k++) {
                vs_rcache_release(s->cache, jobs[k].entry);
                jobs[k].entry = NULL;
            }
            free(r->keys);
            r->keys = malloc((size_t)n * sizeof *r->keys);
            r->nkeys = r->keys ? n : 0;
            for (int k = 0; k < r->nkeys; k++) memcpy(r->keys[k], jobs[k].key, 32);
            return must_wait(r, err);
        }
        unsigned hits = 0;
        for (i = 0; i < n; i++) {
            struct vs_srv_job *j = &jobs[i];
            if (j->alias >= 0) continue;
            enum vs_status st = take_values(j, rec, err);
            if (st) return st;
            hits++;
        }
        vs_rcache_count_hits(s->cache, hits);
        r->cache_hit = 1;
        return VS_OK;
    }

    for (int todo = 1; todo;) {
        /* 2. Look up each image not yet done, once per round. */
        uint64_t now_ms = (uint64_t)vs_now_ms();
        int claimed = 0;
        for (int i = 0; i < n; i++) {
            struct vs_srv_job *j = &jobs[i];
            if (j->alias >= 0 || j->done) continue;
            int state = vs_rcache_lookup(s->cache, j->key, now_ms, &j->entry);
            if (state < 0) return vs_err_set(err, VS_NOMEM, "result cache: out of memory");
            j->state = state;
            j->filled = false;
            if (state == VS_RCACHE_CLAIMED) claimed++;
            if (state != VS_RCACHE_HIT) from_cache = 0;
        }

        /* 3. Our claims, before any wait (a request never waits while it
         *    holds an open claim: no deadlock between requests). */
        if (claimed) {
            enum vs_status st = compute_claims(r, jobs, n, claimed, deadline_ns, bad, err);
            if (st) return st;
        }

        /* 4. Hits, and the images others compute. */
        todo = 0;
        for (int i = 0; i < n; i++) {
            struct vs_srv_job *j = &jobs[i];
            if (j->alias >= 0 || j->done) continue;
            if (j->state == VS_RCACHE_PENDING) {
                bool abandoned = false;
                enum vs_status st = vs_rcache_wait(s->cache, j->entry, deadline_ns, &abandoned, err);
                if (st && abandoned) {
                    /* Its claimant gave it up for a reason of its own. */
                    vs_rcache_release(s->cache, j->entry);
                    j->entry = NULL;
                    if (!deadline_ns || vs_now_ns() < deadline_ns) {
                        todo = 1;
                        continue;
                    }
                    *bad = i;
                    return vs_err_set(err, VS_TIMEOUT,
                                      "request deadline passed while waiting for an identical "
                                      "request in flight");
                }
                if (st) { *bad = i; return st; }
            }
            enum vs_status st = take_values(j, rec, err);
            if (st) return st;
        }
    }
    r->cache_hit = from_cache;
    return VS_OK;
}

void vs_serve_jobs_free(struct vs_server *s, struct vs_srv_job *jobs, int n)
{
    for (int i = 0; i < n; i++) {
        struct vs_err cancelled;
        vs_err_set(&cancelled, VS_BUSY,
                   "the identical request in flight stopped on another image");
        job_cleanup(s, &jobs[i], &cancelled);
    }
}

const float *vs_serve_job_logits(const struct vs_srv_job *jobs, int i)
{
    return jobs[i].alias >= 0 ? jobs[jobs[i].alias].logits : jobs[i].logits;
}

enum vs_status vs_serve_run_pixels(struct req *r, const float *pixels, int n, float *logits,
                                   uint64_t deadline_ns, struct vs_err *err)
{
    struct vs_server *s = r->s;
    const size_t L = (size_t)s->info->num_labels;
    if (r->nonblock) return must_wait(r, err);   /* no cache on this path: it always waits */
    struct vs_batch_item *items = calloc((size_t)n, sizeof *items);
    struct vs_batch_item **ptrs = calloc((size_t)n, sizeof *ptrs);
    if (!items || !ptrs) {
        free(items);
        free(ptrs);
        return vs_err_set(err, VS_NOMEM, "out of memory for %d items", n);
    }
    for (int i = 0; i < n; i++) {
        items[i].in = pixels + (size_t)i * s->in_floats;  /* [3][H][W] */
        items[i].out = logits + (size_t)i * L;             /* [num_labels] */
        items[i].deadline_ns = deadline_ns;
        items[i].gone = client_gone;
        items[i].gone_ctx = r;
        ptrs[i] = &items[i];
    }
    enum vs_status st = vs_batcher_submit(s->batcher, ptrs, n, err);
    if (!st) {
        vs_batcher_wait(s->batcher, ptrs, n);
        for (int i = 0; i < n; i++) {
            r->batch_size = VS_MAX(r->batch_size, items[i].batch_size);
            r->queue_ms = VS_MAX(r->queue_ms, (double)items[i].queue_ns / 1e6);
            if (items[i].status && !st)
                st = vs_err_set(err, items[i].status, "%s", items[i].msg);
        }
    }
    r->cache_hit = 0;
    free(items);
    free(ptrs);
    return st;
}

/* Appends one {"predictions":[...],"cached":..,"processing_time_ms":..,
 * "model":..} object for an image's record (its ranking's first top_k). */
static void render_result(struct vs_jbuf *b, const struct vs_model_info *in,
                          const float *rec, int top_k, bool cached, double ms)
{
    const int L = in->num_labels, R = VS_MIN(MAX_TOP_K, L);
    const float *score = rec + L, *label = rec + L + R;
    vs_jbuf_puts(b, "{\"predictions\":[");
    for (int i = 0; i < VS_MIN(top_k, R); i++) {
        vs_jbuf_puts(b, i ? ",{\"label\":" : "{\"label\":");
        vs_jbuf_json_cstr(b, in->labels[(int)label[i]]);
        vs_jbuf_puts(b, ",\"confidence\":");
        vs_jbuf_json_float(b, score[i]);
        vs_jbuf_puts(b, "}");
    }
    vs_jbuf_puts(b, cached ? "],\"cached\":true,\"processing_time_ms\":"
                           : "],\"cached\":false,\"processing_time_ms\":");
    vs_jbuf_fixed3(b, ms);
    vs_jbuf_puts(b, ",\"model\":");
    vs_jbuf_json_cstr(b, in->name);
    vs_jbuf_puts(b, "}");
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
    const uint64_t deadline = vs_serve_deadline(r);
    char why[256];
    int top_k;
    if (parse_top_k(s, c, &top_k, why, sizeof why))
        return vs_serve_error(r, c, 400, NULL, NULL, "%s", why);

    /* Find the image bytes: multipart fields, or the raw body. */
    const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
    const char *field = batch ? "files" : "file";
    struct vs_mp_part *parts = NULL;
    size_t nparts = 0;
    struct vs_srv_job *jobs = NULL;
    int n = 0;
    enum MHD_Result ret;
    struct vs_err err = {0};
    const uint8_t *body = (const uint8_t *)r->body.data;
    size_t body_len = r->body.len;
    if (vs_multipart_is_form(ct)) {
        char boundary[VS_MP_MAX_BOUNDARY + 1];
        if (vs_multipart_boundary(ct, boundary, sizeof boundary, &err))
            return vs_serve_error(r, c, 400, NULL, NULL, "%s", err.msg);
        parts = calloc(MAX_PARTS, sizeof *parts);
        if (!parts) return vs_serve_error(r, c, 500, NULL, NULL, "out of memory");
        if (vs_multipart_parse(body ? body : (const uint8_t *)"", body_len, boundary, parts,
                               MAX_PARTS, &nparts, &err)) {
            free(parts);
            return vs_serve_error(r, c, 400, NULL, NULL, "%s", err.msg);
        }
        for (size_t i = 0; i < nparts; i++)
            if (!strcmp(parts[i].name, field)) n++;
    } else if (!batch && body_len > 0) {
        n = 1;
    }
    if (n == 0) {
        free(parts);
        if (batch)
            return vs_serve_error(r, c, 422, NULL, NULL,
                                 "missing form field 'files' (multipart/form-data, 1 to %d images)",
                                 MAX_BATCH_FILES);
        return vs_serve_error(r, c, 422, NULL, NULL,
                             "missing form field 'file' (send multipart/form-data or the image "
                             "bytes as the request body)");
    }
    if (batch && n > MAX_BATCH_FILES) {
        free(parts);
        return vs_serve_error(r, c, 400, NULL, NULL,
                             "too many files: %d (at most %d per request)", n, MAX_BATCH_FILES);
    }
    if (!batch && n > 1) {
        /* /predict answers one object for one image. */
        free(parts);
        return vs_serve_error(r, c, 400, NULL, NULL,
                             "%d form fields 'file': /predict takes one image (send several as "
                             "'files' to /predict/batch)", n);
    }
    jobs = calloc((size_t)n, sizeof *jobs);
    if (!jobs) {
        free(parts);
        return vs_serve_error(r, c, 500, NULL, NULL, "out of memory");
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
            ret = vs_serve_error(r, c, 400, NULL, NULL, "file '%s' is empty", jobs[i].filename);
            goto out;
        }
    }

    int bad = -1;
    enum vs_status st = vs_serve_classify(r, jobs, n, deadline, &bad, &err);
    if (r->would_block) {
        ret = MHD_YES;   /* handle_request offloads it */
        goto out;
    }
    if (st) {
        unsigned code = vs_serve_http_status(st);
        if (bad >= 0 && (st == VS_BAD_INPUT || st == VS_UNSUPPORTED || st == VS_TOO_LARGE)) {
            const char *fn = jobs[bad].filename;
            if (fn[0])
                ret = vs_serve_error(r, c, code, NULL, NULL, "invalid image file '%s': %s", fn,
                                    err.msg);
            else
                ret = vs_serve_error(r, c, code, NULL, NULL, "invalid image: %s", err.msg);
        } else {
            ret = vs_serve_error(r, c, code, NULL, NULL, "%s",
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
        const struct vs_srv_job *j = jobs[i].alias >= 0 ? &jobs[jobs[i].alias] : &jobs[i];
        if (i) vs_jbuf_puts(&b, ",");
        render_result(&b, s->info, j->logits, top_k, j->state != VS_RCACHE_CLAIMED, ms);
    }
    if (batch) vs_jbuf_puts(&b, "]");
    vs_metrics_inference(s->metrics, r->route, elapsed_s(t_start));
    ret = vs_serve_respond(r, c, 200, "application/json", &b, NULL, NULL);

out:
    vs_serve_jobs_free(s, jobs, n);
    free(jobs);
    free(parts);
    return ret;
}

size_t vs_serve_json_values(const char *s, size_t n)
{
    size_t commas = 0;
    bool any = false;
    for (size_t i = 0; i < n; i++) {
        const char ch = s[i];
        if (ch == '"') {   /* skip the string, escapes included */
            any = true;
            for (i++; i < n && s[i] != '"'; i++)
                if (s[i] == '\\') i++;
        } else if (ch == ',') {
            commas++;
        } else if (ch != ' ' && ch != '\t' && ch != '\n' && ch != '\r') {
            any = true;
        }
    }
    return any ? commas + 1 : 0;
}

/* ---- the MHD callbacks ------------------------------------------------ */

/* Collects the values of every X-Forwarded-For header line; keeps the last. */
static enum MHD_Result last_xff(void *cls, enum MHD_ValueKind kind, const char *key,
                                const char *value)
{
    (void)kind;
    if (key && value && !strcasecmp(key, "X-Forwarded-For")) *(const char **)cls = value;
    return MHD_YES;
}

/* p[0..end) is a port: one or more decimal digits. */
static bool is_port(const char *p, const char *end)
{
    if (p >= end) return false;
    for (; p < end; p++)
        if (*p < '0' || *p > '9') return false;
    return true;
}

/* The address in one X-Forwarded-For entry b[0..n): an IPv4 or IPv6
 * address, also with a port as some proxies write it ("1.2.3.4:5678",
 * "[2001:db8::1]:443"; Azure's Application Gateway does).  Writes it to ip
 * (INET6_ADDRSTRLEN + 1 bytes) and returns true, or false for anything
 * else. */
static bool xff_address(const char *b, size_t n, char ip[INET6_ADDRSTRLEN + 1])
{
    unsigned char bin[16];
    const char *colon = memchr(b, ':', n);
    size_t an = n;
    if (n > 0 && b[0] == '[') {   /* [v6] or [v6]:port */
        const char *close = memchr(b, ']', n);
        if (!close) return false;
        const char *rest = close + 1, *end = b + n;
        if (rest < end && (*rest != ':' || !is_port(rest + 1, end))) return false;
        b++;
        an = (size_t)(close - b);
    } else if (colon && !memchr(colon + 1, ':', n - (size_t)(colon + 1 - b))) {
        /* exactly one colon: v4:port (a bare v6 address has several) */
        if (!is_port(colon + 1, b + n)) return false;
        an = (size_t)(colon - b);
    }
    if (an == 0 || an > INET6_ADDRSTRLEN) return false;
    memcpy(ip, b, an);
    ip[an] = '\0';
    return inet_pton(AF_INET, ip, bin) == 1 || inet_pton(AF_INET6, ip, bin) == 1;
}

/* The rate-limit key of a request: the API key's id when auth is on, else
 * the client address — with --trust-proxy the right-most X-Forwarded-For
 * entry (the address our proxy saw; entries to its left are whatever the
 * client wrote, so they are never trusted), else the socket peer. */
static void client_key(struct req *r, struct MHD_Connection *c, const char *key_id, char *out,
                       size_t size)
{
    if (key_id) {
        snprintf(out, size, "key:%s", key_id);
        return;
    }
    if (r->s->cfg.trust_proxy) {
        const char *xff = NULL;
        MHD_get_connection_values(c, MHD_HEADER_KIND, last_xff, &xff);
        if (xff) {
            const char *e = xff + strlen(xff);
            while (e > xff && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == ',')) e--;
            const char *b = e;
            while (b > xff && b[-1] != ',') b--;
            while (b < e && (*b == ' ' || *b == '\t')) b++;
            char ip[INET6_ADDRSTRLEN + 1];
            if (xff_address(b, (size_t)(e - b), ip)) {
                snprintf(out, size, "ip:%s", ip);
                return;
            }
        }
    }
    snprintf(out, size, "ip:%s", r->ip);
}

/* Adds the size of one header line ("Name: value\r\n") to *cls. */
static enum MHD_Result add_header_size(void *cls, enum MHD_ValueKind kind, const char *key,
                                       const char *value)
{
    (void)kind;
    *(size_t *)cls += (key ? strlen(key) : 0) + 2 + (value ? strlen(value) : 0) + 2;
    return MHD_YES;
}

/* CORS preflight (OPTIONS on a known route): 204 with what may be sent. */
static enum MHD_Result handle_preflight(struct req *r, struct MHD_Connection *c)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, "Allow", allow_of(methods_of(r->route)));
    if (r->cors_origin[0]) {
        MHD_add_response_header(resp, "Access-Control-Allow-Methods", VS_CORS_ALLOW_METHODS);
        MHD_add_response_header(resp, "Access-Control-Allow-Headers", VS_CORS_ALLOW_HEADERS);
        MHD_add_response_header(resp, "Access-Control-Max-Age", VS_CORS_MAX_AGE);
    }
    return queue(r, c, 204, resp, NULL, 0, NULL, NULL);
}

/* First call of a request: everything that does not need the body. */
static enum MHD_Result begin_request(struct req *r, struct MHD_Connection *c, const char *url,
                                     const char *method)
{
    struct vs_server *s = r->s;
    bool is_get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
    bool is_post = !strcmp(method, "POST");
    bool is_options = !strcmp(method, "OPTIONS");
    /* The Hugging Face and KServe routes answer errors as {"error": ...}
     * (what their clients read); the original API as {"detail": ...}. */
    bool hf = r->route == VS_ROUTE_HF_MODEL || (r->route == VS_ROUTE_ROOT && is_post);
    bool v2 = r->route >= VS_ROUTE_V2 && r->route <= VS_ROUTE_V2_INFER;
    r->err_key = hf || v2 ? "error" : "detail";
    bool vary = false;
    const char *origin = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Origin");
    const char *allow = vs_cors_origin(s->cors, origin, &vary);
    if (allow) snprintf(r->cors_origin, sizeof r->cors_origin, "%s", allow);
    r->cors_vary = vary;

    /* Header blocks over our cap get a JSON 431 here; libmicrohttpd's
     * connection memory (VS_SRV_CONN_MEMORY) is sized so that it reads
     * them instead of answering its own HTML 431 first. */
    size_t header_bytes = 0;
    MHD_get_connection_values(c, MHD_HEADER_KIND, add_header_size, &header_bytes);
    if (header_bytes > VS_SRV_MAX_HEADER_BYTES)
        return vs_serve_error(r, c, 431, NULL, NULL,
                              "request headers of %zu bytes exceed the limit of %zu bytes",
                              header_bytes, VS_SRV_MAX_HEADER_BYTES);

    if (r->route == VS_ROUTE_OTHER)
        return vs_serve_error(r, c, 404, NULL, NULL, "no route for %s %.200s", method, url);
    unsigned m = methods_of(r->route);
    /* A preflight or a GET route is answered on the request's last call
     * (answer_plain), not now: libmicrohttpd closes the connection after
     * an answer queued before the request was read to its end, even one
     * without a body, and clients (scrapers, browsers) keep theirs alive. */
    if (is_options) {
        r->answer_later = true;
        return MHD_YES;
    }
    if (!((is_get && (m & M_GET)) || (is_post && (m & M_POST))))
        return vs_serve_error(r, c, 405, "Allow", allow_of(m), "method %s not allowed on %s",
                             method, vs_metrics_route_name(r->route));
    if (!is_prediction(r->route, is_post)) {
        r->answer_later = true;
        return MHD_YES;
    }

    /* A prediction: key, then rate limit, then the model. */
    char key_id[33];
    bool authed = false;
    if (vs_auth_enabled(s->auth)) {
        const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
        if (!vs_auth_check(s->auth, h, key_id)) {
            /* Failed attempts spend the address's tokens, so guessing keys
             * is rate limited too. */
            if (s->rl) {
                char ck[96];
                struct vs_ratelimit_result rr;
                client_key(r, c, NULL, ck, sizeof ck);
                vs_ratelimit_take(s->rl, ck, vs_now_ns(), &rr);
                if (!rr.allowed) {
                    char ra[16];
                    snprintf(ra, sizeof ra, "%d", rr.retry_after_s);
                    return vs_serve_error(r, c, 429, "Retry-After", ra,
                                          "too many requests without a valid API key; retry in "
                                          "%d s", rr.retry_after_s);
                }
            }
            return vs_serve_error(r, c, 401, "WWW-Authenticate", "Bearer realm=\"vitserve\"",
                                  h ? "invalid API key (send Authorization: Bearer <key>)"
                                    : "missing API key (send Authorization: Bearer <key>)");
        }
        authed = true;
    }
    if (s->rl) {
        char ck[96];
        client_key(r, c, authed ? key_id : NULL, ck, sizeof ck);
        struct vs_ratelimit_result rr;
        vs_ratelimit_take(s->rl, ck, vs_now_ns(), &rr);
        vs_ratelimit_headers(&rr, r->rl_policy, sizeof r->rl_policy, r->rl_state,
                             sizeof r->rl_state);
        r->rl_set = true;
        if (!rr.allowed) {
            char ra[16];
            snprintf(ra, sizeof ra, "%d", rr.retry_after_s);
            return vs_serve_error(r, c, 429, "Retry-After", ra,
                                 "rate limit exceeded: %d requests per %d s; retry in %d s",
                                 rr.limit, rr.window_s, rr.retry_after_s);
        }
    }
    if (!vs_serve_model_usable(s)) {
        enum vs_serve_state st = get_state(s);
        return vs_serve_error(r, c, 503, NULL, NULL, "model is %s",
                             st == VS_SERVE_FAILED ? "not available (loading failed)"
                                                   : "still loading");
    }
    char lost_why[256];
    if (vs_model_device_lost(s->model, lost_why))
        return vs_serve_error(r, c, 503, NULL, NULL, "the compute device was lost (%s); "
                              "this replica cannot serve until it is restarted", lost_why);
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
    if (cl) {
        char *end = NULL;
        errno = 0;
        unsigned long long v = strtoull(cl, &end, 10);
        if (end != cl && !*end && !errno) {
            /* Refused before any body byte is read.  Nothing is reserved
             * for a declared size that fits: the buffer grows with the
             * bytes that arrive (a client that declares 20 MB and sends
             * 10 bytes costs 10 bytes). */
            if (v > s->cfg.max_upload_bytes)
                return vs_serve_error(r, c, 413, NULL, NULL,
                                     "request body of %llu bytes exceeds the limit of %zu bytes",
                                     v, s->cfg.max_upload_bytes);
        }
    }
    return MHD_YES;
}

/* A preflight or a GET route, on the request's last call. */
static enum MHD_Result answer_plain(struct req *r, struct MHD_Connection *c, const char *url)
{
    if (!strcmp(r->method, "OPTIONS")) return handle_preflight(r, c);
    switch (r->route) {
    case VS_ROUTE_METRICS: return handle_metrics(r, c);
    case VS_ROUTE_HEALTH: case VS_ROUTE_LIVE: case VS_ROUTE_READY: return handle_health(r, c);
    case VS_ROUTE_ROOT: case VS_ROUTE_DOCS: case VS_ROUTE_OPENAPI: return vs_serve_web_get(r, c);
    default: return vs_serve_v2_get(r, c, url);
    }
}

/* The prediction routes, on a complete body. */
static enum MHD_Result dispatch(struct req *r, struct MHD_Connection *c, const char *url)
{
    switch (r->route) {
    case VS_ROUTE_ROOT: case VS_ROUTE_HF_MODEL: return vs_serve_hf_predict(r, c, url);
    case VS_ROUTE_V2_INFER: return vs_serve_v2_infer(r, c, url);
    default: return handle_predict(r, c);
    }
}

/* The offload thread: the request's blocking pass, then the resume that
 * makes libmicrohttpd call handle_request again to queue the answer.  From
 * the resume on, r belongs to libmicrohttpd's thread (it may be freed). */
static void *offload_main(void *arg)
{
    struct req *r = arg;
    struct vs_server *s = r->s;
    struct MHD_Connection *c = r->conn;
    r->deferred_ret = dispatch(r, c, r->url);
    MHD_resume_connection(c);
    atomic_fetch_sub(&s->offloaded, 1);
    return NULL;
}

/* A request that has to wait (a cache miss, an identical request in
 * flight, raw pixels) leaves the pool thread: its connection is suspended
 * and a thread of its own runs it, so that the pool goes on reading other
 * connections and answering hits, and batches form from every waiting
 * request as with a thread per connection. */
static enum MHD_Result offload(struct req *r, struct MHD_Connection *c, const char *url)
{
    struct vs_server *s = r->s;
    r->url = strdup(url);
    if (!r->url) return vs_serve_error(r, c, 500, NULL, NULL, "out of memory");
    r->conn = c;
    r->deferring = true;
    MHD_suspend_connection(c);
    atomic_fetch_add(&s->offloaded, 1);
    pthread_t t;
    if (pthread_create(&t, &s->offload_attr, offload_main, r) != 0) {
        /* No thread to be had: run it here; this pool thread waits. */
        vs_slog_kv(VS_LOG_WARN, "no thread for a waiting request, running it on the HTTP thread",
                   "request_id", r->id);
        offload_main(r);
    }
    return MHD_YES;
}

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
        r->err_key = "detail";
        snprintf(r->method, sizeof r->method, "%s", method);
        vs_jbuf_init(&r->body, s->cfg.max_upload_bytes ? s->cfg.max_upload_bytes : 1);
        set_request_id(r, c);
        set_client(r, c);
        const union MHD_ConnectionInfo *fi =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        r->fd = fi ? fi->connect_fd : -1;
        atomic_fetch_add(&s->inflight, 1);
        *con_cls = r;
        return begin_request(r, c, url, method);
    }
    if (r->deferring) {
        /* Resumed after offload(): queue the offload thread's answer. */
        r->deferring = false;
        if (!r->deferred) return MHD_NO;
        enum MHD_Result ret = MHD_queue_response(c, r->deferred_status, r->deferred);
        MHD_destroy_response(r->deferred);
        r->deferred = NULL;
        return ret == MHD_YES && r->deferred_ret == MHD_YES ? MHD_YES : MHD_NO;
    }
    if (r->responded) {
        /* An early response was queued; swallow whatever still arrives. */
        *upload_size = 0;
        return MHD_YES;
    }
    if (r->answer_later) {
        /* A body sent with a GET or OPTIONS is read and dropped, up to
         * --max-upload-bytes; past that the connection is closed. */
        r->bytes_in += *upload_size;
        if (!*upload_size) return answer_plain(r, c, url);
        *upload_size = 0;
        return r->bytes_in > s->cfg.max_upload_bytes ? MHD_NO : MHD_YES;
    }
    if (*upload_size) {
        /* Body bytes stream in.  Only a chunked body can pass the cap (a
         * declared Content-Length over it was refused in begin_request, and
         * libmicrohttpd never delivers more than the declared length).
         * libmicrohttpd 0.9.75 refuses MHD_queue_response while a body is
         * being received, and closing the connection loses the answer for
         * clients that send the whole body before reading; so the rest is
         * read and thrown away (no memory kept) and the 413 is queued at
         * the body's end.  An upload that goes on for more than another
         * max(--max-upload-bytes, 1 MiB) has its connection closed. */
        size_t n = *upload_size;
        *upload_size = 0;
        r->bytes_in += n;
        if (!r->over_limit && n > s->cfg.max_upload_bytes - r->body.len) {
            r->over_limit = true;
            vs_jbuf_deinit(&r->body);
        }
        if (r->over_limit) {
            size_t budget = VS_MAX(s->cfg.max_upload_bytes, VS_SRV_MIN_DISCARD_BYTES);
            if (r->bytes_in - s->cfg.max_upload_bytes > budget) {
                vs_slog_kv(VS_LOG_INFO, "chunked upload far over the limit, closing connection",
                           "request_id", r->id);
                r->status = 413;
                return MHD_NO;
            }
            return MHD_YES;
        }
        vs_jbuf_add(&r->body, upload_data, n);
        if (r->body.failed) {
            r->status = 500;
            return MHD_NO;
        }
        return MHD_YES;
    }
    if (r->over_limit)
        return vs_serve_error(r, c, 413, NULL, NULL,
                              "request body of %zu bytes (chunked) exceeds the limit of %zu bytes",
                              r->bytes_in, s->cfg.max_upload_bytes);
    /* Last call: the body is complete; every prediction gets timing headers. */
    r->timing = true;
    r->work_t0_ns = vs_now_ns();
    /* On a pool thread, a first pass that never waits: cache hits and
     * refusals are answered here, anything else is offloaded. */
    r->nonblock = s->cfg.http_threads > 0;
    enum MHD_Result ret = dispatch(r, c, url);
    r->nonblock = false;
    if (!r->would_block) return ret;
    r->would_block = false;
    return offload(r, c, url);
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
        /* no printf on this path (jbuf.h) */
        vs_jbuf_puts(&f, ",\"route\":\"");
        vs_jbuf_puts(&f, vs_metrics_route_name(r->route));
        vs_jbuf_puts(&f, "\",\"status\":");
        vs_jbuf_i64(&f, r->status);
        vs_jbuf_puts(&f, ",\"bytes_in\":");
        vs_jbuf_u64(&f, r->bytes_in);
        vs_jbuf_puts(&f, ",\"bytes_out\":");
        vs_jbuf_u64(&f, r->bytes_out);
        vs_jbuf_puts(&f, ",\"ms\":");
        vs_jbuf_fixed3(&f, secs * 1e3);
        if (r->cache_hit >= 0) vs_jbuf_puts(&f, r->cache_hit ? ",\"cache_hit\":true" : ",\"cache_hit\":false");
        if (r->images) {
            vs_jbuf_puts(&f, ",\"images\":");
            vs_jbuf_i64(&f, r->images);
        }
        if (r->batch_size) {
            vs_jbuf_puts(&f, ",\"batch_size\":");
            vs_jbuf_i64(&f, r->batch_size);
        }
        vs_jbuf_puts(&f, ",\"client\":");
        vs_jbuf_json_cstr(&f, r->client);
        if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK)
            vs_jbuf_printf(&f, ",\"terminated\":%d", (int)toe);
        vs_slog(VS_LOG_INFO, "request", &f);
        vs_jbuf_deinit(&f);
    }
    vs_jbuf_deinit(&r->body);
    if (r->deferred) MHD_destroy_response(r->deferred);
    free(r->url);
    free(r->keys);
    free(r);
    atomic_fetch_sub(&s->inflight, 1);
}

/* ---- model loading ---------------------------------------------------- */

static enum vs_status compute_fn(void *ctx, const float *const *rows, int n, float *out,
                                 struct vs_err *err)
{
    struct vs_server *s = ctx;
    /* rows[i]: the requests' own [3][H][W] buffers -> out: [n][num_labels]
     * logits.  No gather here: the engine reads each image in place (CUDA:
     * straight into its pinned staging, overlapped with the GPU). */
    const uint64_t t0 = vs_now_ns();
    const enum vs_status st = vs_model_forward_rows(s->model, rows, n, out, err);
    if (st == VS_OK && n > 0) {   /* the stall limit's yardstick: the fastest image yet */
        const double per = (double)(vs_now_ns() - t0) / 1e9 / n;
        if (per < atomic_load_explicit(&s->best_image_s, memory_order_relaxed))
            atomic_store_explicit(&s->best_image_s, per, memory_order_relaxed);   /* one writer */
    }
    return st;
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
    o.prepack = true;   /* GEMM-ready weights, built in the background */
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
     * primitive creation) before /health says ready, through the call the
     * batcher makes. */
    zeros = calloc(in_floats, sizeof *zeros);
    logits = calloc((size_t)in->num_labels, sizeof *logits);
    if (!zeros || !logits) { st = vs_err_set(&err, VS_NOMEM, "out of memory for warm-up"); goto fail; }
    s->model = m; /* compute_fn reads it; no other thread sees it yet */
    double t1 = vs_now_ms();
    const float *zero_row = zeros;
    st = vs_model_forward_rows(m, &zero_row, 1, logits, &err);
    if (st) { vs_err_prefix(&err, "warm-up forward"); goto fail; }
    double t_warm = vs_now_ms() - t1;
    atomic_store(&s->best_image_s, t_warm / 1000.0);   /* before the batcher: no race */

    struct vs_batcher_config bc = {
        .max_batch = s->cfg.max_batch, .timeout_ms = s->cfg.batch_timeout_ms,
        .max_queue = s->cfg.max_queue,
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
                       "\"num_labels\":%d,\"params\":%llu,\"load_ms\":%.1f,\"warmup_ms\":%.1f,"
                       "\"stall_limit_s\":%.1f",
                   vs_precision_name(in->precision), in->threads, in->image_height,
                   in->image_width, in->num_labels, (unsigned long long)in->num_params, t_load,
                   t_warm, stall_limit_s(s));
    vs_slog(VS_LOG_INFO, "model ready", &f);
    vs_jbuf_deinit(&f);
    if (in->preproc_defaults) {
        vs_jbuf_init(&f, 0);
        vs_jbuf_puts(&f, ",\"dir\":");
        vs_jbuf_json_cstr(&f, in->dir);
        vs_slog(VS_LOG_WARN, VS_MODEL_PREPROC_DEFAULTS_WARNING, &f);
        vs_jbuf_deinit(&f);
    }
    /* Publish: everything above is visible to acquire loads of `loaded`
     * and `state`.  A drain that began meanwhile keeps state DRAINING. */
    atomic_store_explicit(&s->loaded, true, memory_order_release);
    int expect = VS_SERVE_LOADING;
    if (!atomic_compare_exchange_strong_explicit(&s->state, &expect, VS_SERVE_READY,
                                                 memory_order_acq_rel, memory_order_acquire) &&
        expect == VS_SERVE_DRAINING)
        vs_batcher_hurry(s->batcher);   /* the drain could not: the batcher was not out yet */
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

static void log_config(const struct vs_server *s, const struct vs_serve_config *c)
{
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
    vs_jbuf_printf(&f, ",\"auth\":%s,\"api_keys\":%zu,\"rate_limit\":",
                   vs_auth_enabled(s->auth) ? "true" : "false", vs_auth_count(s->auth));
    vs_jbuf_json_cstr(&f, c->rate_limit && *c->rate_limit ? c->rate_limit : "off");
    vs_jbuf_puts(&f, ",\"cors_origins\":");
    vs_jbuf_json_cstr(&f, c->cors_origins ? c->cors_origins : "*");
    vs_jbuf_printf(&f, ",\"trust_proxy\":%s", c->trust_proxy ? "true" : "false");
    vs_slog(VS_LOG_INFO, "starting", &f);
    vs_jbuf_deinit(&f);
}

/* --max-connections over the pool's daemons together (each daemon's own
 * limit counts only its connections): the accept policy sums the daemons'
 * current connections.  Two daemons accepting in the same instant may
 * pass the limit by one each. */
static enum MHD_Result accept_policy(void *cls, const struct sockaddr *addr, socklen_t len)
{
    struct vs_server *s = cls;
    (void)addr;
    (void)len;
    unsigned open = 0;
    const int n = atomic_load_explicit(&s->nmhd, memory_order_acquire);
    for (int i = 0; i < n; i++) {
        const union MHD_DaemonInfo *di =
            MHD_get_daemon_info(s->mhd[i], MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
        if (di) open += di->num_connections;
    }
    if (open < (unsigned)s->cfg.max_connections) return MHD_YES;
    vs_slog_kv(VS_LOG_WARN, "connection refused", "detail",
               "--max-connections open connections reached");
    return MHD_NO;
}

/* One socket bound to the address (SO_REUSEADDR; IPv6 only for an IPv6
 * address, as libmicrohttpd would), with SO_REUSEPORT when reuse; -1 and
 * errno on failure. */
static int bind_one(const struct addrinfo *ai, const struct sockaddr *addr, socklen_t len,
                    bool reuse)
{
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) ||
        (reuse && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one)) ||
        (ai->ai_family == AF_INET6 &&
         setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one)) ||
        bind(fd, addr, len)) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

/* n listening sockets on ai's address, fds[0..n) (n > 1: SO_REUSEPORT,
 * the kernel spreads connections over them), the port bound in *port.  A
 * port already held is refused, also by a group of SO_REUSEPORT sockets
 * of another process (which the group would otherwise be joined to): a
 * plain socket is bound first, as a probe that also picks the port for
 * port 0, and closed. */
static enum vs_status listen_on(const struct addrinfo *ai, int n, int *fds, int *port,
                                struct vs_err *err)
{
    struct sockaddr_storage addr;
    socklen_t len = (socklen_t)ai->ai_addrlen;
    memcpy(&addr, ai->ai_addr, len);
    int probe = bind_one(ai, (struct sockaddr *)&addr, len, false);
    if (probe < 0) return vs_err_set(err, VS_IO, "%s", strerror(errno));
    socklen_t got = len;
    if (getsockname(probe, (struct sockaddr *)&addr, &got)) {
        int e = errno;
        close(probe);
        return vs_err_set(err, VS_IO, "getsockname: %s", strerror(e));
    }
    *port = ntohs(addr.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&addr)->sin6_port
                                             : ((struct sockaddr_in *)&addr)->sin_port);
    if (n == 1) {
        fds[0] = probe;
    } else {
        close(probe);
        for (int i = 0; i < n; i++) {
            fds[i] = bind_one(ai, (struct sockaddr *)&addr, len, true);
            if (fds[i] < 0) {
                int e = errno;
                for (int k = 0; k < i; k++) close(fds[k]);
                return vs_err_set(err, VS_IO, "%s (SO_REUSEPORT socket %d of %d)", strerror(e),
                                  i + 1, n);
            }
        }
    }
    for (int i = 0; i < n; i++)
        if (listen(fds[i], 1024)) {
            int e = errno;
            for (int k = 0; k < n; k++) close(fds[k]);
            return vs_err_set(err, VS_IO, "listen: %s", strerror(e));
        }
    return VS_OK;
}

enum vs_status vs_serve_start(const struct vs_serve_config *cfg, struct vs_server **out,
                              struct vs_err *err)
{
    if (cfg->max_batch < 1 || cfg->max_queue < 1 || cfg->batch_timeout_ms < 0 ||
        cfg->request_timeout_s <= 0 || cfg->stall_timeout_s < 0 || cfg->max_connections < 1 ||
        cfg->http_threads < 0 ||
        cfg->port < 0 || cfg->port > 65535 || !cfg->model || !cfg->host)
        return vs_err_set(err, VS_BAD_INPUT, "invalid configuration");
    struct vs_server *s = calloc(1, sizeof *s);
    if (!s) return vs_err_set(err, VS_NOMEM, "out of memory");
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
    atomic_init(&s->offloaded, 0);
    atomic_init(&s->nmhd, 0);
    atomic_init(&s->next_id, 1);
    pthread_attr_init(&s->offload_attr);
    pthread_attr_setdetachstate(&s->offload_attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&s->offload_attr, REQUEST_THREAD_STACK);
    enum vs_status st;
    uint64_t ttl_ms = (uint64_t)(cfg->cache_ttl_s * 1000.0);
    if (cfg->cache_ttl_s > 0 && ttl_ms == 0) ttl_ms = 1; /* under 1 ms: the shortest, not none */
    if ((st = vs_rcache_create(cfg->cache_entries, ttl_ms, &s->cache, err)) ||
        (st = vs_metrics_create(&s->metrics, err)) ||
        (st = vs_auth_create(cfg->api_keys, cfg->api_keys_file, &s->auth, err)) ||
        (st = vs_cors_create(cfg->cors_origins ? cfg->cors_origins : "*", &s->cors, err)) ||
        (st = vs_serve_web_init(s, err))) {
        vs_serve_destroy(s);
        return st;
    }
    if (cfg->rate_limit && *cfg->rate_limit) {
        int limit = 0, window = 0;
        if ((st = vs_ratelimit_parse(cfg->rate_limit, &limit, &window, err)) ||
            (st = vs_ratelimit_create(limit, window,
                                      cfg->rate_limit_clients ? cfg->rate_limit_clients : 10000,
                                      &s->rl, err))) {
            vs_serve_destroy(s);
            return st;
        }
    }
    /* Pointers into the caller's strings are not kept past start. */
    s->cfg.api_keys = s->cfg.api_keys_file = s->cfg.cors_origins = s->cfg.rate_limit = NULL;
    log_config(s, cfg);

    /* Resolve the bind address (numeric or a name such as "localhost"). */
    struct addrinfo hints = {.ai_flags = AI_PASSIVE, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    char port_s[16];
    snprintf(port_s, sizeof port_s, "%d", cfg->port);
    int gai = getaddrinfo(s->host, port_s, &hints, &ai);
    if (gai || !ai) {
        st = vs_err_set(err, VS_BAD_INPUT, "cannot resolve --host '%s': %s", s->host,
                        gai_strerror(gai));
        vs_serve_destroy(s);
        return st;
    }
    /* The pool is n daemons of one thread each, every one with its own
     * listening socket on the port (SO_REUSEPORT): the kernel spreads new
     * connections over them by address hash.  One daemon with a pool of n
     * threads shares one socket, and whichever thread wakes first accepts:
     * after a spell of cache misses, 8 new connections all went to one
     * thread and hits ran at 11,000/s on one core instead of 19,000.
     * With --http-threads 0, one daemon, a thread per connection. */
    const int nd = cfg->http_threads > 0 ? cfg->http_threads : 1;
    int *fds = malloc((size_t)nd * sizeof *fds);
    s->mhd = calloc((size_t)nd, sizeof *s->mhd);
    if (!fds || !s->mhd) {
        free(fds);
        freeaddrinfo(ai);
        vs_serve_destroy(s);
        return vs_err_set(err, VS_NOMEM, "out of memory");
    }
    st = listen_on(ai, nd, fds, &s->port, err);
    freeaddrinfo(ai);
    if (st) {
        vs_err_prefix(err, "cannot listen on %s:%d", s->host, cfg->port);
        free(fds);
        vs_serve_destroy(s);
        return st;
    }
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ITC | MHD_USE_ERROR_LOG;
    /* poll(), not epoll: with epoll, libmicrohttpd 0.9.75 now and then
     * missed a client closing its connection in the middle of a body
     * (test_serve_oversize's 16 abandoned uploads: one run in four to six
     * kept a request in flight until the idle timeout; poll: 32 runs
     * clean), and poll measured as fast on cache hits. */
    if (cfg->http_threads == 0) flags |= MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL;
    else flags |= MHD_USE_POLL | MHD_ALLOW_SUSPEND_RESUME;
    for (int i = 0; i < nd; i++) {
        struct MHD_OptionItem opts[] = {
            {MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)mhd_log, s},
            {MHD_OPTION_LISTEN_SOCKET, fds[i], NULL},
            /* a pool daemon's own limit is one above the whole: at its
             * limit libmicrohttpd stops accepting on its socket, and a
             * connection the kernel hashed there would wait unanswered
             * instead of being refused by accept_policy */
            {MHD_OPTION_CONNECTION_LIMIT,
             (intptr_t)cfg->max_connections + (nd > 1 ? 1 : 0), NULL},
            {MHD_OPTION_CONNECTION_TIMEOUT, (intptr_t)cfg->idle_timeout_s, NULL},
            {MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)request_completed, s},
            {MHD_OPTION_CONNECTION_MEMORY_LIMIT, (intptr_t)VS_SRV_CONN_MEMORY, NULL},
            {MHD_OPTION_THREAD_STACK_SIZE, (intptr_t)REQUEST_THREAD_STACK, NULL},
            {MHD_OPTION_END, 0, NULL},
        };
        errno = 0;
        s->mhd[i] = MHD_start_daemon(flags, 0, nd > 1 ? accept_policy : NULL, s, handle_request,
                                     s, MHD_OPTION_ARRAY, opts, MHD_OPTION_END);
        if (!s->mhd[i]) {
            st = vs_err_set(err, VS_IO, "cannot start the HTTP server on %s:%d (%s)",
                            s->host, s->port,
                            errno ? strerror(errno) : "libmicrohttpd refused the options");
            for (int k = i; k < nd; k++) close(fds[k]);   /* not taken over */
            free(fds);
            vs_serve_destroy(s);
            return st;
        }
        atomic_store_explicit(&s->nmhd, i + 1, memory_order_release);
    }
    free(fds);
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
        return vs_err_set(err, VS_NOMEM, "cannot start the model-loading thread");
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
    for (int i = 0; i < s->nmhd; i++) {
        MHD_socket fd = MHD_quiesce_daemon(s->mhd[i]);
        if (fd != MHD_INVALID_SOCKET) close(fd);
    }
    vs_slog_kv(VS_LOG_INFO, "draining", "detail", "stopped accepting connections");
    /* No new client will fill a batch: queued images run now rather than
     * after --batch-timeout-ms. */
    if (vs_serve_model_usable(s)) vs_batcher_hurry(s->batcher);
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

enum vs_status vs_serve_reload(struct vs_server *s, size_t *nkeys, struct vs_err *err)
{
    enum vs_status st = vs_auth_reload(s->auth, err);
    if (!st && nkeys) *nkeys = vs_auth_count(s->auth);
    return st;
}

void vs_serve_destroy(struct vs_server *s)
{
    if (!s) return;
    /* Offload threads run requests of suspended connections: they finish
     * (by their deadlines at the latest; the batcher still runs) before
     * libmicrohttpd may close those connections and free their state. */
    while (atomic_load(&s->offloaded) > 0) {
        struct timespec ts = {0, 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    for (int i = 0; i < s->nmhd; i++) MHD_stop_daemon(s->mhd[i]);  /* joins the HTTP threads */
    free(s->mhd);
    if (s->loader_started) pthread_join(s->loader, NULL);
    vs_batcher_destroy(s->batcher);      /* finishes anything still queued */
    vs_model_destroy(s->model);
    vs_rcache_destroy(s->cache);
    vs_metrics_destroy(s->metrics);
    vs_auth_destroy(s->auth);
    vs_cors_destroy(s->cors);
    vs_ratelimit_destroy(s->rl);
    free(s->openapi);
    pthread_attr_destroy(&s->offload_attr);
    free(s);
}
