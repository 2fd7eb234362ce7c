/* batcher.c: the dynamic batcher (contract in batcher.h).
 *
 * One mutex guards the queue (a singly linked FIFO of items), `depth`,
 * `waiters`, `stopping`, `hurry` and every item's _done and _taken flags
 * (`pass_t0_ns` is an atomic of its own, read by any thread).  Two
 * condition variables on the monotonic clock: `work` wakes the compute
 * thread (a submit, hurry, or stop),
 * `done` wakes submitters waiting for their items.  The compute thread
 * holds the lock only to take items and to mark them done: compute()
 * (which reads the items' pixels in place through `rows`) runs unlocked, so
 * submitters are never blocked by a forward pass.  Threads: see batcher.h.
 */
#include "batcher.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct vs_batcher {
    struct vs_batcher_config cfg;
    pthread_mutex_t mu;
    pthread_cond_t work, done;
    struct vs_batch_item *head, *tail;
    int depth;
    int waiters;    /* threads inside vs_batcher_wait (destroy waits them out) */
    bool stopping;
    bool hurry;     /* vs_batcher_hurry: no more waiting for company */
    _Atomic uint64_t pass_t0_ns;   /* when the running compute() began; 0: none runs */
    pthread_t thread;
    const float **rows; /* [max_batch]: the computed items' `in`, handed to compute() */
    float *out;     /* [max_batch][out_floats] */
    struct vs_batch_item **take, **live; /* [max_batch]: taken / computed items */
    double *waits;  /* [max_batch]: queue wait of each computed item */
};

static struct timespec to_ts(uint64_t ns)
{
    struct timespec ts = {.tv_sec = (time_t)(ns / 1000000000u),
                          .tv_nsec = (long)(ns % 1000000000u)};
    return ts;
}

/* Runs one batch of k taken items (lock not held). */
static void run_batch(struct vs_batcher *b, struct vs_batch_item **take, int k)
{
    const size_t outf = b->cfg.out_floats;
    struct vs_batch_item **live = b->live;
    double *waits = b->waits;
    int n = 0;
    uint64_t now = vs_now_ns();
    for (int i = 0; i < k; i++) {
        struct vs_batch_item *it = take[i];
        it->batch_size = 0;
        it->compute_ns = 0;
        it->queue_ns = now - it->_enqueued_ns;
        if (it->deadline_ns && now > it->deadline_ns) {
            /* Past its deadline: nobody waits for the answer any more. */
            it->status = VS_TIMEOUT;
            snprintf(it->msg, sizeof it->msg,
                     "request deadline passed after %.0f ms in the queue",
                     (double)(now - it->_enqueued_ns) / 1e6);
            continue;
        }
        if (it->gone && it->gone(it->gone_ctx)) {
            /* Its requester went away: nobody would read the answer. */
            it->status = VS_CANCELLED;
            snprintf(it->msg, sizeof it->msg,
                     "client disconnected; dropped after %.0f ms in the queue",
                     (double)(now - it->_enqueued_ns) / 1e6);
            continue;
        }
        /* row n of the batch: the submitter's own buffer, not a copy */
        b->rows[n] = it->in;
        waits[n] = (double)(now - it->_enqueued_ns) / 1e9;
        live[n++] = it;
    }
    if (n > 0) {
        struct vs_err err = {0};
        atomic_store_explicit(&b->pass_t0_ns, vs_now_ns() | 1, memory_order_relaxed);
        enum vs_status st = b->cfg.compute(b->cfg.ctx, b->rows, n, b->out, &err);
        atomic_store_explicit(&b->pass_t0_ns, 0, memory_order_relaxed);
        uint64_t took = vs_now_ns() - now;
        for (int i = 0; i < n; i++) {
            live[i]->status = st;
            live[i]->batch_size = n;
            live[i]->compute_ns = took;
            if (st == VS_OK) {
                live[i]->msg[0] = '\0';
                memcpy(live[i]->out, b->out + (size_t)i * outf, outf * sizeof(float));
            } else {
                snprintf(live[i]->msg, sizeof live[i]->msg, "%s",
                         err.msg[0] ? err.msg : vs_status_str(st));
            }
        }
        if (b->cfg.observe) b->cfg.observe(b->cfg.ctx, n, waits);
    }
}

