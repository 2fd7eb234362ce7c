/* server_int.h: private seam between the files of the serve module — the
 * server and per-request structs, the response helpers and the inference
 * pipeline of server.c, and the route handlers of web.c, routes_hf.c and
 * routes_v2.c.  Not part of the module's door (serve.h).
 *
 * Threads: handlers run on MHD threads (one request per call, `struct req`
 * belongs to that connection); everything in `struct vs_server` marked
 * immutable is written before the daemon starts or published by the loader
 * (see server.c).
 */
#ifndef VS_SERVE_SERVER_INT_H
#define VS_SERVE_SERVER_INT_H

#include <arpa/inet.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "auth.h"
#include "batcher.h"
#include "cors.h"
#include "jbuf.h"
#include "metrics.h"
#include "ratelimit.h"
#include "rcache.h"
#include "serve.h"

#define VS_SRV_MAX_TOP_K 20        /* /predict's bound on top_k (the original app's) */
#define VS_SRV_MAX_BATCH_FILES 32  /* images per request (/predict/batch, v2 infer) */
/* Request header block (field lines, as "Name: value\r\n") vitserve
 * accepts; larger -> 431 in JSON.  libmicrohttpd's per-connection memory
 * (VS_SRV_CONN_MEMORY, which also holds the request line and its own
 * bookkeeping) must be larger, or libmicrohttpd answers 431 itself, in
 * HTML, before vitserve sees the request (docs/http-api.md). */
#define VS_SRV_MAX_HEADER_BYTES ((size_t)64 * 1024)
#define VS_SRV_CONN_MEMORY ((size_t)128 * 1024)
/* A chunked body that grows past --max-upload-bytes is read on and thrown
 * away, so that the client (which usually sends everything before it reads)
 * gets its 413; past this many more bytes (or --max-upload-bytes, if
 * larger) the connection is closed instead. */
#define VS_SRV_MIN_DISCARD_BYTES ((size_t)1 << 20)

struct vs_server {
    struct vs_serve_config cfg;
    char host[256];
    char model_spec[4096];
    struct MHD_Daemon **mhd;       /* one per pool thread, or one (a thread per connection) */
    atomic_int nmhd;               /* daemons started (mhd[0..nmhd) valid) */
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
    _Atomic double best_image_s;   /* fastest seconds per image of a pass yet (warm-up first) */
    atomic_bool stall_logged;      /* the current stall has its warning line */
    uint8_t model_key[32];         /* SHA-256 of the model name (cache key part) */
    /* Always valid (immutable after start, internally synchronised): */
    struct vs_rcache *cache;
    struct vs_metrics *metrics;
    struct vs_auth *auth;          /* never NULL; vs_auth_enabled() says if on */
    struct vs_cors *cors;
    struct vs_ratelimit *rl;       /* NULL: no rate limit */
    char *openapi;                 /* /openapi.json as served (info.version set) */
    size_t openapi_len;
    atomic_int inflight;
    atomic_int offloaded;          /* offload threads not yet finished */
    pthread_attr_t offload_attr;   /* detached, REQUEST_THREAD_STACK (server.c) */
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
    char client[64];               /* socket peer "ip:port" (logs) */
    char ip[INET6_ADDRSTRLEN];     /* socket peer address */
    int fd;                        /* the connection's socket (-1: unknown): client_gone() */
    const char *err_key;           /* error body key: "detail" (original API) or "error" */
    struct vs_jbuf body;           /* raw body, capped at --max-upload-bytes; grows
                                      with the bytes received, never reserved ahead */
    size_t bytes_in;               /* body bytes received (kept or discarded) */
    bool over_limit;               /* chunked body past the cap: discarded, 413 at its end */
    bool responded;                /* a response was queued */
    bool answer_later;             /* a preflight or GET route: answered on the last call */
    int status;
    size_t bytes_out;
    int cache_hit;                 /* -1 n/a, 0 miss, 1 every image from the cache */
    int images;
    int batch_size;                /* largest forward pass this request's images ran in */
    /* Response decorations (respond() adds them): */
    char cors_origin[264];         /* Access-Control-Allow-Origin value, "" = none */
    bool cors_vary;
    bool rl_set;                   /* RateLimit headers below are set */
    char rl_policy[48], rl_state[96];
    bool timing;                   /* X-Compute-Time / X-Queue-Time / X-Cache */
    uint64_t work_t0_ns;           /* body complete: processing starts */
    double queue_ms;               /* longest batcher queue wait of its images */
    /* Offloading (a pool, --http-threads N > 0; server.c, "Threads"): */
    bool nonblock;                 /* this pass must not wait: stop where it would */
    bool would_block;              /* ... and it stopped: nothing queued, nothing held */
    bool deferring;                /* the offload thread's pass: queue() keeps the answer */
    struct MHD_Response *deferred; /* that answer, queued when the connection resumes */
    unsigned deferred_status;
    enum MHD_Result deferred_ret;  /* the route's return value on that thread */
    uint8_t (*keys)[32];           /* the first pass's cache keys, reused by the second */
    int nkeys;
    struct MHD_Connection *conn;   /* for the offload thread */
    char *url;                     /* a copy for the offload thread */
};

