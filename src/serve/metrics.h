/* metrics.h: the server's Prometheus metrics — counters and histograms
 * updated by the HTTP and batcher threads, rendered as text exposition
 * format 0.0.4 by one function, section by section.
 *
 * Routes are a closed set (vs_metrics_route), so label cardinality is
 * bounded whatever clients send: unknown paths count as route="other".
 * Threads: every function may be called from any thread (one mutex).
 */
#ifndef VS_SERVE_METRICS_H
#define VS_SERVE_METRICS_H

#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/vs.h"
#include "jbuf.h"

enum vs_metrics_route {
    VS_ROUTE_PREDICT, VS_ROUTE_PREDICT_BATCH, VS_ROUTE_HEALTH, VS_ROUTE_LIVE,
    VS_ROUTE_READY, VS_ROUTE_METRICS,
    VS_ROUTE_ROOT,            /* "/": the web page (GET), HF Inference API (POST) */
    VS_ROUTE_DOCS, VS_ROUTE_OPENAPI,
    VS_ROUTE_HF_MODEL,        /* "/models/{model_id}" */
    VS_ROUTE_V2, VS_ROUTE_V2_LIVE, VS_ROUTE_V2_READY,
    VS_ROUTE_V2_MODEL,        /* "/v2/models/{model}" */
    VS_ROUTE_V2_MODEL_READY,  /* "/v2/models/{model}/ready" */
    VS_ROUTE_V2_INFER,        /* "/v2/models/{model}/infer" */
    VS_ROUTE_OTHER, VS_ROUTE_COUNT
};

/* "/predict", ..., "other". */
const char *vs_metrics_route_name(enum vs_metrics_route r);

struct vs_metrics;

enum vs_status vs_metrics_create(struct vs_metrics **out, struct vs_err *err);
void vs_metrics_destroy(struct vs_metrics *m);

/* One finished HTTP request. */
void vs_metrics_http(struct vs_metrics *m, const char *method, enum vs_metrics_route route,
                     int status, double seconds);
/* One inference request (/predict, /predict/batch, POST /, /models/{id},
 * v2 infer) that reached the
 * model or the cache; seconds = its processing time. */
void vs_metrics_inference(struct vs_metrics *m, enum vs_metrics_route route, double seconds);
/* One batch of n items and each item's time in the queue. */
void vs_metrics_batch(struct vs_metrics *m, int n, const double *wait_s);

/* Values owned by other parts of the server, sampled at render time. */
struct vs_metrics_extra {
    int queue_depth;
    uint64_t cache_hits, cache_misses, cache_evictions, cache_expirations, cache_coalesced;
    uint64_t cache_entries, cache_capacity;
    int ready;                  /* 1 when the model is loaded and warm */
    const char *model, *backend, *device, *precision; /* model_info labels ("" if loading) */
    int num_labels, max_batch;
    bool gpu, gpu_lost;         /* a CUDA backend serves; its device failed */
    uint64_t gpu_mem_used, gpu_mem_total; /* bytes (0 = unknown) */
    double gpu_util;            /* 0..1 from NVML, < 0 unknown */
    double pass_s;              /* the running forward pass's time so far (0: none) */
    bool stalled;               /* ... past the stall limit */
    double stall_limit_s;       /* the limit (0 while loading) */
};

/* Renders every metric into out (appends). */
void vs_metrics_render(struct vs_metrics *m, const struct vs_metrics_extra *x,
                       struct vs_jbuf *out);

#endif