static void *batcher_main(void *arg)
{
    struct vs_batcher *b = arg;
    const int maxb = b->cfg.max_batch;
    struct vs_batch_item **take = b->take;
    pthread_mutex_lock(&b->mu);
    for (;;) {
        while (!b->head && !b->stopping) pthread_cond_wait(&b->work, &b->mu);
        if (!b->head) break; /* stopping and drained */
        /* Wait for company: until max_batch items are queued or the oldest
         * has waited timeout_ms (at once when stopping or hurried). */
        while (b->head && b->depth < maxb && !b->stopping && !b->hurry) {
            uint64_t due = b->head->_enqueued_ns + (uint64_t)b->cfg.timeout_ms * 1000000u;
            if (vs_now_ns() >= due) break;
            struct timespec ts = to_ts(due);
            pthread_cond_timedwait(&b->work, &b->mu, &ts);
        }
        if (!b->head) continue;   /* its waiters took them out at their deadlines */
        int k = 0;
        while (b->head && k < maxb) {
            b->head->_taken = true;
            take[k++] = b->head;
            b->head = b->head->_next;
        }
        if (!b->head) b->tail = NULL;
        b->depth -= k;
        pthread_mutex_unlock(&b->mu);

        run_batch(b, take, k);

        pthread_mutex_lock(&b->mu);
        for (int i = 0; i < k; i++) take[i]->_done = true;
        pthread_cond_broadcast(&b->done);
    }
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

enum vs_status vs_batcher_create(const struct vs_batcher_config *cfg,
                                 struct vs_batcher **out, struct vs_err *err)
{
    if (cfg->max_batch < 1 || cfg->timeout_ms < 0 || cfg->max_queue < 1 ||
        !cfg->out_floats || !cfg->compute)
        return vs_err_set(err, VS_BAD_INPUT,
                          "batcher: invalid config (max_batch %d, timeout_ms %d, max_queue %d)",
                          cfg->max_batch, cfg->timeout_ms, cfg->max_queue);
    struct vs_batcher *b = calloc(1, sizeof *b);
    size_t nout;
    size_t mb = (size_t)cfg->max_batch;
    if (!b || !vs_mul_size(mb, cfg->out_floats, &nout) ||
        !(b->rows = calloc(mb, sizeof *b->rows)) || !(b->out = malloc(nout * sizeof(float))) ||
        !(b->take = calloc(mb, sizeof *b->take)) || !(b->live = calloc(mb, sizeof *b->live)) ||
        !(b->waits = calloc(mb, sizeof *b->waits))) {
        if (b) {
            free(b->rows); free(b->out); free(b->take); free(b->live); free(b->waits);
            free(b);
        }
        return vs_err_set(err, VS_NOMEM, "batcher: out of memory for a batch of %d",
                          cfg->max_batch);
    }
    b->cfg = *cfg;
    pthread_mutex_init(&b->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&b->work, &ca);
    pthread_cond_init(&b->done, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&b->thread, NULL, batcher_main, b)) {
        pthread_cond_destroy(&b->work);
        pthread_cond_destroy(&b->done);
        pthread_mutex_destroy(&b->mu);
        free(b->rows); free(b->out); free(b->take); free(b->live); free(b->waits);
        free(b);
        return vs_err_set(err, VS_NOMEM, "batcher: cannot start its thread");
    }
    *out = b;
    return VS_OK;
}

void vs_batcher_hurry(struct vs_batcher *b)
{
    pthread_mutex_lock(&b->mu);
    b->hurry = true;
    pthread_cond_broadcast(&b->work);
    pthread_mutex_unlock(&b->mu);
}

