/* metrics.c: counters, histograms and the /metrics page (see metrics.h).
 *
 * Invariants: histogram bucket counts are stored per bucket (not
 * cumulative) and made cumulative while rendering, ending with +Inf = count;
 * every metric family is rendered with HELP and TYPE lines even before its
 * first observation, so scrapers see a stable set.  One mutex guards all
 * state; rendering copies under it and formats the copy.  Any thread.
 */
#include "metrics.h"

#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_BUCKETS 16
/* Room for every series the server can produce: 8 method labels (GET ...
 * PATCH, other) x every route x 16 statuses (it answers 15: 200 204 400 401
 * 404 405 413 415 422 429 431 500 503 504, and 0 for no answer).  A client
 * without a key reaches about 270 series on its own (404, 405, 204 and 431
 * on every route and method), so a smaller table would stop counting the
 * series that come later. */
#define MAX_HTTP_SERIES (8 * VS_ROUTE_COUNT * 16)

struct hist {
    const double *bounds;       /* upper bounds, ascending */
    int nb;                     /* number of finite bounds */
    uint64_t counts[MAX_BUCKETS + 1]; /* per bucket; [nb] = above the last bound */
    double sum;
    uint64_t count;
};

struct http_series {
    char method[8];
    enum vs_metrics_route route;
    int status;
    uint64_t n;
};

struct vs_metrics {
    pthread_mutex_t mu;
    struct http_series http[MAX_HTTP_SERIES];
    int nhttp;
    struct hist http_dur[VS_ROUTE_COUNT];
    uint64_t infer_n[VS_ROUTE_COUNT];
    struct hist infer_dur;
    struct hist batch_size, queue_wait;
    uint64_t batches, batched_items;
};

/* The original app's buckets for inference_duration_seconds (the issue). */
static const double INFER_BOUNDS[] = {0.01, 0.05, 0.1, 0.5, 1, 2, 5};
static const double HTTP_BOUNDS[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                     0.25, 0.5, 1, 2.5, 5, 10};
static const double BATCH_BOUNDS[] = {1, 2, 4, 8, 16, 32, 64, 128, 256};
static const double WAIT_BOUNDS[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                     0.1, 0.25, 0.5, 1, 2.5, 5, 10};

static const char *const ROUTE_NAMES[VS_ROUTE_COUNT] = {
    "/predict", "/predict/batch", "/health", "/health/live", "/health/ready",
    "/metrics", "/", "/docs", "/openapi.json", "/models/{model_id}", "/v2", "/v2/health/live",
    "/v2/health/ready", "/v2/models/{model}", "/v2/models/{model}/ready",
    "/v2/models/{model}/infer", "other"};

/* Routes that count as inference endpoints (inference_requests_total). */
static const enum vs_metrics_route INFER_ROUTES[] = {
    VS_ROUTE_PREDICT, VS_ROUTE_PREDICT_BATCH, VS_ROUTE_ROOT, VS_ROUTE_HF_MODEL,
    VS_ROUTE_V2_INFER};

const char *vs_metrics_route_name(enum vs_metrics_route r)
{
    return (unsigned)r < VS_ROUTE_COUNT ? ROUTE_NAMES[r] : "other";
}

static void hist_init(struct hist *h, const double *bounds, int nb)
{
    VS_ASSERT(nb <= MAX_BUCKETS);
    memset(h, 0, sizeof *h);
    h->bounds = bounds;
    h->nb = nb;
}

static void hist_observe(struct hist *h, double v)
{
    int i = 0;
    while (i < h->nb && v > h->bounds[i]) i++;  /* bucket: first bound >= v */
    h->counts[i]++;
    h->sum += v;
    h->count++;
}

enum vs_status vs_metrics_create(struct vs_metrics **out, struct vs_err *err)
{
    struct vs_metrics *m = calloc(1, sizeof *m);
    if (!m) return vs_err_set(err, VS_NOMEM, "metrics: out of memory");
    pthread_mutex_init(&m->mu, NULL);
    for (int r = 0; r < VS_ROUTE_COUNT; r++)
        hist_init(&m->http_dur[r], HTTP_BOUNDS, (int)VS_ARRAY_LEN(HTTP_BOUNDS));
    hist_init(&m->infer_dur, INFER_BOUNDS, (int)VS_ARRAY_LEN(INFER_BOUNDS));
    hist_init(&m->batch_size, BATCH_BOUNDS, (int)VS_ARRAY_LEN(BATCH_BOUNDS));
    hist_init(&m->queue_wait, WAIT_BOUNDS, (int)VS_ARRAY_LEN(WAIT_BOUNDS));
    *out = m;
    return VS_OK;
}

