/* rcache.c: LRU + TTL result cache with single-flight (see rcache.h).
 *
 * Data structure: a chained hash table of every live entry (ready or
 * pending) plus a doubly linked LRU list of the ready ones, head = most
 * recent.  One mutex guards both and every entry's mutable fields; one
 * condition variable (monotonic clock) wakes single-flight waiters.
 * Invariants (under the lock): a READY entry in the table is on the LRU
 * list; PENDING entries are in the table but not on the list; `count` is the
 * LRU length and never exceeds capacity after fill() returns; an entry's
 * refs count the table's reference (while linked) plus each caller's.
 * Values are written before the entry turns READY under the lock and never
 * change afterwards, so readers holding a reference read them lock-free.
 * Called from any thread (HTTP workers).
 */
#include "rcache.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum entry_state { ST_PENDING, ST_READY, ST_FAILED, ST_ABANDONED };

struct vs_rcache_entry {
    uint8_t key[32];
    enum entry_state state;
    int refs;
    int in_table;                       /* linked in the hash table */
    uint64_t stamp_ms;                  /* when filled (TTL origin) */
    struct vs_rcache_entry *hnext;      /* hash chain */
    struct vs_rcache_entry *prev, *next;/* LRU list (READY + in_table only) */
    struct vs_err fail;                 /* ST_FAILED, ST_ABANDONED: why */
    int n;
    float *values;                      /* n floats once READY */
};

struct vs_rcache {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t capacity;
    uint64_t ttl_ms;
    size_t nbuckets;                    /* power of two */
    struct vs_rcache_entry **buckets;
    struct vs_rcache_entry *head, *tail;
    size_t count;
    uint64_t hits, misses, evictions, expirations, waits;
};

enum vs_status vs_rcache_create(size_t capacity, uint64_t ttl_ms,
                                struct vs_rcache **out, struct vs_err *err)
{
    struct vs_rcache *c = calloc(1, sizeof *c);
    if (!c) return vs_err_set(err, VS_NOMEM, "result cache: out of memory");
    c->capacity = capacity;
    c->ttl_ms = ttl_ms;
    /* ~2 buckets per entry (pending ones included), at least 64. */
    size_t want = capacity < ((size_t)1 << 26) ? capacity * 2 : (size_t)1 << 27;
    c->nbuckets = 64;
    while (c->nbuckets < want) c->nbuckets *= 2;
    c->buckets = calloc(c->nbuckets, sizeof *c->buckets);
    pthread_condattr_t ca;
    if (!c->buckets || pthread_condattr_init(&ca)) {
        free(c->buckets);
        free(c);
        return vs_err_set(err, VS_NOMEM, "result cache: out of memory (%zu buckets)", want);
    }
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&c->mu, NULL);
    *out = c;
    return VS_OK;
}

static void entry_free(struct vs_rcache_entry *e)
{
    free(e->values);
    free(e);
}

/* Drops one reference; frees at zero.  Lock held. */
static void unref(struct vs_rcache_entry *e)
{
    VS_ASSERT(e->refs > 0);
    if (--e->refs == 0) entry_free(e);
}

