/* cmd_serve.c: `vitserve serve` — the option table, signal handling and the
 * main thread's life cycle around src/serve (start, wait, drain, stop).
 *
 * SIGTERM, SIGINT and SIGHUP are blocked before any thread starts (so
 * every server thread inherits the mask) and collected here with
 * sigtimedwait(); no asynchronous signal handler runs.  SIGHUP re-reads
 * --api-keys-file (keys from --api-key / VITSERVE_API_KEYS are fixed: a
 * running process's environment cannot be changed from outside).  A signal drains gracefully: exit 0
 * once every accepted request is answered, 1 if --shutdown-grace-s ran out
 * first or the model failed to load.  Runs on the main thread only.
 */
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "commands.h"
#include "options.h"
#include "common/vs.h"
#include "model/model.h"
#include "serve/serve.h"
#include "serve/slog.h"

/* Reads PORT / HOST (as container platforms set them) under the
 * VITSERVE_* variables: applied as defaults, so flags and VITSERVE_PORT /
 * VITSERVE_HOST still win. */
static const char *platform_default(const char *env, const char *fallback)
{
    const char *v = getenv(env);
    return v && *v ? v : fallback;
}

/* The joined --api-key list lives until exit (options.h); a global
 * reference keeps it reachable for the leak checker. */
static const char *g_api_keys;

