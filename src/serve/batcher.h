/* batcher.h: dynamic batching — many threads submit preprocessed images,
 * one thread runs them through the model in batches.
 *
 * Contract.  The batcher owns a bounded FIFO queue and one compute thread.
 * A submitter hands over a group of items (one request's images) that are
 * queued together or not at all; the compute thread takes up to max_batch
 * items as soon as that many are queued or the oldest queued item has
 * waited timeout_ms, drops the items already past their deadline
 * (VS_TIMEOUT, never computed) and those whose requester has gone (the
 * item's gone() probe says so: VS_CANCELLED, never computed), calls
 * compute() once with the rest as
 * rows: rows[i] is item i's own `in` pointer (nothing is copied; the
 * engine reads each image where the submitter keeps it), and scatters the
 * float[n][out_floats] result back into each item.  Items keep FIFO order,
 * in the rows too; a group may be split across consecutive batches.
 * Batched results equal single results because compute() has no
 * cross-talk between rows (the model's contract).
 *
 * Memory: items and their pixel/output buffers belong to the submitter and
 * must stay valid until vs_batcher_wait() returned for them (compute()
 * reads the pixel buffers in place).
 *
 * Threads: submit/wait from any thread; compute() and observe() run on the
 * batcher's own thread only (so compute needs no locking against itself).
 */
#ifndef VS_SERVE_BATCHER_H
#define VS_SERVE_BATCHER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/vs.h"

/* Runs n rows: rows[i] is item i's `in` (the submitter's buffer, read
 * only, valid for the call) -> out float[n][out_floats], row i for item i. */
typedef enum vs_status (*vs_batch_compute_fn)(void *ctx, const float *const *rows, int n,
                                              float *out, struct vs_err *err);
/* Called after each batch: its size and each computed item's queue wait. */
typedef void (*vs_batch_observe_fn)(void *ctx, int n, const double *wait_s);

struct vs_batcher_config {
    int max_batch;          /* >= 1 */
    int timeout_ms;         /* >= 0: longest the oldest item waits for company */
    int max_queue;          /* >= 1: queued (not yet taken) items */
    size_t out_floats;      /* floats per output row (num_labels) */
    vs_batch_compute_fn compute;
    vs_batch_observe_fn observe;  /* may be NULL */
    void *ctx;
};

struct vs_batch_item {
    const float *in;        /* one input row (what compute() expects), submitter-owned */
    float *out;             /* out_floats, submitter-owned, written on VS_OK */
    uint64_t deadline_ns;   /* vs_now_ns() scale; 0 = none */
    /* Optional (NULL: never): asked on the batcher's thread, unlocked,
     * just before the item would join a forward pass; true drops it
     * (VS_CANCELLED).  The server asks whether the client closed its
     * connection.  Must stay callable until vs_batcher_wait() returned. */
    bool (*gone)(void *gone_ctx);
    void *gone_ctx;
    /* written by the batcher: */
    enum vs_status status;
    char msg[512];          /* failure text ("" on success) */
    int batch_size;         /* size of the batch it ran in (0 if not run) */
    uint64_t queue_ns;      /* time from submit until its batch was taken */
    uint64_t compute_ns;    /* duration of the forward pass it ran in (0 if not run) */
    /* private: */
    uint64_t _enqueued_ns;
    bool _done, _taken;
    struct vs_batch_item *_next;
};

struct vs_batcher;

/* Starts the compute thread.  VS_BAD_INPUT for a bad config. */
enum vs_status vs_batcher_create(const struct vs_batcher_config *cfg,
                                 struct vs_batcher **out, struct vs_err *err);

/* From now on batches are taken as soon as anything is queued, without
 * waiting for company (timeout_ms): the server calls it when it starts
 * draining, since no new client will come to fill a batch.  Submits are
 * still accepted. */
void vs_batcher_hurry(struct vs_batcher *b);

/* Finishes every queued item (computing those still within their deadline),
 * joins the thread, lets threads still in vs_batcher_wait() return, and
 * frees.  New submits fail meanwhile.  NULL ok. */
void vs_batcher_destroy(struct vs_batcher *b);

/* Queues items[0..n) as one group.  VS_BUSY when the queue cannot take all
 * n (queued + n > max_queue; a group larger than max_queue is admitted only
 * into an empty queue, so it can always make progress), VS_BUSY also after
 * destroy began.  Nothing is queued on failure. */
enum vs_status vs_batcher_submit(struct vs_batcher *b, struct vs_batch_item **items,
                                 int n, struct vs_err *err);

/* Blocks until every item of the group is done (computed, failed or
 * dropped); per-item results are in item->status / msg / out.  An item
 * whose deadline passes while it is still queued is taken out of the queue
 * here, at its deadline (VS_TIMEOUT, never computed), rather than when the
 * compute thread next looks at the queue (after the running batch, which
 * on a CPU can take seconds); an item already in a running batch is waited
 * for (the engine reads its pixels in place). */
void vs_batcher_wait(struct vs_batcher *b, struct vs_batch_item **items, int n);

/* How long the running compute() has been running, in seconds; 0 when
 * none runs.  Any thread (the server's stall watchdog). */
double vs_batcher_pass_s(struct vs_batcher *b);

/* Items queued now (the queue_depth gauge). */
int vs_batcher_depth(struct vs_batcher *b);

#endif