void vs_metrics_destroy(struct vs_metrics *m)
{
    if (!m) return;
    pthread_mutex_destroy(&m->mu);
    free(m);
}

void vs_metrics_http(struct vs_metrics *m, const char *method, enum vs_metrics_route route,
                     int status, double seconds)
{
    /* Methods outside the usual set collapse to "other" (bounded labels). */
    static const char *const known[] = {"GET", "POST", "HEAD", "PUT", "DELETE",
                                        "OPTIONS", "PATCH"};
    const char *mname = "other";
    for (size_t i = 0; i < VS_ARRAY_LEN(known); i++)
        if (method && !strcmp(method, known[i])) mname = known[i];
    if ((unsigned)route >= VS_ROUTE_COUNT) route = VS_ROUTE_OTHER;
    pthread_mutex_lock(&m->mu);
    int i = 0;
    while (i < m->nhttp && !(m->http[i].route == route && m->http[i].status == status &&
                             !strcmp(m->http[i].method, mname)))
        i++;
    if (i == m->nhttp && m->nhttp < MAX_HTTP_SERIES) {
        struct http_series *s = &m->http[m->nhttp++];
        snprintf(s->method, sizeof s->method, "%s", mname);
        s->route = route;
        s->status = status;
        s->n = 0;
    }
    if (i < m->nhttp) m->http[i].n++;
    hist_observe(&m->http_dur[route], seconds);
    pthread_mutex_unlock(&m->mu);
}

void vs_metrics_inference(struct vs_metrics *m, enum vs_metrics_route route, double seconds)
{
    if ((unsigned)route >= VS_ROUTE_COUNT) route = VS_ROUTE_OTHER;
    pthread_mutex_lock(&m->mu);
    m->infer_n[route]++;
    hist_observe(&m->infer_dur, seconds);
    pthread_mutex_unlock(&m->mu);
}

void vs_metrics_batch(struct vs_metrics *m, int n, const double *wait_s)
{
    pthread_mutex_lock(&m->mu);
    hist_observe(&m->batch_size, n);
    m->batches++;
    m->batched_items += (uint64_t)n;
    for (int i = 0; i < n; i++) hist_observe(&m->queue_wait, wait_s[i]);
    pthread_mutex_unlock(&m->mu);
}

/* ---- rendering -------------------------------------------------------- */

static void family(struct vs_jbuf *o, const char *name, const char *type, const char *help)
{
    vs_jbuf_printf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value with Prometheus escaping (backslash, quote, newline). */
static void label_value(struct vs_jbuf *o, const char *v)
{
    for (const char *p = v ? v : ""; *p; p++) {
        if (*p == '\\') vs_jbuf_puts(o, "\\\\");
        else if (*p == '"') vs_jbuf_puts(o, "\\\"");
        else if (*p == '\n') vs_jbuf_puts(o, "\\n");
        else vs_jbuf_add(o, p, 1);
    }
}

/* name_bucket{labels,le="..."} cumulative ..., _sum, _count.  labels is
 * either "" or `key="value"` already escaped. */
static void hist_render(struct vs_jbuf *o, const char *name, const char *labels,
                        const struct hist *h)
{
    uint64_t cum = 0;
    const char *sep = labels[0] ? "," : "";
    for (int i = 0; i < h->nb; i++) {
        cum += h->counts[i];
        vs_jbuf_printf(o, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, sep, h->bounds[i],
                       (unsigned long long)cum);
    }
    cum += h->counts[h->nb];
    vs_jbuf_printf(o, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep,
                   (unsigned long long)cum);
    if (labels[0]) {
        vs_jbuf_printf(o, "%s_sum{%s} %.9g\n%s_count{%s} %llu\n", name, labels, h->sum, name,
                       labels, (unsigned long long)h->count);
    } else {
        vs_jbuf_printf(o, "%s_sum %.9g\n%s_count %llu\n", name, h->sum, name,
                       (unsigned long long)h->count);
    }
}

/* Process figures from /proc (Linux); -1 where unavailable. */
struct proc_figures { double cpu_s, rss_bytes, open_fds, start_s; };

static void proc_read(struct proc_figures *p)
{
    p->cpu_s = p->rss_bytes = p->open_fds = p->start_s = -1;
    long tick = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
    char buf[1024];
    FILE *f = fopen("/proc/self/stat", "r");
    if (f) {
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        buf[n] = '\0';
        fclose(f);
        /* Fields after the parenthesised command name (which may hold
         * spaces): state is field 3; utime 14, stime 15, starttime 22. */
        char *q = strrchr(buf, ')');
        unsigned long long ut = 0, st = 0, start = 0;
        if (q && tick > 0 &&
            sscanf(q + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu "
                          "%*d %*d %*d %*d %*d %*d %llu", &ut, &st, &start) == 3) {
            p->cpu_s = (double)(ut + st) / (double)tick;
            FILE *s = fopen("/proc/stat", "r");
            if (s) {
                unsigned long long btime = 0;
                while (fgets(buf, sizeof buf, s))
                    if (sscanf(buf, "btime %llu", &btime) == 1) break;
                fclose(s);
                if (btime) p->start_s = (double)btime + (double)start / (double)tick;
            }
        }
    }
    f = fopen("/proc/self/statm", "r");
    if (f) {
        unsigned long long size, rss;
        if (fscanf(f, "%llu %llu", &size, &rss) == 2 && page > 0)
            p->rss_bytes = (double)rss * (double)page;
        fclose(f);
    }
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        int n = 0;
        struct dirent *e;
        while ((e = readdir(d)))
            if (e->d_name[0] != '.') n++;
        closedir(d);
        p->open_fds = n - 1; /* minus the directory stream's own fd */
    }
}