int vs_cmd_serve(int argc, char **argv)
{
    const char *host, *model, *device, *precision, *log_level;
    const char *api_keys = NULL, *api_keys_file, *cors_origins, *rate_limit;
    bool trust_proxy = false;
    size_t rl_clients;
    int port, max_batch, batch_timeout_ms, max_queue, threads, http_threads, max_conn, idle_s;
    double request_timeout_s, cache_ttl_s, grace_s, stall_s;
    size_t cache_entries, max_upload, max_pixels;
    char port_def[16];
    const char *penv = platform_default("PORT", "7860");
    char *pend = NULL;
    long pv = strtol(penv, &pend, 10);
    if (pend == penv || *pend || pv < 0 || pv > 65535) {
        if (!vs_options_wants_help(argc, argv)) {
            fprintf(stderr, "vitserve serve: $PORT: '%s' is not a port number (0-65535)\n", penv);
            return 2;
        }
        pv = 7860;   /* only --help follows */
    }
    snprintf(port_def, sizeof port_def, "%ld", pv);
    const char *host_def = platform_default("HOST", "0.0.0.0");
    char http_def[16];
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    snprintf(http_def, sizeof http_def, "%ld", cores < 1 ? 1 : cores > 64 ? 64 : cores);

    const struct vs_option opts[] = {
        {"host", 0, "VITSERVE_HOST", VS_OPT_STRING, &host, 0, 0, host_def, "ADDR",
         "address to bind (also $HOST)", NULL},
        {"port", 'p', "VITSERVE_PORT", VS_OPT_INT, &port, 0, 65535, port_def, "PORT",
         "TCP port; 0 picks a free one (also $PORT)", NULL},
        {"model", 'm', "VITSERVE_MODEL", VS_OPT_STRING, &model, 0, 0,
         "google/vit-base-patch16-224", "DIR|ID", "model folder or Hugging Face hub id", NULL},
        {"device", 0, "VITSERVE_DEVICE", VS_OPT_STRING, &device, 0, 0, "auto", "DEV",
         "compute device: auto, cpu, cuda or cuda:N", NULL},
        {"precision", 0, "VITSERVE_PRECISION", VS_OPT_STRING, &precision, 0, 0, "fp32", NULL,
         "compute precision", "fp32|int8|fp16|bf16"},
        {"threads", 't', "VITSERVE_THREADS", VS_OPT_INT, &threads, 0, 1024, "0", NULL,
         "CPU compute threads for the forward pass (0 = all cores)", NULL},
        {"http-threads", 0, "VITSERVE_HTTP_THREADS", VS_OPT_INT, &http_threads, 0, 1024, http_def,
         NULL,
         "HTTP threads (a pool; default: one per core): they answer cache hits, and a request "
         "that waits for the engine gets a thread of its own; 0 = one thread per connection",
         NULL},
        {"max-connections", 0, "VITSERVE_MAX_CONNECTIONS", VS_OPT_INT, &max_conn, 1, 65536,
         "512", NULL, "concurrent connections accepted", NULL},
        {"idle-timeout-s", 0, "VITSERVE_IDLE_TIMEOUT_S", VS_OPT_INT, &idle_s, 1, 3600, "30",
         "SECONDS", "close a connection idle (or stalled mid-request) this long", NULL},
        {"max-batch", 0, "VITSERVE_MAX_BATCH", VS_OPT_INT, &max_batch, 1, 1024, "32", NULL,
         "largest number of images per forward pass", NULL},
        {"batch-timeout-ms", 0, "VITSERVE_BATCH_TIMEOUT_MS", VS_OPT_INT, &batch_timeout_ms, 0,
         60000, "5", "MS", "longest the oldest queued image waits for company", NULL},
        {"max-queue", 0, "VITSERVE_MAX_QUEUE", VS_OPT_INT, &max_queue, 1, 1000000, "256", NULL,
         "queued images before requests are refused with 429", NULL},
        {"request-timeout-s", 0, "VITSERVE_REQUEST_TIMEOUT_S", VS_OPT_DOUBLE, &request_timeout_s,
         0.001, 86400, "30", "SECONDS", "per-request deadline (504 past it)", NULL},
        {"cache-entries", 0, "VITSERVE_CACHE_ENTRIES", VS_OPT_SIZE, &cache_entries, 0, 1e8,
         "1000", "N", "result-cache capacity in images (0 disables the cache)", NULL},
        {"cache-ttl-s", 0, "VITSERVE_CACHE_TTL_S", VS_OPT_DOUBLE, &cache_ttl_s, 0, 1e9, "1800",
         "SECONDS", "result-cache entry lifetime (0 = no expiry)", NULL},
        {"max-upload-bytes", 0, "VITSERVE_MAX_UPLOAD_BYTES", VS_OPT_SIZE, &max_upload, 1,
         4294967296.0, "20MiB", NULL, "largest request body (413 above)", NULL},
        {"max-pixels", 0, "VITSERVE_MAX_PIXELS", VS_OPT_SIZE, &max_pixels, 1, 1e12, "89478485",
         "N", "largest decoded image in pixels (413 above; Pillow's limit)", NULL},
        {"stall-timeout-s", 0, "VITSERVE_STALL_TIMEOUT_S", VS_OPT_DOUBLE, &stall_s, 0, 1e6, "0",
         "SECONDS", "a forward pass running longer than this makes /health, /health/live and "
         "/health/ready answer 503 \"stalled\", so that an orchestrator restarts a hung "
         "device (0 = automatic: 20 times a full batch's time going by the fastest pass so far, "
         "at least 60 s)", NULL},
        {"shutdown-grace-s", 0, "VITSERVE_SHUTDOWN_GRACE_S", VS_OPT_DOUBLE, &grace_s, 0, 3600,
         "30", "SECONDS", "on SIGTERM, how long in-flight requests may take to finish", NULL},
        {"log-level", 0, "VITSERVE_LOG_LEVEL", VS_OPT_STRING, &log_level, 0, 0, "info", NULL,
         "least severe log lines written (JSON on stderr)", "debug|info|warn|error"},
        {"api-key", 0, "VITSERVE_API_KEYS", VS_OPT_LIST, &api_keys, 0, 0, NULL, "KEY",
         "require Authorization: Bearer KEY on prediction routes (repeatable; the variable "
         "takes a comma-separated list)", NULL},
        {"api-keys-file", 0, "VITSERVE_API_KEYS_FILE", VS_OPT_STRING, &api_keys_file, 0, 0, "",
         "FILE", "more API keys, one per line or comma-separated; re-read on SIGHUP", NULL},
        {"cors-origins", 0, "VITSERVE_CORS_ORIGINS", VS_OPT_STRING, &cors_origins, 0, 0, "*",
         "LIST", "origins allowed by CORS: *, none, or a comma-separated list", NULL},
        {"rate-limit", 0, "VITSERVE_RATE_LIMIT", VS_OPT_STRING, &rate_limit, 0, 0, "", "N/UNIT",
         "per-client token bucket for predictions, e.g. 10/minute (UNIT second, minute or "
         "hour; empty = off)", NULL},
        {"rate-limit-clients", 0, "VITSERVE_RATE_LIMIT_CLIENTS", VS_OPT_SIZE, &rl_clients, 1,
         1e8, "10000", "N", "clients tracked by the rate limiter (least recent forgotten)", NULL},
        {"trust-proxy", 0, "VITSERVE_TRUST_PROXY", VS_OPT_FLAG, &trust_proxy, 0, 0, NULL, NULL,
         "rate-limit by the right-most X-Forwarded-For address (behind one reverse proxy)",
         NULL},
    };
    char *pos[1];
    int npos;
    int rc = vs_options_parse(argv[0], "[options]",
                              "Serve a ViT image classifier over HTTP: POST /predict, /predict/batch, "
                              "POST / (Hugging Face\nInference API), /v2 (KServe), a web page on "
                              "GET /, /docs, /openapi.json,\n/health, /health/live, "
                              "/health/ready, /metrics (docs/http-api.md).",
                              opts, VS_ARRAY_LEN(opts), argc, argv, pos, 0, &npos);
    if (rc) return rc == 1 ? 0 : rc;

    enum vs_log_level lvl;
    if (!vs_slog_parse_level(log_level, &lvl)) lvl = VS_LOG_INFO;
    vs_slog_set_level(lvl);

    struct vs_serve_config cfg = {0};
    vs_model_opts_default(&cfg.model_opts);
    if (!vs_device_parse(device, &cfg.model_opts.device, &cfg.model_opts.device_index)) {
        fprintf(stderr, "vitserve serve: --device: '%s' is not auto, cpu, cuda or cuda:N\n",
                device);
        return 2;
    }
    if (!vs_precision_parse(precision, &cfg.model_opts.precision)) {
        fprintf(stderr, "vitserve serve: --precision: '%s' is not known\n", precision);
        return 2;
    }
    cfg.model_opts.threads = threads;
    cfg.host = host;
    cfg.port = port;
    cfg.model = model;
    cfg.max_batch = max_batch;
    cfg.batch_timeout_ms = batch_timeout_ms;
    cfg.max_queue = max_queue;
    cfg.request_timeout_s = request_timeout_s;
    cfg.stall_timeout_s = stall_s;
    cfg.cache_entries = cache_entries;
    cfg.cache_ttl_s = cache_ttl_s;
    cfg.max_upload_bytes = max_upload;
    cfg.max_pixels = max_pixels;
    cfg.http_threads = http_threads;
    cfg.max_connections = max_conn;
    cfg.idle_timeout_s = idle_s;
    cfg.api_keys = g_api_keys = api_keys;
    cfg.api_keys_file = api_keys_file;
    cfg.cors_origins = cors_origins;
    cfg.rate_limit = rate_limit;
    cfg.rate_limit_clients = rl_clients;
    cfg.trust_proxy = trust_proxy;

    /* Block the shutdown signals in every thread; ignore SIGPIPE (a client
     * that hangs up must not kill the server). */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    struct vs_err err = {0};
    struct vs_server *srv = NULL;
    if (vs_serve_start(&cfg, &srv, &err)) {
        vs_slog_kv(VS_LOG_ERROR, "cannot start", "detail", err.msg);
        fprintf(stderr, "vitserve serve: %s\n", err.msg);
        return 1;
    }
    int sig = 0;
    while (!sig) {
        struct timespec ts = {0, 200 * 1000 * 1000};
        int got = sigtimedwait(&set, NULL, &ts);
        if (got == SIGHUP) {
            size_t n = 0;
            if (vs_serve_reload(srv, &n, &err)) {
                vs_slog_kv(VS_LOG_ERROR, "API keys not reloaded (previous keys stay)", "detail",
                           err.msg);
            } else {
                char num[32];
                snprintf(num, sizeof num, "%zu", n);
                vs_slog_kv(VS_LOG_INFO, "API keys reloaded", "keys", num);
            }
            continue;
        }
        if (got > 0) { sig = got; break; }
        if (vs_serve_state(srv, &err) == VS_SERVE_FAILED) {
            fprintf(stderr, "vitserve serve: %s\n", err.msg);
            vs_serve_destroy(srv);
            return 1;
        }
    }
    vs_slog_kv(VS_LOG_INFO, "shutting down", "signal", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    if (vs_serve_drain(srv, grace_s, &err)) {
        /* What still runs (a forward pass longer than the grace, a hung
         * device) holds threads that vs_serve_destroy would wait for,
         * without end for a hung device: exit now, and the kernel closes
         * those connections. */
        vs_slog_kv(VS_LOG_WARN, "grace period over", "detail", err.msg);
        vs_slog_kv(VS_LOG_INFO, "stopped", "exit_status", "1");
        _exit(1);
    }
    vs_serve_destroy(srv);
    vs_slog_kv(VS_LOG_INFO, "stopped", "exit_status", "0");
    return 0;
}