void vs_rcache_destroy(struct vs_rcache *c)
{
    if (!c) return;
    for (size_t i = 0; i < c->nbuckets; i++) {
        struct vs_rcache_entry *e = c->buckets[i], *nx;
        for (; e; e = nx) {
            nx = e->hnext;
            e->in_table = 0;
            unref(e);
        }
    }
    free(c->buckets);
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

static size_t bucket_of(const struct vs_rcache *c, const uint8_t key[32])
{
    /* The key is a SHA-256: any 8 bytes of it are uniformly distributed. */
    uint64_t h;
    memcpy(&h, key, sizeof h);
    return (size_t)h & (c->nbuckets - 1);
}

static void lru_unlink(struct vs_rcache *c, struct vs_rcache_entry *e)
{
    if (e->prev) e->prev->next = e->next; else c->head = e->next;
    if (e->next) e->next->prev = e->prev; else c->tail = e->prev;
    e->prev = e->next = NULL;
    c->count--;
}

static void lru_push_head(struct vs_rcache *c, struct vs_rcache_entry *e)
{
    e->prev = NULL;
    e->next = c->head;
    if (c->head) c->head->prev = e; else c->tail = e;
    c->head = e;
    c->count++;
}

/* Removes e from the table (and the LRU list if ready), dropping the
 * table's reference.  Lock held. */
static void table_remove(struct vs_rcache *c, struct vs_rcache_entry *e)
{
    struct vs_rcache_entry **pp = &c->buckets[bucket_of(c, e->key)];
    while (*pp && *pp != e) pp = &(*pp)->hnext;
    VS_ASSERT(*pp == e);
    *pp = e->hnext;
    e->hnext = NULL;
    if (e->state == ST_READY) lru_unlink(c, e);
    e->in_table = 0;
    unref(e);
}

/* The table's entry for key, or NULL.  Lock held. */
static struct vs_rcache_entry *find(struct vs_rcache *c, const uint8_t key[32])
{
    struct vs_rcache_entry *e = c->buckets[bucket_of(c, key)];
    while (e && memcmp(e->key, key, 32)) e = e->hnext;
    return e;
}

/* A ready entry past its time to live at now_ms.  now_ms may be older
 * than the fill (the caller read its clock before another request filled
 * the entry): age 0, not a wrap. */
static bool expired(const struct vs_rcache *c, const struct vs_rcache_entry *e, uint64_t now_ms)
{
    return e->state == ST_READY && c->ttl_ms && now_ms > e->stamp_ms &&
           now_ms - e->stamp_ms >= c->ttl_ms;
}

/* A hit: most recently used, one more reference.  Lock held. */
static void take_hit(struct vs_rcache *c, struct vs_rcache_entry *e)
{
    lru_unlink(c, e);
    lru_push_head(c, e);
    e->refs++;
}

bool vs_rcache_peek(struct vs_rcache *c, const uint8_t key[32], uint64_t now_ms,
                    struct vs_rcache_entry **out)
{
    bool hit = false;
    pthread_mutex_lock(&c->mu);
    if (c->capacity > 0) {
        struct vs_rcache_entry *e = find(c, key);
        if (e && e->state == ST_READY && !expired(c, e, now_ms)) {
            take_hit(c, e);
            *out = e;
            hit = true;
        }
    }
    pthread_mutex_unlock(&c->mu);
    return hit;
}

void vs_rcache_count_hits(struct vs_rcache *c, unsigned n)
{
    pthread_mutex_lock(&c->mu);
    c->hits += n;
    pthread_mutex_unlock(&c->mu);
}

int vs_rcache_lookup(struct vs_rcache *c, const uint8_t key[32], uint64_t now_ms,
                     struct vs_rcache_entry **out)
{
    pthread_mutex_lock(&c->mu);
    if (c->capacity > 0) {
        struct vs_rcache_entry *e = find(c, key);
        if (e && expired(c, e, now_ms)) {
            c->expirations++;
            table_remove(c, e);
            e = NULL;
        }
        if (e && e->state == ST_READY) {
            take_hit(c, e);
            c->hits++;
            pthread_mutex_unlock(&c->mu);
            *out = e;
            return VS_RCACHE_HIT;
        }
        if (e) { /* PENDING: someone computes it */
            e->refs++;
            c->waits++;
            pthread_mutex_unlock(&c->mu);
            *out = e;
            return VS_RCACHE_PENDING;
        }
    }
    struct vs_rcache_entry *e = calloc(1, sizeof *e);
    if (!e) {
        pthread_mutex_unlock(&c->mu);
        return -1;
    }
    memcpy(e->key, key, 32);
    e->state = ST_PENDING;
    e->refs = 1;
    if (c->capacity > 0) {
        size_t b = bucket_of(c, key);
        e->hnext = c->buckets[b];
        c->buckets[b] = e;
        e->in_table = 1;
        e->refs++;
    }
    c->misses++;
    pthread_mutex_unlock(&c->mu);
    *out = e;
    return VS_RCACHE_CLAIMED;
}

enum vs_status vs_rcache_fill(struct vs_rcache *c, struct vs_rcache_entry *e,
                              const float *values, int n, uint64_t now_ms,
                              struct vs_err *err)
{
    VS_ASSERT(n > 0);
    float *copy = malloc((size_t)n * sizeof *copy);
    if (!copy) {
        struct vs_err why;
        vs_err_set(&why, VS_NOMEM, "result cache: out of memory for %d values", n);
        vs_rcache_fail(c, e, &why);
        if (err) *err = why;
        return VS_NOMEM;
    }
    memcpy(copy, values, (size_t)n * sizeof *copy);
    pthread_mutex_lock(&c->mu);
    VS_ASSERT(e->state == ST_PENDING);
    e->values = copy;
    e->n = n;
    e->stamp_ms = now_ms;
    e->state = ST_READY;
    if (e->in_table) {
        lru_push_head(c, e);
        while (c->count > c->capacity) {
            c->evictions++;
            table_remove(c, c->tail);
        }
    }
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    return VS_OK;
}

/* Ends a claim without values: records why, forgets the key, wakes the
 * waiters. */
static void end_claim(struct vs_rcache *c, struct vs_rcache_entry *e, enum entry_state to,
                      const struct vs_err *why, const char *default_msg)
{
    pthread_mutex_lock(&c->mu);
    VS_ASSERT(e->state == ST_PENDING);
    e->state = to;
    if (why) e->fail = *why;
    else vs_err_set(&e->fail, VS_BACKEND, "%s", default_msg);
    if (e->in_table) table_remove(c, e);
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

void vs_rcache_fail(struct vs_rcache *c, struct vs_rcache_entry *e, const struct vs_err *why)
{
    end_claim(c, e, ST_FAILED, why, "computation failed");
}

void vs_rcache_abandon(struct vs_rcache *c, struct vs_rcache_entry *e, const struct vs_err *why)
{
    end_claim(c, e, ST_ABANDONED, why, "the claimant gave the key up");
}

enum vs_status vs_rcache_wait(struct vs_rcache *c, struct vs_rcache_entry *e,
                              uint64_t deadline_ns, bool *abandoned, struct vs_err *err)
{
    if (abandoned) *abandoned = false;
    struct timespec ts = {
        .tv_sec = (time_t)(deadline_ns / 1000000000u),
        .tv_nsec = (long)(deadline_ns % 1000000000u),
    };
    pthread_mutex_lock(&c->mu);
    while (e->state == ST_PENDING) {
        if (!deadline_ns) {
            pthread_cond_wait(&c->cv, &c->mu);
        } else if (pthread_cond_timedwait(&c->cv, &c->mu, &ts) != 0 &&
                   e->state == ST_PENDING) {
            pthread_mutex_unlock(&c->mu);
            return vs_err_set(err, VS_TIMEOUT,
                              "timed out waiting for an identical request in flight");
        }
    }
    enum entry_state st = e->state;
    struct vs_err why = e->fail;
    pthread_mutex_unlock(&c->mu);
    if (st == ST_READY) return VS_OK;
    if (abandoned) *abandoned = st == ST_ABANDONED;
    if (err) *err = why;
    return why.status ? why.status : VS_BACKEND;
}

const float *vs_rcache_values(const struct vs_rcache_entry *e, int *n)
{
    if (n) *n = e->n;
    return e->values;
}

void vs_rcache_release(struct vs_rcache *c, struct vs_rcache_entry *e)
{
    if (!e) return;
    pthread_mutex_lock(&c->mu);
    unref(e);
    pthread_mutex_unlock(&c->mu);
}

void vs_rcache_stats(struct vs_rcache *c, struct vs_rcache_stats *s)
{
    pthread_mutex_lock(&c->mu);
    s->hits = c->hits;
    s->misses = c->misses;
    s->evictions = c->evictions;
    s->expirations = c->expirations;
    s->waits = c->waits;
    s->entries = c->count;
    s->capacity = c->capacity;
    pthread_mutex_unlock(&c->mu);
}