/* One image through the pipeline. */
struct vs_srv_job {
    const uint8_t *data;
    size_t len;
    const char *filename;          /* for messages ("" when none) */
    uint8_t key[32];
    int alias;                     /* index of an identical earlier image, or -1 */
    int state;                     /* VS_RCACHE_* */
    struct vs_rcache_entry *entry;
    bool filled;                   /* claim completed (fill, fail or abandon) */
    bool done;                     /* logits hold the image's values */
    float *pixels;                 /* [3][H][W] for a claimed image */
    float *logits;                 /* its record: [num_labels] logits, then /predict's
                                      ranking (server.c, record_floats) */
    struct vs_batch_item item;
};

/* The one place that maps an engine status to an HTTP status. */
unsigned vs_serve_http_status(enum vs_status st);

/* Model, batcher and info are usable (acquire load of `loaded`). */
bool vs_serve_model_usable(const struct vs_server *s);

/* Whether the running forward pass has run past the stall limit (a hung
 * device, or a pass far slower than the passes before it); its age and
 * the limit in *run_s and *limit_s when not NULL (0 and 0 while loading,
 * age 0 when no pass runs), from one reading.  The first call of a stall
 * logs a warning.  The health routes answer 503 "stalled" meanwhile,
 * /health/live included, so that an orchestrator restarts the process. */
bool vs_serve_stalled(struct vs_server *s, double *run_s, double *limit_s);

/* Queues a response with the common headers (request id, no-store, CORS,
 * rate-limit and timing headers); takes ownership of body. */
enum MHD_Result vs_serve_respond(struct req *r, struct MHD_Connection *c, unsigned status,
                                 const char *content_type, struct vs_jbuf *body,
                                 const char *extra_name, const char *extra_value);
/* Queues a static body (not copied: must outlive the response). */
enum MHD_Result vs_serve_respond_static(struct req *r, struct MHD_Connection *c,
                                        unsigned status, const char *content_type,
                                        const void *data, size_t len);
/* {"<r->err_key>": "..."} with the given status; Retry-After on 429/503. */
enum MHD_Result vs_serve_error(struct req *r, struct MHD_Connection *c, unsigned status,
                               const char *extra_name, const char *extra_value,
                               const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* Runs jobs[0..n) through cache + batcher (their data/len/filename set,
 * the rest zero).  On success every job (or its alias) has logits; on
 * failure *bad is the image at fault or -1.  Sets r's timing fields. */
enum vs_status vs_serve_classify(struct req *r, struct vs_srv_job *jobs, int n,
                                 uint64_t deadline_ns, int *bad, struct vs_err *err);
/* Frees what jobs hold (after classify, success or not). */
void vs_serve_jobs_free(struct vs_server *s, struct vs_srv_job *jobs, int n);
/* The logits of job i (following aliases): the first num_labels floats of
 * its record. */
const float *vs_serve_job_logits(const struct vs_srv_job *jobs, int i);

/* Runs n preprocessed images pixels[n][3][H][W] through the batcher (no
 * cache) into logits[n][num_labels]. */
enum vs_status vs_serve_run_pixels(struct req *r, const float *pixels, int n, float *logits,
                                   uint64_t deadline_ns, struct vs_err *err);

/* The request's deadline (headers time + --request-timeout-s). */
uint64_t vs_serve_deadline(const struct req *r);

/* An upper bound on the number of values in JSON text s[0..n) (commas
 * outside strings, plus one), found without parsing it: jansson spends
 * ~40-100 bytes per value, so a JSON route checks this against what it
 * can use before handing the body to json_loadb (a 20 MiB body of "0,"
 * would otherwise cost ~1 GiB while parsed). */
size_t vs_serve_json_values(const char *s, size_t n);

/* Route handlers (web.c, routes_hf.c, routes_v2.c). */
enum vs_status vs_serve_web_init(struct vs_server *s, struct vs_err *err);
enum MHD_Result vs_serve_web_get(struct req *r, struct MHD_Connection *c);
enum MHD_Result vs_serve_hf_predict(struct req *r, struct MHD_Connection *c, const char *url);
enum MHD_Result vs_serve_v2_get(struct req *r, struct MHD_Connection *c, const char *url);
enum MHD_Result vs_serve_v2_infer(struct req *r, struct MHD_Connection *c, const char *url);

#endif
