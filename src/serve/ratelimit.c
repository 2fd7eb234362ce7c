/* ratelimit.c: bounded table of token buckets (see ratelimit.h).
 *
 * Layout: a pool of max_clients entries allocated once, a power-of-two hash
 * table of chains (indices into the pool, -1 = end) keyed by the first
 * bytes of the key's SHA-256, and a doubly linked LRU list through the
 * pool (head = most recent).  Unused entries sit on a free list.  Memory is
 * therefore fixed at creation: O(max_clients), whatever clients send.
 * Invariant: an entry is either free, or in exactly one chain and in the
 * LRU list.  One mutex guards everything; any thread.
 */
#include "ratelimit.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct bucket {
    uint8_t key[32];     /* SHA-256 of the client key */
    double tokens;       /* 0..limit, as of last_ns */
    uint64_t last_ns;
    int32_t hnext;       /* next in hash chain, -1 = end (or next free) */
    int32_t prev, next;  /* LRU neighbours, -1 = none */
};

struct vs_ratelimit {
    pthread_mutex_t mu;
    int limit, window_s;
    double rate;         /* tokens per nanosecond = limit / (window_s * 1e9) */
    struct bucket *pool;
    size_t cap, used;
    int32_t *table;      /* [mask + 1] chain heads */
    size_t mask;
    int32_t free_head, lru_head, lru_tail;
};

enum vs_status vs_ratelimit_parse(const char *spec, int *limit, int *window_s,
                                  struct vs_err *err)
{
    static const struct { const char *unit; int secs; } units[] = {
        {"s", 1},  {"sec", 1},    {"second", 1}, {"m", 60},     {"min", 60},
        {"minute", 60}, {"h", 3600}, {"hour", 3600},
    };
    const char *slash = spec ? strchr(spec, '/') : NULL;
    if (!slash) goto bad;
    char *end = NULL;
    errno = 0;
    long n = strtol(spec, &end, 10);
    if (end != slash || end == spec || errno || n < 1 || n > 1000000000L) goto bad;
    for (size_t i = 0; i < VS_ARRAY_LEN(units); i++) {
        if (!strcasecmp(slash + 1, units[i].unit)) {
            *limit = (int)n;
            *window_s = units[i].secs;
            return VS_OK;
        }
    }
bad:
    return vs_err_set(err, VS_BAD_INPUT,
                      "--rate-limit: '%.60s' is not N/second, N/minute or N/hour (N >= 1)",
                      spec ? spec : "");
}

enum vs_status vs_ratelimit_create(int limit, int window_s, size_t max_clients,
                                   struct vs_ratelimit **out, struct vs_err *err)
{
    if (limit < 1 || window_s < 1 || max_clients < 1 || max_clients > (1u << 30))
        return vs_err_set(err, VS_BAD_INPUT,
                          "rate limit: invalid settings (limit %d, window %d s, %zu clients)",
                          limit, window_s, max_clients);
    struct vs_ratelimit *rl = calloc(1, sizeof *rl);
    size_t tsize = 16;
    while (tsize < 2 * max_clients) tsize <<= 1;  /* load factor <= 0.5 */
    if (rl) {
        rl->pool = calloc(max_clients, sizeof *rl->pool);
        rl->table = malloc(tsize * sizeof *rl->table);
    }
    if (!rl || !rl->pool || !rl->table) {
        if (rl) { free(rl->pool); free(rl->table); free(rl); }
        return vs_err_set(err, VS_NOMEM, "rate limit: out of memory for %zu clients",
                          max_clients);
    }
    pthread_mutex_init(&rl->mu, NULL);
    rl->limit = limit;
    rl->window_s = window_s;
    rl->rate = (double)limit / ((double)window_s * 1e9);
    rl->cap = max_clients;
    rl->mask = tsize - 1;
    for (size_t i = 0; i < tsize; i++) rl->table[i] = -1;
    for (size_t i = 0; i < max_clients; i++)
        rl->pool[i].hnext = i + 1 < max_clients ? (int32_t)(i + 1) : -1;
    rl->free_head = 0;
    rl->lru_head = rl->lru_tail = -1;
    *out = rl;
    return VS_OK;
}

void vs_ratelimit_destroy(struct vs_ratelimit *rl)
{
    if (!rl) return;
    pthread_mutex_destroy(&rl->mu);
    free(rl->pool);
    free(rl->table);
    free(rl);
}

static size_t slot_of(const struct vs_ratelimit *rl, const uint8_t key[32])
{
    uint64_t h;
    memcpy(&h, key, sizeof h);
    return (size_t)h & rl->mask;
}