void vs_batcher_destroy(struct vs_batcher *b)
{
    if (!b) return;
    pthread_mutex_lock(&b->mu);
    b->stopping = true;
    pthread_cond_broadcast(&b->work);
    pthread_mutex_unlock(&b->mu);
    pthread_join(b->thread, NULL);
    /* Every item is done now, but a waiter woken by the last broadcast may
     * not have re-locked `mu` yet: let them all leave before freeing. */
    pthread_mutex_lock(&b->mu);
    while (b->waiters > 0) pthread_cond_wait(&b->done, &b->mu);
    pthread_mutex_unlock(&b->mu);
    pthread_cond_destroy(&b->work);
    pthread_cond_destroy(&b->done);
    pthread_mutex_destroy(&b->mu);
    free(b->rows); free(b->out); free(b->take); free(b->live); free(b->waits);
    free(b);
}

enum vs_status vs_batcher_submit(struct vs_batcher *b, struct vs_batch_item **items,
                                 int n, struct vs_err *err)
{
    VS_ASSERT(n >= 1);
    uint64_t now = vs_now_ns();
    pthread_mutex_lock(&b->mu);
    if (b->stopping) {
        pthread_mutex_unlock(&b->mu);
        return vs_err_set(err, VS_BUSY, "server is shutting down");
    }
    if (b->depth > 0 && b->depth + n > b->cfg.max_queue) {
        int depth = b->depth;
        pthread_mutex_unlock(&b->mu);
        return vs_err_set(err, VS_BUSY,
                          "inference queue is full (%d queued, limit %d); retry later",
                          depth, b->cfg.max_queue);
    }
    for (int i = 0; i < n; i++) {
        struct vs_batch_item *it = items[i];
        it->_enqueued_ns = now;
        it->_done = it->_taken = false;
        it->_next = NULL;
        it->status = VS_OK;
        it->msg[0] = '\0';
        it->batch_size = 0;
        it->queue_ns = it->compute_ns = 0;
        if (b->tail) b->tail->_next = it; else b->head = it;
        b->tail = it;
    }
    b->depth += n;
    pthread_cond_signal(&b->work);
    pthread_mutex_unlock(&b->mu);
    return VS_OK;
}

/* Takes a queued (not yet taken) item out of the queue as dropped at its
 * deadline.  Lock held. */
static void drop_queued(struct vs_batcher *b, struct vs_batch_item *it, uint64_t now)
{
    struct vs_batch_item *prev = NULL, *p = b->head;
    while (p && p != it) {
        prev = p;
        p = p->_next;
    }
    VS_ASSERT(p == it);
    if (prev) prev->_next = it->_next; else b->head = it->_next;
    if (b->tail == it) b->tail = prev;
    b->depth--;
    it->_next = NULL;
    it->status = VS_TIMEOUT;
    it->queue_ns = now - it->_enqueued_ns;
    snprintf(it->msg, sizeof it->msg, "request deadline passed after %.0f ms in the queue",
             (double)it->queue_ns / 1e6);
    it->_done = true;
    pthread_cond_signal(&b->work);   /* the head may have changed: new company deadline */
}

void vs_batcher_wait(struct vs_batcher *b, struct vs_batch_item **items, int n)
{
    pthread_mutex_lock(&b->mu);
    b->waiters++;
    for (int i = 0; i < n; i++) {
        struct vs_batch_item *it = items[i];
        while (!it->_done) {
            if (!it->deadline_ns || it->_taken) {
                pthread_cond_wait(&b->done, &b->mu);
                continue;
            }
            const uint64_t now = vs_now_ns();
            if (now >= it->deadline_ns) {
                drop_queued(b, it, now);
                break;
            }
            struct timespec ts = to_ts(it->deadline_ns);
            pthread_cond_timedwait(&b->done, &b->mu, &ts);
        }
    }
    if (--b->waiters == 0 && b->stopping) pthread_cond_broadcast(&b->done);
    pthread_mutex_unlock(&b->mu);
}

double vs_batcher_pass_s(struct vs_batcher *b)
{
    const uint64_t t0 = atomic_load_explicit(&b->pass_t0_ns, memory_order_relaxed);
    const uint64_t now = vs_now_ns();
    return t0 && now > t0 ? (double)(now - t0) / 1e9 : 0.0;
}

int vs_batcher_depth(struct vs_batcher *b)
{
    pthread_mutex_lock(&b->mu);
    int d = b->depth;
    pthread_mutex_unlock(&b->mu);
    return d;
}
