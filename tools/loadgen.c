/* loadgen.c: `vs-loadgen`, a closed-loop HTTP load generator for
 * vitserve's prediction routes.  N threads, one keep-alive connection each,
 * send the same image (raw body) as fast as answers come back for a fixed
 * time, and report requests/s, latency percentiles and status counts.
 * With --distinct, each request appends a unique 8-byte tail after the
 * image's end marker (ignored by the decoders, as by Pillow) so that every
 * request is a cache miss while decoding stays identical.  Python clients
 * top out far below what the server answers from its cache, hence C.
 *
 * usage: vs-loadgen --port P [--host 127.0.0.1] [--path /predict?top_k=5]
 *                   --file IMAGE [--concurrency 32] [--seconds 10]
 *                   [--warmup 1] [--distinct] [--json]
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/vs.h"

struct opts {
    const char *host, *path, *file;
    int port, conc;
    double seconds, warmup;
    bool distinct, json;
    uint8_t *body;
    size_t len;
};

struct worker {
    const struct opts *o;
    int id;
    double t_start, t_measure, t_end;
    double *lat;            /* ms, measured window only */
    size_t nlat, caplat;
    uint64_t status[6];     /* by hundreds: 1xx..5xx, [0] = transport errors */
};

static int dial(const struct opts *o)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)o->port)};
    if (inet_pton(AF_INET, o->host, &a.sin_addr) != 1 ||
        connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static bool send_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        if (w <= 0) {
            if (w < 0 && errno == EINTR) continue;
            return false;
        }
        c += w;
        n -= (size_t)w;
    }
    return true;
}

/* The value of the Content-Length header in head[0..end), or -1.  Looks
 * only at line starts: the generator shares the cores with the server it
 * measures, so its own work per response is kept small. */
static long long content_length(const char *head, const char *end)
{
    static const char key[] = "content-length:";
    const size_t kl = sizeof key - 1;
    for (const char *p = head; p && p < end; p = memchr(p, '\n', (size_t)(end - p))) {
        p++;
        if ((size_t)(end - p) >= kl && (*p == 'c' || *p == 'C') && !strncasecmp(p, key, kl))
            return strtoll(p + kl, NULL, 10);
    }
    return -1;
}

/* Reads one response; returns its status code or -1 (connection unusable). */
static int read_response(int fd, char *buf, size_t cap)
{
    size_t have = 0;
    char *end = NULL;
    while (!end) {
        if (have + 1 >= cap) return -1;
        ssize_t r = recv(fd, buf + have, cap - 1 - have, 0);
        if (r <= 0) return -1;
        have += (size_t)r;
        buf[have] = '\0';
        end = strstr(buf, "\r\n\r\n");
    }
    int status = atoi(buf + 9);
    size_t head = (size_t)(end + 4 - buf);
    long long cl = content_length(buf, end);
    if (cl < 0) return -1;            /* the server always sends a length */
    size_t body = (size_t)cl, got = have - head;
    while (got < body) {
        ssize_t r = recv(fd, buf, cap - 1, 0);
        if (r <= 0) return -1;
        got += (size_t)r;
    }
    return status;
}

