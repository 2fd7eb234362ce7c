/* serve.h: the door of the serve module — `vitserve serve`, an HTTP server
 * (libmicrohttpd) in front of one model, with dynamic batching, a result
 * cache, limits, Prometheus metrics, JSON logs and graceful shutdown.
 *
 * Life cycle, driven by one thread (the CLI's main thread):
 *   vs_serve_start()   binds the socket at once and loads the model on a
 *                      background thread; /health answers 503 "loading"
 *                      until the model is loaded and warmed up (one forward).
 *   vs_serve_state()   polled by the caller (e.g. to exit if loading failed).
 *   vs_serve_drain()   on SIGTERM: stop accepting, /health/ready -> 503,
 *                      wait for every accepted request within a grace time.
 *   vs_serve_destroy() stops the HTTP threads, the batcher, frees the model.
 * Signals are the caller's business: block SIGTERM/SIGINT before start (the
 * server's threads inherit the mask) and wait for them with sigwait.
 * HTTP routes and behaviour: docs/http-api.md; batching: docs/batcher.md.
 */
#ifndef VS_SERVE_SERVE_H
#define VS_SERVE_SERVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/vs.h"
#include "model/model.h"

struct vs_serve_config {
    const char *host;             /* bind address ("0.0.0.0", "127.0.0.1", "::") */
    int port;                     /* 0 = any free port (see vs_serve_port) */
    const char *model;            /* --model: folder or hub id */
    struct vs_model_opts model_opts; /* device, precision, threads; max_batch is set from below */
    int max_batch;                /* images per forward pass */
    int batch_timeout_ms;         /* longest the oldest queued image waits for company */
    int max_queue;                /* queued images before 429 */
    double request_timeout_s;     /* per-request deadline (504 past it) */
    size_t cache_entries;         /* result-cache capacity; 0 disables */
    double cache_ttl_s;           /* entry lifetime; 0 = no expiry */
    size_t max_upload_bytes;      /* request body cap (413) */
    uint64_t max_pixels;          /* decoded pixel cap (413); 0 = Pillow's default */
    int http_threads;             /* 0: a thread per connection; N: a pool of N threads,
                                     requests that wait for the engine offloaded (server.c) */
    int max_connections;          /* concurrent connections */
    int idle_timeout_s;           /* close connections idle this long */
    double stall_timeout_s;       /* a forward pass running longer than this makes the
                                     health routes answer 503 "stalled"; 0 = automatic
                                     (server.c, stall_limit_s) */
    /* Looking after itself (docs/http-api.md "Auth, CORS, rate limits"): */
    const char *api_keys;         /* comma-separated keys, or NULL/"" */
    const char *api_keys_file;    /* keys file re-read by vs_serve_reload(), or NULL/"" */
    const char *cors_origins;     /* "*", "none"/"" or a comma-separated origin list */
    const char *rate_limit;       /* "N/second|minute|hour", or NULL/"" = off */
    size_t rate_limit_clients;    /* bucket-table bound (0 = 10000) */
    bool trust_proxy;             /* client address from X-Forwarded-For (right-most) */
};

struct vs_server;

enum vs_serve_state {
    VS_SERVE_LOADING,   /* socket open, model loading or warming up */
    VS_SERVE_READY,     /* serving */
    VS_SERVE_FAILED,    /* the model failed to load (see *why) */
    VS_SERVE_DRAINING,  /* shutting down: finishing accepted requests */
};

/* Binds and starts serving (503 until the model is ready).  Errors: the
 * address cannot be bound (VS_IO), bad config (VS_BAD_INPUT), VS_NOMEM. */
enum vs_status vs_serve_start(const struct vs_serve_config *cfg, struct vs_server **out,
                              struct vs_err *err);

/* The port actually bound (useful with port 0). */
int vs_serve_port(const struct vs_server *s);

/* The current state; for VS_SERVE_FAILED, why loading failed goes to *why
 * (may be NULL). */
enum vs_serve_state vs_serve_state(struct vs_server *s, struct vs_err *why);

/* Stops accepting connections and waits until every accepted request has
 * been answered, at most grace_s seconds (VS_TIMEOUT if some are still
 * running then). */
enum vs_status vs_serve_drain(struct vs_server *s, double grace_s, struct vs_err *err);

/* SIGHUP: re-reads the API keys file (the previous keys stay in force on
 * failure).  *nkeys (may be NULL) gets the number of keys now held. */
enum vs_status vs_serve_reload(struct vs_server *s, size_t *nkeys, struct vs_err *err);

/* Stops everything and frees; NULL is a no-op. */
void vs_serve_destroy(struct vs_server *s);

#endif