void vs_metrics_render(struct vs_metrics *m, const struct vs_metrics_extra *x,
                       struct vs_jbuf *o)
{
    struct vs_metrics *c = malloc(sizeof *c); /* snapshot, formatted unlocked */
    if (!c) { o->failed = true; return; }
    pthread_mutex_lock(&m->mu);
    memcpy(c, m, sizeof *c);
    pthread_mutex_unlock(&m->mu);
    char lab[128];

    /* Section: the original app's metrics. */
    family(o, "inference_requests_total", "counter",
           "Inference requests answered (model or cache), by endpoint.");
    for (size_t i = 0; i < VS_ARRAY_LEN(INFER_ROUTES); i++)
        vs_jbuf_printf(o, "inference_requests_total{endpoint=\"%s\"} %llu\n",
                       ROUTE_NAMES[INFER_ROUTES[i]],
                       (unsigned long long)c->infer_n[INFER_ROUTES[i]]);
    family(o, "inference_duration_seconds", "histogram",
           "Processing time of successful inference requests.");
    hist_render(o, "inference_duration_seconds", "", &c->infer_dur);

    /* Section: HTTP. */
    family(o, "http_requests_total", "counter", "HTTP requests by method, route and status.");
    for (int i = 0; i < c->nhttp; i++)
        vs_jbuf_printf(o, "http_requests_total{method=\"%s\",route=\"%s\",status=\"%d\"} %llu\n",
                       c->http[i].method, ROUTE_NAMES[c->http[i].route], c->http[i].status,
                       (unsigned long long)c->http[i].n);
    family(o, "http_request_duration_seconds", "histogram",
           "Time from request headers to response, by route.");
    for (int r = 0; r < VS_ROUTE_COUNT; r++) {
        snprintf(lab, sizeof lab, "route=\"%s\"", ROUTE_NAMES[r]);
        hist_render(o, "http_request_duration_seconds", lab, &c->http_dur[r]);
    }

    /* Section: batcher. */
    family(o, "batch_size", "histogram", "Images per forward pass.");
    hist_render(o, "batch_size", "", &c->batch_size);
    family(o, "queue_wait_seconds", "histogram",
           "Time an image waited in the batch queue before its forward pass.");
    hist_render(o, "queue_wait_seconds", "", &c->queue_wait);
    family(o, "queue_depth", "gauge", "Images waiting in the batch queue.");
    vs_jbuf_printf(o, "queue_depth %d\n", x->queue_depth);
    family(o, "batch_max_size", "gauge", "Configured largest batch (--max-batch).");
    vs_jbuf_printf(o, "batch_max_size %d\n", x->max_batch);