static void *run(void *arg)
{
    struct worker *w = arg;
    const struct opts *o = w->o;
    size_t extra = o->distinct ? 8 : 0;
    char head[512];
    const int hl = snprintf(head, sizeof head,
                            "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/octet-stream\r\n"
                            "Content-Length: %zu\r\n\r\n", o->path, o->host, o->len + extra);
    /* The request is built once; --distinct rewrites only its 8-byte tail. */
    uint8_t *req = hl > 0 && (size_t)hl < sizeof head ? malloc((size_t)hl + o->len + extra) : NULL;
    char *resp = malloc(1 << 16);
    if (!req || !resp) {
        free(req);
        free(resp);
        return NULL;
    }
    memcpy(req, head, (size_t)hl);
    memcpy(req + hl, o->body, o->len);
    int fd = -1;
    uint64_t seq = (uint64_t)w->id << 40;
    for (;;) {
        double now = vs_now_ms() / 1000.0;
        if (now >= w->t_end) break;
        if (fd < 0 && (fd = dial(o)) < 0) {
            w->status[0]++;
            usleep(1000);
            continue;
        }
        if (extra) {
            seq++;
            memcpy(req + hl + o->len, &seq, 8);
        }
        double t0 = vs_now_ms();
        int st = -1;
        if (send_all(fd, req, (size_t)hl + o->len + extra)) st = read_response(fd, resp, 1 << 16);
        double t1 = vs_now_ms();
        if (st < 0) {
            w->status[0]++;
            close(fd);
            fd = -1;
            continue;
        }
        if (t0 / 1000.0 < w->t_measure) continue;    /* warm-up */
        if (st >= 100 && st < 600) w->status[st / 100]++;
        if (w->nlat == w->caplat) {
            size_t nc = w->caplat ? w->caplat * 2 : 4096;
            double *nl = realloc(w->lat, nc * sizeof *nl);
            if (!nl) break;
            w->lat = nl;
            w->caplat = nc;
        }
        w->lat[w->nlat++] = t1 - t0;
    }
    if (fd >= 0) close(fd);
    free(req);
    free(resp);
    return NULL;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int usage(FILE *f, int status)
{
    fprintf(f, "usage: vs-loadgen --port P --file IMAGE [--host H] [--path P] "
               "[--concurrency N] [--seconds S] [--warmup S] [--distinct] [--json]\n");
    return status;
}

int main(int argc, char **argv)
{
    struct opts o = {.host = "127.0.0.1", .path = "/predict", .conc = 32, .seconds = 10, .warmup = 1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--distinct")) { o.distinct = true; continue; }
        if (!strcmp(a, "--json")) { o.json = true; continue; }
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return usage(stdout, 0);
        if (!v) { fprintf(stderr, "vs-loadgen: %s needs a value\n", a); return 2; }
        if (!strcmp(a, "--host")) o.host = v;
        else if (!strcmp(a, "--port")) o.port = atoi(v);
        else if (!strcmp(a, "--path")) o.path = v;
        else if (!strcmp(a, "--file")) o.file = v;
        else if (!strcmp(a, "--concurrency")) o.conc = atoi(v);
        else if (!strcmp(a, "--seconds")) o.seconds = atof(v);
        else if (!strcmp(a, "--warmup")) o.warmup = atof(v);
        else { fprintf(stderr, "vs-loadgen: unknown option %s\n", a); return 2; }
        i++;
    }
    if (!o.port || !o.file || o.conc < 1 || o.conc > 4096 || o.seconds <= 0)
        return usage(stderr, 2);
    struct vs_err err = {0};
    if (vs_read_file(o.file, 64u << 20, &o.body, &o.len, &err) != VS_OK) {
        fprintf(stderr, "vs-loadgen: %s\n", err.msg);
        return 1;
    }
    struct worker *w = calloc((size_t)o.conc, sizeof *w);
    pthread_t *t = calloc((size_t)o.conc, sizeof *t);
    if (!w || !t) return 1;
    double start = vs_now_ms() / 1000.0;
    for (int i = 0; i < o.conc; i++) {
        w[i] = (struct worker){.o = &o, .id = i + 1, .t_start = start,
                               .t_measure = start + o.warmup, .t_end = start + o.warmup + o.seconds};
        pthread_create(&t[i], NULL, run, &w[i]);
    }
    size_t n = 0;
    uint64_t status[6] = {0};
    for (int i = 0; i < o.conc; i++) {
        pthread_join(t[i], NULL);
        n += w[i].nlat;
        for (int k = 0; k < 6; k++) status[k] += w[i].status[k];
    }
    double *all = malloc((n ? n : 1) * sizeof *all);
    size_t k = 0;
    for (int i = 0; i < o.conc; i++) {
        if (w[i].nlat) memcpy(all + k, w[i].lat, w[i].nlat * sizeof *all);
        k += w[i].nlat;
        free(w[i].lat);
    }
    qsort(all, n, sizeof *all, cmp);
#define PCT(p) (n ? all[(size_t)((double)(n - 1) * (p))] : 0.0)
    double rps = (double)n / o.seconds;
    if (o.json)
        printf("{\"concurrency\":%d,\"seconds\":%.1f,\"distinct\":%s,\"requests\":%zu,\"rps\":%.1f,"
               "\"p50_ms\":%.3f,\"p90_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f,"
               "\"status_2xx\":%llu,\"status_4xx\":%llu,\"status_5xx\":%llu,\"transport_errors\":%llu}\n",
               o.conc, o.seconds, o.distinct ? "true" : "false", n, rps, PCT(0.5), PCT(0.9),
               PCT(0.99), n ? all[n - 1] : 0.0, (unsigned long long)status[2],
               (unsigned long long)status[4], (unsigned long long)status[5],
               (unsigned long long)status[0]);
    else
        printf("%d connections, %.1f s%s: %zu requests, %.1f req/s, p50 %.2f ms, p90 %.2f ms, "
               "p99 %.2f ms, max %.2f ms; 2xx %llu, 4xx %llu, 5xx %llu, transport errors %llu\n",
               o.conc, o.seconds, o.distinct ? " (distinct images)" : "", n, rps, PCT(0.5),
               PCT(0.9), PCT(0.99), n ? all[n - 1] : 0.0, (unsigned long long)status[2],
               (unsigned long long)status[4], (unsigned long long)status[5],
               (unsigned long long)status[0]);
    free(all);
    free(w);
    free(t);
    free(o.body);
    return status[2] > 0 ? 0 : 1;
}