static void lru_unlink(struct vs_ratelimit *rl, int32_t i)
{
    struct bucket *b = &rl->pool[i];
    if (b->prev >= 0) rl->pool[b->prev].next = b->next; else rl->lru_head = b->next;
    if (b->next >= 0) rl->pool[b->next].prev = b->prev; else rl->lru_tail = b->prev;
    b->prev = b->next = -1;
}

static void lru_push_head(struct vs_ratelimit *rl, int32_t i)
{
    struct bucket *b = &rl->pool[i];
    b->prev = -1;
    b->next = rl->lru_head;
    if (rl->lru_head >= 0) rl->pool[rl->lru_head].prev = i;
    rl->lru_head = i;
    if (rl->lru_tail < 0) rl->lru_tail = i;
}

/* Removes entry i from its chain and the LRU list; puts it on the free list. */
static void drop(struct vs_ratelimit *rl, int32_t i)
{
    int32_t *pp = &rl->table[slot_of(rl, rl->pool[i].key)];
    while (*pp != i) pp = &rl->pool[*pp].hnext;
    *pp = rl->pool[i].hnext;
    lru_unlink(rl, i);
    rl->pool[i].hnext = rl->free_head;
    rl->free_head = i;
    rl->used--;
}

static uint64_t window_ns(const struct vs_ratelimit *rl)
{
    return (uint64_t)rl->window_s * 1000000000ull;
}

void vs_ratelimit_take(struct vs_ratelimit *rl, const char *key, uint64_t now_ns,
                       struct vs_ratelimit_result *res)
{
    uint8_t d[32];
    vs_sha256(key, strlen(key), d);
    pthread_mutex_lock(&rl->mu);
    /* Expiry: buckets idle for a whole window are full again, i.e. equal to
     * absent ones; drop a few from the cold end on every call. */
    for (int k = 0; k < 2 && rl->lru_tail >= 0; k++) {
        const struct bucket *t = &rl->pool[rl->lru_tail];
        if (now_ns < t->last_ns || now_ns - t->last_ns < window_ns(rl)) break;
        drop(rl, rl->lru_tail);
    }
    size_t slot = slot_of(rl, d);
    int32_t i = rl->table[slot];
    while (i >= 0 && memcmp(rl->pool[i].key, d, 32)) i = rl->pool[i].hnext;
    struct bucket *b;
    if (i >= 0) {
        b = &rl->pool[i];
        /* Refill for the time since the last request (a clock that went
         * backwards refills nothing). */
        double dt = now_ns > b->last_ns ? (double)(now_ns - b->last_ns) : 0.0;
        b->tokens = fmin((double)rl->limit, b->tokens + dt * rl->rate);
        lru_unlink(rl, i);
    } else {
        if (rl->free_head < 0) drop(rl, rl->lru_tail); /* full: forget the LRU client */
        i = rl->free_head;
        b = &rl->pool[i];
        rl->free_head = b->hnext;
        memcpy(b->key, d, 32);
        b->tokens = rl->limit;
        b->hnext = rl->table[slot];
        rl->table[slot] = i;
        rl->used++;
    }
    b->last_ns = now_ns;
    lru_push_head(rl, i);
    res->allowed = b->tokens >= 1.0;
    if (res->allowed) b->tokens -= 1.0;
    res->limit = rl->limit;
    res->window_s = rl->window_s;
    res->remaining = (int)floor(b->tokens);
    /* Seconds (rounded up) until full, and until one whole token. */
    double to_full = ((double)rl->limit - b->tokens) / rl->rate / 1e9;
    double to_one = (1.0 - b->tokens) / rl->rate / 1e9;
    res->reset_s = (int)ceil(to_full - 1e-9);
    if (res->reset_s < 0) res->reset_s = 0;
    res->retry_after_s = res->allowed ? 0 : VS_MAX(1, (int)ceil(to_one - 1e-9));
    pthread_mutex_unlock(&rl->mu);
}

size_t vs_ratelimit_clients(struct vs_ratelimit *rl)
{
    pthread_mutex_lock(&rl->mu);
    size_t n = rl->used;
    pthread_mutex_unlock(&rl->mu);
    return n;
}

void vs_ratelimit_headers(const struct vs_ratelimit_result *res, char *policy,
                          size_t policy_size, char *state, size_t state_size)
{
    snprintf(policy, policy_size, "%d;w=%d", res->limit, res->window_s);
    snprintf(state, state_size, "limit=%d, remaining=%d, reset=%d", res->limit,
             res->remaining, res->reset_s);
}