    /* Section: result cache. */
    family(o, "cache_hits_total", "counter", "Result-cache hits.");
    vs_jbuf_printf(o, "cache_hits_total %llu\n", (unsigned long long)x->cache_hits);
    family(o, "cache_misses_total", "counter", "Result-cache misses (computed by the model).");
    vs_jbuf_printf(o, "cache_misses_total %llu\n", (unsigned long long)x->cache_misses);
    family(o, "cache_coalesced_total", "counter",
           "Requests that waited for an identical request in flight (single flight).");
    vs_jbuf_printf(o, "cache_coalesced_total %llu\n", (unsigned long long)x->cache_coalesced);
    family(o, "cache_evictions_total", "counter", "Entries evicted by the LRU capacity.");
    vs_jbuf_printf(o, "cache_evictions_total %llu\n", (unsigned long long)x->cache_evictions);
    family(o, "cache_expirations_total", "counter", "Entries dropped after their TTL.");
    vs_jbuf_printf(o, "cache_expirations_total %llu\n",
                   (unsigned long long)x->cache_expirations);
    family(o, "cache_entries", "gauge", "Entries in the result cache.");
    vs_jbuf_printf(o, "cache_entries %llu\n", (unsigned long long)x->cache_entries);
    family(o, "cache_capacity", "gauge", "Configured capacity (--cache-entries).");
    vs_jbuf_printf(o, "cache_capacity %llu\n", (unsigned long long)x->cache_capacity);

    /* Section: model. */
    family(o, "model_ready", "gauge", "1 when the model is loaded and warmed up.");
    vs_jbuf_printf(o, "model_ready %d\n", x->ready ? 1 : 0);
    family(o, "model_info", "gauge", "The model being served (value is always 1).");
    vs_jbuf_puts(o, "model_info{model=\"");
    label_value(o, x->model);
    vs_jbuf_puts(o, "\",backend=\"");
    label_value(o, x->backend);
    vs_jbuf_puts(o, "\",device=\"");
    label_value(o, x->device);
    vs_jbuf_puts(o, "\",precision=\"");
    label_value(o, x->precision);
    vs_jbuf_printf(o, "\",num_labels=\"%d\"} 1\n", x->num_labels);
    family(o, "forward_pass_running_seconds", "gauge",
           "How long the forward pass running now has run (0 when none runs).");
    vs_jbuf_printf(o, "forward_pass_running_seconds %.3f\n", x->pass_s);
    family(o, "forward_stall_limit_seconds", "gauge",
           "A pass running longer is a stall (--stall-timeout-s; 0 while loading).");
    vs_jbuf_printf(o, "forward_stall_limit_seconds %.1f\n", x->stall_limit_s);
    family(o, "forward_stalled", "gauge",
           "1 while the running pass is past the stall limit (the health routes answer 503).");
    vs_jbuf_printf(o, "forward_stalled %d\n", x->stalled ? 1 : 0);

    /* Section: GPU (only with a CUDA backend). */
    if (x->gpu) {
        family(o, "gpu_device_lost", "gauge", "1 when the GPU failed and the model cannot serve.");
        vs_jbuf_printf(o, "gpu_device_lost %d\n", x->gpu_lost ? 1 : 0);
        if (x->gpu_mem_total) {
            family(o, "gpu_memory_used_bytes", "gauge", "GPU memory in use on the device.");
            vs_jbuf_printf(o, "gpu_memory_used_bytes %llu\n", (unsigned long long)x->gpu_mem_used);
            family(o, "gpu_memory_total_bytes", "gauge", "GPU memory of the device.");
            vs_jbuf_printf(o, "gpu_memory_total_bytes %llu\n", (unsigned long long)x->gpu_mem_total);
        }
        if (x->gpu_util >= 0) {
            family(o, "gpu_utilization_ratio", "gauge",
                   "Share of time the GPU was busy over NVML's last sample period.");
            vs_jbuf_printf(o, "gpu_utilization_ratio %.2f\n", x->gpu_util);
        }
    }

    /* Section: process. */
    struct proc_figures p;
    proc_read(&p);
    family(o, "process_cpu_seconds_total", "counter", "User and system CPU time spent.");
    vs_jbuf_printf(o, "process_cpu_seconds_total %.9g\n", p.cpu_s < 0 ? 0 : p.cpu_s);
    family(o, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
    vs_jbuf_printf(o, "process_resident_memory_bytes %.0f\n", p.rss_bytes < 0 ? 0 : p.rss_bytes);
    family(o, "process_open_fds", "gauge", "Number of open file descriptors.");
    vs_jbuf_printf(o, "process_open_fds %.0f\n", p.open_fds < 0 ? 0 : p.open_fds);
    family(o, "process_start_time_seconds", "gauge",
           "Start time of the process since the Unix epoch in seconds.");
    vs_jbuf_printf(o, "process_start_time_seconds %.3f\n", p.start_s < 0 ? 0 : p.start_s);
    free(c);
}
